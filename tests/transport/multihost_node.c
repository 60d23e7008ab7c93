/*
 * A tractor node for tests/transport/test_multihost.c, started inside a
 * network-namespace host (tests/support/netns.h) with tr_netns_spawn_out.
 * Every mode is a tr_main program, configured by the environment the test
 * gives it (TR_REGISTRY_ADDR, TR_BIND_ADDR, TR_SECRET, TR_PEER_TIMEOUT_MS):
 *
 *   multihost_node registrar
 *       The root serves as the registrar (it is the first root at
 *       TR_REGISTRY_ADDR) and prints "READY <addr>" once it listens; it
 *       serves until SIGTERM or SIGINT (tr_main cancels the root), then
 *       exits 0.
 *   multihost_node server NAME [thread|process]
 *       Starts a daemon actor NAME (an actor of this process, or a child
 *       process of it: a tree that spans the host's node and a process of
 *       its own) enabling namespace "mh" (below), waits until the registry
 *       finds it, prints "READY <pid of the actor's process>", and serves
 *       until SIGTERM or SIGINT, then exits 0.
 *   multihost_node client NAME [HOST]
 *       Finds NAME and checks, across the hosts: RPC (its pid is not this
 *       process's; the registry entry's address is on HOST when given),
 *       error boxing (mh.fail's ValueError arrives boxed, with its message,
 *       source and trace), a stream of MH_STREAM_N values in order through
 *       a context, cancelling a running call (mh.forever) under a deadline
 *       (prompt, and the callee's task sees the cancellation), and
 *       cancelling a context mid-stream (acknowledged).  Prints "OK ..." and
 *       exits 0 when all pass.
 *   multihost_node partition NAME
 *       Finds NAME and streams from it (a value a millisecond), prints
 *       "READY" once values flow, then waits for the stream to fail (the
 *       test cuts the server's link): prints "ENDED <code> <name> <ms since
 *       the last value>", then looks NAME up again and prints "GONE <code>
 *       <name>".  Exits 0 when the stream ended with -TR_EIO and the name
 *       is no longer found.
 *
 * A failure prints one line "multihost_node MODE: reason" on stderr and
 * exits with the status that names the check (multihost_node.h).  Nothing
 * waits without a deadline: the registrar and server give up after
 * MH_LIFETIME_MS, every client step runs under a scope with a deadline.
 * stdout is line-buffered, so each line reaches the test's pipe at once.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <tractor/tractor.h>

#include "multihost_node.h"

#define MS (1000 * 1000LL)
/* How long a client waits for the server's actor to be registered. */
#define FIND_MS 10000
/* The whole client (or partition) run: far beyond what it needs. */
#define CLIENT_MS 40000
/* mh.forever's caller gives up after this; the cancellation must be back
 * within CANCEL_MARGIN_MS of it. */
#define FOREVER_MS 300
#define CANCEL_MARGIN_MS 1500

/* ---- the exported namespace "mh" ----------------------------------------------------- */

/* Two u64 in 16 little-endian bytes: mh.count's (n, pace_us). */
static int pack2(uint64_t a, uint64_t b, tr_buf_t **out) {
  uint8_t v[16];
  for (int i = 0; i < 8; i++) {
    v[i] = (uint8_t)(a >> (8 * i));
    v[8 + i] = (uint8_t)(b >> (8 * i));
  }
  return tr_buf_from(v, sizeof v, out);
}

static int unpack2(const tr_buf_t *b, uint64_t *x, uint64_t *y) {
  if (!b || tr_buf_len(b) != 16)
    return tr_fail("TypeError", "mh.count takes (n, pace_us) as 16 bytes");
  const uint8_t *v = tr_buf_data(b);
  *x = *y = 0;
  for (int i = 0; i < 8; i++) {
    *x |= (uint64_t)v[i] << (8 * i);
    *y |= (uint64_t)v[8 + i] << (8 * i);
  }
  return 0;
}

static int mh_pid(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)ctx;
  (void)args;
  return tr_buf_from_u64((uint64_t)getpid(), result);
}
TR_EXPORT_FN("mh", "pid", mh_pid)

/* Fails with a ValueError that quotes its argument (a string). */
static int mh_fail(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)ctx;
  (void)result;
  int len = args ? (int)tr_buf_len(args) : 0;
  return tr_fail("ValueError", "mh.fail refuses \"%.*s\" on purpose", len > 200 ? 200 : len,
                 args ? (const char *)tr_buf_data(args) : "");
}
TR_EXPORT_FN("mh", "fail", mh_fail)

/* mh.forever calls that ended cancelled.  Incremented (release) before
 * the function returns; mh.cancelled reads it (acquire) in a later call. */
static uint64_t forever_cancelled;

/* Sleeps until cancelled. */
static int mh_forever(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)ctx;
  (void)args;
  (void)result;
  int rc = tr_sleep_until(TR_NO_DEADLINE);
  if (rc == -TR_ECANCELED)
    __atomic_add_fetch(&forever_cancelled, 1, __ATOMIC_RELEASE);
  return rc;
}
TR_EXPORT_FN("mh", "forever", mh_forever)

static int mh_cancelled(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)ctx;
  (void)args;
  return tr_buf_from_u64(__atomic_load_n(&forever_cancelled, __ATOMIC_ACQUIRE), result);
}
TR_EXPORT_FN("mh", "cancelled", mh_cancelled)

/* A context: started with n, then streams 0, 1, ... n-1 (n = 0: without
 * end), one every pace_us microseconds (0: as fast as the window allows),
 * and returns how many it sent. */
static int mh_count(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  uint64_t n = 0, pace_us = 0;
  int rc = unpack2(args, &n, &pace_us);
  if (rc)
    return rc;
  tr_buf_t *first = NULL;
  if ((rc = tr_buf_from_u64(n, &first)) != 0)
    return rc;
  rc = tr_ctx_started(ctx, first);
  tr_buf_release(first);
  tr_stream_t *s = NULL;
  if (rc == 0)
    rc = tr_ctx_open_stream(ctx, &s);
  uint64_t i = 0;
  for (; rc == 0 && (n == 0 || i < n); i++) {
    tr_buf_t *v = NULL;
    if ((rc = tr_buf_from_u64(i, &v)) != 0)
      break;
    rc = tr_stream_send(s, v);
    tr_buf_release(v);
    /* A send with credit left does not block: a checkpoint now and then
     * lets a Cancel in even when the receiver keeps up. */
    if (rc == 0 && pace_us)
      rc = tr_sleep((int64_t)pace_us * 1000);
    else if (rc == 0 && i % 64 == 63)
      rc = tr_checkpoint();
  }
  if (rc)
    return rc;
  rc = tr_stream_close(s);
  return rc ? rc : tr_buf_from_u64(i, result);
}
TR_EXPORT_CONTEXT("mh", "count", mh_count)

/* A stream of 0 and 1 that ends at once: its StartAck, values and Return
 * reach a caller together. */
static int mh_two(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)args;
  (void)result;
  tr_stream_t *s = NULL;
  int rc = tr_ctx_open_stream(ctx, &s);
  for (uint64_t i = 0; rc == 0 && i < 2; i++) {
    tr_buf_t *v = NULL;
    if ((rc = tr_buf_from_u64(i, &v)) == 0)
      rc = tr_stream_send(s, v);
    tr_buf_release(v);
  }
  return rc;
}
TR_EXPORT_STREAM("mh", "two", mh_two)

static const char *const mh_ns[] = {"mh"};

/* ---- a run ------------------------------------------------------------------------------- */

typedef struct run {
  const char *mode;
  const char *name; /* the server's actor */
  const char *host; /* client: where the actor's entry must be ("" = anywhere) */
  int spawn;        /* server: TR_SPAWN_THREAD or TR_SPAWN_PROCESS */
  int started;      /* the root function ran: tr_main got that far */
  int exit_code;    /* the first failed check's MH_EXIT_*, else 0 */
  char why[400];
} run_t;

/* Records the first failure (code and reason) and returns -TR_EAPP. */
__attribute__((format(printf, 3, 4))) static int fail(run_t *r, int code, const char *fmt, ...) {
  if (r->exit_code == 0) {
    r->exit_code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->why, sizeof r->why, fmt, ap);
    va_end(ap);
  }
  return -TR_EAPP;
}

/* rc's name and the task's last error message, for a reason. */
static const char *why_rc(int rc, char *buf, size_t len) {
  const tr_error_t *e = tr_error_last();
  snprintf(buf, len, "%s (%s)", tr_errname(rc), e ? tr_error_message(e) : "no error object");
  return buf;
}

__attribute__((format(printf, 1, 2))) static void say(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vprintf(fmt, ap);
  va_end(ap);
  fflush(stdout);
}

static int64_t ms_since(int64_t t0) { return (tr_now() - t0) / MS; }

static int call_u64(tr_portal_t *p, const char *fn, uint64_t *v) {
  tr_buf_t *res = NULL;
  int rc = tr_portal_run(p, fn, NULL, &res);
  if (rc == 0)
    rc = res ? tr_buf_to_u64(res, v) : -TR_EMSGTYPE;
  tr_buf_release(res);
  return rc;
}

/* Receives one u64 from s: 0, or what tr_stream_recv returned. */
static int recv_u64(tr_stream_t *s, uint64_t *v) {
  tr_buf_t *b = NULL;
  int rc = tr_stream_recv(s, &b);
  if (rc == 0)
    rc = b ? tr_buf_to_u64(b, v) : -TR_EMSGTYPE;
  tr_buf_release(b);
  return rc;
}

/* ---- registrar and server ------------------------------------------------------------------ */

/* Serves until the root is cancelled (SIGTERM, SIGINT): -TR_ECANCELED.
 * After MH_LIFETIME_MS it fails instead. */
static int serve_until_stopped(run_t *r) {
  int rc = tr_sleep_until(tr_now() + MH_LIFETIME_MS * MS);
  if (rc == 0)
    return fail(r, MH_EXIT_LIFETIME, "served %d ms without being stopped", MH_LIFETIME_MS);
  return rc;
}

static int registrar_root(void *arg) {
  run_t *r = arg;
  r->started = 1;
  char addr[64];
  int reg = 0, rc = tr_node_addr(addr, sizeof addr, &reg);
  if (rc || !reg)
    return fail(r, MH_EXIT_START, "this node is not the registrar (%s, registrar %d)",
                tr_errname(rc), reg);
  say("READY %s\n", addr);
  return serve_until_stopped(r);
}

static int server_root(void *arg) {
  run_t *r = arg;
  r->started = 1;
  char why[300];
  tr_actor_nursery_t *an;
  int rc = tr_actor_nursery_open(&an, NULL);
  if (rc)
    return fail(r, MH_EXIT_SERVE, "tr_actor_nursery_open: %s", why_rc(rc, why, sizeof why));
  tr_actor_opts_t o = {.enable = mh_ns, .n_enable = 1, .spawn = r->spawn};
  tr_portal_t *p = NULL, *f = NULL;
  rc = tr_start_actor_opts(an, r->name, &o, &p);
  if (rc)
    fail(r, MH_EXIT_SERVE, "tr_start_actor_opts(%s): %s", r->name, why_rc(rc, why, sizeof why));
  /* Ready once the registry finds it and it answers. */
  if (rc == 0 && (rc = tr_wait_for_actor(r->name, tr_now() + FIND_MS * MS, &f)) != 0)
    fail(r, MH_EXIT_SERVE, "tr_wait_for_actor(%s): %s", r->name, why_rc(rc, why, sizeof why));
  uint64_t pid = 0;
  if (rc == 0 && (rc = call_u64(f, "mh.pid", &pid)) != 0)
    fail(r, MH_EXIT_SERVE, "mh.pid of its own actor: %s", why_rc(rc, why, sizeof why));
  if (rc == 0) {
    say("READY %llu\n", (unsigned long long)pid);
    rc = serve_until_stopped(r);
  }
  tr_portal_release(f);
  tr_actor_nursery_cancel(an);
  /* -TR_ECANCELED when the root was cancelled and the daemon merely
   * stopped; anything else is the daemon's failure. */
  int crc = tr_actor_nursery_close(an);
  if (crc != 0 && crc != -TR_ECANCELED)
    fail(r, MH_EXIT_SERVE, "the actor nursery closed with %s", why_rc(crc, why, sizeof why));
  tr_portal_release(p);
  return rc;
}

/* ---- client checks ----------------------------------------------------------------------------
 */

/* RPC: the actor answers with its pid, which is not ours, and which its
 * registry entry (at an address on r->host) names too. */
static int check_rpc(run_t *r, tr_portal_t *p, uint64_t *pid) {
  char why[300];
  int rc = call_u64(p, "mh.pid", pid);
  if (rc)
    return fail(r, MH_EXIT_RPC, "mh.pid: %s", why_rc(rc, why, sizeof why));
  if (*pid == (uint64_t)getpid() || *pid == 0)
    return fail(r, MH_EXIT_RPC, "mh.pid answered %llu, this process is %d",
                (unsigned long long)*pid, (int)getpid());
  tr_registry_entry_t *v = NULL;
  size_t n = 0;
  if ((rc = tr_registry_list(&v, &n)) != 0)
    return fail(r, MH_EXIT_RPC, "tr_registry_list: %s", why_rc(rc, why, sizeof why));
  const tr_registry_entry_t *e = NULL;
  for (size_t i = 0; i < n && !e; i++)
    if (strcmp(v[i].name, r->name) == 0)
      e = &v[i];
  size_t hlen = strlen(r->host);
  if (!e)
    rc = fail(r, MH_EXIT_RPC, "%s is not in the registry's list", r->name);
  else if (hlen && (strncmp(e->addr, r->host, hlen) != 0 || e->addr[hlen] != ':'))
    rc = fail(r, MH_EXIT_RPC, "%s's entry is at %s, not on host %s", r->name, e->addr, r->host);
  else if ((uint64_t)e->pid != *pid)
    rc = fail(r, MH_EXIT_RPC, "%s's entry names pid %lld, mh.pid says %llu", r->name,
              (long long)e->pid, (unsigned long long)*pid);
  tr_registry_entries_free(v, n);
  return rc;
}

/* Error boxing: mh.fail's ValueError comes back as a RemoteActorError
 * whose boxed type, message, source and trace are the callee's. */
static int check_boxing(run_t *r, tr_portal_t *p) {
  tr_buf_t *arg = NULL, *res = NULL;
  int rc = tr_buf_from_str("a call across hosts", &arg);
  if (rc == 0)
    rc = tr_portal_run(p, "mh.fail", arg, &res);
  tr_buf_release(arg);
  tr_buf_release(res);
  const tr_error_t *e = tr_error_last();
  const char *want = "mh.fail refuses \"a call across hosts\" on purpose";
  const char *boxed = tr_error_boxed_type(e), *src = tr_error_src(e), *msg = tr_error_message(e);
  const char *hop = tr_error_trace(e, 0);
  if (rc != -TR_EREMOTE || tr_error_code(e) != -TR_EREMOTE)
    return fail(r, MH_EXIT_BOXING, "mh.fail returned %s (error code %s), not TR_EREMOTE",
                tr_errname(rc), tr_errname(tr_error_code(e)));
  if (!boxed || strcmp(boxed, "ValueError") != 0)
    return fail(r, MH_EXIT_BOXING, "boxed type %s, not ValueError", boxed ? boxed : "(none)");
  if (!msg || !strstr(msg, want))
    return fail(r, MH_EXIT_BOXING, "message \"%s\" lacks \"%s\"", msg ? msg : "", want);
  if (!src || strcmp(src, r->name) != 0)
    return fail(r, MH_EXIT_BOXING, "source %s, not %s", src ? src : "(none)", r->name);
  if (!hop || !strstr(hop, "mh_fail"))
    return fail(r, MH_EXIT_BOXING, "the trace does not start in mh_fail: %s",
                hop ? hop : "(no trace)");
  tr_error_clear();
  return 0;
}

/* A stream through a context: started n, then 0 .. n-1 in order, the
 * end, and the result n.  *ms: how long it took. */
static int check_stream(run_t *r, tr_portal_t *p, uint64_t n, int64_t *ms) {
  char why[300];
  int64_t t0 = tr_now();
  tr_buf_t *args = NULL, *first = NULL, *res = NULL;
  tr_ctx_t *ctx = NULL;
  tr_stream_t *s = NULL;
  int rc = pack2(n, 0, &args);
  if (rc == 0)
    rc = tr_portal_open_context(p, "mh.count", args, NULL, &ctx, &first);
  tr_buf_release(args);
  if (rc)
    return fail(r, MH_EXIT_STREAM, "open_context mh.count: %s", why_rc(rc, why, sizeof why));
  uint64_t v = UINT64_MAX, got = 0;
  if (!first || tr_buf_to_u64(first, &v) != 0 || v != n)
    rc = fail(r, MH_EXIT_STREAM, "started value %llu, not %llu", (unsigned long long)v,
              (unsigned long long)n);
  tr_buf_release(first);
  if (rc == 0 && (rc = tr_ctx_open_stream(ctx, &s)) != 0)
    fail(r, MH_EXIT_STREAM, "tr_ctx_open_stream: %s", why_rc(rc, why, sizeof why));
  for (; rc == 0 && got < n; got++) {
    if ((rc = recv_u64(s, &v)) != 0)
      fail(r, MH_EXIT_STREAM, "value %llu of %llu: %s", (unsigned long long)got,
           (unsigned long long)n, why_rc(rc, why, sizeof why));
    else if (v != got)
      rc = fail(r, MH_EXIT_STREAM, "value %llu arrived as number %llu", (unsigned long long)v,
                (unsigned long long)got);
  }
  if (rc == 0 && (rc = recv_u64(s, &v)) != -TR_EEOF)
    rc = fail(r, MH_EXIT_STREAM, "after %llu values: %s, not the end", (unsigned long long)n,
              rc == 0 ? "another value" : why_rc(rc, why, sizeof why));
  else if (rc == -TR_EEOF)
    rc = 0;
  /* Leaving: the result on success; after a failure, close cancels. */
  int crc = tr_ctx_close(ctx, &res);
  v = UINT64_MAX;
  if (rc == 0 && crc != 0)
    rc = fail(r, MH_EXIT_STREAM, "tr_ctx_close: %s", why_rc(crc, why, sizeof why));
  else if (rc == 0 && (!res || tr_buf_to_u64(res, &v) != 0 || v != n))
    rc = fail(r, MH_EXIT_STREAM, "the result is %llu, not %llu", (unsigned long long)v,
              (unsigned long long)n);
  tr_buf_release(res);
  *ms = ms_since(t0);
  return rc;
}

/* Remote cancellation: mh.forever under a FOREVER_MS deadline returns
 * -TR_ECANCELED promptly, the scope reports the deadline, and the callee's
 * task sees its cancellation (mh.cancelled counts it; the Cancel is sent
 * without waiting, so that count is polled, with a deadline).  *ms: how long
 * the cancelled call took. */
static int check_cancel(run_t *r, tr_portal_t *p, int64_t *ms) {
  char why[300];
  uint64_t before = 0, after = 0;
  int rc = call_u64(p, "mh.cancelled", &before);
  if (rc)
    return fail(r, MH_EXIT_CANCEL, "mh.cancelled: %s", why_rc(rc, why, sizeof why));
  int64_t t0 = tr_now();
  tr_scope_t sc;
  if ((rc = tr_fail_after(&sc, FOREVER_MS * MS)) != 0)
    return fail(r, MH_EXIT_CANCEL, "tr_fail_after: %s", why_rc(rc, why, sizeof why));
  rc = tr_portal_run(p, "mh.forever", NULL, NULL);
  int crc = tr_scope_close(&sc);
  *ms = ms_since(t0);
  if (rc != -TR_ECANCELED || crc != -TR_ETIMEDOUT)
    return fail(r, MH_EXIT_CANCEL, "mh.forever under a deadline: %s, scope %s", tr_errname(rc),
                tr_errname(crc));
  if (*ms > FOREVER_MS + CANCEL_MARGIN_MS)
    return fail(r, MH_EXIT_CANCEL, "the cancelled call took %lld ms (deadline %d ms)",
                (long long)*ms, FOREVER_MS);
  tr_error_clear();
  int64_t until = tr_now() + 5000 * MS;
  while ((rc = call_u64(p, "mh.cancelled", &after)) == 0 && after <= before && tr_now() < until)
    tr_sleep(10 * MS);
  if (rc)
    return fail(r, MH_EXIT_CANCEL, "mh.cancelled: %s", why_rc(rc, why, sizeof why));
  if (after <= before)
    return fail(r, MH_EXIT_CANCEL, "the callee's mh.forever never saw its cancellation");
  return 0;
}

/* Cancelling a context mid-stream: the callee acknowledges (its
 * ContextCancelled names this actor), and leaving absorbs it. */
static int check_ctx_cancel(run_t *r, tr_portal_t *p) {
  char why[300];
  tr_buf_t *args = NULL, *first = NULL;
  tr_ctx_t *ctx = NULL;
  tr_stream_t *s = NULL;
  int rc = pack2(0, 1000, &args);
  if (rc == 0)
    rc = tr_portal_open_context(p, "mh.count", args, NULL, &ctx, &first);
  tr_buf_release(args);
  tr_buf_release(first);
  if (rc)
    return fail(r, MH_EXIT_CTX_CANCEL, "open_context mh.count: %s", why_rc(rc, why, sizeof why));
  if ((rc = tr_ctx_open_stream(ctx, &s)) != 0)
    fail(r, MH_EXIT_CTX_CANCEL, "tr_ctx_open_stream: %s", why_rc(rc, why, sizeof why));
  for (uint64_t i = 0, v; rc == 0 && i < 5; i++)
    if ((rc = recv_u64(s, &v)) != 0 || v != i)
      rc = fail(r, MH_EXIT_CTX_CANCEL, "value %llu: %s", (unsigned long long)i,
                rc ? why_rc(rc, why, sizeof why) : "out of order");
  if (rc == 0) {
    tr_ctx_cancel(ctx);
    if ((rc = tr_ctx_cancel_wait(ctx, 3000 * MS)) != 0)
      fail(r, MH_EXIT_CTX_CANCEL, "tr_ctx_cancel_wait: %s", why_rc(rc, why, sizeof why));
    else if (!tr_ctx_cancel_acked(ctx))
      rc = fail(r, MH_EXIT_CTX_CANCEL, "the callee did not acknowledge the cancel");
  }
  int crc = tr_ctx_close(ctx, NULL);
  if (rc == 0 && crc != 0)
    rc = fail(r, MH_EXIT_CTX_CANCEL, "tr_ctx_close after the cancel: %s",
              why_rc(crc, why, sizeof why));
  return rc;
}

/* The actor r names, waited for: 0 with *p, or fail's code. */
static int find_or_fail(run_t *r, tr_portal_t **p) {
  char why[300];
  int rc = tr_wait_for_actor(r->name, tr_now() + FIND_MS * MS, p);
  if (rc)
    return fail(r, MH_EXIT_NOTFOUND, "tr_wait_for_actor(%s): %s", r->name,
                why_rc(rc, why, sizeof why));
  return 0;
}

static int client_checks(run_t *r) {
  tr_portal_t *p = NULL;
  int rc = find_or_fail(r, &p);
  if (rc)
    return rc;
  uint64_t pid = 0;
  int64_t stream_ms = 0, cancel_ms = 0;
  if ((rc = check_rpc(r, p, &pid)) == 0 && (rc = check_boxing(r, p)) == 0 &&
      (rc = check_stream(r, p, MH_STREAM_N, &stream_ms)) == 0 &&
      (rc = check_cancel(r, p, &cancel_ms)) == 0 && (rc = check_ctx_cancel(r, p)) == 0)
    say("OK pid=%llu stream=%d in %lld ms, cancel in %lld ms\n", (unsigned long long)pid,
        MH_STREAM_N, (long long)stream_ms, (long long)cancel_ms);
  tr_portal_release(p);
  return rc;
}

/* The partition: a stream that the test's cut ends.  See the top. */
static int partition_checks(run_t *r) {
  char why[300];
  tr_portal_t *p = NULL;
  int rc = find_or_fail(r, &p);
  if (rc)
    return rc;
  tr_buf_t *args = NULL, *first = NULL;
  tr_ctx_t *ctx = NULL;
  tr_stream_t *s = NULL;
  if ((rc = pack2(0, 1000, &args)) == 0)
    rc = tr_portal_open_context(p, "mh.count", args, NULL, &ctx, &first);
  tr_buf_release(args);
  tr_buf_release(first);
  if (rc) {
    tr_portal_release(p);
    return fail(r, MH_EXIT_STREAM, "open_context mh.count: %s", why_rc(rc, why, sizeof why));
  }
  if ((rc = tr_ctx_open_stream(ctx, &s)) != 0)
    fail(r, MH_EXIT_STREAM, "tr_ctx_open_stream: %s", why_rc(rc, why, sizeof why));
  uint64_t next = 0, v;
  int64_t last = tr_now();
  while (rc == 0) {
    if ((rc = recv_u64(s, &v)) != 0)
      break;
    last = tr_now();
    if (v != next++)
      rc = fail(r, MH_EXIT_STREAM, "value %llu arrived as number %llu", (unsigned long long)v,
                (unsigned long long)(next - 1));
    else if (next == 100)
      say("READY\n");
  }
  if (r->exit_code == 0) {
    int64_t silent = ms_since(last);
    say("ENDED %d %s %lld\n", rc, tr_errname(rc), (long long)silent);
    fprintf(stderr,
            "multihost_node partition: the stream ended after %llu values, %lld ms "
            "after the last: %s\n",
            (unsigned long long)next, (long long)silent, why_rc(rc, why, sizeof why));
    if (rc != -TR_EIO)
      fail(r, MH_EXIT_PARTITION, "the stream ended with %s, not TR_EIO", why);
  }
  (void)tr_ctx_close(ctx, NULL); /* its outcome is the loss just reported */
  tr_portal_release(p);
  if (r->exit_code)
    return -TR_EAPP;
  /* The tree knows: a lookup no longer returns the partitioned actor. */
  tr_error_clear();
  tr_portal_t *q = NULL;
  rc = tr_find_actor(r->name, &q);
  say("GONE %d %s\n", rc, tr_errname(rc));
  tr_portal_release(q);
  if (rc != -TR_ENOTFOUND)
    return fail(r, MH_EXIT_STILL_FOUND, "tr_find_actor(%s) after the partition: %s", r->name,
                rc == 0 ? "found" : why_rc(rc, why, sizeof why));
  return 0;
}

/* The client modes, under one deadline: nothing they wait for can hang
 * them. */
static int client_root(void *arg) {
  run_t *r = arg;
  r->started = 1;
  tr_scope_t sc;
  int rc = tr_fail_after(&sc, CLIENT_MS * MS);
  if (rc)
    return fail(r, MH_EXIT_START, "tr_fail_after: %s", tr_errname(rc));
  rc = strcmp(r->mode, "client") == 0 ? client_checks(r) : partition_checks(r);
  if (tr_scope_close(&sc) == -TR_ETIMEDOUT)
    rc = fail(r, MH_EXIT_LIFETIME, "the %s run took more than %d ms", r->mode, CLIENT_MS);
  return rc;
}

/* ---- main ---------------------------------------------------------------------------------- */

static int usage(void) {
  fprintf(stderr, "usage: multihost_node registrar\n"
                  "       multihost_node server NAME [thread|process]\n"
                  "       multihost_node client NAME [HOST]\n"
                  "       multihost_node partition NAME\n");
  return MH_EXIT_USAGE;
}

int main(int argc, char **argv) {
  /* A TR_SPAWN_PROCESS child of a server node is this program again. */
  if (tr_spawned_child())
    return tr_main(argc, argv, NULL, NULL, NULL);
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (argc < 2)
    return usage();
  run_t r = {
      .mode = argv[1], .name = argc > 2 ? argv[2] : "", .host = "", .spawn = TR_SPAWN_THREAD};
  tr_task_fn root;
  int serves = 0;
  if (strcmp(r.mode, "registrar") == 0 && argc == 2) {
    root = registrar_root;
    serves = 1;
  } else if (strcmp(r.mode, "server") == 0 && (argc == 3 || argc == 4)) {
    if (argc == 4 && strcmp(argv[3], "process") == 0)
      r.spawn = TR_SPAWN_PROCESS;
    else if (argc == 4 && strcmp(argv[3], "thread") != 0)
      return usage();
    root = server_root;
    serves = 1;
  } else if (strcmp(r.mode, "client") == 0 && (argc == 3 || argc == 4)) {
    r.host = argc == 4 ? argv[3] : "";
    root = client_root;
  } else if (strcmp(r.mode, "partition") == 0 && argc == 3) {
    root = client_root;
  } else {
    return usage();
  }

  int rc = tr_main(argc, argv, root, &r, NULL);
  if (r.exit_code == 0 && rc != 0 && !(serves && rc == -TR_ECANCELED)) {
    /* tr_main itself failed: before the root (a refused start), or the
     * root returned an error no check recorded. */
    const tr_error_t *e = tr_error_last();
    snprintf(r.why, sizeof r.why, "tr_main returned %s%s: %s", tr_errname(rc),
             r.started ? "" : " before the root ran", e ? tr_error_message(e) : "no error object");
    r.exit_code = !r.started && rc == -TR_EPERM ? MH_EXIT_EPERM : MH_EXIT_START;
  }
  if (r.exit_code)
    fprintf(stderr, "multihost_node %s: %s\n", r.mode, r.why);
  return r.exit_code;
}
