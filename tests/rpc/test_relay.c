/*
 * Dialogs through the codec relay (tests/support/relay.h): two behaviour
 * actors standing between a caller and a callee, as the two ends of a
 * transport channel would, each message encoded and decoded between them.
 * The dialog suites run through it too (ctest's *_relay); this one checks
 * the relay is in the path and what a channel adds: peer loss.
 *
 * What must hold through it is what holds directly (PROTOCOL.md 8.3):
 * the caller's own cancel is absorbed, the canceller and the source are
 * the real actors (by uid), not the relay ends.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TR_TEST_WORKERS 2
#include <tractor/testing.h>

#include "../support/relay.h"

#define MS (1000 * 1000LL)

/* This suite is about the relay itself: it is always on here (before main,
 * so before any runtime reads the route). */
__attribute__((constructor)) static void use_the_relay(void) { tr_test_relay_install(); }

/* ---- functions, and the scenarios ---------------------------------------------- */

static int twice(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)ctx;
  uint64_t v = 0;
  if (!args || tr_buf_to_u64(args, &v) != 0)
    return tr_fail("TypeError", "twice takes a u64");
  return tr_buf_from_u64(2 * v, result);
}
TR_EXPORT_FN("trel.fn", "twice", twice)

static int fails(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)ctx;
  (void)args;
  (void)result;
  return tr_fail("ValueError", "refused through the relay");
}
TR_EXPORT_FN("trel.fn", "fails", fails)

static int listener(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)args;
  (void)result;
  int rc = tr_ctx_started(ctx, NULL);
  tr_stream_t *s = NULL;
  if (rc == 0)
    rc = tr_ctx_open_stream(ctx, &s);
  while (rc == 0) {
    tr_buf_t *b = NULL;
    rc = tr_stream_recv(s, &b);
    if (rc == 0)
      rc = tr_stream_send(s, b); /* echo */
    tr_buf_release(b);
  }
  return rc == -TR_EEOF ? 0 : rc;
}
TR_EXPORT_CONTEXT("trel.ctx", "listener", listener)

static const char *const ns[] = {"trel.fn", "trel.ctx"};

static uint64_t buf_u64(const tr_buf_t *b) {
  uint64_t v = UINT64_MAX;
  if (b)
    tr_buf_to_u64(b, &v);
  return v;
}

TR_TEST(relay, dialogs_through_a_codec_relay, .timeout = 60) {
  tr_actor_nursery_t *an;
  tr_portal_t *e = NULL;
  tr_assert(tr_test_relay_on());
  uint64_t frames0 = tr_test_relay_frames();
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_start_actor(an, "callee", ns, 2, &e), 0);
  tr_portal_t *via = e;
  char me[TR_UID_LEN(16)], ue[TR_UID_LEN(16)];
  tr_actor_uid(tr_self(), me, sizeof me);
  if (e)
    tr_actor_uid(tr_portal_actor(e), ue, sizeof ue);
  if (via) {
    /* run: a value and a boxed remote error. */
    tr_buf_t *arg = NULL, *res = NULL;
    tr_check_rc(tr_buf_from_u64(21, &arg), 0);
    tr_check_rc(tr_portal_run(via, "trel.fn.twice", arg, &res), 0);
    tr_check_eq(buf_u64(res), 42);
    tr_buf_release(res);
    tr_buf_release(arg);
    tr_check_rc(tr_portal_run(via, "trel.fn.fails", NULL, NULL), -TR_EREMOTE);
    tr_check_str_eq(tr_error_boxed_type(tr_error_last()), "ValueError");
    tr_check_str_eq(tr_error_src_uid(tr_error_last()), ue, "the source is the callee, by uid");

    /* A context: stream both ways, then this side's cancel, absorbed at
     * close as it is directly (the ContextCancelled names this actor, and
     * comes from the callee, not from the relay). */
    tr_ctx_t *ctx = NULL;
    tr_check_rc(tr_portal_open_context(via, "trel.ctx.listener", NULL, NULL, &ctx, NULL), 0);
    if (ctx) {
      tr_stream_t *s = NULL;
      tr_check_rc(tr_ctx_open_stream(ctx, &s), 0);
      for (uint64_t i = 0; s && i < 100; i++) {
        tr_buf_t *v = NULL, *got = NULL;
        tr_check_rc(tr_buf_from_u64(i, &v), 0);
        tr_check_rc(tr_stream_send(s, v), 0);
        tr_check_rc(tr_stream_recv(s, &got), 0);
        tr_check_eq(buf_u64(got), i, "echo %llu", (unsigned long long)i);
        tr_buf_release(v);
        tr_buf_release(got);
      }
      tr_check_rc(tr_ctx_cancel(ctx), 0);
      tr_check_rc(tr_ctx_cancel_wait(ctx, 5000 * MS), 0);
      tr_check_eq(tr_ctx_cancel_acked(ctx), 1, "acknowledged through the relay");
      tr_check_rc(tr_ctx_result(ctx, NULL), 0, "absorbed: this side asked for it");
      tr_check_str_eq(tr_error_canceller_uid(tr_error_last()), me, "this actor cancelled");
      tr_check_str_eq(tr_error_src_uid(tr_error_last()), ue, "raised in the callee");
      tr_check_str_eq(tr_ctx_peer(ctx), "callee", "the peer by its name, not the relay end's");
      tr_check_rc(tr_ctx_close(ctx, NULL), 0);
    }
    /* 4 + 4 for the runs, and at least 2 per echo. */
    tr_check(tr_test_relay_frames() - frames0 >= 208, "the dialogs went through the codec (%llu)",
             (unsigned long long)(tr_test_relay_frames() - frames0));
  }
  tr_assert_rc(tr_actor_nursery_close(an), 0);
  tr_portal_release(e);
  return 0;
}

/* ---- peer loss: a channel that breaks mid-stream and mid-call ----------------- */

static int forever(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)args;
  (void)result;
  tr_stream_t *s = NULL;
  int rc = tr_ctx_open_stream(ctx, &s);
  for (uint64_t i = 0; rc == 0; i++) {
    tr_buf_t *v = NULL;
    rc = tr_buf_from_u64(i, &v);
    if (rc == 0)
      rc = tr_stream_send(s, v);
    tr_buf_release(v);
  }
  return rc;
}
TR_EXPORT_STREAM("trel.stream", "forever", forever)

static int sleepy(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)ctx;
  (void)args;
  (void)result;
  return tr_sleep(20000 * MS);
}
TR_EXPORT_FN("trel.fn", "sleepy", sleepy)

typedef struct call_job {
  tr_portal_t *via;
  int rc;
} call_job_t;

static int call_sleepy(void *arg) {
  call_job_t *j = arg;
  j->rc = tr_portal_run(j->via, "trel.fn.sleepy", NULL, NULL);
  return 0;
}

static int lost_error(void) {
  const tr_error_t *e = tr_error_last();
  return e && tr_error_code(e) == -TR_EIO && strstr(tr_error_message(e), "relay channel broken");
}

TR_TEST(relay, broken_channel_ends_streams_and_calls, .timeout = 60) {
  static const char *const all[] = {"trel.fn", "trel.ctx", "trel.stream"};
  tr_actor_nursery_t *an;
  tr_portal_t *e = NULL;
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_start_actor(an, "callee", all, 3, &e), 0);
  tr_portal_t *via = e;
  if (via) {
    int64_t t0 = tr_now();
    /* A stream that never ends, and a call that would take 20 s. */
    tr_stream_t *s = NULL;
    tr_check_rc(tr_portal_open_stream_from(via, "trel.stream.forever", NULL, NULL, &s), 0);
    for (int i = 0; s && i < 10; i++) {
      tr_buf_t *v = NULL;
      tr_check_rc(tr_stream_recv(s, &v), 0);
      tr_buf_release(v);
    }
    call_job_t job = {via, 1};
    tr_nursery_t *n;
    tr_check_rc(tr_nursery_open(&n), 0);
    tr_check_rc(tr_nursery_spawn(n, call_sleepy, &job, NULL), 0);
    tr_check_rc(tr_checkpoint(), 0); /* the call is sent; it now waits */
    tr_check_eq(tr_test_relay_break(tr_portal_actor(e), -TR_EIO, "relay channel broken"), 1,
                "one pair: this actor and the callee");
    /* The stream gives what it had, then the loss; nothing hangs. */
    int rc = 0;
    for (int i = 0; s && rc == 0 && i < 100000; i++) {
      tr_buf_t *v = NULL;
      rc = tr_stream_recv(s, &v);
      tr_buf_release(v);
    }
    tr_check_rc(rc, -TR_EIO, "the stream ends with the channel");
    tr_check(lost_error(), "the error says why");
    if (s)
      tr_check_rc(tr_stream_close(s), -TR_EIO);
    /* The callee is a child of this actor's nursery: lost with the
     * channel, it is a failed child, which cancels the nursery's scope
     * (one cancels all), and so this task nursery's. */
    tr_check_rc(tr_nursery_close(n), -TR_ECANCELED);
    tr_check_rc(job.rc, -TR_EIO, "the waiting call ends with the channel");
    tr_check(tr_now() - t0 < 10000 * MS, "no wait for the callee (%lld ms)",
             (long long)((tr_now() - t0) / MS));
  }
  /* The lost child is the nursery's failure; the in-process callee is
   * killed (as a spawner kills a lost child process), so close returns. */
  tr_check_rc(tr_actor_nursery_close(an), -TR_EIO);
  const tr_error_t *ce = tr_error_last();
  tr_check(ce && strstr(tr_error_message(ce), "is lost: relay channel broken"),
           "the nursery says which child was lost and why: %s", ce ? tr_error_message(ce) : "-");
  tr_portal_release(e);
  return 0;
}

/* ---- socket mode (TR_TEST_TRANSPORT=socket): big frames, and no fd left -------- */

static int echo(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)ctx;
  return tr_buf_from(args ? tr_buf_data(args) : NULL, args ? tr_buf_len(args) : 0, result);
}
TR_EXPORT_FN("trel.big", "echo", echo)

/* Open fds of this process, and how many are sockets. */
static int count_fds(int *sockets) {
  int n = 0;
  *sockets = 0;
  DIR *d = opendir("/proc/self/fd");
  if (!d)
    return -1;
  for (struct dirent *de; (de = readdir(d)) != NULL;) {
    if (de->d_name[0] == '.')
      continue;
    char path[300], link[64];
    snprintf(path, sizeof path, "/proc/self/fd/%s", de->d_name);
    ssize_t k = readlink(path, link, sizeof link - 1);
    if (k > 0) {
      link[k] = 0;
      if (strncmp(link, "socket:", 7) == 0)
        (*sockets)++;
    }
    n++;
  }
  closedir(d);
  return n - 1; /* not the directory's own */
}

static int sockets_during; /* sockets open while the pair lived */

/* Values from 1 byte to 4 MiB there and back: frames larger than a
 * socket's buffers (written in parts, on EPOLLOUT; read in parts) and
 * many small ones in one batch. */
static int big_body(void) {
  static const char *const bns[] = {"trel.big"};
  tr_actor_nursery_t *an;
  tr_portal_t *e = NULL;
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_start_actor(an, "callee", bns, 1, &e), 0);
  for (size_t len = 1; e && len <= (4u << 20); len *= 4) {
    uint8_t *v = malloc(len);
    tr_assert(v != NULL);
    for (size_t i = 0; i < len; i++)
      v[i] = (uint8_t)(i * 7 + len);
    tr_buf_t *arg = NULL, *res = NULL;
    tr_check_rc(tr_buf_from(v, len, &arg), 0);
    tr_check_rc(tr_portal_run(e, "trel.big.echo", arg, &res), 0);
    tr_check(res && tr_buf_len(res) == len && memcmp(tr_buf_data(res), v, len) == 0,
             "%zu bytes back unchanged", len);
    tr_buf_release(arg);
    tr_buf_release(res);
    free(v);
  }
  int s;
  tr_check(count_fds(&s) > 0);
  sockets_during = s;
  tr_assert_rc(tr_actor_nursery_close(an), 0);
  tr_portal_release(e);
  return 0;
}

/* Every relay end closes its socket as it exits: the process has the fds
 * it had before the runtime ran (and, in socket mode, had the pair's two
 * sockets while it lived). */
Test(relay, big_values_and_no_fd_left, .timeout = 120) {
  int s0, s1;
  int n0 = count_fds(&s0);
  cr_assert(n0 > 0);
  tr_test_def_t def = {"relay/big_values_and_no_fd_left", big_body, 0, 0, TR_TEST_WORKERS};
  static tr_test_report_t rep;
  if (tr_test_run(&def, &rep) != 0)
    cr_assert_fail("%s", rep.message);
  if (tr_test_relay_sockets())
    cr_expect_geq(sockets_during - s0, 2, "the pair's two sockets were open");
  else
    cr_expect_eq(sockets_during, s0 + 1,
                 "no socket but the node's listener without TR_TEST_TRANSPORT=socket");
  int n1 = count_fds(&s1);
  cr_expect_eq(n1, n0, "fds before the runtime: %d, after: %d", n0, n1);
  cr_expect_eq(s1, s0, "sockets before: %d, after: %d", s0, s1);
}
