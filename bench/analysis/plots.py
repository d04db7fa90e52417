"""The report's plots, drawn with matplotlib and returned as inline SVG text (a report page needs
no network and no image files). Each function returns a ``Plot``: the SVG, or why there is none.
"""

from __future__ import annotations

import io
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from bench.analysis.flat import (
    flatten,
    latest_per_cell,
    projected,
    reference_of,
    reference_variants,
    tier_decode_tps,
    tier_label,
    where_label,
)
from bench.results.schema import Row
from bench.results.serving import Goodput, ServingRow

GiB = 2**30
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
           "#7f7f7f", "#bcbd22")


@dataclass(frozen=True)
class Plot:
    id: str
    title: str
    caption: str
    svg: str | None = None
    why_not: str | None = None  # set when there was nothing to plot


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "bench", "font.size": 9,
                                "axes.spines.top": False, "axes.spines.right": False})
    import matplotlib.pyplot as plt

    return plt


def _svg(fig) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    _pyplot().close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]


def series_label(r: Row) -> str:
    return f"{r.config.model_id}:{r.config.variant_id} ({r.config.backend})"


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of points not dominated when x is to be maximized and y minimized."""
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any((x2 >= x and y2 <= y) and (x2 > x or y2 < y) for j, (x2, y2) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def quality_groups(rows: Sequence[Row]) -> tuple[str, dict[str, list[tuple[Row, float, float]]]]:
    """(metric, {group: [(row, decode tok/s, loss)]}): the points of the speed-quality plot and
    of the report's Pareto list. One group per model, tier and reference variant (KLDs against
    different references are not comparable); the newest row of each cell; a reference at KLD 0.
    Where no row has a KLD, task error (1 - accuracy) per model and tier. The speed is the tier's:
    measured on it, or PROJECTED onto it (an emulated row's own speed is this host's, never the
    tier's); a row whose tier speed is not known (caps only) is left out."""
    ok = [r for r in latest_per_cell(list(rows)) if r.status == "ok" and tier_decode_tps(r)[0]]
    refs = reference_variants(list(rows))
    groups: dict[str, list[tuple[Row, float, float]]] = defaultdict(list)
    for r in ok:
        f, ref, speed = flatten(r), reference_of(r, refs), tier_decode_tps(r)[0] or 0.0
        if ref is None or (f["kld_mean"] is None and ref != r.config.variant_id):
            continue
        label = f"{r.config.model_id} on {tier_label(r)} (vs {ref})"
        groups[label].append((r, speed, f["kld_mean"] or 0.0))
    if groups:
        return "kld_mean", dict(sorted(groups.items()))
    for r in ok:
        f = flatten(r)
        if f["task_accuracy"] is not None:
            groups[f"{r.config.model_id} on {tier_label(r)}"].append(
                (r, tier_decode_tps(r)[0] or 0.0, 1 - f["task_accuracy"]))
    return "task_error", dict(sorted(groups.items()))


def speed_tag(r: Row) -> str:
    """" PROJECTED" beside a tier speed that is a projection, "" beside a measured one."""
    return "" if tier_decode_tps(r)[1] == "measured" else " PROJECTED"


def speed_vs_quality(rows: Sequence[Row]) -> Plot:
    """Decode tok/s against KLD from the reference (or task error where no KLD), Pareto front per
    model and tier: the variants worth running there."""
    pid, title = "speed-quality", "Decode speed vs quality loss"
    metric, groups = quality_groups(rows)
    if not groups:
        return Plot(pid, title, "", why_not="no row has both decode tok/s and a quality measurement "
                    "(run with --quality or --task)")
    label = ("KLD from the reference (nats, lower is better; the reference is 0)" if metric == "kld_mean"
             else "task error rate (1 - accuracy, lower is better)")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    on_front = n_points = 0
    for gi, (name, pts) in enumerate(groups.items()):
        color = PALETTE[gi % len(PALETTE)]
        xy = [(x, y) for _, x, y in pts]
        n_points += len(xy)
        ax.scatter([p[0] for p in xy], [p[1] for p in xy], s=28, color=color, label=name, zorder=3)
        front = pareto_front(xy)
        on_front += len(front)
        # the boundary of what the front dominates: up at each point, then across to the next
        ax.step([xy[i][0] for i in front], [xy[i][1] for i in front], where="pre", color=color, lw=1.2, ls="--",
                zorder=2)
        ax.scatter([xy[i][0] for i in front], [xy[i][1] for i in front], s=80, facecolors="none", edgecolors=color,
                   linewidths=1.5, zorder=4)
        for r, x, y in pts:
            ref = " (reference)" if metric == "kld_mean" and y == 0 and flatten(r)["kld_mean"] is None else ""
            ax.annotate(f"{r.config.variant_id}/{r.config.backend}{ref}{speed_tag(r)}", (x, y),
                        textcoords="offset points", xytext=(4, 3), fontsize=7, color="#333")
    ax.set_xlabel("decode tok/s on the tier: measured on it, or PROJECTED (higher is better)")
    ax.set_ylabel(label)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    caption = (f"{n_points} cells (the newest row of each); circled points joined by a dashed line are the Pareto "
               f"front of each model on each tier against each reference ({on_front} cells): no other variant "
               "there is both faster and closer to the reference. Speed is the tier's: measured on it, or PROJECTED "
               "onto an emulated tier by the performance model (never this host's speed under the tier's caps); "
               "cells whose tier speed is not known (caps only) are not plotted.")
    return Plot(pid, title, caption, svg=_svg(fig))


def speed_and_cost_by_tier(rows: Sequence[Row]) -> Plot:
    """Decode tok/s and $/1M tokens per tier: solid bars measured on the tier, hatched bars with
    whiskers PROJECTED onto an emulated tier (the performance model, its interval), and no bar
    where the tier's speed is not known (an emulated tier without figures: "caps only")."""
    pid, title = "tiers", "Decode speed and cost per hardware tier"
    ok = [r for r in latest_per_cell(list(rows)) if r.status == "ok" and flatten(r)["decode_tps_mean"]]
    if not ok:
        return Plot(pid, title, "", why_not="no successful row with decode tok/s")
    plt = _pyplot()
    tiers = sorted({tier_label(r) for r in ok})
    series = sorted({series_label(r) for r in ok})
    cell = {(tier_label(r), series_label(r)): r for r in sorted(ok, key=lambda r: r.created_at)}
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 0.5 + 0.45 * len(tiers) * max(1, min(len(series), 4))), sharey=True)
    h = 0.8 / len(series)
    priced = n_projected = n_unknown = 0
    for si, s in enumerate(series):
        color = PALETTE[si % len(PALETTE)]
        for ti, t in enumerate(tiers):
            r = cell.get((t, s))
            if r is None:
                continue
            y = ti + (si - (len(series) - 1) / 2) * h
            tps, basis = tier_decode_tps(r)
            usd = flatten(r)["usd_per_1m_output_tokens"]
            priced += usd is not None
            measured = basis == "measured"
            if tps is None:
                n_unknown += 1
                a1.text(0, y, " caps only: speed on the tier not known", fontsize=6, va="center", color=color)
                continue
            n_projected += not measured
            style = {"height": h, "color": color} if measured else {
                "height": h, "facecolor": "white", "edgecolor": color, "hatch": "///"}
            err = None
            if not measured:
                low, high = projected(r, "decode_tps", "low"), projected(r, "decode_tps", "high")
                if low is not None and high is not None:
                    err = [[max(0.0, tps - low)], [max(0.0, high - tps)]]
            a1.barh([y], [tps], xerr=err, ecolor="#333", capsize=2, label=s if ti == 0 else None, **style)
            if usd is not None:
                a2.barh([y], [usd], **style)
    a1.set_yticks(range(len(tiers)), tiers)
    a1.set_xlabel("decode tok/s (higher is better); hatched: PROJECTED, whiskers: its interval")
    a2.set_xlabel("$ per 1M output tokens (lower is better; blank: no price or no speed)")
    for a in (a1, a2):
        a.grid(axis="x", alpha=0.3)
    handles = [plt.Rectangle((0, 0), 1, 1, color=PALETTE[i % len(PALETTE)]) for i in range(len(series))]
    fig.legend(handles, series, fontsize=7, loc="lower center", ncol=min(3, len(series)),
               bbox_to_anchor=(0.5, 1.0), frameon=False)
    caption = ("Solid: measured on the tier itself. Hatched with whiskers: an emulated tier's speed PROJECTED from "
               "the host's measured efficiency and the tier's sourced figures (not a measurement; the whiskers are "
               "the model's interval on real machines). $/1M tokens = the tier's $/hour / (decode tok/s x 3600) "
               f"x 1e6 (docs/METRICS.md). {n_projected} projected, {n_unknown} unknown (caps only); {priced} of "
               f"{len(ok)} cells have a cost.")
    return Plot(pid, title, caption, svg=_svg(fig))


def memory_vs_capacity(rows: Sequence[Row]) -> Plot:
    pid, title = "memory", "Peak memory per variant against each tier's capacity"
    measured = [r for r in rows if r.memory.peak_rss_bytes]
    if not measured:
        return Plot(pid, title, "", why_not="no row has a measured peak RSS")
    plt = _pyplot()
    peak: dict[str, int] = {}
    vram: dict[str, int] = {}
    for r in measured:
        s = series_label(r)
        peak[s] = max(peak.get(s, 0), r.memory.peak_rss_bytes or 0)
        if r.memory.peak_vram_reserved_bytes:
            vram[s] = max(vram.get(s, 0), r.memory.peak_vram_reserved_bytes)
    budgets = {tier_label(r): r.tier.ram_budget_bytes for r in rows if r.tier.ram_budget_bytes}
    names = sorted(peak, key=lambda s: peak[s])
    fig, ax = plt.subplots(figsize=(8, 0.8 + 0.35 * len(names)))
    ax.barh(range(len(names)), [peak[s] / GiB for s in names], height=0.6, color=PALETTE[0], label="peak RSS")
    if vram:
        ax.barh([i + 0.3 for i, s in enumerate(names) if s in vram], [vram[s] / GiB for s in names if s in vram],
                height=0.3, color=PALETTE[3], label="peak VRAM (torch reserved)")
    for i, (tier, b) in enumerate(sorted(budgets.items(), key=lambda kv: kv[1])):
        ax.axvline(b / GiB, color=PALETTE[(i + 1) % len(PALETTE)], ls="--", lw=1)
        ax.text(b / GiB, len(names) - 0.4, f" {tier}\n {b / GiB:.1f} GiB", fontsize=7, va="top",
                color=PALETTE[(i + 1) % len(PALETTE)])
    ax.set_yticks(range(len(names)), names)
    ax.set_xscale("log")
    ax.set_xlabel("GiB (log scale); dashed: each tier's RAM minus its reserve")
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    caption = (f"Largest peak RSS of each variant over {len(measured)} measured cells (psutil sampling and "
               f"ru_maxrss in the child process); {len(budgets)} tier budget(s) drawn.")
    return Plot(pid, title, caption, svg=_svg(fig))


def itl_distribution(rows: Sequence[Row], limit: int = 16) -> Plot:
    pid, title = "itl", "Inter-token latency distribution"
    cells = []
    for r in rows:
        gaps = [t[i + 1] - t[i] for s in r.samples for t in [s.get("token_times") or []] for i in range(len(t) - 1)]
        if r.status == "ok" and gaps:
            cells.append((f"{series_label(r)} on {where_label(r)}", [g * 1e3 for g in gaps]))
    if not cells:
        return Plot(pid, title, "", why_not="no row kept per-token timestamps")
    shown = cells[:limit]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.2))
    for i, (name, gaps) in enumerate(shown):
        xs = sorted(gaps)
        ys = [(k + 1) / len(xs) for k in range(len(xs))]
        ax.step(xs, ys, where="post", color=PALETTE[i % len(PALETTE)], lw=1.8, label=name)
    for q in (0.5, 0.99):
        ax.axhline(q, color="#999", lw=0.8, ls=":")
        ax.text(ax.get_xlim()[1], q, f" p{int(q * 100)}", fontsize=7, va="center", color="#666")
    ax.set_xlabel("inter-token latency, ms")
    ax.set_ylabel("fraction of gaps <= x")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    caption = (f"Empirical distribution (ECDF) of the gaps t(i+1) - t(i) between generated tokens, pooled over "
               f"counted repetitions, from the raw timestamps kept in each row, on the machine that ran each cell "
               f"(HOST under a tier's caps: the host's timing, not the tier's); dotted: p50 and p99. "
               f"{len(shown)} of {len(cells)} cells shown.")
    return Plot(pid, title, caption, svg=_svg(fig))


def _curves(records: Sequence[ServingRow]) -> dict[str, list[ServingRow]]:
    """The newest ok (or partial) points with a throughput, one curve per model variant, tier,
    workload and load mode, in load order."""
    from bench.analysis.serving import curve_label, latest_points

    curves: dict[str, list[ServingRow]] = defaultdict(list)
    for p in latest_points(records):
        if p.status != "failed" and p.point_summary.output_tps:
            curves[curve_label(p)].append(p)
    return dict(sorted(curves.items()))


def serving_throughput_latency(records: Sequence[ServingRow]) -> Plot:
    """Output tok/s against TTFT p50 and e2e p50, one curve per model and tier, points joined in
    load order: how much latency each step of throughput costs under load."""
    from bench.analysis.serving import stat

    pid, title = "serving-curve", "Serving: throughput vs latency, per model and tier"
    curves = _curves(records)
    if not curves:
        return Plot(pid, title, "", why_not="no serving load point with a throughput (run bench serve)")
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    for ci, (name, pts) in enumerate(curves.items()):
        color = PALETTE[ci % len(PALETTE)]
        xs = [p.point_summary.output_tps for p in pts]
        for ax, metric in zip(axes, ("ttft_s", "e2e_s"), strict=True):
            ys = [(stat(p, metric) or float("nan")) * 1e3 for p in pts]
            ax.plot(xs, ys, marker="o", ms=4, lw=1.4, color=color, label=name if metric == "ttft_s" else None,
                    ls="-" if pts[0].mode == "concurrency" else "--")
            for p, x, y in zip(pts, xs, ys, strict=True):
                ax.annotate(p.load_label + ("" if p.measured else " (host speed)") * (p is pts[-1]), (x, y),
                            textcoords="offset points", xytext=(4, 3), fontsize=7, color="#333")
    for ax, what in zip(axes, ("TTFT p50", "end-to-end latency p50"), strict=True):
        ax.set_xlabel("output tok/s over the point's window (higher is better)")
        ax.set_ylabel(f"{what}, ms (lower is better)")
        ax.grid(alpha=0.3)
    fig.legend(fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False, ncol=1)
    n = sum(len(v) for v in curves.values())
    caption = (f"{n} load points in {len(curves)} curve(s), the newest point of each load; each point is labelled "
               "with its load (c=N: N concurrent users in a closed loop, solid; N/s: open-loop arrivals, dashed). "
               "Latency counts from the scheduled time (docs/METRICS.md, \"Serving\"). A curve whose points are "
               "emulated (a server on this host under a tier's threads) shows this host's speed, not the tier's.")
    return Plot(pid, title, caption, svg=_svg(fig))


def serving_goodput(records: Sequence[ServingRow]) -> Plot:
    """Goodput (requests/s meeting both SLOs) against the offered load, beside request throughput:
    where the server stops keeping its promises."""
    pid, title = "serving-goodput", "Serving: goodput against offered load"
    curves = _curves(records)
    if not curves:
        return Plot(pid, title, "", why_not="no serving load point with a throughput (run bench serve)")
    modes = sorted({pts[0].mode or "" for pts in curves.values()})
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(modes), figsize=(5 * len(modes) + 1, 4.2), squeeze=False)
    without = 0
    for ci, (name, pts) in enumerate(curves.items()):
        ax = axes[0][modes.index(pts[0].mode or "")]
        color = PALETTE[ci % len(PALETTE)]
        xs = [p.load_value for p in pts]
        rps = [p.point_summary.request_throughput_rps for p in pts]
        good = [(p.point_summary.goodput or Goodput()).goodput_rps for p in pts]
        if all(g is not None for g in good):
            ax.plot(xs, good, marker="o", ms=4, lw=1.6, color=color, label=f"{name}: goodput")
            ax.plot(xs, rps, marker=".", lw=0.9, ls=":", color=color, label=f"{name}: all completed")
        else:
            without += 1
            ax.plot(xs, rps, marker="s", ms=4, lw=1.4, ls="-.", color=color, label=f"{name}: completed (no SLO)")
        for p, x, y in zip(pts, xs, good if all(g is not None for g in good) else rps, strict=True):
            ax.annotate(p.load_label, (x, y), textcoords="offset points", xytext=(4, 3), fontsize=7, color="#333")
    for ax, mode in zip(axes[0], modes, strict=True):
        ax.set_xlabel("offered load: concurrent users" if mode == "concurrency" else "offered load: requests/s")
        ax.set_ylabel("requests/s")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="best")
    caption = ("Goodput = completed requests with TTFT and TPOT within the SLOs the row names, per second of the "
               "point's window; dotted: every completed request per second. Where goodput falls away from the "
               "dotted line, requests still complete but too late." + (
                   f" {without} curve(s) had no SLO: request throughput only." if without else ""))
    return Plot(pid, title, caption, svg=_svg(fig))


PLOTS = (speed_vs_quality, speed_and_cost_by_tier, memory_vs_capacity, itl_distribution)
SERVING_PLOTS = (serving_throughput_latency, serving_goodput)  # over bench serve's records
