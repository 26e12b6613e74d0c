/* Migration plans (vmkit-plan(5)), parsed as untrusted text. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "vmkit-base.h"

static int parse(const char *text, struct vm_plan *p, int *line, const char **why)
{
  return vm_plan_parse(text, strlen(text), p, line, why);
}

static void parses_moves_comments_and_blanks(void **state)
{
  struct vm_plan p;
  int line;
  const char *why;
  assert_int_equal(parse("#!vmkit-plan 1\n# evacuate kvm1\n\nweb1 kvm1 kvm2\n  db\tkvm1  kvm3 # last\r\n", &p, &line, &why), 0);
  assert_int_equal(p.n, 2);
  assert_string_equal(p.v[0].vm, "web1");
  assert_string_equal(p.v[0].src, "kvm1");
  assert_string_equal(p.v[0].dst, "kvm2");
  assert_int_equal(p.v[0].line, 4);
  assert_string_equal(p.v[1].dst, "kvm3");
  assert_int_equal(p.v[1].line, 5);
  vm_plan_free(&p);
  /* URIs are words too. */
  assert_int_equal(parse("vm qemu:///system qemu+ssh://root@kvm2/system", &p, &line, &why), 0);
  assert_string_equal(p.v[0].dst, "qemu+ssh://root@kvm2/system");
  vm_plan_free(&p);
  assert_int_equal(parse("", &p, &line, &why), 0);
  assert_int_equal(p.n, 0);
}

static void refuses_bad_lines_with_their_number(void **state)
{
  struct vm_plan p;
  int line;
  const char *why;
  assert_int_equal(parse("a h1 h2\nb h1\n", &p, &line, &why), -1);
  assert_int_equal(line, 2);
  assert_string_equal(why, "expected 'VM SOURCE DEST'");
  assert_int_equal(p.n, 0);
  assert_int_equal(parse("a h1 h2 h3\n", &p, &line, &why), -1);
  assert_int_equal(line, 1);
  assert_int_equal(parse("\n\na h1 h1\n", &p, &line, &why), -1);
  assert_int_equal(line, 3);
  assert_int_equal(parse("a'b h1 h2\n", &p, &line, &why), -1);
  assert_int_equal(parse("a\x01 h1 h2\n", &p, &line, &why), -1);
  assert_int_equal(parse("#!vmkit-plan 2\na h1 h2\n", &p, &line, &why), -1);
  assert_int_equal(line, 1);
  /* A NUL byte inside the text is refused, with its line. */
  assert_int_equal(vm_plan_parse("a h1 h2\nb\0 h1 h2\n", 17, &p, &line, &why), -1);
  assert_int_equal(line, 2);
  /* A word longer than 1024 bytes. */
  char *big = malloc(2100);
  assert_non_null(big);
  if (!big) return;
  memset(big, 'x', 2000);
  strcpy(big + 2000, " h1 h2\n");
  assert_int_equal(parse(big, &p, &line, &why), -1);
  free(big);
}

/* Random bytes and random mutations of a good plan: never a crash, never a move
 * with an empty or unchecked word (run under AddressSanitizer). */
static void survives_random_input(void **state)
{
  srand(12345);
  static const char good[] = "web1 kvm1 kvm2\n# c\ndb kvm1 kvm3\n";
  for (int round = 0; round < 20000; round++) {
    char buf[256];
    size_t n = (size_t)(rand() % (int)sizeof buf);
    if (round % 2) {
      for (size_t i = 0; i < n; i++) buf[i] = (char)(rand() % 256);
    } else {
      n = sizeof good - 1;
      memcpy(buf, good, n);
      for (int k = rand() % 4; k >= 0; k--) buf[rand() % (int)n] = (char)(rand() % 256);
    }
    struct vm_plan p;
    int line;
    const char *why;
    if (vm_plan_parse(buf, n, &p, &line, &why) == 0) {
      for (size_t i = 0; i < p.n; i++) {
        assert_true(p.v[i].vm[0] && p.v[i].src[0] && p.v[i].dst[0]);
        assert_true(strcmp(p.v[i].src, p.v[i].dst) != 0);
        assert_true(p.v[i].line >= 1);
      }
      vm_plan_free(&p);
    } else {
      assert_non_null(why);
      assert_true(line >= 1);
    }
  }
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(parses_moves_comments_and_blanks),
    cmocka_unit_test(refuses_bad_lines_with_their_number),
    cmocka_unit_test(survives_random_input),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
