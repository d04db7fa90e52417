"""Quality retained against a published score: the comparison on known cases, the catalog's sourced
figures, and the verdict reading it from real rows."""

from __future__ import annotations

import json
import math

import pytest
import yaml
from conftest import REPO, read_jsonl, run_bench

from bench.quality.published import compare_with_published, published_for, wilson_upper

PUBLISHED = {"task": "humaneval", "value": 0.707, "metric": "pass@1", "shots": 0, "variant": "bf16",
             "harness": "EvalPlus (Qwen's evaluation code)", "source": "https://arxiv.org/abs/2409.12186"}


def _measured(correct: int, n: int, shots: int = 0) -> dict:
    p = correct / n
    return {"accuracy": p, "accuracy_se": math.sqrt(p * (1 - p) / n), "items": n, "correct": correct,
            "shots": shots, "metric": "pass@1"}


@pytest.mark.fast
def test_wilson_upper_bound_on_known_values():
    # p = 0.5, n = 100, z = 1.96: (0.5 + 0.019208 + 1.96 sqrt(0.0025 + 0.00009604)) / 1.038416
    #   = (0.5 + 0.019208 + 0.099865) / 1.038416 = 0.59617
    assert wilson_upper(0.5, 100) == pytest.approx(0.59617, abs=1e-4)
    assert 0 < wilson_upper(0.0, 40) < 0.1 and wilson_upper(1.0, 40) == 1.0  # no zero-width interval at the ends


@pytest.mark.fast
def test_a_measurement_consistent_with_the_published_score_passes():
    check = compare_with_published(_measured(27, 40), PUBLISHED, 0.99)  # 67.5% of 70.7%: within sampling error
    assert check.outcome == "pass"
    assert check.value.startswith("67.5% ± 7.4% (27/40) of 70.7% published (95%;")
    assert "vs published: different harness (EvalPlus (Qwen's evaluation code))" in check.value


@pytest.mark.fast
def test_a_measurement_far_below_it_fails_and_inform_only_never_passes():
    low = compare_with_published(_measured(12, 40), PUBLISHED, 0.99)  # 30%: even its upper bound < 70%
    assert low.outcome == "fail" and "< 99%" in low.value
    inform = compare_with_published(_measured(27, 40), PUBLISHED, 0.99, may_pass=False)
    assert inform.outcome == "unmeasured" and inform.value.startswith("informs only")


@pytest.mark.fast
def test_differences_are_named():
    check = compare_with_published(_measured(12, 50, shots=4), {**PUBLISHED, "task": "gsm8k", "value": 0.30,
                                                                 "shots": 5, "metric": "accuracy"}, 0.99)
    assert "5-shot there, 4-shot here" in check.value and "metric accuracy there, pass@1 here" in check.value


@pytest.mark.fast
def test_a_comparison_no_outcome_could_fail_is_unmeasured():
    """SmolLM2-135M's published GSM8K is 1.4%: at 20 items even 0 correct has a 95% upper bound above
    it, so the comparison cannot fail and is never a pass; with enough items it can, and does."""
    floor = {**PUBLISHED, "task": "gsm8k", "value": 0.014, "shots": 5, "metric": "accuracy"}
    small = compare_with_published(_measured(0, 20, shots=5), floor, 0.99)
    assert small.outcome == "unmeasured" and "not even 0 correct could fail it" in small.value
    assert wilson_upper(0.0, 400) < 0.99 * 0.014  # 400 items can tell 0% from 1.4%
    assert compare_with_published(_measured(0, 400, shots=5), floor, 0.99).outcome == "fail"


@pytest.mark.fast
def test_the_catalog_carries_sourced_published_scores():
    catalog = yaml.safe_load((REPO / "models.yaml").read_text())
    models = {m["id"]: m for m in catalog["models"]}
    qwen = published_for(models["qwen2.5-coder-1.5b-instruct"], "humaneval")
    assert qwen["value"] == 0.707 and qwen["source"] == "https://arxiv.org/abs/2409.12186" and "70.7" in qwen["quote"]
    assert published_for(models["smollm2-135m"], "humaneval") is None  # its developer published none
    assert published_for(models["smollm2-135m"], "gsm8k")["shots"] == 5
    for m in catalog["models"]:
        for score in m.get("published_scores") or []:
            assert score["source"].startswith("https://") and score["quote"] and score["read"]


SUMS = """\
schema_version: 1
name: sums
description: two-number sums
metric: accuracy
dataset:
  source: {path: sums.jsonl}
  fields: [a, b, total]
defaults: {shots: 1, limit: 3, max_new_tokens: 12, n_ctx: 256}
prompt:
  completion:
    shot: "Q: {a} + {b} = ?\\nA: {total}\\n\\n"
    item: "Q: {a} + {b} = ?\\nA:"
    stop: ["\\nQ:"]
score: {kind: number, gold: "{total}"}
"""

CLAIMS = """\
schema_version: 1
name: t
inexpensive: {tiers: [laptop-4c-8g]}
criteria:
  fits: true
  accuracy_retained_min: 0.99
  published_comparison: %s
"""


@pytest.mark.model
def test_the_verdict_compares_with_the_published_score(tmp_path, embedded_model):
    """Real rows of a task the embedded model's catalog entry has a published score for: the
    quality criterion reads `accuracy retained vs published`, with the same outcome as the pure
    comparison on the row's numbers; with `inform` it shows it and stays unmeasured."""
    (tmp_path / "sums.jsonl").write_text("".join(f'{{"a": {a}, "b": {b}, "total": {a + b}}}\n'
                                                 for a, b in ((1, 2), (2, 2), (3, 4), (10, 5))))
    (tmp_path / "sums.yaml").write_text(SUMS)
    catalog = yaml.safe_load((REPO / "models.yaml").read_text())
    smol = next(m for m in catalog["models"] if m["id"] == "smollm2-135m")
    # 90%: high enough that 3 items can fail it (at 50% not even 0 of 3 could: compare_with_published)
    published = {"task": "sums", "value": 0.9, "metric": "accuracy", "shots": 1, "variant": "bf16",
                 "harness": "a test's own", "source": "https://example.org/sums", "quote": "sums: 90.0",
                 "read": "2026-12-03"}
    smol["published_scores"] = [published]
    (tmp_path / "models.yaml").write_text(yaml.safe_dump(catalog, sort_keys=False))
    out = tmp_path / "r.jsonl"
    proc = run_bench("--catalog", str(tmp_path / "models.yaml"), "run", "--no-progress", "--prompt-tokens", "8",
                     "--gen-tokens", "4", "--task", str(tmp_path / "sums.yaml"), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    row = read_jsonl(out)[0]
    assert row["task"]["id"] == "sums" and row["model"]["facts"]["published_scores"] == [published]
    expected = compare_with_published(row["task"], published, 0.99)
    for mode, outcome in (("may_pass", expected.outcome), ("inform", "unmeasured")):
        (tmp_path / "claims.yaml").write_text(CLAIMS % mode)
        parts = _quality_parts(tmp_path, out)
        vs = parts["accuracy retained vs published"]
        assert vs["outcome"] == outcome, vs
        assert "of 90.0% published" in vs["value"] and "vs published: different harness (a test's own)" in vs["value"]


def _quality_parts(tmp_path, results) -> dict[str, dict]:
    """SmolLM2's quality criterion on laptop-4c-8g from ``bench verdict --json``: its parts by name."""
    proc = run_bench("verdict", str(results), "--claims", str(tmp_path / "claims.yaml"), "--json")
    assert proc.returncode == 0, proc.stderr
    (tier,) = [t for t in json.loads(proc.stdout)["tiers"] if t["model"] == "smollm2-135m" and t["checks"]]
    (quality,) = [c for c in tier["checks"] if c["criterion"] == "quality retained"]
    return {p["criterion"]: p for p in quality["parts"]}


@pytest.mark.model
def test_a_kld_against_a_derived_reference_leaves_the_published_score_in_use(tmp_path, embedded_model):
    """Measured against a reference that is not the original release (the F16 made from the Q4_1
    itself), the KLD does not count, so nothing was measured against the original: the published
    score judges accuracy. (Against the original itself the measured KLD would win: quality_check.)"""
    (tmp_path / "sums.jsonl").write_text("".join(f'{{"a": {a}, "b": {b}, "total": {a + b}}}\n'
                                                 for a, b in ((1, 2), (2, 2), (3, 4))))
    (tmp_path / "sums.yaml").write_text(SUMS.replace("limit: 3", "limit: 2"))
    catalog = yaml.safe_load((REPO / "models.yaml").read_text())
    smol = next(m for m in catalog["models"] if m["id"] == "smollm2-135m")
    smol["published_scores"] = [{"task": "sums", "value": 0.9, "metric": "accuracy", "shots": 1, "variant": "bf16",
                                 "harness": "a test's own", "source": "https://example.org/sums", "quote": "90.0",
                                 "read": "2026-12-03"}]
    (tmp_path / "models.yaml").write_text(yaml.safe_dump(catalog, sort_keys=False))
    out = tmp_path / "r.jsonl"
    proc = run_bench("--catalog", str(tmp_path / "models.yaml"), "run", "--no-progress", "--prompt-tokens", "8",
                     "--gen-tokens", "4", "--task", str(tmp_path / "sums.yaml"), "--quality", "--reference", "f16",
                     "--quality-ctx", "64", "--quality-chunks", "1", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert read_jsonl(out)[0]["quality"]["kld"]["mean"] is not None
    (tmp_path / "claims.yaml").write_text(CLAIMS % "may_pass" + "  kld_max: 10\n")
    parts = _quality_parts(tmp_path, out)
    assert parts["KLD"]["outcome"] == "unmeasured" and "derived from q4_1" in parts["KLD"]["value"]
    assert parts["accuracy retained vs published"]["outcome"] in ("pass", "fail")
