/*
 * The work-stealing scheduler.
 *
 * Each worker runs actors from, in order: its next slot (the actor it just
 * made runnable, so a request/reply pair stays on one core), its local
 * ck_ring (FIFO), the shared inject queue (checked first every 61 turns so
 * it cannot starve), and finally the other workers' rings, round-robin.
 * With nothing found it spins briefly, polling the watched fds between
 * looks (tr_sched_io_t), then parks on its own ck_ec event count, telling
 * the reactor first that it must watch the fds itself.  A busy worker
 * polls them too, between turns, when no worker has for 100 us.
 *
 * Parking without lost wake-ups (Dekker-style, both sides seq_cst):
 *   parker:   set my bit in `sleepers`; fence; look for work again; wait on
 *             my event count unless its value changed since the snapshot.
 *   producer: publish work; fence; if nobody is spinning, clear a sleeper's
 *             bit and increment its event count.
 * Either the producer sees the bit, or the parker's re-check sees the work.
 * Work in a worker's own next slot or ring is never at risk: that worker is
 * awake and runs it; the wake-up there only adds parallelism.
 *
 * Deliberately not done: waking on every push.  A futex wake costs ~2 us
 * and a cross-core hand-off of an actor costs cache misses, both far more
 * than handling a message; the next slot and the "a spinner will find it"
 * rule keep both off the hot path.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <limits.h>
#include <linux/futex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "runtime/platform/assert.h"
#include "runtime/sched/worker.h"

/* Spin rounds before parking: each round looks for work once and yields
 * the core (sched_yield, ~0.3 us when nobody else wants it).  About
 * 100 us in all: long enough to cover the gap between messages of a busy
 * exchange, short enough that an idle runtime sleeps.  TR_SPIN_NS bounds
 * the spin in time as well: on a loaded machine a yield can give the core
 * away for milliseconds, and 256 of them would keep an idle runtime
 * "spinning" (polling, its reactor ticking) for most of a second.  But
 * never fewer than TR_SPIN_MIN_ROUNDS: a spinner woken to take a stuck
 * worker's next slot (tr__schedule) needs two looks at it, 8 searches
 * apart (steal_next), and is the only one that will come. */
#define TR_SPIN_ROUNDS 256
#define TR_SPIN_NS 200000
#define TR_SPIN_MIN_ROUNDS 32
/* Turns an actor may take from the next slot in a row before the ring's
 * oldest entry gets a turn (fairness; same idea as Go's runnext). */
#define TR_NEXT_STREAK_MAX 32
/* A spinning worker looks at the others' next slots once per this many
 * searches (see steal). */
#define TR_NEXT_PEEK_EVERY 8
/* How long a worker parks while another's next slot is occupied (or
 * another worker is awake), before it looks again whether that worker is
 * stuck (see worker_main): TR_STUCK_LOOK_NS at first, doubling with each
 * look that takes nothing, up to TR_STUCK_LOOK_MAX_NS.  Each look is a
 * wake-up, and on a small machine a wake-up takes the core from a worker
 * that is running an exchange for a few microseconds: with one worker busy
 * (a process serving one caller) and another parked, looks at a fixed 1 ms
 * were 1000 such stalls a second (tcp_rpc -w 2, 10 interleaved pairs:
 * median rate 86.9k -> 94.3k, p99 40 -> 32 us).  The price, as the
 * reactor's tick (reactor.c "The tick"): an actor left in the slot of a
 * worker stuck in a long turn that sent little waits up to twice the
 * maximum for its rescue instead of 2 ms; a turn that sends in a loop
 * gets its helper at once (tr__schedule). */
#define TR_STUCK_LOOK_NS 1000000L
#define TR_STUCK_LOOK_MAX_NS 4000000L
/* Sends in one turn after which a hot push wakes a timed sleeper too. */
#define TR_HOT_WAKE_SENDS 8

tr_rt_t tr__rt;
static __thread tr_worker_t *tls_worker;
/* The actor layer's hooks (tr__sched_set_ops). */
static tr_sched_ops_t hooks;
#if defined(TR_TSAN)
uint32_t tr__fence_word;
#endif

__attribute__((noinline)) tr_worker_t *tr__worker_self(void) { return tls_worker; }

/* The reactor's io hooks (tr__sched_set_io): set while it runs. */
static const tr_sched_io_t *io_hooks; /* atomic */

void tr__sched_set_io(const tr_sched_io_t *io) {
  __atomic_store_n(&io_hooks, io, __ATOMIC_RELEASE);
}

void tr__sched_set_ops(const tr_sched_ops_t *o) {
  if (memcmp(&hooks, o, sizeof hooks) != 0)
    hooks = *o;
}

/* ---- ck_ec operations: futex on Linux -------------------------------- */

static int ec_gettime(const struct ck_ec_ops *ops, struct timespec *out) {
  (void)ops;
  return clock_gettime(CLOCK_MONOTONIC, out);
}

static void ec_wait32(const struct ck_ec_wait_state *st, const uint32_t *addr, uint32_t expected,
                      const struct timespec *deadline) {
  struct timespec rel, *relp = NULL;
  if (deadline) {
    /* ck_ec hands us an absolute deadline on ec_gettime's clock. */
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    rel.tv_sec = deadline->tv_sec - now.tv_sec;
    rel.tv_nsec = deadline->tv_nsec - now.tv_nsec;
    if (rel.tv_nsec < 0) {
      rel.tv_nsec += 1000000000L;
      rel.tv_sec--;
    }
    if (rel.tv_sec < 0)
      return;
    relp = &rel;
  }
  (void)st;
  /* May return early (EINTR, EAGAIN, timeout): ck_ec re-checks. */
  syscall(SYS_futex, addr, FUTEX_WAIT_PRIVATE, expected, relp, NULL, 0);
}

static void ec_wake32(const struct ck_ec_ops *ops, const uint32_t *addr) {
  (void)ops;
  syscall(SYS_futex, addr, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

static const struct ck_ec_ops ec_ops = {
    .gettime = ec_gettime,
    .wait32 = ec_wait32,
    .wake32 = ec_wake32,
};
static const struct ck_ec_mode ec_mode = {.ops = &ec_ops, .single_producer = false};

/* ---- queues ------------------------------------------------------------ */

int tr__runq_init(tr_runq_t *q, unsigned capacity) {
  q->buf = calloc(capacity, sizeof(*q->buf));
  if (!q->buf)
    return -1;
  ck_ring_init(&q->ring, capacity);
  return 0;
}

void tr__runq_fini(tr_runq_t *q) {
  free(q->buf);
  q->buf = NULL;
}

static void inject_push(struct tr_actor *a) {
  *hooks.link(a) = NULL;
  pthread_mutex_lock(&tr__rt.inject_lock);
  if (tr__rt.inject_tail)
    *hooks.link(tr__rt.inject_tail) = a;
  else
    tr__rt.inject_head = a;
  tr__rt.inject_tail = a;
  /* Read without the lock by workers as a hint; the lock orders the data. */
  tr_faa_relaxed(&tr__rt.inject_len, 1);
  pthread_mutex_unlock(&tr__rt.inject_lock);
}

static struct tr_actor *inject_pop(void) {
  if (tr_load_relaxed(&tr__rt.inject_len) == 0)
    return NULL;
  pthread_mutex_lock(&tr__rt.inject_lock);
  struct tr_actor *a = tr__rt.inject_head;
  if (a) {
    tr__rt.inject_head = *hooks.link(a);
    if (!tr__rt.inject_head)
      tr__rt.inject_tail = NULL;
    tr_faa_relaxed(&tr__rt.inject_len, (uint64_t)-1);
  }
  pthread_mutex_unlock(&tr__rt.inject_lock);
  return a;
}

/* Clears one sleeper's bit and increments its event count, unless a
 * worker is spinning (it will find the work) and even_if_spinning is 0.  Clearing the bit claims the
 * wake-up, so two producers do not both wake the same sleeper while
 * another sleeps on. */
static void wake_one(int even_if_spinning) {
  if (!even_if_spinning && tr_load_relaxed(&tr__rt.spinning) != 0)
    return;
  uint64_t m = tr_load_relaxed(&tr__rt.sleepers);
  while (m) {
    int i = __builtin_ctzll(m);
    uint64_t bit = 1ull << i;
    if (tr_fand_seqcst(&tr__rt.sleepers, ~bit) & bit) {
      ck_ec32_inc(&tr__rt.workers[i].ec, &ec_mode);
      return;
    }
    m = tr_load_relaxed(&tr__rt.sleepers);
  }
}

/* Wakes a sleeper for work just published; `foreign`: by a thread that
 * is no worker (the reactor, tr_run's thread, a tr_to_thread thread),
 * into the inject queue. */
static void notify(int foreign) {
  /* seq_cst fence pairs with the fence after a parker sets its sleeper
   * bit: the work we published is ordered before our read of `sleepers`. */
  tr_fence_seqcst();
  /* A foreign push wakes a sleeper even while a worker spins.  A spinner
   * finds the work only once it runs again, and on a loaded machine the
   * kernel may keep it off the core for a long time: each of its yields
   * moves its turn further back (EEVDF's deadline), while a thread woken
   * from a futex is placed afresh.  Seen: a 1 ms tr_sleep's wake-up, from
   * the reactor, waited ~180 ms in the inject queue behind a "spinning"
   * worker (TSan, with test_process beside it).  Foreign pushes are few
   * (timers, what the reactor drains itself, tr_run's sends), so a futex
   * wake each is cheap; a worker's own pushes keep the spinner rule. */
  wake_one(foreign);
}

void tr__sched_notify(void) { notify(0); }

void tr__schedule(tr_worker_t *w, struct tr_actor *a, int hot) {
  if (w) {
    if (hot) {
      /* Only this worker makes the slot non-empty; thieves only empty it.
       * So an empty slot can be filled with a plain release store (pairs
       * with the acquire of a thief's CAS in steal_next); only displacing
       * an occupant needs the exchange.  This keeps a request/reply
       * exchange at one atomic read-modify-write per message (the take in
       * find_work). */
      TR_TSAN_RELEASE(a);
      struct tr_actor *old = tr_load_relaxed(&w->next_slot);
      if (old)
        old = tr_xchg_acqrel(&w->next_slot, a);
      else
        tr_store_release(&w->next_slot, a);
      if (!old) {
        /* We will run it ourselves, so no wake-up is owed.  But if we are
         * in a long turn, only another worker can run it soon (by taking
         * the slot from a stuck worker), and a parked one never looks.  So
         * when nobody spins, wake one: it spins ~100 us and stays a spinner
         * while the turn goes on, so this costs one futex wake per spin
         * period.  But not when every sleeper parks timed and this turn
         * has sent little yet: timed sleepers look at the next slots
         * every TR_STUCK_LOOK_NS to TR_STUCK_LOOK_MAX_NS anyway, and in an
         * exchange of short turns (one worker runs it while the others
         * park) a wake-up per message
         * would cost more than the message.  A turn that sends in a loop
         * (a producer) gets its helper at once.  A racy read is fine: it
         * is a hint. */
        uint64_t sl = tr_load_relaxed(&tr__rt.sleepers);
        if (TR_UNLIKELY(sl != 0) && ((sl & ~tr_load_relaxed(&tr__rt.timed)) != 0 ||
                                     w->turn_sends >= TR_HOT_WAKE_SENDS))
          wake_one(0);
        return;
      }
      a = old; /* the displaced actor goes to the back of the ring */
    }
    if (TR_UNLIKELY(!tr__runq_push_sp(&w->runq, a)))
      inject_push(a);
  } else {
    inject_push(a);
    notify(1);
    return;
  }
  notify(0);
}

/* Takes a victim's next slot, but only if the victim has not started a new
 * turn since this thief last looked (one spin round, about a microsecond,
 * ago) and the slot still holds the same actor: the victim is stuck in a
 * long behaviour, such as a producer sending in a loop, and the actor it
 * made runnable would otherwise wait for the whole loop.  An exchange that
 * is merely busy starts new turns constantly and is left alone. */
static struct tr_actor *steal_next(tr_worker_t *w, int v) {
  tr_worker_t *vw = &tr__rt.workers[v];
  struct tr_actor *a = tr_load_acquire(&vw->next_slot);
  uint64_t turns = tr_load_relaxed(&vw->turns);
  if (a && a == w->seen[v].slot && turns == w->seen[v].turns) {
    w->seen[v].slot = NULL;
    /* Acquire pairs with the owner's exchange in tr__schedule. */
    if (tr_cas_acqrel(&vw->next_slot, &a, NULL)) {
      TR_TSAN_ACQUIRE(a);
      tr_counter_add(&w->c.steals, 1);
      return a;
    }
    return NULL;
  }
  w->seen[v].slot = a;
  w->seen[v].turns = turns;
  return NULL;
}

static struct tr_actor *steal(tr_worker_t *w) {
  int n = tr__rt.nworkers;
  for (int k = 1; k < n; k++) {
    int v = (int)((w->steal_from + (unsigned)k) % (unsigned)n);
    if (v == w->index)
      continue;
    struct tr_actor *a = tr__runq_steal_mc(&tr__rt.workers[v].runq);
    if (a) {
      w->steal_from = (unsigned)v; /* try the same victim first next time */
      tr_counter_add(&w->c.steals, 1);
      return a;
    }
  }
  /* The next slots only every TR_NEXT_PEEK_EVERY searches: reading a busy
   * worker's slot and turn count pulls its cache lines away from it on
   * every message of an exchange, and a stuck worker is still found within
   * a few spin rounds. */
  if (w->tick % TR_NEXT_PEEK_EVERY != 0)
    return NULL;
  for (int k = 1; k < n; k++) {
    int v = (int)((w->steal_from + (unsigned)k) % (unsigned)n);
    struct tr_actor *a;
    if (v != w->index && (a = steal_next(w, v)))
      return a;
  }
  return NULL;
}


/* A parked worker's look at the others' next slots: takes one whose
 * worker has not turned since the last look (*a), and returns 1 when some
 * slot is occupied (worth another look later). */
static int look_stuck(tr_worker_t *w, struct tr_actor **a) {
  int full = 0;
  *a = NULL;
  for (int v = 0; v < tr__rt.nworkers && !*a; v++) {
    if (v == w->index || !tr_load_relaxed(&tr__rt.workers[v].next_slot))
      continue;
    full = 1;
    *a = steal_next(w, v);
  }
  return full;
}

/* Whether work is visible that a spinner could take: in the inject
 * queue, or in another worker's queue (this worker's own it runs itself). */
static int more_work(const tr_worker_t *w) {
  if (tr_load_relaxed(&tr__rt.inject_len) != 0)
    return 1;
  for (int v = 0; v < tr__rt.nworkers; v++)
    if (v != w->index && tr__runq_size(&tr__rt.workers[v].runq) != 0)
      return 1;
  return 0;
}

static struct tr_actor *find_work(tr_worker_t *w) {
  struct tr_actor *a;
  if (TR_UNLIKELY(++w->tick % 61 == 0) && (a = inject_pop()))
    return a;
  /* Relaxed peek first: the exchange is only paid when there is something. */
  if (tr_load_relaxed(&w->next_slot) && (a = tr_xchg_acqrel(&w->next_slot, NULL))) {
    if (w->next_streak < TR_NEXT_STREAK_MAX || tr__runq_size(&w->runq) == 0) {
      w->next_streak++;
      return a;
    }
    /* Fairness: the next slot has had its share; queue it behind the
     * others and take the oldest runnable actor instead. */
    if (!tr__runq_push_sp(&w->runq, a))
      inject_push(a);
  }
  w->next_streak = 0;
  if ((a = tr__runq_pop_mc(&w->runq)))
    return a;
  if ((a = inject_pop()))
    return a;
  return steal(w);
}

void tr__sched_requeue(tr_worker_t *w, struct tr_actor *a) {
  tr__schedule(w, a, 0);
  /* find_work's ++tick then lands on a multiple of 61 (an unsigned wrap
   * only shifts the period once). */
  w->tick = w->tick / 61 * 61 + 60;
}

static inline void run(tr_worker_t *w, struct tr_actor *a) {
  /* Thieves compare this to tell a stuck worker from a busy one. */
  tr_store_relaxed(&w->turns, w->turns + 1);
  w->turn_sends = 0;
  hooks.run(w, a);
}

void tr__sched_help(tr_worker_t *w) {
  w->turn_sends = 0;
  /* Not from a task: nested turns would run on its fiber stack, and a task
   * actor's turn switches fibers, which needs the worker's own stack. */
  if (w->helping || w->cur_task)
    return;
  /* The current actor is running, so it is in no queue and cannot be
   * picked here; its mailbox is marked busy, so sends to it from nested
   * turns only enqueue.  Save and restore what nested turns overwrite. */
  struct tr_actor *cur = w->cur_actor;
  tr_msg_t *cur_msg = w->cur_msg;
  w->helping = 1;
  /* Like a preempted Erlang process going to the back of the run queue:
   * run what is runnable here (the actors this loop fed, and the ones they
   * feed in turn), then resume the loop.  Only local work: other workers
   * steal from us, not the other way round, and the cap bounds how long
   * the sending behaviour waits. */
  for (int turn = 0; turn < TR_HELP_TURNS; turn++) {
    struct tr_actor *a = NULL;
    if (tr_load_relaxed(&w->next_slot))
      a = tr_xchg_acqrel(&w->next_slot, NULL); /* pairs as in find_work */
    if (!a)
      a = tr__runq_pop_mc(&w->runq);
    if (!a)
      break;
    if (!hooks.nestable(a)) {
      /* A task actor needs the worker's own stack: it runs next, after
       * this turn, from the next slot (empty now: it was taken above or
       * seen empty, and only this worker fills it), and the help stops.
       * Not at the back of the ring: behaviours that send in loops help
       * once a turn, and the ring's front after each of them was that
       * task actor again, so it went round and round without ever
       * running (seen: a test's root task, four self-sending actors on
       * two workers, starved for good in 1 run of 7). */
      TR_TSAN_RELEASE(a);
      tr_store_release(&w->next_slot, a);
      break;
    }
    hooks.run(w, a);
  }
  w->helping = 0;
  w->cur_actor = cur;
  w->cur_msg = cur_msg;
}

static void *worker_main(void *arg) {
  tr_worker_t *w = arg;
  tls_worker = w;
  tr__msgcache_attach(&w->mem);
  tr__fiber_init_main(&w->main);
  tr__fiber_thread_init();
  uint64_t bit = 1ull << w->index;
  for (;;) {
    struct tr_actor *a = find_work(w);
    if (a) {
      /* With find_work's look at the inject queue: the fds, if nobody has
       * looked at them meanwhile (reactor.c, "The tick"). */
      if (TR_UNLIKELY(w->tick % 61 == 0)) {
        const tr_sched_io_t *io = __atomic_load_n(&io_hooks, __ATOMIC_ACQUIRE);
        if (io)
          io->busy();
      }
      run(w, a);
      continue;
    }
    /* Spin: a short search before giving up the core. */
    tr_faa_seqcst(&tr__rt.spinning, 1);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int r = 0; r < TR_SPIN_ROUNDS && !a; r++) {
      /* Yield rather than pause: a round costs about as long (a syscall
       * that finds nobody else to run), but a thread with work for this
       * core (this process's reactor, another process's worker) gets it at
       * once instead of after the whole spin (measured: tcp_rpc between
       * two processes on 2 cores 3.0k -> 25.8k round trips/s, in-process
       * workloads unchanged).  With fds watched, a round also looks at
       * them (the reactor's netpoll, reactor.c "Workers poll too"), and
       * yields only when that sent nothing (a probe of a hot watch sends
       * its owner a notification: reactor.c "Probing"). */
      const tr_sched_io_t *io = __atomic_load_n(&io_hooks, __ATOMIC_ACQUIRE);
      if (!io || io->poll() == 0)
        sched_yield();
      a = find_work(w);
      if ((r & 15) == 15 && r >= TR_SPIN_MIN_ROUNDS - 1 && !a) { /* the clock, every 16 rounds */
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        if ((t.tv_sec - t0.tv_sec) * 1000000000LL + (t.tv_nsec - t0.tv_nsec) > TR_SPIN_NS)
          break;
      }
    }
    uint32_t spinners = tr_faa_seqcst(&tr__rt.spinning, (uint32_t)-1);
    if (a) {
      /* The last spinner found work and stops spinning: producers that
       * skipped their wake-up because it was spinning may have published
       * more, so if there is more, hand the search to a sleeper (Go's
       * rule).  Only then: the usual find is the one actor an exchange
       * needs next, and a wake-up per message would cost more than it. */
      if (spinners == 1 && more_work(w))
        tr__sched_notify();
      run(w, a);
      continue;
    }
    if (tr_load_acquire(&tr__rt.quit))
      break;
    /* Park. */
    uint32_t snap = ck_ec32_value(&w->ec);
    tr_for_seqcst(&tr__rt.sleepers, bit);
    /* Pairs with the fence in tr__sched_notify (see the file comment). */
    tr_fence_seqcst();
    a = find_work(w);
    if (a || tr_load_acquire(&tr__rt.quit)) {
      tr_fand_seqcst(&tr__rt.sleepers, ~bit);
      if (a)
        run(w, a);
      continue;
    }
    const tr_sched_io_t *io = __atomic_load_n(&io_hooks, __ATOMIC_ACQUIRE);
    if (io)
      io->parking();
    /* Another worker's next slot may hold an actor whose worker is stuck
     * in a long turn: its push woke nobody if this worker was spinning
     * then or parked timed, and the spin may have ended before its two
     * looks (steal_next).  Nobody else would come for that actor, so while
     * a slot is full, or another worker is awake (it may fill one, and
     * does not wake a timed sleeper for it), this worker parks for
     * TR_STUCK_LOOK_NS and looks again (no spin: a few loads), parking
     * twice as long after each look that took nothing, up to
     * TR_STUCK_LOOK_MAX_NS.
     * An idle runtime has every worker parked: it sleeps.
     *
     * Un-timing races with a hot push that read the timed bit: so the
     * bit is cleared first, and the slots looked at again after. */
    a = NULL;
    uint64_t others = (tr__rt.nworkers >= 64 ? ~0ull : (1ull << tr__rt.nworkers) - 1) & ~bit;
    int is_timed = 0;
    long look_ns = TR_STUCK_LOOK_NS;
    for (;;) {
      struct timespec limit, *deadline = NULL;
      int full = look_stuck(w, &a);
      if (a)
        break;
      int timed = full || (tr_load_seqcst(&tr__rt.sleepers) & others) != others;
      if (timed != is_timed) {
        is_timed = timed;
        if (timed) {
          tr_for_seqcst(&tr__rt.timed, bit);
        } else {
          tr_fand_seqcst(&tr__rt.timed, ~bit);
          continue; /* look again (above) */
        }
      }
      if (timed) {
        clock_gettime(CLOCK_MONOTONIC, &limit);
        limit.tv_nsec += look_ns;
        if (limit.tv_nsec >= 1000000000L) {
          limit.tv_nsec -= 1000000000L;
          limit.tv_sec++;
        }
        deadline = &limit;
      }
      tr_counter_add(&w->c.parks, 1); /* each sleep, a timed one's looks too */
      if (ck_ec32_wait(&w->ec, &ec_mode, snap, deadline) == 0 || !deadline)
        break; /* woken, or an untimed wait's end */
      if (look_ns < TR_STUCK_LOOK_MAX_NS)
        look_ns *= 2; /* nothing taken: look less often */
    }
    if (is_timed)
      tr_fand_seqcst(&tr__rt.timed, ~bit);
    tr_fand_seqcst(&tr__rt.sleepers, ~bit);
    if (a)
      run(w, a);
  }
  tr__fiber_thread_fini();
  tr__msgcache_attach(NULL);
  tls_worker = NULL;
  return NULL;
}

int tr__sched_start(int nworkers, char *why, size_t len) {
  TR_ASSERT(nworkers >= 1 && nworkers <= TR_MAX_WORKERS);
  tr__rt.nworkers = nworkers;
  snprintf(why, len, "no memory for the workers");
  tr__rt.workers = aligned_alloc(TR_WORKER_ALIGN, sizeof(tr_worker_t) * (size_t)nworkers);
  if (!tr__rt.workers)
    return -TR_ENOMEM;
  memset(tr__rt.workers, 0, sizeof(tr_worker_t) * (size_t)nworkers);
  for (int i = 0; i < nworkers; i++) {
    tr_worker_t *w = &tr__rt.workers[i];
    w->index = i;
    w->steal_from = (unsigned)i;
    ck_ec32_init(&w->ec, 0);
    if (tr__runq_init(&w->runq, TR_RUNQ_CAPACITY) != 0) {
      for (int j = 0; j < i; j++)
        tr__runq_fini(&tr__rt.workers[j].runq);
      free(tr__rt.workers);
      tr__rt.workers = NULL;
      return -TR_ENOMEM;
    }
  }
  int started = 0, err = 0;
  for (; started < nworkers; started++) {
    err = pthread_create(&tr__rt.workers[started].thread, NULL, worker_main,
                         &tr__rt.workers[started]);
    if (err != 0)
      break;
  }
  if (started < nworkers) {
    snprintf(why, len, "pthread_create of worker %d: %s", started, strerror(err));
    tr_store_release(&tr__rt.quit, 1);
    for (int i = 0; i < started; i++) {
      ck_ec32_inc(&tr__rt.workers[i].ec, &ec_mode);
      pthread_join(tr__rt.workers[i].thread, NULL);
    }
    for (int i = 0; i < nworkers; i++)
      tr__runq_fini(&tr__rt.workers[i].runq);
    free(tr__rt.workers);
    tr__rt.workers = NULL;
    return -TR_ENOMEM;
  }
  return 0;
}

void tr__sched_stop(void) {
  tr_store_release(&tr__rt.quit, 1);
  for (int i = 0; i < tr__rt.nworkers; i++)
    ck_ec32_inc(&tr__rt.workers[i].ec, &ec_mode);
  for (int i = 0; i < tr__rt.nworkers; i++)
    pthread_join(tr__rt.workers[i].thread, NULL);
  for (int i = 0; i < tr__rt.nworkers; i++) {
    tr_worker_t *w = &tr__rt.workers[i];
    TR_ASSERT(w->next_slot == NULL && tr__runq_size(&w->runq) == 0);
    tr__runq_fini(&w->runq);
    tr__msgpool_drain(w);
  }
  tr__msgpool_depot_drain();
}
