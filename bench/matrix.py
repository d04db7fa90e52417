"""Matrix files: models x variants x backends x profiles x lengths in YAML, for `bench run --matrix`.

    models: [smollm2-135m]            # catalog ids (id or id:variant) or GGUF paths
    variants: [q4_1]                  # optional: for catalog ids without a variant
    backends: [llama.cpp]
    profiles: [laptop-4c-8g, rpi5-8g]
    prompt_tokens: [128]
    gen_tokens: [64]
    threads: []                       # optional: empty means each profile's
    repetitions: 3
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from bench.measuring.plan import RunRequest
from bench.yamlfile import parse_yaml_file


class Matrix(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: list[str] = Field(min_length=1)
    variants: list[str] = Field(default_factory=list)
    backends: list[str] = Field(default_factory=lambda: ["llama.cpp"], min_length=1)
    profiles: list[str] = Field(default_factory=lambda: ["auto"], min_length=1)
    prompt_tokens: list[int] = Field(default_factory=lambda: [128], min_length=1)
    gen_tokens: list[int] = Field(default_factory=lambda: [64], min_length=1)
    threads: list[int] = Field(default_factory=list)
    repetitions: int = 3
    warmup: int = 1
    n_ctx: int | None = None
    seed: int = 0
    timeout_s: float = 1800.0
    quality: dict[str, Any] | None = None  # {corpus: alice29, n_ctx: 512, chunks: 8}

    def request(self, catalog_path: Path, profiles_dir: Path) -> RunRequest:
        return RunRequest(models=self.models, catalog_path=catalog_path, profiles_dir=profiles_dir,
                          variants=self.variants, backends=self.backends, profiles=self.profiles,
                          prompt_tokens=self.prompt_tokens, gen_tokens=self.gen_tokens, threads=self.threads,
                          repetitions=self.repetitions, warmup=self.warmup, n_ctx=self.n_ctx, seed=self.seed,
                          timeout_s=self.timeout_s,
                          quality={"corpus": "alice29", "n_ctx": 512, "chunks": 8, **self.quality}
                          if self.quality is not None else None)


def load_matrix(path: Path) -> Matrix:
    return parse_yaml_file(path, Matrix)
