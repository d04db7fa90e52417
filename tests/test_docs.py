"""The README is a front door and docs/ holds the rest: every relative link resolves, every `bench`
command shown in a `sh` block parses with the real CLI parser, and the README stays short."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from bench.cli import build_parser

pytestmark = pytest.mark.fast

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```(\w*)\s*$")


def _links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)  # not inside code blocks
    return [m.group(1) for m in LINK.finditer(text)]


def _sh_commands(page: Path) -> list[str]:
    """The `bench ...` lines of the page's sh blocks, without comments or continuation."""
    out, lang = [], None
    for line in page.read_text(encoding="utf-8").splitlines():
        m = FENCE.match(line)
        if m:
            lang = None if lang is not None else (m.group(1) or "")
            continue
        if lang == "sh":
            cmd = line.split(" #", 1)[0].strip()
            if cmd.startswith(("bench ", ".venv/bin/bench")) or cmd in ("bench", ".venv/bin/bench"):
                out.append(cmd)
    return out


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path) -> None:
    broken = []
    for target in _links(page):
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue  # a URL or an anchor on the same page
        path = (page.parent / target.split("#", 1)[0]).resolve()
        if not path.exists():
            broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)}: links to missing files: {broken}"


def test_every_readme_command_parses() -> None:
    commands = _sh_commands(ROOT / "README.md")
    assert len(commands) >= 15, commands  # the README shows one example per command
    parser = build_parser()
    for cmd in commands:
        argv = shlex.split(cmd)[1:]
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # the parser's one-line error
            pytest.fail(f"README command does not parse ({exc.code}): {cmd}")
        assert getattr(args, "command", None), cmd


def test_readme_is_a_front_door() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; reference material belongs in docs/"
    for step in ("setup", "run", "test"):  # .ci/run runs these blocks
        assert f"<!-- ci:{step} -->" in lines


def test_the_readme_shows_the_newest_verdict_as_the_command_wrote_it() -> None:
    """README's verdict block is the answer paragraph of the newest verdict page, copied by
    benchmarks/readme_verdict.py (never edited by hand)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("readme_verdict", ROOT / "benchmarks" / "readme_verdict.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert mod.block(mod.newest_page()) in text, "run: python benchmarks/readme_verdict.py"


def test_the_readme_projection_table_is_the_newest_validation_page() -> None:
    """README's test-split table carries the figures `python -m bench.projection.validate --markdown`
    wrote on the newest dated validation page (each row's n, median, within 35% and coverage)."""
    page = sorted((ROOT / "docs" / "measurements").glob("*-perfmodel-validation.md"))[-1]
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert page.name in readme, f"README links an older validation page than {page.name}"
    test_block = page.read_text(encoding="utf-8").split(" TEST split, never fitted:", 1)[1].split("Prefill tok/s", 1)[0]
    line = re.compile(r"^\s+(as rows get it|formula only|naive 0.6 x peak / bytes, same \d+ entries)\s+n=(\d+)\s+"
                      r"median \|err\|\s+([\d.]+)%\s+within 35%\s+(\d+)%.*?in interval\s+(\S+)", re.M)
    rows = {m[1].split(",")[0][:5]: m for m in line.finditer(test_block)}  # "as ro", "formu", "naive"
    labels = {"as ro": "as `bench` projects a tier", "formu": "from a machine's figures alone",
              "naive": "naive rule: 0.6 x datasheet peak"}
    assert set(rows) == set(labels), f"{page.name}: test-split lines not found"
    for key, label in labels.items():
        m = rows[key]
        row = next((r for r in readme.splitlines() if r.startswith(f"| {label}")), None)
        assert row is not None, f"README lacks the row '{label}'"
        cells = [c.strip() for c in row.strip("|").split("|")][1:]
        assert cells == [m[2], f"{m[3]}%", f"{m[4]}%", m[5]], (row, m.group(0))
