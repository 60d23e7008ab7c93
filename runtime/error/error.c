/* Placeholder: the rich error object is being written (issue 3). */
#include <tractor/errors.h>
