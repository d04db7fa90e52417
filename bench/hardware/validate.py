"""Validation of the performance model (bench/hardware/perfmodel.py) against published measurements of
real machines, and the error bands every projection's interval comes from.

    python -m bench.hardware.validate                     # error table and summary, decode and prefill
    python -m bench.hardware.validate --only ID,ID        # a subset of entries
    python -m bench.hardware.validate --write-bands       # also rewrite validation/error_bands.json
    python -m bench.hardware.validate --reference-from results/FILE.jsonl [--row N]
                                                          # store a row measured here as the host reference

A published entry cannot be projected "from a row" of its own machine (that machine is not here), so
it is projected from this host's reference row (validation/host_reference.json: the host efficiencies
e_bw and e_c, measured here) and the entry's machine figures (validation/machines.yaml) and model (its
file size and parameter count): decode = e_bw x BW / file bytes, bounded by e_c x C / 2N; prefill =
e_c x C / 2N. The KV cache and attention terms are left out for published entries (their architecture is
not recorded; under 2% of bytes and FLOPs at these lengths for 3B+ models), and the whole file counts as
read per token (the embedding table is read once per token only where it is also the output head:
this overstates bytes by up to 6% for Llama 3 8B, so projections err low by as much).

Files (folder: --data, $BENCH_VALIDATION, ./validation, or the repo's):
    measurements.csv     one published measurement per line, with its source URL, date and quoted line
    machines.yaml        the machines' figures, in the profiles' `performance` schema
    host_reference.json  the row of this host the efficiencies come from
    error_bands.json     10th/90th percentiles of ln(measured / projected) per device class and metric
Bad input (an entry without a source, an unknown machine, an impossible figure): one line, exit 2.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import math
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from bench.errors import BenchError
from bench.hardware.perfmodel import (
    MIN_BAND_ENTRIES,
    Bands,
    HostEfficiency,
    Projection,
    Workload,
    device_class,
    host_efficiency,
    project,
    project_decode,
    tier_figures,
)
from bench.hardware.profiles import Performance
from bench.yamlfile import parse_yaml_file

UNITS = {"B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}
GOAL_MEDIAN_PCT, GOAL_WITHIN_PCT, GOAL_SHARE = 20.0, 35.0, 0.80  # issue 14's goal for decode
COLUMNS = ("id", "machine", "backend", "model", "params_b", "size", "size_unit", "quant", "moe", "threads", "ngl",
           "prompt_tokens", "gen_tokens", "prefill_tps", "decode_tps", "source", "date", "quote", "notes")


class Machine(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    name: str
    device: Literal["cpu", "cuda", "metal", "vulkan", "rocm"]
    performance: Performance
    note: str | None = None


class MachinesFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = 1
    machines: list[Machine]


@dataclass(frozen=True)
class Entry:
    """One published measurement of a real machine."""

    id: str
    machine: str
    backend: str
    model: str
    params: float | None      # parameters (total)
    size_bytes: float         # the model file
    quant: str
    moe: bool
    prompt_tokens: int | None
    prefill_tps: float | None
    decode_tps: float | None
    source: str
    date: str
    quote: str
    line: int
    notes: str = ""


@dataclass
class Result:
    entry: Entry
    machine: Machine
    decode: Projection | None
    prefill: Projection | None
    why_not: dict[str, str] = field(default_factory=dict)

    @property
    def group(self) -> str:
        """cpu, cuda or metal; MoE entries apart (the dense model does not describe them)."""
        return "moe" if self.entry.moe else self.machine.device


# ---- loading -------------------------------------------------------------------------------------

def _num(raw: str, what: str, where: str, *, positive: bool = True) -> float | None:
    raw = (raw or "").strip()
    if not raw:
        return None
    try:
        v = float(raw)
    except ValueError:
        raise BenchError(f"{where}: {what} {raw!r} is not a number") from None
    if positive and not (v > 0 and math.isfinite(v)):
        raise BenchError(f"{where}: {what} {raw!r} must be a positive number")
    return v


def _entry(row: dict[str, str], path: Path, line: int) -> Entry:
    eid = (row.get("id") or "").strip()
    where = f"{path}:{line}: entry {eid or '(no id)'}"
    if not eid:
        raise BenchError(f"{where}: no id")
    source = (row.get("source") or "").strip()
    if not source.startswith(("http://", "https://")):
        raise BenchError(f"{where}: no source (a URL of the page the measurement was read from)")
    if not (row.get("date") or "").strip():
        raise BenchError(f"{where}: no date (when the measurement was published or read)")
    if not (row.get("quote") or "").strip():
        raise BenchError(f"{where}: no quote (the line of the source the figures were read from)")
    unit = (row.get("size_unit") or "").strip()
    if unit not in UNITS:
        raise BenchError(f"{where}: size_unit {unit!r} is not one of {', '.join(UNITS)}")
    size = _num(row.get("size", ""), "size", where)
    if size is None:
        raise BenchError(f"{where}: no model file size")
    decode, prefill = _num(row.get("decode_tps", ""), "decode_tps", where), _num(row.get("prefill_tps", ""),
                                                                                   "prefill_tps", where)
    if decode is None and prefill is None:
        raise BenchError(f"{where}: neither decode_tps nor prefill_tps")
    params = _num(row.get("params_b", ""), "params_b", where)
    pp = _num(row.get("prompt_tokens", ""), "prompt_tokens", where)
    moe = (row.get("moe") or "no").strip().lower()
    if moe not in ("yes", "no"):
        raise BenchError(f"{where}: moe must be yes or no, not {moe!r}")
    return Entry(id=eid, machine=(row.get("machine") or "").strip(), backend=row.get("backend", ""),
                 model=row.get("model", ""), params=params * 1e9 if params else None, size_bytes=size * UNITS[unit],
                 quant=row.get("quant", ""), moe=moe == "yes", prompt_tokens=int(pp) if pp else None,
                 prefill_tps=prefill, decode_tps=decode, source=source, date=row["date"].strip(),
                 quote=row["quote"].strip(), line=line, notes=row.get("notes", ""))


def load_entries(path: Path) -> list[Entry]:
    """Every published measurement; a bad one stops everything with its file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BenchError(f"{path}: file not found") from None
    reader = csv.DictReader(text.splitlines())
    missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise BenchError(f"{path}:1: missing columns: {', '.join(missing)}")
    entries, seen = [], set()
    for i, row in enumerate(reader, start=2):
        e = _entry(row, path, i)
        if e.id in seen:
            raise BenchError(f"{path}:{i}: entry {e.id}: duplicate id")
        seen.add(e.id)
        entries.append(e)
    return entries


def load_machines(path: Path) -> dict[str, Machine]:
    machines: dict[str, Machine] = {}
    for m in parse_yaml_file(path, MachinesFile).machines:
        if m.id in machines:
            raise BenchError(f"{path}: machine {m.id} is listed twice")
        machines[m.id] = m
    return machines


def load_reference(path: Path) -> tuple[HostEfficiency, dict[str, Any]]:
    """The host row the efficiencies come from, and what the file says about how it was made."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise BenchError(f"{path}: no host reference; make one with: python -m bench.hardware.validate "
                         "--reference-from results/FILE.jsonl") from None
    except ValueError as exc:
        raise BenchError(f"{path}: not JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("row"), dict):
        raise BenchError(f"{path}: no 'row' object")
    eff = host_efficiency(data["row"])
    if eff.bandwidth is None or eff.compute is None:
        raise BenchError(f"{path}: the reference row gives no efficiency: {eff.why_not}")
    return eff, data


# ---- projecting ----------------------------------------------------------------------------------

def workload_of(e: Entry) -> Workload:
    """Bytes and FLOPs per token of a published entry: the whole file, 2 x parameters (see module doc)."""
    flops = 2.0 * e.params if e.params else None
    return Workload(decode_bytes_per_token=e.size_bytes, decode_flops_per_token=flops,
                    prefill_flops_per_token=flops, prompt_tokens=e.prompt_tokens or 0)


def project_entry(e: Entry, m: Machine, eff: HostEfficiency, bands: Bands | None = None) -> Result:
    tier = tier_figures(m.performance, "cpu" if m.device == "cpu" else m.device, m.id)
    tp = project(eff, tier, workload_of(e), bands or {}, basis=f"projected from {eff.host}")
    why = dict(tp.unmeasured)
    prefill = tp.prefill_tps
    if e.decode_tps is None:
        why["decode_tps"] = "not published"
    if e.prefill_tps is None:
        why["prefill_tps"] = "not published"
    return Result(e, m, tp.decode_tps if e.decode_tps else None, prefill if e.prefill_tps else None, why)


def project_all(entries: list[Entry], machines: dict[str, Machine], eff: HostEfficiency) -> list[Result]:
    out = []
    for e in entries:
        if e.machine not in machines:
            raise BenchError(f"measurements.csv:{e.line}: entry {e.id}: unknown machine {e.machine!r} "
                             f"(known: {', '.join(sorted(machines))})")
        out.append(project_entry(e, machines[e.machine], eff))
    return out


# ---- errors and bands ----------------------------------------------------------------------------

def _pairs(results: list[Result], metric: str) -> list[tuple[Result, float, float]]:
    """(result, measured, projected) of every entry where both exist."""
    out = []
    for r in results:
        p = r.decode if metric == "decode_tps" else r.prefill
        measured = r.entry.decode_tps if metric == "decode_tps" else r.entry.prefill_tps
        if p is not None and measured:
            out.append((r, measured, p.value))
    return out


def error_pct(measured: float, projected: float) -> float:
    """(projected - measured) / measured, in %: positive = the model is optimistic."""
    return (projected - measured) / measured * 100.0


def summary(results: list[Result], metric: str, groups: tuple[str, ...] | None = None) -> dict[str, Any]:
    """n, median |error| %, share within 35% and 20%, median signed error %, over the chosen groups."""
    pairs = [(r, m, p) for r, m, p in _pairs(results, metric) if groups is None or r.group in groups]
    errs = [error_pct(m, p) for _, m, p in pairs]
    if not errs:
        return {"n": 0}
    abs_errs = [abs(x) for x in errs]
    return {"n": len(errs), "median_abs_pct": statistics.median(abs_errs),
            "within_35": sum(a <= GOAL_WITHIN_PCT for a in abs_errs) / len(errs),
            "within_20": sum(a <= 20.0 for a in abs_errs) / len(errs),
            "median_signed_pct": statistics.median(errs)}


def _band(log_ratios: list[float], scope: str) -> dict[str, Any] | None:
    if len(log_ratios) < 2:
        return None
    deciles = statistics.quantiles(log_ratios, n=10, method="inclusive")
    return {"q10": deciles[0], "q90": deciles[-1], "n": len(log_ratios), "scope": scope}


def bands_from(results: list[Result]) -> dict[str, dict[str, Any]]:
    """10th/90th percentiles of ln(measured / projected) per device class (cpu, gpu) and pooled (all).
    MoE entries are left out: the dense model's interval must not be widened by a model it does not
    describe (their errors are reported apart)."""
    out: dict[str, dict[str, Any]] = {}
    for metric in ("decode_tps", "prefill_tps"):
        by: dict[str, list[float]] = {"cpu": [], "gpu": [], "all": []}
        for r, m, p in _pairs(results, metric):
            if r.entry.moe:
                continue
            lr = math.log(m / p)
            by[device_class(r.machine.device)].append(lr)
            by["all"].append(lr)
        for scope, lrs in by.items():
            b = _band(lrs, scope)
            if b:
                out.setdefault(scope, {})[metric] = b
    return out


def _published_rows(results: list[Result]) -> list[tuple[Result, float, float]]:
    """(result, bandwidth B/s, achieved/bandwidth) of the dense entries with a decode and a bandwidth."""
    rows = []
    for r in results:
        bw = r.machine.performance.bandwidth
        if r.entry.moe or not bw or not r.entry.decode_tps:
            continue
        rows.append((r, bw.value * 1e9, r.entry.decode_tps * r.entry.size_bytes / (bw.value * 1e9)))
    return rows


def _loo_projection(r: Result, bw: float, e: float, eff: HostEfficiency) -> float:
    """decode of one entry with bandwidth efficiency e, bounded by compute as project_row does."""
    tier = tier_figures(r.machine.performance, "cpu" if r.machine.device == "cpu" else r.machine.device, r.machine.id)
    w = workload_of(r.entry)
    return project_decode(e, bw, w.decode_bytes_per_token, eff.compute, tier.compute_flop_per_s,
                          w.decode_flops_per_token)[0]


def published_efficiency(results: list[Result], eff: HostEfficiency) -> dict[str, Any]:
    """The "published" mode: e_bw = the median achieved/bandwidth of the dense entries, and bands of
    ln(measured / projected) where each entry is projected leave-one-machine-out (its own machine's
    entries excluded from the median), so the bands are out-of-sample."""
    rows = _published_rows(results)
    if not rows:
        return {}
    by: dict[str, list[float]] = {"cpu": [], "gpu": [], "all": []}
    for r, bw, _ in rows:
        others = [ratio for o, _, ratio in rows if o.machine.id != r.machine.id]
        if not others:
            continue
        lr = math.log(r.entry.decode_tps / _loo_projection(r, bw, statistics.median(others), eff))
        by[device_class(r.machine.device)].append(lr)
        by["all"].append(lr)
    bands = {scope: {"decode_tps": b} for scope, lrs in by.items() if (b := _band(lrs, scope))}
    return {"e_bw": statistics.median(ratio for _, _, ratio in rows), "n": len(rows),
            "machines": len({r.machine.id for r, _, _ in rows}),
            "how": "median of decode x file bytes / bandwidth figure over the dense validation entries; bands "
                   "from leave-one-machine-out projections",
            "bands": bands}


def structure_check(results: list[Result], eff: HostEfficiency) -> dict[str, dict[str, Any]]:
    """The "published" mode's out-of-sample errors: decode = min(e x BW / bytes, compute bound) with e
    the median achieved/bandwidth of the *other* machines (leave one machine out) instead of this host's
    e_bw. It separates the error of the model's structure and figures from the error of carrying this
    host's efficiency to other machines. Dense entries with a bandwidth figure only."""
    rows = _published_rows(results)
    errs: dict[str, list[float]] = {}
    for r, bw, _ in rows:
        others = [ratio for o, _, ratio in rows if o.machine.id != r.machine.id]
        if not others:
            continue
        err = error_pct(r.entry.decode_tps, _loo_projection(r, bw, statistics.median(others), eff))
        for g in ("all", r.group):
            errs.setdefault(g, []).append(err)
    out = {}
    for g, e in errs.items():
        a = [abs(x) for x in e]
        out[g] = {"n": len(e), "median_abs_pct": statistics.median(a), "within_35": sum(x <= 35 for x in a) / len(a),
                  "within_20": sum(x <= 20 for x in a) / len(a), "median_signed_pct": statistics.median(e)}
    return out


# ---- output --------------------------------------------------------------------------------------

def _f(v: float | None, fmt: str = ".2f") -> str:
    return "-" if v is None else format(v, fmt)


def table(results: list[Result]) -> list[str]:
    head = (f"{'entry':42} {'machine':16} {'BW kind':8} {'decode':>8} {'proj':>8} {'err%':>7} {'bound':9} "
            f"{'prefill':>9} {'proj':>9} {'err%':>7}")
    lines = [head, "-" * len(head)]
    for r in results:
        e, bw = r.entry, r.machine.performance.bandwidth
        d_err = error_pct(e.decode_tps, r.decode.value) if r.decode and e.decode_tps else None
        p_err = error_pct(e.prefill_tps, r.prefill.value) if r.prefill and e.prefill_tps else None
        lines.append(f"{e.id[:42]:42} {r.machine.id[:16]:16} {(bw.kind if bw else '-'):8} {_f(e.decode_tps):>8} "
                     f"{_f(r.decode.value if r.decode else None):>8} {_f(d_err, '+.0f'):>7} "
                     f"{(r.decode.bound if r.decode else '-'):9} {_f(e.prefill_tps, '.1f'):>9} "
                     f"{_f(r.prefill.value if r.prefill else None, '.1f'):>9} {_f(p_err, '+.0f'):>7}")
    return lines


def _summary_line(label: str, s: dict[str, Any]) -> str:
    if not s.get("n"):
        return f"  {label:34} n=0"
    return (f"  {label:34} n={s['n']:<3} median |err| {s['median_abs_pct']:5.1f}%   within 35%: "
            f"{s['within_35']:4.0%}   within 20%: {s['within_20']:4.0%}   "
            f"median signed {s['median_signed_pct']:+6.1f}%")


def report(results: list[Result], eff: HostEfficiency, ref: dict[str, Any]) -> list[str]:
    inp = eff.inputs
    mb, gbs = inp["bytes_per_token"] / 1e6, inp["bandwidth_bytes_per_s"] / 1e9
    mflop, gflops = inp["prefill_flops_per_token"] / 1e6, inp["matmul_flop_per_s"] / 1e9
    lines = [f"Performance model validation: {len(results)} published entries, "
             f"{len({r.machine.id for r in results})} machines",
             f"Host reference: {inp.get('host')} ({inp.get('cpu')}), {inp.get('model')}, {inp.get('threads')} threads, "
             f"p={inp.get('prompt_tokens')} n={inp.get('gen_tokens')}, measured {inp.get('measured_at')}",
             f"  e_bw = {eff.bandwidth:.3f} (decode {inp['decode_tps']:.1f} tok/s x {mb:.1f} MB "
             f"/ {gbs:.1f} GB/s copy bandwidth)",
             f"  e_c  = {eff.compute:.3f} (prefill {inp['prefill_tps']:.1f} tok/s x {mflop:.1f} MFLOP "
             f"/ {gflops:.1f} GFLOP/s fp32 matmul)",
             ""]
    lines += table(results)
    for metric, title in (("decode_tps", "decode tok/s"), ("prefill_tps", "prefill tok/s")):
        lines += ["", f"Summary, {title} (error = projected / measured - 1)"]
        overall = summary(results, metric)
        lines.append(_summary_line("all entries", overall))
        lines.append(_summary_line("dense models (MoE apart)", summary(results, metric, ("cpu", "cuda", "metal",
                                                                                        "vulkan", "rocm"))))
        for g in ("cpu", "cuda", "metal", "moe"):
            lines.append(_summary_line(f"  {g}", summary(results, metric, (g,))))
        if metric == "decode_tps" and overall.get("n"):
            met = overall["median_abs_pct"] <= GOAL_MEDIAN_PCT and overall["within_35"] >= GOAL_SHARE
            lines.append(f"  goal (median |err| <= {GOAL_MEDIAN_PCT:.0f}%, >= {GOAL_SHARE:.0%} within "
                         f"{GOAL_WITHIN_PCT:.0f}%), all entries: {'met' if met else 'NOT met'}")
    check = structure_check(results, eff)
    if check:
        ratios = [r.entry.decode_tps * r.entry.size_bytes / (r.machine.performance.bandwidth.value * 1e9)
                  for r in results if r.decode and not r.entry.moe and r.entry.decode_tps]
        lines += ["", "The \"published\" efficiency mode (project_row(..., efficiency=\"published\"); not the "
                      "default): decode = min(e x BW / bytes, compute bound)",
                  f"with e = the median achieved/bandwidth of the other machines (leave one machine out) instead of "
                  f"this host's e_bw = {eff.bandwidth:.3f};",
                  f"over all of them the median is {statistics.median(ratios):.2f}:"]
        for g in ("all", "cpu", "cuda", "metal"):
            if g in check:
                lines.append(_summary_line(f"  {g}", check[g]))
    skipped: dict[str, int] = {}
    for r in results:
        for metric in ("decode_tps", "prefill_tps"):
            why = r.why_not.get(metric)
            if why and why != "not published":
                skipped[f"{metric}: {why}"] = skipped.get(f"{metric}: {why}", 0) + 1
    if skipped:
        lines += ["", "Not projected (published but no figure to project with):"]
        lines += [f"  {n:3} x {why}" for why, n in sorted(skipped.items())]
    if ref.get("measured_with"):
        lines += ["", f"Host reference measured with: {ref['measured_with']} (stored {ref.get('made')})"]
    return lines


def reference_from_row(row: dict[str, Any], measured_with: str) -> dict[str, Any]:
    """The parts of a result row the efficiencies need, kept as a small committed fixture."""
    keep_g = ("architecture", "n_params", "block_count", "embedding_length", "head_count", "head_count_kv",
              "key_length", "value_length", "token_embd_bytes", "has_output_tensor", "tensor_bytes")
    model, env = row.get("model") or {}, row.get("environment") or {}
    slim = {
        "run_id": row.get("run_id"), "created_at": row.get("created_at"), "status": row.get("status"),
        "config": {k: (row.get("config") or {}).get(k) for k in ("model_id", "variant_id", "backend", "device",
                                                                 "threads", "prompt_tokens", "gen_tokens",
                                                                 "repetitions", "n_gpu_layers")},
        "model": {"model_id": model.get("model_id"), "variant_id": model.get("variant_id"),
                  "sha256": model.get("sha256"), "size_bytes": model.get("size_bytes"),
                  "facts": model.get("facts"), "gguf": {k: (model.get("gguf") or {}).get(k) for k in keep_g}},
        "summary": {k: (row.get("summary") or {}).get(k) for k in ("decode_tps", "prefill_tps", "ttft_s", "tpot_s")},
        "environment": {"host": {k: (env.get("host") or {}).get(k) for k in ("hostname", "cpu_model",
                                                                            "physical_cores", "usable_cpus")},
                        "calibration": env.get("calibration"),
                        "llama_cpp_build": {k: (env.get("llama_cpp_build") or {}).get(k) for k in ("flags", "why")}},
    }
    return {"made": dt.date.today().isoformat(), "measured_with": measured_with,
            "stored_with": "python -m bench.hardware.validate --reference-from RESULTS.jsonl --measured-with CMD",
            "row": slim}


def main(argv: list[str] | None = None) -> int:
    from bench.datafiles import find_data_path

    ap = argparse.ArgumentParser(prog="python -m bench.hardware.validate", description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="validation folder (default: ./validation or the repo's)")
    ap.add_argument("--only", help="comma-separated entry ids")
    ap.add_argument("--write-bands", action="store_true", help="rewrite error_bands.json from this run")
    ap.add_argument("--reference-from", metavar="RESULTS.jsonl", help="store a row of this file as the host reference")
    ap.add_argument("--row", type=int, default=-1, help="which row of --reference-from (default: the last)")
    ap.add_argument("--measured-with", metavar="CMD", help="the bench run command that measured that row (recorded)")
    ap.add_argument("--markdown", metavar="FILE", help="also write the report to FILE")
    args = ap.parse_args(argv)
    try:
        folder = find_data_path("validation", args.data, "BENCH_VALIDATION")
        if args.reference_from:
            lines = [ln for ln in Path(args.reference_from).read_text().splitlines() if ln.strip()]
            row = json.loads(lines[args.row])
            ref = reference_from_row(row, args.measured_with or "(not given)")
            eff = host_efficiency(ref["row"])
            if eff.bandwidth is None or eff.compute is None:
                raise BenchError(f"{args.reference_from}: that row gives no efficiency: {eff.why_not}")
            (folder / "host_reference.json").write_text(json.dumps(ref, indent=1) + "\n")
            print(f"host reference written: e_bw {eff.bandwidth:.3f}, e_c {eff.compute:.3f}")
        entries = load_entries(folder / "measurements.csv")
        if args.only:
            wanted = {x.strip() for x in args.only.split(",") if x.strip()}
            unknown = wanted - {e.id for e in entries}
            if unknown:
                raise BenchError(f"--only: unknown entries: {', '.join(sorted(unknown))}")
            entries = [e for e in entries if e.id in wanted]
        machines = load_machines(folder / "machines.yaml")
        eff, ref = load_reference(folder / "host_reference.json")
        results = project_all(entries, machines, eff)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (OSError, ValueError, IndexError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    lines = report(results, eff, ref)
    print("\n".join(lines))
    if args.markdown:
        Path(args.markdown).write_text("```\n" + "\n".join(lines) + "\n```\n")
    if args.write_bands:
        bands = bands_from(results)
        out = {"made": dt.date.today().isoformat(), "command": "python -m bench.hardware.validate --write-bands",
               "host_reference": {k: eff.inputs.get(k) for k in ("host", "cpu", "model", "threads", "measured_at")},
               "min_entries_per_class": MIN_BAND_ENTRIES,
               "meaning": "10th and 90th percentiles of ln(measured / projected) over the validation entries of "
                          "each device class (MoE entries left out); projections take value x exp(q10) .. "
                          "value x exp(q90) as their interval",
               "bands": bands, "published": published_efficiency(results, eff)}
        (folder / "error_bands.json").write_text(json.dumps(out, indent=1) + "\n")
        print(f"\nerror bands written to {folder / 'error_bands.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
