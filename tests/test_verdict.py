"""`bench verdict` on real rows: the embedded model passes laptop-4c-8g and fails a 50 MB tier."""

from __future__ import annotations

import json
from pathlib import Path

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


def verdict_json(*args: str, catalog: Path | None = None) -> dict:
    """``bench verdict ARGS --json``: every tier's verdict, checks and reasons in full."""
    proc = run_bench(*(("--catalog", str(catalog)) if catalog else ()), "verdict", *args, "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def tier_of(v: dict, tier: str, model: str = "smollm2-135m") -> dict:
    return next(t for t in v["tiers"] if t["model"] == model and t["tier"] == tier)


def check_of(t: dict, criterion: str) -> dict:
    return next(c for c in t["checks"] if c["criterion"] == criterion)


NO_QUALITY = CLAIMS.replace("  kld_max: 0.1\n", "")


@pytest.fixture(scope="module")
def verdict(tmp_path_factory, measured_results):
    """The verdict on speed and fit alone (no quality criterion): the F16 and Q8_0 rows."""
    d = tmp_path_factory.mktemp("verdict")
    (d / "claims.yaml").write_text(NO_QUALITY)
    args = (str(measured_results), "--claims", str(d / "claims.yaml"))
    proc = run_bench("verdict", *args, "--markdown", str(d / "v.md"), "--html", str(d / "v.html"))
    assert proc.returncode == 0, proc.stderr
    return proc, (d / "v.md").read_text(), verdict_json(*args)


@pytest.mark.model
def test_passes_one_tier_and_fails_another(verdict):
    _, _, v = verdict
    laptop, tiny = tier_of(v, "laptop-4c-8g"), tier_of(v, "tiny-50m")
    assert laptop["outcome"] == "pass" and tiny["outcome"] == "fail"
    assert check_of(tiny, "fits")["outcome"] == "fail" and check_of(tiny, "fits")["short"] == "does not fit"
    # decode on the emulated laptop: the projection's pessimistic end, never this host's speed
    decode = check_of(laptop, "decode tok/s")
    assert decode["outcome"] == "pass" and "tok/s PROJECTED" in decode["value"] and ">= 5.3" in decode["value"]
    assert laptop["basis_tag"] == "PROJECTED" and tier_of(v, f"auto@{laptop['row']['host']}")["basis_tag"] == "measured"


@pytest.mark.model
def test_the_answer_comes_first_per_origin_with_the_cheapest_passing_tier(verdict):
    proc, md, v = verdict
    first = md.split("\n\n")[1]  # the paragraph under the title
    assert first.startswith("From US: smollm2-135m passes on laptop-4c-8g")
    assert "the cheapest tier where a model passes" in first
    assert first in proc.stdout.replace("\n", " ") or first[:60] in proc.stdout
    assert v["cheapest"] == {"smollm2-135m": "laptop-4c-8g"} and v["answer"][0] == first


@pytest.mark.model
def test_the_dashboard_is_short_cells_numbered_reasons_and_fits_120_columns(verdict):
    proc, md, v = verdict
    assert max(len(line) for line in proc.stdout.splitlines()) <= 120
    table = [ln for ln in md.splitlines() if ln.startswith("| tiny-50m |")][0]
    cells = [c.strip() for c in table.split("|")[1:-1]]
    # tier, $/h, variant, fits, decode, TTFT, verdict, basis: one short cell each
    assert cells[3] == "FAIL does not fit" and cells[4].startswith("? (") and cells[6] == "**FAIL**"
    n = int(cells[4][3:-1])
    reason = md.split("## Reasons")[1].splitlines()[1 + n]
    assert reason.startswith(f"{n}. does_not_fit: weights + KV cache need")  # the reason, once, under the table
    assert md.count("does_not_fit: weights + KV cache need") == 1
    assert all(len(c) <= 20 for c in cells)
    assert any(r.startswith("does_not_fit: weights + KV cache need") for r in v["reasons"])


@pytest.mark.model
def test_quality_is_judged_against_the_original_release_only(measured_results, tmp_path):
    """The catalog's F16 of the embedded model is its Q4_1 weights upcast: a KLD against it is
    shown but does not count, so no tier passes on quality, and the F16 is not its own reference."""
    claims = tmp_path / "claims.yaml"
    claims.write_text(CLAIMS + "  accuracy_retained_min: 0.99\n")
    md = tmp_path / "v.md"
    proc = run_bench("verdict", str(measured_results), "--claims", str(claims), "--markdown", str(md))
    assert proc.returncode == 0, proc.stderr
    assert "reference f16 is derived from q4_1, not the original release bf16" in md.read_text()
    v = verdict_json(str(measured_results), "--claims", str(claims))
    laptop = tier_of(v, "laptop-4c-8g")
    quality = check_of(laptop, "quality retained")
    assert laptop["outcome"] == "unmeasured" and quality["outcome"] == "unmeasured"
    kld = next(p for p in quality["parts"] if p["criterion"] == "KLD")
    assert kld["outcome"] == "unmeasured" and kld["value"].startswith("KLD 0.0")  # shown, not counted
    assert v["cheapest"] == {"smollm2-135m": None}
    for t in v["tiers"]:  # no row passes quality: not the Q8_0 (against f16), not the F16 itself
        if t["checks"]:
            assert check_of(t, "quality retained")["outcome"] != "pass", t


@pytest.mark.model
def test_default_claims_file_loads_and_bad_claims_name_the_line(measured_results, tmp_path):
    proc = run_bench("verdict", str(measured_results), "--claims", str(REPO / "claims.yaml"))
    assert proc.returncode == 0, proc.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text(CLAIMS.replace("decode_tps_min: 5.3", "decode_tps_min: fast"))
    assert_clean_error(run_bench("verdict", str(measured_results), "--claims", str(bad)), f"{bad}:6:", "decode_tps_min")
    bad.write_text("schema_version: 1\nname: [unclosed\n")
    assert_clean_error(run_bench("verdict", str(measured_results), "--claims", str(bad)), f"{bad}:", "malformed YAML")


@pytest.mark.model
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
    laptop = tier_of(verdict_json(str(out), "--claims", str(claims)), "laptop-4c-8g")
    ttft = check_of(laptop, "TTFT")
    assert laptop["outcome"] == "fail" and ttft["outcome"] == "fail" and "at p=1024" in ttft["value"]
    assert laptop["configuration"] == "q4_1 / llama.cpp" and laptop["configurations"] == 1


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


@pytest.mark.slow
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
    assert "Not measured: cloud-t4 (a CUDA tier and this host has no GPU)." in md.read_text()
    again = run_bench(*args, "--json")
    assert again.returncode == 0 and "verdict plan: 2 cell(s), 2 already in" in again.stderr
    assert len(out.read_text().splitlines()) == 2
    v = json.loads(again.stdout)
    laptop, t4 = tier_of(v, "laptop-4c-8g"), tier_of(v, "cloud-t4")
    quality = check_of(laptop, "quality retained")
    assert "measured on auto@" in quality["value"]  # quality read from the auto row
    assert "against f16 does not count" in quality["value"]  # q8_0-derived's reference is not the original
    assert t4["outcome"] == "unmeasured" and t4["missing"] == "a CUDA tier and this host has no GPU"


@pytest.mark.fast
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


@pytest.mark.model
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
    proc = run_bench("--profiles-dir", str(profiles), "verdict", str(out), "--claims", str(claims), "--json")
    assert proc.returncode == 0, proc.stderr
    v = json.loads(proc.stdout)
    slow, fast, bare = (tier_of(v, t) for t in ("slow", "fast", "bare"))
    assert slow["outcome"] == "fail" and check_of(slow, "decode tok/s")["value"].startswith(
        f"{slow_low:.1f} tok/s PROJECTED")
    assert fast["outcome"] == "pass" and "PROJECTED" in check_of(fast, "decode tok/s")["value"]
    assert bare["outcome"] == "unmeasured" and "caps only" in check_of(bare, "decode tok/s")["value"]
    assert slow["basis_tag"] == fast["basis_tag"] == "PROJECTED" and bare["basis_tag"] == "emulated"
    assert "speed: projected from" in slow["basis"] and "speed: caps only" in bare["basis"]
    assert v["cheapest"] == {"smollm2-135m": "fast"}


@pytest.mark.model
def test_a_kld_against_the_original_release_counts(tmp_path, embedded_model):
    """A catalog whose original release is a local file (what a user does to judge quality offline:
    give the original variant a `path:` source): a Q8_0 made from it is judged on its KLD against
    it, and the original is its own reference. The file standing in for the release here is the
    embedded model's F16 (a test fixture, not a real release)."""
    from bench.models.store import ModelStore

    release = ModelStore().derive_from(embedded_model, "F16")
    catalog = tmp_path / "models.yaml"
    catalog.write_text(f"""\
schema_version: 1
default_model: fixture
models:
  - id: fixture
    name: test fixture
    family: smollm2
    developer: test fixture
    country: US
    original: release
    variants:
      - id: release
        kind: base
        format: gguf
        quantization: F16
        source: {{path: {release.path}}}
      - id: q8
        kind: quantized
        format: gguf
        quantization: Q8_0
        reference: release
        source: {{derive: {{from: release, recipe: Q8_0}}}}
""")
    out = tmp_path / "r.jsonl"
    proc = run_bench("--catalog", str(catalog), "run", "-m", "fixture", "-v", "q8", "-v", "release", "-p", "auto",
                     "--prompt-tokens", "128", "--gen-tokens", "8", "-r", "3", "--quality", "--quality-chunks", "2",
                     "--no-progress", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    claims = tmp_path / "claims.yaml"
    claims.write_text("schema_version: 1\nname: t\ninexpensive: {}\ncriteria:\n  fits: true\n  kld_max: 0.1\n")
    v = verdict_json(str(out), "--claims", str(claims), catalog=catalog)
    (t,) = v["tiers"]
    quality = check_of(t, "quality retained")
    assert t["configurations"] == 2 and quality["outcome"] == "pass"
    rows = {r["config"]["variant_id"]: r for r in map(json.loads, out.read_text().splitlines())}
    kld = rows["q8"]["quality"]["kld"]["mean"]
    assert 0 < kld < 0.1
    # each configuration on its own: the Q8_0 passes on its KLD against the release, the release is its own reference
    for variant, value in (("q8", f"{kld:.4f} (<= 0.1)"), ("release", "is the original release (its own reference)")):
        one = tmp_path / f"{variant}.jsonl"
        one.write_text(json.dumps(rows[variant]) + "\n")
        (t,) = verdict_json(str(one), "--claims", str(claims), catalog=catalog)["tiers"]
        (part,) = check_of(t, "quality retained")["parts"]
        assert part["outcome"] == "pass" and part["value"] == value, part
