"""What a measured speed means in money and in hardware terms: the roofline share on this host and
$ per 1M output tokens at the tier's price (formulas in bench.hardware.tiers)."""

from __future__ import annotations

from typing import Any

from bench.hardware.profiles import Profile
from bench.hardware.tiers import bytes_read_per_token, roofline_share, usd_per_million_tokens


def efficiency(profile: Profile, gguf: dict[str, Any] | None, model_bytes: int, context_tokens: int,
               summary: dict[str, Any], calibration: dict[str, Any] | None, energy_source: str) -> dict[str, Any]:
    """Roofline share on this host, $ per 1M output tokens at the profile's price, energy, and a
    bandwidth-scaled projection to the real tier, which is labelled and never mixed with measurements."""
    out: dict[str, Any] = {"energy_source": energy_source}
    decode = (summary.get("decode_tps") or {}).get("mean")
    if not decode:
        return out
    if gguf and calibration:
        bpt = bytes_read_per_token(gguf, model_bytes, context_tokens)
        bw = calibration["memory_bandwidth_bytes_per_s"]
        out["roofline"] = {"share": roofline_share(decode, bw, bpt), "bytes_per_token": bpt,
                           "bandwidth_bytes_per_s": bw, "bandwidth_source": "measured on this host (calibration)"}
    price = profile.price
    hourly = price.hourly_usd() if price else None
    if price and hourly:
        out["cost"] = {"usd_per_hour": hourly, "basis": price.basis, "price_source": price.source,
                       "usd_per_1m_output_tokens": usd_per_million_tokens(hourly, decode),
                       "speed_basis": "decode tok/s measured here under the tier's caps"}
    else:
        out["cost"] = {"usd_per_1m_output_tokens": None, "why": f"profile {profile.id} has no price"}
    tier_bw = profile.performance.memory_bandwidth_gbs if profile.performance else None
    if tier_bw and calibration:
        projected = decode * tier_bw * 1e9 / calibration["memory_bandwidth_bytes_per_s"]
        out["projection"] = {
            "label": "PROJECTION, not a measurement: decode tok/s scaled by the tier's memory bandwidth / this host's",
            "decode_tps": projected, "tier_bandwidth_gbs": tier_bw,
            "usd_per_1m_output_tokens": usd_per_million_tokens(hourly, projected) if hourly else None,
        }
    return out
