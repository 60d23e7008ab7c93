#!/usr/bin/env bash
# Builds tractor-c three times and runs the whole test suite in each:
#   1. a normal build (gcc, RelWithDebInfo, -Werror)
#   2. -fsanitize=address,undefined, built with clang (so both compilers
#      compile the tree with -Werror on every run)
#   3. -fsanitize=thread (gcc)
# Installs missing Debian packages first (tools/setup.sh).  Build trees go
# to build/test-<kind> (override the root with TR_BUILD_ROOT).
# Usage: bash tools/test.sh [normal|asan|tsan ...]   (default: all three)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
bash "$ROOT/tools/setup.sh"

BUILD_ROOT=${TR_BUILD_ROOT:-$ROOT/build}
JOBS=$(nproc 2>/dev/null || echo 2)
KINDS=("$@")
[ ${#KINDS[@]} -eq 0 ] && KINDS=(normal asan tsan)

run_kind() {
  local kind=$1 san cc=gcc
  case "$kind" in
    normal) san=none ;;
    asan) san=address,undefined; cc=clang ;;
    tsan) san=thread ;;
    *) echo "unknown build kind: $kind" >&2; return 2 ;;
  esac
  local dir="$BUILD_ROOT/test-$kind"
  echo "=== [$kind] configure + build ($cc, sanitize=$san)"
  cmake -S "$ROOT" -B "$dir" -DCMAKE_C_COMPILER="$cc" -DTR_SANITIZE="$san" -DTR_WERROR=ON \
        -DTR_BUILD_TESTS=ON -DTR_BUILD_BENCH=ON >/dev/null
  cmake --build "$dir" -j"$JOBS" 2>&1 | grep -Ev '^\[ *[0-9]+%\]' || true
  [ "${PIPESTATUS[0]}" -eq 0 ] || { echo "build failed ($kind)" >&2; return 1; }
  echo "=== [$kind] ctest"
  local rc=0
  ctest --test-dir "$dir" --output-on-failure -j"$JOBS" --timeout 900 || rc=$?
  # The fuzz test's final libFuzzer coverage line (tests/fuzz/run_fuzz.sh).
  grep -h '^run_fuzz:' "$dir/Testing/Temporary/LastTest.log" 2>/dev/null || true
  return $rc
}

status=0
for k in "${KINDS[@]}"; do
  if ! run_kind "$k"; then
    echo "=== [$k] FAILED" >&2
    status=1
  fi
done
exit $status
