/*
 * tractor-c error codes.
 *
 * Every public function returns 0 on success or a negative code -TR_E*.
 * Codes are the library's own (not errno values): fibers migrate between
 * threads, so errno is never used to carry a result.  The rich error object
 * (type, message, source actor, trace) arrives with the task layer.
 */
#ifndef TRACTOR_ERRORS_H
#define TRACTOR_ERRORS_H

#ifdef __cplusplus
extern "C" {
#endif

/* The list is an X-macro so that the enum, tr_strerror and tr_errname can
 * never disagree.  Columns: name, value, tractor/trio name, description. */
#define TR_ERRNO_MAP(X)                                                        \
  X(EINVAL, 1, "InvalidArgument", "invalid argument")                          \
  X(ENOMEM, 2, "MemoryError", "out of memory")                                 \
  X(EAGAIN, 3, "WouldBlock", "resource temporarily unavailable (mailbox full)") \
  X(ECLOSED, 4, "TransportClosed", "closed: the peer or actor has exited")     \
  X(ECANCELED, 5, "Cancelled", "operation cancelled")                          \
  X(ETIMEDOUT, 6, "TooSlowError", "deadline expired")                          \
  X(EREMOTE, 7, "RemoteActorError", "error raised in a remote actor")          \
  X(ECTXCANCELED, 8, "ContextCancelled", "context cancelled")                  \
  X(EOVERRUN, 9, "StreamOverrun", "stream overrun: receiver window exceeded")  \
  X(EEOF, 10, "EndOfChannel", "end of stream")                                 \
  X(ENOFUNC, 11, "ModuleNotExposed.NoFunction", "no such exported function")  \
  X(ENOTEXPOSED, 12, "ModuleNotExposed", "namespace not enabled in actor")     \
  X(EFUNCKIND, 13, "FunctionKindError", "wrong kind of function for call")     \
  X(EGROUP, 14, "ExceptionGroup", "several errors (see the error group)")      \
  X(EMSGSIZE, 15, "MessageTooLarge", "message larger than the frame limit")    \
  X(EPROTO, 16, "ProtocolError", "malformed or unexpected protocol message")   \
  X(ENORUNTIME, 17, "NoRuntime", "the runtime is not running")                 \
  X(EAPP, 18, "ApplicationError", "application error (see the error object)")  \
  X(EMSGTYPE, 19, "MsgTypeError", "payload does not decode as declared type")  \
  X(ENOTFOUND, 20, "ActorNotFound", "no actor registered under that name")     \
  X(ELAGGED, 21, "Lagged", "subscriber lagged behind; messages skipped")       \
  X(EIO, 22, "TransportError", "I/O error (see the attached OS error)")        \
  X(EPERM, 23, "PermissionError", "operation not permitted from here")         \
  X(EBUSY, 24, "Busy", "resource busy (already running or in use)")            \
  X(EEXIST, 25, "AlreadyExists", "already exists")

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

#ifdef __cplusplus
}
#endif
#endif
