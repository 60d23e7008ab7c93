/*
 * Child processes: spawn, wait with a bound, stop with escalation, reap.
 * See transport/proc.h.
 */
#define _GNU_SOURCE
#include "transport/proc.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <tractor/errors.h>
#include <tractor/log.h>
#include <tractor/time.h>

#include "runtime/reactor/reactor.h"
#include "runtime/error/error.h"

extern char **environ;

static int os_fail(const char *what) {
  int e = errno;
  return TR_ERROR(-TR_EIO, "%s: %s", what, strerror(e));
}

/* Variables of this process that would mislead the child: its own
 * parent's markers (a grandchild gets its parent's, from the extras),
 * Criterion's sandbox marker (BoxFort's BXFI_MAP: a test worker started
 * with it, and a child that inherited it would take itself for a test
 * worker and abort), and the shared secret: a child gets the key derived
 * from it (TR_AUTH_KEY, in the extras), never the secret itself. */
static int inherited_marker(const char *var) {
  static const char *const names[] = {TR_PARENT_PID_ENV "=", "TR_PARENT_ADDR=", "TR_AUTH_KEY=",
                                      "TR_PEER_TIMEOUT_MS=", "TR_SECRET=", "TR_SECRET_FILE=",
                                      "BXFI_MAP="};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
    if (strncmp(var, names[i], strlen(names[i])) == 0)
      return 1;
  return 0;
}

int tr__proc_spawn(const char *exe, char *const argv[], char *const env[], tr_proc_t *p) {
  if (!argv || !argv[0] || !p)
    return TR__EINVAL_NULL();
  p->pid = 0;
  p->pidfd = -1;
  p->status = 0;
  /* The environment: TR_PARENT_PID and the extras first, then the
   * parent's, without the inherited markers. */
  size_t n_extra = 0, n_env = 0;
  while (env && env[n_extra])
    n_extra++;
  while (environ && environ[n_env])
    n_env++;
  char **envp = calloc(n_extra + n_env + 2, sizeof(char *));
  char parent[64];
  if (!envp)
    return TR__ENOMEM();
  snprintf(parent, sizeof parent, "%s=%ld", TR_PARENT_PID_ENV, (long)getpid());
  size_t k = 0;
  envp[k++] = parent;
  for (size_t i = 0; i < n_extra; i++)
    envp[k++] = env[i];
  for (size_t i = 0; i < n_env; i++)
    if (!inherited_marker(environ[i]))
      envp[k++] = environ[i];
  envp[k] = NULL;
  pid_t pid;
  int rc = posix_spawn(&pid, exe ? exe : "/proc/self/exe", NULL, NULL, argv, envp);
  free(envp);
  if (rc != 0)
    return TR_ERROR(-TR_EIO, "cannot start %s: %s", exe ? exe : "this program (/proc/self/exe)",
                    strerror(rc));
  int fd = (int)syscall(SYS_pidfd_open, pid, 0);
  if (fd < 0) {
    /* No pidfd: stop it and reap it now rather than lose track of it. */
    int e = errno;
    kill(pid, SIGKILL);
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
      ;
    errno = e;
    return os_fail("pidfd_open");
  }
  p->pid = pid;
  p->pidfd = fd;
  return 0;
}

/* Reaps the child if it has exited; 1 when reaped, 0 when still running. */
static int try_reap(tr_proc_t *p) {
  siginfo_t si;
  memset(&si, 0, sizeof si);
  int rc;
  while ((rc = waitid(P_PID, (id_t)p->pid, &si, WEXITED | WNOHANG)) < 0 && errno == EINTR)
    ;
  if (rc < 0) {
    /* ECHILD: reaped by someone else (SIGCHLD ignored, or the program
     * waits for any child): gone, its status lost; taken as 0, as
     * Python's subprocess does.  Any other error: this child cannot be
     * waited for, so it is killed (through the pidfd: never a reused
     * pid) and counted as gone, rather than watched again for ever. */
    int e = errno;
    if (e != ECHILD)
      (void)syscall(SYS_pidfd_send_signal, p->pidfd, SIGKILL, NULL, 0);
    tr_log(e == ECHILD ? TR_LOG_WARN : TR_LOG_ERROR,
           "child process %d cannot be waited for (%s%s): its exit status is unknown, taken as 0",
           (int)p->pid, strerror(e), e == ECHILD ? ": is SIGCHLD ignored?" : "");
    si.si_code = CLD_EXITED;
    si.si_status = 0;
  } else if (si.si_pid == 0) {
    return 0;
  }
  /* As waitpid's status: WIFEXITED/WEXITSTATUS, or WTERMSIG with the
   * core-dump bit (WCOREDUMP) for CLD_DUMPED. */
  p->status = si.si_code == CLD_EXITED ? (si.si_status & 0xff) << 8
                                       : (si.si_status & 0x7f) | (si.si_code == CLD_DUMPED ? 0x80 : 0);
  close(p->pidfd);
  p->pidfd = -1;
  p->pid = 0;
  return 1;
}

int tr__proc_wait(tr_proc_t *p, int64_t timeout_ns) {
  if (!p)
    return TR__EINVAL_NULL();
  if (p->pid == 0)
    return 0;
  int64_t deadline = timeout_ns < 0 ? -1 : tr__deadline_after(timeout_ns);
  for (;;) {
    if (try_reap(p))
      return 0;
    int ms = -1;
    if (deadline >= 0) {
      int64_t left = deadline - tr_now();
      if (left <= 0)
        return TR_ERROR(-TR_ETIMEDOUT, "child %ld still running", (long)p->pid);
      ms = (int)((left + 999999) / 1000000);
    }
    struct pollfd pfd = {.fd = p->pidfd, .events = POLLIN};
    if (poll(&pfd, 1, ms) < 0 && errno != EINTR)
      return os_fail("poll(pidfd)");
  }
}

int tr__proc_stop(tr_proc_t *p, int64_t grace_ns) {
  if (!p)
    return TR__EINVAL_NULL();
  if (p->pid == 0)
    return 0;
  /* Through the pidfd: never a reused pid. */
  if (syscall(SYS_pidfd_send_signal, p->pidfd, SIGTERM, NULL, 0) < 0 && errno != ESRCH)
    return os_fail("pidfd_send_signal(SIGTERM)");
  int rc = tr__proc_wait(p, grace_ns);
  if (rc != -TR_ETIMEDOUT)
    return rc;
  tr_error_clear();
  if (syscall(SYS_pidfd_send_signal, p->pidfd, SIGKILL, NULL, 0) < 0 && errno != ESRCH)
    return os_fail("pidfd_send_signal(SIGKILL)");
  return tr__proc_wait(p, -1);
}

void tr__proc_child_init(void) {
  const char *s = getenv(TR_PARENT_PID_ENV);
  if (!s)
    return;
  char *end;
  long parent = strtol(s, &end, 10);
  if (*end != '\0' || parent <= 0)
    return;
  /* The marker is for this process only: its own children get ours. */
  unsetenv(TR_PARENT_PID_ENV);
  (void)prctl(PR_SET_PDEATHSIG, SIGKILL);
  if ((long)getppid() != parent) /* it died before the request: the same end */
    (void)kill(getpid(), SIGKILL);
}

__attribute__((constructor)) static void proc_child_ctor(void) { tr__proc_child_init(); }
