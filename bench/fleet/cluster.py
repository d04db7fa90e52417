"""Starting, joining and stopping fleet nodes (thin wrappers over ``ray start`` and ``ray stop``),
and the driver's connection to a running cluster.

Defaults keep what can be kept off the network: no dashboard (``--include-dashboard=false``,
its host 127.0.0.1 should one start), no usage statistics, fixed ports (a firewall can name
them), Ray's memory monitor off (a cell that outgrows its tier must end as the suite's ``oom``,
not be killed by Ray), and a small object store (rows are small; a node being measured should
keep its RAM). Ray's GCS, raylet and worker gRPC servers listen on every interface whatever the
node address (unless the node address is 127.0.0.1 inside a private network namespace): the
cluster's ports must be reachable by its machines only, never from the internet.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.errors import BenchError
from bench.fleet import INSTALL_HINT, require_ray

DEFAULT_PORT = 6379  # the head's GCS
DEFAULT_NODE_PORTS = 6380  # node manager, object manager, runtime-env agent, dashboard agent gRPC/HTTP, metrics
DEFAULT_WORKER_PORTS = (10002, 10101)  # one per Ray worker process
# Ray rewrites 127.0.0.1 (and localhost) to this machine's network address; other loopback
# addresses are kept as given: a one-machine fleet advertises 127.0.0.2.
LOCAL_NODE_IP = "127.0.0.2"
OBJECT_STORE_BYTES = 200 * 10**6
NODE_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_memory_monitor_refresh_ms": "0",  # Ray's memory monitor would kill a cell's worker near full RAM
    "RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES": "1",  # a cell sees the node's GPUs as it would alone
}
SECURITY_NOTE = ("Ray's GCS, raylet and worker ports listen on every interface of this machine: allow them "
                 "from the fleet's machines only, never from the internet (docs/fleet.md)")


@dataclass(frozen=True)
class NodeOptions:
    node_ip: str | None = None  # None: Ray's choice (the address that routes to the head)
    temp_dir: str | None = None  # None: Ray's (/tmp/ray)
    node_ports: int = DEFAULT_NODE_PORTS  # first of six consecutive ports; 0: random ports
    worker_ports: tuple[int, int] | None = DEFAULT_WORKER_PORTS  # None: random ports
    object_store_bytes: int = OBJECT_STORE_BYTES

    def ray_args(self) -> list[str]:
        p = self.node_ports
        names = ("node-manager-port", "object-manager-port", "runtime-env-agent-port", "dashboard-agent-grpc-port",
                 "dashboard-agent-listen-port", "metrics-export-port")
        args = [f"--{name}={p + i if p else 0}" for i, name in enumerate(names)]
        lo, hi = self.worker_ports or (0, 0)
        args += [f"--min-worker-port={lo}", f"--max-worker-port={hi}",
                 f"--object-store-memory={self.object_store_bytes}", "--disable-usage-stats",
                 "--include-log-monitor=false"]  # rows come back as results; worker logs stay on the node
        if self.node_ip:
            args.append(f"--node-ip-address={self.node_ip}")
        if self.temp_dir:
            args.append(f"--temp-dir={self.temp_dir}")
        return args


def ray_cli() -> str:
    """The ``ray`` command of this interpreter's environment (its workers then run this Python)."""
    beside = Path(sys.executable).with_name("ray")
    found = str(beside) if beside.exists() else shutil.which("ray")
    if not found:
        raise BenchError(f"the fleet needs Ray's `ray` command: {INSTALL_HINT}")
    return found


def parse_address(address: str) -> tuple[str, int]:
    """HOST:PORT, or a one-line error."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise BenchError(f"fleet address {address!r} is not HOST:PORT (e.g. 192.168.1.10:{DEFAULT_PORT}, or auto)")
    return host.strip("[]"), int(port)


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _ray_start(args: list[str], what: str) -> str:
    env = {**os.environ, **NODE_ENV}
    try:
        proc = subprocess.run([ray_cli(), "start", *args], env=env, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        raise BenchError(f"{what}: `ray start` did not finish within 300 s") from None
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        lines = [ln.strip() for ln in out.splitlines() if ln.strip() and "network_util.cc" not in ln]
        errors = [ln for ln in lines if "rror" in ln or "ailed" in ln] or lines
        raise BenchError(f"{what}: `ray start` failed: {errors[-1] if errors else f'exit {proc.returncode}'}")
    return out


def start_head(port: int, resources: dict[str, float], opts: NodeOptions) -> str:
    """Start this machine's head node; returns the address nodes join with."""
    import json

    out = _ray_start(["--head", f"--port={port}", "--include-dashboard=false", "--dashboard-host=127.0.0.1",
                      f"--resources={json.dumps(resources)}", *opts.ray_args()], "the head")
    found = re.search(r"ray start --address='([^']+)'", out)
    if not found:
        raise BenchError("the head started but `ray start` did not print its address; see `ray status`")
    return found.group(1)


def join(address: str, resources: dict[str, float], opts: NodeOptions) -> None:
    """Start a node on this machine and join it to the cluster at ``address``."""
    import json

    host, port = parse_address(address)
    check_reachable(host, port)
    if opts.node_ip is None and is_loopback(host):  # a one-machine fleet stays on loopback
        opts = NodeOptions(**{**opts.__dict__, "node_ip": host})
    _ray_start([f"--address={address}", f"--resources={json.dumps(resources)}", *opts.ray_args()],
               f"joining {address}")


def stop(force: bool = False) -> str:
    """``ray stop``: ends every Ray process of this machine (Ray's own matching, machine-wide)."""
    proc = subprocess.run([ray_cli(), "stop", *(["--force"] if force else [])], capture_output=True, text=True,
                          timeout=300)
    lines = [ln.strip() for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
    return lines[-1] if lines else f"ray stop exited {proc.returncode}"


def check_reachable(host: str, port: int, timeout_s: float = 5.0) -> None:
    """A TCP connection to the head opens, or a one-line error (Ray itself retries for a minute)."""
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as exc:
        raise BenchError(f"no Ray head at {host}:{port}: {exc.strerror or exc}") from None


def connect(address: str) -> str:
    """Connect this process to the cluster as its driver; returns the address connected to.
    ``auto``: the cluster running on this machine."""
    ray = require_ray()
    if address != "auto":
        check_reachable(*parse_address(address))
    for key, value in NODE_ENV.items():
        os.environ.setdefault(key, value)
    try:
        ray.init(address=address, logging_level="ERROR", log_to_driver=False, configure_logging=True)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        if address == "auto" and isinstance(exc, ConnectionError):
            raise BenchError("no Ray cluster runs on this machine (start one with `bench fleet head`, or give the "
                             "head's address)") from None
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = " (run bench on a machine of the cluster: `bench fleet join` it first)" if address != "auto" else ""
        raise BenchError(f"cannot connect to the fleet at {address}: {first}{hint}") from None
    return ray.get_runtime_context().gcs_address
