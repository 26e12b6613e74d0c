/* A template's record as a run writes it first (vm_template_new_record): state
 * "incomplete", the run that makes it, and exactly the volumes of the template's
 * own names that the run may make, so that the next run removes them and nothing
 * else. vmrun template create and push, and vmpatch apply --template, share it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "vmkit.h"

static const char *str(json_object *j, const char *key)
{
  json_object *v;
  return json_object_object_get_ex(j, key, &v) ? json_object_get_string(v) : NULL;
}

static void incomplete_record(void **state)
{
  json_object *j = vm_template_new_record("deb12-p1", "0b7f6c1e-3d1a-4e52-9a8e-2f4a9d7c6b11", false, false);
  json_object *v;
  assert_true(json_object_object_get_ex(j, "format", &v));
  assert_int_equal(json_object_get_int(v), VM_TEMPLATE_FORMAT);
  assert_string_equal(str(j, "name"), "deb12-p1");
  assert_string_equal(str(j, "id"), "0b7f6c1e-3d1a-4e52-9a8e-2f4a9d7c6b11");
  assert_string_equal(str(j, "state"), "incomplete");
  assert_non_null(str(j, "created"));
  json_object *run;
  assert_true(json_object_object_get_ex(j, "run", &run));
  assert_string_equal(str(run, "tool"), "test-template");
  assert_true(json_object_object_get_ex(run, "pid", &v));
  assert_int_equal(json_object_get_int(v), (int)getpid());
  assert_string_equal(str(run, "machine"), vm_machine_id());
  json_object *vols;
  assert_true(json_object_object_get_ex(j, "volumes", &vols));
  assert_int_equal(json_object_array_length(vols), 1);
  assert_string_equal(json_object_get_string(json_object_array_get_idx(vols, 0)), "deb12-p1.qcow2");
  json_object_put(j);
}

static void boot_files_named(void **state)
{
  json_object *j = vm_template_new_record("tiny2", "x", true, true), *vols;
  assert_true(json_object_object_get_ex(j, "volumes", &vols));
  assert_int_equal(json_object_array_length(vols), 3);
  assert_string_equal(json_object_get_string(json_object_array_get_idx(vols, 0)), "tiny2.qcow2");
  assert_string_equal(json_object_get_string(json_object_array_get_idx(vols, 1)), "tiny2.vmlinuz");
  assert_string_equal(json_object_get_string(json_object_array_get_idx(vols, 2)), "tiny2.initrd");
  json_object_put(j);
  j = vm_template_new_record("tiny3", "x", false, true);
  assert_true(json_object_object_get_ex(j, "volumes", &vols));
  assert_int_equal(json_object_array_length(vols), 2);
  assert_string_equal(json_object_get_string(json_object_array_get_idx(vols, 1)), "tiny3.initrd");
  json_object_put(j);
}

static void volume_names(void **state)
{
  char *n = vm_template_vol_name("deb12", "template");
  assert_string_equal(n, "deb12.template");
  free(n);
}

int main(void)
{
  vm_init("test-template");
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(incomplete_record),
    cmocka_unit_test(boot_files_named),
    cmocka_unit_test(volume_names),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
