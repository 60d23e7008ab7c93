/*
 * pipeline: producer -> 8 stages -> sink (CAF pipeline.cpp, Erlang
 * pipeline/2).
 *
 * The sink and the stages exist before timing starts; the producer is
 * spawned after t0 and sends 0..N-1 in a tight loop with no flow control
 * (unbounded mailboxes).  Each stage forwards x + 1; the sink counts N
 * items, and main checks their sum N(N-1)/2 + 8N.  Items are freshly
 * allocated by the producer, as in both peers.  msgs=fresh (the default):
 * each stage sends a new message carrying x + 1, as both peers do.
 * msgs=reuse: each stage forwards the message it was handed (zero
 * allocations per hop).
 */
#include <stdio.h>
#include <stdlib.h>

#include "bench.h"

#define PIPE_STAGES 8

typedef struct sink_state {
  uint64_t count;
  uint64_t sum;
  uint64_t total;
  tr_actor_t *done; /* owned: the latch standing in for main */
} sink_state_t;

typedef struct producer_state {
  tr_actor_t *first; /* owned: the first stage */
  uint64_t n;
} producer_state_t;

/* state is the next stage's (or the sink's) reference, owned. */
static void stage_fresh(void *state, tr_msg_t *msg) {
  int rc;

  if (msg->tag == BENCH_TAG_STOP) {
    bench_exit_self();
    return;
  }
  rc = tr_send_u64(state, BENCH_TAG_VALUE, msg->u64 + 1);
  if (rc != 0)
    bench_fail("stage: tr_send_u64", rc);
}

static void stage_reuse(void *state, tr_msg_t *msg) {
  int rc;

  if (msg->tag == BENCH_TAG_STOP) {
    bench_exit_self();
    return;
  }
  msg->u64++;
  rc = tr_send(state, msg);
  if (rc != 0)
    bench_fail("stage: tr_send", rc);
}

static void stage_on_exit(void *state) { tr_actor_release(state); }

static void sink_behaviour(void *state, tr_msg_t *msg) {
  sink_state_t *s = state;
  int rc;

  if (msg->tag == BENCH_TAG_STOP) {
    bench_exit_self();
    return;
  }
  s->sum += msg->u64;
  if (++s->count == s->total) {
    rc = tr_send_u64(s->done, BENCH_TAG_VALUE, s->sum);
    if (rc != 0)
      bench_fail("sink: tr_send_u64(done)", rc);
  }
}

static void sink_on_exit(void *state) {
  sink_state_t *s = state;

  tr_actor_release(s->done);
  free(s);
}

static void producer_behaviour(void *state, tr_msg_t *msg) {
  producer_state_t *s = state;
  uint64_t i;
  int rc;

  (void)msg;
  for (i = 0; i < s->n; i++) {
    rc = tr_send_u64(s->first, BENCH_TAG_VALUE, i);
    if (rc != 0) {
      bench_fail("producer: tr_send_u64", rc);
      break;
    }
  }
  bench_exit_self();
}

static void producer_on_exit(void *state) {
  producer_state_t *s = state;

  tr_actor_release(s->first);
  free(s);
}

int bench_pipeline(uint64_t n, bench_result_t *res) {
  static const tr_spawn_opts_t sink_opts = {.name = "sink", .on_exit = sink_on_exit};
  static const tr_spawn_opts_t stage_opts = {.name = "stage", .on_exit = stage_on_exit};
  static const tr_spawn_opts_t prod_opts = {.name = "producer", .on_exit = producer_on_exit};
  tr_behaviour_fn stage = bench_msgs == BENCH_MSGS_REUSE ? stage_reuse : stage_fresh;
  /* all[0] is the sink, all[i] stage i counted from the sink's end. */
  tr_actor_t *all[PIPE_STAGES + 1] = {0};
  tr_actor_t *producer, *next;
  bench_latch_t done;
  sink_state_t *ss;
  producer_state_t *ps;
  uint64_t expect = n * (n - 1) / 2 + (uint64_t)PIPE_STAGES * n;
  double t0, secs;
  int i, rc;

  rc = bench_latch_open(&done, "main");
  if (rc != 0)
    return rc;
  ss = malloc(sizeof *ss);
  if (ss == NULL) {
    rc = bench_fail("malloc", -TR_ENOMEM);
    goto fail;
  }
  ss->count = 0;
  ss->sum = 0;
  ss->total = n;
  ss->done = tr_actor_dup(done.ref);
  rc = tr_spawn(sink_behaviour, ss, &sink_opts, &all[0]);
  if (rc != 0) {
    bench_fail("tr_spawn(sink)", rc);
    sink_on_exit(ss);
    all[0] = NULL;
    goto fail;
  }
  for (i = 1; i <= PIPE_STAGES; i++) {
    next = tr_actor_dup(all[i - 1]);
    rc = tr_spawn(stage, next, &stage_opts, &all[i]);
    if (rc != 0) {
      bench_fail("tr_spawn(stage)", rc);
      tr_actor_release(next);
      all[i] = NULL;
      goto fail;
    }
  }

  ps = malloc(sizeof *ps);
  if (ps == NULL) {
    rc = bench_fail("malloc", -TR_ENOMEM);
    goto fail;
  }
  ps->first = tr_actor_dup(all[PIPE_STAGES]);
  ps->n = n;
  t0 = bench_now();
  rc = tr_spawn(producer_behaviour, ps, &prod_opts, &producer);
  if (rc != 0) {
    bench_fail("tr_spawn(producer)", rc);
    producer_on_exit(ps);
    goto fail;
  }
  rc = tr_send_u64(producer, BENCH_TAG_START, 0);
  tr_actor_release(producer);
  if (rc != 0) {
    bench_fail("tr_send_u64(producer, start)", rc);
    goto fail;
  }
  rc = bench_latch_wait(&done);
  secs = bench_now() - t0;
  for (i = 0; i <= PIPE_STAGES; i++) {
    int src = bench_stop_release(all[i]);

    if (rc == 0)
      rc = src;
  }
  if (rc != 0)
    return rc;

  res->n = n;
  res->secs = secs;
  res->rate = (double)n / secs;
  res->ok = done.value == expect;
  snprintf(res->extra, sizeof res->extra, " stages=%d sum=%llu", PIPE_STAGES,
           (unsigned long long)done.value);
  return 0;

fail:
  for (i = 0; i <= PIPE_STAGES; i++)
    tr_actor_release(all[i]);
  bench_latch_close(&done);
  return rc;
}
