"""llama.cpp through llama-cpp-python's low-level API: eval the prompt, then argmax/decode per token.

We drive the loop ourselves rather than ``create_completion`` so that the prefill pass is timed on
its own, each token's timestamp is taken when the caller has it (chosen and detokenized), and the
suite adds as little as it can per token to what llama.cpp itself spends (benchmarks/llama_fidelity.py
compares the two with llama-bench). Each request starts from an empty KV cache, so no repetition reuses an
earlier prompt's cache; only a caller that asks (``reuse_prefix``, the task pass) keeps the prefix.
At a depth (``fill_context``), each request starts from the cache trimmed back to the fill.

Settings (``--backend-opt``, bench/backends/llamacpp/options.py): type_k, type_v (the KV cache's
types: f16, q8_0, q4_0, ...) and flash_attn=on|off.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.backends.base import Backend, GenerationTrace, LoadSettings, stop_reached
from bench.backends.llamacpp.options import kv_settings
from bench.errors import BenchError
from bench.prompts import build_prompt


class LlamaCppBackend(Backend):
    name = "llama.cpp"

    def load(self, model_path: Path, settings: LoadSettings) -> None:
        import llama_cpp
        from llama_cpp import Llama

        self._llama_cpp = llama_cpp
        offload = settings.n_gpu_layers if settings.device == "cuda" else 0
        if offload and not llama_cpp.llama_supports_gpu_offload():
            raise BenchError("this llama-cpp-python build has no GPU offload; "
                             "reinstall with CMAKE_ARGS='-DGGML_CUDA=on'")
        self.n_gpu_layers = offload
        scoring = settings.scoring
        self.kv = kv_settings(settings.options)
        self.llm = Llama(
            model_path=str(model_path),
            n_ctx=settings.n_ctx,
            # scoring decodes a whole window per call; generation keeps llama-cpp-python's default
            n_batch=settings.n_ctx if scoring else 512,
            n_threads=settings.threads,
            n_threads_batch=settings.threads,
            n_gpu_layers=offload,
            seed=settings.seed,
            logits_all=False,  # all-logits mode is for scoring only; it distorts speed
            type_k=getattr(llama_cpp, f"GGML_TYPE_{self.kv.type_k.upper()}"),
            type_v=getattr(llama_cpp, f"GGML_TYPE_{self.kv.type_v.upper()}"),
            flash_attn=self.kv.flash_attn,
            verbose=False,
        )
        self._kept = 0  # tokens of a depth fill every request starts after (fill_context)
        self._vocab = llama_cpp.llama_model_get_vocab(self.llm.model)
        self._n_vocab = llama_cpp.llama_vocab_n_tokens(self._vocab)
        # One single-token batch for the life of the model: the decode loop fills it in place
        # (Llama.eval would rebuild it and clear the KV cache tail on every token).
        self._one = llama_cpp.llama_batch_init(1, 0, 1)

    def tokenize(self, text: str, special: bool = False) -> list[int]:
        return self.llm.tokenize(text.encode(), add_bos=True, special=special)  # BOS only if the model adds one

    def chat_template(self) -> dict[str, str] | None:
        template = self.llm.metadata.get("tokenizer.chat_template")
        if not template:
            return None
        lc = self._llama_cpp

        def text(token: int) -> str:
            return lc.llama_vocab_get_text(self._vocab, token).decode("utf-8", errors="replace") if token >= 0 else ""

        # The start token is left to tokenize(), which adds it where the model does (never twice).
        return {"template": template, "bos_token": "", "eos_token": text(self.llm.token_eos()),
                "source": "the GGUF's tokenizer.chat_template"}

    def detokenize(self, ids: list[int]) -> bytes:
        return self.llm.detokenize(ids)

    def vocab_size(self) -> int:
        return self._n_vocab

    def score_windows(self, tokens: list[int], n_ctx: int, first: int) -> Iterator[tuple[Any, Any]]:
        """One llama_decode per window with logits requested only at positions >= first, as
        llama-perplexity does; the model must be loaded with n_ctx == n_batch == window size.
        A separate context from any timing run: this never feeds speed numbers."""
        import numpy as np

        lc, ctx = self._llama_cpp, self.llm.ctx
        if self.llm.n_ctx() < n_ctx or self.llm.n_batch < n_ctx:
            raise BenchError(f"scoring needs a context and batch of {n_ctx}; load with n_ctx={n_ctx}")
        add_bos = lc.llama_vocab_get_add_bos(self._vocab)
        bos = lc.llama_vocab_bos(self._vocab)
        n_vocab = self.vocab_size()
        batch = lc.llama_batch_init(n_ctx, 0, 1)
        try:
            for start in range(0, len(tokens) - n_ctx + 1, n_ctx):
                window = list(tokens[start:start + n_ctx])
                if add_bos:
                    window[0] = bos  # each chunk starts like a fresh document, as in llama-perplexity
                lc.llama_memory_clear(lc.llama_get_memory(ctx), True)
                batch.n_tokens = n_ctx
                for j, tok in enumerate(window):
                    batch.token[j] = tok
                    batch.pos[j] = j
                    batch.n_seq_id[j] = 1
                    batch.seq_id[j][0] = 0
                    batch.logits[j] = j >= first
                rc = lc.llama_decode(ctx, batch)
                if rc != 0:
                    raise BenchError(f"llama_decode failed while scoring (status {rc})")
                logits = np.ctypeslib.as_array(lc.llama_get_logits(ctx), shape=(n_ctx - first, n_vocab))
                yield np.asarray(window[first + 1:], dtype=np.int64), logits[: n_ctx - first - 1]
        finally:
            lc.llama_batch_free(batch)

    def fill_context(self, tokens: list[int]) -> dict[str, Any]:
        """Decode ``tokens`` into the KV cache once, in batches of n_batch (as llama-bench's depth
        run); later requests keep them and start at position len(tokens)."""
        llm = self.llm
        if len(tokens) >= llm.n_ctx():
            raise BenchError(f"a fill of {len(tokens)} tokens leaves no room in a context of {llm.n_ctx()}")
        llm.reset()
        llm.eval(tokens)
        # eval() reads no logits, so nothing has synchronized: llama.cpp would count the fill's queued
        # tokens in the perf counters at the first request's synchronize, after their reset.
        self._llama_cpp.llama_synchronize(llm.ctx)
        self._kept = len(tokens)
        return {"method": (f"decoded once per cell with llama_decode in batches of {llm.n_batch}; before each "
                           "request the cache is trimmed back to the fill (llama_memory_seq_rm from its end), "
                           "so every request sees the same filled cache")}

    def prompt(self, n_tokens: int) -> list[int]:
        bos = [self.llm.token_bos()] if self.llm.token_bos() >= 0 else []
        return build_prompt(n_tokens, lambda text: self.llm.tokenize(text.encode(), add_bos=False), bos)

    def generate(self, prompt: list[int], max_new_tokens: int, stop_at_eos: bool,
                 stop: list[str] | None = None, reuse_prefix: bool = False,
                 reasoning_open: bool = False) -> GenerationTrace:
        import numpy as np

        llm, clock = self.llm, time.perf_counter
        lc = self._llama_cpp
        is_eog, logits_at, ctx, n_vocab = lc.llama_vocab_is_eog, lc.llama_get_logits_ith, llm.ctx, self._n_vocab
        ids: list[int] = []
        times: list[float] = []
        pieces: list[bytes] = []
        eos = False
        reused = self._common_prefix(prompt) if reuse_prefix and not self._kept else 0
        # A request starts after the depth fill (if any) and the reused prefix: every KV cell from
        # there on is dropped now, before the clock (eval() would drop the same cells again: none left).
        llm.n_tokens = self._kept + reused
        llm._ctx.kv_cache_seq_rm(-1, llm.n_tokens, -1)
        lc.llama_perf_context_reset(ctx)
        t0 = clock()
        llm.eval(prompt[reused:])  # prefill: the prompt tokens not cached, in batches of n_batch
        prefill_end = clock() - t0
        for i in range(max_new_tokens):
            # Greedy: the first maximum of the last position's logits, read in place. llama.cpp's
            # greedy sampler gives the same token but first copies the whole vocabulary into a
            # candidate array: 207 us a token against 17 here on SmolLM2's 49,152 (2% of its decode).
            token = int(np.ctypeslib.as_array(logits_at(ctx, -1), shape=(n_vocab,)).argmax())
            pieces.append(llm.detokenize([token]))
            times.append(clock() - t0)
            ids.append(token)
            if stop_at_eos and is_eog(self._vocab, token):
                eos = True
                break
            if stop and stop_reached(b"".join(pieces).decode("utf-8", errors="replace"), stop, reasoning_open):
                break
            if i + 1 < max_new_tokens:
                self._decode_one(token)
        perf = lc.llama_perf_context(ctx)
        return GenerationTrace(
            prompt_tokens=len(prompt),
            token_ids=ids,
            token_times=times,
            prefill_end=prefill_end,
            stopped_at_eos=eos,
            text=b"".join(pieces).decode("utf-8", errors="replace"),
            text_bytes=sum(len(p) for p in pieces),
            prompt_tokens_reused=reused,
            backend_counters={  # llama_perf_context: batched (prompt) vs single-token decode calls
                "prefill_compute_s": perf.t_p_eval_ms / 1e3, "prefill_compute_tokens": perf.n_p_eval,
                "decode_compute_s": perf.t_eval_ms / 1e3, "decode_compute_tokens": perf.n_eval,
            },
        )

    def _decode_one(self, token: int) -> None:
        """One token at the next position, through the batch kept for it; Llama's own record of the
        sequence (n_tokens, input_ids) follows, so a later prefix match still sees it."""
        llm, b = self.llm, self._one
        pos = llm.n_tokens
        b.n_tokens = 1
        b.token[0], b.pos[0], b.n_seq_id[0], b.logits[0] = token, pos, 1, True
        b.seq_id[0][0] = 0
        rc = self._llama_cpp.llama_decode(llm.ctx, b)
        if rc != 0:
            raise BenchError(f"llama_decode failed at position {pos} (status {rc})")
        llm.input_ids[pos] = token
        llm.n_tokens = pos + 1

    def _common_prefix(self, prompt: list[int]) -> int:
        """Leading tokens of ``prompt`` already in the KV cache, less one: the last prompt token is
        always evaluated so that its logits give the first new token."""
        cached = self.llm.input_ids[: self.llm.n_tokens]
        n = 0
        for a, b in zip(cached, prompt[:-1], strict=False):
            if a != b:
                break
            n += 1
        return n

    def environment(self) -> dict[str, Any]:
        lc = self._llama_cpp
        return {
            "llama_cpp_python": lc.__version__,
            "llama_cpp_system_info": lc.llama_print_system_info().decode(errors="replace").strip(),
            "gpu_offload_supported": bool(lc.llama_supports_gpu_offload()),
            "n_gpu_layers": self.n_gpu_layers,
            "n_batch": self.llm.n_batch,
            "kv_cache": self.kv.describe(),
        }

    def close(self) -> None:
        self._llama_cpp.llama_batch_free(self._one)
        self.llm.close()
