/* Sizes as people type them, and as tables show them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "vmkit-base.h"

static void parse_units(void **state)
{
  uint64_t b;
  assert_int_equal(vm_parse_size("4G", 'B', &b), 0);
  assert_int_equal(b, 4ULL << 30);
  assert_int_equal(vm_parse_size("512M", 'B', &b), 0);
  assert_int_equal(b, 512ULL << 20);
  assert_int_equal(vm_parse_size("1.5T", 'B', &b), 0);
  assert_int_equal(b, 3ULL << 39);
  assert_int_equal(vm_parse_size("2GiB", 'B', &b), 0);
  assert_int_equal(b, 2ULL << 30);
  assert_int_equal(vm_parse_size("2gb", 'B', &b), 0);
  assert_int_equal(b, 2ULL << 30);
  assert_int_equal(vm_parse_size("4096B", 'G', &b), 0);
  assert_int_equal(b, 4096);
  assert_int_equal(vm_parse_size("100k", 'B', &b), 0);
  assert_int_equal(b, 102400);
}

static void parse_default_unit(void **state)
{
  uint64_t b;
  assert_int_equal(vm_parse_size("256", 'M', &b), 0);
  assert_int_equal(b, 256ULL << 20);
  assert_int_equal(vm_parse_size("10", 'G', &b), 0);
  assert_int_equal(b, 10ULL << 30);
  assert_int_equal(vm_parse_size("0", 'M', &b), 0);
  assert_int_equal(b, 0);
}

static void parse_rejects(void **state)
{
  uint64_t b = 77;
  const char *bad[] = { "", "G", "-1G", "4X", "4GG", "1.5", "abc", "4 G", "0x10", "1e3", "99999999999P", NULL };
  for (int i = 0; bad[i]; i++) {
    /* "1.5" with default unit bytes is not a whole number of bytes. */
    assert_int_equal(vm_parse_size(bad[i], 'B', &b), -1);
  }
  assert_int_equal(vm_parse_size(NULL, 'B', &b), -1);
  assert_int_equal(b, 77);
}

/* Sizes are integers all the way: no double rounds them (review of issue 6). */
static void parse_exact(void **state)
{
  uint64_t b;
  assert_int_equal(vm_parse_size("9007199254740993", 'B', &b), 0);
  assert_true(b == 9007199254740993ULL);
  assert_int_equal(vm_parse_size("18446744073709551615", 'B', &b), 0);
  assert_true(b == UINT64_MAX);
  assert_int_equal(vm_parse_size("18446744073709551616", 'B', &b), -1);
  assert_int_equal(vm_parse_size("16384P", 'B', &b), -1);
  assert_int_equal(vm_parse_size("16383P", 'B', &b), 0);
  assert_true(b == 16383ULL << 50);
  /* A fraction is taken only when it makes whole bytes. */
  assert_int_equal(vm_parse_size("1.00000000000000000001G", 'B', &b), -1);
  assert_int_equal(vm_parse_size("1.5G", 'B', &b), 0);
  assert_true(b == 3ULL << 29);
  assert_int_equal(vm_parse_size("0.5K", 'B', &b), 0);
  assert_true(b == 512);
  assert_int_equal(vm_parse_size("0.1K", 'B', &b), -1);
  assert_int_equal(vm_parse_size("1.50000000000000000000000000000G", 'B', &b), 0);
  assert_true(b == 3ULL << 29);
  assert_int_equal(vm_parse_size("2.", 'G', &b), -1);
  assert_int_equal(vm_parse_size("9007199254740993.5", 'K', &b), 0);
  assert_true(b == 9007199254740993ULL * 1024 + 512);
  assert_int_equal(vm_parse_size("9007199254740993.5", 'B', &b), -1);
  assert_int_equal(vm_parse_size("1.25", 'M', &b), 0);
  assert_true(b == 1310720);
}

static void format_human(void **state)
{
  char buf[16];
  assert_string_equal(vm_format_size(0, buf), "0");
  assert_string_equal(vm_format_size(1023, buf), "1023");
  assert_string_equal(vm_format_size(1024, buf), "1K");
  assert_string_equal(vm_format_size(1536ULL << 20, buf), "1.5G");
  assert_string_equal(vm_format_size(256ULL << 20, buf), "256M");
  assert_string_equal(vm_format_size(8ULL << 40, buf), "8T");
}

static void parse_uint(void **state)
{
  uint64_t v;
  assert_int_equal(vm_parse_uint("4", 1, 512, &v), 0);
  assert_int_equal(v, 4);
  assert_int_equal(vm_parse_uint("0", 1, 512, &v), -1);
  assert_int_equal(vm_parse_uint("513", 1, 512, &v), -1);
  assert_int_equal(vm_parse_uint("-1", 0, 512, &v), -1);
  assert_int_equal(vm_parse_uint("3x", 0, 512, &v), -1);
  assert_int_equal(vm_parse_uint("", 0, 512, &v), -1);
}

static void durations(void **state)
{
  int64_t s;
  assert_int_equal(vm_parse_duration("90", &s), 0);
  assert_int_equal(s, 90);
  assert_int_equal(vm_parse_duration("30m", &s), 0);
  assert_int_equal(s, 1800);
  assert_int_equal(vm_parse_duration("12h", &s), 0);
  assert_int_equal(s, 43200);
  assert_int_equal(vm_parse_duration("7d", &s), 0);
  assert_int_equal(s, 604800);
  assert_int_equal(vm_parse_duration("2w", &s), 0);
  assert_int_equal(s, 1209600);
  const char *bad[] = { "", "d", "-1d", "1.5d", "3y", "10dd", "1 d", "9999999999999d", NULL };
  for (int i = 0; bad[i]; i++) assert_int_equal(vm_parse_duration(bad[i], &s), -1);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(parse_units),   cmocka_unit_test(parse_default_unit),
    cmocka_unit_test(parse_rejects), cmocka_unit_test(format_human),
    cmocka_unit_test(parse_uint),    cmocka_unit_test(durations),
    cmocka_unit_test(parse_exact),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
