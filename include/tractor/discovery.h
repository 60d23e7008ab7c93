/*
 * Discovery: finding actors by name through the registrar (tractor's
 * registry, "arbiter").
 *
 * Every program run by tr_main is a node with a registrar address
 * (tr_config_t.registry_addr, the environment variable TR_REGISTRY_ADDR,
 * default "127.0.0.1:1616" as tractor's).  When tr_main starts, the root
 * probes that address:
 *   - a registrar answers the probe handshake: this node uses it;
 *   - nothing listens there: this node becomes the registrar (it listens
 *     on that address and serves the registry itself: the embedded default,
 *     nothing to start by hand);
 *   - something else listens (another program, or a tractor node that is
 *     not a registrar): tr_main fails with -TR_EIO and an error naming the
 *     address; the root function is not called.
 * "off" as the address turns discovery off for the program (no listener,
 * no registration; the calls below fail with -TR_ENOTFOUND).
 *
 * What registers: the root actor ("root"; it serves no calls, as it runs
 * the program's root function: a call to it from another actor fails at
 * once with -TR_ECLOSED, "does not serve calls", and from the root itself
 * with -TR_EINVAL, as any call of an actor to itself; every program's root
 * is "root", so a lookup of "root" finds the newest program's, often the
 * caller's own)
 * and every actor an actor nursery starts to serve calls (tr_start_actor,
 * tr_run_in_actor; thread or process; not tr_actor_nursery_spawn's, which
 * run a task function and serve nothing), under the name it was given, with the address its process
 * listens on (tr_config_t.bind_addr's host, a port of the kernel's
 * choice; the registrar's own node listens on the registry address).  A
 * node that listens on 0.0.0.0 registers the host the registrar knows it
 * by instead (this end of its connection to the registrar), which other
 * hosts can dial.  The registrar's own node on a registry address of
 * 0.0.0.0 registers its actors at 0.0.0.0:port; lookups here
 * (tr_find_actor, tr_registry_list) give such an entry at the host this
 * node reaches the registrar at.  An
 * actor registers when it starts, before it serves its first call (calls
 * that come meanwhile wait), and unregisters when it exits, also when it
 * is cancelled.  A registrar that cannot be reached delays the first call
 * by at most the registrar call's bound (5 s; a refused connection fails
 * at once): the actor then serves unregistered, with a logged warning,
 * until a registrar answers again.  A node that is not the registrar
 * watches its connection to it: when that ends (the registrar stopped,
 * was restarted, or dropped the node), the node dials the registry
 * address again (pausing 10 ms, doubling up to 1 s, while no registrar answers)
 * and registers every actor of the node that is still alive with the
 * registrar it reaches, so a registrar restarted on the same address has
 * them all again within about a second.
 * An entry whose
 * actor is gone without unregistering (its process was killed, its
 * connection to the registrar broke) is dropped by the registrar when it
 * next answers; one whose node no longer accepts connections is deleted
 * when a tr_find_actor fails to connect to it and the registrar's own
 * connection is refused too (from another host or network a node may be
 * unreachable and alive).  Names are not
 * unique (entries of one name coexist); uuids are.
 *
 * Registration is asynchronous to whoever started the actor: an actor
 * just started may not be found yet.  tr_wait_for_actor waits for it (as
 * tractor's tests do with wait_for_actor).
 *
 * Layer: public API.
 */
#ifndef TRACTOR_DISCOVERY_H
#define TRACTOR_DISCOVERY_H

#include <stddef.h>
#include <stdint.h>

#include <tractor/portal.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The registry address when neither the config nor TR_REGISTRY_ADDR names
 * one. */
#define TR_REGISTRY_ADDR_DEFAULT "127.0.0.1:1616"

/* One registered actor. */
typedef struct tr_registry_entry {
  char *name;        /* the actor's name */
  uint8_t uuid[16];  /* its uuid */
  char *addr;        /* "host:port" where its node listens */
  int64_t pid;       /* its process */
} tr_registry_entry_t;

/*
 * Finds an actor named `name` and returns a portal to it: an actor of
 * this process directly, else one reached over a channel to its node
 * (opened and handshaken now, or the one already open).  Of several
 * entries of that name, the most recently registered that answers is
 * used; an entry whose node refuses the connection is deleted from the
 * registry and the next one is tried.  The dials share the lookup's
 * deadline: each entry gets an equal part of what is left (the last one
 * all of it), so that a node that accepts connections but does not
 * answer (a stopped process, say) does not keep the next entry from
 * being tried.
 * Returns 0 with *portal, or:
 *   -TR_ENOTFOUND   no actor of that name is registered (or none answered:
 *                   the error says why, e.g. its node has another secret);
 *   -TR_ENORUNTIME  no runtime is running in this process;
 *   -TR_EPERM       not called from a task, or the registrar does not share
 *                   this node's secret;
 *   -TR_ECANCELED   the calling task is cancelled;
 *   -TR_ETIMEDOUT   the registrar, or the nodes of the entries tried, did
 *                   not answer within 5 s (the lookup's own deadline); the
 *                   error names the last entry tried and how long it had;
 *   -TR_EIO         the registrar cannot be reached;
 *   -TR_EINVAL      name or portal is NULL;
 * every failure with an error object (tr_error_last) saying why.
 * Ownership: name is borrowed; *portal is the caller's (tr_portal_release).
 * Threads: a task.
 */
int tr_find_actor(const char *name, tr_portal_t **portal);

/*
 * As tr_find_actor, but waits until an actor of that name has registered,
 * or until `deadline` (tr_now() nanoseconds; < 0: no deadline).  Returns
 * 0 with *portal, -TR_ETIMEDOUT at the deadline (the dials to the
 * entries' nodes included), or as tr_find_actor (-TR_ENOTFOUND only with
 * discovery off).  The wait is a call to the registrar, cancelled with the
 * calling task.  When every entry of the name fails without being deleted
 * (its node cannot be reached, or does not answer), it asks again after a
 * pause, 10 ms doubling up to 1 s; at the deadline the error says what the
 * last one tried failed with.
 * Ownership and threads: as tr_find_actor.
 */
int tr_wait_for_actor(const char *name, int64_t deadline, tr_portal_t **portal);

/*
 * Lists the registered actors: *entries (an array of *n, newest first) or
 * NULL when there are none.  Returns 0, or as tr_find_actor (-TR_ENOTFOUND
 * only with discovery off: an empty registry is 0 with *n 0).
 * Ownership: the array and its strings are the caller's:
 * tr_registry_entries_free.  Threads: a task.
 */
int tr_registry_list(tr_registry_entry_t **entries, size_t *n);

/* Frees what tr_registry_list returned (NULL is a no-op). */
void tr_registry_entries_free(tr_registry_entry_t *entries, size_t n);

/*
 * The address this process's node listens on ("host:port"), and whether it
 * is the registrar.  Returns 0, -TR_ENOTFOUND (no node listener: discovery
 * is off or nothing has registered yet), -TR_ENORUNTIME, or -TR_EMSGSIZE
 * when addr (len bytes) is too small: it then holds the address cut to
 * len - 1 bytes.  64 bytes are always enough.
 * Ownership: writes at most len bytes into addr (NUL-terminated when len
 * is not 0); addr may be NULL (len is then ignored).
 * Threads: any.
 */
int tr_node_addr(char *addr, size_t len, int *is_registrar);

#ifdef __cplusplus
}
#endif
#endif
