#!/usr/bin/env bash
# Runs each tr-bench workload REPS times and prints a median table, so that
# a note can quote "median of 3" with the spread next to it.
#
#   tools/bench/run.sh [path/to/tr-bench] [tr-bench options, e.g. -w 2, --smoke, --msgs both]
#
# Environment: REPS (default 3), ONLY="pingpong ring ..." (default: all of them,
# the cross-process tcp_rpc, tcp_stream, spawn_process, find_actor and
# connect_handshake included).
# stdout: every BENCH line as it arrives, then the table.  A run that fails
# (non-zero exit or no BENCH line) is reported on stderr, left out of the
# table, and makes the script exit 1.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
BIN="$HERE/../../build/tools/bench/tr-bench"
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then
  BIN=$1
  shift
fi
[ -x "$BIN" ] || { echo "run.sh: no tr-bench at $BIN (build first, or pass its path)" >&2; exit 2; }
REPS=${REPS:-3}
ONLY=${ONLY:-"pingpong ring fanin skynet spawn_idle pipeline task_switch task_spawn cancel_storm ctx_stream tcp_rpc tcp_stream spawn_process find_actor connect_handshake"}

LINES=$(mktemp)
trap 'rm -f "$LINES"' EXIT
status=0
# Workload-outer, repetition-inner, as bench-peers/run_all.sh.
for w in $ONLY; do
  for rep in $(seq "$REPS"); do
    echo "+ $BIN $w $* (rep $rep/$REPS)" >&2
    out=$("$BIN" "$w" "$@")
    rc=$?
    printf '%s\n' "$out" | grep '^BENCH' | tee -a "$LINES"
    if [ $rc -ne 0 ] || ! printf '%s\n' "$out" | grep -q '^BENCH'; then
      echo "# FAILED rc=$rc: $BIN $w $*" >&2
      status=1
    fi
  done
done

echo "# tr-bench medians of $REPS runs each: $BIN $*"
# One row per workload (and mode, and msgs= form): median rate and secs, the rate's
# min..max, how many runs passed their check, and the medians of the extra figures some
# workloads report (bytes per actor; spawn_process's milliseconds; tcp_stream's peak RSS;
# the discovery workloads' microseconds per call).
awk '
function median(list,   a, k, i, j, t) {
  k = split(list, a, " ")
  for (i = 2; i <= k; i++) {            # insertion sort: k is tiny
    t = a[i] + 0
    for (j = i - 1; j >= 1 && a[j] + 0 > t; j--) a[j + 1] = a[j]
    a[j + 1] = t
  }
  lo = a[1]; hi = a[k]
  return (k % 2) ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2
}
{
  w = $2; m = "-"
  # A workload with several modes (ctx_stream) gets a row per mode, and one with
  # several message forms (msgs=fresh, msgs=reuse) a row per form.
  for (f = 3; f <= NF; f++) {
    if ($f ~ /^mode=/) w = w "/" substr($f, 6)
    if ($f ~ /^transport=/) w = w "/" substr($f, 11)
    if ($f ~ /^msgs=/) m = substr($f, 6)
  }
  label[w " " m] = w; form[w " " m] = m
  w = w " " m
  if (!(w in runs)) order[++nw] = w
  runs[w]++
  for (f = 3; f <= NF; f++) {
    split($f, kv, "=")
    if (kv[1] == "n") n[w] = kv[2]
    else if (kv[1] == "secs") secs[w] = secs[w] " " kv[2]
    else if (kv[1] == "rate") rate[w] = rate[w] " " kv[2]
    else if (kv[1] == "ok") oks[w] += (kv[2] == 1)
    else if (kv[1] == "workers") workers[w] = kv[2]
    else if (kv[1] == "bytes_per_actor" || kv[1] == "ms_per_cycle" || kv[1] == "ms_to_first_rpc" ||
             kv[1] == "rss_kb_parent" || kv[1] == "rss_kb_child" || kv[1] == "us_per_op" ||
             kv[1] == "us_median") {
      if (!((w, kv[1]) in xv)) xkeys[w] = xkeys[w] " " kv[1]
      xv[w, kv[1]] = xv[w, kv[1]] " " kv[2]
    }
  }
}
END {
  printf "%-23s %-5s %10s %4s %3s %14s %25s %10s %5s %s\n", "workload", "msgs", "n", "runs",
         "w", "median rate", "min..max rate", "med secs", "ok", "extra"
  for (i = 1; i <= nw; i++) {
    w = order[i]
    mr = median(rate[w]); rlo = lo; rhi = hi
    ms = median(secs[w])
    extra = ""
    nx = split(xkeys[w], xk, " ")
    for (x = 1; x <= nx; x++) {
      v = median(xv[w, xk[x]])
      if (xk[x] ~ /^rss_kb/) v = sprintf("%d", v)
      else if (xk[x] ~ /^(ms|us)_/) v = sprintf("%.2f", v)
      else v = sprintf("%.1f", v)
      extra = extra sprintf("%s%s=%s", x > 1 ? " " : "", xk[x], v)
    }
    printf "%-23s %-5s %10s %4d %3s %14.1f %12.1f..%-12.1f %10.6f %2d/%-2d %s\n", label[w],
           form[w], n[w], runs[w], workers[w], mr, rlo, rhi, ms, oks[w], runs[w], extra
  }
}' "$LINES"
exit $status
