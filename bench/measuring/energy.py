"""Energy counters: RAPL (CPU package, /sys/class/powercap) and NVML (GPU total energy).

Each meter reads a cumulative counter in joules; a run takes the difference around each request.
Where no counter can be read, the meter says why, and no number is reported.
"""

from __future__ import annotations

from pathlib import Path

RAPL_ROOT = Path("/sys/class/powercap")


class EnergyMeter:
    source: str = "unavailable"

    def read_joules(self) -> float:
        raise NotImplementedError


class RaplMeter(EnergyMeter):
    """Sum of the package domains (intel-rapl:N, also used by AMD), wrap-around handled per read."""

    source = "rapl"

    def __init__(self, domains: list[Path]) -> None:
        self.domains = domains
        self.ranges = [int((d / "max_energy_range_uj").read_text()) for d in domains]
        self.last = [int((d / "energy_uj").read_text()) for d in domains]
        self.total_uj = 0

    def read_joules(self) -> float:
        for i, d in enumerate(self.domains):
            now = int((d / "energy_uj").read_text())
            delta = now - self.last[i]
            if delta < 0:  # the counter wrapped
                delta += self.ranges[i]
            self.total_uj += delta
            self.last[i] = now
        return self.total_uj / 1e6


class NvmlMeter(EnergyMeter):
    source = "nvml"

    def __init__(self, index: int = 0) -> None:
        import pynvml

        pynvml.nvmlInit()
        self._nvml = pynvml
        self.handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        pynvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)  # raises if unsupported

    def read_joules(self) -> float:
        return self._nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle) / 1e3  # millijoules


def open_meter(device: str) -> tuple[EnergyMeter | None, str]:
    """(meter, source) or (None, why not)."""
    if device == "cuda":
        try:
            return NvmlMeter(), "nvml"
        except Exception as exc:
            return None, f"unavailable: NVML energy counter not readable ({type(exc).__name__}: {exc})"
    domains = sorted(p for p in RAPL_ROOT.glob("intel-rapl:*") if p.name.count(":") == 1)
    if not domains:
        return None, f"unavailable: no RAPL package domain under {RAPL_ROOT}"
    try:
        return RaplMeter(domains), "rapl"
    except OSError as exc:
        return None, f"unavailable: RAPL counters not readable ({exc.strerror or exc})"
