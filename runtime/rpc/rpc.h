/*
 * The dialog engine, internal (docs/PROTOCOL.md): daemon actors that serve calls,
 * and every dialog on both sides, with one object per side of a dialog,
 * the context (struct tr_ctx):
 *   run              Start -> StartAck(FN) -> Return | Error
 *   open_stream_from Start -> StartAck(STREAM) -> Yield* -> Stop -> Return
 *   open_context     Start -> StartAck(CONTEXT) -> Started -> (Yield both
 *                    ways, Stop each way) -> Return | Error
 *   cancel           Cancel(cid) -> Error(ContextCancelled) -> CancelAck
 *   actor cancel     Cancel(whole_actor) -> ... -> CancelAck at exit
 * with per-direction credit windows (Credit) on streams.
 *
 * It speaks only tr_msg_t envelopes (body, cid, u64, x_, payload, from),
 * never in-process shortcuts, so the TCP transport can carry the same
 * messages unchanged.  Everything runs in the actors' own turns and tasks,
 * so a context is only ever touched by one thread at a time:
 *   - protocol messages reach tr__rpc_dispatch in the actor's turn, which
 *     updates the context the cid names and wakes the tasks waiting on it;
 *   - tasks block on a context (stream recv/send, result) until the state
 *     they need is there, or they are cancelled.
 * Errors cross boxed: the error object travels as the Error body's fields
 * and becomes a RemoteActorError (or ContextCancelled) at the caller.
 *
 * Dialog ids (cid) are chosen by the caller from one process-wide counter,
 * so a cid names one dialog in the process and an actor finds a context by
 * cid alone (an actor may not call itself: that dialog would have both
 * sides in one actor under one cid).
 *
 * Files:
 *   ctx.c          cids, uids, sending, the context's life, outcomes and
 *                  the ContextCancelled rules, tr_ctx_* operations
 *   portal.c       the caller starting dialogs (tr_portal_*)
 *   serve.c        the callee: Start, one task per call, dispatch of every
 *                  protocol message, daemons and run_in_actor children
 *   stream.c       MsgStreams: Yield, credit, Stop, receive, early close
 *   bcast.c        local broadcast (tr_stream_subscribe)
 *   actor_cancel.c Cancel(whole_actor) and its CancelAck
 * The functions below are the ones the files share (tr__ prefix); each is
 * described where it is defined.
 */
#ifndef TR_RPC_RPC_H
#define TR_RPC_RPC_H

#include <stdint.h>
#include <string.h>

#include <tractor/portal.h>

#include "runtime/actor/actor.h"
#include "runtime/error/error.h"
#include "runtime/rpc/registry.h"
#include "runtime/task/task.h"
#include "schema/envelope.h"

/* An actor-nursery child as the parent sees it (actor_nursery.c). */
typedef struct tr_an_child {
  struct tr_an_child *next;
  struct tr_actor *actor; /* a reference; its name is the child's */
  struct tr_actor_nursery *an;
  struct tr_ctx *life; /* the dialog of its life, until its exit report */
  int result;
  uint8_t exited, cancel_sent;
  uint8_t lost;    /* its peer was lost: failed, waiting for its exit */
  uint8_t daemon;  /* serves until cancelled: close cancels it (tractor) */
  uint8_t proc;    /* in a child process: actor is the transport's proxy */
  uint8_t unacked; /* 1: a tr_portal_cancel_actor went unacknowledged, so close
                    * forces its cancel; 2: close has */
  int pid, status; /* proc: its process, and its wait status (-1 until reaped) */
  /* tr_run_in_actor: the main function's result, a copy of its error for
   * tr_portal_result, the task waiting for it, and the portal to hand the
   * result to when the nursery closes. */
  tr_buf_t *value;
  struct tr_error *result_error;
  struct tr_task *waiter;
  struct tr_portal *portal;
} tr_an_child_t;

struct tr_portal {
  tr_actor_t *actor;    /* a reference */
  tr_an_child_t *child; /* nursery child: its record while the nursery is open */
  uint64_t child_of;     /* nursery child: its nursery's actor (tr_actor_id), the
                          * only one that may read child (set once) */
  /* run_in_actor results once the nursery has closed (cached). */
  uint8_t has_result;
  int result_rc;
  tr_buf_t *value;
  tr_error_t *error;
  int pid, status; /* a child process's (tr_portal_process), once cached */
  uint8_t cancel_acked; /* a tr_portal_cancel_actor was acknowledged: the actor has exited */
};

enum { SIDE_CALLER = 1, SIDE_CALLEE = 2 };
/* Caller-side records that are not calls: one that only waits for an actor
 * cancel's CancelAck, and an actor nursery's record of a child's life,
 * which the child's exit report (Return or Error) ends. */
enum { KIND_ACTOR_CANCEL = 0, KIND_CHILD = 8 };

/* A task blocked on a context (a node on the task's stack). */
typedef struct tr_waiter {
  struct tr_waiter *next;
  tr_task_t *task;
} tr_waiter_t;

struct tr_bcast;

struct tr_stream {
  struct tr_ctx *ctx;
  struct tr_bcast *bc; /* set once subscribed (on the source and subscribers) */
  uint64_t seq;        /* broadcast: index of the next value to read */
  struct tr_stream *bnext;
  uint8_t is_sub;
  uint8_t busy; /* a subscriber: a task waits in tr_stream_recv on it */
};

/* Local broadcast of one stream (tr_stream_subscribe): the last `cap`
 * values, each read by every receiver at its own position. */
typedef struct tr_bcast {
  tr_stream_t *src;   /* the context's stream */
  tr_buf_t **ring;    /* cap slots; value i at ring[i % cap] */
  uint64_t cap, head; /* head: index of the next value to arrive */
  tr_stream_t *subs;  /* subscribers (not the source) */
  uint8_t pulling;    /* a receiver is waiting on the source */
  uint8_t ended;      /* the source's end is known: end_rc, end_err */
  int end_rc;
  tr_error_t *end_err;
} tr_bcast_t;

/*
 * Where one side of a dialog is, as docs/PROTOCOL.md tells it.  The phase
 * (sections 5 and 6) only moves forward; `done` (section 9: the final
 * message, a lost peer, the end of the callee's task) ends the dialog from
 * any phase, so the phase still says how far it got (a context that fails
 * right after Started differs from one refused at Start).
 *
 *   caller  PH_CALLING  Start sent, no answer yet
 *           PH_ACKED    StartAck in (its kind in kind_wrong)
 *           PH_STARTED  context: Started in (`first`); the block runs
 *   callee  PH_ACKED    StartAck sent: the function's task runs
 *           PH_STARTED  context: tr_ctx_started sent Started
 *
 * Stream directions (6.3 step 3) are independent of the phase: this
 * side's (opened, tx_stop) and the peer's (rx_stop).  Cancellation (8):
 * cancel_called on either side (this side asked), and on the callee's,
 * who else did: cancel_req (the caller's Cancel), self_cancel.
 */
enum { PH_CALLING = 0, PH_ACKED = 1, PH_STARTED = 2, PH_DONE_WAIT = 3 /* never reached */ };

struct tr_ctx {
  struct tr_ctx *next; /* the actor's dialogs */
  tr_actor_t *actor;   /* the actor this side lives in (not a reference) */
  tr_actor_t *peer;    /* a reference */
  uint64_t cid;
  uint8_t side, kind;
  uint8_t phase;         /* PH_* */
  uint8_t done;          /* ended: caller, final message in; callee, task finished */
  uint8_t opened;        /* this side opened its stream */
  uint8_t tx_stop;       /* this side sent Stop */
  uint8_t rx_stop;       /* the peer's Stop arrived */
  uint8_t cancel_called; /* this side asked to cancel (caller: Cancel sent) */
  uint8_t cancel_req;    /* callee: the caller sent Cancel(cid) */
  uint8_t self_cancel;   /* callee: the function cancelled its own context */
  uint8_t overran;       /* callee: a Yield beyond the window failed the dialog: its
                            Error(StreamOverrun) was the final message */
  uint8_t overrun_error;
  uint8_t has_scope;  /* caller of a context: scope is open */
  uint8_t has_out;    /* caller: the outcome below is computed */
  uint8_t kind_wrong; /* caller: StartAck named another kind */
  uint8_t closing;    /* caller: tr_ctx_close runs; other tasks keep out */
  /* The peer by uuid (PROTOCOL.md 2): the caller's is its portal's actor
   * until StartAck names the callee (its envelope src), the callee's is
   * Start's caller.  Every "is this the peer" decision compares these:
   * c->peer is only where messages go, which may be a proxy standing for
   * an actor across a transport. */
  uint8_t peer_uuid[TR_UUID_LEN];
  /* The peer's name when a message that crossed a channel named it (the
   * envelope's src of Start or StartAck), else NULL: tr_ctx_peer then
   * names c->peer.  Owned. */
  char *peer_name;
  tr_uid_t cancel_req_uid; /* callee: who sent Cancel(cid), the canceller */
  uint32_t window, credit, unacked, rx_len;
  tr_msg_t *rx_head, *rx_tail; /* Yields not yet received */
  tr_msg_t *first;             /* caller: the Started message */
  tr_msg_t *final;             /* caller: the Return or Error message */
  int out_rc;                  /* caller: the outcome of `final` */
  tr_error_t *out_err;
  tr_waiter_t *waiters;
  unsigned users;  /* tasks inside an operation that may block */
  tr_task_t *task; /* caller: the opener; callee: the function's task */
  tr_scope_t *task_scope;
  const tr__rpc_entry_t *entry; /* may be NULL on the caller's side */
  tr_an_child_t *child;         /* KIND_CHILD: the nursery's record */
  tr_buf_t *args;               /* callee: owned reference */
  tr_stream_t stream;
  tr_scope_t scope; /* caller of a context: the context block's scope */
};

/* Per-actor RPC state beyond tr_tasks_t's fields: who asked to cancel the
 * whole actor, and where its CancelAck goes. */
typedef struct tr_cancel_ack {
  struct tr_cancel_ack *next;
  tr_actor_t *to; /* a reference */
  uint64_t cid;
} tr_cancel_ack_t;

/* The dialog engine's state of one task actor (tr_tasks_t.rpc): what a
 * daemon serves, the nursery its request tasks run in, every dialog of the
 * actor (both sides), and what its exit owes. */
typedef struct tr_rpc {
  char **enable;
  size_t n_enable;
  struct tr_nursery *service;
  tr_ctx_t *dialogs;            /* both sides, most recently used first */
  tr_cancel_ack_t *cancel_acks; /* actor cancels to acknowledge at exit */
  tr_uid_t *cancel_by;          /* the first actor that asked, as its Cancel named it */
  struct tr_pub *pubs;          /* pub/sub feeders (pubsub.c) */
  tr_msg_t *early_starts;       /* Starts that came before the service was up,
                                 * with Cancels of theirs behind them */
  uint8_t serve_done;           /* the service has ended: refuse new calls */
  /* The exports this actor last called and last served: a caller and a
   * daemon usually name the same function call after call, and an export
   * lives as long as the process, so a string compare stands in for the
   * split, the table walk and (served) the enable check. */
  const tr__rpc_entry_t *last_called;
  size_t last_called_ns_len;
  const tr__rpc_entry_t *last_served;
} tr_rpc_t;

/* Sets the size of tr_rpc_t as the task layer's per-actor extension;
 * called by tr_run's start before any actor is spawned. */
void tr__rpc_init(void);

/* A message kind local to the process, never encoded (the codec refuses
 * unknown kinds): a channel end tells an actor that a peer is gone
 * (tr__rpc_post_peer_lost). */
#define TR_BODY_LOCAL_PEER_LOST 0x7f01

/* Room for a uid text (tr__actor_uid_text): name, '@', 32 hex digits. */
#define TR_UID_TEXT 192

/* ---- on every message: inline, so that the split into files costs the
 * stream path nothing (measured: out of line, ctx_stream mode=stream fell
 * from 7.3 M to 6.3 M messages/s). */

/* The sender of m by uuid, when m names one (the envelope's src, which a
 * channel end writes, else its `from`): into buf, or NULL. */
static inline const uint8_t *tr__msg_sender_uuid(const tr_msg_t *m, uint8_t *buf) {
  if (m->x_ && m->x_->has_src)
    return m->x_->src.uuid;
  if (!m->from)
    return NULL;
  tr_actor_uuid(m->from, buf);
  return buf;
}

/* Could c be the dialog of a message from `sender`?  Contexts are keyed by
 * (peer uid, cid) (PROTOCOL.md 2): a cid is unique only per caller, so two
 * callers may use the same one at a callee.  A message that names no
 * sender is matched by cid alone: in-process messages carry no sender and
 * their cids come from this process's counter, unique here.  A caller's
 * side matches any sender until StartAck names the callee (a Start may be
 * refused or bounced by whoever got it), as do the records that are not
 * calls (an actor cancel's wait, a nursery child's life). */
static inline int tr__ctx_from(const tr_ctx_t *c, const uint8_t *sender) {
  return !sender ||
         (c->side == SIDE_CALLER &&
          (c->phase == PH_CALLING || c->kind == KIND_ACTOR_CANCEL || c->kind == KIND_CHILD)) ||
         memcmp(c->peer_uuid, sender, TR_UUID_LEN) == 0;
}

/* Is c certainly the dialog of a message from `sender`: its peer by uuid,
 * or, for a message that names no sender (one from this process), a
 * dialog whose peer is in this process too?  An actor may hold equal cids
 * in dialogs with two peers: one it serves for a caller in another process
 * (that caller's cid) and one it opened (this process's counter).  The
 * looser tr__ctx_from alone then gave a message of one to the other (a
 * child process relaying a stream it opened itself lost its parent's
 * Credit to its own call and stopped after a window). */
static inline int tr__ctx_exact(const tr_ctx_t *c, const uint8_t *sender) {
  return sender ? memcmp(c->peer_uuid, sender, TR_UUID_LEN) == 0
                : !(c->peer && tr__actor_is_proxy(c->peer));
}

/* The actor's context for cid and m's sender: the one that is certainly
 * its dialog (tr__ctx_exact), else one that could be (tr__ctx_from).  Move
 * to front: the busy one is found first, on the first look. */
static inline tr_ctx_t *tr__find_ctx(tr_tasks_t *ts, uint64_t cid, const tr_msg_t *m) {
  uint8_t buf[TR_UUID_LEN];
  const uint8_t *sender = tr__msg_sender_uuid(m, buf);
  tr_ctx_t **pp = &ts->rpc->dialogs, **maybe = NULL;
  tr_ctx_t *c;
  for (c = *pp; c; pp = &c->next, c = c->next)
    if (c->cid == cid) {
      if (tr__ctx_exact(c, sender))
        break;
      if (!maybe && tr__ctx_from(c, sender))
        maybe = pp;
    }
  if (!c) {
    if (!maybe)
      return NULL;
    pp = maybe;
    c = *pp;
  }
  if (pp != &ts->rpc->dialogs) { /* move to front */
    *pp = c->next;
    c->next = ts->rpc->dialogs;
    ts->rpc->dialogs = c;
  }
  return c;
}

/* Wakes every task waiting on c. */
static inline void tr__ctx_notify(tr_ctx_t *c) {
  for (tr_waiter_t *w = c->waiters; w; w = w->next)
    tr__task_wake_blocked(w->task);
}

/* A task enters / leaves an operation that may block on the context.  A
 * callee's function task waits, as it ends, until every other task has
 * left (they see `done` and return), so each leave may be the one it
 * waits for. */
static inline void tr__ctx_enter(tr_ctx_t *c) { c->users++; }

static inline void tr__ctx_leave(tr_ctx_t *c) {
  c->users--;
  if (c->done && c->side == SIDE_CALLEE)
    tr__ctx_notify(c);
}

/* Refuses an operation of another task while the opener closes the
 * context (tr_ctx_close frees it once its own waits are over). */
static inline int tr__ctx_refuse_closing(const tr_ctx_t *c) {
  return c->closing ? TR_ERROR(-TR_EBUSY,
                               "the context with actor %s is being closed by the task "
                               "that opened it",
                               tr_actor_name(c->peer))
                    : 0;
}

_Static_assert(TR_REMOTE_VALUE_MAX < TR_MAX_FRAME_DEFAULT, "room for the envelope");

/* 0 when value v may go to `peer`; -TR_EMSGSIZE with an error object when
 * peer is in another process (a proxy) and v is larger than a frame can
 * carry (TR_REMOTE_VALUE_MAX): refused where it is sent, since a channel
 * that cannot encode a message has nobody to tell.  `what` names v for
 * the message ("the arguments of app.f"). */
static inline int tr__rpc_fits(tr_actor_t *peer, const tr_buf_t *v, const char *what) {
  if (TR_LIKELY(!tr__actor_is_proxy(peer)) || tr_buf_len(v) <= TR_REMOTE_VALUE_MAX)
    return 0;
  return TR_ERROR(-TR_EMSGSIZE,
                  "%s: %zu bytes, more than a value for actor %s in another process may hold "
                  "(TR_REMOTE_VALUE_MAX, %u bytes)",
                  what, tr_buf_len(v), tr_actor_name(peer), (unsigned)TR_REMOTE_VALUE_MAX);
}

/* A value as a dialog carries it: a reference to a buffer, or NULL for the
 * empty value (portal.h: "NULL for an empty result").  A zero-length
 * buffer becomes NULL here, where every value is sent, as the wire makes
 * it (an absent field): so the receiver sees the same in-process and
 * across processes.  Takes v's reference. */
static inline tr_buf_t *tr__rpc_value(tr_buf_t *v) {
  if (v && tr_buf_len(v) == 0) {
    tr_buf_release(v);
    return NULL;
  }
  return v;
}

/* Sends a protocol message of kind body (no sender: the dialog's cid and
 * the receiver's contexts identify it; to a proxy, the current actor).  Returns 0 or as tr__send;
 * the payload reference is passed on, or released on failure. */
static inline int tr__send_body(tr_actor_t *to, int body, uint64_t cid, uint64_t u64,
                                tr_buf_t *payload) {
  tr_msg_t *m;
  if (tr_msg_new(&m) != 0) {
    tr_buf_release(payload);
    return -TR_ENOMEM;
  }
  m->body = (uint16_t)body;
  m->cid = cid;
  m->u64 = u64;
  m->payload = tr__rpc_value(payload);
  /* A proxy writes the sender on the wire (tr__actor_is_proxy); between
   * local actors the cid says enough. */
  if (TR_UNLIKELY(tr__actor_is_proxy(to)))
    m->from = tr_actor_dup(tr_self());
  return tr__send(to, m);
}

void tr__on_yield_overrun(tr_ctx_t *c, tr_msg_t *m);

/* A Yield for c arrived: queued for the receiver, or, beyond the window,
 * the dialog fails (tr__on_yield_overrun). */
static inline void tr__on_yield(tr_ctx_t *c, tr_msg_t *m) {
  if (c->rx_len >= c->window) {
    tr__on_yield_overrun(c, m);
    return;
  }
  m->next_ = NULL;
  if (c->rx_tail)
    c->rx_tail->next_ = m;
  else
    c->rx_head = m;
  c->rx_tail = m;
  c->rx_len++;
  if (c->waiters)
    tr__ctx_notify(c);
}

/*
 * Peer loss (issue 9 item 4): the one entry point that ends every dialog
 * actor self has with the peer of uuid `uuid` over the way that was lost:
 * `via`, the id of the channel whose proxies the dialogs send to
 * (tr__proxy_channel: a channel may have several proxies of one peer), or
 * 0 for every way.  Other dialogs with that peer go on: a child
 * process whose node connection to this process ends (its registration,
 * say) is not lost while its own channel, which carries its life dialog,
 * still runs.  A caller-side dialog ends with rc (-TR_ECLOSED for an
 * orderly end of the channel, -TR_EIO when it broke) and an error naming
 * the cause, so that no waiting call hangs; a callee-side dialog has its
 * task cancelled (its caller is gone).  Runs in self's turn:
 * tr__rpc_post_peer_lost delivers it there from anywhere.
 * Ownership: borrows cause.  Threads: self's turn / any.
 */
void tr__rpc_peer_lost(tr_actor_t *self, const uint8_t uuid[TR_UUID_LEN], uint64_t via, int rc,
                       const char *cause);
int tr__rpc_post_peer_lost(tr_actor_t *to, const uint8_t uuid[TR_UUID_LEN], uint64_t via, int rc,
                           const char *cause);

/*
 * The route of a caller's dialogs to an actor: NULL sends straight to it;
 * otherwise route(self, target) returns the actor that stands for target
 * on the way (a new reference, or NULL for the direct way), as a
 * transport's proxy does.  Start, Cancel and everything after them go
 * there; the callee is still known by its uuid (PROTOCOL.md 2).  The
 * codec relay of the tests (tests/support/relay.c) sets it, before the
 * runtime starts.  Threads: called in the caller's turn.
 */
typedef tr_actor_t *(*tr__rpc_route_fn)(tr_actor_t *self, tr_actor_t *target);
extern tr__rpc_route_fn tr__rpc_route;

/* Where self's messages to target go: a new reference. */
static inline tr_actor_t *tr__rpc_route_to(tr_actor_t *self, tr_actor_t *target) {
  tr_actor_t *via = tr__rpc_route ? tr__rpc_route(self, target) : NULL;
  return via ? via : tr_actor_dup(target);
}

/* ---- process children ---------------------------------------------------------
 *
 * An actor-nursery child in a child process (TR_SPAWN_PROCESS): the
 * nursery keeps its record as for any child, with the transport's proxy
 * for it as its actor; the transport (transport/channel.h) starts the
 * process and carries the life dialog.  Registered by the transport
 * (tr__transport_init); NULL when it is not linked in. */
typedef struct tr_proc_req {
  const char *name;    /* the child actor's name */
  const uint8_t *uuid; /* the uuid chosen for it (TR_UUID_LEN bytes) */
  uint64_t life_cid;   /* its life dialog with the parent */
  tr_actor_t *parent;  /* the parent actor: the exit report's receiver */
  char *const *enable; /* a daemon: the namespaces it serves */
  size_t n_enable;
  const char *run_func; /* run_in_actor: "ns.func", else NULL */
  const tr_buf_t *args; /* its arguments (borrowed) */
  const char *exe;      /* the program; NULL: this one */
  int64_t grace_ns;     /* from SIGTERM to SIGKILL */
  int pid;              /* out: the process started */
} tr_proc_req_t;

/* A child process's exit report, as its channel delivers it once the
 * process is reaped, carries the wait status in u64: this bit, and the
 * status in the low 32 bits. */
#define TR_LIFE_REAPED (1ull << 32)

typedef struct tr_rpc_proc_ops {
  /* Starts the process; *proxy (a new reference) stands for the child. */
  int (*spawn)(tr_proc_req_t *req, tr_actor_t **proxy);
  /* Stops it: SIGTERM, then SIGKILL after the grace period. */
  void (*kill)(tr_actor_t *proxy);
} tr_rpc_proc_ops_t;

extern const tr_rpc_proc_ops_t *tr__rpc_proc_ops;

/* The node's registration of the actors actor nurseries start
 * (transport/node.h), wired in by runtime.c: an actor's main task calls
 * started() before it serves (or runs its function) and exiting() after,
 * also when cancelled. */
typedef struct tr_rpc_node_ops {
  void (*started)(void);
  void (*exiting)(void);
} tr_rpc_node_ops_t;
extern const tr_rpc_node_ops_t *tr__rpc_node_ops;

/*
 * Starts the main actor of a child process as its SpawnSpec says: a
 * daemon serving `enable` (run_func NULL) or one call of run_func with
 * args, known by uuid, reporting its exit to watcher on cid.  Returns 0
 * with *out (a reference), or -TR_ENOFUNC / -TR_EFUNCKIND / -TR_ENOMEM ...
 * with an error object.  on_exit (may be NULL; daemons only) runs when the
 * actor exits, also when it never ran.
 * Ownership: borrows everything.  Threads: a turn.
 */
int tr__rpc_spawn_served(const char *name, char *const *enable, size_t n_enable,
                         const char *run_func, tr_buf_t *args, tr_actor_t *watcher, uint64_t cid,
                         const uint8_t *uuid, void (*on_exit)(void), tr_actor_t **out);

/* ---- ctx.c */

uint64_t tr__rpc_new_cid(void);

int tr__same_actor(const tr_actor_t *a, const tr_actor_t *b);

const char *tr__actor_uid_text(const tr_actor_t *a, char *buf);
const char *tr__uid_text(const tr_uid_t *u, char *buf);

tr_task_t *tr__rpc_current_task(void);

int tr__send_cancel(tr_actor_t *self, tr_actor_t *to, int body, uint64_t cid, int whole, int acked);
/* A CancelAck from no actor in the name of src (a wire uid, borrowed; its
 * uuid is the envelope's src): what a channel answers for an actor that is
 * not there (PROTOCOL.md 4, item 8).  Threads: any. */
int tr__send_cancel_ack_for(const tr_uid_t *src, tr_actor_t *to, uint64_t cid, int whole,
                            int acked);

/* As tr__send_error from no actor, naming src (a wire uid, borrowed; a
 * NULL name is an empty one) as the source and, by uuid, as the envelope's
 * sender: for an actor that failed before it existed (a child process
 * whose main function could not start), or one a channel answers for
 * because it is not there.  Threads: any. */
void tr__send_error_for(const tr_uid_t *src, tr_actor_t *to, uint64_t cid, int rc,
                        const tr_error_t *e);
void tr__send_error(tr_actor_t *self, tr_actor_t *to, uint64_t cid, int rc, const tr_error_t *e,
                    const char *canceller);
/* tr__send_error without a canceller, with m->u64 set (TR_LIFE_REAPED). */
void tr__send_error_u64(tr_actor_t *self, tr_actor_t *to, uint64_t cid, int rc, const tr_error_t *e,
                        uint64_t u64);
int tr__send_from(tr_actor_t *self, tr_actor_t *to, int body, uint64_t cid, uint64_t u64);
void tr__uid_of(tr_uid_t *u, const tr_actor_t *a);

/* The sender of m by uid (PROTOCOL.md 2): the envelope's src when the
 * message crossed a channel (its `from` is then the channel's proxy), else
 * its `from`.  Returns 0, or -TR_EINVAL (no sender) / -TR_ENOMEM with *u
 * empty.  Ownership: *u's strings are the caller's (tr__uid_fini). */
int tr__msg_sender(tr_uid_t *u, const tr_msg_t *m);

void tr__ctx_link(tr_tasks_t *ts, tr_ctx_t *c);

void tr__ctx_unlink(tr_tasks_t *ts, tr_ctx_t *c);

void tr__ctx_init(tr_ctx_t *c, tr_actor_t *self, int side, int kind, uint64_t cid,
                  const tr_ctx_opts_t *opts);

/* The window a dialog with peer gets when nobody asked for one:
 * TR_STREAM_WINDOW, or TR_STREAM_WINDOW_REMOTE for a proxy (an actor of
 * another process).  The caller resolves it before its Start, which then
 * names it; a callee resolves a Start's 0 (a foreign caller's) the same
 * way. */
uint32_t tr__ctx_default_window(const tr_actor_t *peer);

int tr__ctx_wait(tr_ctx_t *c, tr_task_t *t, const char *what);

void tr__ctx_wait_until(tr_ctx_t *c, tr_task_t *t, int64_t deadline, const char *what);

void tr__ctx_discard_rx(tr_ctx_t *c);

/* Releases what c holds (its queued and final messages, outcome, peer):
 * tr__ctx_fini for a context on the stack, which it leaves zeroed;
 * tr__ctx_free for one from malloc, which it frees too. */
void tr__ctx_fini(tr_ctx_t *c);
void tr__ctx_free(tr_ctx_t *c);

const char *tr__rpc_split_name(const char *qualified, char *ns, size_t cap);

void tr__ctx_outcome(tr_ctx_t *c);

int tr__ctx_put_outcome(tr_ctx_t *c);

int tr__ctx_cancelled_here(tr_ctx_t *c, const char *op);

void tr__ctx_finish(tr_ctx_t *c, tr_msg_t *m);

void tr__ctx_send_cancel(tr_ctx_t *c);

void tr__ctx_cancel_and_drain(tr_ctx_t *c, tr_task_t *t);

int tr__rpc_wait_for(tr_ctx_t *c, tr_task_t *t, int phase, const char *what);

/* ---- serve.c */

const char *tr__cancel_cause(tr_ctx_t *c, tr_tasks_t *ts, const char **why, char *buf);

/* ---- stream.c */

void tr__on_yield_overrun(tr_ctx_t *c, tr_msg_t *m);

int tr__ctx_recv(tr_ctx_t *c, tr_task_t *t, tr_buf_t **msg);

/* ---- bcast.c */

void tr__bcast_free(tr_bcast_t *bc);

int tr__bcast_recv(tr_stream_t *s, tr_task_t *t, tr_buf_t **msg);

/* ---- actor_nursery.c */

/* tr_actor_nursery_spawn, with `daemon` marking a child that serves until
 * cancelled (close cancels it once only daemons are left). */
int tr__actor_nursery_spawn(struct tr_actor_nursery *an, const char *name, tr_task_fn fn, void *arg,
                            int daemon, tr_actor_t **ref);
/* The same, also returning the child's record (owned by the nursery). */
int tr__actor_nursery_spawn_rec(struct tr_actor_nursery *an, const char *name, tr_task_fn fn,
                                void *arg, int daemon, tr_actor_t **ref, tr_an_child_t **rec);
/* The same for a child in a child process (req's name, uuid, life_cid,
 * parent and grace are filled in here). */
int tr__actor_nursery_spawn_proc(struct tr_actor_nursery *an, tr_proc_req_t *req, int daemon,
                                 tr_actor_t **ref, tr_an_child_t **rec);

/* A child's life dialog ended (its exit report, or its peer was lost):
 * the nursery learns the outcome and c is freed.  In the parent's turn. */
void tr__an_child_ended(tr_ctx_t *c);

/* The peer of a child's life dialog was lost (tr__rpc_peer_lost): the
 * child fails with rc and cause, and is killed; its exit report still
 * ends the dialog. */
void tr__an_child_lost(tr_ctx_t *c, int rc, const char *cause);

/* A tr_portal_cancel_actor of child c went unacknowledged: the nursery's
 * close forces c's cancel (SIGTERM, then SIGKILL, for a child process).
 * In the turn of the nursery's actor. */
void tr__an_cancel_unacked(tr_an_child_t *c);

/* The child's side, as it exits: its main task's outcome to its watcher
 * (Return with the run_in_actor value, or Error). */
void tr__an_report_exit(tr_actor_t *a);

/* At actor-nursery close: give a run_in_actor portal its child's result
 * (portal.c). */
void tr__portal_take_result(struct tr_portal *p, tr_an_child_t *c);

/* ---- actor_cancel.c */

void tr__on_cancel_actor(tr_actor_t *a, tr_msg_t *m);

/* ---- hooks.c */

/* What the layers below call, through the hooks tr__rpc_init registers:
 * a protocol message (body != 0) for a task actor, in its turn; what an
 * exiting task actor still owes (its CancelAcks, its exit report); the
 * engine's state in an exited actor's tasks; and a protocol message that
 * became a dead letter at exited actor `dead` (a Start is answered with
 * Error(-TR_ECLOSED), so its caller does not wait forever; any thread). */
void tr__rpc_dispatch(struct tr_worker *w, struct tr_actor *a, tr_msg_t *m);
void tr__rpc_actor_exit(struct tr_actor *a);
void tr__rpc_actor_free(tr_tasks_t *ts);
void tr__rpc_bounce(struct tr_actor *dead, tr_msg_t *m);
/* Registers them with the task and actor layers.  Called by tr_run at
 * start-up, before any actor exists.  Threads: tr_run's. */
void tr__rpc_init(void);

#endif
