"""Task accuracy: GSM8K from PyPI through the real model; extraction and statistics on known cases."""

from __future__ import annotations

import math

import pytest
from conftest import assert_clean_error, read_jsonl, run_bench

from bench.projection.tier import task_seconds, usd_per_correct
from bench.quality.tasks import extract_answer, is_correct, load_items, summarize_task, task_file


def test_gsm8k_ships_verified_and_parses():
    items = load_items(task_file("gsm8k"))
    assert len(items) == 1319
    assert items[0].gold == "18"  # the first test problem (Janet's ducks)


@pytest.mark.parametrize("text,expected", [
    (" She has 3 + 4 = 7 apples.\n#### 7", "7"),
    (" The total is $1,250.", "$1,250"),
    (" 10 minus 2 is 8\nQuestion: next one 99", "8"),  # nothing after the next question counts
    (" I am not sure.", None),
])
def test_answer_extraction(text, expected):
    assert extract_answer(text) == expected


def test_numbers_compare_by_value():
    assert is_correct("$1,250", "1250") and is_correct("18.0", "18") and is_correct("7.", "7")
    assert not is_correct("17", "18") and not is_correct(None, "18")


def test_summary_statistics():
    records = [{"correct": c, "seconds": 2.0, "generated_tokens": 10, "energy_j": None}
               for c in (True, False, True, True)]
    s = summarize_task(records, usd_per_hour=3.6)
    assert s["accuracy"] == 0.75 and s["accuracy_se"] == pytest.approx(math.sqrt(0.75 * 0.25 / 4))
    assert s["seconds_per_correct"] == pytest.approx(8 / 3)
    assert s["usd_per_correct"] == pytest.approx(3.6 * 8 / 3600 / 3)
    assert "energy_j_per_correct" not in s  # no counter, no number


def test_task_time_and_cost_formulas():
    records = [{"prompt_tokens": 600, "prompt_tokens_reused": 500, "generated_tokens": 50},
               {"prompt_tokens": 100, "generated_tokens": 10}]  # a record from before prefix reuse: none reused
    # (600 - 500 + 100) / 100 tok/s prefill + (50 + 10) / 20 tok/s decode
    assert task_seconds(records, 100.0, 20.0) == pytest.approx(2.0 + 3.0)
    assert usd_per_correct(3.6, 1000.0, 4) == pytest.approx(3.6 * 1000 / 3600 / 4)
    assert usd_per_correct(3.6, 1000.0, 0) is None


def test_gsm8k_runs_on_the_embedded_model(tmp_path, embedded_model):
    out = tmp_path / "r.jsonl"
    proc = run_bench("run", "--no-progress", "--prompt-tokens", "8", "--gen-tokens", "4", "--task", "gsm8k",
                     "--task-limit", "2", "--task-shots", "2", "--task-max-tokens", "48", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    t = read_jsonl(out)[0]["task"]
    assert t["status"] == "ok" and t["items"] == 2 and len(t["records"]) == 2
    assert [r["index"] for r in t["records"]] == [2, 3]  # the shots are never scored
    assert t["machine_state"]["wall_s"] > 0 and isinstance(t["machine_state"]["flags"], list)  # watched as timed
    assert 0 <= t["accuracy"] <= 1
    for r in t["records"]:
        assert 1 <= r["generated_tokens"] <= 48 and r["seconds"] > 0
        assert r["correct"] == is_correct(r["predicted"], r["gold"])
    # the second item's prompt shares the two shots with the first: their KV cache is kept
    first, second = t["records"]
    assert first["prompt_tokens_reused"] == 0 and 0 < second["prompt_tokens_reused"] < second["prompt_tokens"]
    assert t["prompt_tokens_reused"] == second["prompt_tokens_reused"]
    # the report: measured on this host, projected (and labelled so) onto the priced tiers
    rep = run_bench("report", str(out), "-o", str(tmp_path / "rep"), "--format", "md")
    assert rep.returncode == 0, rep.stderr
    md = (tmp_path / "rep" / "report.md").read_text()
    section = md.split("## Task accuracy: time and $ per correct answer", 1)[1]
    assert f"({t['correct']}/2)" in section and "PROJECTIONS, not measurements" in section
    per_item = {line.split("|")[1].strip(): line.split("|")[3].strip() for line in section.splitlines()
                if line.startswith("| ") and not line.startswith("| tier")}
    # same items, same formula: a Raspberry Pi 5 takes longer per item than an H100
    assert float(per_item["rpi5-8g"]) > float(per_item["cloud-h100"])


def test_a_kept_prefix_gives_the_answer_a_fresh_cache_gives(tmp_path, embedded_model):
    """The same item twice: the second reuses all its prompt but the last token, and must generate
    exactly what the first did from an empty cache (a stale KV cell past the prefix would not)."""
    twice = tmp_path / "twice.jsonl"
    item = ('{"question": "Tom has 3 apples and buys 4 more. How many apples does he have?", '
            '"answer": "3+4=7\\n#### 7"}\n')
    twice.write_text(item * 3)
    out = tmp_path / "r.jsonl"
    proc = run_bench("run", "--no-progress", "--prompt-tokens", "8", "--gen-tokens", "4", "--task", str(twice),
                     "--task-shots", "1", "--task-max-tokens", "32", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    first, second = read_jsonl(out)[0]["task"]["records"]
    assert first["prompt_tokens_reused"] == 0
    assert second["prompt_tokens_reused"] == second["prompt_tokens"] - 1
    assert second["text"] == first["text"] and second["generated_tokens"] == first["generated_tokens"]


def test_a_task_pass_killed_on_its_timeout_keeps_the_items_it_finished(tmp_path, embedded_model):
    out = tmp_path / "r.jsonl"
    proc = run_bench("run", "--no-progress", "--prompt-tokens", "8", "--gen-tokens", "4", "--task", "gsm8k",
                     "--task-limit", "1000", "--task-shots", "1", "--task-max-tokens", "64", "--timeout", "60",
                     "-o", str(out))
    assert proc.returncode == 1, proc.stderr  # a pass that did not complete: exit 1, and its row is written
    t = read_jsonl(out)[0]["task"]
    assert t["status"] == "timeout" and "item(s) finished before it are kept" in t["reason"]
    assert 1 <= t["items"] == len(t["records"]) < 1000
    assert [r["index"] for r in t["records"]] == list(range(1, 1 + t["items"]))  # in order, none lost or doubled
    assert 0 <= t["accuracy"] <= 1


def test_task_file_that_does_not_parse(tmp_path, embedded_model):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "1+1?", "answer": "#### 2"}\n{"question": broken\n')
    assert_clean_error(run_bench("run", "--task", str(bad), "-o", str(tmp_path / "r.jsonl")), "bad.jsonl:2")
