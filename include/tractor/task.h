/*
 * Tasks and structured concurrency, with trio's semantics.
 *
 * A task is a fiber that belongs to an actor (like a trio task belongs to
 * a trio run).  The tasks of one actor never run at the same time: they
 * interleave only at blocking calls, so an actor's state needs no locks.
 * Every blocking call here is a cancellation point.
 *
 *   - A nursery (tr_nursery_open/_spawn/_close) starts child tasks; close
 *     waits for all of them.  The first child to fail cancels the rest
 *     (and the parent's code between open and close); close returns that
 *     failure, or -TR_EGROUP with every failure when several happened
 *     (see tr_error_group_* in errors.h).
 *   - A cancel scope (tr_scope_open/_close) is a region with an optional
 *     deadline and a shield flag.  Once it is cancelled (tr_scope_cancel, its
 *     deadline, or an enclosing scope), every blocking call inside returns
 *     -TR_ECANCELED at once, also on every later call, so cleanup runs but
 *     cannot block (libdill's rule).  A shielded scope is not affected by
 *     the cancellation of scopes outside it.
 *   - tr_nursery_start (trio's nursery.start) starts a task and waits until
 *     it reports, with tr_task_started, that it is ready.
 *   - A channel (tr_chan_*, trio's memory channel) hands values between
 *     the tasks of one actor, bounded, with EOF on close.
 *
 * C has no `async with`: every open has a close, in LIFO order, on the
 * same task.  Scopes live in the caller's memory (usually its stack).
 *
 * These calls are for code running as a task (inside tr_main's root
 * function, or a function started with tr_nursery_spawn); elsewhere they
 * return -TR_EPERM.
 *
 * A task may resume on another worker thread after any blocking call.  Do
 * not carry thread-local state across one: not a thread-local's address,
 * and not errno, whose address the compiler may keep from before the call
 * (__errno_location is declared const).  Read errno right after the call
 * that set it, in a function that makes no blocking call in between (a
 * noinline helper that returns errno).
 */
#ifndef TRACTOR_TASK_H
#define TRACTOR_TASK_H

#include <stddef.h>
#include <stdint.h>

#include "actor.h"
#include "errors.h"
#include "time.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A deadline that never comes. */
#define TR_NO_DEADLINE INT64_MAX

typedef int (*tr_task_fn)(void *arg);

/* ---- cancel scopes ------------------------------------------------------ */

/* Fields ending in '_' are private; the struct is public only so that a
 * scope can live on the caller's stack. */
typedef struct tr_scope {
  struct tr_scope *parent_;
  void *task_;
  uint64_t id_;
  int64_t deadline_;
  uint64_t timer_;
  uint64_t cancel_seen_; /* cancellations this scope caught */
  uint8_t shield_;
  uint8_t cancel_called_;
  uint8_t caught_;
  uint8_t fail_;
  uint8_t deadline_hit_;
  uint8_t open_;
} tr_scope_t;

/*
 * Opens a cancel scope on the current task.  deadline is absolute on
 * tr_now's clock (TR_NO_DEADLINE for none); shield != 0 protects the
 * region from cancellation by enclosing scopes.  Returns 0, -TR_EPERM
 * (not in a task), -TR_ENOMEM (deadline timer) or -TR_ENORUNTIME (a
 * deadline once tr_shutdown has begun: no timer is armed any more), with
 * an error object.
 * Ownership: s is the caller's; it must stay valid until tr_scope_close.
 * Threads: a task.
 */
int tr_scope_open(tr_scope_t *s, int64_t deadline, int shield);

/*
 * Cancels the scope: blocking calls inside it return -TR_ECANCELED from now
 * on.  Idempotent.  May be called from the scope's task, another task of
 * the same actor, another actor, or a plain thread (the cancellation is
 * then delivered as a message to the scope's actor; the scope must still be
 * open when the call is made, and a call that races with its close is
 * ignored).  Returns 0, or -TR_EINVAL for a scope that is not open.
 * Threads: any.
 */
int tr_scope_cancel(tr_scope_t *s);

/*
 * Closes the scope (LIFO with other scopes and nurseries of this task).
 * Returns 0, or -TR_ETIMEDOUT for a tr_fail_after scope whose deadline
 * cancelled it (its timer fired before the close: a body that never
 * blocks nor yields may pass the deadline unnoticed, and then closes with
 * 0, as trio's fail_after when no Cancelled was raised).  After close,
 * tr_scope_cancelled_caught tells whether a cancellation of this scope
 * was observed inside it (a blocking call returned -TR_ECANCELED because
 * of it), as trio's cancelled_caught.  The scope that a cancellation is
 * "because of" is trio's: of the cancelled scopes the call could see
 * (out to the first shield), the outermost one.  So a scope that catches
 * nothing itself (its cancel came after the inner scope had caught its
 * own, or a shielded inner scope's deadline cancelled the call) reads 0.
 * Threads: the scope's task.
 */
int tr_scope_close(tr_scope_t *s);
int tr_scope_cancelled_caught(const tr_scope_t *s);

/* trio's move_on_after / fail_after: open a scope with deadline now + ns.
 * Close with tr_scope_close. */
int tr_move_on_after(tr_scope_t *s, int64_t ns);
int tr_fail_after(tr_scope_t *s, int64_t ns);

/* ---- nurseries ------------------------------------------------------------ */

typedef struct tr_nursery tr_nursery_t;

typedef struct tr_task_opts {
  const char *name;  /* for errors and diagnostics; copied (NULL: "task") */
  size_t stack_size; /* 0: the runtime default (64 KiB) */
} tr_task_opts_t;

/*
 * Opens a nursery in the current task; it also opens a cancel scope (the
 * nursery's), which child failures cancel.  Returns 0, -TR_EPERM (not in a
 * task) or -TR_ENOMEM.
 * Ownership: *out belongs to the nursery machinery; it is freed by
 * tr_nursery_close, which must be called exactly once by this task.
 * Threads: a task.
 */
int tr_nursery_open(tr_nursery_t **out);

/*
 * Starts fn(arg) as a new task of the current actor, inside the nursery.
 * It runs when the current task next blocks.  fn returns 0 or a negative
 * -TR_E* code (with the task's error object set, e.g. by tr_fail).
 * Returns 0, -TR_ECLOSED (the nursery is closing: a closed one has been
 * freed, and must not be used), -TR_EPERM (not a task of the nursery's
 * actor) or -TR_ENOMEM.  The task's stack is taken when it first runs (so
 * many short tasks hold few stacks): a stack that cannot be had (memory
 * exhausted, an absurd opts->stack_size) fails the task, not this call,
 * with -TR_ENOMEM and an error object naming the size, and the nursery
 * treats that as any failure of a child.
 * Ownership: arg is borrowed by the task until fn returns; opts is not
 * retained (opts->name is copied).  Threads: a task of the same actor.
 */
int tr_nursery_spawn(tr_nursery_t *n, tr_task_fn fn, void *arg, const tr_task_opts_t *opts);

/*
 * trio's nursery.start: starts fn(arg) as a new task of the current actor
 * and waits until it calls tr_task_started(value) (trio's
 * task_status.started), then returns 0 with *value set to that value
 * (value may be NULL to drop it).  The task then goes on running in
 * nursery n, as if started with tr_nursery_spawn.
 *
 * Until it calls tr_task_started the new task runs under the caller, not
 * under n (trio runs it in a nursery of its own inside start): it is
 * cancelled with the caller's scopes, n's cancellation does not reach it,
 * and its failure is the caller's, not n's (n's other children are not
 * cancelled by it).  n waits for it from the start (its close does not
 * return before the task has ended), as trio's pending starts.
 *
 * Returns 0; the task's own failure when it failed before calling
 * tr_task_started (its error object becomes the caller's tr_error_last);
 * -TR_ECANCELED when the caller is cancelled before the task started
 * (also when it was cancelled already at the call: the task still starts,
 * as in trio, and its first checkpoint sees the cancellation):
 * the wait, like tr_nursery_close's, is not interrupted, the cancellation
 * reaches the task instead, and tr_nursery_start returns once the task
 * has ended (a task that calls tr_task_started after that gets
 * -TR_ECANCELED there and is not moved, as trio's started() in a
 * cancelled start); -TR_EAPP with type "RuntimeError" when the task
 * returned without calling tr_task_started (trio's "child exited without
 * calling task_status.started()"); -TR_ECLOSED (n is closing),
 * -TR_EPERM (not a task of n's actor), -TR_EINVAL or -TR_ENOMEM.  On any
 * failure *value is NULL.
 * Ownership: as tr_nursery_spawn; the started value passes to the caller.
 * Threads: a task of n's actor.
 */
int tr_nursery_start(tr_nursery_t *n, tr_task_fn fn, void *arg, const tr_task_opts_t *opts,
                     void **value);

/*
 * Called by a task started with tr_nursery_start: hands value to the
 * waiting tr_nursery_start and moves the task into its nursery.  A task
 * function cannot take a task_status argument in C, so this applies to
 * the current task's pending start.  Returns 0 (the value is delivered);
 * -TR_ECANCELED when the caller of tr_nursery_start has been cancelled
 * (the value is not delivered and stays the task's; the task is
 * cancelled too and should return); -TR_EINVAL when no tr_nursery_start
 * waits for this task (it was spawned, or started was already called);
 * -TR_EPERM outside a task.  Never blocks.
 * Ownership: on 0, value passes to the caller of tr_nursery_start.
 * Threads: the started task.
 */
int tr_task_started(void *value);

/* Cancels the nursery's scope: every child and the parent's code inside
 * the nursery see -TR_ECANCELED.  Threads: as tr_scope_cancel. */
int tr_nursery_cancel(tr_nursery_t *n);

/*
 * Waits until every child has finished (this wait is not interrupted by
 * cancellation: cancellation reaches the children instead, and no child
 * outlives the nursery), closes the nursery's scope and frees the nursery.
 * Returns 0; the failure of the one child that failed (its error object
 * becomes this task's tr_error_last); -TR_EGROUP when several failed
 * (tr_error_last is the group); or -TR_ECANCELED when no child failed but
 * an enclosing scope is cancelled.  A child's -TR_ECANCELED is never a
 * failure.
 * Threads: the task that opened it.
 */
int tr_nursery_close(tr_nursery_t *n);

/* ---- time and yielding ---------------------------------------------------- */

/* Sleeps for ns nanoseconds (<= 0: just a checkpoint) or until the
 * absolute deadline.  Returns 0, -TR_ECANCELED, -TR_EPERM, or, without
 * sleeping, -TR_ENOMEM or -TR_ENORUNTIME (once tr_shutdown has begun no
 * timer is armed), each with an error object. */
int tr_sleep(int64_t ns);
int tr_sleep_until(int64_t deadline);

/* Returns -TR_ECANCELED if the current task is cancelled; otherwise lets
 * the actor's other ready tasks run, then returns 0.  -TR_EPERM outside a
 * task. */
int tr_checkpoint(void);

/*
 * Waits for the next application message sent to the current actor (with
 * tr_send) and returns it.  Messages are handed to waiting tasks in FIFO
 * order.  Returns 0, -TR_ECANCELED or -TR_EPERM.
 * Ownership: *out is the caller's (tr_msg_free or forward it).
 * Threads: a task.
 */
int tr_recv(tr_msg_t **out);

/*
 * Runs fn(arg) on a separate, bounded pool of threads (8 by default; the
 * environment variable TR_TO_THREAD_MAX overrides it) and waits for it,
 * so blocking C code never stalls a worker.  Returns 0 with *result set to
 * fn's return value (result may be NULL), -TR_EPERM outside a task,
 * -TR_EINVAL (fn is NULL), -TR_ENOMEM (no pool thread could be started,
 * and none runs: fn is not called), or
 * -TR_ECANCELED when the caller is cancelled: the wait is abandoned (the
 * thread call keeps running to its end and its result is dropped; C code
 * cannot be interrupted), and tr_error_last says so.  The actor stays
 * alive until an abandoned call has finished.
 * Ownership: arg is borrowed until fn returns (also after an abandoned
 * wait: keep it valid).  Threads: a task.
 */
int tr_to_thread(void *(*fn)(void *), void *arg, void **result);

/* ---- channels between tasks ------------------------------------------------ */

/*
 * A bounded channel between the tasks of one actor (trio's memory
 * channel): tr_chan_send blocks while the buffer holds `capacity` items,
 * tr_chan_recv blocks while it is empty, and both are cancellation points.
 * Capacity 0 (trio's default) is a rendezvous: a send completes only when
 * a receiver takes the item.  TR_CHAN_UNBOUNDED never blocks senders (the
 * buffer grows as needed).  Items are handed over in FIFO order, and
 * blocked senders and receivers are served in the order they blocked.
 *
 * One object serves both ends (C has no clones to count): tr_chan_close
 * ends it for everybody.  Receivers then drain what is buffered and get
 * -TR_EEOF (trio's EndOfChannel); senders, blocked or not, get
 * -TR_ECLOSED.
 *
 * Items are void pointers (NULL is a valid item); the channel never looks
 * at them.  Ownership of an item passes from the sender to the receiver
 * when tr_chan_send returns 0; a send that fails leaves it the sender's.
 * Items still buffered when the channel is freed are dropped, not freed:
 * drain a channel (close, then receive until -TR_EEOF) when they own
 * memory.
 *
 * A channel belongs to the actor of the task that created it and only its
 * tasks may use it (a channel between actors is a tr_send or a context
 * stream): a call from elsewhere is refused with -TR_EPERM.  No lock is
 * taken, no message is sent: a hand-off is a direct switch between two
 * tasks of the same actor.
 *
 *     static int producer(void *arg) {
 *         tr_chan_t *ch = arg;
 *         for (intptr_t i = 1; i <= 3; i++)
 *             if (tr_chan_send(ch, (void *)i) != 0)
 *                 break;
 *         return tr_chan_close(ch);         // the consumer gets -TR_EEOF
 *     }
 *
 *     tr_chan_t *ch;
 *     tr_nursery_t *n;
 *     void *item;
 *     tr_chan_new(&ch, 0);                  // rendezvous, as trio's default
 *     tr_nursery_open(&n);
 *     tr_nursery_spawn(n, producer, ch, NULL);
 *     while (tr_chan_recv(ch, &item) == 0)
 *         printf("%ld\n", (long)(intptr_t)item);
 *     tr_nursery_close(n);
 *     tr_chan_free(ch);
 */
typedef struct tr_chan tr_chan_t;

/* Capacity for a channel whose senders never block. */
#define TR_CHAN_UNBOUNDED SIZE_MAX

/*
 * Creates a channel for the tasks of the current actor that buffers up to
 * `capacity` items (0: rendezvous).  Returns 0, -TR_EPERM (not in a task)
 * or -TR_ENOMEM.
 * Ownership: *out is the caller's, freed with tr_chan_free.
 * Threads: a task.
 */
int tr_chan_new(tr_chan_t **out, size_t capacity);

/*
 * Sends item: hands it to the first waiting receiver, or buffers it, or
 * blocks until one of those is possible.  Returns 0 (without yielding
 * when it did not have to wait), -TR_ECANCELED (the item was not sent),
 * -TR_ECLOSED (the channel is closed, also when it closes while this
 * waits), -TR_EPERM (not a task of the channel's actor) or -TR_ENOMEM
 * (an unbounded buffer could not grow); every failure leaves an error
 * object.
 * Ownership: on 0, item passes to the receiver; otherwise it stays the
 * caller's.  Threads: a task of the channel's actor.
 */
int tr_chan_send(tr_chan_t *ch, void *item);

/*
 * Receives the next item into *item, blocking while none is buffered and
 * no sender waits.  Returns 0, -TR_EEOF once the channel is closed and
 * drained, -TR_ECANCELED (nothing was taken), -TR_EPERM; every failure
 * leaves an error object and sets *item to NULL.
 * Ownership: on 0, *item is the caller's.
 * Threads: a task of the channel's actor.
 */
int tr_chan_recv(tr_chan_t *ch, void **item);

/* trio's send_nowait / receive_nowait: as above but never block, and not
 * cancellation points.  -TR_EAGAIN (trio's WouldBlock) instead of
 * waiting. */
int tr_chan_send_nowait(tr_chan_t *ch, void *item);
int tr_chan_recv_nowait(tr_chan_t *ch, void **item);

/*
 * Closes the channel: later sends get -TR_ECLOSED, receives get the items
 * still buffered and then -TR_EEOF; tasks blocked on it are woken with
 * those results.  Idempotent; never blocks.  Returns 0 or -TR_EPERM.
 * Threads: a task of the channel's actor.
 */
int tr_chan_close(tr_chan_t *ch);

/*
 * Frees the channel.  Refused with -TR_EBUSY while a task is inside a
 * blocking call on it (blocked, or woken and not yet returned): close it
 * and let those tasks finish (a nursery close) first.  Returns 0,
 * -TR_EBUSY or -TR_EPERM; NULL is a no-op.
 * Ownership: buffered items are dropped (see above).
 * Threads: a task of the channel's actor.
 */
int tr_chan_free(tr_chan_t *ch);

/* ---- actor nurseries ------------------------------------------------------- */

/*
 * An actor nursery supervises child actors the way a nursery supervises
 * tasks (tractor's ActorNursery, one-cancels-all): close waits until every
 * child actor has exited; the first child whose main task fails gets every
 * other child cancelled (and the parent's code inside the actor nursery);
 * close returns that failure, or -TR_EGROUP with all of them.
 *
 * A child's failure has one shape wherever it is seen (close, its group
 * members, tr_portal_result): tractor's RemoteActorError, code
 * -TR_EREMOTE, type "RemoteActorError", the child's name as source and
 * its own error's type as boxed type (a ContextCancelled keeps its code
 * and type; an error the child relayed from another actor, already a
 * RemoteActorError, keeps its code, which need not be -TR_EREMOTE (a
 * refused call's is, say, -TR_ECLOSED), and its source, and gains the
 * child as a relay hop instead).  Test tr_error_type for
 * "RemoteActorError" to tell a child's failure from any other.  A child
 * that was cancelled has not failed.
 *
 * The exception is a child process that is lost: its process ended
 * without an exit report (killed by a signal, _exit, a crash), or its
 * connection broke.  Its failure is not boxed: code -TR_EIO, type
 * "TransportError", the message naming the child and the cause, as in
 * "actor NAME@UUID is lost: process PID was killed by signal 9 (Killed)"
 * or "... exited with status 3" (docs/PROTOCOL.md 8.4, 8.5).  It counts
 * as a failure all the same (one cancels all).
 *
 * Cancelling a child is a request (its tasks are cancelled; shields hold)
 * followed by a bounded wait for it to exit (its exit is the
 * acknowledgement); a child still running after the grace period is
 * cancelled by force (shields ignored).  In-process children are actors
 * of this process.  Child processes (portal.h, TR_SPAWN_PROCESS) go
 * through the same supervision code; their forced cancel is SIGTERM,
 * then SIGKILL one more grace period later (portal.h says more), and
 * their exit is learnt when the process is reaped.
 */
typedef struct tr_actor_nursery tr_actor_nursery_t;

typedef struct tr_actor_nursery_opts {
  int64_t cancel_grace_ns; /* wait before forcing a cancel; 0 = 1 s */
} tr_actor_nursery_opts_t;

/* Opens an actor nursery in the current task.  opts may be NULL.
 * Returns 0, -TR_EPERM (not in a task) or -TR_ENOMEM.
 * Ownership: freed by tr_actor_nursery_close (exactly once, same task). */
int tr_actor_nursery_open(tr_actor_nursery_t **out, const tr_actor_nursery_opts_t *opts);

/* Starts a child actor named `name` (NULL: "child") whose main task runs
 * fn(arg).  Returns 0, -TR_ECLOSED (closing), -TR_ECANCELED (the calling
 * task is cancelled: nothing is started), -TR_EPERM or -TR_ENOMEM.
 * Ownership: name is copied; when ref is not NULL, *ref is a reference
 * for the caller to release.  Threads: the nursery's task. */
int tr_actor_nursery_spawn(tr_actor_nursery_t *an, const char *name, tr_task_fn fn, void *arg,
                           tr_actor_t **ref);

/* Cancels every child (request, bounded wait, then force; see above) and
 * the nursery's own scope.  Returns at once; close does the waiting. */
int tr_actor_nursery_cancel(tr_actor_nursery_t *an);

/* Waits until every child has exited, escalating cancellation when the
 * parent is cancelled or a child failed.  Returns 0, the single failure
 * (boxed, see above: -TR_EREMOTE; -TR_EIO for a lost child process),
 * -TR_EGROUP (members as the single failure would be), or -TR_ECANCELED
 * (the parent was cancelled, no child failed).  A nursery that cancelled
 * itself (tr_actor_nursery_cancel) and whose children did not fail closes
 * with 0, as a trio nursery whose own cancel scope was cancelled, also
 * when a child had to be forced out.
 * Threads: the task that opened it. */
int tr_actor_nursery_close(tr_actor_nursery_t *an);

/* ---- running a program ---------------------------------------------------- */

/*
 * Starts the runtime, runs root(arg) as the main task of the root actor
 * "root", and returns its result once every actor has exited (tr_run's
 * structured end).  argc/argv are not used (reserved): a child process
 * learns what to do from its environment.
 * While it runs, SIGINT and SIGTERM cancel the root actor gracefully (its
 * tasks see -TR_ECANCELED and unwind, nurseries wait for their children,
 * lifetime callbacks run); tr_main then logs "cancelled by SIGINT" (or
 * SIGTERM) at TR_LOG_WARN (stderr by default, log.h) and returns
 * -TR_ECANCELED, like tractor's
 * KeyboardInterrupt.  A second signal exits hard.  The previous handlers
 * are restored on return.
 * Returns root's result, or tr_run's errors.  A negative result leaves
 * its error object on the calling thread (tr_error_last): the one the root
 * failed with (a boxed remote error, tr_fail's, ...), or, when the root
 * returned a bare code with no error of that code recorded, one saying
 * "the root function returned CODE".
 * Threads: the process's main thread (any non-worker thread).
 */
int tr_main(int argc, char **argv, tr_task_fn root, void *arg, const tr_config_t *cfg);

/*
 * 1 when this process was started as a child actor process (an actor
 * nursery's TR_SPAWN_PROCESS child; the environment says so), else 0.
 * tr_main recognises a child by itself: it then serves the actor its
 * parent asked for and exits the process (root is not called and may be
 * NULL).  A program whose main is not its own, such as a Criterion test
 * binary, hands a child to tr_main first:
 *
 *     int main(int argc, char **argv) {
 *       if (tr_spawned_child())
 *         return tr_main(argc, argv, NULL, NULL, NULL);  // never returns
 *       ... Criterion's runner ...
 *     }
 *
 * Threads: any.
 */
int tr_spawned_child(void);

/*
 * Spawns an actor whose main task runs fn(arg); the actor exits when all of
 * its tasks have finished.  As tr_spawn otherwise (opts->mailbox_limit and
 * opts->on_exit apply; on_exit receives arg).  The main task's result is
 * available through tr_task_actor_result after the actor exited.
 * Threads: any thread while the runtime runs.
 */
int tr_spawn_task_actor(tr_task_fn fn, void *arg, const tr_spawn_opts_t *opts, tr_actor_t **ref);

/* The main task's return value of an exited task actor; -TR_EBUSY while it
 * runs, -TR_EINVAL for a behaviour actor. */
int tr_task_actor_result(const tr_actor_t *a);

#ifdef __cplusplus
}
#endif
#endif
