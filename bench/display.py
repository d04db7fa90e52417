"""Human-readable tables (rich) of result rows, catalog entries and profiles."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.results.schema import Row


def console(stderr: bool = False) -> Console:
    """A terminal keeps its width; a pipe or log file gets wide rows instead of wrapped cells."""
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else 200)


def _fmt(v: float | None, spec: str = ".1f", scale: float = 1.0) -> str:
    return "-" if v is None else format(v * scale, spec)


def _mean_std(summary: dict[str, Any], key: str, spec: str = ".1f", scale: float = 1.0) -> str:
    s = summary.get(key)
    if not s:
        return "-"
    std = f" ± {_fmt(s['std'], spec, scale)}" if s.get("std") is not None else ""
    return f"{_fmt(s['mean'], spec, scale)}{std}"


def _quality_cells(q: dict[str, Any]) -> tuple[str, str, str]:
    if not q:
        return "-", "-", "-"
    if q.get("status") != "ok":
        return f"[red]{q.get('status')}[/red]", "-", "-"
    kld = q.get("kld") or {}
    same = q.get("same_top_token")
    return (_fmt(q.get("perplexity"), ".2f"), _fmt(kld.get("mean"), ".4f"),
            "-" if same is None else f"{same:.1%}")


def _task_cell(t: dict[str, Any]) -> str:
    if not t:
        return "-"
    if t.get("status") != "ok":
        return f"[red]{t.get('status')}[/red]"
    return f"{t['accuracy']:.1%} ± {t['accuracy_se']:.1%} (n={t['items']})"


def results_table(rows: Iterable[Row]) -> Table:
    t = Table(title="Benchmark results (mean ± sample std over counted repetitions)")
    for col in ("model", "variant", "backend", "profile", "thr", "p/n", "status", "load s", "TTFT ms",
                "prefill tok/s", "decode tok/s", "ITL p50/p99 ms", "peak RSS MiB", "PPL", "KLD", "same top", "task acc"):
        t.add_column(col, overflow="fold")
    for r in rows:
        c, s = r.config, r.summary
        itl = s.get("itl_s") or {}
        itl_txt = f"{_fmt(itl.get('p50'), '.1f', 1e3)}/{_fmt(itl.get('p99'), '.1f', 1e3)}" if itl else "-"
        status = r.status if r.status == "ok" else f"[red]{r.status}[/red]: {r.reason or ''}"
        peak = r.memory.get("peak_rss_bytes")
        t.add_row(c.model_id, c.variant_id, c.backend, c.profile_id, str(c.threads),
                  f"{c.prompt_tokens}/{c.gen_tokens}", status, _fmt(r.load_time_s, ".2f"),
                  _mean_std(s, "ttft_s", ".0f", 1e3), _mean_std(s, "prefill_tps"), _mean_std(s, "decode_tps"),
                  itl_txt, _fmt(peak, ".0f", 1 / 2**20) if peak else "-", *_quality_cells(r.quality),
                  _task_cell(r.task))
    return t
