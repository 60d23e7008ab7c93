/* Placeholder: the reactor thread is being written (issue 3). */
#include "runtime/runtime.h"

int tr__reactor_start(void) { return 0; }
void tr__reactor_stop(void) {}
