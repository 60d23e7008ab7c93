/*
 * The reactor thread and the timer heap.
 *
 * One thread per runtime blocks in epoll_wait with no timeout (or a 1 ms
 * one while workers poll the fd watches: see "Workers poll too").  The epoll
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
 *
 * Fd watches (tr__fd_watch).  An actor's fd joins the epoll set as one
 * more watcher, one-shot (EPOLLONESHOT): the kernel disarms it when it
 * reports it, so the reactor sends exactly one message per arming and
 * never spins on an fd the owner has not drained yet; the owner re-arms
 * with EPOLL_CTL_MOD from its own turn (epoll_ctl is thread-safe, so that
 * needs no hand-over).  An edge watch (tr__fd_watch_edge) is registered
 * EPOLLET instead and never re-armed (EPOLLOUT only while its owner asks:
 * tr__fd_want_out, an EPOLL_CTL_MOD on and off around a blocked write,
 * from the owner's turn as a re-arm): a `pending` flag, set by whoever
 * turns an event into the notification and cleared by the owner when it
 * begins handling it, keeps it to one message per turn of the owner.  The
 * reactor reads only fields fixed at creation (fd, tag, id, owner, edge)
 * plus the atomic `dead` and `pending` flags.
 *
 * Removal is where the races are: when the owner unwatches, the reactor
 * may hold an event for the watch, taken by an epoll_wait that ran before
 * the removal, in the array it is working through.  So unwatch does the
 * EPOLL_CTL_DEL itself, synchronously (the fd may be closed as soon as it
 * returns, and no epoll_wait that starts after the DEL reports the fd),
 * sets `dead`, moves the watch from the live list to the doomed list and
 * writes the wake eventfd.  The reactor frees doomed watches (dropping
 * their owner references) only at the end of a loop iteration, after every
 * event of that epoll_wait: an event for a doomed watch can only come from
 * an epoll_wait that had started before its DEL, which is that iteration
 * or an earlier one, never a later one.  `dead` lets the reactor skip
 * most such stale events; one that got past the check before the owner
 * set it arrives as a late notification, which the owner recognises by
 * the watch id in its cid.  Both lists are under `fw.lock`, and stop
 * frees what is left on them after the thread has been joined.
 *
 * The reactor allocates each notification (tr_msg_new off the workers is
 * the malloc path).  Should that fail, the watch is put on an "owed" list
 * with its events, and epoll_wait sleeps at most OWED_RETRY_MS until the
 * debt is paid: a lost notification would leave the owner waiting on a
 * disarmed fd forever.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
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
#include "runtime/sched/worker.h"

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
/* How long the reactor waits before retrying notifications it could not
 * allocate (see "Fd watches" in the file comment). */
#define OWED_RETRY_MS 10

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
static void on_io(watcher_t *w, uint32_t events);

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
  watcher_t io;          /* the fd watches' epoll set (io.epfd) */
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
    .io = {.fd = -1, .on_ready = on_io},
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

/* An actor's fd (see "Fd watches" in the file comment).  `base` comes
 * first: epoll hands the reactor a watcher_t pointer. */
struct tr_fd_watch {
  watcher_t base;
  uint32_t tag;
  uint32_t dead; /* atomic: set by unwatch, read by the reactor */
  /* An edge watch (tr__fd_watch_edge): PENDING while a notification is
   * on its way that the owner has not begun handling, with the events of
   * every readiness reported meanwhile (atomic; see claim_notice). */
  uint8_t edge;
  uint8_t out; /* an edge watch: EPOLLOUT is watched too (the owner's; tr__fd_want_out) */
  uint32_t pending;
  uint64_t id;
  tr_actor_t *to; /* owned reference until freed */
  /* Under fw.lock: the live list (registered) or, after unwatch, the
   * doomed list (prev unused there). */
  struct tr_fd_watch *prev, *next;
  /* Reactor thread only: events owed for lack of memory, and the owed
   * list link. */
  uint32_t owed;
  int on_owed;
  struct tr_fd_watch *owed_next;
};

static struct {
  /* Static, never destroyed, like rx.lock: a call without a runtime can
   * always take it and find `open` false. */
  pthread_mutex_t lock;
  /* Under lock: ------------------------------------------------------- */
  int open;              /* between start and stop */
  tr_fd_watch_t *live;   /* registered watches */
  tr_fd_watch_t *doomed; /* unwatched, waiting to be freed by the reactor */
  size_t count;          /* live + doomed */
  uint64_t last_id;      /* process-wide: ids are never reused */
  /* atomic: doomed != NULL, so that the reactor's check on every loop
   * iteration takes no lock.  Stored (release) under lock by unwatch,
   * paired with the acquire load in reap_doomed. */
  uint32_t has_doomed;
  /* Reactor thread only. */
  tr_fd_watch_t *owed;
} fw = {.lock = PTHREAD_MUTEX_INITIALIZER};

int64_t tr_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * NSEC_PER_SEC + ts.tv_nsec;
}

int64_t tr__now_coarse(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
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

int64_t tr__deadline_after(int64_t ns) {
  int64_t now = tr_now();
  return ns > INT64_MAX - now ? INT64_MAX : now + ns;
}

int tr_send_after(tr_actor_t *to, tr_msg_t *msg, int64_t delay_ns, uint64_t *timer_id) {
  return tr__timer_post(tr__deadline_after(delay_ns > 0 ? delay_ns : 0), to, msg, timer_id);
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

/* ---- fd watches ---------------------------------------------------------------- */

static int os_error(int err);

/*
 * Workers poll too (Go's netpoller, in short).  The fd watches have an
 * epoll set of their own, io.epfd, and two kinds of thread take events
 * from it; one-shot arming hands each readiness to exactly one of them:
 *  - a spinning worker, between its looks for work (poll_io): the answer
 *    to what an actor just wrote is picked up by a core that is awake
 *    anyway, and the actor it wakes runs on that core at once, instead of
 *    waking the reactor thread, which costs tens of microseconds on a
 *    small VM and then a hand-over to a worker; and a busy worker, between
 *    turns, when nobody else has polled for a while (busy_io, see "The
 *    tick");
 *  - the reactor, when no worker may be polling.  io.epfd sits in the
 *    reactor's own set, one-shot: armed, it wakes the reactor, which takes
 *    everything ready (io_drain).  It is re-armed only when the last
 *    awake worker goes to sleep (parking; or by the reactor when it sees
 *    every worker asleep), not after every event: while workers spin, a reactor woken
 *    for every packet would be a second thread per message competing for
 *    the cores.  While it is disarmed, the reactor ticks: it wakes now
 *    and then and drains io.epfd itself if no worker has polled since its
 *    last look (all of them inside long turns).
 *
 * A worker may hold an event of a watch that is being removed, as the
 * reactor may (see "Removal" above).  So each worker's io.seq is odd while
 * it polls (or arms), and the reactor frees doomed watches only after a
 * grace period: every worker that was inside when the watches were taken
 * off the set has left (a poll that starts later cannot report them).
 * Stop closes io.open first and waits the same way before closing fds.
 *
 * The tick.  Its wait starts at IO_TICK_MS and doubles, up to
 * IO_TICK_MAX_MS, with each look that finds that the workers have polled
 * meanwhile; a look that finds none has polled drains, and the wait is
 * IO_TICK_MS again.  Workers poll while they spin, and a busy worker
 * polls too, between two turns: with its look at the inject queue (every
 * 61 searches for work: busy_io) it polls if no worker has polled for
 * IO_BUSY_NS.  So the tick takes readiness only
 * while every worker is inside a long turn (when nothing could run the
 * owner anyway, except a worker the drain wakes), and backs off to one
 * look every 64 ms otherwise.  Its wake-ups are what it must avoid: each
 * takes a core from a spinning worker, and tcp_rpc's slowest calls came
 * from them (-w 1, 4 runs each: the 99th percentile went from 44-71 us
 * with a 1 ms tick to 25-47 us with one backing off to 8 ms; then, with
 * the busy workers' polls and the back-off to 64 ms instead of 4 ms, -w 2,
 * 8 interleaved triples: p99 49.7 -> 31.6 us, calls over 40 us 1250 ->
 * 842 per 100k, the mean call 10.8 % -> 6.8 % over the median).  The
 * price: readiness that comes while every worker is inside a long turn
 * waits up to twice IO_TICK_MAX_MS (one look that still sees their last
 * polls, then the one that drains) instead of 1 ms, where before the
 * busy polls it waited up to 8 ms; Go's netpoller waits up to 10 ms
 * (sysmon) in that case.  With short turns it waits about IO_BUSY_NS
 * (100 us) plus up to 61 of them, where the tick made it wait 1 ms.
 *
 * Probing.  Found by epoll_wait, an answer costs its receiver two system
 * calls (the epoll_wait that reports it, then the owner's read); the raw
 * floor of an exchange that spins on the read itself is a third faster
 * (tools/bench/io_floor.c: spin against epoll_et).  So an owner that has
 * just read data marks its watch hot on the worker running it
 * (tr__fd_hot), and while that worker spins, until IO_PROBE_NS after its
 * first probe of the watch since that read (the read itself reads no clock:
 * tcp_rpc would pay 25 ns on every message), it probes the watch instead
 * of polling: it sends the owner a notification
 * as if epoll had reported EPOLLIN (claimed like one: claim_notice, so
 * never a second while one is pending), and the owner's read is the poll.
 * A probe counts as work found (poll_fds returns 1): the spinner runs the
 * owner at once, where after a poll that found nothing it yields first.
 * Every IO_EPOLL_EVERY-th round still asks epoll_wait, for every other fd
 * (and yields when that finds nothing), so another fd waits at most that
 * many rounds (each a probe, a turn of its owner and a read: tens of
 * microseconds for the 64) unless another worker polls first.
 * A probe that finds nothing costs what a poll that finds nothing costs
 * (a system call, plus a message and a turn of the owner); a watch left
 * quiet for IO_PROBE_NS cools and is no longer probed, and a worker probes
 * only while it spins, so an idle runtime still sleeps.  Measured, tcp_rpc
 * between two processes (-w 1, 10 interleaved pairs): median round trip
 * 13.0 -> 11.9 us, 68k -> 75k round trips/s.  Then with the epoll_wait
 * every 64th round instead of every 4th, and no yield between a probe and
 * the owner's read (tcp_rpc, 30k calls, 10 to 12 interleaved runs each,
 * paired with the old rule): -w 2 +4 % and +10 % (8/10 and 10/10 runs
 * better, in two phases of the host), -w 1 +3 % (9/12); tcp_stream -w 2
 * 3.6-3.9 M -> 4.6-4.8 M messages/s.  Either change alone was worse on
 * one of the two: epoll_wait less often but a yield after each probe lost
 * 12 % on tcp_stream, and no yield with epoll_wait every 4th round lost
 * 10 % on tcp_rpc (twice the epoll_waits per call: rounds got shorter).
 * An epoll_wait that finds the hot fd ready costs as a probe does, but
 * each one on a socket the peer is writing to slows the exchange more
 * than its own system call (measured, not explained).  The hot watch is a pointer
 * in the worker (tr_worker_t.io_hot), read only inside a poll (io_enter):
 * tr__fd_unwatch clears it from every worker before the watch is doomed,
 * and the grace period covers a poll that read it just before.
 */
#define IO_TICK_MS 1
#define IO_TICK_MAX_MS 64
#define IO_PROBE_NS 200000LL /* as the scheduler's spin bound (TR_SPIN_NS) */
#define IO_EPOLL_EVERY 64
#define IO_BUSY_NS 100000LL /* a busy worker polls when nobody has for this long */
static struct {
  int epfd;
  uint32_t open;                /* atomic: workers may poll and arm */
  uint32_t watches;             /* atomic: live watches, a hint for workers */
  uint32_t armed;               /* atomic: io.epfd's entry in rx.epfd is armed */
  uint32_t seq[TR_MAX_WORKERS]; /* atomic: odd while worker i is inside */
  uint64_t seen;                /* reactor thread: sum of seq at its last look */
  int tick_ms;                  /* reactor thread: the wait until its next look */
  /* atomic (relaxed): tr__reactor_stats's counters */
  uint64_t polled, drained, ticked, wakeups, probed, ticks, resets;
} io = {.epfd = -1, .tick_ms = IO_TICK_MS};

void tr__reactor_stats(tr_reactor_stats_t *out) {
  out->polled = tr_load_relaxed(&io.polled);
  out->drained = tr_load_relaxed(&io.drained);
  out->ticked = tr_load_relaxed(&io.ticked);
  out->wakeups = tr_load_relaxed(&io.wakeups);
  out->probed = tr_load_relaxed(&io.probed);
  out->ticks = tr_load_relaxed(&io.ticks);
  out->resets = tr_load_relaxed(&io.resets);
}

/* Waits until every worker inside a poll now has left it. */
static void io_grace(void) {
  int n = tr__rt.nworkers;
  uint32_t snap[TR_MAX_WORKERS];
  for (int i = 0; i < n; i++)
    snap[i] = tr_load_seqcst(&io.seq[i]);
  for (int i = 0; i < n; i++)
    if (snap[i] & 1u)
      while (tr_load_seqcst(&io.seq[i]) == snap[i])
        sched_yield();
}

/* Sends w's owner the notification m for `events` (claimed:
 * claim_notice).  Any thread that took the events. */
static void send_notice(tr_fd_watch_t *w, tr_msg_t *m, uint32_t events) {
  m->tag = w->tag;
  m->u64 = events;
  m->cid = w->id;
  m->ptr = w;
  m->flags_ |= TR_MSGF_NOTICE;
  tr_actor_t *a = w->to;
  /* As in deliver: keep a limited mailbox's count balanced, never refuse
   * (the fd is disarmed: a refused notification would never come again). */
  if (a->limit)
    tr_faa_relaxed(&a->qlen, 1);
  /* An exited owner drops it (a notice: no dead letter). */
  (void)tr__actor_push(a, m);
}

/* Sends w's owner a notification for `events` (claimed: claim_notice),
 * or records the debt when no message can be had.  Reactor thread. */
static void notify(tr_fd_watch_t *w, uint32_t events) {
  tr_msg_t *m = NULL;
  if (tr_msg_new(&m) != 0) {
    w->owed |= events;
    if (!w->on_owed) {
      w->on_owed = 1;
      w->owed_next = fw.owed;
      fw.owed = w;
    }
    return;
  }
  send_notice(w, m, events);
}

/* Whether an event of w becomes a notification: always for a one-shot
 * watch (the kernel reports one event per arming); for an edge watch only
 * when none is pending, i.e. the owner has begun handling the last one
 * (tr__fd_begin_io), so that a stream of packets makes one message per
 * turn of the owner, not one per packet.  The events are kept either way,
 * for tr__fd_begin_io to report: an edge that made no message (a FIN
 * behind data, say) comes again only if something else happens.  Any
 * thread that took the event. */
#define PENDING 0x80000000u /* above every EPOLL* event bit we ask for */
static int claim_notice(tr_fd_watch_t *w, uint32_t events) {
  return !w->edge || !(__atomic_fetch_or(&w->pending, PENDING | events, __ATOMIC_ACQ_REL) & PENDING);
}

static void on_fd_ready(watcher_t *base, uint32_t events) {
  tr_fd_watch_t *w = (tr_fd_watch_t *)base;
  /* Acquire pairs with the release store in tr__fd_unwatch.  Only an
   * optimisation: an event taken before the DEL may pass this check just
   * before the owner sets the flag, and the owner tolerates that one. */
  if (tr_load_acquire(&w->dead) || !claim_notice(w, events))
    return;
  notify(w, events);
}

static int fd_ctl(int op, tr_fd_watch_t *w, uint32_t events);

/* Marks the calling worker inside (odd) or outside (even) io.epfd's use;
 * returns 0 when the caller is no worker (then it must not go in). */
static uint32_t *io_enter(void) {
  tr_worker_t *wk = tr__worker_self();
  if (!wk)
    return NULL;
  uint32_t *seq = &io.seq[wk->index];
  tr_faa_seqcst(seq, 1); /* odd: inside (pairs with io_grace) */
  return seq;
}

/* Probes wk's hot watch (see "Probing" above), unless this round asks
 * epoll_wait, the watch has cooled, or a notification of it is pending
 * anyway.  Returns 1 when it probed.  Inside a poll (io_enter). */
static int probe(tr_worker_t *wk) {
  tr_fd_watch_t *w = __atomic_load_n(&wk->io_hot, __ATOMIC_ACQUIRE);
  if (!w || ++wk->io_round % IO_EPOLL_EVERY == 0)
    return 0;
  int64_t now = tr_now();
  if (wk->io_hot_until == 0) {
    wk->io_hot_until = now + IO_PROBE_NS; /* the first probe since the read */
  } else if (now >= wk->io_hot_until) {
    /* Only tr__fd_unwatch races with this (it clears it too). */
    (void)__atomic_compare_exchange_n(&wk->io_hot, &w, NULL, 0, __ATOMIC_RELAXED,
                                      __ATOMIC_RELAXED);
    return 0;
  }
  if (tr_load_acquire(&w->dead) || (tr_load_relaxed(&w->pending) & PENDING))
    return 0;
  tr_msg_t *m = NULL;
  if (tr_msg_new(&m) != 0)
    return 0;
  if (!claim_notice(w, EPOLLIN)) {
    tr_msg_free(m);
    return 0;
  }
  send_notice(w, m, EPOLLIN);
  tr_faa_relaxed(&io.probed, 1);
  return 1;
}

/* A worker's poll (see io above): a spinning one's (may_probe), or a busy
 * one's, which asks epoll_wait.  Returns the events it handled, or 1
 * after a probe (a notification sent: work, as an event is; see
 * "Probing"). */
static int poll_fds(int may_probe) {
  if (tr_load_relaxed(&io.watches) == 0)
    return 0; /* no sockets: no system call */
  uint32_t *seq = io_enter();
  if (!seq)
    return 0;
  int n = 0, probed = 0;
  if (tr_load_seqcst(&io.open) && !(may_probe && (probed = probe(tr__worker_self())))) {
    struct epoll_event evs[16];
    n = epoll_wait(io.epfd, evs, (int)(sizeof(evs) / sizeof(evs[0])), 0);
    for (int i = 0; i < n; i++) {
      tr_fd_watch_t *w = (tr_fd_watch_t *)evs[i].data.ptr;
      if (tr_load_acquire(&w->dead) || !claim_notice(w, evs[i].events)) /* as in on_fd_ready */
        continue;
      tr_msg_t *m = NULL;
      if (tr_msg_new(&m) != 0) {
        /* The owed list is the reactor's: arm the watch again instead, so
         * the readiness is reported again (to whoever looks next; a MOD
         * reports a ready fd whether one-shot or edge). */
        if (w->edge)
          tr_store_seqcst(&w->pending, 0); /* the MOD reports it again */
        /* An edge watch gets EPOLLOUT too, whatever its owner asked
         * (tr__fd_want_out; reading that here would race with it): a
         * notification too many is "try again", one too few a write that
         * waits for ever. */
        (void)fd_ctl(EPOLL_CTL_MOD, w,
                     w->edge ? EPOLLIN | EPOLLOUT : evs[i].events & (EPOLLIN | EPOLLOUT));
        continue;
      }
      send_notice(w, m, evs[i].events);
    }
  }
  tr_faa_seqcst(seq, 1); /* even: left */
  if (probed)
    return 1;
  if (n <= 0)
    return 0;
  tr_faa_relaxed(&io.polled, (uint64_t)n);
  return n;
}

static int poll_io(void) { return poll_fds(1); }

/* A busy worker's look (tr_sched_io_t.busy; see "The tick" above): polls
 * when no worker has polled for IO_BUSY_NS, i.e. while every worker runs
 * actors (io.seq moves by 2 per poll; this worker's last look saw their
 * sum, and since when it has not moved).  By time, not at every look:
 * with every worker busy for good, a poll at every look is an epoll_wait
 * every few microseconds (tcp_stream under strace: 104k of them against
 * 80k so, and 85k with the tick alone). */
static void busy_io(void) {
  tr_worker_t *wk = tr__worker_self();
  if (tr_load_relaxed(&io.watches) == 0 || !wk)
    return;
  uint64_t sum = 0;
  for (int i = 0; i < tr__rt.nworkers; i++)
    sum += tr_load_relaxed(&io.seq[i]);
  int64_t now = tr_now();
  if (sum != wk->io_seen) {
    wk->io_seen = sum;
    wk->io_seen_at = now;
  } else if (now - wk->io_seen_at >= IO_BUSY_NS) {
    (void)poll_fds(0);
    wk->io_seen = sum + 2;
    wk->io_seen_at = now;
  }
}

/* Arms io.epfd's entry in the reactor's set, unless it is armed already.
 * Any thread; a worker only inside (io_enter), so that stop cannot close
 * the fds under it. */
static void io_arm(void) {
  uint32_t zero = 0;
  if (tr_load_relaxed(&io.armed) || !tr_cas_seqcst(&io.armed, &zero, 1))
    return;
  struct epoll_event ev;
  memset(&ev, 0, sizeof(ev));
  ev.events = EPOLLIN | EPOLLONESHOT;
  ev.data.ptr = &rx.io;
  /* On failure the reactor's tick keeps draining: readiness is late, not
   * lost. */
  if (epoll_ctl(rx.epfd, EPOLL_CTL_MOD, io.epfd, &ev) != 0)
    tr_store_seqcst(&io.armed, 0);
}

/* Whether every worker has its sleeper bit set (seq_cst). */
static int all_asleep(void) {
  int n = tr__rt.nworkers;
  uint64_t all = n >= 64 ? ~0ull : (1ull << n) - 1;
  return (tr_load_seqcst(&tr__rt.sleepers) & all) == all;
}

/* A worker goes to sleep (tr_sched_io_t.parking). */
static void parking_io(void) {
  if (tr_load_relaxed(&io.watches) == 0 || tr_load_relaxed(&io.armed))
    return;
  /* Only the last worker to park arms: while another is awake it polls
   * (spinning, or between turns: busy_io), and the tick drains if it
   * does not.  Armed while a worker spins, the reactor was woken by the
   * next packet, took it (a foreign push: it woke the parked worker,
   * which spun and parked and armed again), and took a core from the
   * spinner each time: tcp_rpc -w 2, 5-7k context switches per 100k
   * calls, 1.7-2.3k without.  Our bit is set (worker_main sets it before
   * parking, seq_cst): of two workers parking at once, at least one sees
   * both bits and arms. */
  if (!all_asleep())
    return;
  uint32_t *seq = io_enter();
  if (!seq)
    return;
  if (tr_load_seqcst(&io.open))
    io_arm();
  tr_faa_seqcst(seq, 1);
}

static const tr_sched_io_t sched_io = {.poll = poll_io, .parking = parking_io, .busy = busy_io};

/* Takes every event io.epfd has now; returns how many.  Reactor thread. */
static uint64_t io_drain(void) {
  uint64_t total = 0;
  struct epoll_event evs[64];
  int n;
  do {
    n = epoll_wait(io.epfd, evs, (int)(sizeof(evs) / sizeof(evs[0])), 0);
    for (int i = 0; i < n; i++) {
      watcher_t *w = evs[i].data.ptr;
      w->on_ready(w, evs[i].events);
    }
    if (n > 0)
      total += (uint64_t)n;
  } while (n == (int)(sizeof(evs) / sizeof(evs[0])));
  if (total)
    tr_faa_relaxed(&io.drained, total);
  return total;
}

/* io.epfd's entry fired, and the kernel disarmed it. */
static void on_io(watcher_t *base, uint32_t events) {
  (void)base;
  (void)events;
  /* Before the drain: a worker parking from now on arms it again. */
  tr_store_seqcst(&io.armed, 0);
  (void)io_drain();
}

/* The reactor's look while io.epfd's entry is disarmed, at the end of
 * every loop iteration (at least every io.tick_ms): with every worker
 * asleep it arms the entry (a worker that parked just before the entry
 * fired saw it armed and left it); otherwise, when no worker has polled
 * since the last look, it drains io.epfd itself. */
static void io_tick(void) {
  if (tr_load_seqcst(&io.armed))
    return;
  int n = tr__rt.nworkers;
  if (all_asleep()) {
    io_arm();
    io.tick_ms = IO_TICK_MS;
    tr_faa_relaxed(&io.resets, 1);
    return;
  }
  uint64_t sum = 0;
  for (int i = 0; i < n; i++)
    sum += tr_load_relaxed(&io.seq[i]);
  if (sum == io.seen) {
    uint64_t n_ticked = io_drain();
    if (n_ticked != 0)
      tr_faa_relaxed(&io.ticked, n_ticked);
    io.tick_ms = IO_TICK_MS;
    tr_faa_relaxed(&io.resets, 1);
  } else if (io.tick_ms < IO_TICK_MAX_MS) {
    io.tick_ms *= 2;
  }
  io.seen = sum;
}

/* Retries the notifications that could not be allocated.  Reactor thread,
 * after the events of an iteration and before reap_doomed (which takes
 * doomed watches off the owed list). */
static void pay_owed(void) {
  tr_fd_watch_t *w = fw.owed;
  fw.owed = NULL;
  while (w) {
    tr_fd_watch_t *next = w->owed_next;
    uint32_t ev = w->owed;
    w->owed = 0;
    w->on_owed = 0;
    w->owed_next = NULL;
    if (!tr_load_acquire(&w->dead)) /* pairs as in on_fd_ready */
      notify(w, ev);
    w = next;
  }
}

static void free_watch(tr_fd_watch_t *w) {
  if (w->on_owed) {
    tr_fd_watch_t **p = &fw.owed;
    while (*p != w)
      p = &(*p)->owed_next;
    *p = w->owed_next;
  }
  tr_actor_release(w->to);
  free(w);
}

/* Frees the watches removed so far.  Reactor thread, at the end of a loop
 * iteration (see "Fd watches" in the file comment for why not sooner), or
 * stop after the join. */
static void reap_doomed(void) {
  /* Acquire pairs with the release store in tr__fd_unwatch; the lock
   * below orders the list itself. */
  if (!tr_load_acquire(&fw.has_doomed))
    return;
  pthread_mutex_lock(&fw.lock);
  tr_fd_watch_t *w = fw.doomed;
  fw.doomed = NULL;
  tr_store_relaxed(&fw.has_doomed, 0); /* under the lock that orders it */
  pthread_mutex_unlock(&fw.lock);
  io_grace(); /* no worker still holds an event of these */
  size_t n = 0;
  while (w) {
    tr_fd_watch_t *next = w->next;
    free_watch(w);
    n++;
    w = next;
  }
  /* Counted down only now: a 0 from tr__fd_watch_count means every
   * notification for these watches has been sent. */
  pthread_mutex_lock(&fw.lock);
  fw.count -= n;
  tr_faa_relaxed(&io.watches, (uint32_t)-n);
  pthread_mutex_unlock(&fw.lock);
}

static int fd_ctl(int op, tr_fd_watch_t *w, uint32_t events) {
  struct epoll_event ev;
  memset(&ev, 0, sizeof(ev));
  ev.events = events | EPOLLRDHUP | (w->edge ? EPOLLET : EPOLLONESHOT);
  ev.data.ptr = &w->base;
  return epoll_ctl(io.epfd, op, w->base.fd, &ev);
}

static int fd_watch(int fd, tr_actor_t *to, uint32_t tag, int edge, tr_fd_watch_t **out) {
  if (out)
    *out = NULL;
  if (fd < 0 || !to || !out)
    return TR_ERROR(-TR_EINVAL, "fd watch: needs an fd (got %d), an actor and a result pointer",
                    fd);
  tr_fd_watch_t *w = calloc(1, sizeof(*w));
  if (!w)
    return TR_ERROR(-TR_ENOMEM, "no memory for an fd watch");
  w->base.fd = fd;
  w->base.on_ready = on_fd_ready;
  w->tag = tag;
  w->edge = (uint8_t)edge;

  pthread_mutex_lock(&fw.lock);
  /* `open` implies rx.epfd is the live epoll fd (start sets it first) and
   * that tr__actors is valid, as in tr__timer_post. */
  if (!fw.open || tr_load_acquire(&tr__actors.stopping)) {
    pthread_mutex_unlock(&fw.lock);
    free(w);
    return TR_ERROR(-TR_ENORUNTIME, "fd %d not watched: no runtime is running (or it is stopping)",
                    fd);
  }
  /* Before the ADD: the reactor may notify (use `to` and the id) at once. */
  w->to = tr_actor_dup(to);
  w->id = ++fw.last_id;
  /* Under the lock, so stop cannot close the epoll fd meanwhile. */
  if (fd_ctl(EPOLL_CTL_ADD, w, EPOLLIN) != 0) {
    int err = errno;
    pthread_mutex_unlock(&fw.lock);
    tr_actor_release(w->to);
    free(w);
    /* ENOSPC: the user's max_user_watches; the rest (EEXIST, EPERM for
     * a regular file, EBADF) are the caller's fd. */
    int rc = (os_error(err) == -TR_ENOMEM || err == ENOSPC) ? -TR_ENOMEM : -TR_EINVAL;
    return TR_ERROR(rc, "fd %d not watched: epoll_ctl: %s", fd, strerror(err));
  }
  w->next = fw.live;
  if (fw.live)
    fw.live->prev = w;
  fw.live = w;
  fw.count++;
  tr_faa_relaxed(&io.watches, 1);
  pthread_mutex_unlock(&fw.lock);
  *out = w;
  return 0;
}

int tr__fd_watch(int fd, tr_actor_t *to, uint32_t tag, tr_fd_watch_t **out) {
  return fd_watch(fd, to, tag, 0, out);
}

int tr__fd_watch_edge(int fd, tr_actor_t *to, uint32_t tag, tr_fd_watch_t **out) {
  return fd_watch(fd, to, tag, 1, out);
}

uint32_t tr__fd_begin_io(tr_fd_watch_t *w) {
  /* seq_cst, before the owner's first read or write: an event harvested
   * after the I/O finds the flag clear (the kernel reports an edge after
   * the data that made it, and the syscalls order the rest). */
  if (!w || !w->edge)
    return 0;
  return __atomic_exchange_n(&w->pending, 0, __ATOMIC_SEQ_CST) & ~PENDING;
}

void tr__fd_hot(tr_fd_watch_t *w) {
  tr_worker_t *wk = tr__worker_self();
  if (!w || !w->edge || !wk)
    return;
  wk->io_hot_until = 0; /* set by the next probe (see "Probing") */
  __atomic_store_n(&wk->io_hot, w, __ATOMIC_RELEASE);
}

int tr__fd_want_out(tr_fd_watch_t *w, int on) {
  if (!w || !w->edge)
    return TR_ERROR(-TR_EINVAL, "fd want-out: %s", w ? "a one-shot watch (re-arm it instead)"
                                                     : "no watch");
  if (w->out == (on != 0))
    return 0;
  if (fd_ctl(EPOLL_CTL_MOD, w, on ? EPOLLIN | EPOLLOUT : EPOLLIN) != 0) {
    int err = errno;
    return TR_ERROR(os_error(err), "fd %d: EPOLLOUT not %s: epoll_ctl: %s", w->base.fd,
                    on ? "watched" : "dropped", strerror(err));
  }
  w->out = on != 0;
  return 0;
}

int tr__fd_rearm(tr_fd_watch_t *w, uint32_t events) {
  if (!w || w->edge || events == 0 || (events & ~(uint32_t)(EPOLLIN | EPOLLOUT)))
    return TR_ERROR(-TR_EINVAL,
                    "fd rearm: events 0x%x is not a non-empty subset of EPOLLIN|EPOLLOUT, or the "
                    "watch is an edge watch (never re-armed)",
                    events);
  if (fd_ctl(EPOLL_CTL_MOD, w, events) != 0) {
    int err = errno;
    int rc = os_error(err);
    return TR_ERROR(rc, "fd %d not re-armed: epoll_ctl: %s", w->base.fd, strerror(err));
  }
  return 0;
}

int tr__fd_unwatch(tr_fd_watch_t *w) {
  if (!w)
    return TR_ERROR(-TR_EINVAL, "fd unwatch: no watch");
  int fd = w->base.fd; /* w may be freed once the lock is dropped */
  /* First, synchronously: after this no epoll_wait that starts reports the
   * fd, and the caller may close it. */
  int err = fd_ctl(EPOLL_CTL_DEL, w, 0) == 0 ? 0 : errno;
  /* No worker probes it from now on (a poll inside already is waited for,
   * as one that took its event is). */
  for (int i = 0; w->edge && i < tr__rt.nworkers; i++) {
    tr_fd_watch_t *hot = w;
    (void)__atomic_compare_exchange_n(&tr__rt.workers[i].io_hot, &hot, NULL, 0, __ATOMIC_SEQ_CST,
                                      __ATOMIC_RELAXED);
  }
  /* Release pairs with the acquire loads in on_fd_ready and pay_owed. */
  tr_store_release(&w->dead, 1);
  pthread_mutex_lock(&fw.lock);
  TR_ASSERT(fw.open);
  if (w->prev)
    w->prev->next = w->next;
  else
    fw.live = w->next;
  if (w->next)
    w->next->prev = w->prev;
  w->prev = NULL;
  w->next = fw.doomed;
  fw.doomed = w;
  /* Release pairs with the acquire load in reap_doomed. */
  tr_store_release(&fw.has_doomed, 1);
  uint64_t one = 1;
  /* Under the lock: stop closes the eventfd only after clearing `open`
   * under it.  Fails only if the counter would overflow (it is readable
   * then). */
  (void)!write(rx.wake.fd, &one, sizeof(one));
  pthread_mutex_unlock(&fw.lock);
  if (err)
    return TR_ERROR(-TR_EIO, "fd %d: epoll_ctl DEL: %s (closed before unwatch?); watch removed", fd,
                    strerror(err));
  return 0;
}

uint64_t tr__fd_watch_id(const tr_fd_watch_t *w) { return w ? w->id : 0; }

size_t tr__fd_watch_count(void) {
  pthread_mutex_lock(&fw.lock);
  size_t n = fw.count;
  pthread_mutex_unlock(&fw.lock);
  return n;
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
    int timeout = fw.owed ? OWED_RETRY_MS : tr_load_relaxed(&io.armed) ? -1 : io.tick_ms;
    int n = epoll_wait(rx.epfd, evs, (int)(sizeof(evs) / sizeof(evs[0])), timeout);
    tr_faa_relaxed(&io.wakeups, 1);
    if (n == 0 && timeout > 0 && !fw.owed)
      tr_faa_relaxed(&io.ticks, 1);
    if (n < 0) {
      /* Signals are blocked on this thread, but a debugger or a stop
       * signal can still interrupt the wait. */
      TR_ASSERT(errno == EINTR);
      n = 0;
    }
    for (int i = 0; i < n; i++) {
      watcher_t *w = evs[i].data.ptr;
      w->on_ready(w, evs[i].events);
    }
    io_tick();
    pay_owed();
    /* Last: evs may hold events for watches removed meanwhile, and they
     * have all been handled now (see "Fd watches" in the file comment). */
    reap_doomed();
  }
  return NULL;
}

/* Out of memory is -TR_ENOMEM; anything else, out of fds included, is
 * -TR_EIO, whose message gives the OS error. */
static int os_error(int err) { return err == ENOMEM ? -TR_ENOMEM : -TR_EIO; }

static int watch(watcher_t *w, uint32_t events) {
  struct epoll_event ev;
  memset(&ev, 0, sizeof(ev));
  ev.events = events;
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
  if (io.epfd >= 0)
    close(io.epfd);
  rx.timer.fd = rx.wake.fd = rx.epfd = rx.io.fd = io.epfd = -1;
}

/* Records the failure of `what` (errno) for tr__reactor_start's caller. */
static int start_failed(const char *what, char *why, size_t len) {
  int err = errno;
  snprintf(why, len, "%s: %s", what, strerror(err));
  return os_error(err);
}

int tr__reactor_start(char *why, size_t len) {
  tr_store_relaxed(&rx.quit, 0); /* no reactor thread exists yet */
  rx.wake.fd = rx.timer.fd = rx.io.fd = io.epfd = -1;
  int rc = 0;
  if ((rx.epfd = epoll_create1(EPOLL_CLOEXEC)) < 0)
    rc = start_failed("epoll_create1", why, len);
  else if ((rx.wake.fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0)
    rc = start_failed("eventfd", why, len);
  else if ((rx.timer.fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)) < 0)
    rc = start_failed("timerfd_create", why, len);
  else if ((rx.io.fd = io.epfd = epoll_create1(EPOLL_CLOEXEC)) < 0)
    rc = start_failed("epoll_create1", why, len);
  if (rc == 0 && watch(&rx.wake, EPOLLIN) != 0)
    rc = start_failed("epoll_ctl", why, len);
  if (rc == 0 && watch(&rx.timer, EPOLLIN) != 0)
    rc = start_failed("epoll_ctl", why, len);
  if (rc == 0 && watch(&rx.io, EPOLLIN | EPOLLONESHOT) != 0) /* armed (see io) */
    rc = start_failed("epoll_ctl", why, len);
  io.seen = 0; /* before the thread that uses it */
  io.tick_ms = IO_TICK_MS;
  tr_store_seqcst(&io.armed, 1);
  if (rc == 0) {
    /* The thread inherits a full signal mask: process-directed signals go
     * to other threads, so no handler (user code) ever runs here. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int err = pthread_create(&rx.thread, NULL, reactor_main, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (err != 0) {
      rc = err == EAGAIN ? -TR_ENOMEM : -TR_EIO;
      snprintf(why, len, "pthread_create of the reactor: %s", strerror(err));
    } else
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
  pthread_mutex_lock(&fw.lock);
  TR_ASSERT(fw.count == 0 && !fw.live && !fw.doomed);
  fw.open = 1;
  pthread_mutex_unlock(&fw.lock);
  tr_store_seqcst(&io.open, 1); /* io.epfd is set: workers may poll */
  tr__sched_set_io(&sched_io);
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
  pthread_mutex_lock(&fw.lock);
  fw.open = 0;
  pthread_mutex_unlock(&fw.lock);
  tr__sched_set_io(NULL);
  tr_store_seqcst(&io.open, 0);
  io_grace(); /* no worker polls io.epfd from now on: it may be closed */
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
  /* Watches: the removed ones, then those still registered (their owners
   * have all exited).  The epoll fd goes with close_fds, and with it the
   * kernel's entries; the fds themselves are their owners'. */
  reap_doomed();
  fw.owed = NULL; /* only registered watches can be left on it */
  pthread_mutex_lock(&fw.lock);
  tr_fd_watch_t *w = fw.live;
  fw.live = NULL;
  fw.count = 0;
  pthread_mutex_unlock(&fw.lock);
  while (w) {
    tr_fd_watch_t *next = w->next;
    tr_actor_release(w->to);
    free(w);
    w = next;
  }
  close_fds();
}
