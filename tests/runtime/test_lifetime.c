/*
 * The lifetime stack (tr_lifetime_push): LIFO teardown callbacks that run
 * exactly once at the end of tr_run, after every actor has exited,
 * whatever the outcome of the run.
 *
 * Callbacks run on tr_run's thread with no runtime, so they may use
 * Criterion's assertions only after tr_run has returned: they record what
 * they saw, and the tests assert on the record.  Task code runs on worker
 * threads and reports failures through CHECK, as in tests/task.
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
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

static void assert_no_check_failed(void) {
  cr_assert_eq(fail_line, 0, "CHECK(%s) failed at line %d", fail_what, fail_line);
}

/* ---- a record of callback calls ------------------------------------------ */

#define LOG_MAX 64
static int log_ids[LOG_MAX];
static int log_len;
/* Set by each callback: what the runtime looked like when it ran. */
static int saw_runtime;  /* tr_spawn did not fail with -TR_ENORUNTIME */
static int saw_live;     /* actors_live was not 0 */
static int saw_unexited; /* the behaviour actor of a run had not exited */
static int actor_exited; /* set by that actor's on_exit */

static void nop(void *state, tr_msg_t *m) {
  (void)state;
  (void)m;
}

static void record(void *arg) {
  int id = (int)(intptr_t)arg;
  if (log_len < LOG_MAX)
    log_ids[log_len] = id;
  log_len++;
  if (tr_spawn(nop, NULL, NULL, NULL) != -TR_ENORUNTIME)
    saw_runtime = 1;
  tr_stats_t st;
  tr_stats(&st);
  if (st.actors_live != 0)
    saw_live = 1;
  if (!__atomic_load_n(&actor_exited, __ATOMIC_ACQUIRE))
    saw_unexited = 1;
}

static void push_id(int id) { cr_assert_eq(tr_lifetime_push(record, (void *)(intptr_t)id), 0); }

static void log_reset(void) {
  log_len = 0;
  saw_runtime = saw_live = saw_unexited = 0;
  fail_line = 0;
}

static void assert_log(const int *want, int n) {
  cr_assert_eq(log_len, n, "%d callbacks ran, expected %d", log_len, n);
  for (int i = 0; i < n; i++)
    cr_assert_eq(log_ids[i], want[i], "callback %d was #%d, expected #%d", i, log_ids[i], want[i]);
  cr_assert_eq(saw_runtime, 0, "a callback ran while the runtime could spawn");
  cr_assert_eq(saw_live, 0, "a callback ran while actors were live");
  cr_assert_eq(saw_unexited, 0, "a callback ran before the run's actor exited");
}

/* Each root spawns a behaviour actor that stays alive (idle) until the
 * runtime ends it; its on_exit marks it exited, which every callback of
 * the run must observe. */
static void mark_exited(void *state) {
  (void)state;
  __atomic_store_n(&actor_exited, 1, __ATOMIC_RELEASE);
}

static void spawn_idle_actor(void) {
  __atomic_store_n(&actor_exited, 0, __ATOMIC_RELEASE);
  tr_spawn_opts_t o = {.name = "idle", .on_exit = mark_exited};
  tr_actor_t *a;
  CHECK(tr_spawn(nop, NULL, &o, &a) == 0);
  /* An idle actor is ended by a cancel request (run 1 and 2) or by the
   * shutdown (run 3): either way before the callbacks. */
  CHECK(tr_actor_cancel_soon(a) == 0);
  tr_actor_release(a);
}

static int root_ok(void *arg) {
  (void)arg;
  spawn_idle_actor();
  CHECK(tr_lifetime_push(record, (void *)(intptr_t)11) == 0);
  CHECK(tr_lifetime_push(record, (void *)(intptr_t)12) == 0);
  return 0;
}

static int root_error(void *arg) {
  (void)arg;
  spawn_idle_actor();
  CHECK(tr_lifetime_push(record, (void *)(intptr_t)21) == 0);
  CHECK(tr_lifetime_push(record, (void *)(intptr_t)22) == 0);
  return -TR_EAPP;
}

static int root_shutdown(void *arg) {
  (void)arg;
  __atomic_store_n(&actor_exited, 0, __ATOMIC_RELEASE);
  tr_spawn_opts_t o = {.name = "idle", .on_exit = mark_exited};
  CHECK(tr_spawn(nop, NULL, &o, NULL) == 0);
  CHECK(tr_lifetime_push(record, (void *)(intptr_t)31) == 0);
  CHECK(tr_shutdown() == 0);
  CHECK(tr_lifetime_push(record, (void *)(intptr_t)32) == 0);
  return 0;
}

Test(lifetime, lifo_and_exactly_once_over_three_runs, .timeout = 30) {
  tr_config_t cfg = {.workers = 2};

  log_reset();
  push_id(1); /* before any runtime */
  push_id(2);
  cr_assert_eq(log_len, 0, "callbacks ran before a run ended");
  cr_assert_eq(tr_run(&cfg, root_ok, NULL), 0);
  assert_no_check_failed();
  assert_log((const int[]){12, 11, 2, 1}, 4);

  log_reset();
  cr_assert_eq(tr_run(&cfg, root_error, NULL), -TR_EAPP);
  assert_no_check_failed();
  assert_log((const int[]){22, 21}, 2);

  log_reset();
  cr_assert_eq(tr_run(&cfg, root_shutdown, NULL), 0);
  assert_no_check_failed();
  assert_log((const int[]){32, 31}, 2);

  /* A run that pushes nothing runs nothing: nothing was left over. */
  log_reset();
  cr_assert_eq(tr_run(&cfg, root_ok, NULL), 0);
  assert_log((const int[]){12, 11}, 2);
}

Test(lifetime, invalid_arguments, .timeout = 30) {
  cr_assert_eq(tr_lifetime_push(NULL, NULL), -TR_EINVAL);
  /* A run that never starts runs nothing: the stack waits. */
  log_reset();
  push_id(7);
  cr_assert_eq(tr_run(NULL, NULL, NULL), -TR_EINVAL);
  cr_assert_eq(log_len, 0);
  cr_assert_eq(tr_run(NULL, root_ok, NULL), 0);
  assert_log((const int[]){12, 11, 7}, 3);
}

/* ---- callbacks pushing callbacks ------------------------------------------- */

static void push_two_more(void *arg) {
  record(arg);
  /* Both are newer than everything left: they run next, newest first. */
  tr_lifetime_push(record, (void *)(intptr_t)101);
  tr_lifetime_push(record, (void *)(intptr_t)102);
}

static int root_nothing(void *arg) {
  (void)arg;
  __atomic_store_n(&actor_exited, 1, __ATOMIC_RELEASE);
  return 0;
}

Test(lifetime, callback_pushing_callbacks, .timeout = 30) {
  log_reset();
  push_id(1);
  cr_assert_eq(tr_lifetime_push(push_two_more, (void *)(intptr_t)100), 0);
  push_id(2);
  cr_assert_eq(tr_run(NULL, root_nothing, NULL), 0);
  assert_log((const int[]){2, 100, 102, 101, 1}, 5);
  /* Nothing is left for the next run. */
  log_reset();
  cr_assert_eq(tr_run(NULL, root_nothing, NULL), 0);
  cr_assert_eq(log_len, 0);
}

/* ---- a temp file removed by a lifetime callback ------------------------------ */

static char temp_path[64];

static void remove_temp(void *arg) { unlink((const char *)arg); }

/* Creates the temp file and registers its removal, as a program would for
 * a socket path or a lock file. */
static int create_temp(void) {
  snprintf(temp_path, sizeof temp_path, "/tmp/tr_lifetime_XXXXXX");
  int fd = mkstemp(temp_path);
  if (fd < 0)
    return -1;
  close(fd);
  return tr_lifetime_push(remove_temp, temp_path);
}

static int root_fails_with_temp(void *arg) {
  (void)arg;
  CHECK(create_temp() == 0);
  CHECK(tr_sleep(1 * MS) == 0);
  return tr_fail("ValueError", "root gave up");
}

static int root_cancelled_with_temp(void *arg) {
  (void)arg;
  CHECK(create_temp() == 0);
  tr_actor_t *self = tr_self();
  CHECK(self != NULL);
  CHECK(tr_actor_cancel_soon(self) == 0);
  int64_t t0 = tr_now();
  int rc = tr_sleep(10000 * MS);
  CHECK(rc == -TR_ECANCELED);
  CHECK(tr_now() - t0 < 5000 * MS);
  return rc;
}

static void assert_temp_gone(void) {
  struct stat st;
  cr_assert_neq(temp_path[0], '\0');
  cr_assert_eq(stat(temp_path, &st), -1, "%s still exists", temp_path);
}

Test(lifetime, temp_file_removed_when_root_fails, .timeout = 30) {
  fail_line = 0;
  tr_config_t cfg = {.workers = 2};
  cr_assert_eq(tr_main(0, NULL, root_fails_with_temp, NULL, &cfg), -TR_EAPP);
  assert_no_check_failed();
  assert_temp_gone();
}

Test(lifetime, temp_file_removed_when_root_cancelled, .timeout = 30) {
  fail_line = 0;
  tr_config_t cfg = {.workers = 2};
  cr_assert_eq(tr_main(0, NULL, root_cancelled_with_temp, NULL, &cfg), -TR_ECANCELED);
  assert_no_check_failed();
  assert_temp_gone();
}
