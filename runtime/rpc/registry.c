/*
 * The process-wide table of exported functions (see registry.h and
 * tractor/portal.h).
 *
 * Layout.  Two intrusive singly linked lists of static tr_rpc_export_t,
 * newest first: the exports in force, and the refused ones (duplicates and
 * malformed exports) kept for tr_rpc_registry_check.  Nothing is allocated,
 * so registration works in constructors that run before malloc could be
 * trusted to report anything, and in shared libraries.
 *
 * Concurrency.  The executable's exports register before main, on one
 * thread.  A library opened later with dlopen registers from its
 * constructors while other threads look functions up, so both lists are
 * lock-free: a registration publishes an entry with one compare-and-swap
 * on the head (release), after which the entry is never written again;
 * readers load the head with acquire and follow next_ pointers that were
 * written before the publishing CAS.  Two registrations racing (two
 * dlopens on different threads; glibc serialises constructors under its
 * loader lock, but we do not rely on it) are ordered by the CAS: the loser
 * rescans the list it failed to extend, so a duplicate can never be linked
 * in twice.
 *
 * Cost.  A lookup is a linear walk with string compares.  Programs export
 * tens of functions, and the dialog engine resolves a function once per
 * Start; a hash index built on first use is the upgrade if a program ever
 * exports thousands.  Entries are never removed: unloading a library that
 * exported functions would leave dangling entries, which is why portal.h
 * requires such libraries to stay loaded.
 *
 * Check order, after tractor.  tractor's callee resolves a Start with
 * Actor._get_rpc_func: it first indexes the actor's loaded modules by the
 * namespace (a miss raises ModuleNotExposed, naming the module and how to
 * enable it), then looks the function up in that module (a miss is an
 * AttributeError); both are boxed into an Error for the caller's cid and
 * no task is scheduled.  The kind check is tractor's caller side
 * (Portal.run refuses an async generator with a TypeError before sending
 * anything); in C the caller knows only a name, so the kind comes from
 * this table and is checked last, once the function is known to exist.
 */
#include "tractor/portal.h"

#include "runtime/rpc/registry.h"

#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <protobuf-c/protobuf-c.h>

#include "schema/envelope.h" /* takes enum tr_functype from portal.h */
#include "schema/tractor.pb-c.h"
#include "tractor/errors.h"

_Static_assert((int)TRACTOR__FUNC_TYPE__FUNC_TYPE_FN == TR_FUNC_FN &&
                   (int)TRACTOR__FUNC_TYPE__FUNC_TYPE_STREAM == TR_FUNC_STREAM &&
                   (int)TRACTOR__FUNC_TYPE__FUNC_TYPE_CONTEXT == TR_FUNC_CONTEXT,
               "portal.h and the FuncType of schema/tractor.proto disagree");

/* Why an export was refused (tr_rpc_export_t.refused_). */
enum { REFUSED_NONE = 0, REFUSED_DUPLICATE, REFUSED_MALFORMED };

static tr_rpc_export_t *live_head;    /* exports in force, newest first */
static tr_rpc_export_t *refused_head; /* refused exports, newest first */

/* Loads a list head.  Acquire pairs with the release CAS in push(): the
 * entry it returns, and every entry reachable from it, was fully written
 * before it was published. */
static tr_rpc_export_t *head_load(tr_rpc_export_t **head) {
  return __atomic_load_n(head, __ATOMIC_ACQUIRE);
}

/* ns[0..ns_len) equals the NUL-terminated s. */
static int ns_equal(const char *ns, size_t ns_len, const char *s) {
  return strncmp(ns, s, ns_len) == 0 && s[ns_len] == '\0';
}

static int malformed(const tr_rpc_export_t *e) {
  return e->ns == NULL || e->ns[0] == '\0' || e->name == NULL || e->name[0] == '\0' ||
         strchr(e->name, '.') != NULL || e->fn == NULL ||
         (e->kind != TR_FUNC_FN && e->kind != TR_FUNC_STREAM && e->kind != TR_FUNC_CONTEXT);
}

/* The live export (ns[0..ns_len), func) reachable from first, or NULL. */
static const tr_rpc_export_t *find_from(const tr_rpc_export_t *first, const char *ns, size_t ns_len,
                                        const char *func) {
  for (const tr_rpc_export_t *e = first; e != NULL; e = e->next_)
    if (strcmp(e->name, func) == 0 && ns_equal(ns, ns_len, e->ns))
      return e;
  return NULL;
}

/* Pushes e on a list.  The release CAS pairs with head_load's acquire:
 * e->next_ (and the rest of e, written by the macro's static initialiser
 * or by tr__rpc_register) is visible to any reader that sees e.  On a lost
 * race `seen` is refreshed and e->next_ rewritten before the retry, which
 * is safe because e is not yet reachable by anyone. */
static void push(tr_rpc_export_t **head, tr_rpc_export_t *e) {
  tr_rpc_export_t *seen = head_load(head);
  do {
    e->next_ = seen;
  } while (!__atomic_compare_exchange_n(head, &seen, e, 1, __ATOMIC_RELEASE, __ATOMIC_ACQUIRE));
}

void tr__rpc_register(tr_rpc_export_t *e) {
  if (e == NULL)
    return;
  e->dup_of_ = NULL;
  if (malformed(e)) {
    e->refused_ = REFUSED_MALFORMED;
    push(&refused_head, e);
    return;
  }
  e->refused_ = REFUSED_NONE;
  /* Scan, then publish only if the head is still the one scanned: a
   * registration that slipped in between is rescanned on the next turn
   * (the acquire on failure pairs with that registration's release CAS). */
  tr_rpc_export_t *seen = head_load(&live_head);
  for (;;) {
    const tr_rpc_export_t *dup = find_from(seen, e->ns, strlen(e->ns), e->name);
    if (dup != NULL) {
      e->refused_ = REFUSED_DUPLICATE;
      e->dup_of_ = dup;
      push(&refused_head, e);
      return;
    }
    e->next_ = seen;
    if (__atomic_compare_exchange_n(&live_head, &seen, e, 0, __ATOMIC_RELEASE, __ATOMIC_ACQUIRE))
      return;
  }
}

/* Appends a description of refused export e to buf[*used..len), keeping
 * buf NUL-terminated; a description that does not fit is cut short. */
static void describe_refused(char *buf, size_t len, size_t *used, const tr_rpc_export_t *e) {
  if (*used + 1 >= len)
    return;
  const char *file = e->file ? e->file : "?";
  int w;
  if (e->refused_ == REFUSED_DUPLICATE)
    w = snprintf(buf + *used, len - *used,
                 "%s\"%s.%s\" exported again at %s:%d (first exported at %s:%d)", *used ? "; " : "",
                 e->ns, e->name, file, e->line, e->dup_of_->file ? e->dup_of_->file : "?",
                 e->dup_of_->line);
  else
    w = snprintf(buf + *used, len - *used,
                 "%smalformed export \"%s.%s\" at %s:%d (needs a namespace, a name without "
                 "dots, a function and a kind)",
                 *used ? "; " : "", e->ns ? e->ns : "(null)", e->name ? e->name : "(null)", file,
                 e->line);
  if (w > 0)
    *used = (size_t)w >= len - *used ? len - 1 : *used + (size_t)w;
}

int tr_rpc_registry_check(void) {
  /* One snapshot of the list, walked oldest first.  The list is newest
   * first and singly linked, so each step walks from the head: quadratic,
   * but refusals are programming errors counted on one hand, and only the
   * first few are described. */
  enum { SHOWN = 8 };
  const tr_rpc_export_t *head = head_load(&refused_head);
  size_t n = 0;
  for (const tr_rpc_export_t *e = head; e != NULL; e = e->next_)
    n++;
  if (n == 0)
    return 0;
  char list[1024];
  size_t used = 0;
  list[0] = '\0';
  const tr_rpc_export_t *oldest = NULL;
  for (size_t k = 0; k < n && k < SHOWN; k++) {
    const tr_rpc_export_t *e = head;
    for (size_t i = 0; i < n - 1 - k; i++)
      e = e->next_;
    if (k == 0)
      oldest = e;
    describe_refused(list, sizeof list, &used, e);
  }
  int code = oldest->refused_ == REFUSED_DUPLICATE ? -TR_EEXIST : -TR_EINVAL;
  return TR_ERROR(code, "%zu export(s) refused: %s%s", n, list, n > SHOWN ? "; ..." : "");
}

size_t tr_rpc_registry_count(void) {
  size_t n = 0;
  for (const tr_rpc_export_t *e = head_load(&live_head); e != NULL; e = e->next_)
    n++;
  return n;
}

const tr_rpc_export_t *tr_rpc_registry_next(const tr_rpc_export_t *prev) {
  return prev == NULL ? head_load(&live_head) : prev->next_;
}

const char *tr__rpc_kind_name(int kind) {
  switch (kind) {
  case TR_FUNC_FN:
    return "fn";
  case TR_FUNC_STREAM:
    return "stream";
  case TR_FUNC_CONTEXT:
    return "context";
  default:
    return "unknown";
  }
}

/* The portal call that opens a dialog with a function of this kind. */
static const char *kind_call(int kind) {
  switch (kind) {
  case TR_FUNC_FN:
    return "tr_portal_run";
  case TR_FUNC_STREAM:
    return "tr_portal_open_stream_from";
  case TR_FUNC_CONTEXT:
    return "tr_portal_open_context";
  default:
    return "no portal call";
  }
}

/* "%.*s" takes an int precision; a namespace longer than INT_MAX bytes is
 * printed cut short rather than with a negative (meaning: whole) length. */
static int span_int(size_t len) { return len > INT_MAX ? INT_MAX : (int)len; }

static int lookup_span(const char *ns, size_t ns_len, const char *func,
                       const tr__rpc_entry_t **out) {
  const tr__rpc_entry_t *e = find_from(head_load(&live_head), ns, ns_len, func);
  if (e == NULL)
    return TR_ERROR(-TR_ENOFUNC, "no exported function \"%.*s.%s\"", span_int(ns_len), ns, func);
  *out = e;
  return 0;
}

int tr__rpc_lookup(const char *ns, const char *func, const tr__rpc_entry_t **out) {
  if (out != NULL)
    *out = NULL;
  if (ns == NULL || func == NULL || out == NULL)
    return TR_ERROR(-TR_EINVAL, "tr__rpc_lookup: NULL argument");
  return lookup_span(ns, strlen(ns), func, out);
}

/* Writes the enabled list as `"a", "b"` (or `none`) into buf, cut short
 * with "..." when it does not fit: the message is for a human. */
static void format_enabled(char *buf, size_t len, const char *const *enabled, size_t n) {
  size_t used = 0;
  buf[0] = '\0';
  if (n == 0) {
    snprintf(buf, len, "none");
    return;
  }
  for (size_t i = 0; i < n; i++) {
    int w = snprintf(buf + used, len - used, "%s\"%s\"", i ? ", " : "",
                     enabled[i] ? enabled[i] : "(null)");
    if (w < 0 || (size_t)w >= len - used) {
      /* Truncated: end with "..." in place of the last characters. */
      if (len >= 4)
        memcpy(buf + len - 4, "...", 4);
      return;
    }
    used += (size_t)w;
  }
}

static int ns_enabled(const char *ns, size_t ns_len, const char *const *enabled, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (enabled[i] != NULL && ns_equal(ns, ns_len, enabled[i]))
      return 1;
  return 0;
}

static int not_exposed(const char *ns, size_t ns_len, const char *const *enabled, size_t n) {
  char list[256];
  format_enabled(list, sizeof list, enabled, n);
  return TR_ERROR(-TR_ENOTEXPOSED,
                  "namespace \"%.*s\" is not exposed by this actor (enabled: %s); list it in "
                  "the actor's opts.enable",
                  span_int(ns_len), ns, list);
}

static int check_kind(const tr__rpc_entry_t *e, int expected_kind) {
  if (expected_kind == 0 || expected_kind == e->kind)
    return 0;
  return TR_ERROR(
      -TR_EFUNCKIND, "%s.%s is a %s function but the call expects a %s function; use %s", e->ns,
      e->name, tr__rpc_kind_name(e->kind), tr__rpc_kind_name(expected_kind), kind_call(e->kind));
}

int tr__rpc_check_call(const tr__rpc_entry_t *e, const char *const *enabled, size_t n_enabled,
                       int expected_kind) {
  if (e == NULL || (enabled == NULL && n_enabled > 0))
    return TR_ERROR(-TR_EINVAL, "tr__rpc_check_call: NULL argument");
  if (!ns_enabled(e->ns, strlen(e->ns), enabled, n_enabled))
    return not_exposed(e->ns, strlen(e->ns), enabled, n_enabled);
  return check_kind(e, expected_kind);
}

/* The common body of the resolvers; the namespace is ns[0..ns_len). */
static int resolve_span(const char *ns, size_t ns_len, const char *func, const char *const *enabled,
                        size_t n_enabled, int expected_kind, const tr__rpc_entry_t **out) {
  if (enabled == NULL && n_enabled > 0)
    return TR_ERROR(-TR_EINVAL, "tr__rpc_resolve: NULL enabled list");
  if (!ns_enabled(ns, ns_len, enabled, n_enabled))
    return not_exposed(ns, ns_len, enabled, n_enabled);
  const tr__rpc_entry_t *e = NULL;
  int rc = lookup_span(ns, ns_len, func, &e);
  if (rc < 0)
    return rc;
  rc = check_kind(e, expected_kind);
  if (rc < 0)
    return rc;
  *out = e;
  return 0;
}

int tr__rpc_resolve_parts(const char *ns, const char *func, const char *const *enabled,
                          size_t n_enabled, int expected_kind, const tr__rpc_entry_t **out) {
  if (out != NULL)
    *out = NULL;
  if (ns == NULL || func == NULL || out == NULL)
    return TR_ERROR(-TR_EINVAL, "tr__rpc_resolve_parts: NULL argument");
  return resolve_span(ns, strlen(ns), func, enabled, n_enabled, expected_kind, out);
}

int tr__rpc_resolve(const char *qualified, const char *const *enabled, size_t n_enabled,
                    int expected_kind, const tr__rpc_entry_t **out) {
  if (out != NULL)
    *out = NULL;
  if (qualified == NULL || out == NULL)
    return TR_ERROR(-TR_EINVAL, "tr__rpc_resolve: NULL argument");
  const char *dot = strrchr(qualified, '.');
  if (dot == NULL || dot == qualified || dot[1] == '\0')
    return TR_ERROR(-TR_EINVAL,
                    "\"%s\" is not a qualified function name (expected \"namespace.function\")",
                    qualified);
  return resolve_span(qualified, (size_t)(dot - qualified), dot + 1, enabled, n_enabled,
                      expected_kind, out);
}

int tr__rpc_check_payload(const tr__rpc_entry_t *e, int which, const tr_buf_t *payload) {
  if (e == NULL)
    return TR_ERROR(-TR_EINVAL, "tr__rpc_check_payload: NULL export");
  const ProtobufCMessageDescriptor *desc;
  const char *what;
  switch (which) {
  case TR__RPC_ARGS:
    desc = e->args_desc, what = "args";
    break;
  case TR__RPC_YIELD:
    desc = e->yield_desc, what = "a yielded value";
    break;
  case TR__RPC_RETURN:
    desc = e->ret_desc, what = "the return value";
    break;
  default:
    return TR_ERROR(-TR_EINVAL, "tr__rpc_check_payload: unknown payload %d", which);
  }
  if (desc == NULL)
    return 0;
  ProtobufCMessage *msg = NULL;
  int rc = tr_buf_unpack(payload, desc, &msg);
  if (rc < 0)
    return TR_ERROR(-TR_EMSGTYPE, "%s of %s.%s do%s not decode as %s (%zu bytes)", what, e->ns,
                    e->name, which == TR__RPC_ARGS ? "" : "es", desc->name,
                    payload ? tr_buf_len(payload) : (size_t)0);
  protobuf_c_message_free_unpacked(msg, NULL);
  return 0;
}
