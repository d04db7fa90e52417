"""bench serve's load generator against one nobody here wrote: NVIDIA AIPerf.

Same llama-server (the suite's build), same model, same prompts (text of exactly N server tokens,
distinct, written to an AIPerf single_turn input file), same output length (max_tokens + ignore_eos),
same concurrency, same warm-up and request counts. Each tool gets a fresh server (so neither sees
the other's prompts in llama.cpp's prompt cache), the server pinned to the first CPU and the load
generator (ours, or AIPerf and all its processes) to the others; the order of the two tools
alternates between concurrency levels. The request body is identical: ours is sent without
llama-server's ``timings_per_token`` here (tokens per chunk are then checked against the server's
usage instead).

Compared: request throughput, output tok/s, TTFT p50, ITL p50 (ours: per-token gaps; AIPerf:
inter_chunk_latency, one token per chunk here) and TPOT p50 (AIPerf calls it inter_token_latency:
(e2e - TTFT) / (OSL - 1) per request). Goal: within 10% at every concurrency, or the measured
reason for the difference.

    python benchmarks/serving_aiperf.py --model smollm2-135m --concurrency 1,2,4
    python benchmarks/serving_aiperf.py --model PATH.gguf --aiperf /path/to/venv/bin/aiperf

AIPerf (``pip install aiperf``, Python 3.11+, about 1.2 GB) is not a dependency of the suite: give
its executable with ``--aiperf``. Its tokenizer is made from the GGUF's own vocabulary (needs
``gguf``, ``tokenizers`` and ``transformers`` in AIPerf's environment) unless ``--tokenizer DIR``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.serving.client import Target  # noqa: E402
from bench.serving.load import LoadPoint, default_sender, run_phase  # noqa: E402
from bench.serving.metrics import summarize_point  # noqa: E402
from bench.serving.placement import plan_placement  # noqa: E402
from bench.serving.prompts import Prompt, PromptFactory, encode_job  # noqa: E402
from bench.serving.server import (  # noqa: E402
    ManagedServer,
    ServerSpec,
    counter_deltas,
    scrape_metrics,
    spawn_pinned,
    stop_process,
)
from bench.serving.target import resolve_gguf  # noqa: E402

GGUF_TO_HF_TOKENIZER = r"""
import sys
from gguf import GGUFReader
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast
src, out = sys.argv[1], sys.argv[2]
r = GGUFReader(src)
def field(name):
    f = r.fields[name]
    if len(f.data) == 1 and f.types[0].name != "ARRAY":
        v = f.parts[f.data[0]]
        return bytes(v).decode() if f.types[0].name == "STRING" else v.tolist()[0]
    return [bytes(f.parts[i]).decode("utf-8", errors="replace") for i in f.data]
tokens, merges = field("tokenizer.ggml.tokens"), field("tokenizer.ggml.merges")
tk = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=[tuple(m.split(" ", 1)) for m in merges]))
tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
tk.decoder = decoders.ByteLevel()
eos = tokens[field("tokenizer.ggml.eos_token_id")]
PreTrainedTokenizerFast(tokenizer_object=tk, eos_token=eos).save_pretrained(out)
"""


BURNER = """
import sys, time
duty = float(sys.argv[1])
while True:  # busy for duty x 10 ms, then idle for the rest of each 10 ms
    t = time.perf_counter()
    while time.perf_counter() - t < 0.01 * duty:
        pass
    time.sleep(0.01 * (1 - duty))
"""


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def server(spec_args: dict[str, Any], log: Path) -> ManagedServer:
    return ManagedServer(ServerSpec(log_path=log, **spec_args))


def text_prompts(spec_args: dict[str, Any], out: Path, n: int, length: int, seed: int) -> list[Prompt]:
    """Distinct text prompts of exactly ``length`` server tokens (checked by /tokenize)."""
    with server(spec_args, out / "prompts.llama-server.log") as s:
        target = Target(s.base_url, spec_args["alias"], "completions", None, "llama-server", managed=True)
        factory = PromptFactory(target, "fixed", length, "alice29", seed)
        factory.send_ids = False  # text, as AIPerf sends it
        return factory.prompts(0, n, salt=0)


def run_suite(spec_args: dict[str, Any], prompts: list[Prompt], c: int, warmup: int, gen: int, out: Path
              ) -> dict[str, Any]:
    with server(spec_args, out / f"suite-c{c}.llama-server.log") as s:
        # the same body AIPerf sends: no timings_per_token (server_kind left generic)
        target = Target(s.base_url, spec_args["alias"], "completions", None, "openai-compatible", managed=True)
        jobs = [encode_job(target, p, gen, True) for p in prompts]
        send = default_sender(target, 600.0)
        if warmup:
            run_phase(LoadPoint("concurrency", c, warmup, 3600.0), jobs[:warmup], send, 600.0)
        before = scrape_metrics(s.root)
        res = run_phase(LoadPoint("concurrency", c, len(jobs) - warmup, 3600.0), jobs[warmup:], send, 600.0)
        counters = counter_deltas(before, scrape_metrics(s.root)) or {}
    s = summarize_point(res.traces, None)
    return {"request_throughput_rps": s["request_throughput_rps"], "output_tps": s["output_tps"],
            "ttft_p50_ms": s["ttft_s"]["p50"] * 1e3, "itl_p50_ms": s["itl_s"]["p50"] * 1e3,
            "tpot_p50_ms": s["tpot_s"]["p50"] * 1e3, "ok": s["ok"], "errors": s["errors"],
            "itl_basis": s["itl_basis"], "cached_prompt_tokens": s["cache"]["cached_prompt_tokens"],
            "client_cpu_cores": res.client_cpu_share, "window_s": s["window_s"],
            "ttft_from_send_p50_ms": s["ttft_from_send_s"]["p50"] * 1e3, **_server_side(counters)}


def _server_side(counters: dict[str, Any]) -> dict[str, Any]:
    """llama.cpp's own timers over the counted phase: how fast the server itself ran meanwhile."""
    per_token = counters.get("server_s_per_predicted_token")
    prompt = (counters["prompt_seconds"] / counters["prompt_tokens_processed"]
              if counters.get("prompt_seconds") and counters.get("prompt_tokens_processed") else None)
    return {"server_ms_per_token": per_token * 1e3 if per_token else None,
            "server_prompt_ms_per_token": prompt * 1e3 if prompt else None, "server_counters": counters}


def run_aiperf(args: argparse.Namespace, spec_args: dict[str, Any], prompts: list[Prompt], c: int, warmup: int,
               gen: int, out: Path, client_cpus: list[int], tokenizer: Path) -> dict[str, Any]:
    art = out / f"aiperf-c{c}"
    shutil.rmtree(art, ignore_errors=True)
    art.mkdir(parents=True)
    inputs = art / "inputs.jsonl"
    inputs.write_text("".join(json.dumps({"text": p.text, "output_length": gen}) + "\n" for p in prompts))
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    with server(spec_args, out / f"aiperf-c{c}.llama-server.log") as s:
        cmd = [args.aiperf, "profile", "--url", s.root, "--endpoint-type", "completions", "--model", spec_args["alias"],
               "--tokenizer", str(tokenizer), "--streaming", "--concurrency", str(c),
               "--request-count", str(len(prompts) - warmup), "--input-file", str(inputs),
               "--custom-dataset-type", "single_turn", "--dataset-sampling-strategy", "sequential",
               "--osl", str(gen), "--extra-inputs", "ignore_eos:true", "--use-server-token-count",
               "--no-server-metrics", "--no-gpu-telemetry", "--ui", "none", "--random-seed", "0",
               "--artifact-dir", str(art)]
        if warmup:
            cmd += ["--warmup-request-count", str(warmup)]
        before = scrape_metrics(s.root)
        cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.monotonic()
        proc = spawn_pinned(cmd, client_cpus, art / "aiperf.log", env=env)
        try:
            rc = proc.wait(args.aiperf_timeout)
        except subprocess.TimeoutExpired:
            rc = stop_process(proc)
            raise RuntimeError(f"aiperf did not finish in {args.aiperf_timeout} s; log: {art / 'aiperf.log'}") from None
        cpu1, wall = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic() - t0
        counters = counter_deltas(before, scrape_metrics(s.root)) or {}
    summary = art / "profile_export_aiperf.json"
    if rc != 0 or not summary.exists():
        tail = (art / "aiperf.log").read_text(errors="replace").strip().splitlines()[-3:]
        raise RuntimeError(f"aiperf failed (exit {rc}): {' | '.join(tail)}; log: {art / 'aiperf.log'}")
    d = json.loads(summary.read_text())
    return {"request_throughput_rps": d["request_throughput"]["avg"],
            "output_tps": d["output_token_throughput"]["avg"], "ttft_p50_ms": d["time_to_first_token"]["p50"],
            "itl_p50_ms": d["inter_chunk_latency"]["p50"], "tpot_p50_ms": d["inter_token_latency"]["p50"],
            "ok": d.get("request_count", {}).get("avg"), "errors": d.get("error_summary"),
            "cached_prompt_tokens": _aiperf_cached(art), "window_s": d.get("benchmark_duration", {}).get("avg"),
            "client_cpu_cores": (cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime) / wall,
            "client_cpu_note": "AIPerf's processes over its whole run (start-up and warm-up included)",
            **_server_side(counters), "server_counters_note": "over AIPerf's whole run, warm-up included"}


def _aiperf_cached(art: Path) -> int | None:
    """Prompt tokens llama-server took from its cache, summed over AIPerf's profiling records."""
    path = art / "profile_export.jsonl"
    if not path.exists():
        return None
    total = 0
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        if rec.get("metadata", {}).get("benchmark_phase") == "warmup":
            continue
        metrics = rec.get("metrics", {})
        value = metrics.get("usage_prompt_cache_read_tokens") or metrics.get("usage_cached_tokens")
        if isinstance(value, dict):
            value = value.get("value")
        total += int(value or 0)
    return total


def tokenizer_dir(args: argparse.Namespace, model: Path, out: Path) -> Path:
    if args.tokenizer:
        return Path(args.tokenizer)
    target = out / "tokenizer"
    if not (target / "tokenizer.json").exists():
        python = Path(args.aiperf).with_name("python")
        subprocess.run([str(python), "-c", GGUF_TO_HF_TOKENIZER, str(model), str(target)], check=True,
                       capture_output=True, text=True)
    return target


METRICS = (("request_throughput_rps", "req/s", ".3f"), ("output_tps", "output tok/s", ".2f"),
           ("ttft_p50_ms", "TTFT p50 ms", ".1f"), ("itl_p50_ms", "ITL p50 ms", ".2f"),
           ("tpot_p50_ms", "TPOT p50 ms", ".2f"),
           ("server_ms_per_token", "server's own decode ms/token (llama.cpp timer; reason check)", ".2f"),
           ("server_prompt_ms_per_token", "server's own prefill ms/token (llama.cpp timer)", ".2f"),
           ("tpot_over_server_timer", "TPOT p50 / server's decode ms/token", ".3f"),
           ("client_cpu_cores", "load generator CPU (cores)", ".3f"))


def table(results: list[dict[str, Any]]) -> str:
    control = any("control" in r for r in results)
    extra = (" bench serve + burner |", "---|") if control else ("", "")
    lines = ["| concurrency | metric | bench serve | AIPerf | difference |" + extra[0],
             "|---|---|---|---|---|" + extra[1]]
    for r in results:
        for tool in ("suite", "aiperf", "control"):
            if tool not in r:
                continue  # does each tool's TPOT agree with the server's own decode timer?
            t = r[tool]
            t["tpot_over_server_timer"] = (t["tpot_p50_ms"] / t["server_ms_per_token"]
                                           if t.get("tpot_p50_ms") and t.get("server_ms_per_token") else None)
        for key, name, spec in METRICS:
            a, b = r["suite"].get(key), r["aiperf"].get(key)
            diff = f"{(a - b) / b:+.1%}" if a is not None and b else "-"
            line = (f"| {r['concurrency']} | {name} | {format(a, spec) if a is not None else '-'} | "
                    f"{format(b, spec) if b is not None else '-'} | {diff} |")
            if control:
                v = r.get("control", {}).get(key)
                line += f" {format(v, spec) if v is not None else '-'} |"
            lines.append(line)
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="catalog ID[:VARIANT] or a GGUF path (default: the embedded model)")
    p.add_argument("--concurrency", default="1,2,4")
    p.add_argument("--requests", type=int, default=None, help="counted requests per level (default 4 x c, min 8)")
    p.add_argument("--prompt-tokens", type=int, default=128)
    p.add_argument("--gen-tokens", type=int, default=32)
    p.add_argument("--ctx", type=int, default=None)
    p.add_argument("--aiperf", default="aiperf", help="AIPerf's executable (in its own environment)")
    p.add_argument("--aiperf-timeout", type=float, default=900)
    p.add_argument("--tokenizer", help="HF tokenizer folder for AIPerf (default: made from the GGUF)")
    p.add_argument("--out", default="results/serving_aiperf", help="artifacts folder (default results/serving_aiperf)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--control", action="store_true",
                   help="also run ours with a CPU burner using as much of the client's cores as AIPerf did")
    p.add_argument("--markdown", metavar="PAGE", help="also write the output as a dated page, e.g. "
                   "docs/measurements/YYYY-MM-DD-NAME.md (bench.analysis.logpage)")
    args = p.parse_args()
    levels = [int(x) for x in args.concurrency.split(",")]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = resolve_gguf(args.model, REPO / "models.yaml")
    from bench.native.tools import tool_path

    cpus = sorted(os.sched_getaffinity(0))
    placement = plan_placement(1, cpus, managed=True)
    ctx = args.ctx or -(-(args.prompt_tokens + args.gen_tokens + 16) // 256) * 256
    spec_args = {"exe": tool_path("llama-server", say=say), "model_path": model.path,
                 "alias": f"{model.model_id}:{model.variant_id}", "threads": len(placement.server_cpus),
                 "ctx_per_slot": ctx, "parallel": max(levels), "cpus": placement.server_cpus}
    say(f"server CPUs {placement.server_cpus}, load generators on {placement.client_cpus}; load average "
        f"{os.getloadavg()[0]:.2f}")
    tok = tokenizer_dir(args, model.path, out)
    plan = [(c, args.requests or max(8, 4 * c)) for c in levels]
    prompts = text_prompts(spec_args, out, sum(c + n for c, n in plan), args.prompt_tokens, args.seed)
    os.sched_setaffinity(0, placement.client_cpus)
    results, start = [], 0
    for i, (c, n) in enumerate(plan):
        mine = prompts[start:start + c + n]
        start += c + n
        row: dict[str, Any] = {"concurrency": c, "requests": n, "warmup": c, "load_before": os.getloadavg()[0]}
        for tool in (("suite", "aiperf") if i % 2 == 0 else ("aiperf", "suite")):
            say(f"concurrency {c}: {tool} ({c} warm-up + {n} requests)")
            t0 = time.monotonic()
            row[tool] = (run_suite(spec_args, mine, c, c, args.gen_tokens, out) if tool == "suite" else
                         run_aiperf(args, spec_args, mine, c, c, args.gen_tokens, out, placement.client_cpus, tok))
            row[tool]["seconds"] = time.monotonic() - t0
        if args.control and row["aiperf"].get("client_cpu_cores"):
            # The control: ours again, with a burner taking as much of the client's cores as AIPerf did.
            duty = min(1.0, row["aiperf"]["client_cpu_cores"] / len(placement.client_cpus))
            say(f"concurrency {c}: control, ours with a {duty:.0%} CPU burner on the client's cores")
            burner = spawn_pinned([sys.executable, "-c", BURNER, str(duty)], placement.client_cpus, out / "burner.log")
            try:
                row["control"] = run_suite(spec_args, mine, c, c, args.gen_tokens, out)
            finally:
                stop_process(burner, grace_s=2)
            row["control"]["burner_duty"] = duty
        results.append(row)
    os.sched_setaffinity(0, cpus)
    (out / "results.json").write_text(json.dumps({"model": str(model.path), "prompt_tokens": args.prompt_tokens,
                                                  "gen_tokens": args.gen_tokens, "placement": placement.to_dict(),
                                                  "results": results}, indent=1))
    from bench.analysis.logpage import markdown_page

    with markdown_page(args.markdown, "bench serve against NVIDIA AIPerf, same server, prompts and load"):
        print(table(results))
        print(f"\n(load average after: {os.getloadavg()[0]:.2f}; details: {out / 'results.json'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
