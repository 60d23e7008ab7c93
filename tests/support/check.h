/*
 * Recording check failures from worker threads, for Criterion tests that
 * drive behaviour actors through tr_run (Criterion's assertions must only
 * run on the test's own thread).  CHECK records the first failure and
 * counts them all; the test asserts on `fails` after tr_run has returned.
 * Task-based tests use include/tractor/testing.h instead.
 */
#ifndef TR_TESTS_SUPPORT_CHECK_H
#define TR_TESTS_SUPPORT_CHECK_H

#include <criterion/criterion.h>
#include <stdint.h>

static struct {
  uint64_t count;
  int line;
  const char *what;
} fails;

static void note_fail(int line, const char *what) {
  /* Only the first failure records where; the count is exact.  Readers run
   * after tr_run has joined every worker, which orders these stores. */
  if (__atomic_fetch_add(&fails.count, 1, __ATOMIC_RELAXED) == 0) {
    __atomic_store_n(&fails.line, line, __ATOMIC_RELAXED);
    __atomic_store_n(&fails.what, what, __ATOMIC_RELAXED);
  }
}

#define CHECK(cond)                                                                                \
  do {                                                                                             \
    if (!(cond))                                                                                   \
      note_fail(__LINE__, #cond);                                                                  \
  } while (0)

static uint64_t ld(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }

/* After tr_run: fails the test with the first recorded CHECK, if any. */
static void assert_no_fails(void) {
  cr_assert_eq(fails.count, 0, "%llu failed CHECKs under tr_run; first at line %d: %s",
               (unsigned long long)fails.count, fails.line, fails.what ? fails.what : "?");
}

#endif
