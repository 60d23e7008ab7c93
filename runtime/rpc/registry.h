/*
 * The process-wide table of exported functions, as the runtime sees it:
 * lookup by (namespace, name), the checks a callee makes on a Start before
 * any task exists, and the typed-payload checks of typed exports.
 *
 * The table itself is defined in registry.c; exports reach it through the
 * TR_EXPORT_* macros of tractor/portal.h.  Entries are never removed or
 * modified after registration, so a pointer returned here stays valid for
 * the life of the process.
 *
 * Every failing function records an error (TR_ERROR) naming what failed,
 * so the dialog engine can box tr_error_last() into the Error message it
 * sends back to the caller.
 *
 * Threads: every function here may be called from any thread at any time,
 * including while a dlopen'd library registers new exports.
 */
#ifndef TRACTOR_RUNTIME_RPC_REGISTRY_H
#define TRACTOR_RUNTIME_RPC_REGISTRY_H

#include <stddef.h>

#include "tractor/buf.h"
#include "tractor/portal.h"

typedef tr_rpc_export_t tr__rpc_entry_t;

/* Which payload of a call tr__rpc_check_payload checks. */
enum tr__rpc_payload {
  TR__RPC_ARGS = 0, /* Start.args */
  TR__RPC_YIELD,    /* each Yield, either direction */
  TR__RPC_RETURN    /* Return */
};

/*
 * Finds the export (ns, func).  Returns 0 with *out set, -TR_ENOFUNC
 * (error message naming "ns.func") or -TR_EINVAL (a NULL argument).
 * Ownership: *out is static; *out is NULL on failure.
 */
int tr__rpc_lookup(const char *ns, const char *func, const tr__rpc_entry_t **out);

/*
 * Checks that an actor exposing the namespaces enabled[0..n_enabled) may
 * run e for a call that expects expected_kind (enum tr_functype; 0 accepts
 * any kind).  Returns 0; -TR_ENOTEXPOSED when e's namespace is not in the
 * list (the message names it and the enabled list; an empty list exposes
 * nothing); -TR_EFUNCKIND when the kinds differ (the message names both and
 * the call to use instead); -TR_EINVAL for a NULL e or a NULL list with
 * n_enabled > 0.
 * Ownership: borrows everything.
 */
int tr__rpc_check_call(const tr__rpc_entry_t *e, const char *const *enabled, size_t n_enabled,
                       int expected_kind);

/*
 * What a callee does with a Start before any task starts, in tractor's
 * order (see registry.c): namespace enabled? (-TR_ENOTEXPOSED), function
 * exported? (-TR_ENOFUNC), right kind? (-TR_EFUNCKIND).  The namespace comes
 * first, so an actor does not reveal which functions exist in a namespace
 * it does not expose.  Returns 0 with *out set, one of those codes, or
 * -TR_EINVAL (NULL arguments).
 * Ownership: *out is static; NULL on failure.
 */
int tr__rpc_resolve_parts(const char *ns, const char *func, const char *const *enabled,
                          size_t n_enabled, int expected_kind, const tr__rpc_entry_t **out);

/*
 * tr__rpc_resolve_parts for a qualified name "ns.func", split at the last
 * dot ("a.b.c" is function "c" of namespace "a.b").  A name without a dot,
 * or with an empty namespace or function part, is -TR_EINVAL.
 * Ownership: borrows qualified; never allocates.
 */
int tr__rpc_resolve(const char *qualified, const char *const *enabled, size_t n_enabled,
                    int expected_kind, const tr__rpc_entry_t **out);

/*
 * Checks one payload of a call to e against e's descriptor for it.
 * Returns 0 when that payload is untyped or decodes as its type (a NULL
 * payload is the empty message); -TR_EMSGTYPE when it does not decode, with
 * a message naming the payload, the function and the type ("args of
 * calc.add do not decode as tractor.ActorRef"); -TR_EINVAL for a NULL e or
 * an unknown `which`.  The decoded message is freed before returning: this
 * is a check, the function decodes its own copy.
 * Ownership: borrows e and payload.
 */
int tr__rpc_check_payload(const tr__rpc_entry_t *e, int which, const tr_buf_t *payload);

/* "fn", "stream", "context" for a functype, "unknown" otherwise.
 * Ownership: static string. */
const char *tr__rpc_kind_name(int kind);

#endif
