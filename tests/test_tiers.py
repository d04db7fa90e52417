"""Tier emulation on this host: caps visible in the child, fit prediction checked against measured
peaks, RAM caps that end a run, cost and roofline arithmetic, and resumable matrices."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import read_jsonl, run_bench

from bench.hardware.tiers import (
    GiB,
    bytes_read_per_token,
    gpu_layers_for_budget,
    gpu_offload_bytes,
    predict_memory,
    roofline_share,
    usd_per_million_tokens,
)

TIER = """\
schema_version: 1
id: {id}
name: test tier {id}
device: cpu
capacity: {{threads: {threads}, ram_gb: {ram_gb}, reserve_ram_gb: 0}}
price: {{basis: on_demand, usd_per_hour: 0.5, source: "test fixture"}}
performance: {{memory_bandwidth: [{{value: 10, kind: peak, source: "test fixture", read: 2026-11-30}}]}}
"""


@pytest.fixture()
def tiers(tmp_path) -> Path:
    d = tmp_path / "profiles"
    d.mkdir()
    for tid, threads, ram in [("tiny", 1, 0.05), ("tight", 1, 0.125), ("one-core", 1, 4), ("big", 64, 4096)]:
        (d / f"{tid}.yaml").write_text(TIER.format(id=tid, threads=threads, ram_gb=ram))
    # a tier with a price and no performance figures: nothing to project its speed from
    (d / "bare.yaml").write_text("\n".join(TIER.format(id="bare", threads=1, ram_gb=4).splitlines()[:-1]) + "\n")
    return d


def _run(tmp_path: Path, tiers: Path, *args: str) -> tuple[int, list[dict]]:
    out = tmp_path / "r.jsonl"
    proc = run_bench("--profiles-dir", str(tiers), "run", "--no-progress", "--prompt-tokens", "16",
                     "--gen-tokens", "8", "-o", str(out), *args)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, read_jsonl(out) if out.exists() else []


@pytest.mark.model
def test_too_small_tier_is_does_not_fit_without_loading_and_the_matrix_goes_on(tmp_path, tiers, embedded_model):
    code, rows = _run(tmp_path, tiers, "--profile", "tiny,one-core")
    assert [(r["config"]["profile_id"], r["status"]) for r in rows] == [("tiny", "does_not_fit"), ("one-core", "ok")]
    assert "weights + KV cache need" in rows[0]["reason"]
    assert rows[0]["samples"] == [] and rows[0]["load_time_s"] is None  # nothing was loaded or measured
    assert code == 1


@pytest.mark.model
def test_ram_cap_stops_a_run_that_outgrows_the_tier(tmp_path, tiers, embedded_model):
    # 128 MiB: more than weights + KV cache (so it starts), less than the run really needs
    code, (row,) = _run(tmp_path, tiers, "--profile", "tight")
    assert row["status"] == "oom", row["reason"]
    assert "rss-watchdog" in row["reason"] and row["tier"]["enforcement"] == "rss-watchdog"
    assert row["memory"]["peak_rss_bytes"] > 0.125 * GiB


@pytest.mark.model
def test_thread_cap_is_visible_in_the_child(tmp_path, tiers, embedded_model):
    code, (row,) = _run(tmp_path, tiers, "--profile", "one-core")
    assert row["status"] == "ok"
    assert row["config"]["threads"] == 1  # the backend's thread setting
    assert len(row["tier"]["affinity_in_child"]) == 1  # the CPU affinity the worker really had
    assert row["tier"]["thread_cap"].startswith("enforced")


@pytest.mark.model
def test_a_tier_larger_than_the_host_says_what_it_could_not_emulate(tmp_path, tiers, embedded_model):
    code, (row,) = _run(tmp_path, tiers, "--profile", "big")
    assert row["status"] == "ok"
    assert row["tier"]["thread_cap"].startswith("not enforceable")
    assert row["tier"]["enforcement"] == "measured-only"


@pytest.mark.model
@pytest.mark.parametrize("variant,ctx,prompt", [("q4_1", 64, 16), ("q4_1", 4096, 64), ("q4_1", 2048, 512),
                                               ("q4_0-derived", 256, 64), ("q8_0-derived", 256, 64)])
def test_predicted_memory_is_within_7_percent_of_the_measured_peak(tmp_path, embedded_model, variant, ctx, prompt):
    """docs/tiers.md: the fit prediction is within 7% of the measured peak on the embedded model."""
    out = tmp_path / "r.jsonl"
    proc = run_bench("run", "--no-progress", "--model", f"smollm2-135m:{variant}", "--prompt-tokens", str(prompt),
                     "--gen-tokens", "8", "--ctx", str(ctx), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    (row,) = read_jsonl(out)
    assert abs(row["tier"]["prediction_error"]) < 0.07, row["tier"]
    assert row["tier"]["fits"] is True


@pytest.mark.model
def test_an_emulated_tiers_speed_and_cost_are_projected_never_this_hosts(tmp_path, tiers, embedded_model):
    """Under an emulated tier's caps the speed measured is this host's: the row's speed basis is the
    projection (decode from the tier's 10 GB/s datasheet peak: the cpu class's share of it, capped by one
    thread's rate, over the file's bytes per token), and the tier's cost follows from the projected speed,
    not from the speed measured here."""
    from bench.hardware.profiles import load_profiles
    from bench.projection.model import decode_from_rate
    from bench.projection.tier import PerformanceModel
    from bench.results.schema import Row

    code, (row,) = _run(tmp_path, tiers, "--profile", "one-core")
    eff, host = row["efficiency"], row["environment"]["host"]["hostname"]
    assert row["tier"]["basis"] == f"emulated on {host}"
    assert row["tier"]["speed_basis"] == "projected from the tier's datasheet peak bandwidth"
    assert 0 < eff["roofline"]["share"] < 1.5  # a share far above 1 would mean a wrong byte count
    decode = eff["projection"]["decode_tps"]
    cpu = PerformanceModel.load().params["cpu"]
    stream = min(cpu.share_peak * 10e9, cpu.thread_rate * 1)  # one thread: the tier's threads
    raw = decode_from_rate(decode["inputs"]["bytes_per_token"], stream, cpu.overhead_s)
    assert decode["inputs"]["raw_value"] == pytest.approx(raw)
    assert decode["low"] <= decode["value"] <= decode["high"] and decode["basis"] == "peak"
    assert eff["projection"]["label"].startswith("PROJECTION")
    assert "no published prefill result and no compute figure" in eff["projection"]["unmeasured"]["prefill_tps"]
    assert eff["cost"]["usd_per_1m_output_tokens"] == pytest.approx(0.5 / (decode["value"] * 3600) * 1e6)
    assert "PROJECTION" in eff["cost"]["speed_basis"] and eff["cost"]["basis"] == "on_demand"
    assert "projection" not in row["summary"]  # projections never sit among measurements
    # the same row read back and projected again gives the same numbers: nothing of the run is used
    from bench.projection.tier import project_row

    again = project_row(Row.from_dict(row), load_profiles(tiers)["one-core"]).to_dict()
    assert again["decode_tps"]["value"] == pytest.approx(decode["value"])


@pytest.mark.model
def test_an_emulated_tier_without_figures_is_caps_only(tmp_path, tiers, embedded_model):
    code, (row,) = _run(tmp_path, tiers, "--profile", "bare")
    assert row["status"] == "ok" and row["summary"]["decode_tps"]["mean"] > 0  # measured here, under the caps
    assert row["tier"]["speed_basis"] == "caps only"
    assert row["efficiency"]["cost"]["usd_per_1m_output_tokens"] is None
    assert "not the tier's" in row["efficiency"]["cost"]["why"]


@pytest.mark.model
def test_the_host_as_it_is_is_measured_not_projected(tmp_path, tiers, embedded_model):
    code, (row,) = _run(tmp_path, tiers)  # profile auto
    assert row["tier"]["speed_basis"] == "measured" and row["efficiency"].get("projection") is None


@pytest.mark.model
def test_energy_is_reported_only_where_a_counter_was_read(tmp_path, tiers, embedded_model):
    code, (row,) = _run(tmp_path, tiers, "--profile", "one-core")
    source = row["efficiency"]["energy_source"]
    per_token = [s["energy_j_per_token"] for s in row["samples"]]
    if source.startswith("unavailable"):
        assert per_token == [None] * len(per_token) and "energy_j_per_token" not in row["summary"]
    else:
        assert source in ("rapl", "nvml") and all(v > 0 for v in per_token)


@pytest.mark.model
def test_resumed_matrix_runs_only_the_missing_cells(tmp_path, embedded_model):
    matrix = tmp_path / "m.yaml"
    out = tmp_path / "r.jsonl"
    matrix.write_text("models: [smollm2-135m]\nprompt_tokens: [8]\ngen_tokens: [4, 6]\n")
    assert run_bench("run", "--matrix", str(matrix), "--no-progress", "-o", str(out)).returncode == 0
    matrix.write_text("models: [smollm2-135m]\nprompt_tokens: [8]\ngen_tokens: [4, 6, 8]\n")
    proc = run_bench("run", "--matrix", str(matrix), "--no-progress", "-o", str(out))
    assert proc.returncode == 0 and "2 cell(s) already ok" in proc.stderr
    assert [r["config"]["gen_tokens"] for r in read_jsonl(out)] == [4, 6, 8]
    proc = run_bench("run", "--matrix", str(matrix), "--no-progress", "--force", "-o", str(out))
    assert len(read_jsonl(out)) == 6


@pytest.mark.fast
def test_bad_matrix_names_file_and_line(tmp_path):
    matrix = tmp_path / "m.yaml"
    matrix.write_text("models: [smollm2-135m]\nprompt_tokens: [8]\ngen_tokens: four\n")
    proc = run_bench("run", "--matrix", str(matrix))
    assert proc.returncode == 2 and f"{matrix}:3: gen_tokens" in proc.stderr


# -- arithmetic on the embedded model's real GGUF header ------------------------------------------
@pytest.mark.model
def test_gpu_layers_for_budget(embedded_model):
    g = embedded_model.gguf
    layers = g["block_count"]
    assert gpu_layers_for_budget(g, 512, 100 * GiB) == layers + 1  # everything, output head too
    assert gpu_layers_for_budget(g, 512, 1024) == 0
    # llama.cpp offloads from the top: the output head (SmolLM2's is tied: a copy of token_embd),
    # then the last blocks, each with its KV cache (3 KV heads x (64 + 64) dims x 2 bytes x 512)
    kv = 512 * 3 * 128 * 2
    assert not g["has_output_tensor"] and gpu_offload_bytes(g, 512, 1) == g["token_embd_bytes"]
    assert gpu_offload_bytes(g, 512, 3) == g["token_embd_bytes"] + sum(g["layer_bytes"][-2:]) + 2 * kv
    assert gpu_offload_bytes(g, 512, -1) == gpu_offload_bytes(g, 512, layers + 1) == gpu_offload_bytes(g, 512, 99)
    assert gpu_offload_bytes(g, 512, 0) == 0
    half = layers // 2
    assert gpu_layers_for_budget(g, 512, gpu_offload_bytes(g, 512, half)) == half
    assert gpu_layers_for_budget(g, 512, gpu_offload_bytes(g, 512, half) - 1) == half - 1
    # a budget below the head offloads nothing, though one block would fit
    assert gpu_layers_for_budget(g, 512, g["token_embd_bytes"] - 1) == 0 < g["layer_bytes"][0] < g["token_embd_bytes"]


@pytest.mark.model
def test_memory_prediction_parts(embedded_model):
    g = embedded_model.gguf
    small = predict_memory(g, embedded_model.size_bytes, 256, 16)
    large = predict_memory(g, embedded_model.size_bytes, 8192, 16)
    # KV cache: 30 layers x 3 KV heads x (64 + 64) dims x 2 bytes per token of context
    assert large.kv_cache_bytes - small.kv_cache_bytes == (8192 - 256) * 30 * 3 * 128 * 2
    assert small.weights_bytes == embedded_model.size_bytes


@pytest.mark.fast
def test_cost_and_roofline_formulas():
    assert usd_per_million_tokens(0.526, 10.0) == pytest.approx(0.526 / 36000 * 1e6)
    assert roofline_share(50.0, 100e9, 1e9) == pytest.approx(0.5)  # bound is 100 tok/s


@pytest.mark.model
def test_bytes_per_token_counts_a_tied_head_once(embedded_model):
    g = embedded_model.gguf
    assert not g["has_output_tensor"]  # SmolLM2 ties its output head to the embeddings
    assert bytes_read_per_token(g, embedded_model.size_bytes, 0) == embedded_model.size_bytes


@pytest.mark.model
def test_a_header_without_head_count_kv_gets_the_same_kv_term_everywhere(embedded_model):
    """llama.cpp reads a missing head_count_kv as head_count (plain multi-head attention): the bytes
    read per token and the memory prediction must both do so, not one of them count no KV cache."""
    g = dict(embedded_model.gguf)
    g.pop("head_count_kv")
    size, ctx = embedded_model.size_bytes, 1024
    kv_per_token = g["block_count"] * g["head_count"] * 2 * (g["embedding_length"] // g["head_count"]) * 2
    assert bytes_read_per_token(g, size, ctx) - bytes_read_per_token(g, size, 0) == ctx * kv_per_token
    assert predict_memory(g, size, ctx, 16).kv_cache_bytes == ctx * kv_per_token  # 1024: a multiple of 256
    mha = {**g, "head_count_kv": g["head_count"]}
    assert bytes_read_per_token(g, size, ctx) == bytes_read_per_token(mha, size, ctx)
