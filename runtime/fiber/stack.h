/*
 * Fiber stacks: mmap'd regions with a PROT_NONE guard page at the low end,
 * recycled through one process-wide pool.
 *
 * The pool is a mutex-protected free list per stack size (a handful of
 * sizes in practice: the default and whatever a few spawn sites ask for).
 * After warm-up, creating and destroying a fiber costs one uncontended
 * lock/unlock each way and no system call.  The pool holds at most
 * TR_FIBER_POOL_MAX stacks in total; stacks returned beyond that are
 * unmapped.  Per-worker caches were deliberately not done: fibers migrate,
 * so a stack is often freed on another worker than the one that took it,
 * and an uncontended lock (~20 ns) is small next to a task's lifetime.
 *
 * A cached stack keeps the pages its last fiber touched (we do not
 * madvise them away on every free, which would cost a system call per
 * fiber), so the pool's resident memory is bounded by TR_FIBER_POOL_MAX
 * times the deepest use of each stack, not by the number of cached stacks
 * times one page.
 */
#ifndef TR_FIBER_STACK_H
#define TR_FIBER_STACK_H

#include <stddef.h>

/* Most stacks the pool keeps; further returned stacks are unmapped. */
#define TR_FIBER_POOL_MAX 1024u

/* Stacks mapped with a guard page, at most.  A guard page splits the
 * mapping into two VMAs, and Linux caps a process at vm.max_map_count
 * (65530 by default) VMAs, so ~32k guarded stacks would exhaust it and
 * every later mmap (ours and malloc's) would fail.  Stacks mapped beyond
 * this many keep the would-be guard page as 4 KiB of writable slack:
 * an overflow of up to a page stays inside our own mapping, and
 * tr__fiber_switch reports a fiber that switches out with its stack
 * pointer below its stack (fiber.c).  Deeper overflows of such stacks are
 * not caught; 8k guarded fibers cover all but the largest task counts. */
#define TR_FIBER_GUARDED_MAX 8192u

/* The system page size (also the guard page size).  Async-signal-safe
 * once any stack has been taken. */
size_t tr__stack_page_size(void);

/* size rounded up to a whole number of pages, or 0 if that overflows. */
size_t tr__stack_round(size_t size);

/*
 * Takes a stack with `size` usable bytes (a page multiple from
 * tr__stack_round) from the pool, or maps a new one.  *lo receives the
 * lowest usable byte; the guard page is the page below it.  A new stack's
 * pages are not touched; a cached one's are whatever its last user left.
 * Returns 0 or -TR_ENOMEM.
 * Ownership: the caller owns the stack until tr__stack_put.
 * Threads: any thread.
 */
int tr__stack_get(size_t size, char **lo);

/* Returns a stack from tr__stack_get (same size) to the pool, or unmaps it
 * when the pool is full.  Writes a free-list link into its top page.
 * Threads: any thread. */
void tr__stack_put(char *lo, size_t size);

/* Unmaps every stack cached in the pool (tr__fiber_stack_pool_drain).
 * Threads: any thread. */
void tr__stack_drain(void);

#endif
