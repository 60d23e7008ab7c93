/*
 * The tractor_test fixture itself (include/tractor/testing.h).  Failing
 * bodies run through tr_test_run directly, and these tests check its
 * report: a Criterion test that failed on purpose would prove nothing.
 */
#include <dirent.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <tractor/testing.h>

#define MS (1000 * 1000LL)

/* Runs body as the fixture would, with the given deadline (0: default). */
static int run_body(int (*body)(void), int64_t deadline_ns, tr_test_report_t *rep) {
  tr_test_def_t def = {.name = "self/test", .body = body, .deadline_ns = deadline_ns, .workers = 2};
  return tr_test_run(&def, rep);
}

static tr_test_report_t rep; /* 8 KiB: off the stack */

/* ---- a failing assertion in a nursery child ------------------------------------ */

static int sibling_cancelled;

static int failing_child(void *arg) {
  int two = *(int *)arg;
  tr_assert_rc(tr_sleep(5 * MS), 0);
  tr_assert_eq(two, 3, "arithmetic is %s", "broken");
  return 0;
}

static int patient_sibling(void *arg) {
  (void)arg;
  int rc = tr_sleep(10000 * MS);
  if (rc == -TR_ECANCELED)
    sibling_cancelled = 1; /* same actor as the test's reader: no race */
  return rc;
}

static int nursery_child_fails_body(void) {
  static int two = 2;
  tr_nursery_t *n;
  tr_assert_rc(tr_nursery_open(&n), 0);
  tr_check_rc(tr_nursery_spawn(n, patient_sibling, NULL, NULL), 0);
  tr_check_rc(tr_nursery_spawn(n, failing_child, &two, NULL), 0);
  /* The child's AssertionError comes back through the nursery, as any
   * task failure does, and this assertion fails in turn. */
  tr_assert_rc(tr_nursery_close(n), 0);
  return 0;
}

Test(testing, assertion_in_nursery_child_is_reported, .timeout = 60) {
  sibling_cancelled = 0;
  cr_assert_eq(run_body(nursery_child_fails_body, 0, &rep), -TR_EAPP);
  cr_assert(!rep.passed);
  cr_assert(!rep.timed_out);
  cr_assert_eq(rep.assertions_failed, 2, "%s", rep.message);
  cr_assert(sibling_cancelled, "the failing child did not cancel its sibling");
  /* The first failure is the child's, with its site, values and message. */
  const char *first = strstr(rep.message, "assertion failed: ");
  cr_assert(first, "%s", rep.message);
  cr_assert(strstr(first, "test_testing.c:"), "%s", rep.message);
  cr_assert(strstr(first, "in failing_child(): tr_assert_eq(two, 3) failed: 2 != 3: "
                          "arithmetic is broken (actor 'root')"),
            "%s", rep.message);
  cr_assert(strstr(rep.message, "(and 1 more failed assertions)"), "%s", rep.message);
  /* The body's own -TR_EAPP is that AssertionError: not reported twice. */
  cr_assert(!strstr(rep.message, "the body returned"), "%s", rep.message);
  cr_assert(strncmp(rep.message, "tractor test self/test failed:\n", 31) == 0, "%s", rep.message);
}

/* ---- tr_check off the workers, with the rc's error object ------------------------ */

static void *off_worker(void *arg) {
  (void)arg;
  tr_check_str_eq("actor", "task");
  return NULL;
}

static int checks_body(void) {
  tr_assert_rc(tr_to_thread(off_worker, NULL, NULL), 0);
  tr_scope_t s;
  tr_assert_rc(tr_fail_after(&s, 1 * MS), 0);
  tr_check_rc(tr_sleep(10000 * MS), -TR_ECANCELED);
  /* Records the close's TooSlowError, formatted, and carries on. */
  tr_check_rc(tr_scope_close(&s), 0, "closing %s", "s");
  return 0;
}

Test(testing, checks_record_and_continue, .timeout = 60) {
  cr_assert_eq(run_body(checks_body, 0, &rep), -TR_EAPP);
  cr_assert_eq(rep.rc, 0);
  cr_assert_eq(rep.assertions_failed, 2, "%s", rep.message);
  cr_assert(strstr(rep.message, "in off_worker(): tr_check_str_eq(\"actor\", \"task\") "
                                "failed: \"actor\" != \"task\"\n"),
            "%s", rep.message);
  cr_assert(strstr(rep.message, "(and 1 more failed assertions)"), "%s", rep.message);
  cr_assert(!strstr(rep.message, "the body returned"), "%s", rep.message);
}

static int rc_check_body(void) {
  tr_scope_t s;
  tr_assert_rc(tr_fail_after(&s, 1 * MS), 0);
  tr_check_rc(tr_sleep(10000 * MS), -TR_ECANCELED);
  tr_check_rc(tr_scope_close(&s), 0, "closing %s", "s");
  return 0;
}

Test(testing, rc_check_shows_names_and_error, .timeout = 60) {
  cr_assert_eq(run_body(rc_check_body, 0, &rep), -TR_EAPP);
  cr_assert_eq(rep.assertions_failed, 1, "%s", rep.message);
  cr_assert(strstr(rep.message, "tr_check_rc(tr_scope_close(&s), 0) failed: got -6 "
                                "TR_ETIMEDOUT (deadline expired), expected 0 OK: "
                                "closing s [TooSlowError: fail_after deadline expired]"),
            "%s", rep.message);
  /* Then the error object, formatted as a traceback. */
  cr_assert(strstr(rep.message, "TooSlowError: fail_after deadline expired\n"), "%s", rep.message);
}

/* ---- the deadline ------------------------------------------------------------------ */

static int hangs_body(void) { return tr_sleep(10000 * MS); }

Test(testing, deadline_fails_a_hanging_body, .timeout = 60) {
  int64_t t0 = tr_now();
  cr_assert_eq(run_body(hangs_body, 50 * MS, &rep), -TR_EAPP);
  int64_t el = tr_now() - t0;
  cr_assert(rep.timed_out);
  cr_assert(el >= 50 * MS && el < 5000 * MS, "took %lld ns", (long long)el);
  cr_assert(strstr(rep.message, "test body exceeded its 0.05 s deadline\n"), "%s", rep.message);
  cr_assert(strstr(rep.message, "the body returned -5 TR_ECANCELED"), "%s", rep.message);
}

/* ---- the body's result and the expected code ------------------------------------ */

static int raises_body(void) { return tr_fail("ValueError", "boom %d", 7); }

Test(testing, body_failure_is_reported_with_its_error, .timeout = 60) {
  cr_assert_eq(run_body(raises_body, 0, &rep), -TR_EAPP);
  cr_assert_eq(rep.rc, -TR_EAPP);
  cr_assert_eq(rep.assertions_failed, 0);
  cr_assert(strstr(rep.message, "the body returned -18 TR_EAPP (application error (see "
                                "the error object)), expected 0 OK\n"),
            "%s", rep.message);
  cr_assert(strstr(rep.message, "ValueError: boom 7"), "%s", rep.message);
}

static int returns_5_body(void) { return 5; }

Test(testing, expected_code_is_compared, .timeout = 60) {
  tr_test_def_t def = {.name = "self/expect", .body = returns_5_body, .expect_rc = 5};
  cr_assert_eq(tr_test_run(&def, &rep), 0, "%s", rep.message);
  cr_assert(rep.passed);
  cr_assert_str_eq(rep.message, "");
  def.expect_rc = 0;
  cr_assert_eq(tr_test_run(&def, &rep), -TR_EAPP);
  cr_assert(strstr(rep.message, "the body returned 5, expected 0 OK\n"), "%s", rep.message);
}

/* ---- what the body leaves behind ---------------------------------------------------- */

static int orphan(void *arg) {
  (void)arg;
  return tr_sleep(10000 * MS);
}

static int leaves_an_actor_body(void) {
  /* A task actor outside any nursery: nothing waits for it but tr_main. */
  tr_assert_rc(tr_spawn_task_actor(orphan, NULL, NULL, NULL), 0);
  return 0;
}

Test(testing, actor_left_running_is_ended_and_reported, .timeout = 60) {
  int64_t t0 = tr_now();
  cr_assert_eq(run_body(leaves_an_actor_body, 100 * MS, &rep), -TR_EAPP);
  cr_assert(tr_now() - t0 < 5000 * MS);
  cr_assert(!rep.timed_out);
  cr_assert(strstr(rep.message, "1 actor(s) still running after the body returned"), "%s",
            rep.message);
  cr_assert(!strstr(rep.message, "leak:"), "%s", rep.message);
}

static int leaves_a_scope_open_body(void) {
  static tr_scope_t s; /* outlives the body, as a forgotten scope would */
  tr_assert_rc(tr_scope_open(&s, TR_NO_DEADLINE, 0), 0);
  return 0;
}

Test(testing, region_left_open_is_reported, .timeout = 60) {
  cr_assert_eq(run_body(leaves_a_scope_open_body, 0, &rep), -TR_EAPP);
  cr_assert(strstr(rep.message, "the body returned with a cancel scope, nursery or actor "
                                "nursery still open"),
            "%s", rep.message);
}

/* ---- failures in process children ------------------------------------------------ */

/* Runs in a child process: one check fails there, another passes, and the
 * function itself succeeds, so only the fixture's file can tell the test. */
static int checks_in_child(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)ctx;
  (void)args;
  (void)result;
  tr_check_eq(1, 2, "in the %s", "child");
  tr_check_eq(3, 3);
  return 0;
}
TR_EXPORT_FN("ttesting", "checks_in_child", checks_in_child)

static int child_pid;

static int process_child_check_body(void) {
  static const tr_actor_opts_t opts = {.spawn = TR_SPAWN_PROCESS};
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL;
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_run_in_actor_opts(an, "checker", "ttesting.checks_in_child", NULL, &opts, &p), 0);
  tr_check_rc(tr_actor_nursery_close(an), 0);
  if (p) {
    tr_check_rc(tr_portal_result(p, NULL), 0); /* the function itself succeeded */
    tr_check_rc(tr_portal_process(p, &child_pid, NULL), 0);
    tr_portal_release(p);
  }
  return 0;
}

Test(testing, check_failing_in_a_process_child_is_reported, .timeout = 60) {
  child_pid = 0;
  cr_assert_eq(run_body(process_child_check_body, 0, &rep), -TR_EAPP, "%s", rep.message);
  cr_assert(!rep.passed);
  cr_assert_eq(rep.assertions_failed, 1, "%s", rep.message);
  cr_assert_neq(child_pid, 0, "%s", rep.message);
  char want[128];
  snprintf(want, sizeof want, "(actor 'checker') [in child process %d]", child_pid);
  cr_assert(strstr(rep.message, "assertion failed: "), "%s", rep.message);
  cr_assert(strstr(rep.message, "in checks_in_child(): tr_check_eq(1, 2) failed: 1 != 2: in the "
                                "child"),
            "%s", rep.message);
  cr_assert(strstr(rep.message, want), "%s", rep.message);
  /* The record is closed, and its name gone: the next test starts clean. */
  cr_assert_null(getenv("TR_TEST_CHILD_FAILURES"));
}

/* ---- where children's failures go: no file on disk ------------------------------- */

/* The entries of dir other than . and .., or -1 when it cannot be read. */
static int dir_entries(const char *dir) {
  DIR *d = opendir(dir);
  if (!d)
    return -1;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL)
    if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
      n++;
  closedir(d);
  return n;
}

/* A test that ends in the middle of its body, as on a crash, exit() or a
 * kill by Criterion's .timeout: this executable runs helper_ends_mid_test
 * in a Criterion runner of its own, with TR_TEST_SELF_END saying how the
 * body ends.  The body records a child's failure first, so that the
 * fixture's record has something in it, then leaves a mark in
 * TR_TEST_SELF_MARK (a directory other than TMPDIR) to show that it ran. */
static int ends_mid_test_body(void) {
  process_child_check_body();
  char path[512];
  snprintf(path, sizeof path, "%s/ran", getenv("TR_TEST_SELF_MARK"));
  int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  tr_assert(fd >= 0, "%s: %s", path, strerror(errno));
  close(fd);
  if (strcmp(getenv("TR_TEST_SELF_END"), "exit") == 0)
    _exit(42);
  for (;;)
    pause(); /* blocking C code: only Criterion's .timeout ends it */
}

Test(testing, helper_ends_mid_test, .timeout = 2) {
  if (!getenv("TR_TEST_SELF_END"))
    return; /* not run by no_file_is_left_in_tmpdir_however_the_test_ends */
  tr_test_def_t def = {.name = "self/ends", .body = ends_mid_test_body, .workers = 2};
  static tr_test_report_t r;
  tr_test_run(&def, &r);
}

extern char **environ;

/* Runs helper_ends_mid_test in a Criterion runner of this executable
 * (spawned, not forked: this process has threads) and returns its wait
 * status.  The runner gets this environment without BoxFort's marker,
 * which would make it take itself for a test worker. */
static int run_helper(const char *end, const char *mark_dir) {
  char e1[64], e2[512];
  snprintf(e1, sizeof e1, "TR_TEST_SELF_END=%s", end);
  snprintf(e2, sizeof e2, "TR_TEST_SELF_MARK=%s", mark_dir);
  size_t n = 0, k = 0;
  while (environ[n])
    n++;
  char **envp = calloc(n + 3, sizeof *envp);
  cr_assert_not_null(envp);
  envp[k++] = e1;
  envp[k++] = e2;
  for (size_t i = 0; i < n; i++)
    if (strncmp(environ[i], "BXFI_MAP=", 9) != 0)
      envp[k++] = environ[i];
  char *argv[] = {"test_testing", "--filter=testing/helper_ends_mid_test", "--jobs=1", NULL};
  /* Its report, a test that fails on purpose, would only confuse a reader
   * of this test's output: the status and the mark say what happened. */
  posix_spawn_file_actions_t fa;
  cr_assert_eq(posix_spawn_file_actions_init(&fa), 0);
  cr_assert_eq(posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0), 0);
  cr_assert_eq(posix_spawn_file_actions_adddup2(&fa, 1, 2), 0);
  pid_t pid;
  int rc = posix_spawn(&pid, "/proc/self/exe", &fa, NULL, argv, envp);
  posix_spawn_file_actions_destroy(&fa);
  free(envp);
  cr_assert_eq(rc, 0, "posix_spawn: %s", strerror(rc));
  int status;
  while (waitpid(pid, &status, 0) < 0)
    cr_assert_eq(errno, EINTR);
  return status;
}

static char tmp_dir[256], mark_dir[256];

/* Removes the test's directories when it failed half-way (best effort: a
 * file left in tmp_dir stays, for a look). */
static void remove_dirs(void) {
  char ran[300];
  snprintf(ran, sizeof ran, "%s/ran", mark_dir);
  unlink(ran);
  rmdir(mark_dir);
  rmdir(tmp_dir);
}

Test(testing, no_file_is_left_in_tmpdir_however_the_test_ends, .timeout = 60, .fini = remove_dirs) {
  const char *old = getenv("TMPDIR");
  char *dir = tmp_dir, *mark = mark_dir, ran[300];
  snprintf(dir, sizeof tmp_dir, "%s/tr-test-tmpdir-XXXXXX", old && *old ? old : "/tmp");
  snprintf(mark, sizeof mark_dir, "%s/tr-test-mark-XXXXXX", old && *old ? old : "/tmp");
  cr_assert_not_null(mkdtemp(dir), "mkdtemp %s: %s", dir, strerror(errno));
  cr_assert_not_null(mkdtemp(mark), "mkdtemp %s: %s", mark, strerror(errno));
  snprintf(ran, sizeof ran, "%s/ran", mark);
  cr_assert_eq(setenv("TMPDIR", dir, 1), 0);

  const char *ends[] = {"exit", "timeout"};
  for (size_t i = 0; i < sizeof ends / sizeof ends[0]; i++) {
    int status = run_helper(ends[i], mark);
    cr_assert_eq(unlink(ran), 0, "the helper's body did not run (%s; status %#x)", ends[i],
                 (unsigned)status);
    cr_assert(!WIFEXITED(status) || WEXITSTATUS(status) != 0, "the helper passed (%s)", ends[i]);
    cr_assert_eq(dir_entries(dir), 0, "a file was left in TMPDIR=%s (%s)", dir, ends[i]);
  }

  /* A test that ends normally, with a child's failure recorded. */
  child_pid = 0;
  cr_assert_eq(run_body(process_child_check_body, 0, &rep), -TR_EAPP, "%s", rep.message);
  cr_assert_eq(rep.assertions_failed, 1, "%s", rep.message);
  cr_assert_eq(dir_entries(dir), 0, "a file was left in TMPDIR=%s", dir);

  cr_assert_eq(rmdir(dir), 0, "%s: %s", dir, strerror(errno));
  cr_assert_eq(rmdir(mark), 0, "%s: %s", mark, strerror(errno));
  if (old)
    setenv("TMPDIR", old, 1);
  else
    unsetenv("TMPDIR");
}

Test(testing, child_failure_is_reported_whatever_tmpdir, .timeout = 60) {
  static char long_dir[700];
  memset(long_dir, 'x', sizeof long_dir - 1);
  long_dir[0] = '/';
  const char *dirs[] = {"/nonexistent/tr-test", long_dir};
  for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
    cr_assert_eq(setenv("TMPDIR", dirs[i], 1), 0);
    child_pid = 0;
    cr_assert_eq(run_body(process_child_check_body, 0, &rep), -TR_EAPP, "%s", rep.message);
    cr_assert_eq(rep.assertions_failed, 1, "%s", rep.message);
    cr_assert(strstr(rep.message, "in checks_in_child(): tr_check_eq(1, 2) failed: 1 != 2"), "%s",
              rep.message);
  }
}

/* Runs in a child process and starts a grandchild process, which fails a
 * check; this one's own code succeeds. */
static int spawns_checker(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)ctx;
  (void)args;
  (void)result;
  static const tr_actor_opts_t opts = {.spawn = TR_SPAWN_PROCESS};
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL;
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_run_in_actor_opts(an, "grandchild", "ttesting.checks_in_child", NULL, &opts, &p),
              0);
  tr_check_rc(tr_actor_nursery_close(an), 0);
  if (p) {
    tr_check_rc(tr_portal_result(p, NULL), 0);
    tr_portal_release(p);
  }
  return 0;
}
TR_EXPORT_FN("ttesting", "spawns_checker", spawns_checker)

static int process_grandchild_check_body(void) {
  static const tr_actor_opts_t opts = {.spawn = TR_SPAWN_PROCESS};
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL;
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_run_in_actor_opts(an, "middle", "ttesting.spawns_checker", NULL, &opts, &p), 0);
  tr_check_rc(tr_actor_nursery_close(an), 0);
  if (p) {
    tr_check_rc(tr_portal_result(p, NULL), 0);
    tr_check_rc(tr_portal_process(p, &child_pid, NULL), 0);
    tr_portal_release(p);
  }
  return 0;
}

Test(testing, check_failing_in_a_process_grandchild_is_reported, .timeout = 60) {
  child_pid = 0;
  cr_assert_eq(run_body(process_grandchild_check_body, 0, &rep), -TR_EAPP, "%s", rep.message);
  cr_assert_eq(rep.assertions_failed, 1, "%s", rep.message);
  cr_assert_neq(child_pid, 0, "%s", rep.message);
  cr_assert(strstr(rep.message, "in checks_in_child(): tr_check_eq(1, 2) failed: 1 != 2: in the "
                                "child (actor 'grandchild') [in child process "),
            "%s", rep.message);
  /* Recorded by the grandchild itself, not by its parent process. */
  int pid = 0;
  const char *at = strstr(rep.message, "[in child process ");
  cr_assert_eq(sscanf(at, "[in child process %d]", &pid), 1, "%s", rep.message);
  cr_assert(pid > 0 && pid != child_pid && pid != getpid(), "pid %d, child %d: %s", pid, child_pid,
            rep.message);
}

/* Runs in a child process that has no fd left when its check fails, so it
 * cannot write its record: it must not pass as if nothing failed. */
static int checks_without_fds(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)ctx;
  (void)args;
  (void)result;
  struct rlimit old, none;
  tr_assert(getrlimit(RLIMIT_NOFILE, &old) == 0);
  none.rlim_cur = 0;
  none.rlim_max = old.rlim_max;
  tr_assert(setrlimit(RLIMIT_NOFILE, &none) == 0);
  tr_check_eq(1, 2, "with no fd left");
  setrlimit(RLIMIT_NOFILE, &old);
  return 0;
}
TR_EXPORT_FN("ttesting", "checks_without_fds", checks_without_fds)

static int child_status;

static int unrecordable_child_check_body(void) {
  static const tr_actor_opts_t opts = {.spawn = TR_SPAWN_PROCESS};
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL;
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_run_in_actor_opts(an, "starved", "ttesting.checks_without_fds", NULL, &opts, &p),
              0);
  tr_check_rc(tr_actor_nursery_close(an), 0); /* fails: the child was lost */
  if (p) {
    tr_check_rc(tr_portal_process(p, &child_pid, &child_status), 0);
    tr_portal_release(p);
  }
  return 0;
}

Test(testing, child_that_cannot_record_a_failure_fails_its_process, .timeout = 60) {
  child_pid = 0;
  child_status = -1;
  cr_assert_eq(run_body(unrecordable_child_check_body, 0, &rep), -TR_EAPP, "%s", rep.message);
  cr_assert_neq(child_pid, 0, "%s", rep.message);
  cr_assert(WIFEXITED(child_status) && WEXITSTATUS(child_status) == 70, "status %#x: %s",
            (unsigned)child_status, rep.message);
  /* The parent saw it: its nursery's close failed, saying how. */
  cr_assert(strstr(rep.message, "tr_check_rc(tr_actor_nursery_close(an), 0) failed"), "%s",
            rep.message);
  char want[64];
  snprintf(want, sizeof want, "process %d exited with status 70", child_pid);
  cr_assert(strstr(rep.message, want), "%s", rep.message);
}

/* Children reach the fixture's record through its fds: it is a memfd,
 * with no name in any directory. */
TR_TEST(testing, children_record_in_the_fixtures_memfd, .timeout = 60) {
  const char *path = getenv("TR_TEST_CHILD_FAILURES");
  tr_assert(path != NULL);
  char want[64], target[256];
  snprintf(want, sizeof want, "/proc/%d/fd/", (int)getpid());
  tr_assert(strncmp(path, want, strlen(want)) == 0, "TR_TEST_CHILD_FAILURES=%s", path);
  ssize_t n = readlink(path, target, sizeof target - 1);
  tr_assert(n > 0, "readlink %s: %s", path, strerror(errno));
  target[n] = '\0';
  tr_assert(strncmp(target, "/memfd:", 7) == 0, "%s -> %s", path, target);
  return 0;
}

/* ---- failures outside the run ------------------------------------------------------ */

static void failing_init(void) { tr_check_eq(1, 2, "in %s", ".init"); }

static int passes_body(void) { return 0; }

/* A check in a Criterion .init is not wiped by the run that follows: that
 * run reports it, then empties the slot for the next one. */
Test(testing, check_failing_in_init_is_reported_by_the_run, .timeout = 60, .init = failing_init) {
  cr_assert_eq(run_body(passes_body, 0, &rep), -TR_EAPP, "%s", rep.message);
  cr_assert_eq(rep.assertions_failed, 1, "%s", rep.message);
  cr_assert(strstr(rep.message, "in failing_init(): tr_check_eq(1, 2) failed: 1 != 2: in .init"),
            "%s", rep.message);
  cr_assert_eq(run_body(passes_body, 0, &rep), 0, "%s", rep.message);
  cr_assert(rep.passed);
  cr_assert_eq(rep.assertions_failed, 0);
}

/* ---- TR_TEST itself --------------------------------------------------------------- */

TR_TEST(testing, registry_address_is_private, .timeout = 60) {
  const char *addr = getenv("TR_REGISTRY_ADDR");
  tr_assert(addr != NULL);
  tr_assert(strncmp(addr, "127.0.0.1:", 10) == 0, "TR_REGISTRY_ADDR=%s", addr);
  long port = strtol(addr + 10, NULL, 10);
  tr_assert(port > 0 && port < 65536, "TR_REGISTRY_ADDR=%s", addr);
  tr_assert(tr_self() != NULL); /* the body is a task of the root actor */
  tr_assert_str_eq(tr_actor_name(tr_self()), "root");
  return 0;
}
