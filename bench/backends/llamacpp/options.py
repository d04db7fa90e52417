"""llama.cpp's KV cache settings as backend options (``--backend-opt``), parsed and checked once.

    type_k=f16|q8_0|q4_0|...   the K cache's type (llama-cpp-python ``type_k``; llama-bench ``-ctk``)
    type_v=f16|q8_0|q4_0|...   the V cache's type (``type_v``; llama-bench ``-ctv``)
    flash_attn=on|off          flash attention (``flash_attn``; llama-bench ``-fa``); default off,
                               llama-cpp-python's default

Pure parsing, no llama_cpp import: the planner (memory prediction, fit at depth), the backend and
the verdict read the same values. llama.cpp stores a quantized V cache only with flash attention
(llama-context.cpp refuses the context otherwise), so that combination is refused here, in one line,
before anything loads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bench.errors import BenchError
from bench.hardware.tiers import KV_CACHE_TYPES

KV_OPTIONS = ("type_k", "type_v", "flash_attn")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


@dataclass(frozen=True)
class KvSettings:
    type_k: str = "f16"
    type_v: str = "f16"
    flash_attn: bool = False

    def describe(self) -> dict[str, Any]:
        return {"type_k": self.type_k, "type_v": self.type_v, "flash_attn": self.flash_attn}


def _flag(value: Any) -> bool:
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise BenchError(f"llama.cpp: flash_attn must be on or off, got {value!r}")


def _type(key: str, value: Any) -> str:
    text = str(value).strip().lower()
    if text not in KV_CACHE_TYPES:
        raise BenchError(f"llama.cpp: {key} must be one of {', '.join(KV_CACHE_TYPES)}, got {value!r}")
    return text


def kv_settings(options: Mapping[str, Any]) -> KvSettings:
    """The KV cache settings in a cell's backend options (defaults where absent); a bad value is a
    one-line BenchError."""
    s = KvSettings(type_k=_type("type_k", options.get("type_k", "f16")),
                   type_v=_type("type_v", options.get("type_v", "f16")),
                   flash_attn=_flag(options.get("flash_attn", "off")))
    if KV_CACHE_TYPES[s.type_v][1] > 1 and not s.flash_attn:
        raise BenchError(f"llama.cpp: a quantized V cache (type_v={s.type_v}) needs flash_attn=on "
                         "(llama.cpp stores V quantized only with flash attention)")
    return s
