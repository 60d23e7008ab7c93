/*
 * tr_buf_t: reference-counted, immutable byte buffers.  Message payloads
 * travel between actors as tr_buf_t so in-process delivery never copies.
 *
 * A buffer is writable only by its creator, before it is shared: fill it
 * through tr_buf_wdata() right after tr_buf_new(), then treat it as
 * immutable.  Reference counting is atomic, so any thread may hold and
 * release references.
 */
#ifndef TRACTOR_BUF_H
#define TRACTOR_BUF_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tr_buf tr_buf_t;

/*
 * Allocates a buffer of len bytes (contents undefined) with one reference.
 * Returns 0, or -TR_ENOMEM.
 * Ownership: *out holds one reference, released with tr_buf_release.  On
 * failure *out is set to NULL.
 * Threads: any thread.
 */
int tr_buf_new(size_t len, tr_buf_t **out);

/* Allocates a buffer holding a copy of data[0..len).  As tr_buf_new. */
int tr_buf_from(const void *data, size_t len, tr_buf_t **out);

/* Copies the NUL-terminated string s (without its NUL).  As tr_buf_new. */
int tr_buf_from_str(const char *s, tr_buf_t **out);

/* Encodes v as 8 little-endian bytes.  As tr_buf_new. */
int tr_buf_from_u64(uint64_t v, tr_buf_t **out);

/*
 * Decodes a buffer made by tr_buf_from_u64.  Returns 0, or -TR_EMSGTYPE
 * when the buffer is not exactly 8 bytes long (NULL, the empty value, is
 * 0 bytes long: -TR_EMSGTYPE too).
 * Ownership: borrows b.  Threads: any thread.
 */
int tr_buf_to_u64(const tr_buf_t *b, uint64_t *out);

/*
 * Adds a reference and returns b (NULL is passed through).
 * Ownership: the caller owns the new reference.  Threads: any thread.
 */
tr_buf_t *tr_buf_ref(tr_buf_t *b);

/*
 * Drops a reference; the last one frees the buffer.  NULL is a no-op.
 * Threads: any thread.
 */
void tr_buf_release(tr_buf_t *b);

/* The bytes and their count.  Ownership: borrowed from b, valid while a
 * reference is held.  Threads: any thread. */
const void *tr_buf_data(const tr_buf_t *b);
size_t tr_buf_len(const tr_buf_t *b);

/* Writable view for the creator, before the buffer is shared. */
void *tr_buf_wdata(tr_buf_t *b);

/* Forward declarations so that this header does not require protobuf-c. */
struct ProtobufCMessage;
struct ProtobufCMessageDescriptor;

/*
 * Packs a protobuf-c message into a new buffer.  Returns 0, -TR_EINVAL
 * (NULL message) or -TR_ENOMEM.
 * Ownership: borrows msg; *out as tr_buf_new.  Threads: any thread.
 */
int tr_buf_pack(const struct ProtobufCMessage *msg, tr_buf_t **out);

/*
 * Unpacks b as a message of type desc.  Returns 0, or -TR_EMSGTYPE when the
 * bytes do not decode as that type (protobuf-c reports running out of
 * memory the same way, so that is -TR_EMSGTYPE too, and the message says
 * so), with an error object; -TR_EINVAL for a NULL desc or out.
 * Ownership: *out is owned by the caller and freed with
 * protobuf_c_message_free_unpacked(*out, NULL); NULL on failure.
 * Threads: any thread.
 */
int tr_buf_unpack(const tr_buf_t *b, const struct ProtobufCMessageDescriptor *desc,
                  struct ProtobufCMessage **out);

#ifdef __cplusplus
}
#endif
#endif
