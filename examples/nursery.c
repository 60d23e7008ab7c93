/* Tasks, a nursery and a deadline (trio style), from the README.
 * Built and run by ctest (test `example_nursery`). */
#include <stdio.h>

#include <tractor/tractor.h>

#define MS (1000 * 1000LL)

static int worker(void *arg) {
  int id = (int)(intptr_t)arg;
  if (id == 3)
    return tr_fail("ValueError", "worker %d refuses", id);
  return tr_sleep(10000 * MS); /* cancelled when worker 3 fails */
}

static int root(void *arg) {
  (void)arg;
  tr_nursery_t *n;
  int rc = tr_nursery_open(&n);
  if (rc)
    return rc;
  for (intptr_t i = 1; i <= 3; i++)
    tr_nursery_spawn(n, worker, (void *)i, NULL);
  rc = tr_nursery_close(n); /* waits for all; the failure cancels the rest */
  char buf[512];
  tr_error_format(tr_error_last(), buf, sizeof buf);
  printf("nursery: %s\n%s\n", tr_errname(rc), buf);

  tr_scope_t s;
  tr_move_on_after(&s, 20 * MS);
  rc = tr_sleep(10000 * MS); /* -TR_ECANCELED after 20 ms */
  tr_scope_close(&s);
  printf("move_on_after: %s, caught=%d\n", tr_errname(rc), tr_scope_cancelled_caught(&s));
  return 0;
}

int main(int argc, char **argv) {
  int rc = tr_main(argc, argv, root, NULL, NULL);
  return rc == 0 ? 0 : 1;
}
