"""``bench fleet head|join|status|stop``: what each prints, given parsed arguments (bench.cli parses)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.errors import BenchError
from bench.fleet import auth, cluster
from bench.fleet.claim import contradictions, node_resources
from bench.hardware.profiles import HostInfo, Profile, detect_host, get_profile


def _worker_ports(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return cluster.DEFAULT_WORKER_PORTS
    if text == "0":
        return None
    lo, sep, hi = text.partition("-")
    if not sep or not lo.isdigit() or not hi.isdigit() or not 0 < int(lo) <= int(hi) < 65536:
        raise BenchError(f"--worker-ports expects LOW-HIGH (e.g. 10002-10101) or 0, got {text!r}")
    return int(lo), int(hi)


def node_options(args: Any, node_ip: str | None) -> cluster.NodeOptions:
    if args.node_ports is not None and not 0 <= args.node_ports <= 65530:
        raise BenchError(f"--node-ports expects a port (the first of six) or 0, got {args.node_ports}")
    return cluster.NodeOptions(node_ip=node_ip, temp_dir=args.temp_dir,
                               node_ports=cluster.DEFAULT_NODE_PORTS if args.node_ports is None else args.node_ports,
                               worker_ports=_worker_ports(args.worker_ports))


def claimed_profiles(ids: list[str], profiles_dir: Path, host: HostInfo) -> list[Profile]:
    """The profiles this machine offers; `auto` is not a tier, and an unknown id is an error."""
    out = []
    for pid in ids:
        if pid == "auto":
            raise BenchError("auto is this host as it is, not a tier: name the profile this machine is "
                             "(`bench profiles list`)")
        out.append(get_profile(pid, profiles_dir, host))
    return out


def _claim_lines(profiles: list[Profile], host: HostInfo) -> list[str]:
    lines = []
    for p in profiles:
        why = contradictions(p, host)
        if why:
            lines.append(f"warning: this machine is not {p.id} ({'; '.join(why)}): `bench fleet status` flags it, "
                         f"and its cells of {p.id} are emulated here, not measured on the tier")
        else:
            lines.append(f"offers tier {p.id}: this machine's detected hardware matches it")
    if not profiles:
        lines.append("offers no tier: this node runs no cells (a machine that only drives runs)")
    return lines


def _token_lines(token: auth.Token, address: str) -> list[str]:
    if token.created:
        return [f"fleet token (shown this once; kept in {token.path}, mode 0600): {token.value}",
                f"join a machine: {auth.TOKEN_ENV}={token.value} bench fleet join --address {address} --profile ID"]
    return [f"fleet token: the one in {token.path} (mode 0600), made by an earlier head (`--new-token` makes a "
            "new one: every node must then join again)",
            f"join a machine: {auth.TOKEN_ENV}=\"$(cat {token.path})\" bench fleet join --address {address} "
            "--profile ID  (the value, on that machine)"]


def head(args: Any, profiles_dir: Path) -> list[str]:
    host = detect_host()
    profiles = claimed_profiles(args.profile or [], profiles_dir, host)
    node_ip = args.node_ip_address or cluster.LOCAL_NODE_IP
    opts = node_options(args, node_ip)
    token = auth.head_token(new=args.new_token)
    address = cluster.start_head(args.port, node_resources([p.id for p in profiles], host.hostname,
                                                           cells=bool(profiles)), opts, token)
    lines = [f"head started on {host.hostname} at {address}, requiring the fleet token (Ray's token "
             "authentication)", *_claim_lines(profiles, host), *_token_lines(token, address),
             f"run a matrix on the fleet (from this machine): bench run --matrix M.yaml --fleet {address}"]
    if cluster.is_loopback(node_ip):
        lines.append("a one-machine fleet: the head's address is on loopback, other machines cannot join it "
                     "(give --node-ip-address for a fleet of machines)")
    return [*lines, *cluster.describe_ports(opts.temp_dir, opts), cluster.SECURITY_NOTE, f"address: {address}"]


def join(args: Any, profiles_dir: Path) -> list[str]:
    host = detect_host()
    profiles = claimed_profiles(args.profile or [], profiles_dir, host)
    opts = node_options(args, args.node_ip_address)
    cluster.check_reachable(*cluster.parse_address(args.address))  # no head there: say that first
    token = auth.join_token()
    try:
        cluster.join(args.address, node_resources([p.id for p in profiles], host.hostname, cells=bool(profiles)),
                     opts, token)
    except BenchError:
        if token.created:  # a token the head refused is not kept
            token.path.unlink(missing_ok=True)
        raise
    kept = [f"the fleet token is kept in {token.path} (mode 0600) for `bench run --fleet` and `bench fleet status` "
            "from this machine"] if token.created else []
    return [f"{host.hostname} joined the fleet at {args.address}", *_claim_lines(profiles, host), *kept,
            *cluster.describe_ports(opts.temp_dir, opts), cluster.SECURITY_NOTE]


def _detected(d: dict[str, Any] | None) -> str:
    if not d:
        return "-"
    gpus = ", ".join(f"{g.get('name', 'GPU')} {g['vram_bytes'] / 2**30:.0f} GiB" for g in d.get("gpus") or [])
    return (f"{d['usable_cpus']}/{d['logical_cores']} CPUs, {d['ram_bytes'] / 2**30:.1f} GiB"
            + (f", {gpus}" if gpus else "") + f" ({d['cpu_model']})")


def _check(node: dict[str, Any]) -> str:
    if node["error"]:
        return f"NOT USED: {node['error']}"
    if not node["alive"]:
        return "dead"
    parts = []
    for tier, why in node["checks"].items():
        if isinstance(why, str):
            parts.append(f"{tier}: {why}")
        elif why:
            parts.append(f"CONTRADICTS {tier}: {'; '.join(why)}")
        else:
            parts.append(f"{tier}: ok")
    return "; ".join(parts) or ("runs no cells" if not node["runs_cells"] else "offers no tier")


def status(args: Any, profiles_dir: Path, catalog_path: Path) -> tuple[list[str], Any]:
    """(lines for stderr, a rich table or JSON text for stdout)."""
    from rich.table import Table

    from bench.fleet.executor import FleetExecutor

    fleet = FleetExecutor(args.address, catalog_path, profiles_dir)
    try:
        nodes = fleet.status()
    finally:
        fleet.close()
    flagged = sum(1 for n in nodes if any(isinstance(w, list) and w for w in n["checks"].values()))
    lines = [f"fleet at {fleet.address}: {sum(n['alive'] for n in nodes)} live node(s), "
             f"{flagged} contradicting a tier it offers"]
    if args.json:
        return lines, json.dumps({"address": fleet.address, "nodes": nodes}, indent=1)
    t = Table(title=f"Fleet at {fleet.address}")
    for col in ("node", "ip", "host", "alive", "offers", "detected here (the suite's own detection, on the node)",
                "check"):
        t.add_column(col, overflow="fold")
    for n in nodes:
        t.add_row(n["node_id"][:12], n["ip"], n["hostname"], "yes" if n["alive"] else "no",
                  ", ".join(n["tiers"]) or "-", _detected(n["detected"]), _check(n))
    return lines, t
