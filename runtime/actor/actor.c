/*
 * Behaviour actors: spawn, send, one turn of a run, exit, references.
 *
 * Exit protocol.  Only the actor's own worker (the mailbox consumer) exits
 * it: it sets TR_AF_EXITED, then drains the mailbox as dead letters until
 * it can mark the mailbox empty.  From then on, a producer that finds the
 * empty bit also finds TR_AF_EXITED (the CAS/exchange pair orders them),
 * so instead of scheduling the actor it drains the mailbox itself, as the
 * consumer, and reports -TR_ECLOSED.  An exited actor is therefore never
 * scheduled again and no message is ever stranded in a dead mailbox.
 *
 * Memory.  An actor holds a reference to itself while alive and drops it
 * when it has exited; every tr_actor_t* a user holds is another reference.
 * The object is freed with the last one, so a sender holding a reference
 * can always push safely, even to an exited actor.
 */
#include <errno.h>
#include <stdlib.h>
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>
#include <sys/random.h>
#include <string.h>
#include <time.h>

#include <tractor/actor.h>

#include "runtime/error/error.h"
#include "runtime/actor/actor.h"
#include "runtime/mem/msgpool.h"
#include "runtime/platform/assert.h"
#include "runtime/sched/worker.h"

#if UINTPTR_MAX == UINT64_MAX
_Static_assert(sizeof(struct tr_actor) == 112, "an actor and a short name fit 128 bytes");
#endif

tr_actors_t tr__actors;
uint32_t tr__rt_running;

/* ---- hooks ------------------------------------------------------------- */

/* The upper layers' hooks (see actor.h).  Each is copied in at start-up,
 * before any actor exists, and never changes afterwards (a later tr_run
 * registers the same functions, which writes nothing), so reading them
 * needs no atomics. */
static tr_actor_task_ops_t task_ops;
static tr_actor_hang_ops_t hang_ops;
static void (*bounce_hook)(tr_actor_t *dead, tr_msg_t *m);

void tr__actor_set_task_ops(const tr_actor_task_ops_t *ops) {
  if (memcmp(&task_ops, ops, sizeof task_ops) != 0)
    task_ops = *ops;
}

void tr__actor_set_hang_ops(const tr_actor_hang_ops_t *ops) {
  if (memcmp(&hang_ops, ops, sizeof hang_ops) != 0)
    hang_ops = *ops;
}

void tr__actor_set_bounce(void (*bounce)(tr_actor_t *dead, tr_msg_t *m)) {
  if (bounce_hook != bounce)
    bounce_hook = bounce;
}

static int (*proxy_send)(tr_actor_t *px, tr_msg_t *m);
void tr__actor_set_proxy_send(int (*send)(tr_actor_t *px, tr_msg_t *m)) {
  if (proxy_send != send)
    proxy_send = send;
}

static int (*proxy_cancel)(tr_actor_t *px);
void tr__actor_set_proxy_cancel(int (*cancel)(tr_actor_t *px)) {
  if (proxy_cancel != cancel)
    proxy_cancel = cancel;
}

static tr_actor_t **sched_link(tr_actor_t *a) { return &a->sched_next; }
static int sched_nestable(const tr_actor_t *a) { return a->tasks == NULL; }

void tr__actor_init(void) {
  static const tr_sched_ops_t ops = {tr__actor_run, sched_link, sched_nestable};
  tr__sched_set_ops(&ops);
  tr__msgpool_set_release(tr_actor_release);
}

/* ---- references ------------------------------------------------------ */

tr_actor_t *tr_actor_dup(tr_actor_t *a) {
  if (a)
    tr_faa_relaxed(&a->refs, 1); /* the caller already holds one: no order */
  return a;
}

static void actor_free(tr_actor_t *a) {
  TR_ASSERT(tr_load_relaxed(&a->flags) & TR_AF_EXITED);
  TR_COUNT(tr__worker_self(), actors_freed, 1);
  if (a->tasks)
    task_ops.free(a->tasks); /* kept until now for tr_task_actor_result */
  if (tr_load_relaxed(&a->flags) & TR_AF_PROXY)
    tr_actor_release(a->state); /* its channel: senders read it (tr__actor_is_proxy) */
  free(a);
}

void tr_actor_release(tr_actor_t *a) {
  if (!a)
    return;
  /* acq_rel: our uses of the actor happen before the free by whoever
   * drops the last reference. */
  uint32_t old = tr_fsub_acqrel(&a->refs, 1);
  TR_ASSERT(old != 0);
  if (old == 1)
    actor_free(a);
}

const char *tr_actor_name(const tr_actor_t *a) {
  if (!a)
    return NULL;
  /* An own uuid comes first (tr__actor_spawn_as): set before the actor is
   * shared, so a relaxed read of the flag is enough. */
  return a->named ? a->name + (tr_load_relaxed(&a->flags) & TR_AF_OWN_UUID ? 16 : 0) : "actor";
}
uint64_t tr_actor_id(const tr_actor_t *a) { return a ? a->id : 0; }

/* ---- uids ------------------------------------------------------------------ */

/* The process's half of every actor's uuid: 64 random bits drawn once
 * (getrandom), so that uuids of actors of different processes differ with
 * overwhelming probability while an actor needs no bytes of its own for it
 * (the other half is its id, never reused in the process). */
static uint64_t proc_nonce;
static pthread_once_t nonce_once = PTHREAD_ONCE_INIT;

static void nonce_init(void) {
  uint64_t v = 0;
  if (getrandom(&v, sizeof v, 0) != (ssize_t)sizeof v || v == 0) {
    /* No entropy source: the clock and pid still separate processes. */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    v = ((uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec) ^ ((uint64_t)getpid() << 32) ^
        0x9e3779b97f4a7c15ull;
  }
  /* Release: pairs with the acquire load in tr_actor_uuid. */
  __atomic_store_n(&proc_nonce, v, __ATOMIC_RELEASE);
}

void tr_actor_uuid(const tr_actor_t *a, uint8_t out[16]) {
  if (!a) {
    memset(out, 0, 16);
    return;
  }
  if (TR_UNLIKELY(tr_load_relaxed(&a->flags) & TR_AF_OWN_UUID)) {
    memcpy(out, a->name, 16);
    return;
  }
  /* Acquire pairs with pthread_once's publication of proc_nonce: a thread
   * that sees it set needs no once-call (one per run of the dialog path). */
  uint64_t nonce = __atomic_load_n(&proc_nonce, __ATOMIC_ACQUIRE);
  if (TR_UNLIKELY(nonce == 0)) {
    pthread_once(&nonce_once, nonce_init);
    nonce = __atomic_load_n(&proc_nonce, __ATOMIC_ACQUIRE);
  }
  /* Big-endian halves: the uid text reads as the two numbers. */
  uint64_t hi = __builtin_bswap64(nonce), lo = __builtin_bswap64(a->id);
  memcpy(out, &hi, 8);
  memcpy(out + 8, &lo, 8);
}

int tr_actor_uid(const tr_actor_t *a, char *buf, size_t len) {
  if (!a)
    return TR__EINVAL_NULL();
  uint8_t u[16];
  tr_actor_uuid(a, u);
  char hex[33];
  for (int i = 0; i < 16; i++)
    snprintf(hex + 2 * i, 3, "%02x", u[i]);
  return snprintf(buf, len, "%s@%s", tr_actor_name(a), hex);
}

int tr_actor_exited(const tr_actor_t *a) {
  /* Acquire pairs with the release in tr__actor_finish_exit (and the
   * fetch-or of tr__actor_mark_gone). */
  return a && (tr_load_acquire(&a->flags) & (TR_AF_EXITED | TR_AF_GONE)) != 0;
}

tr_actor_t *tr_self(void) {
  tr_worker_t *w = tr__worker_self();
  return w ? w->cur_actor : NULL;
}

/* ---- live lists -------------------------------------------------------- */

static int live_insert(tr_worker_t *w, tr_actor_t *a) {
  int s = w ? w->index : tr__rt.nworkers;
  tr_shard_t *sh = &tr__actors.shards[s];
  pthread_mutex_lock(&sh->lock);
  /* Checked under the shard lock: tr_shutdown sets `stopping` before it
   * walks the shards, so an actor is either refused here or visited. */
  if (tr_load_acquire(&tr__actors.stopping)) {
    pthread_mutex_unlock(&sh->lock);
    return -TR_ENORUNTIME;
  }
  a->shard = (uint16_t)s;
  a->id = ((uint64_t)s << 48) | ++sh->next_id;
  a->live_prev = NULL;
  a->live_next = sh->head;
  if (sh->head)
    sh->head->live_prev = a;
  sh->head = a;
  pthread_mutex_unlock(&sh->lock);
  return 0;
}

static void live_remove(tr_actor_t *a) {
  tr_shard_t *sh = &tr__actors.shards[a->shard];
  pthread_mutex_lock(&sh->lock);
  if (a->live_prev)
    a->live_prev->live_next = a->live_next;
  else
    sh->head = a->live_next;
  if (a->live_next)
    a->live_next->live_prev = a->live_prev;
  pthread_mutex_unlock(&sh->lock);
}

/* ---- spawn ------------------------------------------------------------- */

int tr_spawn(tr_behaviour_fn behaviour, void *state, const tr_spawn_opts_t *opts,
             tr_actor_t **ref) {
  if (ref)
    *ref = NULL;
  if (!behaviour)
    return TR_ERROR(-TR_EINVAL, "tr_spawn: no behaviour");
  return tr__actor_spawn(behaviour, state, opts, NULL, ref);
}

int tr__actor_spawn(tr_behaviour_fn behaviour, void *state, const tr_spawn_opts_t *opts,
                    struct tr_tasks *tasks, tr_actor_t **ref) {
  return tr__actor_spawn_as(behaviour, state, opts, tasks, NULL, 0, ref);
}

int tr__actor_spawn_as(tr_behaviour_fn behaviour, void *state, const tr_spawn_opts_t *opts,
                       struct tr_tasks *tasks, const uint8_t uuid[16], uint32_t xflags,
                       tr_actor_t **ref) {
  if (ref)
    *ref = NULL;
  if (!tr_load_acquire(&tr__rt_running) || tr_load_acquire(&tr__actors.stopping))
    return TR_ERROR(-TR_ENORUNTIME, "no actor spawned: no runtime is running (or it is "
                                    "shutting down)");
  /* The name is copied into the actor's own allocation: it lives exactly
   * as long as the actor's memory (its last reference). */
  const char *name = opts ? opts->name : NULL;
  size_t name_len = name ? strlen(name) + 1 : 0;
  size_t uuid_len = uuid ? 16 : 0;
  tr_actor_t *a = malloc(sizeof(*a) + uuid_len + name_len);
  if (!a)
    return TR__ENOMEM();
  memset(a, 0, sizeof(*a));
  a->flags = xflags; /* not shared yet */
  if (uuid) { /* first, so that tr_actor_uuid needs no strlen */
    memcpy(a->name, uuid, 16);
    a->flags |= TR_AF_OWN_UUID;
  }
  tr__mbox_init(&a->mbox);
  a->refs = ref ? 2 : 1; /* the actor's own, plus the caller's */
  a->behaviour = behaviour;
  a->state = state;
  if (name) {
    memcpy(a->name + uuid_len, name, name_len);
    a->named = 1;
  }
  a->limit = opts ? opts->mailbox_limit : 0;
  a->on_exit = opts ? opts->on_exit : NULL;
  a->tasks = tasks;
  a->kind = tasks ? TR_AK_TASK : TR_AK_BEHAVIOUR; /* not shared yet: no atomic needed */
  tr_worker_t *w = tr__worker_self();
  tr_faa_relaxed(&tr__actors.live, 1); /* before it can exit and decrement */
  int rc = live_insert(w, a);
  if (rc != 0) {
    tr_faa_relaxed(&tr__actors.live, (uint64_t)-1);
    free(a);
    return TR_ERROR(rc, "no actor spawned: the runtime is shutting down");
  }
  TR_COUNT(w, spawned, 1);
  if (ref)
    *ref = a;
  return 0;
}

/* ---- send -------------------------------------------------------------- */

static void dead_letter(tr_worker_t *w, tr_actor_t *a, tr_msg_t *m) {
  if (!(m->flags_ & (TR_MSGF_SYS | TR_MSGF_NOTICE)))
    TR_COUNT(w, dead_letters, 1);
  else if (m->tag == TR_SYS_DESCRIBE)
    hang_ops.drop(m); /* the report's request: give its slot back */
  if (m->body != 0)
    bounce_hook(a, m); /* a call to a dead actor gets an answer */
  tr__msg_dispose(w, m);
}

/* Pops and dead-letters everything, then marks the mailbox empty.  Runs as
 * the mailbox's consumer (the exiting actor, or the producer that found an
 * exited actor's mailbox empty).  Spins only while a producer is between
 * its exchange and its link store: a few instructions. */
static void drain_dead(tr_worker_t *w, tr_actor_t *a) {
  for (;;) {
    tr_msg_t *m;
    while ((m = tr__mbox_pop_sc(&a->mbox))) {
      if (a->limit && !(m->flags_ & TR_MSGF_SYS))
        tr_faa_relaxed(&a->qlen, (uint32_t)-1);
      dead_letter(w, a, m);
    }
    if (tr__mbox_mark_empty_sc(&a->mbox))
      return;
    tr_cpu_relax();
  }
}

static int push(tr_worker_t *w, tr_actor_t *a, tr_msg_t *m) {
  if (w && w->cur_msg == m)
    w->cur_msg = NULL; /* a behaviour forwarding the message it handles */
  if (tr__mbox_push_mp(&a->mbox, m)) {
    /* We own the empty period.  Acquire (via the exchange in push) made the
     * exiting consumer's TR_AF_EXITED visible if it was set. */
    if (TR_UNLIKELY(tr_load_relaxed(&a->flags) & TR_AF_EXITED)) {
      drain_dead(w, a);
      return -TR_ECLOSED;
    }
    /* A worker sending runs the receiver next on its own core; sends from
     * other threads go through the inject queue. */
    tr__schedule(w, a, 1);
  }
  return 0;
}

int tr__actor_push(tr_actor_t *a, tr_msg_t *m) { return push(tr__worker_self(), a, m); }

/* The send itself, for tr_send (which records an error object when it
 * fails) and tr__send (the runtime's own sends, which must not replace the
 * error a task is propagating: a Credit to a peer that has gone is not the
 * task's failure). */
__attribute__((always_inline)) static inline int send_impl(tr_actor_t *to, tr_msg_t *msg) {
  tr_worker_t *w = tr__worker_self();
  uint32_t flags = tr_load_acquire(&to->flags);
  /* Fast refusal; the authoritative check is in push. */
  if (TR_UNLIKELY(flags & TR_AF_EXITED)) {
    if (w && w->cur_msg == msg)
      w->cur_msg = NULL;
    dead_letter(w, to, msg);
    return -TR_ECLOSED;
  }
  if (TR_UNLIKELY(flags & TR_AF_PROXY) && msg->body != 0 && proxy_send) {
    if (w && w->cur_msg == msg)
      w->cur_msg = NULL;
    return proxy_send(to, msg); /* straight on to its channel */
  }
  if (to->limit) {
    /* Reserve a slot; give it back if that overshoots the limit.  The
     * consumer decrements when it pops, so the bound is exact.  Only
     * application messages are refused: a dialog's protocol messages have
     * their own flow control (credit windows), nobody to hand a refusal
     * to when a channel delivers them, and are counted all the same, as
     * the reactor's notifications are. */
    uint32_t n = tr_faa_relaxed(&to->qlen, 1);
    if (n >= to->limit && msg->body == 0) {
      tr_faa_relaxed(&to->qlen, (uint32_t)-1);
      return -TR_EAGAIN;
    }
  }
  int rc = push(w, to, msg);
  /* A behaviour that sends in a long loop would keep the actors it feeds
   * from running on this worker until the loop ends (a behaviour cannot be
   * preempted).  Every TR_HELP_SENDS sends of one turn, let them run a
   * turn on top of this one (see tr__sched_help). */
  if (w && w->cur_actor && TR_UNLIKELY(++w->turn_sends >= TR_HELP_SENDS))
    tr__sched_help(w);
  return rc;
}

int tr__send(tr_actor_t *to, tr_msg_t *msg) { return send_impl(to, msg); }

int tr_send(tr_actor_t *to, tr_msg_t *msg) {
  if (!to || !msg)
    return TR__EINVAL_NULL();
  int rc = send_impl(to, msg);
  /* Dead letters and back-pressure may come in tight loops: the shared
   * error of the code, without an allocation. */
  return TR_UNLIKELY(rc) ? tr__error_quick(rc) : 0;
}

int tr_send_u64(tr_actor_t *to, uint32_t tag, uint64_t v) {
  if (!to)
    return TR__EINVAL_NULL();
  tr_msg_t *m;
  int rc = tr_msg_new(&m);
  if (rc)
    return rc;
  m->tag = tag;
  m->u64 = v;
  rc = tr_send(to, m);
  if (rc == -TR_EAGAIN)
    tr_msg_free(m);
  return rc;
}

/* ---- exit -------------------------------------------------------------- */

int tr_actor_exit(void) {
  tr_worker_t *w = tr__worker_self();
  if (!w || !w->cur_actor || w->cur_actor->tasks)
    return TR_ERROR(-TR_EPERM, "tr_actor_exit is for a behaviour, while it runs (a task actor "
                               "exits when its tasks end: return, or tr_actor_cancel_soon)");
  /* Only this worker reads EXIT_REQ before the turn ends. */
  tr_for_relaxed(&w->cur_actor->flags, TR_AF_EXIT_REQ);
  return 0;
}

/* ---- monitors ------------------------------------------------------------ */

/* Monitors are rare (relays and proxies), so they live in one list under
 * one lock, and an actor pays only a flag test at exit.  TR_AF_WATCHED is
 * set under the lock before the target's exit is checked, and the exit
 * sets TR_AF_EXITED before it tests TR_AF_WATCHED (both seq_cst): either
 * the monitor sees the exit and sends at once, or the exit sees the flag
 * and takes the lock, after the monitor is in the list. */
typedef struct tr_monitor {
  struct tr_monitor *next;
  tr_actor_t *target;  /* not a reference: removed before target is freed */
  tr_actor_t *watcher; /* a reference */
  uint32_t tag;
} tr_monitor_t;

static pthread_mutex_t monitors_lock = PTHREAD_MUTEX_INITIALIZER;
static tr_monitor_t *monitors;

static void monitor_fire(tr_actor_t *target, tr_actor_t *watcher, uint32_t tag) {
  tr_msg_t *m;
  /* A watcher that has gone needs no news: not even a dead letter (the
   * count is for messages someone meant to be read). */
  if (!tr_actor_exited(watcher) && tr_msg_new(&m) == 0) {
    m->tag = tag;
    m->u64 = target->id;
    m->from = tr_actor_dup(target);
    (void)tr__send(watcher, m); /* it may exit meanwhile: then a dead letter */
  }
  tr_actor_release(watcher);
}

int tr__actor_monitor(tr_actor_t *target, tr_actor_t *watcher, uint32_t tag) {
  if (!target || !watcher)
    return TR__EINVAL_NULL();
  tr_monitor_t *k = malloc(sizeof *k);
  if (!k)
    return TR__ENOMEM();
  *k = (tr_monitor_t){NULL, target, tr_actor_dup(watcher), tag};
  tr_for_seqcst(&watcher->flags, TR_AF_WATCHING);
  pthread_mutex_lock(&monitors_lock);
  tr_for_seqcst(&target->flags, TR_AF_WATCHED);
  int exited = (tr_load_seqcst(&target->flags) & TR_AF_EXITED) != 0;
  if (!exited) {
    k->next = monitors;
    monitors = k;
  }
  pthread_mutex_unlock(&monitors_lock);
  if (exited) {
    monitor_fire(target, k->watcher, tag);
    free(k);
  }
  return 0;
}

/* Unlinks the monitors of target a (as_watcher 0) or of watcher a
 * (as_watcher 1) and returns them, chained. */
static tr_monitor_t *monitors_take(tr_actor_t *a, int as_watcher) {
  tr_monitor_t *mine = NULL;
  pthread_mutex_lock(&monitors_lock);
  for (tr_monitor_t **pp = &monitors; *pp;) {
    tr_monitor_t *k = *pp;
    if ((as_watcher ? k->watcher : k->target) == a) {
      *pp = k->next;
      k->next = mine;
      mine = k;
    } else {
      pp = &k->next;
    }
  }
  pthread_mutex_unlock(&monitors_lock);
  return mine;
}

/* Drops the monitors a watches with (a's exit): their message would be a
 * dead letter, and their reference would keep a until the target exits. */
static void monitors_drop_watcher(tr_actor_t *a) {
  if (!(tr_load_seqcst(&a->flags) & TR_AF_WATCHING))
    return;
  for (tr_monitor_t *k = monitors_take(a, 1), *next; k; k = next) {
    next = k->next;
    tr_actor_release(k->watcher);
    free(k);
  }
}

/* Tells a's watchers that it has exited (a's exit, after EXITED). */
static void monitors_fire(tr_actor_t *a) {
  if (!(tr_load_seqcst(&a->flags) & TR_AF_WATCHED))
    return;
  tr_monitor_t *mine = monitors_take(a, 0);
  while (mine) {
    tr_monitor_t *k = mine;
    mine = k->next;
    monitor_fire(a, k->watcher, k->tag);
    free(k);
  }
}

void tr__actor_finish_exit(tr_worker_t *w, tr_actor_t *a) {
  /* Release pairs with tr_actor_exited/tr_join and with producers (via the
   * mailbox's mark-empty CAS, which comes after). */
  tr_for_seqcst(&a->flags, TR_AF_EXITED);
  drain_dead(w, a);
  live_remove(a);
  if (a->on_exit)
    a->on_exit(a->state);
  /* The counters move before anyone hears of the exit: the report to an
   * actor nursery below and TR_AF_DONE both come after, so tr_stats read
   * after tr_actor_nursery_close or tr_join returned sees this actor gone
   * (the message push and the flag are releases the reader acquires).
   * live cannot reach 0 here while a parent waits for the report: the
   * parent is itself live. */
  TR_COUNT(w, exited, 1);
  if (tr_load_relaxed(&a->flags) & TR_AF_NODE)
    tr_faa_relaxed(&tr__actors.node_live, (uint64_t)-1); /* before live: never above it */
  uint64_t live_before = tr_faa_acqrel(&tr__actors.live, (uint64_t)-1);
  if (a->tasks)
    task_ops.on_exit(a); /* an actor-nursery child tells its parent */
  /* After everything a sent, its exit reports and CancelAcks included.  A
   * live watcher keeps tr_run waiting; a dead one is a dead letter. */
  monitors_fire(a);
  monitors_drop_watcher(a);
  /* tr_join returns on DONE, so a joiner may free what on_exit used.
   * seq_cst pairs with tr_join's increment of joiners (Dekker): either we
   * see the joiner and broadcast, or it sees TR_AF_DONE. */
  tr_for_seqcst(&a->flags, TR_AF_DONE);
  int joined = tr_load_seqcst(&a->joiners) != 0;
  if (joined || live_before == 1)
    tr__rt_broadcast();
  tr_actor_release(a); /* the actor's own reference */
}

void tr__actor_describe(tr_worker_t *w, tr_actor_t *a, tr_msg_t *m) { hang_ops.answer(w, a, m); }

void tr__actor_hang_report(int64_t since_ns) { hang_ops.report(since_ns); }

void tr__actor_run(tr_worker_t *w, tr_actor_t *a) {
  if (a->tasks) {
    task_ops.run_turn(w, a); /* a task actor's turn: the task layer's */
    return;
  }
  int batch = tr__actors.batch;
  int handled = 0;
  /* EXIT_REQ may also come from another thread (tr__actor_request_cancel):
   * then the actor exits before handling anything more. */
  int stopping = tr_load_relaxed(&tr__actors.stopping) != 0 ||
                 (tr_load_acquire(&a->flags) & TR_AF_EXIT_REQ) != 0;
  w->cur_actor = a;
  while (!stopping && handled < batch) {
    tr_msg_t *m = tr__mbox_pop_sc(&a->mbox);
    if (!m)
      break;
    if (TR_UNLIKELY(m->flags_ & TR_MSGF_SYS)) {
      if (m->tag == TR_SYS_DESCRIBE)
        tr__actor_describe(w, a, m);
      else
        tr__msg_dispose(w, m); /* a wake-up: its only job was scheduling us */
      continue;
    }
    if (a->limit)
      tr_faa_relaxed(&a->qlen, (uint32_t)-1); /* reserved by tr_send */
    handled++;
    w->cur_msg = m;
    a->behaviour(a->state, m);
    if (w->cur_msg)
      tr__msg_dispose(w, w->cur_msg);
    w->cur_msg = NULL;
    if (TR_UNLIKELY(w->yield_turn)) { /* first: the flag is this turn's */
      w->yield_turn = 0;
      break;
    }
    if (tr_load_relaxed(&a->flags) & TR_AF_EXIT_REQ)
      break;
    stopping = tr_load_relaxed(&tr__actors.stopping) != 0;
  }
  if (TR_UNLIKELY(tr_load_relaxed(&a->flags) & TR_AF_TURN_END) && handled)
    a->behaviour(a->state, NULL); /* the turn's end (TR_AF_TURN_END) */
  w->cur_actor = NULL;
  tr_counter_add(&w->c.handled, (uint64_t)handled);
  if ((tr_load_relaxed(&a->flags) & TR_AF_EXIT_REQ) || tr_load_acquire(&tr__actors.stopping)) {
    tr__actor_finish_exit(w, a);
    return;
  }
  if (handled == batch || !tr__mbox_mark_empty_sc(&a->mbox))
    tr__sched_requeue(w, a); /* more to do: back of the queue */
}

void tr__actor_yield(void) {
  tr_worker_t *w = tr__worker_self();
  if (w && w->cur_actor && !w->cur_task)
    w->yield_turn = 1;
}

/* ---- shutdown ------------------------------------------------------------ */

void tr__actor_kill_all(void) {
  for (int s = 0; s <= tr__rt.nworkers; s++) {
    tr_shard_t *sh = &tr__actors.shards[s];
    pthread_mutex_lock(&sh->lock);
    /* Every actor in the list still holds its own reference (it removes
     * itself before dropping it), so pushing to it is safe here. */
    for (tr_actor_t *a = sh->head; a; a = a->live_next) {
      tr_msg_t *m;
      if (tr_msg_new(&m) != 0)
        continue; /* out of memory: it exits at its next message instead */
      m->flags_ = TR_MSGF_SYS;
      (void)tr__actor_push(a, m);
    }
    pthread_mutex_unlock(&sh->lock);
  }
}

/* A behaviour actor gets the shutdown wake-up (a system message with tag
 * 0) and the exit flag; a task actor's tasks are the task layer's. */
int tr__actor_request_cancel(tr_actor_t *a, int force) {
  if (tr_actor_exited(a))
    return -TR_ECLOSED;
  if ((tr_load_relaxed(&a->flags) & TR_AF_PROXY) && proxy_cancel)
    return proxy_cancel(a); /* the actor it stands for, in its process */
  if (a->tasks)
    return task_ops.cancel(a, force);
  tr_msg_t *m;
  int rc = tr_msg_new(&m);
  if (rc)
    return rc;
  m->flags_ = TR_MSGF_SYS;
  tr_for_seqcst(&a->flags, TR_AF_EXIT_REQ);
  return tr__actor_push(a, m);
}

/* ---- messages a behaviour handles ------------------------------------------ */

void tr_msg_free(tr_msg_t *m) {
  if (!m)
    return;
  tr_worker_t *w = tr__worker_self();
  if (w && w->cur_msg == m)
    w->cur_msg = NULL; /* the behaviour disposed of its message itself */
  tr__msg_dispose(w, m);
}

void tr_msg_take(tr_msg_t *m) {
  tr_worker_t *w = tr__worker_self();
  if (w && m && w->cur_msg == m)
    w->cur_msg = NULL;
}

void tr__actor_mark_gone(tr_actor_t *a) {
  TR_ASSERT(tr__actor_is_proxy(a));
  (void)tr_for_seqcst(&a->flags, TR_AF_GONE);
}

void tr__actor_mark_node(tr_actor_t *a) {
  if (!(tr_for_seqcst(&a->flags, TR_AF_NODE) & TR_AF_NODE))
    tr_faa_relaxed(&tr__actors.node_live, 1);
}
