/*
 * The reactor: one thread per runtime that waits for kernel events and
 * timer deadlines and turns them into messages to actors.  It never runs
 * user code (not even signal handlers: it blocks every signal), so a slow
 * behaviour can never delay a timer or an I/O readiness event.
 *
 * What it waits on is a set of watchers, each an fd registered with epoll
 * and a callback that runs on the reactor thread.  Today there are two:
 * an eventfd (wake-ups: stop, tr_actor_cancel_soon requests, and later
 * changes to the watcher set) and a
 * timerfd set to the earliest pending timer's deadline.
 * Sockets and child-process pidfds join later as more watchers in a table
 * keyed by fd, each callback turning readiness into a message.
 *
 * Public timer API: include/tractor/time.h.
 */
#ifndef TR_REACTOR_REACTOR_H
#define TR_REACTOR_REACTOR_H

#include <stddef.h>
#include <stdint.h>

#include <tractor/actor.h>

/* Starts the reactor thread (tr_run, after the workers) and stops it (once
 * every actor has exited, before the workers stop); stop cancels pending
 * timers, releasing their messages and references.  Start returns 0 or a
 * negative TR_E* code.  Threads: tr_run's. */
int tr__reactor_start(void);
void tr__reactor_stop(void);

/*
 * Arms a timer that sends msg to `to` at deadline_ns_abs, a time on
 * tr_now's clock; a deadline already past fires as soon as possible.
 * Same semantics, results and ownership as tr_send_after (which is this
 * with tr_now() + delay): on success the timer owns msg and holds its own
 * reference to `to`; on failure (-TR_EINVAL, -TR_ENORUNTIME, -TR_ENOMEM)
 * the caller keeps msg and *timer_id (if timer_id is not NULL) is 0.
 * This is the entry point for the runtime's own deadlines (sleeps, cancel
 * scopes), which already hold absolute times.
 * Threads: any thread.
 */
int tr__timer_post(int64_t deadline_ns_abs, tr_actor_t *to, tr_msg_t *msg, uint64_t *timer_id);

/*
 * Pending timers right now (armed, not yet fired or cancelled).  For tests
 * and diagnostics: the figure may be stale as soon as it is returned.
 * Threads: any thread.
 */
size_t tr__timer_pending(void);

#endif
