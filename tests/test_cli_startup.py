"""`bench --help` stays instant: the CLI module imports no heavy library at start-up."""

import subprocess
import sys

from conftest import REPO, run_bench

HEAVY = ("pydantic", "yaml", "rich", "llama_cpp", "numpy", "psutil", "huggingface_hub", "torch", "gguf")


def test_cli_module_imports_nothing_heavy():
    code = ("import sys, bench.cli; bench.cli.build_parser(); "
            f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_help_lists_commands():
    proc = run_bench("--help")
    assert proc.returncode == 0
    for cmd in ("run", "models", "profiles"):
        assert cmd in proc.stdout


def test_unknown_option_is_one_line_exit_2():
    proc = run_bench("run", "--no-such-option")
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1
