/* Reading a template (vmrun(1) TEMPLATES): the volumes of a template pool,
 * NAME.qcow2 (the sealed disk, read-only), NAME.template (its record, JSON),
 * NAME.vmlinuz and NAME.initrd. vmrun makes, lists, pushes and clones templates;
 * vmpatch reads their disks. Only the reading is shared here: what makes or
 * removes a template stays in vmrun/template.c. */
#include <stdlib.h>
#include <string.h>

#include "vmkit-virt.h"

void vm_template_free(struct vm_template *t)
{
  free(t->name);
  free(t->pool);
  free(t->id);
  free(t->state);
  free(t->disk);
  free(t->kernel);
  free(t->initrd);
  free(t->cmdline);
  if (t->json) json_object_put(t->json);
  memset(t, 0, sizeof *t);
}

static char *vol_name(const char *name, const char *suffix) { return vm_strdup_printf("%s.%s", name, suffix); }

static const char *jstr(json_object *j, const char *key)
{
  json_object *v;
  return json_object_object_get_ex(j, key, &v) && json_object_is_type(v, json_type_string) ? json_object_get_string(v)
                                                                                           : NULL;
}

static int64_t jint(json_object *j, const char *key)
{
  json_object *v;
  return json_object_object_get_ex(j, key, &v) ? json_object_get_int64(v) : 0;
}

/* The path on the host of the template's volume NAME.SUFFIX, when the record
 * names it (member key) and it exists. A record is input (it crosses hosts with
 * push) and is never trusted to name another volume. */
static char *member_path(virStoragePoolPtr pool, const char *name, json_object *j, const char *key,
                         const char *suffix)
{
  const char *v = jstr(j, key);
  CLEANUP_FREE char *want = vol_name(name, suffix);
  if (!v || strcmp(v, want) != 0) return NULL;
  CLEANUP_VIRVOL virStorageVolPtr vol = virStorageVolLookupByName(pool, v);
  if (!vol) {
    virResetLastError();
    return NULL;
  }
  char *p = virStorageVolGetPath(vol);
  return p;
}

json_object *vm_template_read_record(virStoragePoolPtr pool, const char *name)
{
  CLEANUP_FREE char *rname = vol_name(name, "template");
  CLEANUP_VIRVOL virStorageVolPtr vol = virStorageVolLookupByName(pool, rname);
  if (!vol) {
    /* Made behind libvirt's back (a copy of a pool's folder)? Read the pool again. */
    virResetLastError();
    if (virStoragePoolRefresh(pool, 0) == 0) vol = virStorageVolLookupByName(pool, rname);
    virResetLastError();
    if (!vol) return NULL;
  }
  CLEANUP_FREE char *text = vm_vol_read_text(vol, 1 << 16);
  json_object *j = text ? json_tokener_parse(text) : NULL;
  /* A record torn by a kill while it was written is an incomplete template. */
  if (!j) j = json_object_new_object();
  return j;
}

int vm_template_from_record(virStoragePoolPtr pool, const char *name, json_object *j, struct vm_template *t)
{
  memset(t, 0, sizeof *t);
  t->json = json_object_get(j);
  t->name = vm_strdup(name);
  t->pool = vm_strdup(virStoragePoolGetName(pool));
  t->id = vm_strdup(jstr(j, "id"));
  t->state = vm_strdup(jstr(j, "state") ? jstr(j, "state") : "incomplete");
  t->disk = member_path(pool, name, j, "disk", "qcow2");
  t->kernel = member_path(pool, name, j, "kernel", "vmlinuz");
  t->initrd = member_path(pool, name, j, "initrd", "initrd");
  t->cmdline = vm_strdup(jstr(j, "cmdline"));
  int64_t vcpus = jint(j, "vcpus"), memory = jint(j, "memory");
  t->vcpus = vcpus > 0 && vcpus <= 512 ? (unsigned)vcpus : 0;
  t->memory = memory >= (16 << 20) ? (uint64_t)memory : 0;
  /* The disk's size is the disk's to say, not the record's. */
  if (t->disk) {
    CLEANUP_VIRVOL virStorageVolPtr dv = virStorageVolLookupByName(pool, strrchr(t->disk, '/') ? strrchr(t->disk, '/') + 1 : t->disk);
    virStorageVolInfo info;
    if (dv && virStorageVolGetInfo(dv, &info) == 0) t->virtual_size = info.capacity;
    virResetLastError();
  }
  return 0;
}

bool vm_template_complete(const struct vm_template *t) { return t->state && strcmp(t->state, "complete") == 0; }

int vm_template_open_pool(virConnectPtr conn, const char *pool_name, bool create, virStoragePoolPtr *pool)
{
  const char *name = pool_name ? pool_name : vm_default_template_pool();
  if (create) return vm_pool_open(conn, name, pool);
  *pool = virStoragePoolLookupByName(conn, name);
  if (!*pool) {
    virResetLastError();
    return VM_EXIT_NOTFOUND;
  }
  if (virStoragePoolIsActive(*pool) != 1 && virStoragePoolCreate(*pool, 0) < 0) {
    virErrorPtr saved = virSaveLastError();
    if (virStoragePoolIsActive(*pool) != 1) {
      int rc = vm_fail_virt_saved(saved, "cannot start storage pool '%s'", name);
      virStoragePoolFree(*pool);
      *pool = NULL;
      return rc;
    }
    virFreeError(saved);
  }
  return 0;
}

int vm_template_load(virConnectPtr conn, const char *pool_name, const char *name, bool allow_incomplete,
                     struct vm_template *t)
{
  memset(t, 0, sizeof *t);
  int rc = vm_check_name("template", name);
  if (rc) return rc;
  CLEANUP_VIRPOOL virStoragePoolPtr pool = NULL;
  const char *pname = pool_name ? pool_name : vm_default_template_pool();
  rc = vm_template_open_pool(conn, pool_name, false, &pool);
  if (rc == VM_EXIT_NOTFOUND)
    return vm_fail(VM_EXIT_NOTFOUND, "no such template '%s' on %s (no storage pool '%s')", name,
                   vm_conn_host_name(conn), pname);
  if (rc) return rc;
  CLEANUP_JSON json_object *j = vm_template_read_record(pool, name);
  if (!j) return vm_fail(VM_EXIT_NOTFOUND, "no such template '%s' in pool '%s' of %s", name, pname, vm_conn_host_name(conn));
  vm_template_from_record(pool, name, j, t);
  if (!vm_template_complete(t) && !allow_incomplete) {
    vm_template_free(t);
    return vm_fail(VM_EXIT_STATE, "template '%s' is incomplete (a create or push was interrupted): "
                   "'vmrun template delete %s' removes it", name, name);
  }
  if (vm_template_complete(t) && !t->disk) {
    vm_template_free(t);
    return vm_fail(VM_EXIT_FAIL, "template '%s' is damaged: its disk volume is missing", name);
  }
  return 0;
}

/* The template itself on a local connection, else the local libvirt's copy with
 * the same id (VMKIT_LOCAL_URI, else qemu:///system). */
char *vm_template_local_disk(virConnectPtr conn, const struct vm_template *t)
{
  if (vm_conn_is_local(conn)) return vm_strdup(t->disk);
  const char *uri = getenv("VMKIT_LOCAL_URI");
  virConnectPtr local = virConnectOpen(uri && *uri ? uri : "qemu:///system");
  char *path = NULL;
  /* In the pool of the same name here, else in this machine's template pool. */
  const char *pools[] = { t->pool, vm_default_template_pool() };
  for (size_t i = 0; i < 2 && local && !path && vm_conn_is_local(local); i++) {
    struct vm_template lt;
    CLEANUP_VIRPOOL virStoragePoolPtr pool = NULL;
    if (vm_template_open_pool(local, pools[i], false, &pool) != 0) continue;
    /* The copy read is this machine's: its lock here, shared (as a clone's),
     * keeps a local 'vmrun template delete' off it until this run ends. */
    CLEANUP_FREE char *key = vm_strdup_printf("%s/%s", pools[i], t->name);
    CLEANUP_FREE char *what = vm_strdup_printf("template '%s' of this machine", t->name);
    vm_errors_mute(true); /* NULL quietly: the caller says what it stops */
    int lrc = vm_lock_object(local, "template", key, true, what);
    vm_errors_mute(false);
    if (lrc != 0) break;
    CLEANUP_JSON json_object *j = vm_template_read_record(pool, t->name);
    if (!j) continue;
    vm_template_from_record(pool, t->name, j, &lt);
    if (vm_template_complete(&lt) && lt.id && t->id && strcmp(lt.id, t->id) == 0 && lt.disk)
      path = vm_strdup(lt.disk);
    vm_template_free(&lt);
  }
  virResetLastError();
  if (local) {
    vm_conn_forget(local);
    virConnectClose(local);
  }
  return path;
}
