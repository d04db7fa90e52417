"""Where the server and the load generator run: the server on the first cores (the tier's threads),
the client on the others, and a warning when they share a core."""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.errors import BenchError
from bench.results.serving import PlacementInfo


@dataclass
class Placement:
    server_cpus: list[int] | None
    client_cpus: list[int]
    tier_threads: int | None
    notes: list[str] = field(default_factory=list)
    warning: str | None = None

    @property
    def overlap(self) -> bool | None:
        if self.server_cpus is None:
            return None
        return bool(set(self.server_cpus) & set(self.client_cpus))

    @property
    def server_threads(self) -> int:
        """Threads of a server the suite starts: one per server CPU."""
        return len(self.server_cpus or [1])

    def info(self) -> PlacementInfo:
        """As the serving row records it."""
        return PlacementInfo(server_cpus=self.server_cpus, client_cpus=self.client_cpus, overlap=self.overlap,
                             tier_threads=self.tier_threads,
                             server_threads=len(self.server_cpus) if self.server_cpus else None,
                             notes=self.notes, warning=self.warning)


def _cpu_list(name: str, cpus: list[int], host: list[int]) -> list[int]:
    bad = sorted(set(cpus) - set(host))
    if bad or not cpus:
        raise BenchError(f"{name} {','.join(map(str, cpus))}: not CPUs this process may use "
                         f"({','.join(map(str, host))})")
    return sorted(set(cpus))


def plan_placement(tier_threads: int | None, host: list[int], managed: bool, server_cpus: list[int] | None = None,
                   client_cpus: list[int] | None = None, url_host: str | None = None) -> Placement:
    """Server on the first cores, the client on the others: the server gets the tier's threads
    but never the client's last core, unless the host has one CPU or the user says otherwise."""
    host = sorted(host)
    notes: list[str] = []
    if not managed:
        client = _cpu_list("--client-cpus", client_cpus, host) if client_cpus else host
        p = Placement(None, client, None, ["the server is not the suite's: its CPUs are unknown"])
        if url_host in ("127.0.0.1", "localhost", "::1"):
            p.warning = ("the server runs on this machine and its CPUs are unknown: client and server may share "
                         "cores (llama.cpp's threads collapse when another process takes one)")
        return p
    if server_cpus:
        server = _cpu_list("--server-cpus", server_cpus, host)
    else:
        k = max(1, min(tier_threads or len(host), len(host) - 1))
        server = host[:k]
        if tier_threads and k < tier_threads:
            notes.append(f"the tier's {tier_threads} threads capped to {k}: the load generator keeps "
                         f"{len(host) - k} of this host's {len(host)} CPUs")
    if client_cpus:
        client = _cpu_list("--client-cpus", client_cpus, host)
    else:
        client = [c for c in host if c not in server] or host
    p = Placement(server, client, tier_threads, notes)
    if p.overlap:
        p.warning = (f"server CPUs {server} and client CPUs {client} overlap: the load generator competes with the "
                     "server for cores (llama.cpp's threads spin at barriers and collapse when a core is taken)")
    return p

