/*
 * The node (issue 11): this process as other processes see it.  Its
 * listener (transport/listen.h) on the node address, the channels to other
 * nodes by address (dialled here, or accepted by the listener), the local
 * actors other nodes may call by uuid (the registered ones), and its
 * registrar: the actor of this process that keeps the registry
 * (transport/registrar.c), or a proxy of the one in another process.
 *
 * Start-up (tr_main's root task, tr__node_main_ops.start): the registry
 * address comes from the config or TR_REGISTRY_ADDR; the node dials it
 * with a probe Hello.  A Hello back that says is_registrar: that is the
 * registrar.  Connection refused: this node becomes the registrar (its
 * listener binds the registry address; should another root win that race,
 * the probe is made again).  Anything else: the start fails with -TR_EIO
 * naming the address.  Then the root registers.  A child process learns
 * the registry address from its SpawnSpec and dials it when its main actor
 * registers.
 *
 * Dialling (tr__node_channel) runs the blocking connect and handshake on
 * tr_to_thread's pool, bounded by the handshake timeout, so no worker
 * blocks on a slow or partitioned peer; the socket then goes to a channel
 * actor (channel.h, tr__chan_peer).
 *
 * Layer: transport.
 */
#ifndef TR_TRANSPORT_NODE_H
#define TR_TRANSPORT_NODE_H

#include <stdint.h>
#include <tractor/actor.h>
#include <tractor/discovery.h>

#include "runtime/rpc/rpc.h"
#include "runtime/task/task.h"
#include "schema/envelope.h"

/* Longest "host:port" text kept. */
#define TR_ADDR_MAX 64

/* The namespace of the registrar's functions. */
#define TR_REGISTRY_NS "tractor.registry"

/* Hooks runtime.c wires in (rpc.h, task.h). */
extern const tr_rpc_node_ops_t tr__node_rpc_ops;
extern const tr_main_node_ops_t tr__node_main_ops;

/*
 * A child process's node, from its SpawnSpec: the registry address
 * (empty: discovery off) and the host to listen on.  The node's identity
 * in Hellos is `self` (the channel to the parent until the main actor
 * exists).  Threads: the child channel's turn, before the main actor
 * starts.
 */
void tr__node_child_setup(const char *registry_addr, const char *bind_addr);

/* Where a spawned child should register and listen (for its SpawnSpec):
 * empty strings when discovery is off.  Threads: any. */
void tr__node_spawn_info(char *registry_addr, size_t rlen, char *bind_addr, size_t blen);

/*
 * This node's Hello, with which the listener answers another node's
 * (transport/auth.h adds the nonce and proof).  Returns 0 with *out
 * (tr_msg_free), or -TR_EPERM with an error object when discovery is off
 * (this process accepts only its children), or -TR_ENOMEM.
 * Threads: any.
 */
int tr__node_hello(tr_msg_t **out);

/*
 * The listener hands over a connection whose handshake with another node
 * is complete (authenticated when there is a key): the node makes a
 * channel of it.  Returns 0: the node took fd (the channel closes it).
 * Ownership: borrows hello (the peer's).  Threads: the listener's turn.
 */
int tr__node_accept(int fd, const tr_msg_t *hello);

/* A local actor other nodes may reach by uuid (a registered one): a new
 * reference, or NULL.  Threads: any. */
tr_actor_t *tr__node_local(const uint8_t uuid[TR_UUID_LEN]);

/* A child process's main actor has exited: the node's channels and
 * listener go.  Threads: any (no task needed). */
void tr__node_child_stop(void);

/* The node's registrar actor or proxy (a new reference), for the
 * registrar's own checks; NULL when there is none yet.  Threads: any. */
tr_actor_t *tr__node_registrar(void);

/*
 * One connect and handshake with the node at addr ("host:port") through
 * the dial a new channel uses (this node's Hello, not a probe's, and
 * whatever else that dial's handshake does, such as proving the secret),
 * then the socket is closed.  No channel is made on this side; the peer
 * node makes one of the connection, which ends at that EOF.  For
 * tr-bench's connect_handshake and for tests, not for the runtime.
 * Returns 0, or as the dial: -TR_EIO (nothing listens there, the peer
 * refused, the handshake failed or timed out), -TR_EPERM (the
 * authentication failed: another secret, or none on one side; or not a
 * task), -TR_ECANCELED, -TR_ENOMEM, -TR_ENORUNTIME (no actor to name in
 * the Hello), -TR_EINVAL (addr is NULL); every failure with an error
 * object.
 * Ownership: borrows addr; the socket and the peer's Hello are freed here.
 * Threads: a task (the blocking part runs on tr_to_thread's pool).
 */
int tr__node_handshake(const char *addr);

/* 1 when caller is the proxy of an actor of the node whose channel here
 * began with a Hello naming addr (the address that node listens on): that
 * node speaks for the actors it registers there (the registrar's rule for
 * a node's keeper, which registers its actors again).  Threads: any. */
int tr__node_speaks_for(const tr_actor_t *caller, const char *addr);

/* 1 when nothing accepts connections at addr, as this node sees it (the
 * connect is refused); 0 when something answers, or the dial failed any
 * other way (unreachable, silent, another secret: not a proof that
 * nothing is there).  The registrar's check before it drops an entry on
 * another node's word.  Threads: a task. */
int tr__node_refuses(const char *addr);

#endif
