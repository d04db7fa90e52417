"""Reasoning models write their thinking before the answer, between ``<think>`` and ``</think>``
(DeepSeek-R1 and its distills). These pure functions split a generation into the reasoning and the
answer, in text and in tokens, so a task counts them apart and scores only the answer.

A distill's chat template may open the span itself (its generation prompt ends in ``<think>``),
so the text can hold only the closing tag. A span never closed means the generation was cut off
while reasoning: no answer was given (``truncated``), which is not a wrong answer.
"""

from __future__ import annotations

from dataclasses import dataclass

OPEN, CLOSE = "<think>", "</think>"


@dataclass(frozen=True)
class Split:
    reasoning: str  # the thinking (tags left out); "" when there is none
    answer: str  # what follows it: the text that is scored
    span: str  # "none" (no think tags), "closed", or "open" (a reasoning never finished)


def opens_reasoning(prompt: str) -> bool:
    """Whether a prompt ends inside a think span (a template that writes ``<think>`` for the model)."""
    return prompt.rstrip().endswith(OPEN)


def split_reasoning(text: str, opened: bool = False) -> Split:
    """The reasoning and the answer of a generation (rules in the module docstring); ``opened``:
    the prompt itself opened the span."""
    close = text.find(CLOSE)
    if close >= 0:
        start = text.find(OPEN)
        begin = start + len(OPEN) if 0 <= start < close else 0
        return Split(text[begin:close], text[close + len(CLOSE):], "closed")
    start = text.find(OPEN)
    if start >= 0:
        return Split(text[start + len(OPEN):], "", "open")
    return Split(text, "", "open") if opened else Split("", text, "none")


def reasoning_tokens(pieces: list[str], opened: bool = False) -> int:
    """How many of the generated tokens (their text pieces, in order) belong to the reasoning: all
    tokens up to and including the one that completes ``</think>``; all of them while the span is
    open; none without a think span."""
    text = ""
    for i, piece in enumerate(pieces):
        text += piece
        if CLOSE in text:
            return i + 1
    return len(pieces) if opened or OPEN in text else 0
