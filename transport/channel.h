/*
 * Channels (issue 10): one TCP connection per peer process, carrying the
 * dialogs of every actor on either side (docs/PROTOCOL.md sections 3, 4).
 *
 * A channel is a behaviour actor that owns its socket (non-blocking, on
 * the reactor's fd watches).  Actors of the peer process are known here
 * by proxies: behaviour actors spawned with the remote actor's name and
 * uuid (tr__actor_spawn_as, TR_AF_PROXY), so a portal, a context's peer or
 * a nursery's child record holds a proxy exactly as it would hold the
 * actor itself.  A message sent to a proxy names its sender (`from`: the
 * dialog engine adds it for proxies); the proxy writes the remote uuid
 * into the envelope's dst and passes the message to its channel, which
 * writes the sender into src and encodes the frame into its write buffer
 * (one send for everything queued, transport/wire.h).  A frame read from
 * the socket goes to the local actor its dst names, with `from` set to the
 * proxy of its src (made on first sight), so the engine answers through
 * the proxy.  The local actors that talked on the channel are known by
 * uuid until they exit (a monitor each prunes the table); a frame for one
 * that has gone is answered as a dead actor answers.  The channel then
 * tells the peer (a Stop outside any dialog naming it in src: PROTOCOL.md
 * section 4, "Gone notices"), which drops its proxy of that actor.
 *
 * Handshake: each end sends Hello first (transport/hello.h) and checks
 * the peer's before anything else is read; a bad Hello closes the channel
 * with a logged reason.
 *
 * Three kinds:
 *   - a parent's channel to a child process (tr__chan_spawn): it listens
 *     on 127.0.0.1 (a port of the kernel's choice) until that process
 *     connects back (its Hello must name the child's pid), sends
 *     the child's SpawnSpec, and watches the process (pidfd).  It ends when
 *     the process is reaped: the child's exit report (its last Return or
 *     Error on the life dialog) is held until then, so that an actor
 *     nursery never closes over a running process; a child that died
 *     without one is reported failed ("exited with status N").  A kill
 *     request (tr__chan_kill) sends SIGTERM, then SIGKILL after the grace.
 *   - a child's channel to its parent (tr__chan_child_run): it connects
 *     back, receives the SpawnSpec, starts the child's main actor with the
 *     uuid the parent chose, and ends after that actor's exit report is
 *     written.  A lost parent cancels the main actor.
 *   - a channel between two nodes (tr__chan_peer, issue 11): dialled by
 *     node.c to an address it found in the registry, or accepted by the
 *     listener from such a dialler.  A frame for a local actor that has not
 *     talked on it yet goes to a registered actor of that uuid
 *     (tr__node_local).  It ends with its connection.
 *
 * A broken connection (EOF: -TR_ECLOSED, an error: -TR_EIO) ends every
 * dialog between the two sides through the engine's peer-loss entry point
 * (tr__rpc_post_peer_lost), so no caller hangs: at once on a child's side
 * and for a silent peer; on a parent's side when the child process is
 * reaped, which the end of the connection brings about (the child exits,
 * or is killed after the grace period), so that the error can say how the
 * process ended.  A call sent after the loss is answered at once, as a
 * gone actor answers it.
 *
 * Layer: transport (above rpc).
 */
#ifndef TR_TRANSPORT_CHANNEL_H
#define TR_TRANSPORT_CHANNEL_H

#include <stdint.h>

#include <tractor/actor.h>
#include <tractor/buf.h>

#include "runtime/rpc/rpc.h"

/* tr_config_t.peer_timeout_ns as tr_run resolved it (-1: never), and its
 * default.  An idle channel sends a heartbeat once it has written nothing
 * for a third of it. */
extern int64_t tr__chan_peer_timeout_ns;
#define TR_PEER_TIMEOUT_DEFAULT_NS (5 * 1000000000LL)

/* Bytes a channel holds for its peer, unwritten, above which a peer that
 * has taken none of them for a third of peer_timeout is declared dead
 * (-TR_EIO, "reads nothing"): answers to calls have no credit window, so
 * a peer that sends calls and reads no answers would otherwise make this
 * side buffer them for ever.  Progress, not volume, is the sign: a peer
 * that reads is kept however much waits for it.  256 MiB; tests lower it.
 * Threads: any, with relaxed atomic loads and stores (channels read it as
 * they queue). */
extern size_t tr__chan_wire_max;

/* How long a peer over the mark may take nothing before it is declared
 * deaf: 0 (the default) is a third of peer_timeout, the heartbeat period.
 * Tests set it.  Threads: any, with relaxed atomic loads and stores. */
extern int64_t tr__chan_deaf_after_ns;

/* How long a parent waits for its child process to connect back before it
 * kills it (SIGKILL; the child's exit then says why), and how long a child
 * tries to connect.  10 s; tests lower it.  Threads: any, with relaxed
 * atomic loads and stores. */
extern int64_t tr__chan_hs_timeout_ns;

/* Environment of a child process: where its parent listens. */
#define TR_PARENT_ADDR_ENV "TR_PARENT_ADDR"

/* The request (tr_proc_req_t) is the dialog engine's: runtime/rpc/rpc.h. */

/*
 * Starts the child process and its channel; *proxy (a new reference) is
 * the child actor's proxy, usable at once (messages wait in the channel's
 * queue until the child has connected).  Returns 0, or -TR_EIO /
 * -TR_ENOMEM with an error object (no process is left running); req->pid
 * is the process's.  Ownership: borrows req.  Threads: a task or turn of a running runtime.
 */
int tr__chan_spawn(tr_proc_req_t *req, tr_actor_t **proxy);

/* Asks the channel of proxy's process to stop that process: SIGTERM, then
 * SIGKILL after the grace period (a process that has not connected yet is
 * killed at once).  Threads: any. */
void tr__chan_kill(tr_actor_t *proxy);

/*
 * The child's side: run by tr_main when TR_PARENT_ADDR is set.  Starts the
 * runtime, connects back, serves as the SpawnSpec says until the child
 * actor has exited, and returns the process's exit status (0: the actor
 * ended normally or was cancelled, 1: it failed or the parent was lost).
 * Threads: the main thread, with no runtime running.
 */
int tr__chan_child_run(const tr_config_t *cfg);

/*
 * A channel to another node over fd, a connected socket whose handshake is
 * done (node.c dialled it, or the listener accepted it).  peer
 * is the actor the peer's Hello named: the channel's proxy of it is made
 * now, and *peer_px (when not NULL) gets a reference to it.  Returns 0
 * with *out (a reference to the channel actor), or -TR_ENOMEM / -TR_EIO
 * with an error object.
 * Ownership: takes fd, also on failure (closed); borrows peer.
 * Threads: any, while the runtime runs.
 */
int tr__chan_peer(int fd, const tr_uid_t *peer, tr_actor_t **out, tr_actor_t **peer_px);

/* Closes a channel between nodes (its dialogs end with -TR_ECLOSED, as
 * at the peer's close).  Threads: any. */
void tr__chan_close(tr_actor_t *chan);

/* Registers the proxies' send with the actor layer (tr__actor_is_proxy).
 * Called by tr_run at start-up.  Threads: tr_run's. */
void tr__chan_init(void);

/*
 * A new proxy, on channel `chan`, for the remote actor (uuid, name): a
 * portal to it sends over that channel.  It exits when the channel does.
 * Returns 0 with *out (a reference), or -TR_ENOMEM.
 * Ownership: borrows chan and name.  Threads: any.
 */
int tr__chan_proxy(tr_actor_t *chan, const uint8_t uuid[TR_UUID_LEN], const char *name,
                   tr_actor_t **out);

/* The actor nursery's process children (rpc.h), which runtime.c hands to
 * the dialog engine. */
extern const tr_rpc_proc_ops_t tr__chan_proc_ops;

#endif
