/*
 * MsgStreams (docs/PROTOCOL.md section 7): Yield with per-direction credit
 * windows, Stop, receiving in order with the dialog's outcome after the
 * values, and leaving an open_stream_from stream early.
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

/* A Yield beyond the window: the peer ignored it, and the dialog fails
 * (PROTOCOL.md 7).  The in-window path is tr__on_yield, inline in rpc.h.
 * On the callee the Error is the dialog's final message, sent once (the
 * dispatch drops the Yields that follow, c->overran); the task is
 * cancelled by this side, not by the caller, who sent no Cancel: its end
 * sends nothing more (serve_request). */
void tr__on_yield_overrun(tr_ctx_t *c, tr_msg_t *m) {
  tr_msg_free(m);
  if (c->side == SIDE_CALLEE) {
    tr_error_t *e = tr__error_new(-TR_EOVERRUN, NULL, "actor %s sent beyond the window of %u",
                                  tr_actor_name(c->peer), c->window);
    tr__send_error(c->actor, c->peer, c->cid, -TR_EOVERRUN, e, NULL);
    tr__error_free(e);
    c->overran = 1;
    if (c->task_scope)
      tr__task_cancel_scope_local(c->task, c->task_scope);
  } else if (!c->done) {
    (void)tr__send_cancel(c->actor, c->peer, TR_BODY_CANCEL, c->cid, 0, 0);
    c->cancel_called = 1;
    c->has_out = 1;
    c->done = 1;
    c->out_rc = TR_ERROR(-TR_EOVERRUN, "actor %s sent beyond the window of %u",
                         tr_actor_name(c->peer), c->window);
    c->out_err = tr__error_take();
  }
  tr__ctx_notify(c);
}

/* ---- streams ---------------------------------------------------------------- */

int tr_stream_send(tr_stream_t *s, const tr_buf_t *msg) {
  if (!s)
    return TR__EINVAL_NULL();
  if (s->is_sub)
    return TR_ERROR(-TR_EPERM, "a subscriber cannot send");
  tr_ctx_t *c = s->ctx;
  tr_task_t *t = tr__rpc_current_task();
  if (!t)
    return TR__EPERM_NOTASK();
  if (c->tx_stop)
    return TR_ERROR(-TR_ECLOSED, "the stream was closed on this side");
  if (c->side == SIDE_CALLER && c->kind == TR_FUNC_STREAM)
    return TR_ERROR(-TR_EPERM, "a stream from open_stream_from is receive-only");
  if (c->side == SIDE_CALLER) {
    int rc = tr__ctx_refuse_closing(c);
    if (rc)
      return rc;
    if (c->cancel_called)
      return tr__ctx_cancelled_here(c, "tr_stream_send");
  }
  /* As tr_stream_recv: once the dialog has ended, its outcome (a remote
   * error that cancelled the context's scope) is what the caller gets,
   * not the cancellation it caused. */
  if (!c->done && tr__task_cancelled(t))
    return tr__task_observe_cancel(t, "%s", "");
  int rc = c->done ? 0 : tr__rpc_fits(c->peer, msg, "tr_stream_send: the message");
  if (rc)
    return rc;
  tr__ctx_enter(c);
  for (;;) {
    if (c->done) {
      if (c->side == SIDE_CALLER) {
        rc = tr__ctx_put_outcome(c);
        if (rc == 0)
          rc = c->cancel_called
                   ? TR_ERROR(-TR_ECTXCANCELED, "tr_stream_send: the context was cancelled")
                   : TR_ERROR(-TR_ECLOSED, "tr_stream_send: actor %s has returned",
                              tr_actor_name(c->peer));
      } else {
        rc = TR_ERROR(-TR_ECLOSED, "tr_stream_send: the dialog has ended");
      }
      break;
    }
    if (c->side == SIDE_CALLEE && (c->cancel_req || c->overran) && t != c->task) {
      rc = c->overran ? TR_ERROR(-TR_ECLOSED, "the dialog failed: the caller overran the window")
                      : TR_ERROR(-TR_ECLOSED, "the caller has left the dialog");
      break;
    }
    if (c->credit > 0)
      break;
    if (c->overrun_error) {
      rc = TR_ERROR(-TR_EOVERRUN,
                    "actor %s has not consumed the window of %u messages",
                    tr_actor_name(c->peer), c->window);
      break;
    }
    if ((rc = tr__ctx_wait(c, t, "tr_stream_send (out of credit: the receiver is behind)")) != 0)
      break;
  }
  tr__ctx_leave(c);
  if (rc)
    return rc;
  c->credit--;
  rc = tr__send_body(c->peer, TR_BODY_YIELD, c->cid, 0, tr_buf_ref((tr_buf_t *)msg));
  if (rc == 0)
    return 0;
  if (rc != -TR_ECLOSED) { /* no message could be had: nothing was sent */
    c->credit++;
    return TR_ERROR(rc, "tr_stream_send to actor %s: %s", tr_actor_name(c->peer), tr_strerror(rc));
  }
  return TR_ERROR(-TR_ECLOSED, "actor %s has exited", tr_actor_name(c->peer));
}

/* Takes the next received value of the context, returning credit as the
 * application consumes (half a window at a time). */
static tr_buf_t *rx_pop(tr_ctx_t *c) {
  tr_msg_t *m = c->rx_head;
  c->rx_head = m->next_;
  if (!c->rx_head)
    c->rx_tail = NULL;
  c->rx_len--;
  tr_buf_t *v = m->payload;
  m->payload = NULL;
  tr_msg_free(m);
  if (++c->unacked >= (c->window + 1) / 2 && !c->done) {
    (void)tr__send_body(c->peer, TR_BODY_CREDIT, c->cid, c->unacked, NULL);
    c->unacked = 0;
  }
  return v;
}

/* Receives from the context itself (not through a broadcast). */
int tr__ctx_recv(tr_ctx_t *c, tr_task_t *t, tr_buf_t **msg) {
  int rc = 0;
  tr__ctx_enter(c);
  for (;;) {
    if (c->side == SIDE_CALLER && c->kind == TR_FUNC_CONTEXT && c->cancel_called) {
      rc = tr__ctx_cancelled_here(c, "tr_stream_recv");
      break;
    }
    /* A cancellation point even when a value is waiting (trio's
     * receive), unless the dialog has ended: its outcome (a remote error
     * that cancelled the context's scope) is what the caller gets. */
    if (!c->done && tr__task_cancelled(t)) {
      rc = tr__task_observe_cancel(t, "%s", "");
      break;
    }
    if (c->rx_head) {
      tr_buf_t *v = rx_pop(c);
      rc = c->entry ? tr__rpc_check_payload(c->entry, TR__RPC_YIELD, v) : 0;
      if (rc == 0) {
        *msg = v;
        break;
      }
      tr_buf_release(v);
      if (c->side == SIDE_CALLER) {
        /* A value of the wrong type ends the dialog: the caller fails
         * with MsgTypeError and cancels the callee (PROTOCOL.md 6.2). */
        tr__ctx_send_cancel(c);
        c->done = c->has_out = 1;
        c->out_rc = rc;
        tr__error_free(c->out_err);
        c->out_err = tr__error_copy(tr_error_last());
        tr__ctx_discard_rx(c);
      }
      break;
    }
    if (c->done && c->side == SIDE_CALLER) {
      /* A failure (remote, or found here) is returned even after a Stop. */
      rc = tr__ctx_put_outcome(c);
      if (rc == 0)
        rc = c->cancel_called && !c->rx_stop && c->final && c->final->body == TR_BODY_ERROR
                 ? TR_ERROR(-TR_ECTXCANCELED, "tr_stream_recv: the dialog was cancelled")
                 : tr__error_quick(-TR_EEOF);
      break;
    }
    /* The end of every stream: the shared EndOfChannel error, no
     * allocation. */
    if (c->rx_stop) {
      rc = tr__error_quick(-TR_EEOF);
      break;
    }
    if (c->done) {
      rc = TR_ERROR(-TR_ECLOSED, "tr_stream_recv: the dialog has ended");
      break;
    }
    if (c->side == SIDE_CALLEE && (c->cancel_req || c->overran) && t != c->task) {
      rc = c->overran ? TR_ERROR(-TR_ECLOSED, "the dialog failed: the caller overran the window")
                      : TR_ERROR(-TR_ECLOSED, "the caller has left the dialog");
      break;
    }
    /* Everything received is consumed: under TR_OVERRUN_ERROR the credit
     * not yet returned goes back before this side waits (rx_pop returns
     * it half a window at a time), or the sender would be refused for
     * values consumed long ago.  Under TR_OVERRUN_BLOCK the sender never
     * waits for that remainder (it still has the rest of the window), and
     * an extra Credit per wait would cost a fast stream. */
    if (c->unacked && c->overrun_error) {
      (void)tr__send_body(c->peer, TR_BODY_CREDIT, c->cid, c->unacked, NULL);
      c->unacked = 0;
    }
    if ((rc = tr__ctx_wait(c, t, "tr_stream_recv")) != 0)
      break;
  }
  tr__ctx_leave(c);
  return rc;
}

int tr_stream_recv(tr_stream_t *s, tr_buf_t **msg) {
  if (msg)
    *msg = NULL;
  if (!s || !msg)
    return TR__EINVAL_NULL();
  tr_task_t *t = tr__rpc_current_task();
  if (!t)
    return TR_ERROR(-TR_EPERM, "tr_stream_recv runs in a task");
  int rc = s->ctx->side == SIDE_CALLER ? tr__ctx_refuse_closing(s->ctx) : 0;
  if (rc)
    return rc;
  if (s->bc)
    return tr__bcast_recv(s, t, msg);
  return tr__ctx_recv(s->ctx, t, msg);
}

int tr_stream_close(tr_stream_t *s) {
  if (!s)
    return TR__EINVAL_NULL();
  tr_ctx_t *c = s->ctx;
  if (s->is_sub) {
    if (s->busy)
      return TR_ERROR(-TR_EBUSY, "a task is receiving on this subscriber");
    for (tr_stream_t **pp = &s->bc->subs; *pp; pp = &(*pp)->bnext)
      if (*pp == s) {
        *pp = s->bnext;
        break;
      }
    free(s);
    tr_error_clear(); /* errors.h: a successful close clears the last error */
    return 0;
  }
  tr_task_t *t = tr__rpc_current_task();
  if (!t)
    return TR__EPERM_NOTASK();
  if (c->side == SIDE_CALLER && c->kind == TR_FUNC_STREAM) {
    /* Leaving open_stream_from: the dialog ends here. */
    if (s->bc && s->bc->subs)
      return TR_ERROR(-TR_EBUSY, "the stream still has a subscriber (close the subscribers first)");
    if (c->users || c->waiters)
      return TR_ERROR(-TR_EBUSY, "the stream is in use by another task");
    if (!c->done)
      tr__ctx_cancel_and_drain(c, t);
    int rc = 0;
    if (c->done)
      rc = tr__ctx_put_outcome(c);
    if (rc == 0)
      tr_error_clear(); /* errors.h: a successful close clears the last error */
    tr__bcast_free(s->bc);
    tr__ctx_unlink(c->actor->tasks, c);
    tr__ctx_free(c);
    return rc;
  }
  if (!c->tx_stop && !c->done) {
    c->tx_stop = 1;
    (void)tr__send_body(c->peer, TR_BODY_STOP, c->cid, 0, NULL);
  }
  c->tx_stop = 1;
  tr_error_clear();
  return 0;
}
