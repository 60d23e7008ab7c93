#!/usr/bin/env bash
# tr-bench's message forms (tools/bench/bench.h, bench_msgs_t): a run
# allocates a new message per send unless --msgs asks otherwise, and every
# BENCH line says which form it measured, so that a reuse figure can never
# pass for one comparable with the peers.  Also checks that run.sh keeps
# the two forms apart in its table, and that the cross-process workloads
# (tcp_rpc, tcp_stream, spawn_process) and the discovery ones (find_actor,
# connect_handshake) run and report their fields.
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
# The cross-process workloads: a daemon in a child process of tr-bench.  One
# form (every call's argument and every stream message is a new buffer),
# their checks passed, and the fields they promise.
for w in tcp_rpc tcp_stream spawn_process; do
  bench out "$w" --smoke --msgs both
  [ "$(forms "$out")" = "fresh" ] || fail "$w --msgs both: want one msgs=fresh line, got: $out"
  printf '%s\n' "$out" | grep -q ' ok=1' || fail "$w: want ok=1, got: $out"
done
printf '%s\n' "$out" | grep -Eq ' ms_per_cycle=[0-9.]+ ms_to_first_rpc=[0-9.]+ ' ||
  fail "spawn_process: want ms_per_cycle and ms_to_first_rpc, got: $out"
bench out tcp_stream -n 3000
printf '%s\n' "$out" | grep -Eq ' received=3000 rss_kb_parent=[1-9][0-9]* rss_kb_child=[1-9][0-9]* ' ||
  fail "tcp_stream: want received=3000 and both peak RSS figures, got: $out"
bench out tcp_stream -n 2000 --window 256
printf '%s\n' "$out" | grep -q ' window=256 .* ok=1' || fail "tcp_stream --window 256: got: $out"
# Discovery: a child process's lookups and handshakes, under tr_main on a
# private registry address (ctest runs with TR_REGISTRY_ADDR=off).
bench out find_actor --smoke
[ "$(forms "$out")" = "fresh" ] || fail "find_actor: want one msgs=fresh line, got: $out"
printf '%s\n' "$out" | grep -Eq ' us_per_op=[0-9.]+ us_median=[0-9.]+ secret=(yes|no) registrar=[a-z]+ ok=1 ' ||
  fail "find_actor: want us_per_op, us_median, secret, registrar and ok=1, got: $out"
bench out connect_handshake --smoke
[ "$(forms "$out")" = "-" ] || fail "connect_handshake: want no msgs= field, got: $out"
printf '%s\n' "$out" | grep -Eq ' us_per_op=[0-9.]+ us_median=[0-9.]+ secret=(yes|no) registrar=[a-z]+ ok=1 ' ||
  fail "connect_handshake: want us_per_op, us_median, secret, registrar and ok=1, got: $out"
"$BIN" tcp_stream --smoke --window 0 >/dev/null 2>&1
[ $? -eq 2 ] || fail "--window 0 was not refused with status 2"
"$BIN" pingpong --smoke --msgs sometimes >/dev/null 2>&1
[ $? -eq 2 ] || fail "--msgs sometimes was not refused with status 2"

# run.sh: a row per form, named in its msgs column.
table=$(REPS=1 ONLY=pingpong bash "$RUN" "$BIN" --smoke --msgs both 2>/dev/null) ||
  fail "run.sh failed: $table"
rows=$(printf '%s\n' "$table" | sed -n '/^workload /,$p' | awk '$1 == "pingpong" { print $2 }' |
  paste -sd' ' -)
[ "$rows" = "fresh reuse" ] || fail "run.sh: want rows pingpong fresh and reuse, got: $table"
echo "check_msgs: ok"
