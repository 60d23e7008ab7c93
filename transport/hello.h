/*
 * The channel handshake's message (docs/PROTOCOL.md section 4): the Hello
 * each end sends first, and the check the other end makes of it before
 * anything is dispatched.  A failed check is a reason to close that
 * connection (logged by the channel), never a reason to disturb the
 * listener or other channels.
 *
 * Layer: transport.
 */
#ifndef TR_TRANSPORT_HELLO_H
#define TR_TRANSPORT_HELLO_H

#include <stdint.h>

#include <tractor/actor.h>

#include "schema/envelope.h"

/* The protocol version this build speaks.  A peer with another one is
 * refused: there is no negotiation yet. */
#define TR_PROTO_VERSION 1u

/* A handshake message is small: a longer frame is refused before it is
 * read. */
#define TR_HELLO_MAX (64u << 10)

/* Hello.flags: the sender is a child process connecting back to its
 * parent (the listener hands it to that child's channel); otherwise it is
 * another node (the listener hands it to the node, transport/node.h).
 * Other bits are refused. */
#define TR_HELLO_CHILD 1u

/* What one end says of itself. */
typedef struct tr_hello_info {
  tr_actor_t *node; /* the node's actor: its name and uuid (borrowed) */
  const char *name; /* or, when node is NULL, this name and uuid (borrowed) */
  const uint8_t *uuid;
  const char *addr; /* where its node listens, or NULL */
  uint8_t is_probe, is_registrar;
  uint32_t flags; /* TR_HELLO_CHILD or 0 */
} tr_hello_info_t;

/*
 * Builds the Hello message of `info` (pid = getpid(), version =
 * TR_PROTO_VERSION; no nonce or auth proof: the handshake adds them).  Returns 0 with *out,
 * or -TR_EINVAL / -TR_ENOMEM.
 * Ownership: borrows info; *out is the caller's (tr_msg_free, or sent).
 * Threads: any.
 */
int tr__hello_new(const tr_hello_info_t *info, tr_msg_t **out);

/*
 * Checks the first message a peer sent: a Hello, of this protocol
 * version, naming an actor (non-empty name, non-zero uuid) of a process
 * (pid > 0), with no flag but TR_HELLO_CHILD.  Returns 0, or -TR_EPROTO with an error object saying what
 * was wrong (the channel logs it and closes).  On success, *peer (may be
 * NULL) gets a copy of the peer's uid (tr__uid_fini it).
 * Ownership: borrows m.  Threads: any.
 */
int tr__hello_check(const tr_msg_t *m, tr_uid_t *peer);

#endif
