"""Serving points (``bench serve`` rows, ``record: point``) for the report, compare and verdict: one
flat record per point, its columns defined once (CSV, SQLite, Markdown, HTML), the newest point of
each load, and the ``bench run`` row of the same model, variant and tier beside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bench.analysis.flat import Column
from bench.results.schema import Row
from bench.results.serving import ServingRow
from bench.serving.metrics import usd_per_million_output


def stat(p: ServingRow, metric: str, q: str = "p50") -> float | None:
    """One statistic (p50, p90, p99, mean...) of a distribution in the point's summary."""
    return p.point_summary.stat(metric, q)


def goodput(p: ServingRow, key: str) -> float | None:
    g = p.point_summary.goodput
    return getattr(g, key) if g is not None else None


def usd_per_1m(p: ServingRow) -> float | None:
    """$ per 1M output tokens at this load = the tier's $/hour / (output tok/s x 3600) x 1e6, only where
    the point's speed is the tier's (``ServingRow.basis``): a server on this host under a tier's
    threads runs at this host's speed, and the tier's price over it would be no one's cost."""
    return usd_per_million_output(p.usd_per_hour, p.point_summary.output_tps) if p.measured else None


def per_user_decode_tps(p: ServingRow) -> float | None:
    """Decode rate one user sees at this load = 1 / TPOT p50 (docs/METRICS.md, "Serving")."""
    t = stat(p, "tpot_s")
    return 1 / t if t else None


SERVING_COLUMNS: tuple[Column[ServingRow], ...] = (
    Column("run_id", "text", lambda p: p.run_id),
    Column("created_at", "text", lambda p: p.created_at),
    Column("host", "text", lambda p: p.host, "machine that ran the client (and a server it started)"),
    Column("basis", "text", lambda p: p.basis,
                  "measured (the host as it is, or a remote server of the tier) or emulated on HOST (host speed)"),
    Column("status", "text", lambda p: p.status),
    Column("reason", "text", lambda p: p.reason),
    Column("model", "text", lambda p: p.model_id),
    Column("variant", "text", lambda p: p.variant_id),
    Column("server", "text", lambda p: p.server_kind, "llama-server (the suite's) or openai-compatible"),
    Column("tier", "text", lambda p: p.tier_label),
    Column("measured_on", "text", lambda p: p.where_label,
           "whose speed the point's numbers are: the tier's own, or HOST under the tier's threads (the host's)"),
    Column("workload", "text", lambda p: p.workload_label, "prompt kind and length, output tokens"),
    Column("mode", "text", lambda p: p.mode, "concurrency (closed loop) or rate (open-loop arrivals)"),
    Column("load", "real", lambda p: p.load_value, "concurrent users, or requests/s offered"),
    Column("requests", "integer", lambda p: p.point_summary.requests, "counted requests"),
    Column("ok", "integer", lambda p: p.point_summary.ok, "completed requests"),
    Column("window_s", "real", lambda p: p.point_summary.window_s),
    Column("request_throughput_rps", "real", lambda p: p.point_summary.request_throughput_rps),
    Column("output_tps", "real", lambda p: p.point_summary.output_tps, "output tokens/s over the window"),
    Column("total_tps", "real", lambda p: p.point_summary.total_tps),
    Column("ttft_s_p50", "real", lambda p: stat(p, "ttft_s")),
    Column("ttft_s_p90", "real", lambda p: stat(p, "ttft_s", "p90")),
    Column("ttft_s_p99", "real", lambda p: stat(p, "ttft_s", "p99")),
    Column("tpot_s_p50", "real", lambda p: stat(p, "tpot_s")),
    Column("itl_s_p50", "real", lambda p: stat(p, "itl_s")),
    Column("itl_s_p99", "real", lambda p: stat(p, "itl_s", "p99")),
    Column("e2e_s_p50", "real", lambda p: stat(p, "e2e_s")),
    Column("e2e_s_p99", "real", lambda p: stat(p, "e2e_s", "p99")),
    Column("per_user_decode_tps", "real", per_user_decode_tps, "1 / TPOT p50"),
    Column("goodput_rps", "real", lambda p: goodput(p, "goodput_rps"), "requests meeting both SLOs / window"),
    Column("goodput_share", "real", lambda p: goodput(p, "share")),
    Column("kept_up", "integer", lambda p: p.point_client.kept_up,
                  "the client kept to the schedule"),
    Column("usd_per_hour", "real", lambda p: p.usd_per_hour),
    Column("usd_per_1m_output_tokens", "real", usd_per_1m,
                  "$/hour / (output tok/s x 3600) x 1e6 at this load; blank where the speed is not the tier's"),
    Column("source", "text", lambda p: p.source, "file:line it was read from"),
)


def flatten_point(p: ServingRow) -> dict[str, Any]:
    out = {}
    for c in SERVING_COLUMNS:
        v = c.get(p)
        out[c.name] = int(v) if c.kind == "integer" and isinstance(v, bool) else v
    return out


def points(records: Sequence[ServingRow]) -> list[ServingRow]:
    """The load points, ordered by model, variant, tier, workload, mode and load."""
    pts = [r for r in records if r.record == "point"]
    return sorted(pts, key=lambda p: (p.model_id, p.variant_id, p.tier_label, p.server_kind, repr(p.workload_key),
                                      p.mode or "", p.load_value or 0, p.created_at))


def latest_points(records: Sequence[ServingRow]) -> list[ServingRow]:
    """The newest point of each load (``ServingRow.key``): a sweep run again replaces the old one."""
    out: dict[tuple, ServingRow] = {}
    for p in sorted(points(records), key=lambda p: p.created_at):
        out[p.key()] = p
    return points(list(out.values()))


def curve_label(p: ServingRow) -> str:
    """One curve: a model variant on a tier (by a server, a workload and a load mode)."""
    server = "" if p.server_kind == "llama-server" else f" ({p.server_kind})"
    return f"{p.model_id}:{p.variant_id}{server} on {p.where_label}, {p.workload_label}, {p.mode}"


def single_stream_match(p: ServingRow, rows: Sequence[Row]) -> Row | None:
    """The ``bench run`` row of the same model, variant and tier (ok), preferring llama.cpp (the
    engine llama-server runs), then the same prompt and output lengths, then the newest."""
    from bench.analysis.flat import latest_per_cell

    same = [r for r in latest_per_cell(list(rows)) if r.status == "ok" and r.config.model_id == p.model_id
            and r.config.variant_id == p.variant_id and r.tier_label == p.tier_label]
    if not same:
        return None
    _, prompt_tokens, gen, _, _ = p.workload_key
    return max(same, key=lambda r: (r.config.backend == "llama.cpp",
                                    (r.config.prompt_tokens, str(r.config.gen_tokens)) == (prompt_tokens, gen),
                                    r.created_at))
