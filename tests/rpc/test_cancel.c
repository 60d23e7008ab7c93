/*
 * Cancellation semantics of dialogs, after trio's and tractor's rules
 * (issue 8's defects and missing pieces):
 *   - every dialog opener in an already-cancelled scope returns
 *     -TR_ECANCELED at once and sends nothing (trio checks before doing
 *     anything; tractor never sends the request);
 *   - a stream opened (or used) after tr_ctx_cancel is a ContextCancelled,
 *     every time, and tr_ctx_close still absorbs it;
 *   - tr_ctx_cancel_called / _acked / tr_ctx_cancel_wait (tractor's
 *     cancel_called, cancel_acknowledged and `await ctx.cancel(timeout)`);
 *   - a ContextCancelled re-raised through an intermediate actor keeps its
 *     canceller (tractor's pack_error keeps the whole record);
 *   - closing a context while another task uses it is refused and frees
 *     nothing; other tasks are refused while it closes.
 *
 * Synchronisation is through the protocol: the callee's observations are
 * stored (release) before its function returns, and read (acquire) after
 * the caller has seen the dialog's outcome.
 */
#include <stdint.h>
#include <string.h>

#define TR_TEST_WORKERS 2
#include <tractor/testing.h>

#define MS (1000 * 1000LL)

static void flag_set(int *f, int v) { __atomic_store_n(f, v, __ATOMIC_RELEASE); }
static int flag_get(const int *f) { return __atomic_load_n(f, __ATOMIC_ACQUIRE); }

static int str_is(const char *s, const char *want) { return s && want && strcmp(s, want) == 0; }

#define UNSET 1

/* ---- exported functions -------------------------------------------------------- */

/* Calls of the marking functions that reached the callee. */
static int runs;

static int mark(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)ctx;
  (void)args;
  (void)result;
  __atomic_add_fetch(&runs, 1, __ATOMIC_RELEASE);
  return 0;
}
TR_EXPORT_FN("tcan.fn", "mark", mark)
TR_EXPORT_STREAM("tcan.stream", "mark", mark)

static int count_runs(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)ctx;
  (void)args;
  return tr_buf_from_u64((uint64_t)__atomic_load_n(&runs, __ATOMIC_ACQUIRE), result);
}
TR_EXPORT_FN("tcan.fn", "count", count_runs)

/* Marks, then takes 5 s before started: an open_context that sent its
 * Start would wait that long. */
static int slow_started(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)args;
  (void)result;
  __atomic_add_fetch(&runs, 1, __ATOMIC_RELEASE);
  int rc = tr_sleep(5000 * MS);
  return rc ? rc : tr_ctx_started(ctx, NULL);
}
TR_EXPORT_CONTEXT("tcan.ctx", "slow_started", slow_started)

/* What tr_ctx_cancel_called said in the callee before and after its
 * cancellation. */
static int callee_called_before = UNSET, callee_called_after = UNSET;

/* Started, stream open, then receives until the end or its cancellation. */
static int listener(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)args;
  (void)result;
  int rc = tr_ctx_started(ctx, NULL);
  tr_stream_t *s = NULL;
  if (rc == 0)
    rc = tr_ctx_open_stream(ctx, &s);
  flag_set(&callee_called_before, tr_ctx_cancel_called(ctx));
  while (rc == 0) {
    tr_buf_t *b = NULL;
    rc = tr_stream_recv(s, &b);
    if (rc == 0)
      rc = tr_stream_send(s, b); /* echo */
    tr_buf_release(b);
  }
  flag_set(&callee_called_after, tr_ctx_cancel_called(ctx));
  return rc == -TR_EEOF ? 0 : rc;
}
TR_EXPORT_CONTEXT("tcan.ctx", "listener", listener)

/* Ignores cancellation for 3 s (a shield), then notices it. */
static int stubborn(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)args;
  (void)result;
  int rc = tr_ctx_started(ctx, NULL);
  if (rc)
    return rc;
  tr_scope_t s;
  rc = tr_scope_open(&s, TR_NO_DEADLINE, 1);
  if (rc)
    return rc;
  (void)tr_sleep(3000 * MS);
  tr_scope_close(&s);
  return tr_checkpoint();
}
TR_EXPORT_CONTEXT("tcan.ctx", "stubborn", stubborn)

static int sleeper(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)args;
  (void)result;
  int rc = tr_ctx_started(ctx, NULL);
  return rc ? rc : tr_sleep_until(TR_NO_DEADLINE);
}
TR_EXPORT_CONTEXT("tcan.ctx", "sleeper", sleeper)

/* The actors of the relay scenario, published by the test before it calls
 * the middle actor (the Start message orders the stores anyway). */
static tr_actor_t *relay_sleeper, *relay_canceller;

/* In the canceller: cancels the sleeper's whole actor. */
static int cancel_sleeper(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)ctx;
  (void)args;
  (void)result;
  tr_portal_t *p;
  int rc = tr_portal_from_actor(__atomic_load_n(&relay_sleeper, __ATOMIC_ACQUIRE), &p);
  if (rc)
    return rc;
  int acked = 0;
  rc = tr_portal_cancel_actor(p, 2000 * MS, &acked);
  tr_portal_release(p);
  return rc ? rc : (acked ? 0 : tr_fail("AssertionError", "the sleeper did not ack"));
}
TR_EXPORT_FN("tcan.misc", "cancel_sleeper", cancel_sleeper)

/* In the middle actor: opens a context with the sleeper, has the canceller
 * cancel the sleeper's actor, and re-raises the ContextCancelled that its
 * close returns, after its own cleanup (tr_error_take / tr_error_raise). */
static int relay_ctxc(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)ctx;
  (void)args;
  (void)result;
  tr_portal_t *sl = NULL, *cn = NULL;
  int rc = tr_portal_from_actor(__atomic_load_n(&relay_sleeper, __ATOMIC_ACQUIRE), &sl);
  if (rc == 0)
    rc = tr_portal_from_actor(__atomic_load_n(&relay_canceller, __ATOMIC_ACQUIRE), &cn);
  tr_ctx_t *c = NULL;
  if (rc == 0)
    rc = tr_portal_open_context(sl, "tcan.ctx.sleeper", NULL, NULL, &c, NULL);
  if (rc == 0) {
    /* The sleeper's ContextCancelled cancels this context's scope; the
     * shield keeps the call to the canceller alive until it answers. */
    tr_scope_t shield;
    if (tr_scope_open(&shield, TR_NO_DEADLINE, 1) == 0) {
      (void)tr_portal_run(cn, "tcan.misc.cancel_sleeper", NULL, NULL);
      tr_scope_close(&shield);
    }
    rc = tr_ctx_close(c, NULL); /* -TR_ECTXCANCELED, canceller "canceller" */
  }
  tr_error_t *err = rc ? tr_error_take() : NULL;
  tr_portal_release(sl);
  tr_portal_release(cn);
  tr_error_clear(); /* cleanup that forgets the error: it was taken */
  return err ? tr_error_raise(err) : rc;
}
TR_EXPORT_FN("tcan.relay", "ctxc", relay_ctxc)

static int child_marks(void *arg) {
  (void)arg;
  __atomic_add_fetch(&runs, 1, __ATOMIC_RELEASE);
  return 0;
}

static const char *const all_ns[] = {"tcan.fn", "tcan.stream", "tcan.ctx", "tcan.misc",
                                     "tcan.relay"};
#define N_ALL (sizeof all_ns / sizeof all_ns[0])

static uint64_t buf_u64(const tr_buf_t *b) {
  uint64_t v = UINT64_MAX;
  if (b)
    tr_buf_to_u64(b, &v);
  return v;
}

/* The current error is a -TR_ECANCELED that says why. */
static int cancelled_error(void) {
  const tr_error_t *e = tr_error_last();
  return e && tr_error_code(e) == -TR_ECANCELED && tr_error_message(e) &&
         strstr(tr_error_message(e), "cancelled") != NULL;
}

/* ---- 1. openers in a cancelled scope ---------------------------------------------- */

TR_TEST(cancel, openers_in_cancelled_scope_send_nothing, .timeout = 60) {
  __atomic_store_n(&runs, 0, __ATOMIC_RELEASE);
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL;
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_start_actor(an, "callee", all_ns, N_ALL, &p), 0);
  if (p) {
    tr_scope_t s;
    tr_check_rc(tr_scope_open(&s, TR_NO_DEADLINE, 0), 0);
    tr_check_rc(tr_scope_cancel(&s), 0);

    tr_check_rc(tr_portal_run(p, "tcan.fn.mark", NULL, NULL), -TR_ECANCELED);
    tr_check(cancelled_error(), "run: an error object says why");

    int64_t t0 = tr_now();
    tr_ctx_t *ctx = NULL;
    tr_check_rc(tr_portal_open_context(p, "tcan.ctx.slow_started", NULL, NULL, &ctx, NULL),
                -TR_ECANCELED);
    tr_check(tr_now() - t0 < 1500 * MS, "open_context returned at once (%lld ms)",
             (long long)((tr_now() - t0) / MS));
    tr_check(ctx == NULL, "no context");
    tr_check(cancelled_error(), "open_context: an error object says why");

    tr_stream_t *st = NULL;
    tr_check_rc(tr_portal_open_stream_from(p, "tcan.stream.mark", NULL, NULL, &st), -TR_ECANCELED);
    tr_check(st == NULL, "no stream");

    /* Arguments first (portal.h, "Cancelled callers"): a bad name or a
     * kind this program knows to be wrong is that error, cancelled or not. */
    tr_check_rc(tr_portal_run(p, "nodot", NULL, NULL), -TR_EINVAL);
    tr_check_rc(tr_portal_run(p, "tcan.stream.mark", NULL, NULL), -TR_EFUNCKIND);
    st = NULL;
    tr_check_rc(tr_portal_open_stream_from(p, "tcan.fn.mark", NULL, NULL, &st), -TR_EFUNCKIND);
    tr_check(st == NULL, "no stream");
    ctx = NULL;
    tr_check_rc(tr_portal_open_context(p, "nodot", NULL, NULL, &ctx, NULL), -TR_EINVAL);
    tr_check_rc(tr_portal_open_context(p, "tcan.fn.mark", NULL, NULL, &ctx, NULL), -TR_EFUNCKIND);
    tr_check(ctx == NULL, "no context");

    tr_portal_t *q = NULL;
    tr_check_rc(tr_run_in_actor(an, "oneshot", "tcan.fn.mark", NULL, &q), -TR_ECANCELED);
    tr_check(q == NULL && cancelled_error(), "run_in_actor refused with an error object");
    tr_check_rc(tr_start_actor(an, "daemon2", all_ns, N_ALL, &q), -TR_ECANCELED);
    tr_check(q == NULL && cancelled_error(), "start_actor refused with an error object");
    tr_actor_t *child = NULL;
    tr_check_rc(tr_actor_nursery_spawn(an, "plain", child_marks, NULL, &child), -TR_ECANCELED);
    tr_check(child == NULL, "no child actor");

    tr_check_rc(tr_scope_close(&s), 0);
    tr_check(tr_scope_cancelled_caught(&s), "the refusals observed the cancellation");

    /* Messages from one actor to another arrive in order: had any Start
     * been sent, its function would have marked before this one counts. */
    tr_buf_t *n = NULL;
    tr_check_rc(tr_portal_run(p, "tcan.fn.count", NULL, &n), 0);
    tr_check(tr_error_last() == NULL, "a successful call clears the last error (errors.h)");
    tr_check_eq(buf_u64(n), 0, "no refused call reached the callee");
    tr_buf_release(n);
  }
  tr_assert_rc(tr_actor_nursery_close(an), 0);
  tr_check_eq(__atomic_load_n(&runs, __ATOMIC_ACQUIRE), 0, "nothing ran, children included");
  tr_portal_release(p);
  return 0;
}

/* Cancelled while waiting for started: the callee is cancelled too, and
 * the open returns within its documented bound (TR_CTX_CANCEL_TIMEOUT_NS
 * for the callee's answer), not after the callee's 5 s. */
TR_TEST(cancel, open_context_cancelled_while_waiting_is_bounded, .timeout = 60) {
  __atomic_store_n(&runs, 0, __ATOMIC_RELEASE);
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL;
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_start_actor(an, "slow", all_ns, N_ALL, &p), 0);
  if (p) {
    tr_scope_t s;
    tr_check_rc(tr_move_on_after(&s, 50 * MS), 0);
    int64_t t0 = tr_now();
    tr_ctx_t *ctx = NULL;
    tr_check_rc(tr_portal_open_context(p, "tcan.ctx.slow_started", NULL, NULL, &ctx, NULL),
                -TR_ECANCELED);
    int64_t took = tr_now() - t0;
    tr_check_rc(tr_scope_close(&s), 0);
    tr_check(ctx == NULL, "no context");
    tr_check(cancelled_error(), "an error object says why");
    tr_check(took < 50 * MS + TR_CTX_CANCEL_TIMEOUT_NS + 1000 * MS,
             "bounded: %lld ms (the callee would take 5000)", (long long)(took / MS));
  }
  tr_assert_rc(tr_actor_nursery_close(an), 0);
  /* This Start was sent (the caller was not cancelled yet): the callee
   * ran, and ended before its daemon did. */
  tr_check_eq(__atomic_load_n(&runs, __ATOMIC_ACQUIRE), 1, "the call reached the callee");
  tr_portal_release(p);
  return 0;
}

/* ---- 2 and 6. the stream after tr_ctx_cancel; context state ------------------------ */

static int is_ctxc_by(const char *canceller) {
  const tr_error_t *e = tr_error_last();
  return e && tr_error_code(e) == -TR_ECTXCANCELED && str_is(tr_error_canceller(e), canceller);
}

TR_TEST(cancel, stream_after_ctx_cancel_is_ctxc, .timeout = 60) {
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL;
  flag_set(&callee_called_before, UNSET);
  flag_set(&callee_called_after, UNSET);
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_start_actor(an, "callee", all_ns, N_ALL, &p), 0);

  /* Never opened: the first open comes right after the cancel (the
   * callee cannot have answered: this task has not blocked since), the
   * next ones after the answer. */
  tr_ctx_t *ctx = NULL;
  if (p)
    tr_check_rc(tr_portal_open_context(p, "tcan.ctx.listener", NULL, NULL, &ctx, NULL), 0);
  if (ctx) {
    tr_check_eq(tr_ctx_cancel_called(ctx), 0);
    tr_check_eq(tr_ctx_cancel_acked(ctx), 0);
    tr_check_rc(tr_ctx_cancel(ctx), 0);
    tr_check_eq(tr_ctx_cancel_called(ctx), 1);
    tr_check_eq(tr_ctx_cancel_acked(ctx), 0, "no answer yet");
    tr_stream_t *s = NULL;
    tr_check_rc(tr_ctx_open_stream(ctx, &s), -TR_ECTXCANCELED);
    tr_check(s == NULL, "no stream");
    tr_check(is_ctxc_by("root"), "ContextCancelled naming this side");
    tr_check_rc(tr_ctx_open_stream(ctx, &s), -TR_ECTXCANCELED, "the same on every open");
    tr_check_rc(tr_ctx_cancel_wait(ctx, 5000 * MS), 0);
    tr_check_eq(tr_ctx_cancel_acked(ctx), 1, "the callee acknowledged with ContextCancelled");
    tr_check_rc(tr_ctx_open_stream(ctx, &s), -TR_ECTXCANCELED, "after the answer too");
    tr_check(is_ctxc_by("root"), "still naming this side");
    tr_check_rc(tr_ctx_close(ctx, NULL), 0, "the self-cancel is absorbed");
    tr_check_eq(flag_get(&callee_called_before), 0, "callee: not cancelled at first");
    tr_check_eq(flag_get(&callee_called_after), 1, "callee: cancel_called once cancelled");
  }

  /* Opened before the cancel: sends and receives after it are over too. */
  ctx = NULL;
  if (p)
    tr_check_rc(tr_portal_open_context(p, "tcan.ctx.listener", NULL, NULL, &ctx, NULL), 0);
  if (ctx) {
    tr_stream_t *s = NULL;
    tr_check_rc(tr_ctx_open_stream(ctx, &s), 0);
    tr_buf_t *v = NULL, *got = NULL;
    tr_check_rc(tr_buf_from_u64(5, &v), 0);
    if (s) {
      tr_check_rc(tr_stream_send(s, v), 0);
      tr_check_rc(tr_stream_recv(s, &got), 0);
      tr_check_eq(buf_u64(got), 5, "echoed");
      tr_buf_release(got);
      got = NULL;
      tr_check_rc(tr_stream_send(s, v), 0); /* an echo will be on its way */
      tr_check_rc(tr_ctx_cancel(ctx), 0);
      tr_check_rc(tr_stream_send(s, v), -TR_ECTXCANCELED);
      tr_check(is_ctxc_by("root"), "send: ContextCancelled");
      tr_check_rc(tr_stream_recv(s, &got), -TR_ECTXCANCELED);
      tr_check(got == NULL, "nothing received");
      tr_check_rc(tr_ctx_cancel_wait(ctx, 5000 * MS), 0);
      tr_check_rc(tr_stream_recv(s, &got), -TR_ECTXCANCELED, "also once answered");
    }
    tr_buf_release(v);
    tr_check_rc(tr_ctx_close(ctx, NULL), 0);
  }
  tr_assert_rc(tr_actor_nursery_close(an), 0);
  tr_portal_release(p);
  return 0;
}

/* tr_ctx_cancel_wait is bounded and does not take the outcome. */
TR_TEST(cancel, cancel_wait_bounded_and_keeps_outcome, .timeout = 60) {
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL;
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_start_actor(an, "stubborn", all_ns, N_ALL, &p), 0);
  tr_ctx_t *ctx = NULL;
  if (p)
    tr_check_rc(tr_portal_open_context(p, "tcan.ctx.stubborn", NULL, NULL, &ctx, NULL), 0);
  if (ctx) {
    int64_t t0 = tr_now();
    tr_check_rc(tr_ctx_cancel_wait(ctx, 20 * MS), -TR_ETIMEDOUT);
    int64_t took = tr_now() - t0;
    tr_check(took >= 20 * MS && took < 1500 * MS, "bounded by its timeout (%lld ms)",
             (long long)(took / MS));
    tr_check(tr_error_code(tr_error_last()) == -TR_ETIMEDOUT, "an error object says why");
    tr_check_eq(tr_ctx_cancel_called(ctx), 1);
    tr_check_eq(tr_ctx_cancel_acked(ctx), 0, "not acknowledged in time");
    /* Also from a cancelled task: the wait is shielded and bounded. */
    tr_scope_t s;
    tr_check_rc(tr_scope_open(&s, TR_NO_DEADLINE, 0), 0);
    tr_scope_cancel(&s);
    tr_check_rc(tr_ctx_cancel_wait(ctx, 5000 * MS), 0);
    tr_check_rc(tr_scope_close(&s), 0);
    tr_check_eq(tr_ctx_cancel_acked(ctx), 1);
    /* The outcome is still there for the close to absorb. */
    tr_check_rc(tr_ctx_result(ctx, NULL), 0);
    tr_check(is_ctxc_by("root"), "the outcome: ContextCancelled naming this side");
    tr_check_rc(tr_ctx_close(ctx, NULL), 0);
  }
  tr_assert_rc(tr_actor_nursery_close(an), 0);
  tr_portal_release(p);
  return 0;
}

/* ---- 3. a ContextCancelled relayed keeps its canceller ------------------------------ */

/* tractor: a middle actor whose context was cancelled by a third actor
 * re-raises the ContextCancelled; the root sees the whole record. */
TR_TEST(cancel, relayed_ctxc_keeps_canceller, .timeout = 60) {
  tr_actor_nursery_t *an;
  tr_portal_t *mid = NULL, *sl = NULL, *cn = NULL;
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_start_actor(an, "middle", all_ns, N_ALL, &mid), 0);
  tr_check_rc(tr_start_actor(an, "sleeper", all_ns, N_ALL, &sl), 0);
  tr_check_rc(tr_start_actor(an, "canceller", all_ns, N_ALL, &cn), 0);
  if (mid && sl && cn) {
    /* Release: pairs with the acquire loads in the middle and canceller. */
    __atomic_store_n(&relay_sleeper, tr_portal_actor(sl), __ATOMIC_RELEASE);
    __atomic_store_n(&relay_canceller, tr_portal_actor(cn), __ATOMIC_RELEASE);
    tr_check_rc(tr_portal_run(mid, "tcan.relay.ctxc", NULL, NULL), -TR_ECTXCANCELED);
    const tr_error_t *e = tr_error_last();
    tr_check(e != NULL, "an error object");
    tr_check_str_eq(tr_error_type(e), "ContextCancelled");
    tr_check_str_eq(tr_error_canceller(e), "canceller", "the canceller survives the relay");
    tr_check_str_eq(tr_error_src(e), "sleeper");
    tr_check_eq(tr_error_relay_len(e), 1);
    tr_check_str_eq(tr_error_relay(e, 0), "middle");
    /* The middle's re-raise is a hop of the trace. */
    int hop = 0;
    for (size_t i = 0; i < tr_error_trace_len(e); i++)
      hop |= strstr(tr_error_trace(e, i), "relay_ctxc") != NULL;
    tr_check(hop, "the re-raise site is in the trace");
  }
  tr_assert_rc(tr_actor_nursery_close(an), 0);
  tr_portal_release(mid);
  tr_portal_release(sl);
  tr_portal_release(cn);
  return 0;
}

/* ---- 9. several tasks on one context ------------------------------------------------- */

typedef struct recv_job {
  tr_stream_t *s;
  int rc;
  uint64_t v;
} recv_job_t;

static int recv_one(void *arg) {
  recv_job_t *j = arg;
  tr_buf_t *b = NULL;
  j->rc = tr_stream_recv(j->s, &b);
  j->v = buf_u64(b);
  tr_buf_release(b);
  return 0;
}

TR_TEST(cancel, close_while_another_task_waits, .timeout = 60) {
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL;
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_start_actor(an, "echo", all_ns, N_ALL, &p), 0);
  tr_ctx_t *ctx = NULL;
  tr_stream_t *s = NULL;
  if (p)
    tr_check_rc(tr_portal_open_context(p, "tcan.ctx.listener", NULL, NULL, &ctx, NULL), 0);
  if (ctx)
    tr_check_rc(tr_ctx_open_stream(ctx, &s), 0);
  if (s) {
    /* A task blocked in a receive: the close is refused, nothing freed. */
    recv_job_t j = {s, UNSET, 0};
    tr_nursery_t *n;
    tr_check_rc(tr_nursery_open(&n), 0);
    tr_check_rc(tr_nursery_spawn(n, recv_one, &j, NULL), 0);
    tr_check_rc(tr_checkpoint(), 0); /* the receiver runs and blocks */
    tr_check_rc(tr_ctx_close(ctx, NULL), -TR_EBUSY);
    const tr_error_t *e = tr_error_last();
    tr_check(e && tr_error_code(e) == -TR_EBUSY && strstr(tr_error_message(e), "in use"),
             "an error object says why");
    /* The context still works: a value for the receiver ends its wait. */
    tr_buf_t *v = NULL;
    tr_check_rc(tr_buf_from_u64(9, &v), 0);
    tr_check_rc(tr_stream_send(s, v), 0);
    tr_buf_release(v);
    tr_check_rc(tr_nursery_close(n), 0);
    tr_check_rc(j.rc, 0);
    tr_check_eq(j.v, 9, "the receiver got the echo");

    /* A task that starts on the context while its opener closes it is
     * refused: the close frees the context when its own wait is over. */
    recv_job_t late = {s, UNSET, 0};
    tr_check_rc(tr_nursery_open(&n), 0);
    tr_check_rc(tr_nursery_spawn(n, recv_one, &late, NULL), 0);
    /* The late task runs while the close waits for the callee's Return. */
    tr_check_rc(tr_ctx_close(ctx, NULL), 0);
    tr_check_rc(tr_nursery_close(n), 0);
    tr_check_rc(late.rc, -TR_EBUSY, "refused while the context closes");
  }
  tr_assert_rc(tr_actor_nursery_close(an), 0);
  tr_portal_release(p);
  return 0;
}

/* ---- uids: errors name actors by uid, two actors of one name differ ------------------ */

static int uid_of(tr_actor_t *a, char *buf, size_t len) {
  int n = tr_actor_uid(a, buf, len);
  return n > 0 && (size_t)n < len;
}

static int is_uid_text(const char *s, const char *name) {
  size_t n = strlen(name);
  return s && strncmp(s, name, n) == 0 && s[n] == '@' && strlen(s + n + 1) == 32 &&
         strspn(s + n + 1, "0123456789abcdef") == 32;
}

TR_TEST(cancel, errors_name_actors_by_uid, .timeout = 60) {
  tr_actor_nursery_t *an;
  tr_portal_t *a1 = NULL, *a2 = NULL, *mid = NULL, *sl = NULL, *cn = NULL;
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_start_actor(an, "twin", all_ns, N_ALL, &a1), 0);
  tr_check_rc(tr_start_actor(an, "twin", all_ns, N_ALL, &a2), 0);
  char u1[TR_UID_LEN(16)] = "", u2[TR_UID_LEN(16)] = "", me[TR_UID_LEN(16)] = "";
  if (a1 && a2) {
    tr_check(uid_of(tr_portal_actor(a1), u1, sizeof u1), "uid of the first twin");
    tr_check(uid_of(tr_portal_actor(a2), u2, sizeof u2), "uid of the second twin");
    tr_check(is_uid_text(u1, "twin") && is_uid_text(u2, "twin"), "%s, %s", u1, u2);
    tr_check(strcmp(u1, u2) != 0, "one name, two uids");
    /* The process's half of the uuid is shared, the actor's is not. */
    uint8_t x[16], y[16];
    tr_actor_uuid(tr_portal_actor(a1), x);
    tr_actor_uuid(tr_portal_actor(a2), y);
    tr_check(memcmp(x, y, 8) == 0 && memcmp(x + 8, y + 8, 8) != 0, "uuid halves");
  }
  tr_check(uid_of(tr_self(), me, sizeof me) && is_uid_text(me, "root"), "root's uid %s", me);
  tr_check_rc(tr_actor_uid(NULL, me, sizeof me), -TR_EINVAL);

  /* A remote error's source and a ContextCancelled's canceller, by uid. */
  tr_ctx_t *ctx = NULL;
  if (a2)
    tr_check_rc(tr_portal_open_context(a2, "tcan.ctx.listener", NULL, NULL, &ctx, NULL), 0);
  if (ctx) {
    tr_check_rc(tr_ctx_cancel(ctx), 0);
    tr_check_rc(tr_ctx_cancel_wait(ctx, 5000 * MS), 0);
    tr_check_rc(tr_ctx_result(ctx, NULL), 0); /* absorbed: the outcome is readable */
    const tr_error_t *e = tr_error_last();
    tr_check_str_eq(tr_error_src_uid(e), u2, "the source is the second twin, by uid");
    tr_check_str_eq(tr_error_src(e), "twin", "the name accessor keeps the name");
    tr_check_str_eq(tr_error_canceller_uid(e), me, "the canceller by uid");
    tr_check_rc(tr_ctx_close(ctx, NULL), 0);
  }

  /* Relays: the middle actor's uid on the path, the canceller's kept. */
  tr_check_rc(tr_start_actor(an, "middle", all_ns, N_ALL, &mid), 0);
  tr_check_rc(tr_start_actor(an, "sleeper", all_ns, N_ALL, &sl), 0);
  tr_check_rc(tr_start_actor(an, "canceller", all_ns, N_ALL, &cn), 0);
  if (mid && sl && cn) {
    char um[TR_UID_LEN(16)], us[TR_UID_LEN(16)], uc[TR_UID_LEN(16)];
    tr_check(uid_of(tr_portal_actor(mid), um, sizeof um), "middle's uid");
    tr_check(uid_of(tr_portal_actor(sl), us, sizeof us), "sleeper's uid");
    tr_check(uid_of(tr_portal_actor(cn), uc, sizeof uc), "canceller's uid");
    /* Release: pairs with the acquire loads in the middle and canceller. */
    __atomic_store_n(&relay_sleeper, tr_portal_actor(sl), __ATOMIC_RELEASE);
    __atomic_store_n(&relay_canceller, tr_portal_actor(cn), __ATOMIC_RELEASE);
    tr_check_rc(tr_portal_run(mid, "tcan.relay.ctxc", NULL, NULL), -TR_ECTXCANCELED);
    const tr_error_t *e = tr_error_last();
    tr_check_str_eq(tr_error_src_uid(e), us);
    tr_check_str_eq(tr_error_canceller_uid(e), uc, "the canceller's uid survives the relay");
    tr_check_str_eq(tr_error_relay_uid(e, 0), um);
  }
  tr_assert_rc(tr_actor_nursery_close(an), 0);
  tr_portal_release(a1);
  tr_portal_release(a2);
  tr_portal_release(mid);
  tr_portal_release(sl);
  tr_portal_release(cn);
  return 0;
}
