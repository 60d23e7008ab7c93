/* Error codes: every code has a distinct name, description and type. */
#include <criterion/criterion.h>
#include <string.h>

#include <tractor/errors.h>

Test(errors, every_code_named, .timeout = 10) {
  for (int c = 1; c < TR_ERRNO_MAX_; c++) {
    cr_assert_str_neq(tr_strerror(-c), "unknown error", "code %d", c);
    cr_assert_str_eq(tr_strerror(c), tr_strerror(-c));
    cr_assert_neq(tr_errtype(-c), NULL);
    cr_assert_eq(strncmp(tr_errname(-c), "TR_E", 4), 0);
    for (int d = 1; d < c; d++)
      cr_assert_str_neq(tr_errname(-c), tr_errname(-d));
  }
}

Test(errors, known_values, .timeout = 10) {
  cr_assert_str_eq(tr_errname(-TR_ECANCELED), "TR_ECANCELED");
  cr_assert_str_eq(tr_errtype(-TR_ECTXCANCELED), "ContextCancelled");
  cr_assert_str_eq(tr_errtype(-TR_EEOF), "EndOfChannel");
  cr_assert_str_eq(tr_errname(0), "OK");
  cr_assert_str_eq(tr_strerror(0), "success");
}

Test(errors, unknown_codes, .timeout = 10) {
  cr_assert_str_eq(tr_strerror(-100000), "unknown error");
  cr_assert_str_eq(tr_errname(TR_ERRNO_MAX_), "TR_E?");
  cr_assert_eq(tr_errtype(-100000), NULL);
}
