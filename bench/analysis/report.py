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
from typing import TYPE_CHECKING

from bench.analysis.flat import COLUMNS, flatten, interval_missing, tier_label, where_label
from bench.fileio import atomic_path, atomic_write_text
from bench.fmt import fmt
from bench.results.kinds import Basis, MachineVerdict, SpeedBasis, parse_speed_basis
from bench.results.schema import Row
from bench.results.serving import ServingRow

if TYPE_CHECKING:
    from bench.hardware.profiles import Profile

# What the summary tables show: (header, flat column, format). Every column is in CSV/SQLite.
# "measured on" says whose speed a row's measured columns are: the tier's, or HOST under the tier's
# caps (the host's speed); the tier's own speed and cost are the "tier" columns, labelled PROJECTED
# where projected, and "-" with why where not known (``tier_cell``).
DISPLAY: tuple[tuple[str, str, str], ...] = (
    ("model", "model", "s"), ("variant", "variant", "s"), ("backend", "backend", "s"),
    ("measured on", "measured_on", "s"), ("host", "host", "s"), ("basis", "basis", "s"),
    ("speed basis", "speed_basis", "s"), ("thr", "threads", "d"), ("p", "prompt_tokens", "d"), ("n", "gen_tokens", "d"),
    ("status", "status", "s"), ("load s", "load_time_s", ".2f"), ("TTFT ms", "ttft_s_mean", "ms"),
    ("prefill tok/s", "prefill_tps_mean", ".1f"), ("decode tok/s", "decode_tps_mean", ".1f"),
    ("± std", "decode_tps_std", ".1f"), ("tier decode tok/s", "tier_decode_tps", "tier:.1f"),
    ("ITL p50 ms", "itl_s_p50", "ms"), ("ITL p99 ms", "itl_s_p99", "ms"),
    ("peak RSS MiB", "peak_rss_bytes", "mib"), ("fits", "fits", "bool"), ("PPL", "perplexity", ".2f"),
    ("KLD", "kld_mean", ".4f"), ("same top", "same_top_token", "pct"), ("task acc", "task_accuracy", "pct"),
    ("tier $/1M tok", "usd_per_1m_output_tokens", "tier:.3g"), ("J/tok", "energy_j_per_token", ".3g"),
)


def cell_text(f: dict, key: str, spec: str) -> str:
    """One table cell of a flat record: ``spec`` as bench.fmt's, or ``tier:SPEC`` for the tier's own
    speed or cost: the value, with "PROJECTED" where it is a projection, or "-" with why."""
    if not spec.startswith("tier:"):
        return fmt(f[key], spec)
    if f["status"] != "ok":
        return "-"
    kind = parse_speed_basis(f["speed_basis"])
    if f[key] is None:
        return f"- ({f['speed_basis']})" if kind is SpeedBasis.CAPS_ONLY else "-"
    projected = kind is not SpeedBasis.MEASURED
    return fmt(f[key], spec[5:]) + (" PROJECTED" if projected else "")
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
    serving: list[ServingRow] = field(default_factory=list)  # bench serve's records (points, sweeps, tasks)
    # the tiers a task's time and $ per correct answer are projected onto (bench report: every priced profile)
    profiles: dict[str, Profile] = field(default_factory=dict)
    generated_at: str = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))

    def ordered(self) -> list[Row]:
        return sorted(self.rows, key=lambda r: (r.config.model_id, r.config.variant_id, r.config.backend,
                                                tier_label(r), r.config.prompt_tokens, r.created_at))

    def provenance(self) -> str:
        hosts = sorted({r.host for r in self.rows} | {s.host for s in self.serving})
        runs = sorted({r.run_id for r in self.rows} | {s.run_id for s in self.serving})
        when = sorted([r.created_at for r in self.rows] + [s.created_at for s in self.serving])
        n_points = sum(s.record == "point" for s in self.serving)
        serving = (f" and {n_points} serving point(s) ({len(self.serving) - n_points} sweep/task record(s) "
                   "beside them)" if self.serving else "")
        return (f"{len(self.rows)} row(s){serving} from {len(self.sources)} file(s), {len(runs)} run(s) on "
                f"{len(hosts)} host(s) ({', '.join(hosts)}), measured {when[0]} to {when[-1]}")

    def pareto(self) -> list[str]:
        """The same fronts as the speed-quality plot (bench.analysis.plots.quality_groups)."""
        from bench.analysis.plots import pareto_front, quality_groups, speed_tag

        metric, groups = quality_groups(self.rows)
        loss = "KLD" if metric == "kld_mean" else "task error"
        out = []
        for name, pts in groups.items():
            front = pareto_front([(x, y) for _, x, y in pts])
            out.append(f"{name}: " + ", ".join(
                f"{pts[i][0].config.variant_id}/{pts[i][0].config.backend} "
                f"({pts[i][1]:.1f} tok/s{speed_tag(pts[i][0])}, {loss} {pts[i][2]:.4f})"
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
    lines += ["## Results", ""] + (["| " + " | ".join(h for h, _, _ in columns) + " |", "|" + "---|" * len(columns)]
                                   if report.rows else ["No bench run rows (single stream) among the results."])
    for r in report.ordered():
        f = flatten(r)
        lines.append("| " + " | ".join(_md_escape(cell_text(f, k, spec)) for _, k, spec in columns) + " |")
    failed = [r for r in report.ordered() if r.status != "ok"]
    if failed:
        lines += ["", "## Cells that did not complete", ""]
        lines += [f"- {r.config.model_id}:{r.config.variant_id} {r.config.backend} on {where_label(r)}: "
                  f"**{r.status}**: {_md_escape(r.reason or '')}" for r in failed]
    front = report.pareto()
    if front:
        lines += ["", "## Pareto front: decode speed vs quality loss", "",
                  "Decode speed on the tier: measured on it, or PROJECTED (an emulated tier's own speed is the "
                  "host's and is not used); cells whose tier speed is not known are left out.", ""]
        lines += [f"- {x}" for x in front]
    lines += tier_speed_lines(report)
    lines += task_markdown(report)
    lines += serving_markdown(report)
    return "\n".join(lines) + "\n"


# The serving table: (header, flat serving column, format); "single-stream $/1M" is the matching
# bench run row's cost (``single_stream_cost``).
SERVING_DISPLAY: tuple[tuple[str, str, str], ...] = (
    ("model", "model", "s"), ("variant", "variant", "s"), ("measured on", "measured_on", "s"), ("basis", "basis", "s"),
    ("workload", "workload", "s"), ("mode", "mode", "s"), ("load", "load", "g"), ("status", "status", "s"),
    ("ok/n", "ok", "d"), ("req/s", "request_throughput_rps", ".3g"), ("out tok/s", "output_tps", ".1f"),
    ("TTFT p50 ms", "ttft_s_p50", "ms"), ("TTFT p99 ms", "ttft_s_p99", "ms"), ("TPOT p50 ms", "tpot_s_p50", "ms"),
    ("ITL p50 ms", "itl_s_p50", "ms"), ("e2e p50 ms", "e2e_s_p50", "ms"), ("goodput req/s", "goodput_rps", ".3g"),
    ("goodput share", "goodput_share", "pct"), ("$/1M out", "usd_per_1m_output_tokens", ".3g"),
)
SERVING_NOTE = ("One line per load point (newest of each); \"measured on\" names whose speed it is (the tier's own, or "
                "HOST under the tier's threads: the host's speed, not the tier's). TTFT, TPOT, ITL and e2e as in "
                "docs/METRICS.md \"Serving\" "
                "(latency from the scheduled time); out tok/s and req/s over the point's window. $/1M out = the "
                "tier's $/hour / (out tok/s x 3600) x 1e6 at that load, blank without a price or where the speed "
                "is this host's under the tier's threads (basis emulated); single-stream $/1M is the bench run row "
                "of the same model, variant and tier (its own basis), for the cost of serving one user at a time.")


def single_stream_cost(p: ServingRow, rows: Sequence[Row]) -> str:
    """The matching bench run row's $ per 1M output tokens, and which row it is."""
    from bench.analysis.serving import single_stream_match

    r = single_stream_match(p, rows)
    if r is None:
        return "-"
    f = flatten(r)
    label = f"{f['speed_basis']}: PROJECTION" if r.speed_kind is SpeedBasis.PROJECTED else f["speed_basis"]
    return f"{fmt(f['usd_per_1m_output_tokens'], '.3g')} ({r.config.backend} p={r.config.prompt_tokens} " \
           f"n={r.config.gen_tokens}, {label})"


def _serving_cells(p: ServingRow, rows: Sequence[Row]) -> list[str]:
    from bench.analysis.serving import flatten_point

    f = flatten_point(p)
    cells = [fmt(f[k], spec) for _, k, spec in SERVING_DISPLAY]
    cells[[k for _, k, _ in SERVING_DISPLAY].index("ok")] = f"{fmt(f['ok'], 'd')}/{fmt(f['requests'], 'd')}"
    return cells + [single_stream_cost(p, rows)]


def serving_markdown(report: Report) -> list[str]:
    """The "Serving under load" section: every load point, and the points that did not complete."""
    from bench.analysis.serving import latest_points

    pts = latest_points(report.serving)
    if not pts:
        return []
    heads = [h for h, _, _ in SERVING_DISPLAY] + ["single-stream $/1M"]
    lines = ["", "## Serving under load", "", SERVING_NOTE, "", "| " + " | ".join(heads) + " |",
             "|" + "---|" * len(heads)]
    lines += ["| " + " | ".join(_md_escape(c) for c in _serving_cells(p, report.rows)) + " |" for p in pts]
    bad = [p for p in pts if p.status != "ok"]
    if bad:
        lines += ["", "Load points that did not complete:", ""]
        lines += [f"- {_md_escape(p.label())}: **{p.status}**: {_md_escape(p.reason or '')}" for p in bad]
    return lines


INTERVAL_NOTE = ("The interval is where real machines the model was not fitted on fell (10th-90th percentile of "
                 "measured/projected, leave one machine out, per device class and basis); the value is corrected by "
                 "the same band's median, so it lies inside its interval (docs/performance-model.md).")


def interval_text(low: float | None, high: float | None, spec: str, why: str | None) -> str:
    """``low-high``; an end that is not known reads "unavailable (why)", never 0 or infinity."""
    if low is not None and high is not None:
        return f"{format(low, spec)}-{format(high, spec)}"
    missing = f"unavailable ({why or 'not known'})"
    if low is None and high is None:
        return missing
    return f"{format(low, spec)}-{missing}" if low is not None else f"{missing}-{format(high, spec)}"


def tier_speed_lines(report: Report) -> list[str]:
    """Rows run under an emulated tier's caps: their speed is the host's, so the tier's speed is a
    PROJECTION (with its interval) or unknown ("caps only")."""
    emulated = [r for r in report.ordered() if r.status == "ok" and r.speed_kind is not SpeedBasis.MEASURED]
    if not emulated:
        return []
    lines = ["", "## Speed on emulated tiers: projections, not measurements", "",
             "A tier emulated on another machine (its threads and RAM capped) measures fit; its speed there is "
             "the host's. The tier's speed is projected by the performance model (docs/performance-model.md; "
             "bench/projection) from the model's shape and the tier's own published results or sourced "
             "figures (nothing of this host), with the interval the model reached on published measurements of "
             "real machines. "
             + INTERVAL_NOTE, ""]
    for r in emulated:
        f = flatten(r)
        cell = f"{r.config.model_id}:{r.config.variant_id} {r.config.backend} on {tier_label(r)}"
        if f["projected_decode_tps"] is None:
            lines.append(f"- {cell}: **{f['speed_basis']}** (speed on the tier not known)")
            continue
        ttft = (f", TTFT {f['projected_ttft_s']:.2f} s" if f["projected_ttft_s"] is not None else "")
        band = interval_text(f["projected_decode_tps_low"], f["projected_decode_tps_high"], ".1f",
                             interval_missing(r, "decode_tps"))
        lines.append(f"- {cell}: decode {f['projected_decode_tps']:.1f} tok/s (interval {band}){ttft}: PROJECTION, "
                     f"{f['speed_basis']}")
    return lines


TASK_NOTE = ("Accuracy (exact match, or pass@1 where answers are executed) with its binomial standard error "
             "sqrt(p(1-p)/n). Time is the task pass's generation measured on the machine that ran it (its own tier, "
             "or HOST under an emulated tier's caps: the host's time; few-shot prefix kept in the KV cache between "
             "items where the backend can). On other tiers (and on an emulated row's own), time and $ per correct "
             "answer are PROJECTIONS, not measurements: the items' token counts at the tier's projected prefill and "
             "decode speeds, scaled by the median over items of measured time over the same at this row's measured "
             "speeds (bench.projection.tier.task_cost_on_tier), with the projection's interval; $ = the tier's "
             "$/hour x time / 3600 / correct answers. " + INTERVAL_NOTE)
TASK_TIER_HEADS = ("tier", "$/hour", "s per item", "s per item interval", "$ per correct answer", "interval")


def task_rows(report: Report) -> list[tuple[Row, str, list[list[str]]]]:
    """Each row with a task pass: (row, its measured summary, one table line per priced tier)."""
    from bench.analysis.flat import latest_per_cell
    from bench.projection.tier import task_cost_on_tier

    out = []
    for r in latest_per_cell(report.ordered()):
        t = r.task
        if not (r.status == "ok" and t.items):  # a pass cut short by its timeout keeps its finished items
            continue
        reused = sum(x.get("prompt_tokens_reused", 0) for x in t.records or [])
        prompt = sum(x.get("prompt_tokens", 0) for x in t.records or [])
        energy = (f"{t.energy_j_per_correct:.0f} J per correct answer" if t.energy_j_per_correct is not None
                  else f"energy {t.energy_source or 'not read'}")
        if r.basis is not Basis.MEASURED:
            usd = "no $ at the tier's price from this host's time (the tier's: the projections below)"
        else:
            usd = (f"${t.usd_per_correct:.3g} per correct answer at the tier's price" if t.usd_per_correct is not None
                   else "no $ on this tier (no price)")
        cut = "" if t.ok else f" (**{t.status}**: only the {t.items} item(s) finished before it)"
        machine = MachineVerdict.of(t.machine_state, t.reason)
        if machine.disturbed:
            cut += f" ({machine.label}: its time is not this tier's alone)"
        if t.truncated:
            cut += (f" ({t.truncated} answer(s) cut off at {t.max_new_tokens or '?'} tokens, counted as not correct: "
                    f"{fmt(t.accuracy_answered, 'pct')} of those answered)")
        if t.reasoning_tokens:
            cut += f" (reasoning {t.reasoning_tokens} of {t.generated_tokens} generated tokens)"
        summary = (f"{r.config.model_id}:{r.config.variant_id} {r.config.backend} on {where_label(r)}: {t.name}{cut} "
                   f"{t.metric or 'accuracy'} {fmt(t.accuracy, 'pct')} ± {fmt(t.accuracy_se, 'pct')} "
                   f"({t.correct}/{t.items}); "
                   f"{fmt(t.seconds, '.0f')} s measured ({t.seconds / t.items:.1f} s per item, "
                   f"{fmt(reused / prompt if prompt else None, 'pct')} of prompt tokens from the cache), "
                   f"{fmt(t.seconds_per_correct, '.1f')} s per correct answer; {energy}; {usd}")
        lines = []
        for profile in report.profiles.values():
            if (profile.id == r.config.profile_id and r.basis is Basis.MEASURED) or not profile.price:
                continue  # the tier the row measured its time on needs no projection
            c = task_cost_on_tier(r, profile)
            if "seconds" not in c:
                lines.append([profile.id, fmt(profile.price.hourly_usd(), '.3g'), "-", "-", "-", c["why"]])
                continue
            per = c["items"]
            fast, slow = c["seconds_interval"]
            usd_low, usd_high = c.get("usd_per_correct_interval") or [None, None]
            lines.append([profile.id, fmt(c.get("usd_per_hour"), ".3g"), f"{c['seconds'] / per:.1f}",
                          interval_text(fast and fast / per, slow and slow / per, ".1f", c.get("interval_why")),
                          fmt(c.get("usd_per_correct"), ".3g"),
                          interval_text(usd_low, usd_high, ".3g", c.get("why_no_usd") or (
                              "no correct answer" if c.get("usd_per_correct") is None else None))])
        out.append((r, summary, lines))
    return out


def task_markdown(report: Report) -> list[str]:
    """The "Task accuracy" section: accuracy, time, energy and $ per correct answer, measured on the
    row's tier and projected onto every priced tier."""
    found = task_rows(report)
    if not found:
        return []
    lines = ["", "## Task accuracy: time and $ per correct answer", "", TASK_NOTE]
    for _, summary, table in found:
        lines += ["", f"- {_md_escape(summary)}"]
        if table:
            lines += ["", "| " + " | ".join(TASK_TIER_HEADS) + " |", "|" + "---|" * len(TASK_TIER_HEADS)]
            lines += ["| " + " | ".join(_md_escape(c) for c in cells) + " |" for cells in table]
    return lines


def task_html(report: Report) -> list[str]:
    e = html.escape
    found = task_rows(report)
    if not found:
        return []
    parts = ['<h2 id="tasks">Task accuracy: time and $ per correct answer</h2>', f'<p class="small">{e(TASK_NOTE)}</p>']
    for _, summary, table in found:
        parts.append(f"<p>{e(summary)}</p>")
        if table:
            parts.append("<table><thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in TASK_TIER_HEADS)
                         + "</tr></thead><tbody>" + "".join(
                             "<tr>" + "".join(f"<td>{e(c)}</td>" for c in cells) + "</tr>" for cells in table)
                         + "</tbody></table>")
    return parts


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
    from bench.analysis.plots import PLOTS, SERVING_PLOTS

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
    # the serving plots only where the results hold bench serve records: a page of bench run rows is as before
    plots = [make(report.rows) for make in PLOTS] + [make(report.serving) for make in SERVING_PLOTS
                                                     if report.serving]
    for plot in plots:
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
        cells = "".join(f'<td{" class=s" if spec == "s" else ""}>{e(cell_text(f, k, spec))}</td>'
                        for _, k, spec in columns)
        parts.append(f'<tr{cls} title="{e(r.reason or "")}">{cells}</tr>')
    parts.append("</tbody></table>")
    failed = [r for r in report.ordered() if r.status != "ok"]
    if failed:
        parts.append("<h2>Cells that did not complete</h2><ul>" + "".join(
            f"<li>{e(r.config.model_id)}:{e(r.config.variant_id)} {e(r.config.backend)} on {e(where_label(r))}: "
            f"<b>{e(r.status)}</b>: {e(r.reason or '')}</li>" for r in failed) + "</ul>")
    parts += task_html(report)
    parts += serving_html(report)
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def serving_html(report: Report) -> list[str]:
    from bench.analysis.serving import latest_points

    e = html.escape
    pts = latest_points(report.serving)
    if not pts:
        return []
    heads = [h for h, _, _ in SERVING_DISPLAY] + ["single-stream $/1M"]
    parts = ['<h2 id="serving">Serving under load</h2>', f'<p class="small">{e(SERVING_NOTE)}</p>',
             "<table><thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in heads) + "</tr></thead><tbody>"]
    for p in pts:
        specs = [spec for _, _, spec in SERVING_DISPLAY] + ["s"]
        cells = "".join(f'<td{" class=s" if spec == "s" else ""}>{e(c)}</td>'
                        for c, spec in zip(_serving_cells(p, report.rows), specs, strict=True))
        parts.append(f'<tr{" class=bad" if p.status != "ok" else ""} title="{e(p.reason or "")}">{cells}</tr>')
    parts.append("</tbody></table>")
    return parts


# -- writers ----------------------------------------------------------------------------------
# Each writes its file and returns any other file it wrote beside it.
def write_markdown(report: Report, path: Path) -> list[Path]:
    atomic_write_text(path, markdown(report))
    return []


def write_html(report: Report, path: Path) -> list[Path]:
    atomic_write_text(path, html_page(report))
    return []


def write_csv(report: Report, path: Path) -> list[Path]:
    """``STEM.csv``, one line per bench run row; and ``STEM-serving.csv``, one per serving load
    point, where the results hold any (columns: bench.analysis.serving.SERVING_COLUMNS)."""
    from bench.analysis.serving import SERVING_COLUMNS, flatten_point, points

    with atomic_path(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=[c.name for c in COLUMNS])
        w.writeheader()
        for r in report.ordered():
            w.writerow(flatten(r))
    pts = points(report.serving)
    if not pts:
        return []
    serving = path.with_name(f"{path.stem}-serving.csv")
    with atomic_path(serving) as tmp, tmp.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=[c.name for c in SERVING_COLUMNS])
        w.writeheader()
        for p in pts:
            w.writerow(flatten_point(p))
    return [serving]


SAMPLE_COLUMNS = ("ttft_s", "prefill_tps", "decode_tps", "tpot_s", "e2e_s", "generated_tokens", "energy_j_per_token")


def write_sqlite(report: Report, path: Path) -> list[Path]:
    """Tables ``rows`` (one flat record per row, plus the full row as JSON), ``samples`` (one per
    counted repetition, with raw token timestamps) and ``columns`` (what each column means); and
    ``serving`` (one flat record per load point, plus the full row), ``serving_requests`` (one per
    counted request, with its chunk stamps) and ``serving_columns``."""
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
            _sqlite_serving(con, report.serving)
            con.commit()
        finally:
            con.close()
    return []


REQUEST_COLUMNS = ("ttft", "e2e", "tpot", "queue_time", "output_tokens")


def _sqlite_serving(con: sqlite3.Connection, records: Sequence[ServingRow]) -> None:
    from bench.analysis.serving import SERVING_COLUMNS, flatten_point, points
    from bench.serving import metrics as sm

    types = {"text": "TEXT", "real": "REAL", "integer": "INTEGER"}
    con.execute("CREATE TABLE serving (id INTEGER PRIMARY KEY, "
                + ", ".join(f'"{c.name}" {types[c.kind]}' for c in SERVING_COLUMNS) + ", row_json TEXT NOT NULL)")
    con.execute("CREATE TABLE serving_requests (point_id INTEGER REFERENCES serving(id), request INTEGER, "
                "status TEXT, " + ", ".join(f"{k}_s REAL" if k != "output_tokens" else f"{k} INTEGER"
                                            for k in REQUEST_COLUMNS) + ", chunk_times_json TEXT)")
    con.execute("CREATE TABLE serving_columns (name TEXT PRIMARY KEY, kind TEXT, doc TEXT)")
    con.executemany("INSERT INTO serving_columns VALUES (?, ?, ?)", [(c.name, c.kind, c.doc) for c in SERVING_COLUMNS])
    names = ", ".join(f'"{c.name}"' for c in SERVING_COLUMNS)
    insert = f"INSERT INTO serving ({names}, row_json) VALUES ({', '.join('?' * (len(SERVING_COLUMNS) + 1))})"
    for p in points(records):
        f = flatten_point(p)
        cur = con.execute(insert, [f[c.name] for c in SERVING_COLUMNS] + [json.dumps(p.to_dict())])
        con.executemany(f"INSERT INTO serving_requests VALUES (?, ?, ?, {', '.join('?' * len(REQUEST_COLUMNS))}, ?)",
                        [(cur.lastrowid, t.index, t.status, *(getattr(sm, k)(t) for k in REQUEST_COLUMNS),
                          json.dumps(t.chunk_times)) for t in p.traces()])


def write_jsonl(report: Report, path: Path) -> list[Path]:
    """The merged rows and serving records, each once, as a results file other commands read."""
    lines = [(r.created_at, r.to_json()) for r in report.rows]
    lines += [(s.created_at, s.to_json()) for s in report.serving]
    atomic_write_text(path, "".join(line + "\n" for _, line in sorted(lines, key=lambda x: x[0])))
    return []


@dataclass(frozen=True)
class Writer:
    suffix: str
    write: Callable[[Report, Path], list[Path]]


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
        written += [path, *WRITERS[name].write(report, path)]
    return written
