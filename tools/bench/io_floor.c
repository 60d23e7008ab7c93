/*
 * io_floor: what a loopback TCP round trip costs on this machine for each
 * way a runtime can learn that a socket is readable, with no runtime at
 * all.  Two processes (fork), one thread each, 8-byte ping-pong as the
 * peers' tcp_rpc, both sides the same mode:
 *
 *   spin        recv(MSG_DONTWAIT) in a loop (bench-peers' raw_c_socket_spin)
 *   epoll_1shot epoll_wait(0) in a loop, EPOLLONESHOT, recv, epoll_ctl re-arm
 *               (tractor-c's fd watches before edge-triggered ones)
 *   epoll_et    epoll_wait(0) in a loop, EPOLLET, recv (no re-arm)
 *   epoll_et_y  epoll_et with sched_yield after each empty poll (a worker's
 *               spin round)
 *
 *   tr-iofloor [n] [work_ns]
 *
 * work_ns adds that much busy user time per message on each side (a
 * runtime's own work: decode, dispatch, encode).  Prints one line per mode:
 *   BENCH io_floor mode=M n=N secs=S rate=R us_per_rt=U us_median=D us_p99=P us_p999=Q
 *         slow_pct=L work_ns=W steal_pct=T
 * (us_median, us_p99, us_p999, slow_pct and steal_pct as tcp_rpc's:
 * steal.h).
 * It is a measuring stick for tcp_rpc, not a workload of the runtime.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "steal.h"

enum { M_SPIN, M_1SHOT, M_ET, M_ET_YIELD, M_COUNT };
static const char *const mode_name[M_COUNT] = {"spin", "epoll_1shot", "epoll_et", "epoll_et_y"};

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void busy(long ns) {
  if (ns <= 0)
    return;
  double end = now() + (double)ns * 1e-9;
  while (now() < end)
    ;
}

typedef struct side {
  int fd, ep, mode;
} side_t;

static int side_init(side_t *s, int fd, int mode) {
  int one = 1;
  s->fd = fd;
  s->mode = mode;
  s->ep = -1;
  if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0)
    return -1;
  if (mode == M_SPIN)
    return 0;
  s->ep = epoll_create1(EPOLL_CLOEXEC);
  struct epoll_event ev = {.events = EPOLLIN | (mode == M_1SHOT ? EPOLLONESHOT : EPOLLET)};
  ev.data.fd = fd;
  return s->ep < 0 ? -1 : epoll_ctl(s->ep, EPOLL_CTL_ADD, fd, &ev);
}

/* Waits for and reads one 8-byte message; 0 at EOF. */
static int side_recv(side_t *s, uint64_t *x) {
  for (;;) {
    if (s->mode != M_SPIN) {
      struct epoll_event ev;
      int n = epoll_wait(s->ep, &ev, 1, 0);
      if (n <= 0) {
        if (s->mode == M_ET_YIELD)
          sched_yield();
        continue;
      }
    }
    ssize_t r = recv(s->fd, x, 8, MSG_DONTWAIT);
    if (s->mode == M_1SHOT) {
      struct epoll_event ev = {.events = EPOLLIN | EPOLLONESHOT};
      ev.data.fd = s->fd;
      (void)epoll_ctl(s->ep, EPOLL_CTL_MOD, s->fd, &ev);
    }
    if (r == 8)
      return 1;
    if (r == 0)
      return 0;
    if (r > 0) { /* a split message: never seen with 8 bytes on loopback */
      fprintf(stderr, "io_floor: short read\n");
      exit(1);
    }
  }
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static int side_send(side_t *s, uint64_t x) { return send(s->fd, &x, 8, 0) == 8 ? 0 : -1; }

static int run_mode(int mode, long n, long work_ns) {
  int sv[2];
  int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t al = sizeof a;
  if (ls < 0 || bind(ls, (struct sockaddr *)&a, sizeof a) != 0 || listen(ls, 1) != 0 ||
      getsockname(ls, (struct sockaddr *)&a, &al) != 0)
    return -1;
  sv[0] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (sv[0] < 0 || connect(sv[0], (struct sockaddr *)&a, sizeof a) != 0 ||
      (sv[1] = accept(ls, NULL, NULL)) < 0)
    return -1;
  close(ls);
  pid_t pid = fork();
  if (pid < 0)
    return -1;
  if (pid == 0) { /* the echo side */
    side_t s;
    close(sv[0]);
    if (side_init(&s, sv[1], mode) != 0)
      _exit(1);
    uint64_t x;
    while (side_recv(&s, &x)) {
      busy(work_ns);
      if (side_send(&s, x) != 0)
        _exit(1);
    }
    _exit(0);
  }
  close(sv[1]);
  side_t s;
  int rc = side_init(&s, sv[0], mode);
  uint64_t y = 0;
  if (rc == 0 && (side_send(&s, 0) != 0 || !side_recv(&s, &y))) /* warm-up */
    rc = -1;
  double *us = calloc((size_t)n, sizeof(double));
  if (!us)
    rc = -1;
  long long steal0 = bench_steal_ticks();
  double t0 = now(), prev = t0;
  for (long i = 1; rc == 0 && i <= n; i++) {
    busy(work_ns);
    if (side_send(&s, (uint64_t)i) != 0 || !side_recv(&s, &y) || y != (uint64_t)i)
      rc = -1;
    double t = now();
    us[i - 1] = (t - prev) * 1e6;
    prev = t;
  }
  double secs = now() - t0;
  double steal = bench_steal_pct(steal0, bench_steal_ticks(), secs);
  close(sv[0]);
  if (s.ep >= 0)
    close(s.ep);
  int st;
  waitpid(pid, &st, 0);
  if (rc == 0) {
    qsort(us, (size_t)n, sizeof(double), cmp_double);
    printf("BENCH io_floor mode=%s n=%ld secs=%.6f rate=%.1f us_per_rt=%.2f us_median=%.2f "
           "us_p99=%.1f us_p999=%.1f slow_pct=%.1f work_ns=%ld steal_pct=%.1f\n",
           mode_name[mode], n, secs, (double)n / secs, secs * 1e6 / (double)n, us[n / 2],
           us[n - 1 - n / 100], us[n - 1 - n / 1000],
           bench_slow_pct(us, (unsigned long)n, us[n / 2]), work_ns, steal);
  }
  free(us);
  return rc;
}

int main(int argc, char **argv) {
  long n = argc > 1 ? atol(argv[1]) : 100000;
  if (n < 1)
    n = 1;
  long work_ns = argc > 2 ? atol(argv[2]) : 0;
  setvbuf(stdout, NULL, _IOLBF, 0);
  for (int m = 0; m < M_COUNT; m++)
    if (run_mode(m, n, work_ns) != 0) {
      fprintf(stderr, "io_floor: mode %s failed\n", mode_name[m]);
      return 1;
    }
  return 0;
}
