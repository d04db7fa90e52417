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
        interval, interval_why = cost_interval(hourly, decode.low, decode.high, decode.inputs.get("interval"))
        cost = {**priced, "usd_per_1m_output_tokens": usd_per_million_tokens(hourly, decode.value),
                "usd_per_1m_output_tokens_interval": interval,
                "speed_basis": f"decode tok/s {projection.basis} (PROJECTION, not a measurement)"}
        if interval_why:
            cost["interval_why"] = interval_why
    return {"speed_basis": projection.basis, "projection": projection.to_dict(), "cost": cost}


def bounded(value: float) -> bool:
    """A finite, positive end of an interval: 0 and infinity are what an unbounded interval (no
    validation band) carries, and neither is a figure."""
    return 0 < value < float("inf")


def cost_interval(usd_per_hour: float, low_tps: float, high_tps: float,
                  how: str | None = None) -> tuple[list[float | None], str | None]:
    """[cheap end, dear end] of $ per 1M output tokens from the decode interval's fast (high) and
    slow (low) ends; an end the interval does not bound is None, and the second value says why."""
    ends = [usd_per_million_tokens(usd_per_hour, high_tps) if bounded(high_tps) else None,
            usd_per_million_tokens(usd_per_hour, low_tps) if bounded(low_tps) else None]
    why = None if None not in ends else f"the decode projection's interval is unbounded ({how or 'no band'})"
    return ends, why


def task_seconds(records: list[Mapping[str, Any]], prefill_tps: float, decode_tps: float) -> float:
    """Time a task's items take at these speeds, by the item's own token counts:
    sum_i (p_i - r_i) / prefill_tps + g_i / decode_tps, where p_i is item i's prompt tokens, r_i those
    of them served from the KV cache (the shared few-shot prefix) and g_i its generated tokens."""
    return sum((r["prompt_tokens"] - r.get("prompt_tokens_reused", 0)) / prefill_tps
               + r["generated_tokens"] / decode_tps for r in records)


def usd_per_correct(usd_per_hour: float, seconds: float, correct: int) -> float | None:
    """$ per correct answer = $/hour x seconds / 3600 / correct answers (None with none correct)."""
    return usd_per_hour * seconds / 3600 / correct if correct else None


def task_cost_on_tier(row: Mapping[str, Any], profile: Profile) -> dict[str, Any]:
    """A task pass measured on this host carried onto ``profile``: its time and $ per correct answer
    there, a PROJECTION with its interval. The tier's time is task_seconds at the tier's projected
    speeds times the median over items of (item's measured seconds / task_seconds of that item at
    the host's measured speeds, the row's timed pass): what the formula leaves out (deeper context
    than the timed pass, stop checks) is carried at the host's measured proportion, and the median
    keeps a few items slowed by something else on the host from scaling every tier.
    ``{"tier", "why"}`` where it cannot be projected."""
    import statistics

    from bench.hardware.perfmodel import project_row

    task, summary = row.get("task") or {}, row.get("summary") or {}
    records, correct = task.get("records") or [], task.get("correct") or 0
    host_prefill = (summary.get("prefill_tps") or {}).get("mean")
    host_decode = (summary.get("decode_tps") or {}).get("mean")
    if task.get("status") != "ok" or not records or not host_prefill or not host_decode:
        return {"tier": profile.id, "why": "no task pass and timed pass measured together in this row"}
    projection = project_row(row, profile, efficiency="published")
    if projection.decode_tps is None or projection.prefill_tps is None:
        why = projection.unmeasured.get("decode_tps") or projection.unmeasured.get("prefill_tps")
        return {"tier": profile.id, "why": f"no projection onto {profile.id}: {why}"}
    scale = statistics.median(r["seconds"] / task_seconds([r], host_prefill, host_decode) for r in records)
    d, p = projection.decode_tps, projection.prefill_tps
    seconds = scale * task_seconds(records, p.value, d.value)
    # an end the interval does not bound (no validation band) is unknown: None, never 0 s
    slow = scale * task_seconds(records, p.low, d.low) if bounded(p.low) and bounded(d.low) else None
    fast = scale * task_seconds(records, p.high, d.high) if bounded(p.high) and bounded(d.high) else None
    out: dict[str, Any] = {"tier": profile.id, "basis": f"{projection.basis} (PROJECTION, not a measurement)",
                           "items": len(records), "seconds": seconds, "seconds_interval": [fast, slow]}
    if fast is None or slow is None:
        out["interval_why"] = (f"the projection's interval is unbounded "
                               f"({d.inputs.get('interval') or p.inputs.get('interval') or 'no band'})")
    hourly = profile.price.hourly_usd() if profile.price else None
    if hourly:
        out["usd_per_hour"] = hourly
        out["usd_per_correct"] = usd_per_correct(hourly, seconds, correct)
        out["usd_per_correct_interval"] = [usd_per_correct(hourly, fast, correct) if fast is not None else None,
                                           usd_per_correct(hourly, slow, correct) if slow is not None else None]
    else:
        out["why_no_usd"] = f"profile {profile.id} has no price"
    return out
