/*
 * Channels and proxies (see channel.h).
 */
#define _GNU_SOURCE /* accept4, SO_PEERCRED */
#include "transport/channel.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <tractor/log.h>

#include "runtime/actor/actor.h"
#include "runtime/platform/log.h" /* tr__log_parse_level */
#include "runtime/error/error.h"
#include "runtime/mem/msgpool.h" /* TR_MSGF_PTR_REF */
#include "runtime/reactor/reactor.h"
#include "runtime/rpc/rpc.h"
#include "runtime/task/task.h"
#include "schema/envelope.h"
#include "transport/auth.h"
#include "transport/hello.h"
#include "transport/listen.h"
#include "transport/node.h"
#include "transport/proc.h"
#include "transport/wire.h"

int64_t tr__chan_peer_timeout_ns = TR_PEER_TIMEOUT_DEFAULT_NS;
size_t tr__chan_wire_max = 256u << 20;
int64_t tr__chan_deaf_after_ns;

/* A channel's own messages (body 0; never on the wire). */
enum {
  C_INIT = 0x7e2a0001, /* first message: watch the fds */
  C_IO,                /* the socket is ready */
  C_ADOPT,             /* from the listener: the child's socket (u64), Hello checked */
  C_PROC,              /* the child process exited (pidfd) */
  C_OUT,               /* a protocol message from a proxy, for the wire */
  C_KILL,              /* stop the child process */
  C_KILL_HARD,         /* the grace period is over: SIGKILL */
  C_HS_TIMEOUT,        /* the child has not connected in time */
  C_DOWN,              /* the child's main actor exited (monitor) */
  C_LAST,              /* through the parent's proxy: the main actor's last words are queued */
  C_TICK,              /* heartbeat time: is the peer silent, is this side idle? */
  C_GONE,              /* a local actor that talked here exited (monitor) */
  C_CLOSE,             /* a channel between nodes: the node is stopping */
  C_READ,              /* read on: the last turn used its budget (u64: the peer hung up) */
  P_EXIT               /* to a proxy: the channel is gone */
};

#define RBUF_LEN (64u << 10)
/* Full reads in one turn before the channel lets other actors run and
 * reads on in its next turn (C_READ): a peer that keeps the socket full
 * never holds a worker for good. */
#define READ_BUDGET 16
/* Remote actors a channel keeps proxies for at once (each one a peer's
 * actor that talked here and has not exited): a peer that names more is
 * closed, rather than let it make actors without bound. */
#define MAX_PROXIES (1u << 16)
int64_t tr__chan_hs_timeout_ns = 10LL * 1000 * 1000 * 1000;
static int64_t hs_timeout(void) { return __atomic_load_n(&tr__chan_hs_timeout_ns, __ATOMIC_RELAXED); }
#define GRACE_DEFAULT_NS (1000LL * 1000 * 1000)

/* An actor on either side, by uuid: a local actor that has talked on the
 * channel, or a proxy for a remote one.  References. */
typedef struct ent {
  uint8_t uuid[TR_UUID_LEN];
  tr_actor_t *a;
} ent_t;

/* The entries, with an index by uuid: open addressing with linear probing,
 * each slot v's index + 1 (0: free), at least twice as many slots as
 * entries.  A peer names the uuids, so the slot comes from a keyed mix
 * (ents_key) rather than the raw bytes, and a channel keeps at most
 * MAX_PROXIES proxies. */
typedef struct ents {
  ent_t *v;
  size_t n, cap;
  uint32_t *ix;
  size_t ixmask; /* slots - 1; the index exists once ix is set */
  size_t last;   /* the entry found last: a stream's frames name the same
                    actors, so ents_find looks there first (checked by its
                    uuid, so no change to the table makes it wrong) */
} ents_t;

static uint64_t ents_key; /* ents_home's key: random, set once by tr__chan_init */

typedef struct chan {
  int child_side;
  uint8_t peer; /* a channel to another node (tr__chan_peer) */
  int fd;
  uint8_t listening; /* holds a reference on the listener (listen.h) */
  tr_fd_watch_t *w, *pw;
  uint64_t wid, pwid;
  tr_wire_q_t q;
  int unflushed; /* frames queued since the last write */
  tr_frame_dec_t dec;
  uint8_t *rbuf;
  uint8_t handshaken;
  uint8_t io_done; /* EOF or an error: no more reading or writing */
  uint8_t wr_shut; /* child: shutdown(SHUT_WR) after the last words */
  uint8_t exiting;
  uint8_t closing; /* a channel between nodes: this node is stopping (C_CLOSE) */
  /* Pending timers (0: none), cancelled at exit: each holds a reference
   * to the channel and a message, which would outlive it until it fired
   * (the handshake's, 10 s after every spawn). */
  uint64_t hs_timer, tick_timer, kill_timer;
  /* When a byte last came in / went out, on the coarse clock
   * (tr__now_coarse: read per message, compared at the heartbeat's
   * period, a third of peer_timeout). */
  int64_t last_rx, last_tx;
  int64_t over_since;       /* when the write queue was first seen over the mark (0: under) */
  int loss_rc;              /* why the connection ended (0 while it has not) */
  const char *kill_why;     /* why this side killed its child unasked (static), or NULL */
  char loss_cause[320]; /* as long as the longest cause built here */
  ents_t loc, prx;
  /* A parent's channel to a child process. */
  tr_proc_t proc;
  int has_proc;
  pid_t spawned_pid; /* proc.pid, kept after the reap */
  uint64_t life_cid;
  uint8_t child_uuid[TR_UUID_LEN];
  tr_actor_t *parent;   /* a reference */
  tr_actor_t *child_px; /* the child's proxy (a reference) */
  tr_msg_t *life_final; /* the child's exit report, held until the reap */
  uint8_t final_seen, killing, term_sent;
  uint8_t lost_posted; /* the dialogs have been told */
  int64_t grace;
  /* A child's channel to its parent. */
  tr_actor_t *main; /* the child's main actor (a reference) */
  tr_actor_t *parent_px;
  uint8_t main_gone, last_in;
  int *status; /* where the exit status goes */
} chan_t;

/* ---- proxies ------------------------------------------------------------------- */

/*
 * A proxy is an actor whose state is a reference to its channel (released
 * with the proxy's memory: tr__actor_is_proxy).  Its protocol messages go
 * straight to the channel in the sender's send (proxy_send); its turns
 * only see the channel's control messages.
 */

/* Protocol message m for proxy px, on to px's channel.  Takes m.  Any
 * thread (the sender's; tr__actor_set_proxy_send).  The message names its
 * receiver by a reference to px in ptr (TR_MSGF_PTR_REF: dropped with the
 * message), which the channel writes as the envelope's dst: an envx for
 * it would cost an allocation per Yield. */
static int proxy_send(tr_actor_t *px, tr_msg_t *m) {
  tr_actor_t *chan = px->state;
  if (tr_actor_exited(chan)) {
    tr__actor_mark_gone(px); /* no way to it any more */
    tr__rpc_bounce(px, m);   /* answered as the gone actor would be */
    tr_msg_free(m);
    return 0;
  }
  if (m->flags_ & TR_MSGF_PTR_REF) /* sent again (proxy_fn) */
    tr_actor_release(m->ptr);
  m->ptr = tr_actor_dup(px);
  m->flags_ |= TR_MSGF_PTR_REF;
  m->tag = C_OUT;
  return tr__send(chan, m);
}

static void proxy_fn(void *state, tr_msg_t *m) {
  if (m->body != 0) { /* pushed past tr_send (a timer's, say): the same way on */
    tr_msg_take(m);
    (void)proxy_send(tr_self(), m);
  } else if (m->tag == P_EXIT) {
    tr_actor_exit();
  } else if (m->tag == C_KILL || m->tag == C_LAST) {
    tr_msg_take(m);
    (void)tr_send(state, m);
  }
}

static int proxy_new(tr_actor_t *chan, const char *name, const uint8_t uuid[TR_UUID_LEN],
                     uint32_t xflags, tr_actor_t **out) {
  tr_spawn_opts_t o = {.name = name && *name ? name : "remote"};
  int rc = tr__actor_spawn_as(proxy_fn, tr_actor_dup(chan), &o, NULL, uuid, TR_AF_PROXY | xflags,
                              out);
  if (rc)
    tr_actor_release(chan);
  return rc;
}

/* tr_actor_cancel_soon of a proxy: the remote actor's own cancel,
 * Cancel(whole_actor) with no requester (so no CancelAck), as the request
 * came from no actor.  The proxy stays until that actor has exited, so a
 * nursery still escalates through it and reaps its process. */
static int proxy_cancel(tr_actor_t *px) {
  return tr__send_cancel(NULL, px, TR_BODY_CANCEL, tr__rpc_new_cid(), 1, 0);
}

void tr__chan_init(void) {
  tr__actor_set_proxy_send(proxy_send);
  tr__actor_set_proxy_cancel(proxy_cancel);
  if (!ents_key && getrandom(&ents_key, sizeof ents_key, GRND_NONBLOCK) != sizeof ents_key)
    ents_key = (uint64_t)tr_now() * 0x9e3779b97f4a7c15ull; /* only a spread, not a secret */
}

/* ---- tables ---------------------------------------------------------------------- */

static size_t ents_home(const ents_t *t, const uint8_t uuid[TR_UUID_LEN]) {
  uint64_t a, b;
  memcpy(&a, uuid, 8);
  memcpy(&b, uuid + 8, 8);
  uint64_t h = ((a ^ ents_key) * 0x9e3779b97f4a7c15ull) ^ b;
  h = (h ^ (h >> 29)) * 0xbf58476d1ce4e5b9ull;
  return (size_t)(h ^ (h >> 32)) & t->ixmask;
}

/* The slot that holds entry i. */
static size_t ents_slot_of(const ents_t *t, size_t i) {
  size_t s = ents_home(t, t->v[i].uuid);
  while (t->ix[s] != i + 1)
    s = (s + 1) & t->ixmask;
  return s;
}

static void ents_index_put(ents_t *t, size_t i) {
  size_t s = ents_home(t, t->v[i].uuid);
  while (t->ix[s])
    s = (s + 1) & t->ixmask;
  t->ix[s] = (uint32_t)(i + 1);
}

/* Frees slot s, moving later entries of its probe run back (no
 * tombstones: lookups stop at the first free slot). */
static void ents_index_del(ents_t *t, size_t s) {
  for (size_t j = s;;) {
    j = (j + 1) & t->ixmask;
    if (!t->ix[j])
      break;
    size_t home = ents_home(t, t->v[t->ix[j] - 1].uuid);
    /* The entry at j may move to s unless its home lies in (s, j]. */
    int stays = s <= j ? (home > s && home <= j) : (home > s || home <= j);
    if (!stays) {
      t->ix[s] = t->ix[j];
      s = j;
    }
  }
  t->ix[s] = 0;
}

static tr_actor_t *ents_find(ents_t *t, const uint8_t uuid[TR_UUID_LEN]) {
  if (t->last < t->n && memcmp(t->v[t->last].uuid, uuid, TR_UUID_LEN) == 0)
    return t->v[t->last].a;
  if (!t->ix)
    return NULL;
  for (size_t s = ents_home(t, uuid); t->ix[s]; s = (s + 1) & t->ixmask) {
    ent_t *e = &t->v[t->ix[s] - 1];
    if (memcmp(e->uuid, uuid, TR_UUID_LEN) == 0) {
      t->last = t->ix[s] - 1;
      return e->a;
    }
  }
  return NULL;
}

/* Adds a (takes the reference).  Returns 0 or -TR_ENOMEM (a released). */
static int ents_add(ents_t *t, const uint8_t uuid[TR_UUID_LEN], tr_actor_t *a) {
  if (t->n == t->cap) {
    size_t cap = t->cap ? 2 * t->cap : 8;
    ent_t *v = realloc(t->v, cap * sizeof *v);
    uint32_t *ix = v ? calloc(2 * cap, sizeof *ix) : NULL;
    if (!ix) {
      if (v)
        t->v = v;
      tr_actor_release(a);
      return -TR_ENOMEM;
    }
    t->v = v;
    t->cap = cap;
    free(t->ix);
    t->ix = ix;
    t->ixmask = 2 * cap - 1;
    for (size_t i = 0; i < t->n; i++)
      ents_index_put(t, i);
  }
  memcpy(t->v[t->n].uuid, uuid, TR_UUID_LEN);
  t->v[t->n].a = a;
  ents_index_put(t, t->n++);
  return 0;
}

/* Removes entry i with its reference (the last entry takes its place). */
static void ents_remove_at(ents_t *t, size_t i) {
  tr_actor_release(t->v[i].a);
  ents_index_del(t, ents_slot_of(t, i));
  size_t last = --t->n;
  if (i != last) {
    t->ix[ents_slot_of(t, last)] = (uint32_t)(i + 1);
    t->v[i] = t->v[last];
  }
}

/* Removes the entry of the actor with id `id`, if any, copying its uuid
 * to `uuid` (may be NULL).  Returns 1 when there was one. */
static int ents_remove_id(ents_t *t, uint64_t id, uint8_t uuid[TR_UUID_LEN]) {
  for (size_t i = 0; i < t->n; i++)
    if (tr_actor_id(t->v[i].a) == id) {
      if (uuid)
        memcpy(uuid, t->v[i].uuid, TR_UUID_LEN);
      ents_remove_at(t, i);
      return 1;
    }
  return 0;
}

static void ents_free(ents_t *t, int exit_them) {
  for (size_t i = 0; i < t->n; i++) {
    if (exit_them)
      (void)tr_send_u64(t->v[i].a, P_EXIT, 0);
    tr_actor_release(t->v[i].a);
  }
  free(t->v);
  free(t->ix);
  memset(t, 0, sizeof *t);
}

static void chan_lost(chan_t *c, int rc, const char *cause);

/* The proxy for remote actor uuid (made on first sight), borrowed. */
static tr_actor_t *proxy_for(chan_t *c, const uint8_t uuid[TR_UUID_LEN], const char *name) {
  tr_actor_t *p = ents_find(&c->prx, uuid);
  if (p)
    return p;
  if (c->prx.n >= MAX_PROXIES) {
    char cause[160];
    snprintf(cause, sizeof cause, "the peer has more than %u actors talking on this channel",
             (unsigned)MAX_PROXIES);
    chan_lost(c, -TR_EPROTO, cause);
    return NULL;
  }
  if (proxy_new(tr_self(), name, uuid, 0, &p) != 0 || ents_add(&c->prx, uuid, p) != 0) {
    tr_log(TR_LOG_ERROR, "channel: no proxy for %s (out of memory)", name ? name : "an actor");
    return NULL;
  }
  if (c->peer)
    tr__actor_mark_node(p);
  return p;
}

/* ---- the socket ------------------------------------------------------------------- */

static int sock_opts(int fd) {
  int one = 1, fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
    return -1;
  return setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static void chan_maybe_exit(chan_t *c);
static void tick_post(chan_t *c);

/* Arms the kill timer with k (its tag set): SIGKILL after the grace
 * period.  One at a time: one already pending fires sooner, so it stays
 * and k goes. */
static void kill_timer_post(chan_t *c, tr_msg_t *k) {
  if (c->kill_timer || tr__timer_post(tr_now() + c->grace, tr_self(), k, &c->kill_timer) != 0)
    tr_msg_free(k);
}

/* Every dialog between the two sides ends (the engine's peer loss).  Not
 * for a local actor that has exited (its C_GONE may still be on its way):
 * it has no dialogs, and the notices would be dead letters. */
static void post_lost(chan_t *c, int rc, const char *cause) {
  /* First the proxies read as exited: whoever a notice wakes may look. */
  for (size_t j = 0; j < c->prx.n; j++)
    tr__actor_mark_gone(c->prx.v[j].a);
  for (size_t i = 0; i < c->loc.n; i++)
    for (size_t j = 0; j < c->prx.n && !tr_actor_exited(c->loc.v[i].a); j++)
      (void)tr__rpc_post_peer_lost(c->loc.v[i].a, c->prx.v[j].uuid, tr_actor_id(tr_self()), rc,
                                   cause);
}

/* The connection ended (rc -TR_ECLOSED at EOF, else -TR_EIO or
 * -TR_EPROTO, with the cause): no more I/O.  The dialogs learn it when
 * the channel ends (a parent's: after the reap) or at once (a child's). */
static void chan_lost(chan_t *c, int rc, const char *cause) {
  if (c->io_done)
    return;
  c->io_done = 1;
  c->loss_rc = rc;
  snprintf(c->loss_cause, sizeof c->loss_cause, "%s", cause);
  tr__wire_clear(&c->q);
  if (c->w)
    (void)tr__fd_unwatch(c->w);
  c->w = NULL;
  if (c->fd >= 0)
    close(c->fd);
  c->fd = -1;
  /* Expected, so not a warning: the end after the child's exit report
   * (either side), and in the child, once its actor has exited, any end:
   * the parent closes as soon as it has the report, and a write of the
   * child's that crosses the close sees a broken pipe. */
  int expected = (rc == -TR_ECLOSED && (c->final_seen || c->last_in)) ||
                 (c->child_side && c->main_gone);
  if (!expected || rc != -TR_ECLOSED)
    tr_log(expected || rc == -TR_ECLOSED ? TR_LOG_INFO : TR_LOG_WARN, "channel %s: %s",
           tr_actor_name(tr_self()), cause);
  if (c->peer) {
    /* No process to reap: the dialogs learn it now.  A peer node ends its
     * dialogs before it closes (each with its final frame: its actors end
     * them as they exit), so a dialog still open at its EOF was cut off:
     * the process died (a SIGKILL's close is a FIN as well) or dropped the
     * connection.  Lost, as on a broken connection; only this node's own
     * stop ends them with -TR_ECLOSED. */
    if (rc == -TR_ECLOSED && !c->closing) {
      char lost[sizeof c->loss_cause + 96];
      snprintf(lost, sizeof lost, "%s with this dialog open (its process died, or it dropped the connection)",
               cause);
      post_lost(c, -TR_EIO, lost);
    } else {
      post_lost(c, rc, cause);
    }
  } else if (c->child_side) {
    /* The parent is gone: so is this child (tractor: a child whose parent
     * channel closes cancels itself). */
    post_lost(c, rc, cause);
    if (c->main && !c->main_gone)
      (void)tr__actor_request_cancel(c->main, 1);
  } else if (c->has_proc && c->proc.pid > 0) {
    /* The child exits when it sees the end; if it does not, it is killed. */
    tr_msg_t *k;
    if (tr_msg_new(&k) == 0) {
      k->tag = C_KILL_HARD;
      kill_timer_post(c, k);
    }
  }
  chan_maybe_exit(c);
}

static void chan_try_flush(chan_t *c) {
  if (c->io_done || c->fd < 0)
    return;
  c->unflushed = 0;
  int wrote, w = tr__wire_flush(&c->q, c->fd, &wrote);
  if (wrote)
    c->last_tx = tr__now_coarse();
  if (w && w != -EAGAIN) {
    char cause[160];
    snprintf(cause, sizeof cause, "the connection broke: %s", strerror(-w));
    chan_lost(c, -TR_EIO, cause);
    return;
  }
  /* Blocked: the socket's edge watch reports the room to write, from now
   * until all is written (before the watch exists, its creation flushes
   * again).  Dropping it can fail only harmlessly (notifications for
   * nothing); taking it cannot be done without. */
  if (c->w && tr__fd_want_out(c->w, w == -EAGAIN) != 0 && w == -EAGAIN) {
    chan_lost(c, -TR_EIO, "cannot watch the socket for room to write");
    return;
  }
  if (!tr__wire_pending(&c->q) && c->child_side && c->last_in && !c->wr_shut) {
    c->wr_shut = 1; /* all said: the parent sees the end, and closes too */
    (void)shutdown(c->fd, SHUT_WR);
  }
}

/* Whether the peer reads nothing (and if so, loses it): more than
 * tr__chan_wire_max bytes wait to be written to it, and it has taken none
 * for a third of peer_timeout (the heartbeat period), counted from the
 * later of the last write and the moment the queue was seen over the mark.
 * Volume alone is no sign: a stream's window of large values may hold
 * hundreds of MiB while the peer reads as fast as it can.  Under the mark
 * it costs no clock read (it runs for every frame queued). */
static int chan_deaf(chan_t *c) {
  size_t waiting = c->q.tail - c->q.head;
  if (waiting <= __atomic_load_n(&tr__chan_wire_max, __ATOMIC_RELAXED)) {
    c->over_since = 0;
    return 0;
  }
  int64_t limit = __atomic_load_n(&tr__chan_deaf_after_ns, __ATOMIC_RELAXED), now = tr_now();
  if (limit == 0)
    limit = tr__chan_peer_timeout_ns / 3;
  if (limit <= 0)
    return 0;
  if (!c->over_since)
    c->over_since = now;
  int64_t idle = now - (c->last_tx > c->over_since ? c->last_tx : c->over_since);
  if (idle <= limit)
    return 0;
  char cause[160];
  snprintf(cause, sizeof cause,
           "the peer reads nothing: %zu bytes wait to be written, none taken for %lld ms", waiting,
           (long long)(idle / 1000000));
  chan_lost(c, -TR_EIO, cause);
  return 1;
}

/* Queues m as a frame (rt: its src and dst where its envx has none, or
 * NULL).  Returns 0 (m is consumed), or the encoder's
 * refusal (-TR_EMSGSIZE, -TR_EPROTO, -TR_EINVAL, -TR_ENOMEM), logged, with
 * m still the caller's, who answers for it if anyone waits. */
static int chan_queue(chan_t *c, tr_msg_t *m, const tr_route_t *rt) {
  if (c->io_done) {
    tr_msg_free(m);
    return 0;
  }
  int rc = tr__wire_push_msg(&c->q, m, rt, 0);
  if (rc) {
    tr_log(TR_LOG_ERROR, "channel %s: a %s could not be queued (%s)", tr_actor_name(tr_self()),
           tr__body_name(m->body), tr_strerror(rc));
    return rc;
  }
  tr_msg_free(m);
  if (!chan_deaf(c))
    c->unflushed = 1; /* written at the end of the turn (chan_fn) */
  return 0;
}

/* A protocol message from a proxy (proxy_send: ptr is the proxy, its
 * receiver): its sender into src (named the first time the peer hears of
 * it), the sender known as local from now on. */
static void chan_out(chan_t *c, tr_msg_t *m) {
  struct tr_envx *x = m->x_;
  tr_actor_t *px = m->ptr;
  if (c->io_done) {
    /* The connection is gone (the dialogs open then have been told): a
     * call made now is answered as a gone actor answers it, in the name of
     * the actor it was for, instead of waiting for an answer that cannot
     * come. */
    tr__actor_mark_gone(px);
    tr__rpc_bounce(px, m);
    tr_msg_free(m);
    return;
  }
  tr_route_t rt = {.has_dst = 1};
  tr_actor_uuid(px, rt.dst);
  uint8_t u[TR_UUID_LEN];
  int rc = 0;
  if (m->from) {
    tr_actor_uuid(m->from, u);
    const uint8_t *src = x && x->has_src ? x->src.uuid : u;
    /* The sender becomes known here, so that answers come back to it: also
     * one that named itself (a Cancel names its requester, whose first
     * word here it may be: its CancelAck must find it).  Named in src,
     * which then needs the envx. */
    if (memcmp(src, u, TR_UUID_LEN) == 0 && !ents_find(&c->loc, u)) {
      if (!x && !(x = tr__envx_get(m))) {
        rc = -TR_ENOMEM; /* not sent: answered below */
        tr_log(TR_LOG_ERROR, "channel %s: out of memory; a %s to %s is not sent",
               tr_actor_name(tr_self()), tr__body_name(m->body), tr_actor_name(px));
      } else {
        if (!x->has_src) {
          x->has_src = 1;
          memcpy(x->src.uuid, u, TR_UUID_LEN);
        }
        if (!x->src.name)
          x->src.name = strdup(tr_actor_name(m->from));
        /* Known here until it exits: the monitor prunes the table, so a
         * long-lived channel does not keep every actor that ever talked on
         * it (its frames after that are answered as a dead actor's). */
        if (ents_add(&c->loc, u, tr_actor_dup(m->from)) == 0 &&
            tr__actor_monitor(m->from, tr_self(), C_GONE) != 0)
          (void)ents_remove_id(&c->loc, tr_actor_id(m->from), NULL);
      }
    }
    if (!(x && x->has_src)) {
      rt.has_src = 1;
      memcpy(rt.src, u, TR_UUID_LEN);
    }
  }
  if (rc == 0 && c->child_side && m->cid == c->life_cid && c->main && m->from == c->main &&
      (m->body == TR_BODY_RETURN || m->body == TR_BODY_ERROR)) {
    int code = m->body == TR_BODY_ERROR ? (int)x->u.error.code : 0;
    *c->status = code == 0 || code == TR_ECANCELED ? 0 : 1;
  }
  if (rc == 0)
    rc = chan_queue(c, m, &rt);
  if (rc) {
    /* Not sent (out of memory, or the encoder refused it: the engine
     * refuses values above TR_REMOTE_VALUE_MAX where they are sent, so
     * this is an envelope out of the ordinary): a caller waiting for the
     * answer to a Start learns why at once. */
    if (m->body == TR_BODY_START && m->from) {
      tr_error_t *e = tr__error_new(rc, NULL, "a call to actor %s could not be sent: %s",
                                    tr_actor_name(px), tr_strerror(rc));
      tr__send_error(px, m->from, m->cid, rc, e, NULL);
      tr__error_free(e);
    }
    tr_msg_free(m);
  }
}

/* ---- receiving --------------------------------------------------------------------- */

static void start_main(chan_t *c, tr_msg_t *m, const tr_route_t *rt);

/* The name a frame gives its ref u (src or dst), or NULL: a named ref is
 * the envx's (tr_route_t). */
#define REF_NAME(x, f) ((x) && (x)->has_##f ? (x)->f.name : NULL)

/* One frame from the peer, with its route rt (the decoder's). */
static void on_frame(chan_t *c, tr_msg_t *m, const tr_route_t *rt) {
  struct tr_envx *x = m->x_;
  if (m->body == TR_BODY_CREDIT && m->cid == 0 && !rt->has_dst) {
    tr_msg_free(m); /* a heartbeat: its arrival was the point */
    return;
  }
  if (m->body == TR_BODY_STOP && m->cid == 0 && rt->has_src && !rt->has_dst) {
    /* The peer's actor src has exited: its proxy goes (what is still sent
     * to it is answered as a gone actor answers).  Not the proxies the
     * channel itself stands on (the child's main actor, the parent): their
     * ends are the life dialog's, whatever a peer says. */
    for (size_t i = 0; i < c->prx.n;)
      if (memcmp(c->prx.v[i].uuid, rt->src, TR_UUID_LEN) == 0 &&
          c->prx.v[i].a != c->parent_px && c->prx.v[i].a != c->child_px) {
        tr__actor_mark_gone(c->prx.v[i].a);
        (void)tr_send_u64(c->prx.v[i].a, P_EXIT, 0);
        ents_remove_at(&c->prx, i); /* the last entry moved to i */
      } else {
        i++;
      }
    tr_msg_free(m);
    return;
  }
  if (m->body == TR_BODY_SPAWN_SPEC && c->child_side && !c->main) {
    start_main(c, m, rt);
    tr_msg_free(m);
    return;
  }
  if (m->body == TR_BODY_HELLO || m->body == TR_BODY_SPAWN_SPEC || !rt->has_dst) {
    char cause[160];
    snprintf(cause, sizeof cause, "protocol error: an unexpected %s%s", tr__body_name(m->body),
             rt->has_dst ? "" : " without a receiver");
    tr_msg_free(m);
    chan_lost(c, -TR_EPROTO, cause);
    return;
  }
  int final = c->has_proc && m->cid == c->life_cid &&
              (m->body == TR_BODY_RETURN || m->body == TR_BODY_ERROR) && !c->life_final;
  tr_actor_t *to = final ? NULL : ents_find(&c->loc, rt->dst);
  if (!to && !final && (to = tr__node_local(rt->dst)) != NULL) {
    /* A registered actor of this node, found by another node: known here
     * from now on, as an actor that talked here is. */
    if (ents_add(&c->loc, rt->dst, to) == 0 && tr__actor_monitor(to, tr_self(), C_GONE) != 0)
      (void)ents_remove_id(&c->loc, tr_actor_id(to), NULL);
    to = ents_find(&c->loc, rt->dst);
  }
  /* The sender's proxy, made only for a frame that is delivered or
   * answered: frames for nobody make no actors (MAX_PROXIES bounds the
   * rest). */
  if (rt->has_src && (final || to || m->body == TR_BODY_START ||
                      (m->body == TR_BODY_CANCEL && x->u.cancel.whole_actor))) {
    tr_actor_t *px = proxy_for(c, rt->src, REF_NAME(x, src));
    if (c->io_done) { /* too many proxies: the channel is lost */
      tr_msg_free(m);
      return;
    }
    if (px) {
      m->from = tr_actor_dup(px);
    } else if (!(x && x->has_src)) {
      /* No proxy (out of memory): the sender's uuid in the envx then, for
       * whoever checks who sent it (tr__msg_sender_uuid). */
      if ((x = tr__envx_get(m)) != NULL) {
        x->has_src = 1;
        memcpy(x->src.uuid, rt->src, TR_UUID_LEN);
      }
    }
  }
  if (final) {
    c->final_seen = 1;
    /* The child's actor has exited (this is its exit report): it reads so
     * from now on, before a call that crossed its exit is answered. */
    if (c->child_px)
      tr__actor_mark_gone(c->child_px);
    c->life_final = m; /* delivered once the process is reaped */
    return;
  }
  if (!to) {
    /* Nobody of that uuid has talked here: as a dead actor would, in the
     * name of the actor addressed (PROTOCOL.md 4, item 8): its uuid, and
     * its name only if the frame gave one. */
    tr_uid_t dst = {.name = (char *)REF_NAME(x, dst)}; /* borrowed */
    memcpy(dst.uuid, rt->dst, TR_UUID_LEN);
    if (m->from && m->body == TR_BODY_START) {
      const char *dn = REF_NAME(x, dst);
      tr_error_t *e = tr__error_new(-TR_ECLOSED, NULL, "no actor %s in process %d",
                                    dn ? dn : "of that uuid", (int)getpid());
      tr__send_error_for(&dst, m->from, m->cid, -TR_ECLOSED, e);
      tr__error_free(e);
    } else if (m->from && m->body == TR_BODY_CANCEL && x->u.cancel.whole_actor) {
      (void)tr__send_cancel_ack_for(&dst, m->from, m->cid, 1, 1);
    } else {
      const char *dn = REF_NAME(x, dst);
      tr_log(TR_LOG_DEBUG, "channel %s: a %s for %s, which has not talked here, is dropped",
             tr_actor_name(tr_self()), tr__body_name(m->body), dn ? dn : "an unknown actor");
    }
    tr_msg_free(m);
    return;
  }
  (void)tr_send(to, m); /* a dead receiver: the runtime bounces a call */
}

/* Reads until EAGAIN (or a short read: see below); until EOF or EAGAIN
 * when the peer hung up (`hup`: the socket's watch said so). */
static void chan_read(chan_t *c, int hup) {
  if (!c->rbuf && !(c->rbuf = malloc(RBUF_LEN))) {
    chan_lost(c, -TR_EIO, "out of memory");
    return;
  }
  for (int reads = 0; !c->io_done; reads++) {
    if (reads == READ_BUDGET) {
      /* The edge has been reported: nothing else would come for what is
       * still unread, so the channel reminds itself. */
      if (tr_send_u64(tr_self(), C_READ, (uint64_t)hup) != 0)
        chan_lost(c, -TR_EIO, "out of memory");
      else
        tr__actor_yield(); /* or the reminder would come in this turn */
      return;
    }
    ssize_t k = recv(c->fd, c->rbuf, RBUF_LEN, MSG_DONTWAIT);
    if (k < 0 && errno == EINTR)
      continue;
    if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
      return;
    if (k <= 0) {
      /* An EOF in the middle of a frame is no orderly close: -TR_EIO
       * (PROTOCOL.md 4), as a reset. */
      int mid = k == 0 && tr__frame_dec_mid(&c->dec);
      char cause[160];
      snprintf(cause, sizeof cause, "%s",
               k < 0  ? strerror(errno)
               : mid  ? "the peer closed the connection in the middle of a frame"
                      : "the peer closed the connection");
      chan_lost(c, k == 0 && !mid ? -TR_ECLOSED : -TR_EIO, cause);
      return;
    }
    c->last_rx = tr__now_coarse();
    tr__fd_hot(c->w); /* the answer to what this turn writes: probed for */
    for (size_t off = 0; off < (size_t)k && !c->io_done;) {
      size_t used = 0;
      tr_msg_t *m = NULL;
      tr_route_t rt;
      int frc = tr__frame_dec_feed(&c->dec, c->rbuf + off, (size_t)k - off, &used, &rt, &m);
      if (frc) {
        char cause[200];
        snprintf(cause, sizeof cause, "a bad frame: %s", tr_strerror(frc));
        chan_lost(c, -TR_EPROTO, cause);
        return;
      }
      off += used;
      if (m)
        on_frame(c, m, &rt);
    }
    /* A short read drained the socket's data (as of now): the edge watch
     * reports any that comes later (tr__fd_begin_io came before this
     * read), so the read that would only say EAGAIN is saved.  Not the
     * end, though, if it came behind the data: its edge has been
     * reported already, so the next read must see it. */
    if ((size_t)k < RBUF_LEN && !hup)
      return;
  }
}

/* ---- the child's side ----------------------------------------------------------------- */


/* Names this process after its actor, as ps, top and /proc/PID/comm show
 * it (the kernel keeps 15 bytes): a tree of child processes then reads as
 * its actors, not as many copies of one program.  The main thread's name
 * is the process's; any thread may set it through /proc.  Best effort. */
static void name_process(const char *name) {
  if (!name || !*name)
    return;
  char path[64];
  snprintf(path, sizeof path, "/proc/self/task/%d/comm", (int)getpid());
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0)
    return;
  size_t n = strlen(name);
  (void)!write(fd, name, n > 15 ? 15 : n);
  close(fd);
}

static void start_main(chan_t *c, tr_msg_t *m, const tr_route_t *rt) {
  struct tr_envx *x = m->x_;
  /* The envelope's refs as uids (borrowed names): the envx's when named. */
  tr_uid_t src = {0}, dst = {0};
  if (x->has_src)
    src = x->src;
  else if (rt->has_src)
    memcpy(src.uuid, rt->src, TR_UUID_LEN);
  if (x->has_dst)
    dst = x->dst;
  else if (rt->has_dst)
    memcpy(dst.uuid, rt->dst, TR_UUID_LEN);
  const tr_uid_t *par = x->u.spawn_spec.has_parent ? &x->u.spawn_spec.parent : &src;
  c->life_cid = x->u.spawn_spec.life_cid;
  c->parent_px = (x->u.spawn_spec.has_parent || rt->has_src) ? proxy_for(c, par->uuid, par->name)
                                                             : NULL;
  if (!c->parent_px || !rt->has_dst) {
    chan_lost(c, -TR_EPROTO, "a SpawnSpec without a parent or a child");
    return;
  }
  int level;
  if (x->u.spawn_spec.log_level && tr__log_parse_level(x->u.spawn_spec.log_level, &level) == 0)
    tr_log_set_level(level); /* the parent's threshold (log.h) */
  tr__node_child_setup(x->u.spawn_spec.n_registry ? x->u.spawn_spec.registry[0] : NULL,
                       x->u.spawn_spec.bind_addr);
  name_process(x->u.spawn_spec.name);
  int rc = tr__rpc_spawn_served(x->u.spawn_spec.name, x->u.spawn_spec.ns, x->u.spawn_spec.n_ns,
                                x->u.spawn_spec.run_func, m->payload, c->parent_px, c->life_cid,
                                dst.uuid, NULL, &c->main);
  if (rc) {
    /* Its exit report: the error, then the end. */
    tr__send_error_for(&dst, c->parent_px, c->life_cid, rc, tr_error_last());
    *c->status = 1;
    c->main_gone = 1;
    (void)tr_send_u64(c->parent_px, C_LAST, 0);
    return;
  }
  (void)ents_add(&c->loc, dst.uuid, tr_actor_dup(c->main));
  if (tr__actor_monitor(c->main, tr_self(), C_DOWN) != 0)
    tr_log(TR_LOG_ERROR, "channel: cannot monitor the child's main actor");
}

/* ---- the parent's side --------------------------------------------------------------- */

static void send_signal(chan_t *c, int sig) {
  if (c->has_proc && c->proc.pid > 0 && c->proc.pidfd >= 0)
    (void)syscall(SYS_pidfd_send_signal, c->proc.pidfd, sig, NULL, 0);
}

/* The child connected back: the listener checked its Hello. */
static void on_adopt(chan_t *c, int fd) {
  if (tr__listen_adopted(c->spawned_pid, fd) != 0)
    return; /* not this channel's any more: the listener's release closed it */
  if (c->fd >= 0 || c->io_done || c->proc.pid == 0) {
    close(fd); /* too late: its process is gone or going */
    return;
  }
  c->fd = fd;
  c->handshaken = 1;
  c->last_rx = c->last_tx = tr__now_coarse();
  tick_post(c);
  if (sock_opts(fd) != 0 || tr__fd_watch_edge(fd, tr_self(), C_IO, &c->w) != 0) {
    chan_lost(c, -TR_EIO, "cannot watch the socket");
    return;
  }
  c->wid = tr__fd_watch_id(c->w);
  chan_try_flush(c);
}

static void describe_status(const tr_proc_t *p, char *buf, size_t len) {
  if (WIFEXITED(p->status))
    snprintf(buf, len, "exited with status %d", WEXITSTATUS(p->status));
  else if (WIFSIGNALED(p->status))
    snprintf(buf, len, "was killed by signal %d (%s)", WTERMSIG(p->status),
             strsignal(WTERMSIG(p->status)));
  else
    snprintf(buf, len, "ended (status %#x)", (unsigned)p->status);
}

/* The child process is reaped: its exit report (held, or made here),
 * then every dialog with its actors ends, then the channel. */
static void on_reaped(chan_t *c, pid_t pid) {
  char st[160], cause[320];
  describe_status(&c->proc, st, sizeof st);
  if (c->kill_why) { /* killed here, and not on request: say why */
    size_t l = strlen(st);
    snprintf(st + l, sizeof st - l, " (by its parent: %s)", c->kill_why);
  }
  int rc = c->final_seen ? -TR_ECLOSED : -TR_EIO;
  snprintf(cause, sizeof cause, "process %d %s", (int)pid, st);
  /* Died by itself: every dialog fails first, the nursery's child too;
   * killed on request: cancelled, as its exit report below says. */
  if (!c->final_seen && !c->killing && !c->lost_posted)
    post_lost(c, rc, cause);
  if (c->life_final) {
    c->life_final->u64 = TR_LIFE_REAPED | (uint32_t)c->proc.status;
    (void)tr_send(c->parent, c->life_final);
    c->life_final = NULL;
  } else {
    int erc = c->killing ? -TR_ECANCELED : -TR_EIO;
    tr_error_t *e =
        tr__error_new(erc, NULL, "actor %s (process %d) %s%s%s", tr_actor_name(c->child_px),
                      (int)pid, st, c->io_done && c->loss_rc != -TR_ECLOSED ? " after: " : "",
                      c->io_done && c->loss_rc != -TR_ECLOSED ? c->loss_cause : "");
    tr__send_error_u64(c->child_px, c->parent, c->life_cid, erc, e,
                       TR_LIFE_REAPED | (uint32_t)c->proc.status);
    tr__error_free(e);
  }
  if ((c->final_seen || c->killing) && !c->lost_posted) /* what is still open learns it now */
    post_lost(c, rc, cause);
  c->proc.pid = 0;
  if (!c->io_done)
    chan_lost(c, -TR_ECLOSED, cause);
  chan_maybe_exit(c);
}

static void on_proc(chan_t *c) {
  if (c->pw) {
    (void)tr__fd_unwatch(c->pw);
    c->pw = NULL;
  }
  pid_t pid = c->proc.pid;
  int rc = tr__proc_wait(&c->proc, 0);
  if (rc == 0)
    on_reaped(c, pid);
  else if (rc == -TR_ETIMEDOUT && /* not yet: a pidfd is readable once it can be reaped */
           tr__fd_watch(c->proc.pidfd, tr_self(), C_PROC, &c->pw) == 0)
    c->pwid = tr__fd_watch_id(c->pw);
  tr_error_clear();
}

/* ---- the channel actor ------------------------------------------------------------------ */

static void chan_maybe_exit(chan_t *c) {
  if (c->exiting)
    return;
  int done = c->peer         ? c->io_done
             : c->child_side ? (c->io_done && (!c->main || c->main_gone))
                             : (c->proc.pid == 0);
  if (!done)
    return;
  c->exiting = 1;
  tr_actor_exit();
}

/* ---- heartbeats ------------------------------------------------------------------------
 *
 * A heartbeat is a Credit of 0 outside any dialog (cid 0, no receiver),
 * sent when this side has written nothing for a third of peer_timeout; a
 * peer that sends nothing at all (no data, no heartbeat, no Hello) for
 * peer_timeout is declared dead (PROTOCOL.md 4). */

static void tick_post(chan_t *c) {
  if (tr__chan_peer_timeout_ns <= 0 || c->io_done)
    return;
  tr_msg_t *t;
  if (tr_msg_new(&t) != 0)
    return;
  t->tag = C_TICK;
  if (tr__timer_post(tr_now() + tr__chan_peer_timeout_ns / 3, tr_self(), t, &c->tick_timer) != 0)
    tr_msg_free(t);
}

static void on_tick(chan_t *c) {
  if (c->io_done || c->fd < 0)
    return; /* a parent's channel starts ticking once connected */
  int64_t now = tr_now();
  if (now - c->last_rx > tr__chan_peer_timeout_ns) {
    char cause[160];
    snprintf(cause, sizeof cause, "the peer has been silent for %lld ms (peer_timeout)",
             (long long)((now - c->last_rx) / 1000000));
    /* A silent process may live on until the grace has passed: its
     * dialogs fail now, not at its reap (which says how it ended). */
    if (c->has_proc) {
      c->lost_posted = 1;
      post_lost(c, -TR_EIO, cause);
    }
    chan_lost(c, -TR_EIO, cause);
    return;
  }
  if (chan_deaf(c)) /* one that has stopped sending too */
    return;
  if (now - c->last_tx >= tr__chan_peer_timeout_ns / 3 && !tr__wire_pending(&c->q) && !c->wr_shut) {
    tr_msg_t *h;
    if (tr_msg_new(&h) == 0) {
      h->body = TR_BODY_CREDIT; /* u64 = n = 0 */
      if (chan_queue(c, h, NULL) != 0)
        tr_msg_free(h);
    }
  }
  tick_post(c);
}

static void chan_handle(chan_t *c, tr_msg_t *m) {
  if (m->body != 0) {
    if (m->tag == C_OUT)
      chan_out(c, (tr_msg_take(m), m));
    return;
  }
  switch (m->tag) {
  case C_INIT:
    if (c->has_proc && tr__fd_watch(c->proc.pidfd, tr_self(), C_PROC, &c->pw) == 0)
      c->pwid = tr__fd_watch_id(c->pw);
    if (c->fd >= 0) {
      c->last_rx = c->last_tx = tr__now_coarse();
      tick_post(c);
      if (tr__fd_watch_edge(c->fd, tr_self(), C_IO, &c->w) == 0)
        c->wid = tr__fd_watch_id(c->w);
      else
        chan_lost(c, -TR_EIO, "cannot watch the socket");
      chan_try_flush(c);
    }
    if (c->has_proc) {
      tr_msg_t *t;
      if (tr_msg_new(&t) == 0) {
        t->tag = C_HS_TIMEOUT;
        if (tr__timer_post(tr_now() + hs_timeout(), tr_self(), t, &c->hs_timer) != 0)
          tr_msg_free(t);
      }
    }
    break;
  case C_IO:
    if (c->w && m->cid == c->wid) {
      uint32_t ev = tr__fd_begin_io(c->w) | (uint32_t)m->u64;
      chan_read(c, (ev & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0);
      chan_try_flush(c);
    }
    break;
  case C_READ:
    if (c->w) {
      chan_read(c, (int)m->u64);
      chan_try_flush(c);
    }
    break;
  case C_ADOPT:
    on_adopt(c, (int)m->u64);
    break;
  case C_PROC:
    if (c->pw && m->cid == c->pwid)
      on_proc(c);
    break;
  case C_KILL:
    c->killing = 1;
    if (!c->handshaken) {
      send_signal(c, SIGKILL); /* not even connected: nothing to lose */
    } else if (!c->term_sent) {
      c->term_sent = 1;
      send_signal(c, SIGTERM);
      tr_msg_t *k;
      if (tr_msg_new(&k) == 0) {
        k->tag = C_KILL_HARD;
        kill_timer_post(c, k);
      }
    }
    break;
  case C_KILL_HARD:
    c->kill_timer = 0; /* fired */
    send_signal(c, SIGKILL);
    break;
  case C_HS_TIMEOUT:
    if (!c->handshaken && c->proc.pid > 0) {
      tr_log(TR_LOG_WARN, "channel %s: the child process %d did not connect back in time",
             tr_actor_name(tr_self()), (int)c->proc.pid);
      c->kill_why = "it did not connect back in time";
      send_signal(c, SIGKILL);
    }
    break;
  case C_DOWN:
    if (c->main && m->u64 == tr_actor_id(c->main) && !c->main_gone) {
      c->main_gone = 1;
      /* Through the parent's proxy, behind the main actor's exit report. */
      if (!c->io_done)
        (void)tr_send_u64(c->parent_px, C_LAST, 0);
      chan_maybe_exit(c);
    }
    break;
  case C_GONE: {
    uint8_t u[TR_UUID_LEN];
    tr_msg_t *g;
    /* Forgotten here, and the peer told, so that it forgets its proxy. */
    if (ents_remove_id(&c->loc, m->u64, u) && !c->io_done && tr_msg_new(&g) == 0) {
      tr_route_t rt = {.has_src = 1};
      memcpy(rt.src, u, TR_UUID_LEN);
      g->body = TR_BODY_STOP;
      if (chan_queue(c, g, &rt) != 0)
        tr_msg_free(g);
    }
    break;
  }
  case C_TICK:
    on_tick(c);
    break;
  case C_CLOSE:
    c->closing = 1;
    if (c->peer)
      chan_lost(c, -TR_ECLOSED, "this node is stopping");
    break;

  case C_LAST:
    c->last_in = 1;
    chan_try_flush(c);
    chan_maybe_exit(c);
    break;
  }
}

/* The channel's behaviour.  What its messages queued is written at the end
 * of the turn (TR_AF_TURN_END: called with m == NULL): one write for a
 * batch of messages (a call's StartAck and Return, say), as soon as the
 * mailbox has nothing more, and at the latest after a turn's worth of
 * messages (tr_config_t.batch), so that a sender that keeps the mailbox
 * full still has its frames written in bounded batches. */
static void chan_fn(void *state, tr_msg_t *m) {
  chan_t *c = state;
  if (m) {
    chan_handle(c, m);
    return;
  }
  if (c->unflushed && c->w && !c->io_done && !c->exiting)
    chan_try_flush(c); /* before the watch, C_INIT writes */
}

static void chan_exit(void *state) {
  chan_t *c = state;
  uint64_t timers[] = {c->hs_timer, c->tick_timer, c->kill_timer};
  for (size_t i = 0; i < sizeof timers / sizeof timers[0]; i++)
    if (timers[i])
      (void)tr_timer_cancel(timers[i]); /* -TR_ENOTFOUND: it has fired */
  if (c->w)
    (void)tr__fd_unwatch(c->w);
  if (c->pw)
    (void)tr__fd_unwatch(c->pw);
  if (c->fd >= 0)
    close(c->fd);
  if (c->listening)
    tr__listen_release(c->spawned_pid);
  /* The error a failing tr__chan_spawn reports stays (the stop's own
   * waits record and clear theirs). */
  tr_error_t *kept = tr__error_take();
  if (c->has_proc && c->proc.pid > 0)
    (void)tr__proc_stop(&c->proc, 0); /* the runtime is going: no orphan */
  if (c->has_proc && c->proc.pidfd >= 0)
    (void)tr__proc_wait(&c->proc, 0);
  tr__error_put(kept);
  tr__wire_clear(&c->q);
  tr__frame_dec_fini(&c->dec);
  free(c->rbuf);
  ents_free(&c->prx, 1);
  ents_free(&c->loc, 0);
  tr_actor_release(c->parent);
  tr_actor_release(c->child_px);
  tr_actor_release(c->main);
  tr_msg_free(c->life_final);
  free(c);
}

/* Spawns a channel actor with state c (see tr_spawn). */
static int chan_actor_new(chan_t *c, const char *name, tr_actor_t **ref) {
  tr_spawn_opts_t o = {.name = name, .on_exit = chan_exit};
  return tr__actor_spawn_as(chan_fn, c, &o, NULL, NULL, TR_AF_TURN_END, ref);
}

static chan_t *chan_alloc(void) {
  chan_t *c = calloc(1, sizeof *c);
  if (!c)
    return NULL;
  c->fd = -1;
  c->proc.pidfd = -1;
  tr__wire_init(&c->q);
  c->grace = GRACE_DEFAULT_NS;
  tr__frame_dec_init(&c->dec, 0);
  return c;
}

/* ---- spawning ------------------------------------------------------------------------ */

static tr_msg_t *spawn_spec(const tr_proc_req_t *req) {
  tr_msg_t *m;
  if (tr_msg_new(&m) != 0)
    return NULL;
  m->body = TR_BODY_SPAWN_SPEC;
  m->cid = req->life_cid;
  struct tr_envx *x = tr__envx_get(m);
  if (!x)
    goto oom;
  x->has_dst = 1;
  memcpy(x->dst.uuid, req->uuid, TR_UUID_LEN);
  x->has_src = 1;
  tr_actor_uuid(req->parent, x->src.uuid);
  x->u.spawn_spec.life_cid = req->life_cid;
  x->u.spawn_spec.has_parent = 1;
  tr_actor_uuid(req->parent, x->u.spawn_spec.parent.uuid);
  if (!(x->dst.name = strdup(req->name)) || !(x->src.name = strdup(tr_actor_name(req->parent))) ||
      !(x->u.spawn_spec.parent.name = strdup(tr_actor_name(req->parent))) ||
      !(x->u.spawn_spec.name = strdup(req->name)) ||
      (req->run_func && !(x->u.spawn_spec.run_func = strdup(req->run_func))))
    goto oom;
  if (req->n_enable) {
    if (!(x->u.spawn_spec.ns = calloc(req->n_enable, sizeof(char *))))
      goto oom;
    for (size_t i = 0; i < req->n_enable; i++, x->u.spawn_spec.n_ns++)
      if (!(x->u.spawn_spec.ns[i] = strdup(req->enable[i])))
        goto oom;
  }
  char reg[TR_ADDR_MAX], bind[TR_ADDR_MAX];
  tr__node_spawn_info(reg, sizeof reg, bind, sizeof bind);
  if (reg[0]) {
    if (!(x->u.spawn_spec.registry = calloc(1, sizeof(char *))) ||
        !(x->u.spawn_spec.registry[0] = strdup(reg)))
      goto oom;
    x->u.spawn_spec.n_registry = 1;
    if (bind[0] && !(x->u.spawn_spec.bind_addr = strdup(bind)))
      goto oom;
  }
  /* The child logs at this process's threshold (tractor's loglevel
   * passed to a subactor): it has no other way to learn it, a level set
   * in code or from the command line included. */
  static const char *const level_names[] = {"off", "error", "warn", "info", "debug"};
  if (!(x->u.spawn_spec.log_level = strdup(level_names[tr_log_level()])))
    goto oom;
  m->payload = tr_buf_ref((tr_buf_t *)req->args);
  return m;
oom:
  tr_msg_free(m);
  return NULL;
}

int tr__chan_spawn(tr_proc_req_t *req, tr_actor_t **proxy) {
  *proxy = NULL;
  /* The SpawnSpec carries the arguments: refused here, before anything
   * starts, rather than a child that waits for a spec that cannot come. */
  if (tr_buf_len(req->args) > TR_REMOTE_VALUE_MAX)
    return TR_ERROR(-TR_EMSGSIZE,
                    "the arguments of %s: %zu bytes, more than a value for a process child may "
                    "hold (TR_REMOTE_VALUE_MAX, %u bytes)",
                    req->run_func ? req->run_func : req->name, tr_buf_len(req->args),
                    (unsigned)TR_REMOTE_VALUE_MAX);
  chan_t *c = chan_alloc();
  if (!c)
    return TR__ENOMEM();
  char addr[64], env0[96], env1[64], env2[128];
  int rc = tr__listen_acquire(addr, sizeof addr);
  if (rc) {
    chan_exit(c);
    return rc;
  }
  c->listening = 1;
  snprintf(env0, sizeof env0, "%s=%s", TR_PARENT_ADDR_ENV, addr);
  /* The child expects what this side does (its heartbeats match). */
  snprintf(env1, sizeof env1, "TR_PEER_TIMEOUT_MS=%lld",
           tr__chan_peer_timeout_ns > 0 ? (long long)((tr__chan_peer_timeout_ns + 999999) / 1000000)
                                        : 0LL);
  tr__auth_child_env(env2, sizeof env2); /* the child has this side's key, or none */
  char *const env[] = {env0, env1, env2, NULL};
  char *const argv[] = {(char *)(req->exe ? req->exe : "tractor-child"), NULL};
  rc = tr__proc_spawn(req->exe, argv, env, &c->proc);
  if (rc) {
    chan_exit(c);
    return rc;
  }
  c->has_proc = 1;
  c->spawned_pid = c->proc.pid;
  c->life_cid = req->life_cid;
  memcpy(c->child_uuid, req->uuid, TR_UUID_LEN);
  c->parent = tr_actor_dup(req->parent);
  if (req->grace_ns > 0)
    c->grace = req->grace_ns;
  char name[160];
  snprintf(name, sizeof name, "chan:%s", req->name);
  tr_actor_t *ca, *px;
  rc = chan_actor_new(c, name, &ca);
  if (rc) {
    chan_exit(c); /* stops and reaps the process */
    return rc;
  }
  /* Nothing reaches the channel before C_INIT but what is queued here. */
  tr_msg_t *spec = spawn_spec(req);
  int qrc = spec ? chan_queue(c, spec, NULL) : -TR_ENOMEM;
  if (qrc == 0)
    spec = NULL; /* queued */
  if (qrc || proxy_new(ca, req->name, req->uuid, req->exe ? 0 : TR_AF_OUR_PROGRAM, &px) != 0) {
    /* no proxy is left */
    tr_msg_free(spec);
    (void)tr_send_u64(ca, C_INIT, 0);
    (void)tr_send_u64(ca, C_KILL, 0); /* not connected yet: SIGKILL, then the reap */
    tr_actor_release(ca);
    return qrc && qrc != -TR_ENOMEM
               ? TR_ERROR(qrc, "the SpawnSpec of %s cannot be encoded: %s", req->name,
                          tr_strerror(qrc))
               : TR__ENOMEM();
  }
  (void)ents_add(&c->prx, req->uuid, tr_actor_dup(px));
  uint8_t pu[TR_UUID_LEN];
  tr_actor_uuid(req->parent, pu);
  (void)ents_add(&c->loc, pu, tr_actor_dup(req->parent));
  c->child_px = tr_actor_dup(px);
  req->pid = (int)c->proc.pid; /* c is the channel's from C_INIT on */
  (void)tr_send_u64(ca, C_INIT, 0);
  tr__listen_expect(req->pid, ca, C_ADOPT);
  tr_actor_release(ca);
  *proxy = px;
  return 0;
}

void tr__chan_kill(tr_actor_t *proxy) { (void)tr_send_u64(proxy, C_KILL, 0); }

/* ---- the child's side: the process ------------------------------------------------- */

/* Connects to "127.0.0.1:port" (blocking: on loopback the handshake is
 * over within the call).  Returns the socket, or -1 with errno. */
static int connect_back(const char *addr) {
  const char *colon = strrchr(addr, ':');
  if (!colon || colon - addr >= 64) {
    errno = EINVAL;
    return -1;
  }
  char host[64];
  memcpy(host, addr, (size_t)(colon - addr));
  host[colon - addr] = '\0';
  struct sockaddr_in sa = {.sin_family = AF_INET};
  long port = strtol(colon + 1, NULL, 10);
  if (port <= 0 || port > 65535 || inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
    errno = EINVAL;
    return -1;
  }
  sa.sin_port = htons((uint16_t)port);
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -1;
  int rc;
  do
    rc = connect(fd, (struct sockaddr *)&sa, sizeof sa);
  while (rc != 0 && errno == EINTR);
  if (rc != 0 || sock_opts(fd) != 0) {
    int err = errno;
    close(fd);
    errno = err;
    return -1;
  }
  return fd;
}

/* The child's end of the handshake with its parent's listener (blocking,
 * bounded by the handshake timeout).  Returns 0, or -1 with the reason
 * logged. */
static int child_handshake(int fd, const char *addr) {
  /* This end's Hello names the connection itself: no actor of the child
   * exists yet, and the parent identifies its child by pid. */
  uint8_t uuid[TR_UUID_LEN];
  if (getrandom(uuid, sizeof uuid, 0) != (ssize_t)sizeof uuid) {
    tr_log(TR_LOG_ERROR, "child process: getrandom: %s", strerror(errno));
    return -1;
  }
  tr_hello_info_t hi = {.name = "chan:parent", .uuid = uuid, .flags = TR_HELLO_CHILD};
  tr_msg_t *h, *peer = NULL;
  char why[200] = "out of memory";
  int rc = tr__hello_new(&hi, &h);
  if (rc == 0) {
    int64_t t = tr__chan_peer_timeout_ns;
    int64_t limit = t > 0 && t < hs_timeout() ? t : hs_timeout();
    rc = tr__hs_initiate(fd, h, tr_now() + limit, &peer, why, sizeof why);
    tr_msg_free(h);
    tr_msg_free(peer);
  }
  tr_error_clear();
  if (rc)
    tr_log(TR_LOG_ERROR, "child process: the handshake with its parent at %s failed: %s", addr,
           why);
  return rc ? -1 : 0;
}

/* The parent's address, out of the environment (tr__chan_child_run). */
static char parent_addr[TR_ADDR_MAX];

static int child_root(void *arg) {
  int *status = arg;
  const char *addr = parent_addr[0] ? parent_addr : NULL;
  int fd = addr ? connect_back(addr) : -1;
  if (fd < 0) {
    tr_log(TR_LOG_ERROR, "child process: cannot connect back to %s: %s", addr ? addr : "(none)",
           strerror(errno));
    return 1;
  }
  if (child_handshake(fd, addr) != 0) {
    close(fd);
    return 1;
  }
  chan_t *c = chan_alloc();
  if (!c) {
    close(fd);
    return 1;
  }
  c->child_side = 1;
  c->fd = fd;
  c->handshaken = 1;
  c->status = status;
  c->life_cid = UINT64_MAX; /* until the SpawnSpec */
  tr_actor_t *ca;
  if (chan_actor_new(c, "chan:parent", &ca) != 0) {
    chan_exit(c);
    return 1;
  }
  (void)tr_send_u64(ca, C_INIT, 0);
  (void)tr_join(ca, -1);
  tr_actor_release(ca);
  tr__node_child_stop(); /* its channels to other nodes, its listener */
  return 0;
}

int tr__chan_child_run(const tr_config_t *cfg) {
  int status = 1; /* until the main actor's exit report says otherwise */
  /* What the parent set for this process only leaves the environment
   * before anything else runs, so that a program the child actor starts
   * (system(), posix_spawn) does not take itself for a child actor
   * process: the parent's address here, the key in tr__auth_setup.  The
   * peer timeout the parent chose goes on through the configuration. */
  const char *addr = getenv(TR_PARENT_ADDR_ENV);
  snprintf(parent_addr, sizeof parent_addr, "%s", addr ? addr : "");
  unsetenv(TR_PARENT_ADDR_ENV);
  tr_config_t c = {0};
  if (cfg)
    c = *cfg;
  const char *pt = getenv("TR_PEER_TIMEOUT_MS");
  if (pt) {
    char *end;
    long long ms = strtoll(pt, &end, 10);
    if (end != pt && *end == '\0')
      c.peer_timeout_ns = ms <= 0 ? -1 /* 0 there: never */
                          : ms > INT64_MAX / 1000000 ? INT64_MAX : ms * 1000000LL;
    unsetenv("TR_PEER_TIMEOUT_MS");
  }
  int rc = tr_run(&c, child_root, &status);
  return rc ? 1 : status;
}

const tr_rpc_proc_ops_t tr__chan_proc_ops = {tr__chan_spawn, tr__chan_kill};

/* ---- channels between nodes ------------------------------------------------------- */

int tr__chan_peer(int fd, const tr_uid_t *peer, tr_actor_t **out, tr_actor_t **peer_px) {
  *out = NULL;
  if (peer_px)
    *peer_px = NULL;
  const char *peer_name = peer ? peer->name : NULL;
  chan_t *c = chan_alloc();
  if (!c) {
    close(fd);
    return TR__ENOMEM();
  }
  c->peer = 1;
  c->fd = fd;
  c->handshaken = 1; /* the handshake is done (node.c, listen.c) */
  if (sock_opts(fd) != 0) {
    int err = errno;
    chan_exit(c);
    return TR_ERROR(-TR_EIO, "channel: socket options: %s", strerror(err));
  }
  char name[TR_ADDR_MAX + 16];
  snprintf(name, sizeof name, "chan:%s", peer_name && *peer_name ? peer_name : "peer");
  tr_actor_t *ca;
  int rc = chan_actor_new(c, name, &ca);
  if (rc) {
    chan_exit(c);
    return rc;
  }
  tr__actor_mark_node(ca);
  tr_actor_t *px;
  if (peer && proxy_new(ca, peer->name, peer->uuid, 0, &px) == 0) {
    /* The Hello's actor, in the table before the channel runs: frames from
     * it come through this proxy, not a second one. */
    tr__actor_mark_node(px);
    if (ents_add(&c->prx, peer->uuid, tr_actor_dup(px)) == 0 && peer_px)
      *peer_px = tr_actor_dup(px);
    tr_actor_release(px);
  }
  (void)tr_send_u64(ca, C_INIT, 0);
  *out = ca;
  return 0;
}

void tr__chan_close(tr_actor_t *chan) { (void)tr_send_u64(chan, C_CLOSE, 0); }

int tr__chan_proxy(tr_actor_t *chan, const uint8_t uuid[TR_UUID_LEN], const char *name,
                   tr_actor_t **out) {
  *out = NULL;
  tr_actor_t *px;
  int rc = proxy_new(chan, name, uuid, 0, &px);
  if (rc)
    return rc;
  tr__actor_mark_node(px);
  /* Not in the channel's table (its turns own that): the proxy exits when
   * the channel does, told by a monitor (at once if it has already).
   * Frames from that actor arrive through the channel's own proxy of it;
   * the dialogs match peers by uuid, so either stands for it. */
  if ((rc = tr__actor_monitor(chan, px, P_EXIT)) != 0) {
    (void)tr_send_u64(px, P_EXIT, 0);
    tr_actor_release(px);
    return TR__ENOMEM();
  }
  *out = px;
  return 0;
}
