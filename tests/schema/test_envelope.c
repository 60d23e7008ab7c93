/*
 * The envelope codec: every body round-trips field by field, frames survive
 * any chunking, and malformed input of every kind yields an error code
 * (never a crash, a leak or a partial message).  Run under ASan+UBSan to
 * make "never" mean something.
 */
#include <criterion/criterion.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "schema/envelope.h"
#include "schema/tractor.pb-c.h"
#include "tractor/errors.h"
#include "tractor/portal.h" /* TR_REMOTE_ERROR_TEXT_MAX */

/* ---- helpers ---------------------------------------------------------------- */

static tr_msg_t *mk(int body) {
  tr_msg_t *m = NULL;
  cr_assert_eq(tr_msg_new(&m), 0);
  m->body = (uint16_t)body;
  return m;
}

static struct tr_envx *xof(tr_msg_t *m) {
  struct tr_envx *x = tr__envx_get(m);
  cr_assert_not_null(x);
  return x;
}

static void set_uid(tr_uid_t *u, const char *name, uint8_t seed, const char *addr) {
  u->name = name ? strdup(name) : NULL;
  u->addr = addr ? strdup(addr) : NULL;
  for (int i = 0; i < TR_UUID_LEN; i++)
    u->uuid[i] = (uint8_t)(seed + i);
}

static void set_payload(tr_msg_t *m, const char *s) {
  cr_assert_eq(tr_buf_from_str(s, &m->payload), 0);
}

static void assert_str_opt(const char *a, const char *b) {
  if (a == NULL || b == NULL)
    cr_assert(a == b, "expected %s, got %s", b ? b : "(null)", a ? a : "(null)");
  else
    cr_assert_str_eq(a, b);
}

static void assert_uid_eq(const tr_uid_t *a, const tr_uid_t *b) {
  assert_str_opt(a->name, b->name);
  assert_str_opt(a->addr, b->addr);
  cr_assert_eq(memcmp(a->uuid, b->uuid, TR_UUID_LEN), 0);
}

static void assert_payload(const tr_msg_t *m, const char *s) {
  cr_assert_not_null(m->payload);
  cr_assert_eq(tr_buf_len(m->payload), strlen(s));
  cr_assert_eq(memcmp(tr_buf_data(m->payload), s, strlen(s)), 0);
}

/* Encodes m, checks the size agrees with tr__env_encoded_size, decodes. */
static tr_msg_t *roundtrip(const tr_msg_t *m) {
  uint8_t *bytes = NULL;
  size_t len = 0;
  tr_msg_t *d = NULL;
  cr_assert_eq(tr__env_encode(m, &bytes, &len), 0);
  cr_assert_not_null(bytes);
  cr_assert_eq(len, tr__env_encoded_size(m));
  cr_assert_eq(tr__env_decode(bytes, len, NULL, &d), 0);
  free(bytes);
  cr_assert_not_null(d);
  cr_assert_eq(d->body, m->body);
  cr_assert_eq(d->cid, m->cid);
  cr_assert_null(d->from);
  cr_assert_null(d->ptr);
  cr_assert_eq(d->tag, 0);
  cr_assert_eq(d->flags_, 0);
  return d;
}

static int decode_rc(const uint8_t *p, size_t n) {
  tr_msg_t *d = (tr_msg_t *)0x1;
  int rc = tr__env_decode(p, n, NULL, &d);
  if (rc == 0)
    tr_msg_free(d);
  else
    cr_assert_null(d);
  return rc;
}

/* Packs a hand-built protobuf Envelope, as a foreign or hostile peer could. */
static int decode_pb(const Tractor__Envelope *e) {
  size_t n = tractor__envelope__get_packed_size(e);
  uint8_t *p = malloc(n + 1);
  cr_assert_not_null(p);
  tractor__envelope__pack(e, p);
  int rc = decode_rc(p, n);
  free(p);
  return rc;
}

/* The Error message used by several tests: every field set. */
static tr_msg_t *mk_error(void) {
  tr_msg_t *m = mk(TR_BODY_ERROR);
  struct tr_envx *x = xof(m);
  m->cid = 77;
  x->u.error.has_src = 1;
  set_uid(&x->u.error.src, "callee", 10, "tcp://10.0.0.2:1616");
  x->u.error.boxed_type = strdup("ContextCancelled");
  x->u.error.src_type = strdup("Cancelled");
  x->u.error.message = strdup("cancelled by the caller");
  x->u.error.trace = strdup("Traceback:\n  at f()\n  at g()\n");
  x->u.error.n_relay = 3;
  x->u.error.relay = calloc(3, sizeof(tr_uid_t));
  set_uid(&x->u.error.relay[0], "hop0", 20, "tcp://a:1");
  set_uid(&x->u.error.relay[1], "hop1", 30, NULL);
  set_uid(&x->u.error.relay[2], NULL, 40, "tcp://c:3");
  x->u.error.has_canceller = 1;
  set_uid(&x->u.error.canceller, "root", 50, "tcp://10.0.0.1:1616");
  x->u.error.cid = 78;
  x->u.error.code = TR_ECTXCANCELED;
  return m;
}

/* A Start with src and dst, used by the frame tests. */
static tr_msg_t *mk_start(uint64_t cid, const char *args) {
  tr_msg_t *m = mk(TR_BODY_START);
  struct tr_envx *x = xof(m);
  m->cid = cid;
  x->has_src = x->has_dst = 1;
  set_uid(&x->src, "caller", 1, "tcp://127.0.0.1:1");
  set_uid(&x->dst, "callee", 2, "tcp://127.0.0.1:2");
  x->u.start.ns = strdup("mod.sub");
  x->u.start.func = strdup("compute");
  m->u64 = 32 | (1ULL << 32); /* window 32, overrun_error */
  set_payload(m, args);
  return m;
}

static void assert_start(const tr_msg_t *d, uint64_t cid, const char *args) {
  cr_assert_eq(d->body, TR_BODY_START);
  cr_assert_eq(d->cid, cid);
  cr_assert_str_eq(d->x_->u.start.ns, "mod.sub");
  cr_assert_str_eq(d->x_->u.start.func, "compute");
  cr_assert_eq(d->u64, 32 | (1ULL << 32), "window and overrun_error survive");
  cr_assert_str_eq(d->x_->src.name, "caller");
  cr_assert_str_eq(d->x_->dst.name, "callee");
  assert_payload(d, args);
}

/* A SpawnSpec with every field set, run_args included. */
static tr_msg_t *mk_spawn_spec(void) {
  static const uint8_t run_args[] = {0x00, 0xff, 0x10, 0x00, 0x7f};
  tr_msg_t *m = mk(TR_BODY_SPAWN_SPEC);
  struct tr_envx *x = xof(m);
  x->u.spawn_spec.name = strdup("child");
  x->u.spawn_spec.n_ns = 3;
  x->u.spawn_spec.ns = calloc(3, sizeof(char *));
  x->u.spawn_spec.ns[0] = strdup("app.math");
  x->u.spawn_spec.ns[1] = strdup("");
  x->u.spawn_spec.ns[2] = strdup("app.io");
  x->u.spawn_spec.n_registry = 2;
  x->u.spawn_spec.registry = calloc(2, sizeof(char *));
  x->u.spawn_spec.registry[0] = strdup("tcp://127.0.0.1:1616");
  x->u.spawn_spec.registry[1] = strdup("tcp://[::1]:1616");
  x->u.spawn_spec.bind_addr = strdup("tcp://0.0.0.0:0");
  x->u.spawn_spec.log_level = strdup("debug");
  x->u.spawn_spec.life_cid = 0xfedcba9876543210ull;
  x->u.spawn_spec.has_parent = 1;
  set_uid(&x->u.spawn_spec.parent, "parent", 70, "tcp://127.0.0.1:1616");
  x->u.spawn_spec.run_func = strdup("app.math.square");
  cr_assert_eq(tr_buf_from(run_args, sizeof run_args, &m->payload), 0);
  return m;
}

/* xorshift64*: deterministic, so a failure reproduces. */
static uint64_t rng(uint64_t *s) {
  *s ^= *s >> 12;
  *s ^= *s << 25;
  *s ^= *s >> 27;
  return *s * 0x2545F4914F6CDD1Dull;
}

/* ---- round trips of every body ---------------------------------------------- */

Test(envelope, hello, .timeout = 30) {
  tr_msg_t *m = mk(TR_BODY_HELLO);
  struct tr_envx *x = xof(m);
  set_uid(&x->u.hello.id, "worker-1", 100, "tcp://192.168.1.5:7777");
  x->u.hello.pid = 424242;
  x->u.hello.is_registrar = 1;
  x->u.hello.is_probe = 1;
  set_payload(m, "proof-of-cookie");

  tr_msg_t *d = roundtrip(m);
  cr_assert_eq(d->x_->kind, TR_BODY_HELLO);
  assert_uid_eq(&d->x_->u.hello.id, &x->u.hello.id);
  cr_assert_eq(d->x_->u.hello.pid, 424242);
  cr_assert_eq(d->x_->u.hello.is_registrar, 1);
  cr_assert_eq(d->x_->u.hello.is_probe, 1);
  assert_payload(d, "proof-of-cookie");
  cr_assert_eq(d->x_->has_src, 0);
  cr_assert_eq(d->x_->has_dst, 0);
  tr_msg_free(d);

  /* The flags and pid also survive at their other values. */
  x->u.hello.is_registrar = 0;
  x->u.hello.pid = -1;
  d = roundtrip(m);
  cr_assert_eq(d->x_->u.hello.is_registrar, 0);
  cr_assert_eq(d->x_->u.hello.is_probe, 1);
  cr_assert_eq(d->x_->u.hello.pid, -1);
  tr_msg_free(d);
  tr_msg_free(m);
}

Test(envelope, hello_without_envx_has_zero_uuid, .timeout = 30) {
  tr_msg_t *m = mk(TR_BODY_HELLO);
  tr_msg_t *d = roundtrip(m);
  static const uint8_t zero[TR_UUID_LEN];
  cr_assert_not_null(d->x_);
  cr_assert_eq(memcmp(d->x_->u.hello.id.uuid, zero, TR_UUID_LEN), 0);
  cr_assert_null(d->x_->u.hello.id.name);
  cr_assert_null(d->payload);
  tr_msg_free(d);
  tr_msg_free(m);
}

Test(envelope, spawn_spec, .timeout = 30) {
  static const uint8_t run_args[] = {0x00, 0xff, 0x10, 0x00, 0x7f};
  tr_msg_t *m = mk_spawn_spec();

  tr_msg_t *d = roundtrip(m);
  const struct tr_envx *x = m->x_, *y = d->x_;
  cr_assert_eq(y->kind, TR_BODY_SPAWN_SPEC);
  cr_assert_str_eq(y->u.spawn_spec.name, "child");
  cr_assert_eq(y->u.spawn_spec.n_ns, 3);
  cr_assert_str_eq(y->u.spawn_spec.ns[0], "app.math");
  cr_assert_str_eq(y->u.spawn_spec.ns[1], "", "array elements stay non-NULL");
  cr_assert_str_eq(y->u.spawn_spec.ns[2], "app.io");
  cr_assert_eq(y->u.spawn_spec.n_registry, 2);
  cr_assert_str_eq(y->u.spawn_spec.registry[0], "tcp://127.0.0.1:1616");
  cr_assert_str_eq(y->u.spawn_spec.registry[1], "tcp://[::1]:1616");
  cr_assert_str_eq(y->u.spawn_spec.bind_addr, "tcp://0.0.0.0:0");
  cr_assert_str_eq(y->u.spawn_spec.log_level, "debug");
  cr_assert_eq(y->u.spawn_spec.life_cid, 0xfedcba9876543210ull, "all 64 bits survive");
  cr_assert_eq(y->u.spawn_spec.has_parent, 1);
  assert_uid_eq(&y->u.spawn_spec.parent, &x->u.spawn_spec.parent);
  cr_assert_str_eq(y->u.spawn_spec.run_func, "app.math.square");
  cr_assert_not_null(d->payload);
  cr_assert_eq(tr_buf_len(d->payload), sizeof run_args);
  cr_assert_eq(memcmp(tr_buf_data(d->payload), run_args, sizeof run_args), 0,
               "run_args are opaque bytes, zeros included");
  cr_assert_eq(y->has_src, 0);
  cr_assert_eq(y->has_dst, 0);
  tr_msg_free(d);
  tr_msg_free(m);
}

Test(envelope, spawn_spec_daemon_without_parent, .timeout = 30) {
  /* A daemon child: no function to run, no arguments, and here no parent
   * either, which must not be confused with a parent of unknown name. */
  tr_msg_t *m = mk(TR_BODY_SPAWN_SPEC);
  struct tr_envx *x = xof(m);
  x->u.spawn_spec.name = strdup("daemon");
  x->u.spawn_spec.life_cid = 9;

  tr_msg_t *d = roundtrip(m);
  const struct tr_envx *y = d->x_;
  static const uint8_t zero[TR_UUID_LEN];
  cr_assert_eq(y->kind, TR_BODY_SPAWN_SPEC);
  cr_assert_str_eq(y->u.spawn_spec.name, "daemon");
  cr_assert_eq(y->u.spawn_spec.life_cid, 9);
  cr_assert_eq(y->u.spawn_spec.has_parent, 0);
  cr_assert_null(y->u.spawn_spec.parent.name);
  cr_assert_null(y->u.spawn_spec.parent.addr);
  cr_assert_eq(memcmp(y->u.spawn_spec.parent.uuid, zero, TR_UUID_LEN), 0);
  cr_assert_null(y->u.spawn_spec.run_func);
  cr_assert_null(d->payload);
  cr_assert_eq(y->u.spawn_spec.n_ns, 0);
  cr_assert_null(y->u.spawn_spec.bind_addr);
  tr_msg_free(d);

  /* A parent known only by its uuid is still a parent: presence travels
   * with the ActorRef, not with its fields. */
  x->u.spawn_spec.has_parent = 1;
  set_uid(&x->u.spawn_spec.parent, NULL, 60, NULL);
  x->u.spawn_spec.life_cid = 0;
  d = roundtrip(m);
  cr_assert_eq(d->x_->u.spawn_spec.has_parent, 1);
  assert_uid_eq(&d->x_->u.spawn_spec.parent, &x->u.spawn_spec.parent);
  cr_assert_eq(d->x_->u.spawn_spec.life_cid, 0);
  tr_msg_free(d);
  tr_msg_free(m);
}

Test(envelope, spawn_spec_parent_uuid_checked, .timeout = 30) {
  /* The parent is an ActorRef like any other: its uuid on the wire is
   * empty or exactly 16 bytes.  The buffer is longer than a uuid so that
   * the 17-byte case reads only what it owns. */
  uint8_t uuid[2 * TR_UUID_LEN];
  for (int i = 0; i < (int)sizeof uuid; i++)
    uuid[i] = (uint8_t)(0xa0 + i);
  Tractor__Envelope e = TRACTOR__ENVELOPE__INIT;
  Tractor__SpawnSpec sp = TRACTOR__SPAWN_SPEC__INIT;
  Tractor__ActorRef parent = TRACTOR__ACTOR_REF__INIT;
  sp.name = "child";
  sp.life_cid = 41;
  sp.run_func = "app.f";
  sp.parent = &parent;
  parent.name = "root";
  parent.uuid.data = uuid;
  e.body_case = TRACTOR__ENVELOPE__BODY_SPAWN_SPEC;
  e.spawn_spec = &sp;

  parent.uuid.len = 5;
  cr_assert_eq(decode_pb(&e), -TR_EPROTO, "a 5-byte parent uuid is refused");
  parent.uuid.len = 17;
  cr_assert_eq(decode_pb(&e), -TR_EPROTO);
  parent.uuid.len = 0;
  cr_assert_eq(decode_pb(&e), 0, "an empty uuid is an unknown one");

  /* The accepted form decodes into the fields the header names. */
  parent.uuid.len = TR_UUID_LEN;
  size_t n = tractor__envelope__get_packed_size(&e);
  uint8_t *p = malloc(n);
  cr_assert_not_null(p);
  tractor__envelope__pack(&e, p);
  tr_msg_t *d = NULL;
  cr_assert_eq(tr__env_decode(p, n, NULL, &d), 0);
  free(p);
  cr_assert_eq(d->x_->u.spawn_spec.life_cid, 41);
  cr_assert_eq(d->x_->u.spawn_spec.has_parent, 1);
  cr_assert_str_eq(d->x_->u.spawn_spec.parent.name, "root");
  cr_assert_null(d->x_->u.spawn_spec.parent.addr);
  cr_assert_eq(memcmp(d->x_->u.spawn_spec.parent.uuid, uuid, TR_UUID_LEN), 0);
  cr_assert_str_eq(d->x_->u.spawn_spec.run_func, "app.f");
  cr_assert_null(d->payload);
  tr_msg_free(d);
}

Test(envelope, start, .timeout = 30) {
  tr_msg_t *m = mk(TR_BODY_START);
  struct tr_envx *x = xof(m);
  m->cid = 9;
  x->u.start.ns = strdup("pkg.mod");
  x->u.start.func = strdup("stream_numbers");
  x->u.start.has_caller = 1;
  set_uid(&x->u.start.caller, "origin", 60, "tcp://h:9");
  set_payload(m, "{\"n\": 10}");

  tr_msg_t *d = roundtrip(m);
  cr_assert_eq(d->x_->kind, TR_BODY_START);
  cr_assert_str_eq(d->x_->u.start.ns, "pkg.mod");
  cr_assert_str_eq(d->x_->u.start.func, "stream_numbers");
  cr_assert_eq(d->x_->u.start.has_caller, 1);
  assert_uid_eq(&d->x_->u.start.caller, &x->u.start.caller);
  assert_payload(d, "{\"n\": 10}");
  tr_msg_free(d);

  /* Without a caller and without args. */
  tr__uid_fini(&x->u.start.caller);
  x->u.start.has_caller = 0;
  tr_buf_release(m->payload);
  m->payload = NULL;
  d = roundtrip(m);
  cr_assert_eq(d->x_->u.start.has_caller, 0);
  cr_assert_null(d->x_->u.start.caller.name);
  cr_assert_null(d->payload);
  tr_msg_free(d);
  tr_msg_free(m);
}

Test(envelope, start_ack_every_functype, .timeout = 30) {
  static const int kinds[] = {TR_FUNC_FN, TR_FUNC_STREAM, TR_FUNC_CONTEXT};
  for (int i = 0; i < 3; i++) {
    tr_msg_t *m = mk(TR_BODY_START_ACK);
    m->cid = 5;
    m->u64 = (uint64_t)kinds[i];
    tr_msg_t *d = roundtrip(m);
    cr_assert_eq(d->u64, (uint64_t)kinds[i]);
    cr_assert_null(d->x_, "no envx needed without src/dst");
    tr_msg_free(d);
    tr_msg_free(m);
  }
}

Test(envelope, payload_bodies, .timeout = 30) {
  static const int kinds[] = {TR_BODY_STARTED, TR_BODY_YIELD, TR_BODY_RETURN};
  for (int i = 0; i < 3; i++) {
    tr_msg_t *m = mk(kinds[i]);
    m->cid = 1000 + (uint64_t)i;
    /* Binary, with NULs and high bytes: payloads are opaque. */
    uint8_t raw[300];
    for (int j = 0; j < 300; j++)
      raw[j] = (uint8_t)(j * 7 + i);
    cr_assert_eq(tr_buf_from(raw, sizeof raw, &m->payload), 0);
    tr_msg_t *d = roundtrip(m);
    cr_assert_eq(tr_buf_len(d->payload), sizeof raw);
    cr_assert_eq(memcmp(tr_buf_data(d->payload), raw, sizeof raw), 0);
    cr_assert_null(d->x_);
    tr_msg_free(d);

    /* An empty payload arrives as none (proto3 bytes have no presence). */
    tr_buf_release(m->payload);
    m->payload = NULL;
    d = roundtrip(m);
    cr_assert_null(d->payload);
    tr_msg_free(d);
    tr_msg_free(m);
  }
}

Test(envelope, stop, .timeout = 30) {
  tr_msg_t *m = mk(TR_BODY_STOP);
  m->cid = 3;
  tr_msg_t *d = roundtrip(m);
  cr_assert_null(d->payload);
  cr_assert_null(d->x_);
  tr_msg_free(d);
  tr_msg_free(m);
}

Test(envelope, error, .timeout = 30) {
  tr_msg_t *m = mk_error();
  const struct tr_envx *x = m->x_;
  tr_msg_t *d = roundtrip(m);
  const struct tr_envx *y = d->x_;
  cr_assert_eq(y->kind, TR_BODY_ERROR);
  cr_assert_eq(y->u.error.has_src, 1);
  assert_uid_eq(&y->u.error.src, &x->u.error.src);
  cr_assert_str_eq(y->u.error.boxed_type, "ContextCancelled");
  cr_assert_str_eq(y->u.error.src_type, "Cancelled");
  cr_assert_str_eq(y->u.error.message, "cancelled by the caller");
  cr_assert_str_eq(y->u.error.trace, "Traceback:\n  at f()\n  at g()\n");
  cr_assert_eq(y->u.error.n_relay, 3);
  for (int i = 0; i < 3; i++)
    assert_uid_eq(&y->u.error.relay[i], &x->u.error.relay[i]);
  cr_assert_eq(y->u.error.has_canceller, 1);
  assert_uid_eq(&y->u.error.canceller, &x->u.error.canceller);
  cr_assert_eq(y->u.error.cid, 78);
  cr_assert_eq(y->u.error.code, TR_ECTXCANCELED);
  tr_msg_free(d);
  tr_msg_free(m);
}

/* An error's message and trace above TR_REMOTE_ERROR_TEXT_MAX are cut on
 * the wire, at a character's start, with a note of their whole length; a
 * text of exactly the limit is not (portal.h). */
Test(envelope, error_texts_are_cut_to_the_limit, .timeout = 30) {
  size_t big = TR_REMOTE_ERROR_TEXT_MAX + 1000;
  char *msg = malloc(big + 1), *trace = malloc(TR_REMOTE_ERROR_TEXT_MAX + 1);
  cr_assert(msg && trace);
  for (size_t i = 0; i < big; i++) /* "ab" + 3-byte characters (U+20AC) */
    msg[i] = i < 2 ? 'a' + (char)i : (char)((i - 2) % 3 == 0 ? 0xE2 : (i - 2) % 3 == 1 ? 0x82 : 0xAC);
  msg[big] = '\0';
  memset(trace, 't', TR_REMOTE_ERROR_TEXT_MAX);
  trace[TR_REMOTE_ERROR_TEXT_MAX] = '\0';
  tr_msg_t *m = mk(TR_BODY_ERROR);
  xof(m)->u.error.message = msg;
  xof(m)->u.error.trace = trace;
  tr_msg_t *d = roundtrip(m);
  const struct tr_envx *y = d->x_;
  char note[64];
  snprintf(note, sizeof note, " ... [cut: %zu bytes in all]", big);
  size_t len = strlen(y->u.error.message), nl = strlen(note);
  cr_assert_leq(len, TR_REMOTE_ERROR_TEXT_MAX);
  cr_assert_gt(len, TR_REMOTE_ERROR_TEXT_MAX - nl - 3);
  cr_assert_str_eq(y->u.error.message + len - nl, note);
  cr_assert_eq((len - nl - 2) % 3, 0, "whole characters kept (%zu bytes)", len - nl);
  cr_assert_eq(memcmp(y->u.error.message, msg, len - nl), 0);
  cr_assert_str_eq(y->u.error.trace, trace, "a text of exactly the limit is whole");
  tr_msg_free(d);
  tr_msg_free(m);
}

Test(envelope, error_minimal, .timeout = 30) {
  tr_msg_t *m = mk(TR_BODY_ERROR);
  tr_msg_t *d = roundtrip(m);
  const struct tr_envx *y = d->x_;
  cr_assert_eq(y->kind, TR_BODY_ERROR);
  cr_assert_eq(y->u.error.has_src, 0);
  cr_assert_eq(y->u.error.has_canceller, 0);
  cr_assert_null(y->u.error.message);
  cr_assert_null(y->u.error.relay);
  cr_assert_eq(y->u.error.n_relay, 0);
  cr_assert_eq(y->u.error.code, 0);
  tr_msg_free(d);
  tr_msg_free(m);
}

Test(envelope, cancel_and_ack, .timeout = 30) {
  for (int whole = 0; whole < 2; whole++) {
    tr_msg_t *m = mk(TR_BODY_CANCEL);
    m->cid = 11;
    m->u64 = 0xfedcba9876543210ull;
    xof(m)->u.cancel.whole_actor = (uint8_t)whole;
    tr_msg_t *d = roundtrip(m);
    cr_assert_eq(d->u64, 0xfedcba9876543210ull);
    cr_assert_eq(d->x_->u.cancel.whole_actor, whole);
    tr_msg_free(d);
    tr_msg_free(m);

    for (int ack = 0; ack < 2; ack++) {
      m = mk(TR_BODY_CANCEL_ACK);
      m->cid = 12;
      m->u64 = 99;
      xof(m)->u.cancel.whole_actor = (uint8_t)whole;
      m->x_->u.cancel.acknowledged = (uint8_t)ack;
      d = roundtrip(m);
      cr_assert_eq(d->u64, 99);
      cr_assert_eq(d->x_->u.cancel.whole_actor, whole);
      cr_assert_eq(d->x_->u.cancel.acknowledged, ack);
      tr_msg_free(d);
      tr_msg_free(m);
    }
  }
  /* x_ NULL means both flags clear. */
  tr_msg_t *m = mk(TR_BODY_CANCEL_ACK);
  tr_msg_t *d = roundtrip(m);
  cr_assert_eq(d->x_->u.cancel.whole_actor, 0);
  cr_assert_eq(d->x_->u.cancel.acknowledged, 0);
  tr_msg_free(d);
  tr_msg_free(m);
}

Test(envelope, credit, .timeout = 30) {
  static const uint64_t ns[] = {0, 1, 64, UINT32_MAX};
  for (int i = 0; i < 4; i++) {
    tr_msg_t *m = mk(TR_BODY_CREDIT);
    m->u64 = ns[i];
    tr_msg_t *d = roundtrip(m);
    cr_assert_eq(d->u64, ns[i]);
    tr_msg_free(d);
    tr_msg_free(m);
  }
}

Test(envelope, cid_src_dst, .timeout = 30) {
  tr_msg_t *m = mk(TR_BODY_YIELD);
  struct tr_envx *x = xof(m);
  m->cid = UINT64_MAX;
  x->has_src = 1;
  set_uid(&x->src, "producer", 0xf0, "tcp://1.2.3.4:5");
  x->has_dst = 1;
  set_uid(&x->dst, "consumer", 0x0f, NULL);
  set_payload(m, "item");
  /* tag and ptr belong to the process: not encoded. */
  m->tag = 123;
  m->ptr = m;

  tr_msg_t *d = roundtrip(m);
  cr_assert_eq(d->cid, UINT64_MAX);
  cr_assert_eq(d->x_->kind, TR_BODY_YIELD, "a decoded envx always has the body's kind");
  cr_assert_eq(d->x_->has_src, 1);
  cr_assert_eq(d->x_->has_dst, 1);
  assert_uid_eq(&d->x_->src, &x->src);
  assert_uid_eq(&d->x_->dst, &x->dst);
  cr_assert_null(d->x_->dst.addr);
  assert_payload(d, "item");
  tr_msg_free(d);

  /* Only dst. */
  tr__uid_fini(&x->src);
  x->has_src = 0;
  d = roundtrip(m);
  cr_assert_eq(d->x_->has_src, 0);
  cr_assert_eq(d->x_->has_dst, 1);
  tr_msg_free(d);
  tr_msg_free(m);
}

Test(envelope, kindless_envx_is_claimed_by_body, .timeout = 30) {
  /* A Start whose envx was created for src/dst before the body was known. */
  tr_msg_t *m = mk(TR_BODY_NONE);
  struct tr_envx *x = xof(m);
  cr_assert_eq(x->kind, TR_BODY_NONE);
  x->has_src = 1;
  set_uid(&x->src, "me", 1, NULL);
  m->body = TR_BODY_START;
  cr_assert_eq(tr__envx_get(m), x);
  cr_assert_eq(x->kind, TR_BODY_START);
  x->u.start.ns = strdup("n");
  x->u.start.func = strdup("f");
  tr_msg_t *d = roundtrip(m);
  cr_assert_str_eq(d->x_->u.start.func, "f");
  cr_assert_str_eq(d->x_->src.name, "me");
  tr_msg_free(d);
  tr_msg_free(m);
}

Test(envelope, start_names_inline_or_allocated, .timeout = 30) {
  /* Short names live inside the envx, long ones are allocated; either way
   * they encode as the strings, and setting them again frees what the
   * previous set allocated (ASan's leak check). */
  char long_ns[100];
  memset(long_ns, 'n', sizeof long_ns - 1);
  long_ns[sizeof long_ns - 1] = '\0';
  tr_msg_t *m = mk(TR_BODY_START);
  struct tr_envx *x = xof(m);
  cr_assert_eq(tr__envx_set_start(x, "bench", "echo"), 0);
  cr_assert(x->u.start.names_inline);
  cr_assert_str_eq(x->u.start.ns, "bench");
  cr_assert_str_eq(x->u.start.func, "echo");
  cr_assert_eq(tr__envx_set_start(x, long_ns, "f"), 0);
  cr_assert_not(x->u.start.names_inline);
  cr_assert_str_eq(x->u.start.ns, long_ns);
  cr_assert_str_eq(x->u.start.func, "f");
  tr_msg_t *d = roundtrip(m);
  cr_assert_str_eq(d->x_->u.start.ns, long_ns);
  cr_assert_str_eq(d->x_->u.start.func, "f");
  tr_msg_free(d);
  /* Back to short names, then exactly full: 63 bytes of "ns\0func\0"
   * plus one to spare is inline, one more byte is not. */
  cr_assert_eq(tr__envx_set_start(x, "a", "b"), 0);
  cr_assert(x->u.start.names_inline);
  char ns62[63];
  memset(ns62, 'x', sizeof ns62 - 1);
  ns62[sizeof ns62 - 1] = '\0';
  cr_assert_eq(tr__envx_set_start(x, ns62, "f"), 0); /* 62 + 1 + 1 + 1 = 65 */
  cr_assert_not(x->u.start.names_inline);
  ns62[61] = '\0';
  cr_assert_eq(tr__envx_set_start(x, ns62, "f"), 0); /* 61 + 1 + 1 + 1 = 64 */
  cr_assert(x->u.start.names_inline);
  d = roundtrip(m);
  cr_assert_str_eq(d->x_->u.start.ns, ns62);
  cr_assert_str_eq(d->x_->u.start.func, "f");
  tr_msg_free(d);
  tr_msg_free(m);
}

Test(envelope, uid_copy_and_names, .timeout = 30) {
  tr_uid_t a, b;
  memset(&a, 0, sizeof a);
  set_uid(&a, "n", 3, "tcp://x:1");
  cr_assert_eq(tr__uid_copy(&b, &a), 0);
  assert_uid_eq(&a, &b);
  cr_assert_neq(a.name, b.name);
  tr__uid_fini(&a);
  tr__uid_fini(&b);
  cr_assert_null(b.name);
  tr__envx_free(NULL);

  cr_assert_str_eq(tr__body_name(TR_BODY_HELLO), "Hello");
  cr_assert_str_eq(tr__body_name(TR_BODY_SPAWN_SPEC), "SpawnSpec");
  cr_assert_str_eq(tr__body_name(TR_BODY_START_ACK), "StartAck");
  cr_assert_str_eq(tr__body_name(TR_BODY_RETURN), "Return");
  cr_assert_str_eq(tr__body_name(TR_BODY_CANCEL_ACK), "CancelAck");
  cr_assert_str_eq(tr__body_name(TR_BODY_CREDIT), "Credit");
  cr_assert_str_eq(tr__body_name(TR_BODY_NONE), "None");
  cr_assert_str_eq(tr__body_name(TR_BODY__COUNT), "Unknown");
  cr_assert_str_eq(tr__body_name(-1), "Unknown");
  for (int k = 0; k < TR_BODY__COUNT; k++)
    cr_assert_not_null(tr__body_name(k));
}

/* ---- encoder refusals --------------------------------------------------------- */

Test(envelope, encode_refuses_non_protocol_messages, .timeout = 30) {
  uint8_t *p = (uint8_t *)0x1;
  size_t n = 1;
  tr_msg_t *m = mk(TR_BODY_NONE);
  cr_assert_eq(tr__env_encode(m, &p, &n), -TR_EPROTO);
  cr_assert_null(p);
  cr_assert_eq(n, 0);
  cr_assert_eq(tr__env_encoded_size(m), 0);
  m->body = TR_BODY__COUNT;
  cr_assert_eq(tr__env_encode(m, &p, &n), -TR_EPROTO);
  m->body = 999;
  cr_assert_eq(tr__frame_encode(m, 0, &p, &n), -TR_EPROTO);
  tr_msg_free(m);
}

Test(envelope, encode_refuses_missing_required_fields, .timeout = 30) {
  uint8_t *p = NULL;
  size_t n;

  tr_msg_t *m = mk(TR_BODY_START); /* no ns, no func */
  cr_assert_eq(tr__env_encode(m, &p, &n), -TR_EPROTO);
  xof(m)->u.start.ns = strdup("ns");
  cr_assert_eq(tr__env_encode(m, &p, &n), -TR_EPROTO);
  m->x_->u.start.func = strdup("");
  cr_assert_eq(tr__env_encode(m, &p, &n), -TR_EPROTO);
  tr_msg_free(m);

  m = mk(TR_BODY_SPAWN_SPEC);
  cr_assert_eq(tr__env_encode(m, &p, &n), -TR_EPROTO);
  tr_msg_free(m);

  m = mk(TR_BODY_START_ACK);
  m->u64 = 0;
  cr_assert_eq(tr__env_encode(m, &p, &n), -TR_EPROTO);
  m->u64 = TR_FUNC_CONTEXT + 1;
  cr_assert_eq(tr__env_encode(m, &p, &n), -TR_EPROTO);
  tr_msg_free(m);
  cr_assert_null(p);
}

Test(envelope, encode_refuses_inconsistent_messages, .timeout = 30) {
  uint8_t *p = NULL;
  size_t n;

  /* An envx built for a Start cannot ride on a Return. */
  tr_msg_t *m = mk_start(1, "a");
  m->body = TR_BODY_RETURN;
  cr_assert_eq(tr__env_encode(m, &p, &n), -TR_EINVAL);
  m->body = TR_BODY_START;
  tr_msg_free(m);

  m = mk(TR_BODY_CREDIT);
  m->u64 = (uint64_t)UINT32_MAX + 1;
  cr_assert_eq(tr__env_encode(m, &p, &n), -TR_EINVAL);
  tr_msg_free(m);

  m = mk(TR_BODY_SPAWN_SPEC);
  xof(m)->u.spawn_spec.name = strdup("c");
  m->x_->u.spawn_spec.n_ns = 1;
  m->x_->u.spawn_spec.ns = calloc(1, sizeof(char *)); /* a NULL element */
  cr_assert_eq(tr__env_encode(m, &p, &n), -TR_EINVAL);
  tr_msg_free(m);
  cr_assert_null(p);
}

Test(envelope, frame_encode_over_max, .timeout = 30) {
  tr_msg_t *m = mk(TR_BODY_YIELD);
  cr_assert_eq(tr_buf_new(1000, &m->payload), 0);
  memset(tr_buf_wdata(m->payload), 'p', 1000);
  size_t body = tr__env_encoded_size(m);
  uint8_t *p = NULL;
  size_t n = 0;

  cr_assert_eq(tr__frame_encode(m, body - 1, &p, &n), -TR_EMSGSIZE);
  cr_assert_null(p);
  cr_assert_eq(n, 0);

  cr_assert_eq(tr__frame_encode(m, body, &p, &n), 0, "the limit is inclusive");
  cr_assert_eq(n, body + 4);
  cr_assert_eq(p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24, body);
  free(p);

  /* 16 MiB default: a payload just above it is refused. */
  tr_buf_release(m->payload);
  cr_assert_eq(tr_buf_new(TR_MAX_FRAME_DEFAULT, &m->payload), 0);
  memset(tr_buf_wdata(m->payload), 0, TR_MAX_FRAME_DEFAULT);
  cr_assert_eq(tr__frame_encode(m, 0, &p, &n), -TR_EMSGSIZE);
  cr_assert_null(p);
  tr_msg_free(m);
}

/* ---- decoder: malformed input ------------------------------------------------- */

Test(envelope, decode_empty_and_null, .timeout = 30) {
  cr_assert_eq(decode_rc((const uint8_t *)"", 0), -TR_EPROTO, "no body");
  cr_assert_eq(decode_rc(NULL, 0), -TR_EPROTO);
  cr_assert_eq(decode_rc(NULL, 5), -TR_EINVAL);
}

Test(envelope, decode_unknown_body, .timeout = 30) {
  /* cid = 7, then field 16 (varint 5): a body number this build lacks. */
  static const uint8_t varint_field[] = {0x08, 0x07, 0x80, 0x01, 0x05};
  /* cid = 7, then field 20 as an empty sub-message. */
  static const uint8_t msg_field[] = {0x08, 0x07, 0xa2, 0x01, 0x00};
  /* Only the envelope header: cid and an empty src. */
  static const uint8_t no_body[] = {0x08, 0x07, 0x12, 0x00};
  cr_assert_eq(decode_rc(varint_field, sizeof varint_field), -TR_EPROTO);
  cr_assert_eq(decode_rc(msg_field, sizeof msg_field), -TR_EPROTO);
  cr_assert_eq(decode_rc(no_body, sizeof no_body), -TR_EPROTO);

  /* An unknown field next to a known body is forward-compatible: accepted. */
  static const uint8_t stop_plus_unknown[] = {0x08, 0x07, 0x52, 0x00, 0x80, 0x01, 0x05};
  tr_msg_t *d = NULL;
  cr_assert_eq(tr__env_decode(stop_plus_unknown, sizeof stop_plus_unknown, NULL, &d), 0);
  cr_assert_eq(d->body, TR_BODY_STOP);
  cr_assert_eq(d->cid, 7);
  tr_msg_free(d);
}

Test(envelope, decode_missing_required_fields, .timeout = 30) {
  Tractor__Envelope e = TRACTOR__ENVELOPE__INIT;
  uint8_t uuid[32] = {1, 2, 3};

  /* Start without func, then without ns. */
  Tractor__Start st = TRACTOR__START__INIT;
  st.ns = "ns";
  e.body_case = TRACTOR__ENVELOPE__BODY_START;
  e.start = &st;
  cr_assert_eq(decode_pb(&e), -TR_EPROTO);
  st.ns = "";
  st.func = "f";
  cr_assert_eq(decode_pb(&e), -TR_EPROTO);
  st.ns = "ns";
  cr_assert_eq(decode_pb(&e), 0);

  /* A caller whose uuid is neither empty nor 16 bytes. */
  Tractor__ActorRef ref = TRACTOR__ACTOR_REF__INIT;
  ref.uuid.data = uuid;
  ref.uuid.len = 15;
  st.caller = &ref;
  cr_assert_eq(decode_pb(&e), -TR_EPROTO);
  ref.uuid.len = 17;
  cr_assert_eq(decode_pb(&e), -TR_EPROTO);
  ref.uuid.len = 0;
  cr_assert_eq(decode_pb(&e), 0, "an empty uuid is an unknown one");
  ref.uuid.len = 16;
  cr_assert_eq(decode_pb(&e), 0);
  st.caller = NULL;

  /* Bad uuids in the envelope's src and dst and in an Error's relay path. */
  Tractor__Stop stop = TRACTOR__STOP__INIT;
  e.body_case = TRACTOR__ENVELOPE__BODY_STOP;
  e.stop = &stop;
  ref.uuid.len = 3;
  e.src = &ref;
  cr_assert_eq(decode_pb(&e), -TR_EPROTO);
  e.src = NULL;
  e.dst = &ref;
  cr_assert_eq(decode_pb(&e), -TR_EPROTO);
  e.dst = NULL;

  Tractor__Error er = TRACTOR__ERROR__INIT;
  Tractor__ActorRef good = TRACTOR__ACTOR_REF__INIT;
  Tractor__ActorRef *path[3] = {&good, &good, &ref};
  good.name = "hop";
  er.message = "boom";
  er.n_relay_path = 3;
  er.relay_path = path;
  e.body_case = TRACTOR__ENVELOPE__BODY_ERROR;
  e.error = &er;
  cr_assert_eq(decode_pb(&e), -TR_EPROTO, "partial relay path is freed");
  er.canceller = &ref;
  er.n_relay_path = 0;
  cr_assert_eq(decode_pb(&e), -TR_EPROTO);

  /* Hello must carry a 16-byte uuid. */
  Tractor__Hello h = TRACTOR__HELLO__INIT;
  h.name = "peer";
  e.body_case = TRACTOR__ENVELOPE__BODY_HELLO;
  e.hello = &h;
  cr_assert_eq(decode_pb(&e), -TR_EPROTO);
  h.uuid.data = uuid;
  h.uuid.len = 8;
  cr_assert_eq(decode_pb(&e), -TR_EPROTO);
  h.uuid.len = 16;
  cr_assert_eq(decode_pb(&e), 0);

  /* SpawnSpec must name the child. */
  Tractor__SpawnSpec sp = TRACTOR__SPAWN_SPEC__INIT;
  e.body_case = TRACTOR__ENVELOPE__BODY_SPAWN_SPEC;
  e.spawn_spec = &sp;
  cr_assert_eq(decode_pb(&e), -TR_EPROTO);
  sp.name = "child";
  cr_assert_eq(decode_pb(&e), 0);

  /* StartAck needs a functype we know. */
  Tractor__StartAck ack = TRACTOR__START_ACK__INIT;
  e.body_case = TRACTOR__ENVELOPE__BODY_START_ACK;
  e.start_ack = &ack;
  cr_assert_eq(decode_pb(&e), -TR_EPROTO, "FUNC_TYPE_UNSPECIFIED");
  ack.functype = (Tractor__FuncType)4;
  cr_assert_eq(decode_pb(&e), -TR_EPROTO);
  ack.functype = (Tractor__FuncType)-1;
  cr_assert_eq(decode_pb(&e), -TR_EPROTO);
  ack.functype = TRACTOR__FUNC_TYPE__FUNC_TYPE_STREAM;
  cr_assert_eq(decode_pb(&e), 0);
}

Test(envelope, decode_random_garbage, .timeout = 30) {
  uint64_t s = 0x9e3779b97f4a7c15ull;
  uint8_t buf[96];
  int ok = 0;
  for (int i = 0; i < 5000; i++) {
    size_t n = rng(&s) % sizeof buf;
    for (size_t j = 0; j < n; j++)
      buf[j] = (uint8_t)rng(&s);
    int rc = decode_rc(buf, n);
    cr_assert(rc == 0 || rc == -TR_EPROTO, "input %d: rc %d", i, rc);
    ok += rc == 0;
  }
  /* Most random bytes are not envelopes; the count is only informative. */
  cr_log_info("random garbage: %d of 5000 decoded", ok);
}

Test(envelope, decode_mutated_valid_envelopes, .timeout = 30) {
  /* Random bytes rarely get past the first tag; flipping bytes of real
   * envelopes reaches the nested and repeated fields and the checks after
   * unpacking. */
  tr_msg_t *src[4] = {mk_error(), mk_start(5, "args"), mk(TR_BODY_HELLO), mk_spawn_spec()};
  uint64_t s = 12345;
  for (int k = 0; k < 4; k++) {
    uint8_t *p;
    size_t n;
    cr_assert_eq(tr__env_encode(src[k], &p, &n), 0);
    uint8_t *q = malloc(n);
    for (int i = 0; i < 2000; i++) {
      memcpy(q, p, n);
      int flips = 1 + (int)(rng(&s) % 4);
      for (int f = 0; f < flips; f++)
        q[rng(&s) % n] = (uint8_t)rng(&s);
      size_t len = (i % 4 == 0) ? rng(&s) % (n + 1) : n;
      int rc = decode_rc(q, len);
      cr_assert(rc == 0 || rc == -TR_EPROTO, "rc %d", rc);
    }
    /* Every prefix of a valid envelope is either a valid envelope itself or
     * a protocol error. */
    for (size_t len = 0; len < n; len++) {
      int rc = decode_rc(p, len);
      cr_assert(rc == 0 || rc == -TR_EPROTO);
    }
    free(q);
    free(p);
    tr_msg_free(src[k]);
  }
}

/* ---- frames ------------------------------------------------------------------ */

static uint8_t *frame_of(const tr_msg_t *m, size_t *n) {
  uint8_t *p = NULL;
  cr_assert_eq(tr__frame_encode(m, 0, &p, n), 0);
  return p;
}

Test(frame, one_chunk, .timeout = 30) {
  tr_msg_t *m = mk_start(21, "one chunk");
  size_t n;
  uint8_t *p = frame_of(m, &n);
  tr_frame_dec_t d;
  tr__frame_dec_init(&d, 0);
  size_t used = 0;
  tr_msg_t *out = NULL;
  cr_assert_eq(tr__frame_dec_feed(&d, p, n, &used, NULL, &out), 0);
  cr_assert_eq(used, n);
  cr_assert_not_null(out);
  assert_start(out, 21, "one chunk");
  tr_msg_free(out);

  /* The decoder is ready for the next frame. */
  cr_assert_eq(tr__frame_dec_feed(&d, p, n, &used, NULL, &out), 0);
  cr_assert_not_null(out);
  tr_msg_free(out);
  tr__frame_dec_fini(&d);
  free(p);
  tr_msg_free(m);
}

Test(frame, byte_by_byte, .timeout = 30) {
  tr_msg_t *m = mk_start(22, "byte by byte");
  size_t n;
  uint8_t *p = frame_of(m, &n);
  tr_frame_dec_t d;
  tr__frame_dec_init(&d, 0);
  for (int round = 0; round < 2; round++) {
    for (size_t i = 0; i < n; i++) {
      size_t used = 99;
      tr_msg_t *out = (tr_msg_t *)0x1;
      cr_assert_eq(tr__frame_dec_feed(&d, p + i, 1, &used, NULL, &out), 0);
      cr_assert_eq(used, 1);
      if (i + 1 < n) {
        cr_assert_null(out, "message before its last byte (%zu of %zu)", i, n);
      } else {
        cr_assert_not_null(out);
        assert_start(out, 22, "byte by byte");
        tr_msg_free(out);
      }
    }
  }
  tr__frame_dec_fini(&d);
  free(p);
  tr_msg_free(m);
}

Test(frame, two_frames_in_one_chunk, .timeout = 30) {
  tr_msg_t *a = mk_start(31, "first");
  tr_msg_t *b = mk(TR_BODY_CREDIT);
  b->cid = 32;
  b->u64 = 16;
  size_t na, nb;
  uint8_t *pa = frame_of(a, &na), *pb = frame_of(b, &nb);
  uint8_t *both = malloc(na + nb);
  memcpy(both, pa, na);
  memcpy(both + na, pb, nb);

  tr_frame_dec_t d;
  tr__frame_dec_init(&d, 0);
  size_t used;
  tr_msg_t *out;
  cr_assert_eq(tr__frame_dec_feed(&d, both, na + nb, &used, NULL, &out), 0);
  cr_assert_eq(used, na, "stops after the first message");
  assert_start(out, 31, "first");
  tr_msg_free(out);
  cr_assert_eq(tr__frame_dec_feed(&d, both + used, na + nb - used, &used, NULL, &out), 0);
  cr_assert_eq(used, nb);
  cr_assert_eq(out->body, TR_BODY_CREDIT);
  cr_assert_eq(out->cid, 32);
  cr_assert_eq(out->u64, 16);
  tr_msg_free(out);
  cr_assert_eq(tr__frame_dec_feed(&d, both, 0, &used, NULL, &out), 0);
  cr_assert_eq(used, 0);
  cr_assert_null(out);
  tr__frame_dec_fini(&d);
  free(both);
  free(pa);
  free(pb);
  tr_msg_free(a);
  tr_msg_free(b);
}

Test(frame, random_chunking, .timeout = 30) {
  /* Ten frames back to back, fed in random chunk sizes (including ones
   * that straddle the header and two frames). */
  enum { N = 10 };
  uint8_t *stream = NULL;
  size_t total = 0;
  for (int i = 0; i < N; i++) {
    char args[32];
    snprintf(args, sizeof args, "message %d", i);
    tr_msg_t *m = mk_start((uint64_t)i, args);
    size_t n;
    uint8_t *p = frame_of(m, &n);
    stream = realloc(stream, total + n);
    memcpy(stream + total, p, n);
    total += n;
    free(p);
    tr_msg_free(m);
  }
  uint64_t s = 777;
  for (int trial = 0; trial < 50; trial++) {
    tr_frame_dec_t d;
    tr__frame_dec_init(&d, 0);
    size_t off = 0;
    int got = 0;
    while (off < total) {
      size_t chunk = 1 + rng(&s) % 80;
      if (chunk > total - off)
        chunk = total - off;
      size_t pos = 0;
      while (pos < chunk) {
        size_t used;
        tr_msg_t *out;
        cr_assert_eq(tr__frame_dec_feed(&d, stream + off + pos, chunk - pos, &used, NULL, &out), 0);
        pos += used;
        if (out != NULL) {
          char args[32];
          snprintf(args, sizeof args, "message %d", got);
          assert_start(out, (uint64_t)got, args);
          tr_msg_free(out);
          got++;
        }
      }
      off += chunk;
    }
    cr_assert_eq(got, N);
    tr__frame_dec_fini(&d);
  }
  free(stream);
}

Test(frame, every_prefix_needs_more, .timeout = 30) {
  tr_msg_t *m = mk_error();
  size_t n;
  uint8_t *p = frame_of(m, &n);
  for (size_t len = 0; len < n; len++) {
    tr_frame_dec_t d;
    tr__frame_dec_init(&d, 0);
    size_t used = 99;
    tr_msg_t *out = (tr_msg_t *)0x1;
    cr_assert_eq(tr__frame_dec_feed(&d, p, len, &used, NULL, &out), 0);
    cr_assert_eq(used, len);
    cr_assert_null(out, "a message from a %zu-byte prefix of %zu", len, n);
    /* Ending mid-frame frees the partial body (ASan checks the leak). */
    tr__frame_dec_fini(&d);
  }
  free(p);
  tr_msg_free(m);
}

static void assert_poisoned(tr_frame_dec_t *d, int err) {
  static const uint8_t more[] = {1, 0, 0, 0, 0x52};
  size_t used = 99;
  tr_msg_t *out = (tr_msg_t *)0x1;
  cr_assert_eq(tr__frame_dec_feed(d, more, sizeof more, &used, NULL, &out), err);
  cr_assert_eq(used, 0);
  cr_assert_null(out);
}

Test(frame, oversized_length_refused_from_the_header, .timeout = 30) {
  static const uint8_t hdr[] = {0xff, 0xff, 0xff, 0xff};
  tr_frame_dec_t d;
  size_t used;
  tr_msg_t *out;

  /* Only the header is fed: the error cannot come from a failed allocation
   * of 4 GiB or from the body, only from the check. */
  tr__frame_dec_init(&d, 0);
  cr_assert_eq(tr__frame_dec_feed(&d, hdr, 4, &used, NULL, &out), -TR_EMSGSIZE);
  cr_assert_null(out);
  cr_assert_null(d.body, "nothing allocated");
  assert_poisoned(&d, -TR_EMSGSIZE);
  tr__frame_dec_fini(&d);

  /* Just above the default limit, split across feeds. */
  const uint32_t over = TR_MAX_FRAME_DEFAULT + 1;
  const uint8_t h2[] = {(uint8_t)over, (uint8_t)(over >> 8), (uint8_t)(over >> 16),
                        (uint8_t)(over >> 24)};
  tr__frame_dec_init(&d, 0);
  cr_assert_eq(tr__frame_dec_feed(&d, h2, 2, &used, NULL, &out), 0);
  cr_assert_eq(tr__frame_dec_feed(&d, h2 + 2, 2, &used, NULL, &out), -TR_EMSGSIZE);
  tr__frame_dec_fini(&d);

  /* A custom limit is inclusive. */
  static const uint8_t h10[] = {10, 0, 0, 0}, h11[] = {11, 0, 0, 0};
  tr__frame_dec_init(&d, 10);
  cr_assert_eq(tr__frame_dec_feed(&d, h10, 4, &used, NULL, &out), 0);
  cr_assert_null(out);
  tr__frame_dec_fini(&d);
  tr__frame_dec_init(&d, 10);
  cr_assert_eq(tr__frame_dec_feed(&d, h11, 4, &used, NULL, &out), -TR_EMSGSIZE);
  tr__frame_dec_fini(&d);
}

Test(frame, zero_length_is_a_protocol_error, .timeout = 30) {
  static const uint8_t zero[] = {0, 0, 0, 0, 0x08, 0x01};
  tr_frame_dec_t d;
  size_t used;
  tr_msg_t *out;
  tr__frame_dec_init(&d, 0);
  cr_assert_eq(tr__frame_dec_feed(&d, zero, sizeof zero, &used, NULL, &out), -TR_EPROTO);
  cr_assert_null(out);
  assert_poisoned(&d, -TR_EPROTO);
  tr__frame_dec_fini(&d);
}

Test(frame, bad_body_poisons, .timeout = 30) {
  /* A well-framed body without an Envelope body, whole and in pieces. */
  static const uint8_t bad[] = {2, 0, 0, 0, 0x08, 0x01};
  for (int split = 0; split < 2; split++) {
    tr_frame_dec_t d;
    size_t used;
    tr_msg_t *out;
    tr__frame_dec_init(&d, 0);
    if (split) {
      cr_assert_eq(tr__frame_dec_feed(&d, bad, 5, &used, NULL, &out), 0);
      cr_assert_eq(tr__frame_dec_feed(&d, bad + 5, 1, &used, NULL, &out), -TR_EPROTO);
    } else {
      cr_assert_eq(tr__frame_dec_feed(&d, bad, sizeof bad, &used, NULL, &out), -TR_EPROTO);
    }
    cr_assert_null(out);
    assert_poisoned(&d, -TR_EPROTO);
    tr__frame_dec_fini(&d);
  }
}

Test(frame, random_streams_never_crash, .timeout = 30) {
  uint64_t s = 4242;
  uint8_t buf[128];
  for (int i = 0; i < 3000; i++) {
    tr_frame_dec_t d;
    tr__frame_dec_init(&d, 64);
    size_t n = rng(&s) % sizeof buf;
    for (size_t j = 0; j < n; j++)
      buf[j] = (uint8_t)rng(&s);
    /* Small lengths make real bodies likely. */
    if (n >= 4 && (i & 1)) {
      buf[0] = (uint8_t)(rng(&s) % 70);
      buf[1] = buf[2] = buf[3] = 0;
    }
    size_t off = 0;
    while (off < n) {
      size_t used;
      tr_msg_t *out;
      int rc = tr__frame_dec_feed(&d, buf + off, n - off, &used, NULL, &out);
      if (rc != 0) {
        cr_assert(rc == -TR_EPROTO || rc == -TR_EMSGSIZE, "rc %d", rc);
        break;
      }
      off += used;
      tr_msg_free(out);
    }
    tr__frame_dec_fini(&d);
  }
}

/* ---- the hand-written path of the hot bodies against protobuf-c --------------- */

static const int hot_bodies[] = {TR_BODY_START,  TR_BODY_START_ACK, TR_BODY_STARTED,
                                 TR_BODY_YIELD,  TR_BODY_STOP,      TR_BODY_RETURN,
                                 TR_BODY_CANCEL, TR_BODY_CANCEL_ACK, TR_BODY_CREDIT};
#define N_HOT (int)(sizeof hot_bodies / sizeof hot_bodies[0])

/* A value whose varint takes 1 to 10 bytes, 0 often. */
static uint64_t rnd_varint(uint64_t *s) {
  switch (rng(s) % 5) {
  case 0:
    return 0;
  case 1:
    return rng(s) % 128;
  default:
    return rng(s) >> (rng(s) % 64);
  }
}

/* NULL, "", or a name of 1-200 bytes (lengths past 127 need 2 length bytes). */
static char *rnd_str(uint64_t *s) {
  switch (rng(s) % 4) {
  case 0:
    return NULL;
  case 1:
    return strdup("");
  default: {
    size_t n = 1 + rng(s) % (rng(s) % 2 ? 12 : 200);
    char *c = malloc(n + 1);
    for (size_t i = 0; i < n; i++)
      c[i] = (char)('a' + rng(s) % 26);
    c[n] = '\0';
    return c;
  }
  }
}

static void rnd_uid(uint64_t *s, tr_uid_t *u) {
  u->name = rnd_str(s);
  u->addr = rnd_str(s);
  for (int i = 0; i < TR_UUID_LEN; i++)
    u->uuid[i] = rng(s) % 3 ? (uint8_t)rng(s) : 0;
}

/* A random valid message of a hot body. */
static tr_msg_t *rnd_hot(uint64_t *s) {
  int body = hot_bodies[rng(s) % N_HOT];
  tr_msg_t *m = mk(body);
  m->cid = rnd_varint(s);
  if (rng(s) % 3 || body == TR_BODY_START || body == TR_BODY_CANCEL ||
      body == TR_BODY_CANCEL_ACK) {
    struct tr_envx *x = xof(m);
    if ((x->has_src = rng(s) % 2))
      rnd_uid(s, &x->src);
    if ((x->has_dst = rng(s) % 2))
      rnd_uid(s, &x->dst);
  }
  if (body == TR_BODY_START || body == TR_BODY_STARTED || body == TR_BODY_YIELD ||
      body == TR_BODY_RETURN) {
    size_t n = rng(s) % 4 == 0 ? 0 : rng(s) % (rng(s) % 8 ? 100 : 20000);
    if (n) {
      uint8_t *d = malloc(n);
      for (size_t i = 0; i < n; i++)
        d[i] = (uint8_t)rng(s);
      cr_assert_eq(tr_buf_from(d, n, &m->payload), 0);
      free(d);
    }
  }
  struct tr_envx *x = m->x_;
  switch (body) {
  case TR_BODY_START: {
    char *ns = rnd_str(s), *fn = rnd_str(s);
    cr_assert_eq(tr__envx_set_start(x, ns && *ns ? ns : "ns", fn && *fn ? fn : "f"), 0);
    free(ns);
    free(fn);
    m->u64 = (rnd_varint(s) & UINT32_MAX) | (rng(s) % 2) << 32;
    if ((x->u.start.has_caller = rng(s) % 2))
      rnd_uid(s, &x->u.start.caller);
    break;
  }
  case TR_BODY_START_ACK:
    m->u64 = TR_FUNC_FN + rng(s) % 3;
    break;
  case TR_BODY_CREDIT:
    m->u64 = rng(s) % 3 ? rng(s) % 1000 : rnd_varint(s) & UINT32_MAX;
    break;
  case TR_BODY_CANCEL:
  case TR_BODY_CANCEL_ACK:
    m->u64 = rnd_varint(s);
    x->u.cancel.whole_actor = rng(s) % 2;
    if (body == TR_BODY_CANCEL_ACK)
      x->u.cancel.acknowledged = rng(s) % 2;
    break;
  }
  return m;
}

static uint8_t *room_malloc(void *ctx, size_t n) { return *(uint8_t **)ctx = malloc(n); }

/* m as a frame with route rt (tr__frame_encode_with), malloc'd. */
static uint8_t *frame_with(const tr_msg_t *m, const tr_route_t *rt, size_t *n) {
  uint8_t *p = NULL;
  cr_assert_eq(tr__frame_encode_with(m, rt, 0, room_malloc, &p, n), 0);
  return p;
}

/* Decodes p with both decoders, with and without a route: the same verdict,
 * messages that protobuf-c encodes to the same bytes, and with a route the
 * same route, and frames of the same bytes as without one.  Returns the
 * verdict. */
static int assert_decoders_agree(const uint8_t *p, size_t n) {
  tr_msg_t *a = NULL, *b = NULL, *ra_m = NULL, *rb_m = NULL;
  tr_route_t rta, rtb;
  int ra = tr__env_decode(p, n, NULL, &a), rb = tr__env_decode_pb(p, n, NULL, &b);
  int rra = tr__env_decode(p, n, &rta, &ra_m), rrb = tr__env_decode_pb(p, n, &rtb, &rb_m);
  cr_assert_eq(ra, rb, "the decoders disagree: %d and %d on %zu bytes", ra, rb, n);
  cr_assert(rra == ra && rrb == ra, "a route changes the verdict: %d, %d and %d", ra, rra, rrb);
  if (ra == 0) {
    uint8_t *ea, *eb;
    size_t la, lb;
    cr_assert_eq(tr__env_encode_pb(a, &ea, &la), 0);
    cr_assert_eq(tr__env_encode_pb(b, &eb, &lb), 0);
    cr_assert(la == lb && memcmp(ea, eb, la) == 0, "the decoders read different messages");
    cr_assert_eq((a->x_ != NULL), (b->x_ != NULL));
    free(ea);
    free(eb);
    /* With routes: the same uuids, and the same frame as without. */
    cr_assert(rta.has_src == rtb.has_src && rta.has_dst == rtb.has_dst);
    cr_assert(!rta.has_src || memcmp(rta.src, rtb.src, TR_UUID_LEN) == 0);
    cr_assert(!rta.has_dst || memcmp(rta.dst, rtb.dst, TR_UUID_LEN) == 0);
    size_t lf, lfa, lfb;
    uint8_t *f = frame_with(a, NULL, &lf), *fa = frame_with(ra_m, &rta, &lfa),
            *fb = frame_with(rb_m, &rtb, &lfb);
    cr_assert(lf == lfa && memcmp(f, fa, lf) == 0, "a routed decode encodes differently");
    cr_assert(lf == lfb && memcmp(f, fb, lf) == 0, "a routed decode encodes differently (pb)");
    free(f);
    free(fa);
    free(fb);
    tr_msg_free(a);
    tr_msg_free(b);
    tr_msg_free(ra_m);
    tr_msg_free(rb_m);
  }
  return ra;
}

Test(envelope, hot_bodies_encode_as_protobuf_c_does, .timeout = 60) {
  uint64_t s = 0x5eed;
  for (int i = 0; i < 20000; i++) {
    tr_msg_t *m = rnd_hot(&s);
    uint8_t *fast, *pb;
    size_t lf, lp;
    cr_assert_eq(tr__env_encode(m, &fast, &lf), 0);
    cr_assert_eq(tr__env_encode_pb(m, &pb, &lp), 0);
    cr_assert(lf == lp && memcmp(fast, pb, lf) == 0, "message %d (%s): %zu bytes, protobuf-c %zu",
              i, tr__body_name(m->body), lf, lp);
    cr_assert_eq(tr__env_encoded_size(m), lf);
    /* The fast decoder takes what it wrote, as protobuf-c reads it. */
    tr_msg_t *d = NULL;
    cr_assert_eq(tr__env_decode(fast, lf, NULL, &d), 0);
    cr_assert_eq(d->body, m->body);
    cr_assert_eq(d->cid, m->cid);
    cr_assert_eq(d->u64, m->u64);
    cr_assert_eq(tr_buf_len(d->payload), tr_buf_len(m->payload));
    assert_decoders_agree(fast, lf);
    tr_msg_free(d);
    free(fast);
    free(pb);
    tr_msg_free(m);
  }
}

Test(envelope, hot_bodies_check_as_protobuf_c_path_does, .timeout = 30) {
  /* The refusals of the encoder are the same on both paths. */
  int cases[][2] = {{TR_BODY_START_ACK, 0}, {TR_BODY_START_ACK, 4}, {TR_BODY_CREDIT, -1},
                    {TR_BODY_START, 0}};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    tr_msg_t *m = mk(cases[i][0]);
    m->u64 = cases[i][1] == -1 ? (uint64_t)UINT32_MAX + 1 : (uint64_t)cases[i][1];
    uint8_t *a = (uint8_t *)0x1, *b = (uint8_t *)0x1;
    size_t la = 1, lb = 1;
    int ra = tr__env_encode(m, &a, &la), rb = tr__env_encode_pb(m, &b, &lb);
    cr_assert_neq(ra, 0);
    cr_assert_eq(ra, rb, "case %zu: %d and %d", i, ra, rb);
    cr_assert(a == NULL && b == NULL && la == 0 && lb == 0);
    tr_msg_free(m);
  }
  /* An envx of another kind. */
  tr_msg_t *m = mk(TR_BODY_YIELD);
  xof(m)->kind = TR_BODY_START;
  uint8_t *a;
  size_t la;
  cr_assert_eq(tr__env_encode(m, &a, &la), -TR_EINVAL);
  cr_assert_eq(tr__env_encode_pb(m, &a, &la), -TR_EINVAL);
  tr_msg_free(m);
}

Test(envelope, decoders_agree_on_mutated_and_merged_input, .timeout = 120) {
  /* Byte flips, truncations, insertions and two envelopes back to back
   * (valid protobuf: fields seen twice, merged or last-wins, which the
   * fast decoder leaves to protobuf-c). */
  uint64_t s = 0xfeed;
  int decoded = 0, total = 0;
  uint8_t *q = malloc(1 << 16);
  for (int i = 0; i < 4000; i++) {
    tr_msg_t *m = rnd_hot(&s), *m2 = rnd_hot(&s);
    uint8_t *p, *p2;
    size_t n, n2;
    cr_assert_eq(tr__env_encode(m, &p, &n), 0);
    cr_assert_eq(tr__env_encode(m2, &p2, &n2), 0);
    if (n + n2 + 8 <= (1 << 16)) {
      memcpy(q, p, n);
      memcpy(q + n, p2, n2);
      decoded += assert_decoders_agree(q, n + n2) == 0;
      total++;
    }
    for (int k = 0; k < 8; k++) {
      size_t len = n;
      memcpy(q, p, n);
      switch (rng(&s) % 3) {
      case 0: /* flips */
        for (int f = 1 + (int)(rng(&s) % 3); f > 0 && n; f--)
          q[rng(&s) % n] = (uint8_t)(rng(&s) % 4 ? rng(&s) : rng(&s) % 2 ? 0x80 : 0);
        break;
      case 1: /* truncation */
        len = n ? rng(&s) % n : 0;
        break;
      default: { /* a byte inserted */
        size_t at = n ? rng(&s) % n : 0;
        memmove(q + at + 1, q + at, n - at);
        q[at] = (uint8_t)rng(&s);
        len = n + 1;
      }
      }
      decoded += assert_decoders_agree(q, len) == 0;
      total++;
    }
    free(p);
    free(p2);
    tr_msg_free(m);
    tr_msg_free(m2);
  }
  free(q);
  cr_log_info("mutated and merged: %d of %d decoded", decoded, total);
}

/* Builds an envelope by hand, byte by byte, for the edge cases below. */
typedef struct bb {
  uint8_t b[256];
  size_t n;
} bb_t;
static void bb_v(bb_t *b, uint64_t v) {
  while (v >= 0x80) {
    b->b[b->n++] = (uint8_t)(v | 0x80);
    v >>= 7;
  }
  b->b[b->n++] = (uint8_t)v;
}
static void bb_varint(bb_t *b, unsigned f, uint64_t v) {
  bb_v(b, f << 3);
  bb_v(b, v);
}
static void bb_bytes(bb_t *b, unsigned f, const void *d, size_t n) {
  bb_v(b, f << 3 | 2);
  bb_v(b, n);
  memcpy(b->b + b->n, d, n);
  b->n += n;
}
/* Envelope field f holding the message in inner. */
static void bb_msg(bb_t *b, unsigned f, const bb_t *inner) { bb_bytes(b, f, inner->b, inner->n); }

Test(envelope, decoders_agree_on_non_canonical_values, .timeout = 30) {
  /* Each case is valid protobuf or not, but outside the canonical form the
   * hand-written decoder takes, so protobuf-c decides; both must agree. */
  static const uint8_t uuid5[5] = {1, 2, 3, 4, 5}, nul_name[3] = {'a', 0, 'b'};
  bb_t body, ref, env;
  int n_ok = 0;
  for (int c = 0; c < 16; c++) {
    memset(&body, 0, sizeof body);
    memset(&ref, 0, sizeof ref);
    memset(&env, 0, sizeof env);
    unsigned bodyf = 9; /* Yield */
    switch (c) {
    case 0: /* Start with overrun_error 2 (a bool of 2) */
      bodyf = 6;
      bb_bytes(&body, 1, "n", 1);
      bb_bytes(&body, 2, "f", 1);
      bb_varint(&body, 6, 2);
      break;
    case 1: /* Start with a window above 32 bits */
      bodyf = 6;
      bb_bytes(&body, 1, "n", 1);
      bb_bytes(&body, 2, "f", 1);
      bb_varint(&body, 5, 1ull << 33);
      break;
    case 2: /* Cancel whole_actor 7 */
      bodyf = 13;
      bb_varint(&body, 2, 7);
      break;
    case 3: /* Credit above 32 bits */
      bodyf = 15;
      bb_varint(&body, 1, 1ull << 40);
      break;
    case 4: /* StartAck functype 7 */
      bodyf = 7;
      bb_varint(&body, 1, 7);
      break;
    case 5: /* StartAck without a functype */
      bodyf = 7;
      break;
    case 6: /* a uuid of 5 bytes */
      bb_bytes(&ref, 2, uuid5, sizeof uuid5);
      bb_msg(&env, 2, &ref);
      break;
    case 7: /* a name with a NUL inside */
      bb_bytes(&ref, 1, nul_name, sizeof nul_name);
      bb_msg(&env, 3, &ref);
      break;
    case 8: /* cid twice (last wins) */
      bb_varint(&env, 1, 5);
      bb_varint(&env, 1, 6);
      break;
    case 9: /* an unknown field */
      bb_varint(&env, 20, 1);
      break;
    case 10: /* cid with the wrong wire type */
      bb_bytes(&env, 1, "x", 1);
      break;
    case 11: /* a payload as a varint */
      bb_varint(&body, 1, 3);
      break;
    case 12: /* Stop with a field */
      bodyf = 10;
      bb_varint(&body, 1, 1);
      break;
    case 13: /* Start without a func */
      bodyf = 6;
      bb_bytes(&body, 1, "n", 1);
      break;
    case 14: /* a field of a fixed64 wire type */
      bb_v(&env, 1 << 3 | 1);
      for (int i = 0; i < 8; i++)
        bb_v(&env, 0);
      break;
    case 15: /* an overlong varint (11 bytes) */
      for (int i = 0; i < 10; i++)
        env.b[env.n++] = 0x80;
      env.b[env.n++] = 0;
      break;
    }
    if (c != 15)
      bb_msg(&env, bodyf, &body);
    n_ok += assert_decoders_agree(env.b, env.n) == 0;
  }
  /* Several of them are valid protobuf (the bool, the window truncated to
   * 32 bits, the cid twice, the unknown field): not all refused. */
  cr_assert_gt(n_ok, 3);
}

/* A channel's route (tr_route_t): the envelope's src and dst kept beside
 * the message.  Refs of a uuid alone travel there and need no envx; a
 * named ref is the envx's, and its uuid is in the route too; encoding
 * writes the route where the envx has no ref, so the bytes are the same
 * either way, on both encoder paths (hot Yield, protobuf-c Error). */
Test(envelope, route_carries_uuid_refs_without_an_envx, .timeout = 30) {
  const int bodies[] = {TR_BODY_YIELD, TR_BODY_ERROR};
  for (size_t b = 0; b < sizeof bodies / sizeof bodies[0]; b++) {
    /* The reference: the refs in an envx, the src named. */
    tr_msg_t *m = mk(bodies[b]);
    m->cid = 77;
    set_payload(m, "item");
    struct tr_envx *x = xof(m);
    x->has_src = x->has_dst = 1;
    set_uid(&x->src, NULL, 1, NULL);
    set_uid(&x->dst, NULL, 100, NULL);
    if (bodies[b] == TR_BODY_ERROR) {
      x->u.error.code = 5;
      x->u.error.message = strdup("boom");
    }
    size_t n0;
    uint8_t *f0 = frame_with(m, NULL, &n0);

    /* Decoded with a route: both refs there, none in an envx (a Yield
     * then has no envx at all). */
    tr_frame_dec_t d;
    tr__frame_dec_init(&d, 0);
    size_t used;
    tr_msg_t *got = NULL;
    tr_route_t rt;
    cr_assert_eq(tr__frame_dec_feed(&d, f0, n0, &used, &rt, &got), 0);
    cr_assert_not_null(got);
    cr_assert(rt.has_src && rt.has_dst);
    cr_assert_eq(memcmp(rt.src, x->src.uuid, TR_UUID_LEN), 0);
    cr_assert_eq(memcmp(rt.dst, x->dst.uuid, TR_UUID_LEN), 0);
    if (bodies[b] == TR_BODY_YIELD)
      cr_assert_null(got->x_, "a Yield of uuid refs needs no envx");
    else
      cr_assert(!got->x_->has_src && !got->x_->has_dst);
    /* Encoded with that route: the same frame. */
    size_t n1;
    uint8_t *f1 = frame_with(got, &rt, &n1);
    cr_assert(n1 == n0 && memcmp(f1, f0, n0) == 0);
    /* The envx's ref wins over the route's. */
    tr_route_t other = rt;
    other.src[0] ^= 0xff;
    free(f1);
    f1 = frame_with(m, &other, &n1);
    cr_assert(n1 == n0 && memcmp(f1, f0, n0) == 0, "the envx's src is written, not the route's");
    free(f1);
    tr_msg_free(got);

    /* A named src: in the envx (with its name) and in the route. */
    x->src.name = strdup("alice");
    free(f0);
    f0 = frame_with(m, NULL, &n0);
    cr_assert_eq(tr__frame_dec_feed(&d, f0, n0, &used, &rt, &got), 0);
    cr_assert(rt.has_src && rt.has_dst);
    cr_assert_eq(memcmp(rt.src, x->src.uuid, TR_UUID_LEN), 0);
    cr_assert(got->x_ && got->x_->has_src && !got->x_->has_dst);
    cr_assert_str_eq(got->x_->src.name, "alice");
    f1 = frame_with(got, &rt, &n1);
    cr_assert(n1 == n0 && memcmp(f1, f0, n0) == 0);
    free(f1);
    tr_msg_free(got);

    /* Without a route the decoder keeps both in the envx, as before. */
    cr_assert_eq(tr__frame_dec_feed(&d, f0, n0, &used, NULL, &got), 0);
    cr_assert(got->x_ && got->x_->has_src && got->x_->has_dst);
    cr_assert_eq(memcmp(got->x_->dst.uuid, x->dst.uuid, TR_UUID_LEN), 0);
    tr_msg_free(got);
    tr__frame_dec_fini(&d);
    free(f0);
    tr_msg_free(m);
  }
}
