"""ONNX Runtime through optimum-onnx: the HF folder exported once to ONNX (cached), optionally
quantized with dynamic int8 (``ORTQuantizer``), then run with ``ORTModelForCausalLM``, whose
``generate`` is transformers' own, so timing uses the same hooks as the transformers backend.

Settings (``--backend-opt``): precision=fp32|int8 (default fp32), provider=CPUExecutionProvider|
CUDAExecutionProvider (default: CUDA on cuda tiers). Export and quantization happen in
``prepare`` and are not part of load time.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

from bench.backends.base import LoadSettings
from bench.backends.transformers.backend import TransformersBackend
from bench.datafiles import cache_dir
from bench.errors import BenchError


def _export_dir(model_path: Path, precision: str) -> Path:
    key = hashlib.sha256(str(model_path.resolve()).encode()).hexdigest()[:16]
    return cache_dir() / "onnx" / f"{model_path.name}-{key}" / precision


class OnnxBackend(TransformersBackend):
    name = "onnxruntime"

    def prepare(self, model_path: Path, settings: LoadSettings) -> None:
        precision = str(settings.options.get("precision", "fp32"))
        if precision not in ("fp32", "int8"):
            raise BenchError(f"onnxruntime: precision must be fp32 or int8, got {precision!r}")
        fp32 = _export_dir(model_path, "fp32")
        if not (fp32 / "model.onnx").exists():
            from optimum.onnxruntime import ORTModelForCausalLM
            from transformers import AutoTokenizer

            tmp = fp32.with_name("fp32.part")
            shutil.rmtree(tmp, ignore_errors=True)
            ORTModelForCausalLM.from_pretrained(model_path, export=True, use_cache=True).save_pretrained(tmp)
            AutoTokenizer.from_pretrained(model_path).save_pretrained(tmp)
            os.replace(tmp, fp32)
        if precision == "int8" and not (_export_dir(model_path, "int8") / "model_quantized.onnx").exists():
            from optimum.onnxruntime import ORTQuantizer
            from optimum.onnxruntime.configuration import AutoQuantizationConfig

            out = _export_dir(model_path, "int8")
            tmp = out.with_name("int8.part")
            shutil.rmtree(tmp, ignore_errors=True)
            ORTQuantizer.from_pretrained(fp32).quantize(
                save_dir=tmp, quantization_config=AutoQuantizationConfig.avx2(is_static=False, per_channel=True))
            for f in fp32.iterdir():  # tokenizer and config beside the quantized graph
                if f.suffix != ".onnx" and not f.name.endswith(".onnx_data") and not (tmp / f.name).exists():
                    shutil.copy(f, tmp / f.name)
            os.replace(tmp, out)
        self._prepared = _export_dir(model_path, precision)
        self._precision = precision

    def load(self, model_path: Path, settings: LoadSettings) -> None:
        if not hasattr(self, "_prepared"):
            self.prepare(model_path, settings)
        super().load(self._prepared, settings)

    def _load_model(self, auto_cls: Any, model_path: Path, dtype: Any, settings: LoadSettings) -> Any:
        import onnxruntime as ort
        from optimum.onnxruntime import ORTModelForCausalLM

        default = "CUDAExecutionProvider" if settings.device == "cuda" else "CPUExecutionProvider"
        provider = str(settings.options.get("provider", default))
        if provider not in ort.get_available_providers():
            raise BenchError(f"onnxruntime: provider {provider} is not available "
                             f"(have {', '.join(ort.get_available_providers())})")
        so = ort.SessionOptions()
        so.intra_op_num_threads = settings.threads
        so.inter_op_num_threads = 1
        file_name = "model_quantized.onnx" if self._precision == "int8" else "model.onnx"
        model = ORTModelForCausalLM.from_pretrained(model_path, file_name=file_name, provider=provider,
                                                    session_options=so, use_cache=True)
        self.extra_env = {"onnxruntime": ort.__version__, "provider": provider, "precision": self._precision,
                          "onnx_file": str(model_path / file_name)}
        return model

    def vocab_size(self) -> int:
        return int(self.model.config.vocab_size)
