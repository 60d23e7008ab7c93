/*
 * tr-bench: in-process Savina-style workloads, shared declarations.
 *
 * Each workload copies the semantics of the peer benchmarks in
 * bench-peers/ (CAF 0.17 and Erlang/OTP 25): same sizes, same message
 * flow, same timed section, same result-line fields.  main.c runs every
 * workload inside its own tr_run, so that one workload's actors, pools and
 * counters never colour the next one's numbers, and so that tr_stats after
 * the run can prove that no actor or message leaked.
 *
 * Workload functions run on the root (main) thread, which is not an actor:
 * "main receives done" is modelled by a latch, a tiny actor that records
 * the one message it gets and exits, which the main thread tr_joins.
 */
#ifndef TR_BENCH_H
#define TR_BENCH_H

#include <stdint.h>

#include <tractor/tractor.h>

/* Message tags shared by the workloads.  Only the receiving behaviour
 * interprets them; they exist so that a STOP can never be mistaken for a
 * value. */
enum {
  BENCH_TAG_VALUE = 1, /* u64 carries the workload's integer */
  BENCH_TAG_START,     /* kick an idle actor into its first step */
  BENCH_TAG_STOP,      /* exit (the peers' exit/stop message) */
  BENCH_TAG_PING,      /* spawn_idle sweep that keeps actors alive */
};

/*
 * Where the message of each send comes from (--msgs; the BENCH line's
 * msgs= field).  CAF and Erlang build a new message for every send, so
 * BENCH_MSGS_FRESH, the default, allocates one per send (tr_msg_new, or a
 * new tr_buf for the ctx_stream payloads) and lets the runtime free the one
 * that was handled.  BENCH_MSGS_REUSE forwards the message in hand instead
 * (zero allocations per hop), which the peers cannot do: it shows what the
 * allocation costs, not a figure to compare with theirs.
 */
typedef enum bench_msgs {
  BENCH_MSGS_FRESH = 0,
  BENCH_MSGS_REUSE = 1,
} bench_msgs_t;

/* The mode of the run in progress.  Written by main.c on the root thread
 * before tr_run starts the workers (which orders it before every read);
 * read by the workloads and their behaviours, never written while a run
 * lasts.  Workloads without a reuse form ignore it. */
extern bench_msgs_t bench_msgs;

/* 1 while a transport=relay row runs: messages cross a codec, so a reused
 * buffer comes back as a copy of itself. */
extern int bench_relay;

/* --window: the credit window tcp_stream asks for (tr_ctx_opts_t.window),
 * 0 for the runtime's default (TR_STREAM_WINDOW_REMOTE between processes).  Written by main.c
 * before tr_run, as bench_msgs. */
extern uint32_t bench_window;

/* What a workload hands back to main.c for the BENCH line. */
typedef struct bench_result {
  uint64_t n;      /* the N printed as n= (may be rounded, as fanin's 8*M) */
  double secs;     /* the timed section, CLOCK_MONOTONIC */
  double rate;     /* ops per second, as the peer defines ops */
  int ok;          /* -1: no check applies; 0: check failed; 1: passed */
  char extra[320]; /* workload-specific fields, each " key=value" */
} bench_result_t;

/*
 * A workload.  Runs on the root thread with the runtime running (one
 * marked `node` in main.c's table runs in tr_main's root task instead,
 * discovery on, and must not tr_join); n is the size asked for.  Returns
 * 0 (the result, including a failed correctness check, is in *res) or a
 * negative -TR_E* when an API call failed; in that case it has already
 * reported the reason on stderr, shut the runtime down and released every
 * reference it held, so that tr_run can return.
 */
typedef int (*bench_fn)(uint64_t n, bench_result_t *res);

/* Runs fn(arg) as the task of a new task actor ("bench": portals and
 * nurseries want a task) and waits for it on this (the root) thread.
 * Returns the task's result or the spawn's error. */
int bench_run_task(tr_task_fn fn, void *arg);

/* The ctx_stream / tcp_stream sender (bench_rpc.c): n 64-byte messages to
 * bench.sink of p through a context stream (a new buffer per send, or one
 * reused), then its count.  Returns 0 with *secs, *got and *window (the
 * context's: the default the runtime chose unless copts asked), or the
 * first error.  A task. */
int bench_sink_stream(tr_portal_t *p, uint64_t n, int reuse, const tr_ctx_opts_t *copts,
                      double *secs, uint64_t *got, uint32_t *window);

int bench_pingpong(uint64_t n, bench_result_t *res);
int bench_ring(uint64_t n, bench_result_t *res);
int bench_fanin(uint64_t n, bench_result_t *res);
int bench_skynet(uint64_t n, bench_result_t *res);
int bench_spawn_idle(uint64_t n, bench_result_t *res);
int bench_pipeline(uint64_t n, bench_result_t *res);
int bench_task_switch(uint64_t n, bench_result_t *res);
int bench_task_spawn(uint64_t n, bench_result_t *res);
int bench_cancel_storm(uint64_t n, bench_result_t *res);
int bench_ctx_stream(uint64_t n, bench_result_t *res);        /* mode=rpc */
int bench_ctx_stream_stream(uint64_t n, bench_result_t *res); /* mode=stream */
/* Between two processes (bench_tcp.c). */
int bench_tcp_rpc(uint64_t n, bench_result_t *res);
int bench_tcp_stream(uint64_t n, bench_result_t *res);
int bench_spawn_process(uint64_t n, bench_result_t *res);
/* Discovery between processes (bench_discovery.c): node workloads. */
int bench_find_actor(uint64_t n, bench_result_t *res);
int bench_connect_handshake(uint64_t n, bench_result_t *res);

/* Before tr_main for a node workload: makes sure this process has a
 * registry address of its own unless TR_REGISTRY_ADDR names one
 * (bench_discovery.c says how).  Returns 0, or -1 after saying why on
 * stderr.  Threads: the root thread, before the runtime starts. */
int bench_discovery_prepare(void);

/* ---- helpers (main.c) --------------------------------------------------- */

/* Seconds on CLOCK_MONOTONIC (the peers' steady clock).  Threads: any. */
double bench_now(void);

/* The median of v[0..n), n > 0 (sorts v in place).  Threads: any. */
double bench_median(double *v, uint64_t n);

/* Resident set size in bytes from /proc/self/status VmRSS, as the peers
 * read it, or -1 when it cannot be read.  Threads: any. */
long long bench_rss_bytes(void);

/*
 * Reports a failed API call (what: the call, rc: its -TR_E* result) on
 * stderr, records the first such rc for main.c, and asks the runtime to
 * shut down: a behaviour that cannot send would otherwise leave the main
 * thread joining a latch forever.  Returns rc so that callers can write
 * `return bench_fail(...)`.
 * Threads: any thread while tr_run runs, including behaviours.
 */
int bench_fail(const char *what, int rc);

/* The first rc recorded by bench_fail since the last bench_fail_reset, or
 * 0.  Threads: any. */
int bench_failed(void);
void bench_fail_reset(void);

/*
 * The "main" mailbox of the peers.  bench_latch_open spawns an actor that
 * stores the u64 of the first message it receives and exits;
 * bench_latch_wait joins it.  Senders get their own reference with
 * tr_actor_dup(latch.ref).
 * Ownership: latch->ref belongs to the latch object and is released by
 * bench_latch_wait (or bench_latch_close on an error path).  The latch
 * struct is the actor's state, so it must stay put until the wait returns.
 * Threads: the root thread.
 */
typedef struct bench_latch {
  tr_actor_t *ref;
  uint64_t value; /* written by the latch actor before it exits */
  int arrived;    /* 1 once a message arrived (0 after a shutdown) */
} bench_latch_t;

int bench_latch_open(bench_latch_t *latch, const char *name);
/* Waits until the latch actor has exited and releases latch->ref.  Returns
 * 0 when a message arrived, else the recorded failure or -TR_ECANCELED. */
int bench_latch_wait(bench_latch_t *latch);
/* Error path: releases latch->ref without waiting (NULL ref is a no-op). */
void bench_latch_close(bench_latch_t *latch);

/*
 * The fresh mode's send: allocates a message carrying tag, u64 = v and
 * cid, with from as its sender, and sends it to `to`.  Returns 0 or the
 * rc of tr_msg_new or tr_send (not reported: the caller calls bench_fail).
 * Ownership: from (NULL for none) is a reference that passes to the
 * message, and is released on every failure; to is borrowed.
 * Threads: any thread while tr_run runs.
 */
int bench_send_new(tr_actor_t *to, uint32_t tag, uint64_t v, uint64_t cid, tr_actor_t *from);

/* Sends BENCH_TAG_STOP to a and releases the caller's reference to it.  A
 * send to an actor that has already exited is not an error here.  Returns 0
 * or the failed send's rc (after bench_fail).  Threads: any. */
int bench_stop_release(tr_actor_t *a);

/* Stops the behaviour that is running: the common STOP handler. */
void bench_exit_self(void);

#endif
