/*
 * Message allocation: a magazine allocator (Bonwick's design, as in the
 * Solaris and Linux slab "magazine" layers).
 *
 * Messages are 64-byte objects allocated and freed at very high rates, and
 * usually not on the same worker: a producer allocates, its consumer frees.
 * Each worker keeps a current magazine of free messages (`pool`) and one
 * full spare.  A worker whose frees fill both hands a full magazine to the
 * process-wide depot; a worker that runs dry takes one from the depot
 * before falling back to malloc.  So a steady producer/consumer pair costs
 * one depot lock per TR_MSGPOOL_BATCH messages and no malloc at all.
 * Non-worker threads use malloc and free directly.
 */
#include <stdlib.h>
#include <string.h>

#include <tractor/actor.h>

#include "runtime/error/error.h"
#include "runtime/runtime.h"
#include "schema/envelope.h"

static void free_chain(tr_msg_t *m) {
  while (m) {
    tr_msg_t *next = m->next_;
    free(m);
    m = next;
  }
}

/* Takes a full magazine from the depot, or NULL. */
static tr_msg_t *depot_get(void) {
  pthread_mutex_lock(&tr__rt.depot_lock);
  tr_msg_t *mag = tr__rt.depot;
  if (mag) {
    tr__rt.depot = mag->ptr;
    tr__rt.depot_len--;
  }
  pthread_mutex_unlock(&tr__rt.depot_lock);
  return mag;
}

/* Gives a full magazine to the depot, or frees it when the depot is full. */
static void depot_put(tr_msg_t *mag) {
  pthread_mutex_lock(&tr__rt.depot_lock);
  if (tr__rt.depot_len < TR_DEPOT_MAX) {
    mag->ptr = tr__rt.depot;
    tr__rt.depot = mag;
    tr__rt.depot_len++;
    mag = NULL;
  }
  pthread_mutex_unlock(&tr__rt.depot_lock);
  free_chain(mag);
}

int tr_msg_new(tr_msg_t **out) {
  if (!out)
    return TR__EINVAL_NULL();
  tr_worker_t *w = tr__worker_self();
  tr_msg_t *m = NULL;
  if (w) {
    if (TR_UNLIKELY(!w->pool)) {
      if (w->spare) {
        w->pool = w->spare;
        w->spare = NULL;
      } else {
        w->pool = depot_get();
      }
      w->pool_len = w->pool ? TR_MSGPOOL_BATCH : 0;
    }
    if ((m = w->pool)) {
      w->pool = m->next_;
      w->pool_len--;
    }
  }
  if (!m && !(m = malloc(sizeof(*m)))) {
    *out = NULL;
    return TR__ENOMEM();
  }
  memset(m, 0, sizeof(*m));
  TR_COUNT(w, msgs_new, 1);
  *out = m;
  return 0;
}

void tr__msg_dispose(tr_worker_t *w, tr_msg_t *m) {
  if (m->payload)
    tr_buf_release(m->payload);
  if (m->from)
    tr_actor_release(m->from);
  if (m->x_)
    tr__envx_free(m->x_);
  TR_COUNT(w, msgs_freed, 1);
  if (!w) {
    free(m);
    return;
  }
  if (TR_UNLIKELY(w->pool_len == TR_MSGPOOL_BATCH)) {
    /* The current magazine is full: it becomes the spare, and the old
     * spare (also full) goes to the depot for an allocating worker. */
    if (w->spare)
      depot_put(w->spare);
    w->spare = w->pool;
    w->pool = NULL;
    w->pool_len = 0;
  }
  m->next_ = w->pool;
  w->pool = m;
  w->pool_len++;
}

/* Envelope extensions: a LIFO stack of up to TR_ENVX_CACHE per worker.
 * A Start allocates one on the caller's worker and the callee frees it,
 * usually on the same worker (the next slot keeps a request/reply pair on
 * one core); when they are on different workers one cache runs dry and the
 * other overflows, and the cost is calloc and free, as without the cache.
 * Unlike messages, envxs do not go through the depot: they are rarer and
 * the pair above needs none. */
struct tr_envx *tr__envx_alloc(void) {
  tr_worker_t *w = tr__worker_self();
  if (w && w->envx_len) {
    struct tr_envx *x = w->envx[--w->envx_len];
    memset(x, 0, sizeof(*x));
    return x;
  }
  return calloc(1, sizeof(struct tr_envx));
}

void tr__envx_release(struct tr_envx *x) {
  tr_worker_t *w = tr__worker_self();
  if (w && w->envx_len < TR_ENVX_CACHE) {
    w->envx[w->envx_len++] = x;
    return;
  }
  free(x);
}

void tr_msg_free(tr_msg_t *m) {
  if (!m)
    return;
  tr_worker_t *w = tr__worker_self();
  if (w && w->cur_msg == m)
    w->cur_msg = NULL; /* the behaviour disposed of its message itself */
  tr__msg_dispose(w, m);
}

void tr_msg_take(tr_msg_t *m) {
  tr_worker_t *w = tr__worker_self();
  if (w && m && w->cur_msg == m)
    w->cur_msg = NULL;
}

void tr__msgpool_drain(tr_worker_t *w) {
  free_chain(w->pool);
  free_chain(w->spare);
  w->pool = w->spare = NULL;
  w->pool_len = 0;
  while (w->envx_len)
    free(w->envx[--w->envx_len]);
}

void tr__msgpool_depot_drain(void) {
  tr_msg_t *mag;
  while ((mag = depot_get()))
    free_chain(mag);
}
