/*
 * Several hosts (issue 11): tractor nodes in network namespaces joined by
 * a bridge (tests/support/netns.h), with addresses of 198.51.100.0/24 that
 * exist only inside the namespaces, one secret for all.  A registrar runs
 * in host 0 (198.51.100.10:MH_PORT), a server node in host 1 with a daemon
 * actor (in its own process, or in a child process of it), and clients in
 * host 2 -- all of them tests/transport/multihost_node.c, whose path ctest
 * passes in TR_MULTIHOST_NODE, started with tr_netns_spawn_out and read
 * through a pipe on their stdout.
 *
 *  - three_hosts_*: the client finds the actor through the registrar and
 *    checks RPC, error boxing, a stream of MH_STREAM_N values, remote
 *    cancellation and context cancellation, across the hosts (the checks
 *    are the client's, multihost_node.c; it exits 0 when all pass); with
 *    the actor in a child process of the server node, that child is gone
 *    once the server has exited.
 *  - wrong_secret_*: a node with another secret fails to start (tr_main
 *    -TR_EPERM), so does one without a secret on a non-loopback address;
 *    the registrar and server serve on, and a client with the right
 *    secret still passes.
 *  - partition_*: with a peer timeout of PEER_TIMEOUT_MS for all, the
 *    server's link is taken down while the client streams from it; the
 *    client's stream ends with -TR_EIO within the timeout and a margin,
 *    the name is no longer found, and the partitioned server and the
 *    registrar exit cleanly (status 0) on SIGTERM.
 *  - unreachable_registrar_*: a node whose registrar address answers
 *    nothing (no host has it) fails to start after one handshake timeout,
 *    not two.
 *
 * Readiness is what the nodes print (READY lines), waited for with
 * deadlines; no sleep orders anything.  Each test tears down in its fini,
 * also after a failed assertion: every node is killed and reaped, the
 * namespaces deleted, and no child, zombie, fd or thread is left.  Without
 * root or iproute2 every test is skipped with tr_netns_available's reason.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../support/netns.h"
#include "../support/procs.h"
#include "multihost_node.h"

#define SECRET "one secret for every host of the multihost test"
#define PEER_TIMEOUT_MS 1500
/* Startup of a node (exec, the runtime, the handshakes) and an exit after
 * SIGTERM: generous, sanitizer builds are slow. */
#define START_MS 15000
#define EXIT_MS 15000
/* A client's whole run (its own deadline is longer than this needs). */
#define CLIENT_MS 30000
#define MAX_NODES 6

extern char **environ;

/* ---- nodes ---------------------------------------------------------------------------- */

/* A node program started in a host, with its stdout on a pipe. */
typedef struct node {
  char what[48];  /* for messages: "registrar", "server", ... */
  pid_t pid;      /* -1 once reaped */
  int status;     /* its wait status once reaped */
  int out;        /* the pipe's read end (close-on-exec), -1 once closed */
  char buf[4096]; /* what it printed and no read_line has taken yet */
  size_t len;
} node_t;

/* The test's net and nodes; the fini tears them down whatever happened. */
static tr_netns_net_t net;
static node_t nodes[MAX_NODES];
static int n_nodes;
static char registry[32]; /* "198.51.100.10:7412" */

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The environment of one node: this process's, without its TR_*
 * variables (a test run's TR_REGISTRY_ADDR=off, TR_SPAWN, ...) except
 * those kept below, plus the overrides of env_set. */
typedef struct env {
  char *v[1024]; /* borrowed from environ, or pointing into own[] */
  char own[8][256];
  int n, n_own;
} env_t;

static int keep_tr_var(const char *kv) {
  static const char *const keep[] = {"TR_LOG=", "TR_PEER_TIMEOUT_MS=", "TR_HANG_REPORT_MS="};
  for (size_t i = 0; i < sizeof keep / sizeof keep[0]; i++)
    if (strncmp(kv, keep[i], strlen(keep[i])) == 0)
      return 1;
  return 0;
}

static void env_init(env_t *e) {
  e->n = e->n_own = 0;
  for (char **p = environ; *p; p++) {
    cr_assert_lt(e->n, (int)(sizeof e->v / sizeof e->v[0]) - 10, "the environment is too big");
    if (strncmp(*p, "TR_", 3) != 0 || keep_tr_var(*p))
      e->v[e->n++] = *p;
  }
  e->v[e->n] = NULL;
}

/* Sets key to the formatted value, replacing an earlier one. */
__attribute__((format(printf, 3, 4))) static void env_set(env_t *e, const char *key,
                                                          const char *fmt, ...) {
  cr_assert_lt(e->n_own, (int)(sizeof e->own / sizeof e->own[0]), "too many overrides");
  char *slot = e->own[e->n_own++];
  int k = snprintf(slot, sizeof e->own[0], "%s=", key);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(slot + k, sizeof e->own[0] - (size_t)k, fmt, ap);
  va_end(ap);
  for (int i = 0; i < e->n; i++)
    if (strncmp(e->v[i], slot, (size_t)k) == 0) {
      e->v[i] = slot;
      return;
    }
  e->v[e->n++] = slot;
  e->v[e->n] = NULL;
}

/* The environment of a node in host `host`: the registry, its own address
 * to listen on, the secret (NULL: none). */
static void env_for(env_t *e, int host, const char *secret) {
  env_init(e);
  env_set(e, "TR_REGISTRY_ADDR", "%s", registry);
  env_set(e, "TR_BIND_ADDR", "%s", tr_netns_addr(&net, host));
  if (secret)
    env_set(e, "TR_SECRET", "%s", secret);
}

/* Starts multihost_node with args (NULL-terminated) in host `host`. */
static node_t *start_node(int host, const env_t *e, const char *what, ...) {
  const char *exe = getenv("TR_MULTIHOST_NODE");
  cr_assert(exe != NULL, "TR_MULTIHOST_NODE names the node program");
  cr_assert_lt(n_nodes, MAX_NODES);
  char *argv[8];
  int argc = 0;
  argv[argc++] = (char *)exe;
  va_list ap;
  va_start(ap, what);
  const char *a;
  while ((a = va_arg(ap, const char *)) && argc < 7)
    argv[argc++] = (char *)a;
  va_end(ap);
  argv[argc] = NULL;

  node_t *n = &nodes[n_nodes];
  memset(n, 0, sizeof *n);
  n->pid = -1;
  n->out = -1;
  snprintf(n->what, sizeof n->what, "%s in host %d", what, host);
  int p[2];
  cr_assert_eq(pipe2(p, O_CLOEXEC), 0, "pipe2: %s", strerror(errno));
  int rc = tr_netns_spawn_out(&net, host, argv, e->v, p[1], &n->pid);
  close(p[1]); /* the child holds the only write end */
  if (rc != 0) {
    close(p[0]);
    cr_assert_fail("starting %s: %s", n->what, strerror(-rc));
  }
  n->out = p[0];
  n_nodes++;
  return n;
}

/* Waits up to timeout_ms for n to exit and reaps it.  0 (n->status holds
 * the wait status) or -ETIMEDOUT (it still runs). */
static int wait_exit(node_t *n, int timeout_ms) {
  if (n->pid <= 0)
    return 0;
  int pfd = (int)syscall(SYS_pidfd_open, n->pid, 0);
  cr_assert(pfd >= 0, "pidfd_open: %s", strerror(errno));
  struct pollfd p = {.fd = pfd, .events = POLLIN};
  int64_t until = now_ms() + timeout_ms;
  int r;
  do {
    int64_t left = until - now_ms();
    r = poll(&p, 1, left > 0 ? (int)left : 0);
  } while (r < 0 && errno == EINTR);
  close(pfd);
  if (r == 0)
    return -ETIMEDOUT;
  while (waitpid(n->pid, &n->status, 0) < 0)
    cr_assert_eq(errno, EINTR, "waitpid %s: %s", n->what, strerror(errno));
  n->pid = -1;
  return 0;
}

/* How n ended, for messages. */
static const char *ended(const node_t *n, char *buf, size_t len) {
  if (n->pid > 0)
    snprintf(buf, len, "still running");
  else if (WIFEXITED(n->status))
    snprintf(buf, len, "exited with status %d", WEXITSTATUS(n->status));
  else if (WIFSIGNALED(n->status))
    snprintf(buf, len, "killed by signal %d", WTERMSIG(n->status));
  else
    snprintf(buf, len, "wait status %#x", n->status);
  return buf;
}

/* Reads n's next line (without its newline) into line, waiting up to
 * timeout_ms.  0; -ETIMEDOUT; -EPIPE when n closed its stdout first. */
static int read_line(node_t *n, char *line, size_t len, int timeout_ms) {
  int64_t until = now_ms() + timeout_ms;
  for (;;) {
    char *nl = memchr(n->buf, '\n', n->len);
    if (nl || n->len == sizeof n->buf) {
      size_t k = nl ? (size_t)(nl - n->buf) : n->len;
      snprintf(line, len, "%.*s", (int)k, n->buf);
      size_t used = nl ? k + 1 : k;
      memmove(n->buf, n->buf + used, n->len - used);
      n->len -= used;
      return 0;
    }
    if (n->out < 0)
      return -EPIPE;
    int64_t left = until - now_ms();
    if (left <= 0)
      return -ETIMEDOUT;
    struct pollfd p = {.fd = n->out, .events = POLLIN};
    int r = poll(&p, 1, (int)left);
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0)
      return r == 0 ? -ETIMEDOUT : -errno;
    ssize_t k = read(n->out, n->buf + n->len, sizeof n->buf - n->len);
    if (k < 0 && errno == EINTR)
      continue;
    if (k <= 0) {
      close(n->out);
      n->out = -1;
      continue; /* a last line without its newline is still a line */
    }
    n->len += (size_t)k;
  }
}

/* Waits for n's next line and asserts that it starts with prefix; the
 * line is copied into line. */
static void expect_line(node_t *n, const char *prefix, int timeout_ms, char *line, size_t len) {
  int rc = read_line(n, line, len, timeout_ms);
  if (rc != 0) {
    char how[64];
    if (rc == -EPIPE)
      (void)wait_exit(n, 2000);
    cr_assert_fail("%s: no \"%s\" line (%s); the node %s", n->what, prefix,
                   rc == -ETIMEDOUT ? "timed out" : strerror(-rc), ended(n, how, sizeof how));
  }
  cr_assert(strncmp(line, prefix, strlen(prefix)) == 0, "%s printed \"%s\", not \"%s...\"", n->what,
            line, prefix);
}

/* Asserts that n exits within timeout_ms with status `want`. */
static void expect_exit(node_t *n, int want, int timeout_ms) {
  int rc = wait_exit(n, timeout_ms);
  cr_assert_eq(rc, 0, "%s did not exit within %d ms", n->what, timeout_ms);
  char how[64];
  cr_assert(WIFEXITED(n->status) && WEXITSTATUS(n->status) == want, "%s %s, not status %d", n->what,
            ended(n, how, sizeof how), want);
}

/* SIGTERM (tr_main cancels the root), then a clean exit (status 0). */
static void stop_node(node_t *n) {
  cr_assert(n->pid > 0, "%s runs until stopped (%d)", n->what, (int)n->pid);
  cr_assert_eq(kill(n->pid, SIGTERM), 0);
  expect_exit(n, MH_EXIT_OK, EXIT_MS);
}

/* 1 while n runs (it has not exited: it is not a zombie). */
static int running(node_t *n) {
  if (n->pid <= 0)
    return 0;
  int st;
  pid_t r = waitpid(n->pid, &st, WNOHANG);
  if (r == n->pid) {
    n->status = st;
    n->pid = -1;
    return 0;
  }
  return 1;
}

/* ---- setup and teardown ------------------------------------------------------------------ */

static void setup(void) { tr_test_procs_setup(); }

/* Kills and reaps every node, closes the pipes, deletes the namespaces;
 * then checks that nothing is left (no child, zombie, fd or thread). */
static void teardown(void) {
  for (int i = 0; i < n_nodes; i++) {
    node_t *n = &nodes[i];
    if (n->pid > 0) {
      kill(n->pid, SIGKILL);
      while (waitpid(n->pid, &n->status, 0) < 0 && errno == EINTR) {
      }
      n->pid = -1;
    }
    if (n->out >= 0)
      close(n->out);
    n->out = -1;
  }
  n_nodes = 0;
  tr_netns_destroy(&net);
  tr_test_procs_check();
}

/* Skips without namespaces; makes a net of n_hosts. */
static void make_net(int n_hosts) {
  char why[600];
  if (!tr_netns_available(why, sizeof why))
    cr_skip("%s", why);
  int rc = tr_netns_create(&net, n_hosts);
  cr_assert_eq(rc, 0, "tr_netns_create(%d): %s (%s)", n_hosts, strerror(-rc), tr_netns_error(&net));
  snprintf(registry, sizeof registry, "%s:%d", tr_netns_addr(&net, 0), MH_PORT);
}

/* The registrar in host 0, ready once it says so. */
static node_t *start_registrar(const char *peer_timeout_ms) {
  env_t e;
  env_for(&e, 0, SECRET);
  if (peer_timeout_ms)
    env_set(&e, "TR_PEER_TIMEOUT_MS", "%s", peer_timeout_ms);
  node_t *n = start_node(0, &e, "registrar", "registrar", (char *)NULL);
  char line[256], want[64];
  expect_line(n, "READY ", START_MS, line, sizeof line);
  snprintf(want, sizeof want, "READY %s", registry);
  cr_assert_str_eq(line, want, "the registrar listens on the registry address");
  return n;
}

/* A server node in `host` with daemon actor `name` (kind "thread" or
 * "process"); *actor_pid gets the actor's process. */
static node_t *start_server(int host, const char *name, const char *kind,
                            const char *peer_timeout_ms, pid_t *actor_pid) {
  env_t e;
  env_for(&e, host, SECRET);
  if (peer_timeout_ms)
    env_set(&e, "TR_PEER_TIMEOUT_MS", "%s", peer_timeout_ms);
  node_t *n = start_node(host, &e, "server", "server", name, kind, (char *)NULL);
  char line[256];
  expect_line(n, "READY ", START_MS, line, sizeof line);
  long pid = 0;
  cr_assert_eq(sscanf(line, "READY %ld", &pid), 1, "%s: %s", n->what, line);
  *actor_pid = (pid_t)pid;
  return n;
}

/* Runs a client node in `host` to its end; asserts its exit status. */
static void run_client(int host, const char *secret, int want_status) {
  env_t e;
  env_for(&e, host, secret);
  node_t *n = start_node(host, &e, "client", "client", "svc", tr_netns_addr(&net, 1), (char *)NULL);
  if (want_status == MH_EXIT_OK) {
    char line[256];
    expect_line(n, "OK ", CLIENT_MS, line, sizeof line);
    cr_log_info("%s: %s", n->what, line);
  }
  expect_exit(n, want_status, CLIENT_MS);
}

/* ---- tests ---------------------------------------------------------------------------------- */

TestSuite(multihost, .init = setup, .fini = teardown, .timeout = 90);

static void three_hosts(const char *kind) {
  make_net(3);
  node_t *reg = start_registrar(NULL);
  pid_t actor = 0;
  node_t *srv = start_server(1, "svc", kind, NULL, &actor);
  if (strcmp(kind, "process") == 0)
    cr_assert_neq(actor, srv->pid, "the actor runs in a child process of the server node");
  else
    cr_assert_eq(actor, srv->pid, "the actor runs in the server node's process");
  run_client(2, SECRET, MH_EXIT_OK);
  /* A second client, in the registrar's host this time. */
  run_client(0, SECRET, MH_EXIT_OK);
  stop_node(srv);
  cr_assert(kill(actor, 0) != 0 && errno == ESRCH, "the actor's process %d is gone", (int)actor);
  stop_node(reg);
}

Test(multihost, three_hosts_thread_actor) { three_hosts("thread"); }

Test(multihost, three_hosts_process_actor) { three_hosts("process"); }

/* A server node that is the registrar too, listening on every interface
 * (registry address 0.0.0.0:MH_PORT): nothing better is known of its own
 * actors' address than the wildcard host, which a reader dials at the
 * host it reaches the registrar at (OPERATIONS.md).  A client in host 2
 * finds its actor there and passes every check. */
Test(multihost, a_wildcard_registrars_own_actor_is_found_from_another_host) {
  make_net(3);
  env_t e;
  env_for(&e, 0, SECRET);
  env_set(&e, "TR_REGISTRY_ADDR", "0.0.0.0:%d", MH_PORT);
  node_t *srv = start_node(0, &e, "registrar+server", "server", "svc", "thread", (char *)NULL);
  char line[256];
  expect_line(srv, "READY ", START_MS, line, sizeof line);
  env_for(&e, 2, SECRET);
  node_t *c = start_node(2, &e, "client", "client", "svc", tr_netns_addr(&net, 0), (char *)NULL);
  expect_line(c, "OK ", CLIENT_MS, line, sizeof line);
  cr_log_info("%s: %s", c->what, line);
  expect_exit(c, MH_EXIT_OK, CLIENT_MS);
  stop_node(srv);
}

Test(multihost, wrong_secret_is_refused) {
  make_net(3);
  node_t *reg = start_registrar(NULL);
  pid_t actor = 0;
  node_t *srv = start_server(1, "svc", "process", NULL, &actor);
  /* Another secret: the registrar refuses its handshake, tr_main fails
   * with -TR_EPERM before the client's root runs. */
  run_client(2, "not the secret of this deployment", MH_EXIT_EPERM);
  /* No secret at all, on a non-loopback address: refused before it even
   * dials. */
  run_client(2, NULL, MH_EXIT_EPERM);
  cr_assert(running(reg) && running(srv), "the registrar and the server serve on");
  run_client(2, SECRET, MH_EXIT_OK);
  stop_node(srv);
  stop_node(reg);
}

Test(multihost, partition_is_detected_by_heartbeats) {
  char pt[16];
  snprintf(pt, sizeof pt, "%d", PEER_TIMEOUT_MS);
  make_net(3);
  node_t *reg = start_registrar(pt);
  pid_t actor = 0;
  node_t *srv = start_server(1, "svc", "thread", pt, &actor);
  env_t e;
  env_for(&e, 2, SECRET);
  env_set(&e, "TR_PEER_TIMEOUT_MS", "%s", pt);
  node_t *cli = start_node(2, &e, "partition client", "partition", "svc", (char *)NULL);
  char line[256];
  expect_line(cli, "READY", START_MS, line, sizeof line);

  /* The cut: host 1's link goes down, both ends. */
  int rc = tr_netns_link(&net, 1, 0);
  cr_assert_eq(rc, 0, "link down: %s", tr_netns_error(&net));
  int64_t cut = now_ms();
  expect_line(cli, "ENDED ", 3 * PEER_TIMEOUT_MS + 5000, line, sizeof line);
  int64_t took = now_ms() - cut;
  int code = 0;
  long long silent = -1;
  char name[32] = "";
  cr_assert_eq(sscanf(line, "ENDED %d %31s %lld", &code, name, &silent), 3, "%s", line);
  cr_log_info("partition: \"%s\", %lld ms after the cut", line, (long long)took);
  cr_assert_str_eq(name, "TR_EIO", "the stream ends with a transport error: %s", line);
  cr_assert_lt(took, 2 * PEER_TIMEOUT_MS, "detected within the peer timeout and a margin: %lld ms",
               (long long)took);
  cr_assert_geq(silent, PEER_TIMEOUT_MS - 100,
                "by the heartbeats' timeout, not before (%lld ms of silence)", silent);
  expect_line(cli, "GONE ", 4 * PEER_TIMEOUT_MS + 10000, line, sizeof line);
  cr_assert(strstr(line, "TR_ENOTFOUND") != NULL, "the name is no longer found: %s", line);
  expect_exit(cli, MH_EXIT_OK, EXIT_MS);

  /* Both sides of the cut still stop cleanly, the server while it is
   * still cut off. */
  cr_assert(running(srv), "the partitioned server lives on until it is stopped");
  stop_node(srv);
  stop_node(reg);
}

/* A registrar that cannot be reached (an address of the /24 that no host
 * has: its ARP goes unanswered, the connect neither succeeds nor is
 * refused) fails the start within the handshake timeout (the peer
 * timeout, here): once, not once more to undo a registration that never
 * happened. */
Test(multihost, unreachable_registrar_fails_start_within_the_timeout) {
  char pt[16];
  snprintf(pt, sizeof pt, "%d", PEER_TIMEOUT_MS);
  make_net(3);
  env_t e;
  env_for(&e, 2, SECRET);
  env_set(&e, "TR_REGISTRY_ADDR", "198.51.100.99:%d", MH_PORT);
  env_set(&e, "TR_PEER_TIMEOUT_MS", "%s", pt);
  int64_t t0 = now_ms();
  node_t *cli = start_node(2, &e, "client", "client", "svc", (char *)NULL);
  expect_exit(cli, MH_EXIT_START, EXIT_MS);
  int64_t took = now_ms() - t0;
  cr_log_info("an unreachable registrar: the start failed after %lld ms", (long long)took);
  cr_assert_geq(took, PEER_TIMEOUT_MS - 100, "the connect was given its time (%lld ms)",
                (long long)took);
  cr_assert_lt(took, PEER_TIMEOUT_MS + 1000, "one handshake timeout, not two (%lld ms)",
               (long long)took);
}
