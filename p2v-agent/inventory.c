/* The server as p2v-stream(5)'s INVENTORY describes it, read from /proc, /sys,
 * /etc/os-release, getifaddrs(3) and libblkid. What cannot be learned is left
 * out, never guessed. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <limits.h>
#include <linux/fs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "agent.h"

/* The first line of a small file under /sys or /proc, trimmed; NULL if none. */
static char *sys_line(const char *dir, const char *name, const char *leaf)
{
  CLEANUP_FREE char *path = vm_strdup_printf("%s/%s/%s", dir, name, leaf);
  char *s = vm_read_first_line(path);
  if (!s) return NULL;
  size_t n = strlen(s);
  while (n && (s[n - 1] == ' ' || s[n - 1] == '\t')) s[--n] = 0;
  char *b = s;
  while (*b == ' ') b++;
  if (!*b) {
    free(s);
    return NULL;
  }
  memmove(s, b, strlen(b) + 1);
  return s;
}

static void add_str(json_object *o, const char *key, const char *v)
{
  if (v && *v) json_object_object_add(o, key, json_object_new_string(v));
}

static bool skip_block_device(const char *name)
{
  static const char *prefixes[] = { "loop", "ram", "sr", "dm-", "md", "zram", "nbd", "fd", "zd", NULL };
  for (const char **p = prefixes; *p; p++)
    if (!strncmp(name, *p, strlen(*p))) return true;
  return false;
}

static int add_disk(const char *path, struct pa_disk **v, size_t *n)
{
  CLEANUP_CLOSE int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return vm_fail_errno(errno == ENOENT ? VM_EXIT_NOTFOUND : VM_EXIT_FAIL, "cannot open disk '%s'", path);
  struct stat st;
  uint64_t size = 0;
  if (fstat(fd, &st) != 0) return vm_fail_errno(VM_EXIT_FAIL, "cannot stat '%s'", path);
  if (S_ISBLK(st.st_mode)) {
    if (ioctl(fd, BLKGETSIZE64, &size) != 0) return vm_fail_errno(VM_EXIT_FAIL, "cannot read the size of '%s'", path);
  } else if (S_ISREG(st.st_mode)) {
    size = (uint64_t)st.st_size;
  } else {
    return vm_fail(VM_EXIT_USAGE, "'%s' is neither a block device nor an image file", path);
  }
  if (size == 0) return vm_fail(VM_EXIT_USAGE, "disk '%s' is empty", path);
  const char *base = strrchr(path, '/');
  *v = realloc(*v, (*n + 1) * sizeof **v);
  if (!*v) abort();
  (*v)[(*n)++] = (struct pa_disk){ vm_strdup(base ? base + 1 : path), vm_strdup(path), size };
  return 0;
}

void pa_disks_free(struct pa_disk *disks, size_t n)
{
  for (size_t i = 0; i < n; i++) {
    free(disks[i].name);
    free(disks[i].path);
  }
  free(disks);
}

static int cmp_disk(const void *a, const void *b)
{
  return strcmp(((const struct pa_disk *)a)->name, ((const struct pa_disk *)b)->name);
}

int pa_find_disks(const char **paths, size_t npaths, struct pa_disk **disks, size_t *n)
{
  *disks = NULL;
  *n = 0;
  int rc = 0;
  for (size_t i = 0; i < npaths && !rc; i++) {
    for (size_t j = 0; j < i; j++)
      if (!strcmp(paths[i], paths[j])) rc = vm_fail(VM_EXIT_USAGE, "disk '%s' is named twice", paths[i]);
    if (!rc) rc = add_disk(paths[i], disks, n);
  }
  if (!rc && npaths == 0) {
    DIR *d = opendir("/sys/block");
    if (!d) return vm_fail_errno(VM_EXIT_FAIL, "cannot list /sys/block");
    struct dirent *e;
    while (!rc && (e = readdir(d))) {
      if (e->d_name[0] == '.' || skip_block_device(e->d_name)) continue;
      CLEANUP_FREE char *size = sys_line("/sys/block", e->d_name, "size");
      if (!size || !strcmp(size, "0")) continue;
      CLEANUP_FREE char *path = vm_strdup_printf("/dev/%s", e->d_name);
      rc = add_disk(path, disks, n);
    }
    closedir(d);
    if (!rc && *n == 0) rc = vm_fail(VM_EXIT_NOTFOUND, "this server has no disk to send (give --disk)");
    if (!rc) qsort(*disks, *n, sizeof **disks, cmp_disk);
  }
  if (rc) {
    pa_disks_free(*disks, *n);
    *disks = NULL;
    *n = 0;
  }
  return rc;
}

static json_object *cpu_info(void)
{
  json_object *cpu = json_object_new_object();
  CLEANUP_FCLOSE FILE *f = fopen("/proc/cpuinfo", "re");
  if (!f) return cpu;
  char line[1024];
  int threads = 0, cores_per = 0;
  char vendor[64] = "", model[256] = "";
  /* Distinct physical ids: sockets. */
  int ids[256], nids = 0;
  while (fgets(line, sizeof line, f)) {
    char *colon = strchr(line, ':');
    if (!colon) continue;
    char *val = colon + 1;
    while (*val == ' ') val++;
    val[strcspn(val, "\n")] = 0;
    if (!strncmp(line, "processor", 9)) threads++;
    else if (!strncmp(line, "vendor_id", 9) && !vendor[0]) snprintf(vendor, sizeof vendor, "%s", val);
    else if (!strncmp(line, "model name", 10) && !model[0]) snprintf(model, sizeof model, "%s", val);
    else if (!strncmp(line, "cpu cores", 9)) cores_per = atoi(val);
    else if (!strncmp(line, "physical id", 11)) {
      int id = atoi(val), seen = 0;
      for (int i = 0; i < nids; i++) seen |= ids[i] == id;
      if (!seen && nids < 256) ids[nids++] = id;
    }
  }
  add_str(cpu, "vendor", vendor);
  add_str(cpu, "model", model);
  int sockets = nids ? nids : 1;
  json_object_object_add(cpu, "sockets", json_object_new_int(sockets));
  if (cores_per > 0) json_object_object_add(cpu, "cores", json_object_new_int(cores_per * sockets));
  if (threads > 0) json_object_object_add(cpu, "threads", json_object_new_int(threads));
  return cpu;
}

static int64_t mem_total(void)
{
  CLEANUP_FCLOSE FILE *f = fopen("/proc/meminfo", "re");
  char line[256];
  long long kb = -1;
  while (f && fgets(line, sizeof line, f))
    if (sscanf(line, "MemTotal: %lld kB", &kb) == 1) break;
  return kb > 0 ? kb * 1024 : -1;
}

/* /etc/os-release's value for key, unquoted. */
static json_object *os_release(void)
{
  json_object *os = json_object_new_object();
  CLEANUP_FCLOSE FILE *f = fopen("/etc/os-release", "re");
  if (!f) f = fopen("/usr/lib/os-release", "re");
  char line[512];
  while (f && fgets(line, sizeof line, f)) {
    line[strcspn(line, "\n")] = 0;
    char *eq = strchr(line, '=');
    if (!eq) continue;
    *eq = 0;
    char *v = eq + 1;
    size_t n = strlen(v);
    if (n >= 2 && (v[0] == '"' || v[0] == '\'') && v[n - 1] == v[0]) {
      v[n - 1] = 0;
      v++;
    }
    if (!strcmp(line, "ID")) add_str(os, "id", v);
    else if (!strcmp(line, "VERSION_ID")) add_str(os, "version_id", v);
    else if (!strcmp(line, "PRETTY_NAME")) add_str(os, "pretty_name", v);
  }
  return os;
}

static json_object *disk_info(const struct pa_disk *d)
{
  json_object *o = json_object_new_object();
  add_str(o, "name", d->name);
  add_str(o, "path", d->path);
  json_object_object_add(o, "size", json_object_new_int64((int64_t)d->size));
  if (!strncmp(d->path, "/dev/", 5)) {
    CLEANUP_FREE char *model = sys_line("/sys/block", d->name, "device/model");
    CLEANUP_FREE char *serial = sys_line("/sys/block", d->name, "device/serial");
    add_str(o, "model", model);
    add_str(o, "serial", serial);
  }
  struct pa_part *parts = NULL;
  size_t n = 0;
  char table[16];
  vm_errors_mute(true);
  int rc = pa_partitions(d->path, d->size, &parts, &n, table);
  vm_errors_mute(false);
  if (rc) return o;
  if (table[0]) add_str(o, "table", table);
  json_object *pl = json_object_new_array();
  for (size_t i = 0; i < n; i++) {
    json_object *p = json_object_new_object();
    json_object_object_add(p, "number", json_object_new_int(parts[i].number));
    json_object_object_add(p, "start", json_object_new_int64((int64_t)parts[i].start));
    json_object_object_add(p, "size", json_object_new_int64((int64_t)parts[i].size));
    add_str(p, "type", parts[i].type);
    add_str(p, "fstype", parts[i].fstype);
    add_str(p, "uuid", parts[i].uuid);
    add_str(p, "label", parts[i].label);
    if (parts[i].container) json_object_object_add(p, "extended", json_object_new_boolean(1));
    json_object_array_add(pl, p);
  }
  json_object_object_add(o, "partitions", pl);
  free(parts);
  return o;
}

/* The interface of the default route, from /proc/net/route, and its gateway. */
static void default_gw(char iface[IF_NAMESIZE + 1], char gw[INET_ADDRSTRLEN])
{
  iface[0] = gw[0] = 0;
  CLEANUP_FCLOSE FILE *f = fopen("/proc/net/route", "re");
  char line[512], name[64];
  unsigned dest, g, flags;
  while (f && fgets(line, sizeof line, f)) {
    if (sscanf(line, "%63s %x %x %x", name, &dest, &g, &flags) == 4 && dest == 0 && (flags & 2)) {
      snprintf(iface, IF_NAMESIZE + 1, "%.*s", IF_NAMESIZE, name);
      struct in_addr a = { .s_addr = g };
      inet_ntop(AF_INET, &a, gw, INET_ADDRSTRLEN);
      return;
    }
  }
}

static int prefix_len(const struct sockaddr *mask)
{
  const unsigned char *b;
  size_t n;
  if (mask->sa_family == AF_INET) {
    b = (const unsigned char *)&((const struct sockaddr_in *)mask)->sin_addr;
    n = 4;
  } else {
    b = (const unsigned char *)&((const struct sockaddr_in6 *)mask)->sin6_addr;
    n = 16;
  }
  int bits = 0;
  for (size_t i = 0; i < n; i++) bits += __builtin_popcount(b[i]);
  return bits;
}

/* NICs with a device behind them (physical ones: not lo, bridges, bonds, tunnels). */
static json_object *nics_info(void)
{
  json_object *arr = json_object_new_array();
  struct ifaddrs *ifa = NULL;
  getifaddrs(&ifa);
  char gwif[IF_NAMESIZE + 1], gw[INET_ADDRSTRLEN];
  default_gw(gwif, gw);
  DIR *d = opendir("/sys/class/net");
  struct dirent *e;
  struct vm_strv names = { 0 };
  while (d && (e = readdir(d))) {
    if (e->d_name[0] == '.') continue;
    CLEANUP_FREE char *dev = vm_strdup_printf("/sys/class/net/%s/device", e->d_name);
    if (access(dev, F_OK) != 0) continue;
    vm_strv_add(&names, e->d_name);
  }
  if (d) closedir(d);
  for (size_t i = 0; i < names.n; i++) {
    const char *name = names.v[i];
    json_object *o = json_object_new_object();
    add_str(o, "name", name);
    CLEANUP_FREE char *mac = sys_line("/sys/class/net", name, "address");
    add_str(o, "mac", mac);
    CLEANUP_FREE char *drvlink = vm_strdup_printf("/sys/class/net/%s/device/driver", name);
    char target[PATH_MAX];
    ssize_t k = readlink(drvlink, target, sizeof target - 1);
    if (k > 0) {
      target[k] = 0;
      const char *b = strrchr(target, '/');
      add_str(o, "driver", b ? b + 1 : target);
    }
    json_object *addrs = json_object_new_array();
    for (struct ifaddrs *a = ifa; a; a = a->ifa_next) {
      if (!a->ifa_addr || strcmp(a->ifa_name, name) != 0) continue;
      int fam = a->ifa_addr->sa_family;
      if (fam != AF_INET && fam != AF_INET6) continue;
      char buf[INET6_ADDRSTRLEN];
      const void *src = fam == AF_INET ? (const void *)&((struct sockaddr_in *)a->ifa_addr)->sin_addr
                                       : (const void *)&((struct sockaddr_in6 *)a->ifa_addr)->sin6_addr;
      if (!inet_ntop(fam, src, buf, sizeof buf)) continue;
      CLEANUP_FREE char *s = a->ifa_netmask ? vm_strdup_printf("%s/%d", buf, prefix_len(a->ifa_netmask)) : vm_strdup(buf);
      json_object_array_add(addrs, json_object_new_string(s));
    }
    json_object_object_add(o, "addresses", addrs);
    if (!strcmp(gwif, name)) add_str(o, "gateway", gw);
    json_object_array_add(arr, o);
  }
  vm_strv_free(&names);
  if (ifa) freeifaddrs(ifa);
  return arr;
}

json_object *pa_inventory(const struct pa_disk *disks, size_t n)
{
  json_object *o = json_object_new_object();
  json_object_object_add(o, "format", json_object_new_int(1));
  char host[256] = "";
  if (gethostname(host, sizeof host - 1) == 0) add_str(o, "hostname", host);
  json_object_object_add(o, "cpu", cpu_info());
  int64_t mem = mem_total();
  if (mem > 0) json_object_object_add(o, "memory", json_object_new_int64(mem));
  json_object_object_add(o, "boot", json_object_new_string(access("/sys/firmware/efi", F_OK) == 0 ? "uefi" : "bios"));
  json_object_object_add(o, "os", os_release());
  struct utsname u;
  if (uname(&u) == 0) add_str(o, "kernel", u.release);
  json_object *dl = json_object_new_array();
  for (size_t i = 0; i < n; i++) json_object_array_add(dl, disk_info(&disks[i]));
  json_object_object_add(o, "disks", dl);
  json_object_object_add(o, "nics", nics_info());
  return o;
}
