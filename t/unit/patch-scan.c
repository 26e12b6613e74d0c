/* vmpatch's scan (vmpatch/scan.c) and inventory (vmpatch/inventory.c): Debian's
 * source packages mapped to the binaries installed, the release of the target
 * matched, the severity and fix filters, the reboot flag; the inventory read,
 * written and read back, and refused when malformed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "vmpatch.h"

static const char *const inventory_text =
  "{\"format\":\"vmpatch-inventory\",\"version\":1,\"targets\":["
  "{\"name\":\"vm1\",\"kind\":\"vm\",\"os\":{\"id\":\"debian\",\"version_id\":\"12\",\"package_format\":\"deb\"},"
  "\"packages\":["
  "{\"name\":\"libssl3\",\"version\":\"3.0.11-1~deb12u2\",\"arch\":\"amd64\",\"source\":\"openssl\","
  "\"source_version\":\"3.0.11-1~deb12u2\"},"
  "{\"name\":\"openssl\",\"version\":\"3.0.11-1~deb12u2\",\"arch\":\"amd64\"},"
  "{\"name\":\"linux-image-6.1.0-18-amd64\",\"version\":\"6.1.76-1\",\"source\":\"linux-signed-amd64\","
  "\"source_version\":\"6.1.76+1\"},"
  "{\"name\":\"bash\",\"version\":\"5.2.15-2+b2\",\"source\":\"bash\",\"source_version\":\"5.2.15-2\"}]},"
  "{\"name\":\"old\",\"kind\":\"template\",\"os\":{\"id\":\"debian\",\"version_id\":\"11\",\"package_format\":\"deb\"},"
  "\"packages\":[{\"name\":\"libssl1.1\",\"version\":\"1.1.1w-0+deb11u1\",\"source\":\"openssl\"}]},"
  "{\"name\":\"alma\",\"kind\":\"host\",\"os\":{\"id\":\"almalinux\",\"version_id\":\"9.3\",\"package_format\":\"rpm\"},"
  "\"packages\":[{\"name\":\"openssl-libs\",\"version\":\"1:3.0.7-24.el9\",\"arch\":\"x86_64\",\"source\":\"openssl\","
  "\"source_version\":\"1:3.0.7-24.el9\"},"
  "{\"name\":\"glibc\",\"version\":\"2.34-83.el9_3.7\",\"source\":\"glibc\"}]}]}";

static const char *const records[] = {
  /* openssl in bookworm: fixed in deb12u3, high. */
  "{\"id\":\"DSA-5532-1\",\"aliases\":[\"CVE-2023-5678\"],\"affected\":[{\"package\":{\"ecosystem\":\"Debian:12\","
  "\"name\":\"openssl\"},\"ranges\":[{\"type\":\"ECOSYSTEM\",\"events\":[{\"introduced\":\"0\"},{\"fixed\":"
  "\"3.0.11-1~deb12u3\"}]}],\"ecosystem_specific\":{\"urgency\":\"high\"}},"
  /* The same advisory for bullseye: its own release only. */
  "{\"package\":{\"ecosystem\":\"Debian:11\",\"name\":\"openssl\"},\"ranges\":[{\"type\":\"ECOSYSTEM\",\"events\":"
  "[{\"introduced\":\"0\"},{\"fixed\":\"1.1.1w-0+deb11u2\"}]}],\"ecosystem_specific\":{\"urgency\":\"medium\"}}]}",
  /* The kernel, as Debian's records name it (linux, not the signed build the
   * binaries come from): no fix yet, severity unknown; and one fixed in
   * 6.1.76-1, which the signed build 6.1.76+1 has. */
  "{\"id\":\"DEBIAN-CVE-2024-0001\",\"affected\":[{\"package\":{\"ecosystem\":\"Debian:12\",\"name\":"
  "\"linux\"},\"ranges\":[{\"type\":\"ECOSYSTEM\",\"events\":[{\"introduced\":\"0\"}]}]}]}",
  "{\"id\":\"DEBIAN-CVE-2024-0002\",\"affected\":[{\"package\":{\"ecosystem\":\"Debian:12\",\"name\":"
  "\"linux\"},\"ranges\":[{\"type\":\"ECOSYSTEM\",\"events\":[{\"introduced\":\"0\"},{\"fixed\":\"6.1.76-1\"}]}]},"
  "{\"package\":{\"ecosystem\":\"Debian:12\",\"name\":\"linux-signed-amd64\"},\"ranges\":[{\"type\":"
  "\"ECOSYSTEM\",\"events\":[{\"introduced\":\"0\"}]}]}]}",
  /* bash: fixed below what is installed (the source version, not the binary's +b2). */
  "{\"id\":\"DSA-9-1\",\"affected\":[{\"package\":{\"ecosystem\":\"Debian:12\",\"name\":\"bash\"},\"ranges\":"
  "[{\"type\":\"ECOSYSTEM\",\"events\":[{\"introduced\":\"0\"},{\"fixed\":\"5.2.15-2+b1\"}]}],"
  "\"ecosystem_specific\":{\"urgency\":\"low\"}}]}",
  /* AlmaLinux 9: openssl by source name and by binary name, glibc by its
   * versions list; Rocky is another distribution. */
  "{\"id\":\"ALSA-2024:1\",\"aliases\":[\"CVE-2024-1\",\"CVE-2024-2\"],\"database_specific\":{\"severity\":"
  "\"Moderate\"},\"affected\":[{\"package\":{\"ecosystem\":\"AlmaLinux:9\",\"name\":\"openssl\"},\"ranges\":"
  "[{\"type\":\"ECOSYSTEM\",\"events\":[{\"introduced\":\"0\"},{\"fixed\":\"1:3.0.7-25.el9_3\"}]}]},"
  "{\"package\":{\"ecosystem\":\"AlmaLinux:9\",\"name\":\"openssl-libs\"},\"ranges\":"
  "[{\"type\":\"ECOSYSTEM\",\"events\":[{\"introduced\":\"0\"},{\"fixed\":\"1:3.0.7-25.el9_3\"}]}]},"
  "{\"package\":{\"ecosystem\":\"AlmaLinux:9\",\"name\":\"glibc\"},\"versions\":[\"2.34-83.el9_3.7\"]},"
  "{\"package\":{\"ecosystem\":\"Rocky Linux:9\",\"name\":\"bash\"},\"versions\":[\"5.1.8-6.el9\"]}]}",
};

struct fixture {
  struct vmp_inventory inv;
  struct vmp_feed feed;
};

static int setup(void **state)
{
  struct fixture *f = calloc(1, sizeof *f);
  char why[256];
  if (vmp_inventory_parse(inventory_text, strlen(inventory_text), &f->inv, why, sizeof why) < 0) fail_msg("%s", why);
  for (size_t i = 0; i < sizeof records / sizeof records[0]; i++) {
    if (f->feed.n == f->feed.cap) {
      f->feed.cap = f->feed.cap ? 2 * f->feed.cap : 8;
      f->feed.v = realloc(f->feed.v, f->feed.cap * sizeof *f->feed.v);
    }
    if (vmp_osv_parse(records[i], strlen(records[i]), &f->feed.v[f->feed.n++], why, sizeof why) < 0)
      fail_msg("record %zu: %s", i, why);
  }
  *state = f;
  return 0;
}

static int teardown(void **state)
{
  struct fixture *f = *state;
  vmp_inventory_free(&f->inv);
  vmp_feed_free(&f->feed);
  free(f);
  return 0;
}

static const char *field(json_object *rows, size_t i, const char *key)
{
  json_object *v;
  assert_true(json_object_object_get_ex(json_object_array_get_idx(rows, i), key, &v));
  return v ? json_object_get_string(v) : NULL;
}

static bool flag(json_object *rows, size_t i, const char *key)
{
  json_object *v;
  assert_true(json_object_object_get_ex(json_object_array_get_idx(rows, i), key, &v));
  return json_object_get_boolean(v);
}

static void source_mapping(void **state)
{
  struct fixture *f = *state;
  struct vmp_scan_opts o = { VMP_SEV_UNKNOWN, false };
  json_object *rows = json_object_new_array();
  /* vm1: libssl3 and openssl from the openssl source, the kernel, and bash. */
  size_t n = vmp_scan_target(&f->feed, &f->inv.targets[0], &o, rows, NULL);
  assert_int_equal(n, 4);
  assert_string_equal(field(rows, 0, "package"), "libssl3");
  assert_string_equal(field(rows, 0, "source"), "openssl");
  assert_string_equal(field(rows, 0, "installed"), "3.0.11-1~deb12u2");
  assert_string_equal(field(rows, 0, "fixed"), "3.0.11-1~deb12u3");
  assert_string_equal(field(rows, 0, "id"), "DSA-5532-1");
  assert_string_equal(field(rows, 0, "severity"), "high");
  assert_false(flag(rows, 0, "reboot"));
  /* A package without a source field is its own source. */
  assert_string_equal(field(rows, 1, "package"), "openssl");
  /* The signed kernel's binaries under linux 6.1.76-1: DEBIAN-CVE-2024-0002 is
   * fixed there, and its entry for linux-signed-amd64 (no such record in
   * Debian's feed) is not read. */
  assert_string_equal(field(rows, 2, "package"), "linux-image-6.1.0-18-amd64");
  assert_string_equal(field(rows, 2, "id"), "DEBIAN-CVE-2024-0001");
  assert_string_equal(field(rows, 2, "source"), "linux");
  assert_string_equal(field(rows, 2, "source_version"), "6.1.76-1");
  assert_null(field(rows, 2, "fixed"));
  assert_string_equal(field(rows, 2, "severity"), "unknown");
  assert_true(flag(rows, 2, "reboot"));
  /* bash: the source version 5.2.15-2 is compared, older than the fix
   * 5.2.15-2+b1, though the binary's 5.2.15-2+b2 is newer. */
  assert_string_equal(field(rows, 3, "package"), "bash");
  assert_string_equal(field(rows, 3, "installed"), "5.2.15-2+b2");
  assert_string_equal(field(rows, 3, "source_version"), "5.2.15-2");
  json_object_put(rows);

  /* The bullseye template: the Debian:11 entry (medium), from the source version
   * that defaults to the binary's. */
  rows = json_object_new_array();
  assert_int_equal(vmp_scan_target(&f->feed, &f->inv.targets[1], &o, rows, NULL), 1);
  assert_string_equal(field(rows, 0, "fixed"), "1.1.1w-0+deb11u2");
  assert_string_equal(field(rows, 0, "severity"), "medium");
  assert_string_equal(field(rows, 0, "ecosystem"), "Debian:11");
  json_object_put(rows);

  /* AlmaLinux 9.3: openssl by source name (epoch compared), glibc by its version
   * list (reboot); Rocky's bash is not for it. */
  rows = json_object_new_array();
  assert_int_equal(vmp_scan_target(&f->feed, &f->inv.targets[2], &o, rows, NULL), 2);
  /* Its advisory names both the source and the binary: one row. */
  assert_string_equal(field(rows, 0, "package"), "openssl-libs");
  assert_string_equal(field(rows, 0, "fixed"), "1:3.0.7-25.el9_3");
  assert_string_equal(field(rows, 0, "severity"), "medium");
  assert_false(flag(rows, 0, "reboot"));
  assert_string_equal(field(rows, 1, "package"), "glibc");
  assert_true(flag(rows, 1, "reboot"));
  assert_int_equal(json_object_array_length(json_object_object_get(json_object_array_get_idx(rows, 1), "aliases")), 2);
  json_object_put(rows);
}

/* A target whose distribution and release no record of the feed names is not
 * covered: no row does not mean clean. */
static void coverage(void **state)
{
  struct fixture *f = *state;
  struct vmp_scan_opts o = { VMP_SEV_UNKNOWN, false };
  json_object *rows = json_object_new_array();
  bool covered = false;
  vmp_scan_target(&f->feed, &f->inv.targets[0], &o, rows, &covered);
  assert_true(covered);
  struct vmp_target t = { .name = "trixie", .os_id = "debian", .os_version = "13", .format = VMP_DEB };
  assert_int_equal(vmp_scan_target(&f->feed, &t, &o, rows, &covered), 0);
  assert_false(covered);
  json_object_put(rows);
}

static void filters(void **state)
{
  struct fixture *f = *state;
  json_object *rows = json_object_new_array();
  struct vmp_scan_opts o = { VMP_SEV_HIGH, false };
  assert_int_equal(vmp_scan_target(&f->feed, &f->inv.targets[0], &o, rows, NULL), 2);
  assert_string_equal(field(rows, 1, "package"), "openssl");
  json_object_put(rows);
  /* low and up: not the kernel's unknown. */
  rows = json_object_new_array();
  o = (struct vmp_scan_opts){ VMP_SEV_LOW, false };
  assert_int_equal(vmp_scan_target(&f->feed, &f->inv.targets[0], &o, rows, NULL), 3);
  json_object_put(rows);
  /* Fixed only: not the kernel. */
  rows = json_object_new_array();
  o = (struct vmp_scan_opts){ VMP_SEV_UNKNOWN, true };
  assert_int_equal(vmp_scan_target(&f->feed, &f->inv.targets[0], &o, rows, NULL), 3);
  for (size_t i = 0; i < 3; i++) assert_non_null(field(rows, i, "fixed"));
  json_object_put(rows);
  rows = json_object_new_array();
  o = (struct vmp_scan_opts){ VMP_SEV_CRITICAL, false };
  assert_int_equal(vmp_scan_target(&f->feed, &f->inv.targets[0], &o, rows, NULL), 0);
  json_object_put(rows);
}

static void reboot(void **state)
{
  assert_true(vmp_needs_reboot("linux"));
  assert_true(vmp_needs_reboot("linux-signed-amd64"));
  assert_true(vmp_needs_reboot("glibc"));
  assert_true(vmp_needs_reboot("systemd"));
  assert_true(vmp_needs_reboot("dbus"));
  assert_true(vmp_needs_reboot("kernel"));
  assert_false(vmp_needs_reboot("openssl"));
  assert_false(vmp_needs_reboot("linux-base"));
  assert_false(vmp_needs_reboot("linuxdoc-tools"));
}

static void ecosystems(void **state)
{
  struct vmp_target t = { .os_id = "almalinux", .os_version = "9.3", .format = VMP_RPM };
  assert_true(vmp_ecosystem_applies("AlmaLinux:9", &t));
  assert_false(vmp_ecosystem_applies("AlmaLinux:8", &t));
  assert_false(vmp_ecosystem_applies("Debian:9", &t));
  t = (struct vmp_target){ .os_id = "rhel", .os_version = "9.2", .format = VMP_RPM };
  assert_true(vmp_ecosystem_applies("Red Hat:enterprise_linux:9::appstream", &t));
  assert_false(vmp_ecosystem_applies("Red Hat:enterprise_linux:8::appstream", &t));
  t = (struct vmp_target){ .os_id = "opensuse-leap", .os_version = "15.5", .format = VMP_RPM };
  assert_true(vmp_ecosystem_applies("openSUSE:Leap 15.5", &t));
  assert_false(vmp_ecosystem_applies("openSUSE:Leap 15.4", &t));
  /* SLES's VERSION_ID 15.5 is SUSE's "15 SP5"; 15 is 15 GA. */
  t = (struct vmp_target){ .os_id = "sles", .os_version = "15.5", .format = VMP_RPM };
  assert_true(vmp_ecosystem_applies("SUSE:Linux Enterprise Server 15 SP5", &t));
  assert_true(vmp_ecosystem_applies("SUSE:Linux Enterprise Module for Basesystem 15 SP5", &t));
  assert_false(vmp_ecosystem_applies("SUSE:Linux Enterprise Server 15 SP4", &t));
  assert_false(vmp_ecosystem_applies("SUSE:Linux Enterprise Server 15", &t));
  t = (struct vmp_target){ .os_id = "sles", .os_version = "15", .format = VMP_RPM };
  assert_true(vmp_ecosystem_applies("SUSE:Linux Enterprise Server 15", &t));
  assert_false(vmp_ecosystem_applies("SUSE:Linux Enterprise Server 15 SP5", &t));
  t = (struct vmp_target){ .os_id = "debian", .os_version = "12", .format = VMP_DEB };
  assert_true(vmp_ecosystem_applies("Debian:12", &t));
  assert_true(vmp_ecosystem_applies("Debian", &t));
  assert_false(vmp_ecosystem_applies("Debian:11", &t));
  /* A Debian record never applies to an RPM target, nor to Ubuntu. */
  t = (struct vmp_target){ .os_id = "ubuntu", .os_version = "12", .format = VMP_DEB };
  assert_false(vmp_ecosystem_applies("Debian:12", &t));
}

static void inventory_round_trip(void **state)
{
  struct fixture *f = *state;
  char *text = vmp_inventory_write(&f->inv);
  struct vmp_inventory back;
  char why[256];
  assert_int_equal(vmp_inventory_parse(text, strlen(text), &back, why, sizeof why), 0);
  assert_int_equal(back.n, 3);
  assert_string_equal(back.targets[1].pkgs[0].source, "openssl");
  assert_string_equal(back.targets[1].pkgs[0].source_version, "1.1.1w-0+deb11u1");
  assert_int_equal(back.targets[2].format, VMP_RPM);
  char *again = vmp_inventory_write(&back);
  assert_string_equal(text, again);
  free(text);
  free(again);
  vmp_inventory_free(&back);
}

static void inventory_refused(void **state)
{
#define HEAD "{\"format\":\"vmpatch-inventory\",\"version\":1,\"targets\":["
#define OS "\"os\":{\"id\":\"debian\",\"version_id\":\"12\",\"package_format\":\"deb\"}"
  static const struct {
    const char *text, *why;
  } bad[] = {
    { "{", "not JSON" },
    { "{\"format\":\"x\",\"version\":1,\"targets\":[]}", "format is not" },
    { "{\"format\":\"vmpatch-inventory\",\"version\":2,\"targets\":[]}", "version 2 is not supported" },
    { "{\"format\":\"vmpatch-inventory\",\"version\":1}", "'targets' is missing" },
    { HEAD "]", "not JSON" },
    { HEAD "{\"name\":\"a\",\"kind\":\"vm\"," OS ",\"packages\":[],\"extra\":1}]}", "unknown member 'extra'" },
    { HEAD "{\"name\":\"a\",\"kind\":\"pc\"," OS ",\"packages\":[]}]}", "kind 'pc'" },
    { HEAD "{\"name\":\"a\",\"kind\":\"vm\",\"os\":{\"id\":\"debian\",\"package_format\":\"apk\"},\"packages\":[]}]}",
      "package_format is not deb or rpm" },
    { HEAD "{\"name\":\"a\",\"kind\":\"vm\"," OS ",\"packages\":[{\"name\":\"x\"}]}]}", "has no 'version'" },
    { HEAD "{\"name\":\"a\",\"kind\":\"vm\"," OS ",\"packages\":[{\"name\":\"x\",\"version\":\"1 0\"}]}]}",
      "not a Debian version" },
    { HEAD "{\"name\":\"a\",\"kind\":\"vm\"," OS ",\"packages\":[{\"name\":\"x\",\"version\":1}]}]}",
      "'version' is not a string" },
    { HEAD "{\"name\":\"a\",\"kind\":\"vm\"," OS ",\"packages\":[]},{\"name\":\"a\",\"kind\":\"vm\"," OS
           ",\"packages\":[]}]}",
      "listed twice" },
    { HEAD "{\"name\":\"a\\n\",\"kind\":\"vm\"," OS ",\"packages\":[]}]}", "control character" },
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    struct vmp_inventory inv;
    char why[256] = "";
    assert_int_equal(vmp_inventory_parse(bad[i].text, strlen(bad[i].text), &inv, why, sizeof why), -1);
    if (!strstr(why, bad[i].why)) fail_msg("inventory %zu: '%s' does not say '%s'", i, why, bad[i].why);
    assert_int_equal(inv.n, 0);
  }
}

int main(void)
{
  vm_init("patch-scan");
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown(source_mapping, setup, teardown),
    cmocka_unit_test_setup_teardown(filters, setup, teardown),
    cmocka_unit_test_setup_teardown(coverage, setup, teardown),
    cmocka_unit_test(reboot),
    cmocka_unit_test(ecosystems),
    cmocka_unit_test_setup_teardown(inventory_round_trip, setup, teardown),
    cmocka_unit_test(inventory_refused),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
