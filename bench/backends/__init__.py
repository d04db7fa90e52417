"""Backend registry: a name maps to a class path imported only when used.

Adding a backend is one module plus one entry here; nothing else branches on backend names.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass

from bench.errors import BenchError


@dataclass(frozen=True)
class BackendSpec:
    name: str
    target: str  # "module:Class"
    requires: tuple[str, ...]  # import names that must be installed
    extra: str | None  # the pip extra that provides them (None: a core dependency)
    formats: tuple[str, ...]  # model formats it can load
    description: str
    options: tuple[str, ...] = ()  # the --backend-opt keys it understands (others are refused)
    prepares: bool = False  # needs a one-time conversion (run in its own process, before timing)
    # (package, highest version that works exclusive, why): combinations known to be broken
    version_caps: tuple[tuple[str, str, str], ...] = ()
    # How a quality reference is scored for cells of this backend: the reference variant at full
    # precision, whatever precision the cell itself asks for (so KLD measures what the cell's
    # quantization or dtype loses). The tier's own settings (CARRIED_OPTIONS) carry over.
    reference_backend: str = "transformers"
    reference_options: tuple[tuple[str, str], ...] = (("dtype", "fp32"),)
    fills_depth: bool = False  # can fill its KV cache to a depth before the timed request (--depth)


# Options that describe the tier rather than the model's numerics: every pass of a cell keeps them,
# the reference pass included (a VRAM cap set by the planner for a GPU tier).
CARRIED_OPTIONS = ("vram_fraction",)


BACKENDS: dict[str, BackendSpec] = {
    spec.name: spec
    for spec in [
        BackendSpec(
            name="llama.cpp",
            target="bench.backends.llamacpp.backend:LlamaCppBackend",
            requires=("llama_cpp",),
            extra=None,
            formats=("gguf",),
            description="llama.cpp through llama-cpp-python (CPU, or CUDA offload with n_gpu_layers)",
            options=("type_k", "type_v", "flash_attn"),  # the KV cache (bench/backends/llamacpp/options.py)
            reference_backend="llama.cpp",
            reference_options=(),
            fills_depth=True,
        ),
        BackendSpec(
            name="transformers",
            target="bench.backends.transformers.backend:TransformersBackend",
            requires=("torch", "transformers"),
            extra="hf",
            formats=("hf",),
            description="Hugging Face transformers on torch: fp32, bf16 or fp16 on cpu or cuda",
            options=("dtype", "compile", "cache_implementation", "vram_fraction"),
            fills_depth=True,
        ),
        BackendSpec(
            name="bitsandbytes",
            target="bench.backends.transformers.quantized:BitsAndBytesBackend",
            requires=("torch", "transformers", "bitsandbytes"),
            extra="bnb",
            formats=("hf",),
            description="transformers with bitsandbytes 8-bit or 4-bit (nf4/fp4) weights",
            options=("bits", "quant_type", "compute_dtype", "dtype", "vram_fraction"),
        ),
        BackendSpec(
            name="torch-int8",
            target="bench.backends.transformers.quantized:TorchInt8Backend",
            requires=("torch", "transformers"),
            extra="hf",
            formats=("hf",),
            description="transformers with torch dynamic int8 Linear layers (CPU)",
            options=("vram_fraction",),
        ),
        BackendSpec(
            name="onnxruntime",
            target="bench.backends.onnx.backend:OnnxBackend",
            requires=("torch", "transformers", "optimum.onnxruntime", "onnxruntime"),
            extra="onnx",
            formats=("hf",),
            description="ONNX Runtime via optimum-onnx: exported once, fp32 or dynamic int8, CPU or CUDA provider",
            options=("precision", "provider", "vram_fraction"),
            prepares=True,
            version_caps=(("transformers", "4.58", "optimum-onnx 0.1.0 requires transformers<4.58"),),
        ),
    ]
}


def backend_spec(name: str) -> BackendSpec:
    try:
        return BACKENDS[name]
    except KeyError:
        raise BenchError(f"unknown backend {name!r}; known: {', '.join(BACKENDS)}") from None


def reference_scorer(spec: BackendSpec, reference_format: str) -> BackendSpec | None:
    """The backend that scores a reference of ``reference_format`` for cells of ``spec``: the cell
    backend's own reference backend where it loads that format, else a plain backend that does (a
    GGUF variant's Hugging Face BF16 reference is scored by transformers; both passes then score
    the reference's token ids, so the tokenizers must agree: the variant's pass checks it). None
    where no backend loads the format."""
    own = backend_spec(spec.reference_backend)
    if reference_format in own.formats:
        return own
    plain = [b for b in BACKENDS.values() if b.reference_backend == b.name and reference_format in b.formats]
    return plain[0] if plain else None


def check_options(spec: BackendSpec, options: dict[str, object]) -> None:
    """Refuse an option the backend does not read: a typo must not pass as a measured setting."""
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        known = ", ".join(spec.options) or "none"
        raise BenchError(f"backend {spec.name} has no option {unknown[0]!r} (its options: {known})")


def check_available(spec: BackendSpec) -> None:
    """Raise a one-line BenchError naming the install step if the backend's packages are missing."""
    missing = [m for m in spec.requires if not _installed(m)]
    if missing:
        how = f"pip install -e '.[{spec.extra}]'" if spec.extra else "pip install -e ."
        raise BenchError(f"backend {spec.name} needs {', '.join(missing)}: {how}")
    for package, below, why in spec.version_caps:
        have = _version(package)
        if have is not None and _release(have) >= _release(below):
            raise BenchError(f"backend {spec.name}: {package} {have} is known not to work ({why}); "
                             f"pip install '{package}<{below}'")


def _version(package: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _release(version: str) -> tuple[int, ...]:
    """The leading numeric release of a version string: '4.57.6' -> (4, 57, 6), '5.0.0rc1' -> (5, 0, 0)."""
    import re

    return tuple(int(x) for x in re.findall(r"\d+", version.split("+")[0])[:3])


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a dotted name whose parent package is missing
        return False


def load_backend_class(name: str) -> type:
    spec = backend_spec(name)
    check_available(spec)
    module_name, cls_name = spec.target.split(":")
    return getattr(importlib.import_module(module_name), cls_name)
