/*
 * The envelope codec: tr_msg_t <-> protobuf Envelope, and length-prefixed
 * frames.  The only module that calls protoc-c generated code (see the
 * header for the field mapping).
 *
 * The bodies of a dialog's traffic take a hand-written path in both
 * directions (see "the hand-written path" below); the rest goes through
 * protobuf-c, as follows.
 *
 * Encoding builds a tree of protobuf-c structs on the stack whose strings
 * and bytes point straight into the message (no copies), packs it once into
 * a single allocation, and frees only the relay-path array, the one part of
 * the tree whose size is not fixed.  Decoding lets protobuf-c unpack into
 * its own allocations and then copies into the message, because the
 * message's strings must outlive the unpacked tree and be freeable with
 * free().  That is a second copy of every string on receive; payloads are
 * copied once into a tr_buf_t.  Custom protobuf-c allocators could avoid it,
 * and were left out as not worth the complexity until profiles say so.
 *
 * Every decode error path frees both the unpacked tree and the partial
 * message: the decoder faces untrusted input, so leaks there are attacks.
 *
 * Cost under attack: max_frame bounds the input, not what unpacking it
 * allocates.  An empty repeated entry is 2 bytes on the wire but a struct
 * or a string allocation in protobuf-c plus our copy, so a frame full of
 * empty relay_path entries can cost a few dozen times its size while it is
 * decoded.  That is bounded and transient (freed on the error or when the
 * message is); counting entries before unpacking would mean a second wire
 * parser, and was not done.
 */
#include "schema/envelope.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <protobuf-c/protobuf-c.h>

#include "schema/tractor.pb-c.h"
#include "tractor/errors.h"
#include "tractor/portal.h" /* TR_REMOTE_ERROR_TEXT_MAX */

/* ---- body kinds ----------------------------------------------------------- */

/* The kinds are ours and the oneof cases are protobuf field numbers; an
 * explicit table keeps either free to change without breaking the other. */
static const Tractor__Envelope__BodyCase kind_to_case[TR_BODY__COUNT] = {
    [TR_BODY_NONE] = TRACTOR__ENVELOPE__BODY__NOT_SET,
    [TR_BODY_HELLO] = TRACTOR__ENVELOPE__BODY_HELLO,
    [TR_BODY_SPAWN_SPEC] = TRACTOR__ENVELOPE__BODY_SPAWN_SPEC,
    [TR_BODY_START] = TRACTOR__ENVELOPE__BODY_START,
    [TR_BODY_START_ACK] = TRACTOR__ENVELOPE__BODY_START_ACK,
    [TR_BODY_STARTED] = TRACTOR__ENVELOPE__BODY_STARTED,
    [TR_BODY_YIELD] = TRACTOR__ENVELOPE__BODY_YIELD,
    [TR_BODY_STOP] = TRACTOR__ENVELOPE__BODY_STOP,
    [TR_BODY_RETURN] = TRACTOR__ENVELOPE__BODY_RET,
    [TR_BODY_ERROR] = TRACTOR__ENVELOPE__BODY_ERROR,
    [TR_BODY_CANCEL] = TRACTOR__ENVELOPE__BODY_CANCEL,
    [TR_BODY_CANCEL_ACK] = TRACTOR__ENVELOPE__BODY_CANCEL_ACK,
    [TR_BODY_CREDIT] = TRACTOR__ENVELOPE__BODY_CREDIT,
};

/* The other way (read for every frame): 0, TR_BODY_NONE, for the cases
 * this build does not know. */
static const uint8_t case_kind[] = {
    [TRACTOR__ENVELOPE__BODY_HELLO] = TR_BODY_HELLO,
    [TRACTOR__ENVELOPE__BODY_SPAWN_SPEC] = TR_BODY_SPAWN_SPEC,
    [TRACTOR__ENVELOPE__BODY_START] = TR_BODY_START,
    [TRACTOR__ENVELOPE__BODY_START_ACK] = TR_BODY_START_ACK,
    [TRACTOR__ENVELOPE__BODY_STARTED] = TR_BODY_STARTED,
    [TRACTOR__ENVELOPE__BODY_YIELD] = TR_BODY_YIELD,
    [TRACTOR__ENVELOPE__BODY_STOP] = TR_BODY_STOP,
    [TRACTOR__ENVELOPE__BODY_RET] = TR_BODY_RETURN,
    [TRACTOR__ENVELOPE__BODY_ERROR] = TR_BODY_ERROR,
    [TRACTOR__ENVELOPE__BODY_CANCEL] = TR_BODY_CANCEL,
    [TRACTOR__ENVELOPE__BODY_CANCEL_ACK] = TR_BODY_CANCEL_ACK,
    [TRACTOR__ENVELOPE__BODY_CREDIT] = TR_BODY_CREDIT,
};

/* Returns the kind of a oneof case, or TR_BODY_NONE for NOT_SET and for any
 * case this build does not know. */
static int case_to_kind(Tractor__Envelope__BodyCase c) {
  return (unsigned)c < sizeof case_kind ? case_kind[c] : TR_BODY_NONE;
}

/* ---- encoding --------------------------------------------------------------- */

/* protobuf-c reads every string field it packs, so absent strings are sent
 * as the empty string, which proto3 then leaves off the wire.  The casts
 * drop const only because the generated structs are shared with unpacking:
 * packing never writes through these pointers. */
static char *wstr(const char *s) { return (char *)(s != NULL ? s : protobuf_c_empty_string); }

/* An error's text for the wire (TR_REMOTE_ERROR_TEXT_MAX, portal.h): s
 * itself when it is short enough, else a copy cut at a UTF-8 character's
 * start with a note of the whole length, in *mem (the caller frees it).
 * NULL only when that copy could not be had. */
static char *wcut(const char *s, char **mem) {
  static const char note[] = " ... [cut: %zu bytes in all]";
  size_t len = s != NULL ? strlen(s) : 0;
  if (len <= TR_REMOTE_ERROR_TEXT_MAX)
    return wstr(s);
  char tail[sizeof note + 24];
  int tl = snprintf(tail, sizeof tail, note, len);
  size_t keep = TR_REMOTE_ERROR_TEXT_MAX - (size_t)tl;
  while (keep > 0 && ((unsigned char)s[keep] & 0xC0) == 0x80)
    keep--; /* s[keep], the first byte left out, begins a character */
  char *c = malloc(keep + (size_t)tl + 1);
  if (c == NULL)
    return NULL;
  memcpy(c, s, keep);
  memcpy(c + keep, tail, (size_t)tl + 1);
  return *mem = c;
}

static void wbin(ProtobufCBinaryData *b, const tr_buf_t *p) {
  b->len = tr_buf_len(p);
  b->data = b->len != 0 ? (uint8_t *)tr_buf_data(p) : NULL;
}

static void wref(Tractor__ActorRef *r, const tr_uid_t *u) {
  tractor__actor_ref__init(r);
  r->name = wstr(u->name);
  r->addr = wstr(u->addr);
  r->uuid.len = TR_UUID_LEN;
  r->uuid.data = (uint8_t *)u->uuid;
}

/* A ref of a uuid alone (a route's). */
static void wuuid(Tractor__ActorRef *r, const uint8_t *uuid) {
  tractor__actor_ref__init(r);
  r->uuid.len = TR_UUID_LEN;
  r->uuid.data = (uint8_t *)uuid;
}

static int strv_ok(char *const *v, size_t n) {
  if (n != 0 && v == NULL)
    return 0;
  for (size_t i = 0; i < n; i++)
    if (v[i] == NULL)
      return 0;
  return 1;
}

/* The protobuf-c view of one message: every struct the Envelope can point
 * to, so that only the relay path needs the heap. */
struct enc {
  Tractor__Envelope env;
  Tractor__ActorRef src, dst;
  union {
    Tractor__Hello hello;
    Tractor__SpawnSpec spawn_spec;
    Tractor__Start start;
    Tractor__StartAck start_ack;
    Tractor__Started started;
    Tractor__Yield yield;
    Tractor__Stop stop;
    Tractor__Return ret;
    Tractor__Error error;
    Tractor__Cancel cancel;
    Tractor__CancelAck cancel_ack;
    Tractor__Credit credit;
  } b;
  Tractor__ActorRef ref_a, ref_b; /* Start.caller, SpawnSpec.parent,
                                   * Error.src / canceller */
  void *relay_mem;                /* Error.relay_path: pointers, then refs */
  char *cut[2];                   /* Error.message, Error.trace when cut (wcut) */
};

static const struct tr_envx zero_x;

static void enc_fini(struct enc *t);

/* Fills t from m.  Returns 0, -TR_EPROTO, -TR_EINVAL or -TR_ENOMEM; on
 * failure t owns nothing. */
static int enc_build(const tr_msg_t *m, const tr_route_t *rt, struct enc *t) {
  const struct tr_envx *x = m->x_;
  const struct tr_envx *bx; /* body fields: zero when x_ carries none */

  t->relay_mem = NULL;
  t->cut[0] = t->cut[1] = NULL;
  if (m->body == TR_BODY_NONE || m->body >= TR_BODY__COUNT)
    return -TR_EPROTO;
  if (x != NULL && x->kind != TR_BODY_NONE && x->kind != m->body)
    return -TR_EINVAL;
  bx = (x != NULL && x->kind == m->body) ? x : &zero_x;

  tractor__envelope__init(&t->env);
  t->env.cid = m->cid;
  /* The envx's refs, else the route's uuids (a ref of the uuid alone). */
  if (x != NULL && x->has_src) {
    wref(&t->src, &x->src);
    t->env.src = &t->src;
  } else if (rt != NULL && rt->has_src) {
    wuuid(&t->src, rt->src);
    t->env.src = &t->src;
  }
  if (x != NULL && x->has_dst) {
    wref(&t->dst, &x->dst);
    t->env.dst = &t->dst;
  } else if (rt != NULL && rt->has_dst) {
    wuuid(&t->dst, rt->dst);
    t->env.dst = &t->dst;
  }
  t->env.body_case = kind_to_case[m->body];

  switch (m->body) {
  case TR_BODY_HELLO: {
    Tractor__Hello *h = &t->b.hello;
    tractor__hello__init(h);
    h->name = wstr(bx->u.hello.id.name);
    h->uuid.len = TR_UUID_LEN;
    h->uuid.data = (uint8_t *)bx->u.hello.id.uuid;
    h->pid = bx->u.hello.pid;
    h->addr = wstr(bx->u.hello.id.addr);
    h->is_registrar = bx->u.hello.is_registrar != 0;
    h->is_probe = bx->u.hello.is_probe != 0;
    h->version = bx->u.hello.version;
    h->flags = bx->u.hello.flags;
    if (bx->u.hello.has_nonce) {
      h->nonce.len = sizeof bx->u.hello.nonce;
      h->nonce.data = (uint8_t *)bx->u.hello.nonce;
    }
    wbin(&h->auth_proof, m->payload);
    t->env.hello = h;
    break;
  }
  case TR_BODY_SPAWN_SPEC: {
    Tractor__SpawnSpec *s = &t->b.spawn_spec;
    if (bx->u.spawn_spec.name == NULL || bx->u.spawn_spec.name[0] == '\0')
      return -TR_EPROTO;
    if (!strv_ok(bx->u.spawn_spec.ns, bx->u.spawn_spec.n_ns) ||
        !strv_ok(bx->u.spawn_spec.registry, bx->u.spawn_spec.n_registry))
      return -TR_EINVAL;
    tractor__spawn_spec__init(s);
    s->name = wstr(bx->u.spawn_spec.name);
    s->n_enable_ns = bx->u.spawn_spec.n_ns;
    s->enable_ns = bx->u.spawn_spec.ns;
    s->n_registry_addrs = bx->u.spawn_spec.n_registry;
    s->registry_addrs = bx->u.spawn_spec.registry;
    s->bind_addr = wstr(bx->u.spawn_spec.bind_addr);
    s->log_level = wstr(bx->u.spawn_spec.log_level);
    s->life_cid = bx->u.spawn_spec.life_cid;
    if (bx->u.spawn_spec.has_parent) {
      wref(&t->ref_a, &bx->u.spawn_spec.parent);
      s->parent = &t->ref_a;
    }
    s->run_func = wstr(bx->u.spawn_spec.run_func);
    wbin(&s->run_args, m->payload);
    t->env.spawn_spec = s;
    break;
  }
  case TR_BODY_START: {
    Tractor__Start *s = &t->b.start;
    if (bx->u.start.ns == NULL || bx->u.start.ns[0] == '\0' || bx->u.start.func == NULL ||
        bx->u.start.func[0] == '\0')
      return -TR_EPROTO;
    tractor__start__init(s);
    s->ns = wstr(bx->u.start.ns);
    s->func = wstr(bx->u.start.func);
    wbin(&s->args, m->payload);
    s->window = (uint32_t)m->u64;
    s->overrun_error = (m->u64 >> 32) & 1;
    if (bx->u.start.has_caller) {
      wref(&t->ref_a, &bx->u.start.caller);
      s->caller = &t->ref_a;
    }
    t->env.start = s;
    break;
  }
  case TR_BODY_START_ACK:
    if (m->u64 < TR_FUNC_FN || m->u64 > TR_FUNC_CONTEXT)
      return -TR_EPROTO;
    tractor__start_ack__init(&t->b.start_ack);
    /* enum tr_functype and FuncType agree by construction (the .proto
     * numbers FN/STREAM/CONTEXT as 1/2/3 too). */
    t->b.start_ack.functype = (Tractor__FuncType)m->u64;
    t->env.start_ack = &t->b.start_ack;
    break;
  case TR_BODY_STARTED:
    tractor__started__init(&t->b.started);
    wbin(&t->b.started.payload, m->payload);
    t->env.started = &t->b.started;
    break;
  case TR_BODY_YIELD:
    tractor__yield__init(&t->b.yield);
    wbin(&t->b.yield.payload, m->payload);
    t->env.yield = &t->b.yield;
    break;
  case TR_BODY_STOP:
    tractor__stop__init(&t->b.stop);
    t->env.stop = &t->b.stop;
    break;
  case TR_BODY_RETURN:
    tractor__return__init(&t->b.ret);
    wbin(&t->b.ret.payload, m->payload);
    t->env.ret = &t->b.ret;
    break;
  case TR_BODY_ERROR: {
    Tractor__Error *e = &t->b.error;
    size_t n = bx->u.error.n_relay;
    tractor__error__init(e);
    if (bx->u.error.has_src) {
      wref(&t->ref_a, &bx->u.error.src);
      e->src = &t->ref_a;
    }
    e->boxed_type = wstr(bx->u.error.boxed_type);
    e->src_type = wstr(bx->u.error.src_type);
    if ((e->message = wcut(bx->u.error.message, &t->cut[0])) == NULL ||
        (e->trace = wcut(bx->u.error.trace, &t->cut[1])) == NULL) {
      enc_fini(t);
      return -TR_ENOMEM;
    }
    if (bx->u.error.has_canceller) {
      wref(&t->ref_b, &bx->u.error.canceller);
      e->canceller = &t->ref_b;
    }
    e->cid = bx->u.error.cid;
    e->code = bx->u.error.code;
    if (n != 0) {
      Tractor__ActorRef **ptrs;
      Tractor__ActorRef *refs;
      /* Refs after the pointer array: the pointers' alignment suffices
       * for a struct of pointers and sizes. */
      if (bx->u.error.relay == NULL || n > SIZE_MAX / (sizeof *ptrs + sizeof *refs) ||
          (t->relay_mem = malloc(n * (sizeof *ptrs + sizeof *refs))) == NULL) {
        enc_fini(t); /* the texts cut above */
        return bx->u.error.relay == NULL ? -TR_EINVAL : -TR_ENOMEM;
      }
      ptrs = t->relay_mem;
      refs = (Tractor__ActorRef *)(ptrs + n);
      for (size_t i = 0; i < n; i++) {
        wref(&refs[i], &bx->u.error.relay[i]);
        ptrs[i] = &refs[i];
      }
      e->n_relay_path = n;
      e->relay_path = ptrs;
    }
    t->env.error = e;
    break;
  }
  case TR_BODY_CANCEL:
    tractor__cancel__init(&t->b.cancel);
    t->b.cancel.cid = m->u64;
    t->b.cancel.whole_actor = bx->u.cancel.whole_actor != 0;
    t->env.cancel = &t->b.cancel;
    break;
  case TR_BODY_CANCEL_ACK:
    tractor__cancel_ack__init(&t->b.cancel_ack);
    t->b.cancel_ack.cid = m->u64;
    t->b.cancel_ack.whole_actor = bx->u.cancel.whole_actor != 0;
    t->b.cancel_ack.acknowledged = bx->u.cancel.acknowledged != 0;
    t->env.cancel_ack = &t->b.cancel_ack;
    break;
  case TR_BODY_CREDIT:
    if (m->u64 > UINT32_MAX)
      return -TR_EINVAL;
    tractor__credit__init(&t->b.credit);
    t->b.credit.n = (uint32_t)m->u64;
    t->env.credit = &t->b.credit;
    break;
  default:
    return -TR_EPROTO;
  }
  return 0;
}

static void enc_fini(struct enc *t) {
  free(t->relay_mem);
  t->relay_mem = NULL;
  free(t->cut[0]);
  free(t->cut[1]);
  t->cut[0] = t->cut[1] = NULL;
}

static size_t clamp_max(size_t max_frame) {
  if (max_frame == 0)
    return TR_MAX_FRAME_DEFAULT;
  return max_frame > UINT32_MAX ? UINT32_MAX : max_frame;
}


/* ---- the hand-written path for a dialog's traffic ------------------------------
 *
 * Start, StartAck, Started, Yield, Stop, Return, Cancel, CancelAck and
 * Credit, with the envelope's cid, src and dst, are most of what crosses a
 * channel: a stream is Yields and Credits.  For them protobuf-c's
 * descriptor walk (size, then pack; unpack into its own tree, copy out,
 * free the tree) cost more than the rest of a message's trip between two
 * processes.  So they are written and read here directly in the protobuf
 * wire format, which is simple for flat messages of scalars, bytes and
 * ActorRefs.  Hello, SpawnSpec and Error (rare, with repeated fields) stay
 * with protobuf-c.
 *
 * The encoder writes what protobuf-c writes: fields in number order, proto3
 * zero values and empty strings left out, a set oneof member always
 * written (tests compare the bytes of both).  The decoder takes only that
 * canonical form (each known field once, with its declared wire type,
 * values in range, strings without NUL, a uuid of 0 or 16 bytes, the
 * required fields present) and hands anything else, valid or not, to the
 * protobuf-c path, which decides: so the two cannot disagree about what a
 * frame means (tests and the fuzz target compare them on random and
 * mutated input), and the hostile cases keep the one decoder that was
 * reviewed for them.
 */

/* The fast decoder's "not mine: protobuf-c decides". */
#define HOT_PASS 1

static int hot_kind(int body) {
  switch (body) {
  case TR_BODY_START:
  case TR_BODY_START_ACK:
  case TR_BODY_STARTED:
  case TR_BODY_YIELD:
  case TR_BODY_STOP:
  case TR_BODY_RETURN:
  case TR_BODY_CANCEL:
  case TR_BODY_CANCEL_ACK:
  case TR_BODY_CREDIT:
    return 1;
  default:
    return 0;
  }
}

/* The checks of enc_build for the hot bodies, shared by both encoders. */
static int check_hot(const tr_msg_t *m, const struct tr_envx *bx) {
  switch (m->body) {
  case TR_BODY_START:
    if (bx->u.start.ns == NULL || bx->u.start.ns[0] == '\0' || bx->u.start.func == NULL ||
        bx->u.start.func[0] == '\0')
      return -TR_EPROTO;
    return 0;
  case TR_BODY_START_ACK:
    return m->u64 < TR_FUNC_FN || m->u64 > TR_FUNC_CONTEXT ? -TR_EPROTO : 0;
  case TR_BODY_CREDIT:
    return m->u64 > UINT32_MAX ? -TR_EINVAL : 0;
  default:
    return 0;
  }
}

/* Tags: every field number used here is below 16, so a tag is one byte. */
#define TAG(field, wt) ((uint8_t)((field) << 3 | (wt)))
#define WT_VARINT 0
#define WT_LEN 2

static size_t vsize(uint64_t v) {
  size_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    n++;
  }
  return n;
}

static uint8_t *vput(uint8_t *p, uint64_t v) {
  while (v >= 0x80) {
    *p++ = (uint8_t)(v | 0x80);
    v >>= 7;
  }
  *p++ = (uint8_t)v;
  return p;
}

/* Sizes of whole fields (tag included); 0 for a value proto3 leaves out. */
static size_t lfield(size_t n) { return 1 + vsize(n) + n; }
static size_t sfield(const char *s) { return s != NULL && s[0] != '\0' ? lfield(strlen(s)) : 0; }
static size_t bfield(const tr_buf_t *b) {
  size_t n = tr_buf_len(b);
  return n != 0 ? lfield(n) : 0;
}
static size_t vfield(uint64_t v) { return v != 0 ? 1 + vsize(v) : 0; }
static size_t ref_size(const tr_uid_t *u) {
  return sfield(u->name) + lfield(TR_UUID_LEN) + sfield(u->addr);
}

static uint8_t *put_len(uint8_t *p, unsigned field, size_t n) {
  *p++ = TAG(field, WT_LEN);
  return vput(p, n);
}
static uint8_t *put_raw(uint8_t *p, unsigned field, const void *d, size_t n) {
  p = put_len(p, field, n);
  memcpy(p, d, n);
  return p + n;
}
static uint8_t *put_str(uint8_t *p, unsigned field, const char *s) {
  return s != NULL && s[0] != '\0' ? put_raw(p, field, s, strlen(s)) : p;
}
static uint8_t *put_buf(uint8_t *p, unsigned field, const tr_buf_t *b) {
  size_t n = tr_buf_len(b);
  return n != 0 ? put_raw(p, field, tr_buf_data(b), n) : p;
}
static uint8_t *put_varint(uint8_t *p, unsigned field, uint64_t v) {
  if (v == 0)
    return p;
  *p++ = TAG(field, WT_VARINT);
  return vput(p, v);
}
/* ActorRef.uuid: a constant size, so the copy is inline. */
static uint8_t *put_uuid(uint8_t *p, const uint8_t *uuid) {
  *p++ = TAG(2, WT_LEN);
  *p++ = TR_UUID_LEN;
  memcpy(p, uuid, TR_UUID_LEN);
  return p + TR_UUID_LEN;
}
static uint8_t *put_ref(uint8_t *p, unsigned field, const tr_uid_t *u) {
  p = put_len(p, field, ref_size(u));
  p = put_str(p, 1, u->name);
  p = put_uuid(p, u->uuid);
  return put_str(p, 3, u->addr);
}

/* The size of a hot body's message (without its own tag and length). */
static size_t hot_body_size(const tr_msg_t *m, const struct tr_envx *bx) {
  switch (m->body) {
  case TR_BODY_START:
    return sfield(bx->u.start.ns) + sfield(bx->u.start.func) + bfield(m->payload) +
           (bx->u.start.has_caller ? lfield(ref_size(&bx->u.start.caller)) : 0) +
           vfield((uint32_t)m->u64) + vfield((m->u64 >> 32) & 1);
  case TR_BODY_START_ACK:
  case TR_BODY_CREDIT:
    return vfield(m->u64);
  case TR_BODY_STARTED:
  case TR_BODY_YIELD:
  case TR_BODY_RETURN:
    return bfield(m->payload);
  case TR_BODY_CANCEL:
    return vfield(m->u64) + vfield(bx->u.cancel.whole_actor != 0);
  case TR_BODY_CANCEL_ACK:
    return vfield(m->u64) + vfield(bx->u.cancel.whole_actor != 0) +
           vfield(bx->u.cancel.acknowledged != 0);
  default: /* TR_BODY_STOP */
    return 0;
  }
}

static uint8_t *hot_body_put(uint8_t *p, const tr_msg_t *m, const struct tr_envx *bx) {
  switch (m->body) {
  case TR_BODY_START:
    p = put_str(p, 1, bx->u.start.ns);
    p = put_str(p, 2, bx->u.start.func);
    p = put_buf(p, 3, m->payload);
    if (bx->u.start.has_caller)
      p = put_ref(p, 4, &bx->u.start.caller);
    p = put_varint(p, 5, (uint32_t)m->u64);
    return put_varint(p, 6, (m->u64 >> 32) & 1);
  case TR_BODY_START_ACK:
  case TR_BODY_CREDIT:
    return put_varint(p, 1, m->u64);
  case TR_BODY_STARTED:
  case TR_BODY_YIELD:
  case TR_BODY_RETURN:
    return put_buf(p, 1, m->payload);
  case TR_BODY_CANCEL:
    p = put_varint(p, 1, m->u64);
    return put_varint(p, 2, bx->u.cancel.whole_actor != 0);
  case TR_BODY_CANCEL_ACK:
    p = put_varint(p, 1, m->u64);
    p = put_varint(p, 2, bx->u.cancel.whole_actor != 0);
    return put_varint(p, 3, bx->u.cancel.acknowledged != 0);
  default:
    return p;
  }
}

/* Field src or dst: the envx's ref u, else a route's uuid (a ref of the
 * uuid alone), else none. */
static size_t route_size(const tr_uid_t *u, const uint8_t *uuid) {
  return u != NULL ? lfield(ref_size(u)) : uuid != NULL ? lfield(lfield(TR_UUID_LEN)) : 0;
}
static uint8_t *put_route(uint8_t *p, unsigned field, const tr_uid_t *u, const uint8_t *uuid) {
  if (u != NULL)
    return put_ref(p, field, u);
  if (uuid == NULL)
    return p;
  p = put_len(p, field, lfield(TR_UUID_LEN));
  return put_uuid(p, uuid);
}
#define ROUTE_SRC(x, rt)                                                                          \
  ((x) != NULL && (x)->has_src ? NULL : (rt) != NULL && (rt)->has_src ? (rt)->src : NULL)
#define ROUTE_DST(x, rt)                                                                          \
  ((x) != NULL && (x)->has_dst ? NULL : (rt) != NULL && (rt)->has_dst ? (rt)->dst : NULL)
#define X_SRC(x) ((x) != NULL && (x)->has_src ? &(x)->src : NULL)
#define X_DST(x) ((x) != NULL && (x)->has_dst ? &(x)->dst : NULL)

/* The Envelope's size for a hot body m (checked: 0 or an error). */
static int hot_size(const tr_msg_t *m, const tr_route_t *rt, size_t *n, size_t *body) {
  const struct tr_envx *x = m->x_;
  if (x != NULL && x->kind != TR_BODY_NONE && x->kind != m->body)
    return -TR_EINVAL;
  const struct tr_envx *bx = (x != NULL && x->kind == m->body) ? x : &zero_x;
  int rc = check_hot(m, bx);
  if (rc != 0)
    return rc;
  *body = hot_body_size(m, bx);
  *n = vfield(m->cid) + route_size(X_SRC(x), ROUTE_SRC(x, rt)) +
       route_size(X_DST(x), ROUTE_DST(x, rt)) + lfield(*body);
  return 0;
}

/* Writes the Envelope of a hot body m whose sizes hot_size gave. */
static void hot_put(const tr_msg_t *m, const tr_route_t *rt, size_t body, uint8_t *p) {
  const struct tr_envx *x = m->x_;
  const struct tr_envx *bx = (x != NULL && x->kind == m->body) ? x : &zero_x;
  p = put_varint(p, 1, m->cid);
  p = put_route(p, 2, X_SRC(x), ROUTE_SRC(x, rt));
  p = put_route(p, 3, X_DST(x), ROUTE_DST(x, rt));
  p = put_len(p, (unsigned)kind_to_case[m->body], body);
  (void)hot_body_put(p, m, bx);
}

/* ---- reading ---- */

/* A span of the input. */
typedef struct span {
  const uint8_t *p;
  size_t n;
} span_t;

/* vget past its first byte: a cid's two or three bytes unrolled, then the
 * general loop. */
static int vget_more(const uint8_t **pp, const uint8_t *end, uint64_t *v) {
  const uint8_t *p = *pp;
  if (end - p >= 2 && p[0] >= 0x80 && p[1] < 0x80) {
    *v = (p[0] & 0x7fu) | (uint64_t)p[1] << 7;
    *pp = p + 2;
    return 0;
  }
  if (end - p >= 3 && p[0] >= 0x80 && p[1] >= 0x80 && p[2] < 0x80) {
    *v = (p[0] & 0x7fu) | (uint64_t)(p[1] & 0x7f) << 7 | (uint64_t)p[2] << 14;
    *pp = p + 3;
    return 0;
  }
  uint64_t r = 0;
  for (unsigned shift = 0; shift < 64 && p < end; shift += 7) {
    uint8_t b = *p++;
    if (shift == 63 && b > 1)
      return -1;
    r |= (uint64_t)(b & 0x7f) << shift;
    if (b < 0x80) {
      *pp = p;
      *v = r;
      return 0;
    }
  }
  return -1;
}

/* Reads a varint of at most 10 bytes whose value fits 64 bits; 0 or -1.
 * Most lengths and values take one byte: that case is inline. */
static inline int vget(const uint8_t **pp, const uint8_t *end, uint64_t *v) {
  const uint8_t *p = *pp;
  if (p < end && p[0] < 0x80) {
    *v = p[0];
    *pp = p + 1;
    return 0;
  }
  return vget_more(pp, end, v);
}

/*
 * Walks the fields of a message: for each, its number, and its value (a
 * varint in *v, or a length-delimited span in *sp).  Returns 1 for a field,
 * 0 at the end, HOT_PASS-style -1 for anything else: a field number of 16
 * or more, a wire type other than varint and length-delimited, a field
 * seen twice (*seen tracks them), or a truncated input.
 */
static int next_field(span_t *in, uint32_t *seen, unsigned *field, uint64_t *v, span_t *sp) {
  if (in->n == 0)
    return 0;
  const uint8_t *p = in->p, *end = in->p + in->n;
  uint8_t key = *p++;
  unsigned f = key >> 3, wt = key & 7;
  if (key >= 0x80 || f == 0 || (*seen & (1u << f)))
    return -1;
  *seen |= 1u << f;
  if (p < end && *p < 0x80) /* a one-byte varint: most lengths and values */
    *v = *p++;
  else if (vget(&p, end, v) != 0)
    return -1;
  if (wt == WT_LEN) {
    if (*v > (uint64_t)(end - p))
      return -1;
    sp->p = p;
    sp->n = (size_t)*v;
    p += sp->n;
  } else if (wt != WT_VARINT) {
    return -1;
  }
  *field = f | wt << 4; /* number and wire type, compared together below */
  in->n -= (size_t)(p - in->p);
  in->p = p;
  return 1;
}
#define FV(field) ((field) | WT_VARINT << 4)
#define FL(field) ((field) | WT_LEN << 4)

/* A string field: a copy, NULL for the empty string; HOT_PASS when it
 * holds a NUL (protobuf-c's C string would end there). */
static int get_str(char **dst, span_t s) {
  if (s.n == 0)
    return 0;
  if (memchr(s.p, '\0', s.n) != NULL)
    return HOT_PASS;
  char *c = malloc(s.n + 1);
  if (c == NULL)
    return -TR_ENOMEM;
  memcpy(c, s.p, s.n);
  c[s.n] = '\0';
  *dst = c;
  return 0;
}

/* The usual shape of an ActorRef, a uuid alone (a receiver, a caller, a
 * sender already named): its 18 bytes are the only canonical encoding of
 * that ref. */
static int uuid_only(span_t in) {
  return in.n == 2 + TR_UUID_LEN && in.p[0] == TAG(2, WT_LEN) && in.p[1] == TR_UUID_LEN;
}

/* An ActorRef into u (zeroed by the caller). */
static int get_ref(tr_uid_t *u, span_t in) {
  if (uuid_only(in)) {
    memcpy(u->uuid, in.p + 2, TR_UUID_LEN);
    return 0;
  }
  uint32_t seen = 0;
  unsigned f;
  uint64_t v;
  span_t s;
  int r, rc;
  while ((r = next_field(&in, &seen, &f, &v, &s)) > 0) {
    if (f == FL(1))
      rc = get_str(&u->name, s);
    else if (f == FL(3))
      rc = get_str(&u->addr, s);
    else if (f == FL(2) && (s.n == 0 || s.n == TR_UUID_LEN))
      rc = (memcpy(u->uuid, s.p, s.n), 0);
    else
      rc = HOT_PASS;
    if (rc != 0)
      return rc;
  }
  return r < 0 ? HOT_PASS : 0;
}

/* A length-delimited field `tag` with a one-byte length at *pp, if there
 * is one: its span, and *pp past it. */
static int canon_len(const uint8_t **pp, const uint8_t *end, uint8_t tag, span_t *sp) {
  const uint8_t *p = *pp;
  if (end - p < 2 || p[0] != tag || p[1] >= 0x80 || p[1] > end - p - 2)
    return 0;
  sp->p = p + 2;
  sp->n = p[1];
  *pp = p + 2 + p[1];
  return 1;
}

/* A Start as our encoders write it, read straight through: ns and func,
 * then args and caller where present, each with a one-byte length, then
 * the window (a varint) and the flag (a one-byte varint) where present, in
 * that order to the end.  Its spans (caller->p NULL: none) and u64, and 1;
 * or 0, and get_body's loop reads it: the same fields, so the same result. */
static int canon_start(span_t in, span_t *ns, span_t *fn, span_t *args, span_t *caller,
                       uint64_t *u64) {
  const uint8_t *p = in.p, *end = in.p + in.n;
  if (!canon_len(&p, end, TAG(1, WT_LEN), ns) || !canon_len(&p, end, TAG(2, WT_LEN), fn))
    return 0;
  (void)canon_len(&p, end, TAG(3, WT_LEN), args);
  (void)canon_len(&p, end, TAG(4, WT_LEN), caller);
  *u64 = 0;
  if (p < end && p[0] == TAG(5, WT_VARINT)) {
    p++;
    if (vget(&p, end, u64) != 0 || *u64 > UINT32_MAX)
      return 0;
  }
  if (end - p >= 2 && p[0] == TAG(6, WT_VARINT) && p[1] <= 1) {
    *u64 |= (uint64_t)p[1] << 32;
    p += 2;
  }
  return p == end;
}

/* A bool's varint: 0 or 1, else HOT_PASS. */
#define BOOL_OK(v) ((v) <= 1)

/* The body message of kind into m (x is m's envx, or NULL if it needs none). */
static int get_body(tr_msg_t *m, struct tr_envx *x, span_t in) {
  uint32_t seen = 0;
  unsigned f;
  uint64_t v;
  span_t s, ns = {0}, fn = {0};
  int r, rc = 0;
  int kind = m->body;
  if ((kind == TR_BODY_YIELD || kind == TR_BODY_RETURN || kind == TR_BODY_STARTED) && in.n > 2 &&
      in.p[0] == TAG(1, WT_LEN) && in.p[1] < 0x80 && in.p[1] == in.n - 2)
    /* A stream's item, a result: the payload alone, with a one-byte
     * length, as canon_envelope reads the envelope (the loop below would
     * read the same). */
    return tr_buf_from(in.p + 2, in.n - 2, &m->payload);
  if ((kind == TR_BODY_START_ACK || kind == TR_BODY_CREDIT) && in.n == 2 &&
      in.p[0] == TAG(1, WT_VARINT) && in.p[1] < 0x80) {
    /* A functype, a credit: one field of one byte (as the loop reads it) */
    if (kind == TR_BODY_START_ACK && (in.p[1] < TR_FUNC_FN || in.p[1] > TR_FUNC_CONTEXT))
      return HOT_PASS;
    m->u64 = in.p[1];
    return 0;
  }
  if (kind == TR_BODY_START) {
    span_t args = {0}, caller = {0};
    if (canon_start(in, &ns, &fn, &args, &caller, &v)) {
      m->u64 = v;
      rc = args.n ? tr_buf_from(args.p, args.n, &m->payload) : 0;
      if (rc == 0 && caller.p)
        rc = (x->u.start.has_caller = 1, get_ref(&x->u.start.caller, caller));
      in.n = 0; /* read: the loop ends at once */
    } else {
      ns = fn = (span_t){0};
    }
  }
  while (rc == 0 && (r = next_field(&in, &seen, &f, &v, &s)) > 0) {
    switch (kind) {
    case TR_BODY_START:
      if (f == FL(1))
        ns = s;
      else if (f == FL(2))
        fn = s;
      else if (f == FL(3))
        rc = s.n ? tr_buf_from(s.p, s.n, &m->payload) : 0;
      else if (f == FL(4))
        rc = (x->u.start.has_caller = 1, get_ref(&x->u.start.caller, s));
      else if (f == FV(5) && v <= UINT32_MAX)
        m->u64 |= v;
      else if (f == FV(6) && BOOL_OK(v))
        m->u64 |= v << 32;
      else
        rc = HOT_PASS;
      break;
    case TR_BODY_START_ACK:
      rc = f == FV(1) && v >= TR_FUNC_FN && v <= TR_FUNC_CONTEXT ? (m->u64 = v, 0) : HOT_PASS;
      break;
    case TR_BODY_CREDIT:
      rc = f == FV(1) && v <= UINT32_MAX ? (m->u64 = v, 0) : HOT_PASS;
      break;
    case TR_BODY_STARTED:
    case TR_BODY_YIELD:
    case TR_BODY_RETURN:
      rc = f == FL(1) ? (s.n ? tr_buf_from(s.p, s.n, &m->payload) : 0) : HOT_PASS;
      break;
    case TR_BODY_CANCEL:
    case TR_BODY_CANCEL_ACK:
      if (f == FV(1))
        m->u64 = v;
      else if (f == FV(2) && BOOL_OK(v))
        x->u.cancel.whole_actor = (uint8_t)v;
      else if (f == FV(3) && BOOL_OK(v) && kind == TR_BODY_CANCEL_ACK)
        x->u.cancel.acknowledged = (uint8_t)v;
      else
        rc = HOT_PASS;
      break;
    default: /* Stop has no fields */
      rc = HOT_PASS;
    }
  }
  if (rc != 0)
    return rc;
  if (r < 0)
    return HOT_PASS;
  if (kind == TR_BODY_START_ACK && m->u64 == 0)
    return HOT_PASS; /* the functype is required */
  if (kind == TR_BODY_START) {
    if (ns.n == 0 || fn.n == 0 || memchr(ns.p, '\0', ns.n) || memchr(fn.p, '\0', fn.n))
      return HOT_PASS;
    return tr__envx_set_start_n(x, (const char *)ns.p, ns.n, (const char *)fn.p, fn.n);
  }
  return 0;
}

/* The envelope as our encoders write it, read straight through: cid, src
 * and dst where present, in that order, then a hot body to the end.  Fills
 * what the field loop of hot_decode would and returns 1, or returns 0 and
 * leaves the input to the loop: the same fields, so the same result (the
 * tests and the fuzz target compare both decoders on canonical and
 * mangled input).  Nearly every frame is canonical, and the loop's checks
 * per field were a third of a Yield's decoding. */
static int canon_envelope(const uint8_t *p, const uint8_t *end, uint64_t *cid, span_t *src,
                          span_t *dst, span_t *body, uint32_t *seen, int *kind) {
  uint32_t sn = 0;
  uint64_t v;
  if (p < end && *p == TAG(1, WT_VARINT)) {
    p++;
    if (vget(&p, end, cid) != 0)
      return 0;
    sn |= 1u << 1;
  }
  if (canon_len(&p, end, TAG(2, WT_LEN), src))
    sn |= 1u << 2;
  if (canon_len(&p, end, TAG(3, WT_LEN), dst))
    sn |= 1u << 3;
  if (p >= end || *p >= 0x80 || (*p & 7) != WT_LEN)
    return 0;
  unsigned num = *p++ >> 3;
  int k = case_to_kind((Tractor__Envelope__BodyCase)num);
  if (!hot_kind(k) || vget(&p, end, &v) != 0 || v != (uint64_t)(end - p))
    return 0;
  body->p = p;
  body->n = (size_t)v;
  *seen = sn | 1u << num;
  *kind = k;
  return 1;
}

/* Decodes the canonical form of a hot body into m (fresh from tr_msg_new).
 * Returns 0, HOT_PASS (m may be partly filled: free it and let protobuf-c
 * decide) or -TR_ENOMEM. */
static int hot_decode(const uint8_t *data, size_t len, tr_route_t *rt, tr_msg_t *m) {
  span_t in = {data, len}, src = {0}, dst = {0}, body = {0};
  uint32_t seen = 0;
  unsigned f;
  uint64_t v;
  span_t s;
  int r = 0, kind = TR_BODY_NONE;
  uint64_t cid = 0;
  if (canon_envelope(data, data + len, &cid, &src, &dst, &body, &seen, &kind)) {
    m->cid = cid;
  } else {
    src = dst = body = (span_t){0};
    seen = 0;
    kind = TR_BODY_NONE;
    while ((r = next_field(&in, &seen, &f, &v, &s)) > 0) {
      unsigned num = f & 15;
      if (f == FV(1))
        m->cid = v;
      else if (f == FL(2))
        src = s;
      else if (f == FL(3))
        dst = s;
      else if ((f >> 4) == WT_LEN && kind == TR_BODY_NONE &&
               hot_kind(kind = case_to_kind((Tractor__Envelope__BodyCase)num)))
        body = s;
      else
        return HOT_PASS;
    }
  }
  if (r < 0 || kind == TR_BODY_NONE)
    return HOT_PASS;
  m->body = (uint16_t)kind;
  struct tr_envx *x = NULL;
  int has_src = (seen >> 2) & 1, has_dst = (seen >> 3) & 1;
  /* As from_pb: an envx only where there are fields to hold; with a route,
   * a ref of the uuid alone goes there only. */
  int src_x = has_src && !(rt && uuid_only(src)), dst_x = has_dst && !(rt && uuid_only(dst));
  if (src_x || dst_x || kind == TR_BODY_START || kind == TR_BODY_CANCEL ||
      kind == TR_BODY_CANCEL_ACK) {
    if ((x = tr__envx_get(m)) == NULL)
      return -TR_ENOMEM;
  }
  int rc = 0;
  if (src_x) {
    x->has_src = 1;
    rc = get_ref(&x->src, src);
  }
  if (rc == 0 && dst_x) {
    x->has_dst = 1;
    rc = get_ref(&x->dst, dst);
  }
  if (rc == 0 && rt) {
    if ((rt->has_src = (uint8_t)has_src))
      memcpy(rt->src, src_x ? x->src.uuid : src.p + 2, TR_UUID_LEN);
    if ((rt->has_dst = (uint8_t)has_dst))
      memcpy(rt->dst, dst_x ? x->dst.uuid : dst.p + 2, TR_UUID_LEN);
  }
  return rc != 0 ? rc : get_body(m, x, body);
}

/* tr__frame_encode_with's room for the frame, from malloc. */
static uint8_t *malloc_room(void *ctx, size_t n) { return *(uint8_t **)ctx = malloc(n); }

/* Encodes m after hdr bytes of header room (0, or 4 for the frame length),
 * into the room reserve(ctx, n) gives; max bounds the Envelope; pb forces
 * the protobuf-c path (for the tests that compare the two). */
static int encode(const tr_msg_t *m, const tr_route_t *rt, size_t hdr, size_t max, int pb,
                  uint8_t *(*reserve)(void *ctx, size_t n), void *ctx, size_t *len) {
  struct enc t;
  size_t n = 0, body = 0;
  int hot = !pb && hot_kind(m->body);
  int rc = hot ? hot_size(m, rt, &n, &body) : enc_build(m, rt, &t);

  *len = 0;
  if (rc != 0)
    return rc;
  if (!hot)
    n = tractor__envelope__get_packed_size(&t.env);
  uint8_t *buf = n <= max ? reserve(ctx, hdr + n) : NULL;
  if (buf == NULL) {
    if (!hot)
      enc_fini(&t);
    return n > max ? -TR_EMSGSIZE : -TR_ENOMEM;
  }
  if (hot) {
    hot_put(m, rt, body, buf + hdr);
  } else {
    size_t packed = tractor__envelope__pack(&t.env, buf + hdr);
    enc_fini(&t);
    /* Unreachable unless protobuf-c disagrees with itself about sizes:
     * the room is the caller's (encode_malloc frees it). */
    if (packed != n)
      return -TR_EPROTO;
  }
  if (hdr != 0) {
    buf[0] = (uint8_t)n;
    buf[1] = (uint8_t)(n >> 8);
    buf[2] = (uint8_t)(n >> 16);
    buf[3] = (uint8_t)(n >> 24);
  }
  *len = hdr + n;
  return 0;
}

static int encode_malloc(const tr_msg_t *m, size_t hdr, size_t max, int pb, uint8_t **out,
                         size_t *len) {
  *out = NULL;
  int rc = encode(m, NULL, hdr, max, pb, malloc_room, out, len);
  if (rc != 0) {
    free(*out); /* a failed pack after the room was had; never today */
    *out = NULL;
  }
  return rc;
}

int tr__env_encode(const tr_msg_t *m, uint8_t **out, size_t *len) {
  return encode_malloc(m, 0, SIZE_MAX, 0, out, len);
}

int tr__env_encode_pb(const tr_msg_t *m, uint8_t **out, size_t *len) {
  return encode_malloc(m, 0, SIZE_MAX, 1, out, len);
}

int tr__frame_encode(const tr_msg_t *m, size_t max_frame, uint8_t **out, size_t *len) {
  return encode_malloc(m, 4, clamp_max(max_frame), 0, out, len);
}

int tr__frame_encode_with(const tr_msg_t *m, const tr_route_t *rt, size_t max_frame,
                          uint8_t *(*reserve)(void *ctx, size_t n), void *ctx, size_t *len) {
  return encode(m, rt, 4, clamp_max(max_frame), 0, reserve, ctx, len);
}

size_t tr__env_encoded_size(const tr_msg_t *m) {
  struct enc t;
  size_t n, body;
  if (hot_kind(m->body))
    return hot_size(m, NULL, &n, &body) == 0 ? n : 0;
  if (enc_build(m, NULL, &t) != 0)
    return 0;
  n = tractor__envelope__get_packed_size(&t.env);
  enc_fini(&t);
  return n;
}

/* ---- decoding --------------------------------------------------------------- */

static int rbin(tr_buf_t **dst, const ProtobufCBinaryData *b) {
  *dst = NULL;
  if (b->len == 0)
    return 0;
  return tr_buf_from(b->data, b->len, dst);
}

/* A uuid on the wire is empty (unknown: all zero) or exactly 16 bytes. */
static int ruuid(uint8_t uuid[TR_UUID_LEN], const ProtobufCBinaryData *b) {
  if (b->len == 0) {
    memset(uuid, 0, TR_UUID_LEN);
    return 0;
  }
  if (b->len != TR_UUID_LEN)
    return -TR_EPROTO;
  memcpy(uuid, b->data, TR_UUID_LEN);
  return 0;
}

static int rref(tr_uid_t *u, const Tractor__ActorRef *r) {
  int rc = ruuid(u->uuid, &r->uuid);
  if (rc == 0)
    rc = tr__dup_opt(&u->name, r->name);
  if (rc == 0)
    rc = tr__dup_opt(&u->addr, r->addr);
  return rc;
}

/* Copies a repeated string field.  Elements are kept even when empty, as
 * the header promises arrays without NULLs. */
static int rstrv(char ***dst, size_t *dst_n, char *const *v, size_t n) {
  char **a;
  if (n == 0)
    return 0;
  a = calloc(n, sizeof *a);
  if (a == NULL)
    return -TR_ENOMEM;
  /* Published before filling so that a failure midway is freed by
   * tr__envx_free: calloc left the rest NULL. */
  *dst = a;
  *dst_n = n;
  for (size_t i = 0; i < n; i++) {
    a[i] = strdup(v[i] != NULL ? v[i] : "");
    if (a[i] == NULL)
      return -TR_ENOMEM;
  }
  return 0;
}

/* Fills m from the unpacked envelope e.  On failure m may be partly filled;
 * everything it holds is reachable from it, so tr_msg_free cleans up. */
/* An ActorRef of a uuid alone (as uuid_only, for protobuf-c's tree). */
static int pb_uuid_only(const Tractor__ActorRef *r) {
  return r->uuid.len == TR_UUID_LEN && (r->name == NULL || r->name[0] == '\0') &&
         (r->addr == NULL || r->addr[0] == '\0');
}

static int from_pb(const Tractor__Envelope *e, tr_route_t *rt, tr_msg_t *m) {
  int kind = case_to_kind(e->body_case);
  struct tr_envx *x = NULL;
  int rc = 0;

  if (kind == TR_BODY_NONE)
    return -TR_EPROTO;
  m->body = (uint16_t)kind;
  m->cid = e->cid;

  /* Only bodies with fields in the union (and Cancel's flags) need an
   * envx, besides src and dst; with a route, a ref of the uuid alone goes
   * there only. */
  int src_x = e->src != NULL && !(rt && pb_uuid_only(e->src));
  int dst_x = e->dst != NULL && !(rt && pb_uuid_only(e->dst));
  if (src_x || dst_x || kind == TR_BODY_HELLO || kind == TR_BODY_SPAWN_SPEC ||
      kind == TR_BODY_START || kind == TR_BODY_ERROR || kind == TR_BODY_CANCEL ||
      kind == TR_BODY_CANCEL_ACK) {
    x = tr__envx_get(m);
    if (x == NULL)
      return -TR_ENOMEM;
  }
  if (src_x) {
    x->has_src = 1;
    if ((rc = rref(&x->src, e->src)) != 0)
      return rc;
  }
  if (dst_x) {
    x->has_dst = 1;
    if ((rc = rref(&x->dst, e->dst)) != 0)
      return rc;
  }
  if (rt) {
    if ((rt->has_src = e->src != NULL))
      memcpy(rt->src, src_x ? x->src.uuid : e->src->uuid.data, TR_UUID_LEN);
    if ((rt->has_dst = e->dst != NULL))
      memcpy(rt->dst, dst_x ? x->dst.uuid : e->dst->uuid.data, TR_UUID_LEN);
  }

  switch (kind) {
  case TR_BODY_HELLO: {
    const Tractor__Hello *h = e->hello;
    if (h->uuid.len != TR_UUID_LEN)
      return -TR_EPROTO;
    memcpy(x->u.hello.id.uuid, h->uuid.data, TR_UUID_LEN);
    x->u.hello.pid = h->pid;
    x->u.hello.is_registrar = h->is_registrar != 0;
    x->u.hello.is_probe = h->is_probe != 0;
    x->u.hello.version = h->version;
    x->u.hello.flags = h->flags;
    if (h->nonce.len != 0) {
      if (h->nonce.len != sizeof x->u.hello.nonce)
        return -TR_EPROTO;
      x->u.hello.has_nonce = 1;
      memcpy(x->u.hello.nonce, h->nonce.data, sizeof x->u.hello.nonce);
    }
    if ((rc = tr__dup_opt(&x->u.hello.id.name, h->name)) != 0 ||
        (rc = tr__dup_opt(&x->u.hello.id.addr, h->addr)) != 0 ||
        (rc = rbin(&m->payload, &h->auth_proof)) != 0)
      return rc;
    break;
  }
  case TR_BODY_SPAWN_SPEC: {
    const Tractor__SpawnSpec *s = e->spawn_spec;
    if (s->name == NULL || s->name[0] == '\0')
      return -TR_EPROTO;
    if ((rc = tr__dup_opt(&x->u.spawn_spec.name, s->name)) != 0 ||
        (rc = rstrv(&x->u.spawn_spec.ns, &x->u.spawn_spec.n_ns, s->enable_ns, s->n_enable_ns)) !=
            0 ||
        (rc = rstrv(&x->u.spawn_spec.registry, &x->u.spawn_spec.n_registry, s->registry_addrs,
                    s->n_registry_addrs)) != 0 ||
        (rc = tr__dup_opt(&x->u.spawn_spec.bind_addr, s->bind_addr)) != 0 ||
        (rc = tr__dup_opt(&x->u.spawn_spec.log_level, s->log_level)) != 0 ||
        (rc = tr__dup_opt(&x->u.spawn_spec.run_func, s->run_func)) != 0 ||
        (rc = rbin(&m->payload, &s->run_args)) != 0)
      return rc;
    x->u.spawn_spec.life_cid = s->life_cid;
    if (s->parent != NULL) {
      x->u.spawn_spec.has_parent = 1;
      if ((rc = rref(&x->u.spawn_spec.parent, s->parent)) != 0)
        return rc;
    }
    break;
  }
  case TR_BODY_START: {
    const Tractor__Start *s = e->start;
    if (s->ns == NULL || s->ns[0] == '\0' || s->func == NULL || s->func[0] == '\0')
      return -TR_EPROTO;
    if ((rc = tr__dup_opt(&x->u.start.ns, s->ns)) != 0 ||
        (rc = tr__dup_opt(&x->u.start.func, s->func)) != 0 ||
        (rc = rbin(&m->payload, &s->args)) != 0)
      return rc;
    m->u64 = (uint64_t)s->window | ((uint64_t)(s->overrun_error != 0) << 32);
    if (s->caller != NULL) {
      x->u.start.has_caller = 1;
      if ((rc = rref(&x->u.start.caller, s->caller)) != 0)
        return rc;
    }
    break;
  }
  case TR_BODY_START_ACK: {
    /* protobuf-c keeps unknown enum numbers as they are: check the range. */
    int ft = (int)e->start_ack->functype;
    if (ft < TR_FUNC_FN || ft > TR_FUNC_CONTEXT)
      return -TR_EPROTO;
    m->u64 = (uint64_t)ft;
    break;
  }
  case TR_BODY_STARTED:
    return rbin(&m->payload, &e->started->payload);
  case TR_BODY_YIELD:
    return rbin(&m->payload, &e->yield->payload);
  case TR_BODY_STOP:
    break;
  case TR_BODY_RETURN:
    return rbin(&m->payload, &e->ret->payload);
  case TR_BODY_ERROR: {
    const Tractor__Error *r = e->error;
    x->u.error.cid = r->cid;
    x->u.error.code = r->code;
    if (r->src != NULL) {
      x->u.error.has_src = 1;
      if ((rc = rref(&x->u.error.src, r->src)) != 0)
        return rc;
    }
    if (r->canceller != NULL) {
      x->u.error.has_canceller = 1;
      if ((rc = rref(&x->u.error.canceller, r->canceller)) != 0)
        return rc;
    }
    if ((rc = tr__dup_opt(&x->u.error.boxed_type, r->boxed_type)) != 0 ||
        (rc = tr__dup_opt(&x->u.error.src_type, r->src_type)) != 0 ||
        (rc = tr__dup_opt(&x->u.error.message, r->message)) != 0 ||
        (rc = tr__dup_opt(&x->u.error.trace, r->trace)) != 0)
      return rc;
    if (r->n_relay_path != 0) {
      x->u.error.relay = calloc(r->n_relay_path, sizeof *x->u.error.relay);
      if (x->u.error.relay == NULL)
        return -TR_ENOMEM;
      /* As in rstrv: counted first so that a failure frees what was made. */
      x->u.error.n_relay = r->n_relay_path;
      for (size_t i = 0; i < r->n_relay_path; i++)
        if ((rc = rref(&x->u.error.relay[i], r->relay_path[i])) != 0)
          return rc;
    }
    break;
  }
  case TR_BODY_CANCEL:
    m->u64 = e->cancel->cid;
    x->u.cancel.whole_actor = e->cancel->whole_actor != 0;
    break;
  case TR_BODY_CANCEL_ACK:
    m->u64 = e->cancel_ack->cid;
    x->u.cancel.whole_actor = e->cancel_ack->whole_actor != 0;
    x->u.cancel.acknowledged = e->cancel_ack->acknowledged != 0;
    break;
  case TR_BODY_CREDIT:
    m->u64 = e->credit->n;
    break;
  default:
    return -TR_EPROTO;
  }
  return 0;
}

/* protobuf-c's decode of data into a new message (*out). */
static int decode_pb(const uint8_t *data, size_t len, tr_route_t *rt, tr_msg_t **out) {
  static const uint8_t empty[1];
  Tractor__Envelope *e;
  tr_msg_t *m;
  int rc;

  if (data == NULL)
    data = empty;
  /* protobuf-c returns NULL both for malformed input and for a failed
   * allocation; the latter is reported as a protocol error too, which only
   * costs the connection that sent the frame. */
  e = tractor__envelope__unpack(NULL, len, data);
  if (e == NULL)
    return -TR_EPROTO;
  rc = tr_msg_new(&m);
  if (rc != 0) {
    tractor__envelope__free_unpacked(e, NULL);
    return rc;
  }
  rc = from_pb(e, rt, m);
  tractor__envelope__free_unpacked(e, NULL);
  if (rc != 0) {
    tr_msg_free(m);
    return rc;
  }
  *out = m;
  return 0;
}

int tr__env_decode(const uint8_t *data, size_t len, tr_route_t *rt, tr_msg_t **out) {
  *out = NULL;
  if (rt)
    rt->has_src = rt->has_dst = 0;
  if (data == NULL && len != 0)
    return -TR_EINVAL;
  if (len != 0) {
    tr_msg_t *m;
    int rc = tr_msg_new(&m);
    if (rc != 0)
      return rc;
    rc = hot_decode(data, len, rt, m);
    if (rc == 0) {
      *out = m;
      return 0;
    }
    tr_msg_free(m);
    if (rt)
      rt->has_src = rt->has_dst = 0;
    if (rc != HOT_PASS)
      return rc;
  }
  return decode_pb(data, len, rt, out);
}

int tr__env_decode_pb(const uint8_t *data, size_t len, tr_route_t *rt, tr_msg_t **out) {
  *out = NULL;
  if (rt)
    rt->has_src = rt->has_dst = 0;
  if (data == NULL && len != 0)
    return -TR_EINVAL;
  return decode_pb(data, len, rt, out);
}

/* ---- frames ------------------------------------------------------------------ */

void tr__frame_dec_init(tr_frame_dec_t *d, size_t max_frame) {
  memset(d, 0, sizeof *d);
  d->max_frame = clamp_max(max_frame);
}

void tr__frame_dec_fini(tr_frame_dec_t *d) {
  free(d->body);
  d->body = NULL;
  d->hdr_have = 0;
  d->have = 0;
  d->need = 0;
}

/* Ready for the next frame's header. */
static void dec_reset(tr_frame_dec_t *d) {
  free(d->body);
  d->body = NULL;
  d->hdr_have = 0;
  d->need = 0;
  d->have = 0;
}

int tr__frame_dec_feed(tr_frame_dec_t *d, const uint8_t *data, size_t len, size_t *consumed,
                       tr_route_t *rt, tr_msg_t **out) {
  size_t off = 0;
  int rc;

  *out = NULL;
  *consumed = 0;
  if (d->err != 0)
    return d->err;
  if (data == NULL && len != 0)
    return -TR_EINVAL;

  while (off < len) {
    size_t avail = len - off;

    if (d->hdr_have < 4) {
      const uint8_t *h = data + off;
      if (d->hdr_have == 0 && avail >= 4) { /* the whole header here: read in place */
        off += 4;
        d->hdr_have = 4;
      } else {
        size_t k = 4 - d->hdr_have;
        if (k > avail)
          k = avail;
        memcpy(d->hdr + d->hdr_have, data + off, k);
        d->hdr_have = (uint8_t)(d->hdr_have + k);
        off += k;
        if (d->hdr_have < 4)
          break;
        h = d->hdr;
      }
      d->need = (uint32_t)h[0] | (uint32_t)h[1] << 8 | (uint32_t)h[2] << 16 | (uint32_t)h[3] << 24;
      d->have = 0;
      /* The limit is enforced here, on the header alone, so a peer cannot
       * make us allocate more than max_frame by announcing a huge frame. */
      if (d->need == 0) {
        rc = -TR_EPROTO;
        goto poison;
      }
      if (d->need > d->max_frame) {
        rc = -TR_EMSGSIZE;
        goto poison;
      }
      continue;
    }

    if (d->body == NULL && avail >= d->need) {
      /* The whole body is in this chunk: decode it in place, no copy. */
      size_t n = d->need;
      rc = tr__env_decode(data + off, n, rt, out);
      off += n;
      dec_reset(d);
      if (rc != 0)
        goto poison;
      *consumed = off;
      return 0;
    }

    if (d->body == NULL) {
      d->body = malloc(d->need);
      if (d->body == NULL) {
        rc = -TR_ENOMEM;
        goto poison;
      }
    }
    {
      size_t k = d->need - d->have;
      if (k > avail)
        k = avail;
      memcpy(d->body + d->have, data + off, k);
      d->have += (uint32_t)k;
      off += k;
    }
    if (d->have == d->need) {
      rc = tr__env_decode(d->body, d->need, rt, out);
      dec_reset(d);
      if (rc != 0)
        goto poison;
      *consumed = off;
      return 0;
    }
  }
  *consumed = off;
  return 0;

poison:
  /* The stream has lost its framing: nothing after this point can be
   * trusted to start at a frame boundary. */
  dec_reset(d);
  d->err = rc;
  *consumed = off;
  return rc;
}
