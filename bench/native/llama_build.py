"""llama-cpp-python built for this machine, cached per CPU, with the flags recorded.

llama-cpp-python compiles llama.cpp with ``-march=native`` by default, so a build turns on every
extension the CPU *advertises* (AMX on a Sapphire Rapids Xeon), and a VM whose advertised AMX
faults kills every process that reaches those kernels. Here a build is chosen from a ladder,
fastest first, that the CPU's probed extensions allow (``bench.native.cpu``):

1. ``native``: ``-DGGML_NATIVE=ON`` (llama.cpp's default), only if every advertised extension
   ran in its probe;
2. ``no-amx``: ``-DGGML_NATIVE=OFF`` with each usable extension named (AVX-512 and its
   VNNI/VBMI/BF16, AVX2, FMA, F16C, BMI2...) and AMX off;
3. ``avx2``: also without AVX-512; 4. ``avx``; 5. ``generic``: no extension at all.

The wheel of each build lives in the suite's cache under the CPU's key (model name and every
flag), so it is reused only on the same kind of CPU, never on one that cannot run it. pip's own
wheel cache is bypassed (``--no-cache-dir``): it keys a built wheel by the sdist's URL alone, so
a wheel built with other flags, or on another CPU, would come back from it.

The install record (``<venv>/share/llm-effbench/llama-build.json``) says which build is installed,
its CMake flags, why it was chosen, and the smoke test's result; ``bench doctor`` and every
result row read it, and llama.cpp's own tools (llama-bench, llama-server) are built with the same
flags from the same source.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.fileio import atomic_write_json
from bench.native.cpu import CpuInfo, ProbeResult


def write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write_json(path, data, indent=1)

PACKAGE = "llama-cpp-python"
REPO_ROOT = Path(__file__).resolve().parents[2]

# Probed extension -> the ggml CMake options it turns on (ggml/CMakeLists.txt of the vendored source).
GGML_OPTIONS: dict[str, tuple[str, ...]] = {
    "sse4_2": ("GGML_SSE42",), "avx": ("GGML_AVX",), "avx2": ("GGML_AVX2",), "fma": ("GGML_FMA",),
    "f16c": ("GGML_F16C",), "bmi2": ("GGML_BMI2",), "avx_vnni": ("GGML_AVX_VNNI",),
    "avx512": ("GGML_AVX512",), "avx512_vbmi": ("GGML_AVX512_VBMI",), "avx512_vnni": ("GGML_AVX512_VNNI",),
    "avx512_bf16": ("GGML_AVX512_BF16",), "amx": ("GGML_AMX_TILE", "GGML_AMX_INT8"), "amx_bf16": ("GGML_AMX_BF16",),
}
# An extension is only compiled in with the ones it builds on.
_NEEDS: dict[str, tuple[str, ...]] = {
    "avx2": ("avx",), "fma": ("avx",), "f16c": ("avx",), "avx_vnni": ("avx2",), "avx512": ("avx2", "fma", "f16c"),
    "avx512_vbmi": ("avx512",), "avx512_vnni": ("avx512",), "avx512_bf16": ("avx512",),
    "amx": ("avx512", "avx512_vnni"), "amx_bf16": ("amx",),
}
# The ladder's explicit rungs: each drops a family of extensions, the likeliest to fault first.
_RUNGS: tuple[tuple[str, str, frozenset[str]], ...] = (
    ("no-amx", "without AMX", frozenset({"amx", "amx_bf16"})),
    ("avx2", "without AVX-512 or AMX", frozenset({"amx", "amx_bf16", "avx512", "avx512_vbmi", "avx512_vnni",
                                                  "avx512_bf16", "avx512_fp16"})),
    ("avx", "with AVX and SSE4.2 only", frozenset(GGML_OPTIONS) - {"avx", "sse4_2"}),
    ("generic", "with no SIMD extension", frozenset(GGML_OPTIONS)),
)


@dataclass(frozen=True)
class BuildConfig:
    """One way to compile llama.cpp: a name, the CMake arguments, and what they compile in."""

    name: str
    cmake_args: tuple[str, ...]
    extensions: tuple[str, ...]  # compiled in; ("native",) for -march=native
    why: str

    @property
    def key(self) -> str:
        return hashlib.sha256(" ".join(self.cmake_args).encode()).hexdigest()[:10]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "cmake_args": list(self.cmake_args), "extensions": list(self.extensions),
                "key": self.key}


def _closed(usable: set[str]) -> set[str]:
    """``usable`` minus any extension whose prerequisites are not all in it."""
    out = set(usable)
    changed = True
    while changed:
        changed = False
        for ext in list(out):
            if any(dep not in out for dep in _NEEDS.get(ext, ())):
                out.discard(ext)
                changed = True
    return out


def explicit_config(name: str, extensions: set[str], why: str) -> BuildConfig:
    """GGML_NATIVE=OFF with every option set explicitly (llama.cpp turns several on by default)."""
    on = _closed(extensions & set(GGML_OPTIONS))
    args = ["-DGGML_NATIVE=OFF"]
    for ext, options in GGML_OPTIONS.items():
        args += [f"-D{opt}={'ON' if ext in on else 'OFF'}" for opt in options]
    return BuildConfig(name, tuple(args), tuple(e for e in GGML_OPTIONS if e in on), why)


NATIVE = BuildConfig("native", ("-DGGML_NATIVE=ON",), ("native",),
                     "llama.cpp's default: -march=native, every extension the CPU advertises")


def advertises_amx(probes: list[ProbeResult]) -> bool:
    """The CPU advertises AMX (its probe ran, faulted or could not run: it was advertised)."""
    return any(p.extension in ("amx", "amx_bf16") for p in probes)


def build_ladder(cpu: CpuInfo, probes: list[ProbeResult], try_native: bool = False,
                 native_ran_here: bool = False) -> list[BuildConfig]:
    """The builds to try on this CPU, fastest first. Pure: the probes decide, nothing is run.

    The native build comes first only where every advertised extension ran in its probe and, on a
    CPU that advertises AMX, only when asked (``try_native``: ``--try-native``) or when it already
    passed its smoke test on this kind of CPU (``native_ran_here``). An AMX probe that runs is not
    proof: on an Intel Xeon VM it ran while llama.cpp's AMX kernels crashed the native build's
    smoke test, which cost a second build of ten minutes (docs/install.md, "The AMX rung")."""
    native = NATIVE
    if cpu.machine not in ("x86_64", "AMD64"):
        return [native, BuildConfig("generic", ("-DGGML_NATIVE=OFF",), (), "no -march=native")]
    faulty = sorted(p.extension for p in probes if not p.usable)
    usable = {p.extension for p in probes if p.usable}
    deferred = not faulty and advertises_amx(probes) and not (try_native or native_ran_here)
    ladder: list[BuildConfig] = []
    if not faulty and not deferred:
        ladder.append(native)
    for name, what, dropped in _RUNGS:
        why = what
        if faulty:
            why += f"; the CPU advertises {', '.join(faulty)} but its probe faulted"
        elif deferred and not ladder:
            why += ("; the CPU advertises AMX: the safe build first (`python -m bench.install --try-native` "
                    "builds the native one, with AMX, and keeps it only if its smoke test runs)")
        cfg = explicit_config(name, usable - dropped, why)
        if all(cfg.cmake_args != c.cmake_args for c in ladder):
            ladder.append(cfg)
    return ladder


def next_build(ladder: list[BuildConfig], crashed: dict[str, str] | set[str]) -> BuildConfig | None:
    """The fastest build on the ladder not known to crash on this CPU (None: none is left)."""
    return next((c for c in ladder if c.key not in crashed), None)


# -- the pinned version, the source and the cache ----------------------------------------------
def pinned_version(pyproject: Path = REPO_ROOT / "pyproject.toml") -> str:
    """The ``llama-cpp-python==X`` pin of the suite's own dependencies."""
    match = re.search(r'"llama-cpp-python==([^"\s;]+)"', pyproject.read_text(encoding="utf-8"))
    if not match:
        raise RuntimeError(f"{pyproject}: no llama-cpp-python==VERSION pin among the dependencies")
    return match.group(1)


def cache_root() -> Path:
    """``$BENCH_CACHE``, else ``$XDG_CACHE_HOME/llm-effbench``, else ``~/.cache/llm-effbench``
    (the same rule as ``bench.datafiles.cache_dir``, repeated here to stay standard-library only)."""
    if os.environ.get("BENCH_CACHE"):
        return Path(os.environ["BENCH_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "llm-effbench"


def builds_dir(version: str, cpu: CpuInfo) -> Path:
    return cache_root() / "native" / f"llama-cpp-python-{version}" / f"{cpu.machine}-{cpu.key}"


# The pinned source's sha256, per version: building it runs its code, so no other bytes are built.
# Source: PyPI's simple index for llama-cpp-python (https://pypi.org/simple/llama-cpp-python/, the
# PEP 691 JSON form pip reads), read 2026-12-03: llama_cpp_python-0.3.36.tar.gz, 76,589,250 bytes,
# uploaded 2026-10-01, sha256 as below; the file pip downloaded here hashed to the same value.
SDIST_SHA256 = {"0.3.36": "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"}


def sdist(version: str, python: str = sys.executable) -> Path:
    """The pinned source distribution, downloaded once into the cache with pip's
    ``--require-hashes`` and checked against ``SDIST_SHA256`` on every use (the wheel and the tools
    are built from this one file)."""
    expected = SDIST_SHA256.get(version)
    if expected is None:
        raise RuntimeError(f"no sha256 is pinned for the {PACKAGE} {version} source (SDIST_SHA256 in "
                           "bench/native/llama_build.py): add the one PyPI's simple index states for it")
    folder = cache_root() / "native" / "sdist"
    target = folder / f"llama_cpp_python-{version}.tar.gz"
    if target.exists():
        got = sha256_file(target)
        if got != expected:
            raise RuntimeError(f"{target}: sha256 {got}, but {PACKAGE} {version}'s source is pinned to {expected}: "
                               "not building it (delete the file to download it again)")
        return target
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".download-") as tmp:
        requirements = Path(tmp) / "requirements.txt"
        requirements.write_text(f"{PACKAGE}=={version} --hash=sha256:{expected}\n")
        proc = subprocess.run([python, "-m", "pip", "download", "--no-deps", "--no-binary", PACKAGE,
                               "--disable-pip-version-check", "--require-hashes", "-r", str(requirements),
                               "-d", tmp], capture_output=True, text=True)
        got = list(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
        if proc.returncode != 0 or len(got) != 1:
            lines = [ln.strip() for ln in proc.stderr.strip().splitlines() if ln.strip()]
            bad = re.search(r"Got\s+([0-9a-f]{64})", proc.stderr)
            why = (f"the downloaded file's sha256 is {bad.group(1)}, the pinned one {expected}" if bad
                   else lines[-1] if lines else "no sdist")
            raise RuntimeError(f"cannot download the {PACKAGE}=={version} source from PyPI: {why}")
        if sha256_file(got[0]) != expected:  # pip checked it; a second look costs a second
            raise RuntimeError(f"{got[0].name}: sha256 differs from the pinned {expected}")
        os.replace(got[0], target)
    return target


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def cached_wheel(version: str, cpu: CpuInfo, config: BuildConfig) -> Path | None:
    """A wheel built earlier on this kind of CPU with these flags, if its checksum still holds."""
    folder = builds_dir(version, cpu) / config.key
    meta = folder / "build.json"
    if not meta.exists():
        return None
    try:
        info = json.loads(meta.read_text())
        wheel = folder / info["wheel"]
    except (OSError, ValueError, KeyError):
        return None
    if not wheel.exists() or sha256_file(wheel) != info.get("wheel_sha256"):
        return None
    return wheel


def build_wheel(version: str, cpu: CpuInfo, config: BuildConfig, python: str = sys.executable,
                say: Any = print) -> Path:
    """Compile the wheel with ``config``'s flags into the cache (log kept beside it)."""
    source = sdist(version, python)
    folder = builds_dir(version, cpu) / config.key
    folder.mkdir(parents=True, exist_ok=True)
    log_path = folder / "build.log"
    env = {**os.environ, "CMAKE_ARGS": " ".join(config.cmake_args),
           "CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count() or 1)}
    env.pop("SOURCE_DATE_EPOCH", None)  # it silently turns GGML_NATIVE's default off
    started = time.monotonic()
    say(f"building {PACKAGE} {version} ({config.name}: {' '.join(config.cmake_args)}); "
        f"about 10-15 minutes on 2 cores, log: {log_path}")
    with tempfile.TemporaryDirectory(dir=folder, prefix=".build-") as tmp, log_path.open("w") as log:
        proc = subprocess.Popen([python, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir",
                                 "--disable-pip-version-check", "-w", tmp, str(source)],
                                stdout=log, stderr=subprocess.STDOUT, env=env)
        while proc.poll() is None:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                say(f"  still building ({(time.monotonic() - started) / 60:.0f} min)")
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or len(wheels) != 1:
            raise RuntimeError(f"building {PACKAGE} failed (exit {proc.returncode}); see {log_path}")
        wheel = folder / wheels[0].name
        os.replace(wheels[0], wheel)
    seconds = time.monotonic() - started
    info = {"package": PACKAGE, "version": version, "config": config.to_dict(), "cpu": cpu.to_dict(),
            "wheel": wheel.name, "wheel_sha256": sha256_file(wheel), "build_seconds": round(seconds, 1),
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "compiler": _compiler_version()}
    write_json(folder / "build.json", info)
    say(f"built {wheel.name} in {seconds / 60:.1f} min")
    return wheel


def _compiler_version() -> str | None:
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        return None
    out = subprocess.run([cc, "--version"], capture_output=True, text=True).stdout.splitlines()
    return out[0] if out else None


# -- what is installed -------------------------------------------------------------------------
def record_path(prefix: str = sys.prefix) -> Path:
    return Path(prefix) / "share" / "llm-effbench" / "llama-build.json"


def installed_lib_hashes() -> dict[str, str]:
    """sha256 (as pip's RECORD states it) of each shared library of the installed llama-cpp-python."""
    from importlib import metadata

    try:
        files = metadata.distribution(PACKAGE).files or []
    except metadata.PackageNotFoundError:
        return {}
    return {str(f): f.hash.value for f in files if f.hash and re.search(r"\.(so|dylib|dll)(\.|$)", f.name)}


def write_record(record: dict[str, Any], prefix: str = sys.prefix) -> Path:
    path = record_path(prefix)
    write_json(path, {**record, "lib_hashes": installed_lib_hashes()})
    return path


def read_record(prefix: str = sys.prefix) -> dict[str, Any] | None:
    """The install record, if the installed llama-cpp-python is still the build it describes.

    Returns None when there is none; a record whose libraries no longer match the installed ones
    (llama-cpp-python reinstalled by other means) comes back with ``"stale": True``."""
    try:
        record = json.loads(record_path(prefix).read_text())
    except (OSError, ValueError):
        return None
    now = installed_lib_hashes()
    record["stale"] = not now or now != record.get("lib_hashes")
    return record
