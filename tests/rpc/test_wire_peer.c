/*
 * The dialog engine against a foreign peer: a behaviour actor that speaks
 * the protocol's envelopes by hand and ignores the credit window, as a
 * peer built from other code could.  PROTOCOL.md section 7, enforcement:
 * a Yield beyond the receiver's window is not delivered and the dialog
 * fails with StreamOverrun, on the caller's and on the callee's side.
 */
#include <stdlib.h>
#include <string.h>

#define TR_TEST_WORKERS 2
#include <tractor/testing.h>

#include "schema/envelope.h"

#define MS (1000 * 1000LL)

typedef struct fake {
  int mode;           /* 0: a callee that floods; 1: a caller that floods;
                         2: a context callee that grants too much credit */
  uint64_t start_u64; /* mode 1: Start's window and overrun field */
  uint64_t n;         /* modes 0 and 1: Yields to send */
  uint64_t cid;       /* the dialog */
  int sent;           /* all Yields are sent */
  int got_cancel;     /* mode 0: the caller sent Cancel(cid) */
  int got_overrun;    /* mode 1: the callee answered Error(StreamOverrun) */
  int n_overrun;      /* mode 1: how many times (atomic) */
  int n_after;        /* mode 1: other final messages and CancelAcks of the dialog after it */
  tr_actor_t *peer;   /* mode 1: the callee to flood */
} fake_t;

static void send_raw(tr_actor_t *to, int body, uint64_t cid, uint64_t u64, uint64_t value) {
  tr_msg_t *m;
  if (tr_msg_new(&m) != 0)
    return;
  m->body = (uint16_t)body;
  m->cid = cid;
  m->u64 = u64;
  if (body == TR_BODY_YIELD)
    tr_buf_from_u64(value, &m->payload);
  if (body == TR_BODY_START) {
    struct tr_envx *x = tr__envx_get(m);
    x->u.start.ns = strdup("twire.ctx");
    x->u.start.func = strdup("sink");
    m->from = tr_actor_dup(tr_self());
  }
  tr_send(to, m);
}

static void fake_peer(void *state, tr_msg_t *m) {
  fake_t *f = state;
  switch (m->body) {
  case TR_BODY_START:
    f->cid = m->cid;
    if (f->mode == 2) { /* accept a context, start it, grant 10^6 credits */
      send_raw(m->from, TR_BODY_START_ACK, m->cid, TR_FUNC_CONTEXT, 0);
      send_raw(m->from, TR_BODY_CREDIT, m->cid, 1000000, 0);
      send_raw(m->from, TR_BODY_STARTED, m->cid, 0, 0);
      break;
    }
    /* mode 0: accept a stream and flood it */
    send_raw(m->from, TR_BODY_START_ACK, m->cid, TR_FUNC_STREAM, 0);
    for (uint64_t i = 0; i < f->n; i++)
      send_raw(m->from, TR_BODY_YIELD, m->cid, 0, i);
    __atomic_store_n(&f->sent, 1, __ATOMIC_RELEASE);
    break;
  case TR_BODY_CANCEL:
    if (m->u64 == f->cid) {
      __atomic_store_n(&f->got_cancel, 1, __ATOMIC_RELEASE);
      if (f->mode == 2)
        send_raw(m->from, TR_BODY_RETURN, m->cid, 0, 0); /* the dialog ends */
    }
    break;
  case TR_BODY_STARTED: /* mode 1: the callee started: flood it */
    for (uint64_t i = 0; i < f->n; i++)
      send_raw(f->peer, TR_BODY_YIELD, f->cid, 0, i);
    __atomic_store_n(&f->sent, 1, __ATOMIC_RELEASE);
    break;
  case TR_BODY_ERROR:
    if (m->x_ && m->x_->u.error.code == TR_EOVERRUN && m->cid == f->cid) {
      __atomic_add_fetch(&f->n_overrun, 1, __ATOMIC_RELAXED);
      __atomic_store_n(&f->got_overrun, 1, __ATOMIC_RELEASE);
    } else if (m->cid == f->cid) {
      __atomic_add_fetch(&f->n_after, 1, __ATOMIC_RELAXED);
    }
    break;
  case TR_BODY_RETURN:
  case TR_BODY_STOP:
  case TR_BODY_CANCEL_ACK:
    if (f->mode == 1 && m->cid == f->cid)
      __atomic_add_fetch(&f->n_after, 1, __ATOMIC_RELAXED);
    break;
  default:
    if (m->body == 0 && m->tag == 1) { /* mode 1: the test says go */
      f->cid = m->u64;
      send_raw(f->peer, TR_BODY_START, f->cid, f->start_u64, 0);
    } else if (m->body == 0 && m->tag == 2) {
      tr_actor_release(f->peer);
      f->peer = NULL;
      tr_actor_exit();
    }
    break;
  }
}

/* Polls a flag (bounded), then sleeps once more so that every message the
 * fake sent before setting it has been handled by this actor's turn (the
 * sleep's wake-up is queued behind them). */
static int wait_flag(int *flag) {
  int64_t until = tr_now() + 5000 * MS;
  while (!__atomic_load_n(flag, __ATOMIC_ACQUIRE) && tr_now() < until)
    tr_sleep(1 * MS);
  tr_sleep(1 * MS);
  return __atomic_load_n(flag, __ATOMIC_ACQUIRE);
}

TR_TEST(wire_peer, caller_refuses_yields_beyond_window, .timeout = 60) {
  static fake_t f;
  memset(&f, 0, sizeof f);
  f.n = 3; /* window 2: the third is beyond it */
  tr_actor_t *a;
  tr_spawn_opts_t o = {.name = "foreign"};
  tr_assert_rc(tr_spawn(fake_peer, &f, &o, &a), 0);
  tr_portal_t *p;
  tr_assert_rc(tr_portal_from_actor(a, &p), 0);
  tr_ctx_opts_t opts = {.window = 2};
  tr_stream_t *s = NULL;
  tr_check_rc(tr_portal_open_stream_from(p, "twire.stream.flood", NULL, &opts, &s), 0);
  if (s) {
    tr_check(wait_flag(&f.sent), "the fake sent its three values");
    tr_check(wait_flag(&f.got_cancel), "the caller cancelled the dialog");
    /* The values within the window are delivered, then the error (as an
     * Error after values, PROTOCOL.md 6.2). */
    for (uint64_t i = 0; i < 2; i++) {
      tr_buf_t *v = NULL;
      uint64_t got = 99;
      tr_check_rc(tr_stream_recv(s, &v), 0);
      tr_check_rc(tr_buf_to_u64(v, &got), 0);
      tr_check_eq(got, i);
      tr_buf_release(v);
    }
    tr_buf_t *v = NULL;
    tr_check_rc(tr_stream_recv(s, &v), -TR_EOVERRUN, "the overrun ends the stream");
    const tr_error_t *e = tr_error_last();
    const char *msg = e ? tr_error_message(e) : NULL;
    tr_check(e && strcmp(tr_error_type(e), "StreamOverrun") == 0, "type: %s",
             e ? tr_error_type(e) : "(none)");
    tr_check(msg && strstr(msg, "beyond the window") != NULL, "message: %s", msg ? msg : "(none)");
    tr_check_rc(tr_stream_close(s), -TR_EOVERRUN);
  }
  tr_portal_release(p);
  tr_send_u64(a, 2, 0);
  tr_actor_release(a);
  return 0;
}

static int sink_started;

/* A context that starts, opens its stream, and never reads. */
static int sink(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)args;
  (void)result;
  tr_stream_t *s;
  int rc = tr_ctx_started(ctx, NULL);
  if (rc == 0)
    rc = tr_ctx_open_stream(ctx, &s);
  __atomic_store_n(&sink_started, 1, __ATOMIC_RELEASE);
  if (rc == 0)
    rc = tr_sleep_until(TR_NO_DEADLINE);
  return rc; /* -TR_ECANCELED: the overrun cancelled it */
}
TR_EXPORT_CONTEXT("twire.ctx", "sink", sink)

/* A foreign caller opens a context on sinkd with Start's u64 = start_u64
 * and floods it with n Yields once started; returns whether sinkd
 * answered StreamOverrun.  The fake's record stays in flood_f; it listens
 * settle_ms more after the answer. */
static fake_t flood_f;
static int flood_callee(uint64_t start_u64, uint64_t n, int64_t settle_ms) {
  static const char *const ns[] = {"twire.ctx"};
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL;
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_start_actor(an, "sinkd", ns, 1, &p), 0);
  memset(&flood_f, 0, sizeof flood_f);
  flood_f.mode = 1;
  flood_f.start_u64 = start_u64;
  flood_f.n = n;
  int overrun = 0;
  tr_actor_t *a = NULL;
  tr_spawn_opts_t o = {.name = "foreign"};
  if (p) {
    flood_f.peer = tr_actor_dup(tr_portal_actor(p));
    tr_check_rc(tr_spawn(fake_peer, &flood_f, &o, &a), 0);
  }
  if (a) {
    tr_send_u64(a, 1, 1000000007ULL); /* a cid no counter of ours reaches soon */
    tr_check(wait_flag(&flood_f.sent), "the fake flooded the context");
    overrun = wait_flag(&flood_f.got_overrun);
    if (settle_ms)
      tr_sleep(settle_ms * MS);
    tr_send_u64(a, 2, 0);
    tr_actor_release(a);
  } else {
    tr_actor_release(flood_f.peer);
  }
  tr_check_rc(tr_actor_nursery_close(an), 0);
  tr_portal_release(p);
  return overrun;
}

TR_TEST(wire_peer, callee_refuses_yields_beyond_window, .timeout = 60) {
  tr_check(flood_callee(2, 3, 0), "window 2, three Yields: StreamOverrun");
  return 0;
}

/* The callee's Error(StreamOverrun) is the dialog's final message, sent
 * once however many Yields came beyond the window: nothing follows it (no
 * ContextCancelled naming the caller, who sent no Cancel, and no
 * CancelAck).  Before, each excess Yield got its own Error, then a
 * ContextCancelled "by its caller-side peer" and a CancelAck followed. */
TR_TEST(wire_peer, callee_answers_an_overrun_once, .timeout = 60) {
  tr_check(flood_callee(2, 10, 300), "window 2, ten Yields: StreamOverrun");
  int once = __atomic_load_n(&flood_f.n_overrun, __ATOMIC_ACQUIRE);
  int after = __atomic_load_n(&flood_f.n_after, __ATOMIC_ACQUIRE);
  tr_check(once == 1, "%d StreamOverrun errors", once);
  tr_check(after == 0, "%d final messages or acks after it", after);
  return 0;
}

/* A Start asking for a window of 2^32 - 1 gets TR_STREAM_WINDOW_MAX: the
 * callee buffers no more than that for a peer that floods it. */
TR_TEST(wire_peer, callee_caps_the_window_a_caller_asks_for, .timeout = 60) {
  tr_check(flood_callee(UINT32_MAX, TR_STREAM_WINDOW_MAX + 1, 0), "the capped window overflowed");
  return 0;
}

/* Credit beyond the window from a foreign callee is capped: the caller
 * still sends no more than a window ahead (here in error mode, so the
 * third send fails at once instead of blocking). */
TR_TEST(wire_peer, excess_credit_is_capped_at_the_window, .timeout = 60) {
  static fake_t f;
  memset(&f, 0, sizeof f);
  f.mode = 2;
  tr_actor_t *a;
  tr_spawn_opts_t o = {.name = "foreign"};
  tr_assert_rc(tr_spawn(fake_peer, &f, &o, &a), 0);
  tr_portal_t *p;
  tr_assert_rc(tr_portal_from_actor(a, &p), 0);
  tr_ctx_opts_t opts = {.window = 2, .overrun = TR_OVERRUN_ERROR};
  tr_ctx_t *ctx = NULL;
  /* Started comes after the Credit, so the Credit has been handled. */
  tr_check_rc(tr_portal_open_context(p, "twire.ctx.generous", NULL, &opts, &ctx, NULL), 0);
  if (ctx) {
    tr_stream_t *s = NULL;
    tr_check_rc(tr_ctx_open_stream(ctx, &s), 0);
    tr_buf_t *b;
    tr_assert_rc(tr_buf_from_u64(1, &b), 0);
    for (int i = 0; s && i < 2; i++)
      tr_check_rc(tr_stream_send(s, b), 0, "send %d of the window", i);
    if (s)
      tr_check_rc(tr_stream_send(s, b), -TR_EOVERRUN, "a third send is beyond the window");
    tr_buf_release(b);
    tr_check_rc(tr_ctx_cancel(ctx), 0);
    tr_check_rc(tr_ctx_close(ctx, NULL), 0); /* the fake answers Return */
  }
  tr_portal_release(p);
  tr_send_u64(a, 2, 0);
  tr_actor_release(a);
  return 0;
}

/* PROTOCOL.md section 5: a peer built from other code whose StartAck names
 * another kind than the call expects.  The caller cancels the dialog,
 * waits (bounded) for it to end, and fails with -TR_EFUNCKIND. */
TR_TEST(wire_peer, startack_of_another_kind_is_funckind, .timeout = 60) {
  static fake_t f;
  memset(&f, 0, sizeof f); /* mode 0: StartAck(STREAM) to any Start */
  tr_actor_t *a;
  tr_spawn_opts_t o = {.name = "foreign"};
  tr_assert_rc(tr_spawn(fake_peer, &f, &o, &a), 0);
  tr_portal_t *p;
  tr_assert_rc(tr_portal_from_actor(a, &p), 0);
  tr_ctx_t *ctx = NULL;
  tr_buf_t *first = NULL;
  /* Not exported here, so the caller cannot check the kind before sending. */
  tr_check_rc(tr_portal_open_context(p, "twire.elsewhere.session", NULL, NULL, &ctx, &first),
              -TR_EFUNCKIND);
  tr_check(ctx == NULL && first == NULL, "nothing is handed out");
  tr_check(wait_flag(&f.got_cancel), "the caller cancelled the dialog");
  /* The same through the run dialog. */
  __atomic_store_n(&f.got_cancel, 0, __ATOMIC_RELEASE);
  tr_buf_t *res = NULL;
  tr_check_rc(tr_portal_run(p, "twire.elsewhere.call", NULL, &res), -TR_EFUNCKIND);
  tr_check(res == NULL);
  tr_check(wait_flag(&f.got_cancel), "the caller cancelled the run dialog");
  tr_portal_release(p);
  tr_send_u64(a, 2, 0);
  tr_actor_release(a);
  return 0;
}

/* ---- contexts keyed by (peer uid, cid) ---------------------------------------- */

/* A context that sums what its caller streams to it until Stop. */
static int summer(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)args;
  tr_stream_t *s = NULL;
  int rc = tr_ctx_started(ctx, NULL);
  if (rc == 0)
    rc = tr_ctx_open_stream(ctx, &s);
  uint64_t sum = 0;
  while (rc == 0) {
    tr_buf_t *b = NULL;
    uint64_t v = 0;
    rc = tr_stream_recv(s, &b);
    if (rc == 0 && tr_buf_to_u64(b, &v) == 0)
      sum += v;
    tr_buf_release(b);
  }
  return rc == -TR_EEOF ? tr_buf_from_u64(sum, result) : rc;
}
TR_EXPORT_CONTEXT("twire.sum", "summer", summer)

/* A foreign caller from another process, as its channel delivers it: every
 * message names its sender (here its `from`; across a channel, the
 * envelope's src).  Its cids come from its own counter. */
typedef struct caller_fake {
  tr_actor_t *callee; /* a reference */
  uint64_t cid, base;
  uint64_t sum;     /* the Return's value */
  int done, failed; /* atomics */
} caller_fake_t;

static void send_named(tr_actor_t *to, int body, uint64_t cid, tr_buf_t *payload) {
  tr_msg_t *m;
  if (tr_msg_new(&m) != 0) {
    tr_buf_release(payload);
    return;
  }
  m->body = (uint16_t)body;
  m->cid = cid;
  m->payload = payload;
  m->from = tr_actor_dup(tr_self());
  if (body == TR_BODY_START) {
    struct tr_envx *x = tr__envx_get(m);
    x->u.start.ns = strdup("twire.sum");
    x->u.start.func = strdup("summer");
  }
  tr_send(to, m);
}

static void caller_fake(void *state, tr_msg_t *m) {
  caller_fake_t *f = state;
  switch (m->body) {
  case TR_BODY_STARTED: /* stream 1..3 times base, then Stop */
    for (uint64_t i = 1; i <= 3; i++) {
      tr_buf_t *b = NULL;
      tr_buf_from_u64(i * f->base, &b);
      send_named(f->callee, TR_BODY_YIELD, f->cid, b);
    }
    send_named(f->callee, TR_BODY_STOP, f->cid, NULL);
    break;
  case TR_BODY_RETURN:
    if (m->cid == f->cid && tr_buf_to_u64(m->payload, &f->sum) == 0)
      __atomic_store_n(&f->done, 1, __ATOMIC_RELEASE);
    break;
  case TR_BODY_ERROR:
    __atomic_store_n(&f->failed, 1, __ATOMIC_RELEASE);
    __atomic_store_n(&f->done, 1, __ATOMIC_RELEASE);
    break;
  case 0:
    if (m->tag == 1) /* go */
      send_named(f->callee, TR_BODY_START, f->cid, NULL);
    else if (m->tag == 2) {
      tr_actor_release(f->callee);
      f->callee = NULL;
      tr_actor_exit();
    }
    break;
  default: /* StartAck, Credit: nothing to do */
    break;
  }
}

/* Two callers (two processes, as far as the callee can tell) use the same
 * cid at one callee at the same time: each dialog gets its own values,
 * because the callee keys its contexts by (caller uid, cid).  Keyed by cid
 * alone, the second caller's values went to the first caller's dialog. */
TR_TEST(wire_peer, same_cid_from_two_callers, .timeout = 60) {
  static const char *const ns[] = {"twire.sum"};
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL;
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_start_actor(an, "summerd", ns, 1, &p), 0);
  static caller_fake_t f[2];
  tr_actor_t *a[2] = {NULL, NULL};
  for (int i = 0; p && i < 2; i++) {
    memset(&f[i], 0, sizeof f[i]);
    f[i].callee = tr_actor_dup(tr_portal_actor(p));
    f[i].cid = 7; /* both */
    f[i].base = i ? 1000 : 1;
    tr_spawn_opts_t o = {.name = i ? "remote-b" : "remote-a"};
    tr_check_rc(tr_spawn(caller_fake, &f[i], &o, &a[i]), 0);
  }
  for (int i = 0; i < 2; i++)
    if (a[i])
      tr_send_u64(a[i], 1, 0);
  for (int i = 0; i < 2; i++)
    if (a[i]) {
      tr_check(wait_flag(&f[i].done), "caller %d was answered", i);
      tr_check(!__atomic_load_n(&f[i].failed, __ATOMIC_ACQUIRE), "caller %d: no error", i);
      tr_check_eq(f[i].sum, 6 * f[i].base, "caller %d got the sum of its own values", i);
      tr_send_u64(a[i], 2, 0);
      tr_actor_release(a[i]);
    }
  tr_assert_rc(tr_actor_nursery_close(an), 0);
  tr_portal_release(p);
  return 0;
}

/* ---- malformed dialogs: cid 0, a Cancel naming another cid ---------------- */

/* A call that runs until it is cancelled. */
static int forever(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)ctx;
  (void)args;
  (void)result;
  return tr_sleep_until(TR_NO_DEADLINE);
}
TR_EXPORT_FN("twire.bad", "forever", forever)

static int echo(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)ctx;
  *result = args ? tr_buf_ref((tr_buf_t *)args) : NULL;
  return 0;
}
TR_EXPORT_FN("twire.bad", "echo", echo)

/* A foreign caller that sends what the test tells it (tag 1: Start of
 * func on cid, tag 3: Cancel with envelope cid and body cid u64) and
 * records what comes back. */
enum { REC_MAX = 32 };
typedef struct recorder {
  tr_actor_t *callee; /* a reference */
  const char *func;
  uint64_t cid, body_cid;
  int n; /* atomic: entries below */
  uint16_t body[REC_MAX];
  uint64_t env_cid[REC_MAX], u64[REC_MAX];
  int code[REC_MAX];
} recorder_t;

static void recorder(void *state, tr_msg_t *m) {
  recorder_t *f = state;
  if (m->body == 0) {
    tr_msg_t *o;
    if (m->tag == 2) {
      tr_actor_release(f->callee);
      f->callee = NULL;
      tr_actor_exit();
    } else if ((m->tag == 1 || m->tag == 3) && tr_msg_new(&o) == 0) {
      o->body = m->tag == 1 ? TR_BODY_START : TR_BODY_CANCEL;
      o->cid = m->u64 ? m->u64 - 1 : f->cid; /* a command may name the cid (+1) */
      o->u64 = m->tag == 1 ? 0 : f->body_cid;
      o->from = tr_actor_dup(tr_self());
      if (m->tag == 1) {
        struct tr_envx *x = tr__envx_get(o);
        x->u.start.ns = strdup("twire.bad");
        x->u.start.func = strdup(f->func);
      }
      tr_send(f->callee, o);
    }
    return;
  }
  int i = __atomic_load_n(&f->n, __ATOMIC_RELAXED);
  if (i < REC_MAX) {
    f->body[i] = m->body;
    f->env_cid[i] = m->cid;
    f->u64[i] = m->u64;
    f->code[i] = m->body == TR_BODY_ERROR && m->x_ ? (int)m->x_->u.error.code : 0;
    __atomic_store_n(&f->n, i + 1, __ATOMIC_RELEASE);
  }
}

/* Waits (up to ms) until the recorder holds at least n messages. */
static int wait_count(recorder_t *f, int n, int64_t ms) {
  int64_t until = tr_now() + ms * MS;
  while (__atomic_load_n(&f->n, __ATOMIC_ACQUIRE) < n && tr_now() < until)
    tr_sleep(1 * MS);
  tr_sleep(20 * MS); /* anything that would follow has come by now */
  return __atomic_load_n(&f->n, __ATOMIC_ACQUIRE);
}

/* The index of the first message of body on envelope cid from `from`, or -1. */
static int rec_find(const recorder_t *f, int from, int body, uint64_t cid) {
  for (int i = from; i < __atomic_load_n(&f->n, __ATOMIC_ACQUIRE); i++)
    if (f->body[i] == body && f->env_cid[i] == cid)
      return i;
  return -1;
}

/* 1 when the callee runs in this process, where tr_stats counts its drops
 * (not under TR_SPAWN=process, the suite's _tcp run). */
static int callee_here(void) {
  const char *sp = getenv("TR_SPAWN");
  return !sp || strcmp(sp, "process") != 0;
}

static tr_actor_t *start_recorder(recorder_t *f, tr_portal_t *p) {
  memset(f, 0, sizeof *f);
  f->callee = tr_actor_dup(tr_portal_actor(p));
  tr_actor_t *a = NULL;
  tr_spawn_opts_t o = {.name = "foreign"};
  tr_check_rc(tr_spawn(recorder, f, &o, &a), 0);
  if (!a)
    tr_actor_release(f->callee);
  return a;
}

/* PROTOCOL.md 1 and 9: cid 0 is no dialog.  A Start on it is dropped
 * (counted, logged): the callee neither serves it nor answers it (an
 * answer would be on cid 0).  The same caller's next Start, on a real
 * cid, is served: it also says that the first has been handled. */
TR_TEST(wire_peer, a_start_on_cid_0_is_dropped, .timeout = 60) {
  static const char *const ns[] = {"twire.bad"};
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL;
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_start_actor(an, "badd", ns, 1, &p), 0);
  static recorder_t f;
  tr_actor_t *a = p ? start_recorder(&f, p) : NULL;
  if (a) {
    tr_stats_t before, after;
    tr_stats(&before);
    f.func = "echo";
    tr_send_u64(a, 1, 0 + 1); /* a Start on cid 0, then one on cid 9 */
    tr_send_u64(a, 1, 9 + 1);
    int n = wait_count(&f, 2, 5000);
    tr_stats(&after);
    tr_check(rec_find(&f, 0, TR_BODY_RETURN, 9) >= 0, "the Start on cid 9 was served");
    for (int i = 0; i < n; i++)
      tr_check(f.env_cid[i] == 9, "message %d (body %d) on cid %llu", i, f.body[i],
               (unsigned long long)f.env_cid[i]);
    if (callee_here())
      tr_check(after.proto_dropped >= before.proto_dropped + 1, "the drop was counted");
    tr_send_u64(a, 2, 0);
    tr_actor_release(a);
  }
  tr_check_rc(tr_actor_nursery_close(an), 0);
  tr_portal_release(p);
  return 0;
}

/* A running call ("forever", cid 8) gets a frame that breaks the protocol
 * (command cmd of the recorder, with Cancel.cid body_cid): it is dropped,
 * counted, and answered by nothing on any cid; the call keeps running, and
 * a well-formed Cancel then ends it (ContextCancelled, CancelAck), every
 * answer on cid 8. */
static int bad_frame_on_a_running_call(int cmd, uint64_t body_cid, const char *what) {
  static const char *const ns[] = {"twire.bad"};
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL;
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_start_actor(an, "badd", ns, 1, &p), 0);
  static recorder_t f;
  tr_actor_t *a = p ? start_recorder(&f, p) : NULL;
  if (a) {
    tr_stats_t before, after;
    f.func = "forever";
    f.cid = 8;
    tr_send_u64(a, 1, 0);
    tr_check(wait_count(&f, 1, 5000) == 1 && f.body[0] == TR_BODY_START_ACK, "the call started");
    tr_stats(&before);
    f.body_cid = body_cid;
    tr_send_u64(a, (uint64_t)cmd, 0);
    /* Bounded at 200 ms: an answer would come in far less, and one that
     * came later would still show up below. */
    tr_check(wait_count(&f, 2, 200) == 1, "nothing answered %s", what);
    tr_stats(&after);
    if (callee_here())
      tr_check(after.proto_dropped >= before.proto_dropped + 1, "the drop was counted");
    f.body_cid = 8;
    tr_send_u64(a, 3, 0);
    int n = wait_count(&f, 3, 5000);
    int e = rec_find(&f, 1, TR_BODY_ERROR, 8);
    tr_check(e == 1 && f.code[e] == TR_ECTXCANCELED, "the call ran until cancelled");
    tr_check(rec_find(&f, 1, TR_BODY_CANCEL_ACK, 8) > e, "then its CancelAck");
    for (int i = 0; i < n; i++)
      tr_check(f.env_cid[i] == 8, "message %d (body %d) on cid %llu", i, f.body[i],
               (unsigned long long)f.env_cid[i]);
    tr_send_u64(a, 2, 0);
    tr_actor_release(a);
  }
  tr_check_rc(tr_actor_nursery_close(an), 0);
  tr_portal_release(p);
  return 0;
}

/* PROTOCOL.md 9: a second Start from the same caller on the cid of a
 * dialog that runs breaks the protocol: its answer would be a second final
 * message on that cid, ending the call for its caller. */
TR_TEST(wire_peer, a_second_start_on_a_running_dialog_is_dropped, .timeout = 60) {
  return bad_frame_on_a_running_call(1, 0, "the second Start");
}

/* PROTOCOL.md 8.1: the envelope's cid is the dialog a Cancel cancels; a
 * Cancel whose own cid differs is malformed: it cancels nothing, and
 * nothing is answered on either cid. */
TR_TEST(wire_peer, a_cancel_whose_cid_differs_from_its_envelope_is_dropped, .timeout = 60) {
  return bad_frame_on_a_running_call(3, 12345, "the malformed Cancel");
}
