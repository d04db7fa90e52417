"""Hardware tiers as arithmetic: memory a model needs, whether it fits, GPU layers that fit a
VRAM budget, the memory-bandwidth roofline, and cost per token. Pure functions, no I/O.

Memory prediction for a llama.cpp GGUF run (checked against measured peaks; see tests):
    weights  = file size (memory-mapped; decoding reads every page)
    kv_cache = n_ctx_padded x n_layer x n_head_kv x (head_dim_k x b(type_k) + head_dim_v x b(type_v))
               b = bytes per element of the cache type: f16 2, q8_0 34/32, q4_0 18/32 (KV_CACHE_TYPES).
               llama.cpp clears the whole cache buffer at load, so all of n_ctx is resident
    compute  = 4 b (n_ff + 4 n_embd) + attention
               b = min(n_batch, max(p, depth)): the largest batch (the prompt, or a batch of the fill)
               s = max over the batches of (batch tokens x KV cells they attend to), a batch ending at
                   position e attending to pad(e) cells (the fill and the prompt decoded n_batch at a time)
               attention without flash attention = s x (n_head x (4 + w) + 4): the f32 scores KQ, their
                   f16 copy in the CPU backend's work buffer for the KQ x V product (w = 2; 0 for an f32
                   V cache, which needs no copy), and the f32 mask
               attention with flash attention = s x 2: the f16 mask (the scores are computed in tiles)
               (llama.cpp reserves its compute buffer for n_ctx, but only the pages a batch touches count)
    runtime  = RUNTIME_BYTES (Python, llama-cpp-python, numpy, thread stacks)
    repack   = bytes of the tensor types llama.cpp's CPU backend repacks into an interleaved copy
               at load (Q4_0, Q4_K, IQ4_NL with AVX2; Q4_0, IQ4_NL on ARM): the mapped original stays
               resident too, so those weights count twice (measured here: a Q4_0 file peaks at
               file + its Q4_0 bytes). token_embd itself is never repacked (it is read by get_rows,
               which the repacked buffer type does not run): with a separate output tensor its bytes
               are left out (Qwen2.5-Coder-1.5B Q4_K_M: a Q4_K token_embd of 125 MiB); a tied output
               head is a duplicate of it, loaded (and repacked) as the output layer, so it stays in
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

GiB = 2**30
MiB = 2**20
RUNTIME_BYTES = 64 * MiB  # measured here: 41 MiB after imports, plus allocator and thread slack
CTX_PAD = 256  # llama.cpp pads the KV cache size to a multiple of 256

# KV cache types llama.cpp accepts (llama-bench -ctk/-ctv, llama-cpp-python's type_k/type_v) as
# (bytes per block, elements per block), from the block layouts asserted in ggml/src/ggml-common.h
# (llama.cpp as vendored in llama-cpp-python 0.3.36): q8_0 = one f16 scale + 32 int8; q4_0 = one
# f16 scale + 16 bytes of nibbles; q4_1 and q5_1 add an f16 minimum; q5_0/q5_1 4 bytes of high bits.
KV_CACHE_TYPES: dict[str, tuple[int, int]] = {
    "f32": (4, 1), "f16": (2, 1), "bf16": (2, 1), "q8_0": (34, 32), "q5_1": (24, 32), "q5_0": (22, 32),
    "q4_1": (20, 32), "q4_0": (18, 32), "iq4_nl": (18, 32),
}


def cpu_repacked_types() -> frozenset[str]:
    """Tensor types llama.cpp repacks on this CPU (ggml-cpu's "extra buffer" repack paths)."""
    import platform

    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64"):
        try:
            flags = Path("/proc/cpuinfo").read_text()
        except OSError:
            return frozenset()
        return frozenset({"Q4_0", "Q4_K", "IQ4_NL"}) if " avx2" in flags else frozenset()
    if machine in ("aarch64", "arm64"):
        return frozenset({"Q4_0", "IQ4_NL"})
    return frozenset()


@dataclass(frozen=True)
class MemoryPrediction:
    weights_bytes: int
    kv_cache_bytes: int
    compute_bytes: int
    runtime_bytes: int
    repack_bytes: int = 0

    @property
    def total_bytes(self) -> int:
        return (self.weights_bytes + self.kv_cache_bytes + self.compute_bytes + self.runtime_bytes
                + self.repack_bytes)

    def to_dict(self) -> dict[str, int]:
        return {**asdict(self), "total_bytes": self.total_bytes}


def kv_heads(g: dict[str, Any]) -> int:
    """KV heads per layer: ``head_count_kv``, else ``head_count`` (llama.cpp's own default when the
    header has no head_count_kv: plain multi-head attention), else 0 (no attention heads in the header:
    an attention-free architecture keeps no KV cache). One rule for the memory prediction and the
    bytes read per token."""
    return g.get("head_count_kv") or g.get("head_count") or 0


def _head_dims(g: dict[str, Any]) -> tuple[int, int]:
    head_dim = (g.get("embedding_length") or 0) // max(1, g.get("head_count") or 1)
    return g.get("key_length") or head_dim, g.get("value_length") or head_dim


def _pad(n: int) -> int:
    return -(-n // CTX_PAD) * CTX_PAD


def _row_bytes(type_name: str, elements: int) -> int:
    """Bytes of one cache row of ``elements`` values (ggml_row_size)."""
    try:
        block, per = KV_CACHE_TYPES[type_name]
    except KeyError:
        raise ValueError(f"unknown KV cache type {type_name!r}; known: {', '.join(KV_CACHE_TYPES)}") from None
    return -(-elements // per) * block


def kv_bytes_per_token(g: dict[str, Any], type_k: str = "f16", type_v: str = "f16") -> int:
    """Bytes one token of context occupies in the KV cache, all layers:
    n_layer x (row(type_k, n_head_kv x head_dim_k) + row(type_v, n_head_kv x head_dim_v)),
    row(t, n) = ceil(n / block) x block bytes (f16: 2n; q8_0: 34 per 32 values; q4_0: 18 per 32)."""
    k, v = _head_dims(g)
    n_kv = kv_heads(g)
    return (g.get("block_count") or 0) * (_row_bytes(type_k, n_kv * k) + _row_bytes(type_v, n_kv * v))


def kv_cache_bytes(g: dict[str, Any], n_ctx: int, layers: int | None = None, type_k: str = "f16",
                   type_v: str = "f16") -> int:
    """The KV cache llama.cpp allocates for ``n_ctx`` (padded to 256):
    n_ctx_padded x kv_bytes_per_token (for ``layers`` layers where given, else all)."""
    per_token = kv_bytes_per_token(g, type_k, type_v)
    n_layer = g.get("block_count") or 0
    if layers is not None:
        per_token = per_token // n_layer * layers if n_layer else 0
    return _pad(n_ctx) * per_token


def kv_bytes_read_per_token(g: dict[str, Any], depth: int, type_k: str = "f16", type_v: str = "f16") -> int:
    """KV cache bytes read to decode one token with ``depth`` tokens already in the cache: every
    layer's K and V rows of every cached position,
        depth x n_layer x (row(type_k, n_head_kv x head_dim_k) + row(type_v, n_head_kv x head_dim_v))
    (kv_bytes_per_token; f16 2 bytes a value, q8_0 34/32, q4_0 18/32). llama.cpp's attention reads
    the used cells padded up to 256, so it reads up to 255 positions more than this; the formula
    counts the positions that hold context."""
    return depth * kv_bytes_per_token(g, type_k, type_v)


def predict_memory(g: dict[str, Any], file_bytes: int, n_ctx: int, prompt_tokens: int,
                   n_batch: int = 512, repacked_types: frozenset[str] = frozenset(), depth: int = 0,
                   type_k: str = "f16", type_v: str = "f16", flash_attn: bool = False) -> MemoryPrediction:
    """Host memory of a CPU llama.cpp run of a GGUF with header summary ``g`` (see gguf_info), its
    KV cache filled to ``depth`` before the prompt (formulas in the module docstring)."""
    p = prompt_tokens
    n_embd, n_ff, n_head = g.get("embedding_length") or 0, g.get("feed_forward_length") or 0, g.get("head_count") or 0
    batch = min(n_batch, max(p, depth), n_ctx)
    s = largest_attention_block(depth, p, n_batch)
    w = 0 if type_v == "f32" else 2
    attention = 2 * s if flash_attn else s * (n_head * (4 + w) + 4)
    compute = 4 * batch * (n_ff + 4 * n_embd) + attention
    repack = sum(b for t, b in (g.get("tensor_bytes") or {}).items() if t in repacked_types)
    if g.get("has_output_tensor") and g.get("token_embd_type") in repacked_types:
        repack -= g.get("token_embd_bytes") or 0
    return MemoryPrediction(weights_bytes=file_bytes, kv_cache_bytes=kv_cache_bytes(g, n_ctx, type_k=type_k,
                                                                                     type_v=type_v),
                            compute_bytes=compute, runtime_bytes=RUNTIME_BYTES, repack_bytes=repack)


def largest_attention_block(depth: int, prompt_tokens: int, n_batch: int = 512) -> int:
    """max over the batches decoded (the fill of ``depth`` tokens, then the prompt, n_batch at a time)
    of batch tokens x pad(position the batch ends at): the largest (tokens x KV cells) block of
    attention scores llama.cpp computes."""
    best, start = 0, 0
    for total in (depth, depth + prompt_tokens):
        while start < total:
            end = min(start + n_batch, total)
            best = max(best, (end - start) * _pad(end))
            start = end
    return best


def largest_context_that_fits(g: dict[str, Any], file_bytes: int, budget_bytes: int, prompt_tokens: int = 128,
                              type_k: str = "f16", type_v: str = "f16", flash_attn: bool = False,
                              repacked_types: frozenset[str] = frozenset()) -> int:
    """The largest context N (a multiple of 256, at most the model's trained context) whose run is
    predicted to fit ``budget_bytes``: predict_memory(n_ctx=N, depth=N - p, prompt p).total <= budget,
    i.e. the cache full to N with the cache types given. 0 when not even 256 tokens fit. A PREDICTION
    (the formula above, checked against measured peaks in docs/long-context.md), not a measurement."""
    def fits(n: int) -> bool:
        pred = predict_memory(g, file_bytes, n, min(prompt_tokens, n), depth=max(0, n - prompt_tokens),
                              repacked_types=repacked_types, type_k=type_k, type_v=type_v, flash_attn=flash_attn)
        return pred.total_bytes <= budget_bytes

    top = (g.get("context_length") or 1 << 20) // CTX_PAD
    lo, hi = 0, top  # in units of CTX_PAD: fits(lo * 256) holds (or lo == 0), fits above hi does not
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid * CTX_PAD):
            lo = mid
        else:
            hi = mid - 1
    return lo * CTX_PAD


def ram_budget_bytes(ram_gb: float, reserve_gb: float) -> int:
    return int((ram_gb - reserve_gb) * GiB)


def fit_verdict(pred: MemoryPrediction, budget_bytes: int) -> tuple[bool, str]:
    """(clearly_does_not_fit, why). "Clearly" means weights + KV cache alone exceed the budget:
    the run could not start. A total above the budget is left to the run, which is capped."""
    floor = pred.weights_bytes + pred.kv_cache_bytes
    if floor > budget_bytes:
        return True, (f"weights + KV cache need {floor / GiB:.2f} GiB, the tier has {budget_bytes / GiB:.2f} GiB "
                      "after its reserve")
    return False, f"predicted {pred.total_bytes / GiB:.2f} GiB of {budget_bytes / GiB:.2f} GiB available"


def gpu_head_bytes(g: dict[str, Any]) -> int:
    """Bytes of the output head on the GPU: ``output.weight``, or, where the head is tied, a copy of
    ``token_embd`` (llama.cpp loads the tied matrix a second time as the output layer's tensor,
    ``TENSOR_DUPLICATED`` in llama-model-loader.cpp). A summary read before ``output_bytes`` was
    recorded falls back to ``token_embd_bytes`` (the same shape)."""
    if g.get("has_output_tensor"):
        return g.get("output_bytes") or g.get("token_embd_bytes", 0)
    return g.get("token_embd_bytes", 0)


def gpu_offload_bytes(g: dict[str, Any], n_ctx: int, n_gpu_layers: int, type_k: str = "f16",
                      type_v: str = "f16") -> int:
    """Weights and KV cache llama.cpp puts on the GPU for ``n_gpu_layers`` (the prediction a partial
    offload is checked against). llama.cpp numbers the output head as layer ``n_layer`` and offloads
    from the top (llama-model.cpp, load_tensors: ``i_gpu_start = n_layer + 1 - n_gpu_layers``), so:

        0 layers:            0
        k layers, 1 <= k:    head + sum over the last k - 1 blocks of (block weights + its KV cache)
        negative, or k > n:  all n blocks and the head (k = n + 1)

    The input embedding stays on the CPU; compute buffers and the CUDA context are not counted."""
    layers = g.get("layer_bytes") or []
    n = len(layers)
    k = n + 1 if n_gpu_layers < 0 else min(n_gpu_layers, n + 1)
    if k <= 0:
        return 0
    per_layer_kv = kv_cache_bytes(g, n_ctx, layers=1, type_k=type_k, type_v=type_v)
    blocks = layers[n - (k - 1):] if k > 1 else []
    return gpu_head_bytes(g) + sum(blocks) + len(blocks) * per_layer_kv


def gpu_layers_for_budget(g: dict[str, Any], n_ctx: int, vram_budget_bytes: int, type_k: str = "f16",
                          type_v: str = "f16") -> int:
    """The largest n_gpu_layers whose weights and KV cache on the GPU (``gpu_offload_bytes``) fit the
    VRAM budget (partial offload: how an 8 GB card runs a 7B model). The head goes first, so a budget
    below it offloads nothing; offloading everything is block_count + 1."""
    n = len(g.get("layer_bytes") or [])
    best = 0
    for k in range(1, n + 2):
        if gpu_offload_bytes(g, n_ctx, k, type_k, type_v) > vram_budget_bytes:
            break
        best = k
    return best


def bytes_read_per_token(g: dict[str, Any], file_bytes: int, context_tokens: int, type_k: str = "f16",
                         type_v: str = "f16") -> int:
    """Weights read to decode one token plus the KV cache read at that context length
    (kv_bytes_read_per_token). The embedding lookup reads one row; only a tied output head reads
    token_embd in full."""
    weights = file_bytes - (g.get("token_embd_bytes", 0) if g.get("has_output_tensor") else 0)
    return weights + kv_bytes_read_per_token(g, context_tokens, type_k, type_v)


def roofline_share(decode_tps: float, bandwidth_bytes_per_s: float, bytes_per_token: int) -> float:
    """decode tok/s / (bandwidth / bytes per token): 1.0 is the memory-bandwidth bound."""
    return decode_tps / (bandwidth_bytes_per_s / bytes_per_token)


def usd_per_million_tokens(usd_per_hour: float, tokens_per_s: float) -> float:
    """$ per 1M tokens = price per hour / (tok/s x 3600) x 1e6 (the one place this is written;
    the price per hour is ``Price.hourly_usd``)."""
    return usd_per_hour / (tokens_per_s * 3600) * 1e6


def usd_per_correct(usd_per_hour: float, seconds: float, correct: int) -> float | None:
    """$ per correct answer = $/hour x seconds / 3600 / correct answers (None with none correct)."""
    return usd_per_hour * seconds / 3600 / correct if correct else None
