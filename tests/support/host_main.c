/*
 * The main of every test executable (the test host, issue 10 item 5):
 * Criterion's runner, except in a child actor process, which an actor
 * nursery starts from this same executable (TR_SPAWN_PROCESS) and which
 * tr_main serves instead (TR_TEST_MAIN, include/tractor/testing.h).
 *
 * Criterion's own main is a symbol of libcriterion.so; the executable's
 * main takes precedence over it.
 */
#include <tractor/testing.h>

TR_TEST_MAIN()
