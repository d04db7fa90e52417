"""The comparison statistics against values worked out by hand (no scipy here to lean on)."""

from __future__ import annotations

import math

import pytest

from bench.analysis.significance import (
    mann_whitney_u,
    median_interval,
    null_cdf,
    ratio_estimate,
    smallest_p,
    within_tolerance,
)

pytestmark = pytest.mark.fast


def test_null_distribution_is_exact():
    # 3 vs 3: C(6,3) = 20 orderings; U = 0 and U = 9 each happen once, U <= 1 twice.
    assert null_cdf(3, 3, 0) == pytest.approx(1 / 20)
    assert null_cdf(3, 3, 1) == pytest.approx(2 / 20)
    assert null_cdf(3, 3, 9) == pytest.approx(1.0)
    # symmetric: P(U <= k) = P(U >= mn - k)
    for k in range(10):
        assert null_cdf(4, 5, k) == pytest.approx(1 - null_cdf(4, 5, 20 - k - 1))


def test_complete_separation_gives_the_smallest_p():
    u, p = mann_whitney_u([1, 2, 3, 4, 5], [6, 7, 8, 9, 10])
    assert u == 25 and p == pytest.approx(2 / 252) == pytest.approx(smallest_p(5, 5))
    _, p3 = mann_whitney_u([1, 2, 3], [4, 5, 6])
    assert p3 == pytest.approx(0.1)  # 3 vs 3 can never reach p < 0.05


def test_identical_samples_are_not_significant():
    u, p = mann_whitney_u([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    assert u == 4.5 and p == pytest.approx(1.0)
    assert mann_whitney_u([2.0, 2.0], [2.0, 2.0]) == (2.0, 1.0)


def _permutation_p(x, y):
    """Brute force: every split of the pooled values, U with ties as 1/2, two-sided."""
    from itertools import combinations

    pooled, m = [*x, *y], len(x)

    def u_of(a, b):
        return sum(1.0 if q > p else 0.5 if q == p else 0.0 for p in a for q in b)

    u0 = u_of(x, y)
    us = [u_of([pooled[i] for i in idx], [pooled[j] for j in range(len(pooled)) if j not in idx])
          for idx in combinations(range(len(pooled)), m)]
    lo = sum(v <= u0 for v in us) / len(us)
    hi = sum(v >= u0 for v in us) / len(us)
    return min(1.0, 2 * min(lo, hi))


def test_without_ties_the_p_value_is_the_permutation_p_value():
    x, y = [3.1, 1.2, 5.5, 2.0], [4.4, 6.1, 2.5, 7.0, 8.2]
    assert mann_whitney_u(x, y)[1] == pytest.approx(_permutation_p(x, y))


def test_ties_get_the_exact_permutation_p_value_not_the_no_ties_table():
    # the no-ties table would give 0.032 here; the permutation test with ties gives 0.063
    for x, y in (([1, 1, 2, 1, 1], [2, 2, 3, 2]), ([1, 2], [3, 3, 2])):
        assert mann_whitney_u(x, y)[1] == pytest.approx(_permutation_p(x, y))


def test_normal_approximation_for_large_samples():
    x = [float(i) for i in range(120)]
    y = [float(i) + 60 for i in range(120)]
    _, p = mann_whitney_u(x, y)
    assert 0 < p < 1e-6


def test_ratio_estimate_recovers_a_known_scale():
    x = [100.0, 101.0, 99.0, 100.5, 99.5]
    y = [v * 0.8 for v in x]
    est = ratio_estimate(x, y)
    assert est.ratio == pytest.approx(0.8, rel=0.01)
    assert est.low <= 0.8 <= est.high
    assert est.coverage == pytest.approx(1 - 2 * 4 / 252)  # the attainable level nearest 95% from above
    assert est.p_value == pytest.approx(2 / 252)
    with pytest.raises(ValueError):
        ratio_estimate([0.0, 1.0], [1.0, 2.0])


def test_few_samples_report_the_lower_coverage_they_can_reach():
    est = ratio_estimate([10.0, 11.0, 12.0], [10.5, 11.5, 12.5])
    assert est.coverage == pytest.approx(0.9)
    assert math.isclose(est.low, 10.5 / 12) and math.isclose(est.high, 12.5 / 10)


def test_median_interval_from_order_statistics():
    # n = 10: P(Binomial(10, 1/2) <= 1) = 11/1024 <= 0.025 < P(<= 2) = 56/1024, so [x_(2), x_(9)]
    iv = median_interval([float(v) for v in range(10, 0, -1)])
    assert (iv.median, iv.low, iv.high) == (5.5, 2.0, 9.0)
    assert iv.coverage == pytest.approx(1 - 2 * 11 / 1024)
    # five rounds: even [min, max] covers only 1 - 2/32 = 93.75%, so no 95% interval exists
    assert median_interval([1.0, 2.0, 3.0, 4.0, 5.0]) is None
    assert median_interval([1.0, 2.0, 3.0, 4.0, 5.0], alpha=0.1).coverage == pytest.approx(1 - 2 / 32)


def test_within_tolerance_needs_the_whole_interval_on_one_side():
    tight = [1.0 + d for d in (-0.01, -0.005, 0.0, 0.002, 0.004, 0.006, 0.008, 0.01, -0.008, 0.003)]
    assert within_tolerance(tight, 0.02) == "yes"
    assert within_tolerance([0.9 + 0.001 * i for i in range(10)], 0.02) == "no"
    wide = [0.85, 0.9, 0.95, 0.99, 1.0, 1.01, 1.05, 1.1, 1.2, 1.6]  # this VM's rounds: median 1.005
    assert within_tolerance(wide, 0.02) == "cannot tell"
    assert within_tolerance(tight[:5], 0.02) == "cannot tell (too few rounds: 5)"
