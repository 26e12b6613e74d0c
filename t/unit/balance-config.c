/* vmbalance's config file (man/vmbalance.conf.5): settings, rules, and the
 * errors that name their line. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "../../vmbalance/config.h"

static int parse(const char *text, struct bal_config *c, struct bal_error *e)
{
  return bal_config_parse(text, strlen(text), c, e);
}

static void defaults(void **state)
{
  struct bal_config c;
  struct bal_error e;
  assert_int_equal(parse("# nothing\n\n", &c, &e), 0);
  assert_int_equal(c.policy, BAL_BALANCE);
  assert_int_equal(c.level, 3);
  assert_int_equal(c.headroom, 10);
  assert_int_equal(c.threshold_milli, 1000);
  assert_int_equal(c.bandwidth, 1000);
  for (int r = 0; r < BAL_NRES; r++) assert_int_equal(c.weight_milli[r], 1000);
  assert_int_equal(c.n, 0);
  bal_config_free(&c);
}

static void full_example(void **state)
{
  const char *text = "policy consolidate\r\n"
                     "level 5\n"
                     "weight disk 0.5\n"
                     "weight network 12.125   # comment\n"
                     "headroom 15%\n"
                     "threshold 0\n"
                     "bandwidth 250\n"
                     "affinity app1 cache1\n"
                     "anti-affinity\tdb1 db2 db3\n"
                     "pin licensed1 kvm1 kvm2\n"
                     "exclude build1 kvm3\n"
                     "maintenance kvm4 kvm5\n"
                     "priority db1 90\n"
                     "ha db1 db2\n"
                     "fence kvm1 fence_ipmilan ip=10.0.9.1 username=admin password_script=/etc/p lanplus=1\n"
                     "fence kvm2 /usr/local/sbin/fence_test\n";
  struct bal_config c;
  struct bal_error e;
  assert_int_equal(parse(text, &c, &e), 0);
  assert_int_equal(c.policy, BAL_CONSOLIDATE);
  assert_int_equal(c.level, 5);
  assert_int_equal(c.weight_milli[BAL_CPU], 1000);
  assert_int_equal(c.weight_milli[BAL_DISK], 500);
  assert_int_equal(c.weight_milli[BAL_NET], 12125);
  assert_int_equal(c.headroom, 15);
  assert_int_equal(c.threshold_milli, 0);
  assert_int_equal(c.bandwidth, 250);
  assert_int_equal(c.n, 9);
  assert_int_equal(c.v[1].kind, BAL_ANTI_AFFINITY);
  assert_int_equal(c.v[1].n, 3);
  assert_int_equal(c.v[1].line, 9);
  assert_string_equal(c.v[2].w[0], "licensed1");
  assert_string_equal(c.v[2].w[2], "kvm2");
  assert_int_equal(c.v[5].kind, BAL_PRIORITY);
  assert_int_equal(c.v[5].value, 90);
  assert_int_equal(c.v[5].n, 1);
  assert_int_equal(c.v[7].kind, BAL_FENCE);
  assert_int_equal(c.v[7].n, 6);
  assert_string_equal(c.v[7].w[1], "fence_ipmilan");
  assert_string_equal(c.v[7].w[3], "username=admin");

  /* The canonical text parses back to itself. */
  char *t1 = bal_config_encode(&c);
  struct bal_config back;
  assert_int_equal(parse(t1, &back, &e), 0);
  char *t2 = bal_config_encode(&back);
  assert_string_equal(t1, t2);
  assert_non_null(strstr(t1, "weight network 12.125\n"));
  assert_non_null(strstr(t1, "headroom 15%\n"));
  free(t1);
  free(t2);
  bal_config_free(&back);
  bal_config_free(&c);
}

/* Each bad text, the line its error names, and a piece of the message. */
static const struct {
  const char *text;
  int line;
  const char *msg;
} bad[] = {
  { "level 3\nspeed 5\n", 2, "unknown keyword 'speed'" },
  { "level 0\n", 1, "level '0' is not from 1 to 5" },
  { "level 6\n", 1, "not from 1 to 5" },
  { "level 3\n\nlevel 4\n", 3, "level is set twice (first on line 1)" },
  { "level\n", 1, "expects one value" },
  { "policy spread\n", 1, "unknown policy" },
  { "weight gpu 1\n", 1, "unknown resource 'gpu'" },
  { "weight cpu 1.2345\n", 1, "not a number from 0 to 100" },
  { "weight cpu 101\n", 1, "not a number" },
  { "weight cpu -1\n", 1, "not a number" },
  { "weight cpu 1.\n", 1, "not a number" },
  { "weight cpu .5\n", 1, "not a number" },
  { "weight cpu 1\nweight cpu 2\n", 2, "weight cpu is set twice (first on line 1)" },
  { "weight cpu 0\nweight memory 0\nweight disk 0\nweight network 0\n", 4, "every weight is 0" },
  { "headroom 95%\n", 1, "percentage from 0 to 90" },
  { "headroom 10%%\n", 1, "percentage" },
  { "threshold nan\n", 1, "threshold 'nan'" },
  { "bandwidth 0\n", 1, "bandwidth '0'" },
  { "affinity web1\n", 1, "two VMs or more" },
  { "anti-affinity a b a\n", 1, "'a' is named twice" },
  { "pin web1\n", 1, "a VM and one host or more" },
  { "pin web1 h1\n# x\npin web1 h2\n", 3, "'web1' is pinned twice (first on line 1)" },
  { "pin web1 h1 h2\nexclude web1 h3 h2\n", 2, "'web1' is pinned to 'h2' and excluded from it (line 1)" },
  { "exclude web1 h2\npin web1 h2\n", 2, "pinned to 'h2' and excluded from it (line 1)" },
  { "exclude web1 h2 h2\n", 1, "'h2' is named twice" },
  { "maintenance h1\nmaintenance h2 h1\n", 2, "'h1' is in maintenance twice (first on line 1)" },
  { "priority web1\n", 1, "a VM and a number" },
  { "priority web1 101\n", 1, "not a number from 0 to 100" },
  { "priority web1 5\npriority web1 6\n", 2, "has a priority twice" },
  { "ha a b\nha c a\n", 2, "'a' is marked ha twice (first on line 1)" },
  { "fence h1\n", 1, "a host and a fence agent" },
  { "fence h1 ipmitool\n", 1, "neither a fence_ name nor an absolute path" },
  { "fence h1 fence_x/y\n", 1, "neither" },
  { "fence h1 fence_ipmilan ip\n", 1, "is not KEY=VALUE" },
  { "fence h1 fence_ipmilan IP=1\n", 1, "lowercase" },
  { "fence h1 fence_ipmilan action=reboot\n", 1, "the action, which is vmbalance's" },
  { "fence h1 fence_ipmilan ip=\n", 1, "empty value" },
  { "fence h1 fence_ipmilan ip='a'\n", 1, "quote" },
  { "fence h1 fence_a\nfence h1 fence_b\n", 2, "has a fence agent twice" },
  { "pin we\"b h1\n", 1, "is not a name" },
  { "affinity a b\naffinity b c\nanti-affinity x c y a\n", 3, "'c' and 'a' are kept apart here and together" },
  { "anti-affinity a b\naffinity a b\n", 1, "'a' and 'b' are kept apart" },
  { "level 3\nlevel\0 4\n", 2, "a NUL byte" },
};

static void refuses_with_line(void **state)
{
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    struct bal_config c;
    struct bal_error e;
    size_t len = strlen(bad[i].text);
    if (strstr(bad[i].msg, "NUL")) len = 17;
    int rc = bal_config_parse(bad[i].text, len, &c, &e);
    if (rc != -1 || e.line != bad[i].line || !strstr(e.msg, bad[i].msg))
      fail_msg("case %zu: rc %d, line %d, '%s'; expected line %d, '%s'", i, rc, e.line, e.msg, bad[i].line, bad[i].msg);
    assert_int_equal(c.n, 0);
  }
}

static void limits(void **state)
{
  struct bal_config c;
  struct bal_error e;
  static char big[BAL_LINE_MAX + 16];
  memcpy(big, "ha ", 3);
  memset(big + 3, 'a', BAL_LINE_MAX);
  strcpy(big + 3 + BAL_LINE_MAX, "\n");
  assert_int_equal(parse(big, &c, &e), -1);
  assert_int_equal(e.line, 1);
  assert_non_null(strstr(e.msg, "longer than 4096"));
  /* A name of 256 bytes. */
  memset(big + 3, 'a', 256);
  strcpy(big + 3 + 256, "\n");
  assert_int_equal(parse(big, &c, &e), -1);
  assert_non_null(strstr(e.msg, "is not a name"));
  char *huge = malloc(BAL_CONF_MAX + 2);
  memset(huge, '\n', BAL_CONF_MAX + 1);
  assert_int_equal(bal_config_parse(huge, BAL_CONF_MAX + 1, &c, &e), -1);
  assert_int_equal(e.line, 0);
  free(huge);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(defaults),
    cmocka_unit_test(full_example),
    cmocka_unit_test(refuses_with_line),
    cmocka_unit_test(limits),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
