/*
 * tr_buf_t: reference-counted immutable bytes (see include/tractor/buf.h).
 *
 * One allocation holds the header and the bytes (a flexible array), so a
 * payload costs one malloc (none for a small one: BUF_SMALL) and its data
 * sits next to its count.  The count
 * uses the compiler's __atomic builtins rather than ck_pr: ck_pr's volatile
 * accesses are invisible to ThreadSanitizer, which would then report the
 * free after the last release as a race with every earlier reader.
 */
#include "tractor/buf.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <protobuf-c/protobuf-c.h>

#include "tractor/errors.h"

#include "runtime/mem/msgpool.h"

#include "runtime/error/error.h"

struct tr_buf {
  uint32_t refs;
  size_t len;
  /* max_align_t alignment lets callers store any type in a new buffer. */
  _Alignas(max_align_t) unsigned char data[];
};

/* Up to this many bytes a buffer is a small one: a TR_BUF_CHUNK-byte
 * object of the worker's magazines (runtime/mem/msgpool.c), which a
 * producer's buffers freed by its consumer reach again without malloc. */
#define BUF_SMALL (TR_BUF_CHUNK - offsetof(struct tr_buf, data))

int tr_buf_new(size_t len, tr_buf_t **out) {
  tr_buf_t *b;
  if (out == NULL)
    return TR__EINVAL_NULL();
  *out = NULL;
  if (len > SIZE_MAX - sizeof *b)
    return TR__ENOMEM();
  b = len <= BUF_SMALL ? tr__mem_alloc(TR_MEM_BUF) : malloc(sizeof *b + len);
  if (b == NULL)
    return TR__ENOMEM();
  /* Not yet shared: a plain store is enough, and the hand-off to another
   * thread (a queue push) publishes it. */
  b->refs = 1;
  b->len = len;
  *out = b;
  return 0;
}

int tr_buf_from(const void *data, size_t len, tr_buf_t **out) {
  int rc;
  if (out == NULL)
    return TR__EINVAL_NULL(); /* named here, not as tr_buf_new's */
  *out = NULL;
  if (data == NULL && len != 0)
    return TR__EINVAL_NULL();
  rc = tr_buf_new(len, out);
  if (rc == 0 && len != 0)
    memcpy((*out)->data, data, len);
  return rc;
}

int tr_buf_from_str(const char *s, tr_buf_t **out) {
  if (s == NULL) {
    if (out != NULL)
      *out = NULL;
    return TR__EINVAL_NULL();
  }
  return tr_buf_from(s, strlen(s), out);
}

int tr_buf_from_u64(uint64_t v, tr_buf_t **out) {
  uint8_t le[8];
  for (int i = 0; i < 8; i++)
    le[i] = (uint8_t)(v >> (8 * i));
  return tr_buf_from(le, sizeof le, out);
}

int tr_buf_to_u64(const tr_buf_t *b, uint64_t *out) {
  uint64_t v = 0;
  if (out == NULL)
    return TR__EINVAL_NULL();
  if (b == NULL || b->len != 8)
    return TR_ERROR(-TR_EMSGTYPE, "tr_buf_to_u64: a %zu-byte value is not a u64", b ? b->len : 0);
  for (int i = 7; i >= 0; i--)
    v = v << 8 | b->data[i];
  *out = v;
  return 0;
}

tr_buf_t *tr_buf_ref(tr_buf_t *b) {
  if (b != NULL) {
    /* Relaxed: the caller already holds a reference, so the buffer cannot
     * be freed concurrently; the release in tr_buf_release orders the
     * final decrement after every use. */
    __atomic_fetch_add(&b->refs, 1, __ATOMIC_RELAXED);
  }
  return b;
}

void tr_buf_release(tr_buf_t *b) {
  if (b == NULL)
    return;
  /* Acq-rel pairs with the other holders' decrements: their release makes
   * their last reads of the bytes happen before the acquire of whoever
   * drops the count to zero and frees.  A standalone acquire fence would
   * be cheaper on the non-final path but TSan does not model fences. */
  if (__atomic_fetch_sub(&b->refs, 1, __ATOMIC_ACQ_REL) == 1) {
    if (b->len <= BUF_SMALL)
      tr__mem_free(TR_MEM_BUF, b);
    else
      free(b);
  }
}

const void *tr_buf_data(const tr_buf_t *b) { return b != NULL ? b->data : NULL; }

size_t tr_buf_len(const tr_buf_t *b) { return b != NULL ? b->len : 0; }

void *tr_buf_wdata(tr_buf_t *b) { return b != NULL ? b->data : NULL; }

int tr_buf_pack(const struct ProtobufCMessage *msg, tr_buf_t **out) {
  tr_buf_t *b;
  size_t n;
  int rc;
  if (out == NULL)
    return TR__EINVAL_NULL();
  *out = NULL;
  if (msg == NULL)
    return TR__EINVAL_NULL();
  n = protobuf_c_message_get_packed_size(msg);
  rc = tr_buf_new(n, &b);
  if (rc != 0)
    return rc;
  protobuf_c_message_pack(msg, b->data);
  *out = b;
  return 0;
}

int tr_buf_unpack(const tr_buf_t *b, const struct ProtobufCMessageDescriptor *desc,
                  struct ProtobufCMessage **out) {
  static const uint8_t empty[1];
  if (out == NULL)
    return TR__EINVAL_NULL();
  *out = NULL;
  if (desc == NULL)
    return TR__EINVAL_NULL();
  /* A NULL buffer is the empty message: valid protobuf for any type whose
   * fields are all optional, as in proto3. */
  *out = protobuf_c_message_unpack(desc, NULL, tr_buf_len(b), b != NULL ? b->data : empty);
  /* protobuf-c returns NULL for a failed allocation as well; both mean the
   * caller did not get its message, and the header promises one code. */
  if (*out == NULL)
    return TR_ERROR(-TR_EMSGTYPE, "%zu bytes do not decode as %s (or out of memory)",
                    b ? b->len : 0, desc->name);
  return 0;
}
