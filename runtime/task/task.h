/*
 * Internal view of tasks (runtime/task/task.c).  An actor with tasks has a
 * tr_tasks_t hung off it; a behaviour-only actor has none and stays small.
 */
#ifndef TR_TASK_TASK_H
#define TR_TASK_TASK_H

#include <stdint.h>

#include <tractor/task.h>

#include "runtime/fiber/fiber.h"

struct tr_actor;
struct tr_worker;
struct tr_error;
struct tr_nursery;

/* System message tags (tr_msg_t.tag with flags_ & TR_MSGF_SYS); tag 0 is
 * the shutdown wake-up handled by the scheduler itself. */
enum {
  TR_SYS_WAKE = 1,     /* ptr = task, u64 = wait generation (timer fired) */
  TR_SYS_DEADLINE,     /* u64 = scope id: its deadline passed */
  TR_SYS_CANCEL_SCOPE, /* u64 = scope id: tr_scope_cancel from outside */
  TR_SYS_RUN,          /* ready tasks are left: run them in a new turn */
  TR_SYS_JOB_DONE,     /* ptr = tr_to_thread job that finished */
};

enum { TR_TASK_READY = 1, TR_TASK_RUNNING, TR_TASK_BLOCKED, TR_TASK_DONE };

typedef struct tr_task {
  tr_fiber_t fiber;
  struct tr_actor *actor;
  struct tr_task *ready_next;
  struct tr_task *prev, *next; /* the actor's live tasks */
  tr_scope_t *scope;           /* innermost open scope (chain via parent_) */
  struct tr_nursery *nursery;  /* NULL for the main task */
  tr_task_fn fn;
  void *arg;
  int result;
  uint32_t state;
  uint32_t refs;      /* in-flight wake messages that point at this task */
  uint64_t wait_gen;  /* bumped at each block: stale wakes are ignored */
  uint64_t cancel_seen; /* blocking calls that returned -TR_ECANCELED */
  uint8_t cancellable;  /* the current block ends on cancellation */
  uint8_t timer_fired;  /* the current sleep's timer delivered */
  uint8_t has_stack;    /* the fiber has been given its stack */
  void *job_result;     /* tr_to_thread: the finished job's result */
  size_t stack_size;    /* requested; 0 = default */
  struct tr_error *error; /* this task's tr_error_last */
  const char *name;
  char label[64];
} tr_task_t;

typedef struct tr_tasks {
  tr_task_t *ready_head, *ready_tail;
  tr_task_t *all;
  uint64_t live;      /* tasks not yet done */
  uint64_t zombies;   /* done tasks kept for in-flight references */
  uint64_t next_id;   /* scope ids */
  tr_task_t *main;
  int main_result;
  uint8_t main_done;
  uint8_t stopping;   /* runtime shutdown: an outermost scope, cancelled */
  uint8_t run_posted; /* a TR_SYS_RUN is in the mailbox */
  /* tr_recv: application messages not yet taken, and waiting tasks. */
  tr_msg_t *inbox_head, *inbox_tail;
  tr_task_t *recv_head, *recv_tail; /* linked through ready_next */
} tr_tasks_t;

/* Handles one message for a task actor (system or application).  Takes
 * ownership of m.  Threads: the actor's worker, during its turn. */
void tr__tasks_dispatch(struct tr_worker *w, struct tr_actor *a, tr_msg_t *m);

/* Runs the actor's ready tasks.  Returns 1 when the actor has no task left
 * (it should exit), else 0.  Threads: the actor's worker. */
int tr__tasks_run(struct tr_worker *w, struct tr_actor *a);

/* Runtime shutdown reached a task actor: cancel everything in it. */
void tr__tasks_stop(struct tr_actor *a);

/* Frees what is left of an exited task actor's task state. */
void tr__tasks_free(tr_tasks_t *ts);

/* tr_to_thread's pool (to_thread.c): job completion on the actor's side,
 * and shutdown (joins the pool's threads; called by tr_run at the end). */
void tr__to_thread_done(struct tr_worker *w, struct tr_actor *a, tr_msg_t *m);
void tr__to_thread_shutdown(void);

/* For to_thread.c: the running task, blocking, and reference release. */
tr_task_t *tr__task_current(void);
void tr__task_block(tr_task_t *t, int cancellable);
void tr__task_wake_if(tr_task_t *t, uint64_t gen);
void tr__task_unref(tr_task_t *t);
int tr__task_cancelled(tr_task_t *t);

/* Routes tr_error_last to the running task (installed at runtime start). */
void tr__tasks_install_error_hook(void);

#endif
