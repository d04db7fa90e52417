"""``bench compare BASELINE NEW``: per matching cell, the ratio of each metric with a confidence
interval from the raw samples, a significance test, and a verdict that noise alone cannot fail.

A speed metric is ``faster`` or ``slower`` only when the Mann-Whitney U test rejects "same" at
``alpha`` *and* the Hodges-Lehmann ratio moves by at least ``min_effect`` (see significance.py).
Memory and quality have one value per cell, so they are gated by thresholds (and, where the
row carries a standard error, a z test), not by a rank test.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.analysis.significance import RatioEstimate, ratio_estimate, smallest_p, two_proportion_z, z_critical
from bench.errors import BenchError
from bench.results.schema import CellConfig, Row

# Fields of a cell that may differ between the two runs and still be compared (they are shown).
LOOSE_FIELDS = ("threads", "repetitions", "warmup", "seed", "timeout_s")


@dataclass(frozen=True)
class SpeedMetric:
    key: str  # per-sample key in Row.samples
    label: str
    higher_is_better: bool
    calibration: str  # the calibration figure that --normalize divides by


SPEED_METRICS: dict[str, SpeedMetric] = {m.key: m for m in (
    # Decode at batch 1 is memory-bound: normalize by measured bandwidth. Prefill is compute-bound.
    SpeedMetric("decode_tps", "decode tok/s", True, "memory_bandwidth_bytes_per_s"),
    SpeedMetric("prefill_tps", "prefill tok/s", True, "matmul_flop_per_s"),
    SpeedMetric("ttft_s", "TTFT s", False, "matmul_flop_per_s"),
    SpeedMetric("tpot_s", "TPOT s", False, "memory_bandwidth_bytes_per_s"),
)}


@dataclass
class Thresholds:
    alpha: float = 0.05
    min_effect: float = 0.10  # relative change a speed verdict needs besides significance
    gate: tuple[str, ...] = ("decode_tps", "prefill_tps")
    max_memory_increase: float = 0.10  # relative, peak RSS / VRAM
    max_kld_increase: float = 0.01  # nats, and significant at alpha given the rows' standard errors
    max_ppl_increase: float = 0.02  # relative
    max_accuracy_drop: float = 0.02  # absolute, and significant at alpha
    allow_inconclusive: bool = False  # too few samples to test a gated metric: pass instead of fail


@dataclass
class MetricComparison:
    metric: str
    label: str
    baseline: float | None
    new: float | None
    estimate: RatioEstimate | None = None
    verdict: str = "same"  # better | worse | same | n/a
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.estimate:
            return self.estimate.ratio
        return self.new / self.baseline if self.new is not None and self.baseline else None


@dataclass
class CellComparison:
    label: str
    baseline: Row
    new: Row
    verdict: str  # faster | slower | same | failed | fixed | not comparable
    regression: bool
    metrics: list[MetricComparison] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    normalized: list[str] = field(default_factory=list)  # metrics scaled by calibration (--normalize)


@dataclass
class Comparison:
    cells: list[CellComparison]
    only_baseline: list[str]
    only_new: list[str]
    warnings: list[str]
    thresholds: Thresholds
    normalized: bool

    @property
    def regressions(self) -> list[CellComparison]:
        return [c for c in self.cells if c.regression]


# Options the planner derives from the host (a tier's VRAM as a fraction of this GPU's): they differ
# between machines for the same cell, so they are not part of what must match.
DERIVED_OPTIONS = ("vram_fraction",)


def match_key(c: CellConfig) -> tuple:
    """What must be equal for two cells to be compared (LOOSE_FIELDS may differ, and are shown)."""
    options = {k: v for k, v in (c.backend_options or {}).items() if k not in DERIVED_OPTIONS}
    return (c.model_id, c.variant_id, c.backend, c.profile_id, c.device, c.prompt_tokens, c.gen_tokens,
            c.n_ctx, c.n_gpu_layers, c.stop_at_eos, tuple(sorted(options.items())), repr(c.quality), repr(c.task))


def cell_label(c: CellConfig) -> str:
    return f"{c.model_id}:{c.variant_id} {c.backend} {c.profile_id} p={c.prompt_tokens} n={c.gen_tokens}"


def _latest_by_key(rows: Sequence[Row]) -> dict[tuple, Row]:
    out: dict[tuple, Row] = {}
    for r in sorted(rows, key=lambda r: r.created_at):
        out[match_key(r.config)] = r  # the latest row of a cell wins
    return out


def environment_differences(base: Row, new: Row) -> list[str]:
    """Hardware and library differences that make a speed comparison suspect."""
    out = []
    hb, hn = base.environment.get("host", {}), new.environment.get("host", {})
    for key in ("cpu_model", "logical_cores", "ram_bytes"):
        if hb.get(key) != hn.get(key):
            out.append(f"hardware {key}: {hb.get(key)!r} -> {hn.get(key)!r}")
    gb, gn = [g.get("name") for g in hb.get("gpus") or []], [g.get("name") for g in hn.get("gpus") or []]
    if gb != gn:
        out.append(f"hardware GPUs: {gb} -> {gn}")
    pb, pn = base.environment.get("packages", {}), new.environment.get("packages", {})
    for pkg in sorted(set(pb) | set(pn)):
        if pb.get(pkg) != pn.get(pkg):
            out.append(f"library {pkg}: {pb.get(pkg)} -> {pn.get(pkg)}")
    return out


def compare_rows(baseline: Sequence[Row], new: Sequence[Row], thresholds: Thresholds | None = None,
                 normalize: bool = False) -> Comparison:
    th = thresholds or Thresholds()
    for g in th.gate:
        if g not in SPEED_METRICS:
            raise BenchError(f"unknown gated metric {g!r}; choose from {', '.join(SPEED_METRICS)}")
    b_by, n_by = _latest_by_key(baseline), _latest_by_key(new)
    common = [k for k in n_by if k in b_by]
    if not common:
        raise BenchError(f"no matching cells: the baseline has {len(b_by)} cell(s), the new run {len(n_by)}, "
                         "and none share model, variant, backend, profile and lengths")
    warnings: list[str] = []
    env_seen: set[str] = set()
    cells = []
    for k in common:
        cell = compare_cell(b_by[k], n_by[k], th, normalize)
        for d in environment_differences(b_by[k], n_by[k]):
            env_seen.add(d)
        cells.append(cell)
    if env_seen:
        warnings.append("DIFFERENT HARDWARE OR LIBRARIES between the runs"
                        + (" (see which metrics were normalized)" if normalize else
                           " (speed ratios mix code and machine; consider --normalize)")
                        + ": " + "; ".join(sorted(env_seen)))
    missing = [k for k in b_by if k not in n_by]
    if missing:
        warnings.append(f"{len(missing)} baseline cell(s) are missing from the new run: "
                        + "; ".join(cell_label(b_by[k].config) for k in missing))
    return Comparison(cells=cells, only_baseline=[cell_label(b_by[k].config) for k in b_by if k not in n_by],
                      only_new=[cell_label(n_by[k].config) for k in n_by if k not in b_by],
                      warnings=warnings, thresholds=th, normalized=normalize)


def _samples(row: Row, key: str) -> list[float]:
    return [s[key] for s in row.samples if isinstance(s.get(key), (int, float)) and s[key] > 0]


def _scale(base: Row, new: Row, metric: SpeedMetric) -> tuple[float | None, str]:
    """Factor that puts the new row's metric on the baseline machine's footing (CPU calibration:
    cells on a GPU are left as measured)."""
    if "cuda" in (base.config.device, new.config.device):
        return None, f"{metric.key}: not normalized, the calibration measures the CPU and this cell ran on cuda"
    cb = (base.environment.get("calibration") or {}).get(metric.calibration)
    cn = (new.environment.get("calibration") or {}).get(metric.calibration)
    if not cb or not cn:
        return None, f"{metric.key}: not normalized, a row has no calibration ({metric.calibration})"
    factor = cb / cn if metric.higher_is_better else cn / cb
    return factor, f"{metric.key} x{factor:.3f} ({metric.calibration} {cn:.3g} here vs {cb:.3g} in the baseline)"


def compare_cell(base: Row, new: Row, th: Thresholds, normalize: bool) -> CellComparison:
    label = cell_label(new.config)
    notes = [f"{f}: {getattr(base.config, f)} -> {getattr(new.config, f)}" for f in LOOSE_FIELDS
             if f != "timeout_s" and getattr(base.config, f) != getattr(new.config, f)]
    hb, hn = base.environment.get("host", {}).get("hostname"), new.environment.get("host", {}).get("hostname")
    if hb != hn:
        notes.append(f"host: {hb} -> {hn}")
    if base.status != "ok" or new.status != "ok":
        if base.status == "ok":
            return CellComparison(label, base, new, "failed", True, [], notes + [f"new run: {new.status}: {new.reason}"])
        verdict = "fixed" if new.status == "ok" else "not comparable"
        return CellComparison(label, base, new, verdict, False, [], notes + [f"baseline: {base.status}: {base.reason}"])
    metrics: list[MetricComparison] = []
    normalized: set[str] = set()
    for m in SPEED_METRICS.values():
        xs, ys = _samples(base, m.key), _samples(new, m.key)
        mc = MetricComparison(m.key, m.label, _mean(xs), _mean(ys))
        dropped = (len(base.samples) - len(xs), len(new.samples) - len(ys))
        if any(dropped):
            notes.append(f"{m.key}: {dropped[0]} baseline and {dropped[1]} new sample(s) had no value")
        if not xs or not ys:
            if xs and not ys:  # measured before, not now: never a silent pass
                mc.verdict, mc.note = "worse", "the baseline has samples, the new run none"
            else:
                mc.verdict, mc.note = "n/a", "no samples"
            metrics.append(mc)
            continue
        if normalize:
            factor, how = _scale(base, new, m)
            notes.append(how)
            if factor:
                ys = [y * factor for y in ys]
                mc.new = _mean(ys)
                normalized.add(m.key)
        est = ratio_estimate(xs, ys, th.alpha)
        mc.estimate = est
        moved = abs(math.log(est.ratio)) >= math.log1p(th.min_effect)
        if est.p_value < th.alpha and moved:
            improved = (est.ratio > 1) == m.higher_is_better
            mc.verdict = "better" if improved else "worse"
        elif smallest_p(len(xs), len(ys)) >= th.alpha:
            mc.verdict = "inconclusive"
            mc.note = (f"{len(xs)} vs {len(ys)} samples cannot reach p < {th.alpha} (smallest possible "
                       f"p = {smallest_p(len(xs), len(ys)):.3f}); run with -r 5 or more")
        metrics.append(mc)
    metrics += _memory_metrics(base, new, th) + _quality_metrics(base, new, th)
    speed = [mc for mc in metrics if mc.metric in th.gate]
    if any(mc.verdict == "worse" for mc in speed):
        verdict = "slower"
    elif any(mc.verdict == "inconclusive" for mc in speed):
        verdict = "inconclusive"  # too few samples to tell: not "same"
    elif any(mc.verdict == "better" for mc in speed):
        verdict = "faster"
    else:
        verdict = "same"
    other_worse = [mc.label for mc in metrics if mc.metric not in SPEED_METRICS and mc.verdict == "worse"]
    if other_worse:  # a memory or quality regression fails the cell whatever its speed did
        verdict = f"{verdict}, {', '.join(other_worse)} worse"
    regression = (verdict == "slower" or bool(other_worse)
                  or (verdict == "inconclusive" and not th.allow_inconclusive))
    cell = CellComparison(label, base, new, verdict, regression, metrics, notes)
    cell.normalized = sorted(normalized)
    return cell


def _mean(xs: Sequence[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def _memory_metrics(base: Row, new: Row, th: Thresholds) -> list[MetricComparison]:
    out = []
    for key, label in (("peak_rss_bytes", "peak RSS bytes"), ("peak_vram_reserved_bytes", "peak VRAM bytes")):
        b, n = base.memory.get(key), new.memory.get(key)
        if b and not n:
            out.append(MetricComparison(key, label, b, None, verdict="worse", note="not measured in the new run"))
            continue
        if not b or not n:
            continue
        mc = MetricComparison(key, label, b, n)
        if n > b * (1 + th.max_memory_increase):
            mc.verdict, mc.note = "worse", f"grew more than {th.max_memory_increase:.0%}"
        elif n < b * (1 - th.max_memory_increase):
            mc.verdict = "better"
        out.append(mc)
    return out


def _quality_metrics(base: Row, new: Row, th: Thresholds) -> list[MetricComparison]:
    out = []
    qb, qn = base.quality, new.quality
    if qb.get("status") == "ok" and qn.get("status") != "ok":
        out.append(MetricComparison("quality", "quality", None, None, verdict="worse",
                                    note=f"measured in the baseline; new run: {qn.get('status', 'not run')} {qn.get('reason') or ''}".strip()))
    if qb.get("status") == "ok" and qn.get("status") == "ok":
        kb, kn = qb.get("kld") or {}, qn.get("kld") or {}
        if kb.get("mean") is not None and kn.get("mean") is not None:
            mc = MetricComparison("kld_mean", "KLD mean", kb["mean"], kn["mean"])
            diff = kn["mean"] - kb["mean"]
            z = two_proportion_z(kb["mean"], kb.get("se") or 0.0, kn["mean"], kn.get("se") or 0.0)
            if diff > th.max_kld_increase and z > z_critical(th.alpha):
                mc.verdict, mc.note = "worse", f"+{diff:.4f} nats (z = {z:.1f})"
            elif -diff > th.max_kld_increase and -z > z_critical(th.alpha):
                mc.verdict = "better"
            out.append(mc)
        pb, pn = qb.get("perplexity"), qn.get("perplexity")
        if pb and pn:
            mc = MetricComparison("perplexity", "perplexity", pb, pn)
            if pn > pb * (1 + th.max_ppl_increase):
                mc.verdict, mc.note = "worse", f"grew more than {th.max_ppl_increase:.0%}"
            elif pn < pb * (1 - th.max_ppl_increase):
                mc.verdict = "better"
            out.append(mc)
    tb, tn = base.task, new.task
    if tb.get("status") == "ok" and tn.get("status") != "ok":
        out.append(MetricComparison("task_accuracy", "task accuracy", tb.get("accuracy"), None, verdict="worse",
                                    note=f"measured in the baseline; new run: {tn.get('status', 'not run')}"))
    if tb.get("status") == "ok" and tn.get("status") == "ok":
        mc = MetricComparison("task_accuracy", f"accuracy ({tn.get('name', 'task')})", tb["accuracy"], tn["accuracy"])
        drop = tb["accuracy"] - tn["accuracy"]
        z = two_proportion_z(tb["accuracy"], tb.get("accuracy_se") or 0.0, tn["accuracy"], tn.get("accuracy_se") or 0.0)
        if drop > th.max_accuracy_drop and -z > z_critical(th.alpha):
            mc.verdict, mc.note = "worse", f"-{drop:.1%} (z = {z:.1f})"
        elif -drop > th.max_accuracy_drop and z > z_critical(th.alpha):
            mc.verdict = "better"
        out.append(mc)
    return out


# -- presentation -----------------------------------------------------------------------------
def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.4e}"


def _ratio_text(mc: MetricComparison) -> str:
    if mc.estimate:
        e = mc.estimate
        return f"{e.ratio:.3f} [{e.low:.3f}, {e.high:.3f}] ({e.coverage:.0%} CI), p={e.p_value:.3g}"
    return "-" if mc.ratio is None else f"{mc.ratio:.3f}"


def markdown(cmp: Comparison, baseline_name: str, new_name: str) -> str:
    """A summary for a CI job page (GitHub's $GITHUB_STEP_SUMMARY renders Markdown)."""
    th = cmp.thresholds
    lines = [f"## bench compare: `{new_name}` against `{baseline_name}`", ""]
    n_reg = len(cmp.regressions)
    lines.append(f"**{'REGRESSION' if n_reg else 'OK'}**: {len(cmp.cells)} matching cell(s), {n_reg} regression(s). "
                 f"Speed verdicts need Mann-Whitney p < {th.alpha} and a change of at least {th.min_effect:.0%} "
                 f"(gated: {', '.join(th.gate)}); memory +{th.max_memory_increase:.0%}; KLD +{th.max_kld_increase} nats; "
                 f"perplexity +{th.max_ppl_increase:.0%}; accuracy -{th.max_accuracy_drop:.0%}."
                 + (f" --normalize: {sum(len(c.normalized) for c in cmp.cells)} metric(s) in "
                    f"{sum(bool(c.normalized) for c in cmp.cells)} of {len(cmp.cells)} cell(s) scaled by calibration."
                    if cmp.normalized else "")
                 + (" Inconclusive cells (too few samples) count as failures; --allow-inconclusive passes them."
                    if any(c.verdict.startswith("inconclusive") for c in cmp.cells) else ""))
    lines.append("")
    for w in cmp.warnings:
        lines += [f"> **Warning:** {w}", ""]
    lines += ["| cell | verdict | metric | baseline | new | ratio new/baseline [CI], p | |",
              "|---|---|---|---|---|---|---|"]
    for c in cmp.cells:
        verdict = f"**{c.verdict}**" if c.regression else c.verdict
        if not c.metrics:
            lines.append(f"| {c.label} | {verdict} | | | | | {'; '.join(c.notes)} |")
            continue
        for i, mc in enumerate(c.metrics):
            head = (c.label, verdict) if i == 0 else ("", "")
            lines.append(f"| {head[0]} | {head[1]} | {mc.label} | {_fmt(mc.baseline)} | {_fmt(mc.new)} | "
                         f"{_ratio_text(mc)} | {mc.verdict}{': ' + mc.note if mc.note else ''} |")
        if c.notes:
            lines.append(f"| | | notes | | | | {'; '.join(c.notes)} |")
    if cmp.only_baseline:
        lines += ["", f"Only in the baseline ({len(cmp.only_baseline)}): " + "; ".join(cmp.only_baseline)]
    if cmp.only_new:
        lines += ["", f"Only in the new run ({len(cmp.only_new)}): " + "; ".join(cmp.only_new)]
    return "\n".join(lines) + "\n"


def summary_table(cmp: Comparison) -> Any:
    from rich.table import Table

    t = Table(title="bench compare (ratio = new / baseline, Hodges-Lehmann estimate with its CI)")
    for col in ("cell", "verdict", "decode tok/s ratio", "prefill tok/s ratio", "TTFT ratio", "peak RSS ratio", "notes"):
        t.add_column(col, overflow="fold")
    for c in cmp.cells:
        by = {mc.metric: mc for mc in c.metrics}

        def cell(key: str) -> str:
            mc = by.get(key)
            return "-" if mc is None else f"{_ratio_text(mc)} {mc.verdict}"

        color = "red" if c.regression else ("green" if c.verdict in ("faster", "fixed") else "")
        verdict = f"[{color}]{c.verdict}[/{color}]" if color else c.verdict
        notes = c.notes + [f"{mc.label}: {mc.verdict} {mc.note}" for mc in c.metrics
                           if mc.metric not in ("decode_tps", "prefill_tps", "ttft_s", "peak_rss_bytes") and mc.verdict == "worse"]
        t.add_row(c.label, verdict, cell("decode_tps"), cell("prefill_tps"), cell("ttft_s"), cell("peak_rss_bytes"),
                  "; ".join(notes))
    return t
