"""`bench run` end to end: the real embedded model through the real llama.cpp, in a child process."""

from __future__ import annotations

import pytest
from conftest import REPO, assert_clean_error, read_jsonl, run_bench

P, N, R = 24, 12, 3


@pytest.fixture(scope="module")
def run_row(tmp_path_factory, embedded_model):
    out = tmp_path_factory.mktemp("run") / "results.jsonl"
    proc = run_bench("run", "--prompt-tokens", str(P), "--gen-tokens", str(N), "-r", str(R), "--no-progress",
                     "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    rows = read_jsonl(out)
    assert len(rows) == 1
    return rows[0], proc


@pytest.mark.model
def test_row_is_complete_and_ok(run_row, embedded_model):
    row, proc = run_row
    # ok, with no reason unless the machine watch flagged the host (steal on a shared VM): a
    # disturbed cell is still a complete row, and says so
    assert row["status"] == "ok" and (row["reason"] is None or row["reason"].startswith("DISTURBED: ")), row["reason"]
    c = row["config"]
    cell = (c["model_id"], c["variant_id"], c["backend"], c["profile_id"])
    assert cell == ("smollm2-135m", "q4_1", "llama.cpp", "auto")
    assert (c["prompt_tokens"], c["gen_tokens"], c["repetitions"], c["warmup"]) == (P, N, R, 1)
    assert row["model"]["sha256"] == embedded_model.sha256
    assert row["model"]["check"] == "pinned"  # the catalog pins the wheel and the file: docs/security.md
    assert row["definitions"].startswith("docs/METRICS.md")
    assert "smollm2-135m" in proc.stdout  # the summary table


@pytest.mark.model
def test_raw_samples_are_kept_and_consistent(run_row):
    row, _ = run_row
    assert len(row["samples"]) == R and len(row["warmup_samples"]) == 1
    for s in row["samples"]:
        assert s["prompt_tokens"] == P
        assert s["generated_tokens"] == N == len(s["token_ids"]) == len(s["token_times"])
        times = s["token_times"]
        assert all(b > a for a, b in zip(times, times[1:], strict=False))  # strictly increasing
        assert 0 < s["prefill_end"] <= times[0]  # the prefill pass ends before the first token
        assert s["ttft_s"] == times[0] and s["e2e_s"] == times[-1]
        assert s["decode_tps"] == pytest.approx((N - 1) / (times[-1] - times[0]))
        assert s["prefill_separated"] is True
        # text throughput: the same timestamps over UTF-8 bytes (prompt detokenized, text as generated)
        assert s["prompt_text_bytes"] > 0 and s["text_bytes"] > 0
        assert s["prefill_text_bps"] == pytest.approx(s["prompt_text_bytes"] / s["prefill_end"])
        assert s["decode_text_bps"] == pytest.approx(s["decode_tps"] * s["text_bytes"] / N)


@pytest.mark.model
def test_greedy_decoding_is_deterministic_across_repetitions(run_row):
    row, _ = run_row
    outputs = {tuple(s["token_ids"]) for s in row["samples"] + row["warmup_samples"]}
    assert len(outputs) == 1


@pytest.mark.model
def test_summary_matches_samples(run_row):
    row, _ = run_row
    s = row["summary"]
    decode = [x["decode_tps"] for x in row["samples"]]
    assert s["decode_tps"]["mean"] == pytest.approx(sum(decode) / R)
    assert s["decode_tps"]["n"] == R and s["decode_tps"]["std"] is not None
    assert s["itl_s"]["n"] == R * (N - 1)
    assert s["itl_s"]["p50"] <= s["itl_s"]["p90"] <= s["itl_s"]["p99"] <= s["itl_s"]["max"]
    assert s["ttft_s"]["mean"] < s["e2e_s"]["mean"]


@pytest.mark.model
def test_memory_is_measured_in_the_child(run_row, embedded_model):
    row, _ = run_row
    m = row["memory"]
    assert m["peak_rss_bytes"] >= m["baseline_rss_bytes"]
    # The weights are memory-mapped and every one is read while decoding: RSS grows by about the file.
    assert m["peak_rss_bytes"] - m["baseline_rss_bytes"] > 0.5 * embedded_model.size_bytes
    # Sampling and the kernel's high-water mark agree (the kernel's lags by at most a few per-thread
    # counter batches), and the reported peak is the larger of the two.
    assert m["peak_rss_ru_maxrss_bytes"] == pytest.approx(m["peak_rss_sampled_bytes"], rel=0.05)
    assert m["peak_rss_bytes"] == max(m["peak_rss_ru_maxrss_bytes"], m["peak_rss_sampled_bytes"])
    assert row["load_time_s"] > 0


@pytest.mark.model
def test_environment_is_recorded(run_row):
    row, _ = run_row
    env = row["environment"]
    assert env["packages"]["llama-cpp-python"] == env["backend"]["llama_cpp_python"]
    assert env["host"]["logical_cores"] >= 1 and env["host"]["ram_bytes"] > 0
    assert env["backend"]["llama_cpp_system_info"].startswith("CPU")
    assert env["python"] and env["bench_version"]


@pytest.mark.model
def test_thread_setting_reaches_the_backend(tmp_path, embedded_model):
    out = tmp_path / "r.jsonl"
    proc = run_bench("run", "-t", "1", "--prompt-tokens", "8", "--gen-tokens", "4", "--no-progress", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert read_jsonl(out)[0]["config"]["threads"] == 1


@pytest.mark.model
def test_a_gguf_path_runs_directly(tmp_path, embedded_gguf):
    out = tmp_path / "r.jsonl"
    proc = run_bench("run", "--model", str(embedded_gguf), "--prompt-tokens", "8", "--gen-tokens", "4",
                     "--no-progress", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    row = read_jsonl(out)[0]
    assert row["status"] == "ok" and row["model"]["quantization"] == "Q4_1"
    assert row["model"]["check"] == "none: a file given by path, not a catalog source"


@pytest.mark.model
@pytest.mark.parametrize("args,needle", [
    (["--prompt-tokens", "0"], "--prompt-tokens must be positive"),
    (["--gen-tokens", "-3"], "--gen-tokens must be positive"),
    (["--threads", "0"], "--threads must be positive"),
    (["-r", "2"], "at least 3"),
    (["--model", "no-such-model"], "unknown model 'no-such-model'"),
    (["--model", "smollm2-135m:q9_9"], "unknown variant 'q9_9'"),
    (["--model", "smollm2-135m:bf16"], "backend llama.cpp loads gguf"),
    (["--model", "./missing.gguf"], "model file not found"),
    (["--profile", "no-such-tier"], "unknown hardware profile 'no-such-tier'"),
    (["--backend", "vllm"], "unknown backend 'vllm'"),
    (["--prompt-tokens", "9000"], "exceed its context length 8192"),
    (["--prompt-tokens", "ten"], "expected integers"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, embedded_model, args, needle):
    out = tmp_path / "r.jsonl"
    proc = run_bench("run", *args, "-o", str(out))
    assert_clean_error(proc, needle)
    assert not out.exists()


@pytest.mark.model
def test_gpu_profile_without_gpu_is_refused(tmp_path, embedded_model):
    from bench.hardware.profiles import detect_gpus

    if detect_gpus():
        pytest.skip("this host has a GPU")
    proc = run_bench("run", "--profile", "cloud-t4", "-o", str(tmp_path / "r.jsonl"))
    assert_clean_error(proc, "needs a CUDA GPU")


@pytest.mark.model
def test_malformed_catalog_and_profile_via_cli(tmp_path):
    bad = tmp_path / "models.yaml"
    bad.write_text("schema_version: 1\nmodels:\n  - id: x\n   name: broken\n")
    assert_clean_error(run_bench("--catalog", str(bad), "run"), f"{bad}:4: malformed YAML")
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "t.yaml").write_text("id: t\nname: tier\ndevice: tpu\ncapacity: {threads: 1, ram_gb: 1}\n")
    assert_clean_error(run_bench("--profiles-dir", str(profiles), "run", "--profile", "t"), "t.yaml:3: device")


@pytest.mark.model
def test_backend_counters_bound_the_caller_side_rates(run_row):
    """llama.cpp's own timers count only its forward calls, so they can only be faster than what
    the caller sees (which adds sampling, detokenizing and Python), and they count every token."""
    row, _ = run_row
    for s in row["samples"]:
        c = s["backend_counters"]
        assert c["prefill_compute_tokens"] == P and c["decode_compute_tokens"] == N - 1
        assert s["backend_decode_tps"] >= s["decode_tps"]
        assert s["backend_prefill_tps"] >= s["prefill_tps"] * 0.999
    assert row["summary"]["backend_decode_tps"]["n"] == R


@pytest.mark.model
def test_peak_rss_is_not_inherited_from_a_big_parent():
    """Linux carries a process's RSS high-water mark across execve: a worker started by a parent
    that once held 400 MiB starts with ru_maxrss >= 400 MiB. The tracker must not report that."""
    import subprocess
    import sys

    child = ("import json; from bench.measuring.trackers import MemoryTracker\n"
             "with MemoryTracker() as m: pass\n"
             "print(json.dumps(m.report()))")
    parent = ("import subprocess, sys\n"
              "big = bytearray(400 * 2**20); big[::4096] = b'x' * len(big[::4096]); del big\n"
              f"print(subprocess.run([sys.executable, '-c', {child!r}], capture_output=True, text=True).stdout)")
    out = subprocess.run([sys.executable, "-c", parent], cwd=REPO, capture_output=True, text=True, check=True)
    import json

    report = json.loads(out.stdout)
    assert report["peak_rss_bytes"] < 200 * 2**20, report
    assert report["peak_rss_ru_maxrss_bytes"] is None and "inherited" in report["ru_maxrss_note"]


@pytest.mark.fast
def test_worker_results_are_read_as_types_whatever_the_pass_left():
    """The timed pass's and the task pass's results as the runner reads them: a full result, the
    watchdog's oom (status, reason, memory only) and a killed task pass's finished items."""
    from bench.measuring.worker import SpeedResult, TaskResult

    oom = SpeedResult.from_dict({"status": "oom", "reason": "over the cap", "memory": {"peak_rss_bytes": 5}})
    assert (oom.status, oom.reason, oom.memory, oom.samples, oom.caps_seen) == (
        "oom", "over the cap", {"peak_rss_bytes": 5}, [], {})
    ok = SpeedResult.from_dict({"status": "ok", "reason": None, "load_time_s": 0.5, "samples": [{"a": 1}],
                                "warmup_samples": [], "caps_seen": {"affinity_in_child": [0]},
                                "energy_source": "rapl", "environment": {"v": 1}, "memory": {}, "backend": None})
    assert ok.load_time_s == 0.5 and ok.samples == [{"a": 1}] and ok.energy_source == "rapl"
    killed = TaskResult.from_dict({"status": "timeout", "reason": "no result within 9 s", "partial": [
        {"_meta": {"shots": 2}}, {"correct": True, "seconds": 1.0}]})
    assert killed.partial and killed.asked == {"shots": 2} and killed.records == [{"correct": True, "seconds": 1.0}]
    nothing = TaskResult.from_dict({"status": "timeout", "reason": "r", "partial": [{"_meta": {"shots": 2}}]})
    assert nothing.partial and nothing.records == []
    failed = TaskResult.from_dict({"status": "failed", "reason": "BenchError: x"})
    assert not failed.partial and failed.asked == {} and failed.records == []
