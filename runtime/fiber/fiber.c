/*
 * Fibers: context switch glue, first entry and exit, sanitizer hooks and
 * the stack-overflow report.  The register save/restore itself is in
 * switch_x86_64.S / switch_aarch64.S (or ucontext elsewhere); stacks come
 * from stack.c.
 *
 * Migration rule for this file: a fiber can leave a switch on a different
 * thread from the one it entered it on, and compilers may keep the address
 * of a thread-local variable in a register across a call.  So every TLS
 * access here happens before the switch in the same function, never after
 * one; code after a switch only touches the fiber structs.
 */
#define _GNU_SOURCE
#include "runtime/fiber/fiber.h"

#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <tractor/errors.h>

#include "runtime/fiber/stack.h"
#include "runtime/platform/assert.h"

/* ---- which tools are watching ------------------------------------------ */

/* gcc defines __SANITIZE_ADDRESS__; clang only answers __has_feature (and
 * gcc before 14 has no __has_feature, hence the nesting). */
#if defined(__SANITIZE_ADDRESS__)
#define TR_FIBER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TR_FIBER_ASAN 1
#endif
#endif

/* Our CMake defines TR_TSAN in TSan builds; the compiler's own macros
 * catch a TSan build configured some other way. */
#if defined(TR_TSAN) || defined(__SANITIZE_THREAD__)
#define TR_FIBER_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TR_FIBER_TSAN 1
#endif
#endif

/* TSan keeps a shadow call stack per fiber, pushed and popped by the
 * instrumented functions' entries and exits.  A fiber's first frame
 * (tr__fiber_start, and uc_entry under it) never returns, and a helper of
 * the switch that is not inlined enters on one context and exits on the
 * other; either way every run would leave a frame behind, so a fiber could
 * not be reused without a new TSan context, which costs milliseconds (a
 * memset of its whole state: task_spawn --smoke ran at 300 tasks/s).  So
 * those frames are not instrumented (UNTRACKED: gcc's no_sanitize_thread
 * drops the entry hook too, clang needs disable_sanitizer_instrumentation):
 * a fiber's shadow stack is empty again when its fn has returned, and
 * tr__fiber_reset keeps the fiber's context.  What the new run inherits is
 * the old run's clock: an order that holds anyway, since the fiber was
 * handed over in between. */
#if defined(TR_FIBER_TSAN) && !defined(__clang__)
#define UNTRACKED __attribute__((no_sanitize_thread))
#define TSAN_KEEP_FIBER 1
#elif defined(TR_FIBER_TSAN) && defined(__has_attribute)
#if __has_attribute(disable_sanitizer_instrumentation)
#define UNTRACKED __attribute__((disable_sanitizer_instrumentation))
#define TSAN_KEEP_FIBER 1
#endif
#endif
#if !defined(UNTRACKED)
#define UNTRACKED
#endif

#if defined(TR_FIBER_ASAN)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif
#if defined(TR_FIBER_TSAN)
#include <sanitizer/tsan_interface.h>
#endif
/* The Valgrind client requests are a few instructions that do nothing when
 * not running under Valgrind, so they are compiled in whenever the header
 * exists. */
#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define TR_FIBER_VALGRIND 1
#endif
#endif

/* ---- the assembly side ------------------------------------------------- */

#if !TR_FIBER_UCONTEXT
/* Pushes the callee-saved registers on the current stack, stores the stack
 * pointer in *save_sp, loads load_sp and pops the registers saved there,
 * then returns into whatever context saved them.  (switch_*.S) */
void tr__fiber_swap(void **save_sp, void *load_sp);
/* The return address planted in a fresh fiber's first frame: moves the
 * fiber pointer from a callee-saved register into the first argument and
 * calls tr__fiber_start.  (switch_*.S) */
void tr__fiber_entry(void);
#endif

/* Runs a fiber's fn and performs its final switch.  Called only from
 * tr__fiber_entry (or the ucontext trampoline); never returns.  Not static
 * because the assembly calls it; hidden so that call stays inside the
 * library. */
__attribute__((noreturn, visibility("hidden"))) UNTRACKED void tr__fiber_start(tr_fiber_t *f);

/* ---- TSan contexts ------------------------------------------------------ */

#if defined(TSAN_KEEP_FIBER)
/* A fiber's TSan context outlives it: ended fibers leave theirs in a pool
 * that new fibers take from, as their stacks do (stack.h; the same bound,
 * each context holding about 0.8 MiB as a live one does).  The mutex
 * orders a context's old user before its new one, as the hand-over of a
 * fiber between runs does.  Drained with the stacks at runtime shutdown. */
static pthread_mutex_t tsan_pool_lock = PTHREAD_MUTEX_INITIALIZER;
static void *tsan_pool[TR_FIBER_POOL_MAX];
static unsigned tsan_pool_n;

/* A pooled context, or NULL when the pool is empty. */
static void *tsan_pool_pop(void) {
  pthread_mutex_lock(&tsan_pool_lock);
  void *t = tsan_pool_n > 0 ? tsan_pool[--tsan_pool_n] : NULL;
  pthread_mutex_unlock(&tsan_pool_lock);
  return t;
}

static void *tsan_context_get(void) {
  void *t = tsan_pool_pop();
  return t ? t : __tsan_create_fiber(0);
}

static void tsan_context_put(void *t) {
  pthread_mutex_lock(&tsan_pool_lock);
  if (tsan_pool_n < TR_FIBER_POOL_MAX) {
    tsan_pool[tsan_pool_n++] = t;
    t = NULL;
  }
  pthread_mutex_unlock(&tsan_pool_lock);
  if (t)
    __tsan_destroy_fiber(t);
}

static void tsan_context_drain(void) {
  for (void *t; (t = tsan_pool_pop()) != NULL;)
    __tsan_destroy_fiber(t);
}
#elif defined(TR_FIBER_TSAN)
static void *tsan_context_get(void) { return __tsan_create_fiber(0); }
static void tsan_context_put(void *t) { __tsan_destroy_fiber(t); }
#endif

void tr__fiber_stack_pool_drain(void) {
  tr__stack_drain();
#if defined(TSAN_KEEP_FIBER)
  tsan_context_drain();
#endif
}

/* ---- per-thread state -------------------------------------------------- */

/*
 * The context running on this thread, for the SIGSEGV handler only.
 * initial-exec TLS is a single %fs/tpidr_el0-relative access, with no
 * __tls_get_addr call: cheap on the switch path and async-signal-safe in
 * the handler.  It restricts the library to being loaded at startup or
 * into glibc's static TLS reserve when dlopen'd (8 bytes here), which is
 * how runtimes like this are used.
 */
static __thread tr_fiber_t *running __attribute__((tls_model("initial-exec")));

/* ---- sanitizer hooks around a switch ------------------------------------ */

/* Called on the outgoing side just before the stacks change.  `exiting`
 * says the outgoing fiber will never run again, so ASan may free its fake
 * stack (the NULL save slot). */
UNTRACKED static inline void before_switch(tr_fiber_t *from, tr_fiber_t *to, int exiting) {
#if defined(TR_FIBER_ASAN)
  /* A main context's bounds were learnt when it last switched into a
   * fiber (after_switch); a main is never the target before that. */
  const void *bottom = to->stack_lo ? (const void *)to->stack_lo : to->asan_bottom;
  size_t size = to->stack_lo ? to->stack_size : to->asan_size;
  __sanitizer_start_switch_fiber(exiting ? NULL : &from->asan_fake_stack, bottom, size);
#else
  (void)from;
  (void)exiting;
#endif
#if defined(TR_FIBER_TSAN)
  /* Flags 0: the switch is a happens-before edge from the outgoing to the
   * incoming context, which is exactly what a hand-off between them is. */
  __tsan_switch_to_fiber(to->tsan_fiber, 0);
#else
  (void)to;
#endif
}

/* Called on the incoming side (self) right after the stacks changed. */
UNTRACKED static inline void after_switch(tr_fiber_t *self) {
#if defined(TR_FIBER_ASAN)
  const void *bottom;
  size_t size;
  /* asan_fake_stack is NULL on a fiber's first entry, as ASan requires. */
  __sanitizer_finish_switch_fiber(self->asan_fake_stack, &bottom, &size);
  if (self->stack_lo) {
    /* We came from a main context: remember its stack for the switch back.
     * caller was set by that main before it switched. */
    self->caller->asan_bottom = bottom;
    self->caller->asan_size = size;
  }
#else
  (void)self;
#endif
}

UNTRACKED static inline void swap_to(tr_fiber_t *from, tr_fiber_t *to) {
#if TR_FIBER_UCONTEXT
  int rc = swapcontext(&from->uc, &to->uc);
  TR_ASSERT(rc == 0);
#else
  tr__fiber_swap(&from->sp, to->sp);
#endif
}

/* ---- life cycle --------------------------------------------------------- */

void tr__fiber_init_main(tr_fiber_t *main) {
  memset(main, 0, sizeof *main);
#if defined(TR_FIBER_TSAN)
  main->tsan_fiber = __tsan_get_current_fiber();
#endif
}

#if TR_FIBER_UCONTEXT
/* makecontext passes only int arguments; the pointer travels in halves. */
UNTRACKED static void uc_entry(unsigned hi, unsigned lo) {
  tr__fiber_start((tr_fiber_t *)(uintptr_t)(((uint64_t)hi << 32) | lo));
}
#endif

/* Writes the frame that the first tr__fiber_swap into f pops: callee-saved
 * registers (f in one of them), default FP control words, and
 * tr__fiber_entry as the return address.  Touches only the top page. */
static void plant_first_frame(tr_fiber_t *f) {
  char *top = f->stack_lo + f->stack_size; /* page aligned */
#if TR_FIBER_UCONTEXT
  int rc = getcontext(&f->uc);
  TR_ASSERT(rc == 0);
  f->uc.uc_stack.ss_sp = f->stack_lo;
  f->uc.uc_stack.ss_size = f->stack_size;
  f->uc.uc_link = NULL;
  uint64_t p = (uint64_t)(uintptr_t)f;
  makecontext(&f->uc, (void (*)(void))uc_entry, 2, (unsigned)(p >> 32), (unsigned)p);
  (void)top;
#elif defined(__x86_64__)
  /* Layout popped by switch_x86_64.S, lowest address first:
   *   [0] MXCSR (4 bytes), x87 control word (2), pad   <- saved sp
   *   [1] r15 [2] r14 [3] r13 [4] r12 = f [5] rbx [6] rbp = 0
   *   [7] return address = tr__fiber_entry
   * After the `ret`, rsp = top - 16, 16-byte aligned, so the trampoline's
   * `call` gives tr__fiber_start a standard frame.  The 16 bytes above are
   * zero: a null return address for anything walking the frames. */
  uint64_t *slot = (uint64_t *)(void *)(top - 16) - 8;
  memset(slot, 0, 10 * sizeof(uint64_t));
  /* Power-on defaults: all exceptions masked, round to nearest; x87 at
   * extended precision.  A fresh fiber does not inherit the FP mode of
   * whichever worker happens to start it. */
  slot[0] = 0x1F80u | ((uint64_t)0x037Fu << 32);
  slot[4] = (uint64_t)(uintptr_t)f;
  slot[7] = (uint64_t)(uintptr_t)tr__fiber_entry;
  f->sp = slot;
#elif defined(__aarch64__)
  /* Layout popped by switch_aarch64.S (176 bytes, lowest address first):
   *   x19 = f, x20..x28, x29 = 0, x30 = tr__fiber_entry, d8..d15, FPCR = 0
   * sp stays 16-byte aligned throughout, as aarch64 requires. */
  uint64_t *slot = (uint64_t *)(void *)(top - 176);
  memset(slot, 0, 176);
  slot[0] = (uint64_t)(uintptr_t)f;
  slot[11] = (uint64_t)(uintptr_t)tr__fiber_entry;
  f->sp = slot;
#endif
}

int tr__fiber_init(tr_fiber_t *f, size_t stack_size, tr_fiber_fn fn, void *arg) {
  size_t size = tr__stack_round(stack_size ? stack_size : TR_FIBER_DEFAULT_STACK);
  char *lo;
  if (size == 0 || tr__stack_get(size, &lo) != 0)
    return -TR_ENOMEM;
  memset(f, 0, sizeof *f);
  f->stack_lo = lo;
  f->stack_size = size;
  f->fn = fn;
  f->arg = arg;
#if defined(TR_FIBER_TSAN)
  f->tsan_fiber = tsan_context_get();
#endif
#if defined(TR_FIBER_VALGRIND)
  f->valgrind_id = VALGRIND_STACK_REGISTER(lo, lo + size);
#endif
  plant_first_frame(f);
  return 0;
}

void tr__fiber_reset(tr_fiber_t *f, tr_fiber_fn fn, void *arg) {
  TR_ASSERT(f->stack_lo != NULL);
  TR_ASSERT(f->done || !f->started);
#if defined(TR_FIBER_TSAN) && !defined(TSAN_KEEP_FIBER)
  __tsan_destroy_fiber(f->tsan_fiber); /* a frame behind: a clean stack */
  f->tsan_fiber = __tsan_create_fiber(0);
#endif
#if defined(TR_FIBER_ASAN)
  /* As in tr__fiber_destroy: the finished run left poisoned redzones. */
  __asan_unpoison_memory_region(f->stack_lo, f->stack_size);
  f->asan_fake_stack = NULL;
#endif
  f->caller = NULL;
  f->started = 0;
  f->done = 0;
  f->fn = fn;
  f->arg = arg;
  plant_first_frame(f);
}

void tr__fiber_destroy(tr_fiber_t *f) {
  TR_ASSERT(f->stack_lo != NULL);
  TR_ASSERT(f->done || !f->started);
#if defined(TR_FIBER_TSAN)
  tsan_context_put(f->tsan_fiber);
  f->tsan_fiber = NULL;
#endif
#if defined(TR_FIBER_VALGRIND)
  VALGRIND_STACK_DEREGISTER(f->valgrind_id);
#endif
#if defined(TR_FIBER_ASAN)
  /* tr__fiber_start's frame never returns, so its redzones stay poisoned
   * in the shadow; the next user of this stack must start clean. */
  __asan_unpoison_memory_region(f->stack_lo, f->stack_size);
#endif
  tr__stack_put(f->stack_lo, f->stack_size);
  f->stack_lo = NULL;
}

int tr__fiber_done(const tr_fiber_t *f) { return f->done; }

void tr__fiber_set_label(tr_fiber_t *f, const char *label) { f->label = label; }

/* ---- switching ---------------------------------------------------------- */

/* A fiber came back with its stack pointer below its stack: it overflowed
 * into the slack page of an unguarded stack (stack.h).  Not a signal
 * handler, so stdio is fine. */
__attribute__((noreturn, cold)) static void overflow_on_switch(const tr_fiber_t *f) {
  fprintf(stderr, "tractor: stack overflow in %s (fiber stack %zu bytes)\n",
          f->label ? f->label : "an unlabelled fiber", f->stack_size);
  abort();
}

void tr__fiber_switch(tr_fiber_t *from, tr_fiber_t *to) {
  /* main <-> fiber only, and never into a finished fiber. */
  TR_ASSERT((from->stack_lo == NULL) != (to->stack_lo == NULL));
  TR_ASSERT(!to->done);
  to->caller = from;
  /* Before the swap: this thread runs `to` next.  (After the swap we may
   * be on another thread; see the migration rule at the top.) */
  running = to;
  before_switch(from, to, 0);
  swap_to(from, to);
  after_switch(from);
  /* Back in a main context from fiber `to`: one compare catches an
   * unguarded stack's overflow (a guarded one faults first). */
  if (!from->stack_lo && !to->done && __builtin_expect((char *)to->sp < to->stack_lo, 0))
    overflow_on_switch(to);
}

void tr__fiber_start(tr_fiber_t *f) {
  after_switch(f);
  f->started = 1;
  f->fn(f->arg);
  f->done = 1;
  /* Back to whoever resumed us last, on whatever thread that is now; the
   * TLS store below is this function's only one, after all switches. */
  tr_fiber_t *to = f->caller;
  running = to;
  before_switch(f, to, 1);
  swap_to(f, to);
  tr__panic(__FILE__, __LINE__, "a finished fiber was resumed");
}

/* ---- stack overflow report ---------------------------------------------- */

#if !defined(TR_FIBER_ASAN)
/* The alternate signal stack this thread got from tr__fiber_thread_init,
 * or NULL if it had one already (or none could be mapped).  Only touched
 * by thread init/fini, which run on the thread's own stack. */
static __thread void *altstack __attribute__((tls_model("initial-exec")));

#define ALTSTACK_SIZE (64u * 1024u)

static struct sigaction prev_segv;
static pthread_once_t segv_once = PTHREAD_ONCE_INIT;

static size_t put_str(char *buf, size_t at, size_t cap, const char *s) {
  while (*s && at < cap)
    buf[at++] = *s++;
  return at;
}

static size_t put_size(char *buf, size_t at, size_t cap, size_t v) {
  char digits[24];
  size_t n = 0;
  do {
    digits[n++] = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  while (n && at < cap)
    buf[at++] = digits[--n];
  return at;
}

/* Everything here is async-signal-safe: plain loads, write(2), abort(). */
static void report_overflow(const tr_fiber_t *f) {
  char buf[320];
  size_t cap = sizeof buf - 1, n = 0;
  n = put_str(buf, n, cap, "tractor: stack overflow in ");
  n = put_str(buf, n, cap - 48, f->label ? f->label : "an unlabelled fiber");
  n = put_str(buf, n, cap, " (fiber stack ");
  n = put_size(buf, n, cap, f->stack_size);
  n = put_str(buf, n, cap, " bytes)\n");
  ssize_t w = write(STDERR_FILENO, buf, n);
  (void)w;
  abort();
}

/* Hands a SIGSEGV that is not ours to whoever would have had it. */
static void pass_on(int sig, siginfo_t *si, void *ctx) {
  if (prev_segv.sa_handler == SIG_DFL || prev_segv.sa_handler == SIG_IGN) {
    /* Restore the default action.  A real fault then happens again when
     * we return (the instruction re-executes) and kills the process as if
     * we had never been installed; a SIGSEGV sent with kill() has no
     * instruction to re-execute, so it is raised again (it stays pending
     * until this handler returns, SIGSEGV being blocked in it). */
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    sigaction(sig, &dfl, NULL);
    if (si->si_code <= 0)
      raise(sig);
  } else if (prev_segv.sa_flags & SA_SIGINFO) {
    /* Chain rather than reinstall, so a handler that recovers (a GC
     * barrier, a JIT) keeps working and we stay installed. */
    prev_segv.sa_sigaction(sig, si, ctx);
  } else {
    prev_segv.sa_handler(sig);
  }
}

static void on_segv(int sig, siginfo_t *si, void *ctx) {
  const tr_fiber_t *f = running;
  const char *addr = si->si_addr;
  /* Only the running fiber's own guard page counts.  A frame larger than
   * a page could jump over it into foreign memory; that is reported as an
   * ordinary crash, not as an overflow. */
  if (si->si_code > 0 && f && f->stack_lo && addr < f->stack_lo &&
      addr >= f->stack_lo - tr__stack_page_size())
    report_overflow(f);
  pass_on(sig, si, ctx);
}

static void install_segv(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_segv;
  /* SA_ONSTACK: the overflowing stack has no room for the handler. */
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&sa.sa_mask);
  if (sigaction(SIGSEGV, &sa, &prev_segv) != 0)
    memset(&prev_segv, 0, sizeof prev_segv); /* stays SIG_DFL */
}
#endif

void tr__fiber_thread_init(void) {
#if !defined(TR_FIBER_ASAN)
  pthread_once(&segv_once, install_segv);
  stack_t cur;
  if (altstack || (sigaltstack(NULL, &cur) == 0 && !(cur.ss_flags & SS_DISABLE)))
    return; /* the thread has an alternate stack already: use that one */
  /* Mapped, not malloc'd: its pages are only touched if a signal arrives. */
  void *p = mmap(NULL, ALTSTACK_SIZE, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED)
    return;
  stack_t ss = {.ss_sp = p, .ss_size = ALTSTACK_SIZE, .ss_flags = 0};
  if (sigaltstack(&ss, NULL) != 0) {
    munmap(p, ALTSTACK_SIZE);
    return;
  }
  altstack = p;
#endif
}

void tr__fiber_thread_fini(void) {
#if !defined(TR_FIBER_ASAN)
  if (!altstack)
    return;
  stack_t cur;
  /* Disable it only if it is still ours (someone may have replaced it). */
  if (sigaltstack(NULL, &cur) == 0 && cur.ss_sp == altstack) {
    stack_t off = {.ss_sp = NULL, .ss_size = 0, .ss_flags = SS_DISABLE};
    sigaltstack(&off, NULL);
  }
  munmap(altstack, ALTSTACK_SIZE);
  altstack = NULL;
#endif
}
