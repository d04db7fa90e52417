"""Does the suite distort what it measures? Compare its prefill and decode tok/s with a minimal
direct llama-cpp-python loop and with llama.cpp's own ``llama-bench`` on the same GGUF, threads
and lengths, interleaved in rounds in one session (so drift on a shared host hits all three).

    python benchmarks/llama_fidelity.py [--model PATH] [-p 128] [-n 64] [-t 2] [-r 5] [--rounds 3]
                             [--llama-bench /path/to/llama-bench]

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


def direct_child(model: str, p: int, n: int, threads: int, reps: int) -> dict:
    """The few lines a user would write: Llama(...), then Llama.generate, timed per token."""
    from llama_cpp import Llama

    from bench.measuring.prompts import build_prompt

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


def run_llama_bench(binary: str, model: str, p: int, n: int, t: int, r: int) -> dict:
    def one(args: list[str]) -> list[float]:
        out = subprocess.run([binary, "-m", model, "-t", str(t), "-r", str(r), "-fa", "0", "-o", "json", *args],
                             capture_output=True, text=True, check=True)
        return json.loads(out.stdout)[0]["samples_ts"]

    return {"prefill_tps": one(["-p", str(p), "-n", "0"]), "decode_tps": one(["-p", "0", "-n", str(n), "-d", str(p)])}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="GGUF file (default: the embedded model, fetched if needed)")
    ap.add_argument("-p", type=int, default=128)
    ap.add_argument("-n", type=int, default=64)
    ap.add_argument("-t", type=int, default=2)
    ap.add_argument("-r", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--llama-bench", help="path to a llama-bench binary built from the same llama.cpp")
    ap.add_argument("--direct-child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.direct_child:
        print(json.dumps(direct_child(*json.loads(args.direct_child))))
        return 0
    model = args.model or _embedded_model()
    suite_counters: dict[str, list[float]] = {"prefill_tps": [], "decode_tps": []}

    def suite() -> dict:
        res = run_suite(model, args.p, args.n, args.t, args.r)
        for key in suite_counters:
            suite_counters[key].extend(res["backend"][key])
        return res

    runners = {"suite (bench run)": suite,
               "direct llama-cpp-python loop": lambda: run_direct(model, args.p, args.n, args.t, args.r)}
    if args.llama_bench:
        runners["llama-bench"] = lambda: run_llama_bench(args.llama_bench, model, args.p, args.n, args.t, args.r)
    samples: dict[str, dict[str, list[float]]] = {k: {"prefill_tps": [], "decode_tps": []} for k in runners}
    for rnd in range(args.rounds):
        for name, fn in runners.items():  # interleaved: every source sees the same host drift
            res = fn()
            for key in ("prefill_tps", "decode_tps"):
                samples[name][key].extend(res[key])
        print(f"round {rnd + 1}/{args.rounds} done", file=sys.stderr)
    samples["suite: llama.cpp's own counters (llama_decode only)"] = suite_counters
    med = {k: {m: statistics.median(v[m]) for m in v} for k, v in samples.items()}
    base = med["suite (bench run)"]
    print(f"model {model}, p={args.p}, n={args.n}, threads={args.t}, {args.rounds} rounds x {args.r} reps "
          "(medians; ratio = suite / other)\n")
    print("| source | prefill tok/s | decode tok/s | suite/other prefill | suite/other decode |")
    print("|---|---|---|---|---|")
    for name, m in med.items():
        print(f"| {name} | {m['prefill_tps']:.1f} | {m['decode_tps']:.1f} | "
              f"{base['prefill_tps'] / m['prefill_tps']:.3f} | {base['decode_tps'] / m['decode_tps']:.3f} |")
    return 0


def _embedded_model() -> str:
    from bench.datafiles import find_data_path
    from bench.models.catalog import load_catalog
    from bench.models.store import ModelStore

    catalog = load_catalog(find_data_path("models.yaml", None, "BENCH_CATALOG"))
    model = catalog.model(catalog.default_model)
    return str(ModelStore().resolve(model, model.variant(None)).path)


if __name__ == "__main__":
    sys.exit(main())
