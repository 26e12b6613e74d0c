/* vmbackup restore: a snapshot's disks written back as sparse images, each
 * chunk authenticated before a byte of it is written. */
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "rlock.h"
#include "fs.h"
#include "vmbackup.h"

struct rjob {
  struct vb_repo *repo;
  int fd;
  uint64_t off;
  size_t len;
  const unsigned char *id;
  atomic_int *error;
  char **why; /* the first failure's text */
  pthread_mutex_t *mu;
};

static void restore_chunk(void *arg)
{
  struct rjob *j = arg;
  if (atomic_load(j->error)) goto out;
  unsigned cs = j->repo->cfg.chunk_size;
  unsigned char *buf = malloc(cs);
  if (!buf) abort();
  size_t got;
  const char *why = NULL;
  int rc = vb_repo_read_chunk(j->repo, j->id, buf, cs, &got, &why);
  if (rc == 0 && got != j->len) rc = VM_EXIT_VERIFY, why = "a chunk's length differs from the disk's";
  if (rc == 0) {
    size_t done = 0;
    while (done < got) {
      ssize_t w = pwrite(j->fd, buf + done, got - done, (off_t)(j->off + done));
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) {
        rc = VM_EXIT_FAIL, why = strerror(errno);
        break;
      }
      done += (size_t)w;
    }
  }
  free(buf);
  if (rc) {
    pthread_mutex_lock(j->mu);
    if (!atomic_load(j->error)) {
      atomic_store(j->error, rc);
      *j->why = vm_strdup_printf("chunk at offset %llu: %s", (unsigned long long)j->off, why);
    }
    pthread_mutex_unlock(j->mu);
  }
out:
  free(j);
}

int vb_restore_disk(struct vb_repo *r, const struct vb_manifest *m, const struct vb_mdisk *d, int fd,
                    const char *label)
{
  if (ftruncate(fd, (off_t)d->size) < 0) return vm_fail_errno(VM_EXIT_FAIL, "cannot size the image of %s", label);
  unsigned cs = r->cfg.chunk_size;
  atomic_int error = 0;
  char *why = NULL;
  pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
  struct vm_workq *q = vm_workq_new(0, 16);
  for (size_t i = 0; i < d->nchunks && !atomic_load(&error); i++) {
    if (vb_manifest_hole(d, i)) continue; /* a hole stays a hole */
    struct rjob *j = malloc(sizeof *j);
    if (!j) abort();
    uint64_t off = (uint64_t)i * cs;
    *j = (struct rjob){ r, fd, off, (size_t)(d->size - off < cs ? d->size - off : cs), d->ids[i], &error, &why, &mu };
    vm_workq_push(q, restore_chunk, j);
    if (i % 64 == 0) vm_progress(label, off, d->size);
    if (vm_interrupted()) break;
  }
  vm_workq_free(q);
  vm_progress_end();
  int rc = atomic_load(&error);
  if (rc) {
    rc = vm_fail(rc, "snapshot %.12s, disk %s: %s", m->snapshot, d->target, why);
    free(why);
    return rc;
  }
  if (vm_interrupted()) return vm_fail_interrupted();
  if (fsync(fd) < 0) return vm_fail_errno(VM_EXIT_FAIL, "cannot flush the image of %s", label);
  return 0;
}

static int restore_to(struct vb_repo *r, const struct vb_manifest *m, const char *dir, const char *only)
{
  struct stat st;
  if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode)) return vm_fail(VM_EXIT_NOTFOUND, "no folder '%s'", dir);
  struct vm_undo undo = { 0 };
  int rc = 0;
  size_t done = 0;
  for (size_t i = 0; i < m->ndisks && !rc; i++) {
    const struct vb_mdisk *d = &m->disks[i];
    if (only && strcmp(only, d->target) != 0) continue;
    CLEANUP_FREE char *path = vm_strdup_printf("%s/%s.%s.raw", dir, m->vm, d->target);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
      rc = errno == EEXIST ? vm_fail(VM_EXIT_STATE, "'%s' exists: restore into another folder, or remove it", path)
                           : vm_fail_errno(VM_EXIT_FAIL, "cannot make '%s'", path);
      break;
    }
    vm_undo_local_file(&undo, path);
    CLEANUP_FREE char *label = vm_strdup_printf("%s %s", m->vm, d->target);
    rc = vb_restore_disk(r, m, d, fd, label);
    if (close(fd) < 0 && !rc) rc = vm_fail_errno(VM_EXIT_FAIL, "cannot write '%s'", path);
    if (!rc) {
      printf("%s\n", path);
      done++;
    }
  }
  if (!rc && only && !done) rc = vm_fail(VM_EXIT_NOTFOUND, "snapshot %.12s has no disk '%s'", m->snapshot, only);
  if (!rc) {
    CLEANUP_FREE char *xml = vm_strdup_printf("%s/%s.xml", dir, m->vm);
    int fd = open(xml, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) rc = errno == EEXIST ? vm_fail(VM_EXIT_STATE, "'%s' exists", xml) : vm_fail_errno(VM_EXIT_FAIL, "cannot make '%s'", xml);
    else {
      vm_undo_local_file(&undo, xml);
      size_t n = strlen(m->xml);
      if (write(fd, m->xml, n) != (ssize_t)n || fsync(fd) < 0) rc = vm_fail_errno(VM_EXIT_FAIL, "cannot write '%s'", xml);
      close(fd);
    }
  }
  if (rc) vm_undo_run(&undo);
  else vm_undo_forget(&undo);
  if (!rc && vm_fsync_dir(dir) < 0) vm_debug("cannot flush folder '%s'", dir);
  return rc;
}

/* The saved definition for a new VM: its name, no UUID and no MAC (libvirt makes
 * new ones), each backed-up disk on its new volume, no backing chain, no vmkit
 * record of a template or of unfinished work. Caller frees. */
char *vb_new_definition(const struct vb_manifest *m, const char *name, char *const *paths)
{
  CLEANUP_XMLDOC xmlDocPtr doc = vm_xml_parse(m->xml);
  if (!doc) return NULL;
  CLEANUP_XPATHCTX xmlXPathContextPtr x = vm_xpath_ctx(doc);
  xmlNodePtr root = xmlDocGetRootElement(doc);
  /* Identities (the SMBIOS UUID libvirt would adopt, the VM generation ID) and
   * host-specific paths (the emulator: the host's default serves). */
  static const char *const drop[] = { "/domain/uuid", "/domain/devices/interface/mac", "/domain/metadata",
                                      "/domain/devices/disk/backingStore", "/domain/os/nvram",
                                      "/domain/sysinfo/system/entry[@name='uuid']", "/domain/genid",
                                      "/domain/devices/emulator", NULL };
  for (size_t i = 0; drop[i]; i++) {
    CLEANUP_XPATHOBJ xmlXPathObjectPtr o = vm_xpath_nodes(x, drop[i]);
    for (int k = 0; o && o->nodesetval && k < o->nodesetval->nodeNr; k++) {
      xmlUnlinkNode(o->nodesetval->nodeTab[k]);
      xmlFreeNode(o->nodesetval->nodeTab[k]);
      o->nodesetval->nodeTab[k] = NULL;
    }
  }
  xmlNodeSetContent(vm_xml_find(root, "name"), BAD_CAST name);
  /* Console logs and character devices' files and sockets named for the old VM
   * are named for the new one (two VMs cannot share them: QEMU would truncate
   * the old VM's file or take its socket); others are dropped. */
  CLEANUP_XPATHOBJ xmlXPathObjectPtr xlogs = vm_xpath_nodes(x, "/domain/devices/*/log[@file] | /domain/devices/*/source[@path]");
  xmlXPathObjectPtr logs = xlogs;
  for (int k = 0; logs && logs->nodesetval && k < logs->nodesetval->nodeNr; k++) {
    xmlNodePtr log = logs->nodesetval->nodeTab[k];
    if (!log) continue; /* its device went already */
    const char *attr = !strcmp((const char *)log->name, "log") ? "file" : "path";
    /* A disk's source path is a block device's: the disks are handled below. */
    if (!strcmp(attr, "path") && log->parent && !strcmp((const char *)log->parent->name, "disk")) continue;
    CLEANUP_FREE char *file = vm_xml_prop(log, attr);
    char *slash = file ? strrchr(file, '/') : NULL;
    size_t ol = strlen(m->vm);
    if (slash && strncmp(slash + 1, m->vm, ol) == 0 && (slash[1 + ol] == '-' || slash[1 + ol] == '.')) {
      *slash = 0;
      CLEANUP_FREE char *nf = vm_strdup_printf("%s/%s%s", file, name, slash + 1 + ol);
      vm_xml_set(log, attr, nf);
    } else {
      /* A log goes; a device whose file or socket is another's goes whole
       * (its type needs the path), said so. */
      xmlNodePtr gone = log;
      if (!strcmp(attr, "path")) {
        gone = log->parent;
        vm_warn("the new VM leaves out the %s device on '%s' (the old VM's, or another's)", (const char *)gone->name,
                file ? file : "?");
        for (int j = k + 1; j < logs->nodesetval->nodeNr; j++)
          if (logs->nodesetval->nodeTab[j] && logs->nodesetval->nodeTab[j]->parent == gone) logs->nodesetval->nodeTab[j] = NULL;
      }
      xmlUnlinkNode(gone);
      xmlFreeNode(gone);
      logs->nodesetval->nodeTab[k] = NULL;
    }
  }
  /* A writable disk the snapshot does not hold (a LUN, a floppy, a disk that was
   * not backed up) would be the old VM's own: it goes, said so. */
  CLEANUP_XPATHOBJ xmlXPathObjectPtr all = vm_xpath_nodes(x, "/domain/devices/disk[not(readonly)]");
  for (int k = 0; all && all->nodesetval && k < all->nodesetval->nodeNr; k++) {
    xmlNodePtr disk = all->nodesetval->nodeTab[k];
    CLEANUP_FREE char *dev = vm_xml_prop(disk, "device");
    xmlNodePtr t = vm_xml_find(disk, "target");
    CLEANUP_FREE char *target = t ? vm_xml_prop(t, "dev") : NULL;
    bool held = false;
    for (size_t i = 0; target && i < m->ndisks; i++) held |= !strcmp(m->disks[i].target, target);
    if (held || (dev && !strcmp(dev, "cdrom"))) continue;
    vm_warn("the new VM leaves out disk %s of '%s' (not in the snapshot, and writable)", target ? target : "?", m->vm);
    xmlUnlinkNode(disk);
    xmlFreeNode(disk);
    all->nodesetval->nodeTab[k] = NULL;
  }
  for (size_t i = 0; i < m->ndisks; i++) {
    CLEANUP_FREE char *lit = vm_xpath_literal(m->disks[i].target);
    CLEANUP_FREE char *expr = vm_strdup_printf("/domain/devices/disk[target/@dev=%s]", lit);
    CLEANUP_XPATHOBJ xmlXPathObjectPtr o = vm_xpath_nodes(x, expr);
    if (!o || !o->nodesetval || o->nodesetval->nodeNr != 1) return NULL;
    xmlNodePtr disk = o->nodesetval->nodeTab[0];
    vm_xml_set(disk, "type", "file");
    xmlNodePtr src = vm_xml_find(disk, "source");
    if (src) {
      xmlUnlinkNode(src);
      xmlFreeNode(src);
    }
    xmlNodePtr drv = vm_xml_find(disk, "driver");
    if (!drv) {
      drv = vm_xml_child(disk, "driver", NULL);
      vm_xml_set(drv, "name", "qemu");
    }
    vm_xml_set(drv, "type", "qcow2");
    xmlNodePtr ns = xmlNewNode(NULL, BAD_CAST "source");
    vm_xml_set(ns, "file", paths[i]);
    xmlAddPrevSibling(vm_xml_find(disk, "target") ? vm_xml_find(disk, "target") : disk->children, ns);
  }
  return vm_xml_dump(doc);
}

int vb_disk_to_volume(struct vb_repo *r, const struct vb_manifest *m, const struct vb_mdisk *d, const char *scratch,
                      virStoragePoolPtr pool, const char *volname, const char *label, char **path)
{
  *path = NULL;
  CLEANUP_FREE char *raw = vm_strdup_printf("%s/%s.raw", scratch, d->target);
  CLEANUP_FREE char *qcow = vm_strdup_printf("%s/%s.qcow2", scratch, d->target);
  int fd = open(raw, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return vm_fail_errno(VM_EXIT_FAIL, "cannot make '%s'", raw);
  int rc = vb_restore_disk(r, m, d, fd, label);
  close(fd);
  char *argv[] = { "qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", "-o", "compat=1.1", raw, qcow, NULL };
  if (!rc) rc = vm_run_checked(argv, NULL);
  unlink(raw);
  struct vm_volspec spec = { .name = volname, .format = "qcow2", .capacity = d->size };
  CLEANUP_VIRVOL virStorageVolPtr vol = NULL;
  if (!rc) rc = vm_vol_create(pool, &spec, &vol);
  if (!rc) {
    *path = virStorageVolGetPath(vol);
    if (!*path) rc = vm_fail_virt("cannot read the path of volume '%s'", volname);
  }
  if (!rc) rc = vm_vol_upload_file(vol, qcow);
  unlink(qcow);
  return rc;
}

char *vb_volume_name(const char *vm, size_t i)
{
  return i == 0 ? vm_strdup_printf("%s.qcow2", vm) : vm_strdup_printf("%s-disk%zu.qcow2", vm, i);
}

int vb_new_vm_place(const char *name, const char *pool_name, virConnectPtr *conn, virStoragePoolPtr *pool)
{
  *conn = NULL;
  *pool = NULL;
  int rc = vm_check_name("VM", name);
  if (rc) return rc;
  if (!(*conn = vm_connect())) return VM_EXIT_FAIL;
  virDomainPtr existing = virDomainLookupByName(*conn, name);
  if (existing) {
    virDomainFree(existing);
    return vm_fail(VM_EXIT_STATE, "a VM named '%s' exists on %s", name, vm_conn_host_name(*conn));
  }
  virResetLastError();
  return vm_pool_open(*conn, pool_name ? pool_name : vm_default_pool(), pool);
}

/* restore --as NAME: each disk made here as a qcow2 from the snapshot, uploaded
 * into a new volume of the pool through a sparse libvirt stream (so that the
 * VM's host may be another), then the VM defined; all undone on failure. */
static int restore_as(struct vb_repo *r, const struct vb_manifest *m, const char *name, const char *pool_name,
                      bool start)
{
  CLEANUP_VIRCONN virConnectPtr conn = NULL;
  CLEANUP_VIRPOOL virStoragePoolPtr pool = NULL;
  int rc = vb_new_vm_place(name, pool_name, &conn, &pool);
  if (rc) return rc;
  CLEANUP_FREE char *scratch = vm_scratch_dir("restore");
  if (!scratch) return VM_EXIT_FAIL;
  struct vm_undo undo = { 0 };
  struct vm_strv paths = { 0 };
  for (size_t i = 0; i < m->ndisks && !rc; i++) {
    CLEANUP_FREE char *label = vm_strdup_printf("%s %s", name, m->disks[i].target);
    CLEANUP_FREE char *volname = vb_volume_name(name, i);
    CLEANUP_FREE char *path = NULL;
    rc = vb_disk_to_volume(r, m, &m->disks[i], scratch, pool, volname, label, &path);
    if (path) {
      vm_undo_volume(&undo, conn, path);
      vm_strv_add(&paths, path);
    }
  }
  CLEANUP_FREE char *xml = rc ? NULL : vb_new_definition(m, name, paths.v);
  if (!rc && !xml) rc = vm_fail(VM_EXIT_VERIFY, "snapshot %.12s: its saved definition does not name its disks", m->snapshot);
  virDomainPtr dom = NULL;
  if (!rc && !(dom = virDomainDefineXML(conn, xml))) rc = vm_fail_virt("cannot define VM '%s'", name);
  if (dom) vm_undo_domain(&undo, dom);
  if (!rc && vm_interrupted()) rc = vm_fail_interrupted();
  if (!rc && start && virDomainCreate(dom) < 0) rc = vm_fail_virt("cannot start VM '%s'", name);
  if (rc) vm_undo_run(&undo);
  else vm_undo_forget(&undo);
  if (dom) virDomainFree(dom);
  vm_strv_free(&paths);
  vm_remove_tree(scratch);
  if (!rc)
    vm_info("restored snapshot %.12s of '%s' as VM '%s'%s (new UUID and MAC addresses)", m->snapshot, m->vm, name,
            start ? ", started" : "");
  return rc;
}

int cmd_restore(int argc, char **argv)
{
  char *to = NULL, *disk = NULL, *as = NULL, *pool = NULL, *bw = NULL, *on = NULL;
  int start = 0, live = 0, inplace = 0;
  struct poptOption table[] = {
    { "in-place", '\0', POPT_ARG_NONE, &inplace, 0,
      "replace the disks of the snapshot's VM (found by its UUID; shut off) with the snapshot's: new volumes first, "
      "then one switch of its definition, then the old volumes removed", NULL },
    { "live", '\0', POPT_ARG_NONE, &live, 0,
      "--as: start the VM at once on the snapshot served by nbdkit, and pull its data in while it runs (this "
      "process serves it until the pull ends)", NULL },
    { "pull-bandwidth", '\0', POPT_ARG_STRING, &bw, 0, "--live: at most this many MiB/s for the pull", "MIB" },
    { "on", '\0', POPT_ARG_STRING, &on, 0,
      "--as: make the VM on this host of the pool (a host of the hosts file, or a URI; as -c does): its disks are "
      "built here and uploaded there through sparse libvirt streams (also with --in-place)", "HOST" },
    { "as", '\0', POPT_ARG_STRING, &as, 0,
      "define a new VM NAME from the snapshot: its disks as qcow2 volumes in the pool, a new UUID and new MACs", "NAME" },
    { "pool", '\0', POPT_ARG_STRING, &pool, 0, "--as: the storage pool for its disks (default: VMKIT_POOL, else default)",
      "POOL" },
    { "start", '\0', POPT_ARG_NONE, &start, 0, "--as: start the new VM", NULL },
    { "to", '\0', POPT_ARG_STRING, &to, 0,
      "write each disk as a sparse raw image DIR/VM.TARGET.raw, and the definition as DIR/VM.xml", "DIR" },
    { "disk", '\0', POPT_ARG_STRING, &disk, 0, "only this disk (its target, e.g. vda)", "TARGET" },
    VB_POPT_REPO, VM_POPT_LOCK, VM_POPT_COMMON, POPT_TABLEEND
  };
  CLEANUP_POPT poptContext ctx = NULL;
  const char **args;
  int nargs;
  int rc = vm_parse(&ctx, argc, argv, table, "REPO SNAPSHOT --to DIR | --as NAME [--live] | --in-place",
                    "Restore a snapshot (its ID or a unique prefix of 6 digits or more, as 'vmbackup list' shows): "
                    "every chunk is authenticated before it is written, holes stay holes, and a failed restore "
                    "leaves no file behind.",
                    2, 2, &args, &nargs);
  if (rc) return rc == VM_DONE ? 0 : rc;
  vm_catch_signals();
  if ((to != NULL) + (as != NULL) + (inplace != 0) != 1)
    return vm_usage_error("say where to restore: --to DIR, --as NAME or --in-place");
  if (inplace && (disk || pool || start || live || bw)) return vm_usage_error("--in-place takes none of --disk, --pool, --start, --live");
  if (as && disk) return vm_usage_error("--disk goes with --to");
  if (to && (pool || start || live || on)) return vm_usage_error("--pool, --start, --live and --on go with --as");
  if (on && vm_opts.uri) return vm_usage_error("--on and -c both name the host: give one");
  if (on && live) return vm_usage_error("--live runs the VM on this host: --on goes without it");
  if (on) vm_opts.uri = on;
  uint64_t bandwidth = 0;
  if (bw && (!live || vm_parse_uint(bw, 1, 1u << 20, &bandwidth) < 0))
    return vm_usage_error("--pull-bandwidth takes MiB/s (1 and up), with --live");
  struct vb_repo *r;
  /* A shared lock: no prune or compact removes a pack while it is read. */
  if ((rc = vb_open_repo(args[0], VB_LOCK_SHARED, &r))) return rc;
  CLEANUP_FREE char *id = NULL;
  struct vb_manifest m;
  if (!(rc = vb_snapshot_resolve(r, args[1], &id)) && !(rc = vb_snapshot_get(r, id, &m))) {
    rc = vb_repo_load_index(r, false);
    if (!rc && live) {
      /* Each nbdkit holds the repository's shared lock itself. This process
       * stays single-threaded (no lock touching thread): nbdkit's parent-death
       * signal comes from the thread that started it, and must come when this
       * process dies, however it dies. */
      vb_fs_unlock(r->fs);
    }
    if (!rc)
      rc = to        ? restore_to(r, &m, to, disk)
           : inplace ? vb_restore_in_place(r, &m)
           : live    ? vb_restore_live(args[0], &m, as, pool, (unsigned long)bandwidth)
                     : restore_as(r, &m, as, pool, start);
    vb_manifest_free(&m);
  }
  vb_repo_close(r);
  return rc;
}
