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
 * msgs=fresh (the default): every send is a new message, as in both
 * peers; ping's carries its sender (one dup per round trip, as a CAF
 * mailbox element's sender or Erlang's {self(), X}), pong's reply none.
 * msgs=reuse: both sides send the message they were handed instead, with
 * the same sender dup and release.  ping counts the replies it receives,
 * which lets main check that exactly N round trips happened.
 */
#include <stdio.h>
#include <stdlib.h>

#include "bench.h"

typedef struct ping_state {
  tr_actor_t *pong; /* owned */
  tr_actor_t *done; /* owned: the latch standing in for main */
  uint64_t n;
  uint64_t replies;
} ping_state_t;

static void pong_fresh(void *state, tr_msg_t *msg) {
  int rc;

  (void)state;
  if (msg->tag == BENCH_TAG_STOP) {
    bench_exit_self();
    return;
  }
  if (msg->from == NULL) {
    bench_fail("pong: message without a sender", -TR_EINVAL);
    return;
  }
  /* The reply carries no sender, as Erlang's From ! X.  The runtime frees
   * msg, and its sender reference, when this returns. */
  rc = tr_send_u64(msg->from, BENCH_TAG_VALUE, msg->u64);
  if (rc != 0)
    bench_fail("pong: tr_send_u64", rc);
}

static void pong_reuse(void *state, tr_msg_t *msg) {
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

/* The runtime has no init hook, so main's kick (START) stands in for
 * CAF's "send on init".  Returns the value to send to pong, or 0 when the
 * last round trip is done, which ping has then reported to main. */
static uint64_t ping_step(ping_state_t *s, const tr_msg_t *msg) {
  int rc;

  if (msg->tag == BENCH_TAG_START)
    return s->n;
  s->replies++; /* one more reply received = one more round trip */
  if (msg->u64 > 1)
    return msg->u64 - 1;
  rc = tr_send_u64(s->done, BENCH_TAG_VALUE, s->replies);
  if (rc != 0)
    bench_fail("ping: tr_send_u64(done)", rc);
  bench_exit_self();
  return 0;
}

static void ping_fresh(void *state, tr_msg_t *msg) {
  ping_state_t *s = state;
  uint64_t v = ping_step(s, msg);
  int rc;

  if (v == 0)
    return;
  rc = bench_send_new(s->pong, BENCH_TAG_VALUE, v, 0, tr_actor_dup(tr_self()));
  if (rc != 0)
    bench_fail("ping: tr_send", rc);
}

static void ping_reuse(void *state, tr_msg_t *msg) {
  ping_state_t *s = state;
  uint64_t v = ping_step(s, msg);
  int rc;

  if (v == 0)
    return;
  msg->u64 = v;
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
  int reuse = bench_msgs == BENCH_MSGS_REUSE;
  int rc;

  rc = bench_latch_open(&done, "main");
  if (rc != 0)
    return rc;
  rc = tr_spawn(reuse ? pong_reuse : pong_fresh, NULL, &pong_opts, &pong);
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
  ps->replies = 0;

  t0 = bench_now();
  rc = tr_spawn(reuse ? ping_reuse : ping_fresh, ps, &ping_opts, &ping);
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
