"""Metric formulas of docs/METRICS.md on hand-made timelines with known answers."""

import math
import random

import numpy as np
import pytest

from bench.measuring.metrics import (
    Timeline,
    decode_tps,
    e2e,
    itl,
    prefill_tps,
    stats,
    summarize,
    tpot,
    ttft,
)
from bench.stats import percentile

pytestmark = pytest.mark.fast


def test_formulas_on_a_known_timeline():
    # p = 10, prefill pass ends at 0.5 s, tokens at 0.6, 0.8, 1.0, 1.4 s
    tl = Timeline(prompt_tokens=10, token_times=[0.6, 0.8, 1.0, 1.4], prefill_end=0.5)
    assert ttft(tl) == pytest.approx(0.6)
    assert prefill_tps(tl) == (pytest.approx(20.0), True)
    assert decode_tps(tl) == pytest.approx(3 / 0.8)  # (n-1)/(tn-t1): the first token is prefill's
    assert tpot(tl) == pytest.approx(0.8 / 3)
    assert itl(tl) == pytest.approx([0.2, 0.2, 0.4])
    assert e2e(tl) == pytest.approx(1.4)


def test_prefill_falls_back_to_ttft_and_says_so():
    tl = Timeline(prompt_tokens=10, token_times=[0.5, 0.7], prefill_end=None)
    assert prefill_tps(tl) == (pytest.approx(20.0), False)


def test_single_token_has_no_decode_rate():
    tl = Timeline(prompt_tokens=4, token_times=[0.3], prefill_end=0.2)
    assert decode_tps(tl) is None and tpot(tl) is None and itl(tl) == []


def test_percentile_matches_numpy_linear():
    rng = random.Random(1)
    xs = [rng.expovariate(1.0) for _ in range(101)]
    for q in (0, 50, 90, 99, 100):
        assert percentile(xs, q) == pytest.approx(float(np.percentile(xs, q)))


def test_stats_use_sample_std():
    s = stats([1.0, 2.0, 3.0, 4.0])
    assert s.mean == 2.5 and s.n == 4
    assert s.std == pytest.approx(math.sqrt(5 / 3))
    assert stats([2.0]).std is None
    assert stats([None]) is None


def test_summary_pools_itl_over_requests():
    tls = [Timeline(5, [0.1, 0.2, 0.4], 0.05), Timeline(5, [0.1, 0.3, 0.4], 0.05)]
    s = summarize(tls)
    assert s["itl_s"]["n"] == 4
    assert s["itl_s"]["max"] == pytest.approx(0.2)
    assert s["decode_tps"]["mean"] == pytest.approx(2 / 0.3)
    assert s["prefill_separated"] == {"value": True}


def test_backend_counter_rates():
    from bench.measuring.metrics import counter_rates

    r = counter_rates({"prefill_compute_s": 0.5, "prefill_compute_tokens": 100,
                       "decode_compute_s": 0.25, "decode_compute_tokens": 10})
    assert r == {"backend_prefill_tps": 200.0, "backend_decode_tps": 40.0}
    assert counter_rates(None) == {}


def test_text_throughput_in_bytes_from_the_same_timestamps():
    from bench.measuring.metrics import decode_text_bps, prefill_text_bps

    tl = Timeline(prompt_tokens=4, token_times=[0.5, 1.0, 1.5, 2.0], prefill_end=0.4)
    assert prefill_text_bps(tl, 40) == pytest.approx(40 / 0.4)  # prompt bytes over the prefill pass
    # decode tok/s = 3 / 1.5 = 2; 4 tokens made 20 bytes: 5 bytes a token -> 10 B/s
    assert decode_text_bps(tl, 20) == pytest.approx(10.0)
    assert prefill_text_bps(Timeline(4, [0.5], None), 40) == pytest.approx(80.0)  # over TTFT, unseparated
    assert decode_text_bps(Timeline(4, [0.5], None), 5) is None and prefill_text_bps(tl, None) is None
