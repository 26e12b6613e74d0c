/* vmpatch apply: updates shut-off Debian VMs from a given APT repository, offline
 * through libguestfs, each behind a snapshot (vmsnap's library), then boots it,
 * checks it (its agent answers, systemd reports no failed unit) and shuts it
 * down again; a VM that fails its check is reverted to the snapshot. Batches:
 * --parallel VMs at once, the rollout stopped after --max-failures.
 *
 * A run killed at any instant leaves a mark in the VM's metadata (the
 * snapshot's name and the step), which the next apply of that VM reads first:
 * a patch not yet checked is reverted, a checked one is finished. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "vmkit-gfs.h"
#include "vmkit-snap.h"
#include "vmpatch.h"

#define APPLY_NS "https://vmkit.dev/xmlns/vmpatch/1"
#define APPLY_PREFIX "vmpatch"
/* Where the repository and apt's state of this run live inside the guest. */
#define GUEST_DIR "/var/lib/vmpatch-apply"

static char *o_repo, **o_packages, *o_feed;
static int o_security_only, o_parallel = 1, o_max_failures = 1, o_timeout = 600;

static const struct vm_column apply_cols[] = {
  { "vm", "VM", VM_COL_STR },
  { "result", "RESULT", VM_COL_STR },
  { "updated", "UPDATED", VM_COL_STR },
  { "reboot", "REBOOT", VM_COL_STR },
  { "error", "ERROR", VM_COL_STR },
  { NULL, NULL, 0 },
};

/* What the run patches with: a directory holding a flat APT repository (its
 * Packages index, checked here before any VM is touched), and the packages
 * named or found vulnerable. */
struct patch_src {
  char *dir;  /* absolute */
  char *base; /* its last component: the folder inside GUEST_DIR */
  struct vm_strv packages;
  struct vmp_feed feed; /* --security-only */
};

struct job {
  const char *vm;
  virConnectPtr conn; /* the run's one connection: libvirt serves its threads */
  const struct patch_src *src;
  int rc;
  const char *result; /* patched, up-to-date, reverted, failed, not-started */
  char *error;
  struct vm_strv updated; /* "name old -> new" */
  bool reboot;
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
  struct vm_strv files = { 0 };
  char why[256];
  int rc = 0;
  if (vmp_deb_packages_parse(text, len, &files, why, sizeof why) < 0)
    rc = vm_fail(VM_EXIT_FAIL, "repository %s: Packages: %s", arg, why);
  for (size_t i = 0; rc == 0 && i < files.n; i++) {
    CLEANUP_FREE char *f = vm_strdup_printf("%s/%s", src->dir, files.v[i]);
    if (stat(f, &st) < 0 || !S_ISREG(st.st_mode))
      rc = vm_fail(VM_EXIT_FAIL, "repository %s: Packages names '%s', which it does not hold", arg, files.v[i]);
  }
  vm_strv_free(&files);
  return rc;
}

/* ---- The mark in the VM's metadata ---------------------------------------------------- */

static int mark_write(virDomainPtr dom, const char *snapshot, const char *step)
{
  if (!snapshot) return vm_meta_write(dom, APPLY_NS, APPLY_PREFIX, NULL);
  CLEANUP_XMLDOC xmlDocPtr doc = xmlNewDoc(BAD_CAST "1.0");
  xmlNodePtr root = xmlNewNode(NULL, BAD_CAST "apply");
  xmlDocSetRootElement(doc, root);
  vm_xml_set(root, "snapshot", snapshot);
  vm_xml_set(root, "step", step);
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

/* Back to the snapshot taken before the patch, which then goes. */
static int revert(virConnectPtr conn, virDomainPtr *dom, const char *vm, const char *snapshot)
{
  vm_down(*dom, true);
  struct vm_snap_revert_opts ro = { 0 };
  int rc = vm_snap_revert(conn, dom, vm, snapshot, &ro);
  if (rc == 0) rc = mark_write(*dom, snapshot, "reverted");
  if (rc == 0) rc = vm_snap_delete(conn, *dom, vm, snapshot);
  if (rc == 0) rc = mark_write(*dom, NULL, NULL);
  return rc;
}

/* What a killed apply left: a patch not checked is reverted, a checked one kept. */
static int recover(virConnectPtr conn, virDomainPtr *dom, const char *vm)
{
  CLEANUP_XMLDOC xmlDocPtr mark = NULL;
  int rc = vm_meta_read(*dom, APPLY_NS, &mark);
  if (rc || !mark) return rc;
  xmlNodePtr root = xmlDocGetRootElement(mark);
  CLEANUP_FREE char *snapshot = root ? (char *)xmlGetProp(root, BAD_CAST "snapshot") : NULL;
  CLEANUP_FREE char *step = root ? (char *)xmlGetProp(root, BAD_CAST "step") : NULL;
  CLEANUP_FREE char *pid = root ? (char *)xmlGetProp(root, BAD_CAST "pid") : NULL;
  if (!snapshot || !step) return mark_write(*dom, NULL, NULL);
  bool exists = vm_snap_exists(*dom, snapshot);
  bool checked = strcmp(step, "checked") == 0;
  /* A run killed during its check leaves the VM running; one that was started
   * since by someone is not taken down here. */
  if (virDomainIsActive(*dom) == 1 && !checked)
    return vm_fail(VM_EXIT_STATE, "VM '%s' runs, and vmpatch (pid %s) did not finish patching it: shut it down, then "
                   "apply again (it reverts to snapshot '%s'), or delete the snapshot and the mark with vmsnap and "
                   "virsh metadata", vm, pid ? pid : "?", snapshot);
  if (!exists && !checked)
    return vm_fail(VM_EXIT_STATE, "VM '%s' was left half-patched by vmpatch (pid %s), and its snapshot '%s' is gone: "
                   "check the guest, then remove the mark (virsh metadata --uri %s --remove)", vm, pid ? pid : "?",
                   snapshot, APPLY_NS);
  if (checked) {
    vm_info("finishing the patch of '%s' that vmpatch (pid %s) did not finish", vm, pid ? pid : "?");
    vm_down(*dom, false);
    if (exists && (rc = vm_snap_delete(conn, *dom, vm, snapshot))) return rc;
    return mark_write(*dom, NULL, NULL);
  }
  vm_info("reverting '%s' to snapshot '%s': vmpatch (pid %s) did not finish patching it", vm, snapshot,
          pid ? pid : "?");
  return revert(conn, dom, vm, snapshot);
}

/* ---- The patch, offline ------------------------------------------------------------------- */

static int read_status(guestfs_h *g, const char *vm, struct vmp_target *t)
{
  const char *status = "/var/lib/dpkg/status";
  size_t len;
  CLEANUP_FREE char *text = guestfs_read_file(g, status, &len);
  if (!text) return vm_fail_gfs(g, "cannot read %s of VM '%s'", status, vm);
  char why[256];
  if (vmp_dpkg_status_parse(text, len, t, why, sizeof why) < 0)
    return vm_fail(VM_EXIT_FAIL, "%s of VM '%s': %s", status, vm, why);
  return 0;
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

/* Runs apt-get in the guest (guestfs_command: a chroot of the guest's root, its
 * own binaries), its sources this run's repository alone, its lists and
 * downloads in GUEST_DIR: the guest's own apt state is not touched. */
static int apt(guestfs_h *g, const char *vm, const struct patch_src *src, const char *const *verb, size_t nverb)
{
  CLEANUP_FREE char *list = vm_strdup_printf("-oDir::Etc::SourceList=%s/sources.list", GUEST_DIR);
  CLEANUP_FREE char *parts = vm_strdup_printf("-oDir::Etc::SourceParts=%s/parts", GUEST_DIR);
  CLEANUP_FREE char *lists = vm_strdup_printf("-oDir::State::Lists=%s/lists", GUEST_DIR);
  CLEANUP_FREE char *arch = vm_strdup_printf("-oDir::Cache::Archives=%s/archives", GUEST_DIR);
  const char *fixed[] = { "/usr/bin/env", "DEBIAN_FRONTEND=noninteractive", "/usr/bin/apt-get", "-q", "-y",
                          list, parts, lists, arch, "-oAPT::Sandbox::User=root",
                          "-oDpkg::Options::=--force-confdef", "-oDpkg::Options::=--force-confold" };
  size_t nf = sizeof fixed / sizeof fixed[0];
  char **argv = calloc(nf + nverb + src->packages.n + 1, sizeof *argv);
  if (!argv) abort();
  size_t n = 0;
  for (size_t i = 0; i < nf; i++) argv[n++] = (char *)fixed[i];
  for (size_t i = 0; i < nverb; i++) argv[n++] = (char *)verb[i];
  argv[n] = NULL;
  if (vm_opts.verbose) {
    CLEANUP_FREE char *cmd = vm_argv_str(argv);
    vm_debug("VM '%s': running in the guest: %s", vm, cmd);
  }
  char *out = guestfs_command(g, argv);
  free(argv);
  if (!out) return vm_fail_gfs(g, "VM '%s': apt-get %s failed in the guest", vm, verb[0]);
  vm_debug("%s", out);
  free(out);
  return 0;
}

/* The packages to update: those named, or those the feed says have a fix. */
static void wanted(const struct patch_src *src, const struct vmp_target *before, guestfs_h *g, struct vm_strv *out)
{
  for (size_t i = 0; i < src->packages.n; i++) vm_strv_add(out, src->packages.v[i]);
  if (!o_security_only) return;
  struct vmp_target t = *before;
  CLEANUP_FREE char *osr = guestfs_read_file(g, "/etc/os-release", &(size_t){ 0 });
  if (!osr) osr = guestfs_read_file(g, "/usr/lib/os-release", &(size_t){ 0 });
  if (!osr || vmp_os_release_parse(osr, strlen(osr), &t.os_id, &t.os_version) < 0) return;
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

/* The packages whose version changed, or that came new. */
static void diff(const struct vmp_target *a, const struct vmp_target *b, struct job *j)
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
}

static int patch_offline(virDomainPtr dom, struct job *j)
{
  const struct patch_src *src = j->src;
  CLEANUP_XMLDOC xmlDocPtr doc = vm_domain_doc(dom, VIR_DOMAIN_XML_INACTIVE);
  if (!doc) return VM_EXIT_FAIL;
  struct vm_disk *disks = NULL;
  size_t nd = 0;
  vm_domain_disks(doc, &disks, &nd);
  struct vmp_target before = { 0 }, after = { 0 };
  struct vm_strv pkgs = { 0 };
  CLEANUP_STRV char **roots = NULL;
  CLEANUP_FREE char *guest_repo = vm_strdup_printf("%s/%s", GUEST_DIR, src->base);
  CLEANUP_FREE char *line = vm_strdup_printf("deb [trusted=yes] file:%s ./\n", guest_repo);
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
  wanted(src, &before, g, &pkgs);
  if ((o_security_only || src->packages.n) && pkgs.n == 0) {
    j->result = "up-to-date";
    goto out;
  }
  /* The repository and apt's state of this run, inside the guest. */
  CLEANUP_FREE char *lists_partial = vm_strdup_printf("%s/lists/partial", GUEST_DIR);
  CLEANUP_FREE char *arch_partial = vm_strdup_printf("%s/archives/partial", GUEST_DIR);
  CLEANUP_FREE char *parts = vm_strdup_printf("%s/parts", GUEST_DIR);
  CLEANUP_FREE char *list = vm_strdup_printf("%s/sources.list", GUEST_DIR);
  if (guestfs_rm_rf(g, GUEST_DIR) < 0 || guestfs_mkdir_p(g, lists_partial) < 0 ||
      guestfs_mkdir_p(g, arch_partial) < 0 || guestfs_mkdir_p(g, parts) < 0 ||
      guestfs_write(g, list, line, strlen(line)) < 0 || guestfs_copy_in(g, src->dir, GUEST_DIR) < 0) {
    rc = vm_fail_gfs(g, "cannot copy repository %s into VM '%s'", src->dir, j->vm);
    goto out;
  }
  vm_info("VM '%s': updating from %s", j->vm, src->dir);
  const char *update[] = { "update" };
  if ((rc = apt(g, j->vm, src, update, 1))) goto out;
  if (pkgs.n) {
    const char **inst = calloc(pkgs.n + 2, sizeof *inst);
    if (!inst) abort();
    inst[0] = "install";
    inst[1] = "--only-upgrade";
    for (size_t i = 0; i < pkgs.n; i++) inst[2 + i] = pkgs.v[i];
    rc = apt(g, j->vm, src, inst, pkgs.n + 2);
    free(inst);
  } else {
    const char *up[] = { "upgrade" };
    rc = apt(g, j->vm, src, up, 1);
  }
  if (rc == 0) rc = read_status(g, j->vm, &after);
  if (rc == 0) diff(&before, &after, j);
  if (guestfs_rm_rf(g, GUEST_DIR) < 0 && rc == 0) rc = vm_fail_gfs(g, "cannot clean %s in VM '%s'", GUEST_DIR, j->vm);
  if (rc == 0 && (guestfs_umount_all(g) < 0 || guestfs_shutdown(g) < 0))
    rc = vm_fail_gfs(g, "cannot write the disks of VM '%s'", j->vm);
  if (rc == 0) j->result = j->updated.n ? "patched" : "up-to-date";
out:
  if (g) guestfs_close(g);
  target_clear(&before);
  target_clear(&after);
  vm_strv_free(&pkgs);
  vm_disks_free(disks, nd);
  if (rc == 0 && vm_interrupted()) rc = vm_fail_interrupted();
  return rc;
}

/* ---- The check ------------------------------------------------------------------------------ */

/* Boots the VM and waits for its agent, then for systemd to finish booting: it
 * must say "running" (no unit failed). 0, or VM_EXIT_VERIFY with the reason. */
static int check(virDomainPtr dom, const char *vm, char **why)
{
  *why = NULL;
  if (virDomainCreate(dom) < 0) {
    *why = vm_strdup_printf("it does not start: %s", vm_virt_message());
    return VM_EXIT_VERIFY;
  }
  vm_info("VM '%s': booted, waiting for its agent (up to %d s)", vm, o_timeout);
  int64_t deadline = vm_now_ms() + (int64_t)o_timeout * 1000;
  while (!vm_agent_answers(dom)) {
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
  if (out) out[strcspn(out, "\n")] = '\0';
  if (code == 0) return 0;
  char *failed[] = { "systemctl", "list-units", "--failed", "--plain", "--no-legend", "--no-pager", NULL };
  CLEANUP_FREE char *units = NULL;
  vm_errors_mute(true);
  if (vm_agent_exec(dom, failed, 30, &code, &units) == 0 && units) {
    for (char *p = units; *p; p++)
      if (*p == '\n') *p = ' ';
  }
  vm_errors_mute(false);
  *why = vm_strdup_printf("systemd says '%s'%s%s", out && *out ? out : "?", units && *units ? ", failed: " : "",
                          units && *units ? units : "");
  return VM_EXIT_VERIFY;
}

/* ---- One VM ------------------------------------------------------------------------------- */

static int apply_vm(struct job *j)
{
  virConnectPtr conn = j->conn;
  CLEANUP_VIRDOMAIN virDomainPtr dom = NULL;
  int rc = vm_lookup(conn, j->vm, &dom);
  if (rc || (rc = vm_snap_lock(conn, &dom, j->vm)) || (rc = recover(conn, &dom, j->vm))) return rc;
  int state = vm_domain_state(dom);
  if (state != VIR_DOMAIN_SHUTOFF)
    return vm_fail(VM_EXIT_STATE, "VM '%s' is %s: vmpatch apply patches shut-off VMs", j->vm, vm_state_name(state));
  CLEANUP_XMLDOC xmlDocPtr doc = vm_domain_doc(dom, VIR_DOMAIN_XML_INACTIVE);
  if (!doc) return VM_EXIT_FAIL;
  if (vm_domain_encrypted(doc))
    return vm_fail(VM_EXIT_STATE, "VM '%s' has encrypted disks, which vmpatch apply does not snapshot yet", j->vm);
  /* Its saved memory would be restored over the patched disks at the check. */
  if (virDomainHasManagedSaveImage(dom, 0) == 1)
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

  /* The snapshot first; the mark names it before anything changes. */
  char name[64];
  time_t now = time(NULL);
  strftime(name, sizeof name, "vmpatch-%Y%m%d-%H%M%S", gmtime(&now));
  struct vm_snap_create_opts so = { .description = "before vmpatch apply", .disk_only = true };
  if ((rc = vm_snap_create(conn, dom, j->vm, name, &so))) return rc;
  if ((rc = mark_write(dom, name, "patching"))) {
    vm_snap_delete(conn, dom, j->vm, name);
    return rc;
  }
  rc = patch_offline(dom, j);
  if (rc || !j->updated.n) {
    /* Nothing changed, or the change failed halfway: back to the snapshot. */
    int r = revert(conn, &dom, j->vm, name);
    if (rc) j->result = r == 0 ? "reverted" : "failed";
    return rc ? rc : r;
  }
  CLEANUP_FREE char *why = NULL;
  rc = check(dom, j->vm, &why);
  if (rc == VM_EXIT_VERIFY) {
    j->error = vm_strdup_printf("VM '%s' failed its check after the patch (%s): reverted to snapshot '%s'", j->vm,
                                why, name);
    vm_fail(VM_EXIT_VERIFY, "%s", j->error);
    int r = revert(conn, &dom, j->vm, name);
    j->result = r == 0 ? "reverted" : "failed";
    return r == 0 ? VM_EXIT_VERIFY : r;
  }
  if (rc) { /* interrupted: not checked, so not kept */
    j->result = revert(conn, &dom, j->vm, name) == 0 ? "reverted" : "failed";
    return rc;
  }
  rc = mark_write(dom, name, "checked");
  if (rc == 0) vm_info("VM '%s': checked, shutting it down again", j->vm);
  vm_down(dom, false);
  if (rc == 0 && virDomainIsActive(dom) == 1) rc = vm_fail(VM_EXIT_FAIL, "VM '%s' does not stop after its check", j->vm);
  if (rc == 0) rc = vm_snap_delete(conn, dom, j->vm, name);
  if (rc == 0) rc = mark_write(dom, NULL, NULL);
  if (rc) j->result = "failed";
  return rc;
}

/* ---- The batch -------------------------------------------------------------------------------- */

struct batch {
  struct job *jobs;
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
    struct job *j = &b->jobs[i];
    j->rc = apply_vm(j);
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
  if (o_parallel < 1 || o_parallel > 16) return vm_usage_error("invalid --parallel %d: expected 1 to 16", o_parallel);
  if (o_max_failures < 1) return vm_usage_error("invalid --max-failures %d: expected 1 or more", o_max_failures);
  if (o_timeout < 30 || o_timeout > 86400)
    return vm_usage_error("invalid --timeout %d: expected 30 to 86400 seconds", o_timeout);
  if (!o_repo) return vm_usage_error("--repo DIR is required");
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
  int rc = repo_load(o_repo, &src);
  if (rc == 0 && o_security_only) rc = vmp_feed_load(o_feed, &src.feed);
  /* One connection, opened and asked about its host here, before the threads:
   * what the layers below learn of it once is then only read. */
  CLEANUP_VIRCONN virConnectPtr conn = NULL;
  if (rc == 0 && (rc = vm_events_init()) == 0 && !(conn = vm_connect())) rc = VM_EXIT_FAIL;
  if (rc == 0 && !vm_conn_is_local(conn))
    rc = vm_fail(VM_EXIT_STATE, "cannot patch VMs of %s: libguestfs writes this machine's disks only; run 'vmpatch "
                 "apply' on that host", vm_conn_host_name(conn));
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
  struct batch b = { calloc((size_t)nvms, sizeof *b.jobs), (size_t)nvms, 0, 0, PTHREAD_MUTEX_INITIALIZER };
  if (!b.jobs) abort();
  for (int i = 0; i < nvms; i++) b.jobs[i] = (struct job){ .vm = vms[i], .conn = conn, .src = &src };
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
      struct job *j = &b.jobs[i];
      json_object *r = json_object_new_object();
      json_object_object_add(r, "vm", json_object_new_string(j->vm));
      json_object_object_add(r, "result", json_object_new_string(j->result ? j->result : "not-started"));
      if (vm_opts.format == VM_FMT_JSON) {
        json_object *u = json_object_new_array();
        for (size_t k = 0; k < j->updated.n; k++) json_object_array_add(u, json_object_new_string(j->updated.v[k]));
        json_object_object_add(r, "updated", u);
        json_object_object_add(r, "reboot", json_object_new_boolean(j->reboot));
      } else {
        CLEANUP_FREE char *u = vm_strdup_printf("%zu", j->updated.n);
        json_object_object_add(r, "updated", json_object_new_string(u));
        json_object_object_add(r, "reboot", json_object_new_string(j->reboot ? "yes" : "no"));
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
    { "timeout", '\0', POPT_ARG_INT, &o_timeout, 0,
      "seconds a patched VM has to boot and pass its check (default: 600)", "SECONDS" },
    VM_POPT_LOCK, VM_POPT_COMMON, POPT_TABLEEND
  };
  CLEANUP_POPT poptContext ctx = NULL;
  const char **args;
  int nargs;
  int rc = vm_parse(&ctx, argc, argv, table, "VM... --repo DIR [--packages P,...|--security-only --feed PATH]",
                    "Updates shut-off Debian VMs from an APT repository, offline through libguestfs: each\n"
                    "behind a snapshot, then booted and checked (its agent answers, no failed unit) and\n"
                    "shut down; a VM that fails its check is reverted to the snapshot.",
                    1, -1, &args, &nargs);
  if (rc) return rc == VM_DONE ? 0 : rc;
  rc = apply_run(args, nargs);
  for (size_t i = 0; o_packages && o_packages[i]; i++) free(o_packages[i]);
  free(o_packages);
  o_packages = NULL;
  return rc;
}
