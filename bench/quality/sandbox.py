"""Running untrusted code (a model's completion with a problem's tests) in a child process of its own.

Executing generated code is running untrusted code. Each program runs in a fresh box:

- a launcher (this file, run as ``python -I -S sandbox.py CONFIG``: standard library only) moves
  into new namespaces where the host allows it: a network namespace (only a loopback that is down:
  no connection leaves it), a mount namespace (the whole file system read-only, the program's
  working directory a small tmpfs of its own that vanishes with it), a PID namespace (the program
  is its PID 1: when it dies, or is killed on the wall-clock timeout, every process it started dies
  with it, even one that left its process group). As root it drops to an unprivileged uid of its
  own, so the process limit holds (the kernel does not apply RLIMIT_NPROC to root); as a normal
  user it uses a user namespace, and ``execve`` leaves the program no capabilities;
- resource limits: address space (RLIMIT_AS), CPU seconds (RLIMIT_CPU), file size (RLIMIT_FSIZE),
  processes (RLIMIT_NPROC), no core files; stdin closed, stdout discarded, stderr kept (its tail
  names the error);
- a wall-clock timeout after which the program and everything it started are killed.

What the host did not allow is recorded (``Result.isolation``), never assumed: without namespaces
the program still gets the limits and its own process group, and the record says so.

The program passes when it exits with status 0 (HumanEval's harness: no exception). The sandbox
protects the machine; it does not stop a model from gaming the metric (code that exits 0 before the
tests run), which the execution harness of OpenAI's HumanEval does not either.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any

# Linux constants (linux/sched.h, linux/mount.h): the same on every architecture the suite runs on.
CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x00020000, 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 32, 4096, 0x4000, 1 << 18
SYS_MOUNT_SETATTR, AT_FDCWD, AT_RECURSIVE, MOUNT_ATTR_RDONLY = 442, -100, 0x8000, 1  # 442 on every arch
PR_SET_PDEATHSIG = 1
UID_BASE = 3_000_000  # a sandbox run as root uses UID_BASE + (pid of the suite's process % 1,000,000)
PROGRAM = "program.py"


class SandboxError(Exception):
    """The sandbox itself could not be set up (not the program's failure)."""


@dataclass(frozen=True)
class Limits:
    """What one program may use. The defaults fit HumanEval (its own harness: 3 s a problem)."""

    wall_s: float = 10.0
    cpu_s: int = 10
    memory_bytes: int = 1 << 30  # RLIMIT_AS, per process
    file_bytes: int = 16 << 20  # RLIMIT_FSIZE: no file (stderr included) grows past it
    processes: int = 8  # RLIMIT_NPROC: the program and what it starts (threads count)
    disk_bytes: int = 64 << 20  # the working directory's tmpfs, where a mount namespace is had


@dataclass(frozen=True)
class Result:
    passed: bool
    error_kind: str | None  # None when passed; see classify()
    detail: str  # the last line of stderr (or what ended the program), cut to 300 characters
    seconds: float  # wall time of the program
    isolation: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- the parent's side -----------------------------------------------------------------------------
def run_python(source: str, limits: Limits = Limits()) -> Result:
    """Run ``source`` as a Python program in a fresh box under ``limits``; never raises for what
    the program does (only SandboxError when the box cannot be made). Leaves no file or process."""
    box = tempfile.mkdtemp(prefix="bench-sandbox-")
    try:
        os.chmod(box, 0o711)  # the program's uid passes through to its own directory, nothing more
        for sub in ("work", "python"):
            os.mkdir(os.path.join(box, sub), 0o755)
        with open(os.path.join(box, PROGRAM), "w", encoding="utf-8") as fh:
            fh.write(source)
        os.chmod(os.path.join(box, PROGRAM), 0o600)
        exe = os.path.realpath(sys.executable)
        prefix = os.path.realpath(sys.base_prefix)
        config = {"box": box, "limits": asdict(limits), "exe": exe, "prefix": prefix,
                  "uid": UID_BASE + os.getpid() % 1_000_000 if os.geteuid() == 0 else None}
        err_path = os.path.join(box, "stderr")
        with open(err_path, "wb") as err:
            proc = subprocess.Popen([exe, "-I", "-S", os.path.abspath(__file__), json.dumps(config)],
                                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err, cwd=box,
                                    env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}, start_new_session=True)
            try:
                out, _ = proc.communicate(timeout=limits.wall_s + 30)
            except subprocess.TimeoutExpired:  # the launcher itself hung: kill it (its child dies with it)
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                raise SandboxError("the sandbox launcher did not finish") from None
        try:
            report = json.loads(out.decode("utf-8", errors="replace").strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise SandboxError(f"the sandbox launcher failed (status {proc.returncode}): "
                               f"{_tail(err_path)}") from None
        if report.get("setup_error"):
            raise SandboxError(f"the sandbox could not be set up: {report['setup_error']}")
        passed, kind, detail = classify(report["returncode"], report["signal"], report["timed_out"],
                                        _tail(err_path))
        return Result(passed, kind, detail, report["wall_s"], report["isolation"])
    finally:
        shutil.rmtree(box, ignore_errors=True)


def _tail(path: str, limit: int = 4096) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, os.path.getsize(path) - limit))
            return fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def classify(returncode: int | None, signal_name: str | None, timed_out: bool,
             stderr: str) -> tuple[bool, str | None, str]:
    """(passed, error kind, detail) from how the program ended and the end of its stderr.

    Kinds: timeout (the wall clock), cpu_limit (SIGXCPU, or killed at RLIMIT_CPU), file_size_limit
    (SIGXFSZ, EFBIG, or its directory full), killed (another signal), memory_limit (MemoryError),
    process_limit (fork refused: EAGAIN), filesystem_denied (EROFS, EACCES, PermissionError),
    network_denied (unreachable network, no name resolution), wrong_answer (AssertionError: a test
    failed), syntax_error, exception (anything else)."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    last = lines[-1][:300] if lines else ""
    if timed_out:
        return False, "timeout", "killed at the wall-clock limit"
    if signal_name:
        kind = {"SIGXCPU": "cpu_limit", "SIGXFSZ": "file_size_limit"}.get(signal_name, "killed")
        return False, kind, f"ended by {signal_name}" + (f": {last}" if last else "")
    if returncode == 0:
        return True, None, ""
    name = last.split(":", 1)[0].rsplit(".", 1)[-1]
    if name == "MemoryError" or "Cannot allocate memory" in last or "[Errno 12]" in last:
        return False, "memory_limit", last
    if "[Errno 11]" in last or name == "BlockingIOError":
        return False, "process_limit", last
    if "[Errno 27]" in last or "[Errno 28]" in last:  # EFBIG (RLIMIT_FSIZE; Python ignores SIGXFSZ), ENOSPC
        return False, "file_size_limit", last
    if name == "PermissionError" or "[Errno 30]" in last or "[Errno 13]" in last or "[Errno 1]" in last:
        return False, "filesystem_denied", last
    if name in ("gaierror", "herror") or any(f"[Errno {n}]" in last for n in (99, 101, 111, 113)):
        return False, "network_denied", last
    if name == "AssertionError":
        return False, "wrong_answer", last
    if name in ("SyntaxError", "IndentationError", "TabError"):
        return False, "syntax_error", last
    return False, "exception", last or f"exit status {returncode}"


# -- the launcher's side (this file run as a script; standard library only) --------------------------
_libc: Any = None


def _call(fn: Any, *args: Any) -> None:
    if fn(*args) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


def _unshare_root(uid: int) -> dict[str, Any]:
    """As root: new mount, network and PID namespaces; the program will run as ``uid``."""
    try:
        _call(_libc.unshare, CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID)
        return {"namespaces": "mount, network, pid", "drop_to_uid": uid}
    except OSError as exc:
        try:
            _call(_libc.unshare, CLONE_NEWNET)
            return {"namespaces": "network", "why_not_more": f"unshare(mount, pid): {exc.strerror}"}
        except OSError as exc2:
            return {"namespaces": "", "why_not_more": f"unshare: {exc2.strerror}"}


def _unshare_user() -> dict[str, Any]:
    """As a normal user: a user namespace (mapping only ourselves) holding the others."""
    uid, gid = os.getuid(), os.getgid()
    try:
        _call(_libc.unshare, CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID)
    except OSError as exc:
        return {"namespaces": "", "why_not_more": f"unshare(user, mount, network, pid): {exc.strerror}"}
    for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
        with open(f"/proc/self/{name}", "w") as fh:
            fh.write(text)
    return {"namespaces": "user, mount, network, pid"}


def _read_only_root() -> str:
    """Every mount of this (private) mount namespace read-only: mount_setattr(2) on the whole tree,
    else (kernels before 5.12) a read-only bind remount of each mount point."""
    attr = (ctypes.c_uint64 * 4)(MOUNT_ATTR_RDONLY, 0, 0, 0)
    _libc.syscall.restype = ctypes.c_long
    if _libc.syscall(SYS_MOUNT_SETATTR, AT_FDCWD, b"/", AT_RECURSIVE, ctypes.byref(attr), ctypes.sizeof(attr)) == 0:
        return "mount_setattr"
    with open("/proc/self/mountinfo") as fh:
        points = [line.split()[4] for line in fh]
    failed = 0
    for point in points:
        if _libc.mount(None, point.encode(), None, MS_REMOUNT | MS_BIND | MS_RDONLY, None) != 0:
            failed += 1
    return f"remount ({failed} of {len(points)} mount points could not be made read-only)" if failed else "remount"


def _prepare_mounts(cfg: dict[str, Any], uid: int | None) -> dict[str, Any]:
    """Private propagation; the interpreter's installation bound into the box (the program's uid may
    not reach it where it lives, under /root say); all read-only; a fresh tmpfs as the working dir."""
    box, limits = cfg["box"], cfg["limits"]
    _call(_libc.mount, b"none", b"/", None, MS_REC | MS_PRIVATE, None)
    _call(_libc.mount, cfg["prefix"].encode(), f"{box}/python".encode(), None, MS_BIND | MS_REC, None)
    how = _read_only_root()
    owner = f",uid={uid},gid={uid}" if uid is not None else ""
    _call(_libc.mount, b"tmpfs", f"{box}/work".encode(), b"tmpfs", 0,
          f"size={limits['disk_bytes']},mode=0700{owner}".encode())
    return {"filesystem": f"read-only ({how}) except its working directory, a {limits['disk_bytes'] >> 20} MiB "
                          "tmpfs of its own (new mount namespace)"}


def _child(cfg: dict[str, Any], work: str, exe: str, env: dict[str, str], uid: int | None, report_fd: int) -> None:
    """The program's process (after fork): limits, then the unprivileged uid, then exec. A failure
    before exec is the sandbox's, not the program's: it goes to ``report_fd`` (closed by exec)."""
    limits = cfg["limits"]
    try:
        os.chdir(work)
        # RLIMIT_CPU soft = hard: SIGKILL at the limit (a PID namespace's init ignores SIGXCPU); the
        # launcher tells a CPU kill from others by the program's CPU time.
        for res, value in ((resource.RLIMIT_AS, limits["memory_bytes"]), (resource.RLIMIT_CPU, limits["cpu_s"]),
                           (resource.RLIMIT_FSIZE, limits["file_bytes"]), (resource.RLIMIT_NPROC, limits["processes"]),
                           (resource.RLIMIT_CORE, 0)):
            resource.setrlimit(res, (int(value), int(value)))
        if uid is not None:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # after setuid, which clears it
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)
        os.close(0)  # stdin closed
        if os.getpid() != 1:
            os.setsid()  # no PID namespace: its own process group, which the launcher kills
        os.execve(exe, [exe, "-I", "-S", "-B", PROGRAM], env)
    except BaseException as exc:  # noqa: BLE001 - report and leave, never return into the launcher
        os.write(report_fd, f"{type(exc).__name__}: {exc}".encode())
        os._exit(126)


def _wait(pid: int, wall_s: float) -> tuple[int, bool, float, float]:
    """(wait status, killed at the wall clock, wall seconds, the program's CPU seconds)."""
    t0 = time.monotonic()
    timed_out = False
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            return status, timed_out, time.monotonic() - t0, usage.ru_utime + usage.ru_stime
        if not timed_out and time.monotonic() - t0 > wall_s:
            timed_out = True
            for kill in (lambda: os.kill(pid, signal.SIGKILL), lambda: os.killpg(pid, signal.SIGKILL)):
                try:
                    kill()
                except OSError:
                    pass
        time.sleep(0.01)


def launch(cfg: dict[str, Any]) -> dict[str, Any]:
    """Confine, start the program, wait for it (or kill it at the wall clock), report."""
    global _libc
    _libc = ctypes.CDLL(None, use_errno=True)
    box, limits = cfg["box"], cfg["limits"]
    with open(f"{box}/{PROGRAM}", encoding="utf-8") as fh:
        source = fh.read()
    isolation = _unshare_root(cfg["uid"]) if cfg["uid"] is not None else _unshare_user()
    names = isolation["namespaces"]
    uid = isolation.get("drop_to_uid")
    exe, env = cfg["exe"], {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    if "mount" in names:
        isolation.update(_prepare_mounts(cfg, uid))
        exe = f"{box}/python/{os.path.relpath(cfg['exe'], cfg['prefix'])}"
        env["LD_LIBRARY_PATH"] = f"{box}/python/lib"  # a shared libpython found where its rpath cannot be reached
    else:
        isolation["filesystem"] = "NOT isolated: the program runs as this user in a plain temporary directory"
        uid = None
    work = f"{box}/work"
    with open(f"{work}/{PROGRAM}", "w", encoding="utf-8") as fh:
        fh.write(source)
    if uid is not None:
        os.chown(f"{work}/{PROGRAM}", uid, uid)
    env["HOME"] = work
    isolation["network"] = ("isolated: a new network namespace (its loopback down)" if "network" in names
                            else "NOT isolated: " + isolation.get("why_not_more", "no network namespace"))
    isolation["processes"] = (f"a new PID namespace (all killed with the program); at most {limits['processes']}"
                              if "pid" in names else
                              f"its own process group only; at most {limits['processes']}")
    isolation["processes"] += (" (RLIMIT_NPROC, uid {})".format(uid) if uid is not None else
                               " (RLIMIT_NPROC; not enforced for root)" if os.geteuid() == 0 and "user" not in names
                               else " (RLIMIT_NPROC)")
    isolation["user"] = f"uid {uid} (unprivileged)" if uid is not None else (
        "this user, without capabilities (user namespace)" if "user" in names else f"this user (uid {os.getuid()})")
    read_fd, write_fd = os.pipe()  # close-on-exec: stays empty when the exec succeeds
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        _child(cfg, work, exe, env, uid, write_fd)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as fh:
        setup_error = fh.read().decode(errors="replace")
    status, timed_out, wall, cpu = _wait(pid, float(limits["wall_s"]))
    if setup_error:
        return {"setup_error": f"starting the program: {setup_error}"}
    sig = signal.Signals(os.WTERMSIG(status)).name if os.WIFSIGNALED(status) else None
    if sig == "SIGKILL" and not timed_out and cpu >= float(limits["cpu_s"]) - 0.5:
        sig = "SIGXCPU"  # killed at RLIMIT_CPU: its CPU time says so
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
    return {"returncode": code, "signal": sig, "timed_out": timed_out, "wall_s": wall, "cpu_s": cpu,
            "isolation": isolation}


def main(argv: list[str]) -> int:
    cfg = json.loads(argv[0])
    try:
        report = launch(cfg)
    except OSError as exc:
        report = {"setup_error": f"{exc.strerror or exc}"}
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
