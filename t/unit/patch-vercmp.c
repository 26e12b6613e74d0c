/* vmpatch's version comparison (vmpatch/vercmp.c): Debian's rules through
 * libdpkg, RPM's through librpm; never string order. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "vercmp.h"

#define LT(f, a, b)                                                                                                    \
  do {                                                                                                                 \
    assert_true(vmp_vercmp(f, a, b) < 0);                                                                             \
    assert_true(vmp_vercmp(f, b, a) > 0);                                                                             \
  } while (0)
#define EQ(f, a, b) assert_int_equal(vmp_vercmp(f, a, b), 0)

static void debian(void **state)
{
  /* The epoch wins over everything after it. */
  LT(VMP_DEB, "9.9-9", "1:0.1-1");
  LT(VMP_DEB, "1:1.0-1", "2:0.5-1");
  EQ(VMP_DEB, "0:1.0-1", "1.0-1");
  /* A tilde sorts before everything, even the end of the string. */
  LT(VMP_DEB, "1.0~rc1", "1.0");
  LT(VMP_DEB, "1.0~rc1", "1.0~rc2");
  LT(VMP_DEB, "1.0~~", "1.0~");
  LT(VMP_DEB, "3.0.11-1~deb12u2", "3.0.11-1~deb12u3");
  LT(VMP_DEB, "3.0.11-1~deb12u3", "3.0.11-1");
  /* A binNMU (+b1) is newer than its source version. */
  LT(VMP_DEB, "6.1.76-1", "6.1.76-1+b1");
  LT(VMP_DEB, "2.36-9+deb12u3", "2.36-9+deb12u4");
  /* Numbers as numbers, not strings. */
  LT(VMP_DEB, "1.9", "1.10");
  LT(VMP_DEB, "1.0-2", "1.0-10");
  EQ(VMP_DEB, "3.0.11-1~deb12u2", "3.0.11-1~deb12u2");
}

static void rpm(void **state)
{
  /* A release that goes on is newer. */
  LT(VMP_RPM, "1.0-1", "1.0-1.el9");
  LT(VMP_RPM, "1:9", "2:1");
  /* A letter after the digits makes a newer version in RPM. */
  LT(VMP_RPM, "1.0", "1.0a");
  LT(VMP_RPM, "1.9", "1.10");
  LT(VMP_RPM, "3.0.7-24.el9", "3.0.7-25.el9_3");
  LT(VMP_RPM, "1.0~rc1", "1.0");
  EQ(VMP_RPM, "0:1.0-1", "1.0-1");
  EQ(VMP_RPM, "1.0-1.el9", "1.0-1.el9");
}

static void validity(void **state)
{
  const char *why = NULL;
  assert_true(vmp_version_valid(VMP_DEB, "1:3.0.11-1~deb12u2", NULL));
  assert_false(vmp_version_valid(VMP_DEB, "", &why));
  assert_non_null(why);
  why = NULL;
  assert_false(vmp_version_valid(VMP_DEB, "1.0 2", &why));
  assert_non_null(why);
  assert_false(vmp_version_valid(VMP_DEB, "x:1.0", NULL));
  assert_true(vmp_version_valid(VMP_RPM, "2:1.0-1.el9", NULL));
  assert_false(vmp_version_valid(VMP_RPM, "", NULL));
  assert_int_equal(vmp_pkgfmt_parse("deb"), VMP_DEB);
  assert_int_equal(vmp_pkgfmt_parse("rpm"), VMP_RPM);
  assert_int_equal(vmp_pkgfmt_parse("apk"), -1);
  /* Many comparisons do not grow libdpkg's memory pool (emptied each time);
   * AddressSanitizer would see a use of freed memory if it were emptied early. */
  for (int i = 0; i < 100000; i++) LT(VMP_DEB, "1.0~rc1", "1.0");
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(debian),
    cmocka_unit_test(rpm),
    cmocka_unit_test(validity),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
