/*
 * skynet: a tree of 1,111,111 actors (CAF skynet.cpp, Erlang skynet/3).
 *
 * A node of size 1 sends its number to its parent and ends.  Other nodes
 * spawn 10 children (num + i * size / 10, size / 10), sum the 10 replies,
 * send the sum up and end.  The root has size N; main checks the sum
 * N(N-1)/2, and the rate is all actors spawned (N + N/10 + ... + 1) per
 * second, as the peers compute it.
 *
 * Each node spawns its children from inside its behaviour, and each child
 * holds a reference to its parent (released in on_exit).  Actors start
 * idle here, so a parent kicks each child with one START message right
 * after spawning it: that message is this runtime's counterpart of the
 * initial scheduling every CAF actor and Erlang process gets on spawn.
 * msgs=fresh (the default): every reply is a new message, as in both
 * peers.  msgs=reuse: replies reuse the message in hand (the leaf's START,
 * the node's last reply) instead of allocating.
 */
#include <stdio.h>
#include <stdlib.h>

#include "bench.h"

#define SKY_FANOUT 10

typedef struct sky_state {
  tr_actor_t *parent; /* owned */
  uint64_t num;
  uint64_t size;
  uint64_t sum;
  int pending; /* replies still expected */
} sky_state_t;

static void sky_behaviour(void *state, tr_msg_t *msg);

static void sky_on_exit(void *state) {
  sky_state_t *s = state;

  tr_actor_release(s->parent);
  free(s);
}

/* Spawns one node and kicks it.  On failure the node's state is freed
 * here and the failure recorded (which shuts the runtime down). */
static int sky_spawn(tr_actor_t *parent, uint64_t num, uint64_t size) {
  static const tr_spawn_opts_t opts = {.name = "skynet", .on_exit = sky_on_exit};
  sky_state_t *s = malloc(sizeof *s);
  tr_actor_t *child;
  int rc;

  if (s == NULL)
    return bench_fail("skynet: malloc", -TR_ENOMEM);
  s->parent = tr_actor_dup(parent);
  s->num = num;
  s->size = size;
  s->sum = 0;
  s->pending = SKY_FANOUT;
  rc = tr_spawn(sky_behaviour, s, &opts, &child);
  if (rc != 0) {
    sky_on_exit(s);
    return bench_fail("skynet: tr_spawn", rc);
  }
  rc = tr_send_u64(child, BENCH_TAG_START, 0);
  tr_actor_release(child);
  if (rc != 0)
    return bench_fail("skynet: tr_send_u64(start)", rc);
  return 0;
}

/* Sends v to the parent, in a new message or in msg (the one in hand),
 * as --msgs says, and ends the node. */
static void sky_reply(sky_state_t *s, tr_msg_t *msg, uint64_t v) {
  int rc;

  if (bench_msgs == BENCH_MSGS_REUSE) {
    msg->tag = BENCH_TAG_VALUE;
    msg->u64 = v;
    rc = tr_send(s->parent, msg);
  } else {
    rc = tr_send_u64(s->parent, BENCH_TAG_VALUE, v);
  }
  if (rc != 0)
    bench_fail("skynet: tr_send(reply)", rc);
  bench_exit_self();
}

static void sky_behaviour(void *state, tr_msg_t *msg) {
  sky_state_t *s = state;
  uint64_t sub;
  int i;

  if (msg->tag == BENCH_TAG_START) {
    if (s->size == 1) {
      sky_reply(s, msg, s->num);
      return;
    }
    sub = s->size / SKY_FANOUT;
    for (i = 0; i < SKY_FANOUT; i++)
      if (sky_spawn(tr_self(), s->num + (uint64_t)i * sub, sub) != 0)
        return;
    return;
  }
  s->sum += msg->u64;
  if (--s->pending == 0)
    sky_reply(s, msg, s->sum);
}

int bench_skynet(uint64_t n, bench_result_t *res) {
  bench_latch_t done;
  uint64_t k, total = 0, expect;
  double t0, secs;
  int rc;

  /* The tree and its expected sum assume N = 10^k. */
  for (k = n; k % SKY_FANOUT == 0; k /= SKY_FANOUT)
    ;
  if (k != 1) {
    fprintf(stderr, "tr-bench: skynet: n must be a power of 10\n");
    return -TR_EINVAL;
  }
  for (k = n; k >= 1; k /= SKY_FANOUT)
    total += k;
  expect = n * (n - 1) / 2;

  rc = bench_latch_open(&done, "main");
  if (rc != 0)
    return rc;
  t0 = bench_now();
  rc = sky_spawn(done.ref, 0, n);
  if (rc != 0) {
    bench_latch_close(&done);
    return rc;
  }
  rc = bench_latch_wait(&done);
  secs = bench_now() - t0;
  if (rc != 0)
    return rc;

  res->n = n;
  res->secs = secs;
  res->rate = (double)total / secs;
  res->ok = done.value == expect;
  snprintf(res->extra, sizeof res->extra, " actors=%llu sum=%llu", (unsigned long long)total,
           (unsigned long long)done.value);
  return 0;
}
