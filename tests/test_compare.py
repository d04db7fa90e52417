"""`bench compare` on real runs of the embedded model: the same code twice is `same`; a run
throttled to one thread is `slower` and fails the gate; bad input is refused cleanly."""

from __future__ import annotations

import json

import pytest
from conftest import assert_clean_error, read_jsonl, run_bench

pytestmark = pytest.mark.model

LENGTHS = ("--prompt-tokens", "96", "--gen-tokens", "24", "-r", "5", "--no-progress")
# This shared VM drifts between back-to-back runs of identical code: five runs measured 137.5 to
# 156.9 decode tok/s (14%), each internally consistent. The gate's minimum effect must exceed the
# machine's run-to-run spread, so these tests use 25% (the throttled run's prefill drops ~50%).
GATE = ("--min-effect", "0.25")
# Same code twice is compared within one run: on 2026-12-01 two fresh-clone CI runs here measured
# prefill 160.6 then 243.8 tok/s, and 253.5 then 164.4, in back-to-back runs of identical code, with
# no load from other processes and no steal seen by the machine-state watch. Separate runs on this
# VM differ by more than any useful minimum effect; the even and odd repetitions of one run (same
# code, interleaved in time, so drift falls on both) are what "the same code twice" can mean here.


@pytest.fixture(scope="module")
def runs(tmp_path_factory, embedded_model):
    d = tmp_path_factory.mktemp("compare")
    # base (2 threads) and throttled (1 thread) come from one invocation, seconds apart, so a
    # transient loss of a CPU on this VM is less likely to fall on one side only.
    proc = run_bench("run", *LENGTHS, "--threads", "2,1", "-o", str(d / "both.jsonl"))
    assert proc.returncode == 0, proc.stderr
    for row in read_jsonl(d / "both.jsonl"):
        name = "base" if row["config"]["threads"] == 2 else "throttled"
        (d / f"{name}.jsonl").write_text(_undisturbed(row))
    ten = [a if a != "5" else "10" for a in LENGTHS]  # -r 10
    proc = run_bench("run", *ten, "--threads", "2", "-o", str(d / "ten.jsonl"))
    assert proc.returncode == 0, proc.stderr
    (row,) = read_jsonl(d / "ten.jsonl")
    (d / "same_a.jsonl").write_text(_undisturbed(_repetitions(row, 0)))
    (d / "same.jsonl").write_text(_undisturbed(_repetitions(row, 1)))
    return d


def _repetitions(row: dict, start: int) -> dict:
    """The row with every other counted repetition (from ``start``), its summary recomputed."""
    from bench.measuring.metrics import Timeline, summarize

    out = json.loads(json.dumps(row))
    out["samples"] = row["samples"][start::2]
    out["config"]["repetitions"] = len(out["samples"])
    out["summary"] = summarize([Timeline(t["prompt_tokens"], t["token_times"], t["prefill_end"])
                                for t in out["samples"]])
    return out


def _undisturbed(row: dict) -> str:
    """The row without its machine-state flags: these tests check the statistics; whether a
    disturbed machine is called `disturbed` is tested on its own below."""
    row["environment"].pop("machine_state", None)
    return json.dumps(row) + "\n"


def _gate(runs, new: str, tmp_path, expected_exit: int, base: str = "base") -> tuple[str, str]:
    """`bench compare BASE NEW` with the Markdown summary: (stderr, summary), exit status checked;
    on a wrong exit the message shows what compare printed."""
    summary = tmp_path / "summary.md"
    proc = run_bench("compare", str(runs / f"{base}.jsonl"), str(runs / f"{new}.jsonl"), *GATE, "--markdown",
                     str(summary))
    shown = proc.stdout + proc.stderr + (summary.read_text() if summary.exists() else "")
    assert proc.returncode == expected_exit, shown
    return proc.stderr, summary.read_text()


def test_same_code_is_same(runs, tmp_path):
    stderr, md = _gate(runs, "same", tmp_path, 0, base="same_a")
    assert "0 regression(s)" in stderr
    assert md.startswith("## bench compare") and "**OK**" in md
    assert "| smollm2-135m:q4_1 llama.cpp auto p=96 n=24 | same |" in md, md


def test_a_slower_run_is_slower_and_fails_the_gate(runs, tmp_path):
    """The odd repetitions of the run with every timestamp stretched x2 (the same tokens at half
    the speed, every per-token metric recomputed from the stretched timestamps): `slower`, a
    regression, against the even repetitions. (A real one-thread run is not used for this: on
    this VM a two-thread run sometimes collapses to one thread's speed.)"""
    (row,) = read_jsonl(runs / "same.jsonl")
    (runs / "stretched.jsonl").write_text(json.dumps(_stretched(row, 2.0)) + "\n")
    stderr, md = _gate(runs, "stretched", tmp_path, 1, base="same_a")
    assert "1 regression(s)" in stderr
    assert "**REGRESSION**" in md and "| **slower** |" in md
    prefill = next(ln for ln in md.splitlines() if "| prefill tok/s |" in ln)
    ratio = float(prefill.split("|")[6].split()[0])
    assert ratio < 0.75 and prefill.rstrip(" |").endswith("worse")


def test_a_changed_setting_is_named(runs, tmp_path):
    """Two threads against one, measured in one invocation: compare names the setting that changed."""
    md = tmp_path / "summary.md"
    proc = run_bench("compare", str(runs / "base.jsonl"), str(runs / "throttled.jsonl"), *GATE, "--markdown", str(md))
    # whether 1 thread is measurably slower than 2 depends on this VM's moment (see the slower test's
    # docstring); compare's exit status must say what its count says: 1 with a regression, else 0
    regressions = int(proc.stderr.rsplit(" regression(s)", 1)[0].rsplit(" ", 1)[1])
    assert proc.returncode == (1 if regressions else 0), proc.stderr
    assert "Traceback" not in proc.stderr
    assert "threads: 2 -> 1" in md.read_text()


def _stretched(row: dict, k: float) -> dict:
    """The row as if every token had taken k times as long: timestamps scaled, per-repetition
    metrics and the summary recomputed from them."""
    from bench.measuring.metrics import Timeline, summarize
    from bench.measuring.runner import _sample_record

    out = json.loads(json.dumps(row))
    traces = [{**t, "token_times": [x * k for x in t["token_times"]], "prefill_end": t["prefill_end"] * k}
              for t in out["samples"]]
    out["samples"] = [_sample_record(t) for t in traces]
    out["summary"] = summarize([Timeline(t["prompt_tokens"], t["token_times"], t["prefill_end"]) for t in traces])
    return out


def test_normalize_uses_each_rows_calibration(runs, tmp_path):
    """The new run's rows claim a machine with half the bandwidth and matmul rate: normalized,
    its measured speed counts double, so the same code is no longer `slower` or `same` but `faster`."""
    halved = tmp_path / "slower-machine.jsonl"
    rows = read_jsonl(runs / "same.jsonl")
    for r in rows:
        cal = r["environment"]["calibration"]
        cal["memory_bandwidth_bytes_per_s"] /= 2
        cal["matmul_flop_per_s"] /= 2
    halved.write_text("".join(json.dumps(r) + "\n" for r in rows))
    plain = run_bench("compare", str(runs / "same_a.jsonl"), str(halved), *GATE)
    assert plain.returncode == 0 and "same" in plain.stdout
    norm = run_bench("compare", str(runs / "same_a.jsonl"), str(halved), *GATE, "--normalize")
    assert norm.returncode == 0, norm.stdout + norm.stderr
    assert "faster" in norm.stdout and "x2.000" in norm.stdout.replace("\n", "")


def test_different_hardware_warns_loudly_or_refuses(runs, tmp_path):
    other = tmp_path / "other-host.jsonl"
    rows = read_jsonl(runs / "same.jsonl")
    for r in rows:
        r["environment"]["host"]["cpu_model"] = "Some Other CPU"
        r["environment"]["packages"]["llama-cpp-python"] = "0.0.1"
    other.write_text("".join(json.dumps(r) + "\n" for r in rows))
    proc = run_bench("compare", str(runs / "base.jsonl"), str(other))
    assert "WARNING: DIFFERENT HARDWARE OR LIBRARIES" in proc.stderr
    assert "Some Other CPU" in proc.stderr and "llama-cpp-python" in proc.stderr
    assert_clean_error(run_bench("compare", str(runs / "base.jsonl"), str(other), "--strict-env"),
                       "--strict-env", "DIFFERENT HARDWARE")


def test_no_matching_cells_says_so(runs, tmp_path):
    other = tmp_path / "other-cell.jsonl"
    rows = read_jsonl(runs / "same.jsonl")
    for r in rows:
        r["config"]["prompt_tokens"] = 4096
    other.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert_clean_error(run_bench("compare", str(runs / "base.jsonl"), str(other)), "no matching cells")


def test_compare_bad_input(runs, tmp_path):
    assert_clean_error(run_bench("compare", str(runs / "base.jsonl"), str(tmp_path / "nope.jsonl")), "not found")
    assert_clean_error(run_bench("compare", str(runs / "base.jsonl"), str(runs / "same.jsonl"), "--gate", "speed"),
                       "unknown gated metric 'speed'")


def test_quality_and_memory_regressions_fail_the_gate(measured_results, tmp_path):
    """The Q8_0 rows (with their measured KLD) against copies whose KLD grew by 0.05 nats and whose
    peak RSS grew by half: speed is the same rows', so only the quality and memory gates can fire."""
    rows = [r for r in read_jsonl(measured_results)
            if r["status"] == "ok" and r["config"]["variant_id"] == "q8_0-derived"]
    base, new = tmp_path / "base.jsonl", tmp_path / "new.jsonl"
    base.write_text("".join(json.dumps(r) + "\n" for r in rows))
    for r in rows:
        r["quality"]["kld"]["mean"] += 0.05
        r["memory"]["peak_rss_bytes"] = int(r["memory"]["peak_rss_bytes"] * 1.5)
    new.write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = tmp_path / "s.md"
    proc = run_bench("compare", str(base), str(new), "--allow-inconclusive", "--markdown", str(summary))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    md = summary.read_text()
    # 3 repetitions per side cannot test speed (inconclusive, allowed here); memory and KLD still fail
    assert md.count("| **inconclusive, peak RSS bytes, KLD mean worse** |") == 2
    assert "+0.0500 nats" in md and "grew more than 10%" in md
    # the same rows against themselves: no regression once inconclusive speed is allowed
    assert run_bench("compare", str(base), str(base), "--allow-inconclusive").returncode == 0


def test_three_repetitions_are_inconclusive_and_fail_unless_allowed(measured_results, tmp_path):
    """With 3 vs 3 samples the U test's smallest p is 0.1: compare must not call that `same`."""
    summary = tmp_path / "s.md"
    proc = run_bench("compare", str(measured_results), str(measured_results), "--markdown", str(summary))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    md = summary.read_text()
    assert "| **inconclusive** |" in md and "run with -r 5 or more" in md and "--allow-inconclusive" in md
    assert run_bench("compare", str(measured_results), str(measured_results), "--allow-inconclusive").returncode == 0


def test_a_cell_that_lost_its_measurement_is_a_regression(measured_results, tmp_path):
    rows = [r for r in read_jsonl(measured_results)
            if r["status"] == "ok" and r["config"]["variant_id"] == "q8_0-derived"]
    base, new = tmp_path / "base.jsonl", tmp_path / "new.jsonl"
    base.write_text("".join(json.dumps(r) + "\n" for r in rows))
    for r in rows:
        r["quality"] = {"status": "failed", "reason": "reference pass: worker crashed"}
        r["memory"].pop("peak_rss_bytes")
    new.write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = tmp_path / "s.md"
    proc = run_bench("compare", str(base), str(new), "--allow-inconclusive", "--markdown", str(summary))
    assert proc.returncode == 1
    md = summary.read_text()
    assert "not measured in the new run" in md and "new run: failed reference pass: worker crashed" in md


def test_a_speed_change_on_a_disturbed_machine_is_disturbed_not_slower(runs, tmp_path):
    """The same code, its new run halved in speed while the row says other processes held the
    cores: `disturbed`, which fails the gate until measured again, never `slower`."""
    (row,) = read_jsonl(runs / "same.jsonl")
    for s in row["samples"]:
        for key in ("decode_tps", "prefill_tps"):
            s[key] /= 2
    row["environment"]["machine_state"] = {"flags": ["other processes used 48% of the pinned cores"],
                                           "disturbed": True}
    busy = tmp_path / "busy.jsonl"
    busy.write_text(json.dumps(row) + "\n")
    md = tmp_path / "summary.md"
    proc = run_bench("compare", str(runs / "base.jsonl"), str(busy), *GATE, "--markdown", str(md))
    assert proc.returncode == 1, proc.stdout
    assert "| **disturbed** |" in md.read_text() and "slower" not in md.read_text()
    assert "new run: other processes used 48% of the pinned cores" in md.read_text()
    allowed = run_bench("compare", str(runs / "base.jsonl"), str(busy), *GATE, "--allow-inconclusive")
    assert allowed.returncode == 0, allowed.stdout
