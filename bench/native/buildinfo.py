"""The installed llama.cpp build as results and ``bench doctor`` describe it.

Its facts come from the install record (``bench.native.llama_build``) and from llama.cpp itself
(``llama_print_system_info``: what the library was compiled with, as llama-bench prints it).
The latter is read in a child process, once per installed library (cached by the libraries'
hashes): a build that cannot run here may die while loading, and that must never take the
caller down with it.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from typing import Any

from bench.native import llama_build as lb
from bench.native.cpu import read_cpu

_SYSTEM_INFO = ("import llama_cpp, json; print(json.dumps({'version': llama_cpp.__version__, "
                "'system_info': llama_cpp.llama_print_system_info().decode(errors='replace').strip(), "
                "'gpu_offload': bool(llama_cpp.llama_supports_gpu_offload())}))")


def system_info(python: str = sys.executable, timeout_s: float = 120) -> dict[str, Any]:
    """llama.cpp's own description of its build, read in a child (cached per installed library)."""
    hashes = lb.installed_lib_hashes()
    if not hashes:
        return {"error": f"{lb.PACKAGE} is not installed"}
    key = hashlib.sha256(json.dumps(hashes, sort_keys=True).encode()).hexdigest()[:16]
    cache = lb.cache_root() / "native" / "system-info" / f"{key}.json"
    try:
        return json.loads(cache.read_text())
    except (OSError, ValueError):
        pass
    try:
        proc = subprocess.run([python, "-c", _SYSTEM_INFO], capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"error": f"importing llama_cpp took over {timeout_s:g} s"}
    if proc.returncode != 0:
        how = f"killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exit {proc.returncode}"
        tail = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        return {"error": f"importing llama_cpp failed ({how})" + (f": {tail[-1]}" if tail else "")}
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    lb.write_json(cache, info)
    return info


def compiled_features(info: str) -> list[str]:
    """The CPU features a build says it was compiled with: 'CPU : AVX2 = 1 | AMX_INT8 = 1 |' ->
    ['AVX2', 'AMX_INT8'] (``llama_print_system_info``'s format)."""
    out = []
    for part in info.replace("\n", "|").split("|"):
        name, sep, value = part.rpartition("=")
        name = name.split(":")[-1].strip()
        if sep and value.strip() == "1" and name:
            out.append(name)
    return out


def build_facts(python: str = sys.executable) -> dict[str, Any]:
    """What a result row records about the llama.cpp build: flags, why, and its own system info."""
    record = lb.read_record()
    cpu = read_cpu()
    facts: dict[str, Any] = {}
    if record is None:
        facts["installed_by"] = "unknown: not installed by `python -m bench.install`; its flags are not recorded"
    else:
        facts.update({"build": record["build"]["name"], "cmake_args": record["build"]["cmake_args"],
                      "reason": record.get("reason"), "installed_by": record.get("installed_by"),
                      "built_for_cpu_key": record.get("cpu", {}).get("key"), "stale": record.get("stale", False)})
        if record.get("stale"):
            facts["installed_by"] = ("unknown: llama-cpp-python was reinstalled after `python -m bench.install`; "
                                     "the recorded flags no longer describe it")
    facts["this_cpu_key"] = cpu.key
    facts.update(system_info(python))
    return facts
