"""Validation of the performance model against published measurements of real machines, on data it
was not fitted on.

    python -m bench.projection.validate                    # both splits, against the naive baseline
    python -m bench.projection.validate --entries          # and every entry's projection and error
    python -m bench.projection.validate --write-params     # refit on the training split: validation/model_params.json
    python -m bench.projection.validate --markdown PAGE    # also write the report as a Markdown page
    python -m bench.projection.validate --depth-markdown PAGE  # the depth section with every point

Training split: every machine not in validation/test_split.txt. The class parameters are fitted on it,
and each training machine is scored with parameters fitted without it (leave one machine out); the
error bands are the 10th/50th/90th percentiles of those out-of-sample log errors (a training entry's own
line is corrected and covered by bands fitted without its machine: nested). Test split: the
frozen list of machines no fit and no band ever read, scored with the parameters and bands of the
whole training split. Two ways of projecting each entry are scored:

    as rows get it   the machine's own published results of other models first (evidence), else
                     its figures: what `bench` does for a tier whose machine has published results
    formula only     the machine's figures alone: what a machine nobody measured gets

Baseline, on the same entries: decode = 0.6 x the datasheet peak bandwidth / the file's bytes.

Depth: each depth series (one model on one machine at several prefilled depths: the published ones whose
model's KV shape is sourced in depth_shapes.csv, and the suite's own sweep in depth_suite.csv) is scored
as ratios to its shallowest point, decode(D) / decode(D0) and prefill(D) / prefill(D0), which cancel the
machine's unknown efficiency and test the depth term alone: against "depth ignored" (ratio 1), the
bandwidth-only rule (gamma 0), and the model with gamma fitted in sample (all published series of the
group) and out of sample (the series' machine left out; the suite's sweep is never fitted).
Files (folder: --data, $BENCH_VALIDATION, ./validation or the repo's): measurements.csv,
machines.yaml, test_split.txt, imported/*.jsonl, model_params.json. Bad input: one line, exit 2.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import statistics
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bench.errors import BenchError
from bench.projection.evidence import (
    DEVICE_CLASSES,
    DepthSeries,
    EvidenceSet,
    load_evidence,
    published_depth_series,
    suite_depth_series,
)
from bench.projection.fit import (
    MIN_BAND_ENTRIES,
    MIN_BAND_MACHINES,
    Scored,
    band_for,
    bands_from,
    decode_ratios,
    depth_group,
    fit_attn_cost,
    fit_attn_costs,
    fit_params,
    hardware_of,
    leave_one_machine_out,
    prefill_ratios,
    score_all,
)
from bench.projection.model import GB, ClassParams, Estimate

BASELINE_SHARE = 0.6  # the naive rule the model must beat: 0.6 x datasheet peak / file bytes
GOALS = {"decode_median_pct": 15.0, "decode_within_35": 0.85, "coverage": (0.70, 0.90), "prefill_median_pct": 30.0,
         "prefill_min_entries": 20}
PARAMS_FILE = "model_params.json"


@dataclass(frozen=True)
class Stat:
    n: int
    median_abs_pct: float
    within_35: float
    median_signed_pct: float
    coverage: float | None

    def line(self, label: str) -> str:
        if not self.n:
            return f"  {label:44} n=0"
        cov = f"{self.coverage:4.0%}" if self.coverage is not None else "   -"
        return (f"  {label:44} n={self.n:<4} median |err| {self.median_abs_pct:5.1f}%  within 35% {self.within_35:4.0%}"
                f"  signed {self.median_signed_pct:+6.1f}%  in interval {cov}")


def _err_pct(measured: float, projected: float) -> float:
    """(projected - measured) / measured in %: positive = the model is optimistic."""
    return (projected / measured - 1.0) * 100.0


class BandsWithout:
    """Training-split bands fitted without the scored machine (nested leave one machine out): a training
    entry's bias correction and interval are out of sample too, as a test entry's are."""

    def __init__(self, scored: list[Scored]) -> None:
        self.scored = scored
        self._cache: dict[str, dict[str, dict[str, Any]]] = {}

    def __call__(self, machine_id: str) -> dict[str, dict[str, Any]]:
        if machine_id not in self._cache:
            self._cache[machine_id] = bands_from([s for s in self.scored if s.machine.id != machine_id])
        return self._cache[machine_id]


Bands = dict[str, dict[str, Any]] | BandsWithout


def _interval(s: Scored, bands: Bands) -> tuple[float, float, float] | None:
    """(value, low, high) of the scored estimate with its band, as a projection would show it."""
    if not isinstance(s.estimate, Estimate):
        return None
    table = bands(s.machine.id) if isinstance(bands, BandsWithout) else bands
    band = band_for(table, s.metric, s.machine.device_class, s.estimate.basis)
    return band.correct(s.estimate.value) if band else None


def stat(scored: list[Scored], bands: Bands | None, corrected: bool = True) -> Stat:
    """Errors of the (band-corrected, where a band exists) projections; coverage of their intervals."""
    errs, covered, with_band = [], 0, 0
    for s in scored:
        if not isinstance(s.estimate, Estimate) or not s.measured:
            continue
        iv = _interval(s, bands) if bands is not None else None
        value = iv[0] if (iv and corrected) else s.estimate.value
        errs.append(_err_pct(s.measured, value))
        if iv:
            with_band += 1
            covered += iv[1] <= s.measured <= iv[2]
    if not errs:
        return Stat(0, math.nan, math.nan, math.nan, None)
    a = [abs(x) for x in errs]
    return Stat(len(errs), statistics.median(a), sum(x <= 35 for x in a) / len(a), statistics.median(errs),
                covered / with_band if with_band else None)


def baseline(scored: list[Scored]) -> tuple[Stat, Stat]:
    """The naive rule and the model on the same entries (decode, with a datasheet peak, model projected)."""
    pairs = []
    for s in scored:
        if s.metric != "decode_tps" or not isinstance(s.estimate, Estimate) or not s.entry.size_bytes:
            continue
        peak = hardware_of(s.machine).bandwidth_peak
        if peak:
            pairs.append((s, BASELINE_SHARE * peak / s.entry.size_bytes))
    base = [_err_pct(s.measured, p) for s, p in pairs]
    if not base:
        return Stat(0, math.nan, math.nan, math.nan, None), Stat(0, math.nan, math.nan, math.nan, None)
    a = [abs(x) for x in base]
    return (Stat(len(a), statistics.median(a), sum(x <= 35 for x in a) / len(a), statistics.median(base), None),
            [s for s, _ in pairs])  # type: ignore[return-value]


@dataclass(frozen=True)
class DepthRow:
    """One deeper point of a depth series: its measured ratio to the shallowest point and each rule's."""

    series: DepthSeries
    metric: str                 # decode or prefill
    depth: int
    measured: float
    bandwidth_only: float | None  # decode: gamma 0; prefill: None (the FLOP term is the model)
    model_in: float             # gamma fitted on every published series of the group
    model_out: float            # gamma fitted without the series' machine (the suite's: never fitted)
    gamma_out: float


@dataclass
class DepthValidation:
    rows: list[DepthRow]
    gammas: dict[str, float | None]       # fitted in sample, per group
    left_out: list[str]
    series: list[DepthSeries]
    applied: dict[str, float]             # what the model uses: gamma where it beat bandwidth-only out of sample


def _applied(rows: list[DepthRow], gammas: dict[str, float | None]) -> dict[str, float]:
    """A group's gamma enters the model only if, on its published training-split series with the series'
    machine left out of the fit, it beats the bandwidth-only rule (median |err| of the decode ratio); else
    0. A test-split series never decides it."""
    out = {}
    for group, g in gammas.items():
        rs = [r for r in rows if r.metric == "decode" and r.series.origin == "published" and not r.series.test
              and depth_group(r.series.device_class) == group and r.bandwidth_only is not None]
        if not g or not rs:
            out[group] = 0.0
            continue
        model = statistics.median(_ratio_err(r.measured, r.model_out) for r in rs)
        base = statistics.median(_ratio_err(r.measured, r.bandwidth_only) for r in rs)  # type: ignore[arg-type]
        out[group] = g if model < base else 0.0
    return out


def depth_validation(ev: EvidenceSet, params: dict[str, ClassParams]) -> DepthValidation:
    """Every depth series scored as ratios (see the module's docstring)."""
    folder = ev.folder or Path(".")
    published, left_out = published_depth_series(ev, folder)
    suite = suite_depth_series(folder)

    def tau_of(cls: str) -> float:
        return params[cls].overhead_s if cls in params else 0.0

    gammas = fit_attn_costs(published, tau_of)
    rows: list[DepthRow] = []
    for s in published + suite:
        group = depth_group(s.device_class)
        g_in = gammas[group] or 0.0
        if s.origin == "published":
            others = [t for t in published if depth_group(t.device_class) == group and t.machine != s.machine]
            g_out = fit_attn_cost(others, tau_of) or 0.0
        else:
            g_out = g_in
        tau = tau_of(s.device_class)
        bw = {p.depth: r for p, _, r in decode_ratios(s, 0.0, tau)}
        fin = {p.depth: r for p, _, r in decode_ratios(s, g_in, tau)}
        for p, measured, r_out in decode_ratios(s, g_out, tau):
            rows.append(DepthRow(s, "decode", p.depth, measured, bw[p.depth], fin[p.depth], r_out, g_out))
        for p, measured, r in prefill_ratios(s):
            rows.append(DepthRow(s, "prefill", p.depth, measured, None, r, r, g_out))
    return DepthValidation(rows, gammas, left_out, published + suite, _applied(rows, gammas))


@dataclass
class Validation:
    ev: EvidenceSet
    params: dict[str, ClassParams]
    bands: dict[str, dict[str, Any]]
    train: list[Scored]
    test: list[Scored]
    depth: DepthValidation | None = None


def run(ev: EvidenceSet) -> Validation:
    train_ev = ev.train()
    params = fit_params(train_ev)
    train = leave_one_machine_out(train_ev)
    bands = bands_from([s for s in train])
    test = score_all(ev.test(), ev, params) if ev.test_machines else []
    depth = depth_validation(ev, params)
    # gamma enters every class's parameters (its group's in-sample value, where it beat bandwidth-only out of
    # sample); depth-0 entries of published
    # files have no attention shape, so their projections above do not change with it
    params = {cls: replace(p, attn_bytes_per_flop=depth.applied[depth_group(cls)]) for cls, p in params.items()}
    return Validation(ev, params, bands, train, test, depth)


def _pick(scored: list[Scored], metric: str, mode: str) -> list[Scored]:
    return [s for s in scored if s.metric == metric and s.mode == mode]


def _goal_lines(v: Validation) -> list[str]:
    dec = stat(_pick(v.test, "decode_tps", "as rows get it"), v.bands)
    pre = stat(_pick(v.test, "prefill_tps", "as rows get it"), v.bands)
    base, same = baseline(_pick(v.test, "decode_tps", "as rows get it"))
    model_same = stat(same, v.bands) if same else Stat(0, math.nan, math.nan, math.nan, None)  # type: ignore[arg-type]
    lo, hi = GOALS["coverage"]

    def ok(flag: bool) -> str:
        return "met" if flag else "NOT met"

    return [
        "Goals on the test split (as rows get it):",
        f"  decode median |err| <= {GOALS['decode_median_pct']:.0f}%: {dec.median_abs_pct:.1f}% "
        f"({ok(dec.median_abs_pct <= GOALS['decode_median_pct'])})",
        f"  decode within 35% >= {GOALS['decode_within_35']:.0%}: {dec.within_35:.0%} "
        f"({ok(dec.within_35 >= GOALS['decode_within_35'])})",
        f"  decode interval coverage {lo:.0%}-{hi:.0%}: "
        + (f"{dec.coverage:.0%} ({ok(lo <= dec.coverage <= hi)})" if dec.coverage is not None else "none"),
        f"  naive baseline beaten on the same {base.n} entries: model {model_same.median_abs_pct:.1f}% vs baseline "
        f"{base.median_abs_pct:.1f}% median |err| ({ok(model_same.median_abs_pct < base.median_abs_pct)})",
        f"  prefill median |err| <= {GOALS['prefill_median_pct']:.0f}% on >= {GOALS['prefill_min_entries']} entries: "
        f"{pre.median_abs_pct:.1f}% on {pre.n} "
        f"({ok(pre.median_abs_pct <= GOALS['prefill_median_pct'] and pre.n >= GOALS['prefill_min_entries'])})",
    ]


def param_lines(params: dict[str, ClassParams]) -> list[str]:
    def f(x: float | None, fmt: str) -> str:
        return format(x, fmt) if x is not None else "-"

    lines = ["Parameters fitted on the training split (per device class):",
             f"  {'class':13} {'tau ms':>6} {'share peak':>10} {'share meas.':>11} {'GB/s/thread':>11} "
             f"{'kappa B/FLOP':>12}  decode machines  borrowed"]
    for cls in DEVICE_CLASSES:
        p = params[cls]
        borrowed = ",".join(p.n.get("borrowed", [])) or "-"
        if p.n.get("borrowed"):
            borrowed += f" (from {p.n['borrowed_from']})"
        lines.append(f"  {cls:13} {p.overhead_s * 1e3:6.1f} {f(p.share_peak, '.2f'):>10} "
                     f"{f(p.share_measured, '.2f'):>11} {f(p.thread_rate and p.thread_rate / GB, '.1f'):>11} "
                     f"{f(p.kappa, '.3f'):>12}  {p.n.get('decode_machines', 0):>15}  {borrowed}")
    return lines


def report(v: Validation, entries: bool = False) -> list[str]:
    ev = v.ev
    n_pub = len({e.publisher for e in ev.entries})
    test_m = sorted(v.ev.test_machines)
    lines = [f"Performance model validation: {len(ev.entries)} entries on {len(ev.machines)} machines from {n_pub} "
             f"publishers",
             f"Test split (frozen, validation/test_split.txt): {len(test_m)} machines, "
             f"{sum(1 for e in ev.entries if e.machine in ev.test_machines)} entries; training split: the other "
             f"{len(ev.machines) - len(test_m)} machines",
             "", *param_lines(v.params)]
    for metric, title in (("decode_tps", "Decode tok/s"), ("prefill_tps", "Prefill tok/s")):
        lines += ["", f"{title}: error = projected / measured - 1; the interval is the band of the projection's class "
                      "and basis"]
        nested = BandsWithout(v.train)
        for split, scored, bands in (("training, leave one machine out (bands too)", v.train, nested),
                                     ("TEST split, never fitted", v.test, v.bands)):
            lines.append(f" {split}:")
            for mode in ("as rows get it", "formula only"):
                picked = _pick(scored, metric, "formula" if mode == "formula only" else mode)
                lines.append(stat(picked, bands).line(mode))
                if metric == "decode_tps":
                    base, same = baseline(picked)
                    if base.n:
                        lines.append(base.line(f"  naive 0.6 x peak / bytes, same {base.n} entries"))
                        lines.append(stat(same, bands).line("  the model on those entries"))  # type: ignore[arg-type]
            for cls in DEVICE_CLASSES:
                for basis in ("evidence", "measured", "peak", "compute"):
                    picked = [s for s in scored if s.metric == metric and s.machine.device_class == cls
                              and isinstance(s.estimate, Estimate) and s.estimate.basis == basis
                              and (s.mode == "formula" or basis == "evidence")]
                    if picked:
                        lines.append(stat(picked, bands).line(f"    {cls}/{basis}"))
    if v.depth is not None:
        lines += ["", *depth_lines(v.depth, entries)]
    if v.test:
        lines += ["", *_goal_lines(v)]
    lines += ["", f"Bands need {MIN_BAND_ENTRIES} entries on {MIN_BAND_MACHINES} machines of a class and basis; "
                  "fewer: the basis's band pooled over all classes, named in the projection."]
    if entries:
        lines += ["", *entry_table(v)]
    return lines


def _ratio_err(measured: float, projected: float) -> float:
    return abs(projected / measured - 1.0) * 100.0


def _med(xs: list[float]) -> str:
    return f"{statistics.median(xs):5.1f}%" if xs else "    -"


def depth_lines(d: DepthValidation, entries: bool = False) -> list[str]:
    """The depth section: median |err| of the ratio to the shallowest point per class, origin and rule."""
    g = ", ".join(f"{k} {v:.3g}" if v is not None else f"{k} - (no series)" for k, v in d.gammas.items())
    lines = ["Depth: ratio to the series' shallowest point, error = |projected ratio / measured ratio - 1|; "
             "the ratio cancels the machine's efficiency and tests the depth term alone",
             f"  gamma (attention FLOPs at depth, in bytes of streaming time; in sample, every published series): {g}",
             "  the model uses: " + ", ".join(f"{k} {v:.3g}" + ("" if v else " (bandwidth only: gamma did not beat it "
                                                                       "out of sample)") for k, v in d.applied.items()),
             f"  {'metric':8} {'class':13} {'series from':34} {'points':>6} {'depth ignored':>13} "
             f"{'bandwidth only':>14} {'model in':>9} {'model out':>9}"]
    keys = sorted({(r.metric, r.series.device_class, r.series.origin.split(" (")[0]) for r in d.rows})
    for metric, cls, origin in keys:
        rs = [r for r in d.rows if (r.metric, r.series.device_class, r.series.origin.split(" (")[0])
              == (metric, cls, origin)]
        src = "published (others' machines fit)" if origin == "published" else "the suite's sweep (never fitted)"
        bw = [_ratio_err(r.measured, r.bandwidth_only) for r in rs if r.bandwidth_only is not None]
        ignored = _med([_ratio_err(r.measured, 1.0) for r in rs])
        lines.append(f"  {metric:8} {cls:13} {src:34} {len(rs):>6} {ignored:>13} "
                     f"{_med(bw):>14} {_med([_ratio_err(r.measured, r.model_in) for r in rs]):>9} "
                     f"{_med([_ratio_err(r.measured, r.model_out) for r in rs]):>9}")
    lines.append("  (prefill: the model's FLOP term F = 2N + 4 L d (D + p/2), nothing fitted: in = out; "
                 "decode, model out: gamma fitted without the series' machine)")
    lines.append("  Series scored (shape source):")
    for s in d.series:
        test = ", TEST split" if s.test else ""
        lines.append(f"    {s.id[:70]} [{s.device_class}, {s.engine}{test}]: L={s.n_layer} heads={s.n_head} "
                     f"kv_heads={s.n_head_kv} d={s.key_length} ({s.shape_source[:90]})")
    if d.left_out:
        lines.append("  Series left out:")
        lines += [f"    {why[:150]}" for why in d.left_out]
    if entries:
        lines.append(f"  {'series':60} {'metric':7} {'depth':>6} {'measured':>8} {'bw only':>8} {'in':>7} {'out':>7}")
        for r in d.rows:
            bw = f"{r.bandwidth_only:8.3f}" if r.bandwidth_only is not None else "       -"
            lines.append(f"  {r.series.id[:60]:60} {r.metric:7} {r.depth:>6} {r.measured:8.3f} {bw} "
                         f"{r.model_in:7.3f} {r.model_out:7.3f}")
    return lines


def entry_table(v: Validation) -> list[str]:
    head = f"{'split':5} {'entry':46} {'machine':22} {'metric':7} {'measured':>9} {'projected':>9} {'err%':>6} basis"
    out = [head, "-" * len(head)]
    for split, scored, bands in (("train", v.train, BandsWithout(v.train)), ("TEST", v.test, v.bands)):
        for s in scored:
            if s.mode != "as rows get it":
                continue
            iv = _interval(s, bands)
            value = iv[0] if iv else (s.estimate.value if isinstance(s.estimate, Estimate) else None)
            err = f"{_err_pct(s.measured, value):+6.0f}" if value and s.measured else "     -"
            basis = s.estimate.basis if isinstance(s.estimate, Estimate) else f"- {s.estimate.reason[:50]}"
            out.append(f"{split:5} {s.entry.id[:46]:46} {s.machine.id[:22]:22} {s.metric[:7]:7} "
                       f"{s.measured or 0:9.2f} {value or 0:9.2f} {err} {basis}")
    return out


def params_json(v: Validation) -> dict[str, Any]:
    return {"made": dt.date.today().isoformat(), "command": "python -m bench.projection.validate --write-params",
            "meaning": "per-class parameters of bench/projection/model.py fitted on the training split (every machine "
                       "not in test_split.txt); bands: 10th/50th/90th percentiles of ln(measured / projected) of "
                       "leave-one-machine-out projections of the training split, per metric, class and basis; "
                       "attn_bytes_per_flop (gamma): decode's attention FLOPs per context position costed in bytes of "
                       "streaming time, fitted on published depth series (depth_shapes.csv) and used where it beat "
                       "the bandwidth-only rule with the series' machine left out, else 0",
            "training_machines": sorted({e.machine for e in v.ev.train().entries}),
            "classes": {cls: p.to_dict() for cls, p in v.params.items()}, "bands": v.bands}


def main(argv: list[str] | None = None) -> int:
    from bench.datafiles import find_data_path

    ap = argparse.ArgumentParser(prog="python -m bench.projection.validate", description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="validation folder (default: ./validation or the repo's)")
    ap.add_argument("--entries", action="store_true", help="also print every entry's projection and error")
    ap.add_argument("--write-params", action="store_true", help=f"rewrite {PARAMS_FILE} from the training split")
    ap.add_argument("--markdown", metavar="PAGE",
                    help="also write the report to PAGE (a dated page in docs/measurements)")
    ap.add_argument("--depth-markdown", metavar="PAGE",
                    help="also write the depth section, with every point, to PAGE (a dated page in docs/measurements)")
    args = ap.parse_args(argv)
    try:
        folder = find_data_path("validation", args.data, "BENCH_VALIDATION")
        ev = load_evidence(folder)
        v = run(ev)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    lines = report(v, args.entries)
    print("\n".join(lines))
    if args.markdown:
        page = Path(args.markdown)
        page.parent.mkdir(parents=True, exist_ok=True)
        page.write_text(f"# Performance model validation ({dt.date.today().isoformat()})\n\n"
                        f"Written by `python -m bench.projection.validate --markdown {args.markdown}`.\n\n```\n"
                        + "\n".join(lines) + "\n```\n")
    if args.depth_markdown and v.depth is not None:
        page = Path(args.depth_markdown)
        page.parent.mkdir(parents=True, exist_ok=True)
        page.write_text(f"# Performance model at depth: validation ({dt.date.today().isoformat()})\n\n"
                        f"Written by `python -m bench.projection.validate --depth-markdown {args.depth_markdown}`; "
                        "what each column means: docs/performance-model.md (Depth). Every figure below is a "
                        "ratio to the series' shallowest point; projected ratios are PROJECTIONS, the measured "
                        "ones are as published (validation/measurements.csv) or as measured by the suite "
                        "(validation/depth_suite.csv).\n\n```\n" + "\n".join(depth_lines(v.depth, True)) + "\n```\n")
    if args.write_params:
        (folder / PARAMS_FILE).write_text(json.dumps(params_json(v), indent=1) + "\n")
        print(f"\nparameters and bands written to {folder / PARAMS_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
