/*
 * The cross-process workloads (issue 10): a daemon actor in a child
 * process of tr-bench (TR_SPAWN_PROCESS: the same executable, which main.c
 * hands to tr_main), reached over the TCP channel on 127.0.0.1.  They call
 * the "bench" namespace of bench_rpc.c (echo, sink), which the child has
 * too, being the same program.
 *
 *  - tcp_rpc: N sequential tr_portal_run round trips (Start -> StartAck ->
 *    Return, 3 frames per call).  As the peers' tcp_rpc (bench-peers
 *    caf/tcp_bench.cpp, erlang/bench.erl): one untimed warm-up call with
 *    0, then calls 1..N, each carrying its index i as an 8-byte integer (a
 *    new buffer per call) that the daemon echoes and the caller checks;
 *    rate = N / secs.  The line also gives the median, the 99th and the
 *    99.9th percentile of the single calls (us_median, us_p99, us_p999):
 *    on a shared VM the mean moves with a few stalls of a millisecond or
 *    more (host steal), the median with the runtime's own path; slow_pct
 *    says how much of the time went to stalls (calls over 4x the median),
 *    steal_pct how much of the timed section the host took (steal.h).
 *  - tcp_stream: N one-way 64-byte messages (a new buffer each, as CAF's
 *    std::string and Erlang's binary) from the caller to a context task of
 *    the daemon, through the context's stream under the runtime's default
 *    credit window (TR_STREAM_WINDOW_REMOTE, the default for a callee in
 *    another process; --window asks for another); the line's window=
 *    field says which.  The daemon counts every message
 *    and returns the count, which must be N.  Timed from the first send to
 *    the context's final Return (the peers: first send to the server's
 *    done(N)); opening the context is set-up, as the peers' connect.  The
 *    peak RSS of both processes is reported: rss_kb_parent (getrusage
 *    RUSAGE_SELF) and rss_kb_child (RUSAGE_CHILDREN once the nursery has
 *    reaped the daemon: the largest reaped child, and this workload's
 *    process has no other).
 *  - spawn_process: N cycles of open an actor nursery, start a process
 *    daemon, one call (echo), close the nursery (cancels the daemon and
 *    reaps its process).  rate = cycles/s; ms_per_cycle and
 *    ms_to_first_rpc are medians over the cycles (from the nursery's open
 *    to the first call's result), with the slowest first call as
 *    ms_to_first_rpc_max.  No peer has it.
 *
 * Each workload runs in a task actor (portals and nurseries want a task),
 * which the root thread joins (bench_run_task).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include "bench.h"
#include "steal.h"

#define STREAM_PAYLOAD 64 /* bytes per message, as the peers' tcp_stream */

static const char *const bench_ns[] = {"bench"};

typedef struct tcp_bench {
  uint64_t n;
  double secs;
  uint64_t ok;      /* calls whose echo matched / messages the daemon counted */
  int child_status; /* the daemon's wait status once reaped (-1: unknown) */
  uint32_t window;  /* tcp_stream: the context's window */
  double *first_ms; /* spawn_process: per cycle, to the first call's result */
  double *cycle_ms; /* spawn_process: per cycle, to the nursery's close */
  double *call_us;  /* tcp_rpc: per call (N) */
  double steal_pct; /* tcp_rpc: host steal over the timed calls (steal.h) */
} tcp_bench_t;

static const tr_actor_opts_t daemon_opts = {
    .enable = bench_ns, .n_enable = 1, .spawn = TR_SPAWN_PROCESS};

/* One echo call with value v; 1 when the echo is v. */
static int echo_call(tr_portal_t *p, uint64_t v, int *ok) {
  tr_buf_t *arg = NULL, *res = NULL;
  uint64_t echoed = 0;
  int rc = tr_buf_from_u64(v, &arg);
  if (rc == 0)
    rc = tr_portal_run(p, "bench.echo", arg, &res);
  *ok = rc == 0 && tr_buf_to_u64(res, &echoed) == 0 && echoed == v;
  tr_buf_release(res);
  tr_buf_release(arg);
  return rc;
}

/* Closes the nursery (cancelling the daemon and reaping its process) and
 * keeps the daemon's wait status; returns the first failure of rc and the
 * close. */
static int close_daemon(tr_actor_nursery_t *an, tr_portal_t *p, tcp_bench_t *tb, int rc) {
  int crc = tr_actor_nursery_close(an);
  int status = -1;
  if (p != NULL && tr_portal_process(p, NULL, &status) == 0)
    tb->child_status = status;
  tr_portal_release(p);
  return rc ? rc : crc;
}

static int rpc_main(void *arg) {
  tcp_bench_t *tb = arg;
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL;
  int ok, rc = tr_actor_nursery_open(&an, NULL);
  if (rc)
    return rc;
  rc = tr_start_actor_opts(an, "echod", &daemon_opts, &p);
  /* The warm-up: waits for the child to connect back and serve. */
  if (rc == 0 && (rc = echo_call(p, 0, &ok)) == 0 && !ok)
    rc = bench_fail("tcp_rpc: warm-up echo", -TR_EPROTO);
  long long steal0 = bench_steal_ticks();
  double t0 = bench_now(), prev = t0;
  for (uint64_t i = 1; rc == 0 && i <= tb->n; i++) {
    rc = echo_call(p, i, &ok);
    tb->ok += (uint64_t)ok;
    double now = bench_now();
    tb->call_us[i - 1] = (now - prev) * 1e6;
    prev = now;
  }
  tb->secs = bench_now() - t0;
  tb->steal_pct = bench_steal_pct(steal0, bench_steal_ticks(), tb->secs);
  return close_daemon(an, p, tb, rc);
}

static int stream_main(void *arg) {
  tcp_bench_t *tb = arg;
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL;
  tr_ctx_opts_t copts = {.window = bench_window}; /* 0: the runtime's default */
  int rc = tr_actor_nursery_open(&an, NULL);
  if (rc)
    return rc;
  rc = tr_start_actor_opts(an, "sinkd", &daemon_opts, &p);
  if (rc == 0)
    rc = bench_sink_stream(p, tb->n, 0, &copts, &tb->secs, &tb->ok, &tb->window);
  return close_daemon(an, p, tb, rc);
}

/* The daemon exited 0 when its nursery cancelled it. */
static int exited_clean(const tcp_bench_t *tb) {
  return tb->child_status != -1 && WIFEXITED(tb->child_status) &&
         WEXITSTATUS(tb->child_status) == 0;
}

static int spawn_main(void *arg) {
  tcp_bench_t *tb = arg;
  int rc = 0;
  double t0 = bench_now();
  for (uint64_t i = 0; rc == 0 && i < tb->n; i++) {
    tr_actor_nursery_t *an;
    tr_portal_t *p = NULL;
    int ok = 0;
    double c0 = bench_now();
    if ((rc = tr_actor_nursery_open(&an, NULL)) != 0)
      break;
    rc = tr_start_actor_opts(an, "spawned", &daemon_opts, &p);
    if (rc == 0)
      rc = echo_call(p, i, &ok);
    double c1 = bench_now();
    tb->child_status = -1;
    rc = close_daemon(an, p, tb, rc);
    double c2 = bench_now();
    tb->first_ms[i] = (c1 - c0) * 1e3;
    tb->cycle_ms[i] = (c2 - c0) * 1e3;
    /* A cycle counts when its call echoed and its daemon exited 0. */
    tb->ok += ok && exited_clean(tb);
  }
  tb->secs = bench_now() - t0;
  return rc;
}

int bench_tcp_rpc(uint64_t n, bench_result_t *res) {
  tcp_bench_t tb = {.n = n, .child_status = -1, .call_us = calloc(n ? n : 1, sizeof(double))};
  if (!tb.call_us)
    return bench_fail("tcp_rpc", -TR_ENOMEM);
  int rc = bench_run_task(rpc_main, &tb);
  if (rc) {
    free(tb.call_us);
    return bench_fail("tcp_rpc", rc);
  }
  res->n = n;
  res->secs = tb.secs;
  res->rate = (double)n / tb.secs;
  res->ok = tb.ok == n && exited_clean(&tb);
  double median = n ? bench_median(tb.call_us, n) : 0; /* sorts them */
  snprintf(res->extra, sizeof res->extra,
           " arg_bytes=8 warmup=1 us_per_rt=%.2f us_median=%.2f us_p99=%.1f us_p999=%.1f"
           " slow_pct=%.1f steal_pct=%.1f",
           tb.secs * 1e6 / (double)n, median, n ? tb.call_us[n - 1 - n / 100] : 0.0,
           n ? tb.call_us[n - 1 - n / 1000] : 0.0, bench_slow_pct(tb.call_us, n, median),
           tb.steal_pct);
  free(tb.call_us);
  return 0;
}

int bench_tcp_stream(uint64_t n, bench_result_t *res) {
  tcp_bench_t tb = {.n = n, .child_status = -1};
  struct rusage self, children;
  int rc = bench_run_task(stream_main, &tb);
  if (rc)
    return bench_fail("tcp_stream", rc);
  /* The nursery has reaped the daemon (waitid), so it counts among the
   * children; ru_maxrss is in kilobytes on Linux. */
  getrusage(RUSAGE_SELF, &self);
  getrusage(RUSAGE_CHILDREN, &children);
  res->n = n;
  res->secs = tb.secs;
  res->rate = (double)n / tb.secs;
  res->ok = tb.ok == n && exited_clean(&tb);
  snprintf(res->extra, sizeof res->extra,
           " window=%d payload_bytes=%d received=%llu rss_kb_parent=%ld rss_kb_child=%ld",
           (int)tb.window, STREAM_PAYLOAD,
           (unsigned long long)tb.ok, self.ru_maxrss, children.ru_maxrss);
  return 0;
}

int bench_spawn_process(uint64_t n, bench_result_t *res) {
  tcp_bench_t tb = {.n = n, .child_status = -1};
  tb.first_ms = calloc(n, sizeof *tb.first_ms);
  tb.cycle_ms = calloc(n, sizeof *tb.cycle_ms);
  int rc = tb.first_ms && tb.cycle_ms ? bench_run_task(spawn_main, &tb) : -TR_ENOMEM;
  if (rc) {
    free(tb.first_ms);
    free(tb.cycle_ms);
    return bench_fail("spawn_process", rc);
  }
  double first_med = bench_median(tb.first_ms, n), first_max = tb.first_ms[n - 1];
  double cycle_med = bench_median(tb.cycle_ms, n);
  free(tb.first_ms);
  free(tb.cycle_ms);
  res->n = n;
  res->secs = tb.secs;
  res->rate = (double)n / tb.secs;
  res->ok = tb.ok == n;
  snprintf(res->extra, sizeof res->extra,
           " ms_per_cycle=%.3f ms_to_first_rpc=%.3f ms_to_first_rpc_max=%.3f", cycle_med, first_med,
           first_max);
  return 0;
}
