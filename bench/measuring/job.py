"""The one value a child process is started from: how to load the model, and what to do with it.

Every pass of a cell (the timed run, the quality pass, the reference pass, the task pass, a
one-time preparation) is a ``Job`` whose ``load`` is the cell's whole load configuration:
backend, model file, threads, device, context, seed, GPU layers, backend options and the tier's
caps. A pass may only change what it must (its model file, its context length), never drop a
setting, so a quality figure always belongs to the configuration that was timed. The worker turns
``load`` into the backend's settings in one place (``LoadConfig.settings``).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from bench.backends.base import LoadSettings


@dataclass(frozen=True)
class LoadConfig:
    backend: str
    model_path: str
    threads: int
    device: str  # cpu | cuda
    n_ctx: int
    seed: int = 0
    n_gpu_layers: int = 0
    options: dict[str, Any] = field(default_factory=dict)  # backend options (dtype, bits, precision, ...)
    caps: dict[str, Any] = field(default_factory=dict)  # CPUs to pin, RAM limit (the tier's)

    def settings(self, scoring: bool = False) -> LoadSettings:
        """The backend's load settings: the only place they are built."""
        return LoadSettings(threads=self.threads, device=self.device, n_ctx=self.n_ctx, seed=self.seed,
                            n_gpu_layers=self.n_gpu_layers, options=dict(self.options), scoring=scoring)

    def for_pass(self, *, model_path: str | None = None, n_ctx: int | None = None) -> LoadConfig:
        """The same configuration for another pass: another file (the reference) or context length."""
        return dataclasses.replace(self, model_path=model_path or self.model_path, n_ctx=n_ctx or self.n_ctx)

    def describe(self) -> dict[str, Any]:
        """What a row records of a pass's load configuration (the path is recorded elsewhere)."""
        return {"backend": self.backend, "options": dict(self.options), "threads": self.threads,
                "device": self.device, "n_ctx": self.n_ctx, "n_gpu_layers": self.n_gpu_layers}


@dataclass(frozen=True)
class SpeedPass:
    """The timed run: warm-up, then counted repetitions of one request, each after ``depth`` tokens
    already in the KV cache (filled once, before the warm-up, and never timed)."""

    prompt_tokens: int
    gen_tokens: int
    repetitions: int
    warmup: int
    stop_at_eos: bool
    depth: int = 0


@dataclass(frozen=True)
class ScorePass:
    """Log-probabilities over a corpus (perplexity, and KLD against a reference's cache)."""

    chunks: int
    corpus_path: str
    reference: str | None = None  # the reference's log-prob cache to compare with
    write_reference: str | None = None  # where to store this pass's log-probs (the reference pass)


@dataclass(frozen=True)
class TaskPass:
    """Greedy answers to a task's items, scored as its task file says (bench.quality.runner)."""

    task: str  # the task as given: a built-in name, a task file or a JSON-lines file
    task_file: str  # its data file, fetched and verified by the parent
    limit: int
    shots: int
    max_new_tokens: int


@dataclass(frozen=True)
class PreparePass:
    """A one-time conversion (an ONNX export, say), run before timing and never counted."""


WORK_TYPES = {"speed": SpeedPass, "score": ScorePass, "task": TaskPass, "prepare": PreparePass}


@dataclass(frozen=True)
class Job:
    load: LoadConfig
    work: SpeedPass | ScorePass | TaskPass | PreparePass

    @property
    def mode(self) -> str:
        return next(name for name, cls in WORK_TYPES.items() if isinstance(self.work, cls))

    def to_json(self) -> str:
        return json.dumps({"mode": self.mode, "load": dataclasses.asdict(self.load),
                           "work": dataclasses.asdict(self.work)})

    @classmethod
    def from_json(cls, text: str) -> Job:
        d = json.loads(text)
        return cls(load=LoadConfig(**d["load"]), work=WORK_TYPES[d["mode"]](**d["work"]))
