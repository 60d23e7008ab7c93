/*
 * Nurseries (trio's): child tasks of one actor, the first failure cancels
 * the rest, close waits for all and returns the failure or a group;
 * tr_nursery_start and tr_task_started (trio's nursery.start).  Runs in the
 * owning actor's turn, as everything in runtime/task/ (see task.c).
 */
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <tractor/task.h>

#include "runtime/actor/actor.h"
#include "runtime/error/error.h"
#include "runtime/platform/log.h"
#include "runtime/platform/assert.h"
#include "runtime/reactor/reactor.h"
#include "runtime/sched/worker.h"
#include "runtime/task/task.h"

int tr_nursery_open(tr_nursery_t **out) {
  tr_task_t *t = tr__task_current();
  if (!out)
    return TR__EINVAL_NULL();
  *out = NULL;
  if (!t)
    return TR__EPERM_NOTASK();
  struct tr_nursery *n = calloc(1, sizeof(*n));
  if (!n)
    return TR__ENOMEM();
  int rc = tr_scope_open(&n->scope, TR_NO_DEADLINE, 0);
  if (rc) {
    free(n);
    return rc;
  }
  n->parent = t;
  *out = n;
  return 0;
}

int tr_nursery_spawn(tr_nursery_t *n, tr_task_fn fn, void *arg, const tr_task_opts_t *opts) {
  tr_task_t *t = tr__task_current();
  if (!n || !fn)
    return TR__EINVAL_NULL();
  if (!t || t->actor != n->parent->actor)
    return TR_ERROR(-TR_EPERM,
                    "tr_nursery_spawn: only a task of the nursery's actor may spawn into it");
  if (n->closing)
    return TR_ERROR(-TR_ECLOSED, "tr_nursery_spawn: the nursery is closing");
  tr_task_t *c;
  int rc = tr__task_new(t->actor, fn, arg, opts, &c);
  if (rc)
    return rc;
  c->nursery = n;
  c->scope = &n->scope; /* the child's chain continues into the nursery's */
  n->live++;
  tr__task_ready_push(tr__tasks_of(t), c);
  return 0;
}

int tr__nursery_spawn_internal(struct tr_nursery *n, tr_task_fn fn, void *arg, const char *name) {
  if (n->closing)
    return -TR_ECLOSED;
  tr_task_opts_t o = {.name = name};
  tr_task_t *c;
  int rc = tr__task_new(n->parent->actor, fn, arg, &o, &c);
  if (rc)
    return rc;
  c->nursery = n;
  c->scope = &n->scope;
  n->live++;
  tr__task_ready_push(tr__tasks_of(c), c);
  return 0;
}

int tr_nursery_cancel(tr_nursery_t *n) {
  return n ? tr_scope_cancel(&n->scope) : TR__EINVAL_NULL();
}

/* Records a failed child: the first cancels the nursery's scope. */
void tr__nursery_fail(struct tr_nursery *n, tr_task_t *t) {
  tr_error_t *e = t->error;
  t->error = NULL;
  if (!e)
    e = tr__error_new(t->result, NULL, "task %s failed: %s", t->name, tr_strerror(t->result));
  n->nfail++;
  if (n->nfail == 1) {
    n->first_rc = t->result;
    n->errors = e;
    tr__tasks_cancel_local(tr__tasks_of(t), &n->scope);
  } else {
    if (n->nfail == 2) {
      tr_error_t *g = tr__error_group_new("%s", "several tasks of a nursery failed");
      tr__error_group_add(g, n->errors);
      n->errors = g;
    }
    tr__error_group_add(n->errors, e);
  }
}

void tr__nursery_child_done(struct tr_nursery *n, tr_task_t *t) {
  if (t->result < 0 && t->result != -TR_ECANCELED)
    tr__nursery_fail(n, t);
  tr__nursery_live_done(n);
}

void tr__nursery_live_done(struct tr_nursery *n) {
  if (--n->live == 0 && n->waiting)
    tr__task_ready_push(tr__tasks_of(n->parent), n->parent);
}

void tr__start_child_done(tr_tasks_t *ts, tr_task_t *t) {
  tr_start_t *st = t->start;
  t->start = NULL;
  st->ended = 1;
  st->result = t->result;
  st->error = t->error; /* the caller's failure now, if any */
  t->error = NULL;
  tr__nursery_live_done(st->target);
  if (st->caller->state == TR_TASK_BLOCKED)
    tr__task_ready_push(ts, st->caller);
}

int tr_nursery_start(tr_nursery_t *n, tr_task_fn fn, void *arg, const tr_task_opts_t *opts,
                     void **value) {
  tr_task_t *t = tr__task_current();
  if (value)
    *value = NULL;
  if (!n || !fn)
    return TR_ERROR(-TR_EINVAL, "tr_nursery_start: no nursery or no function");
  if (!t || t->actor != n->parent->actor)
    return TR_ERROR(-TR_EPERM, "tr_nursery_start: not a task of the nursery's actor");
  if (n->closing)
    return TR_ERROR(-TR_ECLOSED, "tr_nursery_start: the nursery is closing");
  /* A caller cancelled already still starts the task, as trio's start
   * does: it runs under the caller's cancelled scope, so its first
   * checkpoint (or tr_task_started) sees the cancellation, and the caller
   * returns -TR_ECANCELED once it has ended. */
  tr_task_t *c;
  int rc = tr__task_new(t->actor, fn, arg, opts, &c);
  if (rc)
    return TR_ERROR(rc, "tr_nursery_start: no memory for the task");
  tr_start_t st = {.caller = t, .target = n, .base = t->scope};
  const char *name = c->name; /* c is gone once it has ended */
  c->start = &st;
  c->scope = t->scope; /* runs under the caller until it has started */
  n->live++;
  tr__task_ready_push(tr__tasks_of(t), c);
  while (!st.moved && !st.ended) {
    t->blocked_on = "tr_nursery_start (until the new task calls tr_task_started)";
    tr__task_block(t, 0); /* as nursery close: cancellation reaches the task */
  }
  if (st.moved) {
    if (value)
      *value = st.value;
    return 0;
  }
  if (st.result < 0 && st.result != -TR_ECANCELED) {
    if (!st.error)
      st.error = tr__error_new(st.result, NULL, "task %s failed before it started: %s", name,
                               tr_strerror(st.result));
    tr__error_put(st.error); /* the task's failure is the caller's */
    return TR_TRACE(st.result);
  }
  tr__error_free(st.error);
  if (tr__task_cancelled(t)) {
    tr__scope_chain_saw_cancel(t->scope);
    return TR_ERROR(-TR_ECANCELED, "tr_nursery_start cancelled before the task started");
  }
  return tr_fail("RuntimeError", "child exited without calling tr_task_started()");
}

int tr_task_started(void *value) {
  tr_task_t *t = tr__task_current();
  if (!t)
    return TR_ERROR(-TR_EPERM, "tr_task_started: not in a task");
  tr_start_t *st = t->start;
  if (!st || st->started)
    return TR_ERROR(-TR_EINVAL, "tr_task_started: no tr_nursery_start waits for this task");
  st->started = 1;
  tr_tasks_t *ts = tr__tasks_of(t);
  if (tr__scope_chain_cancelled(st->base, ts)) {
    /* trio's started() in a cancelled start: the task stays with the
     * caller, which returns -TR_ECANCELED once the task has ended. */
    tr__scope_chain_saw_cancel(st->base);
    return TR_ERROR(-TR_ECANCELED, "tr_task_started: the caller of tr_nursery_start was "
                                   "cancelled; the value was not delivered");
  }
  tr_scope_t **pp = &t->scope;
  while (*pp != st->base) {
    TR_ASSERT(*pp && (*pp)->task_ == t);
    pp = &(*pp)->parent_;
  }
  *pp = &st->target->scope;
  t->start = NULL;
  t->nursery = st->target;
  st->value = value;
  st->moved = 1;
  if (st->caller->state == TR_TASK_BLOCKED)
    tr__task_ready_push(ts, st->caller);
  /* Moved under a cancelled nursery: tasks this one started meanwhile may
   * be blocked and must see it now, as after any cancel. */
  if (tr__scope_chain_cancelled(&st->target->scope, ts))
    tr__tasks_wake_cancelled(ts);
  return 0;
}

int tr_nursery_close(tr_nursery_t *n) {
  tr_task_t *t = tr__task_current();
  if (!n)
    return TR__EINVAL_NULL();
  if (!t || t != n->parent)
    return TR_ERROR(-TR_EPERM,
                    "tr_nursery_close: only the task that opened the nursery may close it");
  n->closing = 1;
  while (n->live > 0) {
    n->waiting = 1;
    t->blocked_on = "tr_nursery_close";
    tr__task_block(t, 0); /* no child outlives the nursery: not cancellable */
    n->waiting = 0;
  }
  /* Pop the nursery's scope (it must be the innermost one). */
  TR_ASSERT(t->scope == &n->scope);
  t->scope = n->scope.parent_;
  n->scope.open_ = 0;
  int rc = 0;
  if (n->nfail > 0) {
    rc = n->nfail == 1 ? n->first_rc : -TR_EGROUP;
    tr__error_put(n->errors); /* becomes this task's tr_error_last */
  } else if (tr__task_cancelled(t)) {
    rc = TR_ERROR(-TR_ECANCELED, "tr_nursery_close: an enclosing scope is cancelled");
  }
  free(n);
  return rc;
}
