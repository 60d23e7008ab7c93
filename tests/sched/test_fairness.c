/*
 * Scheduler fairness and liveness: the mechanisms that keep runnable
 * actors from waiting behind others (runtime/sched/sched.c):
 *   - the next slot yields to the run queue after a streak;
 *   - the inject queue (sends from non-worker threads) is not starved;
 *   - a worker stuck in one long turn gives up its next slot to a thief;
 *   - a behaviour sending in a long loop lets the actors it feeds run
 *     (nested turns at send points), so their mailboxes stay short;
 *   - a turn that ends with work left sends the worker to the inject
 *     queue first, and tr__actor_yield ends a turn after its message;
 *   - a task actor queued behind behaviours that send in loops still runs
 *     (their nested turns cannot run it, and must not push it back).
 * Each would show up here as a hang (caught by the timeout) or a count
 * out of bounds.
 */
#include <criterion/criterion.h>
#include <sched.h>
#include <stdint.h>
#include <time.h>

#include <tractor/actor.h>
#include <tractor/task.h>

#include "runtime/actor/actor.h" /* tr__actor_yield */

enum { T_KICK = 1, T_STOP, T_DATA };

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void assert_clean(void) {
  tr_stats_t st;
  tr_stats(&st);
  cr_assert_eq(st.actors_live, 0);
  cr_assert_eq(st.actors_allocated, 0);
  cr_assert_eq(st.msgs_allocated, 0);
}

/* ---- next-slot streak and inject fairness (one worker) ----------------- */

struct pp {
  tr_actor_t *peer;  /* owned */
  tr_actor_t *third; /* owned, may be NULL */
  uint64_t count;
  int *third_ran;
};

static void pp_exit(void *state) {
  struct pp *p = state;
  tr_actor_release(p->peer);
  tr_actor_release(p->third);
}

/* Bounces the message to its peer forever; on T_STOP passes the stop on
 * to the peer and exits (the bounced message may be queued behind the stop
 * and die as a dead letter, so the peer cannot wait for it); also exits
 * when the peer is gone.  On its 10th message it wakes `third` (which then
 * lands behind the exchange in the run queue). */
static void pp_behaviour(void *state, tr_msg_t *m) {
  struct pp *p = state;
  if (m->tag == T_STOP) {
    (void)tr_send_u64(p->peer, T_STOP, 0); /* -TR_ECLOSED if it is gone */
    tr_actor_exit();
    return;
  }
  if (++p->count == 10 && p->third)
    tr_send_u64(p->third, T_KICK, 0);
  if (tr_send(p->peer, m) != 0)
    tr_actor_exit(); /* the peer has exited: the message is a dead letter */
}

struct third {
  tr_actor_t *stop_target; /* owned */
  int ran;
};

static void third_behaviour(void *state, tr_msg_t *m) {
  struct third *t = state;
  (void)m;
  __atomic_store_n(&t->ran, 1, __ATOMIC_RELEASE);
  tr_send_u64(t->stop_target, T_STOP, 0);
  tr_actor_exit();
}

static void third_exit(void *state) { tr_actor_release(((struct third *)state)->stop_target); }

struct streak_ctx {
  struct pp a, b;
  struct third c;
  int via_inject;
};

static int streak_root(void *arg) {
  struct streak_ctx *x = arg;
  tr_spawn_opts_t po = {.name = "pp", .on_exit = pp_exit};
  tr_spawn_opts_t to = {.name = "third", .on_exit = third_exit};
  tr_actor_t *a, *b, *c;
  cr_assert_eq(tr_spawn(pp_behaviour, &x->a, &po, &a), 0);
  cr_assert_eq(tr_spawn(pp_behaviour, &x->b, &po, &b), 0);
  cr_assert_eq(tr_spawn(third_behaviour, &x->c, &to, &c), 0);
  x->a.peer = tr_actor_dup(b);
  x->b.peer = tr_actor_dup(a);
  x->c.stop_target = tr_actor_dup(a);
  if (!x->via_inject)
    x->a.third = tr_actor_dup(c);
  cr_assert_eq(tr_send_u64(a, T_DATA, 0), 0);
  if (x->via_inject)
    cr_assert_eq(tr_send_u64(c, T_KICK, 0), 0); /* from the root thread */
  tr_actor_release(a);
  tr_actor_release(b);
  tr_actor_release(c);
  return 0;
}

/* With one worker, an endless two-actor exchange runs from the next slot;
 * an actor waiting in the run queue must still get a turn. */
Test(fairness, next_slot_streak_yields_to_queue, .timeout = 60) {
  struct streak_ctx x = {0};
  tr_config_t cfg = {.workers = 1};
  cr_assert_eq(tr_run(&cfg, streak_root, &x), 0);
  cr_assert_eq(x.c.ran, 1);
  assert_clean();
}

/* Same, with the third actor woken from the root thread (inject queue). */
Test(fairness, inject_queue_not_starved, .timeout = 60) {
  struct streak_ctx x = {.via_inject = 1};
  tr_config_t cfg = {.workers = 1};
  cr_assert_eq(tr_run(&cfg, streak_root, &x), 0);
  cr_assert_eq(x.c.ran, 1);
  assert_clean();
}

/* ---- stuck worker: its next slot is taken by another worker ------------ */

struct stuck_ctx {
  tr_actor_t *victim; /* owned by the hog */
  int victim_ran;
  int ran_during_hog; /* the victim ran while the hog was still busy */
  double hog_secs;
};

static void victim_behaviour(void *state, tr_msg_t *m) {
  struct stuck_ctx *x = state;
  (void)m;
  __atomic_store_n(&x->victim_ran, 1, __ATOMIC_RELEASE);
  tr_actor_exit();
}

/* Sends one message (the victim lands in this worker's next slot), then
 * computes for up to 20 s without returning to the scheduler. */
static void hog_behaviour(void *state, tr_msg_t *m) {
  struct stuck_ctx *x = state;
  (void)m;
  tr_send_u64(x->victim, T_KICK, 0);
  double t0 = now_s();
  while (!__atomic_load_n(&x->victim_ran, __ATOMIC_ACQUIRE) && now_s() - t0 < 20.0)
    ;
  x->hog_secs = now_s() - t0;
  x->ran_during_hog = __atomic_load_n(&x->victim_ran, __ATOMIC_ACQUIRE);
  tr_actor_release(x->victim);
  tr_actor_exit();
}

static int stuck_root(void *arg) {
  struct stuck_ctx *x = arg;
  tr_actor_t *hog;
  cr_assert_eq(tr_spawn(victim_behaviour, x, NULL, &x->victim), 0);
  cr_assert_eq(tr_spawn(hog_behaviour, x, NULL, &hog), 0);
  cr_assert_eq(tr_send_u64(hog, T_KICK, 0), 0);
  tr_actor_release(hog);
  return 0;
}

Test(fairness, stuck_worker_gives_up_next_slot, .timeout = 60) {
  struct stuck_ctx x = {0};
  tr_config_t cfg = {.workers = 2};
  cr_assert_eq(tr_run(&cfg, stuck_root, &x), 0);
  cr_assert_eq(x.ran_during_hog, 1, "victim waited for the hog (%.1f s)", x.hog_secs);
  assert_clean();
}

/* ---- a long sending loop lets its consumers run -------------------------- */

#define LOOP_N 200000

struct chain_ctx {
  tr_actor_t *first;    /* owned by the producer */
  uint64_t sink_count;  /* atomic: written by the sink */
  uint64_t max_backlog; /* producer: max (sent - reached the sink) */
};

struct stage {
  tr_actor_t *next; /* owned; NULL for the sink */
  struct chain_ctx *x;
};

static void stage_exit(void *state) { tr_actor_release(((struct stage *)state)->next); }

static void stage_behaviour(void *state, tr_msg_t *m) {
  struct stage *s = state;
  if (m->tag == T_STOP) {
    if (s->next)
      tr_send(s->next, m);
    tr_actor_exit();
    return;
  }
  if (s->next) {
    m->u64++;
    tr_send(s->next, m);
  } else {
    __atomic_fetch_add(&s->x->sink_count, 1, __ATOMIC_RELEASE);
  }
}

static void producer_behaviour(void *state, tr_msg_t *m) {
  struct chain_ctx *x = state;
  (void)m;
  for (uint64_t i = 0; i < LOOP_N; i++) {
    uint64_t done = __atomic_load_n(&x->sink_count, __ATOMIC_ACQUIRE);
    if (i - done > x->max_backlog)
      x->max_backlog = i - done;
    tr_send_u64(x->first, T_DATA, i);
  }
  tr_send_u64(x->first, T_STOP, 0);
  tr_actor_release(x->first);
  tr_actor_exit();
}

#define STAGES 4
struct loop_ctx {
  struct chain_ctx x;
  struct stage st[STAGES];
};

static int loop_root(void *arg) {
  struct loop_ctx *l = arg;
  tr_spawn_opts_t so = {.name = "stage", .on_exit = stage_exit};
  tr_actor_t *next = NULL;
  for (int i = STAGES - 1; i >= 0; i--) {
    tr_actor_t *a;
    l->st[i] = (struct stage){.next = next, .x = &l->x};
    cr_assert_eq(tr_spawn(stage_behaviour, &l->st[i], &so, &a), 0);
    next = a; /* the reference moves into the previous stage (or x.first) */
  }
  l->x.first = next;
  tr_actor_t *p;
  cr_assert_eq(tr_spawn(producer_behaviour, &l->x, NULL, &p), 0);
  cr_assert_eq(tr_send_u64(p, T_KICK, 0), 0);
  tr_actor_release(p);
  return 0;
}

/* One worker: without nested turns at send points, the whole loop would
 * run before any stage (backlog = LOOP_N). */
Test(fairness, long_send_loop_lets_consumers_run, .timeout = 120) {
  struct loop_ctx l = {0};
  tr_config_t cfg = {.workers = 1};
  cr_assert_eq(tr_run(&cfg, loop_root, &l), 0);
  cr_assert_eq(l.x.sink_count, LOOP_N);
  cr_assert_lt(l.x.max_backlog, 4096, "backlog reached %lu", (unsigned long)l.x.max_backlog);
  assert_clean();
}

Test(fairness, long_send_loop_two_workers, .timeout = 120) {
  struct loop_ctx l = {0};
  tr_config_t cfg = {.workers = 2};
  cr_assert_eq(tr_run(&cfg, loop_root, &l), 0);
  cr_assert_eq(l.x.sink_count, LOOP_N);
  /* With two workers the stages may all run on the other worker, where
   * four of them can fall behind one producer (more so under TSan): only
   * require that they ran during the loop, not after it. */
  cr_assert_lt(l.x.max_backlog, LOOP_N - 1, "backlog reached %lu", (unsigned long)l.x.max_backlog);
  assert_clean();
}

/* ---- turns that end with work left ---------------------------------------- */

/* Sends itself the message it handles, for ever (counting them), and ends
 * its turn after each one when `yield` (as the channel does after a read
 * budget).  Notes the longest run of its messages handled while the other
 * one (once started) handled none. */
struct busy {
  uint64_t count;     /* atomic */
  struct busy *other; /* NULL: none */
  uint64_t theirs, run, max_run;
  int yield;
};

static void busy_behaviour(void *state, tr_msg_t *m) {
  struct busy *b = state;
  if (m->tag == T_STOP) {
    tr_actor_exit();
    return;
  }
  __atomic_add_fetch(&b->count, 1, __ATOMIC_RELEASE);
  uint64_t theirs = b->other ? __atomic_load_n(&b->other->count, __ATOMIC_ACQUIRE) : 0;
  if (theirs != 0) { /* the other one has started */
    b->run = theirs == b->theirs ? b->run + 1 : 1;
    b->theirs = theirs;
    if (b->run > b->max_run)
      b->max_run = b->run;
  }
  if (tr_send(tr_self(), m) != 0)
    tr_actor_exit();
  if (b->yield)
    tr__actor_yield();
}

#define KICKS 5

struct busy_ctx {
  struct busy a, b;
  uint64_t at_kick[KICKS]; /* a's count just after the root's kick of latecomer i landed */
  uint64_t at_late[KICKS]; /* ... when latecomer i ran (atomic) */
  uint32_t ran[KICKS];     /* atomic: latecomer i ran */
  tr_actor_t *stop[2];     /* owned by the last latecomer */
  int two;                 /* a and b, else a and the latecomers */
};

struct latecomer {
  struct busy_ctx *x;
  int i;
};

/* Notes a's count; the last one stops the busy actors. */
static void latecomer_behaviour(void *state, tr_msg_t *m) {
  struct latecomer *l = state;
  struct busy_ctx *x = l->x;
  (void)m;
  x->at_late[l->i] = __atomic_load_n(&x->a.count, __ATOMIC_ACQUIRE);
  __atomic_store_n(&x->ran[l->i], 1, __ATOMIC_RELEASE);
  if (l->i == KICKS - 1)
    for (int i = 0; i < 2; i++)
      if (x->stop[i]) {
        (void)tr_send_u64(x->stop[i], T_STOP, 0);
        tr_actor_release(x->stop[i]);
      }
  tr_actor_exit();
}

static int busy_root(void *arg) {
  struct busy_ctx *x = arg;
  static struct latecomer lc[KICKS];
  tr_actor_t *late[KICKS];
  cr_assert_eq(tr_spawn(busy_behaviour, &x->a, NULL, &x->stop[0]), 0);
  if (x->two)
    cr_assert_eq(tr_spawn(busy_behaviour, &x->b, NULL, &x->stop[1]), 0);
  for (int i = 0; i < KICKS; i++) {
    lc[i] = (struct latecomer){x, i};
    cr_assert_eq(tr_spawn(latecomer_behaviour, &lc[i], NULL, &late[i]), 0);
  }
  cr_assert_eq(tr_send_u64(x->stop[0], T_DATA, 0), 0);
  if (x->two)
    cr_assert_eq(tr_send_u64(x->stop[1], T_DATA, 0), 0);
  for (int i = 0; i < KICKS; i++) {
    /* Apart by a few thousand messages, so the kicks land at unrelated
     * points of the worker's 61-turn period. */
    uint64_t from = __atomic_load_n(&x->a.count, __ATOMIC_ACQUIRE);
    while (__atomic_load_n(&x->a.count, __ATOMIC_ACQUIRE) < from + 1000 + 997 * (uint64_t)i)
      sched_yield();
    /* From the root thread: the inject queue.  Counted once the send has
     * returned (the latecomer is queued by then): a count taken before it
     * would include however long this thread was off the core meanwhile. */
    cr_assert_eq(tr_send_u64(late[i], T_KICK, 0), 0);
    x->at_kick[i] = __atomic_load_n(&x->a.count, __ATOMIC_ACQUIRE);
    tr_actor_release(late[i]);
    while (!__atomic_load_n(&x->ran[i], __ATOMIC_ACQUIRE))
      sched_yield();
  }
  return 0;
}

/* With one worker, two actors that always have more to do and yield after
 * each message take turns message by message: the rest of a mailbox waits
 * behind the other runnable actors.  Without the yield each turn is a
 * batch: 64 messages in a row while the other waits. */
Test(fairness, a_yield_ends_the_turn_after_the_message, .timeout = 60) {
  struct busy_ctx x = {.a.yield = 1, .b.yield = 1, .two = 1};
  x.a.other = &x.b;
  x.b.other = &x.a;
  tr_config_t cfg = {.workers = 1};
  cr_assert_eq(tr_run(&cfg, busy_root, &x), 0);
  cr_assert_leq(x.a.max_run, 2, "a handled %llu in a row", (unsigned long long)x.a.max_run);
  cr_assert_leq(x.b.max_run, 2, "b handled %llu in a row", (unsigned long long)x.b.max_run);
  assert_clean();
}

/* With one worker, an actor that always has more to do (a batch per turn,
 * no yield) lets an actor woken from another thread run after the turn
 * under way: each of five latecomers, once queued, waits for less than two
 * batches (64 messages each) of the busy actor's.  Before a turn with work
 * left sent the worker to the inject queue first, a latecomer waited up to
 * 61 turns of a batch each (122 to 3,797 messages in 20 runs). */
Test(fairness, a_busy_actor_lets_the_inject_queue_in_after_its_turn, .timeout = 60) {
  struct busy_ctx x = {0};
  tr_config_t cfg = {.workers = 1};
  cr_assert_eq(tr_run(&cfg, busy_root, &x), 0);
  for (int i = 0; i < KICKS; i++) {
    /* The root may read the count after the latecomer ran: then 0. */
    uint64_t waited = x.at_late[i] > x.at_kick[i] ? x.at_late[i] - x.at_kick[i] : 0;
    cr_expect_lt(waited, 2 * 64, "latecomer %d waited for %llu of its messages", i,
                 (unsigned long long)waited);
  }
  assert_clean();
}

/* ---- a task actor behind send loops ----------------------------------------- */

#define PING_ROUNDS 2000
#define LOOPERS 3

/* Answers each message to the actor in its ptr (a task actor waiting for
 * the answer, so alive), and exits on T_STOP. */
static void echo_behaviour(void *state, tr_msg_t *m) {
  (void)state;
  if (m->tag == T_STOP) {
    tr_actor_exit();
    return;
  }
  if (tr_send_u64(m->ptr, T_DATA, m->u64) != 0)
    tr_actor_exit();
}

struct selfping {
  tr_actor_t *echo; /* borrowed */
  uint32_t rounds;  /* atomic: done so far */
};

/* PING_ROUNDS round trips to the echo actor.  Each answer wakes this
 * actor; now and then (the next slot's streak limit) it waits in the run
 * queue, behind the busy actors. */
static int selfping_task(void *arg) {
  struct selfping *s = arg;
  for (int i = 0; i < PING_ROUNDS; i++) {
    tr_msg_t *m;
    if (tr_msg_new(&m) != 0)
      return -1;
    m->tag = T_DATA;
    m->u64 = (uint64_t)i;
    m->ptr = tr_self();
    if (tr_send(s->echo, m) != 0 || tr_recv(&m) != 0)
      return -1;
    tr_msg_free(m);
    __atomic_store_n(&s->rounds, (uint32_t)i + 1, __ATOMIC_RELEASE);
  }
  return 0;
}

struct starve_ctx {
  struct busy b[LOOPERS];
  struct selfping sp;
};

static int starve_root(void *arg) {
  struct starve_ctx *x = arg;
  tr_actor_t *lp[LOOPERS], *t, *e;
  for (int i = 0; i < LOOPERS; i++) {
    cr_assert_eq(tr_spawn(busy_behaviour, &x->b[i], NULL, &lp[i]), 0);
    cr_assert_eq(tr_send_u64(lp[i], T_DATA, 0), 0);
  }
  cr_assert_eq(tr_spawn(echo_behaviour, NULL, NULL, &e), 0);
  x->sp.echo = e;
  cr_assert_eq(tr_spawn_task_actor(selfping_task, &x->sp, NULL, &t), 0);
  double end = now_s() + 20;
  while (__atomic_load_n(&x->sp.rounds, __ATOMIC_ACQUIRE) < PING_ROUNDS && now_s() < end)
    sched_yield();
  for (int i = 0; i < LOOPERS; i++) {
    cr_assert_eq(tr_send_u64(lp[i], T_STOP, 0), 0);
    tr_actor_release(lp[i]);
  }
  if (__atomic_load_n(&x->sp.rounds, __ATOMIC_ACQUIRE) < PING_ROUNDS)
    cr_assert_eq(tr_actor_cancel_soon(t), 0);
  cr_expect_eq(tr_join(t, -1), 0);
  tr_actor_release(t);
  cr_assert_eq(tr_send_u64(e, T_STOP, 0), 0);
  tr_actor_release(e);
  return 0;
}

/* With one worker, three actors that always have more to do (a batch of
 * 64 sends to themselves per turn, so each turn runs nested turns at its
 * 64th send) and a task actor in round trips with a fourth: the nested
 * turns take the run queue's front, and a task actor there cannot run
 * nested.  It must run after the turn under way.  When the nested turns
 * put it at the back instead, the front was that task actor again after
 * every turn, and it never ran (found by a test of the reactor, which hung
 * in 1 run of 7 on two workers). */
Test(fairness, a_task_actor_behind_send_loops_runs, .timeout = 60) {
  struct starve_ctx x = {0};
  tr_config_t cfg = {.workers = 1};
  cr_assert_eq(tr_run(&cfg, starve_root, &x), 0);
  cr_assert_eq(x.sp.rounds, PING_ROUNDS, "the task actor ran %u of %d rounds in 20 s",
               x.sp.rounds, PING_ROUNDS);
  assert_clean();
}
