"""The benchmark child process: one cell, measured in isolation.

Run as ``python -m bench.measuring.worker SPEC.json RESULT.json``. It loads the backend, runs the warm-up
and counted repetitions, and writes raw timelines and memory figures to RESULT.json (atomically).
Progress goes to stdout as ``@@progress DONE TOTAL`` lines. A Python-level failure is written as
a result with a reason; a crash or kill leaves no result file and the parent classifies it.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

PROGRESS_PREFIX = "@@progress"
PHASE_PREFIX = "@@phase"


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


def _phase(name: str) -> None:
    """Tell the parent what the child is doing, so a crash can be placed (loading, first tokens...)."""
    print(f"{PHASE_PREFIX} {name}", flush=True)


def apply_caps(caps: dict[str, Any]) -> dict[str, Any]:
    """Pin this process to the tier's CPUs; report the affinity the child really has."""
    seen: dict[str, Any] = {}
    if caps.get("cpus") and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, caps["cpus"])
    if hasattr(os, "sched_getaffinity"):
        seen["affinity_in_child"] = sorted(os.sched_getaffinity(0))
    return seen


def _on_ram_exceeded(out_path: Path, limit: int, rss: int) -> None:
    """The RSS watchdog's verdict: record ``oom`` and stop at once, as the kernel's killer would."""
    _write_json(out_path, {"status": "oom", "reason": (
        f"resident memory {rss / 2**20:.0f} MiB exceeded the tier's RAM cap {limit / 2**20:.0f} MiB "
        "(rss-watchdog)"), "memory": {"peak_rss_bytes": rss, "ram_limit_bytes": limit}})
    os._exit(137)


def run(spec: dict[str, Any], out_path: Path) -> dict[str, Any]:
    from dataclasses import asdict

    from bench.backends import load_backend_class
    from bench.backends.base import LoadSettings
    from bench.measuring.energy import open_meter
    from bench.measuring.trackers import MemoryTracker, Stopwatch, VramTracker

    caps = spec.get("caps", {})
    seen = apply_caps(caps)
    settings = LoadSettings(**spec["settings"])
    total = spec["warmup"] + spec["repetitions"]
    result: dict[str, Any] = {"status": "ok", "reason": None, "caps_seen": seen}
    meter, energy_source = open_meter(settings.device)
    result["energy_source"] = energy_source
    limit = caps.get("ram_limit_bytes")
    on_exceed = (lambda rss: _on_ram_exceeded(out_path, limit, rss)) if limit else None
    vram = VramTracker() if settings.device == "cuda" else None
    with MemoryTracker(limit_bytes=limit, on_exceed=on_exceed) as mem, contextlib.ExitStack() as stack:
        if vram:
            stack.enter_context(vram)
        _phase("loading")
        backend = load_backend_class(spec["backend"])()
        backend.prepare(Path(spec["model_path"]), settings)  # cached by the prepare pass: not load time
        with Stopwatch() as load:
            backend.load(Path(spec["model_path"]), settings)
        result["load_time_s"] = load.seconds
        prompt = backend.prompt(spec["prompt_tokens"])
        traces = []
        _progress(0, total)
        for i in range(total):
            before = meter.read_joules() if meter else None
            trace = asdict(backend.generate(prompt, spec["gen_tokens"], spec["stop_at_eos"]))
            if meter and before is not None:
                trace["energy_j"] = meter.read_joules() - before
            traces.append(trace)
            _progress(i + 1, total)
        result["warmup_samples"] = traces[: spec["warmup"]]
        result["samples"] = traces[spec["warmup"]:]
        result["environment"] = backend.environment()
        backend.close()
    result["memory"] = {**mem.report(), **(vram.report() if vram else {})}
    return result


def run_score(spec: dict[str, Any]) -> dict[str, Any]:
    """Quality pass: log-probabilities over a corpus, in a context of its own (never timed)."""
    from bench.backends import load_backend_class
    from bench.backends.base import LoadSettings
    from bench.measuring.trackers import MemoryTracker
    from bench.quality.scoring import ReferenceCache, run_scoring

    apply_caps(spec.get("caps", {}))
    with MemoryTracker() as mem:
        _phase("loading")
        backend = load_backend_class(spec["backend"])()
        backend.load(Path(spec["model_path"]), LoadSettings(threads=spec["threads"], device=spec["device"],
                                                            n_ctx=spec["n_ctx"], seed=0,
                                                            n_gpu_layers=spec.get("n_gpu_layers", 0),
                                                            options={"scoring": True}))
        reference = ReferenceCache(Path(spec["reference"])) if spec.get("reference") else None
        if reference is not None:
            tokens = reference.meta()["tokens"]  # the reference's tokenization, for both sides
        else:
            tokens = backend.tokenize(Path(spec["corpus_path"]).read_text(encoding="utf-8").replace("\r\n", "\n"))
        write = ReferenceCache(Path(spec["write_reference"])) if spec.get("write_reference") else None
        _phase("first tokens")
        result = run_scoring(backend, tokens, spec["n_ctx"], spec["chunks"], reference, write)
        backend.close()
    result["memory"] = mem.report()
    result["status"] = "ok"
    return result


def run_task(spec: dict[str, Any]) -> dict[str, Any]:
    """Task accuracy: greedy answers to each item, scored by exact match, timed per item."""
    import time

    from bench.backends import load_backend_class
    from bench.backends.base import LoadSettings
    from bench.errors import BenchError
    from bench.measuring.energy import open_meter
    from bench.quality.tasks import STOP, extract_answer, few_shot_prompt, is_correct, load_items

    apply_caps(spec.get("caps", {}))
    _phase("loading")
    backend = load_backend_class(spec["backend"])()
    backend.load(Path(spec["model_path"]), LoadSettings(threads=spec["threads"], device=spec["device"],
                                                        n_ctx=spec["n_ctx"], seed=0,
                                                        n_gpu_layers=spec.get("n_gpu_layers", 0)))
    items = load_items(Path(spec["task_file"]))
    shots, pool = items[: spec["shots"]], items[spec["shots"]:][: spec["limit"]]
    if not pool:
        raise BenchError(f"no task items left after {spec['shots']} few-shot examples")
    meter, energy_source = open_meter(spec["device"])
    records = []
    _progress(0, len(pool))
    for i, item in enumerate(pool):
        prompt = backend.tokenize(few_shot_prompt(shots, item))
        if len(prompt) + spec["max_new_tokens"] > spec["n_ctx"]:
            raise BenchError(f"item {i}: prompt of {len(prompt)} tokens + {spec['max_new_tokens']} new tokens "
                             f"exceed the task context {spec['n_ctx']}")
        before = meter.read_joules() if meter else None
        t0 = time.perf_counter()
        trace = backend.generate(prompt, spec["max_new_tokens"], stop_at_eos=True, stop=STOP)
        seconds = time.perf_counter() - t0
        predicted = extract_answer(trace.text)
        records.append({"index": spec["shots"] + i, "predicted": predicted, "gold": item.gold,
                        "correct": is_correct(predicted, item.gold), "prompt_tokens": len(prompt),
                        "generated_tokens": len(trace.token_ids), "seconds": seconds, "text": trace.text,
                        "energy_j": meter.read_joules() - before if meter and before is not None else None})
        _progress(i + 1, len(pool))
    backend.close()
    return {"status": "ok", "records": records, "energy_source": energy_source}


def run_prepare(spec: dict[str, Any]) -> dict[str, Any]:
    """One-time conversions (an ONNX export, say) in a process of their own, so that neither their
    time nor their memory is counted as the benchmark's."""
    from bench.backends import load_backend_class
    from bench.backends.base import LoadSettings

    _phase("loading")
    backend = load_backend_class(spec["backend"])()
    backend.prepare(Path(spec["model_path"]), LoadSettings(**spec["settings"]))
    return {"status": "ok"}


def main(argv: list[str]) -> int:
    spec_path, out_path = Path(argv[0]), Path(argv[1])
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()
    spec = json.loads(spec_path.read_text())
    try:
        modes = {"score": run_score, "task": run_task, "prepare": run_prepare}
        result = modes[spec["mode"]](spec) if spec.get("mode") in modes else run(spec, out_path)
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
