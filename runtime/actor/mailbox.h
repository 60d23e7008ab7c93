/*
 * The actor mailbox: an intrusive multi-producer, single-consumer queue
 * (Vyukov's design, with Pony's "empty" bit on the producer end).
 *
 * Producers link a message with one atomic exchange on `head` and learn
 * whether the queue was empty *and unscheduled* (low bit of the previous
 * head).  Exactly one producer observes that bit per empty period, so only
 * that producer schedules the actor: no double scheduling, no lost wake-up.
 * The consumer (whichever worker runs the actor) pops from `tail`, and as
 * the last step of a turn sets the bit again with a CAS that succeeds only
 * when nothing is queued or being linked.
 *
 * Invariant: `tail` is either the embedded stub or the next message to be
 * returned by pop; so tail != stub means "not empty".
 *
 * Cost: push is one XCHG plus one store; pop is two loads in the common
 * case and an extra internal push of the stub when it takes the last
 * message.
 */
#ifndef TR_ACTOR_MAILBOX_H
#define TR_ACTOR_MAILBOX_H

#include <stddef.h>
#include <stdint.h>

#include <tractor/actor.h>

#include "runtime/platform/atomic.h"

#define TR_MBOX_EMPTY ((uintptr_t)1)

typedef struct tr_mbox {
  tr_msg_t *head; /* producers: last message linked; bit 0 = empty+unscheduled */
  tr_msg_t *tail; /* consumer: next message to pop, or the stub */
  /* Stand-in node: only its link is ever accessed, so it needs no more than
   * the link field (it keeps an idle actor small). */
  struct {
    tr_msg_t *next_;
  } stub;
} tr_mbox_t;

static inline tr_msg_t *tr__mbox_stub(tr_mbox_t *q) { return (tr_msg_t *)(void *)&q->stub; }

/* Starts empty and unscheduled.  Threads: before the mailbox is shared. */
static inline void tr__mbox_init(tr_mbox_t *q) {
  q->stub.next_ = NULL;
  q->tail = tr__mbox_stub(q);
  q->head = (tr_msg_t *)((uintptr_t)tr__mbox_stub(q) | TR_MBOX_EMPTY);
}

/*
 * Links the chain first..last (already linked through next_) at the head.
 * Returns 1 when the mailbox was empty and unscheduled: the caller now
 * owns the right to schedule (or, for an exited actor, to drain) it.
 * Threads: any number of producers concurrently with one consumer.
 */
static inline int tr__mbox_push_chain_mp(tr_mbox_t *q, tr_msg_t *first, tr_msg_t *last) {
  /* Not yet visible to anyone: relaxed is enough. */
  tr_store_relaxed(&last->next_, NULL);
  /* Acquire pairs with the release of tr__mbox_mark_empty_sc's CAS, so the
   * producer that sees the empty bit also sees everything the last consumer
   * did (e.g. the actor's exited flag).  Release orders our message writes
   * before the head for a consumer that compares head in pop. */
  uintptr_t prev = (uintptr_t)tr_xchg_acqrel(&q->head, last);
  tr_msg_t *p = (tr_msg_t *)(prev & ~TR_MBOX_EMPTY);
  /* Release pairs with the acquire load of next_ in tr__mbox_pop_sc: the
   * consumer that sees the link sees the message contents. */
  tr_store_release(&p->next_, first);
  return (prev & TR_MBOX_EMPTY) != 0;
}

static inline int tr__mbox_push_mp(tr_mbox_t *q, tr_msg_t *m) {
  return tr__mbox_push_chain_mp(q, m, m);
}

/*
 * Pops the oldest message, or NULL when the queue is empty or its oldest
 * message is still being linked by a producer (the caller treats both as
 * "nothing now"; tr__mbox_mark_empty_sc tells them apart).
 * Threads: the single consumer.
 */
static inline tr_msg_t *tr__mbox_pop_sc(tr_mbox_t *q) {
  tr_msg_t *stub = tr__mbox_stub(q);
  tr_msg_t *tail = q->tail;
  /* Acquire pairs with the release store of next_ in push. */
  tr_msg_t *next = tr_load_acquire(&tail->next_);
  if (tail == stub) {
    if (next == NULL)
      return NULL;
    q->tail = next;
    tail = next;
    next = tr_load_acquire(&next->next_); /* pairs with push, as above */
  }
  if (next != NULL) {
    q->tail = next;
    return tail;
  }
  /* tail is the newest linked message.  If head moved past it, a producer
   * is between its exchange and its link store: come back later. */
  tr_msg_t *head = (tr_msg_t *)((uintptr_t)tr_load_acquire(&q->head) & ~TR_MBOX_EMPTY);
  if (tail != head)
    return NULL;
  /* Put the stub behind the last message so that message can be detached.
   * The stub is not reachable by producers here (head == tail != stub). */
  (void)tr__mbox_push_chain_mp(q, stub, stub);
  next = tr_load_acquire(&tail->next_); /* pairs with push */
  if (next != NULL) {
    q->tail = next;
    return tail;
  }
  return NULL;
}

/*
 * Marks the mailbox empty and unscheduled if nothing is queued or in
 * flight.  Returns 1 when marked: from then on the next producer schedules
 * the actor.  Returns 0 when a message is present: the consumer keeps the
 * actor scheduled.  Threads: the single consumer, as the last step.
 */
static inline int tr__mbox_mark_empty_sc(tr_mbox_t *q) {
  tr_msg_t *stub = tr__mbox_stub(q);
  if (q->tail != stub)
    return 0;
  /* Acquire pairs with push's release store of the stub's link. */
  if (tr_load_acquire(&q->stub.next_) != NULL)
    return 0;
  tr_msg_t *expect = stub;
  /* Release pairs with the acquire half of the producers' exchange: the
   * producer that finds the bit sees all of this turn's effects. */
  return tr_cas_acqrel(&q->head, &expect, (tr_msg_t *)((uintptr_t)stub | TR_MBOX_EMPTY));
}

#endif
