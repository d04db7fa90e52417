"""Starting a measuring child process and turning whatever happens to it into a status.

Every pass of a cell runs in ``python -m bench.measuring.worker JOB.json RESULT.json``: the
child writes its result atomically, reports its phase and progress on stdout, and is killed with
its whole process group on timeout or Ctrl-C. A child that leaves no result died: from a signal
(explained in one line with the likely cause), the OOM killer, or an exit status.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.measuring.job import Job
from bench.measuring.worker import PHASE_PREFIX, PROGRESS_PREFIX, SCRATCH_PREFIX, partial_path

ProgressFn = Callable[[int, int], None]


def _child_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    # Libraries that size their own thread pools follow the profile too.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    env["PYTHONUNBUFFERED"] = "1"
    return env


CRASH_SIGNALS = ("SIGILL", "SIGSEGV", "SIGBUS", "SIGFPE")


def explain_crash(signal_name: str, phase: str, backend: str, build: dict[str, Any] | None) -> str:
    """Why a worker died from a signal, in one line, with the likely cause and its fix.

    A native library that dies with SIGILL/SIGSEGV while loading or at its first tokens is most
    often running an instruction the machine cannot execute: a llama.cpp build compiled for what
    the CPU advertises (AMX on a VM where it faults), or for another CPU."""
    head = f"worker crashed with {signal_name} ({phase})"
    early = phase in ("starting", "loading", "first tokens")
    if signal_name not in CRASH_SIGNALS or not early:
        return head
    if backend == "llama.cpp":
        flags = " ".join((build or {}).get("cmake_args") or []) or "flags not recorded"
        return (f"{head}: the llama.cpp build ({(build or {}).get('build', 'unknown')}: {flags}) likely uses an "
                "instruction this machine cannot run; `bench doctor` shows which, "
                "`python -m bench.install --rebuild` builds one that runs")
    return (f"{head}: a native library of backend {backend} likely uses an instruction this machine cannot "
            "run, or the model file is damaged; `bench doctor` checks the installation")


def _classify_exit(returncode: int, stderr_tail: str, phase: str = "starting", backend: str = "",
                   build: dict[str, Any] | None = None) -> tuple[str, str]:
    if returncode < 0:
        sig = signal.Signals(-returncode)
        if sig == signal.SIGKILL:
            return _classify_sigkill()
        reason = explain_crash(sig.name, phase, backend, build)
        return "failed", reason + (f" | {stderr_tail}" if stderr_tail else "")
    return "failed", f"worker exited with status {returncode}" + (f": {stderr_tail}" if stderr_tail else "")


def _classify_sigkill() -> tuple[str, str]:
    import psutil

    vm = psutil.virtual_memory()
    if vm.available / vm.total < 0.05:
        return "oom", f"worker killed by SIGKILL with {vm.available / 2**20:.0f} MiB of RAM left (OOM killer)"
    return "failed", "worker killed by SIGKILL (by another process, or the kernel OOM killer)"


class _ChildWatch:
    """What the worker last said it was doing: its phase and its progress."""

    def __init__(self) -> None:
        self.phase = "starting"

    def read(self, proc: subprocess.Popen[str], on_progress: ProgressFn | None) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith(PHASE_PREFIX):
                self.phase = line[len(PHASE_PREFIX):].strip()
            elif line.startswith(PROGRESS_PREFIX):
                done, total = (int(x) for x in line.split()[1:3])
                self.phase = "first tokens" if done == 0 else f"after {done} of {total} requests"
                if on_progress:
                    on_progress(done, total)


OWNER_FILE = "owner.pid"  # the launcher's pid: a folder whose owner is gone was left by a killed suite


def remove_stale_scratch(tmpdir: Path) -> list[Path]:
    """Remove pass folders left behind when the suite and its worker were both killed outright
    (SIGKILL: neither can clean up): those whose owner process no longer exists. A folder without an
    owner file (written by an older version) or whose owner lives is kept. Returns what was removed."""
    import shutil

    removed = []
    for d in tmpdir.glob(SCRATCH_PREFIX + "*"):
        try:
            pid = int((d / OWNER_FILE).read_text())
            os.kill(pid, 0)
        except ProcessLookupError:  # the owner is gone
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
        except (OSError, ValueError):  # no owner file, not ours to signal, or unreadable: keep it
            continue
    return removed


def run_job(job: Job, timeout_s: float, on_progress: ProgressFn | None = None,
            build: dict[str, Any] | None = None) -> tuple[str, str | None, dict[str, Any] | None]:
    """Run one pass in a child process: (status, reason, result or None). ``build`` (the llama.cpp
    build's facts) lets a crash name the build and its fix."""
    remove_stale_scratch(Path(tempfile.gettempdir()))
    with tempfile.TemporaryDirectory(prefix=SCRATCH_PREFIX) as tmp:
        spec_path, out_path, err_path = Path(tmp, "job.json"), Path(tmp, "result.json"), Path(tmp, "stderr")
        Path(tmp, OWNER_FILE).write_text(str(os.getpid()))
        spec_path.write_text(job.to_json())
        with err_path.open("w") as err:
            proc = subprocess.Popen(  # faulthandler: a crash leaves the Python frame it happened in
                [sys.executable, "-X", "faulthandler", "-m", "bench.measuring.worker", str(spec_path), str(out_path)],
                stdout=subprocess.PIPE, stderr=err, text=True, env=_child_env(job.load.threads),
                start_new_session=True,  # Ctrl-C reaches the parent, which decides what to stop
            )
            watch = _ChildWatch()
            reader = threading.Thread(target=watch.read, args=(proc, on_progress), daemon=True)
            reader.start()
            try:
                returncode = proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                _kill(proc)
                reason = f"no result within {timeout_s:g} s; the worker was killed"
                return "timeout", reason, _partial(partial_path(out_path), "timeout", reason)
            except BaseException:  # KeyboardInterrupt: never leave a worker behind
                _kill(proc)
                raise
            finally:
                reader.join(timeout=5)
        if not out_path.exists():
            status, reason = _classify_exit(returncode, _tail(err_path), watch.phase, job.load.backend, build)
            return status, reason, _partial(partial_path(out_path), status, reason)
        result = json.loads(out_path.read_text())
    return result["status"], result.get("reason"), result


def _partial(path: Path, status: str, reason: str) -> dict[str, Any] | None:
    """What a killed or crashed pass finished before it ended, as a result of its own (``status``,
    ``reason`` and ``partial``: the items), or None when it finished none. A last line cut short
    by the kill is dropped."""
    items = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    for line in lines:
        try:
            items.append(json.loads(line))
        except ValueError:
            break
    return {"status": status, "reason": reason, "partial": items} if items else None


def _kill(proc: subprocess.Popen[str]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _tail(path: Path, lines: int = 3) -> str:
    """The end of the worker's stderr; after a fatal signal, faulthandler's header and the
    innermost Python frame of the crashing thread instead (the call it died in)."""
    try:
        text = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    fatal = [i for i, ln in enumerate(text) if ln.startswith("Fatal Python error")]
    if fatal:
        frames = [ln for ln in text[fatal[-1]:] if ln.startswith("File ")]
        return " | ".join([text[fatal[-1]], *frames[:1]])[-500:]
    return " | ".join(text[-lines:])[-500:]
