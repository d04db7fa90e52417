"""One flat record per result row, defined once, for every tabular output (Markdown, CSV, SQLite,
HTML): the column name, its unit, and how to read it from a Row. Raw samples stay in the JSONL
rows (and in SQLite's ``samples`` table); this is the summary beside them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from bench.results.kinds import Basis, SpeedBasis
from bench.results.schema import Row

R = TypeVar("R")


@dataclass(frozen=True)
class Column(Generic[R]):
    """One flat column of a record (a Row here, a serving point in bench.analysis.serving)."""

    name: str
    kind: str  # "text" | "real" | "integer"
    get: Callable[[R], Any]
    doc: str = ""


def tier_label(r: Row) -> str:
    """The tier a row speaks for: a profile, or `auto@HOST` for a host measured as it is."""
    return r.tier_label


def where_label(r: Row) -> str:
    """Whose speed a row's measured numbers are: the tier's (``laptop-4c-8g``, ``auto@HOST``) where it
    ran on the tier itself, else the host's under the tier's caps (``vm under laptop-4c-8g's caps``);
    every table labels a row's own speeds with this, never with the bare tier name."""
    kind = r.basis
    if kind is Basis.MEASURED:
        return r.tier_label
    if kind is Basis.EMULATED:
        return f"{r.host} under {r.tier_label}'s caps"
    return f"{r.tier_label} (not measured)"


def basis(r: Row) -> str:
    """Where a row's numbers come from: ``measured`` on the tier itself (a fleet node that is the
    tier, or the host as it is), ``emulated on HOST`` (the tier's caps on another machine), or
    ``not measured`` (a fleet node lost, a file it could not get). Every stored row has one (rows
    from before the field are given theirs by the version-1 reader, bench/results/versions.py); a
    row built in code without one reads by its profile (Row.basis_text)."""
    return r.basis_text


def basis_kind(r: Row) -> str:
    """``measured``, ``emulated`` or ``not measured``: Row.basis as a table shows it."""
    return r.basis.value


def speed_basis(r: Row) -> str:
    """The basis of the tier's speed as shown: ``measured`` (on the tier itself), ``projected from ...``
    (the performance model's projection, ``efficiency.projection``) or ``caps only`` (emulated, nothing
    to project from). Its kind, for decisions: Row.speed_kind."""
    return r.tier.speed_basis or str(r.speed_kind)


def projected(r: Row, metric: str, end: str = "value") -> float | None:
    """One end (``value``, ``low``, ``high``) of a projected metric (decode_tps, prefill_tps, ttft_s,
    tpot_s) of an emulated row; None where there is none. A PROJECTION, never a measurement. An
    interval with no validation band is unbounded: its ends are unknown (None), never 0 or infinity."""
    p = (r.efficiency.projection or {}).get(metric)
    v = p.get(end) if p else None
    if end != "value" and interval_missing(r, metric):
        return None
    return v if v is None or v != float("inf") else None


def interval_missing(r: Row, metric: str) -> str | None:
    """Why a projected metric has no interval (no validation band for the tier's device class), or None."""
    p = (r.efficiency.projection or {}).get(metric)
    why = str(((p.get("inputs") or {}) if p else {}).get("interval") or "")
    return f"its interval is unknown ({why})" if why.startswith("none") else None


def tier_decode_tps(r: Row) -> tuple[float | None, str]:
    """(decode tok/s on the tier, its basis): measured where the row ran on the tier, else projected."""
    b = speed_basis(r)
    if r.speed_kind is SpeedBasis.MEASURED:
        return _mean(r, "decode_tps"), b
    return projected(r, "decode_tps"), b


def tier_metric(r: Row, metric: str) -> float | None:
    """A speed metric on the tier: measured on it, else its PROJECTION, else None (caps only)."""
    return _mean(r, metric) if r.speed_kind is SpeedBasis.MEASURED else projected(r, metric)


BASIS_RANK = {Basis.NOT_MEASURED: 0, Basis.EMULATED: 1, Basis.MEASURED: 2}


def latest_per_cell(rows: list[Row] | tuple[Row, ...]) -> list[Row]:
    """One row per cell and tier: re-runs and merged files do not count twice. A row measured on
    the tier itself wins over an emulated one of the same cell, whatever their dates; among rows of
    the same basis, the newest."""
    out: dict[tuple, Row] = {}
    for r in sorted(rows, key=lambda r: (BASIS_RANK[r.basis], r.created_at)):
        out[(r.tier_label, r.config.identity())] = r
    return list(out.values())


def reference_variants(rows: list[Row] | tuple[Row, ...]) -> set[tuple[str, str]]:
    """(model, variant) pairs that some row's quality was measured against."""
    return {(r.config.model_id, r.quality.reference.variant_id) for r in rows
            if r.quality.reference is not None and r.quality.reference.variant_id}


def reference_of(r: Row, references: set[tuple[str, str]]) -> str | None:
    """The variant a row's quality is measured against; a reference variant is its own."""
    if r.quality.reference is not None and r.quality.reference.variant_id:
        return r.quality.reference.variant_id
    return r.config.variant_id if (r.config.model_id, r.config.variant_id) in references else None


def _mean(r: Row, metric: str) -> float | None:
    return r.summary.mean(metric)


def _std(r: Row, metric: str) -> float | None:
    s = getattr(r.summary, metric)
    return s.std if s is not None else None


def _itl(r: Row, q: str) -> float | None:
    return getattr(r.summary.itl_s, q) if r.summary.itl_s is not None else None


def _kld(r: Row, q: str) -> float | None:
    return getattr(r.quality.kld, q) if r.quality.ok and r.quality.kld is not None else None


def _cost(r: Row) -> float | None:
    """$ per 1M output tokens on the tier: from its measured speed, or its projected one (see
    ``speed_basis``); none where the tier's speed is unknown (an emulated row's own speed is this host's)."""
    if r.speed_kind is SpeedBasis.CAPS_ONLY:
        return None
    return r.efficiency.cost.usd_per_1m_output_tokens if r.efficiency.cost else None


HOST_SPEED = ("measured on `host` (under the tier's caps if emulated: the host's speed, not the tier's; see "
              "measured_on and the tier_* and projected_* columns for the tier's)")
COLUMNS: tuple[Column, ...] = (
    Column("run_id", "text", lambda r: r.run_id),
    Column("created_at", "text", lambda r: r.created_at),
    Column("host", "text", lambda r: r.host, "machine that ran the cell"),
    Column("basis", "text", basis_kind, "measured on the tier itself, emulated on another machine, or not measured"),
    Column("basis_detail", "text", basis, "where the numbers come from, in words (tier.basis)"),
    Column("fleet_node", "text", lambda r: r.environment.fleet.node_id if r.environment.fleet else None,
           "the Ray node id of the fleet node that ran the cell"),
    Column("cell_key", "text", lambda r: r.cell_key),
    Column("status", "text", lambda r: r.status),
    Column("reason", "text", lambda r: r.reason),
    Column("measured_on", "text", where_label,
           "whose speed the measured columns are: the tier's own, or HOST under the tier's caps (the host's speed)"),
    Column("model", "text", lambda r: r.config.model_id),
    Column("country", "text", lambda r: r.model.facts.country if r.model.facts else None,
           "model developer's country of origin"),
    Column("variant", "text", lambda r: r.config.variant_id),
    Column("quantization", "text", lambda r: r.model.quantization),
    Column("backend", "text", lambda r: r.config.backend),
    Column("profile", "text", lambda r: r.config.profile_id),
    Column("tier", "text", tier_label),
    Column("device", "text", lambda r: r.config.device),
    Column("threads", "integer", lambda r: r.config.threads),
    Column("prompt_tokens", "integer", lambda r: r.config.prompt_tokens),
    Column("gen_tokens", "integer", lambda r: r.config.gen_tokens),
    Column("depth", "integer", lambda r: r.config.depth, "tokens in the KV cache before the prompt (--depth)"),
    Column("repetitions", "integer", lambda r: r.config.repetitions),
    Column("model_size_bytes", "integer", lambda r: r.model.size_bytes),
    Column("load_time_s", "real", lambda r: r.load_time_s, HOST_SPEED),
    Column("ttft_s_mean", "real", lambda r: _mean(r, "ttft_s"), HOST_SPEED),
    Column("prefill_tps_mean", "real", lambda r: _mean(r, "prefill_tps"), HOST_SPEED),
    Column("prefill_tps_std", "real", lambda r: _std(r, "prefill_tps"), HOST_SPEED),
    Column("decode_tps_mean", "real", lambda r: _mean(r, "decode_tps"), HOST_SPEED),
    Column("decode_tps_std", "real", lambda r: _std(r, "decode_tps"), HOST_SPEED),
    Column("prefill_text_bps_mean", "real", lambda r: _mean(r, "prefill_text_bps"),
           "UTF-8 bytes of prompt per second of prefill: comparable across vocabularies; " + HOST_SPEED),
    Column("decode_text_bps_mean", "real", lambda r: _mean(r, "decode_text_bps"),
           "UTF-8 bytes of generated text per second of decode: comparable across vocabularies; " + HOST_SPEED),
    Column("tpot_s_mean", "real", lambda r: _mean(r, "tpot_s"), HOST_SPEED),
    Column("itl_s_p50", "real", lambda r: _itl(r, "p50"), HOST_SPEED),
    Column("itl_s_p90", "real", lambda r: _itl(r, "p90"), HOST_SPEED),
    Column("itl_s_p99", "real", lambda r: _itl(r, "p99"), HOST_SPEED),
    Column("e2e_s_mean", "real", lambda r: _mean(r, "e2e_s"), HOST_SPEED),
    Column("peak_rss_bytes", "integer", lambda r: r.memory.peak_rss_bytes),
    Column("peak_vram_reserved_bytes", "integer", lambda r: r.memory.peak_vram_reserved_bytes),
    Column("ram_budget_bytes", "integer", lambda r: r.tier.ram_budget_bytes, "the tier's RAM minus its reserve"),
    Column("fits", "integer", lambda r: r.tier.fits),
    Column("perplexity", "real", lambda r: r.quality.perplexity if r.quality.ok else None),
    Column("kld_mean", "real", lambda r: _kld(r, "mean")),
    Column("kld_p99", "real", lambda r: _kld(r, "p99")),
    Column("same_top_token", "real", lambda r: r.quality.same_top_token if r.quality.ok else None),
    Column("quality_reference", "text", lambda r: r.quality.reference.variant_id if r.quality.reference else None),
    Column("task", "text", lambda r: r.task.name),
    Column("task_accuracy", "real", lambda r: r.task.accuracy if r.task.ok else None),
    Column("task_accuracy_se", "real", lambda r: r.task.accuracy_se if r.task.ok else None),
    Column("usd_per_hour", "real", lambda r: r.profile.hourly_usd()),
    Column("usd_per_1m_output_tokens", "real", _cost,
           "$ at the tier's price per 1M output tokens at the tier's speed: measured on it, or PROJECTED "
           "(speed_basis); none where the tier's speed is not known"),
    Column("energy_j_per_token", "real", lambda r: _mean(r, "energy_j_per_token"), HOST_SPEED),
    Column("roofline_share", "real", lambda r: r.efficiency.roofline.share if r.efficiency.roofline else None),
    Column("tier_decode_tps", "real", lambda r: tier_decode_tps(r)[0],
           "decode tok/s on the tier: measured on it, or PROJECTED (speed_basis); none where not known"),
    Column("tier_ttft_s", "real", lambda r: tier_metric(r, "ttft_s"),
           "TTFT on the tier: measured on it, or PROJECTED (speed_basis); none where not known"),
    Column("speed_basis", "text", speed_basis,
           "the tier's speed: measured on it, projected from the host (PROJECTION), or caps only (not known)"),
    Column("projected_decode_tps", "real", lambda r: projected(r, "decode_tps"), "PROJECTION, not a measurement"),
    Column("projected_decode_tps_low", "real", lambda r: projected(r, "decode_tps", "low"),
           "PROJECTION: the interval's pessimistic end (what the verdict uses)"),
    Column("projected_decode_tps_high", "real", lambda r: projected(r, "decode_tps", "high"), "PROJECTION"),
    Column("projected_prefill_tps", "real", lambda r: projected(r, "prefill_tps"), "PROJECTION"),
    Column("projected_ttft_s", "real", lambda r: projected(r, "ttft_s"), "PROJECTION"),
    Column("projected_ttft_s_high", "real", lambda r: projected(r, "ttft_s", "high"),
           "PROJECTION: the interval's pessimistic end (what the verdict uses)"),
    Column("bench_version", "text", lambda r: r.environment.bench_version),
)


def flatten(row: Row) -> dict[str, Any]:
    out = {}
    for c in COLUMNS:
        v = c.get(row)
        out[c.name] = int(v) if c.kind == "integer" and isinstance(v, bool) else v
    return out
