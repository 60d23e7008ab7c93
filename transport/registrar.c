/*
 * The registrar (see registrar.h).
 */
#include "transport/registrar.h"

#include <stdlib.h>
#include <string.h>

#include <tractor/portal.h>
#include <tractor/task.h>

#include "runtime/actor/actor.h"
#include "runtime/error/error.h"
#include "runtime/rpc/rpc.h"
#include "runtime/task/task.h"
#include "schema/registry.h"
#include "schema/tractor.pb-c.h"
#include "transport/node.h"

typedef struct reg {
  tr_registry_entry_t e; /* owned strings */
  tr_actor_t *holder;    /* the actor that registered it (a reference) */
} reg_t;

/* A task waiting for a name (on its own stack). */
typedef struct waiter {
  struct waiter *next;
  const char *name;
  tr_chan_t *ch;
} waiter_t;

/* The registrar actor's state: oldest entry first. */
static struct {
  reg_t *v;
  size_t n, cap;
  waiter_t *waiters;
  int closed;
} R;

int tr__registrar_spawn(tr_actor_t **out) {
  memset(&R, 0, sizeof R); /* the last run's registrar has closed */
  char ns[] = TR_REGISTRY_NS;
  char *const enable[] = {ns};
  int rc = tr__rpc_spawn_served("registrar", enable, 1, NULL, NULL, NULL, 0, NULL,
                                tr__registrar_close, out);
  if (rc == 0)
    tr__actor_mark_node(*out);
  return rc;
}

int tr__registrar_is(const tr_actor_t *a) {
  const tr_tasks_t *ts = a ? a->tasks : NULL;
  if (!ts || !ts->rpc)
    return 0;
  for (size_t i = 0; i < ts->rpc->n_enable; i++)
    if (strcmp(ts->rpc->enable[i], TR_REGISTRY_NS) == 0)
      return 1;
  return 0;
}

static void reg_drop(size_t i) {
  free(R.v[i].e.name);
  free(R.v[i].e.addr);
  tr_actor_release(R.v[i].holder);
  memmove(&R.v[i], &R.v[i + 1], (R.n - i - 1) * sizeof R.v[0]);
  R.n--;
}

void tr__registrar_close(void) {
  R.closed = 1;
  while (R.n)
    reg_drop(R.n - 1);
  free(R.v);
  R.v = NULL;
  R.cap = 0;
}

/* Drops the entries whose actor has gone without unregistering. */
static void purge(void) {
  for (size_t i = 0; i < R.n;)
    if (tr_actor_exited(R.v[i].holder))
      reg_drop(i);
    else
      i++;
}

/* The entries named `name` (NULL: all), newest first, as a payload. */
static int answer(const char *name, tr_buf_t **result, size_t *found) {
  purge();
  tr_registry_entry_t *v = R.n ? malloc(R.n * sizeof *v) : NULL;
  if (R.n && !v)
    return TR__ENOMEM();
  size_t k = 0;
  for (size_t i = R.n; i-- > 0;)
    if (!name || strcmp(R.v[i].e.name, name) == 0)
      v[k++] = R.v[i].e;
  int rc = tr__reg_pack(v, k, result);
  free(v);
  if (found)
    *found = k;
  return rc;
}

/* The one entry a call names, decoded; its uuid is required when the call
 * acts on it (register, unregister), not for a lookup by name. */
static int one_entry(const tr_buf_t *args, const char *what, int need_uuid,
                     tr_registry_entry_t **e) {
  size_t n;
  int rc = tr__reg_unpack(args, need_uuid, e, &n);
  if (rc == 0 && n != 1) {
    tr_registry_entries_free(*e, n);
    *e = NULL;
    rc = TR_ERROR(-TR_EINVAL, "registrar: %s takes one entry, got %zu", what, n);
  }
  return rc;
}

/* Whether entry e would replace a live entry of its uuid at another address. */
static int displaces(const tr_registry_entry_t *e) {
  purge();
  for (size_t i = 0; i < R.n; i++)
    if (memcmp(R.v[i].e.uuid, e->uuid, TR_UUID_LEN) == 0 && strcmp(R.v[i].e.addr, e->addr) != 0)
      return 1;
  return 0;
}

static int reg_register(tr_ctx_t *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)result;
  tr_registry_entry_t *e;
  int rc = one_entry(args, "register", 1, &e);
  if (rc)
    return rc;
  /* An actor registers itself; a node's keeper registers its node's actors
   * again (node.c), but only at the address its node's Hello named, and
   * never over a live entry of that uuid elsewhere. */
  int for_self = memcmp(e->uuid, ctx->peer_uuid, TR_UUID_LEN) == 0;
  if (!for_self && !tr__node_speaks_for(ctx->peer, e->addr))
    rc = TR_ERROR(-TR_EPERM,
                  "registrar: %s may register only itself, or actors of its node at the address "
                  "its node listens on, not %s at %s",
                  tr_ctx_peer(ctx), e->name, e->addr);
  else if (!for_self && displaces(e))
    rc = TR_ERROR(-TR_EPERM, "registrar: %s is registered at another address", e->name);
  else if (!e->name[0])
    rc = TR_ERROR(-TR_EINVAL, "registrar: an entry without a name");
  else if (R.closed)
    rc = TR_ERROR(-TR_ECLOSED, "registrar: closing");
  if (rc) {
    tr_registry_entries_free(e, 1);
    return rc;
  }
  purge();
  for (size_t i = 0; i < R.n; i++)
    if (memcmp(R.v[i].e.uuid, e->uuid, TR_UUID_LEN) == 0) {
      reg_drop(i); /* registered again: the newest address holds */
      break;
    }
  if (R.n == R.cap) {
    size_t cap = R.cap ? 2 * R.cap : 16;
    reg_t *v = realloc(R.v, cap * sizeof *v);
    if (!v) {
      tr_registry_entries_free(e, 1);
      return TR__ENOMEM();
    }
    R.v = v;
    R.cap = cap;
  }
  R.v[R.n].e = *e; /* takes the strings */
  R.v[R.n].holder = tr_actor_dup(ctx->peer);
  R.n++;
  free(e);
  for (waiter_t *w = R.waiters; w; w = w->next)
    if (strcmp(w->name, R.v[R.n - 1].e.name) == 0)
      (void)tr_chan_send_nowait(w->ch, NULL); /* full: it is woken already */
  return 0;
}

static int reg_unregister(tr_ctx_t *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)result;
  tr_registry_entry_t *e;
  int rc = one_entry(args, "unregister", 1, &e);
  if (rc)
    return rc;
  /* An actor unregisters itself.  Anyone else is judged by the address the
   * entry holds, not the one they name: a node speaks for the entries at
   * its own address (its keeper), and another node's word that an entry's
   * node refuses connections is true only from where it stands (another
   * host, another network), so the entry goes only if its node refuses
   * this one too. */
  char *at = NULL;
  if (memcmp(e->uuid, ctx->peer_uuid, TR_UUID_LEN) != 0) {
    for (size_t i = 0; i < R.n && !at; i++)
      if (memcmp(R.v[i].e.uuid, e->uuid, TR_UUID_LEN) == 0 && !(at = strdup(R.v[i].e.addr)))
        rc = TR__ENOMEM();
    if (!rc && at && !tr__node_speaks_for(ctx->peer, at) && !tr__node_refuses(at))
      rc = TR_ERROR(-TR_EPERM, "registrar: %s at %s answers here: its entry is kept", e->name, at);
    if (!rc && !at) { /* nothing of that uuid: nothing to drop */
      tr_registry_entries_free(e, 1);
      return 0;
    }
  }
  /* The dial above let other calls in: the entry goes only if it is still
   * the one judged. */
  for (size_t i = 0; i < R.n && !rc; i++)
    if (memcmp(R.v[i].e.uuid, e->uuid, TR_UUID_LEN) == 0) {
      if (!at || strcmp(R.v[i].e.addr, at) == 0)
        reg_drop(i);
      break;
    }
  free(at);
  tr_registry_entries_free(e, 1);
  return rc;
}

static int reg_find(tr_ctx_t *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)ctx;
  tr_registry_entry_t *e;
  int rc = one_entry(args, "find", 0, &e);
  if (rc == 0)
    rc = answer(e->name, result, NULL);
  tr_registry_entries_free(e, 1);
  return rc;
}

static int reg_wait(tr_ctx_t *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)ctx;
  tr_registry_entry_t *e;
  int rc = one_entry(args, "wait", 0, &e);
  if (rc)
    return rc;
  waiter_t w = {.name = e->name};
  if ((rc = tr_chan_new(&w.ch, 1)) != 0) {
    tr_registry_entries_free(e, 1);
    return rc;
  }
  w.next = R.waiters;
  R.waiters = &w;
  for (;;) {
    size_t found = 0;
    if ((rc = answer(e->name, result, &found)) != 0 || found)
      break;
    void *item;
    if ((rc = tr_chan_recv(w.ch, &item)) != 0)
      break; /* cancelled: the caller gave up */
  }
  for (waiter_t **pp = &R.waiters; *pp; pp = &(*pp)->next)
    if (*pp == &w) {
      *pp = w.next;
      break;
    }
  (void)tr_chan_free(w.ch);
  tr_registry_entries_free(e, 1);
  return rc;
}

static int reg_list(tr_ctx_t *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)ctx;
  (void)args;
  return answer(NULL, result, NULL);
}

/* Typed: arguments that are no RegistryEntries are refused before any
 * task, in place of StartAck (PROTOCOL.md 5, step 3); what the entries
 * say (their number, a uuid where it counts) is each function's to
 * check, after StartAck, as any function's failure. */
#define REG_ARGS (&tractor__registry_entries__descriptor)
TR_EXPORT_FN_TYPED(TR_REGISTRY_NS, "register", reg_register, REG_ARGS, NULL)
TR_EXPORT_FN_TYPED(TR_REGISTRY_NS, "unregister", reg_unregister, REG_ARGS, NULL)
TR_EXPORT_FN_TYPED(TR_REGISTRY_NS, "find", reg_find, REG_ARGS, NULL)
TR_EXPORT_FN_TYPED(TR_REGISTRY_NS, "wait", reg_wait, REG_ARGS, NULL)
TR_EXPORT_FN_TYPED(TR_REGISTRY_NS, "list", reg_list, REG_ARGS, NULL)
