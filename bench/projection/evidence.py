"""The evidence a tier's speed rests on: published measurements of real machines
(``validation/measurements.csv``), those machines' figures (``validation/machines.yaml``), llama-bench
runs imported as result rows (``validation/imported/*.jsonl``, written by ``bench import --evidence``),
and the frozen test split (``validation/test_split.txt``: machines no fit or band ever reads).

Every entry names its source URL, date and the quoted line; a bad one stops with file, line and one
message. Numbers are as published; nothing here is estimated.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field

from bench.errors import BenchError
from bench.hardware.profiles import Performance
from bench.yamlfile import StrictModel, parse_yaml_file

UNITS = {"B": 1, "bytes": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}
REQUIRED_COLUMNS = ("id", "machine", "backend", "model", "params_b", "size", "size_unit", "quant", "moe", "threads",
                    "ngl", "prompt_tokens", "gen_tokens", "prefill_tps", "decode_tps", "source", "date", "quote",
                    "notes")
OPTIONAL_COLUMNS = ("depth", "publisher", "excluded")  # older files lack them: depth 0, publisher from the URL
# excluded: why an entry, kept as published, is not evidence the model may use (a non-default build, say)

# Device classes: the groups whose llama.cpp decode efficiency is alike, each fitted on its own.
#   cpu           the CPU's cores stream the weights (any ISA)
#   gpu           an NVIDIA GPU with its own GDDR memory (consumer and workstation cards, L40S, A6000...)
#   gpu-hbm       a GPU on HBM (A100, H100, MI300X...): llama.cpp's one-sequence kernels keep too few
#                 bytes in flight to fill it (Little's law), so it reaches a smaller share of its peak
#   gpu-other     AMD and Intel GPUs through ROCm, Vulkan or SYCL (other kernels, other efficiency)
#   apple         Apple Silicon's GPU over unified memory (Metal), how llama.cpp runs on a Mac
#   embedded-gpu  a Jetson: a small GPU sharing LPDDR with an ARM host
DeviceClass = Literal["cpu", "gpu", "gpu-hbm", "gpu-other", "apple", "embedded-gpu"]
DEVICE_CLASSES: tuple[str, ...] = ("cpu", "gpu", "gpu-hbm", "gpu-other", "apple", "embedded-gpu")
# Classes with too little evidence of their own borrow the parameters of this one (named in the projection).
PARENT_CLASS = {"gpu-hbm": "gpu", "gpu-other": "gpu", "embedded-gpu": "gpu"}
_DECLARED = {"cpu": "cpu", "consumer-gpu": "gpu", "datacenter-gpu": "gpu", "amd-gpu": "gpu-other",
             "intel-gpu": "gpu-other", "gpu": "gpu", "gpu-hbm": "gpu-hbm", "gpu-other": "gpu-other",
             "apple": "apple", "embedded-gpu": "embedded-gpu"}
# GPUs whose memory is HBM, by product name (datasheet facts): A100/A800/A30, H100/H200/H800/GH200,
# B100/B200, V100, P100, AMD Instinct MI*, Radeon VII.
_HBM_NAMES = re.compile(r"\b(a100|a800|a30|h100|h200|h800|gh200|b100|b200|v100|p100|mi\d{2,3}x?|radeon vii)\b")


def device_class(device: str, name: str = "", declared: str | None = None, memory: str | None = None) -> str:
    """The class of a machine or tier from what it says of itself: HBM memory (by its memory type or
    product name) first, then a declared class, then the device API and the name."""
    low = f"{name} {memory or ''}".lower()
    if device not in ("cpu", "metal") and ("hbm" in low or _HBM_NAMES.search(low)):
        return "gpu-hbm"
    if declared:
        if declared not in _DECLARED:
            raise BenchError(f"unknown device class {declared!r}; known: {', '.join(sorted(_DECLARED))}")
        return _DECLARED[declared]
    if device == "metal":
        return "apple"
    if device == "cpu":
        return "cpu"
    if any(k in low for k in ("jetson", "orin", "tegra")):
        return "embedded-gpu"
    if device in ("rocm", "sycl") or any(k in low for k in ("amd", "radeon", "intel", " arc ")):
        return "gpu-other"
    return "gpu"


class Machine(StrictModel):
    """A real machine of the validation set: its figures in the profiles' ``performance`` schema and
    what the sources say about its cores and memory (descriptive, kept for readers)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    name: str
    device: Literal["cpu", "cuda", "metal", "vulkan", "rocm", "sycl"]
    declared_class: str | None = Field(default=None, alias="class")
    performance: Performance = Field(default_factory=Performance)
    note: str | None = None
    cores: int | None = None
    p_cores: int | None = None
    e_cores: int | None = None
    smt_threads: int | None = None
    uarch: str | None = None
    simd: str | None = None
    memory: str | None = None
    vendor: str | None = None
    sm_count: int | None = None
    cuda_cores: int | None = None
    tensor_cores: int | None = None
    gpu_cores: int | None = None
    compute_units: int | None = None
    xe_cores: int | None = None
    tiers: list[str] = Field(default_factory=list)  # hardware profiles this machine is (its evidence is theirs)

    @property
    def device_class(self) -> str:
        return device_class(self.device, self.name, self.declared_class, self.memory)


class MachinesFile(StrictModel):
    schema_version: Literal[1] = 1
    machines: list[Machine]


@dataclass(frozen=True)
class Entry:
    """One published (or imported) measurement of a real machine."""

    id: str
    machine: str
    backend: str
    model: str
    params: float | None        # total parameters
    size_bytes: float | None    # the model file; None: not published (its decode cannot be used)
    quant: str
    moe: bool
    threads: int | None
    ngl: int | None
    prompt_tokens: int | None
    gen_tokens: int | None
    depth: int
    prefill_tps: float | None
    decode_tps: float | None
    source: str
    publisher: str
    date: str
    quote: str
    line: int
    notes: str = ""
    origin: str = "measurements.csv"
    excluded: str = ""

    @property
    def engine(self) -> str:
        """llama.cpp (llama-bench, llama-server, Ollama's embedded copy) or another engine whose
        kernels differ (ik_llama.cpp, llamafile): those are kept as published but not used."""
        b = self.backend.lower()
        if "ik_llama" in b:
            return "ik_llama.cpp"
        if "llamafile" in b:
            return "llamafile"
        return "llama.cpp"

    @property
    def usable(self) -> bool:
        """Evidence the model may use: llama.cpp's kernels, a dense model, no prefilled depth."""
        return self.engine == "llama.cpp" and not self.moe and not self.depth and not self.excluded

    @property
    def model_key(self) -> str:
        """What makes two entries 'the same model file' (leave-one-model-out within a machine): its type and
        size where the size is published (the same file under two names is one file), else its name."""
        if self.size_bytes:
            return f"{self.quant}|{self.size_bytes}"
        return f"{self.params or self.model}|{self.quant}|"


def _num(raw: str | None, what: str, where: str, *, positive: bool = True) -> float | None:
    raw = (raw or "").strip()
    if not raw:
        return None
    try:
        v = float(raw)
    except ValueError:
        raise BenchError(f"{where}: {what} {raw!r} is not a number") from None
    if positive and not (v > 0 and math.isfinite(v)):
        raise BenchError(f"{where}: {what} {raw!r} must be a positive number")
    if not positive and not (v >= 0 and math.isfinite(v)):
        raise BenchError(f"{where}: {what} {raw!r} must be zero or more")
    return v


def _int(raw: str | None, what: str, where: str, *, positive: bool = True) -> int | None:
    v = _num(raw, what, where, positive=positive)
    return int(v) if v is not None else None


def _publisher(source: str) -> str:
    """Older rows have no publisher column: the host and first path part of the URL stand in."""
    parts = source.split("//", 1)[-1].split("/")
    return "/".join(parts[:3]) if parts and parts[0] == "github.com" else parts[0]


def parse_entry(row: dict[str, str], path: Path | str, line: int) -> Entry:
    eid = (row.get("id") or "").strip()
    where = f"{path}:{line}: entry {eid or '(no id)'}"
    if not eid:
        raise BenchError(f"{where}: no id")
    source = (row.get("source") or "").strip()
    if not source.startswith(("http://", "https://")):
        raise BenchError(f"{where}: no source (a URL of the page the measurement was read from)")
    if not (row.get("date") or "").strip():
        raise BenchError(f"{where}: no date (when the measurement was published or read)")
    if not (row.get("quote") or "").strip():
        raise BenchError(f"{where}: no quote (the line of the source the figures were read from)")
    size = _num(row.get("size"), "size", where)
    unit = (row.get("size_unit") or "").strip()
    if size is not None and unit not in UNITS:
        raise BenchError(f"{where}: size_unit {unit!r} is not one of {', '.join(UNITS)}")
    decode, prefill = _num(row.get("decode_tps"), "decode_tps", where), _num(row.get("prefill_tps"), "prefill_tps",
                                                                              where)
    if decode is None and prefill is None:
        raise BenchError(f"{where}: neither decode_tps nor prefill_tps")
    params = _num(row.get("params_b"), "params_b", where)
    moe = (row.get("moe") or "no").strip().lower()
    if moe not in ("yes", "no"):
        raise BenchError(f"{where}: moe must be yes or no, not {moe!r}")
    return Entry(id=eid, machine=(row.get("machine") or "").strip(), backend=(row.get("backend") or "").strip(),
                 model=(row.get("model") or "").strip(), params=params * 1e9 if params else None,
                 size_bytes=size * UNITS[unit] if size is not None else None,
                 quant=(row.get("quant") or "").strip(), moe=moe == "yes",
                 threads=_int(row.get("threads"), "threads", where), ngl=_int(row.get("ngl"), "ngl", where,
                                                                                positive=False),
                 prompt_tokens=_int(row.get("prompt_tokens"), "prompt_tokens", where),
                 gen_tokens=_int(row.get("gen_tokens"), "gen_tokens", where),
                 depth=_int(row.get("depth"), "depth", where, positive=False) or 0,
                 prefill_tps=prefill, decode_tps=decode, source=source,
                 publisher=(row.get("publisher") or "").strip() or _publisher(source), date=row["date"].strip(),
                 quote=row["quote"].strip(), line=line, notes=(row.get("notes") or "").strip(),
                 excluded=(row.get("excluded") or "").strip())


def load_entries(path: Path) -> list[Entry]:
    """Every published measurement; a bad one stops everything with its file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BenchError(f"{path}: file not found") from None
    reader = csv.DictReader(text.splitlines())
    missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise BenchError(f"{path}:1: missing columns: {', '.join(missing)}")
    entries, seen = [], set()
    for i, row in enumerate(reader, start=2):
        e = parse_entry(row, path, i)
        if e.id in seen:
            raise BenchError(f"{path}:{i}: entry {e.id}: duplicate id")
        seen.add(e.id)
        entries.append(e)
    return entries


def load_machines(path: Path) -> dict[str, Machine]:
    machines: dict[str, Machine] = {}
    for m in parse_yaml_file(path, MachinesFile).machines:
        if m.id in machines:
            raise BenchError(f"{path}: machine {m.id} is listed twice")
        machines[m.id] = m
    return machines


def load_split(path: Path, machines: dict[str, Machine]) -> frozenset[str]:
    """The frozen test split: one machine id per line (# comments). Missing file: no test split."""
    if not path.exists():
        return frozenset()
    ids = set()
    for n, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        mid = raw.split("#", 1)[0].strip()
        if not mid:
            continue
        if mid not in machines:
            raise BenchError(f"{path}:{n}: unknown machine {mid!r}")
        ids.add(mid)
    return frozenset(ids)


@dataclass(frozen=True)
class EvidenceSet:
    """Entries with the machines they ran on, and which machines are held out for testing."""

    entries: tuple[Entry, ...]
    machines: dict[str, Machine]
    test_machines: frozenset[str]
    folder: Path | None = None

    def of_machine(self, machine_id: str) -> list[Entry]:
        return [e for e in self.entries if e.machine == machine_id]

    def train(self) -> EvidenceSet:
        return replace(self, entries=tuple(e for e in self.entries if e.machine not in self.test_machines))

    def test(self) -> EvidenceSet:
        return replace(self, entries=tuple(e for e in self.entries if e.machine in self.test_machines))

    def for_tier(self, tier_id: str) -> list[Entry]:
        """Entries of the machines that are this tier (``tiers:`` in machines.yaml, or imported for it)."""
        ids = {m.id for m in self.machines.values() if tier_id in m.tiers}
        return [e for e in self.entries if e.machine in ids]


def imported_entries(folder: Path, machines: dict[str, Machine]) -> tuple[list[Entry], dict[str, Machine]]:
    """Rows written by ``bench import --evidence`` (validation/imported/*.jsonl) as entries; each
    carries its machine (the tier it was imported for) so it needs no line in machines.yaml."""
    from bench.projection.importer import entries_from_rows

    entries: list[Entry] = []
    extra: dict[str, Machine] = {}
    for path in sorted(folder.glob("*.jsonl")) if folder.is_dir() else []:
        got, ms = entries_from_rows(path)
        entries += got
        for m in ms:
            if m.id not in machines:
                extra[m.id] = m
    return entries, extra


def load_evidence(folder: Path) -> EvidenceSet:
    """validation/: the published entries, the imported rows, the machines and the test split."""
    machines = load_machines(folder / "machines.yaml")
    entries = load_entries(folder / "measurements.csv")
    more, extra = imported_entries(folder / "imported", machines)
    machines = {**machines, **extra}
    entries += more
    for e in entries:
        if e.machine not in machines:
            raise BenchError(f"{folder / e.origin}:{e.line}: entry {e.id}: unknown machine {e.machine!r}")
    return EvidenceSet(tuple(entries), machines, load_split(folder / "test_split.txt", machines), folder)


def describe(e: Entry) -> dict[str, Any]:
    return {"id": e.id, "machine": e.machine, "model": e.model, "quant": e.quant, "threads": e.threads,
            "depth": e.depth, "decode_tps": e.decode_tps, "prefill_tps": e.prefill_tps, "source": e.source}


# ---- depth series: one model on one machine at several prefilled depths -----------------------------

DEPTH_SHAPES = "depth_shapes.csv"   # sourced KV shapes of the published series' models
DEPTH_SUITE = "depth_suite.csv"     # the suite's own depth sweep (benchmarks/depth_validation_data.py)


@dataclass(frozen=True)
class DepthPoint:
    depth: int
    decode_context: float            # the positions a decoded token attends to on average
    prompt_tokens: int | None
    decode_tps: float | None
    prefill_tps: float | None


@dataclass(frozen=True)
class DepthSeries:
    """What the depth validation scores: the ratios of each point to the shallowest one."""

    id: str
    machine: str
    device_class: str
    engine: str
    origin: str                      # "published" or "suite (host ...)"
    n_layer: int
    n_head: int
    n_head_kv: int
    key_length: int
    value_length: int
    file_bytes: float
    n_params: float | None
    shape_source: str
    points: tuple[DepthPoint, ...]
    test: bool = False               # a machine of the frozen test split: scored, never fitted
    file: str = ""                   # the GGUF's file name, where known (the suite's sweep)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(line for line in fh if not line.startswith("#")))


def _shape_rows(folder: Path) -> list[dict[str, str]]:
    path = folder / DEPTH_SHAPES
    return _rows(path) if path.exists() else []


def published_depth_series(ev: EvidenceSet, folder: Path) -> tuple[list[DepthSeries], list[str]]:
    """Published entries of one machine, build, model, quantization and thread count at two or more
    depths (one at depth > 0), whose model has a sourced shape in depth_shapes.csv that applies; the
    rest are named with why they are left out."""
    groups: dict[tuple[str, ...], list[Entry]] = {}
    for e in ev.entries:
        groups.setdefault((e.machine, e.backend, e.model, e.quant, str(e.threads), e.source), []).append(e)
    shapes = _shape_rows(folder)
    series, left_out = [], []
    for key, entries in groups.items():
        entries = [e for e in entries if not e.excluded]
        if not any(e.depth for e in entries):
            continue
        name = f"{key[0]}: {key[2]} ({key[3]})"
        if len({e.depth for e in entries}) < 2:
            left_out.append(f"{name}: one depth only, no ratio")
            continue
        row = next((r for r in shapes if r["model_contains"].lower() in key[2].lower()), None)
        if row is None or entries[0].moe:
            why = "mixture of experts" if entries[0].moe else "no sourced KV shape in " + DEPTH_SHAPES
            left_out.append(f"{name}: {why}")
            continue
        if row["applies"].strip().lower() != "yes":
            left_out.append(f"{name}: {row['note']}")
            continue
        where = f"{folder / DEPTH_SHAPES}: {row['model_contains']}"
        head_dim = _int(row["head_dim"], "head_dim", where)
        e0 = entries[0]
        pts = tuple(sorted((DepthPoint(e.depth, e.depth + (e.gen_tokens or 128) / 2, e.prompt_tokens, e.decode_tps,
                                       e.prefill_tps) for e in entries), key=lambda p: p.depth))
        series.append(DepthSeries(
            id=f"{key[0]}|{e0.model}|{e0.quant}|{key[1][:40]}", machine=key[0],
            device_class=ev.machines[key[0]].device_class, engine=e0.engine, origin="published",
            n_layer=_int(row["n_layer"], "n_layer", where) or 0, n_head=_int(row["n_head"], "n_head", where) or 0,
            n_head_kv=_int(row["n_head_kv"], "n_head_kv", where) or 0, key_length=head_dim or 0,
            value_length=head_dim or 0, file_bytes=e0.size_bytes or 0.0, n_params=e0.params,
            shape_source=row["source"], points=pts, test=key[0] in ev.test_machines))
    return series, left_out


def suite_depth_series(folder: Path) -> list[DepthSeries]:
    """The suite's own sweep (depth_suite.csv): a CPU host, shapes from the real GGUF headers."""
    path = folder / DEPTH_SUITE
    if not path.exists():
        return []
    by: dict[str, list[dict[str, str]]] = {}
    for i, r in enumerate(_rows(path), start=3):
        r["_line"] = str(i)
        by.setdefault(r["series"], []).append(r)
    out = []
    for sid, rows in by.items():
        r0, where = rows[0], f"{path}:{rows[0]['_line']}"
        pts = tuple(sorted((DepthPoint(int(r["depth"]), float(r["decode_context"]), _int(r["prompt_tokens"], "prompt",
                                                                                         where),
                                       _num(r["decode_tps"], "decode_tps", where),
                                       _num(r["prefill_tps"], "prefill_tps", where)) for r in rows),
                           key=lambda p: p.depth))
        out.append(DepthSeries(
            id=sid, machine=f"host {r0['host']}", device_class="cpu", engine=f"llama.cpp ({r0['engine']})",
            origin=f"suite (host {r0['host']}, {r0['date']})", n_layer=int(r0["n_layer"]), n_head=int(r0["n_head"]),
            n_head_kv=int(r0["n_head_kv"]), key_length=int(r0["key_length"]), value_length=int(r0["value_length"]),
            file_bytes=float(r0["file_bytes"]), n_params=_num(r0["n_params"], "n_params", where),
            shape_source=r0["shape_source"], points=pts, file=r0["file"]))
    return out
