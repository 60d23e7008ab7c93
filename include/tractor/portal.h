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
 * value.  Empty is NULL everywhere: a zero-length buffer sent as a value
 * (arguments, a result, a started value, a stream message) is received
 * as NULL, in-process as from another process.  On failure the runtime
 * releases whatever *result holds.
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
 * The calling side of the protocol (docs/PROTOCOL.md lists every dialog
 * message by message): daemon actors (tr_start_actor), the run dialog
 * (tr_portal_run), one-shot children (tr_run_in_actor, tr_portal_result),
 * streams (tr_portal_open_stream_from), contexts (tr_portal_open_context
 * and tr_ctx_*), and MsgStreams (tr_stream_*) with credit-based flow
 * control and local broadcast (tr_stream_subscribe).
 *
 * Cancelled callers.  Every call that opens a dialog (tr_portal_run,
 * tr_portal_open_stream_from, tr_portal_open_context, tr_run_in_actor,
 * tr_start_actor) checks the calling task's cancellation before it sends
 * or starts anything (after checking its own arguments: a bad name or
 * kind still gives -TR_EINVAL, -TR_ENOFUNC or -TR_EFUNCKIND): in a
 * cancelled scope it returns -TR_ECANCELED at once, with tr_error_last
 * saying so, and sends nothing (the remote function never runs).  Leaving
 * a dialog that is not over while cancelled (a cancelled open, an early
 * tr_stream_close, tr_ctx_close of a cancelled task) sends Cancel and
 * waits for the callee's answer at most TR_CTX_CANCEL_TIMEOUT_NS (0.5 s,
 * tractor's Context.cancel timeout), shielded; no dialog's teardown blocks
 * longer than that.
 *
 * An actor in another process.  When the portal's actor is in another
 * process (a TR_SPAWN_PROCESS child, or an actor found through
 * discovery.h), every dialog call (tr_portal_run,
 * tr_portal_open_stream_from, tr_portal_open_context, tr_stream_*,
 * tr_ctx_*) may also return, with an error object:
 *   -TR_EIO       its process or the connection is lost: the process was
 *                 killed or exited without answering, the connection was
 *                 reset, the peer was silent past peer_timeout (actor.h),
 *                 or (a node found through discovery.h) its connection
 *                 ended while the dialog was open: a node ends its dialogs
 *                 before it closes, so that is a node that died, and a
 *                 SIGKILL's close looks no different on the wire; the
 *                 message says which ("the peer of this dialog (NAME) is
 *                 lost: process N exited with status 3");
 *   -TR_ECLOSED   the connection ended in order: this node is stopping,
 *                 or the actor's process exited after its exit report (the
 *                 actor had ended, or was ending, without answering this
 *                 dialog: a call that crossed its exit, say); the message
 *                 says which, in the same words as for -TR_EIO ("... is
 *                 lost: process N exited with status 0"), and the actor
 *                 reads as exited (tr_actor_exited) by then;
 *   -TR_EPROTO    the peer broke the protocol, and the connection is
 *                 closed (for a child process the dialogs end, as for a
 *                 lost process, with -TR_EIO once it has been reaped);
 *   -TR_EMSGSIZE  a value above TR_REMOTE_VALUE_MAX (see there).
 *
 * Threads: a context and its stream belong to one actor; every operation
 * on them runs in a task of that actor.  On the caller's side:
 *   - tr_ctx_close only from the task that opened the context; it is
 *     refused (-TR_EBUSY, nothing done, nothing freed) while another task
 *     is inside an operation on the context (a receive, a send,
 *     tr_ctx_result, a subscriber), and while it runs, operations that
 *     other tasks start on the context are refused with -TR_EBUSY, except
 *     tr_ctx_cancel (its Cancel goes out, and the close waits for the
 *     answer) and tr_stream_close of the context's stream (it only sends
 *     Stop, once);
 *   - every other operation (tr_stream_send/recv/subscribe/close,
 *     tr_ctx_result, tr_ctx_cancel, tr_ctx_cancel_wait, the accessors)
 *     from any task of the actor, several at once (each blocked task is
 *     woken by what concerns it).
 * On the callee's side the context lives until the function returns; the
 * function and the tasks it starts may use it, and operations of other
 * tasks still blocked on it when it returns end with -TR_ECLOSED.
 */

/* How long leaving a dialog that is not over waits for the callee's answer
 * to its Cancel (tractor's Context.cancel and Portal.cancel_timeout). */
#define TR_CTX_CANCEL_TIMEOUT_NS (500 * 1000 * 1000LL)

/* A handle to an actor that serves RPC (tractor's Portal). */
typedef struct tr_portal tr_portal_t;

/* Where an actor-nursery child runs (tr_actor_opts_t.spawn). */
enum tr_spawn_kind {
  /* The process default: the environment variable TR_SPAWN ("thread" or
   * "process"; unset or empty: "thread"; anything else makes the call
   * fail with -TR_EINVAL), else TR_SPAWN_THREAD (tractor's start method,
   * set once for a whole program). */
  TR_SPAWN_DEFAULT = 0,
  /* An actor of this process, on the runtime's workers. */
  TR_SPAWN_THREAD = 1,
  /*
   * A child process: the same executable (or `exe`), started with
   * posix_spawn; it connects back over TCP to this node's listener
   * (127.0.0.1 unless tr_config_t.bind_addr or TR_BIND_ADDR says
   * otherwise, actor.h), receives its SpawnSpec and runs the actor
   * (docs/PROTOCOL.md 8.5).
   * The portal works at once (calls wait in the channel until the child
   * has connected).  The child's main must be tr_main (which recognises
   * the child), or, in a Criterion test binary, a main that hands a child
   * to tr_main (tr_spawned_child, task.h).  Cancelling it is a Cancel
   * request; if it has not exited one grace period (the nursery's
   * cancel_grace_ns) later, SIGTERM, then SIGKILL one more grace period
   * later, so a child that ignores the request is gone within about two
   * grace periods.  A child that has not connected back yet when the
   * escalation comes gets SIGKILL at once, and one that does not connect
   * within 10 s of its start is killed too.  A child killed after a cancel
   * counts as cancelled.  The nursery's close returns once the process is
   * reaped.  A child dies with its parent (PR_SET_PDEATHSIG, and the end
   * of the connection).
   * Functions, arguments and results cross as bytes: pass nothing whose
   * meaning is an address in this process.  The process is named after
   * its actor (the first 15 bytes, as ps, top and /proc/PID/comm show it).
   */
  TR_SPAWN_PROCESS = 2,
};

/* Options of tr_start_actor_opts / tr_run_in_actor_opts. */
typedef struct tr_actor_opts {
  /* The namespaces the daemon serves (tr_run_in_actor_opts: served
   * besides the function's own, while it runs).  enable may be
   * NULL only when n_enable is 0, and none of its n_enable strings may be
   * NULL (-TR_EINVAL otherwise). */
  const char *const *enable;
  size_t n_enable;
  int spawn;       /* enum tr_spawn_kind; another value: -TR_EINVAL */
  const char *exe; /* TR_SPAWN_PROCESS: the program; NULL: this one */
} tr_actor_opts_t;

/*
 * Starts a daemon actor `name` in actor nursery `an`: it serves calls to
 * the functions of the `n_enable` namespaces in `enable` until it is
 * cancelled (tractor's start_actor(enable_modules=...)).  Closing the actor
 * nursery cancels its daemons once its other children have finished, as
 * tractor does.  Returns 0, or as tr_actor_nursery_spawn (or, when
 * TR_SPAWN=process makes it a child process, as tr_start_actor_opts), or
 * -TR_EINVAL when TR_SPAWN is set to neither "thread" nor "process".
 * Ownership: name and the enable strings are copied.  *out is the caller's,
 * released with tr_portal_release (it may outlive the actor: calls then
 * return -TR_ECLOSED).
 * Threads: the task that opened `an`.
 */
int tr_start_actor(tr_actor_nursery_t *an, const char *name, const char *const *enable,
                   size_t n_enable, tr_portal_t **out);

/* tr_start_actor with options: opts->enable and n_enable as above, and
 * where the actor runs (opts->spawn).  opts may be NULL.  Returns as
 * tr_start_actor, -TR_EINVAL with an error object (nothing started) when
 * out is NULL, opts->enable is NULL with n_enable > 0, or one of its
 * strings is NULL, or opts->spawn is not an enum tr_spawn_kind, or
 * -TR_EIO (the process could not be started; nothing
 * is left running) with an error object.  Ownership: borrows opts. */
int tr_start_actor_opts(tr_actor_nursery_t *an, const char *name, const tr_actor_opts_t *opts,
                        tr_portal_t **out);

/*
 * Calls function `qualified` ("ns.func") of the portal's actor with `args`
 * and waits for its result (the run dialog: Start, StartAck, Return or
 * Error).  Returns 0 with *result set (NULL for an empty result; result
 * may be NULL, and the value is then dropped), or:
 *   -TR_ENOFUNC / -TR_ENOTEXPOSED  the actor refused the call before
 *                                  starting any task;
 *   -TR_EFUNCKIND   the function is a stream or context function (checked
 *                   here, before anything is sent, when the actor runs
 *                   this program: an actor of this process, or a child
 *                   process not started from opts.exe; otherwise the
 *                   actor's own exports decide, and it refuses);
 *   -TR_EREMOTE     the function failed: tr_error_last is a
 *                   RemoteActorError whose boxed type, message and trace are
 *                   the remote error's, with the actor's name as source;
 *   -TR_ECLOSED     the actor has exited: type TransportClosed, as the
 *                   refusal of a send to it ("actor NAME has exited"),
 *                   or boxed in a RemoteActorError with the actor as
 *                   source when the call reached it (or the channel to
 *                   its process) as it was going, which answered for it;
 *   -TR_ECANCELED   the caller is cancelled: before the call, nothing is
 *                   sent; while waiting, the remote task is cancelled too
 *                   (a Cancel for the call is sent, without waiting) and
 *                   its late reply is dropped;
 *   -TR_EMSGSIZE    the actor is in another process and args is larger
 *                   than TR_REMOTE_VALUE_MAX: nothing is sent;
 *   -TR_EINVAL      p or qualified is NULL, qualified is not "ns.func",
 *                   or the portal's actor is the caller's own ("an actor
 *                   cannot call itself through a portal");
 * and, for an actor in another process, the errors listed under "An actor
 * in another process" above.
 * Ownership: args is borrowed (the callee gets a reference); *result is
 * the caller's (tr_buf_release).
 * Threads: a task.
 */
int tr_portal_run(tr_portal_t *p, const char *qualified, const tr_buf_t *args, tr_buf_t **result);

/*
 * Starts a child actor `name` in `an` that runs one call of function
 * `qualified` ("ns.func", an FN export) with `args`, then exits
 * (tractor's run_in_actor: the child enables the function's namespace and
 * ends once its result is in).  While the function runs the child serves
 * calls to that namespace's functions (and opts->enable's), as a daemon
 * does, so children may call each other (tr_wait_for_actor by name); the
 * calls still running when the function returns are cancelled, and later
 * ones refused with -TR_ECLOSED.  A failure of the call is a failure of the
 * child for the nursery (one cancels all).  Returns 0, -TR_EINVAL (a
 * NULL an, qualified or out, or TR_SPAWN set to neither "thread" nor
 * "process"), -TR_ENOFUNC or -TR_EFUNCKIND (looked up in this program's
 * exports before anything starts, so not boxed: a plain error of type
 * "ModuleNotExposed.NoFunction" or "FunctionKindError", where tr_portal_run
 * gets the callee's answer boxed; with opts->exe, another program,
 * the child's refusal is its failure instead), or as
 * tr_actor_nursery_spawn (-TR_ECANCELED in a cancelled scope: no child is
 * started).  With a process child
 * (TR_SPAWN=process, or opts->spawn below) also -TR_EMSGSIZE (args larger
 * than TR_REMOTE_VALUE_MAX: nothing is started) and -TR_EIO (the process
 * could not be started; nothing is left running), with an error object.
 * Ownership: name is copied; args is borrowed (the child gets a
 * reference); *out as tr_start_actor.  Threads: the task that opened
 * `an`.
 */
int tr_run_in_actor(tr_actor_nursery_t *an, const char *name, const char *qualified,
                    const tr_buf_t *args, tr_portal_t **out);

/* tr_run_in_actor with options (opts->spawn, opts->exe, and opts->enable:
 * more namespaces it serves while it runs, checked as tr_start_actor_opts
 * does).  opts may be NULL.  Returns as tr_run_in_actor, the process
 * child's -TR_EMSGSIZE and -TR_EIO included, and -TR_EINVAL (nothing
 * started) when opts->spawn is not an enum tr_spawn_kind or TR_SPAWN is
 * neither "thread" nor "process".  Ownership: borrows opts. */
int tr_run_in_actor_opts(tr_actor_nursery_t *an, const char *name, const char *qualified,
                         const tr_buf_t *args, const tr_actor_opts_t *opts, tr_portal_t **out);

/*
 * The result of a tr_run_in_actor child: waits (cancellably) until it is
 * in, then returns 0 with *result (a new reference, NULL for an empty
 * result), or the child's error, exactly the error tr_actor_nursery_close
 * returns for that child: a RemoteActorError (-TR_EREMOTE, the child's
 * name as source, its error's type as boxed type; an error the child
 * relayed from another actor keeps that error's code and source and gains
 * the child as a relay hop, task.h), or, for a lost child
 * process, -TR_EIO, not boxed ("actor NAME@UUID is lost: ...", task.h),
 * or, for a child of another program (opts.exe) that does not serve the
 * function as a plain one, its refusal as tr_portal_run's, with the child
 * as source (-TR_ENOFUNC, -TR_ENOTEXPOSED, -TR_EFUNCKIND);
 * or -TR_ECANCELED if the child was cancelled before its result was in:
 * the same outcome on every call, also after the nursery has closed (the
 * result is cached in the portal).  -TR_EINVAL for a portal from
 * tr_start_actor.
 * Threads: a task of the actor that owns the nursery.
 */
int tr_portal_result(tr_portal_t *p, tr_buf_t **result);

/*
 * Cancels the portal's actor (every task of it; shields hold) and waits up
 * to timeout_ns (< 0: no limit) for the acknowledgement (CancelAck), which
 * the actor sends as it exits.  Every context the actor serves reports
 * ContextCancelled to its own caller, naming the calling actor as the
 * canceller.
 * *acked (may be NULL) says whether the ack came in time.  If it did not,
 * and the caller is a task of the actor whose nursery started the portal's
 * actor, that nursery's close forces the cancel (the wait was its grace
 * period): a forced cancel in-process, SIGTERM then SIGKILL for a child
 * process.  A lost connection to the actor's process ends the wait as its
 * exit does (*acked 1; tr_actor_exited says so too), so even a wait with
 * no limit ends when that process dies.  The wait is not interrupted by a
 * cancellation of the caller (it is bounded, or ends with the actor).  Returns 0 (at once, with *acked 1, when the actor
 * has exited already, even outside a task: tr_actor_exited of
 * tr_portal_actor(p) says so, or an earlier cancel through p was
 * acknowledged), -TR_EINVAL (p is NULL, or its
 * actor is the caller's own: use tr_actor_cancel_soon), -TR_EPERM (not in
 * a task), or the code of a failed send of the request (-TR_ENOMEM; an
 * actor that exits meanwhile is not a failure), with an error object.
 * Threads: a task.
 */
int tr_portal_cancel_actor(tr_portal_t *p, int64_t timeout_ns, int *acked);

/*
 * A portal to any task actor, from a reference (tractor's get_portal to an
 * actor found by other means).  Calls through it work as through a
 * nursery's portal; tr_portal_result is not available and
 * tr_portal_cancel_actor is the protocol's actor cancel (any actor may
 * ask; the target need not be a child).  Returns 0, -TR_EINVAL.
 * Ownership: a is borrowed (the portal takes its own reference); *out is
 * the caller's (tr_portal_release).  Threads: any.
 */
int tr_portal_from_actor(tr_actor_t *a, tr_portal_t **out);

/* ---- contexts and streams ------------------------------------------------- */

typedef struct tr_ctx tr_ctx_t;
typedef struct tr_stream tr_stream_t;

/* What a sender does when the receiver's window is full. */
enum {
  TR_OVERRUN_BLOCK = 0, /* wait for credit (cancellable); the default */
  TR_OVERRUN_ERROR = 1  /* fail at once with -TR_EOVERRUN (StreamOverrun) */
};

/* Options of one context or stream dialog; NULL or zeroed = defaults. */
typedef struct tr_ctx_opts {
  uint32_t window; /* messages in flight per direction; 0 = the default (below),
                     capped at 65536 */
  int overrun;     /* TR_OVERRUN_BLOCK or TR_OVERRUN_ERROR, both directions;
                     another value: -TR_EINVAL from the call, nothing sent */
} tr_ctx_opts_t;

/* Default per-direction window (tractor's msg_buffer_size) between actors
 * of one process. */
#define TR_STREAM_WINDOW 64
/* Default per-direction window when the callee is in another process.  A
 * window is the most a sender may have in flight before credit comes back,
 * so it must cover the credit's round trip: over TCP between two
 * processes (~30-60 us here) 64 messages capped a stream at about 1 M
 * messages/s, 256 or more reach 2 M.  Memory stays bounded: at most a
 * window of messages per direction and dialog.  (tractor itself bounds a
 * cross-process stream only by the TCP buffers.) */
#define TR_STREAM_WINDOW_REMOTE 512
/* The largest window; a larger request is capped to it. */
#define TR_STREAM_WINDOW_MAX 65536

/* The largest value (call arguments, a result, a started value, a stream
 * message) that may go to an actor in another process: a frame's limit
 * (16 MiB) less room for the envelope.  A larger one is refused where it
 * is sent, with -TR_EMSGSIZE and an error object naming the sizes: the
 * call, tr_stream_send or tr_ctx_started returns it; a function whose
 * result is too large fails in the callee with it, so its caller gets
 * -TR_EREMOTE with boxed type MessageTooLarge (a failure of the remote
 * function, as any other); and tr_run_in_actor_opts with a process child
 * refuses such arguments before it starts anything.
 * Between actors of one process values are not copied and have no limit. */
#define TR_REMOTE_VALUE_MAX ((16u << 20) - (64u << 10))

/* The most of an error's text that goes to an actor in another process:
 * its message and its trace (as tr_error_message and tr_error_trace give
 * them) are each cut to this many bytes, at a UTF-8 character's start, and
 * end with " ... [cut: N bytes in all]" when they were longer.  So an
 * error of any size reaches the caller, as a RemoteActorError of the
 * same type and code (it could not be sent at all, and the caller waited
 * for it forever).  Between actors of one process nothing is cut. */
#define TR_REMOTE_ERROR_TEXT_MAX (64u << 10)

/*
 * Calls STREAM function `qualified` and returns the stream of values it
 * sends (open_stream_from).  Blocks until the callee has accepted the call
 * (StartAck) or refused it (as tr_portal_run: -TR_ENOFUNC,
 * -TR_ENOTEXPOSED, -TR_EFUNCKIND for a non-STREAM export, -TR_ECLOSED,
 * -TR_ECANCELED: in a cancelled scope at once with nothing sent; when
 * cancelled while waiting, after the bounded teardown described above).
 * Then tr_stream_recv returns the values in order and
 * -TR_EEOF once the function has returned; a failure of the function is
 * returned by tr_stream_recv (-TR_EREMOTE, boxed) after the values that
 * preceded it.  tr_stream_close before the end cancels the remote task
 * (Cancel), waits at most TR_CTX_CANCEL_TIMEOUT_NS for its answer and
 * absorbs the ContextCancelled it gives; it returns 0 also when no answer
 * came in that time (the dialog is abandoned, and a late answer is
 * dropped).  A callee in another process that is lost before the open
 * returns (its process died just after StartAck) fails the open with
 * -TR_EIO, and the values it had sent are dropped with the dialog.
 * Ownership: args borrowed; *out is the caller's, ended and freed by
 * tr_stream_close.  opts may be NULL.
 * Threads: a task.
 */
int tr_portal_open_stream_from(tr_portal_t *p, const char *qualified, const tr_buf_t *args,
                               const tr_ctx_opts_t *opts, tr_stream_t **out);

/*
 * Opens a context with CONTEXT function `qualified`: blocks until the
 * callee calls tr_ctx_started, then returns 0 with *ctx and *first (the
 * started value, a new reference, NULL if empty).  If the function fails
 * before started, that failure is returned (boxed, as tr_portal_run); if
 * it returns 0 without calling tr_ctx_started, -TR_EPROTO ("... returned
 * before calling tr_ctx_started"); either way no ctx is made.  -TR_ECANCELED in a cancelled scope
 * (nothing sent), or when the caller is cancelled while waiting for
 * started (the callee is cancelled, with the bounded teardown above).
 * The context opens a cancel scope on the calling task (tractor's
 * open_context block): an Error from the callee cancels it, so the task's
 * blocking calls inside return -TR_ECANCELED promptly and the context's own
 * operations return the boxed error.  Leave it with tr_ctx_close, from the
 * task that opened it, after the scopes opened inside it are closed.
 * Ownership: args borrowed; *ctx is the caller's until tr_ctx_close;
 * *first is the caller's.  opts may be NULL.  Threads: a task.
 */
int tr_portal_open_context(tr_portal_t *p, const char *qualified, const tr_buf_t *args,
                           const tr_ctx_opts_t *opts, tr_ctx_t **ctx, tr_buf_t **first);

/*
 * Callee side: sends the started value (Started) that the caller's
 * tr_portal_open_context returns.  Once per context: a second call returns
 * -TR_EBUSY, a call on the caller's side or in a FN/STREAM function
 * -TR_EPERM; neither sends anything.
 * Ownership: value borrowed (NULL = empty).
 */
int tr_ctx_started(tr_ctx_t *ctx, const tr_buf_t *value);

/*
 * Opens the context's bidirectional MsgStream, on either side, once
 * (re-opening is -TR_EBUSY).  In a context it needs the started value to
 * have been sent or received (-TR_EPERM before).  In a STREAM function it
 * opens the one-way stream to the caller (no started value needed).
 * Values the peer sent before this side opened its stream are kept, up to
 * the window, and delivered first.  On the caller's side after
 * tr_ctx_cancel (before or after the callee answered) it returns
 * -TR_ECTXCANCELED, every time, with a ContextCancelled naming this actor
 * as the canceller (tractor: "stream opened after Context.cancel()");
 * tr_ctx_close still absorbs that cancellation and returns 0.
 * Ownership: *out belongs to the context (valid until tr_ctx_close on the
 * caller's side, until the function returns on the callee's); close it with
 * tr_stream_close to send Stop.  On failure *out is set to NULL (a stream
 * already open stays open: keep its pointer elsewhere, not in *out).
 */
int tr_ctx_open_stream(tr_ctx_t *ctx, tr_stream_t **out);

/*
 * Cancels the context.  On the caller's side: sends Cancel to the callee
 * and returns at once; the callee's task is cancelled and answers
 * ContextCancelled, which tr_ctx_result / tr_ctx_close absorb (they return
 * 0, and the outcome is still readable from tr_error_last: this side asked
 * for it).  On the callee's side: cancels the function's own scope; the
 * caller then sees ContextCancelled with the callee as canceller, and
 * raises it (-TR_ECTXCANCELED).  Idempotent.  Returns 0.
 * After it, on the caller's side, the stream is over: tr_stream_send,
 * tr_stream_recv and tr_ctx_open_stream return -TR_ECTXCANCELED (or the
 * callee's real failure, if one arrived), PROTOCOL.md 8.3 (a).
 */
int tr_ctx_cancel(tr_ctx_t *ctx);

/*
 * tractor's Context.cancel_called: 1 once cancellation of the context was
 * asked for.  Caller side: by this side (tr_ctx_cancel, tr_ctx_cancel_wait,
 * or leaving it while cancelled).  Callee side: by the function itself
 * (tr_ctx_cancel), by its caller (Cancel), or by a cancel of the callee's
 * actor.  0 otherwise, and for NULL.
 * Threads: a task of the context's actor.
 */
int tr_ctx_cancel_called(const tr_ctx_t *ctx);

/*
 * tractor's Context.cancel_acknowledged: 1 on the caller's side once the
 * callee answered this side's cancel with a ContextCancelled naming this
 * actor as the canceller (the answer tr_ctx_close absorbs).  0 before,
 * when the callee's Return or another error won the race, on the callee's
 * side, and for NULL.
 * Threads: a task of the context's actor.
 */
int tr_ctx_cancel_acked(const tr_ctx_t *ctx);

/*
 * Caller side: cancels the context (as tr_ctx_cancel, once) and waits for
 * the callee's answer, at most timeout_ns (< 0: no limit), without taking
 * the outcome (tractor's `await ctx.cancel(timeout)`): tr_ctx_result and
 * tr_ctx_close still return it later.  Stream values still arriving are
 * dropped.  The wait is shielded (a cancelled caller still leaves in
 * bounded time; pass TR_CTX_CANCEL_TIMEOUT_NS for tractor's default).
 * Returns 0 once the callee's final message is in (tr_ctx_cancel_acked
 * says whether it was the acknowledgement or an outcome that came first),
 * -TR_ETIMEDOUT if it did not arrive in time, -TR_EPERM on the callee's
 * side or outside a task of the context's actor, -TR_EBUSY while
 * tr_ctx_close runs.
 * Threads: a task of the context's actor.
 */
int tr_ctx_cancel_wait(tr_ctx_t *ctx, int64_t timeout_ns);

/*
 * Caller side: waits for the context's final outcome, discarding stream
 * values still arriving (tractor's drain): 0 with *result (a new
 * reference, NULL if empty) when the function returned; the boxed error
 * otherwise (-TR_EREMOTE, -TR_ECTXCANCELED with tr_error_canceller set, ...);
 * 0 for an absorbed ContextCancelled (see tr_ctx_cancel).  The same outcome
 * on every call.  -TR_ECANCELED if the caller is cancelled while waiting
 * (the context is not cancelled by that; tr_ctx_close does it).
 * -TR_EPERM on the callee's side.  result may be NULL.
 */
int tr_ctx_result(tr_ctx_t *ctx, tr_buf_t **result);

/*
 * Caller side: leaves the context (the end of tractor's `async with
 * open_context`).  Sends Stop if this side's stream is open, then:
 *  - normally, waits for the outcome as tr_ctx_result and returns it,
 *    for as long as the callee takes (as tractor's): a callee that waits
 *    for values from a stream this side never opened (so no Stop comes)
 *    waits for ever, and so does this close; cancel the context first
 *    (tr_ctx_cancel) or close inside a deadline to bound it;
 *  - if the calling task is cancelled (its scopes, or the context's own
 *    scope by the caller), sends Cancel, waits at most
 *    TR_CTX_CANCEL_TIMEOUT_NS (0.5 s) for the outcome (shielded), and
 *    returns -TR_ECANCELED; the callee's ContextCancelled is absorbed.
 * A remote error that cancelled the context's scope is returned as the
 * boxed error, never as -TR_ECANCELED.  Closes the context's scope, frees
 * the context and its stream.  -TR_EPERM on the callee's side (the
 * callee's context ends when its function returns); -TR_EBUSY (nothing
 * done) while another task is blocked on the context.
 * result may be NULL (a returned value is then released).
 */
int tr_ctx_close(tr_ctx_t *ctx, tr_buf_t **result);

/* The context's peer actor's name (borrowed, valid with the context). */
const char *tr_ctx_peer(const tr_ctx_t *ctx);

/* The context's window: the messages each direction may have in flight
 * (the caller's tr_ctx_opts_t.window, or the default it chose:
 * TR_STREAM_WINDOW, or TR_STREAM_WINDOW_REMOTE when the callee is in
 * another process; both sides use the caller's choice).  0 for NULL. */
uint32_t tr_ctx_window(const tr_ctx_t *ctx);

/*
 * Sends one value on the stream (Yield).  Costs one credit of this
 * direction's window; without credit it waits for the receiver to consume
 * (cancellable: -TR_ECANCELED), or with TR_OVERRUN_ERROR returns
 * -TR_EOVERRUN at once without sending.  Other errors: -TR_ECLOSED after
 * tr_stream_close on this side or when the peer actor has exited,
 * -TR_ENOMEM (nothing sent, no credit spent), -TR_EPERM on a subscriber,
 * and the context's outcome once it has ended (the boxed remote error,
 * -TR_ECTXCANCELED, or -TR_ECLOSED after a Return).
 * Ownership: msg is borrowed (the receiver gets a reference; in-process
 * nothing is copied: do not modify the buffer afterwards).
 */
int tr_stream_send(tr_stream_t *s, const tr_buf_t *msg);

/*
 * Receives the next value: 0 with *msg (a new reference, NULL for an empty
 * value), or -TR_EEOF once the peer has sent Stop and everything before it
 * was received, or the context's error (boxed) once it has failed, or
 * -TR_ECANCELED.  On a subscriber (tr_stream_subscribe): -TR_ELAGGED when
 * it fell more than the window behind; the error says how many values it
 * missed and the next call resumes at the oldest value still kept.
 */
int tr_stream_recv(tr_stream_t *s, tr_buf_t **msg);

/*
 * Closes the stream.  A context's stream: sends Stop (the peer's recv
 * returns -TR_EEOF after the values before it); receiving stays possible,
 * and the stream is freed with its context.  A stream from
 * tr_portal_open_stream_from: ends the dialog, cancelling the remote task
 * if it has not finished (its ContextCancelled is absorbed), and frees the
 * stream; returns the remote error if the function had failed, else 0.  A
 * subscriber: frees it.  For a stream from tr_portal_open_stream_from and
 * a subscriber: -TR_EBUSY (nothing done) while another task is blocked on
 * it or it still has subscribers.  A context's stream may be closed while
 * another task receives on it (a half-close: Stop goes out, receiving
 * goes on).
 */
int tr_stream_close(tr_stream_t *s);

/*
 * Local broadcast (tractor's MsgStream.subscribe): returns a new receiver
 * of stream s that gets every value s receives from now on.  Several tasks
 * of the actor each subscribe and each gets all values; the underlying
 * stream is consumed as fast as the fastest receiver, so the fastest never
 * loses a value, and a receiver that falls more than the window behind gets
 * -TR_ELAGGED once for that fall (saying how many values it missed) and
 * resumes at the oldest value kept; falling behind again gives it again.  After the first
 * subscription, s itself receives through the broadcast too.
 * Ownership: *out is the caller's; close it (tr_stream_close) before s.
 */
int tr_stream_subscribe(tr_stream_t *s, tr_stream_t **out);

/* The portal's actor (borrowed; valid while the portal is). */
tr_actor_t *tr_portal_actor(const tr_portal_t *p);

/* Releases the portal.  NULL is a no-op.  Threads: any. */
void tr_portal_release(tr_portal_t *p);

/*
 * The child process of a TR_SPAWN_PROCESS portal: *pid (may be NULL) its
 * process id; *status (may be NULL) its wait status once the process is
 * reaped (decode with WIFEXITED / WEXITSTATUS / WIFSIGNALED / WTERMSIG
 * of <sys/wait.h>; the core-dump bit is kept, so WCOREDUMP says whether
 * a killed child dumped core), or -1 while it runs.  An actor nursery's close
 * returns after the reap, so the status is there once it has returned.
 * A program that ignores SIGCHLD (or reaps any child itself) loses the
 * status to the kernel: it reads 0 then, as in Python's subprocess, and a
 * warning is logged.
 * Returns 0, or -TR_EINVAL for a portal to an actor of this process.
 * Ownership: borrows p.  Threads: a task of the actor that owns the
 * nursery while it is open; any thread once it has closed.
 */
int tr_portal_process(const tr_portal_t *p, int *pid, int *status);

#ifdef __cplusplus
}
#endif
#endif
