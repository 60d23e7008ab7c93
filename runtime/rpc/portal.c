/*
 * The caller's side of starting dialogs (docs/PROTOCOL.md sections 5 and
 * 6): the cancellation check before anything is sent, the early kind
 * check, Start, and the waits of tr_portal_run, open_stream_from and
 * open_context; portals and run_in_actor results.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <tractor/portal.h>

#include "runtime/actor/actor.h"
#include "runtime/error/error.h"
#include "runtime/platform/log.h"
#include "runtime/platform/assert.h"
#include "runtime/rpc/rpc.h"
#include "runtime/rpc/registry.h"
#include "runtime/sched/worker.h"
#include "runtime/task/task.h"
#include "schema/envelope.h"

tr__rpc_route_fn tr__rpc_route;

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
  if (opts && opts->overrun != TR_OVERRUN_BLOCK && opts->overrun != TR_OVERRUN_ERROR)
    return TR_ERROR(-TR_EINVAL, "%s: overrun %d is neither TR_OVERRUN_BLOCK nor TR_OVERRUN_ERROR",
                    qualified, opts->overrun);
  tr_actor_t *self = tr_self();
  tr_task_t *t = self ? tr__task_of_actor_current(self) : NULL;
  if (!t)
    return TR__EPERM_NOTASK();
  if (p->actor == self)
    return TR_ERROR(-TR_EINVAL, "an actor cannot call itself through a portal");
  /* tractor's early refusal: a name this executable exports with another
   * kind fails here, before anything is sent, when the callee runs this
   * program too.  A name it does not know, or a callee that may run
   * another program, is the callee's to decide (its StartAck names the
   * kind; PROTOCOL.md 5). */
  tr_rpc_t *r = self->tasks->rpc;
  const tr__rpc_entry_t *e = r->last_called;
  char nsbuf[256];
  const char *ns, *func;
  size_t nl = r->last_called_ns_len;
  int ours = tr__actor_runs_our_program(p->actor);
  if (ours && e && strncmp(qualified, e->ns, nl) == 0 && qualified[nl] == '.' &&
      strcmp(qualified + nl + 1, e->name) == 0) {
    ns = e->ns; /* the same export as the last call */
    func = e->name;
  } else {
    ns = nsbuf;
    if (!(func = tr__rpc_split_name(qualified, nsbuf, sizeof nsbuf)))
      return TR_ERROR(-TR_EINVAL, "'%s' is not a qualified name ns.func", qualified);
    e = NULL;
    if (ours && tr__rpc_lookup(ns, func, &e) == 0) {
      r->last_called = e;
      r->last_called_ns_len = strlen(e->ns);
    }
    tr_error_clear();
  }
  static const char *const portal_call[] = {"", "run", "open_stream_from", "open_context"};
  if (e && e->kind != kind)
    return TR_ERROR(-TR_EFUNCKIND, "%s is a %s function; use tr_portal_%s", qualified,
                    tr__rpc_kind_name(e->kind), portal_call[e->kind]);
  /* trio's rule: a call in a cancelled scope fails before doing anything,
   * so no Start is sent and the remote function never runs.  After the
   * checks of its own arguments above (portal.h, "Cancelled callers"). */
  if (tr__task_cancelled(t))
    return tr__task_observe_cancel(t, "%s was not called: the calling task is cancelled",
                                   qualified);
  /* The default window is the caller's to choose (by where the callee
   * is), and the Start names it, so both sides use the same. */
  tr_ctx_opts_t o = {.window = 0, .overrun = opts ? opts->overrun : TR_OVERRUN_BLOCK};
  if (opts)
    o = *opts;
  if (o.window == 0)
    o.window = tr__ctx_default_window(p->actor);
  tr__ctx_init(c, self, SIDE_CALLER, kind, tr__rpc_new_cid(), &o);
  c->entry = e;
  c->task = t;
  tr_msg_t *m;
  int rc = tr_msg_new(&m);
  if (rc)
    return TR__ENOMEM();
  m->body = TR_BODY_START;
  m->cid = c->cid;
  m->u64 = (uint64_t)c->window | ((uint64_t)c->overrun_error << 32);
  struct tr_envx *x = tr__envx_get(m);
  if (!x || tr__envx_set_start(x, ns, func) != 0) {
    tr_msg_free(m);
    return TR__ENOMEM();
  }
  m->payload = tr__rpc_value(tr_buf_ref((tr_buf_t *)args));
  m->from = tr_actor_dup(self);
  /* The caller by uuid in the envelope: what the callee checks a Cancel
   * against.  No name: only the uuid decides, and a run dialog's cost is
   * a few allocations, one less per name (the Cancel names its sender in
   * full). */
  tr_actor_uuid(self, x->u.start.caller.uuid);
  x->u.start.has_caller = 1;
  c->peer = tr__rpc_route_to(self, p->actor);
  char what[300];
  if (TR_UNLIKELY(tr__actor_is_proxy(c->peer)) && tr_buf_len(args) > TR_REMOTE_VALUE_MAX) {
    snprintf(what, sizeof what, "the arguments of %s", qualified);
    rc = tr__rpc_fits(c->peer, args, what);
    tr_actor_release(c->peer);
    c->peer = NULL;
    tr_msg_free(m);
    return rc;
  }
  /* Until StartAck names the callee, the peer is the portal's actor. */
  tr_actor_uuid(p->actor, c->peer_uuid);
  tr__ctx_link(self->tasks, c);
  rc = tr__send(c->peer, m);
  if (rc) {
    tr__ctx_unlink(self->tasks, c);
    tr_actor_release(c->peer);
    c->peer = NULL;
    return TR_ERROR(rc, "actor %s has exited", tr_actor_name(p->actor));
  }
  *tout = t;
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
  rc = tr__rpc_wait_for(&c, t, PH_DONE_WAIT, "tr_portal_run");
  if (rc == 0 && c.kind_wrong) {
    /* A peer built from other code answered with another kind
     * (PROTOCOL.md section 5): end the dialog, fail the call, whatever
     * its outcome (it may be in already: a function that ended at once;
     * then nothing is cancelled). */
    tr__ctx_cancel_and_drain(&c, t);
    rc = TR_ERROR(-TR_EFUNCKIND, "%s: the callee's function is not a fn function", qualified);
  } else if (rc) {
    tr__ctx_send_cancel(&c); /* cancelled: its late reply finds no dialog */
  } else if (c.final && c.final->body == TR_BODY_RETURN) {
    if (result) {
      *result = c.final->payload;
      c.final->payload = NULL;
    }
  } else {
    rc = tr__ctx_put_outcome(&c);
  }
  tr__ctx_unlink(c.actor->tasks, &c);
  tr__ctx_fini(&c);
  if (rc == 0)
    tr_error_clear(); /* errors.h: a successful call clears the last error */
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
  int want = kind == TR_FUNC_CONTEXT ? PH_STARTED : PH_ACKED;
  const char *what =
      kind == TR_FUNC_CONTEXT ? "tr_portal_open_context" : "tr_portal_open_stream_from";
  rc = tr__rpc_wait_for(c, t, PH_ACKED, what);
  if (rc == 0 && c->phase >= PH_ACKED && !c->kind_wrong && kind == TR_FUNC_CONTEXT)
    rc = tr__rpc_wait_for(c, t, PH_STARTED, what);
  if (rc == 0 && c->phase >= PH_ACKED && c->kind_wrong) {
    tr__ctx_cancel_and_drain(c, t);
    rc = TR_ERROR(-TR_EFUNCKIND, "%s: the callee's function is not a %s function", qualified,
                  tr__rpc_kind_name(kind));
  } else if (rc == 0 && c->phase < want) { /* refused, or failed before started */
    rc = tr__ctx_put_outcome(c);
    if (rc == 0) /* a context function that returned without started */
      rc = TR_ERROR(-TR_EPROTO, "%s returned before calling tr_ctx_started", qualified);
  } else if (rc) {
    tr__ctx_cancel_and_drain(c, t);
  }
  if (rc) {
    tr__ctx_unlink(c->actor->tasks, c);
    tr__ctx_free(c);
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
  tr_ctx_t *c = NULL;
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
  tr_ctx_t *c = NULL;
  int rc = open_dialog(p, qualified, args, TR_FUNC_CONTEXT, opts, &c);
  if (rc)
    return rc;
  rc = tr_scope_open(&c->scope, TR_NO_DEADLINE, 0);
  if (rc) {
    tr__ctx_cancel_and_drain(c, c->task);
    tr__ctx_unlink(c->actor->tasks, c);
    tr__ctx_free(c);
    return rc;
  }
  c->has_scope = 1;
  if (c->done) { /* the callee failed right after started */
    tr__ctx_outcome(c);
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

void tr__portal_take_result(tr_portal_t *p, tr_an_child_t *c) {
  p->has_result = !c->daemon; /* a daemon's portal keeps only pid and status */
  p->result_rc = c->result;
  p->value = c->value;
  c->value = NULL;
  p->error = c->result_error;
  c->result_error = NULL;
  p->pid = c->pid;
  p->status = c->status;
  p->child = NULL;
}

int tr_portal_result(tr_portal_t *p, tr_buf_t **result) {
  if (result)
    *result = NULL;
  if (!p)
    return TR__EINVAL_NULL();
  tr_an_child_t *c = p->child;
  if ((!c && !p->has_result) || (c && c->daemon))
    return TR_ERROR(-TR_EINVAL, "actor %s has no result: not a tr_run_in_actor portal",
                    tr_actor_name(p->actor));
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

int tr_portal_process(const tr_portal_t *p, int *pid, int *status) {
  if (!p)
    return TR__EINVAL_NULL();
  int ppid = p->child ? p->child->pid : p->pid;
  if (ppid <= 0)
    return TR_ERROR(-TR_EINVAL, "actor %s does not run in a child process of this one",
                    tr_actor_name(p->actor));
  if (pid)
    *pid = ppid;
  if (status)
    *status = p->child ? p->child->status : p->status;
  return 0;
}
