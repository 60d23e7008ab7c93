/*
 * tr-bench: command line, one tr_run per workload, the BENCH result line,
 * and the helpers every workload shares (clock, RSS, latch, failure).
 *
 *   tr-bench WORKLOAD [-n N] [-w WORKERS] [--msgs fresh|reuse|both] [--smoke]
 *            [--window W]
 *   tr-bench all [-w WORKERS] [--msgs fresh|reuse|both] [--smoke] [--window W]
 *
 * stdout carries only BENCH lines; progress and errors go to stderr.  The
 * exit status is 0 only when every run completed, passed its correctness
 * check and leaked no actor or message.  When more than one run is asked
 * for (`all`, ctx_stream's two modes, --msgs both), each runs in its own
 * child process, as the peers do (see run_isolated).
 *
 * tcp_rpc, tcp_stream and spawn_process (bench_tcp.c) start daemon actors
 * in child processes of this same executable (TR_SPAWN_PROCESS): main
 * hands such a process to tr_main before anything else.  With -w, the
 * children run as many workers (TR_WORKERS).  --window sets tcp_stream's
 * credit window (default: the runtime's).
 *
 * find_actor (sequential tr_find_actor lookups at a live registrar) and
 * connect_handshake (a fresh connect and handshake to the found actor's
 * node, each closed at once), in bench_discovery.c, make their calls from
 * such a child process too.  They run under tr_main, as a node with
 * discovery on, on a private registry address unless TR_REGISTRY_ADDR
 * names one; their lines say secret=yes|no.
 *
 * --msgs picks how the workloads that forward messages get the message of
 * each send (bench.h, bench_msgs_t): fresh (the default, as the peers),
 * reuse, or both, which runs such a workload once per mode, each run with
 * its own BENCH line (msgs=fresh, then msgs=reuse).
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "support/relay.h" /* the codec relay (tests/support) */

/* ---- shared helpers ---------------------------------------------------- */

double bench_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

double bench_median(double *v, uint64_t n) {
  qsort(v, n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

long long bench_rss_bytes(void) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  long long kb = -1;

  if (f == NULL)
    return -1;
  while (fgets(line, sizeof line, f) != NULL) {
    if (strncmp(line, "VmRSS:", 6) == 0) {
      kb = atoll(line + 6);
      break;
    }
  }
  fclose(f);
  return kb < 0 ? -1 : kb * 1024;
}

bench_msgs_t bench_msgs = BENCH_MSGS_FRESH;
int bench_relay;
uint32_t bench_window;

/* The workload being run, for error messages.  Written by the root thread
 * before tr_run starts the workers, which orders it before any read. */
static const char *current_workload = "?";

/* First failure recorded by bench_fail.  Workers and the root thread race
 * to set it; the CAS keeps the first, and the shutdown it triggers makes
 * the later ones (mostly -TR_ECLOSED echoes) uninteresting. */
static int first_failure;

int bench_fail(const char *what, int rc) {
  int expected = 0;

  /* Pairs with the acquire load in bench_failed: whoever reads a failure
   * also sees everything the failing thread did before it. */
  if (__atomic_compare_exchange_n(&first_failure, &expected, rc, 0, __ATOMIC_ACQ_REL,
                                  __ATOMIC_ACQUIRE)) {
    fprintf(stderr, "tr-bench: %s: %s: %s\n", current_workload, what, tr_strerror(rc));
    /* Without this, the root thread could wait forever on a latch that
     * the failed behaviour was supposed to feed. */
    (void)tr_shutdown();
  }
  return rc;
}

int bench_failed(void) {
  /* Pairs with the CAS in bench_fail. */
  return __atomic_load_n(&first_failure, __ATOMIC_ACQUIRE);
}

void bench_fail_reset(void) {
  /* Only called between runs, when no worker exists. */
  __atomic_store_n(&first_failure, 0, __ATOMIC_RELAXED);
}

void bench_exit_self(void) {
  int rc = tr_actor_exit();

  if (rc != 0)
    bench_fail("tr_actor_exit", rc);
}

/* The latch's whole behaviour: keep the value, then exit so that the
 * root thread's tr_join returns.  Exiting is what turns "main receives
 * done" into something a non-actor thread can wait for. */
static void latch_behaviour(void *state, tr_msg_t *msg) {
  bench_latch_t *latch = state;

  latch->value = msg->u64;
  latch->arrived = 1;
  bench_exit_self();
}

int bench_latch_open(bench_latch_t *latch, const char *name) {
  tr_spawn_opts_t opts = {.name = name};
  int rc;

  latch->ref = NULL;
  latch->value = 0;
  latch->arrived = 0;
  rc = tr_spawn(latch_behaviour, latch, &opts, &latch->ref);
  if (rc != 0) {
    latch->ref = NULL;
    return bench_fail("tr_spawn(latch)", rc);
  }
  return 0;
}

int bench_latch_wait(bench_latch_t *latch) {
  /* tr_join returning is what orders the latch actor's writes to value
   * and arrived before the reads below. */
  int rc = tr_join(latch->ref, -1);

  tr_actor_release(latch->ref);
  latch->ref = NULL;
  if (rc != 0)
    return bench_fail("tr_join(latch)", rc);
  if (!latch->arrived) {
    /* The latch was shut down instead of fed: someone failed first. */
    rc = bench_failed();
    return rc != 0 ? rc : bench_fail("latch exited without a message", -TR_ECANCELED);
  }
  return 0;
}

void bench_latch_close(bench_latch_t *latch) {
  tr_actor_release(latch->ref);
  latch->ref = NULL;
}

int bench_send_new(tr_actor_t *to, uint32_t tag, uint64_t v, uint64_t cid, tr_actor_t *from) {
  tr_msg_t *msg;
  int rc = tr_msg_new(&msg);

  if (rc != 0) {
    tr_actor_release(from);
    return rc;
  }
  msg->tag = tag;
  msg->u64 = v;
  msg->cid = cid;
  msg->from = from;
  rc = tr_send(to, msg);
  /* On these two the caller keeps the message (on -TR_ECLOSED the
   * runtime has freed it). */
  if (rc == -TR_EAGAIN || rc == -TR_EINVAL)
    tr_msg_free(msg);
  return rc;
}

int bench_stop_release(tr_actor_t *a) {
  int rc = tr_send_u64(a, BENCH_TAG_STOP, 0);

  tr_actor_release(a);
  /* An actor that already exited (after a shutdown) needs no stop. */
  if (rc != 0 && rc != -TR_ECLOSED)
    return bench_fail("tr_send_u64(stop)", rc);
  return 0;
}

/* ---- workload table ---------------------------------------------------- */

/* Which message forms a workload has (the msgs= field). */
enum {
  FORMS_NONE,  /* sends no messages in its timed section: no msgs= field */
  FORMS_FRESH, /* every send is a new message by nature (fanin's senders) */
  FORMS_BOTH,  /* forwards messages: fresh by default, reuse on request */
};

typedef struct workload {
  const char *name;
  bench_fn fn;
  uint64_t n_default; /* the peers' defaults (bench-peers/run_all.sh) */
  uint64_t n_smoke;   /* well under a second each, also under TSan */
  int forms;          /* FORMS_* */
  int relay;          /* through the codec relay: 1 transport=relay, 2 =socket */
  int node;           /* under tr_main, a node with discovery on (bench.h, bench_fn) */
} workload_t;

static const workload_t workloads[] = {
    {"pingpong", bench_pingpong, 2000000, 20000, FORMS_BOTH},
    {"ring", bench_ring, 10000000, 100000, FORMS_BOTH},
    {"fanin", bench_fanin, 16000000, 160000, FORMS_FRESH},
    {"skynet", bench_skynet, 1000000, 10000, FORMS_BOTH},
    {"spawn_idle", bench_spawn_idle, 1000000, 10000, FORMS_BOTH},
    {"pipeline", bench_pipeline, 5000000, 50000, FORMS_BOTH},
    {"task_switch", bench_task_switch, 10000000, 20000, FORMS_NONE},
    {"task_spawn", bench_task_spawn, 1000000, 10000, FORMS_NONE},
    {"cancel_storm", bench_cancel_storm, 100000, 1000, FORMS_NONE},
    /* Two rows, two BENCH lines (mode=stream, mode=rpc) for one name. */
    {"ctx_stream", bench_ctx_stream_stream, 5000000, 5000, FORMS_BOTH},
    {"ctx_stream", bench_ctx_stream, 1000000, 2000, FORMS_BOTH},
    /* The same dialogs through the test transport that encodes and decodes
     * every message between two relay ends (tests/support/relay.h): what
     * the codec and one more hop each way cost, before any socket. */
    {"ctx_stream", bench_ctx_stream_stream, 1000000, 5000, FORMS_BOTH, 1},
    {"ctx_stream", bench_ctx_stream, 200000, 2000, FORMS_BOTH, 1},
    /* And with the relay's two ends joined by loopback TCP (frames, the
     * reactor's fd watches, batched writes): a socket's cost in-process. */
    {"ctx_stream", bench_ctx_stream_stream, 1000000, 5000, FORMS_BOTH, 2},
    {"ctx_stream", bench_ctx_stream, 100000, 2000, FORMS_BOTH, 2},
    /* Between two processes: a TR_SPAWN_PROCESS daemon, a child process of
     * this executable (main hands it to tr_main), over TCP on loopback. */
    {"tcp_rpc", bench_tcp_rpc, 100000, 500, FORMS_FRESH},
    {"tcp_stream", bench_tcp_stream, 2000000, 5000, FORMS_FRESH},
    {"spawn_process", bench_spawn_process, 100, 3, FORMS_FRESH},
    /* Discovery between processes: lookups at a live registrar, and
     * connects with handshake to the node of the actor found. */
    {"find_actor", bench_find_actor, 10000, 100, FORMS_FRESH, 0, 1},
    {"connect_handshake", bench_connect_handshake, 2000, 50, FORMS_NONE, 0, 1},
};
#define NWORKLOADS (sizeof workloads / sizeof workloads[0])

/* What the root function needs and hands back. */
typedef struct run_ctx {
  const workload_t *w;
  uint64_t n;
  int workers; /* as the runtime resolved it (0 and TR_WORKERS applied) */
  int entered; /* root ran: the workload reports its own failures */
  bench_result_t res;
} run_ctx_t;

static int root(void *arg) {
  run_ctx_t *ctx = arg;
  tr_stats_t st;

  tr_stats(&st);
  ctx->workers = st.workers;
  ctx->entered = 1;
  return ctx->w->fn(ctx->n, &ctx->res);
}

/* The msgs= field of w's BENCH line for a run in form msgs ("" for a
 * workload that sends no messages). */
static const char *msgs_field(const workload_t *w, bench_msgs_t msgs) {
  if (w->forms == FORMS_NONE)
    return "";
  return msgs == BENCH_MSGS_REUSE ? " msgs=reuse" : " msgs=fresh";
}

/* Runs one workload in a fresh runtime, its messages got as msgs says,
 * and prints its BENCH line.  Returns 0 when everything passed, else 1. */
static int run_one(const workload_t *w, uint64_t n, int workers, bench_msgs_t msgs) {
  tr_config_t cfg = {.workers = workers};
  run_ctx_t ctx = {.w = w, .n = n, .res = {.ok = -1}};
  tr_stats_t st;
  int rc, failed = 0;

  current_workload = w->name;
  bench_msgs = msgs;
  bench_fail_reset();
  fprintf(stderr, "# %s n=%" PRIu64 " workers=%d%s%s\n", w->name, n, workers,
          workers == 0 ? " (runtime default)" : "", msgs_field(w, msgs));
  if (w->node && bench_discovery_prepare() != 0)
    return 1;
  bench_relay = w->relay;
  if (w->relay)
    tr_test_relay_install_mode(w->relay == 2);
  /* A node workload's root is tr_main's root task (the same function:
   * tr_root_fn and tr_task_fn agree). */
  rc = w->node ? tr_main(0, NULL, root, &ctx, &cfg) : tr_run(&cfg, root, &ctx);
  if (w->relay)
    tr_test_relay_uninstall();
  if (rc != 0) {
    /* Workloads report their own failures; this catches tr_run (or
     * tr_main: a node that could not start says why). */
    const char *why = tr_error_message(tr_error_last());
    if (!ctx.entered)
      fprintf(stderr, "tr-bench: %s: %s: %s\n", w->name, w->node ? "tr_main" : "tr_run",
              why ? why : tr_strerror(rc));
    return 1;
  }
  if (bench_failed() != 0)
    return 1; /* a behaviour failed after the result was complete */

  /* tr_run has freed everything it owns, so what is still allocated was
   * leaked by a missing tr_actor_release or a lost message. */
  tr_stats(&st);
  if (st.actors_allocated != 0 || st.msgs_allocated != 0) {
    fprintf(stderr, "tr-bench: %s: leak after tr_run: %" PRIu64 " actors, %" PRIu64 " messages\n",
            w->name, st.actors_allocated, st.msgs_allocated);
    failed = 1;
  }
  if (st.dead_letters != 0)
    fprintf(stderr, "tr-bench: %s: warning: %" PRIu64 " dead letters\n", w->name, st.dead_letters);
  if (ctx.res.ok == 0) {
    fprintf(stderr, "tr-bench: %s: correctness check failed:%s\n", w->name, ctx.res.extra);
    failed = 1;
  }

  printf("BENCH %s impl=tractor-c n=%" PRIu64 " secs=%.6f rate=%.1f%s%s%s%s workers=%d\n", w->name,
         ctx.res.n, ctx.res.secs, ctx.res.rate, msgs_field(w, msgs), ctx.res.extra,
         w->relay == 2 ? " transport=socket"
         : w->relay    ? " transport=relay"
                       : "",
         ctx.res.ok < 0 ? ""
         : ctx.res.ok   ? " ok=1"
                        : " ok=0",
         ctx.workers);
  fflush(stdout);
  return failed;
}

/*
 * Runs one workload in a child process, when one command asks for several
 * runs.  The peers run every workload as its own process, and so must we
 * for the figures to compare: in one process, the memory an earlier run
 * freed (fanin leaves about a gigabyte with malloc; spawn_idle's fresh run
 * as much for its reuse run) would be reused by the next spawn_idle,
 * hiding its RSS growth and its page-fault cost.  Forking is safe here
 * because the parent never runs tr_run, so it is single-threaded.
 * Returns 0 when the child passed, else 1.
 */
static int run_isolated(const workload_t *w, uint64_t n, int workers, bench_msgs_t msgs) {
  pid_t pid;
  int status;

  fflush(stdout);
  fflush(stderr);
  pid = fork();
  if (pid < 0) {
    perror("tr-bench: fork");
    return 1;
  }
  if (pid == 0)
    exit(run_one(w, n, workers, msgs)); /* exit, not _exit: flush and run LSan */
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) {
      perror("tr-bench: waitpid");
      return 1;
    }
  }
  if (WIFSIGNALED(status)) {
    fprintf(stderr, "tr-bench: %s: killed by signal %d\n", w->name, WTERMSIG(status));
    return 1;
  }
  return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
}

/* ---- command line ------------------------------------------------------ */

/* One run of a workload, as the command line asks for it. */
typedef struct run {
  const workload_t *w;
  bench_msgs_t msgs;
} run_t;

static void usage(FILE *f) {
  size_t i;

  fprintf(f,
          "usage: tr-bench WORKLOAD [-n N] [-w WORKERS] [--msgs MODE] [--smoke] [--window W]\n"
          "       tr-bench all [-w WORKERS] [--msgs MODE] [--smoke] [--window W]\n"
          "  -n N         size (default: the peers' default for WORKLOAD)\n"
          "  -w WORKERS   worker threads (default 0 = online CPUs; TR_WORKERS overrides)\n"
          "  --msgs MODE  fresh (default): a new message per send, as CAF and Erlang;\n"
          "               reuse: forward the message in hand; both: a run (and a BENCH\n"
          "               line) per mode.  Only workloads marked * have a reuse form\n"
          "  --smoke      small sizes, each well under a second (CI, sanitizers)\n"
          "  --window W   tcp_stream's credit window (default: the runtime's between\n"
          "               processes, %d)\n"
          "workloads (default N / smoke N):\n",
          TR_STREAM_WINDOW_REMOTE);
  static const char *const via[] = {"", " transport=relay", " transport=socket"};
  for (i = 0; i < NWORKLOADS; i++)
    fprintf(f, "  %-17s %10" PRIu64 " / %" PRIu64 "%s%s%s\n", workloads[i].name,
            workloads[i].n_default, workloads[i].n_smoke,
            workloads[i].forms == FORMS_BOTH ? " *" : "",
            workloads[i].fn == bench_ctx_stream_stream ? " mode=stream"
            : workloads[i].fn == bench_ctx_stream      ? " mode=rpc"
                                                       : "",
            via[workloads[i].relay]);
}

/* Parses a non-negative decimal integer that fits in max.  Returns 0 or -1. */
static int parse_u64(const char *s, uint64_t max, uint64_t *out) {
  char *end;
  unsigned long long v;

  if (s[0] < '0' || s[0] > '9')
    return -1;
  errno = 0;
  v = strtoull(s, &end, 10);
  if (errno != 0 || *end != '\0' || v > max)
    return -1;
  *out = v;
  return 0;
}

int main(int argc, char **argv) {
  static const struct option longopts[] = {
      {"smoke", no_argument, NULL, 'S'},
      {"msgs", required_argument, NULL, 'M'},
      {"window", required_argument, NULL, 'W'},
      {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0},
  };
  const workload_t *only = NULL;
  uint64_t n = 0, w64 = 0;
  int have_n = 0, smoke = 0, workers = 0, opt, failures = 0;
  int want_fresh = 1, want_reuse = 0;
  run_t runs[2 * NWORKLOADS];
  size_t i, nruns = 0;

  /* A process actor of the tcp workloads: this executable, started again
   * by the runtime; tr_main serves the daemon and exits. */
  if (tr_spawned_child())
    return tr_main(argc, argv, NULL, NULL, NULL);

  while ((opt = getopt_long(argc, argv, "n:w:h", longopts, NULL)) != -1) {
    switch (opt) {
    case 'n':
      if (parse_u64(optarg, UINT64_MAX / 2, &n) != 0 || n == 0) {
        fprintf(stderr, "tr-bench: -n wants a positive integer, not '%s'\n", optarg);
        return 2;
      }
      have_n = 1;
      break;
    case 'w':
      if (parse_u64(optarg, 4096, &w64) != 0) {
        fprintf(stderr, "tr-bench: -w wants an integer in 0..4096, not '%s'\n", optarg);
        return 2;
      }
      workers = (int)w64;
      break;
    case 'S':
      smoke = 1;
      break;
    case 'M':
      want_fresh = strcmp(optarg, "fresh") == 0 || strcmp(optarg, "both") == 0;
      want_reuse = strcmp(optarg, "reuse") == 0 || strcmp(optarg, "both") == 0;
      if (!want_fresh && !want_reuse) {
        fprintf(stderr, "tr-bench: --msgs wants fresh, reuse or both, not '%s'\n", optarg);
        return 2;
      }
      break;
    case 'W':
      if (parse_u64(optarg, TR_STREAM_WINDOW_MAX, &w64) != 0 || w64 == 0) {
        fprintf(stderr, "tr-bench: --window wants an integer in 1..%d, not '%s'\n",
                TR_STREAM_WINDOW_MAX, optarg);
        return 2;
      }
      bench_window = (uint32_t)w64;
      break;
    case 'h':
      usage(stderr); /* stdout carries BENCH lines only */
      return 0;
    default:
      usage(stderr);
      return 2;
    }
  }
  if (optind != argc - 1) {
    usage(stderr);
    return 2;
  }
  if (strcmp(argv[optind], "all") != 0) {
    for (i = 0; i < NWORKLOADS; i++)
      if (strcmp(argv[optind], workloads[i].name) == 0 && only == NULL)
        only = &workloads[i];
    if (only == NULL) {
      fprintf(stderr, "tr-bench: unknown workload '%s'\n", argv[optind]);
      usage(stderr);
      return 2;
    }
  } else if (have_n) {
    fprintf(stderr, "tr-bench: -n applies to one workload, not to 'all'\n");
    return 2;
  }
  /* The process actors' runtimes (tr_main without a config) read their
   * worker count from TR_WORKERS: pass -w down, so that both sides of a
   * tcp workload run as many workers.  An explicit TR_WORKERS already
   * overrides -w here and reaches the children as it is. */
  if (workers != 0 && getenv("TR_WORKERS") == NULL) {
    char wbuf[16];
    snprintf(wbuf, sizeof wbuf, "%d", workers);
    setenv("TR_WORKERS", wbuf, 1);
  }

  /* The runs asked for, in order.  A name may have several rows
   * (ctx_stream's modes), and a row with a reuse form a run per mode; a
   * workload without one runs its one form once, whatever --msgs asked
   * (its line says what it did). */
  for (i = 0; i < NWORKLOADS; i++) {
    const workload_t *w = &workloads[i];

    if (only != NULL && strcmp(w->name, only->name) != 0)
      continue;
    if (w->forms != FORMS_BOTH || want_fresh)
      runs[nruns++] = (run_t){w, BENCH_MSGS_FRESH};
    if (w->forms == FORMS_BOTH && want_reuse)
      runs[nruns++] = (run_t){w, BENCH_MSGS_REUSE};
  }
  for (i = 0; i < nruns; i++) {
    const workload_t *w = runs[i].w;
    uint64_t size = have_n ? n : smoke ? w->n_smoke : w->n_default;

    /* Every run happens even after a failure, so that one report shows
     * all of them; the exit status still records the failure.  Several
     * runs are isolated from each other as `all` is (run_isolated). */
    if (nruns == 1)
      failures += run_one(w, size, workers, runs[i].msgs);
    else
      failures += run_isolated(w, size, workers, runs[i].msgs);
  }
  return failures == 0 ? 0 : 1;
}
