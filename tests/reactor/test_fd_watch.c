/*
 * The reactor's fd watches (runtime/reactor/reactor.h, tr__fd_watch): an
 * actor owns a non-blocking socket, the reactor tells it with one message
 * per arming that the socket is ready, and the actor does the I/O in its
 * own turn.  The owner in these tests is the test body itself, the root
 * actor's main task, receiving the notifications with tr_recv.
 *
 * What must hold: every byte arrives, in order, across many re-armings;
 * EOF is EPOLLIN|EPOLLRDHUP with read() == 0; EPOLLOUT comes once the peer
 * drains a full socket; unwatch racing with readiness (and with
 * notifications in flight) never touches freed memory, leaks nothing and
 * lets at most one notification through per watch, all of them before the
 * reactor has freed the watch; watches left at stop are freed with their
 * actor references.  TR_TEST's leak check (actors and messages) runs after
 * every test; ASan and TSan builds run the same tests.
 *
 * Waits are bounded by the body's deadline (TR_TEST_DEADLINE_NS) or by an
 * explicit one; no test sleeps to let a race settle.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define TR_TEST_WORKERS 2
#define TR_TEST_NO_DISCOVERY /* the tests count watches */
#include <tractor/testing.h>

#include "runtime/platform/atomic.h"
#include "runtime/reactor/reactor.h"
#include "runtime/sched/worker.h"

#define MS (1000 * 1000LL)
#define SEC (1000 * MS)

enum { TAG_FD = 7, TAG_SENTINEL = 8 };

/* Under TSan every access is instrumented: fewer rounds, same protocol. */
#ifdef TR_TSAN
#define RACE_CYCLES 300
#else
#define RACE_CYCLES 3000
#endif
#define MANY 1000

/* The byte at stream offset i: a pattern in which a lost, repeated or
 * reordered chunk shows. */
static uint8_t pattern(uint64_t i) { return (uint8_t)((i ^ (i >> 8) ^ (i >> 16)) * 31u + 7u); }

/* xorshift64: a fixed seed, so a failure reproduces. */
static uint64_t rnd(uint64_t *s) {
  uint64_t x = *s;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return *s = x;
}

static int nonblocking_pair(int sv[2]) {
  return socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv);
}

/* The next application message; fails the test on anything but an fd
 * notification or the sentinel. */
static int recv_msg(tr_msg_t **out) {
  tr_assert_rc(tr_recv(out), 0);
  tr_assert((*out)->tag == TAG_FD || (*out)->tag == TAG_SENTINEL, "unexpected tag %u", (*out)->tag);
  return 0;
}

/* Waits (a bounded poll: 1 ms steps, up to `ns`) until the reactor has
 * freed every watch, i.e. has sent every notification it ever will. */
static int wait_watches_freed(int64_t ns) {
  int64_t end = tr_now() + ns;
  while (tr__fd_watch_count() != 0) {
    tr_assert(tr_now() < end, "%zu watch(es) still not freed", tr__fd_watch_count());
    tr_assert_rc(tr_sleep(1 * MS), 0);
  }
  return 0;
}

/* errno right after a call, read on the thread that made it.  A task may
 * resume on another worker after any blocking call (tr_recv here), and
 * the compiler may keep errno's address from before (__errno_location is
 * a const function): reading errno in the test body after a tr_recv can
 * read another thread's (seen under TSan).  So the calls whose errno
 * matters go through these, which are never inlined. */
static __attribute__((noinline)) ssize_t read_errno(int fd, void *buf, size_t len, int *err) {
  ssize_t k = read(fd, buf, len);
  *err = k < 0 ? errno : 0;
  return k;
}

/* Sends until a send would block; returns its errno (EAGAIN expected). */
static __attribute__((noinline)) int send_until_blocked(int fd) {
  static uint8_t big[65536];
  while (send(fd, big, sizeof big, MSG_NOSIGNAL) > 0)
    ;
  return errno;
}

/* ---- 1. a stream, in order, and EOF ------------------------------------------ */

#define STREAM_BYTES (1u << 20)

struct writer {
  int fd;
  uint64_t seed;
  size_t total;
  int err; /* errno of a failed write, or 0 */
  /* Edge watches: every 4th chunk waits until the reader has read all
   * before it and seen EAGAIN (drained_at == bytes written), so that chunk
   * makes an edge of its own even where the reader is slower than the
   * writer (TSan), and the others race it. */
  int lockstep;
  uint64_t drained_at; /* atomic: the reader's position at its last EAGAIN */
};

/* Waits (yielding, 10 s at most) until the reader has drained pos bytes. */
static int wait_drained(struct writer *wr, uint64_t pos) {
  struct timespec t0, t;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  while (__atomic_load_n(&wr->drained_at, __ATOMIC_ACQUIRE) != pos) {
    clock_gettime(CLOCK_MONOTONIC, &t);
    if (t.tv_sec - t0.tv_sec > 10)
      return ETIMEDOUT;
    sched_yield();
  }
  return 0;
}

/* Writes STREAM_BYTES of the pattern to a blocking fd in chunks of
 * 1..65536 bytes.  MSG_NOSIGNAL: a reader that gave up (shut its end)
 * makes this fail with EPIPE instead of killing the process. */
static void *write_stream(void *arg) {
  struct writer *wr = arg;
  static __thread uint8_t chunk[65536];
  uint64_t pos = 0;
  for (unsigned c = 0; pos < wr->total; c++) {
    if (wr->lockstep && c % 4 == 3 && (wr->err = wait_drained(wr, pos)) != 0)
      return NULL;
    size_t n = (size_t)(rnd(&wr->seed) % sizeof(chunk)) + 1;
    if (n > wr->total - pos)
      n = wr->total - pos;
    for (size_t i = 0; i < n; i++)
      chunk[i] = pattern(pos + i);
    size_t off = 0;
    while (off < n) {
      ssize_t k = send(wr->fd, chunk + off, n - off, MSG_NOSIGNAL);
      if (k < 0) {
        wr->err = errno;
        return NULL;
      }
      off += (size_t)k;
    }
    pos += n;
  }
  return NULL;
}

static int writer_task(void *arg) { return tr_to_thread(write_stream, arg, NULL); }

/* The owner's loop: wait for a notification, read in varying sizes
 * checking every byte, re-arm; until the whole stream is in.  An edge
 * watch's owner begins its I/O instead of re-arming after it, and reads
 * until EAGAIN (its contract: data left unread makes no new edge). */
static int read_stream(tr_fd_watch_t *w, int fd, struct writer *wr, uint64_t *notes) {
  int edge = wr->lockstep;
  uint64_t id = tr__fd_watch_id(w), pos = 0, seed = 0x5eed;
  static uint8_t buf[65536]; /* not on the task's 64 KiB stack */
  while (pos < STREAM_BYTES) {
    tr_msg_t *m;
    tr_assert_rc(recv_msg(&m), 0);
    uint64_t cid = m->cid, ev = m->u64;
    void *ptr = m->ptr;
    uint32_t tag = m->tag;
    tr_msg_free(m);
    tr_assert_eq(tag, TAG_FD);
    tr_assert_eq(cid, id, "a notification for another watch");
    tr_assert(ptr == (void *)w);
    /* Only data makes these (an edge watch reports EPOLLOUT only when its
     * owner asks: tr__fd_want_out). */
    tr_assert(ev & EPOLLIN, "events 0x%x without EPOLLIN", (unsigned)ev);
    (*notes)++;
    tr__fd_begin_io(w);
    /* Until EAGAIN, or a budget of up to 128 KiB: a re-arm with data left
     * must fire again at once (a writer as fast as the reader could
     * otherwise keep one notification going for the whole stream). */
    size_t budget = edge ? SIZE_MAX : (size_t)(rnd(&seed) % (128 * 1024)) + 1, got = 0;
    while (got < budget) {
      size_t want = (size_t)(rnd(&seed) % sizeof(buf)) + 1;
      int err;
      ssize_t k = read_errno(fd, buf, want, &err);
      if (k < 0) {
        tr_assert(err == EAGAIN, "read: %s", strerror(err));
        __atomic_store_n(&wr->drained_at, pos, __ATOMIC_RELEASE);
        break;
      }
      tr_assert(k > 0, "EOF after %llu of %u bytes", (unsigned long long)pos, STREAM_BYTES);
      for (ssize_t i = 0; i < k; i++)
        tr_assert_eq(buf[i], pattern(pos + (uint64_t)i), "byte %llu",
                     (unsigned long long)(pos + (uint64_t)i));
      pos += (uint64_t)k;
      got += (size_t)k;
    }
    /* An edge watch's owner marks it hot, as a channel does: probes
     * (notifications that may find nothing) join the stream's. */
    if (edge && got)
      tr__fd_hot(w);
    if (!edge)
      tr_assert_rc(tr__fd_rearm(w, EPOLLIN), 0);
  }
  tr_assert_eq(pos, STREAM_BYTES);
  return 0;
}

static int stream_then_eof(int edge) {
  int sv[2];
  tr_assert_eq(nonblocking_pair(sv), 0);
  /* The writer's end blocks: it runs on a tr_to_thread thread. */
  tr_assert_eq(fcntl(sv[1], F_SETFL, 0), 0);
  tr_fd_watch_t *w;
  tr_assert_rc((edge ? tr__fd_watch_edge : tr__fd_watch)(sv[0], tr_self(), TAG_FD, &w), 0);
  tr_assert(tr__fd_watch_id(w) != 0);
  tr_assert_eq(tr__fd_watch_count(), 1);

  struct writer wr = {.fd = sv[1], .seed = 0xc0ffee, .total = STREAM_BYTES, .lockstep = edge};
  uint64_t notes = 0;
  tr_nursery_t *n;
  tr_assert_rc(tr_nursery_open(&n), 0);
  tr_check_rc(tr_nursery_spawn(n, writer_task, &wr, NULL), 0);
  int rc = read_stream(w, sv[0], &wr, &notes);
  tr_check_rc(rc, 0);
  if (rc != 0) /* unblock the writer: its sends fail with EPIPE */
    shutdown(sv[0], SHUT_RDWR);
  tr_assert_rc(tr_nursery_close(n), 0);
  tr_assert_rc(rc, 0);
  tr_assert_eq(wr.err, 0, "write: %s", strerror(wr.err));
  tr_assert(notes > 1, "the stream came in one notification: no re-arm was exercised");
  cr_log_info("%s watch: %llu notifications for %u bytes", edge ? "edge" : "one-shot",
              (unsigned long long)notes, STREAM_BYTES);

  /* EOF: the peer closes; the (re-armed) watch reports it.  An edge
   * watch may still have a notification for the last bytes on its way
   * (the loop took the data before its edge was harvested): skip those
   * that say nothing of the end. */
  close(sv[1]);
  uint64_t ev, cid;
  do {
    tr_msg_t *m;
    tr_assert_rc(recv_msg(&m), 0);
    ev = m->u64;
    cid = m->cid;
    tr_msg_free(m);
    tr_assert_eq(cid, tr__fd_watch_id(w));
    ev |= tr__fd_begin_io(w); /* an edge's events that came while pending */
  } while (edge && !(ev & EPOLLRDHUP));
  tr_assert((ev & (EPOLLIN | EPOLLRDHUP)) == (EPOLLIN | EPOLLRDHUP), "EOF as events 0x%x",
            (unsigned)ev);
  char c;
  tr_assert_eq(read(sv[0], &c, 1), 0);

  tr_assert_rc(tr__fd_unwatch(w), 0);
  close(sv[0]);
  tr_assert_rc(wait_watches_freed(5 * SEC), 0);
  return 0;
}

TR_TEST(fd_watch, stream_arrives_in_order_then_eof, .timeout = 60) {
  return stream_then_eof(0);
}

/* The same stream through an edge watch (tr__fd_watch_edge): no re-arm,
 * begin-I/O first, read until EAGAIN; not a byte lost at any edge. */
TR_TEST(fd_watch, edge_stream_arrives_in_order_then_eof, .timeout = 60) {
  return stream_then_eof(1);
}

/* A bounded look (ns) for a notification that must not come: *got_ev is
 * 0, or its events with bit 63 set when one came. */
static int no_notice_within(int64_t ns, uint64_t *got_ev) {
  tr_scope_t s;
  tr_msg_t *m = NULL;
  *got_ev = 0;
  tr_assert_rc(tr_move_on_after(&s, ns), 0);
  int rc = tr_recv(&m);
  tr_assert_rc(tr_scope_close(&s), 0);
  if (rc == 0) {
    *got_ev = m->u64 | (1ull << 63);
    tr_msg_free(m);
    return 0;
  }
  tr_assert_rc(rc, -TR_ECANCELED);
  return 0;
}

/* Three small writes on sv[0], each read at once by sv[1] (room comes
 * and goes), and no notification for sv[0]'s edge watch (`when` says in
 * which case, for the failure). */
static int no_notice_for_room(int sv[2], const char *when) {
  char buf[16];
  uint64_t ev;
  for (int i = 0; i < 3; i++) {
    tr_assert_eq(write(sv[0], "xyz", 3), 3);
    tr_assert_eq(read(sv[1], buf, sizeof buf), 3);
  }
  tr_assert_rc(no_notice_within(50 * MS, &ev), 0);
  tr_assert_eq(ev, 0, "a notification (events 0x%llx) %s", (unsigned long long)(ev & 0xffffffffu),
               when);
  return 0;
}

/* An edge watch's contract, step by step: one notification while one is
 * pending however much comes; the next readiness after tr__fd_begin_io
 * makes the next one; EPOLLOUT only while the owner asks for it
 * (tr__fd_want_out), after a write would block; EOF; no re-arm. */
TR_TEST(fd_watch, edge_one_notice_until_begin_io, .timeout = 60) {
  int sv[2];
  tr_assert_eq(nonblocking_pair(sv), 0);
  tr_fd_watch_t *w;
  tr_assert_rc(tr__fd_watch_edge(sv[0], tr_self(), TAG_FD, &w), 0);
  uint64_t id = tr__fd_watch_id(w), ev;
  tr_msg_t *m;

  /* Registered writable, but room to write is not watched: nothing. */
  tr_assert_rc(no_notice_within(50 * MS, &ev), 0);
  tr_assert_eq(ev, 0, "a notification (events 0x%llx) for a writable socket nobody waits on",
               (unsigned long long)(ev & 0xffffffffu));
  /* Data: the first edge. */
  tr_assert_eq(write(sv[1], "abc", 3), 3);
  tr_assert_rc(recv_msg(&m), 0);
  tr_assert_eq(m->cid, id);
  tr_assert(m->u64 & EPOLLIN, "first events 0x%x", (unsigned)m->u64);
  tr_msg_free(m);
  /* Pending (no begin-I/O yet): two more writes, no further notification. */
  for (int i = 0; i < 2; i++)
    tr_assert_eq(write(sv[1], "abc", 3), 3);
  tr_assert_rc(no_notice_within(50 * MS, &ev), 0);
  tr_assert_eq(ev, 0, "a second notification (events 0x%llx) while one was pending",
               (unsigned long long)(ev & 0xffffffffu));
  /* Begin: the data that came meanwhile is read, and no edge is owed. */
  tr__fd_begin_io(w);
  char buf[64];
  tr_assert_eq(read(sv[0], buf, sizeof buf), 9);
  int err;
  ssize_t k = read_errno(sv[0], buf, sizeof buf, &err);
  tr_assert(k < 0 && err == EAGAIN, "read: %zd, %s", k, strerror(err));
  /* New data after the begin: a new notification. */
  tr_assert_eq(write(sv[1], "d", 1), 1);
  tr_assert_rc(recv_msg(&m), 0);
  tr_assert_eq(m->cid, id);
  tr_assert(m->u64 & EPOLLIN, "events 0x%x", (unsigned)m->u64);
  tr_msg_free(m);
  tr__fd_begin_io(w);
  tr_assert_eq(read(sv[0], buf, sizeof buf), 1);

  /* Writes that leave room make no notification: EPOLLOUT is not watched
   * (the acknowledgements of a connection in use would make one each). */
  static uint8_t big[65536];
  tr_assert_rc(no_notice_for_room(sv, "for room nobody asked for"), 0);
  /* Fill the socket until a write would block, then ask for room:
   * EPOLLOUT once the peer drains it. */
  err = send_until_blocked(sv[0]);
  tr_assert_eq(err, EAGAIN, "send: %s", strerror(err));
  tr_assert_rc(tr__fd_want_out(w, 1), 0);
  tr_assert_rc(tr__fd_want_out(w, 1), 0); /* again: no change */
  tr_assert_rc(no_notice_within(50 * MS, &ev), 0);
  tr_assert_eq(ev, 0, "room reported (events 0x%llx) while the socket is full",
               (unsigned long long)(ev & 0xffffffffu));
  while (read(sv[1], big, sizeof big) > 0)
    ;
  tr_assert_rc(recv_msg(&m), 0);
  tr_assert_eq(m->cid, id);
  tr_assert(m->u64 & EPOLLOUT, "events 0x%x without EPOLLOUT", (unsigned)m->u64);
  tr_msg_free(m);
  tr__fd_begin_io(w);
  /* The peer's reads freed room in several steps, each an EPOLLOUT edge:
   * those harvested after the begin-I/O make one more notification (with
   * nothing to do).  Take them until none comes. */
  for (;;) {
    tr_assert_rc(no_notice_within(50 * MS, &ev), 0);
    if (!ev)
      break;
    tr__fd_begin_io(w);
  }

  /* All written: room is not watched any more. */
  tr_assert_rc(tr__fd_want_out(w, 0), 0);
  tr_assert_rc(no_notice_for_room(sv, "after room was dropped"), 0);
  /* Asked for while there is room: reported at once (no edge is lost
   * between a blocked write and the ask). */
  tr_assert_rc(tr__fd_want_out(w, 1), 0);
  tr_assert_rc(recv_msg(&m), 0);
  tr_assert(m->u64 & EPOLLOUT, "events 0x%x without EPOLLOUT", (unsigned)m->u64);
  tr_msg_free(m);
  tr__fd_begin_io(w);
  tr_assert_rc(tr__fd_want_out(w, 0), 0);

  /* Re-arming is not for edge watches, and says so. */
  tr_assert_rc(tr__fd_rearm(w, EPOLLIN), -TR_EINVAL);
  tr_assert(tr_error_last() != NULL);

  /* EOF behind data, while a notification is pending: its edge makes no
   * message, and begin-I/O reports it (the owner must read on to it). */
  tr_assert_eq(write(sv[1], "e", 1), 1);
  tr_assert_rc(recv_msg(&m), 0);
  ev = m->u64;
  tr_msg_free(m);
  tr_assert(ev & EPOLLIN, "events 0x%x", (unsigned)ev);
  close(sv[1]);
  tr_assert_rc(no_notice_within(50 * MS, &ev), 0);
  tr_assert_eq(ev, 0, "a notification for the end while one was pending");
  ev = tr__fd_begin_io(w);
  tr_assert((ev & (EPOLLIN | EPOLLRDHUP)) == (EPOLLIN | EPOLLRDHUP),
            "begin-I/O reported 0x%x: the end is missing", (unsigned)ev);
  tr_assert_eq(read(sv[0], buf, sizeof buf), 1);
  tr_assert_eq(read(sv[0], buf, 1), 0);
  /* Nothing is left to report: no further notification. */
  tr_assert_rc(no_notice_within(50 * MS, &ev), 0);
  tr_assert_eq(ev, 0, "a notification after the end was read");
  tr_assert_eq(tr__fd_begin_io(w), 0);
  tr_assert_rc(tr__fd_unwatch(w), 0);
  close(sv[0]);
  tr_assert_rc(wait_watches_freed(5 * SEC), 0);
  return 0;
}

/* ---- 2. EPOLLOUT ---------------------------------------------------------------- */

TR_TEST(fd_watch, epollout_after_the_peer_drains, .timeout = 60) {
  int sv[2];
  tr_assert_eq(nonblocking_pair(sv), 0);
  tr_fd_watch_t *w;
  tr_assert_rc(tr__fd_watch(sv[0], tr_self(), TAG_FD, &w), 0);

  static uint8_t buf[65536];
  memset(buf, 0x5a, sizeof(buf));
  size_t filled = 0;
  for (;;) {
    ssize_t k = send(sv[0], buf, sizeof(buf), MSG_NOSIGNAL);
    if (k < 0) {
      tr_assert(errno == EAGAIN, "send: %s", strerror(errno));
      break;
    }
    filled += (size_t)k;
  }
  tr_assert(filled > 0);
  tr_assert_rc(tr__fd_rearm(w, EPOLLOUT), 0);

  /* Full, and nothing to read: no notification may come meanwhile.  A
   * bounded look (a wrong one would come at once), not a delay. */
  uint64_t early;
  tr_assert_rc(no_notice_within(50 * MS, &early), 0);
  tr_assert_eq(early, 0, "notification 0x%x while the socket was full", (unsigned)early);

  size_t drained = 0;
  for (;;) {
    ssize_t k = read(sv[1], buf, sizeof(buf));
    if (k <= 0)
      break;
    drained += (size_t)k;
  }
  tr_assert_eq(drained, filled);

  tr_msg_t *m;
  tr_assert_rc(recv_msg(&m), 0);
  uint64_t ev = m->u64, cid = m->cid;
  tr_msg_free(m);
  tr_assert_eq(cid, tr__fd_watch_id(w));
  tr_assert(ev & EPOLLOUT, "events 0x%x without EPOLLOUT", (unsigned)ev);
  tr_assert(send(sv[0], buf, 1, MSG_NOSIGNAL) == 1);

  /* Bad arguments fail with an error object and change nothing. */
  tr_assert_rc(tr__fd_rearm(w, 0), -TR_EINVAL);
  tr_assert(tr_error_last() != NULL);
  tr_assert_rc(tr__fd_rearm(w, EPOLLPRI), -TR_EINVAL);
  tr_error_clear();
  tr_assert_rc(tr__fd_want_out(w, 1), -TR_EINVAL); /* for edge watches */
  tr_assert(tr_error_last() != NULL);
  tr_assert_rc(tr__fd_want_out(NULL, 1), -TR_EINVAL);
  tr_fd_watch_t *dup = NULL;
  tr_assert_rc(tr__fd_watch(sv[0], tr_self(), TAG_FD, &dup), -TR_EINVAL); /* already watched */
  tr_assert(dup == NULL);
  tr_assert_rc(tr__fd_watch(-1, tr_self(), TAG_FD, &dup), -TR_EINVAL);
  tr_assert_rc(tr__fd_watch(sv[1], NULL, TAG_FD, &dup), -TR_EINVAL);
  tr_assert_eq(tr__fd_watch_count(), 1);

  tr_assert_rc(tr__fd_unwatch(w), 0);
  close(sv[0]);
  close(sv[1]);
  tr_assert_rc(wait_watches_freed(5 * SEC), 0);
  return 0;
}

/* ---- 3. unwatch racing with readiness -------------------------------------------- */

struct flood {
  int fd;
  int stop; /* atomic */
  int err;
};

/* Keeps the peer's socket readable: writes whenever there is room, and
 * waits (poll, 5 ms at most) when there is none, until told to stop. */
static void *flood_main(void *arg) {
  struct flood *f = arg;
  uint8_t buf[4096];
  memset(buf, 1, sizeof(buf));
  while (!__atomic_load_n(&f->stop, __ATOMIC_ACQUIRE)) {
    ssize_t k = send(f->fd, buf, sizeof(buf), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (k < 0 && errno == EAGAIN) {
      struct pollfd p = {.fd = f->fd, .events = POLLOUT};
      (void)poll(&p, 1, 5);
    } else if (k < 0) {
      f->err = errno;
      return NULL;
    }
  }
  return NULL;
}

static int flood_task(void *arg) { return tr_to_thread(flood_main, arg, NULL); }

struct race {
  uint64_t ids[RACE_CYCLES];
  uint8_t late[RACE_CYCLES]; /* notifications after the unwatch */
  int ncycles;
};

/* Counts a notification for an earlier watch.  Its ptr is stale and is
 * never looked at: the id alone says which watch it was. */
static int note_late(struct race *r, uint64_t cid) {
  for (int i = r->ncycles - 1; i >= 0; i--)
    if (r->ids[i] == cid) {
      r->late[i]++;
      tr_assert(r->late[i] <= 1, "watch %d (id %llu): %u notifications after its unwatch", i,
                (unsigned long long)cid, r->late[i]);
      return 0;
    }
  tr_assert(0, "a notification for id %llu, which no watch had", (unsigned long long)cid);
  return 0;
}

/* Watch, take one notification, re-arm (for EPOLLIN|EPOLLOUT on odd
 * rounds: writable at once, so the reactor fires while we remove it; for
 * EPOLLIN on even ones: the flood makes it readable within moments) or
 * not at all (every fourth), then unwatch right away. */
static int race_cycles(int fd, int edge, struct race *r) {
  static uint8_t buf[8192];
  for (int c = 0; c < RACE_CYCLES; c++) {
    tr_fd_watch_t *w;
    tr_assert_rc((edge ? tr__fd_watch_edge : tr__fd_watch)(fd, tr_self(), TAG_FD, &w), 0);
    uint64_t id = tr__fd_watch_id(w);
    r->ids[c] = id;
    r->ncycles = c + 1;
    for (;;) {
      tr_msg_t *m;
      tr_assert_rc(recv_msg(&m), 0);
      uint64_t cid = m->cid;
      tr_assert_eq(m->tag, TAG_FD);
      tr_msg_free(m);
      if (cid == id)
        break;
      tr_assert_rc(note_late(r, cid), 0);
    }
    /* Read one buffer: the flood keeps it readable either way.  An edge
     * watch begins its I/O first: the flood's next packet is a new
     * notification, racing with the unwatch. */
    if (edge)
      tr__fd_begin_io(w);
    int err;
    ssize_t k = read_errno(fd, buf, sizeof(buf), &err);
    tr_assert(k > 0 || (k < 0 && err == EAGAIN), "read: %s", strerror(err));
    /* Hot, as a channel marks it: a worker may be probing it while it is
     * removed (the probe must see the watch gone, or finish before it is
     * freed), and a probe counts as the one late notification. */
    if (edge && k > 0)
      tr__fd_hot(w);
    if (!edge && c % 4 != 3)
      tr_assert_rc(tr__fd_rearm(w, (c & 1) ? EPOLLIN | EPOLLOUT : EPOLLIN), 0);
    tr_assert_rc(tr__fd_unwatch(w), 0);
  }
  return 0;
}

static int unwatch_race(int edge) {
  int sv[2];
  tr_assert_eq(nonblocking_pair(sv), 0);
  static struct race r;
  memset(&r, 0, sizeof(r));
  struct flood f = {.fd = sv[1]};

  tr_nursery_t *n;
  tr_assert_rc(tr_nursery_open(&n), 0);
  tr_check_rc(tr_nursery_spawn(n, flood_task, &f, NULL), 0);
  tr_check_rc(race_cycles(sv[0], edge, &r), 0);
  __atomic_store_n(&f.stop, 1, __ATOMIC_RELEASE);
  tr_assert_rc(tr_nursery_close(n), 0);
  tr_assert_eq(f.err, 0, "flood: %s", strerror(f.err));
  tr_assert_eq(r.ncycles, RACE_CYCLES);

  /* Once the reactor has freed every watch it has sent all it ever will,
   * and those messages were queued before our sentinel: everything after
   * the sentinel would be a notification after the removal. */
  tr_assert_rc(wait_watches_freed(10 * SEC), 0);
  tr_assert_rc(tr_send_u64(tr_self(), TAG_SENTINEL, 0), 0);
  int late = 0;
  for (;;) {
    tr_msg_t *m;
    tr_assert_rc(recv_msg(&m), 0);
    uint32_t tag = m->tag;
    uint64_t cid = m->cid;
    tr_msg_free(m);
    if (tag == TAG_SENTINEL)
      break;
    tr_assert_rc(note_late(&r, cid), 0);
  }
  for (int i = 0; i < RACE_CYCLES; i++)
    late += r.late[i];
  cr_log_info("%d of %d removals raced with a notification", late, RACE_CYCLES);

  /* Nothing more comes (the fd is still readable and writable). */
  tr_scope_t s;
  tr_msg_t *m = NULL;
  tr_assert_rc(tr_move_on_after(&s, 50 * MS), 0);
  int rc = tr_recv(&m);
  tr_assert_rc(tr_scope_close(&s), 0);
  if (rc == 0) {
    uint64_t cid = m->cid;
    tr_msg_free(m);
    tr_assert(0, "notification for id %llu after the reactor freed its watch",
              (unsigned long long)cid);
  }
  close(sv[0]);
  close(sv[1]);
  return 0;
}

TR_TEST(fd_watch, unwatch_races_with_readiness, .timeout = 120) { return unwatch_race(0); }

/* The same with edge watches, whose next notification is already possible
 * while the owner reads (after tr__fd_begin_io), not only after a re-arm. */
TR_TEST(fd_watch, edge_unwatch_races_with_readiness, .timeout = 120) { return unwatch_race(1); }

/* ---- 4. many watches, and watches left at stop ------------------------------------ */

/* Eventfds with a count of 1: readable, so every watch fires at once. */
static int open_ready_eventfds(int *fds, int n) {
  for (int i = 0; i < n; i++) {
    fds[i] = eventfd(1, EFD_NONBLOCK | EFD_CLOEXEC);
    tr_assert(fds[i] >= 0, "eventfd: %s", strerror(errno));
  }
  return 0;
}

TR_TEST(fd_watch, unwatch_a_thousand, .timeout = 60) {
  static int fds[MANY];
  static tr_fd_watch_t *ws[MANY];
  static uint64_t first;
  tr_assert_rc(open_ready_eventfds(fds, MANY), 0);
  for (int i = 0; i < MANY; i++) {
    tr_assert_rc(tr__fd_watch(fds[i], tr_self(), TAG_FD, &ws[i]), 0);
    if (i == 0)
      first = tr__fd_watch_id(ws[i]);
    tr_assert_eq(tr__fd_watch_id(ws[i]), first + (uint64_t)i);
  }
  tr_assert_eq(tr__fd_watch_count(), MANY);
  /* Each has fired or is about to: remove them under way. */
  for (int i = 0; i < MANY; i++)
    tr_assert_rc(tr__fd_unwatch(ws[i]), 0);
  for (int i = 0; i < MANY; i++)
    close(fds[i]);
  tr_assert_rc(wait_watches_freed(10 * SEC), 0);

  /* One notification per watch at most, and only for these ids. */
  static uint8_t seen[MANY];
  memset(seen, 0, sizeof(seen));
  tr_assert_rc(tr_send_u64(tr_self(), TAG_SENTINEL, 0), 0);
  int got = 0;
  for (;;) {
    tr_msg_t *m;
    tr_assert_rc(recv_msg(&m), 0);
    uint32_t tag = m->tag;
    uint64_t cid = m->cid, ev = m->u64;
    tr_msg_free(m);
    if (tag == TAG_SENTINEL)
      break;
    tr_assert(cid >= first && cid < first + MANY, "id %llu", (unsigned long long)cid);
    tr_assert(ev & EPOLLIN);
    tr_assert_eq(seen[cid - first]++, 0, "two notifications for watch %llu",
                 (unsigned long long)(cid - first));
    got++;
  }
  cr_log_info("%d of %d watches notified before their removal", got, MANY);
  return 0;
}

/* Watches left registered at stop: on the root (which exits with them)
 * and on a behaviour actor that exits first.  The reactor frees them at
 * stop with their actor references: TR_TEST's leak check fails on an
 * actor or message left allocated; the fds are closed after stop, by a
 * lifetime callback, which also checks that no watch is left. */
static int left_fds[2 * MANY];

static void close_left(void *arg) {
  (void)arg;
  tr_check_eq(tr__fd_watch_count(), 0);
  /* The notifications nobody read (the exited actor's, and the root's
   * own) are the runtime's, not messages a user sent: no dead letters. */
  tr_stats_t st;
  tr_stats(&st);
  tr_check_eq(st.dead_letters, 0);
  for (int i = 0; i < 2 * MANY; i++)
    close(left_fds[i]);
}

static void exit_on_anything(void *state, tr_msg_t *m) {
  (void)state;
  (void)m;
  tr_check_rc(tr_actor_exit(), 0);
}

TR_TEST(fd_watch, watches_left_at_stop_are_freed, .timeout = 60) {
  tr_assert_rc(open_ready_eventfds(left_fds, 2 * MANY), 0);
  tr_assert_rc(tr_lifetime_push(close_left, NULL), 0);
  tr_actor_t *a;
  tr_assert_rc(tr_spawn(exit_on_anything, NULL, NULL, &a), 0);
  for (int i = 0; i < MANY; i++) {
    tr_fd_watch_t *w;
    tr_assert_rc(tr__fd_watch(left_fds[i], tr_self(), TAG_FD, &w), 0);
    tr_assert_rc(tr__fd_watch(left_fds[MANY + i], a, TAG_FD, &w), 0);
  }
  /* The actor exits on its first notification; the rest are dropped
   * uncounted.  Its watches still hold references to it. */
  tr_actor_release(a);
  tr_assert_eq(tr__fd_watch_count(), 2 * MANY);
  return 0;
}

/* The removal the reactor is most exposed to: its epoll_wait returns the
 * wake-up of one unwatch and, behind it in the same batch, the readiness of
 * a watch the owner removes while the reactor is still handling the
 * wake-up.  Each round unwatches the previous watch (the reactor wakes),
 * makes the current one ready right behind that wake-up, and removes it at
 * once.  A reactor that freed removed watches as soon as it saw the
 * wake-up, rather than after its whole batch, would read a freed watch
 * here (ASan). */
TR_TEST(fd_watch, unwatch_behind_a_wakeup_in_one_batch, .timeout = 120) {
  static int efd[RACE_CYCLES];
  tr_fd_watch_t *prev = NULL;
  for (int c = 0; c < RACE_CYCLES; c++) {
    efd[c] = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    tr_assert(efd[c] >= 0);
    tr_fd_watch_t *w;
    tr_assert_rc(tr__fd_watch(efd[c], tr_self(), TAG_FD, &w), 0);
    if (prev)
      tr_assert_rc(tr__fd_unwatch(prev), 0);
    tr_assert_eq(eventfd_write(efd[c], 1), 0);
    tr_assert_rc(tr__fd_unwatch(w), 0);
    prev = NULL;
    /* Every other round watches the (still ready) fd again, to be
     * removed in the next round while it fires. */
    if (c % 2 == 0)
      tr_assert_rc(tr__fd_watch(efd[c], tr_self(), TAG_FD, &prev), 0);
  }
  if (prev)
    tr_assert_rc(tr__fd_unwatch(prev), 0);
  tr_assert_rc(wait_watches_freed(10 * SEC), 0);
  for (int c = 0; c < RACE_CYCLES; c++)
    close(efd[c]);
  tr_assert_rc(tr_send_u64(tr_self(), TAG_SENTINEL, 0), 0);
  for (;;) {
    tr_msg_t *m;
    tr_assert_rc(recv_msg(&m), 0);
    uint32_t tag = m->tag;
    tr_msg_free(m);
    if (tag == TAG_SENTINEL)
      break;
  }
  return 0;
}

/* ---- 7. who takes readiness: spinning workers, or the reactor ---------------- */

/* n pings against ourselves on the pair sv, whose sv[0] w watches: write
 * a byte, wait for the notification, read it, re-arm. */
static int ping_self(int sv[2], tr_fd_watch_t *w, int n) {
  for (int i = 0; i < n; i++) {
    char c = 'x';
    tr_assert_eq(write(sv[1], &c, 1), 1);
    tr_msg_t *m;
    tr_assert_rc(recv_msg(&m), 0);
    tr_msg_free(m);
    tr_assert_eq(read(sv[0], &c, 1), 1);
    tr_assert_rc(tr__fd_rearm(w, EPOLLIN), 0);
  }
  return 0;
}

/* A ping against ourselves: write a byte, wait for the notification, read
 * it, re-arm.  The worker that ran us spins while we wait, so it should
 * take most of them itself (reactor.c, "Workers poll too"). */
TR_TEST(fd_watch, spinning_workers_take_readiness, .timeout = 60) {
  int sv[2];
  tr_assert_eq(nonblocking_pair(sv), 0);
  tr_fd_watch_t *w;
  tr_assert_rc(tr__fd_watch(sv[0], tr_self(), TAG_FD, &w), 0);
  tr_reactor_stats_t before, after;
  tr__reactor_stats(&before);
  tr_assert_rc(ping_self(sv, w, 1000), 0);
  tr__reactor_stats(&after);
  uint64_t polled = after.polled - before.polled, drained = after.drained - before.drained;
  cr_log_info("1000 pings: %llu taken by workers, %llu by the reactor",
              (unsigned long long)polled, (unsigned long long)drained);
  tr_assert(polled > 0, "no readiness was taken by a spinning worker (%llu by the reactor)",
            (unsigned long long)drained);
  tr_assert_rc(tr__fd_unwatch(w), 0);
  close(sv[0]);
  close(sv[1]);
  return wait_watches_freed(5 * SEC);
}

/* Takes notifications for the edge watch w until `ns` have passed with
 * none: each begins its I/O and finds nothing to read. */
static int drain_quiet(tr_fd_watch_t *w, int fd, int64_t ns) {
  for (;;) {
    uint64_t ev;
    tr_assert_rc(no_notice_within(ns, &ev), 0);
    if (!ev)
      return 0;
    tr__fd_begin_io(w);
    char c;
    int err;
    tr_assert(read_errno(fd, &c, 1, &err) < 0 && err == EAGAIN, "a byte nobody wrote");
  }
}

/* One ping through edge watch w on the pair sv: writes c to sv[1], waits
 * for the notifications until the read of sv[0] gets it (counting those
 * that found nothing in *empty), and marks the watch hot after that read,
 * as a channel does. */
static int hot_ping(tr_fd_watch_t *w, const int sv[2], char c, uint64_t *empty) {
  tr_assert_eq(write(sv[1], &c, 1), 1);
  for (;;) {
    tr_msg_t *m;
    tr_assert_rc(recv_msg(&m), 0);
    tr_assert_eq(m->cid, tr__fd_watch_id(w));
    tr_msg_free(m);
    tr__fd_begin_io(w);
    char got;
    int err;
    ssize_t k = read_errno(sv[0], &got, 1, &err);
    if (k == 1) {
      tr_assert_eq(got, c);
      tr__fd_hot(w);
      return 0;
    }
    tr_assert(k < 0 && err == EAGAIN, "read: %zd, %s", k, strerror(err));
    (*empty)++;
  }
}

/* The same ping through an edge watch that the owner marks hot after each
 * read (tr__fd_hot), as a channel does: the worker spinning while we wait
 * probes it (a notification before epoll has said anything), so some
 * pings are found by probes.  A probe may come before the byte: then the
 * read finds nothing and we wait again.  Once the pings stop, the watch
 * cools within IO_PROBE_NS (200 us) and the probing stops: an idle
 * runtime makes none. */
TR_TEST(fd_watch, spinning_workers_probe_a_hot_watch, .timeout = 60) {
  int sv[2];
  tr_assert_eq(nonblocking_pair(sv), 0);
  tr_fd_watch_t *w;
  tr_assert_rc(tr__fd_watch_edge(sv[0], tr_self(), TAG_FD, &w), 0);
  tr_reactor_stats_t before, after, idle;
  tr__reactor_stats(&before);
  uint64_t empty = 0;
  for (int i = 0; i < 1000; i++)
    tr_assert_rc(hot_ping(w, sv, (char)i, &empty), 0);
  tr__reactor_stats(&after);
  uint64_t probed = after.probed - before.probed;
  cr_log_info("1000 pings: %llu probes, %llu notifications found nothing; %llu polled",
              (unsigned long long)probed, (unsigned long long)empty,
              (unsigned long long)(after.polled - before.polled));
  tr_assert(probed > 0, "no probe in 1000 pings (%llu found by polls)",
            (unsigned long long)(after.polled - before.polled));
  /* Idle: once nothing has come for 20 ms, nothing is probed for 50 ms. */
  tr_assert_rc(drain_quiet(w, sv[0], 20 * MS), 0);
  tr__reactor_stats(&idle);
  tr_assert_rc(drain_quiet(w, sv[0], 50 * MS), 0);
  tr__reactor_stats(&after);
  tr_assert_eq(after.probed, idle.probed, "%llu probes of a watch idle for 20 ms",
               (unsigned long long)(after.probed - idle.probed));
  tr_assert_rc(tr__fd_unwatch(w), 0);
  close(sv[0]);
  close(sv[1]);
  return wait_watches_freed(5 * SEC);
}

/* A thread that is no worker sends the sink a message every millisecond
 * until told to stop: each wakes a parked worker (a foreign push), which
 * takes it, spins and parks again. */
typedef struct poker {
  tr_actor_t *sink;
  uint32_t stop; /* atomic */
  uint32_t sent; /* atomic */
} poker_t;

static void ignore_all_but_2(void *state, tr_msg_t *m) {
  (void)state;
  if (m->tag == 2)
    tr_check_rc(tr_actor_exit(), 0);
}

static void *poke(void *arg) {
  poker_t *pk = arg;
  while (!tr_load_acquire(&pk->stop)) {
    if (tr_send_u64(pk->sink, 1, 0) == 0)
      tr_faa_seqcst(&pk->sent, 1);
    struct timespec ms = {0, 1000000};
    nanosleep(&ms, NULL);
  }
  return NULL;
}

/* With one worker polling (spinning through an exchange) and the other
 * parking again and again (woken by a foreign thread's sends), the parker
 * leaves the fds to the poller: only the last awake worker to park arms
 * the reactor thread.  Armed by every worker that parked, the reactor was
 * woken by the next ping each time and drained it (measured, 100 pokes:
 * 242 to 285 wake-ups besides its ticks, 83 to 91 pings drained; 77 to 84
 * and 68 to 73 under TSan); now it wakes for its ticks and once more (1
 * drained).  The bound is half the pokes. */
TR_TEST(fd_watch, a_parking_worker_leaves_the_fds_to_a_polling_one, .timeout = 60) {
  int sv[2];
  tr_assert_eq(nonblocking_pair(sv), 0);
  tr_fd_watch_t *w;
  tr_assert_rc(tr__fd_watch_edge(sv[0], tr_self(), TAG_FD, &w), 0);
  poker_t pk = {0};
  tr_assert_rc(tr_spawn(ignore_all_but_2, NULL, NULL, &pk.sink), 0);
  pthread_t th;
  tr_assert_eq(pthread_create(&th, NULL, poke, &pk), 0);
  tr_reactor_stats_t before, after;
  tr__reactor_stats(&before);
  /* 100 pokes (about 100 ms; TSan's build is slower, so a time bound of
   * its own). */
  int64_t end = tr_now() + 20 * SEC;
  int pings = 0;
  uint64_t empty = 0;
  for (; tr_load_seqcst(&pk.sent) < 100 && tr_now() < end; pings++)
    tr_assert_rc(hot_ping(w, sv, (char)pings, &empty), 0);
  tr__reactor_stats(&after);
  tr_store_release(&pk.stop, 1);
  int jrc = pthread_join(th, NULL);
  int src = tr_send_u64(pk.sink, 2, 0);
  tr_actor_release(pk.sink);
  tr_assert_eq(jrc, 0);
  tr_assert_rc(src, 0);
  uint32_t pokes = tr_load_seqcst(&pk.sent);
  /* The tick's own wake-ups are not the point (a slow build ticks more:
   * its worker may not have polled between two looks). */
  uint64_t ticks = after.ticks - before.ticks, other = after.wakeups - before.wakeups - ticks;
  cr_log_info("%d pings, %u pokes: the reactor thread woke %llu times besides its %llu ticks, "
              "drained %llu",
              pings, pokes, (unsigned long long)other, (unsigned long long)ticks,
              (unsigned long long)(after.drained - before.drained));
  tr_assert(pokes >= 100, "only %u pokes in 20 s", pokes);
  tr_assert(other <= pokes / 2, "the reactor thread woke %llu times (besides its ticks) for %u pokes",
            (unsigned long long)other, pokes);
  tr_assert_rc(tr__fd_unwatch(w), 0);
  close(sv[0]);
  close(sv[1]);
  return wait_watches_freed(5 * SEC);
}

/* While a worker probes a hot watch, the other fds are still polled: a
 * byte on a second watch is reported while the pings on the hot one go
 * on.  Some worker's epoll_wait finds it: the hot worker's every
 * IO_EPOLL_EVERY-th round, or a round whose probe found the hot watch's
 * notification still pending, or the other worker's spin.  The reactor
 * thread would not (a probe is a poll: it sees workers polling).  With
 * every epoll_wait of a worker that has a hot watch removed, this failed
 * in 1 of 3 runs (the other worker's spins found it in the rest); with
 * the code as it is, the byte is read within a few dozen pings, far
 * below the bound of 2000. */
TR_TEST(fd_watch, a_hot_watch_does_not_hide_other_fds, .timeout = 60) {
  int hot[2], other[2];
  tr_assert_eq(nonblocking_pair(hot), 0);
  tr_assert_eq(nonblocking_pair(other), 0);
  tr_fd_watch_t *wh, *wo;
  tr_assert_rc(tr__fd_watch_edge(hot[0], tr_self(), TAG_FD, &wh), 0);
  tr_assert_rc(tr__fd_watch_edge(other[0], tr_self(), TAG_FD, &wo), 0);
  int seen = -1; /* the ping during which the other fd's byte was read */
  for (int i = 0; i < 2000 && seen < 0; i++) {
    char c = (char)i;
    if (i == 10)
      tr_assert_eq(write(other[1], "x", 1), 1);
    tr_assert_eq(write(hot[1], &c, 1), 1);
    for (int got_ping = 0; !got_ping;) {
      tr_msg_t *m;
      tr_assert_rc(recv_msg(&m), 0);
      uint64_t id = m->cid;
      tr_msg_free(m);
      char got;
      int err;
      if (id == tr__fd_watch_id(wo)) {
        tr__fd_begin_io(wo);
        if (read_errno(other[0], &got, 1, &err) == 1)
          seen = i;
        continue;
      }
      tr_assert_eq(id, tr__fd_watch_id(wh));
      tr__fd_begin_io(wh);
      ssize_t k = read_errno(hot[0], &got, 1, &err);
      if (k == 1) {
        tr_assert_eq(got, (char)i, "ping %d", i);
        tr__fd_hot(wh);
        got_ping = 1;
      } else {
        tr_assert(k < 0 && err == EAGAIN, "read: %zd, %s", k, strerror(err));
      }
    }
  }
  cr_log_info("the other fd's byte was read at ping %d (written before ping 10)", seen);
  tr_assert(seen >= 10, "the other fd's byte was never reported in 2000 pings on a hot watch");
  tr_assert_rc(tr__fd_unwatch(wh), 0);
  tr_assert_rc(tr__fd_unwatch(wo), 0);
  for (int k = 0; k < 2; k++) {
    close(hot[k]);
    close(other[k]);
  }
  return wait_watches_freed(5 * SEC);
}

/* While workers take readiness themselves, the reactor's tick backs off
 * (reactor.c, "The tick"): pings against ourselves for at least 200 ms
 * keep a worker polling, and each look of the tick that finds a worker
 * has polled since the last doubles its wait, up to 64 ms.  So after a
 * reset to 1 ms (a look that found no poll: on a loaded machine the
 * workers may be off their cores for milliseconds while the reactor is
 * not; or every worker asleep) at most 7 looks come before the wait is
 * 64 ms, then one per 64 ms: at most 8 ticks per reset, 8 more, and one
 * per 64 ms.  A 1 ms tick gives about one per millisecond, 200 here; one
 * that backs off only to 4 ms, 50. */
TR_TEST(fd_watch, the_tick_backs_off_while_workers_poll, .timeout = 60) {
  int sv[2];
  tr_assert_eq(nonblocking_pair(sv), 0);
  tr_fd_watch_t *w;
  tr_assert_rc(tr__fd_watch(sv[0], tr_self(), TAG_FD, &w), 0);
  tr_assert_rc(ping_self(sv, w, 100), 0); /* workers have polled: the set is disarmed */
  tr_reactor_stats_t before, after;
  tr__reactor_stats(&before);
  int64_t t0 = tr_now(), ms;
  int pings = 0;
  do {
    tr_assert_rc(ping_self(sv, w, 100), 0);
    pings += 100;
  } while ((ms = (tr_now() - t0) / MS) < 200);
  tr__reactor_stats(&after);
  uint64_t ticks = after.ticks - before.ticks, resets = after.resets - before.resets;
  cr_log_info("%d pings in %lld ms: %llu ticks (%llu resets), %llu taken by workers, %llu by the "
              "reactor",
              pings, (long long)ms, (unsigned long long)ticks, (unsigned long long)resets,
              (unsigned long long)(after.polled - before.polled),
              (unsigned long long)(after.drained - before.drained));
  uint64_t most = 8 * resets + 8 + (uint64_t)ms / 64;
  tr_assert(ticks <= most, "%llu ticks in %lld ms of polling workers, with %llu resets (at most %llu)",
            (unsigned long long)ticks, (long long)ms, (unsigned long long)resets,
            (unsigned long long)most);
  tr_assert_rc(tr__fd_unwatch(w), 0);
  close(sv[0]);
  close(sv[1]);
  return wait_watches_freed(5 * SEC);
}

static int busy_go, busy_stop; /* atomic */

/* Keeps its worker busy (no yield, no poll) until told to stop. */
static int busy_task(void *arg) {
  (void)arg;
  __atomic_store_n(&busy_go, 1, __ATOMIC_SEQ_CST);
  while (!__atomic_load_n(&busy_stop, __ATOMIC_SEQ_CST))
    ;
  return 0;
}

/* tr_join off the workers (it would block one). */
static void *join_main(void *arg) {
  return (void *)(intptr_t)tr_join(arg, -1);
}

/* Both workers busy (the other one in busy_task, ours in this test body):
 * nobody polls, so the reactor must take the readiness itself.  The first
 * round may wake it through its armed set (a worker parked before); that
 * disarms the set, and with nobody parking the later rounds find it
 * disarmed: those are taken by the reactor's tick (back at 1 ms once a
 * look finds that nobody polled). */
TR_TEST(fd_watch, the_reactor_takes_readiness_while_every_worker_is_busy, .timeout = 60) {
  int sv[2];
  tr_assert_eq(nonblocking_pair(sv), 0);
  tr_fd_watch_t *w;
  tr_assert_rc(tr__fd_watch(sv[0], tr_self(), TAG_FD, &w), 0);
  __atomic_store_n(&busy_go, 0, __ATOMIC_SEQ_CST);
  __atomic_store_n(&busy_stop, 0, __ATOMIC_SEQ_CST);
  tr_actor_t *busy;
  tr_spawn_opts_t o = {.name = "busy"};
  tr_assert_rc(tr_spawn_task_actor(busy_task, NULL, &o, &busy), 0);
  int64_t end = tr_now() + 20 * SEC;
  /* Until it runs: our worker is free meanwhile (a sleep parks us). */
  while (!__atomic_load_n(&busy_go, __ATOMIC_SEQ_CST) && tr_now() < end)
    tr_check_rc(tr_sleep(1 * MS), 0);
  int ok = __atomic_load_n(&busy_go, __ATOMIC_SEQ_CST);
  tr_reactor_stats_t first, before, now;
  tr__reactor_stats(&first);
  int rounds = 0;
  for (; ok && rounds < 20; rounds++) {
    tr__reactor_stats(&before);
    char c = 'x';
    tr_check_eq(write(sv[1], &c, 1), 1);
    /* Spin without yielding: our worker stays busy too. */
    do
      tr__reactor_stats(&now);
    while (now.drained == before.drained && tr_now() < end);
    if (now.drained == before.drained)
      break;
    tr_msg_t *m;
    tr_check_rc(recv_msg(&m), 0);
    uint64_t cid = m->cid;
    tr_msg_free(m);
    tr_check_eq(cid, tr__fd_watch_id(w));
    tr_check_eq(read(sv[0], &c, 1), 1);
    tr_check_rc(tr__fd_rearm(w, EPOLLIN), 0);
  }
  __atomic_store_n(&busy_stop, 1, __ATOMIC_SEQ_CST);
  void *joined = NULL;
  tr_check_rc(tr_to_thread(join_main, busy, &joined), 0);
  tr_actor_release(busy);
  tr_assert_eq((int)(intptr_t)joined, 0);
  tr_assert(ok, "the busy actor never ran");
  tr_assert_eq(rounds, 20, "the reactor did not take the readiness of round %d", rounds + 1);
  cr_log_info("20 rounds with every worker busy: %llu taken by the tick",
              (unsigned long long)(now.ticked - first.ticked));
  tr_assert(now.ticked > first.ticked, "the tick never took any");
  tr_assert_rc(tr__fd_unwatch(w), 0);
  close(sv[0]);
  close(sv[1]);
  return wait_watches_freed(5 * SEC);
}

static int loop_stop; /* atomic */

/* Sends its message back to itself until told to stop, then exits: a
 * stream of short turns that keeps a worker busy without parking it. */
static void self_looper(void *state, tr_msg_t *m) {
  (void)state;
  if (__atomic_load_n(&loop_stop, __ATOMIC_ACQUIRE)) {
    tr_check_rc(tr_actor_exit(), 0);
    return;
  }
  tr_msg_take(m);
  tr_check_rc(tr_send(tr_self(), m), 0);
}

/* Both workers busy with short turns (four actors that keep sending to
 * themselves): nobody spins or parks, so nobody polls between looks for
 * work.  The workers look at the fds themselves between turns, once no
 * worker has polled for a while (reactor.c, "The tick"), so the reactor's
 * tick, which backs off while they do, takes almost none of the
 * readiness (before, it took all 200, at about 1 ms each).  Not none: on
 * a loaded machine (TSan, with other suites beside it) both workers can
 * be off their cores past a look of the tick, which then rightly takes
 * that round's (seen: 1 of 200); and the reactor takes the few that a
 * worker's park armed it for (the first round's, say). */
TR_TEST(fd_watch, busy_workers_take_readiness_between_turns, .timeout = 60) {
  int sv[2];
  tr_assert_eq(nonblocking_pair(sv), 0);
  tr_fd_watch_t *w;
  tr_assert_rc(tr__fd_watch(sv[0], tr_self(), TAG_FD, &w), 0);
  __atomic_store_n(&loop_stop, 0, __ATOMIC_SEQ_CST);
  enum { LOOPERS = 4 };
  tr_actor_t *lp[LOOPERS];
  for (int i = 0; i < LOOPERS; i++) {
    tr_assert_rc(tr_spawn(self_looper, NULL, NULL, &lp[i]), 0);
    tr_assert_rc(tr_send_u64(lp[i], 1, 0), 0);
  }
  tr_assert_rc(ping_self(sv, w, 1), 0); /* may be the reactor's (armed) */
  tr_reactor_stats_t before, after;
  tr__reactor_stats(&before);
  tr_assert_rc(ping_self(sv, w, 200), 0);
  tr__reactor_stats(&after);
  __atomic_store_n(&loop_stop, 1, __ATOMIC_SEQ_CST);
  for (int i = 0; i < LOOPERS; i++) {
    void *joined = NULL;
    tr_check_rc(tr_to_thread(join_main, lp[i], &joined), 0);
    tr_actor_release(lp[i]);
  }
  uint64_t polled = after.polled - before.polled, drained = after.drained - before.drained;
  uint64_t ticked = after.ticked - before.ticked;
  cr_log_info("200 pings with busy workers: %llu taken by workers, %llu by the reactor (%llu "
              "by its tick)",
              (unsigned long long)polled, (unsigned long long)drained, (unsigned long long)ticked);
  tr_assert(ticked < 20, "the tick took %llu of 200", (unsigned long long)ticked);
  tr_assert(polled >= 180, "workers took only %llu of 200", (unsigned long long)polled);
  tr_assert_rc(tr__fd_unwatch(w), 0);
  close(sv[0]);
  close(sv[1]);
  return wait_watches_freed(5 * SEC);
}

/* Off the workers: once every worker has parked, the reactor's wake-ups
 * in 300 ms of idleness (UINTPTR_MAX if the workers never all parked).
 * Waiting for the parks first keeps a loaded machine out of the count:
 * there each yield of the spin before parking may give the core away for
 * a whole time slice, and the reactor rightly ticks while a worker spins
 * (seen: 120 ticks under TSan with the whole suite running). */
static void *idle_wakes(void *arg) {
  (void)arg;
  uint64_t all = (1ull << tr__rt.nworkers) - 1;
  int64_t end = tr_now() + 10 * SEC;
  while ((tr_load_seqcst(&tr__rt.sleepers) & all) != all && tr_now() < end)
    usleep(1000);
  if ((tr_load_seqcst(&tr__rt.sleepers) & all) != all)
    return (void *)UINTPTR_MAX;
  tr_reactor_stats_t before, after;
  tr__reactor_stats(&before);
  usleep(300 * 1000);
  tr__reactor_stats(&after);
  return (void *)(uintptr_t)(after.wakeups - before.wakeups);
}

/* An idle runtime with a watched fd sleeps: the reactor's tick runs only
 * while workers poll, and workers stop polling when they park. */
TR_TEST(fd_watch, an_idle_runtime_does_not_tick, .timeout = 60) {
  int sv[2];
  tr_assert_eq(nonblocking_pair(sv), 0);
  tr_fd_watch_t *w;
  tr_assert_rc(tr__fd_watch(sv[0], tr_self(), TAG_FD, &w), 0);
  /* Some traffic first, so that workers have polled and the reactor's
   * set was disarmed. */
  tr_assert_rc(ping_self(sv, w, 100), 0);
  void *res = NULL;
  tr_assert_rc(tr_to_thread(idle_wakes, NULL, &res), 0);
  uintptr_t wakes = (uintptr_t)res;
  tr_assert(wakes != UINTPTR_MAX, "the workers did not all park within 10 s");
  cr_log_info("idle 300 ms: %llu reactor wake-ups", (unsigned long long)wakes);
  /* Ticking would be ~300; the reactor's last look before it sees every
   * worker asleep is one or two. */
  tr_assert(wakes < 30, "%llu reactor wake-ups in 300 ms idle", (unsigned long long)wakes);
  tr_assert_rc(tr__fd_unwatch(w), 0);
  close(sv[0]);
  close(sv[1]);
  return wait_watches_freed(5 * SEC);
}
