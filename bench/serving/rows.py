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
