/*
 * The process's listener (issue 10; the node's since issue 11): one TCP
 * listening socket, on 127.0.0.1 (a port of the kernel's choice) for a
 * process that only has child processes, or on the node address
 * (transport/node.h), alive while someone holds a reference.  Every child
 * connects back to it, and other nodes connect to it.  The listener reads
 * each new connection's first frame, which must be a Hello
 * (transport/hello.h).  One flagged TR_HELLO_CHILD must name the pid of a
 * child being started: the socket goes to that child's channel
 * (channel.c).  Any other goes to the node (tr__node_accept).  Anything
 * else closes that one connection with a logged reason: garbage, a frame
 * longer than allowed (refused before any allocation), another protocol
 * version, an unknown pid, bytes after the Hello (a child says nothing
 * more until its parent's Hello), or silence past the handshake timeout.
 * The listener and the other connections go on.
 *
 * Running out of fds or memory (accept4 fails with EMFILE, ENFILE, ENOBUFS
 * or ENOMEM) does not make the listener spin on the connection left in the
 * backlog: it logs once and tries again every 100 ms until the shortage
 * ends; the connections wait in the kernel's backlog meanwhile.
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

/*
 * As tr__listen_acquire, but a listener started now binds `where`
 * ("host:port", port 0: the kernel's choice; NULL: 127.0.0.1:0).  With a
 * listener already running, `where` is not looked at.  Returns 0, or
 * -TR_EBUSY (the address is in use), -TR_EINVAL (not an address), -TR_EIO
 * or -TR_ENOMEM, with an error object.  Threads: a turn or task.
 */
int tr__listen_bind(const char *where, char *addr, size_t len);

/* Parses "a.b.c.d:port" (or "host" alone: port 0; "localhost" is
 * 127.0.0.1) into sa.  Returns 0 or -TR_EINVAL with an error object.
 * Threads: any. */
struct sockaddr_in;
int tr__addr_parse(const char *text, struct sockaddr_in *sa);

/* Whether connected socket fd reached itself: a connect to a port of this
 * host where nothing listens may be given that very port as its own
 * (ephemeral) one, and then TCP's simultaneous open connects the socket to
 * itself.  It means "refused": the kernel hands out no port a listener
 * holds.  1 or 0 (0 too when fd's addresses cannot be read). */
int tr__sock_self_connected(int fd);

/* Expects a connection from process pid, for channel `chan` (which gets
 * C_ADOPT with the socket in u64; a reference is kept until then).  The
 * socket is then "in flight" until the channel takes it with
 * tr__listen_adopted; one it never takes (the channel exited first, and
 * the message was dropped) is closed by the channel's tr__listen_release.
 * Threads: any, after tr__listen_acquire. */
void tr__listen_expect(pid_t pid, tr_actor_t *chan, uint32_t adopt_tag);

/*
 * The channel of process pid takes the socket fd its C_ADOPT message
 * carried: the first thing its turn does with that message.  Returns 0:
 * fd is the channel's from now on (to close); -1: it is not, because its
 * record is gone (released, or never there), so the caller must not use
 * or close fd, whose number may belong to someone else by now.
 * Ownership: on 0, fd passes to the caller.  Threads: any (the channel's
 * turn).
 */
int tr__listen_adopted(pid_t pid, int fd);

/* Drops the reference, pid's expectation if still pending, and closes
 * the socket in flight to pid's channel if the channel never took it (pid
 * 0: a reference that expects nobody); the last reference stops the
 * listener.  A channel calls it from its exit, after its last turn.
 * Threads: any. */
void tr__listen_release(pid_t pid);

/* Stops the listener whoever holds it (later releases do nothing): for
 * the tests of a node that stops answering.  Threads: any. */
void tr__listen_close_now(void);

/* The listener's address now, for tests: 0, or -TR_ENOTFOUND (none). */
int tr__listen_addr(char *addr, size_t len);

/* Connections the listener has refused so far (for tests). */
uint64_t tr__listen_refused(void);

/* Times accept4 failed for want of fds or memory so far: each is one
 * attempt, so a listener that does not spin adds about ten a second
 * during a shortage (for tests). */
uint64_t tr__listen_accept_stalls(void);

/* Sockets in flight: handed to a channel and not yet taken nor closed
 * (for tests; stale as soon as it is returned). */
size_t tr__listen_in_flight(void);

#endif
