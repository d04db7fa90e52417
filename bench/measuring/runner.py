"""Runs one benchmark cell, each pass in a child process of its own, and turns whatever happens
into a Row.

A cell that crashes, is killed or runs past its timeout becomes a row with status ``failed``,
``oom`` or ``timeout`` and a reason; the rest of the matrix goes on. Every pass (preparation,
the timed run, the quality and reference passes, the task pass) is a ``Job`` made from the
cell's one load configuration (``CellPlan.load``), and the row records each pass's settings.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from typing import Any

from bench.backends import backend_spec
from bench.backends.llamacpp.options import kv_settings
from bench.measuring.cost import efficiency
from bench.measuring.launcher import ProgressFn, run_job
from bench.measuring.machine_state import StateWatch, verdict
from bench.measuring.metrics import (
    DEFINITIONS,
    Timeline,
    counter_rates,
    decode_text_bps,
    decode_tps,
    e2e,
    prefill_text_bps,
    prefill_tps,
    stats,
    summarize,
    tpot,
    ttft,
)
from bench.measuring.plan import CellPlan
from bench.measuring.worker import SpeedResult, TaskResult
from bench.projection.tier import tier_speed
from bench.results.kinds import RowStatus
from bench.results.schema import ProfileInfo, Row
from bench.results.sections import (
    Calibration,
    Cost,
    Efficiency,
    Environment,
    Memory,
    ModelInfo,
    Quality,
    Summary,
    Task,
    Tier,
)


@dataclass(frozen=True)
class RunContext:
    """What every cell of one run shares: its id, the environment, the llama.cpp build."""

    run_id: str
    environment: dict[str, Any]

    @property
    def build(self) -> dict[str, Any] | None:
        return self.environment.get("llama_cpp_build")


def _sample_record(trace: dict[str, Any]) -> dict[str, Any]:
    """The raw trace plus the per-request metrics derived from it."""
    tl = Timeline(trace["prompt_tokens"], trace["token_times"], trace["prefill_end"])
    pf, separated = prefill_tps(tl)
    return {
        **trace,
        "generated_tokens": len(trace["token_times"]),
        "ttft_s": ttft(tl),
        "prefill_tps": pf,
        "prefill_separated": separated,
        "decode_tps": decode_tps(tl),
        "tpot_s": tpot(tl),
        "e2e_s": e2e(tl),
        "prefill_text_bps": prefill_text_bps(tl, trace.get("prompt_text_bytes")),
        "decode_text_bps": decode_text_bps(tl, trace.get("text_bytes")),
        **counter_rates(trace.get("backend_counters")),
        "energy_j_per_token": trace["energy_j"] / len(trace["token_times"]) if trace.get("energy_j") is not None
        and trace["token_times"] else None,
    }


def new_row(plan: CellPlan, ctx: RunContext, calibration: dict[str, Any] | None) -> Row:
    created = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    env = Environment.from_dict(ctx.environment)
    if calibration:
        env = env.replace(calibration=Calibration.from_dict(calibration))
    return Row(run_id=ctx.run_id, created_at=created, status=RowStatus.FAILED, reason=None, config=plan.config,
               model=ModelInfo.from_dict({**asdict(plan.model), "path": str(plan.model.path)}),
               profile=ProfileInfo.from_dict(plan.profile.model_dump()), environment=env,
               definitions=DEFINITIONS, tier=plan.tier)


def run_cell(plan: CellPlan, ctx: RunContext, calibration: dict[str, Any] | None = None,
             on_progress: ProgressFn | None = None) -> Row:
    c = plan.config
    row = new_row(plan, ctx, calibration)
    if plan.precheck:
        row.status, row.reason = plan.precheck
        return row
    if backend_spec(c.backend).prepares:
        status, reason, _ = run_job(plan.prepare_job(), c.timeout_s, build=ctx.build)
        if status != "ok":
            row.status, row.reason = RowStatus(status), f"preparing the model for {c.backend}: {reason}"
            return row
    job = plan.speed_job()
    with StateWatch.for_cell(plan.caps.cpus, gpu=c.device == "cuda") as watch:
        status, reason, result = run_job(job, c.timeout_s, on_progress, build=ctx.build)
    row.environment = row.environment.replace(machine_state=watch.report())
    if result is None:
        row.status, row.reason = RowStatus(status), reason
        return row
    speed = SpeedResult.from_dict(result)
    row.status, row.reason = RowStatus(speed.status), speed.reason
    row.memory = Memory.from_dict(speed.memory)
    if row.status is not RowStatus.OK:
        return row
    fill_speed(row, plan, speed, calibration)
    row.environment = row.environment.replace(backend={**speed.environment, "load": job.load.describe()})
    row.reason = verdict(row.environment.machine_state).flag_reason(row.reason)
    if c.quality:
        row.quality = Quality.from_dict(run_quality(plan, ctx))
    if c.task:
        row.task = Task.from_dict(run_task_pass(plan, ctx))
    return row


def fill_speed(row: Row, plan: CellPlan, result: SpeedResult, calibration: dict[str, Any] | None) -> None:
    """The timed pass's samples, summary, memory against the tier, efficiency and cost."""
    c = plan.config
    row.load_time_s = result.load_time_s
    row.samples = [_sample_record(t) for t in result.samples]
    row.warmup_samples = [_sample_record(t) for t in result.warmup_samples]
    timelines = [Timeline(t["prompt_tokens"], t["token_times"], t["prefill_end"]) for t in result.samples]
    summary = summarize(timelines)
    for key in ("backend_prefill_tps", "backend_decode_tps", "energy_j_per_token", "prefill_text_bps",
                "decode_text_bps"):
        s = stats([x.get(key) for x in row.samples])
        if s is not None:
            summary[key] = s.to_dict()
    if result.depth_fill:
        summary["depth_fill"] = result.depth_fill
    row.summary = Summary.from_dict(summary)
    row.tier = Tier.from_dict({**row.tier.to_dict(), **result.caps_seen,
                               **tier_outcome(plan, row.memory.peak_rss_bytes)})
    kv = kv_settings(c.backend_options)
    row.efficiency = Efficiency.from_dict(efficiency(plan.model.gguf, plan.model.size_bytes,
                                                     c.depth + c.prompt_tokens + c.gen_tokens // 2, summary,
                                                     calibration, result.energy_source,
                                                     c.device, c.n_gpu_layers, kv_types=(kv.type_k, kv.type_v)))
    speed = tier_speed(row, plan.profile, row.tier.measured_on_tier)
    row.tier = row.tier.replace(speed_basis=speed["speed_basis"])
    row.efficiency = row.efficiency.replace(cost=Cost.from_dict(speed["cost"]), projection=speed["projection"])
    short = [s["generated_tokens"] for s in row.samples if s["generated_tokens"] < c.gen_tokens]
    if short:
        row.reason = (f"{len(short)} of {len(row.samples)} repetitions stopped at end-of-sequence before "
                      f"{c.gen_tokens} tokens (got {min(short)}-{max(short)}); metrics use the tokens produced")


def run_quality(plan: CellPlan, ctx: RunContext) -> dict[str, Any]:
    """Perplexity of the variant and its divergence from the reference, each pass in a child
    process of its own (never the one that was timed). The reference pass runs once per
    (reference file, corpus, window, load configuration) and is cached."""
    from bench.datafiles import cache_dir
    from bench.quality.corpus import load_corpus
    from bench.quality.scoring import ReferenceCache

    c = plan.config
    assert c.quality is not None
    corpus = load_corpus(c.quality.corpus)
    out: dict[str, Any] = {"status": "ok", "corpus": {"name": corpus.name, "sha256": corpus.sha256,
                                                     "source": corpus.source}}
    cache = None
    if plan.reference is not None:
        ref = plan.reference
        cache = ReferenceCache(cache_dir() / "reference-logprobs" / plan.reference_cache_key(corpus.sha256))
        ref_job = plan.reference_job(corpus.path, cache.npy)
        out["reference"] = {"variant_id": ref.variant_id, "quantization": ref.quantization, "sha256": ref.sha256,
                            "cache": str(cache.npy), "load": ref_job.load.describe()}
        if not cache.exists():
            status, reason, res = run_job(ref_job, c.timeout_s, build=ctx.build)
            if res is None or status != "ok":
                return {**out, "status": status, "reason": f"reference pass: {reason}"}
            out["reference_pass"] = {k: res[k] for k in ("perplexity", "seconds", "tokens_evaluated_per_s")}
            out["reference_pass"]["memory"] = res.get("memory")  # its peak RSS: bounded by one window
            out["reference_pass"]["cache_bytes"] = cache.size_bytes()
    else:
        out["reference"] = None
        out["note"] = plan.quality_note or "no reference variant: perplexity only"
    job = plan.score_job(corpus.path, cache.npy if cache else None)
    out["load"] = job.load.describe()
    status, reason, res = run_job(job, c.timeout_s, build=ctx.build)
    if res is None or status != "ok":
        return {**out, "status": status, "reason": reason}
    res.pop("status", None)
    res.pop("reason", None)
    return {**out, **res}


def run_task_pass(plan: CellPlan, ctx: RunContext) -> dict[str, Any]:
    """Task accuracy in a child process of its own, with time, energy and cost per correct answer
    (reasoning distills write long answers: per correct answer is the honest comparison)."""
    from bench.quality.runner import summarize_task
    from bench.quality.tasks import load_task

    c, t = plan.config, plan.config.task
    assert t is not None
    path = load_task(t.name).dataset_path()
    job = plan.task_job(path)
    # Its time and $ per correct answer are measurements too: the machine is watched as for the timed pass.
    with StateWatch.for_cell(plan.caps.cpus, gpu=c.device == "cuda") as watch:
        status, reason, raw = run_job(job, c.timeout_s, build=ctx.build)
    state = watch.report()
    out: dict[str, Any] = {"name": t.name, "file": str(path), "status": status, "load": job.load.describe(),
                           "machine_state": state}
    reason = verdict(state).flag_reason(reason)
    # $ per correct answer at the tier's price only from the tier's own time: an emulated tier's time
    # here is this host's (its cost on the tier is projected by bench.projection.tier.task_cost_on_tier)
    on_tier = plan.tier.measured_on_tier
    price = plan.profile.hourly_usd() if on_tier else None
    res = TaskResult.from_dict(raw) if raw is not None else None
    if res is not None and res.partial:  # killed or crashed: the items it finished are kept
        done = res.records
        if not done:
            return {**out, **res.asked, "reason": reason}
        return {**out, **res.asked, **summarize_task(done, price), "records": done,
                "reason": f"{reason}; the {len(done)} item(s) finished before it are kept (accuracy over those only)"}
    if res is None or status != "ok":
        return {**out, "reason": reason}
    return {**out, **res.asked, **summarize_task(res.records, price),
            "energy_source": res.energy_source, "memory": res.memory, "records": res.records,
            **({"reason": reason} if reason else {})}


def tier_outcome(plan: CellPlan, peak: int | None) -> dict[str, Any]:
    """Measured peak against the tier's budget (fits, per docs/METRICS.md) and the prediction."""
    out: dict[str, Any] = {}
    budget = plan.tier.ram_budget_bytes
    if peak is not None and budget is not None:
        out["fits"] = peak <= budget
        out["measured_peak_rss_bytes"] = peak
    predicted = (plan.tier.predicted_memory or {}).get("total_bytes")
    if predicted and peak:
        out["prediction_error"] = (predicted - peak) / peak  # + means the prediction was too high
    return out
