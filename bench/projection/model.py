"""The performance model: decode and prefill tok/s of a model on a machine that is not at hand, from
that machine's published evidence where it has some, else from its figures. Pure functions, no I/O.
Nothing of the machine that measured a row enters a tier's speed: only the model's shape (shape.py),
the workload's lengths, the tier's figures and evidence, and the per-class parameters fitted on the
training split of the validation set (fit.py).

Decode streams the weights (and the KV cache) once per token, plus a fixed cost per token (kernel
launches and synchronisation on a GPU, thread barriers on a CPU):

    t_token  = B_eff(c) / BW_eff + tau_class                   decode = 1 / t_token
    B_eff(c) = W + (K + gamma_class A) c (shape.py): the weights and the KV cache streamed, and the
    attention arithmetic over c positions at C_att = BW_eff / gamma (gamma fitted on published depth
    series, fit.fit_attn_cost; on CPUs attending costs more than reading the cache)
    BW_eff, the bytes per second llama.cpp's decode really streams on the machine, by the best
    evidence there is (each projection names which it used):
      evidence   the machine's own published decode results, any model:
                 BW_eff = median_i  B_i / (1 / decode_i - tau_class)
      measured   a sustained-bandwidth benchmark of the machine (STREAM-type, multi-threaded):
                 BW_eff = share_measured,class x BW_measured
      peak       only a datasheet peak: BW_eff = share_peak,class x BW_peak
    CPUs and threads: t threads stream at most t x r_class bytes/s (r: one thread's decode rate,
    fitted on published thread sweeps), so BW_eff(t) = min(BW_eff, t x r_class). Evidence taken at
    other thread counts is carried by the same rule: a result at t_e threads that reached t_e x r is
    thread-bound and says nothing about more threads (refused, with the reason).

Prefill is arithmetic: the prompt's FLOPs at the rate the machine's kernels reach for the file's
quantization family (shape.FAMILIES):

    prefill  = C_eff(family) / F_prefill           TTFT = p / prefill
      evidence   C_eff = median_i prefill_i x F_i over the machine's entries of the same family
                 (another family's entries scaled by the class's family ratio), x t / t_i on a CPU
      compute    C_eff = eff_class,family x C_figure x t / t_figure (fp32 on a CPU, dense fp16 on a GPU)

The interval of a projection is value x exp(q10) .. value x exp(q90), the 10th and 90th percentiles of
ln(measured / projected) of leave-one-machine-out projections on the training split, per class and
basis (fit.py); the value itself is corrected by the band's median, so it lies inside its interval.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

from bench.projection.evidence import Entry
from bench.projection.shape import FAMILIES, ModelShape, quant_family, shape_from_entry

GB = 1e9
LABEL = "PROJECTION, not a measurement"
BASES = ("evidence", "measured", "peak", "compute")
# A published decode result slower than the fixed cost allows (1/decode <= tau) is not bandwidth evidence.
_MIN_STREAM_SHARE = 0.2


# ---- per-class parameters (fitted by fit.py, stored in validation/model_params.json) ---------------

@dataclass(frozen=True)
class ClassParams:
    device_class: str
    overhead_s: float = 0.0                     # tau: fixed time per decoded token
    share_peak: float | None = None             # BW_eff / datasheet peak
    share_measured: float | None = None         # BW_eff / sustained-bandwidth benchmark
    thread_rate: float | None = None            # bytes/s one CPU thread's decode kernels stream
    kappa: float | None = None                  # CPU: bytes/s streamed per FLOP/s of the machine's compute
    prefill_eff: dict[str, float] = field(default_factory=dict)   # family -> C_eff / compute figure
    family_ratio: dict[str, float] = field(default_factory=dict)  # family -> prefill rate vs "kquant"
    n: dict[str, int] = field(default_factory=dict)               # entries and machines each came from
    attn_bytes_per_flop: float = 0.0            # gamma: decode's attention FLOPs at depth, in bytes' time (B/FLOP)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClassParams:
        return cls(**d)


def conformal_level(machines: int) -> float:
    """The upper quantile level of a band from m machines: min(1, 0.9 (m + 1) / m). Split-conformal: the
    ceil(0.9 (m + 1))-th of m out-of-sample errors covers a new machine at least 90% of the time."""
    return min(1.0, 0.9 * (machines + 1) / machines)


@dataclass(frozen=True)
class Band:
    """Quantiles of ln(measured / projected) of out-of-sample projections of one class and basis."""

    median: float
    q10: float
    q90: float
    n: int
    machines: int
    scope: str  # e.g. "cpu/peak", or "all/peak (pooled: cpu/peak has 3 entries)"

    def level_words(self) -> str:
        """What q10/q90 are: the split-conformal level reaches the extremes with 9 machines or fewer,
        where the interval is the range of the out-of-sample errors, not a percentile band."""
        if conformal_level(self.machines) >= 1.0:
            return f"the range (lowest to highest, {self.machines} machines)"
        return "10th-90th percentile (split-conformal)"

    def correct(self, raw: float, inverse: bool = False) -> tuple[float, float, float]:
        """(value, low, high) of a rate (``inverse``: of a time, 1 / rate) from the raw projection."""
        if inverse:
            return raw * math.exp(-self.median), raw * math.exp(-self.q90), raw * math.exp(-self.q10)
        return raw * math.exp(self.median), raw * math.exp(self.q10), raw * math.exp(self.q90)


# ---- what the model knows of a machine -------------------------------------------------------------

@dataclass(frozen=True)
class Hardware:
    """A tier or a validation machine: its class, threads, figures and its own evidence."""

    id: str
    device_class: str
    threads: int | None = None                  # threads llama.cpp runs with there (CPU)
    bandwidth_measured: float | None = None     # B/s, a sustained (multi-threaded) benchmark
    bandwidth_measured_label: str = ""
    bandwidth_peak: float | None = None         # B/s, datasheet or derived
    bandwidth_peak_label: str = ""
    compute: float | None = None                # FLOP/s: fp32 on a CPU, dense fp16 on a GPU
    compute_threads: int | None = None          # the threads that figure was taken with (CPU)
    compute_label: str = ""
    evidence: tuple[Entry, ...] = ()


@dataclass(frozen=True)
class Estimate:
    """One raw projection before its band: the value, which evidence it used, and its inputs."""

    value: float
    basis: str       # one of BASES
    how: str         # a sentence for readers
    inputs: dict[str, Any]


@dataclass(frozen=True)
class Why:
    """Why a metric cannot be projected (its verdict is `unmeasured`)."""

    reason: str


# ---- decode ----------------------------------------------------------------------------------------

def stream_rate(decode_tps: float, bytes_per_token: float, overhead_s: float) -> float | None:
    """BW = B / (1/decode - tau): the bytes per second a published decode result streamed, net of the
    fixed per-token cost; None where the fixed cost alone explains the result."""
    t = 1.0 / decode_tps
    if t - overhead_s < _MIN_STREAM_SHARE * t:
        return None
    return bytes_per_token / (t - overhead_s)


def decode_from_rate(bytes_per_token: float, bandwidth: float, overhead_s: float) -> float:
    """decode = 1 / (B / BW_eff + tau)."""
    return 1.0 / (bytes_per_token / bandwidth + overhead_s)


def thread_cap(hw: Hardware, params: ClassParams, threads: int | None = None) -> float | None:
    """The bytes/s ``threads`` CPU threads can stream at most (None: no cap known, or not a CPU):
    kappa x C x t / t_C where the machine has a compute figure (its cores' arithmetic bounds how fast
    they dequantize), else t x r_class (one thread's decode rate on published thread sweeps)."""
    t = threads or hw.threads
    if params.device_class != "cpu" or not t:
        return None
    if hw.compute and params.kappa and hw.compute_threads:
        return params.kappa * hw.compute * t / hw.compute_threads
    if params.thread_rate:
        return t * params.thread_rate
    return None


def _faster_with_more_threads(e: Entry, rate: float, evidence: list[Entry], params: ClassParams,
                              up_to: int) -> bool:
    """A CPU result at t_e threads was thread-bound where its own machine streams at least 1/0.85 as fast
    at more threads (up to the tier's): its own published thread sweep says so."""
    for o in evidence:
        if o.machine != e.machine or not o.threads or not e.threads or not e.threads < o.threads <= up_to:
            continue
        r = stream_rate(o.decode_tps, o.size_bytes, params.overhead_s)  # type: ignore[arg-type]
        if r is not None and r * 0.85 >= rate:
            return True
    return False


def _evidence_rate(hw: Hardware, params: ClassParams, family: str | None = None
                   ) -> tuple[float | None, dict[str, Any], str | None]:
    """BW_eff from the machine's own decode results at depth 0 (any model), carried to hw.threads;
    results of the file's own quantization family first (each family has its own kernels). On a CPU
    the i-quants are not evidence (compute-bound there), and a result at fewer threads than the tier's
    that was thread-bound (by the class's cap, or by the machine's own faster results at more threads)
    is refused."""
    rates, used, refused = [], [], []
    cpu = params.device_class == "cpu"
    evidence = [e for e in hw.evidence if e.decode_tps and e.size_bytes and e.usable
                and not (cpu and quant_family(e.quant) == "iquant")]
    every = evidence
    if cpu and hw.threads:
        # a CPU's decode depends on its threads: results at the tier's own thread count come first
        same = [e for e in evidence if e.threads == hw.threads]
        evidence = same or evidence
    if family:
        same = [e for e in evidence if quant_family(e.quant) == family]
        evidence = same or evidence
    for e in evidence:
        r = stream_rate(e.decode_tps, e.size_bytes, params.overhead_s)  # type: ignore[arg-type]
        if r is None:
            continue
        if cpu and hw.threads and e.threads and e.threads != hw.threads:
            cap_e, cap_t = thread_cap(hw, params, e.threads), thread_cap(hw, params, hw.threads)
            thread_bound = (cap_e is not None and r >= 0.85 * cap_e) or _faster_with_more_threads(
                e, r, every, params, hw.threads)
            if e.threads < hw.threads and thread_bound:
                refused.append(f"{e.id} ran {e.threads} threads and was thread-bound there; the tier runs "
                               f"{hw.threads}")
                continue
            if e.threads > hw.threads:
                # fewer threads stream no more than before, and no less than the same share per thread
                r = min(r, max(cap_t or r, r * hw.threads / e.threads))
        rates.append(r)
        used.append(e.id)
    if not rates:
        why = ("; ".join(refused) if refused else "no decode result with a file size at depth 0")
        return None, {}, why
    return statistics.median(rates), {"entries": used, "rates_gbs": [round(x / GB, 2) for x in rates]}, None


def project_decode(shape: ModelShape, context: float, hw: Hardware, params: ClassParams,
                   kv_type: str = "f16", use_evidence: bool = True) -> Estimate | Why:
    """The raw decode tok/s of ``shape`` at ``context`` positions on ``hw`` (before its band)."""
    if shape.moe:
        return Why("a mixture-of-experts model reads only its routed experts per token; the model has no MoE term")
    if params.device_class == "cpu" and shape.family == "iquant":
        return Why("i-quant files on a CPU are compute-bound (lookup-table dequantization), not bandwidth-bound: "
                   "the model has no term for them")
    b = shape.token_bytes(context, kv_type, params.attn_bytes_per_flop)
    basis, how, inputs, bw = None, "", {}, None
    if use_evidence and hw.evidence:
        bw, inputs, why_not = _evidence_rate(hw, params, shape.family)
        if bw is not None:
            basis, how = "evidence", f"{hw.id}'s own published decode results ({len(inputs['entries'])} entries)"
        else:
            inputs = {"evidence_refused": why_not}
    if bw is None and hw.bandwidth_measured and params.share_measured:
        bw, basis = params.share_measured * hw.bandwidth_measured, "measured"
        how = (f"{params.share_measured:.2f} (the {params.device_class} class's share) x measured bandwidth "
               f"{hw.bandwidth_measured / GB:.1f} GB/s")
        inputs = {**inputs, "bandwidth": hw.bandwidth_measured_label}
    if bw is None and hw.bandwidth_peak and params.share_peak:
        bw, basis = params.share_peak * hw.bandwidth_peak, "peak"
        how = (f"{params.share_peak:.2f} (the {params.device_class} class's derating of datasheet peaks) x peak "
               f"bandwidth {hw.bandwidth_peak / GB:.1f} GB/s")
        inputs = {**inputs, "bandwidth": hw.bandwidth_peak_label}
    if bw is None or basis is None:
        return Why(inputs.get("evidence_refused") or f"{hw.id} has no published decode result and no memory "
                   "bandwidth figure")
    cap = thread_cap(hw, params)
    if basis != "evidence" and cap is not None and cap < bw:
        how += f", capped by {hw.threads} threads' arithmetic at {cap / GB:.1f} GB/s"
        bw = cap
    value = decode_from_rate(b, bw, params.overhead_s)
    inputs = {**inputs, "bytes_per_token": b, "context": context, "kv_type": kv_type,
              "attn_bytes_per_flop": params.attn_bytes_per_flop,
              "effective_bandwidth_gbs": bw / GB, "overhead_s": params.overhead_s, "threads": hw.threads}
    return Estimate(value, basis, how, inputs)


# ---- prefill ---------------------------------------------------------------------------------------

def _family_scale(params: ClassParams, target: str, source: str) -> float | None:
    a, b = params.family_ratio.get(target), params.family_ratio.get(source)
    return a / b if a and b else None


def _evidence_compute(shape: ModelShape, hw: Hardware, params: ClassParams) -> tuple[float | None, dict[str, Any]]:
    """C_eff for the shape's family from the machine's prefill results, carried to hw.threads."""
    fam = shape.family
    same, other = [], []
    for e in hw.evidence:
        if not e.prefill_tps or not e.params or not e.usable:
            continue
        f = shape_from_entry(e.size_bytes or 0, e.params, e.quant, e.moe).prefill_flops_per_token(
            e.prompt_tokens or 512)
        c = e.prefill_tps * (f or 0)
        if params.device_class == "cpu" and hw.threads and e.threads:
            c *= hw.threads / e.threads
        (same if quant_family(e.quant) == fam else other).append((c, e))
    if same:
        return statistics.median(c for c, _ in same), {"entries": [e.id for _, e in same], "family": fam}
    scaled = []
    for c, e in other:
        k = _family_scale(params, fam, quant_family(e.quant))
        if k:
            scaled.append((c * k, e))
    if scaled:
        return statistics.median(c for c, _ in scaled), {
            "entries": [e.id for _, e in scaled], "family": fam,
            "scaled_from_families": sorted({quant_family(e.quant) for _, e in scaled})}
    return None, {}


def project_prefill(shape: ModelShape, prompt_tokens: int, depth: int, hw: Hardware, params: ClassParams,
                    use_evidence: bool = True) -> Estimate | Why:
    """The raw prefill tok/s of a p-token prompt after ``depth`` positions (before its band)."""
    if shape.moe:
        return Why("a mixture-of-experts model computes only its routed experts; the model has no MoE term")
    f = shape.prefill_flops_per_token(prompt_tokens, depth)
    if not f:
        return Why("the model's parameter count is unknown")
    if use_evidence and hw.evidence:
        c, inputs = _evidence_compute(shape, hw, params)
        if c is not None:
            return Estimate(c / f, "evidence", f"{hw.id}'s own published prefill results "
                            f"({len(inputs['entries'])} entries)", {**inputs, "flops_per_token": f,
                                                                     "effective_gflops": c / GB})
    eff = params.prefill_eff.get(shape.family)
    if not hw.compute:
        return Why(f"{hw.id} has no published prefill result and no compute figure")
    if not eff:
        return Why(f"no fitted prefill efficiency for {shape.family} files on the {params.device_class} class")
    c = eff * hw.compute
    if params.device_class == "cpu" and hw.threads and hw.compute_threads:
        c *= hw.threads / hw.compute_threads
    return Estimate(c / f, "compute", f"{eff:.3f} (the {params.device_class} class's efficiency for "
                    f"{shape.family} files) x compute {hw.compute / GB:.0f} GFLOP/s",
                    {"compute": hw.compute_label, "flops_per_token": f, "effective_gflops": c / GB})


# ---- the projection of one workload ----------------------------------------------------------------

@dataclass(frozen=True)
class Projection:
    """One projected metric: the bias-corrected value, its interval, and everything it came from."""

    metric: str
    value: float
    low: float
    high: float
    unit: str
    basis: str
    how: str
    band: str
    inputs: dict[str, Any]
    label: str = LABEL

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def banded(metric: str, raw: Estimate, unit: str, band: Band | None, inverse: bool = False) -> Projection | Why:
    """The raw estimate corrected by its band's median, with the band's interval; no band: unmeasured."""
    if band is None:
        return Why(f"no validated error band for {metric} on this class and basis ({raw.basis}): the projection "
                   "would have no interval")
    value, low, high = band.correct(raw.value, inverse)
    return Projection(metric, value, low, high, unit, raw.basis, raw.how,
                      f"{band.scope}: {band.level_words()} of ln(measured/projected), n={band.n} entries on "
                      f"{band.machines} machines (leave-one-machine-out)",
                      {**raw.inputs, "raw_value": raw.value})


__all__ = ["BASES", "FAMILIES", "Band", "ClassParams", "Estimate", "Hardware", "Projection", "Why", "banded",
           "decode_from_rate", "project_decode", "project_prefill", "stream_rate", "thread_cap"]
