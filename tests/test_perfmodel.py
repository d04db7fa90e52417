"""The performance model (bench/hardware/perfmodel.py): its arithmetic on hand-computed cases, a row of a
fast host carried onto a slow tier with stated figures, tiers without figures, the tier figures in the
shipped profiles, and the validation command on a fixed subset of published entries."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, assert_clean_error

from bench.errors import BenchError
from bench.hardware.perfmodel import (
    LABEL,
    Band,
    bandwidth_efficiency,
    compute_efficiency,
    flops_per_token,
    host_efficiency,
    prefill_flops_per_token,
    project_decode,
    project_prefill,
    project_row,
    tpot_s,
    ttft_s,
    workload_from_gguf,
)
from bench.hardware.profiles import load_profiles
from bench.hardware.tiers import bytes_read_per_token

# ---- the arithmetic, by hand ---------------------------------------------------------------------


def test_flops_per_token_counts_weights_and_attention():
    # 2 N + 4 L d c: 2 x 1e9 + 4 x 10 x 100 x 50
    assert flops_per_token(1e9, 10, 100, 50) == 2e9 + 200_000
    # a prompt token attends to p/2 positions on average
    assert prefill_flops_per_token(1e9, 10, 100, 100) == flops_per_token(1e9, 10, 100, 50)


def test_efficiencies_are_achieved_over_measured():
    assert bandwidth_efficiency(50, 1e9, 100e9) == pytest.approx(0.5)   # 50 GB/s streamed of 100
    assert compute_efficiency(100, 3e9, 200e9) == pytest.approx(1.5)    # 300 GFLOP/s on a 200 GFLOP/s matmul


def test_decode_is_the_lower_of_the_bandwidth_and_compute_bounds():
    # bandwidth: 0.5 x 20 GB/s / 2 GB = 5 tok/s
    assert project_decode(0.5, 20e9, 2e9) == (pytest.approx(5.0), "bandwidth")
    # compute: 1.0 x 4 GFLOP/s / 2 GFLOP = 2 tok/s, below the bandwidth bound: compute binds
    assert project_decode(0.5, 20e9, 2e9, e_c=1.0, flop_per_s=4e9, flops_per_tok=2e9) == (pytest.approx(2.0), "compute")
    # a compute bound above the bandwidth bound changes nothing
    assert project_decode(0.5, 20e9, 2e9, e_c=1.0, flop_per_s=400e9, flops_per_tok=2e9)[1] == "bandwidth"


def test_prefill_ttft_and_tpot():
    assert project_prefill(1.5, 100e9, 3e9) == pytest.approx(50.0)
    assert ttft_s(512, 256.0) == pytest.approx(2.0)
    assert tpot_s(4.0) == pytest.approx(0.25)


def test_band_interval_and_its_inverse_for_times():
    band = Band(q10=math.log(0.8), q90=math.log(1.25), n=10, scope="cpu")
    assert band.interval(10.0) == (pytest.approx(8.0), pytest.approx(12.5))
    # a time is 1 / rate: 0.1 s per token is 0.08 .. 0.125 s
    assert band.interval(0.1, inverse=True) == (pytest.approx(0.08), pytest.approx(0.125))


# ---- a row of a fast host onto a slow tier -------------------------------------------------------

GGUF = {"architecture": "llama", "n_params": 1_000_000_000, "block_count": 16, "embedding_length": 2048,
        "head_count": 16, "head_count_kv": 4, "key_length": None, "value_length": None,
        "token_embd_bytes": 100_000_000, "has_output_tensor": True}


def fast_row(decode: float = 40.0, prefill: float = 600.0, bw: float = 50e9, flops: float = 400e9) -> dict:
    """A result row as stored in results/*.jsonl (only the fields the model reads)."""
    return {"created_at": "2026-11-30T00:00:00+00:00", "status": "ok",
            "config": {"device": "cpu", "n_gpu_layers": 0, "threads": 8, "prompt_tokens": 512, "gen_tokens": 128,
                       "model_id": "m", "variant_id": "q4"},
            "model": {"model_id": "m", "variant_id": "q4", "size_bytes": 1_000_000_000, "gguf": GGUF},
            "summary": {"decode_tps": {"mean": decode * 0.9, "max": decode},
                        "prefill_tps": {"mean": prefill * 0.9, "max": prefill}},
            "environment": {"host": {"hostname": "fasthost", "cpu_model": "a fast CPU"},
                            "calibration": {"memory_bandwidth_bytes_per_s": bw, "matmul_flop_per_s": flops}}}


SLOW_TIER = """\
schema_version: 1
id: slow
name: a slow board (test figures, not a real machine)
device: cpu
capacity: {{threads: 4, ram_gb: 8}}
performance:
  memory_bandwidth:
    - {{value: {bw}, kind: peak, derivation: test, source: "https://example.org/slow", read: 2026-11-30}}
  compute:
    threads: 4
    fp32_gflops:
      - {{value: {gflops}, kind: measured, tool: test, source: "https://example.org/slow", read: 2026-11-30}}
"""

BANDS = {("cpu", "decode_tps"): Band(math.log(0.8), math.log(1.2), 10, "cpu"),
         ("cpu", "prefill_tps"): Band(math.log(0.5), math.log(1.5), 10, "cpu")}


def slow_profile(tmp_path: Path, bw: float = 10, gflops: float = 40):
    (tmp_path / "slow.yaml").write_text(SLOW_TIER.format(bw=bw, gflops=gflops))
    return load_profiles(tmp_path)["slow"]


def test_a_fast_hosts_row_projected_onto_a_slow_tier_gives_the_slow_tiers_number(tmp_path):
    row, tier = fast_row(), slow_profile(tmp_path)
    p = project_row(row, tier, BANDS)
    # same model and lengths on both sides, so bytes per token cancel: decode scales with bandwidth,
    # 40 tok/s x 10 GB/s / 50 GB/s = 8 tok/s (the host's 40 is never reported as the tier's)
    assert p.decode_tps.value == pytest.approx(8.0)
    assert p.decode_tps.bound == "bandwidth"
    assert (p.decode_tps.low, p.decode_tps.high) == (pytest.approx(6.4), pytest.approx(9.6))
    # prefill scales with compute: 600 tok/s x 40 / 400 GFLOP/s = 60 tok/s; TTFT = 512 / 60
    assert p.prefill_tps.value == pytest.approx(60.0)
    assert p.ttft_s.value == pytest.approx(512 / 60.0)
    assert p.tpot_s.value == pytest.approx(1 / 8.0)
    assert p.tpot_s.low <= p.tpot_s.value <= p.tpot_s.high
    assert p.basis == "projected from fasthost" and p.label == LABEL and not p.unmeasured
    inputs = p.decode_tps.inputs
    assert "peak" in inputs["bandwidth"] and "https://example.org/slow" in inputs["bandwidth"]
    assert inputs["host_efficiency"]["e_bw"] == pytest.approx(40 * inputs["bytes_per_token"] / 50e9)
    json.dumps(p.to_dict())  # plain JSON, ready for a row


def test_compute_binds_decode_on_a_tier_with_little_compute(tmp_path):
    row, tier = fast_row(), slow_profile(tmp_path, bw=10, gflops=2)
    p = project_row(row, tier, BANDS)
    w = workload_from_gguf(GGUF, 1_000_000_000, 1e9, 512, 128)
    e_c = 600 * w.prefill_flops_per_token / 400e9
    assert p.decode_tps.bound == "compute"
    assert p.decode_tps.value == pytest.approx(e_c * 2e9 / w.decode_flops_per_token)
    assert p.decode_tps.value < 8.0


def test_bytes_per_token_are_the_suites_roofline_bytes():
    w = workload_from_gguf(GGUF, 1_000_000_000, 1e9, 512, 128)
    assert w.decode_bytes_per_token == bytes_read_per_token(GGUF, 1_000_000_000, 512 + 64)


def test_a_tier_without_figures_gets_no_projection(tmp_path):
    (tmp_path / "bare.yaml").write_text("id: bare\nname: x\ncapacity: {threads: 4, ram_gb: 8}\n")
    p = project_row(fast_row(), load_profiles(tmp_path)["bare"], BANDS)
    assert p.decode_tps is None and p.prefill_tps is None and p.ttft_s is None and p.tpot_s is None
    assert "no memory bandwidth figure" in p.unmeasured["decode_tps"]
    assert "no compute figure" in p.unmeasured["prefill_tps"]


def test_a_row_measured_on_a_gpu_gives_no_efficiency(tmp_path):
    row = fast_row()
    row["config"]["device"], row["config"]["n_gpu_layers"] = "cuda", 99
    eff = host_efficiency(row)
    assert eff.bandwidth is None and "GPU" in eff.why_not["decode_tps"]
    assert project_row(row, slow_profile(tmp_path), BANDS).decode_tps is None


def test_no_validation_band_gives_an_unbounded_interval(tmp_path):
    p = project_row(fast_row(), slow_profile(tmp_path), {})
    assert p.decode_tps.low == 0 and p.decode_tps.high == math.inf


def test_the_stored_host_reference_onto_the_pi_profile():
    """This host's real reference row (validation/host_reference.json) on the Raspberry Pi 5 profile:
    the projection is the arithmetic on the profile's stated figure, and far below this host's speed."""
    ref = json.loads((REPO / "validation" / "host_reference.json").read_text())["row"]
    pi = load_profiles(REPO / "hardware_profiles")["rpi5-8g"]
    p = project_row(ref, pi)  # the committed bands
    eff = host_efficiency(ref)
    expected = eff.bandwidth * pi.performance.memory_bandwidth_gbs * 1e9 / eff.inputs["bytes_per_token"]
    if p.decode_tps.bound == "bandwidth":
        assert p.decode_tps.value == pytest.approx(expected)
    else:
        assert p.decode_tps.value < expected
    assert 0 < p.decode_tps.low <= p.decode_tps.high
    assert p.decode_tps.value < ref["summary"]["decode_tps"]["max"]  # the Pi is slower than this host
    assert p.basis.startswith("projected from ")


# ---- the figures in the shipped profiles ---------------------------------------------------------

def test_cpu_tiers_emulate_the_threads_llama_cpp_would_use():
    profiles = load_profiles(REPO / "hardware_profiles")
    # physical cores on SMT CPUs (4C/8T, 16C/32T), performance cores on Apple Silicon (4P + 4E / 4P + 6E)
    assert {k: profiles[k].capacity.threads for k in ("laptop-4c-8g", "desktop-16c-64g", "laptop-8c-16g",
                                                      "laptop-m4-16g", "rpi5-8g")} == {
        "laptop-4c-8g": 4, "desktop-16c-64g": 16, "laptop-8c-16g": 4, "laptop-m4-16g": 4, "rpi5-8g": 4}


def test_every_figure_and_price_says_where_and_when_it_was_read():
    for p in load_profiles(REPO / "hardware_profiles").values():
        if p.price:
            assert p.price.source and p.price.read, f"{p.id}: price without source or read date"
        figs = list(p.performance.memory_bandwidth) if p.performance else []
        if p.performance and p.performance.compute:
            c = p.performance.compute
            figs += c.fp32_gflops + c.fp64_gflops + c.fp16_gflops
        for f in figs:
            assert f.source and f.read and (f.kind == "peak" or f.tool), (p.id, f)
    # the cheap tiers the verdict asks about now have a bandwidth figure
    profiles = load_profiles(REPO / "hardware_profiles")
    for tid in ("rpi5-8g", "laptop-4c-8g", "laptop-8c-16g", "desktop-16c-64g", "minipc-n150-16g", "minipc-m4-16g",
                "laptop-m4-16g", "jetson-orin-nano-8g"):
        assert profiles[tid].performance.bandwidth is not None, tid


@pytest.mark.parametrize("figure,message", [
    ("{value: -5, kind: peak, source: x, read: 2026-11-30}", "greater than 0"),
    ("{value: 99999, kind: peak, source: x, read: 2026-11-30}", "above any real machine"),
    ("{value: 50, kind: measured, source: x, read: 2026-11-30}", "needs the tool"),
    ("{value: 50, kind: peak, read: 2026-11-30}", "source"),
    ("{value: 50, kind: peak, source: x, read: yesterday}", "read"),
])
def test_impossible_or_unsourced_figures_are_refused_with_file_and_line(tmp_path, figure, message):
    (tmp_path / "bad.yaml").write_text("id: bad\nname: x\ncapacity: {threads: 1, ram_gb: 1}\n"
                                       f"performance:\n  memory_bandwidth:\n    - {figure}\n")
    with pytest.raises(BenchError, match=rf"bad.yaml:\d+: performance.memory_bandwidth.*{message}"):
        load_profiles(tmp_path)


def test_threads_must_be_the_ones_llama_cpp_would_use(tmp_path):
    (tmp_path / "bad.yaml").write_text("id: bad\nname: x\ncapacity: {threads: 8, ram_gb: 8}\n"
                                       "performance: {compute: {threads: 4}}\n")
    with pytest.raises(BenchError, match="differs from performance.compute.threads"):
        load_profiles(tmp_path)


# ---- the validation command ----------------------------------------------------------------------

SUBSET = "pi5-26484-q4_k_m,pi5-8g-ollama-llama3.2-3b,rtx3060-15013-llama2-7b-q4_0,m2-4167-llama2-7b-q4_0"


def run_validate(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "bench.hardware.validate", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def test_validation_on_a_fixed_subset_prints_the_table_and_summary():
    proc = run_validate("--only", SUBSET)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for eid in SUBSET.split(","):
        assert eid in out
    assert "Summary, decode tok/s" in out and "median |err|" in out and "n=4" in out
    # the Pi 5 entry's projection is this host's e_bw x the Pi's measured 11.59 GB/s / the 0.398 GB file
    eff = host_efficiency(json.loads((REPO / "validation" / "host_reference.json").read_text())["row"])
    line = next(ln for ln in out.splitlines() if ln.startswith("pi5-26484-q4_k_m"))
    assert f"{eff.bandwidth * 11.59e9 / 0.398e9:.2f}" in line.split()


def test_a_validation_entry_without_a_source_is_one_line_and_exit_2(tmp_path):
    data = tmp_path / "validation"
    shutil.copytree(REPO / "validation", data)
    csv_path = data / "measurements.csv"
    lines = csv_path.read_text().splitlines()
    lines[1] = lines[1].replace("https://github.com/ggml-org/llama.cpp/issues/26484", "")
    csv_path.write_text("\n".join(lines) + "\n")
    assert_clean_error(run_validate("--data", str(data)), "measurements.csv:2", "no source")


def test_an_entry_on_an_unknown_machine_is_one_line_and_exit_2(tmp_path):
    data = tmp_path / "validation"
    shutil.copytree(REPO / "validation", data)
    csv_path = data / "measurements.csv"
    csv_path.write_text(csv_path.read_text().replace("pi5-26484-q2_k,rpi5,", "pi5-26484-q2_k,nosuchbox,", 1))
    assert_clean_error(run_validate("--data", str(data)), "unknown machine 'nosuchbox'")


def test_the_published_efficiency_mode_uses_the_validation_median(tmp_path):
    """efficiency="published" swaps this host's e_bw for the median achieved/bandwidth of the published
    machines (stored by --write-bands); prefill keeps the row's own e_c."""
    bands = json.loads((REPO / "validation" / "error_bands.json").read_text())
    e_pub = bands["published"]["e_bw"]
    row, tier = fast_row(), slow_profile(tmp_path, bw=10, gflops=4000)  # plenty of compute: bandwidth binds
    host = project_row(row, tier, efficiency="host")
    pub = project_row(row, tier, efficiency="published")
    e_host = host.decode_tps.inputs["host_efficiency"]["e_bw"]
    assert pub.decode_tps.value == pytest.approx(host.decode_tps.value * e_pub / e_host)
    assert pub.prefill_tps.value == pytest.approx(host.prefill_tps.value)
    assert "published" in pub.basis and pub.decode_tps.inputs["host_efficiency"]["e_bw_host"] == pytest.approx(e_host)
    with pytest.raises(ValueError, match="host' or 'published"):
        project_row(row, tier, efficiency="other")
