/*
 * Actor nurseries: supervision of child actors (tractor's ActorNursery).
 *
 * The nursery lives in the parent task's actor and is only touched there.
 * Supervision speaks the protocol (docs/PROTOCOL.md 8.4), so that a proxy
 * for a child in another process can carry all of it:
 *   - each child's life is a caller-side dialog of the parent (KIND_CHILD,
 *     a cid of its own), opened at spawn;
 *   - the child, as it exits, ends that dialog with its main task's
 *     outcome: Return (with tr_run_in_actor's value) or Error (boxed, with
 *     its code); it never touches the parent's memory;
 *   - a cancel request is Cancel(whole_actor) on that cid, acknowledged by
 *     the child's CancelAck as it exits;
 *   - a lost peer (tr__rpc_peer_lost) ends the dialog like any other: the
 *     child counts as failed with -TR_EIO / -TR_ECLOSED.
 *
 * Cancellation escalates in two steps: the request (every task of the
 * child cancelled; shields hold), then, if the child has not exited within
 * the grace period, a forced cancel (shields ignored), the in-process
 * counterpart of a signal to a child process.  A task stuck in C code
 * that never reaches a cancellation point cannot be stopped in-process;
 * that is what child processes are for.
 */
#include <stdio.h>
#include <sys/random.h>
#include <stdlib.h>

#include <tractor/task.h>

#include "runtime/actor/actor.h"
#include "runtime/error/error.h"
#include "runtime/platform/assert.h"
#include "runtime/rpc/rpc.h"
#include "runtime/sched/worker.h"
#include "runtime/task/task.h"

#define TR_CANCEL_GRACE_DEFAULT (1000LL * 1000 * 1000)

struct tr_actor_nursery {
  tr_scope_t scope; /* the parent's code between open and close */
  tr_task_t *parent;
  tr_an_child_t *children;
  uint64_t live;
  int64_t grace;
  int64_t force_at; /* when the cancel requests escalate */
  uint8_t closing, waiting, cancelling, forced;
  int nfail;
  int first_rc;
  tr_error_t *errors;
};

/* The request: Cancel(whole_actor) on the child's life dialog. */
static void request_cancel(struct tr_actor_nursery *an, tr_an_child_t *c) {
  c->cancel_sent = 1;
  (void)tr__send_cancel(an->parent->actor, c->life->peer, TR_BODY_CANCEL, c->life->cid, 1, 0);
}

static void request_cancel_all(struct tr_actor_nursery *an) {
  for (tr_an_child_t *c = an->children; c; c = c->next)
    if (!c->exited && !c->cancel_sent)
      request_cancel(an, c);
  if (!an->cancelling) {
    an->cancelling = 1;
    an->force_at = tr_now() + an->grace;
  }
}

static uint64_t daemons_live(const struct tr_actor_nursery *an) {
  uint64_t n = 0;
  for (const tr_an_child_t *c = an->children; c; c = c->next)
    n += c->daemon && !c->exited;
  return n;
}

/* The escalation: a forced cancel in-process; for a child process,
 * SIGTERM, then SIGKILL after the grace period (PROTOCOL.md 8.2). */
static void force_cancel(tr_an_child_t *c) {
  if (c->proc)
    tr__rpc_proc_ops->kill(c->actor);
  else
    (void)tr__actor_request_cancel(c->actor, 1);
}

void tr__an_cancel_unacked(tr_an_child_t *c) {
  struct tr_actor_nursery *an = c->an;
  if (c->exited || c->unacked)
    return;
  c->unacked = 1;
  c->cancel_sent = 1; /* it was */
  if (an->waiting)
    tr__task_wake_blocked(an->parent);
}

/* At close: forces the cancel of every child an unacknowledged
 * tr_portal_cancel_actor left running (its wait was the grace). */
static void force_unacked(struct tr_actor_nursery *an) {
  for (tr_an_child_t *c = an->children; c; c = c->next)
    if (c->unacked == 1 && !c->exited) {
      c->unacked = 2;
      force_cancel(c);
    }
}

static void force_cancel_all(struct tr_actor_nursery *an) {
  an->forced = 1;
  for (tr_an_child_t *c = an->children; c; c = c->next)
    if (!c->exited)
      force_cancel(c);
}

/* A child failed (e is owned): kept for tr_portal_result, and the first
 * failure cancels the rest (one cancels all); later ones make a group. */
static void child_failed(struct tr_actor_nursery *an, tr_an_child_t *c, tr_error_t *e) {
  c->result_error = tr__error_copy(e);
  an->nfail++;
  if (an->nfail == 1) {
    an->first_rc = e ? tr_error_code(e) : c->result; /* no error: out of memory */
    an->errors = e;
    request_cancel_all(an);
    tr__task_cancel_scope_local(an->parent, &an->scope);
  } else {
    if (an->nfail == 2) {
      tr_error_t *g = tr__error_group_new("%s", "several actors of a nursery failed");
      if (g && an->errors)
        tr__error_group_add(g, an->errors);
      an->errors = g;
    }
    if (an->errors && e)
      tr__error_group_add(an->errors, e);
    else
      tr__error_free(e);
  }
}

void tr__an_child_ended(tr_ctx_t *life) {
  tr_an_child_t *c = life->child;
  struct tr_actor_nursery *an = c->an;
  tr_msg_t *m = life->final;
  tr_error_t *e = NULL;
  if (c->proc && m && (m->u64 & TR_LIFE_REAPED))
    c->status = (int)(uint32_t)m->u64;
  if (c->lost) {
    /* Failed already when its peer was lost: this is its exit. */
  } else if (m && m->body == TR_BODY_RETURN) {
    c->result = 0;
    c->value = m->payload; /* tr_run_in_actor's value */
    m->payload = NULL;
  } else {
    /* The child's own code decides failure or cancellation; the error is
     * the boxed one the engine makes of any remote Error. */
    tr__ctx_outcome(life);
    c->result = m && m->x_ ? -(int)m->x_->u.error.code : life->out_rc;
    e = life->out_err;
    life->out_err = NULL;
  }
  tr__ctx_unlink(life->actor->tasks, life);
  tr__ctx_free(life);
  c->life = NULL;
  c->exited = 1;
  an->live--;
  if (!c->lost && c->result < 0 && c->result != -TR_ECANCELED) {
    if (!e)
      e = tr__error_new(c->result, NULL, "actor %s failed: %s", tr_actor_name(c->actor),
                        tr_strerror(c->result));
    child_failed(an, c, e);
    e = NULL;
  }
  tr__error_free(e);
  if (an->waiting)
    tr__task_wake_blocked(an->parent);
  if (c->waiter)
    tr__task_wake_blocked(c->waiter); /* a task in tr_portal_result */
}

void tr__an_child_lost(tr_ctx_t *life, int rc, const char *cause) {
  tr_an_child_t *c = life->child;
  if (c->lost)
    return;
  c->lost = 1;
  c->result = rc;
  char uid[TR_UID_LEN(256)];
  if (tr_actor_uid(c->actor, uid, sizeof uid) >= (int)sizeof uid)
    snprintf(uid, sizeof uid, "%s", tr_actor_name(c->actor));
  child_failed(c->an, c,
               tr__error_new(rc, NULL, "actor %s is lost: %s", uid, cause ? cause : "no reason"));
  /* Killed (a process) or force-cancelled: the nursery still waits for
   * its exit report (for a process, its channel reports the reap). */
  force_cancel(c);
  if (c->waiter)
    tr__task_wake_blocked(c->waiter);
}

void tr__an_report_exit(tr_actor_t *a) {
  tr_tasks_t *ts = a->tasks;
  if (!ts->watcher)
    return;
  int rc = ts->main_done ? ts->main_result : -TR_ECANCELED;
  /* The parent cannot have exited: its nursery waits for this message. */
  tr_actor_t *to = tr__rpc_route_to(a, ts->watcher);
  if (rc == 0) {
    tr_buf_t *v = ts->main_value;
    ts->main_value = NULL;
    tr_msg_t *m;
    if (tr_msg_new(&m) == 0) {
      m->body = TR_BODY_RETURN;
      m->cid = ts->watch_cid;
      m->payload = tr__rpc_value(v);
      if (tr__actor_is_proxy(to)) /* the watcher is in another process */
        m->from = tr_actor_dup(a);
      (void)tr__send(to, m);
    } else {
      tr_buf_release(v);
    }
  } else if (ts->main_error || rc == -TR_ECANCELED) {
    tr__send_error(a, to, ts->watch_cid, rc, ts->main_error, NULL);
  } else { /* failed without an error object: say which actor */
    tr_error_t *e =
        tr__error_new(rc, NULL, "actor %s failed: %s", tr_actor_name(a), tr_strerror(rc));
    tr__send_error(a, to, ts->watch_cid, rc, e, NULL);
    tr__error_free(e);
  }
  tr_actor_release(to);
  tr_actor_release(ts->watcher);
  ts->watcher = NULL;
}

int tr_actor_nursery_open(tr_actor_nursery_t **out, const tr_actor_nursery_opts_t *opts) {
  if (!out)
    return TR__EINVAL_NULL();
  *out = NULL;
  tr_task_t *t = tr__task_current();
  if (!t)
    return TR__EPERM_NOTASK();
  struct tr_actor_nursery *an = calloc(1, sizeof(*an));
  if (!an)
    return TR__ENOMEM();
  int rc = tr_scope_open(&an->scope, TR_NO_DEADLINE, 0);
  if (rc) {
    free(an);
    return rc;
  }
  an->parent = t;
  an->grace = (opts && opts->cancel_grace_ns > 0) ? opts->cancel_grace_ns : TR_CANCEL_GRACE_DEFAULT;
  *out = an;
  return 0;
}

int tr_actor_nursery_spawn(tr_actor_nursery_t *an, const char *name, tr_task_fn fn, void *arg,
                           tr_actor_t **ref) {
  return tr__actor_nursery_spawn(an, name, fn, arg, 0, ref);
}

int tr__actor_nursery_spawn(tr_actor_nursery_t *an, const char *name, tr_task_fn fn, void *arg,
                            int daemon, tr_actor_t **ref) {
  return tr__actor_nursery_spawn_rec(an, name, fn, arg, daemon, ref, NULL);
}

/* The checks every spawn makes, and the child's record with its life
 * dialog (not linked yet).  Returns 0 or the refusal. */
static int spawn_begin(tr_actor_nursery_t *an, const char *name, tr_an_child_t **cp,
                       tr_ctx_t **lifep) {
  *cp = NULL;
  *lifep = NULL;
  if (!an)
    return TR__EINVAL_NULL();
  tr_task_t *t = tr__task_current();
  if (!t || t != an->parent)
    return TR_ERROR(-TR_EPERM, "an actor nursery spawns from the task that opened it");
  if (an->closing)
    return TR_ERROR(-TR_ECLOSED, "the actor nursery is closing");
  /* trio's rule, as tractor's start_actor / run_in_actor: in a cancelled
   * scope nothing is started. */
  if (tr__task_cancelled(t))
    return tr__task_observe_cancel(t, "actor %s was not started: the calling task is cancelled",
                                   name ? name : "child");
  tr_an_child_t *c = calloc(1, sizeof(*c));
  tr_ctx_t *life = calloc(1, sizeof(*life));
  if (!c || !life) {
    free(c);
    free(life);
    return TR__ENOMEM();
  }
  c->an = an;
  tr__ctx_init(life, t->actor, SIDE_CALLER, KIND_CHILD, tr__rpc_new_cid(), NULL);
  life->child = c;
  *cp = c;
  *lifep = life;
  return 0;
}

/* The child a (a reference: the actor, or its proxy) is started: its
 * record joins the nursery. */
static void spawn_end(tr_actor_nursery_t *an, tr_an_child_t *c, tr_ctx_t *life, tr_actor_t *a,
                      int daemon, tr_actor_t **ref, tr_an_child_t **rec) {
  tr_task_t *t = an->parent;
  c->daemon = (uint8_t)(daemon != 0);
  c->actor = a;
  c->life = life;
  life->peer = tr__rpc_route_to(t->actor, a); /* where requests go */
  tr_actor_uuid(a, life->peer_uuid);
  tr__ctx_link(t->actor->tasks, life);
  if (!c->proc)
    tr__actor_set_kind(a, daemon ? TR_AK_DAEMON : TR_AK_CHILD);
  c->next = an->children;
  an->children = c;
  an->live++;
  if (an->cancelling) { /* spawned into a cancelled nursery: cancel it */
    request_cancel(an, c);
    if (an->forced)
      force_cancel(c);
  }
  if (ref)
    *ref = tr_actor_dup(a);
  if (rec)
    *rec = c;
}

int tr__actor_nursery_spawn_rec(tr_actor_nursery_t *an, const char *name, tr_task_fn fn, void *arg,
                                int daemon, tr_actor_t **ref, tr_an_child_t **rec) {
  if (ref)
    *ref = NULL;
  if (!fn)
    return TR__EINVAL_NULL();
  tr_an_child_t *c;
  tr_ctx_t *life;
  int rc = spawn_begin(an, name, &c, &life);
  if (rc)
    return rc;
  /* The actor keeps its own copy of the name (c reads it from there). */
  tr_spawn_opts_t o = {.name = name ? name : "child"};
  tr_actor_t *a;
  /* Spawned with its main task ready; the watch is set before its first
   * turn can run: tr_spawn_task_actor schedules it through a message,
   * whose push orders these writes before the child reads them.  Its
   * exit report comes in this actor's turn, after the link below. */
  rc = tr__spawn_task_actor_watched(fn, arg, &o, an->parent->actor, life->cid, &a);
  if (rc) {
    free(c);
    free(life);
    return rc;
  }
  spawn_end(an, c, life, a, daemon, ref, rec);
  return 0;
}

int tr__actor_nursery_spawn_proc(tr_actor_nursery_t *an, tr_proc_req_t *req, int daemon,
                                 tr_actor_t **ref, tr_an_child_t **rec) {
  if (ref)
    *ref = NULL;
  if (!tr__rpc_proc_ops)
    return TR_ERROR(-TR_EINVAL, "no transport for child processes in this build");
  tr_an_child_t *c;
  tr_ctx_t *life;
  int rc = spawn_begin(an, req->name, &c, &life);
  if (rc)
    return rc;
  /* The parent names its child (tractor): a fresh uuid, which the child
   * process's main actor adopts. */
  uint8_t uuid[TR_UUID_LEN];
  if (getrandom(uuid, sizeof uuid, 0) != (ssize_t)sizeof uuid) {
    free(c);
    free(life);
    return TR_ERROR(-TR_EIO, "no random bytes for the child's uuid");
  }
  if (!req->name)
    req->name = "child";
  req->uuid = uuid;
  req->life_cid = life->cid;
  req->parent = an->parent->actor;
  req->grace_ns = an->grace;
  tr_actor_t *px;
  rc = tr__rpc_proc_ops->spawn(req, &px);
  if (rc) {
    free(c);
    free(life);
    return rc;
  }
  c->proc = 1;
  c->pid = req->pid;
  c->status = -1;
  spawn_end(an, c, life, px, daemon, ref, rec);
  return 0;
}

int tr_actor_nursery_cancel(tr_actor_nursery_t *an) {
  if (!an)
    return TR__EINVAL_NULL();
  tr_task_t *t = tr__task_current();
  if (!t || t->actor != an->parent->actor)
    return TR_ERROR(-TR_EPERM,
                    "tr_actor_nursery_cancel: only a task of the nursery's actor may cancel it");
  request_cancel_all(an);
  tr__task_cancel_scope_local(t, &an->scope);
  return 0;
}

int tr_actor_nursery_close(tr_actor_nursery_t *an) {
  if (!an)
    return TR__EINVAL_NULL();
  tr_task_t *t = tr__task_current();
  if (!t || t != an->parent)
    return TR_ERROR(-TR_EPERM,
                    "tr_actor_nursery_close: only the task that opened the nursery may close it");
  an->closing = 1;
  while (an->live > 0) {
    force_unacked(an);
    if (!an->cancelling && tr__task_cancelled(t))
      request_cancel_all(an); /* the parent is cancelled: so are children */
    if (!an->cancelling && an->live == daemons_live(an))
      request_cancel_all(an); /* only daemons left: end them (tractor) */
    an->waiting = 1;
    if (an->cancelling && !an->forced) {
      if (tr_now() >= an->force_at) {
        force_cancel_all(an);
      } else {
        t->blocked_on = "tr_actor_nursery_close (children being cancelled)";
        tr__task_wait_until(t, an->force_at);
      }
    } else {
      /* Cancellable until the children are being cancelled, so that a
       * cancel of the parent is noticed here; then only exits wake us. */
      t->blocked_on = "tr_actor_nursery_close";
      tr__task_block(t, !an->cancelling);
    }
    an->waiting = 0;
  }
  TR_ASSERT(t->scope == &an->scope);
  t->scope = an->scope.parent_;
  an->scope.open_ = 0;
  int rc = 0;
  if (an->nfail > 0) {
    rc = an->nfail == 1 ? an->first_rc : -TR_EGROUP;
    tr__error_put(an->errors);
  } else if (tr__task_cancelled(t)) {
    rc = TR_ERROR(-TR_ECANCELED, "tr_actor_nursery_close: an enclosing scope is cancelled");
  }
  while (an->children) {
    tr_an_child_t *c = an->children;
    an->children = c->next;
    if (c->portal)
      tr__portal_take_result(c->portal, c);
    tr_buf_release(c->value);
    tr__error_free(c->result_error);
    tr_actor_release(c->actor);
    free(c);
  }
  free(an);
  return rc;
}
