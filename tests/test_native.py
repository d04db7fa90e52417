"""Setup that yields a llama.cpp that runs here: CPU probes, the build ladder, crash explanations,
the install record and ``bench doctor``."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

from conftest import run_bench

from bench.measuring.launcher import _classify_exit, explain_crash
from bench.native import llama_build as lb
from bench.native.buildinfo import compiled_features
from bench.native.cpu import CpuInfo, ProbeResult, probe_extensions, read_cpu

SPR_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "bmi2", "avx512f", "avx512cd", "avx512vl", "avx512dq",
             "avx512bw", "avx512_vnni", "avx512_bf16", "avx512vbmi", "amx_tile", "amx_int8", "amx_bf16")


def _cpu(flags=SPR_FLAGS) -> CpuInfo:
    return CpuInfo(machine="x86_64", vendor="GenuineIntel", model_name="Test Xeon", flags=tuple(sorted(flags)))


def _probes(cpu: CpuInfo, faulty=()) -> list[ProbeResult]:
    return [ProbeResult(e, e not in faulty, "killed by SIGILL" if e in faulty else "ok") for e in cpu.advertised()]


def test_native_first_when_every_probe_runs_then_amx_off_first():
    cpu = _cpu()
    ladder = lb.build_ladder(cpu, _probes(cpu))
    assert [c.name for c in ladder] == ["native", "no-amx", "avx2", "avx", "generic"]
    assert ladder[0].cmake_args == ("-DGGML_NATIVE=ON",)
    no_amx = ladder[1].cmake_args
    assert "-DGGML_NATIVE=OFF" in no_amx and "-DGGML_AVX512=ON" in no_amx and "-DGGML_AVX512_VNNI=ON" in no_amx
    assert {"-DGGML_AMX_TILE=OFF", "-DGGML_AMX_INT8=OFF", "-DGGML_AMX_BF16=OFF"} <= set(no_amx)
    assert "-DGGML_AVX512=OFF" in ladder[2].cmake_args and "-DGGML_AVX2=ON" in ladder[2].cmake_args
    assert all(a.endswith("=OFF") for a in ladder[-1].cmake_args)  # generic: every extension off


def test_a_faulting_probe_skips_the_native_build_and_says_why():
    cpu = _cpu()
    ladder = lb.build_ladder(cpu, _probes(cpu, faulty=("amx",)))
    assert ladder[0].name == "no-amx" and "amx" in ladder[0].why and "faulted" in ladder[0].why
    # AVX-512 itself faulting drops what builds on it, AMX included, even from the first rung
    ladder = lb.build_ladder(cpu, _probes(cpu, faulty=("avx512",)))
    first = set(ladder[0].cmake_args)
    assert {"-DGGML_AVX512=OFF", "-DGGML_AVX512_VNNI=OFF", "-DGGML_AMX_INT8=OFF", "-DGGML_AVX2=ON"} <= first


def test_a_crash_moves_to_the_next_rung_and_identical_rungs_collapse():
    cpu = _cpu()
    ladder = lb.build_ladder(cpu, _probes(cpu))
    assert lb.next_build(ladder, {}) == ladder[0]
    assert lb.next_build(ladder, {ladder[0].key: "SIGILL"}) == ladder[1]
    assert lb.next_build(ladder, {c.key for c in ladder}) is None
    avx2_only = _cpu(("sse4_2", "avx", "avx2", "fma", "f16c", "bmi2"))
    names = [c.name for c in lb.build_ladder(avx2_only, _probes(avx2_only))]
    assert names == ["native", "no-amx", "avx", "generic"]  # "avx2" would repeat "no-amx": dropped


def test_cpu_key_changes_with_any_flag():
    assert _cpu().key != _cpu(SPR_FLAGS[:-1]).key
    assert _cpu().key == _cpu(tuple(reversed(SPR_FLAGS))).key


def test_probes_run_here_for_every_advertised_extension(tmp_path):
    cpu = read_cpu()
    results = probe_extensions(cpu, cache=tmp_path / "probes.json")
    assert [r.extension for r in results] == cpu.advertised()
    if "avx2" in cpu.flags:  # every x86-64 machine this suite has met; the probe must really run
        assert next(r for r in results if r.extension == "avx2").detail == "ok"
    again = probe_extensions(cpu, cache=tmp_path / "probes.json")  # from the cache
    assert [(r.extension, r.usable) for r in again] == [(r.extension, r.usable) for r in results]


def test_compiled_features_parse_llama_system_info():
    info = "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | AVX512 = 1 | AMX_INT8 = 0 | LLAMAFILE = 1 | REPACK = 1 |"
    assert compiled_features(info) == ["SSE3", "SSSE3", "AVX", "AVX2", "AVX512", "LLAMAFILE", "REPACK"]


def test_a_crash_while_loading_names_the_build_and_the_fix():
    # a real child killed by a real SIGILL gives the exit status the runner classifies
    rc = subprocess.run([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGILL)"]).returncode
    assert rc == -signal.SIGILL
    build = {"build": "native", "cmake_args": ["-DGGML_NATIVE=ON"]}
    status, reason = _classify_exit(rc, "Fatal Python error: Illegal instruction | File \"x.py\", line 1 in eval",
                                    "loading", "llama.cpp", build)
    assert status == "failed"
    assert "SIGILL (loading)" in reason and "-DGGML_NATIVE=ON" in reason and "bench doctor" in reason
    assert "python -m bench.install --rebuild" in reason and "in eval" in reason
    later = explain_crash("SIGSEGV", "after 3 of 4 requests", "llama.cpp", build)
    assert later == "worker crashed with SIGSEGV (after 3 of 4 requests)"  # no guess once it ran
    assert "instruction" in explain_crash("SIGILL", "first tokens", "transformers", None)


def test_install_record_goes_stale_when_the_libraries_change(tmp_path):
    lb.write_json(lb.record_path(str(tmp_path)), {"build": {"name": "native"}, "lib_hashes": {"x.so": "abc"}})
    record = lb.read_record(str(tmp_path))
    assert record is not None and record["stale"] is True
    assert lb.read_record(str(tmp_path / "none")) is None


def test_doctor_shows_the_build_its_flags_and_a_passing_smoke_test(embedded_model):
    proc = run_bench("doctor", "--json")
    d = json.loads(proc.stdout)
    assert proc.returncode == (1 if d["problems"] else 0), proc.stderr
    assert d["problems"] == [], d["problems"]  # this machine was set up by the README's command
    ll = d["llama_cpp"]
    assert ll["installed_by"] == "python -m bench.install" and ll["cmake_args"] and ll["reason"]
    assert ll["built_for_cpu_key"] == ll["this_cpu_key"] == read_cpu().key
    assert ll["system_info"].startswith("CPU :")
    assert d["smoke"]["ok"] and d["smoke"]["decode_tps"] > 0
    faulty = {p["extension"] for p in d["probes"] if not p["usable"]}
    if "amx" in faulty:
        assert "AMX_INT8" not in compiled_features(ll["system_info"])
    text = run_bench("doctor", "--no-smoke")
    assert "llama.cpp    llama-cpp-python" in text.stdout and " ".join(ll["cmake_args"]) in text.stdout
