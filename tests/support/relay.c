/*
 * The codec relay (see relay.h): two behaviour actors per (caller,
 * callee), each message through the codec between them.
 */
#include "relay.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <tractor/log.h>

#include "runtime/actor/actor.h"
#include "runtime/rpc/rpc.h" /* tr__rpc_route, tr__rpc_post_peer_lost: what a channel does */
#include "schema/envelope.h"

/* Application tags between the ends (never on a protocol message). */
enum {
  DOWN = 0x7e1a0001,   /* a monitor: the caller or the callee exited */
  STOP,                /* A -> B: pass on what you have, then go */
  STOP_LAST,           /* B -> B: after whatever B's own sends bounced back */
  STOP_ACK,            /* B -> A: B is gone; A goes too */
  BREAK,               /* -> A: the channel broke (tr_test_relay_break) */
  BREAK_B,             /* A -> B: the same, on B's side */
  FROM_A = 0x7e1a00a0, /* a protocol message on the wire, from A */
  FROM_B               /* ... from B */
};

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
} pair_t;

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
    rc = tr__env_decode(buf, len, &out);
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

static void pair_end_exit(void *state) {
  pair_t *p = state;
  if (__atomic_sub_fetch(&p->ends, 1, __ATOMIC_ACQ_REL) != 0)
    return;
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
      tr__rpc_post_peer_lost(p->caller, p->callee_uuid, p->break_rc, p->break_cause);
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
      tr__rpc_post_peer_lost(p->callee, p->caller_uuid, p->break_rc, p->break_cause);
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

static tr_actor_t *route(tr_actor_t *self, tr_actor_t *target) {
  if (tr_actor_exited(target))
    return NULL; /* the direct way answers at once */
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
      /* Nothing reaches either end before this returns (their messages
       * come from the caller through A, or the monitors set below), so the
       * fields are written before any turn reads them. */
      tr_spawn_opts_t oa = {.name = "relay-a", .on_exit = pair_end_exit};
      tr_spawn_opts_t ob = {.name = "relay-b", .on_exit = pair_end_exit};
      if (tr_spawn(end_a, p, &oa, &p->a) != 0) {
        tr_actor_release(p->caller);
        tr_actor_release(p->callee);
        free(p);
      } else if (tr_spawn(end_b, p, &ob, &p->b) != 0) {
        p->ends = 1; /* A alone: it goes at once */
        (void)tr_send_u64(p->a, STOP_ACK, 0);
      } else {
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
    (void)tr_send_u64(p->a, BREAK, 0); /* the send orders the fields before A reads them */
    n++;
  }
  pthread_mutex_unlock(&table_lock);
  return n;
}

void tr_test_relay_install(void) { tr__rpc_route = route; }

void tr_test_relay_uninstall(void) { tr__rpc_route = NULL; }

__attribute__((constructor)) static void relay_from_env(void) {
  const char *t = getenv("TR_TEST_TRANSPORT");
  if (t && strcmp(t, "relay") == 0)
    tr_test_relay_install();
}
