#!/usr/bin/env bash
# Cold setup from a fresh clone with empty caches, timed: the README's <!-- ci:setup --> block, run as
# a newcomer runs it. HOME points at an empty folder, so the suite's cache (~/.cache/llm-effbench:
# it follows HOME unless BENCH_CACHE or XDG_CACHE_HOME is set, and both are unset here) and pip's
# user cache start empty; PIP_NO_CACHE_DIR=1 turns pip's cache off altogether. The shared cache of
# the machine is never touched. The block runs under the machine's CPU lock (if /tmp/bench-cpu.lock
# exists); the time counts from the lock being taken to the block's end. Writes
# docs/measurements/DATE-cold-setup-HOST.md in the repository it is run from.
#
# usage: benchmarks/cold_setup.sh [REPO (default: this one)] [WORKDIR (default: a new temp folder)]
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
repo="${1:-$here}"
work="${2:-$(mktemp -d /tmp/cold-setup.XXXXXX)}"
clone="$work/clone" home="$work/home"
rm -rf "$clone" "$home" && mkdir -p "$home"
git clone -q "$repo" "$clone"
cd "$clone"
block=$(awk -v marker="<!-- ci:setup -->" '
  $0 == marker { found = 1; next }
  found && /^```/ { if (inside) exit; inside = 1; next }
  found && inside { print }' README.md)
commit=$(git rev-parse HEAD)
export HOME="$home" PIP_NO_CACHE_DIR=1
unset BENCH_CACHE XDG_CACHE_HOME
lock=(); [ -e /tmp/bench-cpu.lock ] && lock=(flock /tmp/bench-cpu.lock)
log="$work/setup.log"
"${lock[@]}" bash -c '
  start=$(date +%s.%N); began=$(date -u +%FT%TZ)
  set +e; ( eval "$1" ) > "$2" 2>&1; rc=$?
  end=$(date +%s.%N)
  echo "$began $(date -u +%FT%TZ) $rc $(python3 -c "print(round($end - $start, 1))")"
' _ "$block" "$log" > "$work/result"
read -r began ended rc seconds < "$work/result"
cpu=$(grep -m1 "model name" /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')
host=$(hostname)
page="$here/docs/measurements/$(date -u +%F)-cold-setup-$host.md"
mkdir -p "$(dirname "$page")"
{
  echo "# Cold setup from a fresh clone, $(date -u +%F), host \`$host\`"
  echo
  echo "Written by \`benchmarks/cold_setup.sh\`. CPU: $cpu ($(nproc) CPUs). Commit $commit."
  echo
  echo "- the block (README.md, \`<!-- ci:setup -->\`): \`$block\`"
  echo "- HOME=$home (empty: the suite's cache and pip's start empty), PIP_NO_CACHE_DIR=1"
  echo "- lock taken $began, block ended $ended, exit status $rc"
  echo "- **time: $seconds s** ($(python3 -c "s=$seconds; print(f'{int(s // 60)} min {round(s % 60)} s')"))"
  echo "- the suite's cache afterwards: $(du -sh "$home/.cache/llm-effbench" 2>/dev/null | cut -f1)"
  echo
  echo "What setup said:"
  echo
  echo '```'
  grep "^bench.install" "$log" || true
  echo '```'
} > "$page"
echo "$page: $seconds s, exit $rc"
