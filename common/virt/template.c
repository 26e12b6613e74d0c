/* Templates (vmrun(1) TEMPLATES): the volumes of a template pool, NAME.qcow2
 * (the sealed disk, read-only), NAME.template (its record, JSON), NAME.vmlinuz
 * and NAME.initrd. vmrun makes, lists, pushes and clones templates; vmpatch reads
 * their disks and makes patched versions of them. Shared here: reading one, and
 * making one under its lock (the record written first as incomplete, marked
 * complete last, what a run made undone when it fails). */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

char *vm_template_vol_name(const char *name, const char *suffix) { return vol_name(name, suffix); }

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

/* ---- Making and removing a template ------------------------------------------------- */

/* The template's volume names, the only ones a record may name: a record is input
 * (it crosses hosts with push) and is never trusted to name other volumes. */
static const char *const suffixes[] = { "qcow2", "vmlinuz", "initrd", NULL };

int vm_template_remove(virStoragePoolPtr pool, const char *name)
{
  int rc = 0;
  for (size_t i = 0; suffixes[i]; i++) {
    CLEANUP_FREE char *v = vol_name(name, suffixes[i]);
    virStorageVolPtr vol = virStorageVolLookupByName(pool, v);
    if (!vol) {
      virResetLastError();
      continue;
    }
    if (virStorageVolDelete(vol, 0) < 0 && !rc) rc = vm_fail_virt("cannot remove volume '%s'", v);
    virStorageVolFree(vol);
  }
  CLEANUP_FREE char *rname = vol_name(name, "template");
  virStorageVolPtr rec = virStorageVolLookupByName(pool, rname);
  if (rec) {
    if (rc == 0 && virStorageVolDelete(rec, 0) < 0) rc = vm_fail_virt("cannot remove volume '%s'", rname);
    virStorageVolFree(rec);
  }
  virResetLastError();
  vm_storage_changed();
  return rc;
}

int vm_template_names_free(virConnectPtr conn, virStoragePoolPtr pool, const char *name)
{
  for (size_t i = 0; suffixes[i]; i++) {
    CLEANUP_FREE char *v = vol_name(name, suffixes[i]);
    virStorageVolPtr vol = virStorageVolLookupByName(pool, v);
    if (vol) {
      virStorageVolFree(vol);
      return vm_fail(VM_EXIT_STATE, "cannot create template '%s' on %s: volume '%s' of pool '%s' exists and is no "
                     "template's", name, vm_conn_host_name(conn), v, virStoragePoolGetName(pool));
    }
    virResetLastError();
  }
  return 0;
}

json_object *vm_template_new_record(const char *name, const char *id, bool kernel, bool initrd)
{
  json_object *j = json_object_new_object();
  char host[256] = "", now[32];
  gethostname(host, sizeof host - 1);
  vm_iso_time(now);
  json_object_object_add(j, "format", json_object_new_int(VM_TEMPLATE_FORMAT));
  json_object_object_add(j, "name", json_object_new_string(name));
  json_object_object_add(j, "id", json_object_new_string(id));
  json_object_object_add(j, "state", json_object_new_string("incomplete"));
  json_object_object_add(j, "created", json_object_new_string(now));
  json_object *run = json_object_new_object();
  json_object_object_add(run, "tool", json_object_new_string(vm_progname));
  json_object_object_add(run, "pid", json_object_new_int((int)getpid()));
  json_object_object_add(run, "host", json_object_new_string(host));
  json_object_object_add(run, "machine", json_object_new_string(vm_machine_id()));
  json_object_object_add(j, "run", run);
  json_object *vols = json_object_new_array();
  const char *suffix[] = { "qcow2", kernel ? "vmlinuz" : NULL, initrd ? "initrd" : NULL };
  for (size_t i = 0; i < 3; i++) {
    if (!suffix[i]) continue;
    CLEANUP_FREE char *v = vol_name(name, suffix[i]);
    json_object_array_add(vols, json_object_new_string(v));
  }
  json_object_object_add(j, "volumes", vols);
  return j;
}

int vm_template_write_record(virStorageVolPtr rec, json_object *j)
{
  const char *text = json_object_to_json_string_ext(j, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE);
  return vm_vol_write_text(rec, text);
}

int vm_template_lock(virConnectPtr conn, const char *pool_name, const char *name, bool shared)
{
  CLEANUP_FREE char *key = vm_strdup_printf("%s/%s", pool_name ? pool_name : vm_default_template_pool(), name);
  CLEANUP_FREE char *what = vm_strdup_printf("template '%s' on %s", name, vm_conn_host_name(conn));
  return vm_lock_object(conn, "template", key, shared, what);
}

int vm_template_claim(virConnectPtr conn, virStoragePoolPtr pool, const char *name, bool shared,
                      json_object **existing)
{
  *existing = NULL;
  int rc = vm_template_lock(conn, virStoragePoolGetName(pool), name, shared);
  if (rc) return rc;
  json_object *j = vm_template_read_record(pool, name);
  if (!j) return 0;
  const char *state = jstr(j, "state");
  if (state && strcmp(state, "complete") == 0) {
    *existing = j;
    return 0;
  }
  if (shared) {
    json_object_put(j);
    return 0;
  }
  /* An incomplete template written from another machine: its run may still go on
   * (this machine's lock does not cover it). */
  json_object *run = NULL;
  json_object_object_get_ex(j, "run", &run);
  const char *machine = run ? jstr(run, "machine") : NULL;
  if (machine && strcmp(machine, vm_machine_id()) != 0) {
    const char *host = jstr(run, "host");
    rc = vm_fail(VM_EXIT_STATE, "template '%s' on %s is being made from %s: finish it there (vmkit's locks cover "
                 "the runs of one machine)", name, vm_conn_host_name(conn), host ? host : "another machine");
    json_object_put(j);
    return rc;
  }
  vm_info("removing the incomplete template '%s' that an interrupted run left (%s)", name,
          run ? json_object_to_json_string(run) : "a record that cannot be read");
  rc = vm_template_remove(pool, name);
  json_object_put(j);
  return rc;
}

int vm_template_new_volume(virConnectPtr conn, virStoragePoolPtr pool, struct vm_undo *u, const char *name,
                           const char *format, uint64_t capacity, unsigned mode, virStorageVolPtr *vol)
{
  struct vm_volspec spec = { .name = name, .format = format, .capacity = capacity, .mode = mode };
  int rc = vm_vol_create(pool, &spec, vol);
  if (rc == 0) {
    CLEANUP_FREE char *path = virStorageVolGetPath(*vol);
    if (path) vm_undo_volume(u, conn, path);
  }
  return rc;
}

int vm_template_copy_boot_file(virConnectPtr conn, virStoragePoolPtr pool, struct vm_undo *u, const char *src,
                               const char *as)
{
  CLEANUP_VIRVOL virStorageVolPtr srcvol = NULL, dst = NULL;
  int rc = vm_vol_find(conn, src, &srcvol);
  if (rc == 0) {
    struct vm_volspec spec = { .name = as, .format = "raw", .capacity = 0, .mode = 0444 };
    if ((rc = vm_vol_create_from(pool, &spec, srcvol, &dst))) return rc;
    CLEANUP_FREE char *path = virStorageVolGetPath(dst);
    vm_undo_volume(u, conn, path);
    return 0;
  }
  if (rc != VM_EXIT_NOTFOUND) return rc;
  if (!vm_conn_is_local(conn))
    return vm_fail(VM_EXIT_FAIL, "cannot copy '%s' into the template: it is in no storage pool of %s", src,
                   vm_conn_host_name(conn));
  if ((rc = vm_template_new_volume(conn, pool, u, as, "raw", 0, 0444, &dst))) return rc;
  return vm_vol_upload_file(dst, src);
}

int vm_template_make(virConnectPtr conn, const char *pool_name, const char *name, bool kernel, bool initrd,
                     int (*fill)(struct vm_template_build *b, void *arg), void *arg)
{
  CLEANUP_VIRPOOL virStoragePoolPtr pool = NULL;
  CLEANUP_JSON json_object *existing = NULL, *rec = NULL, *fields = NULL;
  CLEANUP_VIRVOL virStorageVolPtr recvol = NULL;
  CLEANUP_FREE char *scratch = NULL, *dpath = NULL;
  CLEANUP_FREE char *vdisk = vol_name(name, "qcow2"), *vkernel = vol_name(name, "vmlinuz");
  CLEANUP_FREE char *vinitrd = vol_name(name, "initrd"), *vrec = vol_name(name, "template");
  struct vm_undo undo = { 0 };
  char id[37];
  vm_uuid_random(id);
  int rc;

  if ((rc = vm_template_open_pool(conn, pool_name, true, &pool)) ||
      (rc = vm_template_claim(conn, pool, name, false, &existing)))
    goto out;
  if (existing) {
    rc = vm_fail(VM_EXIT_STATE, "template '%s' already exists on %s", name, vm_conn_host_name(conn));
    goto out;
  }
  if ((rc = vm_template_names_free(conn, pool, name))) goto out;
  vm_catch_signals();
  if (!(scratch = vm_scratch_dir("template"))) {
    rc = VM_EXIT_FAIL;
    goto out;
  }
  vm_undo_local_dir(&undo, scratch);

  /* The record first, naming every volume this run may make. */
  rec = vm_template_new_record(name, id, kernel, initrd);
  if ((rc = vm_template_new_volume(conn, pool, &undo, vrec, "raw", 65536, 0644, &recvol)) ||
      (rc = vm_template_write_record(recvol, rec)))
    goto fail;

  fields = json_object_new_object();
  struct vm_template_build b = { .conn = conn, .pool = pool, .undo = &undo, .scratch = scratch, .name = name,
                                 .vdisk = vdisk, .vkernel = kernel ? vkernel : NULL,
                                 .vinitrd = initrd ? vinitrd : NULL, .fields = fields };
  if ((rc = fill(&b, arg))) goto fail; /* VM_DONE too: nothing to keep */
  if (vm_interrupted()) {
    rc = vm_fail_interrupted();
    goto fail;
  }
  {
    CLEANUP_VIRVOL virStorageVolPtr dv = virStorageVolLookupByName(pool, vdisk);
    dpath = dv ? virStorageVolGetPath(dv) : NULL;
  }
  struct vm_imginfo info = { 0 };
  if (!dpath || (rc = vm_image_info(conn, dpath, &info))) {
    if (!rc) rc = vm_fail_virt("cannot find the template's disk volume");
    goto fail;
  }
  json_object_object_add(rec, "state", json_object_new_string("complete"));
  json_object_object_del(rec, "run");
  json_object_object_foreach(fields, key, val) json_object_object_add(rec, key, json_object_get(val));
  json_object_object_add(rec, "disk", json_object_new_string(vdisk));
  json_object_object_add(rec, "virtual_size", json_object_new_int64((int64_t)info.capacity));
  vm_imginfo_free(&info);
  if (kernel) json_object_object_add(rec, "kernel", json_object_new_string(vkernel));
  if (initrd) json_object_object_add(rec, "initrd", json_object_new_string(vinitrd));
  if (b.cmdline) json_object_object_add(rec, "cmdline", json_object_new_string(b.cmdline));
  if ((rc = vm_template_write_record(recvol, rec))) goto fail;
  vm_remove_tree(scratch);
  vm_undo_forget(&undo);
  goto out;
fail:
  vm_undo_run(&undo);
out:
  vm_undo_forget(&undo);
  return rc;
}
