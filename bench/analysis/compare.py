"""``bench compare BASELINE NEW``: per matching cell, the ratio of each metric with a confidence
interval from the raw samples, a significance test, and a verdict that noise alone cannot fail.

A speed metric is ``faster`` or ``slower`` only when the Mann-Whitney U test rejects "same" at
``alpha`` *and* the Hodges-Lehmann ratio moves by at least ``min_effect`` (see significance.py).
Memory and quality have one value per cell, so they are gated by thresholds (and, where the
row carries a standard error, a z test), not by a rank test.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from bench.analysis.significance import RatioEstimate, ratio_estimate, smallest_p, two_proportion_z, z_critical
from bench.errors import BenchError
from bench.fmt import fmt
from bench.results.kinds import Basis, MachineVerdict
from bench.results.schema import Row
from bench.results.serving import ServingRow
from bench.serving import metrics as sm
from bench.serving.metrics import RequestTrace

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
    serving_gate: tuple[str, ...] = ("output_tps", "ttft_s")  # serving metrics that decide a load point


class MetricVerdict(str, Enum):
    """How one metric moved from the baseline to the new run."""

    BETTER = "better"
    WORSE = "worse"
    SAME = "same"
    INCONCLUSIVE = "inconclusive"  # too few samples to test
    NA = "n/a"  # not measured in either run


class CellVerdict(str, Enum):
    """How a cell moved, on its gated speed metrics (memory and quality are listed beside it)."""

    FASTER = "faster"
    SLOWER = "slower"
    SAME = "same"
    INCONCLUSIVE = "inconclusive"
    DISTURBED = "disturbed"  # a speed moved while the machine was not all there (others' load, steal, clocks)
    FAILED = "failed"  # ok in the baseline, not ok now
    FIXED = "fixed"  # not ok in the baseline, ok now
    NOT_COMPARABLE = "not comparable"  # not ok in either


@dataclass
class MetricComparison:
    metric: str
    label: str
    baseline: float | None
    new: float | None
    estimate: RatioEstimate | None = None
    verdict: MetricVerdict = MetricVerdict.SAME
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
    verdict: CellVerdict
    regression: bool
    metrics: list[MetricComparison] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    normalized: list[str] = field(default_factory=list)  # metrics scaled by calibration (--normalize)

    @property
    def worse_besides_speed(self) -> list[str]:
        """Memory or quality metrics that got worse: each fails the cell whatever its speed did."""
        return [mc.label for mc in self.metrics if mc.metric not in SPEED_METRICS and mc.verdict is MetricVerdict.WORSE]

    @property
    def verdict_text(self) -> str:
        worse = self.worse_besides_speed
        return self.verdict.value + (f", {', '.join(worse)} worse" if worse else "")


@dataclass
class ServingComparison:
    """One serving load point (model, variant, server, tier, workload, load) in both runs."""

    label: str
    baseline: ServingRow
    new: ServingRow
    verdict: CellVerdict
    regression: bool
    metrics: list[MetricComparison] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def verdict_text(self) -> str:
        return self.verdict.value


@dataclass
class Comparison:
    cells: list[CellComparison]
    only_baseline: list[str]
    only_new: list[str]
    warnings: list[str]
    thresholds: Thresholds
    normalized: bool
    serving: list[ServingComparison] = field(default_factory=list)
    serving_only_baseline: list[str] = field(default_factory=list)
    serving_only_new: list[str] = field(default_factory=list)

    @property
    def regressions(self) -> list[CellComparison | ServingComparison]:
        """Cells and serving load points that fail the gate."""
        return [c for c in self.cells if c.regression] + [p for p in self.serving if p.regression]


def row_label(base: Row | None, new: Row) -> str:
    """A cell as its rows measured it: an emulated tier's speeds are its hosts', so the label names
    them (``vm under laptop-4c-8g's caps``) where it would otherwise name the tier alone."""
    c = new.config
    rows = [r for r in (base, new) if r is not None]
    if all(r.basis is Basis.MEASURED for r in rows):
        return c.label()
    hosts = "/".join(dict.fromkeys(r.host for r in rows))
    return (f"{c.model_id}:{c.variant_id} {c.backend} {hosts} under {new.tier_label}'s caps "
            f"p={c.prompt_tokens} n={c.gen_tokens}")


def _latest_by_key(rows: Sequence[Row]) -> dict[tuple, Row]:
    out: dict[tuple, Row] = {}
    for r in sorted(rows, key=lambda r: r.created_at):
        out[r.config.identity()] = r  # the latest row of a cell wins
    return out


def environment_differences(base: Row, new: Row) -> list[str]:
    """Hardware and library differences that make a speed comparison suspect."""
    out = []
    hb, hn = base.environment.host, new.environment.host
    for key in ("cpu_model", "logical_cores", "ram_bytes"):
        if getattr(hb, key) != getattr(hn, key):
            out.append(f"hardware {key}: {getattr(hb, key)!r} -> {getattr(hn, key)!r}")
    gb, gn = [g.get("name") for g in hb.gpus], [g.get("name") for g in hn.gpus]
    if gb != gn:
        out.append(f"hardware GPUs: {gb} -> {gn}")
    pb, pn = base.environment.packages, new.environment.packages
    for pkg in sorted(set(pb) | set(pn)):
        if pb.get(pkg) != pn.get(pkg):
            out.append(f"library {pkg}: {pb.get(pkg)} -> {pn.get(pkg)}")
    return out


def compare_rows(baseline: Sequence[Row], new: Sequence[Row], thresholds: Thresholds | None = None,
                 normalize: bool = False, baseline_serving: Sequence[ServingRow] = (),
                 new_serving: Sequence[ServingRow] = ()) -> Comparison:
    """Every cell, and every serving load point, that both runs measured."""
    th = thresholds or Thresholds()
    for g in th.gate:
        if g not in SPEED_METRICS:
            raise BenchError(f"unknown gated metric {g!r}; choose from {', '.join(SPEED_METRICS)}")
    b_by, n_by = _latest_by_key(baseline), _latest_by_key(new)
    common = [k for k in n_by if k in b_by]
    served, s_only_base, s_only_new = compare_serving(baseline_serving, new_serving, th)
    if not common and not served:
        raise BenchError(f"no matching cells: the baseline has {len(b_by)} cell(s) and "
                         f"{len(s_only_base)} serving point(s), the new run {len(n_by)} and {len(s_only_new)}, "
                         "and none share model, variant, backend (or server), profile and lengths (and load)")
    warnings: list[str] = []
    env_seen: set[str] = set()
    cells = []
    for k in common:
        cells.append(compare_cell(b_by[k], n_by[k], th, normalize))
        env_seen.update(environment_differences(b_by[k], n_by[k]))
    if env_seen:
        warnings.append("DIFFERENT HARDWARE OR LIBRARIES between the runs"
                        + (" (see which metrics were normalized)" if normalize else
                           " (speed ratios mix code and machine; consider --normalize)")
                        + ": " + "; ".join(sorted(env_seen)))
    missing = [k for k in b_by if k not in n_by]
    if missing:
        warnings.append(f"{len(missing)} baseline cell(s) are missing from the new run: "
                        + "; ".join(row_label(None, b_by[k]) for k in missing))
    return Comparison(cells=cells, only_baseline=[row_label(None, b_by[k]) for k in b_by if k not in n_by],
                      only_new=[row_label(None, n_by[k]) for k in n_by if k not in b_by],
                      warnings=warnings, thresholds=th, normalized=normalize, serving=served,
                      serving_only_baseline=s_only_base, serving_only_new=s_only_new)


def _samples(row: Row, key: str) -> list[float]:
    return [s[key] for s in row.samples if isinstance(s.get(key), (int, float)) and s[key] > 0]


def _scale(base: Row, new: Row, metric: SpeedMetric) -> tuple[float | None, str]:
    """Factor that puts the new row's metric on the baseline machine's footing: the host's calibration
    for cells on the CPU, the GPU's (``gpu_*``) for cells with every layer on a GPU. Cells on
    different devices, or with part of the model offloaded, are left as measured."""
    devices = {base.config.device, new.config.device}
    name = metric.calibration
    if "cuda" in devices:
        if devices != {"cuda"}:
            other = "".join(devices - {"cuda"})
            return None, f"{metric.key}: not normalized, one cell ran on cuda and the other on {other}"
        if base.config.n_gpu_layers != -1 or new.config.n_gpu_layers != -1:
            return None, f"{metric.key}: not normalized, a cell offloaded only part of the model to the GPU"
        name = "gpu_" + name
    cal_b, cal_n = base.environment.calibration, new.environment.calibration
    cb = getattr(cal_b, name) if cal_b else None
    cn = getattr(cal_n, name) if cal_n else None
    if not cb or not cn:
        return None, f"{metric.key}: not normalized, a row has no calibration ({name})"
    factor = cb / cn if metric.higher_is_better else cn / cb
    return factor, f"{metric.key} x{factor:.3f} ({name} {cn:.3g} here vs {cb:.3g} in the baseline)"


def _notes(base: Row, new: Row) -> list[str]:
    notes = [f"{f}: {getattr(base.config, f)} -> {getattr(new.config, f)}" for f in LOOSE_FIELDS
             if f != "timeout_s" and getattr(base.config, f) != getattr(new.config, f)]
    if base.host != new.host:
        notes.append(f"host: {base.host} -> {new.host}")
    return notes


def _speed_metric(base: Row, new: Row, m: SpeedMetric, th: Thresholds, normalize: bool,
                  notes: list[str]) -> tuple[MetricComparison, bool]:
    """One speed metric's ratio, CI and verdict; and whether it was normalized."""
    xs, ys = _samples(base, m.key), _samples(new, m.key)
    mc = MetricComparison(m.key, m.label, _mean(xs), _mean(ys))
    dropped = (len(base.samples) - len(xs), len(new.samples) - len(ys))
    if any(dropped):
        notes.append(f"{m.key}: {dropped[0]} baseline and {dropped[1]} new sample(s) had no value")
    if not xs or not ys:
        if xs and not ys:  # measured before, not now: never a silent pass
            mc.verdict, mc.note = MetricVerdict.WORSE, "the baseline has samples, the new run none"
        else:
            mc.verdict, mc.note = MetricVerdict.NA, "no samples"
        return mc, False
    normalized = False
    if normalize:
        factor, how = _scale(base, new, m)
        notes.append(how)
        if factor:
            ys = [y * factor for y in ys]
            mc.new = _mean(ys)
            normalized = True
    _test(mc, xs, ys, m.higher_is_better, th, "run with -r 5 or more")
    return mc, normalized


def _test(mc: MetricComparison, xs: Sequence[float], ys: Sequence[float], higher_is_better: bool,
          th: Thresholds, more: str) -> None:
    """The ratio new/baseline with its interval (Hodges-Lehmann), and the verdict: better or worse
    only when the U test rejects "same" at alpha and the ratio moved by at least min_effect."""
    est = ratio_estimate(xs, ys, th.alpha)
    mc.estimate = est
    moved = abs(math.log(est.ratio)) >= math.log1p(th.min_effect)
    if est.p_value < th.alpha and moved:
        mc.verdict = MetricVerdict.BETTER if (est.ratio > 1) == higher_is_better else MetricVerdict.WORSE
    elif smallest_p(len(xs), len(ys)) >= th.alpha:
        mc.verdict = MetricVerdict.INCONCLUSIVE
        mc.note = (f"{len(xs)} vs {len(ys)} samples cannot reach p < {th.alpha} (smallest possible "
                   f"p = {smallest_p(len(xs), len(ys)):.3f}); {more}")


def _gated_verdict(metrics: list[MetricComparison], gate: tuple[str, ...]) -> CellVerdict:
    speed = {mc.verdict for mc in metrics if mc.metric in gate}
    if MetricVerdict.WORSE in speed:
        return CellVerdict.SLOWER
    if MetricVerdict.INCONCLUSIVE in speed:
        return CellVerdict.INCONCLUSIVE  # too few samples to tell: not "same"
    if MetricVerdict.BETTER in speed:
        return CellVerdict.FASTER
    return CellVerdict.SAME


def compare_cell(base: Row, new: Row, th: Thresholds, normalize: bool) -> CellComparison:
    label = row_label(base, new)
    notes = _notes(base, new)
    if base.status != "ok" or new.status != "ok":
        if base.status == "ok":
            return CellComparison(label, base, new, CellVerdict.FAILED, True, [],
                                  notes + [f"new run: {new.status}: {new.reason}"])
        verdict = CellVerdict.FIXED if new.status == "ok" else CellVerdict.NOT_COMPARABLE
        return CellComparison(label, base, new, verdict, False, [], notes + [f"baseline: {base.status}: {base.reason}"])
    metrics: list[MetricComparison] = []
    normalized: list[str] = []
    for m in SPEED_METRICS.values():
        mc, scaled = _speed_metric(base, new, m, th, normalize, notes)
        metrics.append(mc)
        if scaled:
            normalized.append(m.key)
    metrics += _memory_metrics(base, new, th) + _quality_metrics(base, new, th) + _task_metrics(base, new, th)
    verdict = _gated_verdict(metrics, th.gate)
    disturbed = _disturbances(base, new)
    if disturbed and verdict in (CellVerdict.SLOWER, CellVerdict.FASTER):
        notes += disturbed  # not a code change that can be trusted either way: measure again
        verdict = CellVerdict.DISTURBED
    cell = CellComparison(label, base, new, verdict, False, metrics, notes, sorted(normalized))
    unsure = verdict in (CellVerdict.INCONCLUSIVE, CellVerdict.DISTURBED)
    cell.regression = (verdict is CellVerdict.SLOWER or bool(cell.worse_besides_speed)
                       or (unsure and not th.allow_inconclusive))
    return cell


def _disturbances(base: Row, new: Row) -> list[str]:
    """The machine-state flags of either run (bench.measuring.machine_state)."""
    out = []
    for name, row in (("baseline", base), ("new run", new)):
        out += [f"{name}: {flag}" for flag in MachineVerdict.of(row.environment.machine_state).flags]
    return out


def _mean(xs: Sequence[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def _memory_metrics(base: Row, new: Row, th: Thresholds) -> list[MetricComparison]:
    out = []
    for key, label in (("peak_rss_bytes", "peak RSS bytes"), ("peak_vram_reserved_bytes", "peak VRAM bytes")):
        b, n = getattr(base.memory, key), getattr(new.memory, key)
        if b and not n:
            out.append(MetricComparison(key, label, b, None, verdict=MetricVerdict.WORSE,
                                        note="not measured in the new run"))
            continue
        if not b or not n:
            continue
        mc = MetricComparison(key, label, b, n)
        if n > b * (1 + th.max_memory_increase):
            mc.verdict, mc.note = MetricVerdict.WORSE, f"grew more than {th.max_memory_increase:.0%}"
        elif n < b * (1 - th.max_memory_increase):
            mc.verdict = MetricVerdict.BETTER
        out.append(mc)
    return out


def _threshold_verdict(new_minus_base: float, allowed: float, z: float | None, alpha: float) -> MetricVerdict:
    """Worse/better only past the allowed change and, where a z statistic exists, significant."""
    crit = z_critical(alpha)
    if new_minus_base > allowed and (z is None or z > crit):
        return MetricVerdict.WORSE
    if -new_minus_base > allowed and (z is None or -z > crit):
        return MetricVerdict.BETTER
    return MetricVerdict.SAME


def _quality_metrics(base: Row, new: Row, th: Thresholds) -> list[MetricComparison]:
    qb, qn = base.quality, new.quality
    if not qb.ok:
        return []
    if not qn.ok:
        return [MetricComparison("quality", "quality", None, None, verdict=MetricVerdict.WORSE,
                                 note=f"measured in the baseline; new run: {qn.status or 'not run'} "
                                      f"{qn.reason or ''}".strip())]
    out = []
    if qb.kld and qn.kld and qb.kld.mean is not None and qn.kld.mean is not None:
        mc = MetricComparison("kld_mean", "KLD mean", qb.kld.mean, qn.kld.mean)
        diff = qn.kld.mean - qb.kld.mean
        z = two_proportion_z(qb.kld.mean, qb.kld.se or 0.0, qn.kld.mean, qn.kld.se or 0.0)
        mc.verdict = _threshold_verdict(diff, th.max_kld_increase, z, th.alpha)
        if mc.verdict is MetricVerdict.WORSE:
            mc.note = f"+{diff:.4f} nats (z = {z:.1f})"
        out.append(mc)
    if qb.perplexity and qn.perplexity:
        mc = MetricComparison("perplexity", "perplexity", qb.perplexity, qn.perplexity)
        mc.verdict = _threshold_verdict(qn.perplexity / qb.perplexity - 1, th.max_ppl_increase, None, th.alpha)
        if mc.verdict is MetricVerdict.WORSE:
            mc.note = f"grew more than {th.max_ppl_increase:.0%}"
        out.append(mc)
    return out


def _task_metrics(base: Row, new: Row, th: Thresholds) -> list[MetricComparison]:
    tb, tn = base.task, new.task
    if not tb.ok:
        return []
    if not tn.ok:
        return [MetricComparison("task_accuracy", "task accuracy", tb.accuracy, None, verdict=MetricVerdict.WORSE,
                                 note=f"measured in the baseline; new run: {tn.status or 'not run'}")]
    assert tb.accuracy is not None and tn.accuracy is not None
    mc = MetricComparison("task_accuracy", f"accuracy ({tn.name or 'task'})", tb.accuracy, tn.accuracy)
    z = two_proportion_z(tb.accuracy, tb.accuracy_se or 0.0, tn.accuracy, tn.accuracy_se or 0.0)
    # lower accuracy is worse: compare the drop (base - new) against the allowed drop, with -z
    mc.verdict = _threshold_verdict(tb.accuracy - tn.accuracy, th.max_accuracy_drop, -z, th.alpha)
    if mc.verdict is MetricVerdict.WORSE:
        mc.note = f"-{tb.accuracy - tn.accuracy:.1%} (z = {z:.1f})"
    return [mc]


# -- serving load points ----------------------------------------------------------------------
@dataclass(frozen=True)
class ServingMetric:
    key: str
    label: str
    higher_is_better: bool
    per_request: Callable[[RequestTrace], float | None]  # bench/serving/metrics.py, over a completed request


SERVING_METRICS: dict[str, ServingMetric] = {m.key: m for m in (
    ServingMetric("output_tps", "output tok/s per request (n / e2e)", True, sm.output_rate),
    ServingMetric("ttft_s", "TTFT s", False, sm.ttft),
)}
STATUS_RANK = {"failed": 0, "partial": 1, "ok": 2}


def compare_serving(baseline: Sequence[ServingRow], new: Sequence[ServingRow],
                    th: Thresholds) -> tuple[list[ServingComparison], list[str], list[str]]:
    """The newest point of each load (``ServingRow.key``) in both runs, compared; and the labels of
    the points only one run has."""
    from bench.analysis.serving import latest_points

    b_by = {p.key(): p for p in latest_points(baseline)}
    n_by = {p.key(): p for p in latest_points(new)}
    out = [compare_point(b_by[k], n_by[k], th) for k in n_by if k in b_by]
    only_base = [p.label() for k, p in b_by.items() if k not in n_by]
    return out, only_base, [p.label() for k, p in n_by.items() if k not in b_by]


def compare_point(base: ServingRow, new: ServingRow, th: Thresholds) -> ServingComparison:
    """Per gated serving metric, the ratio new/baseline over the points' completed requests (each
    request one sample: the U test and Hodges-Lehmann interval of significance.py); a point that
    completed fewer of its requests than before is a regression whatever its speed."""
    label = new.label()
    notes = [f"{name}: {p.status}: {p.reason}" for name, p in (("baseline", base), ("new run", new))
             if p.status != "ok"]
    rb, rn = STATUS_RANK[base.status], STATUS_RANK[new.status]
    if rn < rb:
        return ServingComparison(label, base, new, CellVerdict.FAILED, True, [], notes)
    if rn == 0:
        return ServingComparison(label, base, new, CellVerdict.NOT_COMPARABLE, False, [], notes)
    if rb == 0:
        return ServingComparison(label, base, new, CellVerdict.FIXED, False, [], notes)
    metrics = []
    tb, tn = base.traces(), new.traces()
    for m in SERVING_METRICS.values():
        xs = [v for v in map(m.per_request, tb) if v is not None and v > 0]
        ys = [v for v in map(m.per_request, tn) if v is not None and v > 0]
        mc = MetricComparison(m.key, m.label, _median(xs) if xs else None, _median(ys) if ys else None)
        if xs and ys:
            _test(mc, xs, ys, m.higher_is_better, th, "measure more requests per point (bench serve -n)")
        else:
            mc.verdict = MetricVerdict.WORSE if xs else MetricVerdict.NA
            mc.note = "the baseline has requests, the new run none" if xs else "no completed requests"
        metrics.append(mc)
    ob, on = base.point_summary.output_tps, new.point_summary.output_tps
    if ob and on:
        notes.append(f"the point's output tok/s: {ob:.4g} -> {on:.4g} (x{on / ob:.3f})")
    lagged = [name for name, p in (("baseline", base), ("new run", new))
              if p.point_client.kept_up is False]
    verdict = _gated_verdict(metrics, th.serving_gate)
    if lagged and verdict in (CellVerdict.SLOWER, CellVerdict.FASTER):
        notes.append(f"the client fell behind its schedule in the {' and the '.join(lagged)}: measure again")
        verdict = CellVerdict.DISTURBED
    unsure = verdict in (CellVerdict.INCONCLUSIVE, CellVerdict.DISTURBED)
    regression = verdict is CellVerdict.SLOWER or (unsure and not th.allow_inconclusive)
    return ServingComparison(label, base, new, verdict, regression, metrics, notes)


def _median(xs: Sequence[float]) -> float:
    s = sorted(xs)
    k = len(s) // 2
    return s[k] if len(s) % 2 else (s[k - 1] + s[k]) / 2


# -- presentation -----------------------------------------------------------------------------
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
    lines.append(f"**{'REGRESSION' if n_reg else 'OK'}**: {len(cmp.cells)} matching cell(s)"
                 + (f" and {len(cmp.serving)} serving load point(s)" if cmp.serving else "")
                 + f", {n_reg} regression(s). "
                 f"Speed verdicts need Mann-Whitney p < {th.alpha} and a change of at least {th.min_effect:.0%} "
                 f"(gated: {', '.join(th.gate)}); memory +{th.max_memory_increase:.0%}; "
                 f"KLD +{th.max_kld_increase} nats; "
                 f"perplexity +{th.max_ppl_increase:.0%}; accuracy -{th.max_accuracy_drop:.0%}."
                 + (f" --normalize: {sum(len(c.normalized) for c in cmp.cells)} metric(s) in "
                    f"{sum(bool(c.normalized) for c in cmp.cells)} of {len(cmp.cells)} cell(s) scaled by calibration."
                    if cmp.normalized else "")
                 + (" Inconclusive cells (too few samples) count as failures; --allow-inconclusive passes them."
                    if any(c.verdict is CellVerdict.INCONCLUSIVE for c in cmp.cells) else ""))
    lines.append("")
    for w in cmp.warnings:
        lines += [f"> **Warning:** {w}", ""]
    if cmp.cells:
        lines += ["| cell | verdict | metric | baseline | new | ratio new/baseline [CI], p | |",
                  "|---|---|---|---|---|---|---|"]
    for c in cmp.cells:
        verdict = f"**{c.verdict_text}**" if c.regression else c.verdict_text
        if not c.metrics:
            lines.append(f"| {c.label} | {verdict} | | | | | {'; '.join(c.notes)} |")
            continue
        for i, mc in enumerate(c.metrics):
            head = (c.label, verdict) if i == 0 else ("", "")
            lines.append(f"| {head[0]} | {head[1]} | {mc.label} | {fmt(mc.baseline, 'sig')} | {fmt(mc.new, 'sig')} | "
                         f"{_ratio_text(mc)} | {mc.verdict.value}{': ' + mc.note if mc.note else ''} |")
        if c.notes:
            lines.append(f"| | | notes | | | | {'; '.join(c.notes)} |")
    if cmp.only_baseline:
        lines += ["", f"Only in the baseline ({len(cmp.only_baseline)}): " + "; ".join(cmp.only_baseline)]
    if cmp.only_new:
        lines += ["", f"Only in the new run ({len(cmp.only_new)}): " + "; ".join(cmp.only_new)]
    lines += serving_markdown(cmp)
    return "\n".join(lines) + "\n"


def serving_markdown(cmp: Comparison) -> list[str]:
    """The serving load points under their own heading: one line per metric, as for cells."""
    if not (cmp.serving or cmp.serving_only_baseline or cmp.serving_only_new):
        return []
    n_reg = sum(p.regression for p in cmp.serving)
    lines = ["", "### Serving under load", "",
             f"{len(cmp.serving)} matching load point(s), {n_reg} regression(s). Each completed request is one "
             f"sample (gated: {', '.join(cmp.thresholds.serving_gate)}); a point that completed fewer of its "
             "requests than in the baseline is a regression.", "",
             "| load point | verdict | metric | baseline median | new median | ratio new/baseline [CI], p | |",
             "|---|---|---|---|---|---|---|"]
    for c in cmp.serving:
        verdict = f"**{c.verdict_text}**" if c.regression else c.verdict_text
        for i, mc in enumerate(c.metrics or [None]):
            head = (c.label, verdict) if i == 0 else ("", "")
            if mc is None:
                lines.append(f"| {head[0]} | {head[1]} | | | | | {'; '.join(c.notes)} |")
                continue
            lines.append(f"| {head[0]} | {head[1]} | {mc.label} | {fmt(mc.baseline, 'sig')} | {fmt(mc.new, 'sig')} | "
                         f"{_ratio_text(mc)} | {mc.verdict.value}{': ' + mc.note if mc.note else ''} |")
        if c.metrics and c.notes:
            lines.append(f"| | | notes | | | | {'; '.join(c.notes)} |")
    if cmp.serving_only_baseline:
        lines += ["", f"Serving points only in the baseline ({len(cmp.serving_only_baseline)}): "
                  + "; ".join(cmp.serving_only_baseline)]
    if cmp.serving_only_new:
        lines += ["", f"Serving points only in the new run ({len(cmp.serving_only_new)}): "
                  + "; ".join(cmp.serving_only_new)]
    return lines


def _metric_cell(c: Any) -> Callable[[str], str]:
    """A table cell per metric of one compared cell or load point: its ratio and verdict."""
    by = {mc.metric: mc for mc in c.metrics}

    def cell(key: str) -> str:
        mc = by.get(key)
        return "-" if mc is None else f"{_ratio_text(mc)} {mc.verdict.value}"

    return cell


def _verdict_markup(c: Any) -> str:
    """The verdict in red for a regression, green for an improvement."""
    color = "red" if c.regression else ("green" if c.verdict in (CellVerdict.FASTER, CellVerdict.FIXED) else "")
    return f"[{color}]{c.verdict_text}[/{color}]" if color else c.verdict_text


def summary_table(cmp: Comparison) -> Any:
    from rich.table import Table

    t = Table(title="bench compare (ratio = new / baseline, Hodges-Lehmann estimate with its CI)")
    for col in ("cell", "verdict", "decode tok/s ratio", "prefill tok/s ratio", "TTFT ratio", "peak RSS ratio",
                "notes"):
        t.add_column(col, overflow="fold")
    for c in cmp.cells:
        cell, verdict = _metric_cell(c), _verdict_markup(c)
        shown = ("decode_tps", "prefill_tps", "ttft_s", "peak_rss_bytes")
        notes = c.notes + [f"{mc.label}: {mc.verdict.value} {mc.note}" for mc in c.metrics
                           if mc.metric not in shown and mc.verdict is MetricVerdict.WORSE]
        t.add_row(c.label, verdict, cell("decode_tps"), cell("prefill_tps"), cell("ttft_s"), cell("peak_rss_bytes"),
                  "; ".join(notes))
    return t


def serving_table(cmp: Comparison) -> Any:
    from rich.table import Table

    t = Table(title="bench compare: serving load points (ratio = new / baseline over per-request values)")
    for col in ("load point", "verdict", "output tok/s per request ratio", "TTFT ratio", "notes"):
        t.add_column(col, overflow="fold")
    for c in cmp.serving:
        cell, verdict = _metric_cell(c), _verdict_markup(c)
        t.add_row(c.label, verdict, cell("output_tps"), cell("ttft_s"), "; ".join(c.notes))
    return t
