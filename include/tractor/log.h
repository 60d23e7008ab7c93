/*
 * Logging.  The library writes nothing to stdout, and to stderr only
 * through this: every line it has to say (a dropped protocol message, the
 * hang report, a signal that cancelled the program) goes to the logging
 * hook, whose default writes the line to stderr.  Install a hook to route
 * the lines elsewhere (a file, syslog, a test's buffer).
 *
 * A line reads
 *
 *     tractor[<pid>] <LEVEL> <actor>/<task>: <message>
 *
 * naming the process, the actor whose code logged ("-" outside any actor)
 * and its task ("-" in a behaviour or outside a task).  A message may span
 * several lines (the hang report); the hook gets it whole, without a final
 * newline.
 *
 * Levels, most severe first: TR_LOG_ERROR, TR_LOG_WARN (the default),
 * TR_LOG_INFO, TR_LOG_DEBUG.  A line is logged when its level is at or
 * above the threshold in severity (level <= tr_log_level()).  The
 * threshold comes from, in order: the environment variable TR_LOG ("off",
 * "error", "warn", "info", "debug", or 0-4), read when tr_run or tr_main
 * starts; tr_config_t.log_level; tr_log_set_level; else TR_LOG_WARN.
 *
 * A child actor process (TR_SPAWN_PROCESS) takes its parent's threshold
 * as of its spawn, whatever its own environment or config says (tractor's
 * loglevel passed to a subactor); tr_log_set_level in the child changes
 * it from then on.  Its lines go through its own hook: the default writes
 * to its stderr, which it shares with its parent, unless the program's
 * main installs a hook before tr_main (a hook installed in the parent's
 * root task is the parent's alone).
 */
#ifndef TRACTOR_LOG_H
#define TRACTOR_LOG_H

#include "errors.h" /* TR__PRINTF */

#ifdef __cplusplus
extern "C" {
#endif

enum tr_log_level {
  TR_LOG_OFF = 0, /* as a threshold: log nothing */
  TR_LOG_ERROR = 1,
  TR_LOG_WARN = 2,
  TR_LOG_INFO = 3,
  TR_LOG_DEBUG = 4
};

/*
 * Receives each line logged at or above the threshold: level, and the
 * whole line (prefix included, no final newline).
 * Ownership: line is borrowed for the call.
 * Threads: called on the thread that logs (a worker, the reactor, the
 * thread running tr_run), possibly on several at once; it must not block
 * for long and must not call back into the runtime, except
 * tr_log_set_level, tr_log_level and tr_log_level_name (not
 * tr_log_set_hook: it waits until running hooks have returned, so a hook
 * that calls it never returns).
 */
typedef void (*tr_log_hook_fn)(void *arg, int level, const char *line);

/*
 * Routes every line to hook(arg, level, line) from now on; NULL restores
 * the default (stderr).  A call racing with lines being logged is safe:
 * each line goes to the old hook or to the new one.  After it returns, the
 * old hook is no longer called.
 * Ownership: arg is borrowed until the hook is replaced.
 * Threads: any thread, before, during or after a run.
 */
void tr_log_set_hook(tr_log_hook_fn hook, void *arg);

/* Sets / reads the threshold (TR_LOG_OFF .. TR_LOG_DEBUG; values outside
 * are clamped).  Threads: any thread, at any time. */
void tr_log_set_level(int level);
int tr_log_level(void);

/* "ERROR", "WARN", "INFO", "DEBUG" ("OFF" for 0, "?" otherwise).
 * Ownership: a static string. */
const char *tr_log_level_name(int level);

/*
 * tr_log(level, fmt, ...): logs a printf-style line with the prefix above,
 * when level passes the threshold (the arguments are not evaluated
 * otherwise).  A line is cut to 4095 bytes, prefix included (the hang
 * report has its own, larger, buffer).
 * Threads: any thread.
 */
#define tr_log(level, ...)                                                                         \
  do {                                                                                             \
    if ((level) <= tr_log_level())                                                                 \
      tr__log((level), __VA_ARGS__);                                                               \
  } while (0)

void tr__log(int level, const char *fmt, ...) TR__PRINTF(2, 3);

#ifdef __cplusplus
}
#endif
#endif
