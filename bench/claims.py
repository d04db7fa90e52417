"""The claim ``bench verdict`` tests, as a file (claims.yaml): which tiers count as inexpensive,
what "runs well" means (the criteria) and what ``bench verdict --run`` measures for them. Its own
module, below analysis and serving, so that both read it typed (the verdict judges by it; ``bench
serve`` takes its SLOs from the same criteria)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from bench.yamlfile import StrictModel, parse_yaml_file


class Inexpensive(StrictModel):
    tiers: list[str] | None = None  # profile ids; None: any tier under the price ceiling
    max_usd_per_hour: float | None = Field(default=None, gt=0)


class Criteria(StrictModel):
    # The unit of decode_tps_min: the model's own tokens per second, or UTF-8 bytes of text per
    # second (a token of a 150k vocabulary carries more text than one of a 49k vocabulary).
    speed_unit: Literal["tokens", "utf8_bytes"] = "tokens"
    decode_tps_min: float | None = Field(default=None, gt=0)
    ttft_s_max: float | None = Field(default=None, gt=0)
    ttft_min_prompt_tokens: int = Field(default=0, ge=0)  # shorter prompts say little about TTFT
    fits: bool = True
    kld_max: float | None = Field(default=None, ge=0)
    accuracy_retained_min: float | None = Field(default=None, gt=0, le=1)
    # Set: decode_tps_min and ttft_s_max are also judged with this many users at once, from the
    # bench serve point at concurrency N of the same model, variant and tier (``serving_checks``).
    concurrent_users: int | None = Field(default=None, gt=0)
    # Set: "runs well with N tokens of context": fit, decode_tps_min and ttft_s_max are also judged
    # from a row measured with at least N tokens in context (bench run --depth), and the fit
    # prediction at N (``context_check``). Rows at a depth answer only this criterion.
    context_tokens_min: int | None = Field(default=None, gt=0)
    # Where the original release cannot be run here, task accuracy is compared with its published score
    # (bench.quality.published): may_pass (labelled ``vs published``) or inform (shown, criterion unmeasured).
    published_comparison: Literal["may_pass", "inform"] = "may_pass"


class Measure(StrictModel):
    """What ``bench verdict --run`` measures for the criteria: one speed workload on every tier,
    quality (against each variant's reference) and, if set, a task, once per configuration."""

    prompt_tokens: int = Field(default=128, gt=0)
    gen_tokens: int = Field(default=64, gt=1)
    repetitions: int = Field(default=3, ge=3)
    quality: dict[str, Any] | None = None  # bench run --quality settings: {corpus, n_ctx, chunks, reference}
    # bench run --task settings: {name, limit, shots, max_new_tokens, n_ctx}; name ``auto``: each model's own
    # task from the catalog (bench.verdict_run.model_task)
    task: dict[str, Any] | None = None


class Claims(StrictModel):
    schema_version: Literal[1]
    name: str
    inexpensive: Inexpensive
    criteria: Criteria
    measure: Measure = Field(default_factory=Measure)

    @model_validator(mode="after")
    def _workload_answers_the_criteria(self) -> Claims:
        if self.criteria.ttft_s_max is not None and self.measure.prompt_tokens < self.criteria.ttft_min_prompt_tokens:
            raise ValueError(f"measure.prompt_tokens {self.measure.prompt_tokens} is below "
                             f"criteria.ttft_min_prompt_tokens {self.criteria.ttft_min_prompt_tokens}: "
                             "its TTFT could not count")
        return self


def load_claims(path: Path) -> Claims:
    return parse_yaml_file(path, Claims)
