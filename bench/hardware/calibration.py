"""Host calibration: memory bandwidth and matmul throughput, measured in a few seconds and cached
per host per day. Stored in every row's environment so runs on different machines can be
normalized, and used for the roofline share.

bandwidth: T threads each copy their own 256 MiB array (numpy releases the GIL during a copy);
           bytes moved = 2 x size per copy (read + write); best of 5 rounds.
matmul:    float32 n x n matmul, 2 n^3 FLOP, best of 5, with the BLAS numpy ships, its thread pool
           sized to T (measured in a child process whose OMP/OpenBLAS/MKL thread variables are T,
           since a BLAS reads them once at load), so prefill normalization matches the cell's caps.
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


def calibrate(threads: int | None = None, *, force: bool = False) -> dict[str, Any]:
    """The host's figures, from today's cache file if there is one."""
    threads = threads or len(os.sched_getaffinity(0))
    today = dt.date.today().isoformat()
    path = cache_dir() / "calibration" / f"{platform.node() or 'host'}-{today}-t{threads}-v2.json"
    if path.exists() and not force:
        try:
            return json.loads(path.read_text())
        except ValueError:
            pass
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


if __name__ == "__main__":  # the measuring child: python -m bench.hardware.calibration THREADS
    n_threads = int(sys.argv[1])
    print(json.dumps({"memory_bandwidth_bytes_per_s": measure_bandwidth(n_threads),
                      "matmul_flop_per_s": measure_matmul()}))
