"""Turns a run request into benchmark cells: resolves models, profiles and settings, decides per
cell how the tier is emulated and whether it can fit at all, and builds the one load
configuration every pass of the cell starts from."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.backends import (
    BACKENDS,
    CARRIED_OPTIONS,
    BackendSpec,
    backend_spec,
    check_available,
    check_options,
    reference_scorer,
)
from bench.backends.llamacpp.options import kv_settings
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
from bench.measuring.job import Job, LoadConfig, PreparePass, ScorePass, SpeedPass, TaskPass
from bench.models.catalog import Catalog
from bench.models.resolve import check_format, is_path, open_catalog, split_spec
from bench.models.store import ModelStore, ResolvedModel
from bench.request import RunRequest
from bench.results.kinds import Basis, RowStatus, emulated_on
from bench.results.schema import CellConfig, CellQuality, CellTask
from bench.results.sections import Tier


@dataclass(frozen=True)
class Caps:
    """What the worker applies to the measuring child (bench.measuring.worker.apply_caps): the CPUs
    it is pinned to and the RAM its RSS watchdog allows. None: not capped (a machine that is the tier)."""

    cpus: list[int] | None = None
    ram_limit_bytes: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The job's ``caps`` as the worker reads them: only what is capped."""
        return {k: v for k, v in (("cpus", self.cpus), ("ram_limit_bytes", self.ram_limit_bytes)) if v is not None}


@dataclass(frozen=True)
class CellPlan:
    """One cell, ready to run: its config (the row's identity), the files, the tier's caps."""

    config: CellConfig
    model: ResolvedModel
    profile: Profile
    caps: Caps = field(default_factory=Caps)  # CPUs and RAM limit the worker applies
    tier: Tier = field(default_factory=Tier)  # emulation facts and the memory prediction (the row's tier section)
    precheck: tuple[RowStatus, str] | None = None  # (status, reason) decided without loading
    reference: ResolvedModel | None = None  # the variant quality is measured against
    quality_note: str | None = None  # why there is no reference, where there is none

    # -- the one load configuration, and the jobs made from it --------------------------------
    def load(self) -> LoadConfig:
        c = self.config
        return LoadConfig(backend=c.backend, model_path=str(self.model.path), threads=c.threads, device=c.device,
                          n_ctx=c.n_ctx, seed=c.seed, n_gpu_layers=c.n_gpu_layers,
                          options=dict(c.backend_options), caps=self.caps.to_dict())

    def reference_load(self) -> LoadConfig:
        """The reference variant scored at full precision by its plain backend, with the tier's
        own settings (threads, device, caps, carried options) kept from the cell."""
        assert self.reference is not None
        scorer = reference_scorer(backend_spec(self.config.backend), self.reference.format)
        assert scorer is not None  # resolve_models keeps a reference only where one can score it
        carried = {k: v for k, v in self.config.backend_options.items() if k in CARRIED_OPTIONS}
        return dataclasses.replace(self.load().for_pass(model_path=str(self.reference.path), n_ctx=self.quality_ctx),
                                   backend=scorer.name, options={**dict(scorer.reference_options), **carried})

    @property
    def quality_ctx(self) -> int:
        assert self.config.quality is not None
        return self.config.quality.n_ctx

    def speed_job(self) -> Job:
        c = self.config
        return Job(self.load(), SpeedPass(c.prompt_tokens, c.gen_tokens, c.repetitions, c.warmup, c.stop_at_eos,
                                          depth=c.depth))

    def prepare_job(self) -> Job:
        return Job(self.load(), PreparePass())

    def score_job(self, corpus_path: Path, reference_cache: Path | None) -> Job:
        q = self.config.quality
        assert q is not None
        return Job(self.load().for_pass(n_ctx=self.quality_ctx),
                   ScorePass(chunks=q.chunks, corpus_path=str(corpus_path),
                             reference=str(reference_cache) if reference_cache else None))

    def reference_job(self, corpus_path: Path, write: Path) -> Job:
        q = self.config.quality
        assert q is not None
        return Job(self.reference_load(), ScorePass(chunks=q.chunks, corpus_path=str(corpus_path),
                                                    write_reference=str(write)))

    def reference_cache_key(self, corpus_sha256: str) -> str:
        """One reference pass per (reference file, corpus, window, chunks, how it was loaded):
        references loaded differently never share a cache."""
        assert self.reference is not None
        q = self.config.quality
        assert q is not None
        how = self.reference_load().describe()
        how.pop("threads")  # the thread count does not change the numbers
        text = json.dumps([self.reference.sha256 or str(self.reference.path), corpus_sha256, q.n_ctx,
                           q.chunks, how], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:20]

    def task_job(self, task_file: Path) -> Job:
        t = self.config.task
        assert t is not None
        return Job(self.load().for_pass(n_ctx=t.n_ctx),
                   TaskPass(task=t.name, task_file=str(task_file), limit=t.limit, shots=t.shots,
                            max_new_tokens=t.max_new_tokens))


def check_resources(req: RunRequest) -> None:
    """What the request names must exist: say so now, as one line, before anything runs."""
    if req.quality is not None:
        from bench.quality.corpus import load_corpus

        load_corpus(req.quality.corpus)
    if req.task is not None:
        from bench.quality.tasks import load_task

        task = load_task(req.task.name)
        task.items(task.dataset_path())
    for b in req.backends:
        spec = backend_spec(b)
        check_options(spec, req.backend_options)
        check_available(spec)
        if any(req.depth) and not spec.fills_depth:
            raise BenchError(f"--depth: backend {spec.name} cannot fill its KV cache to a depth "
                             f"(those that can: {', '.join(n for n, s in BACKENDS.items() if s.fills_depth)})")
    kv_settings(req.backend_options)  # a bad KV cache type says so now


Resolved = tuple[ResolvedModel, ResolvedModel | None, str | None]


def resolve_models(req: RunRequest, backend: str, store: ModelStore, catalog_path: Path) -> list[Resolved]:
    """(variant, its quality reference or None, why there is none) for each model asked for."""
    spec = backend_spec(backend)
    catalog: Catalog | None = None
    out: list[Resolved] = []
    for item in req.models:
        if is_path(item):
            if "gguf" not in spec.formats:
                raise BenchError(f"backend {spec.name} cannot load a GGUF file ({item})")
            out.append((store.resolve_path(Path(item)), None, "a file given by path has no catalog reference"))
            continue
        if catalog is None:
            catalog = open_catalog(catalog_path, store)
        model_id, variant_id = split_spec(item)
        model = catalog.model(model_id)
        for vid in [variant_id] if variant_id else (req.variants or [None]):
            variant = model.variant(vid)
            check_format(model, variant, spec.formats, f"backend {spec.name}")
            resolved = dataclasses.replace(store.resolve(model, variant), facts={
                "developer": model.developer, "country": model.country, "params_b": model.params_b,
                "license": model.license, "family": model.family, "note": model.note,
                "published_scores": [p.model_dump(exclude_none=True) for p in model.published_scores] or None})
            ref, note = None, None
            ref_id = (req.quality.reference if req.quality else None) or variant.reference
            if req.quality is not None and ref_id:
                ref_variant = model.variant(ref_id)
                note = _reference_unscorable(spec, ref_variant.format, f"{model.id}:{ref_id}")
                if note is None:
                    try:  # a reference only the hub serves, with the hub unreachable: perplexity only, and why
                        ref = store.resolve(model, ref_variant)
                    except BenchError as exc:
                        note = f"reference {model.id}:{ref_id} could not be had ({exc}): perplexity only"
            elif req.quality is not None:
                note = f"{model.id}:{variant.id} names no reference variant: perplexity only"
            out.append((resolved, ref, note))
    return out


def _reference_unscorable(spec: BackendSpec, ref_format: str, ref_name: str) -> str | None:
    """Why the reference cannot be scored for cells of ``spec`` (then: perplexity only), or None."""
    scorer = reference_scorer(spec, ref_format)
    if scorer is None:
        return f"reference {ref_name} is {ref_format}, which no backend loads: perplexity only"
    try:
        check_available(scorer)
    except BenchError as exc:
        return f"reference {ref_name} is {ref_format}, scored by {scorer.name}: {exc}; perplexity only"
    return None


def tier_emulation(profile: Profile, threads: int, host: HostInfo) -> tuple[int, Caps, dict[str, Any]]:
    """(threads to run with, caps for the worker, facts for the row). A tier larger than the host
    cannot be emulated in that dimension: the row says so rather than pretending."""
    host_cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(host.logical_cores))
    facts: dict[str, Any] = {"threads_requested": threads}
    if threads <= len(host_cpus):
        run_threads, cpus = threads, host_cpus[:threads]
        facts["thread_cap"] = "enforced: CPU affinity and the backend's thread count"
    else:
        run_threads, cpus = len(host_cpus), host_cpus
        facts["thread_cap"] = (f"not enforceable: the tier has {threads} threads, this host {len(host_cpus)}; "
                               f"ran with {len(host_cpus)}")
    facts["threads_used"] = run_threads
    budget = ram_budget_bytes(profile.capacity.ram_gb, profile.capacity.reserve_ram_gb)
    facts["ram_budget_bytes"] = budget
    facts["basis"] = Basis.MEASURED.value if profile.id == "auto" else emulated_on(host.hostname)
    caps = Caps(cpus=cpus)
    if profile.id == "auto":
        facts["enforcement"] = "measured-only"  # the host as it is
    elif budget < host.ram_bytes:
        # No cgroup v2 memory controller is used (see README); the child's own RSS watchdog stops
        # the run once its resident memory passes the tier's RAM.
        caps = Caps(cpus=cpus, ram_limit_bytes=budget)
        facts["enforcement"] = "rss-watchdog"
    else:
        facts["enforcement"] = "measured-only"
        facts["ram_cap_note"] = f"the tier's RAM ({budget / GiB:.1f} GiB) exceeds this host's; nothing to cap"
    return run_threads, caps, facts


def tier_on_its_hardware(profile: Profile, threads: int) -> tuple[int, Caps, dict[str, Any]]:
    """(threads, caps, facts) for a cell run on a machine that is the tier (a fleet node offering
    it): nothing is emulated, the tier's own CPUs and RAM are the limits; the budget still decides
    ``fits``. The node confirms it is the tier before running, or emulates and says so."""
    budget = ram_budget_bytes(profile.capacity.ram_gb, profile.capacity.reserve_ram_gb)
    facts: dict[str, Any] = {"threads_requested": threads, "threads_used": threads,
                             "thread_cap": "none: the tier's own hardware (the backend's thread count only)",
                             "ram_budget_bytes": budget, "enforcement": "measured-only",
                             "ram_cap_note": "the tier's own RAM is the limit", "basis": Basis.MEASURED.value}
    return threads, Caps(), facts


def build_plans(req: RunRequest, store: ModelStore, host: HostInfo, catalog_path: Path,
                profiles_dir: Path, on_tier: Collection[str] = ()) -> list[CellPlan]:
    """Every cell of the request, in order: backends x profiles x models x lengths x depths x threads.
    Profiles in ``on_tier`` run on machines that are the tier (fleet nodes): planned as measured
    there, not emulated on ``host``."""
    check_resources(req)
    profiles = [get_profile(p, profiles_dir, host, local=p not in on_tier) for p in req.profiles]
    models_by_backend = {b: resolve_models(req, b, store, catalog_path) for b in req.backends}
    plans = []
    for backend, profile in itertools.product(req.backends, profiles):
        threads_list = req.threads or [profile.capacity.threads]
        for (model, ref, note), p, n, d, t in itertools.product(models_by_backend[backend], req.prompt_tokens,
                                                                req.gen_tokens, req.depth, threads_list):
            plan = _plan_cell(req, backend, profile, model, p, n, t, host, native=profile.id in on_tier, depth=d)
            plans.append(dataclasses.replace(plan, reference=ref, quality_note=note))
    return plans


def _gpu_settings(req: RunRequest, profile: Profile, g: dict[str, Any], n_ctx: int, host: HostInfo,
                  tier: dict[str, Any], options: dict[str, Any], native: bool = False,
                  backend: str = "llama.cpp") -> int:
    """A cuda tier's VRAM budget: the torch allocator's cap for the torch-based backends (not on the
    tier's own GPU), and for llama.cpp the layers that fit (nothing caps llama.cpp's allocations)."""
    vram_budget = int(((profile.capacity.vram_gb or 0) - profile.capacity.reserve_vram_gb) * GiB)
    tier["vram_budget_bytes"] = vram_budget
    host_vram = host.gpus[0]["vram_bytes"] if host.gpus and not native else 0
    if host_vram and vram_budget < host_vram and backend != "llama.cpp":
        options["vram_fraction"] = vram_budget / host_vram
        tier["vram_cap"] = f"torch.cuda.set_per_process_memory_fraction({vram_budget / host_vram:.3f})"
    elif host_vram and vram_budget < host_vram:
        tier["vram_cap"] = ("none: llama.cpp offloads the layers whose weights and KV cache fit the budget "
                            "(gpu_layers_that_fit); its allocations are not capped")
    if req.n_gpu_layers is not None:
        return req.n_gpu_layers
    if not g:
        return -1
    kv = kv_settings(req.backend_options)
    fit_layers = gpu_layers_for_budget(g, n_ctx, vram_budget, kv.type_k, kv.type_v)
    tier["gpu_layers_that_fit"] = fit_layers
    return -1 if fit_layers > (g.get("block_count") or 0) else fit_layers


def _plan_cell(req: RunRequest, backend: str, profile: Profile, model: ResolvedModel, p: int, n: int, t: int,
               host: HostInfo, native: bool = False, depth: int = 0) -> CellPlan:
    need = depth + p + n
    what = f"depth + prompt + generated tokens ({depth} + {p} + {n})" if depth else \
        f"prompt + generated tokens ({p} + {n})"
    n_ctx = req.n_ctx or need
    if n_ctx < need:
        raise BenchError(f"--ctx {n_ctx} is smaller than {what}")
    g = model.gguf or {}
    if g.get("context_length") and need > g["context_length"]:
        raise BenchError(f"{model.model_id}: {what} = {need} exceed its context length {g['context_length']}")
    run_threads, caps, tier = tier_on_its_hardware(profile, t) if native else tier_emulation(profile, t, host)
    precheck = None
    if g:
        repacked = cpu_repacked_types() if profile.device == "cpu" else frozenset()
        kv = kv_settings(req.backend_options)
        prediction = predict_memory(g, model.size_bytes, n_ctx, p, repacked_types=repacked, depth=depth,
                                    type_k=kv.type_k, type_v=kv.type_v, flash_attn=kv.flash_attn)
        tier["predicted_memory"] = {**prediction.to_dict(), "depth": depth, **kv.describe()}
        if profile.device == "cpu":
            too_big, why = fit_verdict(prediction, tier["ram_budget_bytes"])
            tier["fit_check"] = why
            if too_big:
                precheck = (RowStatus.DOES_NOT_FIT, why)
    options = dict(req.backend_options)
    n_gpu_layers = (_gpu_settings(req, profile, g, n_ctx, host, tier, options, native, backend)
                    if profile.device == "cuda" else 0)
    config = CellConfig(
        model_id=model.model_id, variant_id=model.variant_id, backend=backend, profile_id=profile.id,
        device=profile.device, threads=run_threads, prompt_tokens=p, gen_tokens=n,
        repetitions=req.repetitions, warmup=req.warmup, n_ctx=n_ctx, n_gpu_layers=n_gpu_layers,
        seed=req.seed, stop_at_eos=req.stop_at_eos, timeout_s=req.timeout_s,
        quality=CellQuality(**req.quality.cell_dict()) if req.quality else None,
        task=CellTask(**req.task.cell_dict()) if req.task else None, backend_options=options, depth=depth,
    )
    return CellPlan(config=config, model=model, profile=profile, caps=caps, tier=Tier.from_dict(tier),
                    precheck=precheck)
