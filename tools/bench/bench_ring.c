/*
 * ring: 503 actors pass a token N hops (CAF ring.cpp, Erlang ring/2).
 *
 * Every node knows its successor before timing starts.  Main injects the
 * token N into node 0; a node that receives t > 0 forwards t - 1 to its
 * successor, and the node that receives 0 reports done (and stays alive,
 * as in both peers).  Timing covers the injection up to main receiving
 * done.
 *
 * msgs=fresh (the default): every hop sends a new message carrying t - 1,
 * as both peers do.  msgs=reuse: the token is one message forwarded hop to
 * hop (zero allocations).  The message's cid counts the hops, so main can
 * check that the ring made exactly N.
 */
#include <stdio.h>
#include <stdlib.h>

#include "bench.h"

#define RING_SIZE 503

typedef struct node_state {
  tr_actor_t *next; /* owned; set by main before the token is injected */
  tr_actor_t *done; /* owned: the latch standing in for main */
} node_state_t;

/* The node that receives 0 reports the hop count and stays alive. */
static void node_report(node_state_t *s, const tr_msg_t *msg) {
  int rc = tr_send_u64(s->done, BENCH_TAG_VALUE, msg->cid);

  if (rc != 0)
    bench_fail("ring node: tr_send_u64(done)", rc);
}

static void node_fresh(void *state, tr_msg_t *msg) {
  node_state_t *s = state;
  int rc;

  if (msg->tag == BENCH_TAG_STOP) {
    bench_exit_self();
    return;
  }
  if (msg->u64 == 0) {
    node_report(s, msg);
    return;
  }
  rc = bench_send_new(s->next, BENCH_TAG_VALUE, msg->u64 - 1, msg->cid + 1, NULL);
  if (rc != 0)
    bench_fail("ring node: tr_send", rc);
}

static void node_reuse(void *state, tr_msg_t *msg) {
  node_state_t *s = state;
  int rc;

  if (msg->tag == BENCH_TAG_STOP) {
    bench_exit_self();
    return;
  }
  if (msg->u64 > 0) {
    msg->u64--;
    msg->cid++;
    rc = tr_send(s->next, msg);
    if (rc != 0)
      bench_fail("ring node: tr_send", rc);
    return;
  }
  node_report(s, msg);
}

static void node_on_exit(void *state) {
  node_state_t *s = state;

  tr_actor_release(s->next);
  tr_actor_release(s->done);
  free(s);
}

int bench_ring(uint64_t n, bench_result_t *res) {
  tr_spawn_opts_t opts = {.name = "ring", .on_exit = node_on_exit};
  tr_behaviour_fn node = bench_msgs == BENCH_MSGS_REUSE ? node_reuse : node_fresh;
  tr_actor_t *ring[RING_SIZE] = {0};
  node_state_t *st[RING_SIZE];
  bench_latch_t done;
  tr_msg_t *token;
  double t0, secs;
  int i, rc = 0, spawned = 0;

  rc = bench_latch_open(&done, "main");
  if (rc != 0)
    return rc;
  for (i = 0; i < RING_SIZE; i++) {
    st[i] = malloc(sizeof *st[i]);
    if (st[i] == NULL) {
      rc = bench_fail("malloc", -TR_ENOMEM);
      goto fail;
    }
    st[i]->next = NULL;
    st[i]->done = tr_actor_dup(done.ref);
    rc = tr_spawn(node, st[i], &opts, &ring[i]);
    if (rc != 0) {
      bench_fail("tr_spawn(ring node)", rc);
      node_on_exit(st[i]);
      goto fail;
    }
    spawned++;
  }
  /* Writing the successors directly into the states is safe: the nodes are
   * idle until the token arrives, and the token's send orders these writes
   * before any node reads them (CAF sends a setup message instead). */
  for (i = 0; i < RING_SIZE; i++)
    st[i]->next = tr_actor_dup(ring[(i + 1) % RING_SIZE]);

  rc = tr_msg_new(&token);
  if (rc != 0) {
    bench_fail("tr_msg_new", rc);
    goto fail;
  }
  token->tag = BENCH_TAG_VALUE;
  token->u64 = n;
  token->cid = 0;
  t0 = bench_now();
  rc = tr_send(ring[0], token);
  if (rc != 0) {
    bench_fail("tr_send(token)", rc);
    goto fail;
  }
  rc = bench_latch_wait(&done);
  secs = bench_now() - t0;
  for (i = 0; i < RING_SIZE; i++) {
    int src = bench_stop_release(ring[i]);

    if (rc == 0)
      rc = src;
  }
  if (rc != 0)
    return rc;

  res->n = n;
  res->secs = secs;
  res->rate = (double)n / secs;
  res->ok = done.value == n;
  snprintf(res->extra, sizeof res->extra, " ring_size=%d hops=%llu", RING_SIZE,
           (unsigned long long)done.value);
  return 0;

fail:
  /* bench_fail has shut the runtime down: every spawned node exits and
   * frees its state in node_on_exit; only main's references remain. */
  for (i = 0; i < spawned; i++)
    tr_actor_release(ring[i]);
  bench_latch_close(&done);
  return rc;
}
