"""The serving row: one JSON line per load point (and one per sweep summary, task comparison),
``kind: "serving"``, versioned on its own (``serving_schema_version``) until it joins the common
results schema. Appended with the same atomic, locked, fsynced write as ``bench run``'s rows.

Fields (every time in seconds, every rate per second; see docs/METRICS.md, "Serving"):

- ``kind`` = "serving", ``serving_schema_version`` = 1, ``record``: ``point`` (one load point),
  ``sweep`` (the sweep's summary), ``task`` (task accuracy at concurrency 1 and N);
- ``run_id``, ``created_at`` (ISO 8601 UTC), ``status`` (``ok``: every counted request completed;
  ``partial``: some failed, the metrics are over those that completed; ``failed``: none completed or
  the point could not run) and ``reason``;
- ``target``: base URL, model name, API (completions/chat), server kind (``llama-server`` or
  ``openai-compatible``), ``managed`` (started by the suite, or a server the user runs: then the
  suite only measured it as a client), and for a managed server its command, build, log file,
  threads, context per slot, slots and ready time;
- ``model``: id, variant, path, sha256, size (managed server); ``profile``: tier id, $/hour, basis;
- ``workload``: prompts (kind, length, how counted and sent), output tokens (fixed or drawn),
  ``ignore_eos``, seed, endpoint;
- ``load``: the point (mode concurrency|rate, value, request and time bounds, warm-up, cap);
- ``placement``: server and client CPUs, whether they overlap, and a warning when they do;
- ``client``: its CPU use during the point (cores), its measured ceiling against a trivial
  streaming server, this point's share of it, whether it kept to the schedule (send lag);
- ``summary``: bench/serving/metrics.py ``summarize_point`` (throughputs, TTFT/TPOT/ITL/e2e,
  queue time, send lag, errors by kind, goodput, prompt-count check, cache hits);
- ``server``: peak RSS over the point (VmHWM, reset at the point's start where allowed), VRAM
  (NVML) where readable, and the server's own counters over the point (/metrics deltas);
- ``requests`` (counted) and ``warmup_requests``: raw traces (bench/serving/metrics.py
  ``RequestTrace``: scheduled, sent, chunk arrival stamps, tokens per chunk, usage, status);
- ``warnings``, ``environment`` (host, versions, commit), ``definitions``.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import BenchError

SERVING_SCHEMA_VERSION = 1
RECORDS = ("point", "sweep", "task")
STATUSES = ("ok", "partial", "failed")


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


@dataclass
class ServingRow:
    run_id: str
    record: str
    status: str
    reason: str | None
    target: dict[str, Any]
    workload: dict[str, Any] = field(default_factory=dict)
    load: dict[str, Any] = field(default_factory=dict)
    placement: dict[str, Any] = field(default_factory=dict)
    client: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    server: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    profile: dict[str, Any] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)
    warmup_requests: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    environment: dict[str, Any] = field(default_factory=dict)
    definitions: str = ""
    created_at: str = field(default_factory=now_iso)
    kind: str = "serving"
    serving_schema_version: int = SERVING_SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.record not in RECORDS or self.status not in STATUSES:
            raise ValueError(f"bad serving row: record {self.record!r}, status {self.status!r}")

    def to_json(self) -> str:
        return json.dumps(_finite(asdict(self)), separators=(",", ":"), allow_nan=False, default=str)


def _finite(x: Any) -> Any:
    """NaN and infinities become null (JSON has neither), so that no row is lost to one."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


def append_serving_row(path: Path, row: ServingRow) -> None:
    """One whole line under an exclusive lock, then fsync: ``bench.results.files.append_row``,
    which needs nothing of a row but ``to_json()``."""
    from bench.results.files import append_row

    append_row(path, row)  # type: ignore[arg-type]


def read_serving_rows(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Serving rows of a file (as dicts), and one warning per line skipped (damaged, another kind,
    or a serving schema version this code does not know)."""
    rows, warnings = [], []
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        raise BenchError(f"{path}: results file not found") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
        except ValueError as exc:
            warnings.append(f"{path}:{n}: skipped unreadable line: {exc}")
            continue
        if not isinstance(d, dict) or d.get("kind") != "serving":
            warnings.append(f"{path}:{n}: skipped: not a serving row")
        elif d.get("serving_schema_version") != SERVING_SCHEMA_VERSION:
            warnings.append(f"{path}:{n}: skipped: serving schema version {d.get('serving_schema_version')!r} "
                            f"is not supported (this is version {SERVING_SCHEMA_VERSION})")
        else:
            rows.append(d)
    return rows, warnings


LOOPBACK = ("localhost", "::1")


@dataclass(frozen=True)
class ServingRecord:
    """A serving row as read back (``data``, the JSON line as written) and where it came from
    (``source``, file:line), with what the report, compare and verdict read of it."""

    data: dict[str, Any]
    source: str = ""

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "") -> ServingRecord:
        """The record, or BenchError naming what is wrong (a version this code does not know, an
        unknown record or status, a point without its load or summary)."""
        version = d.get("serving_schema_version")
        if version != SERVING_SCHEMA_VERSION:
            raise BenchError(f"serving schema version {version!r} is not supported (this is version "
                             f"{SERVING_SCHEMA_VERSION})")
        if d.get("record") not in RECORDS or d.get("status") not in STATUSES:
            raise BenchError(f"bad serving row: record {d.get('record')!r}, status {d.get('status')!r}")
        for key in ("load", "summary", "model", "profile", "target", "environment"):
            if not isinstance(d.get(key, {}), dict):
                raise BenchError(f"bad serving row: {key} is not an object")
        if not isinstance(d.get("requests", []), list):
            raise BenchError("bad serving row: requests is not a list")
        if d["record"] == "point" and (d.get("load", {}).get("mode") not in ("concurrency", "rate")
                                       or not isinstance(d.get("load", {}).get("value"), (int, float))):
            raise BenchError(f"bad serving row: a point without a load mode and value ({d.get('load')!r})")
        return cls(d, source)

    def _section(self, key: str) -> dict[str, Any]:
        return self.data.get(key) or {}

    @property
    def record(self) -> str:
        return self.data["record"]

    @property
    def status(self) -> str:
        return self.data["status"]

    @property
    def reason(self) -> str | None:
        return self.data.get("reason")

    @property
    def run_id(self) -> str:
        return str(self.data.get("run_id", ""))

    @property
    def created_at(self) -> str:
        return str(self.data.get("created_at", ""))

    @property
    def model_id(self) -> str:
        """The catalog model (a server the suite started), else the name the server serves."""
        m = self._section("model")
        return str(m.get("id") or m.get("served_model") or self._section("target").get("model") or "?")

    @property
    def variant_id(self) -> str:
        return str(self._section("model").get("variant") or "-")

    @property
    def server_kind(self) -> str:
        return str(self._section("target").get("server_kind") or "?")

    @property
    def profile_id(self) -> str:
        return str(self._section("profile").get("id") or "auto")

    @property
    def host(self) -> str:
        return str((self._section("environment").get("host") or {}).get("hostname") or "?")

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

        target = self._section("target")
        server = urlsplit(str(target.get("base_url") or "")).hostname or ""
        if not target.get("managed") and server and not (server.startswith("127.") or server in LOOPBACK):
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
        return self._section("load").get("mode")

    @property
    def load_value(self) -> float | None:
        return self._section("load").get("value")

    @property
    def load_label(self) -> str:
        """``c=4`` (closed loop, 4 concurrent users) or ``2/s`` (Poisson arrivals at 2 requests/s)."""
        if self.load_value is None:
            return self.record
        return f"c={self.load_value:g}" if self.mode == "concurrency" else f"{self.load_value:g}/s"

    @property
    def summary(self) -> dict[str, Any]:
        return self._section("summary")

    @property
    def usd_per_hour(self) -> float | None:
        return self._section("profile").get("usd_per_hour")

    @property
    def workload(self) -> tuple[Any, ...]:
        """What must be equal for two points to be the same measurement: prompts and output length."""
        w = self._section("workload")
        prompts = w.get("prompts") or {}
        return (prompts.get("kind"), prompts.get("prompt_tokens"), str(w.get("gen_tokens")), w.get("endpoint"),
                w.get("ignore_eos"))

    @property
    def workload_label(self) -> str:
        kind, p, n, _, _ = self.workload
        return f"{kind or '?'} p={p if p is not None else '?'} n={n}"

    def key(self) -> tuple[Any, ...]:
        """A load point's identity across runs: model, variant, server, tier, workload, load."""
        return (self.model_id, self.variant_id, self.server_kind, self.tier_label, self.workload, self.mode,
                self.load_value)

    def identity(self) -> tuple[Any, ...]:
        """One record, however many files hold it (a merged file beside its parts)."""
        return (self.run_id, self.record, self.created_at, self.mode, self.load_value)

    def label(self) -> str:
        return (f"{self.model_id}:{self.variant_id} {self.server_kind} {self.where_label} {self.workload_label} "
                f"{self.load_label}")

    def traces(self) -> list[Any]:
        """The counted requests as ``RequestTrace`` (bench/serving/metrics.py), ready for its functions."""
        from bench.serving.metrics import RequestTrace

        known = set(RequestTrace.__dataclass_fields__)
        return [RequestTrace(**{k: v for k, v in q.items() if k in known}) for q in self.data.get("requests") or []
                if isinstance(q, dict) and {"index", "scheduled"} <= set(q)]
