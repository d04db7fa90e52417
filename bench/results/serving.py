"""The serving row: ``bench serve``'s result, one JSON line per load point (and one per sweep
summary, task comparison), beside ``bench run``'s rows in the same results schema: every line has a
``kind`` (``"serving"`` here; a run row is ``"run"``, or has no ``kind`` when written before it was
named) and its own version (``serving_schema_version``). Appended with the same atomic, locked,
fsynced write as ``bench run``'s rows (bench.results.files.append_row).

Fields (every time in seconds, every rate per second; see docs/METRICS.md, "Serving"), each section a
small frozen type (bench.results.sections.Section: read leniently, written back as read):

- ``kind`` = "serving", ``serving_schema_version`` = 1, ``record``: ``point`` (one load point),
  ``sweep`` (the sweep's summary), ``task`` (task accuracy at concurrency 1 and N);
- ``run_id``, ``created_at`` (ISO 8601 UTC), ``status`` (``ok``: every counted request completed;
  ``partial``: some failed, the metrics are over those that completed; ``failed``: none completed or
  the point could not run) and ``reason``;
- ``target`` (ServingTarget): base URL, model name, API (completions/chat), server kind
  (``llama-server`` or ``openai-compatible``), ``managed`` (started by the suite, or a server the user
  runs: then the suite only measured it as a client), and for a managed server its command, build,
  log file, threads, context per slot, slots and ready time;
- ``model`` (ServingModel): id, variant, path, sha256, size; ``profile`` (ServingProfile): tier id,
  $/hour, basis;
- ``workload`` (Workload): prompts (kind, length, how counted and sent), output tokens (fixed or
  drawn), ``ignore_eos``, seed, endpoint;
- ``load`` (LoadSpec): the point (mode concurrency|rate, value, request and time bounds, warm-up, cap);
- ``placement`` (PlacementInfo): server and client CPUs, whether they overlap, a warning when they do;
- ``client`` (ClientState): its CPU use during the point (cores), its measured ceiling against a
  trivial streaming server, this point's share of it, whether it kept to the schedule (send lag);
- ``summary``: by record, PointSummary (bench/serving/metrics.py ``summarize_point``: throughputs,
  TTFT/TPOT/ITL/e2e, queue time, send lag, errors by kind, goodput, prompt-count check, cache hits),
  SweepSummary (the table of points, the largest sustainable load, the rule, the price) or
  TaskSummary (answers at concurrency 1 and N);
- ``server`` (ServerState): peak RSS over the point (VmHWM, reset at the point's start where
  allowed), VRAM (NVML) where readable, and the server's own counters over the point (/metrics deltas);
- ``requests`` (counted) and ``warmup_requests``: raw traces (bench/serving/metrics.py
  ``RequestTrace``: scheduled, sent, chunk arrival stamps, tokens per chunk, usage, status);
- ``warnings``, ``environment`` (host, versions, commit), ``definitions``.

Versions: one reader per ``serving_schema_version`` (``READERS``); a version this code does not know
is refused with a message naming it.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar, TypeVar

from bench.errors import BenchError
from bench.results.sections import Environment, Section

SERVING_SCHEMA_VERSION = 1
S = TypeVar("S", bound=Section)
RECORDS = ("point", "sweep", "task")
STATUSES = ("ok", "partial", "failed")
LOOPBACK = ("localhost", "::1")


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _all_nullable(cls: type) -> type:
    """A section whose writer always writes every named field, null included: read back, a null
    stays a null (``Section`` leaves out a None unless the field is NULLABLE)."""
    cls.NULLABLE = tuple(f.name for f in fields(cls) if f.name != "extra")
    return cls



@dataclass
class RequestTrace:
    """The raw record of one request, kept in the row so any other definition can be recomputed."""

    index: int
    scheduled: float
    sent: float | None = None
    slot_wait: float = 0.0
    chunk_times: list[float] = field(default_factory=list)
    chunk_tokens: list[int] = field(default_factory=list)
    tokens_source: str = "assumed-1"  # server-counter | token-ids | assumed-1
    end: float | None = None
    status: str = "pending"  # ok, or an error kind (see bench/serving/client.py)
    reason: str | None = None
    http_status: int | None = None
    prompt_tokens: int | None = None  # the server's usage.prompt_tokens
    prompt_tokens_client: int | None = None  # what the client prepared
    completion_tokens: int | None = None  # the server's usage.completion_tokens
    cached_tokens: int | None = None  # prompt tokens the server took from its cache
    max_tokens: int | None = None  # asked for
    finish_reason: str | None = None
    text: str | None = None  # kept only when asked for (task accuracy)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("scheduled", "sent", "slot_wait", "end"):
            if d[key] is not None:
                d[key] = round(d[key], 6)
        d["chunk_times"] = [round(t, 6) for t in self.chunk_times]
        if d["text"] is None:
            del d["text"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RequestTrace:
        return cls(**d)


@dataclass(frozen=True)
class Whole(Section):
    """A nested section that exists only where it was written, and then whole: every named field,
    null included, even when all are null (a load with no sustainable point is still a line)."""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name != "extra":
                value = getattr(self, f.name)
                out[f.name] = value.to_dict() if isinstance(value, Section) else value
        out.update(self.extra)
        return out


# -- the sections -------------------------------------------------------------------------------
@dataclass(frozen=True)
class ErrorCount(Whole):
    """The failed requests of one kind (bench.serving.metrics.errors_by_kind): how many, the first
    one's reason and HTTP status."""

    count: int = 0
    example: str | None = None
    http_status: int | None = None


class _WithErrors:
    """A section with ``errors``, failed requests by kind: read and written as ErrorCount each."""

    errors: dict[str, ErrorCount] | None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> Any:
        s = super().from_dict(d)  # type: ignore[misc]
        errors = s.errors
        return s.replace(errors={k: ErrorCount.from_dict(v) for k, v in errors.items()}
                         if isinstance(errors, Mapping) else errors)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()  # type: ignore[misc]
        if self.errors is not None:
            out["errors"] = {k: v.to_dict() for k, v in self.errors.items()}
        return out


@dataclass(frozen=True)
class Distribution(Whole):
    """Percentiles of one per-request metric over a point (bench.serving.metrics.distribution)."""

    p50: float | None = None
    p90: float | None = None
    p99: float | None = None
    mean: float | None = None
    min: float | None = None
    max: float | None = None
    n: int | None = None


@dataclass(frozen=True)
class Goodput(Whole):
    """Requests meeting both SLOs (TTFT and TPOT bounds), per second and as a share of all counted."""

    good: int | None = None
    goodput_rps: float | None = None
    share: float | None = None
    slo: dict[str, Any] | None = None  # {ttft_s, tpot_s, source}


@dataclass(frozen=True)
class CacheUse(Whole):
    """Prompt tokens the server took from its cache, where it says so."""

    requests_reporting: int | None = None
    cached_prompt_tokens: int | None = None
    requests_with_hits: int | None = None
    prompt_tokens_reporting: int | None = None
    cached_share: float | None = None


@dataclass(frozen=True)
class PointSummary(_WithErrors, Section):
    """One load point over its counted requests (bench.serving.metrics.summarize_point)."""

    requests: int | None = None
    ok: int | None = None
    not_sent: int | None = None
    errors: dict[str, ErrorCount] | None = None  # error kind -> how many
    window_s: float | None = None
    request_throughput_rps: float | None = None
    output_tps: float | None = None
    total_tps: float | None = None
    total_tps_unavailable: str | None = None
    output_tokens: int | None = None
    prompt_tokens: int | None = None
    ttft_s: Distribution | None = None
    ttft_from_send_s: Distribution | None = None
    tpot_s: Distribution | None = None
    itl_s: Distribution | None = None
    e2e_s: Distribution | None = None
    queue_time_s: Distribution | None = None
    send_lag_s: Distribution | None = None
    achieved_send_rate_rps: float | None = None
    goodput: Goodput | None = None
    cache: CacheUse | None = None

    NESTED: ClassVar[dict[str, type[Section]]] = {
        "ttft_s": Distribution, "ttft_from_send_s": Distribution, "tpot_s": Distribution, "itl_s": Distribution,
        "e2e_s": Distribution, "queue_time_s": Distribution, "send_lag_s": Distribution, "goodput": Goodput,
        "cache": CacheUse}
    # written by summarize_point every time (None: not measurable at this point); goodput only with SLOs
    NULLABLE: ClassVar[tuple[str, ...]] = (
        "window_s", "request_throughput_rps", "output_tps", "total_tps", "prompt_tokens", "ttft_s",
        "ttft_from_send_s", "tpot_s", "itl_s", "e2e_s", "queue_time_s", "send_lag_s", "achieved_send_rate_rps")

    def error_count(self, kind: str) -> int:
        e = (self.errors or {}).get(kind)
        return e.count if e else 0

    def stat(self, metric: str, q: str = "p50") -> float | None:
        """A percentile (``p50``, ``p99``, ``mean``...) of a distribution (``ttft_s``, ``tpot_s``...)."""
        d = getattr(self, metric, None)
        return getattr(d, q, None) if isinstance(d, Distribution) else None

    def holds(self, share: float) -> bool:
        """At least ``share`` of the counted requests met both SLOs."""
        return self.goodput is not None and self.goodput.share is not None and self.goodput.share >= share


@_all_nullable
@dataclass(frozen=True)
class ServingProfile(Section):
    """The tier the sweep ran under: its id, name and price."""

    id: str | None = None
    name: str | None = None
    usd_per_hour: float | None = None
    basis: str | None = None


@dataclass(frozen=True)
class SweepPoint(Whole):
    """One line of the sweep's table: a point's figures and whether it held."""

    mode: str | None = None
    load: float | None = None
    status: str | None = None
    requests: int | None = None
    ok: int | None = None
    request_throughput_rps: float | None = None
    output_tps: float | None = None
    ttft_p50_s: float | None = None
    ttft_p99_s: float | None = None
    tpot_p50_s: float | None = None
    itl_p50_s: float | None = None
    e2e_p99_s: float | None = None
    goodput_share: float | None = None
    goodput_rps: float | None = None
    kept_up: bool | None = None
    holds: bool | None = None
    prompt_cached_share: float | None = None
    usd_per_1m_output_tokens: float | None = None

    @property
    def load_label(self) -> str:
        return f"c={self.load:g}" if self.mode == "concurrency" else f"{self.load:g}/s"


@dataclass(frozen=True)
class Sustainable(Whole):
    """The largest sustainable load of one mode, its speed and its $ per 1M output tokens."""

    max_sustainable_load: float | None = None
    output_tps: float | None = None
    usd_per_1m_output_tokens: float | None = None
    usd_per_1m_output_tokens_at_concurrency_1: float | None = None


@dataclass(frozen=True)
class TaskLevel(_WithErrors, Section):
    """A task's answers at one concurrency."""

    accuracy: float | None = None
    correct: int | None = None
    items: int | None = None
    errors: dict[str, ErrorCount] | None = None
    output_tps: float | None = None
    answers: list[Any] | None = None

    NULLABLE: ClassVar[tuple[str, ...]] = ("output_tps",)


@dataclass(frozen=True)
class TaskSummary(Section):
    """The same greedy task answers at concurrency 1 and N, and what changed between them (the task
    runner's description of its prompts is kept as read, in ``extra``)."""

    task: str | None = None
    items: int | None = None
    max_tokens: int | None = None
    sampling: str | None = None
    concurrency: int | None = None
    at: dict[str, TaskLevel] | None = None  # concurrency -> its answers
    answers_changed: int | None = None
    texts_changed: int | None = None
    accuracy_change: float | None = None
    changed_items: list[dict[str, Any]] | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> TaskSummary:
        s = super().from_dict(d)
        if isinstance(s.at, Mapping):
            s = s.replace(at={k: TaskLevel.from_dict(v) for k, v in s.at.items()})
        return s

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        if self.at is not None:
            out["at"] = {k: v.to_dict() for k, v in self.at.items()}
        return out

    @property
    def compared(self) -> bool:
        """Both concurrencies ran: the changes are counted."""
        return self.answers_changed is not None


@dataclass(frozen=True)
class ServerAtOne(Whole):
    """The server's figures at concurrency 1 (p50s), beside the in-process ones."""

    ttft_p50_s: float | None = None
    tpot_p50_s: float | None = None
    e2e_p50_s: float | None = None
    output_tps: float | None = None


@dataclass(frozen=True)
class InProcess(Whole):
    """``bench run``'s cell for the same workload, beside the server's figures at concurrency 1."""

    status: str | None = None
    reason: str | None = None
    file: str | None = None
    threads: int | None = None
    cpus: list[int] | None = None
    ttft_s: float | None = None
    tpot_s: float | None = None
    decode_tps: float | None = None
    e2e_s: float | None = None
    basis: str | None = None
    server_at_concurrency_1: ServerAtOne | None = None

    NESTED: ClassVar[dict[str, type[Section]]] = {"server_at_concurrency_1": ServerAtOne}


@dataclass(frozen=True)
class SweepSummary(Section):
    """The sweep's table of points, its largest sustainable load per mode and the rule it used."""

    points: list[SweepPoint] | None = None
    max_sustainable: dict[str, Sustainable] | None = None  # mode -> the largest sustainable load
    rule: str | None = None
    price: ServingProfile | None = None
    measured_on: str | None = None
    usd_unavailable: str | None = None
    task: TaskSummary | None = None
    in_process: InProcess | None = None

    NESTED: ClassVar[dict[str, type[Section]]] = {"price": ServingProfile, "task": TaskSummary,
                                                  "in_process": InProcess}
    NULLABLE: ClassVar[tuple[str, ...]] = ("usd_unavailable",)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> SweepSummary:
        s = super().from_dict(d)
        return s.replace(points=[SweepPoint.from_dict(p) for p in s.points or []] if s.points is not None else None,
                         max_sustainable={k: Sustainable.from_dict(v) for k, v in s.max_sustainable.items()}
                         if isinstance(s.max_sustainable, Mapping) else s.max_sustainable)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        if self.points is not None:
            out["points"] = [p.to_dict() for p in self.points]
        if self.max_sustainable is not None:
            out["max_sustainable"] = {k: v.to_dict() for k, v in self.max_sustainable.items()}
        return out


@dataclass(frozen=True)
class ServingTarget(Section):
    """The server measured and how the suite reached it (a managed server's command, build, log,
    threads, slots and ready time are kept as read, in ``extra``)."""

    base_url: str | None = None
    model: str | None = None
    api: str | None = None
    server_kind: str | None = None
    managed: bool | None = None
    api_key: str | None = None  # where the key came from (never the key), or None

    NULLABLE: ClassVar[tuple[str, ...]] = ("api_key",)


@dataclass(frozen=True)
class ServingModel(Section):
    """The model: the catalog's id and variant and the file (a server the suite started), or the
    name a user's server serves."""

    id: str | None = None
    variant: str | None = None
    path: str | None = None
    sha256: str | None = None
    size_bytes: int | None = None
    quantization: str | None = None
    check: str | None = None
    served_model: str | None = None

    NULLABLE: ClassVar[tuple[str, ...]] = ("sha256", "size_bytes", "quantization", "check")

    def to_dict(self) -> dict[str, Any]:
        """A file the suite started the server with names every field (null: unknown); a user's
        server only the name it serves."""
        out = super().to_dict()
        return out if self.path is not None else {k: v for k, v in out.items() if v is not None or k in self.extra}


@dataclass(frozen=True)
class WorkloadPrompts(Section):
    kind: str | None = None
    prompt_tokens: int | None = None
    corpus: str | None = None
    sent_as: str | None = None
    counted_by: str | None = None
    shared_prefix_tokens: int | None = None
    distinct: str | None = None

    NULLABLE: ClassVar[tuple[str, ...]] = ("prompt_tokens", "corpus")


@dataclass(frozen=True)
class Workload(Section):
    prompts: WorkloadPrompts | None = None
    gen_tokens: str | None = None  # "64" or "uniform 32..128"
    ignore_eos: bool | None = None
    seed: int | None = None
    endpoint: str | None = None

    NESTED: ClassVar[dict[str, type[Section]]] = {"prompts": WorkloadPrompts}


@dataclass(frozen=True)
class LoadSpec(Section):
    """A load point as asked (bench.serving.load.LoadPoint)."""

    mode: str | None = None  # concurrency | rate
    value: float | None = None
    requests: int | None = None
    duration_s: float | None = None
    warmup: int | None = None
    max_in_flight: int | None = None
    burstiness: float | None = None
    seed: int | None = None

    NULLABLE: ClassVar[tuple[str, ...]] = ("max_in_flight",)


@_all_nullable
@dataclass(frozen=True)
class PlacementInfo(Section):
    server_cpus: list[int] | None = None
    client_cpus: list[int] | None = None
    overlap: bool | None = None
    tier_threads: int | None = None
    server_threads: int | None = None
    notes: list[str] | None = None
    warning: str | None = None


@dataclass(frozen=True)
class Ceiling(_WithErrors, Whole):
    """The client's own ceiling against a trivial streaming server."""

    concurrency: int | None = None
    tokens_per_request: int | None = None
    seconds: float | None = None
    requests_per_s: float | None = None
    chunks_per_s: float | None = None
    errors: dict[str, ErrorCount] | None = None
    client_cpu_cores: float | None = None
    stub_cpu_cores: float | None = None
    client_cpus: list[int] | None = None
    stub_cpus: list[int] | None = None
    limited_by: str | None = None
    ttft_from_send_p50_s: float | None = None


@dataclass(frozen=True)
class ClientState(Section):
    """The load generator during a point."""

    cpu_cores_used: float | None = None
    cpu_seconds: float | None = None
    phase_wall_s: float | None = None
    kept_up: bool | None = None
    send_lag_tolerance_s: float | None = None
    scheduled_rate_rps: float | None = None
    achieved_send_rate_rps: float | None = None
    kept_up_note: str | None = None
    chunks_per_s: float | None = None
    ceiling_chunks_per_s: float | None = None
    ceiling_share: float | None = None

    NULLABLE: ClassVar[tuple[str, ...]] = ("cpu_cores_used", "cpu_seconds", "phase_wall_s", "kept_up",
                                           "send_lag_tolerance_s", "scheduled_rate_rps", "achieved_send_rate_rps",
                                           "kept_up_note")



@dataclass(frozen=True)
class SweepClient(Section):
    """The load generator as the sweep's row records it: its ceiling (null: not measured)."""

    ceiling: Ceiling | None = None

    NESTED: ClassVar[dict[str, type[Section]]] = {"ceiling": Ceiling}

    def to_dict(self) -> dict[str, Any]:
        return {"ceiling": self.ceiling.to_dict() if self.ceiling else None, **self.extra}


@dataclass(frozen=True)
class ServerState(Section):
    """The server over a point: its counters (/metrics deltas), memory (/proc) and GPU memory (NVML)."""

    counters: dict[str, Any] | None = None
    memory: dict[str, Any] | None = None
    gpu: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The counters always (null: the server has no /metrics); memory and GPU memory (null:
        unreadable) only for a server that was running after the point."""
        out: dict[str, Any] = {"counters": self.counters}
        if self.memory is not None:
            out.update(memory=self.memory, gpu=self.gpu)
        out.update(self.extra)
        return out


# the sections whose type depends on the record
SUMMARIES: dict[str, type[Section]] = {"point": PointSummary, "sweep": SweepSummary, "task": TaskSummary}
CLIENTS: dict[str, type[Section]] = {"point": ClientState, "sweep": SweepClient, "task": ClientState}
SECTIONS: dict[str, type[Section]] = {
    "target": ServingTarget, "workload": Workload, "load": LoadSpec, "placement": PlacementInfo,
    "server": ServerState, "model": ServingModel, "profile": ServingProfile, "environment": Environment}


# -- the row ------------------------------------------------------------------------------------
@dataclass
class ServingRow:
    """One serving record, as written by ``bench serve`` and as read back (with ``source``, the
    file:line it came from), with what the report, compare and verdict read of it."""

    run_id: str
    record: str
    status: str
    reason: str | None
    target: ServingTarget = field(default_factory=ServingTarget)
    workload: Workload = field(default_factory=Workload)
    load: LoadSpec = field(default_factory=LoadSpec)
    placement: PlacementInfo = field(default_factory=PlacementInfo)
    client: ClientState | SweepClient = field(default_factory=ClientState)  # CLIENTS[record]
    summary: Section = field(default_factory=PointSummary)  # SUMMARIES[record]
    server: ServerState | None = None  # a point that ran
    model: ServingModel = field(default_factory=ServingModel)
    profile: ServingProfile = field(default_factory=ServingProfile)
    requests: list[dict[str, Any]] = field(default_factory=list)
    warmup_requests: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    environment: Environment = field(default_factory=Environment)  # as a bench run row's
    definitions: str = ""
    created_at: str = field(default_factory=now_iso)
    kind: str = "serving"
    serving_schema_version: int = SERVING_SCHEMA_VERSION
    source: str = field(default="", compare=False)  # file:line when read; not written

    def __post_init__(self) -> None:
        if self.record not in RECORDS or self.status not in STATUSES:
            raise ValueError(f"bad serving row: record {self.record!r}, status {self.status!r}")

    # -- writing --------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        for f in fields(self):
            if f.name == "source":
                continue
            value = getattr(self, f.name)
            d[f.name] = value.to_dict() if isinstance(value, Section) else {} if f.name == "server" else value
        return d

    def to_json(self) -> str:
        return json.dumps(_finite(self.to_dict()), separators=(",", ":"), allow_nan=False, default=str)

    # -- reading --------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "") -> ServingRow:
        """The row, or BenchError naming what is wrong (a version this code does not know, an unknown
        record or status, a section that is not an object, a point without its load)."""
        version = d.get("serving_schema_version")
        reader = READERS.get(version) if isinstance(version, int) else None
        if reader is None:
            raise BenchError(f"serving schema version {version!r} is not supported (this is version "
                             f"{SERVING_SCHEMA_VERSION})")
        return reader(d, source)

    # the sections whose type depends on the record, as that type (an empty one on another record)
    @property
    def point_summary(self) -> PointSummary:
        return _as(self.summary, PointSummary)

    @property
    def point_client(self) -> ClientState:
        return _as(self.client, ClientState)

    @property
    def sweep_summary(self) -> SweepSummary:
        return _as(self.summary, SweepSummary)

    @property
    def sweep_client(self) -> SweepClient:
        return _as(self.client, SweepClient)

    @property
    def task_summary(self) -> TaskSummary:
        return _as(self.summary, TaskSummary)

    @property
    def model_id(self) -> str:
        """The catalog model (a server the suite started), else the name the server serves."""
        return str(self.model.id or self.model.served_model or self.target.model or "?")

    @property
    def variant_id(self) -> str:
        return str(self.model.variant or "-")

    @property
    def server_kind(self) -> str:
        return str(self.target.server_kind or "?")

    @property
    def profile_id(self) -> str:
        return str(self.profile.id or "auto")

    @property
    def host(self) -> str:
        return self.environment.host.hostname or "?"

    @property
    def tier_label(self) -> str:
        """As a bench run row's: a profile, or ``auto@HOST`` for a host measured as it is."""
        return f"auto@{self.host}" if self.profile_id == "auto" else self.profile_id

    @property
    def basis(self) -> str:
        """Where the point's speed comes from, as a bench run row's ``tier.basis``: ``measured`` when
        the server is the host as it is (``auto``), or another machine the user named the tier of
        (``--url`` to a non-loopback address with ``--profile``); else ``emulated on HOST``: a server
        on this host under the tier's threads runs at this host's speed, not the tier's."""
        if self.profile_id == "auto":
            return "measured"
        from urllib.parse import urlsplit

        server = urlsplit(str(self.target.base_url or "")).hostname or ""
        if not self.target.managed and server and not (server.startswith("127.") or server in LOOPBACK):
            return f"measured on the tier: the server at {server}"
        return f"emulated on {self.host}"

    @property
    def measured(self) -> bool:
        return self.basis.startswith("measured")

    @property
    def where_label(self) -> str:
        """Whose speed the point's numbers are: the tier's (measured on it), else this host's under
        the tier's threads (``vm under laptop-4c-8g's threads``); never the bare tier name for a
        host's speed."""
        return self.tier_label if self.measured else f"{self.host} under {self.tier_label}'s threads"

    @property
    def mode(self) -> str | None:
        return self.load.mode

    @property
    def load_value(self) -> float | None:
        return self.load.value

    @property
    def load_label(self) -> str:
        """``c=4`` (closed loop, 4 concurrent users) or ``2/s`` (Poisson arrivals at 2 requests/s)."""
        if self.load_value is None:
            return self.record
        return f"c={self.load_value:g}" if self.mode == "concurrency" else f"{self.load_value:g}/s"

    @property
    def usd_per_hour(self) -> float | None:
        return self.profile.usd_per_hour

    @property
    def workload_key(self) -> tuple[Any, ...]:
        """What must be equal for two points to be the same measurement: prompts and output length."""
        prompts = self.workload.prompts or WorkloadPrompts()
        return (prompts.kind, prompts.prompt_tokens, str(self.workload.gen_tokens), self.workload.endpoint,
                self.workload.ignore_eos)

    @property
    def workload_label(self) -> str:
        kind, p, n, _, _ = self.workload_key
        return f"{kind or '?'} p={p if p is not None else '?'} n={n}"

    def key(self) -> tuple[Any, ...]:
        """A load point's identity across runs: model, variant, server, tier, workload, load."""
        return (self.model_id, self.variant_id, self.server_kind, self.tier_label, self.workload_key, self.mode,
                self.load_value)

    def identity(self) -> tuple[Any, ...]:
        """One record, however many files hold it (a merged file beside its parts)."""
        return (self.run_id, self.record, self.created_at, self.mode, self.load_value)

    def label(self) -> str:
        return (f"{self.model_id}:{self.variant_id} {self.server_kind} {self.where_label} {self.workload_label} "
                f"{self.load_label}")

    def traces(self) -> list[Any]:
        """The counted requests as ``RequestTrace`` (bench/serving/metrics.py), ready for its functions."""
        known = set(RequestTrace.__dataclass_fields__)
        return [RequestTrace(**{k: v for k, v in q.items() if k in known}) for q in self.requests
                if isinstance(q, dict) and {"index", "scheduled"} <= set(q)]


def _as(section: Section, cls: type[S]) -> S:
    return section if isinstance(section, cls) else cls()


def _finite(x: Any) -> Any:
    """NaN and infinities become null (JSON has neither), so that no row is lost to one."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


def _read_v1(d: dict[str, Any], source: str) -> ServingRow:
    """Version 1 (the only one so far): the sections above, as written since bench serve began."""
    record, status = d.get("record"), d.get("status")
    if record not in RECORDS or status not in STATUSES:
        raise BenchError(f"bad serving row: record {record!r}, status {status!r}")
    for key in (*SECTIONS, "summary", "client"):
        if not isinstance(d.get(key) or {}, dict):
            raise BenchError(f"bad serving row: {key} is not an object")
    for key in ("requests", "warmup_requests", "warnings"):
        if not isinstance(d.get(key) or [], list):
            raise BenchError(f"bad serving row: {key} is not a list")
    load = d.get("load") or {}
    if record == "point" and (load.get("mode") not in ("concurrency", "rate")
                              or not isinstance(load.get("value"), (int, float))):
        raise BenchError(f"bad serving row: a point without a load mode and value ({d.get('load')!r})")
    sections: dict[str, Any] = {k: t.from_dict(d.get(k)) for k, t in SECTIONS.items()}
    if not d.get("server"):
        sections["server"] = None
    return ServingRow(run_id=str(d.get("run_id", "")), record=record, status=status, reason=d.get("reason"),
                      summary=SUMMARIES[record].from_dict(d.get("summary")),
                      client=CLIENTS[record].from_dict(d.get("client")), requests=list(d.get("requests") or []),
                      warmup_requests=list(d.get("warmup_requests") or []), warnings=list(d.get("warnings") or []),
                      definitions=str(d.get("definitions") or ""),
                      created_at=str(d.get("created_at", "")), serving_schema_version=1, source=source,
                      **sections)  # type: ignore[arg-type]


READERS: dict[int, Callable[[dict[str, Any], str], ServingRow]] = {1: _read_v1}
