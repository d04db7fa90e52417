"""The result schema, defined once: one ``Row`` per benchmark cell, serialized as one JSON line.

Bump RESULT_SCHEMA_VERSION when a field changes meaning or is removed; readers refuse versions
they do not know with a message naming the version.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from bench.errors import BenchError

RESULT_SCHEMA_VERSION = 1
Status = Literal["ok", "failed", "oom", "timeout", "does_not_fit"]
STATUSES: tuple[str, ...] = ("ok", "failed", "oom", "timeout", "does_not_fit")


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
    quality: dict[str, Any] | None = None  # {corpus, n_ctx, chunks} when quality is measured
    task: dict[str, Any] | None = None  # {name, limit, shots, max_new_tokens, n_ctx} for task accuracy

    def key(self) -> str:
        """Stable id of the cell: equal configs (apart from the timeout) give equal keys."""
        d = asdict(self)
        d.pop("timeout_s")
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class Row:
    run_id: str
    created_at: str  # ISO 8601, UTC
    status: Status
    reason: str | None
    config: CellConfig
    model: dict[str, Any]  # id, variant, format, quantization, path, sha256, size, source, gguf
    profile: dict[str, Any]  # the hardware profile as used
    environment: dict[str, Any]  # host, OS, Python, library versions, backend build
    load_time_s: float | None = None
    memory: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)  # statistics over counted repetitions
    tier: dict[str, Any] = field(default_factory=dict)  # emulation, predicted vs measured memory, fits
    efficiency: dict[str, Any] = field(default_factory=dict)  # roofline share, cost, energy, projections
    quality: dict[str, Any] = field(default_factory=dict)  # perplexity, KLD vs the reference, ...
    task: dict[str, Any] = field(default_factory=dict)  # accuracy and cost per correct answer
    samples: list[dict[str, Any]] = field(default_factory=list)  # raw, one per counted repetition
    warmup_samples: list[dict[str, Any]] = field(default_factory=list)
    definitions: str = ""
    schema_version: int = RESULT_SCHEMA_VERSION

    @property
    def cell_key(self) -> str:
        return self.config.key()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["cell_key"] = self.cell_key
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Row:
        version = d.get("schema_version")
        if version != RESULT_SCHEMA_VERSION:
            raise BenchError(f"result schema version {version!r} is not supported (this is version "
                             f"{RESULT_SCHEMA_VERSION})")
        if d.get("status") not in STATUSES:
            raise BenchError(f"unknown result status {d.get('status')!r}")
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in known}
        kwargs["config"] = CellConfig(**d["config"])
        return cls(**kwargs)
