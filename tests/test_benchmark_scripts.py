"""The fidelity benchmarks are scripts, not timed tests: here they only have to run on the real
embedded model and real tools and print their table (their numbers go in dated pages of
docs/measurements/, which the scripts write themselves with --markdown)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO


@pytest.fixture(scope="module")
def llama_bench(embedded_model) -> Path:
    from bench.native.tools import tool_path

    return tool_path("llama-bench", say=lambda line: print(line, file=sys.stderr))


@pytest.mark.model
@pytest.mark.slow
def test_llama_fidelity_prints_the_paired_table(tmp_path, llama_bench, embedded_gguf):
    out = tmp_path / "fidelity.json"
    proc = subprocess.run([sys.executable, "benchmarks/llama_fidelity.py", str(embedded_gguf), "--rounds", "2",
                           "-p", "16", "-n", "8", "-r", "3", "--llama-bench", str(llama_bench), "--json", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| file | prefill suite/llama-bench | decode suite/llama-bench |" in proc.stdout
    row = next(line for line in proc.stdout.splitlines() if line.startswith(f"| {embedded_gguf.name} |"))
    assert "cannot tell (too few rounds: 2)" in row  # two rounds settle nothing, and it says so
    table = json.loads(out.read_text())[str(embedded_gguf)]
    assert len(table["rounds"]) == 2
    assert set(table["rounds"][1]) == {"suite", "suite counters", "llama-bench"}
    for metric in ("prefill_tps", "decode_tps"):
        ratios = table["suite/llama-bench"][metric]["rounds"]
        assert len(ratios) == 2 and all(r > 0 for r in ratios)


@pytest.mark.model
@pytest.mark.slow
def test_hf_fidelity_prints_its_table(embedded_model):
    proc = subprocess.run([sys.executable, "benchmarks/hf_fidelity.py", "--rounds", "1", "--cases", "transformers"],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    row = next(line for line in proc.stdout.splitlines() if line.startswith("| transformers |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert float(cells[3]) > 0 and float(cells[4]) > 0 and cells[7] == "cannot tell (too few rounds: 1)"


@pytest.mark.model
@pytest.mark.slow
def test_quality_fidelity_prints_its_table(embedded_model):
    proc = subprocess.run([sys.executable, "benchmarks/quality_fidelity.py", "--model", "smollm2-135m",
                           "--variants", "q4_0-derived", "--reference", "f16", "--ctx", "128", "--chunks", "2"],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")]
            for line in proc.stdout.splitlines() if line.startswith("| ") and not line.startswith("| variant")}
    assert set(rows) == {"f16", "q4_0-derived"}
    # both tools score the same text with the same windows: a variant's perplexity and KLD are numbers from each
    assert float(rows["q4_0-derived"][1]) > 1 and float(rows["q4_0-derived"][2]) > 1
    assert float(rows["q4_0-derived"][4]) > 0 and float(rows["q4_0-derived"][5]) > 0


@pytest.mark.model
@pytest.mark.slow
def test_decode_suspects_prints_each_variant_and_writes_its_page(embedded_gguf, tmp_path):
    page = tmp_path / "2026-12-03-suspects.md"
    proc = subprocess.run([sys.executable, "benchmarks/decode_suspects.py", str(embedded_gguf), "--rounds", "2",
                           "-p", "16", "-n", "8", "--markdown", str(page)], cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = page.read_text()
    assert text.startswith("# Per-token suspects") and "decode_suspects.py" in text.splitlines()[2]
    assert proc.stdout.strip().splitlines()[-1] in text  # the page is what the script printed
    rows = {line.split("|")[1].strip(): line for line in proc.stdout.splitlines()
            if line.startswith("| ") and not line.startswith("| variant")}
    assert set(rows) == {"bare", "argmax", "suite", "suite+rss", "greedy-sampler", "Llama.eval"}
    assert rows["bare"].split("|")[2].strip() == "1.000"  # each round's bare against itself


@pytest.mark.model
@pytest.mark.slow
def test_hf_fidelity_in_one_process_prints_its_row(embedded_model):
    proc = subprocess.run([sys.executable, "benchmarks/hf_fidelity.py", "--in-process", "--rounds", "1"],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    row = next(line for line in proc.stdout.splitlines() if line.startswith("| transformers, one process |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert float(cells[1]) > 0 and float(cells[2]) > 0 and cells[5] == "cannot tell (too few rounds: 1)"


@pytest.mark.model
@pytest.mark.slow
def test_depth_sweep_pairs_the_suite_with_llama_bench_and_writes_its_page(tmp_path, llama_bench, embedded_gguf):
    out, page = tmp_path / "depth.json", tmp_path / "page.md"
    proc = subprocess.run([sys.executable, "benchmarks/depth_sweep.py", str(embedded_gguf), "--depth", "0,256",
                           "-p", "16", "-n", "8", "-r", "3", "--llama-bench", str(llama_bench), "--json", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    cells = json.loads(out.read_text())["cells"]
    assert [c["depth"] for c in cells] == [0, 256]
    for c in cells:
        (rnd,) = c["rounds"]
        assert set(rnd) == {"suite", "llama-bench"}
        assert rnd["llama-bench"]["tg_depth"] == c["depth"] + 16  # its decode after the fill and the prompt
        assert all(v > 0 for v in rnd["suite"]["decode_tps"] + rnd["llama-bench"]["decode_tps"])
        assert rnd["suite"]["predicted_memory"]["depth"] == c["depth"]
    proc = subprocess.run([sys.executable, "benchmarks/depth_sweep.py", "--page", str(page), str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    rows = [ln for ln in page.read_text().splitlines() if ln.startswith("| 0 |") or ln.startswith("| 256 |")]
    assert len(rows) == 2 and "benchmarks/depth_sweep.py" in page.read_text()


@pytest.mark.model
@pytest.mark.slow
def test_humaneval_log_writes_its_page(tmp_path, embedded_model):
    page, out = tmp_path / "page.md", tmp_path / "r.jsonl"
    proc = subprocess.run([sys.executable, "benchmarks/humaneval_log.py", "--model", "smollm2-135m", "--limit", "2",
                           "--out", str(out), "--page", str(page), "--", "--task-max-tokens", "32",
                           "--prompt-tokens", "8", "--gen-tokens", "4", "--no-progress"],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = page.read_text()
    row = json.loads(out.read_text().splitlines()[-1])
    assert f"| pass@1 | **{row['task']['accuracy']:.1%}" in text
    assert "bench run -m smollm2-135m --task humaneval" in text
    assert "| HumanEval/0 |" in text and "| HumanEval/1 |" in text and "**Sandbox on this host:**" in text
    assert "PROJECTIONS, not measurements" in text
    assert "Beside the published figure" not in text  # SmolLM2's developer published no HumanEval figure
