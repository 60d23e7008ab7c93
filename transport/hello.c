/* The handshake's Hello: built and checked (transport/hello.h). */
#include "transport/hello.h"

#include <string.h>
#include <unistd.h>

#include <tractor/errors.h>

#include "runtime/error/error.h"

int tr__hello_new(const tr_hello_info_t *info, tr_msg_t **out) {
  if (!out)
    return TR__EINVAL_NULL();
  *out = NULL;
  if (!info || (!info->node && (!info->name || !info->uuid)))
    return TR__EINVAL_NULL();
  tr_msg_t *m;
  if (tr_msg_new(&m) != 0)
    return TR__ENOMEM();
  m->body = TR_BODY_HELLO;
  struct tr_envx *x = tr__envx_get(m);
  const char *name = info->node ? tr_actor_name(info->node) : info->name;
  if (!x || tr__dup_opt(&x->u.hello.id.name, name) != 0 ||
      tr__dup_opt(&x->u.hello.id.addr, info->addr) != 0) {
    tr_msg_free(m);
    return TR__ENOMEM();
  }
  if (info->node)
    tr_actor_uuid(info->node, x->u.hello.id.uuid);
  else
    memcpy(x->u.hello.id.uuid, info->uuid, TR_UUID_LEN);
  x->u.hello.pid = (int64_t)getpid();
  x->u.hello.version = TR_PROTO_VERSION;
  x->u.hello.flags = info->flags;
  x->u.hello.is_probe = info->is_probe;
  x->u.hello.is_registrar = info->is_registrar;
  *out = m;
  return 0;
}

static int zero_uuid(const uint8_t *u) {
  for (int i = 0; i < TR_UUID_LEN; i++)
    if (u[i])
      return 0;
  return 1;
}

int tr__hello_check(const tr_msg_t *m, tr_uid_t *peer) {
  if (peer)
    memset(peer, 0, sizeof(*peer));
  if (!m)
    return TR__EINVAL_NULL();
  if (m->body != TR_BODY_HELLO || !m->x_)
    return TR_ERROR(-TR_EPROTO, "the handshake expects Hello first, got %s",
                    tr__body_name(m->body));
  const struct tr_envx *x = m->x_;
  if (x->u.hello.version != TR_PROTO_VERSION)
    return TR_ERROR(-TR_EPROTO, "the peer speaks protocol version %u, this node %u",
                    (unsigned)x->u.hello.version, (unsigned)TR_PROTO_VERSION);
  if (!x->u.hello.id.name || !x->u.hello.id.name[0])
    return TR_ERROR(-TR_EPROTO, "Hello without a name");
  if (zero_uuid(x->u.hello.id.uuid))
    return TR_ERROR(-TR_EPROTO, "Hello from %s without a uuid", x->u.hello.id.name);
  if (x->u.hello.pid <= 0)
    return TR_ERROR(-TR_EPROTO, "Hello from %s with pid %lld", x->u.hello.id.name,
                    (long long)x->u.hello.pid);
  if (x->u.hello.flags & ~TR_HELLO_CHILD)
    return TR_ERROR(-TR_EPROTO, "Hello from %s with unknown flags %#x", x->u.hello.id.name,
                    (unsigned)x->u.hello.flags);
  if (peer && tr__uid_copy(peer, &x->u.hello.id) != 0)
    return TR__ENOMEM();
  return 0;
}
