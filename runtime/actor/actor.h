/*
 * Internal view of an actor.  The public handle is the opaque tr_actor_t.
 *
 * Layout, 112 bytes plus the name (128 with malloc's header for names of
 * up to 7 bytes), so a million idle actors cost ~128 MB: the mailbox first
 * (producers touch `mbox.head`, `refs` and `qlen`), then what only the
 * running worker reads.
 */
#ifndef TR_ACTOR_ACTOR_H
#define TR_ACTOR_ACTOR_H

#include <pthread.h>
#include <stdint.h>

#include <tractor/actor.h>

#include "runtime/actor/mailbox.h"
#include "runtime/platform/atomic.h"

struct tr_worker;
struct tr_tasks;

#define TR_DEFAULT_BATCH 64 /* messages per turn unless tr_config_t says */

/* flags: written by the actor's own worker, read by anyone (atomics). */
#define TR_AF_EXITED 0x1u    /* no more behaviour calls; mailbox drained */
#define TR_AF_EXIT_REQ 0x2u  /* tr_actor_exit called during this turn */
#define TR_AF_DONE 0x4u      /* exit finished: on_exit has run (tr_join) */
#define TR_AF_WATCHED 0x8u   /* a monitor may be registered (tr__actor_monitor) */
#define TR_AF_OWN_UUID 0x10u /* its uuid is stored before its name (tr__actor_spawn_as) */
#define TR_AF_PROXY 0x20u    /* it stands for an actor of another process */
#define TR_AF_NODE 0x40u     /* the node's own (tr__actor_mark_node) */
#define TR_AF_OUR_PROGRAM 0x80u /* a proxy of a child process of this program (not opts.exe) */
#define TR_AF_WATCHING 0x100u   /* it has watched another (tr__actor_monitor) */
/* Its behaviour is also called with m == NULL at the end of every turn
 * that handled a message (tr__actor_spawn_as): work done once per batch
 * of messages, such as a channel's write. */
#define TR_AF_TURN_END 0x200u
/* A proxy whose remote actor is known to have gone (tr__actor_mark_gone):
 * it reads as exited from then on. */
#define TR_AF_GONE 0x400u

/* flags_ bits of tr_msg_t owned by the runtime (and TR_MSGF_PTR_REF,
 * runtime/mem/msgpool.h). */
#define TR_MSGF_SYS 0x1u /* runtime-internal wake-up; never a dead letter */
/* A notice of the runtime to a behaviour (an fd watch's readiness): handed
 * to the behaviour like any message, but no message of a user's, so one
 * its owner exits before reading is dropped without counting as a dead
 * letter (tr_stats_t.dead_letters counts what users sent). */
#define TR_MSGF_NOTICE 0x4u

/* A system message (TR_MSGF_SYS) the actor layer answers itself, for both
 * kinds of actor, before the task layer sees any message: a request of the
 * hang report (runtime/hang.c), ptr = its slot.  The task layer's tags
 * (runtime/task/task.h) stay below it. */
#define TR_SYS_DESCRIBE 0x100u

/* What kind of actor it is, for diagnostics (the hang report). */
enum {
  TR_AK_BEHAVIOUR = 0, /* tr_spawn */
  TR_AK_TASK,          /* tr_spawn_task_actor */
  TR_AK_ROOT,          /* tr_main's root actor */
  TR_AK_CHILD,         /* tr_actor_nursery_spawn */
  TR_AK_DAEMON,        /* tr_start_actor */
  TR_AK_RUN_IN_ACTOR,  /* tr_run_in_actor */
};

struct tr_actor {
  tr_mbox_t mbox;
  uint32_t refs;    /* atomic: references, incl. the actor's own while alive */
  uint32_t qlen;    /* atomic: queued messages; kept only when limit != 0 */
  uint32_t limit;   /* mailbox_limit, 0 = unbounded */
  uint32_t flags;   /* atomic: TR_AF_* */
  uint32_t joiners; /* atomic: threads in tr_join on this actor */
  uint16_t shard;   /* live-list shard that holds it */
  uint8_t kind;     /* atomic (relaxed): TR_AK_*, for diagnostics only */
  uint8_t named;    /* name[] holds a copy of the spawn name */
  uint64_t id;
  tr_behaviour_fn behaviour;
  void *state;
  void (*on_exit)(void *state);
  struct tr_actor *sched_next;            /* inject-queue link (scheduler) */
  struct tr_actor *live_prev, *live_next; /* live list (shard lock) */
  struct tr_tasks *tasks;                 /* NULL for a behaviour-only actor */
  /* The spawn name, copied into the actor's own allocation (when named):
   * the 112-byte struct and a name of up to 7 bytes still fit malloc's
   * 128-byte chunk, so a short name costs no memory.  An actor with an
   * own uuid (TR_AF_OWN_UUID) has its 16 bytes first, the name behind
   * them: read both through tr_actor_uuid and tr_actor_name. */
  char name[];
};

/* A live-actor list shard.  Actors spawned on worker i go to shard i,
 * those spawned elsewhere to the last shard; tr_shutdown walks them all. */
typedef struct tr_shard {
  pthread_mutex_t lock;
  struct tr_actor *head;
  uint64_t next_id; /* under lock */
} __attribute__((aligned(TR_CACHELINE))) tr_shard_t;

/* The actor layer's process-wide state, set up by tr_run (runtime.c). */
typedef struct tr_actors {
  int batch;          /* messages per turn */
  tr_shard_t *shards; /* nworkers + 1 */
  uint32_t stopping;  /* atomic: tr_shutdown was called */
  uint64_t live;      /* atomic: spawned and not yet exited */
  uint64_t node_live; /* atomic: of those, the node's own (TR_AF_NODE) */
  /* The hang report: its delay after the root returned (< 0: never), when
   * the root returned (tr_now clock; atomic, 0 = not yet), and whether it
   * has been printed (set by tr_run's thread only). */
  int64_t hang_ns;
  int64_t root_done;
  int hang_reported;
  /* tr_join and tr_run wait here; exiting actors broadcast. */
  pthread_mutex_t wait_lock;
  pthread_cond_t wait_cv;
} tr_actors_t;

extern tr_actors_t tr__actors;
/* 1 while a runtime is running (between start and the end of tr_run). */
extern uint32_t tr__rt_running;

/*
 * What the actor layer asks of the layers above it.  Each registers its
 * hooks at start-up (tr_run, before any actor exists); registering the
 * same hooks again writes nothing.  A layer below never calls a layer
 * above in any other way.
 *
 * A task actor (a->tasks != NULL) belongs to the task layer: its turn,
 * its cancellation, what its exit owes (the dialog engine's CancelAcks and
 * exit report) and the freeing of its task state.
 */
typedef struct tr_actor_task_ops {
  void (*run_turn)(struct tr_worker *w, struct tr_actor *a);
  int (*cancel)(struct tr_actor *a, int force);
  void (*on_exit)(struct tr_actor *a);
  void (*free)(struct tr_tasks *ts);
} tr_actor_task_ops_t;
void tr__actor_set_task_ops(const tr_actor_task_ops_t *ops);

/* The hang report (runtime/hang.c): answer a TR_SYS_DESCRIBE request m in
 * a's turn (taking m), release one that became a dead letter, and print
 * the report (`since_ns` after the root returned). */
typedef struct tr_actor_hang_ops {
  void (*answer)(struct tr_worker *w, struct tr_actor *a, tr_msg_t *m);
  void (*drop)(tr_msg_t *m);
  void (*report)(int64_t since_ns);
} tr_actor_hang_ops_t;
void tr__actor_set_hang_ops(const tr_actor_hang_ops_t *ops);

/* The dialog engine (runtime/rpc/): a protocol message (body != 0) that
 * became a dead letter at exited actor `dead` (a Start is answered with an
 * Error so its caller does not wait forever).  Threads: any. */
void tr__actor_set_bounce(void (*bounce)(struct tr_actor *dead, tr_msg_t *m));

/* The transport (transport/channel.c): a protocol message sent to proxy
 * px (not exited), to pass on to its channel in the sender's send (see
 * tr__actor_is_proxy).  Takes m; returns what tr_send would.  Threads:
 * any that may send. */
void tr__actor_set_proxy_send(int (*send)(struct tr_actor *px, tr_msg_t *m));

/* The transport: a cancellation of proxy px (tr__actor_request_cancel,
 * from tr_actor_cancel_soon) is a cancel of the actor it stands for, which
 * the proxy outlives.  Returns 0 or as tr_send.  Threads: any. */
void tr__actor_set_proxy_cancel(int (*cancel)(struct tr_actor *px));

/* Registers the actor layer's own hooks with the scheduler.  Called by
 * tr_run at start-up.  Threads: tr_run's. */
void tr__actor_init(void);

/* Spawns an actor; with `tasks`, a task actor (behaviour unused) whose task
 * state the actor then owns.  See tr_spawn. */
/*
 * tr__actor_spawn for an actor known by a uuid it is given rather than
 * the process's (its nonce and the actor's id): a proxy, which stands for
 * an actor of another process and is known by that actor's uuid, and a
 * child process's main actor, which has the uuid its parent chose for it
 * (tractor's parent names its child's uid).  xflags may add TR_AF_PROXY.
 * The uuid is copied in front of the name (read without a strlen), so
 * other actors pay nothing.
 * uuid may be NULL (the process's, as tr__actor_spawn), to spawn a
 * behaviour actor with xflags TR_AF_TURN_END.
 * Threads: as tr__actor_spawn.
 */
int tr__actor_spawn_as(tr_behaviour_fn behaviour, void *state, const tr_spawn_opts_t *opts,
                       struct tr_tasks *tasks, const uint8_t uuid[16], uint32_t xflags,
                       tr_actor_t **ref);

/* 1 when a stands for an actor of another process (TR_AF_PROXY): messages
 * to it must name their sender (`from`), which its channel writes into
 * the envelope.
 *
 * A proxy's protocol messages (body != 0) do not wait for a turn of the
 * proxy: the send itself hands them to the proxy hook
 * (tr__actor_set_proxy_send), which addresses them and passes them on to
 * the channel that carries them, in the sender's thread.  A turn would
 * only add latency (measured: tcp_stream +15 %, tcp_rpc +3 %), and
 * per-sender order holds as every protocol message to a proxy takes the
 * same way.  So senders read a proxy's state, which for a proxy is a
 * reference to that channel (an actor), set at spawn and released only
 * with the proxy's memory (when the last reference goes), never at its
 * exit. */
static inline int tr__actor_is_proxy(const struct tr_actor *a) {
  return (tr_load_relaxed(&a->flags) & TR_AF_PROXY) != 0;
}

/* Whether a serves this program's exports: an actor of this process, or
 * a proxy of a child process started from this executable.  Anything
 * else (a child of opts.exe, an actor found through discovery, a parent)
 * may run another program.  Threads: any holding a reference to a. */
static inline int tr__actor_runs_our_program(const struct tr_actor *a) {
  return (tr_load_relaxed(&a->flags) & (TR_AF_PROXY | TR_AF_OUR_PROGRAM)) != TR_AF_PROXY;
}

/* The channel proxy a's messages go through (its state, above), or NULL
 * when a is no proxy.  Borrowed.  Threads: any holding a reference to a. */
static inline struct tr_actor *tr__proxy_channel(const struct tr_actor *a) {
  return a && tr__actor_is_proxy(a) ? (struct tr_actor *)a->state : NULL;
}

int tr__actor_spawn(tr_behaviour_fn behaviour, void *state, const tr_spawn_opts_t *opts,
                    struct tr_tasks *tasks, tr_actor_t **ref);

/* Runs one turn of actor a on worker w: up to a batch of messages, then
 * either marks the mailbox empty, reschedules the actor, or finishes its
 * exit.  Threads: worker w, which owns a for the turn. */
void tr__actor_run(struct tr_worker *w, struct tr_actor *a);

/* Pushes msg into a's mailbox and schedules a when that is the pusher's
 * job.  Returns 0 or -TR_ECLOSED (msg dead-lettered).  Used by tr_send and
 * by the runtime's own wake-ups. */
int tr__actor_push(struct tr_actor *a, tr_msg_t *msg);

/* tr_send for the runtime's own messages (protocol bodies, system
 * messages): the same send, but a failure records no error object, so a
 * send to a peer that has gone never replaces the error a task is
 * propagating.  Returns as tr_send.  Threads: any. */
int tr__send(struct tr_actor *to, tr_msg_t *msg);

/* Finishes actor a's exit on its worker: marks it exited, drains its
 * mailbox as dead letters, runs on_exit and the task layer's exit, tells
 * its monitors and joiners, and drops its own reference.  For the end of
 * a turn (a behaviour's here, a task actor's in the task layer).
 * Threads: worker w, in a's turn. */
void tr__actor_finish_exit(struct tr_worker *w, struct tr_actor *a);

/* Answers the hang report's TR_SYS_DESCRIBE request m (taking it), for
 * either kind of actor, in a's turn.  Threads: worker w. */
void tr__actor_describe(struct tr_worker *w, struct tr_actor *a, tr_msg_t *m);

/* Prints the hang report through its hook (tr__rt_wait_end, wait.c).
 * Threads: tr_run's. */
void tr__actor_hang_report(int64_t since_ns);

/* Cancels a whole actor from any (non-signal) thread: a task actor's tasks
 * are all cancelled as if their outermost scope were (shields still
 * protect, unless `force`); a behaviour actor exits at its next turn.
 * Returns 0, or -TR_ECLOSED if it has exited.  Threads: any. */
int tr__actor_request_cancel(struct tr_actor *a, int force);

/* Ends the running behaviour actor's turn after the message it is
 * handling: what is left in its mailbox waits behind the other runnable
 * actors of the worker (the back of its queue), and the worker looks at
 * the inject queue first (tr__sched_requeue).  For a behaviour that has
 * done a budget's worth of work and sent itself a reminder to go on (the
 * channel's reads): without it the reminder would be handled in the same
 * turn, up to the turn's batch of messages.  Threads: a behaviour (a no-op
 * elsewhere). */
void tr__actor_yield(void);

/* Wakes tr_join/tr_run waiters. */
void tr__rt_broadcast(void);

/* The root function has returned (tr_run's, or tr_main's root task): the
 * hang report's delay starts now.  Only the first call counts.
 * Threads: any. */
void tr__rt_root_returned(void);

/* Waits, on tr_run's thread, until actor a has finished its exit
 * (TR_AF_DONE), or with a == NULL until no actor is live.  Once the root
 * has returned and the wait has lasted the hang report's delay, prints the
 * report (once per run) and keeps waiting.  Threads: tr_run's. */
void tr__rt_wait_end(struct tr_actor *a);

/* Sets a's kind (TR_AK_*) for diagnostics.  Threads: any. */
static inline void tr__actor_set_kind(struct tr_actor *a, int kind) {
  tr_store_relaxed(&a->kind, (uint8_t)kind); /* read by the hang report only */
}

/*
 * A monitor (Erlang's monitor/2): when `target` exits, `watcher` gets an
 * application message {tag, u64 = target's id, from = target}; at once if
 * target has already exited.  The message is sent after target's on_exit
 * and before tr_join returns for it, and after every message target sent,
 * its CancelAcks and exit report included (a watcher that is also their
 * receiver sees them first).  For runtime
 * pieces that stand for an actor (a relay, a transport's proxy) and must
 * learn of its end.  There is no demonitor: a monitor ends with its
 * message, or when watcher exits first (a long-lived target, such as a
 * root, would otherwise keep every exited watcher: a channel per child
 * process).  Returns 0 or -TR_ENOMEM.
 * Ownership: borrows both; keeps a reference to watcher until it is told.
 * Threads: any.
 */
int tr__actor_monitor(struct tr_actor *target, struct tr_actor *watcher, uint32_t tag);

/* Proxy a's remote actor has gone: its channel saw its gone notice, or
 * lost the connection (its process reaped, or no way to reach it again).
 * tr_actor_exited(a) is 1 from now on, before the stand-in itself exits
 * (in a later turn of its own), so that whoever learns of the end through
 * a dialog (a call failing with "lost", say) finds the actor exited.
 * Threads: any (an atomic fetch-or): the channel's turn, before it tells
 * anyone, or a sender that finds the channel ended (proxy_send). */
void tr__actor_mark_gone(struct tr_actor *a);

/* Counts a as the node's own (tr_stats_t.actors_node): the listener, the
 * registrar, channels between nodes and their proxies, which live as long
 * as the node.  Call before anything can make a exit.  Threads: any. */
void tr__actor_mark_node(struct tr_actor *a);

/* Makes every live actor exit at its next turn, waking idle ones with a
 * system message.  Call after setting the runtime's stopping flag.
 * Threads: any. */
void tr__actor_kill_all(void);

#endif
