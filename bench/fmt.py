"""One number formatter for every table the suite prints or writes: a missing value is "-",
never 0 or "None"."""

from __future__ import annotations

from typing import Any


def fmt(value: Any, spec: str = ".1f", scale: float = 1.0) -> str:
    """``value`` x ``scale`` in ``spec``: a format spec (".2f", ".3g"), or one of
    s (as text), d (integer), ms (seconds as milliseconds), mib (bytes as MiB), pct (a share as %),
    bool (yes/NO), sig (4 significant digits, scientific past 1e4)."""
    if value is None:
        return "-"
    if spec == "s":
        return str(value)
    if spec == "bool":
        return "yes" if value else "NO"
    v = value * scale
    if spec == "d":
        return str(int(v))
    if spec == "ms":
        return f"{v * 1e3:.1f}"
    if spec == "mib":
        return f"{v / 2**20:.0f}"
    if spec == "pct":
        return f"{v:.1%}"
    if spec == "sig":
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.4e}"
    return format(v, spec)
