"""What was not measured is null with the reason, never 0: VRAM a process NVML does not list, and
an interval with no validation band (no cheap end of $0.00, no fast end of 0 s). The KV term of a
header without head_count_kv is in test_tiers.py, total tok/s with an uncounted prompt in
test_serving_metrics.py."""

from __future__ import annotations

import json

import pytest
from conftest import read_jsonl, run_bench


@pytest.mark.fast
def test_vram_of_a_process_nvml_does_not_list_is_unknown_not_zero():
    from bench.measuring.trackers import nvml_peak_report
    from bench.serving.server import server_vram

    assert nvml_peak_report(3 * 2**30, 10, 10, None) == {"peak_vram_nvml_process_bytes": 3 * 2**30}
    never = nvml_peak_report(None, 12, 0, None)
    assert "peak_vram_nvml_process_bytes" not in never
    assert never["vram_nvml_unavailable"].startswith("this process was not in NVML's list")
    no_figure = nvml_peak_report(None, 12, 12, None)
    assert "without a memory figure" in no_figure["vram_nvml_unavailable"]
    assert nvml_peak_report(None, 0, 0, "NVMLError_DriverNotLoaded: Driver Not Loaded") == {
        "vram_nvml_unavailable": "NVMLError_DriverNotLoaded: Driver Not Loaded"}
    assert server_vram(1234, [2**30, 2**29])["vram_bytes"] == 2**30 + 2**29
    for figures, why in (([], "not in NVML's list"), ([None], "without a memory figure")):
        got = server_vram(1234, figures)
        assert got["vram_bytes"] is None and why in got["unavailable"]


@pytest.mark.model
def test_an_interval_without_a_band_is_unavailable_not_zero(measured_results, tmp_path):
    """A real emulated row whose projection came without a validation band, as the performance
    model before bench.projection stored it (low 0, high infinity, i.e. null in JSON; rows written
    then are still read): the report and the verdict say the interval is unavailable and why, and
    the verdict judges no pessimistic end of 0 tok/s. (bench.projection itself leaves a metric
    without a band unprojected, with why.)"""
    from bench.analysis.report import interval_text

    rows = read_jsonl(measured_results)
    row = next(r for r in rows if r["config"]["profile_id"] == "laptop-4c-8g" and r["status"] == "ok")
    for metric in ("decode_tps", "ttft_s", "prefill_tps", "tpot_s"):
        p = row["efficiency"]["projection"].get(metric)
        if p:
            p["low"], p["high"] = 0.0, None  # as stored: infinity is null in JSON
            p.setdefault("inputs", {})["interval"] = "none: no validation band for this device class"
    row["efficiency"]["cost"]["usd_per_1m_output_tokens_interval"] = [0.0, None]
    banded = tmp_path / "r.jsonl"
    banded.write_text(json.dumps(row) + "\n")
    out = tmp_path / "report"
    proc = run_bench("report", str(banded), "-o", str(out), "-f", "md")
    assert proc.returncode == 0, proc.stderr
    md = (out / "report.md").read_text()
    line = next(ln for ln in md.splitlines() if ln.startswith(f"- {row['config']['model_id']}:") and "PROJECTION" in ln)
    assert "(interval unavailable (its interval is unknown (none: no validation band" in line
    assert "0.0-" not in line
    assert interval_text(None, 12.5, ".1f", "no band") == "unavailable (no band)-12.5"
    proc = run_bench("verdict", str(banded), "--json")
    assert proc.returncode == 0, proc.stderr
    (tier,) = json.loads(proc.stdout)["tiers"]
    decode = next(c for c in tier["checks"] if c["criterion"] == "decode tok/s")
    assert decode["outcome"] == "unmeasured" and "no pessimistic end to judge" in decode["value"]
    assert "0.0 tok/s" not in decode["value"]
