"""What ``bench verdict`` prints and writes: a dashboard a person can read.

First a paragraph that answers the claim per origin (the cheapest tier where a model passes, or
what stands in its way); then one small table per model, one short cell per criterion (``pass
10.7``, ``FAIL 2.48 s``, ``? (1)``), the basis of each row as one word, every reason once,
numbered, under the tables, and the basis words explained once. The same dashboard as terminal
tables (120 columns at most), Markdown and an HTML page in the report's style; ``to_json`` has
everything, every reason in full.
"""

from __future__ import annotations

import html
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from bench.analysis.verdict import Check, TierVerdict, Verdict

CRITERIA_ORDER = ("fits", "decode tok/s", "TTFT", "decode tok/s @N users", "TTFT @N users", "context",
                  "quality retained")
HEADS = {"fits": "fits MiB", "decode tok/s": "decode tok/s", "TTFT": "TTFT s", "quality retained": "quality"}
MARK = {"pass": "pass", "fail": "FAIL", "unmeasured": "?"}
WORD = {"pass": "pass", "fail": "FAIL", "unmeasured": "unmeasured"}
BASIS_NOTE = (
    "Basis: `measured` = this host as it is; `measured on tier` = a machine that is the tier; `PROJECTED` = fit "
    "under the tier's caps here, speed projected (its pessimistic end); `emulated` = fit under the caps, speed "
    "not known. `?` = unmeasured, never a pass; (n) = reason n; * = not inexpensive; quality = KLD (nats) from "
    "the developer's original release.")


@dataclass
class Reasons:
    """Each distinct reason once, numbered in the order first met."""

    texts: list[str] = field(default_factory=list)

    def ref(self, text: str) -> int:
        if text not in self.texts:
            self.texts.append(text)
        return self.texts.index(text) + 1


@dataclass
class Line:
    """One row of a model's table."""

    tier: str
    usd: str
    configuration: str
    cells: dict[str, str]
    outcomes: dict[str, str]  # criterion -> pass | fail | unmeasured (for colours)
    verdict: str
    outcome: str
    basis: str


@dataclass
class Block:
    """One model: its table and its one-line answer (tiers not measured at all are in the answer)."""

    model: str
    country: str
    lines: list[Line]
    answer: str


@dataclass
class Dashboard:
    title: str
    sources: str
    answer: list[str]
    blocks: list[Block]
    criteria: list[str]
    reasons: Reasons


def criteria_in(v: Verdict) -> list[str]:
    seen = {c.criterion for tv in v.tiers if tv.best for c in tv.best.checks}
    users = v.claims.criteria.concurrent_users
    order = [c.replace("@N", f"@{users}") for c in CRITERIA_ORDER]
    return [c for c in order if c in seen]


def head(criterion: str) -> str:
    return HEADS.get(criterion, criterion.replace("decode tok/s", "decode").replace("TTFT", "TTFT s")
                     .replace(" users", ""))


def cell(check: Check | None, reasons: Reasons) -> str:
    """``pass 10.7``, ``FAIL 2.48 s``, ``? (1)`` (a composite: one number per part unmeasured)."""
    if check is None:
        return "-"
    if check.outcome == "unmeasured":
        parts = [p for p in check.parts if p.outcome == "unmeasured"] or [check]
        return "? (" + ",".join(str(reasons.ref(p.short or p.value)) for p in parts) + ")"
    return f"{MARK[check.outcome]} {check.short}".strip()


def _configuration(tv: TierVerdict) -> str:
    if tv.best is None:
        return "-"
    c = tv.best.row.config
    return c.variant_id + ("" if c.backend == "llama.cpp" else f" {c.backend}")


def _line(tv: TierVerdict, crit: list[str], reasons: Reasons) -> Line:
    assert tv.best is not None
    checks = {c: tv.best.check(c) for c in crit}
    verdict = MARK[tv.outcome]
    if tv.disturbed:
        verdict += f" ({reasons.ref(f'{tv.tier}: {tv.disturbed}')})"
    return Line(tier=tv.tier + ("" if tv.inexpensive else "*"),
                usd="-" if tv.usd_per_hour is None else f"{tv.usd_per_hour:.3g}",
                configuration=_configuration(tv), cells={c: cell(checks[c], reasons) for c in crit},
                outcomes={c: checks[c].outcome if checks[c] else "" for c in crit}, verdict=verdict,
                outcome=tv.outcome, basis=tv.basis_tag)


def _tiers(names: list[str]) -> str:
    return ", ".join(names[:-1]) + f" and {names[-1]}" if len(names) > 1 else names[0]


def obstacles(tvs: list[TierVerdict], crit: list[str]) -> list[tuple[str, str]]:
    """What stands between a model and a pass: (key, phrase) per criterion that failed or went
    unmeasured somewhere; equal keys in every model's list are obstacles they share."""
    judged = [tv for tv in tvs if tv.best is not None]
    out = []
    for c in crit:
        checks = [(tv, ch) for tv in judged for ch in [tv.best.check(c) if tv.best else None] if ch is not None]
        failed = [tv.tier for tv, ch in checks if ch.outcome == "fail"]
        if failed:
            projected = all(tv.basis_tag == "PROJECTED" for tv, ch in checks if ch.outcome == "fail")
            out.append((f"fail {c} {failed}", f"{c} fails on {_tiers(failed)}" + (" (PROJECTED)" if projected else "")))
        unmeasured = [(tv.tier, ch.short) for tv, ch in checks if ch.outcome == "unmeasured"]
        for gist in dict.fromkeys(g for _, g in unmeasured):
            tiers = [t for t, g in unmeasured if g == gist]
            where = "every tier" if len(tiers) == len(judged) else _tiers(tiers)
            out.append((f"{c} {gist} {where}", f"{c} unmeasured on {where}: {gist}"))
    return out


def _passes(tv: TierVerdict) -> str:
    cheap = "" if tv.inexpensive else ", NOT an inexpensive tier by the claims file"
    usd = "no price" if tv.usd_per_hour is None else f"${tv.usd_per_hour:.3g}/h"
    return f"{tv.model} passes on {tv.tier} ({usd}{cheap}; {_configuration(tv)}; basis {tv.basis_tag})"


def answer(v: Verdict, crit: list[str]) -> tuple[list[str], dict[str, str]]:
    """The first paragraph (sentences) and each model's own line: per origin, the cheapest tier
    where a model passes, or what stands in its way; what stands in every model's way said once."""
    models = list(dict.fromkeys(tv.model for tv in v.tiers))
    country = {tv.model: tv.country for tv in v.tiers}
    claimed = [tv for tv in v.tiers if tv.inexpensive] or v.tiers  # the claim is about inexpensive tiers
    blocked = {m: obstacles([tv for tv in claimed if tv.model == m], crit) for m in models
               if v.cheapest.get(m) is None}
    shared: list[tuple[str, str]] = []
    if len(blocked) == len(models) > 1:
        keys = set.intersection(*({k for k, _ in o} for o in blocked.values()))
        shared = [o for o in next(iter(blocked.values())) if o[0] in keys]
    sentences = ["For every model: " + "; ".join(p for _, p in shared) + "."] if shared else []
    own: dict[str, str] = {}
    for origin in sorted(set(country.values()), key=lambda c: (c == "unknown", c)):
        passing, stuck = [], []
        for m in (m for m in models if country[m] == origin):
            tv = v.cheapest.get(m)
            if tv is not None:
                passing.append(tv)
                own[m] = _passes(tv) + ", its cheapest passing tier"
                continue
            own[m] = f"{m} passes on no tier" + "".join(f"; {p}" for _, p in blocked[m])
            rest = "; ".join(p for o in blocked[m] if o not in shared for p in [o[1]])
            stuck.append(f"{m} passes on no tier" + (f": {rest}" if rest else ""))
        passing.sort(key=lambda tv: (tv.usd_per_hour is None, tv.usd_per_hour or 0.0))
        if not passing and len(stuck) == 1:
            sentences.append(f"From {origin}: {stuck[0]}.")
            continue
        lead = f"{_passes(passing[0])}, the cheapest tier where a model passes" if passing else "no model passes"
        sentences.append(f"From {origin}: {lead}." + "".join(f" {s}." for s in stuck))
    missing: dict[str, list[str]] = defaultdict(list)
    for tv in v.tiers:
        if tv.best is None:
            missing[tv.missing or "no rows"].append(tv.tier)
    sentences += [f"Not measured: {_tiers(sorted(set(t)))} ({why})." for why, t in missing.items()]
    return sentences, own


def build(v: Verdict, sources: str) -> Dashboard:
    crit = criteria_in(v)
    reasons = Reasons()
    sentences, own = answer(v, crit)
    blocks = []
    models = list(dict.fromkeys(tv.model for tv in v.tiers))
    for m in sorted(models, key=lambda m: (next(tv.country for tv in v.tiers if tv.model == m) == "unknown",
                                           next(tv.country for tv in v.tiers if tv.model == m), m)):
        tvs = [tv for tv in v.tiers if tv.model == m]
        judged = sorted((tv for tv in tvs if tv.best is not None),
                        key=lambda tv: (tv.usd_per_hour is None, tv.usd_per_hour or 0.0, tv.tier))
        lines = [_line(tv, crit, reasons) for tv in judged]
        blocks.append(Block(m, tvs[0].country, lines, own[m]))
    return Dashboard(v.claims.name, sources, sentences, blocks, crit, reasons)


# -- Markdown ------------------------------------------------------------------------------------
def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _bold(verdict: str) -> str:
    return verdict if verdict.startswith("?") else f"**{verdict}**"


def markdown(v: Verdict, sources: str) -> str:
    d = build(v, sources)
    heads = ["tier", "$/h", "variant", *(head(c) for c in d.criteria), "verdict", "basis"]
    lines = [f"# Verdict: {d.title}", "", " ".join(d.answer), ""]
    for b in d.blocks:
        lines += [f"## {b.model} ({b.country})", ""]
        if b.lines:
            lines += ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
            lines += ["| " + " | ".join(_md(x) for x in (ln.tier, ln.usd, ln.configuration,
                                                          *(ln.cells[c] for c in d.criteria)))
                      + f" | {_bold(ln.verdict)} | {ln.basis} |" for ln in b.lines]
        lines.append("")
    lines += ["## Reasons", ""] + [f"{i}. {_md(t)}" for i, t in enumerate(d.reasons.texts, 1)]
    lines += ["", BASIS_NOTE, "", f"From {sources}. `--json`: every value and reason in full.", ""]
    return "\n".join(lines)


# -- terminal ------------------------------------------------------------------------------------
COLOR = {"pass": "green", "fail": "red", "unmeasured": "yellow", "": "default"}


def rich_renderables(v: Verdict, sources: str) -> list[Any]:
    """The answer, one table per model (each at most 120 columns wide), the reasons and the legend."""
    from rich.table import Table
    from rich.text import Text

    d = build(v, sources)
    out: list[Any] = [Text(f"Verdict: {d.title}", style="bold"), Text(""), Text(" ".join(d.answer)), Text("")]
    for b in d.blocks:
        t = Table(title=f"{b.model} ({b.country})", box=None, pad_edge=False, title_justify="left",
                  header_style="bold underline")
        for col in ("tier", "$/h", "variant", *(head(c) for c in d.criteria), "verdict", "basis"):
            t.add_column(col, no_wrap=col != "variant", overflow="fold")
        for ln in b.lines:
            t.add_row(ln.tier, ln.usd, ln.configuration,
                      *(Text(ln.cells[c], style=COLOR[ln.outcomes[c]]) for c in d.criteria),
                      Text(ln.verdict, style=f"bold {COLOR[ln.outcome]}"), ln.basis)
        if b.lines:
            out.append(t)
        out.append(Text(""))
    out.append(Text("Reasons:", style="bold"))
    out += [Text(f"{i}. {t}") for i, t in enumerate(d.reasons.texts, 1)]
    out += [Text(""), Text(BASIS_NOTE.replace("`", "")), Text(f"From {sources}.")]
    return out


# -- HTML ----------------------------------------------------------------------------------------
VERDICT_STYLE = """
td.pass{background:#e8f5e9}td.fail{background:#fdecea;font-weight:600}td.unmeasured{background:#fff8e1}
td.verdict{font-weight:700}.answer{font-size:1rem;line-height:1.5}ol.reasons li{font-size:.85rem;margin:.2rem 0}
table.verdict{width:auto;min-width:60%}
"""


def html_page(v: Verdict, sources: str) -> str:
    """The dashboard as one self-contained page in the report's style (no scripts, no network);
    each ``? (n)`` links to its reason."""
    import re

    from bench.analysis.report import HTML_STYLE

    e = html.escape
    d = build(v, sources)

    def linked(text: str) -> str:
        return re.sub(r"\d+", lambda m: f'<a href="#reason-{m.group(0)}">{m.group(0)}</a>', e(text)) \
            if text.startswith("?") or "(" in text else e(text)

    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>Verdict: {e(d.title)}</title>", f"<style>{HTML_STYLE}{VERDICT_STYLE}</style></head><body>",
             f"<h1>Verdict: {e(d.title)}</h1>", f'<p class="answer" id="answer">{e(" ".join(d.answer))}</p>']
    heads = ["tier", "$/h", "variant", *(head(c) for c in d.criteria), "verdict", "basis"]
    for b in d.blocks:
        parts.append(f"<h2>{e(b.model)} ({e(b.country)})</h2>"
                     + (f'<p class="small">{e(b.answer)}</p>' if len(d.blocks) > 1 else ""))
        if b.lines:
            parts.append('<table class="verdict" data-model="' + e(b.model) + '"><thead><tr>'
                         + "".join(f"<th>{e(h)}</th>" for h in heads) + "</tr></thead><tbody>")
            for ln in b.lines:
                cells = [f'<td class="s">{e(ln.tier)}</td>', f"<td>{e(ln.usd)}</td>",
                         f'<td class="s">{e(ln.configuration)}</td>']
                cells += [f'<td class="s {ln.outcomes[c]}">{linked(ln.cells[c])}</td>' for c in d.criteria]
                cells += [f'<td class="s verdict {ln.outcome}">{linked(ln.verdict)}</td>',
                          f'<td class="s">{e(ln.basis)}</td>']
                parts.append("<tr>" + "".join(cells) + "</tr>")
            parts.append("</tbody></table>")
    parts.append('<h2>Reasons</h2><ol class="reasons">'
                 + "".join(f'<li id="reason-{i}">{e(t)}</li>' for i, t in enumerate(d.reasons.texts, 1)) + "</ol>")
    parts += [f'<p class="small">{e(BASIS_NOTE.replace("`", ""))}</p>', f'<p class="small">From {e(sources)}.</p>',
              "</body></html>"]
    return "\n".join(parts) + "\n"


# -- JSON ----------------------------------------------------------------------------------------
def _check(c: Check) -> dict[str, Any]:
    out: dict[str, Any] = {"criterion": c.criterion, "outcome": c.outcome, "value": c.value, "short": c.short}
    if c.parts:
        out["parts"] = [_check(p) for p in c.parts]
    return out


def to_json(v: Verdict, sources: str) -> dict[str, Any]:
    """Everything the verdict knows, every reason in full."""
    d = build(v, sources)
    tiers = []
    for tv in v.tiers:
        r = tv.best.row if tv.best else None
        tiers.append({
            "model": tv.model, "country": tv.country, "tier": tv.tier, "usd_per_hour": tv.usd_per_hour,
            "inexpensive": tv.inexpensive, "outcome": tv.outcome, "basis_tag": tv.basis_tag, "basis": tv.basis,
            "disturbed": tv.disturbed, "missing": tv.missing, "configuration": tv.configuration,
            "configurations": tv.configurations,
            "row": None if r is None else {"run_id": r.run_id, "cell_key": r.cell_key, "created_at": r.created_at,
                                           "host": r.host, "status": r.status, "reason": r.reason},
            "checks": [_check(c) for c in (tv.best.checks if tv.best else [])]})
    return {"claims": v.claims.model_dump(), "sources": sources, "answer": d.answer,
            "cheapest": {m: (tv.tier if tv else None) for m, tv in v.cheapest.items()},
            "criteria": d.criteria, "reasons": d.reasons.texts, "basis_note": BASIS_NOTE, "tiers": tiers}
