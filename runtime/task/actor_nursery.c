/*
 * Actor nurseries: supervision of child actors (tractor's ActorNursery).
 *
 * The nursery lives in the parent task's actor and is only touched there.
 * A child is a task actor whose tasks record names the parent as its
 * watcher: when it exits, it sends the parent's actor a TR_SYS_CHILD_EXIT
 * message carrying its main task's result and error (task.c,
 * tr__tasks_notify_exit).  That message is the one way the parent learns
 * of an exit, so the same supervision code will serve children in other
 * processes, whose transport will deliver the equivalent message.
 *
 * Cancellation escalates in two steps: a request (every task of the child
 * cancelled; shields hold), then, if the child has not exited within the
 * grace period, a forced cancel (shields ignored).  A task stuck in C code
 * that never reaches a cancellation point cannot be stopped in-process;
 * that is what child processes are for.
 */
#include <stdio.h>
#include <stdlib.h>

#include <tractor/task.h>

#include "runtime/actor/actor.h"
#include "runtime/error/error.h"
#include "runtime/platform/assert.h"
#include "runtime/runtime.h"
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

static void request_cancel_all(struct tr_actor_nursery *an) {
  for (tr_an_child_t *c = an->children; c; c = c->next)
    if (!c->exited && !c->cancel_sent) {
      c->cancel_sent = 1;
      (void)tr__actor_request_cancel(c->actor, 0);
    }
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

static void force_cancel_all(struct tr_actor_nursery *an) {
  an->forced = 1;
  for (tr_an_child_t *c = an->children; c; c = c->next)
    if (!c->exited)
      (void)tr__actor_request_cancel(c->actor, 1);
}

void tr__an_child_exited(tr_an_child_t *c) {
  struct tr_actor_nursery *an = c->an;
  c->exited = 1;
  an->live--;
  if (c->result < 0 && c->result != -TR_ECANCELED) {
    tr_error_t *e = tr__error_own(c->error); /* a shared error cannot be boxed */
    c->error = NULL;
    if (!e)
      e = tr__error_new(c->result, NULL, "actor %s failed: %s", tr_actor_name(c->actor),
                        tr_strerror(c->result));
    /* One shape for a child's failure wherever it is seen (the nursery's
     * close, tr_portal_result): boxed as tractor's RemoteActorError, the
     * child as its source (or, for an error the child relayed, one more
     * relay hop). */
    char uid[TR_UID_LEN(256)];
    if (tr_actor_uid(c->actor, uid, sizeof uid) >= (int)sizeof uid)
      snprintf(uid, sizeof uid, "%s", tr_actor_name(c->actor)); /* a very long name */
    (void)tr__error_box(e, uid);
    c->result_error = tr__error_copy(e); /* for tr_portal_result */
    an->nfail++;
    if (an->nfail == 1) {
      an->first_rc = tr_error_code(e);
      an->errors = e;
      /* One cancels all: the other children and the parent's code. */
      request_cancel_all(an);
      tr__task_cancel_scope_local(an->parent, &an->scope);
    } else {
      if (an->nfail == 2) {
        tr_error_t *g = tr__error_group_new("%s", "several actors of a nursery failed");
        tr__error_group_add(g, an->errors);
        an->errors = g;
      }
      tr__error_group_add(an->errors, e);
    }
  }
  tr__error_free(c->error);
  c->error = NULL;
  if (an->waiting)
    tr__task_wake_blocked(an->parent);
  if (c->waiter)
    tr__task_wake_blocked(c->waiter); /* a task in tr_portal_result */
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

int tr__actor_nursery_spawn_rec(tr_actor_nursery_t *an, const char *name, tr_task_fn fn, void *arg,
                                int daemon, tr_actor_t **ref, tr_an_child_t **rec) {
  if (ref)
    *ref = NULL;
  if (!an || !fn)
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
  if (!c)
    return TR__ENOMEM();
  c->an = an;
  c->daemon = (uint8_t)(daemon != 0);
  /* The actor keeps its own copy of the name (c reads it from there). */
  tr_spawn_opts_t o = {.name = name ? name : "child"};
  tr_actor_t *a;
  /* Spawned with its main task ready; the watch is set before its first
   * turn can run: tr_spawn_task_actor schedules it through a message,
   * whose push orders these writes before the child reads them. */
  int rc = tr__spawn_task_actor_watched(fn, arg, &o, t->actor, c, &a);
  if (rc) {
    free(c);
    return rc;
  }
  c->actor = a;
  tr__actor_set_kind(a, daemon ? TR_AK_DAEMON : TR_AK_CHILD);
  c->next = an->children;
  an->children = c;
  an->live++;
  if (an->cancelling) { /* spawned into a cancelled nursery: cancel it */
    c->cancel_sent = 1;
    (void)tr__actor_request_cancel(a, an->forced);
  }
  if (ref)
    *ref = tr_actor_dup(a);
  if (rec)
    *rec = c;
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
