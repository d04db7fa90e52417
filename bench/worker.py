"""The benchmark child process: one cell, measured in isolation.

Run as ``python -m bench.worker SPEC.json RESULT.json``. It loads the backend, runs the warm-up
and counted repetitions, and writes raw timelines and memory figures to RESULT.json (atomically).
Progress goes to stdout as ``@@progress DONE TOTAL`` lines. A Python-level failure is written as
a result with a reason; a crash or kill leaves no result file and the parent classifies it.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

PROGRESS_PREFIX = "@@progress"


def _watch_parent(parent_pid: int) -> None:
    """Exit if the parent dies, so an orphaned worker never keeps running."""
    while True:
        time.sleep(0.5)
        if os.getppid() != parent_pid:
            os._exit(3)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def _progress(done: int, total: int) -> None:
    print(f"{PROGRESS_PREFIX} {done} {total}", flush=True)


def run(spec: dict[str, Any]) -> dict[str, Any]:
    from dataclasses import asdict

    from bench.backends import load_backend_class
    from bench.backends.base import LoadSettings
    from bench.trackers import MemoryTracker, Stopwatch, VramTracker

    settings = LoadSettings(**spec["settings"])
    total = spec["warmup"] + spec["repetitions"]
    result: dict[str, Any] = {"status": "ok", "reason": None}
    vram = VramTracker() if settings.device == "cuda" else None
    with MemoryTracker() as mem:
        if vram:
            vram.__enter__()
        try:
            backend = load_backend_class(spec["backend"])()
            with Stopwatch() as load:
                backend.load(Path(spec["model_path"]), settings)
            result["load_time_s"] = load.seconds
            prompt = backend.prompt(spec["prompt_tokens"])
            traces = []
            _progress(0, total)
            for i in range(total):
                traces.append(asdict(backend.generate(prompt, spec["gen_tokens"], spec["stop_at_eos"])))
                _progress(i + 1, total)
            result["warmup_samples"] = traces[: spec["warmup"]]
            result["samples"] = traces[spec["warmup"]:]
            result["environment"] = backend.environment()
            backend.close()
        finally:
            if vram:
                vram.__exit__(None, None, None)
    result["memory"] = {**mem.report(), **(vram.report() if vram else {})}
    return result


def main(argv: list[str]) -> int:
    spec_path, out_path = Path(argv[0]), Path(argv[1])
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()
    spec = json.loads(spec_path.read_text())
    try:
        result = run(spec)
    except MemoryError as exc:
        _write_json(out_path, {"status": "oom", "reason": f"MemoryError: {exc}"})
        return 1
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc) else ""
        _write_json(out_path, {"status": "failed", "reason": f"{type(exc).__name__}: {reason}".rstrip(": "),
                               "traceback": traceback.format_exc()})
        return 1
    _write_json(out_path, result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
