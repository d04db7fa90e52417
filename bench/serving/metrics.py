"""Serving metrics as pure functions over per-request traces (docs/METRICS.md, "Serving").

One trace per request, times in seconds from the load point's start, all taken on the client:

    s      = scheduled: when the load asked for the request (its Poisson arrival, or the moment a
             closed-loop worker became free); latency counts from here (no coordinated omission)
    u      = sent: when the client began sending it (connect + write)
    w      = the part of u - s spent waiting for a free in-flight slot (a --max-in-flight cap)
    c_1..c_m = arrival stamps of the m streamed chunks that carried output (stamped when the bytes
             were read, before parsing), k_j = tokens carried by chunk j (from the server's token
             counter or token ids; 1 each when the server gives neither, see below)
    n      = generated tokens: the server's usage.completion_tokens, else sum(k_j)

    queue time   = u - s                  (client-side: how late the request left)
    send lag     = u - s - w              (the generator's own lateness, the slot wait taken out)
    TTFT         = c_1 - s                (also c_1 - u, "TTFT from send", reported beside it)
    e2e latency  = c_m - s
    output rate  = n / (c_m - s)          (per request: what one user received per second)
    TPOT         = (c_m - c_1) / (n - k_1)             (= (e2e - TTFT)/(n - 1) when k_1 = 1)
    ITL samples  = for j = 2..m, k_j samples of (c_j - c_{j-1}) / k_j
                   (a chunk of k tokens after a gap g is k tokens each g/k apart; their sum is
                   c_m - c_1 and their count n - k_1, so mean ITL = TPOT per request)

When the server reports neither a per-chunk token counter nor token ids, k_j = 1 is assumed;
if then n != m the ITL samples are inter-chunk gaps, not per-token ones, and the summary says so
(``itl_basis``).

Per load point, over the counted requests (warm-up excluded), with the window
W = max(end of any counted request) - min(s):

    request throughput = completed ok requests / W
    output tok/s       = sum n over ok requests / W
    total tok/s        = sum (prompt tokens + n) over ok requests / W
    goodput            = ok requests with TTFT <= SLO_ttft and TPOT <= SLO_tpot, / W
                         (a request with n - k_1 < 1 has no TPOT: only its TTFT is checked)
    goodput share      = those requests / all counted requests (errors count as not good)

Percentiles interpolate linearly between closest ranks (numpy's default), as in bench.measuring.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from bench.results.serving import RequestTrace
from bench.stats import percentile

DEFINITIONS = (
    "docs/METRICS.md (Serving): s=scheduled, u=sent, c_j=chunk arrival, k_j=tokens in chunk j, n=generated "
    "tokens; TTFT=c_1-s; e2e=c_m-s; queue=u-s; TPOT=(c_m-c_1)/(n-k_1); ITL: k_j samples of "
    "(c_j-c_(j-1))/k_j; window W=max(end)-min(s); throughput over W; goodput=requests meeting TTFT and "
    "TPOT SLOs / W; linear-interpolated percentiles"
)
EXACT_TOKEN_SOURCES = ("server-counter", "token-ids")


@dataclass(frozen=True)
class Slo:
    """Bounds a request must meet to count toward goodput, and where they came from."""

    ttft_s: float
    tpot_s: float
    source: str


# -- one request ---------------------------------------------------------------------------------
def output_tokens(tr: RequestTrace) -> int:
    return tr.completion_tokens if tr.completion_tokens is not None else sum(tr.chunk_tokens)


def ttft(tr: RequestTrace) -> float | None:
    return tr.chunk_times[0] - tr.scheduled if tr.chunk_times else None


def ttft_from_send(tr: RequestTrace) -> float | None:
    return tr.chunk_times[0] - tr.sent if tr.chunk_times and tr.sent is not None else None


def e2e(tr: RequestTrace) -> float | None:
    return tr.chunk_times[-1] - tr.scheduled if tr.chunk_times else None


def queue_time(tr: RequestTrace) -> float | None:
    return tr.sent - tr.scheduled if tr.sent is not None else None


def send_lag(tr: RequestTrace) -> float | None:
    return tr.sent - tr.scheduled - tr.slot_wait if tr.sent is not None else None


def tokens_exact(tr: RequestTrace) -> bool:
    """Whether the tokens of each chunk are known (a server counter or token ids), or the
    assumption of one token per chunk is confirmed by the server's total."""
    if tr.tokens_source in EXACT_TOKEN_SOURCES:
        return True
    return tr.completion_tokens is not None and tr.completion_tokens == sum(tr.chunk_tokens)


def tpot(tr: RequestTrace) -> float | None:
    if not tr.chunk_times:
        return None
    steps = output_tokens(tr) - tr.chunk_tokens[0]
    return (tr.chunk_times[-1] - tr.chunk_times[0]) / steps if steps >= 1 else None


def itl_samples(tr: RequestTrace) -> list[float]:
    """k_j samples of g_j / k_j per chunk after the first (inter-chunk gaps where k_j is assumed)."""
    out: list[float] = []
    t, k = tr.chunk_times, tr.chunk_tokens
    for j in range(1, len(t)):
        gap = t[j] - t[j - 1]
        kj = max(k[j], 1)
        out += [gap / kj] * kj
    return out


def output_rate(tr: RequestTrace) -> float | None:
    """Per-request output rate = n / (c_m - s): tokens one user received per second of waiting for
    them (a completed request only). Its distribution over a point's requests is what ``bench
    compare`` tests; the point's output tok/s is the aggregate over the window."""
    end = e2e(tr)
    return output_tokens(tr) / end if tr.status == "ok" and end and end > 0 else None


def meets_slo(tr: RequestTrace, slo: Slo) -> bool:
    if tr.status != "ok":
        return False
    first, per_token = ttft(tr), tpot(tr)
    if first is None or first > slo.ttft_s:
        return False
    return per_token is None or per_token <= slo.tpot_s


# -- one load point ------------------------------------------------------------------------------
def distribution(values: Iterable[float | None]) -> dict[str, float] | None:
    xs = [v for v in values if v is not None]
    if not xs:
        return None
    return {"p50": percentile(xs, 50), "p90": percentile(xs, 90), "p99": percentile(xs, 99),
            "mean": sum(xs) / len(xs), "min": min(xs), "max": max(xs), "n": len(xs)}


def last_time(tr: RequestTrace) -> float:
    """When the request was over for the client: its end, else its last chunk, else its send."""
    candidates = [tr.end, tr.chunk_times[-1] if tr.chunk_times else None, tr.sent, tr.scheduled]
    return max(t for t in candidates if t is not None)


def window(traces: Sequence[RequestTrace]) -> tuple[float, float] | None:
    sent = [t for t in traces if t.sent is not None]
    if not sent:
        return None
    return min(t.scheduled for t in sent), max(last_time(t) for t in sent)


def errors_by_kind(traces: Iterable[RequestTrace]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for tr in traces:
        if tr.status == "ok":
            continue
        entry = out.setdefault(tr.status, {"count": 0, "example": tr.reason, "http_status": tr.http_status})
        entry["count"] += 1
    return out


def achieved_send_rate(traces: Sequence[RequestTrace]) -> float | None:
    """Requests sent per second between the first and the last send."""
    sent = sorted(t.sent for t in traces if t.sent is not None)
    if len(sent) < 2 or sent[-1] <= sent[0]:
        return None
    return (len(sent) - 1) / (sent[-1] - sent[0])


def summarize_point(traces: Sequence[RequestTrace], slo: Slo | None) -> dict[str, Any]:
    """Everything the row reports for one load point, from the counted requests' traces."""
    ok = [t for t in traces if t.status == "ok"]
    span = window(traces)
    wall = span[1] - span[0] if span else None
    out_tokens = sum(output_tokens(t) for t in ok)
    counts = [t.prompt_tokens if t.prompt_tokens is not None else t.prompt_tokens_client for t in ok]
    uncounted = sum(c is None for c in counts)
    # a request whose prompt nobody counted makes the total unknown, never a total with 0 for it
    prompt_tokens = None if uncounted else sum(c for c in counts if c is not None)
    exact = [tokens_exact(t) for t in ok]

    def rate(x: float) -> float | None:
        return x / wall if wall else None

    summary: dict[str, Any] = {
        "requests": len(traces), "ok": len(ok), "not_sent": sum(t.sent is None for t in traces),
        "errors": errors_by_kind(traces), "window_s": wall,
        "request_throughput_rps": rate(len(ok)), "output_tps": rate(out_tokens),
        "total_tps": rate(out_tokens + prompt_tokens) if prompt_tokens is not None else None,
        "output_tokens": out_tokens, "prompt_tokens": prompt_tokens,
        "ttft_s": distribution(ttft(t) for t in ok), "ttft_from_send_s": distribution(ttft_from_send(t) for t in ok),
        "tpot_s": distribution(tpot(t) for t in ok),
        "itl_s": distribution(g for t in ok for g in itl_samples(t)),
        "e2e_s": distribution(e2e(t) for t in ok),
        "queue_time_s": distribution(queue_time(t) for t in traces),
        "send_lag_s": distribution(send_lag(t) for t in traces),
        "achieved_send_rate_rps": achieved_send_rate(traces),
        "itl_basis": "per-token" if all(exact) else (
            f"inter-chunk for {exact.count(False)} of {len(exact)} requests: the server gave no per-chunk token "
            "count and its chunk count differs from its token total (or it gave no total)"),
        "tokens_per_chunk_max": max((k for t in ok for k in t.chunk_tokens), default=None),
        "output_short_of_asked": sum(1 for t in ok if t.max_tokens is not None and output_tokens(t) < t.max_tokens),
        "prompt_tokens_client_vs_server": prompt_count_check(ok),
        "cache": cache_summary(ok),
    }
    if uncounted:
        summary["total_tps_unavailable"] = (f"{uncounted} of {len(ok)} completed request(s) have no prompt token count "
                                            "(neither the server's usage nor the client's own)")
    if slo is not None:
        good = sum(meets_slo(t, slo) for t in traces)
        summary["goodput"] = {"good": good, "goodput_rps": rate(good),
                              "share": good / len(traces) if traces else None,
                              "slo": {"ttft_s": slo.ttft_s, "tpot_s": slo.tpot_s, "source": slo.source}}
    return summary


def prompt_count_check(ok: Sequence[RequestTrace]) -> dict[str, Any]:
    """Does the server's usage.prompt_tokens agree with the count the client prepared?"""
    pairs = [(t.prompt_tokens_client, t.prompt_tokens) for t in ok
             if t.prompt_tokens is not None and t.prompt_tokens_client is not None]
    diffs = [s - c for c, s in pairs]
    return {"compared": len(pairs), "differ": sum(d != 0 for d in diffs),
            "server_minus_client": distribution(float(d) for d in diffs) if diffs else None}


def cache_summary(ok: Sequence[RequestTrace]) -> dict[str, Any]:
    """The server's prompt cache as it reported it: cached_share = sum(cached prompt tokens) /
    sum(prompt tokens) over the requests that reported both (llama-server: usage.prompt_tokens_details
    .cached_tokens, or timings.cache_n, against usage.prompt_tokens, the whole prompt)."""
    reported = [t for t in ok if t.cached_tokens is not None]
    cached = sum(t.cached_tokens or 0 for t in reported)
    prompts = [t.prompt_tokens for t in reported if t.prompt_tokens is not None]
    both = sum(t.cached_tokens or 0 for t in reported if t.prompt_tokens is not None)
    return {"requests_reporting": len(reported), "cached_prompt_tokens": cached,
            "requests_with_hits": sum(1 for t in reported if (t.cached_tokens or 0) > 0),
            "prompt_tokens_reporting": sum(prompts), "cached_share": both / sum(prompts) if sum(prompts) else None}


# -- the sweep -----------------------------------------------------------------------------------
def max_sustainable(points: Sequence[tuple[float, bool]]) -> float | None:
    """The largest load L such that every measured point with load <= L holds (goodput share at
    least the stated one, and the client kept to the schedule). None if the lightest one fails."""
    best = None
    for load, holds in sorted(points):
        if not holds:
            break
        best = load
    return best


def usd_per_million_output(usd_per_hour: float | None, output_tps: float | None) -> float | None:
    """$ per 1M output tokens = price per hour / (output tok/s x 3600) x 1e6."""
    from bench.hardware.tiers import usd_per_million_tokens

    if not usd_per_hour or not output_tps or output_tps <= 0 or math.isnan(output_tps):
        return None
    return usd_per_million_tokens(usd_per_hour, output_tps)
