/* Which files are a VM's own by name (vm_image_named_for): undefine
 * --remove-storage and snapshot deletes go by it, so a prefix must not do. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "vmkit.h"

static void own_names(void **state)
{
  assert_true(vm_image_named_for("/pool/web.qcow2", "web"));
  assert_true(vm_image_named_for("/pool/web-disk1.qcow2", "web"));
  assert_true(vm_image_named_for("/pool/web-disk12.qcow2", "web"));
  assert_true(vm_image_named_for("/pool/web-vda.s1.qcow2", "web"));
  assert_true(vm_image_named_for("/pool/web-vdb.snap-20261130-1200-r2.qcow2", "web"));
  assert_true(vm_image_named_for("/pool/web.s1.mem", "web"));
}

/* Review of issue 6: VM "web" claimed "web-1.qcow2". */
static void others_names(void **state)
{
  assert_false(vm_image_named_for("/pool/web-1.qcow2", "web"));
  assert_false(vm_image_named_for("/pool/web-1-disk1.qcow2", "web"));
  assert_false(vm_image_named_for("/pool/webserver.qcow2", "web"));
  assert_false(vm_image_named_for("/pool/web.2.qcow2", "web"));
  assert_false(vm_image_named_for("/pool/web-disk.qcow2", "web"));
  assert_false(vm_image_named_for("/pool/web-diskx.qcow2", "web"));
  assert_false(vm_image_named_for("/pool/web-vda.qcow2", "web"));
  assert_false(vm_image_named_for("/pool/web-vda..qcow2", "web"));
  assert_false(vm_image_named_for("/pool/web.qcow2.bak", "web"));
  assert_false(vm_image_named_for("/pool/web.mem", "web"));
  assert_false(vm_image_named_for("/pool/we.qcow2", "web"));
  assert_false(vm_image_named_for("/web/other.qcow2", "web"));
  /* Review: dotted names of other VMs. */
  assert_false(vm_image_named_for("/pool/web-eu.example.com.qcow2", "web"));
  assert_false(vm_image_named_for("/pool/web-prod.s1.qcow2", "web"));
  assert_true(vm_image_named_for("/pool/web-xvda.s1.qcow2", "web"));
  assert_true(vm_image_named_for("/pool/web-hdc.s1.qcow2", "web"));
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(own_names),
    cmocka_unit_test(others_names),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
