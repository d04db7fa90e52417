"""The GitHub Actions workflow is valid YAML, and every `bench` / `pytest` command in it parses
with the suite's real argument parsers (an option renamed in the code fails here, not in CI)."""

from __future__ import annotations

import shlex

import yaml
from conftest import REPO

WORKFLOW = REPO / ".github" / "workflows" / "bench.yml"


def _commands() -> list[list[str]]:
    doc = yaml.safe_load(WORKFLOW.read_text())
    out = []
    for step in doc["jobs"]["bench"]["steps"]:
        script = step.get("run", "").replace("\\\n", " ")
        for line in script.splitlines():
            line = line.strip()
            if line.startswith(("bench ", "pytest ")):
                out.append(shlex.split(line))
    return out


def test_workflow_structure():
    doc = yaml.safe_load(WORKFLOW.read_text())
    triggers = doc.get("on") or doc.get(True)  # YAML 1.1 reads a bare `on` key as True
    assert "pull_request" in triggers and "push" in triggers
    names = [s.get("name", s.get("uses", "")) for s in doc["jobs"]["bench"]["steps"]]
    assert any("bench compare" in n for n in names) and any("pytest-benchmark" in n for n in names)


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
