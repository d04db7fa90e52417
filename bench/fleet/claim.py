"""What a fleet node says it is (Ray custom resources) and whether its hardware agrees.

A node offers ``tier:PROFILE`` for each profile it claims to be, ``host:HOSTNAME`` for the
machine, and one ``bench-slot`` (a cell takes the slot: one cell per node at a time). No Ray here.

A claim is checked against the suite's own detection run on the node (``detect_host``). The
tolerances allow what real machines report for their nominal figures and no more:

- CPUs: at least the tier's threads usable, and at most twice as many logical CPUs (a tier's
  thread count is its cores or its hardware threads; a machine with more is a bigger machine);
- RAM: 75% to 110% of the tier's RAM (firmware and integrated GPUs keep part of a nominal 8 GB;
  a machine with more RAM is not the tier);
- cuda tiers: a GPU with 85% to 110% of the tier's VRAM (a "16 GB" T4 reports 15 GiB).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bench.hardware.profiles import HostInfo, Profile

SLOT = "bench-slot"
TIER_PREFIX = "tier:"
HOST_PREFIX = "host:"
GiB = 2**30
RAM_RANGE = (0.75, 1.10)
VRAM_RANGE = (0.85, 1.10)


def node_resources(profile_ids: Iterable[str], hostname: str, cells: bool = True) -> dict[str, float]:
    """The custom resources a node offers: its tiers, its host, and a slot for one cell at a time
    (none on a node that only coordinates)."""
    res: dict[str, float] = {f"{TIER_PREFIX}{p}": 1 for p in profile_ids}
    res[f"{HOST_PREFIX}{hostname}"] = 1
    if cells:
        res[SLOT] = 1
    return res


def tiers_of(resources: Mapping[str, float]) -> list[str]:
    return sorted(k[len(TIER_PREFIX):] for k in resources if k.startswith(TIER_PREFIX))


def host_of(resources: Mapping[str, float]) -> str | None:
    return next((k[len(HOST_PREFIX):] for k in resources if k.startswith(HOST_PREFIX)), None)


def contradictions(profile: Profile, host: HostInfo) -> list[str]:
    """What in ``host`` says it is not ``profile`` (empty: it is the tier, within the tolerances above)."""
    out: list[str] = []
    cap = profile.capacity
    if host.usable_cpus < cap.threads:
        out.append(f"{host.usable_cpus} usable CPUs, fewer than the tier's {cap.threads} threads")
    if host.logical_cores > 2 * cap.threads:
        out.append(f"{host.logical_cores} logical CPUs, more than twice the tier's {cap.threads} threads")
    ram = host.ram_bytes / GiB
    lo, hi = RAM_RANGE[0] * cap.ram_gb, RAM_RANGE[1] * cap.ram_gb
    if not lo <= ram <= hi:
        out.append(f"{ram:.1f} GiB of RAM, the tier has {cap.ram_gb:g} GB (the tier is {lo:.1f} to {hi:.1f} GiB)")
    if profile.device == "cuda":
        gpu = host.gpus[0] if host.gpus else None
        if gpu is None:
            out.append(f"no CUDA GPU, the tier has one with {cap.vram_gb:g} GB")
        else:
            vram, want = gpu["vram_bytes"] / GiB, cap.vram_gb or 0
            if not VRAM_RANGE[0] * want <= vram <= VRAM_RANGE[1] * want:
                out.append(f"{gpu.get('name', 'GPU')} with {vram:.1f} GiB, the tier has {want:g} GB of VRAM")
    return out


@dataclass
class NodeView:
    """One node as the driver sees it: Ray's view (id, address, resources, alive) and, once
    probed, the node's own detection of its hardware and its environment."""

    node_id: str
    ip: str
    alive: bool
    resources: dict[str, float] = field(default_factory=dict)
    host: HostInfo | None = None  # detected on the node
    environment: dict[str, Any] | None = None  # bench.measuring.environment.capture_environment, on the node
    error: str | None = None  # why the probe failed (bench missing on the node, say)
    machine_id: str | None = None  # /etc/machine-id, read on the node

    @property
    def machine(self) -> str:
        """What identifies the machine: two nodes on one machine never run cells at once."""
        return self.machine_id or f"host:{self.hostname}"

    @property
    def tiers(self) -> list[str]:
        return tiers_of(self.resources)

    @property
    def runs_cells(self) -> bool:
        return self.resources.get(SLOT, 0) >= 1

    @property
    def hostname(self) -> str:
        return (self.host.hostname if self.host else None) or host_of(self.resources) or self.ip

    @property
    def usable(self) -> bool:
        return self.alive and self.runs_cells and self.error is None

    def label(self) -> str:
        return f"{self.node_id[:12]} ({self.hostname}, {self.ip})"
