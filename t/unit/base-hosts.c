/* The pool's hosts file. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <string.h>

#include "vmkit-base.h"

static void parses_hosts_and_tags(void **state)
{
  struct vm_hosts h;
  int line = 0;
  const char *text = "# pool\n"
                     "\n"
                     "host1 qemu:///system rack1 ssd\n"
                     "  host2\tqemu+ssh://root@host2/system   # remote\n"
                     "host3 qemu+unix:///system?socket=/x/libvirt-sock\n";
  assert_int_equal(vm_hosts_parse(text, &h, &line), 0);
  assert_int_equal(h.n, 3);
  assert_string_equal(h.v[0].name, "host1");
  assert_string_equal(h.v[0].uri, "qemu:///system");
  assert_int_equal(h.v[0].tags.n, 2);
  assert_string_equal(h.v[0].tags.v[1], "ssd");
  assert_string_equal(h.v[1].uri, "qemu+ssh://root@host2/system");
  assert_int_equal(h.v[1].tags.n, 0);
  assert_non_null(vm_hosts_find(&h, "host3"));
  assert_null(vm_hosts_find(&h, "host4"));
  vm_hosts_free(&h);
}

static void rejects_bad_lines(void **state)
{
  struct vm_hosts h;
  int line = 0;
  assert_int_equal(vm_hosts_parse("a qemu:///system\nb\n", &h, &line), -1);
  assert_int_equal(line, 2);
  assert_int_equal(vm_hosts_parse("a notauri\n", &h, &line), -1);
  assert_int_equal(line, 1);
  assert_int_equal(vm_hosts_parse("a qemu:///system\n\na qemu:///session\n", &h, &line), -1);
  assert_int_equal(line, 3);
}

static void empty_file(void **state)
{
  struct vm_hosts h;
  int line = 0;
  assert_int_equal(vm_hosts_parse("# nothing\n", &h, &line), 0);
  assert_int_equal(h.n, 0);
  vm_hosts_free(&h);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(parses_hosts_and_tags),
    cmocka_unit_test(rejects_bad_lines),
    cmocka_unit_test(empty_file),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
