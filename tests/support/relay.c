/*
 * The codec relay (see relay.h): two behaviour actors per (caller,
 * callee), each message through the codec between them.
 */
#define _GNU_SOURCE /* accept4 */
#include "relay.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <tractor/log.h>

#include "runtime/actor/actor.h"
#include "runtime/reactor/reactor.h" /* fd watches: the socket mode */
#include "runtime/rpc/rpc.h" /* tr__rpc_route, tr__rpc_post_peer_lost: what a channel does */
#include "schema/envelope.h"
#include "transport/wire.h"

/* Application tags between the ends (never on a protocol message). */
enum {
  DOWN = 0x7e1a0001,   /* a monitor: the caller or the callee exited */
  STOP,                /* A -> B: pass on what you have, then go */
  STOP_LAST,           /* B -> B: after whatever B's own sends bounced back */
  STOP_ACK,            /* B -> A: B is gone; A goes too */
  BREAK,               /* -> A: the channel broke (tr_test_relay_break) */
  BREAK_B,             /* A -> B: the same, on B's side */
  INIT,                /* -> A, B (socket mode): watch your socket */
  WATCH,               /* the reactor: the socket is ready */
  FLUSH,               /* -> self (socket mode): write the queue */
  FROM_A = 0x7e1a00a0, /* a protocol message on the wire, from A */
  FROM_B               /* ... from B */
};

/* One end's side of the loopback TCP connection (socket mode).  Only the
 * end's own turns touch it, and its on_exit. */
typedef struct sock_end {
  int fd; /* -1: none */
  tr_fd_watch_t *w;
  uint64_t wid;   /* w's id: a late notification has another */
  uint32_t armed; /* the events w is armed for, 0 while it fired */
  tr_wire_q_t q;  /* the write queue (queued, written: bytes, ever) */
  uint64_t got;   /* bytes read, ever */
  uint64_t until; /* stopping: read this many bytes, then go on */
  int waiting;    /* until is set */
  int flush_sent; /* a FLUSH is in the mailbox */
  int done;       /* EOF or an error: no more I/O */
  int exiting;    /* tr_actor_exit called */
  tr_frame_dec_t dec;
  uint8_t *rbuf;
} sock_end_t;

typedef struct pair {
  struct pair *next;           /* the table (table_lock) */
  tr_actor_t *a, *b;           /* references */
  tr_actor_t *caller, *callee; /* references */
  uint64_t caller_id, callee_id;
  uint8_t caller_uuid[TR_UUID_LEN], callee_uuid[TR_UUID_LEN];
  int stopping; /* atomic: no new dialog uses this pair */
  int ends;     /* atomic: relay ends not yet exited */
  /* A's own: */
  int callee_gone; /* its monitor fired: calls are answered here */
  int stop_sent;   /* STOP went to B */
  int oneshot;     /* made for an exiting caller: one message, then STOP */
  int broken;      /* the channel broke: nothing more goes through */
  int break_rc;
  char break_cause[128];
  /* Socket mode: */
  int sock;       /* 1: data goes over the loopback connection */
  int break_set;  /* atomic: break_rc and break_cause are written */
  int a_acked;    /* A: STOP_ACK seen; go once B's bytes are read */
  int b_stopping; /* B: STOP seen */
  int b_acking;   /* B: STOP_LAST seen; ack once the queue is written */
  int b_lost;     /* B: told the callee it lost the caller */
  sock_end_t sa, sb;
} pair_t;

static int socket_mode; /* set by install, before any runtime */

static pthread_mutex_t table_lock = PTHREAD_MUTEX_INITIALIZER;
static pair_t *table;
static uint64_t frames; /* atomic */

uint64_t tr_test_relay_frames(void) { return __atomic_load_n(&frames, __ATOMIC_RELAXED); }

int tr_test_relay_on(void) { return tr__rpc_route != NULL; }

/* Encodes m and decodes it back: what the other end of a channel gets.
 * Returns the new message (m is freed), or NULL when the codec refused,
 * which no test expects: it is logged as an error. */
static tr_msg_t *through_codec(tr_msg_t *m) {
  uint8_t *buf = NULL;
  size_t len = 0;
  tr_msg_t *out = NULL;
  int rc = tr__env_encode(m, &buf, &len);
  if (rc == 0)
    rc = tr__env_decode(buf, len, NULL, &out);
  if (rc)
    tr_log(TR_LOG_ERROR, "codec relay: %s did not go through the codec (%d)",
           tr__body_name(m->body), rc);
  free(buf);
  tr_msg_free(m);
  __atomic_fetch_add(&frames, 1, __ATOMIC_RELAXED);
  return out;
}

/* Puts m on the wire to the other end: its sender named in the envelope
 * (src, from the local `from`, unless the message names it already), then
 * encoded and decoded. */
static void to_wire(tr_actor_t *other, tr_msg_t *m, uint32_t tag) {
  tr_msg_take(m);
  int had_from = m->from != NULL;
  if (m->from && !(m->x_ && m->x_->has_src)) {
    struct tr_envx *x = tr__envx_get(m);
    if (x) {
      x->has_src = 1;
      tr_actor_uuid(m->from, x->src.uuid);
      x->src.name = strdup(tr_actor_name(m->from));
    }
  }
  tr_msg_t *n = through_codec(m);
  if (!n)
    return;
  n->tag = tag;
  if (had_from)
    n->ptr = (void *)1; /* a flag for the far end: deliver with a sender */
  (void)tr_send(other, n);
}

/* Delivers a message off the wire to the local actor: the decoder cannot
 * rebuild a pointer, so the delivering end stands in as sender. */
static void from_wire(tr_actor_t *to, tr_msg_t *m) {
  tr_msg_take(m);
  m->tag = 0;
  if (m->ptr)
    m->from = tr_actor_dup(tr_self());
  m->ptr = NULL;
  (void)tr_send(to, m); /* a dead receiver: the runtime bounces a call */
}

/* ---- socket mode ------------------------------------------------------------- */

#define RBUF_LEN (64u << 10) /* bytes read per recv */

static int sock_opts(int fd) {
  int one = 1, fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
    return -1;
  return setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* Opens a TCP connection on 127.0.0.1: *fa and *fb are its two ends,
 * non-blocking, close-on-exec, without Nagle.  The connect blocks, but to
 * a listening socket on loopback the handshake is over within the call,
 * so it costs microseconds.  Returns 0, or -1 with errno (nothing open). */
static int loopback_pair(int *fa, int *fb) {
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t sl = sizeof sa;
  int c = -1, s = -1, l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (l < 0 || bind(l, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(l, 1) != 0 ||
      getsockname(l, (struct sockaddr *)&sa, &sl) != 0)
    goto fail;
  c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (c < 0 || connect(c, (struct sockaddr *)&sa, sizeof sa) != 0)
    goto fail;
  do
    s = accept4(l, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
  while (s < 0 && errno == EINTR);
  if (s < 0 || sock_opts(c) != 0 || sock_opts(s) != 0)
    goto fail;
  close(l);
  *fa = c;
  *fb = s;
  return 0;
fail:;
  int err = errno;
  if (s >= 0)
    close(s);
  if (c >= 0)
    close(c);
  if (l >= 0)
    close(l);
  errno = err;
  return -1;
}

static void sock_init(sock_end_t *e, int fd) {
  e->fd = fd;
  tr__wire_init(&e->q);
  tr__frame_dec_init(&e->dec, 0);
}

/* At the end's exit: every fd watch removed and every fd closed. */
static void sock_fini(sock_end_t *e) {
  if (e->w)
    (void)tr__fd_unwatch(e->w);
  e->w = NULL;
  if (e->fd >= 0)
    close(e->fd);
  e->fd = -1;
  tr__wire_clear(&e->q);
  tr__frame_dec_fini(&e->dec);
  free(e->rbuf);
  e->rbuf = NULL;
}

static void sock_rearm(sock_end_t *e) {
  if (!e->w || e->done)
    return;
  uint32_t ev = EPOLLIN | (tr__wire_pending(&e->q) ? EPOLLOUT : 0);
  if (tr__fd_rearm(e->w, ev) == 0)
    e->armed = ev;
  else
    tr_log(TR_LOG_ERROR, "codec relay: cannot re-arm the socket's watch");
}

/* Puts m on the socket's write queue as one frame (socket mode's to_wire).
 * The frame's Envelope carries what the actor hop carries beside it: the
 * sender in src, as to_wire writes it, and "deliver with a sender" as an
 * empty dst (has_dst, no name, a zero uuid), which the relay never sends
 * otherwise and the receiving end removes.  The queue is written on a
 * FLUSH this end sends itself, so the messages already in its mailbox
 * join the same send. */
static void to_sock(sock_end_t *e, tr_msg_t *m) {
  tr_msg_take(m);
  if (m->from) {
    struct tr_envx *x = tr__envx_get(m);
    if (x) {
      if (!x->has_src) {
        x->has_src = 1;
        tr_actor_uuid(m->from, x->src.uuid);
        x->src.name = strdup(tr_actor_name(m->from));
      }
      x->has_dst = 1;
    }
  }
  int rc = tr__wire_push_msg(&e->q, m, NULL, 0);
  if (rc) {
    tr_log(TR_LOG_ERROR, "codec relay: %s did not go through the codec (%d)",
           tr__body_name(m->body), rc);
    tr_msg_free(m);
    return;
  }
  tr_msg_free(m);
  __atomic_fetch_add(&frames, 1, __ATOMIC_RELAXED);
  if (!e->flush_sent && !e->done) {
    e->flush_sent = 1;
    (void)tr_send_u64(tr_self(), FLUSH, 0);
  }
}

/* A message off the socket, to the local actor (from_wire's twin). */
static void sock_deliver(tr_actor_t *to, tr_msg_t *m) {
  if (m->x_ && m->x_->has_dst) {
    tr__uid_fini(&m->x_->dst);
    m->x_->has_dst = 0;
    m->from = tr_actor_dup(tr_self());
  }
  (void)tr_send(to, m);
}

/* Reads until EAGAIN, delivering each message to `to` (NULL: dropped).
 * Returns 0 at EAGAIN; else the end is done and *rc, cause say why
 * (-TR_ECLOSED at EOF, -TR_EIO for an error or a bad frame). */
static int sock_read(sock_end_t *e, tr_actor_t *to, int *rc, char *cause, size_t cause_len) {
  if (!e->rbuf && !(e->rbuf = malloc(RBUF_LEN))) {
    *rc = -TR_ENOMEM;
    snprintf(cause, cause_len, "relay socket: out of memory");
    return -1;
  }
  for (;;) {
    ssize_t k = recv(e->fd, e->rbuf, RBUF_LEN, MSG_DONTWAIT);
    if (k < 0 && errno == EINTR)
      continue;
    if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
      return 0;
    if (k <= 0) {
      *rc = k == 0 ? -TR_ECLOSED : -TR_EIO;
      snprintf(cause, cause_len, "relay socket: %s",
               k == 0 ? "closed by the peer" : strerror(errno));
      return -1;
    }
    e->got += (uint64_t)k;
    for (size_t off = 0; off < (size_t)k;) {
      size_t used = 0;
      tr_msg_t *m = NULL;
      int frc = tr__frame_dec_feed(&e->dec, e->rbuf + off, (size_t)k - off, &used, NULL, &m);
      if (frc) {
        *rc = -TR_EIO;
        snprintf(cause, cause_len, "relay socket: a bad frame (%d)", frc);
        return -1;
      }
      off += used;
      if (m && to)
        sock_deliver(to, m);
      else if (m)
        tr_msg_free(m);
    }
  }
}

static void unlist(pair_t *p);

static void pair_end_exit(void *state) {
  pair_t *p = state;
  if (__atomic_sub_fetch(&p->ends, 1, __ATOMIC_ACQ_REL) != 0)
    return;
  /* Both ends gone: off the table first, also when they went without a
   * stop of their own (tr_shutdown ends every actor), or route would find
   * the freed pair. */
  unlist(p);
  tr_actor_release(p->a);
  tr_actor_release(p->b);
  tr_actor_release(p->caller);
  tr_actor_release(p->callee);
  free(p);
}

static void unlist(pair_t *p) {
  __atomic_store_n(&p->stopping, 1, __ATOMIC_RELAXED);
  pthread_mutex_lock(&table_lock);
  for (pair_t **pp = &table; *pp; pp = &(*pp)->next)
    if (*pp == p) {
      *pp = p->next;
      break;
    }
  pthread_mutex_unlock(&table_lock);
}

/* A: next to the caller, standing for the callee. */
static void end_a(void *state, tr_msg_t *m) {
  pair_t *p = state;
  if (m->body == 0) {
    switch (m->tag) {
    case DOWN:
      if (m->u64 == p->callee_id)
        p->callee_gone = 1;
      if (!p->stop_sent && !p->broken) {
        unlist(p);
        p->stop_sent = 1; /* B passes on what it has, then both go */
        (void)tr_send_u64(p->b, STOP, 0);
      }
      break;
    case BREAK:
      if (p->broken)
        break;
      p->broken = 1;
      tr__rpc_post_peer_lost(p->caller, p->callee_uuid, 0, p->break_rc, p->break_cause);
      (void)tr_send_u64(p->b, BREAK_B, 0);
      break;
    case STOP_ACK:
      tr_actor_exit(); /* what comes later bounces off this end, to the caller */
      break;
    }
    return;
  }
  if (m->tag == FROM_B) {
    if (!p->broken)
      from_wire(p->caller, m);
  } else if (p->broken) {
    /* the channel is gone: dropped, as the wire would */
  } else if (p->callee_gone) {
    tr__rpc_bounce(p->callee, m); /* answered as the dead callee would be */
  } else {
    to_wire(p->b, m, FROM_A);
    if (p->oneshot && !p->stop_sent) {
      unlist(p);
      p->stop_sent = 1;
      (void)tr_send_u64(p->b, STOP, 0);
    }
  }
}

/* B: next to the callee, standing for the caller. */
static void end_b(void *state, tr_msg_t *m) {
  pair_t *p = state;
  if (m->body == 0) {
    switch (m->tag) {
    case STOP: /* after a Start that bounced off a dead callee: its answer
                  is in this mailbox already, before STOP_LAST */
      (void)tr_send_u64(tr_self(), STOP_LAST, 0);
      break;
    case BREAK_B:
      tr__rpc_post_peer_lost(p->callee, p->caller_uuid, 0, p->break_rc, p->break_cause);
      /* fallthrough */
    case STOP_LAST:
      (void)tr_send_u64(p->a, STOP_ACK, 0);
      tr_actor_exit();
      break;
    }
    return;
  }
  if (m->tag == FROM_A)
    from_wire(p->callee, m);
  else
    to_wire(p->a, m, FROM_B);
}

/* ---- the ends in socket mode --------------------------------------------------
 *
 * Data goes over the socket; STOP, STOP_LAST and STOP_ACK stay actor
 * messages, so each carries the byte count its sender had queued on its
 * socket by then (STOP: A's, STOP_ACK: B's, all written): the receiver
 * reads at least that far before it goes on, which keeps the actor hop's
 * order (everything A sent before STOP reaches the callee before B acks;
 * everything B sent before its ack reaches the caller before A goes).  B
 * writes its whole queue before it acks and exits.  A peer that closes,
 * or an error, while the pair is not stopping is a broken channel, told
 * to the local side as BREAK does; tr_test_relay_break shuts A's socket
 * down, so both ends see it that way. */

/* Why the channel broke: tr_test_relay_break's reason when it broke it,
 * else what the socket said. */
static void loss_reason(pair_t *p, int *rc, const char **cause) {
  /* Pairs with the release store in tr_test_relay_break: its rc and cause
   * are written before the flag, and the socket's shutdown after. */
  if (__atomic_load_n(&p->break_set, __ATOMIC_ACQUIRE)) {
    *rc = p->break_rc;
    *cause = p->break_cause;
  }
}

static void a_done(pair_t *p, int rc, const char *cause) {
  p->sa.done = 1;
  int brk = __atomic_load_n(&p->break_set, __ATOMIC_ACQUIRE); /* as in loss_reason */
  if (p->broken || (p->stop_sent && !brk))
    return; /* stopping: the end of the stream is expected */
  loss_reason(p, &rc, &cause);
  p->broken = 1;
  unlist(p);
  tr__rpc_post_peer_lost(p->caller, p->callee_uuid, 0, rc, cause);
}

/* A goes once B has acked and everything B wrote before is delivered. */
static void a_maybe_exit(pair_t *p) {
  sock_end_t *e = &p->sa;
  if (p->a_acked && !e->exiting && (e->done || e->got >= e->until)) {
    e->exiting = 1;
    tr_actor_exit();
  }
}

static void b_ack_exit(pair_t *p) {
  if (p->sb.exiting)
    return;
  p->sb.exiting = 1;
  (void)tr_send_u64(p->a, STOP_ACK, p->sb.q.written);
  tr_actor_exit();
}

static void b_done(pair_t *p, int rc, const char *cause) {
  p->sb.done = 1;
  int brk = __atomic_load_n(&p->break_set, __ATOMIC_ACQUIRE); /* as in loss_reason */
  if (p->b_lost || (p->b_stopping && !brk))
    return;
  loss_reason(p, &rc, &cause);
  p->b_lost = 1;
  unlist(p);
  tr__rpc_post_peer_lost(p->callee, p->caller_uuid, 0, rc, cause);
  b_ack_exit(p);
}

/* B's stop, step by step: A's bytes up to STOP's count read, then
 * STOP_LAST (after the answers to B's own sends), then the queue written,
 * then the ack. */
static void b_progress(pair_t *p) {
  sock_end_t *e = &p->sb;
  if (e->waiting && (e->done || e->got >= e->until)) {
    e->waiting = 0;
    (void)tr_send_u64(tr_self(), STOP_LAST, 0);
  }
  if (p->b_acking && (e->done || !tr__wire_pending(&e->q)))
    b_ack_exit(p);
}

/* Writes what it can; a failure is the channel's. */
static void sock_try_flush(pair_t *p, sock_end_t *e, int at_a) {
  if (e->done)
    return;
  int w = tr__wire_flush(&e->q, e->fd, NULL);
  if (w == -EAGAIN) {
    if (!(e->armed & EPOLLOUT))
      sock_rearm(e);
  } else if (w) {
    char cause[160];
    snprintf(cause, sizeof cause, "relay socket: %s", strerror(-w));
    if (at_a)
      a_done(p, -TR_EIO, cause);
    else
      b_done(p, -TR_EIO, cause);
  }
}

/* The end's socket is ready (or a FLUSH is due): read, write, re-arm. */
static void sock_io(pair_t *p, int at_a, int readable) {
  sock_end_t *e = at_a ? &p->sa : &p->sb;
  tr_actor_t *to = at_a ? (p->broken ? NULL : p->caller) : p->callee;
  int rc = 0;
  char cause[160];
  if (readable && !e->done && sock_read(e, to, &rc, cause, sizeof cause) != 0) {
    if (at_a)
      a_done(p, rc, cause);
    else
      b_done(p, rc, cause);
  }
  sock_try_flush(p, e, at_a);
  if (at_a)
    a_maybe_exit(p);
  else
    b_progress(p);
  if (readable && !e->exiting)
    sock_rearm(e);
}

/* The common control messages of both ends; 1 when m was one. */
static int sock_control(pair_t *p, int at_a, tr_msg_t *m) {
  sock_end_t *e = at_a ? &p->sa : &p->sb;
  switch (m->tag) {
  case INIT:
    if (tr__fd_watch(e->fd, tr_self(), WATCH, &e->w) == 0) {
      e->wid = tr__fd_watch_id(e->w);
      e->armed = EPOLLIN;
    } else if (at_a) {
      a_done(p, -TR_EIO, "relay socket: cannot watch it");
    } else {
      b_done(p, -TR_EIO, "relay socket: cannot watch it");
    }
    return 1;
  case WATCH:
    if (e->w && m->cid == e->wid) { /* else a late one, for a removed watch */
      e->armed = 0;
      sock_io(p, at_a, 1);
    }
    return 1;
  case FLUSH:
    e->flush_sent = 0;
    sock_io(p, at_a, 0);
    return 1;
  }
  return 0;
}

static void stop_b_sock(pair_t *p) {
  unlist(p);
  p->stop_sent = 1; /* B passes on what it has, then both go */
  (void)tr_send_u64(p->b, STOP, p->sa.q.queued);
}

static void sock_end_a(void *state, tr_msg_t *m) {
  pair_t *p = state;
  if (m->body == 0) {
    if (sock_control(p, 1, m))
      return;
    switch (m->tag) {
    case DOWN:
      if (m->u64 == p->callee_id)
        p->callee_gone = 1;
      if (!p->stop_sent && !p->broken)
        stop_b_sock(p);
      break;
    case STOP_ACK:
      /* Unasked (no STOP went to B): B saw the channel break and went.  A
       * may not have seen it yet (its socket's readiness can come after
       * this, or never once A is gone), so A reports the loss now. */
      if (!p->stop_sent)
        a_done(p, -TR_EIO, "relay socket: the other end lost the connection");
      p->a_acked = 1;
      p->sa.until = m->u64;
      a_maybe_exit(p);
      break;
    }
    return;
  }
  if (p->broken || p->sa.done) {
    /* the channel is gone: dropped, as the wire would */
  } else if (p->callee_gone || p->a_acked) {
    tr__rpc_bounce(p->callee, m); /* answered as the dead callee would be */
  } else {
    to_sock(&p->sa, m);
    if (p->oneshot && !p->stop_sent)
      stop_b_sock(p);
  }
}

static void sock_end_b(void *state, tr_msg_t *m) {
  pair_t *p = state;
  if (m->body == 0) {
    if (sock_control(p, 0, m))
      return;
    switch (m->tag) {
    case STOP:
      p->b_stopping = 1;
      p->sb.until = m->u64;
      p->sb.waiting = 1;
      b_progress(p);
      break;
    case STOP_LAST:
      p->b_acking = 1;
      sock_try_flush(p, &p->sb, 0);
      b_progress(p);
      break;
    }
    return;
  }
  if (!p->sb.done)
    to_sock(&p->sb, m);
}

static void sock_a_exit(void *state) {
  pair_t *p = state;
  sock_fini(&p->sa);
  pair_end_exit(p);
}

static void sock_b_exit(void *state) {
  pair_t *p = state;
  sock_fini(&p->sb);
  pair_end_exit(p);
}

static tr_actor_t *route(tr_actor_t *self, tr_actor_t *target) {
  if (tr_actor_exited(target))
    return NULL; /* the direct way answers at once */
  /* The node's own dialogs (registering with the registrar) live as long
   * as the node: a pair for them would outlast the test body's leak
   * check.  The relay carries the test's dialogs. */
  if (tr_load_relaxed(&target->flags) & TR_AF_NODE)
    return NULL;
  uint64_t cid_ = tr_actor_id(self), eid = tr_actor_id(target);
  tr_actor_t *via = NULL;
  pthread_mutex_lock(&table_lock);
  for (pair_t *p = table; p; p = p->next)
    if (p->caller_id == cid_ && p->callee_id == eid &&
        !__atomic_load_n(&p->stopping, __ATOMIC_RELAXED)) {
      via = tr_actor_dup(p->a);
      break;
    }
  if (!via) {
    pair_t *p = calloc(1, sizeof *p);
    if (p) {
      p->caller = tr_actor_dup(self);
      p->callee = tr_actor_dup(target);
      p->caller_id = cid_;
      p->callee_id = eid;
      tr_actor_uuid(self, p->caller_uuid);
      tr_actor_uuid(target, p->callee_uuid);
      p->ends = 2;
      p->sock = socket_mode;
      int fa = -1, fb = -1;
      if (p->sock && loopback_pair(&fa, &fb) != 0) {
        tr_log(TR_LOG_ERROR, "codec relay: no loopback connection (%s)", strerror(errno));
        p->sock = -1;
      }
      sock_init(&p->sa, fa);
      sock_init(&p->sb, fb);
      /* Nothing reaches either end before this returns (their messages
       * come from the caller through A, INIT, or the monitors set below),
       * so the fields are written before any turn reads them. */
      tr_spawn_opts_t oa = {.name = "relay-a", .on_exit = p->sock ? sock_a_exit : pair_end_exit};
      tr_spawn_opts_t ob = {.name = "relay-b", .on_exit = p->sock ? sock_b_exit : pair_end_exit};
      if (p->sock < 0 || tr_spawn(p->sock ? sock_end_a : end_a, p, &oa, &p->a) != 0) {
        sock_fini(&p->sa);
        sock_fini(&p->sb);
        tr_actor_release(p->caller);
        tr_actor_release(p->callee);
        free(p);
      } else if (tr_spawn(p->sock ? sock_end_b : end_b, p, &ob, &p->b) != 0) {
        sock_fini(&p->sb); /* B never ran: its socket is closed here */
        p->ends = 1;       /* A alone: it goes at once */
        (void)tr_send_u64(p->a, STOP_ACK, 0);
      } else {
        if (p->sock) { /* before anything else reaches either end */
          (void)tr_send_u64(p->a, INIT, 0);
          (void)tr_send_u64(p->b, INIT, 0);
        }
        p->next = table;
        table = p;
        via = tr_actor_dup(p->a);
        /* An exiting caller sends one message (a child's exit report):
         * its monitor would fire before that is sent, so the pair carries
         * the one message and ends. */
        p->oneshot = tr_actor_exited(self);
        if (p->oneshot)
          __atomic_store_n(&p->stopping, 1, __ATOMIC_RELAXED);
        if ((!p->oneshot && tr__actor_monitor(self, p->a, DOWN)) ||
            tr__actor_monitor(target, p->a, DOWN))
          tr_log(TR_LOG_ERROR, "codec relay: no monitor; the pair will not end");
      }
    }
  }
  pthread_mutex_unlock(&table_lock);
  return via; /* NULL (out of memory): the direct way */
}

int tr_test_relay_break(tr_actor_t *callee, int rc, const char *cause) {
  int n = 0;
  uint64_t eid = tr_actor_id(callee);
  pthread_mutex_lock(&table_lock);
  for (pair_t **pp = &table; *pp;) {
    pair_t *p = *pp;
    if (p->callee_id != eid) {
      pp = &p->next;
      continue;
    }
    *pp = p->next;
    __atomic_store_n(&p->stopping, 1, __ATOMIC_RELAXED);
    p->break_rc = rc;
    snprintf(p->break_cause, sizeof p->break_cause, "%s", cause ? cause : "relay broken");
    if (p->sock) {
      /* Pairs with the acquire loads of the ends (loss_reason): the
       * shutdown reaches them through the kernel, which orders nothing a
       * sanitizer sees.  A's socket is open: A closes it only at its exit,
       * after it has unlisted the pair (under table_lock). */
      __atomic_store_n(&p->break_set, 1, __ATOMIC_RELEASE);
      (void)shutdown(p->sa.fd, SHUT_RDWR);
    } else {
      (void)tr_send_u64(p->a, BREAK, 0); /* the send orders the fields before A reads them */
    }
    n++;
  }
  pthread_mutex_unlock(&table_lock);
  return n;
}

void tr_test_relay_install_mode(int sockets) {
  socket_mode = sockets != 0;
  tr__rpc_route = route;
}

void tr_test_relay_install(void) {
  const char *t = getenv("TR_TEST_TRANSPORT");
  tr_test_relay_install_mode(t && strcmp(t, "socket") == 0);
}

void tr_test_relay_uninstall(void) { tr__rpc_route = NULL; }

int tr_test_relay_sockets(void) { return tr_test_relay_on() && socket_mode; }

__attribute__((constructor)) static void relay_from_env(void) {
  const char *t = getenv("TR_TEST_TRANSPORT");
  if (t && (strcmp(t, "relay") == 0 || strcmp(t, "socket") == 0))
    tr_test_relay_install();
}
