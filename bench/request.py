"""What a run is: one typed request, built alike from the command line and from a YAML file.

``bench run`` flags and matrix-file keys have the same names (a flag is its key with dashes,
nested keys under ``quality:`` and ``task:`` have their own flags) and go through the same
validation, so the same mistake gives the same one-line error from either place:

    CLI flag                YAML key              default
    --model/-m              models                [the catalog's default model]
    --variant/-v            variants              [] (each model's default variant)
    --backend/-b            backends              [llama.cpp]
    --backend-opt K=V       backend_options       {}
    --profile/-p            profiles              [auto]
    --prompt-tokens         prompt_tokens         [128]
    --gen-tokens            gen_tokens            [64]
    --depth                 depth                 [0] (tokens in the KV cache before the prompt)
    --threads/-t            threads               [] (each profile's)
    --repetitions/-r        repetitions           3 (at least 3)
    --warmup                warmup                1
    --ctx                   n_ctx                 depth + prompt + generated tokens
    --n-gpu-layers          n_gpu_layers          all that fit the tier's VRAM
    --seed                  seed                  0
    --stop-at-eos           stop_at_eos           false
    --timeout               timeout_s             1800
    --quality               quality: {}           (off)
    --corpus                quality.corpus        alice29
    --quality-ctx           quality.n_ctx         512
    --quality-chunks        quality.chunks        8
    --reference             quality.reference     the catalog's reference variant
    --task                  task.name             (off): gsm8k, humaneval, a task file or a JSON-lines file
    --task-limit            task.limit            the task file's (gsm8k 50, humaneval 164)
    --task-shots            task.shots            the task file's (gsm8k 4, humaneval 0)
    --task-max-tokens       task.max_new_tokens   the task file's (gsm8k 256, humaneval 512)
    --task-ctx              task.n_ctx            the task file's, plus any max-tokens beyond its own
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator

from bench.errors import BenchError
from bench.yamlfile import StrictModel, parse_yaml_file

# Field path -> the CLI flag that sets it (for error messages that name what the user typed).
FLAGS: dict[str, str] = {
    "models": "--model", "variants": "--variant", "backends": "--backend", "backend_options": "--backend-opt",
    "profiles": "--profile", "prompt_tokens": "--prompt-tokens", "gen_tokens": "--gen-tokens",
    "depth": "--depth",
    "threads": "--threads", "repetitions": "--repetitions", "warmup": "--warmup", "n_ctx": "--ctx",
    "n_gpu_layers": "--n-gpu-layers", "seed": "--seed", "stop_at_eos": "--stop-at-eos", "timeout_s": "--timeout",
    "quality": "--quality", "quality.corpus": "--corpus", "quality.n_ctx": "--quality-ctx",
    "quality.chunks": "--quality-chunks", "quality.reference": "--reference", "task": "--task",
    "task.name": "--task", "task.limit": "--task-limit", "task.shots": "--task-shots",
    "task.max_new_tokens": "--task-max-tokens", "task.n_ctx": "--task-ctx",
}


def _positive(values: Any, what: str = "must be positive") -> Any:
    for v in values if isinstance(values, list) else [values]:
        if v is not None and v <= 0:
            raise ValueError(f"{what}, got {v}")
    return values


class QualitySpec(StrictModel):
    """Perplexity and divergence from the reference variant (docs/METRICS.md, Quality)."""

    corpus: str = "alice29"
    n_ctx: int = 512
    chunks: int = 8
    reference: str | None = None  # variant id; None: the catalog's reference

    @field_validator("n_ctx")
    @classmethod
    def _window(cls, v: int) -> int:
        if v < 8:
            raise ValueError(f"must be at least 8 tokens, got {v}")
        return v

    @field_validator("chunks")
    @classmethod
    def _chunks(cls, v: int) -> int:
        return _positive(v)

    def cell_dict(self) -> dict[str, Any]:
        """The part of a cell's identity (its key) this pass adds. The reference is named only when
        chosen explicitly, so cells from before it could be chosen keep their keys."""
        d: dict[str, Any] = {"corpus": self.corpus, "n_ctx": self.n_ctx, "chunks": self.chunks}
        if self.reference is not None:
            d["reference"] = self.reference
        return d


class TaskSpec(StrictModel):
    """A task (bench/quality/tasks/: a task file); what is not given comes from the task file."""

    name: str
    limit: int | None = None
    shots: int | None = None
    max_new_tokens: int | None = None
    n_ctx: int | None = None

    @field_validator("limit", "max_new_tokens", "n_ctx")
    @classmethod
    def _pos(cls, v: int | None) -> int | None:
        return _positive(v)

    @field_validator("shots")
    @classmethod
    def _shots(cls, v: int | None) -> int | None:
        if v is not None and v < 0:
            raise ValueError(f"must be 0 or more, got {v}")
        return v

    def cell_dict(self) -> dict[str, Any]:
        """Every setting resolved (the task file's defaults filled in), as the cell's identity. The
        context grows with a longer answer than the task file's own limit, keeping its room for
        the prompt: n_ctx = the file's n_ctx + max(0, max_new_tokens - the file's max_new_tokens)."""
        from bench.quality.tasks import load_task

        d = load_task(self.name).definition.defaults
        max_new = self.max_new_tokens if self.max_new_tokens is not None else d.max_new_tokens
        return {"name": self.name, "limit": self.limit if self.limit is not None else d.limit,
                "shots": self.shots if self.shots is not None else d.shots, "max_new_tokens": max_new,
                "n_ctx": self.n_ctx if self.n_ctx is not None else d.n_ctx + max(0, max_new - d.max_new_tokens)}


class RunRequest(StrictModel):
    """Models x variants x backends x profiles x lengths x threads, and the passes to run."""

    models: list[str] = Field(default_factory=list)  # catalog ids (id or id:variant) or GGUF paths
    variants: list[str] = Field(default_factory=list)
    backends: list[str] = Field(default_factory=lambda: ["llama.cpp"], min_length=1)
    backend_options: dict[str, str | int | float | bool] = Field(default_factory=dict)
    profiles: list[str] = Field(default_factory=lambda: ["auto"], min_length=1)
    prompt_tokens: list[int] = Field(default_factory=lambda: [128], min_length=1)
    gen_tokens: list[int] = Field(default_factory=lambda: [64], min_length=1)
    depth: list[int] = Field(default_factory=lambda: [0], min_length=1)  # KV cache filled before the prompt
    threads: list[int] = Field(default_factory=list)  # empty: each profile's
    repetitions: int = 3
    warmup: int = 1
    n_ctx: int | None = None
    n_gpu_layers: int | None = None  # None: all that fit the tier's VRAM
    seed: int = 0
    stop_at_eos: bool = False
    timeout_s: float = 1800.0
    quality: QualitySpec | None = None
    task: TaskSpec | None = None

    @field_validator("prompt_tokens", "gen_tokens", "threads", "n_ctx", "timeout_s")
    @classmethod
    def _pos(cls, v: Any) -> Any:
        return _positive(v)

    @field_validator("depth")
    @classmethod
    def _depth(cls, v: list[int]) -> list[int]:
        for d in v:
            if d < 0:
                raise ValueError(f"must be 0 or more tokens, got {d}")
        return v

    @field_validator("repetitions")
    @classmethod
    def _reps(cls, v: int) -> int:
        if v < 3:
            raise ValueError(f"must be at least 3 (docs/METRICS.md), got {v}")
        return v

    @field_validator("warmup")
    @classmethod
    def _warmup(cls, v: int) -> int:
        if v < 0:
            raise ValueError(f"must be 0 or more, got {v}")
        return v

    def with_default_model(self, default: str) -> RunRequest:
        return self if self.models else self.model_copy(update={"models": [default]})


def _first_error(exc: ValidationError) -> tuple[str, str]:
    first = exc.errors()[0]
    path = ".".join(str(p) for p in first["loc"] if not isinstance(p, int))
    return path, first["msg"].removeprefix("Value error, ")


def request_from_cli(values: dict[str, Any]) -> RunRequest:
    """The request from parsed flags (None: not given). Errors name the flag."""
    data = {k: v for k, v in values.items() if v is not None}
    try:
        return RunRequest.model_validate(data)
    except ValidationError as exc:
        path, msg = _first_error(exc)
        raise BenchError(f"{FLAGS.get(path, path)} {msg}") from None


def request_from_yaml(path: Path) -> RunRequest:
    """The request from a matrix file. Errors name the file, the line and the key."""
    return parse_yaml_file(path, RunRequest)


