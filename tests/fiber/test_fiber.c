/*
 * Fibers (runtime/fiber): switching, first entry and exit, the stack pool,
 * migration between threads, floating-point control state, deep recursion
 * and the stack-overflow report.
 *
 * Assertions run on the test's own thread and stack only: a failing
 * cr_assert longjmps out of the test, which must not happen from a fiber
 * stack or another thread.  Fibers record what they saw; the test checks.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <fenv.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <tractor/errors.h>

#include "runtime/fiber/fiber.h"
#include "runtime/fiber/stack.h"

#if defined(__SANITIZE_ADDRESS__)
#define TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TEST_ASAN 1
#endif
#endif
#if defined(TR_TSAN) || defined(__SANITIZE_THREAD__)
#define TEST_TSAN 1
#endif

static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* The kernel's id of the calling thread.  A system call, so the compiler
 * cannot merge two calls on either side of a switch the way it may merge
 * pthread_self() (declared const), which would hide a migration. */
static long thread_id(void) { return syscall(SYS_gettid); }

/* ---- ping-pong ---------------------------------------------------------- */

#define PINGPONG_ROUNDS 1000000L

struct pingpong {
  tr_fiber_t main, fiber;
  long ball; /* plain variable: the switch must act as a compiler barrier */
  long bad;  /* first round that came back wrong, or -1 */
};

static void pingpong_fiber(void *arg) {
  struct pingpong *p = arg;
  for (;;) {
    long v = p->ball;
    if (v < 0)
      return;
    p->ball = v + 1;
    tr__fiber_switch(&p->fiber, &p->main);
  }
}

Test(fiber, pingpong_million, .timeout = 120) {
  static struct pingpong p;
  p.bad = -1;
  tr__fiber_init_main(&p.main);
  cr_assert_eq(tr__fiber_init(&p.fiber, 0, pingpong_fiber, &p), 0);
  double t0 = now_ns();
  for (long i = 0; i < PINGPONG_ROUNDS; i++) {
    p.ball = 2 * i;
    tr__fiber_switch(&p.main, &p.fiber);
    if (p.ball != 2 * i + 1 && p.bad < 0)
      p.bad = i;
  }
  double t1 = now_ns();
  cr_assert_eq(p.bad, -1, "round %ld came back wrong", p.bad);
  cr_assert_not(tr__fiber_done(&p.fiber));
  p.ball = -1;
  tr__fiber_switch(&p.main, &p.fiber);
  cr_assert(tr__fiber_done(&p.fiber), "fn returned, so the fiber is done");
  tr__fiber_destroy(&p.fiber);
  /* Informational only: timing is never asserted in tests. */
  cr_log_info("main->fiber->main round trip: %.1f ns", (t1 - t0) / (double)PINGPONG_ROUNDS);
}

/* ---- first entry, exit, labels, sizes ---------------------------------- */

struct once {
  tr_fiber_t main, fiber;
  int ran;
  void *arg_seen;
};

static void once_fiber(void *arg) {
  struct once *o = arg;
  o->ran++;
  o->arg_seen = arg;
}

Test(fiber, runs_fn_once_and_returns_to_caller, .timeout = 10) {
  struct once o = {0};
  tr__fiber_init_main(&o.main);
  cr_assert_eq(tr__fiber_init(&o.fiber, 0, once_fiber, &o), 0);
  cr_assert_eq(o.ran, 0, "nothing runs before the first switch");
  cr_assert_not(tr__fiber_done(&o.fiber));
  tr__fiber_set_label(&o.fiber, "test fiber");
  tr__fiber_switch(&o.main, &o.fiber);
  cr_assert_eq(o.ran, 1);
  cr_assert_eq(o.arg_seen, &o);
  cr_assert(tr__fiber_done(&o.fiber));
  tr__fiber_destroy(&o.fiber);
}

Test(fiber, stack_sizes_round_to_pages, .timeout = 10) {
  size_t page = tr__stack_page_size();
  tr_fiber_t f;
  cr_assert_eq(tr__fiber_init(&f, 0, once_fiber, NULL), 0);
  cr_assert_eq(f.stack_size, TR_FIBER_DEFAULT_STACK);
  tr__fiber_destroy(&f); /* never started: allowed */
  cr_assert_eq(tr__fiber_init(&f, 1, once_fiber, NULL), 0);
  cr_assert_eq(f.stack_size, page);
  tr__fiber_destroy(&f);
  cr_assert_eq(tr__fiber_init(&f, 3 * page + 1, once_fiber, NULL), 0);
  cr_assert_eq(f.stack_size, 4 * page);
  tr__fiber_destroy(&f);
}

Test(fiber, impossible_stack_is_enomem, .timeout = 10) {
  tr_fiber_t f;
  size_t before = tr__fiber_stack_pool_mapped();
  cr_assert_eq(tr__fiber_init(&f, SIZE_MAX, once_fiber, NULL), -TR_ENOMEM);
  cr_assert_eq(tr__fiber_init(&f, SIZE_MAX / 2, once_fiber, NULL), -TR_ENOMEM);
  cr_assert_eq(tr__fiber_stack_pool_mapped(), before);
}

/* A fresh stack must cost a page or two of memory, not its full size:
 * the first frame is planted in the top page and nothing else is touched.
 * mincore tells which pages are resident. */
Test(fiber, fresh_stack_touches_top_pages_only, .timeout = 10) {
  struct once o = {0};
  size_t page = tr__stack_page_size();
  size_t size = 256 * 1024; /* a size no other fiber here uses */
  tr__fiber_stack_pool_drain();
  tr__fiber_init_main(&o.main);
  cr_assert_eq(tr__fiber_init(&o.fiber, size, once_fiber, &o), 0);
  tr__fiber_switch(&o.main, &o.fiber);
  cr_assert(tr__fiber_done(&o.fiber));
  size_t pages = size / page, resident = 0;
  unsigned char *vec = malloc(pages);
  cr_assert_not_null(vec);
  cr_assert_eq(mincore(o.fiber.stack_lo, size, vec), 0);
  for (size_t i = 0; i < pages; i++)
    resident += vec[i] & 1;
  free(vec);
  cr_assert_leq(resident, 2, "%zu of %zu pages resident", resident, pages);
  tr__fiber_destroy(&o.fiber);
}

/* ---- the stack pool ----------------------------------------------------- */

static void run_to_completion(tr_fiber_t *main, tr_fiber_t *f) {
  tr__fiber_switch(main, f);
  cr_assert(tr__fiber_done(f));
  tr__fiber_destroy(f);
}

Test(fiber, ten_thousand_fibers_reuse_stacks, .timeout = 180) {
  tr_fiber_t main;
  struct once o = {0};
  tr__fiber_init_main(&main);
  tr__fiber_stack_pool_drain();
  cr_assert_eq(tr__fiber_stack_pool_mapped(), 0);

  /* One at a time: after the first, every stack comes from the pool. */
  for (int i = 0; i < 10000; i++) {
    tr_fiber_t f;
    cr_assert_eq(tr__fiber_init(&f, 0, once_fiber, &o), 0);
    run_to_completion(&main, &f);
    cr_assert_eq(tr__fiber_stack_pool_mapped(), 1, "iteration %d", i);
  }
  cr_assert_eq(o.ran, 10000);
  cr_assert_eq(tr__fiber_stack_pool_cached(), 1);

  /* Many alive at once, in rounds: the second round maps nothing. */
  enum { LIVE = 1000 };
  tr_fiber_t *fs = calloc(LIVE + 200, sizeof *fs);
  cr_assert_not_null(fs);
  for (int round = 0; round < 3; round++) {
    for (int i = 0; i < LIVE; i++)
      cr_assert_eq(tr__fiber_init(&fs[i], 0, once_fiber, &o), 0);
    cr_assert_eq(tr__fiber_stack_pool_mapped(), LIVE);
    cr_assert_eq(tr__fiber_stack_pool_cached(), 0);
    for (int i = 0; i < LIVE; i++)
      run_to_completion(&main, &fs[i]);
    cr_assert_eq(tr__fiber_stack_pool_cached(), LIVE);
  }

  /* A different size gets its own stacks and does not steal these. */
  tr_fiber_t big;
  cr_assert_eq(tr__fiber_init(&big, 128 * 1024, once_fiber, &o), 0);
  cr_assert_eq(tr__fiber_stack_pool_mapped(), LIVE + 1);
  run_to_completion(&main, &big);

  /* Beyond the cap, returned stacks are unmapped. */
  tr__fiber_stack_pool_drain();
  cr_assert_eq(tr__fiber_stack_pool_mapped(), 0);
  int n = TR_FIBER_POOL_MAX + 100;
  cr_assert_leq(n, LIVE + 200);
  for (int i = 0; i < n; i++)
    cr_assert_eq(tr__fiber_init(&fs[i], 0, once_fiber, &o), 0);
  for (int i = 0; i < n; i++)
    run_to_completion(&main, &fs[i]);
  cr_assert_eq(tr__fiber_stack_pool_cached(), TR_FIBER_POOL_MAX);
  cr_assert_eq(tr__fiber_stack_pool_mapped(), TR_FIBER_POOL_MAX);
  tr__fiber_stack_pool_drain();
  cr_assert_eq(tr__fiber_stack_pool_mapped(), 0);
  free(fs);
}

/* One fiber run again and again (as a task actor's spare is): more runs
 * than TSan's shadow call stack has entries (64Ki), which a first frame
 * left behind per run would overflow (fiber.c, FIRST_FRAME). */
Test(fiber, reset_runs_one_fiber_many_times, .timeout = 120) {
  enum { RUNS = 100000 };
  tr_fiber_t main, f;
  struct once o = {0};
  tr__fiber_init_main(&main);
  cr_assert_eq(tr__fiber_init(&f, 0, once_fiber, &o), 0);
  for (int i = 0; i < RUNS; i++) {
    if (i > 0)
      tr__fiber_reset(&f, once_fiber, &o);
    tr__fiber_switch(&main, &f);
    if (!tr__fiber_done(&f) || o.ran != i + 1)
      cr_assert_fail("run %d: done %d, ran %d", i, tr__fiber_done(&f), o.ran);
  }
  tr__fiber_destroy(&f);
  cr_assert_eq(o.ran, RUNS);
}

/* ---- migration between threads ------------------------------------------ */

#define HOPS 2000

/* A fiber bounced between two threads: each thread in turn resumes it
 * from its own main context, and the fiber records which thread it found
 * itself on after every switch. */
struct bounce {
  pthread_mutex_t lock;
  pthread_cond_t cond;
  int turn; /* whose turn to resume the fiber: 0 or 1 */
  tr_fiber_t fiber;
  tr_fiber_t *resumer; /* main context of the thread resuming it now */
  long tid_seen[HOPS + 1];
  long tid_of[2];
  int hops;
};

static void bounce_fiber(void *arg) {
  struct bounce *b = arg;
  for (int i = 0; i < HOPS; i++) {
    b->tid_seen[i] = thread_id();
    b->hops = i + 1;
    tr__fiber_switch(&b->fiber, b->resumer);
  }
  b->tid_seen[HOPS] = thread_id();
}

struct bounce_thread {
  struct bounce *b;
  int me;
};

static void *bounce_main(void *arg) {
  struct bounce_thread *t = arg;
  struct bounce *b = t->b;
  tr_fiber_t main;
  tr__fiber_thread_init();
  tr__fiber_init_main(&main);
  b->tid_of[t->me] = thread_id();
  for (;;) {
    pthread_mutex_lock(&b->lock);
    while (b->turn != t->me && !tr__fiber_done(&b->fiber))
      pthread_cond_wait(&b->cond, &b->lock);
    pthread_mutex_unlock(&b->lock);
    /* The mutex orders this thread after the other one's last switch. */
    if (tr__fiber_done(&b->fiber))
      break;
    b->resumer = &main;
    tr__fiber_switch(&main, &b->fiber);
    pthread_mutex_lock(&b->lock);
    b->turn = 1 - t->me;
    pthread_cond_broadcast(&b->cond);
    pthread_mutex_unlock(&b->lock);
  }
  tr__fiber_thread_fini();
  return NULL;
}

Test(fiber, migrates_between_threads, .timeout = 60) {
  static struct bounce b;
  pthread_mutex_init(&b.lock, NULL);
  pthread_cond_init(&b.cond, NULL);
  cr_assert_eq(tr__fiber_init(&b.fiber, 0, bounce_fiber, &b), 0);
  struct bounce_thread t[2] = {{&b, 0}, {&b, 1}};
  pthread_t th[2];
  for (int i = 0; i < 2; i++)
    cr_assert_eq(pthread_create(&th[i], NULL, bounce_main, &t[i]), 0);
  for (int i = 0; i < 2; i++)
    pthread_join(th[i], NULL);
  cr_assert(tr__fiber_done(&b.fiber));
  cr_assert_eq(b.hops, HOPS);
  cr_assert_neq(b.tid_of[0], b.tid_of[1]);
  /* Started on thread 0, then alternating: the fiber really moved, and
   * it finished on (and returned to) whichever thread resumed it last. */
  for (int i = 0; i <= HOPS; i++)
    cr_assert_eq(b.tid_seen[i], b.tid_of[i % 2], "hop %d", i);
  tr__fiber_destroy(&b.fiber);
}

/* ---- floating-point control state ----------------------------------------- */

struct fpstate {
  tr_fiber_t main, fiber;
  int mode_at_start, mode_after_switch;
  double third_before, third_after;
  double kept; /* computed from values held across a switch */
};

static void fp_fiber(void *arg) {
  struct fpstate *s = arg;
  volatile double one = 1.0, three = 3.0;
  s->mode_at_start = fegetround();
  fesetround(FE_UPWARD);
  s->third_before = one / three;
  /* Values live across the switch (callee-saved FP registers on
   * aarch64, spilled on x86-64). */
  double a = one * 1.5, b = three * 2.25, c = a * b; /* all exact */
  tr__fiber_switch(&s->fiber, &s->main);
  s->mode_after_switch = fegetround();
  s->third_after = one / three;
  s->kept = a + b + c;
}

Test(fiber, fp_control_state_is_per_context, .timeout = 10) {
  static struct fpstate s;
  volatile double one = 1.0, three = 3.0;
  tr__fiber_init_main(&s.main);
  /* A fresh fiber starts at the default mode, whatever its starter uses. */
  fesetround(FE_TOWARDZERO);
  cr_assert_eq(tr__fiber_init(&s.fiber, 0, fp_fiber, &s), 0);
  tr__fiber_switch(&s.main, &s.fiber);
  cr_assert_eq(fegetround(), FE_TOWARDZERO, "the fiber's mode did not leak");
  fesetround(FE_DOWNWARD);
  tr__fiber_switch(&s.main, &s.fiber);
  cr_assert(tr__fiber_done(&s.fiber));
  cr_assert_eq(fegetround(), FE_DOWNWARD, "main's mode came back");
  double down = one / three;
  fesetround(FE_TONEAREST);
#if !TR_FIBER_UCONTEXT
  /* (The ucontext fallback starts a fiber with the FP environment that
   * getcontext captured in tr__fiber_init, here FE_TOWARDZERO.) */
  cr_assert_eq(s.mode_at_start, FE_TONEAREST);
#endif
  cr_assert_eq(s.mode_after_switch, FE_UPWARD, "the fiber's mode came back");
  cr_assert_eq(s.third_before, s.third_after);
  cr_assert_gt(s.third_after, down, "upward and downward rounding differ");
  cr_assert_eq(s.kept, 1.5 + 6.75 + 10.125);
  tr__fiber_destroy(&s.fiber);
}

/* ---- deep recursion and overflow -------------------------------------- */

/* Each frame holds a 512-byte buffer it writes at both ends, so a frame
 * touches its pages and the recursion cannot be folded into a loop. */
__attribute__((noinline)) static long recurse(int depth, uintptr_t *deepest) {
  volatile char buf[512];
  buf[0] = (char)depth;
  buf[sizeof buf - 1] = (char)depth;
  if (depth == 0) {
    *deepest = (uintptr_t)buf; /* an address to compare, never used */
    return 0;
  }
  return recurse(depth - 1, deepest) + buf[0] - buf[sizeof buf - 1] + 1;
}

struct deep {
  tr_fiber_t main, fiber;
  int depth;
  long result;
  uintptr_t deepest;
};

static void deep_fiber(void *arg) {
  struct deep *d = arg;
  d->result = recurse(d->depth, &d->deepest);
}

Test(fiber, deep_recursion_within_the_stack, .timeout = 30) {
  static struct deep d;
  size_t size = 256 * 1024;
  d.depth = 300; /* ~170 KiB of frames; ASan's redzones add ~20% */
  tr__fiber_thread_init();
  tr__fiber_init_main(&d.main);
  cr_assert_eq(tr__fiber_init(&d.fiber, size, deep_fiber, &d), 0);
  tr__fiber_switch(&d.main, &d.fiber);
  cr_assert(tr__fiber_done(&d.fiber));
  cr_assert_eq(d.result, 300);
#if !defined(TEST_ASAN)
  /* (With ASan's detect_stack_use_after_return, frames live on its fake
   * stacks until those run out, so the depth proves nothing there.) */
  uintptr_t lo = (uintptr_t)d.fiber.stack_lo, top = lo + size;
  cr_assert(d.deepest >= lo && d.deepest < top, "on the fiber's stack");
  cr_assert_gt(top - d.deepest, 128 * 1024, "and deep into it");
#endif
  tr__fiber_destroy(&d.fiber);
  tr__fiber_thread_fini();
}

/*
 * ASan builds skip the overflow tests: ASan owns SIGSEGV (and the
 * alternate signal stack) there, so fiber.c installs no handler and an
 * overflow is reported by ASan as a stack-overflow/SEGV instead.
 */
#if !defined(TEST_ASAN)
/* Opaque to the compiler, so it cannot see that the overflow test's
 * recursion never ends. */
static volatile int forever = 1 << 30;

static void overflow_fiber(void *arg) {
  uintptr_t deepest;
  (void)arg;
  recurse(forever, &deepest);
}

static void run_overflow(void) {
  static tr_fiber_t main, fiber;
  tr__fiber_thread_init();
  tr__fiber_init_main(&main);
  if (tr__fiber_init(&fiber, 0, overflow_fiber, NULL) != 0)
    return;
  tr__fiber_set_label(&fiber, "actor root, task main");
  tr__fiber_switch(&main, &fiber);
}

Test(fiber, overflow_aborts, .signal = SIGABRT, .timeout = 30) { run_overflow(); }

/* The same in a child process whose stderr we read, to check the report. */
Test(fiber, overflow_report_names_the_fiber, .timeout = 30) {
  int fds[2];
  cr_assert_eq(pipe(fds), 0);
  pid_t pid = fork();
  cr_assert_neq(pid, -1);
  if (pid == 0) {
    dup2(fds[1], STDERR_FILENO);
    close(fds[0]);
    close(fds[1]);
    run_overflow();
    _exit(0); /* not reached */
  }
  close(fds[1]);
  char out[512];
  size_t n = 0;
  ssize_t r;
  while (n < sizeof out - 1 && (r = read(fds[0], out + n, sizeof out - 1 - n)) > 0)
    n += (size_t)r;
  out[n] = '\0';
  close(fds[0]);
  int status;
  cr_assert_eq(waitpid(pid, &status, 0), pid);
  cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT, "status %#x", status);
  cr_assert(strstr(out, "tractor: stack overflow in actor root, task main "
                        "(fiber stack 65536 bytes)\n") != NULL,
            "stderr was: %s", out);
}
#endif

/* A fault that is not a guard-page hit stays an ordinary SIGSEGV.  (Under
 * either sanitizer the sanitizer reports it instead, and exits.) */
#if !defined(TEST_ASAN) && !defined(TEST_TSAN)
static void null_fiber(void *arg) {
  volatile int *volatile p = arg;
  *p = 1;
}

Test(fiber, other_segv_stays_ordinary, .signal = SIGSEGV, .timeout = 30) {
  static tr_fiber_t main, fiber;
  tr__fiber_thread_init();
  tr__fiber_init_main(&main);
  cr_assert_eq(tr__fiber_init(&fiber, 0, null_fiber, NULL), 0);
  tr__fiber_switch(&main, &fiber);
}
#endif
