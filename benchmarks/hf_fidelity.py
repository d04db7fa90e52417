"""Fidelity of the Hugging Face backends: the suite's decode tok/s against a minimal direct loop in
each library (load, ``generate(min_new_tokens=n)``, time it), interleaved in rounds in one
session on the embedded model's derived fp32 folder. (llama.cpp: see ``benchmarks/llama_fidelity.py``.)

    python benchmarks/hf_fidelity.py [--rounds 2] [--cases transformers,bf16,torch-int8,bnb8,bnb4,ort-fp32,ort-int8]

Direct decode tok/s = 63 / (T(generate 64 tokens) - T(generate 1 token)), median of 3; the suite's
is its mean decode tok/s over 3 repetitions of p=128, n=64. The table's ratio is the median over
rounds of suite/direct measured back to back (the suite first in odd rounds, second in even ones),
with its distribution-free 95% interval and whether that settles "within 2%" (at least 6 rounds).
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

# case -> (suite backend, suite --backend-opt values)
CASES: dict[str, tuple[str, list[str]]] = {
    "transformers": ("transformers", []),
    "bf16": ("transformers", ["dtype=bf16"]),
    "torch-int8": ("torch-int8", []),
    "bnb8": ("bitsandbytes", ["bits=8"]),
    "bnb4": ("bitsandbytes", ["bits=4", "quant_type=nf4"]),
    "ort-fp32": ("onnxruntime", []),
    "ort-int8": ("onnxruntime", ["precision=int8"]),
}


def direct_child(case: str, folder: str, threads: int) -> float:
    """The few lines a user would write for each library."""
    import warnings

    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    warnings.filterwarnings("ignore")
    torch.set_num_threads(threads)
    load = AutoModelForCausalLM.from_pretrained
    if case == "transformers":
        model = load(folder, dtype=torch.float32)
    elif case == "bf16":
        model = load(folder, dtype=torch.bfloat16)
    elif case == "torch-int8":
        model = torch.ao.quantization.quantize_dynamic(load(folder, dtype=torch.float32), {torch.nn.Linear},
                                                       dtype=torch.qint8)
    elif case in ("bnb8", "bnb4"):
        cfg = (BitsAndBytesConfig(load_in_8bit=True) if case == "bnb8" else
               BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32))
        model = load(folder, quantization_config=cfg, device_map={"": "cpu"})
    else:
        import onnxruntime as ort
        from optimum.onnxruntime import ORTModelForCausalLM

        from bench.backends.onnx.backend import _export_dir

        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        precision = "int8" if case == "ort-int8" else "fp32"
        model = ORTModelForCausalLM.from_pretrained(
            _export_dir(Path(folder), precision), session_options=so, use_cache=True,
            file_name="model_quantized.onnx" if precision == "int8" else "model.onnx")
    ids = torch.tensor([[1] + list(range(1000, 1127))])

    def run(n: int) -> float:
        with torch.inference_mode():
            t0 = time.perf_counter()
            model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                           do_sample=False, pad_token_id=2)
            return time.perf_counter() - t0

    run(4)
    return statistics.median(63 / (run(64) - run(1)) for _ in range(3))


def in_process(folder: str, threads: int, rounds: int) -> list[tuple[float, float]]:
    """The transformers case with both sides in one process on one loaded model, interleaved per
    round (ABBA), so the host's drift between processes drops out: (suite, direct) decode tok/s.
    The suite side is the backend's own generate (its streamer, prefill mark and stop check); the
    direct side is model.generate with nothing attached, 63 / (T(64) - T(1))."""
    from bench.backends.base import LoadSettings
    from bench.backends.transformers.backend import TransformersBackend

    backend = TransformersBackend()
    backend.load(Path(folder), LoadSettings(threads=threads, device="cpu", n_ctx=192, seed=0))
    prompt = backend.prompt(128)
    torch, model = backend.torch, backend.model
    ids = torch.tensor([prompt])

    def direct(n: int) -> float:
        with torch.inference_mode():
            t0 = time.perf_counter()
            model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                           do_sample=False, pad_token_id=backend.tokenizer.eos_token_id)
            return time.perf_counter() - t0

    def suite() -> float:
        t = backend.generate(prompt, 64, stop_at_eos=False).token_times
        return (len(t) - 1) / (t[-1] - t[0])

    def direct_rate() -> float:
        return 63 / (direct(64) - direct(1))

    suite(), direct_rate()  # warm-up
    out = []
    for rnd in range(rounds):
        if rnd % 2:
            d = direct_rate()
            out.append((suite(), d))
        else:
            s = suite()
            out.append((s, direct_rate()))
        print(f"in-process round {rnd + 1}/{rounds} done", file=sys.stderr)
    return out


def run_suite(case: str, threads: int) -> float:
    backend, opts = CASES[case]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp, "r.jsonl")
        cmd = [sys.executable, "-m", "bench", "run", "--backend", backend, "--model", "smollm2-135m:hf-f32",
               "--prompt-tokens", "128", "--gen-tokens", "64", "-r", "3", "-t", str(threads), "--no-progress",
               "-o", str(out)]
        for o in opts:
            cmd += ["--backend-opt", o]
        subprocess.run(cmd, capture_output=True, text=True, check=True)
        return json.loads(out.read_text().splitlines()[0])["summary"]["decode_tps"]["mean"]


def _print_in_process(pairs: list[tuple[float, float]], ratios: list[float], iv: Any, within_tolerance: Any) -> None:
    print("| case | suite decode tok/s | direct decode tok/s | suite/direct (median of paired rounds) "
          "| 95% interval | within 2% |")
    print("|---|---|---|---|---|---|")
    print(f"| transformers, one process | {statistics.median(a for a, _ in pairs):.2f} | "
          f"{statistics.median(b for _, b in pairs):.2f} | {statistics.median(ratios):.3f} | "
          f"{f'{iv.low:.3f}-{iv.high:.3f}' if iv else '-'} | {within_tolerance(ratios, 0.02)} |")


def _print_cases(cases: list[str], results: dict[str, dict[str, list[float]]]) -> None:
    from bench.analysis.significance import median_interval, within_tolerance

    print("| case | backend | options | suite decode tok/s | direct decode tok/s "
          "| suite/direct (median of paired rounds) | 95% interval | within 2% | range |")
    print("|---|---|---|---|---|---|---|---|---|")
    for c in cases:
        s, d = statistics.median(results[c]["suite"]), statistics.median(results[c]["direct"])
        ratios = [a / b for a, b in zip(results[c]["suite"], results[c]["direct"], strict=True)]
        backend, opts = CASES[c]
        iv = median_interval(ratios)
        span = f"{iv.low:.3f}-{iv.high:.3f}" if iv else "-"
        print(f"| {c} | {backend} | {' '.join(opts) or '-'} | {s:.2f} | {d:.2f} | {statistics.median(ratios):.3f} | "
              f"{span} | {within_tolerance(ratios, 0.02)} | {min(ratios):.3f}-{max(ratios):.3f} |")


def main(argv: list[str] | None = None) -> int:
    from bench.analysis.logpage import markdown_page

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("-t", type=int, default=2)
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--in-process", action="store_true",
                    help="transformers only: both sides in one process on one model (no drift between processes)")
    ap.add_argument("--markdown", metavar="PAGE", help="also write the output as a dated page, e.g. "
                    "docs/measurements/YYYY-MM-DD-NAME.md (bench.analysis.logpage)")
    ap.add_argument("--direct-child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.direct_child:
        case, folder = json.loads(args.direct_child)
        print(json.dumps(direct_child(case, folder, args.t)))
        return 0
    from bench.datafiles import find_data_path
    from bench.models.catalog import load_catalog
    from bench.models.store import ModelStore

    model = load_catalog(find_data_path("models.yaml", None, "BENCH_CATALOG")).model("smollm2-135m")
    folder = str(ModelStore().resolve(model, model.variant("hf-f32")).path)
    if args.in_process:
        from bench.analysis.significance import median_interval, within_tolerance

        pairs = in_process(folder, args.t, args.rounds)
        ratios = [a / b for a, b in pairs]
        iv = median_interval(ratios)
        with markdown_page(args.markdown, "The suite's transformers backend against a bare model.generate", argv):
            _print_in_process(pairs, ratios, iv, within_tolerance)
        return 0
    cases = [c for c in args.cases.split(",") if c]
    for c in cases:
        if c not in CASES:
            ap.error(f"unknown case {c}; known: {', '.join(CASES)}")
    results: dict[str, dict[str, list[float]]] = {c: {"suite": [], "direct": []} for c in cases}
    def direct(c: str) -> float:
        out = subprocess.run([sys.executable, __file__, "-t", str(args.t), "--direct-child", json.dumps([c, folder])],
                             capture_output=True, text=True, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    for rnd in range(args.rounds):
        for c in cases:  # interleaved: suite and direct of a case run back to back, ABBA
            if rnd % 2:
                results[c]["direct"].append(direct(c))
            results[c]["suite"].append(run_suite(c, args.t))
            if not rnd % 2:
                results[c]["direct"].append(direct(c))
        print(f"round {rnd + 1}/{args.rounds} done", file=sys.stderr)
    # Paired: each round's suite and direct runs are adjacent in time, so the median of the per-round
    # ratios is less exposed to the machine's slow drift than a ratio of medians.
    with markdown_page(args.markdown, "The suite's Hugging Face backends against a minimal direct loop", argv):
        _print_cases(cases, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
