"""What this CPU advertises, and what it can really execute.

A VM can advertise an instruction set (CPUID, ``/proc/cpuinfo``) that faults when used: an Intel
Xeon guest listing ``amx_tile amx_int8`` whose tile instructions die with SIGILL is one we met.
So each extension llama.cpp's CPU backend can use is *probed*: a tiny C program executes one
instruction of it in a child process, and a child killed by a signal means the extension is
unusable here, whatever the CPU says. Probes are compiled once per CPU and cached.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import signal
import subprocess
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.fileio import atomic_write_json

# Extension -> (the /proc/cpuinfo flags that advertise it, gcc target attribute, C body run by the probe).
# The bodies use volatile data so the compiler cannot fold the instruction away.
_PROBES: dict[str, tuple[tuple[str, ...], str, str]] = {
    "sse4_2": (("sse4_2",), "sse4.2", "return _mm_crc32_u32(0u, (unsigned)v) != 0 ? 0 : 1;"),
    "avx": (("avx",), "avx", "__m256 a = _mm256_set1_ps((float)v); a = _mm256_add_ps(a, a); "
                             "return (int)_mm256_cvtss_f32(a) == 2 * v ? 0 : 1;"),
    "avx2": (("avx2",), "avx2", "__m256i a = _mm256_set1_epi32(v); a = _mm256_add_epi32(a, a); "
                                "return _mm256_extract_epi32(a, 0) == 2 * v ? 0 : 1;"),
    "fma": (("fma",), "fma", "__m256 a = _mm256_set1_ps((float)v); a = _mm256_fmadd_ps(a, a, a); "
                             "return (int)_mm256_cvtss_f32(a) == v * v + v ? 0 : 1;"),
    "f16c": (("f16c",), "f16c", "__m128 a = _mm_set1_ps((float)v); __m128i h = _mm_cvtps_ph(a, 0); "
                                "return (int)_mm_cvtss_f32(_mm_cvtph_ps(h)) == v ? 0 : 1;"),
    "bmi2": (("bmi2",), "bmi2", "return (int)_pdep_u32((unsigned)v, 0xFFu) == v ? 0 : 1;"),
    "avx_vnni": (("avx_vnni",), "avxvnni",
                 "__m256i a = _mm256_set1_epi32(v); a = _mm256_dpbusd_avx_epi32(a, a, a); "
                 "return _mm256_extract_epi32(a, 0) != 0 ? 0 : 1;"),
    "avx512": (("avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw"),
               "avx512f,avx512cd,avx512vl,avx512dq,avx512bw",
               "__m512i a = _mm512_set1_epi32(v); a = _mm512_add_epi32(a, a); "
               "__m512i b = _mm512_set1_epi16((short)v); b = _mm512_adds_epi16(b, b); "
               "return _mm512_reduce_add_epi32(a) == 32 * v && _mm512_cmpeq_epi16_mask(b, b) ? 0 : 1;"),
    "avx512_vbmi": (("avx512vbmi",), "avx512f,avx512vbmi",
                    "__m512i a = _mm512_set1_epi8((char)v); a = _mm512_permutexvar_epi8(a, a); "
                    "return _mm512_reduce_add_epi32(a) != 12345 ? 0 : 1;"),
    "avx512_vnni": (("avx512_vnni",), "avx512f,avx512vnni",
                    "__m512i a = _mm512_set1_epi32(v); a = _mm512_dpbusd_epi32(a, a, a); "
                    "return _mm512_reduce_add_epi32(a) != 0 ? 0 : 1;"),
    "avx512_bf16": (("avx512_bf16",), "avx512f,avx512bf16",
                    "__m512 a = _mm512_set1_ps((float)v); __m256bh h = _mm512_cvtneps_pbh(a); "
                    "__m512 r = _mm512_dpbf16_ps(a, "
                    "(__m512bh)_mm512_inserti64x4(_mm512_castsi256_si512((__m256i)h), (__m256i)h, 1), "
                    "(__m512bh)_mm512_inserti64x4(_mm512_castsi256_si512((__m256i)h), (__m256i)h, 1)); "
                    "return _mm512_reduce_add_ps(r) != 0 ? 0 : 1;"),
    "avx512_fp16": (("avx512_fp16",), "avx512f,avx512fp16",
                    "__m512h a = _mm512_set1_ph((_Float16)v); a = _mm512_add_ph(a, a); "
                    "return (int)_mm512_reduce_add_ph(a) != 0 ? 0 : 1;"),
    "amx": (("amx_tile", "amx_int8"), "amx-tile,amx-int8", ""),  # its own program: AMX_PROGRAM below
    "amx_bf16": (("amx_bf16",), "amx-tile,amx-bf16", "return amx_probe(v, 1);"),
}

_AMX_HELPER = r"""
#include <sys/syscall.h>
#include <unistd.h>
#include <string.h>
typedef struct { unsigned char palette, start_row, reserved[14]; unsigned short colsb[16]; unsigned char rows[16]; }
    __attribute__((packed)) tilecfg;
__attribute__((target("amx-tile,amx-bf16"))) static int amx_probe(int v, int bf16) {
    /* Linux hands out the tile state only on request (ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA = 18). */
    if (syscall(SYS_arch_prctl, 0x1023, 18)) return 3;
    static tilecfg cfg; static signed char a[16 * 64], b[16 * 64]; static int c[16 * 16];
    memset(&cfg, 0, sizeof cfg); cfg.palette = 1;
    for (int i = 0; i < 3; i++) { cfg.rows[i] = 16; cfg.colsb[i] = 64; }
    for (int i = 0; i < 16 * 64; i++) { a[i] = (signed char)v; b[i] = 2; }
    _tile_loadconfig(&cfg); _tile_zero(0); _tile_loadd(1, a, 64); _tile_loadd(2, b, 64);
    _tile_dpbf16ps(0, 1, 2); _tile_stored(0, c, 64); _tile_release();
    return bf16 ? 0 : 4;
}
"""

# The AMX probe: a program of its own that does what llama.cpp's AMX kernels do
# (ggml/src/ggml-cpu/amx/amx.cpp and mmq.cpp of the vendored source): ask the kernel for the tile
# data state (arch_prctl ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA), load llama.cpp's own tile
# configuration (8 tiles in its 2-2-4 layout), then in several threads at once, with the tile
# state live across context switches (llama.cpp never releases it between calls), tile loads
# (tileloadd) and int8 dot products (tdpbssd) whose every result is checked, then tilerelease.
# It reads CPUID and XCR0 itself first, so it runs on any x86-64 CPU and says "not advertised"
# where AMX is absent or the OS has not enabled its state. Exit status: 0 runs; 10 not advertised;
# 3 the kernel refused the tile state; 4 a wrong result; 5 no thread; 2 bad arguments. A child
# killed by a signal faulted. Argument: check (default) | force (skip the CPUID check) |
# force-noperm (skip the CPUID check and the arch_prctl request; tests use it to fault on purpose).
AMX_PROGRAM = r"""
#include <immintrin.h>
#include <cpuid.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18
#define ITERATIONS 4000
#define MAX_THREADS 8

typedef struct { unsigned char palette, start_row, reserved[14]; unsigned short colsb[16]; unsigned char rows[16]; }
    __attribute__((packed, aligned(64))) tilecfg;

static int advertised(void) {
    unsigned a, b, c, d, lo, hi;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || !(d & (1u << 24)) || !(d & (1u << 25))) return 0;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27))) return 0;   /* AMX-TILE, AMX-INT8; OSXSAVE */
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (lo & (3u << 17)) == (3u << 17);  /* XCR0: the OS saves XTILECFG and XTILEDATA */
}

static void *work(void *arg) {
    long v = (long)arg;
    tilecfg cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;  /* llama.cpp's ggml_tile_config_init: B in TMM0-1, A in TMM2-3, C in TMM4-7 */
    for (int t = 0; t < 2; t++) { cfg.rows[t] = 8; cfg.colsb[t] = 64; }
    for (int t = 2; t < 4; t++) { cfg.rows[t] = 16; cfg.colsb[t] = 32; }
    for (int t = 4; t < 8; t++) { cfg.rows[t] = 16; cfg.colsb[t] = 64; }
    _Alignas(64) signed char a0[16 * 32], a1[16 * 32], b0[8 * 64], b1[8 * 64];
    _Alignas(64) int c[4][16 * 16];
    for (int i = 0; i < 16 * 32; i++) { a0[i] = (signed char)v; a1[i] = (signed char)-v; }
    for (int i = 0; i < 8 * 64; i++) { b0[i] = 2; b1[i] = 3; }
    const int want[4] = {64 * (int)v, -64 * (int)v, 96 * (int)v, -96 * (int)v};  /* 32 products per element */
    _tile_loadconfig(&cfg);
    for (int it = 0; it < ITERATIONS; it++) {
        _tile_zero(4); _tile_zero(5); _tile_zero(6); _tile_zero(7);
        _tile_loadd(0, b0, 64); _tile_loadd(1, b1, 64); _tile_loadd(2, a0, 32); _tile_loadd(3, a1, 32);
        _tile_dpbssd(4, 2, 0); _tile_dpbssd(5, 3, 0); _tile_dpbssd(6, 2, 1); _tile_dpbssd(7, 3, 1);
        _tile_stored(4, c[0], 64); _tile_stored(5, c[1], 64); _tile_stored(6, c[2], 64); _tile_stored(7, c[3], 64);
        for (int k = 0; k < 4; k++)
            for (int i = 0; i < 16 * 16; i++)
                if (c[k][i] != want[k]) return (void *)4L;
        if (it % 256 == 0) sched_yield();   /* be switched out while the tile state is live */
        if (it % 1024 == 0) usleep(200);
    }
    _tile_release();
    return (void *)0L;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "check";
    if (strcmp(mode, "check") && strcmp(mode, "force") && strcmp(mode, "force-noperm")) return 2;
    if (!strcmp(mode, "check") && !advertised()) { puts("not advertised"); return 10; }
    if (strcmp(mode, "force-noperm") && syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)) {
        puts("arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) refused"); return 3;
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    n = n < 2 ? 2 : n > MAX_THREADS ? MAX_THREADS : n;
    pthread_t th[MAX_THREADS];
    for (long i = 0; i < n; i++)
        if (pthread_create(&th[i], NULL, work, (void *)(i + 1))) return 5;
    long bad = 0;
    for (long i = 0; i < n; i++) { void *r; pthread_join(th[i], &r); if (r) bad = (long)r; }
    if (bad) { puts("wrong result"); return (int)bad; }
    printf("ran: %ld threads x %d iterations of tileloadd + tdpbssd, every result right\n", n, ITERATIONS);
    return 0;
}
"""


@dataclass(frozen=True)
class CpuInfo:
    """The CPU as the kernel describes it. ``key`` names this kind of CPU (model and every flag):
    a build is only ever reused on a CPU with the same key."""

    machine: str
    vendor: str
    model_name: str
    flags: tuple[str, ...] = field(default_factory=tuple)
    logical_cpus: int = 1

    @property
    def key(self) -> str:
        text = "|".join([self.machine, self.vendor, self.model_name, *sorted(self.flags)])
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def advertised(self) -> list[str]:
        """The probed extensions whose every flag the CPU advertises."""
        return [name for name, (flags, _, _) in _PROBES.items() if all(f in self.flags for f in flags)]

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "flags": list(self.flags), "key": self.key}


def read_cpu(cpuinfo: Path = Path("/proc/cpuinfo")) -> CpuInfo:
    """This machine's CPU from ``/proc/cpuinfo`` (Linux), else what ``platform`` knows."""
    fields: dict[str, str] = {}
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, sep, value = line.partition(":")
            key = key.strip()
            if sep and key not in fields:
                fields[key] = value.strip()
            if not line.strip() and fields:
                break  # the first processor's block describes them all
    except OSError:
        pass
    flags = tuple(sorted(set((fields.get("flags") or fields.get("Features") or "").split())))
    return CpuInfo(machine=platform.machine(), vendor=fields.get("vendor_id") or fields.get("CPU implementer") or "",
                   model_name=fields.get("model name") or platform.processor() or "", flags=flags,
                   logical_cpus=os.cpu_count() or 1)


@dataclass
class ProbeResult:
    extension: str
    usable: bool
    detail: str  # "ok", "killed by SIGILL", "exit 3: ...", "not compiled: ..."


def _probe_source(names: list[str]) -> str:
    parts = ["#include <immintrin.h>", "#include <stdio.h>", "#include <stdlib.h>", "#include <string.h>",
             _AMX_HELPER if "amx_bf16" in names else ""]
    for name in names:
        _, target, body = _PROBES[name]
        parts.append(f'__attribute__((target("{target}"))) static int probe_{name}(volatile int v) {{ {body} }}')
    cases = "\n".join(f'    if (!strcmp(argv[1], "{n}")) return probe_{n}(atoi("1"));' for n in names)
    parts.append(f"int main(int argc, char **argv) {{\n    if (argc < 2) return 2;\n{cases}\n    return 2;\n}}")
    return "\n".join(parts)


def _probes_version() -> str:
    """Names the probe programs: a cache written by other probes is not reused."""
    return hashlib.sha256((repr(_PROBES) + _AMX_HELPER + AMX_PROGRAM).encode()).hexdigest()[:12]


def _cached_probes(cache: Path | None, cpu: CpuInfo, names: list[str]) -> list[ProbeResult] | None:
    if cache is None or not cache.exists():
        return None
    try:
        data = json.loads(cache.read_text())
        if (data.get("cpu_key") == cpu.key and data.get("probes") == _probes_version()
                and sorted(data["results"]) == sorted(names)):
            return [ProbeResult(n, **data["results"][n]) for n in names]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def _probe_one(cc: str, folder: Path, name: str) -> ProbeResult:
    """Compile and run one extension's probe; a child killed by a signal means it faults here."""
    if name == "amx":
        amx = probe_amx(cc, folder=folder)
        return ProbeResult(name, amx.outcome == AMX_RUNS or amx.outcome == AMX_UNPROBED, amx.detail)
    src, exe = folder / f"{name}.c", folder / name
    src.write_text(_probe_source([name]))
    comp = subprocess.run([cc, "-O1", "-o", str(exe), str(src)], capture_output=True, text=True)
    if comp.returncode != 0:
        return ProbeResult(name, True, f"unprobed: the compiler rejected the probe ({_first_error(comp.stderr)})")
    try:
        rc = subprocess.run([str(exe), name], capture_output=True, text=True, timeout=30).returncode
    except subprocess.TimeoutExpired:
        return ProbeResult(name, False, "probe hung for 30 s")
    if rc < 0:
        return ProbeResult(name, False, f"killed by {signal.Signals(-rc).name}")
    if rc == 0:
        return ProbeResult(name, True, "ok")
    if name.startswith("amx") and rc == 3:
        return ProbeResult(name, False, "the kernel refused the AMX tile state (arch_prctl)")
    return ProbeResult(name, False, f"probe computed a wrong result (exit {rc})")


def _first_error(stderr: str) -> str:
    return next((ln for ln in stderr.splitlines() if "error" in ln), stderr.strip()[:200]).strip()


# What the AMX probe found: the outcomes of ``probe_amx``.
AMX_NOT_ADVERTISED, AMX_FAULTS, AMX_RUNS, AMX_UNPROBED = "not advertised", "faults", "runs", "unprobed"


@dataclass(frozen=True)
class AmxProbe:
    outcome: str  # one of AMX_NOT_ADVERTISED, AMX_FAULTS, AMX_RUNS, AMX_UNPROBED
    detail: str  # one line: what the program printed, the signal that killed it, or why it did not run


def probe_amx(compiler: str | None = None, mode: str = "check", folder: Path | None = None,
              timeout_s: float = 60) -> AmxProbe:
    """Compile ``AMX_PROGRAM`` (gcc/clang ``-mamx-tile -mamx-int8``) and run it in a child.

    ``mode`` is the program's argument: ``check`` (what setup runs), or ``force`` /
    ``force-noperm``, which skip its own CPUID check (and the kernel request) so that a CPU
    without AMX faults on purpose: the tests' way to see the fault path run for real."""
    cc = compiler or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        return AmxProbe(AMX_UNPROBED, "unprobed: no C compiler")
    with tempfile.TemporaryDirectory(prefix="bench-amx-", dir=folder) as tmp:
        src, exe = Path(tmp) / "amx.c", Path(tmp) / "amx"
        src.write_text(AMX_PROGRAM)
        comp = subprocess.run([cc, "-O1", "-pthread", "-mamx-tile", "-mamx-int8", "-o", str(exe), str(src)],
                              capture_output=True, text=True)
        if comp.returncode != 0:
            why = _first_error(comp.stderr)
            return AmxProbe(AMX_UNPROBED, f"unprobed: the compiler rejected the AMX probe ({why})")
        try:
            proc = subprocess.run([str(exe), mode], capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return AmxProbe(AMX_FAULTS, f"the AMX probe hung for {timeout_s:g} s")
    said = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    if proc.returncode < 0:
        return AmxProbe(AMX_FAULTS, f"killed by {signal.Signals(-proc.returncode).name}")
    if proc.returncode == 0:
        return AmxProbe(AMX_RUNS, f"ok ({said})")
    if proc.returncode == 10:
        return AmxProbe(AMX_NOT_ADVERTISED, "CPUID does not advertise AMX-TILE and AMX-INT8, or the OS has not "
                        "enabled their state (XCR0)")
    if proc.returncode == 3:
        return AmxProbe(AMX_FAULTS, "the kernel refused the AMX tile state (arch_prctl ARCH_REQ_XCOMP_PERM)")
    return AmxProbe(AMX_FAULTS, f"exit {proc.returncode}: {said or 'no output'}")


def probe_extensions(cpu: CpuInfo, cache: Path | None = None, compiler: str | None = None) -> list[ProbeResult]:
    """Execute one instruction of each advertised extension in a child process of its own.

    A probe that runs is not proof: llama.cpp's kernels can still fault where a probe did not (its
    AMX kernels on a Xeon VM whose AMX probe passes), which is why setup also smoke-tests the build.
    Results are cached in ``cache`` (a JSON file) per CPU key. Without a C compiler nothing can be
    probed, and every advertised extension is reported as unprobed (treated as usable)."""
    names = cpu.advertised()
    cached = _cached_probes(cache, cpu, names)
    if cached is not None:
        return cached
    if cpu.machine not in ("x86_64", "AMD64", "i686") or not names:
        return []
    cc = compiler or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        return [ProbeResult(n, True, "unprobed: no C compiler") for n in names]
    with tempfile.TemporaryDirectory(prefix="bench-isa-") as tmp:
        # One program per extension, so an old compiler that lacks one intrinsic costs only that probe.
        results = [_probe_one(cc, Path(tmp), name) for name in names]
    if cache is not None:
        atomic_write_json(cache, {"cpu_key": cpu.key, "probes": _probes_version(), "results": {
            r.extension: {"usable": r.usable, "detail": r.detail} for r in results}}, indent=1)
    return results
