/*
 * The scheduler's process-wide state: the workers, the inject queue, the
 * parking state and the counters.  One runtime runs per process at a time
 * (tr_run, runtime/runtime.c, sets it up and tears it down).
 *
 * The scheduler sits below the actor layer: it moves `struct tr_actor *`
 * between queues without looking inside, and reaches the actor layer only
 * through the hooks of tr_sched_ops_t, which the actor layer registers at
 * start-up (tr__actor_init).
 */
#ifndef TR_SCHED_WORKER_H
#define TR_SCHED_WORKER_H

#include <ck_ec.h>
#include <pthread.h>
#include <stdint.h>

#include <tractor/actor.h>

#include "runtime/fiber/fiber.h"
#include "runtime/mem/msgpool.h"
#include "runtime/platform/atomic.h"
#include "runtime/sched/runq.h"

#define TR_MAX_WORKERS 64
#define TR_WORKER_ALIGN (2 * TR_CACHELINE) /* see the end of tr_worker_t */
#define TR_RUNQ_CAPACITY 4096

/* Counters.  Each worker owns a set (single writer, relaxed atomics); work
 * done on other threads goes to the shared `foreign` set with atomic adds.
 * tr_stats sums them (messages made and freed are the mem layer's own
 * counters, in tr_msgcache_t). */
typedef struct tr_counters {
  uint64_t spawned;
  uint64_t exited;
  uint64_t actors_freed;
  uint64_t handled;
  uint64_t dead_letters;
  uint64_t proto_dropped;
  uint64_t steals;
  uint64_t parks;
} tr_counters_t;

typedef struct tr_worker {
  tr_runq_t runq;
  /* The actor most recently made runnable by this worker: it runs next, on
   * this core (request/reply exchanges stay in one cache).  Atomic: a
   * thief may take it, but only when this worker has been stuck in one
   * turn for a whole spin round (see steal_next in sched.c). */
  struct tr_actor *next_slot __attribute__((aligned(TR_CACHELINE)));
  uint64_t turns; /* atomic: actor turns started by this worker */
  /* Everything from here on is touched by the owner only (except the
   * event count and the counters): a line of its own, so that spinning
   * thieves reading the next slot do not slow the owner down. */
  unsigned next_streak __attribute__((aligned(TR_CACHELINE)));
  unsigned turn_sends; /* tr_send calls in the current turn */
  int helping;         /* inside tr__sched_help (no nesting beyond one) */
  int yield_turn;      /* the running behaviour asked to end its turn (tr__actor_yield) */
  /* Thief's memory of each victim's next slot at its previous look. */
  struct {
    struct tr_actor *slot;
    uint64_t turns;
  } seen[TR_MAX_WORKERS];
  unsigned tick;
  unsigned steal_from; /* round-robin victim cursor */
  int index;
  struct ck_ec32 ec; /* parking: waits until someone increments it */
  pthread_t thread;
  /* The message a behaviour is handling (freed after it unless passed on). */
  tr_msg_t *cur_msg;
  struct tr_actor *cur_actor;
  /* The task running on this worker (NULL on the worker's own stack), and
   * the worker's own context, which tasks switch back to. */
  struct tr_task *cur_task;
  tr_fiber_t main;
  /* This worker's message memory (runtime/mem/msgpool.h), attached to its
   * thread while it runs. */
  tr_msgcache_t mem;
  tr_counters_t c;
  /* The reactor's probing (reactor.c, "Probing"): the edge watch whose
   * owner last read data on this worker (atomic: tr__fd_unwatch clears it
   * from any thread), until when it counts as hot (0: for IO_PROBE_NS
   * from its next probe), the spin rounds counted for the probes' rhythm,
   * and the workers' polls counted at its last busy look
   * (tr_sched_io_t.busy) with when that count last moved.  Otherwise this
   * worker's only. */
  struct tr_fd_watch *io_hot;
  int64_t io_hot_until;
  unsigned io_round;
  uint64_t io_seen;
  int64_t io_seen_at;
  /* Aligned to a pair of lines: CPUs fetch lines in 128-byte pairs (the
   * adjacent-line prefetcher), so a worker's last line, written by its
   * owner at every turn (mem, c), must not pair with the next worker's
   * run queue, which thieves write.  Measured: with the pair shared, fanin
   * ran 21 % slower (8 interleaved runs). */
} __attribute__((aligned(TR_WORKER_ALIGN))) tr_worker_t;

/* What the scheduler asks of the actor layer (registered by it at
 * start-up, before any worker runs): run one turn of an actor, the link
 * that chains an actor into the inject queue, and whether an actor's turn
 * may run nested inside another actor's tr_send (a task actor's may not:
 * it switches fibers, which needs the worker's own stack). */
typedef struct tr_sched_ops {
  void (*run)(tr_worker_t *w, struct tr_actor *a);
  struct tr_actor **(*link)(struct tr_actor *a);
  int (*nestable)(const struct tr_actor *a);
} tr_sched_ops_t;

/* Registers the actor layer's hooks.  Registering the same hooks again
 * (every tr_run does) writes nothing.  Ownership: copies ops.
 * Threads: tr_run's, before the workers start. */
void tr__sched_set_ops(const tr_sched_ops_t *ops);

/* The workers' part in watching fds (see "Workers poll too" in
 * reactor.c):
 *  - poll: a spinning worker's look at the watched fds, between its looks
 *    for work; returns the readiness events it turned into messages, or 1
 *    for a probe of a hot watch (reactor.c "Probing"), 0 when it sent
 *    nothing (at once when no fd is watched);
 *  - parking: a worker is about to sleep, so nobody may be polling: the
 *    reactor must watch the fds itself until a worker polls again;
 *  - busy: a busy worker's look, between two turns once in a while (with
 *    its look at the inject queue): it polls when no worker has polled
 *    for a while (all of them running actors).
 * All run on worker threads and must not block.  The reactor sets them
 * at start and clears them (NULL) at stop; the struct is static. */
typedef struct tr_sched_io {
  int (*poll)(void);
  void (*parking)(void);
  void (*busy)(void);
} tr_sched_io_t;
void tr__sched_set_io(const tr_sched_io_t *io);

typedef struct tr_rt {
  int nworkers;
  tr_worker_t *workers;
  /* Inject queue: actors scheduled from non-worker threads, and overflow
   * of full local queues.  A mutex is enough: it is off the hot path. */
  pthread_mutex_t inject_lock;
  struct tr_actor *inject_head, *inject_tail;
  uint64_t inject_len; /* atomic: lets workers skip the lock when empty */
  /* Parking.  `sleepers` has bit i set while worker i is parked (or about
   * to be); `spinning` counts workers looking for work.  A producer wakes
   * a sleeper only when nobody is spinning (the spinner will find it). */
  uint64_t sleepers;
  /* Bit i set while worker i's park is timed: it wakes every
   * TR_STUCK_LOOK_NS to look at the other workers' next slots (sched.c,
   * "Parking"), so a hot push need not wake it. */
  uint64_t timed;
  uint32_t spinning;
  uint32_t quit; /* atomic: workers exit (set by tr_run at the end) */
  tr_counters_t foreign;
} tr_rt_t;

extern tr_rt_t tr__rt;

/* The worker running on this thread, or NULL.  Not inlinable on purpose:
 * tasks (fibers) migrate between workers, so the thread-local must be
 * re-read after every blocking call, never cached across one. */
tr_worker_t *tr__worker_self(void);

/* Makes a runnable.  From worker w (may be NULL for other threads):
 * `hot` puts it in w's next slot (the sender's core runs it next);
 * otherwise at the back of w's queue, or in the inject queue. */
void tr__schedule(tr_worker_t *w, struct tr_actor *a, int hot);

/* Puts a, whose turn on worker w has just ended with work left (its batch
 * used, messages that came in during the turn, or tr__actor_yield), at the
 * back of w's queue, and makes w look at the inject queue before anything
 * else, as it does every 61 turns: actors woken by other threads (timers,
 * fd readiness the reactor reports, sends from plain threads) are not left
 * behind a busy actor for 61 of its turns.  An empty inject queue costs
 * one relaxed load.  Threads: worker w. */
void tr__sched_requeue(tr_worker_t *w, struct tr_actor *a);

/* Starts nworkers workers (tr__rt's locks are initialised by the caller).
 * Returns 0 or -TR_ENOMEM. */
int tr__sched_start(int nworkers, char *why, size_t len);
/* Wakes every worker, waits for them to exit, frees their queues and
 * message memory. */
void tr__sched_stop(void);

/* Sends per turn after which a sending behaviour lets runnable actors of
 * its worker run a turn nested inside its tr_send. */
#define TR_HELP_SENDS 64
/* Most nested turns per help (bounds the sender's wait). */
#define TR_HELP_TURNS 32

/* Runs turns of this worker's other runnable actors (next slot, then
 * queue; at most TR_HELP_TURNS) nested inside the current behaviour's
 * tr_send, then restores the current actor.  One level deep only.  This is how a behaviour that
 * sends in a long loop yields its worker at a send point: the mailboxes it
 * fills are drained while they are still in cache, instead of after the
 * loop.  Threads: worker w, inside a behaviour. */
void tr__sched_help(tr_worker_t *w);

/* Wakes one parked worker if nobody is spinning.  Call after publishing
 * stealable work. */
void tr__sched_notify(void);

/* Counter helpers: per worker when on a worker, else atomically shared. */
#define TR_COUNT(w, field, n)                                                                      \
  do {                                                                                             \
    tr_worker_t *w_ = (w);                                                                         \
    if (w_)                                                                                        \
      tr_counter_add(&w_->c.field, (n));                                                           \
    else                                                                                           \
      tr_faa_relaxed(&tr__rt.foreign.field, (n));                                                  \
  } while (0)

/* Frees a message without counting it as a dead letter, into worker w's
 * message memory (w == NULL: not on a worker).  Ownership: takes m.
 * Threads: w's. */
static inline void tr__msg_dispose(tr_worker_t *w, tr_msg_t *m) {
  tr__msgcache_put(w ? &w->mem : NULL, m);
}

/* Frees worker w's message memory (after it has stopped). */
static inline void tr__msgpool_drain(tr_worker_t *w) { tr__msgcache_drain(&w->mem); }

#endif
