/* vmpatch apply --template NAME --as NEW: a template is never patched in place
 * (its linked clones stand on its disk), so a new template is made of it, the way
 * vmrun template create makes one (common/virt's vm_template_make: the lock, the
 * record first as incomplete, marked complete last): a copy of its volumes, the
 * copy patched offline through libguestfs (vmp_patch_disks) and sealed again, as
 * package scripts may have made ssh host keys or a machine-id (vm_gfs_seal_disk).
 * New clones are then made from NEW; the old one stays while clones use it. */
#include <string.h>
#include <time.h>

#include "vmkit-gfs.h"
#include "template.h"

struct patch_fill {
  const struct vm_template *t;
  struct vmp_patch_job *j;
};

static int patch_fill(struct vm_template_build *b, void *arg)
{
  struct patch_fill *f = arg;
  const struct vm_template *t = f->t;
  struct vmp_patch_job *j = f->j;
  CLEANUP_VIRVOL virStorageVolPtr src = NULL, dst = NULL;
  int rc = vm_vol_find(b->conn, t->disk, &src);
  if (rc == VM_EXIT_NOTFOUND)
    rc = vm_fail(VM_EXIT_FAIL, "template '%s' is damaged: its disk volume is missing", t->name);
  if (rc) return rc;
  vm_progress("copying the disk", 0, 0);
  struct vm_volspec spec = { .name = b->vdisk, .format = "qcow2", .capacity = 0, .mode = 0444 };
  rc = vm_vol_create_from(b->pool, &spec, src, &dst);
  vm_progress_end();
  if (rc) return rc;
  CLEANUP_FREE char *path = virStorageVolGetPath(dst);
  if (!path) return vm_fail_virt("cannot find the volume '%s'", b->vdisk);
  vm_undo_volume(b->undo, b->conn, path);
  if (t->kernel && (rc = vm_template_copy_boot_file(b->conn, b->pool, b->undo, t->kernel, b->vkernel))) return rc;
  if (t->initrd && (rc = vm_template_copy_boot_file(b->conn, b->pool, b->undo, t->initrd, b->vinitrd))) return rc;
  if (vm_interrupted()) return vm_fail_interrupted();

  struct vm_disk disk = { .target = (char *)"vda", .device = (char *)"disk", .type = (char *)"file",
                          .source = path, .format = (char *)"qcow2" };
  if ((rc = vmp_patch_disks(&disk, 1, j))) return rc;
  if (j->updated.n == 0) {
    j->result = "up-to-date";
    return VM_DONE;
  }
  /* A template that boots a kernel of its own (a volume beside its disk) would
   * boot the old one over the new modules: refused, nothing made. */
  static const char *const boot_pkgs[] = { "linux-image", "linux-modules", "initramfs-tools", "dracut", NULL };
  for (size_t i = 0; (t->kernel || t->initrd) && i < j->updated.n; i++)
    for (size_t k = 0; boot_pkgs[k]; k++)
      if (strncmp(j->updated.v[i], boot_pkgs[k], strlen(boot_pkgs[k])) == 0) {
        const char *u = j->updated.v[i];
        return vm_fail(VM_EXIT_STATE, "template '%s' boots a kernel of its own, which the patch would leave as it "
                       "was while it updates %.*s: not made; leave that package out (--packages), or make the "
                       "template again from a VM that boots its disk's kernel", t->name, (int)strcspn(u, " "), u);
      }
  vm_info("template '%s': sealing the patched copy '%s'", t->name, b->name);
  if ((rc = vm_gfs_seal_disk(path))) return rc;

  /* What a clone inherits, as the template patched had it. */
  static const char *const inherited[] = { "source", "vcpus", "memory", NULL };
  for (size_t i = 0; inherited[i]; i++) {
    json_object *v;
    if (json_object_object_get_ex(t->json, inherited[i], &v) && v)
      json_object_object_add(b->fields, inherited[i], json_object_get(v));
  }
  char day[16];
  struct tm tm;
  time_t now = time(NULL);
  strftime(day, sizeof day, "%Y-%m-%d", gmtime_r(&now, &tm));
  CLEANUP_FREE char *desc = vm_strdup_printf("%s patched by vmpatch on %s", t->name, day);
  json_object_object_add(b->fields, "description", json_object_new_string(desc));
  json_object_object_add(b->fields, "patched_from", json_object_new_string(t->name));
  if (t->id) json_object_object_add(b->fields, "patched_from_id", json_object_new_string(t->id));
  json_object *updates = json_object_new_array();
  for (size_t i = 0; i < j->updated.n; i++) json_object_array_add(updates, json_object_new_string(j->updated.v[i]));
  json_object_object_add(b->fields, "updated", updates);
  b->cmdline = t->cmdline;
  return 0;
}

int vmp_apply_template(virConnectPtr conn, const char *pool, const char *name, const char *as,
                       struct vmp_patch_job *j)
{
  int rc;
  if ((rc = vm_check_name("template", name)) || (rc = vm_check_name("template", as))) goto out;
  /* Shared, as a clone holds it: no delete while its disk is copied. */
  if ((rc = vm_template_lock(conn, pool, name, true))) goto out;
  struct vm_template t;
  if ((rc = vm_template_load(conn, pool, name, false, &t))) goto out;
  json_object *v;
  if ((json_object_object_get_ex(t.json, "kernel", &v) && !t.kernel) ||
      (json_object_object_get_ex(t.json, "initrd", &v) && !t.initrd))
    rc = vm_fail(VM_EXIT_FAIL, "template '%s' is damaged: its %s volume is missing", name, t.kernel ? "initrd" : "kernel");
  if (rc == 0) {
    struct patch_fill f = { &t, j };
    rc = vm_template_make(conn, pool, as, t.kernel != NULL, t.initrd != NULL, patch_fill, &f);
  }
  vm_template_free(&t);
  if (rc == VM_DONE) {
    vm_info("template '%s' is up to date: no template '%s' made", name, as);
    j->result = "up-to-date";
    return 0;
  }
  if (rc == 0) {
    j->result = "patched";
    vm_info("created template '%s' from template '%s' patched (%zu package%s updated) in pool '%s' of %s", as, name,
            j->updated.n, j->updated.n == 1 ? "" : "s", pool ? pool : vm_default_template_pool(),
            vm_conn_host_name(conn));
  }
out:
  if (rc && !j->result) j->result = "failed";
  return rc;
}
