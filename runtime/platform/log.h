/*
 * Logging, runtime side (the public part is include/tractor/log.h).
 */
#ifndef TR_PLATFORM_LOG_H
#define TR_PLATFORM_LOG_H

#include <tractor/log.h>

/*
 * Logs msg (any length, possibly several lines) with the usual prefix when
 * level passes the threshold; tr_log's formatting is cut at 4 KiB, this
 * is for texts built elsewhere (the hang report).
 * Ownership: borrows msg.  Threads: any.
 */
void tr__log_text(int level, const char *msg);

/*
 * Registers how a line names its actor and task: hook sets *actor and
 * *task (either may stay NULL, printed "-").  Installed by the task layer
 * at start-up, so that this lower layer never imports it.  The hook must
 * not log.  Threads: any; set it before workers run.
 */
void tr__log_set_context_hook(void (*hook)(const char **actor, const char **task));

/* Parses a TR_LOG value ("off", "error", "warn", "info", "debug", any
 * case, or one digit 0-4) into *level.  Returns 0, or -1 (not a level). */
int tr__log_parse_level(const char *s, int *level);

#endif
