/*
 * Fiber stacks and their process-wide pool (see stack.h for the policy).
 */
#define _GNU_SOURCE
#include "runtime/fiber/stack.h"

#include <pthread.h>
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

#include <tractor/errors.h>

#include "runtime/fiber/fiber.h"
#include "runtime/platform/assert.h"
#include "runtime/platform/atomic.h"

/* Distinct stack sizes the pool caches; stacks of a further size are
 * unmapped on return.  A runtime uses the default size and rarely more
 * than one or two others. */
#define BINS 8

/* The free-list link lives in the stack's top page, which every fiber
 * touches anyway (its first frame is there), so caching a stack never
 * faults in a page that using it would not. */
struct node {
  struct node *next;
};

struct bin {
  size_t size; /* usable bytes; 0 = bin unused */
  struct node *head;
};

static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static struct bin bins[BINS]; /* under pool_lock */
static size_t cached;         /* under pool_lock; read relaxed */
static size_t mapped;         /* atomic */
static size_t page_size;      /* set once, idempotently */

size_t tr__stack_page_size(void) {
  /* Relaxed is enough: every thread computes the same value, so a racing
   * first call only stores it twice. */
  size_t p = tr_load_relaxed(&page_size);
  if (TR_UNLIKELY(p == 0)) {
    long v = sysconf(_SC_PAGESIZE);
    p = v > 0 ? (size_t)v : 4096;
    tr_store_relaxed(&page_size, p);
  }
  return p;
}

size_t tr__stack_round(size_t size) {
  size_t page = tr__stack_page_size();
  if (size > SIZE_MAX - 2 * page)
    return 0;
  return (size + page - 1) & ~(page - 1);
}

static struct node *node_of(char *lo, size_t size) {
  return (struct node *)(void *)(lo + size - sizeof(struct node));
}

static char *lo_of(struct node *n, size_t size) { return (char *)n + sizeof(struct node) - size; }

static int map_stack(size_t size, char **lo) {
  size_t page = tr__stack_page_size();
  /* MAP_NORESERVE: a stack is mostly never touched; do not charge the
   * whole of it against overcommit.  Nothing is faulted in here. */
  char *base = mmap(NULL, size + page, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
  if (base == MAP_FAILED)
    return -TR_ENOMEM;
  /* Guard only the first TR_FIBER_GUARDED_MAX stacks (see stack.h). */
  if (tr_load_relaxed(&mapped) < TR_FIBER_GUARDED_MAX && mprotect(base, page, PROT_NONE) != 0) {
    munmap(base, size + page);
    return -TR_ENOMEM;
  }
  /* Relaxed: a statistic; nothing is published through it. */
  tr_faa_relaxed(&mapped, 1);
  *lo = base + page;
  return 0;
}

static void unmap_stack(char *lo, size_t size) {
  size_t page = tr__stack_page_size();
  int rc = munmap(lo - page, size + page);
  TR_ASSERT(rc == 0);
  /* Relaxed: a statistic; nothing is published through it. */
  tr_faa_relaxed(&mapped, (size_t)-1);
}

int tr__stack_get(size_t size, char **lo) {
  TR_ASSERT(size > 0 && size % tr__stack_page_size() == 0);
  pthread_mutex_lock(&pool_lock);
  for (int i = 0; i < BINS; i++) {
    struct node *n = bins[i].head;
    if (bins[i].size == size && n) {
      bins[i].head = n->next;
      /* Relaxed store under the lock: readers outside it only want a
       * snapshot (tr__fiber_stack_pool_cached). */
      tr_store_relaxed(&cached, cached - 1);
      pthread_mutex_unlock(&pool_lock);
      *lo = lo_of(n, size);
      return 0;
    }
  }
  pthread_mutex_unlock(&pool_lock);
  return map_stack(size, lo);
}

void tr__stack_put(char *lo, size_t size) {
  pthread_mutex_lock(&pool_lock);
  if (cached < TR_FIBER_POOL_MAX) {
    struct bin *b = NULL;
    for (int i = 0; i < BINS && !b; i++)
      if (bins[i].size == size)
        b = &bins[i];
    for (int i = 0; i < BINS && !b; i++)
      if (bins[i].size == 0 || bins[i].head == NULL) {
        /* An empty bin may be taken over by another size. */
        b = &bins[i];
        b->size = size;
      }
    if (b) {
      struct node *n = node_of(lo, size);
      n->next = b->head;
      b->head = n;
      /* Relaxed store under the lock (see tr__stack_get). */
      tr_store_relaxed(&cached, cached + 1);
      pthread_mutex_unlock(&pool_lock);
      return;
    }
  }
  pthread_mutex_unlock(&pool_lock);
  unmap_stack(lo, size);
}

void tr__stack_drain(void) {
  /* Detach everything under the lock, unmap outside it: munmap is slow
   * and other threads may be creating fibers meanwhile. */
  struct bin taken[BINS];
  pthread_mutex_lock(&pool_lock);
  for (int i = 0; i < BINS; i++) {
    taken[i] = bins[i];
    bins[i].size = 0;
    bins[i].head = NULL;
  }
  tr_store_relaxed(&cached, 0);
  pthread_mutex_unlock(&pool_lock);
  for (int i = 0; i < BINS; i++) {
    struct node *n = taken[i].head;
    while (n) {
      struct node *next = n->next;
      unmap_stack(lo_of(n, taken[i].size), taken[i].size);
      n = next;
    }
  }
}

size_t tr__fiber_stack_pool_mapped(void) {
  /* Relaxed: a diagnostic snapshot. */
  return tr_load_relaxed(&mapped);
}

size_t tr__fiber_stack_pool_cached(void) {
  /* Relaxed: a diagnostic snapshot (written under pool_lock). */
  return tr_load_relaxed(&cached);
}
