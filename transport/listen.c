/*
 * The listener for child processes (see listen.h).
 */
#define _GNU_SOURCE /* accept4 */
#include "transport/listen.h"

#include <arpa/inet.h>
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
#include <sys/wait.h>
#include <unistd.h>

#include <tractor/log.h>
#include <tractor/time.h>

#include "runtime/actor/actor.h"
#include "runtime/error/error.h"
#include "runtime/reactor/reactor.h"
#include "schema/envelope.h"
#include "transport/auth.h"
#include "transport/channel.h"
#include "transport/hello.h"
#include "transport/node.h"

enum {
  L_INIT = 0x7e2b0001, /* watch the listening socket */
  L_ACCEPT,            /* it is ready */
  L_CONN,              /* a connection is ready (cid: its watch) */
  L_TICK,              /* handshake deadlines */
  L_REG,               /* a new expectation: look at the waiting connections */
  L_STOP,              /* the last child is gone */
  L_RETRY              /* accepting failed for want of fds or memory: try again */
};

#define MAX_PENDING 256       /* connections in their handshake at once */
#define HS_TIMEOUT_MAX_NS (5 * 1000000000LL)
#define TICK_NS (200 * 1000000LL)
#define LOUD_REFUSALS 8 /* logged as warnings; the rest at debug level */
/* How long the listener waits before it accepts again when the process is
 * out of fds or memory.  The connection that could not be accepted stays
 * in the backlog and keeps the socket readable, so re-arming at once would
 * turn the listener into a busy loop (a core for as long as the shortage
 * lasts, and it starves the turns that would free fds).  A tenth of a
 * second adds at most that much to a connect made during a shortage; the
 * kernel's backlog holds the connections meanwhile. */
#define ACCEPT_RETRY_NS (100 * 1000000LL)

typedef struct expect {
  struct expect *next;
  pid_t pid;
  tr_actor_t *chan; /* a reference */
  uint32_t tag;
} expect_t;

/*
 * A child's socket on its way to its channel: sent in a C_ADOPT message
 * and not yet taken (tr__listen_adopted).  The message alone cannot carry
 * the socket safely: a channel that exits before its turn reads it (its
 * process died right after connecting, the handshake timeout's SIGKILL, the
 * runtime stopping) drops it as a dead letter, fd and all.  The record is
 * what closes it then: its channel's tr__listen_release does.  Exactly one
 * of three removes a record, under L.lock, and that one owns the fd: the
 * channel taking it, the channel's release (closes it), or the listener
 * when its send failed (closes it).
 */
typedef struct flight {
  struct flight *next;
  pid_t pid;
  int fd;
} flight_t;

/* The shared part: who expects whom, the sockets in flight, and the
 * listener itself. */
static struct {
  pthread_mutex_t lock;
  tr_actor_t *actor; /* a reference, NULL when there is none */
  char addr[64];
  unsigned users;
  expect_t *expects;
  flight_t *flights;
} L = {.lock = PTHREAD_MUTEX_INITIALIZER};

static uint64_t refused; /* atomic */
static uint64_t stalls;  /* atomic: accepts that failed for want of fds or memory */

uint64_t tr__listen_refused(void) { return __atomic_load_n(&refused, __ATOMIC_RELAXED); }

uint64_t tr__listen_accept_stalls(void) { return __atomic_load_n(&stalls, __ATOMIC_RELAXED); }

size_t tr__listen_in_flight(void) {
  size_t n = 0;
  pthread_mutex_lock(&L.lock);
  for (flight_t *f = L.flights; f; f = f->next)
    n++;
  pthread_mutex_unlock(&L.lock);
  return n;
}

/* Where a connection is in its handshake (transport/auth.h). */
enum {
  CS_HELLO = 0, /* waiting for the initiator's Hello */
  CS_CONFIRM,   /* answered; waiting for its confirmation (with a key) */
  CS_PARKED     /* a child, handshaken; waiting until its spawn expects its pid */
};

/* A connection in its handshake (the listener's turns only). */
typedef struct conn {
  struct conn *next;
  int fd;
  tr_fd_watch_t *w;
  uint64_t wid;
  int64_t deadline;
  uint8_t stage; /* CS_* */
  pid_t pid;     /* a child's, from its Hello */
  tr_msg_t *hello; /* the initiator's Hello, kept for the hand-over (CS_CONFIRM) */
  tr_hs_t hs;
  tr_frame_dec_t dec;
} conn_t;

typedef struct lstate {
  char addr[64]; /* for the logs */
  int lfd;
  tr_fd_watch_t *lw;
  uint64_t lwid;
  conn_t *conns;
  unsigned n;
  int ticking;
  int stalled; /* accepting waits for an L_RETRY (ACCEPT_RETRY_NS) */
} lstate_t;

static int64_t hs_timeout(void) {
  int64_t t = tr__chan_peer_timeout_ns;
  return t > 0 && t < HS_TIMEOUT_MAX_NS ? t : HS_TIMEOUT_MAX_NS;
}

static void conn_close(lstate_t *s, conn_t *c) {
  for (conn_t **pp = &s->conns; *pp; pp = &(*pp)->next)
    if (*pp == c) {
      *pp = c->next;
      break;
    }
  s->n--;
  if (c->w)
    (void)tr__fd_unwatch(c->w);
  if (c->fd >= 0)
    close(c->fd);
  tr__frame_dec_fini(&c->dec);
  tr_msg_free(c->hello);
  free(c);
}

static void refuse(lstate_t *s, conn_t *c, const char *why) {
  uint64_t n = __atomic_add_fetch(&refused, 1, __ATOMIC_RELAXED);
  tr_log(n <= LOUD_REFUSALS ? TR_LOG_WARN : TR_LOG_DEBUG,
         "listener %s: a connection is refused (%s); %llu so far", s->addr, why,
         (unsigned long long)n);
  conn_close(s, c);
}

/* The expectation for pid, taken out of the list (NULL: none).  Under
 * L.lock. */
static expect_t *take_expect_locked(pid_t pid) {
  for (expect_t **pp = &L.expects; *pp; pp = &(*pp)->next)
    if ((*pp)->pid == pid) {
      expect_t *e = *pp;
      *pp = e->next;
      return e;
    }
  return NULL;
}

static expect_t *take_expect(pid_t pid) {
  pthread_mutex_lock(&L.lock);
  expect_t *e = take_expect_locked(pid);
  pthread_mutex_unlock(&L.lock);
  return e;
}

/* 1 when someone expects pid (it may stop doing so at once: only a hint
 * for what to do before taking the expectation). */
static int expected(pid_t pid) {
  int found = 0;
  pthread_mutex_lock(&L.lock);
  for (expect_t *e = L.expects; e && !found; e = e->next)
    found = e->pid == pid;
  pthread_mutex_unlock(&L.lock);
  return found;
}

/* The record of fd in flight to pid's channel, taken out of the list (NULL:
 * none; fd < 0: any of pid's).  Under L.lock. */
static flight_t *take_flight_locked(pid_t pid, int fd) {
  for (flight_t **pp = &L.flights; *pp; pp = &(*pp)->next)
    if ((*pp)->pid == pid && (fd < 0 || (*pp)->fd == fd)) {
      flight_t *f = *pp;
      *pp = f->next;
      return f;
    }
  return NULL;
}

/* Closes the socket of a record taken out of the list (whoever takes the
 * record owns the socket: the channel through tr__listen_adopted, or its
 * release), and frees it. */
static void flight_close(flight_t *f) {
  close(f->fd);
  free(f);
}

/* Hands c's socket to the channel that expects its pid; 0 when done (c is
 * gone), -1 when nobody expects that pid yet (c waits). */
static int try_adopt(lstate_t *s, conn_t *c) {
  if (!expected(c->pid))
    return -1;
  flight_t *f = malloc(sizeof *f);
  tr_msg_t *m = NULL;
  const char *why = !f || tr_msg_new(&m) != 0 ? "out of memory" : NULL;
  if (why) {
    /* The channel then never hears from its child: its handshake timeout
     * kills the process. */
    expect_t *e = take_expect(c->pid);
    if (e) {
      tr_actor_release(e->chan);
      free(e);
    }
    free(f);
    tr_msg_free(m);
    refuse(s, c, why);
    return 0;
  }
  /* Out of the epoll set while the fd surely is still c's: once its record
   * is in the list, the channel's release may close it at any moment. */
  (void)tr__fd_unwatch(c->w);
  c->w = NULL;
  int fd = c->fd;
  pid_t pid = c->pid;
  f->pid = pid;
  f->fd = fd;
  /* The record goes in with the expectation taken, under one lock: the
   * channel's release (which takes both) finds the one or the other. */
  pthread_mutex_lock(&L.lock);
  expect_t *e = take_expect_locked(pid);
  if (e) {
    f->next = L.flights;
    L.flights = f;
  }
  pthread_mutex_unlock(&L.lock);
  if (!e) {
    /* Released between the look and now: its channel has exited. */
    free(f);
    tr_msg_free(m);
    refuse(s, c, "its channel is gone");
    return 0;
  }
  c->fd = -1; /* the record's now (and the channel's once it takes it) */
  m->tag = e->tag;
  m->u64 = (uint64_t)fd;
  if (tr_send(e->chan, m) != 0) {
    /* The channel has exited (m is gone with the send): the socket is
     * closed by whoever removes its record, here or in its release.  f
     * itself may be freed already: only pid and fd are looked at. */
    tr_error_clear();
    pthread_mutex_lock(&L.lock);
    flight_t *mine = take_flight_locked(pid, fd);
    pthread_mutex_unlock(&L.lock);
    if (mine)
      flight_close(mine);
  }
  tr_actor_release(e->chan);
  free(e);
  conn_close(s, c);
  return 0;
}

/* The handshake is over: a child's connection waits for its channel, a
 * node's goes to the node.  1: c is gone. */
static int handed_over(lstate_t *s, conn_t *c, tr_msg_t *hello) {
  if (hello->x_->u.hello.flags & TR_HELLO_CHILD) {
    c->pid = (pid_t)hello->x_->u.hello.pid;
    c->stage = CS_PARKED;
    tr_msg_free(hello);
    /* No one may expect that pid yet (a spawn registers right after its
     * posix_spawn returns): then it waits until its deadline. */
    return try_adopt(s, c) == 0;
  }
  (void)tr__fd_unwatch(c->w);
  c->w = NULL;
  int rc = tr__node_accept(c->fd, hello);
  tr_msg_free(hello);
  if (rc == 0) {
    c->fd = -1; /* the node's now */
    conn_close(s, c);
  } else {
    refuse(s, c, tr_error_message(tr_error_last()));
    tr_error_clear();
  }
  return 1;
}

/* Sends m on c's fresh socket at once: a handshake message is far smaller
 * than any socket buffer, so a short write means a peer that reads
 * nothing.  Returns 0 or -1. */
static int send_now(conn_t *c, const tr_msg_t *m) {
  uint8_t *frame;
  size_t len;
  if (tr__frame_encode(m, 0, &frame, &len) != 0)
    return -1;
  ssize_t k;
  do
    k = send(c->fd, frame, len, MSG_DONTWAIT | MSG_NOSIGNAL);
  while (k < 0 && errno == EINTR);
  free(frame);
  return k == (ssize_t)len ? 0 : -1;
}

/* 1 when pid is a child process of this one, exited or not (waitid fails
 * with ECHILD for any other pid).  WNOWAIT: nothing is reaped, so the
 * channel's pidfd still sees the exit. */
static int our_child(pid_t pid) {
  siginfo_t si;
  memset(&si, 0, sizeof si);
  return pid > 0 && waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0;
}

/* The initiator's Hello: checked and answered.  1: c is gone. */
static int on_hello(lstate_t *s, conn_t *c, tr_msg_t *m) {
  tr_msg_t *mine = NULL;
  int rc = tr__hello_check(m, NULL);
  if (rc == 0 && (m->x_->u.hello.flags & TR_HELLO_CHILD)) {
    /* A child's pid that no spawn expects yet may still be one (it raced
     * its parent's tr__listen_expect): it waits, parked, for its
     * deadline.  Any other pid is no child being started, whatever comes
     * later: refused now, not at the handshake timeout. */
    pid_t pid = (pid_t)m->x_->u.hello.pid;
    if ((int64_t)pid != m->x_->u.hello.pid || (!expected(pid) && !our_child(pid)))
      rc = TR_ERROR(-TR_EPERM, "its pid %lld is no child of this process",
                    (long long)m->x_->u.hello.pid);
  }
  if (rc == 0) {
    if (m->x_->u.hello.flags & TR_HELLO_CHILD) {
      /* A child connecting back: this listener answers for its parent. */
      tr_hello_info_t hi = {.node = tr_self()};
      rc = tr__hello_new(&hi, &mine);
    } else {
      rc = tr__node_hello(&mine); /* -TR_EPERM: no node, children only */
    }
  }
  if (rc == 0) {
    /* Sent also when the two ends disagree on authentication: the answer
     * tells the initiator why it is refused. */
    rc = tr__hs_answer(&c->hs, m, mine);
    if (send_now(c, mine) != 0 && rc == 0)
      rc = TR_ERROR(-TR_EIO, "its answer could not be sent at once");
  }
  tr_msg_free(mine);
  if (rc) {
    tr_msg_free(m);
    refuse(s, c, tr_error_message(tr_error_last()));
    tr_error_clear();
    return 1;
  }
  if (!c->hs.on)
    return handed_over(s, c, m);
  c->hello = m;
  c->stage = CS_CONFIRM;
  return 0;
}

/* The initiator's confirmation: its proof.  1: c is gone. */
static int on_confirm(lstate_t *s, conn_t *c, tr_msg_t *m) {
  int rc = tr__hs_verify(&c->hs, m);
  tr_msg_free(m);
  if (rc) {
    char why[240];
    snprintf(why, sizeof why, "%s: %s", c->hello->x_->u.hello.id.name,
             tr_error_message(tr_error_last()));
    tr_error_clear();
    refuse(s, c, why);
    return 1;
  }
  tr_msg_t *hello = c->hello;
  c->hello = NULL;
  return handed_over(s, c, hello);
}

/* Reads what c sent, one handshake frame at a time and never past its
 * end: what follows the handshake belongs to the channel. */
static void conn_read(lstate_t *s, conn_t *c) {
  uint8_t buf[4096];
  for (;;) {
    size_t want = c->stage == CS_PARKED ? 1 : tr__hs_read_max(&c->dec);
    ssize_t k = recv(c->fd, buf, want < sizeof buf ? want : sizeof buf, MSG_DONTWAIT);
    if (k < 0 && errno == EINTR)
      continue;
    if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
      break;
    if (k <= 0) {
      char why[160];
      if (c->stage == CS_PARKED)
        snprintf(why, sizeof why, "its pid %d is no child being started", (int)c->pid);
      else
        snprintf(why, sizeof why, "%s", k == 0 ? "closed in its handshake" : strerror(errno));
      refuse(s, c, why);
      return;
    }
    if (c->stage == CS_PARKED) {
      refuse(s, c, "bytes before its parent took it");
      return;
    }
    size_t used = 0;
    tr_msg_t *m = NULL;
    int frc = tr__frame_dec_feed(&c->dec, buf, (size_t)k, &used, NULL, &m);
    if (frc != 0) {
      char why[200];
      snprintf(why, sizeof why, "a bad frame: %s", tr_strerror(frc));
      refuse(s, c, why);
      return;
    }
    if (!m)
      continue;
    if ((c->stage == CS_HELLO ? on_hello(s, c, m) : on_confirm(s, c, m)) != 0)
      return;
  }
  if (c->w && tr__fd_rearm(c->w, EPOLLIN) != 0)
    refuse(s, c, "cannot re-arm its watch");
}

static void tick(lstate_t *s) {
  if (s->ticking || !s->conns)
    return;
  tr_msg_t *t;
  if (tr_msg_new(&t) != 0)
    return;
  t->tag = L_TICK;
  if (tr__timer_post(tr_now() + TICK_NS, tr_self(), t, NULL) == 0)
    s->ticking = 1;
  else
    tr_msg_free(t);
}

/* accept4 failed with err for want of fds (EMFILE, ENFILE) or memory
 * (ENOBUFS, ENOMEM): accepting waits for an L_RETRY instead of the
 * listening socket's watch, which the connection left in the backlog would
 * fire at once, and for ever.  Returns 0, or -1 when no timer could be
 * armed (then the watch is re-armed, busy loop and all, rather than the
 * listener going deaf). */
static int stall(lstate_t *s, int err) {
  __atomic_add_fetch(&stalls, 1, __ATOMIC_RELAXED);
  if (!s->stalled) {
    /* Once a shortage, however long it lasts: the retries stay quiet. */
    static uint64_t episodes; /* atomic */
    uint64_t n = __atomic_add_fetch(&episodes, 1, __ATOMIC_RELAXED);
    tr_log(n <= LOUD_REFUSALS ? TR_LOG_WARN : TR_LOG_DEBUG,
           "listener %s: cannot accept connections (%s); trying again every %lld ms while "
           "they wait in the backlog (%llu such shortages so far)",
           s->addr, strerror(err), (long long)(ACCEPT_RETRY_NS / 1000000), (unsigned long long)n);
  }
  tr_msg_t *t = NULL;
  if (tr_msg_new(&t) == 0) {
    t->tag = L_RETRY;
    if (tr__timer_post(tr_now() + ACCEPT_RETRY_NS, tr_self(), t, NULL) == 0) {
      s->stalled = 1;
      return 0;
    }
  }
  tr_msg_free(t);
  s->stalled = 0;
  return -1;
}

static void on_accept(lstate_t *s) {
  int starved = 0;
  for (;;) {
    int fd = accept4(s->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      int err = errno;
      if (err == EINTR || err == ECONNABORTED)
        continue;
      if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM)
        starved = stall(s, err) == 0;
      break;
    }
    conn_t *c = s->n < MAX_PENDING ? calloc(1, sizeof *c) : NULL;
    if (!c) {
      close(fd);
      uint64_t n = __atomic_add_fetch(&refused, 1, __ATOMIC_RELAXED);
      tr_log(n <= LOUD_REFUSALS ? TR_LOG_WARN : TR_LOG_DEBUG,
             "listener %s: %u handshakes at once; a connection is refused", s->addr, s->n);
      continue;
    }
    c->fd = fd;
    c->deadline = tr_now() + hs_timeout();
    tr__frame_dec_init(&c->dec, TR_HELLO_MAX);
    c->next = s->conns;
    s->conns = c;
    s->n++;
    if (tr__fd_watch(fd, tr_self(), L_CONN, &c->w) != 0) {
      refuse(s, c, "cannot watch it");
      continue;
    }
    c->wid = tr__fd_watch_id(c->w);
  }
  tick(s);
  if (starved)
    return; /* L_RETRY comes back here */
  if (s->stalled) {
    s->stalled = 0; /* the backlog is empty, or accepted from */
    tr_log(TR_LOG_DEBUG, "listener %s: accepting again", s->addr);
  }
  if (s->lw && tr__fd_rearm(s->lw, EPOLLIN) != 0)
    tr_log(TR_LOG_ERROR, "listener %s: cannot re-arm its watch", s->addr);
}

static void listener_fn(void *state, tr_msg_t *m) {
  lstate_t *s = state;
  switch (m->tag) {
  case L_INIT:
    if (tr__fd_watch(s->lfd, tr_self(), L_ACCEPT, &s->lw) == 0)
      s->lwid = tr__fd_watch_id(s->lw);
    else
      tr_log(TR_LOG_ERROR, "listener %s: cannot watch its socket", s->addr);
    break;
  case L_ACCEPT:
    if (s->lw && m->cid == s->lwid)
      on_accept(s);
    break;
  case L_RETRY:
    /* The watch stays disarmed while stalled: no L_ACCEPT comes meanwhile,
     * so this is the only way back to accepting. */
    if (s->lw && s->stalled)
      on_accept(s);
    break;
  case L_CONN:
    for (conn_t *c = s->conns; c; c = c->next)
      if (c->w && c->wid == m->cid) {
        conn_read(s, c);
        break;
      }
    break;
  case L_REG:
    for (conn_t *c = s->conns, *next; c; c = next) {
      next = c->next;
      if (c->stage == CS_PARKED)
        (void)try_adopt(s, c);
    }
    break;
  case L_TICK: {
    s->ticking = 0;
    int64_t now = tr_now();
    for (conn_t *c = s->conns, *next; c; c = next) {
      next = c->next;
      if (now >= c->deadline)
        refuse(s, c,
               c->stage == CS_PARKED ? "its pid is no child being started"
                                     : "its handshake did not finish in time");
    }
    tick(s);
    break;
  }
  case L_STOP:
    tr_actor_exit();
    break;
  }
}

static void listener_exit(void *state) {
  lstate_t *s = state;
  while (s->conns)
    conn_close(s, s->conns);
  if (s->lw)
    (void)tr__fd_unwatch(s->lw);
  close(s->lfd);
  free(s);
}

int tr__sock_self_connected(int fd) {
  struct sockaddr_in me, peer;
  socklen_t ml = sizeof me, pl = sizeof peer;
  if (getsockname(fd, (struct sockaddr *)&me, &ml) != 0 ||
      getpeername(fd, (struct sockaddr *)&peer, &pl) != 0 || me.sin_family != AF_INET ||
      peer.sin_family != AF_INET)
    return 0;
  return me.sin_port == peer.sin_port && me.sin_addr.s_addr == peer.sin_addr.s_addr;
}

int tr__addr_parse(const char *text, struct sockaddr_in *sa) {
  memset(sa, 0, sizeof *sa);
  sa->sin_family = AF_INET;
  const char *colon = text ? strrchr(text, ':') : NULL;
  char host[64];
  size_t hlen = colon ? (size_t)(colon - text) : (text ? strlen(text) : 0);
  if (!text || hlen == 0 || hlen >= sizeof host)
    return TR_ERROR(-TR_EINVAL, "'%s' is not an address (host:port, IPv4)", text ? text : "");
  memcpy(host, text, hlen);
  host[hlen] = '\0';
  long port = 0;
  if (colon) {
    char *end;
    errno = 0;
    port = strtol(colon + 1, &end, 10);
    if (errno || end == colon + 1 || *end || port < 0 || port > 65535)
      return TR_ERROR(-TR_EINVAL, "'%s': the port is not a number in 0-65535", text);
  }
  if (strcmp(host, "localhost") == 0)
    snprintf(host, sizeof host, "127.0.0.1");
  if (inet_pton(AF_INET, host, &sa->sin_addr) != 1)
    return TR_ERROR(-TR_EINVAL, "'%s': '%s' is not an IPv4 address", text, host);
  sa->sin_port = htons((uint16_t)port);
  return 0;
}

int tr__listen_acquire(char *addr, size_t len) { return tr__listen_bind(NULL, addr, len); }

int tr__listen_bind(const char *where, char *addr, size_t len) {
  int rc = 0;
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  if (where && (rc = tr__addr_parse(where, &sa)) != 0)
    return rc;
  pthread_mutex_lock(&L.lock);
  if (!L.actor) {
    lstate_t *s = calloc(1, sizeof *s);
    socklen_t sl = sizeof sa;
    int one = 1;
    int l = s ? socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0) : -1;
    char want[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &sa.sin_addr, want, sizeof want);
    if (!s) {
      rc = TR__ENOMEM();
    } else if (l < 0 || setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
               bind(l, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(l, 128) != 0 ||
               getsockname(l, (struct sockaddr *)&sa, &sl) != 0) {
      int err = errno;
      rc = TR_ERROR(err == EADDRINUSE ? -TR_EBUSY : -TR_EIO, "cannot listen on %s:%u: %s", want,
                    (unsigned)ntohs(sa.sin_port), strerror(err));
    } else {
      s->lfd = l;
      snprintf(L.addr, sizeof L.addr, "%s:%u", want, (unsigned)ntohs(sa.sin_port));
      memcpy(s->addr, L.addr, sizeof s->addr);
      tr_spawn_opts_t o = {.name = "listener", .on_exit = listener_exit};
      rc = tr_spawn(listener_fn, s, &o, &L.actor);
      if (rc == 0) {
        tr__actor_mark_node(L.actor);
        l = -1;
        s = NULL;
        (void)tr_send_u64(L.actor, L_INIT, 0);
      }
    }
    if (l >= 0)
      close(l);
    free(s);
  }
  if (rc == 0) {
    L.users++;
    snprintf(addr, len, "%s", L.addr);
  }
  pthread_mutex_unlock(&L.lock);
  return rc;
}

void tr__listen_expect(pid_t pid, tr_actor_t *chan, uint32_t adopt_tag) {
  expect_t *e = malloc(sizeof *e);
  if (!e) {
    tr_log(TR_LOG_ERROR, "listener: out of memory; child %d cannot connect back", (int)pid);
    return; /* its channel's handshake timeout kills it */
  }
  e->pid = pid;
  e->chan = tr_actor_dup(chan);
  e->tag = adopt_tag;
  pthread_mutex_lock(&L.lock);
  e->next = L.expects;
  L.expects = e;
  tr_actor_t *a = L.actor ? tr_actor_dup(L.actor) : NULL;
  pthread_mutex_unlock(&L.lock);
  if (a) {
    (void)tr_send_u64(a, L_REG, 0);
    tr_actor_release(a);
  }
}

int tr__listen_adopted(pid_t pid, int fd) {
  pthread_mutex_lock(&L.lock);
  flight_t *f = pid > 0 && fd >= 0 ? take_flight_locked(pid, fd) : NULL;
  pthread_mutex_unlock(&L.lock);
  int rc = f ? 0 : -1;
  free(f);
  return rc;
}

void tr__listen_release(pid_t pid) {
  /* The expectation and any socket in flight, under one lock: try_adopt
   * turns the one into the other under it, so neither is missed. */
  expect_t *e = NULL;
  flight_t *gone = NULL;
  pthread_mutex_lock(&L.lock);
  if (pid > 0) {
    e = take_expect_locked(pid);
    for (flight_t *f; (f = take_flight_locked(pid, -1)) != NULL;) {
      f->next = gone;
      gone = f;
    }
  }
  pthread_mutex_unlock(&L.lock);
  if (e) {
    tr_actor_release(e->chan);
    free(e);
  }
  while (gone) {
    flight_t *next = gone->next;
    flight_close(gone); /* its channel never took it */
    gone = next;
  }
  tr_actor_t *stop = NULL;
  pthread_mutex_lock(&L.lock);
  if (L.users > 0 && --L.users == 0) {
    stop = L.actor;
    L.actor = NULL;
  }
  pthread_mutex_unlock(&L.lock);
  if (stop) {
    (void)tr_send_u64(stop, L_STOP, 0);
    tr_actor_release(stop);
  }
}

void tr__listen_close_now(void) {
  pthread_mutex_lock(&L.lock);
  tr_actor_t *stop = L.actor;
  L.actor = NULL;
  L.users = 0;
  pthread_mutex_unlock(&L.lock);
  if (stop) {
    (void)tr_send_u64(stop, L_STOP, 0);
    tr_actor_release(stop);
  }
}

int tr__listen_addr(char *addr, size_t len) {
  int rc = -TR_ENOTFOUND;
  pthread_mutex_lock(&L.lock);
  if (L.actor) {
    snprintf(addr, len, "%s", L.addr);
    rc = 0;
  }
  pthread_mutex_unlock(&L.lock);
  return rc;
}
