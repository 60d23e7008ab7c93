/*
 * The rich error object, runtime side: building, boxing, grouping and
 * moving tr_error_t values (the public accessors are in
 * include/tractor/errors.h).
 *
 * Errors never fail to exist.  When memory runs out, the constructors
 * return a shared static error (code -TR_ENOMEM, type "MemoryError") that
 * the mutators leave untouched and tr__error_free ignores, so a failure
 * path never has to handle a failure of its own error report.  That is why
 * the constructors return the object instead of following the
 * `int tr_x_new(tr_x_t **out)` convention.
 *
 * Threads: a tr_error_t has no lock.  It is owned by one task (or thread)
 * at a time and handed over with the happens-before of whatever moves it
 * (a queue, a join).  The static out-of-memory error is immutable and may
 * be shared freely.
 */
#ifndef TR_ERROR_ERROR_H
#define TR_ERROR_ERROR_H

#include <stdarg.h>
#include <stddef.h>

#include <tractor/errors.h>

/* Group nesting deeper than this is refused by tr__error_group_add, so
 * that freeing, copying and formatting (all recursive) stay within a small
 * stack even for groups decoded from the wire. */
#define TR__ERROR_GROUP_DEPTH_MAX 32

/* Hops kept in a trace; later ones are only counted (and shown as such by
 * tr_error_format), so a loop that keeps re-tracing one error stays
 * bounded. */
#define TR__ERROR_TRACE_MAX 64

/*
 * A new error with code (made negative if given positive; must not be 0),
 * type (NULL: tr_errtype(code), or "Error" for an unknown code) and a
 * printf-style message (NULL fmt: tr_strerror(code)).  It is in no slot
 * and has no trace.
 * Ownership: the caller owns the result and frees it with tr__error_free
 * or hands it to tr__error_put / tr__error_group_add.  Never NULL: on
 * allocation failure, the static out-of-memory error.
 * Threads: any thread.
 */
tr_error_t *tr__error_new(int code, const char *type, const char *fmt, ...) TR__PRINTF(3, 4);
tr_error_t *tr__error_newv(int code, const char *type, const char *fmt, va_list ap)
    TR__PRINTF(3, 0);

/*
 * An error group (code -TR_EGROUP, type "ExceptionGroup") with no members
 * yet, in the manner of trio's nursery ExceptionGroup.
 * Ownership and threads: as tr__error_new.
 */
tr_error_t *tr__error_group_new(const char *fmt, ...) TR__PRINTF(1, 2);

/*
 * Deep copy of e (members included).  NULL gives NULL.
 * Ownership: borrows e; the caller owns the copy.  Never NULL for a
 * non-NULL e: on allocation failure, the static out-of-memory error.
 * Threads: any thread.
 */
tr_error_t *tr__error_copy(const tr_error_t *e);

/*
 * Frees e and everything it owns (members included).  NULL and the static
 * out-of-memory error are no-ops.
 * Threads: the owner's.
 */
void tr__error_free(tr_error_t *e);

/* 1 when e is the shared static out-of-memory error.  The mutators below
 * refuse to change it, and the other shared errors of tr__error_quick. */
int tr__error_is_oom(const tr_error_t *e);

/*
 * Mutators.  Each copies its string argument (NULL clears the field where
 * that makes sense) and returns 0, -TR_EINVAL (NULL e, or NULL where a
 * string is required) or -TR_ENOMEM (e is unchanged; also returned for the
 * shared static errors: out-of-memory, tr__error_quick's).
 * Ownership: borrows the arguments.  Threads: the owner's.
 */
int tr__error_set_src(tr_error_t *e, const char *uid);
int tr__error_set_boxed_type(tr_error_t *e, const char *type);
int tr__error_set_src_type(tr_error_t *e, const char *type);
int tr__error_set_canceller(tr_error_t *e, const char *uid);
int tr__error_relay_append(tr_error_t *e, const char *uid);
/* Appends "file:line function" (file or func NULL print as "?"). */
int tr__error_trace_append(tr_error_t *e, const char *file, int line, const char *func);
/* Appends a hop already rendered as a string, such as one received from a
 * remote actor. */
int tr__error_trace_append_str(tr_error_t *e, const char *hop);

/*
 * Boxes e as the error a caller in another actor sees, tractor's
 * RemoteActorError: the first time (no source yet), the original type
 * becomes the boxed type and the source type, type becomes
 * "RemoteActorError", code -TR_EREMOTE and src is set to src_uid.  An
 * error that already has a source is being relayed: src_uid is appended
 * to its relay path, its boxed type becomes the type this hop re-raises
 * (its current type: "RemoteActorError" or "ContextCancelled"), and its
 * source and source type stay, as tractor's boxed_type / src_type.
 * ContextCancelled keeps its code and type (in tractor it is itself a
 * RemoteActorError); set its canceller with tr__error_set_canceller.
 * Returns 0, -TR_EINVAL or -TR_ENOMEM (e then is unchanged).
 * Ownership: borrows src_uid.  Threads: the owner's.
 */
int tr__error_box(tr_error_t *e, const char *src_uid);

/*
 * Adds member to group (which must have code -TR_EGROUP).  Returns 0,
 * -TR_EINVAL (group not a group, member NULL or group itself, or nesting
 * deeper than TR__ERROR_GROUP_DEPTH_MAX) or -TR_ENOMEM.
 * Ownership: always takes member, also on failure (it is then freed), so
 * a caller collecting the errors of failed tasks never has to clean up.
 * Threads: the owner's.
 */
int tr__error_group_add(tr_error_t *group, tr_error_t *member);

/*
 * Removes the current task's error from its slot and returns it (NULL when
 * there is none).
 * Ownership: the caller owns the result (tr__error_free it, or put it
 * somewhere).  Threads: as tr_error_last.
 */
tr_error_t *tr__error_take(void);

/*
 * Makes e the current task's error, freeing the one it replaces.  NULL
 * just clears the slot.  Putting the error already in the slot is a no-op.
 * Ownership: takes e.  Threads: as tr_error_last.
 */
void tr__error_put(tr_error_t *e);

/*
 * Sets where "the current task's error" lives.  hook returns the address
 * of the running task's slot (a tr_error_t * the task layer owns and
 * frees, with tr__error_free, when the task ends), or NULL outside a task;
 * NULL there, or no hook, selects the calling thread's own slot, whose
 * error is freed when the thread exits.  The hook is called on every
 * access, never cached: fibers migrate between threads, so the answer
 * depends on the moment.  hook must not record errors itself.
 * Ownership: none.  Threads: any thread; set it before tasks run (a task
 * whose error went to the thread slot will not find it through the hook).
 */
void tr__error_set_slot_hook(tr_error_t **(*hook)(void));

/*
 * Records, without allocating, a shared immutable error for code (its
 * tractor type and tr_strerror description, no trace) as the current
 * task's error, and returns code (made negative).  For refusals on paths
 * that run in tight loops or must not allocate (tr_send's back-pressure
 * and dead letters), where TR_ERROR's message and trace would cost an
 * allocation per failed call.  Mutators refuse the shared errors;
 * freeing and copying them is free (a copy is the same object).
 * Threads: as tr_error_last.
 */
int tr__error_quick(int code);

/*
 * e itself, or, for a shared error of tr__error_quick, a new error of the
 * same code, type and message that the mutators may change (the
 * out-of-memory error stays itself).  For code about to box or annotate an
 * error it took from a slot.
 * Ownership: takes e (a shared one needs no freeing); the caller owns the
 * result.  Threads: any.
 */
tr_error_t *tr__error_own(tr_error_t *e);

/*
 * The library's common refusals, recorded (TR_ERROR) as the calling
 * task's error, naming the refusing function, and evaluating to the code:
 * `return TR__EINVAL_NULL();` in a public function whose required pointer
 * argument is NULL, TR__EPERM_NOTASK() for a task-only call made outside a
 * task, TR__ENOMEM() when an allocation failed.
 */
#define TR__EINVAL_NULL() TR_ERROR(-TR_EINVAL, "%s: a required argument is NULL", __func__)
#define TR__EPERM_NOTASK() TR_ERROR(-TR_EPERM, "%s must be called from a task", __func__)
#define TR__ENOMEM() TR_ERROR(-TR_ENOMEM, "%s: out of memory", __func__)

/*
 * Testing aid: on the calling thread, makes every allocation of this
 * module after the next `after` ones fail, so the out-of-memory paths can
 * be exercised.  A negative value turns failures off (the default).
 * Threads: affects the calling thread only.
 */
void tr__error_inject_oom(int after);

#endif
