/*
 * The listener (transport/listen.h) and the node's dial (transport/node.c)
 * where they used to lose things.  A child's socket handed to its channel
 * is closed exactly once whatever becomes of the channel: it takes it
 * (tr__listen_adopted); it exits before it reads the C_ADOPT, which is
 * dropped with it; it had exited before the send.  A process out of fds
 * does not make the listener spin on the connection left in its backlog,
 * and the listener accepts again once fds are back.  A dial refused before
 * it starts (a lookup or handshake in a cancelled scope) frees its Hello.
 *
 * The channels here are fakes that keep channel.c's contract with the
 * listener (take the socket with tr__listen_adopted, release the listener
 * from their exit), so that the listener's side is tested whatever the
 * channel does.  After every test no child process, fd or thread is left
 * (/proc), and the harness finds no message or actor left (tr_stats).
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define TR_TEST_WORKERS 2
#include <tractor/testing.h>

#include "../support/procs.h"
#include "schema/envelope.h"
#include "transport/auth.h"
#include "transport/hello.h"
#include "transport/listen.h"
#include "transport/node.h"

#define MS (1000 * 1000LL)

static void setup(void) { tr_test_procs_setup(); }
static void teardown(void) { tr_test_procs_check(); }

/* The listener's address (the node's: the test's root is the registrar). */
static int listener_sa(struct sockaddr_in *sa) {
  char addr[64];
  int rc = tr__listen_addr(addr, sizeof addr);
  return rc ? rc : tr__addr_parse(addr, sa);
}

/* What the peer of fd has done, without waiting: 1 it closed (EOF, or a
 * reset: it closed with bytes unread), 0 nothing yet, -1 it sent data or
 * the socket failed.  noinline: errno is read right after the recv, on
 * the thread that made it (task.h). */
__attribute__((noinline)) static int peer_closed_now(int fd) {
  char b;
  ssize_t k = recv(fd, &b, 1, MSG_DONTWAIT);
  if (k == 0 || (k < 0 && errno == ECONNRESET))
    return 1;
  if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
    return 0;
  return -1;
}

/* Waits up to ms for the peer of fd to close: as peer_closed_now, 0 when
 * it has not in time. */
static int await_closed(int fd, int ms) {
  int64_t until = tr_now() + ms * MS;
  for (;;) {
    int r = peer_closed_now(fd);
    if (r != 0 || tr_now() >= until || tr_sleep(2 * MS) != 0)
      return r;
  }
}

/* ---- a child's socket, from the listener to its channel ---------------------------------- */

/* A child process connecting back, as channel.c's child_root does, except
 * that its Hello names `pid` (no such child exists: the fakes below expect
 * it).  Runs on tr_to_thread's pool (connect and handshake block).  Static
 * where used: an abandoned wait leaves the thread reading it. */
typedef struct child_conn {
  struct sockaddr_in sa;
  pid_t pid;
  int fd; /* the handshaken socket, or -1 */
  char why[200];
} child_conn_t;

static void *connect_as_child(void *arg) {
  child_conn_t *k = arg;
  k->fd = -1;
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0 || connect(fd, (struct sockaddr *)&k->sa, sizeof k->sa) != 0) {
    snprintf(k->why, sizeof k->why, "connect: %s", strerror(errno));
    if (fd >= 0)
      close(fd);
    return NULL;
  }
  uint8_t uuid[TR_UUID_LEN];
  for (size_t i = 0; i < sizeof uuid; i++)
    uuid[i] = (uint8_t)(k->pid + (pid_t)i + 1);
  tr_hello_info_t hi = {.name = "chan:parent", .uuid = uuid, .flags = TR_HELLO_CHILD};
  tr_msg_t *h = NULL, *peer = NULL;
  int rc = tr__hello_new(&hi, &h);
  if (rc == 0) {
    h->x_->u.hello.pid = k->pid;
    rc = tr__hs_initiate(fd, h, tr_now() + 10000 * MS, &peer, k->why, sizeof k->why);
  } else {
    snprintf(k->why, sizeof k->why, "no Hello: %s", tr_strerror(rc));
  }
  tr_msg_free(h);
  tr_msg_free(peer);
  if (rc) {
    close(fd);
    return NULL;
  }
  k->fd = fd;
  return NULL;
}

/* Connects as child `pid` to this process's listener: the socket, or -1
 * (with a failed check). */
static int child_connects(pid_t pid) {
  static child_conn_t k;
  memset(&k, 0, sizeof k);
  k.pid = pid;
  k.fd = -1;
  if (listener_sa(&k.sa) != 0)
    return -1;
  int rc = tr_to_thread(connect_as_child, &k, NULL);
  tr_check_rc(rc, 0);
  tr_check(k.fd >= 0, "child %d's handshake with the listener: %s", (int)pid, k.why);
  return rc == 0 ? k.fd : -1;
}

/* A channel of a parent, as far as the listener can tell: it takes its
 * socket when its turn reads the C_ADOPT (channel.c's on_adopt), and its
 * exit releases the listener for its pid (channel.c's chan_exit).  Or, as
 * a task actor, one that is busy until it exits and so never reads its
 * C_ADOPT: the message is dropped with the actor, as a dead letter is. */
enum { FAKE_ADOPT = 0x7e7f0001, FAKE_QUIT };

typedef struct fake {
  pid_t pid;
  int fd;       /* the socket it took, or -1 */
  int adopt_rc; /* tr__listen_adopted's */
  int adopts;   /* C_ADOPT messages its turns read (atomic; written after the two above) */
  int busy;     /* the task actor's main task returns once this is 0 (atomic) */
  int started;  /* that task has begun (atomic) */
  int gone;     /* its exit has run (atomic) */
  tr_actor_t *a;
} fake_t;

static void fake_fn(void *state, tr_msg_t *m) {
  fake_t *f = state;
  switch (m->tag) {
  case FAKE_ADOPT: {
    int fd = (int)m->u64;
    f->adopt_rc = tr__listen_adopted(f->pid, fd);
    if (f->adopt_rc == 0)
      f->fd = fd;
    /* Release: the test reads adopt_rc and fd after it sees the count. */
    __atomic_add_fetch(&f->adopts, 1, __ATOMIC_RELEASE);
    break;
  }
  case FAKE_QUIT:
    tr_actor_exit();
    break;
  }
}

/* The busy channel: it never calls tr_recv, so what is sent to it waits
 * in its inbox until it exits. */
static int fake_busy(void *arg) {
  fake_t *f = arg;
  __atomic_store_n(&f->started, 1, __ATOMIC_RELEASE);
  while (__atomic_load_n(&f->busy, __ATOMIC_ACQUIRE))
    if (tr_sleep(1 * MS) != 0)
      break;
  return 0;
}

static void fake_exit(void *state) {
  fake_t *f = state;
  if (f->fd >= 0)
    close(f->fd);
  tr__listen_release(f->pid);
  /* Release: pairs with the test's acquire in fake_wait_gone. */
  __atomic_store_n(&f->gone, 1, __ATOMIC_RELEASE);
}

/* Starts f as the channel of child pid (busy: the task actor): a listener
 * reference, then the expectation, in channel.c's order.  0 or a failed
 * check. */
static int fake_start(fake_t *f, pid_t pid, int busy) {
  memset(f, 0, sizeof *f);
  f->pid = pid;
  f->fd = -1;
  f->busy = busy;
  char addr[64];
  tr_assert_rc(tr__listen_acquire(addr, sizeof addr), 0);
  tr_spawn_opts_t o = {.name = "chan:fake", .on_exit = fake_exit};
  int rc = busy ? tr_spawn_task_actor(fake_busy, f, &o, &f->a) : tr_spawn(fake_fn, f, &o, &f->a);
  if (rc) {
    tr__listen_release(0);
    return tr_fail("SpawnError", "no fake channel: %s", tr_strerror(rc));
  }
  tr__listen_expect(pid, f->a, FAKE_ADOPT);
  return 0;
}

/* Waits (5 s at most) until f's exit has run; drops the test's reference. */
static int fake_wait_gone(fake_t *f) {
  for (int i = 0; i < 5000 && !__atomic_load_n(&f->gone, __ATOMIC_ACQUIRE); i++)
    tr_sleep(1 * MS);
  int gone = __atomic_load_n(&f->gone, __ATOMIC_ACQUIRE);
  tr_actor_release(f->a);
  f->a = NULL;
  return gone;
}

/* Waits (5 s at most) until `want` sockets are in flight. */
static int await_in_flight(size_t want) {
  for (int i = 0; i < 5000 && tr__listen_in_flight() != want; i++)
    tr_sleep(1 * MS);
  return tr__listen_in_flight() == want;
}

/* The fakes' children, which do not exist: the listener takes the pid a
 * Hello names at its word. */
#define FAKE_PID 3999000

/* PROTOCOL.md 4, item 6: a Hello with the child flag whose pid nobody
 * expects and that is no child of this process (here this process's own)
 * is refused at once, unanswered and logged, as a wrong Hello is: it used
 * to be answered, then parked until the handshake timeout (5 s). */
TR_TEST(listen, a_child_hello_with_a_pid_that_is_no_child_is_refused_at_once, .timeout = 60,
        .init = setup, .fini = teardown) {
  static child_conn_t k; /* the thread's: read after the wait */
  memset(&k, 0, sizeof k);
  k.pid = getpid();
  k.fd = -1;
  tr_assert_rc(listener_sa(&k.sa), 0);
  char addr[64];
  tr_assert_rc(tr__listen_acquire(addr, sizeof addr), 0); /* as a parent's channel holds it */
  uint64_t refused = tr__listen_refused();
  int64_t t0 = tr_now();
  tr_check_rc(tr_to_thread(connect_as_child, &k, NULL), 0);
  int64_t took = tr_now() - t0;
  tr_check(k.fd < 0, "the handshake failed (answered, then parked)");
  tr_check(took < 2000 * MS, "refused in %lld ms", (long long)(took / MS));
  tr_check(strstr(k.why, "closed") || strstr(k.why, "reset") || strstr(k.why, "EOF"), "why: %s",
           k.why);
  tr_check(tr__listen_refused() >= refused + 1, "the refusal is counted");
  if (k.fd >= 0)
    close(k.fd);
  tr__listen_release(0);
  return 0;
}

TR_TEST(listen, a_channel_that_takes_its_socket_owns_it, .timeout = 60, .init = setup,
        .fini = teardown) {
  static fake_t f; /* read by the fake's turns until its exit */
  tr_assert_rc(fake_start(&f, FAKE_PID + 1, 0), 0);
  int c = child_connects(FAKE_PID + 1);
  for (int i = 0; i < 5000 && __atomic_load_n(&f.adopts, __ATOMIC_ACQUIRE) == 0; i++)
    tr_sleep(1 * MS);
  tr_check_eq(__atomic_load_n(&f.adopts, __ATOMIC_ACQUIRE), 1, "the channel read its C_ADOPT");
  tr_check_rc(f.adopt_rc, 0, "tr__listen_adopted gave it the socket");
  tr_check_eq(tr__listen_in_flight(), 0, "no socket is in flight once taken");
  tr_check(f.fd >= 0 && fcntl(f.fd, F_GETFD) >= 0, "the channel's socket is open");
  tr_check_eq(tr__listen_adopted(f.pid, f.fd), -1, "a socket is taken once");
  if (c >= 0)
    tr_check_eq(peer_closed_now(c), 0, "the child's connection is up");
  tr_check_rc(tr_send_u64(f.a, FAKE_QUIT, 0), 0);
  tr_check(fake_wait_gone(&f), "the channel exited");
  /* Closed once, by the channel: its release found nothing in flight. */
  if (c >= 0) {
    tr_check_eq(await_closed(c, 5000), 1, "the child sees its channel's close");
    close(c);
  }
  tr_check_eq(tr__listen_in_flight(), 0);
  return 0;
}

TR_TEST(listen, a_channel_that_exits_before_reading_its_adopt_closes_the_socket, .timeout = 60,
        .init = setup, .fini = teardown) {
  static fake_t f;
  tr_assert_rc(fake_start(&f, FAKE_PID + 2, 1), 0);
  for (int i = 0; i < 5000 && !__atomic_load_n(&f.started, __ATOMIC_ACQUIRE); i++)
    tr_sleep(1 * MS);
  int c = child_connects(FAKE_PID + 2);
  /* Handed over while the channel is busy: its C_ADOPT waits unread. */
  tr_check(await_in_flight(1), "the socket is in flight (%zu)", tr__listen_in_flight());
  /* The channel exits: the C_ADOPT goes with it (or, had the listener's
   * send come after the exit, the send fails: the record is made just
   * before it).  Either way the socket must be closed, once. */
  __atomic_store_n(&f.busy, 0, __ATOMIC_RELEASE);
  tr_check(fake_wait_gone(&f), "the channel exited");
  tr_check_eq(__atomic_load_n(&f.adopts, __ATOMIC_ACQUIRE), 0, "it never read its C_ADOPT");
  tr_check_eq(tr__listen_in_flight(), 0, "its release took the record");
  if (c >= 0) {
    tr_check_eq(await_closed(c, 5000), 1, "the child sees its connection closed");
    close(c);
  }
  tr_check_eq(tr__listen_adopted(FAKE_PID + 2, 0), -1, "nothing is left to take");
  return 0;
}

TR_TEST(listen, a_send_to_a_channel_already_gone_closes_the_socket, .timeout = 60, .init = setup,
        .fini = teardown) {
  static fake_t f;
  tr_assert_rc(fake_start(&f, FAKE_PID + 3, 0), 0);
  /* Its exit releases pid 3's expectation: a new one for pid 4 names the
   * exited actor, so the listener's send to it fails (the send that read
   * the freed message to find the fd). */
  tr_check_rc(tr_send_u64(f.a, FAKE_QUIT, 0), 0);
  tr_actor_t *dead = tr_actor_dup(f.a);
  tr_check(fake_wait_gone(&f), "the channel exited");
  char addr[64];
  tr_assert_rc(tr__listen_acquire(addr, sizeof addr), 0); /* what pid 4's channel would hold */
  tr__listen_expect(FAKE_PID + 4, dead, FAKE_ADOPT);
  tr_actor_release(dead);
  uint64_t refused = tr__listen_refused();
  int c = child_connects(FAKE_PID + 4);
  if (c >= 0) {
    tr_check_eq(await_closed(c, 5000), 1, "the listener closed the socket its send could not hand");
    close(c);
  }
  tr_check_eq(tr__listen_in_flight(), 0, "no record is left");
  tr_check_eq(tr__listen_refused(), refused, "handed over, not refused");
  tr__listen_release(FAKE_PID + 4);
  return 0;
}

/* ---- out of fds --------------------------------------------------------------------------- */

/* One connection to sa, its write side shut so that the listener, once it
 * accepts it, reads EOF in its handshake and closes it.  -1 on failure. */
static int connect_and_shut(const struct sockaddr_in *sa) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -1;
  if (connect(fd, (const struct sockaddr *)sa, sizeof *sa) != 0 || shutdown(fd, SHUT_WR) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

static int64_t cpu_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

#define WINDOW_MS 300

/* Run as TR_TEST runs its bodies, but on one worker: while the process
 * has no fd left, ThreadSanitizer cannot open the binary to symbolize a
 * report, so its suppressions (tools/tsan.supp, which name Concurrency
 * Kit's run-queue functions) match nothing, and a second worker stealing
 * from the first made an unsymbolized report of the suppressed kind (seen
 * once in eight runs).  With one worker no run queue is shared.  The
 * listener and this body then share that worker: a spinning listener
 * shows all the same. */
static int out_of_fds_body(void);
Test(listen, out_of_fds_the_listener_waits_and_then_accepts, .timeout = 60, .init = setup,
     .fini = teardown) {
  tr_test_def_t def = {"listen/out_of_fds_the_listener_waits_and_then_accepts", out_of_fds_body, 0,
                       0, 1};
  static tr_test_report_t rep; /* 8 KiB: off the stack */
  if (tr_test_run(&def, &rep) != 0)
    cr_assert_fail("%s", rep.message);
}

static int out_of_fds_body(void) {
  struct sockaddr_in sa;
  tr_assert_rc(listener_sa(&sa), 0);
  int c1 = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  tr_assert(c1 >= 0);
  /* The soft limit at the lowest free fd: every fd below it is taken, so
   * accept4 fails with EMFILE until the limit is back. */
  struct rlimit old;
  tr_assert(getrlimit(RLIMIT_NOFILE, &old) == 0);
  int lowest = fcntl(c1, F_DUPFD_CLOEXEC, 0);
  tr_assert(lowest >= 0);
  close(lowest);
  struct rlimit low = {.rlim_cur = (rlim_t)lowest, .rlim_max = old.rlim_max};
  uint64_t stalls0 = tr__listen_accept_stalls(), refused0 = tr__listen_refused();
  tr_assert(setrlimit(RLIMIT_NOFILE, &low) == 0);
  /* From here to the restore: tr_check only, so that the limit is always
   * restored. */
  int connected = connect(c1, (struct sockaddr *)&sa, sizeof sa) == 0 && shutdown(c1, SHUT_WR) == 0;
  tr_check(connected, "a connection waits in the backlog");
  for (int i = 0; connected && i < 5000 && tr__listen_accept_stalls() == stalls0; i++)
    tr_sleep(1 * MS);
  uint64_t s1 = tr__listen_accept_stalls();
  tr_check(s1 > stalls0, "the listener could not accept it");
  int64_t t1 = tr_now(), cpu1 = cpu_now();
  tr_check_rc(tr_sleep(WINDOW_MS * MS), 0);
  int64_t t2 = tr_now(), cpu2 = cpu_now();
  uint64_t s2 = tr__listen_accept_stalls();
  tr_assert(setrlimit(RLIMIT_NOFILE, &old) == 0);
  /* One attempt every 100 ms; a listener that re-armed at once made one
   * per turn (millions a second). */
  uint64_t allowed = (uint64_t)((t2 - t1) / (100 * MS)) + 3;
  tr_check(s2 - s1 <= allowed, "%llu accept attempts in %lld ms (at most %llu)",
           (unsigned long long)(s2 - s1), (long long)((t2 - t1) / MS), (unsigned long long)allowed);
  /* The whole process, worker and reactor, mostly slept: a spinning
   * listener costs a core (and the reactor much of another). */
  int64_t cpu_ms = (cpu2 - cpu1) / MS, wall_ms = (t2 - t1) / MS;
  tr_check(cpu_ms * 2 < wall_ms, "%lld ms of CPU in %lld ms", (long long)cpu_ms,
           (long long)wall_ms);
  /* Fds are back: the waiting connection is accepted (and closed: its
   * handshake ended at EOF), and so is a new one. */
  tr_check_eq(await_closed(c1, 5000), 1, "the waiting connection was taken at the next try");
  close(c1);
  int c2 = connect_and_shut(&sa);
  tr_check(c2 >= 0, "a new connection");
  if (c2 >= 0) {
    tr_check_eq(await_closed(c2, 5000), 1, "the new connection is accepted at once");
    close(c2);
  }
  for (int i = 0; i < 5000 && tr__listen_refused() < refused0 + 2; i++)
    tr_sleep(1 * MS);
  tr_check(tr__listen_refused() >= refused0 + 2, "both handshakes ended at the listener");
  return 0;
}

/* ---- dials that never start ------------------------------------------------------------------ */

#define N_CANCELLED 2000

/* A dial in a cancelled scope is refused by tr_to_thread before any thread
 * sees it: its Hello and record were left for a thread that never came.
 * The harness counts the messages not freed. */
TR_TEST(node, handshakes_in_a_cancelled_scope_leak_nothing, .timeout = 60, .init = setup,
        .fini = teardown) {
  char addr[64];
  tr_assert_rc(tr_node_addr(addr, sizeof addr, NULL), 0);
  tr_check_rc(tr__node_handshake(addr), 0); /* outside the scope: a real one */
  tr_scope_t s;
  tr_assert_rc(tr_scope_open(&s, TR_NO_DEADLINE, 0), 0);
  tr_check_rc(tr_scope_cancel(&s), 0);
  int others = 0, last = 0;
  for (int i = 0; i < N_CANCELLED; i++) {
    int rc = tr__node_handshake(addr);
    if (rc != -TR_ECANCELED) {
      others++;
      last = rc;
    }
  }
  tr_error_clear();
  (void)tr_scope_close(&s);
  tr_check_eq(others, 0, "every dial was cancelled (one returned %s)", tr_strerror(last));
  return 0;
}

typedef struct lookups {
  pid_t tool;
  int others; /* results that were not -TR_ECANCELED */
  int last;
} lookups_t;

/* With the registrar gone, every lookup dials the registry address again;
 * in a cancelled scope that dial is refused before it starts. */
static int root_lookups(void *arg) {
  lookups_t *l = arg;
  int registrar = 1;
  tr_assert_rc(tr_node_addr(NULL, 0, &registrar), 0);
  tr_assert(registrar == 0, "the tool is the registrar");
  tr_actor_t *r = tr__node_registrar();
  tr_assert(r != NULL);
  kill(l->tool, SIGKILL);
  waitpid(l->tool, NULL, 0);
  l->tool = -1;
  /* Its proxy ends with the channel (EOF): the next lookup must dial. */
  for (int i = 0; i < 5000 && !tr_actor_exited(r); i++)
    tr_sleep(1 * MS);
  tr_check(tr_actor_exited(r), "the registrar's proxy is gone");
  tr_actor_release(r);
  tr_scope_t s;
  tr_assert_rc(tr_scope_open(&s, TR_NO_DEADLINE, 0), 0);
  tr_check_rc(tr_scope_cancel(&s), 0);
  for (int i = 0; i < N_CANCELLED; i++) {
    tr_portal_t *p = NULL;
    int rc = i % 2 ? tr_find_actor("anyone", &p) : tr_wait_for_actor("anyone", TR_NO_DEADLINE, &p);
    tr_portal_release(p);
    if (rc != -TR_ECANCELED) {
      l->others++;
      l->last = rc;
    }
  }
  tr_error_clear();
  (void)tr_scope_close(&s);
  return 0;
}

Test(node, lookups_in_a_cancelled_scope_leak_nothing, .timeout = 60, .init = setup,
     .fini = teardown) {
  char addr[64];
  cr_assert_eq(tr__test_reserve_registry(addr, sizeof addr), 0);
  lookups_t l = {.tool = tr_test_registry_tool_start(addr, NULL)};
  cr_assert(l.tool > 0, "tractor-registry started at %s (TR_REGISTRY_TOOL)", addr);
  tr__test_slot_reset();
  int rc = tr_main(0, NULL, root_lookups, &l, NULL);
  if (l.tool > 0) {
    kill(l.tool, SIGKILL);
    waitpid(l.tool, NULL, 0);
  }
  cr_expect_eq(rc, 0, "%s", tr_strerror(rc));
  cr_expect_eq(__atomic_load_n(&tr__test_slot.count, __ATOMIC_RELAXED), 0, "%s",
               tr__test_slot_text() ? tr__test_slot_text() : "");
  cr_expect_eq(l.others, 0, "every lookup was cancelled (one returned %s)", tr_strerror(l.last));
  tr_stats_t st;
  tr_stats(&st);
  cr_expect_eq(st.msgs_allocated, 0, "%llu message(s) not freed",
               (unsigned long long)st.msgs_allocated);
  cr_expect_eq(st.actors_allocated, 0, "%llu actor(s) not freed",
               (unsigned long long)st.actors_allocated);
}
