"""Quantized variants of the transformers backend: bitsandbytes (8-bit, 4-bit nf4/fp4) and torch's
dynamic int8 quantization of Linear layers (the "no extra dependency" path). Each reports which
layers stayed unquantized and the resulting weight memory."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from bench.backends.base import LoadSettings
from bench.backends.transformers.backend import DTYPES, TransformersBackend
from bench.errors import BenchError


def _layer_report(model: Any, quantized_types: tuple[type, ...]) -> dict[str, Any]:
    import torch

    linear_like = (torch.nn.Linear, *quantized_types)
    names = [n for n, m in model.named_modules() if isinstance(m, linear_like)]
    quantized = [n for n, m in model.named_modules() if isinstance(m, quantized_types)]
    # get_memory_footprint counts parameters and buffers; torch's dynamic int8 Linear keeps its
    # packed weights outside both, so add them (1 byte per int8 weight) where present.
    packed = sum(m.weight().numel() for _, m in model.named_modules()
                 if isinstance(m, quantized_types) and callable(getattr(m, "weight", None)))
    return {"quantized_layers": len(quantized),
            "unquantized_linear_layers": sorted(set(names) - set(quantized)),
            "embeddings_quantized": False,  # neither method touches nn.Embedding
            "weight_bytes": int(model.get_memory_footprint()) + packed}


class BitsAndBytesBackend(TransformersBackend):
    """``--backend-opt bits=8|4 quant_type=nf4|fp4 compute_dtype=fp32|bf16|fp16 dtype=fp16|bf16|fp32``.

    The layers bitsandbytes leaves unquantized (embeddings, norms, output head) default to fp16,
    as transformers itself chooses for bitsandbytes when no dtype is given, so the suite measures
    the configuration users get. With dtype=fp32, 8-bit layers cast every input to fp16 and
    bitsandbytes logs a warning per call; that log is silenced (it is not inference work).
    """

    name = "bitsandbytes"
    default_dtype = "fp16"

    def _load_model(self, auto_cls: Any, model_path: Path, dtype: Any, settings: LoadSettings) -> Any:
        import logging

        import bitsandbytes as bnb
        import torch
        from transformers import BitsAndBytesConfig

        logging.getLogger("bitsandbytes.autograd._functions").setLevel(logging.ERROR)

        o = settings.options
        bits = str(o.get("bits", "4"))
        compute = str(o.get("compute_dtype", "fp32"))
        if bits not in ("4", "8") or compute not in DTYPES:
            raise BenchError(f"bitsandbytes: bits must be 4 or 8 and compute_dtype one of {', '.join(DTYPES)}")
        if bits == "8":
            config = BitsAndBytesConfig(load_in_8bit=True)
        else:
            quant_type = str(o.get("quant_type", "nf4"))
            if quant_type not in ("nf4", "fp4"):
                raise BenchError(f"bitsandbytes: quant_type must be nf4 or fp4, got {quant_type!r}")
            config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=quant_type,
                                        bnb_4bit_compute_dtype=getattr(torch, DTYPES[compute]))
        model = auto_cls.from_pretrained(model_path, dtype=dtype, quantization_config=config,
                                         device_map={"": self.device.type}, use_safetensors=True,
                                         trust_remote_code=False)
        self.extra_env = {"bitsandbytes": bnb.__version__, "bits": int(bits), "compute_dtype": compute,
                          **({"quant_type": o.get("quant_type", "nf4")} if bits == "4" else {}),
                          **_layer_report(model, (bnb.nn.Linear8bitLt, bnb.nn.Linear4bit))}
        return model


class TorchInt8Backend(TransformersBackend):
    """Dynamic int8 quantization of every nn.Linear (weights int8, activations quantized per call), CPU only."""

    name = "torch-int8"

    def _load_model(self, auto_cls: Any, model_path: Path, dtype: Any, settings: LoadSettings) -> Any:
        import torch

        if self.device.type != "cpu":
            raise BenchError("torch-int8: dynamic quantization runs on the CPU only")
        if dtype != torch.float32:
            raise BenchError("torch-int8: quantizes an fp32 model; leave dtype at fp32")
        model = super()._load_model(auto_cls, model_path, dtype, settings)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            from torch.ao.quantization import quantize_dynamic

            model = quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
        from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

        self.extra_env = {"method": "torch.ao.quantization.quantize_dynamic(qint8)",
                          "deprecation_warnings": sorted({str(w.message).splitlines()[0] for w in caught})[:3],
                          **_layer_report(model, (DynamicLinear,))}
        return model
