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
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <tractor/actor.h>

#include "runtime/error/error.h"
#include "runtime/mem/msgpool.h"
#include "runtime/platform/atomic.h"
#include "schema/envelope.h"

static __thread tr_msgcache_t *tls_cache;

/* The depot: a worker that frees more messages than it allocates (a
 * consumer) hands whole magazines to one that allocates more (a producer).
 * One lock per TR_MSGPOOL_BATCH messages.  Magazines are linked through
 * their first message's ptr.  Statically initialised: the depot outlives
 * runs (it is empty between them). */
static pthread_mutex_t depot_lock = PTHREAD_MUTEX_INITIALIZER;
static tr_msg_t *depot;
static unsigned depot_len;

/* Drops a message's sender reference (tr__msgpool_set_release). */
static void (*from_release)(tr_actor_t *a);

void tr__msgpool_set_release(void (*release)(tr_actor_t *a)) {
  if (from_release != release)
    from_release = release;
}

/* Messages made and freed by threads without a cache (atomic adds). */
static uint64_t foreign_new, foreign_freed;

void tr__msgcache_attach(tr_msgcache_t *c) { tls_cache = c; }

__attribute__((noinline)) tr_msgcache_t *tr__msgcache_self(void) { return tls_cache; }

void tr__msgpool_foreign_counts(uint64_t *made, uint64_t *freed) {
  *made = tr_load_relaxed(&foreign_new);
  *freed = tr_load_relaxed(&foreign_freed);
}

void tr__msgpool_reset_counts(void) {
  tr_store_relaxed(&foreign_new, 0);
  tr_store_relaxed(&foreign_freed, 0);
}

/* Counts per cache when there is one, else atomically shared. */
#define COUNT(c, field, foreign)                                                                   \
  do {                                                                                             \
    if (c)                                                                                         \
      tr_counter_add(&(c)->field, 1);                                                              \
    else                                                                                           \
      tr_faa_relaxed(&(foreign), 1);                                                               \
  } while (0)

static void free_chain(tr_msg_t *m) {
  while (m) {
    tr_msg_t *next = m->next_;
    free(m);
    m = next;
  }
}

/* Takes a full magazine from the depot, or NULL. */
static tr_msg_t *depot_get(void) {
  pthread_mutex_lock(&depot_lock);
  tr_msg_t *mag = depot;
  if (mag) {
    depot = mag->ptr;
    depot_len--;
  }
  pthread_mutex_unlock(&depot_lock);
  return mag;
}

/* Gives a full magazine to the depot, or frees it when the depot is full. */
static void depot_put(tr_msg_t *mag) {
  pthread_mutex_lock(&depot_lock);
  if (depot_len < TR_DEPOT_MAX) {
    mag->ptr = depot;
    depot = mag;
    depot_len++;
    mag = NULL;
  }
  pthread_mutex_unlock(&depot_lock);
  free_chain(mag);
}

int tr_msg_new(tr_msg_t **out) {
  if (!out)
    return TR__EINVAL_NULL();
  tr_msgcache_t *c = tr__msgcache_self();
  tr_msg_t *m = NULL;
  if (c) {
    if (TR_UNLIKELY(!c->pool)) {
      if (c->spare) {
        c->pool = c->spare;
        c->spare = NULL;
      } else {
        c->pool = depot_get();
      }
      c->pool_len = c->pool ? TR_MSGPOOL_BATCH : 0;
    }
    if ((m = c->pool)) {
      c->pool = m->next_;
      c->pool_len--;
    }
  }
  if (!m && !(m = malloc(sizeof(*m)))) {
    *out = NULL;
    return TR__ENOMEM();
  }
  memset(m, 0, sizeof(*m));
  COUNT(c, msgs_new, foreign_new);
  *out = m;
  return 0;
}

void tr__msgcache_put(tr_msgcache_t *c, tr_msg_t *m) {
  if (m->payload)
    tr_buf_release(m->payload);
  if (m->from)
    from_release(m->from);
  if (m->x_)
    tr__envx_free(m->x_);
  COUNT(c, msgs_freed, foreign_freed);
  if (!c) {
    free(m);
    return;
  }
  if (TR_UNLIKELY(c->pool_len == TR_MSGPOOL_BATCH)) {
    /* The current magazine is full: it becomes the spare, and the old
     * spare (also full) goes to the depot for an allocating worker. */
    if (c->spare)
      depot_put(c->spare);
    c->spare = c->pool;
    c->pool = NULL;
    c->pool_len = 0;
  }
  m->next_ = c->pool;
  c->pool = m;
  c->pool_len++;
}

/* Envelope extensions: a LIFO stack of up to TR_ENVX_CACHE per worker.
 * A Start allocates one on the caller's worker and the callee frees it,
 * usually on the same worker (the next slot keeps a request/reply pair on
 * one core); when they are on different workers one cache runs dry and the
 * other overflows, and the cost is calloc and free, as without the cache.
 * Unlike messages, envxs do not go through the depot: they are rarer and
 * the pair above needs none. */
struct tr_envx *tr__envx_alloc(void) {
  tr_msgcache_t *c = tr__msgcache_self();
  if (c && c->envx_len) {
    struct tr_envx *x = c->envx[--c->envx_len];
    memset(x, 0, sizeof(*x));
    return x;
  }
  return calloc(1, sizeof(struct tr_envx));
}

void tr__envx_release(struct tr_envx *x) {
  tr_msgcache_t *c = tr__msgcache_self();
  if (c && c->envx_len < TR_ENVX_CACHE) {
    c->envx[c->envx_len++] = x;
    return;
  }
  free(x);
}

void tr__msgcache_drain(tr_msgcache_t *c) {
  free_chain(c->pool);
  free_chain(c->spare);
  c->pool = c->spare = NULL;
  c->pool_len = 0;
  while (c->envx_len)
    free(c->envx[--c->envx_len]);
}

void tr__msgpool_depot_drain(void) {
  tr_msg_t *mag;
  while ((mag = depot_get()))
    free_chain(mag);
}
