/*
 * Logging (include/tractor/log.h): the line's prefix names process, actor
 * and task; the threshold filters; a hook routes lines; TR_LOG and
 * tr_config_t.log_level set the threshold; and every protocol message the
 * dialog engine drops is logged with its reason and counted in tr_stats.
 */
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TR_TEST_WORKERS 2
#include <tractor/testing.h>

#include "schema/envelope.h" /* body kinds, to speak raw envelopes */

/* Lines the hook received (any thread may log: a mutex guards them). */
static pthread_mutex_t cap_lock = PTHREAD_MUTEX_INITIALIZER;
static char cap[16384];
static int cap_levels[64], cap_n;

static void capture(void *arg, int level, const char *line) {
  (void)arg;
  pthread_mutex_lock(&cap_lock);
  size_t used = strlen(cap);
  snprintf(cap + used, sizeof cap - used, "%s\n", line);
  if (cap_n < 64)
    cap_levels[cap_n] = level;
  cap_n++;
  pthread_mutex_unlock(&cap_lock);
}

static void cap_reset(void) {
  pthread_mutex_lock(&cap_lock);
  cap[0] = '\0';
  cap_n = 0;
  pthread_mutex_unlock(&cap_lock);
}

/* 1 when the captured text has s. */
static int cap_has(const char *s) {
  pthread_mutex_lock(&cap_lock);
  int found = strstr(cap, s) != NULL;
  pthread_mutex_unlock(&cap_lock);
  return found;
}

static int cap_count(void) {
  pthread_mutex_lock(&cap_lock);
  int n = cap_n;
  pthread_mutex_unlock(&cap_lock);
  return n;
}

Test(log, levels_and_hook_outside_a_run, .timeout = 10) {
  cr_assert_eq(tr_log_level(), TR_LOG_WARN, "the default threshold");
  cr_assert_str_eq(tr_log_level_name(TR_LOG_DEBUG), "DEBUG");
  cr_assert_str_eq(tr_log_level_name(99), "?");
  tr_log_set_hook(capture, NULL);
  cap_reset();
  tr_log(TR_LOG_INFO, "below the threshold %d", 1);
  cr_assert_eq(cap_count(), 0, "INFO is below WARN");
  tr_log(TR_LOG_WARN, "a warning %d", 2);
  char want[64];
  snprintf(want, sizeof want, "tractor[%ld] WARN -/-: a warning 2\n", (long)getpid());
  cr_assert(cap_has(want), "got: %s", cap);
  tr_log_set_level(TR_LOG_OFF);
  tr_log(TR_LOG_ERROR, "nothing when off");
  cr_assert_eq(cap_count(), 1);
  tr_log_set_level(100); /* clamped */
  cr_assert_eq(tr_log_level(), TR_LOG_DEBUG);
  tr_log_set_hook(NULL, NULL);
  tr_log(TR_LOG_DEBUG, "to stderr, not to the old hook");
  cr_assert_eq(cap_count(), 1, "the old hook is not called once replaced");
}

/* ---- in a run: the actor and task in the prefix, drops counted ------------------- */

static int echo(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)ctx;
  *result = tr_buf_ref((tr_buf_t *)args);
  return 0;
}
TR_EXPORT_FN("tlog.fn", "echo", echo)

static int in_a_task(void *arg) {
  (void)arg;
  tr_log(TR_LOG_ERROR, "from a task");
  return 0;
}

/* Sends actor `to` a raw protocol message of kind body on cid, as a
 * foreign peer could. */
static int send_raw(tr_actor_t *to, int body, uint64_t cid) {
  tr_msg_t *m;
  int rc = tr_msg_new(&m);
  if (rc)
    return rc;
  m->body = (uint16_t)body;
  m->cid = cid;
  m->from = tr_actor_dup(tr_self());
  return tr_send(to, m);
}

TR_TEST(log, prefix_names_actor_and_task_and_drops_are_counted, .timeout = 60) {
  tr_log_set_hook(capture, NULL);
  tr_log_set_level(TR_LOG_DEBUG);
  cap_reset();
  tr_nursery_t *n;
  tr_assert_rc(tr_nursery_open(&n), 0);
  tr_task_opts_t o = {.name = "logger"};
  tr_check_rc(tr_nursery_spawn(n, in_a_task, NULL, &o), 0);
  tr_check_rc(tr_nursery_close(n), 0);
  tr_check(cap_has("ERROR root/logger: from a task\n"), "prefix: %s", cap);

  static const char *const ns[] = {"tlog.fn"};
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL;
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_start_actor(an, "server", ns, 1, &p), 0);
  if (p) {
    tr_stats_t before, after;
    tr_stats(&before);
    /* A value for no dialog (expected after a dialog ends: DEBUG), and a
     * body the engine has no use for (WARN). */
    tr_check_rc(send_raw(tr_portal_actor(p), TR_BODY_YIELD, 987654), 0);
    tr_check_rc(send_raw(tr_portal_actor(p), TR_BODY_HELLO, 55), 0);
    /* Messages between two actors keep their order: once this call is
     * answered, both were handled. */
    tr_buf_t *res = NULL;
    tr_check_rc(tr_portal_run(p, "tlog.fn.echo", NULL, &res), 0);
    tr_buf_release(res);
    tr_stats(&after);
    tr_check_eq(after.proto_dropped - before.proto_dropped, 2, "both drops counted");
    tr_check(cap_has("DEBUG server/-: dropped Yield (cid 987654) from root at actor server: no "
                     "such dialog"),
             "the Yield's drop: %s", cap);
    tr_check(cap_has("WARN server/-: dropped Hello (cid 55) from root at actor server: not a "
                     "body the dialog engine handles"),
             "the Hello's drop: %s", cap);
  }
  tr_assert_rc(tr_actor_nursery_close(an), 0);
  tr_portal_release(p);
  tr_log_set_hook(NULL, NULL);
  return 0;
}

/* TR_LOG overrides tr_config_t.log_level when the run starts. */
static int quiet_root(void *arg) {
  (void)arg;
  tr_log(TR_LOG_INFO, "info in the root");
  return tr_log_level();
}

Test(log, env_overrides_config, .timeout = 30) {
  tr_log_set_hook(capture, NULL);
  cap_reset();
  tr_config_t cfg = {.workers = 1, .log_level = TR_LOG_ERROR};
  cr_assert_eq(tr_run(&cfg, quiet_root, NULL), TR_LOG_ERROR, "the config's level");
  cr_assert_eq(cap_count(), 0);
  setenv("TR_LOG", "info", 1);
  cr_assert_eq(tr_run(&cfg, quiet_root, NULL), TR_LOG_INFO, "TR_LOG wins");
  cr_assert(cap_has("INFO -/-: info in the root\n"), "%s", cap);
  setenv("TR_LOG", "loud", 1);
  tr_log_set_level(TR_LOG_WARN);
  cfg.log_level = 0; /* keep the current level */
  cr_assert_eq(tr_run(&cfg, quiet_root, NULL), TR_LOG_WARN);
  cr_assert(cap_has("WARN -/-: TR_LOG=loud is not a level"), "a bad TR_LOG is reported: %s", cap);
  unsetenv("TR_LOG");
  tr_log_set_hook(NULL, NULL);
}

/* ---- the hook under load; the cut ------------------------------------------------ */

static int loggers_stop;

/* A hook slow enough that, with three threads logging, some thread is
 * always inside one. */
static void slow_hook(void *arg, int level, const char *line) {
  (void)arg;
  (void)level;
  (void)line;
  usleep(20);
}

static int loggers_going;

static void *keep_logging(void *arg) {
  (void)arg;
  tr_log(TR_LOG_ERROR, "busy");
  __atomic_add_fetch(&loggers_going, 1, __ATOMIC_RELEASE);
  while (!__atomic_load_n(&loggers_stop, __ATOMIC_RELAXED))
    tr_log(TR_LOG_ERROR, "busy");
  return NULL;
}

static int hook_set;

static void *set_the_hook(void *arg) {
  (void)arg;
  tr_log_set_hook(capture, NULL);
  __atomic_store_n(&hook_set, 1, __ATOMIC_RELEASE);
  return NULL;
}

/* log.h: "A call racing with lines being logged is safe": it must also
 * return while other threads keep logging (with readers preferred, it
 * waited for a gap between their lines that never came). */
Test(log, set_hook_returns_while_other_threads_keep_logging, .timeout = 30) {
  tr_log_set_hook(slow_hook, NULL);
  pthread_t th[3], setter;
  for (int i = 0; i < 3; i++)
    cr_assert_eq(pthread_create(&th[i], NULL, keep_logging, NULL), 0);
  while (__atomic_load_n(&loggers_going, __ATOMIC_ACQUIRE) < 3) /* all three are logging */
    sched_yield();
  cr_assert_eq(pthread_create(&setter, NULL, set_the_hook, NULL), 0);
  for (int i = 0; i < 500 && !__atomic_load_n(&hook_set, __ATOMIC_ACQUIRE); i++)
    usleep(10000);
  int done = __atomic_load_n(&hook_set, __ATOMIC_ACQUIRE);
  __atomic_store_n(&loggers_stop, 1, __ATOMIC_RELAXED);
  for (int i = 0; i < 3; i++)
    pthread_join(th[i], NULL);
  cr_assert(done, "tr_log_set_hook did not return within 5 s while threads logged");
  pthread_join(setter, NULL);
  cr_assert(cap_count() > 0, "the new hook gets the lines after it");
  tr_log_set_hook(NULL, NULL);
}

static size_t cut_len;

static void measure(void *arg, int level, const char *line) {
  (void)arg;
  (void)level;
  cut_len = strlen(line);
}

/* log.h: a line is cut to 4095 bytes, prefix included. */
Test(log, a_long_line_is_cut_to_4095_bytes_with_its_prefix, .timeout = 10) {
  static char big[10000];
  memset(big, 'x', sizeof big - 1);
  tr_log_set_hook(measure, NULL);
  tr_log(TR_LOG_ERROR, "%s", big);
  cr_assert_eq(cut_len, 4095);
  tr_log(TR_LOG_ERROR, "short");
  cr_assert(cut_len < 100);
  tr_log_set_hook(NULL, NULL);
}
