/*
 * The dialog engine, first part: daemon actors that serve calls, and the
 * run dialog (docs/PROTOCOL.md): Start -> StartAck(FN) -> Return | Error,
 * with Cancel(cid) when the caller gives up.
 *
 * It speaks only tr_msg_t envelopes (body, cid, x_, payload, from), never
 * in-process shortcuts, so the TCP transport can carry the same messages
 * unchanged.  Everything runs in the actors' own turns and tasks:
 *   - a Start arriving at a daemon resolves the function (namespace
 *     enabled, function exists; the kind was checked by the caller) and
 *     either answers Error at once or runs the call as a task in the
 *     daemon's service nursery, which answers Return or Error;
 *   - the caller's task waits for the reply of its cid; a cancelled caller
 *     sends Cancel(cid), which cancels the request task's scope.
 * Errors cross boxed: the callee's error object travels as the Error
 * body's fields and becomes a RemoteActorError at the caller.
 */
#include <stdlib.h>
#include <string.h>

#include <tractor/portal.h>

#include "runtime/actor/actor.h"
#include "runtime/error/error.h"
#include "runtime/platform/assert.h"
#include "runtime/rpc/registry.h"
#include "runtime/runtime.h"
#include "runtime/task/task.h"
#include "schema/envelope.h"

struct tr_portal {
  tr_actor_t *actor;    /* a reference */
  tr_an_child_t *child; /* run_in_actor: its record while the nursery is open */
  /* run_in_actor results once the nursery has closed (cached). */
  uint8_t has_result;
  int result_rc;
  tr_buf_t *value;
  tr_error_t *error;
};

/* A call being served (callee side). */
typedef struct tr_rpc_req {
  struct tr_rpc_req *next;
  const tr__rpc_entry_t *entry;
  tr_buf_t *args;     /* owned reference */
  tr_actor_t *caller; /* owned reference */
  uint64_t cid;
  tr_scope_t *scope; /* the request task's scope while it runs */
  uint8_t cancel_requested;
} tr_rpc_req_t;

/* A call this actor's task waits on (caller side). */
typedef struct tr_rpc_call {
  struct tr_rpc_call *next;
  uint64_t cid;
  tr_task_t *task;
  tr_msg_t *reply; /* Return or Error, once it has arrived */
} tr_rpc_call_t;

static char *dup_str(const char *s) { return s ? strdup(s) : NULL; }

/* ---- replies ------------------------------------------------------------ */

/* Sends Error(cid) built from error object e (may be NULL) and code rc to
 * `to`.  Best effort: the caller may be gone. */
static void send_error(tr_actor_t *self, tr_actor_t *to, uint64_t cid, int rc,
                       const tr_error_t *e) {
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
  const char *type = e ? (reboxed ? tr_error_boxed_type(e) : tr_error_type(e)) : tr_errtype(rc);
  x->u.error.boxed_type = dup_str(type);
  x->u.error.src_type = dup_str(type);
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
  const char *me = self ? tr_actor_name(self) : "actor";
  x->u.error.src.name = dup_str(reboxed ? tr_error_src(e) : me);
  if (reboxed) {
    size_t n = tr_error_relay_len(e);
    x->u.error.relay = calloc(n + 1, sizeof(tr_uid_t));
    if (x->u.error.relay) {
      for (size_t i = 0; i < n; i++)
        x->u.error.relay[i].name = dup_str(tr_error_relay(e, i));
      x->u.error.relay[n].name = dup_str(me);
      x->u.error.n_relay = n + 1;
    }
  }
  (void)tr_send(to, m);
}

static void send_body(tr_actor_t *to, int body, uint64_t cid, uint64_t u64, tr_buf_t *payload) {
  tr_msg_t *m;
  if (tr_msg_new(&m) != 0) {
    tr_buf_release(payload);
    return;
  }
  m->body = (uint16_t)body;
  m->cid = cid;
  m->u64 = u64;
  m->payload = payload;
  (void)tr_send(to, m);
}

/* ---- callee side ----------------------------------------------------------- */

static void req_free(tr_rpc_req_t *r) {
  tr_buf_release(r->args);
  tr_actor_release(r->caller);
  free(r);
}

static void req_unlink(tr_tasks_t *ts, tr_rpc_req_t *r) {
  for (tr_rpc_req_t **pp = &ts->reqs; *pp; pp = &(*pp)->next)
    if (*pp == r) {
      *pp = r->next;
      return;
    }
}

/* The task that runs one call and answers it. */
static int serve_request(void *arg) {
  tr_rpc_req_t *r = arg;
  tr_actor_t *self = tr_self();
  tr_tasks_t *ts = self->tasks;
  tr_scope_t s;
  int rc = tr_scope_open(&s, TR_NO_DEADLINE, 0);
  tr_buf_t *result = NULL;
  if (rc == 0) {
    r->scope = &s;
    if (r->cancel_requested)
      tr_scope_cancel(&s);
    rc = tr__rpc_check_payload(r->entry, TR__RPC_ARGS, r->args);
    if (rc == 0)
      rc = r->entry->fn(NULL, r->args, &result);
    r->scope = NULL;
    tr_scope_close(&s);
  }
  if (rc == 0) {
    send_body(r->caller, TR_BODY_RETURN, r->cid, 0, result);
  } else {
    tr_buf_release(result);
    send_error(self, r->caller, r->cid, rc, tr_error_last());
  }
  req_unlink(ts, r);
  req_free(r);
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
  if (!ts->service && !ts->serve_done) {
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
  if (!ts->service)
    rc = TR_ERROR(-TR_ECLOSED, "actor %s does not serve calls", tr_actor_name(a));
  else if (!x || !x->u.start.ns || !x->u.start.func)
    rc = TR_ERROR(-TR_EPROTO, "Start without a function name");
  else
    rc = tr__rpc_resolve_parts(x->u.start.ns, x->u.start.func, (const char *const *)ts->enable,
                               ts->n_enable, 0, &e);
  if (rc) {
    /* Refused before any task starts (tractor's ModuleNotExposed etc.). */
    tr_error_t *err = tr__error_take();
    send_error(a, caller, m->cid, rc, err);
    tr__error_free(err);
    return 0;
  }
  tr_rpc_req_t *r = calloc(1, sizeof(*r));
  if (!r) {
    send_error(a, caller, m->cid, -TR_ENOMEM, NULL);
    return 0;
  }
  r->entry = e;
  r->args = m->payload;
  m->payload = NULL;
  r->caller = m->from;
  m->from = NULL;
  r->cid = m->cid;
  rc = tr__nursery_spawn_internal(ts->service, serve_request, r, e->name);
  if (rc) {
    send_error(a, r->caller, r->cid, rc, NULL);
    req_free(r);
    return 0;
  }
  r->next = ts->reqs;
  ts->reqs = r;
  send_body(r->caller, TR_BODY_START_ACK, r->cid, (uint64_t)e->kind, NULL);
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

static void on_cancel(tr_actor_t *a, tr_msg_t *m) {
  for (tr_rpc_req_t *r = a->tasks->reqs; r; r = r->next) {
    if (r->cid == m->u64 && tr_actor_id(r->caller) == tr_actor_id(m->from)) {
      r->cancel_requested = 1;
      if (r->scope)
        tr_scope_cancel(r->scope);
    }
  }
}

/* ---- caller side ------------------------------------------------------------ */

static tr_rpc_call_t *find_call(tr_tasks_t *ts, uint64_t cid) {
  for (tr_rpc_call_t *c = ts->calls; c; c = c->next)
    if (c->cid == cid)
      return c;
  return NULL;
}

static void call_unlink(tr_tasks_t *ts, tr_rpc_call_t *c) {
  for (tr_rpc_call_t **pp = &ts->calls; *pp; pp = &(*pp)->next)
    if (*pp == c) {
      *pp = c->next;
      return;
    }
}

void tr__rpc_dispatch(tr_worker_t *w, tr_actor_t *a, tr_msg_t *m) {
  tr_tasks_t *ts = a->tasks;
  switch (m->body) {
  case TR_BODY_START:
    if (on_start(a, m))
      return;
    break;
  case TR_BODY_CANCEL:
    if (m->from)
      on_cancel(a, m);
    break;
  case TR_BODY_RETURN:
  case TR_BODY_ERROR: {
    tr_rpc_call_t *c = find_call(ts, m->cid);
    if (c && !c->reply) {
      c->reply = m;
      tr__task_wake_blocked(c->task);
      return; /* the waiting task takes the message */
    }
    break; /* a late reply to an abandoned call */
  }
  default:
    break; /* StartAck (the kind was checked before sending) and others */
  }
  tr__msg_dispose(w, m);
}

void tr__rpc_bounce(tr_actor_t *dead, tr_msg_t *m) {
  if (m->body == TR_BODY_START && m->from)
    send_error(dead, m->from, m->cid, -TR_ECLOSED, NULL);
}

void tr__rpc_actor_free(tr_tasks_t *ts) {
  while (ts->early_starts) { /* never served: tell the callers */
    tr_msg_t *m = ts->early_starts;
    ts->early_starts = m->next_;
    if (m->from)
      send_error(NULL, m->from, m->cid, -TR_ECLOSED, NULL);
    tr_msg_free(m);
  }
  for (size_t i = 0; i < ts->n_enable; i++)
    free(ts->enable[i]);
  free(ts->enable);
  ts->enable = NULL;
  ts->n_enable = 0;
  TR_ASSERT(ts->reqs == NULL && ts->calls == NULL);
}

/* Turns an Error reply into this task's error object and return code. */
static int error_from_reply(const tr_portal_t *p, tr_msg_t *m) {
  struct tr_envx *x = m->x_;
  int code = x ? -(int)x->u.error.code : -TR_EREMOTE;
  const char *boxed = x && x->u.error.boxed_type ? x->u.error.boxed_type : "Error";
  const char *msg = x && x->u.error.message ? x->u.error.message : "";
  /* Refusals keep their own code; failures of the function are boxed. */
  int rc = (code == -TR_ENOFUNC || code == -TR_ENOTEXPOSED || code == -TR_EFUNCKIND ||
            code == -TR_ECLOSED || code == -TR_EPROTO || code == -TR_EMSGTYPE)
               ? code
               : -TR_EREMOTE;
  tr_error_t *e = tr__error_new(rc, "RemoteActorError", "%s", msg);
  tr__error_set_boxed_type(e, boxed);
  /* The source is where the error was raised (it may have come through
   * relays); the actors it came through form the relay path. */
  tr__error_set_src(e, x && x->u.error.has_src && x->u.error.src.name ? x->u.error.src.name
                                                                      : tr_actor_name(p->actor));
  for (size_t i = 0; x && i < x->u.error.n_relay; i++)
    if (x->u.error.relay[i].name)
      tr__error_relay_append(e, x->u.error.relay[i].name);
  if (x && x->u.error.trace) {
    char *t = x->u.error.trace, *nl;
    while (*t && (nl = strchr(t, '\n'))) {
      *nl = '\0';
      tr__error_trace_append_str(e, t);
      t = nl + 1;
    }
  }
  tr__error_put(e);
  return rc;
}

int tr_portal_run(tr_portal_t *p, const char *qualified, const tr_buf_t *args, tr_buf_t **result) {
  if (result)
    *result = NULL;
  if (!p || !qualified)
    return -TR_EINVAL;
  tr_actor_t *self = tr_self();
  tr_task_t *t = self ? tr__task_of_actor_current(self) : NULL;
  if (!t)
    return -TR_EPERM;
  const char *dot = strrchr(qualified, '.');
  if (!dot || dot == qualified || !dot[1])
    return TR_ERROR(-TR_EINVAL, "'%s' is not a qualified name ns.func", qualified);
  /* The kind is checked here, before anything is sent: every actor runs
   * this executable, so the local table is the callee's (PROTOCOL.md). */
  const tr__rpc_entry_t *e;
  char ns[256];
  size_t nlen = (size_t)(dot - qualified);
  if (nlen >= sizeof ns)
    return TR_ERROR(-TR_EINVAL, "namespace too long in '%s'", qualified);
  memcpy(ns, qualified, nlen);
  ns[nlen] = '\0';
  if (tr__rpc_lookup(ns, dot + 1, &e) == 0 && e->kind != TR_FUNC_FN)
    return TR_ERROR(-TR_EFUNCKIND, "%s is a %s function; use tr_portal_%s", qualified,
                    tr__rpc_kind_name(e->kind),
                    e->kind == TR_FUNC_STREAM ? "open_stream_from" : "open_context");
  tr_error_clear();

  tr_tasks_t *ts = self->tasks;
  tr_msg_t *m;
  int rc = tr_msg_new(&m);
  if (rc)
    return rc;
  m->body = TR_BODY_START;
  m->cid = ++ts->next_cid;
  struct tr_envx *x = tr__envx_get(m);
  if (!x || !(x->u.start.ns = strdup(ns)) || !(x->u.start.func = strdup(dot + 1))) {
    tr_msg_free(m);
    return -TR_ENOMEM;
  }
  m->payload = tr_buf_ref((tr_buf_t *)args);
  m->from = tr_actor_dup(self);
  tr_rpc_call_t call = {.cid = m->cid, .task = t};
  call.next = ts->calls;
  ts->calls = &call;
  rc = tr_send(p->actor, m);
  if (rc) {
    call_unlink(ts, &call);
    return TR_ERROR(rc, "actor %s has exited", tr_actor_name(p->actor));
  }
  while (!call.reply) {
    if (tr__task_cancelled(t)) {
      /* Tell the callee; its late reply finds no call and is dropped. */
      tr_msg_t *c;
      if (tr_msg_new(&c) == 0) {
        c->body = TR_BODY_CANCEL;
        c->cid = call.cid;
        c->u64 = call.cid;
        c->from = tr_actor_dup(self);
        (void)tr_send(p->actor, c);
      }
      call_unlink(ts, &call);
      t->cancel_seen++;
      return -TR_ECANCELED;
    }
    if (tr_actor_exited(p->actor) && !call.reply) {
      call_unlink(ts, &call);
      return TR_ERROR(-TR_ECLOSED, "actor %s exited during the call", tr_actor_name(p->actor));
    }
    tr__task_block(t, 1);
  }
  call_unlink(ts, &call);
  tr_msg_t *reply = call.reply;
  if (reply->body == TR_BODY_RETURN) {
    if (result) {
      *result = reply->payload;
      reply->payload = NULL;
    }
    rc = 0;
  } else {
    rc = error_from_reply(p, reply);
  }
  tr_msg_free(reply);
  return rc;
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
    return -TR_EINVAL;
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
  return -TR_ENOMEM;
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
    return -TR_EINVAL;
  *out = NULL;
  if (!an || !qualified)
    return -TR_EINVAL;
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
      return -TR_EINVAL;
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
    return -TR_ENOMEM;
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
    return -TR_EINVAL;
  tr_an_child_t *c = p->child;
  if (!c && !p->has_result)
    return TR_ERROR(-TR_EINVAL, "not a tr_run_in_actor portal");
  if (c) {
    tr_actor_t *self = tr_self();
    tr_task_t *t = self ? tr__task_of_actor_current(self) : NULL;
    if (!t)
      return -TR_EPERM;
    while (!c->exited) {
      if (tr__task_cancelled(t)) {
        t->cancel_seen++;
        return -TR_ECANCELED;
      }
      c->waiter = t;
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
  /* The same error on every call: a fresh boxed copy each time. */
  tr_error_t *e = err ? tr__error_copy(err) : tr__error_new(rc, NULL, "%s", tr_strerror(rc));
  tr__error_box(e, tr_actor_name(p->actor));
  tr__error_put(e);
  return rc == -TR_ECANCELED ? rc : -TR_EREMOTE;
}

int tr_portal_cancel_actor(tr_portal_t *p, int64_t timeout_ns, int *acked) {
  if (acked)
    *acked = 0;
  if (!p)
    return -TR_EINVAL;
  if (tr_actor_exited(p->actor)) {
    if (acked)
      *acked = 1;
    return 0;
  }
  tr_actor_t *self = tr_self();
  tr_task_t *t = self ? tr__task_of_actor_current(self) : NULL;
  if (!t)
    return -TR_EPERM;
  tr_an_child_t *c = p->child;
  if (!c)
    return TR_ERROR(-TR_EINVAL, "tr_portal_cancel_actor needs a portal to a child of this actor");
  int rc = tr__actor_request_cancel(p->actor, 0);
  if (rc && rc != -TR_ECLOSED)
    return rc;
  /* The child's exit report is the acknowledgement (in-process, the exit
   * message plays CancelAck's part; PROTOCOL.md). */
  int64_t deadline = timeout_ns < 0 ? TR_NO_DEADLINE : tr_now() + timeout_ns;
  while (!c->exited && tr_now() < deadline) {
    c->waiter = t;
    tr__task_wait_until(t, deadline);
    c->waiter = NULL;
  }
  if (acked)
    *acked = c->exited;
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
