/*
 * spawn_idle: memory per idle actor (CAF spawn_idle.cpp, Erlang
 * spawn_idle/1).
 *
 * N idle actors are spawned from the main thread as a chain: each holds a
 * reference to its predecessor, and the first holds "main".  Each handles
 * PING (forward to the predecessor and stay alive) and STOP (forward and
 * exit).  Steps, as the peers: read RSS, start t0, spawn N (spawn_secs),
 * send one PING sweep from the last actor to the first and on to main,
 * which proves every actor exists and is idle (secs, the rate's basis);
 * read RSS again; then a STOP sweep (stop_secs).  bytes_per_actor is the
 * RSS delta / N, the peers' mem_per_actor_bytes.
 *
 * An ordinary link's state pointer *is* its predecessor reference, so an
 * idle actor costs the runtime's actor object and nothing else: the
 * figure measures the runtime, not this file's bookkeeping (CAF's count
 * includes its two captured handles, which live inside its actor object).
 * Main is not an actor, so the first link reports to two latches, one per
 * sweep.  msgs=fresh (the default): every link sends a new message on,
 * as both peers do.  msgs=reuse: sweeps forward the message they were
 * handed.  The message's cid counts the actors it passed through.
 */
#include <stdio.h>
#include <stdlib.h>

#include "bench.h"

typedef struct first_state {
  tr_actor_t *ping_done; /* owned: latch for the PING sweep */
  tr_actor_t *stop_done; /* owned: latch for the STOP sweep */
} first_state_t;

/* state is the predecessor reference (owned). */
static void link_fresh(void *state, tr_msg_t *msg) {
  int stop = msg->tag == BENCH_TAG_STOP;
  int rc = bench_send_new(state, msg->tag, 0, msg->cid + 1, NULL);

  if (rc != 0)
    bench_fail("idle: tr_send", rc);
  if (stop)
    bench_exit_self();
}

static void link_reuse(void *state, tr_msg_t *msg) {
  tr_actor_t *prev = state;
  int stop = msg->tag == BENCH_TAG_STOP;
  int rc;

  msg->cid++;
  rc = tr_send(prev, msg);
  if (rc != 0)
    bench_fail("idle: tr_send", rc);
  if (stop)
    bench_exit_self();
}

static void link_on_exit(void *state) { tr_actor_release(state); }

static void first_behaviour(void *state, tr_msg_t *msg) {
  first_state_t *s = state;
  int stop = msg->tag == BENCH_TAG_STOP;
  int rc;

  if (bench_msgs == BENCH_MSGS_REUSE) {
    msg->u64 = ++msg->cid;
    rc = tr_send(stop ? s->stop_done : s->ping_done, msg);
  } else {
    rc = tr_send_u64(stop ? s->stop_done : s->ping_done, msg->tag, msg->cid + 1);
  }
  if (rc != 0)
    bench_fail("idle first: tr_send", rc);
  if (stop)
    bench_exit_self();
}

static void first_on_exit(void *state) {
  first_state_t *s = state;

  tr_actor_release(s->ping_done);
  tr_actor_release(s->stop_done);
  free(s);
}

/* Sends a sweep message (tag) into the chain at last.  Returns 0 or rc. */
static int sweep(tr_actor_t *last, uint32_t tag) {
  tr_msg_t *msg;
  int rc = tr_msg_new(&msg);

  if (rc != 0)
    return bench_fail("tr_msg_new", rc);
  msg->tag = tag;
  msg->cid = 0;
  rc = tr_send(last, msg);
  if (rc != 0)
    return bench_fail("tr_send(sweep)", rc);
  return 0;
}

int bench_spawn_idle(uint64_t n, bench_result_t *res) {
  static const tr_spawn_opts_t first_opts = {.name = "idle", .on_exit = first_on_exit};
  static const tr_spawn_opts_t link_opts = {.name = "idle", .on_exit = link_on_exit};
  tr_behaviour_fn link = bench_msgs == BENCH_MSGS_REUSE ? link_reuse : link_fresh;
  bench_latch_t ping_done, stop_done;
  tr_actor_t *last = NULL, *next;
  first_state_t *fs;
  long long rss0, rss1;
  double t0, spawn_secs, secs, t1, stop_secs;
  uint64_t i;
  int rc;

  rc = bench_latch_open(&ping_done, "main-ping");
  if (rc != 0)
    return rc;
  rc = bench_latch_open(&stop_done, "main-stop");
  if (rc != 0) {
    bench_latch_close(&ping_done);
    return rc;
  }
  fs = malloc(sizeof *fs);
  if (fs == NULL) {
    rc = bench_fail("malloc", -TR_ENOMEM);
    goto fail;
  }
  fs->ping_done = tr_actor_dup(ping_done.ref);
  fs->stop_done = tr_actor_dup(stop_done.ref);

  rss0 = bench_rss_bytes();
  t0 = bench_now();
  rc = tr_spawn(first_behaviour, fs, &first_opts, &last);
  if (rc != 0) {
    bench_fail("tr_spawn(idle)", rc);
    first_on_exit(fs);
    last = NULL;
    goto fail;
  }
  for (i = 1; i < n; i++) {
    /* Main's reference to the previous link becomes the new link's state,
     * so main only ever holds one reference: the newest link's. */
    rc = tr_spawn(link, last, &link_opts, &next);
    if (rc != 0) {
      bench_fail("tr_spawn(idle)", rc);
      goto fail; /* a failed spawn did not take last */
    }
    last = next;
  }
  spawn_secs = bench_now() - t0;
  rc = sweep(last, BENCH_TAG_PING);
  if (rc != 0)
    goto fail;
  rc = bench_latch_wait(&ping_done);
  secs = bench_now() - t0;
  if (rc != 0)
    goto fail;
  rss1 = bench_rss_bytes();

  t1 = bench_now();
  rc = sweep(last, BENCH_TAG_STOP);
  tr_actor_release(last); /* as CAF's `last = nullptr` */
  last = NULL;
  if (rc != 0)
    goto fail;
  rc = bench_latch_wait(&stop_done);
  stop_secs = bench_now() - t1;
  if (rc != 0)
    return rc;

  res->n = n;
  res->secs = secs;
  res->rate = (double)n / secs;
  res->ok = ping_done.value == n && stop_done.value == n;
  snprintf(res->extra, sizeof res->extra,
           " bytes_per_actor=%.1f rss_before=%lld rss_after=%lld spawn_secs=%.6f"
           " stop_secs=%.6f spawner=main_thread",
           (double)(rss1 - rss0) / (double)n, rss0, rss1, spawn_secs, stop_secs);
  return 0;

fail:
  tr_actor_release(last);
  bench_latch_close(&ping_done);
  bench_latch_close(&stop_done);
  return rc;
}
