"""Hardware profiles (``hardware_profiles/*.yaml``) and detection of the host (the ``auto`` profile)."""

from __future__ import annotations

import datetime as dt
import os
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from bench.errors import BenchError
from bench.yamlfile import StrictModel, parse_yaml_file

HOURS_PER_YEAR = 365 * 24



# Sanity bounds for tier figures, far above any single machine (the fastest accelerator memories are a
# few TB/s; a GPU's dense tensor throughput a few PFLOP/s): a figure beyond them is a typo or a unit error.
MAX_BANDWIDTH_GBS = 20_000.0
MAX_GFLOPS = 10_000_000.0
_READ = r"^(\d{4}-\d{2}-\d{2}|not recorded)$"


def _iso_date(v: Any) -> Any:
    """YAML reads 2026-11-30 as a date; keep it as ISO text so rows stay plain JSON."""
    return v.isoformat() if isinstance(v, (dt.date, dt.datetime)) else v


class Capacity(StrictModel):
    threads: int = Field(gt=0)
    ram_gb: float = Field(gt=0)
    vram_gb: float | None = Field(default=None, gt=0)
    reserve_ram_gb: float = Field(default=0, ge=0)  # kept free for the OS and runtime
    reserve_vram_gb: float = Field(default=0, ge=0)


class Price(StrictModel):
    """What an hour of this tier costs: a cloud on-demand price, or a purchase amortized."""

    basis: Literal["on_demand", "purchase"]
    usd_per_hour: float | None = Field(default=None, gt=0)
    purchase_usd: float | None = Field(default=None, gt=0)
    lifetime_years: float | None = Field(default=None, gt=0)
    power_watts: float | None = Field(default=None, gt=0)
    electricity_usd_per_kwh: float | None = Field(default=None, gt=0)
    source: str | None = None
    read: str | None = Field(default=None, pattern=_READ)  # the date the price was read

    _read_iso = field_validator("read", mode="before")(_iso_date)

    def hourly_usd(self) -> float | None:
        """On-demand: the listed price. Purchase: price / lifetime hours + power x electricity.
        None when a needed figure is missing (never a guess)."""
        if self.basis == "on_demand":
            return self.usd_per_hour
        if self.purchase_usd is None or self.lifetime_years is None:
            return None
        hourly = self.purchase_usd / (self.lifetime_years * HOURS_PER_YEAR)
        if self.power_watts is not None and self.electricity_usd_per_kwh is not None:
            hourly += self.power_watts / 1000 * self.electricity_usd_per_kwh
        return hourly


class Figure(StrictModel):
    """One published figure of a real machine: a datasheet or derived peak, or a measurement with its
    tool. The page it was read from and the date it was read go with it, so it can be re-checked."""

    value: float = Field(gt=0)
    kind: Literal["peak", "measured"]
    tool: str | None = None        # measured: what measured it (STREAM, HPL, llama-bench...)
    derivation: str | None = None  # peak: the arithmetic from a datasheet, e.g. "4267 MT/s x 32 bit / 8"
    source: str = Field(min_length=1)
    read: str = Field(pattern=_READ)  # the date the figure was read, or "not recorded" (older entries)
    note: str | None = None

    _read_iso = field_validator("read", mode="before")(_iso_date)

    @model_validator(mode="after")
    def _measured_names_its_tool(self) -> Figure:
        if self.kind == "measured" and not self.tool:
            raise ValueError("a measured figure needs the tool that measured it (tool: ...)")
        return self

    def label(self) -> str:
        how = f"measured with {self.tool}" if self.kind == "measured" else (
            f"peak ({self.derivation})" if self.derivation else "peak (datasheet)")
        return f"{self.value:g} {how}; {self.source}, read {self.read}"


def _bounded(figures: list[Figure], limit: float, what: str) -> list[Figure]:
    for f in figures:
        if f.value > limit:
            raise ValueError(f"{what} {f.value:g} is above any real machine ({limit:g}): a typo or a unit error?")
    return figures


def preferred_figure(figures: list[Figure]) -> Figure | None:
    """The first measured figure, else the first peak: a measurement beats a datasheet."""
    return next((f for f in figures if f.kind == "measured"), figures[0] if figures else None)


class Compute(StrictModel):
    """What llama.cpp computes with on this machine: the threads it would use by default and the
    throughput of the kernel's data type (fp32 on a CPU, fp16 tensor on a GPU)."""

    threads: int | None = Field(default=None, gt=0)  # llama.cpp's default thread count here
    threads_why: str | None = None                   # which cores those are (physical, performance...)
    simd: str | None = None                          # vector width and FMA pipes, where known
    fp32_gflops: list[Figure] = Field(default_factory=list)
    fp64_gflops: list[Figure] = Field(default_factory=list)  # HPL results (CPUs)
    fp16_gflops: list[Figure] = Field(default_factory=list)  # dense tensor throughput (GPUs)

    @field_validator("fp32_gflops", "fp64_gflops", "fp16_gflops")
    @classmethod
    def _possible(cls, v: list[Figure]) -> list[Figure]:
        return _bounded(v, MAX_GFLOPS, "GFLOP/s")


class Performance(StrictModel):
    """Figures of the real tier, with their sources, used only for projections labelled as such."""

    memory_bandwidth: list[Figure] = Field(default_factory=list)  # GB/s; measured preferred over peak
    compute: Compute | None = None
    # How llama.cpp runs there, where the device does not say it: "apple" for a Mac (Metal over unified
    # memory, whatever the profile's device), "embedded-gpu" for a Jetson, "gpu-hbm" for a GPU on HBM
    # (the classes of bench.projection.evidence).
    device_class: Literal["cpu", "gpu", "gpu-hbm", "gpu-other", "apple", "embedded-gpu"] | None = None
    note: str | None = None

    @field_validator("memory_bandwidth")
    @classmethod
    def _possible(cls, v: list[Figure]) -> list[Figure]:
        return _bounded(v, MAX_BANDWIDTH_GBS, "memory bandwidth (GB/s)")

    @property
    def bandwidth(self) -> Figure | None:
        return preferred_figure(self.memory_bandwidth)


class Profile(StrictModel):
    schema_version: Literal[1] = 1
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    name: str
    device: Literal["cpu", "cuda"] = "cpu"
    capacity: Capacity
    price: Price | None = None
    performance: Performance | None = None

    @model_validator(mode="after")
    def _gpu_has_vram(self) -> Profile:
        if self.device == "cuda" and self.capacity.vram_gb is None:
            raise ValueError("a cuda profile needs capacity.vram_gb")
        compute = self.performance.compute if self.performance else None
        if self.device == "cpu" and compute and compute.threads and compute.threads != self.capacity.threads:
            raise ValueError(f"capacity.threads {self.capacity.threads} differs from performance.compute.threads "
                             f"{compute.threads}: a CPU tier is emulated with the threads llama.cpp would use there")
        return self

    def hourly_usd(self) -> float | None:
        """The tier's $/hour (``Price.hourly_usd``), None when it has no usable price."""
        return self.price.hourly_usd() if self.price else None


@dataclass
class HostInfo:
    """What the host has, recorded in every result row."""

    hostname: str
    cpu_model: str
    physical_cores: int | None
    logical_cores: int
    usable_cpus: int  # CPUs in this process's affinity mask
    ram_bytes: int
    os: str
    gpus: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def detect_gpus() -> list[dict[str, Any]]:
    """NVIDIA GPUs through NVML (nvidia-ml-py) if present, else torch if already installed.
    Cheap when there is no NVIDIA driver: torch is never imported then."""
    if not Path("/proc/driver/nvidia/version").exists() and not os.environ.get("CUDA_VISIBLE_DEVICES"):
        return []
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            out = []
            for i in range(pynvml.nvmlDeviceGetCount()):
                h = pynvml.nvmlDeviceGetHandleByIndex(i)
                name = pynvml.nvmlDeviceGetName(h)
                out.append({
                    "index": i,
                    "name": name.decode() if isinstance(name, bytes) else name,
                    "vram_bytes": int(pynvml.nvmlDeviceGetMemoryInfo(h).total),
                    "driver": pynvml.nvmlSystemGetDriverVersion(),
                    "via": "nvml",
                })
            return out
        finally:
            pynvml.nvmlShutdown()
    except Exception:
        pass
    try:
        import torch

        if torch.cuda.is_available():
            return [{"index": i, "name": torch.cuda.get_device_name(i),
                     "vram_bytes": int(torch.cuda.get_device_properties(i).total_memory), "via": "torch"}
                    for i in range(torch.cuda.device_count())]
    except Exception:
        pass
    return []


def detect_host() -> HostInfo:
    import psutil

    return HostInfo(
        hostname=platform.node(),
        cpu_model=_cpu_model(),
        physical_cores=psutil.cpu_count(logical=False),
        logical_cores=psutil.cpu_count(logical=True) or 1,
        usable_cpus=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1),
        ram_bytes=psutil.virtual_memory().total,
        os=f"{platform.system()} {platform.release()}",
        gpus=detect_gpus(),
    )


def auto_profile(host: HostInfo) -> Profile:
    """The host as it is: all usable CPUs (physical cores if fewer), all RAM, the first GPU."""
    threads = min(host.usable_cpus, host.physical_cores or host.usable_cpus)
    gpu = host.gpus[0] if host.gpus else None
    return Profile(
        id="auto",
        name=f"this host ({host.cpu_model}{', ' + gpu['name'] if gpu else ''})",
        device="cuda" if gpu else "cpu",
        capacity=Capacity(threads=threads, ram_gb=host.ram_bytes / 2**30,
                          vram_gb=gpu["vram_bytes"] / 2**30 if gpu else None),
    )


def load_profiles(directory: Path) -> dict[str, Profile]:
    if not directory.is_dir():
        raise BenchError(f"{directory}: hardware profiles folder not found")
    profiles: dict[str, Profile] = {}
    for path in sorted(directory.glob("*.yaml")):
        p = parse_yaml_file(path, Profile)
        if p.id != path.stem:
            raise BenchError(f"{path}:1: profile id {p.id!r} must match the file name {path.stem!r}")
        profiles[p.id] = p
    return profiles


def get_profile(profile_id: str, directory: Path, host: HostInfo, *, local: bool = True) -> Profile:
    """The profile named ``profile_id``; ``local``: it runs on ``host``, so a cuda tier needs a GPU
    here (a fleet node offering the tier brings its own)."""
    if profile_id == "auto":
        return auto_profile(host)
    path = directory / f"{profile_id}.yaml"
    if not path.exists():
        known = ", ".join(["auto", *sorted(p.stem for p in directory.glob("*.yaml"))])
        raise BenchError(f"unknown hardware profile {profile_id!r}; known: {known}")
    profile = parse_yaml_file(path, Profile)
    if local and profile.device == "cuda" and not host.gpus:
        raise BenchError(f"profile {profile_id!r} needs a CUDA GPU and this host has none")
    return profile
