/*
 * ctx_stream (issue 4), in-process, two BENCH lines:
 *  - mode=stream: one-way messages/s through the bidirectional stream of
 *    an open_context dialog (Yield under the credit window, Credit back),
 *    from the caller's task to a daemon's context task that counts them;
 *    timed from the first send to the context's final Return;
 *  - mode=rpc: sequential round trips through tr_portal_run to a daemon
 *    actor (Start -> StartAck -> Return per call).
 * The runtime builds a new envelope per send in both modes; what --msgs
 * changes is the payload.  msgs=fresh (the default): each stream message
 * is a new 64-byte buffer (CAF copies its std::string into every message,
 * Erlang its 64-byte heap binary), and each call's argument a new buffer
 * carrying its index i, whose echo is checked (as the peers' tcp_rpc).
 * msgs=reuse: one buffer is shared by every send (a reference each), and
 * the echo is checked to be that buffer (through the codec relay, a copy
 * of it).  transport=relay lines (main.c) run the same dialogs through the
 * codec relay of the tests.
 */
#include <stdio.h>
#include <string.h>

#include "bench.h"

#define STREAM_PAYLOAD 64 /* bytes per message, as tcp_stream */

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
  uint32_t window; /* mode=stream: the context's window */
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
  int reuse = bench_msgs == BENCH_MSGS_REUSE;
  tr_buf_t *arg_buf = NULL;
  if (rc == 0 && reuse)
    rc = tr_buf_from_u64(7, &arg_buf);
  double t0 = bench_now();
  for (uint64_t i = 0; rc == 0 && i < rb->n; i++) {
    tr_buf_t *call_arg = arg_buf, *res = NULL;
    uint64_t echoed;
    if (!reuse && (rc = tr_buf_from_u64(i, &call_arg)) != 0)
      break;
    rc = tr_portal_run(p, "bench.echo", call_arg, &res);
    if (reuse)
      rb->ok += res == arg_buf || (bench_relay && tr_buf_to_u64(res, &echoed) == 0 && echoed == 7);
    else
      rb->ok += rc == 0 && tr_buf_to_u64(res, &echoed) == 0 && echoed == i;
    tr_buf_release(res);
    if (!reuse)
      tr_buf_release(call_arg);
  }
  rb->secs = bench_now() - t0;
  tr_buf_release(arg_buf);
  int crc = tr_actor_nursery_close(an);
  tr_portal_release(p);
  return rc ? rc : crc;
}

/* The daemon's side of mode=stream: count until the caller's Stop. */
static int sink(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)args;
  tr_stream_t *s;
  int rc = tr_ctx_started(ctx, NULL);
  if (rc == 0)
    rc = tr_ctx_open_stream(ctx, &s);
  uint64_t count = 0;
  tr_buf_t *v;
  while (rc == 0 && (rc = tr_stream_recv(s, &v)) == 0) {
    count++;
    tr_buf_release(v);
  }
  if (rc != -TR_EEOF)
    return rc;
  return tr_buf_from_u64(count, result);
}
TR_EXPORT_CONTEXT("bench", "sink", sink)

int bench_sink_stream(tr_portal_t *p, uint64_t n, int reuse, const tr_ctx_opts_t *copts,
                      double *secs, uint64_t *got, uint32_t *window) {
  tr_ctx_t *ctx = NULL;
  tr_stream_t *s = NULL;
  tr_buf_t *msg = NULL, *res = NULL;
  char payload[STREAM_PAYLOAD];
  memset(payload, 'x', sizeof payload); /* as the peers' payload */
  *got = 0;
  int rc = reuse ? tr_buf_from(payload, sizeof payload, &msg) : 0;
  if (rc == 0)
    rc = tr_portal_open_context(p, "bench.sink", NULL, copts, &ctx, NULL);
  if (rc == 0)
    rc = tr_ctx_open_stream(ctx, &s);
  *window = tr_ctx_window(ctx);
  double t0 = bench_now();
  for (uint64_t i = 0; rc == 0 && i < n; i++) {
    if (reuse) {
      rc = tr_stream_send(s, msg);
    } else if ((rc = tr_buf_from(payload, sizeof payload, &msg)) == 0) {
      rc = tr_stream_send(s, msg); /* takes its own reference */
      tr_buf_release(msg);
      msg = NULL;
    }
  }
  if (s)
    tr_stream_close(s);
  if (ctx) {
    int crc = tr_ctx_close(ctx, &res);
    rc = rc ? rc : crc;
  }
  *secs = bench_now() - t0;
  if (rc == 0 && tr_buf_to_u64(res, got) != 0)
    *got = 0;
  tr_buf_release(res);
  tr_buf_release(msg);
  return rc;
}

static int stream_main(void *arg) {
  rpc_bench_t *rb = arg;
  static const char *const ns[] = {"bench"};
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL;
  int rc = tr_actor_nursery_open(&an, NULL);
  if (rc)
    return rc;
  rc = tr_start_actor(an, "sinkd", ns, 1, &p);
  if (rc == 0)
    rc = bench_sink_stream(p, rb->n, bench_msgs == BENCH_MSGS_REUSE, NULL, &rb->secs, &rb->ok,
                           &rb->window);
  int crc = tr_actor_nursery_close(an);
  tr_portal_release(p);
  return rc ? rc : crc;
}

int bench_run_task(tr_task_fn fn, void *arg) {
  tr_actor_t *a;
  tr_spawn_opts_t o = {.name = "bench"};
  int rc = tr_spawn_task_actor(fn, arg, &o, &a);
  if (rc)
    return rc;
  tr_join(a, -1);
  rc = tr_task_actor_result(a);
  tr_actor_release(a);
  return rc;
}

int bench_ctx_stream_stream(uint64_t n, bench_result_t *res) {
  rpc_bench_t rb = {.n = n};
  int rc = bench_run_task(stream_main, &rb);
  if (rc)
    return bench_fail("ctx_stream mode=stream", rc);
  res->n = n;
  res->secs = rb.secs;
  res->rate = (double)n / rb.secs;
  res->ok = rb.ok == n; /* the far side counted every message */
  snprintf(res->extra, sizeof res->extra, " mode=stream window=%u payload_bytes=%d",
           (unsigned)rb.window, STREAM_PAYLOAD);
  return 0;
}

int bench_ctx_stream(uint64_t n, bench_result_t *res) {
  rpc_bench_t rb = {.n = n};
  int rc = bench_run_task(rpc_main, &rb);
  if (rc)
    return bench_fail("rpc round trips", rc);
  res->n = n;
  res->secs = rb.secs;
  res->rate = (double)n / rb.secs;
  res->ok = rb.ok == n;
  snprintf(res->extra, sizeof res->extra, " mode=rpc");
  return 0;
}
