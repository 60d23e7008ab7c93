/*
 * A socket's write queue (issue 10): messages are encoded as frames
 * straight into one growing byte buffer, in order, and written with one
 * send per flush, resuming a partial write where it stopped.  Used by the
 * channels (channel.c) and by the tests' socket relay
 * (tests/support/relay.c).
 *
 * One buffer rather than a list of frames: no allocation per message (the
 * buffer is reused, grown by doubling), and a burst of small frames leaves
 * in one system call without an iovec per frame.  A buffer grown past
 * TR_WIRE_KEEP by a burst is freed once it has drained, so an idle channel
 * holds at most that much.
 *
 * Layer: transport; the codec (schema/envelope.h) and the C library.
 */
#ifndef TR_TRANSPORT_WIRE_H
#define TR_TRANSPORT_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include <tractor/actor.h>

#include "schema/envelope.h"

#define TR_WIRE_KEEP (256u << 10) /* bytes of buffer kept once drained */

typedef struct tr_wire_q {
  uint8_t *buf;             /* malloc'd; NULL until the first frame */
  size_t head, tail, cap;   /* bytes [head, tail) are waiting */
  uint64_t queued, written; /* bytes queued / written, ever */
} tr_wire_q_t;

/* An empty queue.  Threads: its owner's. */
void tr__wire_init(tr_wire_q_t *q);

/* Encodes m as one frame (tr__frame_encode's, max_frame bounding its
 * Envelope; rt, which may be NULL, its src and dst where m's envx has none:
 * tr__frame_encode_with) at the end of the queue.  Returns 0, or
 * tr__frame_encode's error (-TR_EMSGSIZE, -TR_EPROTO, -TR_EINVAL,
 * -TR_ENOMEM), in which case the queue is as it was.  Ownership: borrows m
 * and rt.  Threads: its owner's. */
int tr__wire_push_msg(tr_wire_q_t *q, const tr_msg_t *m, const tr_route_t *rt, size_t max_frame);

/* Writes the queue to fd until it is empty or the socket is full (never
 * raises SIGPIPE).  Returns 0 (empty), -EAGAIN (full: wait for
 * EPOLLOUT), or -errno of the failed write; *wrote (may be NULL) says
 * whether any byte went out.  Threads: its owner's. */
int tr__wire_flush(tr_wire_q_t *q, int fd, int *wrote);

/* Drops everything queued and frees the buffer.  Threads: its owner's. */
void tr__wire_clear(tr_wire_q_t *q);

/* 1 when bytes are waiting. */
static inline int tr__wire_pending(const tr_wire_q_t *q) { return q->head != q->tail; }

#endif
