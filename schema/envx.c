/*
 * Envelope extensions and uids, the in-memory side of the envelope
 * (schema/envelope.h): body names, the ownership of what an extension
 * holds, a Start's names, and copies of uids.  The codec that turns them
 * into protobuf and back is envelope.c; nothing here touches protobuf-c.
 * The extensions' memory itself comes from the mem layer's per-worker
 * cache (tr__envx_alloc, runtime/mem/msgpool.c).
 */
#include "schema/envelope.h"

#include <stdlib.h>
#include <string.h>

#include "tractor/errors.h"

/* ---- body kinds ----------------------------------------------------------- */

static const char *const body_names[TR_BODY__COUNT] = {
    [TR_BODY_NONE] = "None",
    [TR_BODY_HELLO] = "Hello",
    [TR_BODY_SPAWN_SPEC] = "SpawnSpec",
    [TR_BODY_START] = "Start",
    [TR_BODY_START_ACK] = "StartAck",
    [TR_BODY_STARTED] = "Started",
    [TR_BODY_YIELD] = "Yield",
    [TR_BODY_STOP] = "Stop",
    [TR_BODY_RETURN] = "Return",
    [TR_BODY_ERROR] = "Error",
    [TR_BODY_CANCEL] = "Cancel",
    [TR_BODY_CANCEL_ACK] = "CancelAck",
    [TR_BODY_CREDIT] = "Credit",
};

const char *tr__body_name(int kind) {
  if (kind < 0 || kind >= TR_BODY__COUNT)
    return "Unknown";
  return body_names[kind];
}

/* ---- ownership helpers ---------------------------------------------------- */

void tr__uid_fini(tr_uid_t *u) {
  free(u->name);
  free(u->addr);
  memset(u, 0, sizeof *u);
}

static void strv_free(char **v, size_t n) {
  if (v == NULL)
    return;
  for (size_t i = 0; i < n; i++)
    free(v[i]);
  free(v);
}

/* Frees u's strings without zeroing it: for an envx about to be released
 * (tr__envx_alloc zeroes it again when it is reused). */
static void uid_drop(tr_uid_t *u) {
  if (u->name != NULL)
    free(u->name);
  if (u->addr != NULL)
    free(u->addr);
}

void tr__envx_free(struct tr_envx *x) {
  if (x == NULL)
    return;
  uid_drop(&x->src);
  uid_drop(&x->dst);
  switch (x->kind) {
  case TR_BODY_HELLO:
    tr__uid_fini(&x->u.hello.id);
    break;
  case TR_BODY_SPAWN_SPEC:
    free(x->u.spawn_spec.name);
    strv_free(x->u.spawn_spec.ns, x->u.spawn_spec.n_ns);
    strv_free(x->u.spawn_spec.registry, x->u.spawn_spec.n_registry);
    free(x->u.spawn_spec.bind_addr);
    free(x->u.spawn_spec.log_level);
    uid_drop(&x->u.spawn_spec.parent);
    free(x->u.spawn_spec.run_func);
    break;
  case TR_BODY_START:
    if (!x->u.start.names_inline) {
      free(x->u.start.ns);
      free(x->u.start.func);
    }
    uid_drop(&x->u.start.caller);
    break;
  case TR_BODY_ERROR:
    tr__uid_fini(&x->u.error.src);
    free(x->u.error.boxed_type);
    free(x->u.error.src_type);
    free(x->u.error.message);
    free(x->u.error.trace);
    if (x->u.error.relay != NULL) {
      for (size_t i = 0; i < x->u.error.n_relay; i++)
        tr__uid_fini(&x->u.error.relay[i]);
      free(x->u.error.relay);
    }
    tr__uid_fini(&x->u.error.canceller);
    break;
  default:
    /* The other kinds own nothing in the union. */
    break;
  }
  tr__envx_release(x);
}

struct tr_envx *tr__envx_get(tr_msg_t *m) {
  struct tr_envx *x = m->x_;
  if (x == NULL) {
    x = tr__envx_alloc();
    if (x == NULL)
      return NULL;
    m->x_ = x;
  }
  /* A kind-less envx has an all-zero union, so claiming it for the body
   * cannot make tr__envx_free misread any pointer. */
  if (x->kind == TR_BODY_NONE)
    x->kind = m->body;
  return x;
}

int tr__envx_set_start(struct tr_envx *x, const char *ns, const char *func) {
  return tr__envx_set_start_n(x, ns, strlen(ns), func, strlen(func));
}

int tr__envx_set_start_n(struct tr_envx *x, const char *ns, size_t nlen, const char *func,
                         size_t flen) {
  if (!x->u.start.names_inline) {
    free(x->u.start.ns);
    free(x->u.start.func);
  }
  x->u.start.names_inline = nlen + flen + 2 <= sizeof x->u.start.names;
  if (x->u.start.names_inline) {
    char *p = x->u.start.names;
    memcpy(p, ns, nlen);
    p[nlen] = '\0';
    memcpy(p + nlen + 1, func, flen);
    p[nlen + 1 + flen] = '\0';
    x->u.start.ns = p;
    x->u.start.func = p + nlen + 1;
    return 0;
  }
  x->u.start.ns = strndup(ns, nlen);
  x->u.start.func = strndup(func, flen);
  if (x->u.start.ns == NULL || x->u.start.func == NULL) {
    free(x->u.start.ns);
    free(x->u.start.func);
    x->u.start.ns = x->u.start.func = NULL;
    return -TR_ENOMEM;
  }
  return 0;
}

int tr__dup_opt(char **dst, const char *s) {
  *dst = NULL;
  if (s == NULL || *s == '\0')
    return 0;
  *dst = strdup(s);
  return *dst == NULL ? -TR_ENOMEM : 0;
}

int tr__uid_copy(tr_uid_t *dst, const tr_uid_t *src) {
  memset(dst, 0, sizeof *dst);
  memcpy(dst->uuid, src->uuid, TR_UUID_LEN);
  if (tr__dup_opt(&dst->name, src->name) != 0 || tr__dup_opt(&dst->addr, src->addr) != 0) {
    tr__uid_fini(dst);
    return -TR_ENOMEM;
  }
  return 0;
}
