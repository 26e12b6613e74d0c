/* vmsnap verify: every image of every disk's chain is there, links to the next,
 * and passes `qemu-img check`; every snapshot's frozen images, internal snapshots
 * and memory files are where libvirt's records say; and nothing a killed run left
 * is pending (a journal record, a block job nobody follows, a file named for the VM
 * that nothing uses). The problems found are the result (stdout, one a row); exit
 * 6 when there is any. It takes no lock and changes nothing. */
#include <libgen.h>
#include <string.h>
#include <unistd.h>

#include "vmsnap.h"

static const struct vm_column cols[] = {
  { "object", "OBJECT", VM_COL_STR },
  { "problem", "PROBLEM", VM_COL_STR },
  { NULL, NULL, 0 },
};

static void problem(json_object *rows, const char *object, const char *fmt, ...) VM_PRINTF(3, 4);
static void problem(json_object *rows, const char *object, const char *fmt, ...)
{
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  json_object *r = json_object_new_object();
  json_object_object_add(r, "object", json_object_new_string(object));
  json_object_object_add(r, "problem", json_object_new_string(msg));
  json_object_array_add(rows, r);
}

static const char *member(json_object *o, const char *k)
{
  json_object *v;
  return json_object_object_get_ex(o, k, &v) && v ? json_object_get_string(v) : NULL;
}

/* qemu-img check: 0 clean, 1 not checked, 2 corrupt, 3 leaked clusters only. */
static void check_image(json_object *rows, const char *object, const char *file, const char *format)
{
  if (!format || strcmp(format, "qcow2") != 0) return; /* raw has nothing to check */
  char *argv[] = { "qemu-img", "check", "-U", "-q", "-f", "qcow2", (char *)file, NULL };
  CLEANUP_FREE char *err = NULL;
  int rc = vm_run(argv, NULL, &err);
  if (rc == 3) vm_warn("%s: '%s' has leaked clusters (harmless; qemu-img check -r leaks repairs them)", object, file);
  else if (rc == 2) problem(rows, object, "'%s' is corrupt (qemu-img check)", file);
  else if (rc != 0) problem(rows, object, "'%s' cannot be checked: %s", file, err && *err ? strtok(err, "\n") : "qemu-img check failed");
}

/* Walks one chain image by image, so that a broken link is named; then checks
 * each image (on this machine only: libvirt has no API for qemu-img check), but
 * only when the chain under it opens (qemu-img check opens the backing files too)
 * and never the top of a running disk (in_use), which QEMU is writing and which
 * can look inconsistent from outside. */
static size_t walk_chain(virConnectPtr conn, json_object *rows, const char *object, const char *top, bool in_use,
                         struct vm_strv *seen)
{
  struct vm_strv files = { 0 }, formats = { 0 };
  CLEANUP_FREE char *cur = vm_strdup(top);
  CLEANUP_FREE char *child = NULL;
  bool broken = false;
  for (int depth = 0; cur && depth < 1024; depth++) {
    struct vm_imginfo info;
    int rc = vm_image_info(conn, cur, &info);
    if (rc == VM_EXIT_NOTFOUND) {
      if (child) problem(rows, object, "backing file '%s' of '%s' is missing", cur, child);
      else problem(rows, object, "image '%s' is missing", cur);
      broken = true;
      break;
    }
    if (rc) {
      problem(rows, object, "'%s' cannot be read: %s", cur, "see the message above");
      broken = true;
      break;
    }
    if (vm_strv_contains(seen->v, info.path)) { /* the rest was walked through another disk or snapshot */
      vm_imginfo_free(&info);
      break;
    }
    vm_strv_add(seen, info.path);
    vm_strv_add(&files, info.path);
    vm_strv_add(&formats, info.format);
    free(child);
    child = vm_strdup(info.path);
    free(cur);
    cur = info.backing ? vm_strdup(info.backing) : NULL;
    vm_imginfo_free(&info);
  }
  for (size_t i = 0; !broken && vm_conn_is_local(conn) && i < files.n; i++) {
    if (i == 0 && in_use) {
      vm_debug("%s: not checking '%s': the running VM writes it", object, files.v[i]);
      continue;
    }
    check_image(rows, object, files.v[i], formats.v[i]);
  }
  size_t n = files.n;
  vm_strv_free(&files);
  vm_strv_free(&formats);
  return n;
}

static bool has_internal_snapshot(const char *image, const char *name)
{
  char *argv[] = { "qemu-img", "info", "-U", "--output=json", (char *)image, NULL };
  CLEANUP_FREE char *out = NULL;
  if (vm_run(argv, &out, NULL) != 0) return false;
  CLEANUP_JSON json_object *info = json_tokener_parse(out);
  json_object *list;
  if (!info || !json_object_object_get_ex(info, "snapshots", &list)) return false;
  for (size_t i = 0; i < json_object_array_length(list); i++) {
    const char *n = member(json_object_array_get_idx(list, i), "name");
    if (n && strcmp(n, name) == 0) return true;
  }
  return false;
}

/* What a killed run left: its journal record, and block jobs that no run holding
 * the VM's lock follows. */
static void check_leftovers(virConnectPtr conn, virDomainPtr dom, json_object *rows)
{
  CLEANUP_XMLDOC xmlDocPtr rec = NULL;
  if (vm_journal_read(dom, &rec) == 0 && rec) {
    CLEANUP_FREE char *op = vm_journal_attr(rec, "op"), *tool = vm_journal_attr(rec, "tool");
    CLEANUP_FREE char *pid = vm_journal_attr(rec, "pid"), *started = vm_journal_attr(rec, "started");
    problem(rows, "journal", "an unfinished %s by %s (pid %s, %s): the next %s run on the VM finishes it",
            op ? op : "?", tool ? tool : "?", pid ? pid : "?", started ? started : "?",
            tool && strcmp(tool, "vmrun") == 0 ? "vmrun or vmsnap" : "vmsnap");
  }
  virResetLastError();
  if (virDomainIsActive(dom) != 1) return;
  char uuid[VIR_UUID_STRING_BUFLEN];
  const char *host = vm_conn_host_uuid(conn);
  pid_t holder = -1;
  if (host && virDomainGetUUIDString(dom, uuid) == 0) {
    CLEANUP_FREE char *key = vm_strdup_printf("%s.vm.%s", host, uuid);
    holder = vm_lock_holder(key);
  }
  CLEANUP_XMLDOC xmlDocPtr doc = vm_domain_doc(dom, 0);
  struct vm_disk *d = NULL;
  size_t nd = 0;
  if (doc) vm_domain_disks(doc, &d, &nd);
  for (size_t i = 0; i < nd; i++) {
    virDomainBlockJobInfo info;
    if (!d[i].target || virDomainGetBlockJobInfo(dom, d[i].target, &info, 0) != 1) continue;
    if (holder > 0) continue; /* a run holds the VM: the job is its own */
    bool ready = info.end > 0 && info.cur == info.end;
    problem(rows, d[i].target, "a block job (%s) runs on it%s and no vmkit run follows it: the next vmsnap run on the "
            "VM finishes it", info.type == VIR_DOMAIN_BLOCK_JOB_TYPE_ACTIVE_COMMIT ? "active commit" :
            info.type == VIR_DOMAIN_BLOCK_JOB_TYPE_COMMIT ? "commit" : "copy or pull",
            ready ? ", ready at 100 % for its pivot," : "");
  }
  vm_disks_free(d, nd);
  virResetLastError();
}

/* Files named for the VM in the folders of its images that no chain, snapshot or
 * record of it uses: what a killed run made and nothing removed. */
static void check_strays(virConnectPtr conn, const char *vm, const struct snaps *s, const struct vm_strv *seen,
                         json_object *rows)
{
  struct vm_strv used = { 0 }, dirs = { 0 };
  for (size_t i = 0; i < seen->n; i++) vm_strv_add(&used, seen->v[i]);
  for (size_t i = 0; i < s->n; i++) {
    if (s->v[i].memfile) vm_strv_add(&used, s->v[i].memfile);
    for (size_t j = 0; j < s->v[i].ndisks; j++) {
      if (s->v[i].disks[j].overlay) vm_strv_add(&used, s->v[i].disks[j].overlay);
      if (s->v[i].disks[j].base) vm_strv_add(&used, s->v[i].disks[j].base);
    }
  }
  for (size_t i = 0; i < used.n; i++) {
    CLEANUP_FREE char *copy = vm_strdup(used.v[i]);
    const char *dir = dirname(copy);
    if (!vm_strv_contains(dirs.v, dir)) vm_strv_add(&dirs, dir);
  }
  /* Names of other VMs that start with this one's: their files are theirs. */
  struct vm_strv longer = { 0 };
  virDomainPtr *doms = NULL;
  int nd = virConnectListAllDomains(conn, &doms, 0);
  for (int i = 0; i < nd; i++) {
    const char *n = virDomainGetName(doms[i]);
    if (strcmp(n, vm) != 0 && strncmp(n, vm, strlen(vm)) == 0) vm_strv_add(&longer, n);
    virDomainFree(doms[i]);
  }
  free(doms);
  for (size_t i = 0; i < dirs.n; i++) {
    CLEANUP_FREE char *probe = vm_strdup_printf("%s/.", dirs.v[i]);
    CLEANUP_VIRPOOL virStoragePoolPtr pool = NULL;
    if (vm_pool_of_path(conn, probe, &pool) != 0 || vm_pool_refresh(pool) != 0) continue;
    virStorageVolPtr *vols = NULL;
    int n = virStoragePoolListAllVolumes(pool, &vols, 0);
    for (int v = 0; v < n; v++) {
      CLEANUP_FREE char *path = virStorageVolGetPath(vols[v]);
      bool other = false;
      for (size_t k = 0; path && k < longer.n && !other; k++) other = vm_image_named_for(path, longer.v[k]);
      struct vm_strv users = { 0 };
      if (path && !other && vm_image_named_for(path, vm) && !vm_strv_contains(used.v, path) &&
          vm_image_users(conn, path, NULL, &users) == 0 && users.n == 0)
        problem(rows, "storage", "'%s' is named for the VM but nothing of it uses it (left by an interrupted run?)", path);
      vm_strv_free(&users);
      virStorageVolFree(vols[v]);
    }
    free(vols);
  }
  virResetLastError();
  vm_strv_free(&used);
  vm_strv_free(&dirs);
  vm_strv_free(&longer);
}

int cmd_verify(int argc, char **argv)
{
  struct poptOption table[] = { VM_POPT_COMMON, POPT_TABLEEND };
  CLEANUP_POPT poptContext ctx = NULL;
  const char **args;
  int nargs;
  int rc = vm_parse(&ctx, argc, argv, table, "VM",
                    "Check every image of a VM's disks and snapshots; exit 6 when something is wrong.",
                    1, 1, &args, &nargs);
  if (rc) return rc == VM_DONE ? 0 : rc;
  const char *vm = args[0];
  CLEANUP_VIRCONN virConnectPtr conn = NULL;
  CLEANUP_VIRDOMAIN virDomainPtr dom = NULL;
  if ((rc = vm_open(vm, &conn, &dom))) return rc;
  if (!vm_conn_is_local(conn))
    vm_info("checking the links between the images of '%s' on %s through libvirt; qemu-img check runs only on this "
            "machine's files", vm, vm_conn_host_name(conn));
  struct snaps s;
  if ((rc = snaps_load(dom, &s))) return rc;
  CLEANUP_JSON json_object *rows = json_object_new_array();
  struct vm_strv seen = { 0 };
  size_t images = 0;

  CLEANUP_XMLDOC xmlDocPtr doc = vm_domain_doc(dom, 0);
  if (!doc) {
    snaps_free(&s);
    return VM_EXIT_FAIL;
  }
  struct vm_disk *d;
  size_t nd;
  vm_domain_disks(doc, &d, &nd);
  for (size_t i = 0; i < nd; i++) {
    if (!d[i].source || !d[i].type || strcmp(d[i].type, "file") != 0) continue;
    if (d[i].device && strcmp(d[i].device, "cdrom") == 0) {
      if (!vm_path_exists(conn, d[i].source)) problem(rows, d[i].target, "CD-ROM image '%s' is missing", d[i].source);
      continue;
    }
    images += walk_chain(conn, rows, d[i].target, d[i].source, virDomainIsActive(dom) == 1, &seen);
  }
  vm_disks_free(d, nd);

  for (size_t i = 0; i < s.n; i++) {
    const struct snap *p = &s.v[i];
    CLEANUP_FREE char *object = vm_strdup_printf("snapshot %s", p->name);
    for (size_t j = 0; j < p->ndisks; j++) {
      const struct snap_disk *sd = &p->disks[j];
      if (strcmp(sd->mode, "external") == 0) {
        if (!sd->base) problem(rows, object, "no frozen image recorded for %s", sd->target);
        else images += walk_chain(conn, rows, object, sd->base, false, &seen);
        /* The overlay the snapshot made, while it exists, stands on what it froze:
         * a record that says otherwise no longer describes the files. */
        struct vm_imginfo oi;
        if (sd->base && sd->overlay && vm_path_exists(conn, sd->base) && vm_image_info(conn, sd->overlay, &oi) == 0) {
          if (oi.backing && strcmp(oi.backing, sd->base) != 0)
            problem(rows, object, "overlay '%s' of %s stands on '%s', not on the image the snapshot froze ('%s')",
                    oi.path, sd->target, oi.backing, sd->base);
          vm_imginfo_free(&oi);
        }
        virResetLastError();
      } else if (strcmp(sd->mode, "internal") == 0) {
        if (!sd->base || !vm_path_exists(conn, sd->base))
          problem(rows, object, "image '%s' of %s is missing", sd->base ? sd->base : "?", sd->target);
        else if (vm_conn_is_local(conn) && !has_internal_snapshot(sd->base, p->name))
          problem(rows, object, "'%s' holds no internal snapshot '%s'", sd->base, p->name);
      }
    }
    if (strcmp(p->memory, "external") == 0 && (!p->memfile || !vm_path_exists(conn, p->memfile)))
      problem(rows, object, "memory file '%s' is missing", p->memfile ? p->memfile : "?");
  }
  check_leftovers(conn, dom, rows);
  check_strays(conn, vm, &s, &seen, rows);
  vm_strv_free(&seen);

  size_t nproblems = json_object_array_length(rows);
  if (nproblems || vm_opts.format == VM_FMT_JSON) rc = vm_print_list(rows, cols);
  if (nproblems) {
    if (rc == 0) rc = vm_fail(VM_EXIT_VERIFY, "VM '%s' failed verification: %zu problem%s", vm, nproblems,
                              nproblems == 1 ? "" : "s");
  } else {
    vm_info("VM '%s': %zu images and %zu snapshots verified", vm, images, s.n);
  }
  snaps_free(&s);
  return rc;
}
