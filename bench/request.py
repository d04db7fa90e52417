"""What a run and a serving sweep are: two typed requests sharing their common parts.

``RunRequest`` (``bench run``) and ``ServeRequest`` (``bench serve``) share ``RequestBase``: the seed,
whether answers end at end-of-sequence, the task pass (``TaskSpec``: name, limit, shots, answer
length) and the whole-command timeout, with the same names, checks and one-line errors that name
the flag. A run's model, tier and lengths are lists (a matrix: every combination is a cell); a
sweep's are one each (one server, one workload), so those fields are declared per request, under
the same names where they mean the same (``prompt_tokens``, ``gen_tokens``, ``profile(s)``).

``bench run``: one typed request, built alike from the command line and from a YAML file.

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

import math
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator, model_validator

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


class RequestBase(StrictModel):
    """What a run and a serving sweep name alike."""

    seed: int = 0
    stop_at_eos: bool = False
    timeout_s: float = 1800.0
    task: TaskSpec | None = None

    @field_validator("timeout_s")
    @classmethod
    def _timeout(cls, v: float) -> float:
        return _positive(v)


class RunRequest(RequestBase):
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
    quality: QualitySpec | None = None

    @field_validator("prompt_tokens", "gen_tokens", "threads", "n_ctx")
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


def _validated(model: type[RequestBase], data: dict[str, Any], flags: dict[str, str]) -> Any:
    """``model`` from ``data``, or BenchError naming the flag (a check of the whole request raises
    BenchError itself, with its own sentence)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        path, msg = _first_error(exc)
        raise BenchError(f"{flags.get(path, path)} {msg}" if path else msg) from None


def request_from_cli(values: dict[str, Any]) -> RunRequest:
    """The request from parsed flags (None: not given). Errors name the flag."""
    return _validated(RunRequest, {k: v for k, v in values.items() if v is not None}, FLAGS)


def request_from_yaml(path: Path) -> RunRequest:
    """The request from a matrix file. Errors name the file, the line and the key."""
    return parse_yaml_file(path, RunRequest)




# -- bench serve ----------------------------------------------------------------------------------
SERVE_FLAGS: dict[str, str] = {
    "model": "--model", "url": "--url", "served_model": "--served-model", "api_key_env": "--api-key-env",
    "api": "--endpoint", "profile": "--profile", "threads": "--threads", "ctx": "--ctx", "parallel": "--parallel",
    "server_cpus": "--server-cpus", "client_cpus": "--client-cpus", "server_args": "--server-arg",
    "concurrency": "--concurrency", "rates": "--rate", "requests": "--requests", "duration_s": "--duration",
    "warmup": "--warmup", "max_in_flight": "--max-in-flight", "burstiness": "--burstiness", "prompts": "--prompts",
    "prompt_tokens": "--prompt-tokens", "shared_prefix": "--shared-prefix", "corpus": "--corpus",
    "gen_tokens": "--gen-tokens", "stop_at_eos": "--stop-at-eos", "seed": "--seed", "slo_ttft_s": "--slo-ttft",
    "slo_tpot_s": "--slo-tpot", "goodput_share": "--goodput-share", "ceiling": "--no-ceiling",
    "in_process": "--in-process", "task": "--task", "task.name": "--task", "task.limit": "--task-limit",
    "task.shots": "--task-shots", "task.max_new_tokens": "--task-max-tokens",
    "request_timeout_s": "--request-timeout", "timeout_s": "--timeout", "output": "--output",
    "catalog_path": "--catalog", "profiles_dir": "--profiles-dir", "claims_path": "--claims",
}
SERVE_TASK_LIMIT = 20  # items of a task under load unless --task-limit says otherwise


class ServeRequest(RequestBase):
    """A sweep of load points against one server: llama-server the suite starts with ``model``
    (catalog ID[:VARIANT] or a GGUF path), or the OpenAI-compatible server at ``url``."""

    output: Path
    catalog_path: Path
    profiles_dir: Path
    claims_path: Path
    model: str | None = None
    url: str | None = None
    served_model: str | None = None
    api_key_env: str | None = None
    api: str = "completions"
    profile: str = "auto"
    threads: int | None = None
    ctx: int | None = None  # per slot
    parallel: int | None = None
    server_cpus: list[int] | None = None
    client_cpus: list[int] | None = None
    server_args: list[str] = Field(default_factory=list)
    concurrency: list[int] = Field(default_factory=list)
    rates: list[float] = Field(default_factory=list)
    requests: int | None = None
    duration_s: float = 120.0
    warmup: int | None = None
    max_in_flight: int | None = None
    burstiness: float = 1.0
    prompts: str = "fixed"
    prompt_tokens: int = 128
    shared_prefix: int = 0  # tokens every prompt starts with (a system prompt, earlier turns)
    corpus: str = "alice29"
    gen_tokens: tuple[int, int] = (64, 64)  # output tokens: fixed (low == high) or drawn in [low, high]
    slo_ttft_s: float | None = None
    slo_tpot_s: float | None = None
    goodput_share: float = 0.9
    ceiling: bool = True
    in_process: bool = False
    request_timeout_s: float = 300.0
    timeout_s: float = 3600.0

    @field_validator("gen_tokens", mode="before")
    @classmethod
    def _gen(cls, v: Any) -> Any:
        """``N`` or ``LOW:HIGH`` as typed on the command line, or a pair."""
        text = v if isinstance(v, str) else ":".join(map(str, v)) if isinstance(v, (tuple, list)) else str(v)
        if isinstance(v, int):
            v = (v, v)
        if isinstance(v, str):
            lo, sep, hi = v.partition(":")
            try:
                v = (int(lo), int(hi) if sep else int(lo))
            except ValueError:
                raise BenchError(f"--gen-tokens expects N or LOW:HIGH, got {text!r}") from None
        if isinstance(v, (tuple, list)) and len(v) == 2 and (v[0] < 1 or v[1] < v[0]):
            raise BenchError(f"--gen-tokens expects 1 <= LOW <= HIGH, got {text!r}")
        return v

    @model_validator(mode="after")
    def _whole(self) -> ServeRequest:
        """Every bad input is a one-line error before anything starts."""
        if self.url is not None and self.model is not None:
            raise BenchError("give either --model (the suite starts llama-server) or --url (a server you run), "
                             "not both")
        if self.url is not None:
            parse_url(self.url)
            if self.in_process:
                raise BenchError("--in-process needs a server the suite starts (--model), not --url")
        if self.api not in ("completions", "chat"):
            raise BenchError(f"--endpoint must be completions or chat, got {self.api!r}")
        if not self.concurrency and not self.rates:
            raise BenchError("give --concurrency N[,N...] or --rate R[,R...]")
        if any(c < 1 for c in self.concurrency) or any(not 0 < r < math.inf for r in self.rates):
            raise BenchError("--concurrency values must be >= 1 and --rate values positive and finite")
        self._check_numbers()
        if self.shared_prefix < 0 or (self.prompts == "fixed" and self.shared_prefix >= self.prompt_tokens):
            raise BenchError(f"--shared-prefix must be 0 or more and, with --prompts fixed, less than --prompt-tokens "
                             f"{self.prompt_tokens}; got {self.shared_prefix}")
        if self.in_process and (self.prompts != "fixed" or self.gen_tokens[0] != self.gen_tokens[1]):
            raise BenchError("--in-process compares fixed lengths: use --prompts fixed and --gen-tokens N")
        if self.api_key_env and not os.environ.get(self.api_key_env):
            raise BenchError(f"--api-key-env {self.api_key_env}: that environment variable is not set")
        if any(a.split("=", 1)[0] in ("--api-key", "--api-key-file") for a in self.server_args):
            raise BenchError("give llama-server's API key with --api-key-env VAR, not --server-arg --api-key: the "
                             "suite must send it, and a key on a command line is visible to every user of the "
                             "machine (ps)")
        if any(h.endswith(".sock") for h in server_hosts(self.server_args)):
            raise BenchError("--server-arg --host: bench serve reaches llama-server over TCP, not a UNIX socket")
        return self

    def _check_numbers(self) -> None:
        for name, value in (("--requests", self.requests), ("--threads", self.threads), ("--ctx", self.ctx),
                            ("--parallel", self.parallel), ("--max-in-flight", self.max_in_flight),
                            ("--prompt-tokens", self.prompt_tokens)):
            if value is not None and value < 1:
                raise BenchError(f"{name} must be at least 1, got {value}")
        for fname, fvalue in (("--duration", self.duration_s), ("--request-timeout", self.request_timeout_s),
                              ("--timeout", self.timeout_s), ("--burstiness", self.burstiness)):
            if not fvalue > 0:
                raise BenchError(f"{fname} must be positive, got {fvalue}")
        if self.warmup is not None and self.warmup < 0:
            raise BenchError(f"--warmup must be 0 or more, got {self.warmup}")
        if not 0 < self.goodput_share <= 1:
            raise BenchError(f"--goodput-share must be in (0, 1], got {self.goodput_share}")

    @property
    def gen(self) -> Any:
        """The output length as GenLength (fixed, or drawn per request)."""
        return GenLength(*self.gen_tokens)

    @property
    def task_limit(self) -> int:
        return self.task.limit if self.task and self.task.limit is not None else SERVE_TASK_LIMIT


def serve_request_from_cli(values: dict[str, Any]) -> ServeRequest:
    """The sweep's request from parsed flags (None: not given; ``task`` a name, ``task_limit``,
    ``task_shots``, ``task_max_tokens`` its settings). Errors name the flag."""
    data = {k: v for k, v in values.items() if v is not None}
    task = {"name": data.pop("task", None), "limit": data.pop("task_limit", None),
            "shots": data.pop("task_shots", None), "max_new_tokens": data.pop("task_max_tokens", None)}
    if task["name"] is not None:
        data["task"] = {k: v for k, v in task.items() if v is not None}
    return _validated(ServeRequest, data, SERVE_FLAGS)


# -- the serve request's value types and parsers (bench.serving uses them; they need nothing of it) --
@dataclass(frozen=True)
class GenLength:
    """Output tokens asked per request: fixed (lo == hi) or drawn uniformly in [lo, hi] (seeded)."""

    lo: int
    hi: int

    def draw(self, rng: random.Random) -> int:
        return self.lo if self.lo == self.hi else rng.randint(self.lo, self.hi)

    def describe(self) -> str:
        return str(self.lo) if self.lo == self.hi else f"uniform {self.lo}..{self.hi}"


def server_hosts(server_args: list[str]) -> list[str]:
    """The addresses llama-server listens on: the last ``--host`` among the extra arguments
    (comma-separated, as llama-server reads it), else 127.0.0.1."""
    hosts = "127.0.0.1"
    for i, arg in enumerate(server_args):
        if arg == "--host" and i + 1 < len(server_args):
            hosts = server_args[i + 1]
        elif arg.startswith("--host="):
            hosts = arg.split("=", 1)[1]
    return [h.strip() for h in hosts.split(",") if h.strip()] or ["127.0.0.1"]


def parse_url(url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, path) of an http(s) URL; bad input is a one-line error."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BenchError(f"--url must look like http://HOST:PORT/v1, got {url!r}")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise BenchError(f"--url has a bad port: {url!r}") from None
    return parts.scheme, parts.hostname, port, parts.path
