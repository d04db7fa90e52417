"""Efficiency benchmarks for cost-effective LLM inference.

Measures speed, memory, quality and cost for each model x variant x backend x hardware tier,
with the metric definitions of ``docs/METRICS.md``.
"""

__version__ = "0.1.0"
