/*
 * Discovery and trust (issue 11): what finding an actor and connecting to
 * its node cost, each between processes over loopback TCP.
 *
 *  - find_actor: N sequential tr_find_actor calls of a registered name
 *    ("bench-target"), each of which must give a portal (released at
 *    once).  Each call is a registrar call over the seeker's channel to
 *    the registrar (args packed, Start -> StartAck -> Return, the answer
 *    unpacked) plus the portal to the entry found, through the channel to
 *    the target's node that the warm-up opened (a lookup reuses an open
 *    channel, as tr_find_actor does for any caller).
 *  - connect_handshake: N sequential tr__node_handshake calls
 *    (transport/node.h) to the address the target's node listens on, as
 *    the registry lists it: each a fresh TCP connect, the Hello exchange
 *    (and whatever else the runtime's dial does, such as proving a
 *    secret), and a close.  The target's node makes a channel of each
 *    connection, which ends at the close.
 *
 * The processes.  Both workloads run under tr_main (main.c: the
 * workload's `node` flag), so that this process is a node with discovery
 * on; the workload function runs in tr_main's root task.  The root starts
 * two daemons in child processes of this executable (TR_SPAWN_PROCESS):
 * the target, "bench-target", which registers under its name, and the
 * seeker, "bench-seeker", whose exported function (bench.disc.*) makes the
 * N timed calls and hands back the elapsed time and the median of the
 * per-call times.  So the lookups are made in a process that is not the
 * registrar: the registrar is this (the root's) process, or another one
 * when TR_REGISTRY_ADDR names a running registrar.  Before timing, the
 * seeker waits for the target's registration with tr_wait_for_actor (the
 * registry is told asynchronously; a wait on the registrar, no sleep) and
 * calls it once through the portal found, so that the first timed call
 * pays for no channel set-up and the portal is known to reach the target.
 *
 * The registry address (bench_discovery_prepare, before tr_main).  An
 * address given in TR_REGISTRY_ADDR is used as it is: the root joins the
 * registrar there (a tractor-registry, say) or becomes it.  Otherwise,
 * whether the variable is unset (the default would be 127.0.0.1:1616,
 * which a developer's registrar or another tr-bench may hold) or "off"
 * (as ctest sets it for every test, bench_smoke included), the run gets a
 * private address: a 127.0.0.1 port the kernel picks (bind port 0, read
 * it back, close), set as TR_REGISTRY_ADDR, so the root becomes the
 * registrar there and its children learn the address from their
 * SpawnSpec.  Should another program take that port between the close and
 * the root's bind, the root's probe finds it: a registrar is joined,
 * anything else makes tr_main fail naming the address (the run fails; no
 * retry).  The line's registrar= field says where the registrar was:
 * root (this process) or external.
 *
 * A secret, as the figures want: bench_discovery_prepare sets
 * TR_SECRET to one of its own unless TR_SECRET or TR_SECRET_FILE is
 * configured already, or TR_BENCH_NO_SECRET=1 asks for none (to see what
 * the proofs cost).  secret=yes when the run had one (the child processes
 * get the parent's key).
 *
 * Fields: us_per_op is the mean (secs / N), us_median the median of the
 * N per-call times, each read as the difference of consecutive
 * CLOCK_MONOTONIC readings (one clock read per call).  ok=1 when every
 * call succeeded and both children exited 0 when the nursery closed.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"
#include "transport/node.h" /* tr__node_handshake */

#define TARGET "bench-target"
#define SEEKER "bench-seeker"
/* How long the seeker waits for the target's registration: a bound for
 * sanitized builds on a busy machine, not an expected time. */
#define REGISTER_WAIT_NS (30 * 1000000000LL)

/* What the seeker hands back, as the bytes of its result.  Both ends are
 * this executable on this machine, so they agree on the layout. */
typedef struct disc_result {
  uint64_t ok;      /* calls that succeeded: n, as a failure ends the run */
  double secs;      /* the timed loop */
  double us_median; /* the median per-call time */
} disc_result_t;

/* ---- the registry address ------------------------------------------------- */

int bench_discovery_prepare(void) {
  /* The figures are with a secret: this one unless the caller
   * configured one, or asked for none (TR_BENCH_NO_SECRET=1). */
  const char *none = getenv("TR_BENCH_NO_SECRET");
  if (!(none && strcmp(none, "1") == 0) && !(getenv("TR_SECRET") && *getenv("TR_SECRET")) &&
      !getenv("TR_SECRET_FILE") && setenv("TR_SECRET", "tr-bench's secret", 1) != 0)
    return -1;
  const char *env = getenv("TR_REGISTRY_ADDR");
  if (env && *env && strcmp(env, "off") != 0)
    return 0; /* an address asked for: used as it is */
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t sl = sizeof sa;
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int err = 0;
  if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
      getsockname(fd, (struct sockaddr *)&sa, &sl) != 0)
    err = errno;
  if (fd >= 0)
    close(fd);
  char addr[32];
  snprintf(addr, sizeof addr, "127.0.0.1:%u", (unsigned)ntohs(sa.sin_port));
  if (err == 0 && setenv("TR_REGISTRY_ADDR", addr, 1) != 0)
    err = errno;
  if (err) {
    fprintf(stderr, "tr-bench: no private registry address on 127.0.0.1: %s\n", strerror(err));
    return -1;
  }
  return 0;
}

/* ---- the seeker's side (a child process) ------------------------------------ */

/* One timed call: 0 or its error (with the error object). */
typedef int (*disc_op)(const char *arg);

static int find_once(const char *name) {
  tr_portal_t *p = NULL;
  int rc = tr_find_actor(name, &p);
  if (rc == 0 && p == NULL)
    rc = tr_fail(NULL, "tr_find_actor(\"%s\") succeeded without a portal", name);
  tr_portal_release(p);
  return rc;
}

static int handshake_once(const char *addr) { return tr__node_handshake(addr); }

/* Makes n calls of op(arg), keeping each one's time, and packs the
 * result into *out (a new buffer, the caller's).  Returns 0 when all n
 * succeeded, else the first failed call's error (the loop stops there),
 * or -TR_ENOMEM. */
static int timed_loop(uint64_t n, disc_op op, const char *arg, tr_buf_t **out) {
  double *us = calloc(n, sizeof *us);
  if (!us)
    return TR_ERROR(-TR_ENOMEM, "no memory for %llu call times", (unsigned long long)n);
  disc_result_t r = {0};
  int rc = 0;
  double t0 = bench_now(), prev = t0;
  while (r.ok < n && (rc = op(arg)) == 0) {
    double t = bench_now();
    us[r.ok++] = (t - prev) * 1e6;
    prev = t;
  }
  r.secs = prev - t0;
  r.us_median = r.ok ? bench_median(us, r.ok) : 0;
  free(us);
  if (rc)
    return rc;
  return tr_buf_from(&r, sizeof r, out);
}

/* N from the call's argument. */
static int size_of(const tr_buf_t *args, uint64_t *n) {
  if (tr_buf_to_u64(args, n) != 0 || *n == 0)
    return TR_ERROR(-TR_EINVAL, "the argument must be a positive count");
  return 0;
}

/* Waits for the target's registration and calls it once through the
 * portal found (the warm-up: opens the channels the timed calls reuse). */
static int await_target(void) {
  tr_portal_t *p = NULL;
  tr_buf_t *arg = NULL, *res = NULL;
  uint64_t echoed = 0;
  int rc = tr_wait_for_actor(TARGET, tr_now() + REGISTER_WAIT_NS, &p);
  if (rc == 0)
    rc = tr_buf_from_u64(42, &arg);
  if (rc == 0)
    rc = tr_portal_run(p, "bench.echo", arg, &res);
  if (rc == 0 && (tr_buf_to_u64(res, &echoed) != 0 || echoed != 42))
    rc = tr_fail(NULL, "the actor found as " TARGET " did not echo");
  tr_buf_release(res);
  tr_buf_release(arg);
  tr_portal_release(p);
  return rc;
}

static int seek_find(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)ctx;
  uint64_t n;
  int rc = size_of(args, &n);
  if (rc == 0)
    rc = await_target();
  if (rc == 0)
    rc = timed_loop(n, find_once, TARGET, result);
  return rc;
}
TR_EXPORT_FN("bench.disc", "find_actor", seek_find)

/* The address the target's node listens on, from the registry (the
 * newest entry of that name, as tr_find_actor would pick). */
static int target_addr(char *addr, size_t len) {
  tr_registry_entry_t *v;
  size_t n;
  int rc = tr_registry_list(&v, &n);
  if (rc)
    return rc;
  rc = tr_fail(NULL, "no entry named " TARGET " in the registry");
  for (size_t i = 0; i < n; i++)
    if (strcmp(v[i].name, TARGET) == 0) {
      snprintf(addr, len, "%s", v[i].addr);
      tr_error_clear();
      rc = 0;
      break;
    }
  tr_registry_entries_free(v, n);
  return rc;
}

static int seek_handshake(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)ctx;
  uint64_t n;
  char addr[TR_ADDR_MAX];
  int rc = size_of(args, &n);
  if (rc == 0)
    rc = await_target();
  if (rc == 0)
    rc = target_addr(addr, sizeof addr);
  if (rc == 0)
    rc = tr__node_handshake(addr); /* untimed, as the other warm-ups */
  if (rc == 0)
    rc = timed_loop(n, handshake_once, addr, result);
  return rc;
}
TR_EXPORT_FN("bench.disc", "connect_handshake", seek_handshake)

/* ---- the root's side ----------------------------------------------------- */

static const char *const target_ns[] = {"bench"}; /* bench.echo, for the warm-up */
static const char *const seeker_ns[] = {"bench.disc"};

/* What a run hands back besides the seeker's result. */
typedef struct disc_run {
  disc_result_t r;
  int target_status, seeker_status; /* wait statuses once reaped, -1: unknown */
  char why[256];                    /* the first failure's message */
} disc_run_t;

static int exited_0(int status) {
  return status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

/* Starts the target and the seeker, calls the seeker's `fn` with n, and
 * closes the nursery (which cancels both and reaps their processes).
 * Returns 0 or the first failure, whose message is kept in run->why. */
static int run_pair(const char *fn, uint64_t n, disc_run_t *run) {
  const tr_actor_opts_t target_opts = {
      .enable = target_ns, .n_enable = 1, .spawn = TR_SPAWN_PROCESS};
  const tr_actor_opts_t seeker_opts = {
      .enable = seeker_ns, .n_enable = 1, .spawn = TR_SPAWN_PROCESS};
  tr_actor_nursery_t *an;
  tr_portal_t *target = NULL, *seeker = NULL;
  tr_buf_t *arg = NULL, *out = NULL;
  int rc = tr_actor_nursery_open(&an, NULL);
  if (rc == 0) {
    if ((rc = tr_start_actor_opts(an, TARGET, &target_opts, &target)) == 0 &&
        (rc = tr_start_actor_opts(an, SEEKER, &seeker_opts, &seeker)) == 0 &&
        (rc = tr_buf_from_u64(n, &arg)) == 0)
      rc = tr_portal_run(seeker, fn, arg, &out);
    if (rc == 0 && tr_buf_len(out) != sizeof run->r)
      rc = tr_fail(NULL, "the seeker's result has %zu bytes, not %zu", tr_buf_len(out),
                   sizeof run->r);
    if (rc == 0)
      memcpy(&run->r, tr_buf_data(out), sizeof run->r);
    tr_buf_release(out);
    tr_buf_release(arg);
    const char *m = rc ? tr_error_message(tr_error_last()) : NULL;
    snprintf(run->why, sizeof run->why, "%s", m ? m : "");
    int crc = tr_actor_nursery_close(an);
    if (rc == 0 && crc != 0) {
      rc = crc;
      m = tr_error_message(tr_error_last());
      snprintf(run->why, sizeof run->why, "closing the actor nursery: %s", m ? m : "");
    }
  } else {
    const char *m = tr_error_message(tr_error_last());
    snprintf(run->why, sizeof run->why, "%s", m ? m : "");
  }
  if (target)
    (void)tr_portal_process(target, NULL, &run->target_status);
  if (seeker)
    (void)tr_portal_process(seeker, NULL, &run->seeker_status);
  tr_portal_release(target);
  tr_portal_release(seeker);
  return rc;
}

static int secret_configured(void) {
  const char *s = getenv("TR_SECRET"), *f = getenv("TR_SECRET_FILE");
  return (s && *s) || (f && *f);
}

static int disc_bench(const char *workload, const char *fn, uint64_t n, bench_result_t *res) {
  disc_run_t run = {.target_status = -1, .seeker_status = -1};
  int is_registrar = 0;
  int rc = run_pair(fn, n, &run);
  if (rc) {
    char what[320];
    snprintf(what, sizeof what, "%s (%s)", workload, run.why);
    return bench_fail(what, rc);
  }
  if (tr_node_addr(NULL, 0, &is_registrar) != 0)
    tr_error_clear(); /* cannot happen under tr_main with discovery on */
  res->n = n;
  res->secs = run.r.secs;
  res->rate = (double)n / run.r.secs;
  res->ok = run.r.ok == n && exited_0(run.target_status) && exited_0(run.seeker_status);
  snprintf(res->extra, sizeof res->extra, " us_per_op=%.2f us_median=%.2f secret=%s registrar=%s",
           run.r.secs * 1e6 / (double)n, run.r.us_median, secret_configured() ? "yes" : "no",
           is_registrar ? "root" : "external");
  return 0;
}

int bench_find_actor(uint64_t n, bench_result_t *res) {
  return disc_bench("find_actor", "bench.disc.find_actor", n, res);
}

int bench_connect_handshake(uint64_t n, bench_result_t *res) {
  return disc_bench("connect_handshake", "bench.disc.connect_handshake", n, res);
}
