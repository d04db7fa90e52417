"""The result schema, defined once: one ``Row`` per benchmark cell, serialized as one JSON line.

Bump RESULT_SCHEMA_VERSION when a field is added, changes meaning or is removed, and add the reader
of the version before it in ``bench/results/versions.py`` (one reader per version, no branches on a
row's age elsewhere); readers refuse versions they do not know with a message naming the version.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from bench.errors import BenchError
from bench.results.kinds import (
    Basis,
    MachineVerdict,
    RowStatus,
    SpeedBasis,
    emulated_on,
    parse_basis,
    parse_speed_basis,
)
from bench.results.sections import (
    Efficiency,
    Environment,
    Memory,
    ModelInfo,
    Quality,
    Section,
    Summary,
    Task,
    Tier,
)
from bench.results.versions import RESULT_SCHEMA_VERSION, reader

STATUSES: tuple[str, ...] = tuple(RowStatus)
# Options the planner derives from the host (a tier's VRAM as a fraction of this GPU's): they differ
# between machines for the same cell, so they are not part of a cell's identity across machines.
DERIVED_OPTIONS = ("vram_fraction",)


@dataclass(frozen=True)
class CellQuality:
    """A cell's quality pass (bench.request.QualitySpec.cell_dict): the corpus, the window and the
    number of windows, and the reference variant only where it was chosen explicitly."""

    corpus: str
    n_ctx: int
    chunks: int
    reference: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """As stored, and as the cell's key hashes it: no ``reference`` unless chosen, so cells from
        before it could be chosen keep their keys."""
        d: dict[str, Any] = {"corpus": self.corpus, "n_ctx": self.n_ctx, "chunks": self.chunks}
        if self.reference is not None:
            d["reference"] = self.reference
        return d


@dataclass(frozen=True)
class CellTask:
    """A cell's task pass with every setting resolved (bench.request.TaskSpec.cell_dict)."""

    name: str
    limit: int | None = None  # None: every item
    shots: int | None = None
    max_new_tokens: int | None = None
    n_ctx: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class CellConfig:
    """Everything that defines a benchmark cell; two runs of equal configs are comparable."""

    model_id: str
    variant_id: str
    backend: str
    profile_id: str
    device: str
    threads: int
    prompt_tokens: int
    gen_tokens: int
    repetitions: int
    warmup: int
    n_ctx: int
    n_gpu_layers: int
    seed: int
    stop_at_eos: bool
    timeout_s: float
    backend_options: dict[str, Any] = field(default_factory=dict)
    quality: CellQuality | None = None  # when quality is measured
    task: CellTask | None = None  # when task accuracy is measured
    depth: int = 0  # tokens in the KV cache before the timed prompt (filled once, never timed)

    def key(self) -> str:
        """Stable id of the cell: equal configs (apart from the timeout) give equal keys. Depth 0 is
        left out, so cells from before depth existed keep their keys."""
        d = self.to_dict()
        d.pop("timeout_s")
        if not d["depth"]:
            d.pop("depth")
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    def identity(self) -> tuple:
        """What must be equal for two cells to be compared or merged as the same cell (LOOSE_FIELDS
        may differ, and host-derived options such as a tier's VRAM fraction are left out)."""
        options = {k: v for k, v in (self.backend_options or {}).items() if k not in DERIVED_OPTIONS}
        return (self.model_id, self.variant_id, self.backend, self.profile_id, self.device, self.prompt_tokens,
                self.gen_tokens, self.n_ctx, self.n_gpu_layers, self.stop_at_eos, tuple(sorted(options.items())),
                repr(self.quality), repr(self.task), self.depth)

    def to_dict(self) -> dict[str, Any]:
        """The config as stored (the quality and task passes as their dicts)."""
        d = asdict(self)
        d["quality"] = self.quality.to_dict() if self.quality else None
        d["task"] = self.task.to_dict() if self.task else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CellConfig:
        """A stored config (TypeError on a key this version does not know, as before)."""
        q, t = d.get("quality"), d.get("task")
        return cls(**{**d, "quality": CellQuality(**q) if q else None, "task": CellTask(**t) if t else None})

    def label(self) -> str:
        depth = f" d={self.depth}" if self.depth else ""
        return (f"{self.model_id}:{self.variant_id} {self.backend} {self.profile_id} "
                f"p={self.prompt_tokens} n={self.gen_tokens}{depth}")


@dataclass(frozen=True)
class ProfileInfo(Section):
    """The hardware profile as used (its YAML, validated by bench.hardware.profiles.Profile)."""

    schema_version: int | None = None
    id: str = ""
    name: str = ""
    device: str = "cpu"
    capacity: dict[str, Any] = field(default_factory=dict)
    price: dict[str, Any] | None = None
    performance: dict[str, Any] | None = None

    NULLABLE = ("price", "performance")

    def hourly_usd(self) -> float | None:
        """The tier's $/hour (bench.hardware.profiles.Price.hourly_usd), None without a usable price."""
        from bench.hardware.profiles import Price

        if not self.price:
            return None
        try:
            return Price(**self.price).hourly_usd()
        except (TypeError, ValueError):
            return None


SECTIONS: dict[str, type[Section]] = {
    "model": ModelInfo, "profile": ProfileInfo, "environment": Environment, "memory": Memory, "summary": Summary,
    "tier": Tier, "efficiency": Efficiency, "quality": Quality, "task": Task}


@dataclass
class Row:
    run_id: str
    created_at: str  # ISO 8601, UTC
    status: RowStatus
    reason: str | None
    config: CellConfig
    model: ModelInfo  # the file: source, sha256, size, GGUF header, the catalog's facts
    profile: ProfileInfo  # the hardware profile as used
    environment: Environment  # host, OS, Python, library versions, llama.cpp build, calibration, backend
    load_time_s: float | None = None
    memory: Memory = field(default_factory=Memory)
    summary: Summary = field(default_factory=Summary)  # statistics over counted repetitions
    tier: Tier = field(default_factory=Tier)  # emulation, predicted vs measured memory, fits
    efficiency: Efficiency = field(default_factory=Efficiency)  # roofline share, cost, energy, projections
    quality: Quality = field(default_factory=Quality)  # perplexity, KLD vs the reference, ...
    task: Task = field(default_factory=Task)  # accuracy and cost per correct answer
    samples: list[dict[str, Any]] = field(default_factory=list)  # raw, one per counted repetition
    warmup_samples: list[dict[str, Any]] = field(default_factory=list)
    definitions: str = ""
    schema_version: int = RESULT_SCHEMA_VERSION
    kind: str = "run"  # beside bench serve's rows ("serving", bench.results.serving); absent in older rows

    def __post_init__(self) -> None:
        self.status = RowStatus(self.status)  # a word outside the vocabulary is a bug: ValueError here

    @property
    def cell_key(self) -> str:
        return self.config.key()

    @property
    def host(self) -> str:
        """The machine that ran the cell."""
        return self.environment.host.hostname

    @property
    def tier_label(self) -> str:
        """The tier a row speaks for: a profile, or `auto@HOST` for a host measured as it is."""
        return f"auto@{self.host}" if self.config.profile_id == "auto" else self.config.profile_id

    @property
    def basis(self) -> Basis:
        """Where the row's own numbers were measured (bench.results.kinds.Basis). Rows from before
        ``tier.basis``: by their profile (``auto`` is the host as it is)."""
        if self.tier.basis:
            return parse_basis(self.tier.basis)[0]
        return Basis.MEASURED if self.config.profile_id == "auto" else Basis.EMULATED

    @property
    def basis_text(self) -> str:
        """``tier.basis`` as stored ("measured", "emulated on HOST", "not measured: ..."), or as it
        would have been for a row from before the field."""
        if self.tier.basis:
            return self.tier.basis
        return Basis.MEASURED if self.config.profile_id == "auto" else emulated_on(self.host)

    @property
    def speed_kind(self) -> SpeedBasis:
        """What the tier's speed rests on. Rows from before the performance model: an emulated
        row's speed is this host's, so ``caps only``."""
        if self.tier.speed_basis:
            return parse_speed_basis(self.tier.speed_basis)
        return SpeedBasis.MEASURED if self.basis is Basis.MEASURED else SpeedBasis.CAPS_ONLY

    @property
    def machine(self) -> MachineVerdict:
        """Whether the machine was all there during the timed pass."""
        return MachineVerdict.of(self.environment.machine_state, self.reason)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            d[f.name] = (value.to_dict() if isinstance(value, Section) else
                         value.to_dict() if f.name == "config" else value)
        d["cell_key"] = self.cell_key
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Row:
        to_current = reader(d.get("schema_version"))
        if d.get("status") not in STATUSES:
            raise BenchError(f"unknown result status {d.get('status')!r}")
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in known}
        kwargs["config"] = CellConfig.from_dict(d["config"])
        for name, section in SECTIONS.items():
            kwargs[name] = section.from_dict(d.get(name))
        return to_current(cls(**kwargs))
