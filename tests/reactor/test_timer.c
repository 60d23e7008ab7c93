/*
 * The reactor's timers through the public API (include/tractor/time.h)
 * and the internal absolute-deadline entry point (tr__timer_post):
 * tr_now, send_after accuracy and ordering, cancellation (also racing with
 * firing, and from several threads), dead letters, timers pending at
 * shutdown, idle CPU, and calls without a runtime.
 *
 * As in tests/actor/test_actor.c, code running under tr_run records
 * failures with CHECK() and the test asserts after tr_run has returned
 * (Criterion's assertions are not safe on worker threads); every run ends
 * with checks that no actor object and no message is left allocated.
 *
 * Timing windows are generous (the CI machine is a loaded 2-core VM):
 * nothing may arrive before its deadline, and everything must arrive within
 * 50 ms after it.  Accuracy figures are logged (cr_log_info) rather than
 * asserted tightly.
 *
 * Under TSan (TR_TSAN) the 100k-timer test arms 10k and the cancel race
 * 1k timers (every access is instrumented; the protocol under test is the
 * same), and the lateness window is wider (see LATE_MAX).
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <tractor/actor.h>
#include <tractor/time.h>

#include "runtime/reactor/reactor.h"

#define TEST_TIMEOUT 120.0
#define SEC (1000000000LL)
#define MSEC (1000000LL)
/* How late a timer may arrive before a test calls it a failure.  TSan
 * builds check correctness, not timing: the first race report TSan matches
 * against a suppression (the Concurrency Kit entries in tools/tsan.supp) makes it
 * load debug information to symbolize the stack, on whichever worker
 * thread hit it, which stalls that worker for 200-400 ms. */
#ifdef TR_TSAN
#define LATE_MAX (2 * SEC)
#else
#define LATE_MAX (50 * MSEC)
#endif

/* ---- shared helpers --------------------------------------------------- */

#include "tests/support/check.h"

static void st(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
static void inc(uint64_t *p) { __atomic_fetch_add(p, 1, __ATOMIC_ACQ_REL); }

static void sleep_ns(int64_t ns) {
  struct timespec ts = {.tv_sec = ns / SEC, .tv_nsec = ns % SEC};
  while (nanosleep(&ts, &ts) != 0) {
  }
}

/* Waits (polling every 100 us) until *p >= v or timeout_ns passes: a wait
 * for a condition, not a delay.  Returns 1 when the condition holds. */
static int wait_at_least(const uint64_t *p, uint64_t v, int64_t timeout_ns) {
  int64_t end = tr_now() + timeout_ns;
  while (ld(p) < v) {
    if (tr_now() > end)
      return 0;
    sleep_ns(100000);
  }
  return 1;
}

/* Waits until no timer is pending.  Returns 1 when that happened. */
static int wait_no_timers(int64_t timeout_ns) {
  int64_t end = tr_now() + timeout_ns;
  while (tr__timer_pending() != 0) {
    if (tr_now() > end)
      return 0;
    sleep_ns(100000);
  }
  return 1;
}

static void assert_clean(tr_stats_t *s) {
  tr_stats(s);
  cr_assert_eq(s->actors_live, 0, "actors_live = %llu", (unsigned long long)s->actors_live);
  cr_assert_eq(s->actors_allocated, 0, "actors_allocated = %llu",
               (unsigned long long)s->actors_allocated);
  cr_assert_eq(s->msgs_allocated, 0, "msgs_allocated = %llu",
               (unsigned long long)s->msgs_allocated);
  cr_assert_eq(tr__timer_pending(), 0, "timers still pending after tr_run");
}

static void run_ok(tr_root_fn root, void *arg, tr_stats_t *s) {
  tr_config_t cfg = {.workers = 2};
  unsetenv("TR_WORKERS");
  int rc = tr_run(&cfg, root, arg);
  cr_assert_eq(rc, 0, "tr_run returned %d (%s)", rc, tr_strerror(rc));
  assert_no_fails();
  assert_clean(s);
}

/* xorshift64: a fixed-seed generator, so failures reproduce. */
static uint64_t rnd(uint64_t *s) {
  uint64_t x = *s;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return *s = x;
}

enum { TAG_DATA = 1, TAG_STOP, TAG_NEVER, TAG_CANCEL, TAG_TICK };

static tr_msg_t *new_msg(uint32_t tag, uint64_t v) {
  tr_msg_t *m = NULL;
  CHECK(tr_msg_new(&m) == 0);
  if (m) {
    m->tag = tag;
    m->u64 = v;
  }
  return m;
}

/* tr_send_after with a fresh (tag, v) message; frees it on failure. */
static int after(tr_actor_t *to, uint32_t tag, uint64_t v, int64_t delay, uint64_t *id) {
  tr_msg_t *m = new_msg(tag, v);
  if (!m)
    return -TR_ENOMEM;
  int rc = tr_send_after(to, m, delay, id);
  if (rc != 0)
    tr_msg_free(m);
  return rc;
}

/* tr__timer_post (absolute deadline) with a fresh message. */
static int post_abs(tr_actor_t *to, uint32_t tag, uint64_t v, int64_t deadline) {
  tr_msg_t *m = new_msg(tag, v);
  if (!m)
    return -TR_ENOMEM;
  int rc = tr__timer_post(deadline, to, m, NULL);
  if (rc != 0)
    tr_msg_free(m);
  return rc;
}

/* ---- the recorder: an actor that logs what it receives ---------------- */

/* TAG_DATA: appends (u64, arrival time) and counts the index u64 in
 * `seen` when there is one; exits after `expect` of them (0 = never).
 * TAG_NEVER: counted in `never` (a cancelled timer's message).
 * TAG_STOP: exits.  Only the actor writes vals/at/seen; root reads them
 * after tr_join or tr_run (which order the accesses); the counters are
 * atomics because root polls them while the actor runs. */
struct rec {
  uint64_t n;
  uint64_t never;
  uint64_t expect;
  size_t cap;
  uint64_t *vals;
  int64_t *at;
  uint8_t *seen;
  size_t nseen;
};

static void rec_init(struct rec *r, size_t cap, uint64_t expect) {
  memset(r, 0, sizeof(*r));
  r->cap = cap;
  r->expect = expect;
  r->vals = calloc(cap ? cap : 1, sizeof(*r->vals));
  r->at = calloc(cap ? cap : 1, sizeof(*r->at));
  cr_assert(r->vals && r->at);
}

static void rec_fini(struct rec *r) {
  free(r->vals);
  free(r->at);
  free(r->seen);
}

static void rec_beh(void *state, tr_msg_t *m) {
  struct rec *r = state;
  int64_t now = tr_now();
  switch (m->tag) {
  case TAG_STOP:
    CHECK(tr_actor_exit() == 0);
    return;
  case TAG_NEVER:
    inc(&r->never);
    return;
  default: {
    uint64_t i = ld(&r->n);
    if (i < r->cap) {
      r->vals[i] = m->u64;
      r->at[i] = now;
    }
    if (r->seen) {
      CHECK(m->u64 < r->nseen);
      if (m->u64 < r->nseen && r->seen[m->u64] < 255)
        r->seen[m->u64]++;
    }
    st(&r->n, i + 1);
    if (r->expect && i + 1 == r->expect)
      CHECK(tr_actor_exit() == 0);
  }
  }
}

static tr_actor_t *spawn_rec(struct rec *r) {
  tr_actor_t *a = NULL;
  CHECK(tr_spawn(rec_beh, r, NULL, &a) == 0);
  return a;
}

/* ---- tr_now -------------------------------------------------------------- */

static void *now_thread(void *arg) {
  int *ok = arg;
  int64_t prev = tr_now();
  for (int i = 0; i < 100000; i++) {
    int64_t t = tr_now();
    if (t < prev)
      *ok = 0;
    prev = t;
  }
  return NULL;
}

Test(timer, now_monotonic_and_advances, .timeout = TEST_TIMEOUT) {
  /* No runtime needed. */
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  int64_t mono = (int64_t)ts.tv_sec * SEC + ts.tv_nsec;
  int64_t t0 = tr_now();
  cr_assert(t0 >= mono && t0 - mono < SEC, "tr_now is not CLOCK_MONOTONIC");

  int ok[2] = {1, 1};
  pthread_t th[2];
  for (int i = 0; i < 2; i++)
    cr_assert_eq(pthread_create(&th[i], NULL, now_thread, &ok[i]), 0);
  for (int i = 0; i < 2; i++)
    pthread_join(th[i], NULL);
  cr_assert(ok[0] && ok[1], "tr_now went backwards");

  int64_t a = tr_now();
  sleep_ns(5 * MSEC);
  int64_t b = tr_now();
  cr_assert(b - a >= 5 * MSEC, "5 ms sleep advanced tr_now by %lld ns", (long long)(b - a));
}

/* ---- accuracy ------------------------------------------------------------ */

static const int64_t acc_delays[] = {1 * MSEC, 5 * MSEC, 20 * MSEC, 50 * MSEC};
#define NACC ((int)(sizeof(acc_delays) / sizeof(acc_delays[0])))
#define NTICKS 20

struct acc_ctx {
  struct rec r;
  int64_t armed_lo[NACC], armed_hi[NACC];
  /* The ticker: re-arms the message it handles NTICKS times. */
  int64_t tick_armed; /* actor-only until tr_run returns */
  int64_t late[NTICKS];
  uint64_t ticks;
};

static void ticker_beh(void *state, tr_msg_t *m) {
  struct acc_ctx *c = state;
  int64_t now = tr_now();
  if (m->tag == TAG_TICK && c->ticks > 0)
    c->late[c->ticks - 1] = now - (c->tick_armed + 10 * MSEC);
  if (c->ticks == NTICKS) {
    CHECK(tr_actor_exit() == 0);
    return;
  }
  c->ticks++;
  c->tick_armed = tr_now();
  /* Re-arm the message being handled: ownership passes to the timer, so
   * the runtime must not free it when this behaviour returns. */
  m->tag = TAG_TICK;
  CHECK(tr_send_after(tr_self(), m, 10 * MSEC, NULL) == 0);
}

static int acc_root(void *arg) {
  struct acc_ctx *c = arg;
  tr_actor_t *a = spawn_rec(&c->r);
  tr_actor_t *t = NULL;
  CHECK(tr_spawn(ticker_beh, c, NULL, &t) == 0);
  if (!a || !t)
    return 1;
  for (int i = 0; i < NACC; i++) {
    c->armed_lo[i] = tr_now();
    CHECK(after(a, TAG_DATA, (uint64_t)i, acc_delays[i], NULL) == 0);
    c->armed_hi[i] = tr_now();
  }
  CHECK(tr_send_u64(t, TAG_DATA, 0) == 0);
  CHECK(tr_join(a, 30 * SEC) == 0);
  CHECK(tr_join(t, 30 * SEC) == 0);
  tr_actor_release(a);
  tr_actor_release(t);
  return 0;
}

Test(timer, send_after_accuracy, .timeout = TEST_TIMEOUT) {
  static struct acc_ctx c;
  rec_init(&c.r, NACC, NACC);
  tr_stats_t s;
  run_ok(acc_root, &c, &s);
  cr_assert_eq(c.r.n, NACC);
  for (int k = 0; k < NACC; k++) {
    int i = (int)c.r.vals[k];
    cr_assert(i >= 0 && i < NACC);
    int64_t early = c.r.at[k] - (c.armed_lo[i] + acc_delays[i]);
    int64_t late = c.r.at[k] - (c.armed_hi[i] + acc_delays[i]);
    cr_log_info("send_after %lld ms: arrived %lld us after the deadline",
                (long long)(acc_delays[i] / MSEC), (long long)(late / 1000));
    cr_assert(early >= 0, "%lld ms timer arrived %lld ns early", (long long)(acc_delays[i] / MSEC),
              (long long)-early);
    cr_assert(late <= LATE_MAX, "%lld ms timer arrived %lld ms late",
              (long long)(acc_delays[i] / MSEC), (long long)(late / MSEC));
  }
  /* Arrival order follows the deadlines. */
  for (int k = 0; k < NACC; k++)
    cr_assert_eq(c.r.vals[k], (uint64_t)k);
  cr_assert_eq(c.ticks, NTICKS);
  int64_t sorted[NTICKS];
  for (int k = 0; k < NTICKS; k++) {
    cr_assert(c.late[k] >= 0, "tick %d arrived %lld ns early", k, (long long)-c.late[k]);
    cr_assert(c.late[k] <= LATE_MAX, "tick %d arrived %lld ms late", k,
              (long long)(c.late[k] / MSEC));
    sorted[k] = c.late[k];
  }
  for (int i = 1; i < NTICKS; i++)
    for (int j = i; j > 0 && sorted[j] < sorted[j - 1]; j--) {
      int64_t x = sorted[j];
      sorted[j] = sorted[j - 1];
      sorted[j - 1] = x;
    }
  cr_log_info("10 ms re-armed ticks: late by min %lld us, median %lld us, max %lld us",
              (long long)(sorted[0] / 1000), (long long)(sorted[NTICKS / 2] / 1000),
              (long long)(sorted[NTICKS - 1] / 1000));
  rec_fini(&c.r);
}

/* ---- order --------------------------------------------------------------- */

#define NORDER 1000
#define NTIES 50

struct order_ctx {
  struct rec r, ties;
  int64_t ties_deadline;
  int64_t base, armed_by;
};

static int order_root(void *arg) {
  struct order_ctx *c = arg;
  tr_actor_t *a = spawn_rec(&c->r);
  tr_actor_t *b = spawn_rec(&c->ties);
  if (!a || !b)
    return 1;
  uint64_t seed = 0x9E3779B97F4A7C15ull;
  /* Far enough ahead that arming all of them takes less time (checked:
   * a timer armed after its deadline fires at once, out of order). */
  int64_t base = tr_now() + 50 * MSEC;
  for (int i = 0; i < NORDER; i++) {
    int64_t dl = base + (int64_t)(rnd(&seed) % (uint64_t)(100 * MSEC));
    CHECK(post_abs(a, TAG_DATA, (uint64_t)dl, dl) == 0);
  }
  /* Equal deadlines fire in arming order. */
  c->ties_deadline = base + 30 * MSEC;
  for (int i = 0; i < NTIES; i++)
    CHECK(post_abs(b, TAG_DATA, (uint64_t)i, c->ties_deadline) == 0);
  c->armed_by = tr_now();
  c->base = base;
  CHECK(tr_join(a, 30 * SEC) == 0);
  CHECK(tr_join(b, 30 * SEC) == 0);
  tr_actor_release(a);
  tr_actor_release(b);
  return 0;
}

Test(timer, firing_order_matches_deadlines, .timeout = TEST_TIMEOUT) {
  static struct order_ctx c;
  rec_init(&c.r, NORDER, NORDER);
  rec_init(&c.ties, NTIES, NTIES);
  tr_stats_t s;
  run_ok(order_root, &c, &s);
  cr_assert(c.armed_by < c.base, "arming took too long to test ordering (%lld ms)",
            (long long)((c.armed_by - c.base) / MSEC + 50));
  cr_assert_eq(c.r.n, NORDER);
  int64_t worst = 0;
  for (int k = 0; k < NORDER; k++) {
    int64_t dl = (int64_t)c.r.vals[k];
    if (k > 0)
      cr_assert(c.r.vals[k] >= c.r.vals[k - 1], "message %d (deadline %lld) arrived after %lld", k,
                (long long)dl, (long long)c.r.vals[k - 1]);
    cr_assert(c.r.at[k] >= dl, "message %d arrived %lld ns early", k, (long long)(dl - c.r.at[k]));
    if (c.r.at[k] - dl > worst)
      worst = c.r.at[k] - dl;
  }
  cr_log_info("1000 random timers: worst lateness %lld us", (long long)(worst / 1000));
  cr_assert(worst <= LATE_MAX, "worst lateness %lld ms", (long long)(worst / MSEC));
  cr_assert_eq(c.ties.n, NTIES);
  for (int k = 0; k < NTIES; k++) {
    cr_assert_eq(c.ties.vals[k], (uint64_t)k, "tie %d arrived as %llu", k,
                 (unsigned long long)c.ties.vals[k]);
    cr_assert(c.ties.at[k] >= c.ties_deadline);
  }
  cr_assert_eq(s.dead_letters, 0);
  rec_fini(&c.r);
  rec_fini(&c.ties);
}

/* ---- cancel -------------------------------------------------------------- */

struct cancel_ctx {
  struct rec r;
  uint64_t id_cancelled;
  int rc_first, rc_double, rc_zero, rc_unknown, rc_far;
  size_t pending_before, pending_after;
  uint64_t id_fired;
  int rc_after_fire;
  /* A timer cancelled from a behaviour (a worker thread). */
  uint64_t worker_rc_set;
  int worker_rc;
};

static void canceller_beh(void *state, tr_msg_t *m) {
  struct cancel_ctx *c = state;
  if (m->tag == TAG_CANCEL) {
    c->worker_rc = tr_timer_cancel(m->u64);
    st(&c->worker_rc_set, 1);
  }
  CHECK(tr_actor_exit() == 0);
}

static int cancel_root(void *arg) {
  struct cancel_ctx *c = arg;
  tr_actor_t *a = spawn_rec(&c->r);
  tr_actor_t *k = NULL;
  CHECK(tr_spawn(canceller_beh, c, NULL, &k) == 0);
  if (!a || !k)
    return 1;
  c->pending_before = tr__timer_pending();
  CHECK(after(a, TAG_NEVER, 0, 20 * MSEC, &c->id_cancelled) == 0);
  CHECK(c->id_cancelled != 0);
  CHECK(tr__timer_pending() == c->pending_before + 1);
  c->rc_first = tr_timer_cancel(c->id_cancelled);
  c->rc_double = tr_timer_cancel(c->id_cancelled);
  c->rc_zero = tr_timer_cancel(0);
  c->rc_unknown = tr_timer_cancel(UINT64_MAX);
  c->rc_far = tr_timer_cancel(c->id_cancelled + 1000000);
  c->pending_after = tr__timer_pending();

  /* Cancelled from a worker thread. */
  uint64_t id2 = 0;
  CHECK(after(a, TAG_NEVER, 1, 25 * MSEC, &id2) == 0);
  CHECK(tr_send_u64(k, TAG_CANCEL, id2) == 0);
  CHECK(wait_at_least(&c->worker_rc_set, 1, 10 * SEC));

  /* A timer that fired can no longer be cancelled. */
  CHECK(after(a, TAG_DATA, 7, 1 * MSEC, &c->id_fired) == 0);
  CHECK(c->id_fired > id2 && id2 > c->id_cancelled); /* never reused */
  CHECK(wait_at_least(&c->r.n, 1, 10 * SEC));
  c->rc_after_fire = tr_timer_cancel(c->id_fired);

  /* Wait well past the cancelled deadlines before stopping the recorder:
   * its exit is itself a timer, so it orders after them. */
  CHECK(after(a, TAG_STOP, 0, 60 * MSEC, NULL) == 0);
  CHECK(tr_join(a, 30 * SEC) == 0);
  CHECK(tr_join(k, 30 * SEC) == 0);
  tr_actor_release(a);
  tr_actor_release(k);
  return 0;
}

Test(timer, cancel, .timeout = TEST_TIMEOUT) {
  static struct cancel_ctx c;
  rec_init(&c.r, 4, 0);
  tr_stats_t s;
  run_ok(cancel_root, &c, &s);
  cr_assert_eq(c.rc_first, 0, "cancel of a pending timer: %d", c.rc_first);
  cr_assert_eq(c.rc_double, -TR_ENOTFOUND, "double cancel: %d", c.rc_double);
  cr_assert_eq(c.rc_zero, -TR_ENOTFOUND);
  cr_assert_eq(c.rc_unknown, -TR_ENOTFOUND);
  cr_assert_eq(c.rc_far, -TR_ENOTFOUND);
  cr_assert_eq(c.pending_after, c.pending_before);
  cr_assert_eq(c.worker_rc, 0, "cancel from a behaviour: %d", c.worker_rc);
  cr_assert_eq(c.rc_after_fire, -TR_ENOTFOUND, "cancel after fire: %d", c.rc_after_fire);
  cr_assert_eq(c.r.never, 0, "%llu cancelled timers delivered", (unsigned long long)c.r.never);
  cr_assert_eq(c.r.n, 1);
  cr_assert_eq(c.r.vals[0], 7);
  cr_assert_eq(s.dead_letters, 0);
  rec_fini(&c.r);
}

/* Cancels racing with firing: every timer is either cancelled (cancel
 * returned 0, never delivered) or delivered exactly once (cancel returned
 * -TR_ENOTFOUND), never both, never neither. */
#ifdef TR_TSAN
#define NRACE 1000
#else
#define NRACE 5000
#endif

struct race_ctx {
  struct rec r;
  int rc[NRACE];
  uint64_t cancelled;
};

static int race_root(void *arg) {
  struct race_ctx *c = arg;
  tr_actor_t *a = spawn_rec(&c->r);
  if (!a)
    return 1;
  uint64_t seed = 42;
  uint64_t ids[64];
  for (int i = 0; i < NRACE; i += 64) {
    int n = NRACE - i < 64 ? NRACE - i : 64;
    for (int j = 0; j < n; j++)
      CHECK(after(a, TAG_DATA, (uint64_t)(i + j), (int64_t)(rnd(&seed) % 200000), &ids[j]) == 0);
    /* Let some of them fire, then cancel all: some are still pending. */
    sleep_ns((int64_t)(rnd(&seed) % 150000));
    for (int j = 0; j < n; j++) {
      c->rc[i + j] = tr_timer_cancel(ids[j]);
      if (c->rc[i + j] == 0)
        c->cancelled++;
    }
  }
  CHECK(wait_no_timers(10 * SEC));
  CHECK(wait_at_least(&c->r.n, NRACE - c->cancelled, 10 * SEC));
  CHECK(tr_send_u64(a, TAG_STOP, 0) == 0);
  CHECK(tr_join(a, 30 * SEC) == 0);
  tr_actor_release(a);
  return 0;
}

Test(timer, cancel_races_with_fire, .timeout = TEST_TIMEOUT) {
  static struct race_ctx c;
  rec_init(&c.r, 0, 0);
  c.r.nseen = NRACE;
  c.r.seen = calloc(NRACE, 1);
  tr_stats_t s;
  run_ok(race_root, &c, &s);
  for (int i = 0; i < NRACE; i++) {
    cr_assert(c.rc[i] == 0 || c.rc[i] == -TR_ENOTFOUND, "cancel %d: %d", i, c.rc[i]);
    cr_assert_eq(c.r.seen[i], c.rc[i] == 0 ? 0 : 1, "timer %d: cancel %d, delivered %d times", i,
                 c.rc[i], c.r.seen[i]);
  }
  cr_assert_eq(c.r.n, NRACE - c.cancelled);
  cr_log_info("cancel race: %llu of %d cancelled before firing", (unsigned long long)c.cancelled,
              NRACE);
  rec_fini(&c.r);
}

/* ---- dead letters and full mailboxes ------------------------------------- */

struct dead_ctx {
  uint64_t handled;
  uint64_t dead_seen;
};

static void oneshot_beh(void *state, tr_msg_t *m) {
  struct dead_ctx *c = state;
  (void)m;
  inc(&c->handled);
  CHECK(tr_actor_exit() == 0);
}

static int dead_root(void *arg) {
  struct dead_ctx *c = arg;
  tr_actor_t *a = NULL;
  CHECK(tr_spawn(oneshot_beh, c, NULL, &a) == 0);
  if (!a)
    return 1;
  CHECK(after(a, TAG_DATA, 1, 30 * MSEC, NULL) == 0);
  CHECK(tr_send_u64(a, TAG_DATA, 0) == 0);
  CHECK(tr_join(a, 10 * SEC) == 0);
  /* The timer's own reference keeps the exited actor's memory alive. */
  tr_actor_release(a);
  CHECK(wait_no_timers(10 * SEC));
  /* The message is pushed (and dead-lettered) just after the timer leaves
   * the heap: wait for the count. */
  int64_t end = tr_now() + 10 * SEC;
  tr_stats_t s;
  do {
    tr_stats(&s);
    if (s.dead_letters >= 1)
      break;
    sleep_ns(100000);
  } while (tr_now() < end);
  st(&c->dead_seen, s.dead_letters);
  return 0;
}

Test(timer, timer_to_exited_actor_is_dead_letter, .timeout = TEST_TIMEOUT) {
  static struct dead_ctx c;
  tr_stats_t s;
  run_ok(dead_root, &c, &s);
  cr_assert_eq(c.handled, 1);
  cr_assert_eq(c.dead_seen, 1);
  cr_assert_eq(s.dead_letters, 1, "dead letters %llu", (unsigned long long)s.dead_letters);
  cr_assert_eq(s.msgs_handled, 1);
}

/* A timer's message is delivered even to a full mailbox, and the mailbox's
 * slot count stays right (afterwards tr_send is accepted again). */
struct limit_ctx {
  uint64_t in_gate, gate;
  uint64_t handled;
  int rc_full, rc_after;
};

static void limit_beh(void *state, tr_msg_t *m) {
  struct limit_ctx *c = state;
  inc(&c->handled);
  if (m->tag == TAG_NEVER) {
    /* Hold the turn until root has filled the mailbox. */
    st(&c->in_gate, 1);
    CHECK(wait_at_least(&c->gate, 1, 10 * SEC));
  } else if (m->tag == TAG_STOP) {
    CHECK(tr_actor_exit() == 0);
  }
}

static int limit_root(void *arg) {
  struct limit_ctx *c = arg;
  tr_spawn_opts_t o = {.name = "limited", .mailbox_limit = 1};
  tr_actor_t *a = NULL;
  CHECK(tr_spawn(limit_beh, c, &o, &a) == 0);
  if (!a)
    return 1;
  CHECK(tr_send_u64(a, TAG_NEVER, 0) == 0);
  CHECK(wait_at_least(&c->in_gate, 1, 10 * SEC));
  CHECK(tr_send_u64(a, TAG_DATA, 1) == 0); /* the mailbox is full now */
  c->rc_full = tr_send_u64(a, TAG_DATA, 2);
  CHECK(after(a, TAG_DATA, 3, 0, NULL) == 0);
  CHECK(wait_no_timers(10 * SEC));
  st(&c->gate, 1);
  CHECK(wait_at_least(&c->handled, 3, 10 * SEC));
  c->rc_after = tr_send_u64(a, TAG_STOP, 0);
  CHECK(tr_join(a, 10 * SEC) == 0);
  tr_actor_release(a);
  return 0;
}

Test(timer, timer_ignores_mailbox_limit, .timeout = TEST_TIMEOUT) {
  static struct limit_ctx c;
  tr_stats_t s;
  run_ok(limit_root, &c, &s);
  cr_assert_eq(c.rc_full, -TR_EAGAIN);
  cr_assert_eq(c.rc_after, 0, "tr_send after the timer's delivery: %d", c.rc_after);
  cr_assert_eq(c.handled, 4);
  cr_assert_eq(s.dead_letters, 0);
}

/* ---- shutdown with pending timers ---------------------------------------- */

#define NPENDING 10000

struct shut_ctx {
  struct rec r;
  int rc_after_shutdown;
  uint64_t id_after_shutdown;
  size_t pending;
};

static int shut_root(void *arg) {
  struct shut_ctx *c = arg;
  tr_actor_t *a = spawn_rec(&c->r);
  if (!a)
    return 1;
  for (int i = 0; i < NPENDING; i++)
    CHECK(after(a, TAG_NEVER, (uint64_t)i, 3600 * SEC, NULL) == 0);
  c->pending = tr__timer_pending();
  CHECK(tr_shutdown() == 0);
  c->id_after_shutdown = 99;
  c->rc_after_shutdown = after(a, TAG_NEVER, 0, MSEC, &c->id_after_shutdown);
  tr_actor_release(a);
  return 0;
}

Test(timer, pending_timers_at_shutdown, .timeout = TEST_TIMEOUT) {
  static struct shut_ctx c;
  rec_init(&c.r, 0, 0);
  tr_stats_t s;
  int64_t t0 = tr_now();
  run_ok(shut_root, &c, &s);
  int64_t took = tr_now() - t0;
  cr_log_info("tr_run with %d timers pending at shutdown took %lld ms", NPENDING,
              (long long)(took / MSEC));
  cr_assert(took < 5 * SEC, "tr_run took %lld ms", (long long)(took / MSEC));
  cr_assert_eq(c.pending, NPENDING);
  cr_assert_eq(c.rc_after_shutdown, -TR_ENORUNTIME);
  cr_assert_eq(c.id_after_shutdown, 0);
  cr_assert_eq(c.r.never, 0);
  /* Cancelled by the runtime's end, not dead letters. */
  cr_assert_eq(s.dead_letters, 0, "dead letters %llu", (unsigned long long)s.dead_letters);
  rec_fini(&c.r);
}

/* ---- many timers from several threads ------------------------------------ */

#ifdef TR_TSAN
#define NCONC 10000
#else
#define NCONC 100000
#endif
#define NTHREADS 4
#define CANCEL_EVERY 7

struct conc_ctx {
  struct rec r;
  tr_actor_t *to;
  int rc[NCONC]; /* cancel results; 1 = not cancelled */
  uint64_t arm_fail;
  uint64_t cancelled;
};

struct conc_arg {
  struct conc_ctx *c;
  int index;
};

static void *conc_thread(void *p) {
  struct conc_arg *ca = p;
  struct conc_ctx *c = ca->c;
  uint64_t seed = 0x1234567ull + (uint64_t)ca->index;
  int per = NCONC / NTHREADS;
  for (int i = ca->index * per; i < (ca->index + 1) * per; i++) {
    uint64_t id = 0;
    int64_t delay = (int64_t)(rnd(&seed) % (uint64_t)(50 * MSEC));
    c->rc[i] = 1;
    if (after(c->to, TAG_DATA, (uint64_t)i, delay, &id) != 0) {
      inc(&c->arm_fail);
      continue;
    }
    if (i % CANCEL_EVERY == 0) {
      c->rc[i] = tr_timer_cancel(id);
      if (c->rc[i] == 0)
        inc(&c->cancelled);
    }
  }
  return NULL;
}

static int conc_root(void *arg) {
  struct conc_ctx *c = arg;
  c->to = spawn_rec(&c->r);
  if (!c->to)
    return 1;
  pthread_t th[NTHREADS];
  struct conc_arg args[NTHREADS];
  for (int i = 0; i < NTHREADS; i++) {
    args[i] = (struct conc_arg){c, i};
    CHECK(pthread_create(&th[i], NULL, conc_thread, &args[i]) == 0);
  }
  for (int i = 0; i < NTHREADS; i++)
    pthread_join(th[i], NULL);
  CHECK(ld(&c->arm_fail) == 0);
  CHECK(wait_no_timers(30 * SEC));
  CHECK(wait_at_least(&c->r.n, NCONC - ld(&c->cancelled), 30 * SEC));
  CHECK(tr_send_u64(c->to, TAG_STOP, 0) == 0);
  CHECK(tr_join(c->to, 30 * SEC) == 0);
  tr_actor_release(c->to);
  return 0;
}

Test(timer, many_timers_from_threads_fire_once, .timeout = TEST_TIMEOUT) {
  static struct conc_ctx c;
  rec_init(&c.r, 0, 0);
  c.r.nseen = NCONC;
  c.r.seen = calloc(NCONC, 1);
  tr_stats_t s;
  run_ok(conc_root, &c, &s);
  for (int i = 0; i < NCONC; i++) {
    int want = c.rc[i] == 0 ? 0 : 1;
    cr_assert(c.rc[i] == 0 || c.rc[i] == 1 || c.rc[i] == -TR_ENOTFOUND, "cancel %d: %d", i,
              c.rc[i]);
    cr_assert_eq(c.r.seen[i], want, "timer %d delivered %d times (cancel %d)", i, c.r.seen[i],
                 c.rc[i]);
  }
  cr_assert_eq(c.r.n, NCONC - c.cancelled);
  cr_assert_eq(s.dead_letters, 0);
  cr_log_info("%d timers from %d threads, %llu cancelled", NCONC, NTHREADS,
              (unsigned long long)c.cancelled);
  rec_fini(&c.r);
}

/* ---- idle ---------------------------------------------------------------- */

static int64_t cpu_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (int64_t)ts.tv_sec * SEC + ts.tv_nsec;
}

struct idle_ctx {
  struct rec r;
  struct dead_ctx d;
  int64_t cpu_empty, cpu_far;
};

static int idle_root(void *arg) {
  struct idle_ctx *c = arg;
  tr_actor_t *once = NULL;
  CHECK(tr_spawn(oneshot_beh, &c->d, NULL, &once) == 0);
  tr_actor_t *a = spawn_rec(&c->r);
  if (!once || !a)
    return 1;
  /* The reactor has armed, fired and disarmed once before measuring. */
  CHECK(after(once, TAG_DATA, 0, MSEC, NULL) == 0);
  CHECK(tr_join(once, 10 * SEC) == 0);
  tr_actor_release(once);
  CHECK(wait_no_timers(10 * SEC));
  sleep_ns(20 * MSEC); /* let the workers finish spinning and park */

  int64_t t0 = cpu_ns();
  sleep_ns(300 * MSEC);
  c->cpu_empty = cpu_ns() - t0;

  /* A far-away timer must not cause wake-ups either. */
  uint64_t id = 0;
  CHECK(after(a, TAG_NEVER, 0, 3600 * SEC, &id) == 0);
  sleep_ns(20 * MSEC);
  t0 = cpu_ns();
  sleep_ns(300 * MSEC);
  c->cpu_far = cpu_ns() - t0;
  CHECK(tr_timer_cancel(id) == 0);
  CHECK(tr_send_u64(a, TAG_STOP, 0) == 0);
  CHECK(tr_join(a, 10 * SEC) == 0);
  tr_actor_release(a);
  return 0;
}

Test(timer, idle_runtime_uses_no_cpu, .timeout = TEST_TIMEOUT) {
  static struct idle_ctx c;
  rec_init(&c.r, 0, 0);
  tr_stats_t s;
  run_ok(idle_root, &c, &s);
  cr_log_info("idle 300 ms: %lld us CPU with no timers, %lld us with one far timer",
              (long long)(c.cpu_empty / 1000), (long long)(c.cpu_far / 1000));
  cr_assert(c.cpu_empty < 30 * MSEC, "idle with no timers used %lld ms CPU",
            (long long)(c.cpu_empty / MSEC));
  cr_assert(c.cpu_far < 30 * MSEC, "idle with a far timer used %lld ms CPU",
            (long long)(c.cpu_far / MSEC));
  cr_assert_eq(c.r.never, 0);
  rec_fini(&c.r);
}

/* ---- arguments and no runtime -------------------------------------------- */

struct args_ctx {
  int rc_null_to, rc_null_msg;
  uint64_t id_null_to;
};

static int args_root(void *arg) {
  struct args_ctx *c = arg;
  tr_msg_t *m = new_msg(TAG_DATA, 0);
  c->id_null_to = 99;
  c->rc_null_to = tr_send_after(NULL, m, MSEC, &c->id_null_to);
  tr_msg_free(m); /* the caller keeps msg on failure */
  tr_actor_t *a = NULL;
  struct rec r;
  memset(&r, 0, sizeof(r));
  CHECK(tr_spawn(rec_beh, &r, NULL, &a) == 0);
  if (!a)
    return 1;
  c->rc_null_msg = tr_send_after(a, NULL, MSEC, NULL);
  CHECK(tr_send_u64(a, TAG_STOP, 0) == 0);
  CHECK(tr_join(a, 10 * SEC) == 0);
  tr_actor_release(a);
  return 0;
}

static int empty_root(void *arg) {
  (void)arg;
  return 0;
}

Test(timer, invalid_arguments_and_no_runtime, .timeout = TEST_TIMEOUT) {
  /* Before any runtime: `to` is never dereferenced, so any pointer does. */
  static uint64_t not_an_actor[16];
  tr_actor_t *fake = (tr_actor_t *)(void *)not_an_actor;
  tr_msg_t *m = NULL;
  cr_assert_eq(tr_msg_new(&m), 0);
  uint64_t id = 99;
  cr_assert_eq(tr_send_after(fake, m, MSEC, &id), -TR_ENORUNTIME);
  cr_assert_eq(id, 0);
  cr_assert_eq(tr__timer_post(tr_now(), fake, m, NULL), -TR_ENORUNTIME);
  cr_assert_eq(tr_timer_cancel(1), -TR_ENOTFOUND);
  cr_assert_eq(tr__timer_pending(), 0);

  static struct args_ctx c;
  tr_stats_t s;
  run_ok(args_root, &c, &s);
  cr_assert_eq(c.rc_null_to, -TR_EINVAL);
  cr_assert_eq(c.id_null_to, 0);
  cr_assert_eq(c.rc_null_msg, -TR_EINVAL);

  /* After a runtime has come and gone. */
  run_ok(empty_root, NULL, &s);
  cr_assert_eq(tr_send_after(fake, m, 0, &id), -TR_ENORUNTIME);
  cr_assert_eq(tr_timer_cancel(1), -TR_ENOTFOUND);
  tr_msg_free(m);
  for (int i = 0; i < 16; i++)
    cr_assert_eq(not_an_actor[i], 0, "the fake actor was written to");
}
