"""The sandbox that runs generated code: hostile programs fail with the kind of what they tried,
the next program still runs, and nothing (no process, no file) is left behind. Real child
processes and the host's real namespaces; no model."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

from bench.quality.sandbox import UID_BASE, Limits, classify, run_python

FAST = Limits(wall_s=3, cpu_s=3)


def _unshare_works() -> bool:
    """Whether this host lets the suite make namespaces (the sandbox's isolation depends on it)."""
    if shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "--net", "--mount", "--pid", "--fork", "true"],
                          capture_output=True).returncode == 0


def _sandbox_processes() -> list[str]:
    """Processes of the sandbox's uid, or whose command line names a sandbox box."""
    uid = UID_BASE + os.getpid() % 1_000_000
    found = []
    for status in glob.glob("/proc/[0-9]*/status"):
        try:
            text = Path(status).read_text()
            cmd = Path(status).with_name("cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        uids = next((line.split()[1:] for line in text.splitlines() if line.startswith("Uid:")), [])
        if str(uid) in uids or "bench-sandbox-" in cmd:
            found.append(cmd or status)
    return found


def _boxes() -> set[str]:
    return set(glob.glob(os.path.join(tempfile.gettempdir(), "bench-sandbox-*")))


@pytest.fixture
def clean_host():
    """Every test here must leave no sandbox box and no sandbox process."""
    before = _boxes()
    yield
    assert _boxes() == before, "a sandbox box was left behind"
    assert _sandbox_processes() == [], "a sandboxed process outlived its program"


@pytest.mark.model
def test_a_passing_program_and_a_failing_test(clean_host):
    ok = run_python("def add(a, b):\n    return a + b\n\nassert add(2, 3) == 5\n", FAST)
    assert ok.passed and ok.error_kind is None
    bad = run_python("def add(a, b):\n    return a - b\n\nassert add(2, 3) == 5, 'add is wrong'\n", FAST)
    assert not bad.passed and bad.error_kind == "wrong_answer" and "add is wrong" in bad.detail
    syntax = run_python("def add(a, b)\n    return a + b\n", FAST)
    assert not syntax.passed and syntax.error_kind == "syntax_error"


@pytest.mark.model
def test_writing_outside_its_directory_is_refused(clean_host, tmp_path):
    target = tmp_path / "escaped.txt"  # a place the suite's own user may write
    shared = Path(tempfile.gettempdir()) / f"bench-escape-{uuid.uuid4().hex}"  # world-writable /tmp
    program = (f"open({str(target)!r}, 'w').write('x')\n" if _unshare_works() else "") + \
        f"open({str(shared)!r}, 'w').write('x')\n"
    r = run_python(program, FAST)
    assert not r.passed and not target.exists() and not shared.exists()
    if _unshare_works():
        assert r.error_kind == "filesystem_denied", r
        assert "read-only" in r.isolation["filesystem"]
    # its own directory is writable, and vanishes with it
    own = run_python("open('notes.txt', 'w').write('x' * 1000)\nassert open('notes.txt').read() == 'x' * 1000\n", FAST)
    assert own.passed, own


@pytest.mark.model
def test_a_fork_bomb_is_stopped(clean_host):
    plain = run_python("import os\nwhile True:\n    os.fork()\n", FAST)
    assert not plain.passed and plain.error_kind in ("process_limit", "timeout"), plain
    # one that swallows the refusals and keeps its children spinning is killed at the wall clock
    stubborn = run_python("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
                          FAST)
    assert not stubborn.passed and stubborn.error_kind == "timeout", stubborn


@pytest.mark.model
def test_unbounded_allocation_is_stopped(clean_host):
    # only the memory limit may stop it: with FAST's 3 s wall clock a loaded host (zero-filling 1 GiB took
    # longer than that beside other test runs) ended it as a timeout; 256 MiB and a 60 s clock leave no race
    r = run_python("blocks = []\nwhile True:\n    blocks.append(bytearray(10**7))\n",
                   Limits(wall_s=60, cpu_s=60, memory_bytes=256 << 20))
    assert not r.passed and r.error_kind == "memory_limit", r


@pytest.mark.model
def test_sleeping_forever_and_leaving_its_session_are_killed(clean_host):
    r = run_python("import time\ntime.sleep(10**6)\n", FAST)
    assert not r.passed and r.error_kind == "timeout" and r.seconds < FAST.wall_s + 5
    # a child that leaves the process group (setsid) still dies with the program
    r = run_python("import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(10**6)\ntime.sleep(10**6)\n",
                   FAST)
    assert not r.passed and r.error_kind == "timeout"


@pytest.mark.model
def test_busy_loops_hit_the_cpu_or_wall_limit(clean_host):
    r = run_python("while True:\n    pass\n", Limits(wall_s=5, cpu_s=1))
    assert not r.passed and r.error_kind == "cpu_limit", r  # 1 CPU second, well before the 5 s wall clock


@pytest.mark.model
def test_network_access_is_refused(clean_host):
    if not _unshare_works():
        pytest.skip("this host allows no network namespace: the row records 'NOT isolated'")
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        server.setblocking(False)
        port = server.getsockname()[1]
        r = run_python(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2).sendall(b'x')\n",
                       FAST)
        with pytest.raises(BlockingIOError):
            server.accept()  # nothing reached the host's loopback
    assert not r.passed and r.error_kind == "network_denied", r
    dns = run_python("import socket\nsocket.getaddrinfo('pypi.org', 443)\n", FAST)
    assert not dns.passed and dns.error_kind == "network_denied", dns
    assert r.isolation["network"].startswith("isolated")


@pytest.mark.model
def test_the_pass_goes_on_after_hostile_programs(clean_host):
    hostile = ["import os\nwhile True:\n    os.fork()\n", "x = []\nwhile True:\n    x.append(bytearray(10**7))\n",
               "import time\ntime.sleep(10**6)\n"]
    results = [run_python(src, FAST) for src in hostile]
    assert not any(r.passed for r in results)
    assert run_python("assert sum(range(10)) == 45\n", FAST).passed


@pytest.mark.model
def test_isolation_is_what_the_host_allows(clean_host):
    r = run_python("pass\n", FAST)
    assert r.passed
    assert {"network", "filesystem", "processes", "user"} <= set(r.isolation)
    if _unshare_works():
        assert r.isolation["namespaces"] == "mount, network, pid"
        if os.geteuid() == 0:
            assert "unprivileged" in r.isolation["user"]  # root drops to a uid of its own: RLIMIT_NPROC holds


@pytest.mark.model
def test_stdin_is_closed_and_stdout_discarded(clean_host):
    r = run_python("import sys\nassert sys.stdin is None\nprint('x' * 10**6)\n", FAST)
    assert r.passed, r


@pytest.mark.model
@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None or not Path("/usr/bin/python3").exists(),
                    reason="needs root to start a process as another user (setpriv) and a system python3")
def test_an_unprivileged_user_gets_the_same_isolation(tmp_path):
    """As a normal user the launcher uses a user namespace: the same refusals, without root."""
    repo = Path(__file__).resolve().parent.parent
    if not os.access(repo, os.R_OK | os.X_OK) or (repo.stat().st_mode & 0o005) != 0o005:
        pytest.skip("the repository is not readable by other users here")
    code = ("import sys; sys.path.insert(0, %r)\n"
            "from bench.quality.sandbox import run_python, Limits\n"
            "r = run_python(\"open('/tmp/bench-escape-unpriv', 'w')\\n\", Limits(wall_s=3))\n"
            "n = run_python(\"import socket\\nsocket.create_connection(('127.0.0.1', 9), timeout=2)\\n\", "
            "Limits(wall_s=3))\n"
            "print(r.error_kind, n.error_kind, r.isolation['namespaces'])\n") % str(repo)
    proc = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", "-c",
                           code], capture_output=True, text=True, timeout=60, cwd="/", env={"PATH": "/usr/bin:/bin"})
    if "unshare(user" in proc.stdout + proc.stderr:
        pytest.skip("this host allows no user namespaces for an unprivileged user")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["filesystem_denied", "network_denied", "user,", "mount,", "network,", "pid"]
    assert not Path("/tmp/bench-escape-unpriv").exists()


@pytest.mark.fast
@pytest.mark.parametrize("returncode,sig,timed_out,stderr,expected", [
    (0, None, False, "", (True, None)),
    (1, None, False, "Traceback...\nAssertionError", (False, "wrong_answer")),
    (1, None, False, "MemoryError", (False, "memory_limit")),
    (1, None, False, "BlockingIOError: [Errno 11] Resource temporarily unavailable", (False, "process_limit")),
    (1, None, False, "OSError: [Errno 30] Read-only file system: '/etc/x'", (False, "filesystem_denied")),
    (1, None, False, "OSError: [Errno 101] Network is unreachable", (False, "network_denied")),
    (1, None, False, "socket.gaierror: [Errno -3] Temporary failure in name resolution", (False, "network_denied")),
    (1, None, False, "OSError: [Errno 27] File too large", (False, "file_size_limit")),
    (1, None, False, "NameError: name 'x' is not defined", (False, "exception")),
    (None, "SIGXCPU", False, "", (False, "cpu_limit")),
    (None, "SIGKILL", True, "", (False, "timeout")),
])
def test_classify(returncode, sig, timed_out, stderr, expected):
    passed, kind, _ = classify(returncode, sig, timed_out, stderr)
    assert (passed, kind) == expected


@pytest.mark.fast
def test_launcher_runs_with_the_standard_library_only():
    """The launcher is run as ``python -I -S sandbox.py``: it must import nothing of the suite."""
    import bench.quality.sandbox as sandbox

    source = Path(sandbox.__file__).read_text()
    assert "from bench" not in source and "import bench" not in source
    assert sys.executable  # the sandbox starts the launcher with this interpreter


@pytest.mark.model
@pytest.mark.parametrize("style", ["chat", "completion"])
def test_every_canonical_humaneval_solution_passes_in_the_sandbox(style, clean_host):
    """The harness itself: each of HumanEval's 164 canonical solutions, put into the task's program
    as a model's completion would be (a chat completion is a whole solution, a plain one continues
    the prompt), passes its tests in the sandbox; an empty completion fails."""
    from bench.quality.scorers import ExecuteScorer
    from bench.quality.tasks import fill, load_task

    task = load_task("humaneval")
    spec = task.definition.score
    limits = ExecuteScorer.limits(spec)
    failed = []
    for item in task.items():
        completion = item["prompt"] + item["canonical_solution"] if style == "chat" else item["canonical_solution"]
        r = run_python(fill(spec.program[style], {**item, "completion": completion}), limits)
        if not r.passed:
            failed.append((item["task_id"], r.error_kind, r.detail))
    assert failed == []
    empty = run_python(fill(spec.program[style], {**task.items()[0], "completion": ""}), limits)
    assert not empty.passed
