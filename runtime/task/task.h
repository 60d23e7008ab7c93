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
struct tr_start;

/* System message tags (tr_msg_t.tag with flags_ & TR_MSGF_SYS); tag 0 is
 * the shutdown wake-up handled by the scheduler itself. */
enum {
  TR_SYS_WAKE = 1,     /* ptr = task, u64 = wait generation (timer fired) */
  TR_SYS_DEADLINE,     /* u64 = scope id: its deadline passed */
  TR_SYS_CANCEL_SCOPE, /* u64 = scope id: tr_scope_cancel from outside */
  TR_SYS_RUN,          /* ready tasks are left: run them in a new turn */
  TR_SYS_JOB_DONE,     /* ptr = tr_to_thread job that finished */
  TR_SYS_CANCEL_ACTOR, /* cancel every task of the actor (u64 = 1: force,
                          shields included) */
};

enum { TR_TASK_READY = 1, TR_TASK_RUNNING, TR_TASK_BLOCKED, TR_TASK_DONE };

typedef struct tr_task {
  tr_fiber_t fiber;
  struct tr_actor *actor;
  struct tr_task *ready_next;
  struct tr_task *recv_next;   /* the actor's tasks waiting in tr_recv */
  struct tr_task *prev, *next; /* the actor's live tasks */
  tr_scope_t *scope;           /* innermost open scope (chain via parent_) */
  struct tr_nursery *nursery;  /* NULL for the main task and a pending start */
  struct tr_start *start;      /* tr_nursery_start waiting for this task */
  tr_task_fn fn;
  void *arg;
  int result;
  uint32_t state;
  uint32_t refs;          /* in-flight wake messages that point at this task */
  uint64_t wait_gen;      /* bumped at each block: stale wakes are ignored */
  uint8_t cancellable;    /* the current block ends on cancellation */
  uint8_t timer_fired;    /* the current sleep's timer delivered */
  uint8_t has_stack;      /* the fiber has been given its stack */
  uint8_t needs_reset;    /* a reused task: reset the fiber before running */
  uint8_t name_owned;     /* name is a malloc'd copy (too long for label) */
  void *job_result;       /* tr_to_thread: the finished job's result */
  size_t stack_size;      /* requested; 0 = default */
  struct tr_error *error; /* this task's tr_error_last */
  const char *name;       /* a copy: inside label, or malloc'd (name_owned) */
  char label[64];         /* "actor A, task T" */
  /* What the task waits for while TR_TASK_BLOCKED: the blocking call's
   * name (a string literal), for the hang report (runtime/hang.c).  Set by
   * the caller of block(), cleared when the task resumes. */
  const char *blocked_on;
} tr_task_t;

typedef struct tr_tasks {
  tr_task_t *ready_head, *ready_tail;
  tr_task_t *all;
  uint64_t live;    /* tasks not yet done */
  uint64_t zombies; /* done tasks kept for in-flight references */
  uint64_t next_id; /* scope ids */
  tr_task_t *main;
  int main_result;
  uint8_t main_done;
  uint8_t stopping;   /* runtime shutdown or actor cancel: an outermost
                         scope, cancelled */
  uint8_t forced;     /* cancel that ignores shields (escalation) */
  uint8_t run_posted; /* a TR_SYS_RUN is in the mailbox */
  /* tr_recv: application messages not yet taken, and waiting tasks. */
  tr_msg_t *inbox_head, *inbox_tail;
  tr_task_t *recv_head, *recv_tail; /* linked through recv_next */
  /* Set when the actor is a child of an actor nursery: at exit, the main
   * task's result or error goes to `watcher` (a reference) as the final
   * message (Return or Error) of its dialog watch_cid, the parent's record
   * of this child's life (runtime/rpc/actor_nursery.c). */
  struct tr_actor *watcher;
  uint64_t watch_cid;
  struct tr_error *main_error; /* the main task's error, kept at its end */
  tr_buf_t *main_value;        /* tr_run_in_actor: the call's result */
  /* The dialog engine's per-actor state (struct tr_rpc, runtime/rpc/rpc.h;
   * opaque here): tr__tasks_ext_size bytes in the same allocation, right
   * after this struct.  The rpc layer sets the size at start-up. */
  struct tr_rpc *rpc;
  /* Finished tasks kept with their stacks for reuse (linked via next). */
  tr_task_t *spare;
  unsigned nspare;
} tr_tasks_t;

/* Bytes of per-actor state an upper layer keeps with each task actor's
 * tr_tasks_t (ts->rpc); set before any task actor is spawned (tr_run's
 * start calls tr__rpc_init). */
extern size_t tr__tasks_ext_size;

/* What the task layer asks of the dialog engine (runtime/rpc/), which
 * sits above it and registers these at start-up (tr__rpc_init): handle a
 * protocol message (body != 0) for a task actor in its turn (taking it),
 * settle what an exiting actor still owes (its CancelAcks, the report to
 * an actor nursery), and free the engine's state in an exited actor's
 * tasks.  Registering the same hooks again writes nothing.
 * Threads: tr_run's, before any actor exists. */
typedef struct tr_tasks_rpc_ops {
  void (*dispatch)(struct tr_worker *w, struct tr_actor *a, tr_msg_t *m);
  void (*actor_exit)(struct tr_actor *a);
  void (*actor_free)(tr_tasks_t *ts);
} tr_tasks_rpc_ops_t;
void tr__tasks_set_rpc_ops(const tr_tasks_rpc_ops_t *ops);

/* Starts fn(arg) as a task in nursery n from the actor's own turn (no
 * current task needed).  For the RPC service nursery.  Returns 0,
 * -TR_ECLOSED or -TR_ENOMEM. */
int tr__nursery_spawn_internal(struct tr_nursery *n, tr_task_fn fn, void *arg, const char *name);
tr_task_t *tr__task_of_actor_current(struct tr_actor *a);

/* tr_spawn_task_actor for an actor nursery: the child reports its exit to
 * `watcher` (a reference is taken) in dialog `watch_cid` (see tr_tasks_t). */
int tr__spawn_task_actor_watched(tr_task_fn fn, void *arg, const tr_spawn_opts_t *opts,
                                 struct tr_actor *watcher, uint64_t watch_cid, tr_actor_t **ref);
/* The same, known by `uuid` when not NULL (tr__actor_spawn_as: a child
 * process's main actor has the uuid its parent chose). */
int tr__spawn_task_actor_as(tr_task_fn fn, void *arg, const tr_spawn_opts_t *opts,
                            struct tr_actor *watcher, uint64_t watch_cid, const uint8_t *uuid,
                            tr_actor_t **ref);

/* tr_main of a child actor process (TR_PARENT_ADDR set): the transport's
 * child runtime (transport/channel.h), returning the exit status. */
extern int (*tr__main_child_hook)(const tr_config_t *cfg);
/* The node (transport/node.h), wired in by runtime.c: tr_main's root task
 * starts it before the user's root function (discovery: probe, become or
 * join the registrar, register the root; a failure is tr_main's result and
 * the root function is not called) and stops it after. */
typedef struct tr_main_node_ops {
  int (*start)(const tr_config_t *cfg);
  void (*stop)(void);
} tr_main_node_ops_t;
extern const tr_main_node_ops_t *tr__main_node_ops;

/* Called by the exiting task actor (actor.c, through its task ops): the
 * dialog engine's exit (its CancelAcks, the report to an actor nursery),
 * then frees its spare task stacks. */
void tr__tasks_notify_exit(struct tr_actor *a);

/* For actor_nursery.c: timed, non-cancellable wait (woken early by
 * tr__task_wake_blocked; once tr_shutdown has begun no timer can be armed,
 * and it only yields, so callers loop until their deadline), and making a
 * blocked task ready. */
void tr__task_wait_until(tr_task_t *t, int64_t deadline);
void tr__task_wake_blocked(tr_task_t *t);
void tr__task_cancel_scope_local(tr_task_t *t, tr_scope_t *s);
/* Closes scope s of the running task even when it is not the innermost
 * (a context's scope left out of order): it is unlinked from the chain. */
void tr__scope_detach(tr_scope_t *s);

/* Allocates a system message (flags_ TR_MSGF_SYS) with the given tag,
 * u64 and ptr.  Returns 0 or -TR_ENOMEM; with must != 0 it retries until
 * it succeeds (for messages somebody waits for).  Threads: any. */
int tr__sys_msg(tr_msg_t **out, uint32_t tag, uint64_t u64, void *ptr, int must);

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

/*
 * tr_to_thread, also telling whether the job was queued: *queued is 1 when
 * fn will run (or has run) on the pool, whatever the result; 0 when the
 * call failed before queuing it (-TR_EINVAL, -TR_EPERM, -TR_ECANCELED for
 * a task already cancelled, -TR_ENOMEM), and fn never sees arg.  A caller
 * whose arg owns memory needs this to know who frees it: after an
 * abandoned wait (-TR_ECANCELED with *queued 1) fn still reads arg; after
 * a refusal nobody will.  Returns as tr_to_thread.
 * Ownership: as tr_to_thread.  Threads: a task.
 */
int tr__to_thread_queued(void *(*fn)(void *), void *arg, void **result, int *queued);

/* For to_thread.c: the running task, blocking, and reference release. */
tr_task_t *tr__task_current(void);
void tr__task_block(tr_task_t *t, int cancellable);
void tr__task_wake_if(tr_task_t *t, uint64_t gen);
void tr__task_unref(tr_task_t *t);
int tr__task_cancelled(tr_task_t *t);

/*
 * A blocking call of task t observed its cancellation: counts it (for
 * tr_scope_cancelled_caught) and records -TR_ECANCELED as the task's error,
 * with the printf-style message (empty: "task X of actor Y was cancelled")
 * and the call site as its trace hop.  Evaluates to -TR_ECANCELED, so that
 * `return tr__task_observe_cancel(t, NULL);` is every cancellation point's
 * way out.  Threads: task t, running.
 */
#define tr__task_observe_cancel(t, ...)                                                            \
  tr__task_observe_cancel_at((t), __FILE__, __LINE__, __func__, __VA_ARGS__)
/* A blocking call of t returns -TR_ECANCELED because of the scopes of
 * chain (t->scope, or the chain the call waited under): the scope that
 * catches it is marked (tr_scope_cancelled_caught). */
void tr__scope_chain_saw_cancel(tr_scope_t *chain);

int tr__task_observe_cancel_at(tr_task_t *t, const char *file, int line, const char *func,
                               const char *fmt, ...) TR__PRINTF(5, 6);

/* Registers the task layer's hooks at runtime start: tr_error_last and
 * log lines go to the running task, and task actors' turns, cancellation,
 * exit and memory to the task layer (tr__actor_set_task_ops).
 * Threads: tr_run's, before any actor exists. */
void tr__tasks_init(void);

/* ---- shared by the task layer's files (task.c, scope.c, nursery.c,
 * main.c); each is described where it is defined. ---- */

struct tr_nursery;
struct tr_nursery {
  tr_scope_t scope;
  tr_task_t *parent;
  uint64_t live; /* children not yet finished */
  uint8_t closing;
  uint8_t waiting; /* the parent is blocked in close */
  int nfail;
  int first_rc;
  tr_error_t *errors; /* the first failure, or a group once there are two */
};

/*
 * tr_nursery_start.  Until the new task calls tr_task_started it belongs
 * to the caller, as in trio, where start runs it in a nursery of its own:
 * its scope chain ends in the caller's innermost scope (`base`, stable
 * while the caller waits) instead of the target nursery's, and its end is
 * reported to this record, not to the target.  The target counts it in
 * `live` from the start (trio's pending starts keep a nursery open).
 * tr_task_started moves it: the link of its chain that pointed at base is
 * pointed at the target's scope, which carries along every scope and
 * nursery the task opened meanwhile.  The record lives on the caller's
 * stack, which is safe because the caller waits until the task has either
 * moved or ended.
 */
typedef struct tr_start {
  tr_task_t *caller;
  struct tr_nursery *target;
  tr_scope_t *base;
  void *value;
  int result;        /* the task's result, when it ended unmoved */
  tr_error_t *error; /* ... and its error object */
  uint8_t started;   /* tr_task_started was called */
  uint8_t moved;     /* ... and moved the task into the target */
  uint8_t ended;     /* the task ended without moving */
} tr_start_t;

/* The task state of t's actor (users include runtime/actor/actor.h). */
#define tr__tasks_of(t) ((t)->actor->tasks)
void tr__task_ready_push(tr_tasks_t *ts, tr_task_t *t);
void tr__task_release_ref(tr_tasks_t *ts, tr_task_t *t);
void tr__tasks_wake_cancelled(tr_tasks_t *ts);
tr_scope_t *tr__tasks_find_scope(tr_tasks_t *ts, uint64_t id);
void tr__tasks_cancel_local(tr_tasks_t *ts, tr_scope_t *s);
int tr__scope_chain_cancelled(const tr_scope_t *s, const tr_tasks_t *ts);
int tr__scope_arm_deadline(tr_task_t *t, tr_scope_t *s);
void tr__tasks_post_run(struct tr_actor *a);
int tr__task_new(struct tr_actor *a, tr_task_fn fn, void *arg, const tr_task_opts_t *opts,
                 tr_task_t **out);
void tr__nursery_child_done(struct tr_nursery *n, tr_task_t *t);
void tr__nursery_live_done(struct tr_nursery *n);
void tr__nursery_fail(struct tr_nursery *n, tr_task_t *t);
void tr__start_child_done(tr_tasks_t *ts, tr_task_t *t);
#define tr__task_observe_cancel_default(t) tr__task_observe_cancel((t), "%s", "")

/* A schedule point that is no cancellation point (trio's
 * cancel_shielded_checkpoint): task t, the current one, lets every other
 * ready task run, and its actor take its mail and other actors run, before
 * it goes on.  For a loop that may never block (tr_pub_send with nobody to
 * send to).  Threads: t's. */
void tr__task_yield(tr_task_t *t);

#endif
