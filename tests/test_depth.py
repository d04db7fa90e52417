"""Long context: the KV cache filled to a depth before the timed request (llama.cpp and transformers),
the KV cache's types as backend options, the memory prediction at depth, the largest context that
fits a budget, and the verdict's context criterion. Speed and memory are compared as relations
within one run, never as absolute figures."""

from __future__ import annotations

import json

import pytest
from conftest import assert_clean_error, read_jsonl, run_bench

from bench.backends.llamacpp.options import kv_settings
from bench.errors import BenchError
from bench.hardware.tiers import (
    MiB,
    kv_bytes_per_token,
    kv_bytes_read_per_token,
    kv_cache_bytes,
    largest_context_that_fits,
    predict_memory,
)

P, N, DEPTH = 64, 24, 2048


# -- arithmetic on the embedded model's real GGUF header (no model run) ------------------------
@pytest.mark.model
def test_kv_bytes_per_token_by_cache_type(embedded_model):
    g = embedded_model.gguf  # SmolLM2-135M: 30 layers, 3 KV heads of 64 dims
    assert kv_bytes_per_token(g) == 30 * 3 * (64 + 64) * 2
    assert kv_bytes_per_token(g, "q8_0", "q8_0") == 30 * 2 * (3 * 64 // 32) * 34  # 34 bytes per 32 values
    assert kv_bytes_per_token(g, "q4_0", "q4_0") == 30 * 2 * (3 * 64 // 32) * 18
    assert kv_bytes_per_token(g, "q8_0", "f16") == 30 * ((3 * 64 // 32) * 34 + 3 * 64 * 2)
    assert kv_cache_bytes(g, 1000, type_k="q8_0", type_v="q8_0") == 1024 * kv_bytes_per_token(g, "q8_0", "q8_0")


@pytest.mark.model
def test_kv_bytes_read_per_token_grows_linearly_with_depth(embedded_model):
    g = embedded_model.gguf
    assert kv_bytes_read_per_token(g, 0) == 0
    assert kv_bytes_read_per_token(g, 8192) == 2 * kv_bytes_read_per_token(g, 4096) == 8192 * kv_bytes_per_token(g)
    assert kv_bytes_read_per_token(g, 4096, "q8_0", "q8_0") < kv_bytes_read_per_token(g, 4096)


@pytest.mark.model
def test_predicted_memory_grows_with_depth_and_shrinks_with_a_quantized_cache(embedded_model):
    g, size = embedded_model.gguf, embedded_model.size_bytes
    at = {d: predict_memory(g, size, d + P + N, P, depth=d) for d in (0, 2048, 8000)}
    assert at[0].total_bytes < at[2048].total_bytes < at[8000].total_bytes
    assert at[0].compute_bytes < at[2048].compute_bytes  # attention scores over the filled cache
    f16 = predict_memory(g, size, 4096, P, depth=4000, flash_attn=True)
    q8 = predict_memory(g, size, 4096, P, depth=4000, type_k="q8_0", type_v="q8_0", flash_attn=True)
    assert q8.kv_cache_bytes < f16.kv_cache_bytes and q8.total_bytes < f16.total_bytes
    # at depth 0 the formula is the one it always was (64 to 8192 tokens of context, checked in test_tiers)
    assert predict_memory(g, size, 4096, 64).total_bytes == predict_memory(g, size, 4096, 64, depth=0).total_bytes


@pytest.mark.model
def test_largest_context_that_fits_a_budget(embedded_model):
    g, size = embedded_model.gguf, embedded_model.size_bytes
    small, large = 260 * MiB, 400 * MiB
    n_small, n_large = largest_context_that_fits(g, size, small), largest_context_that_fits(g, size, large)
    assert 0 < n_small < n_large <= g["context_length"]
    assert n_small % 256 == 0
    # the answer is the edge: it fits, 256 more does not
    assert predict_memory(g, size, n_small, 128, depth=n_small - 128).total_bytes <= small
    assert predict_memory(g, size, n_small + 256, 128, depth=n_small + 128).total_bytes > small
    # a smaller cache type fits more context in the same RAM
    assert largest_context_that_fits(g, size, small, type_k="q8_0", type_v="q8_0", flash_attn=True) > \
        largest_context_that_fits(g, size, small, flash_attn=True)
    assert largest_context_that_fits(g, size, 64 * MiB) == 0  # not even the weights
    assert largest_context_that_fits(g, size, 64 * 2**30) == g["context_length"]  # capped by the model


@pytest.mark.model
def test_a_separate_token_embd_is_never_counted_as_repacked(embedded_model):
    """llama.cpp repacks Q4_0/Q4_K weights for the CPU, never token_embd (get_rows reads it); a tied
    output head is a duplicate loaded as the output layer, and that copy is repacked."""
    assert embedded_model.gguf["token_embd_type"] == "Q8_0"  # read from the header (its one Q8_0 tensor)
    g = {"block_count": 2, "embedding_length": 64, "head_count": 4, "head_count_kv": 2, "feed_forward_length": 128,
         "token_embd_bytes": 1000, "token_embd_type": "Q4_K", "tensor_bytes": {"Q4_K": 5000, "Q6_K": 800}}
    q4k = frozenset({"Q4_K"})
    untied = predict_memory({**g, "has_output_tensor": True}, 6000, 256, 16, repacked_types=q4k)
    tied = predict_memory({**g, "has_output_tensor": False}, 6000, 256, 16, repacked_types=q4k)
    assert untied.repack_bytes == 4000 and tied.repack_bytes == 5000


@pytest.mark.fast
def test_kv_options_are_checked_before_anything_loads():
    assert kv_settings({}).describe() == {"type_k": "f16", "type_v": "f16", "flash_attn": False}
    assert kv_settings({"type_k": "q8_0", "type_v": "q8_0", "flash_attn": "on"}).type_v == "q8_0"
    assert kv_settings({"type_k": "q4_0"}).type_k == "q4_0"  # a quantized K needs no flash attention
    with pytest.raises(BenchError, match="needs flash_attn=on"):
        kv_settings({"type_v": "q8_0"})
    with pytest.raises(BenchError, match="type_k must be one of"):
        kv_settings({"type_k": "q3_k"})
    with pytest.raises(BenchError, match="flash_attn must be on or off"):
        kv_settings({"flash_attn": "maybe"})


@pytest.mark.model
def test_bad_depth_requests_are_one_line_errors(embedded_model):
    assert_clean_error(run_bench("run", "--depth", "-5"), "--depth", "0 or more")
    # SmolLM2 was trained on 8192 tokens: a depth that leaves no room for the request is refused
    assert_clean_error(run_bench("run", "--depth", "8150", "--prompt-tokens", "64", "--gen-tokens", "8"),
                       "depth + prompt + generated tokens (8150 + 64 + 8)", "context length 8192")
    assert_clean_error(run_bench("run", "--depth", "64", "--ctx", "100"), "--ctx 100 is smaller than")
    assert_clean_error(run_bench("run", "--depth", "64", "--backend", "onnxruntime", "-m", "smollm2-135m:hf-f32"),
                       "cannot fill its KV cache to a depth")
    assert_clean_error(run_bench("run", "--backend-opt", "type_v=q4_0"), "needs flash_attn=on")


# -- llama.cpp at depth, measured ------------------------------------------------------------------
@pytest.fixture(scope="module")
def depth_rows(tmp_path_factory, embedded_model):
    """One run at depth 0 and depth 2048 on this host as it is."""
    out = tmp_path_factory.mktemp("depth") / "r.jsonl"
    proc = run_bench("run", "--depth", f"0,{DEPTH}", "--prompt-tokens", str(P), "--gen-tokens", str(N), "-r", "3",
                     "--no-progress", "-o", str(out), timeout=900)
    assert proc.returncode == 0, proc.stderr
    rows = read_jsonl(out)
    assert [r["config"]["depth"] for r in rows] == [0, DEPTH]
    return out, rows


@pytest.mark.model
def test_decode_at_depth_is_slower_and_the_fill_is_never_timed(depth_rows):
    _, (shallow, deep) = depth_rows
    assert deep["config"]["n_ctx"] == DEPTH + P + N and shallow["config"]["n_ctx"] == P + N
    assert deep["summary"]["decode_tps"]["mean"] < shallow["summary"]["decode_tps"]["mean"]  # same run
    fill = deep["summary"]["depth_fill"]
    assert fill["tokens"] == DEPTH and fill["seconds"] > 0 and "trimmed back to the fill" in fill["method"]
    assert "depth_fill" not in shallow["summary"]
    for s in deep["samples"] + deep["warmup_samples"]:
        # llama.cpp's own counter for the request: the prompt, never the fill
        assert s["backend_counters"]["prefill_compute_tokens"] == P and s["prompt_tokens"] == P
        # a request's TTFT prefills P tokens; the fill took DEPTH: 32x the tokens, more at depth
        assert s["ttft_s"] < fill["seconds"] / 4
    # every request starts from the same filled cache (trimmed back after the one before): same tokens
    assert len({tuple(s["token_ids"]) for s in deep["samples"] + deep["warmup_samples"]}) == 1


@pytest.mark.model
def test_memory_prediction_at_depth_is_within_10_percent(depth_rows):
    _, rows = depth_rows
    for r in rows:
        assert abs(r["tier"]["prediction_error"]) < 0.10, (r["config"]["depth"], r["tier"])
        assert r["tier"]["predicted_memory"]["depth"] == r["config"]["depth"]
    assert rows[1]["memory"]["peak_rss_bytes"] > rows[0]["memory"]["peak_rss_bytes"]
    assert rows[1]["tier"]["predicted_memory"]["kv_cache_bytes"] > rows[0]["tier"]["predicted_memory"]["kv_cache_bytes"]


@pytest.mark.model
def test_a_q8_0_kv_cache_uses_less_memory_than_f16_at_the_same_depth(tmp_path, embedded_model):
    """Both with flash attention (a quantized V cache needs it), so only the cache type differs."""
    peaks, predicted = {}, {}
    for kv in ("f16", "q8_0"):
        out = tmp_path / f"{kv}.jsonl"
        proc = run_bench("run", "--depth", str(DEPTH), "--prompt-tokens", str(P), "--gen-tokens", "8", "-r", "3",
                         "--backend-opt", f"type_k={kv}", "--backend-opt", f"type_v={kv}", "--backend-opt",
                         "flash_attn=on", "--no-progress", "-o", str(out), timeout=900)
        assert proc.returncode == 0, proc.stderr
        (row,) = read_jsonl(out)
        assert row["environment"]["backend"]["kv_cache"] == {"type_k": kv, "type_v": kv, "flash_attn": True}
        peaks[kv], predicted[kv] = row["memory"]["peak_rss_bytes"], row["tier"]["predicted_memory"]
        assert abs(row["tier"]["prediction_error"]) < 0.10, row["tier"]
    saved = predicted["f16"]["kv_cache_bytes"] - predicted["q8_0"]["kv_cache_bytes"]
    assert peaks["q8_0"] < peaks["f16"]
    assert peaks["f16"] - peaks["q8_0"] > saved / 2  # the measured saving is the cache's, not noise


@pytest.mark.model
def test_a_quantized_kv_cache_costs_quality_in_the_quality_pass(tmp_path, embedded_model):
    """The quality pass loads the cell's KV settings; the reference keeps an f16 cache: a q4_0 cache's
    cost shows as a larger KLD than the same variant's with an f16 cache, in the same run."""
    kld = {}
    for kv in ("f16", "q4_0"):
        out = tmp_path / f"{kv}.jsonl"
        proc = run_bench("run", "-m", "smollm2-135m", "--reference", "f16", "--quality", "--quality-ctx", "256",
                         "--quality-chunks", "2", "--prompt-tokens", "16", "--gen-tokens", "4", "-r", "3",
                         "--backend-opt", f"type_k={kv}", "--backend-opt", f"type_v={kv}", "--backend-opt",
                         "flash_attn=on", "--no-progress", "-o", str(out), timeout=900)
        assert proc.returncode == 0, proc.stderr
        (row,) = read_jsonl(out)
        q = row["quality"]
        assert q["status"] == "ok", q
        assert q["load"]["options"]["type_k"] == kv  # the variant's pass honours the cell's cache
        assert "type_k" not in q["reference"]["load"]["options"]  # the reference's is llama.cpp's f16
        kld[kv] = q["kld"]["mean"]
    assert kld["q4_0"] > kld["f16"]


# -- transformers at depth -----------------------------------------------------------------------
@pytest.mark.model
@pytest.mark.parametrize("cache", ["dynamic", "static"])
def test_transformers_fills_to_a_depth_and_prefills_only_the_prompt(tmp_path, embedded_model, cache):
    out = tmp_path / "hf.jsonl"
    proc = run_bench("run", "--backend", "transformers", "-m", "smollm2-135m:hf-f32", "--depth", "0,1024",
                     "--prompt-tokens", "32", "--gen-tokens", "12", "-r", "3", "--backend-opt",
                     f"cache_implementation={cache}", "--no-progress", "-o", str(out), timeout=900)
    assert proc.returncode == 0, proc.stderr
    shallow, deep = read_jsonl(out)
    assert deep["environment"]["backend"]["cache_implementation"] == cache
    fill = deep["summary"]["depth_fill"]
    assert fill["tokens"] == 1024 and ("DynamicCache" if cache == "dynamic" else "StaticCache") in fill["method"]
    samples = deep["samples"] + deep["warmup_samples"]
    assert all(s["ttft_s"] < fill["seconds"] / 4 for s in samples)  # 32 tokens prefilled, not 1056
    # the cache is trimmed back to the fill before each request: every request answers the same
    assert len({tuple(s["token_ids"]) for s in samples}) == 1
    assert all(len(s["token_ids"]) == 12 for s in samples)
    assert deep["summary"]["ttft_s"]["mean"] > 0 and shallow["summary"]["decode_tps"]["mean"] > 0


# -- the verdict's context criterion ----------------------------------------------------------
def _claims(tmp_path, criteria: str):
    path = tmp_path / "claims.yaml"
    path.write_text("schema_version: 1\nname: t\ninexpensive: {tiers: null}\ncriteria:\n  fits: true\n" + criteria)
    return path


def _verdict_cells(tmp_path, results, claims) -> dict[str, str]:
    """SmolLM2's verdict from ``bench verdict --json``: criterion -> "OUTCOME: value" (the value in
    full), and "verdict" -> the outcome."""
    proc = run_bench("verdict", str(results), "--claims", str(claims), "--json")
    assert proc.returncode == 0, proc.stderr
    (tier,) = [t for t in json.loads(proc.stdout)["tiers"] if t["model"] == "smollm2-135m"]
    mark = {"pass": "pass", "fail": "FAIL", "unmeasured": "unmeasured"}
    cells = {c["criterion"]: f"{mark[c['outcome']]}: {c['value']}" for c in tier["checks"]}
    return {**cells, "verdict": f"**{mark[tier['outcome']]}**"}


@pytest.mark.model
def test_the_verdict_judges_a_context_criterion_from_the_rows_at_depth(tmp_path, depth_rows):
    out, (shallow, deep) = depth_rows
    low, high = deep["summary"]["decode_tps"]["mean"], shallow["summary"]["decode_tps"]["mean"]
    bound = (low * high) ** 0.5  # between the two decode rates of the same run
    # the claim's workload (depth 0) passes the bound; with DEPTH + P + N tokens of context it does not
    cells = _verdict_cells(tmp_path, out, _claims(tmp_path, f"  decode_tps_min: {bound:.4f}\n"
                                                            f"  context_tokens_min: {DEPTH + P + N}\n"))
    assert cells["decode tok/s"].startswith("pass") and cells["context"].startswith("FAIL")
    assert f"measured at depth {DEPTH}" in cells["context"] and "PREDICTION" in cells["context"]
    # a bound both meet: the context criterion passes too
    cells = _verdict_cells(tmp_path, out, _claims(tmp_path, f"  decode_tps_min: {low / 2:.4f}\n"
                                                            f"  context_tokens_min: {DEPTH}\n"))
    assert cells["context"].startswith("pass") and cells["verdict"] == "**pass**"
    # more context than any row measured: unmeasured, with the command that would measure it
    cells = _verdict_cells(tmp_path, out, _claims(tmp_path, "  context_tokens_min: 6000\n"))
    assert cells["context"].startswith("unmeasured") and "--depth 5912" in cells["context"]
    assert cells["verdict"] == "**unmeasured**"


@pytest.mark.model
def test_the_context_criterion_fails_where_the_prediction_says_it_cannot_fit(tmp_path, embedded_model):
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "small-300m.yaml").write_text(
        "schema_version: 1\nid: small-300m\nname: test tier with 300 MB\ndevice: cpu\n"
        "capacity: {threads: 2, ram_gb: 0.29, reserve_ram_gb: 0}\n")
    out = tmp_path / "r.jsonl"
    proc = run_bench("--profiles-dir", str(profiles), "run", "-p", "small-300m", "--prompt-tokens", "16",
                     "--gen-tokens", "8", "--no-progress", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    (row,) = read_jsonl(out)
    g = row["model"]["gguf"]
    fit = largest_context_that_fits(g, row["model"]["size_bytes"], row["tier"]["ram_budget_bytes"], 16)
    assert 0 < fit < 8000
    cells = _verdict_cells(tmp_path, out, _claims(tmp_path, "  context_tokens_min: 8000\n"))
    assert cells["context"].startswith("FAIL") and f"largest context predicted to fit {fit} tokens" in cells["context"]
    assert cells["fits"].startswith("pass")  # the workload itself fits; 8000 tokens of context would not


@pytest.mark.model
def test_predict_names_the_largest_context_that_fits_each_tier(tmp_path, embedded_model):
    """bench predict: the longest context predicted to fit is the fit prediction's own answer, below
    the model's trained context on a tier too small for it, and the trained context on a big one."""
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    for pid, gb in (("small-300m", 0.29), ("big-8g", 8)):
        (profiles / f"{pid}.yaml").write_text(
            f"schema_version: 1\nid: {pid}\nname: test tier\ndevice: cpu\n"
            f"capacity: {{threads: 2, ram_gb: {gb}, reserve_ram_gb: 0}}\n")
    proc = run_bench("--profiles-dir", str(profiles), "predict", "smollm2-135m", "-p", "small-300m", "-p", "big-8g",
                     "--json")
    assert proc.returncode == 0, proc.stderr
    got = {t["tier"]: t["fit"]["largest_context"] for t in json.loads(proc.stdout)["tiers"]}
    trained = 8192  # SmolLM2-135M's context_length (models.yaml, its GGUF header)
    assert 0 < got["small-300m"] < trained and got["big-8g"] == trained
