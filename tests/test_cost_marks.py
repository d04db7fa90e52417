"""The test suite's own rules (tests/conftest.py): a test without a cost mark, or a fast one that loads the
model, refuses the whole run; a missing extra is a skip, or a failure where BENCH_REQUIRE_EXTRAS=1 (CI).
Each case is a real pytest run of a small test file beside a copy of the suite's conftest."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

pytestmark = pytest.mark.model  # a pytest subprocess per case: about a second each

INI = """[pytest]
markers =
    fast: f
    model: m
    slow: s
"""


def _pytest(tmp_path: Path, test_source: str, **env: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "conftest.py").write_text((REPO / "tests" / "conftest.py").read_text())
    (tmp_path / "pytest.ini").write_text(INI)
    (tmp_path / "test_case.py").write_text(test_source)
    full_env = {k: v for k, v in os.environ.items() if k != "BENCH_REQUIRE_EXTRAS"} | env
    full_env["PYTHONPATH"] = os.pathsep.join([str(REPO), full_env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", str(tmp_path)],
                          cwd=tmp_path, env=full_env, capture_output=True, text=True, timeout=120)


def test_an_unmarked_test_refuses_the_run(tmp_path):
    proc = _pytest(tmp_path, "import pytest\n\n@pytest.mark.fast\ndef test_marked():\n    pass\n\n"
                             "def test_unmarked():\n    pass\n")
    assert proc.returncode == 4, proc.stdout + proc.stderr  # pytest's usage error: nothing ran
    assert "test_case.py::test_unmarked: no cost mark" in proc.stdout + proc.stderr
    assert "test_marked" not in (proc.stdout + proc.stderr).replace("test_case.py::test_unmarked", "")


def test_a_fast_test_that_uses_the_model_refuses_the_run(tmp_path):
    proc = _pytest(tmp_path, "import pytest\n\n@pytest.mark.fast\ndef test_it(embedded_model):\n    pass\n")
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "marked fast but uses the model fixture embedded_model" in proc.stdout + proc.stderr


def test_fast_in_a_module_marked_model_refuses_the_run(tmp_path):
    proc = _pytest(tmp_path, "import pytest\n\npytestmark = pytest.mark.model\n\n"
                             "@pytest.mark.fast\ndef test_it():\n    pass\n")
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "fast together with ['model']" in proc.stdout + proc.stderr


MISSING_EXTRA = """import pytest
from conftest import require_or_skip

pytestmark = pytest.mark.fast
require_or_skip("bench_no_such_module", "the xyz extra is not installed")


def test_it():
    pass
"""


def test_a_missing_extra_is_a_skip_here_and_a_failure_in_ci(tmp_path):
    proc = _pytest(tmp_path, MISSING_EXTRA)
    assert proc.returncode == 5 and "1 skipped" in proc.stdout, proc.stdout + proc.stderr  # 5: no test ran
    assert "the xyz extra is not installed" in proc.stdout
    proc = _pytest(tmp_path, MISSING_EXTRA, BENCH_REQUIRE_EXTRAS="1")
    assert proc.returncode == 2 and "1 error" in proc.stdout, proc.stdout + proc.stderr  # the module fails to load
    assert "BENCH_REQUIRE_EXTRAS=1 but bench_no_such_module cannot be imported" in proc.stdout


def test_an_installed_extra_is_imported_and_returned(tmp_path):
    proc = _pytest(tmp_path, "import pytest\nfrom conftest import require_or_skip\n\n@pytest.mark.fast\n"
                             "def test_it():\n    assert require_or_skip('json', 'stdlib').dumps(1) == '1'\n",
                   BENCH_REQUIRE_EXTRAS="1")
    assert proc.returncode == 0 and "1 passed" in proc.stdout, proc.stdout + proc.stderr
