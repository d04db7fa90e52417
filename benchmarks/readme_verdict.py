"""Copy the newest verdict's answer into README.md, so the README shows the verdict as the command
wrote it, never a hand-edited one.

    python benchmarks/readme_verdict.py                       # newest docs/measurements/*-verdict.md
    python benchmarks/readme_verdict.py docs/measurements/2026-12-03-verdict.md

The page is what ``bench verdict --run --markdown PAGE`` wrote; its answer is the paragraph after
the title. README.md holds it between ``<!-- verdict:begin -->`` and ``<!-- verdict:end -->``, with
a link to the page (tests/test_docs.py checks the two agree).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- verdict:begin -->", "<!-- verdict:end -->"


def newest_page() -> Path:
    pages = sorted((REPO / "docs" / "measurements").glob("*-verdict.md"))
    if not pages:
        raise SystemExit("no docs/measurements/*-verdict.md: run bench verdict --run --markdown PAGE first")
    return pages[-1]


def answer(page: Path) -> str:
    """The paragraph after the page's title: the verdict's answer per origin."""
    blocks = [b.strip() for b in page.read_text(encoding="utf-8").split("\n\n")]
    if not blocks or not blocks[0].startswith("# Verdict"):
        raise SystemExit(f"{page}: not a verdict page (no '# Verdict' title)")
    return blocks[1]


def block(page: Path) -> str:
    rel = page.relative_to(REPO).as_posix()
    return f"{BEGIN}\n> {answer(page)}\n\n([{Path(rel).name}]({rel}), written by the command)\n{END}"


def main(argv: list[str]) -> int:
    page = (Path(argv[0]).resolve() if argv else newest_page())
    readme = REPO / "README.md"
    text = readme.read_text(encoding="utf-8")
    if BEGIN not in text or END not in text:
        raise SystemExit(f"README.md has no {BEGIN} ... {END} block")
    new = re.sub(re.escape(BEGIN) + r".*?" + re.escape(END), lambda _: block(page), text, flags=re.S)
    readme.write_text(new, encoding="utf-8")
    print(f"README.md: the verdict of {page.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
