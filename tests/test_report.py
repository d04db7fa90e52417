"""`bench report` on real rows from the suite: every format, merged hosts, bad input, and the
HTML page rendered in a real headless Chromium with each plot screenshotted."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import sqlite3

import pytest
from conftest import assert_clean_error, read_jsonl, run_bench

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory, measured_results):
    out = tmp_path_factory.mktemp("report")
    proc = run_bench("report", str(measured_results), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["report.csv", "report.html", "report.md", "report.sqlite"]
    return out


def test_markdown_lists_every_row_failures_and_the_pareto_front(report_dir, measured_results):
    md = (report_dir / "report.md").read_text()
    rows = read_jsonl(measured_results)
    table = [ln for ln in md.splitlines() if ln.startswith("| smollm2-135m |")]
    assert len(table) == len(rows) == 6
    assert "## Cells that did not complete" in md and md.count("**does_not_fit**") == 2
    front = md.split("## Pareto front: decode speed vs quality loss", 1)[1]
    assert "smollm2-135m on laptop-4c-8g (vs f16):" in front and "q8_0-derived/llama.cpp" in front


def test_csv_and_sqlite_hold_the_same_rows_and_the_raw_samples(report_dir, measured_results):
    rows = read_jsonl(measured_results)
    with (report_dir / "report.csv").open() as fh:
        records = list(csv.DictReader(fh))
    assert len(records) == len(rows)
    by_key = {r["cell_key"]: r for r in rows}
    for rec in records:
        row = by_key[rec["cell_key"]]
        assert rec["status"] == row["status"]
        if row["status"] == "ok":
            assert float(rec["decode_tps_mean"]) == pytest.approx(row["summary"]["decode_tps"]["mean"])
    con = sqlite3.connect(report_dir / "report.sqlite")
    assert con.execute("SELECT count(*) FROM rows").fetchone()[0] == len(rows)
    n_samples = sum(len(r["samples"]) for r in rows)
    assert con.execute("SELECT count(*) FROM samples").fetchone()[0] == n_samples == 4 * 3
    # raw timestamps survive: decode tok/s recomputed from them matches the stored sample
    times, decode = con.execute("SELECT token_times_json, decode_tps FROM samples LIMIT 1").fetchone()
    t = json.loads(times)
    assert (len(t) - 1) / (t[-1] - t[0]) == pytest.approx(decode)
    kld = con.execute("SELECT kld_mean FROM rows WHERE variant = 'q8_0-derived' AND status = 'ok'").fetchall()
    assert len(kld) == 2 and all(k[0] > 0 for k in kld)


def test_html_is_self_contained(report_dir):
    page = (report_dir / "report.html").read_text()
    assert page.count("<svg") >= 4
    for needle in ("<script src", "<link ", "<img ", "url(http", "@import"):
        assert needle not in page  # nothing to fetch: the page works offline


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.fixture(scope="module")
def browser():
    binary, driver = _chromium(), shutil.which("chromedriver")
    if not (binary and driver):
        if os.environ.get("BENCH_REQUIRE_BROWSER"):
            pytest.fail("BENCH_REQUIRE_BROWSER is set but chromium/chromedriver are missing "
                        "(apt-get install chromium chromium-driver)")
        pytest.skip("no chromium + chromedriver here (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1200,6000"):
        opts.add_argument(arg)
    opts.binary_location = binary
    d = webdriver.Chrome(service=Service(driver), options=opts)
    yield d
    d.quit()


# Colors each plot must show when drawn (matplotlib's palette in bench.analysis.plots).
BLUE = (31, 119, 180)
EXPECTED_COLOR = {"speed-quality": BLUE, "tiers": BLUE, "memory": BLUE, "itl": BLUE}


def test_html_plots_render_in_a_real_browser(browser, report_dir, tmp_path):
    from PIL import Image
    from selenium.webdriver.common.by import By

    browser.get((report_dir / "report.html").as_uri())
    figures = browser.find_elements(By.CSS_SELECTOR, "figure[data-plot]")
    assert [f.get_attribute("data-plot") for f in figures] == list(EXPECTED_COLOR)
    for fig in figures:
        name = fig.get_attribute("data-plot")
        svgs = fig.find_elements(By.TAG_NAME, "svg")
        assert svgs, f"{name}: not plotted: {fig.text}"
        assert svgs[0].size["width"] > 300 and svgs[0].size["height"] > 150, (name, svgs[0].size)
        png = fig.screenshot_as_png
        (tmp_path / f"{name}.png").write_bytes(png)
        img = Image.open(io.BytesIO(png)).convert("RGB")
        pixels = img.get_flattened_data() if hasattr(img, "get_flattened_data") else img.getdata()
        counts = {"ink": 0, "color": 0}
        for p in pixels:
            counts["ink"] += sum(p) < 600
            counts["color"] += p == EXPECTED_COLOR[name]
        assert counts["ink"] > 0.01 * img.width * img.height, (name, counts)  # axes, labels, marks
        assert counts["color"] > 40, (name, counts)  # the data itself was drawn (a marker is ~25 px)
    table = browser.find_element(By.TAG_NAME, "table")
    assert len(table.find_elements(By.CSS_SELECTOR, "tbody tr")) == 6


def test_rows_from_two_machines_merge_into_one_report(tmp_path, measured_results):
    """A second machine's file: the same rows re-hosted (as if copied from a laptop). Both hosts
    stay visible; a file given twice counts once."""
    rows = read_jsonl(measured_results)
    other = tmp_path / "laptop.jsonl"
    with other.open("w") as fh:
        for r in rows:
            r = json.loads(json.dumps(r))
            r["environment"]["host"]["hostname"] = "laptop-b"
            r["run_id"] = "otherhost01"
            fh.write(json.dumps(r) + "\n")
    out = tmp_path / "merged"
    proc = run_bench("report", str(measured_results), str(other), str(measured_results), "-o", str(out),
                     "-f", "md,jsonl")
    assert proc.returncode == 0, proc.stderr
    merged = read_jsonl(out / "report.jsonl")
    assert len(merged) == 2 * len(rows)
    here = rows[0]["environment"]["host"]["hostname"]
    assert {r["environment"]["host"]["hostname"] for r in merged} == {"laptop-b", here}
    assert "auto@laptop-b" in (out / "report.md").read_text()


def test_damaged_and_old_lines_are_reported_with_line_numbers(tmp_path, measured_results):
    lines = measured_results.read_text().splitlines()
    old = json.loads(lines[0])
    old["schema_version"] = 0
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join([lines[0], "{not json", json.dumps(old)] + lines[1:]) + "\n")
    proc = run_bench("report", str(bad), "-o", str(tmp_path / "out"), "-f", "md")
    assert proc.returncode == 0, proc.stderr
    assert f"{bad}:2: skipped unreadable row" in proc.stderr
    assert f"{bad}:3: skipped unreadable row: result schema version 0 is not supported" in proc.stderr
    md = (tmp_path / "out" / "report.md").read_text()
    assert "## Warnings (2)" in md


def test_report_bad_input(tmp_path):
    assert_clean_error(run_bench("report", str(tmp_path / "missing.jsonl")), "results file not found")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("{broken\n")
    proc = run_bench("report", str(empty), "-o", str(tmp_path / "o"))
    assert proc.returncode == 2 and "no readable result rows" in proc.stderr and "Traceback" not in proc.stderr
    (tmp_path / "dir").mkdir()
    assert_clean_error(run_bench("report", str(tmp_path / "dir")), "has no *.jsonl")


def test_verdict_page_renders_in_a_real_browser(browser, measured_results, tmp_path):
    """`bench verdict --html`: the report's style, one table per model whose cells are coloured by
    outcome, every `? (n)` a link to its reason, and nothing wider than the window."""
    from selenium.webdriver.common.by import By

    page = tmp_path / "verdict.html"
    proc = run_bench("verdict", str(measured_results), "--html", str(page))
    assert proc.returncode == 0, proc.stderr
    text = page.read_text()
    for needle in ("<script", "<link ", "<img ", "url(http", "@import"):
        assert needle not in text
    browser.get(page.as_uri())
    assert browser.find_element(By.TAG_NAME, "h1").text.startswith("Verdict: ")
    assert browser.find_element(By.ID, "answer").text.startswith("From US: ")
    (table,) = browser.find_elements(By.CSS_SELECTOR, "table.verdict")
    rows = table.find_elements(By.CSS_SELECTOR, "tbody tr")
    assert len(rows) == 3  # this host as it is, laptop-4c-8g and the 50 MB tier, each once
    fail = table.find_element(By.CSS_SELECTOR, "td.fail")
    assert fail.text.startswith("FAIL") and fail.value_of_css_property("background-color") == "rgba(253, 236, 234, 1)"
    assert table.find_element(By.CSS_SELECTOR, "td.pass").value_of_css_property("background-color") == \
        "rgba(232, 245, 233, 1)"
    links = table.find_elements(By.CSS_SELECTOR, "td.unmeasured a")
    assert links
    for a in links:
        target = a.get_attribute("href").split("#", 1)[1]
        assert browser.find_element(By.ID, target).text.strip()  # the reason it points to, in full
    width = browser.execute_script("return document.documentElement.scrollWidth")
    assert width <= browser.execute_script("return window.innerWidth")
    (tmp_path / "verdict.png").write_bytes(browser.get_screenshot_as_png())
