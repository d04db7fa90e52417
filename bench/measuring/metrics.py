"""Speed metrics as pure functions over raw per-request timestamps (``docs/METRICS.md``).

For one request: t0 = the request is handed to the backend; t_i = the i-th generated token is
available to the caller (i = 1..n); p = prompt tokens; t_pf = end of the prefill pass (None where
the backend cannot separate it).

    TTFT         = t_1 - t0
    prefill tok/s= p / (t_pf - t0)        (fallback p / TTFT, flagged, when t_pf is None)
    decode tok/s = (n - 1) / (t_n - t_1)  (the first token belongs to prefill)
    TPOT         = (t_n - t_1) / (n - 1)
    ITL          = [t_{i+1} - t_i], pooled over requests for percentiles
    e2e latency  = t_n - t0

Where a backend has its own timers we also report its rates (``backend_*_tps``): they count only
time inside the backend's forward calls, excluding sampling, detokenization and Python, like
llama-bench. The caller-side figures above are the headline numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

DEFINITIONS = (
    "docs/METRICS.md: TTFT=t1-t0; prefill tok/s=p/(prefill pass); decode tok/s=(n-1)/(tn-t1); "
    "TPOT=(tn-t1)/(n-1); ITL=t(i+1)-t(i) pooled, linear-interpolated percentiles; e2e=tn-t0; "
    "std is the sample standard deviation (n-1)"
)


@dataclass(frozen=True)
class Timeline:
    """Raw timestamps of one request, in seconds relative to t0 (so t0 = 0)."""

    prompt_tokens: int
    token_times: Sequence[float]  # t_1..t_n
    prefill_end: float | None = None


def ttft(tl: Timeline) -> float | None:
    return tl.token_times[0] if tl.token_times else None


def prefill_tps(tl: Timeline) -> tuple[float | None, bool]:
    """(tok/s, separated): separated is False when the fallback p / TTFT was used."""
    if tl.prefill_end is not None and tl.prefill_end > 0:
        return tl.prompt_tokens / tl.prefill_end, True
    first = ttft(tl)
    return (tl.prompt_tokens / first if first else None), False


def decode_tps(tl: Timeline) -> float | None:
    n = len(tl.token_times)
    if n < 2:
        return None
    span = tl.token_times[-1] - tl.token_times[0]
    return (n - 1) / span if span > 0 else None


def tpot(tl: Timeline) -> float | None:
    n = len(tl.token_times)
    return (tl.token_times[-1] - tl.token_times[0]) / (n - 1) if n >= 2 else None


def itl(tl: Timeline) -> list[float]:
    t = tl.token_times
    return [t[i + 1] - t[i] for i in range(len(t) - 1)]


def e2e(tl: Timeline) -> float | None:
    return tl.token_times[-1] if tl.token_times else None


def counter_rates(counters: dict[str, float] | None) -> dict[str, float | None]:
    """Token rates from a backend's own timers: tokens / seconds spent in its forward calls."""
    if not counters:
        return {}

    def rate(tokens: str, seconds: str) -> float | None:
        t, n = counters.get(seconds), counters.get(tokens)
        return n / t if t and n else None

    return {"backend_prefill_tps": rate("prefill_compute_tokens", "prefill_compute_s"),
            "backend_decode_tps": rate("decode_compute_tokens", "decode_compute_s")}


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default 'linear' method)."""
    if not values:
        raise ValueError("percentile of no values")
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


@dataclass(frozen=True)
class Stats:
    mean: float
    std: float | None  # sample standard deviation; None for a single value
    min: float
    max: float
    n: int

    def to_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


def stats(values: Sequence[float | None]) -> Stats | None:
    xs = [v for v in values if v is not None]
    if not xs:
        return None
    mean = sum(xs) / len(xs)
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else None
    return Stats(mean=mean, std=std, min=min(xs), max=max(xs), n=len(xs))


def itl_percentiles(gaps: Sequence[float]) -> dict[str, float] | None:
    if not gaps:
        return None
    return {"p50": percentile(gaps, 50), "p90": percentile(gaps, 90), "p99": percentile(gaps, 99),
            "max": max(gaps), "mean": sum(gaps) / len(gaps), "n": len(gaps)}


def summarize(timelines: Sequence[Timeline]) -> dict[str, dict | None]:
    """Per-metric statistics over the counted repetitions, and pooled ITL percentiles."""
    pf = [prefill_tps(t) for t in timelines]
    return {
        "ttft_s": _d(stats([ttft(t) for t in timelines])),
        "prefill_tps": _d(stats([v for v, _ in pf])),
        "decode_tps": _d(stats([decode_tps(t) for t in timelines])),
        "tpot_s": _d(stats([tpot(t) for t in timelines])),
        "e2e_s": _d(stats([e2e(t) for t in timelines])),
        "itl_s": itl_percentiles([g for t in timelines for g in itl(t)]),
        "generated_tokens": _d(stats([float(len(t.token_times)) for t in timelines])),
        "prefill_separated": {"value": all(sep for _, sep in pf)} if pf else None,
    }


def _d(s: Stats | None) -> dict | None:
    return s.to_dict() if s is not None else None
