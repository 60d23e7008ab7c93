/*
 * Child processes of the test process, as /proc tells them: what the
 * multi-process tests check after each test (no child and no zombie is
 * left), and the open fds and threads.
 */
#ifndef TR_TESTS_SUPPORT_PROCS_H
#define TR_TESTS_SUPPORT_PROCS_H

#include <dirent.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* Children of this process that still exist (zombies included). */
static inline int tr_test_live_children(void) {
  DIR *d = opendir("/proc");
  int n = 0;
  struct dirent *e;
  while (d && (e = readdir(d))) {
    char path[300], buf[512];
    snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
    FILE *f = fopen(path, "r");
    if (!f)
      continue;
    size_t len = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[len] = '\0';
    char *rp = strrchr(buf, ')'); /* after the command name */
    long ppid = 0;
    char state = 0;
    if (rp && sscanf(rp + 1, " %c %ld", &state, &ppid) == 2 && ppid == (long)getpid())
      n++;
  }
  if (d)
    closedir(d);
  return n;
}

/* Open file descriptors of this process. */
static inline int tr_test_open_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  int n = 0;
  while (d && readdir(d))
    n++;
  if (d)
    closedir(d);
  return n - 3; /* ".", ".." and the directory's own fd */
}

/* Threads of this process. */
static inline int tr_test_threads(void) {
  DIR *d = opendir("/proc/self/task");
  int n = 0;
  while (d && readdir(d))
    n++;
  if (d)
    closedir(d);
  return n - 2; /* "." and ".." */
}

/* A test's .init and .fini that check nothing is left behind: no child
 * process or zombie, no extra fd, no extra thread (Criterion runs each
 * test in a process of its own, so the counts are the test's). */
#ifdef cr_expect_eq
static int tr__procs_fds, tr__procs_threads;
static inline void tr_test_procs_setup(void) {
  tr__procs_fds = tr_test_open_fds();
  tr__procs_threads = tr_test_threads();
}
static inline void tr_test_procs_check(void) {
  cr_expect_eq(tr_test_live_children(), 0, "no child process or zombie is left");
  cr_expect_eq(tr_test_open_fds(), tr__procs_fds, "no fd is left open");
  cr_expect_eq(tr_test_threads(), tr__procs_threads, "no thread is left running");
}
#endif

/* tools/tractor-registry, the standalone registrar (its path in
 * TR_REGISTRY_TOOL), started at addr, with --secret secret unless NULL:
 * its pid once it accepts connections (no sleep decides: the connect
 * says so), or -1. */
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "transport/listen.h"

extern char **environ;

static inline pid_t tr_test_registry_tool_start(const char *addr, const char *secret) {
  const char *tool = getenv("TR_REGISTRY_TOOL");
  struct sockaddr_in sa;
  if (!tool || tr__addr_parse(addr, &sa) != 0)
    return -1;
  char *const plain[] = {(char *)tool, "--addr", (char *)addr, "-q", NULL};
  char *const with[] = {(char *)tool, "--addr",        (char *)addr, "-q",
                        "--secret",   (char *)secret, NULL};
  pid_t pid;
  if (posix_spawn(&pid, tool, NULL, NULL, secret ? with : plain, environ) != 0)
    return -1;
  for (int i = 0; i < 500; i++) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int ok = fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    if (ok && tr__sock_self_connected(fd)) { /* nothing listens yet: free the port at once */
      ok = 0;
      (void)setsockopt(fd, SOL_SOCKET, SO_LINGER, &(struct linger){1, 0}, sizeof(struct linger));
    }
    if (fd >= 0)
      close(fd);
    if (ok)
      return pid;
    nanosleep(&(struct timespec){0, 10 * 1000 * 1000}, NULL);
  }
  kill(pid, SIGKILL);
  waitpid(pid, NULL, 0);
  return -1;
}

/* Stops a tool started above: SIGTERM, then its exit awaited for up to
 * 10 s; one that is still there then is killed (SIGKILL) and reaped, so
 * that a registrar that does not stop fails its test, saying so, rather
 * than hang it (and outlive it, holding ctest's output pipe).  *status:
 * its wait status.  Returns 0 when it exited on SIGTERM within the bound,
 * -1 when it had to be killed (or could not be waited for). */
static inline int tr_test_registry_tool_stop(pid_t pid, int *status) {
  *status = -1;
  /* Its pidfd turns readable when it exits: a wait with a timeout, no
   * polling loop. */
  int pfd = (int)syscall(SYS_pidfd_open, pid, 0);
  kill(pid, SIGTERM);
  struct pollfd pf = {.fd = pfd, .events = POLLIN};
  int exited = pfd >= 0 && poll(&pf, 1, 10000) == 1;
  if (pfd >= 0)
    close(pfd);
  if (!exited)
    kill(pid, SIGKILL);
  if (waitpid(pid, status, 0) != pid)
    return -1;
  return exited ? 0 : -1;
}

#endif
