/*
 * Channels between tasks (tr_chan_*) and trio's nursery.start
 * (tr_nursery_start / tr_task_started), through the public API.
 *
 * Most tests order their tasks with tr_checkpoint, which queues the
 * caller behind every ready task of the actor: after it, each task spawned
 * before has run until it blocked.  That makes "the sender is blocked now"
 * a fact to assert, not a timing guess.
 */
#include <stdint.h>
#include <string.h>

#define TR_TEST_WORKERS 2
#include <tractor/testing.h>

#define MS (1000 * 1000LL)
#define I(x) ((void *)(intptr_t)(x))
#define V(p) ((intptr_t)(p))

/* ---- helpers ------------------------------------------------------------- */

typedef struct sender {
  tr_chan_t *ch;
  int from, count;
  int sent; /* sends that returned 0 */
  int rc;   /* the first failing send's code */
} sender_t;

static int send_task(void *arg) {
  sender_t *s = arg;
  for (int i = 0; i < s->count; i++) {
    int rc = tr_chan_send(s->ch, I(s->from + i));
    if (rc) {
      s->rc = rc;
      tr_check(tr_error_last() != NULL, "a failed send leaves an error object");
      return rc == -TR_ECANCELED ? rc : 0;
    }
    s->sent++;
  }
  return 0;
}

typedef struct receiver {
  tr_chan_t *ch;
  int got; /* receives that returned 0 */
  int rc;  /* the first failing receive's code */
  void *item;
  int order; /* position among receivers that got an item */
  int *clock;
} receiver_t;

static int recv_one(void *arg) {
  receiver_t *r = arg;
  r->rc = tr_chan_recv(r->ch, &r->item);
  if (r->rc == 0) {
    r->got++;
    if (r->clock)
      r->order = (*r->clock)++;
  } else {
    tr_check(r->item == NULL);
    tr_check(tr_error_last() != NULL, "a failed receive leaves an error object");
  }
  return r->rc == -TR_ECANCELED ? r->rc : 0;
}

static const char *last_type(void) {
  const tr_error_t *e = tr_error_last();
  return e ? tr_error_type(e) : "(none)";
}

/* ---- bounded buffer, rendezvous, FIFO -------------------------------------------- */

TR_TEST(chan, send_blocks_when_full, .timeout = 60) {
  tr_chan_t *ch;
  tr_nursery_t *n;
  void *item;
  tr_assert_rc(tr_chan_new(&ch, 2), 0);
  sender_t s = {.ch = ch, .from = 0, .count = 3};
  tr_assert_rc(tr_nursery_open(&n), 0);
  tr_check_rc(tr_nursery_spawn(n, send_task, &s, NULL), 0);
  tr_check_rc(tr_checkpoint(), 0);
  tr_check_eq(s.sent, 2, "two fit in the buffer, the third blocks");
  tr_check_rc(tr_chan_recv(ch, &item), 0);
  tr_check_eq(V(item), 0);
  tr_check_rc(tr_checkpoint(), 0);
  tr_check_eq(s.sent, 3, "a receive made room for the blocked send");
  for (int i = 1; i <= 2; i++) {
    tr_check_rc(tr_chan_recv(ch, &item), 0);
    tr_check_eq(V(item), i);
  }
  tr_assert_rc(tr_nursery_close(n), 0);
  tr_assert_rc(tr_chan_free(ch), 0);
  return 0;
}

TR_TEST(chan, capacity_zero_is_a_rendezvous, .timeout = 60) {
  tr_chan_t *ch;
  tr_nursery_t *n;
  void *item;
  tr_assert_rc(tr_chan_new(&ch, 0), 0);
  sender_t s = {.ch = ch, .from = 7, .count = 1};
  tr_assert_rc(tr_nursery_open(&n), 0);
  tr_check_rc(tr_nursery_spawn(n, send_task, &s, NULL), 0);
  tr_check_rc(tr_checkpoint(), 0);
  tr_check_eq(s.sent, 0, "no receiver yet: the send waits");
  tr_check_rc(tr_chan_send_nowait(ch, I(1)), -TR_EAGAIN);
  tr_check_rc(tr_chan_recv(ch, &item), 0);
  tr_check_eq(V(item), 7);
  tr_check_rc(tr_checkpoint(), 0);
  tr_check_eq(s.sent, 1);
  tr_assert_rc(tr_nursery_close(n), 0);
  tr_assert_rc(tr_chan_free(ch), 0);
  return 0;
}

TR_TEST(chan, items_come_out_in_order, .timeout = 60) {
  tr_chan_t *ch;
  tr_nursery_t *n;
  void *item;
  tr_assert_rc(tr_chan_new(&ch, 4), 0);
  sender_t s = {.ch = ch, .from = 0, .count = 1000};
  tr_assert_rc(tr_nursery_open(&n), 0);
  tr_check_rc(tr_nursery_spawn(n, send_task, &s, NULL), 0);
  for (int i = 0; i < 1000; i++) {
    if (tr_chan_recv(ch, &item) != 0) {
      tr_check(0, "receive %d failed", i);
      break;
    }
    tr_check_eq(V(item), i);
  }
  tr_assert_rc(tr_nursery_close(n), 0);
  tr_assert_rc(tr_chan_free(ch), 0);
  return 0;
}

TR_TEST(chan, blocked_receivers_are_served_first_come_first_served, .timeout = 60) {
  tr_chan_t *ch;
  tr_nursery_t *n;
  int clock = 0;
  receiver_t r[3];
  tr_assert_rc(tr_chan_new(&ch, 0), 0);
  tr_assert_rc(tr_nursery_open(&n), 0);
  for (int i = 0; i < 3; i++) {
    r[i] = (receiver_t){.ch = ch, .clock = &clock};
    tr_check_rc(tr_nursery_spawn(n, recv_one, &r[i], NULL), 0);
  }
  tr_check_rc(tr_checkpoint(), 0); /* all three block, in spawn order */
  for (int i = 0; i < 3; i++)
    tr_check_rc(tr_chan_send(ch, I(10 + i)), 0); /* each a direct hand-off */
  tr_assert_rc(tr_nursery_close(n), 0);
  for (int i = 0; i < 3; i++) {
    tr_assert_rc(r[i].rc, 0);
    tr_assert_eq(V(r[i].item), 10 + i, "receiver %d", i);
  }
  tr_assert_rc(tr_chan_free(ch), 0);
  return 0;
}

TR_TEST(chan, blocked_senders_are_served_first_come_first_served, .timeout = 60) {
  tr_chan_t *ch;
  tr_nursery_t *n;
  void *item;
  sender_t s[3];
  tr_assert_rc(tr_chan_new(&ch, 1), 0);
  tr_assert_rc(tr_chan_send(ch, I(100)), 0); /* full: every sender waits */
  tr_assert_rc(tr_nursery_open(&n), 0);
  for (int i = 0; i < 3; i++) {
    s[i] = (sender_t){.ch = ch, .from = i, .count = 1};
    tr_check_rc(tr_nursery_spawn(n, send_task, &s[i], NULL), 0);
  }
  tr_check_rc(tr_checkpoint(), 0);
  int want[4] = {100, 0, 1, 2};
  for (int i = 0; i < 4; i++) {
    tr_check_rc(tr_chan_recv(ch, &item), 0);
    tr_check_eq(V(item), want[i], "item %d", i);
  }
  tr_assert_rc(tr_nursery_close(n), 0);
  tr_assert_rc(tr_chan_free(ch), 0);
  return 0;
}

TR_TEST(chan, unbounded_never_blocks, .timeout = 60) {
  tr_chan_t *ch;
  void *item;
  tr_assert_rc(tr_chan_new(&ch, TR_CHAN_UNBOUNDED), 0);
  for (int i = 0; i < 10000; i++)
    tr_assert_rc(tr_chan_send(ch, I(i)), 0); /* no receiver: would hang if it blocked */
  for (int i = 0; i < 10000; i++) {
    tr_assert_rc(tr_chan_recv_nowait(ch, &item), 0);
    tr_assert_eq(V(item), i);
  }
  tr_assert_rc(tr_chan_recv_nowait(ch, &item), -TR_EAGAIN);
  tr_assert_str_eq(last_type(), "WouldBlock");
  /* Growth while the ring has wrapped keeps the order. */
  int next_in = 0, next_out = 0;
  for (int round = 0; round < 50; round++) {
    for (int k = 0; k < 7 + round; k++)
      tr_assert_rc(tr_chan_send(ch, I(next_in++)), 0);
    for (int k = 0; k < 5 + round / 2; k++) {
      tr_assert_rc(tr_chan_recv(ch, &item), 0);
      tr_assert_eq(V(item), next_out++);
    }
  }
  while (next_out < next_in) {
    tr_assert_rc(tr_chan_recv_nowait(ch, &item), 0);
    tr_assert_eq(V(item), next_out++);
  }
  tr_assert_rc(tr_chan_free(ch), 0);
  return 0;
}

TR_TEST(chan, odd_capacity_wraps_in_order, .timeout = 60) {
  tr_chan_t *ch;
  void *item;
  tr_assert_rc(tr_chan_new(&ch, 5), 0);
  int next_in = 0, next_out = 0;
  for (int round = 0; round < 100; round++) {
    while (tr_chan_send_nowait(ch, I(next_in)) == 0)
      next_in++;
    tr_assert_eq(next_in - next_out, 5, "full at the capacity");
    for (int k = 0; k < 1 + round % 5; k++) {
      tr_assert_rc(tr_chan_recv(ch, &item), 0);
      tr_assert_eq(V(item), next_out++);
    }
  }
  tr_assert_rc(tr_chan_free(ch), 0);
  return 0;
}

TR_TEST(chan, nowait_calls, .timeout = 60) {
  tr_chan_t *ch;
  void *item = I(1);
  tr_assert_rc(tr_chan_new(&ch, 1), 0);
  tr_assert_rc(tr_chan_recv_nowait(ch, &item), -TR_EAGAIN);
  tr_assert(item == NULL);
  tr_assert_rc(tr_chan_send_nowait(ch, NULL), 0); /* NULL is an item */
  tr_assert_rc(tr_chan_send_nowait(ch, I(2)), -TR_EAGAIN);
  tr_assert_rc(tr_chan_close(ch), 0);
  tr_assert_rc(tr_chan_send_nowait(ch, I(2)), -TR_ECLOSED);
  item = I(1);
  tr_assert_rc(tr_chan_recv_nowait(ch, &item), 0);
  tr_assert(item == NULL);
  tr_assert_rc(tr_chan_recv_nowait(ch, &item), -TR_EEOF);
  tr_assert_rc(tr_chan_free(ch), 0);
  /* Every failure sets *item to NULL, a missing channel's too (task.h). */
  item = I(3);
  tr_assert_rc(tr_chan_recv_nowait(NULL, &item), -TR_EINVAL);
  tr_assert(item == NULL);
  item = I(3);
  tr_assert_rc(tr_chan_recv(NULL, &item), -TR_EINVAL);
  tr_assert(item == NULL);
  return 0;
}

/* ---- close ---------------------------------------------------------------------------- */

TR_TEST(chan, close_gives_eof_after_drain, .timeout = 60) {
  tr_chan_t *ch;
  void *item;
  tr_assert_rc(tr_chan_new(&ch, 4), 0);
  for (int i = 0; i < 3; i++)
    tr_assert_rc(tr_chan_send(ch, I(i)), 0);
  tr_assert_rc(tr_chan_close(ch), 0);
  tr_assert_rc(tr_chan_send(ch, I(9)), -TR_ECLOSED);
  tr_assert_str_eq(last_type(), "TransportClosed");
  for (int i = 0; i < 3; i++) {
    tr_assert_rc(tr_chan_recv(ch, &item), 0);
    tr_assert_eq(V(item), i);
  }
  tr_assert_rc(tr_chan_recv(ch, &item), -TR_EEOF);
  tr_assert_str_eq(last_type(), "EndOfChannel");
  tr_assert_rc(tr_chan_recv(ch, &item), -TR_EEOF, "EOF again, without blocking");
  tr_assert_rc(tr_chan_close(ch), 0, "close is idempotent");
  tr_assert_rc(tr_chan_free(ch), 0);
  return 0;
}

TR_TEST(chan, close_wakes_blocked_receivers_and_senders, .timeout = 60) {
  tr_chan_t *rx, *tx;
  tr_nursery_t *n;
  void *item;
  receiver_t r[2] = {{0}};
  sender_t s[2] = {{0}};
  tr_assert_rc(tr_chan_new(&rx, 0), 0);
  tr_assert_rc(tr_chan_new(&tx, 0), 0);
  tr_assert_rc(tr_nursery_open(&n), 0);
  for (int i = 0; i < 2; i++) {
    r[i].ch = rx;
    s[i] = (sender_t){.ch = tx, .from = i, .count = 1};
    tr_check_rc(tr_nursery_spawn(n, recv_one, &r[i], NULL), 0);
    tr_check_rc(tr_nursery_spawn(n, send_task, &s[i], NULL), 0);
  }
  tr_check_rc(tr_checkpoint(), 0);
  tr_check_rc(tr_chan_close(rx), 0);
  tr_check_rc(tr_chan_close(tx), 0);
  tr_assert_rc(tr_nursery_close(n), 0);
  for (int i = 0; i < 2; i++) {
    tr_assert_rc(r[i].rc, -TR_EEOF);
    tr_assert_rc(s[i].rc, -TR_ECLOSED);
    tr_assert_eq(s[i].sent, 0);
  }
  tr_assert_rc(tr_chan_recv_nowait(tx, &item), -TR_EEOF, "the senders kept their items");
  tr_assert_rc(tr_chan_free(rx), 0);
  tr_assert_rc(tr_chan_free(tx), 0);
  return 0;
}

/* ---- cancellation ----------------------------------------------------------------------- */

TR_TEST(chan, cancel_a_blocked_receive, .timeout = 60) {
  tr_chan_t *ch;
  tr_nursery_t *n;
  void *item;
  receiver_t r = {0};
  tr_assert_rc(tr_chan_new(&ch, 1), 0);
  r.ch = ch;
  tr_assert_rc(tr_nursery_open(&n), 0);
  tr_check_rc(tr_nursery_spawn(n, recv_one, &r, NULL), 0);
  tr_check_rc(tr_checkpoint(), 0);
  tr_check_rc(tr_nursery_cancel(n), 0);
  tr_assert_rc(tr_nursery_close(n), 0);
  tr_assert_rc(r.rc, -TR_ECANCELED);
  tr_assert_eq(r.got, 0);
  /* The channel is intact: the cancelled receiver left its queue. */
  tr_assert_rc(tr_chan_send_nowait(ch, I(5)), 0);
  tr_assert_rc(tr_chan_recv_nowait(ch, &item), 0);
  tr_assert_eq(V(item), 5);
  tr_assert_rc(tr_chan_free(ch), 0);
  return 0;
}

TR_TEST(chan, cancel_a_blocked_send, .timeout = 60) {
  tr_chan_t *ch;
  tr_nursery_t *n;
  void *item;
  sender_t s = {0};
  tr_assert_rc(tr_chan_new(&ch, 0), 0);
  s = (sender_t){.ch = ch, .from = 3, .count = 1};
  tr_assert_rc(tr_nursery_open(&n), 0);
  tr_check_rc(tr_nursery_spawn(n, send_task, &s, NULL), 0);
  tr_check_rc(tr_checkpoint(), 0);
  tr_check_rc(tr_nursery_cancel(n), 0);
  tr_assert_rc(tr_nursery_close(n), 0);
  tr_assert_rc(s.rc, -TR_ECANCELED);
  tr_assert_eq(s.sent, 0);
  tr_assert_rc(tr_chan_recv_nowait(ch, &item), -TR_EAGAIN, "the cancelled send left nothing");
  tr_assert_rc(tr_chan_free(ch), 0);
  return 0;
}

static int recv_expect_cancel_error(void *arg) {
  tr_chan_t *ch = arg;
  void *item;
  int rc = tr_chan_recv(ch, &item);
  tr_assert_rc(rc, -TR_ECANCELED);
  const tr_error_t *e = tr_error_last();
  tr_assert(e != NULL);
  tr_assert_str_eq(tr_error_type(e), "Cancelled");
  tr_assert(strstr(tr_error_message(e), "tr_chan_recv") != NULL, "%s", tr_error_message(e));
  return 0;
}

TR_TEST(chan, cancelled_receive_has_an_error_object, .timeout = 60) {
  tr_chan_t *ch;
  tr_nursery_t *n;
  tr_assert_rc(tr_chan_new(&ch, 0), 0);
  tr_assert_rc(tr_nursery_open(&n), 0);
  tr_check_rc(tr_nursery_spawn(n, recv_expect_cancel_error, ch, NULL), 0);
  tr_check_rc(tr_checkpoint(), 0);
  tr_check_rc(tr_nursery_cancel(n), 0);
  tr_assert_rc(tr_nursery_close(n), 0);
  tr_assert_rc(tr_chan_free(ch), 0);
  return 0;
}

/* A task that waits on the channel inside a cancel scope of its own, which
 * it publishes so that the test can cancel just that wait. */
typedef struct scoped {
  tr_chan_t *ch;
  tr_scope_t *scope;
  int send; /* 1: send `item`; 0: receive into it */
  void *item;
  int rc;
} scoped_t;

static int scoped_wait(void *arg) {
  scoped_t *w = arg;
  tr_scope_t s;
  tr_assert_rc(tr_scope_open(&s, TR_NO_DEADLINE, 0), 0);
  w->scope = &s;
  w->rc = w->send ? tr_chan_send(w->ch, w->item) : tr_chan_recv(w->ch, &w->item);
  w->scope = NULL;
  return tr_scope_close(&s);
}

/* A receiver whose cancellation is pending (made ready, not yet run) must
 * not take an item ahead of a receiver that still waits, as trio's abort
 * takes a cancelled task out of the queue at once. */
TR_TEST(chan, cancelled_receiver_is_skipped, .timeout = 60) {
  tr_chan_t *ch;
  tr_nursery_t *n;
  scoped_t a = {0}, b = {0};
  tr_assert_rc(tr_chan_new(&ch, 0), 0);
  a.ch = b.ch = ch;
  tr_assert_rc(tr_nursery_open(&n), 0);
  tr_check_rc(tr_nursery_spawn(n, scoped_wait, &a, NULL), 0); /* first in line */
  tr_check_rc(tr_nursery_spawn(n, scoped_wait, &b, NULL), 0);
  tr_check_rc(tr_checkpoint(), 0);
  tr_check(a.scope != NULL);
  if (a.scope)
    tr_check_rc(tr_scope_cancel(a.scope), 0); /* a is ready, not yet run */
  tr_check_rc(tr_chan_send(ch, I(42)), 0);    /* so the item goes to b */
  tr_assert_rc(tr_nursery_close(n), 0);
  tr_assert_rc(a.rc, -TR_ECANCELED);
  tr_assert(a.item == NULL);
  tr_assert_rc(b.rc, 0);
  tr_assert_eq(V(b.item), 42);
  tr_assert_rc(tr_chan_free(ch), 0);
  return 0;
}

TR_TEST(chan, cancelled_sender_is_skipped, .timeout = 60) {
  tr_chan_t *ch;
  tr_nursery_t *n;
  void *item = NULL;
  tr_assert_rc(tr_chan_new(&ch, 0), 0);
  scoped_t a = {.ch = ch, .send = 1, .item = I(1)}, b = {.ch = ch, .send = 1, .item = I(2)};
  tr_assert_rc(tr_nursery_open(&n), 0);
  tr_check_rc(tr_nursery_spawn(n, scoped_wait, &a, NULL), 0);
  tr_check_rc(tr_nursery_spawn(n, scoped_wait, &b, NULL), 0);
  tr_check_rc(tr_checkpoint(), 0);
  tr_check(a.scope != NULL);
  if (a.scope)
    tr_check_rc(tr_scope_cancel(a.scope), 0);
  tr_check_rc(tr_chan_recv(ch, &item), 0);
  tr_assert_rc(tr_nursery_close(n), 0);
  tr_assert_eq(V(item), 2);
  tr_assert_rc(a.rc, -TR_ECANCELED);
  tr_assert_rc(b.rc, 0);
  tr_assert_rc(tr_chan_recv_nowait(ch, &item), -TR_EAGAIN, "a's item was not sent");
  tr_assert_rc(tr_chan_free(ch), 0);
  return 0;
}

/* Once an item was handed to a blocked receiver, a cancel that comes
 * before the receiver runs does not lose it: the receive completed. */
TR_TEST(chan, handed_over_item_survives_a_later_cancel, .timeout = 60) {
  tr_chan_t *ch;
  tr_nursery_t *n;
  receiver_t r = {0};
  tr_assert_rc(tr_chan_new(&ch, 0), 0);
  r.ch = ch;
  tr_assert_rc(tr_nursery_open(&n), 0);
  tr_check_rc(tr_nursery_spawn(n, recv_one, &r, NULL), 0);
  tr_check_rc(tr_checkpoint(), 0);
  tr_check_rc(tr_chan_send(ch, I(8)), 0);
  tr_check_rc(tr_nursery_cancel(n), 0);
  tr_assert_rc(tr_nursery_close(n), 0);
  tr_assert_rc(r.rc, 0);
  tr_assert_eq(V(r.item), 8);
  tr_assert_rc(tr_chan_free(ch), 0);
  return 0;
}

TR_TEST(chan, deadlines, .timeout = 60) {
  tr_chan_t *ch;
  tr_scope_t s;
  void *item;
  tr_assert_rc(tr_chan_new(&ch, 1), 0);
  int64_t t0 = tr_now();
  tr_assert_rc(tr_move_on_after(&s, 30 * MS), 0);
  tr_check_rc(tr_chan_recv(ch, &item), -TR_ECANCELED);
  tr_assert_rc(tr_scope_close(&s), 0);
  tr_assert(tr_scope_cancelled_caught(&s));
  tr_assert(tr_now() - t0 >= 30 * MS);
  tr_assert_rc(tr_chan_send(ch, I(1)), 0);
  tr_assert_rc(tr_fail_after(&s, 30 * MS), 0);
  tr_check_rc(tr_chan_send(ch, I(2)), -TR_ECANCELED); /* full */
  tr_assert_rc(tr_scope_close(&s), -TR_ETIMEDOUT);
  /* A cancelled scope refuses even a call that would not block. */
  tr_assert_rc(tr_move_on_after(&s, 0), 0);
  tr_check_rc(tr_chan_recv(ch, &item), -TR_ECANCELED);
  tr_assert_rc(tr_scope_close(&s), 0);
  tr_assert_rc(tr_chan_recv(ch, &item), 0);
  tr_assert_eq(V(item), 1);
  tr_assert_rc(tr_chan_free(ch), 0);
  return 0;
}

/* ---- many producers and consumers ------------------------------------------------------ */

#define NPROD 4
#define NCONS 3
#define PER_PROD 2000

typedef struct consumer {
  tr_chan_t *ch;
  int count;
  long long sum;
  int last[NPROD];
} consumer_t;

static int consume(void *arg) {
  consumer_t *c = arg;
  for (int p = 0; p < NPROD; p++)
    c->last[p] = -1;
  void *item;
  int rc;
  while ((rc = tr_chan_recv(c->ch, &item)) == 0) {
    int v = (int)V(item), p = v / 100000, i = v % 100000;
    tr_assert(p >= 0 && p < NPROD, "item %d", v);
    tr_assert(i > c->last[p], "producer %d: %d after %d", p, i, c->last[p]);
    c->last[p] = i;
    c->count++;
    c->sum += v;
    if (c->count % 7 == 0)
      tr_assert_rc(tr_checkpoint(), 0); /* mix the interleavings */
  }
  tr_assert_rc(rc, -TR_EEOF);
  return 0;
}

TR_TEST(chan, several_producers_and_consumers, .timeout = 60) {
  tr_chan_t *ch;
  tr_nursery_t *cons, *prods;
  sender_t p[NPROD];
  consumer_t c[NCONS];
  memset(c, 0, sizeof c);
  tr_assert_rc(tr_chan_new(&ch, 3), 0);
  tr_assert_rc(tr_nursery_open(&cons), 0);
  for (int i = 0; i < NCONS; i++) {
    c[i].ch = ch;
    tr_check_rc(tr_nursery_spawn(cons, consume, &c[i], NULL), 0);
  }
  tr_check_rc(tr_nursery_open(&prods), 0);
  for (int i = 0; i < NPROD; i++) {
    p[i] = (sender_t){.ch = ch, .from = i * 100000, .count = PER_PROD};
    tr_check_rc(tr_nursery_spawn(prods, send_task, &p[i], NULL), 0);
  }
  tr_check_rc(tr_nursery_close(prods), 0);
  tr_check_rc(tr_chan_close(ch), 0);
  tr_assert_rc(tr_nursery_close(cons), 0);
  int count = 0;
  long long sum = 0, want = 0;
  for (int i = 0; i < NCONS; i++) {
    count += c[i].count;
    sum += c[i].sum;
  }
  for (int i = 0; i < NPROD; i++) {
    tr_assert_eq(p[i].sent, PER_PROD);
    for (int k = 0; k < PER_PROD; k++)
      want += i * 100000 + k;
  }
  tr_assert_eq(count, NPROD * PER_PROD);
  tr_assert_eq(sum, want);
  for (int i = 0; i < NCONS; i++)
    tr_assert(c[i].count > 0, "consumer %d got nothing", i);
  tr_assert_rc(tr_chan_free(ch), 0);
  return 0;
}

/* ---- who may use a channel -------------------------------------------------------------- */

typedef struct foreign {
  tr_chan_t *ch;
  int rc[7];
  int had_error[7];
} foreign_t;

static int foreign_actor(void *arg) {
  foreign_t *f = arg;
  void *item;
  tr_chan_t *mine;
  f->rc[0] = tr_chan_send(f->ch, I(1));
  f->had_error[0] = tr_error_last() != NULL;
  f->rc[1] = tr_chan_recv(f->ch, &item);
  f->had_error[1] = tr_error_last() != NULL;
  f->rc[2] = tr_chan_send_nowait(f->ch, I(1));
  f->rc[3] = tr_chan_recv_nowait(f->ch, &item);
  f->rc[4] = tr_chan_close(f->ch);
  f->rc[5] = tr_chan_free(f->ch);
  tr_check_str_eq(last_type(), "PermissionError");
  /* Its own channel is fine. */
  f->rc[6] = tr_chan_new(&mine, 0);
  if (f->rc[6] == 0)
    tr_check_rc(tr_chan_free(mine), 0);
  return 0;
}

TR_TEST(chan, another_actor_is_refused, .timeout = 60) {
  tr_chan_t *ch;
  tr_actor_nursery_t *an;
  void *item;
  foreign_t f = {0};
  tr_assert_rc(tr_chan_new(&ch, 1), 0);
  tr_assert_rc(tr_chan_send(ch, I(3)), 0);
  f.ch = ch;
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_actor_nursery_spawn(an, "foreign", foreign_actor, &f, NULL), 0);
  tr_assert_rc(tr_actor_nursery_close(an), 0);
  for (int i = 0; i < 6; i++)
    tr_assert_rc(f.rc[i], -TR_EPERM, "call %d", i);
  tr_assert(f.had_error[0] && f.had_error[1]);
  tr_assert_rc(f.rc[6], 0);
  /* Untouched: the item is still there and the channel open. */
  tr_assert_rc(tr_chan_recv(ch, &item), 0);
  tr_assert_eq(V(item), 3);
  tr_assert_rc(tr_chan_send_nowait(ch, I(4)), 0);
  tr_assert_rc(tr_chan_free(ch), 0);
  return 0;
}

Test(chan, outside_a_task_is_eperm, .timeout = 30) {
  tr_chan_t *ch = (tr_chan_t *)1;
  cr_assert_eq(tr_chan_new(&ch, 1), -TR_EPERM);
  cr_assert_null(ch);
  cr_assert_eq(tr_task_started(NULL), -TR_EPERM);
}

TR_TEST(chan, free_with_a_blocked_task_is_refused, .timeout = 60) {
  tr_chan_t *ch;
  tr_nursery_t *n;
  receiver_t r = {0};
  tr_assert_rc(tr_chan_new(&ch, 0), 0);
  r.ch = ch;
  tr_assert_rc(tr_nursery_open(&n), 0);
  tr_check_rc(tr_nursery_spawn(n, recv_one, &r, NULL), 0);
  tr_check_rc(tr_checkpoint(), 0);
  tr_check_rc(tr_chan_free(ch), -TR_EBUSY);
  tr_check_str_eq(last_type(), "Busy");
  tr_check_rc(tr_chan_close(ch), 0);
  /* Woken by the close but not yet run: still inside the call. */
  tr_check_rc(tr_chan_free(ch), -TR_EBUSY);
  tr_assert_rc(tr_nursery_close(n), 0);
  tr_assert_rc(r.rc, -TR_EEOF);
  tr_assert_rc(tr_chan_free(ch), 0);
  return 0;
}

/* ---- tr_nursery_start ---------------------------------------------------------------------- */

typedef struct server {
  int ready; /* set before tr_task_started */
  long long sum;
  int done;
} server_t;

/* trio's classic: a server that sets up, reports its channel as the
 * started value, then serves until EOF. */
static int serve(void *arg) {
  server_t *s = arg;
  tr_chan_t *ch;
  tr_assert_rc(tr_sleep(5 * MS), 0); /* setup that blocks */
  tr_assert_rc(tr_chan_new(&ch, 0), 0);
  s->ready = 1;
  int rc = tr_task_started(ch);
  if (rc != 0) {
    tr_chan_free(ch);
    return rc;
  }
  tr_check_rc(tr_task_started(ch), -TR_EINVAL, "started twice");
  void *item;
  while ((rc = tr_chan_recv(ch, &item)) == 0)
    s->sum += V(item);
  tr_check_rc(rc, -TR_EEOF);
  s->done = 1;
  tr_assert_rc(tr_chan_free(ch), 0);
  return 0;
}

TR_TEST(start, hands_over_the_started_value, .timeout = 60) {
  tr_nursery_t *n;
  server_t s = {0};
  void *v = NULL;
  tr_assert_rc(tr_nursery_open(&n), 0);
  tr_check_rc(tr_nursery_start(n, serve, &s, NULL, &v), 0);
  tr_check(s.ready, "start returned before the task was ready");
  tr_check(!s.done);
  if (v) {
    tr_chan_t *ch = v;
    for (int i = 1; i <= 10; i++)
      tr_check_rc(tr_chan_send(ch, I(i)), 0);
    tr_check_rc(tr_chan_close(ch), 0);
  }
  tr_assert_rc(tr_nursery_close(n), 0);
  tr_assert(s.done);
  tr_assert_eq(s.sum, 55);
  return 0;
}

static int fail_before_started(void *arg) {
  (void)arg;
  tr_assert_rc(tr_sleep(5 * MS), 0);
  return tr_fail("ValueError", "setup failed");
}

static int sleep_then_count(void *arg) {
  int *ok = arg;
  if (tr_sleep(50 * MS) == 0)
    (*ok)++;
  return 0;
}

TR_TEST(start, failure_before_started_is_the_callers, .timeout = 60) {
  tr_nursery_t *n;
  int sibling_ok = 0;
  void *v = I(1);
  tr_assert_rc(tr_nursery_open(&n), 0);
  tr_check_rc(tr_nursery_spawn(n, sleep_then_count, &sibling_ok, NULL), 0);
  tr_check_rc(tr_nursery_start(n, fail_before_started, NULL, NULL, &v), -TR_EAPP);
  tr_check(v == NULL);
  tr_check_str_eq(last_type(), "ValueError");
  const tr_error_t *e = tr_error_last();
  tr_check(e && strstr(tr_error_message(e), "setup failed") != NULL);
  /* Not the nursery's failure: the sibling is not cancelled. */
  tr_assert_rc(tr_nursery_close(n), 0);
  tr_assert_eq(sibling_ok, 1);
  return 0;
}

static int return_without_started(void *arg) {
  (void)arg;
  return tr_sleep(1 * MS);
}

TR_TEST(start, child_returning_without_started_is_an_error, .timeout = 60) {
  tr_nursery_t *n;
  void *v = I(1);
  tr_assert_rc(tr_nursery_open(&n), 0);
  tr_check_rc(tr_nursery_start(n, return_without_started, NULL, NULL, &v), -TR_EAPP);
  tr_check(v == NULL);
  tr_check_str_eq(last_type(), "RuntimeError");
  const tr_error_t *e = tr_error_last();
  tr_check(e && strstr(tr_error_message(e), "without calling tr_task_started") != NULL);
  tr_assert_rc(tr_nursery_close(n), 0);
  return 0;
}

typedef struct slow_start {
  int sleep_rc;
  int started_rc;
  int ended;
  int after_rc; /* a blocking call after started */
} slow_start_t;

/* Sleeps long before it is ready; reports what it saw. */
static int slow_starter(void *arg) {
  slow_start_t *s = arg;
  s->sleep_rc = tr_sleep(10000 * MS);
  s->started_rc = tr_task_started(I(1));
  s->ended = 1;
  return 0;
}

TR_TEST(start, caller_cancelled_while_waiting, .timeout = 60) {
  tr_nursery_t *n;
  tr_scope_t sc;
  slow_start_t s = {0};
  int sibling_ok = 0;
  void *v = I(1);
  tr_assert_rc(tr_nursery_open(&n), 0);
  tr_check_rc(tr_nursery_spawn(n, sleep_then_count, &sibling_ok, NULL), 0);
  int64_t t0 = tr_now();
  tr_check_rc(tr_move_on_after(&sc, 20 * MS), 0);
  /* The task runs under the caller: the caller's deadline cancels it, and
   * start returns once it has ended. */
  tr_check_rc(tr_nursery_start(n, slow_starter, &s, NULL, &v), -TR_ECANCELED);
  tr_check_str_eq(last_type(), "Cancelled");
  tr_check(s.ended, "start returned before the task ended");
  tr_check(v == NULL);
  tr_check_rc(tr_scope_close(&sc), 0);
  tr_check(tr_scope_cancelled_caught(&sc));
  tr_check(tr_now() - t0 < 5000 * MS);
  tr_assert_rc(tr_nursery_close(n), 0);
  tr_assert_rc(s.sleep_rc, -TR_ECANCELED);
  tr_assert_rc(s.started_rc, -TR_ECANCELED, "started in a cancelled start is refused");
  tr_assert_eq(sibling_ok, 1, "the nursery itself was not cancelled");
  return 0;
}

/* trio's start spawns the task even in a cancelled scope: it runs up to
 * its first checkpoint, which sees the cancellation, as does a
 * tr_task_started; the caller returns once it has ended. */
TR_TEST(start, already_cancelled_caller_still_runs_the_task_to_its_checkpoint, .timeout = 60) {
  tr_nursery_t *n;
  tr_scope_t sc;
  slow_start_t s = {0};
  void *v = I(1);
  tr_assert_rc(tr_nursery_open(&n), 0);
  tr_check_rc(tr_move_on_after(&sc, 0), 0);
  int64_t t0 = tr_now();
  tr_check_rc(tr_nursery_start(n, slow_starter, &s, NULL, &v), -TR_ECANCELED);
  tr_check_str_eq(last_type(), "Cancelled");
  tr_check(v == NULL);
  tr_check(s.ended, "start returned before the task ended");
  tr_check_rc(s.sleep_rc, -TR_ECANCELED);
  tr_check_rc(s.started_rc, -TR_ECANCELED, "started in a cancelled start is refused");
  tr_check(tr_now() - t0 < 5000 * MS, "the task's sleep was not cancelled");
  tr_check_rc(tr_scope_close(&sc), 0);
  tr_check(tr_scope_cancelled_caught(&sc));
  tr_assert_rc(tr_nursery_close(n), 0);
  return 0;
}

static int started_then_fail(void *arg) {
  (void)arg;
  tr_assert_rc(tr_task_started(NULL), 0);
  tr_assert_rc(tr_sleep(5 * MS), 0);
  return tr_fail("ValueError", "failed after start");
}

TR_TEST(start, failure_after_started_is_the_nurserys, .timeout = 60) {
  tr_nursery_t *n;
  tr_assert_rc(tr_nursery_open(&n), 0);
  tr_check_rc(tr_nursery_start(n, started_then_fail, NULL, NULL, NULL), 0);
  tr_check_rc(tr_sleep(10000 * MS), -TR_ECANCELED, "the failure cancels the nursery");
  tr_assert_rc(tr_nursery_close(n), -TR_EAPP);
  tr_assert_str_eq(last_type(), "ValueError");
  return 0;
}

static int spawned_calls_started(void *arg) {
  int *rc = arg;
  *rc = tr_task_started(NULL);
  return 0;
}

TR_TEST(start, started_without_a_start_is_einval, .timeout = 60) {
  tr_nursery_t *n;
  int rc = 0;
  tr_assert_rc(tr_task_started(NULL), -TR_EINVAL);
  tr_assert_rc(tr_nursery_open(&n), 0);
  tr_check_rc(tr_nursery_spawn(n, spawned_calls_started, &rc, NULL), 0);
  tr_assert_rc(tr_nursery_close(n), 0);
  tr_assert_rc(rc, -TR_EINVAL);
  return 0;
}

/* ---- where a started task lives ------------------------------------------------------------ */

typedef struct start_ctx {
  tr_nursery_t *target;
  slow_start_t *child;
  int rc;
} start_ctx_t;

/* Sleeps 30 ms, starts, then blocks until cancelled. */
static int late_starter(void *arg) {
  slow_start_t *s = arg;
  s->sleep_rc = tr_sleep(30 * MS);
  s->started_rc = tr_task_started(NULL);
  s->after_rc = tr_sleep(10000 * MS);
  s->ended = 1;
  return 0;
}

static int starter(void *arg) {
  start_ctx_t *c = arg;
  c->rc = tr_nursery_start(c->target, late_starter, c->child, NULL, NULL);
  return 0;
}

/* The target nursery is cancelled while a start into it is pending: the
 * pending task (still the caller's) is not cancelled, the nursery's close
 * waits for it, and once it has started it is in the cancelled nursery. */
TR_TEST(start, pending_start_is_not_in_the_target_yet, .timeout = 60) {
  tr_nursery_t *outer, *target;
  slow_start_t s = {0};
  start_ctx_t c = {.child = &s};
  tr_assert_rc(tr_nursery_open(&outer), 0);
  tr_check_rc(tr_nursery_open(&target), 0);
  c.target = target;
  tr_check_rc(tr_nursery_spawn(outer, starter, &c, NULL), 0);
  tr_check_rc(tr_sleep(5 * MS), 0);
  tr_check_rc(tr_nursery_cancel(target), 0);
  tr_check_rc(tr_nursery_close(target), 0);
  tr_check(s.ended, "the target's close waited for the pending start");
  tr_assert_rc(tr_nursery_close(outer), 0);
  tr_assert_rc(c.rc, 0);
  tr_assert_rc(s.sleep_rc, 0, "not cancelled before it started");
  tr_assert_rc(s.started_rc, 0);
  tr_assert_rc(s.after_rc, -TR_ECANCELED, "cancelled once in the target");
  return 0;
}

typedef struct nested {
  int grandchild_rc;
  int ended;
} nested_t;

static int grandchild(void *arg) {
  nested_t *x = arg;
  x->grandchild_rc = tr_sleep(10000 * MS);
  return 0;
}

/* Opens a nursery of its own before it starts: the move must carry the
 * grandchild along. */
static int start_with_nursery(void *arg) {
  nested_t *x = arg;
  tr_nursery_t *mine;
  tr_assert_rc(tr_nursery_open(&mine), 0);
  tr_check_rc(tr_nursery_spawn(mine, grandchild, x, NULL), 0);
  tr_check_rc(tr_checkpoint(), 0);
  tr_check_rc(tr_task_started(NULL), 0);
  /* -TR_ECANCELED: the target, now an enclosing nursery, was cancelled. */
  tr_assert_rc(tr_nursery_close(mine), -TR_ECANCELED);
  x->ended = 1;
  return 0;
}

typedef struct start_nested_ctx {
  tr_nursery_t *target;
  nested_t *x;
  int rc;
} start_nested_ctx_t;

static int nested_starter(void *arg) {
  start_nested_ctx_t *c = arg;
  c->rc = tr_nursery_start(c->target, start_with_nursery, c->x, NULL, NULL);
  return 0; /* the caller is gone; the started task lives on in the target */
}

TR_TEST(start, started_task_takes_its_nurseries_along, .timeout = 60) {
  tr_nursery_t *target, *starters;
  nested_t x = {0};
  start_nested_ctx_t c = {.x = &x};
  tr_assert_rc(tr_nursery_open(&target), 0);
  c.target = target;
  tr_check_rc(tr_nursery_open(&starters), 0);
  tr_check_rc(tr_nursery_spawn(starters, nested_starter, &c, NULL), 0);
  /* The starter has returned and its nursery is gone: the started task's
   * chain must no longer lead there. */
  tr_check_rc(tr_nursery_close(starters), 0);
  tr_check_rc(c.rc, 0);
  tr_check(!x.ended);
  tr_check_rc(tr_nursery_cancel(target), 0); /* reaches the grandchild */
  tr_assert_rc(tr_nursery_close(target), 0);
  tr_assert(x.ended);
  tr_assert_rc(x.grandchild_rc, -TR_ECANCELED);
  return 0;
}

static int start_into_closing(void *arg) {
  start_ctx_t *c = arg;
  tr_assert_rc(tr_sleep(5 * MS), 0); /* the parent is in close by now */
  c->rc = tr_nursery_start(c->target, late_starter, c->child, NULL, NULL);
  return 0;
}

TR_TEST(start, closing_nursery_is_refused, .timeout = 60) {
  tr_nursery_t *n;
  slow_start_t s = {0};
  start_ctx_t c = {.child = &s};
  tr_assert_rc(tr_nursery_open(&n), 0);
  c.target = n;
  tr_check_rc(tr_nursery_spawn(n, start_into_closing, &c, NULL), 0);
  tr_assert_rc(tr_nursery_close(n), 0);
  tr_assert_rc(c.rc, -TR_ECLOSED);
  tr_assert(!s.ended);
  return 0;
}
