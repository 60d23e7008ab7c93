/*
 * Tasks, cancel scopes and nurseries (trio's semantics on fibers).
 *
 * Everything here runs on the worker that is running the task's actor, in
 * that actor's turn, so the task lists, scopes and nurseries of one actor
 * are only ever touched by one thread at a time and need no locks.  Other
 * threads reach an actor's tasks only through messages (wake-ups from the
 * reactor, cancellations from outside).
 *
 * Scheduling.  tr__tasks_run (called at the end of the actor's turn, after
 * its messages) switches into each ready task in turn; a task runs until it
 * blocks or finishes and then switches back to the worker.  Tasks made
 * ready during the loop (a child finishing wakes its parent, a cancel wakes
 * the cancelled) run in the same turn, up to TR_TASK_RUNS_PER_TURN; what is
 * left gets a TR_SYS_RUN message so the actor takes another turn later,
 * behind the other runnable actors.
 *
 * Cancellation.  A task's scopes form a chain through parent_ pointers;
 * a child task's chain continues into its nursery's scope and from there
 * into the parent task's scopes, so the chains of all tasks form a tree.
 * A task is cancelled when, walking outwards from its innermost scope, a
 * cancelled scope comes before any shielded one (or the walk ends and the
 * runtime is shutting down).  Cancelling a scope re-checks every blocked
 * task of the actor (O(tasks), paid once per cancel).
 *
 * Lifetime.  A task blocked in tr_sleep has a timer whose message points
 * at it; such in-flight references are counted (refs) and a finished task
 * is freed only when none is left.  The actor exits when it has neither
 * live tasks nor such zombies.
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

#define TR_TASK_RUNS_PER_TURN 256

tr_task_t *tr__task_current(void) {
  tr_worker_t *w = tr__worker_self();
  return w ? w->cur_task : NULL;
}

void tr__task_ready_push(tr_tasks_t *ts, tr_task_t *t) {
  t->state = TR_TASK_READY;
  t->ready_next = NULL;
  if (ts->ready_tail)
    ts->ready_tail->ready_next = t;
  else
    ts->ready_head = t;
  ts->ready_tail = t;
}

static tr_task_t *ready_pop(tr_tasks_t *ts) {
  tr_task_t *t = ts->ready_head;
  if (t) {
    ts->ready_head = t->ready_next;
    if (!ts->ready_head)
      ts->ready_tail = NULL;
  }
  return t;
}

/* Walks the scope chain outwards: the first cancelled scope wins, unless
 * a shield comes first. */
int tr__scope_chain_cancelled(const tr_scope_t *s, const tr_tasks_t *ts) {
  if (ts->forced)
    return 1; /* a forced actor cancel ignores shields */
  for (; s; s = s->parent_) {
    if (s->cancel_called_)
      return 1;
    if (s->shield_)
      return 0;
  }
  return ts->stopping;
}

int tr__task_cancelled(tr_task_t *t) {
  return tr__scope_chain_cancelled(t->scope, tr__tasks_of(t));
}

/* trio's rule for who catches a Cancelled: a scope that is cancelled and
 * whose parent's cancellation it cannot see (the parent is not cancelled,
 * or this scope is shielded).  Walking out from the innermost scope, that
 * is the outermost cancelled scope before the first shield (the shielded
 * scope included).  A cancel that comes from no scope (the actor's own
 * stop) is caught by none. */
void tr__scope_chain_saw_cancel(tr_scope_t *s) {
  tr_scope_t *catcher = NULL;
  for (; s; s = s->parent_) {
    if (s->cancel_called_)
      catcher = s;
    if (s->shield_)
      break;
  }
  if (catcher)
    catcher->cancel_seen_++;
}

/* Blocks the running task until something makes it ready again.  With
 * `cancellable`, a cancellation of the task's scopes also wakes it.  The
 * task may come back on another worker thread.  The caller names what it
 * waits for in t->blocked_on first (the hang report shows it). */
void tr__task_block(tr_task_t *t, int cancellable) {
  t->state = TR_TASK_BLOCKED;
  t->cancellable = (uint8_t)cancellable;
  t->wait_gen++;
  tr_worker_t *w = tr__worker_self();
  tr__fiber_switch(&t->fiber, &w->main);
  /* Resumed by tr__tasks_run, perhaps on another worker: re-read TLS. */
  t->blocked_on = NULL;
}

int tr__task_observe_cancel_at(tr_task_t *t, const char *file, int line, const char *func,
                               const char *fmt, ...) {
  tr__scope_chain_saw_cancel(t->scope);
  char msg[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (msg[0] == '\0') {
    snprintf(msg, sizeof msg, "task %s of actor %s was cancelled (a cancel scope around it was)",
             t->name ? t->name : "?", tr_actor_name(t->actor));
  }
  return tr__error_set(-TR_ECANCELED, file, line, func, "%s", msg);
}

/* Re-checks every blocked, cancellable task of the actor after a cancel. */
void tr__tasks_wake_cancelled(tr_tasks_t *ts) {
  for (tr_task_t *t = ts->all; t; t = t->next)
    if (t->state == TR_TASK_BLOCKED && t->cancellable && tr__task_cancelled(t))
      tr__task_ready_push(ts, t);
}

/* A system message for the task layer (see the TR_SYS_* tags).  With
 * `must`, allocation is retried until it succeeds: for messages the other
 * side waits for (an exit report, a finished job), losing one would hang
 * it, and the pause lets the allocator recover. */
int tr__sys_msg(tr_msg_t **out, uint32_t tag, uint64_t u64, void *ptr, int must) {
  int rc;
  while ((rc = tr_msg_new(out)) != 0) {
    if (!must)
      return rc;
    struct timespec pause = {0, 1000000};
    nanosleep(&pause, NULL);
  }
  (*out)->flags_ = TR_MSGF_SYS;
  (*out)->tag = tag;
  (*out)->u64 = u64;
  (*out)->ptr = ptr;
  return 0;
}

/* Makes sure the actor takes another turn for its ready tasks when the
 * current code is not running inside its turn loop. */
void tr__tasks_post_run(struct tr_actor *a) {
  tr_tasks_t *ts = a->tasks;
  if (ts->run_posted)
    return;
  tr_msg_t *m;
  if (tr__sys_msg(&m, TR_SYS_RUN, 0, NULL, 0) != 0)
    return; /* out of memory: the next message to the actor runs them */
  ts->run_posted = 1;
  (void)tr__actor_push(a, m);
}

/* The dialog engine's hooks (tr__tasks_set_rpc_ops): copied in at
 * start-up, before any actor exists, and never changed afterwards. */
static tr_tasks_rpc_ops_t rpc_ops;

void tr__tasks_set_rpc_ops(const tr_tasks_rpc_ops_t *ops) {
  if (memcmp(&rpc_ops, ops, sizeof rpc_ops) != 0)
    rpc_ops = *ops;
}

static tr_error_t **task_error_slot(void) {
  tr_task_t *t = tr__task_current();
  return t ? &t->error : NULL;
}

/* Names the running actor and task in log lines (runtime/platform/log.h). */
static void log_context(const char **actor, const char **task) {
  tr_actor_t *a = tr_self();
  if (!a)
    return;
  *actor = tr_actor_name(a);
  tr_task_t *t = a->tasks ? tr__task_current() : NULL;
  if (t)
    *task = t->name ? t->name : "task";
}

static void task_turn(tr_worker_t *w, struct tr_actor *a);
static int tasks_cancel(struct tr_actor *a, int force);

void tr__tasks_init(void) {
  static const tr_actor_task_ops_t ops = {task_turn, tasks_cancel, tr__tasks_notify_exit,
                                          tr__tasks_free};
  tr__error_set_slot_hook(task_error_slot);
  tr__log_set_context_hook(log_context);
  tr__actor_set_task_ops(&ops);
}

static void task_entry(void *arg) {
  tr_task_t *t = arg;
  t->result = t->fn(t->arg);
}

/* Frees the task's copy of its name when it has one of its own (a name
 * too long to stay whole in the label). */
static void task_name_free(tr_task_t *t) {
  if (t->name_owned)
    free((char *)t->name);
  t->name = NULL;
  t->name_owned = 0;
}

static void task_free(tr_task_t *t) {
  tr__error_free(t->error);
  task_name_free(t);
  free(t);
}

/* Writes "actor A, task T", truncated to fit: what a stack overflow
 * reports.  Returns where T starts in buf when it fits whole, else NULL.
 * By hand rather than snprintf, which cost a quarter of a task spawn; the
 * usual case (it fits) is two strlen and fixed-size copies, and only a
 * label that must be cut short goes byte by byte. */
static const char *set_label(char *buf, size_t cap, const char *actor, const char *task) {
  static const char pre[] = "actor ", mid[] = ", task ";
  size_t alen = strlen(actor), tlen = strlen(task);
  size_t task_at = sizeof pre - 1 + alen + sizeof mid - 1;
  if (task_at + tlen < cap) {
    memcpy(buf, pre, sizeof pre - 1);
    memcpy(buf + sizeof pre - 1, actor, alen);
    memcpy(buf + sizeof pre - 1 + alen, mid, sizeof mid - 1);
    memcpy(buf + task_at, task, tlen + 1);
    return buf + task_at;
  }
  const char *parts[4] = {pre, actor, mid, task};
  size_t n = 0;
  for (int i = 0; i < 4; i++)
    for (const char *p = parts[i]; *p && n + 1 < cap; p++)
      buf[n++] = *p;
  buf[n] = '\0';
  return NULL; /* cut short */
}

/* Finished tasks an actor keeps, stack and all, for its next spawns: a
 * nursery that spawns and joins tasks in rounds then touches neither
 * malloc nor the stack pool.  Cost: up to this many idle stacks (their
 * touched pages, ~4-8 KiB each) stay with a busy actor until it exits. */
#define TR_TASK_SPARES 1024

int tr__task_new(struct tr_actor *a, tr_task_fn fn, void *arg, const tr_task_opts_t *opts,
                 tr_task_t **out) {
  tr_tasks_t *spares = a->tasks;
  tr_task_t *t;
  int reused = 0;
  if (spares->spare && (!opts || opts->stack_size == 0)) {
    t = spares->spare;
    spares->spare = t->next;
    spares->nspare--;
    tr_fiber_t fiber = t->fiber; /* keeps the stack */
    memset(t, 0, sizeof(*t));
    t->fiber = fiber;
    t->has_stack = 1;
    t->needs_reset = 1;
    reused = 1;
  } else if (!(t = calloc(1, sizeof(*t)))) {
    return TR__ENOMEM();
  }
  /* The name is copied (names are never borrowed).  The label holds it
   * whole in the usual case, and the name then points there at no cost;
   * only a name the label cuts short gets a copy of its own. */
  const char *name = (opts && opts->name) ? opts->name : "task";
  t->name = set_label(t->label, sizeof(t->label), tr_actor_name(a), name);
  if (TR_UNLIKELY(!t->name)) {
    if (!(t->name = strdup(name))) {
      if (reused) { /* give it back as it was */
        t->next = spares->spare;
        spares->spare = t;
        spares->nspare++;
      } else {
        free(t);
      }
      return TR__ENOMEM();
    }
    t->name_owned = 1;
  }
  /* The stack is taken at the first switch into the task (tasks_run), so
   * a nursery that spawns many short tasks holds few stacks at a time. */
  t->stack_size = opts ? opts->stack_size : 0;
  t->actor = a;
  t->fn = fn;
  t->arg = arg;
  tr_tasks_t *ts = a->tasks;
  t->next = ts->all;
  if (ts->all)
    ts->all->prev = t;
  ts->all = t;
  ts->live++;
  *out = t;
  return 0;
}

/* The task's fn returned: unlink it, report to its nursery, free it (or
 * keep it as a zombie while wake messages still point at it). */
static void task_finished(tr_tasks_t *ts, tr_task_t *t) {
  t->state = TR_TASK_DONE;
  int keep = t->has_stack && t->stack_size == 0 && ts->nspare < TR_TASK_SPARES;
  if (t->has_stack && !keep) {
    tr__fiber_destroy(&t->fiber);
    t->has_stack = 0;
  }
  if (t->prev)
    t->prev->next = t->next;
  else
    ts->all = t->next;
  if (t->next)
    t->next->prev = t->prev;
  ts->live--;
  if (t == ts->main) {
    ts->main_result = t->result;
    ts->main_done = 1;
    ts->main = NULL;
    if (t->result < 0) {
      ts->main_error = t->error; /* for the nursery watching this actor */
      t->error = NULL;
    }
  }
  if (t->start)
    tr__start_child_done(ts, t);
  else if (t->nursery)
    tr__nursery_child_done(t->nursery, t);
  if (t->refs == 0 && keep) {
    tr__error_free(t->error);
    t->error = NULL;
    task_name_free(t);
    t->next = ts->spare;
    ts->spare = t;
    ts->nspare++;
  } else if (t->refs == 0) {
    if (t->has_stack)
      tr__fiber_destroy(&t->fiber);
    task_free(t);
  } else {
    ts->zombies++; /* freed by release_ref, stack included */
  }
}

void tr__task_release_ref(tr_tasks_t *ts, tr_task_t *t) {
  TR_ASSERT(t->refs > 0);
  if (--t->refs == 0 && t->state == TR_TASK_DONE) {
    ts->zombies--;
    if (t->has_stack)
      tr__fiber_destroy(&t->fiber);
    task_free(t);
  }
}

/* Finds an open scope of this actor by id (deadline and remote cancel
 * messages carry ids, never pointers, since the scope may have closed). */
tr_scope_t *tr__tasks_find_scope(tr_tasks_t *ts, uint64_t id) {
  for (tr_task_t *t = ts->all; t; t = t->next)
    for (tr_scope_t *s = t->scope; s && s->task_ == t; s = s->parent_)
      if (s->id_ == id)
        return s;
  return NULL;
}

void tr__tasks_cancel_local(tr_tasks_t *ts, tr_scope_t *s) {
  if (s->cancel_called_)
    return;
  s->cancel_called_ = 1;
  tr__tasks_wake_cancelled(ts);
}

/* Wakes the first task still blocked in tr_recv, taking it off the queue.
 * Waiters ahead of it that are already woken (a cancellation made them
 * ready in this turn) only leave the queue: each task is on the ready list
 * once, or two wake-ups would run it after it finished. */
static void wake_receiver(tr_tasks_t *ts) {
  tr_task_t *t;
  while ((t = ts->recv_head)) {
    ts->recv_head = t->recv_next;
    if (!ts->recv_head)
      ts->recv_tail = NULL;
    t->recv_next = NULL;
    if (t->state == TR_TASK_BLOCKED) {
      tr__task_ready_push(ts, t);
      return;
    }
  }
}

void tr__tasks_dispatch(tr_worker_t *w, struct tr_actor *a, tr_msg_t *m) {
  tr_tasks_t *ts = a->tasks;
  if (!(m->flags_ & TR_MSGF_SYS) && m->body != 0) {
    rpc_ops.dispatch(w, a, m); /* a protocol message: the dialog engine */
    return;
  }
  if (!(m->flags_ & TR_MSGF_SYS)) {
    /* An application message: to the first task waiting in tr_recv. */
    m->next_ = NULL;
    if (ts->inbox_tail)
      ts->inbox_tail->next_ = m;
    else
      ts->inbox_head = m;
    ts->inbox_tail = m;
    wake_receiver(ts);
    return;
  }
  switch (m->tag) {
  case TR_SYS_WAKE: {
    tr_task_t *t = m->ptr;
    if (t->state == TR_TASK_BLOCKED && t->wait_gen == m->u64) {
      t->timer_fired = 1;
      tr__task_ready_push(ts, t);
    }
    tr__task_release_ref(ts, t);
    break;
  }
  case TR_SYS_DEADLINE:
  case TR_SYS_CANCEL_SCOPE: {
    tr_scope_t *s = tr__tasks_find_scope(ts, m->u64);
    if (s) {
      if (m->tag == TR_SYS_DEADLINE)
        s->deadline_hit_ = 1;
      tr__tasks_cancel_local(ts, s);
    }
    break;
  }
  case TR_SYS_RUN:
    ts->run_posted = 0;
    break;
  case TR_SYS_CANCEL_ACTOR:
    if (m->u64)
      ts->forced = 1;
    ts->stopping = 1;
    tr__tasks_wake_cancelled(ts);
    break;
  case TR_SYS_JOB_DONE:
    tr__to_thread_done(w, a, m);
    return; /* took the message */
  default:
    break;
  }
  tr__msg_dispose(w, m);
}

int tr__tasks_run(tr_worker_t *w, struct tr_actor *a) {
  tr_tasks_t *ts = a->tasks;
  int runs = 0;
  tr_task_t *t;
  while (runs < TR_TASK_RUNS_PER_TURN && (t = ready_pop(ts))) {
    runs++;
    if (t->needs_reset) {
      tr__fiber_reset(&t->fiber, task_entry, t);
      tr__fiber_set_label(&t->fiber, t->label);
      t->needs_reset = 0;
    } else if (TR_UNLIKELY(!t->has_stack)) {
      if (tr__fiber_init(&t->fiber, t->stack_size, task_entry, t) != 0) {
        /* No stack: the task fails without running, like a failed spawn
         * that was reported late (its nursery sees -TR_ENOMEM, saying why). */
        t->result = -TR_ENOMEM;
        tr__error_free(t->error);
        t->error = tr__error_new(-TR_ENOMEM, NULL,
                                 "task %s never ran: no stack of %zu bytes could be had for it",
                                 t->name, t->stack_size ? t->stack_size : TR_FIBER_DEFAULT_STACK);
        task_finished(ts, t);
        continue;
      }
      t->has_stack = 1;
      tr__fiber_set_label(&t->fiber, t->label);
    }
    t->state = TR_TASK_RUNNING;
    w->cur_task = t;
    tr__fiber_switch(&w->main, &t->fiber);
    /* Back on this worker's own stack: the task blocked or finished. */
    w->cur_task = NULL;
    if (tr__fiber_done(&t->fiber))
      task_finished(ts, t);
  }
  if (ts->ready_head)
    tr__tasks_post_run(a);
  return ts->live == 0 && ts->zombies == 0;
}

/* One turn of a task actor (the actor layer hands it over through its
 * task ops): its messages go to the task layer (wake-ups,
 * cancellations, tr_recv), then its ready tasks run.  Under shutdown its
 * tasks are cancelled and it exits once they have all finished, so no
 * fiber is ever abandoned mid-stack. */
static void task_turn(tr_worker_t *w, struct tr_actor *a) {
  int batch = tr__actors.batch;
  int handled = 0;
  w->cur_actor = a;
  if (TR_UNLIKELY(tr_load_relaxed(&tr__actors.stopping)))
    tr__tasks_stop(a);
  while (handled < batch) {
    tr_msg_t *m = tr__mbox_pop_sc(&a->mbox);
    if (!m)
      break;
    if (m->flags_ & TR_MSGF_SYS && m->tag == 0) {
      tr__msg_dispose(w, m); /* a shutdown wake-up: handled above */
      continue;
    }
    if (m->flags_ & TR_MSGF_SYS && m->tag == TR_SYS_DESCRIBE) {
      tr__actor_describe(w, a, m); /* no task runs now: their states are settled */
      continue;
    }
    if (a->limit && !(m->flags_ & TR_MSGF_SYS))
      tr_faa_relaxed(&a->qlen, (uint32_t)-1); /* reserved by tr_send */
    handled++;
    tr__tasks_dispatch(w, a, m);
  }
  int finished = tr__tasks_run(w, a);
  w = tr__worker_self(); /* unchanged: tasks switch back to this stack */
  w->cur_actor = NULL;
  tr_counter_add(&w->c.handled, (uint64_t)handled);
  if (finished) {
    tr__actor_finish_exit(w, a);
    return;
  }
  if (handled == batch || !tr__mbox_mark_empty_sc(&a->mbox))
    tr__sched_requeue(w, a); /* more to do: back of the queue */
}

void tr__tasks_stop(struct tr_actor *a) {
  tr_tasks_t *ts = a->tasks;
  if (ts->stopping)
    return;
  ts->stopping = 1;
  tr__tasks_wake_cancelled(ts);
}

void tr__tasks_free(tr_tasks_t *ts) {
  if (!ts)
    return;
  TR_ASSERT(ts->live == 0 && ts->zombies == 0);
  tr__error_free(ts->main_error);
  tr_buf_release(ts->main_value);
  rpc_ops.actor_free(ts);
  while (ts->spare) {
    tr_task_t *t = ts->spare;
    ts->spare = t->next;
    tr__fiber_destroy(&t->fiber);
    free(t);
  }
  tr_msg_t *m = ts->inbox_head;
  while (m) {
    tr_msg_t *next = m->next_;
    tr_msg_free(m); /* never taken: freed with the actor */
    m = next;
  }
  free(ts);
}

tr_task_t *tr__task_of_actor_current(struct tr_actor *a) {
  tr_task_t *t = tr__task_current();
  return t && t->actor == a ? t : NULL;
}

int tr_checkpoint(void) {
  tr_task_t *t = tr__task_current();
  if (!t)
    return TR__EPERM_NOTASK();
  if (tr__task_cancelled(t))
    return tr__task_observe_cancel_default(t);
  tr_tasks_t *ts = tr__tasks_of(t);
  if (!ts->ready_head)
    return 0; /* nobody else is ready: yielding would change nothing */
  /* Yield: queue ourselves behind the ready tasks and switch out; the turn
   * loop resumes us after them. */
  tr__task_ready_push(ts, t);
  tr_worker_t *w = tr__worker_self();
  tr__fiber_switch(&t->fiber, &w->main);
  return 0;
}

void tr__task_yield(tr_task_t *t) {
  /* Queued behind the ready tasks even when there is none: after
   * TR_TASK_RUNS_PER_TURN runs the turn ends (TR_SYS_RUN), so the actor's
   * mail is taken and other actors run before this task goes on. */
  tr__task_ready_push(tr__tasks_of(t), t);
  tr__fiber_switch(&t->fiber, &tr__worker_self()->main);
}

int tr_sleep_until(int64_t deadline) {
  tr_task_t *t = tr__task_current();
  if (!t)
    return TR__EPERM_NOTASK();
  if (tr__task_cancelled(t))
    return tr__task_observe_cancel_default(t);
  if (deadline <= tr_now())
    return tr_checkpoint();
  tr_msg_t *m;
  /* u64: the generation tr__task_block() is about to start. */
  int rc = tr__sys_msg(&m, TR_SYS_WAKE, t->wait_gen + 1, t, 0);
  if (rc)
    return rc;
  uint64_t timer;
  rc = tr__timer_post(deadline, t->actor, m, &timer);
  if (rc) {
    tr_msg_free(m);
    return rc;
  }
  t->refs++;
  t->timer_fired = 0;
  t->blocked_on = "tr_sleep";
  tr__task_block(t, 1);
  if (t->timer_fired)
    return 0;
  /* Woken by a cancellation before the timer: take the timer back.  If it
   * fired meanwhile, its message is on its way and drops the reference. */
  if (tr_timer_cancel(timer) == 0)
    tr__task_release_ref(tr__tasks_of(t), t);
  return tr__task_observe_cancel_default(t);
}

int tr_sleep(int64_t ns) {
  if (ns <= 0)
    return tr_checkpoint();
  return tr_sleep_until(tr__deadline_after(ns)); /* INT64_MAX: until cancelled */
}

int tr_recv(tr_msg_t **out) {
  tr_task_t *t = tr__task_current();
  if (!out)
    return TR__EINVAL_NULL();
  *out = NULL;
  if (!t)
    return TR__EPERM_NOTASK();
  tr_tasks_t *ts = tr__tasks_of(t);
  for (;;) {
    if (tr__task_cancelled(t)) {
      /* A message this task was woken for goes to the next receiver. */
      if (ts->inbox_head)
        wake_receiver(ts);
      return tr__task_observe_cancel_default(t);
    }
    if (ts->inbox_head && !ts->recv_head) {
      tr_msg_t *m = ts->inbox_head;
      ts->inbox_head = m->next_;
      if (!ts->inbox_head)
        ts->inbox_tail = NULL;
      m->next_ = NULL;
      *out = m;
      return 0;
    }
    /* Queue up behind earlier receivers (FIFO). */
    t->recv_next = NULL;
    if (ts->recv_tail)
      ts->recv_tail->recv_next = t;
    else
      ts->recv_head = t;
    ts->recv_tail = t;
    t->blocked_on = "tr_recv";
    tr__task_block(t, 1);
    /* Woken by a message (dispatch dequeued us) or by a cancellation (we
     * may still be queued: leave the queue). */
    tr_task_t **pp = &ts->recv_head, *prev = NULL;
    for (; *pp; prev = *pp, pp = &(*pp)->recv_next) {
      if (*pp == t) {
        *pp = t->recv_next;
        if (ts->recv_tail == t)
          ts->recv_tail = prev;
        break;
      }
    }
    if (ts->inbox_head && !tr__task_cancelled(t)) {
      tr_msg_t *m = ts->inbox_head;
      ts->inbox_head = m->next_;
      if (!ts->inbox_head)
        ts->inbox_tail = NULL;
      m->next_ = NULL;
      *out = m;
      return 0;
    }
  }
}

void tr__task_unref(tr_task_t *t) { tr__task_release_ref(tr__tasks_of(t), t); }

void tr__task_wake_if(tr_task_t *t, uint64_t gen) {
  if (t->state == TR_TASK_BLOCKED && t->wait_gen == gen) {
    t->timer_fired = 1;
    tr__task_ready_push(tr__tasks_of(t), t);
  }
}

/* The task side of tr__actor_request_cancel: every task is cancelled in
 * the actor's next turn (TR_SYS_CANCEL_ACTOR). */
static int tasks_cancel(struct tr_actor *a, int force) {
  tr_msg_t *m;
  int rc = tr__sys_msg(&m, TR_SYS_CANCEL_ACTOR, force != 0, NULL, 0);
  if (rc)
    return rc;
  return tr__actor_push(a, m);
}

void tr__tasks_notify_exit(struct tr_actor *a) {
  tr_tasks_t *ts = a->tasks;
  if (!ts)
    return;
  rpc_ops.actor_exit(a); /* CancelAcks, then the report to a watcher */
  /* Spare stacks go back to the pool now, on a worker, not whenever the
   * last reference to the actor happens to be dropped. */
  while (ts->spare) {
    tr_task_t *t = ts->spare;
    ts->spare = t->next;
    tr__fiber_destroy(&t->fiber);
    free(t);
  }
  ts->nspare = 0;
}

void tr__task_wake_blocked(tr_task_t *t) {
  if (t->state == TR_TASK_BLOCKED)
    tr__task_ready_push(tr__tasks_of(t), t);
}

void tr__task_wait_until(tr_task_t *t, int64_t deadline) {
  tr_msg_t *m;
  uint64_t timer = 0;
  int armed = 0;
  if (deadline != TR_NO_DEADLINE && tr__sys_msg(&m, TR_SYS_WAKE, t->wait_gen + 1, t, 0) == 0) {
    if (tr__timer_post(deadline, t->actor, m, &timer) == 0) {
      t->refs++;
      armed = 1;
    } else {
      tr_msg_free(m);
    }
  }
  t->timer_fired = 0;
  if (deadline != TR_NO_DEADLINE && !armed) {
    /* No timer (tr_shutdown has begun, or no memory for one): nothing
     * might ever end this wait at its deadline, so the task yields instead
     * (behind the ready ones, or to other actors at the turn's end) and
     * its caller looks at the clock again. */
    tr__task_ready_push(tr__tasks_of(t), t);
    tr__fiber_switch(&t->fiber, &tr__worker_self()->main);
    return;
  }
  tr__task_block(t, 0);
  if (armed && !t->timer_fired && tr_timer_cancel(timer) == 0)
    tr__task_release_ref(tr__tasks_of(t), t);
}
