/*
 * The dialog engine (docs/PROTOCOL.md): daemon actors that serve calls,
 * and every dialog on both sides, with one object per side of a dialog,
 * the context (struct tr_ctx):
 *   run              Start -> StartAck(FN) -> Return | Error
 *   open_stream_from Start -> StartAck(STREAM) -> Yield* -> Stop -> Return
 *   open_context     Start -> StartAck(CONTEXT) -> Started -> (Yield both
 *                    ways, Stop each way) -> Return | Error
 *   cancel           Cancel(cid) -> Error(ContextCancelled) -> CancelAck
 *   actor cancel     Cancel(whole_actor) -> ... -> CancelAck at exit
 * with per-direction credit windows (Credit) on streams.
 *
 * It speaks only tr_msg_t envelopes (body, cid, u64, x_, payload, from),
 * never in-process shortcuts, so the TCP transport can carry the same
 * messages unchanged.  Everything runs in the actors' own turns and tasks,
 * so a context is only ever touched by one thread at a time:
 *   - protocol messages reach tr__rpc_dispatch in the actor's turn, which
 *     updates the context the cid names and wakes the tasks waiting on it;
 *   - tasks block on a context (stream recv/send, result) until the state
 *     they need is there, or they are cancelled.
 * Errors cross boxed: the error object travels as the Error body's fields
 * and becomes a RemoteActorError (or ContextCancelled) at the caller.
 *
 * Dialog ids (cid) are chosen by the caller from one process-wide counter,
 * so a cid names one dialog in the process and an actor finds a context by
 * cid alone (an actor may not call itself: that dialog would have both
 * sides in one actor under one cid).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <tractor/portal.h>

#include "runtime/actor/actor.h"
#include "runtime/error/error.h"
#include "runtime/log.h"
#include "runtime/platform/assert.h"
#include "runtime/rpc/registry.h"
#include "runtime/runtime.h"
#include "runtime/task/task.h"
#include "schema/envelope.h"

struct tr_portal {
  tr_actor_t *actor;    /* a reference */
  tr_an_child_t *child; /* nursery child: its record while the nursery is open */
  /* run_in_actor results once the nursery has closed (cached). */
  uint8_t has_result;
  int result_rc;
  tr_buf_t *value;
  tr_error_t *error;
};

enum { SIDE_CALLER = 1, SIDE_CALLEE = 2 };
/* A caller-side record that only waits for an actor cancel's CancelAck. */
enum { KIND_ACTOR_CANCEL = 0 };

/* A task blocked on a context (a node on the task's stack). */
typedef struct tr_waiter {
  struct tr_waiter *next;
  tr_task_t *task;
} tr_waiter_t;

struct tr_bcast;

struct tr_stream {
  struct tr_ctx *ctx;
  struct tr_bcast *bc; /* set once subscribed (on the source and subscribers) */
  uint64_t seq;        /* broadcast: index of the next value to read */
  struct tr_stream *bnext;
  uint8_t is_sub;
  uint8_t busy; /* a subscriber: a task waits in tr_stream_recv on it */
};

/* Local broadcast of one stream (tr_stream_subscribe): the last `cap`
 * values, each read by every receiver at its own position. */
typedef struct tr_bcast {
  tr_stream_t *src;   /* the context's stream */
  tr_buf_t **ring;    /* cap slots; value i at ring[i % cap] */
  uint64_t cap, head; /* head: index of the next value to arrive */
  tr_stream_t *subs;  /* subscribers (not the source) */
  uint8_t pulling;    /* a receiver is waiting on the source */
  uint8_t ended;      /* the source's end is known: end_rc, end_err */
  int end_rc;
  tr_error_t *end_err;
} tr_bcast_t;

struct tr_ctx {
  struct tr_ctx *next; /* the actor's dialogs */
  tr_actor_t *actor;   /* the actor this side lives in (not a reference) */
  tr_actor_t *peer;    /* a reference */
  uint64_t cid;
  uint8_t side, kind;
  uint8_t acked;         /* caller: StartAck in */
  uint8_t started;       /* Started sent (callee) or received (caller) */
  uint8_t opened;        /* this side opened its stream */
  uint8_t tx_stop;       /* this side sent Stop */
  uint8_t rx_stop;       /* the peer's Stop arrived */
  uint8_t cancel_called; /* this side asked to cancel (caller: Cancel sent) */
  uint8_t cancel_req;    /* callee: the caller sent Cancel(cid) */
  uint8_t self_cancel;   /* callee: the function cancelled its own context */
  uint8_t done;          /* caller: final message in; callee: task finished */
  uint8_t overrun_error;
  uint8_t has_scope;  /* caller of a context: scope is open */
  uint8_t has_out;    /* caller: the outcome below is computed */
  uint8_t kind_wrong; /* caller: StartAck named another kind */
  uint8_t closing;    /* caller: tr_ctx_close runs; other tasks keep out */
  uint32_t window, credit, unacked, rx_len;
  tr_msg_t *rx_head, *rx_tail; /* Yields not yet received */
  tr_msg_t *first;             /* caller: the Started message */
  tr_msg_t *final;             /* caller: the Return or Error message */
  int out_rc;                  /* caller: the outcome of `final` */
  tr_error_t *out_err;
  tr_waiter_t *waiters;
  unsigned users;  /* tasks inside an operation that may block */
  tr_task_t *task; /* caller: the opener; callee: the function's task */
  tr_scope_t *task_scope;
  const tr__rpc_entry_t *entry; /* may be NULL on the caller's side */
  tr_buf_t *args;               /* callee: owned reference */
  tr_stream_t stream;
  tr_scope_t scope; /* caller of a context: the context block's scope */
};

/* Per-actor RPC state beyond tr_tasks_t's fields: who asked to cancel the
 * whole actor, and where its CancelAck goes. */
typedef struct tr_cancel_ack {
  struct tr_cancel_ack *next;
  tr_actor_t *to; /* a reference */
  uint64_t cid;
} tr_cancel_ack_t;

static uint64_t g_next_cid;

static uint64_t new_cid(void) { return __atomic_add_fetch(&g_next_cid, 1, __ATOMIC_RELAXED); }

static char *dup_str(const char *s) { return s ? strdup(s) : NULL; }

/* ---- uids (tr_actor_uid: name and 128-bit uuid) ------------------------------ */

/* An actor's uid as the envelope carries it. */
static void uid_set(tr_uid_t *u, const tr_actor_t *a) {
  memset(u, 0, sizeof(*u));
  u->name = dup_str(tr_actor_name(a));
  tr_actor_uuid(a, u->uuid);
}

/* "Is this that actor": uuids compared, never names or pointers. */
static int uid_is(const tr_uid_t *u, const tr_actor_t *a) {
  uint8_t v[TR_UUID_LEN];
  tr_actor_uuid(a, v);
  return memcmp(u->uuid, v, TR_UUID_LEN) == 0;
}

static int same_actor(const tr_actor_t *a, const tr_actor_t *b) {
  uint8_t u[TR_UUID_LEN], v[TR_UUID_LEN];
  tr_actor_uuid(a, u);
  tr_actor_uuid(b, v);
  return memcmp(u, v, TR_UUID_LEN) == 0;
}

static int uuid_is_zero(const uint8_t *u) {
  for (int i = 0; i < TR_UUID_LEN; i++)
    if (u[i])
      return 0;
  return 1;
}

/* A wire uid as errors name actors: "name@<32 hex>", or the bare name
 * when the sender gave no uuid.  Into buf (TR_UID_TEXT bytes). */
#define TR_UID_TEXT 192
static const char *uid_text(const tr_uid_t *u, char *buf) {
  const char *name = u->name ? u->name : "actor";
  if (uuid_is_zero(u->uuid)) {
    snprintf(buf, TR_UID_TEXT, "%s", name);
    return buf;
  }
  int n = snprintf(buf, TR_UID_TEXT - 33, "%s", name);
  if (n < 0)
    n = 0;
  if (n > TR_UID_TEXT - 34)
    n = TR_UID_TEXT - 34; /* a very long name is cut, the uuid is not */
  buf[n++] = '@';
  for (int i = 0; i < TR_UUID_LEN; i++)
    snprintf(buf + n + 2 * i, 3, "%02x", u->uuid[i]);
  return buf;
}

/* The same for a local actor. */
static const char *actor_uid_text(const tr_actor_t *a, char *buf) {
  tr_uid_t u;
  memset(&u, 0, sizeof u);
  u.name = (char *)tr_actor_name(a); /* borrowed: uid_text only reads it */
  tr_actor_uuid(a, u.uuid);
  return uid_text(&u, buf);
}

/* Parses a uid text back into a wire uid (name, and the uuid when the text
 * has one), for an error this actor passes on. */
static void uid_parse(tr_uid_t *u, const char *text) {
  memset(u, 0, sizeof(*u));
  const char *at = text ? strrchr(text, '@') : NULL;
  if (!at || strlen(at + 1) != 2 * TR_UUID_LEN ||
      strspn(at + 1, "0123456789abcdef") != 2 * TR_UUID_LEN) {
    u->name = dup_str(text);
    return;
  }
  u->name = strndup(text, (size_t)(at - text));
  for (int i = 0; i < TR_UUID_LEN; i++) {
    unsigned v = 0;
    sscanf(at + 1 + 2 * i, "%2x", &v);
    u->uuid[i] = (uint8_t)v;
  }
}

static tr_task_t *current_task(void) {
  tr_actor_t *self = tr_self();
  return self ? tr__task_of_actor_current(self) : NULL;
}

/* ---- sending ---------------------------------------------------------------- */

static int send_body(tr_actor_t *to, int body, uint64_t cid, uint64_t u64, tr_buf_t *payload) {
  tr_msg_t *m;
  if (tr_msg_new(&m) != 0) {
    tr_buf_release(payload);
    return -TR_ENOMEM;
  }
  m->body = (uint16_t)body;
  m->cid = cid;
  m->u64 = u64;
  m->payload = payload;
  return tr__send(to, m);
}

/* Sends Cancel or CancelAck; Cancel carries the sender (only the dialog's
 * caller may cancel it). */
static int send_cancel(tr_actor_t *self, tr_actor_t *to, int body, uint64_t cid, int whole,
                       int acked) {
  tr_msg_t *m;
  if (tr_msg_new(&m) != 0)
    return -TR_ENOMEM;
  m->body = (uint16_t)body;
  m->cid = cid;
  m->u64 = cid;
  struct tr_envx *x = tr__envx_get(m);
  if (!x) {
    tr_msg_free(m);
    return -TR_ENOMEM;
  }
  x->u.cancel.whole_actor = (uint8_t)(whole != 0);
  x->u.cancel.acknowledged = (uint8_t)(acked != 0);
  if (body == TR_BODY_CANCEL && self)
    m->from = tr_actor_dup(self);
  return tr__send(to, m);
}

/*
 * Sends Error(cid) built from error object e (may be NULL) and code rc to
 * `to`.  With `canceller` (ContextCancelled), the canceller's uid travels
 * too.  Best effort: the caller may be gone.
 */
static void send_error(tr_actor_t *self, tr_actor_t *to, uint64_t cid, int rc, const tr_error_t *e,
                       const tr_actor_t *canceller) {
  tr_msg_t *m;
  if (tr_msg_new(&m) != 0)
    return;
  m->body = TR_BODY_ERROR;
  m->cid = cid;
  struct tr_envx *x = tr__envx_get(m);
  if (!x) {
    tr_msg_free(m);
    return;
  }
  x->u.error.code = rc < 0 ? -rc : rc;
  x->u.error.cid = cid;
  /* An error that is already boxed (a remote error this actor re-raises)
   * keeps its original type and source; this actor joins its relay path
   * (tractor's relay of RemoteActorError through intermediate actors). */
  int reboxed = e && tr_error_boxed_type(e) && tr_error_src(e);
  /* The boxed type is what this actor raises (for a relay: the
   * RemoteActorError or ContextCancelled it received); the source type is
   * where the error began (tractor's boxed_type and src_type). */
  const char *type = e ? tr_error_type(e) : tr_errtype(rc);
  const char *src_type = reboxed && tr_error_src_type(e) ? tr_error_src_type(e) : type;
  x->u.error.boxed_type = dup_str(type);
  x->u.error.src_type = dup_str(src_type);
  x->u.error.message = dup_str(e ? tr_error_message(e) : tr_strerror(rc));
  if (e && tr_error_trace_len(e) > 0) {
    /* The trace travels as one text, a hop per line (PROTOCOL.md). */
    size_t len = 0, n = tr_error_trace_len(e);
    for (size_t i = 0; i < n; i++)
      len += strlen(tr_error_trace(e, i)) + 1;
    char *t = malloc(len + 1);
    if (t) {
      t[0] = '\0';
      for (size_t i = 0; i < n; i++) {
        strcat(t, tr_error_trace(e, i));
        strcat(t, "\n");
      }
      x->u.error.trace = t;
    }
  }
  x->u.error.has_src = 1;
  if (reboxed) {
    uid_parse(&x->u.error.src, tr_error_src_uid(e) ? tr_error_src_uid(e) : tr_error_src(e));
    size_t n = tr_error_relay_len(e);
    x->u.error.relay = calloc(n + 1, sizeof(tr_uid_t));
    if (x->u.error.relay) {
      for (size_t i = 0; i < n; i++)
        uid_parse(&x->u.error.relay[i],
                  tr_error_relay_uid(e, i) ? tr_error_relay_uid(e, i) : tr_error_relay(e, i));
      if (self)
        uid_set(&x->u.error.relay[n], self);
      x->u.error.n_relay = n + 1;
    }
  } else if (self) {
    uid_set(&x->u.error.src, self);
  } else {
    x->u.error.src.name = dup_str("actor");
  }
  if (canceller) {
    x->u.error.has_canceller = 1;
    uid_set(&x->u.error.canceller, canceller);
  } else if (e && tr_error_canceller(e)) {
    /* A ContextCancelled re-raised here keeps the actor that cancelled it
     * (tractor's pack_error keeps the whole record). */
    x->u.error.has_canceller = 1;
    uid_parse(&x->u.error.canceller,
              tr_error_canceller_uid(e) ? tr_error_canceller_uid(e) : tr_error_canceller(e));
  }
  (void)tr__send(to, m);
}

/* ---- contexts: common ------------------------------------------------------- */

static tr_ctx_t *find_ctx(tr_tasks_t *ts, uint64_t cid) {
  tr_ctx_t **pp = &ts->dialogs;
  for (tr_ctx_t *c = *pp; c; pp = &c->next, c = c->next)
    if (c->cid == cid) {
      if (pp != &ts->dialogs) { /* move to front: the busy dialog is found first */
        *pp = c->next;
        c->next = ts->dialogs;
        ts->dialogs = c;
      }
      return c;
    }
  return NULL;
}

static void ctx_link(tr_tasks_t *ts, tr_ctx_t *c) {
  c->next = ts->dialogs;
  ts->dialogs = c;
}

static void ctx_unlink(tr_tasks_t *ts, tr_ctx_t *c) {
  for (tr_ctx_t **pp = &ts->dialogs; *pp; pp = &(*pp)->next)
    if (*pp == c) {
      *pp = c->next;
      return;
    }
}

static void ctx_init(tr_ctx_t *c, tr_actor_t *self, int side, int kind, uint64_t cid,
                     const tr_ctx_opts_t *opts) {
  memset(c, 0, sizeof(*c));
  c->actor = self;
  c->side = (uint8_t)side;
  c->kind = (uint8_t)kind;
  c->cid = cid;
  c->window = opts && opts->window ? opts->window : TR_STREAM_WINDOW;
  if (c->window > TR_STREAM_WINDOW_MAX) /* a Start from outside chooses it */
    c->window = TR_STREAM_WINDOW_MAX;
  c->credit = c->window;
  c->overrun_error = opts && opts->overrun == TR_OVERRUN_ERROR;
  c->stream.ctx = c;
}

static void ctx_notify(tr_ctx_t *c) {
  for (tr_waiter_t *w = c->waiters; w; w = w->next)
    tr__task_wake_blocked(w->task);
}

static void waiter_unlink(tr_ctx_t *c, tr_waiter_t *w) {
  for (tr_waiter_t **pp = &c->waiters; *pp; pp = &(*pp)->next)
    if (*pp == w) {
      *pp = w->next;
      return;
    }
}

/* A task enters / leaves an operation that may block on the context.  A
 * callee's function task waits, as it ends, until every other task has
 * left (they see `done` and return), so each leave may be the one it
 * waits for. */
static void ctx_enter(tr_ctx_t *c) { c->users++; }

static void ctx_leave(tr_ctx_t *c) {
  c->users--;
  if (c->done && c->side == SIDE_CALLEE)
    ctx_notify(c);
}

/* Blocks the running task until the context changes or the task is
 * cancelled: returns 0 to re-check, or -TR_ECANCELED.  `what` names the
 * wait for the hang report (a string literal). */
static int ctx_wait(tr_ctx_t *c, tr_task_t *t, const char *what) {
  if (tr__task_cancelled(t))
    return tr__task_observe_cancel(t, "%s", "");
  tr_waiter_t w = {c->waiters, t};
  c->waiters = &w;
  t->blocked_on = what;
  tr__task_block(t, 1);
  waiter_unlink(c, &w);
  /* Woken by the cancellation, or cancelled while the wake was pending:
   * the operation does not happen (nothing sent, nothing taken).  Unless
   * the dialog has ended meanwhile: its outcome (a remote error that
   * cancelled the context's scope, say) is what the operation returns. */
  if (!c->done && tr__task_cancelled(t))
    return tr__task_observe_cancel(t, "%s", "");
  return 0;
}

/* The same, not cancellable and bounded by an absolute deadline. */
static void ctx_wait_until(tr_ctx_t *c, tr_task_t *t, int64_t deadline, const char *what) {
  tr_waiter_t w = {c->waiters, t};
  c->waiters = &w;
  t->blocked_on = what;
  tr__task_wait_until(t, deadline);
  waiter_unlink(c, &w);
}

/* Drops the values not yet received, returning their credit so that a
 * sender blocked on the window can go on to its end. */
static void ctx_discard_rx(tr_ctx_t *c) {
  uint32_t n = 0;
  while (c->rx_head) {
    tr_msg_t *m = c->rx_head;
    c->rx_head = m->next_;
    tr_msg_free(m);
    n++;
  }
  c->rx_tail = NULL;
  c->rx_len = 0;
  if (n && !c->done && c->peer)
    (void)send_body(c->peer, TR_BODY_CREDIT, c->cid, n, NULL);
}

static void ctx_free(tr_ctx_t *c) {
  ctx_discard_rx(c);
  tr_msg_free(c->first);
  tr_msg_free(c->final);
  tr__error_free(c->out_err);
  tr_buf_release(c->args);
  tr_actor_release(c->peer);
  free(c);
}

/* Splits "ns.func" into ns (a caller buffer) and returns func, or NULL. */
static const char *split_name(const char *qualified, char *ns, size_t cap) {
  const char *dot = qualified ? strrchr(qualified, '.') : NULL;
  if (!dot || dot == qualified || !dot[1] || (size_t)(dot - qualified) >= cap)
    return NULL;
  memcpy(ns, qualified, (size_t)(dot - qualified));
  ns[dot - qualified] = '\0';
  return dot + 1;
}

/* ---- callee side ------------------------------------------------------------ */

/* Why the function's scope was cancelled, for its ContextCancelled: the
 * canceller and a phrase (PROTOCOL.md 8.3), or NULL when it was not. */
static const tr_actor_t *cancel_cause(tr_ctx_t *c, tr_tasks_t *ts, const char **why) {
  if (c->self_cancel) {
    *why = "by itself";
    return c->actor;
  }
  if (c->cancel_req) {
    *why = "by its caller-side peer";
    return c->peer;
  }
  if (ts->cancel_by) {
    *why = same_actor(ts->cancel_by, c->peer) ? "by its caller" : "by a remote peer";
    return ts->cancel_by;
  }
  if (ts->stopping) {
    *why = "because its actor was cancelled";
    return c->actor;
  }
  return NULL;
}

/* The task that runs one call and answers it. */
static int serve_request(void *arg) {
  tr_ctx_t *c = arg;
  tr_actor_t *self = tr_self();
  tr_tasks_t *ts = self->tasks;
  tr_scope_t s;
  tr_buf_t *result = NULL;
  c->task = tr__task_of_actor_current(self);
  int rc = tr_scope_open(&s, TR_NO_DEADLINE, 0);
  if (rc == 0) {
    c->task_scope = &s;
    if (c->cancel_req)
      tr_scope_cancel(&s);
    rc = tr__rpc_check_payload(c->entry, TR__RPC_ARGS, c->args);
    if (rc == 0)
      rc = c->entry->fn(c, c->args, &result);
    if (rc == 0)
      rc = tr__rpc_check_payload(c->entry, TR__RPC_RETURN, result);
    c->task_scope = NULL;
    tr_scope_close(&s);
  }
  const char *why = NULL;
  const tr_actor_t *canceller = rc == -TR_ECANCELED ? cancel_cause(c, ts, &why) : NULL;
  if (rc == 0) {
    if ((c->kind == TR_FUNC_STREAM || c->opened) && !c->tx_stop) {
      c->tx_stop = 1;
      (void)send_body(c->peer, TR_BODY_STOP, c->cid, 0, NULL);
    }
    (void)send_body(c->peer, TR_BODY_RETURN, c->cid, 0, result);
  } else if (canceller) {
    tr_buf_release(result);
    tr_error_t *e = tr__error_new(
        -TR_ECTXCANCELED, "ContextCancelled", "%s task %s in actor %s was cancelled %s",
        tr__rpc_kind_name(c->kind), c->entry->name, tr_actor_name(self), why);
    char ub[TR_UID_TEXT];
    tr__error_set_canceller(e, actor_uid_text(canceller, ub));
    send_error(self, c->peer, c->cid, -TR_ECTXCANCELED, e, canceller);
    tr__error_free(e);
  } else {
    tr_buf_release(result);
    send_error(self, c->peer, c->cid, rc, tr_error_last(), NULL);
  }
  if (c->cancel_req)
    (void)send_cancel(self, c->peer, TR_BODY_CANCEL_ACK, c->cid, 0, 1);
  /* Other tasks of this actor may be inside an operation on the context
   * (a publisher sending to a subscriber): they see `done` and leave. */
  c->done = 1;
  tr_task_t *t = c->task;
  while (c->users) {
    ctx_notify(c);
    ctx_wait_until(c, t, TR_NO_DEADLINE,
                   "the end of its RPC call (other tasks still use the context)");
  }
  ctx_unlink(ts, c);
  ctx_free(c);
  /* The call's failure went to its caller: the daemon keeps serving. */
  return 0;
}

/* Handles a Start; returns 1 when it kept m (queued until the service is
 * up), 0 when the caller may dispose of it. */
static int on_start(tr_actor_t *a, tr_msg_t *m) {
  tr_tasks_t *ts = a->tasks;
  tr_actor_t *caller = m->from;
  struct tr_envx *x = m->x_;
  if (!caller)
    return 0; /* nobody to answer: a malformed call (in-process senders set from) */
  if (!ts->service && !ts->serve_done && !ts->stopping) {
    /* The daemon's main task has not opened its service nursery yet (the
     * call raced its first turn): keep the call, in order, until it has. */
    m->next_ = NULL;
    tr_msg_t **pp = &ts->early_starts;
    while (*pp)
      pp = &(*pp)->next_;
    *pp = m;
    return 1;
  }
  const tr__rpc_entry_t *e = NULL;
  int rc;
  if (ts->stopping)
    rc = TR_ERROR(-TR_ECANCELED, "actor %s is being cancelled", tr_actor_name(a));
  else if (!ts->service)
    rc = TR_ERROR(-TR_ECLOSED, "actor %s does not serve calls", tr_actor_name(a));
  else if (!x || !x->u.start.ns || !x->u.start.func)
    rc = TR_ERROR(-TR_EPROTO, "Start without a function name");
  else
    rc = tr__rpc_resolve_parts(x->u.start.ns, x->u.start.func, (const char *const *)ts->enable,
                               ts->n_enable, 0, &e);
  if (rc) {
    /* Refused before any task starts (tractor's ModuleNotExposed etc.). */
    tr_error_t *err = tr__error_take();
    send_error(a, caller, m->cid, rc, err, NULL);
    tr__error_free(err);
    return 0;
  }
  tr_ctx_t *c = malloc(sizeof(*c));
  if (!c) {
    send_error(a, caller, m->cid, -TR_ENOMEM, NULL, NULL);
    return 0;
  }
  tr_ctx_opts_t opts = {.window = (uint32_t)m->u64, .overrun = (int)((m->u64 >> 32) & 1)};
  ctx_init(c, a, SIDE_CALLEE, e->kind, m->cid, &opts);
  c->entry = e;
  c->args = m->payload;
  m->payload = NULL;
  c->peer = m->from;
  m->from = NULL;
  rc = tr__nursery_spawn_internal(ts->service, serve_request, c, e->name);
  if (rc) {
    send_error(a, c->peer, c->cid, rc, NULL, NULL);
    ctx_free(c);
    return 0;
  }
  ctx_link(ts, c);
  (void)send_body(c->peer, TR_BODY_START_ACK, c->cid, (uint64_t)e->kind, NULL);
  return 0;
}

/* Answers the calls that arrived before the service was up (or, once it has
 * ended, refuses them). */
static void run_early_starts(tr_worker_t *w, tr_actor_t *a) {
  tr_tasks_t *ts = a->tasks;
  while (ts->early_starts) {
    tr_msg_t *m = ts->early_starts;
    ts->early_starts = m->next_;
    m->next_ = NULL;
    if (!on_start(a, m))
      tr__msg_dispose(w, m);
  }
}

/* Cancel(whole_actor) from R: every task of the actor is cancelled (shields
 * hold), each served dialog reports ContextCancelled naming R, and R gets
 * CancelAck when the actor exits. */
static void on_cancel_actor(tr_actor_t *a, tr_msg_t *m) {
  tr_tasks_t *ts = a->tasks;
  tr_cancel_ack_t *k = malloc(sizeof(*k));
  if (k) {
    k->to = tr_actor_dup(m->from);
    k->cid = m->cid;
    k->next = ts->cancel_acks;
    ts->cancel_acks = k;
  }
  if (!ts->cancel_by)
    ts->cancel_by = tr_actor_dup(m->from);
  tr__tasks_stop(a);
}

static void on_cancel(tr_actor_t *a, tr_msg_t *m) {
  struct tr_envx *x = m->x_;
  if (x && x->u.cancel.whole_actor) {
    on_cancel_actor(a, m);
    return;
  }
  tr_ctx_t *c = find_ctx(a->tasks, m->u64);
  /* Only the dialog's caller may cancel it. */
  if (!c || c->side != SIDE_CALLEE || !same_actor(c->peer, m->from)) {
    (void)send_cancel(a, m->from, TR_BODY_CANCEL_ACK, m->u64, 0, 0);
    return;
  }
  c->cancel_req = 1;
  if (c->task_scope)
    tr__task_cancel_scope_local(c->task, c->task_scope);
  ctx_notify(c);
}

/* ---- caller side: receiving ------------------------------------------------- */

static int is_absorbed(const tr_ctx_t *c, const struct tr_envx *x) {
  /* PROTOCOL.md 8.3 (a): this side asked, the error comes from its direct
   * peer, and it names this side as the canceller. */
  return c->cancel_called && x->u.error.has_src && uid_is(&x->u.error.src, c->peer) &&
         x->u.error.has_canceller && uid_is(&x->u.error.canceller, c->actor);
}

/* Turns the final message into the outcome (once): out_rc, out_err. */
static void ctx_outcome(tr_ctx_t *c) {
  if (c->has_out)
    return;
  c->has_out = 1;
  tr_msg_t *m = c->final;
  if (!m) {
    c->out_rc = -TR_ECLOSED;
    c->out_err = tr__error_new(-TR_ECLOSED, NULL, "actor %s exited during the dialog",
                               tr_actor_name(c->peer));
    return;
  }
  if (m->body == TR_BODY_RETURN) {
    c->out_rc = 0;
    return;
  }
  struct tr_envx *x = m->x_;
  int code = x ? -(int)x->u.error.code : -TR_EREMOTE;
  const char *boxed = x && x->u.error.boxed_type ? x->u.error.boxed_type : "Error";
  const char *msg = x && x->u.error.message ? x->u.error.message : "";
  int rc;
  tr_error_t *e;
  char ub[TR_UID_TEXT];
  if (code == -TR_ECTXCANCELED) {
    rc = is_absorbed(c, x) ? 0 : -TR_ECTXCANCELED;
    e = tr__error_new(-TR_ECTXCANCELED, "ContextCancelled", "%s", msg);
    if (x->u.error.has_canceller && x->u.error.canceller.name)
      tr__error_set_canceller(e, uid_text(&x->u.error.canceller, ub));
  } else {
    /* Refusals keep their own code; failures of the function are boxed. */
    rc = (code == -TR_ENOFUNC || code == -TR_ENOTEXPOSED || code == -TR_EFUNCKIND ||
          code == -TR_ECLOSED || code == -TR_EPROTO || code == -TR_EMSGTYPE ||
          code == -TR_ECANCELED || code == -TR_EOVERRUN)
             ? code
             : -TR_EREMOTE;
    e = tr__error_new(rc, "RemoteActorError", "%s", msg);
  }
  tr__error_set_boxed_type(e, boxed);
  tr__error_set_src_type(e, x && x->u.error.src_type ? x->u.error.src_type : boxed);
  /* The source is where the error was raised (it may have come through
   * relays); the actors it came through form the relay path. */
  tr__error_set_src(e, x && x->u.error.has_src && x->u.error.src.name
                           ? uid_text(&x->u.error.src, ub)
                           : actor_uid_text(c->peer, ub));
  for (size_t i = 0; x && i < x->u.error.n_relay; i++)
    if (x->u.error.relay[i].name)
      tr__error_relay_append(e, uid_text(&x->u.error.relay[i], ub));
  if (x && x->u.error.trace) {
    char *t = x->u.error.trace, *nl;
    while (*t && (nl = strchr(t, '\n'))) {
      *nl = '\0';
      tr__error_trace_append_str(e, t);
      t = nl + 1;
    }
  }
  c->out_rc = rc;
  c->out_err = e;
}

/* Returns the outcome to the running task: rc, with tr_error_last set to a
 * copy of the error (an absorbed ContextCancelled included). */
static int ctx_put_outcome(tr_ctx_t *c) {
  ctx_outcome(c);
  if (c->out_err)
    tr__error_put(tr__error_copy(c->out_err));
  else
    tr_error_clear();
  return c->out_rc;
}

/* The caller's side of a context after this side asked to cancel it: its
 * stream is over (PROTOCOL.md 8.3 (a), tractor's "stream opened after
 * Context.cancel()").  Returns the real failure if one came in meanwhile,
 * else ContextCancelled naming this side as the canceller; the context's
 * close still absorbs it. */
static int ctx_cancelled_here(tr_ctx_t *c, const char *op) {
  if (c->done) {
    ctx_outcome(c);
    if (c->out_rc != 0)
      return ctx_put_outcome(c);
  }
  int rc = TR_ERROR(-TR_ECTXCANCELED,
                    "%s after tr_ctx_cancel: the context with actor %s was "
                    "cancelled by this side",
                    op, tr_actor_name(c->peer));
  tr_error_t *e = tr__error_take();
  char ub[TR_UID_TEXT];
  tr__error_set_canceller(e, actor_uid_text(c->actor, ub));
  tr__error_set_src(e, actor_uid_text(c->peer, ub));
  tr__error_put(e);
  return rc;
}

/* Refuses an operation of another task while the opener closes the
 * context (tr_ctx_close frees it once its own waits are over). */
static int ctx_refuse_closing(const tr_ctx_t *c) {
  return c->closing ? TR_ERROR(-TR_EBUSY,
                               "the context with actor %s is being closed by the task "
                               "that opened it",
                               tr_actor_name(c->peer))
                    : 0;
}

/* The final message arrived (or the peer is gone, m == NULL). */
static void ctx_finish(tr_ctx_t *c, tr_msg_t *m) {
  c->done = 1;
  c->final = m;
  /* A remote error cancels the context block's scope (PROTOCOL.md 6.3),
   * unless it is the ContextCancelled this side asked for. */
  if (c->has_scope && (!m || m->body == TR_BODY_ERROR)) {
    ctx_outcome(c);
    if (c->out_rc != 0)
      tr__task_cancel_scope_local(c->task, &c->scope);
  }
  ctx_notify(c);
}

static void on_yield(tr_ctx_t *c, tr_msg_t *m) {
  if (c->rx_len >= c->window) {
    /* The peer ignored the window: the dialog fails (PROTOCOL.md 7). */
    tr_msg_free(m);
    if (c->side == SIDE_CALLEE) {
      send_error(c->actor, c->peer, c->cid, -TR_EOVERRUN, NULL, NULL);
      c->cancel_req = 1;
      if (c->task_scope)
        tr__task_cancel_scope_local(c->task, c->task_scope);
    } else if (!c->done) {
      (void)send_cancel(c->actor, c->peer, TR_BODY_CANCEL, c->cid, 0, 0);
      c->cancel_called = 1;
      c->has_out = 1;
      c->done = 1;
      c->out_rc = TR_ERROR(-TR_EOVERRUN, "StreamOverrun: actor %s sent beyond the window of %u",
                           tr_actor_name(c->peer), c->window);
      c->out_err = tr__error_take();
    }
    ctx_notify(c);
    return;
  }
  m->next_ = NULL;
  if (c->rx_tail)
    c->rx_tail->next_ = m;
  else
    c->rx_head = m;
  c->rx_tail = m;
  c->rx_len++;
  if (c->waiters)
    ctx_notify(c);
}

/* A protocol message the engine does not act on: counted (tr_stats'
 * proto_dropped) and logged with why, at DEBUG when it is an expected
 * late arrival (the dialog ended, the caller left), else at WARN. */
static void dropped(tr_worker_t *w, tr_actor_t *a, const tr_msg_t *m, int level, const char *why) {
  TR_COUNT(w, proto_dropped, 1);
  tr_log(level, "dropped %s (cid %llu) from %s at actor %s: %s", tr__body_name(m->body),
         (unsigned long long)m->cid, m->from ? tr_actor_name(m->from) : "an unnamed sender",
         tr_actor_name(a), why);
}

void tr__rpc_dispatch(tr_worker_t *w, tr_actor_t *a, tr_msg_t *m) {
  tr_tasks_t *ts = a->tasks;
  tr_ctx_t *c = NULL;
  const char *why = NULL; /* set when the message is dropped */
  int level = TR_LOG_DEBUG;
  switch (m->body) {
  case TR_BODY_START:
    if (!m->from) {
      why = "a Start without a sender cannot be answered";
      level = TR_LOG_WARN;
    } else if (on_start(a, m)) {
      return;
    }
    break;
  case TR_BODY_CANCEL:
    if (m->from) {
      on_cancel(a, m);
    } else {
      why = "a Cancel without a sender (only a dialog's caller may cancel it)";
      level = TR_LOG_WARN;
    }
    break;
  case TR_BODY_YIELD:
    if ((c = find_ctx(ts, m->cid)) && !c->done && !c->rx_stop) {
      on_yield(c, m);
      return;
    }
    why = !c        ? "no such dialog (it ended, or its caller left)"
          : c->done ? "the dialog has ended"
                    : "a value after the sender's Stop";
    level = c && !c->done ? TR_LOG_WARN : TR_LOG_DEBUG;
    break;
  case TR_BODY_CREDIT:
    if ((c = find_ctx(ts, m->cid))) {
      /* Never more than a window: a peer's excess credit (a foreign
       * peer's bug) must not let this side flood it. */
      c->credit = (uint32_t)(c->credit + m->u64 > c->window ? c->window : c->credit + m->u64);
      ctx_notify(c);
    } else {
      why = "no such dialog (it ended)";
    }
    break;
  case TR_BODY_STOP:
    if ((c = find_ctx(ts, m->cid))) {
      c->rx_stop = 1;
      ctx_notify(c);
    } else {
      why = "no such dialog (it ended)";
    }
    break;
  case TR_BODY_START_ACK:
    if ((c = find_ctx(ts, m->cid)) && c->side == SIDE_CALLER) {
      c->acked = 1;
      c->kind_wrong = m->u64 != c->kind;
      if (c->kind != TR_FUNC_FN || c->kind_wrong) /* a run waits only for these */
        ctx_notify(c);
    } else {
      why = c ? "a StartAck for a dialog this actor serves" : "no such dialog (its caller left)";
      level = c ? TR_LOG_WARN : TR_LOG_DEBUG;
    }
    break;
  case TR_BODY_STARTED:
    if ((c = find_ctx(ts, m->cid)) && c->side == SIDE_CALLER && !c->started && !c->done) {
      c->started = 1;
      c->first = m;
      ctx_notify(c);
      return;
    }
    why = !c                       ? "no such dialog (its caller left)"
          : c->side != SIDE_CALLER ? "a Started for a dialog this actor serves"
          : c->done                ? "the dialog has ended"
                                   : "a second Started";
    level = c && !c->done ? TR_LOG_WARN : TR_LOG_DEBUG;
    break;
  case TR_BODY_RETURN:
  case TR_BODY_ERROR:
    if ((c = find_ctx(ts, m->cid)) && c->side == SIDE_CALLER && !c->done) {
      ctx_finish(c, m);
      return;
    }
    why = !c        ? "a late reply to an abandoned call"
          : c->done ? "the dialog has ended already"
                    : "a reply to a dialog this actor serves";
    level = c && !c->done ? TR_LOG_WARN : TR_LOG_DEBUG;
    break;
  case TR_BODY_CANCEL_ACK:
    if ((c = find_ctx(ts, m->cid)) && c->side == SIDE_CALLER && c->kind == KIND_ACTOR_CANCEL) {
      c->done = 1;
      ctx_notify(c);
    } else {
      /* PROTOCOL.md 8.1: the ack of a dialog cancel follows its final
       * message, which ended the dialog. */
      why = "the dialog it acknowledges has ended (its final message came first)";
    }
    break;
  default:
    why = "not a body the dialog engine handles";
    level = TR_LOG_WARN;
    break;
  }
  if (why)
    dropped(w, a, m, level, why);
  tr__msg_dispose(w, m);
}

void tr__rpc_bounce(tr_actor_t *dead, tr_msg_t *m) {
  if (!m->from)
    return;
  if (m->body == TR_BODY_START)
    send_error(dead, m->from, m->cid, -TR_ECLOSED, NULL, NULL);
  else if (m->body == TR_BODY_CANCEL && m->x_ && m->x_->u.cancel.whole_actor)
    (void)send_cancel(NULL, m->from, TR_BODY_CANCEL_ACK, m->cid, 1, 1); /* gone: done */
}

void tr__rpc_actor_exit(tr_actor_t *a) {
  tr_tasks_t *ts = a->tasks;
  while (ts->cancel_acks) {
    tr_cancel_ack_t *k = ts->cancel_acks;
    ts->cancel_acks = k->next;
    (void)send_cancel(NULL, k->to, TR_BODY_CANCEL_ACK, k->cid, 1, 1);
    tr_actor_release(k->to);
    free(k);
  }
  tr_actor_release(ts->cancel_by);
  ts->cancel_by = NULL;
}

void tr__rpc_actor_free(tr_tasks_t *ts) {
  while (ts->early_starts) { /* never served: tell the callers */
    tr_msg_t *m = ts->early_starts;
    ts->early_starts = m->next_;
    if (m->from)
      send_error(NULL, m->from, m->cid, -TR_ECLOSED, NULL, NULL);
    tr_msg_free(m);
  }
  for (size_t i = 0; i < ts->n_enable; i++)
    free(ts->enable[i]);
  free(ts->enable);
  ts->enable = NULL;
  ts->n_enable = 0;
  TR_ASSERT(ts->dialogs == NULL && ts->cancel_acks == NULL);
}

/* ---- caller side: calls ---------------------------------------------------- */

/*
 * Starts a dialog of `kind` with the portal's actor: checks the kind
 * against the local table, sends Start, and links c (initialised here).
 * Returns 0 or a code (nothing linked).
 */
static int call_start(tr_portal_t *p, const char *qualified, const tr_buf_t *args, int kind,
                      const tr_ctx_opts_t *opts, tr_ctx_t *c, tr_task_t **tout) {
  if (!p || !qualified)
    return TR_ERROR(-TR_EINVAL, "a portal call needs a portal and a function name");
  tr_actor_t *self = tr_self();
  tr_task_t *t = self ? tr__task_of_actor_current(self) : NULL;
  if (!t)
    return TR__EPERM_NOTASK();
  if (p->actor == self)
    return TR_ERROR(-TR_EINVAL, "an actor cannot call itself through a portal");
  /* trio's rule: a call in a cancelled scope fails before doing anything,
   * so no Start is sent and the remote function never runs. */
  if (tr__task_cancelled(t))
    return tr__task_observe_cancel(t, "%s was not called: the calling task is cancelled",
                                   qualified);
  char ns[256];
  const char *func = split_name(qualified, ns, sizeof ns);
  if (!func)
    return TR_ERROR(-TR_EINVAL, "'%s' is not a qualified name ns.func", qualified);
  /* The kind is checked here, before anything is sent: every actor runs
   * this executable, so the local table is the callee's (PROTOCOL.md). */
  const tr__rpc_entry_t *e = NULL;
  static const char *const portal_call[] = {"", "run", "open_stream_from", "open_context"};
  if (tr__rpc_lookup(ns, func, &e) == 0 && e->kind != kind)
    return TR_ERROR(-TR_EFUNCKIND, "%s is a %s function; use tr_portal_%s", qualified,
                    tr__rpc_kind_name(e->kind), portal_call[e->kind]);
  tr_error_clear();
  ctx_init(c, self, SIDE_CALLER, kind, new_cid(), opts);
  c->entry = e;
  c->task = t;
  tr_msg_t *m;
  int rc = tr_msg_new(&m);
  if (rc)
    return TR__ENOMEM();
  m->body = TR_BODY_START;
  m->cid = c->cid;
  m->u64 = (uint64_t)(opts ? opts->window : 0) | ((uint64_t)c->overrun_error << 32);
  struct tr_envx *x = tr__envx_get(m);
  if (!x || !(x->u.start.ns = strdup(ns)) || !(x->u.start.func = strdup(func))) {
    tr_msg_free(m);
    return TR__ENOMEM();
  }
  m->payload = tr_buf_ref((tr_buf_t *)args);
  m->from = tr_actor_dup(self);
  c->peer = tr_actor_dup(p->actor);
  ctx_link(self->tasks, c);
  rc = tr__send(p->actor, m);
  if (rc) {
    ctx_unlink(self->tasks, c);
    tr_actor_release(c->peer);
    c->peer = NULL;
    return TR_ERROR(rc, "actor %s has exited", tr_actor_name(p->actor));
  }
  *tout = t;
  return 0;
}

/* Sends Cancel once for a caller-side dialog. */
static void ctx_send_cancel(tr_ctx_t *c) {
  if (c->cancel_called || c->done)
    return;
  c->cancel_called = 1;
  (void)send_cancel(c->actor, c->peer, TR_BODY_CANCEL, c->cid, 0, 0);
}

/* Leaving a dialog that is not over: cancel it and wait (shielded,
 * bounded) for its final message, dropping stream values. */
static void ctx_cancel_and_drain(tr_ctx_t *c, tr_task_t *t) {
  ctx_send_cancel(c);
  int64_t deadline = tr_now() + TR_CTX_CANCEL_TIMEOUT_NS;
  while (!c->done && tr_now() < deadline) {
    ctx_discard_rx(c);
    ctx_wait_until(c, t, deadline, "a dialog's cancel (waiting for the callee's answer)");
  }
  ctx_discard_rx(c);
}

/* Waits (cancellably) for a caller-side condition: StartAck, Started or the
 * final message.  Returns 0 when `*flag` is set or the dialog is done. */
static int wait_for(tr_ctx_t *c, tr_task_t *t, const uint8_t *flag, const char *what) {
  /* No need to watch the peer's exit: a callee answers every Start it
   * accepted before it exits, and a Start that reaches an exited actor is
   * answered by tr__rpc_bounce. */
  while (!*flag && !c->done && !c->kind_wrong) {
    int rc = ctx_wait(c, t, what);
    if (rc)
      return rc;
  }
  return 0;
}

int tr_portal_run(tr_portal_t *p, const char *qualified, const tr_buf_t *args, tr_buf_t **result) {
  if (result)
    *result = NULL;
  tr_ctx_t c;
  tr_task_t *t;
  int rc = call_start(p, qualified, args, TR_FUNC_FN, NULL, &c, &t);
  if (rc)
    return rc;
  rc = wait_for(&c, t, &c.done, "tr_portal_run");
  if (rc == 0 && c.kind_wrong && !c.done) {
    /* A peer built from other code answered with another kind
     * (PROTOCOL.md section 5): end the dialog, fail the call. */
    ctx_cancel_and_drain(&c, t);
    ctx_unlink(c.actor->tasks, &c);
    tr_msg_free(c.final);
    tr_actor_release(c.peer);
    return TR_ERROR(-TR_EFUNCKIND, "%s: the callee's function is not a fn function", qualified);
  }
  if (rc) {
    /* Cancelled: tell the callee; its late reply finds no dialog. */
    ctx_send_cancel(&c);
    ctx_unlink(c.actor->tasks, &c);
    tr_actor_release(c.peer);
    return rc;
  }
  ctx_unlink(c.actor->tasks, &c);
  if (c.final && c.final->body == TR_BODY_RETURN) {
    if (result) {
      *result = c.final->payload;
      c.final->payload = NULL;
    }
    rc = 0;
  } else {
    rc = ctx_put_outcome(&c);
    tr__error_free(c.out_err);
  }
  tr_msg_free(c.final);
  tr_actor_release(c.peer);
  return rc;
}

/* Opens a STREAM or CONTEXT dialog and waits for StartAck (and for a
 * context, Started).  On failure returns the code with nothing left. */
static int open_dialog(tr_portal_t *p, const char *qualified, const tr_buf_t *args, int kind,
                       const tr_ctx_opts_t *opts, tr_ctx_t **out) {
  tr_ctx_t *c = calloc(1, sizeof(*c));
  if (!c)
    return TR__ENOMEM();
  tr_task_t *t;
  int rc = call_start(p, qualified, args, kind, opts, c, &t);
  if (rc) {
    free(c);
    return rc;
  }
  /* StartAck first (its kind is checked before anything else is waited
   * for), then, for a context, Started. */
  const uint8_t *flag = kind == TR_FUNC_CONTEXT ? &c->started : &c->acked;
  const char *what =
      kind == TR_FUNC_CONTEXT ? "tr_portal_open_context" : "tr_portal_open_stream_from";
  rc = wait_for(c, t, &c->acked, what);
  if (rc == 0 && c->acked && !c->kind_wrong && kind == TR_FUNC_CONTEXT)
    rc = wait_for(c, t, flag, what);
  if (rc == 0 && c->acked && c->kind_wrong) {
    ctx_cancel_and_drain(c, t);
    rc = TR_ERROR(-TR_EFUNCKIND, "%s: the callee's function is not a %s function", qualified,
                  tr__rpc_kind_name(kind));
  } else if (rc == 0 && !*flag) { /* refused, or failed before started */
    rc = ctx_put_outcome(c);
    if (rc == 0) /* a context function that returned without started */
      rc = TR_ERROR(-TR_EPROTO, "%s returned before calling tr_ctx_started", qualified);
  } else if (rc) {
    ctx_cancel_and_drain(c, t);
  }
  if (rc) {
    ctx_unlink(c->actor->tasks, c);
    ctx_free(c);
    return rc;
  }
  *out = c;
  return 0;
}

int tr_portal_open_stream_from(tr_portal_t *p, const char *qualified, const tr_buf_t *args,
                               const tr_ctx_opts_t *opts, tr_stream_t **out) {
  if (!out)
    return TR__EINVAL_NULL();
  *out = NULL;
  tr_ctx_t *c;
  int rc = open_dialog(p, qualified, args, TR_FUNC_STREAM, opts, &c);
  if (rc)
    return rc;
  c->opened = 1;
  *out = &c->stream;
  return 0;
}

int tr_portal_open_context(tr_portal_t *p, const char *qualified, const tr_buf_t *args,
                           const tr_ctx_opts_t *opts, tr_ctx_t **ctx, tr_buf_t **first) {
  if (first)
    *first = NULL;
  if (!ctx)
    return TR__EINVAL_NULL();
  *ctx = NULL;
  tr_ctx_t *c;
  int rc = open_dialog(p, qualified, args, TR_FUNC_CONTEXT, opts, &c);
  if (rc)
    return rc;
  rc = tr_scope_open(&c->scope, TR_NO_DEADLINE, 0);
  if (rc) {
    ctx_cancel_and_drain(c, c->task);
    ctx_unlink(c->actor->tasks, c);
    ctx_free(c);
    return rc;
  }
  c->has_scope = 1;
  if (c->done) { /* the callee failed right after started */
    ctx_outcome(c);
    if (c->out_rc)
      tr__task_cancel_scope_local(c->task, &c->scope);
  }
  if (first && c->first) {
    *first = c->first->payload;
    c->first->payload = NULL;
  }
  *ctx = c;
  return 0;
}

static void bcast_free(tr_bcast_t *bc) {
  if (!bc)
    return;
  for (uint64_t i = bc->head > bc->cap ? bc->head - bc->cap : 0; i < bc->head; i++)
    tr_buf_release(bc->ring[i % bc->cap]);
  tr__error_free(bc->end_err);
  free(bc->ring);
  free(bc);
}

/* ---- context operations ----------------------------------------------------- */

int tr_ctx_started(tr_ctx_t *c, const tr_buf_t *value) {
  if (!c)
    return TR__EINVAL_NULL();
  if (c->side != SIDE_CALLEE || c->kind != TR_FUNC_CONTEXT)
    return TR_ERROR(-TR_EPERM, "tr_ctx_started is for the callee of a context");
  if (c->started)
    return TR_ERROR(-TR_EBUSY, "tr_ctx_started called twice");
  c->started = 1;
  int rc = send_body(c->peer, TR_BODY_STARTED, c->cid, 0, tr_buf_ref((tr_buf_t *)value));
  return rc ? TR_ERROR(rc, "tr_ctx_started: the caller %s is gone", tr_actor_name(c->peer)) : 0;
}

int tr_ctx_open_stream(tr_ctx_t *c, tr_stream_t **out) {
  if (out)
    *out = NULL;
  if (!c || !out)
    return TR__EINVAL_NULL();
  if (c->kind == TR_FUNC_FN || (c->kind == TR_FUNC_STREAM && c->side == SIDE_CALLER))
    return TR_ERROR(-TR_EPERM, "a %s dialog has no stream to open here",
                    tr__rpc_kind_name(c->kind));
  if (c->kind == TR_FUNC_CONTEXT && !c->started)
    return TR_ERROR(-TR_EPERM, "tr_ctx_open_stream before the context was started");
  int rc = ctx_refuse_closing(c);
  if (rc)
    return rc;
  if (c->side == SIDE_CALLER && c->cancel_called)
    return ctx_cancelled_here(c, "tr_ctx_open_stream");
  if (c->opened)
    return TR_ERROR(-TR_EBUSY, "the context's stream was already opened (streams are one-shot)");
  c->opened = 1;
  *out = &c->stream;
  return 0;
}

int tr_ctx_cancel(tr_ctx_t *c) {
  if (!c)
    return TR__EINVAL_NULL();
  if (c->side == SIDE_CALLER) {
    ctx_send_cancel(c);
    return 0;
  }
  c->self_cancel = 1;
  if (c->task_scope)
    tr__task_cancel_scope_local(c->task, c->task_scope);
  return 0;
}

int tr_ctx_cancel_called(const tr_ctx_t *c) {
  if (!c)
    return 0;
  if (c->side == SIDE_CALLER)
    return c->cancel_called;
  const char *why;
  return cancel_cause((tr_ctx_t *)c, c->actor->tasks, &why) != NULL;
}

int tr_ctx_cancel_acked(const tr_ctx_t *c) {
  if (!c || c->side != SIDE_CALLER || !c->cancel_called || !c->done || !c->final ||
      c->final->body != TR_BODY_ERROR || !c->final->x_)
    return 0;
  return c->final->x_->u.error.code == TR_ECTXCANCELED && is_absorbed(c, c->final->x_);
}

int tr_ctx_cancel_wait(tr_ctx_t *c, int64_t timeout_ns) {
  if (!c)
    return TR_ERROR(-TR_EINVAL, "tr_ctx_cancel_wait: no context");
  if (c->side != SIDE_CALLER || c->kind != TR_FUNC_CONTEXT)
    return TR_ERROR(-TR_EPERM, "tr_ctx_cancel_wait is for the caller of a context");
  tr_task_t *t = current_task();
  if (!t || t->actor != c->actor)
    return TR_ERROR(-TR_EPERM, "tr_ctx_cancel_wait runs in a task of the context's actor");
  int rc = ctx_refuse_closing(c);
  if (rc)
    return rc;
  ctx_send_cancel(c);
  int64_t deadline = timeout_ns < 0 ? TR_NO_DEADLINE : tr_now() + timeout_ns;
  /* Shielded and bounded, as tractor's Context.cancel(timeout): the wait
   * is part of leaving, and a cancelled caller still leaves in time.  Values
   * still arriving are dropped: the stream ended with the cancel. */
  ctx_enter(c);
  while (!c->done && tr_now() < deadline) {
    ctx_discard_rx(c);
    ctx_wait_until(c, t, deadline, "tr_ctx_cancel_wait");
  }
  ctx_leave(c);
  ctx_discard_rx(c);
  if (!c->done)
    return TR_ERROR(-TR_ETIMEDOUT, "actor %s did not answer the context's cancel within %lld ns",
                    tr_actor_name(c->peer), (long long)timeout_ns);
  tr_error_clear();
  return 0;
}

const char *tr_ctx_peer(const tr_ctx_t *c) { return c ? tr_actor_name(c->peer) : NULL; }

int tr_ctx_result(tr_ctx_t *c, tr_buf_t **result) {
  if (result)
    *result = NULL;
  if (!c)
    return TR__EINVAL_NULL();
  if (c->side != SIDE_CALLER)
    return TR_ERROR(-TR_EPERM, "tr_ctx_result is for the caller of a context");
  tr_task_t *t = current_task();
  if (!t)
    return TR_ERROR(-TR_EPERM, "tr_ctx_result runs in a task");
  int rc = c->task == t ? 0 : ctx_refuse_closing(c);
  if (rc)
    return rc;
  ctx_enter(c);
  while (!c->done && rc == 0) {
    ctx_discard_rx(c); /* tractor's drain_to_final_msg */
    rc = wait_for(c, t, &c->done, "tr_ctx_result");
  }
  ctx_leave(c);
  if (rc)
    return rc;
  ctx_discard_rx(c);
  rc = ctx_put_outcome(c);
  if (rc == 0 && result && c->final && c->final->body == TR_BODY_RETURN)
    *result = tr_buf_ref(c->final->payload);
  return rc;
}

/* Detaches the context's scope from the task's chain, wherever it is. */
static void ctx_close_scope(tr_ctx_t *c) {
  if (c->has_scope) {
    tr__scope_detach(&c->scope);
    c->has_scope = 0;
  }
}

int tr_ctx_close(tr_ctx_t *c, tr_buf_t **result) {
  if (result)
    *result = NULL;
  if (!c)
    return TR__EINVAL_NULL();
  if (c->side != SIDE_CALLER || c->kind != TR_FUNC_CONTEXT)
    return TR_ERROR(-TR_EPERM, "tr_ctx_close is for the caller of a context");
  tr_task_t *t = current_task();
  if (!t || t != c->task)
    return TR_ERROR(-TR_EPERM, "tr_ctx_close must run in the task that opened the context");
  if (c->users || c->waiters || (c->stream.bc && c->stream.bc->subs))
    return TR_ERROR(-TR_EBUSY,
                    "the context with actor %s is in use by another task (a receive, "
                    "send, result or subscriber); close it once they are done",
                    tr_actor_name(c->peer));
  /* From here on other tasks are refused (ctx_refuse_closing): the waits
   * below may let them run, and the context is freed at the end. */
  c->closing = 1;
  if (c->opened && !c->tx_stop && !c->done) {
    c->tx_stop = 1;
    (void)send_body(c->peer, TR_BODY_STOP, c->cid, 0, NULL);
  }
  int rc = 0;
  if (!c->done && !tr__task_cancelled(t))
    rc = tr_ctx_result(c, NULL);
  if (!c->done) {
    /* Leaving because this task is cancelled: cancel the callee and give
     * it a bounded time to answer (PROTOCOL.md 6.3). */
    ctx_cancel_and_drain(c, t);
    if (rc != -TR_ECANCELED) /* else tr_ctx_result observed it already */
      rc = tr__task_observe_cancel(t,
                                   "left the context with actor %s cancelled: the task is "
                                   "cancelled (so is the callee)",
                                   tr_actor_name(c->peer));
    if (c->done) {
      ctx_outcome(c); /* a real failure beats the local cancellation */
      if (c->out_rc != 0 && c->out_rc != -TR_ECTXCANCELED)
        rc = ctx_put_outcome(c);
    }
  } else {
    ctx_outcome(c);
    if (c->out_rc != 0) {
      rc = ctx_put_outcome(c); /* the remote error, never -TR_ECANCELED */
    } else if (tr__task_cancelled(t)) {
      /* Cancelled from outside: the context's own scope is only ever
       * cancelled by a remote error, handled above. */
      rc = tr__task_observe_cancel(t, "left the context with actor %s: the task is cancelled",
                                   tr_actor_name(c->peer));
    } else {
      rc = ctx_put_outcome(c);
      if (result && c->final && c->final->body == TR_BODY_RETURN)
        *result = tr_buf_ref(c->final->payload);
    }
  }
  ctx_close_scope(c);
  bcast_free(c->stream.bc);
  ctx_unlink(c->actor->tasks, c);
  ctx_free(c);
  return rc;
}

/* ---- streams ---------------------------------------------------------------- */

int tr_stream_send(tr_stream_t *s, const tr_buf_t *msg) {
  if (!s)
    return TR__EINVAL_NULL();
  if (s->is_sub)
    return TR_ERROR(-TR_EPERM, "a subscriber cannot send");
  tr_ctx_t *c = s->ctx;
  tr_task_t *t = current_task();
  if (!t)
    return TR__EPERM_NOTASK();
  if (c->tx_stop)
    return TR_ERROR(-TR_ECLOSED, "the stream was closed on this side");
  if (c->side == SIDE_CALLER && c->kind == TR_FUNC_STREAM)
    return TR_ERROR(-TR_EPERM, "a stream from open_stream_from is receive-only");
  if (c->side == SIDE_CALLER) {
    int rc = ctx_refuse_closing(c);
    if (rc)
      return rc;
    if (c->cancel_called)
      return ctx_cancelled_here(c, "tr_stream_send");
  }
  if (tr__task_cancelled(t))
    return tr__task_observe_cancel(t, "%s", "");
  int rc = 0;
  ctx_enter(c);
  for (;;) {
    if (c->done) {
      if (c->side == SIDE_CALLER) {
        rc = ctx_put_outcome(c);
        if (rc == 0)
          rc = c->cancel_called
                   ? TR_ERROR(-TR_ECTXCANCELED, "tr_stream_send: the context was cancelled")
                   : TR_ERROR(-TR_ECLOSED, "tr_stream_send: actor %s has returned",
                              tr_actor_name(c->peer));
      } else {
        rc = TR_ERROR(-TR_ECLOSED, "tr_stream_send: the dialog has ended");
      }
      break;
    }
    if (c->side == SIDE_CALLEE && c->cancel_req && t != c->task) {
      rc = TR_ERROR(-TR_ECLOSED, "the caller has left the dialog");
      break;
    }
    if (c->credit > 0)
      break;
    if (c->overrun_error) {
      rc = TR_ERROR(-TR_EOVERRUN,
                    "StreamOverrun: actor %s has not consumed the window of %u messages",
                    tr_actor_name(c->peer), c->window);
      break;
    }
    if ((rc = ctx_wait(c, t, "tr_stream_send (out of credit: the receiver is behind)")) != 0)
      break;
  }
  ctx_leave(c);
  if (rc)
    return rc;
  c->credit--;
  rc = send_body(c->peer, TR_BODY_YIELD, c->cid, 0, tr_buf_ref((tr_buf_t *)msg));
  return rc ? TR_ERROR(-TR_ECLOSED, "actor %s has exited", tr_actor_name(c->peer)) : 0;
}

/* Takes the next received value of the context, returning credit as the
 * application consumes (half a window at a time). */
static tr_buf_t *rx_pop(tr_ctx_t *c) {
  tr_msg_t *m = c->rx_head;
  c->rx_head = m->next_;
  if (!c->rx_head)
    c->rx_tail = NULL;
  c->rx_len--;
  tr_buf_t *v = m->payload;
  m->payload = NULL;
  tr_msg_free(m);
  if (++c->unacked >= (c->window + 1) / 2 && !c->done) {
    (void)send_body(c->peer, TR_BODY_CREDIT, c->cid, c->unacked, NULL);
    c->unacked = 0;
  }
  return v;
}

/* Receives from the context itself (not through a broadcast). */
static int ctx_recv(tr_ctx_t *c, tr_task_t *t, tr_buf_t **msg) {
  int rc = 0;
  ctx_enter(c);
  for (;;) {
    if (c->side == SIDE_CALLER && c->kind == TR_FUNC_CONTEXT && c->cancel_called) {
      rc = ctx_cancelled_here(c, "tr_stream_recv");
      break;
    }
    /* A cancellation point even when a value is waiting (trio's
     * receive), unless the dialog has ended: its outcome (a remote error
     * that cancelled the context's scope) is what the caller gets. */
    if (!c->done && tr__task_cancelled(t)) {
      rc = tr__task_observe_cancel(t, "%s", "");
      break;
    }
    if (c->rx_head) {
      tr_buf_t *v = rx_pop(c);
      rc = c->entry ? tr__rpc_check_payload(c->entry, TR__RPC_YIELD, v) : 0;
      if (rc == 0) {
        *msg = v;
        break;
      }
      tr_buf_release(v);
      if (c->side == SIDE_CALLER) {
        /* A value of the wrong type ends the dialog: the caller fails
         * with MsgTypeError and cancels the callee (PROTOCOL.md 6.2). */
        ctx_send_cancel(c);
        c->done = c->has_out = 1;
        c->out_rc = rc;
        tr__error_free(c->out_err);
        c->out_err = tr__error_copy(tr_error_last());
        ctx_discard_rx(c);
      }
      break;
    }
    if (c->done && c->side == SIDE_CALLER) {
      /* A failure (remote, or found here) is returned even after a Stop. */
      rc = ctx_put_outcome(c);
      if (rc == 0)
        rc = c->cancel_called && !c->rx_stop && c->final && c->final->body == TR_BODY_ERROR
                 ? TR_ERROR(-TR_ECTXCANCELED, "tr_stream_recv: the dialog was cancelled")
                 : tr__error_quick(-TR_EEOF);
      break;
    }
    /* The end of every stream: the shared EndOfChannel error, no
     * allocation. */
    if (c->rx_stop) {
      rc = tr__error_quick(-TR_EEOF);
      break;
    }
    if (c->done) {
      rc = TR_ERROR(-TR_ECLOSED, "tr_stream_recv: the dialog has ended");
      break;
    }
    if (c->side == SIDE_CALLEE && c->cancel_req && t != c->task) {
      rc = TR_ERROR(-TR_ECLOSED, "the caller has left the dialog");
      break;
    }
    if ((rc = ctx_wait(c, t, "tr_stream_recv")) != 0)
      break;
  }
  ctx_leave(c);
  return rc;
}

/* Broadcast receive: read at s->seq, pulling from the source when this
 * receiver is the furthest ahead. */
static int bcast_recv(tr_stream_t *s, tr_task_t *t, tr_buf_t **msg) {
  tr_bcast_t *bc = s->bc;
  tr_ctx_t *c = bc->src->ctx;
  for (;;) {
    if (s->seq < bc->head) {
      uint64_t oldest = bc->head > bc->cap ? bc->head - bc->cap : 0;
      if (s->seq < oldest) {
        uint64_t missed = oldest - s->seq;
        s->seq = oldest;
        return TR_ERROR(-TR_ELAGGED, "subscriber lagged: %llu values skipped",
                        (unsigned long long)missed);
      }
      *msg = tr_buf_ref(bc->ring[s->seq % bc->cap]);
      s->seq++;
      return 0;
    }
    if (bc->ended) {
      if (bc->end_err)
        tr__error_put(tr__error_copy(bc->end_err));
      return bc->end_rc;
    }
    if (bc->pulling) {
      ctx_enter(c);
      s->busy = 1;
      int rc = ctx_wait(c, t, "tr_stream_recv (a subscription)");
      s->busy = 0;
      ctx_leave(c);
      if (rc)
        return rc;
      continue;
    }
    bc->pulling = 1;
    s->busy = 1;
    tr_buf_t *v = NULL;
    int rc = ctx_recv(c, t, &v);
    s->busy = 0;
    bc->pulling = 0;
    ctx_notify(c); /* the others: a new value, or the end, or a free pull */
    if (rc == -TR_ECANCELED)
      return rc; /* this receiver's cancellation, not the stream's end */
    if (rc) {
      bc->ended = 1;
      bc->end_rc = rc;
      bc->end_err = tr__error_copy(tr_error_last());
      continue;
    }
    if (bc->head >= bc->cap)
      tr_buf_release(bc->ring[bc->head % bc->cap]);
    bc->ring[bc->head % bc->cap] = v;
    bc->head++;
  }
}

int tr_stream_recv(tr_stream_t *s, tr_buf_t **msg) {
  if (msg)
    *msg = NULL;
  if (!s || !msg)
    return TR__EINVAL_NULL();
  tr_task_t *t = current_task();
  if (!t)
    return TR_ERROR(-TR_EPERM, "tr_stream_recv runs in a task");
  int rc = s->ctx->side == SIDE_CALLER ? ctx_refuse_closing(s->ctx) : 0;
  if (rc)
    return rc;
  if (s->bc)
    return bcast_recv(s, t, msg);
  return ctx_recv(s->ctx, t, msg);
}

int tr_stream_subscribe(tr_stream_t *s, tr_stream_t **out) {
  if (out)
    *out = NULL;
  if (!s || !out)
    return TR__EINVAL_NULL();
  if (s->is_sub)
    s = s->bc->src;
  int rc = s->ctx->side == SIDE_CALLER ? ctx_refuse_closing(s->ctx) : 0;
  if (rc)
    return rc;
  tr_bcast_t *bc = s->bc;
  if (!bc) {
    bc = calloc(1, sizeof(*bc));
    if (!bc)
      return TR__ENOMEM();
    bc->cap = s->ctx->window;
    bc->ring = calloc(bc->cap, sizeof(tr_buf_t *));
    if (!bc->ring) {
      free(bc);
      return TR__ENOMEM();
    }
    bc->src = s;
    s->bc = bc;
  }
  tr_stream_t *sub = calloc(1, sizeof(*sub));
  if (!sub)
    return TR__ENOMEM();
  sub->ctx = s->ctx;
  sub->bc = bc;
  sub->is_sub = 1;
  sub->seq = bc->head; /* values from now on (tractor) */
  sub->bnext = bc->subs;
  bc->subs = sub;
  *out = sub;
  return 0;
}

int tr_stream_close(tr_stream_t *s) {
  if (!s)
    return TR__EINVAL_NULL();
  tr_ctx_t *c = s->ctx;
  if (s->is_sub) {
    if (s->busy)
      return TR_ERROR(-TR_EBUSY, "a task is receiving on this subscriber");
    for (tr_stream_t **pp = &s->bc->subs; *pp; pp = &(*pp)->bnext)
      if (*pp == s) {
        *pp = s->bnext;
        break;
      }
    free(s);
    return 0;
  }
  tr_task_t *t = current_task();
  if (!t)
    return TR__EPERM_NOTASK();
  if (c->side == SIDE_CALLER && c->kind == TR_FUNC_STREAM) {
    /* Leaving open_stream_from: the dialog ends here. */
    if (c->users || c->waiters || (s->bc && s->bc->subs))
      return TR_ERROR(-TR_EBUSY, "the stream is in use by another task");
    if (!c->done)
      ctx_cancel_and_drain(c, t);
    int rc = 0;
    if (c->done) {
      rc = ctx_put_outcome(c);
      if (rc == 0)
        tr_error_clear();
    }
    bcast_free(s->bc);
    ctx_unlink(c->actor->tasks, c);
    ctx_free(c);
    return rc;
  }
  if (!c->tx_stop && !c->done) {
    c->tx_stop = 1;
    (void)send_body(c->peer, TR_BODY_STOP, c->cid, 0, NULL);
  }
  c->tx_stop = 1;
  return 0;
}

/* ---- daemons ----------------------------------------------------------------- */

typedef struct serve_spec {
  char **enable;
  size_t n_enable;
} serve_spec_t;

static int serve_main(void *arg) {
  serve_spec_t *spec = arg;
  tr_actor_t *self = tr_self();
  tr_tasks_t *ts = self->tasks;
  ts->enable = spec->enable;
  ts->n_enable = spec->n_enable;
  free(spec);
  tr_nursery_t *n;
  int rc = tr_nursery_open(&n);
  if (rc)
    return rc;
  ts->service = n;
  run_early_starts(tr__worker_self(), self);
  /* Serve until cancelled: requests run as tasks in the service nursery. */
  while (tr_sleep(3600LL * 1000 * 1000 * 1000) == 0)
    ;
  ts->service = NULL; /* refuse new calls; the ones running are cancelled */
  ts->serve_done = 1;
  tr_nursery_cancel(n);
  tr_nursery_close(n);
  return 0; /* a cancelled daemon ended normally */
}

int tr_start_actor(tr_actor_nursery_t *an, const char *name, const char *const *enable,
                   size_t n_enable, tr_portal_t **out) {
  if (!out)
    return TR__EINVAL_NULL();
  *out = NULL;
  tr_portal_t *p = calloc(1, sizeof(*p));
  serve_spec_t *spec = calloc(1, sizeof(*spec));
  char **copy = n_enable ? calloc(n_enable, sizeof(char *)) : NULL;
  if (!p || !spec || (n_enable && !copy))
    goto oom;
  for (size_t i = 0; i < n_enable; i++)
    if (!(copy[i] = strdup(enable[i])))
      goto oom;
  spec->enable = copy;
  spec->n_enable = n_enable;
  tr_an_child_t *c;
  int rc = tr__actor_nursery_spawn_rec(an, name, serve_main, spec, 1, &p->actor, &c);
  if (rc == 0) {
    p->child = c; /* for tr_portal_cancel_actor's wait */
    c->portal = p;
  }
  if (rc) {
    for (size_t i = 0; i < n_enable; i++)
      free(copy[i]);
    free(copy);
    free(spec);
    free(p);
    return rc;
  }
  *out = p;
  return 0;
oom:
  for (size_t i = 0; copy && i < n_enable; i++)
    free(copy[i]);
  free(copy);
  free(spec);
  free(p);
  return TR__ENOMEM();
}

/* ---- run_in_actor ---------------------------------------------------------- */

typedef struct run_spec {
  const tr__rpc_entry_t *entry;
  tr_buf_t *args; /* a reference */
} run_spec_t;

/* The child's main task: one call, its result reported with the child's
 * exit (tasks.c hands main_value to the nursery's record). */
static int run_main(void *arg) {
  run_spec_t *spec = arg;
  tr_buf_t *value = NULL;
  int rc = tr__rpc_check_payload(spec->entry, TR__RPC_ARGS, spec->args);
  if (rc == 0)
    rc = spec->entry->fn(NULL, spec->args, &value);
  tr_buf_release(spec->args);
  free(spec);
  if (rc == 0)
    tr_self()->tasks->main_value = value;
  else
    tr_buf_release(value);
  return rc;
}

int tr_run_in_actor(tr_actor_nursery_t *an, const char *name, const char *qualified,
                    const tr_buf_t *args, tr_portal_t **out) {
  if (!out)
    return TR__EINVAL_NULL();
  *out = NULL;
  if (!an || !qualified)
    return TR__EINVAL_NULL();
  const tr__rpc_entry_t *e;
  /* The child enables exactly the function's namespace (tractor's
   * run_in_actor enables the function's module). */
  int rc = tr__rpc_resolve(qualified, NULL, 0, TR_FUNC_FN, &e);
  if (rc == -TR_ENOTEXPOSED) {
    tr_error_clear();
    const char *dot = strrchr(qualified, '.');
    char ns[256];
    size_t nlen = (size_t)(dot - qualified);
    if (nlen >= sizeof ns)
      return TR_ERROR(-TR_EINVAL, "namespace of '%s' is longer than 255 bytes", qualified);
    memcpy(ns, qualified, nlen);
    ns[nlen] = '\0';
    const char *const enable[] = {ns};
    rc = tr__rpc_resolve(qualified, enable, 1, TR_FUNC_FN, &e);
  }
  if (rc)
    return rc;
  tr_portal_t *p = calloc(1, sizeof(*p));
  run_spec_t *spec = calloc(1, sizeof(*spec));
  if (!p || !spec) {
    free(p);
    free(spec);
    return TR__ENOMEM();
  }
  spec->entry = e;
  spec->args = tr_buf_ref((tr_buf_t *)args);
  tr_an_child_t *c;
  rc = tr__actor_nursery_spawn_rec(an, name, run_main, spec, 0, &p->actor, &c);
  if (rc) {
    tr_buf_release(spec->args);
    free(spec);
    free(p);
    return rc;
  }
  tr__actor_set_kind(p->actor, TR_AK_RUN_IN_ACTOR);
  p->child = c;
  c->portal = p;
  *out = p;
  return 0;
}

void tr__portal_take_result(tr_portal_t *p, tr_an_child_t *c) {
  p->has_result = 1;
  p->result_rc = c->result;
  p->value = c->value;
  c->value = NULL;
  p->error = c->result_error;
  c->result_error = NULL;
  p->child = NULL;
}

int tr_portal_result(tr_portal_t *p, tr_buf_t **result) {
  if (result)
    *result = NULL;
  if (!p)
    return TR__EINVAL_NULL();
  tr_an_child_t *c = p->child;
  if (!c && !p->has_result)
    return TR_ERROR(-TR_EINVAL, "not a tr_run_in_actor portal");
  if (c) {
    tr_actor_t *self = tr_self();
    tr_task_t *t = self ? tr__task_of_actor_current(self) : NULL;
    if (!t)
      return TR__EPERM_NOTASK();
    while (!c->exited) {
      if (tr__task_cancelled(t))
        return tr__task_observe_cancel(t, "%s", "");
      c->waiter = t;
      t->blocked_on = "tr_portal_result";
      tr__task_block(t, 1);
      c->waiter = NULL;
    }
  }
  int rc = c ? c->result : p->result_rc;
  tr_buf_t *value = c ? c->value : p->value;
  const tr_error_t *err = c ? c->result_error : p->error;
  if (rc == 0) {
    if (result)
      *result = tr_buf_ref(value);
    return 0;
  }
  if (rc == -TR_ECANCELED || !err)
    return TR_ERROR(rc, "actor %s ended without a result: %s", tr_actor_name(p->actor),
                    rc == -TR_ECANCELED ? "it was cancelled" : tr_strerror(rc));
  /* The same error on every call, boxed by the nursery as it saw the
   * child exit (the shape tr_actor_nursery_close returns): a fresh copy
   * each time. */
  tr__error_put(tr__error_copy(err));
  return tr_error_code(err);
}

int tr_portal_cancel_actor(tr_portal_t *p, int64_t timeout_ns, int *acked) {
  if (acked)
    *acked = 0;
  if (!p)
    return TR__EINVAL_NULL();
  if (tr_actor_exited(p->actor)) {
    if (acked)
      *acked = 1;
    return 0;
  }
  tr_actor_t *self = tr_self();
  tr_task_t *t = current_task();
  if (!t)
    return TR__EPERM_NOTASK();
  if (p->actor == self)
    return TR_ERROR(-TR_EINVAL, "use tr_actor_cancel_soon to cancel the own actor");
  /* Cancel(whole_actor) and a bounded wait for its CancelAck, which the
   * actor sends as it exits (PROTOCOL.md 8.2). */
  tr_ctx_t c;
  ctx_init(&c, self, SIDE_CALLER, KIND_ACTOR_CANCEL, new_cid(), NULL);
  c.task = t;
  ctx_link(self->tasks, &c);
  int rc = send_cancel(self, p->actor, TR_BODY_CANCEL, c.cid, 1, 0);
  if (rc == -TR_ECLOSED)
    c.done = 1; /* it has exited meanwhile: nothing left to cancel */
  else if (rc) {
    ctx_unlink(self->tasks, &c);
    return TR_ERROR(rc, "tr_portal_cancel_actor: the cancel request to %s was not sent",
                    tr_actor_name(p->actor));
  }
  int64_t deadline = timeout_ns < 0 ? TR_NO_DEADLINE : tr_now() + timeout_ns;
  while (!c.done && tr_now() < deadline)
    ctx_wait_until(&c, t, deadline, "tr_portal_cancel_actor");
  ctx_unlink(self->tasks, &c);
  if (acked)
    *acked = c.done;
  return 0;
}

int tr_portal_from_actor(tr_actor_t *a, tr_portal_t **out) {
  if (out)
    *out = NULL;
  if (!a || !out)
    return TR__EINVAL_NULL();
  tr_portal_t *p = calloc(1, sizeof(*p));
  if (!p)
    return TR__ENOMEM();
  p->actor = tr_actor_dup(a);
  *out = p;
  return 0;
}

tr_actor_t *tr_portal_actor(const tr_portal_t *p) { return p ? p->actor : NULL; }

void tr_portal_release(tr_portal_t *p) {
  if (!p)
    return;
  if (p->child)
    p->child->portal = NULL; /* the nursery must not hand it a result */
  tr_buf_release(p->value);
  tr__error_free(p->error);
  tr_actor_release(p->actor);
  free(p);
}
