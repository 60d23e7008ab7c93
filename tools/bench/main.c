/*
 * tr-bench: command line, one tr_run per workload, the BENCH result line,
 * and the helpers every workload shares (clock, RSS, latch, failure).
 *
 *   tr-bench WORKLOAD [-n N] [-w WORKERS] [--smoke]
 *   tr-bench all [-w WORKERS] [--smoke]
 *
 * stdout carries only BENCH lines; progress and errors go to stderr.  The
 * exit status is 0 only when every run completed, passed its correctness
 * check and leaked no actor or message.  `all` runs each workload in its
 * own child process, as the peers do (see run_isolated).
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

/* ---- shared helpers ---------------------------------------------------- */

double bench_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
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

int bench_stop_release(tr_actor_t *a) {
  int rc = tr_send_u64(a, BENCH_TAG_STOP, 0);

  tr_actor_release(a);
  /* An actor that already exited (after a shutdown) needs no stop. */
  if (rc != 0 && rc != -TR_ECLOSED)
    return bench_fail("tr_send_u64(stop)", rc);
  return 0;
}

/* ---- workload table ---------------------------------------------------- */

typedef struct workload {
  const char *name;
  bench_fn fn;
  uint64_t n_default; /* the peers' defaults (bench-peers/run_all.sh) */
  uint64_t n_smoke;   /* well under a second each, also under TSan */
} workload_t;

static const workload_t workloads[] = {
    {"pingpong", bench_pingpong, 2000000, 20000},
    {"ring", bench_ring, 10000000, 100000},
    {"fanin", bench_fanin, 16000000, 160000},
    {"skynet", bench_skynet, 1000000, 10000},
    {"spawn_idle", bench_spawn_idle, 1000000, 10000},
    {"pipeline", bench_pipeline, 5000000, 50000},
    {"task_switch", bench_task_switch, 10000000, 20000},
    {"task_spawn", bench_task_spawn, 1000000, 10000},
    {"cancel_storm", bench_cancel_storm, 100000, 1000},
    /* Two rows, two BENCH lines (mode=stream, mode=rpc) for one name. */
    {"ctx_stream", bench_ctx_stream_stream, 5000000, 5000},
    {"ctx_stream", bench_ctx_stream, 1000000, 2000},
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

/* Runs one workload in a fresh runtime and prints its BENCH line.
 * Returns 0 when everything passed, else 1. */
static int run_one(const workload_t *w, uint64_t n, int workers) {
  tr_config_t cfg = {.workers = workers};
  run_ctx_t ctx = {.w = w, .n = n, .res = {.ok = -1}};
  tr_stats_t st;
  int rc, failed = 0;

  current_workload = w->name;
  bench_fail_reset();
  fprintf(stderr, "# %s n=%" PRIu64 " workers=%d%s\n", w->name, n, workers,
          workers == 0 ? " (runtime default)" : "");
  rc = tr_run(&cfg, root, &ctx);
  if (rc != 0) {
    /* Workloads report their own failures; this catches tr_run itself. */
    if (!ctx.entered)
      fprintf(stderr, "tr-bench: %s: tr_run: %s\n", w->name, tr_strerror(rc));
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

  printf("BENCH %s impl=tractor-c n=%" PRIu64 " secs=%.6f rate=%.1f%s%s workers=%d\n", w->name,
         ctx.res.n, ctx.res.secs, ctx.res.rate, ctx.res.extra,
         ctx.res.ok < 0 ? ""
         : ctx.res.ok   ? " ok=1"
                        : " ok=0",
         ctx.workers);
  fflush(stdout);
  return failed;
}

/*
 * Runs one workload of `all` in a child process.  The peers run every
 * workload as its own process, and so must we for the figures to compare:
 * in one process, the memory an earlier workload freed (fanin leaves about
 * a gigabyte with malloc) would be reused by spawn_idle, hiding its RSS
 * growth and its page-fault cost.  Forking is safe here because tr_run has
 * joined its workers, so the parent is single-threaded.
 * Returns 0 when the child passed, else 1.
 */
static int run_isolated(const workload_t *w, uint64_t n, int workers) {
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
    exit(run_one(w, n, workers)); /* exit, not _exit: flush and run LSan */
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

static void usage(FILE *f) {
  size_t i;

  fprintf(f, "usage: tr-bench WORKLOAD [-n N] [-w WORKERS] [--smoke]\n"
             "       tr-bench all [-w WORKERS] [--smoke]\n"
             "  -n N        size (default: the peers' default for WORKLOAD)\n"
             "  -w WORKERS  worker threads (default 0 = online CPUs; TR_WORKERS overrides)\n"
             "  --smoke     small sizes, each well under a second (CI, sanitizers)\n"
             "workloads (default N / smoke N):\n");
  for (i = 0; i < NWORKLOADS; i++)
    fprintf(f, "  %-11s %10" PRIu64 " / %" PRIu64 "\n", workloads[i].name, workloads[i].n_default,
            workloads[i].n_smoke);
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
      {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0},
  };
  const workload_t *only = NULL;
  uint64_t n = 0, w64 = 0;
  int have_n = 0, smoke = 0, workers = 0, opt, failures = 0;
  size_t i;

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

  for (i = 0; i < NWORKLOADS; i++) {
    const workload_t *w = &workloads[i];

    if (only != NULL && strcmp(w->name, only->name) != 0)
      continue; /* a name may have several rows (ctx_stream's modes) */
    /* Every workload runs even after a failure, so that one report shows
     * all of them; the exit status still records the failure. */
    if (only != NULL)
      failures += run_one(w, have_n ? n : smoke ? w->n_smoke : w->n_default, workers);
    else
      failures += run_isolated(w, smoke ? w->n_smoke : w->n_default, workers);
  }
  return failures == 0 ? 0 : 1;
}
