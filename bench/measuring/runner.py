"""Runs each benchmark cell in its own child process and turns whatever happens into a Row.

A cell that crashes, is killed or runs past its timeout becomes a row with status ``failed``,
``oom`` or ``timeout`` and a reason; the rest of the matrix goes on.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.backends import backend_spec
from bench.hardware.profiles import Profile
from bench.hardware.tiers import bytes_read_per_token, roofline_share, usd_per_million_tokens
from bench.measuring.metrics import (
    DEFINITIONS,
    Timeline,
    counter_rates,
    decode_tps,
    e2e,
    prefill_tps,
    stats,
    summarize,
    tpot,
    ttft,
)
from bench.measuring.worker import PHASE_PREFIX, PROGRESS_PREFIX
from bench.models.store import ResolvedModel
from bench.results.schema import CellConfig, Row

ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class CellPlan:
    config: CellConfig
    model: ResolvedModel
    profile: Profile
    caps: dict[str, Any] = field(default_factory=dict)  # CPUs and RAM limit the worker applies
    tier: dict[str, Any] = field(default_factory=dict)  # emulation facts and the memory prediction
    precheck: tuple[str, str] | None = None  # (status, reason) decided without loading
    reference: ResolvedModel | None = None  # the variant quality is measured against
    quality_note: str | None = None  # why there is no reference, where there is none


def _worker_spec(plan: CellPlan) -> dict[str, Any]:
    c = plan.config
    return {
        "backend": c.backend,
        "model_path": str(plan.model.path),
        "settings": {"threads": c.threads, "device": c.device, "n_ctx": c.n_ctx, "seed": c.seed,
                     "n_gpu_layers": c.n_gpu_layers, "options": c.backend_options},
        "prompt_tokens": c.prompt_tokens,
        "gen_tokens": c.gen_tokens,
        "repetitions": c.repetitions,
        "warmup": c.warmup,
        "stop_at_eos": c.stop_at_eos,
        "caps": plan.caps,
    }


def _child_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    # Libraries that size their own thread pools follow the profile too.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _sample_record(trace: dict[str, Any]) -> dict[str, Any]:
    """The raw trace plus the per-request metrics derived from it."""
    tl = Timeline(trace["prompt_tokens"], trace["token_times"], trace["prefill_end"])
    pf, separated = prefill_tps(tl)
    return {
        **trace,
        "generated_tokens": len(trace["token_times"]),
        "ttft_s": ttft(tl),
        "prefill_tps": pf,
        "prefill_separated": separated,
        "decode_tps": decode_tps(tl),
        "tpot_s": tpot(tl),
        "e2e_s": e2e(tl),
        **counter_rates(trace.get("backend_counters")),
        "energy_j_per_token": trace["energy_j"] / len(trace["token_times"]) if trace.get("energy_j") is not None
        and trace["token_times"] else None,
    }


CRASH_SIGNALS = ("SIGILL", "SIGSEGV", "SIGBUS", "SIGFPE")


def explain_crash(signal_name: str, phase: str, backend: str, build: dict[str, Any] | None) -> str:
    """Why a worker died from a signal, in one line, with the likely cause and its fix.

    A native library that dies with SIGILL/SIGSEGV while loading or at its first tokens is most
    often running an instruction the machine cannot execute: a llama.cpp build compiled for what
    the CPU advertises (AMX on a VM where it faults), or for another CPU."""
    head = f"worker crashed with {signal_name} ({phase})"
    early = phase in ("starting", "loading", "first tokens")
    if signal_name not in CRASH_SIGNALS or not early:
        return head
    if backend == "llama.cpp":
        flags = " ".join((build or {}).get("cmake_args") or []) or "flags not recorded"
        return (f"{head}: the llama.cpp build ({(build or {}).get('build', 'unknown')}: {flags}) likely uses an "
                "instruction this machine cannot run; `bench doctor` shows which, "
                "`python -m bench.install --rebuild` builds one that runs")
    return (f"{head}: a native library of backend {backend} likely uses an instruction this machine cannot "
            "run, or the model file is damaged; `bench doctor` checks the installation")


def _classify_exit(returncode: int, stderr_tail: str, phase: str = "starting", backend: str = "",
                   build: dict[str, Any] | None = None) -> tuple[str, str]:
    if returncode < 0:
        sig = signal.Signals(-returncode)
        if sig == signal.SIGKILL:
            return _classify_sigkill()
        reason = explain_crash(sig.name, phase, backend, build)
        return "failed", reason + (f" | {stderr_tail}" if stderr_tail else "")
    return "failed", f"worker exited with status {returncode}" + (f": {stderr_tail}" if stderr_tail else "")


def _classify_sigkill() -> tuple[str, str]:
    import psutil

    vm = psutil.virtual_memory()
    if vm.available / vm.total < 0.05:
        return "oom", f"worker killed by SIGKILL with {vm.available / 2**20:.0f} MiB of RAM left (OOM killer)"
    return "failed", "worker killed by SIGKILL (by another process, or the kernel OOM killer)"


class _ChildWatch:
    """What the worker last said it was doing: its phase and its progress."""

    def __init__(self) -> None:
        self.phase = "starting"

    def read(self, proc: subprocess.Popen[str], on_progress: ProgressFn | None) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith(PHASE_PREFIX):
                self.phase = line[len(PHASE_PREFIX):].strip()
            elif line.startswith(PROGRESS_PREFIX):
                done, total = (int(x) for x in line.split()[1:3])
                self.phase = "first tokens" if done == 0 else f"after {done} of {total} requests"
                if on_progress:
                    on_progress(done, total)


def run_worker(spec: dict[str, Any], threads: int, timeout_s: float,
               on_progress: ProgressFn | None = None,
               build: dict[str, Any] | None = None) -> tuple[str, str | None, dict[str, Any] | None]:
    """Run ``bench.measuring.worker`` on ``spec`` in a child process: (status, reason, result or None).
    ``build`` (the llama.cpp build's facts) lets a crash name the build and its fix."""
    with tempfile.TemporaryDirectory(prefix="bench-cell-") as tmp:
        spec_path, out_path, err_path = Path(tmp, "spec.json"), Path(tmp, "result.json"), Path(tmp, "stderr")
        spec_path.write_text(json.dumps(spec))
        with err_path.open("w") as err:
            proc = subprocess.Popen(  # faulthandler: a crash leaves the Python frame it happened in
                [sys.executable, "-X", "faulthandler", "-m", "bench.measuring.worker", str(spec_path), str(out_path)],
                stdout=subprocess.PIPE, stderr=err, text=True, env=_child_env(threads),
                start_new_session=True,  # Ctrl-C reaches the parent, which decides what to stop
            )
            watch = _ChildWatch()
            reader = threading.Thread(target=watch.read, args=(proc, on_progress), daemon=True)
            reader.start()
            try:
                returncode = proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                _kill(proc)
                return "timeout", f"no result within {timeout_s:g} s; the worker was killed", None
            except BaseException:  # KeyboardInterrupt: never leave a worker behind
                _kill(proc)
                raise
            finally:
                reader.join(timeout=5)
        if not out_path.exists():
            status, reason = _classify_exit(returncode, _tail(err_path), watch.phase, spec.get("backend", ""), build)
            return status, reason, None
        result = json.loads(out_path.read_text())
    return result["status"], result.get("reason"), result


def run_cell(plan: CellPlan, run_id: str, environment: dict[str, Any], calibration: dict[str, Any] | None = None,
             on_progress: ProgressFn | None = None) -> Row:
    c = plan.config
    created = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    row = Row(run_id=run_id, created_at=created, status="failed", reason=None, config=c,
              model={**asdict(plan.model), "path": str(plan.model.path)},
              profile=plan.profile.model_dump(), environment=dict(environment), definitions=DEFINITIONS,
              tier=dict(plan.tier))
    if calibration:
        row.environment["calibration"] = calibration
    if plan.precheck:
        row.status, row.reason = plan.precheck  # type: ignore[assignment]
        return row
    if backend_spec(c.backend).prepares:
        status, reason, _ = run_worker({**_worker_spec(plan), "mode": "prepare"}, c.threads, c.timeout_s)
        if status != "ok":
            row.status, row.reason = status, f"preparing the model for {c.backend}: {reason}"  # type: ignore[assignment]
            return row
    status, reason, result = run_worker(_worker_spec(plan), c.threads, c.timeout_s, on_progress,
                                        build=environment.get("llama_cpp_build"))
    if result is None:
        row.status, row.reason = status, reason  # type: ignore[assignment]
        return row
    row.status = result["status"]
    row.reason = result.get("reason")
    if result.get("memory"):
        row.memory = result["memory"]
    if row.status != "ok":
        return row
    row.load_time_s = result["load_time_s"]
    row.memory = result["memory"]
    row.environment["backend"] = result.get("environment", {})
    row.samples = [_sample_record(t) for t in result["samples"]]
    row.warmup_samples = [_sample_record(t) for t in result["warmup_samples"]]
    timelines = [Timeline(t["prompt_tokens"], t["token_times"], t["prefill_end"]) for t in result["samples"]]
    row.summary = summarize(timelines)
    for key in ("backend_prefill_tps", "backend_decode_tps", "energy_j_per_token"):
        s = stats([x.get(key) for x in row.samples])
        if s is not None:
            row.summary[key] = s.to_dict()
    row.tier.update(result.get("caps_seen", {}))
    row.tier.update(tier_outcome(plan, row.memory))
    row.efficiency = efficiency(plan, row.summary, calibration, result.get("energy_source", "unavailable"))
    if c.quality:
        row.quality = run_quality(plan)
    if c.task:
        row.task = run_task_pass(plan)
    short = [s["generated_tokens"] for s in row.samples if s["generated_tokens"] < c.gen_tokens]
    if short:
        row.reason = (f"{len(short)} of {len(row.samples)} repetitions stopped at end-of-sequence before "
                      f"{c.gen_tokens} tokens (got {min(short)}-{max(short)}); metrics use the tokens produced")
    return row


def _score_spec(plan: CellPlan, model: ResolvedModel, corpus_path: Path, reference: Path | None,
                write: Path | None) -> dict[str, Any]:
    q, c = plan.config.quality or {}, plan.config
    return {"mode": "score", "backend": c.backend, "model_path": str(model.path), "threads": c.threads,
            "device": c.device, "n_gpu_layers": c.n_gpu_layers, "n_ctx": q["n_ctx"], "chunks": q["chunks"],
            "corpus_path": str(corpus_path), "reference": str(reference) if reference else None,
            "write_reference": str(write) if write else None, "caps": plan.caps}


def run_quality(plan: CellPlan) -> dict[str, Any]:
    """Perplexity of the variant and its divergence from the reference, each pass in a child
    process of its own (never the one that was timed). The reference pass runs once per
    (reference file, corpus, window) and is cached."""
    import hashlib

    from bench.datafiles import cache_dir
    from bench.quality.corpus import load_corpus
    from bench.quality.scoring import ReferenceCache

    c, q = plan.config, plan.config.quality or {}
    corpus = load_corpus(q["corpus"])
    out: dict[str, Any] = {"status": "ok", "corpus": {"name": corpus.name, "sha256": corpus.sha256,
                                                     "source": corpus.source}}
    cache = None
    if plan.reference is not None:
        ref = plan.reference
        key = hashlib.sha256(f"{ref.sha256}|{corpus.sha256}|{q['n_ctx']}|{q['chunks']}|{c.backend}".encode()).hexdigest()[:20]
        cache = ReferenceCache(cache_dir() / "reference-logprobs" / key)
        out["reference"] = {"variant_id": ref.variant_id, "quantization": ref.quantization, "sha256": ref.sha256,
                            "cache": str(cache.npy)}
        if not cache.exists():
            status, reason, res = run_worker(_score_spec(plan, ref, corpus.path, None, cache.npy), c.threads, c.timeout_s)
            if res is None or status != "ok":
                return {**out, "status": status, "reason": f"reference pass: {reason}"}
            out["reference_pass"] = {k: res[k] for k in ("perplexity", "seconds", "tokens_evaluated_per_s")}
    else:
        out["reference"] = None
        out["note"] = plan.quality_note or "no reference variant: perplexity only"
    status, reason, res = run_worker(_score_spec(plan, plan.model, corpus.path, cache.npy if cache else None, None),
                                     c.threads, c.timeout_s)
    if res is None or status != "ok":
        return {**out, "status": status, "reason": reason}
    res.pop("status", None)
    res.pop("reason", None)
    return {**out, **res}


def run_task_pass(plan: CellPlan) -> dict[str, Any]:
    """Task accuracy in a child process of its own, with time, energy and cost per correct answer
    (reasoning distills write long answers: per correct answer is the honest comparison)."""
    from bench.quality.tasks import summarize_task, task_file

    c, t = plan.config, plan.config.task or {}
    path = task_file(t["name"])
    spec = {"mode": "task", "backend": c.backend, "model_path": str(plan.model.path), "threads": c.threads,
            "device": c.device, "n_gpu_layers": c.n_gpu_layers, "task_file": str(path), "caps": plan.caps,
            **{k: t[k] for k in ("limit", "shots", "max_new_tokens", "n_ctx")}}
    status, reason, res = run_worker(spec, c.threads, c.timeout_s)
    out: dict[str, Any] = {"name": t["name"], "file": str(path), "status": status}
    if res is None or status != "ok":
        return {**out, "reason": reason}
    price = plan.profile.price.hourly_usd() if plan.profile.price else None
    return {**out, **summarize_task(res["records"], price), "energy_source": res["energy_source"],
            "records": res["records"]}


def tier_outcome(plan: CellPlan, memory: dict[str, Any]) -> dict[str, Any]:
    """Measured peak against the tier's budget (fits, per docs/METRICS.md) and the prediction."""
    out: dict[str, Any] = {}
    peak = memory.get("peak_rss_bytes")
    budget = plan.tier.get("ram_budget_bytes")
    if peak is not None and budget is not None:
        out["fits"] = peak <= budget
        out["measured_peak_rss_bytes"] = peak
    predicted = (plan.tier.get("predicted_memory") or {}).get("total_bytes")
    if predicted and peak:
        out["prediction_error"] = (predicted - peak) / peak  # + means the prediction was too high
    return out


def efficiency(plan: CellPlan, summary: dict[str, Any], calibration: dict[str, Any] | None,
               energy_source: str) -> dict[str, Any]:
    """Roofline share on this host, $ per 1M output tokens at the profile's price, energy, and a
    bandwidth-scaled projection to the real tier, which is labelled and never mixed with measurements."""
    c, g = plan.config, plan.model.gguf or {}
    out: dict[str, Any] = {"energy_source": energy_source}
    decode = (summary.get("decode_tps") or {}).get("mean")
    if not decode:
        return out
    if g and calibration:
        bpt = bytes_read_per_token(g, plan.model.size_bytes, c.prompt_tokens + c.gen_tokens // 2)
        bw = calibration["memory_bandwidth_bytes_per_s"]
        out["roofline"] = {"share": roofline_share(decode, bw, bpt), "bytes_per_token": bpt,
                           "bandwidth_bytes_per_s": bw, "bandwidth_source": "measured on this host (calibration)"}
    price = plan.profile.price
    hourly = price.hourly_usd() if price else None
    if hourly:
        out["cost"] = {"usd_per_hour": hourly, "basis": price.basis, "price_source": price.source,
                       "usd_per_1m_output_tokens": usd_per_million_tokens(hourly, decode),
                       "speed_basis": "decode tok/s measured here under the tier's caps"}
    else:
        out["cost"] = {"usd_per_1m_output_tokens": None, "why": f"profile {plan.profile.id} has no price"}
    tier_bw = plan.profile.performance.memory_bandwidth_gbs if plan.profile.performance else None
    if tier_bw and calibration:
        projected = decode * tier_bw * 1e9 / calibration["memory_bandwidth_bytes_per_s"]
        out["projection"] = {
            "label": "PROJECTION, not a measurement: decode tok/s scaled by the tier's memory bandwidth / this host's",
            "decode_tps": projected, "tier_bandwidth_gbs": tier_bw,
            "usd_per_1m_output_tokens": usd_per_million_tokens(hourly, projected) if hourly else None,
        }
    return out


def _kill(proc: subprocess.Popen[str]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _tail(path: Path, lines: int = 3) -> str:
    """The end of the worker's stderr; after a fatal signal, faulthandler's header and the
    innermost Python frame of the crashing thread instead (the call it died in)."""
    try:
        text = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    fatal = [i for i, ln in enumerate(text) if ln.startswith("Fatal Python error")]
    if fatal:
        frames = [ln for ln in text[fatal[-1]:] if ln.startswith("File ")]
        return " | ".join([text[fatal[-1]], *frames[:1]])[-500:]
    return " | ".join(text[-lines:])[-500:]
