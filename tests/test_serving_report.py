"""Serving rows in `bench report`, `bench compare` and `bench verdict`: real rows from `bench serve` on a
real llama-server (the embedded model, concurrency 1 and 2, four requests each) beside a real `bench run`
row of the same model on the same tier, laid out as the commands write them (results/*.jsonl and
results/serving/*.jsonl). A slower run is made from the real one by a transformation whose outcome is
certain; assertions are on relations, never on absolute times."""

from __future__ import annotations

import csv
import json
import platform
import re
import sqlite3
import sys
from pathlib import Path

import pytest
from conftest import read_jsonl, run_bench

from bench.results.serving import ServingRow
from bench.serving import metrics as sm

pytestmark = pytest.mark.slow

HOST_TIER = f"auto@{re.sub(r'[^A-Za-z0-9_.-]', '_', platform.node() or 'host')}"


@pytest.fixture(scope="module")
def results(tmp_path_factory, embedded_model) -> Path:
    from bench.native.tools import tool_path

    tool_path("llama-server", say=lambda line: print(line, file=sys.stderr))
    d = tmp_path_factory.mktemp("results")
    proc = run_bench("run", "-p", "auto", "--prompt-tokens", "128", "--gen-tokens", "8", "-r", "3", "--no-progress",
                     "-o", str(d / "run.jsonl"))
    assert proc.returncode == 0, proc.stderr
    proc = run_bench("serve", "-c", "1,2", "-n", "4", "--prompt-tokens", "128", "--gen-tokens", "8",
                     "--profile", "auto", "--no-ceiling", "-o", str(d / "serving" / "serve.jsonl"))
    assert proc.returncode == 0, proc.stderr
    return d


def _points(path: Path) -> list[dict]:
    return [r for r in read_jsonl(path) if r.get("record") == "point"]


def slower_copy(src: Path, dst: Path) -> float:
    """Every request's times (scheduled, sent, chunks, end: seconds from the point's start) scaled by
    k, and the summary recomputed from them: each TTFT is k times as long and each per-request output
    rate k times as low. k is twice the spread (max / min) of the point's own values, so every new
    TTFT is above every baseline TTFT and every new rate below every baseline rate."""
    lines = []
    k = 2.0
    for d in read_jsonl(src):
        traces = [sm.RequestTrace(**q) for q in d.get("requests", [])]
        for f in (sm.ttft, sm.output_rate):
            vals = [v for v in map(f, traces) if v]
            if vals:
                k = max(k, 2 * max(vals) / min(vals))
    for d in read_jsonl(src):
        if d.get("record") == "point":
            for q in d["requests"]:
                for key in ("scheduled", "sent", "end"):
                    q[key] = q[key] * k if q[key] is not None else None
                q["chunk_times"] = [t * k for t in q["chunk_times"]]
            slo = (d["summary"].get("goodput") or {}).get("slo")
            d["summary"] = sm.summarize_point([sm.RequestTrace(**q) for q in d["requests"]],
                                              sm.Slo(slo["ttft_s"], slo["tpot_s"], slo["source"]) if slo else None)
        lines.append(json.dumps(d))
    dst.write_text("\n".join(lines) + "\n")
    return k


def test_serving_rows_read_back_typed_and_write_the_same_json(results):
    """Every line bench serve wrote (a llama-server sweep: points and its summary) reads into the typed
    row and writes back to the same JSON, so reports, compare and merges pass rows through unchanged."""
    lines = read_jsonl(results / "serving" / "serve.jsonl")
    assert {d["record"] for d in lines} == {"point", "sweep"}
    for d in lines:
        row = ServingRow.from_dict(d)
        assert json.loads(row.to_json()) == d
    sweep = ServingRow.from_dict(lines[-1]).sweep_summary
    assert [p.load_label for p in sweep.points or []] == ["c=1", "c=2"]
    assert ServingRow.from_dict(lines[0]).point_summary.ok == 4


def test_report_has_a_serving_section_both_plots_and_tables(results, tmp_path):
    out = tmp_path / "report"
    proc = run_bench("report", str(results), "-o", str(out))  # the folder: its serving/ subfolder too
    assert proc.returncode == 0, proc.stderr
    assert "1 row(s) and 2 serving point(s)" in proc.stderr
    points = _points(results / "serving" / "serve.jsonl")
    md = (out / "report.md").read_text()
    assert "## Serving under load" in md
    lines = [ln for ln in md.splitlines() if ln.startswith(f"| smollm2-135m | q4_1 | {HOST_TIER} | measured |")]
    assert [c.split(" | ")[6] for c in lines] == ["1", "2"]  # one line per load point, in load order
    for ln, p in zip(lines, points, strict=True):
        cells = [c.strip() for c in ln.strip("|").split("|")]
        assert cells[7] == "ok" and cells[8] == "4/4"
        assert cells[10] == f"{p['summary']['output_tps']:.1f}"
        assert cells[11] == f"{p['summary']['ttft_s']['p50'] * 1e3:.1f}"
        assert cells[18] == "-"  # the host as it is has no price
        assert "llama.cpp p=128 n=8, measured" in cells[19]  # the bench run row beside it
    page = (out / "report.html").read_text()
    for pid in ("serving-curve", "serving-goodput"):
        fig = page[page.index(f'data-plot="{pid}"'):]
        fig = fig[:fig.index("</figure>")]
        assert "<svg" in fig and "Not plotted" not in fig
        assert "c=1" in fig and "c=2" in fig  # each point labelled with its load
    assert 'id="serving"' in page
    with (out / "report-serving.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["mode"], float(r["load"])) for r in rows] == [("concurrency", 1.0), ("concurrency", 2.0)]
    assert float(rows[1]["output_tps"]) == pytest.approx(points[1]["summary"]["output_tps"])
    con = sqlite3.connect(out / "report.sqlite")
    assert con.execute("SELECT COUNT(*) FROM serving").fetchone()[0] == 2
    ttfts = con.execute("SELECT ttft_s FROM serving_requests JOIN serving ON serving.id = point_id "
                        "WHERE load = 2 ORDER BY request").fetchall()
    assert [t[0] for t in ttfts] == pytest.approx([sm.ttft(sm.RequestTrace(**q)) for q in points[1]["requests"]])
    con.close()
    # merged JSON lines keep both kinds, and read back the same
    proc = run_bench("report", str(results), "-o", str(tmp_path / "merged"), "-f", "jsonl,md")
    assert proc.returncode == 0, proc.stderr
    merged = read_jsonl(tmp_path / "merged" / "report.jsonl")
    assert sum(r.get("kind") == "serving" for r in merged) == 3 and sum("config" in r for r in merged) == 1


def test_nothing_to_plot_says_why(results):
    from bench.analysis.plots import SERVING_PLOTS

    assert all(make([]).why_not for make in SERVING_PLOTS)


def test_cost_at_load_only_where_the_speed_is_the_tiers(results):
    """A load point on this host under a priced tier is this host's speed: no $ from it. The same
    measurement of a server at another address that the user named the tier of has one: the tier's
    $/hour / (output tok/s x 3600) x 1e6."""
    from bench.analysis.serving import flatten_point

    d = _points(results / "serving" / "serve.jsonl")[1]
    d["profile"] = {"id": "laptop-4c-8g", "usd_per_hour": 0.05}
    here = flatten_point(ServingRow.from_dict(d))
    assert here["basis"].startswith("emulated on") and here["usd_per_1m_output_tokens"] is None
    d["target"] = {**d["target"], "managed": False, "base_url": "http://192.0.2.10:8080/v1"}
    remote = flatten_point(ServingRow.from_dict(d))
    assert remote["basis"] == "measured on the tier: the server at 192.0.2.10"
    assert remote["usd_per_1m_output_tokens"] == pytest.approx(0.05 / (d["summary"]["output_tps"] * 3600) * 1e6)


def test_a_bad_serving_line_is_a_warning_with_file_and_line(results, tmp_path):
    good = (results / "serving" / "serve.jsonl").read_text().splitlines()
    newer = json.loads(good[0])
    newer["serving_schema_version"] = 99
    pointless = json.loads(good[0])
    del pointless["load"]["mode"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join([good[0], json.dumps(newer), json.dumps(pointless), *good[1:]]) + "\n")
    proc = run_bench("report", str(bad), "-o", str(tmp_path / "out"), "-f", "md")
    assert proc.returncode == 0, proc.stderr
    assert f"{bad}:2: skipped serving row: serving schema version 99 is not supported" in proc.stderr
    assert f"{bad}:3: skipped serving row: bad serving row: a point without a load mode" in proc.stderr
    assert "## Warnings (2)" in (tmp_path / "out" / "report.md").read_text()
    from bench.results.files import read_rows

    rows, warnings = read_rows(bad)  # bench run's reader: a serving line is named, not dropped
    assert not rows and any(w.startswith(f"{bad}:1: skipped: a serving row (bench serve)") for w in warnings)


def test_compare_matches_points_and_flags_a_slower_one(results, tmp_path):
    base = results / "serving" / "serve.jsonl"
    same = run_bench("compare", str(base), str(base), "--markdown", str(tmp_path / "same.md"))
    assert same.returncode == 0, same.stderr
    assert "2 matching serving load point(s); 0 regression(s)" in same.stderr
    slow = tmp_path / "slow.jsonl"
    k = slower_copy(base, slow)
    proc = run_bench("compare", str(base), str(slow), "--markdown", str(tmp_path / "c.md"))
    assert proc.returncode == 1, proc.stderr  # a serving regression fails the gate
    md = (tmp_path / "c.md").read_text()
    section = md[md.index("### Serving under load"):]
    assert "2 matching load point(s), 2 regression(s)" in section
    rows = [ln for ln in section.splitlines() if ln.startswith("| smollm2-135m:q4_1 llama-server")]
    assert [r.split(" | ")[1] for r in rows] == ["**slower**", "**slower**"]
    ratios = [float(m.group(1)) for m in re.finditer(r"\| ([0-9.]+) \[[0-9.]+, [0-9.]+\]", section)]
    assert len(ratios) == 4
    for rate, ttft in zip(ratios[::2], ratios[1::2], strict=True):  # per point: output rate, then TTFT
        # printed with 3 decimals: 0.353 for 0.35264 is 3.6e-4 off, beyond a relative 1e-3
        assert rate == pytest.approx(1 / k, rel=1e-3, abs=5e-4) and ttft == pytest.approx(k, rel=1e-3, abs=5e-4)


CLAIMS = """\
schema_version: 1
name: Test claim under load
inexpensive: {{tiers: [{tier}]}}
criteria:
  decode_tps_min: {decode}
  ttft_s_max: 1000
  fits: true
  concurrent_users: {users}
"""


def _verdict(results: Path, tmp_path: Path, users: int, decode: float) -> list[str]:
    """``criterion=outcome: value`` of each check of the host's tier (from ``--json``: every value in full),
    and ``verdict=OUTCOME``; the Markdown is written too."""
    claims = tmp_path / f"claims-{users}-{decode}.yaml"
    claims.write_text(CLAIMS.format(tier=HOST_TIER, decode=decode, users=users))
    proc = run_bench("verdict", str(results), "--claims", str(claims), "--markdown", str(tmp_path / "v.md"), "--json")
    assert proc.returncode == 0, proc.stderr
    (tier,) = [t for t in json.loads(proc.stdout)["tiers"] if t["model"] == "smollm2-135m" and t["tier"] == HOST_TIER]
    return ([f"{c['criterion']}={c['outcome']}: {c['value']}" for c in tier["checks"]]
            + [f"verdict={tier['outcome']}"])


def test_verdict_judges_from_the_serving_point_at_that_concurrency(results, tmp_path):
    at2 = _points(results / "serving" / "serve.jsonl")[1]
    per_user = 1 / at2["summary"]["tpot_s"]["p50"]
    passing = _verdict(results, tmp_path, 2, per_user / 1.05)
    assert f"decode tok/s @2 users=pass: {per_user:.1f} tok/s per user (1 / TPOT p50" in " ".join(passing)
    assert any(c.startswith("TTFT @2 users=pass: ") and " s p90 at p=128" in c for c in passing)
    assert f"pass {per_user:.1f}" in (tmp_path / "v.md").read_text()  # the dashboard's short cell
    failing = _verdict(results, tmp_path, 2, per_user * 1.05)  # just above what each user got at c=2
    assert any(c.startswith("decode tok/s @2 users=fail: ") for c in failing)
    assert "verdict=fail" in failing


def test_verdict_without_a_point_at_that_concurrency_is_unmeasured(results, tmp_path):
    cells = _verdict(results, tmp_path, 3, 0.001)
    assert any(c.startswith("decode tok/s @3 users=unmeasured: no serving point at 3 concurrent users")
               and "bench serve -m smollm2-135m:q4_1 -p auto -c 3" in c for c in cells)
    assert "verdict=unmeasured" in cells
