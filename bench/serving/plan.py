"""What a sweep will run, decided from its request before anything starts: the load points, the
SLOs a point is judged by, and the context each server slot needs."""

from __future__ import annotations

import math
from pathlib import Path

from bench.errors import BenchError
from bench.request import ServeRequest, TaskSpec
from bench.serving.load import LoadPoint
from bench.serving.metrics import Slo


def load_points(req: ServeRequest) -> list[LoadPoint]:
    """Closed-loop points (requests: 4 x concurrency, at least 8; warm-up: the concurrency), then
    open-loop ones (30 s worth of arrivals, at least 8; warm-up 2), each bounded by the duration."""
    points = []
    for c in sorted(set(req.concurrency)):
        n = req.requests or max(8, 4 * c)
        points.append(LoadPoint("concurrency", c, n, req.duration_s, c if req.warmup is None else req.warmup,
                                seed=req.seed))
    for r in sorted(set(req.rates)):
        n = req.requests or max(8, math.ceil(r * 30))
        points.append(LoadPoint("rate", r, n, req.duration_s, 2 if req.warmup is None else req.warmup,
                                req.max_in_flight, req.burstiness, req.seed))
    return points


def slo_from_claims(path: Path, ttft_s: float | None, tpot_s: float | None) -> Slo:
    """TTFT <= criteria.ttft_s_max and TPOT <= 1 / criteria.decode_tps_min of the claims file
    (bench.claims, read typed), unless given on the command line (then the file is not read)."""
    from bench.claims import Criteria, load_claims

    criteria = Criteria() if ttft_s is not None and tpot_s is not None else load_claims(path).criteria
    parts = []
    if ttft_s is None:
        if criteria.ttft_s_max is None:
            raise BenchError(f"{path}: no criteria.ttft_s_max; give --slo-ttft")
        ttft_s = criteria.ttft_s_max
        parts.append(f"TTFT <= {ttft_s:g} s (ttft_s_max of {path.name})")
    else:
        parts.append(f"TTFT <= {ttft_s:g} s (--slo-ttft)")
    if tpot_s is None:
        if criteria.decode_tps_min is None:
            raise BenchError(f"{path}: no criteria.decode_tps_min; give --slo-tpot")
        tpot_s = 1.0 / criteria.decode_tps_min
        parts.append(f"TPOT <= {tpot_s:.4f} s (1 / decode_tps_min {criteria.decode_tps_min:g} tok/s of {path.name})")
    else:
        parts.append(f"TPOT <= {tpot_s:g} s (--slo-tpot)")
    return Slo(ttft_s=ttft_s, tpot_s=tpot_s, source="; ".join(parts))


def task_max_tokens(task: TaskSpec) -> int:
    """The task's answer length: as asked, else the task file's."""
    from bench.quality.tasks import load_task

    return task.max_new_tokens or load_task(task.name).definition.defaults.max_new_tokens


def ctx_per_slot(req: ServeRequest) -> int:
    """Context per slot: the longest prompt plus the longest answer, rounded up to 256."""
    if req.ctx:
        return req.ctx
    prompt = req.prompt_tokens if req.prompts == "fixed" else 1536 + req.shared_prefix
    need = prompt + req.gen_tokens[1] + 16
    if req.task:
        need = max(need, 1536 + task_max_tokens(req.task))
    return -(-need // 256) * 256
