"""One flat record per result row, defined once, for every tabular output (Markdown, CSV, SQLite,
HTML): the column name, its unit, and how to read it from a Row. Raw samples stay in the JSONL
rows (and in SQLite's ``samples`` table); this is the summary beside them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.results.schema import Row


@dataclass(frozen=True)
class Column:
    name: str
    kind: str  # "text" | "real" | "integer"
    get: Callable[[Row], Any]
    doc: str = ""


def _dig(d: dict[str, Any] | None, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def tier_label(r: Row) -> str:
    """The tier a row speaks for: a profile, or `auto@HOST` for a host measured as it is."""
    host = _dig(r.environment, "host", "hostname") or "?"
    return f"auto@{host}" if r.config.profile_id == "auto" else r.config.profile_id


def latest_per_cell(rows: list[Row] | tuple[Row, ...]) -> list[Row]:
    """One row per cell and tier (the newest): re-runs and merged files do not count twice."""
    from bench.analysis.compare import match_key

    out: dict[tuple, Row] = {}
    for r in sorted(rows, key=lambda r: r.created_at):
        out[(tier_label(r), match_key(r.config))] = r
    return list(out.values())


def reference_variants(rows: list[Row] | tuple[Row, ...]) -> set[tuple[str, str]]:
    """(model, variant) pairs that some row's quality was measured against."""
    return {(r.config.model_id, v) for r in rows if (v := _dig(r.quality, "reference", "variant_id"))}


def reference_of(r: Row, references: set[tuple[str, str]]) -> str | None:
    """The variant a row's quality is measured against; a reference variant is its own."""
    ref = _dig(r.quality, "reference", "variant_id")
    if ref:
        return ref
    return r.config.variant_id if (r.config.model_id, r.config.variant_id) in references else None


def hourly_usd(r: Row) -> float | None:
    from bench.hardware.profiles import Price

    price = (r.profile or {}).get("price")
    if not price:
        return None
    try:
        return Price(**price).hourly_usd()
    except (TypeError, ValueError):
        return None


def ram_budget_bytes(r: Row) -> int | None:
    return r.tier.get("ram_budget_bytes")


COLUMNS: tuple[Column, ...] = (
    Column("run_id", "text", lambda r: r.run_id),
    Column("created_at", "text", lambda r: r.created_at),
    Column("host", "text", lambda r: _dig(r.environment, "host", "hostname"), "machine that ran the cell"),
    Column("cell_key", "text", lambda r: r.cell_key),
    Column("status", "text", lambda r: r.status),
    Column("reason", "text", lambda r: r.reason),
    Column("model", "text", lambda r: r.config.model_id),
    Column("country", "text", lambda r: _dig(r.model, "facts", "country"), "model developer's country of origin"),
    Column("variant", "text", lambda r: r.config.variant_id),
    Column("quantization", "text", lambda r: r.model.get("quantization")),
    Column("backend", "text", lambda r: r.config.backend),
    Column("profile", "text", lambda r: r.config.profile_id),
    Column("tier", "text", tier_label),
    Column("device", "text", lambda r: r.config.device),
    Column("threads", "integer", lambda r: r.config.threads),
    Column("prompt_tokens", "integer", lambda r: r.config.prompt_tokens),
    Column("gen_tokens", "integer", lambda r: r.config.gen_tokens),
    Column("repetitions", "integer", lambda r: r.config.repetitions),
    Column("model_size_bytes", "integer", lambda r: r.model.get("size_bytes")),
    Column("load_time_s", "real", lambda r: r.load_time_s),
    Column("ttft_s_mean", "real", lambda r: _dig(r.summary, "ttft_s", "mean")),
    Column("prefill_tps_mean", "real", lambda r: _dig(r.summary, "prefill_tps", "mean")),
    Column("prefill_tps_std", "real", lambda r: _dig(r.summary, "prefill_tps", "std")),
    Column("decode_tps_mean", "real", lambda r: _dig(r.summary, "decode_tps", "mean")),
    Column("decode_tps_std", "real", lambda r: _dig(r.summary, "decode_tps", "std")),
    Column("tpot_s_mean", "real", lambda r: _dig(r.summary, "tpot_s", "mean")),
    Column("itl_s_p50", "real", lambda r: _dig(r.summary, "itl_s", "p50")),
    Column("itl_s_p90", "real", lambda r: _dig(r.summary, "itl_s", "p90")),
    Column("itl_s_p99", "real", lambda r: _dig(r.summary, "itl_s", "p99")),
    Column("e2e_s_mean", "real", lambda r: _dig(r.summary, "e2e_s", "mean")),
    Column("peak_rss_bytes", "integer", lambda r: r.memory.get("peak_rss_bytes")),
    Column("peak_vram_reserved_bytes", "integer", lambda r: r.memory.get("peak_vram_reserved_bytes")),
    Column("ram_budget_bytes", "integer", ram_budget_bytes, "the tier's RAM minus its reserve"),
    Column("fits", "integer", lambda r: r.tier.get("fits")),
    Column("perplexity", "real", lambda r: r.quality.get("perplexity") if r.quality.get("status") == "ok" else None),
    Column("kld_mean", "real", lambda r: _dig(r.quality, "kld", "mean") if r.quality.get("status") == "ok" else None),
    Column("kld_p99", "real", lambda r: _dig(r.quality, "kld", "p99") if r.quality.get("status") == "ok" else None),
    Column("same_top_token", "real", lambda r: r.quality.get("same_top_token") if r.quality.get("status") == "ok" else None),
    Column("quality_reference", "text", lambda r: _dig(r.quality, "reference", "variant_id")),
    Column("task", "text", lambda r: r.task.get("name")),
    Column("task_accuracy", "real", lambda r: r.task.get("accuracy") if r.task.get("status") == "ok" else None),
    Column("task_accuracy_se", "real", lambda r: r.task.get("accuracy_se") if r.task.get("status") == "ok" else None),
    Column("usd_per_hour", "real", hourly_usd),
    Column("usd_per_1m_output_tokens", "real", lambda r: _dig(r.efficiency, "cost", "usd_per_1m_output_tokens")),
    Column("energy_j_per_token", "real", lambda r: _dig(r.summary, "energy_j_per_token", "mean")),
    Column("roofline_share", "real", lambda r: _dig(r.efficiency, "roofline", "share")),
    Column("projected_decode_tps", "real", lambda r: _dig(r.efficiency, "projection", "decode_tps"),
           "PROJECTION, not a measurement"),
    Column("bench_version", "text", lambda r: r.environment.get("bench_version")),
)


def flatten(row: Row) -> dict[str, Any]:
    out = {}
    for c in COLUMNS:
        v = c.get(row)
        out[c.name] = int(v) if c.kind == "integer" and isinstance(v, bool) else v
    return out
