/*
 * Cancelling a whole actor (docs/PROTOCOL.md 8.2): Cancel(whole_actor)
 * records who asked, every task is cancelled, and the actor acknowledges
 * with CancelAck as it exits; tr_portal_cancel_actor is the requester's
 * side, with its bounded wait.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <tractor/portal.h>

#include "runtime/reactor/reactor.h"
#include "runtime/actor/actor.h"
#include "runtime/error/error.h"
#include "runtime/platform/log.h"
#include "runtime/platform/assert.h"
#include "runtime/rpc/rpc.h"
#include "runtime/rpc/registry.h"
#include "runtime/sched/worker.h"
#include "runtime/task/task.h"
#include "schema/envelope.h"

/* Cancel(whole_actor) from R: every task of the actor is cancelled (shields
 * hold), each served dialog reports ContextCancelled naming R, and R gets
 * CancelAck when the actor exits. */
void tr__on_cancel_actor(tr_actor_t *a, tr_msg_t *m) {
  tr_tasks_t *ts = a->tasks;
  tr_cancel_ack_t *k = m->from ? malloc(sizeof(*k)) : NULL; /* no requester: no ack */
  if (k) {
    k->to = tr_actor_dup(m->from);
    k->cid = m->cid;
    k->next = ts->rpc->cancel_acks;
    ts->rpc->cancel_acks = k;
  }
  if (!ts->rpc->cancel_by && (ts->rpc->cancel_by = malloc(sizeof(*ts->rpc->cancel_by))) &&
      tr__msg_sender(ts->rpc->cancel_by, m) != 0) {
    free(ts->rpc->cancel_by); /* out of memory: the actor itself is named */
    ts->rpc->cancel_by = NULL;
  }
  tr__tasks_stop(a);
}

void tr__rpc_actor_exit(tr_actor_t *a) {
  tr_tasks_t *ts = a->tasks;
  while (ts->rpc->cancel_acks) {
    tr_cancel_ack_t *k = ts->rpc->cancel_acks;
    ts->rpc->cancel_acks = k->next;
    (void)tr__send_cancel(a, k->to, TR_BODY_CANCEL_ACK, k->cid, 1, 1);
    tr_actor_release(k->to);
    free(k);
  }
  if (ts->rpc->cancel_by) {
    tr__uid_fini(ts->rpc->cancel_by);
    free(ts->rpc->cancel_by);
    ts->rpc->cancel_by = NULL;
  }
  tr__an_report_exit(a);
}

int tr_portal_cancel_actor(tr_portal_t *p, int64_t timeout_ns, int *acked) {
  if (acked)
    *acked = 0;
  if (!p)
    return TR__EINVAL_NULL();
  /* Exited: as far as this side knows (an actor in another process is
   * known gone once its ack came, or its channel said so). */
  if (__atomic_load_n(&p->cancel_acked, __ATOMIC_ACQUIRE) || tr_actor_exited(p->actor)) {
    if (acked)
      *acked = 1;
    return 0;
  }
  tr_actor_t *self = tr_self();
  tr_task_t *t = tr__rpc_current_task();
  if (!t)
    return TR__EPERM_NOTASK();
  if (p->actor == self)
    return TR_ERROR(-TR_EINVAL, "use tr_actor_cancel_soon to cancel the own actor");
  /* Cancel(whole_actor) and a bounded wait for its CancelAck, which the
   * actor sends as it exits (PROTOCOL.md 8.2). */
  tr_ctx_t c;
  tr__ctx_init(&c, self, SIDE_CALLER, KIND_ACTOR_CANCEL, tr__rpc_new_cid(), NULL);
  c.task = t;
  /* The peer, so that the loss of its channel ends the wait as its exit
   * (tr__rpc_peer_lost): no ack can come then, and without a timeout the
   * wait would never end. */
  c.peer = tr__rpc_route_to(self, p->actor);
  tr_actor_uuid(p->actor, c.peer_uuid);
  tr__ctx_link(self->tasks, &c);
  int rc = tr__send_cancel(self, c.peer, TR_BODY_CANCEL, c.cid, 1, 0);
  if (rc == -TR_ECLOSED)
    c.done = 1; /* it has exited meanwhile: nothing left to cancel */
  else if (rc) {
    tr__ctx_unlink(self->tasks, &c);
    tr_actor_release(c.peer);
    return TR_ERROR(rc, "tr_portal_cancel_actor: the cancel request to %s was not sent",
                    tr_actor_name(p->actor));
  }
  int64_t deadline = timeout_ns < 0 ? TR_NO_DEADLINE : tr__deadline_after(timeout_ns);
  while (!c.done && tr_now() < deadline)
    tr__ctx_wait_until(&c, t, deadline, "tr_portal_cancel_actor");
  tr__ctx_unlink(self->tasks, &c);
  tr_actor_release(c.peer);
  /* Unacknowledged: the nursery's close forces the cancel, when this is
   * the nursery's actor (only it may read the record; another actor's
   * cancel leaves it, and the nursery's own rules apply). */
  if (!c.done && p->child_of == tr_actor_id(self) && p->child)
    tr__an_cancel_unacked(p->child);
  if (c.done) /* atomic: a portal may serve tasks of several actors */
    __atomic_store_n(&p->cancel_acked, 1, __ATOMIC_RELEASE);
  if (acked)
    *acked = c.done;
  return 0;
}
