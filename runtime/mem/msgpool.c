/*
 * Small-object allocation: a magazine allocator (Bonwick's design, as in
 * the Solaris and Linux slab "magazine" layers), for a few classes of
 * fixed size (msgpool.h): messages, envelope extensions, small buffers.
 *
 * These are allocated and freed at very high rates, and usually not on the
 * same worker: a producer allocates, its consumer frees.  glibc's
 * per-thread cache does not help there (the freeing thread's fills, the
 * allocating thread's runs dry, and both go to the arena under its lock:
 * ~17 % of tcp_stream's CPU time before buffers and envxs had magazines).  Each
 * worker keeps, per class, a current magazine of free objects (`pool`) and
 * one full spare.  A worker whose frees fill both hands a full magazine to
 * the class's depot; a worker that runs dry takes one from the depot
 * before falling back to malloc.  So a steady producer/consumer pair costs
 * one depot lock per magazine and no malloc at all.  Every object is one
 * malloc of its class's size, so threads without a cache (not workers) use
 * malloc and free directly, on any object.
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

/* The classes: sizes and magazine sizes, read-only (a hot path reading
 * them must not share a line with anything written). */
static const struct {
  size_t size;
  unsigned batch;     /* objects per magazine */
  unsigned depot_max; /* full magazines kept in the depot */
} classes[TR_MEM__CLASSES] = {
    [TR_MEM_MSG] = {sizeof(tr_msg_t), TR_MSGPOOL_BATCH, TR_DEPOT_MAX},
    /* Smaller magazines and depots: rarer objects, and bounded memory
     * (64 x TR_MEM_SMALL_BATCH x 208 bytes of envxs at most). */
    [TR_MEM_ENVX] = {sizeof(struct tr_envx), TR_MEM_SMALL_BATCH, 64},
    [TR_MEM_BUF] = {TR_BUF_CHUNK, TR_MEM_SMALL_BATCH, 64},
};

/* Each class's depot: full magazines handed from a worker that frees more
 * than it allocates (a consumer) to one that allocates more (a producer),
 * linked through their first object's second word.  A line each.
 * Statically initialised: the depots outlive runs (empty between them). */
static struct depot {
  pthread_mutex_t lock;
  void *head;
  unsigned len;
} __attribute__((aligned(TR_CACHELINE))) depots[TR_MEM__CLASSES] = {
    {PTHREAD_MUTEX_INITIALIZER, NULL, 0},
    {PTHREAD_MUTEX_INITIALIZER, NULL, 0},
    {PTHREAD_MUTEX_INITIALIZER, NULL, 0},
};

#define NEXT(o) (((void **)(o))[0])      /* a free object's successor */
#define NEXT_MAG(o) (((void **)(o))[1])  /* a depot magazine's successor */

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

static void free_chain(void *o) {
  while (o) {
    void *next = NEXT(o);
    free(o);
    o = next;
  }
}

/* Takes a full magazine from class k's depot, or NULL. */
static void *depot_get(int k) {
  struct depot *d = &depots[k];
  pthread_mutex_lock(&d->lock);
  void *mag = d->head;
  if (mag) {
    d->head = NEXT_MAG(mag);
    d->len--;
  }
  pthread_mutex_unlock(&d->lock);
  return mag;
}

/* Gives a full magazine to class k's depot, or frees it when that is full. */
static void depot_put(int k, void *mag) {
  struct depot *d = &depots[k];
  pthread_mutex_lock(&d->lock);
  if (d->len < classes[k].depot_max) {
    NEXT_MAG(mag) = d->head;
    d->head = mag;
    d->len++;
    mag = NULL;
  }
  pthread_mutex_unlock(&d->lock);
  free_chain(mag);
}

/* An object from c's magazines of class k, or NULL when they and the
 * depot are empty. */
static void *mag_get(tr_msgcache_t *c, int k) {
  tr_mag_t *m = &c->mag[k];
  if (TR_UNLIKELY(!m->pool)) {
    if (m->spare) {
      m->pool = m->spare;
      m->spare = NULL;
    } else {
      m->pool = depot_get(k);
    }
    m->pool_len = m->pool ? classes[k].batch : 0;
  }
  void *o = m->pool;
  if (o) {
    m->pool = NEXT(o);
    m->pool_len--;
  }
  return o;
}

static void mag_put(tr_msgcache_t *c, int k, void *o) {
  tr_mag_t *m = &c->mag[k];
  if (TR_UNLIKELY(m->pool_len == classes[k].batch)) {
    /* The current magazine is full: it becomes the spare, and the old
     * spare (also full) goes to the depot for an allocating worker. */
    if (m->spare)
      depot_put(k, m->spare);
    m->spare = m->pool;
    m->pool = NULL;
    m->pool_len = 0;
  }
  NEXT(o) = m->pool;
  m->pool = o;
  m->pool_len++;
}

void *tr__mem_alloc(int k) {
  tr_msgcache_t *c = tr__msgcache_self();
  void *o = c ? mag_get(c, k) : NULL;
  return o ? o : malloc(classes[k].size);
}

void tr__mem_free(int k, void *obj) {
  tr_msgcache_t *c = tr__msgcache_self();
  if (!obj)
    return;
  if (c)
    mag_put(c, k, obj);
  else
    free(obj);
}

int tr_msg_new(tr_msg_t **out) {
  if (!out)
    return TR__EINVAL_NULL();
  tr_msgcache_t *c = tr__msgcache_self();
  tr_msg_t *m = c ? mag_get(c, TR_MEM_MSG) : NULL;
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
  if (TR_UNLIKELY(m->flags_ & TR_MSGF_PTR_REF))
    from_release(m->ptr);
  if (m->x_)
    tr__envx_free(m->x_);
  COUNT(c, msgs_freed, foreign_freed);
  if (c)
    mag_put(c, TR_MEM_MSG, m);
  else
    free(m);
}

/* Envelope extensions: handed out zeroed (tr__envx_get relies on it). */
struct tr_envx *tr__envx_alloc(void) {
  struct tr_envx *x = tr__mem_alloc(TR_MEM_ENVX);
  if (x)
    memset(x, 0, sizeof(*x));
  return x;
}

void tr__envx_release(struct tr_envx *x) { tr__mem_free(TR_MEM_ENVX, x); }

void tr__msgcache_drain(tr_msgcache_t *c) {
  for (int k = 0; k < TR_MEM__CLASSES; k++) {
    free_chain(c->mag[k].pool);
    free_chain(c->mag[k].spare);
    memset(&c->mag[k], 0, sizeof c->mag[k]);
  }
}

void tr__msgpool_depot_drain(void) {
  for (int k = 0; k < TR_MEM__CLASSES; k++) {
    void *mag;
    while ((mag = depot_get(k)))
      free_chain(mag);
  }
}
