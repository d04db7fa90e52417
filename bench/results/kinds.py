"""The small closed vocabularies a row carries, as types: its status, where its numbers were
measured, what the tier's speed rests on, and whether the machine was all there.

Each is a ``StrEnum`` (or a frozen value), so a row as stored keeps the strings it always had; the
text forms rows have carried ("emulated on HOST", "projected from ...", a reason that starts with
"DISTURBED: ...") are read here, once, by ``parse_basis``, ``parse_speed_basis`` and
``MachineVerdict.of``; no other module matches a prefix of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class RowStatus(StrEnum):
    """How a cell ended (docs/METRICS.md): ``ok``, or why it has no measurement."""

    OK = "ok"
    FAILED = "failed"
    OOM = "oom"
    TIMEOUT = "timeout"
    DOES_NOT_FIT = "does_not_fit"


class Basis(StrEnum):
    """Where a row's own numbers were measured: on the tier itself (a machine that is the tier, or
    the host as it is), under the tier's caps on another machine, or not at all (a lost fleet node)."""

    MEASURED = "measured"
    EMULATED = "emulated"
    NOT_MEASURED = "not measured"


class SpeedBasis(StrEnum):
    """What a tier's speed rests on: measured on the tier, the performance model's PROJECTION, or
    nothing (``caps only``: the fit was measured under the tier's caps, the tier's speed was not)."""

    MEASURED = "measured"
    PROJECTED = "projected"
    CAPS_ONLY = "caps only"


EMULATED_ON = "emulated on "
PROJECTED_FROM = "projected from "


def emulated_on(host: str) -> str:
    """The stored text of an emulated row's ``tier.basis``."""
    return f"{EMULATED_ON}{host}"


def parse_basis(text: str) -> tuple[Basis, str | None]:
    """A stored ``tier.basis`` as (kind, the host it was emulated on): "measured", "emulated on HOST
    [(why)]" or anything else (a fleet row's "not measured: ...")."""
    if text == Basis.MEASURED:
        return Basis.MEASURED, None
    if text.startswith(EMULATED_ON):
        return Basis.EMULATED, text[len(EMULATED_ON):].split(" (", 1)[0] or None
    return Basis.NOT_MEASURED, None


def parse_speed_basis(text: str) -> SpeedBasis:
    """A stored ``tier.speed_basis`` ("measured", "projected from <evidence>", "caps only") as its kind."""
    if text == SpeedBasis.MEASURED:
        return SpeedBasis.MEASURED
    if text.startswith(PROJECTED_FROM) or text.startswith(SpeedBasis.PROJECTED):
        return SpeedBasis.PROJECTED
    return SpeedBasis.CAPS_ONLY


DISTURBED_PREFIX = "DISTURBED"


@dataclass(frozen=True)
class MachineVerdict:
    """Whether the machine was all there while a pass ran (bench.measuring.machine_state): others'
    load, steal or a clock that fell, each a flag in words."""

    disturbed: bool = False
    flags: tuple[str, ...] = ()

    @classmethod
    def of(cls, state: Mapping[str, Any] | None, reason: str | None = None) -> MachineVerdict:
        """The verdict of a machine-state report; a row from before the report was stored (only its
        reason, "DISTURBED: flag; flag[; the rest]") is read from the reason's first clause."""
        if state:
            flags = tuple(state.get("flags") or ())
            return cls(bool(state.get("disturbed")), flags)
        if reason and reason.startswith(DISTURBED_PREFIX):
            first = reason.split(";")[0]
            return cls(True, (first.split(":", 1)[1].strip(),) if ":" in first else ())
        return cls()

    @property
    def label(self) -> str | None:
        """"DISTURBED: <flags>", the words every pass's reason starts with when disturbed; None if not."""
        return f"{DISTURBED_PREFIX}: {'; '.join(self.flags)}" if self.disturbed else None

    def flag_reason(self, reason: str | None) -> str | None:
        """``reason`` with the label put first when the pass was disturbed."""
        if not self.disturbed:
            return reason
        return f"{self.label}; {reason}" if reason else self.label
