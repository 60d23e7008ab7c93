/*
 * tractor_test for Criterion: run a test body as the root actor's main
 * task, under a deadline, with assertions that work on any thread, a
 * private registry address and a leak check.  This is tractor's
 * `tractor_test` pytest fixture, for C programs tested with Criterion.
 *
 *     #include <tractor/testing.h>
 *
 *     static int child(void *arg) {
 *         int *seen = arg;
 *         tr_assert_rc(tr_sleep(5 * 1000000LL), 0);  // on failure: returns
 *         (*seen)++;                                 //   -TR_EAPP, and the
 *         return 0;                                  //   nursery cancels all
 *     }
 *
 *     TR_TEST(pingpong, children_finish, .timeout = 60) {
 *         int seen = 0;
 *         tr_nursery_t *n;
 *         tr_assert_rc(tr_nursery_open(&n), 0);
 *         for (int i = 0; i < 3; i++)      // inside the nursery: tr_check
 *             tr_check_rc(tr_nursery_spawn(n, child, &seen, NULL), 0);
 *         tr_assert_rc(tr_nursery_close(n), 0);
 *         tr_assert_eq(seen, 3, "only %d children ran", seen);
 *         return 0;
 *     }
 *
 *     // tr_main's result is the body's: 42 passes.
 *     TR_TEST_EXPECT(pingpong, answer, 42, .timeout = 60) { return 42; }
 *
 *     // A slow test: its own deadline (and a Criterion timeout above it).
 *     TR_TEST_DEADLINE(pingpong, slow, 90 * 1000000000LL, .timeout = 120) {
 *         return tr_sleep(1000000000LL);
 *     }
 *
 * What TR_TEST does, in the Criterion test's process:
 *   1. reserves a free 127.0.0.1 port and sets the environment variable
 *      TR_REGISTRY_ADDR=127.0.0.1:<port>, so that parallel test processes
 *      never share a registrar: the test's root becomes the registrar there
 *      (discovery.h; TR_TEST_NO_DISCOVERY below turns it off);
 *   2. runs tr_main with the body as the root actor's main task, inside a
 *      tr_fail_after scope of TR_TEST_DEADLINE_NS (30 s unless the file
 *      defines it before including this header; TR_TEST_DEADLINE sets it
 *      per test), so that a body hanging in a blocking call is reported as
 *      "test body exceeded its 30 s deadline" rather than killed by
 *      Criterion's .timeout (a blocking call: a cancellation point, not C
 *      code that blocks; see tr_to_thread below);
 *   3. after the body, waits until the deadline (at least 1 s) for the
 *      actors it started outside any nursery to exit; actors still running
 *      then are reported and the runtime is shut down, so tr_main returns;
 *   4. after tr_main, fails the test when the body returned anything but
 *      the expected code (0, or TR_TEST_EXPECT's), when an assertion
 *      failed anywhere, on the deadline, or on a leak: an actor object or
 *      message not freed (tr_stats), or a child process left behind.
 *
 * The body is the block after the macro: a function `static int f(void)`.
 * It must end with a `return` (0 for success).  C cannot append a
 * `return 0;` after the user's closing brace, and a void body could not
 * return the tr_main result that TR_TEST_EXPECT checks; a missing return
 * is caught at compile time (-Wreturn-type, part of -Wall in gcc and on by
 * default in clang).
 *
 * Set Criterion's .timeout above the deadline (the project uses 60 s for
 * the default 30 s): it remains the backstop for a body stuck where
 * cancellation cannot reach it (a busy loop, a shielded scope, blocking C
 * code, in a task or in tr_to_thread).
 *
 * tr_to_thread and the deadline: the deadline cancels the task waiting in
 * tr_to_thread, which returns -TR_ECANCELED at once, but C code cannot be
 * interrupted: the function keeps running on its pool thread, and the
 * root actor, hence tr_main, stays alive until it returns (task.h).  The
 * fixture reports nothing before tr_main returns, so the deadline's report
 * comes only when the function returns (late, perhaps after the runtime's
 * hang report); if that is after Criterion's .timeout, or never, Criterion
 * kills the test with a bare "Timed out" and the fixture's report (the
 * deadline, every failed assertion) is lost.  Bound blocking C code run
 * through tr_to_thread itself (a timeout argument, SO_RCVTIMEO, poll),
 * well within the deadline.
 *
 * Assertions.  Criterion's cr_assert* longjmp and must only run on the
 * Criterion thread, while task code runs on runtime workers.  These record
 * the first failure in a process-wide slot (file, line, function,
 * expression, values, message, the actor, and for rc checks the formatted
 * tr_error_last()), which the fixture reports through cr_assert_fail once
 * tr_main has returned:
 *
 *   tr_assert(cond, [fmt, ...])            cond is true
 *   tr_assert_eq(a, b, [fmt, ...])         integers, compared as intmax_t
 *   tr_assert_rc(expr, expected, [fmt, ...])  a return code, shown with
 *                                          tr_errname and tr_strerror
 *   tr_assert_str_eq(a, b, [fmt, ...])     C strings (NULL equals NULL)
 *
 * The optional message is a printf format that must be a string literal.
 *
 * tr_assert* end the current function at once: `return tr_fail(
 * "AssertionError", ...)`, i.e. -TR_EAPP with an AssertionError as the
 * task's error, so a failing child cancels its siblings through its
 * nursery exactly as any failing task does.  Use them only in functions
 * returning int (the body, task functions, int helpers), and never between
 * an open and its close (nursery, cancel scope, actor nursery): C has no
 * unwinding, so the return would leave the region open with children still
 * running in it.  There, and in void functions (behaviours, thread
 * functions), use the tr_check* twins, which record the failure and carry
 * on.  The fixture reports a body that returned with a region still open.
 *
 * Threads: the assertions work on any thread (tasks, behaviours, plain
 * threads, tr_to_thread functions).
 *
 * When they count: the slot is read and then emptied by tr_test_run,
 * after tr_main.  A failure recorded before a tr_test_run starts (in a
 * Criterion .init of a TR_TEST, say) is reported by that run.  One
 * recorded after the last tr_test_run of the process has returned, or in
 * a process that never calls it (a Criterion .fini, a plain Test(), code
 * after the run), is read by nobody: the test passes, and a tr_assert*
 * there still returns -TR_EAPP but reports nothing.  Use cr_assert* there,
 * on Criterion's thread.
 *
 * Processes: they work in process children too (TR_SPAWN_PROCESS, with
 * TR_TEST_MAIN as the executable's main, and their own children).  A child
 * process has a slot of its own that nobody reads, so there each failure
 * is also appended to an anonymous in-memory file (memfd_create) that the
 * fixture holds open for the test.  Children find it through the
 * environment variable TR_TEST_CHILD_FAILURES, "/proc/<fixture pid>/fd/<n>",
 * which their own children inherit too.  After tr_main the fixture reads
 * it, counts those failures with its own, and closes it.  The file has no
 * name on disk, so nothing is left behind however a test ends (a crash,
 * exit(), a kill by Criterion's .timeout), and $TMPDIR plays no part.  A
 * fixture that cannot create it fails the test before running the body.  A
 * child that cannot write its record prints it on stderr and exits at once
 * with status 70, which its parent sees as a lost child process (its
 * actor and the nursery that started it fail: "process <pid> exited with
 * status 70").  The report marks children's failures "[in child process
 * <pid>]".  The first failure shown is this process's
 * own if it has one, else the first a child recorded.  A tr_assert in a
 * child also ends its function with the AssertionError, which reaches the
 * parent boxed (-TR_EREMOTE), as any remote failure does.  TR_TEST bodies and tr_test_run run
 * one tractor test at a time per process, on a thread that is not a
 * runtime worker (Criterion's, which runs each test in its own process).
 *
 * Header-only, for gnu11 (the project's dialect): `##__VA_ARGS__` and a
 * weak symbol for the slot, which gives one slot per program however many
 * files include this header.
 */
#ifndef TRACTOR_TESTING_H
#define TRACTOR_TESTING_H

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "tractor.h"

/* The deadline of a TR_TEST body, in nanoseconds.  Define it before
 * including this header to change a file's default. */
/* A file that defines TR_TEST_NO_DISCOVERY before including this header
 * runs its tests with discovery off (TR_REGISTRY_ADDR=off: no listener, no
 * registrar), for tests that count the runtime's fds or watches. */
#ifndef TR_TEST_DEADLINE_NS
#define TR_TEST_DEADLINE_NS (30 * 1000000000LL)
#endif

/* Worker threads of the test's runtime: 0 = the runtime's default (online
 * CPUs; the TR_WORKERS environment variable overrides it).  Define it
 * before including this header to change it. */
#ifndef TR_TEST_WORKERS
#define TR_TEST_WORKERS 0
#endif

/* ---- the fixture -------------------------------------------------------- */

/* One tractor test.  name is for messages ("suite/name"); body returns
 * the code compared with expect_rc.
 * Ownership: the caller's; tr_test_run does not retain it. */
typedef struct tr_test_def {
  const char *name;
  int (*body)(void);
  int expect_rc;
  int64_t deadline_ns; /* <= 0: TR_TEST_DEADLINE_NS */
  int workers;         /* tr_config_t.workers */
} tr_test_def_t;

/* What tr_test_run found.  message lists every reason the test failed,
 * one per line ("" when it passed), cut short if it does not fit.
 * Ownership: the caller's.  Threads: written by tr_test_run on its thread. */
typedef struct tr_test_report {
  int passed;
  int rc;                     /* tr_main's result: the body's, or a start-up error */
  int timed_out;              /* the body exceeded its deadline */
  unsigned assertions_failed; /* tr_assert* and tr_check* failures */
  char registry_addr[32];     /* the TR_REGISTRY_ADDR this test used */
  char message[8192];
} tr_test_report_t;

/*
 * The fixture's runner, which TR_TEST calls: reserves the registry
 * address, runs def->body as the root actor's main task under tr_main and
 * the deadline, then checks for leaks and reports every failure the
 * assertion slot holds, those recorded before the run included, and
 * empties it when it returns (see "When they count").  Returns 0
 * when the test passed, -TR_EAPP when it failed (rep->message says why).
 * It never calls Criterion, so a test of the fixture itself can run a
 * failing body and inspect the report.
 * Ownership: def and rep are the caller's; rep is overwritten.
 * Threads: a thread that is not a runtime worker, while no runtime runs in
 * the process (tr_main's rule); it calls setenv, so no other thread of the
 * process may be reading the environment meanwhile.
 */
static inline int tr_test_run(const tr_test_def_t *def, tr_test_report_t *rep);

/*
 * TR_TEST(suite, name, criterion options...) { body; return 0; }
 * TR_TEST_EXPECT(suite, name, expected_rc, options...) { ...; return rc; }
 * TR_TEST_DEADLINE(suite, name, deadline_ns, options...) { ... }
 *
 * Define a Criterion test (same suite/name and options as Test, such as
 * .timeout) whose body runs through tr_test_run; the test fails with the
 * report's message.  The block that follows is the body, `static int
 * tr__body_<suite>_<name>(void)`.
 * Ownership: the body owns what it opens and must close or free it; the
 * leak check holds it to that.
 * Threads: the body runs on runtime workers (it is a task).
 */
#define TR_TEST(suite, name, ...) TR__TEST(suite, name, 0, TR_TEST_DEADLINE_NS, ##__VA_ARGS__)
#define TR_TEST_EXPECT(suite, name, expected_rc, ...)                                              \
  TR__TEST(suite, name, (expected_rc), TR_TEST_DEADLINE_NS, ##__VA_ARGS__)
#define TR_TEST_DEADLINE(suite, name, deadline_ns, ...)                                            \
  TR__TEST(suite, name, 0, (deadline_ns), ##__VA_ARGS__)

#define TR__TEST(suite, name, expected_rc, deadline_ns, ...)                                       \
  static int tr__body_##suite##_##name(void);                                                      \
  Test(suite, name, ##__VA_ARGS__) {                                                               \
    tr_test_def_t tr__def_ = {#suite "/" #name, tr__body_##suite##_##name, (expected_rc),          \
                              (deadline_ns), TR_TEST_WORKERS};                                     \
    static tr_test_report_t tr__rep_; /* 8 KiB: off the stack */                                   \
    if (tr_test_run(&tr__def_, &tr__rep_) != 0)                                                    \
      cr_assert_fail("%s", tr__rep_.message);                                                      \
  }                                                                                                \
  static int tr__body_##suite##_##name(void)

/* ---- assertions ------------------------------------------------------------ */

#define tr_assert(cond, ...) TR__TRUTH(TR__RETURN, 1, cond, "tr_assert(" #cond ")", __VA_ARGS__)
#define tr_check(cond, ...) TR__TRUTH(TR__RECORD, 0, cond, "tr_check(" #cond ")", __VA_ARGS__)
#define tr_assert_eq(a, b, ...)                                                                    \
  TR__EQ(TR__RETURN, 1, a, b, "tr_assert_eq(" #a ", " #b ")", __VA_ARGS__)
#define tr_check_eq(a, b, ...)                                                                     \
  TR__EQ(TR__RECORD, 0, a, b, "tr_check_eq(" #a ", " #b ")", __VA_ARGS__)
#define tr_assert_rc(expr, expected, ...)                                                          \
  TR__RC(TR__RETURN, 1, expr, expected, "tr_assert_rc(" #expr ", " #expected ")", __VA_ARGS__)
#define tr_check_rc(expr, expected, ...)                                                           \
  TR__RC(TR__RECORD, 0, expr, expected, "tr_check_rc(" #expr ", " #expected ")", __VA_ARGS__)
#define tr_assert_str_eq(a, b, ...)                                                                \
  TR__STR(TR__RETURN, 1, a, b, "tr_assert_str_eq(" #a ", " #b ")", __VA_ARGS__)
#define tr_check_str_eq(a, b, ...)                                                                 \
  TR__STR(TR__RECORD, 0, a, b, "tr_check_str_eq(" #a ", " #b ")", __VA_ARGS__)

/* The optional message is pasted after " " so that an absent one is a
 * valid, non-empty format (an empty one trips -Wformat-zero-length). */
#define TR__RETURN(call) return (call)
#define TR__RECORD(call) (void)(call)
#define TR__TRUTH(on_fail, raise, cond, what, ...)                                                 \
  do {                                                                                             \
    if (!(cond))                                                                                   \
      on_fail(tr__test_fail_truth((raise), __FILE__, __LINE__, __func__, what, " " __VA_ARGS__));  \
  } while (0)
#define TR__EQ(on_fail, raise, a, b, what, ...)                                                    \
  do {                                                                                             \
    intmax_t tr__a_ = (intmax_t)(a), tr__b_ = (intmax_t)(b);                                       \
    if (tr__a_ != tr__b_)                                                                          \
      on_fail(tr__test_fail_eq((raise), __FILE__, __LINE__, __func__, what, tr__a_, tr__b_,        \
                               " " __VA_ARGS__));                                                  \
  } while (0)
#define TR__RC(on_fail, raise, expr, expected, what, ...)                                          \
  do {                                                                                             \
    int tr__got_ = (expr), tr__want_ = (expected);                                                 \
    if (tr__got_ != tr__want_)                                                                     \
      on_fail(tr__test_fail_rc((raise), __FILE__, __LINE__, __func__, what, tr__got_, tr__want_,   \
                               " " __VA_ARGS__));                                                  \
  } while (0)
#define TR__STR(on_fail, raise, a, b, what, ...)                                                   \
  do {                                                                                             \
    const char *tr__sa_ = (a), *tr__sb_ = (b);                                                     \
    if (tr__sa_ != tr__sb_ && (!tr__sa_ || !tr__sb_ || strcmp(tr__sa_, tr__sb_) != 0))             \
      on_fail(tr__test_fail_str((raise), __FILE__, __LINE__, __func__, what, tr__sa_, tr__sb_,     \
                                " " __VA_ARGS__));                                                 \
  } while (0)

/*
 * Record a failed check in the slot (the first one keeps its text; later
 * ones are counted).  With raise != 0 they also record an AssertionError
 * as the current task's (or thread's) error and return -TR_EAPP for the
 * assertion to return; with raise == 0 they return 0 and leave the task's
 * error alone.
 * Ownership: every string is borrowed for the call.  Threads: any.
 */
static inline int tr__test_fail_truth(int raise, const char *file, int line, const char *func,
                                      const char *what, const char *fmt, ...) TR__PRINTF(6, 7);
static inline int tr__test_fail_eq(int raise, const char *file, int line, const char *func,
                                   const char *what, intmax_t a, intmax_t b, const char *fmt, ...)
    TR__PRINTF(8, 9);
static inline int tr__test_fail_rc(int raise, const char *file, int line, const char *func,
                                   const char *what, int got, int want, const char *fmt, ...)
    TR__PRINTF(8, 9);
static inline int tr__test_fail_str(int raise, const char *file, int line, const char *func,
                                    const char *what, const char *a, const char *b, const char *fmt,
                                    ...) TR__PRINTF(8, 9);

/* ---- the slot ------------------------------------------------------------------ */

/*
 * The first failure of the running test.  state goes 0 (empty) -> 1 (the
 * first failing check won the CAS and is writing text) -> 2 (text
 * published); count counts every failure.  Weak, so that every file of a
 * test program that includes this header shares one definition.
 * Threads: any, through the atomics in tr__test_vfail; reset and read only
 * by the runner, after tr_main.
 */
typedef struct tr__test_slot {
  int state;
  unsigned count;
  char text[4096];
} tr__test_slot_t;

extern tr__test_slot_t tr__test_slot;
__attribute__((weak)) tr__test_slot_t tr__test_slot;

/* Appends a formatted string at *pos in buf (len bytes), never overflowing:
 * *pos saturates at len - 1. */
static inline void tr__test_vappend(char *buf, size_t len, size_t *pos, const char *fmt,
                                    va_list ap) {
  if (*pos + 1 >= len)
    return;
  int n = vsnprintf(buf + *pos, len - *pos, fmt, ap);
  if (n < 0)
    return;
  *pos = (size_t)n >= len - *pos ? len - 1 : *pos + (size_t)n;
}

static inline void tr__test_append(char *buf, size_t len, size_t *pos, const char *fmt, ...)
    TR__PRINTF(4, 5);
static inline void tr__test_append(char *buf, size_t len, size_t *pos, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  tr__test_vappend(buf, len, pos, fmt, ap);
  va_end(ap);
}

/* Renders a return code: "-5 TR_ECANCELED (operation cancelled)", "0 OK",
 * or just the number when positive (a value, such as a result of 42, which
 * tr_errname would read as the code -42). */
static inline const char *tr__test_rcstr(char *buf, size_t len, int rc) {
  if (rc < 0)
    snprintf(buf, len, "%d %s (%s)", rc, tr_errname(rc), tr_strerror(rc));
  else if (rc == 0)
    snprintf(buf, len, "0 OK");
  else
    snprintf(buf, len, "%d", rc);
  return buf;
}

/* The environment variable through which process children find the
 * fixture's record of their failures: "/proc/<fixture pid>/fd/<n>", the
 * fixture's anonymous in-memory file (see "Processes" above). */
#define TR__TEST_CHILD_ENV "TR_TEST_CHILD_FAILURES"

/* The exit status of a process child that could not hand a failure to the
 * fixture (EX_SOFTWARE, from <sysexits.h>). */
#define TR__TEST_CHILD_LOST_STATUS 70

/* Appends one failure of this process child to the fixture's record: one
 * record, "file:line: in func(): head (actor 'name') [in child process
 * pid]", ending in a NUL, written with one O_APPEND write so that records
 * of concurrent children do not mix.  Opening the fixture's memfd through
 * procfs gives this process an open file description of its own, so its
 * O_APPEND is its own too (an inherited descriptor would share the
 * fixture's offset).  Nothing happens when no fixture is named (none above
 * this process).  When the record cannot be written (the fixture has
 * exited, procfs is unreachable, this process is out of fds), the failure
 * must not be lost: it goes to stderr and the process ends at once with
 * TR__TEST_CHILD_LOST_STATUS, which its parent sees as a child process
 * lost without an exit report ("process <pid> exited with status 70"),
 * failing the actor and the nursery that started it.
 * Threads: any. */
static inline void tr__test_child_record(const char *file, int line, const char *func,
                                         const char *head) {
  const char *path = getenv(TR__TEST_CHILD_ENV);
  if (!path || !*path)
    return;
  char rec[1024];
  size_t rp = 0;
  tr_actor_t *self = tr_self();
  tr__test_append(rec, sizeof rec, &rp, "%s:%d: in %s(): %s", file, line, func, head);
  if (self)
    tr__test_append(rec, sizeof rec, &rp, " (actor '%s')", tr_actor_name(self));
  tr__test_append(rec, sizeof rec, &rp, " [in child process %d]", (int)getpid());
  const char *what = "open";
  int fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
  if (fd >= 0) {
    ssize_t k;
    do
      k = write(fd, rec, rp + 1); /* with its NUL */
    while (k < 0 && errno == EINTR);
    int err = errno;
    close(fd);
    if (k == (ssize_t)(rp + 1))
      return;
    what = "write";
    errno = k < 0 ? err : EIO; /* a short write: the record is cut */
  }
  int err = errno;
  /* Straight to fd 2: tr_log may be off or hooked, and stdio may be
   * locked by the thread this one interrupted. */
  dprintf(2,
          "tractor test: a failed check in child process %d cannot reach the test's fixture "
          "(%s %s: %s); the process exits with status %d so that its parent sees it fail:\n%s\n",
          (int)getpid(), what, path, strerror(err), TR__TEST_CHILD_LOST_STATUS, rec);
  _exit(TR__TEST_CHILD_LOST_STATUS);
}

/* The common part of the tr__test_fail_* functions.  err_rc != 0 asks for
 * the current error object to be shown when it carries that code (it is
 * then the failure the rc check saw). */
static inline int tr__test_vfail(int raise, const char *file, int line, const char *func,
                                 const char *what, const char *detail, int err_rc, const char *fmt,
                                 va_list ap) {
  /* The headline also becomes the AssertionError's message.  512 bytes on
   * the task's stack: fibers have small stacks, the full report goes to
   * the slot. */
  char head[512];
  size_t hp = 0;
  tr__test_append(head, sizeof head, &hp, "%s failed", what);
  if (detail && *detail)
    tr__test_append(head, sizeof head, &hp, ": %s", detail);
  size_t user = hp;
  tr__test_append(head, sizeof head, &hp, ":");
  tr__test_vappend(head, sizeof head, &hp, fmt, ap);
  if (hp <= user + 2) { /* ": " alone: the " " the macros put before no message */
    hp = user;
    head[hp] = '\0';
  }
  const tr_error_t *e = err_rc ? tr_error_last() : NULL;
  if (e && tr_error_code(e) != err_rc)
    e = NULL; /* a stale error from an earlier call */
  if (e)
    tr__test_append(head, sizeof head, &hp, " [%s: %s]", tr_error_type(e), tr_error_message(e));

  /* In a process child, the failure goes to the fixture's file too. */
  if (tr_spawned_child())
    tr__test_child_record(file, line, func, head);

  int empty = 0;
  /* acq_rel CAS, paired with the acquire load in tr__test_slot_text: only
   * the winner writes text, and publishes it with the release store below. */
  if (__atomic_compare_exchange_n(&tr__test_slot.state, &empty, 1, 0, __ATOMIC_ACQ_REL,
                                  __ATOMIC_ACQUIRE)) {
    char *t = tr__test_slot.text;
    size_t len = sizeof tr__test_slot.text, tp = 0;
    tr_actor_t *self = tr_self();
    tr__test_append(t, len, &tp, "%s:%d: in %s(): %s", file, line, func, head);
    if (self)
      tr__test_append(t, len, &tp, " (actor '%s')", tr_actor_name(self));
    if (e) {
      tr__test_append(t, len, &tp, "\n");
      if (tp + 1 < len) {
        int n = tr_error_format(e, t + tp, len - tp);
        if (n > 0)
          tp = (size_t)n >= len - tp ? len - 1 : tp + (size_t)n;
      }
    }
    /* Release: pairs with the acquire load in tr__test_slot_text, which
     * then sees the whole text. */
    __atomic_store_n(&tr__test_slot.state, 2, __ATOMIC_RELEASE);
  }
  /* Relaxed: a plain tally; the reader runs after tr_main joined every
   * thread that could add to it. */
  __atomic_add_fetch(&tr__test_slot.count, 1, __ATOMIC_RELAXED);
  if (!raise)
    return 0;
  return tr__fail_at(file, line, func, "AssertionError", "%s", head);
}

static inline int tr__test_fail_truth(int raise, const char *file, int line, const char *func,
                                      const char *what, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int rc = tr__test_vfail(raise, file, line, func, what, NULL, 0, fmt, ap);
  va_end(ap);
  return rc;
}

static inline int tr__test_fail_eq(int raise, const char *file, int line, const char *func,
                                   const char *what, intmax_t a, intmax_t b, const char *fmt, ...) {
  char detail[96];
  snprintf(detail, sizeof detail, "%jd != %jd", a, b);
  va_list ap;
  va_start(ap, fmt);
  int rc = tr__test_vfail(raise, file, line, func, what, detail, 0, fmt, ap);
  va_end(ap);
  return rc;
}

static inline int tr__test_fail_rc(int raise, const char *file, int line, const char *func,
                                   const char *what, int got, int want, const char *fmt, ...) {
  char detail[256], g[112], w[112];
  snprintf(detail, sizeof detail, "got %s, expected %s", tr__test_rcstr(g, sizeof g, got),
           tr__test_rcstr(w, sizeof w, want));
  va_list ap;
  va_start(ap, fmt);
  int rc = tr__test_vfail(raise, file, line, func, what, detail, got < 0 ? got : 0, fmt, ap);
  va_end(ap);
  return rc;
}

static inline int tr__test_fail_str(int raise, const char *file, int line, const char *func,
                                    const char *what, const char *a, const char *b, const char *fmt,
                                    ...) {
  char detail[256];
  snprintf(detail, sizeof detail, "%s%s%s != %s%s%s", a ? "\"" : "", a ? a : "NULL", a ? "\"" : "",
           b ? "\"" : "", b ? b : "NULL", b ? "\"" : "");
  va_list ap;
  va_start(ap, fmt);
  int rc = tr__test_vfail(raise, file, line, func, what, detail, 0, fmt, ap);
  va_end(ap);
  return rc;
}

/* Empties the slot.  Threads: the runner's, while no runtime runs (its
 * workers, which record failures, are joined). */
static inline void tr__test_slot_reset(void) {
  tr__test_slot.text[0] = '\0';
  __atomic_store_n(&tr__test_slot.count, 0, __ATOMIC_RELAXED);
  /* Release: pairs with the CAS in tr__test_vfail (and the next run's
   * workers start after this anyway). */
  __atomic_store_n(&tr__test_slot.state, 0, __ATOMIC_RELEASE);
}

/* The first failure's text, or NULL when nothing failed.  A plain thread
 * of the test may still be writing it (state 1): its text is then not
 * shown rather than read half-written.
 * Ownership: borrowed from the slot.  Threads: the runner's. */
static inline const char *tr__test_slot_text(void) {
  /* Acquire: pairs with the release store that published the text. */
  int s = __atomic_load_n(&tr__test_slot.state, __ATOMIC_ACQUIRE);
  if (s == 0)
    return NULL;
  return s == 2 ? tr__test_slot.text : "(a failure was still being recorded)";
}

/* ---- the runner ---------------------------------------------------------------- */

/* memfd_create's flag, from <linux/memfd.h>: <sys/mman.h> declares it
 * only under _GNU_SOURCE, which a header cannot define for its includer. */
#define TR__TEST_MFD_CLOEXEC 0x0001U

/* Where process children record their failures: an anonymous in-memory
 * file (memfd), which has no name on any file system, so nothing is left
 * behind however the test ends (a crash, a kill by Criterion's .timeout,
 * exit()), and no directory ($TMPDIR) has to be usable.  Children reach
 * it as /proc/<this pid>/fd/<fd>, named in TR__TEST_CHILD_ENV; grandchildren
 * inherit the variable and reach the same file.  *fd is this process's
 * descriptor (close-on-exec: a child must not inherit it, which would
 * share one file offset), *id its device and inode, which the reader checks
 * so that it never reads another file that took the same number.  Returns
 * 0, or an errno value with nothing left open or set.
 * Threads: the runner's, before tr_main. */
static inline int tr__test_child_open(int *fd, struct stat *id) {
#ifdef SYS_memfd_create
  int f = (int)syscall(SYS_memfd_create, "tr-test-child-failures", TR__TEST_MFD_CLOEXEC);
#else
  int f = -1;
  errno = ENOSYS;
#endif
  if (f < 0)
    return errno;
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/fd/%d", (int)getpid(), f);
  if (fstat(f, id) != 0 || setenv(TR__TEST_CHILD_ENV, path, 1) != 0) {
    int err = errno;
    close(f);
    return err;
  }
  *fd = f;
  return 0;
}

/* Reads what process children recorded in the file at fd (from
 * tr__test_child_open, with identity id), keeps the first record's text in
 * first (len bytes), closes fd, unsets the environment variable, and
 * returns how many failures were recorded, or -1 with *err set when the
 * file could not be read (the failures are then unknown, which the caller
 * reports).  Threads: the runner's, after tr_main. */
static inline long tr__test_child_read(int fd, const struct stat *id, char *first, size_t len,
                                       int *err) {
  unsigned count = 0;
  memset(first, 0, len); /* first[len - 1] stays the end */
  struct stat now;
  *err = 0;
  if (fstat(fd, &now) != 0) {
    *err = errno;
  } else if (now.st_dev != id->st_dev || now.st_ino != id->st_ino) {
    *err = EBADF; /* the body closed it, and the number was reused */
  } else {
    char buf[4096];
    size_t fp = 0, in_record = 0;
    off_t off = 0;
    for (;;) {
      /* pread: the children appended through descriptions of their own,
       * and this one's offset was never moved. */
      ssize_t k = pread(fd, buf, sizeof buf, off);
      if (k < 0 && errno == EINTR)
        continue;
      if (k < 0)
        *err = errno;
      if (k <= 0)
        break;
      off += k;
      for (ssize_t i = 0; i < k; i++) {
        if (count == 0 && fp + 1 < len)
          first[fp++] = buf[i]; /* the NUL ends it */
        in_record = buf[i] != '\0';
        if (!in_record)
          count++;
      }
    }
    if (in_record) /* a record cut short: a child died writing it */
      count++;
    close(fd);
  }
  unsetenv(TR__TEST_CHILD_ENV);
  return *err ? -1 : (long)count;
}

/* Shared by the runner's thread and the body's root task.  The runner
 * writes it before tr_main and reads it after; the root task writes it in
 * between, and tr_main's return (the runtime joined its workers) orders
 * those writes before the reads. */
typedef struct tr__test_ctx {
  const tr_test_def_t *def;
  int64_t deadline_ns;
  int ran; /* the body was called */
  int body_rc;
  int setup_rc; /* the deadline scope could not be opened */
  int timed_out;
  int left_open;     /* the body returned inside a scope or nursery */
  uint64_t leftover; /* actors still running when we gave up waiting */
  char err_type[64]; /* the body's error, when it returned a failure */
  char err[4096];
} tr__test_ctx_t;

/* The least time actors left by the body get to exit once it returned,
 * even when it returned at (or after) its deadline. */
#define TR__TEST_GRACE_NS (1000 * 1000000LL)

/* The root actor's main task: the body inside the deadline scope, then
 * the wait for actors the body left running. */
static inline int tr__test_root(void *arg) {
  tr__test_ctx_t *c = arg;
  int64_t start = tr_now();
  tr_scope_t deadline;
  int rc = tr_fail_after(&deadline, c->deadline_ns);
  if (rc) {
    c->setup_rc = rc;
    return rc;
  }
  c->ran = 1;
  c->body_rc = c->def->body();
  if (c->body_rc != c->def->expect_rc) {
    /* Read now: closing the scope may replace the task's error. */
    const tr_error_t *e = tr_error_last();
    if (e && tr_error_code(e) == c->body_rc) {
      snprintf(c->err_type, sizeof c->err_type, "%s", tr_error_type(e));
      tr_error_format(e, c->err, sizeof c->err);
    }
  }
  rc = tr_scope_close(&deadline);
  if (rc == -TR_ETIMEDOUT) {
    c->timed_out = 1;
  } else if (rc != 0) {
    /* Not the innermost scope: the body left a region open, and this
     * task's scope chain still points into the body's dead frame, so no
     * blocking call is safe here any more. */
    c->left_open = 1;
    return c->body_rc;
  }

  /* tr_main would wait forever for an actor that never exits; wait only
   * until the deadline (or a grace period past it), then end them. */
  int64_t until = start + c->deadline_ns;
  int64_t now = tr_now();
  if (until < now + TR__TEST_GRACE_NS)
    until = now + TR__TEST_GRACE_NS;
  for (;;) {
    tr_stats_t st;
    tr_stats(&st);
    if (st.actors_live - st.actors_node <= 1) /* this root actor only (and the node's) */
      break;
    if (tr_now() >= until) {
      c->leftover = st.actors_live - st.actors_node - 1;
      tr_shutdown();
      break;
    }
    /* Cancelled: the body called tr_shutdown, which ends every actor. */
    if (tr_sleep(1000000LL) != 0)
      break;
  }
  return c->body_rc;
}

/* Picks a free 127.0.0.1 port (bind port 0, read it back, close) and sets
 * TR_REGISTRY_ADDR.  Another process may take the port between this close
 * and the registry's bind (as the source port of a connect, say); the
 * root's start-up then probes it again (a connect that reaches its own
 * socket counts as refused) before it binds.  Returns 0 or an errno value. */
static inline int tr__test_reserve_registry(char *addr, size_t len) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return errno;
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  sa.sin_port = 0;
  socklen_t sl = sizeof sa;
  int err = 0;
  if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
      getsockname(fd, (struct sockaddr *)&sa, &sl) != 0)
    err = errno;
  close(fd);
  if (err)
    return err;
  snprintf(addr, len, "127.0.0.1:%u", (unsigned)ntohs(sa.sin_port));
#ifdef TR_TEST_NO_DISCOVERY
  snprintf(addr, len, "off");
#endif
  return setenv("TR_REGISTRY_ADDR", addr, 1) == 0 ? 0 : errno;
}

static inline int tr__test_run(const tr_test_def_t *def, tr_test_report_t *rep) {
  char *msg = rep->message;
  size_t len = sizeof rep->message, mp = 0;
  memset(rep, 0, sizeof *rep);

  int err = tr__test_reserve_registry(rep->registry_addr, sizeof rep->registry_addr);
  if (err) {
    tr__test_append(msg, len, &mp,
                    "%s: cannot reserve a private registry address on "
                    "127.0.0.1: %s\n",
                    def->name, strerror(err));
    return -TR_EAPP;
  }

  /* Static: the context holds 4 KiB of error text, and one test runs at
   * a time in a process. */
  static tr__test_ctx_t c;
  memset(&c, 0, sizeof c);
  c.def = def;
  c.deadline_ns = def->deadline_ns > 0 ? def->deadline_ns : TR_TEST_DEADLINE_NS;
  tr_config_t cfg = {.workers = def->workers};
  /* Without it a failure in a process child would go unseen and the test
   * could pass: no run rather than that. */
  int child_fd = -1;
  struct stat child_id;
  err = tr__test_child_open(&child_fd, &child_id);
  if (err) {
    tr__test_append(msg, len, &mp,
                    "%s: cannot create the in-memory file (memfd_create) where process "
                    "children record their failures: %s\n",
                    def->name, strerror(err));
    return -TR_EAPP;
  }
  rep->rc = tr_main(0, NULL, tr__test_root, &c, &cfg);
  rep->timed_out = c.timed_out;
  rep->assertions_failed = __atomic_load_n(&tr__test_slot.count, __ATOMIC_RELAXED);
  /* Every child process has been reaped: its records are all in. */
  static char child_first[1024];
  long child_read = tr__test_child_read(child_fd, &child_id, child_first, sizeof child_first, &err);
  unsigned child_failed = child_read > 0 ? (unsigned)child_read : 0;
  rep->assertions_failed += child_failed;
  if (child_read < 0)
    tr__test_append(msg, len, &mp,
                    "cannot read what process children recorded (their failures are "
                    "unknown): %s\n",
                    strerror(err));

  if (!c.ran) {
    char r[112];
    tr__test_append(msg, len, &mp, "the test runtime did not start: %s\n",
                    tr__test_rcstr(r, sizeof r, c.setup_rc ? c.setup_rc : rep->rc));
  }
  if (c.timed_out)
    tr__test_append(msg, len, &mp, "test body exceeded its %g s deadline\n",
                    (double)c.deadline_ns / 1e9);
  const char *first = tr__test_slot_text();
  if (!first && child_failed)
    first = child_first;
  if (first) {
    tr__test_append(msg, len, &mp, "assertion failed: %s\n", first);
    if (rep->assertions_failed > 1)
      tr__test_append(msg, len, &mp, "(and %u more failed assertions)\n",
                      rep->assertions_failed - 1);
  }
  /* An assertion in the body returns its AssertionError, already shown. */
  if (c.ran && c.body_rc != def->expect_rc &&
      !(first && strcmp(c.err_type, "AssertionError") == 0)) {
    char g[112], w[112];
    tr__test_append(msg, len, &mp, "the body returned %s, expected %s\n",
                    tr__test_rcstr(g, sizeof g, c.body_rc),
                    tr__test_rcstr(w, sizeof w, def->expect_rc));
    if (c.err[0])
      tr__test_append(msg, len, &mp, "%s\n", c.err);
  }
  if (c.left_open)
    tr__test_append(msg, len, &mp,
                    "the body returned with a cancel scope, nursery or actor "
                    "nursery still open (a tr_assert between an open and its "
                    "close? use tr_check there)\n");
  if (c.leftover)
    tr__test_append(msg, len, &mp,
                    "%" PRIu64 " actor(s) still running after the body "
                    "returned; the runtime was shut down to end them\n",
                    c.leftover);

  /* Leaks, from the figures of the run that just ended.  Tasks cannot
   * outlive tr_main, and tr_main waits for every actor, so live is 0
   * unless the runtime itself is broken. */
  tr_stats_t st;
  tr_stats(&st);
  if (st.actors_live)
    tr__test_append(msg, len, &mp, "leak: %" PRIu64 " actor(s) still live\n", st.actors_live);
  if (st.actors_allocated)
    tr__test_append(msg, len, &mp,
                    "leak: %" PRIu64 " actor object(s) not freed (a tr_actor_t "
                    "reference not released?)\n",
                    st.actors_allocated);
  if (st.msgs_allocated)
    tr__test_append(msg, len, &mp, "leak: %" PRIu64 " message(s) not freed\n", st.msgs_allocated);

  /* Child processes: a test may start actors in child processes
   * (TR_SPAWN_PROCESS, with TR_TEST_MAIN below as the executable's main),
   * and a child that outlives its test is a leak the counters above
   * cannot see.  tr_main reaps every child process of its nurseries
   * before it returns, so any child found here is one the test left
   * behind.  waitpid fails with ECHILD when this process has no child
   * left, running or exited. */
  int status;
  pid_t child;
  do
    child = waitpid(-1, &status, WNOHANG);
  while (child < 0 && errno == EINTR);
  if (child == 0)
    tr__test_append(msg, len, &mp,
                    "leak: a child process is still running after tr_main returned\n");
  else if (child > 0)
    tr__test_append(msg, len, &mp, "leak: child process %d had exited but was never waited for\n",
                    (int)child);

  rep->passed = mp == 0;
  if (rep->passed)
    return 0;
  /* Name the test first; the reasons were appended as found. */
  char head[160];
  int hn = snprintf(head, sizeof head, "tractor test %s failed:\n", def->name);
  if (hn > 0 && (size_t)hn < len) {
    size_t keep = mp + (size_t)hn < len ? mp : len - 1 - (size_t)hn;
    memmove(msg + hn, msg, keep);
    memcpy(msg, head, (size_t)hn);
    msg[(size_t)hn + keep] = '\0';
  }
  return -TR_EAPP;
}

/* The slot is emptied after the run rather than before it, so that a
 * failure recorded before the run (a Criterion .init) is reported by it
 * instead of being wiped, while the next run of the process still starts
 * clean. */
static inline int tr_test_run(const tr_test_def_t *def, tr_test_report_t *rep) {
  int rc = tr__test_run(def, rep);
  tr__test_slot_reset();
  return rc;
}

/*
 * TR_TEST_MAIN(): the main of a Criterion test executable whose tests
 * start actors in child processes (TR_SPAWN_PROCESS).  A child process is
 * the same executable re-executed: this main hands it to tr_main (which
 * serves the child actor and exits the process) and otherwise runs
 * Criterion exactly as Criterion's own main does.  Write it once per test
 * executable, at file scope, in any one of its files.  (A library
 * constructor could not do this for you: it cannot know that every export
 * of the executable, registered by constructors too, is in.)
 */
#define TR_TEST_MAIN()                                                                             \
  int main(int argc, char **argv) {                                                                \
    if (tr_spawned_child())                                                                        \
      return tr_main(argc, argv, NULL, NULL, NULL); /* serves, then exits */                       \
    struct criterion_test_set *tr__tests = criterion_initialize();                                 \
    int tr__result = 0;                                                                            \
    if (criterion_handle_args(argc, argv, true))                                                   \
      tr__result = !criterion_run_all_tests(tr__tests);                                            \
    criterion_finalize(tr__tests);                                                                 \
    return tr__result;                                                                             \
  }

#endif
