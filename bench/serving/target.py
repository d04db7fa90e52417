"""The server a sweep measures: llama-server started by the suite (model resolved, pinned to its
CPUs, reached with a key when it listens beyond loopback), or the user's OpenAI-compatible server
at ``--url`` (probed before any load: reachable, the model known, llama-server or not)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bench.errors import BenchError
from bench.request import ServeRequest, parse_url, server_hosts
from bench.results.serving import ServingModel, ServingTarget
from bench.serving.client import HttpFailure, Target, http_json, is_loopback_host
from bench.serving.placement import Placement
from bench.serving.plan import ctx_per_slot
from bench.serving.server import ManagedServer, ServerSpec

Say = Callable[[str], None]


@dataclass
class Opened:
    """The server as reached: the client's target, what the rows record of it, and the process
    when the suite started it."""

    target: Target
    info: ServingTarget  # the target as the rows record it (with a managed server's command, build, log...)
    model: ServingModel
    server: ManagedServer | None = None
    warnings: list[str] = field(default_factory=list)  # about who may use the server: said once


def resolve_gguf(spec: str | None, catalog_path: Path) -> Any:
    """The GGUF file llama-server loads for ``spec`` (catalog ID[:VARIANT], or a path; None: the
    catalog's default model), fetched and checked: the one model resolver, bench.models.resolve."""
    from bench.models.resolve import resolve_spec
    from bench.models.store import ModelStore

    return resolve_spec(spec, catalog_path, ModelStore(), formats=("gguf",), loader="llama-server")[0]


# -- who may use the server ---------------------------------------------------------------------
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

    resolved = resolve_gguf(req.model, req.catalog_path)
    try:
        exe = tool_path("llama-server", say=say)
        build = tool_build_info("llama-server")
    except (ToolBuildError, RuntimeError) as exc:
        raise BenchError(f"llama-server: {exc}") from None
    alias = f"{resolved.model_id}:{resolved.variant_id}"
    parallel = req.parallel or max([*req.concurrency, req.max_in_flight or (8 if req.rates else 1)])
    access = server_access(req.server_args, req.api_key_env)
    spec = ServerSpec(exe=exe, model_path=resolved.path, alias=alias, threads=placement.server_threads,
                      ctx_per_slot=ctx_per_slot(req), parallel=parallel, cpus=placement.server_cpus or [],
                      log_path=log_path, extra_args=req.server_args, connect_host=access.connect_host,
                      api_key=access.api_key)
    say(f"starting llama-server ({alias}, {spec.threads} thread(s) on CPUs {spec.cpus}, {parallel} slots of "
        f"{spec.ctx_per_slot} tokens); log: {log_path}")
    with ManagedServer(spec) as server:
        say(f"llama-server ready in {server.ready_s:.1f} s at {server.base_url}")
        target = Target(server.base_url, alias, req.api, access.api_key, "llama-server", managed=True,
                        api_key_source=access.api_key_source)
        info = ServingTarget.from_dict({
            **target.describe(), "command": server.command, "build": build, "log": str(log_path),
            "threads": spec.threads, "ctx_per_slot": spec.ctx_per_slot, "parallel": parallel, "kv_unified": False,
            "ready_s": server.ready_s, "props": props(target), "listens_on": server_hosts(req.server_args)})
        model = ServingModel(id=resolved.model_id, variant=resolved.variant_id, path=str(resolved.path),
                             sha256=resolved.sha256, size_bytes=resolved.size_bytes,
                             quantization=resolved.quantization, check=resolved.check)
        yield Opened(target, info, model, server, [access.warning] if access.warning else [])


def props(target: Target) -> dict[str, Any] | None:
    """llama-server's /props (its build, slots and context per slot), None from another server."""
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
    found = props(target)
    if found and found.get("build_info"):
        target = replace(target, server_kind="llama-server")
    info = ServingTarget.from_dict({**target.describe(), "models_listed": names, "models_status": status,
                                    "props": found, "note": "a server the user runs: the suite measured it as a "
                                                            "client only"})
    warning = url_warning(base, api_key, answered_without_key=status == 200 and api_key is None)
    return Opened(target, info, ServingModel(served_model=model), warnings=[warning] if warning else [])


