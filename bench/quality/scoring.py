"""Quality against a reference variant of the same model (``docs/METRICS.md``).

On one token sequence (the reference's tokenizer), per scored position j, with P the reference's
and Q the variant's next-token distributions over the full vocabulary:

    perplexity     = exp(mean_j -log Q(x_{j+1}))
    KLD            = mean_j sum_v P_j(v) (log P_j(v) - log Q_j(v))    (also median, p99, max)
    same top token = fraction of j where argmax P_j = argmax Q_j
    ln(PPL ratio)  = mean_j (-log Q(x_{j+1}) + log P(x_{j+1})) = ln(PPL_Q / PPL_P), +- its standard error

Windows follow llama-perplexity: consecutive chunks of n_ctx tokens, positions n_ctx/2 .. n_ctx-2
scored in each. The reference pass writes its log-probabilities once per (reference file, corpus,
n_ctx, chunks) to a float16 .npy beside a JSON of its tokens and per-position NLL; every variant
then costs one pass (a ladder of N variants: N + 1 passes, not 2N).
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.errors import BenchError

BLOCK = 64  # positions per numpy block: bounds temporaries to BLOCK x vocab floats


def log_softmax(logits: Any) -> Any:
    import numpy as np

    x = logits.astype(np.float32, copy=True)
    x -= x.max(axis=1, keepdims=True)
    x -= np.log(np.exp(x).sum(axis=1, keepdims=True))
    return x


def logsumexp_rows(x: Any) -> Any:
    import numpy as np

    m = x.max(axis=1, keepdims=True)
    return (m[:, 0] + np.log(np.exp(x - m).sum(axis=1))).astype(np.float64)


def reference_probs(logp: Any) -> Any:
    """P = exp(log P), renormalized so sum P = 1 exactly (float16 storage rounds log P)."""
    import numpy as np

    p = np.exp(logp)
    p /= p.sum(axis=1, keepdims=True)
    return p


def entropy_term(p: Any, logp: Any) -> Any:
    """sum_v P(v) log P(v) per row: the reference's half of the KLD."""
    import numpy as np

    return np.einsum("ij,ij->i", p, logp, dtype=np.float64)


@dataclass
class PositionStats:
    """Per-position values accumulated over a scoring pass."""

    nll: list[float]
    kld: list[float]
    same_top: list[bool]
    ref_nll: list[float]


def score_block(logits: Any, targets: Any, logp: Any | None, ref_entropy_term: Any | None = None,
                ref_top: Any | None = None) -> tuple[Any, Any | None, Any | None, Any | None]:
    """(nll_Q, kld, same_top, nll_P) for one block of positions from raw logits x; the last three
    are None without a reference. With lse = log sum_v exp(x_v), log Q = x - lse, so
        nll_Q = lse - x[target],   KLD = sum P log P - (sum P x - lse)   (sum P = 1),
    which never materializes log Q. ``ref_entropy_term`` (sum P log P) and ``ref_top`` (argmax P)
    may come precomputed from the reference pass."""
    import numpy as np

    rows = np.arange(len(targets))
    lse = logsumexp_rows(logits)
    nll_q = lse - logits[rows, targets].astype(np.float64)
    if logp is None:
        return nll_q, None, None, None
    p = reference_probs(logp)
    if ref_entropy_term is None:
        ref_entropy_term = entropy_term(p, logp)
    cross = np.einsum("ij,ij->i", p, logits, dtype=np.float64)
    kld = np.maximum(ref_entropy_term - (cross - lse), 0.0)
    top = ref_top if ref_top is not None else logp.argmax(axis=1)
    same = top == logits.argmax(axis=1)
    nll_p = -logp[rows, targets].astype(np.float64)
    return nll_q, kld, same, nll_p


def summarize_quality(s: PositionStats) -> dict[str, Any]:
    from bench.stats import percentile

    n = len(s.nll)
    mean_nll = sum(s.nll) / n
    sd_nll = math.sqrt(sum((x - mean_nll) ** 2 for x in s.nll) / (n - 1)) if n > 1 else 0.0
    out: dict[str, Any] = {
        "positions": n,
        "perplexity": math.exp(mean_nll),
        # llama-perplexity's uncertainty: PPL x standard error of the mean NLL
        "perplexity_se": math.exp(mean_nll) * sd_nll / math.sqrt(n),
        "mean_nll": mean_nll,
    }
    if s.kld:
        kld_mean = sum(s.kld) / n
        kld_sd = math.sqrt(sum((x - kld_mean) ** 2 for x in s.kld) / (n - 1)) if n > 1 else 0.0
        diff = [q - p for q, p in zip(s.nll, s.ref_nll, strict=True)]
        d_mean = sum(diff) / n
        d_sd = math.sqrt(sum((x - d_mean) ** 2 for x in diff) / (n - 1)) if n > 1 else 0.0
        out.update({
            "kld": {"mean": kld_mean, "se": kld_sd / math.sqrt(n), "median": percentile(s.kld, 50),
                    "p99": percentile(s.kld, 99), "max": max(s.kld)},
            "same_top_token": sum(s.same_top) / n,
            "same_top_token_se": math.sqrt((sum(s.same_top) / n) * (1 - sum(s.same_top) / n) / n),
            "ln_ppl_ratio": d_mean, "ln_ppl_ratio_se": d_sd / math.sqrt(n),
            "reference_perplexity": math.exp(sum(s.ref_nll) / n),
        })
    return out


class ReferenceCache:
    """Reference log-probabilities on disk: ``NAME.npy`` (positions x vocab, float16) + ``NAME.json``."""

    def __init__(self, path: Path) -> None:
        self.npy, self.meta_path = path.with_suffix(".npy"), path.with_suffix(".json")

    def exists(self) -> bool:
        return self.meta_path.exists() and self.npy.exists()

    def meta(self) -> dict[str, Any]:
        return json.loads(self.meta_path.read_text())

    def size_bytes(self) -> int:
        """Its size on disk: scored positions x vocabulary x 2 bytes, plus the JSON beside it."""
        return sum(p.stat().st_size for p in (self.npy, self.meta_path) if p.exists())

    def reader(self) -> RowReader:
        return RowReader(self.npy)


class RowReader:
    """Rows of a 2-D float16 .npy read on demand with plain file reads: a memory map would leave
    every page it touched resident, so RSS would grow with the corpus."""

    def __init__(self, path: Path) -> None:
        import numpy as np

        self.fh = path.open("rb")
        version = np.lib.format.read_magic(self.fh)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        self.shape, _, dtype = read_header(self.fh)
        self.dtype = np.dtype(dtype)
        self.offset = self.fh.tell()
        self.row_bytes = self.shape[1] * self.dtype.itemsize

    def rows(self, start: int, count: int) -> Any:
        import numpy as np

        self.fh.seek(self.offset + start * self.row_bytes)
        data = np.fromfile(self.fh, dtype=self.dtype, count=count * self.shape[1])
        return data.reshape(count, self.shape[1])

    def close(self) -> None:
        self.fh.close()


class CacheWriter:
    """The reference pass's log P, appended block by block to ``NAME.part.npy`` with plain writes,
    then renamed into place with its JSON. A memory map would keep every page written resident (RSS
    growing with the corpus, not one window) and on a full disk would kill the pass with SIGBUS, so
    the space is checked before the first byte."""

    def __init__(self, cache: ReferenceCache, shape: tuple[int, int]) -> None:
        import shutil

        import numpy as np

        self.cache = cache
        self.tmp = cache.npy.with_name(cache.npy.stem + ".part.npy")
        self.tmp.parent.mkdir(parents=True, exist_ok=True)
        needed = shape[0] * shape[1] * np.dtype(np.float16).itemsize
        free = shutil.disk_usage(self.tmp.parent).free
        if needed > free:
            raise BenchError(f"the reference cache needs {needed / 2**30:.2f} GiB in {self.tmp.parent} and "
                             f"{free / 2**30:.2f} GiB are free: free some space, set BENCH_CACHE, "
                             "or score fewer chunks")
        self.fh = self.tmp.open("wb")
        np.lib.format.write_array_header_2_0(self.fh, {"descr": np.dtype(np.float16).str, "fortran_order": False,
                                                       "shape": shape})
        self.entropy_terms: list[float] = []
        self.tops: list[int] = []

    def add(self, logits: Any) -> None:
        """Store log P of a block, and its entropy term and argmax as stored (float16)."""
        import numpy as np

        stored16 = log_softmax(logits).astype(np.float16)
        self.fh.write(stored16.tobytes())
        stored = stored16.astype(np.float32)
        self.entropy_terms.extend(entropy_term(reference_probs(stored), stored).tolist())
        self.tops.extend(stored.argmax(axis=1).tolist())

    def commit(self, meta: dict[str, Any]) -> None:
        self.fh.close()
        os.replace(self.tmp, self.cache.npy)
        self.cache.meta_path.write_text(json.dumps({**meta, "entropy_term": self.entropy_terms, "top": self.tops}))

    def abort(self) -> None:
        """A failed or interrupted pass leaves no half-written cache."""
        self.fh.close()
        self.tmp.unlink(missing_ok=True)


def open_reference(reference: ReferenceCache, vocab: int, positions: int) -> tuple[RowReader, Any, Any]:
    """The reference's rows, entropy terms and argmaxes, after checking they fit this pass."""
    import numpy as np

    meta = reference.meta()
    if meta["vocab_size"] != vocab:
        raise BenchError(f"vocabulary sizes differ (reference {meta['vocab_size']}, variant {vocab}): "
                         "divergence is undefined")
    reader = reference.reader()
    if reader.shape[0] != positions:
        reader.close()
        raise BenchError("the reference cache does not match this corpus and window")
    return reader, np.asarray(meta["entropy_term"]), np.asarray(meta["top"])


def run_scoring(backend: Any, tokens: list[int], n_ctx: int, chunks: int, reference: ReferenceCache | None,
                write: ReferenceCache | None) -> dict[str, Any]:
    """One pass over ``chunks`` windows. With ``reference``: KLD and friends against it. With
    ``write``: store this pass's log-probs as a reference for later passes."""
    import numpy as np

    first = n_ctx // 2
    per_window = n_ctx - first - 1
    n_chunks = min(chunks, len(tokens) // n_ctx)
    if n_chunks < 1:
        raise BenchError(f"the corpus has {len(tokens)} tokens, fewer than one window of {n_ctx}")
    tokens = tokens[: n_chunks * n_ctx]
    vocab = backend.vocab_size()
    ref = ref_entropy = ref_top = None
    if reference is not None:
        ref, ref_entropy, ref_top = open_reference(reference, vocab, n_chunks * per_window)
    out = CacheWriter(write, (n_chunks * per_window, vocab)) if write is not None else None
    stats = PositionStats([], [], [], [])
    pos = 0
    t0 = time.perf_counter()
    try:
        for targets, logits in backend.score_windows(tokens, n_ctx, first):
            for b in range(0, len(targets), BLOCK):
                x = logits[b:b + BLOCK]
                tgt = targets[b:b + BLOCK]
                k = len(tgt)
                if ref is not None:
                    logp = ref.rows(pos, k).astype(np.float32)
                    nll, kld, same, nll_p = score_block(x, tgt, logp, ref_entropy[pos:pos + k], ref_top[pos:pos + k])
                    stats.kld.extend(kld.tolist())
                    stats.same_top.extend(same.tolist())
                    stats.ref_nll.extend(nll_p.tolist())
                else:
                    nll, _, _, _ = score_block(x, tgt, None)
                stats.nll.extend(nll.tolist())
                if out is not None:  # the reference pass stores log P, its entropy term and argmax
                    out.add(x)
                pos += k
    except BaseException:
        if out is not None:
            out.abort()
        raise
    finally:
        if ref is not None:
            ref.close()
    seconds = time.perf_counter() - t0
    if out is not None:
        out.commit({"vocab_size": vocab, "n_ctx": n_ctx, "chunks": n_chunks, "positions": pos, "tokens": list(tokens)})
    result = summarize_quality(stats)
    result.update({"n_ctx": n_ctx, "chunks": n_chunks, "first_scored_position": first,
                   "tokens_evaluated": n_chunks * n_ctx, "seconds": seconds,
                   "tokens_evaluated_per_s": n_chunks * n_ctx / seconds, "positions_scored_per_s": pos / seconds})
    return result
