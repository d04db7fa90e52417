"""What a measured speed means in hardware terms on this host: the roofline share (decode against the
bandwidth measured here). A tier's speed and cost, measured on it or projected onto it, are the
projection package's (bench.projection.tier: tier_speed, task_cost_on_tier)."""

from __future__ import annotations

from typing import Any

from bench.hardware.tiers import bytes_read_per_token, roofline_share


def efficiency(gguf: dict[str, Any] | None, model_bytes: int, context_tokens: int, summary: dict[str, Any],
               calibration: dict[str, Any] | None, energy_source: str) -> dict[str, Any]:
    """Roofline share on this host (decode against the bandwidth measured here) and the energy
    source; the tier's speed and cost come from ``tier_speed``."""
    out: dict[str, Any] = {"energy_source": energy_source}
    decode = (summary.get("decode_tps") or {}).get("mean")
    if decode and gguf and calibration:
        bpt = bytes_read_per_token(gguf, model_bytes, context_tokens)
        bw = calibration["memory_bandwidth_bytes_per_s"]
        out["roofline"] = {"share": roofline_share(decode, bw, bpt), "bytes_per_token": bpt,
                           "bandwidth_bytes_per_s": bw, "bandwidth_source": "measured on this host (calibration)"}
    return out
