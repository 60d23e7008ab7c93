/*
 * Fibers: stackful coroutines that a worker switches into to run a task,
 * and that switch back to the worker when the task blocks.
 *
 * A switch is a plain function call: the callee-saved registers and the
 * floating-point control state (MXCSR and the x87 control word on x86-64,
 * FPCR on aarch64) are pushed on the current stack,
 * the stack pointer is swapped, and the other side's registers are popped
 * (runtime/fiber/switch_*.S).  Nothing is saved that the C calling
 * convention already makes the caller save, and no system call is made: a
 * main -> fiber -> main round trip costs ~15 ns.  Targets other than
 * x86-64 and aarch64 use ucontext, which is correct but makes a
 * sigprocmask system call per switch (~0.7 us per round trip).
 *
 * Switches always go main <-> fiber, never fiber -> fiber: a worker's
 * scheduler loop (its "main" context, tr__fiber_init_main) switches into a
 * task's fiber, and the task switches back to whichever main resumed it.
 * A fiber may be resumed on a different thread from the one it last ran
 * on, so code running on a fiber must not keep errno, a TLS address or
 * pthread_self() across a switch; fiber.c itself only touches TLS before a
 * switch, never after one.
 *
 * Stacks are mmap'd with a PROT_NONE guard page below them and come from a
 * process-wide pool (runtime/fiber/stack.h).  Only the pages a fiber
 * actually uses are ever faulted in: a fresh fiber touches its top page.
 */
#ifndef TR_FIBER_FIBER_H
#define TR_FIBER_FIBER_H

#include <stddef.h>

/* The context-switch implementation.  TR_FIBER_UCONTEXT may be predefined
 * to 1 to test the fallback on a supported architecture. */
#if !defined(TR_FIBER_UCONTEXT)
#if defined(__x86_64__) || defined(__aarch64__)
#define TR_FIBER_UCONTEXT 0
#else
#define TR_FIBER_UCONTEXT 1
#endif
#endif
#if TR_FIBER_UCONTEXT
#include <ucontext.h>
#endif

/* Default usable stack size when tr__fiber_init is given 0. */
#define TR_FIBER_DEFAULT_STACK (64u * 1024u)

typedef void (*tr_fiber_fn)(void *arg);

/*
 * A context: either a thread's own (main) context, which has no stack of
 * its own, or a fiber with a pooled stack.  Callers embed the struct and
 * treat every field as private to fiber.c; the stack fields may be read for
 * diagnostics and tests.
 * The fields a switch touches (sp, caller, stack_lo, done) come first so
 * that they share one cache line.  No alignment beyond a pointer's is
 * needed: the struct only holds a saved stack pointer, not the registers.
 */
typedef struct tr_fiber {
  void *sp;                /* saved stack pointer while switched out */
  struct tr_fiber *caller; /* the context that last switched into this one */
  char *stack_lo;          /* lowest usable byte; NULL for a main context */
  size_t stack_size;       /* usable bytes above the guard page */
  tr_fiber_fn fn;
  void *arg;
  const char *label; /* borrowed; printed on stack overflow */
  int started;       /* fn has been entered */
  int done;          /* fn has returned */
  /* Sanitizer and Valgrind bookkeeping: always present so that the struct
   * has one layout whatever the build, unused in ordinary builds. */
  void *asan_fake_stack;   /* ASan: this context's fake stack while out */
  const void *asan_bottom; /* ASan: a main context's stack bounds, learnt */
  size_t asan_size;        /*   from the fiber it switched into */
  void *tsan_fiber;        /* TSan: __tsan_create/get_current_fiber */
  unsigned valgrind_id;    /* Valgrind: VALGRIND_STACK_REGISTER id */
#if TR_FIBER_UCONTEXT
  ucontext_t uc;
#endif
} tr_fiber_t;

/*
 * Turns the calling thread's own execution context into a switchable
 * context (a worker's scheduler loop).  No stack is allocated; the struct
 * only receives the registers saved when this thread switches into a fiber.
 * Ownership: the caller owns *main; it needs no destroy.
 * Threads: the thread whose context it is; use it only on that thread.
 */
void tr__fiber_init_main(tr_fiber_t *main);

/*
 * Prepares a fiber that will run fn(arg) the first time something switches
 * into it.  stack_size 0 means TR_FIBER_DEFAULT_STACK; any size is rounded
 * up to whole pages.  A PROT_NONE guard page lies below the stack.  Nothing
 * runs until the first tr__fiber_switch into f, which enters fn on the new
 * stack with the default floating-point modes (round to nearest, all
 * exceptions masked).  fn must finish by returning: a longjmp out of it
 * would leave the fiber neither done nor resumable.
 * Returns 0, or -TR_ENOMEM when no stack could be mapped (f untouched).
 * Ownership: the caller owns *f and must tr__fiber_destroy it once it is
 * done or if it is never started.  fn and arg are borrowed until fn returns.
 * Threads: any thread.
 */
int tr__fiber_init(tr_fiber_t *f, size_t stack_size, tr_fiber_fn fn, void *arg);

/*
 * Saves the current context into `from` and resumes `to`; returns when
 * something switches back into `from`, possibly on another thread.  `from`
 * must be the context currently running on this thread.  One side must be
 * a main context and the other a fiber.  When a fiber's fn returns, the
 * fiber is marked done and control goes back to the context that last
 * switched into it, as if the fiber had switched to it.
 * Cost: ~7 ns per switch (a round trip ~15 ns on the dev VM), plus the
 * sanitizer hooks in sanitizer builds (~50 ns ASan, ~350 ns TSan).
 * Threads: the thread running `from`; `to` must not be running anywhere.
 */
void tr__fiber_switch(tr_fiber_t *from, tr_fiber_t *to);

/*
 * Makes a finished (or never started) fiber run fn(arg) afresh on the same
 * stack: no pool round trip, no mapping.  The task layer keeps a few
 * finished tasks per actor this way, so spawning short tasks costs no
 * stack traffic.  Threads: as tr__fiber_destroy.
 */
void tr__fiber_reset(tr_fiber_t *f, tr_fiber_fn fn, void *arg);

/* 1 once the fiber's fn has returned, else 0.
 * Threads: any thread that is ordered after the fiber's last switch. */
int tr__fiber_done(const tr_fiber_t *f);

/*
 * Returns the fiber's stack to the pool.  Only for a fiber that is done or
 * was never started (asserted): a suspended fiber's stack holds live
 * frames.  Not for main contexts.
 * Ownership: f may be reused with tr__fiber_init afterwards.
 * Threads: any thread ordered after the fiber's last switch.
 */
void tr__fiber_destroy(tr_fiber_t *f);

/*
 * Sets the label printed if the fiber overflows its stack, e.g. "actor
 * root, task main".  The string is borrowed: it must stay valid (and
 * unchanged) while the fiber can run.  NULL clears it.
 * Threads: the fiber's owner; the overflow handler reads it racily, which
 * is harmless because it only prints it.
 */
void tr__fiber_set_label(tr_fiber_t *f, const char *label);

/*
 * Enables stack-overflow reports on the calling thread: installs, once per
 * process, the SIGSEGV handler that recognises hits on the running fiber's
 * guard page, and gives the thread an alternate signal stack (the handler
 * cannot run on the stack that just overflowed) unless it already has one.
 * A guard-page hit prints "tractor: stack overflow in <label> (fiber stack
 * <n> bytes)" to stderr and aborts; every other SIGSEGV goes to the
 * previous handler, or gets the default action, as if we were not there.
 * ASan builds install no handler: ASan owns SIGSEGV there and reports
 * overflows itself.
 * Returns nothing: a failure to set up the alternate stack only costs the
 * report (the overflow then kills the process with a plain SIGSEGV).
 * Threads: call on every thread that runs fibers, before its first switch,
 * and tr__fiber_thread_fini on it before it exits.
 */
void tr__fiber_thread_init(void);
void tr__fiber_thread_fini(void);

/*
 * Unmaps every stack cached in the pool (runtime shutdown), and in TSan
 * builds destroys the TSan contexts kept for reuse (fiber.c), which TSan
 * counts as live threads: with any at exit it sleeps a second first
 * (its atexit_sleep_ms).  Stacks of live fibers are not affected and
 * return to the pool later as usual.
 * Threads: any thread.
 */
void tr__fiber_stack_pool_drain(void);

/* Diagnostics for tests: stacks currently mapped (in use plus cached), and
 * cached in the pool.  Threads: any thread (relaxed snapshot). */
size_t tr__fiber_stack_pool_mapped(void);
size_t tr__fiber_stack_pool_cached(void);

#endif
