/*
 * A deliberate misuse of a run queue, built and run in the TSan build only
 * (ctest tsan_runq_misuse): it shows that tools/tsan.supp, which hides
 * Concurrency Kit's own unmodelled accesses, still lets TSan report our
 * code misusing a ck_ring.
 *
 * The owner thread pushes an actor.  The main thread waits until
 * tr__runq_size sees it (a racy hint, with no ordering) and then reads the
 * head slot of the ring directly instead of dequeuing it.  Nothing orders
 * that read after the producer's slot write: a real race (on a weakly
 * ordered CPU the slot may still be stale).  ctest passes only when TSan
 * reports a data race whose first stack is peek_head; the size loads on the
 * way are Concurrency Kit's and stay suppressed.  The old suppression
 * "race:ck_ring_" (any frame) hid this report, because the producer's stack
 * goes through ck_ring_enqueue_spmc; ctest tsan_runq_misuse_old_supp runs
 * the program with that line and expects silence.
 *
 * Not a Criterion test: the expected outcome is a sanitizer report, which
 * ends the process (halt_on_error=1).
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>

#include "runtime/sched/runq.h"

static char actor_storage; /* a real address: runq.h annotates it for TSan */

static void *owner(void *arg) {
  tr_runq_t *q = arg;
  if (!tr__runq_push_sp(q, (struct tr_actor *)(void *)&actor_storage))
    fprintf(stderr, "tsan_runq_misuse: push failed\n");
  return NULL;
}

/* The misuse: reads the slot at the consumer index without dequeuing, so
 * without the acquire the ring's dequeue provides. */
__attribute__((noinline)) static void *peek_head(tr_runq_t *q) {
  return q->buf[q->ring.c_head & q->ring.mask].value;
}

int main(void) {
  tr_runq_t q;
  if (tr__runq_init(&q, 8) != 0)
    return 2;
  pthread_t t;
  if (pthread_create(&t, NULL, owner, &q) != 0)
    return 2;
  while (tr__runq_size(&q) == 0)
    tr_cpu_relax();
  void *seen = peek_head(&q);
  pthread_join(t, NULL);
  tr__runq_fini(&q);
  /* Only reached when TSan stayed silent: ctest then fails on the output. */
  printf("tsan_runq_misuse: no report (peeked %p)\n", seen);
  return 0;
}
