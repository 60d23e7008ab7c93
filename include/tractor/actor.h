/*
 * Behaviour actors and the runtime that schedules them.
 *
 * An actor is a mailbox (lock-free MPSC queue) plus a behaviour callback
 * and a state pointer.  The runtime runs an actor on one worker thread at a
 * time, handing it up to a batch of messages per turn, so the state needs
 * no locks.  A behaviour-only actor owns no stack: it is a ~128-byte object.
 *
 * Life of a program:
 *
 *     static int root(void *arg) {
 *         tr_actor_t *a;
 *         tr_spawn(my_behaviour, my_state, NULL, &a);
 *         tr_send_u64(a, MY_TAG, 42);
 *         tr_join(a, -1);            // wait until it has exited
 *         tr_actor_release(a);
 *         return 0;
 *     }
 *     int main(void) { return tr_run(NULL, root, NULL) == 0 ? 0 : 1; }
 *
 * tr_run returns only after the root function has returned and every actor
 * has exited (a nursery around the whole program), then joins every worker
 * thread and frees everything the runtime owns.  An actor forgotten there
 * (never told to exit) would hang the program silently; instead, a few
 * seconds after the root returned, tr_run logs (TR_LOG_WARN, through the
 * logging hook of log.h, stderr by default) which actors it is still
 * waiting for and what they are blocked on (see
 * tr_config_t.hang_report_ns).  The library writes to a standard stream
 * only through that hook, and on a fatal error (a broken invariant, a
 * stack overflow).
 */
#ifndef TRACTOR_ACTOR_H
#define TRACTOR_ACTOR_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "errors.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tr_actor tr_actor_t;
typedef struct tr_msg tr_msg_t;

/*
 * A message.  Allocate with tr_msg_new (per-worker pools make this cheap),
 * fill the public fields, and hand it to tr_send.
 *
 * Fields whose names end in '_' belong to the runtime: never touch them.
 * body == 0 marks an application message; protocol messages (RPC dialogs)
 * carry an envelope body kind there and are not delivered to behaviours.
 */
struct tr_msg {
  tr_msg_t *next_;    /* mailbox link (runtime) */
  uint16_t body;      /* 0 = application message; else envelope body kind */
  uint16_t flags_;    /* runtime bookkeeping */
  uint32_t tag;       /* application-defined message kind */
  uint64_t cid;       /* protocol dialog id; free for applications */
  uint64_t u64;       /* inline 64-bit value */
  void *ptr;          /* inline pointer: never dereferenced or freed by the
                         runtime (a dead letter does not free it) */
  tr_buf_t *payload;  /* owned reference or NULL: released with the msg */
  tr_actor_t *from;   /* owned actor reference or NULL: released with the msg */
  struct tr_envx *x_; /* protocol extension fields (runtime) */
};

/*
 * Allocates a zeroed message.  Returns 0 or -TR_ENOMEM.
 * Ownership: the caller owns *out until it passes it to tr_send or frees it
 * with tr_msg_free.
 * Threads: any thread; on worker threads it comes from a per-worker pool.
 */
int tr_msg_new(tr_msg_t **out);

/*
 * Frees a message and releases its payload and from references.  NULL is a
 * no-op.  Freeing the message a behaviour is handling is allowed.
 * Threads: any thread.
 */
void tr_msg_free(tr_msg_t *msg);

/*
 * Called with each application message.  The behaviour owns msg for the
 * duration of the call: it may forward it with tr_send (no copy), free it,
 * or keep it with tr_msg_take; otherwise the runtime frees it on return.
 */
typedef void (*tr_behaviour_fn)(void *state, tr_msg_t *msg);

/*
 * Keeps the message being handled beyond the behaviour's return.
 * Ownership: the behaviour now owns msg and must tr_send or tr_msg_free it.
 * Threads: inside a behaviour, on the message it is handling.
 */
void tr_msg_take(tr_msg_t *msg);

typedef struct tr_spawn_opts {
  /* Name for errors and diagnostics.  Copied: the caller's string may
   * be freed or reused once tr_spawn has returned (as every name handed
   * to the runtime: task, child and daemon names too).  NULL means
   * "actor". */
  const char *name;
  /* 0 = unbounded.  Otherwise tr_send returns -TR_EAGAIN while this many
   * messages are queued and not yet handled.  The runtime's own messages
   * (timers, fd readiness, RPC dialogs, which have credit windows of their
   * own) are never refused, though they count. */
  uint32_t mailbox_limit;
  /* Called once, on a worker thread, after the actor has exited (by
   * tr_actor_exit or by tr_shutdown): the place to free state. */
  void (*on_exit)(void *state);
} tr_spawn_opts_t;

/*
 * Spawns a behaviour actor.  It starts idle: it runs when a message
 * arrives.  Returns 0, -TR_ENORUNTIME (no runtime, or shutting down),
 * -TR_EINVAL (NULL behaviour) or -TR_ENOMEM.
 * Ownership: state is borrowed by the actor until on_exit (if any) is
 * called.  When ref is not NULL, *ref holds one reference the caller must
 * release with tr_actor_release; pass NULL when no reference is wanted.
 * opts may be NULL (defaults) and is not retained (opts->name is copied).
 * Threads: any thread while tr_run is running.
 */
int tr_spawn(tr_behaviour_fn behaviour, void *state, const tr_spawn_opts_t *opts, tr_actor_t **ref);

/*
 * Sends msg to actor to.  Messages from one sender to one receiver are
 * delivered in the order sent.  Returns 0, or
 *   -TR_ECLOSED  the actor has exited: msg is counted as a dead letter and
 *                freed;
 *   -TR_EAGAIN   the mailbox is at its limit: the caller keeps msg;
 *   -TR_EINVAL   to or msg is NULL: the caller keeps msg.
 * Any message that never reaches a behaviour (the receiver exited first) is
 * freed and counted in tr_stats_t.dead_letters, also when tr_send returned 0.
 * Ownership: msg passes to the runtime (see the exceptions above); to is
 * borrowed and must be a reference the caller holds.
 * Threads: any thread while tr_run is running.
 */
int tr_send(tr_actor_t *to, tr_msg_t *msg);

/* Allocates a message carrying (tag, v) and sends it.  Returns as tr_send
 * (on -TR_EAGAIN the message is freed) or -TR_ENOMEM. */
int tr_send_u64(tr_actor_t *to, uint32_t tag, uint64_t v);

/*
 * The actor running on this thread: the one whose behaviour is being
 * called, or whose task is running (any task actor: tr_main's root, actor
 * nursery children, daemons, tr_spawn_task_actor's).  NULL elsewhere:
 * tr_run's root function, on_exit callbacks, tr_to_thread functions and
 * other threads.
 * Ownership: borrowed; valid until the behaviour returns, or for as long
 * as the task runs (an actor outlives its tasks).  Use tr_actor_dup to
 * keep it.
 * Threads: any.
 */
tr_actor_t *tr_self(void);

/*
 * Makes the current actor exit when its behaviour returns.  Messages still
 * queued become dead letters; on_exit runs; later sends return -TR_ECLOSED.
 * Returns 0, or -TR_EPERM outside a behaviour (a task actor included: it
 * exits when its tasks end).
 * Threads: inside a behaviour.
 */
int tr_actor_exit(void);

/* Adds a reference to a and returns a.  Threads: any thread. */
tr_actor_t *tr_actor_dup(tr_actor_t *a);

/* Drops a reference; the memory of an exited actor is freed with its last
 * reference.  NULL is a no-op.  Threads: any thread. */
void tr_actor_release(tr_actor_t *a);

/* The name given at spawn (the runtime's copy).  Ownership: borrowed,
 * valid as long as the caller holds its reference to a. */
const char *tr_actor_name(const tr_actor_t *a);

/* A process-unique id (never reused in the process, also across runs). */
uint64_t tr_actor_id(const tr_actor_t *a);

/*
 * The actor's uid, tractor's (name, uuid): its name and a 128-bit uuid
 * unique among the actors of every process (64 random bits drawn once per
 * process, then the actor's id).  Two actors may share a name, never a
 * uuid; every "is this the same actor" decision of the runtime compares
 * uuids.  tr_actor_uuid writes the 16 bytes (zeros for NULL).
 * tr_actor_uid writes "name@<32 hex digits>" into buf (at most len bytes,
 * NUL-terminated when len > 0) and returns, as snprintf, the length of the
 * whole text; -TR_EINVAL for NULL a.  Errors name actors by this text
 * (tr_error_src_uid, tr_error_canceller_uid, tr_error_relay_uid).
 * Threads: any thread, for any actor the caller holds a reference to.
 */
void tr_actor_uuid(const tr_actor_t *a, uint8_t out[16]);
int tr_actor_uid(const tr_actor_t *a, char *buf, size_t len);

/* Room for a uid of a name of n bytes: name, '@', 32 hex digits, NUL. */
#define TR_UID_LEN(n) ((n) + 34)

/* 1 once the actor has exited, else 0.  For an actor in another process
 * (tr_portal_actor of a process child, or of an actor found through
 * discovery.h: a local stand-in), 1 once this process knows that it has
 * gone: its channel heard that it exited, or lost the connection (its
 * process reaped, the connection broken or closed), before any dialog
 * with it is told of the end.  Threads: any thread. */
int tr_actor_exited(const tr_actor_t *a);

/*
 * Blocks the calling thread until actor a has exited and its on_exit has
 * returned (so the caller may free what the actor's state used), or
 * timeout_ns
 * nanoseconds have passed (timeout_ns < 0 waits forever).  Returns 0,
 * -TR_ETIMEDOUT, or -TR_EPERM when called on a worker thread (a worker
 * must never block).
 * Ownership: borrows a.
 * Threads: threads that are not runtime workers (the root function's).
 */
int tr_join(tr_actor_t *a, int64_t timeout_ns);

/* ---- runtime ---------------------------------------------------------- */

typedef struct tr_config {
  /* Worker threads; 0 (or less) = number of online CPUs; at most 64 (more
   * is taken as 64: tr_stats_t.workers says how many run).  The
   * environment variable TR_WORKERS, when set to a positive integer,
   * overrides this. */
  int workers;
  /* Messages an actor handles per turn before yielding its worker; 0 = 64. */
  int batch;
  /* The hang report: once the root has returned (tr_run's root function,
   * tr_main's root task), if tr_run is still waiting for actors after this
   * many nanoseconds, it logs once (TR_LOG_WARN: stderr unless a log hook
   * routes it elsewhere, nothing when logging is off) which actors are alive
   * (name, kind, mailbox depth, what each task is blocked on) and keeps
   * waiting.  0 = 5 s; < 0 = never.  The environment variable
   * TR_HANG_REPORT_MS, when set to an integer, overrides it (milliseconds;
   * 0 or less = never). */
  int64_t hang_report_ns;
  /* The logging threshold (include/tractor/log.h): TR_LOG_ERROR ..
   * TR_LOG_DEBUG; 0 keeps the current one (TR_LOG_WARN unless
   * tr_log_set_level changed it); negative turns logging off.  The
   * environment variable TR_LOG ("off", "error", "warn", "info", "debug"
   * or 0-4) overrides it. */
  int log_level;
  /* A channel to another process whose peer has been silent this long is
   * declared dead (-TR_EIO), as a broken connection is: every dialog over
   * it ends, so a half-open connection never hangs a caller.  With
   * timeout T, each channel checks every T/3 and sends a heartbeat when
   * it has written nothing for T/3, so an idle channel's heartbeats are
   * up to about 2T/3 apart, and a silent peer is declared dead between T
   * and 4T/3 after it last sent anything.  0 = 5 s; < 0 = never.  The
   * environment variable TR_PEER_TIMEOUT_MS, when set to an integer,
   * overrides it (milliseconds; 0 or less = never); child processes
   * inherit this process's value, rounded up to whole milliseconds. */
  int64_t peer_timeout_ns;
  /* Discovery and trust (discovery.h, docs/OPERATIONS.md); tr_main only.
   * Strings are copied when tr_main starts.
   *
   * registry_addr: the registrar's "host:port" (IPv4).  The environment
   * variable TR_REGISTRY_ADDR, when set and not empty, overrides the
   * field, as for the fields above; without either (NULL or ""),
   * "127.0.0.1:1616".  "off" turns discovery off (no listener for other
   * nodes, no registration). */
  const char *registry_addr;
  /* bind_addr: the host (or "host:port"; port 0 or none = the kernel's
   * choice) this node listens on for other nodes; its child processes
   * connect back to the same listener.  On "0.0.0.0" (every interface),
   * its actors register the host the registrar knows this one by.  The environment variable
   * TR_BIND_ADDR, when set and not empty, overrides the field; without
   * either (NULL or ""), "127.0.0.1".  Unused when discovery is off (child
   * processes then connect back to 127.0.0.1, on a port of the kernel's
   * choice).  The registrar's node listens on registry_addr
   * instead.  A non-loopback bind or registry address needs a secret or
   * allow_insecure (tr_main fails with -TR_EPERM otherwise). */
  const char *bind_addr;
  /* secret: with one, every connection this process makes or accepts
   * (to other nodes, the registrar, its child processes) starts with a
   * mutual challenge-response: fresh nonces both ways and an HMAC over
   * both nonces and both ends' uuids, checked in constant time, before
   * anything on it is dispatched.  A peer with another secret, or none,
   * is refused with a logged reason (tr_main: -TR_EPERM when that peer is
   * the registrar).  The environment variable TR_SECRET overrides the
   * field; without either, TR_SECRET_FILE names a file holding it (a
   * trailing newline dropped; unreadable or empty: tr_run and tr_main
   * fail with -TR_EINVAL).  Child processes get this process's key from
   * it, not the secret.  It authenticates; it does not encrypt
   * (docs/OPERATIONS.md, "Trust").  Read when the runtime starts (tr_run
   * too, not only tr_main); the string is not retained. */
  const char *secret;
  /* allow_insecure: 1 lets this node listen on or register at a
   * non-loopback address without a secret (anyone who can reach the port
   * can then call the exposed functions).  The environment variable
   * TR_ALLOW_INSECURE=1 sets it.  With a secret it is not needed. */
  int allow_insecure;
} tr_config_t;

typedef int (*tr_root_fn)(void *arg);

/*
 * Starts the runtime, calls root(arg) on the calling thread, waits until
 * root has returned and every actor has exited (printing the hang report
 * once if that takes hang_report_ns), then stops and joins the workers and
 * frees every actor and pooled message.  Returns root's result,
 * or -TR_EBUSY (a runtime is already running in this process), -TR_EINVAL,
 * -TR_ENOMEM (out of memory, or of threads) or -TR_EIO (another OS
 * error, such as the process's fd limit: the message names the call and
 * the OS error) when the runtime cannot start (root is then not called),
 * with an error object on the calling thread.
 * Ownership: cfg may be NULL (defaults) and is not retained.
 * Threads: any thread that is not a worker; one runtime per process at a time.
 */
int tr_run(const tr_config_t *cfg, tr_root_fn root, void *arg);

/*
 * Asks the runtime to shut down: every actor exits at its next turn (idle
 * ones are woken for it), queued messages become dead letters, and
 * tr_spawn fails with -TR_ENORUNTIME from now on.  Does not wait: tr_run
 * returns once root has returned and the actors are gone.
 * Returns 0, or -TR_ENORUNTIME when no runtime is running.
 * Threads: any thread, including behaviours.
 */
int tr_shutdown(void);

typedef struct tr_stats {
  int workers;             /* worker threads */
  uint64_t actors_spawned; /* since tr_run started */
  uint64_t actors_exited;
  uint64_t actors_live;      /* spawned and not yet exited */
  /* Of those, the node's own (discovery.h): its listener, its registrar,
   * its channels to other nodes and their proxies.  They live as long as
   * the node, and tr_main ends them after the root function has returned;
   * a leak check made inside the root counts the others. */
  uint64_t actors_node;
  uint64_t actors_allocated; /* actor objects not yet freed (live + referenced) */
  uint64_t msgs_handled;     /* messages delivered to behaviours */
  /* Messages freed undelivered: sent (by tr_send, a timer, the dialog
   * engine) to an actor that exited first.  The runtime's own wake-ups and
   * fd-readiness notices are not counted. */
  uint64_t dead_letters;
  uint64_t msgs_allocated;   /* messages not yet freed (excluding pool caches) */
  uint64_t steals;           /* actors taken from another worker's queue */
  uint64_t parks;            /* times a worker went to sleep (each look of a
                                worker parked while others run counts) */
  /* Protocol messages the dialog engine dropped: late replies to dialogs
   * that ended, messages for no dialog, malformed ones.  Each is logged
   * with its reason (TR_LOG_DEBUG for the expected late ones, TR_LOG_WARN
   * for the rest). */
  uint64_t proto_dropped;
} tr_stats_t;

/*
 * Snapshot of the runtime's counters; after tr_run has returned, the
 * figures of the run that ended.  Counters are summed from per-worker
 * slots without stopping the world, so a snapshot taken while actors run is
 * approximate; but an actor is counted as exited (actors_live,
 * actors_exited) before tr_join or tr_actor_nursery_close can return for
 * it, so a leak check right after either sees it gone.
 * Threads: any thread.
 */
void tr_stats(tr_stats_t *out);

/* ---- lifetime stack and signal-safe cancellation ------------------------ */

/*
 * Pushes fn(arg) onto the process-wide lifetime stack (tractor's
 * lifetime_stack): teardown callbacks that tr_run runs at its very end,
 * after every actor has exited, newest first, whatever the outcome (root
 * success or error, tr_shutdown, an actor cancel, SIGINT under tr_main).
 * Each pushed callback runs exactly once, on the thread that called
 * tr_run; a callback may push more, and those run too (next, being the
 * newest) before tr_run returns.  Callbacks run with no runtime, so they
 * must not use actors or tasks (tr_spawn and friends fail with
 * -TR_ENORUNTIME).  A tr_run that fails to start (root never called) runs
 * nothing: the stack waits for the next run.
 * Returns 0, -TR_EINVAL (fn is NULL) or -TR_ENOMEM (nothing pushed).
 * Ownership: arg is borrowed until fn has been called with it.
 * Threads: any thread, before or while a runtime runs (a mutex guards the
 * stack: not async-signal-safe).
 */
int tr_lifetime_push(void (*fn)(void *arg), void *arg);

/*
 * Requests cancellation of actor a and returns at once, without waiting
 * (tractor's sync cancel_soon).  A task actor has all its tasks cancelled
 * as if their outermost scope were (shields still protect): blocking calls
 * return -TR_ECANCELED, nurseries wait for their children, the actor exits
 * when its tasks have unwound.  A behaviour actor exits at its next turn.
 * An actor in another process (tr_portal_actor of a process child, or of
 * an actor found by discovery) is cancelled there, as by an actor cancel
 * from nobody (PROTOCOL.md 8.2: its dialogs report ContextCancelled naming
 * itself, and no CancelAck comes); the local stand-in stays until that
 * actor has exited, so a nursery still escalates (SIGTERM, SIGKILL) and
 * reaps its process.
 * The request is carried out shortly after, by the runtime's reactor
 * thread; requesting twice is harmless.
 * Returns 0, -TR_EINVAL (a is NULL), -TR_ECLOSED (a has already exited),
 * -TR_ENORUNTIME (no runtime running, or it is stopping: every actor has
 * exited by then) or -TR_EAGAIN (too many requests pending at once, see
 * TR_CANCEL_SOON_MAX: retry later).
 * Ownership: borrows a, which must be a reference the caller holds for the
 * duration of the call; the request keeps its own reference until it has
 * been carried out.  errno is preserved.
 * Threads: any thread, behaviours and tasks included, and
 * async-signal-safe: callable from a signal handler or from a function a
 * debugger calls in a stopped process (no locks, no allocation, no stdio:
 * atomics and one write(2)).  For that reason it is the one call that
 * records no error object when it fails (errors.h): the code alone says
 * why, and tr_error_last is left as it was.
 */
int tr_actor_cancel_soon(tr_actor_t *a);

/* Cancellation requests that may be pending (not yet carried out by the
 * reactor) at once; tr_actor_cancel_soon returns -TR_EAGAIN beyond it. */
#define TR_CANCEL_SOON_MAX 64

#ifdef __cplusplus
}
#endif
#endif
