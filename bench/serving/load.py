"""Load generation: a closed loop at fixed concurrency, or open-loop arrivals at a given rate.

Request bodies are encoded before the clock starts. Latency counts from the time a request was
*scheduled* (its arrival time, or the moment a closed-loop worker became free), not from when the
client got round to sending it; the difference is the client's queue time, kept per request
(coordinated omission). In open-loop mode a late send is reported as send lag, and requests the
client never managed to send within the point's time are counted as ``not_sent``, never dropped.

Arrivals: gaps drawn from a gamma distribution with shape ``burstiness`` and mean 1/rate
(burstiness 1 = exponential gaps = a Poisson process, as in vLLM's ``--burstiness``), seeded; the
first request arrives at t = 0.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.serving.client import Cancels, Target, clock, stream_request
from bench.serving.metrics import RequestTrace


@dataclass(frozen=True)
class Job:
    """One prepared request: its encoded body and what the client knows about it."""

    body: bytes
    prompt_tokens: int | None  # in the server's tokens where it could be checked
    max_tokens: int | None


@dataclass(frozen=True)
class LoadPoint:
    mode: str  # concurrency | rate
    value: float  # concurrency, or requests per second
    requests: int  # at most this many counted requests
    duration_s: float  # and no new request scheduled after this many seconds
    warmup: int = 0  # requests before the counted ones, same load, not counted
    max_in_flight: int | None = None  # rate mode: cap on requests in flight (None: no cap)
    burstiness: float = 1.0
    seed: int = 0

    @property
    def label(self) -> str:
        return f"concurrency {self.value:g}" if self.mode == "concurrency" else f"rate {self.value:g}/s"

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "value": self.value, "requests": self.requests, "duration_s": self.duration_s,
                "warmup": self.warmup, "max_in_flight": self.max_in_flight, "burstiness": self.burstiness,
                "seed": self.seed}


@dataclass
class PhaseResult:
    traces: list[RequestTrace]
    wall_s: float
    client_cpu_s: float  # CPU time of this whole process (all threads) during the phase
    cancelled: int = 0
    notes: list[str] = field(default_factory=list)
    interrupted: bool = False

    @property
    def client_cpu_share(self) -> float | None:
        """Client CPU time / wall time, in cores."""
        return self.client_cpu_s / self.wall_s if self.wall_s > 0 else None


def arrivals(n: int, rate: float, seed: int, burstiness: float = 1.0) -> list[float]:
    """Arrival times (s) of n requests: gamma-distributed gaps of mean 1/rate, first at 0."""
    if rate <= 0 or burstiness <= 0:
        raise ValueError("rate and burstiness must be positive")
    rng = random.Random(seed)
    out, t = [], 0.0
    for _ in range(n):
        out.append(t)
        t += rng.gammavariate(burstiness, 1.0 / (rate * burstiness))
    return out


Sender = Callable[[Job, RequestTrace, float, Cancels], None]


def default_sender(target: Target, timeout_s: float, keep_text: bool = False) -> Sender:
    def send(job: Job, trace: RequestTrace, t0: float, cancels: Cancels) -> None:
        trace.prompt_tokens_client, trace.max_tokens = job.prompt_tokens, job.max_tokens
        try:
            stream_request(target, job.body, trace, t0, timeout_s, cancels, keep_text)
        except Exception as exc:  # a bug of ours: the request still gets a row entry
            trace.status, trace.reason = "client_error", f"{type(exc).__name__}: {exc}"
            trace.end = clock() - t0
    return send


def run_phase(point: LoadPoint, jobs: Sequence[Job], send: Sender, grace_s: float) -> PhaseResult:
    """Run ``jobs`` at the point's load; requests still in flight ``grace_s`` after the point's
    time are cancelled (and counted as such). A Ctrl-C cancels what is in flight and returns what
    was measured so far, marked ``interrupted``."""
    cancels = Cancels()
    traces: list[RequestTrace] = []
    threads: list[threading.Thread] = []
    cpu0 = time.process_time()
    t0 = clock()
    interrupted, cancelled = False, 0
    try:
        if point.mode == "concurrency":
            _closed_loop(point, jobs, send, t0, cancels, traces, threads)
        else:
            _open_loop(point, jobs, send, t0, cancels, grace_s, traces, threads)
        end_by = t0 + point.duration_s + grace_s
        for th in threads:
            th.join(max(0.0, end_by - clock()))
        cancelled = sum(th.is_alive() for th in threads)
    except KeyboardInterrupt:
        interrupted = True
    if cancelled or interrupted:
        cancels.cancel_all()
        for th in threads:
            th.join(30)
    wall = clock() - t0
    notes = [f"{cancelled} request(s) still running {grace_s:g} s after the point's time were cancelled"
             ] if cancelled else []
    return PhaseResult(traces=traces, wall_s=wall, client_cpu_s=time.process_time() - cpu0, cancelled=cancelled,
                       notes=notes, interrupted=interrupted)


def _closed_loop(point: LoadPoint, jobs: Sequence[Job], send: Sender, t0: float, cancels: Cancels,
                 traces: list[RequestTrace], threads: list[threading.Thread]) -> None:
    """``value`` workers; each sends its next request as soon as its previous one ended (that
    moment is the request's scheduled time)."""
    lock = threading.Lock()
    pending = iter(range(min(point.requests, len(jobs))))

    def worker() -> None:
        free_at = 0.0
        while True:
            with lock:
                i = next(pending, None) if free_at < point.duration_s and not cancels.cancelled else None
                if i is None:
                    return
                trace = RequestTrace(index=i, scheduled=free_at)
                traces.append(trace)
            send(jobs[i], trace, t0, cancels)
            free_at = clock() - t0

    threads += [threading.Thread(target=worker, name=f"load-worker-{k}", daemon=True)
                for k in range(max(1, int(point.value)))]
    for th in threads:
        th.start()


def _open_loop(point: LoadPoint, jobs: Sequence[Job], send: Sender, t0: float, cancels: Cancels, grace_s: float,
               traces: list[RequestTrace], threads: list[threading.Thread]) -> None:
    """Each request starts at its arrival time in a thread of its own (at most ``max_in_flight``
    at once: the time waiting for a slot is recorded as slot wait, part of the queue time)."""
    times = arrivals(min(point.requests, len(jobs)), point.value, point.seed, point.burstiness)
    times = [t for t in times if t < point.duration_s]
    slots = threading.Semaphore(point.max_in_flight) if point.max_in_flight else None
    traces += [RequestTrace(index=i, scheduled=t) for i, t in enumerate(times)]
    started: set[int] = set()
    give_up = t0 + point.duration_s + grace_s

    def run(job: Job, trace: RequestTrace) -> None:
        try:
            send(job, trace, t0, cancels)
        finally:
            if slots is not None:
                slots.release()

    try:
        _dispatch(traces, jobs, run, t0, give_up, slots, threads, started)
    finally:
        for trace in traces:
            if trace.index not in started:
                trace.status, trace.reason = "not_sent", "the client could not send it within the point's time"


def _dispatch(traces: list[RequestTrace], jobs: Sequence[Job], run: Callable[[Job, RequestTrace], None], t0: float,
              give_up: float, slots: threading.Semaphore | None, threads: list[threading.Thread],
              started: set[int]) -> None:
    for trace in traces:
        delay = t0 + trace.scheduled - clock()
        if delay > 0:
            time.sleep(delay)
        if slots is not None:
            if not slots.acquire(timeout=max(0.0, give_up - clock())):
                break
            # from its arrival until a slot was free (behind earlier capped requests included)
            trace.slot_wait = max(0.0, clock() - (t0 + trace.scheduled))
        if clock() > give_up:
            if slots is not None:
                slots.release()
            break
        th = threading.Thread(target=run, args=(jobs[trace.index], trace), name=f"load-{trace.index}", daemon=True)
        threads.append(th)
        started.add(trace.index)
        th.start()
