/*
 * The top of the runtime: tr_run (runtime.c) sets up every layer, runs
 * the root function, waits for every actor and tears the layers down, in
 * that order.  Files at this level include downward only, and nothing
 * below includes this header: the layers below reach the hang report
 * (hang.c) only through the hooks it registers with the actor layer.
 */
#ifndef TR_RUNTIME_H
#define TR_RUNTIME_H

#include <stdint.h>

/* The hang report's delay when neither tr_config_t.hang_report_ns nor
 * TR_HANG_REPORT_MS says otherwise. */
#define TR_HANG_REPORT_DEFAULT_NS (5 * 1000000000LL)

/* Registers the hang report (hang.c) with the actor layer: the answer an
 * actor gives to its TR_SYS_DESCRIBE request, the release of an unanswered
 * one, and the report itself (tr__rt_wait_end prints it, once the root has
 * returned and the wait has lasted the report's delay).  Called by tr_run
 * at start-up.  Threads: tr_run's. */
void tr__hang_init(void);

/* Runs the lifetime stack (lifetime.c) until it is empty, newest callback
 * first, including callbacks pushed by callbacks.  Called by tr_run at its
 * very end, after the runtime is gone.  Threads: tr_run's thread. */
void tr__lifetime_run(void);

#endif
