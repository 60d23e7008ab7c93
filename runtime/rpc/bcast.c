/*
 * Local broadcast of one stream (tractor's MsgStream.subscribe): a ring of
 * the last window of values, one read position per receiver; whichever
 * receiver is furthest ahead pulls from the stream.
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

void tr__bcast_free(tr_bcast_t *bc) {
  if (!bc)
    return;
  for (uint64_t i = bc->head > bc->cap ? bc->head - bc->cap : 0; i < bc->head; i++)
    tr_buf_release(bc->ring[i % bc->cap]);
  tr__error_free(bc->end_err);
  free(bc->ring);
  free(bc);
}

/* Broadcast receive: read at s->seq, pulling from the source when this
 * receiver is the furthest ahead. */
int tr__bcast_recv(tr_stream_t *s, tr_task_t *t, tr_buf_t **msg) {
  tr_bcast_t *bc = s->bc;
  tr_ctx_t *c = bc->src->ctx;
  for (;;) {
    if (s->seq < bc->head) {
      uint64_t oldest = bc->head > bc->cap ? bc->head - bc->cap : 0;
      if (s->seq < oldest) {
        uint64_t missed = oldest - s->seq;
        s->seq = oldest;
        return TR_ERROR(-TR_ELAGGED, "subscriber lagged: %llu values skipped",
                        (unsigned long long)missed);
      }
      *msg = tr_buf_ref(bc->ring[s->seq % bc->cap]);
      s->seq++;
      return 0;
    }
    if (bc->ended) {
      if (bc->end_err)
        tr__error_put(tr__error_copy(bc->end_err));
      return bc->end_rc;
    }
    if (bc->pulling) {
      tr__ctx_enter(c);
      s->busy = 1;
      int rc = tr__ctx_wait(c, t, "tr_stream_recv (a subscription)");
      s->busy = 0;
      tr__ctx_leave(c);
      if (rc)
        return rc;
      continue;
    }
    bc->pulling = 1;
    s->busy = 1;
    tr_buf_t *v = NULL;
    int rc = tr__ctx_recv(c, t, &v);
    s->busy = 0;
    bc->pulling = 0;
    tr__ctx_notify(c); /* the others: a new value, or the end, or a free pull */
    if (rc == -TR_ECANCELED)
      return rc; /* this receiver's cancellation, not the stream's end */
    if (rc) {
      bc->ended = 1;
      bc->end_rc = rc;
      bc->end_err = tr__error_copy(tr_error_last());
      continue;
    }
    if (bc->head >= bc->cap)
      tr_buf_release(bc->ring[bc->head % bc->cap]);
    bc->ring[bc->head % bc->cap] = v;
    bc->head++;
  }
}

int tr_stream_subscribe(tr_stream_t *s, tr_stream_t **out) {
  if (out)
    *out = NULL;
  if (!s || !out)
    return TR__EINVAL_NULL();
  if (s->is_sub)
    s = s->bc->src;
  int rc = s->ctx->side == SIDE_CALLER ? tr__ctx_refuse_closing(s->ctx) : 0;
  if (rc)
    return rc;
  tr_bcast_t *bc = s->bc;
  if (!bc) {
    bc = calloc(1, sizeof(*bc));
    if (!bc)
      return TR__ENOMEM();
    bc->cap = s->ctx->window;
    bc->ring = calloc(bc->cap, sizeof(tr_buf_t *));
    if (!bc->ring) {
      free(bc);
      return TR__ENOMEM();
    }
    bc->src = s;
    s->bc = bc;
  }
  tr_stream_t *sub = calloc(1, sizeof(*sub));
  if (!sub)
    return TR__ENOMEM();
  sub->ctx = s->ctx;
  sub->bc = bc;
  sub->is_sub = 1;
  sub->seq = bc->head; /* values from now on (tractor) */
  sub->bnext = bc->subs;
  bc->subs = sub;
  *out = sub;
  return 0;
}
