"""Performance model: carry speeds measured on this host onto a tier that was not measured, with an
interval from the model's error on published measurements of real machines. Pure functions, no I/O
except ``load_bands`` (the committed error bands). The speed a tier gets from its thread and RAM caps
on this host is this host's speed, never the tier's; these projections are what a tier's speed is
estimated from, and they are always labelled PROJECTION.

Decode is bound by memory traffic, prefill by arithmetic (docs/METRICS.md, "projected from HOST"):

    B      bytes read per generated token = weights read per token + KV cache at the context
           (tiers.bytes_read_per_token: the embedding table only if it doubles as the output head)
    F(c)   FLOPs per token attending to c positions = 2 N + 4 L d c
           (N parameters, L layers, d = attention heads x head width: QK^T and AV, 2 FLOPs per MAC)
           prefill of p tokens: c = p / 2 on average, so F = 2 N + 2 L d p; decode: c = the context
    e_bw   host bandwidth efficiency = decode_host x B_host / BW_host
           (BW_host: the calibration's copy bandwidth, measured with the cell's thread count)
    e_c    host compute efficiency   = prefill_host x F_host / C_host
           (C_host: the calibration's float32 matmul FLOP/s with the same thread count)
           decode_host and prefill_host: the row's fastest counted repetition (other work on a shared
           host only slows a repetition down; the calibration is a best-of-5 for the same reason)

    decode  = min(e_bw x BW_tier / B_tier,  e_c x C_tier / F_decode_tier)   (bandwidth or compute bound)
    prefill = e_c x C_tier / F_prefill_tier
    TTFT    = p / prefill            TPOT = 1 / decode

    BW_tier: the tier's sustained bandwidth, a measured figure (STREAM-type benchmark) when published,
             else its peak (labelled "peak": a peak overstates what a machine sustains).
    C_tier:  the throughput of the kernel's data type with llama.cpp's default thread count: fp32 on a
             CPU (a measured fp32 figure, else 2 x a measured fp64 HPL result, else a peak), dense fp16
             tensor throughput on a GPU.

    interval: value x exp(q10) .. value x exp(q90), q10 and q90 the 10th and 90th percentiles of
              ln(measured / projected) over the validation entries of the same device class
              (``python -m bench.hardware.validate --write-bands``). The verdict uses the low end. The
              value is the model's own estimate; where the model is biased (this 2-vCPU host's e_bw
              carries low, see the README) the whole interval can lie above it: 80% of the real
              machines measured inside it.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

from bench.errors import BenchError
from bench.hardware.profiles import Performance, Profile, preferred_figure
from bench.hardware.tiers import bytes_read_per_token

GB = 1e9
LABEL = "PROJECTION, not a measurement"
METRICS = ("decode_tps", "prefill_tps")
MIN_BAND_ENTRIES = 5  # fewer validation entries in a device class than this: use the pooled band


# ---- the arithmetic ------------------------------------------------------------------------------

def flops_per_token(n_params: float, n_layer: int, d_attn: int, context: float) -> float:
    """F(c) = 2 N + 4 L d c: every weight once (multiply + add) plus QK^T and AV over c positions."""
    return 2.0 * n_params + 4.0 * n_layer * d_attn * context


def prefill_flops_per_token(n_params: float, n_layer: int, d_attn: int, prompt_tokens: int) -> float:
    """Mean FLOPs per prompt token: a prompt token attends to p/2 positions on average."""
    return flops_per_token(n_params, n_layer, d_attn, prompt_tokens / 2)


def bandwidth_efficiency(decode_tps: float, bytes_per_token: float, bandwidth_bytes_per_s: float) -> float:
    """e_bw = decode x B / BW: the share of the measured copy bandwidth that decoding streamed."""
    return decode_tps * bytes_per_token / bandwidth_bytes_per_s


def compute_efficiency(prefill_tps: float, flops_per_tok: float, flop_per_s: float) -> float:
    """e_c = prefill x F / C: prefill's arithmetic rate against the measured matmul rate."""
    return prefill_tps * flops_per_tok / flop_per_s


def project_decode(e_bw: float, bandwidth_bytes_per_s: float, bytes_per_token: float,
                   e_c: float | None = None, flop_per_s: float | None = None,
                   flops_per_tok: float | None = None) -> tuple[float, str]:
    """decode = min(e_bw x BW / B, e_c x C / F); returns (tok/s, "bandwidth" or "compute")."""
    by_bandwidth = e_bw * bandwidth_bytes_per_s / bytes_per_token
    if e_c and flop_per_s and flops_per_tok:
        by_compute = e_c * flop_per_s / flops_per_tok
        if by_compute < by_bandwidth:
            return by_compute, "compute"
    return by_bandwidth, "bandwidth"


def project_prefill(e_c: float, flop_per_s: float, flops_per_tok: float) -> float:
    """prefill = e_c x C / F."""
    return e_c * flop_per_s / flops_per_tok


def ttft_s(prompt_tokens: int, prefill_tps: float) -> float:
    """TTFT = p / prefill (the first token comes from the prefill pass's logits)."""
    return prompt_tokens / prefill_tps


def tpot_s(decode_tps: float) -> float:
    """TPOT = 1 / decode."""
    return 1.0 / decode_tps


# ---- the interval --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Band:
    """Quantiles of ln(measured / projected) on the validation entries of one device class."""

    q10: float
    q90: float
    n: int
    scope: str  # which entries: "cpu", "gpu" or "all" (pooled)

    def interval(self, value: float, inverse: bool = False) -> tuple[float, float]:
        """(low, high) of a projected rate; ``inverse`` for a time (1 / rate): its bounds swap."""
        if inverse:
            return value * math.exp(-self.q90), value * math.exp(-self.q10)
        return value * math.exp(self.q10), value * math.exp(self.q90)


Bands = dict[tuple[str, str], Band]  # (device class, metric) -> band


def device_class(device: str) -> str:
    """Bands are kept for two classes: CPU tiers, and every accelerator (CUDA, Metal, Vulkan)."""
    return "cpu" if device == "cpu" else "gpu"


def band_for(bands: Bands, device: str, metric: str) -> Band | None:
    """The device class's band, the pooled one where that class has too few entries."""
    own = bands.get((device_class(device), metric))
    if own and own.n >= MIN_BAND_ENTRIES:
        return own
    return bands.get(("all", metric)) or own


def bands_from_json(data: Mapping[str, Any], mode: str = "host") -> Bands:
    """Bands of one efficiency mode: "host" (this host's e_bw, the default) or "published"."""
    src = data if mode == "host" else data.get("published", {})
    return {(cls, metric): Band(q10=b["q10"], q90=b["q90"], n=b["n"], scope=cls)
            for cls, per in src.get("bands", {}).items() for metric, b in per.items()}


def load_bands(path: Path, mode: str = "host") -> Bands:
    """The committed error bands (written by ``python -m bench.hardware.validate --write-bands``)."""
    try:
        return bands_from_json(json.loads(path.read_text()), mode)
    except FileNotFoundError:
        raise BenchError(f"{path}: no validation error bands; run: python -m bench.hardware.validate "
                         "--write-bands") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise BenchError(f"{path}: unreadable error bands: {exc}") from None


def load_published_efficiency(path: Path) -> tuple[float, dict[str, Any]]:
    """The median achieved/bandwidth of the published dense entries (``--write-bands`` stores it):
    the decode efficiency of the "published" mode, and how it was obtained."""
    try:
        pub = json.loads(path.read_text())["published"]
        return float(pub["e_bw"]), {k: v for k, v in pub.items() if k != "bands"}
    except FileNotFoundError:
        raise BenchError(f"{path}: no validation error bands; run: python -m bench.hardware.validate "
                         "--write-bands") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise BenchError(f"{path}: no published efficiency in the error bands: {exc}") from None


# ---- the inputs ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class HostEfficiency:
    """How close llama.cpp came, on the measuring host, to its measured bandwidth and matmul rate."""

    bandwidth: float | None
    compute: float | None
    host: str
    inputs: dict[str, Any]
    why_not: dict[str, str] = field(default_factory=dict)  # metric -> why it could not be derived


@dataclass(frozen=True)
class TierFigures:
    """A tier's sustained memory bandwidth and compute throughput, each with where it came from."""

    name: str
    device: str
    bandwidth_bytes_per_s: float | None
    bandwidth_basis: str
    compute_flop_per_s: float | None
    compute_basis: str


@dataclass(frozen=True)
class Workload:
    """What is projected: the model's bytes and FLOPs per token at the lengths of the cell."""

    decode_bytes_per_token: float
    decode_flops_per_token: float | None   # None: the parameter count is unknown
    prefill_flops_per_token: float | None
    prompt_tokens: int


def _get(d: Mapping[str, Any] | None, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, Mapping):
            return None
        d = d.get(k)
    return d


def _attn_width(g: Mapping[str, Any]) -> int:
    heads = g.get("head_count") or 0
    width = g.get("key_length") or ((g.get("embedding_length") or 0) // max(1, heads))
    return heads * width


def workload_from_gguf(g: Mapping[str, Any], file_bytes: int, n_params: float, prompt_tokens: int,
                       gen_tokens: int) -> Workload:
    """B at the mean decode context (p + n/2, as the roofline share uses) and F from the header."""
    n_layer, d = g.get("block_count") or 0, _attn_width(g)
    context = prompt_tokens + gen_tokens / 2
    return Workload(decode_bytes_per_token=bytes_read_per_token(dict(g), file_bytes, int(context)),
                    decode_flops_per_token=flops_per_token(n_params, n_layer, d, context),
                    prefill_flops_per_token=prefill_flops_per_token(n_params, n_layer, d, prompt_tokens),
                    prompt_tokens=prompt_tokens)


def _fastest(summary: Mapping[str, Any], metric: str) -> float | None:
    """The fastest counted repetition (else the mean): on a shared host other work only ever slows a
    repetition down, and an efficiency describes the host, not its neighbours (the calibration is a
    best-of-5 for the same reason)."""
    s = summary.get(metric) or {}
    return s.get("max") or s.get("mean")


def host_efficiency(row: Mapping[str, Any]) -> HostEfficiency:
    """e_bw and e_c of one result row (a dict as stored in results/*.jsonl), measured on a CPU, from
    its fastest counted repetition."""
    cfg, model, summary = row.get("config") or {}, row.get("model") or {}, row.get("summary") or {}
    cal = _get(row, "environment", "calibration") or {}
    host = _get(row, "environment", "host", "hostname") or "this host"
    g = model.get("gguf") or {}
    why: dict[str, str] = {}
    if cfg.get("device", "cpu") != "cpu" or (cfg.get("n_gpu_layers") or 0) > 0:
        why["all"] = ("measured on a GPU: the calibration measures the host's RAM and BLAS, not the GPU's, "
                      "so no efficiency can be derived from this row")
    n_params = g.get("n_params") or (_get(model, "facts", "params_b") or 0) * 1e9
    if not g or not model.get("size_bytes") or not n_params:
        why["all"] = "the row has no GGUF header summary, file size or parameter count"
    if why:
        return HostEfficiency(None, None, host, {}, {"decode_tps": why["all"], "prefill_tps": why["all"]})
    p, n = int(cfg.get("prompt_tokens") or 0), int(cfg.get("gen_tokens") or 0)
    w = workload_from_gguf(g, int(model["size_bytes"]), n_params, p, n)
    decode, prefill = _fastest(summary, "decode_tps"), _fastest(summary, "prefill_tps")
    bw, flops = cal.get("memory_bandwidth_bytes_per_s"), cal.get("matmul_flop_per_s")
    e_bw = bandwidth_efficiency(decode, w.decode_bytes_per_token, bw) if decode and bw else None
    e_c = compute_efficiency(prefill, w.prefill_flops_per_token, flops) if prefill and flops else None
    if e_bw is None:
        why["decode_tps"] = "the row has no decode tok/s or no measured bandwidth (environment.calibration)"
    if e_c is None:
        why["prefill_tps"] = "the row has no prefill tok/s or no measured matmul rate (environment.calibration)"
    inputs = {"host": host, "cpu": _get(row, "environment", "host", "cpu_model"), "threads": cfg.get("threads"),
              "model": f"{model.get('model_id')}:{model.get('variant_id')}", "prompt_tokens": p, "gen_tokens": n,
              "decode_tps": decode, "prefill_tps": prefill, "bytes_per_token": w.decode_bytes_per_token,
              "prefill_flops_per_token": w.prefill_flops_per_token, "bandwidth_bytes_per_s": bw,
              "matmul_flop_per_s": flops, "e_bw": e_bw, "e_c": e_c, "measured_at": row.get("created_at"),
              "statistic": "the fastest counted repetition (summary max)"}
    return HostEfficiency(e_bw, e_c, host, inputs, why)


def _cpu_compute(perf: Performance) -> tuple[float | None, str]:
    c = perf.compute
    if c is None:
        return None, "no compute figure"
    fp32 = preferred_figure(c.fp32_gflops)
    if fp32:
        return fp32.value * GB, f"fp32 {fp32.label()}"
    fp64 = preferred_figure(c.fp64_gflops)
    if fp64:
        return 2 * fp64.value * GB, f"2 x fp64 (a SIMD register holds twice as many fp32 values): {fp64.label()}"
    return None, "no fp32 or fp64 throughput figure"


def tier_figures(perf: Performance | None, device: str, name: str) -> TierFigures:
    """The figures a projection uses, from a profile's (or a validation machine's) performance block."""
    if perf is None:
        return TierFigures(name, device, None, "no performance figures", None, "no performance figures")
    bw = perf.bandwidth
    if device == "cpu":
        flops, flops_basis = _cpu_compute(perf)
    else:
        fp16 = preferred_figure(perf.compute.fp16_gflops) if perf.compute else None
        flops, flops_basis = (fp16.value * GB, f"dense fp16 tensor {fp16.label()}") if fp16 else (
            None, "no dense fp16 throughput figure")
    return TierFigures(name, device, bw.value * GB if bw else None,
                       f"{bw.label()} GB/s" if bw else "no memory bandwidth figure", flops, flops_basis)


# ---- projections ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Projection:
    """One projected metric with its interval and everything it was computed from."""

    metric: str
    value: float
    low: float
    high: float
    unit: str
    basis: str
    bound: str | None
    inputs: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TierProjection:
    """Decode, prefill, TTFT and TPOT of one cell carried onto one tier; a metric that cannot be
    projected is None and ``unmeasured`` says why (a verdict on it is `unmeasured`)."""

    tier: str
    basis: str
    decode_tps: Projection | None
    prefill_tps: Projection | None
    ttft_s: Projection | None
    tpot_s: Projection | None
    unmeasured: dict[str, str]
    label: str = LABEL

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"label": self.label, "tier": self.tier, "basis": self.basis,
                               "unmeasured": dict(self.unmeasured)}
        for m in ("decode_tps", "prefill_tps", "ttft_s", "tpot_s"):
            p = getattr(self, m)
            out[m] = p.to_dict() if p else None
        return out


def _with_band(metric: str, value: float, unit: str, basis: str, bound: str | None, inputs: dict[str, Any],
               band: Band | None, inverse: bool = False) -> Projection:
    if band is None:
        low, high = 0.0, math.inf  # no validation evidence: the interval is unbounded, never optimistic
        inputs = {**inputs, "interval": "none: no validation band for this device class"}
    else:
        low, high = band.interval(value, inverse)
        inputs = {**inputs, "interval": f"10th-90th percentile of ln(measured/projected), {band.scope} "
                                        f"validation entries (n={band.n})"}
    return Projection(metric, value, low, high, unit, basis, bound, inputs)


def project(eff: HostEfficiency, tier: TierFigures, work: Workload, bands: Bands,
            basis: str | None = None) -> TierProjection:
    """Every metric of one workload on one tier, or why it cannot be projected."""
    basis = basis or f"projected from {eff.host}"
    missing: dict[str, str] = {}
    common = {"host_efficiency": eff.inputs, "tier": tier.name, "bandwidth": tier.bandwidth_basis,
              "compute": tier.compute_basis, "bytes_per_token": work.decode_bytes_per_token,
              "decode_flops_per_token": work.decode_flops_per_token,
              "prefill_flops_per_token": work.prefill_flops_per_token, "prompt_tokens": work.prompt_tokens}
    if tier.device != "cpu":
        common["cross_device"] = ("efficiencies measured on a CPU applied to an accelerator: the interval comes "
                                  "from the validation entries run on GPUs")
    decode = prefill = None
    if eff.bandwidth is None:
        missing["decode_tps"] = eff.why_not.get("decode_tps", "no host bandwidth efficiency")
    elif tier.bandwidth_bytes_per_s is None:
        missing["decode_tps"] = f"tier {tier.name} has no memory bandwidth figure"
    else:
        value, bound = project_decode(eff.bandwidth, tier.bandwidth_bytes_per_s, work.decode_bytes_per_token,
                                      eff.compute, tier.compute_flop_per_s, work.decode_flops_per_token)
        decode = _with_band("decode_tps", value, "tok/s", basis, bound, common,
                            band_for(bands, tier.device, "decode_tps"))
    if eff.compute is None:
        missing["prefill_tps"] = eff.why_not.get("prefill_tps", "no host compute efficiency")
    elif not work.prefill_flops_per_token:
        missing["prefill_tps"] = "the model's parameter count is unknown"
    elif tier.compute_flop_per_s is None:
        missing["prefill_tps"] = f"tier {tier.name} has no compute figure ({tier.compute_basis})"
    else:
        value = project_prefill(eff.compute, tier.compute_flop_per_s, work.prefill_flops_per_token)
        prefill = _with_band("prefill_tps", value, "tok/s", basis, "compute", common,
                             band_for(bands, tier.device, "prefill_tps"))
    ttft = tpot = None
    if prefill:
        b = band_for(bands, tier.device, "prefill_tps")
        ttft = _with_band("ttft_s", ttft_s(work.prompt_tokens, prefill.value), "s", basis, "compute",
                          {**common, "formula": "prompt_tokens / prefill_tps"}, b, inverse=True)
    else:
        missing["ttft_s"] = missing["prefill_tps"]
    if decode:
        b = band_for(bands, tier.device, "decode_tps")
        tpot = _with_band("tpot_s", tpot_s(decode.value), "s", basis, decode.bound,
                          {**common, "formula": "1 / decode_tps"}, b, inverse=True)
    else:
        missing["tpot_s"] = missing["decode_tps"]
    return TierProjection(tier.name, basis, decode, prefill, ttft, tpot, missing)


def project_row(row: Mapping[str, Any], profile: Profile, bands: Bands | None = None,
                efficiency: str = "host") -> TierProjection:
    """A row measured on this host (a dict as stored in results/*.jsonl) carried onto ``profile``'s real
    hardware, for the row's own prompt and generation lengths. ``bands`` defaults to the committed
    validation bands. A tier without figures gets no projection: its metrics are `unmeasured`.

    ``efficiency``: "host" (default, the issue's model) takes e_bw from the row itself; "published"
    replaces the decode efficiency e_bw by the median achieved/bandwidth of the published machines in
    the validation set (validated leave-one-machine-out, with bands of its own), for hosts whose decode
    is not bandwidth-bound (see the README: this 2-vCPU host reaches 0.26, the machines 0.77).
    Prefill always uses the row's e_c."""
    from bench.datafiles import find_data_path

    bands_path = find_data_path("validation", None, "BENCH_VALIDATION") / "error_bands.json"
    if bands is None:  # the published mode's decode bands over the host's (prefill keeps the host's e_c)
        bands = {**load_bands(bands_path), **(load_bands(bands_path, "published") if efficiency == "published"
                                                else {})}
    eff = host_efficiency(row)
    cfg, model = row.get("config") or {}, row.get("model") or {}
    g = model.get("gguf") or {}
    tier = tier_figures(profile.performance, profile.device, profile.id)
    if not eff.inputs:
        why = eff.why_not.get("decode_tps", "no efficiency")
        return TierProjection(profile.id, f"projected from {eff.host}", None, None, None, None,
                              {m: why for m in ("decode_tps", "prefill_tps", "ttft_s", "tpot_s")})
    basis = f"projected from {eff.host}"
    if efficiency == "published":
        e_bw, how = load_published_efficiency(bands_path)
        eff = HostEfficiency(e_bw, eff.compute, eff.host, {**eff.inputs, "e_bw_host": eff.bandwidth, "e_bw": e_bw,
                                                            "e_bw_source": how}, eff.why_not)
        basis += " (decode efficiency from published measurements)"
    elif efficiency != "host":
        raise ValueError(f"efficiency must be 'host' or 'published', not {efficiency!r}")
    n_params = g.get("n_params") or (_get(model, "facts", "params_b") or 0) * 1e9
    work = workload_from_gguf(g, int(model["size_bytes"]), n_params, int(cfg.get("prompt_tokens") or 0),
                              int(cfg.get("gen_tokens") or 0))
    return project(eff, tier, work, bands, basis)
