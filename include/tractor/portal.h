/*
 * RPC, tractor style: exported functions, and (in a later section of this
 * header) the Portal, Context and MsgStream API that calls them.
 *
 * Exporting.  A function becomes callable from other actors by exporting
 * it under a namespace and a name, at file scope:
 *
 *     static int add(struct tr_ctx *ctx, const tr_buf_t *args,
 *                    tr_buf_t **result) { ... }
 *     TR_EXPORT_FN("calc.ops", "add", add)
 *
 * The namespace plays the part of tractor's module path ("mymod.sub"); the
 * caller names the function "calc.ops.add", which splits at the last dot.
 * An actor exposes only the namespaces listed in its opts.enable, as a
 * tractor actor exposes only its enable_modules.  Registration happens
 * before main (a constructor per export, static storage, no allocation), in
 * the executable and in shared libraries alike, into one process-wide table.
 *
 * What the runtime refuses, before any task starts, and reports to the
 * caller as a boxed error: a namespace the actor does not enable
 * (-TR_ENOTEXPOSED, tractor's ModuleNotExposed), a name nobody exported
 * (-TR_ENOFUNC), and a function of the wrong kind for the call
 * (-TR_EFUNCKIND: a stream function through tr_portal_run, say).
 *
 * Typed payloads.  The _TYPED variants attach protobuf-c message
 * descriptors to the arguments, the streamed values and the return value.
 * A payload that does not decode as its declared type is refused with
 * -TR_EMSGTYPE (tractor's MsgTypeError), with a message naming the type.
 * A NULL descriptor leaves that payload untyped (any bytes).
 */
#ifndef TRACTOR_PORTAL_H
#define TRACTOR_PORTAL_H

#include <stddef.h>

#include "buf.h"
#include "errors.h"
#include "task.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- exported functions -------------------------------------------------- */

/* The context of one call, on the callee's side.  Opaque: STREAM and
 * CONTEXT functions use it through tr_ctx_* / tr_stream_* operations. */
struct tr_ctx;

/* protobuf-c's descriptor type, declared here so that this header does not
 * need protobuf-c (buf.h declares it too; repeating it is harmless). */
struct ProtobufCMessageDescriptor;

/*
 * The kind of an exported function, which decides the dialog that calls
 * it.  The values are the protocol's: StartAck carries them on the wire
 * (the FuncType enum of schema/tractor.proto), so they never change.
 *  - TR_FUNC_FN: request/response (tr_portal_run); the function returns
 *    its value through *result.
 *  - TR_FUNC_STREAM: a one-way stream to the caller
 *    (tr_portal_open_stream_from); the function sends values through ctx.
 *  - TR_FUNC_CONTEXT: a context (tr_portal_open_context): started value,
 *    optional bidirectional stream, final result.
 */
typedef enum tr_functype { TR_FUNC_FN = 1, TR_FUNC_STREAM = 2, TR_FUNC_CONTEXT = 3 } tr_functype_t;

/*
 * The signature of every exported function, whatever its kind.  Returns 0
 * or a negative -TR_E* with the task's error set (tr_fail, TR_ERROR); the
 * runtime boxes that error and sends it to the caller.
 * Ownership: args is borrowed for the duration of the call (NULL means
 * empty).  A FN function may store a buffer in *result (initially NULL)
 * and hands its reference to the runtime; a result left NULL is the empty
 * value.  On failure the runtime releases whatever *result holds.
 * Threads: runs as a task of the callee actor.
 */
typedef int (*tr_rpc_fn)(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result);

/*
 * One exported function.  The TR_EXPORT_* macros define one of these with
 * static storage per export; the public fields may be read through
 * tr_rpc_registry_next and are never written after registration.  Fields
 * ending in '_' belong to the registry.
 */
typedef struct tr_rpc_export {
  const char *ns;   /* namespace, such as "calc.ops" */
  const char *name; /* function name, without dots */
  tr_rpc_fn fn;
  int kind;                                            /* enum tr_functype */
  const struct ProtobufCMessageDescriptor *args_desc;  /* NULL: untyped */
  const struct ProtobufCMessageDescriptor *yield_desc; /* STREAM, CONTEXT */
  const struct ProtobufCMessageDescriptor *ret_desc;   /* FN, CONTEXT */
  const char *file; /* where the export is written, for diagnostics */
  int line;
  struct tr_rpc_export *next_;
  const struct tr_rpc_export *dup_of_; /* a refused duplicate: the original */
  int refused_;                        /* 0, or why registration refused it */
} tr_rpc_export_t;

/*
 * TR_EXPORT_FN(ns, name, fn), TR_EXPORT_STREAM(...), TR_EXPORT_CONTEXT(...)
 * export fn under namespace ns and name `name`, both string literals (the
 * macros concatenate them with "" so anything else fails to compile).  ns
 * is a non-empty dotted path; name is non-empty and has no dot, since a
 * qualified name "ns.name" is split at its last dot.  Write them at file
 * scope, any number per file, in executables and shared libraries.
 *
 * The _TYPED variants take `const ProtobufCMessageDescriptor *` for the
 * arguments, the yielded values and the return value (each may be NULL).
 *
 * A second export of the same (ns, name) in the process is refused, as is
 * an export with a bad name or kind; neither aborts: the first export stays
 * in force and tr_rpc_registry_check reports the refusal.  A shared library
 * that exports functions must stay loaded (no dlclose, or RTLD_NODELETE):
 * its entries are linked into the process-wide table.
 */
#define TR_EXPORT_FN(ns, name, fn) TR__EXPORT(ns, name, fn, TR_FUNC_FN, NULL, NULL, NULL)
#define TR_EXPORT_STREAM(ns, name, fn) TR__EXPORT(ns, name, fn, TR_FUNC_STREAM, NULL, NULL, NULL)
#define TR_EXPORT_CONTEXT(ns, name, fn) TR__EXPORT(ns, name, fn, TR_FUNC_CONTEXT, NULL, NULL, NULL)

#define TR_EXPORT_FN_TYPED(ns, name, fn, args_desc, ret_desc)                                      \
  TR__EXPORT(ns, name, fn, TR_FUNC_FN, args_desc, NULL, ret_desc)
#define TR_EXPORT_STREAM_TYPED(ns, name, fn, args_desc, yield_desc)                                \
  TR__EXPORT(ns, name, fn, TR_FUNC_STREAM, args_desc, yield_desc, NULL)
#define TR_EXPORT_CONTEXT_TYPED(ns, name, fn, args_desc, yield_desc, ret_desc)                     \
  TR__EXPORT(ns, name, fn, TR_FUNC_CONTEXT, args_desc, yield_desc, ret_desc)

/* Implementation of the macros.  __COUNTER__ is expanded once, as an
 * argument, so the entry and its constructor share one unique suffix even
 * when several exports sit on the same line. */
#define TR__EXPORT(ns, name, fn, kind, a, y, r)                                                    \
  TR__EXPORT_AT(__COUNTER__, ns, name, fn, kind, a, y, r)
#define TR__EXPORT_AT(id, ns_, name_, fn_, kind_, a_, y_, r_)                                      \
  static tr_rpc_export_t TR__RPC_CAT(tr__rpc_export_, id) = {.ns = "" ns_ "",                      \
                                                             .name = "" name_ "",                  \
                                                             .fn = (fn_),                          \
                                                             .kind = (kind_),                      \
                                                             .args_desc = (a_),                    \
                                                             .yield_desc = (y_),                   \
                                                             .ret_desc = (r_),                     \
                                                             .file = __FILE__,                     \
                                                             .line = __LINE__};                    \
  __attribute__((constructor)) static void TR__RPC_CAT(tr__rpc_ctor_, id)(void) {                  \
    tr__rpc_register(&TR__RPC_CAT(tr__rpc_export_, id));                                           \
  }
#define TR__RPC_CAT(a, b) TR__RPC_CAT_(a, b)
#define TR__RPC_CAT_(a, b) a##b

/*
 * Links e into the process-wide table; the TR_EXPORT_* constructors call
 * it.  A duplicate or malformed export is kept aside as refused (see
 * tr_rpc_registry_check) instead of being linked in.  Never fails, never
 * allocates, never aborts.
 * Ownership: e must have static storage (it is never copied or freed).
 * Threads: any thread, at any time, concurrently with lookups and other
 * registrations (a library opened with dlopen registers while the runtime
 * runs).
 */
void tr__rpc_register(tr_rpc_export_t *e);

/*
 * Reports refused exports: returns 0 when there were none; otherwise
 * records an error (tr_error_last) naming the oldest refusal and the number
 * of refusals, and returns its code: -TR_EEXIST for a duplicate (ns, name),
 * naming both exports' file:line, or -TR_EINVAL for a malformed one (empty
 * or NULL names, a dot in the name, a NULL function, an unknown kind).
 * Threads: any thread.
 */
int tr_rpc_registry_check(void);

/* The number of exports in force (refused ones are not counted).
 * Threads: any thread. */
size_t tr_rpc_registry_count(void);

/*
 * Iterates over the exports in force, newest registration first:
 * tr_rpc_registry_next(NULL) is the first, NULL after the last.  Entries
 * registered while an iteration runs may or may not be visited; none is
 * visited twice and none is ever removed.
 * Ownership: entries are static; never free them.  Threads: any thread.
 */
const tr_rpc_export_t *tr_rpc_registry_next(const tr_rpc_export_t *prev);

/* ---- Portal, Context, MsgStream ---------------------------------------------
 *
 * The calling side of the protocol.  Built so far: daemon actors started in
 * an actor nursery (tr_start_actor) and the run dialog (tr_portal_run).
 * Still to come: tr_portal_open_stream_from, tr_portal_open_context,
 * tr_portal_result / tr_run_in_actor, tr_portal_cancel_actor, tr_ctx_*,
 * tr_stream_*; see docs/PROTOCOL.md for the dialogs they will speak.
 */

/* A handle to an actor that serves RPC (tractor's Portal). */
typedef struct tr_portal tr_portal_t;

/*
 * Starts a daemon actor `name` in actor nursery `an`: it serves calls to
 * the functions of the `n_enable` namespaces in `enable` until it is
 * cancelled (tractor's start_actor(enable_modules=...)).  Closing the actor
 * nursery cancels its daemons once its other children have finished, as
 * tractor does.  Returns 0, or as tr_actor_nursery_spawn.
 * Ownership: name and the enable strings are copied.  *out is the caller's,
 * released with tr_portal_release (it may outlive the actor: calls then
 * return -TR_ECLOSED).
 * Threads: the task that opened `an`.
 */
int tr_start_actor(tr_actor_nursery_t *an, const char *name, const char *const *enable,
                   size_t n_enable, tr_portal_t **out);

/*
 * Calls function `qualified` ("ns.func") of the portal's actor with `args`
 * and waits for its result (the run dialog: Start, StartAck, Return or
 * Error).  Returns 0 with *result set (NULL for an empty result), or:
 *   -TR_ENOFUNC / -TR_ENOTEXPOSED  the actor refused the call before
 *                                  starting any task;
 *   -TR_EFUNCKIND   the function is a stream or context function (checked
 *                   here, before anything is sent);
 *   -TR_EREMOTE     the function failed: tr_error_last is a
 *                   RemoteActorError whose boxed type, message and trace are
 *                   the remote error's, with the actor's name as source;
 *   -TR_ECLOSED     the actor has exited;
 *   -TR_ECANCELED   the caller was cancelled: the remote task is cancelled
 *                   too (a Cancel for the call is sent) and its late reply
 *                   is dropped.
 * Ownership: args is borrowed (the callee gets a reference); *result is
 * the caller's (tr_buf_release).
 * Threads: a task.
 */
int tr_portal_run(tr_portal_t *p, const char *qualified, const tr_buf_t *args, tr_buf_t **result);

/*
 * Starts a child actor `name` in `an` that runs one call of function
 * `qualified` ("ns.func", an FN export) with `args`, then exits
 * (tractor's run_in_actor: the child enables the function's namespace and
 * ends once its result is in).  A failure of the call is a failure of the
 * child for the nursery (one cancels all).  Returns 0, -TR_ENOFUNC,
 * -TR_EFUNCKIND, or as tr_actor_nursery_spawn.
 * Ownership: args is borrowed (the child gets a reference); *out as
 * tr_start_actor.  Threads: the task that opened `an`.
 */
int tr_run_in_actor(tr_actor_nursery_t *an, const char *name, const char *qualified,
                    const tr_buf_t *args, tr_portal_t **out);

/*
 * The result of a tr_run_in_actor child: waits (cancellably) until it is
 * in, then returns 0 with *result (a new reference, NULL for an empty
 * result), or the child's error as a RemoteActorError (-TR_EREMOTE;
 * -TR_ECANCELED if the child was cancelled) — the same outcome on every
 * call, also after the nursery has closed (the result is cached in the
 * portal).  -TR_EINVAL for a portal from tr_start_actor.
 * Threads: a task of the actor that owns the nursery.
 */
int tr_portal_result(tr_portal_t *p, tr_buf_t **result);

/*
 * Cancels the portal's actor (every task of it; shields hold) and waits up
 * to timeout_ns (< 0: no limit) for the acknowledgement, which for an
 * in-process child is its exit.  *acked (may be NULL) says whether it came
 * in time; the nursery escalates to a forced cancel at close if not.
 * The wait is not interrupted by a cancellation of the caller (it is
 * already bounded).  Returns 0, -TR_EPERM (not in a task) or -TR_EINVAL
 * (the portal is not to a child of an actor nursery of this actor).
 * Threads: a task of the actor that owns the nursery.
 */
int tr_portal_cancel_actor(tr_portal_t *p, int64_t timeout_ns, int *acked);

/* The portal's actor (borrowed; valid while the portal is). */
tr_actor_t *tr_portal_actor(const tr_portal_t *p);

/* Releases the portal.  NULL is a no-op.  Threads: any. */
void tr_portal_release(tr_portal_t *p);

#ifdef __cplusplus
}
#endif
#endif
