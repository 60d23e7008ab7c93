/*
 * Process actors (issue 10): actor-nursery children in child processes of
 * this test executable (TR_SPAWN_PROCESS; tests/support/host_main.c hands
 * a child to tr_main), reached through TCP channels on 127.0.0.1.  The
 * multi-process scenarios of tractor's test suite: spawn, run and result;
 * a daemon serving several calls, then cancelled; remote errors boxed;
 * run_in_actor results and failures in groups; streams and two-way
 * contexts across processes; cancelling an endless remote streamer; a
 * child killed with SIGKILL mid-stream; a child stuck in sleep(3) reaped
 * within the grace periods.  After every test no child process, zombie,
 * extra fd or thread is left (/proc).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <errno.h>
#include <signal.h>
#include <time.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define TR_TEST_WORKERS 2
#include <tractor/testing.h>

#include "../support/procs.h"
#include "schema/envelope.h"
#include "transport/channel.h" /* tr__chan_wire_max */
#include "transport/hello.h"
#include "transport/listen.h"

#define MS (1000 * 1000LL)

/* Sanitized builds run the big sizes smaller (each says why). */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define SANITIZED 1
#endif
#endif
#ifndef SANITIZED
#define SANITIZED 0
#endif

static const tr_actor_opts_t in_proc = {.spawn = TR_SPAWN_PROCESS};

/* ---- exported functions (run in the child processes) ------------------------------- */

static int add_one(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)ctx;
  uint64_t v;
  if (tr_buf_to_u64(args, &v) != 0)
    return tr_fail("TypeError", "add_one takes a u64");
  return tr_buf_from_u64(v + 1, result);
}
TR_EXPORT_FN("tproc.math", "add_one", add_one)

static int my_pid(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)ctx;
  (void)args;
  return tr_buf_from_u64((uint64_t)getpid(), result);
}
TR_EXPORT_FN("tproc.math", "pid", my_pid)

/* What this child process's environment still holds of what its parent
 * set for it alone, as bits (0 expected), plus 1 << 8 when it knows it is
 * a spawned child. */
static int child_env(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)ctx;
  (void)args;
  static const char *const vars[] = {"TR_PARENT_ADDR", "TR_PARENT_PID",   "TR_AUTH_KEY",
                                     "TR_SECRET",      "TR_SECRET_FILE", "TR_PEER_TIMEOUT_MS"};
  uint64_t bits = tr_spawned_child() ? 1u << 8 : 0;
  for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
    if (getenv(vars[i]))
      bits |= 1u << i;
  return tr_buf_from_u64(bits, result);
}
TR_EXPORT_FN("tproc.math", "env", child_env)

/* The callee process's actor objects not yet freed (tr_stats). */
static int allocated(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)ctx;
  (void)args;
  tr_stats_t s;
  tr_stats(&s);
  return tr_buf_from_u64(s.actors_allocated, result);
}
TR_EXPORT_FN("tproc.math", "allocated", allocated)

/* This process's logging threshold. */
static int log_level_of(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)ctx;
  (void)args;
  return tr_buf_from_u64((uint64_t)tr_log_level(), result);
}
TR_EXPORT_FN("tproc.math", "log_level", log_level_of)

static int fails(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)ctx;
  (void)args;
  (void)result;
  return tr_fail("ValueError", "bad input %d in process %d", 7, (int)getpid());
}
TR_EXPORT_FN("tproc.math", "fails", fails)

/* The length of fails_big's message: above a frame's limit. */
#define BIG_ERROR_LEN (17u << 20)

/* Fails with a message of BIG_ERROR_LEN bytes: "xx", then "é" (2 bytes in
 * UTF-8) up to a last 'y': a cut at an odd offset splits a character (the
 * cut's own arithmetic lands on one). */
static int fails_big(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)ctx;
  (void)args;
  (void)result;
  char *m = malloc(BIG_ERROR_LEN + 1);
  if (!m)
    return tr_fail("MemoryError", "no room for the message");
  m[0] = m[1] = 'x';
  for (size_t i = 2; i + 1 < BIG_ERROR_LEN; i += 2) {
    m[i] = (char)0xC3;
    m[i + 1] = (char)0xA9;
  }
  m[BIG_ERROR_LEN - 1] = 'y';
  m[BIG_ERROR_LEN] = '\0';
  int rc = tr_fail("ValueError", "%s", m);
  free(m);
  return rc;
}
TR_EXPORT_FN("tproc.math", "fails_big", fails_big)

/* Sends 0 .. n-1 (n from args; 0 = endless). */
static int count(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)result;
  uint64_t n = 0;
  if (args)
    (void)tr_buf_to_u64(args, &n);
  tr_stream_t *s = NULL;
  int rc = tr_ctx_open_stream(ctx, &s);
  for (uint64_t i = 0; rc == 0 && (n == 0 || i < n); i++) {
    tr_buf_t *b;
    if ((rc = tr_buf_from_u64(i, &b)) == 0) {
      rc = tr_stream_send(s, b);
      tr_buf_release(b);
    }
  }
  return rc;
}
TR_EXPORT_STREAM("tproc.stream", "count", count)

/* A context: Started(41), then echoes each value + 1 until the caller's
 * Stop, then returns the number echoed. */
static int echo(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)args;
  tr_buf_t *b;
  int rc = tr_buf_from_u64(41, &b);
  if (rc == 0) {
    rc = tr_ctx_started(ctx, b);
    tr_buf_release(b);
  }
  tr_stream_t *s = NULL;
  if (rc == 0)
    rc = tr_ctx_open_stream(ctx, &s);
  uint64_t n = 0;
  while (rc == 0) {
    tr_buf_t *in = NULL;
    rc = tr_stream_recv(s, &in);
    if (rc == -TR_EEOF) {
      rc = 0;
      break;
    }
    uint64_t v = 0;
    if (rc == 0 && (rc = tr_buf_to_u64(in, &v)) == 0 && (rc = tr_buf_from_u64(v + 1, &b)) == 0) {
      rc = tr_stream_send(s, b);
      tr_buf_release(b);
      n++;
    }
    tr_buf_release(in);
  }
  return rc ? rc : tr_buf_from_u64(n, result);
}
TR_EXPORT_CONTEXT("tproc.ctx", "echo", echo)

/* Reads a stream to its end after a pause of 200 ms (the sender's queue
 * fills meanwhile); returns the bytes it read. */
static int slow_sink(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)args;
  tr_stream_t *s = NULL;
  uint64_t bytes = 0;
  int rc = tr_ctx_started(ctx, NULL);
  if (rc == 0)
    rc = tr_ctx_open_stream(ctx, &s);
  if (rc == 0)
    rc = tr_sleep(200 * MS);
  while (rc == 0) {
    tr_buf_t *in = NULL;
    rc = tr_stream_recv(s, &in);
    bytes += tr_buf_len(in);
    tr_buf_release(in);
  }
  return rc == -TR_EEOF ? tr_buf_from_u64(bytes, result) : rc;
}
TR_EXPORT_CONTEXT("tproc.ctx", "slow_sink", slow_sink)

/* Its context's window, as the callee sees it, as the first value. */
static int window_of(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)args;
  (void)result;
  tr_buf_t *b;
  int rc = tr_buf_from_u64(tr_ctx_window(ctx), &b);
  if (rc == 0) {
    rc = tr_ctx_started(ctx, b);
    tr_buf_release(b);
  }
  return rc;
}
TR_EXPORT_CONTEXT("tproc.ctx", "window", window_of)

/* Blocks the whole process in sleep(3): no cancellation point. */
static int stuck(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)ctx;
  (void)args;
  (void)result;
  sleep(30);
  return 0;
}
TR_EXPORT_FN("tproc.stuck", "sleep", stuck)

/* Says started, then blocks its actor in sleep(30): a cancel request
 * cannot be seen until it returns. */
static int started_then_stuck(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)args;
  (void)result;
  int rc = tr_ctx_started(ctx, NULL);
  if (rc == 0)
    sleep(30);
  return rc;
}
TR_EXPORT_CONTEXT("tproc.stuck", "started_sleep", started_then_stuck)

/* Shuts down every TCP socket of this process (its channels): a broken
 * connection, seen by both ends. */
static int shut_tcp_sockets(void) {
  int n = 0;
  for (int fd = 3; fd < 1024; fd++) {
    int dom = 0;
    socklen_t len = sizeof dom;
    if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &dom, &len) == 0 && dom == AF_INET)
      n += shutdown(fd, SHUT_RDWR) == 0;
  }
  return n;
}

/* In the child: breaks its connection to the parent, then streams on. */
static int shut_then_count(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)args;
  (void)result;
  tr_stream_t *s = NULL;
  int rc = tr_ctx_open_stream(ctx, &s);
  for (uint64_t i = 0; rc == 0; i++) {
    if (i == 100 && shut_tcp_sockets() == 0)
      return tr_fail("RuntimeError", "no socket to shut down");
    tr_buf_t *b;
    if ((rc = tr_buf_from_u64(i, &b)) == 0) {
      rc = tr_stream_send(s, b);
      tr_buf_release(b);
    }
  }
  return rc;
}
TR_EXPORT_STREAM("tproc.stream", "shut_then_count", shut_then_count)

static uint64_t run_u64_any(tr_portal_t *p, const char *fn, uint64_t arg, int *rc);
static const tr_actor_opts_t in_proc;

/* In a child process: starts a grandchild process daemon and calls its
 * failing function; the boxed error goes back through this actor (a
 * relay: two process hops). */
static int nested_fail(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result);
/* In a child process: runs a grandchild stuck in sleep(3), then fails. */
static int fail_over_stuck(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result);
/* In a child process: starts a grandchild process daemon, then serves. */
static int nest_daemon(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result);
TR_EXPORT_FN("tproc.nest", "fail", nested_fail)
TR_EXPORT_FN("tproc.nest", "fail_over_stuck", fail_over_stuck)
TR_EXPORT_FN("tproc.nest", "daemon", nest_daemon)

static const char *const math_ns[] = {"tproc.math", "tproc.stream", "tproc.ctx", "tproc.stuck",
                                      "tproc.nest", "tproc.big"};

static tr_actor_opts_t daemon_opts(void) {
  tr_actor_opts_t o = {.enable = math_ns, .n_enable = sizeof math_ns / sizeof math_ns[0],
                       .spawn = TR_SPAWN_PROCESS};
  return o;
}

static int nested_fail(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)ctx;
  (void)args;
  (void)result;
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL;
  tr_actor_opts_t o = daemon_opts();
  int rc = tr_actor_nursery_open(&an, NULL);
  if (rc)
    return rc;
  rc = tr_start_actor_opts(an, "grandchild", &o, &p);
  int call = rc ? rc : tr_portal_run(p, "tproc.math.fails", NULL, NULL);
  tr_error_t *e = call ? tr_error_take() : NULL;
  (void)tr_actor_nursery_close(an);
  tr_portal_release(p);
  if (e)
    return tr_error_raise(e); /* re-raised: this actor joins its relay path */
  return call;
}

/* Two grandchildren (a process and a thread) that fail: the middle's
 * nursery closes with a group of two, which it raises. */
static int nested_group(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)ctx;
  (void)args;
  (void)result;
  tr_actor_nursery_t *an;
  int rc = tr_actor_nursery_open(&an, NULL);
  if (rc)
    return rc;
  tr_actor_opts_t thread = {.spawn = TR_SPAWN_THREAD};
  tr_portal_t *p = NULL, *q = NULL;
  rc = tr_run_in_actor_opts(an, "gc_proc", "tproc.math.fails", NULL, &in_proc, &p);
  if (rc == 0)
    rc = tr_run_in_actor_opts(an, "gc_thread", "tproc.math.fails", NULL, &thread, &q);
  int close_rc = tr_actor_nursery_close(an);
  tr_portal_release(p);
  tr_portal_release(q);
  return rc ? rc : close_rc;
}
TR_EXPORT_FN("tproc.nest", "group", nested_group)

static int fail_over_stuck(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)ctx;
  (void)args;
  (void)result;
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL, *q = NULL;
  tr_actor_nursery_opts_t no = {.cancel_grace_ns = 500 * MS};
  int rc = tr_actor_nursery_open(&an, &no);
  if (rc)
    return rc;
  rc = tr_run_in_actor_opts(an, "stuck", "tproc.stuck.sleep", NULL, &in_proc, &p);
  tr_actor_opts_t o = daemon_opts();
  if (rc == 0)
    rc = tr_start_actor_opts(an, "witness", &o, &q);
  if (rc == 0)
    (void)run_u64_any(q, "tproc.math.pid", 0, &rc); /* a sibling is up: so is the stuck one */
  if (rc == 0)
    rc = tr_fail("ValueError", "the middle fails while its child sleeps");
  (void)tr_actor_nursery_cancel(an);
  (void)tr_actor_nursery_close(an);
  tr_portal_release(p);
  tr_portal_release(q);
  return rc;
}

static int nest_daemon(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)ctx;
  (void)args;
  (void)result;
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL;
  tr_actor_opts_t o = daemon_opts();
  int rc = tr_actor_nursery_open(&an, NULL);
  if (rc)
    return rc;
  rc = tr_start_actor_opts(an, "grandchild", &o, &p);
  if (rc == 0)
    (void)run_u64_any(p, "tproc.math.pid", 0, &rc);
  if (rc == 0)
    rc = tr_sleep(3600 * 1000 * MS); /* until cancelled */
  (void)tr_actor_nursery_close(an);
  tr_portal_release(p);
  return rc;
}

/* A stream served to its caller (in another process) that forwards one
 * it opens itself to a daemon of its own, in its own process: n values
 * (args), more than a window, so Credit flows both ways on both dialogs.
 * The two dialogs' cids come from two processes' counters and may be
 * equal; the callee tells them apart by who sent each message. */
static int relay_count(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)result;
  tr_stream_t *out = NULL, *in = NULL;
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL;
  tr_actor_opts_t o = daemon_opts();
  o.spawn = TR_SPAWN_THREAD;
  int rc = tr_ctx_open_stream(ctx, &out);
  if (rc)
    return rc;
  if ((rc = tr_actor_nursery_open(&an, NULL)) != 0)
    return rc;
  rc = tr_start_actor_opts(an, "inner", &o, &p);
  if (rc == 0)
    rc = tr_portal_open_stream_from(p, "tproc.stream.count", args, NULL, &in);
  while (rc == 0) {
    tr_buf_t *b = NULL;
    if ((rc = tr_stream_recv(in, &b)) == 0) {
      rc = tr_stream_send(out, b);
      tr_buf_release(b);
    }
  }
  if (rc == -TR_EEOF)
    rc = 0;
  if (in) {
    int crc = tr_stream_close(in);
    if (rc == 0)
      rc = crc;
  }
  (void)tr_actor_nursery_cancel(an);
  (void)tr_actor_nursery_close(an);
  tr_portal_release(p);
  return rc;
}
TR_EXPORT_STREAM("tproc.nest", "relay_count", relay_count)

/* tractor's a_trynamic_first_scene: run_in_actor children serve calls
 * while their function runs.  "hi" answers with its actor's name; the
 * server's function returns once it has been called (hi_calls counts the
 * calls of this process: one server per process or per test). */
static int hi_calls;
static uint64_t run_u64_any(tr_portal_t *p, const char *fn, uint64_t arg, int *rc);

static int hi(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)ctx;
  (void)args;
  __atomic_add_fetch(&hi_calls, 1, __ATOMIC_RELAXED);
  return tr_buf_from_str(tr_actor_name(tr_self()), result);
}
TR_EXPORT_FN("tproc.scene", "hi", hi)

static int wait_called(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)ctx;
  (void)args;
  int64_t until = tr_now() + 10000 * MS;
  int rc = 0;
  while (__atomic_load_n(&hi_calls, __ATOMIC_RELAXED) == 0 && rc == 0)
    rc = tr_now() < until ? tr_sleep(MS) : tr_fail("TimeoutError", "nobody called");
  return rc ? rc : tr_buf_from_u64((uint64_t)__atomic_load_n(&hi_calls, __ATOMIC_RELAXED), result);
}
TR_EXPORT_FN("tproc.scene", "wait_called", wait_called)

static int say_hello(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)ctx;
  char other[64];
  size_t len = tr_buf_len(args);
  if (len >= sizeof other)
    return tr_fail("ValueError", "name too long");
  memcpy(other, tr_buf_data(args), len);
  other[len] = '\0';
  tr_portal_t *p = NULL;
  int rc = tr_wait_for_actor(other, tr_now() + 10000 * MS, &p);
  uint64_t v = 0;
  if (rc == 0) /* in a namespace the other enabled by opts.enable */
    v = run_u64_any(p, "tproc.math.add_one", 41, &rc);
  if (rc == 0 && v != 42)
    rc = tr_fail("ValueError", "add_one(41) was %llu", (unsigned long long)v);
  if (rc == 0)
    rc = tr_portal_run(p, "tproc.scene.hi", NULL, result);
  tr_portal_release(p);
  return rc;
}
TR_EXPORT_FN("tproc.scene", "say_hello", say_hello)

static uint64_t run_u64_any(tr_portal_t *p, const char *fn, uint64_t arg, int *rc) {
  tr_buf_t *a = NULL, *r = NULL;
  uint64_t v = 0;
  *rc = tr_buf_from_u64(arg, &a);
  if (*rc == 0)
    *rc = tr_portal_run(p, fn, a, &r);
  if (*rc == 0)
    *rc = tr_buf_to_u64(r, &v);
  tr_buf_release(a);
  tr_buf_release(r);
  return v;
}

/* Every test: nothing left behind. */
static void setup(void) { tr_test_procs_setup(); }
static void teardown(void) { tr_test_procs_check(); }

/* ---- tests --------------------------------------------------------------------------- */

TR_TEST(process, daemon_serves_calls_then_is_cancelled, .timeout = 60, .init = setup,
        .fini = teardown) {
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL;
  tr_actor_opts_t o = daemon_opts();
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_start_actor_opts(an, "mathd", &o, &p), 0);
  int rc = 0;
  uint64_t pid = p ? run_u64_any(p, "tproc.math.pid", 0, &rc) : 0;
  tr_check_rc(rc, 0);
  tr_check(pid != 0 && pid != (uint64_t)getpid(), "the daemon runs in another process");
  for (uint64_t i = 0; p && rc == 0 && i < 200; i++) {
    uint64_t v = run_u64_any(p, "tproc.math.add_one", i, &rc);
    tr_check_rc(rc, 0);
    tr_check_eq(v, i + 1);
  }
  tr_check(tr_test_live_children() == 1, "one child process while it serves");
  if (p) { /* a daemon has no result: refused at once, not a wait for its end */
    tr_check_rc(tr_portal_result(p, NULL), -TR_EINVAL);
    tr_check(tr_error_last() && strstr(tr_error_message(tr_error_last()), "mathd has no result"),
             "the error names the actor");
  }
  int ppid = 0, status = 0;
  if (p) {
    tr_check_rc(tr_portal_process(p, &ppid, &status), 0);
    tr_check(ppid == (int)pid && status == -1, "pid %d, running", ppid);
  }
  tr_assert_rc(tr_actor_nursery_close(an), 0); /* cancels the daemon, reaps it */
  tr_check(tr_test_live_children() == 0, "the process is reaped when close returns");
  if (p) {
    tr_check_rc(tr_portal_process(p, NULL, &status), 0);
    tr_check(WIFEXITED(status) && WEXITSTATUS(status) == 0, "exited 0 (status %#x)", status);
  }
  tr_portal_release(p);
  return 0;
}

TR_TEST(process, remote_error_is_boxed, .timeout = 60, .init = setup, .fini = teardown) {
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL;
  tr_actor_opts_t o = daemon_opts();
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_start_actor_opts(an, "failer", &o, &p), 0);
  if (p) {
    tr_check_rc(tr_portal_run(p, "tproc.math.fails", NULL, NULL), -TR_EREMOTE);
    const tr_error_t *e = tr_error_last();
    tr_check(e && strcmp(tr_error_type(e), "RemoteActorError") == 0, "boxed");
    tr_check(e && tr_error_boxed_type(e) && strcmp(tr_error_boxed_type(e), "ValueError") == 0,
             "the remote type");
    tr_check(e && strstr(tr_error_message(e), "bad input 7") != NULL, "the remote message");
    tr_check(e && tr_error_src(e) && strcmp(tr_error_src(e), "failer") == 0, "the source actor");
    tr_check_rc(tr_portal_run(p, "tproc.math.nope", NULL, NULL), -TR_ENOFUNC);
  }
  tr_assert_rc(tr_actor_nursery_close(an), 0);
  tr_portal_release(p);
  return 0;
}

/* A process child's channel is freed soon after the child has gone: its
 * timers (the handshake's, the heartbeat's, the kill's) are cancelled as
 * it exits.  They held the channel and a message each until they fired:
 * the handshake's 10 s after every spawn. */
TR_TEST(process, a_childs_channel_is_freed_once_it_is_over, .timeout = 60, .init = setup,
        .fini = teardown) {
  tr_actor_opts_t o = daemon_opts();
  tr_stats_t before, now;
  /* The first child starts what outlives it (the listener): counted in,
   * once the figures are still for 250 ms (its own channel gone).  Not
   * less: the listener's tick (200 ms, armed while a connection is in its
   * handshake) holds a message until it fires, and a baseline taken with
   * it counted one message the end would not have (seen under ASan). */
  for (int i = 0; i < 4; i++) {
    for (int64_t end = tr_now() + 3000 * MS; i == 1 && tr_now() < end;) {
      tr_stats(&before);
      tr_check_rc(tr_sleep(250 * MS), 0);
      tr_stats(&now);
      if (now.actors_allocated == before.actors_allocated &&
          now.msgs_allocated == before.msgs_allocated)
        break;
    }
    tr_actor_nursery_t *an;
    tr_portal_t *p = NULL;
    tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
    tr_check_rc(tr_start_actor_opts(an, "brief", &o, &p), 0);
    int rc = 0;
    if (p)
      tr_check(run_u64_any(p, "tproc.math.pid", 0, &rc) != 0 && rc == 0, "it answers");
    tr_check_rc(tr_actor_nursery_cancel(an), 0);
    tr_check_rc(tr_actor_nursery_close(an), 0);
    tr_portal_release(p);
  }
  int64_t t0 = tr_now(), end = t0 + 3000 * MS;
  do {
    tr_stats(&now);
  } while ((now.actors_allocated != before.actors_allocated ||
            now.msgs_allocated != before.msgs_allocated) &&
           tr_now() < end && tr_sleep(5 * MS) == 0);
  tr_check(now.actors_allocated == before.actors_allocated &&
               now.msgs_allocated == before.msgs_allocated,
           "3 s after 3 children: %lld actors and %lld messages more than before",
           (long long)(now.actors_allocated - before.actors_allocated),
           (long long)(now.msgs_allocated - before.msgs_allocated));
  return 0;
}

/* An error whose message is larger than a frame (17 MiB) reaches the
 * caller cut to TR_REMOTE_ERROR_TEXT_MAX bytes, at a character's start,
 * saying so: the same type, the start of its message.  It could not be
 * encoded, the channel dropped it, and the caller waited forever. */
TR_TEST(process, a_remote_error_too_large_for_a_frame_is_cut, .timeout = 60, .init = setup,
        .fini = teardown) {
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL;
  tr_actor_opts_t o = daemon_opts();
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_start_actor_opts(an, "failer", &o, &p), 0);
  if (p) {
    tr_check_rc(tr_portal_run(p, "tproc.math.fails_big", NULL, NULL), -TR_EREMOTE);
    const tr_error_t *e = tr_error_last();
    const char *msg = e ? tr_error_message(e) : NULL;
    tr_check(e && tr_error_boxed_type(e) && strcmp(tr_error_boxed_type(e), "ValueError") == 0,
             "the remote type");
    char note[64];
    snprintf(note, sizeof note, " ... [cut: %u bytes in all]", BIG_ERROR_LEN);
    const char *at = msg ? strstr(msg, note) : NULL;
    tr_check(at != NULL && at[strlen(note)] == '\0', "the message ends with the note: ...%s",
             msg && strlen(msg) > 80 ? msg + strlen(msg) - 80 : msg ? msg : "(none)");
    const char *start = msg ? strstr(msg, "xx\xc3\xa9") : NULL;
    tr_check(start != NULL && at != NULL && at > start, "the start of the remote message is kept");
    if (start && at && at > start) {
      size_t kept = (size_t)(at - start);
      tr_check(kept <= TR_REMOTE_ERROR_TEXT_MAX && kept > TR_REMOTE_ERROR_TEXT_MAX - 64,
               "%zu bytes of it kept", kept);
      tr_check(kept % 2 == 0, "cut between characters (%zu bytes: \"xx\" and whole 2-byte ones)",
               kept);
    }
    tr_check_rc(tr_portal_run(p, "tproc.math.pid", NULL, NULL), 0, "the actor serves on");
  }
  tr_assert_rc(tr_actor_nursery_close(an), 0);
  tr_portal_release(p);
  return 0;
}

/* ---- values too large for a frame ---------------------------------------------------- */

/* A value of n bytes (n from args). */
static tr_buf_t *bytes(uint64_t n) {
  tr_buf_t *b = NULL;
  return tr_buf_new((size_t)n, &b) == 0 ? b : NULL;
}

static int big_result(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)ctx;
  uint64_t n = 0;
  (void)tr_buf_to_u64(args, &n);
  return (*result = bytes(n)) ? 0 : tr_fail("MemoryError", "no %llu bytes", (unsigned long long)n);
}
TR_EXPORT_FN("tproc.big", "result", big_result)

/* The length of its arguments. */
static int arg_len(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)ctx;
  return tr_buf_from_u64(tr_buf_len(args), result);
}
TR_EXPORT_FN("tproc.big", "len", arg_len)

/* Streams one value of n bytes; fails as tr_stream_send did. */
static int big_stream(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)result;
  uint64_t n = 0;
  (void)tr_buf_to_u64(args, &n);
  tr_stream_t *s = NULL;
  int rc = tr_ctx_open_stream(ctx, &s);
  tr_buf_t *b = rc == 0 ? bytes(n) : NULL;
  if (rc == 0)
    rc = b ? tr_stream_send(s, b) : -TR_ENOMEM;
  tr_buf_release(b);
  return rc;
}
TR_EXPORT_STREAM("tproc.big", "stream", big_stream)

/* A message too large for a frame never reaches the channel (which has
 * nobody to tell): it is refused where it is sent, with -TR_EMSGSIZE and
 * the sizes, and the dialog ends with that error on both sides.  The
 * largest allowed value goes through; the daemon serves on. */
TR_TEST(process, values_too_large_for_a_frame_are_refused_where_they_are_sent, .timeout = 60,
        .init = setup, .fini = teardown) {
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL, *q = NULL;
  tr_actor_opts_t o = daemon_opts();
  tr_buf_t *huge = bytes(TR_REMOTE_VALUE_MAX + 1ull), *max = bytes(TR_REMOTE_VALUE_MAX), *r = NULL,
           *n = NULL;
  tr_assert(huge && max, "two 16 MiB buffers");
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_start_actor_opts(an, "big", &o, &p), 0);
  if (p) {
    /* The caller's arguments. */
    tr_check_rc(tr_portal_run(p, "tproc.big.len", huge, &r), -TR_EMSGSIZE);
    const tr_error_t *e = tr_error_last();
    tr_check(e && strstr(tr_error_message(e), "TR_REMOTE_VALUE_MAX") &&
                 strstr(tr_error_message(e), "tproc.big.len"),
             "the error names the call and the limit: %s", e ? tr_error_message(e) : "(none)");
    uint64_t len = 0;
    tr_check_rc(tr_portal_run(p, "tproc.big.len", max, &r), 0);
    tr_check(r && tr_buf_to_u64(r, &len) == 0 && len == TR_REMOTE_VALUE_MAX,
             "the largest value goes through (%llu)", (unsigned long long)len);
    tr_buf_release(r);
    r = NULL;
    /* The callee's result: the caller gets the callee's refusal. */
    tr_assert_rc(tr_buf_from_u64(TR_REMOTE_VALUE_MAX + 1ull, &n), 0);
    tr_check_rc(tr_portal_run(p, "tproc.big.result", n, &r), -TR_EREMOTE);
    e = tr_error_last();
    tr_check(e && tr_error_boxed_type(e) && strcmp(tr_error_boxed_type(e), "MessageTooLarge") == 0,
             "boxed MessageTooLarge: %s", e ? tr_error_message(e) : "(none)");
    tr_check(r == NULL, "no result");
    /* A stream message: tr_stream_send refuses it in the callee. */
    tr_stream_t *s = NULL;
    tr_check_rc(tr_portal_open_stream_from(p, "tproc.big.stream", n, NULL, &s), 0);
    if (s) {
      tr_buf_t *v = NULL;
      tr_check_rc(tr_stream_recv(s, &v), -TR_EREMOTE);
      e = tr_error_last();
      tr_check(e && tr_error_boxed_type(e) && strcmp(tr_error_boxed_type(e), "MessageTooLarge") == 0,
               "the stream ends with the callee's refusal: %s", e ? tr_error_message(e) : "(none)");
      tr_buf_release(v);
      (void)tr_stream_close(s);
    }
    /* run_in_actor's arguments go in the SpawnSpec: refused before any
     * process starts. */
    int before = tr_test_live_children();
    tr_check_rc(tr_run_in_actor_opts(an, "never", "tproc.big.len", huge, &in_proc, &q), -TR_EMSGSIZE);
    tr_check(q == NULL && tr_test_live_children() == before, "no child started");
    tr_buf_release(r);
    r = NULL;
    tr_check_rc(tr_portal_run(p, "tproc.big.len", n, &r), 0); /* still serving */
    tr_buf_release(r);
  }
  tr_check_rc(tr_actor_nursery_cancel(an), 0);
  tr_check_rc(tr_actor_nursery_close(an), 0);
  tr_portal_release(p);
  tr_buf_release(huge);
  tr_buf_release(max);
  tr_buf_release(n);
  return 0;
}

/* A program that ignores SIGCHLD has its children reaped by the kernel,
 * so their statuses are lost: each counts as reaped, status 0 (a warning
 * says so), and the nursery closes as usual instead of waiting for a reap
 * that cannot come. */
TR_TEST(process, a_program_that_ignores_sigchld_still_closes_its_nursery, .timeout = 30,
        .init = setup, .fini = teardown) {
  struct sigaction ign, old;
  memset(&ign, 0, sizeof ign);
  ign.sa_handler = SIG_IGN;
  tr_assert(sigaction(SIGCHLD, &ign, &old) == 0, "SIGCHLD ignored");
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL, *q = NULL;
  tr_actor_opts_t o = daemon_opts();
  tr_buf_t *arg = NULL, *r = NULL;
  tr_assert_rc(tr_buf_from_u64(1, &arg), 0);
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_start_actor_opts(an, "ignored", &o, &p), 0);
  tr_check_rc(tr_run_in_actor_opts(an, "once", "tproc.math.add_one", arg, &in_proc, &q), 0);
  if (p)
    tr_check_rc(tr_portal_run(p, "tproc.math.add_one", arg, &r), 0);
  tr_buf_release(r);
  if (q)
    tr_check_rc(tr_portal_result(q, &r), 0);
  tr_buf_release(r);
  tr_check_rc(tr_actor_nursery_cancel(an), 0);
  tr_check_rc(tr_actor_nursery_close(an), 0);
  int pid = 0, st = -1;
  tr_check(p && tr_portal_process(p, &pid, &st) == 0 && pid > 0 && st == 0,
           "the daemon's status is lost, read as 0 (%d)", st);
  tr_portal_release(p);
  tr_portal_release(q);
  tr_buf_release(arg);
  sigaction(SIGCHLD, &old, NULL);
  return 0;
}

/* What a parent sets for its child process alone (its address, the
 * channels' key, the peer timeout) leaves the child's environment as it
 * starts, and the parent's secret never enters it: a program the child
 * actor runs does not take itself for a child actor process, nor learn the
 * key or the secret.  tr_spawned_child still says 1. */
TR_TEST(process, a_child_passes_on_nothing_of_its_parents_settings, .timeout = 30,
        .init = setup, .fini = teardown) {
  setenv("TR_SECRET", "not for children", 1); /* read by runtimes that start from now on */
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL;
  tr_actor_opts_t o = daemon_opts();
  tr_buf_t *r = NULL;
  uint64_t bits = 0;
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_start_actor_opts(an, "envd", &o, &p), 0);
  if (p)
    tr_check_rc(tr_portal_run(p, "tproc.math.env", NULL, &r), 0);
  tr_check(r && tr_buf_to_u64(r, &bits) == 0 && bits == 1u << 8,
           "only the spawned-child flag (bits %#llx)", (unsigned long long)bits);
  tr_buf_release(r);
  tr_check_rc(tr_actor_nursery_cancel(an), 0);
  tr_check_rc(tr_actor_nursery_close(an), 0);
  tr_portal_release(p);
  unsetenv("TR_SECRET");
  return 0;
}

TR_TEST(process, run_in_actor_result, .timeout = 60, .init = setup, .fini = teardown) {
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL;
  tr_buf_t *arg, *res = NULL;
  tr_assert_rc(tr_buf_from_u64(41, &arg), 0);
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_run_in_actor_opts(an, "adder", "tproc.math.add_one", arg, &in_proc, &p), 0);
  tr_assert_rc(tr_actor_nursery_close(an), 0);
  uint64_t v = 0;
  if (p) {
    tr_check_rc(tr_portal_result(p, &res), 0);
    tr_check_rc(tr_buf_to_u64(res, &v), 0);
  }
  tr_check_eq(v, 42);
  tr_buf_release(arg);
  tr_buf_release(res);
  tr_portal_release(p);
  return 0;
}

/* run_in_actor children are actors like any other: one calls the other
 * (found by name) while their functions run, in the function's namespace
 * and in one opts.enable adds, in-process and as processes. */
TR_TEST(process, run_in_actor_children_serve_calls_while_they_run, .timeout = 60, .init = setup,
        .fini = teardown) {
  static const char *const more[] = {"tproc.math"};
  static const tr_actor_opts_t kinds[] = {
      {.spawn = TR_SPAWN_THREAD, .enable = more, .n_enable = 1},
      {.spawn = TR_SPAWN_PROCESS, .enable = more, .n_enable = 1}};
  for (int k = 0; k < 2; k++) {
    __atomic_store_n(&hi_calls, 0, __ATOMIC_RELAXED);
    tr_actor_nursery_t *an;
    tr_portal_t *server = NULL, *caller = NULL;
    tr_buf_t *name, *res = NULL;
    tr_assert_rc(tr_buf_from_str("gretchen", &name), 0);
    tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
    tr_check_rc(tr_run_in_actor_opts(an, "gretchen", "tproc.scene.wait_called", NULL, &kinds[k],
                                     &server),
                0);
    tr_check_rc(tr_run_in_actor_opts(an, "donny", "tproc.scene.say_hello", name, &kinds[k],
                                     &caller),
                0);
    tr_check_rc(tr_actor_nursery_close(an), 0, "kind %d", k);
    if (caller && tr_portal_result(caller, &res) == 0)
      tr_check(tr_buf_len(res) == 8 && memcmp(tr_buf_data(res), "gretchen", 8) == 0,
               "donny heard %.*s", (int)tr_buf_len(res), (const char *)tr_buf_data(res));
    else
      tr_check(0, "kind %d: donny failed", k);
    tr_buf_release(res);
    res = NULL;
    uint64_t calls = 0;
    if (server && tr_portal_result(server, &res) == 0)
      (void)tr_buf_to_u64(res, &calls);
    tr_check_eq(calls, 1, "kind %d", k);
    tr_buf_release(res);
    tr_buf_release(name);
    tr_portal_release(server);
    tr_portal_release(caller);
  }
  return 0;
}

/* ps shows a child process by its actor's name (15 bytes of it). */
TR_TEST(process, a_child_process_is_named_after_its_actor, .timeout = 60, .init = setup,
        .fini = teardown) {
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL;
  tr_actor_opts_t o = daemon_opts();
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_start_actor_opts(an, "price-feed-of-the-day", &o, &p), 0);
  int rc = -1;
  uint64_t pid = p ? run_u64_any(p, "tproc.math.pid", 0, &rc) : 0;
  tr_check_rc(rc, 0);
  char path[64], comm[32] = "";
  snprintf(path, sizeof path, "/proc/%llu/comm", (unsigned long long)pid);
  FILE *f = rc == 0 ? fopen(path, "r") : NULL;
  if (f) {
    if (!fgets(comm, sizeof comm, f))
      comm[0] = '\0';
    fclose(f);
  }
  tr_check_str_eq(comm, "price-feed-of-t\n");
  tr_check_rc(tr_actor_nursery_cancel(an), 0);
  tr_assert_rc(tr_actor_nursery_close(an), 0);
  tr_portal_release(p);
  return 0;
}

#define N_FAIL 25
#define N_FAIL 25
#define N_FAIL 25

TR_TEST(process, failing_children_make_a_group, .timeout = 120, .init = setup, .fini = teardown) {
  tr_actor_nursery_t *an;
  tr_portal_t *ps[N_FAIL] = {0};
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  for (int i = 0; i < N_FAIL; i++) {
    char name[32];
    snprintf(name, sizeof name, "failer-%d", i);
    tr_check_rc(tr_run_in_actor_opts(an, name, "tproc.math.fails", NULL, &in_proc, &ps[i]), 0);
  }
  int rc = tr_actor_nursery_close(an);
  /* One cancels all: those that failed before the first failure's cancel
   * reached them are in the group; the rest were cancelled. */
  tr_check(rc == -TR_EGROUP || rc == -TR_EREMOTE, "the failures come back (%d)", rc);
  const tr_error_t *e = tr_error_last();
  size_t n = rc == -TR_EGROUP && e ? tr_error_group_count(e) : 1;
  tr_check(n >= 1 && n <= N_FAIL, "%zu failures in the group", n);
  for (int i = 0; i < N_FAIL; i++)
    tr_portal_release(ps[i]);
  return 0;
}

TR_TEST(process, stream_across_processes, .timeout = 60, .init = setup, .fini = teardown) {
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL;
  tr_actor_opts_t o = daemon_opts();
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_start_actor_opts(an, "counter", &o, &p), 0);
  tr_buf_t *n;
  tr_assert_rc(tr_buf_from_u64(10000, &n), 0);
  tr_stream_t *s = NULL;
  if (p)
    tr_check_rc(tr_portal_open_stream_from(p, "tproc.stream.count", n, NULL, &s), 0);
  uint64_t expect = 0;
  int rc = 0;
  while (s && rc == 0) {
    tr_buf_t *b = NULL;
    rc = tr_stream_recv(s, &b);
    uint64_t v;
    if (rc == 0 && tr_buf_to_u64(b, &v) == 0) {
      tr_check_eq(v, expect);
      expect++;
    }
    tr_buf_release(b);
  }
  tr_check_rc(rc, -TR_EEOF);
  tr_check_eq(expect, 10000);
  if (s)
    tr_check_rc(tr_stream_close(s), 0);
  tr_buf_release(n);
  tr_assert_rc(tr_actor_nursery_close(an), 0);
  tr_portal_release(p);
  return 0;
}

/* tractor's full_fledged_streaming_service: a process child streams to
 * its parent what it streams from a daemon of its own.  The child's dialog
 * with its daemon and its parent's dialog with it had equal cids, and
 * messages of one went to the other: the stream stopped for good after a
 * window (512) of values. */
TR_TEST(process, a_child_relays_a_stream_it_opens_itself, .timeout = 60, .init = setup,
        .fini = teardown) {
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL;
  tr_actor_opts_t o = daemon_opts();
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_start_actor_opts(an, "aggregator", &o, &p), 0);
  tr_buf_t *n;
  tr_assert_rc(tr_buf_from_u64(3000, &n), 0);
  tr_stream_t *s = NULL;
  if (p)
    tr_check_rc(tr_portal_open_stream_from(p, "tproc.nest.relay_count", n, NULL, &s), 0);
  uint64_t expect = 0;
  int rc = 0;
  tr_scope_t sc;
  tr_assert_rc(tr_move_on_after(&sc, 10000 * MS), 0);
  while (s && rc == 0) {
    tr_buf_t *b = NULL;
    rc = tr_stream_recv(s, &b);
    uint64_t v;
    if (rc == 0 && tr_buf_to_u64(b, &v) == 0) {
      tr_check_eq(v, expect);
      expect++;
    }
    tr_buf_release(b);
  }
  tr_assert_rc(tr_scope_close(&sc), 0);
  tr_check_rc(rc, -TR_EEOF, "after %llu values", (unsigned long long)expect);
  tr_check_eq(expect, 3000);
  if (s)
    tr_check_rc(tr_stream_close(s), 0);
  tr_buf_release(n);
  tr_check_rc(tr_actor_nursery_cancel(an), 0);
  tr_assert_rc(tr_actor_nursery_close(an), 0);
  tr_portal_release(p);
  return 0;
}

TR_TEST(process, two_way_context, .timeout = 60, .init = setup, .fini = teardown) {
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL;
  tr_actor_opts_t o = daemon_opts();
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_start_actor_opts(an, "echo", &o, &p), 0);
  tr_ctx_t *ctx = NULL;
  tr_buf_t *first = NULL, *res = NULL;
  if (p)
    tr_check_rc(tr_portal_open_context(p, "tproc.ctx.echo", NULL, NULL, &ctx, &first), 0);
  uint64_t v = 0;
  tr_check_rc(tr_buf_to_u64(first, &v), 0);
  tr_check_eq(v, 41);
  tr_stream_t *s = NULL;
  if (ctx)
    tr_check_rc(tr_ctx_open_stream(ctx, &s), 0);
  for (uint64_t i = 0; s && i < 1000; i++) {
    tr_buf_t *b, *in = NULL;
    tr_assert_rc(tr_buf_from_u64(i, &b), 0);
    tr_check_rc(tr_stream_send(s, b), 0);
    tr_buf_release(b);
    tr_check_rc(tr_stream_recv(s, &in), 0);
    tr_check_rc(tr_buf_to_u64(in, &v), 0);
    tr_check_eq(v, i + 1);
    tr_buf_release(in);
  }
  if (s)
    tr_check_rc(tr_stream_close(s), 0);
  if (ctx)
    tr_check_rc(tr_ctx_close(ctx, &res), 0);
  v = 0;
  tr_check_rc(tr_buf_to_u64(res, &v), 0);
  tr_check_eq(v, 1000);
  tr_buf_release(first);
  tr_buf_release(res);
  tr_assert_rc(tr_actor_nursery_close(an), 0);
  tr_portal_release(p);
  return 0;
}

/* A stream of large values fills the sender's queue far beyond the mark
 * at which a peer that reads nothing is dropped (tr__chan_wire_max,
 * lowered here to 1 MiB from 256 MiB): 512 values of 64 KiB in flight is
 * 32 MiB, and the receiver starts reading only after 200 ms.  The peer
 * reads all the while after that, so nothing is declared dead: only a
 * peer that takes nothing for a third of peer_timeout is.  (With the
 * default mark, values of ~520 KiB and more tripped it.) */
TR_TEST(process, a_window_of_large_values_is_not_taken_for_a_deaf_peer, .timeout = 60,
        .init = setup, .fini = teardown) {
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL;
  tr_actor_opts_t o = daemon_opts();
  size_t mark = __atomic_load_n(&tr__chan_wire_max, __ATOMIC_RELAXED);
  __atomic_store_n(&tr__chan_wire_max, (size_t)1 << 20, __ATOMIC_RELAXED);
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_start_actor_opts(an, "sink", &o, &p), 0);
  tr_ctx_t *ctx = NULL;
  tr_stream_t *s = NULL;
  tr_buf_t *v = NULL, *res = NULL;
  if (p)
    tr_check_rc(tr_portal_open_context(p, "tproc.ctx.slow_sink", NULL, NULL, &ctx, NULL), 0);
  if (ctx)
    tr_check_rc(tr_ctx_open_stream(ctx, &s), 0);
  tr_assert_rc(tr_buf_new(64 << 10, &v), 0);
  for (int i = 0; s && i < 600; i++)
    if (tr_stream_send(s, v) != 0) {
      tr_check(0, "value %d: %s", i, tr_error_message(tr_error_last()));
      break;
    }
  if (s)
    tr_check_rc(tr_stream_close(s), 0);
  if (ctx)
    tr_check_rc(tr_ctx_close(ctx, &res), 0);
  uint64_t got = 0;
  tr_check_rc(tr_buf_to_u64(res, &got), 0);
  tr_check_eq(got, 600ull << 16, "every byte arrived");
  tr_buf_release(v);
  tr_buf_release(res);
  tr_assert_rc(tr_actor_nursery_close(an), 0);
  __atomic_store_n(&tr__chan_wire_max, mark, __ATOMIC_RELAXED);
  tr_portal_release(p);
  return 0;
}

/* tractor passes its loglevel to a subactor: a child process logs at its
 * parent's threshold as of the spawn, though it could not learn a level
 * set in code (or from the command line: it gets no argv) otherwise. */
TR_TEST(process, a_child_logs_at_its_parents_threshold, .timeout = 60, .init = setup,
        .fini = teardown) {
  int before = tr_log_level();
  tr_log_set_level(before == TR_LOG_INFO ? TR_LOG_ERROR : TR_LOG_INFO);
  int want = tr_log_level();
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL;
  tr_actor_opts_t o = daemon_opts();
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_start_actor_opts(an, "logger", &o, &p), 0);
  tr_log_set_level(before); /* the spawn's value counts, not later ones */
  int rc = 0;
  uint64_t level = p ? run_u64_any(p, "tproc.math.log_level", 0, &rc) : 0;
  tr_check_rc(rc, 0);
  tr_check_eq(level, (uint64_t)want, "the child's threshold");
  tr_assert_rc(tr_actor_nursery_close(an), 0);
  tr_portal_release(p);
  return 0;
}

/* The default window is the caller's choice by where the callee is: 64
 * in-process, TR_STREAM_WINDOW_REMOTE across processes (one credit round
 * trip over TCP costs tens of microseconds); an explicit one is kept.
 * Both sides use the same. */
TR_TEST(process, default_window_by_where_the_callee_is, .timeout = 60, .init = setup,
        .fini = teardown) {
  static const struct {
    int spawn;
    uint32_t asked, want;
  } cases[] = {{TR_SPAWN_THREAD, 0, TR_STREAM_WINDOW},
               {TR_SPAWN_PROCESS, 0, TR_STREAM_WINDOW_REMOTE},
               {TR_SPAWN_THREAD, 100, 100},
               {TR_SPAWN_PROCESS, 100, 100}};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    tr_actor_nursery_t *an;
    tr_portal_t *p = NULL;
    tr_actor_opts_t o = daemon_opts();
    o.spawn = cases[i].spawn;
    tr_ctx_opts_t copts = {.window = cases[i].asked};
    tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
    tr_check_rc(tr_start_actor_opts(an, "windowed", &o, &p), 0);
    tr_ctx_t *ctx = NULL;
    tr_buf_t *first = NULL;
    if (p)
      tr_check_rc(tr_portal_open_context(p, "tproc.ctx.window", NULL, &copts, &ctx, &first), 0);
    uint64_t theirs = 0;
    tr_check_rc(tr_buf_to_u64(first, &theirs), 0);
    tr_check_eq(tr_ctx_window(ctx), cases[i].want, "case %zu: the caller's window", i);
    tr_check_eq(theirs, cases[i].want, "case %zu: the callee's window", i);
    if (ctx)
      tr_check_rc(tr_ctx_close(ctx, NULL), 0);
    tr_buf_release(first);
    tr_assert_rc(tr_actor_nursery_close(an), 0);
    tr_portal_release(p);
  }
  return 0;
}

/* One call to the daemon through a portal of this actor's own. */
static int one_call(void *arg) {
  tr_portal_t *q = NULL;
  int rc = tr_portal_from_actor(arg, &q);
  if (rc == 0)
    (void)run_u64_any(q, "tproc.math.add_one", 1, &rc);
  tr_portal_release(q);
  return rc;
}

static void *join_actor(void *arg) { return (void *)(intptr_t)tr_join(arg, -1); }

/* A channel knows the local actors that talked on it (to route their
 * answers) only until they exit, and then tells the peer, which forgets
 * its proxy: 50 short-lived callers leave no actor object behind on
 * either side (actors_allocated counts the ones still referenced). */
TR_TEST(process, the_channel_forgets_callers_that_exited, .timeout = 60, .init = setup,
        .fini = teardown) {
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL;
  tr_actor_opts_t o = daemon_opts();
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_start_actor_opts(an, "daemon", &o, &p), 0);
  int rc = 0;
  if (p)
    (void)run_u64_any(p, "tproc.math.add_one", 1, &rc); /* connected, root known */
  tr_check_rc(rc, 0);
  /* Registered (its channel to this node's registrar made), and this
   * node's proxy of it made, before counting. */
  tr_portal_t *found = NULL;
  tr_check_rc(tr_wait_for_actor("daemon", tr_now() + 10000 * MS, &found), 0);
  tr_portal_release(found);
  tr_stats_t before, now;
  tr_stats(&before);
  uint64_t theirs_before = p ? run_u64_any(p, "tproc.math.allocated", 0, &rc) : 0;
  tr_check_rc(rc, 0);
  for (int i = 0; p && rc == 0 && i < 50; i++) {
    tr_actor_t *a = NULL;
    tr_spawn_opts_t so = {.name = "caller"};
    tr_check_rc(rc = tr_spawn_task_actor(one_call, tr_portal_actor(p), &so, &a), 0);
    void *joined = NULL;
    if (a) {
      tr_check_rc(tr_to_thread(join_actor, a, &joined), 0);
      tr_check_rc(rc = tr_task_actor_result(a), 0, "call %d", i);
      tr_actor_release(a);
    }
  }
  /* The channel hears of each exit by a monitor, in its own turn. */
  int64_t until = tr_now() + 5000 * MS;
  do
    tr_stats(&now);
  while (now.actors_allocated > before.actors_allocated && tr_now() < until &&
         tr_sleep(MS) == 0);
  tr_check(now.actors_allocated <= before.actors_allocated,
           "%llu actor objects more than before the 50 callers",
           (unsigned long long)(now.actors_allocated - before.actors_allocated));
  /* The callee's side: its proxies of the callers go. */
  uint64_t theirs = 0;
  rc = 0;
  until = tr_now() + 5000 * MS;
  while (p && (theirs = run_u64_any(p, "tproc.math.allocated", 0, &rc)) > theirs_before &&
         rc == 0 && tr_now() < until && tr_sleep(MS) == 0)
    ;
  tr_check_rc(rc, 0);
  tr_check(theirs <= theirs_before, "the callee process has %llu actor objects more",
           (unsigned long long)(theirs - theirs_before));
  tr_assert_rc(tr_actor_nursery_close(an), 0);
  tr_portal_release(p);
  return 0;
}

TR_TEST(process, endless_remote_streamer_cancelled_by_deadline, .timeout = 60, .init = setup,
        .fini = teardown) {
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL;
  tr_actor_opts_t o = daemon_opts();
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_start_actor_opts(an, "forever", &o, &p), 0);
  int up = 0;
  (void)run_u64_any(p, "tproc.math.pid", 0,
                    &up); /* the child is up: the deadline is the stream's */
  tr_check_rc(up, 0);
  uint64_t got = 0;
  int64_t t0 = tr_now();
  tr_scope_t sc;
  tr_assert_rc(tr_scope_open(&sc, tr_now() + 1000 * MS, 0), 0);
  tr_stream_t *s = NULL;
  int rc = p ? tr_portal_open_stream_from(p, "tproc.stream.count", NULL, NULL, &s) : -1;
  while (rc == 0) {
    tr_buf_t *b = NULL;
    rc = tr_stream_recv(s, &b);
    got += rc == 0;
    tr_buf_release(b);
  }
  tr_check_rc(rc, -TR_ECANCELED);
  if (s)
    (void)tr_stream_close(s);
  tr_scope_close(&sc);
  tr_check(tr_scope_cancelled_caught(&sc), "the deadline fired");
  tr_check(got > 0, "values came before the deadline");
  tr_check(tr_now() - t0 < 5000 * MS, "the stream ended promptly");
  tr_assert_rc(tr_actor_nursery_close(an), 0);
  tr_portal_release(p);
  return 0;
}

TR_TEST(process, child_killed_mid_stream_is_a_clear_error, .timeout = 60, .init = setup,
        .fini = teardown) {
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL;
  tr_actor_opts_t o = daemon_opts();
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_start_actor_opts(an, "victim", &o, &p), 0);
  int rc = 0;
  pid_t pid = p ? (pid_t)run_u64_any(p, "tproc.math.pid", 0, &rc) : 0;
  tr_stream_t *s = NULL;
  if (rc == 0 && p)
    rc = tr_portal_open_stream_from(p, "tproc.stream.count", NULL, NULL, &s);
  tr_check_rc(rc, 0);
  uint64_t got = 0;
  while (rc == 0) {
    tr_buf_t *b = NULL;
    rc = tr_stream_recv(s, &b);
    tr_buf_release(b);
    if (rc == 0 && ++got == 1000)
      kill(pid, SIGKILL);
  }
  tr_check(rc == -TR_EIO || rc == -TR_ECLOSED, "the stream ends with the loss (%d)", rc);
  const tr_error_t *e = tr_error_last();
  tr_check(e && strstr(tr_error_message(e), "signal 9") != NULL, "says the process was killed: %s",
           e ? tr_error_message(e) : "(no error)");
  /* Told of the loss, the caller finds the actor exited (its stand-in was
   * marked before the dialog heard), and a cancel is acknowledged at once. */
  tr_check(p && tr_actor_exited(tr_portal_actor(p)), "the lost actor reads as exited");
  int acked = -1;
  if (p)
    tr_check_rc(tr_portal_cancel_actor(p, 0, &acked), 0);
  tr_check_eq(acked, 1, "a cancel of the lost actor");
  if (s)
    (void)tr_stream_close(s);
  rc = tr_actor_nursery_close(an);
  tr_check(rc == -TR_EIO, "the nursery reports the lost child (%d)", rc);
  tr_portal_release(p);
  return 0;
}

/* Kills the process given.  A spawned task runs when the spawning task
 * next blocks (task.h): here, once the main task has sent its cancel
 * request and waits for the ack. */
static int kill_soon(void *arg) {
  return kill(*(pid_t *)arg, SIGKILL) == 0 ? 0 : tr_fail("OSError", "kill: %s", strerror(errno));
}

/* A cancel of a whole actor with no time limit, whose process dies before
 * it acknowledges (it sits in sleep(30), deaf to the request): the lost
 * connection ends the wait as the actor's exit does, at once, where it
 * used to wait for ever. */
TR_TEST(process, an_unlimited_actor_cancel_ends_when_the_process_dies, .timeout = 60,
        .init = setup, .fini = teardown) {
  tr_actor_nursery_t *an;
  tr_nursery_t *n = NULL;
  tr_portal_t *p = NULL;
  tr_ctx_t *ctx = NULL;
  tr_actor_opts_t o = daemon_opts();
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_start_actor_opts(an, "deaf", &o, &p), 0);
  int rc = 0;
  pid_t pid = p ? (pid_t)run_u64_any(p, "tproc.math.pid", 0, &rc) : 0;
  tr_check_rc(rc, 0);
  if (rc == 0)
    tr_check_rc(rc = tr_portal_open_context(p, "tproc.stuck.started_sleep", NULL, NULL, &ctx,
                                            NULL),
                0);
  if (rc == 0 && (rc = tr_nursery_open(&n)) == 0) {
    tr_check_rc(tr_nursery_spawn(n, kill_soon, &pid, NULL), 0);
    int acked = -1;
    int64_t t0 = tr_now();
    tr_check_rc(tr_portal_cancel_actor(p, -1, &acked), 0);
    int64_t ms = (tr_now() - t0) / MS;
    tr_check_eq(acked, 1, "the lost actor counts as exited");
    tr_check(ms < 5000, "the wait ended with the process (%lld ms)", (long long)ms);
    tr_check(tr_actor_exited(tr_portal_actor(p)), "the actor reads as exited");
    /* The lost child failed its actor nursery, which cancels the scopes
     * inside it (one cancels all). */
    rc = tr_nursery_close(n);
    tr_check(rc == 0 || rc == -TR_ECANCELED, "the killer's nursery (%d)", rc);
  }
  if (ctx) {
    int crc = tr_ctx_close(ctx, NULL);
    tr_check(crc == -TR_EIO || crc == -TR_ECLOSED, "the context ends with the loss (%d)", crc);
  }
  rc = tr_actor_nursery_close(an);
  tr_check(rc == -TR_EIO, "the nursery reports the lost child (%d)", rc);
  tr_portal_release(p);
  return 0;
}

/* A call that crosses the actor's exit (sent after its acknowledged
 * cancel, before this side has heard that the process ended) fails with
 * -TR_ECLOSED, and by then the actor reads as exited: whoever learns of
 * the end through a dialog finds tr_actor_exited agreeing. */
TR_TEST(process, a_call_after_the_exit_finds_the_actor_exited, .timeout = 60, .init = setup,
        .fini = teardown) {
  tr_actor_nursery_t *an;
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  for (int i = 0; i < 5; i++) {
    tr_portal_t *p = NULL;
    tr_actor_opts_t o = daemon_opts();
    tr_check_rc(tr_start_actor_opts(an, "brief", &o, &p), 0);
    if (!p)
      break;
    int rc = 0, acked = -1;
    (void)run_u64_any(p, "tproc.math.pid", 0, &rc);
    tr_check_rc(rc, 0);
    tr_check_rc(tr_portal_cancel_actor(p, 5000 * MS, &acked), 0);
    tr_check_eq(acked, 1);
    tr_check_rc(tr_portal_run(p, "tproc.math.pid", NULL, NULL), -TR_ECLOSED);
    tr_check(tr_actor_exited(tr_portal_actor(p)),
             "round %d: the call said %s, the actor reads as %s", i,
             tr_error_last() ? tr_error_message(tr_error_last()) : "-", "live");
    tr_portal_release(p);
  }
  tr_check_rc(tr_actor_nursery_close(an), 0);
  return 0;
}

TR_TEST(process, stuck_child_is_reaped_within_the_grace, .timeout = 60, .init = setup,
        .fini = teardown) {
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL, *q = NULL;
  tr_actor_nursery_opts_t no = {.cancel_grace_ns = 1000 * MS};
  tr_assert_rc(tr_actor_nursery_open(&an, &no), 0);
  int64_t t0 = tr_now();
  tr_check_rc(tr_run_in_actor_opts(an, "sleeper", "tproc.stuck.sleep", NULL, &in_proc, &p), 0);
  tr_actor_opts_t o = daemon_opts();
  tr_check_rc(tr_start_actor_opts(an, "quick", &o, &q), 0);
  int rc = 0;
  (void)run_u64_any(q, "tproc.math.pid", 0, &rc); /* both are up */
  tr_check_rc(rc, 0);
  if (q)
    tr_check_rc(tr_portal_run(q, "tproc.math.fails", NULL, NULL), -TR_EREMOTE);
  /* The parent fails: the nursery is cancelled and the stuck child, which
   * never reaches a cancellation point, is killed within the grace. */
  tr_check_rc(tr_actor_nursery_cancel(an), 0);
  rc = tr_actor_nursery_close(an);
  tr_check(rc == 0 || rc == -TR_ECANCELED, "cancelled (%d)", rc);
  tr_check(tr_now() - t0 < 4000 * MS, "reaped within 4 s (%lld ms)",
           (long long)((tr_now() - t0) / MS));
  tr_portal_release(p);
  tr_portal_release(q);
  return 0;
}

/* Receives from an endless stream until it fails; returns that code. */
static int drain(tr_stream_t *s, uint64_t *got, uint64_t at, void (*then)(void *), void *arg) {
  int rc = 0;
  while (rc == 0) {
    tr_buf_t *b = NULL;
    rc = tr_stream_recv(s, &b);
    tr_buf_release(b);
    if (rc == 0 && ++*got == at && then)
      then(arg);
  }
  return rc;
}

static void shut_here(void *arg) {
  (void)arg;
  tr_check(shut_tcp_sockets() > 0, "a channel socket to shut down");
}

static void stop_child(void *arg) { kill(*(pid_t *)arg, SIGSTOP); }

/* Opens an endless stream from a new process daemon `name`; the stream
 * breaks as `breaker` does after `at` values.  Returns the stream's end. */
static int broken_stream(const char *name, const char *fn, uint64_t at, int stop, int *close_rc,
                         char *why, size_t why_len) {
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL;
  tr_actor_opts_t o = daemon_opts();
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_start_actor_opts(an, name, &o, &p), 0);
  int rc = 0;
  pid_t pid = p ? (pid_t)run_u64_any(p, "tproc.math.pid", 0, &rc) : 0;
  tr_stream_t *s = NULL;
  /* A window below 100: shut_then_count's 100th send waits for credit, so
   * the StartAck and the first values have left the child when it breaks
   * the connection (with the cross-process default of 512 it could break
   * it before they are written: a lost call, not a broken stream). */
  tr_ctx_opts_t copts = {.window = TR_STREAM_WINDOW};
  if (rc == 0 && p)
    rc = tr_portal_open_stream_from(p, fn, NULL, &copts, &s);
  tr_check_rc(rc, 0);
  uint64_t got = 0;
  if (rc == 0)
    rc = drain(s, &got, at, stop ? stop_child : shut_here, &pid);
  const tr_error_t *e = tr_error_last();
  snprintf(why, why_len, "%s", e ? tr_error_message(e) : "(no error)");
  if (s)
    (void)tr_stream_close(s);
  *close_rc = tr_actor_nursery_close(an);
  tr_portal_release(p);
  return rc;
}

TR_TEST(process, socket_closed_mid_stream_by_the_parent, .timeout = 60, .init = setup,
        .fini = teardown) {
  int close_rc;
  char why[300];
  int rc =
      broken_stream("shut-by-parent", "tproc.stream.count", 500, 0, &close_rc, why, sizeof why);
  tr_check(rc == -TR_EIO || rc == -TR_ECLOSED, "the stream ends with the loss (%d): %s", rc, why);
  tr_check(strstr(why, "lost") != NULL, "says the peer is lost: %s", why);
  tr_check(close_rc == -TR_EIO || close_rc == -TR_ECLOSED, "the nursery reports it (%d)", close_rc);
  return 0;
}

TR_TEST(process, socket_closed_mid_stream_by_the_child, .timeout = 60, .init = setup,
        .fini = teardown) {
  int close_rc;
  char why[300];
  int rc = broken_stream("shut-by-child", "tproc.stream.shut_then_count", 0, 0, &close_rc, why,
                         sizeof why);
  tr_check(rc == -TR_EIO || rc == -TR_ECLOSED, "the stream ends with the loss (%d): %s", rc, why);
  tr_check(strstr(why, "lost") != NULL, "says the peer is lost: %s", why);
  tr_check(close_rc == -TR_EIO || close_rc == -TR_ECLOSED, "the nursery reports it (%d)", close_rc);
  return 0;
}

/* A peer that stops answering (SIGSTOP: alive, connection open, silent)
 * is declared dead after peer_timeout, then killed and reaped. */
/* A sanitized child may be slow to start: busy, not silent. */
#define PEER_MS (SANITIZED ? 3000 : 600)

static void short_peer_timeout(void) {
  char v[16];
  snprintf(v, sizeof v, "%d", (int)PEER_MS);
  setenv("TR_PEER_TIMEOUT_MS", v, 1);
  setup();
}

TR_TEST(process, silent_peer_is_declared_dead, .timeout = 60, .init = short_peer_timeout,
        .fini = teardown) {
  int close_rc;
  char why[300];
  int64_t t0 = tr_now();
  uint64_t at = 200;
  int rc = broken_stream("stopped", "tproc.stream.count", at, 1, &close_rc, why, sizeof why);
  int64_t ms = (tr_now() - t0) / MS;
  tr_check_rc(rc, -TR_EIO);
  tr_check(strstr(why, "silent") != NULL, "says the peer fell silent: %s", why);
  tr_check(close_rc == -TR_EIO, "the nursery reports it (%d)", close_rc);
  tr_check(ms < 2 * PEER_MS + 4000, "within the timeout and the grace (%lld ms)", (long long)ms);
  return 0;
}

TR_TEST(process, error_boxed_through_two_process_hops, .timeout = 60, .init = setup,
        .fini = teardown) {
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL;
  tr_actor_opts_t o = daemon_opts();
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_start_actor_opts(an, "middle", &o, &p), 0);
  if (p) {
    tr_check_rc(tr_portal_run(p, "tproc.nest.fail", NULL, NULL), -TR_EREMOTE);
    const tr_error_t *e = tr_error_last();
    /* tractor: the boxed type is the relaying hop's, the source type the
     * original. */
    tr_check(e && tr_error_boxed_type(e) && strcmp(tr_error_boxed_type(e), "RemoteActorError") == 0,
             "boxed by the relaying hop");
    tr_check(e && tr_error_src_type(e) && strcmp(tr_error_src_type(e), "ValueError") == 0,
             "the grandchild's type");
    tr_check(e && tr_error_src(e) && strcmp(tr_error_src(e), "grandchild") == 0,
             "raised in the grandchild: %s", e && tr_error_src(e) ? tr_error_src(e) : "?");
    size_t n = e ? tr_error_relay_len(e) : 0;
    tr_check(n >= 1 && strcmp(tr_error_relay(e, n - 1), "middle") == 0,
             "relayed by the middle actor (%zu hops)", n);
  }
  tr_assert_rc(tr_actor_nursery_close(an), 0);
  tr_portal_release(p);
  return 0;
}

/* A group raised in another process arrives boxed (RemoteActorError,
 * boxed type ExceptionGroup) with its members in its trace text, as
 * tractor's boxed ExceptionGroup carries them in its traceback: both
 * grandchildren's errors, their sources and messages, reach the root. */
TR_TEST(process, a_group_raised_in_a_child_keeps_its_members, .timeout = 60, .init = setup,
        .fini = teardown) {
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL;
  tr_actor_opts_t o = daemon_opts();
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_start_actor_opts(an, "middle", &o, &p), 0);
  if (p) {
    tr_check_rc(tr_portal_run(p, "tproc.nest.group", NULL, NULL), -TR_EREMOTE);
    const tr_error_t *e = tr_error_last();
    char text[8192];
    int n = tr_error_format(e, text, sizeof text);
    tr_check(e && tr_error_boxed_type(e) && strcmp(tr_error_boxed_type(e), "ExceptionGroup") == 0,
             "a boxed group: %s", text);
    tr_check(n > 0 && strstr(text, "member 1 of 2:") && strstr(text, "member 2 of 2:"),
             "both members: %s", text);
    tr_check(strstr(text, "gc_proc") && strstr(text, "gc_thread"), "both sources: %s", text);
    const char *v = strstr(text, "bad input 7");
    tr_check(v && strstr(v + 1, "bad input 7"), "both messages: %s", text);
  }
  tr_assert_rc(tr_actor_nursery_close(an), 0);
  tr_portal_release(p);
  return 0;
}

TR_TEST(process, parent_error_over_a_stuck_grandchild, .timeout = 60, .init = setup,
        .fini = teardown) {
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL;
  tr_actor_opts_t o = daemon_opts();
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_start_actor_opts(an, "middle", &o, &p), 0);
  int up = 0;
  (void)run_u64_any(p, "tproc.math.pid", 0, &up);
  tr_check_rc(up, 0);
  int64_t t0 = tr_now();
  if (p) {
    tr_check_rc(tr_portal_run(p, "tproc.nest.fail_over_stuck", NULL, NULL), -TR_EREMOTE);
    const tr_error_t *e = tr_error_last();
    tr_check(e && strstr(tr_error_message(e), "while its child sleeps") != NULL, "the error: %s",
             e ? tr_error_message(e) : "?");
  }
  tr_assert_rc(tr_actor_nursery_close(an), 0);
  int64_t ms = (tr_now() - t0) / MS;
  tr_check(ms < 4000, "the stuck grandchild was reaped within 4 s (%lld ms)", (long long)ms);
  tr_portal_release(p);
  return 0;
}

/* SIGINT to the root (tr_main's handler: a graceful cancel) tears down a
 * tree of processes: two children, one with a grandchild. */
static int64_t sigint_t0;
static void sigint_setup(void) {
  setup();
  sigint_t0 = 0;
}
static void sigint_teardown(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  int64_t ms = ((int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec - sigint_t0) / MS;
  cr_expect(ms < 2000, "the tree is down within 2 s of the signal (%lld ms)", (long long)ms);
  teardown();
}

TR_TEST_EXPECT(process, sigint_tears_the_tree_down, -TR_ECANCELED, .timeout = 60,
               .init = sigint_setup, .fini = sigint_teardown) {
  tr_actor_nursery_t *an;
  tr_portal_t *a = NULL, *b = NULL;
  tr_actor_opts_t o = daemon_opts();
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_start_actor_opts(an, "leaf", &o, &a), 0);
  tr_check_rc(tr_start_actor_opts(an, "branch", &o, &b), 0);
  int rc = 0;
  (void)run_u64_any(a, "tproc.math.pid", 0, &rc);
  tr_check_rc(rc, 0);
  tr_check(tr_test_live_children() == 2, "two children");
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  sigint_t0 = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
  /* The branch starts a grandchild and serves on: a call that never ends,
   * until the signal cancels this task. */
  kill(getpid(), SIGINT);
  rc = b ? tr_portal_run(b, "tproc.nest.daemon", NULL, NULL) : -TR_ECANCELED;
  tr_check_rc(rc, -TR_ECANCELED);
  (void)tr_actor_nursery_close(an);
  tr_portal_release(a);
  tr_portal_release(b);
  return -TR_ECANCELED;
}

/* ---- the listener under fire ----------------------------------------------------------- */

#define N_BAD (SANITIZED ? 2000 : 10000) /* sanitized: each connection costs ~5x more */
#define N_SILENT 4

typedef struct flood {
  struct sockaddr_in sa;
  uint8_t *frames[4]; /* a Stop, a Hello of version 99, a Hello of no child, a Hello + junk */
  size_t lens[4];
  int n_bad, silent_closed, failures;
  int64_t silent_ms;
} flood_t;

static int connect_to(const struct sockaddr_in *sa) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd >= 0 && connect(fd, (const struct sockaddr *)sa, sizeof *sa) != 0) {
    close(fd);
    fd = -1;
  }
  return fd;
}

/* Waits until the listener closes fd (EOF or reset): 1, or 0 after 10 s. */
static int closed_by_peer(int fd) {
  struct timeval tv = {.tv_sec = 10};
  (void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  char b[256];
  for (;;) {
    ssize_t k = recv(fd, b, sizeof b, 0);
    if (k == 0 || (k < 0 && errno == ECONNRESET))
      return 1;
    if (k < 0)
      return 0;
  }
}

/* On a thread of its own (tr_to_thread): N_BAD connections of seven kinds
 * of wrong, each sent and then seen closed by the listener, then
 * N_SILENT silent ones, which its handshake timeout closes. */
static void *flood_fn(void *arg) {
  flood_t *f = arg;
  static const uint8_t huge[] = {0xff, 0xff, 0xff, 0xff, 1, 2, 3}; /* claims 4 GiB */
  uint8_t junk[64];
  for (size_t i = 0; i < sizeof junk; i++)
    junk[i] = (uint8_t)(i * 37 + 11);
  for (int i = 0; i < f->n_bad; i++) {
    int fd = connect_to(&f->sa);
    if (fd < 0) {
      f->failures++;
      continue;
    }
    int kind = i % 7;
    const void *b = NULL;
    size_t len = 0;
    if (kind == 1) {
      b = junk;
      len = sizeof junk;
    } else if (kind == 2) {
      b = huge;
      len = sizeof huge;
    } else if (kind >= 3) {
      b = f->frames[kind - 3];
      len = f->lens[kind - 3];
    }
    if (len && send(fd, b, len, MSG_NOSIGNAL) != (ssize_t)len)
      f->failures++;
    (void)shutdown(fd, SHUT_WR);
    if (!closed_by_peer(fd))
      f->failures++;
    close(fd);
  }
  int fds[N_SILENT];
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (int i = 0; i < N_SILENT; i++)
    fds[i] = connect_to(&f->sa);
  for (int i = 0; i < N_SILENT; i++) {
    f->silent_closed += fds[i] >= 0 && closed_by_peer(fds[i]);
    if (fds[i] >= 0)
      close(fds[i]);
  }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  f->silent_ms = ((int64_t)(t1.tv_sec - t0.tv_sec) * 1000000000 + t1.tv_nsec - t0.tv_nsec) / MS;
  return NULL;
}

/* Encodes a Hello as this process would send it, then spoils it. */
static int hello_frame(int version, int extra, uint8_t **out, size_t *len) {
  /* As a child connecting back says it (a node's Hello would be answered:
   * test_discovery floods those). */
  tr_hello_info_t hi = {.node = tr_self(), .flags = TR_HELLO_CHILD};
  tr_msg_t *m;
  int rc = tr__hello_new(&hi, &m);
  if (rc)
    return rc;
  m->x_->u.hello.version = (uint32_t)version;
  rc = tr__frame_encode(m, 0, out, len);
  tr_msg_free(m);
  if (rc == 0 && extra) {
    uint8_t *b = realloc(*out, *len + 5);
    if (!b)
      return -TR_ENOMEM;
    memcpy(b + *len, "extra", 5);
    *out = b;
    *len += 5;
  }
  return rc;
}

static void silent_listener_setup(void) {
  setenv("TR_PEER_TIMEOUT_MS", "1000", 1); /* the handshake timeout too */
  setup();
}

TR_TEST(process, malformed_frames_and_handshakes_at_a_live_listener, .timeout = 120,
        .init = silent_listener_setup, .fini = teardown) {
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL, *q = NULL;
  tr_actor_opts_t o = daemon_opts();
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_start_actor_opts(an, "steady", &o, &p), 0);
  int rc = 0;
  uint64_t v = p ? run_u64_any(p, "tproc.math.add_one", 1, &rc) : 0;
  tr_check_rc(rc, 0);
  tr_check_eq(v, 2);
  char addr[64];
  tr_assert_rc(tr__listen_addr(addr, sizeof addr), 0); /* alive while a child lives */
  /* Static, not on this task's stack: if the test's deadline cancels the
   * wait below, the thread runs on with it (tr_to_thread abandons, it
   * cannot interrupt), and a stack frame gone by then made it loop on
   * garbage for ever, holding the runtime open (seen under TSan with the
   * machine loaded).  One test at a time runs in a process. */
  static flood_t f;
  memset(&f, 0, sizeof f);
  f.sa.sin_family = AF_INET;
  f.n_bad = N_BAD;
  char *colon = strrchr(addr, ':');
  f.sa.sin_port = htons((uint16_t)atoi(colon + 1));
  inet_pton(AF_INET, "127.0.0.1", &f.sa.sin_addr);
  tr_msg_t *stop;
  tr_assert_rc(tr_msg_new(&stop), 0);
  stop->body = TR_BODY_STOP;
  stop->cid = 5;
  tr_check_rc(tr__frame_encode(stop, 0, &f.frames[0], &f.lens[0]), 0);
  tr_msg_free(stop);
  tr_check_rc(hello_frame(99, 0, &f.frames[1], &f.lens[1]), 0);
  tr_check_rc(hello_frame(TR_PROTO_VERSION, 0, &f.frames[2], &f.lens[2]), 0); /* no child's pid */
  tr_check_rc(hello_frame(TR_PROTO_VERSION, 1, &f.frames[3], &f.lens[3]), 0);
  uint64_t before = tr__listen_refused();
  rc = tr_to_thread(flood_fn, &f, NULL);
  /* Abandoned: the thread still reads the frames; the test has failed. */
  tr_assert_rc(rc, 0);
  uint64_t n = tr__listen_refused() - before;
  tr_check_eq(f.failures, 0, "every bad connection was closed by the listener");
  tr_check(n >= (uint64_t)N_BAD + N_SILENT, "%llu refusals for %d bad connections",
           (unsigned long long)n, N_BAD + N_SILENT);
  tr_check_eq(f.silent_closed, N_SILENT, "silent connections closed at the handshake timeout");
  tr_check(f.silent_ms >= 500 && f.silent_ms < 5000, "after about a second (%lld ms)",
           (long long)f.silent_ms);
  /* Nothing else was disturbed: the channel serves on, and the listener
   * takes a new child. */
  v = p ? run_u64_any(p, "tproc.math.add_one", 41, &rc) : 0;
  tr_check_rc(rc, 0);
  tr_check_eq(v, 42);
  tr_check_rc(tr_start_actor_opts(an, "newcomer", &o, &q), 0);
  v = q ? run_u64_any(q, "tproc.math.add_one", 6, &rc) : 0;
  tr_check_rc(rc, 0);
  tr_check_eq(v, 7);
  for (int i = 0; i < 4; i++)
    free(f.frames[i]);
  tr_assert_rc(tr_actor_nursery_close(an), 0);
  tr_portal_release(p);
  tr_portal_release(q);
  return 0;
}

/* ---- no head-of-line blocking ---------------------------------------------------------- */

#define N_STREAM (SANITIZED ? 100000 : 1000000) /* sanitized: ~10x slower per message */

typedef struct hol {
  tr_portal_t *p;
  uint64_t got;        /* stream values received so far */
  uint64_t got_at_end; /* ... when the 100th call returned */
  int64_t worst_ns;    /* the slowest call */
  int calls, rc;
} hol_t;

static int hol_stream(void *arg) {
  hol_t *h = arg;
  tr_buf_t *n;
  int rc = tr_buf_from_u64(N_STREAM, &n);
  tr_stream_t *s = NULL;
  /* The window decides how many stream values a call's answer may wait
   * behind (one window, per direction): 64 here, so that 100 calls cost a
   * few thousand values.  The cross-process default (512) would let 100
   * calls take as long as the sanitized builds' whole stream. */
  tr_ctx_opts_t copts = {.window = TR_STREAM_WINDOW};
  if (rc == 0)
    rc = tr_portal_open_stream_from(h->p, "tproc.stream.count", n, &copts, &s);
  tr_buf_release(n);
  while (rc == 0) {
    tr_buf_t *b = NULL;
    rc = tr_stream_recv(s, &b);
    tr_buf_release(b);
    h->got += rc == 0;
  }
  if (s)
    (void)tr_stream_close(s);
  return rc == -TR_EEOF ? 0 : rc;
}

static int hol_calls(void *arg) {
  hol_t *h = arg;
  while (h->got < 1000) /* the stream is flowing */
    (void)tr_sleep(MS);
  for (int i = 0; i < 100; i++) {
    int64_t t0 = tr_now();
    int rc = 0;
    uint64_t v = run_u64_any(h->p, "tproc.math.add_one", (uint64_t)i, &rc);
    int64_t dt = tr_now() - t0;
    if (dt > h->worst_ns)
      h->worst_ns = dt;
    if (rc || v != (uint64_t)i + 1)
      h->rc = rc ? rc : -TR_EPROTO;
    h->calls++;
  }
  h->got_at_end = h->got;
  return 0;
}

/* tractor's no-HOL-blocking scenario: a stream of a million messages on
 * one context does not delay 100 calls on another context of the same
 * channel (each stream direction has its own credit window). */
TR_TEST(process, a_big_stream_does_not_delay_calls_on_the_same_channel, .timeout = 120,
        .init = setup, .fini = teardown) {
  tr_actor_nursery_t *an;
  hol_t h = {0};
  tr_actor_opts_t o = daemon_opts();
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_start_actor_opts(an, "busy", &o, &h.p), 0);
  tr_nursery_t *n;
  tr_assert_rc(tr_nursery_open(&n), 0);
  if (h.p) {
    tr_check_rc(tr_nursery_spawn(n, hol_stream, &h, NULL), 0);
    tr_check_rc(tr_nursery_spawn(n, hol_calls, &h, NULL), 0);
  }
  tr_check_rc(tr_nursery_close(n), 0);
  tr_check_rc(h.rc, 0);
  tr_check_eq(h.calls, 100);
  tr_check_eq(h.got, N_STREAM, "the whole stream arrived");
  tr_check(h.got_at_end < N_STREAM / 2, "the 100 calls were done when %llu of %d values were in",
           (unsigned long long)h.got_at_end, N_STREAM);
  tr_check(h.worst_ns < 200 * MS, "the slowest call took %lld us", (long long)(h.worst_ns / 1000));
  tr_assert_rc(tr_actor_nursery_close(an), 0);
  tr_portal_release(h.p);
  return 0;
}

/* A context function named as multihost_node's plain "mh.pid": this
 * program's export must not decide how another program's is called. */
static int mh_pid_here(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)args;
  (void)result;
  return tr_ctx_started(ctx, NULL);
}
TR_EXPORT_CONTEXT("mh", "pid", mh_pid_here)

/* A child of another program (opts.exe: multihost_node, TR_OTHER_PROGRAM)
 * exports "mh.pid" as a plain function, this one as a context function:
 * tr_portal_run leaves the kind to the callee, and the call goes through.
 * It was refused here with -TR_EFUNCKIND, from this program's export.
 * The other way round, its stream "mh.two" and context "mh.count", which
 * this program does not have, are refused by their StartAck, every time:
 * a run of one that ended at once returned 0 and lost its values when
 * the outcome came in the same turn as the StartAck. */
TR_TEST(process, another_programs_exports_decide_its_calls, .timeout = 60, .init = setup,
        .fini = teardown) {
  const char *exe = getenv("TR_OTHER_PROGRAM");
  tr_assert(exe && *exe, "TR_OTHER_PROGRAM (tests/CMakeLists.txt) names multihost_node");
  static const char *const mh_ns[] = {"mh"};
  tr_actor_opts_t o = {.spawn = TR_SPAWN_PROCESS, .exe = exe, .enable = mh_ns, .n_enable = 1};
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL;
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_start_actor_opts(an, "other", &o, &p), 0);
  int rc = 0;
  uint64_t pid = p ? run_u64_any(p, "mh.pid", 0, &rc) : 0;
  tr_check_rc(rc, 0);
  tr_check(pid != 0 && pid != (uint64_t)getpid(), "answered by the other program (%llu)",
           (unsigned long long)pid);
  uint64_t two[2] = {2, 0}; /* mh.count: 2 values, unpaced */
  tr_buf_t *count_args = NULL;
  tr_check_rc(tr_buf_from(two, sizeof two, &count_args), 0);
  for (int i = 0; p && i < 10; i++) {
    tr_buf_t *res = NULL;
    tr_check_rc(tr_portal_run(p, "mh.two", NULL, &res), -TR_EFUNCKIND, "run of a stream, %d", i);
    tr_check(res == NULL, "no result");
    const tr_error_t *e = tr_error_last();
    tr_check(e && strstr(tr_error_message(e), "not a fn function"), "%s",
             e ? tr_error_message(e) : "(no error)");
    tr_check_rc(tr_portal_run(p, "mh.count", count_args, &res), -TR_EFUNCKIND,
                "run of a context, %d", i);
    tr_buf_release(res);
  }
  tr_buf_release(count_args);
  tr_check_eq(run_u64_any(p, "mh.pid", 0, &rc), pid, "the actor serves on");
  tr_assert_rc(tr_actor_nursery_close(an), 0);
  tr_portal_release(p);
  return 0;
}

/* Calls of tproc.third.wait started in this process. */
static uint64_t third_started; /* atomic */

/* Sleeps until cancelled. */
static int third_wait(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)ctx;
  (void)args;
  (void)result;
  __atomic_fetch_add(&third_started, 1, __ATOMIC_SEQ_CST);
  return tr_sleep_until(TR_NO_DEADLINE);
}
TR_EXPORT_FN("tproc.third", "wait", third_wait)

static int third_started_of(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)ctx;
  (void)args;
  return tr_buf_from_u64(__atomic_load_n(&third_started, __ATOMIC_SEQ_CST), result);
}
TR_EXPORT_FN("tproc.third", "started", third_started_of)

/* A call of tproc.third.wait in flight in a task of its own, and how it
 * ended: its code and its error's canceller. */
typedef struct third_call {
  tr_portal_t *p;
  int rc;
  char canceller[64];
} third_call_t;

static int third_call_main(void *arg) {
  third_call_t *t = arg;
  t->rc = tr_portal_run(t->p, "tproc.third.wait", NULL, NULL);
  const tr_error_t *e = tr_error_last();
  const char *by = e ? tr_error_canceller(e) : NULL;
  snprintf(t->canceller, sizeof t->canceller, "%s", by ? by : "(none)");
  tr_error_clear();
  return 0;
}

/* Starts "target" in an, serving tproc.math and tproc.third, as a process
 * child: its pid once it answers (0 if it does not), *p its portal. */
static int start_target(tr_actor_nursery_t *an, tr_portal_t **p) {
  static const char *const ns[] = {"tproc.math", "tproc.third"};
  tr_actor_opts_t d = {.enable = ns, .n_enable = 2, .spawn = TR_SPAWN_PROCESS};
  int rc = 0, pid = 0;
  tr_check_rc(tr_start_actor_opts(an, "target", &d, p), 0);
  if (*p)
    pid = (int)run_u64_any(*p, "tproc.math.pid", 0, &rc);
  tr_check(pid > 0 && rc == 0, "the target answers");
  return rc == 0 ? pid : 0;
}

/* Starts t's call in a task of n and returns once the target has started
 * it (polling its count through p), or after 20 s; 1 when it has. */
static int third_call_start(tr_nursery_t *n, third_call_t *t) {
  if (tr_nursery_spawn(n, third_call_main, t, NULL) != 0)
    return 0;
  uint64_t started = 0;
  for (int64_t end = tr_now() + 20000 * MS; started == 0 && tr_now() < end;) {
    tr_buf_t *r = NULL;
    if (tr_portal_run(t->p, "tproc.third.started", NULL, &r) == 0)
      (void)tr_buf_to_u64(r, &started);
    tr_buf_release(r);
    if (started == 0 && tr_sleep(2 * MS) != 0)
      break;
  }
  return started == 1;
}

/* an_actor_cancel_from_a_stranger_is_acknowledged: the process actor to
 * cancel (the root's proxy of it, published before the stranger starts),
 * and what the stranger saw. */
static tr_actor_t *third_target;
static struct {
  int rc, acked;
  int64_t ms;
} third_seen;

/* The stranger's main task: cancels the target's whole actor, its first
 * message to that process. */
static int stranger_main(void *arg) {
  (void)arg;
  tr_portal_t *q = NULL;
  int rc = tr_portal_from_actor(__atomic_load_n(&third_target, __ATOMIC_ACQUIRE), &q);
  int acked = 0;
  int64_t t0 = tr_now();
  if (rc == 0)
    rc = tr_portal_cancel_actor(q, 10000 * MS, &acked);
  third_seen.ms = (tr_now() - t0) / MS;
  third_seen.rc = rc;
  third_seen.acked = acked;
  tr_portal_release(q);
  return 0;
}

/* tr_portal_cancel_actor by an actor that is not the target's parent and
 * whose first message to its process is the Cancel (portal.h: any actor
 * may ask), while the root has a call in the target (started there before
 * the stranger is: third_call_start): the root's call
 * ends ContextCancelled naming the stranger, and the stranger gets its
 * CancelAck.  The channel dropped that ack, as one for an actor that had
 * never talked there: the stranger waited out its timeout, *acked 0. */
TR_TEST(process, an_actor_cancel_from_a_stranger_is_acknowledged, .timeout = 60, .init = setup,
        .fini = teardown) {
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL;
  third_seen.rc = third_seen.acked = -1;
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  if (start_target(an, &p) > 0) {
    /* The call first (in flight in the target), then the stranger. */
    third_call_t t = {.p = p, .rc = 1};
    tr_nursery_t *n;
    tr_check_rc(tr_nursery_open(&n), 0);
    tr_check(third_call_start(n, &t), "the target started the call");
    __atomic_store_n(&third_target, tr_portal_actor(p), __ATOMIC_RELEASE);
    tr_check_rc(tr_actor_nursery_spawn(an, "stranger", stranger_main, NULL, NULL), 0);
    tr_check_rc(tr_nursery_close(n), 0);
    tr_check_rc(t.rc, -TR_ECTXCANCELED);
    tr_check_str_eq(t.canceller, "stranger");
  }
  tr_check_rc(tr_actor_nursery_close(an), 0);
  tr_check_rc(third_seen.rc, 0);
  tr_check(third_seen.acked == 1 && third_seen.ms < 5000, "acked %d after %lld ms",
           third_seen.acked, (long long)third_seen.ms);
  tr_portal_release(p);
  return 0;
}

/* tr_actor_cancel_soon of a process child's portal actor (actor.h) cancels
 * that actor in its process: the call in flight there ends ContextCancelled
 * naming the actor itself, the process exits and is reaped, and the
 * nursery's close returns.  The request ended the local stand-in instead:
 * the child ran on, later calls said "has exited", and a close that came
 * after the request had been carried out waited for the child forever
 * (its cancel and SIGTERM/SIGKILL went to the ended stand-in). */
TR_TEST(process, cancel_soon_of_a_process_child_cancels_it_there, .timeout = 60, .init = setup,
        .fini = teardown) {
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL;
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  int pid = start_target(an, &p);
  third_call_t t = {.p = p, .rc = 1};
  tr_nursery_t *n;
  tr_check_rc(tr_nursery_open(&n), 0);
  if (pid > 0)
    tr_check(third_call_start(n, &t), "the target started the call");
  if (pid > 0) {
    tr_check_rc(tr_actor_cancel_soon(tr_portal_actor(p)), 0);
    /* Its process ends (and is reaped, by the channel): no longer there. */
    int64_t until = tr_now() + 10000 * MS;
    while (kill(pid, 0) == 0 && tr_now() < until)
      tr_check_rc(tr_sleep(10 * MS), 0);
    tr_check(kill(pid, 0) != 0, "process %d still runs 10 s after the request", pid);
  }
  /* The call in flight there ends ContextCancelled, the actor itself the
   * canceller (actor.h: as by an actor cancel from nobody). */
  tr_check_rc(tr_nursery_close(n), 0);
  tr_check_rc(t.rc, -TR_ECTXCANCELED);
  tr_check_str_eq(t.canceller, "target");
  int64_t t0 = tr_now();
  tr_check_rc(tr_actor_nursery_close(an), 0);
  tr_check(tr_now() - t0 < 2000 * MS, "the close returned at once: %lld ms",
           (long long)((tr_now() - t0) / MS));
  tr_portal_release(p);
  return 0;
}

/* A program that never connects back (a shell script that sleeps, as
 * opts.exe) is killed once the wait for it ends (lowered here from 10 s to
 * 300 ms), and what fails says so, not only "killed by signal 9". */
TR_TEST(process, a_child_that_never_connects_back_is_killed_and_says_why, .timeout = 60,
        .init = setup, .fini = teardown) {
  char path[] = "/tmp/tr-test-sleeper-XXXXXX";
  int fd = mkstemp(path);
  tr_assert(fd >= 0, "a script in /tmp");
  static const char script[] = "#!/bin/sh\nexec sleep 30\n";
  tr_assert(write(fd, script, sizeof script - 1) == (ssize_t)(sizeof script - 1));
  close(fd);
  tr_assert(chmod(path, 0700) == 0);
  int64_t wait = __atomic_load_n(&tr__chan_hs_timeout_ns, __ATOMIC_RELAXED);
  __atomic_store_n(&tr__chan_hs_timeout_ns, 300 * MS, __ATOMIC_RELAXED);
  tr_actor_opts_t o = {.spawn = TR_SPAWN_PROCESS, .exe = path};
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL;
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_start_actor_opts(an, "sleeper", &o, &p), 0);
  if (p) {
    tr_check_rc(tr_portal_run(p, "tproc.math.pid", NULL, NULL), -TR_EIO);
    const char *msg = tr_error_message(tr_error_last());
    tr_check(msg && strstr(msg, "did not connect back"), "the call says why: %s", msg);
  }
  tr_check_rc(tr_actor_nursery_close(an), -TR_EIO);
  const char *msg = tr_error_message(tr_error_last());
  tr_check(msg && strstr(msg, "did not connect back"), "the nursery says why: %s", msg);
  __atomic_store_n(&tr__chan_hs_timeout_ns, wait, __ATOMIC_RELAXED);
  tr_portal_release(p);
  unlink(path);
  return 0;
}

/* A call to a child actor that was cancelled and has exited is refused
 * with -TR_ECLOSED, by this side or by the child's, and either way the
 * error names the actor (it said only "closed: the peer or actor has
 * exited" when the child's side answered). */
TR_TEST(process, a_call_to_an_exited_child_names_it, .timeout = 60, .init = setup,
        .fini = teardown) {
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL;
  tr_actor_opts_t o = daemon_opts();
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_start_actor_opts(an, "quitter", &o, &p), 0);
  int rc = 0;
  if (p)
    (void)run_u64_any(p, "tproc.math.pid", 0, &rc);
  tr_check_rc(rc, 0);
  if (p) {
    tr_check_rc(tr_portal_cancel_actor(p, 5000 * MS, NULL), 0);
    for (int i = 0; i < 3; i++) {
      tr_check_rc(tr_portal_run(p, "tproc.math.pid", NULL, NULL), -TR_ECLOSED);
      const char *msg = tr_error_message(tr_error_last());
      tr_check(msg && strstr(msg, "quitter"), "call %d names the actor: %s", i, msg);
    }
  }
  tr_assert_rc(tr_actor_nursery_close(an), 0);
  tr_portal_release(p);
  return 0;
}

/* opts.exe: another program built on the library (here this one by its
 * path, so the parent cannot check the function itself: the child does). */
TR_TEST(process, another_program_by_path, .timeout = 60, .init = setup, .fini = teardown) {
  char exe[4096];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  tr_assert(n > 0, "the test's own path");
  exe[n] = '\0';
  tr_actor_opts_t o = {.spawn = TR_SPAWN_PROCESS, .exe = exe};
  tr_actor_nursery_t *an;
  tr_portal_t *good = NULL, *bad = NULL;
  tr_buf_t *arg, *res = NULL;
  tr_assert_rc(tr_buf_from_u64(9, &arg), 0);
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_run_in_actor_opts(an, "good", "tproc.math.add_one", arg, &o, &good), 0);
  tr_check_rc(tr_run_in_actor_opts(an, "bad", "tproc.math.nope", arg, &o, &bad), 0);
  int rc = tr_actor_nursery_close(an);
  tr_check_rc(rc, -TR_ENOFUNC); /* the child that found no function failed, and says why */
  const tr_error_t *e = tr_error_last();
  tr_check(e && strstr(tr_error_message(e), "nope") != NULL, "names the function: %s",
           e ? tr_error_message(e) : "?");
  uint64_t v = 0;
  if (good) {
    int grc = tr_portal_result(good, &res);
    /* The failure may have cancelled it before it ran. */
    tr_check(grc == 0 || grc == -TR_ECANCELED, "good: %d", grc);
    if (grc == 0) {
      tr_check_rc(tr_buf_to_u64(res, &v), 0);
      tr_check_eq(v, 10);
    }
  }
  if (bad) {
    tr_check_rc(tr_portal_result(bad, NULL), -TR_ENOFUNC);
    e = tr_error_last();
    tr_check(e && tr_error_src(e) && strcmp(tr_error_src(e), "bad") == 0,
             "the refusing child is the source: %s", e && tr_error_src(e) ? tr_error_src(e) : "?");
  }
  tr_buf_release(arg);
  tr_buf_release(res);
  tr_portal_release(good);
  tr_portal_release(bad);
  return 0;
}
