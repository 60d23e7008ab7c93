/*
 * tr_to_thread: blocking C code on a separate, bounded pool of threads, so
 * that a task waiting for it never stalls a worker (trio's
 * to_thread.run_sync with abandon_on_cancel).
 *
 * The calling task blocks (cancellably) while a pool thread runs the job.
 * The pool thread then sends the job back to the task's actor as a system
 * message; the actor wakes the task if it is still waiting.  A cancelled
 * caller stops waiting at once and gets -TR_ECANCELED: the thread call is
 * abandoned, not interrupted (C cannot interrupt it), its result is
 * dropped, and the job message still arrives and is freed.  Until it does,
 * the task's record stays allocated and its actor stays alive (a job in
 * flight counts as a reference), so nothing points at freed memory.
 *
 * The pool starts threads on demand, up to TR_TO_THREAD_MAX (the
 * TR_TO_THREAD_MAX environment variable overrides it); further jobs queue.
 * Idle threads wait on a condition variable (no polling) and are joined
 * when the runtime stops.
 */
#include <pthread.h>
#include <stdlib.h>

#include <tractor/task.h>

#include "runtime/actor/actor.h"
#include "runtime/error/error.h"
#include "runtime/sched/worker.h"
#include "runtime/task/task.h"

#define TR_TO_THREAD_MAX 8

typedef struct job {
  struct job *next;
  void *(*fn)(void *);
  void *arg;
  void *result;
  tr_actor_t *actor; /* a reference, released once the message is sent */
  tr_task_t *task;
  uint64_t gen;
} job_t;

static struct {
  pthread_mutex_t lock;
  pthread_cond_t cv;
  job_t *head, *tail;
  int threads, idle, max;
  int queued; /* jobs not taken yet */
  int quit;
  pthread_t tids[64];
} pool = {.lock = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static void *pool_main(void *arg) {
  (void)arg;
  pthread_mutex_lock(&pool.lock);
  for (;;) {
    while (!pool.head && !pool.quit) {
      pool.idle++;
      pthread_cond_wait(&pool.cv, &pool.lock);
      pool.idle--;
    }
    if (!pool.head)
      break; /* quit with an empty queue */
    job_t *j = pool.head;
    pool.queued--;
    pool.head = j->next;
    if (!pool.head)
      pool.tail = NULL;
    pthread_mutex_unlock(&pool.lock);

    j->result = j->fn(j->arg);
    tr_msg_t *m;
    (void)tr__sys_msg(&m, TR_SYS_JOB_DONE, 0, j, 1); /* its task waits */
    tr_actor_t *a = j->actor;
    (void)tr__actor_push(a, m); /* cannot be closed: the job keeps it alive */
    tr_actor_release(a);

    pthread_mutex_lock(&pool.lock);
  }
  pthread_mutex_unlock(&pool.lock);
  return NULL;
}

static int pool_max(void) {
  const char *env = getenv("TR_TO_THREAD_MAX");
  if (env && *env) {
    long v = strtol(env, NULL, 10);
    if (v > 0)
      return v > 64 ? 64 : (int)v;
  }
  return TR_TO_THREAD_MAX;
}

static int pool_submit(job_t *j) {
  pthread_mutex_lock(&pool.lock);
  if (!pool.max)
    pool.max = pool_max();
  j->next = NULL;
  if (pool.tail)
    pool.tail->next = j;
  else
    pool.head = j;
  pool.tail = j;
  pool.queued++;
  int rc = 0;
  /* More jobs waiting than idle threads to take them: one more thread.
   * (An idle thread counts as idle until it wakes, so "no idle thread"
   * would let one woken thread take a burst of jobs one by one.) */
  if (pool.queued > pool.idle && pool.threads < pool.max) {
    if (pthread_create(&pool.tids[pool.threads], NULL, pool_main, NULL) == 0)
      pool.threads++;
    else if (pool.threads == 0)
      rc = -TR_ENOMEM; /* no thread at all would ever run it */
  }
  if (rc) {
    pool.head = pool.tail = NULL; /* it was the only job */
    pool.queued = 0;
  } else {
    pthread_cond_signal(&pool.cv);
  }
  pthread_mutex_unlock(&pool.lock);
  return rc;
}

int tr__to_thread_queued(void *(*fn)(void *), void *arg, void **result, int *queued) {
  *queued = 0;
  tr_task_t *t = tr__task_current();
  if (!fn)
    return TR__EINVAL_NULL();
  if (!t)
    return TR__EPERM_NOTASK();
  if (tr__task_cancelled(t))
    return tr__task_observe_cancel(t, "%s", "");
  job_t *j = calloc(1, sizeof(*j));
  if (!j)
    return TR__ENOMEM();
  j->fn = fn;
  j->arg = arg;
  j->task = t;
  j->gen = t->wait_gen + 1; /* the generation tr__task_block starts */
  j->actor = tr_actor_dup(t->actor);
  t->refs++;
  t->timer_fired = 0;
  int rc = pool_submit(j);
  if (rc) {
    t->refs--;
    tr_actor_release(j->actor);
    free(j);
    return TR_ERROR(rc, "tr_to_thread: no pool thread could be started");
  }
  *queued = 1; /* from here on a pool thread runs fn(arg), waited for or not */
  t->blocked_on = "tr_to_thread";
  tr__task_block(t, 1);
  if (t->timer_fired) {
    if (result)
      *result = t->job_result;
    return 0;
  }
  tr__scope_chain_saw_cancel(t->scope);
  return TR_ERROR(-TR_ECANCELED, "tr_to_thread: cancelled; the wait was abandoned and the "
                                 "thread call is still running (its result will be dropped)");
}

int tr_to_thread(void *(*fn)(void *), void *arg, void **result) {
  int queued;
  return tr__to_thread_queued(fn, arg, result, &queued);
}

void tr__to_thread_done(tr_worker_t *w, struct tr_actor *a, tr_msg_t *m) {
  (void)a;
  job_t *j = m->ptr;
  tr_task_t *t = j->task;
  if (t->state == TR_TASK_BLOCKED && t->wait_gen == j->gen)
    t->job_result = j->result;
  tr__task_wake_if(t, j->gen);
  tr__task_unref(t);
  free(j);
  tr__msg_dispose(w, m);
}

void tr__to_thread_shutdown(void) {
  pthread_mutex_lock(&pool.lock);
  pool.quit = 1;
  pthread_cond_broadcast(&pool.cv);
  int n = pool.threads;
  pthread_mutex_unlock(&pool.lock);
  for (int i = 0; i < n; i++)
    pthread_join(pool.tids[i], NULL);
  pthread_mutex_lock(&pool.lock);
  pool.threads = 0;
  pool.idle = 0;
  pool.queued = 0;
  pool.quit = 0;
  pthread_mutex_unlock(&pool.lock);
}
