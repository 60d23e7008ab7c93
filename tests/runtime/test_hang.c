/*
 * The hang report (runtime/hang.c): when tr_run or tr_main still waits for
 * actors hang_report_ns after the root returned, it prints once to stderr
 * which actors are alive, their kind, mailbox depth and what each task is
 * blocked on, and keeps waiting.
 *
 * The tests point fd 2 at a pipe for the length of a run.  In the
 * scenario with forgotten actors, one of them reads that pipe (from a
 * tr_to_thread call) until the report's last line has come, then waits
 * three report delays (room for a second report, which must not come) and
 * releases every forgotten actor, so the run ends; what is still in the
 * pipe after the run is read too.  No sleep stands in for a
 * synchronisation: the report itself is the signal.
 *
 * Code under the runtime records failures with CHECK (tests/support), and
 * the tests assert after tr_run has returned.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <poll.h>
#include <semaphore.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <tractor/tractor.h>

#include "tests/support/check.h"

#define MS (1000 * 1000LL)
#define END_LINE "end of the hang report"

enum { TAG_STOP = 1, TAG_WAKE };

/* ---- capturing stderr ---------------------------------------------------- */

static struct {
  int rd;    /* the pipe's read end */
  int saved; /* the real fd 2 */
  char buf[65536];
  size_t len; /* bytes read so far, by the reader task then by capture_end */
} cap;

static void capture_begin(void) {
  int p[2];
  cr_assert_eq(pipe(p), 0);
  fflush(stderr);
  cap.saved = dup(2);
  cr_assert(cap.saved >= 0);
  cr_assert_eq(dup2(p[1], 2), 2);
  close(p[1]);
  cap.rd = p[0];
  cap.len = 0;
  cap.buf[0] = '\0';
}

/* Reads from the pipe into cap.buf until `until` has come (NULL: until
 * EOF) or timeout_ms passes.  Returns 1 when it came. */
static int capture_read(const char *until, int timeout_ms) {
  for (;;) {
    if (until && strstr(cap.buf, until))
      return 1;
    struct pollfd pfd = {.fd = cap.rd, .events = POLLIN};
    if (poll(&pfd, 1, timeout_ms) <= 0)
      return 0;
    ssize_t n = read(cap.rd, cap.buf + cap.len, sizeof cap.buf - 1 - cap.len);
    if (n <= 0)
      return until == NULL;
    cap.len += (size_t)n;
    cap.buf[cap.len] = '\0';
  }
}

/* Puts fd 2 back and reads what is left in the pipe (the write end is then
 * closed, so the read ends at EOF). */
static void capture_end(void) {
  fflush(stderr);
  dup2(cap.saved, 2);
  close(cap.saved);
  capture_read(NULL, 10000);
  close(cap.rd);
}

/* A run's result: 0, or the failure with what tr_error_last says. */
static void assert_ran(int rc) {
  const tr_error_t *e = tr_error_last();
  cr_assert_eq(rc, 0, "the run failed: %d (%s)", rc, e ? tr_error_message(e) : tr_strerror(rc));
}

static int count_of(const char *hay, const char *needle) {
  int n = 0;
  for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
    n++;
  return n;
}

/* ---- the forgotten actors ------------------------------------------------------ */

/* The root returns only once each forgotten task has reached the call it
 * blocks in (each posts `blocking` just before it, in the same turn, so
 * the report, which the actors answer in a later turn, sees it blocked).
 * Without that wait, a report delay of a few hundred ms was not always
 * enough: once, under TSan in CI, two of the actors had not had their
 * first turn when the report came 300 ms after the root returned (under
 * TSan with two CPU hogs beside it, the root's three spawns alone once
 * took 324 ms: threads are off their cores that long). */
#define BLOCKING_TASKS 4 /* sleepy's main; forgotten-7's main, reader and waiter */
static struct scenario {
  sem_t blocking;      /* posted by each forgotten task before it blocks */
  int64_t delay_ns;    /* the run's report delay: the reader waits 3 of them */
  tr_actor_t *idle;    /* a behaviour, waiting for mail */
  tr_actor_t *sleepy;  /* a task actor asleep, with two messages it never takes */
  uint64_t got_report; /* the reader saw the report's last line */
} sc;

static void idle_beh(void *state, tr_msg_t *m) {
  (void)state;
  if (m->tag == TAG_STOP)
    CHECK(tr_actor_exit() == 0);
}

static int sleepy_main(void *arg) {
  (void)arg;
  CHECK(sem_post(&sc.blocking) == 0);
  return tr_sleep(600000 * MS) == -TR_ECANCELED ? 0 : -TR_EINVAL;
}

static void *read_report(void *arg) {
  (void)arg;
  return (void *)(intptr_t)capture_read(END_LINE, 20000);
}

/* Waits for the report on stderr, then for three more report delays, then
 * releases the other forgotten actors and its sibling. */
static int reader_task(void *arg) {
  (void)arg;
  void *got = NULL;
  CHECK(sem_post(&sc.blocking) == 0);
  CHECK(tr_to_thread(read_report, NULL, &got) == 0);
  sc.got_report = got != NULL;
  CHECK(tr_sleep(3 * sc.delay_ns) == 0); /* a second report would come here */
  CHECK(tr_actor_cancel_soon(sc.sleepy) == 0);
  CHECK(tr_send_u64(sc.idle, TAG_STOP, 0) == 0);
  tr_actor_release(sc.sleepy);
  tr_actor_release(sc.idle);
  CHECK(tr_send_u64(tr_self(), TAG_WAKE, 0) == 0); /* ends waiter_task */
  return 0;
}

static int waiter_task(void *arg) {
  (void)arg;
  tr_msg_t *m = NULL;
  CHECK(sem_post(&sc.blocking) == 0);
  CHECK(tr_recv(&m) == 0);
  CHECK(m && m->tag == TAG_WAKE);
  tr_msg_free(m);
  return 0;
}

static int forgotten_main(void *arg) {
  (void)arg;
  tr_nursery_t *n;
  CHECK(tr_nursery_open(&n) == 0);
  tr_task_opts_t r = {.name = "reader"}, w = {.name = "waiter"};
  CHECK(tr_nursery_spawn(n, reader_task, NULL, &r) == 0);
  CHECK(tr_nursery_spawn(n, waiter_task, NULL, &w) == 0);
  CHECK(sem_post(&sc.blocking) == 0);
  CHECK(tr_nursery_close(n) == 0);
  return 0;
}

/* Spawns the three actors and forgets them (no reference, no join). */
static int spawn_forgotten(void) {
  tr_spawn_opts_t io = {.name = "idle-behaviour"}, so = {.name = "sleepy"};
  CHECK(tr_spawn(idle_beh, NULL, &io, &sc.idle) == 0);
  CHECK(tr_spawn_task_actor(sleepy_main, NULL, &so, &sc.sleepy) == 0);
  CHECK(tr_send_u64(sc.sleepy, TAG_WAKE, 1) == 0);
  CHECK(tr_send_u64(sc.sleepy, TAG_WAKE, 2) == 0);
  char name[32]; /* a computed name, overwritten once spawned */
  snprintf(name, sizeof name, "forgotten-%d", 7);
  tr_spawn_opts_t fo = {.name = name};
  CHECK(tr_spawn_task_actor(forgotten_main, NULL, &fo, NULL) == 0);
  memset(name, 'X', sizeof name - 1);
  return 0;
}

static void *wait_blocking(void *arg) {
  (void)arg;
  for (int i = 0; i < BLOCKING_TASKS; i++)
    while (sem_wait(&sc.blocking) != 0)
      CHECK(errno == EINTR);
  return NULL;
}

static void scenario_begin(int64_t delay_ns) {
  memset(&sc, 0, sizeof sc);
  cr_assert_eq(sem_init(&sc.blocking, 0, 0), 0);
  sc.delay_ns = delay_ns;
}

static int forgetful_root(void *arg) {
  (void)arg;
  int rc = spawn_forgotten();
  (void)wait_blocking(NULL); /* tr_run's root is no worker: it may block */
  return rc;
}

static void check_report(const char *out) {
  cr_assert(ld(&sc.got_report), "no hang report on stderr; got:\n%s", out);
  cr_assert_eq(count_of(out, "WARN -/-: the root returned"), 1, "not exactly one report:\n%s", out);
  cr_assert(strstr(out, "3 actor(s) are still alive"), "%s", out);
  cr_assert(strstr(out, "actor \"forgotten-7\" (task actor, id "), "%s", out);
  cr_assert(strstr(out, "task \"waiter\": blocked in tr_recv"), "%s", out);
  cr_assert(strstr(out, "task \"reader\": blocked in tr_to_thread"), "%s", out);
  cr_assert(strstr(out, "task \"main\": blocked in tr_nursery_close"), "%s", out);
  cr_assert(strstr(out, "actor \"sleepy\" (task actor, id "), "%s", out);
  cr_assert(strstr(out, "2 message(s) queued\n    task \"main\": blocked in tr_sleep"), "%s", out);
  cr_assert(strstr(out, "actor \"idle-behaviour\" (behaviour, id "), "%s", out);
  cr_assert(strstr(out, "0 message(s) queued, idle between messages"), "%s", out);
  cr_assert(strstr(out, END_LINE), "%s", out);
}

/* tr_run's root returns while three actors it forgot are alive: the report
 * names each, once, and tr_run keeps waiting until they are released. */
Test(hang, report_names_forgotten_actors_once, .timeout = 120) {
  scenario_begin(250 * MS);
  unsetenv("TR_HANG_REPORT_MS");
  tr_config_t cfg = {.workers = 2, .hang_report_ns = sc.delay_ns};
  capture_begin();
  int rc = tr_run(&cfg, forgetful_root, NULL);
  capture_end();
  assert_ran(rc);
  assert_no_fails();
  check_report(cap.buf);
  tr_stats_t st;
  tr_stats(&st);
  cr_assert_eq(st.actors_allocated, 0);
  cr_assert_eq(st.msgs_allocated, 0);
}

/* The environment overrides the configuration: TR_HANG_REPORT_MS turns on
 * a report that the configuration turned off. */
Test(hang, env_sets_the_delay, .timeout = 120) {
  scenario_begin(200 * MS);
  setenv("TR_HANG_REPORT_MS", "200", 1);
  tr_config_t cfg = {.workers = 2, .hang_report_ns = -1};
  capture_begin();
  int rc = tr_run(&cfg, forgetful_root, NULL);
  capture_end();
  unsetenv("TR_HANG_REPORT_MS");
  assert_ran(rc);
  assert_no_fails();
  check_report(cap.buf);
}

/* Under tr_main, the delay starts when the root task returns. */
static int forgetful_root_task(void *arg) {
  (void)arg;
  int rc = spawn_forgotten();
  CHECK(tr_to_thread(wait_blocking, NULL, NULL) == 0);
  return rc;
}

Test(hang, tr_main_reports_after_the_root_task, .timeout = 120) {
  scenario_begin(250 * MS);
  unsetenv("TR_HANG_REPORT_MS");
  tr_config_t cfg = {.workers = 2, .hang_report_ns = sc.delay_ns};
  capture_begin();
  int rc = tr_main(0, NULL, forgetful_root_task, NULL, &cfg);
  capture_end();
  assert_ran(rc);
  assert_no_fails();
  check_report(cap.buf);
}

/* ---- no report ------------------------------------------------------------------- */

static int brief_main(void *arg) { return tr_sleep((int64_t)(intptr_t)arg * MS); }

static int brief_root(void *arg) {
  (void)arg;
  tr_spawn_opts_t o = {.name = "brief"};
  CHECK(tr_spawn_task_actor(brief_main, (void *)(intptr_t)20, &o, NULL) == 0);
  return 0;
}

/* Actors that end well within the delay: no report. */
Test(hang, none_when_actors_finish_in_time, .timeout = 60) {
  unsetenv("TR_HANG_REPORT_MS");
  tr_config_t cfg = {.workers = 2, .hang_report_ns = 2000 * MS};
  capture_begin();
  int rc = tr_run(&cfg, brief_root, NULL);
  capture_end();
  assert_ran(rc);
  assert_no_fails();
  cr_assert_eq(cap.len, 0, "unexpected output:\n%s", cap.buf);
}

static int lingering_root(void *arg) {
  (void)arg;
  tr_spawn_opts_t o = {.name = "lingering"};
  CHECK(tr_spawn_task_actor(brief_main, (void *)(intptr_t)200, &o, NULL) == 0);
  return 0;
}

/* Turned off (hang_report_ns < 0, or TR_HANG_REPORT_MS=0 over a
 * configured delay): an actor alive long after the root says nothing. */
Test(hang, none_when_turned_off, .timeout = 60) {
  unsetenv("TR_HANG_REPORT_MS");
  tr_config_t cfg = {.workers = 2, .hang_report_ns = -1};
  capture_begin();
  int rc = tr_run(&cfg, lingering_root, NULL);
  capture_end();
  assert_ran(rc);
  cr_assert_eq(cap.len, 0, "unexpected output:\n%s", cap.buf);

  setenv("TR_HANG_REPORT_MS", "0", 1);
  cfg.hang_report_ns = 10 * MS;
  capture_begin();
  rc = tr_run(&cfg, lingering_root, NULL);
  capture_end();
  unsetenv("TR_HANG_REPORT_MS");
  assert_ran(rc);
  assert_no_fails();
  cr_assert_eq(cap.len, 0, "unexpected output:\n%s", cap.buf);
}

/* The delay counts from the root's return, not from the start: a root
 * that runs for several delays with an actor alive, then ends it and
 * returns, gets no report. */
static int patient_root(void *arg) {
  (void)arg;
  tr_spawn_opts_t o = {.name = "companion"};
  tr_actor_t *a = NULL;
  CHECK(tr_spawn_task_actor(sleepy_main, NULL, &o, &a) == 0);
  CHECK(tr_sleep(2500 * MS) == 0);
  CHECK(a && tr_actor_cancel_soon(a) == 0);
  tr_actor_release(a);
  return 0;
}

Test(hang, none_while_the_root_runs, .timeout = 60) {
  unsetenv("TR_HANG_REPORT_MS");
  /* 1 s: the companion's cancel must land well within it, also under
   * sanitizers on a loaded machine. */
  tr_config_t cfg = {.workers = 2, .hang_report_ns = 1000 * MS};
  scenario_begin(cfg.hang_report_ns); /* the companion (sleepy_main) posts sc.blocking */
  capture_begin();
  int rc = tr_main(0, NULL, patient_root, NULL, &cfg);
  capture_end();
  assert_ran(rc);
  assert_no_fails();
  cr_assert_eq(cap.len, 0, "unexpected output:\n%s", cap.buf);
}
