/*
 * Child processes (transport/proc.h): exit status, bounded waits, the
 * SIGTERM -> grace -> SIGKILL escalation, death with the parent
 * (PR_SET_PDEATHSIG), and no zombie left after any test.  The child is
 * tests/transport/proc_child.c, whose path ctest passes in TR_PROC_CHILD.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <tractor/errors.h>
#include <tractor/time.h>

#include "../support/procs.h"
#include "transport/proc.h"

#define MS (1000 * 1000LL)

static char *child_exe(void) {
  char *p = getenv("TR_PROC_CHILD");
  cr_assert(p != NULL, "TR_PROC_CHILD names the child program");
  return p;
}

static void no_children_left(void) {
  cr_assert_eq(tr_test_live_children(), 0, "no child or zombie of this process is left");
}

/* Waits (bounded) until path exists; the child creates it when ready. */
static int wait_file(const char *path, int64_t timeout_ns, char *out, size_t len) {
  int64_t until = tr_now() + timeout_ns;
  while (tr_now() < until) {
    FILE *f = fopen(path, "r");
    if (f) {
      size_t n = fread(out, 1, len - 1, f);
      fclose(f);
      out[n] = '\0';
      return 1;
    }
    struct timespec ts = {0, 1000000};
    nanosleep(&ts, NULL); /* polling a file the child writes: no other signal */
  }
  return 0;
}

static void temp_path(char *buf, size_t len, const char *tag) {
  snprintf(buf, len, "/tmp/tr_proc_%s_%ld_%lld", tag, (long)getpid(), (long long)tr_now());
}

Test(proc, exit_status_is_reaped, .timeout = 30) {
  char *argv[] = {child_exe(), "exit", "7", NULL};
  tr_proc_t p;
  cr_assert_eq(tr__proc_spawn(child_exe(), argv, NULL, &p), 0);
  cr_assert_gt(p.pid, 0);
  cr_assert_eq(tr__proc_wait(&p, 10000 * MS), 0);
  cr_assert(WIFEXITED(p.status) && WEXITSTATUS(p.status) == 7, "status %#x", p.status);
  cr_assert_eq(p.pid, 0);
  cr_assert_eq(tr__proc_wait(&p, 0), 0, "reaping twice is harmless");
  no_children_left();
}

Test(proc, wait_is_bounded_and_stop_terminates, .timeout = 30) {
  char *argv[] = {child_exe(), "sleep", "20", NULL};
  tr_proc_t p;
  cr_assert_eq(tr__proc_spawn(child_exe(), argv, NULL, &p), 0);
  int64_t t0 = tr_now();
  cr_assert_eq(tr__proc_wait(&p, 100 * MS), -TR_ETIMEDOUT);
  cr_assert_geq(tr_now() - t0, 100 * MS);
  cr_assert_eq(tr__proc_stop(&p, 5000 * MS), 0);
  cr_assert(WIFSIGNALED(p.status) && WTERMSIG(p.status) == SIGTERM, "status %#x", p.status);
  cr_assert_lt(tr_now() - t0, 4000 * MS, "SIGTERM ended it, not the grace period");
  no_children_left();
}

/* A child that ignores SIGTERM (as one stuck where nothing cancels it)
 * is killed when the grace period ends. */
Test(proc, stop_escalates_to_sigkill, .timeout = 30) {
  char ready[256];
  temp_path(ready, sizeof ready, "ready");
  char *argv[] = {child_exe(), "term-ignore", ready, NULL};
  tr_proc_t p;
  cr_assert_eq(tr__proc_spawn(child_exe(), argv, NULL, &p), 0);
  char text[32];
  cr_assert(wait_file(ready, 10000 * MS, text, sizeof text), "the child ignores SIGTERM now");
  unlink(ready);
  int64_t t0 = tr_now();
  cr_assert_eq(tr__proc_stop(&p, 300 * MS), 0);
  int64_t took = tr_now() - t0;
  cr_assert(WIFSIGNALED(p.status) && WTERMSIG(p.status) == SIGKILL, "status %#x", p.status);
  cr_assert_geq(took, 300 * MS, "the grace period was given");
  cr_assert_lt(took, 3000 * MS, "then it was killed (%lld ms)", (long long)(took / MS));
  no_children_left();
}

/* A child dies with its parent: the middle process starts a grandchild
 * and is killed; the grandchild (PR_SET_PDEATHSIG) goes with it.  This
 * process becomes the subreaper so that it can reap and inspect it. */
Test(proc, grandchild_dies_with_its_parent, .timeout = 30) {
  cr_assert_eq(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
  char pidfile[256];
  temp_path(pidfile, sizeof pidfile, "gpid");
  char *argv[] = {child_exe(), "middle", pidfile, NULL};
  tr_proc_t p;
  cr_assert_eq(tr__proc_spawn(child_exe(), argv, NULL, &p), 0);
  char text[32];
  cr_assert(wait_file(pidfile, 10000 * MS, text, sizeof text), "the grandchild started");
  unlink(pidfile);
  pid_t g = (pid_t)atol(text);
  cr_assert_gt(g, 0);
  cr_assert_eq(kill(p.pid, SIGKILL), 0);
  cr_assert_eq(tr__proc_wait(&p, 10000 * MS), 0);
  /* Reparented to us, then killed by the kernel for its parent's death. */
  int status = 0;
  pid_t r;
  while ((r = waitpid(g, &status, 0)) < 0 && errno == EINTR)
    ;
  cr_assert_eq(r, g, "the grandchild was reparented to this subreaper and reaped");
  cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "status %#x", status);
  no_children_left();
}

Test(proc, spawn_failure_has_an_error, .timeout = 30) {
  char *argv[] = {"/nonexistent/tr-child", NULL};
  tr_proc_t p;
  int rc = tr__proc_spawn("/nonexistent/tr-child", argv, NULL, &p);
  cr_assert_eq(rc, -TR_EIO);
  cr_assert(tr_error_last() &&
            strstr(tr_error_message(tr_error_last()), "cannot start /nonexistent/tr-child"));
  cr_assert_eq(tr__proc_spawn(NULL, NULL, NULL, &p), -TR_EINVAL);
  no_children_left();
}
