"""``bench serve``: a sweep of load points against a server, one row per point, then a summary.

Order of work: check every input (``bench.request.ServeRequest``: one-line errors, nothing
started); place the server and the client on separate CPUs (``placement``); measure the client's own
ceiling against a trivial streaming server (``point``); start llama-server or probe the user's URL
(``target``); run each load point (``point``: prompts prepared first, warm-up not counted, bounded in
requests and seconds) and append its row at once; optionally compare task answers at concurrency 1
and N (``task_pass``); stop the server; optionally run the same workload in process (``bench run``)
for the side-by-side; append the sweep's summary row (``summary``).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable

from bench.request import ServeRequest
from bench.results.sections import Environment
from bench.results.serving import InProcess, ServingProfile, ServingRow, TaskSummary, Workload
from bench.serving.client import parse_url
from bench.serving.load import LoadPoint
from bench.serving.placement import plan_placement
from bench.serving.plan import load_points, slo_from_claims
from bench.serving.point import Common, Sweep, ceiling_of, failed_point, run_point
from bench.serving.prompts import PromptFactory
from bench.serving.summary import in_process, server_at_one, summary_row
from bench.serving.target import open_target

Say = Callable[[str], None]
CONNECTION_KINDS = ("connection_refused", "unreachable")


def _run_points(sw: Sweep, points: list[LoadPoint], started: float) -> None:
    stop: str | None = None
    for i, point in enumerate(points):
        if time.monotonic() - started > sw.req.timeout_s:
            stop = stop or f"not run: the sweep's --timeout of {sw.req.timeout_s:g} s had passed"
        if stop:
            sw.write(failed_point(sw, point, stop if stop.startswith("not run") else f"not run: {stop}"))
            continue
        sw.say(f"[{i + 1}/{len(points)}] {point.label}: {point.warmup} warm-up + up to {point.requests} requests, "
               f"at most {point.duration_s:g} s")
        row = sw.write(run_point(sw, point, i))
        s = row.point_summary
        sw.say(f"  {row.status}: {s.ok or 0}/{s.requests or 0} ok, "
               f"{s.request_throughput_rps or 0:.3g} req/s, {s.output_tps or 0:.3g} output tok/s, "
               f"TTFT p50 {(s.stat('ttft_s') or 0) * 1e3:.0f} ms" + (f" ({row.reason})" if row.reason else ""))
        if row.reason and row.reason.startswith("interrupted"):
            raise KeyboardInterrupt
        server = sw.opened.server
        if server is not None and not server.alive():
            stop = server.death()
        elif row.status == "failed" and s.errors and all(k in CONNECTION_KINDS for k in s.errors):
            stop = f"the server stopped answering at {point.label} ({', '.join(s.errors)})"


def run_sweep(req: ServeRequest, say: Say) -> list[ServingRow]:
    """Measure every load point; rows are appended to ``req.output`` as they complete."""
    from bench.hardware.profiles import detect_host, get_profile
    from bench.measuring.environment import capture_environment

    points = load_points(req)
    host = detect_host()
    profile = get_profile(req.profile, req.profiles_dir, host)
    slo = slo_from_claims(req.claims_path, req.slo_ttft_s, req.slo_tpot_s)
    host_cpus = sorted(os.sched_getaffinity(0))
    url_host = parse_url(req.url)[1] if req.url else None
    placement = plan_placement(req.threads or profile.capacity.threads, host_cpus, req.url is None, req.server_cpus,
                               req.client_cpus, url_host)
    warnings = [placement.warning] if placement.warning else []
    run_id = uuid.uuid4().hex[:12]
    log_path = req.output.parent / f"{req.output.stem}.{run_id}.llama-server.log"
    environment = Environment.from_dict(capture_environment(host))
    prof = ServingProfile(id=profile.id, name=profile.name,
                          usd_per_hour=profile.hourly_usd(),
                          basis=profile.price.basis if profile.price else None)
    started = time.monotonic()
    os.sched_setaffinity(0, placement.client_cpus)
    task: TaskSummary | None = None
    try:
        with open_target(req, placement, log_path, say) as opened:
            warnings += opened.warnings
            for w in warnings:
                say(f"warning: {w}")
            ceiling = ceiling_of(req, placement, points, log_path, say, warnings)
            factory = PromptFactory(opened.target, req.prompts, req.prompt_tokens, req.corpus, req.seed,
                                    shared_prefix=req.shared_prefix)
            workload = Workload.from_dict({"prompts": factory.describe(), "gen_tokens": req.gen.describe(),
                                           "ignore_eos": not req.stop_at_eos, "seed": req.seed,
                                           "endpoint": opened.target.request_path})
            common = Common(target=opened.info, workload=workload, placement=placement.info(), model=opened.model,
                            profile=prof, environment=environment, warnings=warnings)
            sw = Sweep(req, run_id, opened, factory, slo, placement, common, ceiling, say)
            _run_points(sw, points, started)
            if req.task:
                from bench.serving.task_pass import task_under_load

                task = sw.write(task_under_load(sw, max(req.concurrency or [4]))).task_summary.replace(at=None)
    finally:
        os.sched_setaffinity(0, host_cpus)
    in_proc: InProcess | None = None
    if req.in_process:
        in_proc = in_process(req, placement, say).replace(server_at_concurrency_1=server_at_one(sw.rows))
    sw.write(summary_row(sw, [r for r in sw.rows if r.record == "point"], task, in_proc))
    return sw.rows
