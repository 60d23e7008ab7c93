/*
 * The child of tests/transport/test_proc.c: a plain program (the library's
 * constructor handles TR_PARENT_PID), one behaviour per mode.
 *   exit N              exits with status N
 *   sleep S             sleeps S seconds (SIGTERM ends it)
 *   term-ignore FILE    ignores SIGTERM, creates FILE, sleeps 60 s
 *   middle FILE         starts "sleep 60" as its own child, writes that
 *                       child's pid to FILE, sleeps 60 s
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "transport/proc.h"

static void sleep_s(int s) {
  struct timespec ts = {s, 0};
  while (nanosleep(&ts, &ts) != 0)
    ;
}

static int write_file(const char *path, const char *text) {
  char tmp[4096];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  FILE *f = fopen(tmp, "w");
  if (!f)
    return 1;
  fputs(text, f);
  fclose(f);
  return rename(tmp, path) == 0 ? 0 : 1; /* the reader sees all or nothing */
}

int main(int argc, char **argv) {
  if (argc < 3)
    return 64;
  if (strcmp(argv[1], "exit") == 0)
    return atoi(argv[2]);
  if (strcmp(argv[1], "sleep") == 0) {
    sleep_s(atoi(argv[2]));
    return 0;
  }
  if (strcmp(argv[1], "term-ignore") == 0) {
    signal(SIGTERM, SIG_IGN);
    if (write_file(argv[2], "ready"))
      return 65;
    sleep_s(60);
    return 0;
  }
  if (strcmp(argv[1], "middle") == 0) {
    char *gargv[] = {argv[0], "sleep", "60", NULL};
    tr_proc_t g;
    if (tr__proc_spawn(NULL, gargv, NULL, &g) != 0)
      return 66;
    char pid[32];
    snprintf(pid, sizeof pid, "%ld", (long)g.pid);
    if (write_file(argv[2], pid))
      return 67;
    sleep_s(60);
    return 0;
  }
  return 64;
}
