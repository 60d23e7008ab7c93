#!/usr/bin/env bash
# ctest example_pipeline: runs examples/pipeline.c on a small input and
# checks that it exits 0 and prints the whole summary: the item count, the
# three-way check of the answers, the supervision tree with the child
# process's pid (another process than the root), that child's exit status
# (exited 0), the root's result, and "result: ok"; then that the child
# process is gone, and that a bad option is a usage error (exit 2).
# Usage: check_pipeline.sh PATH/TO/example_pipeline [ITEMS]
set -uo pipefail
BIN=$1
N=${2:-3000}
fail() { echo "check_pipeline: $*" >&2; echo "--- output:" >&2; echo "$OUT" >&2; exit 1; }

OUT=$("$BIN" -n "$N" 2>&1)
rc=$?
[ $rc -eq 0 ] || fail "exit status $rc, expected 0"

expect() { grep -Eq -- "$1" <<<"$OUT" || fail "no line matching: $1"; }
expect "^pipeline: $N items in [0-9.]+ s, [0-9]+ items/s"
expect "digest [0-9a-f]{16}: the same in the root, in the child and recomputed here$"
expect "^  root \(pid [0-9]+, this process\): actor nursery of$"
expect "^  \|- producer +in-process +daemon, stream +pipeline.source.lines$"
expect "^  \|- normalize +in-process +daemon, context pipeline.text.normalize$"
expect "^  \`- wordcount +child process pid [0-9]+ +daemon, context pipeline.stats.count$"
expect "^  wordcount +pid [0-9]+ +exited 0 "
expect "^  root +pid [0-9]+ +tr_main returned 0 \(ok\), exit 0$"
expect "^result: ok$"

root_pid=$(sed -nE 's/^  root \(pid ([0-9]+),.*/\1/p' <<<"$OUT")
tree_pid=$(sed -nE 's/.*wordcount +child process pid ([0-9]+) .*/\1/p' <<<"$OUT")
exit_pid=$(sed -nE 's/^  wordcount +pid ([0-9]+) +exited.*/\1/p' <<<"$OUT")
[ "$tree_pid" = "$exit_pid" ] || fail "the tree's pid $tree_pid is not the reaped one $exit_pid"
[ "$tree_pid" != "$root_pid" ] || fail "wordcount ran in the root process ($root_pid)"
if [ "$(readlink -f "/proc/$tree_pid/exe" 2>/dev/null)" = "$(readlink -f "$BIN")" ]; then
  fail "the child process $tree_pid is still running"
fi

OUT=$("$BIN" -n 12x 2>&1)
rc=$?
[ $rc -eq 2 ] || fail "-n 12x: exit status $rc, expected 2 (usage)"
echo "check_pipeline: ok ($N items, child pid $tree_pid exited 0)"
