/*
 * The multi-host test support (tests/support/netns.h): hosts made of
 * network namespaces on one bridge.  A TCP server in host 0
 * (tests/transport/netns_peer.c, started there with tr_netns_spawn; ctest
 * passes its path in TR_NETNS_PEER) answers clients in the other hosts
 * (forked children that tr_netns_enter a host, or this test process
 * itself); the hosts' addresses do not exist outside the namespaces; a host
 * whose link is down is cut off and comes back when it is up; a failed
 * create and tr_netns_destroy leave no namespace, and tr_netns_sweep
 * removes those of a run that died.  After every test no child process,
 * zombie or extra fd is left (/proc).
 *
 * Making namespaces needs root and iproute2: without them every test is
 * skipped with tr_netns_available's reason.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../support/netns.h"
#include "../support/procs.h"

#define PORT "7411"

/* One net and its server per test; fini tears them down even after a
 * failed assertion, so a failing test leaves no namespace behind either. */
static tr_netns_net_t net;
static pid_t server = -1;
static int base_fds;

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
  nanosleep(&ts, NULL);
}

static void need_netns(void) {
  char why[600];
  if (!tr_netns_available(why, sizeof why))
    cr_skip("%s", why);
  base_fds = tr_test_open_fds();
}

static void make_net(int n_hosts) {
  int rc = tr_netns_create(&net, n_hosts);
  cr_assert_eq(rc, 0, "tr_netns_create(%d): %s (%s)", n_hosts, strerror(-rc), tr_netns_error(&net));
}

static void start_server(int host) {
  const char *exe = getenv("TR_NETNS_PEER");
  cr_assert(exe != NULL, "TR_NETNS_PEER names the server program");
  char *argv[] = {(char *)exe, "serve", (char *)tr_netns_addr(&net, host), PORT, NULL};
  int rc = tr_netns_spawn(&net, host, argv, NULL, &server);
  cr_assert_eq(rc, 0, "tr_netns_spawn of the server: %s", strerror(-rc));
}

static void stop_server(void) {
  if (server > 0) {
    kill(server, SIGKILL);
    while (waitpid(server, NULL, 0) < 0 && errno == EINTR) {
    }
    server = -1;
  }
}

static void teardown(void) {
  stop_server();
  tr_netns_destroy(&net);
}

/* Tears down, then: no namespace of the net is listed, no child and no
 * extra fd is left. */
static void check_clean(void) {
  char names[TR_NETNS_MAX_HOSTS + 1][40];
  int n = 0;
  for (int i = TR_NETNS_SWITCH; i < net.n_hosts; i++)
    snprintf(names[n++], sizeof names[0], "%s", tr_netns_name(&net, i));
  teardown();
  for (int i = 0; i < n; i++)
    cr_assert_eq(tr_netns_listed(names[i]), 0, "%s is gone after destroy", names[i]);
  cr_assert_eq(tr_test_live_children(), 0, "no child or zombie of this process is left");
  cr_assert_eq(tr_test_open_fds(), base_fds, "no fd is left open");
}

/* ---- clients ---------------------------------------------------------------------------- */

/* Waits up to timeout_ms for events on fd; -ETIMEDOUT when none came. */
static int wait_fd(int fd, short events, int timeout_ms) {
  struct pollfd p = {.fd = fd, .events = events};
  int r;
  while ((r = poll(&p, 1, timeout_ms)) < 0 && errno == EINTR) {
  }
  return r < 0 ? -errno : r == 0 ? -ETIMEDOUT : 0;
}

/* From the calling thread's namespace: connects to addr:PORT, sends msg and
 * expects "echo msg" back, each step bounded by timeout_ms.  Returns 0 or
 * a negative errno (-EPROTO: a wrong answer). */
static int round_trip(const char *addr, const char *msg, int timeout_ms) {
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(PORT))};
  if (inet_pton(AF_INET, addr, &sa.sin_addr) != 1)
    return -EINVAL;
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -errno;
  int rc = 0;
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
    rc = errno == EINPROGRESS ? wait_fd(fd, POLLOUT, timeout_ms) : -errno;
    int err = 0;
    socklen_t len = sizeof err;
    if (rc == 0 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err)
      rc = -err;
  }
  char line[300];
  int len = snprintf(line, sizeof line, "%s\n", msg);
  if (rc == 0 && write(fd, line, (size_t)len) != len)
    rc = -EIO;
  char reply[300], want[300];
  size_t got = 0;
  while (rc == 0 && got < sizeof reply - 1 && (got == 0 || reply[got - 1] != '\n')) {
    if ((rc = wait_fd(fd, POLLIN, timeout_ms)) != 0)
      break;
    ssize_t r = read(fd, reply + got, sizeof reply - 1 - got);
    if (r < 0 && errno != EINTR && errno != EAGAIN)
      rc = -errno;
    else if (r == 0)
      rc = -ECONNRESET;
    else if (r > 0)
      got += (size_t)r;
  }
  reply[got] = '\0';
  snprintf(want, sizeof want, "echo %s\n", msg);
  if (rc == 0 && strcmp(reply, want) != 0)
    rc = -EPROTO;
  close(fd);
  return rc;
}

/* round_trip from host `from`, in a forked child that enters it; attempts
 * are repeated for up to retry_ms (0: one attempt).  Returns 0 or a
 * negative errno (the last attempt's). */
static int round_trip_from(int from, const char *addr, int timeout_ms, int retry_ms) {
  pid_t c = fork();
  cr_assert(c >= 0, "fork: %s", strerror(errno));
  if (c == 0) {
    /* Criterion's assertions belong to the test process: the child only
     * reports through its exit status. */
    int rc = tr_netns_enter(&net, from);
    if (rc != 0)
      _exit(-rc);
    char msg[64];
    snprintf(msg, sizeof msg, "hello from host %d", from);
    int64_t until = now_ms() + retry_ms;
    while ((rc = round_trip(addr, msg, timeout_ms)) != 0 && now_ms() < until)
      sleep_ms(20);
    _exit(-rc);
  }
  int st;
  while (waitpid(c, &st, 0) < 0)
    cr_assert_eq(errno, EINTR, "waitpid: %s", strerror(errno));
  cr_assert(WIFEXITED(st), "the client child ended with status %d", st);
  return -WEXITSTATUS(st);
}

/* ---- tests ------------------------------------------------------------------------------ */

TestSuite(netns, .fini = teardown, .timeout = 60);

Test(netns, three_hosts_round_trip) {
  need_netns();
  make_net(3);
  for (int i = 0; i < 3; i++) {
    char want[16];
    snprintf(want, sizeof want, "198.51.100.%d", 10 + i);
    cr_assert_str_eq(tr_netns_addr(&net, i), want);
    cr_assert_eq(tr_netns_listed(tr_netns_name(&net, i)), 1, "host %d is a named namespace", i);
  }
  cr_assert_eq(tr_netns_listed(tr_netns_name(&net, TR_NETNS_SWITCH)), 1);
  cr_assert_null(tr_netns_addr(&net, 3));

  start_server(0);
  /* The server needs a moment to listen: the first client retries. */
  int rc = round_trip_from(1, tr_netns_addr(&net, 0), 1000, 5000);
  cr_assert_eq(rc, 0, "host 1 -> host 0: %s", strerror(-rc));
  rc = round_trip_from(2, tr_netns_addr(&net, 0), 1000, 0);
  cr_assert_eq(rc, 0, "host 2 -> host 0: %s", strerror(-rc));
  rc = round_trip_from(0, tr_netns_addr(&net, 0), 1000, 0);
  cr_assert_eq(rc, 0, "host 0 -> itself: %s", strerror(-rc));
  check_clean();
}

/* Counts this namespace's interfaces, IPv4 addresses (and those in
 * 198.51.100.0/24), and IPv4 routes. */
static void root_counts(int *ifs, int *addrs, int *ours, int *routes) {
  struct if_nameindex *ni = if_nameindex();
  *ifs = 0;
  for (struct if_nameindex *p = ni; p && p->if_index; p++)
    (*ifs)++;
  if (ni)
    if_freenameindex(ni);
  struct ifaddrs *ia = NULL;
  *addrs = *ours = 0;
  cr_assert_eq(getifaddrs(&ia), 0);
  for (struct ifaddrs *p = ia; p; p = p->ifa_next)
    if (p->ifa_addr && p->ifa_addr->sa_family == AF_INET) {
      (*addrs)++;
      uint32_t a = ntohl(((struct sockaddr_in *)p->ifa_addr)->sin_addr.s_addr);
      if ((a & 0xffffff00u) == 0xc6336400u) /* 198.51.100.0/24 */
        (*ours)++;
    }
  freeifaddrs(ia);
  FILE *f = fopen("/proc/net/route", "re");
  char line[512];
  *routes = 0;
  while (f && fgets(line, sizeof line, f))
    (*routes)++;
  if (f)
    fclose(f);
}

Test(netns, addresses_exist_only_inside) {
  need_netns();
  int ifs0, addrs0, ours0, routes0;
  root_counts(&ifs0, &addrs0, &ours0, &routes0);
  make_net(3);
  start_server(0);
  cr_assert_eq(round_trip_from(1, tr_netns_addr(&net, 0), 1000, 5000), 0, "host 1 reaches 0");

  int ifs, addrs, ours, routes;
  root_counts(&ifs, &addrs, &ours, &routes);
  cr_assert_eq(ifs, ifs0, "no interface was added to this namespace");
  cr_assert_eq(addrs, addrs0, "no address was added to this namespace");
  cr_assert_eq(routes, routes0, "no route was added to this namespace");
  cr_assert_eq(ours, 0, "198.51.100.0/24 is not an address here");

  /* From here the server's address is not host 0: without a default
   * route the connect fails at once; with one, the SYN goes to the
   * gateway, which drops it (the timeout ends it) or, on a machine whose
   * gateway intercepts TCP (this sandbox: an HTTP proxy accepts every
   * connect), answers something that is not our server's echo. */
  int64_t t0 = now_ms();
  int rc = round_trip(tr_netns_addr(&net, 0), "from the root namespace", 1000);
  int64_t took = now_ms() - t0;
  cr_assert_neq(rc, 0, "host 0's server is not reachable from outside");
  cr_assert_lt(took, 3500, "the attempt is bounded (%lld ms, %s)", (long long)took, strerror(-rc));
  char out[512];
  rc = tr_netns_ip(out, sizeof out, "route", "get", tr_netns_addr(&net, 0), (char *)NULL);
  cr_assert(rc != 0 || strstr(out, " via ") != NULL || strstr(out, "unreachable") != NULL,
            "no route here leads to the hosts' /24 directly: %s", out);

  /* And the hosts have no route out of their /24. */
  rc = round_trip_from(1, "203.0.113.1", 1000, 0);
  cr_assert_eq(rc, -ENETUNREACH, "host 1 has no route out: %s", strerror(-rc));
  check_clean();
}

Test(netns, link_down_partitions_a_host) {
  need_netns();
  make_net(3);
  start_server(0);
  const char *server_addr = tr_netns_addr(&net, 0);
  cr_assert_eq(round_trip_from(1, server_addr, 1000, 5000), 0, "host 1 reaches 0 at first");
  cr_assert_eq(round_trip_from(2, server_addr, 1000, 0), 0, "host 2 reaches 0 at first");

  int rc = tr_netns_link(&net, 1, 0);
  cr_assert_eq(rc, 0, "link down: %s", tr_netns_error(&net));
  int64_t t0 = now_ms();
  rc = round_trip_from(1, server_addr, 1000, 0);
  int64_t took = now_ms() - t0;
  cr_assert(rc == -ENETUNREACH || rc == -EHOSTUNREACH || rc == -ETIMEDOUT,
            "host 1 is cut off from host 0 (%s)", strerror(-rc));
  cr_assert_lt(took, 3000, "the failed connect is bounded (%lld ms)", (long long)took);
  cr_assert_eq(round_trip_from(2, server_addr, 1000, 0), 0, "host 2 still reaches 0");

  /* The switch's end is down too: nothing reaches host 1 either. */
  char out[1024];
  rc = tr_netns_ip(out, sizeof out, "-n", tr_netns_name(&net, TR_NETNS_SWITCH), "link", "show",
                   "p1", (char *)NULL);
  cr_assert_eq(rc, 0, "ip link show p1: %s", out);
  cr_assert(strstr(out, "state DOWN") != NULL, "p1 is down on the switch: %s", out);

  rc = tr_netns_link(&net, 1, 1);
  cr_assert_eq(rc, 0, "link up: %s", tr_netns_error(&net));
  rc = round_trip_from(1, server_addr, 1000, 5000);
  cr_assert_eq(rc, 0, "host 1 reaches 0 again: %s", strerror(-rc));
  cr_assert_eq(round_trip_from(2, server_addr, 1000, 0), 0, "and so does host 2");
  check_clean();
}

Test(netns, enter_moves_this_thread) {
  need_netns();
  make_net(2);
  start_server(0);
  int rc = tr_netns_enter(&net, 1);
  cr_assert_eq(rc, 0, "tr_netns_enter: %s", strerror(-rc));
  int64_t until = now_ms() + 5000;
  while ((rc = round_trip(tr_netns_addr(&net, 0), "from the test process", 1000)) != 0 &&
         now_ms() < until)
    sleep_ms(20);
  cr_assert_eq(rc, 0, "the test process, now in host 1, reaches host 0: %s", strerror(-rc));

  int ifs, addrs, ours, routes;
  root_counts(&ifs, &addrs, &ours, &routes);
  cr_assert_eq(ours, 1, "this thread sees host 1's address (and only it)");
  cr_assert_eq(ifs, 2, "lo and eth0");
  /* Destroy works from inside a host: this thread keeps host 1 alive,
   * unnamed, until the test process exits. */
  check_clean();
}

Test(netns, spawn_reports_exec_failure) {
  need_netns();
  make_net(2);
  pid_t pid = -1;
  char *missing[] = {"/nonexistent/tr_netns_peer", NULL};
  cr_assert_eq(tr_netns_spawn(&net, 0, missing, NULL, &pid), -ENOENT);
  char *unknown[] = {"tr-netns-no-such-program", NULL};
  cr_assert_eq(tr_netns_spawn(&net, 1, unknown, NULL, &pid), -ENOENT);
  cr_assert_eq(pid, -1, "no pid is stored on failure");
  char *sh[] = {"true", NULL};
  cr_assert_eq(tr_netns_spawn(&net, 2, sh, NULL, &pid), -EINVAL, "host 2 does not exist");
  cr_assert_eq(tr_test_live_children(), 0, "the failed children were reaped");
  check_clean();
}

Test(netns, destroy_removes_everything) {
  need_netns();
  cr_assert_eq(tr_netns_create(&net, 1), -EINVAL);
  cr_assert(strstr(tr_netns_error(&net), "2 to 4 hosts") != NULL, "%s", tr_netns_error(&net));
  tr_netns_destroy(&net); /* on a failed create: nothing to do */
  cr_assert_eq(tr_netns_create(&net, 5), -EINVAL);

  make_net(4);
  for (int i = TR_NETNS_SWITCH; i < 4; i++)
    cr_assert_eq(tr_netns_listed(tr_netns_name(&net, i)), 1);
  start_server(3);
  cr_assert_eq(round_trip_from(0, tr_netns_addr(&net, 3), 1000, 5000), 0, "host 0 reaches 3");
  check_clean();
  tr_netns_destroy(&net); /* again: idempotent */
  cr_assert_str_eq(tr_netns_error(&net), "", "destroy had nothing to complain about");
}

Test(netns, failed_create_undoes_itself) {
  need_netns();
  /* The next create's names follow from this one's sequence number: its
   * host 1 is taken beforehand, so that create fails half-way. */
  make_net(2);
  long pid;
  unsigned seq;
  cr_assert_eq(sscanf(tr_netns_name(&net, 0), "trns%ld_%u_0", &pid, &seq), 2);
  tr_netns_destroy(&net);
  char taken[40];
  snprintf(taken, sizeof taken, "trns%ld_%u_1", pid, seq + 1);
  char out[512];
  cr_assert_eq(tr_netns_ip(out, sizeof out, "netns", "add", taken, (char *)NULL), 0, "%s", out);

  int rc = tr_netns_create(&net, 3);
  const char *err = tr_netns_error(&net);
  /* Not ours to keep: remove it before any assertion can end the test. */
  int del = tr_netns_ip(out, sizeof out, "netns", "delete", taken, (char *)NULL);
  cr_assert_eq(rc, -EIO, "create fails when a name is taken (%d)", rc);
  cr_assert(strstr(err, taken) != NULL && strstr(err, "netns add") != NULL,
            "the message names the command: %s", err);
  cr_assert(strstr(err, "exists") != NULL, "and quotes ip's stderr: %s", err);
  cr_assert_eq(del, 0, "%s", out);
  char name[40];
  snprintf(name, sizeof name, "trns%ld_%u_0", pid, seq + 1);
  cr_assert_eq(tr_netns_listed(name), 0, "host 0 of the failed net was deleted");
  snprintf(name, sizeof name, "trns%ld_%u_s", pid, seq + 1);
  cr_assert_eq(tr_netns_listed(name), 0, "its switch was deleted");
  check_clean();
}

Test(netns, sweep_removes_dead_runs) {
  need_netns();
  /* A "crashed run": a child makes a net and exits without destroying it. */
  int p[2];
  cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
  pid_t c = fork();
  cr_assert(c >= 0);
  if (c == 0) {
    close(p[0]);
    tr_netns_net_t lost;
    if (tr_netns_create(&lost, 2) != 0)
      _exit(1);
    char names[3][40];
    snprintf(names[0], 40, "%s", tr_netns_name(&lost, 0));
    snprintf(names[1], 40, "%s", tr_netns_name(&lost, 1));
    snprintf(names[2], 40, "%s", tr_netns_name(&lost, TR_NETNS_SWITCH));
    _exit(write(p[1], names, sizeof names) == (ssize_t)sizeof names ? 0 : 1);
  }
  close(p[1]);
  char names[3][40];
  ssize_t n = read(p[0], names, sizeof names);
  close(p[0]);
  int st;
  cr_assert_eq(waitpid(c, &st, 0), c);
  cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the child made its net");
  cr_assert_eq(n, (ssize_t)sizeof names);
  for (int i = 0; i < 3; i++)
    cr_assert_eq(tr_netns_listed(names[i]), 1, "%s is left over", names[i]);

  /* A live process's namespaces are not swept: ours stays. */
  make_net(2);
  tr_netns_sweep();
  for (int i = 0; i < 3; i++)
    cr_assert_eq(tr_netns_listed(names[i]), 0, "%s was swept", names[i]);
  cr_assert_eq(tr_netns_listed(tr_netns_name(&net, 0)), 1, "this process's net is kept");
  check_clean();
}
