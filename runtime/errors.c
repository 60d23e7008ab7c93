/* Error code names and descriptions, generated from TR_ERRNO_MAP. */
#include <stdio.h>
#include <stdlib.h>

#include <tractor/errors.h>

#include "runtime/platform/assert.h"

static int code_index(int rc) { return rc < 0 ? -rc : rc; }

const char *tr_strerror(int rc) {
  switch (code_index(rc)) {
  case 0:
    return "success";
#define TR__ERR_DESC(name, val, type, desc)                                                        \
  case val:                                                                                        \
    return desc;
    TR_ERRNO_MAP(TR__ERR_DESC)
#undef TR__ERR_DESC
  default:
    return "unknown error";
  }
}

const char *tr_errname(int rc) {
  switch (code_index(rc)) {
  case 0:
    return "OK";
#define TR__ERR_NAME(name, val, type, desc)                                                        \
  case val:                                                                                        \
    return "TR_" #name;
    TR_ERRNO_MAP(TR__ERR_NAME)
#undef TR__ERR_NAME
  default:
    return "TR_E?";
  }
}

const char *tr_errtype(int rc) {
  switch (code_index(rc)) {
#define TR__ERR_TYPE(name, val, type, desc)                                                        \
  case val:                                                                                        \
    return type;
    TR_ERRNO_MAP(TR__ERR_TYPE)
#undef TR__ERR_TYPE
  default:
    return NULL;
  }
}

void tr__panic(const char *file, int line, const char *what) {
  fprintf(stderr, "tractor: invariant violated at %s:%d: %s\n", file, line, what);
  abort();
}
