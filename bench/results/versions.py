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
from typing import Any

from bench.errors import BenchError

RESULT_SCHEMA_VERSION = 2


def _from_v1(d: dict[str, Any]) -> dict[str, Any]:
    """A version-1 row in version 2's form: ``tier.basis`` from its profile where it has none (a
    row from before the field: ``measured`` for the host as it is, else ``emulated on HOST``), and a
    bare-number projection (the withdrawn bandwidth-ratio rule, never read since) dropped."""
    d = dict(d)
    tier = dict(d.get("tier") or {})
    if not tier.get("basis"):
        host = ((d.get("environment") or {}).get("host") or {}).get("hostname")
        profile_id = (d.get("config") or {}).get("profile_id")
        tier["basis"] = "measured" if profile_id == "auto" else f"emulated on {host}"
    d["tier"] = tier
    efficiency = d.get("efficiency")
    if isinstance(efficiency, dict) and isinstance(efficiency.get("projection"), dict):
        projection = {k: v for k, v in efficiency["projection"].items() if not isinstance(v, int | float)}
        d["efficiency"] = {**efficiency, "projection": projection or None}
    d["schema_version"] = 2
    return d


READERS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _from_v1}


def current_form(d: dict[str, Any]) -> dict[str, Any]:
    """A row as stored, of any version this suite reads, in the current version's form; a version
    it does not know is refused with a message naming it."""
    version = d.get("schema_version")
    while version != RESULT_SCHEMA_VERSION:
        reader = READERS.get(version) if isinstance(version, int) else None
        if reader is None:
            raise BenchError(f"result schema version {version!r} is not supported (this is version "
                             f"{RESULT_SCHEMA_VERSION}; it reads {', '.join(map(str, sorted(READERS)))} too)")
        d = reader(d)
        version = d["schema_version"]
    return d
