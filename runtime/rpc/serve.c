/*
 * The callee's side (docs/PROTOCOL.md sections 5 and 8): a daemon's
 * service nursery, Start handling (refusals before any task), one task
 * per call that answers it, dialog cancels from the caller, the dispatch
 * of every protocol message that reaches a task actor, and the one-shot
 * children of tr_run_in_actor.
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

/* ---- callee side ------------------------------------------------------------ */

/* Why the function's scope was cancelled, for its ContextCancelled: the
 * canceller and a phrase (PROTOCOL.md 8.3), or NULL when it was not. */
const char *tr__cancel_cause(tr_ctx_t *c, tr_tasks_t *ts, const char **why, char *buf) {
  if (c->self_cancel) {
    *why = "by itself";
    return tr__actor_uid_text(c->actor, buf);
  }
  if (c->cancel_req) {
    /* Whoever sent Cancel(cid), as its envelope named it (a proxy's
     * pointer would name the proxy). */
    *why = "by its caller-side peer";
    return c->cancel_req_uid.name ? tr__uid_text(&c->cancel_req_uid, buf)
                                  : tr__actor_uid_text(c->peer, buf);
  }
  if (ts->rpc->cancel_by) {
    *why = memcmp(ts->rpc->cancel_by->uuid, c->peer_uuid, TR_UUID_LEN) == 0 ? "by its caller"
                                                                            : "by a remote peer";
    return tr__uid_text(ts->rpc->cancel_by, buf);
  }
  if (ts->stopping) {
    *why = "because its actor was cancelled";
    return tr__actor_uid_text(c->actor, buf);
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
    rc = c->entry->fn(c, c->args, &result); /* its args were checked (on_start) */
    if (rc == 0)
      rc = tr__rpc_check_payload(c->entry, TR__RPC_RETURN, result);
    if (rc == 0 && TR_UNLIKELY(tr__actor_is_proxy(c->peer)) &&
        tr_buf_len(result) > TR_REMOTE_VALUE_MAX) { /* named only when refused */
      char what[300];
      snprintf(what, sizeof what, "the result of %s.%s", c->entry->ns, c->entry->name);
      rc = tr__rpc_fits(c->peer, result, what); /* the caller gets this error instead */
    }
    c->task_scope = NULL;
    tr_scope_close(&s);
  }
  const char *why = NULL;
  char cb[TR_UID_TEXT];
  const char *canceller = rc == -TR_ECANCELED ? tr__cancel_cause(c, ts, &why, cb) : NULL;
  if (c->overran) {
    /* Its Error(StreamOverrun) ended the dialog (tr__on_yield_overrun):
     * one final message only. */
    tr_buf_release(result);
  } else if (rc == 0) {
    if ((c->kind == TR_FUNC_STREAM || c->opened) && !c->tx_stop) {
      c->tx_stop = 1;
      (void)tr__send_body(c->peer, TR_BODY_STOP, c->cid, 0, NULL);
    }
    (void)tr__send_body(c->peer, TR_BODY_RETURN, c->cid, 0, result);
  } else if (canceller) {
    tr_buf_release(result);
    tr_error_t *e = tr__error_new(
        -TR_ECTXCANCELED, "ContextCancelled", "%s task %s in actor %s was cancelled %s",
        tr__rpc_kind_name(c->kind), c->entry->name, tr_actor_name(self), why);
    tr__error_set_canceller(e, canceller);
    tr__send_error(self, c->peer, c->cid, -TR_ECTXCANCELED, e, canceller);
    tr__error_free(e);
  } else {
    tr_buf_release(result);
    /* -TR_ECANCELED that nobody caused (the function's own scope, say) is
     * a failure of the function: boxed for the caller, who was not
     * cancelled (an unboxed -TR_ECANCELED would say it was). */
    tr__send_error(self, c->peer, c->cid, rc == -TR_ECANCELED ? -TR_EREMOTE : rc, tr_error_last(),
                   NULL);
  }
  if (c->cancel_req)
    (void)tr__send_cancel(self, c->peer, TR_BODY_CANCEL_ACK, c->cid, 0, 1);
  /* Other tasks of this actor may be inside an operation on the context
   * (a publisher sending to a subscriber): they see `done` and leave. */
  c->done = 1;
  tr_task_t *t = c->task;
  while (c->users) {
    tr__ctx_notify(c);
    tr__ctx_wait_until(c, t, TR_NO_DEADLINE,
                       "the end of its RPC call (other tasks still use the context)");
  }
  tr__ctx_unlink(ts, c);
  tr__ctx_free(c);
  /* The call's failure went to its caller: the daemon keeps serving. */
  return 0;
}

/* The caller of Start m by uuid: Start names it; an in-process Start
 * without the field is from its sender. */
static void start_caller(const tr_msg_t *m, uint8_t *u) {
  if (m->x_ && m->x_->u.start.has_caller)
    memcpy(u, m->x_->u.start.caller.uuid, TR_UUID_LEN);
  else
    tr_actor_uuid(m->from, u);
}

/* 1 when this actor serves a dialog of cid for the same caller already: a
 * cid is unique per caller, so that is a broken peer. */
static int start_is_duplicate(tr_tasks_t *ts, const tr_msg_t *m) {
  uint8_t u[TR_UUID_LEN];
  start_caller(m, u);
  for (const tr_ctx_t *c = ts->rpc->dialogs; c; c = c->next)
    if (c->cid == m->cid && c->side == SIDE_CALLEE && memcmp(c->peer_uuid, u, TR_UUID_LEN) == 0)
      return 1;
  return 0;
}

static int serve_main(void *arg);
static int run_main(void *arg);
static void dropped(tr_worker_t *w, tr_actor_t *a, const tr_msg_t *m, int level, const char *why);

/* Handles a Start; returns 1 when it kept m (queued until the service is
 * up), 0 when the caller may dispose of it. */
static int on_start(tr_actor_t *a, tr_msg_t *m) {
  tr_tasks_t *ts = a->tasks;
  tr_actor_t *caller = m->from;
  struct tr_envx *x = m->x_;
  if (!caller)
    return 0; /* nobody to answer: a malformed call (in-process senders set from) */
  /* Only a daemon (its main task is serve_main, set before its first
   * turn) will serve: a call to any other task actor, the root included,
   * is refused at once rather than kept forever. */
  int will_serve = ts->main && (ts->main->fn == serve_main || ts->main->fn == run_main);
  if (will_serve && !ts->rpc->service && !ts->rpc->serve_done && !ts->stopping) {
    /* The daemon's main task has not opened its service nursery yet (the
     * call raced its first turn): keep the call, in order, until it has. */
    m->next_ = NULL;
    tr_msg_t **pp = &ts->rpc->early_starts;
    while (*pp)
      pp = &(*pp)->next_;
    *pp = m;
    return 1;
  }
  const tr__rpc_entry_t *e = NULL;
  int rc;
  if (ts->stopping)
    /* Going, as portal.h says of a call that reaches an actor as it goes
     * (-TR_ECANCELED would tell the caller that it is cancelled). */
    rc = TR_ERROR(-TR_ECLOSED, "actor %s is being cancelled", tr_actor_name(a));
  else if (!ts->rpc->service)
    rc = TR_ERROR(-TR_ECLOSED, "actor %s does not serve calls", tr_actor_name(a));
  else if (!x || !x->u.start.ns || !x->u.start.func)
    rc = TR_ERROR(-TR_EPROTO, "Start without a function name");
  else if ((e = ts->rpc->last_served) && strcmp(x->u.start.func, e->name) == 0 &&
           strcmp(x->u.start.ns, e->ns) == 0)
    rc = 0; /* resolved against this actor's enable list before */
  else if ((rc = tr__rpc_resolve_parts(x->u.start.ns, x->u.start.func,
                                       (const char *const *)ts->rpc->enable, ts->rpc->n_enable, 0,
                                       &e)) == 0)
    ts->rpc->last_served = e;
  if (rc == 0 && start_is_duplicate(ts, m)) {
    /* Answering would put a final message on the cid of the dialog that
     * runs: it breaks the protocol and is dropped (PROTOCOL.md 9). */
    dropped(tr__worker_self(), a, m, TR_LOG_WARN,
            "a second Start for a dialog that runs (same caller, same cid)");
    return 0;
  }
  if (rc == 0) /* typed arguments: before any task (PROTOCOL.md 5, step 3) */
    rc = tr__rpc_check_payload(e, TR__RPC_ARGS, m->payload);
  if (rc) {
    /* Refused before any task starts (tractor's ModuleNotExposed etc.). */
    tr_error_t *err = tr__error_take();
    tr__send_error(a, caller, m->cid, rc, err, NULL);
    tr__error_free(err);
    return 0;
  }
  tr_ctx_t *c = malloc(sizeof(*c));
  if (!c) {
    tr__send_error(a, caller, m->cid, -TR_ENOMEM, NULL, NULL);
    return 0;
  }
  tr_ctx_opts_t opts = {.window = (uint32_t)m->u64, .overrun = (int)((m->u64 >> 32) & 1)};
  if (opts.window == 0)
    opts.window = tr__ctx_default_window(m->from);
  tr__ctx_init(c, a, SIDE_CALLEE, e->kind, m->cid, &opts);
  c->phase = PH_ACKED; /* StartAck goes out before the task can send */
  c->entry = e;
  c->args = m->payload;
  m->payload = NULL;
  /* The caller by uuid (through a proxy, m->from is the proxy). */
  start_caller(m, c->peer_uuid);
  c->peer = m->from;
  m->from = NULL;
  if (x->has_src) { /* crossed a channel: its src names the caller */
    c->peer_name = x->src.name;
    x->src.name = NULL;
  }
  rc = tr__nursery_spawn_internal(ts->rpc->service, serve_request, c, e->name);
  if (rc) {
    tr__send_error(a, c->peer, c->cid, rc, NULL, NULL);
    tr__ctx_free(c);
    return 0;
  }
  tr__ctx_link(ts, c);
  (void)tr__send_from(a, c->peer, TR_BODY_START_ACK, c->cid, (uint64_t)e->kind);
  return 0;
}

static int on_cancel(tr_actor_t *a, tr_msg_t *m);

/* Answers the calls that arrived before the service was up (or, once it has
 * ended, refuses them), and the Cancels that came behind them, in order. */
static void run_early_starts(tr_worker_t *w, tr_actor_t *a) {
  tr_tasks_t *ts = a->tasks;
  while (ts->rpc->early_starts) {
    tr_msg_t *m = ts->rpc->early_starts;
    ts->rpc->early_starts = m->next_;
    m->next_ = NULL;
    if (!(m->body == TR_BODY_START ? on_start(a, m) : on_cancel(a, m)))
      tr__msg_dispose(w, m);
  }
}

/* The actor that sent Cancel m, by uuid: the envelope's src when it
 * crossed a channel, else its sender. */
static void cancel_requester(const tr_msg_t *m, uint8_t *u) {
  if (m->x_ && m->x_->has_src)
    memcpy(u, m->x_->src.uuid, TR_UUID_LEN);
  else
    tr_actor_uuid(m->from, u);
}

/* Keeps Cancel m behind its Start when that is still waiting for the
 * service (early_starts), so that it cancels the call once the call
 * starts instead of finding no dialog now and being lost (the call would
 * then run to its end for a caller that has gone).  Returns 1 when kept. */
static int keep_early_cancel(tr_tasks_t *ts, tr_msg_t *m, const uint8_t *req) {
  tr_msg_t **pp = &ts->rpc->early_starts;
  int found = 0;
  for (; *pp; pp = &(*pp)->next_) {
    uint8_t u[TR_UUID_LEN];
    if ((*pp)->body == TR_BODY_START && (*pp)->cid == m->u64 &&
        (start_caller(*pp, u), memcmp(u, req, TR_UUID_LEN) == 0))
      found = 1;
  }
  if (found) {
    m->next_ = NULL;
    *pp = m;
  }
  return found;
}

/* Handles a Cancel; returns 1 when it kept m (behind its early Start). */
static int on_cancel(tr_actor_t *a, tr_msg_t *m) {
  struct tr_envx *x = m->x_;
  if (x && x->u.cancel.whole_actor) {
    tr__on_cancel_actor(a, m);
    return 0;
  }
  tr_ctx_t *c = tr__find_ctx(a->tasks, m->u64, m);
  /* Only the dialog's caller may cancel it: the requester, as the
   * envelope names it, must be the caller Start named. */
  uint8_t req[TR_UUID_LEN];
  cancel_requester(m, req);
  if (!c && keep_early_cancel(a->tasks, m, req))
    return 1;
  if (!c || c->side != SIDE_CALLEE || memcmp(req, c->peer_uuid, TR_UUID_LEN) != 0) {
    (void)tr__send_cancel(a, m->from, TR_BODY_CANCEL_ACK, m->u64, 0, 0);
    return 0;
  }
  tr__uid_fini(&c->cancel_req_uid);
  (void)tr__msg_sender(&c->cancel_req_uid, m); /* out of memory: left empty */
  c->cancel_req = 1;
  if (c->task_scope)
    tr__task_cancel_scope_local(c->task, c->task_scope);
  tr__ctx_notify(c);
  return 0;
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
    } else if (m->cid == 0) {
      /* cid 0 is "no dialog" (PROTOCOL.md 1): serving it would answer on
       * cid 0, with an Error the engine never sends. */
      why = "a Start on cid 0 opens no dialog";
      level = TR_LOG_WARN;
    } else if (on_start(a, m)) {
      return;
    }
    break;
  case TR_BODY_CANCEL:
    /* A whole actor's may come from nobody: tr_actor_cancel_soon of a
     * proxy of this actor, in another process (no CancelAck then). */
    if (!(m->x_ && m->x_->u.cancel.whole_actor) && (m->u64 != m->cid || m->cid == 0)) {
      /* The envelope's cid is the dialog, as for every other body; a
       * Cancel whose own cid says otherwise is malformed (PROTOCOL.md 8.1)
       * and cancels nothing, and cid 0 is no dialog (its CancelAck would
       * be on cid 0). */
      why = m->cid ? "a Cancel whose cid differs from its envelope's" : "a Cancel of cid 0";
      level = TR_LOG_WARN;
    } else if (m->from || (m->x_ && m->x_->u.cancel.whole_actor)) {
      if (on_cancel(a, m))
        return;
    } else {
      why = "a Cancel without a sender (only a dialog's caller may cancel it)";
      level = TR_LOG_WARN;
    }
    break;
  case TR_BODY_YIELD:
    if ((c = tr__find_ctx(ts, m->cid, m)) && !c->done && !c->rx_stop && !c->overran) {
      tr__on_yield(c, m);
      return;
    }
    why = !c           ? "no such dialog (it ended, or its caller left)"
          : c->done    ? "the dialog has ended"
          : c->overran ? "the dialog failed on an overrun (its Error went out)"
                       : "a value after the sender's Stop";
    level = c && !c->done && !c->overran ? TR_LOG_WARN : TR_LOG_DEBUG;
    break;
  case TR_BODY_CREDIT:
    if ((c = tr__find_ctx(ts, m->cid, m))) {
      /* Never more than a window: a peer's excess credit (a foreign
       * peer's bug) must not let this side flood it. */
      c->credit = (uint32_t)(c->credit + m->u64 > c->window ? c->window : c->credit + m->u64);
      tr__ctx_notify(c);
    } else {
      why = "no such dialog (it ended)";
    }
    break;
  case TR_BODY_STOP:
    if ((c = tr__find_ctx(ts, m->cid, m))) {
      c->rx_stop = 1;
      tr__ctx_notify(c);
    } else {
      why = "no such dialog (it ended)";
    }
    break;
  case TR_BODY_START_ACK:
    if ((c = tr__find_ctx(ts, m->cid, m)) && c->side == SIDE_CALLER) {
      if (c->phase == PH_CALLING) /* a second StartAck changes nothing */
        c->phase = PH_ACKED;
      /* The callee by uuid: the envelope's src when the StartAck crossed a
       * channel, else its sender. */
      if (m->x_ && m->x_->has_src) {
        memcpy(c->peer_uuid, m->x_->src.uuid, TR_UUID_LEN);
        if (c->kind != TR_FUNC_FN && !c->peer_name) { /* a run has no tr_ctx_peer */
          c->peer_name = m->x_->src.name;
          m->x_->src.name = NULL;
        }
      } else if (m->from)
        tr_actor_uuid(m->from, c->peer_uuid);
      c->kind_wrong = m->u64 != c->kind;
      if (c->kind != TR_FUNC_FN || c->kind_wrong) /* a run waits only for these */
        tr__ctx_notify(c);
    } else {
      why = c ? "a StartAck for a dialog this actor serves" : "no such dialog (its caller left)";
      level = c ? TR_LOG_WARN : TR_LOG_DEBUG;
    }
    break;
  case TR_BODY_STARTED:
    if ((c = tr__find_ctx(ts, m->cid, m)) && c->side == SIDE_CALLER && c->phase == PH_ACKED &&
        !c->done) {
      c->phase = PH_STARTED;
      c->first = m;
      tr__ctx_notify(c);
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
    if ((c = tr__find_ctx(ts, m->cid, m)) && c->side == SIDE_CALLER && !c->done) {
      tr__ctx_finish(c, m);
      return;
    }
    why = !c        ? "a late reply to an abandoned call"
          : c->done ? "the dialog has ended already"
                    : "a reply to a dialog this actor serves";
    level = c && !c->done ? TR_LOG_WARN : TR_LOG_DEBUG;
    break;
  case TR_BODY_CANCEL_ACK:
    if ((c = tr__find_ctx(ts, m->cid, m)) && c->side == SIDE_CALLER &&
        c->kind == KIND_ACTOR_CANCEL) {
      c->done = 1;
      tr__ctx_notify(c);
    } else if (c && c->kind == KIND_CHILD) {
      /* A nursery child's ack: its exit report follows, and decides. */
    } else {
      /* PROTOCOL.md 8.1: the ack of a dialog cancel follows its final
       * message, which ended the dialog. */
      why = "the dialog it acknowledges has ended (its final message came first)";
    }
    break;
  case TR_BODY_LOCAL_PEER_LOST:
    if (m->payload && tr_buf_len(m->payload) >= TR_UUID_LEN) {
      const uint8_t *p = tr_buf_data(m->payload);
      size_t clen = tr_buf_len(m->payload) - TR_UUID_LEN;
      char cause[256];
      if (clen >= sizeof cause)
        clen = sizeof cause - 1;
      memcpy(cause, p + TR_UUID_LEN, clen);
      cause[clen] = '\0';
      tr__rpc_peer_lost(a, p, m->cid, -(int)m->u64, cause);
    } else {
      why = "a peer-lost notice without a uuid";
      level = TR_LOG_WARN;
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
  if (m->body == TR_BODY_START) {
    /* Named: the bare code's text would not say which actor. */
    tr_error_t *e = tr__error_new(-TR_ECLOSED, NULL, "actor %s has exited", tr_actor_name(dead));
    tr__send_error(dead, m->from, m->cid, -TR_ECLOSED, e, NULL);
    tr__error_free(e);
  } else if (m->body == TR_BODY_CANCEL && m->x_ && m->x_->u.cancel.whole_actor)
    (void)tr__send_cancel(dead, m->from, TR_BODY_CANCEL_ACK, m->cid, 1, 1); /* gone: done */
}

void tr__rpc_actor_free(tr_tasks_t *ts) {
  while (ts->rpc->early_starts) { /* never served: tell the callers */
    tr_msg_t *m = ts->rpc->early_starts;
    ts->rpc->early_starts = m->next_;
    /* A Cancel behind its Start needs no answer: the Error ends the call. */
    if (m->from && m->body == TR_BODY_START) {
      tr_error_t *e = tr__error_new(-TR_ECLOSED, NULL, "the actor exited before it served the call");
      tr__send_error(NULL, m->from, m->cid, -TR_ECLOSED, e, NULL);
      tr__error_free(e);
    }
    tr_msg_free(m);
  }
  for (size_t i = 0; i < ts->rpc->n_enable; i++)
    free(ts->rpc->enable[i]);
  free(ts->rpc->enable);
  ts->rpc->enable = NULL;
  ts->rpc->n_enable = 0;
  TR_ASSERT(ts->rpc->dialogs == NULL && ts->rpc->cancel_acks == NULL);
}

/* ---- daemons ----------------------------------------------------------------- */

typedef struct serve_spec {
  char **enable;
  size_t n_enable;
  void (*on_exit)(void); /* set: the actor's on_exit frees the spec */
} serve_spec_t;

static void strv_free(char **v, size_t n);

/* The on_exit of a daemon spawned with one (tr__rpc_spawn_served). */
static void serve_exit(void *arg) {
  serve_spec_t *spec = arg;
  spec->on_exit();
  strv_free(spec->enable, spec->n_enable); /* NULL once serve_main took it */
  free(spec);
}

static int serve_main(void *arg) {
  serve_spec_t *spec = arg;
  tr_actor_t *self = tr_self();
  tr_tasks_t *ts = self->tasks;
  ts->rpc->enable = spec->enable;
  ts->rpc->n_enable = spec->n_enable;
  spec->enable = NULL;
  if (!spec->on_exit)
    free(spec);
  /* Findable before it serves (as tractor registers before it handles its
   * parent's requests): whoever got an answer from it can find it.  Calls
   * that come meanwhile wait in early_starts. */
  if (tr__rpc_node_ops)
    tr__rpc_node_ops->started();
  tr_nursery_t *n;
  int rc = tr_nursery_open(&n);
  if (rc) {
    if (tr__rpc_node_ops)
      tr__rpc_node_ops->exiting();
    return rc;
  }
  ts->rpc->service = n;
  run_early_starts(tr__worker_self(), self);
  /* Serve until cancelled: requests run as tasks in the service nursery. */
  while (tr_sleep(3600LL * 1000 * 1000 * 1000) == 0)
    ;
  if (tr__rpc_node_ops)
    tr__rpc_node_ops->exiting();
  ts->rpc->service = NULL; /* refuse new calls; the ones running are cancelled */
  ts->rpc->serve_done = 1;
  tr_nursery_cancel(n);
  tr_nursery_close(n);
  return 0; /* a cancelled daemon ended normally */
}

/* The spawn kind in force (TR_SPAWN_THREAD or TR_SPAWN_PROCESS): opts',
 * else TR_SPAWN's, else a thread.  -TR_EINVAL with an error object for a
 * value that is neither (a typo would otherwise run the child quietly in
 * the wrong place). */
static int spawn_kind(const tr_actor_opts_t *opts) {
  if (opts && opts->spawn) {
    if (opts->spawn == TR_SPAWN_THREAD || opts->spawn == TR_SPAWN_PROCESS)
      return opts->spawn;
    return TR_ERROR(-TR_EINVAL,
                    "opts.spawn is %d: TR_SPAWN_DEFAULT (0), TR_SPAWN_THREAD (1) or "
                    "TR_SPAWN_PROCESS (2) expected",
                    opts->spawn);
  }
  const char *e = getenv("TR_SPAWN");
  if (!e || !*e || strcmp(e, "thread") == 0)
    return TR_SPAWN_THREAD;
  if (strcmp(e, "process") == 0)
    return TR_SPAWN_PROCESS;
  return TR_ERROR(-TR_EINVAL, "TR_SPAWN is \"%.64s\": \"thread\" or \"process\" expected", e);
}

static void strv_free(char **v, size_t n) {
  for (size_t i = 0; v && i < n; i++)
    free(v[i]);
  free(v);
}

static int strv_copy(char *const *src, size_t n, char ***out) {
  *out = NULL;
  if (!n)
    return 0;
  char **v = calloc(n, sizeof(char *));
  if (!v)
    return -TR_ENOMEM;
  for (size_t i = 0; i < n; i++)
    if (!(v[i] = strdup(src[i]))) {
      strv_free(v, n);
      return -TR_ENOMEM;
    }
  *out = v;
  return 0;
}

int tr_start_actor(tr_actor_nursery_t *an, const char *name, const char *const *enable,
                   size_t n_enable, tr_portal_t **out) {
  tr_actor_opts_t o = {.enable = enable, .n_enable = n_enable};
  return tr_start_actor_opts(an, name, &o, out);
}

/* An enable list of opts: -TR_EINVAL, with an error object, when it cannot
 * be read. */
static int check_enable(const char *const *enable, size_t n_enable) {
  if (n_enable && !enable)
    return TR_ERROR(-TR_EINVAL, "the enable list is NULL but says it has %zu entries", n_enable);
  for (size_t i = 0; i < n_enable; i++)
    if (!enable[i])
      return TR_ERROR(-TR_EINVAL, "entry %zu of the enable list is NULL", i);
  return 0;
}

int tr_start_actor_opts(tr_actor_nursery_t *an, const char *name, const tr_actor_opts_t *opts,
                        tr_portal_t **out) {
  if (!out)
    return TR__EINVAL_NULL();
  *out = NULL;
  const char *const *enable = opts ? opts->enable : NULL;
  size_t n_enable = opts ? opts->n_enable : 0;
  int rc = check_enable(enable, n_enable);
  if (rc)
    return rc;
  int kind = spawn_kind(opts);
  if (kind < 0)
    return kind;
  tr_portal_t *p = calloc(1, sizeof(*p));
  if (!p)
    return TR__ENOMEM();
  tr_an_child_t *c;
  if (kind == TR_SPAWN_PROCESS) {
    tr_proc_req_t req = {.name = name,
                         .enable = (char *const *)enable,
                         .n_enable = n_enable,
                         .exe = opts ? opts->exe : NULL};
    rc = tr__actor_nursery_spawn_proc(an, &req, 1, &p->actor, &c);
  } else {
    serve_spec_t *spec = calloc(1, sizeof(*spec));
    if (!spec || strv_copy((char *const *)enable, n_enable, &spec->enable) != 0) {
      free(spec);
      free(p);
      return TR__ENOMEM();
    }
    spec->n_enable = n_enable;
    rc = tr__actor_nursery_spawn_rec(an, name, serve_main, spec, 1, &p->actor, &c);
    if (rc) {
      strv_free(spec->enable, n_enable);
      free(spec);
    }
  }
  if (rc) {
    free(p);
    return rc;
  }
  p->child = c; /* for tr_portal_cancel_actor's escalation */
  p->child_of = tr_actor_id(tr_self());
  c->portal = p;
  *out = p;
  return 0;
}

/* ---- run_in_actor ---------------------------------------------------------- */

typedef struct run_spec {
  const tr__rpc_entry_t *entry;
  tr_buf_t *args; /* a reference */
  char **enable;  /* what it serves meanwhile: the function's namespace and opts' */
  size_t n_enable;
} run_spec_t;

static void run_spec_free(run_spec_t *spec);

/* The child's main task: one call, its result reported with the child's
 * exit (tasks.c hands main_value to the nursery's record).  While the call
 * runs the child serves calls to its namespaces, as every tractor actor
 * does (two run_in_actor siblings may call each other); once it returns,
 * the calls still running are cancelled and new ones refused, as a
 * daemon's at its cancel. */
static int run_main(void *arg) {
  run_spec_t *spec = arg;
  tr_tasks_t *ts = tr_self()->tasks;
  ts->rpc->enable = spec->enable; /* freed with the actor */
  ts->rpc->n_enable = spec->n_enable;
  spec->enable = NULL;
  tr_buf_t *value = NULL;
  int rc = tr__rpc_check_payload(spec->entry, TR__RPC_ARGS, spec->args);
  if (tr__rpc_node_ops)
    tr__rpc_node_ops->started();
  tr_nursery_t *n = NULL;
  if (rc == 0 && (rc = tr_nursery_open(&n)) == 0) {
    ts->rpc->service = n;
    run_early_starts(tr__worker_self(), tr_self());
    rc = spec->entry->fn(NULL, spec->args, &value);
    tr_error_t *err = rc ? tr__error_take() : NULL; /* the child's failure, kept */
    ts->rpc->service = NULL;
    ts->rpc->serve_done = 1;
    tr_nursery_cancel(n);
    tr_nursery_close(n);
    if (err)
      tr__error_put(err);
  }
  if (tr__rpc_node_ops)
    tr__rpc_node_ops->exiting();
  run_spec_free(spec); /* its enable list is the actor's now */
  if (rc == 0)
    tr_self()->tasks->main_value = value;
  else
    tr_buf_release(value);
  return rc;
}

/* A run_in_actor child's spec: function e with args (a new reference),
 * serving the namespace of `qualified` and the n_enable of enable
 * (tractor's run_in_actor: the function's module and enable_modules).
 * NULL when out of memory. */
static run_spec_t *run_spec_new(const tr__rpc_entry_t *e, const char *qualified,
                                const tr_buf_t *args, char *const *enable, size_t n_enable) {
  run_spec_t *spec = calloc(1, sizeof(*spec));
  const char *dot = strrchr(qualified, '.');
  if (!spec || !dot || !(spec->enable = calloc(n_enable + 1, sizeof(char *))) ||
      !(spec->enable[0] = strndup(qualified, (size_t)(dot - qualified)))) {
    if (spec)
      free(spec->enable);
    free(spec);
    return NULL;
  }
  spec->n_enable = 1;
  for (size_t i = 0; i < n_enable; i++, spec->n_enable++)
    if (!(spec->enable[spec->n_enable] = strdup(enable[i]))) {
      strv_free(spec->enable, spec->n_enable);
      free(spec);
      return NULL;
    }
  spec->entry = e;
  spec->args = tr__rpc_value(tr_buf_ref((tr_buf_t *)args));
  return spec;
}

static void run_spec_free(run_spec_t *spec) {
  strv_free(spec->enable, spec->n_enable);
  tr_buf_release(spec->args);
  free(spec);
}

/* Resolves a run_in_actor function: the child enables exactly its
 * namespace (tractor's run_in_actor enables the function's module). */
static int resolve_run(const char *qualified, const tr__rpc_entry_t **e) {
  int rc = tr__rpc_resolve(qualified, NULL, 0, TR_FUNC_FN, e);
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
    rc = tr__rpc_resolve(qualified, enable, 1, TR_FUNC_FN, e);
  }
  return rc;
}

int tr_run_in_actor(tr_actor_nursery_t *an, const char *name, const char *qualified,
                    const tr_buf_t *args, tr_portal_t **out) {
  return tr_run_in_actor_opts(an, name, qualified, args, NULL, out);
}

int tr_run_in_actor_opts(tr_actor_nursery_t *an, const char *name, const char *qualified,
                         const tr_buf_t *args, const tr_actor_opts_t *opts, tr_portal_t **out) {
  if (!out)
    return TR__EINVAL_NULL();
  *out = NULL;
  if (!an || !qualified)
    return TR__EINVAL_NULL();
  const tr__rpc_entry_t *e;
  char *const *enable = opts ? (char *const *)opts->enable : NULL;
  size_t n_enable = opts ? opts->n_enable : 0;
  int rc = check_enable((const char *const *)enable, n_enable);
  if (rc)
    return rc;
  int kind = spawn_kind(opts);
  if (kind < 0)
    return kind;
  int proc = kind == TR_SPAWN_PROCESS;
  /* Another program's functions are its own business (it answers). */
  rc = proc && opts && opts->exe ? 0 : resolve_run(qualified, &e);
  if (rc)
    return rc;
  tr_portal_t *p = calloc(1, sizeof(*p));
  if (!p)
    return TR__ENOMEM();
  tr_an_child_t *c;
  if (proc) {
    tr_proc_req_t req = {.name = name,
                         .run_func = qualified,
                         .args = args,
                         .enable = enable,
                         .n_enable = n_enable,
                         .exe = opts ? opts->exe : NULL};
    rc = tr__actor_nursery_spawn_proc(an, &req, 0, &p->actor, &c);
  } else {
    run_spec_t *spec = run_spec_new(e, qualified, args, enable, n_enable);
    if (!spec) {
      free(p);
      return TR__ENOMEM();
    }
    rc = tr__actor_nursery_spawn_rec(an, name, run_main, spec, 0, &p->actor, &c);
    if (rc) {
      run_spec_free(spec);
    } else {
      tr__actor_set_kind(p->actor, TR_AK_RUN_IN_ACTOR);
    }
  }
  if (rc) {
    free(p);
    return rc;
  }
  p->child = c;
  p->child_of = tr_actor_id(tr_self());
  c->portal = p;
  *out = p;
  return 0;
}

int tr__rpc_spawn_served(const char *name, char *const *enable, size_t n_enable,
                         const char *run_func, tr_buf_t *args, tr_actor_t *watcher, uint64_t cid,
                         const uint8_t *uuid, void (*on_exit)(void), tr_actor_t **out) {
  tr_spawn_opts_t o = {.name = name ? name : "child"};
  int rc;
  if (run_func) {
    const tr__rpc_entry_t *e;
    if ((rc = resolve_run(run_func, &e)) != 0)
      return rc;
    run_spec_t *spec = run_spec_new(e, run_func, args, enable, n_enable);
    if (!spec)
      return TR__ENOMEM();
    rc = tr__spawn_task_actor_as(run_main, spec, &o, watcher, cid, uuid, out);
    if (rc) {
      run_spec_free(spec);
    } else {
      tr__actor_set_kind(*out, TR_AK_RUN_IN_ACTOR);
    }
    return rc;
  }
  serve_spec_t *spec = calloc(1, sizeof(*spec));
  if (!spec || strv_copy(enable, n_enable, &spec->enable) != 0) {
    free(spec);
    return TR__ENOMEM();
  }
  spec->n_enable = n_enable;
  spec->on_exit = on_exit;
  if (on_exit)
    o.on_exit = serve_exit;
  rc = tr__spawn_task_actor_as(serve_main, spec, &o, watcher, cid, uuid, out);
  if (rc) {
    if (!on_exit) { /* with on_exit, an actor that was made frees it */
      strv_free(spec->enable, n_enable);
      free(spec);
    }
  } else {
    tr__actor_set_kind(*out, TR_AK_DAEMON);
  }
  return rc;
}
