"""Host calibration: memory bandwidth and matmul throughput, measured in a few seconds and cached
per host per day. Stored in every row's environment so runs on different machines can be
normalized, and used for the roofline share.

bandwidth: T threads each copy their own 256 MiB array (numpy releases the GIL during a copy);
           bytes moved = 2 x size per copy (read + write); best of 5 rounds.
matmul:    float32 n x n matmul, 2 n^3 FLOP, best of 5, with the BLAS numpy ships, its thread pool
           sized to T (measured in a child process whose OMP/OpenBLAS/MKL thread variables are T,
           since a BLAS reads them once at load), so prefill normalization matches the cell's caps.

A CUDA GPU (``calibrate_gpu``, for cells on cuda tiers; torch with CUDA, in a child process):
gpu bandwidth: a device-to-device copy of a 1 GiB tensor of random values, bytes moved = 2 x size
           (read + write); the median of 10 timed copies (CUDA events) after 3 warm-ups.
gpu matmul: 8192 x 8192 x 8192 products of random fp16, bf16 and fp32 (TF32 off) matrices, 2 n^3
           FLOP each; the median of 10 after 3 warm-ups. ``gpu_matmul_flop_per_s`` is fp16's: the
           type llama.cpp and the fp16 backends compute in (prefill is compute-bound).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bench.datafiles import cache_dir
from bench.fileio import atomic_write_json

COPY_BYTES = 256 * 2**20
MATMUL_N = 1024


def measure_bandwidth(threads: int, nbytes: int = COPY_BYTES, rounds: int = 5) -> float:
    """Bytes per second of parallel array copies."""
    import numpy as np

    per = max(1, nbytes // threads // 8)
    src = [np.ones(per, dtype=np.float64) for _ in range(threads)]
    dst = [np.empty_like(a) for a in src]
    best = 0.0
    for _ in range(rounds):
        barrier = threading.Barrier(threads + 1)

        def copy(i: int, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            np.copyto(dst[i], src[i])
            barrier.wait()

        workers = [threading.Thread(target=copy, args=(i,)) for i in range(threads)]
        for w in workers:
            w.start()
        barrier.wait()
        t0 = time.perf_counter()
        barrier.wait()
        elapsed = time.perf_counter() - t0
        for w in workers:
            w.join()
        best = max(best, 2 * per * 8 * threads / elapsed)
    return best


def measure_matmul(n: int = MATMUL_N, rounds: int = 5) -> float:
    """FLOP per second of a float32 matmul."""
    import numpy as np

    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
    a @ b  # warm-up
    best = 0.0
    for _ in range(rounds):
        t0 = time.perf_counter()
        a @ b
        best = max(best, 2 * n**3 / (time.perf_counter() - t0))
    return best


def _cached(path: Path) -> dict[str, Any] | None:
    """Today's figures from the cache file, or None (none yet, or unreadable: measure again)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def calibrate(threads: int | None = None, *, force: bool = False) -> dict[str, Any]:
    """The host's figures, from today's cache file if there is one."""
    threads = threads or len(os.sched_getaffinity(0))
    today = dt.date.today().isoformat()
    path = cache_dir() / "calibration" / f"{platform.node() or 'host'}-{today}-t{threads}-v2.json"
    cached = None if force else _cached(path)
    if cached is not None:
        return cached
    t0 = time.perf_counter()
    env = {**os.environ, **{v: str(threads) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}}
    proc = subprocess.run([sys.executable, "-m", "bench.hardware.calibration", str(threads)], env=env,
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"calibration child failed: {proc.stderr.strip()[-300:]}")
    result = {
        **json.loads(proc.stdout.strip().splitlines()[-1]),
        "threads": threads,
        "date": today,
        "method": "numpy: parallel 256 MiB copies (2 bytes moved per byte), float32 1024^3 matmul with the BLAS "
                  "limited to the thread count; best of 5",
    }
    result["seconds"] = time.perf_counter() - t0
    atomic_write_json(path, result)
    return result


GPU_COPY_BYTES = 2**30
GPU_MATMUL_N = 8192
GPU_METHOD = ("torch: device-to-device copy of a 1 GiB tensor of random values (2 bytes moved per byte), "
              "8192^3 products of random fp16/bf16/fp32 (TF32 off) matrices; CUDA events, median of 10 after 3 "
              "warm-ups")


def _median_cuda_ms(torch: Any, fn: Any, reps: int = 10, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def measure_gpu(index: int = 0, copy_bytes: int = GPU_COPY_BYTES, n: int = GPU_MATMUL_N) -> dict[str, Any]:
    """The GPU's copy bandwidth (bytes/s) and matmul rates (FLOP/s) through torch (see the module's
    docstring); random inputs, never zeros (zeros run faster than real data on some GPUs)."""
    import torch

    dev = torch.device("cuda", index)
    gen = torch.Generator(device=dev).manual_seed(0)
    src = torch.rand(copy_bytes // 4, device=dev, generator=gen)
    dst = torch.empty_like(src)
    copy_ms = _median_cuda_ms(torch, lambda src=src, dst=dst: dst.copy_(src))
    del src, dst  # free the 2 GiB before the matrices
    out: dict[str, Any] = {"gpu_name": torch.cuda.get_device_name(dev),
                           "gpu_memory_bandwidth_bytes_per_s": 2 * copy_bytes / (copy_ms / 1e3)}
    torch.backends.cuda.matmul.allow_tf32 = False
    for dtype, key in ((torch.float16, "gpu_matmul_flop_per_s"), (torch.bfloat16, "gpu_matmul_bf16_flop_per_s"),
                       (torch.float32, "gpu_matmul_fp32_flop_per_s")):
        a = torch.randn(n, n, device=dev, dtype=dtype, generator=gen)
        b = torch.randn(n, n, device=dev, dtype=dtype, generator=gen)
        ms = _median_cuda_ms(torch, lambda a=a, b=b: torch.mm(a, b))
        out[key] = 2 * n**3 / (ms / 1e3)
        del a, b
    return out


def calibrate_gpu(index: int = 0, *, force: bool = False, timeout_s: float = 300) -> dict[str, Any]:
    """The GPU's figures (cached per host, day and GPU index), measured in a child process so that
    the CUDA context and its memory never stay in the caller."""
    today = dt.date.today().isoformat()
    path = cache_dir() / "calibration" / f"{platform.node() or 'host'}-{today}-gpu{index}-v1.json"
    cached = None if force else _cached(path)
    if cached is not None:
        return cached
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "bench.hardware.calibration", "gpu", str(index)],
                          capture_output=True, text=True, timeout=timeout_s)
    if proc.returncode != 0:
        tail = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        raise RuntimeError(f"GPU calibration child failed: {tail[-1] if tail else f'exit {proc.returncode}'}")
    result = {**json.loads(proc.stdout.strip().splitlines()[-1]), "gpu_index": index, "gpu_date": today,
              "gpu_method": GPU_METHOD, "gpu_seconds": time.perf_counter() - t0}
    atomic_write_json(path, result)
    return result


if __name__ == "__main__":  # the measuring child: python -m bench.hardware.calibration THREADS | gpu INDEX
    if sys.argv[1] == "gpu":
        print(json.dumps(measure_gpu(int(sys.argv[2]))))
    else:
        n_threads = int(sys.argv[1])
        print(json.dumps({"memory_bandwidth_bytes_per_s": measure_bandwidth(n_threads),
                          "matmul_flop_per_s": measure_matmul()}))
