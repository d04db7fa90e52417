"""Statistics for comparing two runs: pure functions over raw per-repetition samples.

Mann-Whitney U (rank-sum) test, two-sided, exact for small samples:
    U = #{(i, j): y_j > x_i} + 0.5 #{(i, j): y_j = x_i}
    p = min(1, 2 min(P(U' <= U), P(U' >= U))), U' drawn from the null distribution
        (all C(m+n, m) orderings equally likely), counted exactly by dynamic programming when
        m * n <= EXACT_LIMIT and no value is tied; with ties, exact by enumerating every split of
        the pooled mid-ranks while C(m+n, n) <= PERMUTATION_LIMIT; otherwise the
        normal approximation with continuity correction and the tie-corrected variance
        sigma^2 = m n / 12 ((N + 1) - sum(t^3 - t) / (N (N - 1))), t the sizes of tied groups.

Ratio with a confidence interval (Hodges-Lehmann, the interval that inverts the same test):
    D = sorted{ln y_j - ln x_i}, m n values
    ratio = exp(median D)
    CI    = [exp D_(k), exp D_(mn+1-k)], k the largest integer with P(U' <= k - 1) <= alpha / 2;
            its exact coverage 1 - 2 P(U' <= k - 1) is reported, because with few repetitions
            the requested level may be out of reach (3 vs 3 samples: at most 90%).

Requests are the independent unit: one sample per counted repetition, never per token.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

EXACT_LIMIT = 10_000
PERMUTATION_LIMIT = 200_000  # splits enumerated for the exact test with ties


@lru_cache(maxsize=64)
def _u_counts(m: int, n: int) -> tuple[int, ...]:
    """Number of orderings with U = 0..m*n under the null (no ties)."""
    # f[i][j][u]: ways with i x's and j y's; built with the recurrence on the largest element.
    prev = [[1] + [0] * (m * n) for _ in range(n + 1)]  # i = 0: U is 0 for any j
    for i in range(1, m + 1):
        cur = [[0] * (m * n + 1) for _ in range(n + 1)]
        cur[0][0] = 1
        for j in range(1, n + 1):
            for u in range(i * j + 1):
                # largest element is an x (no y above it): U unchanged from (i-1, j);
                # largest is a y: it beats all i x's, U grows by i from (i, j-1).
                cur[j][u] = prev[j][u] + (cur[j - 1][u - i] if u >= i else 0)
        prev = cur
    return tuple(prev[n])


def null_cdf(m: int, n: int, u: float) -> float:
    """P(U' <= u) under the null, exact."""
    counts = _u_counts(m, n)
    total = math.comb(m + n, m)
    return sum(counts[: int(math.floor(u)) + 1]) / total if u >= 0 else 0.0


def null_sf(m: int, n: int, u: float) -> float:
    """P(U' >= u) under the null, exact (summed counts, not 1 - cdf)."""
    counts = _u_counts(m, n)
    return sum(counts[max(0, math.ceil(u)):]) / math.comb(m + n, m)


def mann_whitney_u(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """(U, two-sided p) for samples x (baseline) and y (new); U counts pairs where y is larger."""
    m, n = len(x), len(y)
    if m == 0 or n == 0:
        raise ValueError("Mann-Whitney U needs at least one sample on each side")
    u = sum(1.0 if b > a else 0.5 if b == a else 0.0 for a in x for b in y)
    values = [*x, *y]
    ties = [values.count(v) for v in set(values)]
    if m * n <= EXACT_LIMIT and all(t == 1 for t in ties):
        return u, min(1.0, 2 * min(null_cdf(m, n, u), null_sf(m, n, u)))
    if math.comb(m + n, n) <= PERMUTATION_LIMIT:
        return u, _tied_permutation_p(x, y, u)
    big_n = m + n
    tie_term = sum(t**3 - t for t in ties) / (big_n * (big_n - 1)) if big_n > 1 else 0.0
    sigma = math.sqrt(m * n / 12 * ((big_n + 1) - tie_term))
    if sigma == 0:  # every value equal
        return u, 1.0
    z = (abs(u - m * n / 2) - 0.5) / sigma
    return u, min(1.0, math.erfc(max(z, 0.0) / math.sqrt(2)))


def _tied_permutation_p(x: Sequence[float], y: Sequence[float], u: float) -> float:
    """Exact two-sided p with ties: U over every split of the pooled mid-ranks (U = R_y - n(n+1)/2)."""
    from itertools import combinations

    pooled = sorted([*x, *y])
    first = {}
    for i, v in enumerate(pooled):
        first.setdefault(v, i)
    midrank = {v: first[v] + 1 + (pooled.count(v) - 1) / 2 for v in first}
    ranks = [midrank[v] for v in pooled]
    n = len(y)
    offset = n * (n + 1) / 2
    us = [sum(c) - offset for c in combinations(ranks, n)]
    eps = 1e-9
    lower = sum(v <= u + eps for v in us) / len(us)
    upper = sum(v >= u - eps for v in us) / len(us)
    return min(1.0, 2 * min(lower, upper))


def smallest_p(m: int, n: int) -> float:
    """The smallest two-sided p-value the exact test can give with m and n samples."""
    return min(1.0, 2 / math.comb(m + n, m))


@dataclass(frozen=True)
class RatioEstimate:
    ratio: float  # new / baseline, Hodges-Lehmann
    low: float
    high: float
    coverage: float  # the interval's exact confidence level
    p_value: float
    n_baseline: int
    n_new: int


def _median(xs: Sequence[float]) -> float:
    s = sorted(xs)
    k = len(s) // 2
    return s[k] if len(s) % 2 else (s[k - 1] + s[k]) / 2


def ratio_estimate(x: Sequence[float], y: Sequence[float], alpha: float = 0.05) -> RatioEstimate:
    """Ratio new/baseline of positive samples with its Hodges-Lehmann interval and the U test."""
    if any(v <= 0 for v in (*x, *y)):
        raise ValueError("ratio estimates need positive samples")
    m, n = len(x), len(y)
    diffs = sorted(math.log(b) - math.log(a) for a in x for b in y)
    _, p = mann_whitney_u(x, y)
    k = 1
    if m * n <= EXACT_LIMIT:
        while k < (m * n + 1) // 2 and null_cdf(m, n, k) <= alpha / 2:  # P(U' <= (k+1) - 1)
            k += 1
        coverage = 1 - 2 * null_cdf(m, n, k - 1)
    else:
        z = z_critical(alpha)
        k = max(1, int(math.floor(m * n / 2 - z * math.sqrt(m * n * (m + n + 1) / 12))))
        coverage = 1 - alpha
    return RatioEstimate(ratio=math.exp(_median(diffs)), low=math.exp(diffs[k - 1]),
                         high=math.exp(diffs[m * n - k]), coverage=coverage, p_value=p,
                         n_baseline=m, n_new=n)


@dataclass(frozen=True)
class MedianInterval:
    median: float
    low: float
    high: float
    coverage: float  # the interval's exact confidence level (order statistics give discrete levels)


def median_interval(values: Sequence[float], alpha: float = 0.05) -> MedianInterval | None:
    """Distribution-free interval for a median from order statistics: [x_(k), x_(n+1-k)] with the
    largest k such that P(Binomial(n, 1/2) <= k - 1) <= alpha / 2; its exact coverage is
    1 - 2 P(Binomial(n, 1/2) <= k - 1). None when n is too small for any k >= 1 (n < 6 at 0.05:
    five paired rounds cannot give a 95% interval for their median, only [min, max] at 93.75%)."""
    n = len(values)
    if n == 0:
        return None

    def below(k: int) -> float:  # P(Binomial(n, 1/2) <= k - 1)
        return sum(math.comb(n, i) for i in range(k)) / 2**n

    k = 0
    while k + 1 <= (n + 1) // 2 and below(k + 1) <= alpha / 2:
        k += 1
    if k == 0:
        return None
    s = sorted(values)
    return MedianInterval(median=_median(s), low=s[k - 1], high=s[n - k], coverage=1 - 2 * below(k))


def within_tolerance(ratios: Sequence[float], tolerance: float, alpha: float = 0.05) -> str:
    """Is the median of paired ratios within 1 +- tolerance? "yes" when its median_interval lies
    inside, "no" when it lies wholly outside, "cannot tell" when it crosses an edge (the spread
    between rounds is wider than the question) or there are too few rounds for an interval."""
    iv = median_interval(ratios, alpha)
    if iv is None:
        return f"cannot tell (too few rounds: {len(ratios)})"
    if 1 - tolerance <= iv.low and iv.high <= 1 + tolerance:
        return "yes"
    if iv.high < 1 - tolerance or iv.low > 1 + tolerance:
        return "no"
    return "cannot tell"


def z_critical(alpha: float) -> float:
    """Two-sided normal critical value by bisection on erfc (no scipy needed)."""
    lo, hi = 0.0, 10.0
    for _ in range(100):
        mid = (lo + hi) / 2
        if math.erfc(mid / math.sqrt(2)) > alpha:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def two_proportion_z(p1: float, se1: float, p2: float, se2: float) -> float:
    """z of the difference p2 - p1 of two independent proportions with their standard errors."""
    se = math.sqrt(se1**2 + se2**2)
    return (p2 - p1) / se if se > 0 else (0.0 if p2 == p1 else math.copysign(math.inf, p2 - p1))
