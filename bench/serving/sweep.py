"""``bench serve``: a sweep of load points against a server, one row per point, then a summary.

Order of work: check every input (one-line errors, nothing started); place the server and the
client on separate CPUs; measure the client's own ceiling against a trivial streaming server;
start llama-server (or probe the user's URL); run each load point (prompts prepared first, warm-up
not counted, bounded in requests and seconds) and append its row at once; optionally compare task
answers at concurrency 1 and N; stop the server; optionally run the same workload in process
(``bench run``) for the side-by-side; append the sweep's summary row.

The summary's rule for the largest sustainable load: the largest load L such that every measured
point at or below L had at least ``goodput_share`` of its counted requests meet both SLOs (TTFT
and TPOT bounds, from the claims file unless given) with the client on schedule; its $ per 1M
output tokens is the tier's price per hour / (output tok/s at L x 3600) x 1e6.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bench.errors import BenchError
from bench.serving import metrics as sm
from bench.serving.client import HttpFailure, Target, http_json, is_loopback_host, parse_url
from bench.serving.load import Job, LoadPoint, PhaseResult, default_sender, run_phase
from bench.serving.prompts import GenLength, Prompt, PromptFactory, encode_job
from bench.serving.rows import ServingRow, append_serving_row
from bench.serving.server import (
    ManagedServer,
    ServerSpec,
    counter_deltas,
    gpu_memory,
    scrape_metrics,
)

Say = Callable[[str], None]
CONNECTION_KINDS = ("connection_refused", "unreachable")


@dataclass
class ServeRequest:
    output: Path
    catalog_path: Path
    profiles_dir: Path
    claims_path: Path
    model: str | None = None  # catalog ID[:VARIANT] or a GGUF path (managed llama-server)
    url: str | None = None  # an OpenAI-compatible base URL the user runs
    served_model: str | None = None
    api_key_env: str | None = None
    api: str = "completions"
    profile: str = "auto"
    threads: int | None = None
    ctx: int | None = None  # per slot
    parallel: int | None = None
    server_cpus: list[int] | None = None
    client_cpus: list[int] | None = None
    server_args: list[str] = field(default_factory=list)
    concurrency: list[int] = field(default_factory=list)
    rates: list[float] = field(default_factory=list)
    requests: int | None = None
    duration_s: float = 120.0
    warmup: int | None = None
    max_in_flight: int | None = None
    burstiness: float = 1.0
    prompts: str = "fixed"
    prompt_tokens: int = 128
    shared_prefix: int = 0  # tokens every prompt starts with (a system prompt, earlier turns)
    corpus: str = "alice29"
    gen: GenLength = field(default_factory=lambda: GenLength(64, 64))
    stop_at_eos: bool = False
    seed: int = 0
    slo_ttft_s: float | None = None
    slo_tpot_s: float | None = None
    goodput_share: float = 0.9
    ceiling: bool = True
    in_process: bool = False
    task: str | None = None
    task_limit: int = 20
    task_shots: int | None = None  # None: the task file's
    task_max_tokens: int | None = None
    request_timeout_s: float = 300.0
    timeout_s: float = 3600.0


# -- inputs ---------------------------------------------------------------------------------------
def validate(req: ServeRequest) -> None:
    """Every bad input is a one-line error before anything starts."""
    if req.url is not None and req.model is not None:
        raise BenchError("give either --model (the suite starts llama-server) or --url (a server you run), not both")
    if req.url is not None:
        parse_url(req.url)
        if req.in_process:
            raise BenchError("--in-process needs a server the suite starts (--model), not --url")
    if req.api not in ("completions", "chat"):
        raise BenchError(f"--endpoint must be completions or chat, got {req.api!r}")
    if not req.concurrency and not req.rates:
        raise BenchError("give --concurrency N[,N...] or --rate R[,R...]")
    if any(c < 1 for c in req.concurrency) or any(not 0 < r < math.inf for r in req.rates):
        raise BenchError("--concurrency values must be >= 1 and --rate values positive and finite")
    _validate_numbers(req)
    if req.shared_prefix < 0 or (req.prompts == "fixed" and req.shared_prefix >= req.prompt_tokens):
        raise BenchError(f"--shared-prefix must be 0 or more and, with --prompts fixed, less than --prompt-tokens "
                         f"{req.prompt_tokens}; got {req.shared_prefix}")
    if req.in_process and (req.prompts != "fixed" or req.gen.lo != req.gen.hi):
        raise BenchError("--in-process compares fixed lengths: use --prompts fixed and --gen-tokens N")
    if req.api_key_env and not os.environ.get(req.api_key_env):
        raise BenchError(f"--api-key-env {req.api_key_env}: that environment variable is not set")
    if any(a.split("=", 1)[0] in ("--api-key", "--api-key-file") for a in req.server_args):
        raise BenchError("give llama-server's API key with --api-key-env VAR, not --server-arg --api-key: the suite "
                         "must send it, and a key on a command line is visible to every user of the machine (ps)")
    if any(h.endswith(".sock") for h in server_hosts(req.server_args)):
        raise BenchError("--server-arg --host: bench serve reaches llama-server over TCP, not a UNIX socket")


def _validate_numbers(req: ServeRequest) -> None:
    for name, value in (("--requests", req.requests), ("--threads", req.threads), ("--ctx", req.ctx),
                        ("--parallel", req.parallel), ("--max-in-flight", req.max_in_flight),
                        ("--task-limit", req.task_limit if req.task else 1), ("--prompt-tokens", req.prompt_tokens)):
        if value is not None and value < 1:
            raise BenchError(f"{name} must be at least 1, got {value}")
    for fname, fvalue in (("--duration", req.duration_s), ("--request-timeout", req.request_timeout_s),
                          ("--timeout", req.timeout_s), ("--burstiness", req.burstiness)):
        if not fvalue > 0:
            raise BenchError(f"{fname} must be positive, got {fvalue}")
    if req.warmup is not None and req.warmup < 0:
        raise BenchError(f"--warmup must be 0 or more, got {req.warmup}")
    if not 0 < req.goodput_share <= 1:
        raise BenchError(f"--goodput-share must be in (0, 1], got {req.goodput_share}")


def load_points(req: ServeRequest) -> list[LoadPoint]:
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


def slo_from_claims(path: Path, ttft_s: float | None, tpot_s: float | None) -> sm.Slo:
    """TTFT <= criteria.ttft_s_max and TPOT <= 1 / criteria.decode_tps_min of the claims file,
    unless given on the command line."""
    import yaml

    try:
        criteria = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("criteria") or {}
    except (OSError, yaml.YAMLError) as exc:
        if ttft_s is not None and tpot_s is not None:
            criteria = {}
        else:
            raise BenchError(f"{path}: cannot read the claims file for the SLOs: {exc}") from None
    parts = []
    if ttft_s is None:
        if not criteria.get("ttft_s_max"):
            raise BenchError(f"{path}: no criteria.ttft_s_max; give --slo-ttft")
        ttft_s = float(criteria["ttft_s_max"])
        parts.append(f"TTFT <= {ttft_s:g} s (ttft_s_max of {path.name})")
    else:
        parts.append(f"TTFT <= {ttft_s:g} s (--slo-ttft)")
    if tpot_s is None:
        if not criteria.get("decode_tps_min"):
            raise BenchError(f"{path}: no criteria.decode_tps_min; give --slo-tpot")
        tpot_s = 1.0 / float(criteria["decode_tps_min"])
        parts.append(f"TPOT <= {tpot_s:.4f} s (1 / decode_tps_min {criteria['decode_tps_min']:g} tok/s of {path.name})")
    else:
        parts.append(f"TPOT <= {tpot_s:g} s (--slo-tpot)")
    return sm.Slo(ttft_s=ttft_s, tpot_s=tpot_s, source="; ".join(parts))


# -- placement ------------------------------------------------------------------------------------
@dataclass
class Placement:
    server_cpus: list[int] | None
    client_cpus: list[int]
    tier_threads: int | None
    notes: list[str] = field(default_factory=list)
    warning: str | None = None

    @property
    def overlap(self) -> bool | None:
        if self.server_cpus is None:
            return None
        return bool(set(self.server_cpus) & set(self.client_cpus))

    def to_dict(self) -> dict[str, Any]:
        return {"server_cpus": self.server_cpus, "client_cpus": self.client_cpus, "overlap": self.overlap,
                "tier_threads": self.tier_threads,
                "server_threads": len(self.server_cpus) if self.server_cpus else None,
                "notes": self.notes, "warning": self.warning}


def _cpu_list(name: str, cpus: list[int], host: list[int]) -> list[int]:
    bad = sorted(set(cpus) - set(host))
    if bad or not cpus:
        raise BenchError(f"{name} {','.join(map(str, cpus))}: not CPUs this process may use "
                         f"({','.join(map(str, host))})")
    return sorted(set(cpus))


def plan_placement(tier_threads: int | None, host: list[int], managed: bool, server_cpus: list[int] | None = None,
                   client_cpus: list[int] | None = None, url_host: str | None = None) -> Placement:
    """Server on the first cores, the client on the others: the server gets the tier's threads
    but never the client's last core, unless the host has one CPU or the user says otherwise."""
    host = sorted(host)
    notes: list[str] = []
    if not managed:
        client = _cpu_list("--client-cpus", client_cpus, host) if client_cpus else host
        p = Placement(None, client, None, ["the server is not the suite's: its CPUs are unknown"])
        if url_host in ("127.0.0.1", "localhost", "::1"):
            p.warning = ("the server runs on this machine and its CPUs are unknown: client and server may share "
                         "cores (llama.cpp's threads collapse when another process takes one)")
        return p
    if server_cpus:
        server = _cpu_list("--server-cpus", server_cpus, host)
    else:
        k = max(1, min(tier_threads or len(host), len(host) - 1))
        server = host[:k]
        if tier_threads and k < tier_threads:
            notes.append(f"the tier's {tier_threads} threads capped to {k}: the load generator keeps "
                         f"{len(host) - k} of this host's {len(host)} CPUs")
    if client_cpus:
        client = _cpu_list("--client-cpus", client_cpus, host)
    else:
        client = [c for c in host if c not in server] or host
    p = Placement(server, client, tier_threads, notes)
    if p.overlap:
        p.warning = (f"server CPUs {server} and client CPUs {client} overlap: the load generator competes with the "
                     "server for cores (llama.cpp's threads spin at barriers and collapse when a core is taken)")
    return p


# -- the target -----------------------------------------------------------------------------------
@dataclass
class Opened:
    target: Target
    info: dict[str, Any]
    model: dict[str, Any]
    server: ManagedServer | None = None
    warnings: list[str] = field(default_factory=list)  # about who may use the server: said once


def _resolve_model(req: ServeRequest) -> Any:
    from bench.measuring.plan import is_path
    from bench.models.catalog import load_catalog
    from bench.models.store import ModelStore

    store = ModelStore()
    spec = req.model or load_catalog(req.catalog_path).default_model
    if is_path(spec):
        return store.resolve_path(Path(spec))
    catalog = load_catalog(req.catalog_path)
    store.base_dir = req.catalog_path.parent.resolve()
    model_id, _, variant_id = spec.partition(":")
    model = catalog.model(model_id)
    variant = model.variant(variant_id or None)
    if variant.format != "gguf":
        raise BenchError(f"{model.id}:{variant.id} is {variant.format}; llama-server loads GGUF files")
    return store.resolve(model, variant)


def ctx_per_slot(req: ServeRequest) -> int:
    """Context per slot: the longest prompt plus the longest answer, rounded up to 256."""
    if req.ctx:
        return req.ctx
    prompt = req.prompt_tokens if req.prompts == "fixed" else 1536 + req.shared_prefix
    need = prompt + req.gen.hi + 16
    if req.task:
        need = max(need, 1536 + task_max_tokens(req))
    return -(-need // 256) * 256


# -- who may use the server ---------------------------------------------------------------------
def server_hosts(server_args: list[str]) -> list[str]:
    """The addresses llama-server listens on: the last ``--host`` among the extra arguments
    (comma-separated, as llama-server reads it), else 127.0.0.1."""
    hosts = "127.0.0.1"
    for i, arg in enumerate(server_args):
        if arg == "--host" and i + 1 < len(server_args):
            hosts = server_args[i + 1]
        elif arg.startswith("--host="):
            hosts = arg.split("=", 1)[1]
    return [h.strip() for h in hosts.split(",") if h.strip()] or ["127.0.0.1"]


@dataclass(frozen=True)
class Access:
    """How the suite reaches a server it starts, and with which key."""

    connect_host: str
    api_key: str | None
    api_key_source: str | None
    warning: str | None  # said once, and kept in every row's warnings


def server_access(server_args: list[str], api_key_env: str | None) -> Access:
    """A server that listens beyond loopback (``--server-arg --host``) gets an API key: the one in
    ``$api_key_env``, else one generated for this run (32 random bytes, URL-safe; handed to the server
    in its environment, never written anywhere). On loopback only, a key is passed when one is given."""
    import secrets

    hosts = server_hosts(server_args)
    exposed = [h for h in hosts if not is_loopback_host(h)]
    wildcard = next((h for h in hosts if h in ("0.0.0.0", "::")), None)
    loop = next((h for h in hosts if is_loopback_host(h)), None)
    connect = loop or ("::1" if wildcard == "::" else "127.0.0.1" if wildcard else hosts[0])
    key = os.environ.get(api_key_env) if api_key_env else None
    source = f"${api_key_env}" if key else None
    if exposed and key is None:
        key, source = secrets.token_urlsafe(32), "generated for this run (not written anywhere)"
    warning = None
    if exposed:
        warning = (f"llama-server listens on {', '.join(exposed)}, beyond loopback: every request needs its API key "
                   f"({source}); the key and the prompts travel unencrypted (HTTP), so keep the port on a private "
                   "network")
    return Access(connect, key, source, warning)


def url_warning(base: str, api_key: str | None, answered_without_key: bool) -> str | None:
    """One warning for a ``--url`` server beyond loopback: without a key, whether it answered anyway."""
    scheme, host, _, _ = parse_url(base)
    if is_loopback_host(host):
        return None
    if api_key is None:
        return (f"the server at {base} is not on loopback and no API key is given (--api-key-env VAR)"
                + (": it answered without one, so anyone who reaches it can use it" if answered_without_key else ""))
    if scheme == "http":
        return f"the API key goes to {host} unencrypted (http://): use https or a private network"
    return None


@contextlib.contextmanager
def open_target(req: ServeRequest, placement: Placement, log_path: Path, say: Say) -> Iterator[Opened]:
    if req.url is not None:
        yield probe_url(req)
        return
    from bench.native.tools import ToolBuildError, tool_build_info, tool_path

    resolved = _resolve_model(req)
    try:
        exe = tool_path("llama-server", say=say)
        build = tool_build_info("llama-server")
    except (ToolBuildError, RuntimeError) as exc:
        raise BenchError(f"llama-server: {exc}") from None
    alias = f"{resolved.model_id}:{resolved.variant_id}"
    parallel = req.parallel or max([*req.concurrency, req.max_in_flight or (8 if req.rates else 1)])
    access = server_access(req.server_args, req.api_key_env)
    spec = ServerSpec(exe=exe, model_path=resolved.path, alias=alias, threads=len(placement.server_cpus or [1]),
                      ctx_per_slot=ctx_per_slot(req), parallel=parallel, cpus=placement.server_cpus or [],
                      log_path=log_path, extra_args=req.server_args, connect_host=access.connect_host,
                      api_key=access.api_key)
    say(f"starting llama-server ({alias}, {spec.threads} thread(s) on CPUs {spec.cpus}, {parallel} slots of "
        f"{spec.ctx_per_slot} tokens); log: {log_path}")
    with ManagedServer(spec) as server:
        say(f"llama-server ready in {server.ready_s:.1f} s at {server.base_url}")
        target = Target(server.base_url, alias, req.api, access.api_key, "llama-server", managed=True,
                        api_key_source=access.api_key_source)
        info = {"command": server.command, "build": build, "log": str(log_path), "threads": spec.threads,
                "ctx_per_slot": spec.ctx_per_slot, "parallel": parallel, "kv_unified": False,
                "ready_s": server.ready_s, "props": _props(target), "listens_on": server_hosts(req.server_args)}
        model = {"id": resolved.model_id, "variant": resolved.variant_id, "path": str(resolved.path),
                 "sha256": resolved.sha256, "size_bytes": resolved.size_bytes, "quantization": resolved.quantization,
                 "check": resolved.check}
        yield Opened(target, info, model, server, [access.warning] if access.warning else [])


def _props(target: Target) -> dict[str, Any] | None:
    try:
        status, data = http_json(target.root + "/props", timeout_s=5.0, api_key=target.api_key)
    except HttpFailure:
        return None
    if status != 200 or not isinstance(data, dict):
        return None
    gen = data.get("default_generation_settings") or {}
    return {"build_info": data.get("build_info"), "total_slots": data.get("total_slots"),
            "n_ctx_per_slot": gen.get("n_ctx") if isinstance(gen, dict) else None}


def probe_url(req: ServeRequest) -> Opened:
    """Check the user's server before any load: reachable, the model known, llama-server or not."""
    assert req.url is not None
    base = req.url.rstrip("/")
    api_key = os.environ.get(req.api_key_env) if req.api_key_env else None
    try:
        status, data = http_json(base + "/models", timeout_s=10.0, api_key=api_key)
    except HttpFailure as exc:
        raise BenchError(f"cannot reach {base}: {exc.reason}") from None
    if status in (401, 403):
        raise BenchError(f"{base}/models answered HTTP {status}: the server wants an API key "
                         f"(--api-key-env VAR names the environment variable holding it)")
    names = [m.get("id") for m in data.get("data", []) if isinstance(m, dict)] if status == 200 and isinstance(
        data, dict) else None
    model = req.served_model
    if names is not None and model is None:
        if len(names) != 1:
            raise BenchError(f"--served-model is required: the server at {base} serves {', '.join(map(str, names))}")
        model = names[0]
    if model is None:
        raise BenchError(f"--served-model is required with --url ({base}/models gave no list: HTTP {status})")
    if names is not None and model not in names:
        raise BenchError(f"the server at {base} does not serve model {model!r}; it serves: "
                         f"{', '.join(map(str, names))}")
    target = Target(base, model, req.api, api_key, "openai-compatible", managed=False,
                    api_key_source=f"${req.api_key_env}" if api_key else None)
    props = _props(target)
    if props and props.get("build_info"):
        target = replace(target, server_kind="llama-server")
    info = {"models_listed": names, "models_status": status, "props": props,
            "note": "a server the user runs: the suite measured it as a client only"}
    warning = url_warning(base, api_key, answered_without_key=status == 200 and api_key is None)
    return Opened(target, info, {"served_model": model}, warnings=[warning] if warning else [])


# -- one load point -------------------------------------------------------------------------------
@dataclass
class Sweep:
    req: ServeRequest
    run_id: str
    opened: Opened
    factory: PromptFactory
    slo: sm.Slo
    placement: Placement
    common: dict[str, Any]
    ceiling: dict[str, Any] | None
    say: Say
    next_prompt: int = 0
    rows: list[ServingRow] = field(default_factory=list)

    def write(self, row: ServingRow) -> ServingRow:
        append_serving_row(self.req.output, row)
        self.rows.append(row)
        return row

    def jobs(self, n: int, salt: int, extra: dict[str, Any] | None = None) -> list[Job]:
        prompts = self.factory.prompts(self.next_prompt, n, salt)
        self.next_prompt += n
        rng = random.Random(f"{self.req.seed}:gen:{salt}")
        return [encode_job(self.opened.target, p, self.req.gen.draw(rng), not self.req.stop_at_eos, extra)
                for p in prompts]


def run_point(sw: Sweep, point: LoadPoint, index: int) -> ServingRow:
    target, server = sw.opened.target, sw.opened.server
    warnings: list[str] = []
    try:
        jobs = sw.jobs(point.warmup + point.requests, index)
    except (BenchError, HttpFailure) as exc:
        return _failed_point(sw, point, f"could not prepare the prompts: {exc}")
    send = default_sender(target, sw.req.request_timeout_s)
    grace = sw.req.request_timeout_s
    warm = run_phase(replace(point, requests=point.warmup), jobs[: point.warmup], send, grace) if point.warmup else None
    if warm is not None and warm.interrupted:
        row = _failed_point(sw, point, "interrupted (Ctrl-C or SIGTERM) during the warm-up; nothing was counted")
        row.warmup_requests = [t.to_dict() for t in warm.traces]
        return row
    before = scrape_metrics(target.root, target.api_key)
    reset = server.reset_peak_rss() if server else False
    res = run_phase(point, jobs[point.warmup:], send, grace)
    after = scrape_metrics(target.root, target.api_key)
    summary = sm.summarize_point(res.traces, sw.slo)
    client = client_block(point, res, summary, sw.ceiling)
    if not client["kept_up"]:
        warnings.append(client["kept_up_note"])
    if client.get("ceiling_share") and client["ceiling_share"] > 0.5:
        warnings.append(f"this point used {client['ceiling_share']:.0%} of the client's measured ceiling: the load "
                        "generator may be limiting it")
    warnings += res.notes
    status, reason = point_status(summary, server.death() if server else None)
    srv: dict[str, Any] = {"counters": counter_deltas(before, after)}
    if server is not None and server.alive():
        srv["memory"] = {**server.memory(), "peak_basis": "VmHWM reset at the point's start (after warm-up)" if reset
                         else "VmHWM since the server started"}
        srv["gpu"] = gpu_memory(server.proc.pid) if server.proc else None  # type: ignore[union-attr]
    if res.interrupted:
        status, reason = "failed", "interrupted (Ctrl-C or SIGTERM) during this point; its requests so far are kept"
    return ServingRow(run_id=sw.run_id, record="point", status=status, reason=reason, load=point.to_dict(),
                      client=client, summary=summary, server=srv, requests=[t.to_dict() for t in res.traces],
                      warmup_requests=[t.to_dict() for t in warm.traces] if warm else [],
                      warnings=warnings + sw.common["warnings"], **_common(sw))


def _common(sw: Sweep) -> dict[str, Any]:
    c = sw.common
    return {"target": c["target"], "workload": c["workload"], "placement": c["placement"], "model": c["model"],
            "profile": c["profile"], "environment": c["environment"], "definitions": sm.DEFINITIONS}


def _failed_point(sw: Sweep, point: LoadPoint, reason: str) -> ServingRow:
    return ServingRow(run_id=sw.run_id, record="point", status="failed", reason=reason, load=point.to_dict(),
                      warnings=list(sw.common["warnings"]), **_common(sw))


def point_status(summary: dict[str, Any], death: str | None) -> tuple[str, str | None]:
    errors = summary["errors"]
    detail = "; ".join(f"{k} x{v['count']}: {v['example']}" for k, v in errors.items())
    if death:
        return ("partial" if summary["ok"] else "failed"), f"{death}" + (f"; {detail}" if detail else "")
    if not summary["requests"]:
        return "failed", "no request was scheduled within the point's time"
    if not summary["ok"]:
        return "failed", f"no request completed: {detail}"
    if errors:
        return "partial", f"{summary['requests'] - summary['ok']} of {summary['requests']} requests failed: {detail}"
    return "ok", None


def client_block(point: LoadPoint, res: PhaseResult, summary: dict[str, Any],
                 ceiling: dict[str, Any] | None) -> dict[str, Any]:
    """The client's own state during the point: its CPU use, its ceiling, whether it kept up."""
    lag = summary["queue_time_s"] or {}
    tolerance = max(0.010, 0.1 / point.value) if point.mode == "rate" else 0.010
    not_sent = summary["errors"].get("not_sent", {}).get("count", 0)
    kept_up = not not_sent and (not lag or lag["p99"] <= tolerance)
    sched = [t.scheduled for t in res.traces]
    offered = (len(sched) - 1) / (max(sched) - min(sched)) if len(sched) > 1 and max(sched) > min(sched) else None
    out: dict[str, Any] = {
        "cpu_cores_used": res.client_cpu_share, "cpu_seconds": res.client_cpu_s, "phase_wall_s": res.wall_s,
        "kept_up": kept_up, "send_lag_tolerance_s": tolerance, "scheduled_rate_rps": offered,
        "achieved_send_rate_rps": summary["achieved_send_rate_rps"],
        "kept_up_note": None if kept_up else (
            f"the load generator fell behind: p99 queue time {lag.get('p99', 0) * 1e3:.1f} ms (tolerance "
            f"{tolerance * 1e3:.0f} ms; p99 send lag {(summary['send_lag_s'] or {}).get('p99', 0) * 1e3:.1f} ms, "
            f"the rest waiting for an in-flight slot), {not_sent} request(s) never sent; it offered "
            f"{summary['achieved_send_rate_rps'] or 0:.3g} requests/s, not the {point.label} asked"),
    }
    window = summary["window_s"]
    chunks = sum(len(t.chunk_times) for t in res.traces if t.status == "ok")
    if window:
        out["chunks_per_s"] = chunks / window
    if ceiling and ceiling.get("chunks_per_s") and window:
        out["ceiling_chunks_per_s"] = ceiling["chunks_per_s"]
        out["ceiling_share"] = chunks / window / ceiling["chunks_per_s"]
    return out


# -- the client's ceiling -------------------------------------------------------------------------
def measure_ceiling(concurrency: int, tokens: int, placement: Placement, log_path: Path,
                    seconds: float = 3.0) -> dict[str, Any]:
    """Requests and chunks per second this client sustains against a trivial streaming server on
    loopback (pinned to the server's CPUs), at the sweep's highest concurrency."""
    import psutil

    from bench.serving.stub import StubProcess

    with StubProcess("--mode", "ok", "--tokens", str(tokens), cpus=placement.server_cpus, log_path=log_path) as stub:
        target = Target(stub.base_url, "stub-model")
        job = encode_job(target, Prompt("Request 0: " + "word " * 96, None, None, "ceiling"), tokens, True)
        point = LoadPoint("concurrency", concurrency, 10**6, seconds)
        stub_cpu0 = psutil.Process(stub.proc.pid).cpu_times()
        res = run_phase(point, [job] * 10**6, default_sender(target, 30.0), grace_s=10.0)
        stub_cpu1 = psutil.Process(stub.proc.pid).cpu_times()
    summary = sm.summarize_point(res.traces, None)
    window = summary["window_s"] or res.wall_s
    chunks = sum(len(t.chunk_times) for t in res.traces if t.status == "ok")
    stub_cores = (stub_cpu1.user + stub_cpu1.system - stub_cpu0.user - stub_cpu0.system) / res.wall_s
    client_cores = res.client_cpu_share or 0.0
    return {"concurrency": concurrency, "tokens_per_request": tokens, "seconds": window,
            "requests_per_s": summary["request_throughput_rps"], "chunks_per_s": chunks / window if window else None,
            "errors": summary["errors"], "client_cpu_cores": client_cores, "stub_cpu_cores": stub_cores,
            "client_cpus": placement.client_cpus, "stub_cpus": placement.server_cpus,
            "limited_by": "client" if client_cores >= 0.9 * len(placement.client_cpus) else
            "stub server (so the client's ceiling is at least this)",
            "ttft_from_send_p50_s": (summary["ttft_from_send_s"] or {}).get("p50")}


# -- task accuracy under load ---------------------------------------------------------------------
def task_max_tokens(req: ServeRequest) -> int:
    from bench.quality.tasks import load_task

    assert req.task is not None
    return req.task_max_tokens or load_task(req.task).definition.defaults.max_new_tokens


def chat_template_of(sw: Sweep) -> Any:
    """The served model's chat template, for a task that prompts through it: read from the GGUF the
    suite started llama-server with, else from the server's /props (llama-server's); None if neither."""
    from bench.quality.runner import ChatTemplate

    path = (sw.opened.model or {}).get("path")
    if path:
        from bench.models.gguf_info import read_gguf_strings

        found = read_gguf_strings(Path(path), ("tokenizer.chat_template",)).get("tokenizer.chat_template")
        return ChatTemplate(found, source="the GGUF's tokenizer.chat_template") if found else None
    target = sw.opened.target
    try:
        status, data = http_json(target.root + "/props", timeout_s=5.0, api_key=target.api_key)
    except HttpFailure:
        return None
    found = data.get("chat_template") if status == 200 and isinstance(data, dict) else None
    return ChatTemplate(found, source="the server's /props chat_template") if found else None


def task_under_load(sw: Sweep, concurrency: int) -> ServingRow:
    """The same greedy task answers at concurrency 1 and at ``concurrency``: batching can change
    results, and this counts how many answers (and texts) changed. Prompts, stop sequences and
    scoring are the task runner's (bench.quality.runner), as in bench run; prompts go to the
    completions endpoint as text (a chat prompt rendered by the model's own template)."""
    from bench.quality.runner import TaskRun
    from bench.quality.tasks import load_task

    req = sw.req
    target = replace(sw.opened.target, api="completions")
    try:
        task = load_task(req.task or "gsm8k")
        shots = req.task_shots if req.task_shots is not None else task.definition.defaults.shots
        max_new = task_max_tokens(replace(req, task=task.spec))
        run = TaskRun(task, task.items(), shots=shots, limit=req.task_limit, max_new_tokens=max_new,
                      chat=chat_template_of(sw) if task.definition.prompt.prefer == "chat" else None)
        run.prepare()
    except BenchError as exc:
        return ServingRow(run_id=sw.run_id, record="task", status="failed", reason=str(exc), **_common(sw))
    prompts = run.prompts()
    extra = {"temperature": 0, "stop": run.stop, "seed": req.seed}
    jobs = [encode_job(target, Prompt(p.text, None, None, f"{task.name} #{p.index}"), max_new, False, extra)
            for p in prompts]
    send = default_sender(target, req.request_timeout_s, keep_text=True)
    levels: dict[str, Any] = {}
    raw: list[dict[str, Any]] = []
    for c in sorted({1, concurrency}):
        sw.say(f"task {task.name}: {len(jobs)} items at concurrency {c}")
        res = run_phase(LoadPoint("concurrency", c, len(jobs), req.timeout_s), jobs, send, req.request_timeout_s)
        by_index = {t.index: t for t in res.traces if t.status == "ok"}
        records = [run.score(p, by_index[i].text or "", generated_tokens=by_index[i].completion_tokens or max_new,
                             stopped_at_eos=by_index[i].finish_reason == "stop") if i in by_index else None
                   for i, p in enumerate(prompts)]
        correct = [bool(r and r["correct"]) for r in records]
        summary = sm.summarize_point(res.traces, None)
        levels[str(c)] = {"accuracy": sum(correct) / len(prompts), "correct": sum(correct), "items": len(prompts),
                          "errors": summary["errors"], "output_tps": summary["output_tps"],
                          "answers": [_answer(r) for r in records],
                          "_texts": [by_index[i].text if i in by_index else None for i in range(len(prompts))],
                          "_records": records}
        raw += [{**t.to_dict(), "concurrency": c} for t in res.traces]
        if res.interrupted:
            break
    return _task_row(sw, levels, raw, prompts, concurrency, run)


def _answer(record: dict[str, Any] | None) -> Any:
    """What is compared between concurrency levels: the extracted answer, or the executed program's
    outcome (passed, or the kind of failure)."""
    if record is None:
        return None
    if "predicted" in record:
        return record["predicted"]
    return "passed" if record["correct"] else record.get("error_kind")


def _task_row(sw: Sweep, levels: dict[str, Any], raw: list[dict[str, Any]], prompts: list[Any],
              concurrency: int, run: Any) -> ServingRow:
    one, many = levels.get("1"), levels.get(str(concurrency))
    texts = {k: v.pop("_texts") for k, v in levels.items()}
    records = {k: v.pop("_records") for k, v in levels.items()}
    out: dict[str, Any] = {"task": run.task.name, "items": len(prompts), **run.describe(),
                           "max_tokens": run.max_new_tokens, "sampling": "greedy (temperature 0)",
                           "concurrency": concurrency, "at": levels}
    status, reason = "ok", None
    if one is None or many is None or one is many:
        status, reason = ("failed", "interrupted") if many is None else ("ok", None)
    else:
        n = len(prompts)
        changed = [i for i in range(n) if one["answers"][i] != many["answers"][i]]
        out["answers_changed"] = len(changed)
        out["texts_changed"] = sum(texts["1"][i] != texts[str(concurrency)][i] for i in range(n))
        out["accuracy_change"] = many["accuracy"] - one["accuracy"]
        out["changed_items"] = [{"item": prompts[i].index, "gold": (records["1"][i] or {}).get("gold"),
                                 "at_1": one["answers"][i], f"at_{concurrency}": many["answers"][i]} for i in changed]
    if any(v["errors"] for v in levels.values()):
        status, reason = "partial", "some task requests failed: " + "; ".join(
            f"c={k}: {', '.join(v['errors'])}" for k, v in levels.items() if v["errors"])
    return ServingRow(run_id=sw.run_id, record="task", status=status, reason=reason, summary=out, requests=raw,
                      warnings=list(sw.common["warnings"]), **_common(sw))


# -- the same workload in process ----------------------------------------------------------------
def in_process(req: ServeRequest, placement: Placement, run_id: str, say: Say) -> dict[str, Any]:
    """``bench run``'s cell for the same model, lengths and threads (a child process pinned to the
    server's cores), through the suite's one orchestration path; its row is appended to
    ``<output>.inprocess.jsonl``."""
    from bench.orchestrate import plan_request, run_plans
    from bench.request import RunRequest

    threads = len(placement.server_cpus or [1])
    rr = RunRequest(models=[req.model] if req.model else [], profiles=[req.profile],
                    prompt_tokens=[req.prompt_tokens], gen_tokens=[req.gen.lo], threads=[threads], repetitions=5,
                    warmup=1, seed=req.seed)
    (plan,) = plan_request(rr, req.catalog_path, req.profiles_dir)
    say(f"in process (bench run): {plan.config.model_id}:{plan.config.variant_id}, {threads} thread(s), "
        f"p={req.prompt_tokens} n={req.gen.lo}, 5 repetitions")
    path = req.output.with_suffix(".inprocess.jsonl")
    (row,) = run_plans([plan], path).rows
    s = row.summary
    return {"status": row.status, "reason": row.reason, "file": str(path), "threads": threads,
            "cpus": plan.caps.get("cpus"), "ttft_s": s.mean("ttft_s"), "tpot_s": s.mean("tpot_s"),
            "decode_tps": s.mean("decode_tps"), "e2e_s": s.mean("e2e_s"), "basis": "mean of 5 repetitions, batch 1"}


# -- the sweep's summary --------------------------------------------------------------------------
def point_holds(row: ServingRow, share: float) -> bool:
    return row.status != "failed" and sm.goodput_holds(row.summary, share) and bool(row.client.get("kept_up"))


def _pct(d: dict[str, Any] | None, key: str = "p50") -> float | None:
    return d.get(key) if d else None


def point_where(r: ServingRow) -> tuple[bool, str]:
    """(whether the point's speed is the tier's, whose speed it is in words): a server on this host
    under a tier's threads runs at this host's speed (bench.serving.rows.ServingRecord.basis)."""
    from dataclasses import asdict

    from bench.serving.rows import ServingRecord

    rec = ServingRecord(asdict(r))
    return rec.measured, rec.where_label


def summary_row(sw: Sweep, points: list[ServingRow], extra: dict[str, Any]) -> ServingRow:
    share = sw.req.goodput_share
    measured, where = point_where(points[0]) if points else (True, "")
    # $ at the tier's price only from the tier's own speed: an emulated point's speed is this host's
    price = sw.common["profile"].get("usd_per_hour") if measured else None
    table = [{"mode": r.load.get("mode"), "load": r.load.get("value"), "status": r.status,
              "requests": r.summary.get("requests"), "ok": r.summary.get("ok"),
              "request_throughput_rps": r.summary.get("request_throughput_rps"),
              "output_tps": r.summary.get("output_tps"), "ttft_p50_s": _pct(r.summary.get("ttft_s")),
              "ttft_p99_s": _pct(r.summary.get("ttft_s"), "p99"), "tpot_p50_s": _pct(r.summary.get("tpot_s")),
              "itl_p50_s": _pct(r.summary.get("itl_s")), "e2e_p99_s": _pct(r.summary.get("e2e_s"), "p99"),
              "goodput_share": (r.summary.get("goodput") or {}).get("share"),
              "goodput_rps": (r.summary.get("goodput") or {}).get("goodput_rps"),
              "kept_up": r.client.get("kept_up"), "holds": point_holds(r, share),
              "prompt_cached_share": (r.summary.get("cache") or {}).get("cached_share"),
              "usd_per_1m_output_tokens": sm.usd_per_million_output(price, r.summary.get("output_tps"))}
             for r in points]
    best: dict[str, Any] = {}
    for mode in ("concurrency", "rate"):
        rows = [t for t in table if t["mode"] == mode]
        if not rows:
            continue
        load = sm.max_sustainable([(t["load"], t["holds"]) for t in rows])
        at = next((t for t in rows if t["load"] == load), None)
        one = next((t for t in rows if t["load"] == 1), None) if mode == "concurrency" else None
        best[mode] = {"max_sustainable_load": load, "output_tps": at and at["output_tps"],
                      "usd_per_1m_output_tokens": sm.usd_per_million_output(price, at and at["output_tps"]),
                      "usd_per_1m_output_tokens_at_concurrency_1": sm.usd_per_million_output(
                          price, one and one["output_tps"])}
    rule = (f"the largest load L such that every measured point at or below L had at least {share:.0%} of its "
            f"counted requests meet {sw.slo.source}, with the client on schedule; $ per 1M output tokens = "
            f"$/hour / (output tok/s at L x 3600) x 1e6")
    failed = [r for r in points if r.status != "ok"]
    status = "ok" if not failed else ("failed" if len(failed) == len(points) else "partial")
    usd_why = None if measured else (f"emulated: the points ran on {where}, at this host's speed, not the tier's; "
                                     "no $ at the tier's price from it")
    return ServingRow(run_id=sw.run_id, record="sweep", status=status,
                      reason=f"{len(failed)} of {len(points)} point(s) not ok" if failed else None,
                      summary={"points": table, "max_sustainable": best, "rule": rule, "price": sw.common["profile"],
                               "measured_on": where, "usd_unavailable": usd_why, **extra},
                      client={"ceiling": sw.ceiling}, warnings=list(sw.common["warnings"]), **_common(sw))


# -- the whole sweep ------------------------------------------------------------------------------
def _run_points(sw: Sweep, points: list[LoadPoint], started: float) -> None:
    stop: str | None = None
    for i, point in enumerate(points):
        if time.monotonic() - started > sw.req.timeout_s:
            stop = stop or f"not run: the sweep's --timeout of {sw.req.timeout_s:g} s had passed"
        if stop:
            sw.write(_failed_point(sw, point, stop if stop.startswith("not run") else f"not run: {stop}"))
            continue
        sw.say(f"[{i + 1}/{len(points)}] {point.label}: {point.warmup} warm-up + up to {point.requests} requests, "
               f"at most {point.duration_s:g} s")
        row = sw.write(run_point(sw, point, i))
        s = row.summary
        sw.say(f"  {row.status}: {s.get('ok', 0)}/{s.get('requests', 0)} ok, "
               f"{s.get('request_throughput_rps') or 0:.3g} req/s, {s.get('output_tps') or 0:.3g} output tok/s, "
               f"TTFT p50 {(_pct(s.get('ttft_s')) or 0) * 1e3:.0f} ms" + (f" ({row.reason})" if row.reason else ""))
        if row.reason and row.reason.startswith("interrupted"):
            raise KeyboardInterrupt
        server = sw.opened.server
        if server is not None and not server.alive():
            stop = server.death()
        elif row.status == "failed" and s.get("errors") and all(k in CONNECTION_KINDS for k in s["errors"]):
            stop = f"the server stopped answering at {point.label} ({', '.join(s['errors'])})"


def run_sweep(req: ServeRequest, say: Say) -> list[ServingRow]:
    """Measure every load point; rows are appended to ``req.output`` as they complete."""
    from bench.hardware.profiles import detect_host, get_profile
    from bench.measuring.environment import capture_environment

    validate(req)
    points = load_points(req)
    host = detect_host()
    profile = get_profile(req.profile, req.profiles_dir, host)
    slo = slo_from_claims(req.claims_path, req.slo_ttft_s, req.slo_tpot_s)
    host_cpus = sorted(os.sched_getaffinity(0))
    url_host = parse_url(req.url)[1] if req.url else None
    placement = plan_placement(req.threads or profile.capacity.threads, host_cpus, req.url is None, req.server_cpus,
                               req.client_cpus, url_host)
    warnings = [placement.warning] if placement.warning else []
    run_id = uuid.uuid4().hex[:12]
    log_path = req.output.parent / f"{req.output.stem}.{run_id}.llama-server.log"
    environment = capture_environment(host)
    price = profile.price.hourly_usd() if profile.price else None
    prof = {"id": profile.id, "name": profile.name, "usd_per_hour": price,
            "basis": profile.price.basis if profile.price else None}
    started = time.monotonic()
    os.sched_setaffinity(0, placement.client_cpus)
    extra: dict[str, Any] = {}
    try:
        with open_target(req, placement, log_path, say) as opened:
            warnings += opened.warnings
            for w in warnings:
                say(f"warning: {w}")
            ceiling = _ceiling(req, placement, points, log_path, say, warnings)
            factory = PromptFactory(opened.target, req.prompts, req.prompt_tokens, req.corpus, req.seed,
                                    shared_prefix=req.shared_prefix)
            workload = {"prompts": factory.describe(), "gen_tokens": req.gen.describe(),
                        "ignore_eos": not req.stop_at_eos, "seed": req.seed, "endpoint": opened.target.request_path}
            common = {"target": {**opened.target.describe(), **opened.info}, "workload": workload,
                      "placement": placement.to_dict(), "model": opened.model, "profile": prof,
                      "environment": environment, "warnings": warnings}
            sw = Sweep(req, run_id, opened, factory, slo, placement, common, ceiling, say)
            _run_points(sw, points, started)
            if req.task:
                task = sw.write(task_under_load(sw, max(req.concurrency or [4])))
                extra["task"] = {k: v for k, v in task.summary.items() if k != "at"}
    finally:
        os.sched_setaffinity(0, host_cpus)
    if req.in_process:
        extra["in_process"] = in_process(req, placement, run_id, say)
        extra["in_process"]["server_at_concurrency_1"] = _server_c1(sw.rows)
    sw.write(summary_row(sw, [r for r in sw.rows if r.record == "point"], extra))
    return sw.rows


def _ceiling(req: ServeRequest, placement: Placement, points: list[LoadPoint], log_path: Path, say: Say,
             warnings: list[str]) -> dict[str, Any] | None:
    if not req.ceiling:
        return None
    c = max([int(p.value) for p in points if p.mode == "concurrency"] + [16 if req.rates else 1])
    say(f"measuring the client's own ceiling against a trivial streaming server (concurrency {c}, 3 s)")
    try:
        ceiling = measure_ceiling(c, req.gen.hi, placement, log_path.with_suffix(".stub.log"))
    except Exception as exc:  # the ceiling is context, not the measurement: say why it is missing
        warnings.append(f"the client's ceiling could not be measured: {type(exc).__name__}: {exc}")
        return None
    say(f"  client ceiling: {ceiling['requests_per_s'] or 0:.0f} requests/s, {ceiling['chunks_per_s'] or 0:.0f} "
        f"chunks/s (client {ceiling['client_cpu_cores']:.2f} cores, limited by the {ceiling['limited_by']})")
    return ceiling


def _server_c1(rows: list[ServingRow]) -> dict[str, Any] | None:
    row = next((r for r in rows if r.record == "point" and r.load.get("mode") == "concurrency"
                and r.load.get("value") == 1), None)
    if row is None:
        return None
    s = row.summary
    return {"ttft_p50_s": _pct(s.get("ttft_s")), "tpot_p50_s": _pct(s.get("tpot_s")),
            "e2e_p50_s": _pct(s.get("e2e_s")), "output_tps": s.get("output_tps")}
