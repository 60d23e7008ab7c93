#!/usr/bin/env bash
# The main job, for now: build tractor-c (Release) and run the benchmark
# suite (tools/bench) at small sizes, printing its BENCH lines and a table
# (the workloads that forward messages in both forms, msgs=fresh and reuse).
# Installs missing Debian packages first (tools/setup.sh).
# Usage: bash tools/demo.sh [--full]   (--full: the peers' default sizes)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
bash "$ROOT/tools/setup.sh"
DIR=${TR_BUILD_ROOT:-$ROOT/build}/release
cmake -S "$ROOT" -B "$DIR" -DCMAKE_BUILD_TYPE=Release -DTR_BUILD_TESTS=OFF >/dev/null
cmake --build "$DIR" -j"$(nproc 2>/dev/null || echo 2)" >/dev/null
if [ "${1:-}" = "--full" ]; then
  REPS=${REPS:-3} bash "$ROOT/tools/bench/run.sh" "$DIR/tools/bench/tr-bench" --msgs both
else
  REPS=${REPS:-1} bash "$ROOT/tools/bench/run.sh" "$DIR/tools/bench/tr-bench" --smoke --msgs both
fi
