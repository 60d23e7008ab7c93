/*
 * A socket's write queue of frames (see wire.h).
 */
#include "transport/wire.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/socket.h>

#include <tractor/errors.h>

void tr__wire_init(tr_wire_q_t *q) {
  q->head = NULL;
  q->tail = &q->head;
  q->head_off = 0;
  q->queued = q->written = 0;
}

int tr__wire_push(tr_wire_q_t *q, uint8_t *buf, size_t len) {
  tr_wire_frame_t *f = malloc(sizeof *f);
  if (!f) {
    free(buf);
    return -TR_ENOMEM;
  }
  f->next = NULL;
  f->len = len;
  f->buf = buf;
  *q->tail = f;
  q->tail = &f->next;
  q->queued += len;
  return 0;
}

int tr__wire_flush(tr_wire_q_t *q, int fd, int *wrote) {
  if (wrote)
    *wrote = 0;
  while (q->head) {
    struct iovec iov[TR_WIRE_BATCH];
    int n = 0;
    for (tr_wire_frame_t *f = q->head; f && n < TR_WIRE_BATCH; f = f->next, n++) {
      size_t off = n == 0 ? q->head_off : 0;
      iov[n].iov_base = f->buf + off;
      iov[n].iov_len = f->len - off;
    }
    /* sendmsg rather than writev: MSG_NOSIGNAL, so a closed peer is EPIPE
     * and not a SIGPIPE for the whole process. */
    struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)n};
    ssize_t k = sendmsg(fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (k < 0) {
      if (errno == EINTR)
        continue;
      return errno == EAGAIN || errno == EWOULDBLOCK ? -EAGAIN : -errno;
    }
    if (wrote)
      *wrote = 1;
    q->written += (uint64_t)k;
    size_t left = (size_t)k;
    while (q->head && left >= q->head->len - q->head_off) {
      tr_wire_frame_t *f = q->head;
      left -= f->len - q->head_off;
      q->head = f->next;
      q->head_off = 0;
      free(f->buf);
      free(f);
    }
    q->head_off += left;
  }
  q->tail = &q->head;
  return 0;
}

void tr__wire_clear(tr_wire_q_t *q) {
  while (q->head) {
    tr_wire_frame_t *f = q->head;
    q->head = f->next;
    free(f->buf);
    free(f);
  }
  q->tail = &q->head;
  q->head_off = 0;
}
