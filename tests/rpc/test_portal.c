/*
 * The run dialog in-process (tractor's Portal.run against start_actor
 * daemons): results, refusals before any task starts, boxed remote errors,
 * a dead callee, and cancellation of the caller reaching the remote task.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TR_TEST_WORKERS 2
#include <tractor/testing.h>

#define MS (1000 * 1000LL)

static int add_one(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)ctx;
  uint64_t v;
  int rc = tr_buf_to_u64(args, &v);
  if (rc)
    return tr_fail("TypeError", "add_one takes a u64");
  return tr_buf_from_u64(v + 1, result);
}
TR_EXPORT_FN("test.math", "add_one", add_one)

static int nothing(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)ctx;
  (void)args;
  (void)result; /* an empty result */
  return 0;
}
TR_EXPORT_FN("test.math", "nothing", nothing)

/* An empty value as a zero-length buffer: received as NULL, as "nothing"'s. */
static int empty_buf(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)ctx;
  (void)args;
  return tr_buf_new(0, result);
}
TR_EXPORT_FN("test.math", "empty_buf", empty_buf)

/* 1 when its arguments came as NULL (the empty value), else 0. */
static int args_null(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)ctx;
  return tr_buf_from_u64(args == NULL, result);
}
TR_EXPORT_FN("test.math", "args_null", args_null)

static int fails(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)ctx;
  (void)args;
  (void)result;
  return tr_fail("ValueError", "bad input %d", 7);
}
TR_EXPORT_FN("test.math", "fails", fails)

/* Cancels a scope of its own and returns the -TR_ECANCELED it got: a
 * failure of the function, nobody cancelled the call. */
static int self_cancelled(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)ctx;
  (void)args;
  (void)result;
  tr_scope_t s;
  int rc = tr_scope_open(&s, TR_NO_DEADLINE, 0);
  if (rc == 0) {
    tr_scope_cancel(&s);
    rc = tr_sleep(1000 * MS);
    tr_scope_close(&s);
  }
  return rc;
}
TR_EXPORT_FN("test.math", "self_cancelled", self_cancelled)

static int stream_fn(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)ctx;
  (void)args;
  (void)result;
  return 0;
}
TR_EXPORT_STREAM("test.math", "counter", stream_fn)

static int remote_cancelled;

static int sleeps(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)ctx;
  (void)args;
  (void)result;
  int rc = tr_sleep(10000 * MS);
  if (rc == -TR_ECANCELED)
    __atomic_store_n(&remote_cancelled, 1, __ATOMIC_RELEASE);
  return rc;
}
TR_EXPORT_FN("test.slow", "sleeps", sleeps)

static const char *const math_ns[] = {"test.math"};
static const char *const all_ns[] = {"test.math", "test.slow"};

TR_TEST(portal, simple_rpc_and_empty_result, .timeout = 60) {
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL;
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_start_actor(an, "mathd", math_ns, 1, &p), 0);
  for (uint64_t i = 0; p && i < 100; i++) {
    tr_buf_t *arg, *res = NULL;
    tr_check_rc(tr_buf_from_u64(i, &arg), 0);
    tr_check_rc(tr_portal_run(p, "test.math.add_one", arg, &res), 0);
    uint64_t v = 0;
    tr_check_rc(tr_buf_to_u64(res, &v), 0);
    tr_check_eq(v, i + 1);
    tr_buf_release(arg);
    tr_buf_release(res);
  }
  tr_buf_t *res = (tr_buf_t *)1;
  if (p)
    tr_check_rc(tr_portal_run(p, "test.math.nothing", NULL, &res), 0);
  tr_check(res == NULL, "empty result");
  /* Empty is NULL in-process as across processes: a zero-length buffer,
   * as a result or as arguments, arrives as NULL. */
  res = (tr_buf_t *)1;
  if (p)
    tr_check_rc(tr_portal_run(p, "test.math.empty_buf", NULL, &res), 0);
  tr_check(res == NULL, "a zero-length result is NULL (%p)", (void *)res);
  tr_buf_t *none;
  tr_assert_rc(tr_buf_new(0, &none), 0);
  uint64_t was_null = 0;
  res = NULL;
  if (p)
    tr_check_rc(tr_portal_run(p, "test.math.args_null", none, &res), 0);
  tr_check_rc(tr_buf_to_u64(res, &was_null), 0);
  tr_check_eq(was_null, 1, "zero-length arguments arrive as NULL");
  tr_buf_release(res);
  tr_buf_release(none);
  /* Closing the nursery cancels the daemon (only daemons are left). */
  tr_assert_rc(tr_actor_nursery_close(an), 0);
  tr_portal_release(p);
  return 0;
}

TR_TEST(portal, refusals_before_any_task, .timeout = 60) {
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL;
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_start_actor(an, "mathd", math_ns, 1, &p), 0);
  if (p) {
    tr_check_rc(tr_portal_run(p, "test.math.nope", NULL, NULL), -TR_ENOFUNC);
    const tr_error_t *e = tr_error_last();
    tr_check(e && strstr(tr_error_message(e), "nope") != NULL, "names the function");
    tr_check(e && strcmp(tr_error_type(e), "RemoteActorError") == 0, "boxed");
    tr_check_rc(tr_portal_run(p, "test.slow.sleeps", NULL, NULL), -TR_ENOTEXPOSED);
    tr_check_rc(tr_portal_run(p, "test.math.counter", NULL, NULL), -TR_EFUNCKIND);
    tr_check_rc(tr_portal_run(p, "nodot", NULL, NULL), -TR_EINVAL);
  }
  tr_assert_rc(tr_actor_nursery_close(an), 0);
  tr_portal_release(p);
  return 0;
}

/* An enable list that says it has entries but is NULL, or holds a NULL
 * entry, is refused with an error object; nothing is started. */
TR_TEST(portal, start_actor_refuses_a_null_enable_list, .timeout = 60) {
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL;
  static const char *const holes[] = {"test.math", NULL};
  tr_actor_opts_t none = {.enable = NULL, .n_enable = 1};
  tr_actor_opts_t hole = {.enable = holes, .n_enable = 2};
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_start_actor_opts(an, "a", &none, &p), -TR_EINVAL);
  tr_check(p == NULL && tr_error_last() && strstr(tr_error_message(tr_error_last()), "enable"),
           "an error object names the field");
  tr_check_rc(tr_start_actor_opts(an, "b", &hole, &p), -TR_EINVAL);
  tr_check(p == NULL && tr_error_last() && strstr(tr_error_message(tr_error_last()), "entry 1"),
           "and the entry");
  tr_assert_rc(tr_actor_nursery_close(an), 0);
  return 0;
}

/* A spawn kind that is none (opts.spawn, or TR_SPAWN) is refused with an
 * error object; nothing is started (it once ran the child in-process). */
TR_TEST(portal, start_actor_refuses_a_bad_spawn_kind, .timeout = 60) {
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL;
  tr_actor_opts_t bad = {.enable = math_ns, .n_enable = 1, .spawn = 7};
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_start_actor_opts(an, "a", &bad, &p), -TR_EINVAL);
  tr_check(p == NULL && tr_error_last() && strstr(tr_error_message(tr_error_last()), "spawn is 7"),
           "an error object names the field: %s",
           tr_error_last() ? tr_error_message(tr_error_last()) : "-");
  tr_check_rc(tr_run_in_actor_opts(an, "b", "test.math.nothing", NULL, &bad, &p), -TR_EINVAL);
  tr_check(p == NULL, "nothing started");
  /* The environment's default, misspelt (restored before anything else
   * reads it: the _tcp run sets it to "process"). */
  const char *was = getenv("TR_SPAWN");
  char *keep = was ? strdup(was) : NULL;
  setenv("TR_SPAWN", "proces", 1);
  tr_check_rc(tr_start_actor(an, "c", math_ns, 1, &p), -TR_EINVAL);
  tr_check(tr_error_last() && strstr(tr_error_message(tr_error_last()), "TR_SPAWN is \"proces\""),
           "the error names the variable: %s",
           tr_error_last() ? tr_error_message(tr_error_last()) : "-");
  if (keep)
    setenv("TR_SPAWN", keep, 1);
  else
    unsetenv("TR_SPAWN");
  free(keep);
  tr_assert_rc(tr_actor_nursery_close(an), 0);
  return 0;
}

TR_TEST(portal, remote_error_is_boxed, .timeout = 60) {
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL;
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_start_actor(an, "mathd", math_ns, 1, &p), 0);
  if (p) {
    tr_check_rc(tr_portal_run(p, "test.math.fails", NULL, NULL), -TR_EREMOTE);
    const tr_error_t *e = tr_error_last();
    tr_check(e && strcmp(tr_error_type(e), "RemoteActorError") == 0, "type");
    tr_check(e && tr_error_boxed_type(e) && strcmp(tr_error_boxed_type(e), "ValueError") == 0,
             "boxed type");
    tr_check(e && tr_error_src(e) && strcmp(tr_error_src(e), "mathd") == 0, "source");
    tr_check(e && strstr(tr_error_message(e), "bad input 7") != NULL, "message");
    tr_check(e && tr_error_trace_len(e) >= 1, "remote trace");
    /* A -TR_ECANCELED of the function's own making is its failure, boxed:
     * the caller was not cancelled, and its own code must not say so. */
    tr_check_rc(tr_portal_run(p, "test.math.self_cancelled", NULL, NULL), -TR_EREMOTE);
    e = tr_error_last();
    tr_check(e && tr_error_boxed_type(e) && strcmp(tr_error_boxed_type(e), "Cancelled") == 0,
             "boxed type: %s", e && tr_error_boxed_type(e) ? tr_error_boxed_type(e) : "(none)");
    tr_check(e && strstr(tr_error_message(e), "was cancelled") != NULL, "message: %s",
             e ? tr_error_message(e) : "(none)");
    /* The daemon survives its call's failure and keeps serving. */
    tr_buf_t *arg, *res = NULL;
    tr_check_rc(tr_buf_from_u64(1, &arg), 0);
    tr_check_rc(tr_portal_run(p, "test.math.add_one", arg, &res), 0);
    tr_buf_release(arg);
    tr_buf_release(res);
  }
  tr_assert_rc(tr_actor_nursery_close(an), 0);
  tr_portal_release(p);
  return 0;
}

TR_TEST(portal, caller_cancel_cancels_remote_task, .timeout = 60) {
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL;
  remote_cancelled = 0;
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_start_actor(an, "slowd", all_ns, 2, &p), 0);
  if (p) {
    tr_scope_t s;
    int64_t t0 = tr_now();
    tr_check_rc(tr_move_on_after(&s, 20 * MS), 0);
    tr_check_rc(tr_portal_run(p, "test.slow.sleeps", NULL, NULL), -TR_ECANCELED);
    tr_check_rc(tr_scope_close(&s), 0);
    tr_check(tr_now() - t0 < 5000 * MS, "returned at the deadline");
    /* The Cancel reaches the remote task: it reports being cancelled. */
    for (int i = 0; i < 500 && !__atomic_load_n(&remote_cancelled, __ATOMIC_ACQUIRE); i++)
      tr_check_rc(tr_sleep(1 * MS), 0);
    tr_check(__atomic_load_n(&remote_cancelled, __ATOMIC_ACQUIRE), "remote task cancelled");
  }
  tr_assert_rc(tr_actor_nursery_close(an), 0);
  tr_portal_release(p);
  return 0;
}

/* A Cancel that reaches a daemon before its service is up, behind the
 * Start it cancels (both wait in early_starts), cancels that call once
 * it starts; it used to find no dialog and be lost, and the call ran its
 * 10 s for a caller that had gone.  One worker makes the order certain:
 * the caller sends Start and Cancel in the root's turn, before the
 * daemon's first. */
static int early_caller(void *arg) {
  tr_portal_t *p = arg;
  tr_scope_t s;
  int rc = tr_scope_open(&s, TR_NO_DEADLINE, 0);
  if (rc)
    return rc;
  tr_check_rc(tr_task_started(&s), 0);
  rc = tr_portal_run(p, "test.slow.sleeps", NULL, NULL);
  tr_check_rc(rc, -TR_ECANCELED);
  tr_scope_close(&s);
  return 0;
}

static int early_cancel_body(void) {
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL;
  remote_cancelled = 0;
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_start_actor(an, "slowd", all_ns, 2, &p), 0);
  if (p) {
    tr_nursery_t *n;
    void *scope = NULL;
    tr_check_rc(tr_nursery_open(&n), 0);
    tr_check_rc(tr_nursery_start(n, early_caller, p, NULL, &scope), 0);
    tr_check_rc(tr_checkpoint(), 0); /* the caller sends its Start */
    if (scope)
      tr_check_rc(tr_scope_cancel(scope), 0);
    tr_check_rc(tr_nursery_close(n), 0); /* the caller sends its Cancel */
    int64_t end = tr_now() + 5000 * MS;
    while (!__atomic_load_n(&remote_cancelled, __ATOMIC_ACQUIRE) && tr_now() < end)
      tr_check_rc(tr_sleep(1 * MS), 0);
    tr_check(__atomic_load_n(&remote_cancelled, __ATOMIC_ACQUIRE),
             "the call that started after its Cancel was cancelled");
  }
  tr_assert_rc(tr_actor_nursery_close(an), 0);
  tr_portal_release(p);
  return 0;
}

Test(portal, cancel_before_the_service_is_up, .timeout = 60) {
  tr_test_def_t def = {"portal/cancel_before_the_service_is_up", early_cancel_body, 0, 0, .workers = 1};
  static tr_test_report_t rep;
  if (tr_test_run(&def, &rep) != 0)
    cr_assert_fail("%s", rep.message);
}

TR_TEST(portal, call_to_exited_actor, .timeout = 60) {
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL;
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_start_actor(an, "mathd", math_ns, 1, &p), 0);
  tr_assert_rc(tr_actor_nursery_close(an), 0); /* cancels the daemon */
  if (p)
    tr_check_rc(tr_portal_run(p, "test.math.nothing", NULL, NULL), -TR_ECLOSED);
  tr_portal_release(p);
  return 0;
}

/* ---- run_in_actor ------------------------------------------------------------ */

TR_TEST(portal, run_in_actor_result_cached, .timeout = 60) {
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL, *empty = NULL;
  tr_buf_t *arg;
  tr_assert_rc(tr_buf_from_u64(41, &arg), 0);
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_run_in_actor(an, "adder", "test.math.add_one", arg, &p), 0);
  tr_check_rc(tr_run_in_actor(an, "empty", "test.math.nothing", NULL, &empty), 0);
  tr_check_rc(tr_run_in_actor(an, "x", "test.math.counter", NULL, NULL), -TR_EINVAL);
  tr_portal_t *bad = NULL;
  tr_check_rc(tr_run_in_actor(an, "x", "test.math.counter", NULL, &bad), -TR_EFUNCKIND);
  tr_check_rc(tr_run_in_actor(an, "x", "test.math.nope", NULL, &bad), -TR_ENOFUNC);
  for (int i = 0; p && i < 2; i++) { /* the same result twice */
    tr_buf_t *res = NULL;
    uint64_t v = 0;
    tr_check_rc(tr_portal_result(p, &res), 0);
    tr_check_rc(tr_buf_to_u64(res, &v), 0);
    tr_check_eq(v, 42);
    tr_buf_release(res);
  }
  tr_buf_t *res = (tr_buf_t *)1;
  if (empty)
    tr_check_rc(tr_portal_result(empty, &res), 0);
  tr_check(res == NULL, "an empty result is NULL");
  tr_assert_rc(tr_actor_nursery_close(an), 0);
  /* Cached in the portal after the nursery closed. */
  if (p) {
    uint64_t v = 0;
    tr_buf_t *again = NULL;
    tr_check_rc(tr_portal_result(p, &again), 0);
    tr_check_rc(tr_buf_to_u64(again, &v), 0);
    tr_check_eq(v, 42);
    tr_buf_release(again);
  }
  tr_buf_release(arg);
  tr_portal_release(p);
  tr_portal_release(empty);
  return 0;
}

/* A tr_start_actor portal has no result: refused at once, while the daemon
 * serves (waiting would wait for its end, which only close brings). */
TR_TEST(portal, a_daemon_portal_has_no_result, .timeout = 60) {
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL;
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_start_actor(an, "mathd", math_ns, 1, &p), 0);
  if (p) {
    tr_check_rc(tr_portal_result(p, NULL), -TR_EINVAL);
    tr_check(tr_error_last() && strstr(tr_error_message(tr_error_last()), "mathd has no result"),
             "the error names the actor");
  }
  tr_assert_rc(tr_actor_nursery_close(an), 0);
  if (p)
    tr_check_rc(tr_portal_result(p, NULL), -TR_EINVAL); /* and after the close */
  tr_portal_release(p);
  return 0;
}

TR_TEST(portal, run_in_actor_error_rereturned, .timeout = 60) {
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL;
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_run_in_actor(an, "failer", "test.math.fails", NULL, &p), 0);
  tr_error_t *from_portal = NULL;
  for (int i = 0; p && i < 3; i++) {
    tr_check_rc(tr_portal_result(p, NULL), -TR_EREMOTE);
    const tr_error_t *e = tr_error_last();
    tr_check(e && strcmp(tr_error_type(e), "RemoteActorError") == 0, "boxed");
    tr_check(e && tr_error_boxed_type(e) && strcmp(tr_error_boxed_type(e), "ValueError") == 0,
             "boxed type");
    if (i == 0)
      from_portal = tr_error_copy(e);
  }
  /* The child's failure is the nursery's too (one cancels all), in the
   * same shape: one failure, one error (tractor boxes both). */
  tr_check_rc(tr_actor_nursery_close(an), -TR_EREMOTE);
  const tr_error_t *from_close = tr_error_last();
  tr_check(from_portal && from_close, "both errors");
  if (from_portal && from_close) {
    tr_check_eq(tr_error_code(from_close), tr_error_code(from_portal));
    tr_check_str_eq(tr_error_type(from_close), tr_error_type(from_portal));
    tr_check_str_eq(tr_error_boxed_type(from_close), tr_error_boxed_type(from_portal));
    tr_check_str_eq(tr_error_src(from_close), "failer");
    tr_check_str_eq(tr_error_src(from_portal), "failer");
    char uid[TR_UID_LEN(16)];
    if (p && tr_actor_uid(tr_portal_actor(p), uid, sizeof uid) < (int)sizeof uid)
      tr_check_str_eq(tr_error_src_uid(from_close), uid, "the child by uid");
    tr_check_str_eq(tr_error_message(from_close), tr_error_message(from_portal));
    tr_check_eq(tr_error_relay_len(from_close), tr_error_relay_len(from_portal));
  }
  tr_error_free(from_portal);
  if (p)
    tr_check_rc(tr_portal_result(p, NULL), -TR_EREMOTE);
  tr_portal_release(p);
  return 0;
}

/* tr_start_actor and tr_run_in_actor copy the actor's name, as tr_spawn
 * and tr_actor_nursery_spawn do: names computed into a buffer the caller
 * reuses (or frees) right after the call stay right in errors. */
TR_TEST(portal, actor_names_are_copied, .timeout = 60) {
  tr_actor_nursery_t *an;
  tr_portal_t *d = NULL, *r = NULL;
  char buf[32];
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  snprintf(buf, sizeof buf, "mathd-%d", 9);
  tr_check_rc(tr_start_actor(an, buf, math_ns, 1, &d), 0);
  snprintf(buf, sizeof buf, "overwritten-%d", 1);
  if (d) {
    tr_check_rc(tr_portal_run(d, "test.math.fails", NULL, NULL), -TR_EREMOTE);
    const tr_error_t *e = tr_error_last();
    tr_check(e && tr_error_src(e) && strcmp(tr_error_src(e), "mathd-9") == 0, "source %s",
             e && tr_error_src(e) ? tr_error_src(e) : "(none)");
  }
  char *heap = strdup("failer-9"); /* freed at once: ASan sees a later read */
  tr_check(heap != NULL);
  if (heap)
    tr_check_rc(tr_run_in_actor(an, heap, "test.math.fails", NULL, &r), 0);
  free(heap);
  if (r) {
    tr_check_rc(tr_portal_result(r, NULL), -TR_EREMOTE);
    const tr_error_t *e = tr_error_last();
    tr_check(e && tr_error_src(e) && strcmp(tr_error_src(e), "failer-9") == 0, "source %s",
             e && tr_error_src(e) ? tr_error_src(e) : "(none)");
  }
  tr_check_rc(tr_actor_nursery_close(an), -TR_EREMOTE);
  const tr_error_t *e = tr_error_last();
  tr_check(e && tr_error_src(e) && strcmp(tr_error_src(e), "failer-9") == 0, "nursery source %s",
           e && tr_error_src(e) ? tr_error_src(e) : "(none)");
  tr_portal_release(d);
  tr_portal_release(r);
  return 0;
}

/* tractor's test of 25 failing children: every error is collected. */
TR_TEST(portal, group_of_25_failing_children, .timeout = 60) {
  tr_actor_nursery_t *an;
  tr_portal_t *ps[25] = {0};
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  for (int i = 0; i < 25; i++)
    tr_check_rc(tr_run_in_actor(an, "failer", "test.math.fails", NULL, &ps[i]), 0);
  int rc = tr_actor_nursery_close(an);
  const tr_error_t *g = tr_error_last();
  /* `fails` reaches no cancellation point, so the cancel requests that
   * follow the first failure cannot stop the others: all 25 fail. */
  tr_check_rc(rc, -TR_EGROUP);
  size_t n = rc == -TR_EGROUP ? tr_error_group_count(g) : 0;
  tr_check_eq(n, 25);
  for (size_t i = 0; i < n; i++) {
    tr_check_str_eq(tr_error_type(tr_error_group_get(g, i)), "RemoteActorError");
    tr_check_str_eq(tr_error_boxed_type(tr_error_group_get(g, i)), "ValueError");
    tr_check_str_eq(tr_error_src(tr_error_group_get(g, i)), "failer");
  }
  for (int i = 0; i < 25; i++)
    tr_portal_release(ps[i]);
  return 0;
}

/* ---- cancel_actor ------------------------------------------------------------ */

/* A context that says started from inside a shield, then waits there for
 * its caller's Stop: once its caller has the started value, the actor is
 * sure to ignore a cancel request until the caller closes its stream (no
 * timing: a fixed sleep would let a starved caller see the ack). */
static int stubborn(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)args;
  (void)result;
  tr_scope_t s;
  int rc = tr_scope_open(&s, TR_NO_DEADLINE, 1);
  if (rc == 0) {
    tr_stream_t *st = NULL;
    rc = tr_ctx_started(ctx, NULL);
    if (rc == 0)
      rc = tr_ctx_open_stream(ctx, &st);
    tr_buf_t *v = NULL;
    while (rc == 0 && (rc = tr_stream_recv(st, &v)) == 0) /* shielded: ignores a cancel */
      tr_buf_release(v);
    if (rc == -TR_EEOF)
      rc = 0;
    tr_scope_close(&s);
  }
  return rc;
}
TR_EXPORT_CONTEXT("test.stubborn", "hold", stubborn)

/* Enters a shield, says so (test.stubborn.in_shield, which its actor
 * serves meanwhile, in this process or a child process), and sleeps there
 * for 30 s: only a forced cancel ends it early. */
static int shielded_in;
static int shielded_sleep(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)ctx;
  (void)args;
  (void)result;
  tr_scope_t s;
  int rc = tr_scope_open(&s, TR_NO_DEADLINE, 1);
  if (rc == 0) {
    __atomic_store_n(&shielded_in, 1, __ATOMIC_RELEASE);
    rc = tr_sleep(30000 * MS);
    __atomic_store_n(&shielded_in, 0, __ATOMIC_RELEASE);
    tr_scope_close(&s);
  }
  return rc;
}
TR_EXPORT_FN("test.stubborn", "sleep", shielded_sleep)

static int in_shield(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)ctx;
  (void)args;
  return tr_buf_from_u64((uint64_t)__atomic_load_n(&shielded_in, __ATOMIC_ACQUIRE), result);
}
TR_EXPORT_FN("test.stubborn", "in_shield", in_shield)

static const char *const stubborn_ns[] = {"test.stubborn"};

TR_TEST(portal, cancel_actor_acked_or_not, .timeout = 60) {
  tr_actor_nursery_t *an;
  tr_portal_t *d = NULL, *s = NULL;
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_start_actor(an, "daemon", math_ns, 1, &d), 0);
  tr_check_rc(tr_start_actor(an, "stubborn", stubborn_ns, 1, &s), 0);
  int acked = -1;
  /* A daemon exits promptly when cancelled: acknowledged. */
  if (d)
    tr_check_rc(tr_portal_cancel_actor(d, 2000 * MS, &acked), 0);
  tr_check_eq(acked, 1);
  /* Exited, as the ack said: a second cancel says so at once, even with
   * no time to wait (an actor in another process included). */
  acked = -1;
  if (d)
    tr_check_rc(tr_portal_cancel_actor(d, 0, &acked), 0);
  tr_check_eq(acked, 1, "a second cancel of an acknowledged actor");
  /* An actor whose context holds a shield until this side's Stop (it said
   * so: started) cannot exit within 20 ms: no ack. */
  tr_ctx_t *ctx = NULL;
  tr_buf_t *first = NULL;
  tr_stream_t *st = NULL;
  if (s)
    tr_check_rc(tr_portal_open_context(s, "test.stubborn.hold", NULL, NULL, &ctx, &first), 0);
  if (ctx)
    tr_check_rc(tr_ctx_open_stream(ctx, &st), 0);
  acked = -1;
  if (s && ctx)
    tr_check_rc(tr_portal_cancel_actor(s, 20 * MS, &acked), 0);
  tr_check_eq(acked, 0);
  if (ctx) {
    int crc = tr_ctx_close(ctx, NULL); /* Stop ends its wait; the actor's cancel follows */
    tr_check(crc == 0 || crc == -TR_ECANCELED || crc == -TR_ECTXCANCELED, "ctx close: %d", crc);
  }
  tr_buf_release(first);
  /* Its call finishes later; the nursery closes normally. */
  tr_check_rc(tr_actor_nursery_close(an), 0);
  tr_portal_release(d);
  tr_portal_release(s);
  return 0;
}

/* shielded_cancel_is_forced_at_close: the call that keeps the child in
 * its shield (its outcome does not matter: the child is forced out). */
static int run_shielded(void *arg) {
  (void)tr_portal_run(arg, "test.stubborn.sleep", NULL, NULL);
  return 0;
}

/* A child that does not acknowledge a cancel in time (its shield holds) is
 * cancelled by force as soon as its nursery closes, as portal.h says, not
 * one grace period later as the daemons a close ends: in-process a forced
 * cancel, a child process SIGTERM (then SIGKILL after the grace). */
TR_TEST(portal, an_unacked_cancel_is_forced_at_close, .timeout = 60) {
  const int64_t grace = 3000 * MS;
  tr_nursery_t *n = NULL;
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL;
  tr_actor_nursery_opts_t no = {.cancel_grace_ns = grace};
  tr_assert_rc(tr_nursery_open(&n), 0);
  tr_assert_rc(tr_actor_nursery_open(&an, &no), 0);
  tr_check_rc(tr_start_actor(an, "shielded", stubborn_ns, 1, &p), 0);
  if (p)
    tr_check_rc(tr_nursery_spawn(n, run_shielded, p, NULL), 0);
  /* Until the child is inside its shield (a cancel before would end it). */
  uint64_t in = 0;
  for (int64_t end = tr_now() + 20000 * MS; p && !in && tr_now() < end;) {
    tr_buf_t *r = NULL;
    if (tr_portal_run(p, "test.stubborn.in_shield", NULL, &r) != 0 || tr_buf_to_u64(r, &in) != 0)
      in = 0;
    tr_buf_release(r);
    if (!in && tr_sleep(1 * MS) != 0)
      break;
  }
  tr_check_eq(in, 1, "the child entered its shield");
  int acked = -1;
  if (p)
    tr_check_rc(tr_portal_cancel_actor(p, 20 * MS, &acked), 0);
  tr_check_eq(acked, 0, "the shield holds against a request");
  /* A call to an actor that is being cancelled is refused as one to an
   * actor that is going (portal.h: -TR_ECLOSED, boxed, with the actor as
   * source), not -TR_ECANCELED, which would say that this caller is
   * cancelled. */
  if (p) {
    tr_check_rc(tr_portal_run(p, "test.stubborn.in_shield", NULL, NULL), -TR_ECLOSED);
    const tr_error_t *e = tr_error_last();
    tr_check(e && strcmp(tr_error_type(e), "RemoteActorError") == 0 &&
                 tr_error_src(e) && strcmp(tr_error_src(e), "shielded") == 0,
             "boxed, from the actor (%s from %s)", e ? tr_error_type(e) : "no error",
             e && tr_error_src(e) ? tr_error_src(e) : "nobody");
  }
  int pid = 0;
  int proc = p && tr_portal_process(p, &pid, NULL) == 0;
  int64_t t0 = tr_now();
  int rc = tr_actor_nursery_close(an);
  int64_t ms = (tr_now() - t0) / MS, bound = grace / 2 / MS;
  tr_check(ms < bound, "the close forced the cancel at once (%lld ms, bound %lld)", (long long)ms,
           (long long)bound);
  /* In-process the shielded call ends cancelled; a killed process is lost. */
  tr_check(rc == 0 || (proc && rc == -TR_EIO), "the nursery's close (%d)", rc);
  tr_check_rc(tr_nursery_close(n), 0);
  tr_portal_release(p);
  return 0;
}

/* ---- relay ---------------------------------------------------------------------- */

/* Runs inside actor "middle": starts "leaf" and calls its failing function,
 * then re-raises what it got (tractor's relayed RemoteActorError). */
static int relay(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)ctx;
  (void)args;
  (void)result;
  tr_actor_nursery_t *an;
  tr_portal_t *leaf = NULL;
  int rc = tr_actor_nursery_open(&an, NULL);
  if (rc)
    return rc;
  rc = tr_start_actor(an, "leaf", math_ns, 1, &leaf);
  if (rc == 0)
    rc = tr_portal_run(leaf, "test.math.fails", NULL, NULL); /* -TR_EREMOTE */
  tr_error_t *err = rc ? tr_error_take() : NULL;             /* keep it across the close */
  tr_actor_nursery_close(an);
  tr_portal_release(leaf);
  return err ? tr_error_raise(err) : rc;
}
TR_EXPORT_FN("test.relay", "relay", relay)

TR_TEST(portal, relayed_error_keeps_source, .timeout = 60) {
  static const char *const relay_ns[] = {"test.relay"};
  tr_actor_nursery_t *an;
  tr_portal_t *mid = NULL;
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_start_actor(an, "middle", relay_ns, 1, &mid), 0);
  if (mid) {
    tr_check_rc(tr_portal_run(mid, "test.relay.relay", NULL, NULL), -TR_EREMOTE);
    const tr_error_t *e = tr_error_last();
    /* tractor: boxed_type is what the last hop raised, src_type the
     * original. */
    tr_check(e && tr_error_boxed_type(e) && strcmp(tr_error_boxed_type(e), "RemoteActorError") == 0,
             "boxed type is the relaying hop's");
    tr_check(e && tr_error_src_type(e) && strcmp(tr_error_src_type(e), "ValueError") == 0,
             "original type kept as the source type");
    tr_check(e && tr_error_src(e) && strcmp(tr_error_src(e), "leaf") == 0, "source kept");
    tr_check(e && tr_error_relay_len(e) == 1, "one relay hop");
    tr_check(e && tr_error_relay_len(e) == 1 && strcmp(tr_error_relay(e, 0), "middle") == 0,
             "relayed by middle");
  }
  tr_assert_rc(tr_actor_nursery_close(an), 0);
  tr_portal_release(mid);
  return 0;
}

/* A caller and a daemon remember the export they last called and served
 * (runtime/rpc/rpc.h, tr_rpc_t): alternating names, names that share a
 * prefix, a wrong kind and a namespace the daemon does not enable must
 * each still reach their own answer, call after call. */
TR_TEST(portal, repeated_calls_name_their_own_export, .timeout = 60) {
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL;
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_start_actor(an, "mathd", math_ns, 1, &p), 0);
  for (uint64_t i = 0; p && i < 3; i++) {
    tr_buf_t *arg = NULL, *res = NULL;
    uint64_t v = 0;
    tr_check_rc(tr_buf_from_u64(i, &arg), 0);
    tr_check_rc(tr_portal_run(p, "test.math.add_one", arg, &res), 0);
    tr_check_rc(tr_buf_to_u64(res, &v), 0);
    tr_check_eq(v, i + 1, "round %llu: add_one", (unsigned long long)i);
    tr_buf_release(res);
    res = NULL;
    /* Namespace "test", function "mathXadd_one": the remembered
     * "test.math" + "add_one" with any byte in place of the dot. */
    tr_check_rc(tr_portal_run(p, "test.mathXadd_one", arg, NULL), -TR_ENOTEXPOSED);
    tr_check_rc(tr_portal_run(p, "test.math.nothing", arg, &res), 0, "round %llu",
                (unsigned long long)i);
    tr_check(res == NULL || tr_buf_len(res) == 0, "nothing returns nothing");
    tr_buf_release(res);
    tr_buf_release(arg);
    tr_stream_t *s = NULL;
    tr_check_rc(tr_portal_open_stream_from(p, "test.math.nothing", NULL, NULL, &s), -TR_EFUNCKIND,
                "a fn, right after calling it as one");
    tr_check_rc(tr_portal_run(p, "test.math.counter", NULL, NULL), -TR_EFUNCKIND);
    tr_check_rc(tr_portal_run(p, "test.math.counter", NULL, NULL), -TR_EFUNCKIND, "again");
    tr_check_rc(tr_portal_run(p, "test.math.add_onex", NULL, NULL), -TR_ENOFUNC);
    tr_check_rc(tr_portal_run(p, "test.mathx.add_one", NULL, NULL), -TR_ENOTEXPOSED);
    tr_check_rc(tr_portal_run(p, "test.slow.sleeps", NULL, NULL), -TR_ENOTEXPOSED,
                "after this daemon served test.math");
  }
  tr_assert_rc(tr_actor_nursery_close(an), 0);
  tr_portal_release(p);
  return 0;
}
