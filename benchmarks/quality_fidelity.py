"""Do the suite's perplexity and KLD agree with llama.cpp's own ``llama-perplexity`` on the same files?

    python benchmarks/quality_fidelity.py [--model qwen2.5-coder-1.5b-instruct] [--variants q4_k_m,q8_0-derived]
                                          [--reference f16] [--ctx 512] [--chunks 8] [-t 2]

For each variant of a catalog model: ``bench run --quality`` against the reference (the suite's
window scheme: consecutive chunks of --ctx tokens, the second half of each scored, logits of the
reference cached), and ``llama-perplexity`` on the same corpus text, context and chunks, first with
``--kl-divergence-base`` on the reference, then ``--kl-divergence`` for each variant. llama-perplexity
is built once from the installed wheel's llama.cpp source with its flags (bench.native.tools).
Prints one table row per variant: perplexity and mean KLD from each, and their ratios.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

# llama-perplexity prints "Final estimate: PPL = X +/- Y" on its own, and "Mean PPL(Q) : X ± Y" with
# --kl-divergence (tools/perplexity/perplexity.cpp in the vendored llama.cpp)
PPL = re.compile(r"(?:Final estimate: PPL = |Mean PPL\(Q\)\s+:\s+)([0-9.]+)\s+(?:\+/-|±)\s+([0-9.]+)")
KLD = re.compile(r"Mean\s+KLD:\s+([0-9.]+)\s+±\s+([0-9.]+)")


def suite(model: str, variant: str, reference: str, ctx: int, chunks: int, threads: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp, "r.jsonl")
        proc = subprocess.run([sys.executable, "-m", "bench", "run", "-m", f"{model}:{variant}",
                               "--prompt-tokens", "16", "--gen-tokens", "4", "-t", str(threads), "--quality",
                               "--quality-ctx", str(ctx), "--quality-chunks", str(chunks), "--reference", reference,
                               "--no-progress", "-o", str(out)], capture_output=True, text=True)
        if not out.exists():
            raise SystemExit(f"bench run failed for {variant}: {proc.stderr.strip().splitlines()[-1:]}")
        row = json.loads(out.read_text().splitlines()[0])
    q = row["quality"]
    cache = (q.get("reference") or {}).get("cache")
    ref_pass = q.get("reference_pass") or {}
    return {"ppl": q.get("perplexity"), "kld": (q.get("kld") or {}).get("mean"), "path": row["model"]["path"],
            "status": q.get("status"), "reason": q.get("reason") or q.get("note"),
            "peak_rss": (q.get("memory") or {}).get("peak_rss_bytes"),
            "ref_peak_rss": (ref_pass.get("memory") or {}).get("peak_rss_bytes"),
            "cache_bytes": ref_pass.get("cache_bytes") or _size(cache), "cache": cache}


def _size(cache: str | None) -> int | None:
    """An existing cache's size on disk (its .npy and the .json beside it)."""
    files = [Path(cache), Path(cache).with_suffix(".json")] if cache else []
    return sum(f.stat().st_size for f in files if f.exists()) or None


def llama_perplexity(binary: str, model: str, corpus: Path, ctx: int, chunks: int, threads: int,
                     kld_base: Path, make_base: bool) -> dict:
    """The reference writes its logits (``--kl-divergence-base FILE``); a variant reads them back and
    reports its KLD (``--kl-divergence-base FILE --kl-divergence``)."""
    cmd = [binary, "-m", model, "-f", str(corpus), "-c", str(ctx), "--chunks", str(chunks), "-t", str(threads),
           "-b", str(ctx), "--kl-divergence-base", str(kld_base), *([] if make_base else ["--kl-divergence"])]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    text = proc.stdout + proc.stderr
    ppl, kld = PPL.search(text), KLD.search(text)
    return {"ppl": float(ppl.group(1)) if ppl else None, "kld": float(kld.group(1)) if kld else None,
            "exit": proc.returncode}


def _print_table(args: argparse.Namespace, binary: str, ref: dict, theirs_ref: dict, rows: dict, theirs: dict,
                 variants: list[str]) -> None:
    print(f"{args.model}, corpus alice29, ctx {args.ctx}, {args.chunks} chunks, threads {args.t}; reference "
          f"{args.reference}; llama-perplexity: {binary}\n")
    print("| variant | suite PPL | llama-perplexity PPL | ratio | suite KLD | llama-perplexity KLD | ratio "
          "| suite quality pass peak RSS MiB |")
    print("|---|---|---|---|---|---|---|---|")
    table = [(args.reference, ref, theirs_ref)] + [(v, rows[v], theirs[v]) for v in variants]
    for name, ours, them in table:
        def ratio(a: float | None, b: float | None) -> str:
            return f"{a / b:.4f}" if a is not None and b else "-"

        def num(v: float | None, spec: str) -> str:
            return "-" if v is None else format(v, spec)

        print(f"| {name} | {num(ours['ppl'], '.4f')} | {num(them['ppl'], '.4f')} | {ratio(ours['ppl'], them['ppl'])} | "
              f"{num(ours['kld'], '.5f')} | {num(them['kld'], '.5f')} | {ratio(ours['kld'], them['kld'])} | "
              f"{num(ours['peak_rss'] / 2**20 if ours['peak_rss'] else None, '.0f')} |")
    sized = [r for r in rows.values() if r["cache_bytes"]]  # the first variant's run made the reference pass
    if sized:
        r = sized[0]
        print(f"\nThe reference's cached log-probabilities (float16, scored positions x vocabulary): "
              f"{r['cache_bytes'] / 2**20:.0f} MiB on disk; its pass peaked at "
              f"{num(r['ref_peak_rss'] / 2**20 if r['ref_peak_rss'] else None, '.0f')} MiB RSS.")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="qwen2.5-coder-1.5b-instruct")
    ap.add_argument("--variants", default="q4_k_m,q8_0-derived,q4_0-derived")
    ap.add_argument("--reference", default="f16")
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--chunks", type=int, default=8)
    ap.add_argument("-t", type=int, default=2)
    ap.add_argument("--markdown", metavar="PAGE", help="also write the output as a dated page, e.g. "
                    "docs/measurements/YYYY-MM-DD-NAME.md (bench.analysis.logpage)")
    args = ap.parse_args(argv)
    from bench.native.tools import tool_path
    from bench.quality.corpus import load_corpus

    binary = str(tool_path("llama-perplexity", say=lambda m: print(m, file=sys.stderr)))
    corpus = load_corpus("alice29").path
    variants = [v for v in args.variants.split(",") if v]
    rows = {v: suite(args.model, v, args.reference, args.ctx, args.chunks, args.t) for v in variants}
    ref = suite(args.model, args.reference, args.reference, args.ctx, args.chunks, args.t)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp, "base.kld")
        theirs_ref = llama_perplexity(binary, ref["path"], corpus, args.ctx, args.chunks, args.t, base, True)
        theirs = {v: llama_perplexity(binary, r["path"], corpus, args.ctx, args.chunks, args.t, base, False)
                  for v, r in rows.items()}
    from bench.analysis.logpage import markdown_page

    with markdown_page(args.markdown, "The suite's perplexity and KLD against llama-perplexity", argv):
        _print_table(args, binary, ref, theirs_ref, rows, theirs, variants)
    return 0


if __name__ == "__main__":
    sys.exit(main())
