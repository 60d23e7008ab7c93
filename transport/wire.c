/*
 * A socket's write queue (see wire.h).
 */
#include "transport/wire.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <tractor/errors.h>

#include "schema/envelope.h"

void tr__wire_init(tr_wire_q_t *q) { memset(q, 0, sizeof *q); }

/* tr__frame_encode_with's room: n more bytes at the tail.  Moves the
 * waiting bytes to the front when they fill at most half the buffer (so
 * each byte is moved O(1) times on average), else grows it. */
static uint8_t *room(void *ctx, size_t n) {
  tr_wire_q_t *q = ctx;
  if (q->cap - q->tail < n) {
    size_t live = q->tail - q->head;
    if (q->head != 0 && live <= q->cap / 2 && q->cap - live >= n) {
      memmove(q->buf, q->buf + q->head, live);
    } else {
      size_t cap = q->cap ? q->cap : 4096;
      while (cap - live < n) {
        if (cap > SIZE_MAX / 2)
          return NULL;
        cap *= 2;
      }
      uint8_t *b = malloc(cap);
      if (!b)
        return NULL;
      if (live)
        memcpy(b, q->buf + q->head, live);
      free(q->buf);
      q->buf = b;
      q->cap = cap;
    }
    q->head = 0;
    q->tail = live;
  }
  uint8_t *p = q->buf + q->tail;
  q->tail += n;
  return p;
}

int tr__wire_push_msg(tr_wire_q_t *q, const tr_msg_t *m, const tr_route_t *rt, size_t max_frame) {
  size_t len = 0, head = q->head, tail = q->tail;
  int rc = tr__frame_encode_with(m, rt, max_frame, room, q, &len);
  if (rc != 0) {
    /* Nothing of it stays (room may have moved the waiting bytes to the
     * front: their count is what it was). */
    q->tail = q->head + (tail - head);
    return rc;
  }
  q->queued += len;
  return 0;
}

int tr__wire_flush(tr_wire_q_t *q, int fd, int *wrote) {
  if (wrote)
    *wrote = 0;
  while (q->head != q->tail) {
    /* MSG_NOSIGNAL: a closed peer is EPIPE, not a SIGPIPE for the whole
     * process. */
    ssize_t k = send(fd, q->buf + q->head, q->tail - q->head, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (k < 0) {
      if (errno == EINTR)
        continue;
      return errno == EAGAIN || errno == EWOULDBLOCK ? -EAGAIN : -errno;
    }
    if (wrote)
      *wrote = 1;
    q->written += (uint64_t)k;
    q->head += (size_t)k;
  }
  q->head = q->tail = 0;
  if (q->cap > TR_WIRE_KEEP) { /* a burst's buffer: give it back */
    free(q->buf);
    q->buf = NULL;
    q->cap = 0;
  }
  return 0;
}

void tr__wire_clear(tr_wire_q_t *q) {
  free(q->buf);
  q->buf = NULL;
  q->head = q->tail = q->cap = 0;
}
