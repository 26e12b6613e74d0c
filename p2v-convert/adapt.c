/* p2v-convert: the guest looked at and adapted through libguestfs, the way
 * virt-v2v does for a Linux guest, with every change listed:
 *   - which disk holds the OS (root and the system file systems its fstab mounts,
 *     LVM followed across disks) and which hold data;
 *   - virtio drivers in the initramfs (initramfs-tools or dracut, whichever the
 *     guest has), rebuilt by the guest's own tool;
 *   - /dev/sdX names in fstab, the resume device and the kernel command line
 *     replaced by UUIDs (the VM's disks are /dev/vdX), the boot loader's
 *     configuration made again by the guest's own tool;
 *   - a serial console (kernel and GRUB), where --boot-test and people look;
 *   - each NIC's name pinned to the MAC the VM keeps (systemd .link, else a udev
 *     rule), so that its configuration still applies;
 *   - services bound to the server's own hardware disabled. */
#include <string.h>

#include "convert.h"

struct actx {
  guestfs_h *g;
  char **devs;     /* the appliance's disks, in stream order */
  size_t ndevs;
  const struct pc_disk *disks;
  bool by_name;    /* the server's disk names are /dev names (sda ...) */
  json_object *changes;
  int failed;      /* steps that failed */
};

static void changed(struct actx *a, const char *fmt, ...) VM_PRINTF(2, 3);
static void changed(struct actx *a, const char *fmt, ...)
{
  char line[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  json_object_array_add(a->changes, json_object_new_string(line));
  vm_info("guest: %s", line);
}

static void step_failed(struct actx *a, const char *what)
{
  const char *why = guestfs_last_error(a->g);
  int n = why ? (int)strcspn(why, "\n") : 0;
  vm_warn("guest: %s failed: %.*s", what, n, why ? why : "");
  a->failed++;
}

static bool is_file(guestfs_h *g, const char *path)
{
  int r = guestfs_is_file_opts(g, path, GUESTFS_IS_FILE_OPTS_FOLLOWSYMLINKS, 1, -1);
  return r == 1;
}

/* A text file of the guest, NULL when absent. */
static char *read_text(guestfs_h *g, const char *path)
{
  if (!is_file(g, path)) return NULL;
  size_t n = 0;
  char *p = guestfs_read_file(g, path, &n);
  if (!p) return NULL;
  char *s = malloc(n + 1);
  if (!s) abort();
  memcpy(s, p, n);
  s[n] = 0;
  free(p);
  return s;
}

static int write_text(struct actx *a, const char *path, const char *text)
{
  if (guestfs_write(a->g, path, text, strlen(text)) == -1) {
    CLEANUP_FREE char *what = vm_strdup_printf("writing %s", path);
    step_failed(a, what);
    return -1;
  }
  return 0;
}

static void buf_add(char **buf, size_t *len, const char *s, size_t n)
{
  char *p = realloc(*buf, *len + n + 1);
  if (!p) abort();
  memcpy(p + *len, s, n);
  *len += n;
  p[*len] = 0;
  *buf = p;
}

/* ---- device names ---------------------------------------------------------------- */

/* Splits /dev/sdb1 into the disk's name (sdb) and the partition's number (1). */
static bool split_dev(const char *dev, char disk[32], char part[16])
{
  if (strncmp(dev, "/dev/", 5) != 0) return false;
  const char *p = dev + 5;
  size_t pre = !strncmp(p, "xvd", 3) ? 3 : (!strncmp(p, "sd", 2) || !strncmp(p, "hd", 2) || !strncmp(p, "vd", 2)) ? 2 : 0;
  if (pre) {
    size_t l = strspn(p + pre, "abcdefghijklmnopqrstuvwxyz");
    if (l == 0 || l > 3) return false;
    size_t d = strspn(p + pre + l, "0123456789");
    if (p[pre + l + d] != 0 || d > 3) return false;
    snprintf(disk, 32, "%.*s", (int)(pre + l), p);
    snprintf(part, 16, "%s", p + pre + l);
    return true;
  }
  if (!strncmp(p, "nvme", 4)) { /* nvme0n1p2 */
    const char *q = strstr(p, "p");
    size_t l = q ? (size_t)(q - p) : strlen(p);
    if (l >= 32) return false;
    snprintf(disk, 32, "%.*s", (int)l, p);
    snprintf(part, 16, "%s", q ? q + 1 : "");
    return strspn(part, "0123456789") == strlen(part) && strlen(part) < 4;
  }
  return false;
}

/* The appliance's device for a device name of the server, or NULL. */
static char *server_dev(struct actx *a, const char *dev)
{
  char disk[32], part[16];
  if (!split_dev(dev, disk, part)) return NULL;
  size_t idx = a->ndevs;
  if (a->by_name) {
    for (size_t i = 0; i < a->ndevs; i++)
      if (!strcmp(a->disks[i].server_name, disk)) idx = i;
  } else if (strncmp(disk, "nvme", 4) != 0) {
    /* Image files stand for the server's disks in order: sda, sdb ... */
    const char *l = disk + (disk[0] == 'x' ? 3 : 2);
    if (strlen(l) == 1) idx = (size_t)(l[0] - 'a');
  }
  if (idx >= a->ndevs) return NULL;
  char *adev = vm_strdup_printf("%s%s", a->devs[idx], part);
  if (*part) {
    CLEANUP_STRV char **parts = guestfs_list_partitions(a->g);
    if (!parts || !vm_strv_contains(parts, adev)) {
      free(adev);
      return NULL;
    }
  }
  return adev;
}

/* UUID=... for a device name of the server, or NULL (no such device, or a file
 * system without a UUID). */
static char *uuid_spec(struct actx *a, const char *dev)
{
  CLEANUP_FREE char *adev = server_dev(a, dev);
  if (!adev) return NULL;
  CLEANUP_FREE char *uuid = guestfs_vfs_uuid(a->g, adev);
  if (!uuid || !*uuid) return NULL;
  return vm_strdup_printf("UUID=%s", uuid);
}

/* fstab: each /dev/sdX-like first field by UUID; the rest of the line kept. */
static void fix_fstab(struct actx *a)
{
  CLEANUP_FREE char *text = read_text(a->g, "/etc/fstab");
  if (!text) return;
  char *out = NULL;
  size_t len = 0;
  int n = 0;
  for (char *line = text, *next; line && *line; line = next) {
    next = strchr(line, '\n');
    size_t ll = next ? (size_t)(next - line) : strlen(line);
    if (next) next++;
    size_t ws = strspn(line, " \t");
    size_t tl = strcspn(line + ws, " \t\n");
    CLEANUP_FREE char *spec = vm_strdup_printf("%.*s", (int)tl, line + ws);
    CLEANUP_FREE char *uuid = spec[0] == '/' ? uuid_spec(a, spec) : NULL;
    if (uuid) {
      size_t rest = ws + tl;
      size_t mw = strspn(line + rest, " \t");
      size_t ml = strcspn(line + rest + mw, " \t\n");
      changed(a, "/etc/fstab: %s (%.*s) by %s", spec, (int)ml, line + rest + mw, uuid);
      buf_add(&out, &len, line, ws);
      buf_add(&out, &len, uuid, strlen(uuid));
      buf_add(&out, &len, line + rest, ll - rest);
      n++;
    } else {
      if (spec[0] == '/' && !strncmp(spec, "/dev/", 5) && strncmp(spec, "/dev/mapper/", 12) &&
          strncmp(spec, "/dev/disk/", 10) && split_dev(spec, (char[32]){ 0 }, (char[16]){ 0 }))
        vm_warn("guest: /etc/fstab names %s, which is on no disk of the stream: left as it is", spec);
      buf_add(&out, &len, line, ll);
    }
    if (next) buf_add(&out, &len, "\n", 1);
  }
  if (n) write_text(a, "/etc/fstab", out ? out : "");
  free(out);
}

/* A file of KEY=VALUE lines whose VALUE for key may be a device name. */
static void fix_key_dev(struct actx *a, const char *path, const char *key)
{
  CLEANUP_FREE char *text = read_text(a->g, path);
  if (!text) return;
  char *out = NULL;
  size_t len = 0, kl = strlen(key);
  int n = 0;
  for (char *line = text, *next; line && *line; line = next) {
    next = strchr(line, '\n');
    size_t ll = next ? (size_t)(next - line) : strlen(line);
    if (next) next++;
    if (!strncmp(line, key, kl) && line[kl] == '=') {
      CLEANUP_FREE char *val = vm_strdup_printf("%.*s", (int)(ll - kl - 1), line + kl + 1);
      CLEANUP_FREE char *uuid = uuid_spec(a, val);
      if (uuid) {
        changed(a, "%s: %s=%s by %s", path, key, val, uuid);
        CLEANUP_FREE char *nl = vm_strdup_printf("%s=%s", key, uuid);
        buf_add(&out, &len, nl, strlen(nl));
        n++;
        if (next) buf_add(&out, &len, "\n", 1);
        continue;
      }
    }
    buf_add(&out, &len, line, ll);
    if (next) buf_add(&out, &len, "\n", 1);
  }
  if (n) write_text(a, path, out ? out : "");
  free(out);
}

/* ---- the boot loader -------------------------------------------------------------- */

/* Words of a kernel command line that name a device (root=/dev/sda1) by UUID. */
static char *fix_cmdline(struct actx *a, const char *v, bool *any)
{
  char *out = NULL;
  size_t len = 0;
  for (const char *p = v; *p;) {
    size_t sp = strspn(p, " ");
    buf_add(&out, &len, p, sp);
    p += sp;
    size_t wl = strcspn(p, " ");
    CLEANUP_FREE char *w = vm_strdup_printf("%.*s", (int)wl, p);
    char *eq = strchr(w, '=');
    CLEANUP_FREE char *uuid = eq && (!strncmp(w, "root=", 5) || !strncmp(w, "resume=", 7)) ? uuid_spec(a, eq + 1) : NULL;
    if (uuid) {
      buf_add(&out, &len, w, (size_t)(eq - w) + 1);
      buf_add(&out, &len, uuid, strlen(uuid));
      *any = true;
    } else {
      buf_add(&out, &len, p, wl);
    }
    p += wl;
  }
  return out ? out : vm_strdup("");
}

static bool exists(guestfs_h *g, const char *path) { return guestfs_exists(g, path) == 1; }

/* /etc/default/grub: root by UUID, a serial console; then grub.cfg made again by
 * the guest's own update-grub or grub(2)-mkconfig. */
static void fix_grub(struct actx *a)
{
  CLEANUP_FREE char *text = read_text(a->g, "/etc/default/grub");
  if (!text) {
    if (exists(a->g, "/boot/grub/grub.cfg") || exists(a->g, "/boot/grub2/grub.cfg"))
      vm_warn("guest: GRUB without /etc/default/grub: its configuration is left as it is");
    return;
  }
  char *out = NULL;
  size_t len = 0;
  bool has_serial = strstr(text, "console=ttyS0") != NULL, has_terminal = false, cmdline_seen = false, any = false;
  for (char *line = text, *next; line && *line; line = next) {
    next = strchr(line, '\n');
    size_t ll = next ? (size_t)(next - line) : strlen(line);
    if (next) next++;
    CLEANUP_FREE char *l = vm_strdup_printf("%.*s", (int)ll, line);
    if (!strncmp(l, "GRUB_DISABLE_LINUX_UUID=", 24) && strstr(l, "true")) {
      CLEANUP_FREE char *nl = vm_strdup_printf("#%s # p2v-convert: root= by UUID (the VM's disks are /dev/vdX)", l);
      buf_add(&out, &len, nl, strlen(nl));
      changed(a, "/etc/default/grub: %s off (root= by UUID)", l);
      any = true;
    } else if (!strncmp(l, "GRUB_CMDLINE_LINUX=", 19) || !strncmp(l, "GRUB_CMDLINE_LINUX_DEFAULT=", 27)) {
      bool dflt = l[18] == '_';
      char *v = strchr(l, '=') + 1;
      char q = (*v == '"' || *v == '\'') ? *v : 0;
      size_t vl = strlen(v);
      CLEANUP_FREE char *inner = q && vl >= 2 && v[vl - 1] == q ? vm_strdup_printf("%.*s", (int)(vl - 2), v + 1)
                                                                : vm_strdup(v);
      bool devs = false;
      CLEANUP_FREE char *fixed = fix_cmdline(a, inner, &devs);
      CLEANUP_FREE char *val = NULL;
      if (!dflt && !has_serial)
        val = vm_strdup_printf("%s%sconsole=tty0 console=ttyS0,115200", fixed, *fixed ? " " : "");
      else
        val = vm_strdup(fixed);
      CLEANUP_FREE char *nl = vm_strdup_printf("%.*s\"%s\"", (int)(v - l), l, val);
      buf_add(&out, &len, nl, strlen(nl));
      if (strcmp(val, inner) != 0) {
        changed(a, "/etc/default/grub: %.*s\"%s\" (was \"%s\")", (int)(v - l), l, val, inner);
        any = true;
      }
      if (!dflt) cmdline_seen = true;
      (void)devs;
    } else if (!strncmp(l, "GRUB_TERMINAL=", 14) || !strncmp(l, "GRUB_TERMINAL_OUTPUT=", 21)) {
      has_terminal = true;
      if (!strstr(l, "serial")) {
        CLEANUP_FREE char *nl = vm_strdup_printf("%.*s=\"console serial\"", (int)strcspn(l, "="), l);
        buf_add(&out, &len, nl, strlen(nl));
        changed(a, "/etc/default/grub: %s (was %s)", nl, l);
        any = true;
      } else {
        buf_add(&out, &len, l, ll);
      }
    } else {
      buf_add(&out, &len, l, ll);
    }
    if (next) buf_add(&out, &len, "\n", 1);
  }
  if (len && out[len - 1] != '\n') buf_add(&out, &len, "\n", 1);
  if (!cmdline_seen && !has_serial) {
    const char *l = "GRUB_CMDLINE_LINUX=\"console=tty0 console=ttyS0,115200\"\n";
    buf_add(&out, &len, l, strlen(l));
    changed(a, "/etc/default/grub: GRUB_CMDLINE_LINUX=\"console=tty0 console=ttyS0,115200\" added");
    any = true;
  }
  if (!has_terminal) {
    const char *l = "GRUB_TERMINAL=\"console serial\"\nGRUB_SERIAL_COMMAND=\"serial --speed=115200 --unit=0\"\n";
    buf_add(&out, &len, l, strlen(l));
    changed(a, "/etc/default/grub: GRUB_TERMINAL=\"console serial\" added (GRUB's menu on the serial console too)");
    any = true;
  }
  if (any && write_text(a, "/etc/default/grub", out) == 0) {
    /* The guest's own tool writes grub.cfg again. */
    const char *debian[] = { "update-grub", NULL };
    const char *mk2[] = { "grub2-mkconfig", "-o", "/boot/grub2/grub.cfg", NULL };
    const char *mk[] = { "grub-mkconfig", "-o", "/boot/grub/grub.cfg", NULL };
    const char **argv = exists(a->g, "/usr/sbin/update-grub") ? debian
                        : exists(a->g, "/boot/grub2/grub.cfg") ? mk2
                                                                : mk;
    char *r = guestfs_command(a->g, (char **)argv);
    if (!r) step_failed(a, argv[0]);
    else changed(a, "%s: /boot/grub%s/grub.cfg written again", argv[0], argv == mk2 ? "2" : "");
    free(r);
  }
  free(out);
}

/* ---- the initramfs ---------------------------------------------------------------- */

static const char *const virtio_mods[] = { "virtio_pci", "virtio_blk", "virtio_scsi", "virtio_net", "virtio_console",
                                           NULL };

/* The guest's kernels (/lib/modules/VERSION with a kernel image in /boot). */
static void kernels(struct actx *a, struct vm_strv *out)
{
  CLEANUP_STRV char **v = exists(a->g, "/lib/modules") ? guestfs_ls(a->g, "/lib/modules") : NULL;
  for (size_t i = 0; v && v[i]; i++) {
    CLEANUP_FREE char *k = vm_strdup_printf("/boot/vmlinuz-%s", v[i]);
    if (exists(a->g, k)) vm_strv_add(out, v[i]);
  }
}

/* Does kernel kver have a virtio disk driver (as a module or built in)? */
static bool has_virtio_blk(struct actx *a, const char *kver)
{
  CLEANUP_FREE char *pat = vm_strdup_printf("/lib/modules/%s/kernel/drivers/block/virtio_blk.ko*", kver);
  CLEANUP_STRV char **m = guestfs_glob_expand(a->g, pat);
  if (m && m[0]) return true;
  CLEANUP_FREE char *bpath = vm_strdup_printf("/lib/modules/%s/modules.builtin", kver);
  CLEANUP_FREE char *b = read_text(a->g, bpath);
  return b && strstr(b, "virtio_blk.ko");
}

static void fix_initramfs(struct actx *a)
{
  struct vm_strv kv = { 0 };
  kernels(a, &kv);
  if (!kv.n) {
    vm_warn("guest: no kernel in /boot with its modules: the initramfs is left as it is");
    a->failed++;
    return;
  }
  for (size_t i = 0; i < kv.n; i++)
    if (!has_virtio_blk(a, kv.v[i]))
      vm_warn("guest: kernel %s has no virtio_blk driver: it will not find its disks on the VM", kv.v[i]);
  if (exists(a->g, "/usr/sbin/update-initramfs") || exists(a->g, "/sbin/update-initramfs")) {
    /* initramfs-tools: the modules file is read whatever MODULES= says. */
    const char *mf = "/etc/initramfs-tools/modules";
    CLEANUP_FREE char *text = read_text(a->g, mf);
    char *out = text ? vm_strdup(text) : vm_strdup("");
    size_t len = strlen(out);
    struct vm_strv added = { 0 };
    for (size_t m = 0; virtio_mods[m]; m++) {
      bool have = false;
      for (char *l = text; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
        if (!strncmp(l, virtio_mods[m], strlen(virtio_mods[m])) && strchr(" \t\n", l[strlen(virtio_mods[m])]))
          have = true;
      if (have) continue;
      if (len && out[len - 1] != '\n') buf_add(&out, &len, "\n", 1);
      CLEANUP_FREE char *l = vm_strdup_printf("%s\n", virtio_mods[m]);
      buf_add(&out, &len, l, strlen(l));
      vm_strv_add(&added, virtio_mods[m]);
    }
    if (added.n) {
      if (write_text(a, mf, out) == 0) {
        CLEANUP_FREE char *list = vm_strv_join_quoted(added.v);
        changed(a, "%s: %s added", mf, list);
      }
    }
    free(out);
    vm_strv_free(&added);
    const char *argv[] = { "update-initramfs", "-u", "-k", "all", NULL };
    char *r = guestfs_command(a->g, (char **)argv);
    if (!r) step_failed(a, "update-initramfs");
    else changed(a, "update-initramfs -u -k all: the initramfs of %zu kernel%s made again with the virtio drivers",
                 kv.n, kv.n == 1 ? "" : "s");
    free(r);
  } else if (exists(a->g, "/usr/bin/dracut") || exists(a->g, "/sbin/dracut") || exists(a->g, "/usr/sbin/dracut")) {
    const char *conf = "/etc/dracut.conf.d/90-p2v-convert-virtio.conf";
    if (guestfs_mkdir_p(a->g, "/etc/dracut.conf.d") == -1) step_failed(a, "mkdir /etc/dracut.conf.d");
    if (write_text(a, conf,
                   "# p2v-convert: the VM's disk, NIC and console drivers in every initramfs\n"
                   "add_drivers+=\" virtio_pci virtio_blk virtio_scsi virtio_net virtio_console \"\n") == 0)
      changed(a, "%s: the virtio drivers added", conf);
    for (size_t i = 0; i < kv.n; i++) {
      CLEANUP_FREE char *img = vm_strdup_printf("/boot/initramfs-%s.img", kv.v[i]);
      const char *argv[] = { "dracut", "-f", img, kv.v[i], NULL };
      char *r = guestfs_command(a->g, (char **)argv);
      if (!r) step_failed(a, "dracut");
      else changed(a, "dracut -f %s %s: made again with the virtio drivers", img, kv.v[i]);
      free(r);
    }
  } else {
    vm_warn("guest: neither initramfs-tools nor dracut: the initramfs is left as it is");
    a->failed++;
  }
  vm_strv_free(&kv);
}

/* ---- NIC names ---------------------------------------------------------------------- */

static bool ifname_ok(const char *s)
{
  size_t n = strlen(s);
  return n > 0 && n < 16 && strcmp(s, "lo") != 0 &&
         strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") == n;
}

static void add_name(struct vm_strv *v, const char *s, size_t n)
{
  CLEANUP_FREE char *w = vm_strdup_printf("%.*s", (int)n, s);
  /* enp3s0.10 and enp3s0:1 are on enp3s0. */
  w[strcspn(w, ".:")] = 0;
  if (ifname_ok(w) && !vm_strv_contains(v->v, w)) vm_strv_add(v, w);
}

/* The interface names the guest's network configuration uses. */
static void guest_ifnames(struct actx *a, struct vm_strv *names)
{
  struct vm_strv files = { 0 };
  vm_strv_add(&files, "/etc/network/interfaces");
  const char *globs[] = { "/etc/network/interfaces.d/*", "/etc/sysconfig/network-scripts/ifcfg-*",
                          "/etc/NetworkManager/system-connections/*", "/etc/systemd/network/*.network", NULL };
  for (size_t i = 0; globs[i]; i++) {
    CLEANUP_STRV char **m = guestfs_glob_expand(a->g, globs[i]);
    for (size_t k = 0; m && m[k]; k++) vm_strv_add(&files, m[k]);
  }
  for (size_t f = 0; f < files.n; f++) {
    CLEANUP_FREE char *text = read_text(a->g, files.v[f]);
    for (char *l = text; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
      l += strspn(l, " \t");
      size_t ll = strcspn(l, "\n");
      const char *keys[] = { "iface ", "auto ", "allow-hotplug ", "DEVICE=", "interface-name=", "Name=", NULL };
      for (size_t k = 0; keys[k]; k++) {
        size_t kl = strlen(keys[k]);
        if (ll <= kl || strncmp(l, keys[k], kl) != 0) continue;
        const char *v = l + kl;
        v += strspn(v, " \t\"'");
        size_t vl = strcspn(v, " \t\"'\n");
        add_name(names, v, vl);
      }
    }
  }
  vm_strv_free(&files);
}

static void pin(struct actx *a, bool systemd, const char *name, const char *mac, const char *why)
{
  if (systemd) {
    CLEANUP_FREE char *path = vm_strdup_printf("/etc/systemd/network/10-p2v-%s.link", name);
    CLEANUP_FREE char *text = vm_strdup_printf("# p2v-convert: the server's NIC %s keeps its name on the VM (same MAC).\n"
                                               "[Match]\nMACAddress=%s\n\n[Link]\nName=%s\n",
                                               name, mac, name);
    if (guestfs_mkdir_p(a->g, "/etc/systemd/network") == -1) step_failed(a, "mkdir /etc/systemd/network");
    else if (write_text(a, path, text) == 0) changed(a, "%s: NIC %s pinned to %s (%s)", path, name, mac, why);
  } else {
    const char *path = "/etc/udev/rules.d/70-p2v-net.rules";
    CLEANUP_FREE char *old = read_text(a->g, path);
    CLEANUP_FREE char *text = vm_strdup_printf("%s%sSUBSYSTEM==\"net\", ACTION==\"add\", ATTR{address}==\"%s\", NAME=\"%s\"\n",
                                               old ? old : "# p2v-convert: the server's NICs keep their names on the VM.\n",
                                               old && *old && old[strlen(old) - 1] != '\n' ? "\n" : "", mac, name);
    if (write_text(a, path, text) == 0) changed(a, "%s: NIC %s pinned to %s (%s)", path, name, mac, why);
  }
}

static void fix_nics(struct actx *a, json_object *inventory)
{
  json_object *nics;
  if (!json_object_object_get_ex(inventory, "nics", &nics) || !json_object_is_type(nics, json_type_array)) return;
  struct vm_strv gnames = { 0 };
  guest_ifnames(a, &gnames);
  bool systemd = exists(a->g, "/lib/systemd/systemd-udevd") || exists(a->g, "/usr/lib/systemd/systemd-udevd");
  size_t nn = json_object_array_length(nics);
  bool used_nic[VM_MAX_DEVS] = { 0 };
  bool used_name[64] = { 0 };
  for (size_t i = 0; i < nn && i < VM_MAX_DEVS; i++) {
    json_object *n = json_object_array_get_idx(nics, i), *jn, *jm;
    if (!json_object_object_get_ex(n, "name", &jn) || !json_object_object_get_ex(n, "mac", &jm)) continue;
    if (!json_object_is_type(jn, json_type_string) || !json_object_is_type(jm, json_type_string)) continue;
    const char *name = json_object_get_string(jn), *mac = json_object_get_string(jm);
    /* Written into a .link file or a udev rule: a MAC, nothing else. */
    if (!ifname_ok(name) || strlen(mac) != 17 || strspn(mac, "0123456789abcdefABCDEF:") != 17) continue;
    for (size_t k = 0; k < gnames.n && k < 64; k++)
      if (!strcmp(gnames.v[k], name)) {
        pin(a, systemd, name, mac, "the same name on the server");
        used_nic[i] = used_name[k] = true;
      }
  }
  /* Offline, the inventory names NICs as the rescue system does: one NIC left on
   * each side is the same NIC. */
  size_t ln = 0, lg = 0, ni = 0, gi = 0;
  for (size_t i = 0; i < nn && i < VM_MAX_DEVS; i++) {
    json_object *n = json_object_array_get_idx(nics, i), *jm;
    if (!used_nic[i] && json_object_object_get_ex(n, "mac", &jm) && json_object_is_type(jm, json_type_string) &&
        json_object_get_string_len(jm) == 17 && strspn(json_object_get_string(jm), "0123456789abcdefABCDEF:") == 17)
      ln++, ni = i;
  }
  for (size_t k = 0; k < gnames.n && k < 64; k++)
    if (!used_name[k]) lg++, gi = k;
  if (ln == 1 && lg == 1) {
    json_object *jm;
    json_object_object_get_ex(json_object_array_get_idx(nics, ni), "mac", &jm);
    pin(a, systemd, gnames.v[gi], json_object_get_string(jm), "the only NIC of the server and of the guest's configuration");
  } else if (lg > 0) {
    for (size_t k = 0; k < gnames.n && k < 64; k++)
      if (!used_name[k])
        vm_warn("guest: its configuration names NIC %s, and the inventory does not say which MAC it had: not pinned",
                gnames.v[k]);
  }
  vm_strv_free(&gnames);
}

/* ---- hardware leftovers --------------------------------------------------------------- */

/* Agents of a server's own hardware (and of other hypervisors) that fail or wait
 * on a VM. */
static const char *const hw_units[] = {
  "smartd.service", "smartmontools.service", "lm-sensors.service", "fancontrol.service", "sensord.service",
  "hp-health.service", "hp-ams.service", "hp-snmp-agents.service", "hpsmhd.service", "ipmievd.service",
  "dsm_om_connsvc.service", "dsm_sa_ipmi.service", "dataeng.service", "instsvcdrv.service",
  "mcelog.service", "bluetooth.service", "open-vm-tools.service", "vmtoolsd.service", "vgauth.service",
  "hv-kvp-daemon.service", "hv-vss-daemon.service", "hv-fcopy-daemon.service", "hypervkvpd.service",
  "hypervvssd.service", "xe-linux-distribution.service", NULL
};

/* The physical device an enabled unit is bound to (BindsTo= or Requires= a disk or
 * controller device unit), or NULL. */
static char *bound_device(struct actx *a, const char *link)
{
  CLEANUP_FREE char *target = guestfs_readlink(a->g, link);
  if (!target || target[0] != '/') return NULL;
  CLEANUP_FREE char *text = read_text(a->g, target);
  for (char *l = text; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
    if (strncmp(l, "BindsTo=", 8) && strncmp(l, "Requires=", 9)) continue;
    const char *v = strchr(l, '=') + 1;
    const char *pre[] = { "dev-sd", "dev-hd", "dev-nvme", "dev-cciss", "dev-disk-by\\x2dpath-pci", NULL };
    for (const char *w = v; *w && *w != '\n';) {
      w += strspn(w, " \t");
      size_t wl = strcspn(w, " \t\n");
      for (size_t k = 0; pre[k]; k++)
        if (!strncmp(w, pre[k], strlen(pre[k]))) return vm_strdup_printf("%.*s", (int)wl, w);
      w += wl;
    }
  }
  return NULL;
}

static void fix_units(struct actx *a)
{
  CLEANUP_STRV char **links = guestfs_glob_expand(a->g, "/etc/systemd/system/*.wants/*");
  for (size_t i = 0; links && links[i]; i++) {
    const char *unit = strrchr(links[i], '/') + 1;
    bool known = false;
    for (size_t k = 0; hw_units[k]; k++)
      if (!strcmp(unit, hw_units[k])) known = true;
    CLEANUP_FREE char *dev = known ? NULL : bound_device(a, links[i]);
    if (!known && !dev) continue;
    if (guestfs_rm(a->g, links[i]) == -1) {
      step_failed(a, "disabling a unit");
      continue;
    }
    if (dev) changed(a, "%s disabled (%s removed): it is bound to %s, a device of the server's own hardware", unit,
                     links[i], dev);
    else changed(a, "%s disabled (%s removed): an agent of hardware the VM does not have", unit, links[i]);
  }
}

/* ---- inspection ------------------------------------------------------------------------- */

static size_t dev_index(struct actx *a, const char *whole)
{
  for (size_t i = 0; i < a->ndevs; i++)
    if (!strcmp(a->devs[i], whole)) return i;
  return a->ndevs;
}

/* Marks the disks a file system's device lies on (an LV: every PV of its VG). */
static void dev_disks(struct actx *a, const char *dev, bool *on)
{
  if (guestfs_is_lv(a->g, dev) == 1) {
    CLEANUP_FREE char *canon = guestfs_lvm_canonical_lv_name(a->g, dev);
    if (!canon || strncmp(canon, "/dev/", 5) != 0) return;
    CLEANUP_FREE char *vg = vm_strdup(canon + 5);
    vg[strcspn(vg, "/")] = 0;
    CLEANUP_STRV char **uuids = guestfs_vgpvuuids(a->g, vg);
    struct guestfs_lvm_pv_list *pvs = guestfs_pvs_full(a->g);
    for (size_t i = 0; pvs && i < pvs->len; i++)
      for (size_t k = 0; uuids && uuids[k]; k++)
        if (!strncmp(uuids[k], pvs->val[i].pv_uuid, 32)) dev_disks(a, pvs->val[i].pv_name, on);
    if (pvs) guestfs_free_lvm_pv_list(pvs);
    return;
  }
  CLEANUP_FREE char *whole = guestfs_part_to_dev(a->g, dev);
  size_t i = dev_index(a, whole ? whole : dev);
  if (i < a->ndevs) on[i] = true;
}

static bool system_mount(const char *mp)
{
  const char *sys[] = { "/", "/boot", "/boot/efi", "/usr", "/var", NULL };
  for (size_t i = 0; sys[i]; i++)
    if (!strcmp(mp, sys[i])) return true;
  return false;
}

static int cmp_mp(const void *x, const void *y)
{
  const char *const *p = x, *const *q = y;
  size_t a = strlen(p[0]), b = strlen(q[0]);
  return a < b ? -1 : a > b;
}

int pc_inspect_adapt(guestfs_h *g, const struct pc_disk *disks, size_t n, json_object *inventory,
                     json_object *report)
{
  struct actx a = { .g = g, .disks = disks, .changes = json_object_new_array() };
  json_object_object_add(report, "changes", a.changes);
  CLEANUP_STRV char **devs = guestfs_list_devices(g);
  if (!devs) return vm_fail_gfs(g, "cannot list the disks");
  a.devs = devs;
  while (devs[a.ndevs]) a.ndevs++;
  a.by_name = true;
  for (size_t i = 0; i < n; i++) {
    char d[32], p[16];
    CLEANUP_FREE char *dev = vm_strdup_printf("/dev/%s", disks[i].server_name);
    if (!split_dev(dev, d, p) || *p) a.by_name = false;
  }
  json_object *roles = json_object_new_array();
  json_object_object_add(report, "roles", roles);
  bool os_on[VM_STREAM_MAX_DISKS] = { 0 };
  struct vm_strv mounts[VM_STREAM_MAX_DISKS] = { { 0 } };

  CLEANUP_STRV char **roots = guestfs_inspect_os(g);
  if (!roots) return vm_fail_gfs(g, "cannot inspect the disks");
  const char *root = NULL;
  for (size_t i = 0; roots[i]; i++) {
    CLEANUP_FREE char *type = guestfs_inspect_get_type(g, roots[i]);
    if (!root && type && !strcmp(type, "linux")) root = roots[i];
  }
  if (!roots[0]) {
    vm_warn("no operating system found on the disks: the VM is defined as it is, not adapted");
    json_object_object_add(report, "os", NULL);
  } else if (!root) {
    CLEANUP_FREE char *type = guestfs_inspect_get_type(g, roots[0]);
    vm_warn("the disks hold a %s system: p2v-convert adapts Linux only; the VM is defined as it is",
            type ? type : "unknown");
    json_object_object_add(report, "os", NULL);
  }
  if (roots[0] && roots[1]) vm_warn("the disks hold %s operating systems: the first Linux one is adapted",
                                    roots[2] ? "several" : "two");
  int rc = 0;
  if (root) {
    /* "Red Hat Enterprise Linux Server release 7.9", or Debian's "12.15": then
     * with the distribution's name. */
    CLEANUP_FREE char *product = guestfs_inspect_get_product_name(g, root);
    CLEANUP_FREE char *distro = guestfs_inspect_get_distro(g, root);
    CLEANUP_FREE char *os = product && product[0] >= 'A' ? vm_strdup(product)
                            : vm_strdup_printf("%s %s", distro ? distro : "linux", product ? product : "");
    json_object_object_add(report, "os", json_object_new_string(os));
    vm_info("guest: %s on %s", os, root);
    CLEANUP_STRV char **mps = guestfs_inspect_get_mountpoints(g, root);
    size_t nm = 0;
    while (mps && mps[nm]) nm += 2;
    if (nm) qsort(mps, nm / 2, 2 * sizeof *mps, cmp_mp);
    for (size_t i = 0; i < nm; i += 2) {
      bool on[VM_STREAM_MAX_DISKS] = { 0 };
      dev_disks(&a, mps[i + 1], on);
      for (size_t k = 0; k < a.ndevs && k < VM_STREAM_MAX_DISKS; k++) {
        if (!on[k]) continue;
        vm_strv_add(&mounts[k], mps[i]);
        if (system_mount(mps[i])) os_on[k] = true;
      }
      if (guestfs_mount(g, mps[i + 1], mps[i]) == -1) {
        if (!strcmp(mps[i], "/")) {
          rc = vm_fail_gfs(g, "cannot mount the guest's root %s", mps[i + 1]);
          break;
        }
        vm_warn("guest: cannot mount %s on %s: left out", mps[i + 1], mps[i]);
      }
    }
    if (!rc) {
      fix_fstab(&a);
      fix_key_dev(&a, "/etc/initramfs-tools/conf.d/resume", "RESUME");
      fix_nics(&a, inventory);
      fix_units(&a);
      fix_initramfs(&a);
      fix_grub(&a);
    }
    if (guestfs_umount_all(g) == -1 && !rc) rc = vm_fail_gfs(g, "cannot unmount the guest's file systems");
  }
  for (size_t i = 0; i < n && i < VM_STREAM_MAX_DISKS; i++) {
    json_object *r = json_object_new_object();
    json_object_object_add(r, "disk", json_object_new_string(disks[i].server_name));
    json_object_object_add(r, "role", json_object_new_string(os_on[i] ? "os" : "data"));
    json_object *ml = json_object_new_array();
    for (size_t k = 0; k < mounts[i].n; k++) json_object_array_add(ml, json_object_new_string(mounts[i].v[k]));
    json_object_object_add(r, "mounts", ml);
    json_object_array_add(roles, r);
    if (root) {
      CLEANUP_FREE char *list = mounts[i].n ? vm_strv_join_quoted(mounts[i].v) : NULL;
      vm_info("disk %s: %s disk%s%s", disks[i].server_name, os_on[i] ? "the OS" : "a data", list ? ", holds " : "",
              list ? list : "");
    }
    vm_strv_free(&mounts[i]);
  }
  json_object_object_add(report, "adapted", json_object_new_boolean(root && !rc && !a.failed));
  if (!rc && a.failed) rc = VM_EXIT_VERIFY;
  return rc;
}
