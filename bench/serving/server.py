"""llama.cpp's llama-server, started and stopped by the suite.

Bound to 127.0.0.1 on a free port (or where ``--host`` among its extra arguments says, with an API
key when that is beyond loopback: ``bench.serving.target.server_access``), pinned to its CPUs,
health-checked before any load, its log kept beside the results, and always stopped: the context
manager stops it on any exit (an exception, Ctrl-C, a timeout); an ``atexit`` hook stops any still
running at interpreter exit; and the server is started with the kernel's parent-death signal set
(``PR_SET_PDEATHSIG`` = SIGKILL), so even a ``kill -9`` of the suite takes the server with it. (That
signal follows the *thread* that started the server: start it from the main thread, as ``bench
serve`` does.)

The server runs in a session (process group) of its own, so a Ctrl-C at the terminal reaches the
suite, which then stops the server in order, rather than the server directly.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import BenchError
from bench.serving.client import HttpFailure, http_json

# Runs between fork and exec of the server: parent-death signal, a check that the parent is still
# the one that started us (it may have died before prctl), CPU affinity, then exec.
_WRAPPER = """
import ctypes, json, os, signal, sys
cpus, parent = json.loads(sys.argv[1]), int(sys.argv[2])
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
except Exception:
    pass
if os.getppid() != parent:
    sys.exit(70)
if cpus:
    os.sched_setaffinity(0, cpus)
os.execv(sys.argv[3], sys.argv[3:])
"""
_LIVE: set[ManagedServer] = set()


class ServerError(BenchError):
    """The server could not be started (the message says why and where its log is)."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn_pinned(argv: list[str], cpus: list[int] | None, log_path: Path, env: dict[str, str] | None = None
                 ) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own session, pinned to ``cpus``, killed if this process dies, with
    stdout and stderr appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return subprocess.Popen([sys.executable, "-S", "-c", _WRAPPER, json.dumps(cpus or []), str(os.getpid()),
                                 *argv], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=env)


def stop_process(proc: subprocess.Popen[bytes], grace_s: float = 10.0) -> int | None:
    """SIGTERM to the process group, SIGKILL after ``grace_s``; returns the exit status."""
    if proc.poll() is not None:
        return proc.returncode
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        return proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        return proc.wait(10)


def log_tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(ln.strip() for ln in text[-lines:])


@dataclass
class ServerSpec:
    exe: Path
    model_path: Path
    alias: str
    threads: int
    ctx_per_slot: int
    parallel: int
    cpus: list[int]
    log_path: Path
    extra_args: list[str] = field(default_factory=list)
    ready_timeout_s: float = 600.0
    connect_host: str = "127.0.0.1"  # where the suite reaches it (extra_args may bind it elsewhere)
    api_key: str | None = None  # handed to the server in its environment (LLAMA_API_KEY), never on its command line

    def env(self) -> dict[str, str]:
        """The server's environment: this one, with its API key (or none: a key set in this environment
        for llama-server, which the suite would not send, is left out)."""
        env = {k: v for k, v in os.environ.items() if k not in ("LLAMA_API_KEY", "LLAMA_ARG_API_KEY_FILE")}
        if self.api_key:
            env["LLAMA_API_KEY"] = self.api_key
        return env

    def argv(self, port: int) -> list[str]:
        """Every setting explicit: slots, context (per slot, not unified), threads, metrics on."""
        return [str(self.exe), "-m", str(self.model_path), "--alias", self.alias, "--host", "127.0.0.1",
                "--port", str(port), "-np", str(self.parallel), "-c", str(self.ctx_per_slot * self.parallel),
                "--no-kv-unified", "-t", str(self.threads), "-tb", str(self.threads), "--metrics", "--no-webui",
                *self.extra_args]


class ManagedServer:
    """``with ManagedServer(spec) as server: ...``: started and ready inside, stopped after."""

    def __init__(self, spec: ServerSpec) -> None:
        self.spec = spec
        self.proc: subprocess.Popen[bytes] | None = None
        self.port: int | None = None
        self.ready_s: float | None = None
        self.exit_status: int | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> ManagedServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def root(self) -> str:
        host = f"[{self.spec.connect_host}]" if ":" in self.spec.connect_host else self.spec.connect_host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        return self.root + "/v1"

    @property
    def command(self) -> list[str]:
        return self.spec.argv(self.port or 0)

    def start(self) -> None:
        for _ in range(3):  # another process may take the free port between our check and its bind
            self.port = free_port()
            started = time.monotonic()
            self.proc = spawn_pinned(self.spec.argv(self.port), self.spec.cpus, self.spec.log_path, self.spec.env())
            _LIVE.add(self)
            try:
                ready = self._wait_ready(started)
            except BaseException:  # Ctrl-C while it loads: stop it before going on
                self.stop()
                raise
            if ready:
                self.ready_s = time.monotonic() - started
                return
        raise ServerError(f"llama-server could not bind a loopback port three times; log: {self.spec.log_path}")

    def _wait_ready(self, started: float) -> bool:
        """True once /health answers 200; False if the port was taken; raises if it dies or
        stays unready. 503 means the model is loading, a refused connection not listening yet."""
        assert self.proc is not None
        while True:
            status = self.proc.poll()
            if status is not None:
                self.stop()
                tail = log_tail(self.spec.log_path, 4)
                if "bind" in tail.lower() and "address" in tail.lower():
                    return False
                raise ServerError(f"llama-server exited with status {status} while starting: {tail or '(no output)'}; "
                                  f"log: {self.spec.log_path}")
            with contextlib.suppress(HttpFailure):
                code, _ = http_json(self.root + "/health", timeout_s=2.0)
                if code == 200:
                    return True
            if time.monotonic() - started > self.spec.ready_timeout_s:
                self.stop()
                raise ServerError(f"llama-server was not ready after {self.spec.ready_timeout_s:g} s "
                                  f"(/health never answered 200); log: {self.spec.log_path}")
            time.sleep(0.05)

    def stop(self) -> int | None:
        if self.proc is not None:
            self.exit_status = stop_process(self.proc)
        _LIVE.discard(self)
        return self.exit_status

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def death(self) -> str | None:
        """Why the server is gone, if it is."""
        if self.proc is None or self.proc.poll() is None:
            return None
        rc = self.proc.returncode
        how = f"signal {signal.Signals(-rc).name}" if rc < 0 else f"status {rc}"
        tail = log_tail(self.spec.log_path) or "(no output)"
        return f"llama-server exited ({how}): {tail}; log: {self.spec.log_path}"

    # -- memory --------------------------------------------------------------------------------
    def reset_peak_rss(self) -> bool:
        """Reset the kernel's resident-set high-water mark (VmHWM) of the server; False if not allowed."""
        if not self.alive():
            return False
        try:
            Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")  # type: ignore[union-attr]
            return True
        except OSError:
            return False

    def memory(self) -> dict[str, Any]:
        """VmHWM (peak resident set since start or the last reset) and VmRSS now, from /proc."""
        if not self.alive():
            return {"unavailable": "the server is not running"}
        return proc_memory(self.proc.pid)  # type: ignore[union-attr]


def proc_memory(pid: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                out[{"VmHWM": "peak_rss_bytes", "VmRSS": "rss_bytes"}[key]] = int(value.split()[0]) * 1024
    except (OSError, ValueError, IndexError) as exc:
        return {"unavailable": f"cannot read /proc/{pid}/status: {exc}"}
    return out


def server_vram(pid: int, figures: list[int | None]) -> dict[str, Any]:
    """The server's VRAM from NVML's entries for its process (one per GPU it uses), or why it is not
    known: a process NVML does not list, or lists without a figure, used an unknown amount, not 0."""
    if not figures:
        return {"vram_bytes": None, "unavailable": f"the server (pid {pid}) is not in NVML's list of compute "
                                                  "processes (it uses no GPU, or NVML cannot see it from here)"}
    if any(f is None for f in figures):
        return {"vram_bytes": None, "unavailable": "NVML lists the server without a memory figure (usedGpuMemory "
                                                  "unavailable, common in containers and under MIG)"}
    return {"vram_bytes": sum(int(f) for f in figures), "via": "nvml (at the end of the point)"}


def gpu_memory(pid: int) -> dict[str, Any]:
    """The process's GPU memory as NVML sees it (nvidia-ml-py), or why it is unavailable. A process
    NVML does not list (a PID namespace of its own hides it) gets no figure of its own, only the
    devices' used memory, named as such."""
    try:
        import pynvml
    except ImportError:
        return {"unavailable": "nvidia-ml-py is not installed"}
    try:
        pynvml.nvmlInit()
    except Exception as exc:
        return {"unavailable": f"NVML: {exc}"}
    try:
        figures, device_used = [], 0
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            device_used += int(pynvml.nvmlDeviceGetMemoryInfo(handle).used)
            figures += [p.usedGpuMemory for p in pynvml.nvmlDeviceGetComputeRunningProcesses(handle) if p.pid == pid]
        return {**server_vram(pid, figures), "device_used_bytes": device_used}
    except Exception as exc:
        return {"unavailable": f"NVML: {exc}"}
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


def parse_prometheus(text: str) -> dict[str, float]:
    """Samples of a Prometheus text exposition: ``name{labels}`` -> value."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        parts = line.rsplit(None, 1) if "}" not in line else [line[: line.rindex("}") + 1], line[line.rindex("}") + 1:]]
        if len(parts) != 2:
            continue
        try:
            out[parts[0].strip()] = float(parts[1].split()[0])
        except (ValueError, IndexError):
            continue
    return out


def scrape_metrics(root: str, api_key: str | None = None) -> dict[str, float] | None:
    """The server's /metrics counters, or None where it has none (llama-server without --metrics)."""
    try:
        status, body = http_json(root + "/metrics", timeout_s=5.0, api_key=api_key)
    except HttpFailure:
        return None
    if status != 200 or not isinstance(body, str):
        return None
    return parse_prometheus(body)


COUNTERS = {  # what a point reports from the server's own counters (deltas over the point)
    "llamacpp:prompt_tokens_total": "prompt_tokens_processed",
    "llamacpp:tokens_predicted_total": "tokens_predicted",
    "llamacpp:n_decode_total": "decode_calls",
    "llamacpp:prompt_tokens_cached_total": "prompt_tokens_cached",
    "llamacpp:prompt_seconds_total": "prompt_seconds",
    "llamacpp:tokens_predicted_seconds_total": "tokens_predicted_seconds",
    "vllm:prompt_tokens_total": "prompt_tokens_processed",
    "vllm:generation_tokens_total": "tokens_predicted",
    "vllm:prefix_cache_hits_total": "prefix_cache_hit_tokens",
    "vllm:prefix_cache_queries_total": "prefix_cache_query_tokens",
}


def counter_deltas(before: dict[str, float] | None, after: dict[str, float] | None) -> dict[str, Any] | None:
    if before is None or after is None:
        return None
    out: dict[str, Any] = {}
    for key, value in after.items():
        name = key.split("{", 1)[0]
        if name in COUNTERS and key in before:
            out[COUNTERS[name]] = out.get(COUNTERS[name], 0) + value - before[key]
    if out.get("decode_calls") and out.get("tokens_predicted"):
        out["tokens_predicted_per_decode_call"] = out["tokens_predicted"] / out["decode_calls"]
    if out.get("tokens_predicted_seconds") and out.get("tokens_predicted"):
        # llama.cpp's own timer: summed over requests, so under batching it is per-request time
        out["server_s_per_predicted_token"] = out["tokens_predicted_seconds"] / out["tokens_predicted"]
    return out


def stop_all() -> None:
    for server in list(_LIVE):
        server.stop()


atexit.register(stop_all)
