"""Hugging Face transformers on torch: fp32, bf16 or fp16, on cpu or cuda.

Timing uses ``model.generate`` as users call it, with two hooks that add no work of their own:
a logits processor whose first call marks the end of the prefill forward pass, and a streamer
whose ``put`` receives each new token id (decoded to text there, as a streaming caller would).
Token counts are the generated ids themselves, never re-tokenized text.

Settings (``--backend-opt``): dtype=fp32|bf16|fp16 (default fp32), compile=true (torch.compile),
cache_implementation=dynamic|static|offloaded|quantized (transformers' KV cache classes; default:
generate's own, dynamic).

At a depth (``fill_context``) the fill is one forward pass per n_batch tokens into a cache kept for
the cell; each request hands ``generate`` the fill and its prompt with that cache, trimmed back to
the fill first, so only the prompt is prefilled in the timed call.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.backends.base import Backend, GenerationTrace, LoadSettings, stop_reached
from bench.errors import BenchError
from bench.prompts import build_prompt

DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
# transformers' cache classes by the name generate() knows them (GenerationConfig.cache_implementation)
CACHES = ("dynamic", "static", "offloaded", "quantized")
FILL_BATCH = 512  # tokens per forward pass of a depth fill (llama.cpp's n_batch)


class TransformersBackend(Backend):
    name = "transformers"
    default_dtype = "fp32"  # of the weights that stay in floating point

    def load(self, model_path: Path, settings: LoadSettings) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        dtype_name = str(settings.options.get("dtype", self.default_dtype))
        if dtype_name not in DTYPES:
            raise BenchError(f"transformers: dtype must be one of {', '.join(DTYPES)}, got {dtype_name!r}")
        if settings.device == "cuda" and not torch.cuda.is_available():
            raise BenchError("transformers: a cuda profile but torch sees no CUDA device")
        torch.set_num_threads(settings.threads)
        torch.manual_seed(settings.seed)
        self.torch = torch
        self.device = torch.device("cuda" if settings.device == "cuda" else "cpu")
        if self.device.type == "cuda" and settings.options.get("vram_fraction"):
            torch.cuda.set_per_process_memory_fraction(float(settings.options["vram_fraction"]))
        self.dtype_name = dtype_name
        # Local folders only, safetensors only, no remote code: safe by default.
        self.tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=False)
        self.extra_env: dict[str, Any] = {}
        self.model = self._load_model(AutoModelForCausalLM, model_path, getattr(torch, DTYPES[dtype_name]),
                                      settings)
        if hasattr(self.model, "eval"):
            self.model.eval()
        self.compiled = str(settings.options.get("compile", "")).lower() in ("1", "true", "yes")
        if self.compiled:
            self.model.forward = torch.compile(self.model.forward)
        self.cache_kind = self._cache_kind(settings)
        self.n_ctx = settings.n_ctx
        self._fill: list[int] = []  # a depth fill every request starts after (fill_context)
        self._fill_cache: Any = None

    def _cache_kind(self, settings: LoadSettings) -> str | None:
        kind = settings.options.get("cache_implementation")
        if kind is None:
            return None
        kind = str(kind)
        if kind not in CACHES:
            raise BenchError(f"transformers: cache_implementation must be one of {', '.join(CACHES)}, got {kind!r}")
        if kind == "offloaded" and settings.device != "cuda":
            raise BenchError("transformers: cache_implementation=offloaded moves the cache off a GPU; "
                             "this is a cpu profile")
        if kind == "quantized":
            import importlib.util

            if importlib.util.find_spec("optimum.quanto") is None:
                raise BenchError("transformers: cache_implementation=quantized needs optimum-quanto: "
                                 "pip install optimum-quanto")
        return kind

    def _new_cache(self) -> Any:
        """A fresh cache of the chosen kind, as generate() would build it."""
        from transformers import DynamicCache, StaticCache
        from transformers.cache_utils import QuantoQuantizedCache

        config = self.model.config
        if self.cache_kind == "static":
            return StaticCache(config=config, max_cache_len=self.n_ctx)
        if self.cache_kind == "quantized":
            return QuantoQuantizedCache(config=config)
        return DynamicCache(config=config, offloading=self.cache_kind == "offloaded")

    def _trim_fill_cache(self) -> None:
        """Back to the fill: a dynamic cache is cropped; a static one has its tail zeroed (its length
        is the count of non-zero positions)."""
        from transformers import StaticCache

        n, cache = len(self._fill), self._fill_cache
        if isinstance(cache, StaticCache):
            for layer in cache.layers:
                if getattr(layer, "is_initialized", False):
                    layer.keys[:, :, n:].zero_()
                    layer.values[:, :, n:].zero_()
        else:
            cache.crop(n)

    def fill_context(self, tokens: list[int]) -> dict[str, Any]:
        if self.cache_kind == "quantized":
            raise BenchError("transformers: a quantized cache cannot be trimmed back to a fill; depth needs "
                             "cache_implementation dynamic or static")
        torch = self.torch
        cache = self._new_cache()
        with torch.inference_mode():
            for start in range(0, len(tokens), FILL_BATCH):
                ids = torch.tensor([tokens[start:start + FILL_BATCH]], device=self.device)
                self.model(ids, past_key_values=cache, use_cache=True, logits_to_keep=1,  # no 512 x vocab logits
                           cache_position=torch.arange(start, start + ids.shape[1], device=self.device))
        self._fill, self._fill_cache = list(tokens), cache
        return {"method": (f"one forward pass per {FILL_BATCH} tokens into a {type(cache).__name__} kept for the "
                           "cell; before each request the cache is trimmed back to the fill, and generate() is "
                           "given the fill and the prompt with that cache, so it prefills only the prompt")}

    def _load_model(self, auto_cls: Any, model_path: Path, dtype: Any, settings: LoadSettings) -> Any:
        """Plain weights in ``dtype`` on the device; quantizing backends override this."""
        return auto_cls.from_pretrained(model_path, dtype=dtype, use_safetensors=True,
                                        trust_remote_code=False).to(self.device)

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def prompt(self, n_tokens: int) -> list[int]:
        bos = [self.tokenizer.bos_token_id] if self.tokenizer.bos_token_id is not None else []
        return build_prompt(n_tokens, self._encode, bos)

    def tokenize(self, text: str, special: bool = False) -> list[int]:
        return self.tokenizer(text)["input_ids"]  # a Hugging Face tokenizer reads special tokens in text anyway

    def chat_template(self) -> dict[str, str] | None:
        tok = self.tokenizer
        if not getattr(tok, "chat_template", None):
            return None
        return {"template": tok.chat_template, "bos_token": "", "eos_token": tok.eos_token or "",
                "source": "the tokenizer's chat_template"}

    def detokenize(self, ids: list[int]) -> bytes:
        return self.tokenizer.decode(ids, skip_special_tokens=True).encode("utf-8")

    def vocab_size(self) -> int:
        return int(self.model.get_output_embeddings().weight.shape[0])

    def generate(self, prompt: list[int], max_new_tokens: int, stop_at_eos: bool,
                 stop: list[str] | None = None, reuse_prefix: bool = False,
                 reasoning_open: bool = False) -> GenerationTrace:
        # reuse_prefix is not supported here: every request recomputes its whole prompt
        from transformers import LogitsProcessorList, StoppingCriteria, StoppingCriteriaList
        from transformers.generation.streamers import BaseStreamer

        torch, clock, tok = self.torch, time.perf_counter, self.tokenizer
        times: list[float] = []
        ids: list[int] = []
        pieces: list[str] = []
        marks: dict[str, float] = {}

        class Streamer(BaseStreamer):
            def put(self, value: Any) -> None:
                if "prompt" not in marks:  # generate() first hands over the prompt itself
                    marks["prompt"] = 1
                    return
                for t in value.reshape(-1).tolist():
                    pieces.append(tok.decode([t]))
                    ids.append(t)
                    times.append(clock() - t0)

            def end(self) -> None:
                pass

        def mark_prefill(input_ids: Any, scores: Any) -> Any:
            marks.setdefault("prefill_end", clock() - t0)
            return scores

        class StopStrings(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                hit = stop_reached("".join(pieces), stop, reasoning_open)
                return torch.full((input_ids.shape[0],), hit, dtype=torch.bool, device=input_ids.device)

        cache: dict[str, Any] = {}
        if self._fill:
            with torch.inference_mode():  # the cache's tensors were made under inference mode
                self._trim_fill_cache()
            cache["past_key_values"] = self._fill_cache
        elif self.cache_kind is not None:
            cache["past_key_values"] = self._new_cache()
        input_ids = torch.tensor([self._fill + list(prompt)], device=self.device)
        with torch.inference_mode():
            t0 = clock()
            self.model.generate(
                input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=max_new_tokens,
                min_new_tokens=None if stop_at_eos or stop else max_new_tokens, do_sample=False, use_cache=True,
                streamer=Streamer(), logits_processor=LogitsProcessorList([mark_prefill]),
                stopping_criteria=StoppingCriteriaList([StopStrings()]), pad_token_id=tok.eos_token_id, **cache,
            )
        eos = tok.eos_token_id
        return GenerationTrace(
            prompt_tokens=len(prompt), token_ids=ids, token_times=times, prefill_end=marks.get("prefill_end"),
            stopped_at_eos=bool(stop_at_eos and ids and ids[-1] == eos and len(ids) < max_new_tokens),
            text="".join(pieces),
        )

    def score_windows(self, tokens: list[int], n_ctx: int, first: int) -> Iterator[tuple[Any, Any]]:
        import numpy as np

        torch = self.torch
        for start in range(0, len(tokens) - n_ctx + 1, n_ctx):
            window = list(tokens[start:start + n_ctx])
            if self.tokenizer.bos_token_id is not None and getattr(self.tokenizer, "add_bos_token", False):
                window[0] = self.tokenizer.bos_token_id
            ids = torch.tensor([window], device=self.device)
            with torch.inference_mode():  # ONNX Runtime's exported graph requires the mask
                logits = self.model(ids, attention_mask=torch.ones_like(ids)).logits[0, first:n_ctx - 1]
            yield np.asarray(window[first + 1:], dtype=np.int64), logits.float().cpu().numpy()

    def environment(self) -> dict[str, Any]:
        import transformers

        env = {"torch": self.torch.__version__, "transformers": transformers.__version__, "dtype": self.dtype_name,
               "device": str(self.device), "torch_threads": self.torch.get_num_threads(), "compiled": self.compiled,
               "cache_implementation": self.cache_kind or "dynamic (generate's default)", **self.extra_env}
        if self.device.type == "cuda":
            env["cuda_device"] = self.torch.cuda.get_device_name(self.device)
        return env

    def close(self) -> None:
        self._fill_cache = None
        del self.model
