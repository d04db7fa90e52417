"""What a measured speed means in hardware terms on this host: the roofline share (decode against the
bandwidth measured here). A tier's speed and cost, measured on it or projected onto it, are the
projection package's (bench.projection.tier: tier_speed, task_cost_on_tier)."""

from __future__ import annotations

from typing import Any

from bench.hardware.tiers import bytes_read_per_token, roofline_share


def efficiency(gguf: dict[str, Any] | None, model_bytes: int, context_tokens: int, summary: dict[str, Any],
               calibration: dict[str, Any] | None, energy_source: str, device: str = "cpu",
               n_gpu_layers: int = 0, kv_types: tuple[str, str] = ("f16", "f16")) -> dict[str, Any]:
    """Roofline share (decode against the bandwidth of the memory the weights are read from) and the
    energy source; the tier's speed and cost come from ``tier_speed``. On cuda with every layer
    offloaded that memory is the GPU's (``gpu_memory_bandwidth_bytes_per_s``), with none the host's;
    with part offloaded neither bandwidth bounds decode alone, so no share is given, and why is said.
    ``context_tokens``: the mean decode context (depth + prompt + half the generated tokens);
    ``kv_types``: the K and V cache types."""
    out: dict[str, Any] = {"energy_source": energy_source}
    decode = (summary.get("decode_tps") or {}).get("mean")
    if not (decode and gguf and calibration):
        return out
    bw, source = calibration.get("memory_bandwidth_bytes_per_s"), "measured on this host (calibration)"
    if device == "cuda" and n_gpu_layers != 0:  # no layer offloaded: decode reads the weights from host memory
        blocks = gguf.get("block_count") or 0
        if 0 < n_gpu_layers <= blocks:
            out["roofline_unavailable"] = (f"partial offload ({n_gpu_layers} of {blocks + 1} layers on the GPU): "
                                           "neither the GPU's nor the host's bandwidth bounds decode alone")
            return out
        bw, source = calibration.get("gpu_memory_bandwidth_bytes_per_s"), "measured on this GPU (calibration)"
        if not bw:
            out["roofline_unavailable"] = "no GPU calibration for this cell (bench.hardware.calibration.calibrate_gpu)"
            return out
    if bw:
        bpt = bytes_read_per_token(gguf, model_bytes, context_tokens, *kv_types)
        out["roofline"] = {"share": roofline_share(decode, bw, bpt), "bytes_per_token": bpt,
                           "bandwidth_bytes_per_s": bw, "bandwidth_source": source}
    return out
