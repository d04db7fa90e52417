"""Quality on the real ladder: relations that must hold, formulas on known numbers, bad input."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_clean_error, read_jsonl, require_or_skip, run_bench

from bench.quality.scoring import PositionStats, log_softmax, score_block, summarize_quality

LADDER = ["f16", "q8_0-derived", "q4_k_m-derived", "q2_k-derived"]


@pytest.fixture(scope="module")
def ladder_rows(tmp_path_factory, embedded_model):
    out = tmp_path_factory.mktemp("quality") / "r.jsonl"
    args = ["run", "--no-progress", "--prompt-tokens", "8", "--gen-tokens", "4", "--quality", "--reference", "f16",
            "--quality-ctx", "256", "--quality-chunks", "4", "-o", str(out)]
    for v in LADDER:
        args += ["--model", f"smollm2-135m:{v}"]
    proc = run_bench(*args)
    assert proc.returncode == 0, proc.stderr
    rows = {r["config"]["variant_id"]: r for r in read_jsonl(out)}
    assert all(rows[v]["quality"]["status"] == "ok" for v in LADDER), {v: rows[v]["quality"] for v in LADDER}
    return {v: rows[v]["quality"] for v in LADDER}


@pytest.mark.slow
def test_reference_against_itself_is_zero_within_storage_error(ladder_rows):
    q = ladder_rows["f16"]
    assert q["kld"]["mean"] < 1e-4  # the reference's log-probs are stored as float16
    assert q["same_top_token"] > 0.999
    assert abs(q["ln_ppl_ratio"]) < 1e-3
    assert q["perplexity"] == pytest.approx(q["reference_perplexity"], rel=1e-3)


@pytest.mark.slow
def test_ladder_order(ladder_rows):
    kld = {v: ladder_rows[v]["kld"]["mean"] for v in LADDER}
    same = {v: ladder_rows[v]["same_top_token"] for v in LADDER}
    assert kld["f16"] < kld["q8_0-derived"] < kld["q4_k_m-derived"] < kld["q2_k-derived"]
    assert same["q8_0-derived"] > same["q4_k_m-derived"] > same["q2_k-derived"]
    for v in LADDER:
        q = ladder_rows[v]
        assert math.isfinite(q["perplexity"]) and q["perplexity"] > 1
        assert q["kld"]["median"] <= q["kld"]["p99"] <= q["kld"]["max"]
        assert q["positions"] == 4 * (256 - 128 - 1)  # llama-perplexity's windows: second half scored


@pytest.mark.slow
def test_quality_row_names_its_corpus_and_reference(ladder_rows):
    q = ladder_rows["q8_0-derived"]
    assert q["corpus"]["name"] == "alice29"
    assert q["corpus"]["sha256"] == "4cbce86540bcef439f901c89de486d295aa3848e8c4cbc911561054479e73960"
    assert q["reference"]["variant_id"] == "f16"
    assert q["memory"]["peak_rss_bytes"] > 0 and q["tokens_evaluated_per_s"] > 0


@pytest.mark.model
def test_quality_memory_is_one_window_not_the_corpus(tmp_path, embedded_model):
    """Six times the corpus, same peak RSS: the reference pass writes its log-probabilities and a
    variant's pass reads them one block at a time with plain file I/O (a memory map would keep
    every page it wrote resident, growing RSS by the cache's size). Measured in the same run:
    2 windows against 12, on a corpus of its own so that both reference passes run."""
    import uuid

    from bench.quality.corpus import load_corpus

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(load_corpus("alice29").path.read_text(encoding="utf-8") + f"\n{uuid.uuid4()}\n")
    rows = {}
    try:
        for chunks in (2, 12):
            out = tmp_path / f"r{chunks}.jsonl"
            proc = run_bench("run", "--no-progress", "-m", "smollm2-135m:q8_0-derived", "--prompt-tokens", "8",
                             "--gen-tokens", "4", "--quality", "--reference", "f16", "--corpus", str(corpus),
                             "--quality-ctx", "256", "--quality-chunks", str(chunks), "-o", str(out))
            assert proc.returncode == 0, proc.stderr
            (row,) = read_jsonl(out)
            rows[chunks] = row["quality"]
            assert rows[chunks]["status"] == "ok", rows[chunks]
    finally:  # the two caches are this test's alone: leave none behind
        for q in rows.values():
            npy = Path(q["reference"]["cache"])
            for p in (npy, npy.with_suffix(".json")):
                p.unlink(missing_ok=True)
    small, large = rows[2], rows[12]
    grown = large["reference_pass"]["cache_bytes"] - small["reference_pass"]["cache_bytes"]
    assert grown >= 10 * 127 * 49152 * 2  # ten more windows of 127 scored positions x vocabulary x float16
    ref_growth = (large["reference_pass"]["memory"]["peak_rss_bytes"]
                  - small["reference_pass"]["memory"]["peak_rss_bytes"])
    variant_growth = large["memory"]["peak_rss_bytes"] - small["memory"]["peak_rss_bytes"]
    assert ref_growth < grown / 4, (ref_growth, grown)
    assert variant_growth < grown / 4, (variant_growth, grown)


@pytest.mark.fast
def test_formulas_on_known_distributions():
    # two positions, vocabulary of 3
    ref_logits = np.array([[2.0, 1.0, 0.0], [0.0, 0.0, 3.0]], dtype=np.float32)
    var_logits = np.array([[1.0, 2.0, 0.0], [0.0, 0.0, 3.0]], dtype=np.float32)
    targets = np.array([0, 2])
    logp = log_softmax(ref_logits)
    nll, kld, same, nll_p = score_block(var_logits, targets, logp)
    logq = log_softmax(var_logits)
    p = np.exp(logp)
    assert kld == pytest.approx((p * (logp - logq)).sum(axis=1), abs=1e-6)
    assert kld[1] == pytest.approx(0, abs=1e-6)  # float32 logits
    assert nll == pytest.approx([-logq[0, 0], -logq[1, 2]], abs=1e-6)
    assert same.tolist() == [False, True]
    s = summarize_quality(PositionStats(nll.tolist(), kld.tolist(), same.tolist(), nll_p.tolist()))
    assert s["perplexity"] == pytest.approx(math.exp(nll.mean()))
    assert s["ln_ppl_ratio"] == pytest.approx((nll - nll_p).mean())
    assert s["same_top_token"] == 0.5


@pytest.mark.model
def test_too_short_corpus_is_refused(tmp_path, embedded_model):
    short = tmp_path / "short.txt"
    short.write_text("Only a few words here.")
    out = tmp_path / "r.jsonl"
    proc = run_bench("run", "--no-progress", "--prompt-tokens", "8", "--gen-tokens", "4", "--quality",
                     "--corpus", str(short), "-o", str(out))
    assert proc.returncode == 1
    (row,) = read_jsonl(out)
    assert row["status"] == "ok" and row["quality"]["status"] == "failed"
    assert "fewer than one window" in row["quality"]["reason"]


@pytest.mark.model
@pytest.mark.parametrize("args,needle", [
    (["--corpus", "no-such-corpus"], "not a known corpus"),
    (["--quality-ctx", "4"], "--quality-ctx must be at least 8"),
])
def test_bad_quality_input(tmp_path, embedded_model, args, needle):
    proc = run_bench("run", "--quality", *args, "-o", str(tmp_path / "r.jsonl"))
    assert_clean_error(proc, needle)


@pytest.mark.model
def test_empty_corpus_is_refused(tmp_path, embedded_model):
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    assert_clean_error(run_bench("run", "--quality", "--corpus", str(empty), "-o", str(tmp_path / "r.jsonl")), "empty")


@pytest.mark.fast
def test_different_vocabulary_is_refused(tmp_path):
    from bench.errors import BenchError
    from bench.quality.scoring import ReferenceCache, run_scoring

    cache = ReferenceCache(tmp_path / "ref")
    cache.meta_path.write_text('{"vocab_size": 1000, "tokens": [1, 2, 3]}')
    cache.npy.write_bytes(b"")

    class Backend:
        def vocab_size(self):
            return 49152

    with pytest.raises(BenchError, match="divergence is undefined"):
        run_scoring(Backend(), list(range(64)), 16, 2, cache, None)


@pytest.mark.fast
def test_a_reference_cache_larger_than_the_free_disk_is_refused_before_writing(tmp_path):
    """Checked up front: written through a memory map, a full disk would have killed the pass with SIGBUS."""
    import shutil

    from bench.errors import BenchError
    from bench.quality.scoring import CacheWriter, ReferenceCache

    cache = ReferenceCache(tmp_path / "ref")
    positions = 2 * shutil.disk_usage(tmp_path).free // (151936 * 2)  # twice what is free: robust to other writers
    with pytest.raises(BenchError, match="the reference cache needs .* GiB .* free"):
        CacheWriter(cache, (positions, 151936))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.model
def test_hub_corpus_unreachable_is_a_clean_error(tmp_path, embedded_model):
    proc = run_bench("run", "--quality", "--corpus", "hf:someone/texts/test.txt", "-o", str(tmp_path / "r.jsonl"),
                     env={"HF_ENDPOINT": "http://127.0.0.1:9", "BENCH_CACHE": str(tmp_path / "c")})
    assert_clean_error(proc, "hub is unreachable")


@pytest.mark.slow
def test_a_gguf_variant_is_compared_with_a_hugging_face_reference(tmp_path, embedded_model):
    """A GGUF variant whose reference is a Hugging Face folder (as a shipped Q4_K_M's reference is
    its developer's BF16 release): the reference is scored by transformers, the variant by
    llama.cpp, both on the reference's token ids. The embedded model's F16 GGUF and its F32 folder
    hold the same weights at two precisions, so their divergence is near zero; a 4-bit requantized
    GGUF diverges far more from the same reference, measured in the same run."""
    require_or_skip("torch", "the hf extra is not installed")
    out = tmp_path / "r.jsonl"
    proc = run_bench("run", "--no-progress", "-m", "smollm2-135m:f16", "-m", "smollm2-135m:q4_0-derived",
                     "--prompt-tokens", "8", "--gen-tokens", "4", "--quality", "--quality-ctx", "128",
                     "--quality-chunks", "2", "--reference", "hf-f32", "-o", str(out), timeout=1200)
    assert proc.returncode == 0, proc.stderr
    rows = {r["config"]["variant_id"]: r["quality"] for r in read_jsonl(out)}
    f16, q4 = rows["f16"], rows["q4_0-derived"]
    for q in (f16, q4):
        assert q["status"] == "ok", q
        assert q["reference"]["variant_id"] == "hf-f32" and q["reference"]["load"]["backend"] == "transformers"
        assert q["load"]["backend"] == "llama.cpp" and "tokenization" in q
    assert f16["kld"]["mean"] < 0.01 and f16["same_top_token"] > 0.95
    assert q4["kld"]["mean"] > 5 * f16["kld"]["mean"]
