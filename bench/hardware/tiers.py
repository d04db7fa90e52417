"""Hardware tiers as arithmetic: memory a model needs, whether it fits, GPU layers that fit a
VRAM budget, the memory-bandwidth roofline, and cost per token. Pure functions, no I/O.

Memory prediction for a llama.cpp GGUF run (checked against measured peaks; see tests):
    weights  = file size (memory-mapped; decoding reads every page)
    kv_cache = n_ctx_padded x n_layer x n_head_kv x (head_dim_k + head_dim_v) x 2 bytes (F16 cache)
    compute  = 4 bytes x b x (n_ff + 4 n_embd + n_head x p_padded), b = min(n_batch, p)
               (activations and attention scores of the largest batch: the prompt. llama.cpp
               reserves its compute buffer for n_ctx, but only the pages a batch touches count)
    runtime  = RUNTIME_BYTES (Python, llama-cpp-python, numpy, thread stacks)
    repack   = bytes of the tensor types llama.cpp's CPU backend repacks into an interleaved copy
               at load (Q4_0, Q4_K, IQ4_NL with AVX2; Q4_0, IQ4_NL on ARM): the mapped original stays
               resident too, so those weights count twice (measured here: a Q4_0 file peaks at
               file + its Q4_0 bytes)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

GiB = 2**30
MiB = 2**20
RUNTIME_BYTES = 64 * MiB  # measured here: 41 MiB after imports, plus allocator and thread slack
CTX_PAD = 256  # llama.cpp pads the KV cache size to a multiple of 256


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


def kv_cache_bytes(g: dict[str, Any], n_ctx: int, layers: int | None = None) -> int:
    k, v = _head_dims(g)
    padded = -(-n_ctx // CTX_PAD) * CTX_PAD
    n_layer = g.get("block_count") or 0 if layers is None else layers
    return padded * n_layer * kv_heads(g) * (k + v) * 2


def predict_memory(g: dict[str, Any], file_bytes: int, n_ctx: int, prompt_tokens: int,
                   n_batch: int = 512, repacked_types: frozenset[str] = frozenset()) -> MemoryPrediction:
    """Host memory of a CPU llama.cpp run of a GGUF with header summary ``g`` (see gguf_info)."""
    padded = -(-prompt_tokens // CTX_PAD) * CTX_PAD
    batch = min(n_batch, prompt_tokens, n_ctx)
    n_embd, n_ff, n_head = g.get("embedding_length") or 0, g.get("feed_forward_length") or 0, g.get("head_count") or 0
    compute = 4 * batch * (n_ff + 4 * n_embd + n_head * padded)
    repack = sum(b for t, b in (g.get("tensor_bytes") or {}).items() if t in repacked_types)
    return MemoryPrediction(weights_bytes=file_bytes, kv_cache_bytes=kv_cache_bytes(g, n_ctx),
                            compute_bytes=compute, runtime_bytes=RUNTIME_BYTES, repack_bytes=repack)


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


def gpu_layers_for_budget(g: dict[str, Any], n_ctx: int, vram_budget_bytes: int) -> int:
    """The largest n_gpu_layers whose layer weights and KV cache fit the VRAM budget (partial
    offload: how an 8 GB card runs a 7B model). The output head counts as one more layer in
    llama.cpp's numbering, so offloading everything is block_count + 1."""
    layers = g.get("layer_bytes") or []
    used, n = 0, 0
    per_layer_kv = kv_cache_bytes(g, n_ctx, layers=1)
    for size in layers:
        if used + size + per_layer_kv > vram_budget_bytes:
            return n
        used += size + per_layer_kv
        n += 1
    head = g.get("token_embd_bytes", 0) if not g.get("has_output_tensor") else 0
    return n + 1 if used + head <= vram_budget_bytes else n


def bytes_read_per_token(g: dict[str, Any], file_bytes: int, context_tokens: int) -> int:
    """Weights read to decode one token plus the KV cache read at that context length. The
    embedding lookup reads one row; only a tied output head reads token_embd in full."""
    weights = file_bytes - (g.get("token_embd_bytes", 0) if g.get("has_output_tensor") else 0)
    k, v = _head_dims(g)
    kv = context_tokens * (g.get("block_count") or 0) * kv_heads(g) * (k + v) * 2
    return weights + kv


def roofline_share(decode_tps: float, bandwidth_bytes_per_s: float, bytes_per_token: int) -> float:
    """decode tok/s / (bandwidth / bytes per token): 1.0 is the memory-bandwidth bound."""
    return decode_tps / (bandwidth_bytes_per_s / bytes_per_token)


def usd_per_million_tokens(usd_per_hour: float, tokens_per_s: float) -> float:
    """price_per_hour / (tok/s x 3600) x 1e6."""
    return usd_per_hour / (tokens_per_s * 3600) * 1e6
