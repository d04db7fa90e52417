"""The GitHub Actions workflow is valid YAML, runs the README's own blocks through `.ci/run` (as the
project's own CI does) before its benchmark gate, and every `bench` / `pytest` command in it parses
with the suite's real argument parsers (an option renamed in the code fails here, not in CI)."""

from __future__ import annotations

import shlex

import pytest
import yaml
from conftest import REPO

pytestmark = pytest.mark.fast

WORKFLOW = REPO / ".github" / "workflows" / "bench.yml"
BENCH, PYTEST = ".venv/bin/bench", ".venv/bin/python -m pytest"


def _steps() -> list[dict]:
    return yaml.safe_load(WORKFLOW.read_text())["jobs"]["bench"]["steps"]


def _commands() -> list[list[str]]:
    """Each `bench ...` or `pytest ...` command line of the workflow, as the suite's own venv runs it."""
    out = []
    for step in _steps():
        script = step.get("run", "").replace("\\\n", " ")
        for line in script.splitlines():
            line = line.strip()
            if line.startswith((BENCH + " ", PYTEST + " ")):
                words = shlex.split(line)
                out.append(["bench", *words[1:]] if words[0] == BENCH else ["pytest", *words[3:]])
            assert not line.startswith(("bench ", "pytest ", "pip install")), f"not the README's venv: {line}"
    return out


def test_workflow_structure():
    doc = yaml.safe_load(WORKFLOW.read_text())
    triggers = doc.get("on") or doc.get(True)  # YAML 1.1 reads a bare `on` key as True
    assert "pull_request" in triggers and "push" in triggers
    names = [s.get("name", s.get("uses", "")) for s in _steps()]
    assert any("bench compare" in n for n in names) and any("pytest-benchmark" in n for n in names)


def test_the_workflow_runs_the_readme_blocks_before_the_gate():
    """The same blocks as the project's CI: setup (python -m bench.install), `bench run`, ruff and the
    whole test suite, through `.ci/run`, before any benchmark step."""
    runs = [s.get("run", "").strip() for s in _steps()]
    assert ".ci/run" in runs
    first_bench = next(i for i, r in enumerate(runs) if r.startswith(BENCH))
    assert runs.index(".ci/run") < first_bench
    ci = (REPO / ".ci" / "run").read_text()
    assert "for step in setup run test" in ci
    readme = (REPO / "README.md").read_text()
    for step in ("setup", "run", "test"):
        assert f"<!-- ci:{step} -->" in readme
    assert "python -m pytest" in readme.split("<!-- ci:test -->", 1)[1].split("```", 2)[1]


def test_every_bench_command_parses():
    from bench.cli import build_parser

    cmds = [c for c in _commands() if c[0] == "bench"]
    assert {c[1] for c in cmds} >= {"run", "compare", "report"}
    for cmd in cmds:
        build_parser().parse_args(cmd[1:])  # exits with status 2 on an unknown option


def test_pytest_benchmark_options_exist(pytestconfig):
    cmd = next(c for c in _commands() if c[0] == "pytest")
    assert cmd[1] == "tests/benchmarks" and (REPO / cmd[1]).is_dir()
    known = {opt for grp in pytestconfig._parser._groups for o in grp.options for opt in o.names()}
    for arg in cmd[2:]:
        name = arg.split("=", 1)[0]
        assert name in known, f"pytest has no option {name}"
