/* Storage through libvirt: pools, volumes, their chains, and streams that copy
 * only allocated data. Storage virtualization is libvirt's job; vmkit asks it, so
 * that every verb works the same on this host and through a remote URI. The one
 * exception is a file in no pool, which vmkit reaches directly, and only when the
 * connection's daemon sees this machine's files (vm_conn_is_local). */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <pthread.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vmkit-virt.h"

const char *vm_default_pool(void)
{
  const char *p = getenv("VMKIT_POOL");
  return p && *p ? p : "default";
}

const char *vm_default_template_pool(void)
{
  const char *p = getenv("VMKIT_TEMPLATE_POOL");
  return p && *p ? p : "vmkit-templates";
}

/* Where a default pool goes when a host has none, as virt-install does for "default". */
static const char *default_pool_path(const char *name)
{
  if (strcmp(name, "default") == 0) return "/var/lib/libvirt/images";
  if (strcmp(name, "vmkit-templates") == 0) return "/var/lib/vmkit/templates";
  return NULL;
}

static int define_default_pool(virConnectPtr conn, const char *name, const char *path, virStoragePoolPtr *out)
{
  CLEANUP_XMLDOC xmlDocPtr doc = xmlNewDoc(BAD_CAST "1.0");
  xmlNodePtr root = xmlNewNode(NULL, BAD_CAST "pool");
  xmlDocSetRootElement(doc, root);
  vm_xml_set(root, "type", "dir");
  vm_xml_child(root, "name", name);
  vm_xml_child(vm_xml_child(root, "target", NULL), "path", path);
  CLEANUP_FREE char *xml = vm_xml_dump(doc);
  virStoragePoolPtr pool = virStoragePoolDefineXML(conn, xml, 0);
  if (!pool) {
    /* Another run defined it first: take that one. */
    virErrorPtr saved = virSaveLastError();
    *out = virStoragePoolLookupByName(conn, name);
    if (*out) {
      virFreeError(saved);
      virResetLastError();
      return 0;
    }
    return vm_fail_virt_saved(saved, "cannot define storage pool '%s' on %s", name, vm_conn_host_name(conn));
  }
  if (virStoragePoolBuild(pool, 0) < 0 || virStoragePoolCreate(pool, 0) < 0 ||
      virStoragePoolSetAutostart(pool, 1) < 0) {
    int rc = vm_fail_virt("cannot set up storage pool '%s' at %s on %s", name, path, vm_conn_host_name(conn));
    if (virStoragePoolIsActive(pool) == 1) virStoragePoolDestroy(pool);
    virStoragePoolUndefine(pool);
    virStoragePoolFree(pool);
    return rc;
  }
  vm_info("%s had no storage pool '%s': defined it at %s (a dir pool, started at boot)", vm_conn_host_name(conn),
          name, path);
  *out = pool;
  return 0;
}

int vm_pool_open(virConnectPtr conn, const char *name, virStoragePoolPtr *out)
{
  *out = NULL;
  virStoragePoolPtr pool = virStoragePoolLookupByName(conn, name);
  if (!pool) {
    if (vm_virt_error_code() != VIR_ERR_NO_STORAGE_POOL)
      return vm_fail_virt("cannot look up storage pool '%s'", name);
    virResetLastError();
    const char *path = default_pool_path(name);
    if (!path)
      return vm_fail(VM_EXIT_NOTFOUND, "no storage pool '%s' on %s", name, vm_conn_host_name(conn));
    int rc = define_default_pool(conn, name, path, &pool);
    if (rc) return rc;
  }
  if (virStoragePoolIsActive(pool) != 1 && virStoragePoolCreate(pool, 0) < 0) {
    virErrorPtr saved = virSaveLastError();
    if (virStoragePoolIsActive(pool) != 1) { /* not another run that started it meanwhile */
      int rc = vm_fail_virt_saved(saved, "cannot start storage pool '%s' on %s", name, vm_conn_host_name(conn));
      virStoragePoolFree(pool);
      return rc;
    }
    virFreeError(saved);
  }
  *out = pool;
  return 0;
}

static xmlDocPtr pool_doc(virStoragePoolPtr pool)
{
  CLEANUP_FREE char *xml = virStoragePoolGetXMLDesc(pool, 0);
  return xml ? vm_xml_parse(xml) : NULL;
}

char *vm_pool_type(virStoragePoolPtr pool)
{
  CLEANUP_XMLDOC xmlDocPtr doc = pool_doc(pool);
  CLEANUP_XPATHCTX xmlXPathContextPtr x = doc ? vm_xpath_ctx(doc) : NULL;
  return x ? vm_xpath_str(x, "/pool/@type") : NULL;
}

char *vm_pool_target(virStoragePoolPtr pool)
{
  CLEANUP_XMLDOC xmlDocPtr doc = pool_doc(pool);
  CLEANUP_XPATHCTX xmlXPathContextPtr x = doc ? vm_xpath_ctx(doc) : NULL;
  char *p = x ? vm_xpath_str(x, "/pool/target/path") : NULL;
  size_t n = p ? strlen(p) : 0;
  while (n > 1 && p[n - 1] == '/') p[--n] = '\0';
  return p;
}

bool vm_pool_is_file_based(virStoragePoolPtr pool)
{
  CLEANUP_FREE char *type = vm_pool_type(pool);
  static const char *const file_types[] = { "dir", "fs", "netfs", "gluster", "vstorage", NULL };
  return type && vm_strv_contains((char *const *)file_types, type);
}

/* Pools are refreshed once per generation: reading chains after vmkit changed them
 * (a merge, a new overlay) needs libvirt to read the files again. */
static unsigned generation = 1;
struct refreshed {
  char *name;
  unsigned gen;
};
static struct refreshed refreshed[32];
/* The table and the generation, for the threads of one run (vmpatch apply). */
static pthread_mutex_t refreshed_lock = PTHREAD_MUTEX_INITIALIZER;

void vm_storage_changed(void)
{
  pthread_mutex_lock(&refreshed_lock);
  generation++;
  pthread_mutex_unlock(&refreshed_lock);
}

/* A pool with a volume being built or copied into refuses a refresh until it is
 * done: waited for up to wait_ms, then reported (report) or not. */
static int refresh(virStoragePoolPtr pool, int wait_ms, bool report)
{
  const char *name = virStoragePoolGetName(pool);
  /* The generation this refresh sees: a change made while it runs is not
   * counted as seen. */
  pthread_mutex_lock(&refreshed_lock);
  unsigned gen = generation;
  pthread_mutex_unlock(&refreshed_lock);
  int64_t until = vm_now_ms() + wait_ms;
  while (virStoragePoolRefresh(pool, 0) < 0) {
    if (vm_now_ms() > until || vm_interrupted() || virStoragePoolIsActive(pool) != 1) {
      if (report) return vm_fail_virt("cannot refresh storage pool '%s'", name);
      vm_debug("storage pool '%s' is busy: its volumes as libvirt last read them", name);
      virResetLastError();
      return -1;
    }
    vm_sleep_ms(100);
  }
  pthread_mutex_lock(&refreshed_lock);
  for (size_t i = 0; i < sizeof refreshed / sizeof *refreshed; i++) {
    if (refreshed[i].name && strcmp(refreshed[i].name, name) != 0) continue;
    if (!refreshed[i].name) refreshed[i].name = vm_strdup(name);
    refreshed[i].gen = gen;
    break;
  }
  pthread_mutex_unlock(&refreshed_lock);
  return 0;
}

int vm_pool_refresh(virStoragePoolPtr pool) { return refresh(pool, 10000, true); }

/* Lookups refresh a pool once per generation, to see what others made. A pool busy
 * with another run's copy is read as libvirt last read it (a copy in progress
 * changes no chain), rather than failing this run: 1 then, 0 when the pool's
 * list is current. */
static int refresh_once(virStoragePoolPtr pool)
{
  const char *name = virStoragePoolGetName(pool);
  bool fresh = false;
  pthread_mutex_lock(&refreshed_lock);
  for (size_t i = 0; i < sizeof refreshed / sizeof *refreshed && !fresh; i++)
    fresh = refreshed[i].name && strcmp(refreshed[i].name, name) == 0 && refreshed[i].gen == generation;
  pthread_mutex_unlock(&refreshed_lock);
  if (fresh) return 0;
  return refresh(pool, 2000, false) == 0 ? 0 : 1;
}

/* The active pool whose folder is dir, if any. */
static virStoragePoolPtr pool_of_dir(virConnectPtr conn, const char *dir)
{
  virStoragePoolPtr *pools = NULL;
  int n = virConnectListAllStoragePools(conn, &pools, VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE);
  if (n < 0) {
    virResetLastError();
    return NULL;
  }
  virStoragePoolPtr found = NULL;
  for (int i = 0; i < n; i++) {
    CLEANUP_FREE char *t = found ? NULL : vm_pool_target(pools[i]);
    if (t && strcmp(t, dir) == 0) found = pools[i];
    else virStoragePoolFree(pools[i]);
  }
  free(pools);
  return found;
}

/* 0 found; VM_EXIT_NOTFOUND: *covered tells whether a pool holds the folder (then
 * the file does not exist on the host) or none does. */
static int find_vol(virConnectPtr conn, const char *path, virStorageVolPtr *vol, bool *covered)
{
  *vol = NULL;
  *covered = false;
  for (int attempt = 0; attempt < 2; attempt++) {
    *vol = virStorageVolLookupByPath(conn, path);
    if (*vol) {
      *covered = true;
      /* Found in a pool refreshed in an earlier generation: its facts may be stale. */
      if (attempt == 0) {
        CLEANUP_VIRPOOL virStoragePoolPtr pool = virStoragePoolLookupByVolume(*vol);
        /* A refresh that failed (a busy pool, a host going down) may leave
         * libvirt's list of it empty: the volume found is kept, as last read. */
        if (pool && refresh_once(pool) != 0) {
          virResetLastError();
          return 0;
        }
        if (pool) {
          /* The refresh made new volume objects: look again. */
          virStorageVolFree(*vol);
          *vol = virStorageVolLookupByPath(conn, path);
          if (*vol) return 0;
          virResetLastError();
          return VM_EXIT_NOTFOUND;
        }
        virResetLastError();
      }
      return 0;
    }
    if (vm_virt_error_code() != VIR_ERR_NO_STORAGE_VOL)
      return vm_fail_virt("cannot look up '%s' in the storage pools of %s", path, vm_conn_host_name(conn));
    virResetLastError();
    if (attempt == 1) break;
    CLEANUP_FREE char *copy = vm_strdup(path);
    CLEANUP_VIRPOOL virStoragePoolPtr pool = pool_of_dir(conn, dirname(copy));
    if (!pool) return VM_EXIT_NOTFOUND;
    /* Only a pool read now says that its folder has no such file. */
    *covered = refresh_once(pool) == 0;
    virResetLastError();
  }
  return VM_EXIT_NOTFOUND;
}

int vm_vol_find(virConnectPtr conn, const char *path, virStorageVolPtr *vol)
{
  bool covered;
  return find_vol(conn, path, vol, &covered);
}

bool vm_path_exists(virConnectPtr conn, const char *path)
{
  CLEANUP_VIRVOL virStorageVolPtr vol = NULL;
  bool covered;
  int rc = find_vol(conn, path, &vol, &covered);
  if (rc == 0) return true;
  if (rc == VM_EXIT_NOTFOUND && !covered && vm_conn_is_local(conn)) return access(path, F_OK) == 0;
  return false;
}

void vm_imginfo_free(struct vm_imginfo *i)
{
  free(i->path);
  free(i->format);
  free(i->backing);
  free(i->backing_format);
  free(i->pool);
  memset(i, 0, sizeof *i);
}

static const char *str_member(json_object *o, const char *key)
{
  json_object *v;
  return json_object_object_get_ex(o, key, &v) && v ? json_object_get_string(v) : NULL;
}

/* qemu-img info of a local file in no pool; errors printed only when report is set. */
static int local_info(const char *path, struct vm_imginfo *info, bool report)
{
  if (access(path, F_OK) < 0) return VM_EXIT_NOTFOUND;
  /* -U: the image may be open by a running guest; a read-only look is safe. */
  char *argv[] = { "qemu-img", "info", "-U", "--output=json", (char *)path, NULL };
  CLEANUP_FREE char *out = NULL;
  if (report ? vm_run_checked(argv, &out) != 0 : vm_run(argv, &out, NULL) != 0) return VM_EXIT_FAIL;
  CLEANUP_JSON json_object *j = json_tokener_parse(out);
  if (!j) return report ? vm_fail(VM_EXIT_FAIL, "cannot parse qemu-img info output for '%s'", path) : VM_EXIT_FAIL;
  char real[PATH_MAX];
  info->path = vm_strdup(realpath(path, real) ? real : path);
  info->format = vm_strdup(str_member(j, "format") ? str_member(j, "format") : "raw");
  const char *b = str_member(j, "full-backing-filename");
  if (!b) b = str_member(j, "backing-filename");
  info->backing = vm_strdup(b);
  info->backing_format = vm_strdup(str_member(j, "backing-filename-format"));
  json_object *v;
  if (json_object_object_get_ex(j, "virtual-size", &v)) info->capacity = (uint64_t)json_object_get_int64(v);
  if (json_object_object_get_ex(j, "actual-size", &v)) info->allocation = (uint64_t)json_object_get_int64(v);
  return 0;
}

static int volume_info(virStorageVolPtr vol, struct vm_imginfo *info)
{
  CLEANUP_FREE char *xml = virStorageVolGetXMLDesc(vol, 0);
  if (!xml) return vm_fail_virt("cannot read the volume '%s'", virStorageVolGetName(vol));
  CLEANUP_XMLDOC xmlDocPtr doc = vm_xml_parse(xml);
  CLEANUP_XPATHCTX xmlXPathContextPtr x = doc ? vm_xpath_ctx(doc) : NULL;
  if (!x) return vm_fail(VM_EXIT_FAIL, "cannot parse the volume '%s'", virStorageVolGetName(vol));
  info->path = vm_xpath_str(x, "/volume/target/path");
  info->format = vm_xpath_str(x, "/volume/target/format/@type");
  if (!info->format) info->format = vm_strdup("raw");
  info->backing = vm_xpath_str(x, "/volume/backingStore/path");
  info->backing_format = vm_xpath_str(x, "/volume/backingStore/format/@type");
  info->capacity = (uint64_t)vm_xpath_ll(x, "/volume/capacity", 0);
  info->allocation = (uint64_t)vm_xpath_ll(x, "/volume/allocation", 0);
  info->in_pool = true;
  CLEANUP_VIRPOOL virStoragePoolPtr pool = virStoragePoolLookupByVolume(vol);
  info->pool = pool ? vm_strdup(virStoragePoolGetName(pool)) : NULL;
  if (!info->path) info->path = vm_strdup(virStorageVolGetPath(vol));
  return 0;
}

static int image_info(virConnectPtr conn, const char *path, struct vm_imginfo *info, bool report)
{
  memset(info, 0, sizeof *info);
  CLEANUP_VIRVOL virStorageVolPtr vol = NULL;
  bool covered;
  int rc = find_vol(conn, path, &vol, &covered);
  if (rc == 0) return volume_info(vol, info);
  if (rc != VM_EXIT_NOTFOUND || covered) return rc;
  if (vm_conn_is_local(conn)) return local_info(path, info, report);
  if (!report) return VM_EXIT_FAIL;
  return vm_fail(VM_EXIT_FAIL, "'%s' is in no storage pool of %s: vmkit reaches a remote host's files only "
                 "through its pools", path, vm_conn_host_name(conn));
}

int vm_image_info(virConnectPtr conn, const char *path, struct vm_imginfo *info)
{
  return image_info(conn, path, info, true);
}

/* The same, quiet: for scans over other domains' disks. */
int vm_image_info_quiet(virConnectPtr conn, const char *path, struct vm_imginfo *info)
{
  return image_info(conn, path, info, false);
}

static char *vol_xml(virStoragePoolPtr pool, const struct vm_volspec *spec)
{
  CLEANUP_XMLDOC xmlDocPtr doc = xmlNewDoc(BAD_CAST "1.0");
  xmlNodePtr root = xmlNewNode(NULL, BAD_CAST "volume");
  xmlDocSetRootElement(doc, root);
  vm_xml_child(root, "name", spec->name);
  char num[32];
  snprintf(num, sizeof num, "%llu", (unsigned long long)spec->capacity);
  vm_xml_set(vm_xml_child(root, "capacity", num), "unit", "bytes");
  vm_xml_set(vm_xml_child(root, "allocation", "0"), "unit", "bytes");
  xmlNodePtr target = vm_xml_child(root, "target", NULL);
  bool files = vm_pool_is_file_based(pool);
  if (files && spec->format) vm_xml_set(vm_xml_child(target, "format", NULL), "type", spec->format);
  /* qcow2 version 3 (libvirt 9.0 still makes 0.10 unless told): persistent dirty
   * bitmaps, which vmbackup's incremental backups need, exist only there. */
  if (files && spec->format && strcmp(spec->format, "qcow2") == 0) vm_xml_child(target, "compat", "1.1");
  if (spec->secret) vm_xml_add_luks(target, spec->secret);
  xmlNodePtr perms = vm_xml_child(target, "permissions", NULL);
  snprintf(num, sizeof num, "0%o", spec->mode ? spec->mode : 0600);
  vm_xml_child(perms, "mode", num);
  if (spec->backing) {
    xmlNodePtr bs = vm_xml_child(root, "backingStore", NULL);
    vm_xml_child(bs, "path", spec->backing);
    vm_xml_set(vm_xml_child(bs, "format", NULL), "type", spec->backing_format ? spec->backing_format : "qcow2");
  }
  return vm_xml_dump(doc);
}

static int created(virStoragePoolPtr pool, const struct vm_volspec *spec, virStorageVolPtr v, virStorageVolPtr *out)
{
  if (!v) {
    int code = vm_virt_error_code();
    if (code == VIR_ERR_STORAGE_VOL_EXIST)
      return vm_fail(VM_EXIT_STATE, "cannot create volume '%s' in pool '%s': it already exists", spec->name,
                     virStoragePoolGetName(pool));
    return vm_fail_virt("cannot create volume '%s' in pool '%s'", spec->name, virStoragePoolGetName(pool));
  }
  vm_storage_changed();
  if (out) *out = v;
  else virStorageVolFree(v);
  return 0;
}

/* An encrypted volume that failed on QEMU's timing of its key derivation
 * (vm_luks_timing_failed): worth another try. */
static bool luks_benchmark_failed(const struct vm_volspec *spec)
{
  if (!spec->secret || !vm_luks_timing_failed(vm_virt_message())) return false;
  vm_debug("QEMU could not time the key derivation of '%s': trying again", spec->name);
  virResetLastError();
  return true;
}

int vm_vol_create(virStoragePoolPtr pool, const struct vm_volspec *spec, virStorageVolPtr *out)
{
  if (out) *out = NULL;
  if (spec->backing && !vm_pool_is_file_based(pool)) {
    CLEANUP_FREE char *type = vm_pool_type(pool);
    return vm_fail(VM_EXIT_STATE, "pool '%s' (%s) cannot hold a qcow2 overlay: linked clones and external "
                   "snapshots need a file-based pool (dir, fs, netfs)", virStoragePoolGetName(pool),
                   type ? type : "?");
  }
  CLEANUP_FREE char *xml = vol_xml(pool, spec);
  virStorageVolPtr v = virStorageVolCreateXML(pool, xml, 0);
  for (int i = 0; !v && i < VM_LUKS_TIMING_RETRIES && luks_benchmark_failed(spec); i++)
    v = virStorageVolCreateXML(pool, xml, 0);
  /* libvirt goes by its list of the pool's volumes, which a file removed behind
   * its back leaves stale: after a refresh, a name that is free is free. */
  if (!v && vm_virt_error_code() == VIR_ERR_STORAGE_VOL_EXIST && vm_pool_refresh(pool) == 0) {
    virStorageVolPtr there = virStorageVolLookupByName(pool, spec->name);
    if (there) {
      virStorageVolFree(there);
      return vm_fail(VM_EXIT_STATE, "cannot create volume '%s' in pool '%s': it already exists", spec->name,
                     virStoragePoolGetName(pool));
    }
    virResetLastError();
    v = virStorageVolCreateXML(pool, xml, 0);
  }
  return created(pool, spec, v, out);
}

int vm_vol_create_from(virStoragePoolPtr pool, const struct vm_volspec *spec, virStorageVolPtr src,
                       virStorageVolPtr *out)
{
  if (out) *out = NULL;
  struct vm_volspec s = *spec;
  s.backing = NULL;
  CLEANUP_FREE char *xml = vol_xml(pool, &s);
  virStorageVolPtr v = virStorageVolCreateXMLFrom(pool, xml, src, 0);
  for (int i = 0; !v && i < VM_LUKS_TIMING_RETRIES && luks_benchmark_failed(spec); i++)
    v = virStorageVolCreateXMLFrom(pool, xml, src, 0);
  return created(pool, spec, v, out);
}

int vm_path_delete(virConnectPtr conn, const char *path)
{
  CLEANUP_VIRVOL virStorageVolPtr vol = NULL;
  bool covered;
  int rc = find_vol(conn, path, &vol, &covered);
  if (rc == 0) {
    if (virStorageVolDelete(vol, 0) < 0) {
      if (vm_virt_error_code() == VIR_ERR_NO_STORAGE_VOL) return 0;
      return vm_fail_virt("cannot remove '%s'", path);
    }
    vm_storage_changed();
    vm_debug("removed '%s'", path);
    return 0;
  }
  if (rc != VM_EXIT_NOTFOUND) return rc;
  if (covered) return 0; /* its pool's folder has no such file: gone already */
  if (!vm_conn_is_local(conn))
    return vm_fail(VM_EXIT_FAIL, "cannot remove '%s': it is in no storage pool of %s", path, vm_conn_host_name(conn));
  /* Only a plain file: a device node or a folder is never vmkit's to remove. */
  struct stat st;
  if (lstat(path, &st) < 0) {
    if (errno == ENOENT) return 0;
    return vm_fail_errno(VM_EXIT_FAIL, "cannot remove '%s'", path);
  }
  if (!S_ISREG(st.st_mode)) return vm_fail(VM_EXIT_FAIL, "cannot remove '%s': not a regular file", path);
  if (unlink(path) < 0 && errno != ENOENT) return vm_fail_errno(VM_EXIT_FAIL, "cannot remove '%s'", path);
  vm_debug("removed '%s'", path);
  return 0;
}

/* ---- Streams ---------------------------------------------------------------------------- */

struct local_file {
  int fd;
  off_t size;
  uint64_t done, total;
  const char *what;
};

static int src_read(virStreamPtr st, char *data, size_t n, void *opaque)
{
  struct local_file *f = opaque;
  if (vm_interrupted()) return -1; /* Ctrl-C stops a long copy halfway */
  for (;;) {
    ssize_t r = read(f->fd, data, n);
    if (r < 0 && errno == EINTR) continue;
    if (r > 0) {
      f->done += (uint64_t)r;
      if (f->what) vm_progress(f->what, f->done, f->total);
    }
    return (int)r;
  }
}

/* Where the file's data and holes are, as virsh's vol-upload --sparse finds them. */
static int src_hole(virStreamPtr st, int *in_data, long long *length, void *opaque)
{
  struct local_file *f = opaque;
  off_t cur = lseek(f->fd, 0, SEEK_CUR);
  if (cur < 0) return -1;
  if (cur >= f->size) {
    *in_data = 0;
    *length = 0;
    return 0;
  }
  off_t data = lseek(f->fd, cur, SEEK_DATA);
  if (data < 0) {
    if (errno != ENXIO) return -1;
    *in_data = 0; /* a hole up to the end */
    *length = f->size - cur;
  } else if (data > cur) {
    *in_data = 0;
    *length = data - cur;
  } else {
    off_t hole = lseek(f->fd, cur, SEEK_HOLE);
    if (hole < 0) return -1;
    *in_data = 1;
    *length = hole - cur;
  }
  return lseek(f->fd, cur, SEEK_SET) < 0 ? -1 : 0;
}

static int src_skip(virStreamPtr st, long long length, void *opaque)
{
  struct local_file *f = opaque;
  f->done += (uint64_t)length;
  return lseek(f->fd, length, SEEK_CUR) < 0 ? -1 : 0;
}

static int sink_write(virStreamPtr st, const char *data, size_t n, void *opaque)
{
  struct local_file *f = opaque;
  if (vm_interrupted()) return -1;
  size_t off = 0;
  while (off < n) {
    ssize_t w = write(f->fd, data + off, n - off);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return -1;
    off += (size_t)w;
  }
  f->done += n;
  if (f->what) vm_progress(f->what, f->done, f->total);
  return (int)n;
}

static int sink_hole(virStreamPtr st, long long length, void *opaque)
{
  struct local_file *f = opaque;
  f->done += (uint64_t)length;
  return lseek(f->fd, length, SEEK_CUR) < 0 ? -1 : 0;
}

/* "cannot VERB 'WHAT': libvirt's reason", the stream aborted. */
static int stream_failed(virStreamPtr *st, const char *verb, const char *what)
{
  if (vm_interrupted()) {
    if (*st) {
      virStreamAbort(*st);
      virStreamFree(*st);
      *st = NULL;
    }
    vm_progress_end();
    return vm_fail_interrupted();
  }
  virErrorPtr saved = virSaveLastError();
  if (*st) {
    virStreamAbort(*st);
    virStreamFree(*st);
    *st = NULL;
  }
  vm_progress_end();
  return vm_fail_virt_saved(saved, "cannot %s '%s'", verb, what);
}

int vm_vol_upload_file(virStorageVolPtr vol, const char *local_path)
{
  CLEANUP_CLOSE int fd = open(local_path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return vm_fail_errno(VM_EXIT_FAIL, "cannot open '%s'", local_path);
  struct stat st;
  if (fstat(fd, &st) < 0) return vm_fail_errno(VM_EXIT_FAIL, "cannot read '%s'", local_path);
  struct local_file f = { fd, st.st_size, 0, (uint64_t)st.st_size, "uploading" };
  virStreamPtr s = virStreamNew(virStorageVolGetConnect(vol), 0);
  if (!s) return stream_failed(&s, "upload", local_path);
  if (virStorageVolUpload(vol, s, 0, 0, VIR_STORAGE_VOL_UPLOAD_SPARSE_STREAM) < 0 ||
      virStreamSparseSendAll(s, src_read, src_hole, src_skip, &f) < 0 || virStreamFinish(s) < 0)
    return stream_failed(&s, "upload", local_path);
  virStreamFree(s);
  vm_progress_end();
  vm_storage_changed();
  return 0;
}

int vm_vol_download_file(virStorageVolPtr vol, const char *local_path)
{
  CLEANUP_CLOSE int fd = open(local_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return vm_fail_errno(VM_EXIT_FAIL, "cannot create '%s'", local_path);
  struct vm_imginfo info = { 0 };
  volume_info(vol, &info);
  struct local_file f = { fd, 0, 0, info.allocation, "downloading" };
  vm_imginfo_free(&info);
  virStreamPtr s = virStreamNew(virStorageVolGetConnect(vol), 0);
  if (!s) return stream_failed(&s, "download to", local_path);
  if (virStorageVolDownload(vol, s, 0, 0, VIR_STORAGE_VOL_DOWNLOAD_SPARSE_STREAM) < 0 ||
      virStreamSparseRecvAll(s, sink_write, sink_hole, &f) < 0 || virStreamFinish(s) < 0)
    return stream_failed(&s, "download to", local_path);
  virStreamFree(s);
  vm_progress_end();
  /* A hole at the end is a length, not data: the file gets it by truncation. */
  off_t end = lseek(fd, 0, SEEK_CUR);
  if (end < 0 || ftruncate(fd, end) < 0 || fsync(fd) < 0)
    return vm_fail_errno(VM_EXIT_FAIL, "cannot write '%s'", local_path);
  return 0;
}

/* A copy between two hosts' volumes: what one stream receives, the other sends,
 * holes as holes. */
struct relay {
  virStreamPtr out;
  uint64_t done, total;
  const char *what;
};

static int relay_data(virStreamPtr st, const char *data, size_t n, void *opaque)
{
  struct relay *r = opaque;
  if (vm_interrupted()) return -1;
  size_t off = 0;
  while (off < n) {
    int w = virStreamSend(r->out, data + off, n - off);
    if (w < 0) return -1;
    off += (size_t)w;
  }
  r->done += n;
  if (r->what) vm_progress(r->what, r->done, r->total);
  return (int)n;
}

static int relay_hole(virStreamPtr st, long long length, void *opaque)
{
  struct relay *r = opaque;
  return virStreamSendHole(r->out, length, 0);
}

int vm_vol_copy(virStorageVolPtr src, virStorageVolPtr dst, const char *what)
{
  struct vm_imginfo info = { 0 };
  volume_info(src, &info);
  struct relay r = { NULL, 0, info.allocation, what };
  vm_imginfo_free(&info);
  virStreamPtr in = virStreamNew(virStorageVolGetConnect(src), 0);
  r.out = virStreamNew(virStorageVolGetConnect(dst), 0);
  int rc = 0;
  if (!in || !r.out || virStorageVolDownload(src, in, 0, 0, VIR_STORAGE_VOL_DOWNLOAD_SPARSE_STREAM) < 0 ||
      virStorageVolUpload(dst, r.out, 0, 0, VIR_STORAGE_VOL_UPLOAD_SPARSE_STREAM) < 0 ||
      virStreamSparseRecvAll(in, relay_data, relay_hole, &r) < 0 || virStreamFinish(in) < 0 ||
      virStreamFinish(r.out) < 0 || vm_interrupted()) {
    rc = vm_interrupted() ? vm_fail_interrupted()
                          : vm_fail_virt("cannot copy '%s' to '%s'", virStorageVolGetName(src), virStorageVolGetName(dst));
    if (in) virStreamAbort(in);
    if (r.out) virStreamAbort(r.out);
  }
  if (in) virStreamFree(in);
  if (r.out) virStreamFree(r.out);
  vm_progress_end();
  vm_storage_changed();
  return rc;
}

/* Text volumes (a template's record) are written whole at a fixed size, padded
 * with newlines: an upload overwrites without truncating, so every write covers
 * every byte of the volume, and a reader strips the padding. */
#define TEXT_VOL_SIZE 65536

int vm_vol_write_text(virStorageVolPtr vol, const char *text)
{
  size_t len = strlen(text);
  if (len >= TEXT_VOL_SIZE) return vm_fail(VM_EXIT_FAIL, "cannot write '%s': more than 64 KiB", virStorageVolGetName(vol));
  CLEANUP_FREE char *buf = malloc(TEXT_VOL_SIZE);
  if (!buf) return vm_fail(VM_EXIT_FAIL, "out of memory");
  memcpy(buf, text, len);
  memset(buf + len, '\n', TEXT_VOL_SIZE - len);
  virStreamPtr s = virStreamNew(virStorageVolGetConnect(vol), 0);
  if (!s || virStorageVolUpload(vol, s, 0, TEXT_VOL_SIZE, 0) < 0)
    return stream_failed(&s, "write", virStorageVolGetName(vol));
  for (size_t off = 0; off < TEXT_VOL_SIZE;) {
    int w = virStreamSend(s, buf + off, TEXT_VOL_SIZE - off);
    if (w < 0) return stream_failed(&s, "write", virStorageVolGetName(vol));
    off += (size_t)w;
  }
  if (virStreamFinish(s) < 0) return stream_failed(&s, "write", virStorageVolGetName(vol));
  virStreamFree(s);
  return 0;
}

char *vm_vol_read_text(virStorageVolPtr vol, size_t max)
{
  virStreamPtr s = virStreamNew(virStorageVolGetConnect(vol), 0);
  if (!s || virStorageVolDownload(vol, s, 0, 0, 0) < 0) {
    stream_failed(&s, "read", virStorageVolGetName(vol));
    return NULL;
  }
  size_t len = 0, cap = 8192;
  char *buf = malloc(cap + 1);
  for (;;) {
    if (!buf) break;
    if (len == cap) {
      if (cap >= max) break;
      char *nb = realloc(buf, (cap *= 2) + 1);
      if (!nb) { free(buf); buf = NULL; break; }
      buf = nb;
    }
    int r = virStreamRecv(s, buf + len, cap - len);
    if (r < 0) {
      free(buf);
      stream_failed(&s, "read", virStorageVolGetName(vol));
      return NULL;
    }
    if (r == 0) break;
    len += (size_t)r;
  }
  if (!buf || len > max) {
    free(buf);
    stream_failed(&s, "read (too large)", virStorageVolGetName(vol));
    return NULL;
  }
  virStreamFinish(s);
  virStreamFree(s);
  buf[len] = '\0';
  /* The padding, and anything after a NUL (a file made some other way). */
  len = strlen(buf);
  while (len && (buf[len - 1] == '\n' || buf[len - 1] == ' ')) buf[--len] = '\0';
  return buf;
}

/* A template's image NAME.qcow2 has its record NAME.template beside it, in the
 * same pool (vmrun(1), TEMPLATES). */
bool vm_image_is_template(virConnectPtr conn, const char *path)
{
  CLEANUP_VIRVOL virStorageVolPtr vol = NULL;
  if (vm_vol_find(conn, path, &vol) != 0) return false;
  const char *name = virStorageVolGetName(vol);
  size_t n = strlen(name);
  if (n <= 6 || strcmp(name + n - 6, ".qcow2") != 0) return false;
  CLEANUP_VIRPOOL virStoragePoolPtr pool = virStoragePoolLookupByVolume(vol);
  if (!pool) {
    virResetLastError();
    return false;
  }
  CLEANUP_FREE char *rec = vm_strdup_printf("%.*s.template", (int)(n - 6), name);
  virStorageVolPtr r = virStorageVolLookupByName(pool, rec);
  if (!r) {
    virResetLastError();
    return false;
  }
  virStorageVolFree(r);
  return true;
}

int vm_pool_of_path(virConnectPtr conn, const char *path, virStoragePoolPtr *pool)
{
  CLEANUP_FREE char *copy = vm_strdup(path);
  *pool = pool_of_dir(conn, dirname(copy));
  return *pool ? 0 : VM_EXIT_NOTFOUND;
}

int vm_overlay_create(virConnectPtr conn, const char *path, const char *backing, const char *backing_format)
{
  CLEANUP_VIRPOOL virStoragePoolPtr pool = NULL;
  if (vm_pool_of_path(conn, path, &pool) == 0) {
    struct vm_imginfo info;
    int rc = vm_image_info(conn, backing, &info);
    if (rc == VM_EXIT_NOTFOUND) rc = vm_fail(VM_EXIT_NOTFOUND, "'%s' is missing", backing);
    if (rc) return rc;
    CLEANUP_FREE char *copy = vm_strdup(path);
    struct vm_volspec spec = { .name = basename(copy), .format = "qcow2", .capacity = info.capacity,
                               .backing = backing, .backing_format = backing_format ? backing_format : info.format };
    rc = vm_vol_create(pool, &spec, NULL);
    vm_imginfo_free(&info);
    return rc;
  }
  if (!vm_conn_is_local(conn))
    return vm_fail(VM_EXIT_FAIL, "cannot create '%s': its folder is in no storage pool of %s", path,
                   vm_conn_host_name(conn));
  /* A folder in no pool, on this machine: qemu-img, with the new file claimed first. */
  int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return vm_fail_errno(errno == EEXIST ? VM_EXIT_STATE : VM_EXIT_FAIL, "cannot create '%s'", path);
  close(fd);
  char *argv[] = { "qemu-img", "create", "-q", "-f", "qcow2", "-F", (char *)(backing_format ? backing_format : "qcow2"),
                   "-b", (char *)backing, (char *)path, NULL };
  int rc = vm_run_checked(argv, NULL);
  if (rc) unlink(path);
  return rc;
}
