/*
 * TR_ASSERT: invariant checks that stay on in every build.  Only for
 * conditions the runtime itself guarantees; input from outside the process
 * gets an error code instead, never an assertion.
 */
#ifndef TR_PLATFORM_ASSERT_H
#define TR_PLATFORM_ASSERT_H

/* Writes "tractor: invariant violated: ..." to stderr and aborts.  The one
 * place the library writes to a standard stream: a broken invariant means
 * the process state can no longer be trusted to reach a logging hook. */
__attribute__((noreturn, cold)) void tr__panic(const char *file, int line, const char *what);

#define TR_ASSERT(cond)                                                                            \
  do {                                                                                             \
    if (__builtin_expect(!(cond), 0))                                                              \
      tr__panic(__FILE__, __LINE__, #cond);                                                        \
  } while (0)

#endif
