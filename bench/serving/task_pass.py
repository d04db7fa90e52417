"""A task's answers under load: the same greedy answers at concurrency 1 and N through the server
(batching can change results), with the task runner's prompts, stops and scoring (bench.quality.runner,
as in bench run), and how many answers and texts changed."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.errors import BenchError
from bench.request import TaskSpec
from bench.results.serving import PointSummary, ServingRow, TaskLevel, TaskSummary
from bench.serving import metrics as sm
from bench.serving.client import HttpFailure, http_json
from bench.serving.load import LoadPoint, default_sender, run_phase
from bench.serving.point import Sweep
from bench.serving.prompts import Prompt, encode_job


def chat_template_of(sw: Sweep) -> Any:
    """The served model's chat template, for a task that prompts through it: read from the GGUF the
    suite started llama-server with, else from the server's /props (llama-server's); None if neither."""
    from bench.quality.runner import ChatTemplate

    path = sw.opened.model.path
    if path:
        from bench.models.gguf_info import read_gguf_strings

        found = read_gguf_strings(Path(path), ("tokenizer.chat_template",)).get("tokenizer.chat_template")
        return ChatTemplate(found, source="the GGUF's tokenizer.chat_template") if found else None
    target = sw.opened.target
    try:
        status, data = http_json(target.root + "/props", timeout_s=5.0, api_key=target.api_key)
    except HttpFailure:
        return None
    found = data.get("chat_template") if status == 200 and isinstance(data, dict) else None
    return ChatTemplate(found, source="the server's /props chat_template") if found else None


def task_under_load(sw: Sweep, concurrency: int) -> ServingRow:
    """The same greedy task answers at concurrency 1 and at ``concurrency``: batching can change
    results, and this counts how many answers (and texts) changed. Prompts, stop sequences and
    scoring are the task runner's (bench.quality.runner), as in bench run; prompts go to the
    completions endpoint as text (a chat prompt rendered by the model's own template)."""
    from bench.quality.runner import TaskRun
    from bench.quality.tasks import load_task

    req = sw.req
    spec = req.task or TaskSpec(name="gsm8k")
    target = replace(sw.opened.target, api="completions")
    try:
        task = load_task(spec.name)
        shots = spec.shots if spec.shots is not None else task.definition.defaults.shots
        max_new = spec.max_new_tokens or task.definition.defaults.max_new_tokens
        run = TaskRun(task, task.items(), shots=shots, limit=req.task_limit, max_new_tokens=max_new,
                      chat=chat_template_of(sw) if task.definition.prompt.prefer == "chat" else None)
        run.prepare()
    except BenchError as exc:
        return sw.row("task", "failed", str(exc), warnings=[])
    prompts = run.prompts()
    extra = {"temperature": 0, "stop": run.stop, "seed": req.seed}
    jobs = [encode_job(target, Prompt(p.text, None, None, f"{task.name} #{p.index}"), max_new, False, extra)
            for p in prompts]
    send = default_sender(target, req.request_timeout_s, keep_text=True)
    levels: dict[str, TaskLevel] = {}
    texts: dict[str, list[str | None]] = {}
    records: dict[str, list[dict[str, Any] | None]] = {}
    raw: list[dict[str, Any]] = []
    for c in sorted({1, concurrency}):
        sw.say(f"task {task.name}: {len(jobs)} items at concurrency {c}")
        res = run_phase(LoadPoint("concurrency", c, len(jobs), req.timeout_s), jobs, send, req.request_timeout_s)
        by_index = {t.index: t for t in res.traces if t.status == "ok"}
        scored = [run.score(p, by_index[i].text or "", generated_tokens=by_index[i].completion_tokens or max_new,
                            stopped_at_eos=by_index[i].finish_reason == "stop") if i in by_index else None
                  for i, p in enumerate(prompts)]
        correct = [bool(r and r["correct"]) for r in scored]
        summary = PointSummary.from_dict(sm.summarize_point(res.traces, None))
        levels[str(c)] = TaskLevel(accuracy=sum(correct) / len(prompts), correct=sum(correct), items=len(prompts),
                                   errors=summary.errors, output_tps=summary.output_tps,
                                   answers=[_answer(r) for r in scored])
        texts[str(c)] = [by_index[i].text if i in by_index else None for i in range(len(prompts))]
        records[str(c)] = scored
        raw += [{**t.to_dict(), "concurrency": c} for t in res.traces]
        if res.interrupted:
            break
    return _task_row(sw, levels, texts, records, raw, prompts, concurrency, run)


def _answer(record: dict[str, Any] | None) -> Any:
    """What is compared between concurrency levels: the extracted answer, or the executed program's
    outcome (passed, or the kind of failure). ``record`` is the task runner's (TaskRun.score)."""
    if record is None:
        return None
    if "predicted" in record:
        return record["predicted"]
    return "passed" if record["correct"] else record.get("error_kind")


def _task_row(sw: Sweep, levels: dict[str, TaskLevel], texts: dict[str, list[str | None]],
              records: dict[str, list[dict[str, Any] | None]], raw: list[dict[str, Any]], prompts: list[Any],
              concurrency: int, run: Any) -> ServingRow:
    one, many = levels.get("1"), levels.get(str(concurrency))
    out = TaskSummary.from_dict({"task": run.task.name, "items": len(prompts), **run.describe(),
                                 "max_tokens": run.max_new_tokens, "sampling": "greedy (temperature 0)",
                                 "concurrency": concurrency}).replace(at=levels)
    status, reason = "ok", None
    if one is None or many is None or one is many:
        status, reason = ("failed", "interrupted") if many is None else ("ok", None)
    else:
        a1, an = one.answers or [], many.answers or []
        n = len(prompts)
        changed = [i for i in range(n) if a1[i] != an[i]]
        out = out.replace(
            answers_changed=len(changed),
            texts_changed=sum(texts["1"][i] != texts[str(concurrency)][i] for i in range(n)),
            accuracy_change=(many.accuracy or 0.0) - (one.accuracy or 0.0),
            changed_items=[{"item": prompts[i].index, "gold": (records["1"][i] or {}).get("gold"),
                            "at_1": a1[i], f"at_{concurrency}": an[i]} for i in changed])
    if any(v.errors for v in levels.values()):
        status, reason = "partial", "some task requests failed: " + "; ".join(
            f"c={k}: {', '.join(v.errors or {})}" for k, v in levels.items() if v.errors)
    return sw.row("task", status, reason, summary=out, requests=raw)
