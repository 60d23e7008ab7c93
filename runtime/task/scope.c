/*
 * Cancel scopes (trio's): open, cancel, close, deadlines as timers that
 * name a scope by id, and the chain walk that decides whether a task is
 * cancelled.  Runs in the owning actor's turn (see task.c).
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

int tr__scope_arm_deadline(tr_task_t *t, tr_scope_t *s) {
  tr_msg_t *m;
  int rc = tr__sys_msg(&m, TR_SYS_DEADLINE, s->id_, NULL, 0);
  if (rc)
    return rc;
  rc = tr__timer_post(s->deadline_, t->actor, m, &s->timer_);
  if (rc)
    tr_msg_free(m);
  return rc;
}

int tr_scope_open(tr_scope_t *s, int64_t deadline, int shield) {
  tr_task_t *t = tr__task_current();
  if (!t)
    return TR__EPERM_NOTASK();
  if (!s)
    return TR__EINVAL_NULL();
  memset(s, 0, sizeof(*s));
  s->task_ = t;
  s->id_ = ++tr__tasks_of(t)->next_id;
  s->deadline_ = deadline;
  s->shield_ = shield != 0;
  if (deadline != TR_NO_DEADLINE) {
    if (deadline <= tr_now()) {
      s->cancel_called_ = 1; /* already past: cancelled from the start */
      s->deadline_hit_ = 1;
    } else {
      int rc = tr__scope_arm_deadline(t, s);
      if (rc)
        return rc;
    }
  }
  s->parent_ = t->scope;
  t->scope = s;
  s->open_ = 1;
  return 0;
}

int tr_move_on_after(tr_scope_t *s, int64_t ns) {
  return tr_scope_open(s, tr__deadline_after(ns > 0 ? ns : 0), 0);
}

int tr_fail_after(tr_scope_t *s, int64_t ns) {
  int rc = tr_move_on_after(s, ns);
  if (rc == 0)
    s->fail_ = 1;
  return rc;
}

int tr_scope_cancel(tr_scope_t *s) {
  if (!s || !s->open_)
    return TR_ERROR(-TR_EINVAL, "tr_scope_cancel: the scope is not open");
  tr_task_t *owner = s->task_;
  tr_task_t *t = tr__task_current();
  if (t && t->actor == owner->actor) {
    tr__tasks_cancel_local(tr__tasks_of(t), s);
    return 0;
  }
  /* From another actor or thread: a message to the scope's actor.  The
   * actor outlives its open scopes, and it is alive while the scope is
   * open, so reading owner->actor here is safe under the documented rule
   * that the scope is open when the call is made. */
  tr_msg_t *m;
  int rc = tr__sys_msg(&m, TR_SYS_CANCEL_SCOPE, s->id_, NULL, 0);
  if (rc)
    return rc;
  (void)tr__actor_push(owner->actor, m);
  return 0;
}

int tr_scope_close(tr_scope_t *s) {
  tr_task_t *t = tr__task_current();
  if (!t)
    return TR__EPERM_NOTASK();
  if (!s || !s->open_ || t->scope != s)
    return TR_ERROR(-TR_EINVAL, "tr_scope_close: the scope is %s",
                    !s || !s->open_ ? "not open"
                                    : "not the innermost (close scopes in LIFO order)");
  if (s->timer_ && tr_timer_cancel(s->timer_) != 0) {
    /* Already fired: its message is in the mailbox and will find no scope
     * with this id (ids are never reused). */
  }
  s->timer_ = 0;
  t->scope = s->parent_;
  s->open_ = 0;
  s->caught_ = s->cancel_called_ && s->cancel_seen_ > 0; /* tr__scope_chain_saw_cancel */
  if (s->fail_ && s->deadline_hit_)
    return TR_ERROR(-TR_ETIMEDOUT, "fail_after deadline expired");
  return 0;
}

int tr_scope_cancelled_caught(const tr_scope_t *s) { return s && s->caught_; }

void tr__task_cancel_scope_local(tr_task_t *t, tr_scope_t *s) {
  tr__tasks_cancel_local(tr__tasks_of(t), s);
}

void tr__scope_detach(tr_scope_t *s) {
  tr_task_t *t = s->task_;
  if (!s->open_)
    return;
  if (t->scope == s) {
    (void)tr_scope_close(s);
    return;
  }
  for (tr_scope_t **pp = &t->scope; *pp; pp = &(*pp)->parent_)
    if (*pp == s) {
      *pp = s->parent_;
      break;
    }
  if (s->timer_)
    (void)tr_timer_cancel(s->timer_);
  s->timer_ = 0;
  s->open_ = 0;
}
