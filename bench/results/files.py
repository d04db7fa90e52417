"""Result files: JSON lines, one row per cell, each appended atomically and fsynced.

An interrupted run keeps every completed row. A reader skips (and reports) a damaged line
rather than losing the file.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import platform
import re
from pathlib import Path

from bench.errors import BenchError
from bench.results.schema import Row
from bench.results.serving import ServingRow


def default_results_path(results_dir: Path, when: dt.datetime | None = None, stem: str | None = None) -> Path:
    """``DATE_HOST.jsonl``, or ``STEM_HOST.jsonl`` for a matrix (so re-running it resumes)."""
    when = when or dt.datetime.now(dt.timezone.utc)
    host = re.sub(r"[^A-Za-z0-9_.-]", "_", platform.node() or "host")
    return results_dir / f"{stem or format(when, '%Y-%m-%d')}_{host}.jsonl"


def append_row(path: Path, row: Row) -> None:
    """One write of one whole line under an exclusive lock, then fsync."""
    data = (row.to_json() + "\n").encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        # A crash mid-line in an earlier run leaves no newline: start ours on a fresh line.
        size = os.fstat(fd).st_size
        if size:
            with open(path, "rb") as fh:
                fh.seek(size - 1)
                if fh.read(1) != b"\n":
                    data = b"\n" + data
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def read_results(path: Path) -> tuple[list[Row], list[ServingRow], list[str]]:
    """Both kinds of row in a results file, told apart by ``kind``: ``bench run``'s rows (``"run"``, or
    none in older files) and ``bench serve``'s serving rows (``"serving"``), and one warning
    (file:line) per line that could not be read."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        raise BenchError(f"{path}: results file not found") from None
    rows: list[Row] = []
    serving: list[ServingRow] = []
    warnings: list[str] = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            if not isinstance(d, dict):
                raise ValueError("not a JSON object")
            kind = d.get("kind", "run")  # a run row written before rows named their kind has none
            if kind == "serving":
                try:
                    serving.append(ServingRow.from_dict(d, f"{path}:{n}"))
                except BenchError as exc:
                    warnings.append(f"{path}:{n}: skipped serving row: {exc}")
                continue
            if kind != "run":
                raise BenchError(f"kind {kind!r} is not one this version reads (run, serving)")
            rows.append(Row.from_dict(d))
        except (ValueError, KeyError, TypeError, AttributeError, BenchError) as exc:
            warnings.append(f"{path}:{n}: skipped unreadable row: {exc}")
    return rows, serving, warnings


def read_rows(path: Path) -> tuple[list[Row], list[str]]:
    """``bench run``'s rows of a results file, and one warning per line that is not one."""
    rows, serving, warnings = read_results(path)
    warnings += [f"{s.source}: skipped: a serving row (bench serve), not a bench run row" for s in serving]
    return rows, warnings


def expand_result_paths(paths: list[Path]) -> list[Path]:
    """Files as given; a folder stands for the ``*.jsonl`` files in it and in its ``serving/``
    subfolder (where ``bench serve`` writes by default: ``results/serving/``)."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = sorted(p.glob("*.jsonl")) + sorted((p / "serving").glob("*.jsonl"))
            if not found:
                raise BenchError(f"{p}: folder has no *.jsonl results files")
            out += found
        elif not p.exists():
            raise BenchError(f"{p}: results file not found")
        else:
            out.append(p)
    return out


def load_results(paths: list[Path]) -> tuple[list[Row], list[ServingRow], list[str]]:
    """Rows and serving records of several files (from several machines, say), each kept once,
    with their warnings.

    A row is identified by run, cell and creation time, a serving record by run, record, load and
    creation time, so giving a file twice, or a merged file beside its parts, does not count a
    measurement twice. Rows keep their host in ``environment``.
    """
    rows: list[Row] = []
    serving: list[ServingRow] = []
    warnings: list[str] = []
    seen: set[tuple] = set()
    for path in dict.fromkeys(expand_result_paths(paths)):
        got, served, warns = read_results(path)
        warnings += warns
        for r in got:
            ident = (r.run_id, r.cell_key, r.created_at)
            if ident not in seen:
                seen.add(ident)
                rows.append(r)
        for s in served:
            if ("serving", *s.identity()) not in seen:
                seen.add(("serving", *s.identity()))
                serving.append(s)
    if not rows and not serving:
        detail = f" ({warnings[0]}{' ...' if len(warnings) > 1 else ''})" if warnings else ""
        raise BenchError(f"no readable result rows in {', '.join(map(str, paths))}{detail}")
    return rows, serving, warnings
