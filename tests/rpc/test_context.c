/*
 * Streams and contexts in-process (tractor's open_stream_from, open_context,
 * Context and MsgStream tests): values in order and errors after them,
 * leaving a stream early, refusals by kind, started/stream misuse, two-way
 * streaming, remote errors cancelling the caller's scope, the
 * ContextCancelled rules of docs/PROTOCOL.md 8.3, flow control and
 * overruns, local broadcast and fan-in.
 *
 * Synchronisation is through the protocol (started values, stream values,
 * the end of a dialog); the callee's observations are recorded in atomic
 * globals, stored before the callee's function returns, so they are visible
 * once the caller has seen the dialog's outcome (the runtime sends Return,
 * Error or ContextCancelled only after the task has ended).
 */
#include <stdint.h>
#include <string.h>

#define TR_TEST_WORKERS 2
#include <tractor/testing.h>

#define MS (1000 * 1000LL)

/* ---- helpers ------------------------------------------------------------------ */

/* Arguments of tctx.stream.range: (base, count) as two native u64 (every
 * actor of the test runs in this process). */
static int range_args(uint64_t base, uint64_t count, tr_buf_t **out) {
  uint64_t v[2] = {base, count};
  return tr_buf_from(v, sizeof v, out);
}

static int send_u64(tr_stream_t *s, uint64_t v) {
  tr_buf_t *b;
  int rc = tr_buf_from_u64(v, &b);
  if (rc)
    return rc;
  rc = tr_stream_send(s, b);
  tr_buf_release(b);
  return rc;
}

/* Receives one u64: 0, or what tr_stream_recv returned (its error stays
 * the task's last error), or -TR_EAPP for a value that is not a u64. */
static int recv_u64(tr_stream_t *s, uint64_t *v) {
  tr_buf_t *b = NULL;
  int rc = tr_stream_recv(s, &b);
  if (rc)
    return rc;
  rc = b ? tr_buf_to_u64(b, v) : -TR_EMSGTYPE;
  tr_buf_release(b);
  return rc ? tr_fail("TypeError", "a stream value is not a u64") : 0;
}

static uint64_t buf_u64(const tr_buf_t *b) {
  uint64_t v = UINT64_MAX;
  if (b)
    tr_buf_to_u64(b, &v);
  return v;
}

static int boxed_is(const char *type) {
  const tr_error_t *e = tr_error_last();
  return e && tr_error_boxed_type(e) && strcmp(tr_error_boxed_type(e), type) == 0;
}

/* The callee stores each flag with release before its function returns;
 * the caller loads it with acquire after the dialog's outcome arrived (or
 * while polling).  The messages in between order them already; the atomics
 * keep the hand-off explicit and visible to ThreadSanitizer. */
static void flag_set(int *f, int v) { __atomic_store_n(f, v, __ATOMIC_RELEASE); }
static int flag_get(const int *f) { return __atomic_load_n(f, __ATOMIC_ACQUIRE); }

/* A sentinel for "the callee never got there". */
#define UNSET 1

/* ---- STREAM functions ---------------------------------------------------------- */

/* Sends base .. base+count-1, then returns (Stop, Return). */
static int range(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)result;
  uint64_t v[2];
  if (!args || tr_buf_len(args) != sizeof v)
    return tr_fail("TypeError", "range takes (base, count)");
  memcpy(v, tr_buf_data(args), sizeof v);
  tr_stream_t *s = NULL;
  int rc = tr_ctx_open_stream(ctx, &s);
  for (uint64_t i = 0; rc == 0 && i < v[1]; i++)
    rc = send_u64(s, v[0] + i);
  return rc;
}
TR_EXPORT_STREAM("tctx.stream", "range", range)

static int fail_after_5(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)args;
  (void)result;
  tr_stream_t *s = NULL;
  int rc = tr_ctx_open_stream(ctx, &s);
  for (uint64_t i = 0; rc == 0 && i < 5; i++)
    rc = send_u64(s, i);
  return rc ? rc : tr_fail("ValueError", "failed after %d values", 5);
}
TR_EXPORT_STREAM("tctx.stream", "fail_after_5", fail_after_5)

/* What the endless streamer's last send or checkpoint returned. */
static int forever_rc = UNSET;

static int forever(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)args;
  (void)result;
  tr_stream_t *s = NULL;
  int rc = tr_ctx_open_stream(ctx, &s);
  if (rc)
    return rc;
  for (uint64_t i = 0;; i++) {
    /* A send with credit left need not block, so a checkpoint per value
     * makes sure the Cancel is seen even then. */
    rc = send_u64(s, i);
    if (rc == 0)
      rc = tr_checkpoint();
    if (rc) {
      flag_set(&forever_rc, rc);
      return rc;
    }
  }
}
TR_EXPORT_STREAM("tctx.stream", "forever", forever)

static int stream_started_rc = UNSET;

static int started_in_stream(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)args;
  (void)result;
  flag_set(&stream_started_rc, tr_ctx_started(ctx, NULL));
  return 0;
}
TR_EXPORT_STREAM("tctx.stream", "started_here", started_in_stream)

/* ---- FN functions ----------------------------------------------------------------- */

/* forever_rc, negated into a u64 (TR_ECANCELED for -TR_ECANCELED). */
static int get_forever_rc(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)ctx;
  (void)args;
  return tr_buf_from_u64((uint64_t)(int64_t)-flag_get(&forever_rc), result);
}
TR_EXPORT_FN("tctx.misc", "forever_rc", get_forever_rc)

static int started_in_fn(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)args;
  return tr_buf_from_u64((uint64_t)(int64_t)-tr_ctx_started(ctx, NULL), result);
}
TR_EXPORT_FN("tctx.misc", "started_here", started_in_fn)

/* The actor the canceller is to cancel; set by the test before it calls. */
static tr_actor_t *peer_to_cancel;

/* Cancels peer_to_cancel's whole actor through a portal of its own and
 * returns whether the cancel was acknowledged (1, or 0). */
static int cancel_peer(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)ctx;
  (void)args;
  tr_actor_t *a = __atomic_load_n(&peer_to_cancel, __ATOMIC_ACQUIRE);
  if (!a)
    return tr_fail("ValueError", "no peer to cancel");
  tr_portal_t *p;
  int rc = tr_portal_from_actor(a, &p);
  if (rc)
    return rc;
  int acked = -1;
  rc = tr_portal_cancel_actor(p, 1000 * MS, &acked);
  tr_portal_release(p);
  return rc ? rc : tr_buf_from_u64((uint64_t)(int64_t)acked, result);
}
TR_EXPORT_FN("tctx.misc", "cancel_peer", cancel_peer)

/* In a namespace no daemon enables. */
static int secret(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)ctx;
  (void)args;
  (void)result;
  return 0;
}
TR_EXPORT_FN("tctx.hidden", "secret", secret)
TR_EXPORT_STREAM("tctx.hidden", "secret_stream", secret)
TR_EXPORT_CONTEXT("tctx.hidden", "secret_ctx", secret)

/* ---- CONTEXT functions ------------------------------------------------------------ */

static int simple(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)args;
  tr_buf_t *first;
  int rc = tr_buf_from_u64(42, &first);
  if (rc)
    return rc;
  rc = tr_ctx_started(ctx, first);
  tr_buf_release(first);
  return rc ? rc : tr_buf_from_u64(7, result);
}
TR_EXPORT_CONTEXT("tctx.ctx", "simple", simple)

static int misuse_open_early = UNSET, misuse_started_again = UNSET, misuse_open_again = UNSET,
           misuse_end = UNSET;

static int misuse(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)args;
  (void)result;
  tr_stream_t *s = NULL, *again = NULL;
  flag_set(&misuse_open_early, tr_ctx_open_stream(ctx, &s));
  int rc = tr_ctx_started(ctx, NULL);
  if (rc)
    return rc;
  flag_set(&misuse_started_again, tr_ctx_started(ctx, NULL));
  rc = tr_ctx_open_stream(ctx, &s);
  if (rc)
    return rc;
  flag_set(&misuse_open_again, tr_ctx_open_stream(ctx, &again));
  /* Stay in the context until the caller's Stop, so that the caller's own
   * misuse checks run while the context is open. */
  tr_buf_t *m = NULL;
  rc = tr_stream_recv(s, &m);
  tr_buf_release(m);
  flag_set(&misuse_end, rc);
  return rc == -TR_EEOF ? 0 : rc;
}
TR_EXPORT_CONTEXT("tctx.ctx", "misuse", misuse)

/* Answers every value v with v + 1 until the caller's Stop; returns how
 * many it received. */
static int echo(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)args;
  int rc = tr_ctx_started(ctx, NULL);
  tr_stream_t *s = NULL;
  if (rc == 0)
    rc = tr_ctx_open_stream(ctx, &s);
  uint64_t n = 0;
  while (rc == 0) {
    uint64_t v;
    rc = recv_u64(s, &v);
    if (rc == 0) {
      n++;
      rc = send_u64(s, v + 1);
    }
  }
  return rc == -TR_EEOF ? tr_buf_from_u64(n, result) : rc;
}
TR_EXPORT_CONTEXT("tctx.ctx", "echo", echo)

static int fail_on_msg(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)args;
  (void)result;
  int rc = tr_ctx_started(ctx, NULL);
  tr_stream_t *s = NULL;
  if (rc == 0)
    rc = tr_ctx_open_stream(ctx, &s);
  uint64_t v = 0;
  if (rc == 0)
    rc = recv_u64(s, &v);
  return rc ? rc : tr_fail("ValueError", "refusing message %llu", (unsigned long long)v);
}
TR_EXPORT_CONTEXT("tctx.ctx", "fail_on_msg", fail_on_msg)

/* What the sleeper's sleep returned. */
static int sleeper_rc = UNSET;

static int sleeper(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)args;
  (void)result;
  int rc = tr_ctx_started(ctx, NULL);
  if (rc)
    return rc;
  rc = tr_sleep_until(TR_NO_DEADLINE);
  flag_set(&sleeper_rc, rc);
  return rc;
}
TR_EXPORT_CONTEXT("tctx.ctx", "sleeper", sleeper)

static int self_cancel(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)args;
  (void)result;
  int rc = tr_ctx_started(ctx, NULL);
  if (rc)
    return rc;
  tr_ctx_cancel(ctx);
  return tr_sleep_until(TR_NO_DEADLINE); /* -TR_ECANCELED */
}
TR_EXPORT_CONTEXT("tctx.ctx", "self_cancel", self_cancel)

/* The flooder's progress: values sent, and the index and code of the send
 * that failed (-1 / UNSET while none has). */
static int flood_sent, flood_fail_at = -1, flood_fail_rc = UNSET;

#define FLOOD_N 200

static int flood(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)args;
  (void)result;
  int rc = tr_ctx_started(ctx, NULL);
  tr_stream_t *s = NULL;
  if (rc == 0)
    rc = tr_ctx_open_stream(ctx, &s);
  for (int i = 0; rc == 0 && i < FLOOD_N; i++) {
    rc = send_u64(s, (uint64_t)i);
    if (rc) {
      /* The code first: the caller reads flood_fail_at, then the code. */
      flag_set(&flood_fail_rc, rc);
      flag_set(&flood_fail_at, i);
    } else {
      /* Release: pairs with the caller's polling acquire load. */
      __atomic_add_fetch(&flood_sent, 1, __ATOMIC_RELEASE);
    }
  }
  return rc;
}
TR_EXPORT_CONTEXT("tctx.ctx", "flood", flood)

/* Streams args' count of values, then returns that count. */
static int count_out(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  uint64_t n = 0;
  tr_stream_t *s = NULL;
  int rc = tr_buf_to_u64(args, &n);
  if (rc == 0)
    rc = tr_ctx_started(ctx, NULL);
  if (rc == 0)
    rc = tr_ctx_open_stream(ctx, &s);
  for (uint64_t i = 0; rc == 0 && i < n; i++)
    rc = send_u64(s, i);
  return rc ? rc : tr_buf_from_u64(n, result);
}
TR_EXPORT_CONTEXT("tctx.ctx", "count_out", count_out)

/* Sends ODD_ROUNDS rounds of ODD_WINDOW values, waiting for a "go" from
 * the caller between rounds; returns how many it sent.  With an odd window
 * under TR_OVERRUN_ERROR, a round fails (StreamOverrun) if the caller's
 * side kept back credit for values it had consumed. */
#define ODD_WINDOW 3
#define ODD_ROUNDS 4
static int odd_window_burst(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)args;
  int rc = tr_ctx_started(ctx, NULL);
  tr_stream_t *s = NULL;
  if (rc == 0)
    rc = tr_ctx_open_stream(ctx, &s);
  uint64_t n = 0, go;
  for (int r = 0; rc == 0 && r < ODD_ROUNDS; r++) {
    for (int i = 0; rc == 0 && i < ODD_WINDOW; i++)
      if ((rc = send_u64(s, n)) == 0)
        n++;
    if (rc == 0)
      rc = recv_u64(s, &go);
  }
  return rc ? rc : tr_buf_from_u64(n, result);
}
TR_EXPORT_CONTEXT("tctx.ctx", "odd_window_burst", odd_window_burst)

static const char *const all_ns[] = {"tctx.stream", "tctx.misc", "tctx.ctx"};
#define N_ALL (sizeof all_ns / sizeof all_ns[0])

/* ---- 1. values, end, errors -------------------------------------------------- */

/* tractor: test_legacy_one_way_streaming.py::test_stream_from_single_subactor,
 * and a stream function that raises after yielding some values. */
TR_TEST(context, stream_from_basic, .timeout = 60) {
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL;
  tr_buf_t *args;
  tr_assert_rc(range_args(0, 100, &args), 0);
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_start_actor(an, "streamer", all_ns, N_ALL, &p), 0);
  tr_stream_t *s = NULL;
  if (p)
    tr_check_rc(tr_portal_open_stream_from(p, "tctx.stream.range", args, NULL, &s), 0);
  if (s) {
    uint64_t n = 0, v = 0;
    int rc;
    while ((rc = recv_u64(s, &v)) == 0) {
      tr_check_eq(v, n, "values in order");
      n++;
    }
    tr_check_rc(rc, -TR_EEOF);
    tr_check_eq(n, 100);
    tr_check_rc(tr_stream_close(s), 0);
  }

  s = NULL;
  if (p)
    tr_check_rc(tr_portal_open_stream_from(p, "tctx.stream.fail_after_5", NULL, NULL, &s), 0);
  if (s) {
    uint64_t n = 0, v = 0;
    int rc;
    while ((rc = recv_u64(s, &v)) == 0) {
      tr_check_eq(v, n, "values in order");
      n++;
    }
    tr_check_eq(n, 5, "the values before the error");
    tr_check_rc(rc, -TR_EREMOTE);
    tr_check(boxed_is("ValueError"), "boxed ValueError");
    tr_check(tr_error_src(tr_error_last()) &&
                 strcmp(tr_error_src(tr_error_last()), "streamer") == 0,
             "raised in the streamer");
    /* "returns the remote error if the function had failed" */
    tr_check_rc(tr_stream_close(s), -TR_EREMOTE);
  }

  /* tr_ctx_started in a STREAM function refuses and sends nothing. */
  s = NULL;
  stream_started_rc = UNSET;
  if (p)
    tr_check_rc(tr_portal_open_stream_from(p, "tctx.stream.started_here", NULL, NULL, &s), 0);
  if (s) {
    tr_buf_t *m = NULL;
    tr_check_rc(tr_stream_recv(s, &m), -TR_EEOF);
    tr_buf_release(m);
    tr_check_rc(tr_stream_close(s), 0);
    tr_check_rc(flag_get(&stream_started_rc), -TR_EPERM);
  }
  tr_assert_rc(tr_actor_nursery_close(an), 0);
  tr_portal_release(p);
  tr_buf_release(args);
  return 0;
}

/* A task actor with a bounded mailbox (tr_spawn_opts_t.mailbox_limit 2)
 * reads a stream of 1000 values: the limit bounds application messages
 * only, so every message of the dialog arrives (its window bounds them),
 * none is refused and lost.  It reports the count to the test's actor. */
typedef struct bounded_run {
  tr_actor_t *report_to;
  uint64_t n;
  int rc;
} bounded_run_t;

static int bounded_reader(void *arg) {
  bounded_run_t *b = arg;
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL;
  tr_buf_t *args = NULL;
  tr_stream_t *s = NULL;
  int rc = range_args(0, 1000, &args);
  if (rc == 0 && (rc = tr_actor_nursery_open(&an, NULL)) == 0) {
    rc = tr_start_actor(an, "streamer", all_ns, N_ALL, &p);
    if (rc == 0)
      rc = tr_portal_open_stream_from(p, "tctx.stream.range", args, NULL, &s);
    uint64_t v = 0;
    while (rc == 0 && (rc = recv_u64(s, &v)) == 0 && v == b->n)
      b->n++;
    if (rc == -TR_EEOF)
      rc = s ? tr_stream_close(s) : 0;
    int crc = tr_actor_nursery_close(an);
    rc = rc ? rc : crc;
  }
  tr_portal_release(p);
  tr_buf_release(args);
  b->rc = rc;
  (void)tr_send_u64(b->report_to, 1, 0);
  return rc;
}

TR_TEST(context, a_bounded_mailbox_still_gets_every_dialog_message, .timeout = 60) {
  static bounded_run_t b; /* read by the reader's actor */
  b.report_to = tr_self();
  b.n = 0;
  b.rc = -1;
  tr_spawn_opts_t o = {.name = "bounded", .mailbox_limit = 2};
  tr_actor_t *a = NULL;
  tr_assert_rc(tr_spawn_task_actor(bounded_reader, &b, &o, &a), 0);
  tr_msg_t *m = NULL;
  tr_check_rc(tr_recv(&m), 0);
  tr_msg_free(m);
  tr_check_rc(b.rc, 0);
  tr_check_eq(b.n, 1000, "every value, in order");
  tr_actor_release(a);
  return 0;
}

/* ---- 2. leaving a stream early --------------------------------------------------- */

/* tractor: test_cancellation.py::test_cancel_infinite_streamer (leaving the
 * loop early cancels the far task; the daemon keeps serving). */
TR_TEST(context, stream_from_early_close_cancels_remote, .timeout = 60) {
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL;
  forever_rc = UNSET;
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_start_actor(an, "streamer", all_ns, N_ALL, &p), 0);
  tr_stream_t *s = NULL;
  if (p)
    tr_check_rc(tr_portal_open_stream_from(p, "tctx.stream.forever", NULL, NULL, &s), 0);
  if (s) {
    for (uint64_t i = 0; i < 10; i++) {
      uint64_t v = UINT64_MAX;
      tr_check_rc(recv_u64(s, &v), 0);
      tr_check_eq(v, i);
    }
    /* Cancel, then the ContextCancelled answer (sent once the task has
     * ended) is absorbed. */
    tr_check_rc(tr_stream_close(s), 0);
    tr_buf_t *res = NULL;
    tr_check_rc(tr_portal_run(p, "tctx.misc.forever_rc", NULL, &res), 0);
    tr_check_eq(buf_u64(res), TR_ECANCELED, "the remote task saw -TR_ECANCELED");
    tr_buf_release(res);
  }
  tr_assert_rc(tr_actor_nursery_close(an), 0);
  tr_portal_release(p);
  return 0;
}

/* ---- 3. refusals ------------------------------------------------------------------ */

static void expect_stream_refused(tr_portal_t *p, const char *fn, int want) {
  tr_stream_t *s = NULL;
  int rc = tr_portal_open_stream_from(p, fn, NULL, NULL, &s);
  tr_check_rc(rc, want, "open_stream_from %s", fn);
  if (rc == 0)
    tr_stream_close(s);
}

static void expect_context_refused(tr_portal_t *p, const char *fn, int want) {
  tr_ctx_t *ctx = NULL;
  tr_buf_t *first = NULL;
  int rc = tr_portal_open_context(p, fn, NULL, NULL, &ctx, &first);
  tr_check_rc(rc, want, "open_context %s", fn);
  if (rc == 0) {
    tr_ctx_cancel(ctx);
    tr_ctx_close(ctx, NULL);
  }
  tr_buf_release(first);
}

static void expect_run_refused(tr_portal_t *p, const char *fn, int want) {
  tr_buf_t *res = NULL;
  tr_check_rc(tr_portal_run(p, fn, NULL, &res), want, "run %s", fn);
  tr_buf_release(res);
}

/* tractor: test_rpc.py::test_rpc_errors (ModuleNotExposed, a missing
 * function) and Portal.run refusing the wrong kind of function. */
TR_TEST(context, wrong_kinds, .timeout = 60) {
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL;
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_start_actor(an, "kinds", all_ns, N_ALL, &p), 0);
  if (p) {
    expect_stream_refused(p, "tctx.misc.forever_rc", -TR_EFUNCKIND);
    expect_stream_refused(p, "tctx.ctx.simple", -TR_EFUNCKIND);
    expect_context_refused(p, "tctx.stream.range", -TR_EFUNCKIND);
    expect_run_refused(p, "tctx.ctx.simple", -TR_EFUNCKIND);

    expect_run_refused(p, "tctx.misc.nope", -TR_ENOFUNC);
    expect_stream_refused(p, "tctx.stream.nope", -TR_ENOFUNC);
    expect_context_refused(p, "tctx.ctx.nope", -TR_ENOFUNC);

    expect_run_refused(p, "tctx.hidden.secret", -TR_ENOTEXPOSED);
    /* The kind is checked by the caller before anything is sent
     * (PROTOCOL.md section 5), so exposure is tested with the right kinds. */
    expect_stream_refused(p, "tctx.hidden.secret", -TR_EFUNCKIND);
    expect_stream_refused(p, "tctx.hidden.secret_stream", -TR_ENOTEXPOSED);
    expect_context_refused(p, "tctx.hidden.secret_ctx", -TR_ENOTEXPOSED);
  }
  tr_assert_rc(tr_actor_nursery_close(an), 0);
  tr_portal_release(p);
  return 0;
}

/* ---- 4. a simple context ------------------------------------------------------------ */

/* tractor: test_context_stream_semantics.py::test_simple_context. */
TR_TEST(context, ctx_simple, .timeout = 60) {
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL;
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_start_actor(an, "simpled", all_ns, N_ALL, &p), 0);
  tr_ctx_t *ctx = NULL;
  tr_buf_t *first = NULL;
  if (p)
    tr_check_rc(tr_portal_open_context(p, "tctx.ctx.simple", NULL, NULL, &ctx, &first), 0);
  if (ctx) {
    tr_check_eq(buf_u64(first), 42, "the started value");
    tr_check_str_eq(tr_ctx_peer(ctx), "simpled");
    for (int i = 0; i < 2; i++) { /* the same outcome on every call */
      tr_buf_t *res = NULL;
      tr_check_rc(tr_ctx_result(ctx, &res), 0);
      tr_check_eq(buf_u64(res), 7);
      tr_buf_release(res);
    }
    tr_buf_t *res = NULL;
    tr_check_rc(tr_ctx_close(ctx, &res), 0);
    tr_check_eq(buf_u64(res), 7);
    tr_buf_release(res);
  }
  tr_buf_release(first);
  tr_assert_rc(tr_actor_nursery_close(an), 0);
  tr_portal_release(p);
  return 0;
}

/* tractor: Context.result() drains (drain_to_final_msg): the callee has
 * many windows of values still to send when the caller asks for the
 * result, reading none of them; the values are dropped as they come and
 * their credit returned, so the callee gets to its return.  Both ways in:
 * tr_ctx_result, and tr_ctx_close alone. */
TR_TEST(context, result_and_close_drain_what_is_still_coming, .timeout = 60) {
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL;
  tr_buf_t *n = NULL;
  tr_assert_rc(tr_buf_from_u64(500, &n), 0);
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_start_actor(an, "counter", all_ns, N_ALL, &p), 0);
  tr_ctx_opts_t opts = {.window = 4};
  for (int close_only = 0; p && close_only < 2; close_only++) {
    tr_ctx_t *ctx = NULL;
    tr_check_rc(tr_portal_open_context(p, "tctx.ctx.count_out", n, &opts, &ctx, NULL), 0);
    if (!ctx)
      break;
    tr_buf_t *res = NULL;
    if (!close_only) {
      tr_check_rc(tr_ctx_result(ctx, &res), 0);
      tr_check_eq(buf_u64(res), 500, "tr_ctx_result");
      tr_buf_release(res);
      res = NULL;
    }
    tr_check_rc(tr_ctx_close(ctx, &res), 0);
    tr_check_eq(buf_u64(res), 500, "tr_ctx_close");
    tr_buf_release(res);
  }
  tr_assert_rc(tr_actor_nursery_close(an), 0);
  tr_portal_release(p);
  tr_buf_release(n);
  return 0;
}

/* ---- 5. misuse ---------------------------------------------------------------------- */

/* tractor: test_context_stream_semantics.py::test_started_misuse. */
TR_TEST(context, started_misuse, .timeout = 60) {
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL;
  misuse_open_early = misuse_started_again = misuse_open_again = misuse_end = UNSET;
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_start_actor(an, "misused", all_ns, N_ALL, &p), 0);
  tr_ctx_t *ctx = NULL;
  tr_buf_t *first = (tr_buf_t *)1;
  if (p)
    tr_check_rc(tr_portal_open_context(p, "tctx.ctx.misuse", NULL, NULL, &ctx, &first), 0);
  if (ctx) {
    tr_check(first == NULL, "an empty started value is NULL");
    tr_check_rc(tr_ctx_started(ctx, NULL), -TR_EPERM, "started on the caller's side");
    tr_stream_t *s = NULL, *again = NULL;
    tr_check_rc(tr_ctx_open_stream(ctx, &s), 0);
    tr_check_rc(tr_ctx_open_stream(ctx, &again), -TR_EBUSY);
    if (s)
      tr_check_rc(tr_stream_close(s), 0); /* Stop: the callee returns */
    tr_check_rc(tr_ctx_close(ctx, NULL), 0);
    tr_check_rc(flag_get(&misuse_open_early), -TR_EPERM, "stream before started");
    tr_check_rc(flag_get(&misuse_started_again), -TR_EBUSY, "started twice");
    tr_check_rc(flag_get(&misuse_open_again), -TR_EBUSY, "stream opened twice");
    tr_check_rc(flag_get(&misuse_end), -TR_EEOF, "the caller's Stop");
  }
  /* tr_ctx_started in a FN function: refused there too. */
  if (p) {
    tr_buf_t *res = NULL;
    tr_check_rc(tr_portal_run(p, "tctx.misc.started_here", NULL, &res), 0);
    tr_check_eq(buf_u64(res), TR_EPERM);
    tr_buf_release(res);
  }
  tr_assert_rc(tr_actor_nursery_close(an), 0);
  tr_portal_release(p);
  return 0;
}

/* ---- 6. two-way streaming ------------------------------------------------------------- */

#define PINGS 500

/* tractor: test_2way.py::test_simple_rpc (ping/pong over a context stream). */
TR_TEST(context, ping_pong_2way, .timeout = 60) {
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL;
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_start_actor(an, "ponger", all_ns, N_ALL, &p), 0);
  tr_ctx_t *ctx = NULL;
  if (p)
    tr_check_rc(tr_portal_open_context(p, "tctx.ctx.echo", NULL, NULL, &ctx, NULL), 0);
  if (ctx) {
    tr_stream_t *s = NULL;
    tr_check_rc(tr_ctx_open_stream(ctx, &s), 0);
    uint64_t replies = 0;
    for (uint64_t i = 0; s && i < PINGS; i++) {
      uint64_t v = UINT64_MAX;
      if (send_u64(s, i) != 0 || recv_u64(s, &v) != 0) {
        tr_check(0, "ping %llu failed", (unsigned long long)i);
        break;
      }
      tr_check_eq(v, i + 1, "the pong of ping %llu", (unsigned long long)i);
      replies++;
    }
    tr_check_eq(replies, PINGS);
    if (s)
      tr_check_rc(tr_stream_close(s), 0); /* Stop: the callee's recv ends */
    tr_buf_t *res = NULL;
    tr_check_rc(tr_ctx_close(ctx, &res), 0);
    tr_check_eq(buf_u64(res), PINGS, "the callee's count");
    tr_buf_release(res);
  }
  tr_assert_rc(tr_actor_nursery_close(an), 0);
  tr_portal_release(p);
  return 0;
}

/* ---- 7. a remote error cancels the caller's scope --------------------------------------- */

/* tractor: the remote-error case of test_context_stream_semantics.py
 * (Context._maybe_cancel_and_set_remote_error cancels the caller's
 * open_context scope; the error is raised on leaving it). */
TR_TEST(context, callee_error_cancels_caller_scope, .timeout = 60) {
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL;
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_start_actor(an, "failer", all_ns, N_ALL, &p), 0);
  tr_ctx_t *ctx = NULL;
  if (p)
    tr_check_rc(tr_portal_open_context(p, "tctx.ctx.fail_on_msg", NULL, NULL, &ctx, NULL), 0);
  if (ctx) {
    tr_stream_t *s = NULL;
    tr_check_rc(tr_ctx_open_stream(ctx, &s), 0);
    if (s)
      tr_check_rc(send_u64(s, 1), 0);
    int64_t t0 = tr_now();
    tr_check_rc(tr_sleep(10000 * MS), -TR_ECANCELED);
    tr_check(tr_now() - t0 < 5000 * MS, "the remote error cancelled the sleep promptly");
    if (s) { /* the stream's operations return the error, not the cancellation it caused */
      uint64_t v = 0;
      tr_check_rc(send_u64(s, 2), -TR_EREMOTE);
      tr_check(boxed_is("ValueError"), "tr_stream_send: boxed ValueError");
      tr_check_rc(recv_u64(s, &v), -TR_EREMOTE);
      tr_check(boxed_is("ValueError"), "tr_stream_recv: boxed ValueError");
    }
    tr_check_rc(tr_ctx_close(ctx, NULL), -TR_EREMOTE);
    const tr_error_t *e = tr_error_last();
    tr_check(boxed_is("ValueError"), "boxed ValueError");
    tr_check(e && tr_error_src(e) && strcmp(tr_error_src(e), "failer") == 0, "source");
  }
  tr_assert_rc(tr_actor_nursery_close(an), 0);
  tr_portal_release(p);
  return 0;
}

/* ---- 8. ContextCancelled (PROTOCOL.md 8.3) ---------------------------------------------- */

static int canceller_is(const char *name) {
  const char *c = tr_error_canceller(tr_error_last());
  return c && name && strcmp(c, name) == 0;
}

static int src_is(const char *name) {
  const char *c = tr_error_src(tr_error_last());
  return c && name && strcmp(c, name) == 0;
}

/* tractor: test_context_stream_semantics.py::test_caller_cancels
 * (cancel_method='ctx'): rule 8.3 (a), the self-cancel is absorbed. */
TR_TEST(context, ctxc_caller_cancels, .timeout = 60) {
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL;
  sleeper_rc = UNSET;
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_start_actor(an, "sleepy", all_ns, N_ALL, &p), 0);
  tr_ctx_t *ctx = NULL;
  if (p)
    tr_check_rc(tr_portal_open_context(p, "tctx.ctx.sleeper", NULL, NULL, &ctx, NULL), 0);
  if (ctx) {
    tr_check_rc(tr_ctx_cancel(ctx), 0);
    /* Absorbed, but the outcome still describes the ContextCancelled. */
    tr_check_rc(tr_ctx_result(ctx, NULL), 0);
    const tr_error_t *e = tr_error_last();
    tr_check(e && tr_error_code(e) == -TR_ECTXCANCELED, "the outcome is a ContextCancelled");
    tr_check(canceller_is("root"), "this side cancelled");
    tr_check(src_is("sleepy"), "raised in the callee");
    tr_check_rc(tr_ctx_close(ctx, NULL), 0);
    tr_check_rc(flag_get(&sleeper_rc), -TR_ECANCELED, "the callee's sleep was cancelled");
  }
  tr_assert_rc(tr_actor_nursery_close(an), 0);
  tr_portal_release(p);
  return 0;
}

/* tractor: test_context_stream_semantics.py::test_callee_cancels_before_started
 * (the callee calls Context.cancel() on itself), here after started so
 * that the context opens: rule 8.3 (b), the caller did not ask for it, so
 * it is raised. */
TR_TEST(context, ctxc_callee_cancels_itself, .timeout = 60) {
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL;
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_start_actor(an, "selfish", all_ns, N_ALL, &p), 0);
  tr_ctx_t *ctx = NULL;
  if (p)
    tr_check_rc(tr_portal_open_context(p, "tctx.ctx.self_cancel", NULL, NULL, &ctx, NULL), 0);
  if (ctx) {
    tr_check_rc(tr_ctx_result(ctx, NULL), -TR_ECTXCANCELED);
    tr_check(canceller_is("selfish"), "the callee cancelled itself");
    tr_check(src_is("selfish"), "raised in the callee");
    tr_check_rc(tr_ctx_close(ctx, NULL), -TR_ECTXCANCELED);
    tr_check(canceller_is("selfish"), "the same outcome on close");
  }
  tr_assert_rc(tr_actor_nursery_close(an), 0);
  tr_portal_release(p);
  return 0;
}

/* tractor: test_context_stream_semantics.py::test_caller_cancels
 * (cancel_method='portal'): cancelling the callee's whole actor is not a
 * cancel of this context, so the ContextCancelled is raised (8.3 (b)). */
TR_TEST(context, ctxc_caller_cancels_actor, .timeout = 60) {
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL;
  sleeper_rc = UNSET;
  const char *me = tr_actor_name(tr_self());
  tr_assert_str_eq(me, "root");
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_start_actor(an, "victim", all_ns, N_ALL, &p), 0);
  tr_ctx_t *ctx = NULL;
  if (p)
    tr_check_rc(tr_portal_open_context(p, "tctx.ctx.sleeper", NULL, NULL, &ctx, NULL), 0);
  if (ctx) {
    int acked = -1;
    tr_check_rc(tr_portal_cancel_actor(p, 1000 * MS, &acked), 0);
    tr_check_eq(acked, 1);
    tr_check_rc(tr_ctx_close(ctx, NULL), -TR_ECTXCANCELED);
    tr_check(canceller_is(me), "the caller's actor is the canceller");
    tr_check(src_is("victim"), "raised in the callee");
    tr_check_rc(flag_get(&sleeper_rc), -TR_ECANCELED, "the callee's sleep was cancelled");
  }
  tr_assert_rc(tr_actor_nursery_close(an), 0);
  tr_portal_release(p);
  return 0;
}

/* tractor: test_inter_peer_cancellation.py::test_peer_canceller: a third
 * actor cancels the callee; the caller raises with that actor as the
 * canceller (8.3 (b)). */
TR_TEST(context, ctxc_peer_canceller, .timeout = 60) {
  tr_actor_nursery_t *an;
  tr_portal_t *sl = NULL, *cn = NULL;
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_start_actor(an, "sleeper", all_ns, N_ALL, &sl), 0);
  tr_check_rc(tr_start_actor(an, "canceller", all_ns, N_ALL, &cn), 0);
  tr_ctx_t *ctx = NULL;
  if (sl && cn)
    tr_check_rc(tr_portal_open_context(sl, "tctx.ctx.sleeper", NULL, NULL, &ctx, NULL), 0);
  if (ctx) {
    /* Release: pairs with the acquire in cancel_peer (the Start message
     * orders it anyway). */
    __atomic_store_n(&peer_to_cancel, tr_portal_actor(sl), __ATOMIC_RELEASE);
    /* The sleeper's ContextCancelled reaches this actor before the
     * canceller gets its CancelAck (PROTOCOL.md 8.2: step 3 before 6), and
     * it cancels this context's scope; the shield keeps the call to the
     * canceller alive so that its answer is read. */
    tr_scope_t shield;
    int shielded = tr_scope_open(&shield, TR_NO_DEADLINE, 1) == 0;
    tr_check(shielded, "shield opened");
    tr_buf_t *res = NULL;
    tr_check_rc(tr_portal_run(cn, "tctx.misc.cancel_peer", NULL, &res), 0);
    tr_check_eq(buf_u64(res), 1, "the canceller's cancel was acknowledged");
    tr_buf_release(res);
    if (shielded)
      tr_check_rc(tr_scope_close(&shield), 0);
    tr_check_rc(tr_ctx_close(ctx, NULL), -TR_ECTXCANCELED);
    tr_check(canceller_is("canceller"), "the third actor is the canceller");
    tr_check(src_is("sleeper"), "raised in the cancelled peer");
  }
  tr_assert_rc(tr_actor_nursery_close(an), 0);
  tr_portal_release(sl);
  tr_portal_release(cn);
  return 0;
}

/* ---- 9. flow control ----------------------------------------------------------------- */

/* tractor: test_context_stream_semantics.py::test_one_end_stream_not_opened
 * (the caller never opens its stream): blocking mode holds the sender at
 * the window; error mode fails its next send with StreamOverrun. */
TR_TEST(context, overrun_block_vs_error, .timeout = 60) {
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL;
  flood_sent = 0;
  flood_fail_at = -1;
  flood_fail_rc = UNSET;
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_start_actor(an, "flooder", all_ns, N_ALL, &p), 0);

  /* Blocking (the default). */
  tr_ctx_t *ctx = NULL;
  if (p)
    tr_check_rc(tr_portal_open_context(p, "tctx.ctx.flood", NULL, NULL, &ctx, NULL), 0);
  if (ctx) {
    int64_t until = tr_now() + 10000 * MS;
    while (__atomic_load_n(&flood_sent, __ATOMIC_ACQUIRE) < TR_STREAM_WINDOW && tr_now() < until)
      if (tr_sleep(1 * MS) != 0)
        break;
    /* The sender should now be blocked on credit.  Waiting a little longer
     * only gives a sender that overshoots the window the time to show it;
     * a correct one stays at 64 however long this lasts. */
    tr_check_rc(tr_sleep(50 * MS), 0);
    tr_check_eq(__atomic_load_n(&flood_sent, __ATOMIC_ACQUIRE), TR_STREAM_WINDOW,
                "exactly one window sent");
    tr_check_eq(flag_get(&flood_fail_at), -1, "no send has failed yet");
    tr_check_rc(tr_ctx_cancel(ctx), 0);
    tr_check_rc(tr_ctx_close(ctx, NULL), 0);
    tr_check_eq(flag_get(&flood_fail_at), TR_STREAM_WINDOW, "the blocked send");
    tr_check_rc(flag_get(&flood_fail_rc), -TR_ECANCELED, "the blocked send was cancelled");
    tr_check_eq(__atomic_load_n(&flood_sent, __ATOMIC_ACQUIRE), TR_STREAM_WINDOW);
  }

  /* Error mode. */
  flood_sent = 0;
  flood_fail_at = -1;
  flood_fail_rc = UNSET;
  tr_ctx_opts_t opts = {.overrun = TR_OVERRUN_ERROR};
  ctx = NULL;
  if (p)
    tr_check_rc(tr_portal_open_context(p, "tctx.ctx.flood", NULL, &opts, &ctx, NULL), 0);
  if (ctx) {
    /* Not tr_ctx_result: its drain would return credit and let the
     * callee go on.  The callee's error cancels this context's scope,
     * which ends the sleep (test 7). */
    int64_t t0 = tr_now();
    tr_check_rc(tr_sleep(10000 * MS), -TR_ECANCELED);
    tr_check(tr_now() - t0 < 5000 * MS, "the overrun ended the sleep promptly");
    /* PROTOCOL.md section 3: a StreamOverrun keeps its own code. */
    tr_check_rc(tr_ctx_close(ctx, NULL), -TR_EOVERRUN);
    tr_check(boxed_is("StreamOverrun"), "boxed StreamOverrun");
    tr_check(src_is("flooder"), "raised in the callee");
    tr_check_eq(flag_get(&flood_fail_at), TR_STREAM_WINDOW, "the send past the window");
    tr_check_rc(flag_get(&flood_fail_rc), -TR_EOVERRUN);
    tr_check_eq(__atomic_load_n(&flood_sent, __ATOMIC_ACQUIRE), TR_STREAM_WINDOW);
  }
  tr_assert_rc(tr_actor_nursery_close(an), 0);
  tr_portal_release(p);
  return 0;
}

/* Under TR_OVERRUN_ERROR a receiver that has consumed everything and
 * waits gives back all its credit (half a window at a time is not all of
 * an odd window): the sender's next window is accepted whole.  The caller
 * here waits briefly in tr_stream_recv (that returns the credit) before
 * its "go", which the callee reads after the Credit, in order. */
TR_TEST(context, an_error_mode_sender_gets_back_all_consumed_credit, .timeout = 60) {
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL;
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_start_actor(an, "burster", all_ns, N_ALL, &p), 0);
  tr_ctx_opts_t opts = {.window = ODD_WINDOW, .overrun = 7};
  tr_ctx_t *ctx = NULL;
  tr_stream_t *s = NULL;
  if (p) /* neither policy: refused, nothing sent */
    tr_check_rc(tr_portal_open_context(p, "tctx.ctx.odd_window_burst", NULL, &opts, &ctx, NULL),
                -TR_EINVAL);
  opts.overrun = TR_OVERRUN_ERROR;
  if (p)
    tr_check_rc(tr_portal_open_context(p, "tctx.ctx.odd_window_burst", NULL, &opts, &ctx, NULL),
                0);
  if (ctx)
    tr_check_rc(tr_ctx_open_stream(ctx, &s), 0);
  uint64_t next = 0;
  for (int r = 0; s && r < ODD_ROUNDS; r++) {
    for (int i = 0; i < ODD_WINDOW; i++) {
      uint64_t v = 0;
      tr_check_rc(recv_u64(s, &v), 0, "round %d, value %d", r, i);
      tr_check_eq(v, next++);
    }
    tr_scope_t w;
    tr_check_rc(tr_move_on_after(&w, 2 * MS), 0);
    uint64_t v;
    tr_check_rc(recv_u64(s, &v), -TR_ECANCELED, "nothing more before the go");
    tr_check_rc(tr_scope_close(&w), 0);
    tr_check_rc(send_u64(s, 1), 0);
  }
  if (s)
    tr_check_rc(tr_stream_close(s), 0);
  tr_buf_t *res = NULL;
  if (ctx)
    tr_check_rc(tr_ctx_close(ctx, &res), 0, "no StreamOverrun in any round");
  tr_check_eq(res ? buf_u64(res) : 0, ODD_ROUNDS * ODD_WINDOW);
  tr_buf_release(res);
  tr_assert_rc(tr_actor_nursery_close(an), 0);
  tr_portal_release(p);
  return 0;
}

/* tr_ctx_cancel after the callee has returned: nothing is sent, but the
 * stream is over for this side all the same (portal.h: "before or after
 * the callee answered"), and the close still returns the result. */
TR_TEST(context, cancel_after_the_callee_returned, .timeout = 60) {
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL;
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_start_actor(an, "simple", all_ns, N_ALL, &p), 0);
  tr_ctx_t *ctx = NULL;
  if (p)
    tr_check_rc(tr_portal_open_context(p, "tctx.ctx.simple", NULL, NULL, &ctx, NULL), 0);
  if (ctx) {
    tr_buf_t *r = NULL;
    tr_check_rc(tr_ctx_result(ctx, &r), 0); /* the callee has returned */
    tr_check_eq(r ? buf_u64(r) : 0, 7);
    tr_buf_release(r);
    tr_check_rc(tr_ctx_cancel(ctx), 0);
    tr_check(tr_ctx_cancel_called(ctx), "cancel_called after a late tr_ctx_cancel");
    tr_check(!tr_ctx_cancel_acked(ctx), "the outcome came first");
    tr_stream_t *s = NULL;
    tr_check_rc(tr_ctx_open_stream(ctx, &s), -TR_ECTXCANCELED);
    tr_check(s == NULL);
    r = NULL;
    tr_check_rc(tr_ctx_close(ctx, &r), 0);
    tr_check_eq(r ? buf_u64(r) : 0, 7, "the close still returns the result");
    tr_buf_release(r);
  }
  tr_assert_rc(tr_actor_nursery_close(an), 0);
  tr_portal_release(p);
  return 0;
}

/* A callee that waits for values from a stream this side never opened
 * (so no Stop comes) keeps tr_ctx_close waiting; a deadline around the
 * close bounds it (portal.h): Cancel, at most TR_CTX_CANCEL_TIMEOUT_NS for
 * the answer, -TR_ECANCELED. */
TR_TEST(context, a_close_waiting_for_an_endless_callee_is_bounded_by_a_deadline, .timeout = 60) {
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL;
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_start_actor(an, "echoer", all_ns, N_ALL, &p), 0);
  tr_ctx_t *ctx = NULL;
  if (p)
    tr_check_rc(tr_portal_open_context(p, "tctx.ctx.echo", NULL, NULL, &ctx, NULL), 0);
  if (ctx) {
    tr_scope_t d;
    int64_t t0 = tr_now();
    tr_check_rc(tr_move_on_after(&d, 50 * MS), 0);
    tr_check_rc(tr_ctx_close(ctx, NULL), -TR_ECANCELED);
    tr_check_rc(tr_scope_close(&d), 0);
    int64_t took = tr_now() - t0;
    tr_check(took >= 50 * MS && took < 50 * MS + TR_CTX_CANCEL_TIMEOUT_NS + 2000 * MS,
             "bounded by the deadline and the cancel's wait: %lld ms", (long long)(took / MS));
  }
  tr_assert_rc(tr_actor_nursery_close(an), 0);
  tr_portal_release(p);
  return 0;
}

/* ---- 10, 11. local broadcast ------------------------------------------------------------ */

typedef struct consumer {
  tr_stream_t *rx;
  uint64_t next;  /* the value expected next */
  uint64_t count; /* values received */
  uint64_t out_of_order;
  int end_rc;   /* what ended the loop */
  int close_rc; /* tr_stream_close of the subscriber */
} consumer_t;

/* Receives until the end, then closes its subscriber.  Never fails: the
 * test body checks what it recorded. */
static int consume(void *arg) {
  consumer_t *c = arg;
  for (;;) {
    uint64_t v;
    int rc = recv_u64(c->rx, &v);
    if (rc) {
      c->end_rc = rc;
      break;
    }
    if (v != c->next)
      c->out_of_order++;
    c->next = v + 1;
    c->count++;
    /* trio's receive is a checkpoint even when a value is ready: let the
     * other consumers run, so that all go at the same speed. */
    if (tr_checkpoint() != 0) {
      c->end_rc = -TR_ECANCELED;
      break;
    }
  }
  c->close_rc = tr_stream_close(c->rx);
  return 0;
}

#define FANOUT 10
#define FANOUT_N 1000

/* tractor: test_task_broadcasting.py (several local tasks each receive
 * every value of one stream through MsgStream.subscribe). */
TR_TEST(context, subscribe_fanout_10, .timeout = 60) {
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL;
  tr_buf_t *args;
  tr_assert_rc(range_args(0, FANOUT_N, &args), 0);
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_start_actor(an, "publisher", all_ns, N_ALL, &p), 0);
  tr_stream_t *s = NULL;
  if (p)
    tr_check_rc(tr_portal_open_stream_from(p, "tctx.stream.range", args, NULL, &s), 0);
  if (s) {
    consumer_t cs[FANOUT];
    memset(cs, 0, sizeof cs);
    int n_subs = 0;
    for (; n_subs < FANOUT; n_subs++) { /* all before any recv */
      int rc = tr_stream_subscribe(s, &cs[n_subs].rx);
      tr_check_rc(rc, 0);
      if (rc)
        break;
    }
    tr_nursery_t *n;
    int rc = tr_nursery_open(&n);
    tr_check_rc(rc, 0);
    for (int i = 0; i < n_subs; i++)
      if (rc != 0 || tr_nursery_spawn(n, consume, &cs[i], NULL) != 0) {
        tr_check(0, "consumer %d did not start", i);
        tr_stream_close(cs[i].rx);
      }
    if (rc == 0)
      tr_check_rc(tr_nursery_close(n), 0);
    for (int i = 0; i < n_subs; i++) {
      tr_check_eq(cs[i].count, FANOUT_N, "consumer %d", i);
      tr_check_eq(cs[i].out_of_order, 0, "consumer %d", i);
      tr_check_rc(cs[i].end_rc, -TR_EEOF, "consumer %d", i);
      tr_check_rc(cs[i].close_rc, 0, "consumer %d", i);
    }
    tr_check_rc(tr_stream_close(s), 0);
  }
  tr_assert_rc(tr_actor_nursery_close(an), 0);
  tr_portal_release(p);
  tr_buf_release(args);
  return 0;
}

#define LAG_N 500

/* tractor: test_task_broadcasting.py::test_ensure_slow_consumers_lag_out. */
TR_TEST(context, slow_subscriber_lags, .timeout = 60) {
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL;
  tr_buf_t *args;
  tr_assert_rc(range_args(0, LAG_N, &args), 0);
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_start_actor(an, "publisher", all_ns, N_ALL, &p), 0);
  tr_stream_t *s = NULL, *slow = NULL;
  consumer_t fast = {0};
  /* The subscribers share a window's worth of values: LAG_N must be well
   * above it, whatever the default between the two actors (the _tcp run
   * would choose TR_STREAM_WINDOW_REMOTE). */
  tr_ctx_opts_t copts = {.window = TR_STREAM_WINDOW};
  if (p)
    tr_check_rc(tr_portal_open_stream_from(p, "tctx.stream.range", args, &copts, &s), 0);
  if (s) {
    tr_check_rc(tr_stream_subscribe(s, &fast.rx), 0);
    tr_check_rc(tr_stream_subscribe(s, &slow), 0);
  }
  if (fast.rx && slow) {
    /* The fast one runs to the end while the slow one receives nothing. */
    tr_nursery_t *n;
    int rc = tr_nursery_open(&n);
    tr_check_rc(rc, 0);
    if (rc == 0) {
      rc = tr_nursery_spawn(n, consume, &fast, NULL);
      tr_check_rc(rc, 0);
      tr_check_rc(tr_nursery_close(n), 0);
    }
    if (rc != 0)
      tr_stream_close(fast.rx);
    tr_check_eq(fast.count, LAG_N, "the fastest loses nothing");
    tr_check_eq(fast.out_of_order, 0);
    tr_check_rc(fast.end_rc, -TR_EEOF);
    tr_check_rc(fast.close_rc, 0);

    uint64_t got = 0, first = 0, last = 0, dups = 0, lags = 0;
    int lag_first = 0;
    rc = 0;
    for (int i = 0; i < 4 * LAG_N; i++) { /* bounded: a lag per value at worst */
      uint64_t v;
      rc = recv_u64(slow, &v);
      if (rc == -TR_ELAGGED) {
        if (got == 0 && lags == 0)
          lag_first = 1;
        lags++;
        continue;
      }
      if (rc)
        break;
      if (got == 0)
        first = v;
      else if (v <= last)
        dups++;
      last = v;
      got++;
    }
    tr_check(lags >= 1, "the slow subscriber lagged");
    tr_check(lag_first, "the lag is reported before any value");
    tr_check_rc(rc, -TR_EEOF, "the slow subscriber reaches the end");
    tr_check(got > 0 && first > 0, "it resumed past the values it missed (first %llu)",
             (unsigned long long)first);
    tr_check(got < LAG_N, "it missed values (got %llu)", (unsigned long long)got);
    tr_check_eq(dups, 0, "no duplicates, in order");
    tr_check_eq(last, LAG_N - 1, "it ends with the last value");
  } else {
    tr_check(0, "subscribe failed");
    if (fast.rx)
      tr_stream_close(fast.rx);
  }
  if (slow)
    tr_check_rc(tr_stream_close(slow), 0);
  if (s)
    tr_check_rc(tr_stream_close(s), 0);
  tr_assert_rc(tr_actor_nursery_close(an), 0);
  tr_portal_release(p);
  tr_buf_release(args);
  return 0;
}

/* ---- 12. fan-in -------------------------------------------------------------------- */

#define FANIN 3
#define FANIN_N 1000
#define FANIN_IDS 2000 /* the union of [0, 1000), [500, 1500), [1000, 2000) */

typedef struct fanin {
  uint64_t seen[(FANIN_IDS + 63) / 64]; /* the dedup bitmap */
  uint64_t total;
  uint64_t distinct;
  uint64_t out_of_range;
} fanin_t;

typedef struct feeder {
  tr_portal_t *p;
  uint64_t base;
  fanin_t *agg;
  uint64_t out_of_order;
  int open_rc, end_rc, close_rc;
} feeder_t;

/* One stream into the aggregate.  The tasks of one actor never run at the
 * same time, so the shared bitmap needs no atomics. */
static int feed(void *arg) {
  feeder_t *f = arg;
  tr_buf_t *args;
  f->open_rc = range_args(f->base, FANIN_N, &args);
  if (f->open_rc)
    return 0;
  tr_stream_t *s = NULL;
  f->open_rc = tr_portal_open_stream_from(f->p, "tctx.stream.range", args, NULL, &s);
  tr_buf_release(args);
  if (f->open_rc)
    return 0;
  uint64_t next = f->base;
  for (;;) {
    uint64_t v;
    int rc = recv_u64(s, &v);
    if (rc) {
      f->end_rc = rc;
      break;
    }
    if (v != next)
      f->out_of_order++;
    next = v + 1;
    f->agg->total++;
    if (v >= FANIN_IDS) {
      f->agg->out_of_range++;
    } else if (!(f->agg->seen[v / 64] & (1ull << (v % 64)))) {
      f->agg->seen[v / 64] |= 1ull << (v % 64);
      f->agg->distinct++;
    }
  }
  f->close_rc = tr_stream_close(s);
  return 0;
}

/* tractor: test_legacy_one_way_streaming.py::test_a_quadruple_example (an
 * aggregator merging the overlapping streams of several actors, keeping
 * unique values). */
TR_TEST(context, fanin_pipeline_3, .timeout = 60) {
  static const char *const names[FANIN] = {"source0", "source1", "source2"};
  tr_actor_nursery_t *an;
  tr_portal_t *ps[FANIN] = {0};
  fanin_t agg;
  feeder_t fs[FANIN];
  memset(&agg, 0, sizeof agg);
  memset(fs, 0, sizeof fs);
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  int ok = 1;
  for (int i = 0; i < FANIN; i++) {
    tr_check_rc(tr_start_actor(an, names[i], all_ns, N_ALL, &ps[i]), 0);
    ok = ok && ps[i] != NULL;
  }
  if (ok) {
    tr_nursery_t *n;
    int rc = tr_nursery_open(&n);
    tr_check_rc(rc, 0);
    if (rc == 0) {
      for (int i = 0; i < FANIN; i++) {
        fs[i] = (feeder_t){.p = ps[i], .base = (uint64_t)i * (FANIN_N / 2), .agg = &agg};
        tr_check_rc(tr_nursery_spawn(n, feed, &fs[i], NULL), 0);
      }
      tr_check_rc(tr_nursery_close(n), 0);
    }
    for (int i = 0; i < FANIN; i++) {
      tr_check_rc(fs[i].open_rc, 0, "stream %d", i);
      tr_check_rc(fs[i].end_rc, -TR_EEOF, "stream %d", i);
      tr_check_rc(fs[i].close_rc, 0, "stream %d", i);
      tr_check_eq(fs[i].out_of_order, 0, "stream %d", i);
    }
    tr_check_eq(agg.total, FANIN * FANIN_N);
    tr_check_eq(agg.distinct, FANIN_IDS);
    tr_check_eq(agg.out_of_range, 0);
  }
  tr_assert_rc(tr_actor_nursery_close(an), 0);
  for (int i = 0; i < FANIN; i++)
    tr_portal_release(ps[i]);
  return 0;
}

/* ---- typed payloads end to end ---------------------------------------------------- */

#include "schema/tractor.pb-c.h" /* a message type to declare payloads with */

/* Bytes that do not decode as a tractor.ActorRef (a truncated field). */
static const char not_a_ref[] = "\x0a\x7f";

static int typed_echo(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)ctx;
  *result = tr_buf_ref((tr_buf_t *)args);
  return 0;
}
TR_EXPORT_FN_TYPED("tctx.typed", "echo", typed_echo, &tractor__actor_ref__descriptor,
                   &tractor__actor_ref__descriptor)

/* Yields one value that is not the declared type. */
static int typed_bad_yield(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)args;
  (void)result;
  tr_stream_t *s;
  tr_buf_t *b;
  int rc = tr_ctx_open_stream(ctx, &s);
  if (rc == 0 && (rc = tr_buf_from(not_a_ref, sizeof not_a_ref - 1, &b)) == 0) {
    rc = tr_stream_send(s, b);
    tr_buf_release(b);
  }
  return rc;
}
TR_EXPORT_STREAM_TYPED("tctx.typed", "bad_yield", typed_bad_yield, NULL,
                       &tractor__actor_ref__descriptor)
/* Typed arguments, for a stream: checked before any task starts. */
TR_EXPORT_STREAM_TYPED("tctx.typed", "typed_args", typed_bad_yield,
                       &tractor__actor_ref__descriptor, NULL)

/* tractor: test_pldrx_limiting.py (MsgTypeError for a payload that does
 * not decode as the declared type), through real dialogs. */
TR_TEST(context, typed_payloads_refused_with_msgtype, .timeout = 60) {
  static const char *const typed_ns[] = {"tctx.typed"};
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL;
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_start_actor(an, "typed", typed_ns, 1, &p), 0);
  if (p) {
    tr_buf_t *bad, *res = NULL;
    tr_assert_rc(tr_buf_from(not_a_ref, sizeof not_a_ref - 1, &bad), 0);
    tr_check_rc(tr_portal_run(p, "tctx.typed.echo", bad, &res), -TR_EMSGTYPE);
    const tr_error_t *e = tr_error_last();
    tr_check(e && strstr(tr_error_message(e), "tractor.ActorRef") != NULL, "names the type");
    tr_check(src_is("typed"), "refused by the callee");
    tr_buf_release(res);
    tr_buf_release(bad);
    /* A well-typed call goes through. */
    Tractor__ActorRef ref = TRACTOR__ACTOR_REF__INIT;
    ref.name = "x";
    tr_buf_t *good;
    tr_assert_rc(tr_buf_pack(&ref.base, &good), 0);
    tr_check_rc(tr_portal_run(p, "tctx.typed.echo", good, &res), 0);
    tr_buf_release(res);
    tr_buf_release(good);
    /* A streamed value of the wrong type fails the stream at the caller. */
    tr_stream_t *s = NULL;
    tr_check_rc(tr_portal_open_stream_from(p, "tctx.typed.bad_yield", NULL, NULL, &s), 0);
    if (s) {
      tr_buf_t *v = NULL;
      tr_check_rc(tr_stream_recv(s, &v), -TR_EMSGTYPE);
      e = tr_error_last();
      tr_check(e && strstr(tr_error_message(e), "tractor.ActorRef") != NULL, "names the type");
      tr_check_rc(tr_stream_recv(s, &v), -TR_EMSGTYPE, "the dialog has ended");
      tr_check_rc(tr_stream_close(s), -TR_EMSGTYPE);
    }
    /* Arguments that do not decode are refused in place of StartAck, before
     * any task (PROTOCOL.md 5, step 3): the open itself fails. */
    s = NULL;
    tr_buf_t *bad2;
    tr_assert_rc(tr_buf_from(not_a_ref, sizeof not_a_ref - 1, &bad2), 0);
    tr_check_rc(tr_portal_open_stream_from(p, "tctx.typed.typed_args", bad2, NULL, &s),
                -TR_EMSGTYPE);
    tr_check(s == NULL, "no stream for a refused open");
    e = tr_error_last();
    tr_check(e && strstr(tr_error_message(e), "tractor.ActorRef") != NULL, "names the type");
    tr_buf_release(bad2);
  }
  tr_assert_rc(tr_actor_nursery_close(an), 0);
  tr_portal_release(p);
  return 0;
}

/* tr_stream_recv is a cancellation point even with values waiting (trio's
 * receive checkpoints): in a cancelled scope it returns -TR_ECANCELED, and
 * leaving the stream there still ends the dialog cleanly. */
TR_TEST(context, recv_is_a_cancellation_point, .timeout = 60) {
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL;
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_start_actor(an, "streamer", all_ns, N_ALL, &p), 0);
  tr_scope_t sc;
  tr_assert_rc(tr_scope_open(&sc, TR_NO_DEADLINE, 0), 0);
  tr_stream_t *s = NULL;
  tr_buf_t *args;
  tr_assert_rc(range_args(0, 1000, &args), 0);
  if (p)
    tr_check_rc(tr_portal_open_stream_from(p, "tctx.stream.range", args, NULL, &s), 0);
  tr_buf_release(args);
  if (s) {
    tr_buf_t *v = NULL;
    tr_check_rc(tr_stream_recv(s, &v), 0);
    tr_buf_release(v);
    /* Values keep arriving (the window is 64, the stream 1000). */
    tr_check_rc(tr_scope_cancel(&sc), 0);
    for (int i = 0; i < 3; i++) {
      v = NULL;
      tr_check_rc(tr_stream_recv(s, &v), -TR_ECANCELED, "recv %d in a cancelled scope", i);
      tr_check(v == NULL);
    }
    tr_check_rc(tr_stream_close(s), 0);
    tr_check(tr_error_last() == NULL, "a successful close clears the recv's error (errors.h)");
  }
  tr_check_rc(tr_scope_close(&sc), 0);
  tr_check(tr_scope_cancelled_caught(&sc), "the scope caught its cancellation");
  tr_assert_rc(tr_actor_nursery_close(an), 0);
  tr_portal_release(p);
  return 0;
}
