"""What a measured speed means in money and in hardware terms: the roofline share on this host, and
the tier's speed and $ per 1M output tokens on the basis the row can honestly claim (formulas in
bench.hardware.tiers and bench.hardware.perfmodel).

A tier's speed has one of three bases (``tier.speed_basis`` in a row):

- ``measured``: the cell ran on the tier itself (``auto``, or a fleet node that is the tier);
- ``projected from HOST``: the tier was emulated here (its threads and RAM capped), so the speed
  measured is this host's, not the tier's; the tier's speed is the performance model's projection
  of this row onto the tier's sourced figures, with its interval, and cost follows from it (decode
  with the efficiency published machines reach, prefill with this host's: the mode that came close
  to the validation's goal, README "Validation against real machines");
- ``caps only``: emulated here, and the tier has no figures to project from (or the row has no
  GGUF header to project with): fit is measured under the caps, speed and cost on the tier are not.
"""

from __future__ import annotations

from typing import Any, Mapping

from bench.hardware.profiles import Profile
from bench.hardware.tiers import bytes_read_per_token, roofline_share, usd_per_million_tokens

MEASURED = "measured"
CAPS_ONLY = "caps only"


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


def tier_speed(row: Mapping[str, Any], profile: Profile, measured_on_tier: bool) -> dict[str, Any]:
    """{speed_basis, projection, cost} for the tier ``row`` speaks for. ``row`` is a result row as
    stored (a dict) whose timed pass is done; ``measured_on_tier``: it ran on the tier itself."""
    price = profile.price
    hourly = price.hourly_usd() if price else None
    priced = {"usd_per_hour": hourly, "basis": price.basis, "price_source": price.source} if price and hourly else None
    if measured_on_tier:
        decode = ((row.get("summary") or {}).get("decode_tps") or {}).get("mean")
        if priced is None:
            return {"speed_basis": MEASURED, "projection": None,
                    "cost": {"usd_per_1m_output_tokens": None, "why": f"profile {profile.id} has no price"}}
        usd = usd_per_million_tokens(hourly, decode) if decode else None
        return {"speed_basis": MEASURED, "projection": None,
                "cost": {**priced, "usd_per_1m_output_tokens": usd, "speed_basis": "decode tok/s measured on the tier"}}
    from bench.hardware.perfmodel import project_row

    if profile.performance is None:
        why = (f"tier {profile.id} has no performance figures to project this host's speed onto; this host's "
               "speed under the tier's caps is not the tier's")
        return {"speed_basis": CAPS_ONLY, "projection": None, "cost": {"usd_per_1m_output_tokens": None, "why": why}}
    # This host's own decode efficiency does not carry to other machines (a 2-vCPU VM is core-bound:
    # median error -67% on the validation set); the published machines' median efficiency does (17.6%).
    projection = project_row(row, profile, efficiency="published")
    decode = projection.decode_tps
    if decode is None:
        why = (f"no projection of decode onto {profile.id}: {projection.unmeasured.get('decode_tps')}; this "
               "host's speed under the tier's caps is not the tier's")
        return {"speed_basis": CAPS_ONLY, "projection": projection.to_dict(),
                "cost": {"usd_per_1m_output_tokens": None, "why": why}}
    if priced is None:
        cost: dict[str, Any] = {"usd_per_1m_output_tokens": None, "why": f"profile {profile.id} has no price"}
    else:
        # The interval's fast end is its cheap end.
        cost = {**priced, "usd_per_1m_output_tokens": usd_per_million_tokens(hourly, decode.value),
                "usd_per_1m_output_tokens_interval": [usd_per_million_tokens(hourly, decode.high)
                                                      if decode.high != float("inf") else 0.0,
                                                      usd_per_million_tokens(hourly, decode.low)
                                                      if decode.low > 0 else None],
                "speed_basis": f"decode tok/s {projection.basis} (PROJECTION, not a measurement)"}
    return {"speed_basis": projection.basis, "projection": projection.to_dict(), "cost": cost}
