"""``bench doctor``: can the suite measure on this machine, and if not, what fixes it.

It shows the CPU and the extensions it advertises and really runs (probed in child processes),
the installed llama.cpp build (its CMake flags from the install record, and what the library says
it was compiled with), the smoke test (load the embedded model, prefill, decode; in a child), and
which backends import (each checked in a child). Every problem comes with the command that fixes
it. Nothing here loads llama.cpp or torch into this process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

from bench.native import llama_build as lb
from bench.native.buildinfo import build_facts, compiled_features
from bench.native.cpu import probe_extensions, read_cpu
from bench.native.smoke import run_smoke

INSTALL = f"{sys.executable} -m bench.install"

# Probed extension -> the names llama_print_system_info uses for it.
_SYSTEM_INFO_NAMES = {"amx": ("AMX_INT8",), "amx_bf16": ("AMX_BF16",), "avx512": ("AVX512",),
                      "avx512_vbmi": ("AVX512_VBMI",), "avx512_vnni": ("AVX512_VNNI",),
                      "avx512_bf16": ("AVX512_BF16",), "avx2": ("AVX2",), "avx": ("AVX",), "fma": ("FMA",),
                      "f16c": ("F16C",), "bmi2": ("BMI2",), "avx_vnni": ("AVX_VNNI",), "sse4_2": ("SSE42",)}


@dataclass
class Problem:
    what: str
    fix: str


@dataclass
class Diagnosis:
    cpu: dict[str, Any]
    probes: list[dict[str, Any]]
    llama: dict[str, Any]
    smoke: dict[str, Any] | None
    backends: dict[str, str]
    problems: list[Problem] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"cpu": self.cpu, "probes": self.probes, "llama_cpp": self.llama, "smoke": self.smoke,
                "backends": self.backends, "problems": [p.__dict__ for p in self.problems]}


def _backend_imports() -> dict[str, str]:
    """Each registered backend's packages, imported in one child per backend: 'ok' or why not."""
    from bench.backends import BACKENDS

    out: dict[str, str] = {}
    for name, spec in BACKENDS.items():
        if name == "llama.cpp":
            continue  # the smoke test is the real check for llama.cpp
        code = "; ".join(f"import {m}" for m in spec.requires)
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
        if proc.returncode == 0:
            out[name] = "ok"
        else:
            tail = [ln for ln in proc.stderr.splitlines() if ln.strip()]
            why = tail[-1] if tail and proc.returncode > 0 else f"killed by signal {-proc.returncode}"
            out[name] = f"does not import: {why}"
    return out


def diagnose(smoke: bool = True, backends: bool = True) -> Diagnosis:
    version = lb.pinned_version()
    cpu = read_cpu()
    probes = probe_extensions(cpu, cache=lb.builds_dir(version, cpu) / "probes.json")
    llama = build_facts()
    result = run_smoke() if smoke and "error" not in llama else None
    d = Diagnosis(cpu={**cpu.to_dict(), "advertised": cpu.advertised()},
                  probes=[{"extension": p.extension, "usable": p.usable, "detail": p.detail} for p in probes],
                  llama=llama, smoke=result.to_dict() if result else None,
                  backends=_backend_imports() if backends else {})
    fix_install = f"{INSTALL} --extras test"
    if "error" in llama:
        d.problems.append(Problem(f"llama.cpp: {llama['error']}", fix_install))
    elif llama.get("installed_by", "").startswith("unknown"):
        d.problems.append(Problem(f"llama.cpp build {llama['installed_by']}", fix_install))
    elif llama.get("built_for_cpu_key") not in (None, cpu.key):
        d.problems.append(Problem(f"llama.cpp was built for another CPU (key {llama['built_for_cpu_key']}, this one "
                                  f"is {cpu.key}) and may use instructions this one lacks", fix_install))
    compiled = set(compiled_features(llama.get("system_info", "")))
    for p in probes:
        names = [n for n in _SYSTEM_INFO_NAMES.get(p.extension, ()) if n in compiled]
        if not p.usable and names:
            d.problems.append(Problem(f"llama.cpp is compiled with {', '.join(names)}, which faults on this machine "
                                      f"({p.extension}: {p.detail})", f"{INSTALL} --rebuild"))
    if result is not None and not result.ok:
        cause = (" (the build uses an instruction this machine cannot run)" if result.crashed else "")
        d.problems.append(Problem(f"llama.cpp smoke test failed: {result.detail}{cause}", f"{INSTALL} --rebuild"))
    for name, status in d.backends.items():
        if status != "ok":
            from bench.backends import BACKENDS

            extra = BACKENDS[name].extra
            d.problems.append(Problem(f"backend {name} {status}", f"{sys.executable} -m pip install -e '.[{extra}]'"))
    return d


def render(d: Diagnosis) -> list[str]:
    """The diagnosis as plain lines (the CLI prints them)."""
    cpu = d.cpu
    faulty = [p for p in d.probes if not p["usable"]]
    lines = [f"CPU          {cpu['model_name'] or '?'} ({cpu['machine']}, {cpu['logical_cpus']} logical CPUs, "
             f"key {cpu['key']})",
             f"advertises   {' '.join(cpu['advertised']) or '(no probed extension)'}",
             "probed       " + ("; ".join(f"{p['extension']} FAULTS: {p['detail']}" for p in faulty) if faulty
                                else f"every advertised extension runs ({len(d.probes)} probed)")]
    ll = d.llama
    if "error" in ll and "system_info" not in ll:
        lines.append(f"llama.cpp    {ll['error']}")
    else:
        lines.append(f"llama.cpp    llama-cpp-python {ll.get('version', '?')}, build "
                     f"{ll.get('build', '?')} ({' '.join(ll.get('cmake_args', [])) or 'flags not recorded'})")
        lines.append(f"  chosen     {ll.get('reason') or ll.get('installed_by')}")
        lines.append(f"  compiled   {ll.get('system_info', '?')}")
    if d.smoke is not None:
        s = d.smoke
        lines.append("smoke test   " + (f"ok: prefill {s['prefill_tps']:.0f}, decode {s['decode_tps']:.0f} tok/s "
                                        f"({s['seconds']:.1f} s)" if s["ok"] else f"FAILED: {s['detail']}"))
    for name, status in d.backends.items():
        lines.append(f"backend      {name}: {status}")
    if d.problems:
        for p in d.problems:
            lines.append(f"PROBLEM      {p.what}")
            lines.append(f"  fix        {p.fix}")
    else:
        lines.append("problems     none")
    return lines


def main_lines(as_json: bool, smoke: bool) -> tuple[list[str], int]:
    d = diagnose(smoke=smoke)
    lines = [json.dumps(d.to_dict(), indent=1)] if as_json else render(d)
    return lines, 1 if d.problems else 0
