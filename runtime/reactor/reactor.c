/*
 * The reactor thread and the timer heap.
 *
 * One thread per runtime blocks in epoll_wait with no timeout.  The epoll
 * set holds watchers (an fd plus a callback run on this thread): the
 * eventfd that stop and tr_actor_cancel_soon use to wake it (see "Cancel
 * requests" below), and a timerfd that is kept set to the
 * earliest pending timer's deadline (a cancel leaves it alone: if the
 * cancelled timer was the earliest, the reactor wakes once at its deadline
 * for nothing and re-arms).  With no timers the timerfd is disarmed and the
 * thread sleeps until someone writes the eventfd: an idle runtime costs no
 * CPU and no periodic wake-ups.
 *
 * Why a timerfd and not epoll_wait's millisecond timeout.  The timeout
 * would have to be rounded up to whole milliseconds (rounding down wakes
 * early and spins), so every timer would fire 0-1 ms late, 0.5 ms on
 * average; a timerfd is an hrtimer with nanosecond resolution and an
 * absolute deadline (TFD_TIMER_ABSTIME), so there is no rounding and no
 * drift from turning a deadline into a relative timeout.  It also lets the
 * thread that arms a new earliest timer reprogram the kernel timer itself
 * (timerfd_settime is thread-safe), under the heap lock: the reactor need
 * not be woken through the eventfd just to recompute its timeout, which
 * saves a context switch and a system call per new earliest deadline.
 * epoll_pwait2 would give nanosecond timeouts too, but needs Linux 5.11
 * and glibc 2.35, and still needs the wake-up.  Cost of the timerfd: one
 * timerfd_settime each time the earliest deadline changes, one read per
 * expiry.
 *
 * Timers.  A binary min-heap of pointers to timer entries, ordered by
 * (deadline, id): equal deadlines fire in arming order.  Each entry knows
 * its heap slot, and an open-addressing table (linear probing, Fibonacci
 * hashing of the id, backward-shift deletion: no tombstones) maps ids to
 * entries, so arm, cancel and fire are O(log n).  Entries are allocated
 * here, never embedded in a caller's object, and are reachable only through
 * the heap and the table, both under `rx.lock`: firing removes an entry
 * from both under the lock and sends its message after unlocking, cancel
 * removes it under the lock too, so exactly one of them gets the entry and
 * neither can touch freed memory.
 *
 * A mutex is enough: timers are not on the message hot path (a send never
 * takes it), the critical sections are a few heap moves, and the only
 * system call made under it is timerfd_settime when the earliest deadline
 * changes.
 *
 * Deliberately not done: a timer wheel.  It would make arm/cancel O(1),
 * but a heap is exact to the nanosecond, needs no tick, and costs ~20
 * comparisons at a million pending timers, far below the cost of the
 * message a timer sends.
 *
 * Cancel requests (tr_actor_cancel_soon).  The caller may be a signal
 * handler, or a function a debugger calls in a stopped process, so it may
 * not allocate or lock: cancelling an actor takes a message (malloc) and
 * pushing it may take the inject-queue mutex.  The caller therefore only
 * records the request and wakes this thread, which does the real work
 * (tr__actor_request_cancel) in normal context:
 *   - a request is one of TR_CANCEL_SOON_MAX static slots, claimed with a
 *     CAS on its `claimed` word (full: -TR_EAGAIN), holding a reference to
 *     the actor (tr_actor_dup is one atomic add);
 *   - the slot is pushed on a lock-free stack (Treiber: CAS on the head);
 *     the reactor takes the whole stack with one exchange, so a slot is
 *     never popped alone and there is no ABA;
 *   - the caller writes the wake eventfd.  Piggybacking on that eventfd
 *     rather than a third watcher costs nothing: the non-empty stack is
 *     the flag, on_wake takes it with one exchange on every wake-up, and
 *     the process keeps one fd fewer.
 * A gate word (an "open" bit plus a count of callers inside) keeps the
 * eventfd alive for every write: stop closes the gate, waits for the
 * callers inside (a few instructions and one write each), and only then
 * closes the fd, so a late call gets -TR_ENORUNTIME and never writes to a
 * closed or reused descriptor.  Requests left after the thread has
 * stopped are dropped with their references (every actor has exited by
 * then).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include <tractor/time.h>

#include "runtime/error/error.h"
#include "runtime/actor/actor.h"
#include "runtime/platform/assert.h"
#include "runtime/reactor/reactor.h"

#define NSEC_PER_SEC 1000000000LL
/* "Nothing armed" for rx.armed: no real deadline equals it. */
#define NEVER INT64_MIN
/* Smallest heap and table capacities; they shrink back to these. */
#define HEAP_MIN 64
#define TABLE_MIN 128
/* Timers fired per lock hold: a burst of expiries (a million timers with
 * the same deadline) must not lock out arming threads for its whole
 * length. */
#define FIRE_BATCH 256

typedef struct tr_timer {
  int64_t deadline;      /* absolute, on tr_now's clock */
  uint64_t id;           /* process-unique, never 0 */
  size_t slot;           /* index in rx.heap while pending */
  tr_actor_t *to;        /* owned reference */
  tr_msg_t *msg;         /* owned until fired or cancelled */
  struct tr_timer *next; /* batch list, after removal (no lock needed) */
} tr_timer_t;

/* An fd the reactor waits on and what to do when it is ready.  Runs on the
 * reactor thread; epoll_event.data.ptr points at it. */
typedef struct watcher {
  int fd;
  void (*on_ready)(struct watcher *w, uint32_t events);
} watcher_t;

static void on_wake(watcher_t *w, uint32_t events);
static void on_timer(watcher_t *w, uint32_t events);

static struct {
  /* Statically initialised and never destroyed, so tr_send_after and
   * tr_timer_cancel can always take it and find out that no runtime runs
   * (rather than touching state that start/stop are changing). */
  pthread_mutex_t lock;
  /* Under lock: ------------------------------------------------------- */
  int open;          /* accepting timers (between start and stop) */
  tr_timer_t **heap; /* min-heap by (deadline, id) */
  size_t len, cap;
  tr_timer_t **table; /* id -> entry, open addressing; NULL = free */
  size_t tlen, tcap;  /* tcap is a power of two (or 0) */
  unsigned tshift;    /* 64 - log2(tcap) */
  int64_t armed;      /* deadline the timerfd is set to, or NEVER */
  uint64_t last_id;   /* process-wide: never reset, ids never reused */
  /* Set by start before `open` is published under the lock, cleared by
   * stop after the thread is joined: --------------------------------- */
  int epfd;
  pthread_t thread;
  watcher_t wake, timer; /* eventfd, timerfd */
  /* atomic: the reactor thread exits.  The release store in stop pairs with
   * the acquire load in reactor_main, which runs after stop's eventfd
   * write has woken the thread. */
  uint32_t quit;
} rx = {
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .armed = NEVER,
    .epfd = -1,
    .wake = {.fd = -1, .on_ready = on_wake},
    .timer = {.fd = -1, .on_ready = on_timer},
};

/* A pending tr_actor_cancel_soon request (see the file comment). */
typedef struct cancel_req {
  struct cancel_req *next; /* stack link, written before the push */
  tr_actor_t *actor;       /* owned reference from claim to drain */
  uint32_t claimed;        /* atomic: 1 from claim until drained */
} cancel_req_t;

/* cs.gate: set while requests are accepted (reactor running). */
#define GATE_OPEN 0x80000000u

static struct {
  cancel_req_t slots[TR_CANCEL_SOON_MAX];
  cancel_req_t *head; /* atomic: pending requests, newest first */
  /* atomic: GATE_OPEN while the reactor runs, plus the number of
   * tr_actor_cancel_soon calls between their entry and exit. */
  uint32_t gate;
} cs;

int64_t tr_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * NSEC_PER_SEC + ts.tv_nsec;
}

/* ---- heap (rx.lock held) ----------------------------------------------- */

static int earlier(const tr_timer_t *a, const tr_timer_t *b) {
  return a->deadline < b->deadline || (a->deadline == b->deadline && a->id < b->id);
}

static void heap_put(size_t i, tr_timer_t *t) {
  rx.heap[i] = t;
  t->slot = i;
}

static void sift_up(size_t i) {
  tr_timer_t *t = rx.heap[i];
  while (i > 0) {
    size_t parent = (i - 1) / 2;
    if (!earlier(t, rx.heap[parent]))
      break;
    heap_put(i, rx.heap[parent]);
    i = parent;
  }
  heap_put(i, t);
}

static void sift_down(size_t i) {
  tr_timer_t *t = rx.heap[i];
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= rx.len)
      break;
    if (c + 1 < rx.len && earlier(rx.heap[c + 1], rx.heap[c]))
      c++;
    if (!earlier(rx.heap[c], t))
      break;
    heap_put(i, rx.heap[c]);
    i = c;
  }
  heap_put(i, t);
}

/* Removes t from any position: the last entry fills the hole and moves up
 * or down from there. */
static void heap_remove(tr_timer_t *t) {
  size_t i = t->slot;
  TR_ASSERT(i < rx.len && rx.heap[i] == t);
  tr_timer_t *last = rx.heap[--rx.len];
  if (i == rx.len)
    return;
  heap_put(i, last);
  if (i > 0 && earlier(last, rx.heap[(i - 1) / 2]))
    sift_up(i);
  else
    sift_down(i);
}

/* ---- id table (rx.lock held) ------------------------------------------- */

/* Fibonacci hashing: ids are sequential, and multiplying by 2^64/phi
 * spreads consecutive ones across the table's top bits. */
static size_t tslot(uint64_t id) { return (size_t)((id * 0x9E3779B97F4A7C15ull) >> rx.tshift); }

static void table_insert(tr_timer_t *t) {
  size_t mask = rx.tcap - 1;
  size_t i = tslot(t->id);
  while (rx.table[i])
    i = (i + 1) & mask;
  rx.table[i] = t;
  rx.tlen++;
}

/* The table slot holding id, or (size_t)-1. */
static size_t table_find(uint64_t id) {
  if (rx.tcap == 0)
    return (size_t)-1;
  size_t mask = rx.tcap - 1;
  for (size_t i = tslot(id);; i = (i + 1) & mask) {
    if (!rx.table[i])
      return (size_t)-1;
    if (rx.table[i]->id == id)
      return i;
  }
}

/* Rebuilds the table with `cap` slots.  Returns 0, or -TR_ENOMEM with the
 * old table intact. */
static int table_resize(size_t cap) {
  tr_timer_t **old = rx.table;
  size_t oldcap = rx.tcap;
  tr_timer_t **t = calloc(cap, sizeof(*t));
  if (!t)
    return -TR_ENOMEM;
  rx.table = t;
  rx.tcap = cap;
  rx.tlen = 0;
  rx.tshift = 64u - (unsigned)__builtin_ctzll((unsigned long long)cap);
  for (size_t i = 0; i < oldcap; i++)
    if (old[i])
      table_insert(old[i]);
  free(old);
  return 0;
}

/* Empties slot i, then shifts later entries of the same probe run back so
 * that every entry stays reachable from its home slot without tombstones
 * (Knuth 6.4, algorithm R). */
static void table_delete(size_t i) {
  size_t mask = rx.tcap - 1;
  size_t j = i;
  for (;;) {
    j = (j + 1) & mask;
    if (!rx.table[j])
      break;
    size_t home = tslot(rx.table[j]->id);
    /* The entry at j may move to the hole at i only if its home is not
     * cyclically inside (i, j]. */
    int stays = (i <= j) ? (i < home && home <= j) : (i < home || home <= j);
    if (!stays) {
      rx.table[i] = rx.table[j];
      i = j;
    }
  }
  rx.table[i] = NULL;
  rx.tlen--;
}

/* Makes room for one more timer in the heap and the table.  Returns 0 or
 * -TR_ENOMEM with nothing changed that matters (a grown array is merely
 * bigger). */
static int reserve_one(void) {
  if (rx.len == rx.cap) {
    size_t cap = rx.cap ? rx.cap * 2 : HEAP_MIN;
    tr_timer_t **h = realloc(rx.heap, cap * sizeof(*h));
    if (!h)
      return -TR_ENOMEM;
    rx.heap = h;
    rx.cap = cap;
  }
  /* Load factor at most 1/2: probe runs stay short. */
  if ((rx.tlen + 1) * 2 > rx.tcap)
    return table_resize(rx.tcap ? rx.tcap * 2 : TABLE_MIN);
  return 0;
}

/* Gives memory back after a burst: a process that once had a million
 * timers pending should not keep ~24 MB of arrays for the rest of its
 * life.  Halving at 1/8 (table) or 1/4 (heap) occupancy leaves a gap
 * before the next growth, so the cost stays amortised O(1) per timer.
 * Failure to shrink is harmless. */
static void maybe_shrink(void) {
  if (rx.tcap > TABLE_MIN && rx.tlen * 8 < rx.tcap)
    (void)table_resize(rx.tcap / 2);
  if (rx.cap > HEAP_MIN && rx.len * 4 < rx.cap) {
    tr_timer_t **h = realloc(rx.heap, rx.cap / 2 * sizeof(*h));
    if (h) {
      rx.heap = h;
      rx.cap /= 2;
    }
  }
}

/* Removes t from the heap and the table. */
static void unlink_timer(tr_timer_t *t) {
  heap_remove(t);
  size_t i = table_find(t->id);
  TR_ASSERT(i != (size_t)-1);
  table_delete(i);
}

/* ---- the timerfd (rx.lock held) ----------------------------------------- */

/* Sets the timerfd to fire at `deadline` (absolute), or disarms it for
 * NEVER.  A deadline in the past fires at once; 0 would mean "disarm" to
 * the kernel, so the earliest real deadline used is 1 ns. */
static void arm(int64_t deadline) {
  struct itimerspec its;
  memset(&its, 0, sizeof(its));
  if (deadline != NEVER) {
    if (deadline < 1)
      deadline = 1;
    its.it_value.tv_sec = (time_t)(deadline / NSEC_PER_SEC);
    its.it_value.tv_nsec = (long)(deadline % NSEC_PER_SEC);
  }
  /* Cannot fail with a valid fd and a normalised, non-negative time. */
  int rc = timerfd_settime(rx.timer.fd, TFD_TIMER_ABSTIME, &its, NULL);
  TR_ASSERT(rc == 0);
  rx.armed = deadline;
}

/* ---- arm and cancel ------------------------------------------------------ */

int tr__timer_post(int64_t deadline_ns_abs, tr_actor_t *to, tr_msg_t *msg, uint64_t *timer_id) {
  if (timer_id)
    *timer_id = 0;
  if (!to || !msg)
    return TR_ERROR(-TR_EINVAL, "a timer needs an actor and a message");
  tr_timer_t *t = malloc(sizeof(*t));
  if (!t)
    return TR_ERROR(-TR_ENOMEM, "no memory for a timer");
  t->deadline = deadline_ns_abs;
  t->msg = msg;
  t->next = NULL;

  pthread_mutex_lock(&rx.lock);
  int rc = 0;
  /* `open` is true only between start and stop, and tr__rt is valid for at
   * least that long (rt_init before start, rt_fini after stop), so reading
   * `stopping` here is safe.  Acquire pairs with tr_shutdown's exchange;
   * a shutdown racing with this call may let one more timer in, which is
   * harmless: stop cancels it. */
  if (!rx.open || tr_load_acquire(&tr__actors.stopping))
    rc = -TR_ENORUNTIME;
  else
    rc = reserve_one();
  if (rc != 0) {
    pthread_mutex_unlock(&rx.lock);
    free(t);
    return TR_ERROR(rc, "timer not armed: %s",
                    rc == -TR_ENORUNTIME ? "no runtime is running (or it is stopping)"
                                         : "no memory for the timer heap");
  }
  /* Taken before the entry becomes visible: the reactor may fire it and
   * release this reference the moment the lock is dropped.  (Not before
   * the checks: without a runtime, `to` may be anything.) */
  t->to = tr_actor_dup(to);
  t->id = ++rx.last_id;
  /* A behaviour re-arming the message it is handling hands it over here:
   * the runtime must not free it when the behaviour returns.  Done before
   * the timer is visible, since it may fire (and the receiver free msg) as
   * soon as we unlock. */
  tr_msg_take(msg);
  rx.heap[rx.len] = t;
  rx.len++;
  sift_up(rx.len - 1);
  table_insert(t);
  /* A new earliest deadline reprograms the kernel timer directly (see the
   * file comment); a later one is picked up when the reactor re-arms after
   * the current earliest fires. */
  if (rx.heap[0] == t && (rx.armed == NEVER || t->deadline < rx.armed))
    arm(t->deadline);
  if (timer_id)
    *timer_id = t->id;
  pthread_mutex_unlock(&rx.lock);
  return 0;
}

int tr_send_after(tr_actor_t *to, tr_msg_t *msg, int64_t delay_ns, uint64_t *timer_id) {
  int64_t now = tr_now();
  int64_t deadline = now;
  if (delay_ns > 0)
    deadline = delay_ns > INT64_MAX - now ? INT64_MAX : now + delay_ns;
  return tr__timer_post(deadline, to, msg, timer_id);
}

int tr_timer_cancel(uint64_t timer_id) {
  if (timer_id == 0)
    return -TR_ENOTFOUND;
  pthread_mutex_lock(&rx.lock);
  size_t i = table_find(timer_id);
  if (i == (size_t)-1) {
    pthread_mutex_unlock(&rx.lock);
    return -TR_ENOTFOUND;
  }
  tr_timer_t *t = rx.table[i];
  table_delete(i);
  heap_remove(t);
  maybe_shrink();
  /* The timerfd stays armed even if t was the earliest: the reactor then
   * wakes once for nothing and re-arms, which is cheaper than a system
   * call on every cancel (most cancelled timers, deadlines that were met,
   * are not the earliest anyway). */
  pthread_mutex_unlock(&rx.lock);
  tr_msg_free(t->msg);
  tr_actor_release(t->to);
  free(t);
  return 0;
}

size_t tr__timer_pending(void) {
  pthread_mutex_lock(&rx.lock);
  size_t n = rx.len;
  pthread_mutex_unlock(&rx.lock);
  return n;
}

/* ---- the reactor thread ---------------------------------------------------- */

/* Sends a fired timer's message and drops the timer.  Outside the lock:
 * pushing may schedule the actor (inject queue) and releasing may free it.
 */
static void deliver(tr_timer_t *t) {
  tr_actor_t *a = t->to;
  /* tr_send reserves a mailbox slot for an application message when the
   * actor has a limit, and the consumer gives it back on pop (or drain);
   * keep that count balanced, but never refuse: a fired timer's message
   * has nobody to go back to.  Runtime wake-ups (TR_MSGF_SYS, such as a
   * task's sleep) are not counted by either side. */
  if (a->limit && !(t->msg->flags_ & TR_MSGF_SYS))
    tr_faa_relaxed(&a->qlen, 1);
  /* An exited actor makes this a dead letter, counted by the push. */
  (void)tr__actor_push(a, t->msg);
  tr_actor_release(a);
  free(t);
}

/* Fires every timer whose deadline has passed, in deadline order, then
 * sets the timerfd to the next deadline. */
static void fire_expired(void) {
  for (;;) {
    int64_t now = tr_now();
    tr_timer_t *batch = NULL, **tail = &batch;
    int n = 0;
    pthread_mutex_lock(&rx.lock);
    while (rx.len > 0 && rx.heap[0]->deadline <= now && n < FIRE_BATCH) {
      tr_timer_t *t = rx.heap[0];
      unlink_timer(t);
      *tail = t;
      tail = &t->next;
      n++;
    }
    int more = rx.len > 0 && rx.heap[0]->deadline <= now;
    if (!more) {
      maybe_shrink();
      /* The timerfd is one-shot and has just expired, so re-arm it for
       * the new earliest deadline unconditionally: deciding from rx.armed
       * and `now` alone could leave it idle if the kernel's expiry and
       * tr_now ever disagreed by a hair, and this is one system call per
       * wake-up that fires something anyway.  With no timer left, disarm
       * only if a cancelled timer's deadline is still ahead (so an idle
       * runtime does not wake for it). */
      if (rx.len > 0)
        arm(rx.heap[0]->deadline);
      else if (rx.armed > now)
        arm(NEVER);
      else
        rx.armed = NEVER;
    }
    pthread_mutex_unlock(&rx.lock);
    /* In heap order, from this one thread: messages to one actor enter its
     * mailbox, and so arrive, in deadline order. */
    while (batch) {
      tr_timer_t *next = batch->next;
      deliver(batch);
      batch = next;
    }
    if (!more)
      return;
  }
}

static void on_timer(watcher_t *w, uint32_t events) {
  (void)events;
  uint64_t expirations;
  /* Clears the readiness; EAGAIN (already cleared by a re-arm) is fine. */
  (void)!read(w->fd, &expirations, sizeof(expirations));
  fire_expired();
}

/* ---- cancel requests -------------------------------------------------------- */

/* Claims a slot, fills it and pushes it.  Async-signal-safe: atomics only.
 * Returns 0 or -TR_EAGAIN (every slot is pending). */
static int cancel_post(tr_actor_t *a) {
  cancel_req_t *r = NULL;
  for (size_t i = 0; i < TR_CANCEL_SOON_MAX && !r; i++) {
    uint32_t unclaimed = 0;
    /* Acquire pairs with the release store in cancel_drain that freed the
     * slot: the drain's reads of it happen before our writes below.  The
     * relaxed pre-check only skips busy slots cheaply. */
    if (tr_load_relaxed(&cs.slots[i].claimed) == 0 &&
        __atomic_compare_exchange_n(&cs.slots[i].claimed, &unclaimed, 1, 0, __ATOMIC_ACQUIRE,
                                    __ATOMIC_RELAXED))
      r = &cs.slots[i];
  }
  if (!r)
    return -TR_EAGAIN;
  r->actor = tr_actor_dup(a);
  /* Relaxed: the head is only stored into r->next, never dereferenced. */
  cancel_req_t *head = tr_load_relaxed(&cs.head);
  do
    r->next = head;
  /* Release pairs with the acquire exchange in cancel_drain: r->actor and
   * r->next are visible to the reactor once it sees r (later pushes are
   * read-modify-writes, so they continue this release sequence). */
  while (!__atomic_compare_exchange_n(&cs.head, &head, r, 1, __ATOMIC_RELEASE, __ATOMIC_RELAXED));
  return 0;
}

/* Carries out every pending request, oldest first.  Normal context: the
 * reactor thread, or stop after the thread has been joined. */
static void cancel_drain(void) {
  /* Acquire pairs with the release CAS in cancel_post. */
  cancel_req_t *r = tr_xchg_acqrel(&cs.head, (cancel_req_t *)NULL);
  cancel_req_t *fifo = NULL;
  while (r) {
    cancel_req_t *next = r->next;
    r->next = fifo;
    fifo = r;
    r = next;
  }
  while (fifo) {
    cancel_req_t *next = fifo->next;
    tr_actor_t *a = fifo->actor;
    fifo->actor = NULL;
    /* Release pairs with the acquire CAS in cancel_post: the slot is
     * read out before another caller may claim and overwrite it. */
    tr_store_release(&fifo->claimed, 0);
    /* -TR_ECLOSED (already exited) needs nothing.  -TR_ENOMEM loses the
     * request, as it would for a caller in normal context; retrying here
     * would stall every timer behind an allocation that keeps failing. */
    (void)tr__actor_request_cancel(a, 0);
    tr_actor_release(a);
    fifo = next;
  }
}

int tr_actor_cancel_soon(tr_actor_t *a) {
  if (!a)
    return -TR_EINVAL;
  int saved_errno = errno; /* a signal handler must not clobber it */
  /* Acquire pairs with the release fetch_or in tr__reactor_start: with the
   * gate seen open, rx.wake.fd is the live eventfd.  Counting ourselves in
   * the same operation keeps stop from closing it until our exit below. */
  uint32_t gate = __atomic_fetch_add(&cs.gate, 1, __ATOMIC_ACQUIRE);
  int rc;
  if (!(gate & GATE_OPEN)) {
    rc = -TR_ENORUNTIME;
  } else if (tr_actor_exited(a)) {
    rc = -TR_ECLOSED;
  } else if ((rc = cancel_post(a)) == 0) {
    uint64_t one = 1;
    /* Fails only if the counter would overflow: it is readable then. */
    (void)!write(rx.wake.fd, &one, sizeof(one));
  }
  /* Release pairs with the acquire load in cancel_gate_close: our use of
   * the slot and the fd happen before stop drains and closes them. */
  __atomic_fetch_sub(&cs.gate, 1, __ATOMIC_RELEASE);
  errno = saved_errno;
  return rc;
}

/* Refuses new requests, then waits for the calls already inside.  They
 * never block (two atomics and a write), so this is a short spin; a signal
 * handler interrupting this thread finishes before the spin resumes. */
static void cancel_gate_close(void) {
  /* Relaxed: the gate word's read-modify-writes are totally ordered, so a
   * call either counted itself before this (and is waited for) or sees
   * the gate closed. */
  __atomic_fetch_and(&cs.gate, ~GATE_OPEN, __ATOMIC_RELAXED);
  /* Acquire pairs with the release fetch_sub in tr_actor_cancel_soon. */
  while (tr_load_acquire(&cs.gate) != 0)
    sched_yield();
}

static void on_wake(watcher_t *w, uint32_t events) {
  (void)events;
  uint64_t count;
  /* Read first, then drain: a request pushed after the exchange in
   * cancel_drain writes the eventfd after this read, so the reactor wakes
   * again for it instead of losing it. */
  (void)!read(w->fd, &count, sizeof(count));
  cancel_drain();
}

static void *reactor_main(void *arg) {
  (void)arg;
  struct epoll_event evs[64];
  /* Acquire pairs with the release store in tr__reactor_stop. */
  while (!tr_load_acquire(&rx.quit)) {
    int n = epoll_wait(rx.epfd, evs, (int)(sizeof(evs) / sizeof(evs[0])), -1);
    if (n < 0) {
      /* Signals are blocked on this thread, but a debugger or a stop
       * signal can still interrupt the wait. */
      TR_ASSERT(errno == EINTR);
      continue;
    }
    for (int i = 0; i < n; i++) {
      watcher_t *w = evs[i].data.ptr;
      w->on_ready(w, evs[i].events);
    }
  }
  return NULL;
}

static int os_error(int err) {
  return (err == ENOMEM || err == EMFILE || err == ENFILE) ? -TR_ENOMEM : -TR_EIO;
}

static int watch(watcher_t *w) {
  struct epoll_event ev;
  memset(&ev, 0, sizeof(ev));
  ev.events = EPOLLIN;
  ev.data.ptr = w;
  return epoll_ctl(rx.epfd, EPOLL_CTL_ADD, w->fd, &ev) == 0 ? 0 : os_error(errno);
}

static void close_fds(void) {
  if (rx.timer.fd >= 0)
    close(rx.timer.fd);
  if (rx.wake.fd >= 0)
    close(rx.wake.fd);
  if (rx.epfd >= 0)
    close(rx.epfd);
  rx.timer.fd = rx.wake.fd = rx.epfd = -1;
}

int tr__reactor_start(void) {
  tr_store_relaxed(&rx.quit, 0); /* no reactor thread exists yet */
  rx.epfd = epoll_create1(EPOLL_CLOEXEC);
  rx.wake.fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  rx.timer.fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  int rc = 0;
  if (rx.epfd < 0 || rx.wake.fd < 0 || rx.timer.fd < 0)
    rc = os_error(errno);
  if (rc == 0)
    rc = watch(&rx.wake);
  if (rc == 0)
    rc = watch(&rx.timer);
  if (rc == 0) {
    /* The thread inherits a full signal mask: process-directed signals go
     * to other threads, so no handler (user code) ever runs here. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int err = pthread_create(&rx.thread, NULL, reactor_main, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (err != 0)
      rc = err == EAGAIN ? -TR_ENOMEM : -TR_EIO;
    else
      (void)pthread_setname_np(rx.thread, "tr-reactor");
  }
  if (rc != 0) {
    close_fds();
    return rc;
  }
  pthread_mutex_lock(&rx.lock);
  TR_ASSERT(rx.len == 0 && rx.armed == NEVER);
  rx.open = 1;
  pthread_mutex_unlock(&rx.lock);
  /* Release pairs with the acquire fetch_add in tr_actor_cancel_soon:
   * rx.wake.fd is set before any caller can see the gate open. */
  __atomic_fetch_or(&cs.gate, GATE_OPEN, __ATOMIC_RELEASE);
  return 0;
}

void tr__reactor_stop(void) {
  /* Close: refuse new timers and cancel requests. */
  pthread_mutex_lock(&rx.lock);
  rx.open = 0;
  pthread_mutex_unlock(&rx.lock);
  cancel_gate_close();

  /* Stop: wake the thread and wait for it.  The release store pairs with
   * the acquire load in reactor_main, which runs after the eventfd write
   * below has woken it. */
  tr_store_release(&rx.quit, 1);
  uint64_t one = 1;
  /* Only fails if the counter would overflow: then it is readable anyway. */
  (void)!write(rx.wake.fd, &one, sizeof(one));
  pthread_join(rx.thread, NULL);

  /* Free: take every pending timer.  A concurrent tr_timer_cancel either
   * took its entry before this or finds nothing after it. */
  pthread_mutex_lock(&rx.lock);
  tr_timer_t **heap = rx.heap;
  size_t len = rx.len;
  free(rx.table);
  rx.heap = rx.table = NULL;
  rx.len = rx.cap = rx.tlen = rx.tcap = 0;
  rx.armed = NEVER;
  pthread_mutex_unlock(&rx.lock);
  for (size_t i = 0; i < len; i++) {
    /* Freed, not dead-lettered: nobody was going to receive them. */
    tr_msg_free(heap[i]->msg);
    tr_actor_release(heap[i]->to);
    free(heap[i]);
  }
  free(heap);
  /* Requests that arrived after the thread's last wake-up: every actor has
   * exited, so this only drops their references. */
  cancel_drain();
  close_fds();
}
