"""What a result was measured with: host, OS, Python, library versions, suite version."""

from __future__ import annotations

import platform
import subprocess
import sys
from importlib import metadata
from typing import Any

from bench import __version__
from bench.datafiles import REPO_ROOT
from bench.hardware.profiles import HostInfo
from bench.native.buildinfo import build_facts

TRACKED_PACKAGES = ("llama-cpp-python", "torch", "transformers", "bitsandbytes", "optimum",
                    "optimum-onnx", "onnxruntime", "accelerate", "gguf", "numpy", "psutil")


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in TRACKED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def suite_commit() -> str | None:
    try:
        proc = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() or None if proc.returncode == 0 else None


def capture_environment(host: HostInfo) -> dict[str, Any]:
    return {
        "host": host.to_dict(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "packages": package_versions(),
        "bench_version": __version__,
        "bench_commit": suite_commit(),
        # flags, why they were chosen, and llama.cpp's own system info (read in a child process)
        "llama_cpp_build": build_facts(),
    }
