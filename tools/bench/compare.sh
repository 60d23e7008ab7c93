#!/usr/bin/env bash
# Runs tr-bench next to the CAF and Erlang peers (../shared/bench-peers),
# interleaved: for each repetition and workload, ours, then each peer.
# Prints every BENCH line, then a table of medians per workload and impl.
#
#   tools/bench/compare.sh [path/to/tr-bench]
#
# Environment: REPS (default 3), ONLY (default: the six in-process
# workloads and the two between processes, tcp_rpc and tcp_stream; a peer
# run of those takes up to half a minute), IMPLS for the peers (default
# "caf erlang"; "caf erlang raw" adds the raw-socket floor of the tcp
# workloads: rows raw_c_socket, and raw_c_socket_spin for tcp_rpc), PEERS (the
# bench-peers folder, default ../shared/bench-peers next to the repo),
# MSGS (tr-bench --msgs: fresh, the default, allocates a message per send
# as the peers do; "both" adds rows tractor-c/reuse, which forward the
# message in hand and have no peer counterpart).
# With the raw floor, a last line gives tcp_rpc against the busy-poll floor
# of the same repetition (the host's speed moves both: on the 2-core VM the
# floor itself ranged 101k-139k within one run), and the median of those
# ratios.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BIN=${1:-$ROOT/build/release/tools/bench/tr-bench}
PEERS=${PEERS:-$ROOT/../shared/bench-peers}
REPS=${REPS:-3}
ONLY=${ONLY:-"pingpong ring fanin skynet spawn_idle pipeline tcp_rpc tcp_stream"}
IMPLS=${IMPLS:-"caf erlang"}
MSGS=${MSGS:-fresh}
[ -x "$BIN" ] || { echo "compare.sh: no tr-bench at $BIN" >&2; exit 2; }
[ -x "$PEERS/run_all.sh" ] || { echo "compare.sh: no peers at $PEERS" >&2; exit 2; }

LINES=$(mktemp)
trap 'rm -f "$LINES"' EXIT
for rep in $(seq "$REPS"); do
  for w in $ONLY; do
    "$BIN" "$w" -w 2 --msgs "$MSGS" 2>/dev/null | tee -a "$LINES"
    ONLY=$w REPS=1 IMPLS=$IMPLS "$PEERS/run_all.sh" 2>/dev/null | grep '^BENCH' | tee -a "$LINES"
  done
done

echo
echo "# medians of $REPS interleaved runs (rate; for spawn_idle also bytes per idle actor)"
awk '
  { w=$2; impl=$3; sub("impl=","",impl); rate=""; mem="";
    for (k=4; k<=NF; k++) {
      if ($k ~ /^rate=/) rate=substr($k,6);
      if ($k ~ /^(bytes_per_actor|mem_per_actor_bytes)=/) { split($k,kv,"="); mem=kv[2] }
      if ($k ~ /^secs=/) secs=substr($k,6);
      if ($k == "msgs=reuse") impl=impl "/reuse";
    }
    key=w" "impl; r[key]=r[key]" "rate; s[key]=s[key]" "secs; if (mem!="") m[key]=m[key]" "mem }
  function med(list,   n, v, i, j, t) {
    n=split(list, v, " ");
    for (i=1; i<=n; i++) for (j=i+1; j<=n; j++) if (v[j]+0 < v[i]+0) { t=v[i]; v[i]=v[j]; v[j]=t }
    return v[int((n+1)/2)]
  }
  END {
    printf "%-13s %-17s %14s %10s %10s\n", "workload", "impl", "median rate", "med secs", "bytes/act";
    for (k in r) { split(k, p, " ");
      printf "%-13s %-17s %14.0f %10.3f %10s\n", p[1], p[2], med(r[k]), med(s[k]), (k in m) ? med(m[k]) : "-" }
  }' "$LINES" | (read -r h; echo "$h"; sort)

# tcp_rpc against the raw busy-poll floor, repetition by repetition.
awk '
  $2 == "tcp_rpc" && ($3 == "impl=tractor-c" || $3 == "impl=raw_c_socket_spin") {
    for (k=4; k<=NF; k++) if ($k ~ /^rate=/) rate=substr($k,6);
    if ($3 == "impl=tractor-c") ours[++no]=rate; else floor[++nf]=rate }
  END {
    n = no < nf ? no : nf;
    if (n == 0) exit;
    line = "";
    for (i=1; i<=n; i++) { q[i] = ours[i] / floor[i]; line = line sprintf(" %.0f%%", 100*q[i]) }
    for (i=1; i<=n; i++) for (j=i+1; j<=n; j++) if (q[j] < q[i]) { t=q[i]; q[i]=q[j]; q[j]=t }
    printf "tcp_rpc / raw_c_socket_spin in the same repetition:%s (median %.0f%%)\n", line, 100*q[int((n+1)/2)]
  }' "$LINES"
