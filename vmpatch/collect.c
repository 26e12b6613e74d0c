/* vmpatch inventory: what is installed on VMs and templates, read offline from
 * their disks through libguestfs (read-only: no agent, no ssh, running or shut
 * off), and on the host itself from its package database. The result is a
 * vmpatch-inventory document (inventory.c), or one row per package. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "vmkit-gfs.h"
#include "vmpatch.h"

static const struct vm_column inventory_cols[] = {
  { "target", "TARGET", VM_COL_STR },
  { "kind", "KIND", VM_COL_STR },
  { "os", "OS", VM_COL_STR },
  { "package", "PACKAGE", VM_COL_STR },
  { "version", "VERSION", VM_COL_STR },
  { "arch", "ARCH", VM_COL_STR },
  { "source", "SOURCE", VM_COL_STR },
  { "source_version", "SOURCE-VERSION", VM_COL_STR },
  { NULL, NULL, 0 },
};

/* ---- The host ------------------------------------------------------------------------- */

/* os-release(5): /etc/os-release, else /usr/lib/os-release. */
static int host_os(struct vmp_target *t)
{
  const char *paths[] = { "/etc/os-release", "/usr/lib/os-release" };
  for (size_t i = 0; i < 2; i++) {
    size_t len;
    CLEANUP_FREE char *text = vm_read_file(paths[i], 1 << 16, &len);
    if (!text) continue;
    if (vmp_os_release_parse(text, len, &t->os_id, &t->os_version) == 0) return 0;
    return vm_fail(VMP_EXIT_BADINPUT, "%s has no ID", paths[i]);
  }
  return vm_fail(VM_EXIT_STATE, "this host has no os-release file (/etc/os-release, /usr/lib/os-release)");
}

static int collect_host(struct vmp_target *t)
{
  char host[256] = "";
  if (gethostname(host, sizeof host - 1) < 0 || !*host) snprintf(host, sizeof host, "localhost");
  t->name = vm_strdup(host);
  t->kind = vm_strdup("host");
  int rc = host_os(t);
  if (rc) return rc;
  CLEANUP_FREE char *out = NULL;
  char why[256];
  /* The database that this host's packages are in. */
  if (access("/var/lib/dpkg/status", F_OK) == 0) {
    t->format = VMP_DEB;
    char *argv[] = { "dpkg-query", "-W", "-f", VMP_DPKG_QUERY_FORMAT, NULL };
    if ((rc = vm_run_checked(argv, &out))) return rc;
    if (vmp_dpkg_query_parse(out, strlen(out), t, why, sizeof why) < 0)
      return vm_fail(VMP_EXIT_BADINPUT, "dpkg-query's output: %s", why);
  } else if (access("/var/lib/rpm", F_OK) == 0 || access("/usr/lib/sysimage/rpm", F_OK) == 0) {
    t->format = VMP_RPM;
    char *argv[] = { "rpm", "-qa", "--qf", VMP_RPM_QUERY_FORMAT, NULL };
    if ((rc = vm_run_checked(argv, &out))) return rc;
    if (vmp_rpm_qa_parse(out, strlen(out), t, why, sizeof why) < 0)
      return vm_fail(VMP_EXIT_BADINPUT, "rpm -qa's output: %s", why);
  } else {
    return vm_fail(VM_EXIT_STATE, "this host has no package database vmpatch reads (dpkg's, rpm's)");
  }
  vm_debug("host %s: %zu packages", t->name, t->npkgs);
  return 0;
}

/* ---- Encrypted disks: qemu-nbd opens them, libguestfs reads its export ----------------- */

/* A qemu-nbd serving one LUKS qcow2 decrypted on a unix socket. The image is
 * opened read-only, as the backing file of a throwaway overlay (--snapshot, in
 * the scratch folder: TMPDIR) that takes the appliance's writes (a journal
 * replay): libguestfs's direct backend cannot add an NBD drive read-only (its
 * own overlay over an nbd: URL fails), so the overlay is qemu-nbd's. With
 * force-share, as libguestfs does for a file, a running VM's disk opens too. */
struct nbd_child {
  pid_t pid;
  char *socket;
};

/* QEMU's option syntax doubles a comma inside a value. */
static char *qemu_opt_escape(const char *s)
{
  size_t n = strlen(s), extra = 0;
  for (size_t i = 0; i < n; i++) extra += s[i] == ',';
  char *o = malloc(n + extra + 1), *p = o;
  if (!o) abort();
  for (size_t i = 0; i < n; i++) {
    *p++ = s[i];
    if (s[i] == ',') *p++ = ',';
  }
  *p = '\0';
  return o;
}

static void nbd_stop(struct nbd_child *c)
{
  if (c->pid > 0) {
    kill(c->pid, SIGTERM);
    while (waitpid(c->pid, NULL, 0) < 0 && errno == EINTR) {}
    c->pid = 0;
  }
  if (c->socket) unlink(c->socket);
  free(c->socket);
  c->socket = NULL;
}

/* Does an NBD server answer on the socket (its greeting, "NBDMAGIC")? qemu-nbd
 * makes its socket before it opens the image, and exits when that fails (a
 * wrong key): the socket alone says nothing. */
static bool nbd_answers(const char *sock)
{
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  struct sockaddr_un a = { .sun_family = AF_UNIX };
  snprintf(a.sun_path, sizeof a.sun_path, "%s", sock);
  char magic[8];
  size_t got = 0;
  if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0) {
    struct timeval tv = { 2, 0 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    while (got < sizeof magic) {
      ssize_t r = read(fd, magic + got, sizeof magic - got);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) break;
      got += (size_t)r;
    }
  }
  close(fd);
  return got == sizeof magic && memcmp(magic, "NBDMAGIC", 8) == 0;
}

/* Starts qemu-nbd (an argv, no shell) as a child that dies with this tool however
 * it dies (PR_SET_PDEATHSIG), its key read by QEMU from the key file, never on
 * the argv; waits until it listens. 0, or an exit code after a message. */
static int nbd_start(const char *path, const char *uuid, const char *scratch, const char *sock, struct nbd_child *c)
{
  if (strlen(sock) >= 108) /* sizeof sun_path */
    return vm_fail(VM_EXIT_FAIL, "cannot serve encrypted disk '%s': the socket path '%s' is too long (set TMPDIR)",
                   path, sock);
  CLEANUP_FREE char *key = vm_key_path(uuid);
  if (access(key, R_OK) < 0)
    return vm_fail_errno(errno == ENOENT ? VM_EXIT_NOTFOUND : VM_EXIT_FAIL, "cannot read the disk key '%s'", key);
  CLEANUP_FREE char *ekey = qemu_opt_escape(key), *epath = qemu_opt_escape(path);
  CLEANUP_FREE char *object = vm_strdup_printf("secret,id=sec0,file=%s", ekey);
  CLEANUP_FREE char *image =
    vm_strdup_printf("driver=qcow2,file.filename=%s,encrypt.key-secret=sec0,force-share=on", epath);
  CLEANUP_FREE char *sockopt = vm_strdup_printf("--socket=%s", sock);
  char *argv[] = { "qemu-nbd", "--snapshot", "--persistent", "--shared=8", "--object", object, "--image-opts",
                   sockopt, image, NULL };
  if (vm_opts.verbose) {
    CLEANUP_FREE char *cmd = vm_argv_str(argv);
    vm_debug("running: %s", cmd);
  }
  /* Its stderr goes to a file of the scratch folder, not a pipe: a pipe closed
   * while it serves would kill it with SIGPIPE at its next message. */
  CLEANUP_FREE char *errpath = vm_strdup_printf("%s.err", sock);
  int errfd = open(errpath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (errfd < 0) return vm_fail_errno(VM_EXIT_FAIL, "cannot start qemu-nbd: %s", errpath);
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) {
    close(errfd);
    return vm_fail_errno(VM_EXIT_FAIL, "cannot start qemu-nbd");
  }
  if (pid == 0) {
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGHUP, SIG_DFL);
    signal(SIGPIPE, SIG_DFL);
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) _exit(127);
    setenv("TMPDIR", scratch, 1); /* the overlay of --snapshot */
    int devnull = open("/dev/null", O_RDWR);
    dup2(devnull, STDIN_FILENO);
    dup2(devnull, STDOUT_FILENO);
    dup2(errfd, STDERR_FILENO);
    execvp(argv[0], argv);
    fprintf(stderr, "cannot run qemu-nbd: %s\n", strerror(errno));
    _exit(127);
  }
  close(errfd);
  c->pid = pid;
  c->socket = vm_strdup(sock);
  /* Ready once it answers; an exit before that says why on its stderr. */
  for (int i = 0; i < 300 && !vm_interrupted(); i++) {
    struct stat st;
    if (stat(sock, &st) == 0 && S_ISSOCK(st.st_mode) && nbd_answers(sock)) return 0;
    int status;
    if (waitpid(pid, &status, WNOHANG) == pid) {
      c->pid = 0;
      CLEANUP_FREE char *err = vm_read_file(errpath, 65536, NULL);
      if (err) err[strcspn(err, "\n")] = '\0';
      const char *why = err && *err ? err : "it exited";
      if (strncmp(why, "qemu-nbd: ", 10) == 0) why += 10;
      return vm_fail(VM_EXIT_FAIL, "qemu-nbd cannot open encrypted disk '%s': %s", path, why);
    }
    vm_sleep_ms(100);
  }
  nbd_stop(c);
  return vm_interrupted() ? vm_fail_interrupted()
                          : vm_fail(VM_EXIT_TIMEOUT, "qemu-nbd did not serve encrypted disk '%s' within 30 s", path);
}

/* ---- Guests: a VM's or a template's disks through libguestfs ---------------------------- */

/* A disk to read: a local file or device (format as its domain says), or an
 * encrypted one served by a qemu-nbd of ours. */
struct gdisk {
  const char *path, *format, *secret;
};

struct guest {
  guestfs_h *g;
  struct nbd_child *nbd;
  size_t nnbd;
  char *scratch;
};

static void guest_close(struct guest *gu)
{
  if (gu->g) guestfs_close(gu->g); /* the appliance first: it holds the NBD connections */
  gu->g = NULL;
  for (size_t i = 0; i < gu->nnbd; i++) nbd_stop(&gu->nbd[i]);
  free(gu->nbd);
  gu->nbd = NULL;
  gu->nnbd = 0;
  if (gu->scratch) vm_remove_tree(gu->scratch);
  free(gu->scratch);
  gu->scratch = NULL;
}

static int add_disks(struct guest *gu, const struct gdisk *d, size_t n, const char *what)
{
  for (size_t i = 0; i < n; i++) {
    int r;
    if (d[i].secret) {
      if (!gu->scratch && !(gu->scratch = vm_scratch_dir("patch"))) return VM_EXIT_FAIL;
      gu->nbd = realloc(gu->nbd, (gu->nnbd + 1) * sizeof *gu->nbd);
      if (!gu->nbd) abort();
      struct nbd_child *c = &gu->nbd[gu->nnbd];
      memset(c, 0, sizeof *c);
      gu->nnbd++;
      CLEANUP_FREE char *sock = vm_strdup_printf("%s/nbd%zu.sock", gu->scratch, i);
      int rc = nbd_start(d[i].path, d[i].secret, gu->scratch, sock, c);
      if (rc) return rc;
      CLEANUP_FREE char *server = vm_strdup_printf("unix:%s", sock);
      char *servers[] = { server, NULL };
      /* Writable for the appliance: its writes land in qemu-nbd's overlay. */
      r = guestfs_add_drive_opts(gu->g, "", GUESTFS_ADD_DRIVE_OPTS_FORMAT, "raw", GUESTFS_ADD_DRIVE_OPTS_PROTOCOL,
                                 "nbd", GUESTFS_ADD_DRIVE_OPTS_SERVER, servers, -1);
    } else if (d[i].format) {
      r = guestfs_add_drive_opts(gu->g, d[i].path, GUESTFS_ADD_DRIVE_OPTS_READONLY, 1,
                                 GUESTFS_ADD_DRIVE_OPTS_FORMAT, d[i].format, -1);
    } else {
      r = guestfs_add_drive_opts(gu->g, d[i].path, GUESTFS_ADD_DRIVE_OPTS_READONLY, 1, -1);
    }
    if (r < 0) return vm_fail_gfs(gu->g, "cannot open disk '%s' of %s", d[i].path, what);
  }
  return 0;
}

/* The os-release ID of a distribution as libguestfs's inspection names it. */
static const char *distro_os_id(const char *distro)
{
  static const char *const map[][2] = {
    { "opensuse", "opensuse-leap" }, { "oraclelinux", "ol" }, { "redhat-based", "rhel" },
    { "debian", "debian" }, { "ubuntu", "ubuntu" }, { "rhel", "rhel" },
  };
  for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
    if (strcmp(distro, map[i][0]) == 0) return map[i][1];
  return distro;
}

/* The guest's os-release (through its symlink, resolved inside the guest), else
 * what inspection says: Debian by its major version ("12", as its os-release
 * says), others major.minor. */
static int guest_os(guestfs_h *g, const char *root, struct vmp_target *t)
{
  const char *paths[] = { "/etc/os-release", "/usr/lib/os-release" };
  for (size_t i = 0; i < 2 && !t->os_id; i++) {
    if (guestfs_exists(g, paths[i]) <= 0) continue;
    CLEANUP_FREE char *real = guestfs_realpath(g, paths[i]);
    if (!real || guestfs_is_file(g, real) <= 0) continue;
    size_t len;
    CLEANUP_FREE char *text = guestfs_read_file(g, real, &len);
    if (text && len < (1 << 16)) vmp_os_release_parse(text, len, &t->os_id, &t->os_version);
  }
  if (t->os_id) return 0;
  CLEANUP_FREE char *distro = guestfs_inspect_get_distro(g, root);
  if (!distro || strcmp(distro, "unknown") == 0) return -1;
  t->os_id = vm_strdup(distro_os_id(distro));
  int major = guestfs_inspect_get_major_version(g, root), minor = guestfs_inspect_get_minor_version(g, root);
  if (major > 0)
    t->os_version = strcmp(distro, "debian") == 0 ? vm_strdup_printf("%d", major)
                                                  : vm_strdup_printf("%d.%d", major, minor < 0 ? 0 : minor);
  return 0;
}

/* Mounts the inspected filesystems read-only, "/" before "/usr" before "/boot/efi". */
static int mount_ro(guestfs_h *g, const char *root, const char *what)
{
  CLEANUP_STRV char **mps = guestfs_inspect_get_mountpoints(g, root);
  if (!mps) return vm_fail_gfs(g, "cannot inspect the filesystems of %s", what);
  size_t n = 0;
  while (mps[n]) n += 2;
  for (size_t len = 1; len < 4096; len++) {
    bool longer = false;
    for (size_t i = 0; i < n; i += 2) {
      size_t l = strlen(mps[i]);
      if (l > len) longer = true;
      /* A filesystem that does not mount (a missing /boot/efi) must not stop a
       * read of the root, which holds the package database. */
      if (l == len && guestfs_mount_ro(g, mps[i + 1], mps[i]) < 0) {
        if (l == 1) return vm_fail_gfs(g, "cannot mount the root filesystem of %s", what);
        vm_debug("%s: %s not mounted: %s", what, mps[i], guestfs_last_error(g));
      }
    }
    if (!longer) break;
  }
  return 0;
}

static int read_deb(guestfs_h *g, const char *what, struct vmp_target *t)
{
  const char *status = "/var/lib/dpkg/status";
  if (guestfs_is_file(g, status) <= 0)
    return vm_fail(VM_EXIT_STATE, "%s has no %s: cannot list its packages", what, status);
  size_t len;
  CLEANUP_FREE char *text = guestfs_read_file(g, status, &len);
  if (!text) return vm_fail_gfs(g, "cannot read %s of %s", status, what);
  char why[256];
  if (vmp_dpkg_status_parse(text, len, t, why, sizeof why) < 0)
    return vm_fail(VMP_EXIT_BADINPUT, "%s of %s: %s", status, what, why);
  return 0;
}

static int read_rpm(guestfs_h *g, const char *root, const char *what, struct vmp_target *t)
{
  struct guestfs_application2_list *apps = guestfs_inspect_list_applications2(g, root);
  if (!apps) return vm_fail_gfs(g, "cannot list the packages of %s", what);
  int rc = 0;
  t->pkgs = apps->len ? calloc(apps->len, sizeof *t->pkgs) : NULL;
  if (apps->len && !t->pkgs) abort();
  for (uint32_t i = 0; i < apps->len && rc == 0; i++) {
    const struct guestfs_application2 *a = &apps->val[i];
    if (strcmp(a->app2_name, "gpg-pubkey") == 0) continue;
    CLEANUP_FREE char *v = a->app2_epoch > 0 ? vm_strdup_printf("%d:%s-%s", a->app2_epoch, a->app2_version,
                                                                 a->app2_release)
                                             : vm_strdup_printf("%s-%s", a->app2_version, a->app2_release);
    const char *vwhy = NULL;
    if (!vmp_version_valid(VMP_RPM, v, &vwhy)) {
      rc = vm_fail(VMP_EXIT_BADINPUT, "%s: package '%s': version '%s': %s", what, a->app2_name, v, vwhy);
      break;
    }
    struct vmp_package *p = &t->pkgs[t->npkgs++];
    p->name = vm_strdup(a->app2_name);
    p->version = vm_strdup(v);
    p->arch = *a->app2_arch ? vm_strdup(a->app2_arch) : NULL;
    p->source = vm_strdup(*a->app2_source_package ? a->app2_source_package : a->app2_name);
    p->source_version = vm_strdup(v);
  }
  guestfs_free_application2_list(apps);
  return rc;
}

/* One libguestfs launch over the disks; the OS of the first root found. Every
 * owned local is declared before the first goto. */
static int read_guest(const struct gdisk *d, size_t n, const char *what, struct vmp_target *t)
{
  struct guest gu = { 0 };
  CLEANUP_STRV char **roots = NULL;
  CLEANUP_FREE char *pf = NULL;
  int rc = 0;
  if (!(gu.g = vm_gfs_open())) return VM_EXIT_FAIL;
  if ((rc = add_disks(&gu, d, n, what))) goto out;
  vm_progress("starting the libguestfs appliance", 0, 0);
  int r = guestfs_launch(gu.g);
  vm_progress_end();
  if (r < 0) {
    rc = vm_interrupted() ? vm_fail_interrupted() : vm_fail_gfs(gu.g, "cannot launch libguestfs for %s", what);
    goto out;
  }
  if (!(roots = guestfs_inspect_os(gu.g))) {
    rc = vm_fail_gfs(gu.g, "cannot inspect the disks of %s", what);
    goto out;
  }
  if (!roots[0]) {
    rc = vm_fail(VM_EXIT_STATE, "no operating system found on the disks of %s", what);
    goto out;
  }
  if (roots[1]) vm_warn("%s has several operating systems: the first, on %s, is read", what, roots[0]);
  pf = guestfs_inspect_get_package_format(gu.g, roots[0]);
  int f = pf ? vmp_pkgfmt_parse(pf) : -1;
  if (f < 0) {
    rc = vm_fail(VM_EXIT_STATE, "%s: its package format '%s' is not one vmpatch reads (deb, rpm)", what,
                 pf ? pf : "unknown");
    goto out;
  }
  t->format = (enum vmp_pkgfmt)f;
  if ((rc = mount_ro(gu.g, roots[0], what))) goto out;
  if (guest_os(gu.g, roots[0], t) < 0) {
    rc = vm_fail(VM_EXIT_STATE, "no operating system found on the disks of %s (no os-release, no distribution)",
                 what);
    goto out;
  }
  rc = t->format == VMP_DEB ? read_deb(gu.g, what, t) : read_rpm(gu.g, roots[0], what, t);
  if (rc == 0) vm_debug("%s: %s %s, %zu packages", what, t->os_id, t->os_version ? t->os_version : "", t->npkgs);
  guestfs_umount_all(gu.g);
  guestfs_shutdown(gu.g);
out:
  guest_close(&gu);
  if (rc == 0 && vm_interrupted()) rc = vm_fail_interrupted();
  return rc;
}

/* Does this machine see the file? */
static bool local_file(const char *path)
{
  struct stat st;
  return stat(path, &st) == 0 && (S_ISREG(st.st_mode) || S_ISBLK(st.st_mode));
}

static int collect_vm(virConnectPtr conn, const char *name, struct vmp_target *t)
{
  CLEANUP_VIRDOMAIN virDomainPtr dom = NULL;
  int rc = vm_lookup(conn, name, &dom);
  if (rc) return rc;
  t->name = vm_strdup(virDomainGetName(dom));
  t->kind = vm_strdup("vm");
  vm_info("reading VM '%s'", t->name);
  CLEANUP_XMLDOC xmlDocPtr doc = vm_domain_doc(dom, 0);
  if (!doc) return VM_EXIT_FAIL;
  struct vm_disk *disks = NULL;
  size_t nd = 0;
  vm_domain_disks(doc, &disks, &nd);
  struct vm_strv spaths = { 0 }, suuids = { 0 };
  vm_domain_disk_secrets(doc, &spaths, &suuids);
  struct gdisk *gd = calloc(nd ? nd : 1, sizeof *gd);
  if (!gd) abort();
  size_t n = 0;
  CLEANUP_FREE char *what = vm_strdup_printf("VM '%s'", t->name);
  /* libguestfs reads this machine's files. A file here at the path a remote
   * host's VM names is not known to be that disk (another host's files are its
   * own): such a VM is read on its host. */
  if (!vm_conn_is_local(conn))
    rc = vm_fail(VM_EXIT_STATE, "cannot read VM '%s' on %s: libguestfs reads this machine's disks only; run "
                 "'vmpatch inventory %s' on that host", t->name, vm_conn_host_name(conn), t->name);
  for (size_t i = 0; i < nd && rc == 0; i++) {
    if (!disks[i].device || strcmp(disks[i].device, "disk") != 0) continue;
    if (!disks[i].source) {
      rc = vm_fail(VM_EXIT_STATE, "cannot read VM '%s': its disk %s is not a file or a block device (%s)", t->name,
                   disks[i].target ? disks[i].target : "?", disks[i].type ? disks[i].type : "no source");
      break;
    }
    if (!local_file(disks[i].source)) {
      rc = vm_fail(VM_EXIT_FAIL, "cannot read VM '%s': its disk '%s' is missing", t->name, disks[i].source);
      break;
    }
    gd[n].path = disks[i].source;
    gd[n].format = disks[i].format;
    for (size_t k = 0; k < spaths.n; k++)
      if (strcmp(spaths.v[k], disks[i].source) == 0) gd[n].secret = suuids.v[k];
    if (gd[n].secret && (!gd[n].format || strcmp(gd[n].format, "qcow2") != 0)) {
      rc = vm_fail(VM_EXIT_STATE, "cannot read VM '%s': its encrypted disk '%s' is not a qcow2", t->name,
                   disks[i].source);
      break;
    }
    n++;
  }
  if (rc == 0 && n == 0) rc = vm_fail(VM_EXIT_STATE, "VM '%s' has no disk", t->name);
  if (rc == 0) rc = read_guest(gd, n, what, t);
  free(gd);
  vm_strv_free(&spaths);
  vm_strv_free(&suuids);
  vm_disks_free(disks, nd);
  return rc;
}

static int collect_template(virConnectPtr conn, const char *name, struct vmp_target *t)
{
  /* Shared, as a clone's: a template being deleted is not read halfway. */
  CLEANUP_FREE char *key = vm_strdup_printf("%s/%s", vm_default_template_pool(), name);
  CLEANUP_FREE char *lwhat = vm_strdup_printf("template '%s'", name);
  int rc = vm_check_name("template", name);
  if (rc || (rc = vm_lock_object(conn, "template", key, true, lwhat))) return rc;
  struct vm_template tpl;
  rc = vm_template_load(conn, NULL, name, false, &tpl);
  if (rc) return rc;
  t->name = vm_strdup(name);
  t->kind = vm_strdup("template");
  vm_info("reading template '%s'", name);
  CLEANUP_FREE char *what = vm_strdup_printf("template '%s'", name);
  CLEANUP_FREE char *disk = vm_template_local_disk(conn, &tpl);
  if (!disk)
    rc = vm_fail(VM_EXIT_STATE, "cannot read template '%s' on %s: libguestfs reads this machine's files, and this "
                 "machine has no copy of it (vmrun template push)", name, vm_conn_host_name(conn));
  struct gdisk d = { disk, "qcow2", NULL };
  if (rc == 0) rc = read_guest(&d, 1, what, t);
  vm_template_free(&tpl);
  return rc;
}

/* ---- The verb ---------------------------------------------------------------------------- */

static char **o_templates;
static int o_host;

/* One row per package: the table and TSV views. */
static json_object *package_rows(const struct vmp_inventory *inv)
{
  json_object *rows = json_object_new_array();
  for (size_t i = 0; i < inv->n; i++) {
    const struct vmp_target *t = &inv->targets[i];
    CLEANUP_FREE char *os = vm_strdup_printf("%s%s%s", t->os_id, t->os_version ? " " : "",
                                              t->os_version ? t->os_version : "");
    for (size_t k = 0; k < t->npkgs; k++) {
      const struct vmp_package *p = &t->pkgs[k];
      json_object *r = json_object_new_object();
      json_object_object_add(r, "target", json_object_new_string(t->name));
      json_object_object_add(r, "kind", json_object_new_string(t->kind));
      json_object_object_add(r, "os", json_object_new_string(os));
      json_object_object_add(r, "package", json_object_new_string(p->name));
      json_object_object_add(r, "version", json_object_new_string(p->version));
      json_object_object_add(r, "arch", json_object_new_string(p->arch ? p->arch : "-"));
      json_object_object_add(r, "source", json_object_new_string(p->source));
      json_object_object_add(r, "source_version", json_object_new_string(p->source_version));
      json_object_array_add(rows, r);
    }
  }
  return rows;
}

static struct vmp_target *new_target(struct vmp_inventory *inv)
{
  inv->targets = realloc(inv->targets, (inv->n + 1) * sizeof *inv->targets);
  if (!inv->targets) abort();
  struct vmp_target *t = &inv->targets[inv->n++];
  memset(t, 0, sizeof *t);
  return t;
}

static int inventory_run(const char **vms, int nvms)
{
  size_t ntpl = 0;
  while (o_templates && o_templates[ntpl]) ntpl++;
  if (nvms == 0 && ntpl == 0 && !o_host) return vm_usage_error("nothing to read: name a VM, --template NAME or --host");
  /* Targets are known by name in the inventory: one name, one target. */
  struct vm_strv names = { 0 };
  for (int i = 0; i < nvms; i++) vm_strv_add(&names, vms[i]);
  for (size_t i = 0; i < ntpl; i++) vm_strv_add(&names, o_templates[i]);
  char host[256] = "";
  if (o_host && gethostname(host, sizeof host - 1) == 0 && *host) vm_strv_add(&names, host);
  for (size_t i = 0; i < names.n; i++)
    for (size_t k = 0; k < i; k++)
      if (strcmp(names.v[i], names.v[k]) == 0) {
        int rc = o_host && i == names.n - 1 && *host
                   ? vm_usage_error("'%s' is also this host's name (--host): an inventory holds each target once",
                                    names.v[i])
                   : vm_usage_error("'%s' is named twice: an inventory holds each target once", names.v[i]);
        vm_strv_free(&names);
        return rc;
      }
  vm_strv_free(&names);

  vm_catch_signals();
  struct vmp_inventory inv = { 0 };
  int rc = 0;
  CLEANUP_VIRCONN virConnectPtr conn = NULL;
  if ((nvms || ntpl) && !(conn = vm_connect())) rc = VM_EXIT_FAIL;
  for (int i = 0; i < nvms && rc == 0; i++) {
    /* The same VM by its name and by its UUID: read and listed once. */
    CLEANUP_VIRDOMAIN virDomainPtr dom = NULL;
    if ((rc = vm_lookup(conn, vms[i], &dom))) break;
    bool again = false;
    for (size_t k = 0; k < inv.n && !again; k++) again = strcmp(inv.targets[k].name, virDomainGetName(dom)) == 0;
    if (again) vm_debug("'%s' is VM '%s' again: read once", vms[i], virDomainGetName(dom));
    else rc = collect_vm(conn, vms[i], new_target(&inv));
  }
  for (size_t i = 0; i < ntpl && rc == 0; i++) {
    rc = collect_template(conn, o_templates[i], new_target(&inv));
  }
  if (rc == 0 && o_host) rc = collect_host(new_target(&inv));
  if (rc == 0 && vm_interrupted()) rc = vm_fail_interrupted();
  if (rc == 0) {
    if (vm_opts.format == VM_FMT_JSON) {
      CLEANUP_FREE char *doc = vmp_inventory_write(&inv);
      if (fputs(doc, stdout) == EOF || fflush(stdout) == EOF) {
        if (errno != EPIPE) rc = vm_fail_errno(VM_EXIT_FAIL, "cannot write the inventory");
      }
    } else {
      CLEANUP_JSON json_object *rows = package_rows(&inv);
      rc = vm_print_list(rows, inventory_cols);
    }
  }
  size_t total = 0;
  for (size_t i = 0; i < inv.n; i++) total += inv.targets[i].npkgs;
  if (rc == 0) vm_info("%zu package%s on %zu target%s", total, total == 1 ? "" : "s", inv.n, inv.n == 1 ? "" : "s");
  vmp_inventory_free(&inv);
  return rc;
}

int cmd_inventory(int argc, char **argv)
{
  struct poptOption table[] = {
    { "template", '\0', POPT_ARG_ARGV, &o_templates, 0,
      "a template of the template pool (default: $VMKIT_TEMPLATE_POOL, else vmkit-templates); repeatable", "NAME" },
    { "host", '\0', POPT_ARG_NONE, &o_host, 0, "this host itself: its package database (the VMM's packages too)",
      NULL },
    VM_POPT_COMMON, POPT_TABLEEND
  };
  CLEANUP_POPT poptContext ctx = NULL;
  const char **args;
  int nargs;
  int rc = vm_parse(&ctx, argc, argv, table, "[VM...] [--template NAME]... [--host]",
                    "Lists the OS and every installed package of VMs and templates, read offline from their\n"
                    "disks through libguestfs (running or shut off: no agent, no ssh), and of this host.\n"
                    "-o json writes a vmpatch-inventory document, which 'vmpatch scan --inventory' reads.",
                    0, -1, &args, &nargs);
  if (rc) return rc == VM_DONE ? 0 : rc;
  rc = inventory_run(args, nargs);
  for (size_t i = 0; o_templates && o_templates[i]; i++) free(o_templates[i]);
  free(o_templates);
  o_templates = NULL;
  return rc;
}
