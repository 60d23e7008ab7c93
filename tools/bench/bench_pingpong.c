/*
 * pingpong: N round trips between two actors (CAF pingpong.cpp, Erlang
 * pingpong/1).
 *
 * pong replies to each integer with the same integer, to the sender named
 * in the message (Erlang's {self(), X} / From ! X; CAF's response to the
 * sender).  ping sends N; on each reply x > 1 it sends x - 1, and on reply
 * 1 it reports done.  Timing runs from spawning ping to main receiving
 * done.
 *
 * Both sides reuse the message they were handed instead of allocating a
 * new one: the value is still a fresh 64-bit integer each hop, and the
 * sender reference costs one dup and one release per round trip, as a CAF
 * mailbox element's sender does.  The message's cid counts the replies
 * ping received, which lets main check that exactly N round trips happened.
 */
#include <stdio.h>
#include <stdlib.h>

#include "bench.h"

typedef struct ping_state {
  tr_actor_t *pong; /* owned */
  tr_actor_t *done; /* owned: the latch standing in for main */
  uint64_t n;
} ping_state_t;

static void pong_behaviour(void *state, tr_msg_t *msg) {
  tr_actor_t *to = msg->from;
  int rc;

  (void)state;
  if (msg->tag == BENCH_TAG_STOP) {
    bench_exit_self();
    return;
  }
  if (to == NULL) {
    bench_fail("pong: message without a sender", -TR_EINVAL);
    return;
  }
  /* The reply carries no sender, as Erlang's From ! X.  We move the
   * message's reference into `to` so that it stays valid across the send
   * (tr_send borrows it), then drop it. */
  msg->from = NULL;
  rc = tr_send(to, msg);
  tr_actor_release(to);
  if (rc != 0)
    bench_fail("pong: tr_send", rc);
}

static void ping_behaviour(void *state, tr_msg_t *msg) {
  ping_state_t *s = state;
  int rc;

  if (msg->tag == BENCH_TAG_START) {
    /* The runtime has no init hook, so main's kick stands in for CAF's
     * "send on init". */
    msg->u64 = s->n;
    msg->cid = 0;
  } else {
    msg->cid++; /* one more reply received = one more round trip */
    if (msg->u64 <= 1) {
      msg->u64 = msg->cid;
      rc = tr_send(s->done, msg);
      if (rc != 0)
        bench_fail("ping: tr_send(done)", rc);
      bench_exit_self();
      return;
    }
    msg->u64--;
  }
  msg->tag = BENCH_TAG_VALUE;
  msg->from = tr_actor_dup(tr_self());
  rc = tr_send(s->pong, msg);
  if (rc != 0)
    bench_fail("ping: tr_send", rc);
}

static void ping_on_exit(void *state) {
  ping_state_t *s = state;

  tr_actor_release(s->pong);
  tr_actor_release(s->done);
  free(s);
}

int bench_pingpong(uint64_t n, bench_result_t *res) {
  tr_spawn_opts_t pong_opts = {.name = "pong"};
  tr_spawn_opts_t ping_opts = {.name = "ping", .on_exit = ping_on_exit};
  bench_latch_t done;
  tr_actor_t *pong = NULL, *ping = NULL;
  ping_state_t *ps;
  double t0, secs;
  int rc;

  rc = bench_latch_open(&done, "main");
  if (rc != 0)
    return rc;
  rc = tr_spawn(pong_behaviour, NULL, &pong_opts, &pong);
  if (rc != 0) {
    bench_fail("tr_spawn(pong)", rc);
    bench_latch_close(&done);
    return rc;
  }
  ps = malloc(sizeof *ps);
  if (ps == NULL) {
    rc = bench_fail("malloc", -TR_ENOMEM);
    goto fail;
  }
  ps->pong = tr_actor_dup(pong);
  ps->done = tr_actor_dup(done.ref);
  ps->n = n;

  t0 = bench_now();
  rc = tr_spawn(ping_behaviour, ps, &ping_opts, &ping);
  if (rc != 0) {
    /* A failed spawn did not take ps. */
    bench_fail("tr_spawn(ping)", rc);
    ping_on_exit(ps);
    goto fail;
  }
  rc = tr_send_u64(ping, BENCH_TAG_START, 0);
  tr_actor_release(ping);
  if (rc != 0) {
    bench_fail("tr_send_u64(ping, start)", rc);
    goto fail;
  }
  rc = bench_latch_wait(&done);
  secs = bench_now() - t0;
  if (rc != 0) {
    tr_actor_release(pong);
    return rc;
  }
  rc = bench_stop_release(pong);
  if (rc != 0)
    return rc;

  res->n = n;
  res->secs = secs;
  res->rate = (double)n / secs;
  res->ok = done.value == n;
  snprintf(res->extra, sizeof res->extra, " round_trips=%llu", (unsigned long long)done.value);
  return 0;

fail:
  tr_actor_release(pong);
  bench_latch_close(&done);
  return rc;
}
