/* vmpatch's OSV feed (vmpatch/feed.c): records parsed and checked, a directory
 * feed loaded, a malformed record refusing the feed; and the ranges of an
 * affected entry (introduced 0 and fixed, last_affected, a versions list) as
 * vmpatch/scan.c evaluates them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vmpatch.h"

static int parse(const char *text, struct vmp_advisory *a, char *why)
{
  return vmp_osv_parse(text, strlen(text), a, why, 256);
}

static void record(void **state)
{
  struct vmp_advisory a;
  char why[256];
  assert_int_equal(parse("{\"id\":\"DSA-5532-1\",\"aliases\":[\"CVE-2023-5678\",\"CVE-2023-5363\"],"
                         "\"severity\":[{\"type\":\"CVSS_V3\",\"score\":\"CVSS:3.1/AV:N\"}],"
                         "\"affected\":[{\"package\":{\"ecosystem\":\"Debian:12\",\"name\":\"openssl\"},"
                         "\"ranges\":[{\"type\":\"ECOSYSTEM\",\"events\":[{\"introduced\":\"0\"},"
                         "{\"fixed\":\"3.0.11-1~deb12u3\"}]},{\"type\":\"GIT\",\"repo\":\"x\",\"events\":"
                         "[{\"introduced\":\"abc\"},{\"limit\":\"def\"}]}],"
                         "\"ecosystem_specific\":{\"urgency\":\"medium\"}},"
                         "{\"package\":{\"ecosystem\":\"PyPI\",\"name\":\"x\"},\"versions\":[\"a b\"]}]}",
                         &a, why),
                   0);
  assert_string_equal(a.id, "DSA-5532-1");
  assert_int_equal(a.aliases.n, 2);
  assert_string_equal(a.aliases.v[1], "CVE-2023-5363");
  /* PyPI is not read, its entry not kept; the GIT range neither. */
  assert_int_equal(a.naff, 1);
  assert_string_equal(a.aff[0].ecosystem, "Debian:12");
  assert_string_equal(a.aff[0].package, "openssl");
  assert_int_equal(a.aff[0].nranges, 1);
  assert_int_equal(a.aff[0].ranges[0].n, 2);
  assert_int_equal(a.aff[0].ranges[0].ev[1].kind, VMP_EV_FIXED);
  assert_int_equal(a.aff[0].severity, VMP_SEV_MEDIUM);
  vmp_advisory_free(&a);

  /* The record's severity when the entry has none; the highest stated. */
  assert_int_equal(parse("{\"id\":\"ALSA-1\",\"database_specific\":{\"severity\":\"Important\"},"
                         "\"severity\":[{\"type\":\"X\",\"score\":\"9.8\"}],"
                         "\"affected\":[{\"package\":{\"ecosystem\":\"AlmaLinux:9\",\"name\":\"openssl\"},"
                         "\"versions\":[\"1:3.0.7-24.el9\"]}]}",
                         &a, why),
                   0);
  assert_int_equal(a.aff[0].severity, VMP_SEV_CRITICAL);
  assert_int_equal(a.aff[0].versions.n, 1);
  vmp_advisory_free(&a);

  /* A withdrawn advisory affects nothing. */
  assert_int_equal(parse("{\"id\":\"W\",\"withdrawn\":\"2024-01-01T00:00:00Z\",\"affected\":[{\"package\":"
                         "{\"ecosystem\":\"Debian:12\",\"name\":\"x\"},\"versions\":[\"1.0\"]}]}",
                         &a, why),
                   0);
  assert_int_equal(a.naff, 0);
  vmp_advisory_free(&a);
}

static void refused(void **state)
{
  static const struct {
    const char *text, *why;
  } bad[] = {
    { "{\"id\":", "not JSON" },
    { "[1]", "not a JSON object" },
    { "{\"id\":\"A\"} x", "text after" },
    { "{\"aliases\":[]}", "has no 'id'" },
    { "{\"id\":\"\"}", "'id' is not a non-empty string" },
    { "{\"id\":7}", "'id' is not a non-empty string" },
    { "{\"id\":\"A\",\"affected\":[{\"versions\":[\"1\"]}]}", "affected[0] has no package" },
    { "{\"id\":\"A\",\"affected\":[{\"package\":{\"name\":\"x\"}}]}", "has no 'ecosystem'" },
    { "{\"id\":\"A\",\"affected\":{}}", "'affected' is not an array" },
    { "{\"id\":\"A\",\"affected\":[{\"package\":{\"ecosystem\":\"Debian:12\",\"name\":\"x\"},"
      "\"ranges\":[{\"type\":\"ECOSYSTEM\",\"events\":[{\"fixed\":\"not a version\"}]}]}]}",
      "not a Debian version" },
    { "{\"id\":\"A\",\"affected\":[{\"package\":{\"ecosystem\":\"Debian:12\",\"name\":\"x\"},"
      "\"ranges\":[{\"type\":\"ECOSYSTEM\",\"events\":[{\"broken\":\"1\"}]}]}]}",
      "not introduced, fixed" },
    { "{\"id\":\"A\",\"affected\":[{\"package\":{\"ecosystem\":\"Debian:12\",\"name\":\"x\"},"
      "\"ranges\":[{\"events\":[]}]}]}",
      "has no 'type'" },
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    struct vmp_advisory a;
    char why[256] = "";
    assert_int_equal(parse(bad[i].text, &a, why), -1);
    if (!strstr(why, bad[i].why)) fail_msg("record %zu: '%s' does not say '%s'", i, why, bad[i].why);
    assert_null(a.id);
  }
  /* A NUL inside the text. */
  struct vmp_advisory a;
  char why[256];
  assert_int_equal(vmp_osv_parse("{\"id\":\"A\"}\0", 12, &a, why, sizeof why), -1);
}

static void write_file(const char *dir, const char *name, const char *text)
{
  char *p = vm_strdup_printf("%s/%s", dir, name);
  assert_int_equal(vm_write_file_atomic(p, text, strlen(text), 0644), 0);
  free(p);
}

static void directory(void **state)
{
  char dir[] = "/tmp/patch-feed.XXXXXX";
  assert_non_null(mkdtemp(dir));
  write_file(dir, "DSA-1.json",
             "{\"id\":\"DSA-1\",\"affected\":[{\"package\":{\"ecosystem\":\"Debian:12\",\"name\":\"openssl\"},"
             "\"ranges\":[{\"type\":\"ECOSYSTEM\",\"events\":[{\"introduced\":\"0\"},{\"fixed\":\"3.0.11-1~deb12u3\"}]}]}]}");
  write_file(dir, "GHSA-1.json", "{\"id\":\"GHSA-1\",\"affected\":[{\"package\":{\"ecosystem\":\"npm\",\"name\":\"x\"}}]}");
  write_file(dir, "README", "not a record");
  struct vmp_feed f;
  assert_int_equal(vmp_feed_load(dir, &f), 0);
  /* GHSA-1 is checked but affects no ecosystem read: not kept. */
  assert_int_equal(f.n, 1);
  assert_string_equal(f.v[0].id, "DSA-1");
  vmp_feed_free(&f);
  /* One malformed record refuses the whole feed. */
  write_file(dir, "DSA-2.json", "{\"id\":\"DSA-2\",\"affected\":[{}]}");
  assert_int_equal(vmp_feed_load(dir, &f), VMP_EXIT_BADINPUT);
  assert_non_null(strstr(vm_last_error(), "DSA-2.json"));
  assert_int_equal(f.n, 0);
  assert_int_equal(vm_remove_tree(dir), 0);
  assert_int_equal(vmp_feed_load(dir, &f), VM_EXIT_NOTFOUND);
}

/* An entry of one advisory, from its JSON. */
static struct vmp_advisory entry(const char *affected_json)
{
  struct vmp_advisory a;
  char why[256];
  char *text = vm_strdup_printf("{\"id\":\"T\",\"affected\":[%s]}", affected_json);
  if (vmp_osv_parse(text, strlen(text), &a, why, sizeof why) < 0) fail_msg("%s", why);
  free(text);
  assert_int_equal(a.naff, 1);
  return a;
}

static void ranges(void **state)
{
  const char *fixed;
  struct vmp_advisory a = entry("{\"package\":{\"ecosystem\":\"Debian:12\",\"name\":\"openssl\"},\"ranges\":[{\"type\":"
                                "\"ECOSYSTEM\",\"events\":[{\"introduced\":\"0\"},{\"fixed\":\"3.0.11-1~deb12u3\"}]}]}");
  assert_true(vmp_affected_match(&a.aff[0], VMP_DEB, "3.0.11-1~deb12u2", &fixed));
  assert_string_equal(fixed, "3.0.11-1~deb12u3");
  assert_true(vmp_affected_match(&a.aff[0], VMP_DEB, "1:0.1", &fixed) == false);
  assert_false(vmp_affected_match(&a.aff[0], VMP_DEB, "3.0.11-1~deb12u3", &fixed));
  assert_false(vmp_affected_match(&a.aff[0], VMP_DEB, "3.0.11-1", &fixed));
  assert_true(vmp_affected_match(&a.aff[0], VMP_DEB, "0.9.8", &fixed));
  vmp_advisory_free(&a);

  /* introduced and last_affected, no fix; events out of order. */
  a = entry("{\"package\":{\"ecosystem\":\"Debian:12\",\"name\":\"x\"},\"ranges\":[{\"type\":\"ECOSYSTEM\","
            "\"events\":[{\"last_affected\":\"2.0-3\"},{\"introduced\":\"1.5-1\"}]}]}");
  assert_false(vmp_affected_match(&a.aff[0], VMP_DEB, "1.4-9", &fixed));
  assert_true(vmp_affected_match(&a.aff[0], VMP_DEB, "1.5-1", &fixed));
  assert_null(fixed);
  assert_true(vmp_affected_match(&a.aff[0], VMP_DEB, "2.0-3", &fixed));
  assert_false(vmp_affected_match(&a.aff[0], VMP_DEB, "2.0-3+b1", &fixed));
  vmp_advisory_free(&a);

  /* Two introduced/fixed pairs: a regression after a fix. */
  a = entry("{\"package\":{\"ecosystem\":\"Debian:12\",\"name\":\"x\"},\"ranges\":[{\"type\":\"ECOSYSTEM\","
            "\"events\":[{\"introduced\":\"0\"},{\"fixed\":\"1.2\"},{\"introduced\":\"2.0\"},{\"fixed\":\"2.3\"}]}]}");
  assert_true(vmp_affected_match(&a.aff[0], VMP_DEB, "1.1", &fixed));
  assert_string_equal(fixed, "1.2");
  assert_false(vmp_affected_match(&a.aff[0], VMP_DEB, "1.5", &fixed));
  assert_true(vmp_affected_match(&a.aff[0], VMP_DEB, "2.1", &fixed));
  assert_string_equal(fixed, "2.3");
  assert_false(vmp_affected_match(&a.aff[0], VMP_DEB, "2.3", &fixed));
  vmp_advisory_free(&a);

  /* A versions list only, matched by comparison, not by text (epoch 0 is no epoch). */
  a = entry("{\"package\":{\"ecosystem\":\"AlmaLinux:9\",\"name\":\"openssl\"},"
            "\"versions\":[\"1:3.0.7-24.el9\",\"1:3.0.7-25.el9\"]}");
  assert_true(vmp_affected_match(&a.aff[0], VMP_RPM, "1:3.0.7-24.el9", &fixed));
  assert_null(fixed);
  assert_false(vmp_affected_match(&a.aff[0], VMP_RPM, "1:3.0.7-26.el9", &fixed));
  assert_false(vmp_affected_match(&a.aff[0], VMP_RPM, "3.0.7-24.el9", &fixed));
  vmp_advisory_free(&a);
  a = entry("{\"package\":{\"ecosystem\":\"Debian:12\",\"name\":\"x\"},\"versions\":[\"0:1.0-1\"]}");
  assert_true(vmp_affected_match(&a.aff[0], VMP_DEB, "1.0-1", &fixed));
  vmp_advisory_free(&a);

  /* Both: a listed version, and the fix from the ranges. */
  a = entry("{\"package\":{\"ecosystem\":\"Debian:12\",\"name\":\"x\"},\"versions\":[\"0.5-1\"],\"ranges\":"
            "[{\"type\":\"ECOSYSTEM\",\"events\":[{\"introduced\":\"1.0\"},{\"fixed\":\"1.1\"}]}]}");
  assert_true(vmp_affected_match(&a.aff[0], VMP_DEB, "0.5-1", &fixed));
  assert_string_equal(fixed, "1.1");
  assert_true(vmp_affected_match(&a.aff[0], VMP_DEB, "1.0", &fixed));
  assert_false(vmp_affected_match(&a.aff[0], VMP_DEB, "0.6", &fixed));
  vmp_advisory_free(&a);
}

static void severities(void **state)
{
  assert_int_equal(vmp_sev_from_text("unimportant"), VMP_SEV_LOW);
  assert_int_equal(vmp_sev_from_text("Moderate"), VMP_SEV_MEDIUM);
  assert_int_equal(vmp_sev_from_text("Important"), VMP_SEV_HIGH);
  assert_int_equal(vmp_sev_from_text("CRITICAL"), VMP_SEV_CRITICAL);
  assert_int_equal(vmp_sev_from_text("7.5"), VMP_SEV_HIGH);
  assert_int_equal(vmp_sev_from_text("4.0"), VMP_SEV_MEDIUM);
  assert_int_equal(vmp_sev_from_text("not yet assigned"), VMP_SEV_UNKNOWN);
  assert_int_equal(vmp_sev_from_text("CVSS:3.1/AV:N/AC:L"), VMP_SEV_UNKNOWN);
  assert_int_equal(vmp_sev_from_text("11"), VMP_SEV_UNKNOWN);
  assert_int_equal(vmp_sev_parse("high"), VMP_SEV_HIGH);
  assert_int_equal(vmp_sev_parse("urgent"), -1);
}

int main(void)
{
  vm_init("patch-feed");
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(record),   cmocka_unit_test(refused),    cmocka_unit_test(directory),
    cmocka_unit_test(ranges),   cmocka_unit_test(severities),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
