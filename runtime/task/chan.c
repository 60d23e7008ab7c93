/*
 * Channels between the tasks of one actor (trio's memory channels).
 *
 * A channel is a ring of buffered items plus two FIFO queues of blocked
 * tasks, senders and receivers.  It belongs to one actor, whose tasks only
 * ever run one at a time on one worker, so nothing here is atomic or
 * locked: every call checks that it comes from a task of that actor and
 * refuses the rest.
 *
 * Blocking uses the task layer's own mechanism (tr__task_block, woken by
 * tr__task_wake_blocked or by a cancellation), as tr_recv and the dialog
 * engine do.  A blocked task waits on a waiter record on its own stack,
 * linked into the channel's queue.  Whoever completes the operation for
 * it (a sender handing an item to a blocked receiver, a receiver taking a
 * blocked sender's item, close) unlinks the record, stores the outcome in
 * it and wakes the task: the hand-off has happened by the time the task
 * runs again, so an item is never lost or duplicated, whatever the task
 * sees when it resumes.
 *
 * Invariants between calls: receivers wait only while the buffer is empty
 * and no sender waits; senders wait only while the buffer is full and no
 * receiver waits.
 *
 * Cancellation.  A cancel makes a blocked task ready without telling the
 * channel; its record stays linked until it runs and unlinks it.  Such a
 * record is skipped by hand-offs (its task's state is no longer BLOCKED),
 * as trio's abort removes a cancelled task from the wait queue at once, so
 * a cancelled receiver never takes an item ahead of a live one.
 */
#include <stdint.h>
#include <stdlib.h>

#include <tractor/task.h>

#include "runtime/platform/assert.h"
#include "runtime/task/task.h"

typedef struct chan_waiter {
  struct chan_waiter *prev, *next;
  tr_task_t *task;
  void *item;   /* sender: the item offered; receiver: the item received */
  int rc;       /* the outcome, once done */
  uint8_t done; /* the operation completed (rc says how) */
  uint8_t linked;
} chan_waiter_t;

typedef struct waitq {
  chan_waiter_t *head, *tail;
} waitq_t;

struct tr_chan {
  struct tr_actor *actor; /* the owner; never dereferenced */
  size_t capacity;        /* items the buffer may hold */
  void **ring;            /* the buffer: ring_cap slots, grown up to capacity */
  size_t ring_cap, head, len;
  waitq_t senders, receivers;
  uint64_t users; /* tasks inside a blocking call (tr_chan_free waits) */
  uint8_t closed;
};

/* A first ring; it doubles up to the capacity as items pile up. */
#define TR_CHAN_RING_MIN 16

/* ---- waiter queues ---------------------------------------------------------- */

static void wq_push(waitq_t *q, chan_waiter_t *w) {
  w->next = NULL;
  w->prev = q->tail;
  if (q->tail)
    q->tail->next = w;
  else
    q->head = w;
  q->tail = w;
  w->linked = 1;
}

static void wq_unlink(waitq_t *q, chan_waiter_t *w) {
  if (w->prev)
    w->prev->next = w->next;
  else
    q->head = w->next;
  if (w->next)
    w->next->prev = w->prev;
  else
    q->tail = w->prev;
  w->prev = w->next = NULL;
  w->linked = 0;
}

/* The first waiter whose task still waits (not made ready by a cancel). */
static chan_waiter_t *wq_first_blocked(const waitq_t *q) {
  for (chan_waiter_t *w = q->head; w; w = w->next)
    if (w->task->state == TR_TASK_BLOCKED)
      return w;
  return NULL;
}

/* Completes w's operation with rc and makes its task ready. */
static void wq_complete(waitq_t *q, chan_waiter_t *w, int rc) {
  wq_unlink(q, w);
  w->done = 1;
  w->rc = rc;
  tr__task_wake_blocked(w->task);
}

/* ---- the buffer --------------------------------------------------------------- */

/* Ring positions without a division: head < ring_cap and len <= ring_cap,
 * so one subtraction wraps. */
static size_t ring_at(const tr_chan_t *ch, size_t i) {
  size_t at = ch->head + i;
  return at >= ch->ring_cap ? at - ch->ring_cap : at;
}

static void ring_put(tr_chan_t *ch, void *item) {
  TR_ASSERT(ch->len < ch->ring_cap);
  ch->ring[ring_at(ch, ch->len)] = item;
  ch->len++;
}

static void *ring_take(tr_chan_t *ch) {
  TR_ASSERT(ch->len > 0);
  void *item = ch->ring[ch->head];
  ch->head = ring_at(ch, 1);
  ch->len--;
  return item;
}

/* Grows a full ring (doubling, up to the capacity).  Out of line: it is
 * rare, and inlined it would make every hand-off save registers for it.
 * Returns 0 or -TR_ENOMEM. */
__attribute__((noinline)) static int ring_grow(tr_chan_t *ch) {
  size_t ncap = ch->ring_cap ? ch->ring_cap * 2 : TR_CHAN_RING_MIN;
  if (ncap > ch->capacity || ncap < ch->ring_cap)
    ncap = ch->capacity;
  if (ncap > SIZE_MAX / sizeof(void *))
    return -TR_ENOMEM;
  void **nring = malloc(ncap * sizeof(void *));
  if (!nring)
    return -TR_ENOMEM;
  for (size_t i = 0; i < ch->len; i++)
    nring[i] = ch->ring[ring_at(ch, i)];
  free(ch->ring);
  ch->ring = nring;
  ch->ring_cap = ncap;
  ch->head = 0;
  return 0;
}

/* Makes room for one more item.  Returns 0, -TR_EAGAIN (at capacity) or
 * -TR_ENOMEM. */
static int ring_room(tr_chan_t *ch) {
  if (ch->len < ch->ring_cap)
    return 0;
  if (ch->len >= ch->capacity)
    return -TR_EAGAIN;
  return ring_grow(ch);
}

/* ---- shared steps ---------------------------------------------------------------- */

/* The running task, if it may use ch; else NULL with an error recorded. */
static tr_task_t *owner_task(const tr_chan_t *ch, const char *what) {
  tr_task_t *t = tr__task_current();
  if (!t || t->actor != ch->actor) {
    (void)TR_ERROR(-TR_EPERM, "%s: a channel is for the tasks of the actor that created it", what);
    return NULL;
  }
  return t;
}

#define cancelled(t, what) tr__task_observe_cancel((t), "%s cancelled", (what))

/* Without waiting: hands item to a blocked receiver or buffers it.
 * Returns 0, -TR_EAGAIN, -TR_ECLOSED or -TR_ENOMEM (no error object). */
static int try_send(tr_chan_t *ch, void *item) {
  if (ch->closed)
    return -TR_ECLOSED;
  chan_waiter_t *r = wq_first_blocked(&ch->receivers);
  if (r) {
    r->item = item;
    wq_complete(&ch->receivers, r, 0);
    return 0;
  }
  int rc = ring_room(ch);
  if (rc)
    return rc;
  ring_put(ch, item);
  return 0;
}

/* Without waiting: takes a buffered item (refilling the buffer from the
 * first blocked sender) or a blocked sender's item (rendezvous).  Returns
 * 0, -TR_EAGAIN or -TR_EEOF (no error object). */
static int try_recv(tr_chan_t *ch, void **item) {
  chan_waiter_t *s = wq_first_blocked(&ch->senders);
  if (ch->len > 0) {
    *item = ring_take(ch);
    if (s) {
      ring_put(ch, s->item); /* a sender waits only on a full buffer */
      wq_complete(&ch->senders, s, 0);
    }
    return 0;
  }
  if (s) {
    *item = s->item;
    wq_complete(&ch->senders, s, 0);
    return 0;
  }
  return ch->closed ? -TR_EEOF : -TR_EAGAIN;
}

/* Blocks t on queue q with waiter w until its operation completes, the
 * channel changes or t is cancelled.  Returns 1 when w is done, else 0
 * (the caller checks for cancellation and retries). */
static int wait_on(tr_chan_t *ch, waitq_t *q, chan_waiter_t *w, tr_task_t *t) {
  w->task = t;
  w->done = 0;
  wq_push(q, w);
  ch->users++;
  t->blocked_on = q == &ch->senders ? "tr_chan_send (the channel is full)" : "tr_chan_recv";
  tr__task_block(t, 1);
  ch->users--;
  if (w->linked)
    wq_unlink(q, w); /* woken by a cancel: leave the queue */
  return w->done;
}

/* ---- the API ---------------------------------------------------------------------- */

int tr_chan_new(tr_chan_t **out, size_t capacity) {
  if (!out)
    return TR_ERROR(-TR_EINVAL, "tr_chan_new: out is NULL");
  *out = NULL;
  tr_task_t *t = tr__task_current();
  if (!t)
    return TR_ERROR(-TR_EPERM, "tr_chan_new: not in a task");
  tr_chan_t *ch = calloc(1, sizeof(*ch));
  if (!ch)
    return TR_ERROR(-TR_ENOMEM, "tr_chan_new");
  ch->actor = t->actor;
  ch->capacity = capacity;
  *out = ch;
  return 0;
}

int tr_chan_send(tr_chan_t *ch, void *item) {
  if (!ch)
    return TR_ERROR(-TR_EINVAL, "tr_chan_send: no channel");
  tr_task_t *t = owner_task(ch, "tr_chan_send");
  if (!t)
    return -TR_EPERM;
  if (tr__task_cancelled(t))
    return cancelled(t, "tr_chan_send");
  for (;;) {
    int rc = try_send(ch, item);
    if (rc == -TR_ECLOSED)
      return TR_ERROR(rc, "tr_chan_send: the channel is closed");
    if (rc == -TR_ENOMEM)
      return TR_ERROR(rc, "tr_chan_send: the buffer cannot grow");
    if (rc == 0)
      return 0;
    chan_waiter_t w = {.item = item};
    if (wait_on(ch, &ch->senders, &w, t)) {
      if (w.rc == 0)
        return 0; /* a receiver took it, even if a cancel came since */
      return TR_ERROR(w.rc, "tr_chan_send: the channel was closed while waiting");
    }
    if (tr__task_cancelled(t))
      return cancelled(t, "tr_chan_send");
  }
}

int tr_chan_recv(tr_chan_t *ch, void **item) {
  if (item)
    *item = NULL; /* every failure says NULL (task.h) */
  if (!ch || !item)
    return TR_ERROR(-TR_EINVAL, "tr_chan_recv: no channel or no item pointer");
  tr_task_t *t = owner_task(ch, "tr_chan_recv");
  if (!t)
    return -TR_EPERM;
  if (tr__task_cancelled(t))
    return cancelled(t, "tr_chan_recv");
  for (;;) {
    int rc = try_recv(ch, item);
    if (rc == 0)
      return 0;
    if (rc == -TR_EEOF)
      return TR_ERROR(rc, "tr_chan_recv: the channel is closed and drained");
    chan_waiter_t w = {.item = NULL};
    if (wait_on(ch, &ch->receivers, &w, t)) {
      if (w.rc == 0) {
        *item = w.item; /* a sender handed it over, even if a cancel came since */
        return 0;
      }
      return TR_ERROR(w.rc, "tr_chan_recv: the channel was closed while waiting");
    }
    if (tr__task_cancelled(t))
      return cancelled(t, "tr_chan_recv");
  }
}

int tr_chan_send_nowait(tr_chan_t *ch, void *item) {
  if (!ch)
    return TR_ERROR(-TR_EINVAL, "tr_chan_send_nowait: no channel");
  if (!owner_task(ch, "tr_chan_send_nowait"))
    return -TR_EPERM;
  int rc = try_send(ch, item);
  switch (rc) {
  case 0:
    return 0;
  case -TR_EAGAIN:
    return TR_ERROR(rc, "tr_chan_send_nowait: the channel is full");
  case -TR_ECLOSED:
    return TR_ERROR(rc, "tr_chan_send_nowait: the channel is closed");
  default:
    return TR_ERROR(rc, "tr_chan_send_nowait: the buffer cannot grow");
  }
}

int tr_chan_recv_nowait(tr_chan_t *ch, void **item) {
  if (item)
    *item = NULL; /* every failure says NULL (task.h) */
  if (!ch || !item)
    return TR_ERROR(-TR_EINVAL, "tr_chan_recv_nowait: no channel or no item pointer");
  if (!owner_task(ch, "tr_chan_recv_nowait"))
    return -TR_EPERM;
  int rc = try_recv(ch, item);
  if (rc == -TR_EAGAIN)
    return TR_ERROR(rc, "tr_chan_recv_nowait: nothing to receive");
  if (rc == -TR_EEOF)
    return TR_ERROR(rc, "tr_chan_recv_nowait: the channel is closed and drained");
  return rc;
}

int tr_chan_close(tr_chan_t *ch) {
  if (!ch)
    return TR_ERROR(-TR_EINVAL, "tr_chan_close: no channel");
  if (!owner_task(ch, "tr_chan_close"))
    return -TR_EPERM;
  if (ch->closed)
    return 0;
  ch->closed = 1;
  /* Blocked receivers imply an empty buffer: they get EOF now.  Blocked
   * senders keep their items.  Records of tasks a cancel already woke are
   * only unlinked: those tasks return -TR_ECANCELED, as they would have
   * without the close. */
  waitq_t *qs[2] = {&ch->receivers, &ch->senders};
  int rcs[2] = {-TR_EEOF, -TR_ECLOSED};
  for (int i = 0; i < 2; i++) {
    while (qs[i]->head) {
      chan_waiter_t *w = qs[i]->head;
      if (w->task->state == TR_TASK_BLOCKED)
        wq_complete(qs[i], w, rcs[i]);
      else
        wq_unlink(qs[i], w);
    }
  }
  return 0;
}

int tr_chan_free(tr_chan_t *ch) {
  if (!ch)
    return 0;
  if (!owner_task(ch, "tr_chan_free"))
    return -TR_EPERM;
  if (ch->users > 0)
    return TR_ERROR(-TR_EBUSY, "tr_chan_free: %llu task(s) still waiting on the channel",
                    (unsigned long long)ch->users);
  free(ch->ring);
  free(ch);
  return 0;
}
