"""Human-readable tables (rich) of result rows, catalog entries and profiles."""

from __future__ import annotations

import sys
from collections.abc import Iterable

from rich.console import Console
from rich.table import Table

from bench.fmt import fmt
from bench.results.schema import Row
from bench.results.sections import Quality, Stats, Task


def console(stderr: bool = False) -> Console:
    """A terminal keeps its width; a pipe or log file gets wide rows instead of wrapped cells."""
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else 200)


def narrow_console(width: int = 120) -> Console:
    """stdout at most ``width`` columns (a terminal narrower than that keeps its own width): tables
    that must be read, not scrolled."""
    tty_width = Console().width if sys.stdout.isatty() else width
    return Console(width=min(width, tty_width))


def _mean_std(stat: Stats | None, spec: str = ".1f", scale: float = 1.0) -> str:
    if stat is None or stat.mean is None:
        return "-"
    std = f" ± {fmt(stat.std, spec, scale)}" if stat.std is not None else ""
    return f"{fmt(stat.mean, spec, scale)}{std}"


def _quality_cells(q: Quality) -> tuple[str, str, str]:
    if not q:
        return "-", "-", "-"
    if not q.ok:
        return f"[red]{q.status}[/red]", "-", "-"
    return (fmt(q.perplexity, ".2f"), fmt(q.kld.mean if q.kld else None, ".4f"), fmt(q.same_top_token, "pct"))


def _task_cell(t: Task) -> str:
    if not t:
        return "-"
    if not t.ok:
        return f"[red]{t.status}[/red]"
    return f"{fmt(t.accuracy, 'pct')} ± {fmt(t.accuracy_se, 'pct')} (n={t.items})"


def results_table(rows: Iterable[Row]) -> Table:
    """One line per row. "measured on" names whose speed the timing columns are (the tier's own, or
    HOST under the tier's caps: the host's); "tier decode" is the tier's speed: measured on it, or
    PROJECTED, or "-" (caps only: not known)."""
    from bench.analysis.flat import flatten, where_label
    from bench.analysis.report import cell_text

    t = Table(title="Benchmark results (mean ± sample std over counted repetitions; timings on the machine named "
                    "in 'measured on')")
    for col in ("model", "variant", "backend", "measured on", "thr", "p/n (@depth)", "status", "load s", "TTFT ms",
                "prefill tok/s", "decode tok/s", "tier decode tok/s", "ITL p50/p99 ms", "peak RSS MiB", "PPL", "KLD",
                "same top", "task acc"):
        # a cell's identity is never folded mid-name; the figures fold where the terminal is narrow
        t.add_column(col, overflow="fold", no_wrap=col in ("model", "variant", "backend"))
    for r in rows:
        c, s = r.config, r.summary
        itl_txt = f"{fmt(s.itl_s.p50, '.1f', 1e3)}/{fmt(s.itl_s.p99, '.1f', 1e3)}" if s.itl_s else "-"
        status = r.status if r.status == "ok" else f"[red]{r.status}[/red]: {r.reason or ''}"
        t.add_row(c.model_id, c.variant_id, c.backend, where_label(r), str(c.threads),
                  f"{c.prompt_tokens}/{c.gen_tokens}" + (f" @{c.depth}" if c.depth else ""), status,
                  fmt(r.load_time_s, ".2f"),
                  _mean_std(s.ttft_s, ".0f", 1e3), _mean_std(s.prefill_tps), _mean_std(s.decode_tps),
                  cell_text(flatten(r), "tier_decode_tps", "tier:.1f"),
                  itl_txt, fmt(r.memory.peak_rss_bytes, "mib"), *_quality_cells(r.quality), _task_cell(r.task))
    return t
