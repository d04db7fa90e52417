"""Writing files so that a reader never sees half of one: every file the suite writes whole goes
through ``atomic_path`` (a temporary name beside the target, renamed over it only on success).
Result rows are appended, not rewritten: see ``bench.results.files.append_row``.

Standard library only: ``python -m bench.install`` uses it before the suite's dependencies exist.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path in ``path``'s folder; it replaces ``path`` when the block ends normally and
    is removed (file or folder) when it raises, so ``path`` is either the old whole or the new whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    if tmp.is_file():
        tmp.unlink()  # left by an earlier process of the same pid that was killed
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_json(path: Path, data: Any, indent: int | None = None) -> None:
    atomic_write_text(path, json.dumps(data, indent=indent))
