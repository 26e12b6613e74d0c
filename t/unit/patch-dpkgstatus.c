/* vmpatch's readers of package databases as text (vmpatch/pkgdb.c): dpkg's
 * status file as a guest disk holds it (installed packages only, Source with and
 * without a version, continuation lines, a malformed file refused), the output
 * of dpkg-query and rpm -qa that the host's inventory runs, and os-release. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "vmpatch.h"

static int status(const char *text, struct vmp_target *t, char *why)
{
  memset(t, 0, sizeof *t);
  return vmp_dpkg_status_parse(text, strlen(text), t, why, 256);
}

static void target_free(struct vmp_target *t)
{
  struct vmp_inventory inv = { t, 1 };
  struct vmp_target *copy = malloc(sizeof *copy);
  *copy = *t;
  inv.targets = copy;
  vmp_inventory_free(&inv);
  memset(t, 0, sizeof *t);
}

#define PKG(t, i, n, v, a, s, sv)                                                                                      \
  do {                                                                                                                 \
    assert_string_equal((t).pkgs[i].name, n);                                                                          \
    assert_string_equal((t).pkgs[i].version, v);                                                                       \
    if (a) assert_string_equal((t).pkgs[i].arch, (const char *)(a));                                                    \
    else assert_null((t).pkgs[i].arch);                                                                                \
    assert_string_equal((t).pkgs[i].source, s);                                                                        \
    assert_string_equal((t).pkgs[i].source_version, sv);                                                               \
  } while (0)

/* A status file as Debian 12 writes it: multi-line Description and Conffiles,
 * a binNMU (Source with its version), a package that is its own source, a held
 * one, a package marked for removal but still there, packages half-installed or
 * unpacked (their files are on disk) and one that left only its conffiles. */
static const char bookworm[] =
  "Package: libc6\n"
  "Status: install ok installed\n"
  "Priority: optional\n"
  "Section: libs\n"
  "Installed-Size: 12986\n"
  "Maintainer: GNU Libc Maintainers <debian-glibc@lists.debian.org>\n"
  "Architecture: amd64\n"
  "Multi-Arch: same\n"
  "Source: glibc\n"
  "Version: 2.36-9+deb12u4\n"
  "Depends: libgcc-s1\n"
  "Conffiles:\n"
  " /etc/ld.so.conf.d/x86_64-linux-gnu.conf d4e7a7b88a71b5ffd9e2644e71a0cfab\n"
  "Description: GNU C Library: Shared libraries\n"
  " Contains the standard libraries that are used by nearly all programs on\n"
  " the system.\n"
  " .\n"
  " This package includes shared versions of the standard C library.\n"
  "Homepage: https://www.gnu.org/software/libc/libc.html\n"
  "\n"
  "Package: libssl3\n"
  "Status: install ok installed\n"
  "Architecture: amd64\n"
  "Source: openssl (3.0.11-1~deb12u2)\n"
  "Version: 3.0.11-1~deb12u2+b1\n"
  "Description: Secure Sockets Layer toolkit - shared libraries\n"
  "\n"
  "Package: bash\n"
  "Essential: yes\n"
  "Status: hold ok installed\n"
  "Architecture: amd64\n"
  "Version: 5.2.15-2+b2\n"
  "\n"
  "Package: oldpkg\n"
  "Status: deinstall ok config-files\n"
  "Architecture: amd64\n"
  "Version: 1.0-1\n"
  "\n"
  "Package: broken\n"
  "Status: install reinstreq half-installed\n"
  "Architecture: amd64\n"
  "Version: 2.0-1\n"
  "\n"
  "Package: pending\n"
  "Status: install ok unpacked\n"
  "Architecture: all\n"
  "Version: 1:0.5-3\n"
  "\n"
  "Package: leaving\n"
  "Status: deinstall ok installed\n"
  "Architecture: amd64\n"
  "Version: 3-1\n"
  "\n"
  "Package: trig\n"
  "Status: install ok triggers-pending\n"
  "Architecture: amd64\n"
  "Version: 4-1\n"
  "\n"
  "Package: gone\n"
  "Status: purge ok not-installed\n"
  "Architecture: amd64\n"
  "\n"
  "Package: tzdata\n"
  "Status: install ok installed\n"
  "Architecture: all\n"
  "Version: 2024a-0+deb12u1\n";

static void installed_only(void **state)
{
  struct vmp_target t;
  char why[256] = "";
  assert_int_equal(status(bookworm, &t, why), 0);
  assert_int_equal(t.npkgs, 8);
  /* No version in Source: the source's version is the package's. */
  PKG(t, 0, "libc6", "2.36-9+deb12u4", "amd64", "glibc", "2.36-9+deb12u4");
  /* A binNMU: the source's version is the one in parentheses. */
  PKG(t, 1, "libssl3", "3.0.11-1~deb12u2+b1", "amd64", "openssl", "3.0.11-1~deb12u2");
  /* No Source: the package is its own source; held is installed too. */
  PKG(t, 2, "bash", "5.2.15-2+b2", "amd64", "bash", "5.2.15-2+b2");
  /* Files on disk, whatever dpkg is still to do with them (config-files is not). */
  PKG(t, 3, "broken", "2.0-1", "amd64", "broken", "2.0-1");
  PKG(t, 4, "pending", "1:0.5-3", "all", "pending", "1:0.5-3");
  PKG(t, 5, "leaving", "3-1", "amd64", "leaving", "3-1");
  PKG(t, 6, "trig", "4-1", "amd64", "trig", "4-1");
  /* The last paragraph, with no blank line after it. */
  PKG(t, 7, "tzdata", "2024a-0+deb12u1", "all", "tzdata", "2024a-0+deb12u1");
  target_free(&t);
}

static void layout(void **state)
{
  struct vmp_target t;
  char why[256] = "";
  /* CR LF line ends, several blank lines (some of spaces), fields in any case
   * and order, an epoch, spaces around a Source's version. */
  assert_int_equal(status("\n\nversion: 1:2.0-1\r\nSTATUS: install ok installed\r\npackage: foo\r\n"
                          "Source: foo-src  ( 1:2.0-1 )\r\n   \r\n\t\n\nPackage: bar\nStatus: install ok installed\n"
                          "Version: 3\nDescription: one\n two\n\tthree\n\n\n",
                          &t, why),
                   0);
  assert_int_equal(t.npkgs, 2);
  PKG(t, 0, "foo", "1:2.0-1", NULL, "foo-src", "1:2.0-1");
  PKG(t, 1, "bar", "3", NULL, "bar", "3");
  target_free(&t);
  /* Nothing at all: no packages, not an error (a minimal chroot). */
  assert_int_equal(status("", &t, why), 0);
  assert_int_equal(t.npkgs, 0);
  target_free(&t);
}

/* Each malformed file is refused, with the line named. */
static void malformed(void **state)
{
  static const struct {
    const char *text, *why;
  } bad[] = {
    { "Package: a1\nStatus: install ok installed\nVersion: 1\nthis line is no field\n", "line 4: neither" },
    { " continuation\nPackage: a1\n", "line 1: a continuation line that follows no field" },
    { "Package: a1\nStatus: install ok\nVersion: 1\n", "line 1: Status 'install ok' is not" },
    { "Package: a1\nStatus: install ok installed\n", "line 1: installed package 'a1' has no Version" },
    { "Package: a1\nVersion: 1\n", "line 1: package 'a1' has no Status" },
    { "Status: install ok installed\nVersion: 1\n", "line 1: an installed paragraph has no Package" },
    { "Package: a1\nStatus: install ok installed\nVersion: 1.0 beta\n", "line 1: package 'a1': version '1.0 beta'" },
    { "Package: a1\nStatus: install ok installed\nVersion: 1\nSource: s1 (2\n", "Source is not 'NAME' or" },
    { "Package: a1\nStatus: install ok installed\nVersion: 1\nSource: s1 (a b)\n", "Source is not" },
    { "Package: a1\nStatus: install ok installed\nVersion: 1\nSource: s1 (:x)\n", "source version ':x'" },
    { "Package: Bad_Name\nStatus: install ok installed\nVersion: 1\n", "'Bad_Name' is not a package name" },
    { "Package: a1\nPackage: a2\nStatus: install ok installed\nVersion: 1\n", "line 2: field Package twice" },
    { "Package: a1\nStatus: install ok installed\nVersion:\n", "line 3: field Version is empty" },
    { "Package: a1\nStatus: install ok installed\nVer sion: 1\n", "line 3: a field name with a space" },
    { "Package: a1\nStatus: install ok installed\x01\nVersion: 1\n", "line 2: a control character" },
    { ": value\n", "line 1: neither" },
    { "# a comment\n", "line 1: a comment, which a status file does not have" },
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    struct vmp_target t;
    char why[256] = "";
    assert_int_equal(status(bad[i].text, &t, why), -1);
    if (!strstr(why, bad[i].why)) fail_msg("case %zu: '%s' does not contain '%s'", i, why, bad[i].why);
    target_free(&t);
  }
  /* A NUL byte, which strlen would hide. */
  struct vmp_target t = { 0 };
  char why[256] = "";
  assert_int_equal(vmp_dpkg_status_parse("Package: a\0b\n", 13, &t, why, sizeof why), -1);
  assert_string_equal(why, "a NUL byte");
  target_free(&t);
}

/* Only the fields read are held to FIELD_MAX: a long Depends or Description is
 * a status file like any other. */
static void long_fields(void **state)
{
  struct vmp_target t = { 0 };
  char why[256] = "";
  size_t n = 20000;
  char *text = malloc(n + 256), *p = text;
  p += sprintf(p, "Package: big\nStatus: install ok installed\nVersion: 1-1\nDepends: ");
  for (size_t i = 0; i < n; i++) *p++ = 'a';
  p += sprintf(p, "\n");
  assert_int_equal(status(text, &t, why), 0);
  assert_int_equal(t.npkgs, 1);
  target_free(&t);
  p = text + sprintf(text, "Package: big\nStatus: install ok installed\nVersion: 1-");
  for (size_t i = 0; i < 5000; i++) *p++ = '1';
  sprintf(p, "\n");
  assert_int_equal(status(text, &t, why), -1);
  assert_string_equal(why, "line 3: field Version is too long");
  target_free(&t);
  free(text);
}

/* An APT repository's Packages index: each paragraph's Filename, checked. */
static void packages_index(void **state)
{
  struct vm_strv files = { 0 };
  char why[256] = "";
  const char good[] = "Package: libvmkit-canary1\nSource: vmkit-canary\nVersion: 1.0-2\nArchitecture: all\n"
                      "Filename: ./libvmkit-canary1_1.0-2_all.deb\nDescription: a\n b\n\n"
                      "Package: vmkit-breaker\nVersion: 2:2.0-1\nFilename: pool/v/vmkit-breaker_2.0-1_all.deb";
  assert_int_equal(vmp_deb_packages_parse(good, strlen(good), &files, why, sizeof why), 0);
  assert_int_equal(files.n, 2);
  assert_string_equal(files.v[0], "./libvmkit-canary1_1.0-2_all.deb");
  assert_string_equal(files.v[1], "pool/v/vmkit-breaker_2.0-1_all.deb");
  vm_strv_free(&files);
  static const struct {
    const char *text, *why;
  } bad[] = {
    { "Package: a1\nVersion: 1\n", "line 1: package 'a1' has no Filename" },
    { "Package: a1\nVersion: 1\nFilename: ../../etc/passwd\n", "is not a path inside the repository" },
    { "Package: a1\nVersion: 1\nFilename: /etc/passwd\n", "is not a path inside the repository" },
    { "Package: a1\nFilename: a.deb\n", "has no Version" },
    { "Package: a1\nVersion: 1 0\nFilename: a.deb\n", "version '1 0'" },
    { "this is not a Debian control file\n", "line 1: neither" },
    { "", "no package in it" },
    { "Package: a1\nPackage: a2\n", "field Package twice" },
    { " x\n", "continuation line that follows no field" },
    { "# a comment\nPackage: a1\n", "line 1: a comment, which a Packages index does not have" },
    { "Package: a1\nVer sion: 1\n", "line 2: a field name with a space" },
    { "Package: a1\nVersion:\nFilename: a.deb\n", "line 2: field Version is empty" },
    { "Package: a1\nVersion: 1\nFilename: a.deb\x7f\n", "line 3: a control character" },
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    assert_int_equal(vmp_deb_packages_parse(bad[i].text, strlen(bad[i].text), &files, why, sizeof why), -1);
    if (!strstr(why, bad[i].why)) fail_msg("case %zu: '%s' does not contain '%s'", i, why, bad[i].why);
    vm_strv_free(&files);
  }
}

static void dpkg_query(void **state)
{
  struct vmp_target t = { 0 };
  char why[256] = "";
  const char out[] = "libc6\t2.36-9+deb12u4\tamd64\tglibc\t2.36-9+deb12u4\tii \n"
                     "libssl3\t3.0.11-1~deb12u2+b1\tamd64\topenssl\t3.0.11-1~deb12u2\tii \n"
                     "oldpkg\t1.0-1\tamd64\toldpkg\t1.0-1\trc \n"
                     "bash\t5.2.15-2+b2\tamd64\tbash\t5.2.15-2+b2\thi \n"
                     "half\t1-1\tamd64\thalf\t1-1\tiU \n"
                     "gone\t\t\tgone\t\tun \n";
  assert_int_equal(vmp_dpkg_query_parse(out, strlen(out), &t, why, sizeof why), 0);
  assert_int_equal(t.npkgs, 4);
  PKG(t, 0, "libc6", "2.36-9+deb12u4", "amd64", "glibc", "2.36-9+deb12u4");
  PKG(t, 1, "libssl3", "3.0.11-1~deb12u2+b1", "amd64", "openssl", "3.0.11-1~deb12u2");
  PKG(t, 2, "bash", "5.2.15-2+b2", "amd64", "bash", "5.2.15-2+b2");
  PKG(t, 3, "half", "1-1", "amd64", "half", "1-1");
  target_free(&t);
  const char short_line[] = "a1\t1\tamd64\tii \n";
  assert_int_equal(vmp_dpkg_query_parse(short_line, strlen(short_line), &t, why, sizeof why), -1);
  assert_string_equal(why, "line 1: not the six fields asked for");
  target_free(&t);
}

static void rpm_qa(void **state)
{
  struct vmp_target t = { 0 };
  char why[256] = "";
  const char out[] = "openssl-libs\t1\t3.0.7\t24.el9\tx86_64\topenssl-3.0.7-24.el9.src.rpm\n"
                     "bash\t(none)\t5.1.8\t6.el9_1\tx86_64\tbash-5.1.8-6.el9_1.src.rpm\n"
                     "gpg-pubkey\t(none)\tfd431d51\t4ae0493b\t(none)\t(none)\n"
                     "python3-pyyaml\t(none)\t5.4.1\t6.el9\tx86_64\tPyYAML-5.4.1-6.el9.src.rpm\n"
                     "perl-Carp\t(none)\t1.50\t460.el9\tnoarch\tperl-Carp-1.50-460.el9.src.rpm\n"
                     "sub\t(none)\t2.1\t1\tnoarch\tbig-suite-9.0-3.src.rpm\n";
  assert_int_equal(vmp_rpm_qa_parse(out, strlen(out), &t, why, sizeof why), 0);
  assert_int_equal(t.npkgs, 5);
  PKG(t, 0, "openssl-libs", "1:3.0.7-24.el9", "x86_64", "openssl", "1:3.0.7-24.el9");
  PKG(t, 1, "bash", "5.1.8-6.el9_1", "x86_64", "bash", "5.1.8-6.el9_1");
  PKG(t, 2, "python3-pyyaml", "5.4.1-6.el9", "x86_64", "PyYAML", "5.4.1-6.el9");
  PKG(t, 3, "perl-Carp", "1.50-460.el9", "noarch", "perl-Carp", "1.50-460.el9");
  /* A subpackage versioned apart from its source: the source's own version. */
  PKG(t, 4, "sub", "2.1-1", "noarch", "big-suite", "9.0-3");
  target_free(&t);
  const char bad_src[] = "a\t(none)\t1\t1\tnoarch\tnodashes.src.rpm\n";
  assert_int_equal(vmp_rpm_qa_parse(bad_src, strlen(bad_src), &t, why, sizeof why), -1);
  assert_string_equal(why, "line 1: package 'a': source 'nodashes.src.rpm' is not NAME-VERSION-RELEASE.src.rpm");
  target_free(&t);
}

static void os_release(void **state)
{
  char *id, *ver;
  const char deb[] = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\n"
                     "VERSION_ID=\"12\"\nVERSION=\"12 (bookworm)\"\nID=debian\n";
  assert_int_equal(vmp_os_release_parse(deb, strlen(deb), &id, &ver), 0);
  assert_string_equal(id, "debian");
  assert_string_equal(ver, "12");
  free(id);
  free(ver);
  const char alma[] = "ID='almalinux'\nVERSION_ID='9.3'\n";
  assert_int_equal(vmp_os_release_parse(alma, strlen(alma), &id, &ver), 0);
  assert_string_equal(id, "almalinux");
  assert_string_equal(ver, "9.3");
  free(id);
  free(ver);
  /* Debian testing has no VERSION_ID; a file without ID is refused. */
  assert_int_equal(vmp_os_release_parse("ID=debian\n", 10, &id, &ver), 0);
  assert_null(ver);
  free(id);
  assert_int_equal(vmp_os_release_parse("NAME=x\nVERSION_ID=1\n", 20, &id, &ver), -1);
  assert_null(id);
  assert_null(ver);
}

int main(void)
{
  vm_init("patch-dpkgstatus");
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(installed_only), cmocka_unit_test(long_fields), cmocka_unit_test(packages_index), cmocka_unit_test(layout), cmocka_unit_test(malformed),
    cmocka_unit_test(dpkg_query),     cmocka_unit_test(rpm_qa), cmocka_unit_test(os_release),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
