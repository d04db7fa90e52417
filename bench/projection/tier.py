"""A model's speed on a tier that is not at hand, and what that speed costs there.

``project_row(row, profile)`` carries a result row onto a tier: from the row it takes only the model's
shape (its GGUF header: file bytes, parameters, layers, KV-cache width) and the workload (prompt and
generated tokens, depth, KV-cache type), never its measured speeds or this host's calibration, so one
row measured on two hosts gives the same projection. The tier's side is its profile's figures and,
first, the published results of the machines that are the tier (validation/machines.yaml ``tiers:``,
and rows imported with ``bench import --evidence``).

A tier's speed has one of three bases (``tier.speed_basis`` in a row):
  measured                the cell ran on the tier itself (``auto``, a fleet node, an imported result);
  projected: ...          the performance model's PROJECTION with its interval, naming its evidence;
  caps only               emulated here and the tier has nothing to project from: fit measured, speed not.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from bench.errors import BenchError
from bench.hardware.profiles import Profile
from bench.hardware.tiers import usd_per_correct, usd_per_million_tokens
from bench.projection.evidence import Entry, EvidenceSet, device_class, load_evidence
from bench.projection.fit import band_for
from bench.projection.model import (
    LABEL,
    ClassParams,
    Estimate,
    Hardware,
    Projection,
    Why,
    banded,
    project_decode,
    project_prefill,
)
from bench.projection.shape import ModelShape, shape_from_gguf
from bench.results.kinds import PROJECTED_FROM, SpeedBasis

if TYPE_CHECKING:
    from bench.results.schema import Row

MEASURED = SpeedBasis.MEASURED
CAPS_ONLY = SpeedBasis.CAPS_ONLY
METRICS = ("decode_tps", "prefill_tps", "ttft_s", "tpot_s")
_BASIS_WORDS = {"evidence": "published results of the tier's machine", "measured": "the tier's measured bandwidth",
                "peak": "the tier's datasheet peak bandwidth", "compute": "the tier's compute figure"}


@dataclass(frozen=True)
class Workload:
    """What is projected: the lengths of the cell, the context already in the KV cache, its type."""

    prompt_tokens: int
    gen_tokens: int
    depth: int = 0
    kv_type: str = "f16"

    @property
    def decode_context(self) -> float:
        """The mean number of positions a generated token attends to: depth + p + n/2."""
        return self.depth + self.prompt_tokens + self.gen_tokens / 2


@dataclass(frozen=True)
class TierProjection:
    """Decode, prefill, TTFT and TPOT of one workload on one tier; a metric that cannot be projected
    is None and ``unmeasured`` says why (a verdict on it is `unmeasured`)."""

    tier: str
    basis: str  # "projected from <its evidence>" or "caps only" (bench.results.kinds.parse_speed_basis)
    decode_tps: Projection | None
    prefill_tps: Projection | None
    ttft_s: Projection | None
    tpot_s: Projection | None
    unmeasured: dict[str, str] = field(default_factory=dict)
    label: str = LABEL

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"label": self.label, "tier": self.tier, "basis": self.basis,
                               "unmeasured": dict(self.unmeasured)}
        for m in METRICS:
            p = getattr(self, m)
            out[m] = p.to_dict() if p else None
        return out


# ---- the fitted model ------------------------------------------------------------------------------

@dataclass(frozen=True)
class PerformanceModel:
    """The per-class parameters and bands (validation/model_params.json) and the evidence."""

    params: dict[str, ClassParams]
    bands: dict[str, dict[str, Any]]
    evidence: EvidenceSet
    made: str = ""

    @classmethod
    def load(cls, folder: Path | None = None) -> PerformanceModel:
        from bench.datafiles import find_data_path

        return _load(str(folder or find_data_path("validation", None, "BENCH_VALIDATION")))

    def hardware_for(self, profile: Profile, extra_evidence: tuple[Entry, ...] = ()) -> Hardware:
        perf = profile.performance
        declared = perf.device_class if perf else None
        cls = device_class(profile.device, profile.name, declared)
        from bench.projection.fit import _figures  # the same reading of figures as the validation's

        f = _figures(perf)
        compute = f.get("compute_cpu") if cls == "cpu" else f.get("compute_gpu")
        return Hardware(id=profile.id, device_class=cls, threads=profile.capacity.threads,
                        bandwidth_measured=f.get("bandwidth_measured"),
                        bandwidth_measured_label=f.get("bandwidth_measured_label", ""),
                        bandwidth_peak=f.get("bandwidth_peak"), bandwidth_peak_label=f.get("bandwidth_peak_label", ""),
                        compute=compute[0] if compute else None, compute_label=compute[1] if compute else "",
                        compute_threads=f.get("compute_threads") or profile.capacity.threads,
                        evidence=tuple(self.evidence.for_tier(profile.id)) + tuple(extra_evidence))

    def project(self, shape: ModelShape, work: Workload, profile: Profile,
                extra_evidence: tuple[Entry, ...] = ()) -> TierProjection:
        """Every metric of one workload on one tier, or why it cannot be projected."""
        if profile.performance is None and not self.evidence.for_tier(profile.id) and not extra_evidence:
            why = f"tier {profile.id} has no performance figures and no published results"
            return TierProjection(profile.id, CAPS_ONLY, None, None, None, None, {m: why for m in METRICS})
        hw = self.hardware_for(profile, extra_evidence)
        params = self.params.get(hw.device_class)
        if params is None:
            why = f"no fitted parameters for the {hw.device_class} class"
            return TierProjection(profile.id, CAPS_ONLY, None, None, None, None, {m: why for m in METRICS})
        missing: dict[str, str] = {}
        raw_d = project_decode(shape, work.decode_context, hw, params, work.kv_type)
        raw_p = project_prefill(shape, work.prompt_tokens, work.depth, hw, params)
        decode, tpot, why = self._rate_and_time("decode_tps", "tpot_s", raw_d, hw, lambda r: 1.0 / r)
        if why:
            missing["decode_tps"] = missing["tpot_s"] = why
        prefill, ttft, why = self._rate_and_time("prefill_tps", "ttft_s", raw_p, hw,
                                                 lambda r: work.prompt_tokens / r)
        if why:
            missing["prefill_tps"] = missing["ttft_s"] = why
        basis = decode.basis if decode else (prefill.basis if prefill else None)
        label = f"{PROJECTED_FROM}{_BASIS_WORDS[basis]}" if basis else CAPS_ONLY
        return TierProjection(profile.id, label, decode, prefill, ttft, tpot, missing)


    def _rate_and_time(self, metric: str, time_metric: str, raw: Estimate | Why, hw: Hardware,
                       time_of: Any) -> tuple[Projection | None, Projection | None, str | None]:
        """A rate with its band, and the time it implies (TPOT = 1 / decode, TTFT = p / prefill) with the
        same band inverted; or why there is none."""
        if isinstance(raw, Why):
            return None, None, raw.reason
        band = band_for(self.bands, metric, hw.device_class, raw.basis)
        rate = banded(metric, raw, "tok/s", band)
        if isinstance(rate, Why):
            return None, None, rate.reason
        time = banded(time_metric, Estimate(time_of(raw.value), raw.basis, raw.how, raw.inputs), "s", band,
                      inverse=True)
        return rate, time if isinstance(time, Projection) else None, None


@lru_cache(maxsize=4)
def _load(folder: str) -> PerformanceModel:
    path = Path(folder) / "model_params.json"
    try:
        data = json.loads(path.read_text())
        params = {cls: ClassParams.from_dict(p) for cls, p in data["classes"].items()}
        bands = data["bands"]
    except FileNotFoundError:
        raise BenchError(f"{path}: no fitted performance model; run: python -m bench.projection.validate "
                         "--write-params") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise BenchError(f"{path}: unreadable performance model parameters: {exc}") from None
    return PerformanceModel(params, bands, load_evidence(Path(folder)), data.get("made", ""))


# ---- rows ------------------------------------------------------------------------------------------

def shape_of_row(row: Row) -> ModelShape | Why:
    """The model's shape from a row: its GGUF header and file size."""
    model = row.model
    if not model.gguf or not model.size_bytes:
        return Why("the row has no GGUF header summary or file size")
    return shape_from_gguf(model.gguf, model.size_bytes, model.facts.params_b if model.facts else None,
                           model.quantization)


def workload_of_row(row: Row) -> Workload:
    cfg = row.config
    opts = cfg.backend_options or {}
    depth = cfg.depth or opts.get("depth") or 0
    return Workload(int(cfg.prompt_tokens or 0), int(cfg.gen_tokens or 0), int(depth), str(opts.get("type_k") or "f16"))


def project_row(row: Row, profile: Profile, model: PerformanceModel | None = None) -> TierProjection:
    """A result row carried onto ``profile``'s real hardware for the row's own workload (see the module
    docstring: only the model's shape and the workload come from the row)."""
    shape = shape_of_row(row)
    if isinstance(shape, Why):
        return TierProjection(profile.id, CAPS_ONLY, None, None, None, None, {m: shape.reason for m in METRICS})
    return (model or PerformanceModel.load()).project(shape, workload_of_row(row), profile)


# ---- cost ------------------------------------------------------------------------------------------

def tier_speed(row: Row, profile: Profile, measured_on_tier: bool) -> dict[str, Any]:
    """{speed_basis, projection, cost} for the tier ``row`` speaks for; ``measured_on_tier``: it ran on the
    tier itself. A missing figure is None with the reason, never 0."""
    price = profile.price
    hourly = profile.hourly_usd()
    priced = {"usd_per_hour": hourly, "basis": price.basis, "price_source": price.source} if price and hourly else None
    if measured_on_tier:
        decode = row.summary.mean("decode_tps")
        if priced is None:
            return {"speed_basis": MEASURED, "projection": None,
                    "cost": {"usd_per_1m_output_tokens": None, "why": f"profile {profile.id} has no price"}}
        usd = usd_per_million_tokens(hourly, decode) if decode else None
        return {"speed_basis": MEASURED, "projection": None,
                "cost": {**priced, "usd_per_1m_output_tokens": usd, "speed_basis": "decode tok/s measured on the tier"}}
    projection = project_row(row, profile)
    decode = projection.decode_tps
    if decode is None:
        why = (f"no projection of decode onto {profile.id}: {projection.unmeasured.get('decode_tps')}; this host's "
               "speed under the tier's caps is not the tier's")
        return {"speed_basis": projection.basis,
                "projection": projection.to_dict(), "cost": {"usd_per_1m_output_tokens": None, "why": why}}
    if priced is None:
        cost: dict[str, Any] = {"usd_per_1m_output_tokens": None, "why": f"profile {profile.id} has no price"}
    else:
        # The interval's fast end is its cheap end.
        cost = {**priced, "usd_per_1m_output_tokens": usd_per_million_tokens(hourly, decode.value),
                "usd_per_1m_output_tokens_interval": [usd_per_million_tokens(hourly, decode.high),
                                                      usd_per_million_tokens(hourly, decode.low)],
                "speed_basis": f"decode tok/s {projection.basis} (PROJECTION, not a measurement)"}
    return {"speed_basis": projection.basis, "projection": projection.to_dict(), "cost": cost}


def task_seconds(records: list[Mapping[str, Any]], prefill_tps: float, decode_tps: float) -> float:
    """Time a task's items take at these speeds, by the item's own token counts:
    sum_i (p_i - r_i) / prefill_tps + g_i / decode_tps, where p_i is item i's prompt tokens, r_i those
    of them served from the KV cache (the shared few-shot prefix) and g_i its generated tokens."""
    return sum((r["prompt_tokens"] - r.get("prompt_tokens_reused", 0)) / prefill_tps
               + r["generated_tokens"] / decode_tps for r in records)


def task_cost_on_tier(row: Row, profile: Profile) -> dict[str, Any]:
    """A task pass measured on this host carried onto ``profile``: its time and $ per correct answer
    there, a PROJECTION with its interval. The tier's time is task_seconds at the tier's projected
    speeds times the median over items of (item's measured seconds / task_seconds of that item at the
    host's measured speeds, the row's timed pass): what the formula leaves out (deeper context than the
    timed pass, stop checks) is carried at the host's measured proportion, and the median keeps a few
    items slowed by something else on the host from scaling every tier. ``{"tier", "why"}`` where it
    cannot be projected."""
    task = row.task
    records, correct = task.records or [], task.correct or 0
    host_prefill = row.summary.mean("prefill_tps")
    host_decode = row.summary.mean("decode_tps")
    if not task.ok or not records or not host_prefill or not host_decode:
        return {"tier": profile.id, "why": "no task pass and timed pass measured together in this row"}
    projection = project_row(row, profile)
    if projection.decode_tps is None or projection.prefill_tps is None:
        why = projection.unmeasured.get("decode_tps") or projection.unmeasured.get("prefill_tps")
        return {"tier": profile.id, "why": f"no projection onto {profile.id}: {why}"}
    scale = statistics.median(r["seconds"] / task_seconds([r], host_prefill, host_decode) for r in records)
    d, p = projection.decode_tps, projection.prefill_tps
    seconds = scale * task_seconds(records, p.value, d.value)
    slow = scale * task_seconds(records, p.low, d.low)
    fast = scale * task_seconds(records, p.high, d.high)
    out: dict[str, Any] = {"tier": profile.id, "basis": f"{projection.basis} (PROJECTION, not a measurement)",
                           "items": len(records), "seconds": seconds, "seconds_interval": [fast, slow]}
    hourly = profile.hourly_usd()
    if hourly:
        out["usd_per_hour"] = hourly
        out["usd_per_correct"] = usd_per_correct(hourly, seconds, correct)
        out["usd_per_correct_interval"] = [usd_per_correct(hourly, fast, correct),
                                           usd_per_correct(hourly, slow, correct)]
    else:
        out["why_no_usd"] = f"profile {profile.id} has no price"
    return out
