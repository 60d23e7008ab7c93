/*
 * The lifetime stack: process-wide teardown callbacks that tr_run runs at
 * its very end (tractor's lifetime_stack, an ExitStack closed when the
 * root actor's runtime exits).
 *
 * A singly linked list under a mutex, newest first.  Pushes are rare (a
 * handful per program) and never on a hot path, so a lock costs nothing
 * worth avoiding, and it lets a push come from any thread at any time:
 * before the runtime starts, from tasks and behaviours while it runs, and
 * from the callbacks themselves while the stack is being run.
 *
 * Running pops one entry at a time and calls it with the lock released, so
 * a callback may push: its new entry is now the newest and runs next,
 * which is what LIFO order means for an ExitStack too.  Popping before the
 * call is what makes "exactly once" hold even if two threads ever ran the
 * stack at the same time (tr_run is serialised, so they do not).
 */
#include <pthread.h>
#include <stdlib.h>

#include <tractor/actor.h>

#include "runtime/error/error.h"
#include "runtime/runtime.h"

typedef struct lt_entry {
  struct lt_entry *next;
  void (*fn)(void *arg);
  void *arg;
} lt_entry_t;

/* Statically initialised and never destroyed: usable before any runtime
 * exists and after the last one is gone. */
static pthread_mutex_t lt_lock = PTHREAD_MUTEX_INITIALIZER;
static lt_entry_t *lt_head; /* under lt_lock; newest first */

int tr_lifetime_push(void (*fn)(void *arg), void *arg) {
  if (!fn)
    return TR__EINVAL_NULL();
  lt_entry_t *e = malloc(sizeof(*e));
  if (!e)
    return TR__ENOMEM();
  e->fn = fn;
  e->arg = arg;
  pthread_mutex_lock(&lt_lock);
  e->next = lt_head;
  lt_head = e;
  pthread_mutex_unlock(&lt_lock);
  return 0;
}

void tr__lifetime_run(void) {
  for (;;) {
    pthread_mutex_lock(&lt_lock);
    lt_entry_t *e = lt_head;
    if (e)
      lt_head = e->next;
    pthread_mutex_unlock(&lt_lock);
    if (!e)
      return;
    /* Unlocked: the callback may push (or take any lock of its own). */
    e->fn(e->arg);
    free(e);
  }
}
