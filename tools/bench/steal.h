/*
 * Host steal time, for the lines of the loopback round-trip workloads
 * (tcp_rpc, tr-iofloor): on a shared VM the hypervisor takes the virtual
 * CPUs away now and then, and a round trip that needs both processes
 * running waits for that.  A few such stalls of a millisecond move a
 * mean of ten-microsecond round trips by tens of percent, so each line
 * says how much of the run the host took: steal_pct, the steal time of
 * every CPU (/proc/stat) over the timed section, as a percentage of its
 * wall time times the CPUs.  0 where /proc/stat has no steal field.
 * Header-only: tr-iofloor is a program of its own.
 */
#ifndef TR_BENCH_STEAL_H
#define TR_BENCH_STEAL_H

#include <stdio.h>
#include <unistd.h>

/* The machine's steal time so far, in clock ticks (-1: unknown). */
static inline long long bench_steal_ticks(void) {
  FILE *f = fopen("/proc/stat", "r");
  if (!f)
    return -1;
  /* cpu  user nice system idle iowait irq softirq steal ... */
  long long v[8];
  int got = fscanf(f, "cpu %lld %lld %lld %lld %lld %lld %lld %lld", &v[0], &v[1], &v[2], &v[3],
                   &v[4], &v[5], &v[6], &v[7]);
  fclose(f);
  return got == 8 ? v[7] : -1;
}

/* steal_pct for a section of `secs` that began at t0 and ended at t1
 * (bench_steal_ticks). */
static inline double bench_steal_pct(long long t0, long long t1, double secs) {
  long hz = sysconf(_SC_CLK_TCK), cpus = sysconf(_SC_NPROCESSORS_ONLN);
  if (t0 < 0 || t1 < t0 || hz <= 0 || cpus <= 0 || secs <= 0)
    return 0;
  return 100.0 * (double)(t1 - t0) / (double)hz / (secs * (double)cpus);
}

#endif
