"""How a task's answer is scored: a registry of scorers, named by a task file's ``score.kind``.

- ``number`` (GSM8K): exact match of a number, lm-evaluation-harness style. The answer is the
  number after "####" if the model wrote one, else the last number in its text (before any stop
  sequence); commas, "$" and a trailing "." are ignored, and numbers compare by value. The gold
  answer is the task's ``gold`` template, its number after the last "####".
- ``execute`` (HumanEval): the completion, cut at its first stop sequence, is put into the task's
  program template with the item's tests and run in the sandbox (bench.quality.sandbox); it
  passes when the program exits with status 0. A failure is recorded with its kind (wrong_answer,
  timeout, syntax_error, memory_limit, ...) and the pass goes on.

A scorer is a class with ``check_spec`` (the task file's score block), ``check_item`` (one item)
and ``score`` (one answer -> the fields it adds to the item's record, ``correct`` among them).
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

GSM8K_STOP = ("\nQuestion:", "\n\nQuestion")
_NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?")


def cut_at_stop(text: str, stop: list[str] | tuple[str, ...]) -> str:
    """``text`` up to the earliest occurrence of any stop sequence (the stop itself left out)."""
    ends = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    return text[: min(ends)] if ends else text


def _to_number(text: str) -> float | None:
    cleaned = text.replace(",", "").replace("$", "").rstrip(".")
    try:
        return float(cleaned)
    except ValueError:
        return None


def extract_answer(generated: str, stop: list[str] | tuple[str, ...] = GSM8K_STOP) -> str | None:
    """The number after "####" if written, else the last number (each stop sequence cut in turn)."""
    for s in stop:
        generated = generated.split(s, 1)[0]
    if "####" in generated:
        m = _NUMBER.search(generated.split("####", 1)[1])
        if m:
            return m.group(0)
    found = _NUMBER.findall(generated)
    return found[-1] if found else None


def is_correct(predicted: str | None, gold: str) -> bool:
    if predicted is None:
        return False
    a, b = _to_number(predicted), _to_number(gold)
    return a is not None and b is not None and a == b


class NumberScorer:
    """Exact match of the final number (GSM8K)."""

    metric: ClassVar[str] = "accuracy"

    @staticmethod
    def check_spec(spec: Any) -> None:
        if not spec.gold:
            raise ValueError("score kind number needs gold: the template of the gold answer")

    @staticmethod
    def gold(spec: Any, item: dict[str, Any]) -> str:
        from bench.quality.tasks import fill

        return fill(spec.gold, item).rsplit("####", 1)[-1].strip()

    @staticmethod
    def check_item(spec: Any, item: dict[str, Any]) -> str | None:
        from bench.quality.tasks import fill

        text = fill(spec.gold, item)
        if "####" not in text and _to_number(text.strip()) is None:
            return "the answer has no '#### <number>' line"
        return None

    @classmethod
    def score(cls, spec: Any, item: dict[str, Any], answer: str, style: str, stop: list[str]) -> dict[str, Any]:
        predicted = extract_answer(answer, stop)
        gold = cls.gold(spec, item)
        return {"predicted": predicted, "gold": gold, "correct": is_correct(predicted, gold)}


class ExecuteScorer:
    """Run the completion with the item's tests in the sandbox (HumanEval)."""

    metric: ClassVar[str] = "pass@1"

    @staticmethod
    def check_spec(spec: Any) -> None:
        from bench.quality.sandbox import Limits

        if not spec.program:
            raise ValueError("score kind execute needs program: {chat: ..., completion: ...} templates")
        unknown = set(spec.program) - {"chat", "completion"}
        if unknown:
            raise ValueError(f"program styles are chat and completion, not {', '.join(sorted(unknown))}")
        known = set(Limits.__dataclass_fields__)
        if set(spec.limits) - known:
            raise ValueError(f"unknown sandbox limits {', '.join(sorted(set(spec.limits) - known))}; "
                             f"known: {', '.join(sorted(known))}")

    @staticmethod
    def check_item(spec: Any, item: dict[str, Any]) -> str | None:
        return None

    @staticmethod
    def limits(spec: Any) -> Any:
        from bench.quality.sandbox import Limits

        fields = Limits.__dataclass_fields__
        return Limits(**{k: type(fields[k].default)(v) for k, v in spec.limits.items()})

    @classmethod
    def score(cls, spec: Any, item: dict[str, Any], answer: str, style: str, stop: list[str]) -> dict[str, Any]:
        from bench.quality.sandbox import run_python
        from bench.quality.tasks import fill

        completion = cut_at_stop(answer, stop)
        program = fill(spec.program[style], {**item, "completion": completion})
        result = run_python(program, cls.limits(spec))
        return {"completion": completion, "correct": result.passed, "passed": result.passed,
                "error_kind": result.error_kind, "error": result.detail or None, "exec_seconds": result.seconds,
                "_isolation": result.isolation}


SCORERS: dict[str, Any] = {"number": NumberScorer, "execute": ExecuteScorer}
