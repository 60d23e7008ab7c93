/*
 * Time and timers.
 *
 * All times are int64_t nanoseconds on one monotonic clock (tr_now), so a
 * deadline is simply tr_now() + delay and never jumps with the wall clock.
 *
 * Timers are Erlang's erlang:send_after for behaviour actors: a message
 * delivered to an actor later, through the same mailbox as every other
 * message.  The runtime's reactor thread keeps them; it never runs user
 * code, it only sends the message when the deadline passes:
 *
 *     static void ticker(void *state, tr_msg_t *msg) {
 *         ... one tick of work ...
 *         // Re-arm with the message being handled: no allocation.
 *         tr_send_after(tr_self(), msg, 10 * 1000000LL, NULL);
 *     }
 */
#ifndef TRACTOR_TIME_H
#define TRACTOR_TIME_H

#include <stdint.h>

#include "actor.h"
#include "errors.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Nanoseconds on the monotonic clock (CLOCK_MONOTONIC): only differences
 * and comparisons are meaningful.  Never goes backwards.  A vDSO call, no
 * system call (~20 ns).
 * Threads: any thread, with or without a running runtime.
 */
int64_t tr_now(void);

/*
 * Sends msg to actor `to` delay_ns nanoseconds from now, as tr_send would
 * then; delay_ns <= 0 means as soon as possible.  Timers with the same
 * deadline fire in the order they were armed, and messages of timers fired
 * to one actor arrive in deadline order.  If `to` has exited by the
 * deadline the message is a dead letter (tr_stats_t.dead_letters).  A
 * mailbox_limit does not apply to a timer's message: it is delivered even
 * to a full mailbox, since it could not be handed back to anyone.
 * Timers still pending when the runtime ends (tr_run returning) are
 * cancelled silently: their messages are freed, not counted as dead
 * letters.
 * When timer_id is not NULL, *timer_id receives the timer's id for
 * tr_timer_cancel (0 on failure; ids start at 1 and are never reused
 * within a process).
 * Returns 0, -TR_EINVAL (to or msg NULL), -TR_ENORUNTIME (no runtime, or
 * tr_shutdown was called) or -TR_ENOMEM.
 * Ownership: on success msg belongs to the timer until it fires (then to
 * the receiver) or is cancelled (then it is freed); this includes the
 * message a behaviour is handling, which it may re-arm like this instead of
 * freeing.  The timer holds its own reference to `to`, released when it
 * fires or is cancelled; the caller's reference is only borrowed.  On
 * failure the caller keeps msg.
 * Threads: any thread while tr_run is running (behaviours, the root
 * function's thread, other threads).  Never blocks except on a short
 * internal lock.  Cost: O(log n) in the number of pending timers, one
 * allocation.
 */
int tr_send_after(tr_actor_t *to, tr_msg_t *msg, int64_t delay_ns, uint64_t *timer_id);

/*
 * Cancels a pending timer: its message is freed (not a dead letter) and its
 * reference to the actor released.  Returns 0 when the timer was pending
 * and is now cancelled, so its message will never be delivered, or
 * -TR_ENOTFOUND when it has already fired (its message is on its way or
 * delivered), was cancelled before, or never existed.  -TR_ENOTFOUND is an
 * answer, not a failure: no error object is recorded (tr_error_last keeps
 * whatever error is propagating while a scope's deadline timer is taken
 * back).
 * Threads: any thread, also when no runtime is running (then
 * -TR_ENOTFOUND).  Cost: O(log n).
 */
int tr_timer_cancel(uint64_t timer_id);

#ifdef __cplusplus
}
#endif
#endif
