"""Turns command-line choices into benchmark cells: resolves models, profile and settings."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

from bench.backends import backend_spec, check_available
from bench.catalog import Catalog, load_catalog
from bench.errors import BenchError
from bench.hardware import HostInfo, get_profile
from bench.runner import CellPlan
from bench.schema import CellConfig
from bench.store import ModelStore, ResolvedModel


@dataclass
class RunRequest:
    models: list[str]  # catalog ids (``id`` or ``id:variant``) or GGUF paths
    catalog_path: Path
    profiles_dir: Path
    variants: list[str] = field(default_factory=list)
    backend: str = "llama.cpp"
    profile: str = "auto"
    prompt_tokens: list[int] = field(default_factory=lambda: [128])
    gen_tokens: list[int] = field(default_factory=lambda: [64])
    threads: list[int] = field(default_factory=list)  # empty: the profile's
    repetitions: int = 3
    warmup: int = 1
    n_ctx: int | None = None
    n_gpu_layers: int = -1
    seed: int = 0
    stop_at_eos: bool = False
    timeout_s: float = 1800.0


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
        raise BenchError(f"--repetitions must be at least 3 (shared/METRICS.md), got {req.repetitions}")
    if req.warmup < 0:
        raise BenchError(f"--warmup must be 0 or more, got {req.warmup}")
    if req.n_ctx is not None:
        _positive("--ctx", [req.n_ctx])


def _is_path(spec: str) -> bool:
    return spec.endswith(".gguf") or "/" in spec or Path(spec).is_file()


def resolve_models(req: RunRequest, store: ModelStore) -> list[ResolvedModel]:
    spec = backend_spec(req.backend)
    catalog: Catalog | None = None
    out: list[ResolvedModel] = []
    for item in req.models:
        if _is_path(item):
            if "gguf" not in spec.formats:
                raise BenchError(f"backend {spec.name} cannot load a GGUF file ({item})")
            out.append(store.resolve_path(Path(item)))
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
            out.append(store.resolve(model, variant))
    return out


def build_plans(req: RunRequest, store: ModelStore, host: HostInfo) -> list[CellPlan]:
    validate(req)
    check_available(backend_spec(req.backend))
    profile = get_profile(req.profile, req.profiles_dir, host)
    models = resolve_models(req, store)
    threads = req.threads or [profile.capacity.threads]
    plans = []
    for model, p, n, t in itertools.product(models, req.prompt_tokens, req.gen_tokens, threads):
        n_ctx = req.n_ctx or p + n
        if n_ctx < p + n:
            raise BenchError(f"--ctx {n_ctx} is smaller than prompt + generated tokens ({p} + {n})")
        trained = (model.gguf or {}).get("context_length")
        if trained and p + n > trained:
            raise BenchError(f"{model.model_id}: prompt + generated tokens ({p + n}) exceed its context "
                             f"length {trained}")
        config = CellConfig(
            model_id=model.model_id, variant_id=model.variant_id, backend=req.backend,
            profile_id=profile.id, device=profile.device, threads=t, prompt_tokens=p, gen_tokens=n,
            repetitions=req.repetitions, warmup=req.warmup, n_ctx=n_ctx,
            n_gpu_layers=req.n_gpu_layers if profile.device == "cuda" else 0, seed=req.seed,
            stop_at_eos=req.stop_at_eos, timeout_s=req.timeout_s,
        )
        plans.append(CellPlan(config=config, model=model, profile=profile))
    return plans
