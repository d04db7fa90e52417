"""The smoke test: can the installed llama.cpp load a model and generate on this machine?

The test itself runs in a child (``python -m bench.native.smoke [MODEL.gguf]``): it loads the
model (the catalog's embedded default unless a file is given), prefills a short prompt and
decodes a few tokens, and prints one JSON line. A build that uses an instruction the machine
cannot execute kills that child with a signal (SIGILL, SIGSEGV...), which the parent reads from
its exit status; nothing of llama.cpp is ever loaded into the parent.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

CRASH_SIGNALS = ("SIGILL", "SIGSEGV", "SIGBUS", "SIGFPE", "SIGABRT")
PREFIX = "@@smoke "


@dataclass
class SmokeResult:
    ok: bool
    signal: str | None  # the signal that killed the child, if one did
    detail: str  # one line: what happened
    seconds: float
    model: str | None = None
    prefill_tps: float | None = None
    decode_tps: float | None = None
    system_info: str | None = None

    @property
    def crashed(self) -> bool:
        return self.signal in CRASH_SIGNALS

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def run_smoke(python: str = sys.executable, model: Path | None = None, threads: int | None = None,
              timeout_s: float = 600) -> SmokeResult:
    """Run the smoke test in a child of ``python`` and report what happened to it."""
    cmd = [python, "-X", "faulthandler", "-m", "bench.native.smoke"]
    if model is not None:
        cmd.append(str(model))
    if threads:
        cmd += ["--threads", str(threads)]
    started = time.monotonic()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return SmokeResult(False, None, f"no answer within {timeout_s:g} s", time.monotonic() - started)
    seconds = time.monotonic() - started
    if proc.returncode < 0:
        sig = signal.Signals(-proc.returncode).name
        where = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip().startswith("File ")]
        at = f" at {where[0]}" if where else ""
        return SmokeResult(False, sig, f"the child was killed by {sig}{at}", seconds)
    lines = [ln[len(PREFIX):] for ln in proc.stdout.splitlines() if ln.startswith(PREFIX)]
    if proc.returncode != 0 or not lines:
        tail = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        return SmokeResult(False, None, f"exit {proc.returncode}: {tail[-1] if tail else 'no output'}", seconds)
    data = json.loads(lines[-1])
    return SmokeResult(True, None, "loaded the model, prefilled and decoded", seconds, **data)


def _embedded_model() -> Path:
    from bench.datafiles import find_data_path
    from bench.models.catalog import load_catalog
    from bench.models.store import ModelStore

    catalog_path = find_data_path("models.yaml", None, "BENCH_CATALOG")
    catalog = load_catalog(catalog_path)
    model = catalog.model(catalog.default_model)
    store = ModelStore()
    store.base_dir = catalog_path.parent.resolve()
    return store.resolve(model, model.variant(None)).path


def _child(argv: list[str]) -> int:
    import os

    threads = int(argv[argv.index("--threads") + 1]) if "--threads" in argv else min(2, os.cpu_count() or 1)
    paths = [a for a in argv if not a.startswith("--") and not a.isdigit()]
    model = Path(paths[0]) if paths else _embedded_model()

    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(model), n_ctx=256, n_batch=256, n_threads=threads,
                          n_threads_batch=threads, seed=0, verbose=False)
    prompt = llm.tokenize(b"The quick brown fox jumps over the lazy dog. " * 8)
    t0 = time.perf_counter()
    llm.eval(prompt)
    t1 = time.perf_counter()
    n = 16
    for _ in range(n):
        token = llm.sample(temp=0.0)
        llm.eval([token])
    t2 = time.perf_counter()
    info = llama_cpp.llama_print_system_info().decode(errors="replace").strip()
    llm.close()
    print(PREFIX + json.dumps({"model": str(model), "prefill_tps": len(prompt) / (t1 - t0),
                               "decode_tps": n / (t2 - t1), "system_info": info}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
