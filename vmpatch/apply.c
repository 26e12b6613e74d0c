/* vmpatch apply: updates Debian VMs from a given APT repository, each behind a
 * snapshot (vmsnap's library). A shut-off VM is patched offline through
 * libguestfs, then booted, checked (its agent answers, systemd reports no
 * failed unit) and shut down again; a running one is patched through its guest
 * agent (the repository copied in, the guest's apt-get run), rebooted when a
 * package needs it (--reboot), and checked the same way. A VM that fails its
 * check is reverted to the snapshot (and started again if it ran). Batches:
 * --parallel VMs at once, the rollout stopped after --max-failures.
 *
 * A run killed at any instant leaves a mark in the VM's metadata (the
 * snapshot's name, the step, online or not), written before the snapshot is
 * taken, which the next apply of that VM reads first: a patch not yet checked
 * is reverted, a checked one is finished. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "vmkit-gfs.h"
#include "vmkit-snap.h"
#include "apply.h"
#include "template.h"

#define APPLY_NS "https://vmkit.dev/xmlns/vmpatch/1"
#define APPLY_PREFIX "vmpatch"

static char *o_repo, **o_packages, *o_feed, *o_template, *o_as, *o_pool;
static char *o_reboot;
static int o_security_only, o_parallel = 1, o_max_failures = 1, o_timeout = 600;
/* Running VMs: reboot after the patch when a package needs it, always, never. */
enum reboot_policy { REBOOT_AUTO, REBOOT_ALWAYS, REBOOT_NEVER };
static enum reboot_policy reboot_policy;
/* The most a repository copied into a running guest through its agent may hold. */
#define AGENT_COPY_MAX ((size_t)1 << 30)

static const struct vm_column apply_cols[] = {
  { "vm", "VM", VM_COL_STR },
  { "result", "RESULT", VM_COL_STR },
  { "updated", "UPDATED", VM_COL_STR },
  { "reboot", "REBOOT", VM_COL_STR },
  { "error", "ERROR", VM_COL_STR },
  { NULL, NULL, 0 },
};

/* ---- The repository --------------------------------------------------------------------- */

static int repo_load(const char *arg, struct patch_src *src)
{
  const char *path = arg;
  if (strncmp(arg, "file://", 7) == 0) path = arg + 7;
  else if (strstr(arg, "://"))
    return vm_usage_error("invalid --repo '%s': a directory or a file:// URL of one (a local mirror)", arg);
  struct stat st;
  if (stat(path, &st) < 0)
    return vm_fail_errno(errno == ENOENT ? VM_EXIT_NOTFOUND : VM_EXIT_FAIL, "repository %s", arg);
  if (!S_ISDIR(st.st_mode)) return vm_fail(VM_EXIT_FAIL, "repository %s: not a directory", arg);
  src->dir = realpath(path, NULL);
  if (!src->dir) return vm_fail_errno(VM_EXIT_FAIL, "repository %s", arg);
  const char *slash = strrchr(src->dir, '/');
  src->base = vm_strdup(slash && slash[1] ? slash + 1 : "repo");
  /* A flat repository (deb [trusted=yes] file:DIR ./): its Packages index. */
  CLEANUP_FREE char *plain = vm_strdup_printf("%s/Packages", src->dir);
  CLEANUP_FREE char *gz = vm_strdup_printf("%s/Packages.gz", src->dir);
  CLEANUP_FREE char *text = NULL;
  size_t len = 0;
  if (access(plain, F_OK) == 0) {
    if (!(text = vm_read_file(plain, (size_t)1 << 30, &len))) return vm_fail_errno(VM_EXIT_FAIL, "repository %s", plain);
  } else if (access(gz, F_OK) == 0) {
    char *argv[] = { "gzip", "-dc", "--", gz, NULL };
    CLEANUP_FREE char *err = NULL;
    if (vm_run(argv, &text, &err) != 0 || !text)
      return vm_fail(VM_EXIT_FAIL, "repository %s: Packages.gz does not decompress", arg);
    len = strlen(text);
  } else {
    return vm_fail(VM_EXIT_FAIL, "repository %s: no Packages index (a flat APT repository, as dpkg-scanpackages "
                   "or apt-ftparchive make one)", arg);
  }
  struct vm_strv *files = &src->files;
  char why[256];
  int rc = 0;
  if (vmp_deb_packages_parse(text, len, files, why, sizeof why) < 0)
    rc = vm_fail(VM_EXIT_FAIL, "repository %s: Packages: %s", arg, why);
  for (size_t i = 0; rc == 0 && i < files->n; i++) {
    CLEANUP_FREE char *f = vm_strdup_printf("%s/%s", src->dir, files->v[i]);
    CLEANUP_FREE char *real = realpath(f, NULL);
    size_t dl = strlen(src->dir);
    /* A file of the directory itself: no link, no way out of it. */
    if (lstat(f, &st) < 0 || !S_ISREG(st.st_mode) || !real || strncmp(real, src->dir, dl) != 0 || real[dl] != '/' ||
        strcmp(real + dl + 1, files->v[i] + (strncmp(files->v[i], "./", 2) == 0 ? 2 : 0)) != 0)
      rc = vm_fail(VM_EXIT_FAIL, "repository %s: Packages names '%s', which it does not hold (as a file)", arg,
                   files->v[i]);
    else
      src->bytes += (size_t)st.st_size;
  }
  /* The index files go with the .debs into a running guest. */
  static const char *const index[] = { "Packages", "Packages.gz", "Release" };
  for (size_t i = 0; rc == 0 && i < sizeof index / sizeof index[0]; i++) {
    CLEANUP_FREE char *f = vm_strdup_printf("%s/%s", src->dir, index[i]);
    if (lstat(f, &st) == 0 && S_ISREG(st.st_mode)) {
      vm_strv_add(files, index[i]);
      src->bytes += (size_t)st.st_size;
    }
  }
  return rc;
}

/* ---- The mark in the VM's metadata ---------------------------------------------------- */

static int mark_write(virDomainPtr dom, const char *snapshot, const char *step, bool online)
{
  if (!snapshot) return vm_meta_write(dom, APPLY_NS, APPLY_PREFIX, NULL);
  CLEANUP_XMLDOC xmlDocPtr doc = xmlNewDoc(BAD_CAST "1.0");
  xmlNodePtr root = xmlNewNode(NULL, BAD_CAST "apply");
  xmlDocSetRootElement(doc, root);
  vm_xml_set(root, "snapshot", snapshot);
  vm_xml_set(root, "step", step);
  if (online) vm_xml_set(root, "online", "yes");
  char pid[32];
  snprintf(pid, sizeof pid, "%ld", (long)getpid());
  vm_xml_set(root, "pid", pid);
  vm_xml_set(root, "machine", vm_machine_id());
  return vm_meta_write(dom, APPLY_NS, APPLY_PREFIX, doc);
}

/* ---- Stopping and reverting -------------------------------------------------------------- */

/* Shuts the VM down (ACPI, as vmrun stop), destroyed after 120 s. */
static void vm_down(virDomainPtr dom, bool force)
{
  if (virDomainIsActive(dom) != 1) return;
  if (!force && virDomainShutdown(dom) == 0) {
    for (int i = 0; i < 240 && virDomainIsActive(dom) == 1; i++) vm_sleep_ms(500);
  }
  if (virDomainIsActive(dom) == 1 && virDomainDestroy(dom) < 0)
    vm_warn("cannot stop VM '%s': %s", virDomainGetName(dom), vm_virt_message());
  virResetLastError();
}

/* Back to the snapshot taken before the patch, which then goes; the VM is
 * started again when it ran before (online). */
static int revert(virConnectPtr conn, virDomainPtr *dom, const char *vm, const char *snapshot, bool online)
{
  /* Interrupted: the VM is left as it is, with its mark, for the next run. */
  if (vm_interrupted())
    return vm_fail(VM_EXIT_FAIL, "VM '%s' is left as it is, its patch not checked: the next 'vmpatch apply %s' "
                   "reverts it to snapshot '%s'", vm, vm, snapshot);
  vm_down(*dom, true);
  struct vm_snap_revert_opts ro = { .running = online };
  int rc = vm_snap_revert(conn, dom, vm, snapshot, &ro);
  if (rc == 0) rc = mark_write(*dom, snapshot, "reverted", online);
  if (rc == 0) rc = vm_snap_delete(conn, *dom, vm, snapshot);
  if (rc == 0) rc = mark_write(*dom, NULL, NULL, false);
  return rc;
}

/* The snapshot merged (what ran since is kept), then the mark cleared. */
static int keep(virConnectPtr conn, virDomainPtr dom, const char *vm, const char *snapshot)
{
  int rc = vm_snap_exists(dom, snapshot) ? vm_snap_delete(conn, dom, vm, snapshot) : 0;
  return rc ? rc : mark_write(dom, NULL, NULL, false);
}

/* What a killed apply left: a patch not checked is reverted, a checked one kept;
 * a snapshot taken before anything was patched is merged. *started: the revert
 * started the VM again (it ran when it was patched, and runs now). */
static int recover(virConnectPtr conn, virDomainPtr *dom, const char *vm, bool *started)
{
  *started = false;
  CLEANUP_XMLDOC xmlDocPtr mark = NULL;
  int rc = vm_meta_read(*dom, APPLY_NS, &mark);
  if (rc || !mark) return rc;
  xmlNodePtr root = xmlDocGetRootElement(mark);
  CLEANUP_FREE char *snapshot = root ? (char *)xmlGetProp(root, BAD_CAST "snapshot") : NULL;
  CLEANUP_FREE char *step = root ? (char *)xmlGetProp(root, BAD_CAST "step") : NULL;
  CLEANUP_FREE char *pid = root ? (char *)xmlGetProp(root, BAD_CAST "pid") : NULL;
  CLEANUP_FREE char *on = root ? (char *)xmlGetProp(root, BAD_CAST "online") : NULL;
  bool online = on && strcmp(on, "yes") == 0;
  if (!snapshot || !step) return mark_write(*dom, NULL, NULL, false);
  const char *who = pid && strspn(pid, "0123456789") == strlen(pid) ? pid : "?";
  bool exists = vm_snap_exists(*dom, snapshot);
  if (strcmp(step, "snapshotting") == 0) {
    /* Killed before the patch began: nothing to undo. */
    vm_info("VM '%s': merging snapshot '%s' that vmpatch (pid %s) took before it was stopped", vm, snapshot, who);
    return keep(conn, *dom, vm, snapshot);
  }
  /* Reverted already: only the snapshot and the mark are left to remove. */
  bool checked = strcmp(step, "checked") == 0 || strcmp(step, "reverted") == 0;
  /* A run killed during its offline check leaves the VM running; one that was
   * started since by someone is not taken down here. */
  if (!online && virDomainIsActive(*dom) == 1 && !checked)
    return vm_fail(VM_EXIT_STATE, "VM '%s' runs, and vmpatch (pid %s) did not finish patching it: shut it down, then "
                   "apply again (it reverts to snapshot '%s'), or delete the snapshot and the mark with vmsnap and "
                   "virsh metadata", vm, who, snapshot);
  if (!exists && !checked)
    return vm_fail(VM_EXIT_STATE, "VM '%s' was left half-patched by vmpatch (pid %s), and its snapshot '%s' is gone: "
                   "check the guest, then remove the mark (virsh metadata --uri %s --remove)", vm, who, snapshot,
                   APPLY_NS);
  if (checked) {
    vm_info("finishing the patch of '%s' that vmpatch (pid %s) did not finish", vm, who);
    /* The check booted it; a reverted one was left as it was (one patched
     * online started again, perhaps still booting). */
    if (!online && strcmp(step, "checked") == 0) vm_down(*dom, false);
    *started = online && strcmp(step, "reverted") == 0 && virDomainIsActive(*dom) == 1;
    return keep(conn, *dom, vm, snapshot);
  }
  vm_info("reverting '%s' to snapshot '%s': vmpatch (pid %s) did not finish patching it", vm, snapshot, who);
  /* A running VM patched online is started again; one shut down since stays so. */
  *started = online && virDomainIsActive(*dom) == 1;
  return revert(conn, dom, vm, snapshot, *started);
}

/* A VM just started again: its agent answers within --timeout (or the VM's row
 * says so), and its boot is let finish, so that the units that fail before the
 * patch are read once systemd is done. */
static int wait_agent(virDomainPtr dom, const char *vm)
{
  vm_info("VM '%s': started again, waiting for its agent (up to %d s)", vm, o_timeout);
  int64_t deadline = vm_now_ms() + (int64_t)o_timeout * 1000;
  while (!vm_agent_answers(dom)) {
    virResetLastError();
    if (vm_interrupted()) return vm_fail_interrupted();
    if (virDomainIsActive(dom) != 1) return vm_fail(VM_EXIT_STATE, "VM '%s' stopped while it booted again", vm);
    if (vm_now_ms() >= deadline)
      return vm_fail(VM_EXIT_STATE, "VM '%s' was reverted and started again, but its agent did not answer within "
                     "%d s", vm, o_timeout);
    vm_sleep_ms(2000);
  }
  int left = (int)((deadline - vm_now_ms()) / 1000);
  char *is_running[] = { "systemctl", "is-system-running", "--wait", NULL };
  int code;
  CLEANUP_FREE char *out = NULL;
  /* Its answer is not the point here (the check after the patch reads it). */
  vm_errors_mute(true);
  vm_agent_exec(dom, is_running, left < 10 ? 10 : left, &code, &out);
  vm_errors_mute(false);
  virResetLastError();
  return vm_interrupted() ? vm_fail_interrupted() : 0;
}

/* ---- The patch, offline ------------------------------------------------------------------- */

#define DPKG_STATUS "/var/lib/dpkg/status"

static int parse_status(const char *text, size_t len, const char *vm, struct vmp_target *t)
{
  char why[256];
  if (vmp_dpkg_status_parse(text, len, t, why, sizeof why) < 0)
    return vm_fail(VM_EXIT_FAIL, "%s of VM '%s': %s", DPKG_STATUS, vm, why);
  return 0;
}

static int read_status(guestfs_h *g, const char *vm, struct vmp_target *t)
{
  size_t len;
  CLEANUP_FREE char *text = guestfs_read_file(g, DPKG_STATUS, &len);
  if (!text) return vm_fail_gfs(g, "cannot read %s of VM '%s'", DPKG_STATUS, vm);
  return parse_status(text, len, vm, t);
}

/* The run's folder in the guest (GUEST_DIR): the folders to make, apt's
 * sources.list there and its one line, the repository in GUEST_DIR/base. */
struct layout {
  struct vm_strv dirs;
  char *list, *line;
};

static void layout_make(const struct patch_src *src, struct layout *l)
{
  memset(l, 0, sizeof *l);
  vm_strv_addf(&l->dirs, "%s/lists/partial", GUEST_DIR);
  vm_strv_addf(&l->dirs, "%s/archives/partial", GUEST_DIR);
  vm_strv_addf(&l->dirs, "%s/parts", GUEST_DIR);
  vm_strv_addf(&l->dirs, "%s/%s", GUEST_DIR, src->base);
  for (size_t i = 0; i < src->files.n; i++) {
    const char *f = src->files.v[i];
    while (strncmp(f, "./", 2) == 0) f += 2;
    const char *slash = strrchr(f, '/');
    if (!slash) continue;
    CLEANUP_FREE char *d = vm_strdup_printf("%s/%s/%.*s", GUEST_DIR, src->base, (int)(slash - f), f);
    if (!vm_strv_contains(l->dirs.v, d)) vm_strv_add(&l->dirs, d);
  }
  l->list = vm_strdup_printf("%s/sources.list", GUEST_DIR);
  l->line = vm_strdup_printf("deb [trusted=yes] file:%s/%s ./\n", GUEST_DIR, src->base);
}

static void layout_free(struct layout *l)
{
  vm_strv_free(&l->dirs);
  free(l->list);
  free(l->line);
}

static void target_clear(struct vmp_target *t)
{
  struct vmp_target *copy = malloc(sizeof *copy);
  if (!copy) abort();
  *copy = *t;
  struct vmp_inventory inv = { copy, 1 };
  vmp_inventory_free(&inv);
  memset(t, 0, sizeof *t);
}

/* The apt-get command line, verb and packages after the options: its sources
 * this run's repository alone, its lists and downloads in GUEST_DIR, no package
 * cache written, dpkg's lock waited for (a running guest's own updates): the
 * guest's own apt state is not touched. */
static void apt_argv(struct vm_strv *argv, const char *verb, const struct vm_strv *pkgs)
{
  static const char *const fixed[] = { "/usr/bin/env", "DEBIAN_FRONTEND=noninteractive", "/usr/bin/apt-get", "-q",
                                       "-y", "-oAPT::Sandbox::User=root", "-oDir::Cache::pkgcache=",
                                       "-oDir::Cache::srcpkgcache=", "-oDPkg::Lock::Timeout=300",
                                       "-oDpkg::Options::=--force-confdef", "-oDpkg::Options::=--force-confold" };
  for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) vm_strv_add(argv, fixed[i]);
  vm_strv_addf(argv, "-oDir::Etc::SourceList=%s/sources.list", GUEST_DIR);
  vm_strv_addf(argv, "-oDir::Etc::SourceParts=%s/parts", GUEST_DIR);
  vm_strv_addf(argv, "-oDir::State::Lists=%s/lists", GUEST_DIR);
  vm_strv_addf(argv, "-oDir::Cache::Archives=%s/archives", GUEST_DIR);
  if (strcmp(verb, "install") == 0) {
    vm_strv_add(argv, "install");
    vm_strv_add(argv, "--only-upgrade");
    for (size_t i = 0; i < pkgs->n; i++) vm_strv_add(argv, pkgs->v[i]);
  } else {
    vm_strv_add(argv, verb);
    /* A new kernel ABI comes as a new package: installed, never held back. */
    if (strcmp(verb, "upgrade") == 0) vm_strv_add(argv, "--with-new-pkgs");
  }
}

/* The apt-get steps of a patch: update, then the packages wanted, or upgrade. */
static const char *apt_verb(int step, const struct vm_strv *pkgs)
{
  return step == 0 ? "update" : step == 1 ? (pkgs->n ? "install" : "upgrade") : NULL;
}

/* Runs apt-get in the guest offline (guestfs_command: a chroot of the guest's
 * root, its own binaries). */
static int apt_offline(guestfs_h *g, const char *vm, const char *verb, const struct vm_strv *pkgs)
{
  struct vm_strv argv = { 0 };
  apt_argv(&argv, verb, pkgs);
  if (vm_opts.verbose) {
    CLEANUP_FREE char *cmd = vm_argv_str(argv.v);
    vm_debug("VM '%s': running in the guest: %s", vm, cmd);
  }
  char *out = guestfs_command(g, argv.v);
  vm_strv_free(&argv);
  if (!out) return vm_fail_gfs(g, "VM '%s': apt-get %s failed in the guest", vm, verb);
  vm_debug("%s", out);
  free(out);
  return 0;
}

/* The packages to update: those named, or those the feed says have a fix
 * (os_release: the guest's /etc/os-release, for the feed's ecosystem). */
static void wanted(const struct patch_src *src, const struct vmp_target *before, const char *os_release,
                   struct vm_strv *out)
{
  for (size_t i = 0; i < src->packages.n; i++) vm_strv_add(out, src->packages.v[i]);
  if (!o_security_only) return;
  struct vmp_target t = *before;
  if (!os_release || vmp_os_release_parse(os_release, strlen(os_release), &t.os_id, &t.os_version) < 0) return;
  t.name = (char *)"guest";
  t.kind = (char *)"vm";
  t.format = VMP_DEB;
  struct vmp_scan_opts so = { VMP_SEV_UNKNOWN, true };
  json_object *rows = json_object_new_array();
  vmp_scan_target(&src->feed, &t, &so, rows, NULL);
  for (size_t i = 0; i < json_object_array_length(rows); i++) {
    json_object *p;
    json_object_object_get_ex(json_object_array_get_idx(rows, i), "package", &p);
    bool dup = false;
    for (size_t k = 0; k < out->n && !dup; k++) dup = strcmp(out->v[k], json_object_get_string(p)) == 0;
    if (!dup) vm_strv_add(out, json_object_get_string(p));
  }
  json_object_put(rows);
  free(t.os_id);
  free(t.os_version);
}

/* The packages whose version changed, that came new, or that went. */
static void diff(const struct vmp_target *a, const struct vmp_target *b, struct vmp_patch_job *j)
{
  for (size_t i = 0; i < b->npkgs; i++) {
    const struct vmp_package *nb = &b->pkgs[i];
    const char *old = NULL;
    for (size_t k = 0; k < a->npkgs && !old; k++)
      if (strcmp(a->pkgs[k].name, nb->name) == 0 &&
          strcmp(a->pkgs[k].arch ? a->pkgs[k].arch : "", nb->arch ? nb->arch : "") == 0)
        old = a->pkgs[k].version;
    if (old && strcmp(old, nb->version) == 0) continue;
    CLEANUP_FREE char *line = vm_strdup_printf("%s %s -> %s", nb->name, old ? old : "(new)", nb->version);
    vm_strv_add(&j->updated, line);
    if (vmp_needs_reboot(nb->source)) j->reboot = true;
  }
  for (size_t i = 0; i < a->npkgs; i++) {
    const struct vmp_package *na = &a->pkgs[i];
    bool kept = false;
    for (size_t k = 0; k < b->npkgs && !kept; k++)
      kept = strcmp(b->pkgs[k].name, na->name) == 0 &&
             strcmp(b->pkgs[k].arch ? b->pkgs[k].arch : "", na->arch ? na->arch : "") == 0;
    if (!kept) vm_strv_addf(&j->updated, "%s %s -> (removed)", na->name, na->version);
  }
}

int vmp_patch_disks(const struct vm_disk *disks, size_t nd, struct vmp_patch_job *j)
{
  const struct patch_src *src = j->src;
  struct vmp_target before = { 0 }, after = { 0 };
  struct vm_strv pkgs = { 0 };
  CLEANUP_STRV char **roots = NULL;
  struct layout l;
  layout_make(src, &l);
  int rc = 0;
  guestfs_h *g = vm_gfs_open();
  if (!g) {
    rc = VM_EXIT_FAIL;
    goto out;
  }
  for (size_t i = 0; i < nd && rc == 0; i++) {
    if (!disks[i].device || strcmp(disks[i].device, "disk") != 0 || disks[i].readonly) continue;
    if (!disks[i].source) continue;
    int r = disks[i].format ? guestfs_add_drive_opts(g, disks[i].source, GUESTFS_ADD_DRIVE_OPTS_FORMAT,
                                                     disks[i].format, -1)
                            : guestfs_add_drive_opts(g, disks[i].source, -1);
    if (r < 0) rc = vm_fail_gfs(g, "cannot open disk '%s' of VM '%s'", disks[i].source, j->vm);
  }
  if (rc) goto out;
  if (guestfs_launch(g) < 0) {
    rc = vm_interrupted() ? vm_fail_interrupted() : vm_fail_gfs(g, "cannot launch libguestfs for VM '%s'", j->vm);
    goto out;
  }
  if (!(roots = guestfs_inspect_os(g)) || !roots[0]) {
    rc = roots ? vm_fail(VM_EXIT_STATE, "no operating system found on the disks of VM '%s'", j->vm)
               : vm_fail_gfs(g, "cannot inspect the disks of VM '%s'", j->vm);
    goto out;
  }
  CLEANUP_FREE char *pf = guestfs_inspect_get_package_format(g, roots[0]);
  if (!pf || strcmp(pf, "deb") != 0) {
    rc = vm_fail(VM_EXIT_STATE, "VM '%s': its packages are %s: vmpatch apply updates Debian guests (deb)", j->vm,
                 pf ? pf : "unknown");
    goto out;
  }
  CLEANUP_FREE char *desc = vm_strdup_printf("VM '%s'", j->vm);
  /* Every filesystem of the guest, or none: a kernel written under an unmounted
   * /boot would not be the one that boots. */
  rc = vm_gfs_mount_guest(g, desc);
  if (rc || (rc = read_status(g, j->vm, &before))) goto out;
  CLEANUP_FREE char *osr = guestfs_read_file(g, "/etc/os-release", &(size_t){ 0 });
  if (!osr) osr = guestfs_read_file(g, "/usr/lib/os-release", &(size_t){ 0 });
  wanted(src, &before, osr, &pkgs);
  if ((o_security_only || src->packages.n) && pkgs.n == 0) {
    j->result = "up-to-date";
    goto out;
  }
  /* The repository and apt's state of this run, inside the guest. */
  bool copied = guestfs_rm_rf(g, GUEST_DIR) == 0;
  for (size_t i = 0; copied && i < l.dirs.n; i++) copied = guestfs_mkdir_p(g, l.dirs.v[i]) == 0;
  copied = copied && guestfs_write(g, l.list, l.line, strlen(l.line)) == 0;
  for (size_t i = 0; copied && i < src->files.n; i++) {
    CLEANUP_FREE char *from = vm_strdup_printf("%s/%s", src->dir, src->files.v[i]);
    CLEANUP_FREE char *to = vm_strdup_printf("%s/%s/%s", GUEST_DIR, src->base, src->files.v[i]);
    copied = guestfs_upload(g, from, to) == 0;
  }
  if (!copied) {
    rc = vm_fail_gfs(g, "cannot copy repository %s into VM '%s'", src->dir, j->vm);
    goto out;
  }
  vm_info("VM '%s': updating from %s", j->vm, src->dir);
  for (int step = 0; rc == 0 && apt_verb(step, &pkgs); step++) rc = apt_offline(g, j->vm, apt_verb(step, &pkgs), &pkgs);
  if (rc == 0) rc = read_status(g, j->vm, &after);
  if (rc == 0) diff(&before, &after, j);
  if (guestfs_rm_rf(g, GUEST_DIR) < 0 && rc == 0) rc = vm_fail_gfs(g, "cannot clean %s in VM '%s'", GUEST_DIR, j->vm);
  if (rc == 0 && (guestfs_umount_all(g) < 0 || guestfs_shutdown(g) < 0))
    rc = vm_fail_gfs(g, "cannot write the disks of VM '%s'", j->vm);
  if (rc == 0) j->result = j->updated.n ? "patched" : "up-to-date";
out:
  if (g) guestfs_close(g);
  layout_free(&l);
  target_clear(&before);
  target_clear(&after);
  vm_strv_free(&pkgs);
  if (rc == 0 && vm_interrupted()) rc = vm_fail_interrupted();
  return rc;
}

static int patch_offline(virDomainPtr dom, struct vmp_patch_job *j)
{
  CLEANUP_XMLDOC xmlDocPtr doc = vm_domain_doc(dom, VIR_DOMAIN_XML_INACTIVE);
  if (!doc) return VM_EXIT_FAIL;
  struct vm_disk *disks = NULL;
  size_t nd = 0;
  vm_domain_disks(doc, &disks, &nd);
  int rc = vmp_patch_disks(disks, nd, j);
  vm_disks_free(disks, nd);
  return rc;
}

/* ---- The patch, online ---------------------------------------------------------------------- */

/* Runs argv in the running guest through its agent, its standard error with its
 * output (a shell that only redirects: the arguments are never parsed by it).
 * 0 when it exits 0 (*out its output, when asked); else an exit code after a
 * message that ends with the last line it printed. */
static int guest_run(virDomainPtr dom, const char *vm, const char *what, char *const *argv, int timeout_s,
                     char **out)
{
  struct vm_strv av = { 0 };
  vm_strv_add(&av, "/bin/sh");
  vm_strv_add(&av, "-c");
  vm_strv_add(&av, "exec \"$@\" 2>&1");
  vm_strv_add(&av, "sh");
  for (size_t i = 0; argv[i]; i++) vm_strv_add(&av, argv[i]);
  if (vm_opts.verbose) {
    CLEANUP_FREE char *cmd = vm_argv_str(argv);
    vm_debug("VM '%s': running in the guest through its agent: %s", vm, cmd);
  }
  int code;
  char *text = NULL;
  int rc = vm_agent_exec(dom, av.v, timeout_s, &code, &text);
  vm_strv_free(&av);
  if (rc) return rc;
  if (code != 0) {
    /* The last line the guest printed, without its control characters. */
    char *last = text ? (char *)vm_last_line(text) : NULL;
    if (last) {
      vm_sanitize(last);
      vm_cut_utf8(last, 200);
    }
    rc = vm_fail(VM_EXIT_FAIL, "VM '%s': %s exited %d in the guest%s%s", vm, what, code, last && *last ? ": " : "",
                 last ? last : "");
    free(text);
    return rc;
  }
  if (out) *out = text;
  else free(text);
  return 0;
}

static int read_status_online(virDomainPtr dom, const char *vm, struct vmp_target *t)
{
  char *cat[] = { "/bin/cat", DPKG_STATUS, NULL };
  CLEANUP_FREE char *text = NULL;
  int rc = guest_run(dom, vm, "cat", cat, 60, &text);
  return rc ? rc : parse_status(text, strlen(text), vm, t);
}

/* Copies the repository's files into GUEST_DIR/base in the guest, through its agent. */
static int copy_repo_online(virDomainPtr dom, const char *vm, const struct patch_src *src)
{
  struct layout l;
  layout_make(src, &l);
  struct vm_strv mkdir = { 0 };
  vm_strv_add(&mkdir, "/bin/mkdir");
  vm_strv_add(&mkdir, "-p");
  vm_strv_add(&mkdir, "--");
  for (size_t i = 0; i < l.dirs.n; i++) vm_strv_add(&mkdir, l.dirs.v[i]);
  int rc = guest_run(dom, vm, "mkdir", mkdir.v, 60, NULL);
  vm_strv_free(&mkdir);
  if (rc == 0) rc = vm_agent_write_file(dom, l.list, l.line, strlen(l.line));
  for (size_t i = 0; rc == 0 && i < src->files.n; i++) {
    CLEANUP_FREE char *from = vm_strdup_printf("%s/%s", src->dir, src->files.v[i]);
    CLEANUP_FREE char *to = vm_strdup_printf("%s/%s/%s", GUEST_DIR, src->base, src->files.v[i]);
    int fd = open(from, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
      rc = vm_fail_errno(VM_EXIT_FAIL, "repository %s", from);
      break;
    }
    rc = vm_agent_write_fd(dom, to, fd);
    close(fd);
  }
  layout_free(&l);
  return rc;
}

/* What the online patch of a VM knows before its snapshot. */
struct online {
  struct vmp_target before;  /* the guest's packages */
  struct vm_strv pkgs;       /* the packages wanted (none: every newer one) */
  struct vm_strv failed;     /* the systemd units failed before the patch */
};

static void online_free(struct online *o)
{
  target_clear(&o->before);
  vm_strv_free(&o->pkgs);
  vm_strv_free(&o->failed);
}

/* The systemd units that have failed in the guest (their names), or -1. */
static int failed_units(virDomainPtr dom, const char *vm, struct vm_strv *out)
{
  char *failed[] = { "systemctl", "list-units", "--failed", "--plain", "--no-legend", "--no-pager", NULL };
  int code;
  CLEANUP_FREE char *units = NULL;
  vm_errors_mute(true);
  int rc = vm_agent_exec(dom, failed, 30, &code, &units);
  vm_errors_mute(false);
  if (rc || code != 0 || !units) return -1;
  for (char *save = NULL, *line = strtok_r(units, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
    line[strcspn(line, " \t")] = '\0';
    vm_sanitize(line);
    if (*line && !vm_strv_contains(out->v, line)) vm_strv_add(out, line);
  }
  (void)vm;
  return 0;
}

static char *rm_dir[] = { "/bin/rm", "-rf", "--", GUEST_DIR, NULL };

/* Before the snapshot, nothing of the guest's packages changed yet: a Debian
 * guest, the packages wanted, the repository copied in, apt's lists read, and
 * what the update would do simulated. 0 with j->result "up-to-date" when it
 * would do nothing (the folder removed). */
static int online_prepare(virDomainPtr dom, struct vmp_patch_job *j, struct online *o)
{
  const struct patch_src *src = j->src;
  struct vm_strv argv = { 0 };
  CLEANUP_FREE char *osr = NULL, *sim = NULL;
  char *cat_osr[] = { "/bin/cat", "/etc/os-release", NULL };
  vm_errors_mute(true);
  int rc = read_status_online(dom, j->vm, &o->before);
  vm_errors_mute(false);
  if (rc)
    return vm_fail(VM_EXIT_STATE, "VM '%s': no dpkg status can be read in it (%s): vmpatch apply updates Debian "
                   "guests (deb)", j->vm, vm_last_error());
  vm_errors_mute(true);
  guest_run(dom, j->vm, "cat", cat_osr, 30, &osr);
  vm_errors_mute(false);
  wanted(src, &o->before, osr, &o->pkgs);
  if ((o_security_only || src->packages.n) && o->pkgs.n == 0) {
    j->result = "up-to-date";
    return 0;
  }
  failed_units(dom, j->vm, &o->failed);
  vm_info("VM '%s': copying %s into it through its agent", j->vm, src->dir);
  if ((rc = guest_run(dom, j->vm, "rm", rm_dir, 60, NULL)) || (rc = copy_repo_online(dom, j->vm, src))) goto fail;
  apt_argv(&argv, "update", &o->pkgs);
  rc = guest_run(dom, j->vm, "apt-get update", argv.v, o_timeout, NULL);
  vm_strv_free(&argv);
  if (rc) goto fail;
  /* apt-get -s: what the update would install, nothing done. */
  apt_argv(&argv, apt_verb(1, &o->pkgs), &o->pkgs);
  vm_strv_add(&argv, "-s");
  rc = guest_run(dom, j->vm, "apt-get -s", argv.v, o_timeout, &sim);
  vm_strv_free(&argv);
  if (rc) goto fail;
  bool any = strncmp(sim, "Inst ", 5) == 0 || strstr(sim, "\nInst ") || strncmp(sim, "Remv ", 5) == 0 ||
             strstr(sim, "\nRemv ");
  if (!any) {
    j->result = "up-to-date";
    if ((rc = guest_run(dom, j->vm, "rm", rm_dir, 60, NULL))) return rc;
  }
  return 0;
fail:
  /* An apt-get cut short by the timeout or a signal goes on in the guest: its
   * folder stays (the next run removes it first). */
  if (rc != VM_EXIT_TIMEOUT && !vm_interrupted()) {
    vm_errors_mute(true);
    guest_run(dom, j->vm, "rm", rm_dir, 60, NULL);
    vm_errors_mute(false);
  }
  return rc;
}

/* Under the snapshot: the guest's own apt-get installs, from the repository
 * copied in (online_prepare), which goes after. */
static int online_install(virDomainPtr dom, struct vmp_patch_job *j, struct online *o)
{
  struct vmp_target after = { 0 };
  struct vm_strv argv = { 0 };
  const char *verb = apt_verb(1, &o->pkgs);
  vm_info("VM '%s': updating from %s, running", j->vm, j->src->dir);
  apt_argv(&argv, verb, &o->pkgs);
  CLEANUP_FREE char *what = vm_strdup_printf("apt-get %s", verb);
  int rc = guest_run(dom, j->vm, what, argv.v, o_timeout, NULL);
  vm_strv_free(&argv);
  if (rc == 0) rc = read_status_online(dom, j->vm, &after);
  if (rc == 0) diff(&o->before, &after, j);
  target_clear(&after);
  /* Reverted after a failure: the folder goes with the rest. */
  if (rc == 0 && (rc = guest_run(dom, j->vm, "rm", rm_dir, 60, NULL)) == 0)
    j->result = j->updated.n ? "patched" : "up-to-date";
  if (rc == 0 && vm_interrupted()) rc = vm_fail_interrupted();
  return rc;
}

/* ---- The check ------------------------------------------------------------------------------ */

/* The guest's boot id (a new one each boot), or NULL. */
static char *boot_id(virDomainPtr dom, const char *vm)
{
  char *cat[] = { "/bin/cat", "/proc/sys/kernel/random/boot_id", NULL };
  char *out = NULL;
  vm_errors_mute(true);
  if (guest_run(dom, vm, "cat", cat, 30, &out)) out = NULL;
  vm_errors_mute(false);
  if (out) out[strcspn(out, "\n")] = '\0';
  return out;
}

/* Waits until the deadline for the VM's agent (and, after a reboot, for a boot
 * id other than old_boot), then for systemd to finish booting: it must say
 * "running" (no unit failed), or "degraded" with no unit failed that had not
 * failed before the patch (known: those units; NULL when not known). 0, or
 * VM_EXIT_VERIFY with the reason. */
static int healthy(virDomainPtr dom, const char *vm, int64_t deadline, const char *old_boot,
                   const struct vm_strv *known, char **why)
{
  for (;;) {
    if (vm_agent_answers(dom)) {
      if (!old_boot) break;
      CLEANUP_FREE char *now = boot_id(dom, vm);
      if (now && strcmp(now, old_boot) != 0) break;
    }
    virResetLastError();
    if (vm_interrupted()) return vm_fail_interrupted();
    if (virDomainIsActive(dom) != 1) {
      *why = vm_strdup("it stopped while booting");
      return VM_EXIT_VERIFY;
    }
    if (vm_now_ms() >= deadline) {
      *why = vm_strdup_printf("its agent did not answer within %d s", o_timeout);
      return VM_EXIT_VERIFY;
    }
    vm_sleep_ms(2000);
  }
  int left = (int)((deadline - vm_now_ms()) / 1000);
  if (left < 30) left = 30;
  char *is_running[] = { "systemctl", "is-system-running", "--wait", NULL };
  int code;
  CLEANUP_FREE char *out = NULL;
  vm_errors_mute(true);
  int rc = vm_agent_exec(dom, is_running, left, &code, &out);
  vm_errors_mute(false);
  if (rc) {
    *why = vm_strdup_printf("systemd's state cannot be read: %s", vm_last_error());
    return VM_EXIT_VERIFY;
  }
  if (code == 0) return 0;
  if (out) {
    out[strcspn(out, "\n")] = '\0';
    vm_sanitize(out);
    vm_cut_utf8(out, 40);
  }
  struct vm_strv failed = { 0 }, fresh = { 0 };
  failed_units(dom, vm, &failed);
  for (size_t i = 0; i < failed.n; i++)
    if (!known || !vm_strv_contains(known->v, failed.v[i])) vm_strv_add(&fresh, failed.v[i]);
  CLEANUP_FREE char *units = fresh.n ? vm_strv_join_quoted(fresh.v) : NULL;
  if (units) vm_cut_utf8(units, 300);
  bool as_before = known && out && strcmp(out, "degraded") == 0 && failed.n && !fresh.n;
  vm_strv_free(&failed);
  vm_strv_free(&fresh);
  if (as_before) {
    vm_info("VM '%s': degraded as before the patch (the same units failed): passed", vm);
    return 0;
  }
  *why = vm_strdup_printf("systemd says '%s'%s%s", out && *out ? out : "?", units ? ", failed: " : "",
                          units ? units : "");
  return VM_EXIT_VERIFY;
}

/* The check after an offline patch: the VM boots and is healthy. */
static int check_offline(virDomainPtr dom, struct vmp_patch_job *j, char **why)
{
  if (virDomainCreate(dom) < 0) {
    *why = vm_strdup_printf("it does not start: %s", vm_virt_message());
    return VM_EXIT_VERIFY;
  }
  /* A package that takes effect at a boot has: the VM booted. */
  j->rebooted = j->reboot;
  vm_info("VM '%s': booted, waiting for its agent (up to %d s)", j->vm, o_timeout);
  return healthy(dom, j->vm, vm_now_ms() + (int64_t)o_timeout * 1000, NULL, NULL, why);
}

/* The check after an online patch: rebooted first when a package needs it
 * (--reboot), then healthy, with the units that failed before forgiven. */
static int check_online(virDomainPtr dom, struct vmp_patch_job *j, const struct online *o, char **why)
{
  int64_t deadline = vm_now_ms() + (int64_t)o_timeout * 1000;
  bool reboot = reboot_policy == REBOOT_ALWAYS || (reboot_policy == REBOOT_AUTO && j->reboot);
  if (!reboot) return healthy(dom, j->vm, deadline, NULL, &o->failed, why);
  CLEANUP_FREE char *old = boot_id(dom, j->vm);
  if (!old) {
    *why = vm_strdup("its boot id cannot be read before the reboot");
    return VM_EXIT_VERIFY;
  }
  vm_info("VM '%s': rebooting it, then waiting for its agent (up to %d s)", j->vm, o_timeout);
  if (virDomainReboot(dom, 0) < 0) {
    *why = vm_strdup_printf("it does not reboot: %s", vm_virt_message());
    return VM_EXIT_VERIFY;
  }
  j->rebooted = true;
  return healthy(dom, j->vm, deadline, old, &o->failed, why);
}

/* ---- One VM ------------------------------------------------------------------------------- */

static int patch_vm(virConnectPtr conn, virDomainPtr *domp, struct vmp_patch_job *j, bool online,
                    const struct online *o);

static int apply_vm(struct vmp_patch_job *j)
{
  virConnectPtr conn = j->conn;
  CLEANUP_VIRDOMAIN virDomainPtr dom = NULL;
  bool started;
  int rc = vm_lookup(conn, j->vm, &dom);
  if (rc || (rc = vm_snap_lock(conn, &dom, j->vm)) || (rc = recover(conn, &dom, j->vm, &started)) ||
      (started && (rc = wait_agent(dom, j->vm))))
    return rc;
  int state = vm_domain_state(dom);
  bool online = state == VIR_DOMAIN_RUNNING;
  if (state != VIR_DOMAIN_SHUTOFF && !online)
    return vm_fail(VM_EXIT_STATE, "VM '%s' is %s: vmpatch apply patches shut-off or running VMs", j->vm,
                   vm_state_name(state));
  if (online && !vm_agent_answers(dom)) {
    virResetLastError();
    return vm_fail(VM_EXIT_STATE, "VM '%s' runs, but its guest agent does not answer: start qemu-guest-agent in it, "
                   "or shut it down to patch it offline", j->vm);
  }
  if (online && j->src->bytes > AGENT_COPY_MAX)
    return vm_fail(VM_EXIT_STATE, "VM '%s' runs: a repository of %zu MiB is too large to copy in through its agent "
                   "(1024 MiB at most): shut it down to patch it offline", j->vm, j->src->bytes >> 20);
  /* A running VM's disks as they are now (a disk plugged in lives only there). */
  CLEANUP_XMLDOC xmlDocPtr doc = vm_domain_doc(dom, online ? 0 : VIR_DOMAIN_XML_INACTIVE);
  if (!doc) return VM_EXIT_FAIL;
  if (vm_domain_encrypted(doc))
    return vm_fail(VM_EXIT_STATE, "VM '%s' has encrypted disks, which vmpatch apply does not snapshot yet", j->vm);
  /* Its saved memory would be restored over the patched disks at the check. */
  if (!online && virDomainHasManagedSaveImage(dom, 0) == 1)
    return vm_fail(VM_EXIT_STATE, "VM '%s' has a saved memory image (managed save): start it, or remove the image, "
                   "before patching it", j->vm);
  /* Every disk the patch may write must be under the snapshot (qcow2 overlays
   * of files): a block device would be patched with nothing to revert to. */
  struct vm_disk *disks = NULL;
  size_t nd = 0;
  vm_domain_disks(doc, &disks, &nd);
  for (size_t i = 0; i < nd && rc == 0; i++)
    if (disks[i].device && strcmp(disks[i].device, "disk") == 0 && !disks[i].readonly &&
        (!disks[i].type || strcmp(disks[i].type, "file") != 0 || !disks[i].source))
      rc = vm_fail(VM_EXIT_STATE, "VM '%s': its disk %s is not a file, which a snapshot cannot cover: not patched",
                   j->vm, disks[i].target ? disks[i].target : "?");
  vm_disks_free(disks, nd);
  if (rc) return rc;

  /* A running VM: everything that changes none of its packages comes before the
   * snapshot; nothing to do, no snapshot. */
  struct online o = { 0 };
  if (online && ((rc = online_prepare(dom, j, &o)) || j->result)) {
    online_free(&o);
    return rc;
  }
  rc = patch_vm(conn, &dom, j, online, &o);
  online_free(&o);
  return rc;
}

/* The patch behind its snapshot, and the check. */
static int patch_vm(virConnectPtr conn, virDomainPtr *domp, struct vmp_patch_job *j, bool online,
                    const struct online *o)
{
  virDomainPtr dom = *domp;
  int rc;
  /* The mark names the snapshot before it is taken, so that a kill at any
   * instant leaves a snapshot the next run knows of. */
  char name[80], stamp[32];
  struct tm tm;
  time_t now = time(NULL);
  strftime(stamp, sizeof stamp, "vmpatch-%Y%m%d-%H%M%S", gmtime_r(&now, &tm));
  snprintf(name, sizeof name, "%s", stamp);
  for (int n = 2; vm_snap_exists(dom, name) && n < 100; n++) snprintf(name, sizeof name, "%s-%d", stamp, n);
  if ((rc = mark_write(dom, name, "snapshotting", online))) return rc;
  struct vm_snap_create_opts so = { .description = "before vmpatch apply", .disk_only = true,
                                    .quiesce = online ? VM_SNAP_QUIESCE_AUTO : VM_SNAP_QUIESCE_NO };
  if ((rc = vm_snap_create(conn, dom, j->vm, name, &so))) {
    /* Not taken (its journal rolled it back): only the mark goes. */
    mark_write(dom, NULL, NULL, false);
    return rc;
  }
  if ((rc = mark_write(dom, name, "patching", online))) {
    keep(conn, dom, j->vm, name);
    return rc;
  }
  rc = online ? online_install(dom, j, (struct online *)o) : patch_offline(dom, j);
  if (rc) {
    /* The change failed halfway: back to the snapshot. */
    j->result = revert(conn, domp, j->vm, name, online) == 0 ? "reverted" : "failed";
    return rc;
  }
  dom = *domp;
  if (!j->updated.n) { /* nothing changed: offline, the disks go back as they were; online, the VM goes on */
    if (!online) return revert(conn, domp, j->vm, name, false);
    return (rc = mark_write(dom, name, "checked", online)) ? rc : keep(conn, dom, j->vm, name);
  }
  CLEANUP_FREE char *why = NULL;
  rc = online ? check_online(dom, j, o, &why) : check_offline(dom, j, &why);
  if (rc == VM_EXIT_VERIFY) {
    j->error = vm_strdup_printf("VM '%s' failed its check after the patch (%s): reverted to snapshot '%s'%s", j->vm,
                                why, name, online ? " and started again" : "");
    vm_fail(VM_EXIT_VERIFY, "%s", j->error);
    int r = revert(conn, domp, j->vm, name, online);
    j->result = r == 0 ? "reverted" : "failed";
    return r == 0 ? VM_EXIT_VERIFY : r;
  }
  if (rc) { /* interrupted: not checked, so not kept */
    j->result = revert(conn, domp, j->vm, name, online) == 0 ? "reverted" : "failed";
    return rc;
  }
  rc = mark_write(dom, name, "checked", online);
  if (!online) {
    if (rc == 0) vm_info("VM '%s': checked, shutting it down again", j->vm);
    vm_down(dom, false);
    if (rc == 0 && virDomainIsActive(dom) == 1)
      rc = vm_fail(VM_EXIT_FAIL, "VM '%s' does not stop after its check", j->vm);
  } else if (rc == 0) {
    vm_info("VM '%s': checked, running", j->vm);
  }
  if (rc == 0) rc = keep(conn, dom, j->vm, name);
  if (rc) j->result = "failed";
  return rc;
}

/* ---- The batch -------------------------------------------------------------------------------- */

struct batch {
  struct vmp_patch_job *jobs;
  size_t n, next;
  int failures;
  pthread_mutex_t lock;
};

static void *worker(void *arg)
{
  struct batch *b = arg;
  for (;;) {
    pthread_mutex_lock(&b->lock);
    bool stop = b->failures >= o_max_failures || vm_interrupted();
    size_t i = stop ? b->n : b->next++;
    pthread_mutex_unlock(&b->lock);
    if (i >= b->n) return NULL;
    struct vmp_patch_job *j = &b->jobs[i];
    j->rc = j->template_from ? vmp_apply_template(j->conn, o_pool, j->template_from, j->vm, j) : apply_vm(j);
    if (j->rc && !j->error) j->error = vm_strdup(vm_last_error());
    if (j->rc && !j->result) j->result = "failed";
    if (!j->result) j->result = "up-to-date";
    pthread_mutex_lock(&b->lock);
    if (j->rc) b->failures++;
    pthread_mutex_unlock(&b->lock);
  }
}

static int apply_run(const char **vms, int nvms)
{
  int rc;
  if (o_parallel < 1 || o_parallel > 16) return vm_usage_error("invalid --parallel %d: expected 1 to 16", o_parallel);
  if (o_max_failures < 1) return vm_usage_error("invalid --max-failures %d: expected 1 or more", o_max_failures);
  if (o_timeout < 30 || o_timeout > 86400)
    return vm_usage_error("invalid --timeout %d: expected 30 to 86400 seconds", o_timeout);
  if (!o_repo) return vm_usage_error("--repo DIR is required");
  if (o_as && !o_template) return vm_usage_error("--as goes with --template");
  if (o_pool && !o_template) return vm_usage_error("--pool goes with --template");
  if (o_template && nvms) return vm_usage_error("--template patches a template, not VMs: name no VM with it");
  if (!o_template && !nvms) return vm_usage_error("name the VMs to patch, or --template NAME --as NEW");
  if (o_template && !o_as) return vm_usage_error("--template needs --as NEW, the name of the patched template");
  if (o_reboot && o_template) return vm_usage_error("--reboot is for VMs: a template is not booted");
  if (o_template && (rc = vm_check_name("template", o_as))) return rc;
  if (o_template && strcmp(o_template, o_as) == 0)
    return vm_usage_error("--as must name a new template: a template is never patched in place");
  if (!o_reboot || strcmp(o_reboot, "auto") == 0) reboot_policy = REBOOT_AUTO;
  else if (strcmp(o_reboot, "always") == 0) reboot_policy = REBOOT_ALWAYS;
  else if (strcmp(o_reboot, "never") == 0) reboot_policy = REBOOT_NEVER;
  else return vm_usage_error("invalid --reboot '%s': expected auto, always or never", o_reboot);
  if (o_security_only && o_packages) return vm_usage_error("--packages and --security-only exclude each other");
  if (o_security_only && !o_feed) return vm_usage_error("--security-only needs --feed PATH");
  if (o_feed && !o_security_only) return vm_usage_error("--feed goes with --security-only");
  for (int i = 0; i < nvms; i++)
    for (int k = 0; k < i; k++)
      if (strcmp(vms[i], vms[k]) == 0) return vm_usage_error("VM '%s' is named twice", vms[i]);
  struct patch_src src = { 0 };
  for (size_t i = 0; o_packages && o_packages[i]; i++) {
    CLEANUP_FREE char *copy = vm_strdup(o_packages[i]);
    for (char *save = NULL, *p = strtok_r(copy, ",", &save); p; p = strtok_r(NULL, ",", &save)) {
      if (strspn(p, "abcdefghijklmnopqrstuvwxyz0123456789+-.") != strlen(p) || strlen(p) < 2 || p[0] == '-') {
        vm_strv_free(&src.packages);
        return vm_usage_error("invalid package name '%s'", p);
      }
      vm_strv_add(&src.packages, p);
    }
  }
  vm_catch_signals();
  rc = repo_load(o_repo, &src);
  if (rc == 0 && o_security_only) rc = vmp_feed_load(o_feed, &src.feed);
  /* One connection, opened and asked about its host here, before the threads:
   * what the layers below learn of it once is then only read. */
  CLEANUP_VIRCONN virConnectPtr conn = NULL;
  if (rc == 0 && (rc = vm_events_init()) == 0 && !(conn = vm_connect())) rc = VM_EXIT_FAIL;
  if (rc == 0 && !vm_conn_is_local(conn))
    rc = vm_fail(VM_EXIT_STATE, "cannot patch VMs of %s: vmpatch apply runs on the VMs' host (libguestfs writes "
                 "this machine's disks only, and a revert needs the snapshot's files there): run it on that host", vm_conn_host_name(conn));
  if (rc == 0 && (!vm_conn_host_uuid(conn) || !vm_conn_host_name(conn))) rc = VM_EXIT_FAIL;
  /* The same VM by its name and its UUID: patched once. */
  char (*uuids)[VIR_UUID_STRING_BUFLEN] = calloc((size_t)nvms, sizeof *uuids);
  if (!uuids) abort();
  for (int i = 0; i < nvms && rc == 0; i++) {
    CLEANUP_VIRDOMAIN virDomainPtr dom = NULL;
    vm_errors_mute(true);
    if (vm_lookup(conn, vms[i], &dom) == 0 && virDomainGetUUIDString(dom, uuids[i]) == 0)
      for (int k = 0; k < i && rc == 0; k++)
        if (strcmp(uuids[i], uuids[k]) == 0) {
          vm_errors_mute(false);
          rc = vm_usage_error("'%s' and '%s' are one VM", vms[k], vms[i]);
          vm_errors_mute(true);
        }
    vm_errors_mute(false);
  }
  free(uuids);
  size_t njobs = o_template ? 1 : (size_t)nvms;
  struct batch b = { calloc(njobs, sizeof *b.jobs), njobs, 0, 0, PTHREAD_MUTEX_INITIALIZER };
  if (!b.jobs) abort();
  for (int i = 0; i < nvms; i++) b.jobs[i] = (struct vmp_patch_job){ .vm = vms[i], .conn = conn, .src = &src };
  if (o_template)
    b.jobs[0] = (struct vmp_patch_job){ .vm = o_as, .conn = conn, .src = &src, .template_from = o_template };
  if (rc == 0) {
    size_t nth = (size_t)o_parallel < b.n ? (size_t)o_parallel : b.n;
    pthread_t th[16];
    size_t started = 0;
    for (; started < nth; started++)
      if (pthread_create(&th[started], NULL, worker, &b) != 0) break;
    if (started == 0) worker(&b);
    for (size_t i = 0; i < started; i++) pthread_join(th[i], NULL);
    /* The report: each VM, and those the rollout did not reach. */
    CLEANUP_JSON json_object *rows = json_object_new_array();
    int worst = 0;
    size_t patched = 0;
    for (size_t i = 0; i < b.n; i++) {
      struct vmp_patch_job *j = &b.jobs[i];
      json_object *r = json_object_new_object();
      json_object_object_add(r, "vm", json_object_new_string(j->vm));
      json_object_object_add(r, "result", json_object_new_string(j->result ? j->result : "not-started"));
      if (vm_opts.format == VM_FMT_JSON) {
        json_object *u = json_object_new_array();
        for (size_t k = 0; k < j->updated.n; k++) json_object_array_add(u, json_object_new_string(j->updated.v[k]));
        json_object_object_add(r, "updated", u);
        json_object_object_add(r, "reboot", json_object_new_boolean(j->reboot));
        json_object_object_add(r, "rebooted", json_object_new_boolean(j->rebooted));
      } else {
        CLEANUP_FREE char *u = vm_strdup_printf("%zu", j->updated.n);
        json_object_object_add(r, "updated", json_object_new_string(u));
        json_object_object_add(r, "reboot", json_object_new_string(j->rebooted ? "done" : j->reboot ? "pending" : "no"));
      }
      json_object_object_add(r, "error", j->error ? json_object_new_string(j->error) : NULL);
      json_object_array_add(rows, r);
      if (!j->result && worst == 0) worst = VM_EXIT_STATE;
      if (j->rc && (worst == 0 || worst == VM_EXIT_STATE || j->rc != VM_EXIT_VERIFY)) worst = j->rc;
      if (j->result && strcmp(j->result, "patched") == 0) patched++;
    }
    if (b.failures >= o_max_failures && b.next < b.n)
      vm_fail(VM_EXIT_STATE, "rollout stopped after %d failure%s (--max-failures %d): %zu VM%s not started",
              b.failures, b.failures == 1 ? "" : "s", o_max_failures, b.n - b.next, b.n - b.next == 1 ? "" : "s");
    int prc = vm_print_list(rows, apply_cols);
    vm_info("%zu of %zu VM%s patched", patched, b.n, b.n == 1 ? "" : "s");
    rc = prc ? prc : vm_interrupted() ? vm_fail_interrupted() : worst;
  }
  for (size_t i = 0; i < b.n; i++) {
    free(b.jobs[i].error);
    vm_strv_free(&b.jobs[i].updated);
  }
  free(b.jobs);
  free(src.dir);
  free(src.base);
  vm_strv_free(&src.packages);
  vm_strv_free(&src.files);
  vmp_feed_free(&src.feed);
  return rc;
}

int cmd_apply(int argc, char **argv)
{
  struct poptOption table[] = {
    { "repo", '\0', POPT_ARG_STRING, &o_repo, 0,
      "the APT repository to update from: a directory (a flat repository: Packages and the .debs) or a file:// URL "
      "of one (required)", "DIR" },
    { "packages", '\0', POPT_ARG_ARGV, &o_packages, 0,
      "only these packages (comma-separated, repeatable); default: every package the repository has newer", "P,..." },
    { "security-only", '\0', POPT_ARG_NONE, &o_security_only, 0,
      "only the packages that --feed says are vulnerable and fixed", NULL },
    { "feed", '\0', POPT_ARG_STRING, &o_feed, 0, "the OSV feed for --security-only (as scan reads it)", "PATH" },
    { "parallel", '\0', POPT_ARG_INT, &o_parallel, 0, "VMs patched at once (1 to 16; default: 1)", "N" },
    { "max-failures", '\0', POPT_ARG_INT, &o_max_failures, 0,
      "stop the rollout (start no more VMs) after K failed VMs (default: 1)", "K" },
    { "template", '\0', POPT_ARG_STRING, &o_template, 0,
      "patch a copy of this template instead of VMs, sealed again as the new template --as (the template itself, "
      "which its linked clones stand on, is not changed)", "NAME" },
    { "as", '\0', POPT_ARG_STRING, &o_as, 0, "the name of the patched template (with --template)", "NEW" },
    { "pool", '\0', POPT_ARG_STRING, &o_pool, 0,
      "the template pool (default: $VMKIT_TEMPLATE_POOL, else vmkit-templates)", "POOL" },
    { "reboot", '\0', POPT_ARG_STRING, &o_reboot, 0,
      "running VMs: reboot after the patch when an updated package needs it (kernel, libc, systemd: auto, the "
      "default), always, or never (shut-off VMs are always booted for their check)", "auto|always|never" },
    { "timeout", '\0', POPT_ARG_INT, &o_timeout, 0,
      "seconds a patched VM has to boot and pass its check, and each apt-get step in a running VM has (default: 600)",
      "SECONDS" },
    VM_POPT_LOCK, VM_POPT_COMMON, POPT_TABLEEND
  };
  CLEANUP_POPT poptContext ctx = NULL;
  const char **args;
  int nargs;
  int rc = vm_parse(&ctx, argc, argv, table,
                    "VM...|--template NAME --as NEW --repo DIR [--packages P,...|--security-only --feed PATH]",
                    "Updates Debian VMs from an APT repository, each behind a snapshot: a shut-off VM\n"
                    "offline through libguestfs, then booted, checked (its agent answers, no failed unit)\n"
                    "and shut down; a running VM through its guest agent, rebooted if needed, checked.\n"
                    "A VM that fails its check is reverted to the snapshot (and started again if it ran).\n"
                    "A template is patched as a new one (--template NAME --as NEW), sealed again.",
                    0, -1, &args, &nargs);
  if (rc) return rc == VM_DONE ? 0 : rc;
  rc = apply_run(args, nargs);
  for (size_t i = 0; o_packages && o_packages[i]; i++) free(o_packages[i]);
  free(o_packages);
  o_packages = NULL;
  free(o_reboot);
  free(o_template);
  free(o_as);
  free(o_pool);
  o_reboot = o_template = o_as = o_pool = NULL;
  return rc;
}
