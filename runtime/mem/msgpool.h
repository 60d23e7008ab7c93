/*
 * Message memory (msgpool.c): each worker's magazines of free messages and
 * its cache of envelope extensions, and the process-wide depot of full
 * magazines.  The mem layer knows nothing of workers: the scheduler embeds
 * a tr_msgcache_t in each of its workers and attaches it to the worker's
 * thread, and this layer finds it through its own thread-local pointer.
 */
#ifndef TR_MEM_MSGPOOL_H
#define TR_MEM_MSGPOOL_H

#include <stdint.h>

#include <tractor/actor.h>

#define TR_MSGPOOL_BATCH 1024 /* messages per magazine */
#define TR_DEPOT_MAX 256      /* full magazines kept process-wide */
#define TR_ENVX_CACHE 32      /* free envelope extensions kept per worker */

struct tr_envx;

/* One thread's message memory.  Touched by its owner only, except the two
 * counters, which tr_stats reads (single writer, relaxed atomics). */
typedef struct tr_msgcache {
  /* A magazine of free messages being used and one full spare. */
  tr_msg_t *pool;
  unsigned pool_len;
  tr_msg_t *spare;
  /* Free envelope extensions (tr__envx_alloc): every Start and Cancel
   * carries one (208 bytes), which otherwise cost a calloc and a free per
   * call. */
  struct tr_envx *envx[TR_ENVX_CACHE];
  unsigned envx_len;
  uint64_t msgs_new;
  uint64_t msgs_freed;
} tr_msgcache_t;

/* Makes c this thread's message cache (NULL: none, messages go to malloc
 * and free).  A worker thread attaches its own at start and detaches it
 * at exit.  Ownership: c stays the caller's.  Threads: the calling one. */
void tr__msgcache_attach(tr_msgcache_t *c);

/* This thread's message cache, or NULL.  Not inlinable on purpose, as
 * tr__worker_self: a task may resume on another worker after any blocking
 * call, so the thread-local must be read again at each use.
 * Threads: any. */
tr_msgcache_t *tr__msgcache_self(void);

/* Frees message m (its payload, sender reference and extension) into c,
 * or with c == NULL to the C heap.  Does not count a dead letter.
 * Ownership: takes m.  Threads: c's owner. */
void tr__msgcache_put(tr_msgcache_t *c, tr_msg_t *m);

/* Frees c's magazines and extensions (after its thread has stopped), and
 * the depot's magazines (after every worker has stopped).
 * Threads: tr_run's. */
void tr__msgcache_drain(tr_msgcache_t *c);
void tr__msgpool_depot_drain(void);

/* A message's sender reference (tr_msg_t.from) belongs to the actor layer,
 * above this one: freeing a message drops it through this hook, which the
 * actor layer registers at start-up (tr__actor_init).  Only an actor can
 * be a sender, so no message holds one before that.  Registering the same
 * hook again writes nothing.  Threads: tr_run's. */
void tr__msgpool_set_release(void (*release)(tr_actor_t *a));

/* Messages made and freed by threads without a cache (for tr_stats), and
 * their reset to zero at the start of a run.  Threads: any / tr_run's. */
void tr__msgpool_foreign_counts(uint64_t *made, uint64_t *freed);
void tr__msgpool_reset_counts(void);

#endif
