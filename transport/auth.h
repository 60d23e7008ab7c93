/*
 * Authenticated handshakes (issue 11; docs/PROTOCOL.md section 4.1): the
 * process's channel key, and the three-message exchange every connection
 * makes before anything on it is dispatched.
 *
 *   initiator -> responder   Hello{id_i, nonce_i}
 *   responder -> initiator   Hello{id_r, nonce_r, proof_r}
 *   initiator -> responder   Hello{id_i, proof_i}          (the confirmation)
 *
 *   proof_x = HMAC-SHA-512-256(key, label_x || nonce_i || nonce_r || uuid_i || uuid_r)
 *
 * label_x says which end made the proof, so one end's proof is never a
 * valid answer for the other; nonces are 32 fresh random bytes per
 * connection and end, so a recorded proof is worthless on any other
 * connection (a replay).  Proofs are compared in constant time
 * (libsodium's crypto_auth_verify).  The key is derived from the secret
 * (BLAKE2b, keyed by a fixed label), never sent.  Without a secret the
 * exchange is the first two messages, with neither nonce nor proof; a peer
 * that offers or asks for authentication when this end has none (or the
 * reverse) is refused, so a mis-configured pair fails at once and says why.
 *
 * Where the key comes from (tr__auth_setup, when a runtime starts): a
 * child process's parent hands it over in TR_AUTH_KEY (hex; empty: none),
 * so a child always matches its parent; otherwise the environment variable
 * TR_SECRET, then tr_config_t.secret, then the contents of the file named
 * by TR_SECRET_FILE (a trailing newline dropped).
 *
 * What it protects and what not: docs/OPERATIONS.md ("Trust").
 *
 * Layer: transport (libsodium, the codec).
 */
#ifndef TR_TRANSPORT_AUTH_H
#define TR_TRANSPORT_AUTH_H

#include <stddef.h>
#include <stdint.h>

#include <tractor/actor.h>

#include "schema/envelope.h"

#define TR_AUTH_NONCE 32
#define TR_AUTH_PROOF 32
/* The variable a parent hands its key to a child process in. */
#define TR_AUTH_KEY_ENV "TR_AUTH_KEY"

/*
 * Resolves this process's key (see above) for the runtime about to start.
 * Returns 0 (with or without a key), or -TR_EINVAL with an error object
 * (TR_SECRET_FILE unreadable or empty, TR_AUTH_KEY malformed) or
 * -TR_ENOMEM.  Threads: tr_run's, before any worker runs.
 */
int tr__auth_setup(const tr_config_t *cfg);

/* Forgets the key (zeroed).  Threads: tr_run's, after every worker has
 * stopped. */
void tr__auth_clear(void);

/* 1 when this process has a key: every handshake is authenticated. */
int tr__auth_on(void);

/* The environment entry a child process gets: "TR_AUTH_KEY=<hex>", or
 * "TR_AUTH_KEY=" without a key.  len >= 16 + 2 * 32.  Threads: any. */
void tr__auth_child_env(char *buf, size_t len);

/* One end's state in one handshake (zeroed by the caller first). */
typedef struct tr_hs {
  uint8_t on;
  uint8_t nonce_i[TR_AUTH_NONCE], nonce_r[TR_AUTH_NONCE];
  uint8_t uuid_i[TR_UUID_LEN], uuid_r[TR_UUID_LEN];
} tr_hs_t;

/*
 * Initiator, before its Hello goes: adds a fresh nonce to it (with a key).
 * Ownership: borrows both.  Threads: any.
 */
void tr__hs_offer(tr_hs_t *hs, tr_msg_t *my_hello);

/*
 * Responder, given the initiator's Hello (checked by tr__hello_check):
 * adds a fresh nonce and its proof to my_hello.  Returns 0, or -TR_EPERM
 * with an error object (the peer sent no nonce and this end has a key, or
 * the reverse; my_hello is then still worth sending before the close: its
 * initiator learns why, as tr__hs_confirm's error) or -TR_ENOMEM.
 * Ownership: borrows all.  Threads: any.
 */
int tr__hs_answer(tr_hs_t *hs, const tr_msg_t *peer_hello, tr_msg_t *my_hello);

/*
 * Initiator, given the responder's Hello (checked): verifies its proof and
 * makes the confirmation to send (*confirm NULL without a key: the
 * exchange is over).  Returns 0, or -TR_EPERM with an error object (a
 * missing or wrong proof: another secret, or none) or -TR_ENOMEM.
 * Ownership: borrows all; *confirm is the caller's.  Threads: any.
 */
int tr__hs_confirm(tr_hs_t *hs, const tr_msg_t *peer_hello, tr_msg_t **confirm);

/*
 * Responder, given the initiator's third message: a Hello of the same
 * actor carrying proof_i.  Returns 0, or -TR_EPERM with an error object
 * saying what was wrong.  Ownership: borrows all.  Threads: any.
 */
int tr__hs_verify(const tr_hs_t *hs, const tr_msg_t *confirm);

/*
 * The initiator's whole exchange on a connected socket (blocking or not),
 * bounded by deadline (tr_now() clock): sends my_hello (after
 * tr__hs_offer), reads the responder's Hello (exactly its bytes, no
 * more: what follows belongs to the channel), checks it, verifies its
 * proof and sends the confirmation.  Returns 0 with *peer (the
 * responder's Hello: tr_msg_free), or -TR_EIO (the connection failed,
 * closed or timed out, or the answer was no valid Hello) or -TR_EPERM (the
 * authentication failed), with the reason in why (no error object: it may
 * run on a thread outside the runtime).
 * Ownership: borrows my_hello; *peer is the caller's.  Threads: any.
 */
int tr__hs_initiate(int fd, tr_msg_t *my_hello, int64_t deadline, tr_msg_t **peer, char *why,
                    size_t why_len);

/*
 * Reads exactly one frame of at most TR_HELLO_MAX bytes from fd (blocking
 * or not; nothing past its end), waiting until deadline (tr_now() clock).
 * Returns 0 with *out (tr_msg_free), or -TR_EIO with the reason in why
 * (closed, timed out, not a frame).  Ownership: *out is the caller's.
 * Threads: any.
 */
int tr__hs_read_frame(int fd, int64_t deadline, tr_msg_t **out, char *why, size_t why_len);

/*
 * How many bytes the handshake may read next from a socket without eating
 * into the frame after the current one: the rest of the current frame.
 * Threads: the decoder's.
 */
size_t tr__hs_read_max(const tr_frame_dec_t *d);

#endif
