"""This host's speed is never shown as a tier's. Real rows of the embedded model run under an
emulated tier's caps (`bench run -p laptop-4c-8g`, with a small task pass, and `bench serve -p
laptop-4c-8g` on a real llama-server) are rendered by every output the suite has: the run and serve
tables and conclusions, `bench report` (Markdown, HTML with its plots, CSV, SQLite), `bench compare`
(terminal and Markdown) and `bench verdict` (terminal, Markdown, HTML, JSON). Wherever one of this
host's measured numbers appears (its tok/s, TTFT, ITL, its cost at the tier's price), the tier's name
may appear beside it only as "HOST under TIER's caps" (or threads); the tier's own speed and cost
are measured on it, PROJECTED, or absent."""

from __future__ import annotations

import csv
import html
import json
import re
import sqlite3
import sys
from pathlib import Path

import pytest
from conftest import REPO, read_jsonl, run_bench

pytestmark = pytest.mark.slow

TIER = "laptop-4c-8g"
TASK = [{"question": "What is 2 plus 3?", "answer": "2 + 3 = 5\n#### 5"},
        {"question": "What is 10 minus 4?", "answer": "10 - 4 = 6\n#### 6"}]


@pytest.fixture(scope="module")
def emulated(tmp_path_factory, embedded_model) -> Path:
    from bench.native.tools import tool_path

    tool_path("llama-server", say=lambda line: print(line, file=sys.stderr))
    d = tmp_path_factory.mktemp("emulated")
    task = d / "task.jsonl"
    task.write_text("".join(json.dumps(t) + "\n" for t in TASK))
    run = run_bench("run", "-p", TIER, "--prompt-tokens", "128", "--gen-tokens", "16", "-r", "3", "--task", str(task),
                    "--task-limit", "2", "--task-shots", "0", "--task-max-tokens", "8", "--no-progress",
                    "-o", str(d / "run.jsonl"))
    assert run.returncode == 0, run.stderr
    serve = run_bench("serve", "-p", TIER, "-c", "1,2", "-n", "4", "--prompt-tokens", "128", "--gen-tokens", "8",
                      "--no-ceiling", "-o", str(d / "serving" / "serve.jsonl"))
    assert serve.returncode == 0, serve.stderr
    (d / "run.out").write_text(run.stdout + run.stderr)
    (d / "serve.out").write_text(serve.stdout + serve.stderr)
    return d


def _forms(v: float | None, scales: tuple[float, ...] = (1.0,)) -> set[str]:
    """The ways a table may print ``v``: with decimals at any precision the suite uses, and as an
    integer where it has at least three digits (fewer could be any small number)."""
    out: set[str] = set()
    if not v:
        return out
    for k in scales:
        x = v * k
        out |= {s for s in (f"{x:.1f}", f"{x:.2f}", f"{x:.3g}", f"{x:.4g}", f"{x:.4f}") if "." in s and "e" not in s}
        if abs(x) >= 100:
            out.add(f"{x:.0f}")
    return out


def host_numbers(d: Path) -> tuple[set[str], dict[str, float]]:
    """This host's measured numbers in every printed form, and as values (for CSV and SQLite)."""
    from bench.results.schema import Row

    (row,) = read_jsonl(d / "run.jsonl")
    s, hourly = row["summary"], Row.from_dict(row).profile.hourly_usd()
    assert hourly
    values: dict[str, float] = {}
    for m in ("decode_tps", "prefill_tps", "decode_text_bps", "prefill_text_bps"):
        values[m] = s[m]["mean"]
    for m in ("ttft_s", "tpot_s", "e2e_s"):
        values[m] = s[m]["mean"]
    values["itl_p50"], values["itl_p99"] = s["itl_s"]["p50"], s["itl_s"]["p99"]
    values["task_seconds_per_item"] = row["task"]["seconds"] / row["task"]["items"]
    for p in (p for p in read_jsonl(d / "serving" / "serve.jsonl") if p["record"] == "point"):
        ps = p["summary"]
        load = p["load"]["value"]
        values[f"output_tps@{load}"] = ps["output_tps"]
        values[f"rps@{load}"] = ps["request_throughput_rps"]
        for m in ("ttft_s", "tpot_s", "itl_s", "e2e_s"):
            values[f"{m}_p50@{load}"] = ps[m]["p50"]
    forms: set[str] = set()
    for key, v in values.items():
        timed = key.startswith(("ttft", "tpot", "e2e", "itl"))
        forms |= _forms(v, (1.0, 1e3) if timed else (1.0,))
    # what this host's speed would cost at the tier's price: never printed as anyone's cost
    for key in ("decode_tps", *(k for k in values if k.startswith("output_tps@"))):
        values[f"usd_from_{key}"] = usd = hourly / (values[key] * 3600) * 1e6
        forms |= _forms(usd)
    return {f for f in forms if len(f.replace(".", "").lstrip("0")) >= 3}, values


def offence(unit: str, numbers: set[str]) -> str | None:
    """The host number a unit of text shows beside the tier's bare name, or None. Only what a reader
    sees counts: markup (an SVG path's coordinates, an attribute) is left out."""
    text = html.unescape(re.sub(r"<[^>]*>", " ", unit))
    for qualifier in (f"under {TIER}'s caps", f"under {TIER}'s threads"):
        text = text.replace(qualifier, "under the tier's caps")
    if TIER not in text:
        return None
    return next((n for n in sorted(numbers) if re.search(rf"(?<![\d.]){re.escape(n)}(?![\d])", text)), None)


def html_units(page: str) -> list[str]:
    """Table rows, list items, paragraphs, headings and SVG text elements of a page."""
    return re.split(r"(?=<(?:tr|li|p|h[1-4]|figcaption|text)\b)", page)


def _check(units: list[str], numbers: set[str], where: str) -> None:
    bad = [(offence(u, numbers), u.strip()[:300]) for u in units if offence(u, numbers)]
    assert not bad, f"{where}: this host's number beside the tier's name: {bad[:3]}"


def _rich_units(table) -> list[str]:
    cells = [[str(c) for c in col._cells] for col in table.columns]
    return [str(table.title or "")] + [" | ".join(row) for row in zip(*cells, strict=True)]


def test_the_host_speed_is_never_shown_as_the_tiers(emulated, tmp_path):
    d = emulated
    numbers, values = host_numbers(d)
    assert len(numbers) > 20

    # the outputs of bench run and bench serve themselves, and their tables cell by cell
    from bench.analysis.verdict import judge
    from bench.analysis.verdict_report import rich_renderables
    from bench.claims import load_claims
    from bench.display import results_table
    from bench.results.files import load_results
    from bench.serving.display import conclusions, points_table

    _check((d / "run.out").read_text().splitlines(), numbers, "bench run output")
    _check((d / "serve.out").read_text().splitlines(), numbers, "bench serve output")
    rows, serving, _ = load_results([d])
    _check(_rich_units(results_table(rows)), numbers, "bench run table")
    serve_rows = list(serving)
    _check(_rich_units(points_table(serve_rows)) + conclusions(serve_rows), numbers, "bench serve table")
    sweep = next(r for r in serving if r.record == "sweep")
    assert sweep.sweep_summary.usd_unavailable and all(
        p.usd_per_1m_output_tokens is None for p in sweep.sweep_summary.points or [])

    # bench report: Markdown, HTML (tables, captions, the plots' text), CSV, SQLite
    out = tmp_path / "report"
    proc = run_bench("report", str(d), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    md = (out / "report.md").read_text()
    assert "## Task accuracy" in md and "## Serving under load" in md
    _check(md.splitlines(), numbers, "report.md")
    page = (out / "report.html").read_text()
    assert page.count("<svg") >= 5
    _check(html_units(page), numbers, "report.html")
    tier_columns = {"usd_per_1m_output_tokens", "tier_decode_tps", "tier_ttft_s", "projected_decode_tps",
                    "projected_decode_tps_low", "projected_decode_tps_high", "projected_prefill_tps",
                    "projected_ttft_s", "projected_ttft_s_high"}
    host_values = list(values.values())
    for name in ("report.csv", "report-serving.csv"):
        with (out / name).open() as fh:
            for rec in csv.DictReader(fh):
                for col in tier_columns & set(rec):
                    if rec[col]:
                        assert all(abs(float(rec[col]) - v) > 1e-9 * v for v in host_values), (name, col, rec[col])
                assert rec["measured_on"] == f"{rec['host']} under {TIER}'s " + ("caps" if name == "report.csv"
                                                                                   else "threads")
    con = sqlite3.connect(out / "report.sqlite")
    docs = dict(con.execute("SELECT name, doc FROM columns").fetchall())
    for col in ("decode_tps_mean", "ttft_s_mean", "prefill_tps_mean", "itl_s_p50", "e2e_s_mean"):
        assert docs[col].startswith("measured on `host`"), col  # the host's, and said so
    (cost,) = con.execute("SELECT usd_per_1m_output_tokens FROM rows").fetchone()
    assert cost is None or all(abs(cost - v) > 1e-9 * v for v in host_values)
    assert {r[0] for r in con.execute("SELECT usd_per_1m_output_tokens FROM serving")} == {None}

    # bench compare (the run against itself: every cell matches)
    cmp_md = tmp_path / "compare.md"
    proc = run_bench("compare", str(d), str(d), "--markdown", str(cmp_md), "--allow-inconclusive")
    _check(proc.stdout.splitlines() + cmp_md.read_text().splitlines(), numbers, "bench compare")
    assert f"under {TIER}'s caps" in cmp_md.read_text()

    # bench verdict: terminal, Markdown, HTML, JSON
    claims = load_claims(REPO / "claims.yaml")
    verdict = judge(rows, claims)
    units = []
    for part in rich_renderables(verdict, "x"):
        units += _rich_units(part) if hasattr(part, "columns") else [str(part)]
    _check(units, numbers, "bench verdict (terminal)")
    v_md, v_html = tmp_path / "v.md", tmp_path / "v.html"
    proc = run_bench("verdict", str(d), "--markdown", str(v_md), "--html", str(v_html), "--json")
    assert proc.returncode == 0, proc.stderr
    _check(v_md.read_text().splitlines(), numbers, "verdict.md")
    _check(html_units(v_html.read_text()), numbers, "verdict.html")
    _check([json.dumps(t) for t in json.loads(proc.stdout)["tiers"]], numbers, "verdict --json")
