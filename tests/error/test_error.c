/*
 * The rich error object: raising, tracing, boxing, groups, formatting,
 * per-thread and per-task slots, and the out-of-memory fallback.
 *
 * Leaks are checked by the ASan build (LeakSanitizer runs when each test's
 * process exits), so several tests deliberately leave or replace errors
 * without freeing them by hand.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <tractor/errors.h>

#include "runtime/error/error.h"

/* ---- helpers ------------------------------------------------------------- */

static int raise_line, middle_line, outer_line;

static int inner(int v) {
  raise_line = __LINE__ + 1;
  return tr_fail("ValueError", "bad value %d", v);
}

static int middle(int v) {
  middle_line = __LINE__ + 1;
  return TR_TRACE(inner(v));
}

static int outer(int v) {
  outer_line = __LINE__ + 1;
  return TR_TRACE(middle(v));
}

/* Whether hop is "<something>test_error.c:<line> <func>". */
static int hop_is(const char *hop, int line, const char *func) {
  char want[128];
  snprintf(want, sizeof want, "test_error.c:%d %s", line, func);
  size_t hl = strlen(hop), wl = strlen(want);
  return hl >= wl && strcmp(hop + hl - wl, want) == 0;
}

static char *format_alloc(const tr_error_t *e) {
  int n = tr_error_format(e, NULL, 0);
  cr_assert_geq(n, 0);
  char *s = malloc((size_t)n + 1);
  cr_assert_not_null(s);
  cr_assert_eq(tr_error_format(e, s, (size_t)n + 1), n);
  cr_assert_eq(strlen(s), (size_t)n);
  return s;
}

/* ---- raising and tracing ------------------------------------------------- */

Test(error, fail_records_type_message_trace, .timeout = 10) {
  cr_assert_null(tr_error_last());
  int rc = inner(42);
  cr_assert_eq(rc, -TR_EAPP);
  const tr_error_t *e = tr_error_last();
  cr_assert_not_null(e);
  cr_assert_eq(tr_error_code(e), -TR_EAPP);
  cr_assert_str_eq(tr_error_type(e), "ValueError");
  cr_assert_str_eq(tr_error_message(e), "bad value 42");
  cr_assert_null(tr_error_boxed_type(e));
  cr_assert_null(tr_error_src(e));
  cr_assert_null(tr_error_canceller(e));
  cr_assert_eq(tr_error_relay_len(e), 0);
  cr_assert_eq(tr_error_group_count(e), 0);
  cr_assert_eq(tr_error_trace_len(e), 1);
  cr_assert(hop_is(tr_error_trace(e, 0), raise_line, "inner"), "hop '%s'", tr_error_trace(e, 0));
  cr_assert_null(tr_error_trace(e, 1));
}

Test(error, fail_without_type_is_application_error, .timeout = 10) {
  cr_assert_eq(tr_fail(NULL, "plain"), -TR_EAPP);
  cr_assert_str_eq(tr_error_type(tr_error_last()), "ApplicationError");
}

Test(error, trace_appends_hops_in_order, .timeout = 10) {
  cr_assert_eq(outer(7), -TR_EAPP);
  const tr_error_t *e = tr_error_last();
  cr_assert_eq(tr_error_trace_len(e), 3);
  cr_assert(hop_is(tr_error_trace(e, 0), raise_line, "inner"));
  cr_assert(hop_is(tr_error_trace(e, 1), middle_line, "middle"));
  cr_assert(hop_is(tr_error_trace(e, 2), outer_line, "outer"));
}

Test(error, trace_ignores_other_codes, .timeout = 10) {
  cr_assert_eq(TR_TRACE(-TR_EAPP), -TR_EAPP); /* no current error */
  cr_assert_null(tr_error_last());
  inner(1);
  cr_assert_eq(TR_TRACE(0), 0);
  cr_assert_eq(TR_TRACE(5), 5);
  cr_assert_eq(TR_TRACE(-TR_ETIMEDOUT), -TR_ETIMEDOUT);
  cr_assert_eq(tr_error_trace_len(tr_error_last()), 1);
}

Test(error, trace_is_bounded, .timeout = 10) {
  inner(1);
  for (int i = 0; i < 100; i++)
    TR_TRACE(-TR_EAPP);
  const tr_error_t *e = tr_error_last();
  cr_assert_eq(tr_error_trace_len(e), TR__ERROR_TRACE_MAX);
  char *s = format_alloc(e);
  char want[64];
  snprintf(want, sizeof want, "[%d outer hops not recorded]", 101 - TR__ERROR_TRACE_MAX);
  cr_assert_not_null(strstr(s, want), "%s", s);
  free(s);
}

Test(error, error_macro_uses_code_name, .timeout = 10) {
  cr_assert_eq(TR_ERROR(-TR_ETIMEDOUT, "waited %d ms", 50), -TR_ETIMEDOUT);
  const tr_error_t *e = tr_error_last();
  cr_assert_eq(tr_error_code(e), -TR_ETIMEDOUT);
  cr_assert_str_eq(tr_error_type(e), "TooSlowError");
  cr_assert_str_eq(tr_error_message(e), "waited 50 ms");
  cr_assert_eq(tr_error_trace_len(e), 1);

  /* A positive code is made negative; a NULL format gives the description. */
  cr_assert_eq(TR_ERROR(TR_EINVAL, NULL), -TR_EINVAL);
  cr_assert_str_eq(tr_error_message(tr_error_last()), "invalid argument");
  cr_assert_str_eq(tr_error_type(tr_error_last()), "InvalidArgument");

  /* Code 0 is success: nothing is recorded, the last error stays. */
  cr_assert_eq(TR_ERROR(0, "nothing"), 0);
  cr_assert_eq(tr_error_code(tr_error_last()), -TR_EINVAL);

  /* An unknown code still gets a type. */
  cr_assert_eq(TR_ERROR(-999, "odd"), -999);
  cr_assert_str_eq(tr_error_type(tr_error_last()), "Error");
}

/* ---- replacement and clearing -------------------------------------------- */

Test(error, clear_forgets, .timeout = 10) {
  inner(1);
  cr_assert_not_null(tr_error_last());
  tr_error_clear();
  cr_assert_null(tr_error_last());
  tr_error_clear(); /* twice is fine */
  cr_assert_null(tr_error_last());
}

Test(error, replacement_frees_previous, .timeout = 10) {
  /* Under ASan, each replaced error that was not freed would be reported as
   * a leak when this test's process exits. */
  for (int i = 0; i < 100; i++)
    tr_fail("KeyError", "key %d", i);
  cr_assert_str_eq(tr_error_message(tr_error_last()), "key 99");
  /* The new message may quote the old error: it is freed only after. */
  const tr_error_t *old = tr_error_last();
  tr_fail("RuntimeError", "wrapped: %s (%s)", tr_error_message(old), tr_error_type(old));
  cr_assert_str_eq(tr_error_message(tr_error_last()), "wrapped: key 99 (KeyError)");
  /* Left in the slot on purpose: the main thread's slot is not freed at
   * exit, but it is still reachable (TLS), so LeakSanitizer is silent. */
}

Test(error, take_and_put, .timeout = 10) {
  inner(3);
  tr_error_t *e = tr__error_take();
  cr_assert_not_null(e);
  cr_assert_null(tr_error_last());
  cr_assert_null(tr__error_take());
  tr__error_put(e);
  cr_assert_eq(tr_error_last(), e);
  tr__error_put(e); /* the same error again: no double free */
  cr_assert_eq(tr_error_last(), e);
  tr__error_put(tr__error_new(-TR_EEOF, NULL, "done"));
  cr_assert_str_eq(tr_error_type(tr_error_last()), "EndOfChannel");
  tr__error_put(NULL);
  cr_assert_null(tr_error_last());
}

/* ---- boxing, relay, canceller -------------------------------------------- */

Test(error, boxed_type, .timeout = 10) {
  tr_error_t *e = tr__error_new(-TR_EAPP, "ValueError", "no good");
  cr_assert_eq(tr__error_box(e, "('worker', 'a1')"), 0);
  cr_assert_eq(tr_error_code(e), -TR_EREMOTE);
  cr_assert_str_eq(tr_error_type(e), "RemoteActorError");
  cr_assert_str_eq(tr_error_boxed_type(e), "ValueError");
  cr_assert_str_eq(tr_error_src_type(e), "ValueError");
  cr_assert_str_eq(tr_error_src(e), "('worker', 'a1')");
  cr_assert_str_eq(tr_error_message(e), "no good");
  cr_assert_eq(tr_error_relay_len(e), 0);
  tr__error_free(e);
}

Test(error, relay_path_appends, .timeout = 10) {
  tr_error_t *e = tr__error_new(-TR_EAPP, "ValueError", "deep");
  cr_assert_eq(tr__error_box(e, "src"), 0);
  cr_assert_eq(tr__error_box(e, "hop1"), 0);
  cr_assert_eq(tr__error_relay_append(e, "hop2"), 0);
  cr_assert_eq(tr_error_relay_len(e), 2);
  cr_assert_str_eq(tr_error_relay(e, 0), "hop1");
  cr_assert_str_eq(tr_error_relay(e, 1), "hop2");
  cr_assert_null(tr_error_relay(e, 2));
  /* Re-boxing (a relay) keeps the original source and source type; the
   * boxed type is what the relaying hop raised (tractor's boxed_type vs
   * src_type). */
  cr_assert_str_eq(tr_error_src(e), "src");
  cr_assert_str_eq(tr_error_type(e), "RemoteActorError");
  cr_assert_str_eq(tr_error_boxed_type(e), "RemoteActorError");
  cr_assert_str_eq(tr_error_src_type(e), "ValueError");
  cr_assert_eq(tr__error_relay_append(e, NULL), -TR_EINVAL);
  tr__error_free(e);
}

Test(error, canceller, .timeout = 10) {
  tr_error_t *e = tr__error_new(-TR_ECTXCANCELED, NULL, "ctx cancelled");
  cr_assert_str_eq(tr_error_type(e), "ContextCancelled");
  cr_assert_eq(tr__error_set_canceller(e, "root-uid"), 0);
  cr_assert_eq(tr__error_box(e, "child-uid"), 0);
  /* ContextCancelled is itself the remote error type: not re-typed. */
  cr_assert_eq(tr_error_code(e), -TR_ECTXCANCELED);
  cr_assert_str_eq(tr_error_type(e), "ContextCancelled");
  cr_assert_str_eq(tr_error_boxed_type(e), "ContextCancelled");
  cr_assert_str_eq(tr_error_src_type(e), "ContextCancelled");
  cr_assert_str_eq(tr_error_src(e), "child-uid");
  cr_assert_str_eq(tr_error_canceller(e), "root-uid");
  cr_assert_eq(tr__error_set_canceller(e, "other"), 0);
  cr_assert_str_eq(tr_error_canceller(e), "other");
  cr_assert_eq(tr__error_set_canceller(e, NULL), 0);
  cr_assert_null(tr_error_canceller(e));
  tr__error_free(e);
}

/* ---- formatting ---------------------------------------------------------- */

Test(error, format_contains_each_part, .timeout = 10) {
  tr_error_t *e = tr__error_new(-TR_EAPP, "ValueError", "bad %s", "input");
  cr_assert_eq(tr__error_trace_append(e, "a.c", 10, "raiser"), 0);
  cr_assert_eq(tr__error_trace_append_str(e, "b.c:20 caller"), 0);
  cr_assert_eq(tr__error_box(e, "worker-uid"), 0);
  cr_assert_eq(tr__error_relay_append(e, "relay-1"), 0);
  cr_assert_eq(tr__error_relay_append(e, "relay-2"), 0);
  cr_assert_eq(tr__error_set_canceller(e, "canceller-uid"), 0);
  char *s = format_alloc(e);
  cr_assert_eq(strncmp(s, "RemoteActorError: bad input\n", 28), 0, "%s", s);
  const char *parts[] = {"boxed type: ValueError",
                         "code: TR_EREMOTE (-7)",
                         "source: worker-uid",
                         "relay: relay-1 -> relay-2",
                         "canceller: canceller-uid",
                         "trace (most recent call last):",
                         "b.c:20 caller",
                         "a.c:10 raiser"};
  for (size_t i = 0; i < sizeof parts / sizeof *parts; i++)
    cr_assert_not_null(strstr(s, parts[i]), "missing '%s' in:\n%s", parts[i], s);
  /* Python order: the raise site comes last. */
  cr_assert_lt(strstr(s, "b.c:20"), strstr(s, "a.c:10"));
  free(s);
  tr__error_free(e);
}

Test(error, format_tiny_buffer_truncates, .timeout = 10) {
  outer(5);
  const tr_error_t *e = tr_error_last();
  int n = tr_error_format(e, NULL, 0);
  cr_assert_gt(n, 20);
  char *full = format_alloc(e);

  char small[8];
  memset(small, 'X', sizeof small);
  cr_assert_eq(tr_error_format(e, small, sizeof small), n);
  cr_assert_eq(small[7], '\0');
  cr_assert_eq(strncmp(small, full, 7), 0);

  char one = 'X';
  cr_assert_eq(tr_error_format(e, &one, 1), n);
  cr_assert_eq(one, '\0');

  /* Every length gives a NUL-terminated prefix and never writes past it. */
  char *buf = malloc((size_t)n + 16);
  for (size_t len = 1; len <= (size_t)n + 1; len++) {
    memset(buf, 'Y', (size_t)n + 16);
    cr_assert_eq(tr_error_format(e, buf, len), n);
    cr_assert_eq(strlen(buf), len - 1);
    cr_assert_eq(strncmp(buf, full, len - 1), 0);
    cr_assert_eq(buf[len], 'Y');
  }
  free(buf);
  free(full);
}

/* ---- groups -------------------------------------------------------------- */

Test(error, group_nested_formats_and_iterates, .timeout = 10) {
  tr_error_t *g = tr__error_group_new("%d tasks failed", 3);
  tr_error_t *a = tr__error_new(-TR_EAPP, "ValueError", "a");
  tr__error_trace_append(a, "t.c", 1, "task_a");
  tr_error_t *inner_g = tr__error_group_new("inner nursery");
  cr_assert_eq(tr__error_group_add(inner_g, tr__error_new(-TR_EAPP, "KeyError", "k")), 0);
  cr_assert_eq(tr__error_group_add(inner_g, tr__error_new(-TR_EAPP, "TypeError", "t")), 0);
  cr_assert_eq(tr__error_group_add(g, a), 0);
  cr_assert_eq(tr__error_group_add(g, inner_g), 0);
  cr_assert_eq(tr__error_group_add(g, tr__error_new(-TR_ETIMEDOUT, NULL, "too slow")), 0);

  cr_assert_eq(tr_error_code(g), -TR_EGROUP);
  cr_assert_str_eq(tr_error_type(g), "ExceptionGroup");
  cr_assert_str_eq(tr_error_message(g), "3 tasks failed");
  cr_assert_eq(tr_error_group_count(g), 3);
  const char *types[] = {"ValueError", "ExceptionGroup", "TooSlowError"};
  for (size_t i = 0; i < 3; i++)
    cr_assert_str_eq(tr_error_type(tr_error_group_get(g, i)), types[i]);
  cr_assert_null(tr_error_group_get(g, 3));
  const tr_error_t *ig = tr_error_group_get(g, 1);
  cr_assert_eq(tr_error_group_count(ig), 2);
  cr_assert_str_eq(tr_error_type(tr_error_group_get(ig, 0)), "KeyError");
  cr_assert_str_eq(tr_error_type(tr_error_group_get(ig, 1)), "TypeError");

  char *s = format_alloc(g);
  const char *parts[] = {"ExceptionGroup: 3 tasks failed\n",
                         "\n  3 errors:\n",
                         "\n  +-- 1 of 3 --\n    ValueError: a\n",
                         "\n        t.c:1 task_a\n",
                         "\n    ExceptionGroup: inner nursery\n",
                         "\n      +-- 2 of 2 --\n        TypeError: t\n",
                         "\n        KeyError: k\n",
                         "\n    TooSlowError: too slow\n"};
  for (size_t i = 0; i < sizeof parts / sizeof *parts; i++)
    cr_assert_not_null(strstr(s, parts[i]), "missing '%s' in:\n%s", parts[i], s);
  free(s);

  /* The copy is deep and formats the same. */
  tr_error_t *c = tr__error_copy(g);
  cr_assert_neq(c, g);
  cr_assert_neq(tr_error_group_get(c, 1), tr_error_group_get(g, 1));
  char *s1 = format_alloc(g), *s2 = format_alloc(c);
  cr_assert_str_eq(s1, s2);
  free(s1);
  free(s2);
  tr__error_free(c);

  /* The group can be the task's error like any other. */
  tr__error_put(g);
  cr_assert_eq(tr_error_group_count(tr_error_last()), 3);
  tr_error_clear();
}

Test(error, group_add_rejects_and_takes_ownership, .timeout = 10) {
  tr_error_t *notgroup = tr__error_new(-TR_EAPP, "ValueError", "x");
  /* Member freed even though the add fails (ASan would see a leak). */
  cr_assert_eq(tr__error_group_add(notgroup, tr__error_new(-TR_EAPP, NULL, "m")), -TR_EINVAL);
  cr_assert_eq(tr__error_group_add(NULL, tr__error_new(-TR_EAPP, NULL, "m")), -TR_EINVAL);
  tr_error_t *g = tr__error_group_new("g");
  cr_assert_eq(tr__error_group_add(g, NULL), -TR_EINVAL);
  cr_assert_eq(tr_error_group_count(g), 0);
  tr__error_free(notgroup);

  /* Nesting is bounded. */
  tr_error_t *deep = tr__error_new(-TR_EAPP, NULL, "leaf");
  for (int i = 0; i < TR__ERROR_GROUP_DEPTH_MAX; i++) {
    tr_error_t *up = tr__error_group_new("level %d", i);
    cr_assert_eq(tr__error_group_add(up, deep), 0);
    deep = up;
  }
  cr_assert_eq(tr__error_group_add(g, deep), -TR_EINVAL);
  tr__error_free(g);
}

/* ---- slots --------------------------------------------------------------- */

#define NTHREADS 8

static pthread_barrier_t barrier;

static void *thread_body(void *arg) {
  int id = (int)(intptr_t)arg;
  if (tr_error_last() != NULL)
    return "slot not empty at start";
  for (int i = 0; i < 50; i++)
    tr_fail("ThreadError", "thread %d round %d", id, i);
  /* Everyone has written before anyone reads. */
  pthread_barrier_wait(&barrier);
  char want[64];
  snprintf(want, sizeof want, "thread %d round 49", id);
  if (strcmp(tr_error_message(tr_error_last()), want) != 0)
    return "saw another thread's error";
  /* Odd threads exit with an error in their slot: the key destructor must
   * free it (ASan reports a leak otherwise). */
  if (id % 2 == 0)
    tr_error_clear();
  return NULL;
}

Test(error, threads_have_independent_slots, .timeout = 30) {
  pthread_t t[NTHREADS];
  pthread_barrier_init(&barrier, NULL, NTHREADS);
  inner(0);
  for (int i = 0; i < NTHREADS; i++)
    cr_assert_eq(pthread_create(&t[i], NULL, thread_body, (void *)(intptr_t)i), 0);
  for (int i = 0; i < NTHREADS; i++) {
    void *res;
    pthread_join(t[i], &res);
    cr_assert_null(res, "thread %d: %s", i, (const char *)res);
  }
  pthread_barrier_destroy(&barrier);
  cr_assert_str_eq(tr_error_message(tr_error_last()), "bad value 0");
}

/* A stand-in for the task layer: one slot for "the running task". */
static tr_error_t *task_slot;
static int in_task;

static tr_error_t **task_slot_hook(void) { return in_task ? &task_slot : NULL; }

Test(error, hook_redirects_to_task_slot, .timeout = 10) {
  inner(1); /* lands in the thread slot */
  tr__error_set_slot_hook(task_slot_hook);

  in_task = 1;
  cr_assert_null(tr_error_last());
  cr_assert_eq(tr_fail("TaskError", "in task"), -TR_EAPP);
  cr_assert_not_null(task_slot);
  cr_assert_eq(tr_error_last(), task_slot);
  cr_assert_str_eq(tr_error_message(task_slot), "in task");
  cr_assert_eq(TR_TRACE(-TR_EAPP), -TR_EAPP);
  cr_assert_eq(tr_error_trace_len(task_slot), 2);

  /* Outside the task (hook gives NULL) the thread slot is back. */
  in_task = 0;
  cr_assert_str_eq(tr_error_message(tr_error_last()), "bad value 1");
  tr_error_clear();
  cr_assert_null(tr_error_last());
  cr_assert_not_null(task_slot);

  /* The task layer frees its slot when the task ends. */
  in_task = 1;
  tr_error_t *e = tr__error_take();
  cr_assert_null(task_slot);
  tr__error_free(e);
  tr__error_set_slot_hook(NULL);
  in_task = 0;
}

/* ---- edges --------------------------------------------------------------- */

Test(error, accessors_on_null, .timeout = 10) {
  cr_assert_eq(tr_error_code(NULL), 0);
  cr_assert_null(tr_error_type(NULL));
  cr_assert_null(tr_error_boxed_type(NULL));
  cr_assert_null(tr_error_message(NULL));
  cr_assert_null(tr_error_src(NULL));
  cr_assert_null(tr_error_canceller(NULL));
  cr_assert_eq(tr_error_relay_len(NULL), 0);
  cr_assert_null(tr_error_relay(NULL, 0));
  cr_assert_eq(tr_error_trace_len(NULL), 0);
  cr_assert_null(tr_error_trace(NULL, 0));
  cr_assert_eq(tr_error_group_count(NULL), 0);
  cr_assert_null(tr_error_group_get(NULL, 0));
  char buf[4] = "abc";
  cr_assert_eq(tr_error_format(NULL, buf, sizeof buf), 0);
  cr_assert_str_eq(buf, "");
  cr_assert_eq(tr_error_format(NULL, NULL, 0), 0);
  cr_assert_null(tr__error_copy(NULL));
  tr__error_free(NULL);
  cr_assert_eq(tr__error_set_src(NULL, "x"), -TR_EINVAL);
  cr_assert_eq(tr__error_box(NULL, "x"), -TR_EINVAL);
}

/* Builds a full error with every allocation able to fail. */
static void build_everything(void) {
  tr_fail("ValueError", "message %d", 1);
  TR_TRACE(-TR_EAPP);
  tr_error_t *e = tr__error_take();
  tr__error_box(e, "src");
  tr__error_relay_append(e, "relay");
  tr__error_set_canceller(e, "canc");
  tr_error_t *g = tr__error_group_new("group");
  tr__error_group_add(g, e);
  tr__error_group_add(g, tr__error_copy(g));
  tr__error_put(g);
}

Test(error, out_of_memory_falls_back, .timeout = 30) {
  /* Count the allocations of a full build, then fail at each of them. */
  tr__error_inject_oom(1 << 30);
  build_everything();
  tr__error_inject_oom(-1);
  tr_error_clear();

  int saw_oom = 0;
  for (int after = 0; after < 200; after++) {
    tr__error_inject_oom(after);
    build_everything();
    tr__error_inject_oom(-1);
    const tr_error_t *e = tr_error_last();
    cr_assert_not_null(e);
    char buf[512];
    cr_assert_geq(tr_error_format(e, buf, sizeof buf), 0);
    if (tr__error_is_oom(e)) {
      saw_oom = 1;
      cr_assert_eq(tr_error_code(e), -TR_ENOMEM);
      cr_assert_str_eq(tr_error_type(e), "MemoryError");
      cr_assert_str_eq(tr_error_message(e), "out of memory");
      /* The static error refuses changes and survives clear and free. */
      tr_error_t *oom = tr__error_take();
      cr_assert_eq(tr__error_set_src(oom, "x"), -TR_ENOMEM);
      cr_assert_eq(TR_TRACE(-TR_ENOMEM), -TR_ENOMEM);
      cr_assert_eq(tr_error_trace_len(oom), 0);
      tr__error_free(oom);
      tr__error_put(oom);
      tr_error_clear();
      cr_assert_str_eq(tr_error_message(oom), "out of memory");
    }
    /* By the last round every allocation of the build has had its turn to
     * fail, and the build gets through whole. */
    if (after == 199)
      cr_assert_eq(tr_error_group_count(e), 2);
    tr_error_clear();
  }
  cr_assert(saw_oom);

  /* tr_fail still reports its own code when it had to fall back. */
  tr__error_inject_oom(0);
  cr_assert_eq(tr_fail("ValueError", "x"), -TR_EAPP);
  tr__error_inject_oom(-1);
  cr_assert(tr__error_is_oom(tr_error_last()));
}

/* The public keep-and-re-raise API (errors.h): take, copy, raise, free. */
static int raise_kept(tr_error_t *e) { return tr_error_raise(e); }

Test(error, take_copy_raise_public, .timeout = 10) {
  tr_error_clear();
  cr_assert_eq(tr_fail("ValueError", "kept %d", 1), -TR_EAPP);
  tr_error_t *e = tr_error_take();
  cr_assert_not_null(e);
  cr_assert_null(tr_error_last(), "take empties the slot");
  cr_assert_eq(tr__error_set_canceller(e, "someone"), 0);
  cr_assert_eq(tr__error_box(e, "src-actor"), 0);

  tr_error_t *c = tr_error_copy(e);
  cr_assert_not_null(c);
  cr_assert_neq(c, e);
  cr_assert_str_eq(tr_error_type(c), "RemoteActorError");
  cr_assert_str_eq(tr_error_src_type(c), "ValueError");
  cr_assert_str_eq(tr_error_canceller(c), "someone");
  cr_assert_str_eq(tr_error_message(c), "kept 1");
  tr_error_free(c);
  tr_error_free(NULL);
  cr_assert_null(tr_error_copy(NULL));

  /* Cleanup records errors of its own... */
  cr_assert_eq(TR_ERROR(-TR_ECLOSED, "cleanup"), -TR_ECLOSED);
  size_t hops = tr_error_trace_len(e);
  /* ...and the kept error comes back whole, the re-raise site a new hop. */
  cr_assert_eq(raise_kept(e), -TR_EREMOTE);
  const tr_error_t *last = tr_error_last();
  cr_assert_eq(last, e);
  cr_assert_str_eq(tr_error_src(last), "src-actor");
  cr_assert_str_eq(tr_error_canceller(last), "someone");
  cr_assert_eq(tr_error_trace_len(last), hops + 1);
  cr_assert_not_null(strstr(tr_error_trace(last, hops), "raise_kept"));

  cr_assert_eq(tr_error_raise(NULL), -TR_EINVAL);
  cr_assert_eq(tr_error_code(tr_error_last()), -TR_EINVAL);
  tr_error_clear();
}

/* tr__error_quick: a shared error per code, recorded without allocating. */
Test(error, quick_errors_are_shared_and_immutable, .timeout = 10) {
  tr__error_inject_oom(0); /* every allocation of this module fails */
  cr_assert_eq(tr__error_quick(TR_EAGAIN), -TR_EAGAIN);
  tr__error_inject_oom(-1);
  const tr_error_t *e = tr_error_last();
  cr_assert_not_null(e);
  cr_assert_eq(tr_error_code(e), -TR_EAGAIN);
  cr_assert_str_eq(tr_error_type(e), tr_errtype(-TR_EAGAIN));
  cr_assert_str_eq(tr_error_message(e), tr_strerror(-TR_EAGAIN));
  cr_assert_eq(tr_error_trace_len(e), 0);
  cr_assert_eq(tr__error_is_oom(e), 0);
  tr_error_t *mut = (tr_error_t *)e;
  cr_assert_eq(tr__error_set_src(mut, "x"), -TR_ENOMEM, "mutators refuse shared errors");
  cr_assert_null(tr_error_src(e));
  cr_assert_eq(tr_error_copy(e), e, "a copy is the shared error itself");
  tr_error_free(mut); /* a no-op */
  cr_assert_eq(tr__error_quick(-TR_EAGAIN), -TR_EAGAIN);
  cr_assert_eq(tr_error_last(), e, "one object per code");
  cr_assert_eq(tr__error_quick(-TR_ECLOSED), -TR_ECLOSED);
  cr_assert_eq(tr_error_code(tr_error_last()), -TR_ECLOSED);
  tr_error_clear();
  cr_assert_null(tr_error_last());
}

/* tr__error_own: a shared error becomes one that can be boxed. */
Test(error, own_makes_shared_errors_mutable, .timeout = 10) {
  tr__error_quick(-TR_EEOF);
  tr_error_t *shared = tr__error_take();
  tr_error_t *e = tr__error_own(shared);
  cr_assert_neq(e, shared);
  cr_assert_eq(tr_error_code(e), -TR_EEOF);
  cr_assert_str_eq(tr_error_type(e), "EndOfChannel");
  cr_assert_eq(tr__error_box(e, "child"), 0);
  cr_assert_str_eq(tr_error_src(e), "child");
  cr_assert_str_eq(tr_error_boxed_type(e), "EndOfChannel");
  cr_assert_eq(tr__error_own(e), e, "an error of its own stays itself");
  tr_error_free(e);
  cr_assert_null(tr__error_own(NULL));
}
