"""Backend options reach every pass of a cell. The timed pass, the quality pass and the task pass are
all started from the cell's one load configuration, so a quality cell with an option that changes
the numbers (dtype, bits, precision) scores differently from the same cell without it, and each
pass records the options it ran with. The reference is scored at full precision by its plain
backend, keyed by how it was loaded."""

from __future__ import annotations

import json

import pytest
from conftest import read_jsonl, require_or_skip, run_bench, skip_unless_required

require_or_skip("torch", "the hf extra is not installed")  # CI installs it (README setup) and requires it

from bench.backends import BACKENDS, check_available  # noqa: E402
from bench.errors import BenchError  # noqa: E402

pytestmark = pytest.mark.slow

QUALITY = ["--quality", "--quality-ctx", "64", "--quality-chunks", "2", "--reference", "hf-f32"]
CELL = ["run", "--no-progress", "--prompt-tokens", "8", "--gen-tokens", "4", "-m", "smollm2-135m:hf-f32"]


def _available(backend: str) -> bool:
    try:
        check_available(BACKENDS[backend])
    except BenchError:
        return False
    return True


def _row(tmp_path, backend: str, *opts: str, extra: tuple[str, ...] = ()) -> dict:
    out = tmp_path / f"{backend}-{'-'.join(opts) or 'default'}.jsonl"
    args = [*CELL, "--backend", backend, *QUALITY, *extra, "-o", str(out)]
    for o in opts:
        args += ["--backend-opt", o]
    proc = run_bench(*args, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (row,) = read_jsonl(out)
    assert row["quality"]["status"] == "ok", row["quality"]
    return row


CASES = [  # backend, the option that changes the numbers, and what the cell uses without it
    ("transformers", "dtype=bf16", ()),
    ("bitsandbytes", "bits=8", ("bits=4",)),
    ("onnxruntime", "precision=int8", ()),
]


@pytest.mark.parametrize("backend,option,baseline", CASES, ids=[c[0] for c in CASES])
def test_an_option_that_changes_the_numbers_changes_the_quality(tmp_path, embedded_model, backend, option, baseline):
    if not _available(backend):
        skip_unless_required(f"backend {backend} is not installed here")
    with_opt = _row(tmp_path, backend, option)
    without = _row(tmp_path, backend, *baseline)
    key, value = option.split("=")
    # every pass records the options it ran with: the timed one, the quality pass
    assert with_opt["config"]["backend_options"][key] == value
    assert with_opt["environment"]["backend"]["load"]["options"][key] == value
    assert with_opt["quality"]["load"]["options"][key] == value
    assert with_opt["quality"]["load"]["backend"] == backend
    assert without["quality"]["load"]["options"].get(key) != value
    # the reference: the same file at full precision through transformers, for both cells alike
    for r in (with_opt, without):
        assert r["quality"]["reference"]["load"]["backend"] == "transformers"
        assert r["quality"]["reference"]["load"]["options"] == {"dtype": "fp32"}
    assert with_opt["quality"]["reference"]["cache"] == without["quality"]["reference"]["cache"]
    # the option changed what the quality pass computed
    assert with_opt["quality"]["perplexity"] != without["quality"]["perplexity"]
    assert with_opt["quality"]["kld"]["mean"] != without["quality"]["kld"]["mean"]


def test_transformers_fp32_against_its_own_fp32_reference_is_near_zero_and_bf16_is_not(tmp_path, embedded_model):
    """KLD measures what the cell's dtype loses: fp32 against the fp32 reference is float16 storage
    rounding only, bf16 is measurably more."""
    fp32 = _row(tmp_path, "transformers")
    bf16 = _row(tmp_path, "transformers", "dtype=bf16")
    assert fp32["quality"]["kld"]["mean"] < 1e-3
    assert bf16["quality"]["kld"]["mean"] > 5 * fp32["quality"]["kld"]["mean"]


def test_the_task_pass_runs_with_the_cells_options(tmp_path, embedded_model):
    items = tmp_path / "tiny.jsonl"
    items.write_text("".join(json.dumps({"question": f"What is {i} plus {i}?",
                                         "answer": f"{i}+{i}={2 * i} #### {2 * i}"}) + "\n" for i in range(1, 5)))
    out = tmp_path / "task.jsonl"
    proc = run_bench(*CELL, "--backend", "transformers", "--backend-opt", "dtype=bf16", "--task", str(items),
                     "--task-shots", "2", "--task-limit", "2", "--task-max-tokens", "16", "--task-ctx", "512",
                     "-o", str(out), timeout=1200)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (row,) = read_jsonl(out)
    assert row["task"]["status"] == "ok"
    assert row["task"]["load"]["options"] == {"dtype": "bf16"} and row["task"]["load"]["n_ctx"] == 512
    assert row["config"]["task"]["n_ctx"] == 512


def test_references_loaded_differently_never_share_a_cache(embedded_model):
    from dataclasses import replace

    from bench.datafiles import find_data_path
    from bench.orchestrate import plan_request
    from bench.request import request_from_cli

    req = request_from_cli({"models": ["smollm2-135m:hf-f32"], "backends": ["transformers"],
                            "prompt_tokens": [8], "gen_tokens": [4],
                            "quality": {"n_ctx": 64, "chunks": 2, "reference": "hf-f32"}})
    (plan,) = plan_request(req, find_data_path("models.yaml", None, "BENCH_CATALOG"),
                           find_data_path("hardware_profiles", None, "BENCH_PROFILES"))
    capped = replace(plan, config=replace(plan.config, backend_options={"vram_fraction": 0.5}))
    assert capped.reference_load().options == {"dtype": "fp32", "vram_fraction": 0.5}
    assert plan.reference_cache_key("c" * 64) != capped.reference_cache_key("c" * 64)
    bf16 = replace(plan, config=replace(plan.config, backend_options={"dtype": "bf16"}))
    assert bf16.reference_cache_key("c" * 64) == plan.reference_cache_key("c" * 64)  # same fp32 reference


def test_an_option_the_backend_does_not_read_is_refused(tmp_path, embedded_model):
    from conftest import assert_clean_error

    assert_clean_error(run_bench("run", "--backend-opt", "dtyp=bf16", "-o", str(tmp_path / "r.jsonl")),
                       "backend llama.cpp has no option 'dtyp'")
