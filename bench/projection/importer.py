"""``bench import FILE``: llama-bench's results as result rows measured on a tier.

llama-bench writes one record per test (``-o json|jsonl|csv|md``; its fields are
``test::get_fields()`` in tools/llama-bench/llama-bench.cpp): model_type ("llama 7B Q4_0"),
model_size (bytes), model_n_params, n_threads, n_gpu_layers, n_prompt, n_gen, n_depth, avg_ts,
stddev_ts, samples_ts, build_commit, cpu_info, gpu_info, backends... Its Markdown table (the default
output, and what people paste into issues) has the columns model | size | params | backend | ngl |
threads | ... | test | t/s, with tests named pp512, tg128, pp512+tg128 and " @ d4096" for a depth.

The records of one model, thread count, offload and depth become one row: prefill tok/s from its
ppN test, decode tok/s from its tgN test, each with the published mean, standard deviation and n.
The row is ``measured`` on the tier it was imported for, by the tool that measured it, and says so
(``environment.imported``: source, machine, build, the quoted lines); ``bench verdict`` and ``bench
report`` use it for that tier exactly as a fleet node's row. ``--evidence`` also stores it in
``validation/imported/``, where the performance model reads it as that tier's evidence.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import BenchError
from bench.results.versions import RESULT_SCHEMA_VERSION

_SIZE = re.compile(r"^\s*([\d.]+)\s*(GiB|MiB|GB|MB|KiB)\s*$")
_PARAMS = re.compile(r"^\s*([\d.]+)\s*([BMK])\s*$")
_TEST = re.compile(r"^(?:pp(\d+))?\+?(?:tg(\d+))?(?:\s*@\s*d(\d+))?$")
_TS = re.compile(r"^\s*([\d.]+)\s*(?:±\s*([\d.]+))?\s*$")
_BUILD = re.compile(r"build:\s*([0-9a-f]+)\s*\((\d+)\)")
_UNIT = {"GiB": 2**30, "MiB": 2**20, "KiB": 2**10, "GB": 1e9, "MB": 1e6}
_SCALE = {"B": 1e9, "M": 1e6, "K": 1e3}
# llama.cpp's file type names (llama_model_ftype_name) as the catalog spells them.
_FTYPE_WORDS = {"Medium": "M", "Small": "S", "Large": "L"}


@dataclass(frozen=True)
class BenchRecord:
    """One llama-bench test as published."""

    model_type: str
    model_filename: str | None
    model_size: float | None
    model_n_params: float | None
    backend: str | None
    n_threads: int | None
    n_gpu_layers: int | None
    n_prompt: int
    n_gen: int
    n_depth: int
    avg_ts: float
    stddev_ts: float | None
    samples: list[float] = field(default_factory=list)
    build: str | None = None
    cpu_info: str | None = None
    gpu_info: str | None = None
    type_k: str | None = None
    type_v: str | None = None
    flash_attn: str | None = None
    line: str = ""

    @property
    def quant(self) -> str:
        return quant_of_model_type(self.model_type)


def quant_of_model_type(model_type: str) -> str:
    """'llama 8B Q4_K - Medium' -> Q4_K_M; 'qwen2 1.5B Q8_0' -> Q8_0; 'llama 7B F16' -> F16."""
    words = model_type.split()
    idx = next((i for i, w in enumerate(words) if re.match(r"^[\d.x]+[BMK]$", w)), 0)
    rest = " ".join(words[idx + 1:]) if idx or len(words) > 1 else model_type
    m = re.match(r"^(\S+)\s*-\s*(\w+)", rest)
    if m and m.group(2) in _FTYPE_WORDS:
        return f"{m.group(1)}_{_FTYPE_WORDS[m.group(2)]}"
    return rest.split()[0] if rest.split() else model_type


def _int(v: Any) -> int | None:
    try:
        return int(float(v)) if v not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _float(v: Any) -> float | None:
    try:
        return float(v) if v not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _from_fields(d: dict[str, Any], line: str) -> BenchRecord:
    """A record of llama-bench's json, jsonl or csv output (its own field names)."""
    ts = _float(d.get("avg_ts"))
    if ts is None:
        raise BenchError(f"a llama-bench record without avg_ts: {line[:80]}")
    samples = d.get("samples_ts")
    return BenchRecord(
        model_type=str(d.get("model_type") or "?"), model_filename=d.get("model_filename"),
        model_size=_float(d.get("model_size")), model_n_params=_float(d.get("model_n_params")),
        backend=d.get("backends") or d.get("backend"), n_threads=_int(d.get("n_threads")),
        n_gpu_layers=_int(d.get("n_gpu_layers")), n_prompt=_int(d.get("n_prompt")) or 0,
        n_gen=_int(d.get("n_gen")) or 0, n_depth=_int(d.get("n_depth")) or 0, avg_ts=ts,
        stddev_ts=_float(d.get("stddev_ts")),
        samples=[float(x) for x in samples] if isinstance(samples, list) else [],
        build=(f"{d.get('build_commit')} ({d.get('build_number')})" if d.get("build_commit") else None),
        cpu_info=d.get("cpu_info"), gpu_info=d.get("gpu_info"), type_k=d.get("type_k"), type_v=d.get("type_v"),
        flash_attn=str(d["flash_attn"]) if d.get("flash_attn") not in (None, "") else None, line=line)


def _markdown(text: str) -> list[BenchRecord]:
    """llama-bench's Markdown table (or one pasted into an issue): header, separator, rows."""
    lines = [ln.strip() for ln in text.splitlines()]
    build = _BUILD.search(text)
    out: list[BenchRecord] = []
    header: list[str] | None = None
    for ln in lines:
        if not ln.startswith("|"):
            header = None if not ln else header
            continue
        cells = [c.strip() for c in ln.strip("|").split("|")]
        if header is None:
            header = [c.lower() for c in cells]
            continue
        if all(set(c) <= set("-: ") for c in cells):
            continue
        row = dict(zip(header, cells, strict=False))  # a short row leaves columns out
        if "test" not in row or "t/s" not in row:
            continue
        t, ts = _TEST.match(row["test"].replace(" ", "").replace("@d", " @ d")), _TS.match(row["t/s"])
        if not t or not ts or not (t.group(1) or t.group(2)):
            raise BenchError(f"unreadable llama-bench line (test {row['test']!r}, t/s {row['t/s']!r}): {ln[:100]}")
        size, params = _SIZE.match(row.get("size", "")), _PARAMS.match(row.get("params", ""))
        out.append(BenchRecord(
            model_type=row.get("model", "?"), model_filename=None,
            model_size=float(size.group(1)) * _UNIT[size.group(2)] if size else None,
            model_n_params=float(params.group(1)) * _SCALE[params.group(2)] if params else None,
            backend=row.get("backend"), n_threads=_int(row.get("threads")), n_gpu_layers=_int(row.get("ngl")),
            n_prompt=int(t.group(1) or 0), n_gen=int(t.group(2) or 0), n_depth=int(t.group(3) or 0),
            avg_ts=float(ts.group(1)), stddev_ts=float(ts.group(2)) if ts.group(2) else None,
            build=f"{build.group(1)} ({build.group(2)})" if build else None, type_k=row.get("type_k"),
            type_v=row.get("type_v"), flash_attn=row.get("fa"), line=ln))
    return out


def parse_llama_bench(text: str, name: str = "input") -> list[BenchRecord]:
    """Records of any of llama-bench's outputs: JSON (an array), JSONL, CSV or Markdown."""
    s = text.strip()
    if not s:
        raise BenchError(f"{name}: empty")
    try:
        if s.startswith("["):
            data = json.loads(s)
            return [_from_fields(d, json.dumps(d)) for d in data]
        if s.startswith("{"):
            return [_from_fields(json.loads(ln), ln) for ln in s.splitlines() if ln.strip()]
    except (ValueError, TypeError) as exc:
        raise BenchError(f"{name}: not llama-bench JSON: {exc}") from None
    if "|" in s:
        recs = _markdown(s)
        if recs:
            return recs
        raise BenchError(f"{name}: no llama-bench table rows (columns test and t/s) found")
    lines = s.splitlines()
    header = next((i for i, ln in enumerate(lines) if ln.startswith("build_commit,") and "avg_ts" in ln), None)
    if header is not None:  # log lines before the header (llama-bench -oe csv) are skipped
        reader = csv.DictReader(io.StringIO("\n".join(lines[header:])))
        return [_from_fields(d, ",".join(d.values())) for d in reader]
    raise BenchError(f"{name}: not a llama-bench output (json, jsonl, csv or a Markdown table)")


# ---- records to rows -------------------------------------------------------------------------------

@dataclass(frozen=True)
class ImportSource:
    """Where imported results come from: who published them, on which machine, and when."""

    tier: str
    source: str           # a URL, or file:PATH for a run of your own
    machine: str          # a name for the machine (the tier id by default)
    date: str
    model_id: str | None = None    # the catalog id these results are of (else the file's name)
    variant_id: str | None = None
    publisher: str = ""


def _group_key(r: BenchRecord) -> tuple:
    return (r.model_type, r.model_filename, r.model_size, r.n_threads, r.n_gpu_layers, r.n_depth, r.backend,
            r.type_k, r.type_v, r.flash_attn, r.build)


def _stats(r: BenchRecord | None) -> dict[str, Any] | None:
    if r is None:
        return None
    n = len(r.samples) or None
    return {"mean": r.avg_ts, "std": r.stddev_ts, "min": min(r.samples) if r.samples else None,
            "max": max(r.samples) if r.samples else None, "n": n}


def rows_from_records(records: list[BenchRecord], src: ImportSource, profile: Any) -> list[dict[str, Any]]:
    """One row per model x threads x offload x depth: its ppN and tgN tests together."""
    groups: dict[tuple, list[BenchRecord]] = defaultdict(list)
    for r in records:
        groups[_group_key(r)].append(r)
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    rows = []
    for recs in groups.values():
        pp = next((r for r in recs if r.n_prompt and not r.n_gen), None)
        tg = next((r for r in recs if r.n_gen and not r.n_prompt), None)
        first = pp or tg or recs[0]
        quant = first.quant
        model_id = src.model_id or (Path(first.model_filename).stem if first.model_filename else first.model_type)
        variant = src.variant_id or quant.lower()
        device = "cpu" if (first.backend or "CPU").upper() in ("CPU", "BLAS") or not first.n_gpu_layers else "cuda"
        config = {"model_id": model_id, "variant_id": variant, "backend": "llama.cpp", "profile_id": src.tier,
                  "device": device, "threads": first.n_threads or 0, "prompt_tokens": pp.n_prompt if pp else 0,
                  "gen_tokens": tg.n_gen if tg else 0, "repetitions": len(first.samples),
                  "warmup": 0, "n_ctx": (pp.n_prompt if pp else 0) + (tg.n_gen if tg else 0) + first.n_depth,
                  "n_gpu_layers": first.n_gpu_layers or 0, "seed": 0, "stop_at_eos": False, "timeout_s": 0.0,
                  "backend_options": {k: v for k, v in (("depth", first.n_depth), ("type_k", first.type_k),
                                                        ("type_v", first.type_v), ("flash_attn", first.flash_attn))
                                      if v not in (None, "", 0)},
                  "quality": None, "task": None}
        summary = {"prefill_tps": _stats(pp), "decode_tps": _stats(tg)}
        summary = {k: v for k, v in summary.items() if v is not None}
        rows.append({
            "schema_version": RESULT_SCHEMA_VERSION, "run_id": uuid.uuid4().hex[:12], "created_at": now,
            "status": "ok",
            "reason": None, "config": config,
            "model": {"model_id": model_id, "variant_id": variant, "format": "gguf", "quantization": quant,
                      "path": first.model_filename or first.model_type, "sha256": None,
                      "size_bytes": int(first.model_size) if first.model_size else None,
                      "source": f"imported from {src.source}",
                      "gguf": {"n_params": int(first.model_n_params)} if first.model_n_params else None,
                      "facts": None},
            "profile": profile.model_dump(mode="json") if profile is not None else {"id": src.tier},
            "environment": {"host": {"hostname": src.machine},
                            "llama_cpp_build": {"build": first.build, "backend": first.backend},
                            "imported": {"tool": "llama-bench", "source": src.source, "publisher": src.publisher,
                                         "machine": src.machine, "date": src.date, "build": first.build,
                                         "cpu_info": first.cpu_info, "gpu_info": first.gpu_info,
                                         "quote": [r.line for r in recs]}},
            "summary": summary,
            "tier": {"basis": "measured", "speed_basis": "measured",
                     "imported": f"measured on {src.tier} by {src.source} (llama-bench)"},
        })
    return rows


def entries_from_rows(path: Path) -> tuple[list[Any], list[Any]]:
    """Rows of ``bench import --evidence`` as performance-model entries, with their machines."""
    from bench.projection.evidence import Entry, Machine

    entries, machines = [], {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            imp, cfg, model = row["environment"]["imported"], row["config"], row["model"]
        except (ValueError, KeyError, TypeError) as exc:
            raise BenchError(f"{path}:{n}: not an imported row: {exc}") from None
        summary = row.get("summary") or {}
        profile = row.get("profile") or {}
        mid = re.sub(r"[^a-z0-9_.-]", "-", str(imp.get("machine") or cfg["profile_id"]).lower())
        if mid not in machines:
            machines[mid] = Machine.model_validate({
                "id": mid, "name": str(imp.get("machine")), "device": cfg.get("device", "cpu"),
                "performance": profile.get("performance") or {}, "tiers": [cfg["profile_id"]],
                "class": (profile.get("performance") or {}).get("device_class")})
        params = (model.get("gguf") or {}).get("n_params")
        entries.append(Entry(
            id=f"{path.stem}-{n}", machine=mid, backend=f"llama-bench {imp.get('build') or ''}".strip(),
            model=str(model.get("path")), params=float(params) if params else None,
            size_bytes=float(model["size_bytes"]) if model.get("size_bytes") else None,
            quant=str(model.get("quantization") or ""), moe=False, threads=cfg.get("threads") or None,
            ngl=cfg.get("n_gpu_layers"), prompt_tokens=cfg.get("prompt_tokens") or None,
            gen_tokens=cfg.get("gen_tokens") or None, depth=int((cfg.get("backend_options") or {}).get("depth", 0)),
            prefill_tps=(summary.get("prefill_tps") or {}).get("mean"),
            decode_tps=(summary.get("decode_tps") or {}).get("mean"), source=str(imp.get("source")),
            publisher=str(imp.get("publisher") or ""), date=str(imp.get("date")),
            quote=" / ".join(imp.get("quote") or []),
            line=n, origin=f"imported/{path.name}"))
    return entries, list(machines.values())
