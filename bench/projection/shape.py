"""What a model asks of a machine per token: bytes read and FLOPs, from a GGUF header summary (a
result row's ``model.gguf``), from the catalog's facts, or from a published entry (file size and
parameter count only). Pure functions, no I/O.

    B(c)   bytes read to decode one token at context c = W + K x c
           W: the model file's bytes (every weight is read once per token; the same definition for
              rows and published entries, whose files are all the evidence knows)
           K: KV-cache bytes per context position = L x n_kv_heads x (d_k + d_v) x bytes per element
              (2 for an F16 cache, 34/32 for q8_0, 18/32 for q4_0: ggml's block sizes)
    F(c)   FLOPs per token attending to c positions = 2 N + 4 L d c (d = heads x head width)
    A      attention FLOPs per context position = 4 L d (Q.K and softmax.V: 2 d each per layer)
    B_eff(c) = W + (K + gamma A) c: decode's bytes with the attention arithmetic at depth counted as the
           bytes that could stream in its time (gamma = BW_eff / C_att bytes per FLOP, fitted per class on
           published depth series: fit.fit_attn_cost; 0: the bandwidth-only rule)
    prefill of p tokens after a depth D: each attends to D + p/2 positions on average
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

# Bytes per element of ggml's KV-cache types (block bytes / block size).
KV_TYPE_BYTES = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32, "q5_1": 24 / 32, "q5_0": 22 / 32,
                 "q4_1": 20 / 32, "q4_0": 18 / 32, "iq4_nl": 18 / 32}

# Quantization families whose kernels run at alike speed in prefill (int8/int4 dot products with
# the same block layout; K-quants' super-blocks; i-quants' lookup tables; plain floats).
FAMILIES = ("legacy", "kquant", "iquant", "q8", "float")


def quant_family(quant: str | None) -> str:
    """Q4_0/Q4_1/Q5_0/Q5_1/IQ4_NL -> legacy; Q2_K..Q6_K (and their _S/_M/_L) -> kquant; IQ* -> iquant;
    Q8_0 -> q8; F16/BF16/F32 -> float; anything else -> kquant (the most common published type)."""
    q = (quant or "").upper().replace("-", "_").replace(" ", "_")
    if q.startswith(("F16", "BF16", "F32", "FP16", "FP32")):
        return "float"
    if q.startswith("Q8"):
        return "q8"
    if q.startswith(("IQ4_NL", "Q4_0", "Q4_1", "Q5_0", "Q5_1")):
        return "legacy"
    if q.startswith("IQ"):
        return "iquant"
    return "kquant"


@dataclass(frozen=True)
class ModelShape:
    """The model as the projection sees it; None where the source does not say."""

    file_bytes: float
    n_params: float | None
    n_layer: int | None = None
    kv_bytes_per_position: float | None = None  # at an F16 cache (scaled by kv_bytes_per_element / 2)
    attn_width: int | None = None               # heads x head width
    quant: str | None = None
    moe: bool = False
    source: str = "GGUF header"

    @property
    def family(self) -> str:
        return quant_family(self.quant)

    def decode_bytes(self, context: float, kv_type: str = "f16") -> float:
        """B(c) = W + K x c (K unknown: the weights alone, under 2% at short contexts for 3B+ models)."""
        kv = (self.kv_bytes_per_position or 0.0) * KV_TYPE_BYTES.get(kv_type, 2.0) / 2.0
        return self.file_bytes + kv * context

    @property
    def attn_flops_per_position(self) -> float | None:
        """A = 4 L d: the FLOPs one more context position adds to a decoded token; None if unknown."""
        if not self.n_layer or not self.attn_width:
            return None
        return 4.0 * self.n_layer * self.attn_width

    def token_bytes(self, context: float, kv_type: str = "f16", attn_bytes_per_flop: float = 0.0) -> float:
        """B_eff(c) = W + K c + gamma A c (A unknown: the bandwidth-only B(c))."""
        attn = attn_bytes_per_flop * (self.attn_flops_per_position or 0.0)
        return self.decode_bytes(context, kv_type) + attn * context

    def flops_per_token(self, context: float) -> float | None:
        """F(c) = 2 N + 4 L d c; None without a parameter count."""
        if not self.n_params:
            return None
        attn = 4.0 * (self.n_layer or 0) * (self.attn_width or 0) * context
        return 2.0 * self.n_params + attn

    def prefill_flops_per_token(self, prompt_tokens: int, depth: int = 0) -> float | None:
        return self.flops_per_token(depth + prompt_tokens / 2)


def kv_bytes_per_position(g: Mapping[str, Any]) -> float | None:
    """L x n_kv_heads x (d_k + d_v) x 2 bytes (F16); None where the header lacks the head counts
    (never taken as zero: a missing figure is not a small one)."""
    heads = g.get("head_count") or 0
    kv_heads = g.get("head_count_kv") or g.get("head_count")
    layers = g.get("block_count")
    if not layers or not kv_heads or not heads:
        return None
    width = (g.get("embedding_length") or 0) // heads
    k, v = g.get("key_length") or width, g.get("value_length") or width
    return float(layers * kv_heads * (k + v) * 2)


def _dominant_type(g: Mapping[str, Any]) -> str | None:
    tb = g.get("tensor_bytes") or {}
    weights = {t: b for t, b in tb.items() if t not in ("F32",)}
    return max(weights, key=weights.get) if weights else None


def shape_from_gguf(g: Mapping[str, Any], file_bytes: float, params_b: float | None = None,
                    quant: str | None = None) -> ModelShape:
    """From a row's GGUF header summary (bench.models.gguf_info); ``quant`` (the catalog's name for the
    variant) wins over the header's dominant tensor type."""
    heads = g.get("head_count") or 0
    width = g.get("key_length") or ((g.get("embedding_length") or 0) // max(1, heads))
    n_params = g.get("n_params") or (params_b * 1e9 if params_b else None)
    return ModelShape(file_bytes=float(file_bytes), n_params=float(n_params) if n_params else None,
                      n_layer=g.get("block_count"), kv_bytes_per_position=kv_bytes_per_position(g),
                      attn_width=heads * width or None, quant=quant or _dominant_type(g),
                      source="GGUF header")


def shape_from_kv(file_bytes: float, n_params: float | None, n_layer: int, n_head: int, n_head_kv: int,
                  key_length: int, value_length: int | None = None, quant: str | None = None,
                  source: str = "sourced KV shape") -> ModelShape:
    """A model whose layers, heads and head widths come from a named source (a config.json, a GGUF
    header): K = L x n_kv_heads x (d_k + d_v) x 2 bytes, d = heads x d_k."""
    g = {"block_count": n_layer, "head_count": n_head, "head_count_kv": n_head_kv, "key_length": key_length,
         "value_length": value_length or key_length, "embedding_length": n_head * key_length}
    return ModelShape(file_bytes=float(file_bytes), n_params=n_params, n_layer=n_layer,
                      kv_bytes_per_position=kv_bytes_per_position(g), attn_width=n_head * key_length, quant=quant,
                      source=source)


def shape_from_entry(size_bytes: float, params: float | None, quant: str, moe: bool) -> ModelShape:
    """A published entry: its file size and parameter count; attention and KV terms unknown."""
    return ModelShape(file_bytes=size_bytes, n_params=params, quant=quant, moe=moe, source="published entry")
