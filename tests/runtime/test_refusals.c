/*
 * errors.h's rule, checked call by call: a public call that fails leaves an
 * error object saying why (tr_error_last, with the same code), in a task
 * and outside one.  Each REFUSED line is one refusal of the public API;
 * the list covers every kind (NULL arguments, calls from the wrong place,
 * calls in a cancelled scope, runtime-wide refusals such as a nested
 * tr_main, wrong payloads).
 */
#include <stdint.h>
#include <string.h>

#define TR_TEST_WORKERS 2
#include <tractor/testing.h>

/* Evaluates expr with the error slot cleared and checks both the code and
 * the error object it left. */
#define REFUSED(expr, code)                                                                        \
  do {                                                                                             \
    tr_error_clear();                                                                              \
    int rc_ = (expr);                                                                              \
    const tr_error_t *e_ = tr_error_last();                                                        \
    tr_check_rc(rc_, (code), "%s", #expr);                                                         \
    tr_check(e_ != NULL, "%s left no error object", #expr);                                        \
    if (e_) {                                                                                      \
      tr_check_eq(tr_error_code(e_), (code), "%s: the error object's code", #expr);                \
      tr_check(tr_error_message(e_) && tr_error_message(e_)[0], "%s: a message", #expr);           \
    }                                                                                              \
  } while (0)

static int nested_root(void *arg) {
  (void)arg;
  return 0;
}

static void *noop_thread(void *arg) { return arg; }

TR_TEST(refusals, every_refusal_leaves_an_error, .timeout = 60) {
  /* tractor: only one root actor per process. */
  REFUSED(tr_main(0, NULL, nested_root, NULL, NULL), -TR_EBUSY);
  tr_check(strstr(tr_error_message(tr_error_last()), "already running") != NULL,
           "the nested tr_main says why");
  REFUSED(tr_run(NULL, nested_root, NULL), -TR_EBUSY);
  REFUSED(tr_run(NULL, NULL, NULL), -TR_EINVAL);

  /* Buffers. */
  tr_buf_t *b = NULL;
  uint64_t v;
  REFUSED(tr_buf_new(4, NULL), -TR_EINVAL);
  REFUSED(tr_buf_from(NULL, 3, &b), -TR_EINVAL);
  REFUSED(tr_buf_from_str(NULL, &b), -TR_EINVAL);
  tr_check_rc(tr_buf_from("abc", 3, &b), 0);
  REFUSED(tr_buf_to_u64(b, &v), -TR_EMSGTYPE);
  REFUSED(tr_buf_to_u64(b, NULL), -TR_EINVAL);
  tr_buf_release(b);
  REFUSED(tr_msg_new(NULL), -TR_EINVAL);

  /* Tasks and time. */
  REFUSED(tr_to_thread(NULL, NULL, NULL), -TR_EINVAL);
  REFUSED(tr_lifetime_push(NULL, NULL), -TR_EINVAL);

  /* RPC with missing arguments. */
  tr_ctx_t *ctx = NULL;
  tr_stream_t *s = NULL;
  tr_portal_t *p = NULL;
  REFUSED(tr_portal_run(NULL, "a.b", NULL, NULL), -TR_EINVAL);
  REFUSED(tr_portal_open_context(NULL, "a.b", NULL, NULL, NULL, NULL), -TR_EINVAL);
  REFUSED(tr_portal_open_stream_from(NULL, "a.b", NULL, NULL, NULL), -TR_EINVAL);
  REFUSED(tr_portal_result(NULL, NULL), -TR_EINVAL);
  REFUSED(tr_portal_cancel_actor(NULL, 0, NULL), -TR_EINVAL);
  REFUSED(tr_portal_from_actor(NULL, &p), -TR_EINVAL);
  REFUSED(tr_ctx_started(NULL, NULL), -TR_EINVAL);
  REFUSED(tr_ctx_open_stream(NULL, &s), -TR_EINVAL);
  REFUSED(tr_ctx_cancel(NULL), -TR_EINVAL);
  REFUSED(tr_ctx_result(NULL, NULL), -TR_EINVAL);
  REFUSED(tr_ctx_close(NULL, NULL), -TR_EINVAL);
  REFUSED(tr_ctx_cancel_wait(NULL, 0), -TR_EINVAL);
  REFUSED(tr_stream_send(NULL, NULL), -TR_EINVAL);
  REFUSED(tr_stream_recv(NULL, NULL), -TR_EINVAL);
  REFUSED(tr_stream_subscribe(NULL, &s), -TR_EINVAL);
  REFUSED(tr_stream_close(NULL), -TR_EINVAL);
  REFUSED(tr_start_actor(NULL, "x", NULL, 0, NULL), -TR_EINVAL);
  REFUSED(tr_run_in_actor(NULL, "x", "a.b", NULL, &p), -TR_EINVAL);
  REFUSED(tr_pub_send(NULL, "t", NULL), -TR_EINVAL);
  REFUSED(tr_pub_recv(NULL, NULL, 0, NULL), -TR_EINVAL);
  (void)ctx;

  /* Scopes, nurseries, actors. */
  tr_scope_t sc = {0};
  REFUSED(tr_scope_open(NULL, TR_NO_DEADLINE, 0), -TR_EINVAL);
  REFUSED(tr_scope_cancel(&sc), -TR_EINVAL);
  REFUSED(tr_scope_close(&sc), -TR_EINVAL);
  tr_scope_t outer, inner;
  tr_check_rc(tr_scope_open(&outer, TR_NO_DEADLINE, 0), 0);
  tr_check_rc(tr_scope_open(&inner, TR_NO_DEADLINE, 0), 0);
  REFUSED(tr_scope_close(&outer), -TR_EINVAL); /* not the innermost */
  tr_check_rc(tr_scope_close(&inner), 0);
  tr_check_rc(tr_scope_close(&outer), 0);
  REFUSED(tr_nursery_open(NULL), -TR_EINVAL);
  REFUSED(tr_nursery_spawn(NULL, nested_root, NULL, NULL), -TR_EINVAL);
  REFUSED(tr_nursery_close(NULL), -TR_EINVAL);
  REFUSED(tr_actor_nursery_open(NULL, NULL), -TR_EINVAL);
  REFUSED(tr_actor_nursery_cancel(NULL), -TR_EINVAL);
  REFUSED(tr_actor_nursery_close(NULL), -TR_EINVAL);
  REFUSED(tr_recv(NULL), -TR_EINVAL);
  REFUSED(tr_spawn(NULL, NULL, NULL, NULL), -TR_EINVAL);
  REFUSED(tr_spawn_task_actor(NULL, NULL, NULL, NULL), -TR_EINVAL);
  REFUSED(tr_send(NULL, NULL), -TR_EINVAL);
  REFUSED(tr_send_u64(NULL, 1, 2), -TR_EINVAL);
  REFUSED(tr_actor_exit(), -TR_EPERM); /* a task is not a behaviour */
  REFUSED(tr_task_actor_result(NULL), -TR_EINVAL);

  /* A bounded mailbox that is full, then an actor that has exited:
   * back-pressure and dead letters (the cheap shared errors). */
  tr_actor_t *a = NULL;
  tr_spawn_opts_t o = {.name = "bounded", .mailbox_limit = 1};
  tr_check_rc(tr_spawn_task_actor(nested_root, NULL, &o, &a), 0);
  if (a) {
    REFUSED(tr_join(a, 0), -TR_EPERM); /* a task runs on a worker */
    /* The actor's main task returns at once; its mailbox may hold one
     * message until then.  Fill it, then the next send is refused. */
    int rc = 0;
    for (int i = 0; i < 1000 && rc == 0; i++)
      rc = tr_send_u64(a, 1, 1);
    tr_check(rc == -TR_EAGAIN || rc == -TR_ECLOSED, "refused: %s", tr_errname(rc));
    tr_check(tr_error_last() && tr_error_code(tr_error_last()) == rc, "an error object for %s",
             tr_errname(rc));
    while (!tr_actor_exited(a))
      tr_check_rc(tr_sleep(1000000), 0);
    REFUSED(tr_send_u64(a, 1, 1), -TR_ECLOSED);
    tr_actor_release(a);
  }
  return 0;
}

/* Outside any task the error lives in the calling thread's slot. */
Test(refusals, outside_the_runtime, .timeout = 30) {
  tr_error_clear();
  cr_assert_eq(tr_shutdown(), -TR_ENORUNTIME);
  cr_assert_not_null(tr_error_last());
  cr_assert_eq(tr_error_code(tr_error_last()), -TR_ENORUNTIME);
  tr_error_clear();
  cr_assert_eq(tr_to_thread(noop_thread, NULL, NULL), -TR_EPERM);
  cr_assert_not_null(tr_error_last());
  cr_assert_eq(tr_error_code(tr_error_last()), -TR_EPERM);
  struct {
    int rc, want;
  } calls[] = {
      {tr_checkpoint(), -TR_EPERM},
      {tr_sleep(1), -TR_EPERM},
      {tr_scope_open(&(tr_scope_t){0}, TR_NO_DEADLINE, 0), -TR_EPERM},
      {tr_nursery_open(&(tr_nursery_t *){NULL}), -TR_EPERM},
      {tr_actor_nursery_open(&(tr_actor_nursery_t *){NULL}, NULL), -TR_EPERM},
      {tr_spawn_task_actor(nested_root, NULL, NULL, NULL), -TR_ENORUNTIME},
  };
  for (size_t i = 0; i < sizeof calls / sizeof calls[0]; i++)
    cr_assert_eq(calls[i].rc, calls[i].want, "call %zu", i);
  /* Each left its error: the last one's is in the slot now. */
  cr_assert_not_null(tr_error_last());
  cr_assert_eq(tr_error_code(tr_error_last()), -TR_ENORUNTIME);
  tr_error_clear();
}
