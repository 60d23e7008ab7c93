/*
 * The message pool's envelope-extension cache (runtime/mem/msgpool.c): on
 * a worker, a freed envx is handed out again, zeroed, whatever it held;
 * more frees than the cache holds go back to free(); the cache is emptied
 * when the runtime stops (ASan's leak check); off a worker there is no
 * cache.
 */
#include <criterion/criterion.h>

#include <stdlib.h>
#include <string.h>

#include <tractor/actor.h>

#include "runtime/sched/worker.h"
#include "schema/envelope.h"

typedef struct probe {
  int done;
  int reused;      /* the second envx was the first one's memory */
  int zeroed;      /* ... and all zero */
  int burst_ok;    /* 3 caches' worth allocated and freed */
  unsigned cached; /* the worker's cache length after the burst */
} probe_t;

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
  /* Three caches' worth at once: the overflow goes back to free(). */
  tr_msg_t *ms[3 * TR_ENVX_CACHE];
  int ok = 1;
  for (int i = 0; i < 3 * TR_ENVX_CACHE; i++) {
    ms[i] = NULL;
    if (tr_msg_new(&ms[i]) != 0) {
      ok = 0;
      continue;
    }
    ms[i]->body = TR_BODY_START;
    struct tr_envx *x = tr__envx_get(ms[i]);
    ok = ok && x && tr__envx_set_start(x, "n", "f") == 0;
  }
  for (int i = 0; i < 3 * TR_ENVX_CACHE; i++)
    tr_msg_free(ms[i]);
  p->burst_ok = ok;
  p->cached = tr__worker_self()->mem.envx_len;
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

Test(msgpool, envx_reused_zeroed_on_a_worker, .timeout = 30) {
  probe_t p = {0};
  tr_config_t cfg = {.workers = 1};
  cr_assert_eq(tr_run(&cfg, probe_root, &p), 0);
  cr_assert(p.done);
  cr_assert(p.reused, "a freed envx is handed out again on its worker");
  cr_assert(p.zeroed, "a reused envx is all zero");
  cr_assert(p.burst_ok);
  cr_assert_eq(p.cached, TR_ENVX_CACHE, "the cache keeps at most TR_ENVX_CACHE");
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
