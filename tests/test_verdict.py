"""`bench verdict` on real rows: the embedded model passes laptop-4c-8g and fails a 50 MB tier."""

from __future__ import annotations

import json

import pytest
from conftest import REPO, assert_clean_error, run_bench

CLAIMS = """\
schema_version: 1
name: Test claim
inexpensive:
  tiers: [laptop-4c-8g, tiny-50m]
criteria:
  decode_tps_min: 5.3
  ttft_s_max: 2.0
  ttft_min_prompt_tokens: 128
  fits: true
  kld_max: 0.1
"""


@pytest.fixture(scope="module")
def verdict(tmp_path_factory, measured_results):
    d = tmp_path_factory.mktemp("verdict")
    (d / "claims.yaml").write_text(CLAIMS)
    proc = run_bench("verdict", str(measured_results), "--claims", str(d / "claims.yaml"),
                     "--markdown", str(d / "v.md"))
    assert proc.returncode == 0, proc.stderr
    return proc, (d / "v.md").read_text()


def _line(md: str, tier: str) -> list[str]:
    line = next(ln for ln in md.splitlines() if ln.startswith(f"| smollm2-135m | {tier} |"))
    return [c.strip() for c in line.split("|")]


def test_passes_one_tier_and_fails_another(verdict):
    _, md = verdict
    laptop, tiny = _line(md, "laptop-4c-8g"), _line(md, "tiny-50m")
    assert "**pass**" in laptop and "**FAIL**" in tiny
    assert any(c.startswith("FAIL: does not fit") for c in tiny)
    assert any(c.startswith("pass: KLD pass:") for c in laptop)  # quality retained, from the measured KLD
    # decode on the emulated laptop: the projection's pessimistic end, never this host's speed
    assert any(c.startswith("pass: ") and "tok/s PROJECTED" in c and ">= 5.3" in c for c in laptop)


def test_grouped_by_country_with_cheapest_passing_tier(verdict):
    proc, md = verdict
    assert "## Models from US" in md  # SmolLM2's developer, from the catalog facts stored in each row
    assert "smollm2-135m: cheapest passing tier laptop-4c-8g" in md
    assert "an inexpensive tier" in md
    assert "cheapest passing tier laptop-4c-8g" in proc.stdout


def test_unmeasured_criteria_are_never_a_pass(measured_results, tmp_path):
    claims = tmp_path / "claims.yaml"
    claims.write_text(CLAIMS + "  accuracy_retained_min: 0.99\n")
    text = claims.read_text().replace("  kld_max: 0.1\n", "")
    claims.write_text(text)
    proc = run_bench("verdict", str(measured_results), "--claims", str(claims), "--markdown", str(tmp_path / "v.md"))
    assert proc.returncode == 0, proc.stderr
    laptop = _line((tmp_path / "v.md").read_text(), "laptop-4c-8g")
    # only the F16 reference can pass (it is its own reference); no row measured task accuracy
    assert "f16 / llama.cpp (best of 2 configuration(s))" in laptop and "**pass**" in laptop


def test_default_claims_file_loads_and_bad_claims_name_the_line(measured_results, tmp_path):
    proc = run_bench("verdict", str(measured_results), "--claims", str(REPO / "claims.yaml"))
    assert proc.returncode == 0, proc.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text(CLAIMS.replace("decode_tps_min: 5.3", "decode_tps_min: fast"))
    assert_clean_error(run_bench("verdict", str(measured_results), "--claims", str(bad)), f"{bad}:6:", "decode_tps_min")
    bad.write_text("schema_version: 1\nname: [unclosed\n")
    assert_clean_error(run_bench("verdict", str(measured_results), "--claims", str(bad)), f"{bad}:", "malformed YAML")


def test_every_measured_workload_of_a_configuration_must_pass(tmp_path, embedded_model):
    """One configuration measured at two prompt lengths, with a TTFT bound between the two TTFTs
    of the same run (projected onto the tier): the long prompt fails it, so the configuration and
    the tier fail."""
    import json
    import math

    out = tmp_path / "r.jsonl"
    proc = run_bench("run", "-p", "laptop-4c-8g", "--prompt-tokens", "128,1024", "--gen-tokens", "8", "-r", "3",
                     "--no-progress", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    rows = list(map(json.loads, out.read_text().splitlines()))
    assert rows[1]["summary"]["ttft_s"]["mean"] > rows[0]["summary"]["ttft_s"]["mean"]  # measured here
    # the emulated laptop is judged on its projected TTFT's pessimistic end, one per prompt length
    ttft = {r["config"]["prompt_tokens"]: r["efficiency"]["projection"]["ttft_s"]["high"] for r in rows}
    assert ttft[1024] > ttft[128]
    claims = tmp_path / "claims.yaml"
    claims.write_text(f"schema_version: 1\nname: t\ninexpensive: {{tiers: [laptop-4c-8g]}}\ncriteria:\n"
                      f"  ttft_s_max: {math.sqrt(ttft[128] * ttft[1024]):.6f}\n  fits: true\n")
    proc = run_bench("verdict", str(out), "--claims", str(claims), "--markdown", str(tmp_path / "v.md"))
    assert proc.returncode == 0, proc.stderr
    row = _line((tmp_path / "v.md").read_text(), "laptop-4c-8g")
    assert "**FAIL**" in row and any(c.startswith("FAIL: ") and "at p=1024" in c for c in row)
    assert "q4_1 / llama.cpp (best of 1 configuration(s))" in row


RUN_CLAIMS = """\
schema_version: 1
name: Test claim, measured by the command
inexpensive:
  tiers: [laptop-4c-8g, cloud-t4]
criteria:
  decode_tps_min: 5.3
  ttft_s_max: 5.0
  ttft_min_prompt_tokens: 16
  fits: true
  kld_max: 0.1
measure:
  prompt_tokens: 16
  gen_tokens: 8
  repetitions: 3
  quality: {n_ctx: 64, chunks: 1, reference: f16}
"""


def test_verdict_run_measures_what_the_claims_need_then_judges(tmp_path, embedded_model):
    """One command from a model to a verdict: speed on each tier this host can emulate, quality once
    on the host as it is (and read from there for every tier), a CUDA tier listed as not measured;
    a second run finds every cell done and runs none."""
    claims = tmp_path / "claims.yaml"
    claims.write_text(RUN_CLAIMS)
    out, md = tmp_path / "verdict.jsonl", tmp_path / "v.md"
    args = ("verdict", "--run", "-m", "smollm2-135m:q8_0-derived", "--claims", str(claims), "-o", str(out),
            "--markdown", str(md), "--no-progress")
    proc = run_bench(*args)
    assert proc.returncode == 0, proc.stderr
    assert "verdict plan: 2 cell(s), 0 already in" in proc.stderr and "rough estimate" in proc.stderr
    assert "not measured here: cloud-t4" in proc.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    by_tier = {r["config"]["profile_id"]: r for r in rows}
    assert set(by_tier) == {"auto", "laptop-4c-8g"}
    assert by_tier["auto"]["quality"]["status"] == "ok" and not by_tier["laptop-4c-8g"]["quality"]
    laptop, t4 = _line_of(md.read_text(), "laptop-4c-8g"), _line_of(md.read_text(), "cloud-t4")
    quality = next(c for c in laptop if c.startswith("pass: KLD"))
    assert "measured on auto@" in quality  # quality read from the auto row
    assert "not measured: a CUDA tier" in t4[-1] and "**unmeasured**" in t4[-2]
    again = run_bench(*args)
    assert again.returncode == 0 and "verdict plan: 2 cell(s), 2 already in" in again.stderr
    assert len(out.read_text().splitlines()) == 2


def _line_of(md: str, tier: str) -> list[str]:
    line = next(ln for ln in md.splitlines() if ln.startswith(f"| smollm2-135m | {tier} |"))
    return [c.strip() for c in line.split("|")][1:-1]


def test_verdict_needs_results_or_run():
    assert_clean_error(run_bench("verdict"), "needs results files or folders, or --run")


SLOW_AND_FAST = """\
schema_version: 1
id: {id}
name: test tier {id}
device: cpu
capacity: {{threads: 2, ram_gb: 4, reserve_ram_gb: 0}}
price: {{basis: on_demand, usd_per_hour: 0.1, source: "test fixture"}}
performance:
  memory_bandwidth: [{{value: {bw}, kind: measured, tool: test, source: "test fixture", read: 2026-12-01}}]
"""


def test_a_slow_tier_is_judged_by_its_projection_not_this_hosts_speed(tmp_path, embedded_model):
    """The same cell run under two emulated tiers' caps reaches this host's speed on both (well
    above 5.3 tok/s); the tier whose stated bandwidth makes the projection's pessimistic end slower
    than 5.3 fails on speed, the other passes, and a tier without figures is `unmeasured`."""
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "slow.yaml").write_text(SLOW_AND_FAST.format(id="slow", bw=0.1))  # a 0.1 GB/s machine
    (profiles / "fast.yaml").write_text(SLOW_AND_FAST.format(id="fast", bw=100))
    (profiles / "bare.yaml").write_text("\n".join(SLOW_AND_FAST.format(id="bare", bw=1).splitlines()[:-1]) + "\n")
    out = tmp_path / "r.jsonl"
    proc = run_bench("--profiles-dir", str(profiles), "run", "-p", "slow,fast,bare", "--prompt-tokens", "32",
                     "--gen-tokens", "16", "-r", "3", "--no-progress", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    rows = {r["config"]["profile_id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert all(r["summary"]["decode_tps"]["mean"] > 5.3 for r in rows.values())  # this host's speed, every tier
    slow_low = rows["slow"]["efficiency"]["projection"]["decode_tps"]["low"]
    assert slow_low < 5.3 < rows["fast"]["efficiency"]["projection"]["decode_tps"]["low"]
    claims = tmp_path / "claims.yaml"
    claims.write_text("schema_version: 1\nname: t\ninexpensive: {tiers: [slow, fast, bare]}\ncriteria:\n"
                      "  decode_tps_min: 5.3\n  fits: true\n")
    proc = run_bench("--profiles-dir", str(profiles), "verdict", str(out), "--claims", str(claims),
                     "--markdown", str(tmp_path / "v.md"))
    assert proc.returncode == 0, proc.stderr
    md = (tmp_path / "v.md").read_text()
    slow, fast, bare = (_line_of(md, t) for t in ("slow", "fast", "bare"))
    assert "**FAIL**" in slow and any(c.startswith(f"FAIL: {slow_low:.1f} tok/s PROJECTED") for c in slow)
    assert "**pass**" in fast and any(c.startswith("pass: ") and "PROJECTED" in c for c in fast)
    assert "**unmeasured**" in bare and any("caps only" in c for c in bare)
    assert "speed: projected from" in slow[-1] and "speed: caps only" in bare[-1]
    assert "cheapest passing tier fast" in md
