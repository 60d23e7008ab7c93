/*
 * tr_actor_cancel_soon (async-signal-safe actor cancel), tr_main's
 * SIGINT/SIGTERM handling, and the error a failing root leaves for
 * tr_main's caller.
 *
 * The signal tests of tr_main run the program in a child process: fork(),
 * then, before any runtime exists in the child, stderr to a file and exec
 * of this executable in child mode (see child_main); then signal it with
 * kill() and check its exit status, its stderr and the file its lifetime
 * callback was to remove.  Every wait is bounded; a child that does not
 * exit in time is killed and reaped, and the test fails.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <tractor/tractor.h>

#define MS (1000 * 1000LL)

static int fail_line;
static char fail_what[160];
#define CHECK(c)                                                                                   \
  do {                                                                                             \
    if (!(c) && __atomic_load_n(&fail_line, __ATOMIC_ACQUIRE) == 0) {                              \
      snprintf(fail_what, sizeof fail_what, "%s", #c);                                             \
      __atomic_store_n(&fail_line, __LINE__, __ATOMIC_RELEASE);                                    \
    }                                                                                              \
  } while (0)

static void run_main(tr_task_fn root, int expect) {
  fail_line = 0;
  tr_config_t cfg = {.workers = 2};
  int rc = tr_main(0, NULL, root, NULL, &cfg);
  cr_assert_eq(fail_line, 0, "CHECK(%s) failed at line %d", fail_what, fail_line);
  cr_assert_eq(rc, expect, "tr_main returned %d (%s), expected %d", rc, tr_errname(rc), expect);
  tr_stats_t st;
  tr_stats(&st);
  cr_assert_eq(st.actors_live, 0);
  cr_assert_eq(st.actors_allocated, 0);
  cr_assert_eq(st.msgs_allocated, 0);
}

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

/* ---- argument and state checks ---------------------------------------------- */

Test(cancel_soon, without_runtime, .timeout = 30) {
  cr_assert_eq(tr_actor_cancel_soon(NULL), -TR_EINVAL);
  /* The runtime check comes first: the pointer is never touched. */
  cr_assert_eq(tr_actor_cancel_soon((tr_actor_t *)&fail_line), -TR_ENORUNTIME);
}

/* ---- from a signal handler ------------------------------------------------------- */

static tr_actor_t *sig_target; /* atomic: the actor the handler cancels */
static int sig_rc = 1;         /* atomic: what the handler's call returned */
static int sig_errno_kept;     /* atomic: errno was preserved */

static void on_usr1(int signo) {
  (void)signo;
  errno = 12345;
  int rc = tr_actor_cancel_soon(__atomic_load_n(&sig_target, __ATOMIC_ACQUIRE));
  __atomic_store_n(&sig_errno_kept, errno == 12345, __ATOMIC_RELAXED);
  __atomic_store_n(&sig_rc, rc, __ATOMIC_RELEASE);
}

static void *raise_usr1_later(void *arg) {
  (void)arg;
  sleep_ms(50);
  /* raise() signals this thread: the handler runs here, outside the
   * runtime, while the root task sleeps on a worker. */
  raise(SIGUSR1);
  return NULL;
}

static int root_cancelled_by_signal(void *arg) {
  (void)arg;
  tr_actor_t *self = tr_actor_dup(tr_self());
  __atomic_store_n(&sig_target, self, __ATOMIC_RELEASE);
  pthread_t th;
  CHECK(pthread_create(&th, NULL, raise_usr1_later, NULL) == 0);
  int64_t t0 = tr_now();
  int rc = tr_sleep(10000 * MS);
  int64_t el = tr_now() - t0;
  CHECK(rc == -TR_ECANCELED);
  CHECK(el < 5000 * MS);
  CHECK(tr_sleep(1 * MS) == -TR_ECANCELED); /* cancelled for good */
  /* The handler has run (the cancel came from it); joining only reaps. */
  pthread_join(th, NULL);
  CHECK(__atomic_load_n(&sig_rc, __ATOMIC_ACQUIRE) == 0);
  CHECK(__atomic_load_n(&sig_errno_kept, __ATOMIC_RELAXED) == 1);
  __atomic_store_n(&sig_target, (tr_actor_t *)NULL, __ATOMIC_RELEASE);
  tr_actor_release(self);
  return 0;
}

Test(cancel_soon, from_a_signal_handler, .timeout = 30) {
  struct sigaction sa, old;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_usr1;
  sigemptyset(&sa.sa_mask);
  cr_assert_eq(sigaction(SIGUSR1, &sa, &old), 0);
  run_main(root_cancelled_by_signal, 0);
  sigaction(SIGUSR1, &old, NULL);
}

/* ---- from a plain thread, and from a task -------------------------------------- */

static void *cancel_later(void *arg) {
  sleep_ms(50);
  __atomic_store_n(&sig_rc, tr_actor_cancel_soon(arg), __ATOMIC_RELEASE);
  return NULL;
}

static int root_cancelled_by_thread(void *arg) {
  (void)arg;
  tr_actor_t *self = tr_actor_dup(tr_self());
  pthread_t th;
  CHECK(pthread_create(&th, NULL, cancel_later, self) == 0);
  int64_t t0 = tr_now();
  int rc = tr_sleep(10000 * MS);
  CHECK(rc == -TR_ECANCELED);
  CHECK(tr_now() - t0 < 5000 * MS);
  pthread_join(th, NULL);
  CHECK(__atomic_load_n(&sig_rc, __ATOMIC_ACQUIRE) == 0);
  tr_actor_release(self);
  return rc;
}

Test(cancel_soon, from_a_plain_thread, .timeout = 30) {
  sig_rc = 1;
  run_main(root_cancelled_by_thread, -TR_ECANCELED);
}

static int cancelled_child(void *arg) {
  int *seen = arg;
  int rc = tr_sleep(10000 * MS);
  if (rc == -TR_ECANCELED)
    (*seen)++;
  return rc;
}

/* A task cancels its own actor: every task of it, nursery children
 * included, unwinds, and the nursery still waits for all of them. */
static int root_cancels_itself(void *arg) {
  (void)arg;
  int seen = 0;
  tr_nursery_t *n;
  CHECK(tr_nursery_open(&n) == 0);
  for (int i = 0; i < 3; i++)
    CHECK(tr_nursery_spawn(n, cancelled_child, &seen, NULL) == 0);
  CHECK(tr_sleep(5 * MS) == 0);
  CHECK(tr_actor_cancel_soon(tr_self()) == 0);
  CHECK(tr_actor_cancel_soon(tr_self()) == 0); /* twice is harmless */
  int rc = tr_nursery_close(n);
  CHECK(rc == -TR_ECANCELED);
  CHECK(seen == 3);
  return rc;
}

Test(cancel_soon, from_a_task_on_its_own_actor, .timeout = 30) {
  run_main(root_cancels_itself, -TR_ECANCELED);
}

/* ---- behaviour actors, and many concurrent requesters --------------------------- */

#define STRESS_ACTORS 200
#define STRESS_THREADS 4

static tr_actor_t *stress_actors[STRESS_ACTORS];
static int stress_bad; /* atomic: an unexpected return code */

static void nop(void *state, tr_msg_t *m) {
  (void)state;
  (void)m;
}

static void *cancel_all(void *arg) {
  (void)arg;
  for (int i = 0; i < STRESS_ACTORS; i++) {
    int rc;
    while ((rc = tr_actor_cancel_soon(stress_actors[i])) == -TR_EAGAIN)
      sched_yield(); /* every slot pending: the reactor drains them */
    if (rc != 0 && rc != -TR_ECLOSED)
      __atomic_store_n(&stress_bad, rc, __ATOMIC_RELAXED);
  }
  return NULL;
}

static int root_stress(void *arg) {
  (void)arg;
  for (int i = 0; i < STRESS_ACTORS; i++)
    CHECK(tr_spawn(nop, NULL, NULL, &stress_actors[i]) == 0);
  pthread_t th[STRESS_THREADS];
  for (int i = 0; i < STRESS_THREADS; i++)
    CHECK(pthread_create(&th[i], NULL, cancel_all, NULL) == 0);
  for (int i = 0; i < STRESS_THREADS; i++)
    pthread_join(th[i], NULL);
  /* Idle behaviour actors exit only because they were cancelled. */
  for (int i = 0; i < STRESS_ACTORS; i++) {
    CHECK(tr_join(stress_actors[i], 10000 * MS) == 0);
    CHECK(tr_actor_cancel_soon(stress_actors[i]) == -TR_ECLOSED);
    tr_actor_release(stress_actors[i]);
  }
  return 0;
}

Test(cancel_soon, behaviour_actors_from_many_threads, .timeout = 60) {
  fail_line = 0;
  stress_bad = 0;
  tr_config_t cfg = {.workers = 2};
  cr_assert_eq(tr_run(&cfg, root_stress, NULL), 0);
  cr_assert_eq(fail_line, 0, "CHECK(%s) failed at line %d", fail_what, fail_line);
  cr_assert_eq(stress_bad, 0, "tr_actor_cancel_soon returned %d", stress_bad);
  tr_stats_t st;
  tr_stats(&st);
  cr_assert_eq(st.actors_allocated, 0);
  cr_assert_eq(st.msgs_allocated, 0);
}

/* ---- tr_main under SIGINT / SIGTERM, in a child process ------------------------- */

/* What the child's root does (from its environment, see child_main). */
static char child_marker[128]; /* created by the root, removed at exit */
static int child_shielded;     /* the root ignores the first cancel */

static void child_unlink(void *arg) { unlink((const char *)arg); }

static int child_task(void *arg) {
  (void)arg;
  int rc = tr_sleep(60000 * MS);
  if (rc == -TR_ECANCELED)
    fprintf(stderr, "child task unwound\n");
  return rc;
}

static int child_root(void *arg) {
  (void)arg;
  tr_nursery_t *n;
  if (tr_nursery_open(&n) != 0)
    return -TR_EINVAL;
  (void)tr_nursery_spawn(n, child_task, NULL, NULL);
  int fd = open(child_marker, O_CREAT | O_WRONLY | O_EXCL, 0600);
  if (fd < 0) {
    (void)tr_nursery_cancel(n);
    (void)tr_nursery_close(n);
    return -TR_EIO;
  }
  close(fd);
  (void)tr_lifetime_push(child_unlink, child_marker);
  if (child_shielded) {
    /* Deaf to a graceful cancel: only the second signal ends it. */
    tr_scope_t s;
    (void)tr_scope_open(&s, TR_NO_DEADLINE, 1);
    (void)tr_sleep(60000 * MS);
    (void)tr_scope_close(&s);
  } else {
    (void)tr_sleep(60000 * MS);
  }
  return tr_nursery_close(n);
}

/* Exit codes of the child. */
enum { CHILD_CANCELLED = 3, CHILD_OTHER = 4 };

#define ENV_MARKER "TR_TEST_SIGNALS_MARKER"
#define ENV_SHIELD "TR_TEST_SIGNALS_SHIELD"

/* The child is this executable again, started with ENV_MARKER set: it runs
 * the program here, before Criterion's main, and never returns.  A fresh
 * image rather than a plain fork: the Criterion worker may have threads
 * (ThreadSanitizer's among them), and a runtime must not start threads in
 * the forked copy of a multi-threaded process (TSan refuses outright). */
__attribute__((constructor)) static void child_main(void) {
  const char *marker = getenv(ENV_MARKER);
  if (!marker)
    return;
  snprintf(child_marker, sizeof child_marker, "%s", marker);
  child_shielded = getenv(ENV_SHIELD) != NULL;
  tr_config_t cfg = {.workers = 2};
  int rc = tr_main(0, NULL, child_root, NULL, &cfg);
  fflush(stderr);
  _exit(rc == -TR_ECANCELED ? CHILD_CANCELLED : rc == 0 ? 0 : CHILD_OTHER);
}

extern char **environ;

/* fork(), then in the child (before any runtime exists) stderr to
 * log_path and exec of this test executable in child mode. */
static pid_t spawn_child(const char *log_path, int shielded) {
  /* Everything the child needs is prepared here: between fork and exec
   * only async-signal-safe calls are allowed. */
  static char marker_var[sizeof(ENV_MARKER) + sizeof(child_marker) + 1];
  snprintf(marker_var, sizeof marker_var, "%s=%s", ENV_MARKER, child_marker);
  size_t n = 0;
  while (environ[n])
    n++;
  char **envp = calloc(n + 3, sizeof(*envp));
  cr_assert_not_null(envp);
  size_t k = 0;
  envp[k++] = marker_var;
  if (shielded)
    envp[k++] = ENV_SHIELD "=1";
  for (size_t i = 0; i < n; i++)
    envp[k++] = environ[i];
  char *argv[] = {"test_signals-child", NULL};
  int fd = open(log_path, O_WRONLY | O_TRUNC);
  cr_assert_geq(fd, 0);

  fflush(NULL);
  pid_t pid = fork();
  cr_assert_neq(pid, -1, "fork: %s", strerror(errno));
  if (pid == 0) {
    if (dup2(fd, STDERR_FILENO) < 0)
      _exit(126);
    execve("/proc/self/exe", argv, envp);
    _exit(127);
  }
  close(fd);
  free(envp);
  return pid;
}

static int exists(const char *path) {
  struct stat st;
  return stat(path, &st) == 0;
}

static void read_file(const char *path, char *buf, size_t cap) {
  buf[0] = '\0';
  FILE *f = fopen(path, "r");
  if (!f)
    return;
  size_t n = fread(buf, 1, cap - 1, f);
  buf[n] = '\0';
  fclose(f);
}

/* Polls every 10 ms, for at most timeout_ms, until the child has exited
 * (returns 1, *status set) or the file at path contains text (returns 0).
 * Returns -1 on timeout. */
static int wait_child_or_text(pid_t pid, int *status, const char *path, const char *text,
                              long timeout_ms) {
  char buf[4096];
  for (long waited = 0; waited <= timeout_ms; waited += 10) {
    if (waitpid(pid, status, WNOHANG) == pid)
      return 1;
    read_file(path, buf, sizeof buf);
    if (strstr(buf, text))
      return 0;
    sleep_ms(10);
  }
  return -1;
}

/* Waits up to timeout_ms for the child to exit, sending `resend` (if not 0)
 * every 250 ms meanwhile.  Returns 0 with *status set, or -1 after killing
 * (SIGKILL) and reaping it: no child outlives the test either way. */
static int reap_child(pid_t pid, int *status, int resend, long timeout_ms) {
  for (long waited = 0; waited <= timeout_ms; waited += 10) {
    if (waitpid(pid, status, WNOHANG) == pid)
      return 0;
    if (resend && waited % 250 == 0)
      kill(pid, resend);
    sleep_ms(10);
  }
  kill(pid, SIGKILL);
  waitpid(pid, status, 0);
  return -1;
}

/* Runs the child, waits until its root runs (its marker file exists, so its
 * handlers are in place), sends `signo`, and reaps it.  With `hard`, the
 * child's root shields itself; once the log shows that the first signal
 * cancelled the rest of the root actor, `signo` is sent again (repeatedly:
 * any signal after the first is "again") until the child dies.  Returns
 * the wait status; log gets the child's stderr. */
static int signal_child(int signo, int hard, char *log, size_t logcap) {
  char dir[] = "/tmp/tr_signals_XXXXXX";
  cr_assert_not_null(mkdtemp(dir));
  char log_path[128];
  snprintf(child_marker, sizeof child_marker, "%s/marker", dir);
  snprintf(log_path, sizeof log_path, "%s/stderr", dir);
  int fd = open(log_path, O_CREAT | O_WRONLY | O_TRUNC, 0600);
  cr_assert_geq(fd, 0);
  close(fd);
  pid_t pid = spawn_child(log_path, hard);

  const char *problem = NULL;
  int status = 0;
  int r = -1;
  for (long waited = 0; waited < 20000 && !exists(child_marker); waited += 10) {
    if (waitpid(pid, &status, WNOHANG) == pid) {
      r = 1;
      break;
    }
    sleep_ms(10);
  }
  if (r == 1) {
    problem = "the child exited before creating its marker";
  } else if (!exists(child_marker)) {
    (void)reap_child(pid, &status, 0, 0);
    problem = "the child never created its marker";
  } else if (kill(pid, signo) != 0) {
    (void)reap_child(pid, &status, 0, 0);
    problem = "kill failed";
  } else if (hard) {
    /* The unshielded child task reports its cancellation on stderr. */
    r = wait_child_or_text(pid, &status, log_path, "child task unwound", 20000);
    if (r == 1)
      problem = "the child exited after one signal despite its shield";
    else if (r == -1 && reap_child(pid, &status, 0, 0) == -1)
      problem = "the first signal cancelled nothing within 20 s";
    else if (reap_child(pid, &status, signo, 20000) != 0)
      problem = "the child survived the second signal for 20 s";
  } else if (reap_child(pid, &status, 0, 20000) != 0) {
    problem = "the child did not exit within 20 s of the signal";
  }

  read_file(log_path, log, logcap);
  int marker_left = exists(child_marker);
  unlink(child_marker);
  unlink(log_path);
  rmdir(dir);
  cr_assert_null(problem, "%s (status %#x); stderr:\n%s", problem, status, log);
  /* A hard exit runs no lifetime callback: the marker stays. */
  cr_assert_eq(marker_left, hard, "marker left: %d, expected %d", marker_left, hard);
  return status;
}

Test(tr_main_signals, sigint_cancels_gracefully, .timeout = 60) {
  char log[4096];
  int status = signal_child(SIGINT, 0, log, sizeof log);
  cr_assert(WIFEXITED(status), "the child did not exit normally (status %#x); stderr:\n%s", status,
            log);
  cr_assert_neq(WEXITSTATUS(status), 0);
  cr_assert_eq(WEXITSTATUS(status), CHILD_CANCELLED, "exit status %d; stderr:\n%s",
               WEXITSTATUS(status), log);
  cr_assert_not_null(strstr(log, "WARN -/-: cancelled by SIGINT"), "stderr:\n%s", log);
  cr_assert_not_null(strstr(log, "child task unwound"), "stderr:\n%s", log);
}

Test(tr_main_signals, sigterm_cancels_gracefully, .timeout = 60) {
  char log[4096];
  int status = signal_child(SIGTERM, 0, log, sizeof log);
  cr_assert(WIFEXITED(status), "status %#x; stderr:\n%s", status, log);
  cr_assert_eq(WEXITSTATUS(status), CHILD_CANCELLED, "stderr:\n%s", log);
  cr_assert_not_null(strstr(log, "WARN -/-: cancelled by SIGTERM"), "stderr:\n%s", log);
}

Test(tr_main_signals, second_sigint_exits_hard, .timeout = 90) {
  char log[4096];
  int status = signal_child(SIGINT, 1, log, sizeof log);
  cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGINT,
            "expected death by SIGINT, status %#x; stderr:\n%s", status, log);
}

Test(tr_main_signals, handlers_restored_after_tr_main, .timeout = 30) {
  struct sigaction before, after;
  sigaction(SIGINT, NULL, &before);
  run_main(root_cancels_itself, -TR_ECANCELED);
  sigaction(SIGINT, NULL, &after);
  cr_assert_eq((void *)after.sa_handler, (void *)before.sa_handler);
}

/* ---- a failing root's error reaches tr_main's caller ---------------------- */

static int failing_root(void *arg) {
  (void)arg;
  return tr_fail("ValueError", "the root's own failure");
}

static int bare_code_root(void *arg) {
  (void)arg;
  return -TR_ENOTFOUND; /* no error object of that code */
}

Test(tr_main_errors, a_failing_root_leaves_its_error_for_the_caller, .timeout = 30) {
  tr_config_t cfg = {.workers = 2};
  cr_assert_eq(tr_main(0, NULL, failing_root, NULL, &cfg), -TR_EAPP);
  const tr_error_t *e = tr_error_last();
  cr_assert(e != NULL, "tr_main left no error object");
  cr_expect_eq(tr_error_code(e), -TR_EAPP);
  cr_expect_str_eq(tr_error_type(e), "ValueError");
  cr_expect(strstr(tr_error_message(e), "the root's own failure") != NULL, "%s",
            tr_error_message(e));

  cr_assert_eq(tr_main(0, NULL, bare_code_root, NULL, &cfg), -TR_ENOTFOUND);
  e = tr_error_last();
  cr_assert(e != NULL, "tr_main left no error object for a bare code");
  cr_expect_eq(tr_error_code(e), -TR_ENOTFOUND);
  cr_expect(strstr(tr_error_message(e), "the root function returned") != NULL, "%s",
            tr_error_message(e));
}
