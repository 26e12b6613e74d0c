/* vmrun create: a VM from an image (in place or copied), from a template (a linked
 * qcow2 clone, or a full copy), or with blank disks; optionally customized at first
 * boot and started. Every step that makes something registers its undo, so a
 * failure at any point leaves no disk and no domain behind. */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vmrun.h"

static char *o_image, *o_template, *o_memory, *o_vcpus, *o_size, *o_cdrom, *o_console_log;
static char *o_kernel, *o_initrd, *o_cmdline, *o_hostname, *o_ssh_key, *o_root_pw;
static char **o_disks, **o_networks, **o_macs;
static int o_copy, o_full, o_autostart, o_start, o_dry_run;

static struct poptOption options[] = {
  { "image", 'i', POPT_ARG_STRING, &o_image, 0, "boot disk: this image, used in place", "FILE" },
  { "copy", '\0', POPT_ARG_NONE, &o_copy, 0, "copy the --image into the storage directory", NULL },
  { "template", '\0', POPT_ARG_STRING, &o_template, 0, "boot disk: a linked clone of this template", "NAME" },
  { "full", '\0', POPT_ARG_NONE, &o_full, 0, "make a full copy of the template, not a linked clone", NULL },
  { "size", '\0', POPT_ARG_STRING, &o_size, 0, "grow the boot disk to SIZE (bare number: GiB)", "SIZE" },
  { "vcpus", '\0', POPT_ARG_STRING, &o_vcpus, 0, "virtual CPUs (default: the template's, else 1)", "N" },
  { "memory", 'm', POPT_ARG_STRING, &o_memory, 0, "memory (bare number: MiB; default: the template's, else 512M)", "SIZE" },
  { "disk", 'd', POPT_ARG_ARGV, &o_disks, 0, "add a blank data disk of SIZE (bare number: GiB); repeatable", "SIZE" },
  { "cdrom", '\0', POPT_ARG_STRING, &o_cdrom, 0, "attach an ISO image as a CD-ROM", "ISO" },
  { "network", '\0', POPT_ARG_ARGV, &o_networks, 0, "a NIC: user, network=NAME, bridge=BR or none (default: user); repeatable", "SPEC" },
  { "mac", '\0', POPT_ARG_ARGV, &o_macs, 0, "MAC address of the next NIC; repeatable", "MAC" },
  { "console-log", '\0', POPT_ARG_STRING, &o_console_log, 0, "log the serial console to FILE (default: /var/log/libvirt/qemu/NAME-console.log)", "FILE" },
  { "kernel", '\0', POPT_ARG_STRING, &o_kernel, 0, "boot this kernel directly", "FILE" },
  { "initrd", '\0', POPT_ARG_STRING, &o_initrd, 0, "with --kernel: this initrd", "FILE" },
  { "cmdline", '\0', POPT_ARG_STRING, &o_cmdline, 0, "with --kernel: this kernel command line", "ARGS" },
  { "hostname", '\0', POPT_ARG_STRING, &o_hostname, 0, "first boot: set the guest's hostname", "NAME" },
  { "ssh-key", '\0', POPT_ARG_STRING, &o_ssh_key, 0, "first boot: add this public key for root", "FILE" },
  { "root-password-file", '\0', POPT_ARG_STRING, &o_root_pw, 0, "first boot: set root's password to the first line of FILE", "FILE" },
  { "autostart", '\0', POPT_ARG_NONE, &o_autostart, 0, "start the VM when the host boots", NULL },
  { "start", 's', POPT_ARG_NONE, &o_start, 0, "start the VM once it is defined", NULL },
  { "dry-run", '\0', POPT_ARG_NONE, &o_dry_run, 0, "print the domain XML and the image commands; change nothing", NULL },
  VM_POPT_COMMON,
  POPT_TABLEEND
};

/* A disk to be made: where, how (an argv for qemu-img), and in what format. */
struct planned_disk {
  char *path;
  const char *format;
  struct vm_strv argv;  /* empty: an existing image used in place */
  struct vm_strv argv2; /* a second step (resize after a full copy) */
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

/* Files named on the command line must exist; the path given to libvirt is made
 * absolute, since the daemon does not share our working directory. */
static int need_file(const char *what, const char *path, char **abs)
{
  char real[PATH_MAX];
  struct stat st;
  if (!realpath(path, real) || stat(real, &st) < 0)
    return vm_fail_errno(errno == ENOENT ? VM_EXIT_NOTFOUND : VM_EXIT_FAIL, "cannot use %s '%s'",
                         what, path);
  if (S_ISDIR(st.st_mode)) return vm_fail(VM_EXIT_USAGE, "%s '%s' is a directory", what, path);
  if (abs) *abs = strdup(real);
  return 0;
}

static int parse_network(const char *spec, struct vm_spec_nic *nic)
{
  memset(nic, 0, sizeof *nic);
  if (strcmp(spec, "user") == 0) nic->type = "user";
  else if (strncmp(spec, "network=", 8) == 0 && spec[8]) nic->type = "network", nic->source = spec + 8;
  else if (strncmp(spec, "bridge=", 7) == 0 && spec[7]) nic->type = "bridge", nic->source = spec + 7;
  else return vm_usage_error("invalid --network '%s': use user, network=NAME, bridge=BR or none", spec);
  return 0;
}

static int plan_new(struct planned_disk *d, const char *path)
{
  d->path = strdup(path);
  d->format = "qcow2";
  if (access(path, F_OK) == 0)
    return vm_fail(VM_EXIT_STATE, "cannot create disk '%s': it already exists", path);
  return 0;
}

int cmd_create(int argc, char **argv)
{
  CLEANUP_POPT poptContext ctx = NULL;
  const char **args;
  int nargs, rc;
  rc = vm_parse(&ctx, argc, argv, options, "NAME",
                "Define a VM from an image, a template (a linked qcow2 clone) or blank disks.",
                1, 1, &args, &nargs);
  if (rc) return rc == VM_DONE ? 0 : rc;
  const char *name = args[0];
  /* Everything the exit path releases, declared before the first goto. */
  struct template tpl = { 0 };
  struct planned_disk disks[VM_MAX_DEVS] = { 0 };
  size_t nd = 0;
  CLEANUP_FREE char *image = NULL, *cdrom = NULL, *kernel = NULL, *initrd = NULL, *log = NULL;
  CLEANUP_FREE char *xml = NULL;
  CLEANUP_VIRCONN virConnectPtr conn = NULL;
  CLEANUP_VIRDOMAIN virDomainPtr dom = NULL;

  /* Validate everything that needs no I/O first: usage errors exit 2. */
  if ((rc = vm_check_name("VM", name))) return rc;
  if (o_image && o_template) return vm_usage_error("--image and --template exclude each other");
  if (o_copy && !o_image) return vm_usage_error("--copy needs --image");
  if (o_full && !o_template) return vm_usage_error("--full needs --template");
  if ((o_initrd || o_cmdline) && !o_kernel && !o_template)
    return vm_usage_error("--initrd and --cmdline need --kernel");
  uint64_t vcpus = 0, memory = 0, size = 0;
  if (o_vcpus && vm_parse_uint(o_vcpus, 1, 512, &vcpus) < 0)
    return vm_usage_error("invalid vCPU count '%s': expected a number from 1 to 512", o_vcpus);
  if (o_memory && (vm_parse_size(o_memory, 'M', &memory) < 0 || memory < (16 << 20)))
    return vm_usage_error("invalid memory size '%s': expected at least 16M", o_memory);
  if (o_size && (vm_parse_size(o_size, 'G', &size) < 0 || size < (1 << 20)))
    return vm_usage_error("invalid disk size '%s': expected at least 1M", o_size);
  if (o_size && !o_image && !o_template) return vm_usage_error("--size needs --image or --template");
  if (o_size && o_image && !o_copy) return vm_usage_error("--size with --image needs --copy");
  size_t ndata = 0;
  uint64_t data_size[VM_MAX_DEVS];
  for (; o_disks && o_disks[ndata]; ndata++) {
    if (ndata + 2 >= VM_MAX_DEVS) return vm_usage_error("too many disks");
    if (vm_parse_size(o_disks[ndata], 'G', &data_size[ndata]) < 0 || data_size[ndata] < (1 << 20))
      return vm_usage_error("invalid disk size '%s': expected at least 1M", o_disks[ndata]);
  }
  struct vm_spec spec = { .name = name, .virt_type = vm_virt_type() };
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
  if (o_hostname && !valid_hostname(o_hostname))
    return vm_usage_error("invalid hostname '%s'", o_hostname);
  struct customization cust = { o_hostname, o_ssh_key, o_root_pw };
  if (customization_wanted(&cust) && !o_image && !o_template)
    return vm_usage_error("--hostname, --ssh-key and --root-password-file need --image or --template");

  /* Then what must exist: exit 3 when it does not. */
  if (o_template && (rc = template_load(o_template, &tpl))) return rc;
  if (o_image && (rc = need_file("image", o_image, &image))) goto out;
  if (o_cdrom && (rc = need_file("CD-ROM image", o_cdrom, &cdrom))) goto out;
  if (o_kernel && (rc = need_file("kernel", o_kernel, &kernel))) goto out;
  if (o_initrd && (rc = need_file("initrd", o_initrd, &initrd))) goto out;
  if (o_ssh_key && (rc = need_file("ssh key", o_ssh_key, NULL))) goto out;
  if (o_root_pw && (rc = need_file("password file", o_root_pw, NULL))) goto out;
  if ((rc = customization_check(&cust))) goto out;
  struct stat st;
  const char *sdir = vm_storage_dir();
  if ((o_template || o_copy || ndata) && (stat(sdir, &st) < 0 || !S_ISDIR(st.st_mode))) {
    rc = vm_fail(VM_EXIT_NOTFOUND, "storage directory '%s' does not exist (set VMKIT_STORAGE_DIR)", sdir);
    goto out;
  }

  /* A dry run checks the name against the host too: it shows what would happen. */
  conn = vm_connect();
  if (!conn) { rc = VM_EXIT_FAIL; goto out; }
  virDomainPtr existing = virDomainLookupByName(conn, name);
  if (existing) {
    virDomainFree(existing);
    rc = vm_fail(VM_EXIT_STATE, "VM '%s' already exists", name);
    goto out;
  }

  /* Plan the disks. */
  char sizebuf[32] = "";
  if (size) snprintf(sizebuf, sizeof sizebuf, "%llu", (unsigned long long)size);
  if (o_template) {
    CLEANUP_FREE char *path = vm_strdup_printf("%s/%s.qcow2", sdir, name);
    struct planned_disk *d = &disks[nd++];
    if ((rc = plan_new(d, path))) goto out;
    if (size && size < tpl.virtual_size) {
      rc = vm_usage_error("--size %s is smaller than the template's disk", o_size);
      goto out;
    }
    if (o_full) {
      char *a[] = { "qemu-img", "convert", "-q", "-f", "qcow2", "-O", "qcow2", tpl.disk, d->path, NULL };
      for (char **p = a; *p; p++) vm_strv_add(&d->argv, *p);
      if (size) {
        char *b[] = { "qemu-img", "resize", "-q", "-f", "qcow2", d->path, sizebuf, NULL };
        for (char **p = b; *p; p++) vm_strv_add(&d->argv2, *p);
      }
    } else {
      char *a[] = { "qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", tpl.disk, d->path,
                    size ? sizebuf : NULL, NULL };
      for (char **p = a; *p; p++) vm_strv_add(&d->argv, *p);
    }
  } else if (image) {
    CLEANUP_JSON json_object *info = vm_image_info(image, false);
    json_object *fmt;
    if (!info || !json_object_object_get_ex(info, "format", &fmt)) { rc = VM_EXIT_FAIL; goto out; }
    const char *src_fmt = json_object_get_string(fmt);
    if (strcmp(src_fmt, "raw") != 0 && strcmp(src_fmt, "qcow2") != 0) {
      rc = vm_fail(VM_EXIT_USAGE, "image '%s' is %s: use a raw or qcow2 image", o_image, src_fmt);
      goto out;
    }
    struct planned_disk *d = &disks[nd++];
    if (o_copy) {
      CLEANUP_FREE char *path = vm_strdup_printf("%s/%s.qcow2", sdir, name);
      if ((rc = plan_new(d, path))) goto out;
      char *a[] = { "qemu-img", "convert", "-q", "-f", (char *)src_fmt, "-O", "qcow2", image, d->path, NULL };
      for (char **p = a; *p; p++) vm_strv_add(&d->argv, *p);
      if (size) {
        char *b[] = { "qemu-img", "resize", "-q", "-f", "qcow2", d->path, sizebuf, NULL };
        for (char **p = b; *p; p++) vm_strv_add(&d->argv2, *p);
      }
    } else {
      d->path = strdup(image);
      d->format = strcmp(src_fmt, "raw") == 0 ? "raw" : "qcow2";
      if (vm_image_is_template(image)) {
        rc = vm_fail(VM_EXIT_STATE, "image '%s' is a template: use --template", o_image);
        goto out;
      }
      struct vm_strv users = { 0 };
      if ((rc = vm_image_users(conn, image, NULL, &users))) goto out;
      if (users.n) {
        rc = vm_fail(VM_EXIT_STATE, "image '%s' is in use by VM '%s': use --copy", o_image, users.v[0]);
        vm_strv_free(&users);
        goto out;
      }
    }
  }
  for (size_t i = 0; i < ndata; i++) {
    CLEANUP_FREE char *path = vm_strdup_printf("%s/%s-disk%zu.qcow2", sdir, name, i + 1);
    struct planned_disk *d = &disks[nd++];
    if ((rc = plan_new(d, path))) goto out;
    char sz[32];
    snprintf(sz, sizeof sz, "%llu", (unsigned long long)data_size[i]);
    char *a[] = { "qemu-img", "create", "-q", "-f", "qcow2", d->path, sz, NULL };
    for (char **p = a; *p; p++) vm_strv_add(&d->argv, *p);
  }

  /* The definition. */
  spec.vcpus = vcpus ? (unsigned)vcpus : tpl.vcpus ? tpl.vcpus : 1;
  spec.memory = memory ? memory : tpl.memory ? tpl.memory : 512ULL << 20;
  spec.kernel = kernel ? kernel : tpl.kernel;
  spec.initrd = initrd ? initrd : kernel ? NULL : tpl.initrd;
  spec.cmdline = o_cmdline ? o_cmdline : kernel ? NULL : tpl.cmdline;
  for (size_t i = 0; i < nd; i++)
    spec.disks[spec.ndisks++] = (struct vm_spec_disk){ disks[i].path, disks[i].format, "disk", false };
  if (cdrom) spec.disks[spec.ndisks++] = (struct vm_spec_disk){ cdrom, "raw", "cdrom", true };
  if (o_console_log) {
    if (o_console_log[0] == '/') log = strdup(o_console_log);
    else {
      char cwd[PATH_MAX];
      log = vm_strdup_printf("%s/%s", getcwd(cwd, sizeof cwd) ? cwd : ".", o_console_log);
    }
  } else {
    log = vm_strdup_printf("/var/log/libvirt/qemu/%s-console.log", name);
  }
  spec.console_log = log;
  spec.meta_template = tpl.name;
  xml = vm_spec_xml(&spec);
  if (!xml) { rc = vm_fail(VM_EXIT_FAIL, "cannot write the domain XML"); goto out; }

  if (o_dry_run) {
    for (size_t i = 0; i < nd; i++) {
      if (disks[i].argv.n) {
        CLEANUP_FREE char *c = vm_argv_str(disks[i].argv.v);
        fprintf(stderr, "would run: %s\n", c);
      }
      if (disks[i].argv2.n) {
        CLEANUP_FREE char *c = vm_argv_str(disks[i].argv2.v);
        fprintf(stderr, "would run: %s\n", c);
      }
    }
    if (customization_wanted(&cust))
      fprintf(stderr, "would customize: %s\n", disks[0].path);
    fputs(xml, stdout);
    rc = 0;
    goto out;
  }

  /* Make it, undoing everything on the first failure or interruption. */
  vm_catch_signals();
  for (size_t i = 0; i < nd && rc == 0; i++) {
    if (!disks[i].argv.n) continue;
    if ((rc = vm_undo_new_file(disks[i].path))) break;
    vm_progress("creating disks", i, nd);
    rc = vm_run_checked(disks[i].argv.v, NULL);
    if (rc == 0 && disks[i].argv2.n) rc = vm_run_checked(disks[i].argv2.v, NULL);
    if (rc == 0 && vm_interrupted()) rc = vm_fail(VM_EXIT_FAIL, "interrupted");
  }
  vm_progress_end();
  if (rc == 0 && customization_wanted(&cust)) {
    rc = customize_disk(disks[0].path, disks[0].format, &cust);
    if (rc == 0 && vm_interrupted()) rc = vm_fail(VM_EXIT_FAIL, "interrupted");
  }
  if (rc == 0) {
    dom = virDomainDefineXML(conn, xml);
    if (!dom) rc = vm_fail_virt("cannot define VM '%s'", name);
    else vm_undo_domain(dom);
  }
  if (rc == 0 && o_autostart && virDomainSetAutostart(dom, 1) < 0)
    rc = vm_fail_virt("cannot set autostart for '%s'", name);
  if (rc == 0 && o_start && virDomainCreate(dom) < 0)
    rc = vm_fail_virt("cannot start VM '%s'", name);
  if (rc == 0 && vm_interrupted()) rc = vm_fail(VM_EXIT_FAIL, "interrupted");
  if (rc) {
    vm_undo_run();
  } else {
    vm_undo_forget();
    vm_info("created VM '%s'%s%s%s", name, o_template ? (o_full ? " (full copy of '" : " (linked clone of '") : "",
            o_template ? o_template : "", o_template ? "')" : "");
  }

out:
  for (size_t i = 0; i < nd; i++) {
    free(disks[i].path);
    vm_strv_free(&disks[i].argv);
    vm_strv_free(&disks[i].argv2);
  }
  template_free(&tpl);
  return rc;
}
