"""`bench --help` stays instant: the CLI module imports no heavy library at start-up."""

import os
import subprocess
import sys

import pytest
from conftest import REPO, run_bench

HEAVY = ("pydantic", "yaml", "rich", "llama_cpp", "numpy", "psutil", "huggingface_hub", "torch", "gguf")


@pytest.mark.fast
def test_cli_module_imports_nothing_heavy():
    code = ("import sys, bench.cli; bench.cli.build_parser(); "
            f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


@pytest.mark.fast
def test_help_lists_commands():
    proc = run_bench("--help")
    assert proc.returncode == 0
    for cmd in ("run", "models", "profiles"):
        assert cmd in proc.stdout


@pytest.mark.fast
def test_unknown_option_is_one_line_exit_2():
    proc = run_bench("run", "--no-such-option")
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.model
def test_an_internal_error_has_its_own_exit_status():
    """A bug (any exception that is not bad input) exits 3, not 1 (a cell that did not succeed): one
    line on stderr, the traceback with BENCH_DEBUG=1. A command that divides by zero stands in for the bug,
    behind the real entry point."""
    code = ("import sys, bench.cli as cli; cli.COMMANDS['profiles'] = lambda args: 1 // 0; "
            "sys.exit(cli.main(['profiles', 'list']))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "bench: internal error: ZeroDivisionError: integer division or modulo by zero (a bug, exit status 3; "
        "BENCH_DEBUG=1 shows the traceback)"]
    debug = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                           env={**os.environ, "BENCH_DEBUG": "1"})
    assert debug.returncode != 0 and "Traceback" in debug.stderr
    assert "3 internal error" in run_bench("--help").stdout
