"""Turns command-line or matrix choices into benchmark cells: resolves models, profiles and
settings, and decides per cell how the tier is emulated and whether it can fit at all."""

from __future__ import annotations

import dataclasses
import itertools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.backends import backend_spec, check_available
from bench.errors import BenchError
from bench.hardware.profiles import HostInfo, Profile, get_profile
from bench.hardware.tiers import (
    GiB,
    cpu_repacked_types,
    fit_verdict,
    gpu_layers_for_budget,
    predict_memory,
    ram_budget_bytes,
)
from bench.measuring.runner import CellPlan
from bench.models.catalog import Catalog, load_catalog
from bench.models.store import ModelStore, ResolvedModel
from bench.results.schema import CellConfig


@dataclass
class RunRequest:
    models: list[str]  # catalog ids (``id`` or ``id:variant``) or GGUF paths
    catalog_path: Path
    profiles_dir: Path
    variants: list[str] = field(default_factory=list)
    backends: list[str] = field(default_factory=lambda: ["llama.cpp"])
    profiles: list[str] = field(default_factory=lambda: ["auto"])
    prompt_tokens: list[int] = field(default_factory=lambda: [128])
    gen_tokens: list[int] = field(default_factory=lambda: [64])
    threads: list[int] = field(default_factory=list)  # empty: each profile's
    repetitions: int = 3
    warmup: int = 1
    n_ctx: int | None = None
    n_gpu_layers: int | None = None  # None: all that fit the tier's VRAM
    seed: int = 0
    stop_at_eos: bool = False
    timeout_s: float = 1800.0
    quality: dict[str, Any] | None = None  # {corpus, n_ctx, chunks}; None: speed only
    reference: str | None = None  # variant id overriding the catalog's reference
    task: dict[str, Any] | None = None  # {name, limit, shots, max_new_tokens, n_ctx}; None: no task
    backend_options: dict[str, Any] = field(default_factory=dict)


def _positive(name: str, values: list[int] | list[float]) -> None:
    for v in values:
        if v <= 0:
            raise BenchError(f"{name} must be positive, got {v}")


def validate(req: RunRequest) -> None:
    _positive("--prompt-tokens", req.prompt_tokens)
    _positive("--gen-tokens", req.gen_tokens)
    _positive("--threads", req.threads)
    _positive("--timeout", [req.timeout_s])
    if req.repetitions < 3:
        raise BenchError(f"--repetitions must be at least 3 (docs/METRICS.md), got {req.repetitions}")
    if req.warmup < 0:
        raise BenchError(f"--warmup must be 0 or more, got {req.warmup}")
    if req.n_ctx is not None:
        _positive("--ctx", [req.n_ctx])
    if req.quality is not None:
        if req.quality["n_ctx"] < 8:
            raise BenchError(f"--quality-ctx must be at least 8 tokens, got {req.quality['n_ctx']}")
        _positive("--quality-chunks", [req.quality["chunks"]])
        from bench.quality.corpus import load_corpus

        load_corpus(req.quality["corpus"])  # a missing or unreadable corpus is bad input: say so now
    if req.task is not None:
        _positive("--task-limit", [req.task["limit"]])
        from bench.quality.tasks import load_items, task_file

        load_items(task_file(req.task["name"]))  # an unparsable task file is bad input: say so now


def is_path(spec: str) -> bool:
    return spec.endswith(".gguf") or "/" in spec or Path(spec).is_file()


def resolve_models(req: RunRequest, backend: str,
                   store: ModelStore) -> list[tuple[ResolvedModel, ResolvedModel | None, str | None]]:
    """(variant, its quality reference or None, why there is none) for each model asked for."""
    spec = backend_spec(backend)
    catalog: Catalog | None = None
    out: list[tuple[ResolvedModel, ResolvedModel | None, str | None]] = []
    for item in req.models:
        if is_path(item):
            if "gguf" not in spec.formats:
                raise BenchError(f"backend {spec.name} cannot load a GGUF file ({item})")
            out.append((store.resolve_path(Path(item)), None, "a file given by path has no catalog reference"))
            continue
        if catalog is None:
            catalog = load_catalog(req.catalog_path)
            store.base_dir = req.catalog_path.parent.resolve()
        model_id, _, variant_id = item.partition(":")
        model = catalog.model(model_id)
        wanted = [variant_id] if variant_id else (req.variants or [None])
        for vid in wanted:
            variant = model.variant(vid)
            if variant.format not in spec.formats:
                raise BenchError(f"{model.id}:{variant.id} is {variant.format}; backend {spec.name} loads "
                                 f"{', '.join(spec.formats)}")
            resolved = dataclasses.replace(store.resolve(model, variant), facts={
                "developer": model.developer, "country": model.country, "params_b": model.params_b,
                "license": model.license, "family": model.family, "note": model.note})
            ref, note = None, None
            ref_id = req.reference or variant.reference
            if req.quality is not None and ref_id:
                ref_variant = model.variant(ref_id)
                if ref_variant.format in spec.formats:
                    ref = store.resolve(model, ref_variant)
                else:
                    note = (f"reference {model.id}:{ref_id} is {ref_variant.format}; backend {spec.name} scores "
                            f"{', '.join(spec.formats)} only: perplexity only")
            elif req.quality is not None:
                note = f"{model.id}:{variant.id} names no reference variant: perplexity only"
            out.append((resolved, ref, note))
    return out


def tier_emulation(profile: Profile, threads: int, host: HostInfo) -> tuple[int, dict[str, Any], dict[str, Any]]:
    """(threads to run with, caps for the worker, facts for the row). A tier larger than the host
    cannot be emulated in that dimension: the row says so rather than pretending."""
    host_cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(host.logical_cores))
    facts: dict[str, Any] = {"threads_requested": threads}
    if threads <= len(host_cpus):
        run_threads, cpus = threads, host_cpus[:threads]
        facts["thread_cap"] = "enforced: CPU affinity and the backend's thread count"
    else:
        run_threads, cpus = len(host_cpus), host_cpus
        facts["thread_cap"] = f"not enforceable: the tier has {threads} threads, this host {len(host_cpus)}; ran with {len(host_cpus)}"
    facts["threads_used"] = run_threads
    budget = ram_budget_bytes(profile.capacity.ram_gb, profile.capacity.reserve_ram_gb)
    facts["ram_budget_bytes"] = budget
    caps: dict[str, Any] = {"cpus": cpus}
    if profile.id == "auto":
        facts["enforcement"] = "measured-only"  # the host as it is
    elif budget < host.ram_bytes:
        # No cgroup v2 memory controller is used (see README); the child's own RSS watchdog stops
        # the run once its resident memory passes the tier's RAM.
        caps["ram_limit_bytes"] = budget
        facts["enforcement"] = "rss-watchdog"
    else:
        facts["enforcement"] = "measured-only"
        facts["ram_cap_note"] = f"the tier's RAM ({budget / GiB:.1f} GiB) exceeds this host's; nothing to cap"
    return run_threads, caps, facts


def build_plans(req: RunRequest, store: ModelStore, host: HostInfo) -> list[CellPlan]:
    validate(req)
    for b in req.backends:
        check_available(backend_spec(b))
    profiles = [get_profile(p, req.profiles_dir, host) for p in req.profiles]
    models_by_backend = {b: resolve_models(req, b, store) for b in req.backends}
    plans = []
    for backend, profile in itertools.product(req.backends, profiles):
        threads_list = req.threads or [profile.capacity.threads]
        for (model, ref, note), p, n, t in itertools.product(models_by_backend[backend], req.prompt_tokens,
                                                             req.gen_tokens, threads_list):
            plan = _plan_cell(req, backend, profile, model, p, n, t, host)
            plans.append(dataclasses.replace(plan, reference=ref, quality_note=note))
    return plans


def _plan_cell(req: RunRequest, backend: str, profile: Profile, model: ResolvedModel, p: int, n: int, t: int,
               host: HostInfo) -> CellPlan:
    n_ctx = req.n_ctx or p + n
    if n_ctx < p + n:
        raise BenchError(f"--ctx {n_ctx} is smaller than prompt + generated tokens ({p} + {n})")
    g = model.gguf or {}
    if g.get("context_length") and p + n > g["context_length"]:
        raise BenchError(f"{model.model_id}: prompt + generated tokens ({p + n}) exceed its context "
                         f"length {g['context_length']}")
    run_threads, caps, tier = tier_emulation(profile, t, host)
    precheck = None
    n_gpu_layers = 0
    if g:
        repacked = cpu_repacked_types() if profile.device == "cpu" else frozenset()
        prediction = predict_memory(g, model.size_bytes, n_ctx, p, repacked_types=repacked)
        tier["predicted_memory"] = prediction.to_dict()
        if profile.device == "cpu":
            too_big, why = fit_verdict(prediction, tier["ram_budget_bytes"])
            tier["fit_check"] = why
            if too_big:
                precheck = ("does_not_fit", why)
    options = dict(req.backend_options)
    if profile.device == "cuda":
        vram_budget = int(((profile.capacity.vram_gb or 0) - profile.capacity.reserve_vram_gb) * GiB)
        tier["vram_budget_bytes"] = vram_budget
        host_vram = host.gpus[0]["vram_bytes"] if host.gpus else 0
        if host_vram and vram_budget < host_vram:  # torch-based backends cap their allocator to the tier
            options["vram_fraction"] = vram_budget / host_vram
            tier["vram_cap"] = f"torch.cuda.set_per_process_memory_fraction({vram_budget / host_vram:.3f})"
        if req.n_gpu_layers is not None:
            n_gpu_layers = req.n_gpu_layers
        elif g:
            fit_layers = gpu_layers_for_budget(g, n_ctx, vram_budget)
            n_gpu_layers = -1 if fit_layers > (g.get("block_count") or 0) else fit_layers
            tier["gpu_layers_that_fit"] = fit_layers
        else:
            n_gpu_layers = -1
    config = CellConfig(
        model_id=model.model_id, variant_id=model.variant_id, backend=backend, profile_id=profile.id,
        device=profile.device, threads=run_threads, prompt_tokens=p, gen_tokens=n,
        repetitions=req.repetitions, warmup=req.warmup, n_ctx=n_ctx, n_gpu_layers=n_gpu_layers,
        seed=req.seed, stop_at_eos=req.stop_at_eos, timeout_s=req.timeout_s, quality=req.quality,
        task=req.task, backend_options=options,
    )
    return CellPlan(config=config, model=model, profile=profile, caps=caps, tier=tier, precheck=precheck)
