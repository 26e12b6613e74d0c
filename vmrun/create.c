/* vmrun create: VMs from an image (in place or copied), from a template (a linked
 * qcow2 clone, or a full copy), or with blank disks; optionally customized at first
 * boot and started. Several at once (names, or --count with a pattern) over one
 * connection, their starts overlapped.
 *
 * Each VM is all or nothing. Its domain is defined first, with a journal record
 * naming every volume the run is about to make, then the volumes are made through
 * libvirt's storage API, then the record is cleared: a run killed at any instant
 * leaves a VM that the next run holding its lock rolls back (vm_journal_recover),
 * and a run that fails undoes what it made itself. */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vmrun.h"

static char *o_image, *o_template, *o_memory, *o_vcpus, *o_size, *o_cdrom, *o_console_log, *o_cpu_model;
static char *o_kernel, *o_initrd, *o_cmdline, *o_hostname, *o_ssh_key, *o_root_pw, *o_pool, *o_tpool, *o_count;
static char *o_passphrase;
static char **o_disks, **o_networks, **o_macs;
static int o_copy, o_full, o_autostart, o_start, o_paused, o_dry_run, o_encrypt;

static struct poptOption options[] = {
  { "image", 'i', POPT_ARG_STRING, &o_image, 0, "boot disk: this image, used in place", "FILE" },
  { "copy", '\0', POPT_ARG_NONE, &o_copy, 0, "copy the --image into the storage pool", NULL },
  { "template", '\0', POPT_ARG_STRING, &o_template, 0, "boot disk: a linked clone of this template", "NAME" },
  { "full", '\0', POPT_ARG_NONE, &o_full, 0, "make a full copy of the template, not a linked clone", NULL },
  { "size", '\0', POPT_ARG_STRING, &o_size, 0, "grow the boot disk to SIZE (bare number: GiB)", "SIZE" },
  { "vcpus", '\0', POPT_ARG_STRING, &o_vcpus, 0, "virtual CPUs (default: the template's, else 1)", "N" },
  { "memory", 'm', POPT_ARG_STRING, &o_memory, 0, "memory (bare number: MiB; default: the template's, else 512M)", "SIZE" },
  { "disk", 'd', POPT_ARG_ARGV, &o_disks, 0, "add a blank data disk of SIZE (bare number: GiB); repeatable", "SIZE" },
  { "pool", '\0', POPT_ARG_STRING, &o_pool, 0, "the storage pool for new disks (default: $VMKIT_POOL, else default)", "POOL" },
  { "template-pool", '\0', POPT_ARG_STRING, &o_tpool, 0, "the pool the template lives in (default: $VMKIT_TEMPLATE_POOL, else vmkit-templates)", "POOL" },
  { "cdrom", '\0', POPT_ARG_STRING, &o_cdrom, 0, "attach an ISO image as a CD-ROM", "ISO" },
  { "network", '\0', POPT_ARG_ARGV, &o_networks, 0, "a NIC: user, network=NAME, bridge=BR or none (default: user); repeatable", "SPEC" },
  { "mac", '\0', POPT_ARG_ARGV, &o_macs, 0, "MAC address of the next NIC; repeatable", "MAC" },
  { "cpu-model", '\0', POPT_ARG_STRING, &o_cpu_model, 0,
    "the guest's CPU: a model name (e.g. Westmere), or a file (a path with a '/', or a name ending "
    "in .xml) holding a CPU definition such as 'vmmigrate baseline --xml' prints", "MODEL|FILE" },
  { "console-log", '\0', POPT_ARG_STRING, &o_console_log, 0, "log the serial console to FILE on the host (default: /var/log/libvirt/qemu/NAME-console.log)", "FILE" },
  { "kernel", '\0', POPT_ARG_STRING, &o_kernel, 0, "boot this kernel directly", "FILE" },
  { "initrd", '\0', POPT_ARG_STRING, &o_initrd, 0, "with --kernel: this initrd", "FILE" },
  { "cmdline", '\0', POPT_ARG_STRING, &o_cmdline, 0, "with --kernel: this kernel command line", "ARGS" },
  { "hostname", '\0', POPT_ARG_STRING, &o_hostname, 0, "first boot: set the guest's hostname (with --count, a pattern like the name's)", "NAME" },
  { "ssh-key", '\0', POPT_ARG_STRING, &o_ssh_key, 0, "first boot: add this public key for root", "FILE" },
  { "root-password-file", '\0', POPT_ARG_STRING, &o_root_pw, 0, "first boot: set root's password to the first line of FILE", "FILE" },
  { "count", 'n', POPT_ARG_STRING, &o_count, 0, "create N VMs named by the pattern NAME (one %d, e.g. web-%02d: web-01 ...)", "N" },
  { "autostart", '\0', POPT_ARG_NONE, &o_autostart, 0, "start the VM when the host boots", NULL },
  { "start", 's', POPT_ARG_NONE, &o_start, 0, "start the VM once it is defined", NULL },
  { "paused", '\0', POPT_ARG_NONE, &o_paused, 0, "with --start: start with the vCPUs paused", NULL },
  { "encrypt", '\0', POPT_ARG_NONE, &o_encrypt, 0,
    "encrypt the VM's new disks (qcow2 with LUKS), the key in a libvirt secret and kept in vmkit's key folder", NULL },
  { "passphrase-file", '\0', POPT_ARG_STRING, &o_passphrase, 0,
    "with --encrypt: the key is the first line of FILE (default: a random key)", "FILE" },
  { "dry-run", '\0', POPT_ARG_NONE, &o_dry_run, 0, "print the domain XML and the volumes it would make; change nothing", NULL },
  VM_POPT_FILTER,
  VM_POPT_LOCK,
  VM_POPT_COMMON,
  POPT_TABLEEND
};

/* A volume to be made for a VM. */
enum how { V_NEW, V_CLONE, V_COPY_VOL, V_COPY_LOCAL, V_CUSTOM, V_CUSTOM_FULL };
struct planned {
  enum how how;
  char *name, *path;       /* volume name, and its path on the host */
  uint64_t capacity;
  const char *backing;     /* V_CLONE */
  char *source;            /* V_COPY_*: what is copied */
  const char *source_format;
};

/* One VM of the command. */
struct job {
  char *name, *hostname;
  char uuid[37];
  char secret[37];         /* --encrypt: the UUID of its disks' key */
  struct planned vols[VM_MAX_DEVS];
  size_t nvols;
  char *boot;              /* the boot disk's path (a new volume or an image in place) */
  const char *boot_format, *disk_type;
  char *xml;
  xmlDocPtr rec;           /* the journal record it is defined with */
  bool cleared;            /* the record was cleared: whole */
  virDomainPtr dom;
  struct vm_undo undo;
  int rc;
  char *error;             /* why it failed, for the report */
  bool started;
  const char *result;
};

static bool valid_mac(const char *m)
{
  if (strlen(m) != 17) return false;
  for (int i = 0; i < 17; i++)
    if (i % 3 == 2 ? m[i] != ':' : !isxdigit((unsigned char)m[i])) return false;
  return true;
}

static bool valid_hostname(const char *h)
{
  size_t n = strlen(h);
  if (n == 0 || n > 253 || h[0] == '-' || h[0] == '.') return false;
  for (size_t i = 0; i < n; i++)
    if (!isalnum((unsigned char)h[i]) && h[i] != '-' && h[i] != '.') return false;
  return true;
}

/* A pattern with one %d (optionally zero-padded: %02d) and no other '%'. */
static bool valid_pattern(const char *p)
{
  const char *pc = strchr(p, '%');
  if (!pc || strchr(pc + 1, '%')) return false;
  const char *q = pc + 1;
  if (*q == '0') q++;
  while (isdigit((unsigned char)*q)) q++;
  return *q == 'd' && q - pc <= 4;
}

static char *expand(const char *pattern, unsigned long i)
{
  /* The pattern was checked to hold exactly one integer directive. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
  return vm_strdup_printf(pattern, (int)i);
#pragma GCC diagnostic pop
}

/* A file the VM boots from or mounts (kernel, initrd, ISO, an image in place) must
 * be on the host: on a local connection any file (its path made absolute, since the
 * daemon does not share our working directory); on a remote one, a volume of its
 * pools. */
static int host_file(virConnectPtr conn, const char *what, const char *path, char **abs)
{
  if (vm_conn_is_local(conn)) {
    char real[PATH_MAX];
    struct stat st;
    if (!realpath(path, real) || stat(real, &st) < 0)
      return vm_fail_errno(errno == ENOENT ? VM_EXIT_NOTFOUND : VM_EXIT_FAIL, "cannot use %s '%s'", what, path);
    if (S_ISDIR(st.st_mode)) return vm_fail(VM_EXIT_USAGE, "%s '%s' is a directory", what, path);
    *abs = vm_strdup(real);
    return 0;
  }
  CLEANUP_VIRVOL virStorageVolPtr vol = NULL;
  int rc = vm_vol_find(conn, path, &vol);
  if (rc == VM_EXIT_NOTFOUND)
    return vm_fail(VM_EXIT_NOTFOUND, "no %s '%s' in the storage pools of %s (vmkit reaches a remote host's files "
                   "through its pools)", what, path, vm_conn_host_name(conn));
  if (rc) return rc;
  *abs = virStorageVolGetPath(vol);
  return 0;
}

static int parse_network(const char *spec, struct vm_spec_nic *nic)
{
  if (vm_nic_parse(spec, nic) != 0)
    return vm_usage_error("invalid --network '%s': use user, network=NAME, bridge=BR or none", spec);
  return 0;
}

static void job_free(struct job *j)
{
  free(j->name);
  free(j->hostname);
  for (size_t i = 0; i < j->nvols; i++) {
    free(j->vols[i].name);
    free(j->vols[i].path);
    free(j->vols[i].source);
  }
  free(j->boot);
  free(j->xml);
  if (j->rec) xmlFreeDoc(j->rec);
  free(j->error);
  if (j->dom) virDomainFree(j->dom);
  vm_undo_forget(&j->undo);
}

/* What every VM of the command shares. */
struct common {
  virConnectPtr conn;
  virStoragePoolPtr pool;
  char *pool_path;
  bool file_pool;
  struct vm_template tpl;
  char *local_tpl_disk;     /* customization: the template's disk as this machine reads it */
  char *image, *image_format, *kernel, *initrd, *cdrom;
  bool image_vol;           /* the --image is a volume of the host */
  uint64_t size, data_size[VM_MAX_DEVS];
  size_t ndata;
  struct customization cust;
  char *scratch;            /* local scratch folder (customized overlays) */
  char *passphrase;         /* --passphrase-file's key; NULL: a random key per VM */
};

static struct planned *plan_vol(struct common *c, struct job *j, enum how how, const char *name, uint64_t cap)
{
  struct planned *p = &j->vols[j->nvols++];
  p->how = how;
  p->name = vm_strdup(name);
  p->path = vm_strdup_printf("%s/%s", c->pool_path, name);
  p->capacity = cap;
  return p;
}

static int plan_job(struct common *c, struct job *j, struct vm_spec *spec)
{
  vm_uuid_random(j->uuid);
  if (o_encrypt) vm_uuid_random(j->secret);
  const char *secret = o_encrypt ? j->secret : NULL;
  const char *fmt = c->file_pool ? "qcow2" : "raw";
  j->boot_format = fmt;
  j->disk_type = c->file_pool ? "file" : "block";
  CLEANUP_FREE char *bootname = vm_strdup_printf("%s.qcow2", j->name);
  if (!c->file_pool) {
    free(bootname);
    bootname = vm_strdup(j->name);
  }
  bool custom = customization_wanted(&c->cust);
  if (o_template) {
    uint64_t cap = c->size ? c->size : c->tpl.virtual_size;
    struct planned *p;
    if (custom) {
      /* With --full, the customized overlay (BOOT.custom) is flattened into the
       * boot disk and then removed; the journal names it too. */
      p = plan_vol(c, j, o_full ? V_CUSTOM_FULL : V_CUSTOM, bootname, cap);
    } else {
      p = plan_vol(c, j, o_full ? V_COPY_VOL : V_CLONE, bootname, cap);
      p->backing = c->tpl.disk;
      p->source = vm_strdup(c->tpl.disk);
      p->source_format = "qcow2";
    }
    j->boot = vm_strdup(p->path);
  } else if (c->image) {
    if (o_copy) {
      struct planned *p = plan_vol(c, j, c->image_vol ? V_COPY_VOL : V_COPY_LOCAL, bootname, c->size);
      p->source = vm_strdup(c->image);
      p->source_format = c->image_format;
      j->boot = vm_strdup(p->path);
    } else {
      j->boot = vm_strdup(c->image);
      j->boot_format = strcmp(c->image_format, "raw") == 0 ? "raw" : "qcow2";
      j->disk_type = "file";
      struct stat st;
      if (vm_conn_is_local(c->conn) && stat(c->image, &st) == 0 && S_ISBLK(st.st_mode)) j->disk_type = "block";
    }
  }
  for (size_t i = 0; i < c->ndata; i++) {
    CLEANUP_FREE char *n = c->file_pool ? vm_strdup_printf("%s-disk%zu.qcow2", j->name, i + 1)
                                        : vm_strdup_printf("%s-disk%zu", j->name, i + 1);
    plan_vol(c, j, V_NEW, n, c->data_size[i]);
  }

  /* The definition. */
  spec->name = j->name;
  spec->uuid = j->uuid;
  spec->ndisks = 0;
  /* Encryption was refused for a disk that is not a new volume (an image in place). */
  if (j->boot) spec->disks[spec->ndisks++] = (struct vm_spec_disk){ j->boot, j->boot_format, "disk", j->disk_type, false, secret };
  for (size_t i = 0; i < j->nvols; i++) {
    if (j->boot && strcmp(j->vols[i].path, j->boot) == 0) continue;
    spec->disks[spec->ndisks++] = (struct vm_spec_disk){ j->vols[i].path, fmt, "disk", c->file_pool ? "file" : "block", false, secret };
  }
  if (c->cdrom) spec->disks[spec->ndisks++] = (struct vm_spec_disk){ c->cdrom, "raw", "cdrom", "file", true };
  CLEANUP_FREE char *log = NULL;
  if (o_console_log) {
    if (o_console_log[0] == '/' || !vm_conn_is_local(c->conn)) log = vm_strdup(o_console_log);
    else {
      char cwd[PATH_MAX];
      log = vm_strdup_printf("%s/%s", getcwd(cwd, sizeof cwd) ? cwd : ".", o_console_log);
    }
  } else {
    log = vm_strdup_printf("/var/log/libvirt/qemu/%s-console.log", j->name);
  }
  spec->console_log = log;
  xmlDocPtr rec = j->rec = vm_journal_new("create");
  if (secret) vm_journal_add_secret(rec, secret, "new");
  for (size_t i = 0; i < j->nvols; i++) vm_journal_add_volume(rec, j->vols[i].path, "new");
  if (j->nvols && j->vols[0].how == V_CUSTOM_FULL) {
    CLEANUP_FREE char *tmp = vm_strdup_printf("%s.custom", j->vols[0].path);
    vm_journal_add_volume(rec, tmp, "new");
  }
  /* A dry run shows the definition as it will stay, without the record. */
  spec->journal = o_dry_run ? NULL : rec;
  j->xml = vm_spec_xml(spec);
  spec->journal = NULL;
  spec->console_log = NULL;
  if (!j->xml) return vm_fail(VM_EXIT_FAIL, "cannot write the domain XML of '%s'", j->name);
  return 0;
}

static void print_plan(struct common *c, struct job *j)
{
  static const char *const hows[] = { "a new volume", "a linked clone of", "a full copy of", "a copy of",
                                      "a customized clone of", "a customized full copy of" };
  for (size_t i = 0; i < j->nvols; i++) {
    const struct planned *p = &j->vols[i];
    char sz[16];
    fprintf(stderr, "would create volume '%s' in pool '%s': %s%s%s (%s)\n", p->name, virStoragePoolGetName(c->pool),
            hows[p->how], p->how == V_NEW ? "" : " ", p->how == V_NEW ? "" : p->source ? p->source : c->tpl.disk,
            p->capacity ? vm_format_size(p->capacity, sz) : "its source's size");
  }
  if (o_encrypt)
    fprintf(stderr, "would encrypt %s (qcow2 with LUKS) with the key of secret %s (%s)\n",
            j->nvols == 1 ? "the disk" : "the disks", j->secret, c->passphrase ? "the passphrase file's" : "a random key");
  if (customization_wanted(&c->cust)) fprintf(stderr, "would customize: %s\n", j->boot);
  fputs(j->xml, stdout);
}

/* A customized clone: made here on a local overlay of a local copy of the template
 * (libguestfs works on local files), pointed at the host's template, and sent into
 * an empty volume of the host's pool. */
static int make_custom(struct common *c, struct job *j, struct planned *p, virStorageVolPtr *out)
{
  CLEANUP_FREE char *local = vm_strdup_printf("%s/%s.qcow2", c->scratch, j->name);
  char cap[32];
  snprintf(cap, sizeof cap, "%llu", (unsigned long long)p->capacity);
  char *mk[] = { "qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", c->local_tpl_disk, local, cap, NULL };
  int rc = vm_run_checked(mk, NULL);
  if (rc) return rc;
  vm_undo_local_file(&j->undo, local);
  struct customization cust = c->cust;
  cust.hostname = j->hostname;
  if ((rc = customize_disk(local, "qcow2", &cust))) return rc;
  if (strcmp(c->local_tpl_disk, c->tpl.disk) != 0) {
    char *rebase[] = { "qemu-img", "rebase", "-q", "-u", "-F", "qcow2", "-b", c->tpl.disk, local, NULL };
    if ((rc = vm_run_checked(rebase, NULL))) return rc;
  }
  const char *vname = p->name;
  CLEANUP_FREE char *tmpname = NULL;
  if (p->how == V_CUSTOM_FULL) vname = tmpname = vm_strdup_printf("%s.custom", p->name);
  struct vm_volspec spec = { .name = vname, .format = "raw", .capacity = 0 };
  CLEANUP_VIRVOL virStorageVolPtr vol = NULL;
  if ((rc = vm_vol_create(c->pool, &spec, &vol))) return rc;
  CLEANUP_FREE char *path = virStorageVolGetPath(vol);
  vm_undo_volume(&j->undo, c->conn, path);
  if ((rc = vm_vol_upload_file(vol, local)) || (rc = vm_pool_refresh(c->pool))) return rc;
  if (p->how == V_CUSTOM) {
    *out = vol;
    vol = NULL;
    return 0;
  }
  /* A full copy: the customized overlay flattened by libvirt, then removed. */
  virStorageVolPtr again = virStorageVolLookupByName(c->pool, vname);
  if (!again) return vm_fail_virt("cannot find volume '%s'", vname);
  struct vm_volspec full = { .name = p->name, .format = "qcow2", .capacity = p->capacity,
                             .secret = o_encrypt ? j->secret : NULL };
  rc = vm_vol_create_from(c->pool, &full, again, out);
  virStorageVolFree(again);
  if (rc) return rc;
  CLEANUP_FREE char *fpath = virStorageVolGetPath(*out);
  vm_undo_volume(&j->undo, c->conn, fpath);
  return vm_path_delete(c->conn, path);
}

/* The first line of the passphrase file; the rest of what was read is wiped. */
static char *read_passphrase(const char *path)
{
  size_t len = 0;
  char *all = vm_read_file(path, 65536, &len);
  if (!all) return NULL;
  char *line = strndup(all, strcspn(all, "\r\n"));
  explicit_bzero(all, len);
  free(all);
  if (!line) abort();
  return line;
}

/* qemu-img writes a local image into the volume's file; encrypted, with the key
 * read from its file (never on the argv) and QEMU's timing of the key derivation
 * tried again where it failed (vm_luks_timing_failed, as vm_vol_create does). */
static int copy_local(const struct planned *p, const char *fmt, const char *path, const char *secret)
{
  if (!secret) {
    char *conv[] = { "qemu-img", "convert", "-q", "-f", (char *)p->source_format, "-O", (char *)fmt, p->source, (char *)path, NULL };
    return vm_run_checked(conv, NULL);
  }
  CLEANUP_FREE char *keyfile = vm_key_path(secret);
  CLEANUP_FREE char *obj = vm_strdup_printf("secret,id=sec0,file=%s", keyfile);
  char *conv[] = { "qemu-img", "convert", "-q", "--object", obj, "-f", (char *)p->source_format, "-O", "qcow2",
                   "-o", "compat=1.1,encrypt.format=luks,encrypt.key-secret=sec0", p->source, (char *)path, NULL };
  int rc;
  for (int i = 0;; i++) {
    vm_errors_mute(true);
    rc = vm_run_checked(conv, NULL);
    vm_errors_mute(false);
    if (rc == 0 || i == VM_LUKS_TIMING_RETRIES || !vm_luks_timing_failed(vm_last_error())) break;
  }
  if (rc) {
    CLEANUP_FREE char *why = vm_strdup(vm_last_error());
    rc = vm_fail(rc, "%s", why);
  }
  return rc;
}

static int make_volume(struct common *c, struct job *j, struct planned *p)
{
  CLEANUP_VIRVOL virStorageVolPtr vol = NULL, src = NULL;
  int rc = 0;
  const char *fmt = c->file_pool ? "qcow2" : "raw";
  switch (p->how) {
  case V_NEW:
  case V_CLONE: {
    struct vm_volspec spec = { .name = p->name, .format = fmt, .capacity = p->capacity, .backing = p->backing,
                               .backing_format = "qcow2", .secret = o_encrypt ? j->secret : NULL };
    rc = vm_vol_create(c->pool, &spec, &vol);
    break;
  }
  case V_COPY_VOL: {
    if ((rc = vm_vol_find(c->conn, p->source, &src))) {
      if (rc == VM_EXIT_NOTFOUND) rc = vm_fail(VM_EXIT_NOTFOUND, "'%s' is gone", p->source);
      break;
    }
    struct vm_volspec spec = { .name = p->name, .format = fmt, .capacity = 0, .secret = o_encrypt ? j->secret : NULL };
    vm_progress("copying the disk", 0, 0);
    rc = vm_vol_create_from(c->pool, &spec, src, &vol);
    vm_progress_end();
    break;
  }
  case V_COPY_LOCAL: {
    /* A local image in no pool, on a local connection: qemu-img writes the new
     * volume's file, which libvirt then reads again. */
    struct vm_volspec spec = { .name = p->name, .format = "raw", .capacity = 0 };
    if ((rc = vm_vol_create(c->pool, &spec, &vol))) break;
    CLEANUP_FREE char *path = virStorageVolGetPath(vol);
    vm_undo_volume(&j->undo, c->conn, path);
    vm_progress("copying the disk", 0, 0);
    rc = copy_local(p, fmt, path, o_encrypt ? j->secret : NULL);
    vm_progress_end();
    if (rc == 0) rc = vm_pool_refresh(c->pool);
    if (rc) return rc;
    virStorageVolFree(vol);
    vol = virStorageVolLookupByName(c->pool, p->name);
    if (!vol) return vm_fail_virt("cannot find volume '%s'", p->name);
    break;
  }
  case V_CUSTOM:
  case V_CUSTOM_FULL:
    rc = make_custom(c, j, p, &vol);
    break;
  }
  if (rc) return rc;
  CLEANUP_FREE char *path = virStorageVolGetPath(vol);
  if (p->how != V_COPY_LOCAL && p->how != V_CUSTOM && p->how != V_CUSTOM_FULL) vm_undo_volume(&j->undo, c->conn, path);
  if (!path || strcmp(path, p->path) != 0)
    return vm_fail(VM_EXIT_FAIL, "volume '%s' of pool '%s' is at '%s', not '%s'", p->name,
                   virStoragePoolGetName(c->pool), path ? path : "?", p->path);
  /* A copy that is to be larger than its source is grown. */
  if ((p->how == V_COPY_VOL || p->how == V_COPY_LOCAL || p->how == V_CUSTOM_FULL) && p->capacity) {
    virStorageVolInfo info;
    if (virStorageVolGetInfo(vol, &info) == 0 && info.capacity < p->capacity &&
        virStorageVolResize(vol, p->capacity, 0) < 0)
      return vm_fail_virt("cannot grow '%s'", p->name);
  }
  return 0;
}

/* Everything but the start, for one VM. */
static int build(struct common *c, struct job *j)
{
  virDomainPtr old = virDomainLookupByName(c->conn, j->name);
  if (old) {
    /* A VM of that name: one that a killed create left is rolled back, any other
     * is a conflict. */
    CLEANUP_FREE char *other = NULL;
    int rc = vm_lock_domain(c->conn, old);
    if (rc == 0) rc = vm_journal_recover(c->conn, &old, &other);
    if (old) virDomainFree(old);
    if (rc == 0) return vm_fail(VM_EXIT_STATE, "VM '%s' already exists", j->name);
    if (rc != VM_EXIT_NOTFOUND) return rc;
  } else {
    virResetLastError();
  }
  int rc = vm_lock_domain_uuid(c->conn, j->uuid, j->name);
  if (rc) return rc;
  /* The record will name every volume this run is about to make: each must be free
   * now, so that a roll-back of the record never removes what another made. */
  for (size_t i = 0; i < j->nvols; i++) {
    CLEANUP_FREE char *tmp = j->vols[i].how == V_CUSTOM_FULL ? vm_strdup_printf("%s.custom", j->vols[i].path) : NULL;
    const char *busy = vm_path_exists(c->conn, j->vols[i].path) ? j->vols[i].path
                       : tmp && vm_path_exists(c->conn, tmp)    ? tmp : NULL;
    if (busy) return vm_fail(VM_EXIT_STATE, "cannot create disk '%s': it already exists", busy);
  }
  j->dom = virDomainDefineXML(c->conn, j->xml);
  if (!j->dom) {
    /* libvirt's reason, saved before the look-up below resets it. */
    virErrorPtr saved = virSaveLastError();
    virDomainPtr again = virDomainLookupByName(c->conn, j->name);
    if (again) {
      virDomainFree(again);
      virFreeError(saved);
      return vm_fail(VM_EXIT_STATE, "VM '%s' already exists", j->name);
    }
    return vm_fail_virt_saved(saved, "cannot define VM '%s'", j->name);
  }
  vm_undo_domain(&j->undo, j->dom);
  /* The key before the disks that it encrypts: kept here, then on the host. */
  if (o_encrypt) {
    char *key = c->passphrase ? vm_strdup(c->passphrase) : vm_key_new();
    if (!key) return VM_EXIT_FAIL;
    vm_undo_secret(&j->undo, c->conn, j->secret);
    rc = vm_key_save(j->secret, key);
    if (rc == 0) rc = vm_secret_put(c->conn, j->secret, j->name, key);
    vm_key_free(key);
  }
  for (size_t i = 0; i < j->nvols && rc == 0; i++) {
    vm_progress("creating disks", i, j->nvols);
    rc = make_volume(c, j, &j->vols[i]);
    if (rc == 0 && vm_interrupted()) rc = vm_fail_interrupted();
  }
  vm_progress_end();
  /* A copy of an image (on this machine: checked before) is customized in place. */
  if (rc == 0 && !o_template && customization_wanted(&c->cust)) {
    struct customization cust = c->cust;
    cust.hostname = j->hostname;
    rc = customize_disk(j->boot, j->boot_format, &cust);
  }
  /* The VM is whole: the record of what it was being made of goes. */
  if (rc == 0 && (rc = vm_journal_clear(j->dom)) == 0) j->cleared = true;
  if (rc == 0 && o_autostart && virDomainSetAutostart(j->dom, 1) < 0)
    rc = vm_fail_virt("cannot set autostart for '%s'", j->name);
  return rc;
}

/* Undoes a VM of the command. One whose record was cleared (whole, then a later
 * step failed) gets it back first: a kill during the undo leaves a VM that the next
 * run rolls back, not one with its disks gone. */
static void undo_job(struct job *j)
{
  if (j->cleared && j->dom && j->rec && vm_journal_write(j->dom, j->rec) != 0)
    vm_warn("VM '%s' is being removed without its record", j->name);
  vm_undo_run(&j->undo);
}

/* Starts run side by side on one connection: libvirt serves calls from several
 * threads at once, and QEMU processes start in parallel. */
struct starter {
  struct job *jobs;
  size_t n, next;
  pthread_mutex_t lock;
};

static void *start_worker(void *arg)
{
  struct starter *s = arg;
  for (;;) {
    pthread_mutex_lock(&s->lock);
    size_t i = s->next++;
    pthread_mutex_unlock(&s->lock);
    if (i >= s->n) return NULL;
    struct job *j = &s->jobs[i];
    if (j->rc || vm_interrupted()) continue;
    if (virDomainCreateWithFlags(j->dom, o_paused ? VIR_DOMAIN_START_PAUSED : 0) < 0) {
      j->error = vm_strdup_printf("cannot start VM '%s': %s", j->name, vm_virt_message());
      j->rc = vm_virt_exit_code();
    } else {
      j->started = true;
    }
  }
}

static void start_all(struct job *jobs, size_t n)
{
  struct starter s = { jobs, n, 0, PTHREAD_MUTEX_INITIALIZER };
  size_t nthreads = n < 8 ? n : 8;
  pthread_t th[8];
  size_t started = 0;
  for (; started < nthreads; started++)
    if (pthread_create(&th[started], NULL, start_worker, &s) != 0) break;
  if (started == 0) start_worker(&s);
  for (size_t i = 0; i < started; i++) pthread_join(th[i], NULL);
}

static const struct vm_column report_cols[] = {
  { "name", "NAME", VM_COL_STR },
  { "result", "RESULT", VM_COL_STR },
  { "error", "ERROR", VM_COL_STR },
  { NULL, NULL, 0 },
};

int cmd_create(int argc, char **argv)
{
  CLEANUP_POPT poptContext ctx = NULL;
  const char **args;
  int nargs, rc;
  rc = vm_parse(&ctx, argc, argv, options, "NAME...",
                "Define VMs from an image, a template (a linked qcow2 clone) or blank disks.", 1, -1, &args, &nargs);
  if (rc) return rc == VM_DONE ? 0 : rc;

  /* Validate everything that needs no I/O first: usage errors exit 2. */
  uint64_t count = 0;
  if (o_count && (vm_parse_uint(o_count, 1, 1000, &count) < 0))
    return vm_usage_error("invalid --count '%s': expected 1 to 1000", o_count);
  if (count && nargs != 1) return vm_usage_error("--count takes one NAME pattern");
  if (count && !valid_pattern(args[0]))
    return vm_usage_error("with --count, NAME must hold one %%d (web-%%02d makes web-01, web-02 ...)");
  size_t njobs = count ? count : (size_t)nargs;
  if (o_hostname && njobs > 1 && !(count && valid_pattern(o_hostname)))
    return vm_usage_error("--hostname for several VMs needs --count and a pattern (web-%%02d)");
  if (o_macs && njobs > 1) return vm_usage_error("--mac goes with one VM");
  if (o_image && o_template) return vm_usage_error("--image and --template exclude each other");
  if (o_copy && !o_image) return vm_usage_error("--copy needs --image");
  if (o_image && !o_copy && njobs > 1) return vm_usage_error("several VMs cannot share an --image in place: use --copy");
  if (o_full && !o_template) return vm_usage_error("--full needs --template");
  if (o_paused && !o_start) return vm_usage_error("--paused needs --start");
  if (o_passphrase && !o_encrypt) return vm_usage_error("--passphrase-file needs --encrypt");
  if (o_encrypt && o_template && !o_full)
    return vm_usage_error("--encrypt with --template needs --full: a linked clone reads the template's disk, which "
                          "stays in clear; --full copies it into an encrypted image");
  if (o_encrypt && o_image && !o_copy)
    return vm_usage_error("--encrypt with --image needs --copy: an image used in place stays as it is");
  if (o_encrypt && !o_template && !o_image && !(o_disks && o_disks[0]))
    return vm_usage_error("--encrypt: the VM has no disk to encrypt (give --template, --image or --disk)");
  if (o_encrypt && o_size)
    return vm_usage_error("--encrypt with --size: libvirt cannot grow an encrypted image as it copies it; grow the "
                          "template or image first");
  if (o_encrypt && o_image && (o_hostname || o_ssh_key || o_root_pw))
    return vm_usage_error("--encrypt: a copied image is customized in place, which libguestfs cannot do to an "
                          "encrypted disk (customize a template's --full copy instead)");
  if ((o_initrd || o_cmdline) && !o_kernel && !o_template)
    return vm_usage_error("--initrd and --cmdline need --kernel");
  uint64_t vcpus = 0, memory = 0;
  struct common c = { 0 };
  if (o_vcpus && vm_parse_uint(o_vcpus, 1, 512, &vcpus) < 0)
    return vm_usage_error("invalid vCPU count '%s': expected a number from 1 to 512", o_vcpus);
  if (o_memory && (vm_parse_size(o_memory, 'M', &memory) < 0 || memory < (16 << 20)))
    return vm_usage_error("invalid memory size '%s': expected at least 16M", o_memory);
  if (o_size && (vm_parse_size(o_size, 'G', &c.size) < 0 || c.size < (1 << 20)))
    return vm_usage_error("invalid disk size '%s': expected at least 1M", o_size);
  if (o_size && !o_image && !o_template) return vm_usage_error("--size needs --image or --template");
  if (o_size && o_image && !o_copy) return vm_usage_error("--size with --image needs --copy");
  for (; o_disks && o_disks[c.ndata]; c.ndata++) {
    if (c.ndata + 2 >= VM_MAX_DEVS) return vm_usage_error("too many disks");
    if (vm_parse_size(o_disks[c.ndata], 'G', &c.data_size[c.ndata]) < 0 || c.data_size[c.ndata] < (1 << 20))
      return vm_usage_error("invalid disk size '%s': expected at least 1M", o_disks[c.ndata]);
  }
  struct vm_spec spec = { 0 };
  CLEANUP_FREE char *cpu_xml = NULL;
  size_t cml = o_cpu_model ? strlen(o_cpu_model) : 0;
  if (o_cpu_model && (strchr(o_cpu_model, '/') || (cml > 4 && strcmp(o_cpu_model + cml - 4, ".xml") == 0))) {
    cpu_xml = vm_read_file(o_cpu_model, 1 << 20, NULL);
    if (!cpu_xml) return vm_fail_errno(VM_EXIT_NOTFOUND, "cannot read CPU definition '%s'", o_cpu_model);
    CLEANUP_XMLDOC xmlDocPtr cd = vm_xml_parse(cpu_xml);
    xmlNodePtr root = cd ? xmlDocGetRootElement(cd) : NULL;
    if (!root || xmlStrcmp(root->name, BAD_CAST "cpu") != 0)
      return vm_fail(VM_EXIT_USAGE, "'%s' holds no <cpu> definition", o_cpu_model);
    spec.cpu_xml = cpu_xml;
  } else if (o_cpu_model) {
    for (const char *p = o_cpu_model; *p; p++)
      if (!isalnum((unsigned char)*p) && !strchr("-_.", *p))
        return vm_usage_error("invalid CPU model '%s' (a name such as Westmere, or a file path with a '/')", o_cpu_model);
    spec.cpu_model = o_cpu_model;
  }
  bool no_nic = false;
  for (size_t i = 0; o_networks && o_networks[i]; i++) {
    if (strcmp(o_networks[i], "none") == 0) { no_nic = true; continue; }
    if (spec.nnics >= VM_MAX_DEVS) return vm_usage_error("too many NICs");
    if ((rc = parse_network(o_networks[i], &spec.nics[spec.nnics++]))) return rc;
  }
  if (no_nic && spec.nnics) return vm_usage_error("--network none excludes other --network options");
  if (!no_nic && !spec.nnics) spec.nics[spec.nnics++] = (struct vm_spec_nic){ .type = "user" };
  for (size_t i = 0; o_macs && o_macs[i]; i++) {
    if (!valid_mac(o_macs[i])) return vm_usage_error("invalid MAC address '%s'", o_macs[i]);
    if (i >= spec.nnics) return vm_usage_error("more --mac options than NICs");
    spec.nics[i].mac = o_macs[i];
  }
  /* The filter options last of the usage checks: freed at the end of the command
   * (the spec points into their port lists). */
  static struct vm_filter_opts fo;
  if ((rc = vm_filter_opts_get(&fo))) return rc;
  const char *filter = fo.filter;
  if (fo.ip && njobs > 1) rc = vm_usage_error("--ip goes with one VM");
  size_t nfiltered = 0;
  for (size_t i = 0; filter && i < spec.nnics; i++) nfiltered += strcmp(spec.nics[i].type, "user") != 0;
  if (!rc && filter && !nfiltered)
    rc = vm_usage_error("--filter needs a network= or bridge= NIC (a user-mode NIC has no tap device to filter)");
  c.cust = (struct customization){ o_hostname, o_ssh_key, o_root_pw };
  if (!rc && customization_wanted(&c.cust) && !o_template && !(o_image && o_copy))
    rc = vm_usage_error("--hostname, --ssh-key and --root-password-file need --template, or --image with --copy");
  if (rc) {
    vm_filter_opts_free(&fo);
    return rc;
  }
  for (size_t i = 0; filter && i < spec.nnics; i++)
    if (strcmp(spec.nics[i].type, "user") != 0) {
      spec.nics[i].filter = filter, spec.nics[i].ip = fo.ip;
      spec.nics[i].tcp_ports = fo.tcp.v, spec.nics[i].udp_ports = fo.udp.v;
    }
  /* Everything the exit path releases is declared before the first goto. */
  CLEANUP_FREE char *inbound = NULL;
  CLEANUP_JSON json_object *rows = json_object_new_array();
  struct job *jobs = calloc(njobs, sizeof *jobs);
  if (!jobs) return vm_fail(VM_EXIT_FAIL, "out of memory");
  size_t built = 0;
  for (size_t i = 0; i < njobs; i++) {
    jobs[i].name = count ? expand(args[0], i + 1) : vm_strdup(args[i]);
    if (o_hostname) jobs[i].hostname = count && valid_pattern(o_hostname) ? expand(o_hostname, i + 1) : vm_strdup(o_hostname);
    if ((rc = vm_check_name("VM", jobs[i].name))) goto out;
    if (jobs[i].hostname && !valid_hostname(jobs[i].hostname)) {
      rc = vm_usage_error("invalid hostname '%s'", jobs[i].hostname);
      goto out;
    }
    for (size_t k = 0; k < i; k++)
      if (strcmp(jobs[k].name, jobs[i].name) == 0) {
        rc = vm_usage_error("VM '%s' is named twice", jobs[i].name);
        goto out;
      }
  }
  if (customization_wanted(&c.cust) && (rc = customization_check(&c.cust))) goto out;
  if (o_passphrase) {
    vm_key_protect();
    c.passphrase = read_passphrase(o_passphrase);
    if (!c.passphrase) {
      rc = vm_fail_errno(errno == ENOENT ? VM_EXIT_NOTFOUND : VM_EXIT_FAIL, "cannot read the passphrase file '%s'",
                         o_passphrase);
      goto out;
    }
    if (!*c.passphrase || strlen(c.passphrase) > 1024) {
      rc = vm_usage_error("the passphrase file '%s' %s", o_passphrase,
                          *c.passphrase ? "has a first line longer than 1024 bytes" : "starts with an empty line");
      goto out;
    }
  }

  /* Then what must exist: exit 3 when it does not. */
  c.conn = vm_connect();
  if (!c.conn) { rc = VM_EXIT_FAIL; goto out; }
  /* vmkit-inbound-FILTER is defined on the host when missing (shared by the VMs
   * that use it, like libvirt's own filters); a dry run only checks its base. */
  if (filter && (!fo.ports || o_dry_run) && (rc = vm_nwfilter_check(c.conn, filter))) goto out;
  if (filter && fo.ports) {
    if (!o_dry_run && (rc = vm_nwfilter_inbound(c.conn, filter, &inbound))) goto out;
    if (o_dry_run) inbound = vm_strdup_printf("%s%s", VM_INBOUND_FILTER_PREFIX, filter);
    for (size_t i = 0; i < spec.nnics; i++)
      if (spec.nics[i].filter) spec.nics[i].filter = inbound;
  }
  if (o_template) {
    /* Clones and the template's deletion exclude each other. */
    CLEANUP_FREE char *key = vm_strdup_printf("%s/%s", o_tpool ? o_tpool : vm_default_template_pool(), o_template);
    CLEANUP_FREE char *what = vm_strdup_printf("template '%s'", o_template);
    if (!o_dry_run && (rc = vm_lock_object(c.conn, "template", key, true, what))) goto out;
    if ((rc = vm_template_load(c.conn, o_tpool, o_template, false, &c.tpl))) goto out;
    if (c.size && c.size < c.tpl.virtual_size) {
      rc = vm_usage_error("--size %s is smaller than the template's disk", o_size);
      goto out;
    }
    if (customization_wanted(&c.cust) && !o_dry_run && !(c.local_tpl_disk = template_local_disk(c.conn, &c.tpl))) {
      rc = VM_EXIT_STATE;
      goto out;
    }
  }
  if (o_image) {
    if ((rc = host_file(c.conn, "image", o_image, &c.image))) goto out;
    struct vm_imginfo info;
    if ((rc = vm_image_info(c.conn, c.image, &info))) goto out;
    c.image_vol = info.in_pool;
    c.image_format = vm_strdup(info.format);
    vm_imginfo_free(&info);
    if (strcmp(c.image_format, "raw") != 0 && strcmp(c.image_format, "qcow2") != 0) {
      rc = vm_fail(VM_EXIT_USAGE, "image '%s' is %s: use a raw or qcow2 image", o_image, c.image_format);
      goto out;
    }
    if (!o_copy) {
      /* Two creates on one image in place: one wins, the other finds it in use. */
      CLEANUP_FREE char *what = vm_strdup_printf("image '%s'", c.image);
      if (!o_dry_run && (rc = vm_lock_object(c.conn, "image", c.image, false, what))) goto out;
      if (vm_image_is_template(c.conn, c.image)) {
        rc = vm_fail(VM_EXIT_STATE, "image '%s' is a template: use --template", o_image);
        goto out;
      }
      struct vm_strv users = { 0 };
      if ((rc = vm_image_users(c.conn, c.image, NULL, &users))) goto out;
      if (users.n) {
        rc = vm_fail(VM_EXIT_STATE, "image '%s' is in use by VM '%s': use --copy", o_image, users.v[0]);
        vm_strv_free(&users);
        goto out;
      }
    }
  }
  if (o_image && customization_wanted(&c.cust) && !vm_conn_is_local(c.conn)) {
    rc = vm_fail(VM_EXIT_STATE, "cannot customize a copy of an image on %s: libguestfs works on this machine's "
                 "files (customize a template's clone instead)", vm_conn_host_name(c.conn));
    goto out;
  }
  if (o_cdrom && (rc = host_file(c.conn, "CD-ROM image", o_cdrom, &c.cdrom))) goto out;
  if (o_kernel && (rc = host_file(c.conn, "kernel", o_kernel, &c.kernel))) goto out;
  if (o_initrd && (rc = host_file(c.conn, "initrd", o_initrd, &c.initrd))) goto out;
  bool need_pool = o_template || o_copy || c.ndata;
  if (need_pool) {
    const char *pname = o_pool ? o_pool : vm_default_pool();
    if (o_dry_run) {
      c.pool = virStoragePoolLookupByName(c.conn, pname);
      if (!c.pool) {
        virResetLastError();
        rc = vm_fail(VM_EXIT_NOTFOUND, "no storage pool '%s' on %s (a real run defines the default one)", pname,
                     vm_conn_host_name(c.conn));
        goto out;
      }
    } else if ((rc = vm_pool_open(c.conn, pname, &c.pool))) {
      goto out;
    }
    c.file_pool = vm_pool_is_file_based(c.pool);
    if (!(c.pool_path = vm_pool_target(c.pool))) {
      rc = vm_fail_virt("cannot read storage pool '%s'", pname);
      goto out;
    }
    if (o_encrypt && !c.file_pool) {
      rc = vm_fail(VM_EXIT_STATE, "pool '%s' cannot hold encrypted disks (qcow2 with LUKS): use a dir, fs or netfs pool",
                   pname);
      goto out;
    }
    if (o_template && !o_full && !c.file_pool) {
      rc = vm_fail(VM_EXIT_STATE, "pool '%s' cannot hold linked clones (qcow2 overlays): use --full, or a dir, fs "
                   "or netfs pool", pname);
      goto out;
    }
  }
  spec.virt_type = vm_virt_type_of(c.conn);
  spec.vcpus = vcpus ? (unsigned)vcpus : c.tpl.vcpus ? c.tpl.vcpus : 1;
  spec.memory = memory ? memory : c.tpl.memory ? c.tpl.memory : 512ULL << 20;
  spec.kernel = c.kernel ? c.kernel : c.tpl.kernel;
  spec.initrd = c.initrd ? c.initrd : c.kernel ? NULL : c.tpl.initrd;
  spec.cmdline = o_cmdline ? o_cmdline : c.kernel ? NULL : c.tpl.cmdline;
  spec.meta_template = c.tpl.name;
  for (size_t i = 0; i < njobs; i++) {
    /* A dry run checks names against the host too: it shows what would happen. */
    virDomainPtr existing = virDomainLookupByName(c.conn, jobs[i].name);
    if (existing && o_dry_run) {
      virDomainFree(existing);
      rc = vm_fail(VM_EXIT_STATE, "VM '%s' already exists", jobs[i].name);
      goto out;
    }
    if (existing) virDomainFree(existing);
    virResetLastError();
    if ((rc = plan_job(&c, &jobs[i], &spec))) goto out;
  }
  if (o_dry_run) {
    for (size_t i = 0; i < njobs; i++) print_plan(&c, &jobs[i]);
    goto out;
  }

  /* Make them. Each VM is all or nothing; one that fails does not stop the others. */
  vm_catch_signals();
  if (customization_wanted(&c.cust)) {
    if (!(c.scratch = vm_scratch_dir("create"))) {
      rc = VM_EXIT_FAIL;
      goto out;
    }
  }
  int64_t t0 = vm_now_ms();
  for (size_t i = 0; i < njobs; i++) {
    /* Interrupted: the VMs made so far stay, the rest are not begun. */
    if (vm_interrupted()) {
      jobs[i].rc = VM_EXIT_FAIL;
      jobs[i].error = vm_strdup("interrupted before it was begun");
      continue;
    }
    jobs[i].rc = build(&c, &jobs[i]);
    if (jobs[i].rc) {
      jobs[i].error = vm_strdup(vm_last_error());
      undo_job(&jobs[i]);
    } else {
      built++;
    }
  }
  int64_t t1 = vm_now_ms();
  if (o_start && built) start_all(jobs, njobs);
  /* Where the time went, for -v (and the deploy benchmark). */
  vm_debug("made %zu VM%s (volumes and definitions) in %lld ms; started them in %lld ms", built, built == 1 ? "" : "s",
           (long long)(t1 - t0), (long long)(vm_now_ms() - t1));
  int first = vm_interrupted() ? vm_fail_interrupted() : 0;
  for (size_t i = 0; i < njobs; i++) {
    struct job *j = &jobs[i];
    if (j->rc && j->started == false && j->error && strncmp(j->error, "cannot start", 12) == 0)
      vm_fail(j->rc, "%s", j->error);
    if (j->rc) {
      /* A start that failed takes its VM with it: all or nothing. */
      undo_job(j);
      j->result = "failed";
      if (!first) first = j->rc;
    } else {
      vm_undo_forget(&j->undo);
      /* A VM made whole before an interruption stays, defined. */
      j->result = !o_start || !j->started ? "defined" : o_paused ? "paused" : "running";
      if (njobs == 1)
        vm_info("created VM '%s'%s%s%s", j->name, o_template ? (o_full ? " (full copy of '" : " (linked clone of '") : "",
                o_template ? o_template : "", o_template ? "')" : "");
    }
    json_object *row = json_object_new_object();
    json_object_object_add(row, "name", json_object_new_string(j->name));
    json_object_object_add(row, "result", json_object_new_string(j->result));
    json_object_object_add(row, "error", j->error ? json_object_new_string(j->error) : NULL);
    json_object_array_add(rows, row);
  }
  if (njobs > 1) {
    size_t ok = 0;
    for (size_t i = 0; i < njobs; i++) ok += jobs[i].rc == 0;
    int prc = vm_print_list(rows, report_cols);
    if (!first) first = prc;
    vm_info("created %zu of %zu VMs", ok, njobs);
  }
  rc = first;

out:
  vm_filter_opts_free(&fo);
  if (c.scratch) vm_remove_tree(c.scratch);
  free(c.scratch);
  for (size_t i = 0; i < njobs; i++) job_free(&jobs[i]);
  free(jobs);
  vm_template_free(&c.tpl);
  free(c.local_tpl_disk);
  vm_key_free(c.passphrase);
  free(c.image);
  free(c.image_format);
  free(c.kernel);
  free(c.initrd);
  free(c.cdrom);
  free(c.pool_path);
  if (c.pool) virStoragePoolFree(c.pool);
  if (c.conn) {
    vm_conn_forget(c.conn);
    virConnectClose(c.conn);
  }
  return rc;
}
