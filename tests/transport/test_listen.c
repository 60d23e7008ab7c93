/*
 * The listener (transport/listen.h) where it used to lose things.  A
 * child's socket handed to its channel is closed exactly once whatever
 * becomes of the channel: it takes it (tr__listen_adopted); it exits
 * before it reads the C_ADOPT, which is dropped with it; it had exited
 * before the send.
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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define TR_TEST_WORKERS 2
#include <tractor/testing.h>

#include "../support/procs.h"
#include "schema/envelope.h"
#include "transport/auth.h"
#include "transport/hello.h"
#include "transport/listen.h"

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
