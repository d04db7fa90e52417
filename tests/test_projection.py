"""The performance model (bench/projection): its arithmetic on hand-computed cases, its independence of
the host that measured a row, thread caps, bias-corrected values inside their intervals, the frozen
test split that fitting never reads, the validation command, `bench predict`, and `bench import` of
llama-bench's real outputs (json, jsonl, csv, md) round-tripped into rows."""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys
from dataclasses import replace

import pytest
from conftest import REPO, assert_clean_error

from bench.errors import BenchError
from bench.hardware.profiles import load_profiles
from bench.projection.evidence import (
    Entry,
    EvidenceSet,
    device_class,
    load_evidence,
    published_depth_series,
    suite_depth_series,
)
from bench.projection.fit import (
    band_for,
    decode_ratios,
    fit_attn_cost,
    fit_params,
    prefill_ratios,
    weighted_quantile,
)
from bench.projection.importer import parse_llama_bench, quant_of_model_type, rows_from_records
from bench.projection.model import (
    Band,
    ClassParams,
    Estimate,
    Hardware,
    Why,
    decode_from_rate,
    project_decode,
    project_prefill,
    stream_rate,
    thread_cap,
)
from bench.projection.shape import ModelShape, quant_family, shape_from_gguf, shape_from_kv
from bench.projection.tier import PerformanceModel, Workload, project_row
from bench.projection.validate import run as run_validation
from bench.results.schema import Row

# ---- the arithmetic, by hand -----------------------------------------------------------------------


@pytest.mark.fast
def test_decode_is_bytes_over_bandwidth_plus_a_fixed_cost():
    # 2 GB at 20 GB/s is 100 ms, plus 2 ms: 1 / 0.102 s
    assert decode_from_rate(2e9, 20e9, 0.002) == pytest.approx(1 / 0.102)
    # and back: a published 1 / 0.102 tok/s of a 2 GB file streamed 20 GB/s net of the fixed cost
    assert stream_rate(1 / 0.102, 2e9, 0.002) == pytest.approx(20e9)
    # a result the fixed cost alone explains says nothing about bandwidth
    assert stream_rate(450.0, 1e6, 0.002) is None


@pytest.mark.fast
def test_shape_bytes_and_flops_per_token():
    s = ModelShape(file_bytes=1e9, n_params=5e8, n_layer=10, kv_bytes_per_position=1000.0, attn_width=100)
    assert s.decode_bytes(100) == pytest.approx(1e9 + 100_000)            # W + K c (F16 cache)
    assert s.decode_bytes(100, "q8_0") == pytest.approx(1e9 + 100_000 * 34 / 64)  # q8_0: 34 bytes per 32 values
    assert s.flops_per_token(50) == pytest.approx(2 * 5e8 + 4 * 10 * 100 * 50)
    assert s.prefill_flops_per_token(100, depth=20) == s.flops_per_token(20 + 50)
    assert ModelShape(file_bytes=1e9, n_params=None).flops_per_token(10) is None


@pytest.mark.fast
def test_quant_families_and_llama_bench_type_names():
    assert [quant_family(q) for q in ("Q4_0", "Q4_K_M", "IQ2_XS", "Q8_0", "BF16", "IQ4_NL")] == [
        "legacy", "kquant", "iquant", "q8", "float", "legacy"]
    assert quant_of_model_type("llama 8B Q4_K - Medium") == "Q4_K_M"
    assert quant_of_model_type("qwen2 1.5B Q8_0") == "Q8_0"
    assert quant_of_model_type("llama 7B F16") == "F16"


@pytest.mark.fast
def test_device_classes_from_what_a_machine_says():
    assert device_class("cuda", "NVIDIA A100 PCIe 80 GB") == "gpu-hbm"          # HBM by product name
    assert device_class("cuda", "NVIDIA GeForce RTX 4090 24 GB") == "gpu"
    assert device_class("rocm", "AMD Radeon RX 7900 XTX") == "gpu-other"
    assert device_class("cuda", "NVIDIA Jetson Orin Nano Super") == "embedded-gpu"
    assert device_class("metal", "Apple M4") == "apple"
    assert device_class("cpu", "Apple Mac mini (M4)", declared="apple") == "apple"  # a profile's declaration
    with pytest.raises(BenchError, match="unknown device class"):
        device_class("cuda", "x", declared="quantum")


@pytest.mark.fast
def test_band_corrects_the_value_into_its_interval_and_swaps_for_times():
    band = Band(median=math.log(0.9), q10=math.log(0.7), q90=math.log(1.2), n=20, machines=8, scope="cpu/peak")
    v, lo, hi = band.correct(10.0)
    assert (v, lo, hi) == (pytest.approx(9.0), pytest.approx(7.0), pytest.approx(12.0))
    v, lo, hi = band.correct(0.1, inverse=True)  # a time: 1 / rate
    assert lo <= v <= hi and v == pytest.approx(0.1 / 0.9)
    # split-conformal levels 0.9 (m + 1) / m reach 1 with 9 machines or fewer: the band is their range
    assert band.level_words().startswith("the range") and "8 machines" in band.level_words()
    assert replace(band, machines=10).level_words().startswith("10th-90th percentile")


@pytest.mark.fast
def test_weighted_quantile():
    assert weighted_quantile([1, 2, 3, 4], [1, 1, 1, 1], 0.5) == 2
    assert weighted_quantile([1, 2, 3, 4], [1, 1, 1, 10], 0.5) == 4  # one heavy machine


# ---- decode and prefill on a machine ---------------------------------------------------------------

def _entry(**kw) -> Entry:
    base = dict(id="e", machine="m", backend="llama.cpp", model="x", params=8e9, size_bytes=4e9, quant="Q4_0",
                moe=False, threads=None, ngl=99, prompt_tokens=512, gen_tokens=128, depth=0, prefill_tps=None,
                decode_tps=None, source="https://example.org", publisher="test", date="2026-12-03", quote="q",
                line=1)
    return Entry(**{**base, **kw})


CPU = ClassParams("cpu", overhead_s=0.0, share_peak=0.6, share_measured=0.9, thread_rate=10e9, kappa=0.2,
                  prefill_eff={"legacy": 0.5, "kquant": 0.4}, family_ratio={"legacy": 1.25, "kquant": 1.0})
SHAPE = ModelShape(file_bytes=2e9, n_params=3e9, quant="Q4_0")


@pytest.mark.fast
def test_evidence_comes_before_a_measured_figure_and_that_before_a_peak():
    peak_only = Hardware("m", "cpu", threads=8, bandwidth_peak=100e9)
    measured = Hardware("m", "cpu", threads=8, bandwidth_peak=100e9, bandwidth_measured=70e9)
    with_evidence = Hardware("m", "cpu", threads=8, bandwidth_peak=100e9, bandwidth_measured=70e9,
                             evidence=(_entry(decode_tps=10.0, size_bytes=4e9, threads=8),))
    p, m, e = (project_decode(SHAPE, 0, hw, CPU) for hw in (peak_only, measured, with_evidence))
    assert isinstance(p, Estimate) and p.basis == "peak" and p.value == pytest.approx(0.6 * 100e9 / 2e9)
    assert isinstance(m, Estimate) and m.basis == "measured" and m.value == pytest.approx(0.9 * 70e9 / 2e9)
    # the machine's own 10 tok/s on a 4 GB file: 40 GB/s, so 20 tok/s on a 2 GB file
    assert isinstance(e, Estimate) and e.basis == "evidence" and e.value == pytest.approx(20.0)
    assert isinstance(project_decode(SHAPE, 0, Hardware("m", "cpu"), CPU), Why)


@pytest.mark.fast
def test_threads_cap_a_cpu_and_evidence_at_other_thread_counts_is_carried_or_refused():
    # kappa x C x t / t_C: 0.2 x 100 GFLOP/s x 4 / 8 = 10 GB/s at 4 threads, 20 GB/s at 8
    hw4 = Hardware("m", "cpu", threads=4, bandwidth_peak=100e9, compute=100e9, compute_threads=8)
    hw8 = Hardware("m", "cpu", threads=8, bandwidth_peak=100e9, compute=100e9, compute_threads=8)
    assert thread_cap(hw4, CPU) == pytest.approx(10e9) and thread_cap(hw8, CPU) == pytest.approx(20e9)
    d4, d8 = project_decode(SHAPE, 0, hw4, CPU), project_decode(SHAPE, 0, hw8, CPU)
    assert d8.value == pytest.approx(2 * d4.value)  # both thread-bound: twice the threads, twice the speed
    # without a compute figure, one thread's rate caps: 4 x 10 GB/s
    assert thread_cap(Hardware("m", "cpu", threads=4), CPU) == pytest.approx(40e9)
    # a result at 2 threads that reached 2 x the per-thread cap is thread-bound: no evidence for 8 threads
    bound = Hardware("m", "cpu", threads=8, evidence=(_entry(decode_tps=5.0, size_bytes=4e9, threads=2),))
    why = project_decode(SHAPE, 0, bound, CPU)
    assert isinstance(why, Why) and "thread-bound" in why.reason


@pytest.mark.fast
def test_a_result_its_own_machine_beat_at_more_threads_is_not_evidence_for_more():
    """A published thread sweep (4 GB file: 1 thread 2 tok/s = 8 GB/s, under the class's 1-thread cap of
    8.5; 4 threads 8 tok/s = 32 GB/s) says the 1-thread result was thread-bound: an 8-thread tier takes
    the 4-thread results."""
    sweep = (_entry(id="t1", decode_tps=2.0, threads=1), _entry(id="t4", decode_tps=8.0, threads=4),
             _entry(id="t4b", model="y", params=3e9, size_bytes=2e9, decode_tps=16.0, threads=4))
    est = project_decode(SHAPE, 0, Hardware("m", "cpu", threads=8, evidence=sweep), CPU)
    assert isinstance(est, Estimate) and est.basis == "evidence"
    assert "t1" not in est.inputs["entries"] and set(est.inputs["entries"]) == {"t4", "t4b"}
    assert est.inputs["effective_bandwidth_gbs"] == pytest.approx(32.0)


@pytest.mark.fast
def test_i_quants_on_a_cpu_are_not_projected_nor_evidence():
    iq = ModelShape(file_bytes=2e9, n_params=3e9, quant="IQ4_XS")
    why = project_decode(iq, 0, Hardware("m", "cpu", threads=4, bandwidth_peak=100e9), CPU)
    assert isinstance(why, Why) and "i-quant" in why.reason
    only_iq = Hardware("m", "cpu", threads=4, bandwidth_peak=100e9,
                       evidence=(_entry(quant="IQ4_XS", decode_tps=3.0, threads=4),))
    est = project_decode(SHAPE, 0, only_iq, CPU)
    assert isinstance(est, Estimate) and est.basis == "peak"  # the i-quant result is not Q4_0's evidence


@pytest.mark.fast
def test_prefill_from_evidence_of_the_same_family_else_scaled_else_the_compute_figure():
    f = SHAPE.prefill_flops_per_token(128)
    hw = Hardware("m", "cpu", threads=8, compute=400e9, compute_threads=8,
                  evidence=(_entry(prefill_tps=100.0, params=8e9, quant="Q4_0", threads=8),))
    e = project_prefill(SHAPE, 128, 0, hw, CPU)
    # 100 tok/s x 2 x 8e9 FLOPs = 1.6 TFLOP/s effective
    assert e.basis == "evidence" and e.value == pytest.approx(100 * 2 * 8e9 / f)
    kq = ModelShape(file_bytes=2e9, n_params=3e9, quant="Q4_K_M")
    scaled = project_prefill(kq, 128, 0, hw, CPU)  # kquant from a legacy result: x 1.0 / 1.25
    assert scaled.value == pytest.approx(e.value / 1.25)
    formula = project_prefill(SHAPE, 128, 0, Hardware("m", "cpu", threads=4, compute=400e9, compute_threads=8), CPU)
    assert formula.basis == "compute" and formula.value == pytest.approx(0.5 * 400e9 * 4 / 8 / f)


# ---- a row onto a tier: nothing of the host ---------------------------------------------------------

GGUF = {"architecture": "llama", "n_params": 1_500_000_000, "block_count": 28, "embedding_length": 1536,
        "head_count": 12, "head_count_kv": 2, "key_length": None, "value_length": None,
        "token_embd_bytes": 150_000_000, "has_output_tensor": False, "tensor_bytes": {"Q4_K": 9e8, "Q6_K": 2e8}}


def _row(decode: float, prefill: float, bw: float, flops: float, host: str) -> dict:
    return {"schema_version": 1, "run_id": "r", "created_at": "2026-12-03T00:00:00+00:00", "status": "ok",
            "reason": None,
            "config": {"model_id": "m", "variant_id": "q4_k_m", "backend": "llama.cpp", "profile_id": "rpi5-8g",
                       "device": "cpu", "threads": 2, "prompt_tokens": 128, "gen_tokens": 64, "repetitions": 3,
                       "warmup": 1, "n_ctx": 512, "n_gpu_layers": 0, "seed": 0, "stop_at_eos": False,
                       "timeout_s": 60.0},
            "model": {"model_id": "m", "variant_id": "q4_k_m", "format": "gguf", "quantization": "Q4_K_M",
                      "size_bytes": 1_117_320_768, "gguf": GGUF},
            "profile": {"id": "rpi5-8g"},
            "environment": {"host": {"hostname": host},
                            "calibration": {"memory_bandwidth_bytes_per_s": bw, "matmul_flop_per_s": flops}},
            "summary": {"decode_tps": {"mean": decode, "max": decode}, "prefill_tps": {"mean": prefill}}}


@pytest.fixture(scope="module")
def profiles():
    return load_profiles(REPO / "hardware_profiles")


@pytest.mark.fast
def test_one_row_measured_on_two_hosts_gives_the_identical_tier_projection(profiles):
    fast = Row.from_dict(_row(decode=90.0, prefill=600.0, bw=40e9, flops=400e9, host="fast-server"))
    slow = Row.from_dict(_row(decode=12.0, prefill=50.0, bw=8e9, flops=60e9, host="busy-vm"))
    for tier in ("rpi5-8g", "laptop-4c-8g", "minipc-m4-16g", "gpu-12g", "cloud-h100"):
        a, b = project_row(fast, profiles[tier]).to_dict(), project_row(slow, profiles[tier]).to_dict()
        assert a == b, tier
        assert a["decode_tps"] is not None, (tier, a["unmeasured"])


@pytest.mark.fast
def test_every_projected_value_lies_inside_its_interval(profiles):
    row = Row.from_dict(_row(90.0, 600.0, 40e9, 400e9, "h"))
    seen = 0
    for p in profiles.values():
        d = project_row(row, p).to_dict()
        for metric in ("decode_tps", "prefill_tps", "ttft_s", "tpot_s"):
            x = d[metric]
            if x:
                seen += 1
                assert 0 < x["low"] <= x["value"] <= x["high"] < math.inf, (p.id, metric, x)
                assert x["label"] == "PROJECTION, not a measurement"
            else:
                assert d["unmeasured"][metric], (p.id, metric)  # never a silent gap
    assert seen >= 20


@pytest.mark.fast
def test_the_pi5_projection_of_the_qwen_coder_file(profiles):
    """The issue's own case: Qwen2.5-Coder-1.5B Q4_K_M (1,117,320,768 bytes) on a Pi 5. Published Pi 5
    runs of other Q4_K_M files move 8.65-8.88 GB/s: 7.7-9.0 tok/s for this file."""
    p = project_row(Row.from_dict(_row(90.0, 600.0, 40e9, 400e9, "h")), profiles["rpi5-8g"]).decode_tps
    assert 7.0 <= p.value <= 9.5
    assert p.low <= 7.7 and p.high >= 9.0


# ---- the frozen test split --------------------------------------------------------------------------

@pytest.mark.model
def test_fitting_never_reads_the_test_split():
    ev = load_evidence(REPO / "validation")
    assert len(ev.test_machines) >= len(ev.machines) / 4
    train = ev.train()
    assert not {e.machine for e in train.entries} & ev.test_machines
    # changing every test entry changes no fitted parameter
    doctored = EvidenceSet(tuple(e if e.machine not in ev.test_machines else
                                 Entry(**{**e.__dict__, "decode_tps": (e.decode_tps or 1) * 7}) for e in ev.entries),
                           ev.machines, ev.test_machines)
    assert fit_params(doctored.train()) == fit_params(train)


@pytest.mark.fast
def test_a_machine_weighs_the_same_in_each_familys_prefill_efficiency():
    """A family fitted on its own machines (3 or more) depends on that family's entries only: dropping
    every other family's entries changes nothing (each machine's weight is split over its entries of the
    family, so a machine published in many families does not count for less)."""
    from bench.projection.fit import hardware_of

    train = load_evidence(REPO / "validation").train()
    full = fit_params(train)["cpu"].prefill_eff
    timed = {mid for mid, m in train.machines.items() if m.device_class == "cpu" and hardware_of(m).compute}
    own = [f for f in full if len({e.machine for e in train.entries if e.prefill_tps and e.machine in timed
                                   and quant_family(e.quant) == f}) >= 3]
    assert {"kquant", "legacy"} <= set(own)
    for family in own:
        alone = replace(train, entries=tuple(e for e in train.entries if quant_family(e.quant) == family))
        assert fit_params(alone)["cpu"].prefill_eff[family] == full[family], family


@pytest.mark.fast
def test_a_family_seen_on_too_few_machines_takes_the_pooled_prefill_efficiency():
    """On the training split the gpu class has K-quant and float prefill with a compute figure on fewer
    than 3 machines each: both take one pooled efficiency, scaled by their family ratios, so their
    efficiencies stand in the ratio of those."""
    gpu = fit_params(load_evidence(REPO / "validation").train())["gpu"]
    eff, ratio = gpu.prefill_eff, gpu.family_ratio
    assert eff["kquant"] / ratio["kquant"] == pytest.approx(eff["float"] / ratio["float"])


@pytest.mark.model  # refits every class and the depth term: seconds, no model file
def test_committed_parameters_are_those_of_the_training_split():
    data = json.loads((REPO / "validation" / "model_params.json").read_text())
    ev = load_evidence(REPO / "validation")
    assert set(data["training_machines"]) == {e.machine for e in ev.train().entries}
    # the validation's parameters: fit_params on the training split, with gamma from the depth series
    refit = {cls: p.to_dict() for cls, p in run_validation(ev).params.items()}
    assert json.loads(json.dumps(refit)) == data["classes"], "run: python -m bench.projection.validate --write-params"


@pytest.mark.fast
def test_a_class_without_its_own_band_names_the_pooled_one():
    bands = {"decode_tps|all|peak": {"median": 0.0, "q10": -0.3, "q90": 0.3, "n": 40, "machines": 12,
                                     "scope": "all/peak"},
             "decode_tps|embedded-gpu|peak": {"median": 0.1, "q10": 0.0, "q90": 0.2, "n": 2, "machines": 1,
                                              "scope": "embedded-gpu/peak"}}
    b = band_for(bands, "decode_tps", "embedded-gpu", "peak")
    assert b.n == 40 and "pooled" in b.scope and "2 entries on 1 machines" in b.scope
    assert band_for(bands, "decode_tps", "embedded-gpu", "evidence") is None


# ---- depth -----------------------------------------------------------------------------------------

@pytest.mark.fast
def test_deeper_context_projects_slower_and_attention_costs_time_on_top_of_the_cache():
    # Llama 3.1 8B's sourced shape (validation/depth_shapes.csv): K = 32 x 8 x (128 + 128) x 2 bytes,
    # A = 4 x 32 x (32 x 128) FLOPs per position
    s = shape_from_kv(4.4e9, 8e9, n_layer=32, n_head=32, n_head_kv=8, key_length=128)
    assert s.kv_bytes_per_position == 131072 and s.attn_flops_per_position == 524288
    assert s.token_bytes(1000, "f16", 0.5) == pytest.approx(4.4e9 + 1000 * (131072 + 0.5 * 524288))
    hw = Hardware("m", "cpu", threads=8, bandwidth_peak=80e9)
    bw_only = ClassParams("cpu", overhead_s=0.001, share_peak=0.7)
    with_attn = ClassParams("cpu", overhead_s=0.001, share_peak=0.7, attn_bytes_per_flop=0.5)
    for p in (bw_only, with_attn):
        speeds = [project_decode(s, c, hw, p).value for c in (0, 1024, 8192, 32768)]
        assert speeds == sorted(speeds, reverse=True) and len(set(speeds)) == 4
    # at depth 0 the attention term is nothing; deeper, it slows decode beyond the cache's bytes
    assert project_decode(s, 0, hw, with_attn).value == project_decode(s, 0, hw, bw_only).value
    assert project_decode(s, 8192, hw, with_attn).value < project_decode(s, 8192, hw, bw_only).value
    # prefill after a depth does more FLOPs per token, so it is slower too
    hw_c = Hardware("m", "cpu", threads=8, compute=1e12, compute_threads=8)
    pp = ClassParams("cpu", prefill_eff={"kquant": 0.3})
    s_q = shape_from_kv(4.4e9, 8e9, 32, 32, 8, 128, quant="Q4_K_M")
    assert project_prefill(s_q, 512, 8192, hw_c, pp).value < project_prefill(s_q, 512, 0, hw_c, pp).value


@pytest.mark.model
def test_the_depth_ratio_on_a_real_header(embedded_gguf):
    """The embedded model's own GGUF header gives K and A; the bandwidth-only ratio is the bytes' ratio,
    and the committed CPU gamma projects the suite's measured slowdown on this file closer than it."""
    from bench.models.gguf_info import read_gguf_info

    g = read_gguf_info(embedded_gguf)
    shape = shape_from_gguf(g.__dict__, embedded_gguf.stat().st_size)
    heads, kv_heads, width = g.head_count, g.head_count_kv, g.embedding_length // g.head_count
    assert shape.kv_bytes_per_position == g.block_count * kv_heads * 2 * width * 2
    assert shape.attn_flops_per_position == 4 * g.block_count * heads * width
    w, k = shape.file_bytes, shape.kv_bytes_per_position
    assert shape.token_bytes(8160) / shape.token_bytes(160) == pytest.approx((w + k * 8160) / (w + k * 160))

    params = json.loads((REPO / "validation" / "model_params.json").read_text())["classes"]
    gamma = params["cpu"]["attn_bytes_per_flop"]
    assert gamma > 0, "the CPU class uses an attention cost at depth"
    series = [s for s in suite_depth_series(REPO / "validation") if s.file == embedded_gguf.name]
    if not series:
        pytest.skip(f"validation/depth_suite.csv has no sweep of {embedded_gguf.name}")
    for s in series:
        tau = params["cpu"]["overhead_s"]
        for (p, measured, bw), (_, _, model) in zip(decode_ratios(s, 0.0, tau), decode_ratios(s, gamma, tau),
                                                    strict=True):
            assert model < bw < 1.0                     # deeper is slower, and attention makes it slower still
            assert abs(model / measured - 1) < abs(bw / measured - 1), (s.id, p.depth)


@pytest.mark.fast
def test_depth_series_are_sourced_and_the_fit_never_reads_a_test_machine():
    ev = load_evidence(REPO / "validation")
    published, left_out = published_depth_series(ev, REPO / "validation")
    assert published and all(s.shape_source and s.n_layer and s.n_head_kv for s in published)
    assert any("mixture of experts" in why for why in left_out)
    cpu = [s for s in published if s.device_class == "cpu"]
    gamma = fit_attn_cost(cpu, lambda cls: 0.0)
    assert gamma and gamma > 0
    # the same series on test-split machines are never fitted
    assert fit_attn_cost([replace(s, test=True) for s in cpu], lambda cls: 0.0) is None
    # prefill ratios of a published GPU series follow the FLOP term: deeper, fewer tokens per second
    gpu = next(s for s in published if s.device_class != "cpu" and prefill_ratios(s))
    proj = [r for _, _, r in prefill_ratios(gpu)]
    assert proj == sorted(proj, reverse=True) and proj[-1] < 1.0


# ---- commands ---------------------------------------------------------------------------------------

def _bench(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=REPO, capture_output=True, text=True,
                          input=stdin, timeout=120)


@pytest.mark.model
def test_validate_prints_both_splits_and_the_baseline():
    proc = subprocess.run([sys.executable, "-m", "bench.projection.validate"], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    for text in ("training, leave one machine out", "TEST split, never fitted", "naive 0.6 x peak / bytes",
                 "Goals on the test split", "in interval",
                 # the depth section: ratios against both baselines, the suite's sweep apart, what was left out
                 "Depth: ratio to the series' shallowest point", "depth ignored", "bandwidth only", "model out",
                 "the suite's sweep (never fitted)", "Series left out", "mixture of experts", "the model uses:"):
        assert text in proc.stdout


@pytest.mark.model
def test_validate_refuses_an_entry_without_a_source(tmp_path):
    import shutil

    data = tmp_path / "v"
    shutil.copytree(REPO / "validation", data)
    lines = (data / "measurements.csv").read_text().splitlines()
    lines[1] = lines[1].replace("https://", "ftp://", 1)
    (data / "measurements.csv").write_text("\n".join(lines) + "\n")
    proc = subprocess.run([sys.executable, "-m", "bench.projection.validate", "--data", str(data)], capture_output=True,
                          text=True, timeout=120)
    assert_clean_error(proc, "no source")


@pytest.mark.model
def test_predict_answers_per_tier_without_running_anything():
    proc = _bench("predict", "smollm2-135m", "-p", "rpi5-8g", "-p", "gpu-12g", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert [t["tier"] for t in out["tiers"]] == ["rpi5-8g", "gpu-12g"]
    pi = out["tiers"][0]
    assert pi["fit"]["fits"] is True and pi["projection"]["decode_tps"]["label"].startswith("PROJECTION")
    assert pi["cost"]["usd_per_1m_output_tokens"] > 0


@pytest.mark.model
def test_predict_refuses_an_unknown_tier():
    assert_clean_error(_bench("predict", "smollm2-135m", "-p", "no-such-tier"), "unknown hardware profile")
    assert_clean_error(_bench("predict", "smollm2-135m", "-p", "/no/such/machine.yaml"), "profile file not found")


@pytest.mark.model
def test_predict_takes_a_machine_of_ones_own_as_a_profile_file(tmp_path):
    """A machine nobody published results for, described in a profile file, is projected from its figures
    alone: the same figures as a shipped tier without evidence (laptop-4c-8g) give the same projection."""
    import yaml

    from bench.datafiles import find_data_path

    shipped = find_data_path("hardware_profiles", None, "BENCH_PROFILES") / "laptop-4c-8g.yaml"
    mine = yaml.safe_load(shipped.read_text(encoding="utf-8"))
    mine["id"], mine["name"] = "my-laptop", "my own laptop (the figures of laptop-4c-8g)"
    path = tmp_path / "my-laptop.yaml"
    path.write_text(yaml.safe_dump(mine), encoding="utf-8")
    proc = _bench("predict", "smollm2-135m", "-p", "laptop-4c-8g", "-p", str(path), "--json")
    assert proc.returncode == 0, proc.stderr
    shipped_tier, my_tier = json.loads(proc.stdout)["tiers"]
    assert my_tier["tier"] == "my-laptop"
    assert my_tier["projection"]["decode_tps"]["basis"] == "peak"
    assert my_tier["projection"]["decode_tps"]["value"] == shipped_tier["projection"]["decode_tps"]["value"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("id: bad\nname: x\n", encoding="utf-8")
    assert_clean_error(_bench("predict", "smollm2-135m", "-p", str(bad)), "bad.yaml")


# ---- bench import: llama-bench's real outputs ---------------------------------------------------------

@pytest.fixture(scope="module")
def llama_bench_outputs():
    """llama-bench (built from the wheel's vendored source) on the embedded model, in all four formats:
    two runs, each printing one format on stdout and another on stderr (-o, -oe), so each pair of
    formats carries the same measurements."""
    from bench.models.store import embedded_model_path
    from bench.native.tools import tool_path

    exe = tool_path("llama-bench", say=lambda line: print(line, file=sys.stderr))
    model = embedded_model_path()
    runs = []
    for out_fmt, err_fmt in (("json", "md"), ("jsonl", "csv")):
        proc = subprocess.run([str(exe), "-m", str(model), "-p", "32", "-n", "8", "-r", "2", "-t", "1", "-o", out_fmt,
                               "-oe", err_fmt], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-500:]
        runs.append({out_fmt: proc.stdout, err_fmt: proc.stderr})
    return runs


@pytest.mark.model
def test_import_round_trips_every_llama_bench_format(llama_bench_outputs, profiles):
    from bench.projection.importer import ImportSource

    for run in llama_bench_outputs:
        rows = {}
        for fmt, text in run.items():
            records = parse_llama_bench(text, fmt)
            assert {(r.n_prompt, r.n_gen) for r in records} == {(32, 0), (0, 8)}, fmt
            made = rows_from_records(records, ImportSource("rpi5-8g", "file:test", "pi", "2026-12-03"),
                                     profiles["rpi5-8g"])
            assert len(made) == 1
            row = Row.from_dict(copy.deepcopy(made[0]))  # a valid row of the one schema
            assert row.tier.measured_on_tier and row.config.threads == 1
            assert row.config.prompt_tokens == 32 and row.config.gen_tokens == 8
            rows[fmt] = row
        # both formats of one run carry the same numbers (Markdown rounds to 2 decimals, the size to 0.01 MiB)
        (fa, a), (fb, b) = rows.items()
        assert a.summary.decode_tps.mean == pytest.approx(b.summary.decode_tps.mean, abs=0.006), (fa, fb)
        assert a.summary.prefill_tps.mean == pytest.approx(b.summary.prefill_tps.mean, abs=0.006), (fa, fb)
        assert a.model.size_bytes == pytest.approx(b.model.size_bytes, rel=0.001), (fa, fb)


@pytest.mark.model
def test_imported_rows_become_the_tiers_evidence(llama_bench_outputs, tmp_path):
    import shutil

    data = tmp_path / "validation"
    shutil.copytree(REPO / "validation", data)
    (tmp_path / "in.md").write_text(llama_bench_outputs[0]["md"])
    env = {**os.environ, "BENCH_VALIDATION": str(data), "BENCH_PROFILES": str(REPO / "hardware_profiles")}
    proc = subprocess.run([sys.executable, "-m", "bench", "import", str(tmp_path / "in.md"), "--tier",
                           "laptop-4c-8g", "--evidence", "-o", str(tmp_path / "imported.jsonl")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    ev = load_evidence(data)
    mine = ev.for_tier("laptop-4c-8g")
    assert len(mine) == 1 and mine[0].decode_tps and mine[0].prefill_tps
    pm = PerformanceModel.load(data)
    g = {"n_params": 134_515_008, "block_count": 30, "embedding_length": 576, "head_count": 9, "head_count_kv": 3}
    shape = shape_from_gguf(g, mine[0].size_bytes, None, "Q4_1")
    profile = load_profiles(REPO / "hardware_profiles")["laptop-4c-8g"]
    tp = pm.project(shape, Workload(32, 8), profile)
    assert tp.decode_tps.basis == "evidence"  # the imported run, ahead of the tier's datasheet peak


@pytest.mark.fast
def test_import_refuses_what_is_not_llama_bench(tmp_path):
    bad = tmp_path / "x.txt"
    bad.write_text("hello\n")
    assert_clean_error(_bench("import", str(bad), "--tier", "rpi5-8g"), "not a llama-bench output")
    with pytest.raises(BenchError, match="unreadable llama-bench line"):
        parse_llama_bench("| model | test | t/s |\n|---|---|---|\n| llama | pp512 | fast |\n")
