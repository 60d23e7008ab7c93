/*
 * Task workloads (issue 3), run inside one task actor each:
 *
 *   task_switch   two tasks of one actor play ping-pong through two
 *                 rendezvous channels (tr_chan_*, capacity 0): every
 *                 hand-off wakes the other task and blocks this one, so
 *                 rate = task-to-task switches (= items handed over) per
 *                 second.
 *   task_spawn    spawn + join of N tasks that return at once, in nursery
 *                 rounds of 1000; rate = tasks per second.
 *   cancel_storm  a nursery of N sleeping tasks is cancelled; secs = from
 *                 the cancel to the nursery's close returning.
 */
#include <stdio.h>
#include <stdlib.h>

#include "bench.h"

typedef struct task_bench {
  uint64_t n;
  double secs;
  uint64_t count;
  int rc;
} task_bench_t;

/* Runs fn as the main task of a fresh actor and waits for it. */
static int run_in_task_actor(tr_task_fn fn, task_bench_t *tb) {
  tr_actor_t *a;
  tr_spawn_opts_t o = {.name = "bench"};
  int rc = tr_spawn_task_actor(fn, tb, &o, &a);
  if (rc != 0)
    return bench_fail("tr_spawn_task_actor", rc);
  tr_join(a, -1);
  rc = tr_task_actor_result(a);
  tr_actor_release(a);
  if (rc != 0)
    return bench_fail("bench task", rc);
  return 0;
}

/* ---- task_switch ---------------------------------------------------------- */

typedef struct switch_ctx {
  task_bench_t *tb;
  tr_chan_t *ping, *pong; /* rendezvous channels, one per direction */
  uint64_t bad;           /* values that came back wrong */
} switch_ctx_t;

/* Sends 0, 1, 2, ... and waits for each to come back: two hand-offs, two
 * switches, per round.  Closing the channel ends the other side. */
static int pinger(void *arg) {
  switch_ctx_t *c = arg;
  task_bench_t *tb = c->tb;
  void *item;
  int rc = 0;
  for (uint64_t i = 0; i < tb->n / 2; i++) {
    if ((rc = tr_chan_send(c->ping, (void *)(uintptr_t)i)) != 0 ||
        (rc = tr_chan_recv(c->pong, &item)) != 0)
      break;
    if ((uintptr_t)item != i)
      c->bad++;
    tb->count += 2; /* tasks of one actor never run at once */
  }
  int crc = tr_chan_close(c->ping);
  return rc ? rc : crc;
}

/* Sends back whatever it receives, until the pinger closes. */
static int ponger(void *arg) {
  switch_ctx_t *c = arg;
  void *item;
  int rc;
  while ((rc = tr_chan_recv(c->ping, &item)) == 0)
    if ((rc = tr_chan_send(c->pong, item)) != 0)
      return rc;
  return rc == -TR_EEOF ? 0 : rc;
}

static int switch_main(void *arg) {
  task_bench_t *tb = arg;
  switch_ctx_t c = {.tb = tb};
  tr_nursery_t *n;
  int rc = tr_chan_new(&c.ping, 0);
  if (rc == 0)
    rc = tr_chan_new(&c.pong, 0);
  if (rc == 0)
    rc = tr_nursery_open(&n);
  if (rc) {
    (void)tr_chan_free(c.ping); /* NULL, or not yet used: frees */
    (void)tr_chan_free(c.pong);
    return rc;
  }
  double t0 = bench_now();
  /* The ponger first, so that it already waits when the first ping comes. */
  if ((rc = tr_nursery_spawn(n, ponger, &c, NULL)) == 0)
    rc = tr_nursery_spawn(n, pinger, &c, NULL);
  if (rc)
    (void)tr_chan_close(c.ping); /* the ponger, if it started, ends */
  int crc = tr_nursery_close(n);
  tb->secs = bench_now() - t0;
  (void)tr_chan_free(c.ping); /* every task is done: nobody waits on them */
  (void)tr_chan_free(c.pong);
  if (rc == 0 && crc == 0 && c.bad != 0)
    tb->count = 0; /* a value came back wrong: the check fails */
  return rc ? rc : crc;
}

int bench_task_switch(uint64_t n, bench_result_t *res) {
  task_bench_t tb = {.n = n};
  int rc = run_in_task_actor(switch_main, &tb);
  if (rc)
    return rc;
  res->n = tb.count;
  res->secs = tb.secs;
  res->rate = (double)tb.count / tb.secs;
  res->ok = tb.count == (n / 2) * 2;
  snprintf(res->extra, sizeof res->extra, " ns_per_switch=%.1f", tb.secs * 1e9 / (double)tb.count);
  return 0;
}

/* ---- task_spawn ------------------------------------------------------------ */

static int nothing(void *arg) {
  ++*(uint64_t *)arg;
  return 0;
}

#define SPAWN_ROUND 1000

static int spawn_main(void *arg) {
  task_bench_t *tb = arg;
  double t0 = bench_now();
  for (uint64_t done = 0; done < tb->n;) {
    tr_nursery_t *n;
    int rc = tr_nursery_open(&n);
    if (rc)
      return rc;
    for (int i = 0; i < SPAWN_ROUND && done < tb->n; i++, done++)
      if ((rc = tr_nursery_spawn(n, nothing, &tb->count, NULL)) != 0)
        break;
    int crc = tr_nursery_close(n);
    if (rc || crc)
      return rc ? rc : crc;
  }
  tb->secs = bench_now() - t0;
  return 0;
}

int bench_task_spawn(uint64_t n, bench_result_t *res) {
  task_bench_t tb = {.n = n};
  int rc = run_in_task_actor(spawn_main, &tb);
  if (rc)
    return rc;
  res->n = n;
  res->secs = tb.secs;
  res->rate = (double)n / tb.secs;
  res->ok = tb.count == n;
  snprintf(res->extra, sizeof res->extra, " ns_per_task=%.1f", tb.secs * 1e9 / (double)n);
  return 0;
}

/* ---- cancel_storm ------------------------------------------------------------ */

static int sleep_forever(void *arg) {
  task_bench_t *tb = arg;
  int rc = tr_sleep(3600LL * 1000 * 1000 * 1000);
  if (rc == -TR_ECANCELED)
    tb->count++;
  return rc;
}

static int storm_main(void *arg) {
  task_bench_t *tb = arg;
  tr_nursery_t *n;
  int rc = tr_nursery_open(&n);
  if (rc)
    return rc;
  for (uint64_t i = 0; i < tb->n; i++)
    if ((rc = tr_nursery_spawn(n, sleep_forever, tb, NULL)) != 0)
      break;
  /* Let every task reach its sleep: a checkpoint queues us behind them. */
  if (rc == 0)
    rc = tr_checkpoint();
  long long rss0 = bench_rss_bytes();
  double t0 = bench_now();
  tr_nursery_cancel(n);
  int crc = tr_nursery_close(n);
  tb->secs = bench_now() - t0;
  long long rss1 = bench_rss_bytes();
  (void)rss1;
  tb->rc = (int)(rss0 / 1024); /* resident KiB with all tasks parked */
  if (crc != -TR_ECANCELED && crc != 0)
    return crc;
  return rc;
}

int bench_cancel_storm(uint64_t n, bench_result_t *res) {
  task_bench_t tb = {.n = n};
  long long before = bench_rss_bytes();
  int rc = run_in_task_actor(storm_main, &tb);
  if (rc)
    return rc;
  res->n = n;
  res->secs = tb.secs;
  res->rate = (double)n / tb.secs;
  res->ok = tb.count == n;
  snprintf(res->extra, sizeof res->extra, " cancelled=%llu bytes_per_parked_task=%.0f",
           (unsigned long long)tb.count, ((double)tb.rc * 1024.0 - (double)before) / (double)n);
  return 0;
}
