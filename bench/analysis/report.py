"""``bench report``: results files (from one machine or several) into Markdown, a self-contained
HTML page with plots, CSV, SQLite and merged JSON lines. Writers are a registry: a new format is
one function and one entry in ``WRITERS``.
"""

from __future__ import annotations

import csv
import datetime as dt
import html
import json
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.analysis.flat import COLUMNS, flatten, tier_label
from bench.fileio import atomic_path, atomic_write_text
from bench.fmt import fmt
from bench.results.schema import Row

# What the summary tables show: (header, flat column, format). Every column is in CSV/SQLite.
DISPLAY: tuple[tuple[str, str, str], ...] = (
    ("model", "model", "s"), ("variant", "variant", "s"), ("backend", "backend", "s"), ("tier", "tier", "s"),
    ("host", "host", "s"), ("basis", "basis", "s"), ("speed basis", "speed_basis", "s"), ("thr", "threads", "d"),
    ("p", "prompt_tokens", "d"), ("n", "gen_tokens", "d"),
    ("status", "status", "s"), ("load s", "load_time_s", ".2f"), ("TTFT ms", "ttft_s_mean", "ms"),
    ("prefill tok/s", "prefill_tps_mean", ".1f"), ("decode tok/s", "decode_tps_mean", ".1f"),
    ("± std", "decode_tps_std", ".1f"), ("projected decode tok/s", "projected_decode_tps", ".1f"),
    ("ITL p50 ms", "itl_s_p50", "ms"), ("ITL p99 ms", "itl_s_p99", "ms"),
    ("peak RSS MiB", "peak_rss_bytes", "mib"), ("fits", "fits", "bool"), ("PPL", "perplexity", ".2f"),
    ("KLD", "kld_mean", ".4f"), ("same top", "same_top_token", "pct"), ("task acc", "task_accuracy", "pct"),
    ("$/1M tok", "usd_per_1m_output_tokens", ".3g"), ("J/tok", "energy_j_per_token", ".3g"),
)
# Beside tok/s when the rows hold several models: tokens are not a common unit across vocabularies.
TEXT_COLUMNS = (("prefill B/s", "prefill_text_bps_mean", ".0f"), ("decode B/s", "decode_text_bps_mean", ".0f"))


def display_columns(rows: Sequence[Row]) -> tuple[tuple[str, str, str], ...]:
    """The table's columns: text throughput (UTF-8 bytes/s) is added when models differ."""
    if len({r.config.model_id for r in rows}) < 2:
        return DISPLAY
    at = next(i for i, (_, key, _) in enumerate(DISPLAY) if key == "decode_tps_std") + 1
    return DISPLAY[:at] + TEXT_COLUMNS + DISPLAY[at:]


@dataclass
class Report:
    rows: list[Row]
    sources: list[str]
    warnings: list[str] = field(default_factory=list)
    generated_at: str = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))

    def ordered(self) -> list[Row]:
        return sorted(self.rows, key=lambda r: (r.config.model_id, r.config.variant_id, r.config.backend,
                                                tier_label(r), r.config.prompt_tokens, r.created_at))

    def provenance(self) -> str:
        hosts = sorted({r.host for r in self.rows})
        runs = sorted({r.run_id for r in self.rows})
        when = sorted(r.created_at for r in self.rows)
        return (f"{len(self.rows)} row(s) from {len(self.sources)} file(s), {len(runs)} run(s) on "
                f"{len(hosts)} host(s) ({', '.join(hosts)}), measured {when[0]} to {when[-1]}")

    def pareto(self) -> list[str]:
        """The same fronts as the speed-quality plot (bench.analysis.plots.quality_groups)."""
        from bench.analysis.plots import pareto_front, quality_groups

        metric, groups = quality_groups(self.rows)
        loss = "KLD" if metric == "kld_mean" else "task error"
        out = []
        for name, pts in groups.items():
            front = pareto_front([(x, y) for _, x, y in pts])
            out.append(f"{name}: " + ", ".join(
                f"{pts[i][0].config.variant_id}/{pts[i][0].config.backend} "
                f"({pts[i][1]:.1f} tok/s, {loss} {pts[i][2]:.4f})"
                for i in front))
        return out


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(report: Report) -> str:
    lines = ["# Benchmark report", "", f"Generated {report.generated_at}: {report.provenance()}.", "",
             "Metric definitions: docs/METRICS.md (TTFT = t1 - t0; decode tok/s = (n - 1) / (tn - t1); "
             "ITL percentiles pooled over repetitions). The plots are in the HTML report.", ""]
    if report.warnings:
        lines += [f"## Warnings ({len(report.warnings)})", ""] + [f"- {_md_escape(w)}" for w in report.warnings] + [""]
    columns = display_columns(report.rows)
    lines += ["## Results", "", "| " + " | ".join(h for h, _, _ in columns) + " |",
              "|" + "---|" * len(columns)]
    for r in report.ordered():
        f = flatten(r)
        lines.append("| " + " | ".join(_md_escape(fmt(f[k], spec)) for _, k, spec in columns) + " |")
    failed = [r for r in report.ordered() if r.status != "ok"]
    if failed:
        lines += ["", "## Cells that did not complete", ""]
        lines += [f"- {r.config.model_id}:{r.config.variant_id} {r.config.backend} on {tier_label(r)}: "
                  f"**{r.status}**: {_md_escape(r.reason or '')}" for r in failed]
    front = report.pareto()
    if front:
        lines += ["", "## Pareto front: decode speed vs quality loss", ""] + [f"- {x}" for x in front]
    lines += tier_speed_lines(report)
    return "\n".join(lines) + "\n"


def tier_speed_lines(report: Report) -> list[str]:
    """Rows run under an emulated tier's caps: their speed is the host's, so the tier's speed is a
    PROJECTION (with its interval) or unknown ("caps only")."""
    emulated = [r for r in report.ordered() if r.status == "ok" and flatten(r)["speed_basis"] != "measured"]
    if not emulated:
        return []
    lines = ["", "## Speed on emulated tiers: projections, not measurements", "",
             "A tier emulated on another machine (its threads and RAM capped) measures fit; its speed there is "
             "the host's. The tier's speed is projected by the performance model (README, \"The performance "
             "model\"; bench/hardware/perfmodel.py) from the host's measured efficiency and the tier's sourced "
             "figures, with the interval the model reached on published measurements of real machines.", ""]
    for r in emulated:
        f = flatten(r)
        cell = f"{r.config.model_id}:{r.config.variant_id} {r.config.backend} on {tier_label(r)}"
        if f["projected_decode_tps"] is None:
            lines.append(f"- {cell}: **{f['speed_basis']}** (speed on the tier not known)")
            continue
        ttft = (f", TTFT {f['projected_ttft_s']:.2f} s" if f["projected_ttft_s"] is not None else "")
        high = f"{f['projected_decode_tps_high']:.1f}" if f["projected_decode_tps_high"] else "?"
        lines.append(f"- {cell}: decode {f['projected_decode_tps']:.1f} tok/s (interval "
                     f"{f['projected_decode_tps_low']:.1f}-{high}){ttft}: PROJECTION, {f['speed_basis']}")
    return lines


HTML_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1200px;color:#222;
padding:0 1rem}
h1{font-size:1.6rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
table{border-collapse:collapse;font-size:.78rem;width:100%}
th,td{border:1px solid #ddd;padding:.2rem .35rem;text-align:right}
th{background:#f4f4f4;position:sticky;top:0}td.s{text-align:left}tr.bad td{background:#fff1f0}
figure{margin:1rem 0 2rem 0}figure svg{max-width:100%;height:auto}figcaption{font-size:.85rem;color:#555}
.warn{background:#fff8e1;border-left:4px solid #f0ad4e;padding:.4rem .8rem;font-size:.85rem}
.missing{color:#a00;font-style:italic}.small{font-size:.85rem;color:#555}
"""


def html_page(report: Report) -> str:
    from bench.analysis.plots import PLOTS

    e = html.escape
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             "<title>Benchmark report</title>", f"<style>{HTML_STYLE}</style></head><body>",
             "<h1>Benchmark report</h1>",
             f'<p class="small">Generated {e(report.generated_at)}: {e(report.provenance())}. Sources: '
             f"{e(', '.join(report.sources))}. Metric definitions: docs/METRICS.md.</p>"]
    if report.warnings:
        parts.append('<div class="warn"><b>Warnings</b><ul>' + "".join(f"<li>{e(w)}</li>" for w in report.warnings)
                     + "</ul></div>")
    parts.append("<h2>Plots</h2>")
    for make in PLOTS:
        plot = make(report.rows)
        parts.append(f'<figure id="plot-{plot.id}" data-plot="{plot.id}"><h3>{e(plot.title)}</h3>')
        if plot.svg:
            parts.append(plot.svg)
            parts.append(f"<figcaption>{e(plot.caption)}</figcaption>")
        else:
            parts.append(f'<p class="missing">Not plotted: {e(plot.why_not or "")}</p>')
        parts.append("</figure>")
    columns = display_columns(report.rows)
    parts += ["<h2>Results</h2>", "<table><thead><tr>" + "".join(f"<th>{e(h)}</th>" for h, _, _ in columns)
              + "</tr></thead><tbody>"]
    for r in report.ordered():
        f = flatten(r)
        cls = ' class="bad"' if r.status != "ok" else ""
        cells = "".join(f'<td{" class=s" if spec == "s" else ""}>{e(fmt(f[k], spec))}</td>' for _, k, spec in columns)
        parts.append(f'<tr{cls} title="{e(r.reason or "")}">{cells}</tr>')
    parts.append("</tbody></table>")
    failed = [r for r in report.ordered() if r.status != "ok"]
    if failed:
        parts.append("<h2>Cells that did not complete</h2><ul>" + "".join(
            f"<li>{e(r.config.model_id)}:{e(r.config.variant_id)} {e(r.config.backend)} on {e(tier_label(r))}: "
            f"<b>{e(r.status)}</b>: {e(r.reason or '')}</li>" for r in failed) + "</ul>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


# -- writers ----------------------------------------------------------------------------------
def write_markdown(report: Report, path: Path) -> None:
    atomic_write_text(path, markdown(report))


def write_html(report: Report, path: Path) -> None:
    atomic_write_text(path, html_page(report))


def write_csv(report: Report, path: Path) -> None:
    with atomic_path(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=[c.name for c in COLUMNS])
        w.writeheader()
        for r in report.ordered():
            w.writerow(flatten(r))


SAMPLE_COLUMNS = ("ttft_s", "prefill_tps", "decode_tps", "tpot_s", "e2e_s", "generated_tokens", "energy_j_per_token")


def write_sqlite(report: Report, path: Path) -> None:
    """Tables ``rows`` (one flat record per row, plus the full row as JSON), ``samples`` (one per
    counted repetition, with raw token timestamps) and ``columns`` (what each column means)."""
    with atomic_path(path) as tmp:
        types = {"text": "TEXT", "real": "REAL", "integer": "INTEGER"}
        con = sqlite3.connect(tmp)
        try:
            con.execute("CREATE TABLE rows (id INTEGER PRIMARY KEY, "
                        + ", ".join(f'"{c.name}" {types[c.kind]}' for c in COLUMNS) + ", row_json TEXT NOT NULL)")
            con.execute("CREATE TABLE samples (row_id INTEGER REFERENCES rows(id), repetition INTEGER, "
                        + ", ".join(f"{k} REAL" for k in SAMPLE_COLUMNS) + ", token_times_json TEXT)")
            con.execute("CREATE TABLE columns (name TEXT PRIMARY KEY, kind TEXT, doc TEXT)")
            con.executemany("INSERT INTO columns VALUES (?, ?, ?)", [(c.name, c.kind, c.doc) for c in COLUMNS])
            names = ", ".join(f'"{c.name}"' for c in COLUMNS)
            insert_row = f"INSERT INTO rows ({names}, row_json) VALUES ({', '.join('?' * (len(COLUMNS) + 1))})"
            for r in report.ordered():
                f = flatten(r)
                cur = con.execute(insert_row, [f[c.name] for c in COLUMNS] + [r.to_json()])
                con.executemany(f"INSERT INTO samples VALUES (?, ?, {', '.join('?' * len(SAMPLE_COLUMNS))}, ?)",
                                [(cur.lastrowid, i, *(s.get(k) for k in SAMPLE_COLUMNS),
                                  json.dumps(s.get("token_times")))
                                 for i, s in enumerate(r.samples)])
            con.commit()
        finally:
            con.close()


def write_jsonl(report: Report, path: Path) -> None:
    """The merged rows, each once, as a results file other commands read."""
    atomic_write_text(path, "".join(r.to_json() + "\n" for r in sorted(report.rows, key=lambda r: r.created_at)))


@dataclass(frozen=True)
class Writer:
    suffix: str
    write: Callable[[Report, Path], None]


WRITERS: dict[str, Writer] = {
    "md": Writer(".md", write_markdown),
    "html": Writer(".html", write_html),
    "csv": Writer(".csv", write_csv),
    "sqlite": Writer(".sqlite", write_sqlite),
    "jsonl": Writer(".jsonl", write_jsonl),
}
DEFAULT_FORMATS = ("md", "html", "csv", "sqlite")


def write_report(report: Report, out_dir: Path, formats: Sequence[str], stem: str = "report") -> list[Path]:
    from bench.errors import BenchError

    unknown = [f for f in formats if f not in WRITERS]
    if unknown:
        raise BenchError(f"unknown report format {unknown[0]!r}; choose from {', '.join(WRITERS)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name in formats:
        path = out_dir / f"{stem}{WRITERS[name].suffix}"
        WRITERS[name].write(report, path)
        written.append(path)
    return written
