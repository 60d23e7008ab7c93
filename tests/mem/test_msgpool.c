/*
 * The small-object magazines (runtime/mem/msgpool.c), through envelope
 * extensions and small buffers: on a worker, a freed object is handed out
 * again (an envx zeroed, whatever it held); frees beyond a worker's two
 * magazines go to the depot, and allocations beyond them come back from
 * it, not from malloc; large buffers are plain memory; everything is freed
 * when the runtime stops (ASan's leak check); off a worker there is no
 * cache.
 */
#include <criterion/criterion.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <tractor/actor.h>

#include "runtime/sched/worker.h"
#include "schema/envelope.h"

typedef struct probe {
  int done;
  int reused;      /* the second envx was the first one's memory */
  int zeroed;      /* ... and all zero */
  int burst_ok;    /* 3 magazines' worth allocated and freed */
  unsigned cached; /* the worker's current magazine after the burst */
  int spare;       /* ... and it has a full spare */
  int from_depot;  /* a second burst reused every object of the first */
  int buf_reused;  /* a small buffer's memory came back for another */
  int big_apart;   /* a large buffer's memory did not */
} probe_t;

#define BURST (3 * TR_MEM_SMALL_BATCH)

static int ptr_cmp(const void *a, const void *b) {
  uintptr_t x = (uintptr_t) * (void *const *)a, y = (uintptr_t) * (void *const *)b;
  return x < y ? -1 : x > y;
}

/* Three magazines of small buffers freed: the third goes to the depot.
 * Three allocated again: the last comes back from the depot, so every
 * buffer is one of the first burst's. */
static int buf_bursts(void) {
  static tr_buf_t *first[BURST], *second[BURST];
  for (int i = 0; i < BURST; i++)
    if (tr_buf_new(64, &first[i]) != 0)
      return 0;
  for (int i = 0; i < BURST; i++)
    tr_buf_release(first[i]);
  int ok = 1;
  for (int i = 0; i < BURST; i++)
    ok = ok && tr_buf_new(8, &second[i]) == 0;
  qsort(first, BURST, sizeof first[0], ptr_cmp);
  for (int i = 0; ok && i < BURST; i++)
    ok = bsearch(&second[i], first, BURST, sizeof first[0], ptr_cmp) != NULL;
  for (int i = 0; i < BURST; i++)
    tr_buf_release(second[i]);
  return ok;
}

static const struct tr_envx zero_x;

/* A Start with every owned field of its envx set, freed at once. */
static struct tr_envx *start_and_free(void) {
  tr_msg_t *m = NULL;
  if (tr_msg_new(&m) != 0)
    return NULL;
  m->body = TR_BODY_START;
  struct tr_envx *x = tr__envx_get(m);
  if (!x || tr__envx_set_start(x, "some.ns", "func") != 0) {
    tr_msg_free(m);
    return NULL;
  }
  x->has_src = 1;
  x->src.name = strdup("caller");
  x->u.start.has_caller = 1;
  memset(x->u.start.caller.uuid, 0xab, TR_UUID_LEN);
  tr_msg_free(m);
  return x; /* only compared, never dereferenced */
}

static void probe_beh(void *state, tr_msg_t *msg) {
  probe_t *p = state;
  tr_msg_free(msg);
  struct tr_envx *first = start_and_free();
  tr_msg_t *m = NULL;
  if (first && tr_msg_new(&m) == 0) {
    m->body = TR_BODY_CANCEL;
    struct tr_envx *x = tr__envx_get(m);
    p->reused = x == first;
    /* All zero but the kind the body claimed. */
    p->zeroed = x && x->kind == TR_BODY_CANCEL;
    if (x) {
      struct tr_envx copy = *x;
      copy.kind = 0;
      p->zeroed = p->zeroed && memcmp(&copy, &zero_x, sizeof copy) == 0;
    }
    tr_msg_free(m);
  }
  /* Three magazines' worth at once: the third goes to the depot. */
  tr_msg_t *ms[BURST];
  int ok = 1;
  for (int i = 0; i < BURST; i++) {
    ms[i] = NULL;
    if (tr_msg_new(&ms[i]) != 0) {
      ok = 0;
      continue;
    }
    ms[i]->body = TR_BODY_START;
    struct tr_envx *x = tr__envx_get(ms[i]);
    ok = ok && x && tr__envx_set_start(x, "n", "f") == 0;
  }
  for (int i = 0; i < BURST; i++)
    tr_msg_free(ms[i]);
  p->burst_ok = ok;
  const tr_mag_t *mag = &tr__worker_self()->mem.mag[TR_MEM_ENVX];
  p->cached = mag->pool_len;
  p->spare = mag->spare != NULL;
  p->from_depot = buf_bursts();
  tr_buf_t *b = NULL, *c = NULL;
  if (tr_buf_new(100, &b) == 0) {
    void *was = b;
    tr_buf_release(b);
    p->buf_reused = tr_buf_new(1, &c) == 0 && (void *)c == was;
    tr_buf_release(c);
  }
  if (tr_buf_new(4096, &b) == 0) {
    void *was = b;
    tr_buf_release(b);
    p->big_apart = tr_buf_new(1, &c) == 0 && (void *)c != was;
    tr_buf_release(c);
  }
  p->done = 1;
  tr_actor_exit();
}

static int probe_root(void *arg) {
  tr_actor_t *a = NULL;
  int rc = tr_spawn(probe_beh, arg, NULL, &a);
  if (rc)
    return rc;
  rc = tr_send_u64(a, 1, 0);
  if (rc == 0)
    rc = tr_join(a, -1);
  tr_actor_release(a);
  return rc;
}

Test(msgpool, reused_on_a_worker_through_the_depot, .timeout = 30) {
  probe_t p = {0};
  tr_config_t cfg = {.workers = 1};
  cr_assert_eq(tr_run(&cfg, probe_root, &p), 0);
  cr_assert(p.done);
  cr_assert(p.reused, "a freed envx is handed out again on its worker");
  cr_assert(p.zeroed, "a reused envx is all zero");
  cr_assert(p.burst_ok);
  cr_assert_eq(p.cached, TR_MEM_SMALL_BATCH, "a worker keeps a full magazine");
  cr_assert(p.spare, "and a full spare; the rest went to the depot");
  cr_assert(p.from_depot, "allocations past a worker's magazines come from the depot");
  cr_assert(p.buf_reused, "a small buffer's memory is handed out again on its worker");
  cr_assert(p.big_apart, "a large buffer is plain memory");
}

Test(msgpool, envx_off_a_worker_is_plain_memory, .timeout = 30) {
  /* No runtime: every envx is calloc'd and freed, and still all zero. */
  for (int i = 0; i < 4; i++) {
    tr_msg_t *m = NULL;
    cr_assert_eq(tr_msg_new(&m), 0);
    m->body = TR_BODY_START;
    struct tr_envx *x = tr__envx_get(m);
    cr_assert_not_null(x);
    struct tr_envx copy = *x;
    copy.kind = 0;
    cr_assert_eq(memcmp(&copy, &zero_x, sizeof copy), 0);
    cr_assert_eq(tr__envx_set_start(x, "ns", "func"), 0);
    tr_msg_free(m);
  }
}

Test(msgpool, small_buffers_off_a_worker_are_plain_memory, .timeout = 30) {
  /* No runtime: malloc and free, the bytes as written (ASan checks the
   * sizes). */
  for (size_t n = 0; n < 200; n += 37) {
    tr_buf_t *b = NULL;
    cr_assert_eq(tr_buf_new(n, &b), 0);
    memset(tr_buf_wdata(b), 0x5a, n);
    cr_assert_eq(tr_buf_len(b), n);
    tr_buf_t *r = tr_buf_ref(b);
    tr_buf_release(b);
    cr_assert(n == 0 || ((const unsigned char *)tr_buf_data(r))[n - 1] == 0x5a);
    tr_buf_release(r);
  }
}
