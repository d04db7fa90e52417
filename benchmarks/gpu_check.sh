#!/bin/sh
# The GPU check in one command, on a machine with an NVIDIA GPU (docs/gpu.md):
#     sh benchmarks/gpu_check.sh [run options]
# writes report.md, results.json and log.txt to $OUT (the device tool's output folder), else to
# ./gpu-check-out. Run `python benchmarks/gpu_check.py prepare` first where there is network.
set -eu
cd "$(dirname "$0")/.."
out="${OUT:-gpu-check-out}"
export PYTHONUNBUFFERED=1
exec python3 benchmarks/gpu_check.py run --out "$out" "$@"
