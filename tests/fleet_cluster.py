"""A real Ray cluster of several nodes on this machine, started with the suite's own `bench fleet
head` and `bench fleet join`, for the fleet tests.

Every connection stays on loopback. Where this user may create a private network namespace
(`unshare --net`, root), the nodes, the drivers and `bench fleet status` all run inside one that
has only `lo`: there node address 127.0.0.1 is kept by Ray and every Ray listener binds
127.0.0.1, and nothing outside the namespace can reach them. Elsewhere the nodes use 127.0.0.2
(Ray rewrites 127.0.0.1 to the machine's network address; its gRPC servers then listen on every
interface, which is why the namespace is preferred). No dashboard, usage statistics off. Ray's
token authentication is on, as for every fleet the suite starts: the head makes the token in this
fleet's own token file (BENCH_FLEET_TOKEN_FILE, never the user's), and the nodes and drivers of the
fleet, all on this machine, read it there.

Stopping kills exactly what the fleet started: every process of each node's session (each
`bench fleet head|join` runs in a session of its own, and Ray's daemons and workers keep it) and
every process carrying this fleet's marker variable (the cells' measuring children start
sessions of their own). It never runs the machine-wide `ray stop`, which would end other users'
clusters too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
MARKER = "BENCH_FLEET_TEST"
FAST_DEATH = {  # the GCS marks a lost node dead in about 2 s instead of 12 (NOTES: measured 1.9 s)
    "RAY_health_check_period_ms": "500", "RAY_health_check_failure_threshold": "3",
    "RAY_health_check_timeout_ms": "500",
}


def netns_available() -> bool:
    """``unshare --net`` works here (root). BENCH_FLEET_NETNS=0 forces the 127.0.0.2 layout."""
    if os.environ.get("BENCH_FLEET_NETNS") == "0":
        return False
    if shutil.which("unshare") is None or shutil.which("nsenter") is None:
        return False
    try:
        return subprocess.run(["unshare", "--net", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


class LocalFleet:
    def __init__(self, profiles_dir: Path) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="bf", dir="/tmp"))  # short: AF_UNIX paths are capped at 107 bytes
        self.marker = uuid.uuid4().hex[:12]
        self.sessions: dict[str, int] = {}  # node name -> session id (the pid of its `bench fleet ...`)
        self.holder: subprocess.Popen[bytes] | None = None
        if netns_available():
            self.holder = subprocess.Popen(["unshare", "--net", "sh", "-c", "ip link set lo up && exec sleep 86400"],
                                           start_new_session=True)
            self._wait_for_lo()
        self.ip = "127.0.0.1" if self.holder else "127.0.0.2"
        self.token_file = self.root / "fleet-token"
        self.env = {**{k: v for k, v in os.environ.items() if k not in ("BENCH_FLEET_TOKEN", "RAY_AUTH_TOKEN")},
                    "PYTHONPATH": str(REPO), "BENCH_PROFILES": str(profiles_dir), "RAY_USAGE_STATS_ENABLED": "0",
                    "BENCH_FLEET_TOKEN_FILE": str(self.token_file), MARKER: self.marker, **FAST_DEATH}
        self.head_output = ""
        self.address: str | None = None
        self.timings: dict[str, float] = {}

    def _wait_for_lo(self) -> None:
        assert self.holder is not None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            up = subprocess.run([*self.prefix, "ip", "-o", "addr", "show", "lo"], capture_output=True, text=True)
            if "127.0.0.1" in up.stdout:
                return
            time.sleep(0.05)
        raise RuntimeError("the test network namespace did not come up")

    @property
    def prefix(self) -> list[str]:
        """Run a command in the fleet's network namespace (nothing where there is none)."""
        return ["nsenter", f"--net=/proc/{self.holder.pid}/ns/net"] if self.holder else []

    def bench_cmd(self, *args: str) -> list[str]:
        return [*self.prefix, sys.executable, "-m", "bench", *args]

    def bench(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.bench_cmd(*args), cwd=REPO, env=self.env, capture_output=True, text=True,
                              timeout=timeout)

    def launch(self, name: str, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
        """Run `bench fleet ...` as node ``name`` (its own session and Ray folder): (exit status, output)."""
        log = self.root / f"{name}.log"
        with log.open("w") as fh:
            proc = subprocess.Popen(self.bench_cmd(*args, "--node-ip-address", self.ip, "--node-ports", "0",
                                                   "--worker-ports", "0", "--temp-dir", str(self.root / name)),
                                    cwd=REPO, env={**self.env, **(env or {})}, stdout=fh, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            self.sessions[name] = proc.pid  # a new session's id is its leader's pid
            rc = proc.wait(timeout=300)
        return rc, log.read_text()

    def _start(self, name: str, *args: str, env: dict[str, str] | None = None) -> str:
        rc, text = self.launch(name, *args, env=env)
        if rc != 0:
            raise RuntimeError(f"bench fleet {args[1] if len(args) > 1 else ''} {name} failed ({rc}): {text[-2000:]}")
        return text

    def start_head(self, *profiles: str) -> str:
        out = self._start("head", "fleet", "head", "--port", "0", *[a for p in profiles for a in ("-p", p)])
        self.head_output = out
        self.address = next(ln.split(": ", 1)[1].strip() for ln in out.splitlines() if ln.startswith("address: "))
        return self.address

    def join(self, name: str, *profiles: str, env: dict[str, str] | None = None) -> str:
        assert self.address
        return self._start(name, "fleet", "join", "--address", self.address,
                           *[a for p in profiles for a in ("-p", p)], env=env)

    # -- processes ----------------------------------------------------------------------------
    def processes(self, sessions: set[int] | None = None) -> list[psutil.Process]:
        """Every live process this fleet started (of the given sessions only, if given)."""
        sessions = set(self.sessions.values()) if sessions is None else sessions
        mine = []
        for p in psutil.process_iter():
            if p.pid == os.getpid():
                continue
            try:
                if p.status() == psutil.STATUS_ZOMBIE:
                    continue
                if os.getsid(p.pid) in sessions:
                    mine.append(p)
                elif sessions == set(self.sessions.values()) and p.environ().get(MARKER) == self.marker:
                    mine.append(p)
            except (psutil.Error, OSError):
                pass
        return mine

    def measuring_children(self) -> list[psutil.Process]:
        """The cells' measuring children running now, on any node of this fleet."""
        out = []
        for p in psutil.process_iter():
            try:
                if "bench.measuring.worker" in " ".join(p.cmdline()) and p.environ().get(MARKER) == self.marker:
                    out.append(p)
            except (psutil.Error, OSError):
                pass
        return out

    def node_of(self, child: psutil.Process) -> str | None:
        """The node whose Ray worker started this measuring child."""
        try:
            sid = os.getsid(child.ppid())
        except (psutil.Error, OSError):
            return None
        return next((name for name, s in self.sessions.items() if s == sid), None)

    def kill_node(self, name: str, also: list[psutil.Process] = ()) -> list[str]:
        """SIGKILL a node as a machine dies: its raylet, agents and workers, and the given children."""
        victims = self.processes({self.sessions[name]}) + list(also)
        for p in victims:
            try:
                p.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(victims, timeout=15)
        return [p.name() if p.is_running() else str(p.pid) for p in victims]

    def stop(self) -> list[str]:
        """Kill every process of the fleet; returns those still alive afterwards (none, normally)."""
        for _ in range(3):  # a dying raylet's worker may start a child in between: sweep again
            victims = self.processes()
            for p in victims:
                try:
                    p.kill()
                except psutil.Error:
                    pass
            psutil.wait_procs(victims, timeout=15)
        left = [f"{p.pid} {p.name()}" for p in self.processes()]
        if self.holder is not None:
            self.holder.kill()
            self.holder.wait(timeout=15)
        shutil.rmtree(self.root, ignore_errors=True)
        return left
