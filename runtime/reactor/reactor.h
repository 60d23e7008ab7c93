/*
 * The reactor: one thread per runtime that waits for kernel events and
 * timer deadlines and turns them into messages to actors.  It never runs
 * user code (not even signal handlers: it blocks every signal), so a slow
 * behaviour can never delay a timer or an I/O readiness event.
 *
 * What it waits on is a set of watchers, each an fd registered with epoll
 * and a callback that runs on the reactor thread: an eventfd (wake-ups:
 * stop, tr_actor_cancel_soon requests, removed fd watches), a timerfd set
 * to the earliest pending timer's deadline, and the fd watches of actors
 * (tr__fd_watch below), each turning readiness into one message to the
 * actor that owns the fd.
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
 * negative TR_E* code (-TR_ENOMEM, or -TR_EIO for another OS error, such
 * as running out of fds), and then writes what failed, with the OS's
 * words, into why.  Threads: tr_run's. */
int tr__reactor_start(char *why, size_t len);
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
 * tr_now's clock read coarsely (CLOCK_MONOTONIC_COARSE): never ahead of
 * tr_now, at most one kernel tick (1-10 ms) behind it, and about 3 ns a
 * read where tr_now takes about 25 ns on a VM (measured here).  For
 * bookkeeping on a scale of tens of milliseconds or more that would
 * otherwise read the clock per message: a channel's last traffic, against
 * its heartbeat and peer_timeout.  Threads: any thread.
 */
int64_t tr__now_coarse(void);

/* tr_now() + ns, saturated at INT64_MAX (TR_NO_DEADLINE): a duration of
 * INT64_MAX is "never", not a deadline in the past.  Threads: any. */
int64_t tr__deadline_after(int64_t ns);

/*
 * Pending timers right now (armed, not yet fired or cancelled).  For tests
 * and diagnostics: the figure may be stale as soon as it is returned.
 * Threads: any thread.
 */
size_t tr__timer_pending(void);

/* ---- fd watches ------------------------------------------------------------ */

/* A file descriptor the reactor watches for one actor (its owner). */
typedef struct tr_fd_watch tr_fd_watch_t;

/*
 * Registers fd with the reactor for EPOLLIN (and EPOLLRDHUP), one-shot:
 * when it becomes ready, the reactor thread sends `to` one application
 * message and then ignores the fd until tr__fd_rearm.  The message is
 *   tag = tag, u64 = the epoll events (EPOLLIN, EPOLLOUT, EPOLLRDHUP,
 *   EPOLLHUP, EPOLLERR), cid = tr__fd_watch_id(w), ptr = w.
 * The reactor never reads or writes the fd: the owner does that in its own
 * turn (read until EAGAIN, then re-arm).  fd should be non-blocking.
 * Returns 0, -TR_EINVAL (bad fd, NULL to or out, an fd epoll cannot watch
 * or one already watched), -TR_ENORUNTIME (no runtime, or it is stopping)
 * or -TR_ENOMEM; on failure *out is NULL and nothing is registered.
 * Ownership: the watch holds its own reference to `to` until it is freed
 * (by the reactor, after tr__fd_unwatch or at reactor stop).  fd stays the
 * caller's, who must keep it open until tr__fd_unwatch has returned (or
 * the runtime has stopped): epoll registers the open file, and an fd
 * closed while registered, or its number reused, would leave the kernel's
 * entry or remove someone else's.  *out is the owner's handle for rearm
 * and unwatch, valid until it calls tr__fd_unwatch.  An owner that exits
 * without unwatching leaves the watch registered (its notifications become
 * dead letters) until the reactor stops and frees it.
 * Threads: any thread while the runtime runs; normally the owner.
 */
int tr__fd_watch(int fd, tr_actor_t *to, uint32_t tag, tr_fd_watch_t **out);

/*
 * Registers fd as an edge watch: EPOLLIN and EPOLLRDHUP, edge-triggered,
 * never re-armed; EPOLLOUT as well only while the owner asks for it
 * (tr__fd_want_out), after a write would block.  (One exception: when a
 * worker cannot allocate a notification it re-arms the watch with
 * EPOLLOUT too, so that nothing is lost; until the owner next turns
 * EPOLLOUT on and off, room to write may then make notifications with
 * nothing to do.)  A readiness (data came,
 * room to write came back, the peer hung up) sends `to` one notification,
 * as tr__fd_watch's, unless one is pending: one the owner has not yet
 * begun to handle with tr__fd_begin_io.  So the owner of an edge watch
 * handles a notification as
 *     ev = tr__fd_begin_io(w); read until EAGAIN (or a short read, unless
 *     ev says the peer hung up); write what is queued until EAGAIN (then
 *     tr__fd_want_out(w, 1); once all is written, tr__fd_want_out(w, 0));
 * and never calls tr__fd_rearm: the next readiness after tr__fd_begin_io
 * makes the next notification.  A notification may find nothing to do
 * (readiness the owner had already read): "try again", as ever.  For fds
 * read often, such as a channel's socket: it saves the EPOLL_CTL_MOD a
 * one-shot watch costs per turn (0.3 to 1 us a system call on our VM; see
 * tools/bench/io_floor.c).  Same arguments, results, ownership, threads
 * and removal as tr__fd_watch.
 */
int tr__fd_watch_edge(int fd, tr_actor_t *to, uint32_t tag, tr_fd_watch_t **out);

/*
 * Whether an edge watch also reports room to write (EPOLLOUT): on after a
 * write would block, so that the notification comes when the peer has
 * read; off once everything is written.  Not watched all the time because
 * on a connection in use the kernel makes an EPOLLOUT edge for every
 * acknowledgement that frees send space, and each edge would be a
 * notification and a turn of the owner for nothing (tcp_rpc: one per
 * round trip on each side, as many as the calls).  Turning it on when
 * the fd is writable already reports that at once (epoll_ctl re-polls the
 * fd), so no edge is lost between the blocked write and the call.
 * Returns 0 (also when it already was so), -TR_EINVAL (w NULL or a
 * one-shot watch) or -TR_ENOMEM / -TR_EIO (epoll_ctl failed; the watch
 * stays as it was).  Ownership: borrows w.  Threads: the owner, in its
 * turn, before tr__fd_unwatch.
 */
int tr__fd_want_out(tr_fd_watch_t *w, int on);

/* An edge watch's owner begins handling a notification (before its I/O):
 * from now on a readiness sends a new one.  Returns the events of every
 * readiness reported since the previous call, the notification's own
 * among them: those that came while it was pending made no message, and
 * an edge does not come again.  So an owner that sees EPOLLRDHUP, EPOLLHUP
 * or EPOLLERR here must read until EOF or EAGAIN even after a short read
 * (the end sits behind the data; nothing more will announce it).  0 for
 * a one-shot watch or NULL.  Threads: the owner, before tr__fd_unwatch. */
uint32_t tr__fd_begin_io(tr_fd_watch_t *w);

/* An edge watch's owner has just read data from its fd: while the worker
 * running it spins, for 200 us (IO_PROBE_NS) from its first probe of w
 * since this call (which reads no clock), it probes w, that is, sends the
 * owner a notification (u64 = EPOLLIN) as if epoll had reported the fd
 * readable, instead of waiting for epoll_wait to say so.  The owner's
 * read is then the poll: the answer to what it wrote costs one system
 * call to find, not two (reactor.c, "Probing").  A probe may find nothing
 * (a notification that finds nothing, as ever).  No effect on a one-shot
 * watch, NULL, or off the workers.  Threads: the owner, in its turn,
 * before tr__fd_unwatch. */
void tr__fd_hot(tr_fd_watch_t *w);

/*
 * Arms the watch again, for `events`: EPOLLIN, EPOLLOUT or both (EPOLLRDHUP
 * is always added).  Call it after reading until EAGAIN, or to wait for
 * room to write after a write would block.  Re-arming a watch that has not
 * fired yet replaces its events; then a notification harvested just before
 * the re-arm may still arrive, followed by one for the new arming, so the
 * owner must treat every notification as "try again", not as a count.
 * Returns 0, -TR_EINVAL (events not a non-empty subset of
 * EPOLLIN|EPOLLOUT, w NULL or an edge watch) or -TR_ENOMEM / -TR_EIO (epoll_ctl failed;
 * the watch stays as it was).
 * Ownership: borrows w.  Threads: the owner (one thread at a time per
 * watch), while the runtime runs and before tr__fd_unwatch.
 */
int tr__fd_rearm(tr_fd_watch_t *w, uint32_t events);

/*
 * Removes the watch.  The fd leaves the epoll set before this returns
 * (EPOLL_CTL_DEL), so the caller may close it right after; the watch
 * object itself is freed later on the reactor thread, with its reference
 * to the owner, once the reactor is past every event it may have taken
 * for it.  At most one notification for w can arrive after this returns:
 * one the reactor had already taken from epoll (or queued) when the owner
 * removed it.  Its ptr is stale: the owner tells it apart by its cid,
 * the watch's id, which it compares with the id of its current watch
 * (ids are never reused) without dereferencing ptr.
 * Returns 0, or -TR_EINVAL (w NULL) or -TR_EIO when the DEL failed (the fd
 * was closed or replaced before the call, against the rule of
 * tr__fd_watch); the watch is removed and freed all the same, except for
 * NULL.
 * Ownership: w is the reactor's from the call on: never touch it again.
 * Threads: the owner, while the runtime runs.
 */
int tr__fd_unwatch(tr_fd_watch_t *w);

/* The watch's id: process-unique, never 0, never reused; the cid of its
 * notifications.  Threads: the owner, before tr__fd_unwatch. */
uint64_t tr__fd_watch_id(const tr_fd_watch_t *w);

/*
 * Watches not yet freed (registered, or removed and waiting for the
 * reactor thread to free them).  For tests and diagnostics: stale as soon
 * as it is returned.  When it reads 0 after an unwatch, the reactor has
 * sent every notification it ever will for that watch.
 * Threads: any thread.
 */
size_t tr__fd_watch_count(void);

/*
 * What happened to readiness so far in this process (all runtimes), for
 * tests and diagnostics: the events of fd watches taken by workers
 * (polled: spinning, or busy between turns) and by the reactor thread
 * (drained: every worker was asleep, or inside a long turn), of which its
 * tick took `ticked` (the workers had not polled since the last tick), the
 * reactor thread's wake-ups (loop turns: events, timers, the tick while
 * workers poll) and of those the tick's own (`ticks`: its wait ran out;
 * 1 to 64 ms apart, see reactor.c "The tick"), and the tick's looks that
 * set its wait back to 1 ms (`resets`: no worker had polled since the
 * last look, or every worker was asleep).  Stale when returned.
 * Threads: any thread.
 */
typedef struct tr_reactor_stats {
  uint64_t polled, drained, ticked, wakeups;
  uint64_t probed; /* probes of hot watches (tr__fd_hot) */
  uint64_t ticks, resets;
} tr_reactor_stats_t;
void tr__reactor_stats(tr_reactor_stats_t *out);

#endif
