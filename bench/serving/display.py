"""What ``bench serve`` prints: one table row per load point, then the sweep's conclusions."""

from __future__ import annotations

from typing import Any

from bench.results.serving import ServingRow


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1e3:.0f}"


def _num(v: float | None, spec: str = ".3g") -> str:
    return "-" if v is None else format(v, spec)


def _sweep(rows: list[ServingRow]) -> ServingRow | None:
    return next((r for r in rows if r.record == "sweep"), None)


def points_table(rows: list[ServingRow]) -> Any:
    from rich.table import Table

    sweep = _sweep(rows)
    s = sweep.sweep_summary if sweep else None
    where = (s.measured_on if s else None) or "?"
    t = Table(title=f"bench serve on {where}: one row per load point (TTFT/TPOT/ITL in ms; goodput = share meeting "
                    "both SLOs)")
    for col in ("load", "status", "ok/n", "req/s", "out tok/s", "TTFT p50", "TTFT p99", "TPOT p50", "ITL p50",
                "e2e p99", "goodput", "prompt cached", "client kept up", "holds", "$/1M out"):
        t.add_column(col, overflow="fold")
    for p in (s.points or [] if s else []):
        t.add_row(p.load_label, p.status, f"{p.ok or 0}/{p.requests or 0}", _num(p.request_throughput_rps),
                  _num(p.output_tps), _ms(p.ttft_p50_s), _ms(p.ttft_p99_s), _ms(p.tpot_p50_s),
                  _ms(p.itl_p50_s), _ms(p.e2e_p99_s), _num(p.goodput_share, ".0%"),
                  _num(p.prompt_cached_share, ".0%"),
                  {True: "yes", False: "NO"}.get(p.kept_up, "-"), "yes" if p.holds else "no",  # type: ignore[arg-type]
                  _num(p.usd_per_1m_output_tokens, ".4g"))
    return t


def conclusions(rows: list[ServingRow]) -> list[str]:
    sweep = _sweep(rows)
    if sweep is None:
        return []
    s = sweep.sweep_summary
    lines = [f"rule: {s.rule}"]
    price = s.price or sweep.profile
    where = s.measured_on or price.id
    if s.usd_unavailable:
        lines.append(f"speed: {s.usd_unavailable}")
    for mode, b in (s.max_sustainable or {}).items():
        unit = "concurrency" if mode == "concurrency" else "requests/s"
        if b.max_sustainable_load is None:
            lines.append(f"{mode}: even the lightest load point failed the rule (no $ at a sustainable load; the "
                         "table's $/1M is each point's, whatever its latency)")
            continue
        cost = b.usd_per_1m_output_tokens
        line = (f"{mode}: largest sustainable load {b.max_sustainable_load:g} {unit} on {where}, "
                f"{_num(b.output_tps)} output tok/s")
        if cost is not None:
            line += f", ${cost:.4g} per 1M output tokens at {price.id}'s ${price.usd_per_hour:.4g}/hour"
            one = b.usd_per_1m_output_tokens_at_concurrency_1
            if one:
                line += f" (at concurrency 1: ${one:.4g}, {one / cost:.2g}x as much)"
        elif s.usd_unavailable:
            line += " (no $: this host's speed, not the tier's)"
        else:
            line += f" (no $: profile {price.id} has no price)"
        lines.append(line)
    ceiling = sweep.sweep_client.ceiling
    if ceiling:
        lines.append(f"client ceiling (trivial streaming server, concurrency {ceiling.concurrency}): "
                     f"{_num(ceiling.requests_per_s)} requests/s, {_num(ceiling.chunks_per_s)} chunks/s, "
                     f"limited by the {ceiling.limited_by}")
    ip = s.in_process
    if ip:
        srv = ip.server_at_concurrency_1 or {}
        lines.append(f"in process (bench run, {ip.threads} thread(s)): TTFT {_ms(ip.ttft_s)} ms, TPOT "
                     f"{_ms(ip.tpot_s)} ms; through the server at concurrency 1: TTFT {_ms(srv.get('ttft_p50_s'))} "
                     f"ms, TPOT {_ms(srv.get('tpot_p50_s'))} ms (p50)")
    task = s.task
    if task and task.compared:
        lines.append(f"task {task.task}: {task.answers_changed} of {task.items} answers changed at "
                     f"concurrency {task.concurrency} vs 1 (accuracy change {task.accuracy_change:+.1%}; "
                     f"{task.texts_changed} texts differ)")
    for w in dict.fromkeys(w for r in rows for w in r.warnings):
        lines.append(f"warning: {w}")
    return lines
