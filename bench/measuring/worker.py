"""The benchmark child process: one cell, measured in isolation.

Run as ``python -m bench.measuring.worker JOB.json RESULT.json`` (a ``bench.measuring.job.Job``). It
loads the backend the one way the job's load configuration says, runs the pass (the timed run,
a quality or task pass, or a one-time preparation) and writes raw timelines, memory figures and
results to RESULT.json (atomically).
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
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, NoReturn

from bench.fileio import atomic_write_json
from bench.measuring.job import Job, ScorePass, SpeedPass, TaskPass

PROGRESS_PREFIX = "@@progress"
PHASE_PREFIX = "@@phase"
SCRATCH_PREFIX = "bench-cell-"  # the launcher's folder for one pass: job, result, stderr, partial items


_scratch: Path | None = None  # the pass's scratch folder (main sets it), for _orphaned to remove


def _watch_parent(parent_pid: int) -> None:
    """Exit if the parent dies, so an orphaned worker never keeps running."""
    while True:
        time.sleep(0.5)
        if os.getppid() != parent_pid:
            _orphaned()


def _orphaned() -> NoReturn:
    """The parent is gone, killed outright (SIGKILL): nobody will read a result, and the parent
    cannot remove the pass's scratch folder, so the worker removes it and exits."""
    import shutil

    if _scratch is not None and _scratch.name.startswith(SCRATCH_PREFIX):
        shutil.rmtree(_scratch, ignore_errors=True)
    os._exit(3)


def _tell_parent(line: str) -> None:
    """One line to the parent's reader; the pipe breaks only when the parent has died (it reads
    until the worker exits), often before the watch notices."""
    try:
        print(line, flush=True)
    except BrokenPipeError:
        _orphaned()


def _progress(done: int, total: int) -> None:
    _tell_parent(f"{PROGRESS_PREFIX} {done} {total}")


def _phase(name: str) -> None:
    """Tell the parent what the child is doing, so a crash can be placed (loading, first tokens...)."""
    _tell_parent(f"{PHASE_PREFIX} {name}")


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
    atomic_write_json(out_path, {"status": "oom", "reason": (
        f"resident memory {rss / 2**20:.0f} MiB exceeded the tier's RAM cap {limit / 2**20:.0f} MiB "
        "(rss-watchdog)"), "memory": {"peak_rss_bytes": rss, "ram_limit_bytes": limit}})
    os._exit(137)


@contextlib.contextmanager
def loaded(job: Job, out_path: Path, *, scoring: bool = False, timed: bool = False) -> Iterator[dict[str, Any]]:
    """The backend, loaded the way the job's one load configuration says, under the tier's caps,
    with memory (and VRAM) tracked for the whole pass. Yields a dict the pass fills; on exit it
    holds the memory report and, with ``timed``, the load time."""
    from bench.backends import load_backend_class
    from bench.measuring.trackers import MemoryTracker, Stopwatch, VramTracker

    load = job.load
    state: dict[str, Any] = {"caps_seen": apply_caps(load.caps)}
    settings = load.settings(scoring=scoring)
    limit = load.caps.get("ram_limit_bytes")
    on_exceed = (lambda rss: _on_ram_exceeded(out_path, limit, rss)) if limit else None
    vram = VramTracker() if load.device == "cuda" else None
    with MemoryTracker(limit_bytes=limit, on_exceed=on_exceed) as mem, contextlib.ExitStack() as stack:
        if vram:
            stack.enter_context(vram)
        _phase("loading")
        backend = load_backend_class(load.backend)()
        backend.prepare(Path(load.model_path), settings)  # cached by the prepare pass: not load time
        with Stopwatch() as watch:
            backend.load(Path(load.model_path), settings)
        if timed:
            state["load_time_s"] = watch.seconds
        state["backend"] = backend
        yield state
        state["environment"] = backend.environment()
        backend.close()
        del state["backend"]
    state["memory"] = {**mem.report(), **(vram.report() if vram else {})}


@dataclass(frozen=True)
class SpeedResult:
    """The timed pass's result as the runner reads it: ``run_speed`` writes all of it as JSON; an oom
    (the RSS watchdog) or a Python-level failure writes only its status, reason and memory."""

    status: str
    reason: str | None = None
    memory: dict[str, Any] | None = None
    load_time_s: float | None = None
    samples: list[dict[str, Any]] = field(default_factory=list)  # raw traces (GenerationTrace), counted
    warmup_samples: list[dict[str, Any]] = field(default_factory=list)
    depth_fill: dict[str, Any] | None = None  # fill_depth's record, at a depth
    caps_seen: dict[str, Any] = field(default_factory=dict)  # apply_caps: the affinity the child had
    energy_source: str = "unavailable"
    environment: dict[str, Any] = field(default_factory=dict)  # the backend's own facts

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SpeedResult:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names and v is not None})


@dataclass(frozen=True)
class TaskResult:
    """The task pass's result as the runner reads it: ``run_task``'s (every item and what was asked),
    a Python-level failure's (status and reason), or, for a pass killed or crashed, the launcher's
    partial one (``partial``: the items it finished, read back from the items file, and what was asked)."""

    status: str
    reason: str | None = None
    records: list[dict[str, Any]] = field(default_factory=list)  # one per item: scored, tokens, seconds
    asked: dict[str, Any] = field(default_factory=dict)  # TaskRun.describe(): the settings as resolved
    energy_source: str | None = None
    memory: dict[str, Any] | None = None
    partial: bool = False

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TaskResult:
        if "partial" in d:  # bench.measuring.launcher._partial: the items file's lines, "_meta" first
            lines = d["partial"]
            return cls(d["status"], d.get("reason"), [r for r in lines if "_meta" not in r],
                       next((r["_meta"] for r in lines if "_meta" in r), {}), partial=True)
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names and v is not None})


def run_speed(job: Job, out_path: Path) -> dict[str, Any]:
    """The timed pass: one uncounted warm-up (or more), then the counted repetitions."""
    from dataclasses import asdict

    from bench.measuring.energy import open_meter

    work: SpeedPass = job.work  # type: ignore[assignment]
    meter, energy_source = open_meter(job.load.device)
    total = work.warmup + work.repetitions
    with loaded(job, out_path, timed=True) as state:
        backend = state["backend"]
        prompt = backend.prompt(work.prompt_tokens)
        if work.depth:
            state["depth_fill"], prompt = fill_depth(backend, work.depth, work.prompt_tokens)
        prompt_bytes = len(backend.detokenize(prompt))  # for text throughput (bytes, not tokens)
        traces = []
        _progress(0, total)
        for i in range(total):
            before = meter.read_joules() if meter else None
            trace = asdict(backend.generate(prompt, work.gen_tokens, work.stop_at_eos))
            trace["prompt_text_bytes"] = prompt_bytes
            if trace.get("text_bytes") is None:
                trace["text_bytes"] = len(trace["text"].encode("utf-8"))
            if meter and before is not None:
                trace["energy_j"] = meter.read_joules() - before
            traces.append(trace)
            _progress(i + 1, total)
    return {"status": "ok", "reason": None, "energy_source": energy_source, **state,
            "warmup_samples": traces[: work.warmup], "samples": traces[work.warmup:]}


def fill_depth(backend: Any, depth: int, prompt_tokens: int) -> tuple[dict[str, Any], list[int]]:
    """Fill the KV cache to ``depth`` once, untimed by the requests (its own time is recorded); the
    timed prompt continues the same text, so a request reads as the next turn of one conversation.
    Returns (how it was filled, the prompt of exactly ``prompt_tokens`` tokens)."""
    text = backend.prompt(depth + prompt_tokens)  # the start token (if any), then the filler text, cycled
    fill, prompt = text[:depth], text[depth:]
    _phase("filling the context")
    t0 = time.perf_counter()
    how = backend.fill_context(fill)
    seconds = time.perf_counter() - t0
    return {"tokens": depth, "content": "the suite's filler text, cycled, after the start token (as a prompt)",
            "seconds": seconds, "tokens_per_s": depth / seconds if seconds > 0 else None,
            "timed": "never: before the warm-up, outside every request's clock", **how}, prompt


def run_score(job: Job, out_path: Path) -> dict[str, Any]:
    """Quality pass: log-probabilities over a corpus, in a context of its own (never timed)."""
    from bench.quality.scoring import ReferenceCache, run_scoring

    work: ScorePass = job.work  # type: ignore[assignment]
    with loaded(job, out_path, scoring=True) as state:
        backend = state["backend"]
        reference = ReferenceCache(Path(work.reference)) if work.reference else None
        text = Path(work.corpus_path).read_text(encoding="utf-8").replace("\r\n", "\n")
        own = backend.tokenize(text)
        tokenization: dict[str, Any] | None = None
        if reference is not None:
            tokens = reference.meta()["tokens"]  # the reference's tokenization, for both sides
            tokenization = check_same_tokens(backend, own, tokens, text)
        else:
            tokens = own
        write = ReferenceCache(Path(work.write_reference)) if work.write_reference else None
        _phase("first tokens")
        result = run_scoring(backend, tokens, job.load.n_ctx, work.chunks, reference, write)
    if tokenization is not None:
        result["tokenization"] = tokenization
    return {**result, "memory": state["memory"], "status": "ok"}


def check_same_tokens(backend: Any, own: list[int], ref_tokens: list[int], text: str) -> dict[str, Any]:
    """Both passes score the reference's token ids. Where the reference was scored by another
    backend (a Hugging Face reference of a GGUF variant), those ids must mean the same text to the
    variant's tokenizer; else divergence would compare different tokens, and the pass stops."""
    from bench.errors import BenchError

    n = len(ref_tokens)
    same = own[:n] == ref_tokens
    out: dict[str, Any] = {"same_as_reference": same, "tokens": n}
    if same:
        return out
    out["positions_differing"] = sum(a != b for a, b in zip(own[:n], ref_tokens, strict=False)) + max(0, n - len(own))
    decoded = backend.detokenize(ref_tokens).decode("utf-8", errors="replace").strip()
    if not text.strip().startswith(decoded[:-8]):  # the last token may end inside a character
        raise BenchError("the reference's token ids decode to other text with this variant's tokenizer: the "
                         "two tokenizers differ, so divergence between them is undefined")
    out["note"] = (f"the variant's own tokenization differs from the reference's ({out['positions_differing']} of {n} "
                   "positions; a start token added on one side shifts them all); both passes scored the reference's "
                   "ids, which decode to the corpus text with either tokenizer")
    return out


def run_task(job: Job, out_path: Path) -> dict[str, Any]:
    """A task pass: greedy answers to each item, as the task file says (bench.quality.runner),
    each timed; an executed task runs every answer in the sandbox after its generation (untimed)."""
    from bench.errors import BenchError
    from bench.measuring.energy import open_meter
    from bench.quality.runner import ChatTemplate, TaskRun
    from bench.quality.tasks import load_task

    work: TaskPass = job.work  # type: ignore[assignment]
    task = load_task(work.task)
    items = task.items(Path(work.task_file))
    meter, energy_source = open_meter(job.load.device)
    records = []
    # Each finished item is also appended to partial.jsonl beside the result (after a first line
    # saying how the task was asked): a pass killed on its timeout (or by a crash) keeps the items it
    # completed (bench.measuring.launcher reads them).
    with loaded(job, out_path) as state, partial_path(out_path).open("w", encoding="utf-8") as partial:
        backend = state["backend"]
        chat = backend.chat_template()
        run = TaskRun(task, items, shots=work.shots, limit=work.limit, max_new_tokens=work.max_new_tokens,
                      chat=ChatTemplate(**chat) if chat else None)
        run.prepare()
        partial.write(json.dumps({"_meta": run.describe()}) + "\n")
        prompts = run.prompts()
        _progress(0, len(prompts))
        for i, p in enumerate(prompts):
            prompt = backend.tokenize(p.text, special=p.special)
            if len(prompt) + work.max_new_tokens > job.load.n_ctx:
                raise BenchError(f"item {p.index}: prompt of {len(prompt)} tokens + {work.max_new_tokens} new tokens "
                                 f"exceed the task context {job.load.n_ctx} (--task-ctx)")
            before = meter.read_joules() if meter else None
            t0 = time.perf_counter()
            # The shared few-shot prefix stays cached between items where the backend can keep it
            # (as a server's prompt cache would); each record says how many prompt tokens were reused.
            trace = backend.generate(prompt, work.max_new_tokens, stop_at_eos=True, stop=run.stop, reuse_prefix=True,
                                     reasoning_open=p.opened_reasoning)
            seconds = time.perf_counter() - t0
            energy = meter.read_joules() - before if meter and before is not None else None
            pieces = ([backend.detokenize([t]).decode("utf-8", errors="replace") for t in trace.token_ids]
                      if "</think>" in trace.text or "<think>" in trace.text or p.opened_reasoning else None)
            scored = run.score(p, trace.text, generated_tokens=len(trace.token_ids),
                               stopped_at_eos=trace.stopped_at_eos, pieces=pieces)
            records.append({**scored, "prompt_tokens": len(prompt), "prompt_tokens_reused": trace.prompt_tokens_reused,
                            "generated_tokens": len(trace.token_ids), "seconds": seconds, "text": trace.text,
                            "energy_j": energy})
            partial.write(json.dumps(records[-1]) + "\n")
            partial.flush()
            _progress(i + 1, len(prompts))
    return {"status": "ok", "records": records, "energy_source": energy_source, "memory": state["memory"],
            "asked": run.describe()}


def partial_path(out_path: Path) -> Path:
    """Where a pass that works item by item appends each finished item (one JSON object a line)."""
    return out_path.with_name("partial.jsonl")


def run_prepare(job: Job, out_path: Path) -> dict[str, Any]:
    """One-time conversions (an ONNX export, say) in a process of their own, so that neither their
    time nor their memory is counted as the benchmark's."""
    from bench.backends import load_backend_class

    _phase("loading")
    apply_caps(job.load.caps)
    load_backend_class(job.load.backend)().prepare(Path(job.load.model_path), job.load.settings())
    return {"status": "ok"}


PASSES: dict[str, Callable[[Job, Path], dict[str, Any]]] = {
    "speed": run_speed, "score": run_score, "task": run_task, "prepare": run_prepare}


def main(argv: list[str]) -> int:
    global _scratch
    spec_path, out_path = Path(argv[0]), Path(argv[1])
    _scratch = spec_path.parent
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()
    job = Job.from_json(spec_path.read_text())
    try:
        result = PASSES[job.mode](job, out_path)
    except MemoryError as exc:
        atomic_write_json(out_path, {"status": "oom", "reason": f"MemoryError: {exc}"})
        return 1
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc) else ""
        atomic_write_json(out_path, {"status": "failed", "reason": f"{type(exc).__name__}: {reason}".rstrip(": "),
                               "traceback": traceback.format_exc()})
        return 1
    atomic_write_json(out_path, result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
