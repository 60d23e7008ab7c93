/*
 * Dialogs through a codec relay: two behaviour actors standing between a
 * caller and a callee, as the two ends of a transport channel would.
 * Each protocol message is encoded to an Envelope and decoded back
 * (schema/envelope.c) before it is passed on, so the engine only gets
 * what a decoder can rebuild: the message's `from` becomes the relay end
 * that delivers it, and everything else comes from the envelope.
 *
 *     caller C  <->  relay end A  <->  relay end B  <->  callee E
 *
 * What must hold through it is what holds directly (PROTOCOL.md 8.3):
 * the caller's own cancel is absorbed, the canceller and the source are
 * the real actors (by uid), not the relay ends.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define TR_TEST_WORKERS 2
#include <tractor/testing.h>

#include "runtime/rpc/rpc.h" /* tr__rpc_post_peer_lost: what a channel end does */
#include "schema/envelope.h"

#define MS (1000 * 1000LL)

/* Which end a message comes from (local to the relay, like the socket a
 * frame arrived on). */
enum { FROM_CALLER_SIDE = 0x5a1, FROM_CALLEE_SIDE = 0x5a2 };

#define MAX_DIALOGS 16

typedef struct relay_end {
  tr_actor_t *other; /* the other end (a reference) */
  tr_actor_t *local; /* B: the callee it serves (a reference); A: unused */
  /* Each dialog: its cid; A: its caller (a reference, from Start); the
   * uuid of the actor on the far side (A: the callee, from StartAck's src,
   * else A's own, which the caller holds until then; B: the caller, from
   * Start). */
  uint64_t cids[MAX_DIALOGS];
  tr_actor_t *callers[MAX_DIALOGS];
  uint8_t far[MAX_DIALOGS][TR_UUID_LEN];
  int n;
  int is_a;
} relay_end_t;

/* Which application message ends a relay end: cleanly, or as a broken
 * channel that tells its side which peers it lost. */
enum { RELAY_STOP = 1, RELAY_BREAK = 2 };

static int dialog_of(relay_end_t *r, uint64_t cid) {
  for (int i = 0; i < r->n; i++)
    if (r->cids[i] == cid)
      return i;
  return -1;
}

/* Encodes m and decodes it back: the message a transport would deliver.
 * Returns the new message (m is freed), or NULL when the codec refused. */
static tr_msg_t *through_codec(tr_msg_t *m) {
  uint8_t *buf = NULL;
  size_t len = 0;
  tr_msg_t *out = NULL;
  int rc = tr__env_encode(m, &buf, &len);
  tr_check_rc(rc, 0, "encode %s", tr__body_name(m->body));
  if (rc == 0)
    tr_check_rc(tr__env_decode(buf, len, &out), 0, "decode %s", tr__body_name(m->body));
  free(buf);
  tr_msg_free(m);
  return out;
}

static tr_actor_t *caller_of(relay_end_t *r, uint64_t cid) {
  for (int i = 0; i < r->n; i++)
    if (r->cids[i] == cid)
      return r->callers[i];
  return NULL;
}

static void relay(void *state, tr_msg_t *m) {
  relay_end_t *r = state;
  if (m->body == 0) {          /* an application message: the test ends the relay */
    if (m->tag == RELAY_BREAK) /* the channel broke: each side learns its losses */
      for (int i = 0; i < r->n; i++)
        tr__rpc_post_peer_lost(r->is_a ? r->callers[i] : r->local, r->far[i], -TR_EIO,
                               "relay channel broken");
    tr_actor_exit();
    return;
  }
  tr_msg_take(m);
  uint32_t tag = m->tag;
  int had_from = m->from != NULL;
  tr_actor_t *to = NULL;
  if (r->is_a) {
    if (tag == FROM_CALLEE_SIDE) {
      to = caller_of(r, m->cid);
      tag = 0; /* delivered: the caller needs no relay marker */
    } else {
      if (m->body == TR_BODY_START && m->from && r->n < MAX_DIALOGS) {
        r->cids[r->n] = m->cid;
        tr_actor_uuid(tr_self(), r->far[r->n]); /* what the caller holds for now */
        r->callers[r->n++] = tr_actor_dup(m->from);
      }
      to = r->other;
      tag = FROM_CALLER_SIDE;
    }
  } else {
    if (tag == FROM_CALLER_SIDE) {
      to = r->local;
      tag = 0;
      if (m->body == TR_BODY_START && m->x_ && m->x_->u.start.has_caller && r->n < MAX_DIALOGS) {
        r->cids[r->n] = m->cid;
        memcpy(r->far[r->n++], m->x_->u.start.caller.uuid, TR_UUID_LEN);
      }
    } else {
      to = r->other;
      tag = FROM_CALLEE_SIDE;
    }
  }
  /* A channel end names the sender on the wire: the envelope's src, from
   * the local `from`, when the message does not name it already. */
  if (m->from && !(m->x_ && m->x_->has_src)) {
    struct tr_envx *x = tr__envx_get(m);
    if (x) {
      x->has_src = 1;
      tr_actor_uuid(m->from, x->src.uuid);
      x->src.name = strdup(tr_actor_name(m->from));
    }
  }
  tr_msg_t *n = through_codec(m);
  if (!n || !to) {
    tr_msg_free(n);
    return;
  }
  n->tag = tag;
  int d;
  if (r->is_a && tag == 0 && n->body == TR_BODY_START_ACK && n->x_ && n->x_->has_src &&
      (d = dialog_of(r, n->cid)) >= 0) /* the callee, as the envelope names it */
    memcpy(r->far[d], n->x_->src.uuid, TR_UUID_LEN);
  if (had_from) /* the decoder cannot rebuild a pointer: the relay end stands in */
    n->from = tr_actor_dup(tr_self());
  tr_send(to, n);
}

static void relay_free(void *state) {
  relay_end_t *r = state;
  tr_actor_release(r->other);
  tr_actor_release(r->local);
  for (int i = 0; i < r->n; i++)
    tr_actor_release(r->callers[i]);
}

/* Builds A and B in front of callee e; *a is A (a reference): a portal to
 * it reaches e through the relay.  Stop with relay_stop. */
static relay_end_t ra, rb;

static int relay_start(tr_actor_t *e, tr_actor_t **a) {
  memset(&ra, 0, sizeof ra);
  memset(&rb, 0, sizeof rb);
  ra.is_a = 1;
  tr_spawn_opts_t oa = {.name = "relay-a", .on_exit = relay_free};
  tr_spawn_opts_t ob = {.name = "relay-b", .on_exit = relay_free};
  tr_actor_t *b = NULL;
  int rc = tr_spawn(relay, &ra, &oa, a);
  if (rc == 0)
    rc = tr_spawn(relay, &rb, &ob, &b);
  if (rc)
    return rc;
  ra.other = tr_actor_dup(b);
  rb.other = tr_actor_dup(*a);
  rb.local = tr_actor_dup(e);
  tr_actor_release(b);
  return 0;
}

/* Ends both relay ends (they exit; their on_exit drops what they hold). */
static void relay_end(tr_actor_t *a, uint32_t how) {
  tr_actor_t *b = ra.other; /* written by this task before A ever ran */
  if (b)
    tr_send_u64(b, how, 0);
  tr_send_u64(a, how, 0);
}

static void relay_stop(tr_actor_t *a) { relay_end(a, RELAY_STOP); }

/* ---- functions, and the scenarios ---------------------------------------------- */

static int twice(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)ctx;
  uint64_t v = 0;
  if (!args || tr_buf_to_u64(args, &v) != 0)
    return tr_fail("TypeError", "twice takes a u64");
  return tr_buf_from_u64(2 * v, result);
}
TR_EXPORT_FN("trel.fn", "twice", twice)

static int fails(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)ctx;
  (void)args;
  (void)result;
  return tr_fail("ValueError", "refused through the relay");
}
TR_EXPORT_FN("trel.fn", "fails", fails)

static int listener(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)args;
  (void)result;
  int rc = tr_ctx_started(ctx, NULL);
  tr_stream_t *s = NULL;
  if (rc == 0)
    rc = tr_ctx_open_stream(ctx, &s);
  while (rc == 0) {
    tr_buf_t *b = NULL;
    rc = tr_stream_recv(s, &b);
    if (rc == 0)
      rc = tr_stream_send(s, b); /* echo */
    tr_buf_release(b);
  }
  return rc == -TR_EEOF ? 0 : rc;
}
TR_EXPORT_CONTEXT("trel.ctx", "listener", listener)

static const char *const ns[] = {"trel.fn", "trel.ctx"};

static uint64_t buf_u64(const tr_buf_t *b) {
  uint64_t v = UINT64_MAX;
  if (b)
    tr_buf_to_u64(b, &v);
  return v;
}

TR_TEST(relay, dialogs_through_a_codec_relay, .timeout = 60) {
  tr_actor_nursery_t *an;
  tr_portal_t *e = NULL, *via = NULL;
  tr_actor_t *a = NULL;
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_start_actor(an, "callee", ns, 2, &e), 0);
  if (e)
    tr_check_rc(relay_start(tr_portal_actor(e), &a), 0);
  if (a)
    tr_check_rc(tr_portal_from_actor(a, &via), 0);
  char me[TR_UID_LEN(16)], ue[TR_UID_LEN(16)];
  tr_actor_uid(tr_self(), me, sizeof me);
  if (e)
    tr_actor_uid(tr_portal_actor(e), ue, sizeof ue);
  if (via) {
    /* run: a value and a boxed remote error. */
    tr_buf_t *arg = NULL, *res = NULL;
    tr_check_rc(tr_buf_from_u64(21, &arg), 0);
    tr_check_rc(tr_portal_run(via, "trel.fn.twice", arg, &res), 0);
    tr_check_eq(buf_u64(res), 42);
    tr_buf_release(res);
    tr_buf_release(arg);
    tr_check_rc(tr_portal_run(via, "trel.fn.fails", NULL, NULL), -TR_EREMOTE);
    tr_check_str_eq(tr_error_boxed_type(tr_error_last()), "ValueError");
    tr_check_str_eq(tr_error_src_uid(tr_error_last()), ue, "the source is the callee, by uid");

    /* A context: stream both ways, then this side's cancel, absorbed at
     * close as it is directly (the ContextCancelled names this actor, and
     * comes from the callee, not from the relay). */
    tr_ctx_t *ctx = NULL;
    tr_check_rc(tr_portal_open_context(via, "trel.ctx.listener", NULL, NULL, &ctx, NULL), 0);
    if (ctx) {
      tr_stream_t *s = NULL;
      tr_check_rc(tr_ctx_open_stream(ctx, &s), 0);
      for (uint64_t i = 0; s && i < 100; i++) {
        tr_buf_t *v = NULL, *got = NULL;
        tr_check_rc(tr_buf_from_u64(i, &v), 0);
        tr_check_rc(tr_stream_send(s, v), 0);
        tr_check_rc(tr_stream_recv(s, &got), 0);
        tr_check_eq(buf_u64(got), i, "echo %llu", (unsigned long long)i);
        tr_buf_release(v);
        tr_buf_release(got);
      }
      tr_check_rc(tr_ctx_cancel(ctx), 0);
      tr_check_rc(tr_ctx_cancel_wait(ctx, 5000 * MS), 0);
      tr_check_eq(tr_ctx_cancel_acked(ctx), 1, "acknowledged through the relay");
      tr_check_rc(tr_ctx_result(ctx, NULL), 0, "absorbed: this side asked for it");
      tr_check_str_eq(tr_error_canceller_uid(tr_error_last()), me, "this actor cancelled");
      tr_check_str_eq(tr_error_src_uid(tr_error_last()), ue, "raised in the callee");
      tr_check_rc(tr_ctx_close(ctx, NULL), 0);
    }
  }
  tr_portal_release(via);
  if (a) {
    relay_stop(a);
    tr_actor_release(a);
  }
  tr_assert_rc(tr_actor_nursery_close(an), 0);
  tr_portal_release(e);
  return 0;
}

/* ---- peer loss: a channel that breaks mid-stream and mid-call ----------------- */

static int forever(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)args;
  (void)result;
  tr_stream_t *s = NULL;
  int rc = tr_ctx_open_stream(ctx, &s);
  for (uint64_t i = 0; rc == 0; i++) {
    tr_buf_t *v = NULL;
    rc = tr_buf_from_u64(i, &v);
    if (rc == 0)
      rc = tr_stream_send(s, v);
    tr_buf_release(v);
  }
  return rc;
}
TR_EXPORT_STREAM("trel.stream", "forever", forever)

static int sleepy(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)ctx;
  (void)args;
  (void)result;
  return tr_sleep(20000 * MS);
}
TR_EXPORT_FN("trel.fn", "sleepy", sleepy)

typedef struct call_job {
  tr_portal_t *via;
  int rc;
} call_job_t;

static int call_sleepy(void *arg) {
  call_job_t *j = arg;
  j->rc = tr_portal_run(j->via, "trel.fn.sleepy", NULL, NULL);
  return 0;
}

static int lost_error(void) {
  const tr_error_t *e = tr_error_last();
  return e && tr_error_code(e) == -TR_EIO && strstr(tr_error_message(e), "relay channel broken");
}

TR_TEST(relay, broken_channel_ends_streams_and_calls, .timeout = 60) {
  static const char *const all[] = {"trel.fn", "trel.ctx", "trel.stream"};
  tr_actor_nursery_t *an;
  tr_portal_t *e = NULL, *via = NULL;
  tr_actor_t *a = NULL;
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_start_actor(an, "callee", all, 3, &e), 0);
  if (e)
    tr_check_rc(relay_start(tr_portal_actor(e), &a), 0);
  if (a)
    tr_check_rc(tr_portal_from_actor(a, &via), 0);
  if (via) {
    int64_t t0 = tr_now();
    /* A stream that never ends, and a call that would take 20 s. */
    tr_stream_t *s = NULL;
    tr_check_rc(tr_portal_open_stream_from(via, "trel.stream.forever", NULL, NULL, &s), 0);
    for (int i = 0; s && i < 10; i++) {
      tr_buf_t *v = NULL;
      tr_check_rc(tr_stream_recv(s, &v), 0);
      tr_buf_release(v);
    }
    call_job_t job = {via, 1};
    tr_nursery_t *n;
    tr_check_rc(tr_nursery_open(&n), 0);
    tr_check_rc(tr_nursery_spawn(n, call_sleepy, &job, NULL), 0);
    tr_check_rc(tr_checkpoint(), 0); /* the call is sent; it now waits */
    relay_end(a, RELAY_BREAK);
    /* The stream gives what it had, then the loss; nothing hangs. */
    int rc = 0;
    for (int i = 0; s && rc == 0 && i < 100000; i++) {
      tr_buf_t *v = NULL;
      rc = tr_stream_recv(s, &v);
      tr_buf_release(v);
    }
    tr_check_rc(rc, -TR_EIO, "the stream ends with the channel");
    tr_check(lost_error(), "the error says why");
    if (s)
      tr_check_rc(tr_stream_close(s), -TR_EIO);
    tr_check_rc(tr_nursery_close(n), 0);
    tr_check_rc(job.rc, -TR_EIO, "the waiting call ends with the channel");
    tr_check(tr_now() - t0 < 10000 * MS, "no wait for the callee (%lld ms)",
             (long long)((tr_now() - t0) / MS));
  }
  tr_portal_release(via);
  tr_actor_release(a);
  /* The callee's tasks were cancelled (their caller is gone): the daemon
   * closes at once. */
  tr_assert_rc(tr_actor_nursery_close(an), 0);
  tr_portal_release(e);
  return 0;
}
