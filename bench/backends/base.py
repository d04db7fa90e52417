"""The small interface every backend implements (load, prompt, generate), and what it returns."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from bench.errors import BenchError


@dataclass(frozen=True)
class LoadSettings:
    threads: int
    device: str  # cpu | cuda
    n_ctx: int
    seed: int
    n_gpu_layers: int = 0  # llama.cpp: layers offloaded to the GPU (-1 = all)
    options: dict[str, Any] = field(default_factory=dict)  # backend-specific settings
    scoring: bool = False  # a quality pass (whole windows per call), not a timed generation


@dataclass
class GenerationTrace:
    """One request's raw record. Times are seconds after t0 (the request handed to the backend)."""

    prompt_tokens: int
    token_ids: list[int]
    token_times: list[float]  # t_i: token i available to the caller (sampled and detokenized)
    prefill_end: float | None  # end of the prefill pass; None where the backend cannot separate it
    stopped_at_eos: bool
    text: str
    # The backend's own timers where it has them (llama.cpp: time inside llama_decode only):
    # prefill_compute_s / prefill_compute_tokens, decode_compute_s / decode_compute_tokens.
    backend_counters: dict[str, float] | None = None
    text_bytes: int | None = None  # UTF-8 bytes of the generated text, as the pieces came (None: len of text)
    prompt_tokens_reused: int = 0  # leading prompt tokens whose KV cache a previous request left (reuse_prefix)


class Backend(ABC):
    """One inference library behind a uniform interface. Instances live in the benchmark child."""

    name: ClassVar[str]

    # An optional hook, not abstract: most backends need no preparation.
    def prepare(self, model_path: Path, settings: LoadSettings) -> None:  # noqa: B027
        """One-time conversion the backend needs (an ONNX export, say), cached and not timed."""

    @abstractmethod
    def load(self, model_path: Path, settings: LoadSettings) -> None:
        """Make the model ready for a first request (this is what ``load time`` measures)."""

    @abstractmethod
    def prompt(self, n_tokens: int) -> list[int]:
        """Exactly ``n_tokens`` prompt token ids from the model's own tokenizer."""

    @abstractmethod
    def generate(self, prompt: list[int], max_new_tokens: int, stop_at_eos: bool,
                 stop: list[str] | None = None, reuse_prefix: bool = False,
                 reasoning_open: bool = False) -> GenerationTrace:
        """Greedy generation with a timestamp per token as the caller receives it; it ends early at
        end-of-sequence if asked, and once the text contains one of ``stop`` (generate_until) outside
        a reasoning model's think span (``stop_reached``; ``reasoning_open``: the prompt opened one).

        ``reuse_prefix``: a backend that can may keep the KV cache of the leading tokens this prompt
        shares with the previous request (as llama-server's prompt cache does), and say how many in
        ``prompt_tokens_reused``; others ignore it. Timed speed passes never ask (each request starts
        from an empty cache); task passes do, since their few-shot examples are one shared prefix."""

    def fill_context(self, tokens: list[int]) -> dict[str, Any]:
        """Put ``tokens`` in the KV cache once (a depth: a conversation or a document already in
        context, as llama-bench's ``-d``); every later ``generate`` starts after them, on the cache
        as the fill left it, and is timed from there (the fill never is). Returns how it was filled,
        for the row."""
        raise BenchError(f"backend {self.name} cannot fill its KV cache to a depth")

    def score_windows(self, tokens: list[int], n_ctx: int, first: int) -> Iterator[tuple[Any, Any]]:
        """Next-token logits for a token sequence, one window at a time (memory stays bounded by a
        window, not the corpus). Windows are consecutive chunks of ``n_ctx`` tokens; in each, the
        logits at positions first..n_ctx-2 are yielded with the tokens they predict:
        (targets[k], logits[k, vocab]). This is llama.cpp's ``llama-perplexity`` chunk scheme."""
        raise NotImplementedError(f"backend {self.name} cannot score token sequences")

    def vocab_size(self) -> int:
        raise NotImplementedError

    def tokenize(self, text: str, special: bool = False) -> list[int]:
        """The model's own tokenizer, with the start token where the model adds one; ``special``:
        the text holds special tokens written out (a chat template's), to be read as those tokens."""
        raise NotImplementedError

    def chat_template(self) -> dict[str, str] | None:
        """The model's chat template ({template, bos_token, eos_token, source}), None if it has none."""
        return None

    def detokenize(self, ids: list[int]) -> bytes:
        """The text of token ids as UTF-8 bytes, special tokens (a start token) left out."""
        raise NotImplementedError

    def environment(self) -> dict[str, Any]:
        """Library versions and build facts, recorded in the result row."""
        return {}

    # An optional hook, not abstract: garbage collection frees most backends.
    def close(self) -> None:  # noqa: B027
        """Free the model."""


def stop_reached(text: str, stop: list[str] | None, reasoning_open: bool = False) -> bool:
    """Whether generation should stop at a stop sequence: one occurs in the text, but not inside a
    reasoning model's think span (its thinking may well contain "\n#"); while the span is open, none
    counts. Text without think tags is checked whole."""
    if not stop:
        return False
    from bench.quality.reasoning import split_reasoning

    split = split_reasoning(text, reasoning_open)
    return split.span != "open" and any(s in split.answer for s in stop)
