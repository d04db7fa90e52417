"""Statistics every layer uses (speed metrics, quality scores, serving load points), below all of
them so none imports another's module for a percentile."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation between closest ranks (numpy's default
    'linear' method): pos = (n - 1) q / 100, x[floor] + (x[ceil] - x[floor]) (pos - floor)."""
    if not values:
        raise ValueError("percentile of no values")
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)
