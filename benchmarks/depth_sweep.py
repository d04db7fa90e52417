"""Speed and memory at depth: the suite's ``bench run --depth D`` next to llama.cpp's ``llama-bench -d D``
on the same GGUF, threads and lengths, in same-run pairs, and the memory prediction against the
measured peak at each depth. Writes the dated page ``docs/measurements/YYYY-MM-DD-depth.md``.

    python benchmarks/depth_sweep.py [FILE.gguf|ID:VARIANT ...] [--depth 0,2048,8192] [-p 128] [-n 64]
        [-t 2] [-r 3] [--rounds 1] [--kv f16,q8_0+fa] [--llama-bench PATH] [--json OUT]
    python benchmarks/depth_sweep.py --page docs/measurements/2026-12-03-depth.md A.json [B.json ...]

For each model, depth and KV cache setting, every round runs the suite's cell and llama-bench back to
back, the suite first in odd rounds and second in even ones (ABBA), as benchmarks/llama_fidelity.py
does (whose llama-bench build it reuses: the vendored llama.cpp with the installed wheel's flags).

Matching llama-bench at depth D (its ``-d``: the context filled once per test, the fill restored
before each repetition and never timed): prefill is its ``pp`` test at depth D (``-p P -n 0 -d D``:
P tokens after D); decode is its ``tg`` test at depth D + P (``-p 0 -n N -d D+P``: N tokens after a
D + P context, as the suite's requests decode after the fill and the prompt). Flash attention as
the cell sets it (off by default, llama-cpp-python's default); the K and V cache types likewise.
llama-bench's peak RSS is read per run (the wrapper's RUSAGE_CHILDREN); it also keeps a copy of the
filled state in memory (its depth cache), so it is shown beside the suite's, not compared with it.

``--kv`` settings: ``f16`` (the default cache, flash attention off), ``TYPE`` (K and V of that type;
a quantized V needs flash attention, so ``q8_0`` means flash attention on too), ``TYPE+fa`` (flash
attention on).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from llama_fidelity import _embedded_model, _llama_bench  # noqa: E402  (the fidelity script's machinery)

REPO = Path(__file__).resolve().parent.parent
MiB = 2**20


def kv_setting(text: str) -> dict[str, Any]:
    """``f16`` / ``q8_0`` / ``q4_0+fa`` -> {type, flash_attn, backend options, llama-bench args}."""
    name, _, fa_flag = text.partition("+")
    quantized = name not in ("f16", "f32", "bf16")
    fa = fa_flag == "fa" or quantized  # llama.cpp quantizes V only with flash attention
    opts = {} if name == "f16" and not fa else {"type_k": name, "type_v": name, "flash_attn": "on" if fa else "off"}
    return {"label": text, "type": name, "flash_attn": fa, "options": opts,
            "llama_bench": ["-ctk", name, "-ctv", name, "-fa", "1" if fa else "0"]}


def run_suite(model: str, depth: int, p: int, n: int, t: int, r: int, kv: dict[str, Any]) -> dict[str, Any]:
    """One ``bench run`` cell at this depth: its row's speed, memory and prediction."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp, "r.jsonl")
        opts = [a for k, v in kv["options"].items() for a in ("--backend-opt", f"{k}={v}")]
        cmd = [sys.executable, "-m", "bench", "run", "--model", model, "-p", "auto", "--prompt-tokens", str(p),
               "--gen-tokens", str(n), "--depth", str(depth), "-t", str(t), "-r", str(r), "--no-progress",
               "-o", str(out), *opts]
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        if proc.returncode != 0 or not out.exists():
            raise SystemExit(f"bench run failed at depth {depth}: {proc.stderr.strip()[-500:]}")
        row = json.loads(out.read_text().splitlines()[0])
    s, tier = row["summary"], row["tier"]
    return {"prefill_tps": [x["prefill_tps"] for x in row["samples"]],
            "decode_tps": [x["decode_tps"] for x in row["samples"]],
            "ttft_s": [x["ttft_s"] for x in row["samples"]],
            "itl_p50_s": (s.get("itl_s") or {}).get("p50"),
            "peak_rss_bytes": row["memory"]["peak_rss_bytes"],
            "predicted_memory": tier.get("predicted_memory"), "prediction_error": tier.get("prediction_error"),
            "depth_fill": s.get("depth_fill"), "n_ctx": row["config"]["n_ctx"], "file": row["model"]["path"],
            "status": row["status"], "reason": row.get("reason")}


def run_llama_bench(binary: str, model: str, depth: int, p: int, n: int, t: int, r: int,
                    kv: dict[str, Any], one_fill: bool = False) -> dict[str, Any]:
    """llama-bench's pp at depth D and tg at depth D + P, each with its own peak RSS; with ``one_fill``,
    one invocation whose pp and tg both run at depth D after a single fill (its depth cache)."""
    def one(args: list[str]) -> tuple[list[Any], int, str | None]:
        wrapper = ("import json, resource, subprocess, sys; out = subprocess.run(sys.argv[1:], capture_output=True, "
                   "text=True); print(json.dumps({'rc': out.returncode, 'stdout': out.stdout, "
                   "'stderr': out.stderr[-800:], "
                   "'maxrss_kib': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))")
        cmd = [sys.executable, "-c", wrapper, binary, "-m", model, "-t", str(t), "-r", str(r), "-o", "json",
               *kv["llama_bench"], *args]
        with StateWatch(cpus) as watch:  # was the machine all there? (as the suite watches its own cells)
            res = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
        if res["rc"] != 0:
            raise SystemExit(f"llama-bench failed ({' '.join(args)}): {res['stderr']}")
        return json.loads(res["stdout"]), res["maxrss_kib"] * 1024, verdict(watch.report()).flag_reason(None)

    from bench.measuring.machine_state import StateWatch, verdict

    cpus = sorted(os.sched_getaffinity(0))[:t]
    if one_fill:
        tests, rss, flag = one(["-p", str(p), "-n", str(n), "-d", str(depth)])
        pp = next(x["samples_ts"] for x in tests if x["n_prompt"] > 0)
        tg = next(x["samples_ts"] for x in tests if x["n_gen"] > 0)
        return {"prefill_tps": pp, "decode_tps": tg, "peak_rss_bytes": rss, "disturbed": flag,
                "tg_depth": depth}
    (pp_test,), pp_rss, pp_flag = one(["-p", str(p), "-n", "0", "-d", str(depth)])
    (tg_test,), tg_rss, tg_flag = one(["-p", "0", "-n", str(n), "-d", str(depth + p)])
    return {"prefill_tps": pp_test["samples_ts"], "decode_tps": tg_test["samples_ts"],
            "peak_rss_bytes": max(pp_rss, tg_rss), "tg_depth": depth + p,
            "disturbed": "; ".join(f"{k}: {v}" for k, v in (("pp", pp_flag), ("tg", tg_flag)) if v) or None}


def gguf_path(spec: str) -> str:
    """A GGUF path as given, or a catalog ID:VARIANT resolved (fetched if needed) to its file: llama-bench
    and the suite then read the same file."""
    if spec.endswith(".gguf") or Path(spec).is_file():
        return spec
    from bench.models.catalog import load_catalog
    from bench.models.store import ModelStore

    catalog = load_catalog(REPO / "models.yaml")
    model_id, _, variant = spec.partition(":")
    model = catalog.model(model_id)
    return str(ModelStore().resolve(model, model.variant(variant or None)).path)


def sweep(args: argparse.Namespace) -> dict[str, Any]:
    binary = args.llama_bench or str(_llama_bench())
    models = [gguf_path(m) for m in args.models] or [_embedded_model()]
    out: dict[str, Any] = {"host": socket.gethostname(), "date": dt.date.today().isoformat(),
                           "command": "python " + " ".join([f"benchmarks/{Path(__file__).name}", *sys.argv[1:]]),
                           "settings": {"p": args.p, "n": args.n, "threads": args.t, "repetitions": args.r,
                                        "rounds": args.rounds},
                           "llama_bench": binary, "cells": []}
    for model in models:
        for label in args.kv:
            kv = kv_setting(label)
            for depth in args.depth:
                rounds = []
                for rnd in range(args.rounds):
                    res: dict[str, Any] = {}
                    if rnd % 2 == 1:  # ABBA: llama-bench first in every other round
                        res["llama-bench"] = run_llama_bench(binary, model, depth, args.p, args.n, args.t, args.r, kv,
                                                             args.one_fill)
                    res["suite"] = run_suite(model, depth, args.p, args.n, args.t, args.r, kv)
                    if rnd % 2 == 0:
                        res["llama-bench"] = run_llama_bench(binary, model, depth, args.p, args.n, args.t, args.r, kv,
                                                             args.one_fill)
                    rounds.append(res)
                    print(f"{Path(model).name} kv={label} depth {depth}: round {rnd + 1}/{args.rounds} done",
                          file=sys.stderr)
                out["cells"].append({"model": model, "kv": label, "depth": depth, "rounds": rounds})
    return out


def _med(xs: list[float]) -> float:
    return statistics.median(xs)


def summarize(cell: dict[str, Any]) -> dict[str, Any]:
    """Medians over repetitions, paired per round (suite / llama-bench), then the median over rounds."""
    rs = cell["rounds"]
    ratio = {m: _med([_med(r["suite"][m]) / _med(r["llama-bench"][m]) for r in rs])
             for m in ("prefill_tps", "decode_tps")}
    suite = {m: _med([_med(r["suite"][m]) for r in rs]) for m in ("prefill_tps", "decode_tps", "ttft_s")}
    bench = {m: _med([_med(r["llama-bench"][m]) for r in rs]) for m in ("prefill_tps", "decode_tps")}
    last = rs[-1]["suite"]
    pred = (last["predicted_memory"] or {}).get("total_bytes")
    per_round = [f"{_med(r['suite']['prefill_tps']) / _med(r['llama-bench']['prefill_tps']):.2f}/"
                 f"{_med(r['suite']['decode_tps']) / _med(r['llama-bench']['decode_tps']):.2f}" for r in rs]
    return {"suite": suite, "llama_bench": bench, "ratio": ratio, "peak_rss_bytes": last["peak_rss_bytes"],
            "per_round": per_round, "tg_depth": rs[-1]["llama-bench"].get("tg_depth"),
            "predicted_bytes": pred, "prediction_error": last["prediction_error"],
            "llama_bench_peak_rss_bytes": rs[-1]["llama-bench"]["peak_rss_bytes"],
            "fill_s": (last["depth_fill"] or {}).get("seconds"), "n_ctx": last["n_ctx"], "file": last["file"],
            "disturbed": [f"round {i + 1} {side}: {why}" for i, r in enumerate(rs)
                          for side, why in (("suite", r["suite"].get("reason")),
                                            ("llama-bench", r["llama-bench"].get("disturbed")))
                          if why and "DISTURBED" in why.upper()]}


def page(results: list[dict[str, Any]], sources: list[str] | None = None) -> str:
    """The dated measurement page, from one or more --json files of this script (``sources``: their paths)."""
    first = results[0]
    lines = [f"# Speed and memory at depth ({first['date']}, host `{first['host']}`)", "",
             "Written by `benchmarks/depth_sweep.py` (`--page`) from the runs below; each run held the host's shared "
             "CPU lock (other sessions' processes could still take the cores: the last column says when). Suite: "
             "`bench run --depth D` (llama.cpp through llama-cpp-python, the context filled once per cell and never "
             "timed). llama-bench: built from the same "
             "vendored llama.cpp with the installed wheel's flags; prefill is its `pp` test at depth D (`-p P -n 0 "
             "-d D`), decode its `tg` test at depth D + P (`-p 0 -n N -d D+P`; at D with `--one-fill`, whose "
             "single invocation fills once for both; the column says which). Each ratio is suite / llama-bench, "
             "the median of per-round ratios of median samples (one round: one same-run pair), rounds alternating "
             "which side goes first. TTFT is the suite's (llama-bench times no first token). A row whose machine "
             "was disturbed (another process on the pinned cores, or the hypervisor's steal, as the suite flags "
             "its cells) says so in the last column.", "",
             "Memory: the suite's peak RSS (the cell's child process, fill included) against the prediction of "
             "`bench.hardware.tiers.predict_memory` at that depth and cache type (error = (predicted - measured) / "
             "measured). llama-bench's peak RSS is shown for scale only: it also keeps a copy of the filled state "
             "(its depth cache) and uses a batch of 2048.", ""]
    if sources:
        lines += ["Every sample is in " + ", ".join(f"`{x}`" for x in sources) + " (regenerate this page with "
                  f"`python benchmarks/depth_sweep.py --page PAGE {' '.join(sources)}`). The runs:", ""]
    for res in results:
        st = res["settings"]
        lines += [f"- `{res['command']}` ({res['date']}, host `{res['host']}`; p={st['p']}, n={st['n']}, "
                  f"{st['threads']} threads, {st['repetitions']} repetitions, {st['rounds']} round(s))"]
    lines.append("")
    by_model: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for res in results:
        for cell in res["cells"]:
            by_model.setdefault((Path(cell["model"]).name, cell["kv"]), []).append({**cell, "p": res["settings"]["p"]})
    for (name, kv), cells in by_model.items():
        s0 = summarize(cells[0])
        lines += [f"## {name}, KV cache {kv}", "", f"File: `{s0['file']}`.", "",
                  "| depth | TTFT ms | prefill tok/s: suite / llama-bench (ratio) | decode tok/s: suite / llama-bench "
                  "(ratio) | ratio per round (prefill/decode) | llama-bench tg at depth | peak RSS MiB | predicted MiB "
                  "(error) | llama-bench peak RSS MiB | fill s (untimed) | machine disturbed (others on the cores, "
                  "steal) |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for cell in sorted(cells, key=lambda c: c["depth"]):
            s = summarize(cell)
            su, lb, ra = s["suite"], s["llama_bench"], s["ratio"]
            err = f"{s['prediction_error']:+.1%}" if s["prediction_error"] is not None else "-"
            fill = f"{s['fill_s']:.1f}" if s["fill_s"] else "-"
            lines.append(f"| {cell['depth']} | {su['ttft_s'] * 1e3:.0f} | {su['prefill_tps']:.1f} / "
                         f"{lb['prefill_tps']:.1f} ({ra['prefill_tps']:.3f}) | {su['decode_tps']:.2f} / "
                         f"{lb['decode_tps']:.2f} ({ra['decode_tps']:.3f}) | {', '.join(s['per_round'])} | "
                         f"{s['tg_depth'] if s['tg_depth'] is not None else cell['depth'] + cell['p']} | "
                         f"{s['peak_rss_bytes'] / MiB:.1f} | "
                         f"{(s['predicted_bytes'] or 0) / MiB:.1f} ({err}) | "
                         f"{s['llama_bench_peak_rss_bytes'] / MiB:.1f} | {fill} | "
                         f"{'; '.join(s['disturbed']) or 'no'} |")
        lines.append("")
    return "\n".join(lines)


def _int_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*", help="GGUF files or catalog ID:VARIANT (default: the embedded model); "
                    "with --page: the --json files to write the page from")
    ap.add_argument("--depth", type=_int_list, default=[0, 2048, 8192])
    ap.add_argument("-p", type=int, default=128)
    ap.add_argument("-n", type=int, default=64)
    ap.add_argument("-t", type=int, default=2)
    ap.add_argument("-r", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--kv", type=lambda s: [x for x in s.split(",") if x], default=["f16"],
                    help="KV cache settings: f16 (default), q8_0, q4_0, TYPE+fa (flash attention on)")
    ap.add_argument("--one-fill", action="store_true",
                    help="llama-bench fills once per depth (-p P -n N -d D: its tg runs at depth D, not D + P); "
                    "saves one fill of D tokens per round at the price of a decode P tokens shallower")
    ap.add_argument("--llama-bench", help="a llama-bench binary (default: built once, as llama_fidelity.py does)")
    ap.add_argument("--json", help="write every sample to this file")
    ap.add_argument("--page", help="write the measurement page (Markdown) from the --json files given as arguments")
    args = ap.parse_args(argv)
    if args.page:
        results = [json.loads(Path(f).read_text()) for f in args.models]
        Path(args.page).parent.mkdir(parents=True, exist_ok=True)
        Path(args.page).write_text(page(results, args.models))
        print(f"wrote {args.page}", file=sys.stderr)
        return 0
    result = sweep(args)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    print(page([result]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
