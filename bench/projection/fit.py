"""Fitting the performance model's per-class parameters and error bands on the training split.

Only entries of machines outside the frozen test split (validation/test_split.txt) are read here.
Each machine weighs the same in every fit (a machine published 100 times must not outvote ten
machines published once), and every fit minimizes the sum of |ln(measured / projected)| (a median,
not a mean: a few odd published results do not drag it).

    tau                               per class, from within-machine groups of files of different
        sizes (fit_overhead): 0 unless a fixed cost beats none by 10%
    share_peak, share_measured        per class: the grid values (with kappa on CPUs) minimizing the
        machine-weighted sum of |ln error| over entries whose machine has that figure
    thread_rate (CPU)                 the median over machines with a published thread sweep of the
        machine's highest bytes/s per thread (its thread-bound end)
    prefill_eff[family]               machine-weighted median of prefill x F / (C x t / t_C)
    family_ratio[family]              median over machines of C_eff(family) / C_eff(kquant)
    bands                             10th/50th/90th percentiles of ln(measured / projected) of
        leave-one-machine-out projections (each machine projected with parameters fitted without it),
        at split-conformal levels: with 9 machines or fewer, the range of their errors
    attn_bytes_per_flop (gamma)       per group (CPUs; GPUs of every class together): the grid value
        minimizing the sum over published depth series of the mean |ln(measured / projected)| of
        decode(depth) / decode(shallowest) (fit_attn_cost); the suite's own sweep is never fitted
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable

from bench.hardware.profiles import Performance, preferred_figure
from bench.projection.evidence import (
    DEVICE_CLASSES,
    PARENT_CLASS,
    DepthPoint,
    DepthSeries,
    Entry,
    EvidenceSet,
    Machine,
)
from bench.projection.model import (
    GB,
    Band,
    ClassParams,
    Estimate,
    Hardware,
    Why,
    conformal_level,
    decode_from_rate,
    project_decode,
    project_prefill,
    stream_rate,
)
from bench.projection.shape import ModelShape, quant_family, shape_from_entry, shape_from_kv

MIN_BAND_ENTRIES = 8
MIN_BAND_MACHINES = 3


# ---- machines as the model sees them ---------------------------------------------------------------

def _figures(perf: Performance | None) -> dict[str, Any]:
    """The sustained (measured) and peak bandwidth, and the compute figure with its threads."""
    out: dict[str, Any] = {}
    if perf is None:
        return out
    measured = next((f for f in perf.memory_bandwidth if f.kind == "measured"), None)
    peak = next((f for f in perf.memory_bandwidth if f.kind == "peak"), None)
    if measured:
        out["bandwidth_measured"], out["bandwidth_measured_label"] = measured.value * GB, f"{measured.label()}"
    if peak:
        out["bandwidth_peak"], out["bandwidth_peak_label"] = peak.value * GB, f"{peak.label()}"
    c = perf.compute
    if c is not None:
        fp32, fp64, fp16 = (preferred_figure(c.fp32_gflops), preferred_figure(c.fp64_gflops),
                            preferred_figure(c.fp16_gflops))
        if fp16:
            out["compute_gpu"] = (fp16.value * GB, f"dense fp16 {fp16.label()}")
        if fp32:
            out["compute_cpu"] = (fp32.value * GB, f"fp32 {fp32.label()}")
        elif fp64:
            out["compute_cpu"] = (2 * fp64.value * GB, f"2 x fp64 (twice as many fp32 lanes): {fp64.label()}")
        out["compute_threads"] = c.threads
    return out


def machine_threads(m: Machine) -> int | None:
    """llama.cpp's default threads there: the compute block's, else the physical (performance) cores."""
    c = m.performance.compute
    return (c.threads if c and c.threads else None) or m.p_cores or m.cores


def hardware_of(m: Machine, threads: int | None = None, evidence: Iterable[Entry] = ()) -> Hardware:
    f = _figures(m.performance)
    cls = m.device_class
    compute = f.get("compute_cpu") if cls == "cpu" else f.get("compute_gpu")
    return Hardware(id=m.id, device_class=cls, threads=threads or machine_threads(m),
                    bandwidth_measured=f.get("bandwidth_measured"),
                    bandwidth_measured_label=f.get("bandwidth_measured_label", ""),
                    bandwidth_peak=f.get("bandwidth_peak"), bandwidth_peak_label=f.get("bandwidth_peak_label", ""),
                    compute=compute[0] if compute else None, compute_label=compute[1] if compute else "",
                    compute_threads=f.get("compute_threads") or machine_threads(m), evidence=tuple(evidence))


# ---- helpers ---------------------------------------------------------------------------------------

def _decode_entries(ev: EvidenceSet, cls: str) -> list[tuple[Entry, Machine]]:
    return [(e, ev.machines[e.machine]) for e in ev.entries
            if e.decode_tps and e.size_bytes and not e.moe and not e.depth
            and ev.machines[e.machine].device_class == cls]


# ---- decode parameters -----------------------------------------------------------------------------

TAU_GRID_S = (0.0, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 3e-3, 4e-3, 6e-3, 8e-3)
SHARE_GRID = tuple(round(0.05 + 0.01 * i, 2) for i in range(116))       # 0.05 .. 1.20
KAPPA_GRID = tuple(10 ** (-2 + 0.05 * i) for i in range(41))            # 0.01 .. 1 byte per FLOP


def _decode_rows(ev: EvidenceSet, cls: str) -> list[tuple[Entry, Machine]]:
    """Dense llama.cpp decode results at depth 0 with a file size; on CPUs not the i-quants (their
    lookup-table dequantization makes them compute-bound there, not bandwidth-bound)."""
    return [(e, m) for e, m in _decode_entries(ev, cls)
            if e.usable and not (cls == "cpu" and quant_family(e.quant) == "iquant")]


def _fit_thread_rate(rows: list[tuple[Entry, Machine]], tau: float) -> float | None:
    """Median over machines with a published thread sweep of the machine's highest bytes/s per thread
    (its thread-bound end): what one core's decode kernels stream."""
    by: dict[str, list[Entry]] = defaultdict(list)
    for e, m in rows:
        if e.threads:
            by[m.id].append(e)
    per_machine = []
    for entries in by.values():
        if len({e.threads for e in entries}) < 2:
            continue
        rates = [r / e.threads for e in entries if (r := stream_rate(e.decode_tps, e.size_bytes, tau))]
        if rates:
            per_machine.append(max(rates))
    return statistics.median(per_machine) if len(per_machine) >= 2 else None


def fit_overhead(rows: list[tuple[Entry, Machine]]) -> float:
    """tau from within machines only. In each group of one machine, one quantization family and one
    thread count with files of different sizes, each result is projected from the group's other files
    (the evidence rule, leave-one-model-out) at each tau of the grid: within such a group bandwidth and
    kernel efficiency cancel, so what is left is the fixed cost per token. Where the groups cannot tell
    (the best tau is less than 10% better than none), tau is 0: no fixed cost is claimed without
    evidence, nor more than the measured bandwidths allow."""
    by: dict[tuple, list[Entry]] = defaultdict(list)
    for e, m in rows:
        by[(m.id, quant_family(e.quant), e.threads)].append(e)
    groups = [g for g in by.values()
              if len({e.model_key for e in g}) >= 2
              and max(e.size_bytes for e in g) >= 1.5 * min(e.size_bytes for e in g)]
    if not groups:
        return 0.0
    # A fixed cost may not make any machine stream faster than its measured bandwidth: tau is at most
    # 1/decode - B/BW_measured over the results of machines with a measured figure.
    bounds = [1.0 / e.decode_tps - e.size_bytes / hw.bandwidth_measured for e, m in rows
              if (hw := hardware_of(m, e.threads)).bandwidth_measured]
    tau_max = max(0.0, min(bounds)) if bounds else math.inf
    grid = [tau for tau in TAU_GRID_S if tau <= tau_max] or [0.0]
    losses = []
    for tau in grid:
        total = 0.0
        for group in groups:
            errs = []
            for e in group:
                rates = [r for o in group if o.model_key != e.model_key
                         and (r := stream_rate(o.decode_tps, o.size_bytes, tau))]
                if rates:
                    pred = 1.0 / (e.size_bytes / statistics.median(rates) + tau)
                    errs.append(abs(math.log(e.decode_tps / pred)))
            total += sum(errs) / len(errs) if errs else 0.0
        losses.append(total)
    k = min(range(len(losses)), key=losses.__getitem__)
    return grid[k] if losses[k] < 0.9 * losses[0] else 0.0


def _decode_arrays(rows: list[tuple[Entry, Machine]], by_machine: dict[str, int], cls: str,
                   rate: float | None) -> tuple[Any, ...]:
    """Per entry: bytes, decode, machine weight, the bandwidth figure its projection uses (and whether
    it is measured), the compute the CPU cap scales (C x t / t_C) and the thread-rate cap."""
    import numpy as np

    n = len(rows)
    b, tg, w = np.empty(n), np.empty(n), np.empty(n)
    bw, is_measured, cap_c, cap_t = np.full(n, np.nan), np.zeros(n, bool), np.full(n, np.nan), np.full(n, np.inf)
    for i, (e, m) in enumerate(rows):
        hw = hardware_of(m, e.threads)
        b[i], tg[i], w[i] = e.size_bytes, e.decode_tps, 1.0 / by_machine[m.id]
        if hw.bandwidth_measured:
            bw[i], is_measured[i] = hw.bandwidth_measured, True
        elif hw.bandwidth_peak:
            bw[i] = hw.bandwidth_peak
        if cls == "cpu" and hw.compute and hw.threads and hw.compute_threads:
            cap_c[i] = hw.compute * hw.threads / hw.compute_threads
        elif cls == "cpu" and rate and hw.threads:
            cap_t[i] = hw.threads * rate
    return b, tg, w, bw, is_measured, cap_c, cap_t


def fit_decode(ev: EvidenceSet, cls: str) -> ClassParams:
    """tau, the shares of peak and measured bandwidth and (CPU) kappa, by a grid search that minimizes
    the machine-weighted sum of |ln(measured / projected)|; the thread rate from thread sweeps."""
    import numpy as np

    rows = _decode_rows(ev, cls)
    if not rows:
        return ClassParams(cls)
    by_machine: dict[str, int] = defaultdict(int)
    for _, m in rows:
        by_machine[m.id] += 1
    rate = _fit_thread_rate(rows, 0.0) if cls == "cpu" else None
    n = len(rows)
    b, tg, w, bw, is_measured, cap_c, cap_t = _decode_arrays(rows, by_machine, cls, rate)
    has_bw = ~np.isnan(bw)
    if not has_bw.any():
        return ClassParams(cls, thread_rate=rate, n={"decode_entries": n, "decode_machines": len(by_machine)})
    shares = np.array(SHARE_GRID)[:, None]
    kappas = KAPPA_GRID if cls == "cpu" and not np.isnan(cap_c).all() else (None,)
    tau = fit_overhead(rows)
    best: tuple[float, float | None, dict[str, float | None]] | None = None
    for kappa in kappas:
        cap = np.minimum(cap_t, kappa * cap_c) if kappa is not None else cap_t
        cap = np.where(np.isnan(cap), cap_t, cap)
        pred = 1.0 / (b[None, :] / np.minimum(shares * bw[None, :], cap[None, :]) + tau)   # shares x entries
        loss = np.abs(np.log(tg[None, :] / pred)) * w[None, :]
        total, chosen = 0.0, {}
        for kind, mask in (("measured", has_bw & is_measured), ("peak", has_bw & ~is_measured)):
            chosen[kind] = None
            if mask.any():
                per_share = np.nansum(loss[:, mask], axis=1)
                k = int(np.argmin(per_share))
                chosen[kind], total = SHARE_GRID[k], total + float(per_share[k])
        if best is None or total < best[0]:
            best = (total, kappa, chosen)
    assert best is not None
    _, kappa, chosen = best
    return ClassParams(cls, overhead_s=tau, share_peak=chosen["peak"], share_measured=chosen["measured"],
                       thread_rate=rate, kappa=kappa,
                       n={"decode_entries": n, "decode_machines": len(by_machine)})


# ---- prefill parameters ----------------------------------------------------------------------------

def _prefill_rows(ev: EvidenceSet, cls: str) -> list[tuple[Entry, Machine, float]]:
    """(entry, machine, C_eff at the entry's threads) of dense depth-0 prefill results."""
    out = []
    for e in ev.entries:
        m = ev.machines[e.machine]
        if not e.prefill_tps or not e.params or not e.usable or m.device_class != cls:
            continue
        f = shape_from_entry(e.size_bytes or 0, e.params, e.quant, e.moe).prefill_flops_per_token(
            e.prompt_tokens or 512)
        out.append((e, m, e.prefill_tps * (f or 0)))
    return out


def _family_ratios(rows: list[tuple[Entry, Machine, float]], cls: str) -> tuple[dict[str, float], int]:
    """{family: median over machines of C_eff(family) / C_eff(kquant)} and the number of machines."""
    per_machine: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for e, m, c in rows:
        t = e.threads or machine_threads(m)
        per_machine[m.id][quant_family(e.quant)].append(c / t if cls == "cpu" and t else c)
    ratios: dict[str, list[float]] = defaultdict(list)
    for fams in per_machine.values():
        ref = fams.get("kquant")
        if not ref:
            continue
        for fam, cs in fams.items():
            ratios[fam].append(statistics.median(cs) / statistics.median(ref))
    family_ratio = {fam: statistics.median(v) for fam, v in ratios.items() if v}
    family_ratio["kquant"] = 1.0
    return family_ratio, len(per_machine)


def _efficiency_median(points: list[tuple[str, float]]) -> float:
    """Machine-weighted median of (machine, efficiency) points: each machine's weight split over its points."""
    counts: dict[str, int] = defaultdict(int)
    for mid, _ in points:
        counts[mid] += 1
    return weighted_quantile([v for _, v in points], [1.0 / counts[mid] for mid, _ in points], 0.5)


def _prefill_efficiencies(rows: list[tuple[Entry, Machine, float]], cls: str,
                          family_ratio: dict[str, float]) -> dict[str, float]:
    """prefill_eff[family] = machine-weighted median of C_eff / (C x t / t_C) over the family's entries
    (each machine weighs the same in each family). A family seen on fewer than MIN_CLASS_MACHINES
    machines takes the pooled efficiency of every family (each entry carried to K-quant terms by its
    family ratio) x its own ratio."""
    points: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for e, m, c in rows:
        hw = hardware_of(m)
        if not hw.compute:
            continue
        t = e.threads or hw.threads
        scale = (t / hw.compute_threads) if cls == "cpu" and t and hw.compute_threads else 1.0
        points[quant_family(e.quant)].append((m.id, c / (hw.compute * scale)))
    eff = {fam: _efficiency_median(p) for fam, p in points.items()}
    pooled = [(mid, v / family_ratio[fam]) for fam, p in points.items() if fam in family_ratio for mid, v in p]
    if len({mid for mid, _ in pooled}) >= MIN_CLASS_MACHINES:
        base = _efficiency_median(pooled)
        for fam, p in points.items():
            if len({mid for mid, _ in p}) < MIN_CLASS_MACHINES and fam in family_ratio:
                eff[fam] = base * family_ratio[fam]
    return eff


def fit_prefill(ev: EvidenceSet, cls: str, base: ClassParams) -> ClassParams:
    rows = _prefill_rows(ev, cls)
    family_ratio, machines = _family_ratios(rows, cls)
    prefill_eff = _prefill_efficiencies(rows, cls, family_ratio)
    n = {**base.n, "prefill_entries": len(rows), "prefill_machines": machines}
    return ClassParams(cls, base.overhead_s, base.share_peak, base.share_measured, base.thread_rate, base.kappa,
                       prefill_eff, family_ratio, n)


MIN_CLASS_MACHINES = 3  # a class fitted on fewer machines (per parameter) borrows its parent's value


def _borrow(own: ClassParams, parent: ClassParams) -> ClassParams:
    """Parameters a class could not fit on enough machines of its own come from its parent class, and
    say so (``n['borrowed']``)."""
    borrowed = []
    machines = own.n.get("decode_machines", 0)
    changes: dict[str, Any] = {}
    if machines < MIN_CLASS_MACHINES:
        for name in ("overhead_s", "share_peak", "share_measured"):
            changes[name] = getattr(parent, name)
            borrowed.append(name)
    else:
        for name in ("share_peak", "share_measured"):
            if getattr(own, name) is None and getattr(parent, name) is not None:
                changes[name] = getattr(parent, name)
                borrowed.append(name)
    if own.n.get("prefill_machines", 0) < MIN_CLASS_MACHINES:
        changes["prefill_eff"], changes["family_ratio"] = parent.prefill_eff, parent.family_ratio
        borrowed += ["prefill_eff", "family_ratio"]
    if not borrowed:
        return own
    return replace(own, **changes, n={**own.n, "borrowed_from": parent.device_class, "borrowed": borrowed})


def fit_params(ev: EvidenceSet) -> dict[str, ClassParams]:
    """Every class's parameters from ``ev`` (the caller passes the training split only)."""
    own = {cls: fit_prefill(ev, cls, fit_decode(ev, cls)) for cls in DEVICE_CLASSES}
    return {cls: _borrow(p, own[PARENT_CLASS[cls]]) if cls in PARENT_CLASS else p for cls, p in own.items()}


# ---- projecting entries, in and out of sample ------------------------------------------------------

@dataclass(frozen=True)
class Scored:
    """One entry projected one way: the raw estimate (or why not) and its log error."""

    entry: Entry
    machine: Machine
    metric: str          # decode_tps or prefill_tps
    mode: str            # "formula" (the machine's figures only) or "as rows get it" (its evidence first)
    estimate: Estimate | Why

    @property
    def measured(self) -> float | None:
        return self.entry.decode_tps if self.metric == "decode_tps" else self.entry.prefill_tps

    @property
    def log_error(self) -> float | None:
        """ln(measured / projected) of the raw estimate."""
        if isinstance(self.estimate, Why) or not self.measured:
            return None
        return math.log(self.measured / self.estimate.value)


def score_entry(e: Entry, m: Machine, ev: EvidenceSet, params: dict[str, ClassParams], metric: str,
                with_evidence: bool) -> Scored:
    """Project one entry; its own model's results on its machine are never its evidence."""
    own = [o for o in ev.of_machine(m.id) if o.model_key != e.model_key] if with_evidence else []
    hw = hardware_of(m, e.threads, own)
    p = params[m.device_class]
    shape = shape_from_entry(e.size_bytes or 0, e.params, e.quant, e.moe)
    if metric == "decode_tps":
        if not e.size_bytes:
            est: Estimate | Why = Why("the model file's size is not published")
        else:
            ctx = e.depth + (e.gen_tokens or 128) / 2
            est = project_decode(shape, ctx, hw, p, use_evidence=with_evidence)
    else:
        est = project_prefill(shape, e.prompt_tokens or 512, e.depth, hw, p, use_evidence=with_evidence)
    return Scored(e, m, metric, "as rows get it" if with_evidence else "formula", est)


def in_scope(e: Entry, m: Machine) -> bool:
    """What the model claims to project, and is judged on: llama.cpp's own kernels, dense models,
    no prefilled depth, and on CPUs not the i-quants (compute-bound there by their lookup tables)."""
    return e.usable and not (m.device_class == "cpu" and quant_family(e.quant) == "iquant")


def score_all(target: EvidenceSet, evidence: EvidenceSet, params: dict[str, ClassParams]) -> list[Scored]:
    out = []
    for e in target.entries:
        if not in_scope(e, target.machines[e.machine]):
            continue
        m = target.machines[e.machine]
        for metric in ("decode_tps", "prefill_tps"):
            if (e.decode_tps if metric == "decode_tps" else e.prefill_tps) is None:
                continue
            for with_ev in (False, True):
                out.append(score_entry(e, m, evidence, params, metric, with_ev))
    return out


def leave_one_machine_out(train: EvidenceSet, fitter: Callable[[EvidenceSet], dict[str, ClassParams]] = fit_params
                          ) -> list[Scored]:
    """Every training entry projected with parameters fitted on the other training machines."""
    out: list[Scored] = []
    for mid in sorted({e.machine for e in train.entries}):
        rest = EvidenceSet(tuple(e for e in train.entries if e.machine != mid), train.machines, frozenset())
        mine = EvidenceSet(tuple(e for e in train.entries if e.machine == mid), train.machines, frozenset())
        out += score_all(mine, train, fitter(rest))
    return out


# ---- bands -----------------------------------------------------------------------------------------

def weighted_quantile(xs: list[float], ws: list[float], q: float) -> float:
    """The q-quantile of xs with weights ws (the smallest x whose cumulative weight reaches q)."""
    pairs = sorted(zip(xs, ws, strict=True))
    total, acc = sum(ws), 0.0
    for x, w in pairs:
        acc += w
        if acc >= q * total - 1e-12:
            return x
    return pairs[-1][0]


def bands_from(scored: list[Scored]) -> dict[str, dict[str, Any]]:
    """{"metric|class|basis": band} from out-of-sample projections. Each machine weighs the same (a
    machine's entries err together, and the next machine is a new draw), so the 10th/50th/90th
    percentiles are of machines, not of entries, at split-conformal levels for m machines. A class and
    basis with too few entries or machines gets the pooled band of that basis over all classes, named as
    such (``band_for``)."""
    groups: dict[tuple[str, str, str], list[Scored]] = defaultdict(list)
    for s in scored:
        if s.log_error is None or isinstance(s.estimate, Why):
            continue
        groups[(s.metric, s.machine.device_class, s.estimate.basis)].append(s)
        groups[(s.metric, "all", s.estimate.basis)].append(s)
    out: dict[str, dict[str, Any]] = {}
    for (metric, cls, basis), ss in groups.items():
        per_machine: dict[str, int] = defaultdict(int)
        for s in ss:
            per_machine[s.machine.id] += 1
        errs = [s.log_error for s in ss if s.log_error is not None]
        ws = [1.0 / per_machine[s.machine.id] for s in ss]
        if len(errs) < 2:
            continue
        hi = conformal_level(len(per_machine))
        q10, med, q90 = (weighted_quantile(errs, ws, q) for q in (1.0 - hi, 0.5, hi))
        out[f"{metric}|{cls}|{basis}"] = {"median": med, "q10": q10, "q90": q90, "n": len(errs),
                                          "machines": len(per_machine), "scope": f"{cls}/{basis}"}
    return out


def band_for(bands: dict[str, dict[str, Any]], metric: str, cls: str, basis: str) -> Band | None:
    own = bands.get(f"{metric}|{cls}|{basis}")
    if own and own["n"] >= MIN_BAND_ENTRIES and own["machines"] >= MIN_BAND_MACHINES:
        return Band(own["median"], own["q10"], own["q90"], own["n"], own["machines"], own["scope"])
    pooled = bands.get(f"{metric}|all|{basis}")
    if pooled and pooled["n"] >= MIN_BAND_ENTRIES and pooled["machines"] >= MIN_BAND_MACHINES:
        have = f"{own['n']} entries on {own['machines']} machines" if own else "no entries"
        return Band(pooled["median"], pooled["q10"], pooled["q90"], pooled["n"], pooled["machines"],
                    f"all/{basis} (pooled over classes: {cls}/{basis} has {have})")
    return None


# ---- depth: the attention cost per position (gamma), fitted on published depth series ---------------

GAMMA_GRID = (0.0,) + tuple(10 ** (-3 + 0.05 * i) for i in range(81))   # 0, 0.001 .. 10 bytes per FLOP


def depth_group(device_class: str) -> str:
    """gamma is fitted for CPUs and for GPUs of every class together (too few GPU series per class)."""
    return "cpu" if device_class == "cpu" else "gpu"


def series_shape(s: DepthSeries) -> ModelShape:
    return shape_from_kv(s.file_bytes, s.n_params, s.n_layer, s.n_head, s.n_head_kv, s.key_length, s.value_length,
                         source=s.shape_source)


def decode_ratios(s: DepthSeries, gamma: float, tau: float) -> list[tuple[DepthPoint, float, float]]:
    """(point, measured, projected) decode(depth) / decode(shallowest) of each deeper point. The
    shallowest point fixes the machine's bandwidth (BW = B_eff(c0) / (1/decode0 - tau)), so the ratio
    tests the depth term alone: projected = decode_from_rate(B_eff(c), BW, tau) / decode0."""
    pts = [p for p in s.points if p.decode_tps]
    if len(pts) < 2:
        return []
    shape, p0 = series_shape(s), pts[0]
    bw = stream_rate(p0.decode_tps, shape.token_bytes(p0.decode_context, "f16", gamma), tau)  # type: ignore[arg-type]
    if bw is None:
        return []
    return [(p, p.decode_tps / p0.decode_tps,  # type: ignore[operator]
             decode_from_rate(shape.token_bytes(p.decode_context, "f16", gamma), bw, tau) / p0.decode_tps)
            for p in pts[1:]]


def prefill_ratios(s: DepthSeries) -> list[tuple[DepthPoint, float, float]]:
    """(point, measured, projected) prefill(depth) / prefill(shallowest): F(p, D0) / F(p, D) with
    F(p, D) = 2 N + 4 L d (D + p/2), the FLOPs the model's prefill rate divides (model.project_prefill)."""
    pts = [p for p in s.points if p.prefill_tps]
    shape = series_shape(s)
    if len(pts) < 2 or not shape.n_params:
        return []
    p0 = pts[0]
    f0 = shape.prefill_flops_per_token(p0.prompt_tokens or 512, p0.depth) or 0.0
    return [(p, p.prefill_tps / p0.prefill_tps,  # type: ignore[operator]
             f0 / (shape.prefill_flops_per_token(p.prompt_tokens or 512, p.depth) or 1.0)) for p in pts[1:]]


def fit_attn_cost(series: list[DepthSeries], tau_of: Callable[[str], float]) -> float | None:
    """gamma minimizing the sum of |ln(measured / projected)| of decode ratios, each series weighing the
    same; None without a series to fit on. Series of test-split machines are never read."""
    usable = [s for s in series if not s.test]
    if not usable:
        return None

    def loss(g: float) -> float:
        total = 0.0
        for s in usable:
            r = decode_ratios(s, g, tau_of(s.device_class))
            total += sum(abs(math.log(m / p)) for _, m, p in r) / max(1, len(r))
        return total

    return min(GAMMA_GRID, key=loss)


def fit_attn_costs(series: list[DepthSeries], tau_of: Callable[[str], float]) -> dict[str, float | None]:
    """{"cpu": gamma, "gpu": gamma} from the published training series of each group."""
    return {g: fit_attn_cost([s for s in series if depth_group(s.device_class) == g], tau_of) for g in ("cpu", "gpu")}
