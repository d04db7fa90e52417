"""Text corpora for quality scoring, available offline on a fresh install, identified by sha256.

The default, ``alice29``, is Lewis Carroll's *Alice's Adventures in Wonderland* (1865, public
domain; Project Gutenberg "Millennium Fulcrum Edition 2.9"), as shipped in the Canterbury corpus
inside the source distribution of ``brotli==1.2.1`` on PyPI (MIT-licensed test data). It is read
from the archive by one named member, never extracted, and its line endings are normalized to LF.
Hashes were computed here from the downloaded archive on 2026-11-22.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench.datafiles import cache_dir
from bench.errors import BenchError


@dataclass(frozen=True)
class SdistMember:
    requirement: str
    sdist_sha256: str
    member: str
    member_sha256: str  # of the raw member, before line endings are normalized
    description: str


CORPORA = {
    "alice29": SdistMember(
        requirement="brotli==1.2.1",
        sdist_sha256="02b2f7b5a83485efe448a44ddf7983def05c3bb1dcf917d4f7154070260e13de",
        member="brotli-1.2.1/tests/testdata/alice29.txt",
        member_sha256="7467306ee0feed4971260f3c87421154a05be571d944e9cb021a5713700c38f0",
        description="Alice's Adventures in Wonderland (Carroll, 1865; public domain), "
                    "Canterbury corpus in brotli 1.2.1",
    ),
    "lcet10": SdistMember(
        requirement="brotli==1.2.1",
        sdist_sha256="02b2f7b5a83485efe448a44ddf7983def05c3bb1dcf917d4f7154070260e13de",
        member="brotli-1.2.1/tests/testdata/lcet10.txt",
        member_sha256="5314ba1dbb03f471df88bec6cd120a938ef60d0fd3511c5c1dce61bf7463245f",
        description="Library of Congress Workshop on Electronic Texts, proceedings (1992), "
                    "Canterbury corpus in brotli 1.2.1",
    ),
}


@dataclass(frozen=True)
class Corpus:
    name: str
    text: str
    sha256: str  # of the text as scored (UTF-8, LF line endings)
    source: str
    path: Path


def load_corpus(spec: str) -> Corpus:
    """A named corpus (fetched once into the cache), a text file in a Hugging Face dataset repo
    (``hf:OWNER/NAME/path/file.txt[@revision]``, online), or a local UTF-8 text file."""
    if spec in CORPORA:
        path = _fetch_member(spec, CORPORA[spec])
        source = CORPORA[spec].description
    elif spec.startswith("hf:"):
        path, source = _fetch_hf_text(spec)
    else:
        path = Path(spec)
        source = f"file:{path}"
        if not path.is_file():
            raise BenchError(f"corpus {spec!r}: no such file, and not a known corpus ({', '.join(CORPORA)})")
    try:
        text = path.read_text(encoding="utf-8").replace("\r\n", "\n")
    except UnicodeDecodeError as exc:
        raise BenchError(f"corpus {path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if not text.strip():
        raise BenchError(f"corpus {path}: empty")
    return Corpus(name=spec if spec in CORPORA or spec.startswith("hf:") else path.name, text=text,
                  sha256=hashlib.sha256(text.encode()).hexdigest(), source=source, path=path.resolve())


def _fetch_hf_text(spec: str) -> tuple[Path, str]:
    from bench.models.catalog import HfSource, Source
    from bench.models.store import ModelStore

    body, _, revision = spec[3:].partition("@")
    parts = body.split("/")
    if len(parts) < 3:
        raise BenchError(f"corpus {spec!r}: expected hf:OWNER/DATASET/path/to/file.txt[@revision]")
    hf = HfSource(repo="/".join(parts[:2]), file="/".join(parts[2:]), revision=revision or "main",
                  repo_type="dataset")
    return ModelStore().fetch_file(Source(hf=hf), spec), spec


def _fetch_member(name: str, src: SdistMember) -> Path:
    target = cache_dir() / "corpora" / f"{name}.txt"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".download-") as tmp:
        req = Path(tmp, "requirements.txt")
        req.write_text(f"{src.requirement} --hash=sha256:{src.sdist_sha256}\n")
        proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                               "--disable-pip-version-check", "--require-hashes", "-r", str(req), "--dest", tmp],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith("WARNING")]
            raise BenchError(f"cannot download {src.requirement} from PyPI: {lines[-1] if lines else proc.returncode}")
        (archive,) = Path(tmp).glob("*.tar.gz")
        with tarfile.open(archive) as tar:
            member = tar.getmember(src.member)
            if not member.isfile():
                raise BenchError(f"{src.requirement}: {src.member} is not a regular file")
            data = tar.extractfile(member).read()  # type: ignore[union-attr]
        digest = hashlib.sha256(data).hexdigest()
        if digest != src.member_sha256:
            raise BenchError(f"checksum mismatch for corpus {name}: expected {src.member_sha256}, got {digest}")
        part = target.with_suffix(".part")
        part.write_bytes(data.replace(b"\r\n", b"\n"))
        os.replace(part, target)
    return target
