"""``bench predict`` and ``bench import``: each subcommand's parser beside its handler (the CLI only
registers them). Both print and write; the arithmetic is in tier.py, importer.py and hardware/tiers.py."""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path
from typing import Any

from bench.errors import BenchError

EXIT_OK = 0


# ---- bench predict ---------------------------------------------------------------------------------

def add_predict(sub: Any) -> None:
    p = sub.add_parser("predict", help="will it run on a tier, and how fast? fit, decode, TTFT and $ per 1M tokens "
                       "per tier from the model's GGUF header and the tiers' figures, without running anything")
    p.add_argument("model", metavar="ID[:VARIANT]|PATH.gguf", help="a catalog model (its file is fetched into the "
                   "cache if it is not there: the header is read, nothing is run) or a GGUF file")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--tier", "-p", action="append", metavar="PROFILE",
                       help="a hardware profile, or a profile file (PATH.yaml, the schema of hardware_profiles/*.yaml) "
                       "for a machine of your own; repeatable")
    which.add_argument("--all-tiers", action="store_true", help="every profile (the default)")
    p.add_argument("--prompt-tokens", type=int, default=128, help="prompt length (default 128)")
    p.add_argument("--gen-tokens", type=int, default=64, help="tokens generated (default 64)")
    p.add_argument("--ctx", type=int, default=None, help="context the KV cache is sized for (default: prompt + "
                   "generated + depth)")
    p.add_argument("--depth", type=int, default=0, help="tokens already in the KV cache before the prompt")
    p.add_argument("--json", action="store_true", help="as JSON, with every input")


def _resolve_shape(spec: str, catalog_path: Path) -> tuple[Any, str]:
    """(ModelShape and GGUF summary, a label) of a catalog variant or a GGUF path."""
    from bench.models.resolve import resolve_spec
    from bench.models.store import ModelStore
    from bench.projection.shape import shape_from_gguf

    r, model = resolve_spec(spec, catalog_path, ModelStore(), formats=("gguf",),
                            loader="bench predict (it reads a GGUF header)")
    params_b = model.params_b if model is not None else None
    if not r.gguf:
        raise BenchError(f"{spec}: no GGUF header to predict from")
    return (shape_from_gguf(r.gguf, r.size_bytes, params_b, r.quantization), r.gguf), f"{r.model_id}:{r.variant_id}"


def predict_rows(shape: Any, g: dict[str, Any], profiles: list[Any], prompt: int, gen: int, depth: int,
                 ctx: int | None) -> list[dict[str, Any]]:
    """Per tier: fits or not (RAM, and VRAM on a GPU tier), the projections and $ per 1M output tokens."""
    from bench.hardware.tiers import (
        GiB,
        fit_verdict,
        gpu_layers_for_budget,
        largest_context_that_fits,
        predict_memory,
        ram_budget_bytes,
        usd_per_million_tokens,
    )
    from bench.projection.tier import PerformanceModel, Workload

    pm = PerformanceModel.load()
    n_ctx = ctx or (prompt + gen + depth)
    out = []
    for profile in profiles:
        mem = predict_memory(g, int(shape.file_bytes), n_ctx, prompt)
        cap = profile.capacity
        if profile.device == "cuda" and cap.vram_gb:
            budget = ram_budget_bytes(cap.vram_gb, cap.reserve_vram_gb)
            layers = gpu_layers_for_budget(g, n_ctx, budget)
            total_layers = (g.get("block_count") or 0) + 1
            no_fit, why = fit_verdict(mem, budget)
            fit = {"fits": not no_fit and layers >= total_layers, "memory": "VRAM", "budget_gib": budget / GiB,
                   "predicted_gib": mem.total_bytes / GiB, "gpu_layers": f"{layers} of {total_layers}", "why": why}
        else:
            budget = ram_budget_bytes(cap.ram_gb, cap.reserve_ram_gb)
            no_fit, why = fit_verdict(mem, budget)
            fit = {"fits": not no_fit and mem.total_bytes <= budget, "memory": "RAM", "budget_gib": budget / GiB,
                   "predicted_gib": mem.total_bytes / GiB, "why": why}
        # the longest conversation that still fits: the cache full to N tokens (f16 cache; a PREDICTION)
        fit["largest_context"] = largest_context_that_fits(g, int(shape.file_bytes), budget, prompt)
        tp = pm.project(shape, Workload(prompt, gen, depth), profile)
        hourly = profile.hourly_usd()
        d = tp.decode_tps
        cost = ({"usd_per_1m_output_tokens": usd_per_million_tokens(hourly, d.value),
                 "interval": [usd_per_million_tokens(hourly, d.high), usd_per_million_tokens(hourly, d.low)]}
                if hourly and d else {"usd_per_1m_output_tokens": None,
                                      "why": "no price" if not hourly else "no decode projection"})
        out.append({"tier": profile.id, "fit": fit, "projection": tp.to_dict(), "cost": cost,
                    "usd_per_hour": hourly})
    return out


def _cell(p: dict[str, Any] | None, fmt: str) -> str:
    if not p:
        return "-"
    return f"{p['value']:{fmt}} ({p['low']:{fmt}}-{p['high']:{fmt}})"


def _is_profile_file(name: str) -> bool:
    return name.endswith((".yaml", ".yml"))


def _profile_file(path: str) -> Any:
    """A machine of the user's own, described in a profile file (hardware_profiles/*.yaml's schema): it
    has no published results here, so its speed comes from its figures alone (basis peak or measured)."""
    from bench.hardware.profiles import Profile
    from bench.yamlfile import parse_yaml_file

    if not Path(path).is_file():
        raise BenchError(f"{path}: profile file not found")
    return parse_yaml_file(Path(path), Profile)


def cmd_predict(args: argparse.Namespace) -> int:
    from rich.table import Table

    from bench.datafiles import find_data_path
    from bench.display import console
    from bench.hardware.profiles import load_profiles

    for name in ("prompt_tokens", "gen_tokens"):
        if getattr(args, name) <= 0:
            raise BenchError(f"--{name.replace('_', '-')} must be positive")
    if args.depth < 0:
        raise BenchError("--depth must be zero or more")
    catalog_path = find_data_path("models.yaml", args.catalog, "BENCH_CATALOG")
    profiles = load_profiles(find_data_path("hardware_profiles", args.profiles_dir, "BENCH_PROFILES"))
    if args.tier:
        unknown = [t for t in args.tier if t not in profiles and not _is_profile_file(t)]
        if unknown:
            raise BenchError(f"unknown hardware profile(s): {', '.join(unknown)}; known: "
                             f"{', '.join(sorted(profiles))}, or a profile file (PATH.yaml)")
        chosen = [profiles[t] if t in profiles else _profile_file(t) for t in args.tier]
    else:
        chosen = list(profiles.values())
    (shape, g), label = _resolve_shape(args.model, catalog_path)
    rows = predict_rows(shape, g, chosen, args.prompt_tokens, args.gen_tokens, args.depth, args.ctx)
    if args.json:
        print(json.dumps({"model": label, "prompt_tokens": args.prompt_tokens, "gen_tokens": args.gen_tokens,
                          "depth": args.depth, "tiers": rows}, indent=1, default=str))
        return EXIT_OK
    t = Table(title=f"{label}: predicted on each tier (PROJECTION, not a measurement; p={args.prompt_tokens} "
                    f"n={args.gen_tokens}{f' depth={args.depth}' if args.depth else ''})")
    for col in ("tier", "fits", "max context", "decode tok/s (interval)", f"TTFT s at p={args.prompt_tokens}",
                "$ / 1M output tok", "basis"):
        t.add_column(col, overflow="fold")
    for r in rows:
        f, p = r["fit"], r["projection"]
        fits = (f"{'yes' if f['fits'] else 'NO'}: {f['predicted_gib']:.2f} of {f['budget_gib']:.1f} GiB {f['memory']}"
                + (f", {f['gpu_layers']} layers" if "gpu_layers" in f else ""))
        usd = r["cost"].get("usd_per_1m_output_tokens")
        why = p["unmeasured"].get("decode_tps")
        top = f["largest_context"] >= (g.get("context_length") or 1 << 30)
        max_ctx = f"{f['largest_context']:,}" + (" (the model's own limit)" if top else "")
        t.add_row(r["tier"], fits, max_ctx, _cell(p["decode_tps"], ".1f") if p["decode_tps"] else f"- ({why})",
                  _cell(p["ttft_s"], ".2f") if p["ttft_s"] else f"- ({p['unmeasured'].get('ttft_s')})",
                  f"${usd:.3g}" if usd is not None else f"- ({r['cost'].get('why')})", p["basis"])
    console().print(t)
    console(stderr=True).print("Intervals: where 80% of real machines fell when the model had not seen them "
                               "(docs/performance-model.md). Max context: the largest KV cache (f16) predicted to "
                               "fit the tier's memory, in tokens (docs/long-context.md).")
    return EXIT_OK


# ---- bench import ----------------------------------------------------------------------------------

def add_import(sub: Any) -> None:
    p = sub.add_parser("import", help="llama-bench results (json, jsonl, csv, or a Markdown table, pasted from an "
                       "issue too) as result rows measured on a tier")
    p.add_argument("file", help="llama-bench's output; - for standard input")
    p.add_argument("--tier", "-p", required=True, metavar="PROFILE", help="the hardware profile the machine is")
    p.add_argument("--model", "-m", metavar="ID:VARIANT", help="the catalog model and variant the results are of "
                   "(default: the file name llama-bench printed)")
    p.add_argument("--source", help="where the results were published (a URL), or where you ran them "
                   "(default: file:FILE)")
    p.add_argument("--machine", help="a name for the machine (default: the tier's id)")
    p.add_argument("--date", help="when the results were measured or published (default: today)")
    p.add_argument("--output", "-o", help="results file (default: results/imported_TIER.jsonl)")
    p.add_argument("--evidence", action="store_true", help="also store the rows in validation/imported/, where "
                   "the performance model reads them as this tier's evidence")


def cmd_import(args: argparse.Namespace) -> int:
    import sys

    from bench.datafiles import find_data_path
    from bench.display import console
    from bench.hardware.profiles import load_profiles
    from bench.projection.importer import ImportSource, parse_llama_bench, rows_from_records
    from bench.results.files import append_row
    from bench.results.schema import Row

    profiles = load_profiles(find_data_path("hardware_profiles", args.profiles_dir, "BENCH_PROFILES"))
    if args.tier not in profiles:
        raise BenchError(f"unknown hardware profile {args.tier!r}; known: {', '.join(sorted(profiles))}")
    if args.file == "-":
        text, name = sys.stdin.read(), "stdin"
    else:
        path = Path(args.file)
        try:
            text, name = path.read_text(encoding="utf-8"), str(path)
        except (OSError, UnicodeDecodeError) as exc:
            raise BenchError(f"{args.file}: cannot read: {exc}") from None
    model_id = variant_id = None
    if args.model:
        model_id, _, variant_id = args.model.partition(":")
        if not variant_id:
            raise BenchError("--model needs ID:VARIANT (the catalog variant the file is)")
    records = parse_llama_bench(text, name)
    src = ImportSource(tier=args.tier, source=args.source or f"file:{name}", machine=args.machine or args.tier,
                       date=args.date or dt.date.today().isoformat(), model_id=model_id, variant_id=variant_id,
                       publisher=args.source.split("/")[2] if args.source and "//" in args.source else "own run")
    rows = [Row.from_dict(r) for r in rows_from_records(records, src, profiles[args.tier])]
    out = Path(args.output or f"results/imported_{args.tier}.jsonl")
    out.parent.mkdir(parents=True, exist_ok=True)
    for row in rows:
        append_row(out, row)
    err = console(stderr=True)
    err.print(f"{len(records)} llama-bench record(s) -> {len(rows)} row(s) measured on {args.tier} appended to {out}")
    if args.evidence:
        folder = find_data_path("validation", None, "BENCH_VALIDATION") / "imported"
        folder.mkdir(parents=True, exist_ok=True)
        ev_file = folder / f"{args.tier}.jsonl"
        for row in rows:
            append_row(ev_file, row)
        err.print(f"and to {ev_file}: the performance model reads them as {args.tier}'s evidence")
    return EXIT_OK
