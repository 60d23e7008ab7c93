/*
 * Task actors and tr_main: an actor whose main task runs a function, the
 * root actor of tr_main, and SIGINT/SIGTERM as a graceful cancel of the
 * root (see task.c for the task layer itself).
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

/* A task actor has no behaviour: tr__actor_run routes its turns to the task
 * layer.  This one is only a placeholder that is never called. */
static void no_behaviour(void *state, tr_msg_t *m) {
  (void)state;
  (void)m;
  TR_ASSERT(!"a task actor's behaviour was called");
}

size_t tr__tasks_ext_size;

int tr_spawn_task_actor(tr_task_fn fn, void *arg, const tr_spawn_opts_t *opts, tr_actor_t **ref) {
  return tr__spawn_task_actor_watched(fn, arg, opts, NULL, 0, ref);
}

int tr__spawn_task_actor_watched(tr_task_fn fn, void *arg, const tr_spawn_opts_t *opts,
                                 struct tr_actor *watcher, uint64_t watch_cid, tr_actor_t **ref) {
  return tr__spawn_task_actor_as(fn, arg, opts, watcher, watch_cid, NULL, ref);
}

int tr__spawn_task_actor_as(tr_task_fn fn, void *arg, const tr_spawn_opts_t *opts,
                            struct tr_actor *watcher, uint64_t watch_cid, const uint8_t *uuid,
                            tr_actor_t **ref) {
  if (ref)
    *ref = NULL;
  if (!fn)
    return TR__EINVAL_NULL();
  size_t head = (sizeof(tr_tasks_t) + 15) & ~(size_t)15; /* the rpc state is aligned */
  tr_tasks_t *ts = calloc(1, head + tr__tasks_ext_size);
  if (!ts)
    return TR__ENOMEM();
  if (tr__tasks_ext_size)
    ts->rpc = (struct tr_rpc *)((char *)ts + head);
  if (watcher) {
    ts->watcher = tr_actor_dup(watcher);
    ts->watch_cid = watch_cid;
  }
  tr_actor_t *a;
  int rc = tr__actor_spawn_as(no_behaviour, arg, opts, ts, uuid, 0, &a);
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
  rc = tr__task_new(a, fn, arg, &to, &t);
  if (rc) {
    /* Nothing ran: let it exit at once (its first turn finds no task),
     * without reporting to a watcher that never learns of it. */
    tr_actor_release(ts->watcher);
    ts->watcher = NULL;
    tr__tasks_post_run(a);
    tr_actor_release(a);
    return rc;
  }
  ts->main = t;
  tr__task_ready_push(ts, t);
  tr__tasks_post_run(a);
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
  const tr_config_t *cfg;
  tr_error_t *err; /* why the root failed, or the node did not start (for tr_main's caller) */
};

/* The root actor's main task: the user's root, after which the hang
 * report's delay starts (the root actor itself may then still be alive,
 * for an abandoned tr_to_thread call, say). */
static int main_task(void *arg) {
  struct main_ctx *c = arg;
  int rc = tr__main_node_ops ? tr__main_node_ops->start(c->cfg) : 0;
  if (rc == 0) {
    rc = c->fn(c->arg);
    if (rc < 0) {
      /* The error the root failed with, for tr_main's caller (the task's
       * error slot goes with the task); one that returned a bare code gets
       * an object saying so. */
      const tr_error_t *e = tr_error_last();
      c->err = e && tr_error_code(e) == rc
                   ? tr__error_copy(e)
                   : tr__error_new(rc, NULL, "the root function returned %d (%s)", rc,
                                   tr_strerror(rc));
    }
  } else {
    const tr_error_t *e = tr_error_last();
    c->err = e ? tr__error_copy(e) : NULL;
    tr_log(TR_LOG_ERROR, "tr_main: %s", e ? tr_error_message(e) : tr_strerror(rc));
  }
  if (tr__main_node_ops)
    tr__main_node_ops->stop();
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
  TR_ASSERT(a != NULL); /* what gcc's LTO cannot see: a spawn that returned 0 set it */
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

/* Read once, before main: the child's channel takes its parent's address
 * out of the environment as it starts (so that programs it runs do not
 * inherit it), and the answer must not change then. */
static int spawned_child;
__attribute__((constructor)) static void spawned_child_ctor(void) {
  spawned_child = getenv("TR_PARENT_ADDR") != NULL;
}

int tr_spawned_child(void) { return spawned_child; }

int tr_main(int argc, char **argv, tr_task_fn root, void *arg, const tr_config_t *cfg) {
  (void)argc;
  (void)argv;
  if (tr_spawned_child() && tr__main_child_hook) {
    /* A child actor process: it serves its SpawnSpec and exits.  Ctrl-C
     * reaches the whole process group; the root tears the tree down
     * through the protocol, so the child leaves SIGINT to it. */
    signal(SIGINT, SIG_IGN);
    exit(tr__main_child_hook(cfg));
  }
  if (!root)
    return TR_ERROR(-TR_EINVAL, "tr_main: no root function");
  struct main_sig_ctx sc = {.fn = root, .arg = arg};
  struct main_ctx c = {.fn = root, .arg = arg, .result = 0, .cfg = cfg};
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
    tr__error_free(c.err);
    tr_log(TR_LOG_WARN, "cancelled by %s", signo == SIGINT ? "SIGINT" : "SIGTERM");
    return TR_ERROR(-TR_ECANCELED, "the program was cancelled by %s",
                    signo == SIGINT ? "SIGINT" : "SIGTERM");
  }
  if (c.err && (rc ? rc : c.result) == tr_error_code(c.err))
    tr__error_put(c.err); /* the caller's tr_error_last says why */
  else
    tr__error_free(c.err);
  if (!rc && c.result < 0 && !c.err) /* the root task never ran: no stack for it */
    return TR_ERROR(c.result, "tr_main: the root task could not run: %s", tr_strerror(c.result));
  return rc ? rc : c.result;
}
