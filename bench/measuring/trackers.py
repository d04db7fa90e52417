"""Trackers as context managers, used inside the benchmark child process.

MemoryTracker samples this process's resident set size in a thread and cross-checks the peak
with getrusage's ru_maxrss (the kernel's own high-water mark, which sampling can miss).
VramTracker reads torch's allocator peaks when torch is in use, and NVML's per-process view.
"""

from __future__ import annotations

import os
import resource
import sys
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any


class MemoryTracker:
    # 10 Hz: on a 2-core host running 2 compute threads, each wake of this thread preempts a
    # compute thread; sampling at 50 Hz cost 2-3% of decode speed, 10 Hz costs well under 1%.
    # ru_maxrss catches any peak that falls between two samples.
    def __init__(self, interval_s: float = 0.1, limit_bytes: int | None = None,
                 on_exceed: Callable[[int], None] | None = None) -> None:
        """``on_exceed(rss)`` is called from the sampling thread when RSS passes ``limit_bytes``
        (the RAM cap of an emulated tier where no cgroup can enforce one)."""
        import psutil

        self._proc = psutil.Process()
        self.interval_s = interval_s
        self.baseline_rss = self._proc.memory_info().rss
        # Linux keeps a process's RSS high-water mark across execve, so a fresh child starts with
        # its parent's peak; ru_maxrss says something about this process only once it rises above
        # the value it had here.
        self._maxrss_at_start = self._ru_maxrss()
        self.peak_rss = self.baseline_rss
        self.samples = 0
        self.limit_bytes = limit_bytes
        self.on_exceed = on_exceed
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def sample(self) -> int:
        rss = self._proc.memory_info().rss
        self.peak_rss = max(self.peak_rss, rss)
        self.samples += 1
        if self.limit_bytes is not None and rss > self.limit_bytes and self.on_exceed is not None:
            self.on_exceed(rss)
        return rss

    def __enter__(self) -> MemoryTracker:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    @staticmethod
    def _ru_maxrss() -> int:
        # Linux reports ru_maxrss in KiB, macOS in bytes.
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)

    def report(self) -> dict[str, Any]:
        maxrss = self._ru_maxrss()
        out: dict[str, Any] = {
            "baseline_rss_bytes": self.baseline_rss,
            "peak_rss_sampled_bytes": self.peak_rss,
            "rss_samples": self.samples,
            "rss_sampling_interval_s": self.interval_s,
        }
        if maxrss > self._maxrss_at_start:
            # Both are lower bounds of the true peak: sampling can miss a spike between samples,
            # and the kernel folds per-thread RSS counters into its high-water mark lazily (it can
            # lag the live RSS by a few hundred KiB). The peak reported is the larger.
            out["peak_rss_ru_maxrss_bytes"] = maxrss
            out["peak_rss_bytes"] = max(self.peak_rss, maxrss)
        else:
            out["peak_rss_ru_maxrss_bytes"] = None
            out["ru_maxrss_note"] = (f"not informative: {maxrss} bytes inherited from the parent across exec "
                                     "and never exceeded here")
            out["peak_rss_bytes"] = self.peak_rss
        return out


class VramTracker:
    """Peak GPU memory of this process: torch's allocator counters (if torch is loaded) and NVML
    (if nvidia-ml-py is installed). Reports which source gave which number.

    NVML's per-process list names processes by the PIDs it sees; inside a container with a PID
    namespace of its own (or without the rights to list processes) this process is not in it. The
    device's used memory is sampled too, so the peak above its level at the start is reported
    beside it (``peak_vram_nvml_device_bytes``): the whole GPU's growth, this process's own only when
    nothing else allocates on the card meanwhile."""

    def __init__(self, device_index: int = 0, interval_s: float = 0.05) -> None:
        self.device_index = device_index
        self.interval_s = interval_s
        self.pid = os.getpid()
        self.process_peak: int | None = None  # None: never listed by NVML
        self.device_baseline: int | None = None
        self.device_peak: int | None = None
        self.nvml_error: str | None = None
        self.nvml_samples = 0  # NVML readings taken
        self.nvml_listed = 0  # of them, those that listed this process (its usedGpuMemory may still be None)
        self._handle: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> VramTracker:
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats(self.device_index)
        try:
            import pynvml

            pynvml.nvmlInit()
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(self.device_index)
            self.device_baseline = self.device_peak = int(pynvml.nvmlDeviceGetMemoryInfo(self._handle).used)
            self._thread = threading.Thread(target=self._run, name="vram-sampler", daemon=True)
            self._thread.start()
        except Exception as exc:  # no driver, no package: say so in the report
            self.nvml_error = f"{type(exc).__name__}: {exc}"
        return self

    def _sample_nvml(self) -> None:
        import pynvml

        self.nvml_samples += 1
        used = int(pynvml.nvmlDeviceGetMemoryInfo(self._handle).used)
        self.device_peak = max(self.device_peak or 0, used)
        mine = [p for p in pynvml.nvmlDeviceGetComputeRunningProcesses(self._handle) if p.pid == self.pid]
        self.nvml_listed += bool(mine)
        for p in mine:
            if p.usedGpuMemory is not None:
                self.process_peak = max(self.process_peak or 0, int(p.usedGpuMemory))

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self._sample_nvml()
            except Exception as exc:
                self.nvml_error = f"{type(exc).__name__}: {exc}"
                return

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            try:
                self._sample_nvml()
            except Exception:
                pass
        if self._handle is not None:
            try:
                import pynvml

                pynvml.nvmlShutdown()
            except Exception:
                pass

    def report(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():
            out["peak_vram_allocated_bytes"] = int(torch.cuda.max_memory_allocated(self.device_index))
            out["peak_vram_reserved_bytes"] = int(torch.cuda.max_memory_reserved(self.device_index))
        out.update(nvml_vram_fields(self.pid, self.process_peak, self.device_baseline, self.device_peak,
                                    self.nvml_error, self.nvml_samples, self.nvml_listed))
        return out


def nvml_peak_report(peak: int | None, samples: int, listed: int, error: str | None) -> dict[str, Any]:
    """NVML's peak for this process, or why there is none: a process NVML never listed (or listed
    without a memory figure, as in many containers) has an unknown VRAM use, never 0 bytes."""
    if peak is not None:
        return {"peak_vram_nvml_process_bytes": peak}
    if error:
        return {"vram_nvml_unavailable": error}
    if not samples:
        return {"vram_nvml_unavailable": "NVML was not read (no sample taken)"}
    if not listed:
        return {"vram_nvml_unavailable": f"this process was not in NVML's list of compute processes in any of "
                                         f"{samples} reading(s) (it used no GPU, or NVML cannot see it: a container's "
                                         "own PID namespace)"}
    return {"vram_nvml_unavailable": f"NVML listed this process in {listed} of {samples} reading(s) without a memory "
                                     "figure (usedGpuMemory unavailable, common in containers and under MIG)"}


def nvml_vram_fields(pid: int, process_peak: int | None, device_baseline: int | None, device_peak: int | None,
                     error: str | None, samples: int, listed: int) -> dict[str, Any]:
    """What NVML's samples say, each number under the name of what it measures:
    ``peak_vram_nvml_process_bytes`` (this process, from NVML's process list; or
    ``vram_nvml_unavailable`` with why, nvml_peak_report) and ``peak_vram_nvml_device_bytes``
    (device used memory: peak - level at the start, the whole GPU's growth). A process NVML never
    listed gets no process figure at all (never a 0 that would read as measured)."""
    out = nvml_peak_report(process_peak, samples, listed, error)
    if device_baseline is not None and device_peak is not None:
        out["peak_vram_nvml_device_bytes"] = max(0, device_peak - device_baseline)
        out["vram_nvml_device_baseline_bytes"] = device_baseline
        if "vram_nvml_unavailable" in out:
            out["vram_nvml_unavailable"] += (f" (pid {pid}); peak_vram_nvml_device_bytes is the whole device's "
                                             "growth, not this process's own")
    return out


class Stopwatch:
    """``with Stopwatch() as sw: ...`` then ``sw.seconds``."""

    def __enter__(self) -> Stopwatch:
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._t0
