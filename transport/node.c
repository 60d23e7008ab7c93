/*
 * The node (see node.h) and the discovery API (include/tractor/discovery.h).
 */
#define _GNU_SOURCE
#include "transport/node.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <tractor/discovery.h>
#include <tractor/log.h>
#include <tractor/portal.h>
#include <tractor/task.h>
#include <tractor/time.h>

#include "runtime/actor/actor.h"
#include "runtime/error/error.h"
#include "schema/registry.h"
#include "transport/channel.h"
#include "transport/auth.h"
#include "transport/hello.h"
#include "transport/listen.h"
#include "transport/registrar.h"

#define HS_TIMEOUT_MAX_NS (5 * 1000000000LL)
/* A registrar call's bound (registering, unregistering, finding). */
#define CALL_TIMEOUT_NS (5 * 1000000000LL)
/* Probes of the registry address before giving up on a race for it. */
#define PROBE_TRIES 4
/* tr_wait_for_actor between rounds whose every entry failed without being
 * deleted (its node unreachable, say): from the first to the last pause,
 * doubling, so a wait never turns into a busy loop on the registrar. */
#define WAIT_PAUSE_MIN_NS (10 * 1000000LL)
#define WAIT_PAUSE_MAX_NS (1000 * 1000000LL)
/* The keeper's pauses between dials of a registrar that is gone (the
 * same doubling): a registrar back on its port has this node's actors
 * again within about a second. */
#define KEEP_PAUSE_MIN_NS (10 * 1000000LL)
#define KEEP_PAUSE_MAX_NS (1000 * 1000000LL)
/* The keeper's message: the registrar (proxy) it watched has exited. */
#define K_DOWN 0x6b646f77u

/* A registered actor of this node. */
typedef struct local {
  struct local *next;
  uint8_t uuid[TR_UUID_LEN];
  tr_actor_t *a; /* a reference */
} local_t;

/* A channel to another node, by the address that node listens on. */
typedef struct peer {
  struct peer *next;
  char addr[TR_ADDR_MAX];
  tr_actor_t *chan; /* a reference */
  tr_actor_t *px;   /* the channel's proxy of its Hello's actor (a reference) */
  uint8_t uuid[TR_UUID_LEN]; /* its Hello's actor */
  char name[64];
  uint8_t is_registrar;
  char local[INET_ADDRSTRLEN]; /* this end's address on a dialled channel, or "" */
} peer_t;

static struct {
  pthread_mutex_t lock;
  int on;           /* discovery is on */
  int is_registrar; /* this node keeps the registry */
  char registry[TR_ADDR_MAX];
  char bind[TR_ADDR_MAX];
  char addr[TR_ADDR_MAX]; /* where the listener is, "" while there is none */
  /* The address the registrar knows this host by (this end of the channel
   * to it, or the registry's host for the registrar itself), "" while
   * unknown: what a listener on a wildcard address registers as. */
  char seen[INET_ADDRSTRLEN];
  int listening;          /* the node holds a listener reference */
  tr_actor_t *self;       /* who Hellos name (a reference) */
  tr_actor_t *registrar;  /* the registrar actor, or a proxy of it (a reference) */
  tr_actor_t *reg_local;  /* this node's registrar actor (a reference) */
  tr_actor_t *keeper;     /* registers the locals again with a new registrar (a reference) */
  int root_registering;   /* node_start got as far as registering the root */
  local_t *locals;
  peer_t *peers;
} N = {.lock = PTHREAD_MUTEX_INITIALIZER};

/* The calling thread's last error message, or "". */
static const char *last_msg(void) {
  const char *m = tr_error_message(tr_error_last());
  return m ? m : "";
}

static int64_t hs_timeout(void) {
  int64_t t = tr__chan_peer_timeout_ns;
  return t > 0 && t < HS_TIMEOUT_MAX_NS ? t : HS_TIMEOUT_MAX_NS;
}

/* ---- configuration ------------------------------------------------------------------ */

static const char *cfg_str(const char *field, const char *env) {
  const char *e = getenv(env);
  return e && *e ? e : field;
}

static int is_loopback(const char *addr) {
  struct sockaddr_in sa;
  if (tr__addr_parse(addr, &sa) != 0)
    return 1; /* refused later, with its own error */
  return (ntohl(sa.sin_addr.s_addr) >> 24) == 127;
}

/* ---- the node's identity ------------------------------------------------------------ */

/* Whether addr ("host:port") is on the wildcard host, and where its port
 * begins (the colon). */
static const char *wildcard_port(const char *addr) {
  const char *colon = strrchr(addr, ':');
  return colon && (size_t)(colon - addr) == strlen("0.0.0.0") && strncmp(addr, "0.0.0.0", 7) == 0
             ? colon
             : NULL;
}

/* Where this node is reached, as its Hellos and its actors' entries say:
 * the listener's address, but on a wildcard host (bind_addr 0.0.0.0) the
 * address the registrar knows this host by, which another host can dial
 * (as epmd's names carry the host, not the bind).  Under N.lock. */
static void advertised_locked(char addr[TR_ADDR_MAX]) {
  const char *port = wildcard_port(N.addr);
  if (port && N.seen[0])
    snprintf(addr, TR_ADDR_MAX, "%s%s", N.seen, port);
  else
    snprintf(addr, TR_ADDR_MAX, "%s", N.addr);
}


/* This node's Hello (a probe's when probe), for a channel or a dial. */
static int node_hello(int probe, tr_msg_t **out) {
  pthread_mutex_lock(&N.lock);
  tr_actor_t *who = N.is_registrar && N.reg_local ? N.reg_local : N.self;
  who = who ? tr_actor_dup(who) : (tr_self() ? tr_actor_dup(tr_self()) : NULL);
  char addr[TR_ADDR_MAX];
  advertised_locked(addr);
  uint8_t reg = (uint8_t)N.is_registrar;
  pthread_mutex_unlock(&N.lock);
  if (!who)
    return TR_ERROR(-TR_ENORUNTIME, "this node has no actor to name in its Hello");
  tr_hello_info_t hi = {.node = who, .addr = addr[0] ? addr : NULL, .is_probe = (uint8_t)probe,
                        .is_registrar = reg};
  int rc = tr__hello_new(&hi, out);
  tr_actor_release(who);
  return rc;
}

/* ---- registered local actors --------------------------------------------------------- */

tr_actor_t *tr__node_local(const uint8_t uuid[TR_UUID_LEN]) {
  tr_actor_t *a = NULL;
  pthread_mutex_lock(&N.lock);
  for (local_t *l = N.locals; l; l = l->next)
    if (memcmp(l->uuid, uuid, TR_UUID_LEN) == 0) {
      a = tr_actor_dup(l->a);
      break;
    }
  pthread_mutex_unlock(&N.lock);
  return a;
}

static void local_add(tr_actor_t *a) {
  local_t *l = malloc(sizeof *l);
  if (!l)
    return; /* it is then reachable only by those it talks to */
  tr_actor_uuid(a, l->uuid);
  l->a = tr_actor_dup(a);
  pthread_mutex_lock(&N.lock);
  int on = N.on; /* not after node_reset (as peer_add) */
  if (on) {
    l->next = N.locals;
    N.locals = l;
  }
  pthread_mutex_unlock(&N.lock);
  if (!on) {
    tr_actor_release(l->a);
    free(l);
  }
}

static void local_remove(tr_actor_t *a) {
  local_t *gone = NULL;
  pthread_mutex_lock(&N.lock);
  for (local_t **pp = &N.locals; *pp; pp = &(*pp)->next)
    if ((*pp)->a == a) {
      gone = *pp;
      *pp = gone->next;
      break;
    }
  pthread_mutex_unlock(&N.lock);
  if (gone) {
    tr_actor_release(gone->a);
    free(gone);
  }
}

/* ---- dialling ----------------------------------------------------------------------- */

enum { DIAL_RUNNING = 0, DIAL_DONE = 1, DIAL_ABANDONED = 2 };
/* Why a dial failed to connect (0: it connected; the handshake failed). */
enum { DIAL_REFUSED = 1, DIAL_UNREACHABLE = 2 };

/* A connect and handshake, run on tr_to_thread's pool. */
typedef struct dial {
  char addr[TR_ADDR_MAX];
  tr_msg_t *mine; /* this node's Hello */
  int64_t deadline;
  int fd;         /* the result: a handshaken socket, or -1 */
  int refused;    /* DIAL_REFUSED, DIAL_UNREACHABLE, or 0: connected */
  int rc;         /* tr__hs_initiate's: -TR_EPERM when the authentication failed */
  char local[INET_ADDRSTRLEN]; /* this end's address once connected */
  tr_msg_t *peer; /* the peer's Hello */
  char why[300];  /* the failure */
  uint32_t state; /* DIAL_*: who frees (the last of the dialler and its caller) */
} dial_t;

static void dial_free(dial_t *d) {
  if (d->fd >= 0)
    close(d->fd);
  tr_msg_free(d->peer);
  tr_msg_free(d->mine);
  free(d);
}

static void *dial_run(void *arg) {
  dial_t *d = arg;
  struct sockaddr_in sa;
  int fd = -1;
  d->rc = -TR_EIO;
  if (tr__addr_parse(d->addr, &sa) != 0) {
    snprintf(d->why, sizeof d->why, "'%s' is not an address", d->addr);
    goto out;
  }
  fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    snprintf(d->why, sizeof d->why, "socket: %s", strerror(errno));
    goto out;
  }
  int rc = connect(fd, (struct sockaddr *)&sa, sizeof sa);
  if (rc != 0 && errno == EINPROGRESS) {
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    int w;
    do {
      int64_t left = d->deadline - tr_now();
      w = left <= 0 ? 0 : poll(&p, 1, (int)((left + 999999) / 1000000));
    } while (w < 0 && errno == EINTR);
    int err = 0;
    socklen_t el = sizeof err;
    if (w == 0) {
      d->refused = DIAL_UNREACHABLE;
      snprintf(d->why, sizeof d->why, "connect to %s: timed out", d->addr);
      goto out;
    }
    if (w < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0)
      err = errno;
    errno = err;
    rc = err ? -1 : 0;
  }
  if (rc != 0) {
    d->refused = errno == ECONNREFUSED ? DIAL_REFUSED : DIAL_UNREACHABLE;
    snprintf(d->why, sizeof d->why, "connect to %s: %s", d->addr, strerror(errno));
    goto out;
  }
  if (tr__sock_self_connected(fd)) {
    /* Nothing listens there: it would read its own Hello back.  Closed
     * at once (no FIN exchange with itself, no TIME_WAIT), so that the
     * port is free for the listener this refusal may lead to. */
    struct linger abort_close = {.l_onoff = 1, .l_linger = 0};
    (void)setsockopt(fd, SOL_SOCKET, SO_LINGER, &abort_close, sizeof abort_close);
    d->refused = DIAL_REFUSED;
    snprintf(d->why, sizeof d->why, "connect to %s: %s (the socket reached itself)", d->addr,
             strerror(ECONNREFUSED));
    goto out;
  }
  struct sockaddr_in me;
  socklen_t ml = sizeof me;
  if (getsockname(fd, (struct sockaddr *)&me, &ml) != 0 ||
      !inet_ntop(AF_INET, &me.sin_addr, d->local, sizeof d->local))
    d->local[0] = '\0';
  char why[200];
  d->rc = tr__hs_initiate(fd, d->mine, d->deadline, &d->peer, why, sizeof why);
  if (d->rc) {
    snprintf(d->why, sizeof d->why, "%s: %s", d->addr, why);
    goto out;
  }
  d->fd = fd;
  fd = -1;
out:
  if (fd >= 0)
    close(fd);
  if (__atomic_exchange_n(&d->state, DIAL_DONE, __ATOMIC_ACQ_REL) == DIAL_ABANDONED)
    dial_free(d); /* its caller was cancelled and left it to us */
  return NULL;
}

/* Connects to addr and makes the handshake.  Returns 0 with *fd and *peer
 * (the peer's Hello: tr_msg_free), or -TR_EIO (with *refused DIAL_REFUSED
 * when nothing listens, DIAL_UNREACHABLE when the connect failed
 * otherwise, 0 when the handshake failed), -TR_EPERM (the authentication failed: another secret,
 * or none on one side), -TR_ECANCELED, -TR_ENOMEM; with an error object. */
static int dial(const char *addr, int probe, int *fd, tr_msg_t **peer, int *refused,
                char local[INET_ADDRSTRLEN]) {
  *fd = -1;
  *peer = NULL;
  if (refused)
    *refused = 0;
  dial_t *d = calloc(1, sizeof *d);
  if (!d)
    return TR__ENOMEM();
  d->fd = -1;
  snprintf(d->addr, sizeof d->addr, "%s", addr);
  d->deadline = tr_now() + hs_timeout();
  int rc = node_hello(probe, &d->mine);
  if (rc) {
    free(d);
    return rc;
  }
  int queued;
  rc = tr__to_thread_queued(dial_run, d, NULL, &queued);
  if (rc && !queued) {
    /* Refused before any thread saw d (a task already cancelled, no
     * memory): dial_run will never run to free it, so it goes here. */
    dial_free(d);
    return rc;
  }
  if (rc) {
    /* Cancelled while the thread dials: whoever finishes last frees.  The
     * exchange pairs with dial_run's: the thread's writes to d come before
     * its DONE, and our ABANDONED tells it that nobody reads them. */
    if (__atomic_exchange_n(&d->state, DIAL_ABANDONED, __ATOMIC_ACQ_REL) == DIAL_DONE)
      dial_free(d);
    return rc;
  }
  if (d->fd < 0) {
    if (refused)
      *refused = d->refused;
    rc = TR_ERROR(d->rc == -TR_EPERM ? -TR_EPERM : -TR_EIO, "%s", d->why);
    dial_free(d);
    return rc;
  }
  *fd = d->fd;
  *peer = d->peer;
  if (local)
    memcpy(local, d->local, INET_ADDRSTRLEN);
  d->fd = -1;
  d->peer = NULL;
  dial_free(d);
  return 0;
}

static peer_t *peer_new(const char *addr, tr_actor_t *chan, tr_actor_t *px,
                        const tr_msg_t *hello) {
  peer_t *p = calloc(1, sizeof *p);
  if (!p)
    return NULL;
  snprintf(p->addr, sizeof p->addr, "%s", addr);
  p->chan = tr_actor_dup(chan);
  p->px = px ? tr_actor_dup(px) : NULL;
  const struct tr_envx *x = hello->x_;
  memcpy(p->uuid, x->u.hello.id.uuid, TR_UUID_LEN);
  snprintf(p->name, sizeof p->name, "%s", x->u.hello.id.name);
  p->is_registrar = x->u.hello.is_registrar;
  return p;
}

/* Adds p (NULL: no memory, nothing is kept). */
/* Takes the records of ended channels out of the list into *dead.
 * Under N.lock. */
static void peers_prune_locked(peer_t **dead) {
  for (peer_t **pp = &N.peers; *pp;) {
    peer_t *p = *pp;
    if (tr_actor_exited(p->chan)) {
      *pp = p->next;
      p->next = *dead;
      *dead = p;
    } else {
      pp = &p->next;
    }
  }
}

static void peers_free(peer_t *dead) {
  while (dead) {
    peer_t *next = dead->next;
    tr_actor_release(dead->chan);
    tr_actor_release(dead->px);
    free(dead);
    dead = next;
  }
}

/* Adds p (NULL: nothing), dropping the records of ended channels, so that
 * a node that accepts many short connections keeps none of them.  A node
 * that has been reset meanwhile (its handshake ended after tr_main began
 * to end the node) keeps nothing: nobody would close that channel or drop
 * the record, so it is closed and dropped here (seen: the channel and
 * proxy of an accepted connection left referenced after tr_main, 3 runs of
 * 60 of test_listen under load). */
static void peer_add(peer_t *p) {
  if (!p)
    return;
  peer_t *dead = NULL;
  pthread_mutex_lock(&N.lock);
  int on = N.on;
  peers_prune_locked(&dead);
  if (on) {
    p->next = N.peers;
    N.peers = p;
  }
  pthread_mutex_unlock(&N.lock);
  if (!on) {
    if (!tr_actor_exited(p->chan))
      tr__chan_close(p->chan);
    p->next = dead;
    dead = p;
  }
  peers_free(dead);
}

/* The open channel to addr: a copy of its record with a new channel
 * reference, or 0 when there is none (the ended ones are dropped). */
static int peer_find(const char *addr, peer_t *out) {
  int found = 0;
  peer_t *dead = NULL;
  pthread_mutex_lock(&N.lock);
  peers_prune_locked(&dead);
  for (peer_t *p = N.peers; p && !found; p = p->next)
    if (strcmp(p->addr, addr) == 0) {
      *out = *p;
      out->chan = tr_actor_dup(p->chan);
      out->px = p->px ? tr_actor_dup(p->px) : NULL;
      found = 1;
    }
  pthread_mutex_unlock(&N.lock);
  peers_free(dead);
  return found;
}

/* The channel to the node at addr, dialled when there is none.  *p gets
 * its record (p->chan a reference).  Returns as dial. */
static int node_channel(const char *addr, int probe, peer_t *p, int *refused) {
  if (refused)
    *refused = 0;
  if (peer_find(addr, p))
    return 0;
  int fd;
  tr_msg_t *hello;
  char local[INET_ADDRSTRLEN];
  int rc = dial(addr, probe, &fd, &hello, refused, local);
  if (rc)
    return rc;
  if (probe && !hello->x_->u.hello.is_registrar) {
    rc = TR_ERROR(-TR_EIO, "%s is a tractor node (%s, pid %lld) but not a registrar", addr,
                  hello->x_->u.hello.id.name, (long long)hello->x_->u.hello.pid);
    close(fd);
    tr_msg_free(hello);
    return rc;
  }
  tr_actor_t *chan, *px = NULL;
  if ((rc = tr__chan_peer(fd, &hello->x_->u.hello.id, &chan, &px)) != 0) {
    tr_msg_free(hello);
    return rc;
  }
  peer_t *rec = peer_new(addr, chan, px, hello);
  if (rec)
    memcpy(rec->local, local, sizeof rec->local);
  if (rec) {
    *p = *rec;
    p->chan = tr_actor_dup(chan);
    p->px = px ? tr_actor_dup(px) : NULL;
  } else {
    memset(p, 0, sizeof *p);
    p->chan = tr_actor_dup(chan);
  }
  peer_add(rec);
  tr_actor_release(chan);
  tr_actor_release(px);
  tr_msg_free(hello);
  return 0;
}

int tr__node_hello(tr_msg_t **out) {
  *out = NULL;
  pthread_mutex_lock(&N.lock);
  int on = N.on;
  pthread_mutex_unlock(&N.lock);
  if (!on)
    return TR_ERROR(-TR_EPERM, "a node's Hello, and this process accepts only its children");
  return node_hello(0, out);
}

int tr__node_accept(int fd, const tr_msg_t *hello) {
  const struct tr_envx *x = hello->x_;
  tr_actor_t *chan, *px = NULL;
  if (tr__chan_peer(fd, &x->u.hello.id, &chan, &px) != 0) {
    /* fd was taken (closed) all the same */
    tr_log(TR_LOG_WARN, "node: no channel for %s: %s", x->u.hello.id.name, last_msg());
    tr_error_clear();
    return 0;
  }
  /* Known by its address, so that a dial there finds this channel; one
   * without (a node's start-up probe, which became its channel to the
   * registrar) is kept all the same, under "", which no dial matches, so
   * that this node's end closes it (node_reset): a registrar that stops
   * must not wait for its nodes to hang up, nor they for it. */
  const char *addr = x->u.hello.id.addr ? x->u.hello.id.addr : "";
  peer_add(peer_new(addr, chan, px, hello));
  tr_actor_release(chan);
  tr_actor_release(px);
  return 0;
}

/* ---- the registrar -------------------------------------------------------------------- */

tr_actor_t *tr__node_registrar(void) {
  pthread_mutex_lock(&N.lock);
  tr_actor_t *r = N.registrar ? tr_actor_dup(N.registrar) : NULL;
  pthread_mutex_unlock(&N.lock);
  return r;
}

/* A portal to the registrar: this node's, or a proxy over a channel to
 * the registry address (dialled again when the last one broke). */
static int registrar_portal(tr_portal_t **out) {
  *out = NULL;
  pthread_mutex_lock(&N.lock);
  int on = N.on;
  tr_actor_t *r = N.registrar && !tr_actor_exited(N.registrar) ? tr_actor_dup(N.registrar) : NULL;
  char where[TR_ADDR_MAX];
  snprintf(where, sizeof where, "%s", N.registry);
  pthread_mutex_unlock(&N.lock);
  if (!on)
    return TR_ERROR(-TR_ENOTFOUND, "discovery is off in this process (registry_addr \"off\")");
  if (!r) {
    peer_t p;
    int rc = node_channel(where, 1, &p, NULL);
    if (rc)
      /* Cancelled, or refused for the secret (discovery.h), keep their
       * codes; every other failure means it cannot be reached. */
      return TR_ERROR(rc == -TR_ECANCELED || rc == -TR_EPERM ? rc : -TR_EIO,
                      "the registrar at %s: %s", where, last_msg());
    tr_actor_release(p.chan);
    if (!p.is_registrar || !p.px) {
      tr_actor_release(p.px);
      return TR_ERROR(p.px ? -TR_EIO : -TR_ENOMEM, "the node at %s is not a registrar", where);
    }
    r = p.px;
    pthread_mutex_lock(&N.lock);
    tr_actor_t *old = NULL;
    if (N.on) { /* not after node_reset (as peer_add) */
      old = N.registrar;
      N.registrar = tr_actor_dup(r);
      if (p.local[0])
        memcpy(N.seen, p.local, sizeof N.seen);
    }
    pthread_mutex_unlock(&N.lock);
    tr_actor_release(old);
  }
  int rc = tr_portal_from_actor(r, out);
  tr_actor_release(r);
  return rc;
}

/* Calls registrar function `fn` with one entry (or none), bounded by
 * CALL_TIMEOUT_NS; shielded when `shield` (an exiting actor's last call).
 * *result (may be NULL) gets the answer. */
static int registrar_call(const char *fn, const tr_registry_entry_t *e, int shield,
                          int64_t deadline, tr_buf_t **result) {
  if (result)
    *result = NULL;
  tr_scope_t s;
  int rc = tr_scope_open(&s, deadline >= 0 ? deadline : TR_NO_DEADLINE, shield);
  if (rc)
    return rc;
  tr_portal_t *p = NULL;
  tr_buf_t *args = NULL;
  char q[64];
  snprintf(q, sizeof q, "%s.%s", TR_REGISTRY_NS, fn);
  if ((rc = registrar_portal(&p)) == 0 && (rc = tr__reg_pack(e, e ? 1 : 0, &args)) == 0)
    rc = tr_portal_run(p, q, args, result);
  tr_buf_release(args);
  tr_portal_release(p);
  int crc = tr_scope_close(&s);
  if (rc == -TR_ECANCELED && tr_scope_cancelled_caught(&s) && deadline >= 0)
    rc = TR_ERROR(-TR_ETIMEDOUT, "the registrar did not answer %s in time", fn);
  else if (rc == -TR_ECLOSED) /* its end of the channel is gone: unreachable, as a refused dial */
    rc = TR_ERROR(-TR_EIO, "the registrar is gone (%s): %s", fn, last_msg());
  else if (rc == 0 && crc)
    rc = crc;
  return rc;
}

/* ---- registration ------------------------------------------------------------------------- */

static int ensure_listener(void) {
  pthread_mutex_lock(&N.lock);
  int have = N.listening;
  char where[TR_ADDR_MAX];
  snprintf(where, sizeof where, "%s", N.bind);
  pthread_mutex_unlock(&N.lock);
  if (have)
    return 0;
  char addr[TR_ADDR_MAX];
  int rc = tr__listen_bind(where, addr, sizeof addr);
  if (rc)
    return rc;
  pthread_mutex_lock(&N.lock);
  if (N.listening) {
    pthread_mutex_unlock(&N.lock);
    tr__listen_release(0); /* another task was first */
    return 0;
  }
  N.listening = 1;
  snprintf(N.addr, sizeof N.addr, "%s", addr);
  pthread_mutex_unlock(&N.lock);
  return 0;
}

/* Actor a's entry, at this node's advertised address (addr: the caller's
 * buffer). */
static void entry_of(tr_actor_t *a, tr_registry_entry_t *e, char addr[TR_ADDR_MAX]) {
  memset(e, 0, sizeof *e);
  e->name = (char *)tr_actor_name(a);
  tr_actor_uuid(a, e->uuid);
  pthread_mutex_lock(&N.lock);
  advertised_locked(addr);
  pthread_mutex_unlock(&N.lock);
  e->addr = addr;
  e->pid = (int64_t)getpid();
}

static void keeper_ensure(void);

/* The calling task's actor registers (a served child, or the root).  It
 * stays one of the node's locals even when the registrar cannot be
 * reached: the keeper registers it when one can. */
static int register_self(void) {
  tr_actor_t *self = tr_self();
  int rc = ensure_listener();
  if (rc)
    return rc;
  pthread_mutex_lock(&N.lock);
  if (!N.self)
    N.self = tr_actor_dup(self);
  pthread_mutex_unlock(&N.lock);
  local_add(self);
  /* A listener on a wildcard host registers as the address the registrar
   * knows this host by: the registrar is dialled first if it has not been
   * (a child's first registration).  Failing, registrar_call says why. */
  pthread_mutex_lock(&N.lock);
  int need_seen = wildcard_port(N.addr) && !N.seen[0];
  pthread_mutex_unlock(&N.lock);
  tr_portal_t *rp = NULL;
  if (need_seen && registrar_portal(&rp) == 0)
    tr_portal_release(rp);
  if (need_seen)
    tr_error_clear();
  tr_registry_entry_t e;
  char addr[TR_ADDR_MAX];
  entry_of(self, &e, addr);
  rc = registrar_call("register", &e, 0, tr_now() + CALL_TIMEOUT_NS, NULL);
  keeper_ensure();
  return rc;
}

static void unregister_self(void) {
  tr_actor_t *self = tr_self();
  /* The task's error (a run_in_actor function's failure) stays its own. */
  tr_error_t *kept = tr__error_take();
  local_remove(self);
  tr_registry_entry_t e;
  char addr[TR_ADDR_MAX];
  entry_of(self, &e, addr);
  int rc = registrar_call("unregister", &e, 1, tr_now() + hs_timeout(), NULL);
  if (rc)
    tr_log(TR_LOG_INFO, "node: %s could not unregister (%s); the registrar drops it later",
           tr_actor_name(self), tr_strerror(rc));
  tr__error_put(kept);
}

static int node_is_on(void) {
  pthread_mutex_lock(&N.lock);
  int on = N.on;
  pthread_mutex_unlock(&N.lock);
  return on;
}

static void served_started(void) {
  if (!node_is_on())
    return;
  if (tr__registrar_is(tr_self()))
    return; /* the registry's keeper is not in it */
  int rc = register_self();
  if (rc) {
    /* Cancelled before it could: nothing to say. */
    tr_log(rc == -TR_ECANCELED ? TR_LOG_DEBUG : TR_LOG_WARN, "node: %s could not register: %s",
           tr_actor_name(tr_self()), last_msg());
    tr_error_clear();
  }
}

static void served_exiting(void) {
  if (!node_is_on())
    return;
  if (tr__registrar_is(tr_self())) {
    tr__registrar_close();
    return;
  }
  unregister_self();
}

const tr_rpc_node_ops_t tr__node_rpc_ops = {served_started, served_exiting};

/* ---- the keeper: registering again with a new registrar ---------------------------------- */

/*
 * A registrar that stops (or is restarted, or drops this node after a
 * pause past peer_timeout) forgets this node's actors, and a new one on
 * the same address never learns of them: they could not be found any
 * more though they serve on (epmd and Erlang's global have nodes register
 * again on reconnect).  So a node that is not the registrar keeps a task
 * actor, the keeper, that watches its registrar proxy; when that ends it
 * dials the registry address again, pausing 10 ms, doubling up to 1 s,
 * between failed dials, and when a registrar answers registers every local
 * actor there again.  The registrar lets a node register actors other
 * than the caller only at the address the node's Hello named
 * (tr__node_speaks_for), which a redial's Hello carries.  Started with
 * the node's first registration; cancelled by node_reset.
 */

/* Whether local uuid is still registered here (not exited or unregistered). */
static int still_local(const uint8_t uuid[TR_UUID_LEN]) {
  tr_actor_t *a = tr__node_local(uuid);
  int yes = a && !tr_actor_exited(a);
  tr_actor_release(a);
  return yes;
}

/* Registers every live local actor with the registrar now reached.  One
 * that exits meanwhile unregisters itself, but its word may reach the
 * registrar before this call does: so an actor found gone after its
 * registration is unregistered again, behind it on the same channel. */
static void reregister_locals(void) {
  pthread_mutex_lock(&N.lock);
  size_t n = 0;
  for (local_t *l = N.locals; l; l = l->next)
    n++;
  tr_actor_t **v = n ? malloc(n * sizeof *v) : NULL;
  size_t k = 0;
  for (local_t *l = N.locals; l && v; l = l->next)
    v[k++] = tr_actor_dup(l->a);
  pthread_mutex_unlock(&N.lock);
  if (n && !v)
    tr_log(TR_LOG_WARN, "node: out of memory: %zu actor(s) not registered again", n);
  size_t done = 0;
  for (size_t i = 0; i < k; i++) {
    tr_registry_entry_t e;
    char addr[TR_ADDR_MAX];
    if (!tr_actor_exited(v[i])) {
      entry_of(v[i], &e, addr);
      int rc = registrar_call("register", &e, 0, tr_now() + CALL_TIMEOUT_NS, NULL);
      if (rc == 0 && !still_local(e.uuid))
        (void)registrar_call("unregister", &e, 1, tr_now() + CALL_TIMEOUT_NS, NULL);
      if (rc == 0)
        done++;
      else if (rc != -TR_ECANCELED)
        tr_log(TR_LOG_WARN, "node: %s could not register again: %s", e.name, last_msg());
      tr_error_clear();
    }
    tr_actor_release(v[i]);
  }
  free(v);
  if (done)
    tr_log(TR_LOG_INFO, "node: %zu actor(s) registered again with the registrar", done);
}

static int keeper_main(void *arg) {
  (void)arg;
  tr_actor_t *self = tr_self();
  while (node_is_on()) {
    pthread_mutex_lock(&N.lock);
    tr_actor_t *r = N.registrar ? tr_actor_dup(N.registrar) : NULL;
    pthread_mutex_unlock(&N.lock);
    if (r) {
      /* Until it ends (at once if it has). */
      uint64_t id = tr_actor_id(r);
      int rc = tr__actor_monitor(r, self, K_DOWN);
      tr_actor_release(r);
      if (rc) {
        tr_log(TR_LOG_WARN, "node: out of memory: this node's actors will not be registered "
                            "again with a new registrar");
        return rc;
      }
      for (int down = 0; !down;) {
        tr_msg_t *m;
        if (tr_recv(&m) != 0)
          return 0; /* cancelled: the node stops */
        down = m->tag == K_DOWN && m->u64 == id;
        tr_msg_free(m);
      }
    }
    int64_t pause = KEEP_PAUSE_MIN_NS;
    int said = 0; /* the failure last logged */
    for (;;) {
      tr_portal_t *p = NULL;
      int rc = registrar_portal(&p); /* a new dial: the old proxy has ended */
      tr_portal_release(p);
      if (rc && rc != -TR_ECANCELED && rc != said) {
        /* Once per kind of failure, not per dial.  A registrar with
         * another secret is the operator's to fix (OPERATIONS.md: a
         * refused proof is logged); one that is down is expected for a
         * while. */
        char where[TR_ADDR_MAX];
        pthread_mutex_lock(&N.lock);
        snprintf(where, sizeof where, "%s", N.registry);
        pthread_mutex_unlock(&N.lock);
        tr_log(rc == -TR_EPERM ? TR_LOG_WARN : TR_LOG_INFO,
               "node: the registrar at %s cannot be reached again (%s); this node's actors are "
               "registered there once it can be",
               where, last_msg());
        said = rc;
      }
      tr_error_clear();
      if (rc == 0)
        break;
      if (rc == -TR_ECANCELED || !node_is_on() || tr_sleep(pause) != 0)
        return 0;
      pause = pause * 2 > KEEP_PAUSE_MAX_NS ? KEEP_PAUSE_MAX_NS : pause * 2;
    }
    reregister_locals();
  }
  return 0;
}

/* Starts the keeper unless it runs, or this node is the registrar. */
static void keeper_ensure(void) {
  pthread_mutex_lock(&N.lock);
  int need = N.on && !N.is_registrar && !N.keeper;
  pthread_mutex_unlock(&N.lock);
  if (!need)
    return;
  tr_spawn_opts_t o = {.name = "node-keeper"};
  tr_actor_t *k;
  if (tr_spawn_task_actor(keeper_main, NULL, &o, &k) != 0) {
    tr_log(TR_LOG_WARN, "node: no keeper (%s): a new registrar will not learn of this node's "
                        "actors",
           last_msg());
    tr_error_clear();
    return;
  }
  tr__actor_mark_node(k);
  pthread_mutex_lock(&N.lock);
  int keep = N.on && !N.keeper;
  if (keep)
    N.keeper = tr_actor_dup(k);
  pthread_mutex_unlock(&N.lock);
  if (!keep) /* another task was first, or the node stopped meanwhile */
    (void)tr_actor_cancel_soon(k);
  tr_actor_release(k);
}

int tr__node_speaks_for(const tr_actor_t *caller, const char *addr) {
  const tr_actor_t *chan = tr__proxy_channel(caller);
  if (!chan || !addr || !*addr)
    return 0;
  int yes = 0;
  pthread_mutex_lock(&N.lock);
  for (peer_t *p = N.peers; p && !yes; p = p->next)
    yes = p->chan == chan && strcmp(p->addr, addr) == 0;
  pthread_mutex_unlock(&N.lock);
  return yes;
}

/* ---- start and stop ------------------------------------------------------------------------ */

/* This node becomes the registrar: it listens on the registry address and
 * starts the registrar actor.  -TR_EBUSY when the address is taken. */
static int become_registrar(void) {
  char addr[TR_ADDR_MAX];
  int rc = tr__listen_bind(N.registry, addr, sizeof addr);
  if (rc)
    return rc;
  tr_actor_t *r;
  if ((rc = tr__registrar_spawn(&r)) != 0) {
    tr__listen_release(0);
    return rc;
  }
  pthread_mutex_lock(&N.lock);
  N.listening = 1;
  N.is_registrar = 1;
  snprintf(N.addr, sizeof N.addr, "%s", addr);
  /* Its own actors are where nodes reach it (unless that is a wildcard
   * too: then nothing better is known). */
  const char *colon = strrchr(N.registry, ':');
  size_t hl = colon ? (size_t)(colon - N.registry) : 0;
  if (!wildcard_port(N.registry) && hl > 0 && hl < sizeof N.seen) {
    memcpy(N.seen, N.registry, hl);
    N.seen[hl] = '\0';
  }
  N.reg_local = r;
  N.registrar = tr_actor_dup(r);
  pthread_mutex_unlock(&N.lock);
  local_add(r); /* other nodes call it by the uuid its Hello names */
  tr_log(TR_LOG_INFO, "node: this process is the registrar, at %s", addr);
  return 0;
}

static void node_reset(void);

static int node_start(const tr_config_t *cfg) {
  node_reset();
  const char *reg = cfg_str(cfg ? cfg->registry_addr : NULL, "TR_REGISTRY_ADDR");
  if (!reg || !*reg)
    reg = TR_REGISTRY_ADDR_DEFAULT;
  if (strcmp(reg, "off") == 0)
    return 0;
  const char *bind = cfg_str(cfg ? cfg->bind_addr : NULL, "TR_BIND_ADDR");
  if (!bind || !*bind)
    bind = "127.0.0.1";
  struct sockaddr_in sa;
  int rc;
  /* Each says which setting it is about. */
  if ((rc = tr__addr_parse(reg, &sa)) != 0)
    return TR_ERROR(rc, "registry_addr (TR_REGISTRY_ADDR) %s", last_msg());
  /* No port, or 0, would make every program a registrar of its own on a
   * port of the kernel's choosing: nobody would find anybody. */
  if (sa.sin_port == 0)
    return TR_ERROR(-TR_EINVAL,
                    "registry_addr (TR_REGISTRY_ADDR) '%s' has no port: give host:port, the "
                    "same for every program that should find the others",
                    reg);
  if ((rc = tr__addr_parse(bind, &sa)) != 0)
    return TR_ERROR(rc, "bind_addr (TR_BIND_ADDR) %s", last_msg());
  if (strlen(reg) >= TR_ADDR_MAX || strlen(bind) >= TR_ADDR_MAX)
    return TR_ERROR(-TR_EINVAL, "an address longer than %d bytes", TR_ADDR_MAX - 1);
  const char *insecure = getenv("TR_ALLOW_INSECURE");
  int allow = tr__auth_on() || (cfg && cfg->allow_insecure) ||
              (insecure && strcmp(insecure, "1") == 0);
  if (!allow && (!is_loopback(bind) || !is_loopback(reg)))
    return TR_ERROR(-TR_EPERM,
                    "refusing to listen on or register at a non-loopback address (bind %s, "
                    "registry %s) without authentication: set allow_insecure "
                    "(TR_ALLOW_INSECURE=1) to accept that anyone who reaches the port may call",
                    bind, reg);
  pthread_mutex_lock(&N.lock);
  N.on = 1;
  snprintf(N.registry, sizeof N.registry, "%s", reg);
  snprintf(N.bind, sizeof N.bind, "%s", bind);
  N.self = tr_actor_dup(tr_self());
  pthread_mutex_unlock(&N.lock);
  for (int i = 0;; i++) {
    peer_t p;
    int refused;
    rc = node_channel(reg, 1, &p, &refused);
    if (rc == 0) {
      tr_actor_release(p.chan);
      if (!p.px)
        return TR__ENOMEM();
      pthread_mutex_lock(&N.lock);
      N.registrar = p.px;
      memcpy(N.seen, p.local, sizeof N.seen);
      pthread_mutex_unlock(&N.lock);
      break;
    }
    if (rc == -TR_ECANCELED)
      return rc;
    if (rc == -TR_EPERM)
      return TR_ERROR(-TR_EPERM, "registry_addr %s: the registrar and this node do not share a "
                                 "secret (%s)",
                      reg, last_msg());
    if (refused == DIAL_UNREACHABLE)
      return TR_ERROR(-TR_EIO, "registry_addr %s cannot be reached (%s)", reg, last_msg());
    if (refused != DIAL_REFUSED)
      return TR_ERROR(-TR_EIO, "registry_addr %s: something that is not a tractor registrar "
                               "listens there (%s)",
                      reg, last_msg());
    tr_error_clear();
    rc = become_registrar();
    if (rc == 0)
      break;
    if (rc != -TR_EBUSY || i + 1 == PROBE_TRIES)
      return rc; /* -TR_EBUSY: another root won the race: probe it */
    tr_error_clear();
  }
  pthread_mutex_lock(&N.lock);
  N.root_registering = 1;
  pthread_mutex_unlock(&N.lock);
  return register_self();
}

/* Channels, proxies and the listener go (every actor of the node has
 * exited or is exiting); the state is cleared for a next run. */
static void node_reset(void) {
  pthread_mutex_lock(&N.lock);
  peer_t *peers = N.peers;
  local_t *locals = N.locals;
  tr_actor_t *self = N.self, *reg = N.registrar, *local = N.reg_local, *keeper = N.keeper;
  int listening = N.listening;
  N.peers = NULL;
  N.locals = NULL;
  N.self = N.registrar = N.reg_local = N.keeper = NULL;
  N.listening = N.on = N.is_registrar = N.root_registering = 0;
  N.addr[0] = N.registry[0] = N.bind[0] = N.seen[0] = '\0';
  pthread_mutex_unlock(&N.lock);
  while (peers) {
    peer_t *next = peers->next;
    if (!tr_actor_exited(peers->chan)) /* an ended one needs no close (nor a dead letter) */
      tr__chan_close(peers->chan);
    tr_actor_release(peers->chan);
    tr_actor_release(peers->px);
    free(peers);
    peers = next;
  }
  while (locals) {
    local_t *next = locals->next;
    tr_actor_release(locals->a);
    free(locals);
    locals = next;
  }
  if (local)
    (void)tr_actor_cancel_soon(local);
  tr_actor_release(local);
  if (keeper)
    (void)tr_actor_cancel_soon(keeper);
  tr_actor_release(keeper);
  tr_actor_release(reg);
  tr_actor_release(self);
  if (listening)
    tr__listen_release(0);
}

static void node_stop(void) {
  pthread_mutex_lock(&N.lock);
  int registering = N.on && N.root_registering;
  pthread_mutex_unlock(&N.lock);
  /* A start that failed before the root's registration (the registrar
   * refused this node's secret, or could not be reached) has nothing to
   * undo: unregistering would dial that registrar once more, a second
   * refused handshake or a second timeout before tr_main returns.  A
   * registration that was tried is undone even when it failed: it may
   * have landed after its call timed out. */
  if (registering)
    unregister_self();
  node_reset();
}

const tr_main_node_ops_t tr__node_main_ops = {node_start, node_stop};

void tr__node_child_setup(const char *registry_addr, const char *bind_addr) {
  pthread_mutex_lock(&N.lock);
  N.on = registry_addr && *registry_addr && strlen(registry_addr) < TR_ADDR_MAX;
  if (N.on) {
    snprintf(N.registry, sizeof N.registry, "%s", registry_addr);
    snprintf(N.bind, sizeof N.bind, "%s",
             bind_addr && *bind_addr && strlen(bind_addr) < TR_ADDR_MAX ? bind_addr : "127.0.0.1");
  }
  pthread_mutex_unlock(&N.lock);
}

void tr__node_child_stop(void) { node_reset(); }

void tr__node_spawn_info(char *registry_addr, size_t rlen, char *bind_addr, size_t blen) {
  pthread_mutex_lock(&N.lock);
  snprintf(registry_addr, rlen, "%s", N.on ? N.registry : "");
  /* The child listens on this node's host, on a port of its own. */
  char host[TR_ADDR_MAX];
  snprintf(host, sizeof host, "%s", N.on ? N.bind : "");
  char *colon = strrchr(host, ':');
  if (colon)
    *colon = '\0';
  snprintf(bind_addr, blen, "%s", host);
  pthread_mutex_unlock(&N.lock);
}

/* ---- the discovery API -------------------------------------------------------------------- */

static int api_check(const char *fn) {
  if (!tr_load_acquire(&tr__rt_running))
    return TR_ERROR(-TR_ENORUNTIME, "%s: no runtime is running", fn);
  if (!tr__task_current())
    return TR_ERROR(-TR_EPERM, "%s must be called from a task", fn);
  return 0;
}

/* A portal to the actor of entry e: local, or through its node's channel.
 * -TR_EIO when its node cannot be reached (*refused as dial's). */
static int portal_to(const tr_registry_entry_t *e, tr_portal_t **out, int *refused) {
  *refused = 0;
  tr_actor_t *a = tr__node_local(e->uuid);
  if (a) {
    int rc = tr_portal_from_actor(a, out);
    tr_actor_release(a);
    return rc;
  }
  peer_t p;
  int rc = node_channel(e->addr, 0, &p, refused);
  if (rc)
    return rc;
  if (p.px && memcmp(p.uuid, e->uuid, TR_UUID_LEN) == 0) {
    a = p.px; /* the node's own actor: the channel's proxy of it */
    rc = 0;
  } else {
    tr_actor_release(p.px);
    rc = tr__chan_proxy(p.chan, e->uuid, e->name, &a);
  }
  tr_actor_release(p.chan);
  if (rc)
    return rc;
  rc = tr_portal_from_actor(a, out);
  tr_actor_release(a);
  return rc;
}

/* The entries of registry payload b as this node can dial them.  An entry
 * on the wildcard host is the registrar's own node's (every other node
 * registers the address the registrar sees it from, OPERATIONS.md), so it
 * is reached at the host this node reaches the registrar at, unless that
 * is a wildcard too (then it is this host, and 0.0.0.0 dials it).  An
 * entry that cannot be rewritten (no memory) stays as it was. */
static int reg_unpack_here(const tr_buf_t *b, tr_registry_entry_t **v, size_t *n) {
  int rc = tr__reg_unpack(b, 1, v, n); /* the registrar names every entry's uuid */
  if (rc)
    return rc;
  char host[TR_ADDR_MAX];
  pthread_mutex_lock(&N.lock);
  const char *colon = strrchr(N.registry, ':');
  size_t hl = colon ? (size_t)(colon - N.registry) : 0;
  int known = hl > 0 && hl < sizeof host && !wildcard_port(N.registry);
  if (known) {
    memcpy(host, N.registry, hl);
    host[hl] = '\0';
  }
  pthread_mutex_unlock(&N.lock);
  for (size_t i = 0; known && i < *n; i++) {
    const char *port = wildcard_port((*v)[i].addr);
    size_t len = port ? hl + strlen(port) + 1 : 0;
    char *a = port ? malloc(len) : NULL;
    if (!a)
      continue;
    snprintf(a, len, "%s%s", host, port);
    free((*v)[i].addr);
    (*v)[i].addr = a;
  }
  return 0;
}

/* Picks the first entry of `found` that answers; deletes the ones whose
 * node refuses connections.  Each dial gets a fair share of what is left
 * until `deadline` (< 0: none), so that a node that accepts but never
 * answers (stopped, say) does not use up the lookup: the next entry is
 * tried (discovery.h).  `last` (len bytes) says where the last entry tried
 * was and how it failed, for the caller's error at its deadline. */
static int pick(const char *name, tr_buf_t *found, int64_t deadline, char *last, size_t len,
                tr_portal_t **portal) {
  tr_registry_entry_t *v;
  size_t n;
  last[0] = '\0';
  int rc = reg_unpack_here(found, &v, &n);
  if (rc)
    return rc;
  rc = TR_ERROR(-TR_ENOTFOUND, "no actor named '%s' is registered", name);
  for (size_t i = 0; i < n; i++) {
    int refused = 0, prc;
    int64_t share = TR_NO_DEADLINE, t0 = tr_now();
    if (deadline >= 0)
      share = t0 + (deadline - t0) / (int64_t)(n - i); /* the last one: all that is left */
    tr_scope_t es;
    if ((prc = tr_scope_open(&es, share, 0)) == 0) {
      prc = portal_to(&v[i], portal, &refused);
      (void)tr_scope_close(&es);
      if (prc == -TR_ECANCELED && tr_scope_cancelled_caught(&es))
        prc = TR_ERROR(-TR_ETIMEDOUT, "its node did not answer within %lld ms",
                       (long long)((tr_now() - t0) / 1000000));
    }
    if (prc == 0) {
      tr_error_clear();
      rc = 0;
      break;
    }
    if (prc == -TR_ECANCELED) {
      /* The caller's cancel, or the lookup's deadline (the caller tells). */
      snprintf(last, len, "at %s: it had not answered after %lld ms", v[i].addr,
               (long long)((tr_now() - t0) / 1000000));
      rc = prc;
      break;
    }
    char why[300];
    snprintf(why, sizeof why, "%s", last_msg()); /* e.g. another secret: -TR_EPERM's */
    tr_log(TR_LOG_INFO, "node: '%s' at %s does not answer (%s)%s", name, v[i].addr, why,
           refused == DIAL_REFUSED ? "; the registrar is asked to drop its entry" : "");
    if (refused == DIAL_REFUSED)
      (void)registrar_call("unregister", &v[i], 0, tr_now() + CALL_TIMEOUT_NS, NULL);
    snprintf(last, len, "at %s: %s", v[i].addr, why);
    rc = TR_ERROR(-TR_ENOTFOUND, "no actor named '%s' answers (the last tried, %s)", name, last);
  }
  tr_registry_entries_free(v, n);
  return rc;
}

/* tr_find_actor (wait 0) and tr_wait_for_actor (wait 1). */
static int lookup(const char *fn, const char *name, int wait, int64_t deadline,
                  tr_portal_t **portal) {
  if (portal)
    *portal = NULL;
  int rc = api_check(fn);
  if (rc)
    return rc;
  if (!name || !portal)
    return TR_ERROR(-TR_EINVAL, "%s: a required argument is NULL", fn);
  tr_registry_entry_t q = {.name = (char *)name};
  int64_t pause = WAIT_PAUSE_MIN_NS;
  for (;;) {
    tr_buf_t *found;
    if ((rc = registrar_call(wait ? "wait" : "find", &q, 0, deadline, &found)) != 0) {
      if (rc == -TR_ETIMEDOUT && wait) /* the registrar's wait is for a registration */
        rc = TR_ERROR(-TR_ETIMEDOUT,
                      "%s: no actor named '%s' was registered before the deadline (or the "
                      "registrar did not answer)",
                      fn, name);
      return rc;
    }
    /* Dials are bounded by the deadline too (each by the handshake's
     * timeout besides). */
    tr_scope_t s;
    char last[400];
    if ((rc = tr_scope_open(&s, deadline >= 0 ? deadline : TR_NO_DEADLINE, 0)) == 0) {
      rc = pick(name, found, deadline, last, sizeof last, portal);
      int crc = tr_scope_close(&s);
      if (rc == -TR_ECANCELED && tr_scope_cancelled_caught(&s))
        rc = TR_ERROR(-TR_ETIMEDOUT,
                      "%s: no actor named '%s' answered before the deadline%s%s%s", fn, name,
                      last[0] ? " (the last tried, " : "", last, last[0] ? ")" : "");
      else if (rc == 0 && crc) {
        tr_portal_release(*portal);
        *portal = NULL;
        rc = crc;
      }
    }
    tr_buf_release(found);
    if (rc != -TR_ENOTFOUND || !wait)
      return rc;
    /* Every entry failed (the refused ones are deleted now): wait for a
     * live one, after a pause, as an entry that fails without being
     * deleted (an unreachable node) would be found again at once.  At the
     * deadline, the last failure says why. */
    tr_error_t *why = tr__error_take();
    int64_t until = tr_now() + pause;
    if (deadline >= 0 && until > deadline)
      until = deadline;
    pause = pause * 2 > WAIT_PAUSE_MAX_NS ? WAIT_PAUSE_MAX_NS : pause * 2;
    if ((rc = tr_sleep_until(until)) != 0 || (deadline >= 0 && tr_now() >= deadline)) {
      if (rc == 0)
        rc = TR_ERROR(-TR_ETIMEDOUT, "%s: %s, until the deadline", fn, tr_error_message(why));
      tr__error_free(why);
      return rc;
    }
    tr__error_free(why);
  }
}

int tr_find_actor(const char *name, tr_portal_t **portal) {
  return lookup(__func__, name, 0, tr_now() + CALL_TIMEOUT_NS, portal);
}

int tr_wait_for_actor(const char *name, int64_t deadline, tr_portal_t **portal) {
  return lookup(__func__, name, 1, deadline, portal);
}

int tr_registry_list(tr_registry_entry_t **entries, size_t *n) {
  if (entries)
    *entries = NULL;
  if (n)
    *n = 0;
  int rc = api_check(__func__);
  if (rc)
    return rc;
  if (!entries || !n)
    return TR__EINVAL_NULL();
  tr_buf_t *all;
  if ((rc = registrar_call("list", NULL, 0, tr_now() + CALL_TIMEOUT_NS, &all)) != 0)
    return rc;
  rc = reg_unpack_here(all, entries, n);
  tr_buf_release(all);
  return rc;
}

int tr_node_addr(char *addr, size_t len, int *is_registrar) {
  if (!tr_load_acquire(&tr__rt_running))
    return TR_ERROR(-TR_ENORUNTIME, "%s: no runtime is running", __func__);
  pthread_mutex_lock(&N.lock);
  int rc = N.addr[0] ? 0 : -TR_ENOTFOUND;
  size_t need = strlen(N.addr) + 1;
  if (rc == 0) {
    if (addr && len)
      snprintf(addr, len, "%s", N.addr);
    if (is_registrar)
      *is_registrar = N.is_registrar;
  }
  pthread_mutex_unlock(&N.lock);
  if (rc)
    return TR_ERROR(rc, "this node has no listener (discovery is off, or nothing registered)");
  if (addr && len < need)
    return TR_ERROR(-TR_EMSGSIZE, "%s: the address needs %zu bytes, %zu given (it was cut)",
                    __func__, need, len);
  return 0;
}

int tr__node_refuses(const char *addr) {
  int fd, refused = 0;
  tr_msg_t *peer;
  tr_error_t *kept = tr__error_take(); /* the caller's error stays its own */
  int rc = addr ? dial(addr, 0, &fd, &peer, &refused, NULL) : -TR_EINVAL;
  if (rc == 0) {
    close(fd);
    tr_msg_free(peer);
  }
  tr__error_put(kept);
  return rc != 0 && refused == DIAL_REFUSED;
}

/* ---- for the benchmark and tests --------------------------------------------------------- */

int tr__node_handshake(const char *addr) {
  if (!addr)
    return TR__EINVAL_NULL();
  int fd;
  tr_msg_t *peer;
  int rc = dial(addr, 0, &fd, &peer, NULL, NULL);
  if (rc)
    return rc;
  close(fd);
  tr_msg_free(peer);
  return 0;
}
