/*
 * Small-object memory (msgpool.c): each worker's magazines of free
 * objects of a few fixed sizes (messages, envelope extensions, small
 * buffers) and a process-wide depot of full magazines per size.  The mem
 * layer knows nothing of workers: the scheduler embeds a tr_msgcache_t in
 * each of its workers and attaches it to the worker's thread, and this
 * layer finds it through its own thread-local pointer.
 */
#ifndef TR_MEM_MSGPOOL_H
#define TR_MEM_MSGPOOL_H

#include <stdint.h>

#include <tractor/actor.h>

#define TR_MSGPOOL_BATCH 1024 /* messages per magazine */
#define TR_DEPOT_MAX 256      /* full magazines of messages kept process-wide */
#define TR_BUF_CHUNK 128      /* a small buffer's allocation */
#define TR_MEM_SMALL_BATCH 128 /* envxs or small buffers per magazine */

/* The object classes.  Each object of a class is one malloc of the class's
 * size, so any thread may hand one to free() instead of a cache. */
enum {
  TR_MEM_MSG,  /* tr_msg_t */
  TR_MEM_ENVX, /* struct tr_envx: every Start and Cancel, and a frame that
                * names an actor by name, carries one (208 bytes) */
  TR_MEM_BUF,  /* a tr_buf_t that fits TR_BUF_CHUNK bytes, header included
                * (buf.c): payloads of 8-byte values and 64-byte items */
  TR_MEM__CLASSES
};

struct tr_envx;

/* One class's objects in one thread: a magazine being used and one full
 * spare (objects linked through their first word). */
typedef struct tr_mag {
  void *pool;
  unsigned pool_len;
  void *spare;
} tr_mag_t;

/* One thread's small-object memory.  Touched by its owner only, except
 * the two counters, which tr_stats reads (single writer, relaxed atomics). */
typedef struct tr_msgcache {
  tr_mag_t mag[TR_MEM__CLASSES];
  uint64_t msgs_new;
  uint64_t msgs_freed;
} tr_msgcache_t;

/* An object of class k (TR_MEM_*): from this thread's cache, the depot or
 * malloc; NULL when out of memory.  Contents undefined.  Freed with
 * tr__mem_free (or free()).  Threads: any. */
void *tr__mem_alloc(int k);
/* Gives back obj (of class k, from tr__mem_alloc; may be NULL) to this
 * thread's cache, or to free() off a worker.  Threads: any. */
void tr__mem_free(int k, void *obj);

/* Makes c this thread's message cache (NULL: none, messages go to malloc
 * and free).  A worker thread attaches its own at start and detaches it
 * at exit.  Ownership: c stays the caller's.  Threads: the calling one. */
void tr__msgcache_attach(tr_msgcache_t *c);

/* This thread's message cache, or NULL.  Not inlinable on purpose, as
 * tr__worker_self: a task may resume on another worker after any blocking
 * call, so the thread-local must be read again at each use.
 * Threads: any. */
tr_msgcache_t *tr__msgcache_self(void);

/* tr_msg_t.flags_ bit (the others: runtime/actor/actor.h): ptr holds an
 * actor reference, dropped with the message as its sender reference is.  A
 * channel's proxy hands a protocol message to its channel so, naming the
 * receiver without an envx (transport/channel.c, proxy_send). */
#define TR_MSGF_PTR_REF 0x2u

/* Frees message m (its payload, sender reference, TR_MSGF_PTR_REF
 * reference and extension) into c,
 * or with c == NULL to the C heap.  Does not count a dead letter.
 * Ownership: takes m.  Threads: c's owner. */
void tr__msgcache_put(tr_msgcache_t *c, tr_msg_t *m);

/* Frees c's magazines (after its thread has stopped), and the depot's
 * magazines (after every worker has stopped).  Threads: tr_run's. */
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
