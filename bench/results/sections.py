"""The sections of a result row as small frozen types, each serialized to the JSON rows have always
had. Readers use attributes (``row.environment.host.hostname``), never string paths.

Every section reads leniently and writes faithfully: a key this version does not name is kept in
``extra`` and written back as it was read, so older and newer rows pass through unchanged; a field
that is None is left out of the JSON unless its class lists it in ``NULLABLE`` (where a null says
something, such as "no reference").
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, TypeVar

S = TypeVar("S", bound="Section")


@dataclass(frozen=True)
class Section:
    extra: Mapping[str, Any] = field(default_factory=dict)  # keys this version does not name, as read

    NESTED: ClassVar[dict[str, type[Section]]] = {}
    NULLABLE: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def from_dict(cls: type[S], d: Mapping[str, Any] | None) -> S:
        d = dict(d or {})
        names = {f.name for f in fields(cls)} - {"extra"}
        kwargs: dict[str, Any] = {}
        for name in names & d.keys():
            value = d[name]
            nested = cls.NESTED.get(name)
            kwargs[name] = nested.from_dict(value) if nested is not None and isinstance(value, Mapping) else value
        return cls(**kwargs, extra={k: v for k, v in d.items() if k not in names})

    def to_dict(self) -> dict[str, Any]:
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        if all(v is None for v in values.values()):
            return dict(self.extra)  # nothing measured: the empty section it was
        out: dict[str, Any] = {}
        for name, value in values.items():
            if value is None and name not in self.NULLABLE:
                continue
            out[name] = value.to_dict() if isinstance(value, Section) else value
        out.update(self.extra)
        return out

    def replace(self: S, **changes: Any) -> S:
        return dataclasses.replace(self, **changes)

    def __bool__(self) -> bool:
        """An empty section (nothing measured) is falsy, as the empty dict it stands for was."""
        return bool(self.to_dict())


# -- model --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelFacts(Section):
    """The catalog's facts about the model, each sourced in models.yaml."""

    developer: str | None = None
    country: str | None = None
    params_b: float | None = None
    license: str | None = None
    family: str | None = None
    note: str | None = None  # e.g. "a code model": what a reader must know to read its scores
    # the developer's published scores of the original release (bench.models.catalog.PublishedScore)
    published_scores: list[dict[str, Any]] | None = None


@dataclass(frozen=True)
class ModelInfo(Section):
    """The file that was measured: where it came from, its checksum and its GGUF header summary."""

    model_id: str = ""
    variant_id: str = ""
    format: str = ""
    quantization: str | None = None
    path: str = ""
    sha256: str | None = None
    size_bytes: int | None = None
    source: str = ""
    gguf: dict[str, Any] | None = None  # bench.models.gguf_info.GgufInfo.to_dict()
    facts: ModelFacts | None = None
    # How its bytes were checked (bench.models.lockfile): "pinned" (the catalog's sha256), "recorded at
    # first fetch" (the lock file's), "derived here; its source file: ...", or "none: ..." (a path given)
    check: str | None = None

    NESTED = {"facts": ModelFacts}
    NULLABLE = ("quantization", "sha256", "gguf", "facts")


# -- environment --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Host(Section):
    hostname: str = "?"
    cpu_model: str | None = None
    physical_cores: int | None = None
    logical_cores: int | None = None
    usable_cpus: int | None = None
    ram_bytes: int | None = None
    os: str | None = None
    gpus: list[dict[str, Any]] = field(default_factory=list)

    NULLABLE = ("physical_cores",)


@dataclass(frozen=True)
class Calibration(Section):
    """This host's measured memory bandwidth and matmul rate at the cell's thread count, and for a
    cell on a cuda tier the GPU's (``gpu_*``, bench.hardware.calibration.calibrate_gpu)."""

    memory_bandwidth_bytes_per_s: float | None = None
    matmul_flop_per_s: float | None = None
    threads: int | None = None
    date: str | None = None
    method: str | None = None
    seconds: float | None = None
    gpu_name: str | None = None
    gpu_memory_bandwidth_bytes_per_s: float | None = None
    gpu_matmul_flop_per_s: float | None = None  # fp16
    gpu_matmul_bf16_flop_per_s: float | None = None
    gpu_matmul_fp32_flop_per_s: float | None = None
    gpu_method: str | None = None


@dataclass(frozen=True)
class Fleet(Section):
    """The fleet node that ran the cell (``bench run --fleet``): which node of which cluster, the
    tiers it offers and what its detected hardware contradicts in the cell's tier (if anything)."""

    address: str | None = None  # the cluster's head, as the driver was given it
    node_id: str | None = None
    node_ip: str | None = None
    hostname: str | None = None
    tiers: list[str] | None = None  # the profiles the node offers
    contradictions: list[str] | None = None  # detected hardware against the cell's tier; empty: it is the tier
    attempt: int | None = None  # 2: the retry after the first node was lost


@dataclass(frozen=True)
class Environment(Section):
    host: Host = field(default_factory=Host)
    platform: str | None = None
    python: str | None = None
    python_executable: str | None = None
    packages: dict[str, str | None] = field(default_factory=dict)
    bench_version: str | None = None
    bench_commit: str | None = None
    llama_cpp_build: dict[str, Any] | None = None  # bench.native.buildinfo.build_facts()
    calibration: Calibration | None = None
    backend: dict[str, Any] | None = None  # the backend's own facts (versions, dtype, build), per backend
    machine_state: dict[str, Any] | None = None  # around the timed pass: others' load, steal, clocks (flags)
    fleet: Fleet | None = None  # set when a fleet node ran the cell

    NESTED = {"host": Host, "calibration": Calibration, "fleet": Fleet}
    NULLABLE = ("bench_commit",)


# -- measured -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Memory(Section):
    """Peak memory of the timed child (docs/METRICS.md, Memory)."""

    baseline_rss_bytes: int | None = None
    peak_rss_sampled_bytes: int | None = None
    rss_samples: int | None = None
    rss_sampling_interval_s: float | None = None
    peak_rss_ru_maxrss_bytes: int | None = None
    peak_rss_bytes: int | None = None
    ram_limit_bytes: int | None = None
    peak_vram_allocated_bytes: int | None = None
    peak_vram_reserved_bytes: int | None = None
    peak_vram_nvml_process_bytes: int | None = None
    peak_vram_nvml_device_bytes: int | None = None  # the device's used memory: peak - level at the start
    vram_nvml_device_baseline_bytes: int | None = None
    vram_nvml_unavailable: str | None = None


@dataclass(frozen=True)
class Stats(Section):
    """mean, sample standard deviation, min, max and n over counted repetitions."""

    mean: float | None = None
    std: float | None = None
    min: float | None = None
    max: float | None = None
    n: int | None = None

    NULLABLE = ("std",)


@dataclass(frozen=True)
class ItlStats(Section):
    """Inter-token latency percentiles, pooled over repetitions."""

    p50: float | None = None
    p90: float | None = None
    p99: float | None = None
    max: float | None = None
    mean: float | None = None
    n: int | None = None


@dataclass(frozen=True)
class Flag(Section):
    value: bool | None = None


@dataclass(frozen=True)
class Summary(Section):
    """Statistics over the counted repetitions (docs/METRICS.md, Speed)."""

    ttft_s: Stats | None = None
    prefill_tps: Stats | None = None
    decode_tps: Stats | None = None
    tpot_s: Stats | None = None
    e2e_s: Stats | None = None
    itl_s: ItlStats | None = None
    generated_tokens: Stats | None = None
    prefill_separated: Flag | None = None
    backend_prefill_tps: Stats | None = None
    backend_decode_tps: Stats | None = None
    energy_j_per_token: Stats | None = None
    prefill_text_bps: Stats | None = None  # UTF-8 bytes of prompt per second of prefill
    decode_text_bps: Stats | None = None  # UTF-8 bytes of generated text per second of decode
    # At a depth (config.depth > 0): how the KV cache was filled before the requests, and how long
    # that took (never part of any request's timing): bench.measuring.worker.fill_depth
    depth_fill: dict[str, Any] | None = None

    NESTED = {name: Stats for name in ("ttft_s", "prefill_tps", "decode_tps", "tpot_s", "e2e_s", "generated_tokens",
                                       "backend_prefill_tps", "backend_decode_tps", "energy_j_per_token",
                                       "prefill_text_bps", "decode_text_bps")} | {
        "itl_s": ItlStats, "prefill_separated": Flag}
    NULLABLE = ("ttft_s", "prefill_tps", "decode_tps", "tpot_s", "e2e_s", "itl_s", "generated_tokens",
                "prefill_separated")

    def mean(self, metric: str) -> float | None:
        s = getattr(self, metric, None)
        return s.mean if isinstance(s, (Stats, ItlStats)) else None


@dataclass(frozen=True)
class Tier(Section):
    """How the tier was emulated here, its budget, the fit prediction and what was measured."""

    threads_requested: int | None = None
    thread_cap: str | None = None
    threads_used: int | None = None
    ram_budget_bytes: int | None = None
    enforcement: str | None = None
    ram_cap_note: str | None = None
    predicted_memory: dict[str, Any] | None = None  # tiers.MemoryPrediction, and the depth and KV cache types
    fit_check: str | None = None
    affinity_in_child: list[int] | None = None
    fits: bool | None = None
    measured_peak_rss_bytes: int | None = None
    prediction_error: float | None = None
    vram_budget_bytes: int | None = None
    vram_cap: str | None = None
    gpu_layers_that_fit: int | None = None
    # "measured": on the tier itself (a fleet node that is the tier, or `auto`, the host as it is);
    # "emulated on HOST": the tier's caps applied on another machine. Rows before it have none.
    basis: str | None = None
    # The tier's speed: "measured" (on the tier itself), "projected from ..." (the performance
    # model, efficiency.projection) or "caps only" (fit measured under the caps, speed not).
    speed_basis: str | None = None

    @property
    def measured_on_tier(self) -> bool:
        return self.basis == "measured"


@dataclass(frozen=True)
class Roofline(Section):
    share: float | None = None
    bytes_per_token: int | None = None
    bandwidth_bytes_per_s: float | None = None
    bandwidth_source: str | None = None


@dataclass(frozen=True)
class Cost(Section):
    usd_per_1m_output_tokens: float | None = None
    usd_per_hour: float | None = None
    basis: str | None = None
    price_source: str | None = None
    speed_basis: str | None = None
    why: str | None = None
    usd_per_1m_output_tokens_interval: list[float | None] | None = None  # from the projection's interval

    NULLABLE = ("usd_per_1m_output_tokens",)


@dataclass(frozen=True)
class Efficiency(Section):
    energy_source: str | None = None
    roofline: Roofline | None = None
    roofline_unavailable: str | None = None  # why a cell has no roofline share (a GPU cell without its figures)
    cost: Cost | None = None
    projection: dict[str, Any] | None = None  # projection.tier.TierProjection; PROJECTION, never a measurement

    NESTED = {"roofline": Roofline, "cost": Cost}


# -- quality and task ---------------------------------------------------------------------------
@dataclass(frozen=True)
class KldStats(Section):
    mean: float | None = None
    se: float | None = None
    median: float | None = None
    p99: float | None = None
    max: float | None = None


@dataclass(frozen=True)
class QualityReference(Section):
    variant_id: str | None = None
    quantization: str | None = None
    sha256: str | None = None
    cache: str | None = None
    load: dict[str, Any] | None = None  # how the reference pass loaded it (bench.measuring.job.LoadConfig)

    NULLABLE = ("quantization", "sha256")


@dataclass(frozen=True)
class Quality(Section):
    """Perplexity, and divergence from the reference variant on the same tokens (docs/METRICS.md)."""

    status: str | None = None
    reason: str | None = None
    note: str | None = None
    corpus: dict[str, Any] | None = None
    reference: QualityReference | None = None
    reference_pass: dict[str, Any] | None = None
    load: dict[str, Any] | None = None  # how the quality pass loaded the variant
    positions: int | None = None
    perplexity: float | None = None
    perplexity_se: float | None = None
    mean_nll: float | None = None
    kld: KldStats | None = None
    same_top_token: float | None = None
    same_top_token_se: float | None = None
    ln_ppl_ratio: float | None = None
    ln_ppl_ratio_se: float | None = None
    reference_perplexity: float | None = None
    memory: dict[str, Any] | None = None

    NESTED = {"reference": QualityReference, "kld": KldStats}
    NULLABLE = ("reference",)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True)
class Task(Section):
    """Task accuracy (pass@1 for an executed task), and time, energy and cost per correct answer."""

    name: str | None = None
    file: str | None = None
    status: str | None = None
    reason: str | None = None
    load: dict[str, Any] | None = None
    id: str | None = None  # the task file's name (gsm8k, humaneval, ...); ``name`` is the task as given
    metric: str | None = None  # accuracy | pass@1 (the task file's)
    shots: int | None = None
    max_new_tokens: int | None = None
    prompt: dict[str, Any] | None = None  # style (chat | completion), stop sequences, template
    sandbox: dict[str, Any] | None = None  # an executed task: the isolation this host gave, and the limits
    items: int | None = None
    correct: int | None = None
    accuracy: float | None = None
    accuracy_se: float | None = None
    truncated: int | None = None  # answers cut off at max_new_tokens (counted as not correct)
    accuracy_answered: float | None = None  # correct / (items - truncated)
    reasoning_tokens: int | None = None  # a reasoning model's think spans, within generated_tokens
    answer_tokens: int | None = None
    seconds: float | None = None
    generated_tokens: int | None = None
    prompt_tokens_reused: int | None = None  # prompt tokens served from the KV cache (the shared few-shot prefix)
    seconds_per_correct: float | None = None
    tokens_per_correct: float | None = None
    energy_j_per_correct: float | None = None
    usd_per_correct: float | None = None
    energy_source: str | None = None
    memory: dict[str, Any] | None = None
    machine_state: dict[str, Any] | None = None  # as the timed pass's (bench.measuring.machine_state)
    records: list[dict[str, Any]] | None = None

    NULLABLE = ("seconds_per_correct", "tokens_per_correct")

    @property
    def ok(self) -> bool:
        return self.status == "ok"
