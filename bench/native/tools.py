"""llama.cpp's own tools (llama-bench, llama-server, llama-perplexity), built from the same
vendored source as the installed llama-cpp-python and with the same ggml flags, so that a
comparison with them compares like with like, and so that they run where the wheel runs (a
``-march=native`` build dies on a machine whose advertised AMX faults).

Built once per (llama-cpp-python version, CPU, flags) into the suite's cache; the flags and the
CMake command are recorded beside the binaries (``build.json``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.native import llama_build as lb
from bench.native.cpu import read_cpu

TOOLS = ("llama-bench", "llama-server", "llama-perplexity")
# llama.cpp's own build switches for the tools: no tests or examples, no web UI download, no TLS
# (loopback only), static libraries so each binary stands alone.
TOOL_ARGS = ("-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=OFF", "-DLLAMA_BUILD_TESTS=OFF",
             "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_TOOLS=ON", "-DLLAMA_BUILD_SERVER=ON",
             "-DLLAMA_USE_PREBUILT_UI=OFF", "-DLLAMA_BUILD_UI=OFF", "-DLLAMA_OPENSSL=OFF", "-DLLAMA_CURL=OFF")


class ToolBuildError(RuntimeError):
    pass


def installed_flags() -> tuple[str, dict[str, Any]]:
    """The installed wheel's ggml flags (from the install record), and the record itself."""
    record = lb.read_record()
    if record is None or record.get("stale"):
        raise ToolBuildError("the installed llama-cpp-python was not built by `python -m bench.install`, so its "
                             "flags are unknown; run `python -m bench.install` first")
    return " ".join(record["build"]["cmake_args"]), record


def tools_dir(version: str, flags: str) -> Path:
    key = lb.hashlib.sha256(flags.encode()).hexdigest()[:10]
    return lb.cache_root() / "native" / f"llama-tools-{version}" / f"{read_cpu().machine}-{read_cpu().key}" / key


def _extract_vendor(sdist: Path, dest: Path) -> Path:
    """The sdist's vendor/llama.cpp tree, extracted member by member with path checks."""
    with tarfile.open(sdist) as tar:
        members = []
        for m in tar.getmembers():
            parts = Path(m.name).parts
            if len(parts) < 3 or parts[1:3] != ("vendor", "llama.cpp"):
                continue
            if m.issym() or m.islnk() or ".." in parts or Path(m.name).is_absolute():
                continue  # nothing in the archive may write outside dest
            members.append(m)
        tar.extractall(dest, members=members, filter="data")
    roots = list(dest.glob("*/vendor/llama.cpp"))
    if len(roots) != 1:
        raise ToolBuildError(f"{sdist.name}: no vendor/llama.cpp tree inside")
    return roots[0]


def tool_path(name: str, build: bool = True, say: Any = print) -> Path:
    """The path of a llama.cpp tool built with the installed wheel's flags (building it once)."""
    if name not in TOOLS:
        raise ToolBuildError(f"unknown tool {name!r}; known: {', '.join(TOOLS)}")
    flags, record = installed_flags()
    folder = tools_dir(record["version"], flags)
    exe = folder / "bin" / name
    if exe.exists():
        return exe
    if not build:
        raise ToolBuildError(f"{name} is not built yet for these flags ({folder})")
    build_tools(record["version"], flags, folder, say)
    return exe


def build_tools(version: str, flags: str, folder: Path, say: Any = print) -> None:
    cmake = shutil.which("cmake")
    if cmake is None:
        raise ToolBuildError("building llama.cpp's tools needs cmake (apt-get install cmake, or pip install cmake)")
    folder.mkdir(parents=True, exist_ok=True)
    log_path = folder / "build.log"
    started = time.monotonic()
    configure = [cmake, "-S", "SRC", "-B", "BUILD", *TOOL_ARGS, *flags.split()]
    say(f"building {', '.join(TOOLS)} from llama-cpp-python {version}'s llama.cpp with the installed wheel's "
        f"flags ({flags}); about 10-15 minutes on 2 cores, log: {log_path}")
    with tempfile.TemporaryDirectory(prefix="bench-tools-") as tmp, log_path.open("w") as log:
        src = _extract_vendor(lb.sdist(version), Path(tmp))
        build = Path(tmp) / "build"
        cmd = [c.replace("SRC", str(src)).replace("BUILD", str(build)) if c in ("SRC", "BUILD") else c
               for c in configure]
        env = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}
        for step in (cmd, [cmake, "--build", str(build), "--config", "Release", "-j", str(os.cpu_count() or 1),
                           "--target", *TOOLS]):
            log.write("$ " + " ".join(step) + "\n")
            log.flush()
            proc = subprocess.Popen(step, stdout=log, stderr=subprocess.STDOUT, env=env)
            while proc.poll() is None:
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    say(f"  still building the tools ({(time.monotonic() - started) / 60:.0f} min)")
            if proc.returncode != 0:
                raise ToolBuildError(f"building llama.cpp's tools failed (exit {proc.returncode}); see {log_path}")
        (folder / "bin").mkdir(exist_ok=True)
        for name in TOOLS:
            shutil.copy2(build / "bin" / name, folder / "bin" / name)
    info = {"version": version, "ggml_flags": flags.split(), "tool_args": list(TOOL_ARGS), "tools": list(TOOLS),
            "configure": configure, "build_seconds": round(time.monotonic() - started, 1),
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cpu_key": read_cpu().key}
    (folder / "build.json").write_text(json.dumps(info, indent=1))
    say(f"built llama.cpp's tools in {(time.monotonic() - started) / 60:.1f} min: {folder / 'bin'}")


def tool_build_info(name: str) -> dict[str, Any]:
    """What a row or a report records about a tool: its path and how it was built."""
    exe = tool_path(name, build=False)
    try:
        info = json.loads((exe.parent.parent / "build.json").read_text())
    except (OSError, ValueError):
        info = {}
    return {"path": str(exe), **info}


if __name__ == "__main__":  # python -m bench.native.tools: build them now
    import sys

    try:
        for tool in TOOLS:
            print(tool_path(tool))
    except ToolBuildError as exc:
        sys.exit(f"bench.native.tools: error: {exc}")
