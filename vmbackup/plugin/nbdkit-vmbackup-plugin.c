/* nbdkit-vmbackup-plugin: one disk of a vmbackup snapshot as a read-only NBD
 * export. Each read fetches the chunks it touches from the repository (each
 * one authenticated, a few kept in a cache); holes read as zeros and are
 * reported as holes (extents), so that a copy skips them. `vmbackup serve`,
 * restore-file, ls and live restore run nbdkit with it; by hand:
 *
 *   nbdkit -r -U SOCK nbdkit-vmbackup-plugin.so repo=PATH snapshot=ID [disk=vda]
 *     [passphrase-file=FILE] [stats=FILE]
 *
 * The passphrase comes from passphrase-file or VMKIT_PASSPHRASE (never a
 * parameter). It holds the repository's shared lock while it runs, so that no
 * prune removes what it serves. stats=FILE: at exit, what was read, as JSON. */
#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "store.h"

#define THREAD_MODEL NBDKIT_THREAD_MODEL_PARALLEL
#define CACHE_SLOTS 32

static char *repo_path, *snapshot, *disk_name, *passfile, *stats_path;
static struct vb_repo *repo;
static struct vb_manifest man;
static const struct vb_mdisk *disk;
static unsigned chunk_size;

/* A few opened chunks: guestfs and block copies read the same one in pieces. */
static struct slot {
  uint64_t index; /* chunk index + 1; 0: empty */
  unsigned char *data;
  size_t len;
} cache[CACHE_SLOTS];
static size_t cache_next;
static pthread_mutex_t cache_mu = PTHREAD_MUTEX_INITIALIZER;
static atomic_uint_least64_t chunk_reads;
static unsigned char *seen; /* a bit per chunk: read at least once */
static atomic_uint_least64_t distinct;

static void plugin_load(void) { vm_init("nbdkit-vmbackup-plugin"); }

static int plugin_config(const char *key, const char *value)
{
  char **dst = !strcmp(key, "repo") ? &repo_path : !strcmp(key, "snapshot") ? &snapshot
               : !strcmp(key, "disk") ? &disk_name : !strcmp(key, "passphrase-file") ? &passfile
               : !strcmp(key, "stats") ? &stats_path : NULL;
  if (!dst) {
    nbdkit_error("unknown parameter '%s' (repo, snapshot, disk, passphrase-file, stats)", key);
    return -1;
  }
  free(*dst);
  *dst = strdup(value);
  return *dst ? 0 : -1;
}

static int plugin_config_complete(void)
{
  if (!repo_path || !snapshot) {
    nbdkit_error("repo= and snapshot= are needed");
    return -1;
  }
  /* Opened here, so that a wrong passphrase or snapshot fails before nbdkit
   * serves; locked after nbdkit forks (the lock's thread would not survive it). */
  if (vb_repo_open(repo_path, passfile, VB_LOCK_NONE, 0, &repo)) {
    nbdkit_error("%s", vm_last_error());
    return -1;
  }
  char *id = NULL;
  if (vb_snapshot_resolve(repo, snapshot, &id) || vb_snapshot_get(repo, id, &man)) {
    nbdkit_error("%s", vm_last_error());
    free(id);
    return -1;
  }
  free(id);
  for (size_t i = 0; i < man.ndisks && !disk; i++)
    if (!disk_name || !strcmp(man.disks[i].target, disk_name)) disk = &man.disks[i];
  if (!disk) {
    nbdkit_error("snapshot %.12s has no disk '%s'", man.snapshot, disk_name);
    return -1;
  }
  chunk_size = repo->cfg.chunk_size;
  seen = calloc(disk->nchunks / 8 + 1, 1);
  for (size_t i = 0; i < CACHE_SLOTS; i++) cache[i].data = malloc(chunk_size);
  return seen ? 0 : -1;
}

#include "fs.h"

static int plugin_after_fork(void)
{
  /* The shared lock: no prune or compact removes a pack while it is served. The
   * index is read again under it. */
  if (vb_fs_lock(repo->fs, false, 0) || vb_repo_load_index(repo, false)) {
    nbdkit_error("%s", vm_last_error());
    return -1;
  }
  return 0;
}

static void plugin_unload(void)
{
  if (stats_path && disk) {
    FILE *f = fopen(stats_path, "w");
    if (f) {
      fprintf(f, "{\"chunk_reads\":%llu,\"chunks_read\":%llu,\"chunks\":%zu,\"chunk_size\":%u,\"disk_size\":%llu}\n",
              (unsigned long long)atomic_load(&chunk_reads), (unsigned long long)atomic_load(&distinct),
              disk->nchunks, chunk_size, (unsigned long long)disk->size);
      fclose(f);
    }
  }
  for (size_t i = 0; i < CACHE_SLOTS; i++) free(cache[i].data);
  free(seen);
  if (repo) vb_manifest_free(&man);
  vb_repo_close(repo);
  free(repo_path);
  free(snapshot);
  free(disk_name);
  free(passfile);
  free(stats_path);
}

static void *plugin_open(int readonly) { return &man; }

static int64_t plugin_get_size(void *h) { return (int64_t)disk->size; }
static int plugin_can_write(void *h) { return 0; }
static int plugin_can_multi_conn(void *h) { return 1; }
static int plugin_can_extents(void *h) { return 1; }
static int plugin_can_cache(void *h) { return NBDKIT_CACHE_NONE; }

/* Copies [off, off+n) of chunk ci into dst. */
static int chunk_copy(uint64_t ci, uint64_t off, size_t n, unsigned char *dst)
{
  if (vb_manifest_hole(disk, ci)) {
    memset(dst, 0, n);
    return 0;
  }
  pthread_mutex_lock(&cache_mu);
  for (size_t i = 0; i < CACHE_SLOTS; i++)
    if (cache[i].index == ci + 1) {
      memcpy(dst, cache[i].data + off, n);
      pthread_mutex_unlock(&cache_mu);
      return 0;
    }
  pthread_mutex_unlock(&cache_mu);
  unsigned char *buf = malloc(chunk_size);
  if (!buf) {
    nbdkit_error("out of memory");
    errno = ENOMEM;
    return -1;
  }
  size_t got;
  const char *why = NULL;
  int rc = vb_repo_read_chunk(repo, disk->ids[ci], buf, chunk_size, &got, &why);
  uint64_t want = disk->size - ci * chunk_size < chunk_size ? disk->size - ci * chunk_size : chunk_size;
  if (rc == 0 && got != want) rc = VM_EXIT_VERIFY, why = "a chunk's length differs from the disk's";
  if (rc) {
    /* Never bytes that failed their check: an I/O error for the reader. */
    nbdkit_error("snapshot %.12s, disk %s, chunk at %llu: %s", man.snapshot, disk->target,
                 (unsigned long long)(ci * chunk_size), why);
    free(buf);
    errno = EIO;
    return -1;
  }
  atomic_fetch_add(&chunk_reads, 1);
  pthread_mutex_lock(&cache_mu);
  if (!(seen[ci / 8] & (1u << (ci % 8)))) {
    seen[ci / 8] |= (unsigned char)(1u << (ci % 8));
    atomic_fetch_add(&distinct, 1);
  }
  memcpy(dst, buf + off, n);
  struct slot *s = &cache[cache_next++ % CACHE_SLOTS];
  unsigned char *old = s->data;
  s->data = buf;
  s->len = got;
  s->index = ci + 1;
  pthread_mutex_unlock(&cache_mu);
  free(old);
  return 0;
}

static int plugin_pread(void *h, void *buf, uint32_t count, uint64_t offset, uint32_t flags)
{
  unsigned char *dst = buf;
  while (count) {
    uint64_t ci = offset / chunk_size, off = offset % chunk_size;
    size_t n = chunk_size - off < count ? chunk_size - off : count;
    if (chunk_copy(ci, off, n, dst) < 0) return -1;
    dst += n;
    offset += n;
    count -= (uint32_t)n;
  }
  return 0;
}

static int plugin_extents(void *h, uint32_t count, uint64_t offset, uint32_t flags, struct nbdkit_extents *ext)
{
  uint64_t end = offset + count;
  for (uint64_t ci = offset / chunk_size; ci * chunk_size < end && ci < disk->nchunks; ci++) {
    uint64_t a = ci * chunk_size, b = a + chunk_size > disk->size ? disk->size : a + chunk_size;
    if (nbdkit_add_extent(ext, a, b - a, vb_manifest_hole(disk, ci) ? NBDKIT_EXTENT_HOLE | NBDKIT_EXTENT_ZERO : 0) < 0)
      return -1;
    if (flags & NBDKIT_FLAG_REQ_ONE) break;
  }
  return 0;
}

static struct nbdkit_plugin plugin = {
  .name = "vmbackup",
  .longname = "a disk of a vmbackup snapshot",
  .version = VMKIT_VERSION,
  .description = "Serves one disk of a vmbackup snapshot, read-only.",
  .load = plugin_load,
  .unload = plugin_unload,
  .config = plugin_config,
  .config_complete = plugin_config_complete,
  .after_fork = plugin_after_fork,
  .config_help = "repo=PATH snapshot=ID [disk=TARGET] [passphrase-file=FILE] [stats=FILE]",
  .open = plugin_open,
  .get_size = plugin_get_size,
  .can_write = plugin_can_write,
  .can_multi_conn = plugin_can_multi_conn,
  .can_extents = plugin_can_extents,
  .can_cache = plugin_can_cache,
  .pread = plugin_pread,
  .extents = plugin_extents,
};

NBDKIT_REGISTER_PLUGIN(plugin)
