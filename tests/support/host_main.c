/*
 * The main of every test executable (the test host, issue 10 item 5):
 * Criterion's runner, except in a child actor process, which an actor
 * nursery starts from this same executable (TR_SPAWN_PROCESS) and which
 * tr_main serves instead (include/tractor/task.h, tr_spawned_child).
 *
 * Criterion's own main is a strong symbol of libcriterion.so; the
 * executable's main takes precedence over it, and this one does what
 * Criterion's does (initialize, handle the arguments, run, finalize).
 */
#include <criterion/criterion.h>
#include <stdbool.h>

#include <tractor/task.h>

int main(int argc, char **argv) {
  if (tr_spawned_child())
    return tr_main(argc, argv, NULL, NULL, NULL); /* serves, then exits */
  struct criterion_test_set *tests = criterion_initialize();
  int result = 0;
  if (criterion_handle_args(argc, argv, true))
    result = !criterion_run_all_tests(tests);
  criterion_finalize(tests);
  return result;
}
