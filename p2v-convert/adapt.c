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
#include <strings.h>

#include "convert.h"

struct actx {
  guestfs_h *g;
  char **devs;     /* the appliance's disks, in stream order */
  size_t ndevs;
  const struct pc_disk *disks;
  bool by_name;    /* the server's disk names are /dev names (sda ...) */
  json_object *inventory;
  const char *distro; /* libguestfs's name of the guest's distribution */
  int ways;        /* how the server's /dev names may map: BY_NAME, BY_ORDER */
  const char *root_dev; /* the guest's root file system, in the appliance */
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

/* How the server's device names map onto the disks of the stream: by the names
 * the agent saw (sdb is the disk it called sdb), or by order (the first disk that
 * is not NVMe is sda). On the server itself the two agree; a rescue system may
 * name the disks otherwise (its own stick is sda), and image files are known by
 * order only. */
enum { BY_NAME = 1, BY_ORDER = 2 };

/* The appliance's device for a device name of the server under one way of
 * mapping, or NULL. */
static char *server_dev(struct actx *a, const char *dev, int how)
{
  char disk[32], part[16];
  if (!split_dev(dev, disk, part)) return NULL;
  size_t idx = a->ndevs;
  if (how == BY_NAME) {
    for (size_t i = 0; i < a->ndevs; i++)
      if (!strcmp(a->disks[i].server_name, disk)) idx = i;
  } else if (strncmp(disk, "nvme", 4) != 0) {
    const char *l = disk + (disk[0] == 'x' ? 3 : 2);
    size_t want = strlen(l) == 1 ? (size_t)(l[0] - 'a') : SIZE_MAX;
    for (size_t i = 0, k = 0; i < a->ndevs && want != SIZE_MAX; i++) {
      if (!strncmp(a->disks[i].server_name, "nvme", 4)) continue;
      if (k++ == want) idx = i;
    }
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

static char *vfs_uuid(struct actx *a, const char *adev)
{
  guestfs_push_error_handler(a->g, NULL, NULL);
  char *u = guestfs_vfs_uuid(a->g, adev);
  guestfs_pop_error_handler(a->g);
  if (u && !*u) {
    free(u);
    u = NULL;
  }
  return u;
}

/* Does the appliance's device hold what want says: a file system of that type
 * (the ext types stand for one another), "swap", or with want NULL anything? */
static bool dev_holds(struct actx *a, const char *adev, const char *want)
{
  guestfs_push_error_handler(a->g, NULL, NULL);
  CLEANUP_FREE char *t = guestfs_vfs_type(a->g, adev);
  guestfs_pop_error_handler(a->g);
  if (!t || !*t) return false;
  if (!want || !strcmp(want, "auto")) return true;
  if (!strncmp(want, "ext", 3) && !strncmp(t, "ext", 3)) return true;
  return !strcmp(t, want);
}

/* What a device name stands for: the root ("/" in fstab, root=), or anything but
 * the root, and a file system (or swap area) of kind want. */
struct target {
  const char *want;
  bool root;
};

/* Can the appliance's device be what t says: of its kind, the root or not the
 * root, and not a device that another line of the file already names? */
static bool dev_fits(struct actx *a, const char *adev, const struct target *t, const struct vm_strv *used)
{
  if (!dev_holds(a, adev, t->want)) return false;
  if (t->root != (a->root_dev && !strcmp(adev, a->root_dev))) return false;
  if (used && vm_strv_contains(used->v, adev)) return false;
  return true;
}

enum found { FOUND, NOWHERE, AMBIGUOUS };

/* The appliance's device that the server's device name dev stands for. Each way
 * of mapping still in the running (a->ways) must give the same device, one that
 * fits t: one way that finds it while another finds none, or another device, is
 * ambiguous. */
static char *resolve(struct actx *a, const char *dev, const struct target *t, const struct vm_strv *used,
                     enum found *how)
{
  char *found = NULL;
  int ways = 0, hits = 0;
  bool differ = false;
  for (int w = BY_NAME; w <= BY_ORDER; w <<= 1) {
    if (!(a->ways & w)) continue;
    ways++;
    char *c = server_dev(a, dev, w);
    if (!c || !dev_fits(a, c, t, used)) {
      free(c);
      continue;
    }
    hits++;
    if (!found) found = c;
    else {
      if (strcmp(found, c) != 0) differ = true;
      free(c);
    }
  }
  /* The root is known on its own: a way that lands on it is the right one. */
  *how = hits == 0 ? NOWHERE : (hits < ways && !t->root) || differ ? AMBIGUOUS : FOUND;
  if (*how != FOUND) {
    free(found);
    return NULL;
  }
  return found;
}

/* UUID=... for a device name of the server, or NULL: why in *how. The device is
 * added to used. */
static char *uuid_spec(struct actx *a, const char *dev, const struct target *t, struct vm_strv *used,
                       enum found *how)
{
  CLEANUP_FREE char *adev = resolve(a, dev, t, used, how);
  if (!adev) return NULL;
  CLEANUP_FREE char *uuid = vfs_uuid(a, adev);
  if (!uuid) {
    *how = NOWHERE;
    return NULL;
  }
  if (used) vm_strv_add(used, adev);
  return vm_strdup_printf("UUID=%s", uuid);
}

/* A device name that no disk of the stream, or more than one, stands for: said,
 * and a failed step unless the guest boots without it (nofail, noauto). */
static void unresolved(struct actx *a, const char *where, const char *dev, const struct target *t, enum found how,
                       bool optional)
{
  CLEANUP_FREE char *kind = t->root ? vm_strdup("the root file system")
                            : t->want ? vm_strdup_printf("a %s %s", t->want, strcmp(t->want, "swap") ? "file system" : "area")
                                      : vm_strdup("a file system");
  if (how == AMBIGUOUS)
    vm_warn("guest: %s names %s: the agent's names and the disks' order do not agree on which %s it is: left as it "
            "is",
            where, dev, kind);
  else if (!strncmp(dev, "/dev/disk/", 10))
    vm_warn("guest: %s names %s, a name of the server's hardware that the VM does not have: left as it is", where,
            dev);
  else
    vm_warn("guest: %s names %s: no disk of the stream holds %s there: left as it is", where, dev, kind);
  if (!optional) a->failed++;
}

/* The length of one logical line of a shell file: a quoted value or a backslash
 * may carry it over newlines. */
static size_t logical_len(const char *line)
{
  char q = 0;
  size_t i = 0;
  for (; line[i]; i++) {
    char c = line[i];
    if (c == '\\' && q != '\'' && line[i + 1]) i++;
    else if (q && c == q) q = 0;
    else if (!q && (c == '"' || c == '\'')) q = c;
    else if (!q && c == '#' && (i == 0 || strchr(" \t;", line[i - 1]))) i += strcspn(line + i, "\n") - 1;
    else if (!q && c == '\n') break;
  }
  return i;
}

/* One field of an fstab line: its start and length, after n fields. */
static const char *field(const char *line, size_t ll, int n, size_t *len)
{
  const char *p = line, *end = line + ll;
  for (int i = 0;; i++) {
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\r')) p++;
    const char *q = p;
    while (q < end && *q != ' ' && *q != '\t' && *q != '\r') q++;
    if (i == n) {
      *len = (size_t)(q - p);
      return p;
    }
    if (q == p) {
      *len = 0;
      return p;
    }
    p = q;
  }
}

static bool fstab_optional(const char *opts, size_t n)
{
  CLEANUP_FREE char *o = vm_strdup_printf(",%.*s,", (int)n, opts);
  return strstr(o, ",nofail,") || strstr(o, ",noauto,");
}

/* A device name that changes with the hardware: /dev/sdX and the like, and the
 * by-id names of disks (not of LVM, MD or device-mapper, which stay) and by-path. */
static bool hw_dev_name(const char *spec)
{
  char d[32], p[16];
  if (!strncmp(spec, "/dev/disk/by-path/", 18)) return true;
  if (!strncmp(spec, "/dev/disk/by-id/", 16)) {
    const char *id = spec + 16;
    const char *hw[] = { "ata-", "scsi-", "wwn-", "nvme-", "usb-", "cciss-", "mmc-", "virtio-", "ieee1394-", NULL };
    for (size_t i = 0; hw[i]; i++)
      if (!strncmp(id, hw[i], strlen(hw[i]))) return true;
    return false;
  }
  return split_dev(spec, d, p);
}

/* An fstab line's fields. */
struct fsline {
  char *spec, *mp, *type;
  const char *spec_at; /* in the line */
  size_t spec_len;
  bool optional;
};

static void fsline_read(const char *line, size_t ll, struct fsline *f)
{
  size_t ml, tl, ol;
  f->spec_at = field(line, ll, 0, &f->spec_len);
  const char *mp = field(line, ll, 1, &ml), *type = field(line, ll, 2, &tl), *opts = field(line, ll, 3, &ol);
  f->spec = vm_strdup_printf("%.*s", (int)f->spec_len, f->spec_at);
  f->mp = vm_strdup_printf("%.*s", (int)ml, mp);
  f->type = tl ? vm_strdup_printf("%.*s", (int)tl, type) : NULL;
  f->optional = fstab_optional(opts, ol);
}

static void fsline_free(struct fsline *f)
{
  free(f->spec);
  free(f->mp);
  free(f->type);
}

/* Which ways of mapping the server's names fit its fstab: a way fits when each
 * /dev/sdX line it maps lands on a file system of the line's type, "/" on the
 * guest's root, no other line on the root, no two lines on one device. When
 * none fits, no /dev name is mapped at all. */
static void choose_ways(struct actx *a, const char *text)
{
  int fits = (a->by_name ? BY_NAME : 0) | BY_ORDER;
  for (int w = BY_NAME; w <= BY_ORDER; w <<= 1) {
    if (!(fits & w)) continue;
    struct vm_strv used = { 0 };
    for (const char *line = text; line && *line;) {
      const char *next = strchr(line, '\n');
      size_t ll = next ? (size_t)(next - line) : strlen(line);
      struct fsline f;
      fsline_read(line, ll, &f);
      if (f.spec[0] == '/' && split_dev(f.spec, (char[32]){ 0 }, (char[16]){ 0 }) && !f.optional) {
        struct target t = { .want = f.type, .root = !strcmp(f.mp, "/") };
        CLEANUP_FREE char *adev = server_dev(a, f.spec, w);
        if (!adev || !dev_fits(a, adev, &t, &used)) fits &= ~w;
        else vm_strv_add(&used, adev);
      }
      fsline_free(&f);
      line = next ? next + 1 : NULL;
    }
    vm_strv_free(&used);
  }
  a->ways = fits;
  if (!fits)
    vm_warn("guest: its fstab fits neither the names the agent saw the disks by nor their order: its /dev names are "
            "left as they are");
  else if (fits == BY_ORDER && a->by_name)
    vm_info("guest: its fstab fits the disks' order, not the names the agent saw them by (a rescue system's): "
            "/dev names mapped by order");
  else if (fits == BY_NAME)
    vm_info("guest: its fstab fits the names the agent saw the disks by: /dev names mapped so");
}

/* fstab: each /dev/sdX-like first field by UUID; the rest of the line kept. */
static void fix_fstab(struct actx *a)
{
  CLEANUP_FREE char *text = read_text(a->g, "/etc/fstab");
  a->ways = (a->by_name ? BY_NAME : 0) | BY_ORDER;
  if (!text) return;
  choose_ways(a, text);
  /* The devices the fstab already names by UUID are taken. */
  struct vm_strv used = { 0 };
  for (const char *line = text; line && *line;) {
    const char *next = strchr(line, '\n');
    struct fsline f;
    fsline_read(line, next ? (size_t)(next - line) : strlen(line), &f);
    if (!strncmp(f.spec, "UUID=", 5)) {
      guestfs_push_error_handler(a->g, NULL, NULL);
      char *d = guestfs_findfs_uuid(a->g, f.spec + 5);
      guestfs_pop_error_handler(a->g);
      if (d) vm_strv_add(&used, d);
      free(d);
    }
    fsline_free(&f);
    line = next ? next + 1 : NULL;
  }
  char *out = NULL;
  size_t len = 0;
  int n = 0;
  for (char *line = text, *next; line && *line; line = next) {
    next = strchr(line, '\n');
    size_t ll = next ? (size_t)(next - line) : strlen(line);
    if (next) next++;
    struct fsline f;
    fsline_read(line, ll, &f);
    CLEANUP_FREE char *uuid = NULL;
    if (f.spec[0] == '/' && hw_dev_name(f.spec)) {
      struct target t = { .want = f.type, .root = !strcmp(f.mp, "/") };
      enum found how = NOWHERE;
      if (strncmp(f.spec, "/dev/disk/", 10) != 0) uuid = uuid_spec(a, f.spec, &t, &used, &how);
      if (!uuid) {
        CLEANUP_FREE char *where = vm_strdup_printf("/etc/fstab (%s)", f.mp);
        unresolved(a, where, f.spec, &t, how, f.optional);
      }
    }
    if (uuid) {
      changed(a, "/etc/fstab: %s (%s) by %s", f.spec, f.mp, uuid);
      buf_add(&out, &len, line, (size_t)(f.spec_at - line));
      buf_add(&out, &len, uuid, strlen(uuid));
      buf_add(&out, &len, f.spec_at + f.spec_len, ll - (size_t)(f.spec_at + f.spec_len - line));
      n++;
    } else {
      buf_add(&out, &len, line, ll);
    }
    fsline_free(&f);
    if (next) buf_add(&out, &len, "\n", 1);
  }
  vm_strv_free(&used);
  if (n) write_text(a, "/etc/fstab", out ? out : "");
  free(out);
}

/* A file of KEY=VALUE lines (VALUE maybe quoted) whose VALUE for key may name a
 * device of kind want. */
static void fix_key_dev(struct actx *a, const char *path, const char *key, const char *want)
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
    size_t ws = strspn(line, " \t");
    if (!strncmp(line + ws, key, kl) && line[ws + kl] == '=') {
      const char *v = line + ws + kl + 1;
      char q = (*v == '"' || *v == '\'') ? *v : 0;
      if (q) v++;
      size_t vl = q ? strcspn(v, q == '"' ? "\"\n" : "'\n") : strcspn(v, " \t\r\n#");
      CLEANUP_FREE char *val = vm_strdup_printf("%.*s", (int)vl, v);
      if (!strncmp(val, "/dev/", 5) && hw_dev_name(val)) {
        enum found how = NOWHERE;
        struct target t = { .want = want };
        CLEANUP_FREE char *uuid = strncmp(val, "/dev/disk/", 10) ? uuid_spec(a, val, &t, NULL, &how) : NULL;
        if (uuid) {
          changed(a, "%s: %s=%s by %s", path, key, val, uuid);
          buf_add(&out, &len, line, (size_t)(v - line));
          buf_add(&out, &len, uuid, strlen(uuid));
          buf_add(&out, &len, v + vl, ll - (size_t)(v + vl - line));
          n++;
          if (next) buf_add(&out, &len, "\n", 1);
          continue;
        }
        CLEANUP_FREE char *where = vm_strdup_printf("%s (%s)", path, key);
        unresolved(a, where, val, &t, how, false);
      }
    }
    buf_add(&out, &len, line, ll);
    if (next) buf_add(&out, &len, "\n", 1);
  }
  if (n) write_text(a, path, out ? out : "");
  free(out);
}

static void fix_resume(struct actx *a)
{
  fix_key_dev(a, "/etc/initramfs-tools/conf.d/resume", "RESUME", "swap");
}

/* ---- the boot loader -------------------------------------------------------------- */

/* Words of a kernel command line that name a device (root=/dev/sda1) by UUID. */
static char *fix_cmdline(struct actx *a, const char *v, const char *where, bool *any)
{
  char *out = NULL;
  size_t len = 0;
  for (const char *p = v; *p;) {
    size_t sp = strspn(p, " \t\n\\");
    buf_add(&out, &len, p, sp);
    p += sp;
    size_t wl = strcspn(p, " \t\n\\");
    CLEANUP_FREE char *w = vm_strdup_printf("%.*s", (int)wl, p);
    bool root = !strncmp(w, "root=", 5), resume = !strncmp(w, "resume=", 7);
    const char *val = strchr(w, '=') ? strchr(w, '=') + 1 : "";
    CLEANUP_FREE char *uuid = NULL;
    if ((root || resume) && hw_dev_name(val)) {
      enum found how = NOWHERE;
      struct target t = { .want = root ? NULL : "swap", .root = root };
      if (strncmp(val, "/dev/disk/", 10) != 0) uuid = uuid_spec(a, val, &t, NULL, &how);
      if (!uuid) unresolved(a, where, val, &t, how, false);
    }
    if (uuid) {
      buf_add(&out, &len, w, (size_t)(val - w));
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

/* What the GRUB defaults files set, the last setting winning. */
struct grubscan {
  bool serial_linux, serial_default; /* console=ttyS0 in GRUB_CMDLINE_LINUX(_DEFAULT) */
  bool terminal_serial;              /* GRUB_TERMINAL(_OUTPUT) with serial */
  bool serial_cmd;                   /* GRUB_SERIAL_COMMAND on the first port */
  bool uuid_off;                     /* GRUB_DISABLE_LINUX_UUID=true */
};

/* A shell assignment KEY=VALUE of a GRUB defaults line (comments and "export"
 * skipped): the value's text inside its quotes (over lines, as the shell reads
 * it), or up to a blank or comment. */
static bool grub_assign(const char *line, size_t ll, const char *key, const char **val, size_t *vl)
{
  const char *l = line + strspn(line, " \t"), *end = line + ll;
  if (!strncmp(l, "export", 6) && (l[6] == ' ' || l[6] == '\t')) l += 6 + strspn(l + 6, " \t");
  size_t kl = strlen(key);
  if ((size_t)(end - l) <= kl || strncmp(l, key, kl) != 0 || l[kl] != '=') return false;
  const char *v = l + kl + 1;
  if (v < end && (*v == '"' || *v == '\'')) {
    const char *q = memchr(v + 1, *v, (size_t)(end - v - 1));
    if (!q) return false;
    *val = v + 1;
    *vl = (size_t)(q - v - 1);
  } else {
    *val = v;
    *vl = 0;
    while (v + *vl < end && !strchr(" \t\r#;", v[*vl])) (*vl)++;
  }
  return true;
}

/* Does the command line hold the word console=ttyS0 (with or without options)? */
static bool has_ttyS0(const char *v)
{
  for (const char *p = v; (p = strstr(p, "console=ttyS0")); p++) {
    char after = p[13];
    if ((p == v || strchr(" \t\n", p[-1])) && (!after || strchr(", \t\n", after))) return true;
  }
  return false;
}

/* A shell file of the guest written, and read back by its own sh -n: a file it
 * cannot parse is put back as it was (a failed step). */
static bool write_shell(struct actx *a, const char *path, const char *text, const char *orig)
{
  if (write_text(a, path, text) != 0) return false;
  const char *argv[] = { "sh", "-n", path, NULL };
  char *r = guestfs_command(a->g, (char **)argv);
  if (r) {
    free(r);
    return true;
  }
  CLEANUP_FREE char *what = vm_strdup_printf("checking %s after the change (sh -n); it is put back as it was", path);
  step_failed(a, what);
  if (orig) write_text(a, path, orig);
  else guestfs_rm_f(a->g, path);
  return false;
}

/* One GRUB defaults file: root= and resume= by UUID inside the command lines'
 * quotes (the rest of each line kept: comments, blanks); what it sets noted in
 * gs. True when it was written. */
static bool grub_defaults(struct actx *a, const char *path, struct grubscan *gs)
{
  CLEANUP_FREE char *text = read_text(a->g, path);
  if (!text) return false;
  char *out = NULL;
  size_t len = 0;
  bool any = false;
  for (char *line = text, *next; line && *line; line = next) {
    size_t ll = logical_len(line);
    next = line[ll] == '\n' ? line + ll + 1 : NULL;
    const char *v;
    size_t vl;
    bool dflt = false;
    if (grub_assign(line, ll, "GRUB_DISABLE_LINUX_UUID", &v, &vl)) {
      gs->uuid_off = vl == 4 && !strncmp(v, "true", 4);
    } else if (grub_assign(line, ll, "GRUB_CMDLINE_LINUX", &v, &vl) ||
               (dflt = grub_assign(line, ll, "GRUB_CMDLINE_LINUX_DEFAULT", &v, &vl))) {
      CLEANUP_FREE char *inner = vm_strdup_printf("%.*s", (int)vl, v);
      bool *serial = dflt ? &gs->serial_default : &gs->serial_linux;
      *serial = has_ttyS0(inner) || (*serial && strstr(inner, dflt ? "$GRUB_CMDLINE_LINUX_DEFAULT"
                                                                   : "$GRUB_CMDLINE_LINUX"));
      bool devs = false;
      CLEANUP_FREE char *where = vm_strdup_printf("%s (GRUB_CMDLINE_LINUX%s)", path, dflt ? "_DEFAULT" : "");
      CLEANUP_FREE char *fixed = fix_cmdline(a, inner, where, &devs);
      if (devs) {
        buf_add(&out, &len, line, (size_t)(v - line));
        buf_add(&out, &len, fixed, strlen(fixed));
        buf_add(&out, &len, v + vl, ll - (size_t)(v + vl - line));
        changed(a, "%s: GRUB_CMDLINE_LINUX%s \"%s\" (was \"%s\")", path, dflt ? "_DEFAULT" : "", fixed, inner);
        any = true;
        goto eol;
      }
    } else if (grub_assign(line, ll, "GRUB_TERMINAL", &v, &vl) ||
               grub_assign(line, ll, "GRUB_TERMINAL_OUTPUT", &v, &vl)) {
      CLEANUP_FREE char *val = vm_strdup_printf("%.*s", (int)vl, v);
      gs->terminal_serial = strstr(val, "serial") != NULL;
    } else if (grub_assign(line, ll, "GRUB_SERIAL_COMMAND", &v, &vl)) {
      /* The VM's serial port is the first: COM1, 0x3f8. */
      CLEANUP_FREE char *val = vm_strdup_printf("%.*s", (int)vl, v);
      gs->serial_cmd = (strstr(val, "--unit=0") || strstr(val, "--port=0x3f8")) && !strstr(val, "--unit=0x");
    } else {
      /* A command line the shell reads otherwise (a here-document, eval ...):
       * what it names is not read. */
      CLEANUP_FREE char *l = vm_strdup_printf("%.*s", (int)ll, line);
      const char *t = l + strspn(l, " \t");
      if (*t != '#' && strstr(l, "GRUB_CMDLINE_LINUX") && strstr(l, "/dev/")) {
        vm_warn("guest: %s: a line setting GRUB_CMDLINE_LINUX that is not read here names a device: left as it is",
                path);
        a->failed++;
      }
    }
    buf_add(&out, &len, line, ll);
  eol:
    if (next) buf_add(&out, &len, "\n", 1);
  }
  bool wrote = any && write_shell(a, path, out ? out : "", text);
  free(out);
  return wrote;
}

static int cmp_str(const void *x, const void *y) { return strcmp(*(char *const *)x, *(char *const *)y); }

/* /etc/default/grub (and the grub.d files sourced after it): root= by UUID, a
 * serial console; then grub.cfg made again by the guest's own update-grub or
 * grub(2)-mkconfig, and the kernels' BLS entries by grubby where they are. */
static void fix_grub(struct actx *a)
{
  const char *main_file = "/etc/default/grub";
  if (!is_file(a->g, main_file)) {
    if (exists(a->g, "/boot/grub/grub.cfg") || exists(a->g, "/boot/grub2/grub.cfg"))
      vm_warn("guest: GRUB without /etc/default/grub: its configuration is left as it is");
    return;
  }
  struct grubscan gs = { false };
  bool any = grub_defaults(a, main_file, &gs);
  CLEANUP_STRV char **dropins = guestfs_glob_expand(a->g, "/etc/default/grub.d/*.cfg");
  size_t nd = 0;
  while (dropins && dropins[nd]) nd++;
  if (nd) qsort(dropins, nd, sizeof *dropins, cmp_str);
  const char *ours = "/etc/default/grub.d/zz-p2v-convert.cfg";
  for (size_t i = 0; i < nd; i++)
    if (strcmp(dropins[i], ours) != 0) any |= grub_defaults(a, dropins[i], &gs);
  /* What is added goes after everything that sets it: appended to the defaults,
   * or in a file of grub.d named to be sourced last when the guest has such files. */
  char *add = NULL;
  size_t al = 0;
  bool console = !gs.serial_linux && !gs.serial_default;
  if (gs.uuid_off) {
    const char *l = "GRUB_DISABLE_LINUX_UUID=false\n";
    buf_add(&add, &al, l, strlen(l));
  }
  if (console) {
    const char *l = "GRUB_CMDLINE_LINUX=\"$GRUB_CMDLINE_LINUX console=tty0 console=ttyS0,115200\"\n";
    buf_add(&add, &al, l, strlen(l));
  }
  if (!gs.terminal_serial) {
    const char *l = "GRUB_TERMINAL=\"console serial\"\n";
    buf_add(&add, &al, l, strlen(l));
  }
  if (!gs.serial_cmd) {
    const char *l = "GRUB_SERIAL_COMMAND=\"serial --speed=115200 --unit=0\"\n";
    buf_add(&add, &al, l, strlen(l));
  }
  bool need = gs.uuid_off || console || !gs.terminal_serial || !gs.serial_cmd;
  if (need) {
    const char *dest = nd ? ours : main_file;
    CLEANUP_FREE char *old = nd ? NULL : read_text(a->g, main_file);
    /* After an empty line: a last line ending in a backslash ends there. */
    CLEANUP_FREE char *text = vm_strdup_printf(
      "%s%s\n# Added by p2v-convert: root by UUID, the console of the kernel and of GRUB on the serial port too\n%s",
      old ? old : "", old && *old && old[strlen(old) - 1] != '\n' ? "\n" : "", add);
    if (write_shell(a, dest, text, old)) {
      for (char *l = add, *e; l && *l; l = e ? e + 1 : NULL) {
        e = strchr(l, '\n');
        changed(a, "%s: %.*s added", dest, e ? (int)(e - l) : (int)strlen(l), l);
      }
      any = true;
    }
  }
  free(add);
  if (!any) return;
  /* Red Hat's kernels are BLS entries with their own options: grubby edits them. */
  CLEANUP_STRV char **bls = guestfs_glob_expand(a->g, "/boot/loader/entries/*.conf");
  if (console && bls && bls[0] && (exists(a->g, "/usr/sbin/grubby") || exists(a->g, "/sbin/grubby"))) {
    const char *argv[] = { "grubby", "--update-kernel=ALL", "--args=console=tty0 console=ttyS0,115200", NULL };
    char *r = guestfs_command(a->g, (char **)argv);
    if (!r) step_failed(a, "grubby");
    else changed(a, "grubby --update-kernel=ALL: console=ttyS0,115200 in every BLS entry");
    free(r);
  }
  /* The guest's own tool writes grub.cfg again, where its firmware reads it:
   * /boot/grub2 (BIOS, and UEFI since RHEL 9), else the EFI folder (UEFI before). */
  CLEANUP_STRV char **efi = guestfs_glob_expand(a->g, "/boot/efi/EFI/*/grub.cfg");
  const char *cfg = exists(a->g, "/boot/grub2/grub.cfg") ? "/boot/grub2/grub.cfg"
                    : efi && efi[0] && !exists(a->g, "/boot/grub/grub.cfg") ? efi[0]
                                                                            : "/boot/grub/grub.cfg";
  const char *debian[] = { "update-grub", NULL };
  const char *mk[] = { strstr(cfg, "grub2") || strstr(cfg, "/EFI/") ? "grub2-mkconfig" : "grub-mkconfig", "-o", cfg,
                       NULL };
  const char **argv = exists(a->g, "/usr/sbin/update-grub") ? debian : mk;
  char *r = guestfs_command(a->g, (char **)argv);
  if (!r) step_failed(a, argv[0]);
  else changed(a, "%s: %s written again", argv[0], argv == debian ? "/boot/grub/grub.cfg" : cfg);
  free(r);
}

/* SELinux: the files the adaptation wrote get their labels, in the appliance
 * from the guest's own policy (as virt-v2v does); else at the first boot
 * (/.autorelabel, which relabels everything and reboots once). */
static void fix_selinux(struct actx *a)
{
  CLEANUP_FREE char *conf = read_text(a->g, "/etc/selinux/config");
  if (!conf) return;
  char mode[32] = "", type[64] = "targeted";
  for (char *l = conf; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
    if (!strncmp(l, "SELINUX=", 8)) snprintf(mode, sizeof mode, "%.*s", (int)strcspn(l + 8, " \t\r\n#"), l + 8);
    if (!strncmp(l, "SELINUXTYPE=", 12)) snprintf(type, sizeof type, "%.*s", (int)strcspn(l + 12, " \t\r\n#/"), l + 12);
  }
  if (strcmp(mode, "enforcing") != 0 && strcmp(mode, "permissive") != 0) return;
  CLEANUP_FREE char *spec = vm_strdup_printf("/etc/selinux/%s/contexts/files/file_contexts", type);
  char *groups[] = { "selinuxrelabel", NULL };
  if (is_file(a->g, spec) && guestfs_feature_available(a->g, groups) == 1) {
    if (guestfs_selinux_relabel(a->g, spec, "/", -1) == 0) {
      changed(a, "SELinux: the file systems relabelled from %s", spec);
      return;
    }
    vm_warn("guest: SELinux relabelling in the appliance failed: the guest relabels at its first boot");
  }
  if (guestfs_touch(a->g, "/.autorelabel") == -1) step_failed(a, "touch /.autorelabel");
  else changed(a, "/.autorelabel: SELinux relabels the file systems at the first boot (which reboots once)");
}

/* The folder of the guest's own UEFI loader in /boot/efi/EFI: the only one that
 * holds shimx64.efi or grubx64.efi, else the one named for its distribution. */
static char *efi_folder(struct actx *a)
{
  CLEANUP_STRV char **dirs = guestfs_glob_expand(a->g, "/boot/efi/EFI/*/");
  struct vm_strv cand = { 0 };
  for (size_t i = 0; dirs && dirs[i]; i++) {
    CLEANUP_FREE char *d = vm_strdup(dirs[i]);
    d[strlen(d) - 1] = 0;
    if (!strcasecmp(strrchr(d, '/') + 1, "BOOT")) continue;
    CLEANUP_FREE char *s1 = vm_strdup_printf("%s/shimx64.efi", d), *s2 = vm_strdup_printf("%s/grubx64.efi", d);
    if (exists(a->g, s1) || exists(a->g, s2)) vm_strv_add(&cand, d);
  }
  char *pick = cand.n == 1 ? vm_strdup(cand.v[0]) : NULL;
  /* libguestfs's distribution names, and the folders their installers make. */
  const char *map[][2] = { { "rhel", "redhat" }, { "sles", "sles" }, { "opensuse", "opensuse" }, { NULL, NULL } };
  const char *want = a->distro;
  for (size_t i = 0; want && map[i][0]; i++)
    if (!strcmp(want, map[i][0])) want = map[i][1];
  for (size_t i = 0; !pick && want && i < cand.n; i++)
    if (!strcasecmp(strrchr(cand.v[i], '/') + 1, want)) pick = vm_strdup(cand.v[i]);
  vm_strv_free(&cand);
  return pick;
}

/* UEFI: the VM's firmware has none of the server's boot entries, and boots the
 * removable-media path \EFI\BOOT\BOOTX64.EFI: there a copy of the guest's own
 * loader (shim, with the grubx64.efi beside it that it loads, else GRUB). */
static void fix_uefi(struct actx *a)
{
  if (!exists(a->g, "/boot/efi/EFI")) return;
  guestfs_push_error_handler(a->g, NULL, NULL);
  CLEANUP_FREE char *have = guestfs_case_sensitive_path(a->g, "/boot/efi/EFI/BOOT/BOOTX64.EFI");
  guestfs_pop_error_handler(a->g);
  if (have && exists(a->g, have)) return;
  CLEANUP_FREE char *dir = efi_folder(a);
  if (!dir) {
    vm_warn("guest: UEFI, and not one folder of /boot/efi/EFI holds its loader: the VM's firmware may find nothing "
            "to boot");
    a->failed++;
    return;
  }
  CLEANUP_FREE char *shim = vm_strdup_printf("%s/shimx64.efi", dir), *grub = vm_strdup_printf("%s/grubx64.efi", dir);
  bool has_shim = exists(a->g, shim), has_grub = exists(a->g, grub);
  const char *src = has_shim ? shim : grub;
  if (guestfs_mkdir_p(a->g, "/boot/efi/EFI/BOOT") == -1 ||
      guestfs_cp(a->g, src, "/boot/efi/EFI/BOOT/BOOTX64.EFI") == -1 ||
      (has_shim && has_grub && guestfs_cp(a->g, grub, "/boot/efi/EFI/BOOT/grubx64.efi") == -1)) {
    step_failed(a, "copying the UEFI loader");
    return;
  }
  changed(a, "/boot/efi/EFI/BOOT/BOOTX64.EFI: a copy of %s (the firmware's fallback path)%s", src,
          has_shim && has_grub ? ", grubx64.efi beside it" : "");
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
    if (!has_virtio_blk(a, kv.v[i])) {
      vm_warn("guest: kernel %s has no virtio_blk driver: it will not find its disks on the VM", kv.v[i]);
      a->failed++;
    }
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
      /* The image the boot loader names: Debian's and Ubuntu's initrd.img-K, Red
       * Hat's initramfs-K.img, SUSE's initrd-K. */
      char *forms[] = { vm_strdup_printf("/boot/initrd.img-%s", kv.v[i]),
                        vm_strdup_printf("/boot/initramfs-%s.img", kv.v[i]), vm_strdup_printf("/boot/initrd-%s", kv.v[i]) };
      size_t f = 0;
      while (f < 2 && !exists(a->g, forms[f])) f++;
      if (!exists(a->g, forms[f])) f = 1;
      CLEANUP_FREE char *img = vm_strdup(forms[f]);
      for (size_t k = 0; k < 3; k++) free(forms[k]);
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

/* "ethernets: {enp3s0: {dhcp4: true}, id0: {match: ...}}" on one line: the keys
 * at the first level that are names (an ID has a match:), and set-name:. */
static void netplan_flow(struct vm_strv *names, const char *p)
{
  int depth = 0;
  const char *key = NULL, *end = p + strcspn(p, "\r\n");
  size_t kl = 0;
  bool match = false;
  for (const char *c = p; c < end; c++) {
    bool done = false; /* a first-level entry ends here */
    if (*c == '{') {
      depth++;
    } else if (*c == '}') {
      done = depth == 1;
      depth--;
    } else if (*c == ',' && depth == 1) {
      done = true;
    } else if (depth == 1 && !key && !strchr(" \t\"'", *c)) {
      key = c;
      kl = strcspn(c, ":\"' \t,}");
      c += kl ? kl - 1 : 0;
    } else if (depth >= 2 && !strncmp(c, "match", 5)) {
      match = true;
    } else if (depth >= 2 && !strncmp(c, "set-name:", 9)) {
      const char *v = c + 9 + strspn(c + 9, " \t\"'");
      add_name(names, v, strcspn(v, " \t\"',}\r\n"));
    }
    if (done) {
      if (key && !match) add_name(names, key, kl);
      key = NULL, match = false;
    }
    if (depth <= 0) break;
  }
}

/* Netplan's NICs: the keys one level under "ethernets:" that are names (a key
 * with a "match:" is an ID: netplan finds that NIC itself), and set-name:. */
static void netplan_ifnames(struct actx *a, struct vm_strv *names)
{
  CLEANUP_STRV char **files = guestfs_glob_expand(a->g, "/etc/netplan/*.yaml");
  for (size_t f = 0; files && files[f]; f++) {
    CLEANUP_FREE char *text = read_text(a->g, files[f]);
    int in = -1, child = -1; /* the indentation of "ethernets:", of its keys */
    char key[64] = "";       /* the key being read, until its block shows no match: */
    for (char *l = text;; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
      size_t ll = l ? strcspn(l, "\n") : 0, ind = l ? strspn(l, " ") : 0;
      if (l && *l && (ind == ll || l[ind] == '#' || l[ind] == '\r')) continue;
      bool end = !l || !*l || (in >= 0 && (int)ind <= child);
      if (end && *key) {
        add_name(names, key, strlen(key));
        *key = 0;
      }
      if (!l || !*l) break;
      if (in >= 0 && (int)ind <= in) in = child = -1;
      const char *k = l + ind;
      if (!strncmp(k, "ethernets:", 10)) {
        const char *fl = k + 10 + strspn(k + 10, " \t");
        if (*fl == '{') netplan_flow(names, fl);
        else in = (int)ind;
        continue;
      }
      if (in < 0) continue;
      if (child < 0) child = (int)ind;
      size_t kl = strcspn(k, ":\n");
      if ((int)ind == child && k[kl] == ':') {
        size_t q = strspn(k, "\"'"), e = kl;
        while (e > q && strchr("\"' ", k[e - 1])) e--;
        snprintf(key, sizeof key, "%.*s", (int)(e - q), k + q);
        /* Flow style, "eno1: {match: {...}, set-name: lan0}": read on this line. */
        const char *rest = k + kl + 1, *sn;
        if (memchr(rest, '{', strcspn(rest, "\n"))) {
          if (memmem(rest, strcspn(rest, "\n"), "match", 5)) *key = 0;
          if ((sn = strstr(rest, "set-name:")) && sn < rest + strcspn(rest, "\n")) {
            sn += 9 + strspn(sn + 9, " \t\"'");
            add_name(names, sn, strcspn(sn, " \t\"',}\r\n"));
          }
        }
      } else if (!strncmp(k, "match:", 6)) {
        *key = 0;
      } else if (!strncmp(k, "set-name:", 9)) {
        const char *v = k + 9 + strspn(k + 9, " \t\"'");
        add_name(names, v, strcspn(v, " \t\"'\r\n"));
      }
    }
  }
}

/* The interface names the guest's network configuration uses. */
static void guest_ifnames(struct actx *a, struct vm_strv *names)
{
  struct vm_strv files = { 0 }, virt = { 0 }, found = { 0 };
  vm_strv_add(&files, "/etc/network/interfaces");
  const char *globs[] = { "/etc/network/interfaces.d/*", "/etc/sysconfig/network-scripts/ifcfg-*",
                          "/etc/NetworkManager/system-connections/*", "/etc/systemd/network/*.network", NULL };
  for (size_t i = 0; globs[i]; i++) {
    CLEANUP_STRV char **m = guestfs_glob_expand(a->g, globs[i]);
    for (size_t k = 0; m && m[k]; k++) vm_strv_add(&files, m[k]);
  }
  netplan_ifnames(a, &found);
  for (size_t f = 0; f < files.n; f++) {
    CLEANUP_FREE char *text = read_text(a->g, files.v[f]);
    struct vm_strv here = { 0 };
    char cur[64] = ""; /* the ifupdown stanza being read */
    bool virtual_file = false;
    for (char *l = text; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
      l += strspn(l, " \t");
      size_t ll = strcspn(l, "\r\n");
      /* Names listed after the key: auto and allow-hotplug take several; the ports
       * of a bridge or bond are the physical NICs. */
      const char *lists[] = { "auto ", "allow-hotplug ", "bridge_ports ", "bridge-ports ", "bond-slaves ",
                              "bond_slaves ", NULL };
      for (size_t k = 0; lists[k]; k++) {
        size_t kl = strlen(lists[k]);
        if (ll <= kl || strncmp(l, lists[k], kl) != 0) continue;
        if (k >= 2 && *cur) vm_strv_add(&virt, cur);
        for (const char *w = l + kl; w < l + ll;) {
          w += strspn(w, " \t");
          size_t wl = strcspn(w, " \t\r\n");
          if (wl && strncmp(w, "none", wl) && strncmp(w, "all", wl)) add_name(&here, w, wl);
          w += wl;
        }
      }
      const char *keys[] = { "iface ", "DEVICE=", "interface-name=", "Name=", NULL };
      for (size_t k = 0; keys[k]; k++) {
        size_t kl = strlen(keys[k]);
        if (ll <= kl || strncmp(l, keys[k], kl) != 0) continue;
        const char *v = l + kl;
        v += strspn(v, " \t\"'");
        size_t vl = strcspn(v, " \t\"'\r\n");
        add_name(&here, v, vl);
        if (k == 0) snprintf(cur, sizeof cur, "%.*s", (int)(vl < 63 ? vl : 63), v);
      }
      /* The stanza or file of a bridge, bond or VLAN: its name is no NIC's. */
      if (!strncmp(l, "vlan-raw-device", 15) || !strncmp(l, "vlan_raw_device", 15) || !strncmp(l, "bond-mode", 9))
        if (*cur) vm_strv_add(&virt, cur);
      const char *types[] = { "TYPE=Bridge", "TYPE=Bond", "TYPE=Vlan", "TYPE=Team", "type=bridge", "type=bond",
                              "type=vlan", "type=team", "VLAN=yes", NULL };
      for (size_t k = 0; types[k]; k++)
        if (ll >= strlen(types[k]) && !strncasecmp(l, types[k], strlen(types[k]))) virtual_file = true;
    }
    for (size_t i = 0; i < here.n; i++) {
      if (virtual_file && !vm_strv_contains(found.v, here.v[i])) vm_strv_add(&virt, here.v[i]);
      if (!vm_strv_contains(found.v, here.v[i])) vm_strv_add(&found, here.v[i]);
    }
    vm_strv_free(&here);
  }
  /* Bridge ports named in another file than the bridge are still NICs. */
  for (size_t i = 0; i < found.n; i++)
    if (!vm_strv_contains(virt.v, found.v[i]) && !vm_strv_contains(names->v, found.v[i]))
      vm_strv_add(names, found.v[i]);
  vm_strv_free(&files);
  vm_strv_free(&virt);
  vm_strv_free(&found);
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

static void fix_nics(struct actx *a)
{
  json_object *inventory = a->inventory;
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
  struct actx a = { .g = g, .disks = disks, .inventory = inventory, .changes = json_object_new_array() };
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
    a.distro = distro;
    CLEANUP_FREE char *os = product && product[0] >= 'A' ? vm_strdup(product)
                            : vm_strdup_printf("%s %s", distro ? distro : "linux", product ? product : "");
    json_object_object_add(report, "os", json_object_new_string(os));
    vm_info("guest: %s on %s", os, root);
    CLEANUP_STRV char **mps = guestfs_inspect_get_mountpoints(g, root);
    size_t nm = 0;
    while (mps && mps[nm]) nm += 2;
    if (nm) qsort(mps, nm / 2, 2 * sizeof *mps, cmp_mp);
    bool (*on)[VM_STREAM_MAX_DISKS] = calloc(nm / 2 + 1, sizeof *on);
    if (!on) abort();
    for (size_t i = 0; i < nm; i += 2) {
      dev_disks(&a, mps[i + 1], on[i / 2]);
      for (size_t k = 0; k < a.ndevs && k < VM_STREAM_MAX_DISKS; k++) {
        if (!on[i / 2][k]) continue;
        vm_strv_add(&mounts[k], mps[i]);
        if (system_mount(mps[i])) os_on[k] = true;
      }
    }
    for (size_t i = 0; i < nm && !rc; i += 2) {
      /* The file systems of the OS disks are written to (the guest's tools write
       * in /var/tmp, /tmp ...); those of data disks are only looked at. */
      bool rw = false;
      for (size_t k = 0; k < a.ndevs && k < VM_STREAM_MAX_DISKS; k++)
        if (on[i / 2][k] && os_on[k]) rw = true;
      int r = rw ? guestfs_mount(g, mps[i + 1], mps[i]) : guestfs_mount_ro(g, mps[i + 1], mps[i]);
      if (r == -1) {
        if (!strcmp(mps[i], "/")) {
          rc = vm_fail_gfs(g, "cannot mount the guest's root %s", mps[i + 1]);
          break;
        }
        vm_warn("guest: cannot mount %s on %s: left out", mps[i + 1], mps[i]);
      }
    }
    free(on);
    /* The device of a root on a btrfs subvolume ("btrfsvol:/dev/sda2/@"). */
    CLEANUP_FREE char *root_dev = guestfs_mountable_device(g, root);
    a.root_dev = root_dev ? root_dev : root;
    /* Each step on its own; Ctrl-C (which the appliance gets too) between them. */
    void (*const steps[])(struct actx *) = { fix_fstab, fix_resume, fix_nics, fix_units, fix_initramfs,
                                             fix_grub, fix_uefi, fix_selinux, NULL };
    for (size_t i = 0; !rc && steps[i]; i++) {
      if (vm_interrupted()) rc = vm_fail_interrupted();
      else steps[i](&a);
    }
    if (!rc && vm_interrupted()) rc = vm_fail_interrupted();
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
