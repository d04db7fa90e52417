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
        ),
        BackendSpec(
            name="transformers",
            target="bench.backends.transformers.backend:TransformersBackend",
            requires=("torch", "transformers"),
            extra="hf",
            formats=("hf",),
            description="Hugging Face transformers on torch: fp32, bf16 or fp16 on cpu or cuda",
        ),
        BackendSpec(
            name="bitsandbytes",
            target="bench.backends.transformers.quantized:BitsAndBytesBackend",
            requires=("torch", "transformers", "bitsandbytes"),
            extra="bnb",
            formats=("hf",),
            description="transformers with bitsandbytes 8-bit or 4-bit (nf4/fp4) weights",
        ),
        BackendSpec(
            name="torch-int8",
            target="bench.backends.transformers.quantized:TorchInt8Backend",
            requires=("torch", "transformers"),
            extra="hf",
            formats=("hf",),
            description="transformers with torch dynamic int8 Linear layers (CPU)",
        ),
    ]
}


def backend_spec(name: str) -> BackendSpec:
    try:
        return BACKENDS[name]
    except KeyError:
        raise BenchError(f"unknown backend {name!r}; known: {', '.join(BACKENDS)}") from None


def check_available(spec: BackendSpec) -> None:
    """Raise a one-line BenchError naming the install step if the backend's packages are missing."""
    missing = [m for m in spec.requires if importlib.util.find_spec(m) is None]
    if missing:
        how = f"pip install -e '.[{spec.extra}]'" if spec.extra else "pip install -e ."
        raise BenchError(f"backend {spec.name} needs {', '.join(missing)}: {how}")


def load_backend_class(name: str) -> type:
    spec = backend_spec(name)
    check_available(spec)
    module_name, cls_name = spec.target.split(":")
    return getattr(importlib.import_module(module_name), cls_name)
