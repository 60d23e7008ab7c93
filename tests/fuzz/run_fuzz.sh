#!/usr/bin/env bash
# Runs a libFuzzer target for ctest and prints libFuzzer's final coverage
# line ("#N DONE cov: E ft: F ...", E = edges reached) on stdout, so it is in
# the ctest log (Testing/Temporary/LastTest.log) of a passing run too.
# Fails when the fuzzer fails (crash, leak, UB: its whole output is printed
# then) or when it reached fewer than MIN_COV edges: a target whose library
# code lost its coverage instrumentation fuzzes blind and would still pass.
# Usage: run_fuzz.sh MIN_COV FUZZER [libFuzzer arguments...]
set -uo pipefail
min=$1
shift
log=$(mktemp)
trap 'rm -f "$log"' EXIT

"$@" >"$log" 2>&1
rc=$?
done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE[[:space:]]+cov:' "$log" | tail -n 1)
if [ "$rc" -ne 0 ] || [ -z "$done_line" ]; then
  cat "$log"
  echo "run_fuzz: $(basename "$1") failed (exit $rc)"
  exit 1
fi
echo "run_fuzz: $(basename "$1") final: $done_line"
cov=$(sed -E 's/.*DONE[[:space:]]+cov: ([0-9]+).*/\1/' <<<"$done_line")
if [ "$cov" -lt "$min" ]; then
  echo "run_fuzz: only $cov edges covered, expected at least $min (is the codec instrumented?)"
  exit 1
fi
