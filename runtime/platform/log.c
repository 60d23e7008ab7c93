/*
 * Logging (include/tractor/log.h): a threshold, a hook, and the line
 * prefix naming process, actor and task.
 *
 * The threshold is one atomic int read by every tr_log before it formats
 * anything, so a line below it costs a load and a branch.  The hook and
 * its argument change together under a rwlock that each logged line takes
 * for reading: lines are rare (warnings, drops, diagnostics), and the lock
 * is what lets tr_log_set_hook promise that the old hook is not called
 * once it returned.
 *
 * Layering: this file sits below the actor and task layers, which it
 * must not import; the task layer registers a context hook at start-up
 * (tr__log_set_context_hook) that names the running actor and task.
 */
#define _GNU_SOURCE /* the writer-preferring rwlock initializer */
#include "runtime/platform/log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* The threshold: relaxed is enough, a line logged just before or after a
 * change of level is logged either way. */
static int g_level = TR_LOG_WARN;

/* Writer-preferring: with glibc's default (readers first), threads that
 * keep logging hold the lock for reading without a gap, and
 * tr_log_set_hook waited for ever (found by an audit: three threads
 * logging through a hook that took 20 us).  Readers never nest: a hook
 * may not log (log.h). */
static pthread_rwlock_t hook_lock = PTHREAD_RWLOCK_WRITER_NONRECURSIVE_INITIALIZER_NP;
static tr_log_hook_fn g_hook;
static void *g_hook_arg;

/* Written once by the task layer before workers start; read on every line
 * (acquire pairs with the release in tr__log_set_context_hook). */
static void (*g_context)(const char **actor, const char **task);

void tr__log_set_context_hook(void (*hook)(const char **actor, const char **task)) {
  __atomic_store_n(&g_context, hook, __ATOMIC_RELEASE);
}

static int clamp(int level) {
  return level < TR_LOG_OFF ? TR_LOG_OFF : level > TR_LOG_DEBUG ? TR_LOG_DEBUG : level;
}

void tr_log_set_level(int level) { __atomic_store_n(&g_level, clamp(level), __ATOMIC_RELAXED); }

int tr_log_level(void) { return __atomic_load_n(&g_level, __ATOMIC_RELAXED); }

const char *tr_log_level_name(int level) {
  static const char *const names[] = {"OFF", "ERROR", "WARN", "INFO", "DEBUG"};
  return level >= TR_LOG_OFF && level <= TR_LOG_DEBUG ? names[level] : "?";
}

int tr__log_parse_level(const char *s, int *level) {
  if (!s || !*s)
    return -1;
  static const char *const names[] = {"off", "error", "warn", "info", "debug"};
  for (int i = 0; i <= TR_LOG_DEBUG; i++)
    if (strcasecmp(s, names[i]) == 0) {
      *level = i;
      return 0;
    }
  if (s[0] >= '0' && s[0] <= '4' && s[1] == '\0') {
    *level = s[0] - '0';
    return 0;
  }
  return -1;
}

void tr_log_set_hook(tr_log_hook_fn hook, void *arg) {
  pthread_rwlock_wrlock(&hook_lock);
  g_hook = hook;
  g_hook_arg = hook ? arg : NULL;
  pthread_rwlock_unlock(&hook_lock);
}

/* tr_log's lines, prefix included, are cut to this (log.h: 4 KiB). */
#define LINE_MAX_BYTES 4095

/* The default hook: one write of the line and its newline, so that lines
 * of several threads do not interleave. */
static void write_stderr(const char *line) {
  size_t n = strlen(line);
  char *buf = malloc(n + 1);
  if (!buf) {
    fputs(line, stderr);
    fputc('\n', stderr);
    return;
  }
  memcpy(buf, line, n);
  buf[n] = '\n';
  fwrite(buf, 1, n + 1, stderr);
  fflush(stderr);
  free(buf);
}

/* Logs msg with the prefix, the whole line cut to max bytes. */
static void log_line(int level, const char *msg, size_t max) {
  if (level <= TR_LOG_OFF || level > tr_log_level())
    return;
  const char *actor = NULL, *task = NULL;
  void (*ctx)(const char **, const char **) = __atomic_load_n(&g_context, __ATOMIC_ACQUIRE);
  if (ctx)
    ctx(&actor, &task);
  char prefix[160];
  int plen = snprintf(prefix, sizeof prefix, "tractor[%ld] %s %s/%s: ", (long)getpid(),
                      tr_log_level_name(level), actor ? actor : "-", task ? task : "-");
  if (plen < 0)
    return;
  if ((size_t)plen >= sizeof prefix)
    plen = (int)sizeof prefix - 1;
  size_t mlen = strlen(msg);
  if ((size_t)plen + mlen > max)
    mlen = max > (size_t)plen ? max - (size_t)plen : 0;
  char *line = malloc((size_t)plen + mlen + 1);
  if (!line)
    return; /* out of memory: the line is lost, nothing else is */
  memcpy(line, prefix, (size_t)plen);
  memcpy(line + plen, msg, mlen);
  line[plen + mlen] = '\0';
  while (mlen > 0 && line[plen + mlen - 1] == '\n') /* the hook adds its own */
    line[plen + --mlen] = '\0';
  pthread_rwlock_rdlock(&hook_lock);
  if (g_hook)
    g_hook(g_hook_arg, level, line);
  else
    write_stderr(line);
  pthread_rwlock_unlock(&hook_lock);
  free(line);
}

void tr__log_text(int level, const char *msg) { log_line(level, msg, SIZE_MAX); }

void tr__log(int level, const char *fmt, ...) {
  char msg[LINE_MAX_BYTES + 1];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  log_line(level, msg, LINE_MAX_BYTES);
}
