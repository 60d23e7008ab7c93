/*
 * Message allocation.  Messages are 64-byte objects allocated and freed at
 * very high rates (one per send), so each worker keeps a free list of up to
 * TR_MSGPOOL_CAP of them.  A message may be freed on a different worker
 * than the one that allocated it; it simply joins the freeing worker's
 * list.  Flows that allocate on one worker and free on another drain one
 * list into malloc and refill the other from it: correct, just slower.
 * Non-worker threads use malloc directly.
 */
#include <stdlib.h>
#include <string.h>

#include <tractor/actor.h>

#include "runtime/runtime.h"
#include "schema/envelope.h"

int tr_msg_new(tr_msg_t **out) {
  if (!out)
    return -TR_EINVAL;
  tr_worker_t *w = tr__worker_self();
  tr_msg_t *m;
  if (w && w->pool) {
    m = w->pool;
    w->pool = m->next_;
    w->pool_len--;
  } else {
    m = malloc(sizeof(*m));
    if (!m) {
      *out = NULL;
      return -TR_ENOMEM;
    }
  }
  memset(m, 0, sizeof(*m));
  TR_COUNT(w, msgs_new, 1);
  *out = m;
  return 0;
}

void tr__msg_dispose(tr_worker_t *w, tr_msg_t *m) {
  if (m->payload)
    tr_buf_release(m->payload);
  if (m->from)
    tr_actor_release(m->from);
  if (m->x_)
    tr__envx_free(m->x_);
  TR_COUNT(w, msgs_freed, 1);
  if (w && w->pool_len < TR_MSGPOOL_CAP) {
    m->next_ = w->pool;
    w->pool = m;
    w->pool_len++;
  } else {
    free(m);
  }
}

void tr_msg_free(tr_msg_t *m) {
  if (!m)
    return;
  tr_worker_t *w = tr__worker_self();
  if (w && w->cur_msg == m)
    w->cur_msg = NULL; /* the behaviour disposed of its message itself */
  tr__msg_dispose(w, m);
}

void tr_msg_take(tr_msg_t *m) {
  tr_worker_t *w = tr__worker_self();
  if (w && m && w->cur_msg == m)
    w->cur_msg = NULL;
}

void tr__msgpool_drain(tr_worker_t *w) {
  while (w->pool) {
    tr_msg_t *m = w->pool;
    w->pool = m->next_;
    free(m);
  }
  w->pool_len = 0;
}
