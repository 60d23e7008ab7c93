/*
 * Waiting for actors to end: tr_join, and tr_run's (and tr_main's) final
 * wait, which prints the hang report once it has lasted too long.
 *
 * Exiting actors broadcast on one condition variable (tr__rt_broadcast)
 * when somebody may be waiting for them: a counted joiner, or the last
 * live actor.  The hang report itself is runtime/hang.c's, above this
 * layer: it is reached through the hook hang.c registers
 * (tr__actor_set_hang_ops).
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <time.h>

#include <tractor/actor.h>
#include <tractor/time.h>

#include "runtime/actor/actor.h"
#include "runtime/error/error.h"
#include "runtime/sched/worker.h"

void tr__rt_broadcast(void) {
  pthread_mutex_lock(&tr__actors.wait_lock);
  pthread_cond_broadcast(&tr__actors.wait_cv);
  pthread_mutex_unlock(&tr__actors.wait_lock);
}

void tr__rt_root_returned(void) {
  int64_t none = 0;
  /* Release pairs with the acquire in hang_due; the CAS keeps the first
   * call's time (tr_main's root task comes before tr_run's own call). */
  if (tr_cas_acqrel(&tr__actors.root_done, &none, tr_now()))
    tr__rt_broadcast(); /* a waiter in tr__rt_wait_end recomputes its deadline */
}

/* When the hang report is due on tr_now's clock, or INT64_MAX when it is
 * not (the root has not returned, the report is off or already printed).
 * Called with wait_lock held. */
static int64_t hang_due(void) {
  int64_t done = tr_load_acquire(&tr__actors.root_done);
  if (done == 0 || tr__actors.hang_ns < 0 || tr__actors.hang_reported)
    return INT64_MAX;
  return tr__actors.hang_ns > INT64_MAX - done ? INT64_MAX : done + tr__actors.hang_ns;
}

void tr__rt_wait_end(tr_actor_t *a) {
  /* As in tr_join: a counted joiner makes the exiting actor broadcast
   * (seq_cst, Dekker with actor_finish_exit's TR_AF_DONE then joiners). */
  if (a)
    tr_faa_seqcst(&a->joiners, 1);
  pthread_mutex_lock(&tr__actors.wait_lock);
  for (;;) {
    if (a ? (tr_load_seqcst(&a->flags) & TR_AF_DONE) != 0 : tr_load_acquire(&tr__actors.live) == 0)
      break;
    int64_t due = hang_due();
    if (due == INT64_MAX) {
      pthread_cond_wait(&tr__actors.wait_cv, &tr__actors.wait_lock);
      continue;
    }
    int64_t now = tr_now();
    if (now >= due) {
      /* Only this thread prints, and only once.  The report waits on the
       * same condition variable for the actors' answers: unlock. */
      tr__actors.hang_reported = 1;
      pthread_mutex_unlock(&tr__actors.wait_lock);
      tr__actor_hang_report(now - tr_load_acquire(&tr__actors.root_done));
      pthread_mutex_lock(&tr__actors.wait_lock);
      continue;
    }
    struct timespec ts = {.tv_sec = due / 1000000000LL, .tv_nsec = due % 1000000000LL};
    (void)pthread_cond_timedwait(&tr__actors.wait_cv, &tr__actors.wait_lock, &ts);
  }
  pthread_mutex_unlock(&tr__actors.wait_lock);
  if (a)
    tr_faa_seqcst(&a->joiners, (uint32_t)-1);
}

int tr_join(tr_actor_t *a, int64_t timeout_ns) {
  if (!a)
    return TR__EINVAL_NULL();
  if (tr__worker_self())
    return TR_ERROR(-TR_EPERM, "tr_join would block a runtime worker: call it from another "
                               "thread (in a task, wait with a nursery or a portal instead)");
  struct timespec dl;
  if (timeout_ns >= 0) {
    clock_gettime(CLOCK_MONOTONIC, &dl);
    dl.tv_sec += timeout_ns / 1000000000;
    dl.tv_nsec += timeout_ns % 1000000000;
    if (dl.tv_nsec >= 1000000000) {
      dl.tv_nsec -= 1000000000;
      dl.tv_sec++;
    }
  }
  tr_faa_seqcst(&a->joiners, 1);
  int rc = 0;
  pthread_mutex_lock(&tr__actors.wait_lock);
  while (!(tr_load_seqcst(&a->flags) & TR_AF_DONE)) {
    if (timeout_ns < 0) {
      pthread_cond_wait(&tr__actors.wait_cv, &tr__actors.wait_lock);
    } else if (pthread_cond_timedwait(&tr__actors.wait_cv, &tr__actors.wait_lock, &dl) ==
               ETIMEDOUT) {
      if (!(tr_load_seqcst(&a->flags) & TR_AF_DONE))
        rc = -TR_ETIMEDOUT;
      break;
    }
  }
  pthread_mutex_unlock(&tr__actors.wait_lock);
  tr_faa_seqcst(&a->joiners, (uint32_t)-1);
  return rc ? TR_ERROR(rc, "tr_join: actor %s still running after %lld ns", tr_actor_name(a),
                       (long long)timeout_ns)
            : 0;
}
