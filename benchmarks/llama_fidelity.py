"""Does the suite distort what it measures? Compare its prefill and decode tok/s with a minimal
direct llama-cpp-python loop and with llama.cpp's own ``llama-bench`` on the same GGUF, threads
and lengths, interleaved in rounds in one session (so drift on a shared host hits all three).

    python benchmarks/llama_fidelity.py [FILE.gguf ...] [-p 128] [-n 64] [-t 2] [-r 5] [--rounds 5]
                                        [--llama-bench PATH] [--direct] [--json OUT]

llama-bench is built once from the llama.cpp vendored in the installed llama-cpp-python's sdist with
the installed wheel's own ggml flags (bench.native.tools), so both run the same kernels. For each
file, every round runs the suite and llama-bench back to back, the suite first in odd rounds and
second in even ones (ABBA: a warm-up or drift effect of going first falls on both); the table gives
the median of the per-round ratios (pairs cancel the drift of a shared host), its distribution-free
95% interval where the rounds allow one (at least 6), whether that settles "within 2%", and each
round's ratio.

Matching llama-bench: prefill is its ``pp`` test (p tokens from an empty context); decode is its
``tg`` test at depth p (``-d p``: n tokens after a p-token context, as in our requests); flash
attention off, as llama-cpp-python's default. llama-bench times only ``llama_decode``; the suite
and the direct loop also pay for sampling, detokenizing and Python per token.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def direct_child(model: str, p: int, n: int, threads: int, reps: int) -> dict:
    """The few lines a user would write: Llama(...), then Llama.generate, timed per token."""
    from llama_cpp import Llama

    from bench.prompts import build_prompt

    llm = Llama(model_path=model, n_ctx=p + n, n_threads=threads, n_threads_batch=threads, verbose=False)
    prompt = build_prompt(p, lambda s: llm.tokenize(s.encode(), add_bos=False), [llm.token_bos()])
    prefill, decode = [], []
    for rep in range(reps + 1):  # one warm-up
        llm.reset()
        t0 = time.perf_counter()
        times = []
        for _tok in llm.generate(prompt, temp=0.0, top_k=1, repeat_penalty=1.0):
            times.append(time.perf_counter())
            if len(times) == n:
                break
        if rep:
            prefill.append(p / (times[0] - t0))  # includes one greedy sample: generate() cannot split it
            decode.append((n - 1) / (times[-1] - times[0]))
    return {"prefill_tps": prefill, "decode_tps": decode}


def run_direct(model: str, p: int, n: int, t: int, r: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--direct-child", json.dumps([model, p, n, t, r])],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def run_suite(model: str, p: int, n: int, t: int, r: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp, "r.jsonl")
        subprocess.run([sys.executable, "-m", "bench", "run", "--model", model, "-p", "auto", "--prompt-tokens",
                        str(p), "--gen-tokens", str(n), "-t", str(t), "-r", str(r), "--no-progress", "-o", str(out)],
                       capture_output=True, text=True, check=True)
        row = json.loads(out.read_text().splitlines()[0])
    return {"prefill_tps": [s["prefill_tps"] for s in row["samples"]],
            "decode_tps": [s["decode_tps"] for s in row["samples"]],
            "backend": {"prefill_tps": [s["backend_prefill_tps"] for s in row["samples"]],
                        "decode_tps": [s["backend_decode_tps"] for s in row["samples"]]}}


def llama_bench_argv(binary: str, model: str, p: int, n: int, t: int, r: int, extra: tuple[str, ...] = ()
                     ) -> list[list[str]]:
    """llama-bench's two runs: prefill (pp p from an empty context), then decode (tg n at depth p)."""
    base = [binary, "-m", model, "-t", str(t), "-r", str(r), "-fa", "0", "-o", "json", *extra]
    return [base + ["-p", str(p), "-n", "0"], base + ["-p", "0", "-n", str(n), "-d", str(p)]]


def run_llama_bench(binary: str, model: str, p: int, n: int, t: int, r: int, extra: tuple[str, ...] = ()) -> dict:
    """``extra``: more llama-bench arguments, the same in both runs (``-ngl 99`` on a GPU)."""
    def one(argv: list[str]) -> list[float]:
        out = subprocess.run(argv, capture_output=True, text=True, check=True)
        return json.loads(out.stdout)[0]["samples_ts"]

    prefill, decode = llama_bench_argv(binary, model, p, n, t, r, extra)
    return {"prefill_tps": one(prefill), "decode_tps": one(decode)}


METRICS = ("prefill_tps", "decode_tps")


TOLERANCE = 0.02  # the goal: every file within 2% of llama-bench, prefill and decode


def paired_table(rounds: list[dict[str, dict[str, list[float]]]], base: str, other: str) -> dict[str, Any]:
    """Per round, median(base) / median(other) for each metric; then the median of those paired
    ratios (drift between rounds cancels within a pair), its 95% interval and the judgement."""
    from bench.analysis.significance import median_interval, within_tolerance

    out: dict[str, Any] = {}
    for m in METRICS:
        ratios = [statistics.median(r[base][m]) / statistics.median(r[other][m]) for r in rounds]
        iv = median_interval(ratios)
        out[m] = {"median": statistics.median(ratios), "rounds": ratios,
                  "interval": [iv.low, iv.high, iv.coverage] if iv else None,
                  "within_2pct": within_tolerance(ratios, TOLERANCE)}
    return out


def best_ratio(rounds: list[dict[str, dict[str, list[float]]]], base: str, other: str, metric: str) -> float:
    """The fastest sample of ``base`` over all rounds / the fastest of ``other``: noise on a shared
    host only ever slows a run down, so each side's best is its least disturbed estimate (timeit's
    reasoning for taking the minimum time). Not paired: a second view beside the paired median."""
    return max(v for r in rounds for v in r[base][metric]) / max(v for r in rounds for v in r[other][metric])


def own_share(rounds: list[dict[str, dict[str, list[float]]]], metric: str) -> float:
    """Median over every request of suite / llama.cpp's own counter in the same request: what the
    suite adds to llama.cpp's work (Python per token), free of the host's drift (same request)."""
    return statistics.median(s / c for r in rounds
                             for s, c in zip(r["suite"][metric], r["suite counters"][metric], strict=True))


def _cell(entry: dict[str, Any]) -> str:
    iv = entry["interval"]
    span = f" [{iv[0]:.3f}, {iv[1]:.3f}]" if iv else ""
    return f"{entry['median']:.3f}{span} {entry['within_2pct']}"


def main(argv: list[str] | None = None) -> int:
    from bench.analysis.logpage import markdown_page

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*", help="GGUF files (default: the embedded model, fetched if needed)")
    ap.add_argument("-p", type=int, default=128)
    ap.add_argument("-n", type=int, default=64)
    ap.add_argument("-t", type=int, default=2)
    ap.add_argument("-r", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--llama-bench", help="a llama-bench binary (default: built once from the installed wheel's "
                    "llama.cpp source with the wheel's flags, bench.native.tools)")
    ap.add_argument("--direct", action="store_true", help="also a minimal direct llama-cpp-python loop")
    ap.add_argument("--json", help="write every sample and ratio to this file")
    ap.add_argument("--table-from", metavar="JSON", help="print the table from a --json file of an earlier run")
    ap.add_argument("--markdown", metavar="PAGE", help="also write the output as a dated page, e.g. "
                    "docs/measurements/YYYY-MM-DD-NAME.md (bench.analysis.logpage)")
    ap.add_argument("--direct-child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.direct_child:
        print(json.dumps(direct_child(*json.loads(args.direct_child))))
        return 0
    if args.table_from:
        saved = json.loads(Path(args.table_from).read_text())
        with markdown_page(args.markdown, "The suite against llama-bench", argv):
            print_table({m: {**r, **tables(r["rounds"])} for m, r in saved.items()}, "(from " + args.table_from + ")")
        return 0
    if args.rounds < 5:
        print("note: fewer than 5 rounds; the paired median is then a rough guide", file=sys.stderr)
    binary = args.llama_bench or str(_llama_bench())
    models = args.models or [_embedded_model()]
    results: dict[str, Any] = {}
    for model in models:
        rounds = []
        for rnd in range(args.rounds):
            res: dict[str, dict[str, list[float]]] = {}
            if rnd % 2 == 1:  # ABBA: llama-bench first in every other round
                res["llama-bench"] = run_llama_bench(binary, model, args.p, args.n, args.t, args.r)
            res["suite"] = run_suite(model, args.p, args.n, args.t, args.r)
            res["suite counters"] = res["suite"].pop("backend")
            if rnd % 2 == 0:
                res["llama-bench"] = run_llama_bench(binary, model, args.p, args.n, args.t, args.r)
            if args.direct:
                res["direct"] = run_direct(model, args.p, args.n, args.t, args.r)
            rounds.append(res)
            print(f"{Path(model).name}: round {rnd + 1}/{args.rounds} done", file=sys.stderr)
        results[model] = {"rounds": rounds, **tables(rounds)}
    with markdown_page(args.markdown, "The suite against llama-bench", argv):
        print_table(results, f"p={args.p}, n={args.n}, threads={args.t}, {args.rounds} rounds x {args.r} "
                             f"repetitions, interleaved; llama-bench: {binary}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


def tables(rounds: list[dict[str, dict[str, list[float]]]]) -> dict[str, Any]:
    return {"suite/llama-bench": paired_table(rounds, "suite", "llama-bench"),
            "counters/llama-bench": paired_table(rounds, "suite counters", "llama-bench"),
            "best suite/best llama-bench": {m: best_ratio(rounds, "suite", "llama-bench", m) for m in METRICS},
            "suite/counters per request": {m: own_share(rounds, m) for m in METRICS}}


def print_table(results: dict[str, Any], head: str) -> None:
    print(head + "\n")
    print("Each ratio: the median over rounds of suite/llama-bench, its 95% interval from order statistics, "
          "and whether that interval lies within 2% of 1 (yes), outside it (no), or across its edge (cannot tell).\n")
    print("| file | prefill suite/llama-bench | decode suite/llama-bench | llama.cpp counters in the suite "
          "(prefill/decode) | best of all rounds, suite/llama-bench (prefill/decode) | suite/its own llama.cpp "
          "counters, same request (prefill/decode) | rounds (prefill/decode) |")
    print("|---|---|---|---|---|---|---|")
    for model, r in results.items():
        s, c, b = r["suite/llama-bench"], r["counters/llama-bench"], r["best suite/best llama-bench"]
        own = r["suite/counters per request"]
        per_round = ", ".join(f"{a:.2f}/{b:.2f}" for a, b in zip(s["prefill_tps"]["rounds"], s["decode_tps"]["rounds"],
                                                                   strict=True))
        print(f"| {Path(model).name} | {_cell(s['prefill_tps'])} | {_cell(s['decode_tps'])} | "
              f"{c['prefill_tps']['median']:.3f}/{c['decode_tps']['median']:.3f} | "
              f"{b['prefill_tps']:.3f}/{b['decode_tps']:.3f} | {own['prefill_tps']:.4f}/{own['decode_tps']:.4f} | "
              f"{per_round} |")


def _llama_bench() -> Path:
    from bench.native.tools import tool_path

    return tool_path("llama-bench", say=lambda m: print(m, file=sys.stderr))


def _embedded_model() -> str:
    from bench.models.store import embedded_model_path

    return str(embedded_model_path())


if __name__ == "__main__":
    sys.exit(main())
