/*
 * Unit tests of the local run queue (ck_ring SPMC, runtime/sched/runq.h):
 * FIFO for the owner, and every entry taken exactly once when thieves
 * steal concurrently with the owner pushing and popping.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>

#include "runtime/sched/runq.h"

/* Entries are fake actor pointers: an index into a table of flags. */
#define ITEMS 200000
static uint8_t taken[ITEMS + 1];
static char slots[ITEMS + 1]; /* real addresses: TSan annotates them */
static struct tr_actor *item(uintptr_t i) { return (struct tr_actor *)(void *)&slots[i]; }
static uintptr_t index_of(struct tr_actor *a) { return (uintptr_t)((char *)a - slots); }

Test(runq, fifo_and_capacity, .timeout = 10) {
  tr_runq_t q;
  cr_assert_eq(tr__runq_init(&q, 8), 0);
  for (uintptr_t i = 1; i <= 7; i++)
    cr_assert(tr__runq_push_sp(&q, item(i)));
  cr_assert_not(tr__runq_push_sp(&q, item(8)), "capacity 8 holds 7");
  cr_assert_eq(tr__runq_size(&q), 7);
  for (uintptr_t i = 1; i <= 3; i++)
    cr_assert_eq(tr__runq_pop_mc(&q), item(i));
  cr_assert_eq(tr__runq_steal_mc(&q), item(4));
  for (uintptr_t i = 5; i <= 7; i++)
    cr_assert_eq(tr__runq_pop_mc(&q), item(i));
  cr_assert_null(tr__runq_pop_mc(&q));
  cr_assert_null(tr__runq_steal_mc(&q));
  tr__runq_fini(&q);
}

struct thief {
  tr_runq_t *q;
  volatile int *done;
  uint64_t got;
};

static void *thief_main(void *arg) {
  struct thief *t = arg;
  for (;;) {
    struct tr_actor *a = tr__runq_steal_mc(t->q);
    if (a) {
      uintptr_t i = index_of(a);
      /* A double take would make this 2. */
      __atomic_fetch_add(&taken[i], 1, __ATOMIC_RELAXED);
      t->got++;
    } else if (__atomic_load_n(t->done, __ATOMIC_ACQUIRE) && tr__runq_size(t->q) == 0) {
      return NULL;
    } else {
      sched_yield(); /* three thieves and the owner on few cores */
    }
  }
}

Test(runq, concurrent_steal_exactly_once, .timeout = 120) {
  tr_runq_t q;
  cr_assert_eq(tr__runq_init(&q, 256), 0);
  volatile int done = 0;
  struct thief ts[3];
  pthread_t th[3];
  for (int i = 0; i < 3; i++) {
    ts[i] = (struct thief){.q = &q, .done = &done};
    pthread_create(&th[i], NULL, thief_main, &ts[i]);
  }
  uint64_t own = 0;
  for (uintptr_t i = 1; i <= ITEMS; i++) {
    while (!tr__runq_push_sp(&q, item(i))) {
      struct tr_actor *a = tr__runq_pop_mc(&q); /* full: the owner helps */
      if (a) {
        __atomic_fetch_add(&taken[index_of(a)], 1, __ATOMIC_RELAXED);
        own++;
      }
    }
    if (i % 3 == 0) {
      struct tr_actor *a = tr__runq_pop_mc(&q);
      if (a) {
        __atomic_fetch_add(&taken[index_of(a)], 1, __ATOMIC_RELAXED);
        own++;
      }
    }
  }
  __atomic_store_n(&done, 1, __ATOMIC_RELEASE);
  uint64_t stolen = 0;
  for (int i = 0; i < 3; i++) {
    pthread_join(th[i], NULL);
    stolen += ts[i].got;
  }
  struct tr_actor *a;
  while ((a = tr__runq_pop_mc(&q))) {
    __atomic_fetch_add(&taken[index_of(a)], 1, __ATOMIC_RELAXED);
    own++;
  }
  cr_assert_eq(own + stolen, ITEMS);
  for (uintptr_t i = 1; i <= ITEMS; i++)
    cr_assert_eq(taken[i], 1, "item %lu taken %u times", (unsigned long)i, taken[i]);
  tr__runq_fini(&q);
}
