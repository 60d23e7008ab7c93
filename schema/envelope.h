/*
 * The protocol envelope (DESIGN.md section 4): its in-memory form on a
 * tr_msg_t, and the codec that turns it into the protobuf Envelope of
 * schema/tractor.proto and back, bare or in length-prefixed frames.
 *
 * In-process delivery never encodes: the dialog logic reads and writes the
 * fields below directly.  Only a channel to another process calls the codec.
 * This module is the only code that touches the protoc-c generated types,
 * so the rest of the runtime sees tr_msg_t and never protobuf-c.
 *
 * Where each body's fields live.  msg->cid is Envelope.cid for every body;
 * x_->src / x_->dst (with has_src / has_dst) are Envelope.src / dst, or a
 * channel keeps them beside the message as its route (tr_route_t).  A
 * message whose x_ is NULL has neither and has every x_ field below at its
 * zero value, so a Yield or Credit between local actors needs no x_ at all.
 *
 *   body         msg fields                x_ fields (x_->kind == body)
 *   ----------   -----------------------   --------------------------------
 *   Hello        payload = auth proof      u.hello: id (name, uuid, addr),
 *                                          pid, version, flags, is_registrar,
 *                                          is_probe, nonce (has_nonce)
 *   SpawnSpec    payload = run_args        u.spawn_spec: name, ns[n_ns],
 *                                          registry[n_registry], bind_addr,
 *                                          log_level, life_cid, parent
 *                                          (has_parent), run_func
 *   Start        payload = args,           u.start: ns, func, caller
 *                u64 = window (low 32      (has_caller)
 *                bits) | overrun_error
 *                << 32
 *   StartAck     u64 = enum tr_functype    -
 *   Started      payload                   -
 *   Yield        payload                   -
 *   Stop         -                         -
 *   Return       payload                   -
 *   Error        -                         u.error: src (has_src),
 *                                          boxed_type, src_type, message,
 *                                          trace, relay[n_relay], canceller
 *                                          (has_canceller), cid, code
 *   Cancel       u64 = target cid          u.cancel: whole_actor
 *   CancelAck    u64 = target cid          u.cancel: whole_actor,
 *                                          acknowledged
 *   Credit       u64 = n (<= UINT32_MAX)   -
 *
 * tag, ptr, from and flags_ are never encoded; a decoded message has them
 * at zero.  proto3 gives strings and bytes no presence, so the wire cannot
 * tell an empty string from an absent one: the decoder turns "" into NULL,
 * and an empty payload into payload == NULL.
 *
 * Required fields, checked by the encoder and the decoder alike (both
 * return -TR_EPROTO): a SpawnSpec carries a name; a Start an ns and a func;
 * a StartAck a functype of enum tr_functype; a Hello a uuid.  On the wire a
 * uuid is empty (unknown, decoded as all zero) or exactly 16 bytes; the
 * encoder always sends all 16, so it cannot produce a Hello without one.
 */
#ifndef TRACTOR_SCHEMA_ENVELOPE_H
#define TRACTOR_SCHEMA_ENVELOPE_H

#include <stddef.h>
#include <stdint.h>

#include "tractor/actor.h"
#include "tractor/portal.h"

/* The body kind in tr_msg_t.body.  Values are stable across versions of
 * this header but are not the protobuf field numbers (the codec maps). */
enum tr_body_kind {
  TR_BODY_NONE = 0, /* an application message: never encoded */
  TR_BODY_HELLO,
  TR_BODY_SPAWN_SPEC,
  TR_BODY_START,
  TR_BODY_START_ACK,
  TR_BODY_STARTED,
  TR_BODY_YIELD,
  TR_BODY_STOP,
  TR_BODY_RETURN,
  TR_BODY_ERROR,
  TR_BODY_CANCEL,
  TR_BODY_CANCEL_ACK,
  TR_BODY_CREDIT,
  TR_BODY__COUNT
};

/* The kind of function a Start reached, carried by StartAck in msg->u64. */
/* enum tr_functype (TR_FUNC_FN/STREAM/CONTEXT) is public, in portal.h: the
 * kinds of exported functions are the StartAck values. */

/* Bytes in an actor uuid. */
#define TR_UUID_LEN 16

/* A frame body larger than this is refused unless a channel says otherwise. */
#define TR_MAX_FRAME_DEFAULT (16u << 20)

/*
 * An actor's identity (the protobuf ActorRef).
 * Ownership: name and addr are owned C strings (malloc), NULL when absent;
 * they are freed with the envx that holds the uid.
 */
typedef struct tr_uid {
  char *name;
  uint8_t uuid[TR_UUID_LEN];
  char *addr;
} tr_uid_t;

/*
 * A frame's route: Envelope.src and .dst by uuid, kept beside a message
 * instead of in its envx.  A channel routes by them (the receiving actor,
 * the sender's proxy) and needs nothing else of them, so a Yield, a Return
 * or a StartAck crosses it without an envx on either side; the first frame
 * of an actor on a channel names it, and a named ref lives in the envx.
 * When both have a field, the envx's wins (encoding).
 */
typedef struct tr_route {
  uint8_t has_src, has_dst;
  uint8_t src[TR_UUID_LEN], dst[TR_UUID_LEN];
} tr_route_t;

/*
 * Protocol fields of a message beyond the common ones (see the table at the
 * top).  kind says which member of u is live: it equals the message's body,
 * or is TR_BODY_NONE when only src/dst are used (the union is then unused
 * and all zero).  The encoder refuses a message whose x_->kind is neither
 * (-TR_EINVAL); the decoder always sets kind to the body.
 * Ownership: every pointer is owned (malloc) by the envx; arrays of strings
 * own their elements, which are never NULL.  tr__envx_free frees it all.
 */
struct tr_envx {
  uint16_t kind;
  uint8_t has_src, has_dst;
  tr_uid_t src, dst;
  union {
    struct {
      tr_uid_t id; /* Hello.name, Hello.uuid, Hello.addr */
      int64_t pid;
      uint32_t version, flags;
      uint8_t is_registrar, is_probe;
      uint8_t has_nonce;
      uint8_t nonce[32]; /* Hello.nonce: empty or exactly 32 bytes */
    } hello;
    struct {
      char *name;
      char **ns; /* enabled namespaces */
      size_t n_ns;
      char **registry; /* registry addresses */
      size_t n_registry;
      char *bind_addr;
      char *log_level;
      uint64_t life_cid; /* the child's life dialog with its parent */
      tr_uid_t parent;   /* where the exit report goes */
      uint8_t has_parent;
      char *run_func; /* "ns.func" run once; NULL for a daemon */
    } spawn_spec;
    struct {
      /* Owned, unless names_inline: then both point into names (set by
       * tr__envx_set_start, which saves a call two allocations). */
      char *ns, *func;
      tr_uid_t caller;
      uint8_t has_caller;
      uint8_t names_inline;
      char names[64]; /* "ns\0func\0"; the union is no larger for it */
    } start;
    struct {
      tr_uid_t src; /* where the error was raised */
      uint8_t has_src, has_canceller;
      char *boxed_type, *src_type, *message, *trace;
      tr_uid_t *relay; /* relay path, in forwarding order */
      size_t n_relay;
      tr_uid_t canceller;
      uint64_t cid;
      int32_t code; /* TR_E* number, positive */
    } error;
    struct {
      uint8_t whole_actor;
      uint8_t acknowledged; /* CancelAck only */
    } cancel;
  } u;
};

/*
 * Frees x and everything it owns.  NULL is a no-op.  tr_msg_free calls it.
 * Threads: any thread.
 */
void tr__envx_free(struct tr_envx *x);

/*
 * The memory of envxs (runtime/mem/msgpool.c): alloc returns a zeroed
 * envx, or NULL when out of memory; release takes back one whose owned
 * strings and arrays are already freed (tr__envx_free does that first).  On
 * a worker thread they go through the worker's small cache, elsewhere
 * straight to calloc and free.
 * Ownership: alloc's result is the caller's until release.  Threads: any.
 */
struct tr_envx *tr__envx_alloc(void);
void tr__envx_release(struct tr_envx *x);

/*
 * Returns m->x_, first allocating a zeroed one when m has none, and sets
 * its kind to m->body when it had none (so set m->body first).  An envx
 * already claimed by another kind is returned unchanged: the encoder will
 * refuse the message.  Returns NULL only when the allocation fails.
 * Ownership: the envx belongs to m.  Threads: the thread that owns m.
 */
struct tr_envx *tr__envx_get(tr_msg_t *m);

/*
 * Sets a Start's ns and func (copies; both must be non-empty to encode),
 * inside the envx when they fit, else allocated.  Returns 0 or -TR_ENOMEM
 * (then both are NULL).
 * Ownership: borrows ns and func; the envx owns the copies.
 * Threads: the thread that owns the envx.
 */
int tr__envx_set_start(struct tr_envx *x, const char *ns, const char *func);
/* The same with lengths: ns and func need no terminating NUL (and must
 * hold none within their lengths). */
int tr__envx_set_start_n(struct tr_envx *x, const char *ns, size_t nlen, const char *func,
                         size_t flen);

/*
 * Deep-copies src into dst (dst's previous contents are not freed).
 * Returns 0 or -TR_ENOMEM, in which case dst is left empty (all zero).
 * Ownership: the caller owns dst's strings.  Threads: any thread.
 */
int tr__uid_copy(tr_uid_t *dst, const tr_uid_t *src);

/* Frees u's strings and zeroes it.  Threads: any thread. */
void tr__uid_fini(tr_uid_t *u);

/*
 * Copies s into *dst; NULL and "" both become NULL (proto3 cannot tell
 * them apart, and NULL is the cheaper one to keep).  Returns 0 or
 * -TR_ENOMEM (*dst NULL).
 * Ownership: the caller owns *dst (free).  Threads: any thread.
 */
int tr__dup_opt(char **dst, const char *s);

/*
 * The protocol name of a body kind ("Hello", "StartAck", ...), "None" for
 * TR_BODY_NONE and "Unknown" otherwise.
 * Ownership: static string.  Threads: any thread.
 */
const char *tr__body_name(int kind);

/*
 * Encodes m as a protobuf Envelope.  Returns 0, -TR_EPROTO (body 0, an
 * unknown kind or a required field missing), -TR_EINVAL (x_->kind does not
 * match the body, a NULL string in an array, a Credit above UINT32_MAX) or
 * -TR_ENOMEM.
 * Ownership: borrows m; on success *out is malloc'd (free it with free())
 * and holds *len bytes.  On failure *out is NULL and *len 0.
 * Threads: any thread, as long as nobody writes m meanwhile.
 */
int tr__env_encode(const tr_msg_t *m, uint8_t **out, size_t *len);

/*
 * tr__env_encode and tr__env_decode through protobuf-c alone, for the
 * tests that compare it with the hand-written path of the hot bodies (see
 * envelope.c); same contract.
 */
int tr__env_encode_pb(const tr_msg_t *m, uint8_t **out, size_t *len);
int tr__env_decode_pb(const uint8_t *data, size_t len, tr_route_t *rt, tr_msg_t **out);

/*
 * The number of bytes tr__env_encode would produce, or 0 when m cannot be
 * encoded (an encoded Envelope is never empty: it always has a body).
 * Threads: as tr__env_encode.
 */
size_t tr__env_encoded_size(const tr_msg_t *m);

/*
 * Decodes one protobuf Envelope (without a frame header) into a new message
 * made with tr_msg_new.  Returns 0, -TR_EPROTO (not an Envelope, no known
 * body, a required field missing, a bad uuid or functype) or -TR_ENOMEM.
 * The input is untrusted: any bytes are safe.
 * rt: NULL, or where the Envelope's src and dst go as a route (tr_route_t:
 * every present one's uuid; a ref of a uuid alone goes only there, one with
 * a name or an address into the envx too); without it they go into the envx.
 * Ownership: borrows data; on success the caller owns *out (tr_msg_free).
 * On failure *out is NULL and nothing is left allocated.
 * Threads: any thread.
 */
int tr__env_decode(const uint8_t *data, size_t len, tr_route_t *rt, tr_msg_t **out);

/*
 * Encodes m as one frame: a 4-byte little-endian length, then the Envelope.
 * max_frame bounds the Envelope (not the header); 0 means
 * TR_MAX_FRAME_DEFAULT.  Returns as tr__env_encode, or -TR_EMSGSIZE when the
 * Envelope is larger than max_frame.
 * Ownership: as tr__env_encode; *len includes the 4 header bytes.
 * Threads: as tr__env_encode.
 */
int tr__frame_encode(const tr_msg_t *m, size_t max_frame, uint8_t **out, size_t *len);

/*
 * tr__frame_encode into room of the caller's: reserve(ctx, n) returns n
 * writable bytes (or NULL: -TR_ENOMEM), asked for once the frame's length
 * is known and the message checked, so a failure before that asks for
 * none.  On success the frame is in those bytes and *len == n.  Returns as
 * tr__frame_encode.  A socket's write queue (transport/wire.h) uses it to
 * encode straight into its buffer.  rt (may be NULL): the src and dst of a
 * message whose envx has none (tr_route_t).
 * Ownership: borrows m; the room is the caller's.  Threads: as
 * tr__env_encode.
 */
int tr__frame_encode_with(const tr_msg_t *m, const tr_route_t *rt, size_t max_frame,
                          uint8_t *(*reserve)(void *ctx, size_t n), void *ctx, size_t *len);

/*
 * A streaming frame decoder for a byte stream such as a TCP connection.
 * Fields are private to envelope.c.
 */
typedef struct tr_frame_dec {
  size_t max_frame;
  uint8_t hdr[4];
  uint8_t hdr_have; /* header bytes received, 0..4 */
  uint32_t need;    /* body length, valid once hdr_have == 4 */
  uint32_t have;    /* body bytes received into body */
  uint8_t *body;    /* NULL until a body must be reassembled across feeds */
  int err;          /* 0, or the error that poisoned the decoder */
} tr_frame_dec_t;

/*
 * Prepares d for a new stream.  max_frame bounds each frame's Envelope; 0
 * means TR_MAX_FRAME_DEFAULT, and values above UINT32_MAX are clamped since
 * the header cannot express more.
 * Ownership: d is the caller's; call tr__frame_dec_fini when done.
 * Threads: a decoder is used by one thread at a time.
 */
void tr__frame_dec_init(tr_frame_dec_t *d, size_t max_frame);

/*
 * Feeds len bytes of the stream.  Consumes bytes until one message is
 * complete, then returns 0 with *out set and *consumed the bytes used (the
 * caller feeds the rest again); or, when the input runs out first, returns
 * 0 with *out NULL and *consumed == len.  Errors: -TR_EMSGSIZE (a length
 * above max_frame, detected from the header alone, before any allocation),
 * -TR_EPROTO (a zero length, or a body that does not decode), -TR_ENOMEM.
 * An error poisons the decoder: every later feed returns the same error
 * with *consumed 0, since the stream has lost its framing.  rt: as for
 * tr__env_decode, filled for the message returned.
 * Ownership: borrows data (nothing points into it after the call); the
 * caller owns *out (tr_msg_free).
 * Threads: as tr__frame_dec_init.
 */
int tr__frame_dec_feed(tr_frame_dec_t *d, const uint8_t *data, size_t len, size_t *consumed,
                       tr_route_t *rt, tr_msg_t **out);

/* Whether d is inside a frame (part of its header or body fed): an EOF
 * now cuts a frame short.  Threads: as tr__frame_dec_init. */
static inline int tr__frame_dec_mid(const tr_frame_dec_t *d) { return d->hdr_have > 0; }

/* Frees a partly received frame, if any.  d may be reused after
 * tr__frame_dec_init.  Threads: as tr__frame_dec_init. */
void tr__frame_dec_fini(tr_frame_dec_t *d);

#endif
