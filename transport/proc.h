/*
 * Child processes (issue 10, process actors): start, watch, stop and reap
 * an OS process, with no zombie and no orphan.
 *
 *   - tr__proc_spawn starts `exe` with posix_spawn (no fork of a threaded
 *     process, so no async-signal-safety trap), in the parent's process
 *     group, with TR_PARENT_PID in its environment.
 *   - The child's side (tr__proc_child_init, a constructor of the library)
 *     sees TR_PARENT_PID and asks the kernel to kill it when its parent
 *     dies (PR_SET_PDEATHSIG, SIGKILL), then checks that the parent is
 *     still the one that started it, closing the race where the parent
 *     died before the request was made: no orphan outlives its parent.
 *   - A pidfd (pidfd_open) watches each child: tr__proc_wait polls it with
 *     a timeout, so waiting is bounded, needs no SIGCHLD handler, and
 *     reaps exactly this child (waitid on the pidfd's pid).
 *   - tr__proc_stop escalates as PROTOCOL.md 8.2 says for a child process:
 *     SIGTERM, a grace period, then SIGKILL, and reaps it.  A child stuck in
 *     a system call with no cancellation point is still gone within the
 *     grace period.
 *
 * Layer: transport, above rpc; uses only the C library and the kernel.
 */
#ifndef TR_TRANSPORT_PROC_H
#define TR_TRANSPORT_PROC_H

#include <stdint.h>
#include <sys/types.h>

typedef struct tr_proc {
  pid_t pid;  /* 0 once reaped */
  int pidfd;  /* -1 once reaped */
  int status; /* as waitpid's, once reaped */
} tr_proc_t;

/* The environment variable a child is started with: the parent's pid. */
#define TR_PARENT_PID_ENV "TR_PARENT_PID"

/*
 * Starts exe (a path; NULL: this executable, /proc/self/exe) with argv
 * (argv[0] first, NULL-terminated) and the parent's environment plus
 * TR_PARENT_PID and the extra "NAME=value" strings of env (NULL-terminated,
 * may be NULL).  Returns 0 with *p set, or -TR_EINVAL, -TR_ENOMEM, or
 * -TR_EIO with the OS error in the error object.
 * Ownership: borrows every argument; *p is the caller's until reaped.
 * Threads: any.
 */
int tr__proc_spawn(const char *exe, char *const argv[], char *const env[], tr_proc_t *p);

/*
 * Waits up to timeout_ns (< 0: forever) for the child to exit and reaps
 * it.  Returns 0 (p->status set, p->pid 0), -TR_ETIMEDOUT (still running),
 * or -TR_EIO (poll failed).  Reaping twice returns 0 again.  A child
 * someone else reaped (the program ignores SIGCHLD, or waits for any
 * child) counts as reaped, with status 0 and a logged warning: its real
 * status is lost.
 * Threads: one thread per tr_proc_t at a time.
 */
int tr__proc_wait(tr_proc_t *p, int64_t timeout_ns);

/*
 * Stops the child: SIGTERM, up to grace_ns for it to exit, then SIGKILL,
 * and reaps it.  Returns 0 (p->status set), or -TR_EIO.  A child that has
 * exited already is only reaped.
 * Threads: as tr__proc_wait.
 */
int tr__proc_stop(tr_proc_t *p, int64_t grace_ns);

/* The child's side, run by a constructor of the library (see the top). */
void tr__proc_child_init(void);

#endif
