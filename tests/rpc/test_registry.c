/*
 * The export registry: registration through the TR_EXPORT_* macros written
 * below (several namespaces, all three kinds, typed and untyped, two on one
 * line, a duplicate), lookup hits and misses, namespace exposure, kind
 * checks, qualified-name splitting, typed payload checks, refused exports,
 * and registration racing with lookups (for TSan).
 *
 * Criterion runs each test in a fresh process, so the exports below are
 * registered anew for every test and what one test registers at run time
 * is not seen by the others.
 */
#include <criterion/criterion.h>

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "runtime/rpc/registry.h"
#include "schema/tractor.pb-c.h"
#include "tractor/buf.h"
#include "tractor/errors.h"
#include "tractor/portal.h"

_Static_assert(TR_FUNC_FN == 1 && TR_FUNC_STREAM == 2 && TR_FUNC_CONTEXT == 3,
               "function kinds are wire values");

/* ---- exported functions -------------------------------------------------- */

static int add(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)ctx;
  uint64_t v = 0;
  int rc = tr_buf_to_u64(args, &v);
  if (rc < 0)
    return rc;
  return tr_buf_from_u64(v + 1, result);
}

static int noop(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)ctx, (void)args, (void)result;
  return 0;
}

static int other(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)ctx, (void)args, (void)result;
  return -TR_EAPP;
}

TR_EXPORT_FN("test.calc", "add", add)
TR_EXPORT_STREAM("test.calc", "count", noop)
TR_EXPORT_CONTEXT("test.ctx", "pingpong", noop)
TR_EXPORT_FN("test.ctx", "add", other) /* same name, other namespace: distinct */
TR_EXPORT_FN("test.deep.ns", "leaf", noop)
TR_EXPORT_FN_TYPED("test.typed", "echo_ref", noop, &tractor__actor_ref__descriptor,
                   &tractor__actor_ref__descriptor)
TR_EXPORT_STREAM_TYPED("test.typed", "credits", noop, NULL, &tractor__credit__descriptor)
TR_EXPORT_CONTEXT_TYPED("test.typed", "session", noop, &tractor__start__descriptor,
                        &tractor__yield__descriptor, &tractor__return__descriptor)
/* Two on one line: the macros must not collide on generated names. */
TR_EXPORT_FN("test.line", "a", noop)
TR_EXPORT_FN("test.line", "b", noop)

    /* The duplicate: one of the two stays in force, the other is refused. */
    static const int dup_line_1 = __LINE__ + 1;
TR_EXPORT_FN("test.dup", "twice", noop)
static const int dup_line_2 = __LINE__ + 1;
TR_EXPORT_FN("test.dup", "twice", other)

/* Exports in force: the 11 above (the duplicate counts once) and the
 * library's own, the registrar's five (transport/registrar.c). */
#define N_EXPORTS (11 + 5)

static const char *last_msg(void) {
  const char *m = tr_error_message(tr_error_last());
  return m ? m : "(no error)";
}

static void assert_msg_has(const char *needle) {
  cr_assert(strstr(last_msg(), needle) != NULL, "message \"%s\" lacks \"%s\"", last_msg(), needle);
}

static const tr__rpc_entry_t *find(const char *ns, const char *func) {
  const tr__rpc_entry_t *e = NULL;
  cr_assert_eq(tr__rpc_lookup(ns, func, &e), 0, "%s.%s: %s", ns, func, last_msg());
  cr_assert_not_null(e);
  return e;
}

/* ---- registration and lookup --------------------------------------------- */

Test(rpc_registry, macros_register_every_kind, .timeout = 30) {
  const tr__rpc_entry_t *e = find("test.calc", "add");
  cr_assert_str_eq(e->ns, "test.calc");
  cr_assert_str_eq(e->name, "add");
  cr_assert_eq(e->kind, TR_FUNC_FN);
  cr_assert_eq(e->fn, add);
  cr_assert_null(e->args_desc);
  cr_assert_null(e->yield_desc);
  cr_assert_null(e->ret_desc);
  cr_assert(strstr(e->file, "test_registry.c") != NULL);
  cr_assert_gt(e->line, 0);

  cr_assert_eq(find("test.calc", "count")->kind, TR_FUNC_STREAM);
  cr_assert_eq(find("test.ctx", "pingpong")->kind, TR_FUNC_CONTEXT);
  cr_assert_eq(find("test.ctx", "add")->fn, other);
  find("test.line", "a");
  find("test.line", "b");

  e = find("test.typed", "session");
  cr_assert_eq(e->kind, TR_FUNC_CONTEXT);
  cr_assert_eq(e->args_desc, &tractor__start__descriptor);
  cr_assert_eq(e->yield_desc, &tractor__yield__descriptor);
  cr_assert_eq(e->ret_desc, &tractor__return__descriptor);
  e = find("test.typed", "credits");
  cr_assert_null(e->args_desc);
  cr_assert_eq(e->yield_desc, &tractor__credit__descriptor);
  cr_assert_null(e->ret_desc);
}

Test(rpc_registry, exported_function_is_callable, .timeout = 30) {
  const tr__rpc_entry_t *e = find("test.calc", "add");
  tr_buf_t *args = NULL, *res = NULL;
  cr_assert_eq(tr_buf_from_u64(41, &args), 0);
  cr_assert_eq(e->fn(NULL, args, &res), 0);
  uint64_t v = 0;
  cr_assert_eq(tr_buf_to_u64(res, &v), 0);
  cr_assert_eq(v, 42);
  tr_buf_release(args);
  tr_buf_release(res);
}

Test(rpc_registry, count_and_iteration_agree, .timeout = 30) {
  cr_assert_eq(tr_rpc_registry_count(), N_EXPORTS);
  size_t n = 0, dups = 0;
  for (const tr_rpc_export_t *e = tr_rpc_registry_next(NULL); e; e = tr_rpc_registry_next(e)) {
    n++;
    if (strcmp(e->ns, "test.dup") == 0)
      dups++;
    /* No (ns, name) appears twice among the exports in force. */
    for (const tr_rpc_export_t *f = tr_rpc_registry_next(e); f; f = tr_rpc_registry_next(f))
      cr_assert(strcmp(e->ns, f->ns) != 0 || strcmp(e->name, f->name) != 0, "%s.%s twice", e->ns,
                e->name);
  }
  cr_assert_eq(n, N_EXPORTS);
  cr_assert_eq(dups, 1);
}

Test(rpc_registry, lookup_miss_names_the_function, .timeout = 30) {
  const tr__rpc_entry_t *e = (const tr__rpc_entry_t *)0x1;
  cr_assert_eq(tr__rpc_lookup("test.calc", "nope", &e), -TR_ENOFUNC);
  cr_assert_null(e);
  cr_assert_eq(tr_error_code(tr_error_last()), -TR_ENOFUNC);
  assert_msg_has("\"test.calc.nope\"");

  /* A namespace is matched whole, never by prefix. */
  cr_assert_eq(tr__rpc_lookup("test", "calc.add", &e), -TR_ENOFUNC);
  cr_assert_eq(tr__rpc_lookup("test.cal", "add", &e), -TR_ENOFUNC);
  cr_assert_eq(tr__rpc_lookup("test.calc.x", "add", &e), -TR_ENOFUNC);
  cr_assert_eq(tr__rpc_lookup(NULL, "add", &e), -TR_EINVAL);
  cr_assert_eq(tr__rpc_lookup("test.calc", NULL, &e), -TR_EINVAL);
  cr_assert_eq(tr__rpc_lookup("test.calc", "add", NULL), -TR_EINVAL);
}

/* ---- exposure and kind ----------------------------------------------------- */

static const char *const enabled[] = {"test.calc", "test.deep.ns", "test.typed"};
#define N_ENABLED (sizeof enabled / sizeof enabled[0])

Test(rpc_registry, check_call_namespace_exposure, .timeout = 30) {
  const tr__rpc_entry_t *e = find("test.ctx", "pingpong");
  cr_assert_eq(tr__rpc_check_call(e, enabled, N_ENABLED, TR_FUNC_CONTEXT), -TR_ENOTEXPOSED);
  cr_assert_eq(tr_error_code(tr_error_last()), -TR_ENOTEXPOSED);
  assert_msg_has("\"test.ctx\"");
  assert_msg_has("\"test.calc\", \"test.deep.ns\", \"test.typed\"");

  /* An actor that enables nothing exposes nothing. */
  cr_assert_eq(tr__rpc_check_call(find("test.calc", "add"), NULL, 0, TR_FUNC_FN), -TR_ENOTEXPOSED);
  assert_msg_has("enabled: none");

  cr_assert_eq(tr__rpc_check_call(find("test.calc", "add"), enabled, N_ENABLED, TR_FUNC_FN), 0);
  /* Kind 0: any kind is acceptable. */
  cr_assert_eq(tr__rpc_check_call(find("test.calc", "count"), enabled, N_ENABLED, 0), 0);
  cr_assert_eq(tr__rpc_check_call(NULL, enabled, N_ENABLED, 0), -TR_EINVAL);
  cr_assert_eq(tr__rpc_check_call(e, NULL, 2, 0), -TR_EINVAL);
}

Test(rpc_registry, check_call_wrong_kind, .timeout = 30) {
  const tr__rpc_entry_t *e = find("test.calc", "count");
  cr_assert_eq(tr__rpc_check_call(e, enabled, N_ENABLED, TR_FUNC_FN), -TR_EFUNCKIND);
  cr_assert_eq(tr_error_code(tr_error_last()), -TR_EFUNCKIND);
  assert_msg_has("test.calc.count is a stream function");
  assert_msg_has("expects a fn function");
  assert_msg_has("use tr_portal_open_stream_from");

  e = find("test.typed", "session");
  cr_assert_eq(tr__rpc_check_call(e, enabled, N_ENABLED, TR_FUNC_STREAM), -TR_EFUNCKIND);
  assert_msg_has("use tr_portal_open_context");
  e = find("test.calc", "add");
  cr_assert_eq(tr__rpc_check_call(e, enabled, N_ENABLED, TR_FUNC_CONTEXT), -TR_EFUNCKIND);
  assert_msg_has("use tr_portal_run");
}

Test(rpc_registry, resolve_checks_in_tractor_order, .timeout = 30) {
  const tr__rpc_entry_t *e = (const tr__rpc_entry_t *)0x1;
  /* Namespace first: a namespace that is not enabled is reported as such
   * whether or not the function exists (tractor's ModuleNotExposed). */
  cr_assert_eq(tr__rpc_resolve("test.ctx.pingpong", enabled, N_ENABLED, TR_FUNC_FN, &e),
               -TR_ENOTEXPOSED);
  cr_assert_null(e);
  cr_assert_eq(tr__rpc_resolve("nowhere.f", enabled, N_ENABLED, TR_FUNC_FN, &e), -TR_ENOTEXPOSED);
  assert_msg_has("\"nowhere\"");
  /* Then existence. */
  cr_assert_eq(tr__rpc_resolve("test.calc.nope", enabled, N_ENABLED, TR_FUNC_FN, &e), -TR_ENOFUNC);
  assert_msg_has("\"test.calc.nope\"");
  /* Then the kind. */
  cr_assert_eq(tr__rpc_resolve("test.calc.count", enabled, N_ENABLED, TR_FUNC_FN, &e),
               -TR_EFUNCKIND);
  cr_assert_null(e);
  /* And a hit. */
  cr_assert_eq(tr__rpc_resolve("test.calc.count", enabled, N_ENABLED, TR_FUNC_STREAM, &e), 0);
  cr_assert_eq(e, find("test.calc", "count"));

  /* The split form behaves the same. */
  cr_assert_eq(tr__rpc_resolve_parts("test.ctx", "nope", enabled, N_ENABLED, 0, &e),
               -TR_ENOTEXPOSED);
  cr_assert_eq(tr__rpc_resolve_parts("test.calc", "nope", enabled, N_ENABLED, 0, &e), -TR_ENOFUNC);
  cr_assert_eq(tr__rpc_resolve_parts("test.calc", "add", enabled, N_ENABLED, TR_FUNC_FN, &e), 0);
  cr_assert_eq(e->fn, add);
}

Test(rpc_registry, qualified_names_split_at_the_last_dot, .timeout = 30) {
  const tr__rpc_entry_t *e = NULL;
  cr_assert_eq(tr__rpc_resolve("test.deep.ns.leaf", enabled, N_ENABLED, TR_FUNC_FN, &e), 0, "%s",
               last_msg());
  cr_assert_str_eq(e->ns, "test.deep.ns");
  cr_assert_str_eq(e->name, "leaf");

  /* "test.deep" is not enabled even though "test.deep.ns" is. */
  static const char *const only_parent[] = {"test.deep"};
  cr_assert_eq(tr__rpc_resolve("test.deep.ns.leaf", only_parent, 1, TR_FUNC_FN, &e),
               -TR_ENOTEXPOSED);

  const char *bad[] = {"nodot", ".leaf", "test.deep.ns.", ".", ""};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    e = (const tr__rpc_entry_t *)0x1;
    cr_assert_eq(tr__rpc_resolve(bad[i], enabled, N_ENABLED, TR_FUNC_FN, &e), -TR_EINVAL, "%s",
                 bad[i]);
    cr_assert_null(e);
  }
  cr_assert_eq(tr__rpc_resolve(NULL, enabled, N_ENABLED, 0, &e), -TR_EINVAL);
  cr_assert_eq(tr__rpc_resolve("test.calc.add", NULL, 1, 0, &e), -TR_EINVAL);
}

/* ---- typed payloads -------------------------------------------------------- */

static tr_buf_t *actor_ref_payload(void) {
  Tractor__ActorRef ref = TRACTOR__ACTOR_REF__INIT;
  ref.name = "worker";
  ref.addr = "127.0.0.1:1616";
  tr_buf_t *b = NULL;
  cr_assert_eq(tr_buf_pack(&ref.base, &b), 0);
  return b;
}

/* Field 1, length-delimited, length 16, followed by only 3 bytes. */
static const char garbage[] = "\x0a\x10"
                              "abc";

Test(rpc_registry, typed_payload_that_decodes_passes, .timeout = 30) {
  const tr__rpc_entry_t *e = find("test.typed", "echo_ref");
  tr_buf_t *good = actor_ref_payload();
  cr_assert_eq(tr__rpc_check_payload(e, TR__RPC_ARGS, good), 0);
  cr_assert_eq(tr__rpc_check_payload(e, TR__RPC_RETURN, good), 0);
  /* A NULL payload is the empty message, valid for a proto3 type. */
  cr_assert_eq(tr__rpc_check_payload(e, TR__RPC_ARGS, NULL), 0);
  /* A FN export has no yield type: anything passes. */
  tr_buf_t *bad = NULL;
  cr_assert_eq(tr_buf_from(garbage, sizeof garbage - 1, &bad), 0);
  cr_assert_eq(tr__rpc_check_payload(e, TR__RPC_YIELD, bad), 0);
  tr_buf_release(bad);
  tr_buf_release(good);
}

Test(rpc_registry, typed_payload_garbage_is_msgtype_naming_the_type, .timeout = 30) {
  tr_buf_t *bad = NULL;
  cr_assert_eq(tr_buf_from(garbage, sizeof garbage - 1, &bad), 0);

  const tr__rpc_entry_t *e = find("test.typed", "echo_ref");
  cr_assert_eq(tr__rpc_check_payload(e, TR__RPC_ARGS, bad), -TR_EMSGTYPE);
  cr_assert_eq(tr_error_code(tr_error_last()), -TR_EMSGTYPE);
  assert_msg_has("args of test.typed.echo_ref do not decode as tractor.ActorRef");
  cr_assert_eq(tr__rpc_check_payload(e, TR__RPC_RETURN, bad), -TR_EMSGTYPE);
  assert_msg_has("the return value of test.typed.echo_ref does not decode as tractor.ActorRef");

  e = find("test.typed", "credits");
  cr_assert_eq(tr__rpc_check_payload(e, TR__RPC_ARGS, bad), 0); /* untyped args */
  cr_assert_eq(tr__rpc_check_payload(e, TR__RPC_YIELD, bad), -TR_EMSGTYPE);
  assert_msg_has("tractor.Credit");

  /* Untyped exports accept any bytes. */
  e = find("test.calc", "add");
  cr_assert_eq(tr__rpc_check_payload(e, TR__RPC_ARGS, bad), 0);
  cr_assert_eq(tr__rpc_check_payload(e, TR__RPC_RETURN, bad), 0);

  cr_assert_eq(tr__rpc_check_payload(e, 42, bad), -TR_EINVAL);
  cr_assert_eq(tr__rpc_check_payload(NULL, TR__RPC_ARGS, bad), -TR_EINVAL);
  tr_buf_release(bad);
}

/* ---- refused exports ------------------------------------------------------- */

Test(rpc_registry, duplicate_is_refused_and_reported, .timeout = 30) {
  /* One of the two stays in force (constructor order is the linker's). */
  const tr__rpc_entry_t *e = find("test.dup", "twice");
  cr_assert(e->fn == noop || e->fn == other);
  int kept_line = e->fn == noop ? dup_line_1 : dup_line_2;
  int refused_line = e->fn == noop ? dup_line_2 : dup_line_1;

  cr_assert_eq(tr_rpc_registry_check(), -TR_EEXIST);
  cr_assert_eq(tr_error_code(tr_error_last()), -TR_EEXIST);
  assert_msg_has("1 export(s) refused");
  assert_msg_has("\"test.dup.twice\" exported again");
  char where[256];
  snprintf(where, sizeof where, "test_registry.c:%d (first exported at", refused_line);
  assert_msg_has(where);
  snprintf(where, sizeof where, "test_registry.c:%d)", kept_line);
  assert_msg_has(where);
}

Test(rpc_registry, malformed_exports_are_refused, .timeout = 30) {
  static tr_rpc_export_t bad[] = {
      {.ns = "test.bad", .name = "a.b", .fn = noop, .kind = TR_FUNC_FN},
      {.ns = "", .name = "f", .fn = noop, .kind = TR_FUNC_FN},
      {.ns = "test.bad", .name = "", .fn = noop, .kind = TR_FUNC_FN},
      {.ns = NULL, .name = "f", .fn = noop, .kind = TR_FUNC_FN},
      {.ns = "test.bad", .name = NULL, .fn = noop, .kind = TR_FUNC_FN},
      {.ns = "test.bad", .name = "nofn", .fn = NULL, .kind = TR_FUNC_FN},
      {.ns = "test.bad", .name = "kind", .fn = noop, .kind = 4},
      {.ns = "test.bad", .name = "kind0", .fn = noop, .kind = 0},
  };
  size_t n = sizeof bad / sizeof bad[0];
  for (size_t i = 0; i < n; i++)
    tr__rpc_register(&bad[i]);
  tr__rpc_register(NULL); /* ignored */
  cr_assert_eq(tr_rpc_registry_count(), N_EXPORTS);
  const tr__rpc_entry_t *e;
  cr_assert_eq(tr__rpc_lookup("test.bad", "nofn", &e), -TR_ENOFUNC);
  cr_assert_eq(tr__rpc_lookup("test.bad", "kind", &e), -TR_ENOFUNC);

  /* The code is the oldest refusal's (the duplicate, from before main);
   * the message counts them all and describes the first eight, oldest
   * first. */
  cr_assert_eq(tr_rpc_registry_check(), -TR_EEXIST);
  char count[64];
  snprintf(count, sizeof count, "%zu export(s) refused: \"test.dup.twice\" exported again", n + 1);
  assert_msg_has(count);
  assert_msg_has("; malformed export \"test.bad.a.b\" at ?:0 (needs a namespace");
  assert_msg_has("malformed export \"(null).f\"");
  assert_msg_has("malformed export \"test.bad.kind\"");
  assert_msg_has("; ...");
  cr_assert(strstr(last_msg(), "kind0") == NULL, "only eight are described: %s", last_msg());
  for (size_t i = 0; i < n; i++) {
    cr_assert_neq(bad[i].refused_, 0);
    cr_assert_null(bad[i].dup_of_);
  }
}

/* ---- concurrency ----------------------------------------------------------- */

#define RACE_THREADS 4
#define RACE_PER_THREAD 64

static tr_rpc_export_t race_entries[RACE_THREADS][RACE_PER_THREAD];
static char race_names[RACE_THREADS][RACE_PER_THREAD][16];
/* Every thread also registers its own copy of one shared (ns, name). */
static tr_rpc_export_t race_same[RACE_THREADS];

static void *race_register(void *arg) {
  size_t t = (size_t)(uintptr_t)arg;
  for (size_t i = 0; i < RACE_PER_THREAD; i++) {
    tr__rpc_register(&race_entries[t][i]);
    if (i == RACE_PER_THREAD / 2)
      tr__rpc_register(&race_same[t]);
  }
  return NULL;
}

static void *race_lookup(void *arg) {
  (void)arg;
  for (int round = 0; round < 200; round++) {
    const tr__rpc_entry_t *e = NULL;
    cr_assert_eq(tr__rpc_lookup("test.calc", "add", &e), 0);
    cr_assert_eq(e->fn, add);
    /* Whatever is visible is fully initialised. */
    for (const tr_rpc_export_t *x = tr_rpc_registry_next(NULL); x; x = tr_rpc_registry_next(x))
      cr_assert(x->fn != NULL && x->ns != NULL && x->name != NULL);
    (void)tr_rpc_registry_count();
  }
  return NULL;
}

Test(rpc_registry, registration_races_with_lookups, .timeout = 60) {
  for (size_t t = 0; t < RACE_THREADS; t++) {
    for (size_t i = 0; i < RACE_PER_THREAD; i++) {
      snprintf(race_names[t][i], sizeof race_names[t][i], "f%zu_%zu", t, i);
      race_entries[t][i] = (tr_rpc_export_t){
          .ns = "test.race", .name = race_names[t][i], .fn = noop, .kind = TR_FUNC_STREAM};
    }
    race_same[t] =
        (tr_rpc_export_t){.ns = "test.race", .name = "same", .fn = noop, .kind = TR_FUNC_FN};
  }
  pthread_t reg[RACE_THREADS], look[2];
  for (size_t i = 0; i < 2; i++)
    cr_assert_eq(pthread_create(&look[i], NULL, race_lookup, NULL), 0);
  for (size_t t = 0; t < RACE_THREADS; t++)
    cr_assert_eq(pthread_create(&reg[t], NULL, race_register, (void *)(uintptr_t)t), 0);
  for (size_t t = 0; t < RACE_THREADS; t++)
    pthread_join(reg[t], NULL);
  for (size_t i = 0; i < 2; i++)
    pthread_join(look[i], NULL);

  cr_assert_eq(tr_rpc_registry_count(), N_EXPORTS + RACE_THREADS * RACE_PER_THREAD + 1);
  for (size_t t = 0; t < RACE_THREADS; t++)
    for (size_t i = 0; i < RACE_PER_THREAD; i++)
      cr_assert_eq(find("test.race", race_names[t][i]), &race_entries[t][i]);
  size_t kept = 0;
  for (size_t t = 0; t < RACE_THREADS; t++)
    kept += race_same[t].refused_ == 0;
  cr_assert_eq(kept, 1, "exactly one copy of test.race.same is in force");
  cr_assert_eq(tr_rpc_registry_check(), -TR_EEXIST);
  char count[64];
  snprintf(count, sizeof count, "%d export(s) refused", 1 + RACE_THREADS - 1);
  assert_msg_has("\"test.race.same\" exported again");
  assert_msg_has(count);
}
