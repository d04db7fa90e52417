"""The sweep's summary row: a table of its points, the largest sustainable load per mode and its $
per 1M output tokens (only from the tier's own speed), the task comparison and, optionally, the
same workload in process (``bench run``) beside the server at concurrency 1.

The rule for the largest sustainable load: the largest load L such that every measured point at or
below L had at least ``goodput_share`` of its counted requests meet both SLOs (TTFT and TPOT bounds,
from the claims file unless given) with the client on schedule; its $ per 1M output tokens is the
tier's price per hour / (output tok/s at L x 3600) x 1e6.
"""

from __future__ import annotations

from collections.abc import Callable

from bench.request import ServeRequest
from bench.results.serving import (
    InProcess,
    ServerAtOne,
    ServingRow,
    Sustainable,
    SweepClient,
    SweepPoint,
    SweepSummary,
    TaskSummary,
)
from bench.serving import metrics as sm
from bench.serving.placement import Placement
from bench.serving.point import Sweep

Say = Callable[[str], None]


def in_process(req: ServeRequest, placement: Placement, say: Say) -> InProcess:
    """``bench run``'s cell for the same model, lengths and threads (a child process pinned to the
    server's cores), through the suite's one orchestration path; its row is appended to
    ``<output>.inprocess.jsonl``."""
    from bench.orchestrate import plan_request, run_plans
    from bench.request import RunRequest

    threads = placement.server_threads
    rr = RunRequest(models=[req.model] if req.model else [], profiles=[req.profile],
                    prompt_tokens=[req.prompt_tokens], gen_tokens=[req.gen.lo], threads=[threads], repetitions=5,
                    warmup=1, seed=req.seed)
    (plan,) = plan_request(rr, req.catalog_path, req.profiles_dir)
    say(f"in process (bench run): {plan.config.model_id}:{plan.config.variant_id}, {threads} thread(s), "
        f"p={req.prompt_tokens} n={req.gen.lo}, 5 repetitions")
    path = req.output.with_suffix(".inprocess.jsonl")
    (row,) = run_plans([plan], path).rows
    s = row.summary
    return InProcess(status=row.status, reason=row.reason, file=str(path), threads=threads,
                     cpus=plan.caps.cpus, ttft_s=s.mean("ttft_s"), tpot_s=s.mean("tpot_s"),
                     decode_tps=s.mean("decode_tps"), e2e_s=s.mean("e2e_s"), basis="mean of 5 repetitions, batch 1")


def point_holds(row: ServingRow, share: float) -> bool:
    """The point ran, met the goodput share, and the client kept to its schedule."""
    return row.status != "failed" and row.point_summary.holds(share) and bool(row.point_client.kept_up)


def server_at_one(rows: list[ServingRow]) -> ServerAtOne | None:
    """The server's p50s at concurrency 1, for the side-by-side with the in-process run."""
    row = next((r for r in rows if r.record == "point" and r.mode == "concurrency" and r.load_value == 1), None)
    if row is None:
        return None
    s = row.point_summary
    return ServerAtOne(ttft_p50_s=s.stat("ttft_s"), tpot_p50_s=s.stat("tpot_s"), e2e_p50_s=s.stat("e2e_s"),
                       output_tps=s.output_tps)


def _table_line(r: ServingRow, share: float, price: float | None) -> SweepPoint:
    s = r.point_summary
    g = s.goodput
    return SweepPoint(mode=r.mode, load=r.load_value, status=r.status, requests=s.requests, ok=s.ok,
                      request_throughput_rps=s.request_throughput_rps, output_tps=s.output_tps,
                      ttft_p50_s=s.stat("ttft_s"), ttft_p99_s=s.stat("ttft_s", "p99"), tpot_p50_s=s.stat("tpot_s"),
                      itl_p50_s=s.stat("itl_s"), e2e_p99_s=s.stat("e2e_s", "p99"),
                      goodput_share=g.share if g else None, goodput_rps=g.goodput_rps if g else None,
                      kept_up=r.point_client.kept_up, holds=point_holds(r, share),
                      prompt_cached_share=s.cache.cached_share if s.cache else None,
                      usd_per_1m_output_tokens=sm.usd_per_million_output(price, s.output_tps))


def _sustainable(table: list[SweepPoint], mode: str, price: float | None) -> Sustainable | None:
    rows = [t for t in table if t.mode == mode]
    if not rows:
        return None
    load = sm.max_sustainable([(t.load, bool(t.holds)) for t in rows if t.load is not None])
    at = next((t for t in rows if t.load == load), None)
    one = next((t for t in rows if t.load == 1), None) if mode == "concurrency" else None
    return Sustainable(max_sustainable_load=load, output_tps=at.output_tps if at else None,
                       usd_per_1m_output_tokens=sm.usd_per_million_output(price, at.output_tps if at else None),
                       usd_per_1m_output_tokens_at_concurrency_1=sm.usd_per_million_output(
                           price, one.output_tps if one else None))


def summary_row(sw: Sweep, points: list[ServingRow], task: TaskSummary | None = None,
                in_proc: InProcess | None = None) -> ServingRow:
    share = sw.req.goodput_share
    measured, where = (points[0].measured, points[0].where_label) if points else (True, "")
    # $ at the tier's price only from the tier's own speed: an emulated point's speed is this host's
    price = sw.common.profile.usd_per_hour if measured else None
    table = [_table_line(r, share, price) for r in points]
    best = {mode: b for mode in ("concurrency", "rate") if (b := _sustainable(table, mode, price)) is not None}
    rule = (f"the largest load L such that every measured point at or below L had at least {share:.0%} of its "
            f"counted requests meet {sw.slo.source}, with the client on schedule; $ per 1M output tokens = "
            f"$/hour / (output tok/s at L x 3600) x 1e6")
    failed = [r for r in points if r.status != "ok"]
    status = "ok" if not failed else ("failed" if len(failed) == len(points) else "partial")
    usd_why = None if measured else (f"emulated: the points ran on {where}, at this host's speed, not the tier's; "
                                     "no $ at the tier's price from it")
    summary = SweepSummary(points=table, max_sustainable=best, rule=rule, price=sw.common.profile,
                           measured_on=where, usd_unavailable=usd_why, task=task, in_process=in_proc)
    return sw.row("sweep", status, f"{len(failed)} of {len(points)} point(s) not ok" if failed else None,
                  summary=summary, client=SweepClient(ceiling=sw.ceiling))
