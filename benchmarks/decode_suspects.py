"""Where does a decode step's time go? Each suspect of issue "Fidelity to 2%" measured alone, in one
process, against llama-bench's own loop (``llama_decode`` + ``llama_synchronize`` per token, nothing
else), in interleaved blocks so that the host's drift falls on every variant alike.

    python benchmarks/decode_suspects.py [FILE.gguf] [-p 128] [-n 64] [-t 2] [--rounds 9]

Variants, each a block of n single-token decodes after the same p-token prompt:

- ``bare``: llama-bench's tg loop: decode, synchronize; the next token is fixed (llama-bench draws
  a random one; the token does not change the work);
- ``argmax``: + the greedy token read from the logits in place (what the suite does);
- ``suite``: + detokenizing each token and taking its timestamp (the suite's whole loop);
- ``suite+rss``: + the suite's RSS sampler thread at 10 Hz (bench.measuring.trackers.MemoryTracker);
- ``greedy-sampler``: bare + llama.cpp's greedy sampler (the suite's loop before: a candidate array
  of the whole vocabulary per token);
- ``Llama.eval``: llama-cpp-python's ``eval([token])`` per token instead of a kept batch.

Prints, per variant, the median over rounds of (variant's time per token / bare's) in the same
round, with its 95% interval (bench.analysis.significance.median_interval), and the absolute
microseconds added per token. The model runs on the installed llama-cpp-python in this process:
run it as a script, never inside a test process.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections.abc import Callable


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?", help="a GGUF file (default: the embedded model)")
    ap.add_argument("-p", type=int, default=128)
    ap.add_argument("-n", type=int, default=64)
    ap.add_argument("-t", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--markdown", metavar="PAGE", help="also write the output as a dated page, e.g. "
                    "docs/measurements/YYYY-MM-DD-NAME.md (bench.analysis.logpage)")
    args = ap.parse_args(argv)
    path = args.model or _embedded_model()
    per_round, n_vocab = measure(path, args.p, args.n, args.t, args.rounds)
    from bench.analysis.logpage import markdown_page

    with markdown_page(args.markdown, "Per-token suspects of the decode loop, each alone against bare llama.cpp", argv):
        print_table(path, per_round, n_vocab, args)
    return 0


def measure(path: str, p: int, n: int, threads: int, rounds: int) -> tuple[list[dict[str, float]], int]:
    """Seconds per token of every variant, per round."""
    import llama_cpp as lc
    import numpy as np
    from llama_cpp import Llama

    from bench.measuring.trackers import MemoryTracker
    from bench.prompts import build_prompt

    llm = Llama(model_path=path, n_ctx=p + n, n_threads=threads, n_threads_batch=threads, verbose=False)
    ctx, vocab = llm.ctx, lc.llama_model_get_vocab(llm.model)
    n_vocab = lc.llama_vocab_n_tokens(vocab)
    prompt = build_prompt(p, lambda s: llm.tokenize(s.encode(), add_bos=False), [llm.token_bos()])
    batch = lc.llama_batch_init(1, 0, 1)
    greedy = lc.llama_sampler_init_greedy()
    token = int(prompt[-1])

    def decode(pos: int) -> None:
        batch.n_tokens = 1
        batch.token[0], batch.pos[0], batch.n_seq_id[0], batch.logits[0] = token, pos, 1, True
        batch.seq_id[0][0] = 0
        if lc.llama_decode(ctx, batch) != 0:
            raise SystemExit("llama_decode failed")

    def bare(pos: int) -> None:
        decode(pos)
        lc.llama_synchronize(ctx)

    def argmax(pos: int) -> None:
        decode(pos)
        int(np.ctypeslib.as_array(lc.llama_get_logits_ith(ctx, -1), shape=(n_vocab,)).argmax())

    stamps: list[float] = []

    def suite(pos: int) -> None:
        decode(pos)
        tok = int(np.ctypeslib.as_array(lc.llama_get_logits_ith(ctx, -1), shape=(n_vocab,)).argmax())
        llm.detokenize([tok])
        stamps.append(time.perf_counter())

    def sampler(pos: int) -> None:
        decode(pos)
        lc.llama_sampler_sample(greedy, ctx, -1)

    def llama_eval(pos: int) -> None:
        llm.eval([token])
        lc.llama_synchronize(ctx)

    variants: dict[str, Callable[[int], None]] = {
        "bare": bare, "argmax": argmax, "suite": suite, "suite+rss": suite, "greedy-sampler": sampler,
        "Llama.eval": llama_eval}

    def block(name: str) -> float:
        """Seconds per token over n decodes after a freshly evaluated prompt."""
        llm.reset()
        llm.eval(prompt)
        step = variants[name]
        with MemoryTracker() if name == "suite+rss" else contextlib.nullcontext():
            t0 = time.perf_counter()
            for i in range(n):
                step(len(prompt) + i)
            seconds = time.perf_counter() - t0
        stamps.clear()
        return seconds / n

    names = list(variants)
    block("bare")  # warm-up
    per_round: list[dict[str, float]] = []
    for rnd in range(rounds):
        order = names if rnd % 2 == 0 else names[::-1]  # each variant alternately early and late
        per_round.append({name: block(name) for name in order})
        print(f"round {rnd + 1}/{rounds} done", file=sys.stderr)
    lc.llama_batch_free(batch)
    lc.llama_sampler_free(greedy)
    return per_round, n_vocab


def print_table(path: str, per_round: list[dict[str, float]], n_vocab: int, args: argparse.Namespace) -> None:
    from bench.analysis.significance import median_interval

    bare_s = statistics.median(r["bare"] for r in per_round)
    print(f"{path}: vocabulary {n_vocab}, p={args.p}, n={args.n}, threads={args.t}, {args.rounds} rounds; "
          f"bare decode {1 / bare_s:.1f} tok/s ({bare_s * 1e6:.0f} us a token)\n")
    print("| variant | time per token / bare (median of rounds) | 95% interval | us added per token |")
    print("|---|---|---|---|")
    for name in per_round[0]:
        ratios = [r[name] / r["bare"] for r in per_round]
        iv = median_interval(ratios)
        added = statistics.median(r[name] - r["bare"] for r in per_round) * 1e6
        span = f"{iv.low:.3f}-{iv.high:.3f}" if iv else "-"
        print(f"| {name} | {statistics.median(ratios):.3f} | {span} | {added:+.0f} |")


def _embedded_model() -> str:
    from bench.models.store import embedded_model_path

    return str(embedded_model_path())


if __name__ == "__main__":
    sys.exit(main())
