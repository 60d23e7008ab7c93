/*
 * A socket's write queue of frames (issue 10): frames are queued in order
 * and written in batches, one sendmsg for up to TR_WIRE_BATCH of them,
 * resuming a partial write where it stopped.  Used by the channels
 * (channel.c) and by the tests' socket relay (tests/support/relay.c).
 *
 * Layer: transport; only the C library.
 */
#ifndef TR_TRANSPORT_WIRE_H
#define TR_TRANSPORT_WIRE_H

#include <stddef.h>
#include <stdint.h>

#define TR_WIRE_BATCH 64 /* frames per sendmsg */

typedef struct tr_wire_frame {
  struct tr_wire_frame *next;
  size_t len;
  uint8_t *buf; /* malloc'd (tr__frame_encode's) */
} tr_wire_frame_t;

typedef struct tr_wire_q {
  tr_wire_frame_t *head, **tail;
  size_t head_off;          /* bytes of head already written */
  uint64_t queued, written; /* bytes queued / written, ever */
} tr_wire_q_t;

/* An empty queue.  Threads: its owner's. */
void tr__wire_init(tr_wire_q_t *q);

/* Queues buf (len bytes, malloc'd; the queue frees it once written).
 * Returns 0 or -TR_ENOMEM (buf is then freed).  Threads: its owner's. */
int tr__wire_push(tr_wire_q_t *q, uint8_t *buf, size_t len);

/* Writes the queue to fd until it is empty or the socket is full (never
 * raises SIGPIPE).  Returns 0 (empty), -EAGAIN (full: wait for
 * EPOLLOUT), or -errno of the failed write; *wrote (may be NULL) says
 * whether any byte went out.  Threads: its owner's. */
int tr__wire_flush(tr_wire_q_t *q, int fd, int *wrote);

/* Frees every queued frame.  Threads: its owner's. */
void tr__wire_clear(tr_wire_q_t *q);

/* 1 when frames are waiting. */
static inline int tr__wire_pending(const tr_wire_q_t *q) { return q->head != NULL; }

#endif
