/*
 * The codec relay: a test transport (nng's way of running one test body
 * over every transport).  With it, every dialog a caller C opens with an
 * actor E goes through two relay ends, as it would through the two ends of
 * a transport channel:
 *
 *     caller C  <->  relay end A  <->  relay end B  <->  callee E
 *
 * A stands for E next to C, B for C next to E.  Each protocol message is
 * encoded to a frame and decoded back (schema/envelope.c) on its way from
 * one end to the other, so the engine only ever gets what a decoder can
 * rebuild: the `from` of a delivered message is the relay end that
 * delivers it, and the sender is named by the envelope (its src, which the
 * sending end writes from the local `from`, as a channel end does).
 *
 * One pair per (caller, callee), made at the caller's first dialog with
 * the callee (the engine's route hook, tr__rpc_route); it ends when either
 * actor exits (monitors), after passing on everything either sent.
 *
 * Every test executable links this file: with TR_TEST_TRANSPORT=relay in
 * the environment, a constructor installs the relay before main, so the
 * same test bodies run directly and through the relay (ctest registers the
 * dialog suites twice, the second time suffixed _relay).
 *
 * With TR_TEST_TRANSPORT=socket (ctest's *_socket), A and B are also the
 * two ends of a TCP connection on 127.0.0.1, driven by the reactor's fd
 * watches, and the messages between them go over it instead of from actor
 * to actor: each one a frame (tr__frame_encode: a 4-byte length, then the
 * Envelope), encoded into a write buffer sent in one go (transport/wire.h),
 * read until EAGAIN through tr_frame_dec.  The frame
 * carries the sender in src, as above, and "deliver with a sender" as an
 * empty dst, which the receiving end removes.  The ends' own control
 * messages (STOP, STOP_ACK, ...) stay actor messages, carrying byte counts
 * so that no data is left behind (relay.c).  A peer closing, or a socket
 * error, while the pair is not stopping is a broken channel: the local
 * side loses the peer (-TR_ECLOSED at EOF, -TR_EIO for an error).
 */
#ifndef TR_TESTS_SUPPORT_RELAY_H
#define TR_TESTS_SUPPORT_RELAY_H

#include <stdint.h>

#include <tractor/actor.h>

/* Routes every dialog through the relay from now on (call before tr_run or
 * tr_main), over sockets when TR_TEST_TRANSPORT=socket.  The environment's
 * TR_TEST_TRANSPORT=relay or =socket does it at load. */
void tr_test_relay_install(void);

/* The same, with the mode given: sockets != 0 for loopback TCP (tr-bench's
 * transport=socket lines), else actor to actor. */
void tr_test_relay_install_mode(int sockets);

/* Back to the direct way (with no runtime running). */
void tr_test_relay_uninstall(void);

/* 1 when dialogs go through the relay. */
int tr_test_relay_on(void);

/* 1 when they go through it over loopback TCP (TR_TEST_TRANSPORT=socket
 * when the relay was installed). */
int tr_test_relay_sockets(void);

/* Messages the relay has carried through the codec so far. */
uint64_t tr_test_relay_frames(void);

/*
 * Breaks every relay pair whose callee is `callee`, as a broken channel:
 * the caller's side is told it lost the callee, the callee's side that it
 * lost the caller (the engine's peer-loss entry point), with rc and cause;
 * then both ends exit.  In socket mode it shuts A's socket down
 * (SHUT_RDWR), and each end learns it from its socket (EOF), then names
 * rc and cause.  Returns the number of pairs broken.
 * Ownership: borrows both.  Threads: any, with the runtime running.
 */
int tr_test_relay_break(tr_actor_t *callee, int rc, const char *cause);

#endif
