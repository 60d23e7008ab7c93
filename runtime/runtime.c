/*
 * tr_run: start, run the root function, wait for every actor, stop.
 *
 * The top of the layering.  Each layer below includes only the ones below
 * it (platform, error, fiber, mem, sched, actor, reactor, task, rpc; the
 * codec in schema/ is a leaf), and reaches a layer above only through
 * hooks that layer registers here, at start-up, before any actor exists:
 * the actor layer's with the scheduler, the task layer's with the actor
 * layer, the dialog engine's with the task and actor layers, the hang
 * report's with the actor layer.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <tractor/actor.h>
#include <tractor/time.h>

#include "runtime/actor/actor.h"
#include "runtime/error/error.h"
#include "runtime/fiber/fiber.h"
#include "runtime/mem/msgpool.h"
#include "runtime/platform/assert.h"
#include "runtime/platform/log.h"
#include "runtime/reactor/reactor.h"
#include "runtime/rpc/rpc.h"
#include "runtime/runtime.h"
#include "runtime/sched/worker.h"
#include "runtime/task/task.h"
#include "transport/auth.h"
#include "transport/channel.h"
#include "transport/node.h"

/* The transport, wired in from the top (the layers below only see hooks):
 * tr_main of a child process, and the actor nursery's process children. */
int (*tr__main_child_hook)(const tr_config_t *cfg) = tr__chan_child_run;
const tr_rpc_proc_ops_t *tr__rpc_proc_ops = &tr__chan_proc_ops;
const tr_rpc_node_ops_t *tr__rpc_node_ops = &tr__node_rpc_ops;
const tr_main_node_ops_t *tr__main_node_ops = &tr__node_main_ops;

/* tr_run is serialised by this flag (CAS 0 -> 1). */
static uint32_t rt_claimed;
/* Figures of the last run, for tr_stats after tr_run returned. */
static tr_stats_t last_stats;
static pthread_mutex_t stats_lock = PTHREAD_MUTEX_INITIALIZER;

static int config_workers(const tr_config_t *cfg) {
  int n = cfg ? cfg->workers : 0;
  const char *env = getenv("TR_WORKERS");
  if (env && *env) {
    char *end;
    long v = strtol(env, &end, 10);
    if (*end == '\0' && v > 0)
      n = (int)(v > TR_MAX_WORKERS ? TR_MAX_WORKERS : v);
  }
  if (n <= 0) {
    long c = sysconf(_SC_NPROCESSORS_ONLN);
    n = c > 0 ? (int)c : 1;
  }
  return n > TR_MAX_WORKERS ? TR_MAX_WORKERS : n;
}

/* A duration of tr_config_t (ns), unless environment variable `var` is an
 * integer: then that many milliseconds, or never for 0 or less.  0 = dflt;
 * < 0 = never (returned as -1). */
static int64_t config_ms(int64_t ns, const char *var, int64_t dflt) {
  const char *env = getenv(var);
  if (env && *env) {
    char *end;
    long long v = strtoll(env, &end, 10);
    if (*end == '\0')
      ns = v > 0 ? (v > INT64_MAX / 1000000 ? INT64_MAX : v * 1000000) : -1;
  }
  if (ns == 0)
    ns = dflt;
  return ns < 0 ? -1 : ns;
}

/* The highest per-shard actor count of the runs so far: the next run's
 * shards count on from it, so an actor id, and with it the uuid
 * (tr_actor_uuid: the process's nonce and the id), is never reused in the
 * process, also across tr_run calls (actor.h).  Runs do not overlap. */
static uint64_t ids_issued;

static void ids_keep(int nworkers) {
  for (int i = 0; i <= nworkers; i++)
    if (tr__actors.shards[i].next_id > ids_issued)
      ids_issued = tr__actors.shards[i].next_id;
}

static void sum_counters(tr_counters_t *t, const tr_counters_t *c) {
  t->spawned += tr_load_relaxed(&c->spawned);
  t->exited += tr_load_relaxed(&c->exited);
  t->actors_freed += tr_load_relaxed(&c->actors_freed);
  t->handled += tr_load_relaxed(&c->handled);
  t->dead_letters += tr_load_relaxed(&c->dead_letters);
  t->proto_dropped += tr_load_relaxed(&c->proto_dropped);
  t->steals += tr_load_relaxed(&c->steals);
  t->parks += tr_load_relaxed(&c->parks);
}

static void snapshot(tr_stats_t *out) {
  tr_counters_t t;
  memset(&t, 0, sizeof(t));
  uint64_t msgs_new, msgs_freed;
  tr__msgpool_foreign_counts(&msgs_new, &msgs_freed);
  for (int i = 0; i < tr__rt.nworkers; i++) {
    sum_counters(&t, &tr__rt.workers[i].c);
    msgs_new += tr_load_relaxed(&tr__rt.workers[i].mem.msgs_new);
    msgs_freed += tr_load_relaxed(&tr__rt.workers[i].mem.msgs_freed);
  }
  sum_counters(&t, &tr__rt.foreign);
  memset(out, 0, sizeof(*out));
  out->workers = tr__rt.nworkers;
  out->actors_spawned = t.spawned;
  out->actors_exited = t.exited;
  out->actors_live = tr_load_relaxed(&tr__actors.live);
  out->actors_node = tr_load_relaxed(&tr__actors.node_live);
  out->actors_allocated = t.spawned - t.actors_freed;
  out->msgs_handled = t.handled;
  out->dead_letters = t.dead_letters;
  out->proto_dropped = t.proto_dropped;
  out->msgs_allocated = msgs_new - msgs_freed;
  out->steals = t.steals;
  out->parks = t.parks;
}

void tr_stats(tr_stats_t *out) {
  if (!out)
    return;
  pthread_mutex_lock(&stats_lock);
  if (tr_load_acquire(&tr__rt_running))
    snapshot(out);
  else
    *out = last_stats;
  pthread_mutex_unlock(&stats_lock);
}

int tr_shutdown(void) {
  if (!tr_load_acquire(&tr__rt_running))
    return TR_ERROR(-TR_ENORUNTIME, "tr_shutdown: no runtime is running");
  /* Set before walking the lists: see live_insert in actor/actor.c. */
  if (tr_xchg_seqcst(&tr__actors.stopping, 1) == 0)
    tr__actor_kill_all();
  return 0;
}

/* The logging threshold for this run: the config's, then TR_LOG's. */
static void config_log_level(const tr_config_t *cfg) {
  if (cfg && cfg->log_level != 0)
    tr_log_set_level(cfg->log_level < 0 ? TR_LOG_OFF : cfg->log_level);
  const char *env = getenv("TR_LOG");
  int level;
  if (env && *env) {
    if (tr__log_parse_level(env, &level) == 0)
      tr_log_set_level(level);
    else
      tr_log(TR_LOG_WARN, "TR_LOG=%s is not a level (off, error, warn, info, debug, 0-4): ignored",
             env);
  }
}

static int rt_init(const tr_config_t *cfg) {
  config_log_level(cfg);
  int krc = tr__auth_setup(cfg); /* the channels' key: before any handshake */
  if (krc != 0)
    return krc;
  memset(&tr__rt, 0, sizeof(tr__rt));
  memset(&tr__actors, 0, sizeof(tr__actors));
  tr__msgpool_reset_counts();
  tr__actors.batch = (cfg && cfg->batch > 0) ? cfg->batch : TR_DEFAULT_BATCH;
  tr__actors.hang_ns =
      config_ms(cfg ? cfg->hang_report_ns : 0, "TR_HANG_REPORT_MS", TR_HANG_REPORT_DEFAULT_NS);
  tr__chan_peer_timeout_ns =
      config_ms(cfg ? cfg->peer_timeout_ns : 0, "TR_PEER_TIMEOUT_MS", TR_PEER_TIMEOUT_DEFAULT_NS);
  int n = config_workers(cfg);
  pthread_mutex_init(&tr__rt.inject_lock, NULL);
  pthread_mutex_init(&tr__actors.wait_lock, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&tr__actors.wait_cv, &ca);
  pthread_condattr_destroy(&ca);
  tr__actors.shards = aligned_alloc(TR_CACHELINE, sizeof(tr_shard_t) * (size_t)(n + 1));
  if (!tr__actors.shards) {
    tr__auth_clear();
    return TR_ERROR(-TR_ENOMEM, "tr_run: no memory for the runtime's shards");
  }
  for (int i = 0; i <= n; i++) {
    memset(&tr__actors.shards[i], 0, sizeof(tr_shard_t));
    tr__actors.shards[i].next_id = ids_issued; /* ids (and uuids) go on from the last run */
    pthread_mutex_init(&tr__actors.shards[i].lock, NULL);
  }
  /* Hooks, upwards: each layer registers with the ones below it. */
  tr__actor_init();
  tr__tasks_init();
  tr__rpc_init();
  tr__hang_init();
  tr__chan_init();
  /* nworkers must be known to live_insert before any worker can spawn. */
  tr__rt.nworkers = n;
  tr_store_release(&tr__rt_running, 1);
  char why[160] = "";
  int rc = tr__sched_start(n, why, sizeof why);
  if (rc == 0 && (rc = tr__reactor_start(why, sizeof why)) != 0) {
    tr__sched_stop();
    free(tr__rt.workers);
    tr__rt.workers = NULL;
  }
  if (rc != 0) {
    /* The layers' own starts return bare codes and say what failed. */
    (void)TR_ERROR(rc, "tr_run: the runtime could not start its %d worker threads and reactor: %s",
                   n, why);
    tr_store_release(&tr__rt_running, 0);
    ids_keep(n);
    free(tr__actors.shards);
    tr__actors.shards = NULL;
    tr__auth_clear();
  }
  return rc;
}

static void rt_fini(void) {
  ids_keep(tr__rt.nworkers);
  for (int i = 0; i <= tr__rt.nworkers; i++) {
    TR_ASSERT(tr__actors.shards[i].head == NULL);
    pthread_mutex_destroy(&tr__actors.shards[i].lock);
  }
  free(tr__actors.shards);
  free(tr__rt.workers);
  pthread_mutex_destroy(&tr__rt.inject_lock);
  pthread_mutex_destroy(&tr__actors.wait_lock);
  pthread_cond_destroy(&tr__actors.wait_cv);
  memset(&tr__rt, 0, sizeof(tr__rt));
  memset(&tr__actors, 0, sizeof(tr__actors));
}

int tr_run(const tr_config_t *cfg, tr_root_fn root, void *arg) {
  if (!root)
    return TR_ERROR(-TR_EINVAL, "tr_run: no root function");
  uint32_t zero = 0;
  if (!tr_cas_seqcst(&rt_claimed, &zero, 1))
    return TR_ERROR(-TR_EBUSY, "a runtime is already running in this process: one root actor "
                               "per process (tractor), and tr_run / tr_main do not nest");
  int rc = rt_init(cfg);
  if (rc != 0) {
    tr_store_release(&rt_claimed, 0);
    return rc;
  }
  int result = root(arg);

  /* Structured end: the root's actors are its children; wait for all
   * (and say which ones, if that takes long: a forgotten actor). */
  tr__rt_root_returned();
  tr__rt_wait_end(NULL);

  /* Pending timers hold actor references and messages: drop them while
   * the workers still run (a timer's release may free an actor). */
  tr__reactor_stop();
  tr__to_thread_shutdown(); /* no job is left: each kept its actor alive */
  tr__sched_stop();
  pthread_mutex_lock(&stats_lock);
  snapshot(&last_stats);
  tr_store_release(&tr__rt_running, 0);
  pthread_mutex_unlock(&stats_lock);
  rt_fini();
  tr__auth_clear();
  tr__fiber_stack_pool_drain();
  /* Before the claim is dropped: no new runtime can start under the
   * callbacks, which were promised a process without actors. */
  tr__lifetime_run();
  tr_store_release(&rt_claimed, 0);
  return result;
}
