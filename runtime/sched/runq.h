/*
 * A worker's local run queue: a bounded Concurrency Kit ck_ring in SPMC
 * mode.  The owning worker is the single producer; the owner and thieves
 * are the consumers.  FIFO for everyone: an actor that used up its batch
 * goes to the back, behind the actors that were waiting.
 *
 * ck_ring's own accesses are hidden from ThreadSanitizer (see
 * platform/atomic.h), so in TSan builds we annotate the happens-before edge
 * the ring provides: everything the producer did before enqueueing an actor
 * is visible to the consumer that dequeues it.  tools/tsan.supp suppresses
 * only reports whose top frame is one of Concurrency Kit's index accesses
 * or a consumer's slot copy, so our own code touching the ring outside
 * these functions is still reported (tests/sched/tsan_runq_misuse.c).
 */
#ifndef TR_SCHED_RUNQ_H
#define TR_SCHED_RUNQ_H

#include <ck_ring.h>
#include <stdbool.h>

#include "runtime/platform/atomic.h"

struct tr_actor;

typedef struct tr_runq {
  ck_ring_t ring;
  ck_ring_buffer_t *buf;
} tr_runq_t;

/* capacity must be a power of two; the ring holds capacity - 1 entries.
 * Returns 0 or -1 (out of memory). */
int tr__runq_init(tr_runq_t *q, unsigned capacity);
void tr__runq_fini(tr_runq_t *q);

/* Appends a; false when full (the caller overflows to the inject queue).
 * Threads: the owning worker only. */
static inline bool tr__runq_push_sp(tr_runq_t *q, struct tr_actor *a) {
  TR_TSAN_RELEASE(a);
  return ck_ring_enqueue_spmc(&q->ring, q->buf, a);
}

/* Takes the oldest actor, retrying under contention; NULL when empty.
 * Threads: the owner. */
static inline struct tr_actor *tr__runq_pop_mc(tr_runq_t *q) {
  struct tr_actor *a;
  if (!ck_ring_dequeue_spmc(&q->ring, q->buf, &a))
    return NULL;
  TR_TSAN_ACQUIRE(a);
  return a;
}

/* One attempt to take the oldest actor; NULL when empty or contended.
 * Threads: any worker (thieves). */
static inline struct tr_actor *tr__runq_steal_mc(tr_runq_t *q) {
  struct tr_actor *a;
  if (!ck_ring_trydequeue_spmc(&q->ring, q->buf, &a))
    return NULL;
  TR_TSAN_ACQUIRE(a);
  return a;
}

/* Approximate number of queued actors (racy snapshot, for heuristics). */
static inline unsigned tr__runq_size(const tr_runq_t *q) { return ck_ring_size(&q->ring); }

#endif
