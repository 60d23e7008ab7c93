/*
 * Behaviour actors through the public API (include/tractor/actor.h):
 * dead letters, tr_self / tr_actor_exit / tr_join rules, zero-copy
 * forwarding, tr_msg_take and tr_msg_free inside behaviours, reference
 * counting, on_exit, argument checking, and sends from non-worker threads.
 *
 * As in tests/sched/test_sched.c, code running under tr_run records
 * failures with CHECK() and the test asserts after tr_run has returned;
 * every run ends with checks that no actor object and no message is left
 * allocated (ASan's leak checker covers payload buffers as well).
 *
 * Under TSan (TR_TSAN) only refcount_across_threads is scaled down (5000
 * vs 20000 dup/release rounds per thread): every dup and release is an
 * instrumented atomic, and the other tests here are small already.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <dirent.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <tractor/actor.h>

#define TEST_TIMEOUT 120.0
#define SEC (1000000000LL)
#define MSEC (1000000LL)

/* ---- shared helpers --------------------------------------------------- */

#include "tests/support/check.h"

static void inc(uint64_t *p) { __atomic_fetch_add(p, 1, __ATOMIC_ACQ_REL); }
static void set_flag(uint64_t *p) { __atomic_store_n(p, 1, __ATOMIC_RELEASE); }

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * SEC + ts.tv_nsec;
}

static void sleep_ns(int64_t ns) {
  struct timespec ts = {.tv_sec = ns / SEC, .tv_nsec = ns % SEC};
  while (nanosleep(&ts, &ts) != 0) {
  }
}

/* Waits (polling every 100 us) until *p >= v or timeout_ns passes: a wait
 * for a condition, not a delay.  Returns 1 when the condition holds. */
static int wait_at_least(const uint64_t *p, uint64_t v, int64_t timeout_ns) {
  int64_t end = now_ns() + timeout_ns;
  while (ld(p) < v) {
    if (now_ns() > end)
      return 0;
    sleep_ns(100000);
  }
  return 1;
}

static void assert_clean(tr_stats_t *st) {
  tr_stats(st);
  cr_assert_eq(st->actors_live, 0, "actors_live = %llu", (unsigned long long)st->actors_live);
  cr_assert_eq(st->actors_allocated, 0, "actors_allocated = %llu",
               (unsigned long long)st->actors_allocated);
  cr_assert_eq(st->msgs_allocated, 0, "msgs_allocated = %llu",
               (unsigned long long)st->msgs_allocated);
  cr_assert_eq(st->actors_spawned, st->actors_exited, "spawned %llu != exited %llu",
               (unsigned long long)st->actors_spawned, (unsigned long long)st->actors_exited);
}

static void run_ok(int workers, tr_root_fn root, void *arg, tr_stats_t *st) {
  tr_config_t cfg = {.workers = workers};
  unsetenv("TR_WORKERS");
  int rc = tr_run(&cfg, root, arg);
  cr_assert_eq(rc, 0, "tr_run returned %d (%s)", rc, tr_strerror(rc));
  assert_no_fails();
  assert_clean(st);
}

/* Payload helpers: a string buffer and its check. */
static tr_buf_t *str_buf(const char *s) {
  tr_buf_t *b = NULL;
  CHECK(tr_buf_from_str(s, &b) == 0);
  return b;
}

static int buf_is(const tr_buf_t *b, const char *s) {
  return b && tr_buf_len(b) == strlen(s) && memcmp(tr_buf_data(b), s, strlen(s)) == 0;
}

/* A message with tag, u64, optional payload and from (both owned). */
static tr_msg_t *new_msg(uint32_t tag, uint64_t v, tr_buf_t *payload, tr_actor_t *from) {
  tr_msg_t *m = NULL;
  CHECK(tr_msg_new(&m) == 0);
  if (!m) {
    tr_buf_release(payload);
    tr_actor_release(from);
    return NULL;
  }
  m->tag = tag;
  m->u64 = v;
  m->payload = payload;
  m->from = from;
  return m;
}

enum {
  TAG_DATA = 1,
  TAG_GO,
  TAG_GATE,
  TAG_EXIT,
  TAG_STASH,
  TAG_FREE,
  TAG_FLUSH,
  TAG_PING,
  TAG_END
};

static void oneshot_beh(void *state, tr_msg_t *m) {
  uint64_t *handled = state;
  (void)m;
  if (handled)
    inc(handled);
  CHECK(tr_actor_exit() == 0);
}

/* ---- dead letters ------------------------------------------------------ */

enum { DL_BEHIND = 10 };

struct dl_ctx {
  uint64_t in_gate;
  uint64_t gate;
  uint64_t exit_called;
  uint64_t handled;
  uint64_t after_exit;
  int behind_rc[DL_BEHIND];
  int late_rc[3];
  int exited_before;
  int exited_after;
};

static void dl_beh(void *state, tr_msg_t *m) {
  struct dl_ctx *c = state;
  inc(&c->handled);
  if (ld(&c->exit_called))
    inc(&c->after_exit); /* a message handled after tr_actor_exit */
  switch (m->tag) {
  case TAG_GATE:
    /* Stay in this turn until root has queued everything behind EXIT. */
    set_flag(&c->in_gate);
    CHECK(wait_at_least(&c->gate, 1, 20 * SEC));
    break;
  case TAG_EXIT:
    set_flag(&c->exit_called);
    CHECK(tr_actor_exit() == 0);
    break;
  default:
    break;
  }
}

static int dl_root(void *arg) {
  struct dl_ctx *c = arg;
  tr_actor_t *a, *other;
  int rc = tr_spawn(dl_beh, c, NULL, &a);
  CHECK(rc == 0);
  if (rc != 0)
    return 1;
  rc = tr_spawn(dl_beh, c, NULL, &other);
  CHECK(rc == 0);
  if (rc != 0)
    return 1;
  CHECK(tr_send_u64(a, TAG_GATE, 0) == 0);
  CHECK(wait_at_least(&c->in_gate, 1, 20 * SEC));
  /* a is inside its GATE turn: everything below is queued behind EXIT. */
  CHECK(tr_send_u64(a, TAG_EXIT, 0) == 0);
  for (int i = 0; i < DL_BEHIND - 2; i++)
    c->behind_rc[i] = tr_send_u64(a, TAG_DATA, (uint64_t)i);
  /* Two queued messages owning a payload and a from reference: one to
   * another actor, one to a itself (a queued reference cycle that only
   * dropping dead letters at exit breaks). */
  c->behind_rc[DL_BEHIND - 2] =
      tr_send(a, new_msg(TAG_DATA, 100, str_buf("dead 1"), tr_actor_dup(other)));
  c->behind_rc[DL_BEHIND - 1] =
      tr_send(a, new_msg(TAG_DATA, 101, str_buf("dead 2"), tr_actor_dup(a)));
  c->exited_before = tr_actor_exited(a);
  set_flag(&c->gate);
  CHECK(tr_join(a, 20 * SEC) == 0);
  c->exited_after = tr_actor_exited(a);
  /* Sends after the exit: -TR_ECLOSED, message freed by the runtime. */
  c->late_rc[0] = tr_send_u64(a, TAG_DATA, 200);
  c->late_rc[1] = tr_send(a, new_msg(TAG_DATA, 201, str_buf("late"), tr_actor_dup(other)));
  c->late_rc[2] = tr_send(a, new_msg(TAG_DATA, 202, NULL, tr_actor_dup(a)));
  tr_actor_release(a);
  CHECK(tr_send_u64(other, TAG_EXIT, 0) == 0);
  CHECK(tr_join(other, 20 * SEC) == 0);
  tr_actor_release(other);
  return 0;
}

Test(actor, dead_letters, .timeout = TEST_TIMEOUT) {
  static struct dl_ctx c;
  tr_stats_t st;
  run_ok(2, dl_root, &c, &st);
  for (int i = 0; i < DL_BEHIND; i++)
    cr_assert_eq(c.behind_rc[i], 0, "send %d behind EXIT returned %d", i, c.behind_rc[i]);
  for (int i = 0; i < 3; i++)
    cr_assert_eq(c.late_rc[i], -TR_ECLOSED, "send %d after exit returned %d", i, c.late_rc[i]);
  cr_assert_eq(c.exited_before, 0);
  cr_assert_eq(c.exited_after, 1);
  cr_assert_eq(c.after_exit, 1, "%llu messages handled after tr_actor_exit (1 is other's EXIT)",
               (unsigned long long)c.after_exit);
  /* a: GATE, EXIT; other: EXIT. */
  cr_assert_eq(c.handled, 3, "handled %llu", (unsigned long long)c.handled);
  cr_assert_eq(st.msgs_handled, 3);
  cr_assert_eq(st.dead_letters, DL_BEHIND + 3, "dead letters %llu, expected %d",
               (unsigned long long)st.dead_letters, DL_BEHIND + 3);
}

/* ---- tr_self, tr_actor_exit, tr_join rules ------------------------------ */

struct self_ctx {
  tr_actor_t *ref; /* written by root before the first send */
  uint64_t self_ok;
  uint64_t join_self_rc_ok;
  uint64_t join_other_rc_ok;
  uint64_t exit_twice_ok;
  uint64_t name_ok;
  uint64_t thread_ok;
  tr_actor_t *other;
  int timed_rc;
  int poll_rc;
  int64_t timed_ns;
  int rejoin_rc;
  int exited_before;
  int exited_after;
  int root_exit_rc;
  int root_self_null;
  const char *default_name;
  uint64_t ids_distinct;
};

static void self_beh(void *state, tr_msg_t *m) {
  struct self_ctx *c = state;
  (void)m;
  if (tr_self() == c->ref)
    set_flag(&c->self_ok);
  if (tr_join(tr_self(), 0) == -TR_EPERM)
    set_flag(&c->join_self_rc_ok);
  /* Must refuse at once, not block the worker. */
  if (tr_join(c->other, -1) == -TR_EPERM)
    set_flag(&c->join_other_rc_ok);
  if (strcmp(tr_actor_name(tr_self()), "selfy") == 0)
    set_flag(&c->name_ok);
  if (tr_actor_exit() == 0 && tr_actor_exit() == 0)
    set_flag(&c->exit_twice_ok);
}

static void *self_thread(void *arg) {
  struct self_ctx *c = arg;
  int ok = tr_self() == NULL && tr_actor_exit() == -TR_EPERM &&
           tr_join(c->other, 1 * MSEC) == -TR_ETIMEDOUT;
  if (ok)
    set_flag(&c->thread_ok);
  return NULL;
}

static int self_root(void *arg) {
  struct self_ctx *c = arg;
  c->root_self_null = tr_self() == NULL;
  c->root_exit_rc = tr_actor_exit();
  tr_spawn_opts_t opts = {.name = "selfy"};
  int rc = tr_spawn(self_beh, c, &opts, &c->ref);
  CHECK(rc == 0);
  if (rc != 0)
    return 1;
  rc = tr_spawn(oneshot_beh, NULL, NULL, &c->other); /* idle until the end */
  CHECK(rc == 0);
  if (rc != 0)
    return 1;
  c->default_name = tr_actor_name(c->other);
  c->ids_distinct = tr_actor_id(c->ref) != tr_actor_id(c->other);
  c->exited_before = tr_actor_exited(c->ref);
  int64_t t0 = now_ns();
  c->timed_rc = tr_join(c->ref, 20 * MSEC); /* live and idle */
  c->timed_ns = now_ns() - t0;
  c->poll_rc = tr_join(c->ref, 0);
  pthread_t th;
  CHECK(pthread_create(&th, NULL, self_thread, c) == 0);
  pthread_join(th, NULL);
  CHECK(tr_send_u64(c->ref, TAG_DATA, 0) == 0);
  CHECK(tr_join(c->ref, -1) == 0);
  c->exited_after = tr_actor_exited(c->ref);
  c->rejoin_rc = tr_join(c->ref, 0);
  CHECK(tr_send_u64(c->other, TAG_EXIT, 0) == 0);
  CHECK(tr_join(c->other, -1) == 0);
  tr_actor_release(c->ref);
  tr_actor_release(c->other);
  return 0;
}

Test(actor, self_exit_join_rules, .timeout = TEST_TIMEOUT) {
  static struct self_ctx c;
  tr_stats_t st;
  run_ok(2, self_root, &c, &st);
  cr_assert(c.root_self_null, "tr_self() in root is not NULL");
  cr_assert_eq(c.root_exit_rc, -TR_EPERM, "tr_actor_exit in root: %d", c.root_exit_rc);
  cr_assert(c.self_ok, "tr_self() in the behaviour is not the spawned ref");
  cr_assert(c.join_self_rc_ok, "tr_join(self) in a behaviour is not -TR_EPERM");
  cr_assert(c.join_other_rc_ok, "tr_join(other, -1) in a behaviour is not -TR_EPERM");
  cr_assert(c.name_ok, "tr_actor_name is not the spawn name");
  cr_assert(c.exit_twice_ok, "tr_actor_exit twice in a behaviour did not return 0, 0");
  cr_assert(c.thread_ok, "tr_self/tr_actor_exit/tr_join wrong on a root-started pthread");
  cr_assert_str_eq(c.default_name, "actor");
  cr_assert(c.ids_distinct, "two actors have the same id");
  cr_assert_eq(c.timed_rc, -TR_ETIMEDOUT, "tr_join(live, 20 ms): %d", c.timed_rc);
  cr_assert_geq(c.timed_ns, 20 * MSEC - MSEC / 2, "tr_join(20 ms) returned after %lld ns",
                (long long)c.timed_ns);
  cr_assert_lt(c.timed_ns, 10 * SEC);
  cr_assert_eq(c.poll_rc, -TR_ETIMEDOUT, "tr_join(live, 0): %d", c.poll_rc);
  cr_assert_eq(c.exited_before, 0);
  cr_assert_eq(c.exited_after, 1);
  cr_assert_eq(c.rejoin_rc, 0, "tr_join on an exited actor: %d", c.rejoin_rc);
  cr_assert_eq(st.msgs_handled, 2);
}

/* ---- names are copied at spawn ---------------------------------------- */

struct name_ctx {
  uint64_t checked;
  char seen_heap[32], seen_stack[32]; /* tr_actor_name inside the behaviour */
  char after_heap[32], after_stack[32];
};

static void name_beh(void *state, tr_msg_t *m) {
  struct name_ctx *c = state;
  (void)m;
  const char *n = tr_actor_name(tr_self());
  snprintf(strncmp(n, "heap", 4) == 0 ? c->seen_heap : c->seen_stack, 32, "%s", n);
  inc(&c->checked);
  CHECK(tr_actor_exit() == 0);
}

/* Spawns an actor named from a stack buffer that the caller overwrites
 * right after the call (a name computed in a loop, say). */
static tr_actor_t *spawn_stack_named(struct name_ctx *c) {
  char buf[32];
  snprintf(buf, sizeof buf, "stack-%d", 8);
  tr_spawn_opts_t o = {.name = buf};
  tr_actor_t *a = NULL;
  CHECK(tr_spawn(name_beh, c, &o, &a) == 0);
  memset(buf, 'X', sizeof buf - 1);
  buf[sizeof buf - 1] = '\0';
  __asm__ volatile("" : : "r"(buf) : "memory"); /* the overwrite happens */
  return a;
}

static int name_root(void *arg) {
  struct name_ctx *c = arg;
  char *heap = strdup("heap-7"); /* freed at once: ASan sees any later read */
  tr_spawn_opts_t o = {.name = heap};
  tr_actor_t *h = NULL;
  CHECK(heap && tr_spawn(name_beh, c, &o, &h) == 0);
  free(heap);
  tr_actor_t *st = spawn_stack_named(c);
  if (h)
    snprintf(c->after_heap, sizeof c->after_heap, "%s", tr_actor_name(h));
  if (st)
    snprintf(c->after_stack, sizeof c->after_stack, "%s", tr_actor_name(st));
  CHECK(h && tr_send_u64(h, TAG_DATA, 0) == 0);
  CHECK(st && tr_send_u64(st, TAG_DATA, 0) == 0);
  CHECK(h && tr_join(h, -1) == 0);
  CHECK(st && tr_join(st, -1) == 0);
  tr_actor_release(h);
  tr_actor_release(st);
  return 0;
}

/* tr_spawn copies opts->name: the caller's buffer may be freed or reused
 * as soon as tr_spawn returns (it used to be borrowed for the actor's
 * life, and the name then read freed memory or another string). */
Test(actor, spawn_copies_the_name, .timeout = TEST_TIMEOUT) {
  static struct name_ctx c;
  tr_stats_t st;
  run_ok(2, name_root, &c, &st);
  cr_assert_eq(c.checked, 2);
  cr_assert_str_eq(c.after_heap, "heap-7");
  cr_assert_str_eq(c.after_stack, "stack-8");
  cr_assert_str_eq(c.seen_heap, "heap-7");
  cr_assert_str_eq(c.seen_stack, "stack-8");
}

/* ---- uids across runs ----------------------------------------------------- */

struct uid_run {
  uint8_t uuid[2][16];
  uint64_t id[2];
};

static void exit_beh(void *state, tr_msg_t *m) {
  (void)state;
  (void)m;
  CHECK(tr_actor_exit() == 0);
}

static int uid_root(void *arg) {
  struct uid_run *r = arg;
  for (int k = 0; k < 2; k++) {
    tr_actor_t *a;
    CHECK(tr_spawn(exit_beh, NULL, NULL, &a) == 0);
    tr_actor_uuid(a, r->uuid[k]);
    r->id[k] = tr_actor_id(a);
    CHECK(tr_send_u64(a, 1, 0) == 0);
    tr_actor_release(a);
  }
  return 0;
}

/* actor.h: a uuid is unique among the actors of every process, and an id
 * is never reused in the process: also when it runs the runtime again
 * (each run counted from 1, so run 2's first actor had run 1's uuid). */
Test(actor, ids_and_uuids_are_not_reused_by_a_second_run, .timeout = TEST_TIMEOUT) {
  static struct uid_run r[3];
  tr_stats_t st;
  for (int i = 0; i < 3; i++)
    run_ok(2, uid_root, &r[i], &st);
  for (int i = 0; i < 6; i++)
    for (int j = i + 1; j < 6; j++) {
      const struct uid_run *a = &r[i / 2], *b = &r[j / 2];
      cr_assert(a->id[i % 2] != b->id[j % 2], "actors %d and %d: id %llx", i, j,
                (unsigned long long)a->id[i % 2]);
      cr_assert(memcmp(a->uuid[i % 2], b->uuid[j % 2], 16) != 0, "actors %d and %d share a uuid",
                i, j);
    }
}

/* ---- zero-copy forwarding through a chain ------------------------------- */

enum { CHAIN_N = 100, CHAIN_MSGS = 100 };

struct chain_ctx;
struct chain_node {
  struct chain_ctx *c;
  tr_actor_t *next; /* own reference; NULL for the last node */
};

struct chain_ctx {
  struct chain_node node[CHAIN_N];
  tr_actor_t *origin;
  /* last-node private */
  uint64_t data_seen;
  uint64_t in_order;
  uint64_t all_ok;
};

/* cid carries the message's own address, set by root: every hop checks
 * that it got the very same object (no copy). */
static void chain_beh(void *state, tr_msg_t *m) {
  struct chain_node *n = state;
  struct chain_ctx *c = n->c;
  CHECK(m->cid == (uint64_t)(uintptr_t)m);
  if (m->tag == TAG_DATA)
    m->u64 += 1000000; /* hop counter in the upper digits */
  if (n->next) {
    int tag = (int)m->tag;
    CHECK(tr_send(n->next, m) == 0); /* forward: ownership passes on */
    if (tag == TAG_END)
      CHECK(tr_actor_exit() == 0);
    return;
  }
  if (m->tag == TAG_DATA) {
    uint64_t seq = m->u64 % 1000000, hops = m->u64 / 1000000;
    if (seq == c->data_seen)
      c->in_order++;
    c->data_seen++;
    if (hops == CHAIN_N && buf_is(m->payload, "zero copy") && m->from == c->origin &&
        strcmp(tr_actor_name(m->from), "origin") == 0)
      c->all_ok++;
  } else {
    CHECK(m->tag == TAG_END);
    CHECK(tr_actor_exit() == 0);
  }
  /* Returning frees m, with its payload and from references. */
}

static void chain_exit(void *state) {
  struct chain_node *n = state;
  tr_actor_release(n->next);
  n->next = NULL;
}

static int chain_root(void *arg) {
  struct chain_ctx *c = arg;
  tr_spawn_opts_t opts = {.name = "chain", .on_exit = chain_exit};
  tr_spawn_opts_t oopts = {.name = "origin"};
  int rc = tr_spawn(oneshot_beh, NULL, &oopts, &c->origin);
  CHECK(rc == 0);
  if (rc != 0)
    return 1;
  tr_actor_t *next = NULL, *last = NULL;
  for (int i = CHAIN_N - 1; i >= 0; i--) {
    tr_actor_t *a;
    c->node[i] = (struct chain_node){.c = c, .next = next}; /* takes next's ref */
    rc = tr_spawn(chain_beh, &c->node[i], &opts, &a);
    CHECK(rc == 0);
    if (rc != 0)
      return 1;
    if (i == CHAIN_N - 1)
      last = tr_actor_dup(a);
    next = a;
  }
  tr_actor_t *first = next;
  for (uint64_t k = 0; k < CHAIN_MSGS; k++) {
    tr_msg_t *m = new_msg(TAG_DATA, k, str_buf("zero copy"), tr_actor_dup(c->origin));
    m->cid = (uint64_t)(uintptr_t)m;
    CHECK(tr_send(first, m) == 0);
  }
  tr_msg_t *end = new_msg(TAG_END, 0, NULL, NULL);
  end->cid = (uint64_t)(uintptr_t)end;
  CHECK(tr_send(first, end) == 0);
  tr_actor_release(first);
  CHECK(tr_join(last, -1) == 0);
  tr_actor_release(last);
  CHECK(tr_send_u64(c->origin, TAG_EXIT, 0) == 0);
  CHECK(tr_join(c->origin, -1) == 0);
  tr_actor_release(c->origin);
  return 0;
}

Test(actor, forward_zero_copy_chain, .timeout = TEST_TIMEOUT) {
  static struct chain_ctx c;
  tr_stats_t st;
  run_ok(4, chain_root, &c, &st);
  cr_assert_eq(c.data_seen, CHAIN_MSGS);
  cr_assert_eq(c.in_order, CHAIN_MSGS, "only %llu in order", (unsigned long long)c.in_order);
  cr_assert_eq(c.all_ok, CHAIN_MSGS, "%llu messages arrived intact", (unsigned long long)c.all_ok);
  cr_assert_eq(st.msgs_handled, (uint64_t)(CHAIN_MSGS + 1) * CHAIN_N + 1);
  cr_assert_eq(st.dead_letters, 0);
}

/* ---- tr_msg_take, tr_msg_free of the current message --------------------- */

struct stash_ctx {
  tr_actor_t *sink;   /* stasher's own reference to the sink */
  tr_msg_t *stash[4]; /* stasher-private */
  int nstash;
  uint64_t stash_exit_freed;
  /* sink-private */
  uint64_t sink_got;
  uint64_t sink_ok;
};

static void stash_beh(void *state, tr_msg_t *m) {
  struct stash_ctx *c = state;
  switch (m->tag) {
  case TAG_STASH:
    tr_msg_take(m);
    CHECK(c->nstash < 4);
    if (c->nstash < 4)
      c->stash[c->nstash++] = m;
    else
      tr_msg_free(m);
    break;
  case TAG_FREE:
    tr_msg_free(m); /* the message being handled, with payload and from */
    break;
  case TAG_FLUSH:
    /* Messages taken in earlier turns, sent now, oldest first. */
    for (int i = 0; i < c->nstash; i++)
      CHECK(tr_send(c->sink, c->stash[i]) == 0);
    c->nstash = 0;
    break;
  case TAG_EXIT:
    CHECK(tr_actor_exit() == 0);
    break;
  default:
    CHECK(0 && "unexpected tag");
  }
}

static void stash_exit(void *state) {
  struct stash_ctx *c = state;
  /* Still stashed at exit: ours to free. */
  for (int i = 0; i < c->nstash; i++) {
    tr_msg_free(c->stash[i]);
    inc(&c->stash_exit_freed);
  }
  c->nstash = 0;
  tr_actor_release(c->sink);
  c->sink = NULL;
}

static void sink_beh(void *state, tr_msg_t *m) {
  struct stash_ctx *c = state;
  c->sink_got++;
  if (m->tag == TAG_STASH && m->u64 == c->sink_got &&
      buf_is(m->payload, c->sink_got == 1 ? "one" : "two") && (c->sink_got == 2 || m->from))
    c->sink_ok++;
  if (c->sink_got == 2)
    CHECK(tr_actor_exit() == 0);
}

static int stash_root(void *arg) {
  struct stash_ctx *c = arg;
  tr_actor_t *a, *sink;
  int rc = tr_spawn(sink_beh, c, NULL, &sink);
  CHECK(rc == 0);
  if (rc != 0)
    return 1;
  c->sink = tr_actor_dup(sink);
  tr_spawn_opts_t opts = {.name = "stasher", .on_exit = stash_exit};
  rc = tr_spawn(stash_beh, c, &opts, &a);
  CHECK(rc == 0);
  if (rc != 0)
    return 1;
  CHECK(tr_send(a, new_msg(TAG_STASH, 1, str_buf("one"), tr_actor_dup(sink))) == 0);
  CHECK(tr_send(a, new_msg(TAG_STASH, 2, str_buf("two"), NULL)) == 0);
  CHECK(tr_send(a, new_msg(TAG_FREE, 0, str_buf("freed"), tr_actor_dup(a))) == 0);
  CHECK(tr_send(a, new_msg(TAG_FREE, 0, NULL, tr_actor_dup(sink))) == 0);
  CHECK(tr_send_u64(a, TAG_FLUSH, 0) == 0);
  CHECK(tr_send(a, new_msg(TAG_STASH, 3, str_buf("three"), tr_actor_dup(a))) == 0);
  CHECK(tr_send_u64(a, TAG_EXIT, 0) == 0);
  CHECK(tr_join(a, -1) == 0);
  CHECK(tr_join(sink, -1) == 0);
  tr_actor_release(a);
  tr_actor_release(sink);
  return 0;
}

Test(actor, take_stash_and_free_current, .timeout = TEST_TIMEOUT) {
  static struct stash_ctx c;
  tr_stats_t st;
  run_ok(2, stash_root, &c, &st);
  cr_assert_eq(c.sink_got, 2);
  cr_assert_eq(c.sink_ok, 2, "stashed messages arrived altered");
  cr_assert_eq(c.stash_exit_freed, 1);
  /* stasher: 3 STASH, 2 FREE, FLUSH, EXIT; sink: 2. */
  cr_assert_eq(st.msgs_handled, 9, "handled %llu", (unsigned long long)st.msgs_handled);
  cr_assert_eq(st.dead_letters, 0);
}

/* Sending the current message back to oneself from inside the behaviour
 * (forwarding to self) hands it to the next turn. */
struct reself_ctx {
  uint64_t rounds;
  uint64_t same;
};

static void reself_beh(void *state, tr_msg_t *m) {
  struct reself_ctx *c = state;
  if (m->cid == (uint64_t)(uintptr_t)m && buf_is(m->payload, "again"))
    c->same++;
  if (++c->rounds < 1000)
    CHECK(tr_send(tr_self(), m) == 0);
  else
    CHECK(tr_actor_exit() == 0);
}

static int reself_root(void *arg) {
  tr_actor_t *a;
  int rc = tr_spawn(reself_beh, arg, NULL, &a);
  CHECK(rc == 0);
  if (rc != 0)
    return 1;
  tr_msg_t *m = new_msg(TAG_DATA, 0, str_buf("again"), tr_actor_dup(a));
  m->cid = (uint64_t)(uintptr_t)m;
  CHECK(tr_send(a, m) == 0);
  CHECK(tr_join(a, -1) == 0);
  tr_actor_release(a);
  return 0;
}

Test(actor, forward_current_to_self, .timeout = TEST_TIMEOUT) {
  static struct reself_ctx c;
  tr_stats_t st;
  run_ok(2, reself_root, &c, &st);
  cr_assert_eq(c.rounds, 1000);
  cr_assert_eq(c.same, 1000);
  cr_assert_eq(st.msgs_handled, 1000);
}

/* Request/reply through m->from, allocated inside behaviours. */
enum { PP_ROUNDS = 10000 };

struct pp_ctx {
  tr_actor_t *pong; /* pinger's own reference */
  uint64_t pings;   /* ponger-private */
  uint64_t replies; /* pinger-private */
};

static void pong_beh(void *state, tr_msg_t *m) {
  struct pp_ctx *c = state;
  if (m->tag == TAG_EXIT) {
    CHECK(tr_actor_exit() == 0);
    return;
  }
  c->pings++;
  CHECK(m->from != NULL);
  if (m->from)
    CHECK(tr_send(m->from, new_msg(TAG_DATA, m->u64 + 1, NULL, NULL)) == 0);
}

static void ping_beh(void *state, tr_msg_t *m) {
  struct pp_ctx *c = state;
  if (m->tag == TAG_DATA) {
    CHECK(m->u64 == c->replies * 2 + 1);
    c->replies++;
  }
  if (c->replies < PP_ROUNDS) {
    CHECK(tr_send(c->pong, new_msg(TAG_PING, c->replies * 2, NULL, tr_actor_dup(tr_self()))) == 0);
  } else {
    CHECK(tr_send_u64(c->pong, TAG_EXIT, 0) == 0);
    CHECK(tr_actor_exit() == 0);
  }
}

static void ping_exit(void *state) {
  struct pp_ctx *c = state;
  tr_actor_release(c->pong);
  c->pong = NULL;
}

static int pp_root(void *arg) {
  struct pp_ctx *c = arg;
  tr_actor_t *ping, *pong;
  int rc = tr_spawn(pong_beh, c, NULL, &pong);
  CHECK(rc == 0);
  if (rc != 0)
    return 1;
  c->pong = pong; /* handed to the pinger: root keeps no reference */
  tr_spawn_opts_t opts = {.on_exit = ping_exit};
  rc = tr_spawn(ping_beh, c, &opts, &ping);
  CHECK(rc == 0);
  if (rc != 0)
    return 1;
  CHECK(tr_send_u64(ping, TAG_GO, 0) == 0);
  tr_actor_release(ping);
  return 0;
}

Test(actor, reply_through_from, .timeout = TEST_TIMEOUT) {
  static struct pp_ctx c;
  tr_stats_t st;
  run_ok(2, pp_root, &c, &st);
  cr_assert_eq(c.pings, PP_ROUNDS);
  cr_assert_eq(c.replies, PP_ROUNDS);
  cr_assert_eq(st.dead_letters, 0);
}

/* ---- reference counting -------------------------------------------------- */

#ifdef TR_TSAN
#define RC_ITERS 5000u
#else
#define RC_ITERS 20000u
#endif
enum { RC_THREADS = 4 };

struct rc_ctx {
  tr_actor_t *a;
  tr_actor_t *moved; /* the last reference, handed to another thread */
  uint64_t pings;    /* actor-private */
  uint64_t dup_same;
  uint64_t release_go;
  tr_stats_t live_held, exited_held, thread_held, released;
  int name_after_exit_ok;
};

static void rc_beh(void *state, tr_msg_t *m) {
  struct rc_ctx *c = state;
  if (m->tag == TAG_EXIT)
    CHECK(tr_actor_exit() == 0);
  else
    c->pings++;
}

static void *rc_thread(void *arg) {
  struct rc_ctx *c = arg;
  for (uint32_t i = 0; i < RC_ITERS; i++) {
    tr_actor_t *d = tr_actor_dup(c->a);
    if (d == c->a)
      inc(&c->dup_same);
    if (i % 4 == 0)
      CHECK(tr_send_u64(d, TAG_PING, i) == 0);
    tr_actor_release(d);
  }
  return NULL;
}

/* Holds the last reference, released when root says so. */
static void *rc_last_thread(void *arg) {
  struct rc_ctx *c = arg;
  CHECK(wait_at_least(&c->release_go, 1, 20 * SEC));
  tr_actor_release(c->moved);
  return NULL;
}

static int exit_settled(const tr_stats_t *st) {
  return st->actors_exited == 1 && st->actors_live == 0;
}

static int all_freed(const tr_stats_t *st) { return st->actors_allocated == 0; }

/* Polls tr_stats until pred holds or timeout_ns passes; *st gets the last
 * snapshot.  Returns 1 when pred held. */
static int wait_stats(tr_stats_t *st, int (*pred)(const tr_stats_t *), int64_t timeout_ns) {
  int64_t end = now_ns() + timeout_ns;
  for (;;) {
    tr_stats(st);
    if (pred(st))
      return 1;
    if (now_ns() > end)
      return 0;
    sleep_ns(100000);
  }
}

static int rc_root(void *arg) {
  struct rc_ctx *c = arg;
  int rc = tr_spawn(rc_beh, c, NULL, &c->a);
  CHECK(rc == 0);
  if (rc != 0)
    return 1;
  pthread_t th[RC_THREADS];
  for (int i = 0; i < RC_THREADS; i++)
    CHECK(pthread_create(&th[i], NULL, rc_thread, c) == 0);
  for (int i = 0; i < RC_THREADS; i++)
    pthread_join(th[i], NULL);
  tr_stats(&c->live_held);
  CHECK(tr_send_u64(c->a, TAG_EXIT, 0) == 0);
  CHECK(tr_join(c->a, -1) == 0);
  /* tr_join returns once the actor is marked exited; the runtime finishes
   * the exit (on_exit, counters, dropping the actor's own reference) just
   * after, on the worker.  Wait for the counters to settle. */
  CHECK(wait_stats(&c->exited_held, exit_settled, 10 * SEC));
  /* Memory of an exited actor lives while a reference does. */
  c->name_after_exit_ok = tr_actor_exited(c->a) == 1 && tr_actor_name(c->a) != NULL;
  /* Move the last reference to another thread. */
  c->moved = tr_actor_dup(c->a);
  tr_actor_release(c->a);
  c->a = NULL;
  pthread_t last;
  CHECK(pthread_create(&last, NULL, rc_last_thread, c) == 0);
  tr_stats(&c->thread_held);
  set_flag(&c->release_go);
  pthread_join(last, NULL);
  /* Usually immediate; if the worker still held the actor's own reference
   * when the thread released, the worker frees it. */
  CHECK(wait_stats(&c->released, all_freed, 10 * SEC));
  return 0;
}

Test(actor, refcount_across_threads, .timeout = TEST_TIMEOUT) {
  static struct rc_ctx rc_ctx;
  struct rc_ctx *c = &rc_ctx;
  tr_stats_t st;
  run_ok(2, rc_root, c, &st);
  cr_assert_eq(c->dup_same, (uint64_t)RC_THREADS * RC_ITERS, "tr_actor_dup did not return a");
  cr_assert_eq(c->pings, (uint64_t)RC_THREADS * (RC_ITERS / 4));
  cr_assert(c->name_after_exit_ok);
  cr_assert_eq(c->live_held.actors_live, 1);
  cr_assert_eq(c->live_held.actors_allocated, 1, "allocated %llu while live",
               (unsigned long long)c->live_held.actors_allocated);
  cr_assert_eq(c->exited_held.actors_live, 0, "live %llu after join",
               (unsigned long long)c->exited_held.actors_live);
  cr_assert_eq(c->exited_held.actors_allocated, 1, "allocated %llu after exit with a ref held",
               (unsigned long long)c->exited_held.actors_allocated);
  cr_assert_eq(c->thread_held.actors_allocated, 1, "allocated %llu with a thread's ref held",
               (unsigned long long)c->thread_held.actors_allocated);
  cr_assert_eq(c->released.actors_allocated, 0, "allocated %llu after the last release",
               (unsigned long long)c->released.actors_allocated);
}

/* ---- on_exit exactly once ----------------------------------------------- */

enum { OX_N = 1000, OX_GROUPS = 5 };

struct ox_ctx;
struct ox_actor {
  struct ox_ctx *c;
  uint64_t exits;
  uint64_t on_root_thread;
};

struct ox_ctx {
  struct ox_actor a[OX_N];
  pthread_t root_thread;
  uint64_t busy_handled;
};

static void ox_beh(void *state, tr_msg_t *m) {
  struct ox_actor *a = state;
  if (m->tag == TAG_EXIT) {
    CHECK(tr_actor_exit() == 0);
    CHECK(tr_actor_exit() == 0); /* twice: still one exit */
  } else if (m->tag == TAG_PING) {
    inc(&a->c->busy_handled);
    int rc = tr_send_u64(tr_self(), TAG_PING, 0); /* busy until shutdown */
    CHECK(rc == 0 || rc == -TR_ECLOSED);
  }
}

static void ox_exit(void *state) {
  struct ox_actor *a = state;
  inc(&a->exits);
  if (pthread_equal(pthread_self(), a->c->root_thread))
    inc(&a->on_root_thread);
}

/* Groups by i % OX_GROUPS:
 *   0  exits on a message, joined before shutdown
 *   1  spawned with no reference, never messaged: exits at shutdown
 *   2  reference held, idle: exits at shutdown
 *   3  busy re-sending to itself: exits at shutdown
 *   4  sent EXIT just before shutdown: races it */
static int ox_root(void *arg) {
  struct ox_ctx *c = arg;
  static tr_actor_t *ref[OX_N];
  tr_spawn_opts_t opts = {.name = "ox", .on_exit = ox_exit};
  c->root_thread = pthread_self();
  for (int i = 0; i < OX_N; i++) {
    c->a[i].c = c;
    int rc = tr_spawn(ox_beh, &c->a[i], &opts, i % OX_GROUPS == 1 ? NULL : &ref[i]);
    CHECK(rc == 0);
    if (rc != 0)
      return 1;
    if (i % OX_GROUPS == 1)
      ref[i] = NULL;
  }
  for (int i = 0; i < OX_N; i += OX_GROUPS)
    CHECK(tr_send_u64(ref[i], TAG_EXIT, 0) == 0);
  for (int i = 3; i < OX_N; i += OX_GROUPS)
    CHECK(tr_send_u64(ref[i], TAG_PING, 0) == 0);
  for (int i = 0; i < OX_N; i += OX_GROUPS)
    CHECK(tr_join(ref[i], -1) == 0);
  CHECK(wait_at_least(&c->busy_handled, 1000, 20 * SEC));
  for (int i = 4; i < OX_N; i += OX_GROUPS)
    CHECK(tr_send_u64(ref[i], TAG_EXIT, 0) == 0);
  CHECK(tr_shutdown() == 0);
  (void)tr_shutdown(); /* a second request is harmless */
  for (int i = 0; i < OX_N; i++)
    tr_actor_release(ref[i]);
  return 0;
}

Test(actor, on_exit_exactly_once, .timeout = TEST_TIMEOUT) {
  static struct ox_ctx c;
  tr_stats_t st;
  run_ok(2, ox_root, &c, &st);
  for (int i = 0; i < OX_N; i++) {
    cr_assert_eq(c.a[i].exits, 1, "actor %d (group %d): on_exit ran %llu times", i, i % OX_GROUPS,
                 (unsigned long long)c.a[i].exits);
    cr_assert_eq(c.a[i].on_root_thread, 0, "actor %d: on_exit ran on the root thread", i);
  }
  cr_assert_eq(st.actors_spawned, OX_N);
  cr_assert_eq(st.actors_exited, OX_N);
}

/* ---- a runtime that cannot start: the OS error is named ------------------ */

static int never_called(void *arg) {
  *(int *)arg = 1;
  return 0;
}

/* Out of fds, tr_run was -TR_ENOMEM, "out of memory", with no word of the
 * OS error: actor.h promises -TR_EIO naming the call and the error. */
Test(actor, a_runtime_out_of_fds_says_so, .timeout = TEST_TIMEOUT) {
  int open_fds = 0;
  DIR *d = opendir("/proc/self/fd");
  cr_assert_not_null(d);
  while (readdir(d))
    open_fds++;
  closedir(d); /* counted ".", ".." and its own fd: a little room over */
  struct rlimit old, low;
  cr_assert_eq(getrlimit(RLIMIT_NOFILE, &old), 0);
  low = old;
  low.rlim_cur = (rlim_t)(open_fds - 3);
  cr_assert_eq(setrlimit(RLIMIT_NOFILE, &low), 0);
  int called = 0;
  tr_config_t cfg = {.workers = 1};
  int rc = tr_run(&cfg, never_called, &called);
  cr_assert_eq(setrlimit(RLIMIT_NOFILE, &old), 0);
  cr_assert_eq(rc, -TR_EIO, "rc %d (%s)", rc, tr_strerror(rc));
  cr_assert_eq(called, 0);
  const tr_error_t *e = tr_error_last();
  cr_assert_not_null(e);
  cr_assert(strstr(tr_error_message(e), "Too many open files") != NULL, "message: %s",
            tr_error_message(e));
  tr_stats_t st;
  run_ok(1, never_called, &called, &st);
  cr_assert_eq(called, 1, "the next run, with fds to spare, starts");
}

/* ---- invalid arguments and no runtime ----------------------------------- */

struct inval_ctx {
  int spawn_null_rc;
  int send_null_to_rc;
  int send_null_msg_rc;
  int send_u64_null_rc;
};

static int inval_root(void *arg) {
  struct inval_ctx *c = arg;
  tr_actor_t *a = NULL;
  c->spawn_null_rc = tr_spawn(NULL, NULL, NULL, &a);
  CHECK(a == NULL || c->spawn_null_rc == 0);
  int rc = tr_spawn(oneshot_beh, NULL, NULL, &a);
  CHECK(rc == 0);
  if (rc != 0)
    return 1;
  tr_msg_t *m = new_msg(TAG_DATA, 1, str_buf("kept"), tr_actor_dup(a));
  c->send_null_to_rc = tr_send(NULL, m);
  if (c->send_null_to_rc == -TR_EINVAL)
    tr_msg_free(m); /* the caller kept it */
  c->send_null_msg_rc = tr_send(a, NULL);
  c->send_u64_null_rc = tr_send_u64(NULL, TAG_DATA, 1);
  CHECK(tr_send_u64(a, TAG_EXIT, 0) == 0);
  CHECK(tr_join(a, -1) == 0);
  tr_actor_release(a);
  return 0;
}

Test(actor, invalid_arguments_and_no_runtime, .timeout = TEST_TIMEOUT) {
  /* Before any tr_run in this process. */
  tr_actor_t *a = NULL;
  cr_assert_eq(tr_spawn(oneshot_beh, NULL, NULL, &a), -TR_ENORUNTIME);
  cr_assert_eq(tr_spawn(oneshot_beh, NULL, NULL, NULL), -TR_ENORUNTIME);
  cr_assert_eq(tr_shutdown(), -TR_ENORUNTIME);
  cr_assert_null(tr_self());
  cr_assert_eq(tr_actor_exit(), -TR_EPERM);
  tr_msg_free(NULL);
  tr_actor_release(NULL);
  cr_assert_eq(tr_run(NULL, NULL, NULL), -TR_EINVAL);
  tr_config_t cfg = {.workers = 2};
  cr_assert_eq(tr_run(&cfg, NULL, NULL), -TR_EINVAL);

  static struct inval_ctx c;
  tr_stats_t st;
  run_ok(2, inval_root, &c, &st);
  cr_assert_eq(c.spawn_null_rc, -TR_EINVAL, "tr_spawn(NULL behaviour): %d", c.spawn_null_rc);
  cr_assert_eq(c.send_null_to_rc, -TR_EINVAL, "tr_send(NULL, msg): %d", c.send_null_to_rc);
  cr_assert_eq(c.send_null_msg_rc, -TR_EINVAL, "tr_send(a, NULL): %d", c.send_null_msg_rc);
  cr_assert_eq(c.send_u64_null_rc, -TR_EINVAL, "tr_send_u64(NULL): %d", c.send_u64_null_rc);
  cr_assert_eq(st.actors_spawned, 1);
  cr_assert_eq(st.dead_letters, 0);

  /* After the run. */
  cr_assert_eq(tr_spawn(oneshot_beh, NULL, NULL, &a), -TR_ENORUNTIME);
  cr_assert_eq(tr_shutdown(), -TR_ENORUNTIME);
  cr_assert_null(tr_self());
}

/* ---- sends from non-worker threads wake parked workers ------------------ */

enum { WAKE_ROUNDS = 20, WAKE_THREADS = 4 };

struct wake_ctx {
  uint64_t handled;
  int join_rc[WAKE_ROUNDS];
  /* multi-thread part; receiver-private */
  uint64_t last[WAKE_THREADS];
  uint64_t got;
  tr_actor_t *rx;
};

struct wake_thread_arg {
  struct wake_ctx *c;
  uint32_t id;
};

static void wake_rx_beh(void *state, tr_msg_t *m) {
  struct wake_ctx *c = state;
  CHECK(m->tag < WAKE_THREADS);
  if (m->tag < WAKE_THREADS) {
    CHECK(m->u64 == c->last[m->tag] + 1);
    c->last[m->tag] = m->u64;
  }
  if (++c->got == (uint64_t)WAKE_THREADS * WAKE_ROUNDS)
    CHECK(tr_actor_exit() == 0);
}

static void *wake_thread(void *arg) {
  struct wake_thread_arg *t = arg;
  for (uint64_t i = 1; i <= WAKE_ROUNDS; i++) {
    sleep_ns(10 * MSEC); /* let the workers go idle and park */
    CHECK(tr_send_u64(t->c->rx, t->id, i) == 0);
  }
  return NULL;
}

static int wake_root(void *arg) {
  struct wake_ctx *c = arg;
  /* Root alone: every message goes to an idle (parked) runtime. */
  for (int i = 0; i < WAKE_ROUNDS; i++) {
    tr_actor_t *a;
    int rc = tr_spawn(oneshot_beh, &c->handled, NULL, &a);
    CHECK(rc == 0);
    if (rc != 0)
      return 1;
    sleep_ns(10 * MSEC);
    CHECK(tr_send_u64(a, TAG_GO, (uint64_t)i) == 0);
    c->join_rc[i] = tr_join(a, 10 * SEC); /* a lost wake-up times out */
    tr_actor_release(a);
  }
  /* Several plain threads at once. */
  int rc = tr_spawn(wake_rx_beh, c, NULL, &c->rx);
  CHECK(rc == 0);
  if (rc != 0)
    return 1;
  pthread_t th[WAKE_THREADS];
  struct wake_thread_arg ta[WAKE_THREADS];
  for (uint32_t i = 0; i < WAKE_THREADS; i++) {
    ta[i] = (struct wake_thread_arg){.c = c, .id = i};
    CHECK(pthread_create(&th[i], NULL, wake_thread, &ta[i]) == 0);
  }
  for (int i = 0; i < WAKE_THREADS; i++)
    pthread_join(th[i], NULL);
  CHECK(tr_join(c->rx, 10 * SEC) == 0);
  tr_actor_release(c->rx);
  return 0;
}

Test(actor, non_worker_sends_wake_workers, .timeout = TEST_TIMEOUT) {
  static struct wake_ctx c;
  tr_stats_t st;
  run_ok(2, wake_root, &c, &st);
  for (int i = 0; i < WAKE_ROUNDS; i++)
    cr_assert_eq(c.join_rc[i], 0, "round %d: tr_join returned %d", i, c.join_rc[i]);
  cr_assert_eq(c.handled, WAKE_ROUNDS);
  cr_assert_eq(c.got, (uint64_t)WAKE_THREADS * WAKE_ROUNDS);
  for (int i = 0; i < WAKE_THREADS; i++)
    cr_assert_eq(c.last[i], WAKE_ROUNDS);
  cr_assert_gt(st.parks, 0);
}

/* ---- monitors (runtime/actor/actor.h) ---------------------------------- */

#include "runtime/actor/actor.h" /* tr__actor_monitor */

static void idle_beh(void *state, tr_msg_t *m) {
  (void)state;
  if (m->tag == TAG_EXIT)
    CHECK(tr_actor_exit() == 0);
}

static uint64_t allocated_now(void) {
  tr_stats_t st;
  tr_stats(&st);
  return st.actors_allocated;
}

/* A watcher that exits before its target is freed with its last
 * reference: its monitor goes with it.  The monitor held the watcher until
 * the target exited, so a long-lived target (a root, a registrar) kept
 * every exited watcher (a channel that had talked for it) alive. */
static int monitor_root(void *arg) {
  (void)arg;
  tr_actor_t *target = NULL, *watcher = NULL;
  CHECK(tr_spawn(idle_beh, NULL, NULL, &target) == 0);
  CHECK(tr_spawn(idle_beh, NULL, NULL, &watcher) == 0);
  if (!target || !watcher)
    return 1;
  CHECK(tr__actor_monitor(target, watcher, TAG_DATA) == 0);
  uint64_t before = allocated_now();
  CHECK(tr_send_u64(watcher, TAG_EXIT, 0) == 0);
  CHECK(tr_join(watcher, 20 * SEC) == 0);
  tr_actor_release(watcher);
  /* The exiting worker drops its own reference just after tr_join's
   * wake-up: wait for the count, bounded. */
  int64_t end = now_ns() + 5 * SEC;
  while (allocated_now() != before - 1 && now_ns() < end)
    sleep_ns(100000);
  CHECK(allocated_now() == before - 1);
  CHECK(!tr_actor_exited(target));
  CHECK(tr_send_u64(target, TAG_EXIT, 0) == 0);
  CHECK(tr_join(target, 20 * SEC) == 0);
  tr_actor_release(target);
  return 0;
}

Test(actor, a_monitor_does_not_keep_an_exited_watcher, .timeout = TEST_TIMEOUT) {
  tr_stats_t st;
  run_ok(2, monitor_root, NULL, &st);
}

/* ---- the turn's end (TR_AF_TURN_END, runtime/actor/actor.h) ------------- */

#define TE_BATCH 8
#define TE_MSGS 1000

typedef struct turn_end {
  tr_actor_t *self;   /* set before the first message */
  uint64_t in_turn;   /* messages handled since the last end */
  uint64_t handled;   /* all of them */
  uint64_t ends;      /* hook calls */
  uint64_t max_batch; /* most messages between two ends */
  uint64_t bad;       /* an end with nothing handled, or outside the actor */
} turn_end_t;

static void turn_end_beh(void *state, tr_msg_t *m) {
  turn_end_t *t = state;
  if (m) {
    t->in_turn++;
    t->handled++;
    if (m->tag == TAG_EXIT)
      CHECK(tr_actor_exit() == 0);
    return;
  }
  if (t->in_turn == 0 || tr_self() != t->self)
    t->bad++;
  if (t->in_turn > t->max_batch)
    t->max_batch = t->in_turn;
  t->in_turn = 0;
  t->ends++;
}

static int turn_end_root(void *arg) {
  turn_end_t *t = arg;
  tr_actor_t *a = NULL;
  /* Spawned from this (non-worker) thread: it runs only once mail comes,
   * after t->self is set. */
  CHECK(tr__actor_spawn_as(turn_end_beh, t, NULL, NULL, NULL, TR_AF_TURN_END, &a) == 0);
  if (!a)
    return 1;
  t->self = a;
  for (int i = 0; i < TE_MSGS; i++)
    CHECK(tr_send_u64(a, i == TE_MSGS - 1 ? TAG_EXIT : TAG_DATA, (uint64_t)i) == 0);
  CHECK(tr_join(a, 20 * SEC) == 0);
  tr_actor_release(a);
  return 0;
}

/* An actor spawned with TR_AF_TURN_END has its behaviour called with no
 * message after every turn that handled mail, inside the actor (tr_self
 * is it), and never between two turns' worth of messages: a turn handles
 * at most tr_config_t.batch, so the ends come at least every batch.  The
 * last end comes after the message that made it exit. */
Test(actor, the_turn_end_follows_every_turn_that_handled_mail, .timeout = TEST_TIMEOUT) {
  turn_end_t t = {0};
  tr_config_t cfg = {.workers = 2, .batch = TE_BATCH};
  unsetenv("TR_WORKERS");
  cr_assert_eq(tr_run(&cfg, turn_end_root, &t), 0);
  assert_no_fails();
  cr_assert_eq(t.handled, TE_MSGS);
  cr_assert_eq(t.bad, 0, "%llu ends with nothing handled or outside the actor",
               (unsigned long long)t.bad);
  cr_assert_eq(t.in_turn, 0, "the exit's turn ended with its hook");
  cr_assert_leq(t.max_batch, TE_BATCH, "max batch %llu", (unsigned long long)t.max_batch);
  cr_assert_geq(t.ends, TE_MSGS / TE_BATCH, "ends %llu", (unsigned long long)t.ends);
  tr_stats_t st;
  assert_clean(&st);
}
