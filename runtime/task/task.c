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
#include "runtime/log.h"
#include "runtime/platform/assert.h"
#include "runtime/reactor/reactor.h"
#include "runtime/runtime.h"
#include "runtime/task/task.h"

#define TR_TASK_RUNS_PER_TURN 256

struct tr_nursery {
  tr_scope_t scope;
  tr_task_t *parent;
  uint64_t live; /* children not yet finished */
  uint8_t closing;
  uint8_t waiting; /* the parent is blocked in close */
  int nfail;
  int first_rc;
  tr_error_t *errors; /* the first failure, or a group once there are two */
};

/* ---- helpers ------------------------------------------------------------ */

static tr_task_t *current(void) {
  tr_worker_t *w = tr__worker_self();
  return w ? w->cur_task : NULL;
}

static tr_tasks_t *tasks_of(tr_task_t *t) { return t->actor->tasks; }

static void ready_push(tr_tasks_t *ts, tr_task_t *t) {
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
static int chain_cancelled(const tr_scope_t *s, const tr_tasks_t *ts) {
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

static int task_cancelled(tr_task_t *t) { return chain_cancelled(t->scope, tasks_of(t)); }

/* Blocks the running task until something makes it ready again.  With
 * `cancellable`, a cancellation of the task's scopes also wakes it.  The
 * task may come back on another worker thread.  The caller names what it
 * waits for in t->blocked_on first (the hang report shows it). */
static void block(tr_task_t *t, int cancellable) {
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
  t->cancel_seen++;
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

#define observed_cancel(t) tr__task_observe_cancel((t), "%s", "")

/* Re-checks every blocked, cancellable task of the actor after a cancel. */
static void wake_cancelled(tr_tasks_t *ts) {
  for (tr_task_t *t = ts->all; t; t = t->next)
    if (t->state == TR_TASK_BLOCKED && t->cancellable && task_cancelled(t))
      ready_push(ts, t);
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
static void post_run(struct tr_actor *a) {
  tr_tasks_t *ts = a->tasks;
  if (ts->run_posted)
    return;
  tr_msg_t *m;
  if (tr__sys_msg(&m, TR_SYS_RUN, 0, NULL, 0) != 0)
    return; /* out of memory: the next message to the actor runs them */
  ts->run_posted = 1;
  (void)tr__actor_push(a, m);
}

/* ---- the error slot ------------------------------------------------------- */

static tr_error_t **task_error_slot(void) {
  tr_task_t *t = current();
  return t ? &t->error : NULL;
}

/* Names the running actor and task in log lines (runtime/log.h). */
static void log_context(const char **actor, const char **task) {
  tr_actor_t *a = tr_self();
  if (!a)
    return;
  *actor = tr_actor_name(a);
  tr_task_t *t = a->tasks ? current() : NULL;
  if (t)
    *task = t->name ? t->name : "task";
}

void tr__tasks_install_error_hook(void) {
  tr__error_set_slot_hook(task_error_slot);
  tr__log_set_context_hook(log_context);
}

/* ---- task creation and completion ----------------------------------------- */

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
 * By hand rather than snprintf, which cost a quarter of a task spawn. */
static const char *set_label(char *buf, size_t cap, const char *actor, const char *task) {
  const char *parts[4] = {"actor ", actor, ", task ", task};
  size_t n = 0, task_at = 0;
  for (int i = 0; i < 4; i++) {
    const char *p = parts[i];
    task_at = n;
    for (; *p && n + 1 < cap; p++)
      buf[n++] = *p;
    if (*p) {
      buf[n] = '\0';
      return NULL; /* cut short */
    }
  }
  buf[n] = '\0';
  return buf + task_at;
}

/* Finished tasks an actor keeps, stack and all, for its next spawns: a
 * nursery that spawns and joins tasks in rounds then touches neither
 * malloc nor the stack pool.  Cost: up to this many idle stacks (their
 * touched pages, ~4-8 KiB each) stay with a busy actor until it exits. */
#define TR_TASK_SPARES 1024

static int task_new(struct tr_actor *a, tr_task_fn fn, void *arg, const tr_task_opts_t *opts,
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
  t->name = set_label(t->label, sizeof(t->label), a->named ? a->name : "actor", name);
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

static void nursery_child_done(struct tr_nursery *n, tr_task_t *t);
static void start_child_done(tr_tasks_t *ts, tr_task_t *t);

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
    start_child_done(ts, t);
  else if (t->nursery)
    nursery_child_done(t->nursery, t);
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

/* ---- the actor side ------------------------------------------------------- */

static void release_ref(tr_tasks_t *ts, tr_task_t *t) {
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
static tr_scope_t *find_scope(tr_tasks_t *ts, uint64_t id) {
  for (tr_task_t *t = ts->all; t; t = t->next)
    for (tr_scope_t *s = t->scope; s && s->task_ == t; s = s->parent_)
      if (s->id_ == id)
        return s;
  return NULL;
}

static void cancel_local(tr_tasks_t *ts, tr_scope_t *s) {
  if (s->cancel_called_)
    return;
  s->cancel_called_ = 1;
  wake_cancelled(ts);
}

void tr__tasks_dispatch(tr_worker_t *w, struct tr_actor *a, tr_msg_t *m) {
  tr_tasks_t *ts = a->tasks;
  if (!(m->flags_ & TR_MSGF_SYS) && m->body != 0) {
    tr__rpc_dispatch(w, a, m); /* a protocol message: the dialog engine */
    return;
  }
  if (!(m->flags_ & TR_MSGF_SYS)) {
    /* An application message: to the first task waiting in tr_recv. */
    tr_task_t *t = ts->recv_head;
    m->next_ = NULL;
    if (ts->inbox_tail)
      ts->inbox_tail->next_ = m;
    else
      ts->inbox_head = m;
    ts->inbox_tail = m;
    if (t) {
      ts->recv_head = t->ready_next;
      if (!ts->recv_head)
        ts->recv_tail = NULL;
      ready_push(ts, t);
    }
    return;
  }
  switch (m->tag) {
  case TR_SYS_WAKE: {
    tr_task_t *t = m->ptr;
    if (t->state == TR_TASK_BLOCKED && t->wait_gen == m->u64) {
      t->timer_fired = 1;
      ready_push(ts, t);
    }
    release_ref(ts, t);
    break;
  }
  case TR_SYS_DEADLINE:
  case TR_SYS_CANCEL_SCOPE: {
    tr_scope_t *s = find_scope(ts, m->u64);
    if (s) {
      if (m->tag == TR_SYS_DEADLINE)
        s->deadline_hit_ = 1;
      cancel_local(ts, s);
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
    wake_cancelled(ts);
    break;
  case TR_SYS_CHILD_EXIT:
    tr__an_child_exited(m->ptr);
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
         * that was reported late (its nursery sees -TR_ENOMEM). */
        t->result = -TR_ENOMEM;
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
    post_run(a);
  return ts->live == 0 && ts->zombies == 0;
}

void tr__tasks_stop(struct tr_actor *a) {
  tr_tasks_t *ts = a->tasks;
  if (ts->stopping)
    return;
  ts->stopping = 1;
  wake_cancelled(ts);
}

void tr__tasks_free(tr_tasks_t *ts) {
  if (!ts)
    return;
  TR_ASSERT(ts->live == 0 && ts->zombies == 0);
  tr__error_free(ts->main_error);
  tr_buf_release(ts->main_value);
  tr__rpc_actor_free(ts);
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

/* ---- scopes ---------------------------------------------------------------- */

static int arm_deadline(tr_task_t *t, tr_scope_t *s) {
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
  tr_task_t *t = current();
  if (!t)
    return TR__EPERM_NOTASK();
  if (!s)
    return TR__EINVAL_NULL();
  memset(s, 0, sizeof(*s));
  s->task_ = t;
  s->id_ = ++tasks_of(t)->next_id;
  s->deadline_ = deadline;
  s->shield_ = shield != 0;
  s->cancel_seen_ = t->cancel_seen;
  if (deadline != TR_NO_DEADLINE) {
    if (deadline <= tr_now()) {
      s->cancel_called_ = 1; /* already past: cancelled from the start */
      s->deadline_hit_ = 1;
    } else {
      int rc = arm_deadline(t, s);
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
  return tr_scope_open(s, tr_now() + (ns > 0 ? ns : 0), 0);
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
  tr_task_t *t = current();
  if (t && t->actor == owner->actor) {
    cancel_local(tasks_of(t), s);
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
  tr_task_t *t = current();
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
  s->caught_ = s->cancel_called_ && t->cancel_seen > s->cancel_seen_;
  if (s->fail_ && s->deadline_hit_)
    return TR_ERROR(-TR_ETIMEDOUT, "fail_after deadline expired");
  return 0;
}

int tr_scope_cancelled_caught(const tr_scope_t *s) { return s && s->caught_; }

/* ---- nurseries ------------------------------------------------------------- */

int tr_nursery_open(tr_nursery_t **out) {
  tr_task_t *t = current();
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
  tr_task_t *t = current();
  if (!n || !fn)
    return TR__EINVAL_NULL();
  if (!t || t->actor != n->parent->actor)
    return TR_ERROR(-TR_EPERM,
                    "tr_nursery_spawn: only a task of the nursery's actor may spawn into it");
  if (n->closing)
    return TR_ERROR(-TR_ECLOSED, "tr_nursery_spawn: the nursery is closing");
  tr_task_t *c;
  int rc = task_new(t->actor, fn, arg, opts, &c);
  if (rc)
    return rc;
  c->nursery = n;
  c->scope = &n->scope; /* the child's chain continues into the nursery's */
  n->live++;
  ready_push(tasks_of(t), c);
  return 0;
}

int tr__nursery_spawn_internal(struct tr_nursery *n, tr_task_fn fn, void *arg, const char *name) {
  if (n->closing)
    return -TR_ECLOSED;
  tr_task_opts_t o = {.name = name};
  tr_task_t *c;
  int rc = task_new(n->parent->actor, fn, arg, &o, &c);
  if (rc)
    return rc;
  c->nursery = n;
  c->scope = &n->scope;
  n->live++;
  ready_push(tasks_of(c), c);
  return 0;
}

tr_task_t *tr__task_of_actor_current(struct tr_actor *a) {
  tr_task_t *t = current();
  return t && t->actor == a ? t : NULL;
}

int tr_nursery_cancel(tr_nursery_t *n) {
  return n ? tr_scope_cancel(&n->scope) : TR__EINVAL_NULL();
}

/* Records a failed child: the first cancels the nursery's scope. */
static void nursery_fail(struct tr_nursery *n, tr_task_t *t) {
  tr_error_t *e = t->error;
  t->error = NULL;
  if (!e)
    e = tr__error_new(t->result, NULL, "task %s failed: %s", t->name, tr_strerror(t->result));
  n->nfail++;
  if (n->nfail == 1) {
    n->first_rc = t->result;
    n->errors = e;
    cancel_local(tasks_of(t), &n->scope);
  } else {
    if (n->nfail == 2) {
      tr_error_t *g = tr__error_group_new("%s", "several tasks of a nursery failed");
      tr__error_group_add(g, n->errors);
      n->errors = g;
    }
    tr__error_group_add(n->errors, e);
  }
}

static void nursery_live_done(struct tr_nursery *n);

static void nursery_child_done(struct tr_nursery *n, tr_task_t *t) {
  if (t->result < 0 && t->result != -TR_ECANCELED)
    nursery_fail(n, t);
  nursery_live_done(n);
}

/*
 * tr_nursery_start.  Until the new task calls tr_task_started it belongs
 * to the caller, as in trio, where start runs it in a nursery of its own:
 * its scope chain ends in the caller's innermost scope (`base`, stable
 * while the caller waits) instead of the target nursery's, and its end is
 * reported to this record, not to the target.  The target counts it in
 * `live` from the start (trio's pending starts keep a nursery open).
 * tr_task_started moves it: the link of its chain that pointed at base is
 * pointed at the target's scope, which carries along every scope and
 * nursery the task opened meanwhile.  The record lives on the caller's
 * stack, which is safe because the caller waits until the task has either
 * moved or ended.
 */
typedef struct tr_start {
  tr_task_t *caller;
  struct tr_nursery *target;
  tr_scope_t *base;
  void *value;
  int result;        /* the task's result, when it ended unmoved */
  tr_error_t *error; /* ... and its error object */
  uint8_t started;   /* tr_task_started was called */
  uint8_t moved;     /* ... and moved the task into the target */
  uint8_t ended;     /* the task ended without moving */
} tr_start_t;

static void nursery_live_done(struct tr_nursery *n) {
  if (--n->live == 0 && n->waiting)
    ready_push(tasks_of(n->parent), n->parent);
}

static void start_child_done(tr_tasks_t *ts, tr_task_t *t) {
  tr_start_t *st = t->start;
  t->start = NULL;
  st->ended = 1;
  st->result = t->result;
  st->error = t->error; /* the caller's failure now, if any */
  t->error = NULL;
  nursery_live_done(st->target);
  if (st->caller->state == TR_TASK_BLOCKED)
    ready_push(ts, st->caller);
}

int tr_nursery_start(tr_nursery_t *n, tr_task_fn fn, void *arg, const tr_task_opts_t *opts,
                     void **value) {
  tr_task_t *t = current();
  if (value)
    *value = NULL;
  if (!n || !fn)
    return TR_ERROR(-TR_EINVAL, "tr_nursery_start: no nursery or no function");
  if (!t || t->actor != n->parent->actor)
    return TR_ERROR(-TR_EPERM, "tr_nursery_start: not a task of the nursery's actor");
  if (n->closing)
    return TR_ERROR(-TR_ECLOSED, "tr_nursery_start: the nursery is closing");
  if (task_cancelled(t)) {
    t->cancel_seen++;
    return TR_ERROR(-TR_ECANCELED, "tr_nursery_start cancelled");
  }
  tr_task_t *c;
  int rc = task_new(t->actor, fn, arg, opts, &c);
  if (rc)
    return TR_ERROR(rc, "tr_nursery_start: no memory for the task");
  tr_start_t st = {.caller = t, .target = n, .base = t->scope};
  const char *name = c->name; /* c is gone once it has ended */
  c->start = &st;
  c->scope = t->scope; /* runs under the caller until it has started */
  n->live++;
  ready_push(tasks_of(t), c);
  while (!st.moved && !st.ended) {
    t->blocked_on = "tr_nursery_start (until the new task calls tr_task_started)";
    block(t, 0); /* as nursery close: cancellation reaches the task */
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
  if (task_cancelled(t)) {
    t->cancel_seen++;
    return TR_ERROR(-TR_ECANCELED, "tr_nursery_start cancelled before the task started");
  }
  return tr_fail("RuntimeError", "child exited without calling tr_task_started()");
}

int tr_task_started(void *value) {
  tr_task_t *t = current();
  if (!t)
    return TR_ERROR(-TR_EPERM, "tr_task_started: not in a task");
  tr_start_t *st = t->start;
  if (!st || st->started)
    return TR_ERROR(-TR_EINVAL, "tr_task_started: no tr_nursery_start waits for this task");
  st->started = 1;
  tr_tasks_t *ts = tasks_of(t);
  if (chain_cancelled(st->base, ts)) {
    /* trio's started() in a cancelled start: the task stays with the
     * caller, which returns -TR_ECANCELED once the task has ended. */
    t->cancel_seen++;
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
    ready_push(ts, st->caller);
  /* Moved under a cancelled nursery: tasks this one started meanwhile may
   * be blocked and must see it now, as after any cancel. */
  if (chain_cancelled(&st->target->scope, ts))
    wake_cancelled(ts);
  return 0;
}

int tr_nursery_close(tr_nursery_t *n) {
  tr_task_t *t = current();
  if (!n)
    return TR__EINVAL_NULL();
  if (!t || t != n->parent)
    return TR_ERROR(-TR_EPERM,
                    "tr_nursery_close: only the task that opened the nursery may close it");
  n->closing = 1;
  while (n->live > 0) {
    n->waiting = 1;
    t->blocked_on = "tr_nursery_close";
    block(t, 0); /* no child outlives the nursery: not cancellable */
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
  } else if (task_cancelled(t)) {
    rc = TR_ERROR(-TR_ECANCELED, "tr_nursery_close: an enclosing scope is cancelled");
  }
  free(n);
  return rc;
}

/* ---- blocking calls ---------------------------------------------------------- */

int tr_checkpoint(void) {
  tr_task_t *t = current();
  if (!t)
    return TR__EPERM_NOTASK();
  if (task_cancelled(t))
    return observed_cancel(t);
  tr_tasks_t *ts = tasks_of(t);
  if (!ts->ready_head)
    return 0; /* nobody else is ready: yielding would change nothing */
  /* Yield: queue ourselves behind the ready tasks and switch out; the turn
   * loop resumes us after them. */
  ready_push(ts, t);
  tr_worker_t *w = tr__worker_self();
  tr__fiber_switch(&t->fiber, &w->main);
  return 0;
}

int tr_sleep_until(int64_t deadline) {
  tr_task_t *t = current();
  if (!t)
    return TR__EPERM_NOTASK();
  if (task_cancelled(t))
    return observed_cancel(t);
  if (deadline <= tr_now())
    return tr_checkpoint();
  tr_msg_t *m;
  /* u64: the generation block() is about to start. */
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
  block(t, 1);
  if (t->timer_fired)
    return 0;
  /* Woken by a cancellation before the timer: take the timer back.  If it
   * fired meanwhile, its message is on its way and drops the reference. */
  if (tr_timer_cancel(timer) == 0)
    release_ref(tasks_of(t), t);
  return observed_cancel(t);
}

int tr_sleep(int64_t ns) {
  if (ns <= 0)
    return tr_checkpoint();
  return tr_sleep_until(tr_now() + ns);
}

int tr_recv(tr_msg_t **out) {
  tr_task_t *t = current();
  if (!out)
    return TR__EINVAL_NULL();
  *out = NULL;
  if (!t)
    return TR__EPERM_NOTASK();
  tr_tasks_t *ts = tasks_of(t);
  for (;;) {
    if (task_cancelled(t))
      return observed_cancel(t);
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
    t->ready_next = NULL;
    if (ts->recv_tail)
      ts->recv_tail->ready_next = t;
    else
      ts->recv_head = t;
    ts->recv_tail = t;
    t->blocked_on = "tr_recv";
    block(t, 1);
    /* Woken by a message (dispatch dequeued us) or by a cancellation (we
     * may still be queued: leave the queue). */
    tr_task_t **pp = &ts->recv_head, *prev = NULL;
    for (; *pp; prev = *pp, pp = &(*pp)->ready_next) {
      if (*pp == t) {
        *pp = t->ready_next;
        if (ts->recv_tail == t)
          ts->recv_tail = prev;
        break;
      }
    }
    if (ts->inbox_head && !task_cancelled(t)) {
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

/* ---- task actors and tr_main -------------------------------------------------- */

/* A task actor has no behaviour: tr__actor_run routes its turns to the task
 * layer.  This one is only a placeholder that is never called. */
static void no_behaviour(void *state, tr_msg_t *m) {
  (void)state;
  (void)m;
  TR_ASSERT(!"a task actor's behaviour was called");
}

int tr_spawn_task_actor(tr_task_fn fn, void *arg, const tr_spawn_opts_t *opts, tr_actor_t **ref) {
  return tr__spawn_task_actor_watched(fn, arg, opts, NULL, NULL, ref);
}

int tr__spawn_task_actor_watched(tr_task_fn fn, void *arg, const tr_spawn_opts_t *opts,
                                 struct tr_actor *watcher, tr_an_child_t *rec, tr_actor_t **ref) {
  if (ref)
    *ref = NULL;
  if (!fn)
    return TR__EINVAL_NULL();
  tr_tasks_t *ts = calloc(1, sizeof(*ts));
  if (!ts)
    return TR__ENOMEM();
  if (watcher) {
    ts->watcher = tr_actor_dup(watcher);
    ts->watch_rec = rec;
  }
  tr_actor_t *a;
  int rc = tr__actor_spawn(no_behaviour, arg, opts, ts, &a);
  if (rc) {
    tr_actor_release(ts->watcher);
    free(ts);
    return rc;
  }
  /* The actor is not running yet and nobody else can reach its tasks
   * until the first turn, which the push below schedules (and orders
   * after these writes). */
  tr_task_opts_t to = {.name = "main"};
  tr_task_t *t;
  rc = task_new(a, fn, arg, &to, &t);
  if (rc) {
    /* Nothing ran: let it exit at once (its first turn finds no task),
     * without reporting to a watcher that never learns of it. */
    tr_actor_release(ts->watcher);
    ts->watcher = NULL;
    post_run(a);
    tr_actor_release(a);
    return rc;
  }
  ts->main = t;
  ready_push(ts, t);
  post_run(a);
  if (ref)
    *ref = a;
  else
    tr_actor_release(a);
  return 0;
}

int tr_task_actor_result(const tr_actor_t *a) {
  if (!a || !a->tasks)
    return TR_ERROR(-TR_EINVAL, "tr_task_actor_result: %s", a ? "not a task actor" : "no actor");
  if (!(tr_load_acquire(&a->flags) & TR_AF_DONE))
    return TR_ERROR(-TR_EBUSY, "tr_task_actor_result: actor %s is still running", tr_actor_name(a));
  return a->tasks->main_result;
}

struct main_ctx {
  tr_task_fn fn;
  void *arg;
  int result;
};

/* The root actor's main task: the user's root, after which the hang
 * report's delay starts (the root actor itself may then still be alive,
 * for an abandoned tr_to_thread call, say). */
static int main_task(void *arg) {
  struct main_ctx *c = arg;
  int rc = c->fn(c->arg);
  tr__rt_root_returned();
  return rc;
}

static int main_root(void *arg) {
  struct main_ctx *c = arg;
  tr_spawn_opts_t o = {.name = "root"};
  tr_actor_t *a;
  int rc = tr_spawn_task_actor(main_task, c, &o, &a);
  if (rc)
    return rc;
  tr__actor_set_kind(a, TR_AK_ROOT);
  tr__rt_wait_end(a); /* tr_join, with the hang report */
  c->result = tr_task_actor_result(a);
  tr_actor_release(a);
  return 0;
}

/*
 * tr_main's signals.  While tr_main runs, SIGINT and SIGTERM cancel the
 * root actor gracefully (tractor's KeyboardInterrupt): the handler calls
 * tr_actor_cancel_soon, which is async-signal-safe, on the root actor that
 * main_signal_task publishes in ms.root for as long as its main task runs.
 * A second signal while cancelling exits hard: the default disposition,
 * re-raised (Python's second Ctrl-C).  tr_main reports the cancellation
 * after tr_run has returned, in normal context.
 *
 * The published pointer must never be used after the task is done with
 * it: a handler counts itself in `in_handler` before loading it, and the
 * task, after unpublishing, waits for that count to drop to zero before
 * dropping its reference.  Both sides use seq_cst (a store then a load of
 * the other's word, Dekker style), so either the handler loads NULL or the
 * task sees the handler counted and waits; the wait is a few instructions
 * of a handler that never blocks.
 */
static struct {
  tr_actor_t *root;    /* atomic: the root actor (a reference) or NULL */
  uint32_t in_handler; /* atomic: handlers that may be using root */
  int signo;           /* atomic: the first signal received, 0 = none */
  uint32_t claimed;    /* atomic: a tr_main owns the dispositions below */
  struct sigaction old_int, old_term;
} ms;

static void main_on_signal(int signo) {
  int saved_errno = errno;
  int none = 0;
  /* seq_cst: see the comment above ms (Dekker with main_signal_task's
   * publish-then-check and unpublish-then-wait). */
  if (!__atomic_compare_exchange_n(&ms.signo, &none, signo, 0, __ATOMIC_SEQ_CST,
                                   __ATOMIC_SEQ_CST)) {
    /* Already cancelling: the user insists.  The signal is blocked while
     * its handler runs, so the re-raised one is delivered with the default
     * action (termination) as soon as this returns. */
    struct sigaction dfl;
    memset(&dfl, 0, sizeof(dfl));
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    (void)sigaction(signo, &dfl, NULL);
    (void)raise(signo);
    errno = saved_errno;
    return;
  }
  __atomic_fetch_add(&ms.in_handler, 1, __ATOMIC_SEQ_CST);
  /* seq_cst pairs with the stores of ms.root in main_signal_task. */
  tr_actor_t *root = __atomic_load_n(&ms.root, __ATOMIC_SEQ_CST);
  if (root)
    (void)tr_actor_cancel_soon(root);
  /* Release pairs with the acquire load in main_signal_task's wait: our
   * use of root happens before it drops its reference. */
  __atomic_fetch_sub(&ms.in_handler, 1, __ATOMIC_RELEASE);
  errno = saved_errno;
}

struct main_sig_ctx {
  tr_task_fn fn;
  void *arg;
};

/* The root actor's main task under tr_main: publishes the actor for the
 * signal handler around the user's root function. */
static int main_signal_task(void *arg) {
  struct main_sig_ctx *c = arg;
  tr_actor_t *self = tr_actor_dup(tr_self());
  /* seq_cst: publish, then check for a signal that came before it (the
   * handler stores signo, then loads root). */
  __atomic_store_n(&ms.root, self, __ATOMIC_SEQ_CST);
  int rc;
  if (__atomic_load_n(&ms.signo, __ATOMIC_SEQ_CST) != 0)
    rc = TR_ERROR(-TR_ECANCELED, "interrupted by a signal before the root task started");
  else
    rc = c->fn(c->arg);
  /* seq_cst: unpublish, then wait for handlers that loaded the pointer
   * before this store (they counted themselves before loading). */
  __atomic_store_n(&ms.root, (tr_actor_t *)NULL, __ATOMIC_SEQ_CST);
  /* Acquire pairs with the release fetch_sub in main_on_signal. */
  while (__atomic_load_n(&ms.in_handler, __ATOMIC_ACQUIRE) != 0)
    sched_yield();
  tr_actor_release(self);
  return rc;
}

static void main_signals_install(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = main_on_signal;
  /* Each signal blocks both while a handler runs: a SIGTERM arriving
   * inside the SIGINT handler waits, and then counts as the second. */
  sigemptyset(&sa.sa_mask);
  sigaddset(&sa.sa_mask, SIGINT);
  sigaddset(&sa.sa_mask, SIGTERM);
  /* Interrupted system calls in user code resume: the cancellation, not
   * EINTR, is how the program learns of the signal. */
  sa.sa_flags = SA_RESTART;
  __atomic_store_n(&ms.signo, 0, __ATOMIC_SEQ_CST);
  (void)sigaction(SIGINT, &sa, &ms.old_int);
  (void)sigaction(SIGTERM, &sa, &ms.old_term);
}

static void main_signals_restore(void) {
  (void)sigaction(SIGINT, &ms.old_int, NULL);
  (void)sigaction(SIGTERM, &ms.old_term, NULL);
}

int tr_main(int argc, char **argv, tr_task_fn root, void *arg, const tr_config_t *cfg) {
  (void)argc;
  (void)argv;
  if (!root)
    return TR_ERROR(-TR_EINVAL, "tr_main: no root function");
  struct main_sig_ctx sc = {.fn = root, .arg = arg};
  struct main_ctx c = {.fn = root, .arg = arg, .result = 0};
  /* One tr_main at a time owns the dispositions (a concurrent one gets
   * -TR_EBUSY from tr_run anyway, and must not restore them under the
   * running one).  Acquire pairs with the release store below. */
  uint32_t unclaimed = 0;
  int owner = __atomic_compare_exchange_n(&ms.claimed, &unclaimed, 1, 0, __ATOMIC_ACQUIRE,
                                          __ATOMIC_RELAXED);
  if (owner) {
    c.fn = main_signal_task;
    c.arg = &sc;
    main_signals_install();
  }
  int rc = tr_run(cfg, main_root, &c);
  int signo = 0;
  if (owner) {
    main_signals_restore();
    signo = __atomic_load_n(&ms.signo, __ATOMIC_SEQ_CST);
    __atomic_store_n(&ms.claimed, 0, __ATOMIC_RELEASE);
  }
  if (signo != 0) {
    /* Whatever the root returned: the program was interrupted, as a
     * KeyboardInterrupt propagates through tractor's runtime. */
    tr_log(TR_LOG_WARN, "cancelled by %s", signo == SIGINT ? "SIGINT" : "SIGTERM");
    return TR_ERROR(-TR_ECANCELED, "the program was cancelled by %s",
                    signo == SIGINT ? "SIGINT" : "SIGTERM");
  }
  return rc ? rc : c.result;
}

/* ---- for to_thread.c ------------------------------------------------------------ */

tr_task_t *tr__task_current(void) { return current(); }
void tr__task_block(tr_task_t *t, int cancellable) { block(t, cancellable); }
int tr__task_cancelled(tr_task_t *t) { return task_cancelled(t); }
void tr__task_unref(tr_task_t *t) { release_ref(tasks_of(t), t); }

void tr__task_wake_if(tr_task_t *t, uint64_t gen) {
  if (t->state == TR_TASK_BLOCKED && t->wait_gen == gen) {
    t->timer_fired = 1;
    ready_push(tasks_of(t), t);
  }
}

int tr__actor_request_cancel(struct tr_actor *a, int force) {
  if (tr_actor_exited(a))
    return -TR_ECLOSED;
  tr_msg_t *m;
  /* A behaviour actor gets the shutdown wake-up (tag 0) and the flag. */
  int rc = tr__sys_msg(&m, a->tasks ? TR_SYS_CANCEL_ACTOR : 0, force != 0, NULL, 0);
  if (rc)
    return rc;
  if (!a->tasks)
    tr_for_seqcst(&a->flags, TR_AF_EXIT_REQ);
  return tr__actor_push(a, m);
}

void tr__tasks_notify_exit(struct tr_actor *a) {
  tr_tasks_t *ts = a->tasks;
  if (!ts)
    return;
  tr__rpc_actor_exit(a);
  /* Spare stacks go back to the pool now, on a worker, not whenever the
   * last reference to the actor happens to be dropped. */
  while (ts->spare) {
    tr_task_t *t = ts->spare;
    ts->spare = t->next;
    tr__fiber_destroy(&t->fiber);
    free(t);
  }
  ts->nspare = 0;
  if (!ts->watcher)
    return;
  tr_an_child_t *c = ts->watch_rec;
  c->result = ts->main_done ? ts->main_result : -TR_ECANCELED;
  c->error = ts->main_error;
  ts->main_error = NULL;
  c->value = ts->main_value;
  ts->main_value = NULL;
  tr_msg_t *m;
  (void)tr__sys_msg(&m, TR_SYS_CHILD_EXIT, 0, c, 1); /* the parent waits */
  tr_actor_t *watcher = ts->watcher;
  ts->watcher = NULL;
  /* The parent cannot have exited: its nursery waits for this message. */
  (void)tr__actor_push(watcher, m);
  tr_actor_release(watcher);
}

void tr__task_wake_blocked(tr_task_t *t) {
  if (t->state == TR_TASK_BLOCKED)
    ready_push(tasks_of(t), t);
}

void tr__task_cancel_scope_local(tr_task_t *t, tr_scope_t *s) { cancel_local(tasks_of(t), s); }

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
  block(t, 0);
  if (armed && !t->timer_fired && tr_timer_cancel(timer) == 0)
    release_ref(tasks_of(t), t);
}
