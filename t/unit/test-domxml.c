/* Domain XML written from a spec and read back: names and paths with characters
 * that XML must escape come back unchanged. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <string.h>

#include "vmkit.h"

static void spec_round_trip(void **state)
{
  struct vm_spec s = { .name = "web-1", .virt_type = "qemu", .vcpus = 2, .memory = 512ULL << 20 };
  s.kernel = "/boot/vmlinuz";
  s.cmdline = "console=ttyS0 a=<b>&c";
  s.disks[s.ndisks++] = (struct vm_spec_disk){ .path = "/var/lib/x/web 1&2.qcow2", .format = "qcow2", .device = "disk" };
  s.disks[s.ndisks++] = (struct vm_spec_disk){ .path = "/var/lib/x/data.qcow2", .format = "qcow2", .device = "disk" };
  s.disks[s.ndisks++] = (struct vm_spec_disk){ .path = "/iso/d.iso", .format = "raw", .device = "cdrom", .readonly = true };
  s.nics[s.nnics++] = (struct vm_spec_nic){ "bridge", "br0", "52:54:00:12:34:56" };
  s.console_log = "/var/log/x.log";
  s.meta_template = "tiny";
  char *xml = vm_spec_xml(&s);
  assert_non_null(xml);
  xmlDocPtr doc = vm_xml_parse(xml);
  assert_non_null(doc);
  xmlXPathContextPtr x = vm_xpath_ctx(doc);
  char *v;
  assert_string_equal(v = vm_xpath_str(x, "/domain/@type"), "qemu"); free(v);
  assert_string_equal(v = vm_xpath_str(x, "/domain/name"), "web-1"); free(v);
  assert_int_equal(vm_xpath_ll(x, "/domain/memory", 0), 524288);
  assert_int_equal(vm_xpath_ll(x, "/domain/vcpu", 0), 2);
  assert_string_equal(v = vm_xpath_str(x, "/domain/os/cmdline"), "console=ttyS0 a=<b>&c"); free(v);
  assert_string_equal(v = vm_xpath_str(x, "/domain/devices/interface/source/@bridge"), "br0"); free(v);
  assert_string_equal(v = vm_xpath_str(x, "/domain/devices/serial/log/@file"), "/var/log/x.log"); free(v);
  assert_null(vm_xpath_str(x, "/domain/cpu/@mode")); /* TCG: no host-model */
  xmlXPathFreeContext(x);

  struct vm_disk *d;
  size_t n;
  vm_domain_disks(doc, &d, &n);
  assert_int_equal(n, 3);
  assert_string_equal(d[0].source, "/var/lib/x/web 1&2.qcow2");
  assert_string_equal(d[0].target, "vda");
  assert_string_equal(d[1].target, "vdb");
  assert_string_equal(d[2].target, "sda");
  assert_string_equal(d[2].device, "cdrom");
  assert_true(d[2].readonly);
  assert_false(d[0].readonly);
  vm_disks_free(d, n);
  v = vm_domain_meta(doc, "template");
  assert_string_equal(v, "tiny");
  free(v);
  xmlFreeDoc(doc);
  free(xml);
}

static void kvm_gets_host_model(void **state)
{
  struct vm_spec s = { .name = "k", .virt_type = "kvm", .vcpus = 1, .memory = 1ULL << 30 };
  char *xml = vm_spec_xml(&s);
  xmlDocPtr doc = vm_xml_parse(xml);
  xmlXPathContextPtr x = vm_xpath_ctx(doc);
  char *v = vm_xpath_str(x, "/domain/cpu/@mode");
  assert_string_equal(v, "host-model");
  free(v);
  /* No kernel: boot from disk, then CD-ROM. */
  assert_int_equal(vm_xpath_ll(x, "count(/domain/os/boot)", 0), 2);
  xmlXPathFreeContext(x);
  xmlFreeDoc(doc);
  free(xml);
}

static void shell_quote(void **state)
{
  char *q;
  assert_string_equal(q = vm_shell_quote("/var/lib/a.qcow2"), "/var/lib/a.qcow2"); free(q);
  assert_string_equal(q = vm_shell_quote("a b"), "'a b'"); free(q);
  assert_string_equal(q = vm_shell_quote("it's"), "'it'\\''s'"); free(q);
  assert_string_equal(q = vm_shell_quote(""), "''"); free(q);
  assert_string_equal(q = vm_shell_quote("$(rm -rf /)"), "'$(rm -rf /)'"); free(q);
  char *argv[] = { "qemu-img", "create", "-b", "my base.qcow2", NULL };
  assert_string_equal(q = vm_argv_str(argv), "qemu-img create -b 'my base.qcow2'"); free(q);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(spec_round_trip),
    cmocka_unit_test(kvm_gets_host_model),
    cmocka_unit_test(shell_quote),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
