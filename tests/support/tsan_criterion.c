/*
 * Makes Criterion usable under ThreadSanitizer.  Linked into the test
 * executables of TSan builds only.
 *
 * Criterion isolates tests with BoxFort, which maps a shared arena at an
 * address it picks with rand_r() between 0x2000'0000'0000 and
 * 0x6000'0000'0000.  TSan reserves almost all of that range for its shadow
 * and meta memory, so BoxFort's probes (mincore) always find it taken and
 * Criterion aborts with "Could not initialize inheritable arena" (Criterion
 * issue #274).  The one window there that TSan leaves to the application
 * is where PIE executables live, 0x5500'0000'0000..0x5680'0000'0000.
 *
 * We interpose rand_r: calls made from libcriterion get values that put
 * BoxFort's candidate base addresses inside that window (BoxFort still
 * probes each one and skips occupied pages); every other caller gets
 * glibc's rand_r unchanged.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

int rand_r(unsigned int *seed);

static int called_from_criterion(void *pc) {
  Dl_info info;
  return dladdr(pc, &info) && info.dli_fname && strstr(info.dli_fname, "libcriterion") != NULL;
}

int rand_r(unsigned int *seed) {
  static int (*real)(unsigned int *);
  if (called_from_criterion(__builtin_return_address(0))) {
    /* BoxFort computes base = 0x2000'0000'0000 + (r & 0x3fffff) << 24. */
    *seed = *seed * 1103515245u + 12345u;
    return (int)(0x350000u + (*seed >> 8) % 0x18000u);
  }
  if (!real)
    real = (int (*)(unsigned int *))dlsym(RTLD_NEXT, "rand_r");
  return real(seed);
}
