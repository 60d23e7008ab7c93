/*
 * Host steal time, for the lines of the loopback round-trip workloads
 * (tcp_rpc, tr-iofloor): on a shared VM the hypervisor takes the virtual
 * CPUs away now and then, and a round trip that needs both processes
 * running waits for that.  A few such stalls of a millisecond move a
 * mean of ten-microsecond round trips by tens of percent, so each line
 * says how much of the run the host took: steal_pct, the steal time of
 * every CPU (/proc/stat) over the timed section, as a percentage of its
 * wall time times the CPUs.  0 where /proc/stat has no steal field.
 * Also the tail of their single calls (bench_slow_pct).
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

/* slow_pct: the share of the timed calls' total time (us, n of them,
 * sorted) that calls over 4x the median spent beyond the median: what
 * the stalls cost the mean.  Stalls of the host move it too, but a
 * runtime's own (a thread woken on a spinning worker's core, say) show
 * here first: the raw floor's is 1-4 % on this VM. */
static inline double bench_slow_pct(const double *us, unsigned long n, double median) {
  double total = 0, slow = 0;
  for (unsigned long i = 0; i < n; i++) {
    total += us[i];
    if (us[i] > 4 * median)
      slow += us[i] - median;
  }
  return total > 0 ? 100.0 * slow / total : 0;
}

#endif
