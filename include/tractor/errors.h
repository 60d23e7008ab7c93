/*
 * tractor-c error codes.
 *
 * Every public function returns 0 on success or a negative code -TR_E*.
 * A NULL pointer argument that its comment does not allow is -TR_EINVAL,
 * with an error object, whether or not the function's list names it.
 * Codes are the library's own (not errno values): fibers migrate between
 * threads, so errno is never used to carry a result.  The detail a code
 * cannot carry (type name, message, source actor, relay path, trace, the
 * members of an error group) lives in a tr_error_t, one per task: the
 * calling task's last error is tr_error_last().
 */
#ifndef TRACTOR_ERRORS_H
#define TRACTOR_ERRORS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The list is an X-macro so that the enum, tr_strerror and tr_errname can
 * never disagree.  Columns: name, value, tractor/trio name, description. */
/* clang-format off: one code per line reads as a table. */
#define TR_ERRNO_MAP(X)                                                                            \
  X(EINVAL, 1, "InvalidArgument", "invalid argument")                                              \
  X(ENOMEM, 2, "MemoryError", "out of memory")                                                     \
  X(EAGAIN, 3, "WouldBlock", "resource temporarily unavailable (mailbox full)")                    \
  X(ECLOSED, 4, "TransportClosed", "closed: the peer or actor has exited")                         \
  X(ECANCELED, 5, "Cancelled", "operation cancelled")                                              \
  X(ETIMEDOUT, 6, "TooSlowError", "deadline expired")                                              \
  X(EREMOTE, 7, "RemoteActorError", "error raised in a remote actor")                              \
  X(ECTXCANCELED, 8, "ContextCancelled", "context cancelled")                                      \
  X(EOVERRUN, 9, "StreamOverrun", "stream overrun: receiver window exceeded")                      \
  X(EEOF, 10, "EndOfChannel", "end of stream")                                                     \
  X(ENOFUNC, 11, "ModuleNotExposed.NoFunction", "no such exported function")                       \
  X(ENOTEXPOSED, 12, "ModuleNotExposed", "namespace not enabled in actor")                         \
  X(EFUNCKIND, 13, "FunctionKindError", "wrong kind of function for call")                         \
  X(EGROUP, 14, "ExceptionGroup", "several errors (see the error group)")                          \
  X(EMSGSIZE, 15, "MessageTooLarge", "message larger than the frame limit")                        \
  X(EPROTO, 16, "ProtocolError", "malformed or unexpected protocol message")                       \
  X(ENORUNTIME, 17, "NoRuntime", "the runtime is not running")                                     \
  X(EAPP, 18, "ApplicationError", "application error (see the error object)")                      \
  X(EMSGTYPE, 19, "MsgTypeError", "payload does not decode as declared type")                      \
  X(ENOTFOUND, 20, "ActorNotFound", "no actor registered under that name")                         \
  X(ELAGGED, 21, "Lagged", "subscriber lagged behind; messages skipped")                           \
  X(EIO, 22, "TransportError", "I/O error (see the attached OS error)")                            \
  X(EPERM, 23, "PermissionError", "operation not permitted from here")                             \
  X(EBUSY, 24, "Busy", "resource busy (already running or in use)")                                \
  X(EEXIST, 25, "AlreadyExists", "already exists")
/* clang-format on */

typedef enum tr_errno {
#define TR__ERR_ENUM(name, val, type, desc) TR_##name = val,
  TR_ERRNO_MAP(TR__ERR_ENUM)
#undef TR__ERR_ENUM
      TR_ERRNO_MAX_
} tr_errno_t;

/*
 * Human-readable description of a return code (0, -TR_E* or TR_E*).
 * Unknown codes give "unknown error".
 * Ownership: the string is static; never free it.
 * Threads: any thread, async-signal-safe.
 */
const char *tr_strerror(int rc);

/*
 * Short symbolic name of a code: "TR_ECANCELED", "OK" for 0, "TR_E?" when
 * unknown.
 * Ownership: static string.  Threads: any thread.
 */
const char *tr_errname(int rc);

/*
 * The tractor (Python) exception name a code corresponds to, such as
 * "ContextCancelled" for TR_ECTXCANCELED, or NULL when unknown.
 * Ownership: static string.  Threads: any thread.
 */
const char *tr_errtype(int rc);

/* ---- the rich error object ---------------------------------------------
 *
 * The Python original raises exceptions; here a failing call returns
 * -TR_E* and leaves a tr_error_t describing the failure in the calling
 * task's error slot (code outside any task, such as the root thread before
 * the runtime starts, has a slot per thread).  A new failure replaces the
 * previous error, so tr_error_last() describes the most recent one.
 *
 * Fields mirror tractor's RemoteActorError and trio's ExceptionGroup:
 *  - code: the -TR_E* the failing call returned;
 *  - type: the exception name, such as "ValueError"; the tractor name of
 *    the code (tr_errtype) when none was given;
 *  - boxed type: for an error raised in another actor, the type the last
 *    actor it came through raised (tractor's boxed_type): the original
 *    type when it crossed one hop, "RemoteActorError" (or
 *    "ContextCancelled") when an intermediate actor relayed it; while
 *    type says "RemoteActorError" (NULL when not boxed);
 *  - source type: the type where the error was first raised, whatever
 *    the relays (tractor's src_type; NULL when not boxed);
 *  - message, source actor (name and uid), relay path (the actors that
 *    passed the error on after its source: names through tr_error_relay,
 *    uids through tr_error_relay_uid), canceller (for ContextCancelled);
 *  - trace: "file:line function" hops, index 0 where the error was raised,
 *    then each caller that passed it on with TR_TRACE;
 *  - for -TR_EGROUP, the member errors, each a tr_error_t.  A group
 *    raised in another actor arrives boxed (-TR_EREMOTE, boxed type
 *    ExceptionGroup) with no members of its own: as tractor's boxed
 *    ExceptionGroup carries them in its traceback text, each member is
 *    rendered (tr_error_format) into its trace, under "member I of N:".
 *
 * Ownership: every tr_error_t handed out by this API is borrowed; the
 * strings returned by the accessors live as long as their error.
 * Threads: an error belongs to the task (or thread) that raised it.  The
 * accessors do not lock; reading another task's error needs the usual
 * happens-before hand-off.
 */
typedef struct tr_error tr_error_t;

#if defined(__GNUC__) || defined(__clang__)
#define TR__PRINTF(fmt_idx, arg_idx) __attribute__((format(printf, fmt_idx, arg_idx)))
#else
#define TR__PRINTF(fmt_idx, arg_idx)
#endif

/*
 * The calling task's last error, or NULL when it has none.
 * Ownership: borrowed; valid until the task's next call into the library
 * other than the tr_error_* accessors (as errno's value, a failing call
 * replaces it, and a call that succeeds may clear it: tr_portal_run and
 * tr_stream_close do, and so does tr_ctx_result, unless the 0 it returns
 * is an absorbed ContextCancelled, which it leaves here to read), or
 * tr_error_clear().  Copy
 * (tr_error_copy) or take (tr_error_take) what must outlive that.
 * Threads: any thread; the error is the current task's (or, outside a
 * task, the current thread's).
 */
const tr_error_t *tr_error_last(void);

/*
 * Forgets the calling task's last error and frees it.
 * Threads: as tr_error_last.
 */
void tr_error_clear(void);

/*
 * Keeping an error beyond cleanup, and raising it again (Python's
 * `except E as e: ...; raise e`).  Cleanup calls (tr_ctx_close,
 * tr_nursery_close, ...) may record errors of their own, replacing
 * tr_error_last(); take the error first, clean up, then re-raise it:
 *
 *     int rc = tr_portal_run(p, "ns.fn", NULL, NULL);
 *     tr_error_t *err = rc ? tr_error_take() : NULL;
 *     tr_actor_nursery_close(an);
 *     if (err)
 *       return tr_error_raise(err);   // rc, with source, relay, canceller
 *
 * tr_error_take() removes the calling task's last error from its slot and
 * returns it (NULL when there is none); tr_error_copy(e) returns a deep
 * copy of any error (NULL for NULL).  tr_error_raise(e) makes e the calling
 * task's last error, with the call site appended to its trace, and
 * evaluates to its code, so `return tr_error_raise(e);` fails the current
 * function with the original error (source, relay path, canceller, group
 * members and all).  A NULL e records -TR_EINVAL.
 * Ownership: tr_error_take and tr_error_copy give the caller an owned
 * error, which it either passes to tr_error_raise (which takes it) or
 * frees with tr_error_free (NULL is a no-op).  Under memory exhaustion
 * the copy may be a shared static MemoryError; tr_error_free and
 * tr_error_raise handle it as any other.
 * Threads: as tr_error_last; an owned error may be handed to another task
 * (with the usual happens-before) and raised there.
 */
tr_error_t *tr_error_take(void);
tr_error_t *tr_error_copy(const tr_error_t *e);
void tr_error_free(tr_error_t *e);
#define tr_error_raise(e) tr__error_raise_at((e), __FILE__, __LINE__, __func__)

int tr__error_raise_at(tr_error_t *e, const char *file, int line, const char *func);

/*
 * Accessors.  Each returns NULL (strings) or 0 (numbers) when e is NULL,
 * and NULL when the field is unset (type and message are always set;
 * message may be "").
 * Ownership: strings are borrowed from e.  Threads: see above.
 */
int tr_error_code(const tr_error_t *e);
const char *tr_error_type(const tr_error_t *e);
const char *tr_error_boxed_type(const tr_error_t *e);
const char *tr_error_src_type(const tr_error_t *e);
const char *tr_error_message(const tr_error_t *e);
const char *tr_error_src(const tr_error_t *e);
const char *tr_error_canceller(const tr_error_t *e);

/* The same actors by uid ("name@<32 hex digits>", see tr_actor_uid):
 * two actors may share a name, never a uid.  An actor known only by name
 * (an error built by hand, a peer that sent no uuid) gives its name. */
const char *tr_error_src_uid(const tr_error_t *e);
const char *tr_error_canceller_uid(const tr_error_t *e);
const char *tr_error_relay_uid(const tr_error_t *e, size_t i);

/* The relay path (the Error's relay_path, docs/PROTOCOL.md section 3): the
 * names of the actors that re-raised the error after its source, oldest
 * first; tr_error_relay_uid(e, i) gives the same hop's uid.  Out-of-range
 * i gives NULL. */
size_t tr_error_relay_len(const tr_error_t *e);
const char *tr_error_relay(const tr_error_t *e, size_t i);

/* The trace: "file:line function" hops, 0 being where the error was raised
 * and each next one the caller that passed it on.  Out-of-range i gives
 * NULL.  A boxed remote error's trace is the source's rendered trace, one
 * line per hop in the same order: so a remote error group's members
 * ("member 1 of 2:", their types, codes and traces) are lines too, and
 * read from the last index down to 0 they give the text tr_error_format
 * prints ("most recent call last"). */
size_t tr_error_trace_len(const tr_error_t *e);
const char *tr_error_trace(const tr_error_t *e, size_t i);

/* The members of an error group (code -TR_EGROUP): 0 for other errors.
 * Members may themselves be groups.  Out-of-range i gives NULL. */
size_t tr_error_group_count(const tr_error_t *e);
const tr_error_t *tr_error_group_get(const tr_error_t *e, size_t i);

/*
 * Renders e for a human, several lines in the manner of a Python
 * traceback: "Type: message", then the code, boxed type, source, relay
 * path, canceller, the trace (most recent call last), and group members
 * indented beneath their group.  A NULL e renders as "".
 * Returns, as snprintf, the length of the whole rendering (excluding the
 * NUL), whatever len was; buf always ends with a NUL when len > 0 (the
 * rendering is cut short when it does not fit).  buf may be NULL when len
 * is 0, to measure.  Returns -TR_EMSGSIZE if the rendering would exceed
 * INT_MAX bytes, recording no error object (one would replace the error
 * being rendered, which is often tr_error_last's).
 * Ownership: borrows e; writes at most len bytes to buf.
 * Threads: as the accessors.
 */
int tr_error_format(const tr_error_t *e, char *buf, size_t len);

/*
 * tr_fail("ValueError", "bad value %d", v): records an application error
 * of that type (code -TR_EAPP) as the calling task's last error, with the
 * call site as the first trace hop, and evaluates to -TR_EAPP so that
 * `return tr_fail(...);` fails the current function.  A NULL type means
 * "ApplicationError".  The arguments may refer to the previous error's
 * strings: it is freed only after the new one is built.
 * Ownership: type and the message are copied.  Threads: as tr_error_last.
 * If memory runs out the recorded error is a shared static one with code
 * -TR_ENOMEM; the return value is -TR_EAPP all the same.
 */
#define tr_fail(type, ...) tr__fail_at(__FILE__, __LINE__, __func__, (type), __VA_ARGS__)

int tr__fail_at(const char *file, int line, const char *func, const char *type, const char *fmt,
                ...) TR__PRINTF(5, 6);

/*
 * TR_ERROR(-TR_EINVAL, "bad name '%s'", name): records an error with that
 * code, type tr_errtype(code) and the call site as its first trace hop,
 * and evaluates to the code (made negative if it was given positive).
 * Code 0 records nothing and gives 0.  A NULL format gives the message
 * tr_strerror(code).  Meant for the library's own failures; callers may
 * use it too.
 * Ownership and threads: as tr_fail.
 */
#define TR_ERROR(code, ...) tr__error_set((code), __FILE__, __LINE__, __func__, __VA_ARGS__)

int tr__error_set(int code, const char *file, int line, const char *func, const char *fmt, ...)
    TR__PRINTF(5, 6);

/*
 * `return TR_TRACE(rc);` appends this call site to the current error's
 * trace when rc is negative and equals the current error's code, then
 * evaluates to rc unchanged (rc is evaluated once).  Used on the way up,
 * it builds the trace as the error propagates.  A code that was returned
 * without recording an error leaves the slot alone.  The trace keeps its
 * first 64 hops and counts the rest.
 * Threads: as tr_error_last.
 */
#define TR_TRACE(rc) tr__error_trace_here((rc), __FILE__, __LINE__, __func__)

int tr__error_trace_here(int rc, const char *file, int line, const char *func);

#ifdef __cplusplus
}
#endif
#endif
