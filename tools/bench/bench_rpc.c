/*
 * ctx_stream (issue 4), the part that exists so far: mode=rpc, sequential
 * in-process round trips through tr_portal_run to a daemon actor
 * (Start -> StartAck -> Return per call).  mode=stream (one-way messages
 * through an open_context stream) comes with contexts and streams.
 */
#include <stdio.h>

#include "bench.h"

static int echo(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)ctx;
  *result = tr_buf_ref((tr_buf_t *)args);
  return 0;
}
TR_EXPORT_FN("bench", "echo", echo)

typedef struct rpc_bench {
  uint64_t n;
  double secs;
  uint64_t ok;
} rpc_bench_t;

static int rpc_main(void *arg) {
  rpc_bench_t *rb = arg;
  static const char *const ns[] = {"bench"};
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL;
  int rc = tr_actor_nursery_open(&an, NULL);
  if (rc)
    return rc;
  rc = tr_start_actor(an, "echod", ns, 1, &p);
  tr_buf_t *arg_buf = NULL;
  if (rc == 0)
    rc = tr_buf_from_u64(7, &arg_buf);
  double t0 = bench_now();
  for (uint64_t i = 0; rc == 0 && i < rb->n; i++) {
    tr_buf_t *res = NULL;
    rc = tr_portal_run(p, "bench.echo", arg_buf, &res);
    rb->ok += res == arg_buf;
    tr_buf_release(res);
  }
  rb->secs = bench_now() - t0;
  tr_buf_release(arg_buf);
  int crc = tr_actor_nursery_close(an);
  tr_portal_release(p);
  return rc ? rc : crc;
}

int bench_ctx_stream(uint64_t n, bench_result_t *res) {
  rpc_bench_t rb = {.n = n};
  tr_actor_t *a;
  tr_spawn_opts_t o = {.name = "bench"};
  int rc = tr_spawn_task_actor(rpc_main, &rb, &o, &a);
  if (rc)
    return bench_fail("tr_spawn_task_actor", rc);
  tr_join(a, -1);
  rc = tr_task_actor_result(a);
  tr_actor_release(a);
  if (rc)
    return bench_fail("rpc round trips", rc);
  res->n = n;
  res->secs = rb.secs;
  res->rate = (double)n / rb.secs;
  res->ok = rb.ok == n;
  snprintf(res->extra, sizeof res->extra, " mode=rpc");
  return 0;
}
