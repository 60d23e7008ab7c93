/*
 * The dialog engine's contexts (docs/PROTOCOL.md): one object per side of
 * every dialog.  This file holds what every dialog shares: cids and uids,
 * sending protocol messages, the context's life (link, wait, notify,
 * free), the caller's outcome (the ContextCancelled rules of section 8.3),
 * and the tr_ctx_* operations.  See rpc.h for the engine's map.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <tractor/portal.h>

#include "runtime/reactor/reactor.h"
#include "runtime/actor/actor.h"
#include "runtime/error/error.h"
#include "runtime/platform/log.h"
#include "runtime/platform/assert.h"
#include "runtime/rpc/rpc.h"
#include "runtime/rpc/registry.h"
#include "runtime/sched/worker.h"
#include "runtime/task/task.h"
#include "schema/envelope.h"

static uint64_t g_next_cid;

uint64_t tr__rpc_new_cid(void) { return __atomic_add_fetch(&g_next_cid, 1, __ATOMIC_RELAXED); }

static char *dup_str(const char *s) { return s ? strdup(s) : NULL; }

/* ---- uids (tr_actor_uid: name and 128-bit uuid) ------------------------------ */

/* An actor's uid as the envelope carries it. */
static void uid_set(tr_uid_t *u, const tr_actor_t *a) {
  memset(u, 0, sizeof(*u));
  u->name = dup_str(tr_actor_name(a));
  tr_actor_uuid(a, u->uuid);
}

/* "Is this that actor": uuids compared, never names or pointers. */
void tr__uid_of(tr_uid_t *u, const tr_actor_t *a) { uid_set(u, a); }

int tr__msg_sender(tr_uid_t *u, const tr_msg_t *m) {
  if (m->x_ && m->x_->has_src)
    return tr__uid_copy(u, &m->x_->src);
  if (!m->from) {
    memset(u, 0, sizeof(*u));
    return -TR_EINVAL;
  }
  uid_set(u, m->from);
  return 0;
}

static int uid_is(const tr_uid_t *u, const tr_actor_t *a) {
  uint8_t v[TR_UUID_LEN];
  tr_actor_uuid(a, v);
  return memcmp(u->uuid, v, TR_UUID_LEN) == 0;
}

int tr__same_actor(const tr_actor_t *a, const tr_actor_t *b) {
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

const char *tr__uid_text(const tr_uid_t *u, char *buf) {
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
const char *tr__actor_uid_text(const tr_actor_t *a, char *buf) {
  tr_uid_t u;
  memset(&u, 0, sizeof u);
  u.name = (char *)tr_actor_name(a); /* borrowed: uid_text only reads it */
  tr_actor_uuid(a, u.uuid);
  return tr__uid_text(&u, buf);
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

tr_task_t *tr__rpc_current_task(void) {
  tr_actor_t *self = tr_self();
  return self ? tr__task_of_actor_current(self) : NULL;
}

/* ---- sending ---------------------------------------------------------------- */

/* Sends Cancel or CancelAck; Cancel carries the sender (only the dialog's
 * caller may cancel it), and a message from no actor names src (NULL:
 * nobody) in the envelope. */
static int send_cancel(tr_actor_t *self, const tr_uid_t *src, tr_actor_t *to, int body,
                       uint64_t cid, int whole, int acked) {
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
  if (body == TR_BODY_CANCEL && self) {
    /* The requester by uid: what the callee checks and names as the
     * canceller, whatever proxy the message came through. */
    m->from = tr_actor_dup(self);
    x->has_src = 1;
    uid_set(&x->src, self);
  } else if (self && TR_UNLIKELY(tr__actor_is_proxy(to))) {
    m->from = tr_actor_dup(self); /* a proxy writes its sender on the wire */
  } else if (!self && src) {
    x->has_src = 1;
    memcpy(x->src.uuid, src->uuid, TR_UUID_LEN);
  }
  return tr__send(to, m);
}

int tr__send_cancel(tr_actor_t *self, tr_actor_t *to, int body, uint64_t cid, int whole,
                    int acked) {
  return send_cancel(self, NULL, to, body, cid, whole, acked);
}

int tr__send_cancel_ack_for(const tr_uid_t *src, tr_actor_t *to, uint64_t cid, int whole,
                            int acked) {
  return send_cancel(NULL, src, to, TR_BODY_CANCEL_ACK, cid, whole, acked);
}

/* Sends a body (no payload) naming its sender: `from` is the sender (a
 * reference), which a channel end turns into the envelope's src uid when
 * the message leaves the process (a relay's end does the same).  For
 * StartAck: the callee answering a Start.  A reference costs two atomic
 * operations where an envelope uid would cost allocations (ctx_stream's
 * rpc mode lost 20 % to them).  Returns 0 or as tr__send. */
int tr__send_from(tr_actor_t *self, tr_actor_t *to, int body, uint64_t cid, uint64_t u64) {
  tr_msg_t *m;
  if (tr_msg_new(&m) != 0)
    return -TR_ENOMEM;
  m->body = (uint16_t)body;
  m->cid = cid;
  m->u64 = u64;
  m->from = tr_actor_dup(self);
  return tr__send(to, m);
}

/* Appends the NUL-terminated s to the text *t of length *len (capacity
 * *cap), growing it.  Returns 0, or -1 out of memory (*t unchanged). */
static int text_add(char **t, size_t *len, size_t *cap, const char *s, size_t n) {
  if (*len + n + 1 > *cap) {
    size_t c = *cap ? *cap : 256;
    while (*len + n + 1 > c)
      c *= 2;
    char *b = realloc(*t, c);
    if (!b)
      return -1;
    *t = b;
    *cap = c;
  }
  memcpy(*t + *len, s, n);
  *len += n;
  (*t)[*len] = '\0';
  return 0;
}

/* e's trace as the Error carries it: one text, a hop per line
 * (PROTOCOL.md), hop 0 first.  A group's members follow as more lines:
 * each rendered as tr_error_format does, indented under "member I of N:".
 * The trace is shown most recent call last, so they go in reverse (the
 * last member first, each one's lines bottom up) to read top down there,
 * above the group's own hops.  They travel in the text as tractor's boxed
 * ExceptionGroup carries its members in its traceback text: a group that
 * crosses an actor loses none of its causes.  NULL when there is nothing
 * to say (or no memory); out of memory part way, what was built so far. */
static char *trace_text(const tr_error_t *e) {
  char *t = NULL;
  size_t len = 0, cap = 0, n = tr_error_trace_len(e), g = tr_error_group_count(e);
  int bad = 0;
  for (size_t i = 0; i < n && !bad; i++) {
    const char *h = tr_error_trace(e, i);
    bad = text_add(&t, &len, &cap, h, strlen(h)) || text_add(&t, &len, &cap, "\n", 1);
  }
  for (size_t i = g; i-- > 0 && !bad;) {
    int rn = tr_error_format(tr_error_group_get(e, i), NULL, 0);
    char *r = rn > 0 ? malloc((size_t)rn + 1) : NULL;
    if (!r)
      break;
    (void)tr_error_format(tr_error_group_get(e, i), r, (size_t)rn + 1);
    /* Its lines, last first. */
    for (char *end = r + rn; end > r && !bad;) {
      char *line = end;
      while (line > r && line[-1] != '\n')
        line--;
      size_t ln = (size_t)(end - line);
      if (ln)
        bad = text_add(&t, &len, &cap, "  ", 2) || text_add(&t, &len, &cap, line, ln) ||
              text_add(&t, &len, &cap, "\n", 1);
      end = line > r ? line - 1 : r;
    }
    char head[64];
    int hn = snprintf(head, sizeof head, "member %zu of %zu:\n", i + 1, g);
    bad = bad || text_add(&t, &len, &cap, head, (size_t)hn);
    free(r);
  }
  return t;
}

/*
 * Sends Error(cid) built from error object e (may be NULL) and code rc to
 * `to`.  With `canceller` (ContextCancelled), the canceller's uid travels
 * too.  Best effort: the caller may be gone.
 */
static tr_msg_t *error_msg(tr_actor_t *self, uint64_t cid, int rc, const tr_error_t *e,
                           const char *canceller) {
  tr_msg_t *m;
  if (tr_msg_new(&m) != 0)
    return NULL;
  m->body = TR_BODY_ERROR;
  m->cid = cid;
  struct tr_envx *x = tr__envx_get(m);
  if (!x) {
    tr_msg_free(m);
    return NULL;
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
  if (e)
    x->u.error.trace = trace_text(e);
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
    uid_parse(&x->u.error.canceller, canceller);
  } else if (e && tr_error_canceller(e)) {
    /* A ContextCancelled re-raised here keeps the actor that cancelled it
     * (tractor's pack_error keeps the whole record). */
    x->u.error.has_canceller = 1;
    uid_parse(&x->u.error.canceller,
              tr_error_canceller_uid(e) ? tr_error_canceller_uid(e) : tr_error_canceller(e));
  }
  return m;
}

void tr__send_error_u64(tr_actor_t *self, tr_actor_t *to, uint64_t cid, int rc, const tr_error_t *e,
                        uint64_t u64) {
  tr_msg_t *m = error_msg(self, cid, rc, e, NULL);
  if (!m)
    return;
  m->u64 = u64;
  if (self && TR_UNLIKELY(tr__actor_is_proxy(to)))
    m->from = tr_actor_dup(self); /* a proxy writes its sender on the wire */
  (void)tr__send(to, m);
}

void tr__send_error(tr_actor_t *self, tr_actor_t *to, uint64_t cid, int rc, const tr_error_t *e,
                    const char *canceller) {
  tr_msg_t *m = error_msg(self, cid, rc, e, canceller);
  if (!m)
    return;
  if (self && TR_UNLIKELY(tr__actor_is_proxy(to)))
    m->from = tr_actor_dup(self); /* a proxy writes its sender on the wire */
  (void)tr__send(to, m);
}

void tr__send_error_for(const tr_uid_t *src, tr_actor_t *to, uint64_t cid, int rc,
                        const tr_error_t *e) {
  tr_msg_t *m = error_msg(NULL, cid, rc, e, NULL);
  if (!m)
    return;
  struct tr_envx *x = m->x_;
  /* Not for a boxed error passed on: its source is where it began. */
  if (src && !(e && tr_error_boxed_type(e) && tr_error_src(e))) {
    tr__uid_fini(&x->u.error.src);
    x->u.error.src.name = dup_str(src->name); /* NULL: an empty name on the wire */
    memcpy(x->u.error.src.uuid, src->uuid, TR_UUID_LEN);
  }
  if (src) { /* the sender on the wire, as any actor's frame names it */
    x->has_src = 1;
    memcpy(x->src.uuid, src->uuid, TR_UUID_LEN);
  }
  (void)tr__send(to, m);
}

/* ---- contexts: common ------------------------------------------------------- */

void tr__ctx_link(tr_tasks_t *ts, tr_ctx_t *c) {
  c->next = ts->rpc->dialogs;
  ts->rpc->dialogs = c;
}

void tr__ctx_unlink(tr_tasks_t *ts, tr_ctx_t *c) {
  for (tr_ctx_t **pp = &ts->rpc->dialogs; *pp; pp = &(*pp)->next)
    if (*pp == c) {
      *pp = c->next;
      return;
    }
}

void tr__ctx_init(tr_ctx_t *c, tr_actor_t *self, int side, int kind, uint64_t cid,
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

static void waiter_unlink(tr_ctx_t *c, tr_waiter_t *w) {
  for (tr_waiter_t **pp = &c->waiters; *pp; pp = &(*pp)->next)
    if (*pp == w) {
      *pp = w->next;
      return;
    }
}

/* Blocks the running task until the context changes or the task is
 * cancelled: returns 0 to re-check, or -TR_ECANCELED.  `what` names the
 * wait for the hang report (a string literal). */
int tr__ctx_wait(tr_ctx_t *c, tr_task_t *t, const char *what) {
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
void tr__ctx_wait_until(tr_ctx_t *c, tr_task_t *t, int64_t deadline, const char *what) {
  tr_waiter_t w = {c->waiters, t};
  c->waiters = &w;
  t->blocked_on = what;
  tr__task_wait_until(t, deadline);
  waiter_unlink(c, &w);
}

/* Drops the values not yet received, returning their credit so that a
 * sender blocked on the window can go on to its end. */
void tr__ctx_discard_rx(tr_ctx_t *c) {
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
    (void)tr__send_body(c->peer, TR_BODY_CREDIT, c->cid, n, NULL);
}

void tr__ctx_fini(tr_ctx_t *c) {
  tr__ctx_discard_rx(c);
  tr_msg_free(c->first);
  tr_msg_free(c->final);
  tr__error_free(c->out_err);
  tr_buf_release(c->args);
  tr_actor_release(c->peer);
  free(c->peer_name);
  tr__uid_fini(&c->cancel_req_uid);
  memset(c, 0, sizeof *c);
}

void tr__ctx_free(tr_ctx_t *c) {
  tr__ctx_fini(c);
  free(c);
}

/* Splits "ns.func" into ns (a caller buffer) and returns func, or NULL. */
const char *tr__rpc_split_name(const char *qualified, char *ns, size_t cap) {
  const char *dot = qualified ? strrchr(qualified, '.') : NULL;
  if (!dot || dot == qualified || !dot[1] || (size_t)(dot - qualified) >= cap)
    return NULL;
  memcpy(ns, qualified, (size_t)(dot - qualified));
  ns[dot - qualified] = '\0';
  return dot + 1;
}

/* ---- caller side: receiving ------------------------------------------------- */

static int is_absorbed(const tr_ctx_t *c, const struct tr_envx *x) {
  /* PROTOCOL.md 8.3 (a): this side asked, the error comes from its direct
   * peer, and it names this side as the canceller. */
  return c->cancel_called && x->u.error.has_src &&
         memcmp(x->u.error.src.uuid, c->peer_uuid, TR_UUID_LEN) == 0 && x->u.error.has_canceller &&
         uid_is(&x->u.error.canceller, c->actor);
}

/* Turns the final message into the outcome (once): out_rc, out_err. */
void tr__ctx_outcome(tr_ctx_t *c) {
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
      tr__error_set_canceller(e, tr__uid_text(&x->u.error.canceller, ub));
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
                           ? tr__uid_text(&x->u.error.src, ub)
                           : tr__actor_uid_text(c->peer, ub));
  for (size_t i = 0; x && i < x->u.error.n_relay; i++)
    if (x->u.error.relay[i].name)
      tr__error_relay_append(e, tr__uid_text(&x->u.error.relay[i], ub));
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
int tr__ctx_put_outcome(tr_ctx_t *c) {
  tr__ctx_outcome(c);
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
int tr__ctx_cancelled_here(tr_ctx_t *c, const char *op) {
  if (c->done) {
    tr__ctx_outcome(c);
    if (c->out_rc != 0)
      return tr__ctx_put_outcome(c);
  }
  int rc = TR_ERROR(-TR_ECTXCANCELED,
                    "%s after tr_ctx_cancel: the context with actor %s was "
                    "cancelled by this side",
                    op, tr_actor_name(c->peer));
  tr_error_t *e = tr__error_take();
  char ub[TR_UID_TEXT];
  tr__error_set_canceller(e, tr__actor_uid_text(c->actor, ub));
  tr__error_set_src(e, tr__actor_uid_text(c->peer, ub));
  tr__error_put(e);
  return rc;
}

/* The final message arrived (or the peer is gone, m == NULL). */
void tr__ctx_finish(tr_ctx_t *c, tr_msg_t *m) {
  c->done = 1;
  c->final = m;
  if (c->kind == KIND_CHILD) { /* a child's exit report: its nursery */
    tr__an_child_ended(c);
    return;
  }
  /* A remote error cancels the context block's scope (PROTOCOL.md 6.3),
   * unless it is the ContextCancelled this side asked for. */
  if (c->has_scope && (!m || m->body == TR_BODY_ERROR)) {
    tr__ctx_outcome(c);
    if (c->out_rc != 0)
      tr__task_cancel_scope_local(c->task, &c->scope);
  }
  tr__ctx_notify(c);
}

/* Sends Cancel once for a caller-side dialog. */
void tr__ctx_send_cancel(tr_ctx_t *c) {
  if (c->cancel_called || c->done)
    return;
  c->cancel_called = 1;
  (void)tr__send_cancel(c->actor, c->peer, TR_BODY_CANCEL, c->cid, 0, 0);
}

/* Leaving a dialog that is not over: cancel it and wait (shielded,
 * bounded) for its final message, dropping stream values. */
void tr__ctx_cancel_and_drain(tr_ctx_t *c, tr_task_t *t) {
  tr__ctx_send_cancel(c);
  int64_t deadline = tr_now() + TR_CTX_CANCEL_TIMEOUT_NS;
  while (!c->done && tr_now() < deadline) {
    tr__ctx_discard_rx(c);
    tr__ctx_wait_until(c, t, deadline, "a dialog's cancel (waiting for the callee's answer)");
  }
  tr__ctx_discard_rx(c);
}

/* Waits (cancellably) until the caller's side reaches `phase` (PH_ACKED,
 * PH_STARTED), StartAck named another kind, or the dialog is done (pass a
 * phase past PH_STARTED to wait for the end).  Returns 0 then. */
int tr__rpc_wait_for(tr_ctx_t *c, tr_task_t *t, int phase, const char *what) {
  /* No need to watch the peer's exit: a callee answers every Start it
   * accepted before it exits, and a Start that reaches an exited actor is
   * answered by tr__rpc_bounce. */
  while (c->phase < phase && !c->done && !c->kind_wrong) {
    int rc = tr__ctx_wait(c, t, what);
    if (rc)
      return rc;
  }
  return 0;
}

/* ---- context operations ----------------------------------------------------- */

int tr_ctx_started(tr_ctx_t *c, const tr_buf_t *value) {
  if (!c)
    return TR__EINVAL_NULL();
  if (c->side != SIDE_CALLEE || c->kind != TR_FUNC_CONTEXT)
    return TR_ERROR(-TR_EPERM, "tr_ctx_started is for the callee of a context");
  if (c->phase >= PH_STARTED)
    return TR_ERROR(-TR_EBUSY, "tr_ctx_started called twice");
  int frc = tr__rpc_fits(c->peer, value, "tr_ctx_started: the started value");
  if (frc)
    return frc;
  c->phase = PH_STARTED;
  int rc = tr__send_body(c->peer, TR_BODY_STARTED, c->cid, 0, tr_buf_ref((tr_buf_t *)value));
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
  if (c->kind == TR_FUNC_CONTEXT && c->phase < PH_STARTED)
    return TR_ERROR(-TR_EPERM, "tr_ctx_open_stream before the context was started");
  int rc = tr__ctx_refuse_closing(c);
  if (rc)
    return rc;
  if (c->side == SIDE_CALLER && c->cancel_called)
    return tr__ctx_cancelled_here(c, "tr_ctx_open_stream");
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
    tr__ctx_send_cancel(c);
    /* Also after the callee's answer (nothing is sent then): the stream
     * is over for this side all the same (portal.h). */
    c->cancel_called = 1;
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
  char buf[TR_UID_TEXT];
  return tr__cancel_cause((tr_ctx_t *)c, c->actor->tasks, &why, buf) != NULL;
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
  tr_task_t *t = tr__rpc_current_task();
  if (!t || t->actor != c->actor)
    return TR_ERROR(-TR_EPERM, "tr_ctx_cancel_wait runs in a task of the context's actor");
  int rc = tr__ctx_refuse_closing(c);
  if (rc)
    return rc;
  tr__ctx_send_cancel(c);
  c->cancel_called = 1; /* as tr_ctx_cancel, also after the answer */
  int64_t deadline = timeout_ns < 0 ? TR_NO_DEADLINE : tr__deadline_after(timeout_ns);
  /* Shielded and bounded, as tractor's Context.cancel(timeout): the wait
   * is part of leaving, and a cancelled caller still leaves in time.  Values
   * still arriving are dropped: the stream ended with the cancel. */
  tr__ctx_enter(c);
  while (!c->done && tr_now() < deadline) {
    tr__ctx_discard_rx(c);
    tr__ctx_wait_until(c, t, deadline, "tr_ctx_cancel_wait");
  }
  tr__ctx_leave(c);
  tr__ctx_discard_rx(c);
  if (!c->done)
    return TR_ERROR(-TR_ETIMEDOUT, "actor %s did not answer the context's cancel within %lld ns",
                    tr_actor_name(c->peer), (long long)timeout_ns);
  tr_error_clear();
  return 0;
}

const char *tr_ctx_peer(const tr_ctx_t *c) {
  return !c ? NULL : c->peer_name ? c->peer_name : tr_actor_name(c->peer);
}

uint32_t tr_ctx_window(const tr_ctx_t *c) { return c ? c->window : 0; }

uint32_t tr__ctx_default_window(const tr_actor_t *peer) {
  return peer && tr__actor_is_proxy(peer) ? TR_STREAM_WINDOW_REMOTE : TR_STREAM_WINDOW;
}

int tr_ctx_result(tr_ctx_t *c, tr_buf_t **result) {
  if (result)
    *result = NULL;
  if (!c)
    return TR__EINVAL_NULL();
  if (c->side != SIDE_CALLER)
    return TR_ERROR(-TR_EPERM, "tr_ctx_result is for the caller of a context");
  tr_task_t *t = tr__rpc_current_task();
  if (!t)
    return TR_ERROR(-TR_EPERM, "tr_ctx_result runs in a task");
  int rc = c->task == t ? 0 : tr__ctx_refuse_closing(c);
  if (rc)
    return rc;
  tr__ctx_enter(c);
  /* tractor's drain_to_final_msg: every value that arrives is dropped
   * (and its credit returned) as it comes, so a callee with more than a
   * window still to send gets to its end. */
  for (;;) {
    tr__ctx_discard_rx(c);
    if (c->done || c->kind_wrong)
      break;
    if ((rc = tr__ctx_wait(c, t, "tr_ctx_result")) != 0)
      break;
  }
  tr__ctx_leave(c);
  if (rc)
    return rc;
  tr__ctx_discard_rx(c);
  rc = tr__ctx_put_outcome(c);
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
  tr_task_t *t = tr__rpc_current_task();
  if (!t || t != c->task)
    return TR_ERROR(-TR_EPERM, "tr_ctx_close must run in the task that opened the context");
  if (c->users || c->waiters || (c->stream.bc && c->stream.bc->subs))
    return TR_ERROR(-TR_EBUSY,
                    "the context with actor %s is in use by another task (a receive, "
                    "send, result or subscriber); close it once they are done",
                    tr_actor_name(c->peer));
  /* From here on other tasks are refused (tr__ctx_refuse_closing): the waits
   * below may let them run, and the context is freed at the end. */
  c->closing = 1;
  if (c->opened && !c->tx_stop && !c->done) {
    c->tx_stop = 1;
    (void)tr__send_body(c->peer, TR_BODY_STOP, c->cid, 0, NULL);
  }
  int rc = 0;
  if (!c->done && !tr__task_cancelled(t))
    rc = tr_ctx_result(c, NULL);
  if (!c->done) {
    /* Leaving because this task is cancelled: cancel the callee and give
     * it a bounded time to answer (PROTOCOL.md 6.3). */
    tr__ctx_cancel_and_drain(c, t);
    if (rc != -TR_ECANCELED) /* else tr_ctx_result observed it already */
      rc = tr__task_observe_cancel(t,
                                   "left the context with actor %s cancelled: the task is "
                                   "cancelled (so is the callee)",
                                   tr_actor_name(c->peer));
    if (c->done) {
      tr__ctx_outcome(c); /* a real failure beats the local cancellation */
      if (c->out_rc != 0 && c->out_rc != -TR_ECTXCANCELED)
        rc = tr__ctx_put_outcome(c);
    }
  } else {
    tr__ctx_outcome(c);
    if (c->out_rc != 0) {
      rc = tr__ctx_put_outcome(c); /* the remote error, never -TR_ECANCELED */
    } else if (tr__task_cancelled(t)) {
      /* Cancelled from outside: the context's own scope is only ever
       * cancelled by a remote error, handled above. */
      rc = tr__task_observe_cancel(t, "left the context with actor %s: the task is cancelled",
                                   tr_actor_name(c->peer));
    } else {
      rc = tr__ctx_put_outcome(c);
      if (result && c->final && c->final->body == TR_BODY_RETURN)
        *result = tr_buf_ref(c->final->payload);
    }
  }
  ctx_close_scope(c);
  tr__bcast_free(c->stream.bc);
  tr__ctx_unlink(c->actor->tasks, c);
  tr__ctx_free(c);
  return rc;
}

/* ---- peer loss ------------------------------------------------------------- */

void tr__rpc_peer_lost(tr_actor_t *self, const uint8_t uuid[TR_UUID_LEN], uint64_t via, int rc,
                       const char *cause) {
  tr_tasks_t *ts = self->tasks;
  if (!ts)
    return;
  int n = 0;
  for (tr_ctx_t *c = ts->rpc->dialogs; c; c = c->next) {
    if (memcmp(c->peer_uuid, uuid, TR_UUID_LEN) != 0 ||
        (via && tr_actor_id(tr__proxy_channel(c->peer)) != via))
      continue;
    if (c->kind == KIND_ACTOR_CANCEL) {
      /* No ack can come: the actor reads as exited now (its stand-in is
       * marked gone), and so the wait ends as at its exit. */
      if (!c->done) {
        c->done = 1;
        tr__ctx_notify(c);
        n++;
      }
      continue;
    }
    if (c->kind == KIND_CHILD) { /* a child of this actor's nursery */
      tr__an_child_lost(c, rc, cause);
      n++;
      continue;
    }
    if (c->side == SIDE_CALLER) {
      if (c->done)
        continue;
      c->done = 1;
      c->has_out = 1;
      c->out_rc = rc;
      c->out_err = tr__error_new(rc, NULL, "the peer of this dialog (%s) is lost: %s",
                                 tr_actor_name(c->peer), cause ? cause : "no reason given");

      if (c->has_scope) /* as a remote error would (PROTOCOL.md 6.3) */
        tr__task_cancel_scope_local(c->task, &c->scope);
    } else if (!c->done) {
      c->cancel_req = 1; /* the caller is gone: its task ends */
      if (c->task_scope)
        tr__task_cancel_scope_local(c->task, c->task_scope);
    }
    tr__ctx_notify(c);
    n++;
  }
  /* A peer that goes with nothing open (a child's normal end) is news only
   * for debugging. */
  tr_log(n ? TR_LOG_INFO : TR_LOG_DEBUG, "a peer is gone (%s): %d dialog(s) ended with it",
         cause ? cause : "no reason given", n);
}

int tr__rpc_post_peer_lost(tr_actor_t *to, const uint8_t uuid[TR_UUID_LEN], uint64_t via, int rc,
                           const char *cause) {
  size_t clen = cause ? strlen(cause) : 0;
  tr_buf_t *b;
  int err = tr_buf_new(TR_UUID_LEN + clen, &b);
  if (err)
    return err;
  memcpy(tr_buf_wdata(b), uuid, TR_UUID_LEN);
  if (clen)
    memcpy((uint8_t *)tr_buf_wdata(b) + TR_UUID_LEN, cause, clen);
  /* The way lost rides in the cid, which a local notice does not use. */
  return tr__send_body(to, TR_BODY_LOCAL_PEER_LOST, via, (uint64_t)(rc < 0 ? -rc : rc), b);
}
