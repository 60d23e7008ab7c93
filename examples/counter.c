/* The README's example: one counter actor, ten messages, a clean exit.
 * Built and run by ctest (test `example_counter`). */
#include <stdio.h>

#include <tractor/tractor.h>

enum { ADD = 1, STOP = 2 };

static void counter(void *state, tr_msg_t *m) {
  long *n = state;
  if (m->tag == ADD)
    *n += (long)m->u64;
  else
    tr_actor_exit(); /* any other tag: stop */
}

static int root(void *arg) {
  tr_actor_t *c;
  int rc = tr_spawn(counter, arg, NULL, &c);
  if (rc != 0)
    return rc;
  for (int i = 0; i < 10; i++)
    tr_send_u64(c, ADD, (uint64_t)i);
  tr_send_u64(c, STOP, 0);
  tr_join(c, -1); /* wait until it has exited */
  tr_actor_release(c);
  return 0;
}

int main(void) {
  long n = 0;
  int rc = tr_run(NULL, root, &n);
  if (rc != 0) {
    fprintf(stderr, "counter: %s\n", tr_strerror(rc));
    return 1;
  }
  printf("sum = %ld\n", n);
  return n == 45 ? 0 : 1;
}
