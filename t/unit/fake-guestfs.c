/* A fake libguestfs: the guest in memory (see fake-guestfs.h). Only the calls
 * p2v-convert/adapt.c makes are here, each with libguestfs's contract as far as
 * adapt.c can tell: NULL or -1 with guestfs_last_error set on an error, lists
 * ending in NULL that the caller frees, a write into a folder that does not exist
 * refused. LVM, symlinks and SELinux are absent from this guest. */
#include <fnmatch.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vmkit-base.h"
#include "vmkit-gfs.h"
#include "fake-guestfs.h"

struct guestfs_h {
  int unused;
};

/* One file (text) or folder (text NULL) of the guest. */
struct node {
  char *path;
  char *text;
};

struct fsys {
  char *dev, *type, *uuid;
};

static struct guestfs_h handle;
static struct node *nodes;
static size_t nnodes;
static struct vm_strv disks, mountpoints; /* mountpoints: mp, dev, mp, dev ... */
static struct fsys *fss;
static size_t nfss;
static char *root;
static char *commands;
static size_t commands_len;
static char last_error[1024];

guestfs_h *fg_handle(void) { return &handle; }

static void fail_with(const char *fmt, ...) VM_PRINTF(1, 2);
static void fail_with(const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(last_error, sizeof last_error, fmt, ap);
  va_end(ap);
}

void fg_reset(void)
{
  for (size_t i = 0; i < nnodes; i++) {
    free(nodes[i].path);
    free(nodes[i].text);
  }
  free(nodes);
  nodes = NULL;
  nnodes = 0;
  for (size_t i = 0; i < nfss; i++) {
    free(fss[i].dev);
    free(fss[i].type);
    free(fss[i].uuid);
  }
  free(fss);
  fss = NULL;
  nfss = 0;
  vm_strv_free(&disks);
  vm_strv_free(&mountpoints);
  free(root);
  root = NULL;
  free(commands);
  commands = NULL;
  commands_len = 0;
  last_error[0] = 0;
}

static struct node *node(const char *path)
{
  for (size_t i = 0; i < nnodes; i++)
    if (!strcmp(nodes[i].path, path)) return &nodes[i];
  return NULL;
}

static bool is_dir(const char *path)
{
  if (!strcmp(path, "/")) return true;
  struct node *n = node(path);
  return n && !n->text;
}

static void put(const char *path, const char *text)
{
  struct node *n = node(path);
  if (!n) {
    nodes = realloc(nodes, (nnodes + 1) * sizeof *nodes);
    if (!nodes) abort();
    n = &nodes[nnodes++];
    n->path = vm_strdup(path);
    n->text = NULL;
  }
  free(n->text);
  n->text = text ? vm_strdup(text) : NULL;
}

/* The folders above path, made as mkdir -p does. */
static void parents(const char *path)
{
  CLEANUP_FREE char *p = vm_strdup(path);
  for (char *s = strchr(p + 1, '/'); s; s = strchr(s + 1, '/')) {
    *s = 0;
    if (!node(p)) put(p, NULL);
    *s = '/';
  }
}

void fg_file(const char *path, const char *text)
{
  parents(path);
  put(path, text);
}

void fg_dir(const char *path)
{
  parents(path);
  if (!node(path)) put(path, NULL);
}

const char *fg_text(const char *path)
{
  struct node *n = node(path);
  return n ? n->text : NULL;
}

void fg_disk(const char *dev) { vm_strv_add(&disks, dev); }

void fg_fs(const char *dev, const char *type, const char *uuid)
{
  fss = realloc(fss, (nfss + 1) * sizeof *fss);
  if (!fss) abort();
  fss[nfss++] = (struct fsys){ vm_strdup(dev), vm_strdup(type), vm_strdup(uuid) };
}

void fg_root(const char *dev)
{
  free(root);
  root = vm_strdup(dev);
}

void fg_mountpoint(const char *mp, const char *dev)
{
  vm_strv_add(&mountpoints, mp);
  vm_strv_add(&mountpoints, dev);
}

const char *fg_commands(void) { return commands ? commands : ""; }

static struct fsys *fsys(const char *dev)
{
  for (size_t i = 0; i < nfss; i++)
    if (!strcmp(fss[i].dev, dev)) return &fss[i];
  return NULL;
}

/* A list as libguestfs returns it: copied, ending in NULL, the caller's to free. */
static char **strv_copy(char *const *v, size_t n)
{
  char **r = calloc(n + 1, sizeof *r);
  if (!r) abort();
  for (size_t i = 0; i < n; i++) r[i] = vm_strdup(v[i]);
  return r;
}

static int cmp_str(const void *x, const void *y) { return strcmp(*(char *const *)x, *(char *const *)y); }

/* ---- files ------------------------------------------------------------------------ */

char *guestfs_read_file(guestfs_h *g, const char *path, size_t *size_r)
{
  struct node *n = node(path);
  if (!n || !n->text) {
    fail_with("read_file: %s: %s", path, n ? "Is a directory" : "No such file or directory");
    return NULL;
  }
  *size_r = strlen(n->text);
  return vm_strdup(n->text);
}

/* A file is written into a folder that exists, not over a folder. */
static int writable(const char *fn, const char *path)
{
  CLEANUP_FREE char *dir = vm_strdup(path);
  char *slash = strrchr(dir, '/');
  if (slash == dir) slash[1] = 0;
  else if (slash) *slash = 0;
  if (!slash || !is_dir(dir)) {
    fail_with("%s: %s: No such file or directory", fn, path);
    return -1;
  }
  if (is_dir(path)) {
    fail_with("%s: %s: Is a directory", fn, path);
    return -1;
  }
  return 0;
}

int guestfs_write(guestfs_h *g, const char *path, const char *content, size_t content_size)
{
  if (writable("write", path) == -1) return -1;
  CLEANUP_FREE char *text = strndup(content, content_size);
  if (!text) abort();
  put(path, text);
  return 0;
}

int guestfs_touch(guestfs_h *g, const char *path)
{
  if (writable("touch", path) == -1) return -1;
  if (!node(path)) put(path, "");
  return 0;
}

int guestfs_cp(guestfs_h *g, const char *src, const char *dest)
{
  struct node *n = node(src);
  if (!n || !n->text) {
    fail_with("cp: %s: No such file or directory", src);
    return -1;
  }
  if (writable("cp", dest) == -1) return -1;
  CLEANUP_FREE char *text = vm_strdup(n->text);
  put(dest, text);
  return 0;
}

static void drop(struct node *n)
{
  free(n->path);
  free(n->text);
  *n = nodes[--nnodes];
}

int guestfs_rm(guestfs_h *g, const char *path)
{
  struct node *n = node(path);
  if (!n || !n->text) {
    fail_with("rm: %s: %s", path, n ? "Is a directory" : "No such file or directory");
    return -1;
  }
  drop(n);
  return 0;
}

int guestfs_rm_f(guestfs_h *g, const char *path)
{
  struct node *n = node(path);
  if (n && n->text) drop(n);
  return 0;
}

int guestfs_mkdir_p(guestfs_h *g, const char *path)
{
  struct node *n = node(path);
  if (n && n->text) {
    fail_with("mkdir_p: %s: File exists", path);
    return -1;
  }
  fg_dir(path);
  return 0;
}

int guestfs_exists(guestfs_h *g, const char *path) { return node(path) != NULL || !strcmp(path, "/"); }

int guestfs_is_file_opts(guestfs_h *g, const char *path, ...)
{
  struct node *n = node(path);
  return n && n->text;
}

char *guestfs_readlink(guestfs_h *g, const char *path)
{
  fail_with("readlink: %s: Invalid argument", path);
  return NULL;
}

char *guestfs_case_sensitive_path(guestfs_h *g, const char *path) { return vm_strdup(path); }

/* Files and folders matching a glob, sorted; a pattern ending in "/" matches
 * folders, named with the "/". */
char **guestfs_glob_expand(guestfs_h *g, const char *pattern)
{
  struct vm_strv m = { 0 };
  size_t pl = strlen(pattern);
  bool dirs = pl > 1 && pattern[pl - 1] == '/';
  CLEANUP_FREE char *pat = vm_strdup(pattern);
  if (dirs) pat[pl - 1] = 0;
  for (size_t i = 0; i < nnodes; i++) {
    if (dirs && nodes[i].text) continue;
    if (fnmatch(pat, nodes[i].path, FNM_PATHNAME | FNM_PERIOD) == 0) vm_strv_addf(&m, "%s%s", nodes[i].path, dirs ? "/" : "");
  }
  char **r = strv_copy(m.v, m.n);
  qsort(r, m.n, sizeof *r, cmp_str);
  vm_strv_free(&m);
  return r;
}

char **guestfs_ls(guestfs_h *g, const char *directory)
{
  if (!is_dir(directory)) {
    fail_with("ls: %s: No such file or directory", directory);
    return NULL;
  }
  struct vm_strv m = { 0 };
  size_t dl = strlen(directory);
  for (size_t i = 0; i < nnodes; i++) {
    const char *p = nodes[i].path;
    if (strncmp(p, directory, dl) == 0 && p[dl] == '/' && !strchr(p + dl + 1, '/')) vm_strv_add(&m, p + dl + 1);
  }
  char **r = strv_copy(m.v, m.n);
  qsort(r, m.n, sizeof *r, cmp_str);
  vm_strv_free(&m);
  return r;
}

/* ---- devices and file systems ----------------------------------------------------- */

char **guestfs_list_devices(guestfs_h *g) { return strv_copy(disks.v, disks.n); }

char **guestfs_list_partitions(guestfs_h *g)
{
  struct vm_strv m = { 0 };
  for (size_t i = 0; i < nfss; i++)
    if (!vm_strv_contains(disks.v, fss[i].dev)) vm_strv_add(&m, fss[i].dev);
  char **r = strv_copy(m.v, m.n);
  vm_strv_free(&m);
  return r;
}

char *guestfs_part_to_dev(guestfs_h *g, const char *partition)
{
  char *d = vm_strdup(partition);
  size_t l = strlen(d);
  while (l && d[l - 1] >= '0' && d[l - 1] <= '9') d[--l] = 0;
  if (!strncmp(d, "/dev/nvme", 9) && l && d[l - 1] == 'p') d[--l] = 0;
  return d;
}

char *guestfs_vfs_type(guestfs_h *g, const char *mountable)
{
  struct fsys *f = fsys(mountable);
  if (!f) {
    fail_with("vfs_type: %s: No such device", mountable);
    return NULL;
  }
  return vm_strdup(f->type);
}

char *guestfs_vfs_uuid(guestfs_h *g, const char *mountable)
{
  struct fsys *f = fsys(mountable);
  if (!f) {
    fail_with("vfs_uuid: %s: No such device", mountable);
    return NULL;
  }
  return vm_strdup(f->uuid);
}

char *guestfs_findfs_uuid(guestfs_h *g, const char *uuid)
{
  for (size_t i = 0; i < nfss; i++)
    if (!strcmp(fss[i].uuid, uuid)) return vm_strdup(fss[i].dev);
  fail_with("findfs_uuid: unable to resolve 'UUID=%s'", uuid);
  return NULL;
}

int guestfs_is_lv(guestfs_h *g, const char *mountable) { return 0; }

char *guestfs_lvm_canonical_lv_name(guestfs_h *g, const char *lvname)
{
  fail_with("lvm_canonical_lv_name: %s: not a logical volume", lvname);
  return NULL;
}

char **guestfs_vgpvuuids(guestfs_h *g, const char *vgname)
{
  fail_with("vgpvuuids: %s: no such volume group", vgname);
  return NULL;
}

struct guestfs_lvm_pv_list *guestfs_pvs_full(guestfs_h *g)
{
  struct guestfs_lvm_pv_list *l = calloc(1, sizeof *l);
  if (!l) abort();
  return l;
}

void guestfs_free_lvm_pv_list(struct guestfs_lvm_pv_list *l)
{
  if (l) free(l->val);
  free(l);
}

/* ---- inspection and mounts -------------------------------------------------------- */

char **guestfs_inspect_os(guestfs_h *g) { return root ? strv_copy(&root, 1) : strv_copy(NULL, 0); }
char *guestfs_inspect_get_type(guestfs_h *g, const char *r) { return vm_strdup("linux"); }
char *guestfs_inspect_get_distro(guestfs_h *g, const char *r) { return vm_strdup("debian"); }
char *guestfs_inspect_get_product_name(guestfs_h *g, const char *r) { return vm_strdup("12.5"); }
char *guestfs_mountable_device(guestfs_h *g, const char *mountable) { return vm_strdup(mountable); }

char **guestfs_inspect_get_mountpoints(guestfs_h *g, const char *r)
{
  if (mountpoints.n) return strv_copy(mountpoints.v, mountpoints.n);
  char *v[] = { "/", root };
  return strv_copy(v, 2);
}

static int mount_fs(const char *fn, const char *mountable)
{
  if (fsys(mountable)) return 0;
  fail_with("%s: %s: No such device", fn, mountable);
  return -1;
}

int guestfs_mount(guestfs_h *g, const char *mountable, const char *mp) { return mount_fs("mount", mountable); }
int guestfs_mount_ro(guestfs_h *g, const char *mountable, const char *mp) { return mount_fs("mount_ro", mountable); }
int guestfs_umount_all(guestfs_h *g) { return 0; }

/* ---- commands and errors ---------------------------------------------------------- */

/* "sh -n PATH": the host's sh reads the fake file's text. */
static char *sh_n(const char *path)
{
  struct node *n = node(path);
  if (!n || !n->text) {
    fail_with("command: sh: %s: No such file", path);
    return NULL;
  }
  char tmp[] = "/tmp/vmkit-fake-sh-XXXXXX";
  int fd = mkstemp(tmp);
  if (fd < 0) abort();
  size_t len = strlen(n->text);
  if (write(fd, n->text, len) != (ssize_t)len) abort();
  close(fd);
  char *argv[] = { "sh", "-n", tmp, NULL };
  CLEANUP_FREE char *err = NULL;
  int rc = vm_run(argv, NULL, &err);
  unlink(tmp);
  if (rc != 0) {
    /* sh names the file it read: the guest's path, as in the guest. */
    const char *why = err && *err ? err : "failed\n";
    const char *at = strstr(why, tmp);
    fail_with("command: sh -n %s: %.*s%s%.*s", path, at ? (int)(at - why) : 0, why, at ? path : "",
              (int)strcspn(at ? at + strlen(tmp) : why, "\n"), at ? at + strlen(tmp) : why);
    return NULL;
  }
  return vm_strdup("");
}

char *guestfs_command(guestfs_h *g, char *const *arguments)
{
  for (size_t i = 0; arguments[i]; i++) {
    const char *w = arguments[i];
    size_t need = commands_len + strlen(w) + 2;
    commands = realloc(commands, need + 1);
    if (!commands) abort();
    commands_len += (size_t)sprintf(commands + commands_len, "%s%s", w, arguments[i + 1] ? " " : "\n");
  }
  if (!strcmp(arguments[0], "sh") && arguments[1] && !strcmp(arguments[1], "-n") && arguments[2] && !arguments[3])
    return sh_n(arguments[2]);
  return vm_strdup("");
}

int guestfs_feature_available(guestfs_h *g, char *const *groups) { return 0; }

int guestfs_selinux_relabel(guestfs_h *g, const char *specfile, const char *path, ...)
{
  fail_with("selinux_relabel: not available");
  return -1;
}

const char *guestfs_last_error(guestfs_h *g) { return last_error[0] ? last_error : NULL; }
void guestfs_push_error_handler(guestfs_h *g, guestfs_error_handler_cb cb, void *opaque) {}
void guestfs_pop_error_handler(guestfs_h *g) {}

/* libvmkit-gfs is not linked (it stands on libvirt): the one function of it that
 * adapt.c calls, as common/gfs/gfs.c has it. */
int vm_fail_gfs(guestfs_h *g, const char *fmt, ...)
{
  char msg[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  const char *why = guestfs_last_error(g);
  int n = why ? (int)strcspn(why, "\n") : 0;
  return vm_fail(VM_EXIT_FAIL, "%s: %.*s", msg, why ? n : 16, why ? why : "libguestfs error");
}
