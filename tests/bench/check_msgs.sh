#!/usr/bin/env bash
# tr-bench's message forms (tools/bench/bench.h, bench_msgs_t): a run
# allocates a new message per send unless --msgs asks otherwise, and every
# BENCH line says which form it measured, so that a reuse figure can never
# pass for one comparable with the peers.  Also checks that run.sh keeps
# the two forms apart in its table.
#
#   check_msgs.sh path/to/tr-bench path/to/tools/bench/run.sh
set -u
BIN=$1
RUN=$2
fail() {
  echo "check_msgs: $*" >&2
  exit 1
}
# bench OUTVAR ARGS...: runs tr-bench, which must succeed; keeps its BENCH lines.
bench() {
  local var=$1 text
  shift
  text=$("$BIN" "$@" 2>/dev/null) || fail "tr-bench $* failed"
  printf -v "$var" '%s' "$(printf '%s\n' "$text" | grep '^BENCH')"
}
# forms LINES: the msgs= values of the lines, in order, one per line ("-" for none).
forms() {
  printf '%s\n' "$1" | awk '{ m = "-"; for (f = 3; f <= NF; f++) if ($f ~ /^msgs=/) m = substr($f, 6); print m }' |
    paste -sd' ' -
}

bench out pingpong --smoke
[ "$(forms "$out")" = "fresh" ] || fail "default pingpong: want one msgs=fresh line, got: $out"
bench out pingpong --smoke --msgs reuse
[ "$(forms "$out")" = "reuse" ] || fail "pingpong --msgs reuse: want one msgs=reuse line, got: $out"
for w in ring pipeline skynet spawn_idle; do
  bench out "$w" --smoke --msgs both
  [ "$(forms "$out")" = "fresh reuse" ] || fail "$w --msgs both: want fresh then reuse, got: $out"
  printf '%s\n' "$out" | grep -q ' ok=0' && fail "$w: a check failed: $out"
done
bench out ctx_stream --smoke --msgs both
[ "$(forms "$out")" = "fresh reuse fresh reuse fresh reuse fresh reuse fresh reuse fresh reuse" ] ||
  fail "ctx_stream --msgs both: want fresh, reuse per mode and transport, got: $out"
for t in relay socket; do
  [ "$(printf '%s\n' "$out" | grep -c " transport=$t")" = 4 ] ||
    fail "ctx_stream: want 4 transport=$t lines (2 modes x 2 forms), got: $out"
done
# fanin's senders cannot forward anything: one form, said as it is.
bench out fanin --smoke --msgs both
[ "$(forms "$out")" = "fresh" ] || fail "fanin --msgs both: want one msgs=fresh line, got: $out"
# No message in the timed section: no msgs= field.
bench out task_spawn --smoke
[ "$(forms "$out")" = "-" ] || fail "task_spawn: want no msgs= field, got: $out"
"$BIN" pingpong --smoke --msgs sometimes >/dev/null 2>&1
[ $? -eq 2 ] || fail "--msgs sometimes was not refused with status 2"

# run.sh: a row per form, named in its msgs column.
table=$(REPS=1 ONLY=pingpong bash "$RUN" "$BIN" --smoke --msgs both 2>/dev/null) ||
  fail "run.sh failed: $table"
rows=$(printf '%s\n' "$table" | sed -n '/^workload /,$p' | awk '$1 == "pingpong" { print $2 }' |
  paste -sd' ' -)
[ "$rows" = "fresh reuse" ] || fail "run.sh: want rows pingpong fresh and reuse, got: $table"
echo "check_msgs: ok"
