"""One load point: its prompts prepared first, a warm-up not counted, the counted phase bounded in
requests and seconds, the server's counters and memory around it, the client's own state during it
(and its ceiling against a trivial streaming server), all in one serving row."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bench.errors import BenchError
from bench.request import ServeRequest
from bench.results.sections import Environment
from bench.results.serving import (
    Ceiling,
    ClientState,
    LoadSpec,
    PlacementInfo,
    PointSummary,
    ServerState,
    ServingModel,
    ServingProfile,
    ServingRow,
    ServingTarget,
    Workload,
)
from bench.serving import metrics as sm
from bench.serving.client import HttpFailure, Target
from bench.serving.load import Job, LoadPoint, PhaseResult, default_sender, run_phase
from bench.serving.placement import Placement
from bench.serving.prompts import Prompt, PromptFactory, encode_job
from bench.serving.server import counter_deltas, gpu_memory, scrape_metrics
from bench.serving.target import Opened

Say = Callable[[str], None]


@dataclass(frozen=True)
class Common:
    """What every row of one sweep records alike."""

    target: ServingTarget
    workload: Workload
    placement: PlacementInfo
    model: ServingModel
    profile: ServingProfile
    environment: Environment
    warnings: list[str]

    def row(self, run_id: str, record: str, status: str, reason: str | None, **sections: Any) -> ServingRow:
        """A row of this sweep; its warnings are the sweep's unless given."""
        sections.setdefault("warnings", list(self.warnings))
        return ServingRow(run_id=run_id, record=record, status=status, reason=reason, target=self.target,
                          workload=self.workload, placement=self.placement, model=self.model, profile=self.profile,
                          environment=self.environment, definitions=sm.DEFINITIONS, **sections)


@dataclass
class Sweep:
    """A sweep in progress: its request, server, prompts, SLOs and the rows written so far."""

    req: ServeRequest
    run_id: str
    opened: Opened
    factory: PromptFactory
    slo: sm.Slo
    placement: Placement
    common: Common
    ceiling: Ceiling | None
    say: Say
    next_prompt: int = 0
    rows: list[ServingRow] = field(default_factory=list)

    def write(self, row: ServingRow) -> ServingRow:
        """Appended at once (bench.results.files.append_row: one locked, fsynced line)."""
        from bench.results.files import append_row

        append_row(self.req.output, row)  # type: ignore[arg-type]
        self.rows.append(row)
        return row

    def row(self, record: str, status: str, reason: str | None, **sections: Any) -> ServingRow:
        return self.common.row(self.run_id, record, status, reason, **sections)

    def jobs(self, n: int, salt: int, extra: dict[str, Any] | None = None) -> list[Job]:
        prompts = self.factory.prompts(self.next_prompt, n, salt)
        self.next_prompt += n
        rng = random.Random(f"{self.req.seed}:gen:{salt}")
        return [encode_job(self.opened.target, p, self.req.gen.draw(rng), not self.req.stop_at_eos, extra)
                for p in prompts]


def load_spec(point: LoadPoint) -> LoadSpec:
    return LoadSpec.from_dict(point.to_dict())


def failed_point(sw: Sweep, point: LoadPoint, reason: str) -> ServingRow:
    return sw.row("point", "failed", reason, load=load_spec(point))


def run_point(sw: Sweep, point: LoadPoint, index: int) -> ServingRow:
    target, server = sw.opened.target, sw.opened.server
    warnings: list[str] = []
    try:
        jobs = sw.jobs(point.warmup + point.requests, index)
    except (BenchError, HttpFailure) as exc:
        return failed_point(sw, point, f"could not prepare the prompts: {exc}")
    send = default_sender(target, sw.req.request_timeout_s)
    grace = sw.req.request_timeout_s
    warm = run_phase(replace(point, requests=point.warmup), jobs[: point.warmup], send, grace) if point.warmup else None
    if warm is not None and warm.interrupted:
        row = failed_point(sw, point, "interrupted (Ctrl-C or SIGTERM) during the warm-up; nothing was counted")
        row.warmup_requests = [t.to_dict() for t in warm.traces]
        return row
    before = scrape_metrics(target.root, target.api_key)
    reset = server.reset_peak_rss() if server else False
    res = run_phase(point, jobs[point.warmup:], send, grace)
    after = scrape_metrics(target.root, target.api_key)
    summary = PointSummary.from_dict(sm.summarize_point(res.traces, sw.slo))
    client = client_state(point, res, summary, sw.ceiling)
    if not client.kept_up and client.kept_up_note:
        warnings.append(client.kept_up_note)
    if client.ceiling_share and client.ceiling_share > 0.5:
        warnings.append(f"this point used {client.ceiling_share:.0%} of the client's measured ceiling: the load "
                        "generator may be limiting it")
    warnings += res.notes
    status, reason = point_status(summary, server.death() if server else None)
    srv = ServerState(counters=counter_deltas(before, after))
    if server is not None and server.alive():
        srv = srv.replace(memory={**server.memory(), "peak_basis": "VmHWM reset at the point's start (after warm-up)"
                                  if reset else "VmHWM since the server started"},
                          gpu=gpu_memory(server.proc.pid) if server.proc else None)
    if res.interrupted:
        status, reason = "failed", "interrupted (Ctrl-C or SIGTERM) during this point; its requests so far are kept"
    return sw.row("point", status, reason, load=load_spec(point), client=client, summary=summary, server=srv,
                  requests=[t.to_dict() for t in res.traces],
                  warmup_requests=[t.to_dict() for t in warm.traces] if warm else [],
                  warnings=warnings + sw.common.warnings)


def point_status(summary: PointSummary, death: str | None) -> tuple[str, str | None]:
    """ok (every counted request completed), partial (some failed) or failed (none), and why."""
    errors = summary.errors or {}
    requests, ok = summary.requests or 0, summary.ok or 0
    detail = "; ".join(f"{k} x{v.count}: {v.example}" for k, v in errors.items())
    if death:
        return ("partial" if ok else "failed"), f"{death}" + (f"; {detail}" if detail else "")
    if not requests:
        return "failed", "no request was scheduled within the point's time"
    if not ok:
        return "failed", f"no request completed: {detail}"
    if errors:
        return "partial", f"{requests - ok} of {requests} requests failed: {detail}"
    return "ok", None


def client_state(point: LoadPoint, res: PhaseResult, summary: PointSummary, ceiling: Ceiling | None) -> ClientState:
    """The client's own state during the point: its CPU use, its ceiling, whether it kept up."""
    lag = summary.queue_time_s
    tolerance = max(0.010, 0.1 / point.value) if point.mode == "rate" else 0.010
    not_sent = summary.error_count("not_sent")
    kept_up = not not_sent and (lag is None or (lag.p99 or 0) <= tolerance)
    sched = [t.scheduled for t in res.traces]
    offered = (len(sched) - 1) / (max(sched) - min(sched)) if len(sched) > 1 and max(sched) > min(sched) else None
    send_lag_p99 = summary.send_lag_s.p99 if summary.send_lag_s else None
    note = None if kept_up else (
        f"the load generator fell behind: p99 queue time {(lag.p99 if lag else 0) * 1e3:.1f} ms (tolerance "
        f"{tolerance * 1e3:.0f} ms; p99 send lag {(send_lag_p99 or 0) * 1e3:.1f} ms, "
        f"the rest waiting for an in-flight slot), {not_sent} request(s) never sent; it offered "
        f"{summary.achieved_send_rate_rps or 0:.3g} requests/s, not the {point.label} asked")
    out = ClientState(cpu_cores_used=res.client_cpu_share, cpu_seconds=res.client_cpu_s, phase_wall_s=res.wall_s,
                      kept_up=kept_up, send_lag_tolerance_s=tolerance, scheduled_rate_rps=offered,
                      achieved_send_rate_rps=summary.achieved_send_rate_rps, kept_up_note=note)
    window = summary.window_s
    chunks = sum(len(t.chunk_times) for t in res.traces if t.status == "ok")
    if window:
        out = out.replace(chunks_per_s=chunks / window)
    if ceiling and ceiling.chunks_per_s and window:
        out = out.replace(ceiling_chunks_per_s=ceiling.chunks_per_s,
                          ceiling_share=chunks / window / ceiling.chunks_per_s)
    return out


# -- the client's ceiling -------------------------------------------------------------------------
def measure_ceiling(concurrency: int, tokens: int, placement: Placement, log_path: Path,
                    seconds: float = 3.0) -> Ceiling:
    """Requests and chunks per second this client sustains against a trivial streaming server on
    loopback (pinned to the server's CPUs), at the sweep's highest concurrency."""
    import psutil

    from bench.serving.stub import StubProcess

    with StubProcess("--mode", "ok", "--tokens", str(tokens), cpus=placement.server_cpus, log_path=log_path) as stub:
        target = Target(stub.base_url, "stub-model")
        job = encode_job(target, Prompt("Request 0: " + "word " * 96, None, None, "ceiling"), tokens, True)
        point = LoadPoint("concurrency", concurrency, 10**6, seconds)
        stub_cpu0 = psutil.Process(stub.proc.pid).cpu_times()
        res = run_phase(point, [job] * 10**6, default_sender(target, 30.0), grace_s=10.0)
        stub_cpu1 = psutil.Process(stub.proc.pid).cpu_times()
    summary = PointSummary.from_dict(sm.summarize_point(res.traces, None))
    window = summary.window_s or res.wall_s
    chunks = sum(len(t.chunk_times) for t in res.traces if t.status == "ok")
    stub_cores = (stub_cpu1.user + stub_cpu1.system - stub_cpu0.user - stub_cpu0.system) / res.wall_s
    client_cores = res.client_cpu_share or 0.0
    return Ceiling(concurrency=concurrency, tokens_per_request=tokens, seconds=window,
                   requests_per_s=summary.request_throughput_rps, chunks_per_s=chunks / window if window else None,
                   errors=summary.errors, client_cpu_cores=client_cores, stub_cpu_cores=stub_cores,
                   client_cpus=placement.client_cpus, stub_cpus=placement.server_cpus,
                   limited_by="client" if client_cores >= 0.9 * len(placement.client_cpus) else
                   "stub server (so the client's ceiling is at least this)",
                   ttft_from_send_p50_s=summary.stat("ttft_from_send_s"))


def ceiling_of(req: ServeRequest, placement: Placement, points: list[LoadPoint], log_path: Path, say: Say,
               warnings: list[str]) -> Ceiling | None:
    """The client's ceiling at the sweep's highest concurrency (16 for arrivals), unless skipped;
    a ceiling that cannot be measured is a warning, not a failed sweep (it is context)."""
    if not req.ceiling:
        return None
    c = max([int(p.value) for p in points if p.mode == "concurrency"] + [16 if req.rates else 1])
    say(f"measuring the client's own ceiling against a trivial streaming server (concurrency {c}, 3 s)")
    try:
        ceiling = measure_ceiling(c, req.gen.hi, placement, log_path.with_suffix(".stub.log"))
    except Exception as exc:  # the ceiling is context, not the measurement: say why it is missing
        warnings.append(f"the client's ceiling could not be measured: {type(exc).__name__}: {exc}")
        return None
    say(f"  client ceiling: {ceiling.requests_per_s or 0:.0f} requests/s, {ceiling.chunks_per_s or 0:.0f} "
        f"chunks/s (client {ceiling.client_cpu_cores:.2f} cores, limited by the {ceiling.limited_by})")
    return ceiling
