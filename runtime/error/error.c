/*
 * The rich error object (see include/tractor/errors.h and error.h here).
 *
 * Every field is a private heap copy, so an error outlives whatever it was
 * built from and can be moved between tasks and actors.  An allocation
 * failure anywhere while building an error makes the whole error the
 * static out-of-memory one: half an error (a type with no message, a trace
 * missing its raise site) would mislead more than it helps.  Failures while
 * adding to an existing error (a trace hop, a relay hop) leave the error as
 * it was, which is still true, only less detailed.
 *
 * Where the current error lives is decided by the task layer's hook on
 * every access; without a task it is a per-thread slot.  The thread slot
 * is a __thread variable reached only through a noinline function, so a
 * caller that yields cannot keep a cached address of the previous
 * thread's slot (fibers migrate between threads), and a pthread key whose
 * destructor frees the slot's error when the thread exits.
 */
#include "runtime/error/error.h"

#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <tractor/errors.h>

#include "runtime/platform/assert.h"

typedef struct strvec {
  char **v;
  size_t n, cap;
} strvec_t;

struct tr_error {
  int code;
  /* Group nesting below this error: 0 for a plain error, 1 for a group of
   * plain errors.  Bounded by TR__ERROR_GROUP_DEPTH_MAX. */
  unsigned height;
  char *type;
  char *boxed_type;
  /* The type where the error was first raised, kept across relays
   * (tractor's src_type); NULL until boxed. */
  char *src_type;
  char *message;
  /* Actors are named by uid ("name@<32 hex>", tr_actor_uid) where one is
   * known, else by name alone; each field keeps the name (for the name
   * accessors) and the uid as given (for the _uid accessors). */
  char *src, *src_uid;
  char *canceller, *canceller_uid;
  strvec_t relay, relay_uid;
  strvec_t trace;
  /* Hops not kept because the trace was full or out of memory. */
  size_t trace_dropped;
  tr_error_t **members;
  size_t nmembers, members_cap;
};

/* The error of last resort.  Its strings are arrays rather than literals
 * only because the fields are not const; nothing ever writes them. */
static char oom_type[] = "MemoryError";
static char oom_message[] = "out of memory";
static tr_error_t oom_error = {.code = -TR_ENOMEM, .type = oom_type, .message = oom_message};

/* One shared, immutable error per code, for refusals on hot paths that
 * must not allocate (tr__error_quick): the code's type and description,
 * no trace.  The casts drop const from static strings nothing writes. */
static tr_error_t quick_errors[TR_ERRNO_MAX_] = {
#define TR__QUICK(name_, val_, type_, desc_)                                                       \
  [val_] = {.code = -(val_), .type = (char *)(type_), .message = (char *)(desc_)},
    TR_ERRNO_MAP(TR__QUICK)
#undef TR__QUICK
};

/* The shared errors (out-of-memory and quick) are never freed or changed. */
static bool is_static(const tr_error_t *e) {
  uintptr_t p = (uintptr_t)e, lo = (uintptr_t)&quick_errors[0];
  return e == &oom_error || (p >= lo && p < (uintptr_t)&quick_errors[TR_ERRNO_MAX_]);
}

/* ---- allocation ---------------------------------------------------------- */

/* Allocations left before injected failures start; negative: never fail.
 * Per thread so tests running in parallel do not disturb each other. */
static __thread int oom_countdown = -1;

void tr__error_inject_oom(int after) { oom_countdown = after; }

static bool injected_failure(void) {
  if (oom_countdown < 0)
    return false;
  if (oom_countdown == 0)
    return true;
  oom_countdown--;
  return false;
}

static void *xmalloc(size_t n) { return injected_failure() ? NULL : malloc(n); }

static void *xrealloc(void *p, size_t n) { return injected_failure() ? NULL : realloc(p, n); }

static char *xstrdup(const char *s) {
  size_t n = strlen(s) + 1;
  char *d = xmalloc(n);
  if (d != NULL)
    memcpy(d, s, n);
  return d;
}

static char *xvasprintf(const char *fmt, va_list ap) TR__PRINTF(1, 0);

static char *xvasprintf(const char *fmt, va_list ap) {
  va_list ap2;
  va_copy(ap2, ap);
  int n = vsnprintf(NULL, 0, fmt, ap2);
  va_end(ap2);
  if (n < 0)
    return NULL;
  char *s = xmalloc((size_t)n + 1);
  if (s != NULL)
    vsnprintf(s, (size_t)n + 1, fmt, ap);
  return s;
}

static char *xasprintf(const char *fmt, ...) TR__PRINTF(1, 2);

static char *xasprintf(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *s = xvasprintf(fmt, ap);
  va_end(ap);
  return s;
}

static int strvec_push(strvec_t *sv, char *s) {
  if (sv->n == sv->cap) {
    size_t cap = sv->cap ? sv->cap * 2 : 4;
    char **v = xrealloc(sv->v, cap * sizeof *v);
    if (v == NULL)
      return -TR_ENOMEM;
    sv->v = v;
    sv->cap = cap;
  }
  sv->v[sv->n++] = s;
  return 0;
}

static void strvec_free(strvec_t *sv) {
  for (size_t i = 0; i < sv->n; i++)
    free(sv->v[i]);
  free(sv->v);
  sv->v = NULL;
  sv->n = sv->cap = 0;
}

static int strvec_copy(strvec_t *dst, const strvec_t *src) {
  for (size_t i = 0; i < src->n; i++) {
    char *s = xstrdup(src->v[i]);
    if (s == NULL || strvec_push(dst, s) != 0) {
      free(s);
      return -TR_ENOMEM;
    }
  }
  return 0;
}

/* ---- construction -------------------------------------------------------- */

int tr__error_is_oom(const tr_error_t *e) { return e == &oom_error; }

static int negative(int code) {
  /* -INT_MIN is not an int; such a code is nonsense anyway. */
  if (code == INT_MIN)
    return -TR_EINVAL;
  return code > 0 ? -code : code;
}

tr_error_t *tr__error_newv(int code, const char *type, const char *fmt, va_list ap) {
  TR_ASSERT(code != 0);
  code = negative(code);
  if (type == NULL)
    type = tr_errtype(code) ? tr_errtype(code) : "Error";
  tr_error_t *e = xmalloc(sizeof *e);
  if (e == NULL)
    return &oom_error;
  memset(e, 0, sizeof *e);
  e->code = code;
  e->type = xstrdup(type);
  e->message = fmt ? xvasprintf(fmt, ap) : xstrdup(tr_strerror(code));
  if (e->type == NULL || e->message == NULL) {
    tr__error_free(e);
    return &oom_error;
  }
  return e;
}

tr_error_t *tr__error_new(int code, const char *type, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  tr_error_t *e = tr__error_newv(code, type, fmt, ap);
  va_end(ap);
  return e;
}

tr_error_t *tr__error_group_new(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  tr_error_t *e = tr__error_newv(-TR_EGROUP, NULL, fmt, ap);
  va_end(ap);
  return e;
}

void tr__error_free(tr_error_t *e) {
  if (e == NULL || is_static(e))
    return;
  free(e->type);
  free(e->boxed_type);
  free(e->src_type);
  free(e->message);
  free(e->src);
  free(e->src_uid);
  free(e->canceller);
  free(e->canceller_uid);
  strvec_free(&e->relay);
  strvec_free(&e->relay_uid);
  strvec_free(&e->trace);
  /* Recursion depth is bounded by TR__ERROR_GROUP_DEPTH_MAX. */
  for (size_t i = 0; i < e->nmembers; i++)
    tr__error_free(e->members[i]);
  free(e->members);
  free(e);
}

/* Copies an optional string; false only when the copy failed. */
static bool copy_opt(char **dst, const char *src) {
  *dst = src ? xstrdup(src) : NULL;
  return src == NULL || *dst != NULL;
}

tr_error_t *tr__error_copy(const tr_error_t *e) {
  if (e == NULL)
    return NULL;
  if (is_static(e))
    return (tr_error_t *)e; /* shared and immutable: the copy is itself */
  tr_error_t *c = xmalloc(sizeof *c);
  if (c == NULL)
    return &oom_error;
  memset(c, 0, sizeof *c);
  c->code = e->code;
  c->height = e->height;
  c->trace_dropped = e->trace_dropped;
  bool ok =
      copy_opt(&c->type, e->type) && copy_opt(&c->boxed_type, e->boxed_type) &&
      copy_opt(&c->src_type, e->src_type) && copy_opt(&c->message, e->message) &&
      copy_opt(&c->src, e->src) && copy_opt(&c->src_uid, e->src_uid) &&
      copy_opt(&c->canceller, e->canceller) && copy_opt(&c->canceller_uid, e->canceller_uid) &&
      strvec_copy(&c->relay, &e->relay) == 0 && strvec_copy(&c->relay_uid, &e->relay_uid) == 0 &&
      strvec_copy(&c->trace, &e->trace) == 0;
  if (ok && e->nmembers > 0) {
    c->members = xmalloc(e->nmembers * sizeof *c->members);
    ok = c->members != NULL;
    if (ok)
      c->members_cap = e->nmembers;
    for (size_t i = 0; ok && i < e->nmembers; i++) {
      tr_error_t *m = tr__error_copy(e->members[i]);
      /* A member that was the static error to begin with is a faithful
       * copy; one that became it here means this copy failed. */
      if (m == &oom_error && e->members[i] != &oom_error)
        ok = false;
      else
        c->members[c->nmembers++] = m;
    }
  }
  if (!ok) {
    tr__error_free(c);
    return &oom_error;
  }
  return c;
}

/* ---- mutators ------------------------------------------------------------ */

/* Replaces *field with a copy of s (NULL clears it). */
static int set_field(tr_error_t *e, char **field, const char *s) {
  if (e == NULL)
    return -TR_EINVAL;
  if (is_static(e))
    return -TR_ENOMEM;
  char *d = NULL;
  if (s != NULL && (d = xstrdup(s)) == NULL)
    return -TR_ENOMEM;
  free(*field);
  *field = d;
  return 0;
}

/* The name part of an actor's uid: what precedes "@<32 hex digits>", or
 * the whole string when it has no such suffix (a bare name). */
static char *uid_name(const char *uid) {
  const char *at = strrchr(uid, '@');
  if (at && strlen(at + 1) == 32 && strspn(at + 1, "0123456789abcdef") == 32) {
    size_t n = (size_t)(at - uid);
    char *d = xmalloc(n + 1);
    if (d) {
      memcpy(d, uid, n);
      d[n] = '\0';
    }
    return d;
  }
  return xstrdup(uid);
}

/* Sets a (name, uid) pair from a uid or a name; NULL clears both. */
static int set_actor(tr_error_t *e, char **name, char **uid, const char *s) {
  if (e == NULL)
    return -TR_EINVAL;
  if (is_static(e))
    return -TR_ENOMEM;
  char *n = NULL, *u = NULL;
  if (s != NULL && ((n = uid_name(s)) == NULL || (u = xstrdup(s)) == NULL)) {
    free(n);
    return -TR_ENOMEM;
  }
  free(*name);
  free(*uid);
  *name = n;
  *uid = u;
  return 0;
}

int tr__error_set_src(tr_error_t *e, const char *uid) {
  return set_actor(e, e ? &e->src : NULL, e ? &e->src_uid : NULL, uid);
}

int tr__error_set_boxed_type(tr_error_t *e, const char *type) {
  return set_field(e, e ? &e->boxed_type : NULL, type);
}

int tr__error_set_src_type(tr_error_t *e, const char *type) {
  return set_field(e, e ? &e->src_type : NULL, type);
}

int tr__error_set_canceller(tr_error_t *e, const char *uid) {
  return set_actor(e, e ? &e->canceller : NULL, e ? &e->canceller_uid : NULL, uid);
}

static int push_copy(tr_error_t *e, strvec_t *sv, const char *s) {
  if (e == NULL || s == NULL)
    return -TR_EINVAL;
  if (is_static(e))
    return -TR_ENOMEM;
  char *d = xstrdup(s);
  if (d == NULL || strvec_push(sv, d) != 0) {
    free(d);
    return -TR_ENOMEM;
  }
  return 0;
}

int tr__error_relay_append(tr_error_t *e, const char *uid) {
  if (e == NULL || uid == NULL)
    return -TR_EINVAL;
  if (is_static(e))
    return -TR_ENOMEM;
  char *n = uid_name(uid);
  if (n == NULL || strvec_push(&e->relay, n) != 0) {
    free(n);
    return -TR_ENOMEM;
  }
  if (push_copy(e, &e->relay_uid, uid) != 0) {
    free(e->relay.v[--e->relay.n]); /* both or neither */
    return -TR_ENOMEM;
  }
  return 0;
}

int tr__error_trace_append_str(tr_error_t *e, const char *hop) {
  if (e == NULL || hop == NULL)
    return -TR_EINVAL;
  if (is_static(e))
    return -TR_ENOMEM;
  if (e->trace.n >= TR__ERROR_TRACE_MAX) {
    e->trace_dropped++;
    return 0;
  }
  int rc = push_copy(e, &e->trace, hop);
  if (rc != 0)
    e->trace_dropped++;
  return rc;
}

int tr__error_trace_append(tr_error_t *e, const char *file, int line, const char *func) {
  if (e == NULL)
    return -TR_EINVAL;
  if (is_static(e))
    return -TR_ENOMEM;
  if (e->trace.n >= TR__ERROR_TRACE_MAX) {
    e->trace_dropped++;
    return 0;
  }
  char *hop = xasprintf("%s:%d %s", file ? file : "?", line, func ? func : "?");
  if (hop == NULL || strvec_push(&e->trace, hop) != 0) {
    free(hop);
    e->trace_dropped++;
    return -TR_ENOMEM;
  }
  return 0;
}

int tr__error_box(tr_error_t *e, const char *src_uid) {
  if (e == NULL || src_uid == NULL)
    return -TR_EINVAL;
  if (is_static(e))
    return -TR_ENOMEM;
  if (e->src != NULL) {
    /* A relay: this hop re-raises what it received, so the type the next
     * actor boxes is this hop's own (RemoteActorError, or ContextCancelled);
     * the source type stays (tractor's boxed_type vs src_type).  Allocate
     * first so that a failure leaves e as it was. */
    char *src_type = e->src_type ? NULL : (e->boxed_type ? xstrdup(e->boxed_type) : NULL);
    char *boxed = xstrdup(e->type);
    if (boxed == NULL || (e->src_type == NULL && e->boxed_type != NULL && src_type == NULL) ||
        tr__error_relay_append(e, src_uid) != 0) {
      free(src_type);
      free(boxed);
      return -TR_ENOMEM;
    }
    if (src_type != NULL)
      e->src_type = src_type;
    free(e->boxed_type);
    e->boxed_type = boxed;
    return 0;
  }
  /* Allocate everything first so a failure leaves e as it was. */
  int ctxc = e->code == -TR_ECTXCANCELED;
  char *src = uid_name(src_uid);
  char *src_full = xstrdup(src_uid);
  char *type = ctxc ? NULL : xstrdup(tr_errtype(-TR_EREMOTE));
  const char *orig = e->boxed_type ? e->boxed_type : e->type;
  char *src_type = e->src_type ? NULL : xstrdup(orig);
  char *boxed = e->boxed_type ? NULL : xstrdup(orig);
  if (src == NULL || src_full == NULL || (!ctxc && type == NULL) ||
      (!e->src_type && src_type == NULL) || (!e->boxed_type && boxed == NULL)) {
    free(src);
    free(src_full);
    free(type);
    free(src_type);
    free(boxed);
    return -TR_ENOMEM;
  }
  if (boxed != NULL)
    e->boxed_type = boxed;
  if (src_type != NULL)
    e->src_type = src_type;
  if (!ctxc) {
    /* ContextCancelled keeps its code and type: in tractor it is itself a
     * RemoteActorError. */
    free(e->type);
    e->type = type;
    e->code = -TR_EREMOTE;
  }
  e->src = src;
  e->src_uid = src_full;
  return 0;
}

int tr__error_group_add(tr_error_t *group, tr_error_t *member) {
  int rc = 0;
  if (group == NULL || member == NULL || member == group || group->code != -TR_EGROUP)
    rc = -TR_EINVAL;
  else if (is_static(group))
    rc = -TR_ENOMEM;
  else if (member->height + 1 > TR__ERROR_GROUP_DEPTH_MAX)
    rc = -TR_EINVAL;
  else if (group->nmembers == group->members_cap) {
    size_t cap = group->members_cap ? group->members_cap * 2 : 4;
    tr_error_t **m = xrealloc(group->members, cap * sizeof *m);
    if (m == NULL) {
      rc = -TR_ENOMEM;
    } else {
      group->members = m;
      group->members_cap = cap;
    }
  }
  if (rc != 0) {
    tr__error_free(member);
    return rc;
  }
  group->members[group->nmembers++] = member;
  if (member->height + 1 > group->height)
    group->height = member->height + 1;
  return 0;
}

/* ---- the current error's slot -------------------------------------------- */

/* Written once by the task layer, read on every access.  The release store
 * in tr__error_set_slot_hook pairs with the acquire load in current_slot,
 * so a thread that sees the hook also sees whatever the task layer set up
 * before installing it. */
static tr_error_t **(*slot_hook)(void);

static pthread_once_t key_once = PTHREAD_ONCE_INIT;
static pthread_key_t slot_key;
static bool slot_key_ok;

static __thread tr_error_t *thread_slot;
static __thread bool thread_slot_registered;

/* Runs at the exit of a thread that used its slot; the value is that
 * thread's &thread_slot (its TLS is still mapped while key destructors
 * run). */
static void free_thread_slot(void *p) {
  tr_error_t **slot = p;
  tr__error_free(*slot);
  *slot = NULL;
  /* A later key destructor that records an error registers again, and
   * glibc then runs this one once more. */
  thread_slot_registered = false;
}

static void make_key(void) { slot_key_ok = pthread_key_create(&slot_key, free_thread_slot) == 0; }

void tr__error_set_slot_hook(tr_error_t **(*hook)(void)) {
  /* Pairs with the acquire load in current_slot. */
  __atomic_store_n(&slot_hook, hook, __ATOMIC_RELEASE);
}

/* noinline: see the file comment.  Registers the exit-time destructor the
 * first time the slot is used for writing; if the key cannot be created or
 * set, the only cost is that an error left in the slot at thread exit
 * leaks. */
__attribute__((noinline)) static tr_error_t **thread_slot_addr(bool writing) {
  if (writing && !thread_slot_registered) {
    thread_slot_registered = true;
    pthread_once(&key_once, make_key);
    if (slot_key_ok)
      pthread_setspecific(slot_key, &thread_slot);
  }
  return &thread_slot;
}

static tr_error_t **current_slot(bool writing) {
  /* Pairs with the release store in tr__error_set_slot_hook. */
  tr_error_t **(*hook)(void) = __atomic_load_n(&slot_hook, __ATOMIC_ACQUIRE);
  if (hook != NULL) {
    tr_error_t **slot = hook();
    if (slot != NULL)
      return slot;
  }
  return thread_slot_addr(writing);
}

tr_error_t *tr__error_take(void) {
  tr_error_t **slot = current_slot(false);
  tr_error_t *e = *slot;
  *slot = NULL;
  return e;
}

void tr__error_put(tr_error_t *e) {
  tr_error_t **slot = current_slot(e != NULL);
  tr_error_t *old = *slot;
  *slot = e;
  if (old != e)
    tr__error_free(old);
}

const tr_error_t *tr_error_last(void) { return *current_slot(false); }

tr_error_t *tr__error_own(tr_error_t *e) {
  if (e == NULL || e == &oom_error || !is_static(e))
    return e;
  return tr__error_new(e->code, e->type, "%s", e->message);
}

int tr__error_quick(int code) {
  code = negative(code);
  if (code == 0 || -code >= TR_ERRNO_MAX_)
    return code;
  tr__error_put(&quick_errors[-code]);
  return code;
}

void tr_error_clear(void) { tr__error_put(NULL); }

/* ---- keeping and re-raising (the public side of take/put/copy) ------------ */

tr_error_t *tr_error_take(void) { return tr__error_take(); }

tr_error_t *tr_error_copy(const tr_error_t *e) { return tr__error_copy(e); }

void tr_error_free(tr_error_t *e) { tr__error_free(e); }

int tr__error_raise_at(tr_error_t *e, const char *file, int line, const char *func) {
  if (e == NULL)
    return tr__error_set(-TR_EINVAL, file, line, func, "tr_error_raise: no error to raise");
  int code = e->code;
  /* The re-raise site is one more hop on the way up; a full trace or a
   * failed allocation only leaves it out (the error is still true). */
  (void)tr__error_trace_append(e, file, line, func);
  tr__error_put(e);
  return code;
}

/* ---- raising ------------------------------------------------------------- */

/* Builds and records an error raised at file:line func. */
static void raise_at(int code, const char *type, const char *file, int line, const char *func,
                     const char *fmt, va_list ap) TR__PRINTF(6, 0);

static void raise_at(int code, const char *type, const char *file, int line, const char *func,
                     const char *fmt, va_list ap) {
  tr_error_t *e = tr__error_newv(code, type, fmt, ap);
  if (e != &oom_error && tr__error_trace_append(e, file, line, func) != 0) {
    /* A raise site is the one hop every error must have. */
    tr__error_free(e);
    e = &oom_error;
  }
  tr__error_put(e);
}

int tr__fail_at(const char *file, int line, const char *func, const char *type, const char *fmt,
                ...) {
  va_list ap;
  va_start(ap, fmt);
  raise_at(-TR_EAPP, type ? type : tr_errtype(-TR_EAPP), file, line, func, fmt, ap);
  va_end(ap);
  return -TR_EAPP;
}

int tr__error_set(int code, const char *file, int line, const char *func, const char *fmt, ...) {
  if (code == 0)
    return 0;
  code = negative(code);
  va_list ap;
  va_start(ap, fmt);
  raise_at(code, NULL, file, line, func, fmt, ap);
  va_end(ap);
  return code;
}

int tr__error_trace_here(int rc, const char *file, int line, const char *func) {
  if (rc >= 0)
    return rc;
  tr_error_t *e = *current_slot(false);
  if (e != NULL && !is_static(e) && e->code == rc)
    (void)tr__error_trace_append(e, file, line, func);
  return rc;
}

/* ---- accessors ----------------------------------------------------------- */

int tr_error_code(const tr_error_t *e) { return e ? e->code : 0; }
const char *tr_error_type(const tr_error_t *e) { return e ? e->type : NULL; }
const char *tr_error_boxed_type(const tr_error_t *e) { return e ? e->boxed_type : NULL; }
const char *tr_error_src_type(const tr_error_t *e) { return e ? e->src_type : NULL; }
const char *tr_error_message(const tr_error_t *e) { return e ? e->message : NULL; }
const char *tr_error_src(const tr_error_t *e) { return e ? e->src : NULL; }
const char *tr_error_canceller(const tr_error_t *e) { return e ? e->canceller : NULL; }
const char *tr_error_src_uid(const tr_error_t *e) { return e ? e->src_uid : NULL; }
const char *tr_error_canceller_uid(const tr_error_t *e) { return e ? e->canceller_uid : NULL; }
const char *tr_error_relay_uid(const tr_error_t *e, size_t i) {
  return e && i < e->relay_uid.n ? e->relay_uid.v[i] : NULL;
}

size_t tr_error_relay_len(const tr_error_t *e) { return e ? e->relay.n : 0; }
const char *tr_error_relay(const tr_error_t *e, size_t i) {
  return e && i < e->relay.n ? e->relay.v[i] : NULL;
}

size_t tr_error_trace_len(const tr_error_t *e) { return e ? e->trace.n : 0; }
const char *tr_error_trace(const tr_error_t *e, size_t i) {
  return e && i < e->trace.n ? e->trace.v[i] : NULL;
}

size_t tr_error_group_count(const tr_error_t *e) { return e ? e->nmembers : 0; }
const tr_error_t *tr_error_group_get(const tr_error_t *e, size_t i) {
  return e && i < e->nmembers ? e->members[i] : NULL;
}

/* ---- formatting ---------------------------------------------------------- */

/* snprintf-style writer: keeps counting past the end of buf. */
typedef struct writer {
  char *buf;
  size_t len;
  size_t pos; /* bytes the whole rendering needs so far */
  bool overflow;
} writer_t;

static void wr(writer_t *w, const char *fmt, ...) TR__PRINTF(2, 3);

static void wr(writer_t *w, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = w->pos < w->len ? vsnprintf(w->buf + w->pos, w->len - w->pos, fmt, ap)
                          : vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0 || (size_t)n > (size_t)INT_MAX - w->pos)
    w->overflow = true;
  else
    w->pos += (size_t)n;
}

static void render(writer_t *w, const tr_error_t *e, int ind) {
  if (e->message[0] != '\0')
    wr(w, "%*s%s: %s\n", ind, "", e->type, e->message);
  else
    wr(w, "%*s%s\n", ind, "", e->type);
  ind += 2;
  if (e->boxed_type)
    wr(w, "%*sboxed type: %s\n", ind, "", e->boxed_type);
  if (e->src_type && (!e->boxed_type || strcmp(e->src_type, e->boxed_type) != 0))
    wr(w, "%*ssource type: %s\n", ind, "", e->src_type);
  wr(w, "%*scode: %s (%d)\n", ind, "", tr_errname(e->code), e->code);
  if (e->src)
    wr(w, "%*ssource: %s\n", ind, "", e->src_uid ? e->src_uid : e->src);
  if (e->relay.n > 0) {
    wr(w, "%*srelay:", ind, "");
    for (size_t i = 0; i < e->relay.n; i++)
      wr(w, "%s %s", i ? " ->" : "", i < e->relay_uid.n ? e->relay_uid.v[i] : e->relay.v[i]);
    wr(w, "\n");
  }
  if (e->canceller)
    wr(w, "%*scanceller: %s\n", ind, "", e->canceller_uid ? e->canceller_uid : e->canceller);
  if (e->trace.n > 0 || e->trace_dropped > 0) {
    wr(w, "%*strace (most recent call last):\n", ind, "");
    /* Dropped hops were appended last, so they are the outermost. */
    if (e->trace_dropped > 0)
      wr(w, "%*s[%zu outer hops not recorded]\n", ind + 2, "", e->trace_dropped);
    for (size_t i = e->trace.n; i-- > 0;)
      wr(w, "%*s%s\n", ind + 2, "", e->trace.v[i]);
  }
  if (e->nmembers > 0) {
    wr(w, "%*s%zu errors:\n", ind, "", e->nmembers);
    /* Recursion depth is bounded by TR__ERROR_GROUP_DEPTH_MAX. */
    for (size_t i = 0; i < e->nmembers; i++) {
      wr(w, "%*s+-- %zu of %zu --\n", ind, "", i + 1, e->nmembers);
      render(w, e->members[i], ind + 2);
    }
  }
}

int tr_error_format(const tr_error_t *e, char *buf, size_t len) {
  writer_t w = {.buf = buf, .len = buf ? len : 0};
  if (e != NULL)
    render(&w, e, 0);
  if (w.len > 0)
    w.buf[w.pos < w.len ? w.pos : w.len - 1] = '\0';
  return w.overflow ? -TR_EMSGSIZE : (int)w.pos;
}
