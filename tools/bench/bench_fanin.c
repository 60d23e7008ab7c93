/*
 * fanin: 8 senders -> 1 counter (CAF fanin.cpp, Erlang fanin/2; Savina
 * "counting" with several producers).
 *
 * The counter exists before timing starts; the 8 senders are spawned after
 * t0, from the main thread as CAF's sys.spawn.  Each sender sends
 * M = N / 8 integers in a tight loop with no flow control (unbounded
 * mailbox) and ends; the counter reports when it has counted 8 * M.  Every
 * value is a freshly allocated message, as in both peers, and there is
 * nothing to forward: the line always says msgs=fresh.
 *
 * The report alone cannot show a duplicated delivery (the counter reports
 * at exactly 8 * M), so main keeps the counter's state, joins the counter
 * after stopping it, and checks the final count too.
 */
#include <stdio.h>
#include <stdlib.h>

#include "bench.h"

#define FANIN_SENDERS 8

typedef struct counter_state {
  uint64_t count;
  uint64_t total;
  tr_actor_t *done; /* owned: the latch standing in for main */
} counter_state_t;

typedef struct sender_state {
  tr_actor_t *target; /* owned: the counter */
  uint64_t m;
} sender_state_t;

static void counter_behaviour(void *state, tr_msg_t *msg) {
  counter_state_t *s = state;
  int rc;

  if (msg->tag == BENCH_TAG_STOP) {
    bench_exit_self();
    return;
  }
  if (++s->count == s->total) {
    rc = tr_send_u64(s->done, BENCH_TAG_VALUE, s->count);
    if (rc != 0)
      bench_fail("counter: tr_send_u64(done)", rc);
  }
}

/* The state itself belongs to main, which reads the final count. */
static void counter_on_exit(void *state) {
  counter_state_t *s = state;

  tr_actor_release(s->done);
  s->done = NULL;
}

/* A sender does its whole quota in one turn, as CAF's function-based
 * sender does on init, then ends. */
static void sender_behaviour(void *state, tr_msg_t *msg) {
  sender_state_t *s = state;
  uint64_t i;
  int rc;

  (void)msg;
  for (i = 0; i < s->m; i++) {
    rc = tr_send_u64(s->target, BENCH_TAG_VALUE, i);
    if (rc != 0) {
      bench_fail("sender: tr_send_u64", rc);
      break;
    }
  }
  bench_exit_self();
}

static void sender_on_exit(void *state) {
  sender_state_t *s = state;

  tr_actor_release(s->target);
  free(s);
}

int bench_fanin(uint64_t n0, bench_result_t *res) {
  tr_spawn_opts_t copts = {.name = "counter", .on_exit = counter_on_exit};
  tr_spawn_opts_t sopts = {.name = "sender", .on_exit = sender_on_exit};
  const uint64_t m = n0 / FANIN_SENDERS;
  const uint64_t n = m * FANIN_SENDERS;
  bench_latch_t done;
  tr_actor_t *counter = NULL, *sender;
  counter_state_t *cs;
  sender_state_t *ss;
  uint64_t final_count;
  double t0, secs;
  int i, rc;

  if (m == 0) {
    fprintf(stderr, "tr-bench: fanin: n must be at least %d\n", FANIN_SENDERS);
    return -TR_EINVAL;
  }
  rc = bench_latch_open(&done, "main");
  if (rc != 0)
    return rc;
  cs = malloc(sizeof *cs);
  if (cs == NULL) {
    rc = bench_fail("malloc", -TR_ENOMEM);
    goto fail;
  }
  cs->count = 0;
  cs->total = n;
  cs->done = tr_actor_dup(done.ref);
  rc = tr_spawn(counter_behaviour, cs, &copts, &counter);
  if (rc != 0) {
    bench_fail("tr_spawn(counter)", rc);
    counter_on_exit(cs);
    free(cs);
    cs = NULL;
    goto fail;
  }

  t0 = bench_now();
  for (i = 0; i < FANIN_SENDERS; i++) {
    ss = malloc(sizeof *ss);
    if (ss == NULL) {
      rc = bench_fail("malloc", -TR_ENOMEM);
      goto fail;
    }
    ss->target = tr_actor_dup(counter);
    ss->m = m;
    rc = tr_spawn(sender_behaviour, ss, &sopts, &sender);
    if (rc != 0) {
      bench_fail("tr_spawn(sender)", rc);
      sender_on_exit(ss);
      goto fail;
    }
    rc = tr_send_u64(sender, BENCH_TAG_START, 0);
    tr_actor_release(sender);
    if (rc != 0) {
      bench_fail("tr_send_u64(sender, start)", rc);
      goto fail;
    }
  }
  rc = bench_latch_wait(&done);
  secs = bench_now() - t0;
  if (rc != 0)
    goto fail;
  /* Stop the counter but keep main's reference to join it: after the join
   * its state is quiescent and main may read and free it. */
  rc = bench_stop_release(tr_actor_dup(counter));
  if (rc != 0)
    goto fail;
  rc = tr_join(counter, -1);
  tr_actor_release(counter);
  if (rc != 0) {
    free(cs);
    return bench_fail("tr_join(counter)", rc);
  }
  final_count = cs->count;
  free(cs);

  res->n = n;
  res->secs = secs;
  res->rate = (double)n / secs;
  res->ok = done.value == n && final_count == n;
  snprintf(res->extra, sizeof res->extra, " senders=%d received=%llu", FANIN_SENDERS,
           (unsigned long long)final_count);
  return 0;

fail:
  /* bench_fail has shut the runtime down, so the counter exits soon; its
   * state may only be freed once it has. */
  if (counter != NULL) {
    (void)tr_join(counter, -1);
    tr_actor_release(counter);
    free(cs);
  }
  bench_latch_close(&done);
  return rc;
}
