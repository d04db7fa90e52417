"""Prompt construction from the model's own tokenizer, so every backend sees exactly p tokens."""

from __future__ import annotations

from collections.abc import Callable

from bench.errors import BenchError

# Filler text for speed prompts only (quality uses a real corpus). Its content does not affect
# timing; its tokens are cycled until the prompt has exactly the requested length.
FILLER = (
    "The committee met on Tuesday to review the quarterly figures. Revenue rose in the north and "
    "fell in the south, while costs stayed roughly flat. Several members asked whether the new "
    "warehouse would open on schedule, and the chair promised a written answer within a week. "
    "After a short break the discussion turned to hiring, training and the spring catalogue."
)


def build_prompt(n_tokens: int, tokenize: Callable[[str], list[int]], bos: list[int]) -> list[int]:
    """``bos`` (zero or one token) followed by the filler's tokens, cycled, to exactly ``n_tokens``."""
    if n_tokens < 1:
        raise BenchError(f"prompt length must be at least 1 token, got {n_tokens}")
    body = tokenize(FILLER)
    if not body:
        raise BenchError("the model's tokenizer produced no tokens for the filler text")
    out = list(bos)[:n_tokens]
    while len(out) < n_tokens:
        out.extend(body[: n_tokens - len(out)])
    return out
