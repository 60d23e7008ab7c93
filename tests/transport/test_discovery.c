/*
 * Discovery (issue 11): the registrar embedded in the root, actors that
 * register and unregister, tr_find_actor / tr_wait_for_actor /
 * tr_registry_list, stale entries, and what the registry address may hold.
 * tractor's discovery scenarios: the root registered as itself; register,
 * then unregister on cancel; wait_for_actor between two siblings; two
 * actors of one name; eight children of one name cancelled in under 20 s
 * with every channel closed; a child that closes its listener is not
 * found and its stale entry is gone; an occupied port that is not a
 * registrar is refused; a connect-and-drop is harmless; SIGINT shortly
 * after starting a daemon child; a wait that finds only an entry whose
 * node fails the handshake pauses between rounds; a node listening on
 * 0.0.0.0 registers an address another host can dial; a node registers
 * other actors only at its own address, and a registrar that comes back has
 * every live actor again.  Trust (suite auth): nodes and children
 * of one secret find and call each other (the child's key gone from its
 * environment); nodes of another secret, or none, are refused with a
 * clear error; 1,000 wrong, replayed and proofless handshakes at a live
 * registrar dispatch nothing, make no channel and leak nothing.  Each
 * TR_TEST has a registry address of its own (testing.h), so ctest -j runs
 * them side by side.
 */
#define _GNU_SOURCE /* unshare */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define TR_TEST_WORKERS 2
#include <tractor/testing.h>

#include "../support/peer.h"
#include "../support/procs.h"
#include "schema/registry.h" /* tr__reg_pack */
#include "transport/listen.h"
#include "transport/node.h" /* tr__node_registrar, TR_REGISTRY_NS */

#define MS (1000 * 1000LL)

/* ---- exported functions ------------------------------------------------------------------- */

/* The name a call's args carry (a string buffer). */
static void name_of(const tr_buf_t *args, char *name, size_t size) {
  size_t len = tr_buf_len(args) < size - 1 ? tr_buf_len(args) : size - 1;
  memcpy(name, tr_buf_data(args), len);
  name[len] = '\0';
}

static int ping(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)ctx;
  (void)args;
  return tr_buf_from_u64((uint64_t)getpid(), result);
}
TR_EXPORT_FN("tdisc.svc", "pid", ping)

/* Waits (20 s at most) for the actor named in args and runs its function
 * fn: the call's code and result. */
static int call_named(const tr_buf_t *args, const char *fn, tr_buf_t **result) {
  char name[64];
  name_of(args, name, sizeof name);
  tr_portal_t *p;
  int rc = tr_wait_for_actor(name, tr_now() + 20000 * MS, &p);
  if (rc)
    return rc;
  rc = tr_portal_run(p, fn, NULL, result);
  tr_portal_release(p);
  return rc;
}

/* Waits for the actor named in args, calls its pid, returns that. */
static int find_and_call(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)ctx;
  return call_named(args, "tdisc.svc.pid", result);
}
TR_EXPORT_FN("tdisc.svc", "find_and_call", find_and_call)

/* The node stops accepting connections (its listener closes).  Returns
 * once a connect to its address is refused: the listener closes its
 * socket in its own turn, after this call has asked it to. */
static int close_listener(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)ctx;
  (void)args;
  (void)result;
  char addr[64];
  struct sockaddr_in sa;
  int rc = tr__listen_addr(addr, sizeof addr);
  if (rc == 0)
    rc = tr__addr_parse(addr, &sa);
  tr__listen_close_now();
  for (int i = 0; rc == 0 && i < 5000; i++) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int refused = fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0 &&
                  errno == ECONNREFUSED;
    if (fd >= 0)
      close(fd);
    if (refused)
      return 0;
    if ((rc = tr_sleep(1 * MS)) != 0)
      return rc;
  }
  return rc ? rc : -TR_ETIMEDOUT;
}
TR_EXPORT_FN("tdisc.svc", "close_listener", close_listener)

/* tr_find_actor, from this node, of the name in args. */
static int find_named(const tr_buf_t *args, tr_portal_t **p) {
  char name[64];
  name_of(args, name, sizeof name);
  return tr_find_actor(name, p);
}

/* tr_find_actor from this node: its result code, negated. */
static int find_rc(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)ctx;
  tr_portal_t *p = NULL;
  int rc = find_named(args, &p);
  tr_portal_release(p);
  tr_error_clear();
  return tr_buf_from_u64((uint64_t)-rc, result);
}
TR_EXPORT_FN("tdisc.svc", "find_rc", find_rc)

/* Waits for "frozen" with a 1 s deadline (a_wait_keeps_its_deadline_while_it_dials):
 * the milliseconds it took, when it timed out saying why. */
static int wait_frozen(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)ctx;
  (void)args;
  int64_t t0 = tr_now();
  tr_portal_t *f = NULL;
  int rc = tr_wait_for_actor("frozen", t0 + 1000 * MS, &f);
  tr_portal_release(f);
  if (rc != -TR_ETIMEDOUT)
    return rc ? rc : tr_fail("AssertionError", "found a stopped actor");
  const char *msg = tr_error_message(tr_error_last());
  /* Saying which entry it tried last and how that went (discovery.h). */
  if (!msg || !strstr(msg, "answered before the deadline (the last tried, at 127.0.0.1:") ||
      !strstr(msg, "it had not answered after"))
    return tr_fail("AssertionError", "the wait's reason: %s", msg ? msg : "(none)");
  return tr_buf_from_u64((uint64_t)((tr_now() - t0) / MS), result);
}
TR_EXPORT_FN("tdisc.svc", "wait_frozen", wait_frozen)

/* tr_find_actor of the name in args from this node, then the found
 * actor's pid: tdisc.svc.pid through it. */
static int find_pid(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)ctx;
  tr_portal_t *p = NULL;
  int rc = find_named(args, &p);
  if (rc == 0)
    rc = tr_portal_run(p, "tdisc.svc.pid", NULL, result);
  tr_portal_release(p);
  return rc;
}
TR_EXPORT_FN("tdisc.svc", "find_pid", find_pid)

/* Calls of tdisc.svc.slow started in this process. */
static uint64_t slow_started; /* atomic */

/* Runs until cancelled: a call that stays in flight. */
static int slow(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)ctx;
  (void)args;
  (void)result;
  __atomic_fetch_add(&slow_started, 1, __ATOMIC_SEQ_CST);
  return tr_sleep(60000 * MS);
}
TR_EXPORT_FN("tdisc.svc", "slow", slow)

static int slow_count(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)ctx;
  (void)args;
  return tr_buf_from_u64(__atomic_load_n(&slow_started, __ATOMIC_SEQ_CST), result);
}
TR_EXPORT_FN("tdisc.svc", "slow_started", slow_count)

/* Finds the actor named in args and calls its tdisc.svc.slow: the call's
 * code, negated (a_call_cut_off_by_a_killed_node_is_lost); for -TR_EIO it
 * fails unless the error says the dialog was cut off. */
static int call_slow(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)ctx;
  int rc = call_named(args, "tdisc.svc.slow", NULL);
  const char *msg = tr_error_message(tr_error_last());
  if (rc == -TR_EIO && (!msg || !strstr(msg, "the peer closed the connection with this dialog open")))
    return tr_fail("AssertionError", "the loss's reason: %s", msg ? msg : "(none)");
  tr_error_clear();
  return tr_buf_from_u64((uint64_t)-rc, result);
}
TR_EXPORT_FN("tdisc.svc", "call_slow", call_slow)

static const char *const svc_ns[] = {"tdisc.svc"};

static tr_actor_opts_t svc_opts(int spawn) {
  tr_actor_opts_t o = {.enable = svc_ns, .n_enable = 1, .spawn = spawn};
  return o;
}

/* Starts daemon `name` in an and waits (10 s at most) until it is found:
 * *p its portal from the start, *f the one from the registry. */
static void start_found(tr_actor_nursery_t *an, const char *name, const tr_actor_opts_t *o,
                        tr_portal_t **p, tr_portal_t **f) {
  tr_check_rc(tr_start_actor_opts(an, name, o, p), 0);
  tr_check_rc(tr_wait_for_actor(name, tr_now() + 10000 * MS, f), 0);
}

static uint64_t call_pid(tr_portal_t *p, int *rc) {
  tr_buf_t *r = NULL;
  uint64_t v = 0;
  *rc = tr_portal_run(p, "tdisc.svc.pid", NULL, &r);
  if (*rc == 0)
    *rc = tr_buf_to_u64(r, &v);
  tr_buf_release(r);
  return v;
}

/* Entries named `name` in the registry now (-1 on error). */
static int count_named(const char *name) {
  tr_registry_entry_t *v;
  size_t n;
  if (tr_registry_list(&v, &n) != 0)
    return -1;
  int k = 0;
  for (size_t i = 0; i < n; i++)
    k += strcmp(v[i].name, name) == 0;
  tr_registry_entries_free(v, n);
  return k;
}

/* Whether an entry `name` at addr is listed, waiting up to ms for one. */
static int await_at(const char *name, const char *addr, int ms) {
  for (int i = 0; i < ms / 10; i++) {
    tr_registry_entry_t *v;
    size_t n;
    int found = 0;
    if (tr_registry_list(&v, &n) == 0) {
      for (size_t k = 0; k < n; k++)
        found |= strcmp(v[k].name, name) == 0 && strcmp(v[k].addr, addr) == 0;
      tr_registry_entries_free(v, n);
    }
    if (found)
      return 1;
    tr_sleep(10 * MS);
  }
  return 0;
}

/* Waits up to ms for count_named(name) == want. */
static int await_count(const char *name, int want, int ms) {
  int k = -1;
  for (int i = 0; i < ms / 10; i++) {
    if ((k = count_named(name)) == want)
      return k;
    tr_sleep(10 * MS);
  }
  return k;
}

static void setup(void) { tr_test_procs_setup(); }
static void teardown(void) { tr_test_procs_check(); }

/* ---- tests ---------------------------------------------------------------------------------- */

TR_TEST(discovery, root_is_the_registrar_and_registered_as_itself, .timeout = 30, .init = setup,
        .fini = teardown) {
  char addr[64];
  int reg = 0;
  tr_assert_rc(tr_node_addr(addr, sizeof addr, &reg), 0);
  tr_check(reg == 1, "the first root is the registrar");
  tr_check(strcmp(addr, getenv("TR_REGISTRY_ADDR")) == 0, "it listens on %s, not the registry %s",
           addr, getenv("TR_REGISTRY_ADDR"));
  /* Too small a buffer: cut, and said so (discovery.h). */
  char cut[6];
  tr_check_rc(tr_node_addr(cut, sizeof cut, NULL), -TR_EMSGSIZE);
  tr_check(strncmp(cut, addr, sizeof cut - 1) == 0 && cut[sizeof cut - 1] == '\0', "cut: %s", cut);
  tr_portal_t *p;
  tr_assert_rc(tr_find_actor("root", &p), 0);
  uint8_t a[16], b[16];
  tr_actor_uuid(tr_portal_actor(p), a);
  tr_actor_uuid(tr_self(), b);
  tr_check(memcmp(a, b, 16) == 0, "the portal is to the root itself");
  /* Its own call through it: as any actor's call of itself (discovery.h). */
  tr_check_rc(tr_portal_run(p, "tdisc.svc.find_rc", NULL, NULL), -TR_EINVAL);
  tr_error_clear();
  tr_portal_release(p);
  /* The root is findable but serves no calls: an actor that calls it is
   * refused at once, not kept waiting. */
  tr_actor_nursery_t *an;
  tr_portal_t *svc = NULL;
  tr_actor_opts_t o = svc_opts(TR_SPAWN_THREAD);
  tr_buf_t *args = NULL, *r = NULL;
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_start_actor_opts(an, "svc", &o, &svc), 0);
  tr_assert_rc(tr_buf_from_str("root", &args), 0);
  int rc = svc ? tr_portal_run(svc, "tdisc.svc.find_and_call", args, &r) : 0;
  const tr_error_t *e = tr_error_last();
  tr_check(rc != 0 && e && strstr(tr_error_message(e), "does not serve calls"),
           "a call to the root is refused: %s", e ? tr_error_message(e) : "(no error)");
  tr_buf_release(args);
  tr_buf_release(r);
  tr_check_rc(tr_actor_nursery_cancel(an), 0);
  tr_check_rc(tr_actor_nursery_close(an), 0);
  tr_portal_release(svc);
  tr_registry_entry_t *v;
  size_t n;
  tr_assert_rc(tr_registry_list(&v, &n), 0);
  tr_check(n == 1 && strcmp(v[0].name, "root") == 0 && v[0].pid == getpid(),
           "the registry holds the root only (%zu entries)", n);
  tr_check(n == 1 && strcmp(v[0].addr, addr) == 0, "at its node's address");
  tr_registry_entries_free(v, n);
  tr_check_rc(tr_find_actor("nobody", &p), -TR_ENOTFOUND);
  tr_check(p == NULL, "no portal");
  tr_check(tr_error_last() && tr_error_code(tr_error_last()) == -TR_ENOTFOUND,
           "an error object says why");
  return 0;
}

static int register_then_unregister(int spawn) {
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL, *f = NULL;
  tr_actor_opts_t o = svc_opts(spawn);
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  start_found(an, "svc", &o, &p, &f);
  int rc = 0;
  uint64_t pid = f ? call_pid(f, &rc) : 0;
  tr_check_rc(rc, 0);
  tr_check(spawn == TR_SPAWN_PROCESS ? pid != (uint64_t)getpid() : pid == (uint64_t)getpid(),
           "the found actor runs where it was spawned (pid %llu)", (unsigned long long)pid);
  tr_check(count_named("svc") == 1, "registered once");
  tr_check_rc(tr_actor_nursery_cancel(an), 0);
  tr_check_rc(tr_actor_nursery_close(an), 0);
  tr_portal_t *g = NULL;
  tr_check_rc(tr_find_actor("svc", &g), -TR_ENOTFOUND);
  tr_check(count_named("svc") == 0, "unregistered when cancelled");
  tr_portal_release(g);
  tr_portal_release(f);
  tr_portal_release(p);
  return 0;
}

TR_TEST(discovery, thread_actor_registers_then_unregisters_on_cancel, .timeout = 30,
        .init = setup, .fini = teardown) {
  return register_then_unregister(TR_SPAWN_THREAD);
}

TR_TEST(discovery, process_actor_registers_then_unregisters_on_cancel, .timeout = 30,
        .init = setup, .fini = teardown) {
  return register_then_unregister(TR_SPAWN_PROCESS);
}

/* An actor registers before it serves (tractor's order): once a call to
 * it has been answered, it is listed, with no wait. */
static int registered_before_it_serves(int spawn) {
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL;
  tr_actor_opts_t o = svc_opts(spawn);
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_start_actor_opts(an, "svc", &o, &p), 0);
  int rc = -1;
  (void)(p ? call_pid(p, &rc) : 0);
  tr_check_rc(rc, 0);
  tr_check(count_named("svc") == 1, "listed as soon as it has answered a call");
  tr_check_rc(tr_actor_nursery_cancel(an), 0);
  tr_check_rc(tr_actor_nursery_close(an), 0);
  tr_portal_release(p);
  return 0;
}

TR_TEST(discovery, a_thread_actor_is_listed_before_it_serves, .timeout = 30, .init = setup,
        .fini = teardown) {
  return registered_before_it_serves(TR_SPAWN_THREAD);
}

TR_TEST(discovery, a_process_actor_is_listed_before_it_serves, .timeout = 30, .init = setup,
        .fini = teardown) {
  return registered_before_it_serves(TR_SPAWN_PROCESS);
}

/* A child process killed without a word (SIGKILL: no unregister) is
 * dropped from the registry all the same: its registration's holder, the
 * channel from its node, ends with the process. */
TR_TEST(discovery, a_killed_process_child_is_unregistered, .timeout = 60, .init = setup,
        .fini = teardown) {
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL, *f = NULL;
  tr_actor_opts_t o = svc_opts(TR_SPAWN_PROCESS);
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  start_found(an, "victim", &o, &p, &f);
  int pid = 0, st = 0;
  if (p)
    tr_check_rc(tr_portal_process(p, &pid, &st), 0);
  tr_check(pid > 0, "the child's pid");
  tr_check(count_named("victim") == 1, "registered");
  if (pid > 0)
    kill(pid, SIGKILL);
  /* The nursery sees its child die: an error that cancels its scope (so
   * the registry is looked at once the nursery is closed). */
  tr_check(tr_actor_nursery_close(an) != 0, "the child's death is an error");
  tr_error_clear();
  tr_check(await_count("victim", 0, 5000) == 0, "gone from the registry within 5 s");
  tr_portal_t *g = NULL;
  tr_check_rc(tr_find_actor("victim", &g), -TR_ENOTFOUND);
  tr_portal_release(g);
  tr_portal_release(f);
  tr_portal_release(p);
  return 0;
}

/* A call with a name as its argument and a number as its result, made in
 * a task of its own (ask_main): the portal, function and name, then its
 * code and result. */
typedef struct ask {
  tr_portal_t *p;
  const char *fn, *name;
  int rc;
  uint64_t out;
} ask_t;

static int ask_main(void *arg) {
  ask_t *s = arg;
  tr_buf_t *name = NULL, *r = NULL;
  s->rc = tr_buf_from_str(s->name, &name);
  if (s->rc == 0)
    s->rc = tr_portal_run(s->p, s->fn, name, &r);
  if (s->rc == 0)
    s->rc = tr_buf_to_u64(r, &s->out);
  tr_buf_release(name);
  tr_buf_release(r);
  return 0;
}

TR_TEST(discovery, wait_for_actor_between_two_siblings, .timeout = 60, .init = setup,
        .fini = teardown) {
  tr_actor_nursery_t *an;
  tr_nursery_t *n;
  tr_portal_t *b = NULL;
  ask_t s = {.fn = "tdisc.svc.find_and_call", .name = "b"};
  tr_actor_opts_t o = svc_opts(TR_SPAWN_PROCESS);
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_start_actor_opts(an, "a", &o, &s.p), 0);
  tr_check_rc(tr_nursery_open(&n), 0);
  tr_check_rc(tr_nursery_spawn(n, ask_main, &s, NULL), 0);
  tr_sleep(200 * MS); /* a waits for b, which does not exist yet */
  tr_check_rc(tr_start_actor_opts(an, "b", &o, &b), 0);
  tr_check_rc(tr_nursery_close(n), 0);
  tr_check_rc(s.rc, 0);
  int rc;
  uint64_t bpid = b ? call_pid(b, &rc) : 0;
  tr_check(s.out == bpid && bpid != 0, "a reached b (%llu, b is %llu)",
           (unsigned long long)s.out, (unsigned long long)bpid);
  tr_check_rc(tr_actor_nursery_cancel(an), 0);
  tr_check_rc(tr_actor_nursery_close(an), 0);
  tr_portal_release(s.p);
  tr_portal_release(b);
  return 0;
}

/* A node killed (SIGKILL) while another node's call to it is in flight:
 * the kernel closes the dead process's sockets with a FIN, as an orderly
 * close, but a node ends its dialogs before it closes, so the call is lost
 * (-TR_EIO, saying it was cut off), not closed.  "caller" and "victim" are
 * sibling process children: the call runs over the channel between their
 * nodes.  The victim has a nursery of its own, and the task that waits for
 * the caller's answer runs outside it: the victim's death cancels that
 * nursery's scope, not the call. */
TR_TEST(discovery, a_call_cut_off_by_a_killed_node_is_lost, .timeout = 60, .init = setup,
        .fini = teardown) {
  tr_actor_nursery_t *an_c, *an_v;
  tr_nursery_t *n;
  tr_portal_t *v = NULL;
  ask_t c = {.fn = "tdisc.svc.call_slow", .name = "victim"};
  tr_actor_opts_t o = svc_opts(TR_SPAWN_PROCESS);
  tr_assert_rc(tr_actor_nursery_open(&an_c, NULL), 0);
  tr_check_rc(tr_start_actor_opts(an_c, "caller", &o, &c.p), 0);
  tr_check_rc(tr_nursery_open(&n), 0);
  tr_check_rc(tr_nursery_spawn(n, ask_main, &c, NULL), 0);
  tr_check_rc(tr_actor_nursery_open(&an_v, NULL), 0);
  tr_check_rc(tr_start_actor_opts(an_v, "victim", &o, &v), 0);
  int pid = 0;
  if (v)
    tr_check_rc(tr_portal_process(v, &pid, NULL), 0);
  /* In flight once the victim has started it. */
  uint64_t started = 0;
  int64_t end = tr_now() + 20000 * MS;
  while (v && started == 0 && tr_now() < end) {
    tr_buf_t *r = NULL;
    if (tr_portal_run(v, "tdisc.svc.slow_started", NULL, &r) == 0)
      (void)tr_buf_to_u64(r, &started);
    tr_buf_release(r);
    if (started == 0)
      tr_check_rc(tr_sleep(2 * MS), 0);
  }
  tr_check(started == 1, "the victim started the call (%llu)", (unsigned long long)started);
  tr_check(pid > 0 && kill(pid, SIGKILL) == 0, "killed %d", pid);
  tr_check(tr_actor_nursery_close(an_v) != 0, "the victim's death is an error");
  tr_error_clear();
  tr_check_rc(tr_nursery_close(n), 0);
  tr_check_rc(c.rc, 0);
  tr_check(c.out == TR_EIO, "the cut-off call is lost: code -%llu, not -TR_EIO",
           (unsigned long long)c.out);
  tr_check_rc(tr_actor_nursery_cancel(an_c), 0);
  tr_check_rc(tr_actor_nursery_close(an_c), 0);
  tr_portal_release(v);
  tr_portal_release(c.p);
  return 0;
}

TR_TEST(discovery, two_actors_of_one_name, .timeout = 60, .init = setup, .fini = teardown) {
  tr_actor_nursery_t *an;
  tr_portal_t *p[2] = {NULL, NULL}, *f = NULL;
  tr_actor_opts_t o = svc_opts(TR_SPAWN_PROCESS);
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  for (int i = 0; i < 2; i++)
    tr_check_rc(tr_start_actor_opts(an, "twin", &o, &p[i]), 0);
  tr_check_rc(tr_wait_for_actor("twin", tr_now() + 10000 * MS, &f), 0);
  tr_check(await_count("twin", 2, 10000) == 2, "both registered under one name");
  tr_registry_entry_t *v;
  size_t n;
  tr_check_rc(tr_registry_list(&v, &n), 0);
  int k = 0;
  const uint8_t *u[2] = {0};
  for (size_t i = 0; i < n; i++)
    if (strcmp(v[i].name, "twin") == 0 && k < 2)
      u[k++] = v[i].uuid;
  tr_check(k == 2 && memcmp(u[0], u[1], 16) != 0, "their uuids differ");
  tr_registry_entries_free(v, n);
  int rc = 0;
  uint64_t pid = f ? call_pid(f, &rc) : 0;
  tr_check_rc(rc, 0);
  uint64_t p0 = p[0] ? call_pid(p[0], &rc) : 1, p1 = p[1] ? call_pid(p[1], &rc) : 1;
  tr_check(pid == p0 || pid == p1, "the found one is one of them");
  tr_check_rc(tr_actor_nursery_cancel(an), 0);
  tr_check_rc(tr_actor_nursery_close(an), 0);
  tr_check(count_named("twin") == 0, "both gone");
  tr_portal_release(f);
  for (int i = 0; i < 2; i++)
    tr_portal_release(p[i]);
  return 0;
}

#define N_MANY 8

TR_TEST(discovery, eight_children_of_one_name_cancelled_quickly, .timeout = 60, .init = setup,
        .fini = teardown) {
  tr_actor_nursery_t *an;
  tr_portal_t *p[N_MANY] = {0};
  tr_actor_opts_t o = svc_opts(TR_SPAWN_PROCESS);
  tr_stats_t st;
  tr_stats(&st);
  uint64_t node_before = st.actors_node;
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  for (int i = 0; i < N_MANY; i++)
    tr_check_rc(tr_start_actor_opts(an, "many", &o, &p[i]), 0);
  tr_check(await_count("many", N_MANY, 20000) == N_MANY, "all %d registered", N_MANY);
  int64_t t0 = tr_now();
  tr_check_rc(tr_actor_nursery_cancel(an), 0);
  tr_check_rc(tr_actor_nursery_close(an), 0);
  int64_t ms = (tr_now() - t0) / MS;
  tr_check(ms < 20000, "cancelled in %lld ms", (long long)ms);
  tr_check(count_named("many") == 0, "none left in the registry");
  /* Their channels to this node (the registrar's) end with their
   * processes. */
  for (int i = 0; i < 200; i++) {
    tr_stats(&st);
    if (st.actors_node == node_before)
      break;
    tr_sleep(10 * MS);
  }
  tr_check(st.actors_node == node_before, "every channel closed (%llu node actors, %llu before)",
           (unsigned long long)st.actors_node, (unsigned long long)node_before);
  for (int i = 0; i < N_MANY; i++)
    tr_portal_release(p[i]);
  return 0;
}

/* A third node looks the child up: it has no channel to it, so it dials
 * the registered address, is refused, and deletes the entry.  (This node
 * would still reach the child over the channel the child registered
 * through, which the node keeps by the child's address.) */
TR_TEST(discovery, a_child_that_closes_its_listener_is_not_found, .timeout = 60, .init = setup,
        .fini = teardown) {
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL, *seeker = NULL;
  tr_actor_opts_t o = svc_opts(TR_SPAWN_PROCESS);
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_start_actor_opts(an, "stale", &o, &p), 0);
  tr_check_rc(tr_start_actor_opts(an, "seeker", &o, &seeker), 0);
  tr_check(await_count("stale", 1, 10000) == 1, "registered");
  tr_check(await_count("seeker", 1, 10000) == 1, "registered");
  tr_check_rc(tr_portal_run(p, "tdisc.svc.close_listener", NULL, NULL), 0);
  int64_t t0 = tr_now();
  tr_buf_t *name = NULL, *r = NULL;
  uint64_t v = 0;
  tr_check_rc(tr_buf_from_str("stale", &name), 0);
  tr_check_rc(tr_portal_run(seeker, "tdisc.svc.find_rc", name, &r), 0);
  tr_check_rc(tr_buf_to_u64(r, &v), 0);
  tr_check(v == TR_ENOTFOUND, "the seeker does not find it (%s)", tr_strerror(-(int)v));
  tr_check(count_named("stale") == 0, "its stale entry is deleted");
  tr_check((tr_now() - t0) / MS < 5000, "within a few seconds");
  int rc;
  (void)call_pid(p, &rc);
  tr_check_rc(rc, 0); /* it lives on: only its listener is gone */
  tr_check_rc(tr_actor_nursery_cancel(an), 0);
  tr_check_rc(tr_actor_nursery_close(an), 0);
  tr_buf_release(name);
  tr_buf_release(r);
  tr_portal_release(p);
  tr_portal_release(seeker);
  return 0;
}

/* Connects to the registry address and closes at once, n times. */
static void *connect_and_drop(void *arg) {
  int n = *(int *)arg;
  struct sockaddr_in sa;
  if (tr__addr_parse(getenv("TR_REGISTRY_ADDR"), &sa) != 0)
    return (void *)1;
  for (int i = 0; i < n; i++) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
      if (fd >= 0)
        close(fd);
      return (void *)1;
    }
    close(fd);
  }
  return NULL;
}

TR_TEST(discovery, a_connect_and_drop_is_harmless, .timeout = 60, .init = setup,
        .fini = teardown) {
  static int n; /* not on the stack: an abandoned thread call reads on */
  n = 200;
  void *bad = (void *)1;
  uint64_t refused = tr__listen_refused();
  tr_assert_rc(tr_to_thread(connect_and_drop, &n, &bad), 0);
  tr_check(bad == NULL, "every connect succeeded");
  for (int i = 0; i < 500 && tr__listen_refused() < refused + (uint64_t)n; i++)
    tr_sleep(10 * MS);
  tr_check(tr__listen_refused() >= refused + (uint64_t)n, "each was closed by the registrar");
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL, *f = NULL;
  tr_actor_opts_t o = svc_opts(TR_SPAWN_PROCESS);
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  start_found(an, "after", &o, &p, &f);
  int rc;
  (void)call_pid(f, &rc);
  tr_check_rc(rc, 0);
  tr_check_rc(tr_actor_nursery_cancel(an), 0);
  tr_check_rc(tr_actor_nursery_close(an), 0);
  tr_portal_release(p);
  tr_portal_release(f);
  return 0;
}

TR_TEST(discovery, wait_for_actor_times_out, .timeout = 30, .init = setup, .fini = teardown) {
  tr_portal_t *p = (tr_portal_t *)1;
  int64_t t0 = tr_now();
  tr_check_rc(tr_wait_for_actor("never", tr_now() + 200 * MS, &p), -TR_ETIMEDOUT);
  tr_check(p == NULL, "no portal");
  tr_check((tr_now() - t0) / MS < 2000, "at its deadline");
  return 0;
}

/* ---- what the registry address may hold -------------------------------------------------------- */

typedef struct squatter {
  int lfd;
  int garbage; /* answer with bytes that are no frame, else stay silent */
  pthread_t th;
} squatter_t;

static void *squat(void *arg) {
  squatter_t *s = arg;
  int fd = accept(s->lfd, NULL, NULL);
  if (fd >= 0) {
    if (s->garbage) {
      static const char http[] = "HTTP/1.0 400 Bad Request\r\n\r\n";
      (void)!write(fd, http, sizeof http - 1);
    } else {
      char b[256];
      while (read(fd, b, sizeof b) > 0)
        ; /* until the prober gives up */
    }
    close(fd);
  }
  return NULL;
}

static int squatter_start(squatter_t *s, int garbage, char *addr, size_t len) {
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t sl = sizeof sa;
  s->garbage = garbage;
  s->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s->lfd < 0 || bind(s->lfd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
      listen(s->lfd, 4) != 0 || getsockname(s->lfd, (struct sockaddr *)&sa, &sl) != 0)
    return -1;
  snprintf(addr, len, "127.0.0.1:%u", (unsigned)ntohs(sa.sin_port));
  return pthread_create(&s->th, NULL, squat, s);
}

static int never_called;
static int root_never(void *arg) {
  (void)arg;
  never_called = 1;
  return 0;
}

/* With discovery off: no listener, and lookups say so. */
static int root_off(void *arg) {
  (void)arg;
  char addr[64];
  if (tr_node_addr(addr, sizeof addr, NULL) != -TR_ENOTFOUND)
    return 1;
  tr_portal_t *p;
  if (tr_find_actor("root", &p) != -TR_ENOTFOUND)
    return 2;
  tr_registry_entry_t *v = NULL;
  size_t n = 5;
  if (tr_registry_list(&v, &n) != -TR_ENOTFOUND || v || n != 0) /* discovery.h */
    return 3;
  return 0;
}

static void occupied(int garbage) {
  squatter_t s;
  char addr[64];
  cr_assert_eq(squatter_start(&s, garbage, addr, sizeof addr), 0);
  setenv("TR_REGISTRY_ADDR", addr, 1);
  setenv("TR_PEER_TIMEOUT_MS", "500", 1); /* the handshake's bound too */
  never_called = 0;
  int64_t t0 = tr_now();
  int rc = tr_main(0, NULL, root_never, NULL, NULL);
  int64_t ms = (tr_now() - t0) / MS;
  cr_expect_eq(rc, -TR_EIO, "tr_main fails (%s)", tr_strerror(rc));
  cr_expect_eq(never_called, 0, "the root function is not called");
  const tr_error_t *e = tr_error_last();
  const char *msg = e ? tr_error_message(e) : "";
  cr_expect(strstr(msg, addr) && strstr(msg, "not a tractor registrar"),
            "the error names the address: %s", msg);
  cr_expect(ms < 3000, "at once, or at the handshake timeout (%lld ms)", (long long)ms);
  unsetenv("TR_PEER_TIMEOUT_MS");
  shutdown(s.lfd, SHUT_RDWR);
  pthread_join(s.th, NULL);
  close(s.lfd);
}

Test(discovery, an_occupied_port_that_answers_garbage_is_refused, .timeout = 30, .init = setup,
     .fini = teardown) {
  occupied(1);
}

Test(discovery, an_occupied_port_that_stays_silent_is_refused, .timeout = 30, .init = setup,
     .fini = teardown) {
  occupied(0);
}

Test(discovery, calls_without_a_runtime_say_so, .timeout = 30) {
  tr_portal_t *p = (tr_portal_t *)1;
  cr_expect_eq(tr_find_actor("x", &p), -TR_ENORUNTIME);
  cr_expect_null(p);
  cr_expect(tr_error_last() && tr_error_code(tr_error_last()) == -TR_ENORUNTIME,
            "an error object");
  cr_expect_eq(tr_wait_for_actor("x", -1, &p), -TR_ENORUNTIME);
  tr_registry_entry_t *v;
  size_t n;
  cr_expect_eq(tr_registry_list(&v, &n), -TR_ENORUNTIME);
  char a[64];
  cr_expect_eq(tr_node_addr(a, sizeof a, NULL), -TR_ENORUNTIME);
}

/* ---- SIGINT --------------------------------------------------------------------------------- */

TR_TEST_EXPECT(discovery, sigint_shortly_after_starting_a_daemon_child, -TR_ECANCELED,
               .timeout = 30, .init = setup, .fini = teardown) {
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL;
  tr_actor_opts_t o = svc_opts(TR_SPAWN_PROCESS);
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_start_actor_opts(an, "daemon", &o, &p), 0);
  tr_sleep(50 * MS);
  kill(getpid(), SIGINT);
  int rc = tr_sleep(10000 * MS);
  tr_check_rc(rc, -TR_ECANCELED);
  (void)tr_actor_nursery_close(an);
  tr_portal_release(p);
  return -TR_ECANCELED;
}

/* ---- what tr_main refuses ---------------------------------------------------------------------- */

static int refused_start(const char *var, const char *value) {
  setenv(var, value, 1);
  setenv("TR_REGISTRY_ADDR", "127.0.0.1:1", 1); /* never reached */
  never_called = 0;
  int rc = tr_main(0, NULL, root_never, NULL, NULL);
  unsetenv(var);
  return rc;
}

Test(discovery, a_non_loopback_bind_needs_allow_insecure, .timeout = 30) {
  cr_expect_eq(refused_start("TR_BIND_ADDR", "198.51.100.7"), -TR_EPERM);
  cr_expect_eq(never_called, 0);
  const tr_error_t *e = tr_error_last();
  cr_expect(e && strstr(tr_error_message(e), "allow_insecure"), "the error says why");
}

/* A registry address without a port (or port 0) would make every program
 * a registrar of its own on a port of the kernel's choosing; it is refused,
 * and a bad address names its setting. */
Test(discovery, a_registry_address_needs_a_port, .timeout = 30) {
  static const char *const bad[] = {"127.0.0.1", "127.0.0.1:0"};
  for (size_t i = 0; i < 2; i++) {
    setenv("TR_REGISTRY_ADDR", bad[i], 1);
    never_called = 0;
    cr_expect_eq(tr_main(0, NULL, root_never, NULL, NULL), -TR_EINVAL, "%s", bad[i]);
    cr_expect_eq(never_called, 0);
    const tr_error_t *e = tr_error_last();
    cr_expect(e && strstr(tr_error_message(e), "has no port"), "%s: %s", bad[i],
              e ? tr_error_message(e) : "(none)");
  }
  setenv("TR_REGISTRY_ADDR", "garbage:1", 1);
  cr_expect_eq(tr_main(0, NULL, root_never, NULL, NULL), -TR_EINVAL);
  const tr_error_t *e = tr_error_last();
  cr_expect(e && strstr(tr_error_message(e), "registry_addr (TR_REGISTRY_ADDR)"), "%s",
            e ? tr_error_message(e) : "(none)");
  unsetenv("TR_REGISTRY_ADDR");
}

/* A connect to a port of this host where nothing listens may be given
 * that port as its own, and TCP's simultaneous open then connects the
 * socket to itself.  A root's probe of the registry address did that now
 * and then (with ports reserved in the ephemeral range, as tests do): it
 * read its own Hello back and failed ("not a registrar"), or waited out
 * the handshake.  Made certain here: in a network namespace of its own
 * whose only ephemeral port is the registry's, a child process runs
 * tractor-registry there (exec'd: a fork of this threaded process may not
 * start threads under TSan).  Its probe is refused, and it serves the
 * registry until SIGTERM.  Needs root (CAP_SYS_ADMIN) for the namespace;
 * skipped without it. */
Test(discovery, a_probe_that_reaches_itself_is_refused, .timeout = 60, .init = setup,
     .fini = teardown) {
  const char *tool = getenv("TR_REGISTRY_TOOL");
  cr_assert(tool && *tool, "TR_REGISTRY_TOOL (tests/CMakeLists.txt) names tractor-registry");
  int pfd[2];
  cr_assert_eq(pipe(pfd), 0);
  pid_t pid = fork();
  cr_assert(pid >= 0);
  if (pid == 0) {
    close(pfd[0]);
    if (unshare(CLONE_NEWNET) != 0) {
      dprintf(pfd[1], "skip: unshare(CLONE_NEWNET): %s\n", strerror(errno));
      _exit(77);
    }
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "lo");
    int up = s >= 0 && ioctl(s, SIOCGIFFLAGS, &ifr) == 0 &&
             (ifr.ifr_flags |= IFF_UP, ioctl(s, SIOCSIFFLAGS, &ifr) == 0);
    int f = open("/proc/sys/net/ipv4/ip_local_port_range", O_WRONLY | O_CLOEXEC);
    int ranged = f >= 0 && write(f, "40000 40000", 11) == 11;
    if (!up || !ranged) {
      dprintf(pfd[1], "the namespace's loopback or port range: %s\n", strerror(errno));
      _exit(1);
    }
    close(s);
    close(f);
    dup2(pfd[1], 2); /* its log, read by the test */
    unsetenv("TR_LOG");
    execl(tool, tool, "--addr", "127.0.0.1:40000", "-v", (char *)NULL);
    _exit(127);
  }
  close(pfd[1]);
  /* Its log, until it says it serves (or ends). */
  char out[2000] = "";
  size_t got = 0;
  ssize_t k;
  while (got + 1 < sizeof out && !strstr(out, "serving the registry") &&
         (k = read(pfd[0], out + got, sizeof out - 1 - got)) > 0) {
    got += (size_t)k;
    out[got] = '\0';
  }
  int serving = strstr(out, "serving the registry at 127.0.0.1:40000") != NULL;
  kill(pid, SIGTERM);
  char rest[256]; /* what it logs as it stops, read to its end (no SIGPIPE) */
  while (read(pfd[0], rest, sizeof rest) > 0)
    ;
  close(pfd[0]);
  int st = 0;
  cr_assert_eq(waitpid(pid, &st, 0), pid);
  if (WIFEXITED(st) && WEXITSTATUS(st) == 77)
    cr_skip("%s", out);
  cr_expect(serving, "tractor-registry in the namespace: %s", out);
  cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0, "it exits 0 on SIGTERM (status %d): %s", st,
            out);
}

/* tractor-registry's usage errors exit 2 and say why, before any runtime:
 * an unknown flag, and both --secret and --secret-file (alternatives, as
 * the usage line shows). */
static int tool_status(const char *const *args, char *err, size_t len) {
  const char *tool = getenv("TR_REGISTRY_TOOL");
  int pfd[2];
  if (!tool || pipe(pfd) != 0)
    return -1;
  pid_t pid = fork();
  if (pid == 0) {
    dup2(pfd[1], 2);
    close(pfd[0]);
    char *argv[8] = {(char *)tool};
    for (int i = 0; args[i] && i < 6; i++)
      argv[i + 1] = (char *)args[i];
    execv(tool, argv);
    _exit(127);
  }
  close(pfd[1]);
  size_t got = 0;
  ssize_t k;
  while (got + 1 < len && (k = read(pfd[0], err + got, len - 1 - got)) > 0)
    got += (size_t)k;
  err[got] = '\0';
  close(pfd[0]);
  int st = 0;
  if (pid < 0 || waitpid(pid, &st, 0) != pid)
    return -1;
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

Test(discovery, the_registry_tool_refuses_bad_flags, .timeout = 30) {
  char err[1000];
  static const char *const both[] = {"--addr", "127.0.0.1:1", "--secret", "a", "--secret-file",
                                     "/nonexistent", NULL};
  cr_expect_eq(tool_status(both, err, sizeof err), 2, "%s", err);
  cr_expect(strstr(err, "give one secret") && strstr(err, "usage: tractor-registry"), "%s", err);
  static const char *const unknown[] = {"--adr", "127.0.0.1:1", NULL};
  cr_expect_eq(tool_status(unknown, err, sizeof err), 2, "%s", err);
  cr_expect(strstr(err, "usage: tractor-registry"), "%s", err);
}

/* tr_wait_for_actor keeps its deadline while it dials an entry's node:
 * "frozen", a child process that registered and was then stopped
 * (SIGSTOP), accepts connections in the kernel but never answers a Hello.
 * "waiter", another child, with no channel to it yet, waits for it with a
 * 1 s deadline (tdisc.svc.wait_frozen): -TR_ETIMEDOUT on time, saying why.
 * It took the handshake's 5 s bound before, and blamed the registrar. */
TR_TEST(discovery, a_wait_keeps_its_deadline_while_it_dials, .timeout = 60, .init = setup,
        .fini = teardown) {
  tr_actor_nursery_t *an;
  tr_portal_t *frozen = NULL, *waiter = NULL;
  tr_actor_opts_t o = svc_opts(TR_SPAWN_PROCESS);
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_start_actor_opts(an, "frozen", &o, &frozen), 0);
  tr_check_rc(tr_start_actor_opts(an, "waiter", &o, &waiter), 0);
  tr_check(await_count("frozen", 1, 20000) == 1, "frozen registered");
  int pid = 0;
  if (frozen)
    tr_check_rc(tr_portal_process(frozen, &pid, NULL), 0);
  tr_check(pid > 0 && kill(pid, SIGSTOP) == 0, "stopped %d", pid);
  tr_buf_t *res = NULL;
  uint64_t ms = 0;
  if (waiter) {
    tr_check_rc(tr_portal_run(waiter, "tdisc.svc.wait_frozen", NULL, &res), 0);
    tr_check_rc(tr_buf_to_u64(res, &ms), 0);
  }
  tr_check(ms > 0 && ms < 3000, "the wait returned on time: %llu ms", (unsigned long long)ms);
  if (pid > 0)
    kill(pid, SIGCONT);
  tr_buf_release(res);
  tr_assert_rc(tr_actor_nursery_close(an), 0);
  tr_portal_release(frozen);
  tr_portal_release(waiter);
  return 0;
}

/* Of two entries of one name, the newest is a node that was stopped
 * (SIGSTOP: its kernel accepts the connection, nobody answers the Hello):
 * tr_find_actor from a third node, with no channel to either, gives up on
 * it within its share of the 5 s and finds the older one, as discovery.h
 * says ("the most recently registered that answers").  It used the whole
 * 5 s on the stopped one before, and returned -TR_ETIMEDOUT.  (The stop
 * must stay well under the peer timeout, 5 s here: past it, this node
 * loses the stopped child, and its nursery fails.) */
TR_TEST(discovery, a_stopped_newest_entry_is_passed_over, .timeout = 60, .init = setup,
        .fini = teardown) {
  tr_actor_nursery_t *an;
  tr_portal_t *old = NULL, *newest = NULL, *finder = NULL;
  tr_actor_opts_t o = svc_opts(TR_SPAWN_PROCESS);
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_start_actor_opts(an, "pair", &o, &old), 0);
  tr_check(await_count("pair", 1, 20000) == 1, "the older one registered");
  tr_check_rc(tr_start_actor_opts(an, "pair", &o, &newest), 0);
  tr_check(await_count("pair", 2, 20000) == 2, "the newest one registered");
  tr_check_rc(tr_start_actor_opts(an, "finder", &o, &finder), 0);
  int rc = 0, pid = 0;
  uint64_t old_pid = old ? call_pid(old, &rc) : 0;
  tr_check_rc(rc, 0);
  if (newest)
    tr_check_rc(tr_portal_process(newest, &pid, NULL), 0);
  tr_check(pid > 0 && kill(pid, SIGSTOP) == 0, "stopped %d", pid);
  tr_buf_t *name = NULL, *res = NULL;
  uint64_t found = 0;
  int64_t t0 = tr_now();
  if (finder) {
    tr_check_rc(tr_buf_from("pair", 4, &name), 0);
    tr_check_rc(tr_portal_run(finder, "tdisc.svc.find_pid", name, &res), 0);
    tr_check_rc(tr_buf_to_u64(res, &found), 0);
  }
  int64_t ms = (tr_now() - t0) / MS;
  tr_check_eq(found, old_pid, "the older, live one was found");
  tr_check(ms < 5000, "within the lookup's 5 s: %lld ms", (long long)ms);
  if (pid > 0)
    kill(pid, SIGCONT);
  tr_buf_release(name);
  tr_buf_release(res);
  tr_assert_rc(tr_actor_nursery_close(an), 0);
  tr_portal_release(old);
  tr_portal_release(newest);
  tr_portal_release(finder);
  return 0;
}

/* A node by hand that registers "ghost" at an address where every
 * connection is accepted and closed at once (the handshake fails fast,
 * and a dial that connected is no reason to delete the entry), counting
 * the connections until told to stop. */
typedef struct ghost {
  uint8_t registrar[TR_UUID_LEN];
  int registered;   /* atomic: 1 registered, -1 failed */
  int stop;         /* atomic */
  int accepts;      /* atomic */
  char why[160];
} ghost_t;

/* The hand-made peer me (connected as fd) calls the registrar's function
 * fn with entry e as dialog cid: the body of its answer (TR_BODY_RETURN or
 * TR_BODY_ERROR), or -1 when none came. */
static int peer_call(int fd, const uint8_t me[TR_UUID_LEN], const uint8_t registrar[TR_UUID_LEN],
                     const char *fn, const tr_registry_entry_t *e, uint64_t cid) {
  tr_msg_t *m = NULL;
  struct tr_envx *x;
  if (tr_msg_new(&m) != 0 || !(x = tr__envx_get((m->body = TR_BODY_START, m))) ||
      tr__envx_set_start(x, TR_REGISTRY_NS, fn) != 0 ||
      tr__reg_pack(e, 1, &m->payload) != 0) {
    tr_msg_free(m);
    return -1;
  }
  m->cid = cid;
  x->has_src = x->has_dst = 1;
  memcpy(x->src.uuid, me, TR_UUID_LEN);
  memcpy(x->dst.uuid, registrar, TR_UUID_LEN);
  if (tr_test_peer_send(fd, m) != 0)
    return -1;
  tr_msg_t *r;
  while ((r = tr_test_peer_read(fd)) && (r->cid != cid || r->body == TR_BODY_START_ACK))
    tr_msg_free(r);
  int body = r ? (int)r->body : -1;
  tr_msg_free(r);
  return body;
}

/* ---- registrar calls whose arguments a C caller would not send ---- */

/* The peer me calls the registrar's fn with raw argument bytes (len 0: no
 * payload) as dialog cid; *first is the body of the first answer on that
 * cid, *final the final one's (-1: none), *code the Error's, and *ret the
 * Return's payload (the caller's). */
static void raw_call(int fd, const uint8_t me[TR_UUID_LEN], const uint8_t registrar[TR_UUID_LEN],
                     const char *fn, const uint8_t *args, size_t len, uint64_t cid, int *first,
                     int *final, int *code, tr_buf_t **ret) {
  tr_msg_t *m = NULL;
  struct tr_envx *x;
  *first = *final = -1;
  *code = 0;
  *ret = NULL;
  if (tr_msg_new(&m) != 0 || !(x = tr__envx_get((m->body = TR_BODY_START, m))) ||
      tr__envx_set_start(x, TR_REGISTRY_NS, fn) != 0 ||
      (len && tr_buf_from(args, len, &m->payload) != 0)) {
    tr_msg_free(m);
    return;
  }
  m->cid = cid;
  x->has_src = x->has_dst = 1;
  memcpy(x->src.uuid, me, TR_UUID_LEN);
  memcpy(x->dst.uuid, registrar, TR_UUID_LEN);
  if (tr_test_peer_send(fd, m) != 0)
    return;
  tr_msg_t *r;
  while ((r = tr_test_peer_read(fd)) != NULL) {
    int b = r->cid == cid ? (int)r->body : -1; /* heartbeats aside */
    if (b >= 0 && *first < 0)
      *first = b;
    if (b == TR_BODY_ERROR && r->x_)
      *code = (int)r->x_->u.error.code;
    if (b == TR_BODY_RETURN) {
      *ret = r->payload;
      r->payload = NULL;
    }
    tr_msg_free(r);
    if (b == TR_BODY_RETURN || b == TR_BODY_ERROR) {
      *final = b;
      break;
    }
  }
}

typedef struct lookup {
  uint8_t registrar[TR_UUID_LEN];
  int rc;
  char why[160];
  /* per call: find, wait, register (no uuid), find (not a RegistryEntries) */
  int first[4], final[4], code[4], found[4];
} lookup_t;

static void *lookup_run(void *arg) {
  lookup_t *l = arg;
  uint8_t me[TR_UUID_LEN];
  tr_test_peer_uuid(0x7c, me);
  int fd = -1;
  l->rc = tr_test_peer_dial("looker", me, 0, &fd, l->why, sizeof l->why);
  /* RegistryEntries{entries: [{name: "root"}]}: no uuid. */
  static const uint8_t by_name[] = {0x0a, 0x06, 0x0a, 0x04, 'r', 'o', 'o', 't'};
  static const uint8_t x_no_uuid[] = {0x0a, 0x03, 0x0a, 0x01, 'x'};
  static const uint8_t garbage[] = {0xff, 0xff, 0xff};
  const char *fn[4] = {"find", "wait", "register", "find"};
  const uint8_t *args[4] = {by_name, by_name, x_no_uuid, garbage};
  size_t len[4] = {sizeof by_name, sizeof by_name, sizeof x_no_uuid, sizeof garbage};
  for (int i = 0; l->rc == 0 && i < 4; i++) {
    tr_buf_t *ret = NULL;
    raw_call(fd, me, l->registrar, fn[i], args[i], len[i], (uint64_t)i + 1, &l->first[i],
             &l->final[i], &l->code[i], &ret);
    tr_registry_entry_t *v = NULL;
    size_t n = 0;
    if (ret && tr__reg_unpack(ret, 1, &v, &n) == 0)
      for (size_t k = 0; k < n; k++)
        l->found[i] += strcmp(v[k].name, "root") == 0;
    tr_registry_entries_free(v, n);
    tr_buf_release(ret);
  }
  if (fd >= 0)
    close(fd);
  return NULL;
}

/* PROTOCOL.md 11: find and wait look up by name, and an entry without a
 * uuid is enough (they demanded 16 bytes that they then ignored);
 * register still needs the uuid it registers, and fails after StartAck
 * as a function does.  Arguments that are no RegistryEntries are refused
 * in place of StartAck (section 5, step 3). */
TR_TEST(discovery, registrar_lookups_need_only_a_name, .timeout = 60, .init = setup,
        .fini = teardown) {
  static lookup_t l; /* the thread's: read after the wait */
  memset(&l, 0, sizeof l);
  tr_actor_t *r = tr__node_registrar();
  tr_assert(r != NULL, "this node is the registrar");
  tr_actor_uuid(r, l.registrar);
  tr_actor_release(r);
  tr_assert_rc(tr_to_thread(lookup_run, &l, NULL), 0);
  tr_assert(l.rc == 0, "the handshake (%s)", l.why);
  for (int i = 0; i < 2; i++) {
    tr_check(l.first[i] == TR_BODY_START_ACK && l.final[i] == TR_BODY_RETURN,
             "call %d: %d then %d (code %d)", i, l.first[i], l.final[i], l.code[i]);
    tr_check(l.found[i] == 1, "call %d found root %d times", i, l.found[i]);
  }
  tr_check(l.first[2] == TR_BODY_START_ACK && l.final[2] == TR_BODY_ERROR &&
               l.code[2] == TR_EMSGTYPE,
           "register without a uuid: %d then %d (code %d)", l.first[2], l.final[2], l.code[2]);
  tr_check(l.first[3] == TR_BODY_ERROR && l.code[3] == TR_EMSGTYPE,
           "find with no RegistryEntries: first %d (code %d)", l.first[3], l.code[3]);
  return 0;
}

static void *ghost_run(void *arg) {
  ghost_t *g = arg;
  uint8_t me[TR_UUID_LEN];
  tr_test_peer_uuid(0x6b, me);
  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), fd = -1, ok = 0;
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t sl = sizeof sa;
  char addr[64];
  if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(lfd, 64) != 0 ||
      getsockname(lfd, (struct sockaddr *)&sa, &sl) != 0) {
    snprintf(g->why, sizeof g->why, "listen: %s", strerror(errno));
    goto out;
  }
  snprintf(addr, sizeof addr, "127.0.0.1:%u", (unsigned)ntohs(sa.sin_port));
  if (tr_test_peer_dial("ghost-node", me, 0, &fd, g->why, sizeof g->why) != 0)
    goto out;
  tr_registry_entry_t e = {.name = "ghost", .addr = addr, .pid = 1};
  memcpy(e.uuid, me, TR_UUID_LEN);
  int body = peer_call(fd, me, g->registrar, "register", &e, 1);
  ok = body == TR_BODY_RETURN;
  if (!ok) {
    snprintf(g->why, sizeof g->why, "the registrar answered %s",
             body > 0 ? tr__body_name(body) : "nothing");
    goto out;
  }
  __atomic_store_n(&g->registered, 1, __ATOMIC_RELEASE);
  while (!__atomic_load_n(&g->stop, __ATOMIC_ACQUIRE)) {
    struct timeval tv = {0, 20000};
    fd_set rd;
    FD_ZERO(&rd);
    FD_SET(lfd, &rd);
    if (select(lfd + 1, &rd, NULL, NULL, &tv) > 0) {
      int c = accept(lfd, NULL, NULL);
      if (c >= 0) {
        close(c);
        __atomic_fetch_add(&g->accepts, 1, __ATOMIC_RELAXED);
      }
    }
  }
out:
  if (!ok)
    __atomic_store_n(&g->registered, -1, __ATOMIC_RELEASE);
  if (fd >= 0)
    close(fd);
  if (lfd >= 0)
    close(lfd);
  return NULL;
}

static void *join_thread(void *arg) {
  (void)pthread_join(*(pthread_t *)arg, NULL);
  return NULL;
}

/* tr_wait_for_actor pauses between rounds whose every entry failed without
 * being deleted (10 ms, doubling up to 1 s): without the pause, a second's
 * wait dialled the ghost's address thousands of times. */
TR_TEST(discovery, a_wait_pauses_between_rounds_that_find_nobody, .timeout = 60, .init = setup,
        .fini = teardown) {
  static ghost_t g; /* the thread's until it is joined */
  memset(&g, 0, sizeof g);
  tr_actor_t *r = tr__node_registrar();
  tr_assert(r != NULL, "this node is the registrar");
  tr_actor_uuid(r, g.registrar);
  tr_actor_release(r);
  pthread_t th;
  tr_assert(pthread_create(&th, NULL, ghost_run, &g) == 0, "thread");
  for (int i = 0; i < 1000 && __atomic_load_n(&g.registered, __ATOMIC_ACQUIRE) == 0; i++)
    tr_sleep(10 * MS);
  tr_check(__atomic_load_n(&g.registered, __ATOMIC_ACQUIRE) == 1, "ghost registered (%s)", g.why);
  int64_t t0 = tr_now();
  tr_portal_t *p = NULL;
  int rc = tr_wait_for_actor("ghost", t0 + 1000 * MS, &p);
  int64_t ms = (tr_now() - t0) / MS;
  tr_portal_release(p);
  int dials = __atomic_load_n(&g.accepts, __ATOMIC_RELAXED);
  tr_check_rc(rc, -TR_ETIMEDOUT);
  tr_check(ms >= 900 && ms < 3000, "the wait kept its deadline: %lld ms", (long long)ms);
  /* 10 + 20 + ... + 640 ms of pauses: 8 rounds at most in a second. */
  tr_check(dials >= 2 && dials <= 12, "the ghost's address was dialled %d times in %lld ms",
           dials, (long long)ms);
  __atomic_store_n(&g.stop, 1, __ATOMIC_RELEASE);
  tr_check_rc(tr_to_thread(join_thread, &th, NULL), 0);
  tr_check(await_count("ghost", 0, 10000) == 0, "the ghost's entry went with its channel");
  return 0;
}

/* A hand-made node that names 127.0.0.1:5 in its Hello asks the
 * registrar to register actors other than itself (as a node's keeper does
 * once a registrar is back): at that address, at another, and over the
 * root's live entry, and to drop that entry naming its own address.  The
 * connection stays open (fd) for the root's checks. */
typedef struct speaker {
  uint8_t registrar[TR_UUID_LEN];
  uint8_t taken[TR_UUID_LEN]; /* the root's uuid, registered at the registry address */
  int fd;
  int at_own, elsewhere, over_live, drop_live; /* the answers' bodies */
  char why[160];
} speaker_t;

static void *speaker_run(void *arg) {
  speaker_t *s = arg;
  uint8_t me[TR_UUID_LEN];
  tr_test_peer_uuid(0x4e, me);
  s->at_own = s->elsewhere = s->over_live = s->drop_live = -1;
  if (tr_test_peer_dial_at("speaker", me, "127.0.0.1:5", 0, &s->fd, s->why, sizeof s->why) != 0)
    return NULL;
  tr_registry_entry_t e = {.name = "spoken", .addr = "127.0.0.1:5", .pid = 1};
  tr_test_peer_uuid(0x4f, e.uuid);
  s->at_own = peer_call(s->fd, me, s->registrar, "register", &e, 1);
  e.name = "elsewhere";
  e.addr = "127.0.0.1:6";
  tr_test_peer_uuid(0x50, e.uuid);
  s->elsewhere = peer_call(s->fd, me, s->registrar, "register", &e, 2);
  e.name = "root";
  e.addr = "127.0.0.1:5";
  memcpy(e.uuid, s->taken, TR_UUID_LEN);
  s->over_live = peer_call(s->fd, me, s->registrar, "register", &e, 3);
  /* Naming its own address does not let it drop the root's entry, which
   * is at another (and answers). */
  s->drop_live = peer_call(s->fd, me, s->registrar, "unregister", &e, 4);
  return NULL;
}

/* The address of the one entry named `name`, into buf ("" when not one). */
static void addr_of(const char *name, char *buf, size_t len) {
  tr_registry_entry_t *v;
  size_t n;
  buf[0] = '\0';
  if (tr_registry_list(&v, &n) != 0)
    return;
  int k = 0;
  for (size_t i = 0; i < n; i++)
    if (strcmp(v[i].name, name) == 0 && k++ == 0)
      snprintf(buf, len, "%s", v[i].addr);
  if (k != 1)
    buf[0] = '\0';
  tr_registry_entries_free(v, n);
}

TR_TEST(discovery, a_node_registers_other_actors_only_at_the_address_it_listens_on, .timeout = 60,
        .init = setup, .fini = teardown) {
  static speaker_t s; /* the thread's while it runs */
  memset(&s, 0, sizeof s);
  s.fd = -1;
  tr_actor_t *r = tr__node_registrar();
  tr_assert(r != NULL, "this node is the registrar");
  tr_actor_uuid(r, s.registrar);
  tr_actor_release(r);
  tr_actor_uuid(tr_self(), s.taken);
  char root_at[64], now_at[64];
  addr_of("root", root_at, sizeof root_at);
  tr_assert(root_at[0] != '\0', "the root is registered");
  tr_assert_rc(tr_to_thread(speaker_run, &s, NULL), 0);
  tr_check(s.at_own == TR_BODY_RETURN, "at its own address: accepted (%d; %s)", s.at_own, s.why);
  tr_check(s.elsewhere == TR_BODY_ERROR, "at another address: refused (%d)", s.elsewhere);
  tr_check(s.over_live == TR_BODY_ERROR, "over a live entry: refused (%d)", s.over_live);
  tr_check(s.drop_live == TR_BODY_ERROR, "dropping a live entry elsewhere: refused (%d)",
           s.drop_live);
  tr_check(count_named("spoken") == 1 && count_named("elsewhere") == 0, "the registry agrees");
  addr_of("root", now_at, sizeof now_at);
  tr_check(strcmp(now_at, root_at) == 0, "the root's entry is where it was (%s, not %s)", root_at,
           now_at);
  if (s.fd >= 0)
    close(s.fd);
  tr_check(await_count("spoken", 0, 10000) == 0, "its entries go with its channel");
  return 0;
}

static void setup_wildcard(void) {
  setup();
  setenv("TR_BIND_ADDR", "0.0.0.0", 1);
  setenv("TR_ALLOW_INSECURE", "1", 1);
}

static void teardown_wildcard(void) {
  unsetenv("TR_BIND_ADDR");
  unsetenv("TR_ALLOW_INSECURE");
  teardown();
}

/* A node that listens on every interface (bind_addr 0.0.0.0) registers
 * the address the registrar reaches it by, which another host could dial,
 * not 0.0.0.0:port, which means "this host" wherever it is read. */
TR_TEST(discovery, a_wildcard_listener_registers_an_address_others_can_dial, .timeout = 60,
        .init = setup_wildcard, .fini = teardown_wildcard) {
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL, *f = NULL;
  tr_actor_opts_t o = svc_opts(TR_SPAWN_PROCESS);
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  start_found(an, "svc", &o, &p, &f);
  tr_registry_entry_t *v = NULL;
  size_t n = 0;
  tr_check_rc(tr_registry_list(&v, &n), 0);
  int seen = 0;
  for (size_t i = 0; i < n; i++)
    if (strcmp(v[i].name, "svc") == 0) {
      seen++;
      tr_check(strncmp(v[i].addr, "127.0.0.1:", 10) == 0 && strcmp(v[i].addr, "127.0.0.1:0") != 0,
               "svc is registered at %s", v[i].addr);
    }
  tr_check(seen == 1, "svc is listed once (%d)", seen);
  tr_registry_entries_free(v, n);
  int rc = -TR_ENOTFOUND;
  tr_check(f && call_pid(f, &rc) > 0 && rc == 0, "svc answers at its entry (%d)", rc);
  tr_check_rc(tr_actor_nursery_cancel(an), 0);
  tr_check_rc(tr_actor_nursery_close(an), 0);
  tr_portal_release(p);
  tr_portal_release(f);
  return 0;
}

Test(discovery, registry_off_turns_discovery_off, .timeout = 30) {
  setenv("TR_REGISTRY_ADDR", "off", 1);
  int rc = tr_main(0, NULL, root_off, NULL, NULL);
  cr_expect_eq(rc, 0, "%s", tr_strerror(rc));
}

/* ---- a standalone registrar (tools/tractor-registry) -------------------------------------------- */

typedef struct tool_run {
  char addr[64];
  pid_t tool;
  int restarted;
} tool_run_t;

static int root_with_tool(void *arg) {
  tool_run_t *t = arg;
  char mine[64];
  int registrar = 1;
  tr_assert_rc(tr_node_addr(mine, sizeof mine, &registrar), 0);
  tr_assert(registrar == 0, "the tool is the registrar, not this root");
  tr_portal_t *p = NULL, *f = NULL;
  tr_check_rc(tr_find_actor("root", &f), 0);
  tr_portal_release(f);
  tr_actor_nursery_t *an;
  tr_actor_opts_t o = svc_opts(TR_SPAWN_PROCESS);
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  start_found(an, "svc", &o, &p, &f);
  int rc;
  uint64_t pid = f ? call_pid(f, &rc) : 0;
  tr_check(pid != 0 && pid != (uint64_t)getpid(), "found the child");
  /* The registrar dies: the channels between the others stay. */
  kill(t->tool, SIGKILL);
  waitpid(t->tool, NULL, 0);
  uint64_t again = f ? call_pid(f, &rc) : 0;
  tr_check_rc(rc, 0);
  tr_check(again == pid, "the child answers over the channel it had");
  tr_portal_t *g = NULL;
  tr_check(tr_find_actor("svc", &g) == -TR_EIO, "no registrar: a clear error, no hang");
  /* A daemon started now registers first, is refused at once, and serves
   * unregistered (discovery.h): its first call is not held up. */
  tr_portal_t *u = NULL;
  tr_actor_opts_t ot = svc_opts(TR_SPAWN_THREAD);
  int64_t t0 = tr_now();
  tr_check_rc(tr_start_actor_opts(an, "unlisted", &ot, &u), 0);
  uint64_t upid = u ? call_pid(u, &rc) : 0;
  tr_check_rc(rc, 0);
  tr_check(upid == (uint64_t)getpid() && tr_now() - t0 < 2000 * MS,
           "it serves unregistered, at once (%lld ms)", (long long)((tr_now() - t0) / MS));
  /* A new registrar takes the port over; a new registration lands there. */
  t->tool = tr_test_registry_tool_start(t->addr, NULL);
  t->restarted = t->tool > 0;
  tr_check(t->restarted, "a new registrar on the same port");
  /* The nodes' keepers register their live actors there again: the child
   * process's svc, this root, and unlisted, which could not register when
   * it started. */
  tr_check(await_count("svc", 1, 10000) == 1, "svc registered again");
  tr_check(await_at("root", mine, 10000), "this root registered again at %s", mine);
  tr_check(await_count("unlisted", 1, 10000) == 1, "unlisted registered once it could");
  tr_portal_t *s2 = NULL;
  tr_check_rc(tr_find_actor("svc", &s2), 0);
  tr_check(s2 && call_pid(s2, &rc) == pid && rc == 0, "svc is found there and answers");
  tr_portal_release(s2);
  tr_portal_t *q = NULL;
  start_found(an, "late", &o, &q, &g);
  tr_portal_release(g);
  tr_check_rc(tr_actor_nursery_cancel(an), 0);
  tr_check_rc(tr_actor_nursery_close(an), 0);
  tr_portal_release(p);
  tr_portal_release(q);
  tr_portal_release(u);
  tr_portal_release(f);
  return 0;
}

/* Runs root under tr_main with a tractor-registry of its own as the
 * registrar (t->tool, which root may kill and start again), then stops the
 * registrar running at the end: SIGTERM, a clean exit. */
static void with_tool(tr_task_fn root) {
  tool_run_t t = {0};
  cr_assert_eq(tr__test_reserve_registry(t.addr, sizeof t.addr), 0);
  t.tool = tr_test_registry_tool_start(t.addr, NULL);
  cr_assert(t.tool > 0, "tractor-registry started at %s", t.addr);
  int rc = tr_main(0, NULL, root, &t, NULL);
  cr_expect_eq(rc, 0, "%s", tr_strerror(rc));
  cr_expect_eq(__atomic_load_n(&tr__test_slot.count, __ATOMIC_RELAXED), 0, "%s",
               tr__test_slot_text() ? tr__test_slot_text() : "");
  if (t.tool > 0) {
    int st = -1;
    cr_expect_eq(tr_test_registry_tool_stop(t.tool, &st), 0,
                 "the registrar did not exit within 10 s of SIGTERM: killed");
    cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0, "SIGTERM: a clean exit (status %#x)", st);
  }
}

Test(discovery, a_standalone_registrar_its_death_and_its_successor, .timeout = 60,
     .init = setup, .fini = teardown) {
  with_tool(root_with_tool);
}

/* Any node may tell the registrar that an entry's node refuses
 * connections (a failed lookup does), but that is true only from where it
 * stands: the registrar drops the entry only if the node refuses it too.
 * Here the root asks it to drop a live child's entry: it answers the
 * registrar, so the entry stays, and the ask is refused, saying why.  (A
 * node that really refuses is dropped: see
 * a_child_that_closes_its_listener_is_not_found.)  Before, any node's
 * word deleted a healthy entry for everyone. */
TR_TEST(discovery, another_nodes_word_does_not_drop_a_live_entry, .timeout = 60, .init = setup,
        .fini = teardown) {
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL, *f = NULL, *rp = NULL;
  tr_actor_opts_t o = svc_opts(TR_SPAWN_PROCESS);
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  start_found(an, "svc", &o, &p, &f);
  tr_registry_entry_t *v = NULL;
  size_t n = 0;
  tr_check_rc(tr_registry_list(&v, &n), 0);
  tr_buf_t *args = NULL;
  for (size_t i = 0; i < n && !args; i++)
    if (strcmp(v[i].name, "svc") == 0)
      tr_check_rc(tr__reg_pack(&v[i], 1, &args), 0);
  tr_actor_t *r = tr__node_registrar();
  tr_assert(r && args, "this node is the registrar; svc is listed");
  tr_assert_rc(tr_portal_from_actor(r, &rp), 0);
  tr_check_rc(tr_portal_run(rp, TR_REGISTRY_NS ".unregister", args, NULL), -TR_EREMOTE);
  const char *msg = tr_error_message(tr_error_last());
  tr_check(msg && strstr(msg, "answers here"), "why: %s", msg ? msg : "(none)");
  tr_check(count_named("svc") == 1, "the entry is kept");
  tr_registry_entries_free(v, n);
  tr_buf_release(args);
  tr_portal_release(rp);
  tr_actor_release(r);
  tr_assert_rc(tr_actor_nursery_close(an), 0);
  tr_portal_release(p);
  tr_portal_release(f);
  return 0;
}

/* A registrar stopped (SIGTERM) while this node is connected to it exits
 * at once: it closes its end of every node's channel, rather than wait
 * for them to hang up (it waited until this node left, ~14 s in an
 * audit, its hang report firing), and this node, seeing its channel to
 * the registrar end, dials the address again at its next call: a new
 * registrar there answers it. */
static int root_tool_stops(void *arg) {
  tool_run_t *t = arg;
  tr_registry_entry_t *v = NULL;
  size_t n = 0;
  tr_check_rc(tr_registry_list(&v, &n), 0);
  tr_registry_entries_free(v, n);
  int64_t t0 = tr_now();
  kill(t->tool, SIGTERM);
  int st = -1;
  pid_t w = 0;
  while ((w = waitpid(t->tool, &st, WNOHANG)) == 0 && tr_now() - t0 < 10000 * MS)
    tr_sleep(10 * MS);
  int64_t ms = (tr_now() - t0) / MS;
  tr_check(w == t->tool && WIFEXITED(st) && WEXITSTATUS(st) == 0,
           "the registrar exited 0 (status %#x)", st);
  tr_check(ms < 3000, "at once, with this node still connected (%lld ms)", (long long)ms);
  if (w != t->tool)
    kill(t->tool, SIGKILL), waitpid(t->tool, NULL, 0);
  t->tool = tr_test_registry_tool_start(t->addr, NULL);
  tr_check(t->tool > 0, "a new registrar on the same port");
  int rc = -1;
  char why[256] = "";
  /* Until its end of the old channel is seen; 20 s in all, not 200 calls
   * (a call may wait out its own 5 s deadline). */
  for (int64_t end = tr_now() + 20000 * MS; rc != 0 && tr_now() < end;) {
    rc = tr_registry_list(&v, &n);
    if (rc == 0) {
      tr_registry_entries_free(v, n);
    } else {
      snprintf(why, sizeof why, "%s", tr_error_last() ? tr_error_message(tr_error_last()) : "");
      tr_sleep(10 * MS);
    }
  }
  tr_check_rc(rc, 0, "the new registrar answers this node (last: %s)", why);
  return 0;
}

Test(discovery, a_registrar_stopped_with_nodes_connected_exits_and_they_move_on, .timeout = 60,
     .init = setup, .fini = teardown) {
  with_tool(root_tool_stops);
}

/* A log hook that counts the lines of one level holding both needles
 * (the second may be NULL), for tests that check what a node logs. */
typedef struct log_watch {
  int level;
  const char *needle, *also;
  pthread_mutex_t lock;
  int seen;
} log_watch_t;

static void watch_hook(void *arg, int level, const char *line) {
  log_watch_t *w = arg;
  if (level == w->level && strstr(line, w->needle) && (!w->also || strstr(line, w->also))) {
    pthread_mutex_lock(&w->lock);
    w->seen++;
    pthread_mutex_unlock(&w->lock);
  }
}

static int watch_seen(log_watch_t *w) {
  pthread_mutex_lock(&w->lock);
  int n = w->seen;
  pthread_mutex_unlock(&w->lock);
  return n;
}

/* Waits until w has counted a line, at most ms; the count. */
static int watch_wait(log_watch_t *w, int ms) {
  int n = 0;
  for (int64_t end = tr_now() + ms * MS; !(n = watch_seen(w)) && tr_now() < end;)
    if (tr_sleep(2 * MS) != 0)
      break;
  return n;
}

/* A registrar that comes back with a secret this node does not have:
 * tr_find_actor says -TR_EPERM, as discovery.h promises, not the -TR_EIO
 * of a registrar that cannot be reached (the dial's own code was lost);
 * and the node's keeper, which dials it again to register this node's
 * actors there, says why it cannot. */
static int root_registrar_changes_secret(void *arg) {
  tool_run_t *t = arg;
  /* Its keeper says why it cannot register again (OPERATIONS.md: a
   * refused proof is logged), once, at WARN. */
  static log_watch_t w = {TR_LOG_WARN, "cannot be reached again", "secret",
                          PTHREAD_MUTEX_INITIALIZER, 0};
  w.seen = 0;
  tr_log_set_hook(watch_hook, &w);
  tr_portal_t *p = NULL;
  tr_check_rc(tr_find_actor("root", &p), 0);
  tr_portal_release(p);
  p = NULL;
  kill(t->tool, SIGKILL);
  waitpid(t->tool, NULL, 0);
  t->tool = tr_test_registry_tool_start(t->addr, "a secret this node lacks");
  tr_check(t->tool > 0, "a new registrar on the same port");
  int rc = -1;
  /* Until this node has seen the old channel end (its calls fail with
   * -TR_EIO meanwhile). */
  for (int64_t end = tr_now() + 20000 * MS; rc != -TR_EPERM && tr_now() < end;) {
    rc = tr_find_actor("root", &p);
    tr_portal_release(p);
    p = NULL;
    if (rc != -TR_EPERM && tr_sleep(10 * MS) != 0)
      break;
  }
  tr_check_rc(rc, -TR_EPERM);
  const tr_error_t *e = tr_error_last();
  tr_check(e && strstr(tr_error_message(e), "secret"), "the error says why: %s",
           e ? tr_error_message(e) : "(none)");
  (void)watch_wait(&w, 10000);
  /* Its dials go on (1 s apart at most): still the one warning. */
  tr_check_rc(tr_sleep(2500 * MS), 0);
  int warned = watch_seen(&w);
  tr_log_set_hook(NULL, NULL);
  tr_check_eq(warned, 1, "the keeper warned once that the registrar has another secret");
  return 0;
}

Test(auth, a_registrar_with_another_secret_is_eperm_for_a_running_node, .timeout = 60,
     .init = setup, .fini = teardown) {
  with_tool(root_registrar_changes_secret);
}

/* The keeper's pauses between failed dials double from 10 ms but stop at
 * 1 s (node.c, "the keeper"): after a registrar has been down for 6 s, a
 * new one on its port has this node's actors again within about a second.
 * Doubling without the bound would have paused 5 s by then (dials at
 * 2.5 s, then 5.1 s, then 10.2 s): the root's entry would come back 4 s
 * after the restart. */
static int root_keeper_cap(void *arg) {
  tool_run_t *t = arg;
  char mine[64];
  int registrar = 1;
  tr_assert_rc(tr_node_addr(mine, sizeof mine, &registrar), 0);
  tr_assert(registrar == 0, "the tool is the registrar, not this root");
  tr_check(await_at("root", mine, 10000), "this root is registered at %s", mine);
  kill(t->tool, SIGKILL);
  waitpid(t->tool, NULL, 0);
  t->tool = -1;
  /* The port is held meanwhile (bound, not listening: dials are refused),
   * so that no connect elsewhere takes it as its source port. */
  struct sockaddr_in sa;
  int one = 1, hold = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  tr_check(hold >= 0 && tr__addr_parse(t->addr, &sa) == 0 &&
               setsockopt(hold, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == 0 &&
               bind(hold, (struct sockaddr *)&sa, sizeof sa) == 0,
           "the registry port held: %s", strerror(errno));
  tr_check_rc(tr_sleep(6000 * MS), 0); /* down long enough for the pauses to reach the bound */
  if (hold >= 0)
    close(hold);
  t->tool = tr_test_registry_tool_start(t->addr, NULL);
  tr_check(t->tool > 0, "a new registrar on the same port");
  int64_t t0 = tr_now();
  int back = t->tool > 0 && await_at("root", mine, 10000);
  int64_t ms = (tr_now() - t0) / MS;
  tr_check(back, "this root registered again at %s", mine);
  tr_check(ms < 2500, "registered again %lld ms after the restart (the keeper's pause is at most 1 s)",
           (long long)ms);
  return 0;
}

Test(discovery, the_keepers_pause_between_dials_is_bounded, .timeout = 60, .init = setup,
     .fini = teardown) {
  with_tool(root_keeper_cap);
}

/* ---- trust: authenticated handshakes (transport/auth.h) ----------------------------------- */

#include "transport/auth.h"
#include "transport/channel.h"
#include "transport/hello.h"

#define SECRET "correct horse battery staple"

static void setup_secret(void) {
  setenv("TR_SECRET", SECRET, 1);
  tr_test_procs_setup();
}
static void teardown_secret(void) {
  unsetenv("TR_SECRET");
  tr_test_procs_check();
}

/* 1 when /proc/<pid>/environ holds the key a parent handed over. */
static int environ_shows_key(pid_t pid) {
  enum { MAX = 1 << 16 };
  char path[64], *buf = malloc(MAX); /* not on a task's stack */
  snprintf(path, sizeof path, "/proc/%d/environ", (int)pid);
  FILE *f = buf ? fopen(path, "r") : NULL;
  if (!f) {
    free(buf);
    return -1;
  }
  size_t n = fread(buf, 1, MAX - 1, f);
  fclose(f);
  buf[n] = '\0';
  int shown = 0;
  for (size_t i = 0; i < n; i += strlen(buf + i) + 1)
    if (strncmp(buf + i, TR_AUTH_KEY_ENV "=", strlen(TR_AUTH_KEY_ENV) + 1) == 0 &&
        buf[i + strlen(TR_AUTH_KEY_ENV) + 1] != '\0')
      shown = 1;
  free(buf);
  return shown;
}

TR_TEST(auth, nodes_with_one_secret_find_and_call_each_other, .timeout = 60,
        .init = setup_secret, .fini = teardown_secret) {
  tr_check(tr__auth_on(), "TR_SECRET gives the process a key");
  tr_actor_nursery_t *an;
  tr_portal_t *a = NULL, *b = NULL, *f = NULL;
  tr_actor_opts_t o = svc_opts(TR_SPAWN_PROCESS);
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  /* Each child connects back to this process (one authenticated
   * handshake), registers at the registrar here (another), and "a" dials
   * "b"'s node (a third, between two children). */
  tr_check_rc(tr_start_actor_opts(an, "a", &o, &a), 0);
  start_found(an, "b", &o, &b, &f);
  int rc = -TR_ENOTFOUND;
  uint64_t pid_b = f ? call_pid(f, &rc) : 0;
  tr_check_rc(rc, 0);
  tr_buf_t *args = NULL, *r = NULL;
  uint64_t got = 0;
  tr_assert_rc(tr_buf_from_str("b", &args), 0);
  tr_check_rc(tr_portal_run(a, "tdisc.svc.find_and_call", args, &r), 0);
  if (r)
    tr_check_rc(tr_buf_to_u64(r, &got), 0);
  tr_check(got == pid_b && got != 0, "a found and called b: %llu, b is %llu",
           (unsigned long long)got, (unsigned long long)pid_b);
  tr_check(environ_shows_key((pid_t)pid_b) == 0,
           "the key is not left in the child's environment");
  tr_buf_release(args);
  tr_buf_release(r);
  tr_check_rc(tr_actor_nursery_cancel(an), 0);
  tr_check_rc(tr_actor_nursery_close(an), 0);
  tr_portal_release(a);
  tr_portal_release(b);
  tr_portal_release(f);
  return 0;
}

static int root_find_root(void *arg) {
  (void)arg;
  tr_portal_t *p = NULL;
  int rc = tr_find_actor("root", &p);
  tr_portal_release(p);
  return rc;
}

/* tr_main against the registrar at addr, with TR_SECRET (or none). */
static int start_with(const char *addr, const char *secret) {
  setenv("TR_REGISTRY_ADDR", addr, 1);
  if (secret)
    setenv("TR_SECRET", secret, 1);
  else
    unsetenv("TR_SECRET");
  int rc = tr_main(0, NULL, root_find_root, NULL, NULL);
  unsetenv("TR_SECRET");
  return rc;
}

Test(auth, only_nodes_that_share_the_secret_are_let_in, .timeout = 60, .init = setup,
     .fini = teardown) {
  char addr[64];
  cr_assert_eq(tr__test_reserve_registry(addr, sizeof addr), 0);
  pid_t tool = tr_test_registry_tool_start(addr, "the registry's secret");
  cr_assert(tool > 0, "tractor-registry --secret started at %s", addr);
  cr_expect_eq(start_with(addr, "another secret"), -TR_EPERM);
  const tr_error_t *e = tr_error_last();
  cr_expect(e && strstr(tr_error_message(e), "secret"), "the error says why: %s",
            e ? tr_error_message(e) : "(none)");
  cr_expect_eq(start_with(addr, NULL), -TR_EPERM, "no secret at all");
  /* The same secret from a file (a trailing newline is not part of it). */
  char path[] = "/tmp/tr-secret-XXXXXX";
  int fd = mkstemp(path);
  cr_assert(fd >= 0);
  cr_assert_eq(write(fd, "the registry's secret\n", 22), 22);
  close(fd);
  setenv("TR_SECRET_FILE", path, 1);
  cr_expect_eq(start_with(addr, NULL), 0, "TR_SECRET_FILE: %s",
               tr_error_last() ? tr_error_message(tr_error_last()) : "");
  unlink(path);
  cr_expect_eq(start_with(addr, NULL), -TR_EINVAL, "a TR_SECRET_FILE that is gone");
  e = tr_error_last();
  cr_expect(e && strstr(tr_error_message(e), path), "the error names the file");
  unsetenv("TR_SECRET_FILE");
  int st = -1;
  cr_expect_eq(tr_test_registry_tool_stop(tool, &st), 0, "the registrar stops on SIGTERM");
  /* A registrar without a secret, a node with one. */
  tool = tr_test_registry_tool_start(addr, NULL);
  cr_assert(tool > 0);
  cr_expect_eq(start_with(addr, SECRET), -TR_EPERM, "a node with a secret, a registrar without");
  cr_expect_eq(tr_test_registry_tool_stop(tool, &st), 0, "the registrar stops on SIGTERM");
}

/* ---- 1,000 wrong, replayed and proofless handshakes ---- */

typedef struct attack {
  int n;
  int closed;  /* connections the registrar closed after the bad confirmation */
  int answered; /* ... that got the registrar's Hello first */
  char why[160];
} attack_t;

static void *attack_run(void *arg) {
  attack_t *t = arg;
  uint8_t uuid[TR_UUID_LEN];
  tr_test_peer_uuid(0xa0, uuid);
  tr_hello_info_t hi = {.name = "intruder", .uuid = uuid};
  tr_msg_t *hello, *peer, *good = NULL;
  tr_hs_t hs = {0};
  uint8_t *hframe = NULL, *gframe = NULL;
  size_t hlen = 0, glen = 0;
  if (tr__hello_new(&hi, &hello) != 0)
    return NULL;
  tr__hs_offer(&hs, hello); /* this process has the key: a nonce */
  tr__frame_encode(hello, 0, &hframe, &hlen);
  /* One honest handshake, whose valid confirmation is recorded and never sent. */
  int fd = tr_test_peer_connect();
  if (fd >= 0 && tr_test_peer_send_all(fd, hframe, hlen) == 0 && (peer = tr_test_peer_read(fd)) != NULL) {
    if (tr__hs_confirm(&hs, peer, &good) == 0)
      tr__frame_encode(good, 0, &gframe, &glen);
    tr_msg_free(peer);
  }
  if (fd >= 0)
    close(fd);
  if (!gframe) {
    snprintf(t->why, sizeof t->why, "the honest handshake did not get a valid answer");
    goto out;
  }
  for (int i = 0; i < t->n; i++) {
    /* The recorded Hello again (the same nonce); then the recorded proof
     * (a replay), a proof under another key, or none. */
    uint8_t *bad = NULL;
    size_t blen = 0;
    if (i % 3 == 0) {
      bad = gframe;
      blen = glen;
    } else {
      tr_msg_t *c;
      tr_msg_new(&c);
      c->body = TR_BODY_HELLO;
      struct tr_envx *x = tr__envx_get(c);
      x->u.hello.version = TR_PROTO_VERSION;
      memcpy(x->u.hello.id.uuid, uuid, TR_UUID_LEN);
      if (i % 3 == 1) {
        uint8_t junk[TR_AUTH_PROOF];
        for (size_t j = 0; j < sizeof junk; j++)
          junk[j] = (uint8_t)(i * 7 + j);
        tr_buf_from(junk, sizeof junk, &c->payload);
      }
      tr__frame_encode(c, 0, &bad, &blen);
      tr_msg_free(c);
    }
    fd = tr_test_peer_connect();
    if (fd < 0) {
      snprintf(t->why, sizeof t->why, "connect %d failed: %s", i, strerror(errno));
      break;
    }
    if (tr_test_peer_send_all(fd, hframe, hlen) == 0 && (peer = tr_test_peer_read(fd)) != NULL) {
      t->answered++;
      tr_msg_free(peer);
      uint8_t one;
      if (tr_test_peer_send_all(fd, bad, blen) == 0 && recv(fd, &one, 1, 0) == 0)
        t->closed++;
    }
    close(fd);
    if (bad != gframe)
      free(bad);
  }
out:
  tr_msg_free(hello);
  tr_msg_free(good);
  free(hframe);
  free(gframe);
  return NULL;
}

/* ---- frames for nobody ---- */

/* A peer node (a raw socket after an honest handshake) sends n Stop frames
 * from and to random uuids, then a Start to nobody, whose Error answer
 * says every earlier frame has been handled.  The live actors are counted
 * then, while the channel is still up. */
typedef struct flood {
  int n, rc, answered;
  uint64_t live;
  char why[160];
} flood_t;

static void *flood_run(void *arg) {
  flood_t *f = arg;
  uint8_t me[TR_UUID_LEN];
  tr_test_peer_uuid(0x5a, me);
  int fd;
  tr_msg_t *m;
  f->rc = tr_test_peer_dial("flooder", me, 0, &fd, f->why, sizeof f->why);
  uint64_t seed = 0x9e3779b97f4a7c15ull;
  for (int i = 0; f->rc == 0 && i < f->n; i++) {
    if (tr_msg_new(&m) != 0)
      break;
    m->body = TR_BODY_STOP;
    m->cid = 1;
    struct tr_envx *x = tr__envx_get(m);
    x->has_src = x->has_dst = 1;
    for (size_t j = 0; j < TR_UUID_LEN; j++) {
      seed = seed * 6364136223846793005ull + 1442695040888963407ull;
      x->src.uuid[j] = (uint8_t)(seed >> 56);
      x->dst.uuid[j] = (uint8_t)(seed >> 48);
    }
    f->rc = tr_test_peer_send(fd, m);
  }
  if (f->rc == 0 && (m = tr_test_peer_start_to_nobody(me, 7)) != NULL) {
    f->rc = tr_test_peer_send(fd, m);
    while (f->rc == 0 && (m = tr_test_peer_read(fd)) != NULL) {
      int done = m->body == TR_BODY_ERROR && m->cid == 7; /* heartbeats aside */
      tr_msg_free(m);
      if (done) {
        f->answered = 1;
        break;
      }
    }
    tr_stats_t st;
    tr_stats(&st);
    f->live = st.actors_live;
  }
  if (fd >= 0)
    close(fd);
  return NULL;
}

TR_TEST(discovery, frames_for_nobody_make_no_actors, .timeout = 60, .init = setup,
        .fini = teardown) {
  static flood_t f; /* the thread's: read after the wait */
  f.n = 5000;
  tr_stats_t before;
  tr_stats(&before);
  tr_assert_rc(tr_to_thread(flood_run, &f, NULL), 0);
  tr_check(f.rc == 0, "the flood went out (%d: %s)", f.rc, f.why);
  tr_check(f.answered, "the Start to nobody was answered");
  /* The peer's channel and proxy, and the proxy the answer went through. */
  tr_check(f.live <= before.actors_live + 3, "%llu actors live, %llu before",
           (unsigned long long)f.live, (unsigned long long)before.actors_live);
  return 0;
}

/* PROTOCOL.md 4, item 8: a frame for an actor that is not there is
 * answered in the name of the actor addressed.  A Start to nobody gets
 * Error(TR_ECLOSED) and a whole-actor Cancel gets CancelAck, each with the
 * addressed uuid as the envelope's src, and the Error's src is that uuid
 * too (no name: the Start gave none), not a made-up actor of zero uuid. */
typedef struct nobody {
  int rc, error_ok, ack_ok;
  char why[160], seen[200];
} nobody_t;

static void *nobody_run(void *arg) {
  nobody_t *f = arg;
  uint8_t me[TR_UUID_LEN], ee[TR_UUID_LEN];
  tr_test_peer_uuid(0x6b, me);
  memset(ee, 0xee, sizeof ee); /* tr_test_peer_start_to_nobody's dst */
  int fd;
  tr_msg_t *m;
  f->rc = tr_test_peer_dial("asker", me, 0, &fd, f->why, sizeof f->why);
  if (f->rc == 0 && (m = tr_test_peer_start_to_nobody(me, 7)) != NULL)
    f->rc = tr_test_peer_send(fd, m);
  if (f->rc == 0 && tr_msg_new(&m) == 0) {
    m->body = TR_BODY_CANCEL;
    m->cid = 8;
    struct tr_envx *x = tr__envx_get(m);
    x->has_src = x->has_dst = 1;
    memcpy(x->src.uuid, me, TR_UUID_LEN);
    memcpy(x->dst.uuid, ee, TR_UUID_LEN);
    x->u.cancel.whole_actor = 1;
    f->rc = tr_test_peer_send(fd, m);
  }
  while (f->rc == 0 && !(f->error_ok && f->ack_ok) && (m = tr_test_peer_read(fd)) != NULL) {
    const struct tr_envx *x = m->x_;
    int from_ee = x && x->has_src && memcmp(x->src.uuid, ee, TR_UUID_LEN) == 0;
    if (m->body == TR_BODY_ERROR && m->cid == 7) {
      f->error_ok = from_ee && x->u.error.code == TR_ECLOSED && x->u.error.has_src &&
                    memcmp(x->u.error.src.uuid, ee, TR_UUID_LEN) == 0 &&
                    (!x->u.error.src.name || !x->u.error.src.name[0]);
      snprintf(f->seen, sizeof f->seen, "Error: envelope src %s, Error.src %s",
               from_ee ? "ok" : "wrong", x->u.error.src.name ? x->u.error.src.name : "(no name)");
    } else if (m->body == TR_BODY_CANCEL_ACK && m->cid == 8) {
      f->ack_ok = from_ee && x->u.cancel.whole_actor && x->u.cancel.acknowledged;
      if (!f->ack_ok)
        snprintf(f->seen, sizeof f->seen, "CancelAck: envelope src %s", from_ee ? "ok" : "wrong");
    }
    int wrong = (m->body == TR_BODY_ERROR && m->cid == 7 && !f->error_ok) ||
                (m->body == TR_BODY_CANCEL_ACK && m->cid == 8 && !f->ack_ok);
    tr_msg_free(m); /* heartbeats aside */
    if (wrong)
      break;
  }
  if (fd >= 0)
    close(fd);
  return NULL;
}

TR_TEST(discovery, frames_for_nobody_are_answered_in_the_addressed_actors_name, .timeout = 60,
        .init = setup, .fini = teardown) {
  static nobody_t f; /* the thread's: read after the wait */
  tr_assert_rc(tr_to_thread(nobody_run, &f, NULL), 0);
  tr_check(f.rc == 0, "the frames went out (%d: %s)", f.rc, f.why);
  tr_check(f.error_ok, "the Start to nobody: %s", f.seen);
  tr_check(f.ack_ok, "the actor cancel of nobody: %s", f.seen);
  return 0;
}

/* A peer that closes its connection in the middle of a frame (half a
 * header): no orderly close (-TR_ECLOSED) but a broken connection,
 * -TR_EIO, which the node logs as a warning saying so (PROTOCOL.md 4). */
typedef struct cut {
  int rc;
  char why[160];
} cut_t;

static void *cut_run(void *arg) {
  cut_t *c = arg;
  uint8_t me[TR_UUID_LEN];
  tr_test_peer_uuid(0x5d, me);
  int fd = -1;
  c->rc = tr_test_peer_dial("cutter", me, 0, &fd, c->why, sizeof c->why);
  static const uint8_t half[2] = {0x10, 0x00}; /* 2 of a header's 4 bytes */
  if (c->rc == 0 && tr_test_peer_send_all(fd, half, sizeof half) != 0)
    c->rc = -1;
  if (fd >= 0)
    close(fd);
  return NULL;
}

TR_TEST(discovery, an_eof_in_the_middle_of_a_frame_is_a_broken_connection, .timeout = 60,
        .init = setup, .fini = teardown) {
  static cut_t c; /* the thread's: read after the wait */
  static log_watch_t w = {TR_LOG_WARN, "closed the connection in the middle of a frame", NULL,
                          PTHREAD_MUTEX_INITIALIZER, 0};
  w.seen = 0;
  tr_log_set_hook(watch_hook, &w);
  tr_check_rc(tr_to_thread(cut_run, &c, NULL), 0);
  tr_check(c.rc == 0, "the peer handshook and sent half a header (%s)", c.why);
  int seen = watch_wait(&w, 10000);
  tr_log_set_hook(NULL, NULL);
  tr_check(seen, "the node warned of a connection cut in the middle of a frame");
  return 0;
}

/* A peer that sends calls and reads none of the answers: once more than
 * 1 MiB of them waits in the channel (tr__chan_wire_max, 256 MiB by
 * default) and the peer has taken none for a while (a third of
 * peer_timeout; 200 ms here, tr__chan_deaf_after_ns), the peer is dead and
 * its connection closed, rather than buffered for ever.
 * The peer sends Starts to nobody, each answered by an Error of about 100
 * bytes, and never reads: once the kernel's buffers and the mark are full
 * and that while has passed, the channel closes, and the peer's next sends
 * fail (a reset).  A channel
 * that buffered everything would take all 2,000,000 Starts (~200 MB of
 * answers), and the test would fail on the count. */
typedef struct deaf {
  int rc, closed, sent;
  char why[160];
} deaf_t;

static void *deaf_run(void *arg) {
  deaf_t *d = arg;
  uint8_t me[TR_UUID_LEN];
  tr_test_peer_uuid(0x3c, me);
  int fd;
  tr_msg_t *m;
  /* A bounded receive buffer: the kernel's share of the answers stays
   * small.  A send that blocks 10 s fails the test. */
  d->rc = tr_test_peer_dial("deaf", me, 256 << 10, &fd, d->why, sizeof d->why);
  for (int i = 0; d->rc == 0 && i < 2000000 && (m = tr_test_peer_start_to_nobody(me, (uint64_t)i + 1)); i++) {
    uint8_t *fr = NULL;
    size_t len = 0;
    int erc = tr__frame_encode(m, 0, &fr, &len);
    tr_msg_free(m);
    size_t off = 0;
    while (erc == 0 && off < len) {
      ssize_t k = send(fd, fr + off, len - off, MSG_NOSIGNAL);
      if (k <= 0)
        break;
      off += (size_t)k;
    }
    int e = errno;
    free(fr);
    if (erc != 0 || off < len) {
      d->closed = erc == 0 && (e == EPIPE || e == ECONNRESET);
      if (!d->closed)
        snprintf(d->why, sizeof d->why, "send: %s", erc ? tr_strerror(erc) : strerror(e));
      break;
    }
    d->sent++;
  }
  if (fd >= 0)
    close(fd);
  return NULL;
}

TR_TEST(discovery, a_peer_that_reads_no_answers_is_dropped, .timeout = 60, .init = setup,
        .fini = teardown) {
  static deaf_t d; /* the thread's: read after the wait */
  size_t mark = __atomic_load_n(&tr__chan_wire_max, __ATOMIC_RELAXED);
  __atomic_store_n(&tr__chan_wire_max, (size_t)1 << 20, __ATOMIC_RELAXED);
  /* A third of peer_timeout is 10 s in sanitized builds (30 s there), by
   * when an ASan build had taken all 2,000,000 Starts: 200 ms here. */
  __atomic_store_n(&tr__chan_deaf_after_ns, 200 * MS, __ATOMIC_RELAXED);
  tr_assert_rc(tr_to_thread(deaf_run, &d, NULL), 0);
  __atomic_store_n(&tr__chan_deaf_after_ns, 0, __ATOMIC_RELAXED);
  __atomic_store_n(&tr__chan_wire_max, mark, __ATOMIC_RELAXED);
  tr_check(d.rc == 0, "the handshake (%d: %s)", d.rc, d.why);
  tr_check(d.closed, "the connection was closed on the deaf peer after %d Starts (%s)", d.sent,
           d.why);
  return 0;
}

TR_TEST(auth, a_thousand_wrong_replayed_and_proofless_handshakes_dispatch_nothing,
        .timeout = 120, .init = setup_secret, .fini = teardown_secret) {
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL, *f = NULL;
  tr_actor_opts_t o = svc_opts(TR_SPAWN_PROCESS);
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  start_found(an, "svc", &o, &p, &f);
  int rc = -TR_ENOTFOUND;
  uint64_t pid = f ? call_pid(f, &rc) : 0;
  tr_check_rc(rc, 0);
  tr_stats_t before, after;
  tr_stats(&before);
  int entries = count_named("svc") + count_named("root");
  uint64_t refused = tr__listen_refused();
  static attack_t t; /* not on the stack: an abandoned thread call reads on */
  memset(&t, 0, sizeof t);
  t.n = 1000;
  tr_assert_rc(tr_to_thread(attack_run, &t, NULL), 0);
  tr_check(t.why[0] == '\0', "%s", t.why);
  tr_check(t.answered == t.n, "the registrar answered every Hello: %d of %d", t.answered, t.n);
  tr_check(t.closed == t.n, "and closed every connection at its bad proof: %d of %d", t.closed,
           t.n);
  tr_check(tr__listen_refused() >= refused + (uint64_t)t.n + 1, "each refusal is counted (%llu)",
           (unsigned long long)(tr__listen_refused() - refused));
  tr_stats(&after);
  tr_check(after.actors_node == before.actors_node,
           "no channel was made for any of them: node actors %llu, before %llu",
           (unsigned long long)after.actors_node, (unsigned long long)before.actors_node);
  tr_check(count_named("svc") + count_named("root") == entries, "the registry is unchanged");
  tr_check(call_pid(f, &rc) == pid && rc == 0, "the channel to svc still works");
  tr_check_rc(tr_actor_nursery_cancel(an), 0);
  tr_check_rc(tr_actor_nursery_close(an), 0);
  tr_portal_release(p);
  tr_portal_release(f);
  return 0;
}
