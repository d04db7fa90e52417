"""HumanEval pass@1 of a catalog model, written as a dated measurement page beside its published figure.

    python benchmarks/humaneval_log.py --model qwen2.5-coder-1.5b-instruct --limit 40 [--timeout 3600]
                                       [--out RESULTS.jsonl | --results FILE.jsonl] [--page PAGE.md] [-- FLAGS]

Runs ``bench run -m MODEL --task humaneval --task-limit N`` (or, with ``--results`` pointing to an
existing file, reads its newest humaneval row instead) and writes the page: the exact command, host
and date, pass@1 with its standard error, the time (measured here, and per solved problem projected
onto the priced tiers, labelled PROJECTION), the comparison with the developer's published figure
(bench.quality.published, the rule the verdict uses), the sandbox's isolation on this host, the
error kinds, and every problem's outcome.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def run(model: str, limit: int, timeout: float, out: Path, extra: list[str]) -> list[str]:
    cmd = ["bench", "run", "-m", model, "--task", "humaneval", "--task-limit", str(limit), "--timeout", f"{timeout:g}",
           *extra, "-o", str(out)]
    proc = subprocess.run([sys.executable, "-m", *cmd], cwd=REPO)
    if proc.returncode not in (0, 1) or not out.exists():
        raise SystemExit(f"bench run failed (status {proc.returncode})")
    return cmd


def newest_row(path: Path) -> dict:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if (r.get("task") or {}).get("id") == "humaneval"]
    if not rows:
        raise SystemExit(f"{path}: no humaneval row")
    return rows[-1]


def typed_row(row: dict):  # -> bench.results.schema.Row (importable only once sys.path is set)
    """The row as bench reads it (the projection takes the typed Row)."""
    from bench.results.schema import Row

    return Row.from_dict(row)


def tier_lines(row: dict) -> list[str]:
    from bench.datafiles import find_data_path
    from bench.hardware.profiles import load_profiles
    from bench.projection.tier import task_cost_on_tier

    lines = []
    for profile in load_profiles(find_data_path("hardware_profiles", None, "BENCH_PROFILES")).values():
        if not profile.price or profile.device != "cpu":
            continue
        c = task_cost_on_tier(typed_row(row), profile)
        if "seconds" not in c:
            continue
        solved = row["task"]["correct"] or 0
        per = c["seconds"] / solved if solved else None
        fast, slow = c["seconds_interval"]
        usd = c.get("usd_per_correct")
        lines.append(f"| {profile.id} | {c['usd_per_hour']:.3g} | {per:.1f} | "
                     f"{fast / solved:.1f}-{(slow / solved if slow is not None else float('nan')):.1f} | "
                     f"{usd:.3g} |" if per is not None and usd is not None else f"| {profile.id} | - | - | - | - |")
    return lines


def page(row: dict, cmd: list[str]) -> str:
    from bench.quality.published import compare_with_published, published_for

    t, host = row["task"], row["environment"]["host"]
    records = t.get("records") or []
    kinds = collections.Counter(r.get("error_kind") or "passed" for r in records)
    facts = (row.get("model") or {}).get("facts") or {}
    published = published_for(facts, "humaneval")
    n, solved = t["items"], t["correct"]
    gen_s = t["seconds"]
    lines = [f"# HumanEval pass@1: {row['config']['model_id']}:{row['config']['variant_id']}, "
             f"{row['created_at'][:10]}", "",
             f"Measured on host `{host.get('hostname')}` ({host.get('cpu_model') or 'CPU not recorded'}, "
             f"{row['config']['threads']} threads), {row['created_at']} UTC, with:", "",
             "```sh", shlex.join(cmd), "```", "",
             "| | |", "|---|---|",
             f"| pass@1 | **{t['accuracy']:.1%} ± {t['accuracy_se']:.1%}** ({solved}/{n}, HumanEval/0 to "
             f"HumanEval/{n - 1}; standard error sqrt(p(1-p)/n)) |",
             f"| prompt | {t['prompt']['style']} ({t['prompt']['template']}) |",
             f"| status | {t['status']}{': ' + t['reason'] if t.get('reason') else ''} |",
             f"| generation time | {gen_s:.0f} s measured ({gen_s / n:.1f} s per problem, "
             f"{(gen_s / solved if solved else float('nan')):.1f} s per solved problem; "
             f"{t['generated_tokens']} tokens generated) |",
             f"| execution | {sum(r.get('exec_seconds') or 0 for r in records):.1f} s in the sandbox in all |",
             f"| truncated | {t.get('truncated', 0)} at {t.get('max_new_tokens')} new tokens |",
             f"| outcomes | {', '.join(f'{k} {v}' for k, v in kinds.most_common())} |", ""]
    if published:
        check = compare_with_published(t, published, 0.99)
        lines += ["**Beside the published figure** (the verdict's rule, `accuracy_retained_min` 0.99, "
                  "bench/quality/published.py):", "",
                  f"- published: {published['value']:.1%} {published['metric']} on the {published['variant']} "
                  f"release ({published['source']}; how it was read: {published.get('note') or 'see models.yaml'})",
                  f"- the verdict's criterion from this row: **{check.outcome}**: {check.value}", ""]
    if n < 164:
        lines += [f"These are the first {n} of HumanEval's 164 problems, not a random sample of them: the published "
                  "figure is over all 164, and pass rates differ along the set.", ""]
    lines += ["**Sandbox on this host:** " + "; ".join(f"{k}: {v}" for k, v in (t.get("sandbox") or {}).items()
                                                      if k != "limits"),
              f"limits {json.dumps((t.get('sandbox') or {}).get('limits'))}.", ""]
    tiers = tier_lines(row)
    if tiers:
        lines += ["**Time and $ per solved problem on the priced CPU tiers: PROJECTIONS, not measurements** "
                  "(bench.projection.tier.task_cost_on_tier: each problem's token counts at the tier's projected "
                  "speeds, scaled by this host's measured time over the same at its measured speeds):", "",
                  "| tier | $/hour | s per solved problem | interval | $ per solved problem |", "|---|---|---|---|---|",
                  *tiers, ""]
    lines += ["Every problem:", "", "| problem | outcome | error kind | tokens | s | first line of the error |",
              "|---|---|---|---|---|---|"]
    for r in records:
        err = (r.get("error") or "").replace("|", "\\|")[:80]
        lines.append(f"| {r.get('id')} | {r['outcome']} | {r.get('error_kind') or '-'} | {r['generated_tokens']} | "
                     f"{r['seconds']:.1f} | {err} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="qwen2.5-coder-1.5b-instruct")
    ap.add_argument("--limit", type=int, default=40)
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--results", help="an existing results file: read its newest humaneval row, run nothing")
    ap.add_argument("--page", help="where to write the page (default docs/measurements/DATE-humaneval.md)")
    ap.add_argument("--out", help="results file of the run (default results/humaneval_DATE.jsonl)")
    ap.add_argument("extra", nargs="*", help="more bench run flags, after --")
    args = ap.parse_args()
    if args.results:
        out, cmd = Path(args.results), ["bench", "run", "(read from", args.results + ")"]
    else:
        out = Path(args.out) if args.out else REPO / "results" / f"humaneval_{dt.date.today().isoformat()}.jsonl"
        cmd = run(args.model, args.limit, args.timeout, out, args.extra)
    row = newest_row(out)
    target = Path(args.page) if args.page else REPO / "docs" / "measurements" / f"{row['created_at'][:10]}-humaneval.md"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(page(row, cmd), encoding="utf-8")
    t = row["task"]
    print(f"pass@1 {t['accuracy']:.1%} ± {t['accuracy_se']:.1%} ({t['correct']}/{t['items']}); {t['seconds']:.0f} s; "
          f"page: {target}")


if __name__ == "__main__":
    main()
