"""Prompts for serving loads: distinct per request (seeded), measured in the server's tokens.

Every prompt starts with a seeded random tag (8 hex digits) and its request number, so prompts
(almost never) share a first token and a prompt cache has nothing to reuse; the server's reported
cache hits are kept in the row to show it.

- ``fixed``: exactly N tokens of the server's tokenizer: the tag, then a seeded window of real
  text (a corpus the suite ships, tokenized once by the server's /tokenize). Sent as token ids
  where the endpoint takes them (llama-server's /v1/completions), else as text whose length is
  checked with /tokenize (and another window tried when detokenize/tokenize does not round-trip).
- ``gsm8k``, ``corpus``, ``mix``: real text at its natural length (a realistic length mix):
  GSM8K test questions, paragraphs of the corpus (at least 20 words), or either at random;
  each counted with the server's /tokenize where it has one.

Without a /tokenize the client cannot count the server's tokens: prompts are built from words
(about 0.75 word per token), the row says the count is unchecked, and the server's own
usage.prompt_tokens is what the metrics use.

``shared_prefix`` N (``bench serve --shared-prefix N``): every prompt starts with the same N tokens
(a seeded window of the corpus: a long system prompt, or the earlier turns of a conversation), and
only then the tag and the request's own text, so a prompt cache has exactly N tokens to reuse per
request and its effect is measured on purpose (the share of prompt tokens the server reports as
served from its cache). With ``fixed`` prompts the prefix is part of the N tokens asked for; with
natural prompts it comes before the text.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from typing import Any

from bench.errors import BenchError
from bench.serving.client import HttpFailure, Target, http_json
from bench.serving.load import Job

PROMPT_KINDS = ("fixed", "gsm8k", "corpus", "mix")
MIN_PARAGRAPH_WORDS = 20


@dataclass(frozen=True)
class Prompt:
    text: str | None
    token_ids: list[int] | None
    tokens: int | None  # in the server's tokens; None where it could not be counted
    source: str


class ServerTokenizer:
    """The server's own tokenizer over HTTP: llama-server's /tokenize and /detokenize, or vLLM's
    /tokenize. ``available`` is False where the server has neither."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.shape: str | None = None
        for shape in (("llama", "vllm") if target.server_kind == "llama-server" else ("vllm", "llama")):
            if self._try(shape, "a") is not None:
                self.shape = shape
                break

    @property
    def available(self) -> bool:
        return self.shape is not None

    def _try(self, shape: str, text: str) -> list[int] | None:
        body: dict[str, Any] = ({"content": text, "add_special": False} if shape == "llama" else
                                {"model": self.target.model, "prompt": text, "add_special_tokens": False})
        try:
            status, data = http_json(self.target.root + "/tokenize", "POST", body, timeout_s=60.0,
                                     api_key=self.target.api_key)
        except HttpFailure:
            return None
        if status != 200 or not isinstance(data, dict) or not isinstance(data.get("tokens"), list):
            return None
        tokens = data["tokens"]
        if tokens and isinstance(tokens[0], dict):  # with_pieces shape
            tokens = [t["id"] for t in tokens]
        return [int(t) for t in tokens]

    def tokenize(self, text: str) -> list[int]:
        if self.shape is None:
            raise BenchError("the server has no /tokenize")
        ids = self._try(self.shape, text)
        if ids is None:
            raise BenchError(f"the server's /tokenize stopped answering ({self.target.root})")
        return ids

    def detokenize(self, ids: list[int]) -> str | None:
        if self.shape != "llama":
            return None
        try:
            status, data = http_json(self.target.root + "/detokenize", "POST", {"tokens": ids}, timeout_s=60.0,
                                     api_key=self.target.api_key)
        except HttpFailure:
            return None
        return data.get("content") if status == 200 and isinstance(data, dict) else None


def _tag(i: int, rng: random.Random) -> str:
    """Random first (so prompts share no first token, and a prefix cache nothing), then the number."""
    return f"{rng.getrandbits(32):08x} request {i}: "


class PromptFactory:
    """Builds the prompts of every load point, seeded, from texts available offline."""

    def __init__(self, target: Target, kind: str, prompt_tokens: int, corpus: str = "alice29", seed: int = 0,
                 shared_prefix: int = 0) -> None:
        if kind not in PROMPT_KINDS:
            raise BenchError(f"--prompts must be one of {', '.join(PROMPT_KINDS)}, got {kind!r}")
        if shared_prefix < 0 or (kind == "fixed" and shared_prefix >= prompt_tokens):
            raise BenchError(f"--shared-prefix {shared_prefix}: must be 0 or more and, with --prompts fixed, less "
                             f"than --prompt-tokens {prompt_tokens}")
        self.target, self.kind, self.length, self.seed = target, kind, prompt_tokens, seed
        self.shared = shared_prefix
        self._prefix: tuple[list[int] | None, str | None] | None = None
        self.tokenizer = ServerTokenizer(target)
        self.send_ids = (target.server_kind == "llama-server" and target.api == "completions"
                         and self.tokenizer.available)
        self.corpus_name = corpus
        self._corpus_text: str | None = None
        self._corpus_ids: list[int] | None = None
        self._questions: list[str] | None = None
        self._paragraphs: list[str] | None = None

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "prompt_tokens": self.length if self.kind == "fixed" else None,
                "corpus": self.corpus_name if self.kind != "gsm8k" else None,
                "sent_as": "token ids" if self.send_ids else "text",
                "counted_by": "the server's /tokenize" if self.tokenizer.available else
                "unchecked: the server has no /tokenize; the server's usage.prompt_tokens is used",
                "shared_prefix_tokens": self.shared,
                "distinct": (f"each prompt starts with the same {self.shared}-token prefix, then a seeded random tag "
                             "and its request number" if self.shared else
                             "each prompt starts with a seeded random tag and its request number")}

    # -- sources --------------------------------------------------------------------------------
    def _corpus(self) -> str:
        if self._corpus_text is None:
            from bench.quality.corpus import load_corpus

            self._corpus_text = load_corpus(self.corpus_name).text
        return self._corpus_text

    def _gsm8k(self) -> list[str]:
        if self._questions is None:
            from bench.quality.tasks import load_items, task_file

            self._questions = [it.question for it in load_items(task_file("gsm8k"))]
        return self._questions

    def _paras(self) -> list[str]:
        if self._paragraphs is None:
            paras = [" ".join(p.split()) for p in re.split(r"\n\s*\n", self._corpus())]
            self._paragraphs = [p for p in paras if len(p.split()) >= MIN_PARAGRAPH_WORDS]
            if not self._paragraphs:
                raise BenchError(f"corpus {self.corpus_name}: no paragraph of {MIN_PARAGRAPH_WORDS}+ words")
        return self._paragraphs

    def _corpus_tokens(self) -> list[int]:
        if self._corpus_ids is None:
            self._corpus_ids = self.tokenizer.tokenize(self._corpus())
        return self._corpus_ids

    def prefix(self) -> tuple[list[int] | None, str | None]:
        """The shared prefix as (server token ids, text): one seeded window of the corpus, the same
        for every request of the sweep. ((None, None) without --shared-prefix; ids None without a
        /tokenize, text None where ids are sent and the server cannot detokenize.)"""
        if not self.shared:
            return None, None
        if self._prefix is None:
            rng = random.Random(f"{self.seed}:shared-prefix")
            if not self.tokenizer.available:
                words = self._corpus().split()
                want = max(1, int(self.shared * 0.75))
                start = rng.randrange(0, max(1, len(words) - want))
                self._prefix = (None, " ".join(words[start:start + want]) + "\n\n")
            else:
                ids = self._corpus_tokens()
                if self.shared > len(ids):
                    raise BenchError(f"--shared-prefix {self.shared}: longer than the corpus ({len(ids)} tokens)")
                start = rng.randrange(0, len(ids) - self.shared + 1)
                window = ids[start:start + self.shared]
                self._prefix = (window, None if self.send_ids else self.tokenizer.detokenize(window))
        return self._prefix

    # -- prompts --------------------------------------------------------------------------------
    def prompts(self, first: int, n: int, salt: int) -> list[Prompt]:
        """``n`` prompts numbered from ``first``; ``salt`` (the load point) varies the seed."""
        rng = random.Random(f"{self.seed}:{salt}")
        return [self._fixed(first + i, rng) if self.kind == "fixed" else self._natural(first + i, rng)
                for i in range(n)]

    def _fixed(self, i: int, rng: random.Random) -> Prompt:
        tag = _tag(i, rng)
        prefix_ids, prefix_text = self.prefix()
        if not self.tokenizer.available:
            words = self._corpus().split()
            want = max(1, int((self.length - self.shared) * 0.75))
            start = rng.randrange(0, max(1, len(words) - want))
            return Prompt((prefix_text or "") + tag + " ".join(words[start:start + want]), None, None,
                          f"{self.corpus_name} @ word {start}")
        corpus_ids = self._corpus_tokens()
        tag_ids = self.tokenizer.tokenize(tag)
        prefix_ids = prefix_ids or []
        body_len = self.length - len(prefix_ids) - len(tag_ids)
        if body_len < 1 or body_len > len(corpus_ids):
            raise BenchError(f"--prompt-tokens {self.length}: must be more than the {len(prefix_ids)} shared and "
                             f"{len(tag_ids)} tag tokens and at most the corpus ({len(corpus_ids)} tokens)")
        for _ in range(8):
            start = rng.randrange(0, len(corpus_ids) - body_len + 1)
            ids = prefix_ids + tag_ids + corpus_ids[start:start + body_len]
            source = f"{self.corpus_name} @ token {start}"
            if self.send_ids:
                return Prompt(None, ids, len(ids), source)
            text = self.tokenizer.detokenize(ids)
            if text is not None and len(self.tokenizer.tokenize(text)) == self.length:
                return Prompt(text, None, self.length, source)
        raise BenchError(f"could not build a text prompt of exactly {self.length} server tokens in 8 tries "
                         "(detokenize and tokenize do not round-trip); use --prompts corpus for natural lengths")

    def _natural(self, i: int, rng: random.Random) -> Prompt:
        kind = self.kind if self.kind != "mix" else rng.choice(("gsm8k", "corpus"))
        if kind == "gsm8k":
            pool, name = self._gsm8k(), "gsm8k"
        else:
            pool, name = self._paras(), self.corpus_name
        k = rng.randrange(len(pool))
        own = _tag(i, rng) + pool[k]
        source = f"{name} #{k}"
        prefix_ids, prefix_text = self.prefix()
        if not self.tokenizer.available:
            return Prompt((prefix_text or "") + own, None, None, source)
        ids = (prefix_ids or []) + self.tokenizer.tokenize(own)
        if self.send_ids:
            return Prompt(None, ids, len(ids), source)
        text = (prefix_text or "") + own
        return Prompt(text, None, len(self.tokenizer.tokenize(text)), source)


def encode_job(target: Target, prompt: Prompt, max_tokens: int, ignore_eos: bool,
               extra: dict[str, Any] | None = None) -> Job:
    """The request body, encoded once before the clock starts."""
    body: dict[str, Any] = {"model": target.model, "max_tokens": max_tokens, "stream": True,
                            "stream_options": {"include_usage": True}}
    content: Any = prompt.token_ids if prompt.token_ids is not None else prompt.text
    if target.api == "chat":
        body["messages"] = [{"role": "user", "content": prompt.text if prompt.text is not None else ""}]
    else:
        body["prompt"] = content
    if ignore_eos:
        body["ignore_eos"] = True  # llama-server, vLLM; servers without it generate to their EOS
    if target.server_kind == "llama-server":
        body["timings_per_token"] = True  # its token counter on every chunk: tokens per chunk, exactly
    body.update(extra or {})
    return Job(json.dumps(body, separators=(",", ":")).encode(), prompt.tokens, max_tokens)
