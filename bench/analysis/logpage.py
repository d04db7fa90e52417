"""Dated measurement pages written by the scripts that measured them (``--markdown PATH``): what the
script printed, under a header that says which command, host, commit and time produced it, so a page
in docs/measurements/ is never retyped by hand."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import platform
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from bench.fileio import atomic_write_text


class _Tee(io.TextIOBase):
    def __init__(self, *streams: io.TextIOBase) -> None:
        self.streams = streams

    def write(self, s: str) -> int:
        for st in self.streams:
            st.write(s)
        return len(s)

    def flush(self) -> None:
        for st in self.streams:
            st.flush()


def _commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def page_header(title: str, argv: list[str]) -> str:
    now = dt.datetime.now(dt.timezone.utc)
    return (f"# {title} ({now.date().isoformat()})\n\n"
            f"Written by `{shlex.join(['python', *argv])}` on host `{platform.node()}` at commit `{_commit()}`, "
            f"finished {now.isoformat(timespec='seconds')}. Everything below is the command's own output.\n\n")


@contextlib.contextmanager
def markdown_page(path: str | None, title: str, argv: list[str] | None = None) -> Iterator[None]:
    """Print as usual; with a path, also write what was printed to that page when the block ends
    (only if it ends normally: a failed run leaves no page that looks complete)."""
    if not path:
        yield
        return
    buf = io.StringIO()
    with contextlib.redirect_stdout(_Tee(sys.stdout, buf)):
        yield
    atomic_write_text(Path(path), page_header(title, argv or sys.argv) + buf.getvalue().rstrip() + "\n")
