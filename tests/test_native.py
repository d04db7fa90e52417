"""Setup that yields a llama.cpp that runs here: CPU probes, the build ladder, crash explanations,
the install record and ``bench doctor``."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest
from conftest import run_bench

from bench.measuring.launcher import _classify_exit, explain_crash
from bench.native import llama_build as lb
from bench.native.buildinfo import compiled_features
from bench.native.cpu import (
    AMX_FAULTS,
    AMX_NOT_ADVERTISED,
    AMX_RUNS,
    AMX_UNPROBED,
    CpuInfo,
    ProbeResult,
    probe_amx,
    probe_extensions,
    read_cpu,
)

EPYC_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "bmi2")  # an AMD EPYC without AVX-512 (this machine's kind)
SPR_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "bmi2", "avx512f", "avx512cd", "avx512vl", "avx512dq",
             "avx512bw", "avx512_vnni", "avx512_bf16", "avx512vbmi", "amx_tile", "amx_int8", "amx_bf16")


def _cpu(flags=SPR_FLAGS) -> CpuInfo:
    return CpuInfo(machine="x86_64", vendor="GenuineIntel", model_name="Test Xeon", flags=tuple(sorted(flags)))


def _probes(cpu: CpuInfo, faulty=()) -> list[ProbeResult]:
    return [ProbeResult(e, e not in faulty, "killed by SIGILL" if e in faulty else "ok") for e in cpu.advertised()]


@pytest.mark.fast
def test_native_first_when_every_probe_runs_and_amx_is_not_advertised():
    cpu = _cpu(EPYC_FLAGS)
    ladder = lb.build_ladder(cpu, _probes(cpu))
    assert [c.name for c in ladder] == ["native", "no-amx", "avx", "generic"]  # AMD EPYC: unchanged, one build
    assert ladder[0].cmake_args == ("-DGGML_NATIVE=ON",)
    assert lb.build_ladder(cpu, _probes(cpu), try_native=True) == ladder


@pytest.mark.fast
def test_amx_advertised_builds_the_safe_rung_first_and_native_only_when_asked_or_proven():
    cpu = _cpu()
    probes = _probes(cpu)  # every probe ran, AMX's included: still no proof (docs/install.md)
    safe_first = lb.build_ladder(cpu, probes)
    assert [c.name for c in safe_first] == ["no-amx", "avx2", "avx", "generic"]
    assert "--try-native" in safe_first[0].why and "advertises AMX" in safe_first[0].why
    no_amx = safe_first[0].cmake_args
    assert "-DGGML_NATIVE=OFF" in no_amx and "-DGGML_AVX512=ON" in no_amx and "-DGGML_AVX512_VNNI=ON" in no_amx
    assert {"-DGGML_AMX_TILE=OFF", "-DGGML_AMX_INT8=OFF", "-DGGML_AMX_BF16=OFF"} <= set(no_amx)
    for ladder in (lb.build_ladder(cpu, probes, try_native=True), lb.build_ladder(cpu, probes, native_ran_here=True)):
        assert [c.name for c in ladder] == ["native", "no-amx", "avx2", "avx", "generic"]
        assert ladder[0] == lb.NATIVE and ladder[1].cmake_args == no_amx  # the same wheel, the same cache key
    ladder = lb.build_ladder(cpu, probes, try_native=True)
    assert "-DGGML_AVX512=OFF" in ladder[2].cmake_args and "-DGGML_AVX2=ON" in ladder[2].cmake_args
    assert all(a.endswith("=OFF") for a in ladder[-1].cmake_args)  # generic: every extension off
    # a probe that could not run (no compiler for AMX) is still an advertised AMX: safe rung first
    unprobed = [ProbeResult(p.extension, True, "unprobed: no C compiler") for p in probes]
    assert lb.build_ladder(cpu, unprobed)[0].name == "no-amx"


@pytest.mark.fast
def test_a_faulting_probe_skips_the_native_build_and_says_why():
    cpu = _cpu()
    ladder = lb.build_ladder(cpu, _probes(cpu, faulty=("amx",)))
    assert ladder[0].name == "no-amx" and "amx" in ladder[0].why and "faulted" in ladder[0].why
    assert lb.build_ladder(cpu, _probes(cpu, faulty=("amx",)), try_native=True) == ladder  # never native
    # AVX-512 itself faulting drops what builds on it, AMX included, even from the first rung
    ladder = lb.build_ladder(cpu, _probes(cpu, faulty=("avx512",)))
    first = set(ladder[0].cmake_args)
    assert {"-DGGML_AVX512=OFF", "-DGGML_AVX512_VNNI=OFF", "-DGGML_AMX_INT8=OFF", "-DGGML_AVX2=ON"} <= first


@pytest.mark.fast
def test_a_crash_moves_to_the_next_rung_and_identical_rungs_collapse():
    cpu = _cpu()
    ladder = lb.build_ladder(cpu, _probes(cpu), try_native=True)
    assert lb.next_build(ladder, {}) == ladder[0]
    assert lb.next_build(ladder, {ladder[0].key: "SIGILL"}) == ladder[1]
    assert lb.next_build(ladder, {c.key for c in ladder}) is None
    avx2_only = _cpu(("sse4_2", "avx", "avx2", "fma", "f16c", "bmi2"))
    names = [c.name for c in lb.build_ladder(avx2_only, _probes(avx2_only))]
    assert names == ["native", "no-amx", "avx", "generic"]  # "avx2" would repeat "no-amx": dropped


@pytest.mark.fast
def test_cpu_key_changes_with_any_flag():
    assert _cpu().key != _cpu(SPR_FLAGS[:-1]).key
    assert _cpu().key == _cpu(tuple(reversed(SPR_FLAGS))).key


@pytest.mark.model
def test_probes_run_here_for_every_advertised_extension(tmp_path):
    cpu = read_cpu()
    results = probe_extensions(cpu, cache=tmp_path / "probes.json")
    assert [r.extension for r in results] == cpu.advertised()
    if "avx2" in cpu.flags:  # every x86-64 machine this suite has met; the probe must really run
        assert next(r for r in results if r.extension == "avx2").detail == "ok"
    again = probe_extensions(cpu, cache=tmp_path / "probes.json")  # from the cache
    assert [(r.extension, r.usable) for r in again] == [(r.extension, r.usable) for r in results]


@pytest.mark.model
def test_the_amx_probe_program_compiles_and_says_what_this_cpu_does():
    """The real program, compiled with -mamx-tile -mamx-int8 and run in a child: it reads CPUID and
    XCR0 itself. Forced past its own check on a CPU without AMX, it faults for real: the kernel
    refuses the tile state, and a tile instruction without it dies with SIGILL."""
    cpu = read_cpu()
    if cpu.machine not in ("x86_64", "AMD64"):
        pytest.skip("AMX is x86-64 only")
    found = probe_amx()
    assert found.outcome != AMX_UNPROBED, found.detail  # gcc 11+ and clang 12+ know -mamx-tile
    advertised = {"amx_tile", "amx_int8"} <= set(cpu.flags)
    if not advertised:  # this AMD EPYC: the program's own CPUID check agrees with /proc/cpuinfo
        assert found.outcome == AMX_NOT_ADVERTISED, found
        assert probe_amx(mode="force") == type(found)(AMX_FAULTS, "the kernel refused the AMX tile state "
                                                      "(arch_prctl ARCH_REQ_XCOMP_PERM)")
        assert probe_amx(mode="force-noperm") == type(found)(AMX_FAULTS, "killed by SIGILL")
    else:  # an AMX machine: it runs, or it faults; either way the outcome is one of the two
        assert found.outcome in (AMX_RUNS, AMX_FAULTS, AMX_NOT_ADVERTISED), found
        if found.outcome == AMX_RUNS:
            assert "every result right" in found.detail
    results = {r.extension: r for r in probe_extensions(cpu)}
    assert ("amx" in results) == advertised
    if advertised:
        assert results["amx"].usable == (found.outcome == AMX_RUNS)


@pytest.mark.fast
def test_try_native_needs_the_smoke_test():
    proc = subprocess.run([sys.executable, "-m", "bench.install", "--try-native", "--no-smoke"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and "cannot skip it" in proc.stderr.strip().splitlines()[-1]


@pytest.mark.fast
def test_compiled_features_parse_llama_system_info():
    info = "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | AVX512 = 1 | AMX_INT8 = 0 | LLAMAFILE = 1 | REPACK = 1 |"
    assert compiled_features(info) == ["SSE3", "SSSE3", "AVX", "AVX2", "AVX512", "LLAMAFILE", "REPACK"]


@pytest.mark.fast
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


@pytest.mark.fast
def test_install_record_goes_stale_when_the_libraries_change(tmp_path):
    lb.write_json(lb.record_path(str(tmp_path)), {"build": {"name": "native"}, "lib_hashes": {"x.so": "abc"}})
    record = lb.read_record(str(tmp_path))
    assert record is not None and record["stale"] is True
    assert lb.read_record(str(tmp_path / "none")) is None


@pytest.mark.model
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


@pytest.mark.model
def test_the_llama_cpp_source_is_fetched_with_its_pinned_hash_and_checked_on_every_use(tmp_path, monkeypatch):
    """pip downloads the sdist with --require-hashes (here from a local folder standing in for PyPI);
    a cached copy that changed is refused before anything builds it, and so is a download whose bytes
    are not the pinned ones."""
    version = lb.pinned_version()
    real = lb.cache_root() / "native" / "sdist" / f"llama_cpp_python-{version}.tar.gz"
    if not real.exists():
        pytest.skip("the llama-cpp-python source is not in the suite's cache (set up with python -m bench.install)")
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    import shutil

    shutil.copy(real, mirror / real.name)
    # pip prepares an sdist's metadata even to download it: its build backend must be on the mirror too
    backend = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "-d", str(mirror),
                              "--only-binary=:all:", "scikit-build-core[pyproject]>=0.9.2"],
                             capture_output=True, text=True, timeout=300)
    if backend.returncode != 0:
        pytest.skip(f"scikit-build-core could not be fetched from PyPI: {backend.stderr.strip()[-200:]}")
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(mirror))
    got = lb.sdist(version)
    assert got.is_relative_to(tmp_path / "cache") and lb.sha256_file(got) == lb.SDIST_SHA256[version]
    with got.open("ab") as fh:  # the cached copy changes: refused, never built
        fh.write(b"\0")
    with pytest.raises(RuntimeError, match=f"is pinned to {lb.SDIST_SHA256[version]}: not building it"):
        lb.sdist(version)
    got.unlink()
    with (mirror / real.name).open("ab") as fh:  # the index serves other bytes: pip refuses them
        fh.write(b"\0")
    with pytest.raises(RuntimeError, match="cannot download .* source from PyPI: .*sha256") as err:
        lb.sdist(version)
    assert "\n" not in str(err.value) and not got.exists()
    with pytest.raises(RuntimeError, match="no sha256 is pinned"):
        lb.sdist("0.0.1")
