"""One reader per result schema version: each turns a row as stored in its version into the
current version's form, so the code that reads rows (flat, compare, verdict, report) only ever
sees the current version and never branches on a row's age.

Versions (docs/results.md says the same for users):

1 (until 2026-12-03) -- fields were added without a bump, so a version-1 row may lack any of
  ``tier.basis`` (where its numbers come from), ``tier.speed_basis``, ``efficiency.projection`` as
  ``{value, low, high, inputs}`` per metric (the earliest rows hold the withdrawn bandwidth-ratio
  projection: a bare number), ``config.depth``, the KV cache options, the task's ``metric`` and the
  catalog's ``published_scores``. Absent sections and keys read as None (sections.py).
2 (from 2026-12-03) -- the fields of schema.py and sections.py as of that date (each of those
  above where it applies): ``tier.basis`` in every row, ``efficiency.projection`` only as
  ``{value, low, high, inputs}`` or null.

A new field, a changed meaning or a removed field bumps ``RESULT_SCHEMA_VERSION`` and adds the
reader of the version before it here (reading it into the new form), never a branch elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bench.errors import BenchError

if TYPE_CHECKING:
    from bench.results.schema import Row

RESULT_SCHEMA_VERSION = 2


def _from_v1(row: Row) -> Row:
    """A version-1 row in version 2's form: ``tier.basis`` from its profile where it has none (a
    row from before the field: ``measured`` for the host as it is, else ``emulated on HOST``), and a
    bare-number projection (the withdrawn bandwidth-ratio rule, never read since) dropped."""
    if not row.tier.basis:
        row.tier = row.tier.replace(basis="measured" if row.config.profile_id == "auto" else f"emulated on {row.host}")
    projection = row.efficiency.projection
    if projection:
        kept = {metric: p for metric, p in projection.items() if isinstance(p, dict)}
        row.efficiency = row.efficiency.replace(projection=kept or None)
    row.schema_version = RESULT_SCHEMA_VERSION
    return row


READERS: dict[int, Callable[[Row], Row]] = {1: _from_v1}


def reader(version: Any) -> Callable[[Row], Row]:
    """What turns a row parsed from ``version`` into the current version's form (nothing for the
    current one); a version this suite does not read is refused with a message naming it."""
    if version == RESULT_SCHEMA_VERSION:
        return lambda row: row
    if isinstance(version, int) and version in READERS:
        return READERS[version]
    raise BenchError(f"result schema version {version!r} is not supported (this is version "
                     f"{RESULT_SCHEMA_VERSION}; it also reads {', '.join(map(str, sorted(READERS)))})")
