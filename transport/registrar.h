/*
 * The registrar (issue 11): the actor that keeps a deployment's registry,
 * as tractor's registrar ("arbiter").  A daemon served actor named
 * "registrar" exposing namespace TR_REGISTRY_NS (node.h); the node that
 * becomes the registrar starts it (transport/node.c).  Its functions take
 * and return RegistryEntries payloads (schema/registry.h;
 * docs/PROTOCOL.md section 11):
 *
 *   register(entry)    the caller registers itself (the entry's uuid is
 *                      the caller's), or a node's keeper registers an
 *                      actor of its node again: then the entry's address
 *                      must be the one the caller's node named in its
 *                      Hello (tr__node_speaks_for), and no live entry may
 *                      hold that uuid at another address.  The registrar
 *                      keeps a reference to the caller (its proxy, for a
 *                      remote one): once that has exited (the actor ended,
 *                      its node's channel broke), the entry is dropped at
 *                      the next answer.
 *   unregister(entry)  drops the entry of that uuid: the caller's own; any
 *                      other only when the address the registrar holds for
 *                      it is one the caller's node speaks for, or its node
 *                      there refuses the registrar's dial too (a node found
 *                      it stale).  The address the call names is not used.
 *   find(entry)        the entries of entry.name, newest first.
 *   wait(entry)        as find, but waits until there is at least one.
 *   list()             every entry, newest first.
 *
 * Its state belongs to the registrar actor's tasks: one registrar per
 * process, one task of it running at a time.
 *
 * Layer: transport.
 */
#ifndef TR_TRANSPORT_REGISTRAR_H
#define TR_TRANSPORT_REGISTRAR_H

#include <tractor/actor.h>

/* Starts the registrar actor.  Returns 0 with *out (a reference), or as
 * tr__rpc_spawn_served.  Threads: a task or turn of a running runtime. */
int tr__registrar_spawn(tr_actor_t **out);

/* 1 when a is a registrar actor (it serves TR_REGISTRY_NS).  Threads:
 * any. */
int tr__registrar_is(const tr_actor_t *a);

/* The registrar is leaving (its main task, and its on_exit, also when the
 * runtime was shut down under it): every entry is dropped with its
 * reference, and later registrations are refused.  Threads: the
 * registrar actor's task or exit. */
void tr__registrar_close(void);

#endif
