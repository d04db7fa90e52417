"""The machine's state around a cell: was it the machine it claims to be for the whole run?

A slower result can come from slower code or from a machine that was not all there: clocks that
fell (thermal or power limits on small boards and thin laptops), other processes on the cores the
cell was pinned to, or, on a VM, time the hypervisor gave to someone else (steal). None of the
common benchmarks records this. The parent samples, while the child runs, what Linux exposes at no
cost to the child: per-CPU busy, idle and steal time (/proc/stat), each pinned core's clock
(cpufreq), thermal zones, and for a GPU its clocks and throttle reasons (NVML). What cannot be read
here is reported as unavailable, with why.

    others' share = (busy time of the pinned CPUs - the child's own CPU time) / (wall x pinned CPUs)
    steal share   = steal time of the pinned CPUs / (wall x pinned CPUs)
    clock drop    = 1 - lowest sampled clock / highest sampled clock, per pinned core

A cell is flagged ``disturbed`` when others' share exceeds 5%, steal exceeds 2%, or a clock fell by
more than 10% while it ran (thresholds in DISTURBED).

The cores watched are those the cell ran on (``cpus_to_watch``): the ones it was pinned to under an
emulated tier's caps, else every core it could run on (a machine that is the tier, a fleet node,
pins nothing): a row measured on the tier itself is checked as well as an emulated one.
"""

from __future__ import annotations

import glob
import os
import resource
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.results.kinds import MachineVerdict

DISTURBED = {"others_share": 0.05, "steal_share": 0.02, "clock_drop": 0.10}
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_times(path: Path = Path("/proc/stat")) -> dict[int, tuple[float, float, float]]:
    """Per CPU: (busy, idle, steal) seconds since boot. Busy = user + nice + system + irq + softirq."""
    out: dict[int, tuple[float, float, float]] = {}
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        parts = line.split()
        if not parts or not parts[0].startswith("cpu") or parts[0] == "cpu":
            continue
        v = [int(x) for x in parts[1:]] + [0] * 8
        user, nice, system, idle, iowait, irq, softirq, steal = v[:8]
        out[int(parts[0][3:])] = ((user + nice + system + irq + softirq) / _TICK, (idle + iowait) / _TICK,
                                  steal / _TICK)
    return out


def cpus_to_watch(pinned: list[int] | None) -> tuple[list[int], bool]:
    """(the cores a cell runs on, whether it is pinned to them): its pinned cores, else every core
    this process may run on (the measuring child inherits its affinity)."""
    if pinned:
        return sorted(pinned), True
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0)), False
    return list(range(os.cpu_count() or 1)), False


def clock_khz(cpu: int) -> int | None:
    try:
        return int(Path(f"/sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_cur_freq").read_text())
    except (OSError, ValueError):
        return None


def temperatures_c() -> dict[str, float]:
    out = {}
    for zone in sorted(glob.glob("/sys/class/thermal/thermal_zone*")):
        try:
            kind = Path(zone, "type").read_text().strip()
            out[f"{Path(zone).name}:{kind}"] = int(Path(zone, "temp").read_text()) / 1000
        except (OSError, ValueError):
            continue
    return out


def _gpu_state() -> dict[str, Any] | None:
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:  # no driver or no device: nothing to read
        return None
    try:
        h = pynvml.nvmlDeviceGetHandleByIndex(0)
        # "clocks event reasons" is NVML's newer name for throttle reasons (the old call is deprecated)
        reasons = getattr(pynvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or \
            pynvml.nvmlDeviceGetCurrentClocksThrottleReasons
        return {"sm_clock_mhz": pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM),
                "mem_clock_mhz": pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_MEM),
                "throttle_reasons": int(reasons(h)),
                "temperature_c": pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU)}
    except Exception:
        return None
    finally:
        try:
            pynvml.nvmlShutdown()  # nvmlInit counts references: one shutdown per init
        except Exception:
            pass


def _children_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


@dataclass
class StateWatch:
    """Samples the machine in the parent (1 Hz) while a child runs on ``cpus`` (``pinned``: it is
    pinned to them; else they are every core it could run on)."""

    cpus: list[int]
    gpu: bool = False
    pinned: bool = True
    interval_s: float = 1.0
    clocks: dict[int, list[int]] = field(default_factory=dict)
    temps: dict[str, list[float]] = field(default_factory=dict)
    gpu_samples: list[dict[str, Any]] = field(default_factory=list)

    def __enter__(self) -> StateWatch:
        self._t0, self._times0, self._child0 = time.monotonic(), cpu_times(), _children_cpu_s()
        self._stop = threading.Event()
        self._sample()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def _sample(self) -> None:
        for cpu in self.cpus:
            khz = clock_khz(cpu)
            if khz is not None:
                self.clocks.setdefault(cpu, []).append(khz)
        for zone, celsius in temperatures_c().items():
            self.temps.setdefault(zone, []).append(celsius)
        if self.gpu:
            g = _gpu_state()
            if g is not None:
                self.gpu_samples.append(g)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._sample()
        self.wall_s = time.monotonic() - self._t0
        self._times1, self._child1 = cpu_times(), _children_cpu_s()

    @classmethod
    def for_cell(cls, pinned: list[int] | None, gpu: bool = False) -> StateWatch:
        """The watch of a cell pinned to ``pinned`` (None or empty: not pinned, every core watched)."""
        cpus, is_pinned = cpus_to_watch(pinned)
        return cls(cpus, gpu=gpu, pinned=is_pinned)

    def report(self) -> dict[str, Any]:
        out = summarize_state(self.cpus, self.wall_s, self._times0, self._times1, self._child1 - self._child0,
                              self.clocks, self.temps, self.gpu_samples,
                              "pinned cores" if self.pinned else "cores the cell could run on")
        out["cpus_watched"] = "the cores the cell was pinned to" if self.pinned else (
            "every core the cell could run on (it was not pinned)")
        return out


def summarize_state(cpus: list[int], wall_s: float, before: dict[int, tuple[float, float, float]],
                    after: dict[int, tuple[float, float, float]], child_cpu_s: float,
                    clocks: dict[int, list[int]], temps: dict[str, list[float]],
                    gpu: list[dict[str, Any]], cores: str = "pinned cores") -> dict[str, Any]:
    """The state report and its flags (the formulas are in the module docstring). Pure. ``cores``
    names the watched cores in the flags ("pinned cores", or those of an unpinned cell)."""
    out: dict[str, Any] = {"cpus": cpus, "wall_s": wall_s, "child_cpu_s": child_cpu_s, "flags": []}
    pinned = [c for c in cpus if c in before and c in after]
    if pinned and wall_s > 0:
        busy = sum(after[c][0] - before[c][0] for c in pinned)
        steal = sum(after[c][2] - before[c][2] for c in pinned)
        capacity = wall_s * len(pinned)
        out["others_share"] = max(0.0, busy - child_cpu_s) / capacity
        out["steal_share"] = steal / capacity
        if out["others_share"] > DISTURBED["others_share"]:
            out["flags"].append(f"other processes used {out['others_share']:.0%} of the {cores}")
        if out["steal_share"] > DISTURBED["steal_share"]:
            out["flags"].append(f"the hypervisor took {out['steal_share']:.0%} of the {cores} (steal)")
    else:
        out["cpu_time"] = ("unavailable: no cores to watch" if not cpus else
                           "unavailable: no /proc/stat" if not (before and after) else
                           "unavailable: the watched cores are not in /proc/stat" if wall_s > 0 else
                           "unavailable: no time elapsed")
    if clocks:
        out["clock_khz"] = {str(c): {"min": min(v), "max": max(v)} for c, v in clocks.items()}
        drop = max(1 - min(v) / max(v) for v in clocks.values() if max(v))
        out["clock_drop"] = drop
        if drop > DISTURBED["clock_drop"]:
            out["flags"].append(f"a watched core's clock fell by {drop:.0%} during the cell")
    else:
        out["clock_khz"] = "unavailable: no cpufreq under /sys/devices/system/cpu (common on VMs)"
    out["temperature_c"] = ({z: {"min": min(v), "max": max(v)} for z, v in temps.items()} if temps
                            else "unavailable: no thermal zones")
    if gpu:
        sm = [g["sm_clock_mhz"] for g in gpu]
        out["gpu"] = {"sm_clock_mhz": {"min": min(sm), "max": max(sm)},
                      "mem_clock_mhz": {"min": min(g["mem_clock_mhz"] for g in gpu),
                                        "max": max(g["mem_clock_mhz"] for g in gpu)},
                      "temperature_c_max": max(g["temperature_c"] for g in gpu),
                      "throttle_reasons": sorted({g["throttle_reasons"] for g in gpu}),
                      "samples": len(gpu)}
        if max(sm) and 1 - min(sm) / max(sm) > DISTURBED["clock_drop"]:
            out["flags"].append(f"the GPU's SM clock fell from {max(sm)} to {min(sm)} MHz")
    out["disturbed"] = bool(out["flags"])
    return out


def verdict(state: dict[str, Any] | None) -> MachineVerdict:
    """The typed verdict of a StateWatch report: disturbed or not, and its flags; the reason of a
    disturbed pass starts with its ``label`` (MachineVerdict.flag_reason), the same wording for
    every pass."""
    return MachineVerdict.of(state)
