"""The one task runner: a task file's prompts, stop sequences and scoring, for every caller.

``bench run --task`` (and so ``bench verdict --run``) drives it from the task pass
(bench.measuring.worker.run_task, the model in process); ``bench serve --task`` drives it from the
load generator (bench.serving.task_pass.task_under_load, the model behind a server). Both build the
same prompts, stop at the same sequences and score the same way: only how the text is generated
differs.

Prompt style: a task's chat prompt where the task prefers it and the model has a chat template
(rendered by that template, bench.quality.chat), else its completion prompt with its few-shot
examples (the first ``shots`` items of the file, never scored). The row records which.

A generation that ends at ``max_new_tokens`` without end-of-sequence or a stop sequence is
``truncated``: its record says so (outcome ``truncated``, not ``wrong``). A reasoning model's
think span (bench.quality.reasoning) is counted apart and only the answer after it is scored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from bench.errors import BenchError
from bench.quality.chat import chat_messages, render_chat, template_id
from bench.quality.reasoning import opens_reasoning, reasoning_tokens, split_reasoning
from bench.quality.tasks import Task, fill


@dataclass(frozen=True)
class ChatTemplate:
    """A model's chat template and the token texts it may use."""

    template: str
    bos_token: str = ""
    eos_token: str = ""
    source: str = "the model file's tokenizer.chat_template"


@dataclass(frozen=True)
class TaskPrompt:
    index: int  # the item's position in the data file
    item: dict[str, Any]
    text: str
    special: bool  # the text holds a chat template's special tokens: tokenize them as such
    opened_reasoning: bool  # the prompt ends inside a think span the template opened


def choose_style(task: Task, has_template: bool) -> str:
    p = task.definition.prompt
    if p.chat is not None and has_template and (p.prefer == "chat" or p.completion is None):
        return "chat"
    if p.completion is not None:
        return "completion"
    raise BenchError(f"task {task.name} has only a chat prompt and this model has no chat template")


class TaskRun:
    """One pass over a task: the prompts to generate, and the scoring of each generation."""

    def __init__(self, task: Task, items: list[dict[str, Any]], *, shots: int, limit: int, max_new_tokens: int,
                 chat: ChatTemplate | None) -> None:
        self.task, self.max_new_tokens, self.chat = task, max_new_tokens, chat
        self.style = choose_style(task, chat is not None)
        self.shots, self.pool = items[:shots], items[shots:][:limit]
        if not self.pool:
            raise BenchError(f"no task items left after {shots} few-shot examples")
        if self.style == "chat" and shots:
            raise BenchError(f"task {task.name}: few-shot examples go with its completion prompt, not its chat "
                             "prompt; use --task-shots 0")
        spec = task.definition.prompt.chat if self.style == "chat" else task.definition.prompt.completion
        assert spec is not None
        self.stop: list[str] = list(spec.stop)
        self.isolation: dict[str, Any] | None = None

    def prompts(self) -> list[TaskPrompt]:
        first = len(self.shots)
        return [self._prompt(first + i, item) for i, item in enumerate(self.pool)]

    def _prompt(self, index: int, item: dict[str, Any]) -> TaskPrompt:
        p = self.task.definition.prompt
        if self.style == "completion":
            assert p.completion is not None
            text = "".join(fill(p.completion.shot, s) for s in self.shots) + fill(p.completion.item, item)
            return TaskPrompt(index, item, text, special=False, opened_reasoning=False)
        assert p.chat is not None and self.chat is not None
        rendered = render_chat(self.chat.template, chat_messages(p.chat.system, fill(p.chat.user, item)),
                               bos_token=self.chat.bos_token, eos_token=self.chat.eos_token)
        return TaskPrompt(index, item, rendered + p.chat.assistant_prefix, special=True,
                          opened_reasoning=opens_reasoning(rendered))

    def prepare(self) -> None:
        """Before the first item: a task whose answers run in the sandbox checks that the sandbox
        runs a trivial program here (and learns what isolation this host gave it), so a broken
        sandbox stops the pass at once, not after an hour of generation."""
        if self.task.definition.score.kind != "execute":
            return
        from bench.quality.sandbox import SandboxError, run_python

        try:
            probe = run_python("pass\n", self.task.scorer.limits(self.task.definition.score))
        except SandboxError as exc:
            raise BenchError(f"task {self.task.name}: {exc}") from None
        if not probe.passed:
            raise BenchError(f"task {self.task.name}: the sandbox cannot run a trivial program here: "
                             f"{probe.error_kind}: {probe.detail}")
        self.isolation = probe.isolation

    def score(self, prompt: TaskPrompt, text: str, *, generated_tokens: int, stopped_at_eos: bool,
              pieces: list[str] | None = None) -> dict[str, Any]:
        """The record of one generation: what the scorer says, the outcome (correct, wrong or
        truncated) and, for a reasoning model, its reasoning and answer tokens. ``pieces`` (each
        generated token's text, in order) counts the reasoning tokens where there is a think span."""
        split = split_reasoning(text, prompt.opened_reasoning)
        stop_hit = any(s and s in split.answer for s in self.stop)
        truncated = not stopped_at_eos and not stop_hit and generated_tokens >= self.max_new_tokens
        spec = self.task.definition.score
        out = self.task.scorer.score(spec, prompt.item, split.answer, self.style, self.stop)
        out.pop("_isolation", None)
        id_field = self.task.definition.dataset.id_field
        record: dict[str, Any] = {"index": prompt.index, **({"id": prompt.item.get(id_field)} if id_field else {}),
                                  **out}
        record["truncated"] = truncated
        record["outcome"] = "correct" if record["correct"] else ("truncated" if truncated else "wrong")
        if split.span != "none":
            thinking = reasoning_tokens(pieces, prompt.opened_reasoning) if pieces is not None else None
            record["reasoning"] = split.span  # closed, or open (cut off while reasoning)
            record["reasoning_tokens"] = thinking
            record["answer_tokens"] = generated_tokens - thinking if thinking is not None else None
        return record

    def describe(self) -> dict[str, Any]:
        """What the row records of how the task was asked and scored."""
        d = self.task.definition
        out: dict[str, Any] = {"id": d.name, "metric": d.metric, "shots": len(self.shots),
                               "max_new_tokens": self.max_new_tokens,
                               "prompt": {"style": self.style, "stop": self.stop}}
        if self.style == "chat":
            assert self.chat is not None and d.prompt.chat is not None
            out["prompt"].update(template=f"the model's chat template ({self.chat.source}, sha256 "
                                          f"{template_id(self.chat.template)}...)",
                                 as_evaluated_by=d.prompt.chat.source)
        else:
            out["prompt"]["template"] = "the task's completion prompt" + (
                f" with {len(self.shots)} few-shot example(s)" if self.shots else "")
        if self.isolation is not None:
            out["sandbox"] = {**self.isolation, "limits": dict(d.score.limits)}
        return out


def summarize_task(records: list[dict[str, Any]], usd_per_hour: float | None) -> dict[str, Any]:
    """Accuracy (pass@1 for an executed task) = correct / items, with its binomial standard error
    sqrt(p(1-p)/n); time, tokens, energy and $ per correct answer (reasoning included: every
    generated token is paid for). Truncated answers count as not correct; ``accuracy_answered``
    is correct / (items - truncated), the accuracy had none been cut off."""
    n = len(records)
    correct = sum(r["correct"] for r in records)
    p = correct / n
    seconds = sum(r["seconds"] for r in records)
    tokens = sum(r["generated_tokens"] for r in records)
    energy = [r.get("energy_j") for r in records]
    out: dict[str, Any] = {
        "items": n, "correct": correct, "accuracy": p, "accuracy_se": math.sqrt(p * (1 - p) / n),
        "seconds": seconds, "generated_tokens": tokens,
        # prompt tokens served from the KV cache the previous item left (the shared few-shot prefix)
        "prompt_tokens_reused": sum(r.get("prompt_tokens_reused", 0) for r in records),
        "seconds_per_correct": seconds / correct if correct else None,
        "tokens_per_correct": tokens / correct if correct else None,
    }
    truncated = sum(1 for r in records if r.get("outcome") == "truncated")
    if truncated:
        out["truncated"] = truncated
        out["accuracy_answered"] = correct / (n - truncated) if n > truncated else None
    thinking = [r["reasoning_tokens"] for r in records if r.get("reasoning_tokens") is not None]
    if thinking:
        out["reasoning_tokens"] = sum(thinking)
        out["answer_tokens"] = tokens - sum(thinking)
    if all(e is not None for e in energy):
        out["energy_j_per_correct"] = sum(energy) / correct if correct else None  # type: ignore[arg-type]
    if usd_per_hour:
        from bench.hardware.tiers import usd_per_correct

        out["usd_per_correct"] = usd_per_correct(usd_per_hour, seconds, correct)
    return out
