/*
 * The process-wide runtime: workers, inject queue, live-actor lists and
 * counters.  One runtime runs per process at a time (tr_run).
 */
#ifndef TR_RUNTIME_H
#define TR_RUNTIME_H

#include <ck_ec.h>
#include <pthread.h>
#include <stdint.h>

#include <tractor/actor.h>

#include "runtime/actor/actor.h"
#include "runtime/fiber/fiber.h"
#include "runtime/platform/atomic.h"
#include "runtime/sched/runq.h"

#define TR_MAX_WORKERS 64
#define TR_RUNQ_CAPACITY 4096
#define TR_DEFAULT_BATCH 64
#define TR_MSGPOOL_BATCH 1024 /* messages per magazine */
#define TR_DEPOT_MAX 256      /* full magazines kept process-wide */
#define TR_ENVX_CACHE 32      /* free envelope extensions kept per worker */

/* Counters.  Each worker owns a set (single writer, relaxed atomics); work
 * done on other threads goes to the shared `foreign` set with atomic adds.
 * tr_stats sums them. */
typedef struct tr_counters {
  uint64_t spawned;
  uint64_t exited;
  uint64_t actors_freed;
  uint64_t handled;
  uint64_t dead_letters;
  uint64_t proto_dropped;
  uint64_t msgs_new;
  uint64_t msgs_freed;
  uint64_t steals;
  uint64_t parks;
} tr_counters_t;

/* A live-actor list shard.  Actors spawned on worker i go to shard i,
 * those spawned elsewhere to the last shard; tr_shutdown walks them all. */
typedef struct tr_shard {
  pthread_mutex_t lock;
  struct tr_actor *head;
  uint64_t next_id; /* under lock */
} __attribute__((aligned(TR_CACHELINE))) tr_shard_t;

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
  /* Message pool (mem/msgpool.c): a magazine of free messages being used
   * and one full spare; owner only. */
  tr_msg_t *pool;
  unsigned pool_len;
  tr_msg_t *spare;
  /* Free envelope extensions (mem/msgpool.c, tr__envx_alloc): every Start
   * and Cancel carries one (208 bytes), which otherwise cost a calloc and
   * a free per call.  Owner only. */
  struct tr_envx *envx[TR_ENVX_CACHE];
  unsigned envx_len;
  tr_counters_t c;
} __attribute__((aligned(TR_CACHELINE))) tr_worker_t;

typedef struct tr_rt {
  int nworkers;
  int batch;
  tr_worker_t *workers;
  tr_shard_t *shards; /* nworkers + 1 */
  /* Inject queue: actors scheduled from non-worker threads, and overflow
   * of full local queues.  A mutex is enough: it is off the hot path. */
  pthread_mutex_t inject_lock;
  struct tr_actor *inject_head, *inject_tail;
  uint64_t inject_len; /* atomic: lets workers skip the lock when empty */
  /* Parking.  `sleepers` has bit i set while worker i is parked (or about
   * to be); `spinning` counts workers looking for work.  A producer wakes
   * a sleeper only when nobody is spinning (the spinner will find it). */
  uint64_t sleepers;
  uint32_t spinning;
  uint32_t stopping; /* atomic: tr_shutdown was called */
  uint32_t quit;     /* atomic: workers exit (set by tr_run at the end) */
  uint64_t live;     /* atomic: spawned and not yet exited */
  /* The hang report (hang.c): its delay after the root returned (< 0:
   * never), when the root returned (tr_now clock; atomic, 0 = not yet),
   * and whether it has been printed (set by tr_run's thread only). */
  int64_t hang_ns;
  int64_t root_done;
  int hang_reported;
  /* tr_join and tr_run wait here; exiting actors broadcast. */
  pthread_mutex_t wait_lock;
  pthread_cond_t wait_cv;
  tr_counters_t foreign;
  /* Depot of full message magazines, shared by the workers: a worker that
   * frees more messages than it allocates (a consumer) hands whole
   * magazines to one that allocates more (a producer).  One lock per
   * TR_MSGPOOL_BATCH messages. */
  pthread_mutex_t depot_lock;
  tr_msg_t *depot; /* magazines linked through their first message's ptr */
  unsigned depot_len;
} tr_rt_t;

extern tr_rt_t tr__rt;
/* 1 while a runtime is running (between start and the end of tr_run). */
extern uint32_t tr__rt_running;

/* The worker running on this thread, or NULL.  Not inlinable on purpose:
 * tasks (fibers) migrate between workers, so the thread-local must be
 * re-read after every blocking call, never cached across one. */
tr_worker_t *tr__worker_self(void);

/* Makes a runnable.  From worker w (may be NULL for other threads):
 * `hot` puts it in w's next slot (the sender's core runs it next);
 * otherwise at the back of w's queue, or in the inject queue. */
void tr__schedule(tr_worker_t *w, struct tr_actor *a, int hot);

int tr__sched_start(int nworkers);
/* Wakes every worker, waits for them to exit, frees their queues. */
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

/* Message pool (mem/msgpool.c).  drain frees a worker's magazines and
 * envx cache; depot_drain frees the depot (after the workers have
 * stopped). */
void tr__msgpool_drain(tr_worker_t *w);
void tr__msgpool_depot_drain(void);
/* Frees a message without counting it as a dead letter (internal). */
void tr__msg_dispose(tr_worker_t *w, tr_msg_t *m);

/* The reactor thread (reactor/reactor.c): started after the workers,
 * stopped once every actor has exited and before the workers stop; stop
 * cancels pending timers (releasing their messages and references). */
int tr__reactor_start(void);
void tr__reactor_stop(void);

/* Wakes tr_join/tr_run waiters. */
void tr__rt_broadcast(void);

/* The hang report's delay when neither tr_config_t.hang_report_ns nor
 * TR_HANG_REPORT_MS says otherwise. */
#define TR_HANG_REPORT_DEFAULT_NS (5 * 1000000000LL)

/* The root function has returned (tr_run's, or tr_main's root task): the
 * hang report's delay starts now.  Only the first call counts.
 * Threads: any. */
void tr__rt_root_returned(void);

/* Waits, on tr_run's thread, until actor a has finished its exit
 * (TR_AF_DONE), or with a == NULL until no actor is live.  Once the root
 * has returned and the wait has lasted the hang report's delay, prints the
 * report (once per run) and keeps waiting.  Threads: tr_run's. */
void tr__rt_wait_end(struct tr_actor *a);

/* The hang report (hang.c).  tr__hang_report prints, to stderr, every
 * live actor with its kind, mailbox depth and what each of its tasks is
 * blocked on; `since_ns` is how long ago the root returned.  Threads:
 * tr_run's, not holding wait_lock. */
void tr__hang_report(int64_t since_ns);
/* An actor's worker answers a TR_SYS_DESCRIBE request m (taking it), in
 * the actor's turn with no task running; tr__hang_drop releases one that
 * was never answered (a dead letter).  Threads: a's worker / any. */
void tr__hang_answer(tr_worker_t *w, struct tr_actor *a, tr_msg_t *m);
void tr__hang_drop(tr_msg_t *m);

/* Runs the lifetime stack (lifetime.c) until it is empty, newest callback
 * first, including callbacks pushed by callbacks.  Called by tr_run at its
 * very end, after the runtime is gone.  Threads: tr_run's thread. */
void tr__lifetime_run(void);

#endif
