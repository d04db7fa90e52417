"""A model's chat template, rendered as its developer's tools render it.

Chat templates are Jinja2 (the GGUF's ``tokenizer.chat_template``, a Hugging Face tokenizer's
``chat_template``); transformers and llama-cpp-python render them in Jinja2's immutable sandbox
with ``raise_exception`` and the model's start and end tokens, and so do we: the template is data
from a model file, so it gets no access to anything but the messages.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

from bench.errors import BenchError


def render_chat(template: str, messages: list[dict[str, str]], *, bos_token: str = "", eos_token: str = "",
                add_generation_prompt: bool = True) -> str:
    """The prompt text for ``messages`` ({role, content}) with the assistant's turn opened."""
    from jinja2 import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise BenchError(f"the chat template refused the messages: {message}")

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.globals.update(raise_exception=raise_exception,
                       strftime_now=lambda fmt: dt.datetime.now().strftime(fmt))
    try:
        return env.from_string(template).render(messages=messages, bos_token=bos_token, eos_token=eos_token,
                                                add_generation_prompt=add_generation_prompt)
    except TemplateError as exc:
        raise BenchError(f"the model's chat template does not render: {exc}") from None


def template_id(template: str) -> str:
    """A short fingerprint of a template, recorded with the prompts it made."""
    return hashlib.sha256(template.encode()).hexdigest()[:16]


def chat_messages(system: str | None, user: str) -> list[dict[str, Any]]:
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
