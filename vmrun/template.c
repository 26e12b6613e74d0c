/* vmrun template create|list|delete|push. A template lives in a libvirt storage
 * pool of each host (vm_default_template_pool(), or --pool) as volumes named after
 * it: NAME.qcow2 (the sealed disk, read-only), NAME.template (its record: what a
 * clone inherits, as JSON), and NAME.vmlinuz and NAME.initrd for a direct-boot
 * guest. The record is written first and marked complete last, so that a killed
 * run leaves a record naming what it made: the next run on that template, holding
 * its lock, removes it. */
#include <errno.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vmrun.h"

static const struct vm_column template_cols[] = {
  { "name", "NAME", VM_COL_STR },
  { "size", "SIZE", VM_COL_BYTES },
  { "allocated", "ALLOCATED", VM_COL_BYTES },
  { "vcpus", "VCPUS", VM_COL_INT },
  { "memory", "MEMORY", VM_COL_BYTES },
  { "clones", "CLONES", VM_COL_INT },
  { "created", "CREATED", VM_COL_STR },
  { "hosts", "HOSTS", VM_COL_STR },
  { NULL, NULL, 0 },
};

static char *vol_name(const char *name, const char *suffix) { return vm_template_vol_name(name, suffix); }

static const char *jstr(json_object *j, const char *key)
{
  json_object *v;
  return json_object_object_get_ex(j, key, &v) && json_object_is_type(v, json_type_string) ? json_object_get_string(v)
                                                                                           : NULL;
}

/* The disk image of a template, flattened and sealed. libguestfs works on local
 * files: on a remote host the image is brought here, sealed, and sent back. */
static int make_disk(virConnectPtr conn, virStoragePoolPtr pool, struct vm_undo *u, const struct vm_disk *boot,
                     const char *volname, const char *scratch)
{
  CLEANUP_VIRVOL virStorageVolPtr src = NULL, dst = NULL;
  int rc = vm_vol_find(conn, boot->source, &src);
  if (rc && rc != VM_EXIT_NOTFOUND) return rc;
  bool local = vm_conn_is_local(conn);
  if (rc == VM_EXIT_NOTFOUND && !local)
    return vm_fail(VM_EXIT_FAIL, "cannot make a template of '%s': it is in no storage pool of %s", boot->source,
                   vm_conn_host_name(conn));
  vm_progress("copying the disk", 0, 0);
  if (src) {
    /* libvirt copies with qemu-img convert: the chain comes out flattened. */
    struct vm_volspec spec = { .name = volname, .format = "qcow2", .capacity = 0, .mode = 0444 };
    rc = vm_vol_create_from(pool, &spec, src, &dst);
    vm_progress_end();
    if (rc) return rc;
    CLEANUP_FREE char *path = virStorageVolGetPath(dst);
    vm_undo_volume(u, conn, path);
    if (local) return vm_gfs_seal_disk(path);
    CLEANUP_FREE char *copy = vm_strdup_printf("%s/disk.qcow2", scratch);
    if ((rc = vm_vol_download_file(dst, copy)) || (rc = vm_gfs_seal_disk(copy))) return rc;
    /* An upload does not truncate: the sealed image goes into a new, empty volume. */
    if (virStorageVolDelete(dst, 0) < 0) return vm_fail_virt("cannot replace '%s'", volname);
    virStorageVolFree(dst);
    dst = NULL;
    if ((rc = vm_template_new_volume(conn, pool, u, volname, "raw", 0, 0444, &dst))) return rc;
    return vm_vol_upload_file(dst, copy);
  }
  /* A local disk in no pool: flattened here, then sent into the pool. */
  CLEANUP_FREE char *copy = vm_strdup_printf("%s/disk.qcow2", scratch);
  char *conv[] = { "qemu-img", "convert", "-q", "-f", boot->format ? boot->format : "raw", "-O", "qcow2",
                   boot->source, copy, NULL };
  rc = vm_run_checked(conv, NULL);
  vm_progress_end();
  if (rc || (rc = vm_gfs_seal_disk(copy))) return rc;
  if ((rc = vm_template_new_volume(conn, pool, u, volname, "raw", 0, 0444, &dst))) return rc;
  return vm_vol_upload_file(dst, copy);
}

static char *o_from, *o_description, *o_pool, *o_dest_pool;

static struct poptOption pool_option[] = {
  { "pool", '\0', POPT_ARG_STRING, &o_pool, 0, "the storage pool templates live in (default: $VMKIT_TEMPLATE_POOL, else vmkit-templates)", "POOL" },
  POPT_TABLEEND
};
#define POOL_OPTION { NULL, '\0', POPT_ARG_INCLUDE_TABLE, pool_option, 0, NULL, NULL }

static struct poptOption create_options[] = {
  { "from", '\0', POPT_ARG_STRING, &o_from, 0, "the shut-off VM whose boot disk becomes the template", "VM" },
  { "description", '\0', POPT_ARG_STRING, &o_description, 0, "a line about the template", "TEXT" },
  POOL_OPTION,
  VM_POPT_LOCK,
  VM_POPT_COMMON,
  POPT_TABLEEND
};

/* What template create makes between the record and its completion: the sealed
 * disk, the kernel and initrd the VM boots, and what a clone inherits. */
struct create_fill {
  const struct vm_disk *boot;
  const char *kernel, *initrd, *cmdline;
  long long vcpus, mem_kib;
};

static int create_fill(struct vm_template_build *b, void *arg)
{
  const struct create_fill *f = arg;
  int rc;
  if ((rc = make_disk(b->conn, b->pool, b->undo, f->boot, b->vdisk, b->scratch))) return rc;
  if (f->kernel && (rc = vm_template_copy_boot_file(b->conn, b->pool, b->undo, f->kernel, b->vkernel))) return rc;
  if (f->initrd && (rc = vm_template_copy_boot_file(b->conn, b->pool, b->undo, f->initrd, b->vinitrd))) return rc;
  json_object_object_add(b->fields, "source", json_object_new_string(o_from));
  if (o_description) json_object_object_add(b->fields, "description", json_object_new_string(o_description));
  json_object_object_add(b->fields, "vcpus", json_object_new_int((int)f->vcpus));
  json_object_object_add(b->fields, "memory", json_object_new_int64(f->mem_kib * 1024));
  b->cmdline = f->cmdline;
  return 0;
}

static int template_create(int argc, char **argv)
{
  CLEANUP_POPT poptContext ctx = NULL;
  const char **args;
  int nargs;
  int rc = vm_parse(&ctx, argc, argv, create_options, "NAME",
                    "Seal a shut-off VM's boot disk into a read-only template.", 1, 1, &args, &nargs);
  if (rc) return rc == VM_DONE ? 0 : rc;
  const char *name = args[0];
  if ((rc = vm_check_name("template", name))) return rc;
  if (!o_from) return vm_usage_error("--from VM is required");

  CLEANUP_VIRCONN virConnectPtr conn = NULL;
  CLEANUP_VIRDOMAIN virDomainPtr dom = NULL;
  CLEANUP_FREE char *other = NULL;
  if ((rc = vm_open_locked(o_from, &conn, &dom, &other))) return rc;
  if (other)
    return vm_fail(VM_EXIT_STATE, "VM '%s' has an unfinished %s: run vmsnap on it first", o_from, other);
  if (vm_domain_state(dom) != VIR_DOMAIN_SHUTOFF)
    return vm_fail(VM_EXIT_STATE, "VM '%s' is %s: stop it before making a template of it", o_from,
                   vm_state_name(vm_domain_state(dom)));
  CLEANUP_XMLDOC xmlDocPtr doc = vm_domain_doc(dom, VIR_DOMAIN_XML_INACTIVE);
  if (!doc) return VM_EXIT_FAIL;
  if (vm_domain_encrypted(doc))
    return vm_fail(VM_EXIT_STATE, "VM '%s' has encrypted disks: a template's image is read in clear by every clone, "
                   "so make the template from an unencrypted VM", o_from);
  struct vm_disk *disks;
  size_t nd;
  vm_domain_disks(doc, &disks, &nd);
  const struct vm_disk *boot = NULL;
  for (size_t i = 0; i < nd && !boot; i++)
    if (disks[i].device && strcmp(disks[i].device, "disk") == 0 && disks[i].source) boot = &disks[i];
  CLEANUP_XPATHCTX xmlXPathContextPtr xp = vm_xpath_ctx(doc);
  CLEANUP_FREE char *kernel = vm_xpath_str(xp, "/domain/os/kernel");
  CLEANUP_FREE char *initrd = vm_xpath_str(xp, "/domain/os/initrd");
  CLEANUP_FREE char *cmdline = vm_xpath_str(xp, "/domain/os/cmdline");
  long long vcpus = vm_xpath_ll(xp, "/domain/vcpu", 1);
  long long mem_kib = vm_xpath_ll(xp, "/domain/memory", 0);
  if (!boot) {
    rc = vm_fail(VM_EXIT_STATE, "VM '%s' has no boot disk", o_from);
  } else {
    struct create_fill f = { boot, kernel, initrd, cmdline, vcpus, mem_kib };
    rc = vm_template_make(conn, o_pool, name, kernel != NULL, initrd != NULL, create_fill, &f);
    if (rc == 0)
      vm_info("created template '%s' from VM '%s' in pool '%s' of %s", name, o_from,
              o_pool ? o_pool : vm_default_template_pool(), vm_conn_host_name(conn));
  }
  vm_disks_free(disks, nd);
  return rc;
}

/* ---- list ----------------------------------------------------------------------------- */

struct seen {
  json_object *row;
  char *id;
};

/* The templates of one host, merged into rows by name and id. */
static int list_host(virConnectPtr conn, const char *host, json_object *rows, struct seen **seen, size_t *nseen)
{
  CLEANUP_VIRPOOL virStoragePoolPtr pool = NULL;
  int rc = vm_template_open_pool(conn, o_pool, false, &pool);
  if (rc == VM_EXIT_NOTFOUND) return 0;
  if (rc) return rc;
  if (virStoragePoolRefresh(pool, 0) < 0) virResetLastError(); /* busy: as libvirt last read it */
  virStorageVolPtr *vols = NULL;
  int n = virStoragePoolListAllVolumes(pool, &vols, 0);
  if (n < 0) return vm_fail_virt("cannot list the volumes of pool '%s'", virStoragePoolGetName(pool));
  for (int i = 0; i < n; i++) {
    const char *vname = virStorageVolGetName(vols[i]);
    size_t len = strlen(vname);
    if (len <= 9 || strcmp(vname + len - 9, ".template") != 0) continue;
    CLEANUP_FREE char *name = vm_strdup_printf("%.*s", (int)(len - 9), vname);
    struct vm_template t;
    if (vm_check_name("template", name) != 0) continue;
    CLEANUP_JSON json_object *j = vm_template_read_record(pool, name);
    if (!j) continue;
    vm_template_from_record(pool, name, j, &t);
    if (!vm_template_complete(&t)) {
      vm_warn("template '%s' on %s is incomplete (an interrupted create or push): 'vmrun template delete %s' "
              "removes it", name, host, name);
      vm_template_free(&t);
      continue;
    }
    struct vm_strv users = { 0 };
    if (t.disk) vm_image_users(conn, t.disk, NULL, &users);
    struct vm_imginfo info = { 0 };
    if (t.disk) vm_image_info(conn, t.disk, &info);
    json_object *row = NULL;
    for (size_t s = 0; s < *nseen && !row; s++)
      if (strcmp(json_object_get_string(json_object_object_get(((*seen)[s]).row, "name")), name) == 0 &&
          t.id && (*seen)[s].id && strcmp((*seen)[s].id, t.id) == 0)
        row = (*seen)[s].row;
    if (!row) {
      row = json_object_new_object();
      json_object_object_add(row, "name", json_object_new_string(name));
      json_object_object_add(row, "id", t.id ? json_object_new_string(t.id) : NULL);
      json_object_object_add(row, "size", json_object_new_int64((int64_t)t.virtual_size));
      json_object_object_add(row, "allocated", json_object_new_int64((int64_t)info.allocation));
      json_object_object_add(row, "vcpus", json_object_new_int((int)t.vcpus));
      json_object_object_add(row, "memory", json_object_new_int64((int64_t)t.memory));
      json_object_object_add(row, "clones", json_object_new_int(0));
      const char *keys[] = { "created", "source", "description" };
      for (size_t k = 0; k < 3; k++)
        if (jstr(j, keys[k])) json_object_object_add(row, keys[k], json_object_new_string(jstr(j, keys[k])));
      json_object_object_add(row, "hosts", json_object_new_string(""));
      json_object_array_add(rows, row);
      *seen = realloc(*seen, (*nseen + 1) * sizeof **seen);
      (*seen)[(*nseen)++] = (struct seen){ row, vm_strdup(t.id) };
    }
    int64_t clones = json_object_get_int64(json_object_object_get(row, "clones")) + (int64_t)users.n;
    json_object_object_add(row, "clones", json_object_new_int64(clones));
    const char *hosts = json_object_get_string(json_object_object_get(row, "hosts"));
    CLEANUP_FREE char *nh = vm_strdup_printf("%s%s%s", hosts, *hosts ? "," : "", host);
    json_object_object_add(row, "hosts", json_object_new_string(nh));
    vm_imginfo_free(&info);
    vm_strv_free(&users);
    vm_template_free(&t);
  }
  for (int i = 0; i < n; i++) virStorageVolFree(vols[i]);
  free(vols);
  return 0;
}

static struct poptOption list_options[] = { POOL_OPTION, VM_POPT_COMMON, POPT_TABLEEND };

static int template_list(int argc, char **argv)
{
  CLEANUP_POPT poptContext ctx = NULL;
  const char **args;
  int nargs;
  int rc = vm_parse(&ctx, argc, argv, list_options, "",
                    "List templates, how many clones each has, and which hosts of the hosts file hold them.",
                    0, 0, &args, &nargs);
  if (rc) return rc == VM_DONE ? 0 : rc;
  CLEANUP_JSON json_object *rows = json_object_new_array();
  struct seen *seen = NULL;
  size_t nseen = 0;
  /* The hosts of the hosts file when there is one; else the connection's host. */
  struct vm_hosts hosts = { 0 };
  bool named = vm_opts.hosts_file || (getenv("VMKIT_HOSTS") && *getenv("VMKIT_HOSTS"));
  if (!vm_opts.uri && (named || access(vm_hosts_path(), F_OK) == 0)) {
    if ((rc = vm_hosts_load(NULL, &hosts))) return rc;
  }
  if (hosts.n) {
    for (size_t i = 0; i < hosts.n && rc == 0; i++) {
      virConnectPtr c = vm_connect_to(hosts.v[i].uri);
      if (!c) {
        vm_warn("host '%s' is not reachable: its templates are not listed", hosts.v[i].name);
        continue;
      }
      rc = list_host(c, hosts.v[i].name, rows, &seen, &nseen);
      vm_conn_forget(c);
      virConnectClose(c);
    }
  } else {
    CLEANUP_VIRCONN virConnectPtr conn = vm_connect();
    if (!conn) rc = VM_EXIT_FAIL;
    else rc = list_host(conn, vm_conn_host_name(conn), rows, &seen, &nseen);
  }
  vm_hosts_free(&hosts);
  for (size_t i = 0; i < nseen; i++) free(seen[i].id);
  free(seen);
  if (rc) return rc;
  return vm_print_list(rows, template_cols);
}

/* ---- delete --------------------------------------------------------------------------- */

static struct poptOption delete_options[] = { POOL_OPTION, VM_POPT_LOCK, VM_POPT_COMMON, POPT_TABLEEND };

static int delete_one(virConnectPtr conn, virStoragePoolPtr pool, const char *name)
{
  int rc = vm_check_name("template", name);
  if (rc) return rc;
  CLEANUP_JSON json_object *j = NULL;
  /* An incomplete one is removed by vm_template_claim() itself. */
  CLEANUP_FREE char *rname = vol_name(name, "template");
  json_object *probe = vm_template_read_record(pool, name);
  if (!probe)
    return vm_fail(VM_EXIT_NOTFOUND, "no such template '%s' in pool '%s' of %s", name, virStoragePoolGetName(pool),
                   vm_conn_host_name(conn));
  json_object_put(probe);
  if ((rc = vm_template_claim(conn, pool, name, false, &j))) return rc;
  if (!j) {
    vm_info("deleted the incomplete template '%s'", name);
    return 0;
  }
  struct vm_template t;
  vm_template_from_record(pool, name, j, &t);
  struct vm_strv users = { 0 };
  if (t.disk) rc = vm_image_users(conn, t.disk, NULL, &users);
  if (rc == 0 && users.n) {
    CLEANUP_FREE char *list = vm_strv_join_quoted(users.v);
    rc = vm_fail(VM_EXIT_STATE, "template '%s' has %zu clone%s: %s", name, users.n, users.n == 1 ? "" : "s", list);
  }
  vm_strv_free(&users);
  if (rc == 0) {
    /* Marked first, so that a kill halfway leaves an incomplete template that the
     * next run removes, not a record whose disk is gone. */
    CLEANUP_VIRVOL virStorageVolPtr recvol = virStorageVolLookupByName(pool, rname);
    json_object_object_add(j, "state", json_object_new_string("deleting"));
    if (!recvol) rc = vm_fail_virt("cannot find the record of template '%s'", name);
    else rc = vm_template_write_record(recvol, j);
  }
  if (rc == 0) rc = vm_template_remove(pool, name);
  if (rc == 0) vm_info("deleted template '%s'", name);
  vm_template_free(&t);
  return rc;
}

static int template_delete(int argc, char **argv)
{
  CLEANUP_POPT poptContext ctx = NULL;
  const char **args;
  int nargs;
  int rc = vm_parse(&ctx, argc, argv, delete_options, "NAME...",
                    "Delete templates; a template with clones is kept.", 1, -1, &args, &nargs);
  if (rc) return rc == VM_DONE ? 0 : rc;
  CLEANUP_VIRCONN virConnectPtr conn = vm_connect();
  if (!conn) return VM_EXIT_FAIL;
  CLEANUP_VIRPOOL virStoragePoolPtr pool = NULL;
  rc = vm_template_open_pool(conn, o_pool, false, &pool);
  if (rc == VM_EXIT_NOTFOUND)
    return vm_fail(VM_EXIT_NOTFOUND, "no such template '%s' on %s (no storage pool '%s')", args[0],
                   vm_conn_host_name(conn), o_pool ? o_pool : vm_default_template_pool());
  if (rc) return rc;
  int first = 0;
  for (int i = 0; i < nargs; i++) {
    rc = delete_one(conn, pool, args[i]);
    if (rc && !first) first = rc;
  }
  return first;
}

/* ---- push ----------------------------------------------------------------------------- */

static struct poptOption push_options[] = {
  POOL_OPTION,
  { "dest-pool", '\0', POPT_ARG_STRING, &o_dest_pool, 0, "the template pool on the destination (default: as --pool)", "POOL" },
  VM_POPT_LOCK,
  VM_POPT_COMMON,
  POPT_TABLEEND
};

static int push_volume(virConnectPtr dconn, virStoragePoolPtr dpool, struct vm_undo *u, const char *src_path,
                       virConnectPtr sconn, const char *as, unsigned mode)
{
  CLEANUP_VIRVOL virStorageVolPtr src = NULL, dst = NULL;
  int rc = vm_vol_find(sconn, src_path, &src);
  if (rc == VM_EXIT_NOTFOUND) rc = vm_fail(VM_EXIT_FAIL, "template volume '%s' is missing", src_path);
  if (rc || (rc = vm_template_new_volume(dconn, dpool, u, as, "raw", 0, mode, &dst))) return rc;
  CLEANUP_FREE char *what = vm_strdup_printf("pushing %s", as);
  return vm_vol_copy(src, dst, what);
}

static int template_push(int argc, char **argv)
{
  CLEANUP_POPT poptContext ctx = NULL;
  const char **args;
  int nargs;
  int rc = vm_parse(&ctx, argc, argv, push_options, "NAME HOST-OR-URI",
                    "Copy a template to another host's template pool (only allocated data crosses).", 2, 2, &args,
                    &nargs);
  if (rc) return rc == VM_DONE ? 0 : rc;
  const char *name = args[0];
  if ((rc = vm_check_name("template", name))) return rc;
  CLEANUP_VIRCONN virConnectPtr sconn = vm_connect();
  if (!sconn) return VM_EXIT_FAIL;
  CLEANUP_VIRCONN virConnectPtr dconn = vm_connect_to(args[1]);
  if (!dconn) return VM_EXIT_FAIL;
  const char *suuid = vm_conn_host_uuid(sconn), *duuid = vm_conn_host_uuid(dconn);
  if (!suuid || !duuid) return VM_EXIT_FAIL;

  /* Everything the exit path releases is declared before the first goto. */
  CLEANUP_VIRPOOL virStoragePoolPtr spool = NULL, dpool = NULL;
  CLEANUP_JSON json_object *sj = NULL, *dj = NULL, *rec = NULL;
  CLEANUP_VIRVOL virStorageVolPtr recvol = NULL;
  CLEANUP_FREE char *vdisk = vol_name(name, "qcow2"), *vkernel = vol_name(name, "vmlinuz");
  CLEANUP_FREE char *vinitrd = vol_name(name, "initrd"), *vrec = vol_name(name, "template");
  struct vm_template t = { 0 };
  struct vm_undo undo = { 0 };
  if ((rc = vm_template_open_pool(sconn, o_pool, false, &spool))) {
    if (rc == VM_EXIT_NOTFOUND)
      rc = vm_fail(VM_EXIT_NOTFOUND, "no such template '%s' on %s (no storage pool '%s')", name,
                   vm_conn_host_name(sconn), o_pool ? o_pool : vm_default_template_pool());
    return rc;
  }
  if ((rc = vm_template_claim(sconn, spool, name, true, &sj))) return rc;
  if (!sj) return vm_fail(VM_EXIT_NOTFOUND, "no such template '%s' on %s", name, vm_conn_host_name(sconn));
  vm_template_from_record(spool, name, sj, &t);
  if (!t.disk) {
    rc = vm_fail(VM_EXIT_FAIL, "template '%s' is damaged: its disk volume is missing", name);
    goto out;
  }
  const char *dpname = o_dest_pool ? o_dest_pool : o_pool;
  if (strcmp(suuid, duuid) == 0 && strcmp(dpname ? dpname : vm_default_template_pool(),
                                          o_pool ? o_pool : vm_default_template_pool()) == 0) {
    rc = vm_fail(VM_EXIT_USAGE, "'%s' is the host the template comes from", args[1]);
    goto out;
  }
  if ((rc = vm_template_open_pool(dconn, dpname, true, &dpool)) || (rc = vm_template_claim(dconn, dpool, name, false, &dj)))
    goto out;
  if (dj) {
    const char *did = jstr(dj, "id");
    if (did && t.id && strcmp(did, t.id) == 0) {
      /* A shared pool (NFS) holds it already, or an earlier push did. */
      vm_info("%s holds template '%s' already", vm_conn_host_name(dconn), name);
      goto out;
    }
    rc = vm_fail(VM_EXIT_STATE, "%s has another template named '%s' (a different id): delete it there first",
                 vm_conn_host_name(dconn), name);
    goto out;
  }
  if ((rc = vm_template_names_free(dconn, dpool, name))) goto out;

  vm_catch_signals();
  rec = vm_template_new_record(name, t.id ? t.id : "", t.kernel != NULL, t.initrd != NULL);
  if ((rc = vm_template_new_volume(dconn, dpool, &undo, vrec, "raw", 65536, 0644, &recvol)) || (rc = vm_template_write_record(recvol, rec)))
    goto fail;
  if ((rc = push_volume(dconn, dpool, &undo, t.disk, sconn, vdisk, 0444))) goto fail;
  if (t.kernel && (rc = push_volume(dconn, dpool, &undo, t.kernel, sconn, vkernel, 0444))) goto fail;
  if (t.initrd && (rc = push_volume(dconn, dpool, &undo, t.initrd, sconn, vinitrd, 0444))) goto fail;
  if ((rc = vm_pool_refresh(dpool))) goto fail;
  /* The same record, with the same id: the copies are the same template. */
  json_object *copy = NULL;
  json_object_deep_copy(sj, &copy, NULL);
  json_object_object_add(copy, "pushed_from", json_object_new_string(vm_conn_host_name(sconn)));
  json_object_object_add(copy, "state", json_object_new_string("complete"));
  rc = vm_template_write_record(recvol, copy);
  json_object_put(copy);
  if (rc) goto fail;
  vm_undo_forget(&undo);
  vm_info("pushed template '%s' to %s", name, vm_conn_host_name(dconn));
  goto out;
fail:
  vm_undo_run(&undo);
out:
  vm_undo_forget(&undo);
  vm_template_free(&t);
  return rc;
}

/* The template's disk as this machine reads it, for the customization of a clone
 * (libguestfs works on local files); NULL after a message. */
char *template_local_disk(virConnectPtr conn, const struct vm_template *t)
{
  char *path = vm_template_local_disk(conn, t);
  if (!path)
    vm_fail(VM_EXIT_STATE, "cannot customize a clone on %s: libguestfs works on local files, and this machine has "
            "no copy of template '%s' (push it here too, or create the VM without --hostname, --ssh-key and "
            "--root-password-file)", vm_conn_host_name(conn), t->name);
  return path;
}

static const struct vm_verb template_verbs[] = {
  { "create", template_create, "seal a shut-off VM's boot disk into a template" },
  { "list", template_list, "list templates, and the hosts that hold them" },
  { "delete", template_delete, "delete templates that have no clones" },
  { "push", template_push, "copy a template to another host's template pool" },
  { NULL, NULL, NULL },
};

int cmd_template(int argc, char **argv)
{
  return vm_dispatch(argc, argv, template_verbs, "Templates: sealed, read-only boot disks that VMs clone.");
}
