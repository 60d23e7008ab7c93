/*
 * The process's listener for its child processes (issue 10): one TCP
 * listening socket on 127.0.0.1 (a port of the kernel's choice), alive
 * while the process has process children, to which every child connects
 * back.  The listener reads each new connection's first frame, which must
 * be a Hello (transport/hello.h) naming the pid of a child being started;
 * it then hands the socket to that child's channel (channel.c).  Anything
 * else closes that one connection with a logged reason: garbage, a frame
 * longer than allowed (refused before any allocation), another protocol
 * version, an unknown pid, bytes after the Hello (a child says nothing
 * more until its parent's Hello), or silence past the handshake timeout.
 * The listener and the other connections go on.
 *
 * Layer: transport.
 */
#ifndef TR_TRANSPORT_LISTEN_H
#define TR_TRANSPORT_LISTEN_H

#include <stddef.h>
#include <sys/types.h>

#include <tractor/actor.h>

/*
 * Takes a reference on the listener, starting it when there is none, and
 * writes its address ("127.0.0.1:port") into addr.  Returns 0, or -TR_EIO
 * / -TR_ENOMEM with an error object.  Threads: a turn or task.
 */
int tr__listen_acquire(char *addr, size_t len);

/* Expects a connection from process pid, for channel `chan` (which gets
 * C_ADOPT with the socket in u64; a reference is kept until then).
 * Threads: any, after tr__listen_acquire. */
void tr__listen_expect(pid_t pid, tr_actor_t *chan, uint32_t adopt_tag);

/* Drops the reference (and pid's expectation, if still pending); the last
 * one stops the listener.  Threads: any. */
void tr__listen_release(pid_t pid);

/* The listener's address now, for tests: 0, or -TR_ENOTFOUND (none). */
int tr__listen_addr(char *addr, size_t len);

/* Connections the listener has refused so far (for tests). */
uint64_t tr__listen_refused(void);

#endif
