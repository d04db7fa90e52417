"""``bench models audit``: for every catalog variant, what pins its bytes, and why not where nothing does.

Two things can be pinned: the **commit** a Hugging Face source is fetched at (a 40-hex ``revision``
in ``models.yaml``; a branch such as ``main`` moves), and each **file's sha256**. Where the catalog
pins neither, the lock file (``bench.models.lockfile``) records what the first fetch gave, and every
later use and fetch is checked against it. Pure: reads the catalog and the lock file, fetches nothing.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.models.catalog import Catalog, Source
from bench.models.lockfile import ModelLock, Recorded
from bench.models.store import source_key

_COMMIT = re.compile(r"^[0-9a-f]{40}$")
PINNED, RECORDED, NOT_YET, DERIVED = "pinned", "recorded at first fetch", "to be recorded at first fetch", "derived"
NO_COMMIT = ("revision {rev!r} is a branch: no checked page names a commit that holds it (the hub is unreachable "
             "from here)")
NO_FILE_HASH = "no checked page gave its sha256 (the hub is unreachable from here)"
SNAPSHOT = "a folder snapshot: the catalog carries no per-file hashes"


@dataclass(frozen=True)
class AuditRow:
    variant: str  # model:variant
    source: str  # kind and what it names
    commit: str  # what pins the revision ("n/a" where a source has none)
    files: str  # what pins the file hashes
    status: str  # PINNED, RECORDED, NOT_YET or DERIVED
    why_not: str  # empty when pinned

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def _recorded_commit(rec: Recorded | None) -> str:
    return f"recorded at first fetch: {rec.commit}" if rec and rec.commit else ""


def _hf_row(src: Source, rec: Recorded | None) -> tuple[str, str, str, list[str]]:
    """(source, commit, files, reasons) of a Hugging Face source."""
    hf = src.hf
    assert hf is not None
    source = f"hf:{hf.repo}" + (f"/{hf.file}" if hf.file else " (snapshot)") + f"@{hf.revision}"
    why: list[str] = []
    if _COMMIT.match(hf.revision):
        commit = f"pinned: {hf.revision}"
    else:
        commit = _recorded_commit(rec) or NOT_YET
        why.append(NO_COMMIT.format(rev=hf.revision))
    if hf.file is None:
        files = f"{len(rec.files)} file(s) recorded at first fetch" if rec else NOT_YET
        why.append(SNAPSHOT)
    elif src.sha256:
        files = f"pinned: {src.sha256}"
        if hf.extra_files:
            files += f"; its {len(hf.extra_files)} other shard(s) " + ("recorded at first fetch" if rec else NOT_YET)
            why.append("the other shards' sha256 are not in the catalog")
    else:
        name = Path(hf.file).name  # the lock names a file as it sits in its snapshot folder
        files = f"recorded at first fetch: {rec.files[name]['sha256']}" if rec and name in rec.files else NOT_YET
        why.append(NO_FILE_HASH)
    return source, commit, files, why


def _row(label: str, src: Source, rec: Recorded | None) -> AuditRow:
    if src.derive is not None:
        return AuditRow(label, f"derive:{src.derive.recipe} from {src.derive.from_variant}", "n/a",
                        "made here from its source variant, whose check it inherits", DERIVED, "")
    if src.hf is not None:
        source, commit, files, why = _hf_row(src, rec)
    elif src.pypi_parts is not None:
        parts = src.pypi_parts.parts
        source = f"pypi_parts:{parts[0].requirement}..{parts[-1].requirement}"
        commit, files, why = "n/a (PyPI: each part pinned ==)", f"pinned: {len(parts)} wheel sha256 + {src.sha256}", []
    elif src.pypi is not None:
        source, commit = f"pypi:{src.pypi.requirement}#{src.pypi.path}", "n/a (PyPI: pinned ==)"
        pins = [f"wheel {src.pypi.wheel_sha256}"] if src.pypi.wheel_sha256 else []
        pins += [f"file {src.sha256}"] if src.sha256 else []
        why = [] if pins else ["neither the wheel's nor the file's sha256 is in the catalog"]
        files = f"pinned: {', '.join(pins)}" if pins else (
            f"recorded at first fetch: {next(iter(rec.files.values()))['sha256']}" if rec and rec.files else NOT_YET)
    else:
        source, commit = f"path:{src.path}", "n/a (a local file)"
        why = [] if src.sha256 else ["the catalog gives no sha256 for this local file"]
        files = f"pinned: {src.sha256}" if src.sha256 else (
            f"recorded at first fetch: {next(iter(rec.files.values()))['sha256']}" if rec and rec.files else NOT_YET)
    status = PINNED if not why else (RECORDED if rec is not None else NOT_YET)
    return AuditRow(label, source, commit, files, status, "; ".join(why))


def audit(catalog: Catalog, lock: ModelLock, base_dir: Path) -> list[AuditRow]:
    """One row per catalog variant, in catalog order."""
    rows = []
    for model in catalog.models:
        for variant in model.variants:
            src = variant.source
            key = source_key(src, base_dir)
            rows.append(_row(f"{model.id}:{variant.id}", src, lock.get(key) if key else None))
    return rows
