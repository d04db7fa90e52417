"""Write validation/depth_suite.csv: the suite's own depth sweep (docs/measurements/2026-12-03-depth/*.json)
as depth series for the projection's depth validation, with each model's KV shape read from its real GGUF
header (bench.models.gguf_info). One row per (file, engine, depth): the median over rounds of each round's
median sample, for the suite and for llama-bench on the same file and threads.

    python benchmarks/depth_validation_data.py docs/measurements/2026-12-03-depth/*.json \
        --out validation/depth_suite.csv

The GGUF files must be where the sweep read them (the suite's cache); a missing one is an error.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from pathlib import Path

from bench.errors import BenchError
from bench.models.gguf_info import read_gguf_info

FIELDS = ("series", "engine", "file", "depth", "decode_context", "prompt_tokens", "prefill_tps", "decode_tps",
          "n_layer", "n_head", "n_head_kv", "key_length", "value_length", "file_bytes", "n_params", "threads",
          "host", "date", "shape_source", "source")


def _median_of_rounds(rounds: list[dict], side: str, key: str) -> float | None:
    per = [statistics.median(r[side][key]) for r in rounds if r.get(side) and r[side].get(key)]
    return statistics.median(per) if per else None


def rows_of(path: Path) -> list[dict]:
    d = json.loads(path.read_text())
    p, n = d["settings"]["p"], d["settings"]["n"]
    out = []
    for cell in d["cells"]:
        gguf = Path(cell["model"])
        info = read_gguf_info(gguf)
        heads = info.head_count or 0
        width = (info.embedding_length or 0) // max(1, heads)
        shape = {"n_layer": info.block_count, "n_head": heads, "n_head_kv": info.head_count_kv or heads,
                 "key_length": info.key_length or width, "value_length": info.value_length or width,
                 "file_bytes": gguf.stat().st_size, "n_params": info.n_params,
                 "shape_source": f"GGUF header of {gguf.name} (bench.models.gguf_info)"}
        tg_depth = next((r["llama-bench"].get("tg_depth") for r in cell["rounds"] if r.get("llama-bench")), None)
        for engine, side, ctx in (("suite", "suite", cell["depth"] + p + n / 2),
                                  ("llama-bench", "llama-bench", (tg_depth if tg_depth is not None
                                                                  else cell["depth"] + p) + n / 2)):
            out.append({"series": f"{gguf.stem}|{engine}|host {d['host']}", "engine": engine, "file": gguf.name,
                        "depth": cell["depth"], "decode_context": ctx, "prompt_tokens": p,
                        "prefill_tps": _median_of_rounds(cell["rounds"], side, "prefill_tps"),
                        "decode_tps": _median_of_rounds(cell["rounds"], side, "decode_tps"),
                        "threads": d["settings"]["threads"], "host": d["host"], "date": d["date"],
                        "source": path.as_posix(), **shape})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("json", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, default=Path("validation/depth_suite.csv"))
    args = ap.parse_args(argv)
    try:
        rows = [r for p in args.json for r in rows_of(p)]
    except (BenchError, OSError, KeyError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rows.sort(key=lambda r: (r["series"], r["depth"]))
    with args.out.open("w", newline="") as fh:
        fh.write("# The suite's own depth sweep as depth series; written by python benchmarks/depth_validation_data.py "
                 + " ".join(p.as_posix() for p in args.json) + f" --out {args.out.as_posix()}\n")
        w = csv.DictWriter(fh, FIELDS)
        w.writeheader()
        for r in rows:
            w.writerow({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()})
    print(f"{len(rows)} rows written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
