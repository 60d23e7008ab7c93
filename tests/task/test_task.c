/*
 * Tasks, nurseries and cancel scopes: trio's semantics, as Criterion tests
 * through the public API (include/tractor/task.h).
 *
 * Task code runs on worker threads, where Criterion's assertions must not
 * be used: CHECK records the first failure, and each test asserts on it
 * after tr_main has returned.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <tractor/tractor.h>

#define MS (1000 * 1000LL)

static int fail_line;
static char fail_what[160];
#define CHECK(c)                                                               \
  do {                                                                         \
    if (!(c) && __atomic_load_n(&fail_line, __ATOMIC_ACQUIRE) == 0) {          \
      snprintf(fail_what, sizeof fail_what, "%s", #c);                         \
      __atomic_store_n(&fail_line, __LINE__, __ATOMIC_RELEASE);                \
    }                                                                          \
  } while (0)

static void run(tr_task_fn root, void *arg, int expect) {
  fail_line = 0;
  tr_config_t cfg = {.workers = 2};
  int rc = tr_main(0, NULL, root, arg, &cfg);
  cr_assert_eq(fail_line, 0, "CHECK(%s) failed at line %d", fail_what, fail_line);
  cr_assert_eq(rc, expect, "tr_main returned %d (%s), expected %d", rc,
               tr_errname(rc), expect);
  tr_stats_t st;
  tr_stats(&st);
  cr_assert_eq(st.actors_live, 0);
  cr_assert_eq(st.actors_allocated, 0);
  cr_assert_eq(st.msgs_allocated, 0);
}

/* ---- basics ---------------------------------------------------------------- */

static int root_value(void *arg) {
  (void)arg;
  CHECK(tr_sleep(1 * MS) == 0);
  CHECK(tr_checkpoint() == 0);
  return 42;
}

Test(task, main_returns_root_result, .timeout = 30) { run(root_value, NULL, 42); }

Test(task, outside_a_task_is_eperm, .timeout = 30) {
  tr_scope_t s;
  tr_nursery_t *n;
  cr_assert_eq(tr_sleep(1), -TR_EPERM);
  cr_assert_eq(tr_checkpoint(), -TR_EPERM);
  cr_assert_eq(tr_scope_open(&s, TR_NO_DEADLINE, 0), -TR_EPERM);
  cr_assert_eq(tr_nursery_open(&n), -TR_EPERM);
}

static int sleep_accuracy_root(void *arg) {
  (void)arg;
  int64_t delays[] = {1 * MS, 5 * MS, 20 * MS};
  for (int i = 0; i < 3; i++) {
    int64_t t0 = tr_now();
    CHECK(tr_sleep(delays[i]) == 0);
    int64_t el = tr_now() - t0;
    CHECK(el >= delays[i]);
    CHECK(el < delays[i] + 100 * MS); /* generous: a loaded 2-core VM */
  }
  return 0;
}

Test(task, sleep_accuracy_window, .timeout = 30) { run(sleep_accuracy_root, NULL, 0); }

/* ---- nurseries ---------------------------------------------------------------- */

static int sleeper(void *arg) { return tr_sleep(*(int64_t *)arg); }

static int waits_for_children_root(void *arg) {
  (void)arg;
  static int64_t d[3] = {5 * MS, 20 * MS, 10 * MS};
  tr_nursery_t *n;
  int64_t t0 = tr_now();
  CHECK(tr_nursery_open(&n) == 0);
  for (int i = 0; i < 3; i++)
    CHECK(tr_nursery_spawn(n, sleeper, &d[i], NULL) == 0);
  CHECK(tr_nursery_close(n) == 0);
  CHECK(tr_now() - t0 >= 20 * MS);
  return 0;
}

Test(task, nursery_close_waits_for_all, .timeout = 30) {
  run(waits_for_children_root, NULL, 0);
}

static int failer(void *arg) {
  int64_t d = *(int64_t *)arg;
  if (tr_sleep(d) != 0)
    return -TR_ECANCELED;
  return tr_fail("ValueError", "failed after %lld ms", (long long)(d / MS));
}

static int long_sleeper(void *arg) {
  int *cancelled = arg;
  int rc = tr_sleep(10000 * MS);
  if (rc == -TR_ECANCELED) {
    (*cancelled)++;
    /* Cleanup cannot block: every later call is cancelled at once. */
    CHECK(tr_sleep(1000 * MS) == -TR_ECANCELED);
    CHECK(tr_checkpoint() == -TR_ECANCELED);
  }
  return rc;
}

static int first_failure_root(void *arg) {
  (void)arg;
  static int64_t d = 10 * MS;
  int cancelled = 0;
  tr_nursery_t *n;
  int64_t t0 = tr_now();
  CHECK(tr_nursery_open(&n) == 0);
  CHECK(tr_nursery_spawn(n, long_sleeper, &cancelled, NULL) == 0);
  CHECK(tr_nursery_spawn(n, long_sleeper, &cancelled, NULL) == 0);
  CHECK(tr_nursery_spawn(n, failer, &d, NULL) == 0);
  /* The parent's own code inside the nursery is cancelled too. */
  CHECK(tr_sleep(10000 * MS) == -TR_ECANCELED);
  int rc = tr_nursery_close(n);
  CHECK(rc == -TR_EAPP);
  CHECK(cancelled == 2);
  CHECK(tr_now() - t0 < 5000 * MS);
  const tr_error_t *e = tr_error_last();
  CHECK(e != NULL);
  CHECK(e && strcmp(tr_error_type(e), "ValueError") == 0);
  CHECK(e && strstr(tr_error_message(e), "after 10 ms") != NULL);
  return 0;
}

Test(task, first_failure_cancels_siblings, .timeout = 30) {
  run(first_failure_root, NULL, 0);
}

static int two_fail_root(void *arg) {
  (void)arg;
  static int64_t d1 = 5 * MS, d2 = 5 * MS;
  tr_nursery_t *n;
  CHECK(tr_nursery_open(&n) == 0);
  CHECK(tr_nursery_spawn(n, failer, &d1, NULL) == 0);
  CHECK(tr_nursery_spawn(n, failer, &d2, NULL) == 0);
  int rc = tr_nursery_close(n);
  const tr_error_t *e = tr_error_last();
  /* Both sleeps end in the same timer tick or one is cancelled first:
   * either a group of two ValueErrors or the single first failure. */
  if (rc == -TR_EGROUP) {
    CHECK(tr_error_group_count(e) == 2);
    for (size_t i = 0; i < 2; i++)
      CHECK(strcmp(tr_error_type(tr_error_group_get(e, i)), "ValueError") == 0);
  } else {
    CHECK(rc == -TR_EAPP);
  }
  return 0;
}

Test(task, several_failures_make_a_group, .timeout = 30) { run(two_fail_root, NULL, 0); }

/* Failures that cannot be cancelled away: each child fails immediately,
 * before any sibling could cancel it. */
static int fail_now(void *arg) {
  return tr_fail("KeyError", "child %d", (int)(intptr_t)arg);
}

static int inner_nursery(void *arg) {
  tr_nursery_t *n;
  int rc = tr_nursery_open(&n);
  if (rc)
    return rc;
  for (intptr_t i = 0; i < 2; i++)
    tr_nursery_spawn(n, fail_now, (void *)((intptr_t)arg * 10 + i), NULL);
  return tr_nursery_close(n); /* -TR_EGROUP of two */
}

static int nested_root(void *arg) {
  (void)arg;
  tr_nursery_t *n;
  CHECK(tr_nursery_open(&n) == 0);
  CHECK(tr_nursery_spawn(n, inner_nursery, (void *)1, NULL) == 0);
  CHECK(tr_nursery_spawn(n, fail_now, (void *)2, NULL) == 0);
  int rc = tr_nursery_close(n);
  CHECK(rc == -TR_EGROUP);
  const tr_error_t *g = tr_error_last();
  /* Shape: group(inner group(KeyError, KeyError), KeyError), in finish
   * order; the inner group is one member. */
  CHECK(g && tr_error_group_count(g) == 2);
  int groups = 0, leaves = 0;
  for (size_t i = 0; g && i < tr_error_group_count(g); i++) {
    const tr_error_t *m = tr_error_group_get(g, i);
    if (tr_error_code(m) == -TR_EGROUP) {
      groups++;
      CHECK(tr_error_group_count(m) == 2);
    } else {
      leaves++;
      CHECK(strcmp(tr_error_type(m), "KeyError") == 0);
    }
  }
  CHECK(groups == 1 && leaves == 1);
  return 0;
}

Test(task, nested_nursery_error_group_shape, .timeout = 30) { run(nested_root, NULL, 0); }

struct late {
  tr_nursery_t *n;
  int rc;
};

static int late_spawner(void *arg) {
  struct late *l = arg;
  tr_sleep(5 * MS); /* the parent is in close by now */
  l->rc = tr_nursery_spawn(l->n, root_value, NULL, NULL);
  return 0;
}

static int spawn_closing_root(void *arg) {
  (void)arg;
  struct late l = {0};
  CHECK(tr_nursery_open(&l.n) == 0);
  CHECK(tr_nursery_spawn(l.n, late_spawner, &l, NULL) == 0);
  CHECK(tr_nursery_close(l.n) == 0);
  CHECK(l.rc == -TR_ECLOSED);
  return 0;
}

Test(task, spawn_into_closing_nursery_fails, .timeout = 30) {
  run(spawn_closing_root, NULL, 0);
}

/* ---- cancel scopes --------------------------------------------------------------- */

static int move_on_root(void *arg) {
  (void)arg;
  tr_scope_t outer, inner;
  int64_t t0 = tr_now();
  CHECK(tr_move_on_after(&outer, 500 * MS) == 0);
  CHECK(tr_move_on_after(&inner, 30 * MS) == 0);
  CHECK(tr_sleep(10000 * MS) == -TR_ECANCELED);
  CHECK(tr_scope_close(&inner) == 0);
  CHECK(tr_scope_cancelled_caught(&inner));
  int64_t el = tr_now() - t0;
  CHECK(el >= 30 * MS && el < 400 * MS);
  /* The outer scope is not cancelled: this sleep completes. */
  CHECK(tr_sleep(1 * MS) == 0);
  CHECK(tr_scope_close(&outer) == 0);
  CHECK(!tr_scope_cancelled_caught(&outer));
  return 0;
}

Test(task, deadline_in_nested_scopes, .timeout = 30) { run(move_on_root, NULL, 0); }

static int fail_after_root(void *arg) {
  (void)arg;
  tr_scope_t s;
  CHECK(tr_fail_after(&s, 10 * MS) == 0);
  CHECK(tr_sleep(10000 * MS) == -TR_ECANCELED);
  CHECK(tr_scope_close(&s) == -TR_ETIMEDOUT);
  /* Not expired: close returns 0. */
  CHECK(tr_fail_after(&s, 10000 * MS) == 0);
  CHECK(tr_sleep(1 * MS) == 0);
  CHECK(tr_scope_close(&s) == 0);
  return 0;
}

Test(task, fail_after_times_out, .timeout = 30) { run(fail_after_root, NULL, 0); }

static int shield_root(void *arg) {
  (void)arg;
  tr_scope_t outer, shield;
  CHECK(tr_scope_open(&outer, TR_NO_DEADLINE, 0) == 0);
  CHECK(tr_scope_cancel(&outer) == 0);
  CHECK(tr_checkpoint() == -TR_ECANCELED);
  CHECK(tr_scope_open(&shield, TR_NO_DEADLINE, 1) == 0);
  CHECK(tr_sleep(5 * MS) == 0); /* shielded from the outer cancel */
  CHECK(tr_scope_close(&shield) == 0);
  CHECK(tr_sleep(5 * MS) == -TR_ECANCELED);
  CHECK(tr_scope_close(&outer) == 0);
  CHECK(tr_scope_cancelled_caught(&outer));
  return 0;
}

Test(task, shield_inside_cancelled_scope, .timeout = 30) { run(shield_root, NULL, 0); }

static int uncaught_root(void *arg) {
  (void)arg;
  tr_scope_t s;
  CHECK(tr_scope_open(&s, TR_NO_DEADLINE, 0) == 0);
  CHECK(tr_scope_cancel(&s) == 0);
  CHECK(tr_scope_close(&s) == 0); /* no blocking call saw it */
  CHECK(!tr_scope_cancelled_caught(&s));
  return 0;
}

Test(task, cancelled_caught_needs_an_observer, .timeout = 30) {
  run(uncaught_root, NULL, 0);
}

/* Cancel from another thread and from another actor. */
struct remote {
  tr_scope_t *scope;
  volatile int ready;
};

static void *cancel_thread(void *arg) {
  struct remote *r = arg;
  while (!__atomic_load_n(&r->ready, __ATOMIC_ACQUIRE))
    ;
  struct timespec ts = {0, 20 * 1000 * 1000};
  nanosleep(&ts, NULL);
  tr_scope_cancel(r->scope);
  return NULL;
}

static int thread_cancel_root(void *arg) {
  (void)arg;
  tr_scope_t s;
  struct remote r = {.scope = &s};
  pthread_t th;
  CHECK(tr_scope_open(&s, TR_NO_DEADLINE, 0) == 0);
  pthread_create(&th, NULL, cancel_thread, &r);
  __atomic_store_n(&r.ready, 1, __ATOMIC_RELEASE);
  int64_t t0 = tr_now();
  CHECK(tr_sleep(10000 * MS) == -TR_ECANCELED);
  CHECK(tr_now() - t0 < 5000 * MS);
  CHECK(tr_scope_close(&s) == 0);
  CHECK(tr_scope_cancelled_caught(&s));
  pthread_join(th, NULL); /* a plain thread: brief, test-only */
  return 0;
}

Test(task, cancel_from_another_thread, .timeout = 30) { run(thread_cancel_root, NULL, 0); }

static int canceller_task(void *arg) {
  tr_scope_t *s = arg;
  CHECK(tr_sleep(10 * MS) == 0);
  return tr_scope_cancel(s);
}

static int actor_cancel_root(void *arg) {
  (void)arg;
  tr_scope_t s;
  CHECK(tr_scope_open(&s, TR_NO_DEADLINE, 0) == 0);
  tr_actor_t *a;
  CHECK(tr_spawn_task_actor(canceller_task, &s, NULL, &a) == 0);
  CHECK(tr_sleep(10000 * MS) == -TR_ECANCELED);
  CHECK(tr_scope_close(&s) == 0);
  tr_actor_release(a);
  return 0;
}

Test(task, cancel_from_another_actor, .timeout = 30) { run(actor_cancel_root, NULL, 0); }

/* ---- scale ------------------------------------------------------------------------- */

#ifdef TR_TSAN
#define MANY_TASKS 5000 /* TSan: ~10x slower, and its own mappings share the VMA limit */
#define MANY_ACTORS 2000
#else
#define MANY_TASKS 100000
#define MANY_ACTORS 10000
#endif

static int count_and_yield(void *arg) {
  int *count = arg;
  int rc = tr_checkpoint();
  if (rc == 0)
    rc = tr_sleep(1 * MS);
  (*count)++; /* tasks of one actor never run at once: no atomics needed */
  return rc;
}

static int many_tasks_root(void *arg) {
  (void)arg;
  int count = 0;
  tr_nursery_t *n;
  CHECK(tr_nursery_open(&n) == 0);
  for (int i = 0; i < MANY_TASKS; i++)
    CHECK(tr_nursery_spawn(n, count_and_yield, &count, NULL) == 0);
  CHECK(tr_nursery_close(n) == 0);
  CHECK(count == MANY_TASKS);
  return 0;
}

Test(task, many_tasks_in_one_actor, .timeout = 120) { run(many_tasks_root, NULL, 0); }

static int small_main(void *arg) {
  CHECK(tr_sleep(1 * MS) == 0);
  return (int)(intptr_t)arg;
}

static int many_actors_root(void *arg) {
  (void)arg;
  static tr_actor_t *refs[MANY_ACTORS];
  for (intptr_t i = 0; i < MANY_ACTORS; i++)
    CHECK(tr_spawn_task_actor(small_main, (void *)(i % 100), NULL, &refs[i]) == 0);
  /* Wait for them without blocking the worker: poll with sleeps. */
  for (int i = 0; i < MANY_ACTORS; i++) {
    while (tr_task_actor_result(refs[i]) == -TR_EBUSY)
      CHECK(tr_sleep(1 * MS) == 0);
    CHECK(tr_task_actor_result(refs[i]) == i % 100);
    tr_actor_release(refs[i]);
  }
  return 0;
}

Test(task, many_actors_with_tasks, .timeout = 120) { run(many_actors_root, NULL, 0); }

/* ---- tr_recv ------------------------------------------------------------------------ */

static int recv_root(void *arg) {
  (void)arg;
  tr_actor_t *self = tr_self();
  CHECK(self != NULL);
  for (uint64_t i = 0; i < 100; i++)
    CHECK(tr_send_u64(self, 7, i) == 0);
  for (uint64_t i = 0; i < 100; i++) {
    tr_msg_t *m;
    CHECK(tr_recv(&m) == 0);
    CHECK(m && m->tag == 7 && m->u64 == i);
    tr_msg_free(m);
  }
  tr_scope_t s;
  CHECK(tr_move_on_after(&s, 10 * MS) == 0);
  tr_msg_t *m;
  CHECK(tr_recv(&m) == -TR_ECANCELED); /* nothing arrives: times out */
  CHECK(tr_scope_close(&s) == 0);
  return 0;
}

Test(task, recv_in_order_and_cancellable, .timeout = 30) { run(recv_root, NULL, 0); }

/* ---- shutdown ------------------------------------------------------------------------ */

static int shutdown_root(void *arg) {
  (void)arg;
  tr_nursery_t *n;
  int cancelled = 0;
  CHECK(tr_nursery_open(&n) == 0);
  for (int i = 0; i < 10; i++)
    CHECK(tr_nursery_spawn(n, long_sleeper, &cancelled, NULL) == 0);
  CHECK(tr_sleep(5 * MS) == 0);
  CHECK(tr_shutdown() == 0);
  CHECK(tr_nursery_close(n) == -TR_ECANCELED);
  CHECK(cancelled == 10);
  return 7;
}

Test(task, shutdown_cancels_tasks, .timeout = 30) { run(shutdown_root, NULL, 7); }

/* ---- tr_to_thread ---------------------------------------------------------------------- */

static int in_flight, max_in_flight;

static void *blocking_call(void *arg) {
  int now = __atomic_add_fetch(&in_flight, 1, __ATOMIC_ACQ_REL);
  int seen = __atomic_load_n(&max_in_flight, __ATOMIC_ACQUIRE);
  while (now > seen &&
         !__atomic_compare_exchange_n(&max_in_flight, &seen, now, 0, __ATOMIC_ACQ_REL,
                                      __ATOMIC_ACQUIRE))
    ;
  struct timespec ts = {0, (long)(intptr_t)arg * 1000 * 1000};
  nanosleep(&ts, NULL); /* real blocking: the point of tr_to_thread */
  __atomic_sub_fetch(&in_flight, 1, __ATOMIC_ACQ_REL);
  return (void *)((intptr_t)arg + 1);
}

static int to_thread_task(void *arg) {
  (void)arg;
  void *r = NULL;
  int rc = tr_to_thread(blocking_call, (void *)(intptr_t)20, &r);
  CHECK(rc == 0 && (intptr_t)r == 21);
  return rc;
}

static int to_thread_root(void *arg) {
  (void)arg;
  in_flight = max_in_flight = 0;
  tr_nursery_t *n;
  int64_t t0 = tr_now();
  CHECK(tr_nursery_open(&n) == 0);
  for (int i = 0; i < 24; i++)
    CHECK(tr_nursery_spawn(n, to_thread_task, NULL, NULL) == 0);
  /* While the calls block, this task (same actor) still runs. */
  CHECK(tr_sleep(5 * MS) == 0);
  CHECK(tr_nursery_close(n) == 0);
  int64_t el = tr_now() - t0;
  CHECK(max_in_flight > 1 && max_in_flight <= 8); /* parallel, bounded */
  CHECK(el >= 3 * 20 * MS);                       /* 24 calls / 8 threads */
  return 0;
}

Test(task, to_thread_runs_off_the_workers_bounded, .timeout = 60) {
  run(to_thread_root, NULL, 0);
}

static int to_thread_cancel_root(void *arg) {
  (void)arg;
  tr_scope_t s;
  int64_t t0 = tr_now();
  CHECK(tr_move_on_after(&s, 20 * MS) == 0);
  void *r = NULL;
  CHECK(tr_to_thread(blocking_call, (void *)(intptr_t)300, &r) == -TR_ECANCELED);
  CHECK(tr_now() - t0 < 250 * MS); /* abandoned, not waited for */
  const tr_error_t *e = tr_error_last();
  CHECK(e && strstr(tr_error_message(e), "abandoned") != NULL);
  CHECK(tr_scope_close(&s) == 0);
  CHECK(r == NULL);
  return 0;
}

/* tr_main returns only after the abandoned call finished (the actor waits
 * for the job to come back), and nothing leaks. */
Test(task, to_thread_cancel_abandons, .timeout = 60) {
  run(to_thread_cancel_root, NULL, 0);
}

/* ---- actor nurseries ------------------------------------------------------------------ */

static int child_ok(void *arg) {
  CHECK(tr_sleep((int64_t)(intptr_t)arg * MS) == 0);
  return 0;
}

static int child_fails(void *arg) {
  if (tr_sleep((int64_t)(intptr_t)arg * MS) != 0)
    return -TR_ECANCELED;
  return tr_fail("ValueError", "child gave up");
}

static int child_sleeps_long(void *arg) {
  int *cancelled = arg;
  int rc = tr_sleep(10000 * MS);
  if (rc == -TR_ECANCELED)
    __atomic_fetch_add(cancelled, 1, __ATOMIC_RELAXED); /* other actors */
  return rc;
}

static int an_ok_root(void *arg) {
  (void)arg;
  tr_actor_nursery_t *an;
  CHECK(tr_actor_nursery_open(&an, NULL) == 0);
  for (intptr_t i = 1; i <= 3; i++)
    CHECK(tr_actor_nursery_spawn(an, "ok", child_ok, (void *)(i * 5), NULL) == 0);
  CHECK(tr_actor_nursery_close(an) == 0);
  return 0;
}

Test(actor_nursery, children_succeed, .timeout = 30) { run(an_ok_root, NULL, 0); }

static int an_fail_root(void *arg) {
  (void)arg;
  static int cancelled;
  cancelled = 0;
  tr_actor_nursery_t *an;
  int64_t t0 = tr_now();
  CHECK(tr_actor_nursery_open(&an, NULL) == 0);
  CHECK(tr_actor_nursery_spawn(an, "sleeper1", child_sleeps_long, &cancelled, NULL) == 0);
  CHECK(tr_actor_nursery_spawn(an, "sleeper2", child_sleeps_long, &cancelled, NULL) == 0);
  CHECK(tr_actor_nursery_spawn(an, "failer", child_fails, (void *)10, NULL) == 0);
  CHECK(tr_sleep(10000 * MS) == -TR_ECANCELED); /* one cancels all */
  int rc = tr_actor_nursery_close(an);
  CHECK(rc == -TR_EAPP);
  CHECK(__atomic_load_n(&cancelled, __ATOMIC_RELAXED) == 2);
  CHECK(tr_now() - t0 < 5000 * MS);
  const tr_error_t *e = tr_error_last();
  CHECK(e && strcmp(tr_error_type(e), "ValueError") == 0);
  CHECK(e && tr_error_src(e) && strcmp(tr_error_src(e), "failer") == 0);
  return 0;
}

Test(actor_nursery, one_cancels_all, .timeout = 30) { run(an_fail_root, NULL, 0); }

static int an_group_root(void *arg) {
  (void)arg;
  tr_actor_nursery_t *an;
  CHECK(tr_actor_nursery_open(&an, NULL) == 0);
  CHECK(tr_actor_nursery_spawn(an, "f1", child_fails, (void *)0, NULL) == 0);
  CHECK(tr_actor_nursery_spawn(an, "f2", child_fails, (void *)0, NULL) == 0);
  int rc = tr_actor_nursery_close(an);
  /* Both fail at once (no sleep), or the second is cancelled first. */
  CHECK(rc == -TR_EGROUP || rc == -TR_EAPP);
  if (rc == -TR_EGROUP)
    CHECK(tr_error_group_count(tr_error_last()) == 2);
  return 0;
}

Test(actor_nursery, failures_are_grouped, .timeout = 30) { run(an_group_root, NULL, 0); }

static int shielded_child(void *arg) {
  (void)arg;
  tr_scope_t s;
  CHECK(tr_scope_open(&s, TR_NO_DEADLINE, 1) == 0);
  int rc = tr_sleep(10000 * MS); /* ignores the request; only force ends it */
  CHECK(tr_scope_close(&s) == 0);
  return rc;
}

static int an_force_root(void *arg) {
  (void)arg;
  tr_actor_nursery_t *an;
  tr_actor_nursery_opts_t o = {.cancel_grace_ns = 50 * MS};
  CHECK(tr_actor_nursery_open(&an, &o) == 0);
  CHECK(tr_actor_nursery_spawn(an, "stubborn", shielded_child, NULL, NULL) == 0);
  CHECK(tr_sleep(5 * MS) == 0);
  int64_t t0 = tr_now();
  CHECK(tr_actor_nursery_cancel(an) == 0);
  /* Its own cancel is caught by the nursery's scope, as in trio. */
  CHECK(tr_actor_nursery_close(an) == 0);
  int64_t el = tr_now() - t0;
  CHECK(el >= 50 * MS && el < 3000 * MS); /* waited the grace, then forced */
  return 0;
}

Test(actor_nursery, cancel_escalates_after_grace, .timeout = 30) {
  run(an_force_root, NULL, 0);
}

static int an_parent_cancel_root(void *arg) {
  (void)arg;
  static int cancelled;
  cancelled = 0;
  tr_scope_t s;
  CHECK(tr_move_on_after(&s, 20 * MS) == 0);
  tr_actor_nursery_t *an;
  CHECK(tr_actor_nursery_open(&an, NULL) == 0);
  for (int i = 0; i < 5; i++)
    CHECK(tr_actor_nursery_spawn(an, "kid", child_sleeps_long, &cancelled, NULL) == 0);
  CHECK(tr_actor_nursery_close(an) == -TR_ECANCELED);
  CHECK(__atomic_load_n(&cancelled, __ATOMIC_RELAXED) == 5);
  CHECK(tr_scope_close(&s) == 0);
  return 0;
}

Test(actor_nursery, parent_cancel_reaches_children, .timeout = 30) {
  run(an_parent_cancel_root, NULL, 0);
}
