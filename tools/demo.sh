#!/usr/bin/env bash
# The main job: build tractor-c (Release) and run examples/pipeline.c, a
# pipeline of actors (producer and normalize in this process, wordcount in
# a child process) that prints a progress line on a terminal and a summary:
# items, time, rate, the supervision tree and every process's exit status.
# Installs missing Debian packages first (tools/setup.sh).
#
# Usage: bash tools/demo.sh [-n ITEMS]        the pipeline (default 200000 items)
#        bash tools/demo.sh --bench [--full]  the benchmark suite (tools/bench)
#   --bench runs every workload at small sizes and prints its BENCH lines and
#   a table (the workloads that forward messages in both forms, msgs=fresh
#   and reuse); with --full, the peers' default sizes, 3 times each, medians.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
bash "$ROOT/tools/setup.sh"
DIR=${TR_BUILD_ROOT:-$ROOT/build}/release
JOBS=$(nproc 2>/dev/null || echo 2)
cmake -S "$ROOT" -B "$DIR" -DCMAKE_BUILD_TYPE=Release -DTR_BUILD_TESTS=OFF >/dev/null

# Builds one target quietly; the compiler's output is in build.log, and
# shown when the build fails.
build() {
  echo "demo.sh: building $1 (Release) in $DIR" >&2
  if ! cmake --build "$DIR" -j"$JOBS" --target "$1" >"$DIR/build.log" 2>&1; then
    cat "$DIR/build.log" >&2
    echo "demo.sh: the build failed (log: $DIR/build.log)" >&2
    exit 1
  fi
}

# --full alone is the older spelling of --bench --full.
if [ "${1:-}" = "--full" ]; then
  set -- --bench --full
fi
if [ "${1:-}" = "--bench" ]; then
  shift
  build tr-bench
  build tr-iofloor # the floor under tcp_rpc, next to tr-bench (README)
  if [ "${1:-}" = "--full" ]; then
    REPS=${REPS:-3} bash "$ROOT/tools/bench/run.sh" "$DIR/tools/bench/tr-bench" --msgs both
  else
    REPS=${REPS:-1} bash "$ROOT/tools/bench/run.sh" "$DIR/tools/bench/tr-bench" --smoke --msgs both
  fi
  exit
fi

build example_pipeline
exec "$DIR/example_pipeline" "$@"
