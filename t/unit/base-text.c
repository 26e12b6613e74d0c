/* Text from a guest made fit for one terminal line: control characters (C0,
 * DEL, C1 as UTF-8) become spaces; cuts never split a UTF-8 character. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <string.h>

#include "vmkit-base.h"

static void sanitize_controls(void **state)
{
  (void)state;
  char s[] = "ok\x1b[31mred\x7f\ttab\nline\xc2\x9b" "2J caf\xc3\xa9";
  vm_sanitize(s);
  assert_string_equal(s, "ok [31mred  tab line  2J caf\xc3\xa9");
  char empty[] = "";
  vm_sanitize(empty);
  assert_string_equal(empty, "");
  vm_sanitize(NULL);
}

static void cut_utf8(void **state)
{
  (void)state;
  char a[] = "caf\xc3\xa9!";
  vm_cut_utf8(a, 4); /* inside the two bytes of the e-acute: cut before it */
  assert_string_equal(a, "caf");
  char b[] = "caf\xc3\xa9!";
  vm_cut_utf8(b, 5);
  assert_string_equal(b, "caf\xc3\xa9");
  char c[] = "short";
  vm_cut_utf8(c, 40);
  assert_string_equal(c, "short");
  char d[] = "\xe2\x82\xac\xe2\x82\xac"; /* two euro signs, three bytes each */
  vm_cut_utf8(d, 5);
  assert_string_equal(d, "\xe2\x82\xac");
  vm_cut_utf8(d, 0);
  assert_string_equal(d, "");
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(sanitize_controls),
    cmocka_unit_test(cut_utf8),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
