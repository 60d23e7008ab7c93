/*
 * Unit tests of the MPSC mailbox (runtime/actor/mailbox.h), without the
 * scheduler: producers are plain threads, the test thread is the consumer.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/actor/mailbox.h"

static tr_msg_t *mk(uint32_t tag, uint64_t v) {
  tr_msg_t *m = calloc(1, sizeof(*m));
  cr_assert_not_null(m);
  m->tag = tag;
  m->u64 = v;
  return m;
}

Test(mailbox, empty_bit_and_fifo, .timeout = 10) {
  tr_mbox_t q;
  tr__mbox_init(&q);
  cr_assert_null(tr__mbox_pop_sc(&q));
  /* The first push after init reports empty; the next ones do not. */
  cr_assert_eq(tr__mbox_push_mp(&q, mk(0, 1)), 1);
  cr_assert_eq(tr__mbox_push_mp(&q, mk(0, 2)), 0);
  cr_assert_eq(tr__mbox_push_mp(&q, mk(0, 3)), 0);
  cr_assert_eq(tr__mbox_mark_empty_sc(&q), 0, "not empty: must refuse");
  for (uint64_t i = 1; i <= 3; i++) {
    tr_msg_t *m = tr__mbox_pop_sc(&q);
    cr_assert_not_null(m);
    cr_assert_eq(m->u64, i);
    free(m);
  }
  cr_assert_null(tr__mbox_pop_sc(&q));
  cr_assert_eq(tr__mbox_mark_empty_sc(&q), 1);
  /* After marking, the next push reports empty again, exactly once. */
  cr_assert_eq(tr__mbox_push_mp(&q, mk(0, 4)), 1);
  cr_assert_eq(tr__mbox_push_mp(&q, mk(0, 5)), 0);
  tr_msg_t *m;
  uint64_t want = 4;
  while ((m = tr__mbox_pop_sc(&q))) {
    cr_assert_eq(m->u64, want++);
    free(m);
  }
  cr_assert_eq(want, 6);
  cr_assert_eq(tr__mbox_mark_empty_sc(&q), 1);
}

Test(mailbox, chain_push, .timeout = 10) {
  tr_mbox_t q;
  tr__mbox_init(&q);
  tr_msg_t *ms[10];
  for (int i = 0; i < 10; i++)
    ms[i] = mk(0, (uint64_t)i);
  for (int i = 0; i < 9; i++)
    ms[i]->next_ = ms[i + 1];
  cr_assert_eq(tr__mbox_push_chain_mp(&q, ms[0], ms[9]), 1);
  cr_assert_eq(tr__mbox_push_mp(&q, mk(0, 10)), 0);
  for (uint64_t i = 0; i <= 10; i++) {
    tr_msg_t *m = tr__mbox_pop_sc(&q);
    cr_assert_not_null(m);
    cr_assert_eq(m->u64, i);
    free(m);
  }
  cr_assert_null(tr__mbox_pop_sc(&q));
}

#ifdef TR_TSAN
#define PER_PRODUCER 100000 /* TSan is ~10x slower; 4e5 still races hard */
#else
#define PER_PRODUCER 1000000
#endif
#define PRODUCERS 4

struct prod {
  tr_mbox_t *q;
  uint32_t id;
  uint32_t empties; /* times this producer saw the empty bit */
};

static void *producer(void *arg) {
  struct prod *p = arg;
  for (uint64_t i = 0; i < PER_PRODUCER; i++) {
    tr_msg_t *m = malloc(sizeof(*m));
    memset(m, 0, sizeof(*m));
    m->tag = p->id;
    m->u64 = i;
    p->empties += (uint32_t)tr__mbox_push_mp(p->q, m);
  }
  return NULL;
}

/* 4 producers x 1e6 messages: nothing lost, nothing duplicated, each
 * producer's messages in order.  The consumer also marks the queue empty
 * whenever it drains it, like an actor's turn, and counts that every empty
 * mark is answered by exactly one producer seeing the bit. */
Test(mailbox, four_producers_no_loss_in_order, .timeout = 120) {
  tr_mbox_t q;
  tr__mbox_init(&q);
  struct prod ps[PRODUCERS];
  pthread_t th[PRODUCERS];
  for (uint32_t i = 0; i < PRODUCERS; i++) {
    ps[i] = (struct prod){.q = &q, .id = i};
    pthread_create(&th[i], NULL, producer, &ps[i]);
  }
  uint64_t next[PRODUCERS] = {0};
  uint64_t total = 0, marks = 0;
  int marked = 1; /* init state is marked empty */
  while (total < (uint64_t)PRODUCERS * PER_PRODUCER) {
    tr_msg_t *m = tr__mbox_pop_sc(&q);
    if (!m) {
      if (!marked && tr__mbox_mark_empty_sc(&q)) {
        marked = 1;
        marks++;
      }
      continue;
    }
    marked = 0;
    cr_assert_lt(m->tag, PRODUCERS);
    cr_assert_eq(m->u64, next[m->tag], "producer %u: got %lu want %lu", m->tag,
                 (unsigned long)m->u64, (unsigned long)next[m->tag]);
    next[m->tag]++;
    total++;
    free(m);
  }
  uint32_t empties = 0;
  for (int i = 0; i < PRODUCERS; i++) {
    pthread_join(th[i], NULL);
    empties += ps[i].empties;
  }
  cr_assert_null(tr__mbox_pop_sc(&q));
  /* One empty observation for the initial state plus one per mark. */
  cr_assert_eq(empties, marks + 1, "empties %u marks %lu", empties, (unsigned long)marks);
}
