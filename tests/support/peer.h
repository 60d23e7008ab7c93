/*
 * A peer node by hand, for the tests that play a peer of the node under
 * test that misbehaves on purpose (floods, never reads, names actors that
 * do not exist): a plain blocking socket to the node's listener (the
 * registry address of the test, testing.h), the real handshake, and frames
 * encoded by the real codec.  Runs on any thread (the tests use
 * tr_to_thread or a pthread of their own).
 */
#ifndef TR_TESTS_SUPPORT_PEER_H
#define TR_TESTS_SUPPORT_PEER_H

#include <stddef.h>
#include <stdint.h>

#include <tractor/actor.h>

#include "schema/envelope.h"

/* A made-up actor uuid for the peer, from seed (me[i] = seed ^ i). */
void tr_test_peer_uuid(uint8_t seed, uint8_t me[TR_UUID_LEN]);

/* A socket connected to the node at TR_REGISTRY_ADDR, with receives bounded
 * to 5 s (a node that keeps the line open fails the test), or -1. */
int tr_test_peer_connect(void);

/* Dials like tr_test_peer_connect, with a receive buffer of rcvbuf bytes
 * unless 0 and sends bounded to 10 s, and handshakes as `name` with uuid
 * me.  Returns the handshake's result (0, or -1 when the dial failed) with
 * *fd (-1 or a socket the caller closes), the reason in why. */
int tr_test_peer_dial(const char *name, const uint8_t me[TR_UUID_LEN], int rcvbuf, int *fd,
                      char *why, size_t len);

/* As tr_test_peer_dial, with a Hello that names addr as where this peer
 * listens (NULL: none). */
int tr_test_peer_dial_at(const char *name, const uint8_t me[TR_UUID_LEN], const char *addr,
                         int rcvbuf, int *fd, char *why, size_t len);

/* All of p, or -1. */
int tr_test_peer_send_all(int fd, const uint8_t *p, size_t len);

/* m as one frame (takes m): 0 or -1. */
int tr_test_peer_send(int fd, tr_msg_t *m);

/* The next frame from the node, or NULL (closed, 5 s late, or bad).  The
 * caller frees it. */
tr_msg_t *tr_test_peer_read(int fd);

/* A Start of dialog cid from `me` to an actor nobody has (NULL: out of
 * memory).  The caller owns it. */
tr_msg_t *tr_test_peer_start_to_nobody(const uint8_t me[TR_UUID_LEN], uint64_t cid);

#endif
