/* The chunk store of a vmbackup repository: config and key, indexes, pack files,
 * manifests (man/vmbackup-repository.5). Every file is written under tmp/ with
 * a name of its writer's lock, flushed, then linked or renamed into place and
 * its folder flushed, so that a kill at any instant leaves every earlier
 * snapshot whole. */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "fs.h"
#include "rlock.h"
#include "store.h"

static const char pack_magic[8] = { 'V', 'M', 'K', 'P', 'A', 'C', 'K', '1' };
static const char mani_magic[8] = { 'V', 'M', 'K', 'M', 'A', 'N', 'I', '1' };
#define PACK_HEAD (8 + VB_PACK_ID_LEN)
#define CONFIG_MAX (64u << 10)

static void put32(unsigned char *p, uint32_t v)
{
  for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get32(const unsigned char *p)
{
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

void vb_hex16(const unsigned char id[16], char out[33])
{
  static const char d[] = "0123456789abcdef";
  for (int i = 0; i < 16; i++) {
    out[2 * i] = d[id[i] >> 4];
    out[2 * i + 1] = d[id[i] & 15];
  }
  out[32] = 0;
}

int vb_unhex16(const char *s, unsigned char id[16])
{
  if (strlen(s) != 32) return -1;
  for (int i = 0; i < 32; i++) {
    char c = s[i];
    int v = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    if (v < 0) return -1;
    if (i % 2 == 0) id[i / 2] = (unsigned char)(v << 4);
    else id[i / 2] |= (unsigned char)v;
  }
  return 0;
}

char *vb_repo_file(const struct vb_repo *r, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  char *rel = NULL;
  if (vasprintf(&rel, fmt, ap) < 0) abort();
  va_end(ap);
  char *p = vm_strdup_printf("%s/%s", r->shown, rel);
  free(rel);
  return p;
}

/* A path inside the repository (fs.h). */
static char *rel_of(const char *fmt, ...) VM_PRINTF(1, 2);
static char *rel_of(const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  char *rel = NULL;
  if (vasprintf(&rel, fmt, ap) < 0) abort();
  va_end(ap);
  return rel;
}

/* ---- The table of chunks: open addressing on the id's first bytes ------------------- */

struct tentry {
  unsigned char id[VB_ID_LEN];
  unsigned char pack[VB_PACK_ID_LEN];
  uint64_t offset;
  uint32_t reclen, rawlen;
  uint8_t used; /* 0 free, 1 in place, 2 claimed by this run */
};

struct vb_table {
  struct tentry *v;
  size_t cap, n;
};

static size_t slot_of(const struct vb_table *t, const unsigned char *id)
{
  uint64_t h;
  memcpy(&h, id, sizeof h); /* ids are keyed hashes: their bytes are uniform */
  return (size_t)h & (t->cap - 1);
}

static struct tentry *table_find(const struct vb_table *t, const unsigned char *id)
{
  if (!t->cap) return NULL;
  for (size_t i = slot_of(t, id);; i = (i + 1) & (t->cap - 1)) {
    if (!t->v[i].used) return NULL;
    if (memcmp(t->v[i].id, id, VB_ID_LEN) == 0) return &t->v[i];
  }
}

static struct tentry *table_add(struct vb_table *t, const unsigned char *id)
{
  if ((t->n + 1) * 4 > t->cap * 3) {
    size_t ncap = t->cap ? t->cap * 2 : 1024;
    struct tentry *old = t->v;
    size_t ocap = t->cap;
    t->v = calloc(ncap, sizeof *t->v);
    if (!t->v) abort();
    t->cap = ncap;
    for (size_t i = 0; i < ocap; i++)
      if (old[i].used) {
        size_t j = slot_of(t, old[i].id);
        while (t->v[j].used) j = (j + 1) & (t->cap - 1);
        t->v[j] = old[i];
      }
    free(old);
  }
  size_t i = slot_of(t, id);
  for (; t->v[i].used; i = (i + 1) & (t->cap - 1))
    if (memcmp(t->v[i].id, id, VB_ID_LEN) == 0) return &t->v[i];
  memcpy(t->v[i].id, id, VB_ID_LEN);
  t->n++;
  return &t->v[i];
}

/* ---- Passphrase, create, open ------------------------------------------------------------ */

int vb_passphrase(const char *file, char **pass, size_t *len)
{
  *pass = NULL;
  *len = 0;
  if (file) {
    size_t n;
    char *text = vm_read_file(file, 4096, &n);
    if (!text) return vm_fail_errno(VM_EXIT_NOTFOUND, "cannot read passphrase file '%s'", file);
    size_t l = strcspn(text, "\n");
    if (l == 0) {
      OPENSSL_clear_free(text, n + 1);
      return vm_fail(VM_EXIT_USAGE, "passphrase file '%s' holds an empty first line", file);
    }
    char *p = strndup(text, l);
    OPENSSL_clear_free(text, n + 1);
    if (!p) abort();
    *pass = p;
    *len = l;
    return 0;
  }
  const char *env = getenv("VMKIT_PASSPHRASE");
  if (!env) return 1;
  if (!*env) return vm_fail(VM_EXIT_USAGE, "VMKIT_PASSPHRASE is empty");
  *pass = vm_strdup(env);
  *len = strlen(env);
  return 0;
}

void vb_passphrase_free(char *pass, size_t len)
{
  if (pass) OPENSSL_cleanse(pass, len);
  free(pass);
}

static const char *const subdirs[] = { "packs", "index", "snapshots", "locks", "tmp", NULL };

int vb_repo_create(const char *path, const struct vb_config *cfg)
{
  struct vb_fs *fs;
  int rc = vb_fs_open(path, &fs);
  if (rc) return rc;
  rc = 0;
  bool made = false;
  uint64_t size;
  if (vb_fs_mkdir(fs, "") == 0) made = true;
  else if (errno != EEXIST) rc = vm_fail_errno(VM_EXIT_FAIL, "cannot make repository folder '%s'", path);
  else if (vb_fs_size(fs, "config", &size) == 0) rc = vm_fail(VM_EXIT_STATE, "'%s' is a repository already", path);
  if (!made && !rc) {
    struct vm_strv names = { 0 };
    bool empty = vb_fs_list(fs, "", &names) == 0;
    if (!empty) rc = vm_fail(VM_EXIT_STATE, "'%s' exists and is not a folder", path);
    /* The layout's empty folders without a config: a killed init, made again. */
    for (size_t i = 0; i < names.n && !rc; i++) {
      bool layout = false;
      for (size_t j = 0; subdirs[j]; j++) layout |= !strcmp(names.v[i], subdirs[j]);
      if (!layout) empty = false;
    }
    vm_strv_free(&names);
    /* Each of them empty (listed: an append-only server removes nothing), but
     * for what a killed init leaves: its shared lock, and its tmp/ config, the
     * writer of each dead. */
    for (size_t i = 0; subdirs[i] && empty && !rc; i++) {
      struct vm_strv in = { 0 };
      bool locks = !strcmp(subdirs[i], "locks"), tmp = !strcmp(subdirs[i], "tmp");
      if (vb_fs_list(fs, subdirs[i], &in) < 0) empty = false;
      for (size_t k = 0; k < in.n && empty; k++) {
        const char *e = in.v[k];
        size_t span = vb_lock_name_span(e);
        bool dead = span && (locks ? e[span] == 0 && !strncmp(e, "shared.", 7) : tmp && !strcmp(e + span, ".config"));
        if (dead) {
          CLEANUP_FREE char *owner = strndup(e, span);
          if (!owner) abort();
          dead = !vb_fs_name_alive(fs, owner);
        }
        if (!dead) empty = false;
      }
      vm_strv_free(&in);
    }
    if (!empty && !rc) rc = vm_fail(VM_EXIT_STATE, "'%s' is not empty", path);
  }
  for (size_t i = 0; subdirs[i] && !rc; i++)
    if (vb_fs_mkdir(fs, subdirs[i]) < 0 && errno != EEXIST) rc = vm_fail_errno(VM_EXIT_FAIL, "cannot make '%s/%s'", path, subdirs[i]);
  CLEANUP_FREE char *text = rc ? NULL : vb_config_encode(cfg);
  /* The config last: a folder without one is no repository, and init may run
   * again. Written under a shared lock, whose name its tmp/ file bears; of two
   * inits at once, the second finds the first's config in place. */
  if (!rc) rc = vb_fs_lock(fs, false, 0);
  if (!rc) {
    CLEANUP_FREE char *tmp = rel_of("tmp/%s.config", vb_fs_lock_name(fs));
    if (!text) rc = vm_fail(VM_EXIT_FAIL, "cannot encode the config");
    else if (vb_fs_put(fs, tmp, "config", text, strlen(text), false) < 0)
      rc = errno == EEXIST ? vm_fail(VM_EXIT_STATE, "'%s' is a repository already", path)
                           : vm_fail_errno(VM_EXIT_FAIL, "cannot write '%s/config'", path);
    vb_fs_unlock(fs);
  }
  if (rc && made) {
    for (size_t i = 0; subdirs[i]; i++) vb_fs_rmdir(fs, subdirs[i]);
    vb_fs_rmdir(fs, "");
  }
  vb_fs_close(fs);
  return rc;
}

/* The key's derivation on its own thread (vb_repo_open_deferred). */
struct vb_keyjob {
  pthread_t tid;
  struct vb_repo *r;
  char *pass;
  size_t plen;
  char aad[VB_CONFIG_AAD_MAX];
  int u; /* vb_key_unwrap's */
};

static void *keyjob_run(void *p)
{
  struct vb_keyjob *j = p;
  j->u = vb_key_unwrap(j->r->cfg.wrapped, j->pass, j->plen, &j->r->cfg.kdf, j->aad, &j->r->keys);
  vb_passphrase_free(j->pass, j->plen);
  j->pass = NULL;
  return NULL;
}

static int unwrap_failed(struct vb_repo *r, int u)
{
  if (u > 0) return vm_fail(VM_EXIT_FAIL, "repository '%s': wrong passphrase (or its key or parameters were altered)",
                            r->shown);
  return vm_fail(VM_EXIT_FAIL, "repository '%s': cannot derive the key (out of memory?)", r->shown);
}

int vb_repo_key(struct vb_repo *r)
{
  if (!r->keyjob) return r->key_rc;
  pthread_join(r->keyjob->tid, NULL);
  int u = r->keyjob->u;
  OPENSSL_cleanse(r->keyjob, sizeof *r->keyjob);
  free(r->keyjob);
  r->keyjob = NULL;
  if (u != 0) r->key_rc = unwrap_failed(r, u);
  return r->key_rc;
}

static int repo_open(const char *path, const char *passfile, enum vb_lockmode lock, int wait_s, bool defer,
                     struct vb_repo **out)
{
  *out = NULL;
  struct vb_fs *fs;
  int rc = vb_fs_open(path, &fs);
  if (rc) return rc;
  size_t len;
  CLEANUP_FREE char *text = vb_fs_read(fs, "config", CONFIG_MAX, &len);
  if (!text) {
    int e = errno;
    vb_fs_close(fs);
    errno = e;
    if (e == ENOENT) return vm_fail(VM_EXIT_NOTFOUND, "no repository at '%s' (no config file)", path);
    return vm_fail_errno(e == EFBIG ? VM_EXIT_VERIFY : VM_EXIT_FAIL, "cannot read '%s/config'", path);
  }
  struct vb_repo *r = calloc(1, sizeof *r);
  if (!r) abort();
  r->fs = fs;
  r->path = vm_strdup(path);
  r->shown = vm_strdup(path);
  r->pack_fd = -1;
  r->table = calloc(1, sizeof *r->table);
  if (!r->table) abort();
  pthread_mutex_init(&r->mu, NULL);
  pthread_mutex_init(&r->fdmu, NULL);
  const char *why;
  if (vb_config_parse(text, len, &r->cfg, &why) < 0) {
    vb_repo_close(r);
    return vm_fail(VM_EXIT_VERIFY, "repository '%s': config: %s", path, why);
  }
  char *pass;
  size_t plen;
  rc = vb_passphrase(passfile, &pass, &plen);
  if (rc > 1) {
    vb_repo_close(r);
    return rc;
  }
  if (r->cfg.encrypted) {
    if (rc == 1) {
      vb_repo_close(r);
      return vm_fail(VM_EXIT_USAGE, "repository '%s' is encrypted: give its passphrase with --passphrase-file or "
                                    "VMKIT_PASSPHRASE", path);
    }
    struct vb_keyjob *j = defer ? calloc(1, sizeof *j) : NULL;
    if (j) {
      j->r = r;
      j->pass = pass;
      j->plen = plen;
      vb_config_aad(&r->cfg, j->aad);
      /* Signals are the main thread's (vm_interrupted, the lock wait's alarm). */
      sigset_t all, old;
      sigfillset(&all);
      pthread_sigmask(SIG_BLOCK, &all, &old);
      if (pthread_create(&j->tid, NULL, keyjob_run, j) == 0) r->keyjob = j;
      pthread_sigmask(SIG_SETMASK, &old, NULL);
      if (!r->keyjob) free(j); /* no thread: derived here, below */
    }
    if (!r->keyjob) {
      char aad[VB_CONFIG_AAD_MAX];
      vb_config_aad(&r->cfg, aad);
      int u = vb_key_unwrap(r->cfg.wrapped, pass, plen, &r->cfg.kdf, aad, &r->keys);
      vb_passphrase_free(pass, plen);
      if (u != 0) {
        rc = unwrap_failed(r, u);
        vb_repo_close(r);
        return rc;
      }
    }
  } else {
    if (rc == 0) {
      vb_passphrase_free(pass, plen);
      vb_repo_close(r);
      return vm_fail(VM_EXIT_STATE, "repository '%s' is not encrypted, but a passphrase was given: refusing (its "
                                    "config may have been altered; unset VMKIT_PASSPHRASE to use it as it is)",
                     path);
    }
    vb_keys_new(&r->keys, false);
  }
  if (lock != VB_LOCK_NONE) {
    rc = vb_fs_lock(r->fs, lock == VB_LOCK_EXCLUSIVE, wait_s);
    if (rc) {
      vb_repo_close(r);
      return rc;
    }
  }
  *out = r;
  return 0;
}

int vb_repo_open(const char *path, const char *passfile, enum vb_lockmode lock, int wait_s, struct vb_repo **out)
{
  return repo_open(path, passfile, lock, wait_s, false, out);
}

int vb_repo_open_deferred(const char *path, const char *passfile, enum vb_lockmode lock, int wait_s,
                          struct vb_repo **out)
{
  return repo_open(path, passfile, lock, wait_s, true, out);
}

struct vb_packfd {
  unsigned char id[VB_PACK_ID_LEN];
  int fd;
  uint64_t size;
};

void vb_repo_close(struct vb_repo *r)
{
  if (!r) return;
  if (r->keyjob) {
    /* Joined without a word: the run ends for another reason. */
    pthread_join(r->keyjob->tid, NULL);
    OPENSSL_cleanse(r->keyjob, sizeof *r->keyjob);
    free(r->keyjob);
    r->keyjob = NULL;
  }
  /* An unfinished pack: this run failed; its file goes. */
  if (r->pack_fd >= 0) vb_fs_abort(r->fs, r->pack_fd);
  free(r->pack_tmp);
  free(r->pack_e);
  free(r->written);
  for (size_t i = 0; i < r->nfds; i++) vb_fs_rclose(r->fs, r->fds[i].fd);
  free(r->fds);
  vb_fs_unmap(r->fs, r->merged_map, r->merged_len);
  if (r->table) free(r->table->v);
  free(r->table);
  vb_fs_close(r->fs);
  vb_keys_wipe(&r->keys);
  OPENSSL_cleanse(&r->cfg, sizeof r->cfg);
  pthread_mutex_destroy(&r->mu);
  pthread_mutex_destroy(&r->fdmu);
  free(r->path);
  free(r->shown);
  free(r);
}

/* ---- Indexes ----------------------------------------------------------------------------- */

static int by_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void table_put(struct vb_repo *r, const struct vb_ientry *e)
{
  struct tentry *t = table_add(r->table, e->id);
  if (t->used == 1) return; /* two copies: either serves */
  memcpy(t->pack, e->pack, VB_PACK_ID_LEN);
  t->offset = e->offset;
  t->reclen = e->reclen;
  t->rawlen = e->rawlen;
  t->used = 1;
}

/* The largest record a chunk of this repository can be. */
static size_t rec_max(const struct vb_repo *r) { return vb_seal_bound(r->cfg.chunk_size); }

static bool entry_sane(const struct vb_repo *r, const struct vb_ientry *e)
{
  return e->reclen >= VB_REC_HEAD + VB_TAG_LEN && e->reclen <= rec_max(r) && e->rawlen >= 1 &&
         e->rawlen <= r->cfg.chunk_size && e->offset >= PACK_HEAD;
}

int vb_pack_scan(struct vb_repo *r, const char *hex, unsigned char **bufp, size_t *lenp, struct vb_ientry **ep,
                 size_t *np, const char **why)
{
  *ep = NULL;
  *np = 0;
  if (bufp) *bufp = NULL;
  CLEANUP_FREE char *pf = rel_of("packs/%.2s/%s", hex, hex);
  size_t len;
  unsigned char *buf = (unsigned char *)vb_fs_read(r->fs, pf, 1u << 30, &len);
  if (!buf) return *why = strerror(errno), VM_EXIT_FAIL;
  unsigned char pid[VB_PACK_ID_LEN];
  if (vb_unhex16(hex, pid) < 0 || len < PACK_HEAD || memcmp(buf, pack_magic, 8) != 0 ||
      memcmp(buf + 8, pid, VB_PACK_ID_LEN) != 0) {
    free(buf);
    return *why = "its header is not a pack's of that ID", VM_EXIT_VERIFY;
  }
  struct vb_ientry *e = NULL;
  size_t n = 0, cap = 0;
  uint64_t off = PACK_HEAD;
  while (off < len) {
    if (len - off < 4) break;
    uint32_t rl = get32(buf + off);
    if (rl < VB_REC_HEAD + VB_TAG_LEN || rl > rec_max(r) || rl > len - off - 4) break;
    const unsigned char *rec = buf + off + 4;
    if (n == cap) {
      cap = cap ? cap * 2 : 256;
      e = realloc(e, cap * sizeof *e);
      if (!e) abort();
    }
    memset(&e[n], 0, sizeof e[n]);
    memcpy(e[n].id, rec + 2, VB_ID_LEN);
    memcpy(e[n].pack, pid, VB_PACK_ID_LEN);
    e[n].offset = off;
    e[n].reclen = rl;
    e[n].rawlen = get32(rec + 2 + VB_ID_LEN);
    n++;
    off += 4 + (uint64_t)rl;
  }
  *ep = e;
  *np = n;
  if (bufp) {
    *bufp = buf;
    *lenp = len;
  } else {
    free(buf);
  }
  if (off != len) return *why = "a record runs past its end, or is out of range", VM_EXIT_VERIFY;
  return 0;
}

static int by_entry_id(const void *a, const void *b) { return memcmp(a, b, VB_ID_LEN); }

/* An index this run wrote that was there already: the same bytes (another run
 * indexed the same pack), else another client wrote it first, and it may not
 * describe the pack: refused. */
static int index_exists(struct vb_repo *r, const char *rel, const unsigned char *ix, size_t ixlen)
{
  size_t len;
  CLEANUP_FREE char *old = vb_fs_read(r->fs, rel, ixlen + 1, &len);
  if (old && len == ixlen && memcmp(old, ix, ixlen) == 0) return 0;
  return vm_fail(VM_EXIT_VERIFY, "index '%s/%s' is there already with other content (written by another client?): "
                                 "run 'vmbackup check'", r->shown, rel);
}

/* Makes a pack's index from its records' heads (a pack that a killed writer
 * put in place before its index). */
static int reindex_pack(struct vb_repo *r, const char *hex)
{
  struct vb_ientry *e;
  size_t n;
  const char *why;
  int rc = vb_pack_scan(r, hex, NULL, NULL, &e, &n, &why);
  if (rc) {
    free(e);
    return vm_fail(rc, "pack %s: %s; run 'vmbackup check'", hex, why);
  }
  /* A chunk twice in one pack (two threads raced): the first copy serves. */
  if (n) qsort(e, n, sizeof *e, by_entry_id);
  size_t k = 0;
  for (size_t i = 0; i < n; i++)
    if (k == 0 || memcmp(e[k - 1].id, e[i].id, VB_ID_LEN) != 0) e[k++] = e[i];
  n = k;
  unsigned char pid[VB_PACK_ID_LEN];
  vb_unhex16(hex, pid);
  unsigned char *ix;
  size_t ixlen;
  if (vb_index_encode(false, pid, e, n, NULL, 0, &ix, &ixlen, &why) < 0) {
    free(e);
    return vm_fail(VM_EXIT_VERIFY, "pack %s: %s", hex, why);
  }
  free(e);
  CLEANUP_FREE char *tmp = rel_of("tmp/%s.%s.index", vb_fs_lock_name(r->fs), hex);
  CLEANUP_FREE char *dst = rel_of("index/%s", hex);
  rc = vb_fs_put(r->fs, tmp, dst, ix, ixlen, false);
  if (rc < 0 && errno == EEXIST) rc = index_exists(r, dst, ix, ixlen);
  else if (rc < 0) rc = vm_fail_errno(VM_EXIT_FAIL, "cannot write index '%s/%s'", r->shown, dst);
  free(ix);
  if (rc) return rc;
  vm_info("indexed pack %s again (its writer was killed before writing its index)", hex);
  return 0;
}

/* Removes what dead writers left in tmp/: files named for a lock that is gone. */
static void clean_tmp(struct vb_repo *r)
{
  struct vm_strv names = { 0 };
  vb_fs_list(r->fs, "tmp", &names);
  for (size_t i = 0; i < names.n; i++) {
    size_t span = vb_lock_name_span(names.v[i]);
    if (!span) continue; /* not a writer's file: left alone */
    CLEANUP_FREE char *owner = strndup(names.v[i], span);
    if (!owner) abort();
    if (strcmp(owner, vb_fs_lock_name(r->fs)) == 0 || vb_fs_name_alive(r->fs, owner)) continue;
    CLEANUP_FREE char *f = rel_of("tmp/%s", names.v[i]);
    if (vb_fs_unlink(r->fs, f) == 0) vm_debug("removed '%s/%s', left by a writer that is gone", r->shown, f);
  }
  vm_strv_free(&names);
}

static int load_index_file(struct vb_repo *r, const char *rel, const unsigned char *pack)
{
  size_t len;
  CLEANUP_FREE unsigned char *buf = (unsigned char *)vb_fs_read(r->fs, rel, 1u << 30, &len);
  CLEANUP_FREE char *path = vm_strdup_printf("%s/%s", r->shown, rel);
  if (!buf) {
    if (errno == ENOENT) return 1;
    return vm_fail_errno(VM_EXIT_FAIL, "cannot read index '%s'", path);
  }
  struct vb_index ix;
  const char *why;
  if (vb_index_check(buf, len, &ix, &why) < 0 || ix.merged || memcmp(ix.pack, pack, VB_PACK_ID_LEN) != 0)
    return vm_fail(VM_EXIT_VERIFY, "index '%s' is damaged: %s; run 'vmbackup check', then 'vmbackup check --repair'", path,
                   ix.merged ? "a merged index in a pack's place" : why);
  for (size_t i = 0; i < ix.n; i++) {
    struct vb_ientry e;
    vb_index_entry(&ix, i, &e);
    table_put(r, &e);
  }
  return 0;
}

int vb_repo_load_index(struct vb_repo *r, bool repair)
{
  /* Loaded again (after a repair, a merge): from scratch. */
  vb_fs_unmap(r->fs, r->merged_map, r->merged_len);
  r->merged_map = NULL;
  r->merged_n = 0;
  struct tentry *old = r->table->v;
  size_t ocap = r->table->cap;
  r->table->v = NULL;
  r->table->cap = r->table->n = 0;
  for (size_t i = 0; i < ocap; i++)
    if (old[i].used == 2) *table_add(r->table, old[i].id) = old[i]; /* claims of this run stay */
  free(old);
  if (repair && *vb_fs_lock_name(r->fs)) clean_tmp(r);
  struct vm_strv names = { 0 };
  if (vb_fs_list(r->fs, "index", &names) < 0) return vm_fail_errno(VM_EXIT_FAIL, "cannot read '%s/index'", r->shown);
  /* The newest merged index. */
  unsigned best = 0;
  for (size_t i = 0; i < names.n; i++) {
    unsigned long n;
    char *end;
    if (strncmp(names.v[i], "merged.", 7) == 0 && (n = strtoul(names.v[i] + 7, &end, 10)) > best && !*end &&
        n < 1000000000)
      best = (unsigned)n;
  }
  if (best) {
    CLEANUP_FREE char *mrel = rel_of("index/merged.%u", best);
    CLEANUP_FREE char *mf = vm_strdup_printf("%s/%s", r->shown, mrel);
    size_t mlen = 0;
    void *m = vb_fs_map(r->fs, mrel, SIZE_MAX / 2, &mlen);
    if (!m && errno != EINVAL) {
      vm_strv_free(&names);
      return vm_fail_errno(VM_EXIT_FAIL, "cannot read '%s'", mf);
    }
    const char *why = "empty";
    if (!m || vb_index_check(m, mlen, &r->merged, &why) < 0 || !r->merged.merged) {
      vb_fs_unmap(r->fs, m, mlen);
      vm_strv_free(&names);
      return vm_fail(VM_EXIT_VERIFY, "index '%s' is damaged: %s; run 'vmbackup check', then 'vmbackup check --repair'", mf, why);
    }
    r->merged_map = m;
    r->merged_len = mlen;
    r->merged_n = best;
  }
  /* Every pack's own index that the merged one does not cover. */
  for (size_t i = 0; i < names.n; i++) {
    unsigned char pid[VB_PACK_ID_LEN];
    if (vb_unhex16(names.v[i], pid) < 0) continue;
    if (r->merged_n && vb_index_covers(&r->merged, pid)) continue;
    CLEANUP_FREE char *f = rel_of("index/%s", names.v[i]);
    int rc = load_index_file(r, f, pid);
    if (rc > 1 || rc < 0) {
      vm_strv_free(&names);
      return rc;
    }
  }
  /* Packs in place without an index: a writer killed between the two renames. */
  if (repair) {
    struct vm_strv sub = { 0 };
    vb_fs_list(r->fs, "packs", &sub);
    for (size_t i = 0; i < sub.n; i++) {
      if (strlen(sub.v[i]) != 2) continue;
      CLEANUP_FREE char *sd = rel_of("packs/%s", sub.v[i]);
      struct vm_strv packs = { 0 };
      vb_fs_list(r->fs, sd, &packs);
      for (size_t j = 0; j < packs.n; j++) {
        unsigned char pid[VB_PACK_ID_LEN];
        if (vb_unhex16(packs.v[j], pid) < 0) continue;
        if (r->merged_n && vb_index_covers(&r->merged, pid)) continue;
        if (bsearch(&packs.v[j], names.v, names.n, sizeof *names.v, by_str)) continue;
        int rc = reindex_pack(r, packs.v[j]);
        CLEANUP_FREE char *f = rel_of("index/%s", packs.v[j]);
        if (rc == 0) rc = load_index_file(r, f, pid);
        if (rc) {
          vm_strv_free(&packs);
          vm_strv_free(&sub);
          vm_strv_free(&names);
          return rc;
        }
      }
      vm_strv_free(&packs);
    }
    vm_strv_free(&sub);
  }
  vm_strv_free(&names);
  return 0;
}

bool vb_repo_lookup(struct vb_repo *r, const unsigned char id[VB_ID_LEN], struct vb_ientry *e)
{
  pthread_mutex_lock(&r->mu);
  struct tentry *t = table_find(r->table, id);
  bool found = t && t->used == 1;
  if (found) {
    memcpy(e->id, t->id, VB_ID_LEN);
    memcpy(e->pack, t->pack, VB_PACK_ID_LEN);
    e->offset = t->offset;
    e->reclen = t->reclen;
    e->rawlen = t->rawlen;
  }
  pthread_mutex_unlock(&r->mu);
  if (!found && r->merged_n) found = vb_index_find(&r->merged, id, e);
  return found;
}

bool vb_repo_claim(struct vb_repo *r, const unsigned char id[VB_ID_LEN])
{
  struct vb_ientry e;
  if (r->merged_n && vb_index_find(&r->merged, id, &e)) return true;
  pthread_mutex_lock(&r->mu);
  struct tentry *t = table_add(r->table, id);
  bool had = t->used != 0;
  if (!had) t->used = 2;
  pthread_mutex_unlock(&r->mu);
  return had;
}

/* ---- Writing packs ------------------------------------------------------------------------- */

static int pack_begin(struct vb_repo *r)
{
  if (RAND_bytes(r->pack_id, sizeof r->pack_id) != 1) return vm_fail(VM_EXIT_FAIL, "no randomness for a pack ID");
  char hex[33];
  vb_hex16(r->pack_id, hex);
  free(r->pack_tmp);
  r->pack_tmp = rel_of("tmp/%s.%s.pack", vb_fs_lock_name(r->fs), hex);
  r->pack_fd = vb_fs_create(r->fs, r->pack_tmp);
  if (r->pack_fd < 0) return vm_fail_errno(VM_EXIT_FAIL, "cannot write '%s/%s'", r->shown, r->pack_tmp);
  unsigned char head[PACK_HEAD];
  memcpy(head, pack_magic, 8);
  memcpy(head + 8, r->pack_id, VB_PACK_ID_LEN);
  if (vb_fs_write(r->fs, r->pack_fd, head, sizeof head) < 0)
    return vm_fail_errno(VM_EXIT_FAIL, "cannot write '%s/%s'", r->shown, r->pack_tmp);
  r->pack_size = PACK_HEAD;
  r->pack_n = 0;
  return 0;
}

/* Flushes the pack, renames it into packs/XX/, writes its index. With r->mu held. */
static int pack_end(struct vb_repo *r)
{
  if (r->pack_fd < 0) return 0;
  char hex[33];
  vb_hex16(r->pack_id, hex);
  CLEANUP_FREE char *dst = rel_of("packs/%.2s/%s", hex, hex);
  int fd = r->pack_fd;
  r->pack_fd = -1;
  /* Flushed, put in place (its folder made when it is the first there). */
  if (vb_fs_commit(r->fs, fd, dst, false) < 0)
    return vm_fail_errno(VM_EXIT_FAIL, "cannot put pack '%s/%s' in place%s%s", r->shown, dst,
                         *vb_fs_error(r->fs) ? ": " : "", vb_fs_error(r->fs));
  unsigned char *ix;
  size_t ixlen;
  const char *why;
  if (vb_index_encode(false, r->pack_id, r->pack_e, r->pack_n, NULL, 0, &ix, &ixlen, &why) < 0)
    return vm_fail(VM_EXIT_FAIL, "cannot index pack %s: %s", hex, why);
  CLEANUP_FREE char *tmp = rel_of("tmp/%s.%s.index", vb_fs_lock_name(r->fs), hex);
  CLEANUP_FREE char *idst = rel_of("index/%s", hex);
  int rc = vb_fs_put(r->fs, tmp, idst, ix, ixlen, false);
  if (rc < 0 && errno == EEXIST) rc = index_exists(r, idst, ix, ixlen);
  else if (rc < 0) rc = vm_fail_errno(VM_EXIT_FAIL, "cannot write index '%s/%s'", r->shown, idst);
  free(ix);
  if (rc) return rc;
  r->written = realloc(r->written, (r->nwritten + 1) * sizeof *r->written);
  if (!r->written) abort();
  memcpy(r->written[r->nwritten++], r->pack_id, VB_PACK_ID_LEN);
  /* Its chunks are in place now. */
  for (size_t i = 0; i < r->pack_n; i++) {
    struct tentry *t = table_add(r->table, r->pack_e[i].id);
    memcpy(t->pack, r->pack_id, VB_PACK_ID_LEN);
    t->offset = r->pack_e[i].offset;
    t->reclen = r->pack_e[i].reclen;
    t->rawlen = r->pack_e[i].rawlen;
    t->used = 1;
  }
  r->pack_n = 0;
  return 0;
}

int vb_repo_append(struct vb_repo *r, const unsigned char id[VB_ID_LEN], const unsigned char *rec, size_t reclen,
                   size_t rawlen)
{
  pthread_mutex_lock(&r->mu);
  int rc = 0;
  if (r->write_error) {
    pthread_mutex_unlock(&r->mu);
    return VM_EXIT_FAIL;
  }
  if (r->pack_fd < 0) rc = pack_begin(r);
  unsigned char len[4];
  put32(len, (uint32_t)reclen);
  if (rc == 0 && (vb_fs_write(r->fs, r->pack_fd, len, 4) < 0 || vb_fs_write(r->fs, r->pack_fd, rec, reclen) < 0))
    rc = vm_fail_errno(VM_EXIT_FAIL, "cannot write '%s/%s'", r->shown, r->pack_tmp);
  if (rc == 0) {
    if (r->pack_n == r->pack_cap) {
      r->pack_cap = r->pack_cap ? r->pack_cap * 2 : 512;
      r->pack_e = realloc(r->pack_e, r->pack_cap * sizeof *r->pack_e);
      if (!r->pack_e) abort();
    }
    struct vb_ientry *e = &r->pack_e[r->pack_n++];
    memset(e, 0, sizeof *e);
    memcpy(e->id, id, VB_ID_LEN);
    e->offset = r->pack_size;
    e->reclen = (uint32_t)reclen;
    e->rawlen = (uint32_t)rawlen;
    r->pack_size += 4 + reclen;
    r->new_chunks++;
    r->new_raw += rawlen;
    r->new_stored += 4 + reclen;
    if (r->pack_size >= VB_PACK_TARGET) rc = pack_end(r);
  }
  if (rc) r->write_error = 1;
  pthread_mutex_unlock(&r->mu);
  return rc;
}

int vb_repo_still_locked(struct vb_repo *r)
{
  if (!*vb_fs_lock_name(r->fs) || vb_fs_lock_held(r->fs)) return 0;
  return vm_fail(VM_EXIT_STATE, "this run's lock on '%s' was taken over by another run (thought dead): stopping",
                 r->shown);
}

void vb_repo_fail(struct vb_repo *r)
{
  pthread_mutex_lock(&r->mu);
  r->write_error = 1;
  pthread_mutex_unlock(&r->mu);
}

int vb_repo_flush(struct vb_repo *r)
{
  pthread_mutex_lock(&r->mu);
  int rc = r->write_error ? VM_EXIT_FAIL : pack_end(r);
  if (rc) r->write_error = 1;
  pthread_mutex_unlock(&r->mu);
  return rc;
}

/* ---- Reading chunks ------------------------------------------------------------------------ */

/* An open pack file: kept open for the run (up to FD_KEEP packs); beyond that,
 * *owned is set and the caller closes it. -2: not a pack of that ID. */
#define FD_KEEP 512
static int pack_fd(struct vb_repo *r, const unsigned char *pack, uint64_t *size, bool *owned)
{
  *owned = false;
  pthread_mutex_lock(&r->fdmu);
  for (size_t i = 0; i < r->nfds; i++)
    if (memcmp(r->fds[i].id, pack, VB_PACK_ID_LEN) == 0) {
      int fd = r->fds[i].fd;
      *size = r->fds[i].size;
      pthread_mutex_unlock(&r->fdmu);
      return fd;
    }
  char hex[33];
  vb_hex16(pack, hex);
  CLEANUP_FREE char *f = rel_of("packs/%.2s/%s", hex, hex);
  uint64_t fsize = 0;
  int fd = vb_fs_ropen(r->fs, f, &fsize);
  unsigned char head[PACK_HEAD];
  if (fd >= 0 && (fsize < PACK_HEAD || vb_fs_pread(r->fs, fd, head, sizeof head, 0) < 0 ||
                  memcmp(head, pack_magic, 8) != 0 || memcmp(head + 8, pack, VB_PACK_ID_LEN) != 0)) {
    vb_fs_rclose(r->fs, fd);
    fd = -2;
  }
  if (fd >= 0) {
    *size = fsize;
    if (r->nfds < FD_KEEP) {
      if (!r->fds) r->fds = calloc(FD_KEEP, sizeof *r->fds);
      if (!r->fds) abort();
      memcpy(r->fds[r->nfds].id, pack, VB_PACK_ID_LEN);
      r->fds[r->nfds].fd = fd;
      r->fds[r->nfds].size = *size;
      r->nfds++;
    } else {
      *owned = true;
    }
  }
  pthread_mutex_unlock(&r->fdmu);
  return fd;
}

int vb_repo_read_chunk(struct vb_repo *r, const unsigned char id[VB_ID_LEN], unsigned char *raw, size_t cap,
                       size_t *rawlen, const char **why)
{
  struct vb_ientry e;
  if (!vb_repo_lookup(r, id, &e)) return *why = "no index names it", VM_EXIT_NOTFOUND;
  if (!entry_sane(r, &e)) return *why = "its index entry is out of range", VM_EXIT_VERIFY;
  uint64_t size;
  bool owned;
  int fd = pack_fd(r, e.pack, &size, &owned);
  if (fd == -2) return *why = "its pack is damaged (header)", VM_EXIT_VERIFY;
  if (fd < 0) return *why = errno == ENOENT ? "its pack is missing" : strerror(errno), errno == ENOENT ? VM_EXIT_VERIFY : VM_EXIT_FAIL;
  if (e.offset > size || 4 + (uint64_t)e.reclen > size - e.offset) {
    if (owned) vb_fs_rclose(r->fs, fd);
    return *why = "its record runs past its pack's end", VM_EXIT_VERIFY;
  }
  unsigned char *rec = malloc(4 + (size_t)e.reclen);
  if (!rec) abort();
  int rc = 0;
  if (vb_fs_pread(r->fs, fd, rec, 4 + (size_t)e.reclen, e.offset) < 0) rc = VM_EXIT_FAIL, *why = strerror(errno);
  if (owned) vb_fs_rclose(r->fs, fd);
  if (rc == 0 && get32(rec) != e.reclen) rc = VM_EXIT_VERIFY, *why = "its record's length differs from its index entry";
  if (rc == 0 && vb_open(&r->keys, VB_REC_CHUNK, id, rec + 4, e.reclen, raw, cap, rawlen, why) < 0) rc = VM_EXIT_VERIFY;
  if (rc == 0 && *rawlen != e.rawlen) rc = VM_EXIT_VERIFY, *why = "its length differs from its index entry";
  free(rec);
  return rc;
}

/* ---- Manifests ------------------------------------------------------------------------------- */

static void snap_rec_id(const char *snap, unsigned char id[VB_ID_LEN])
{
  memset(id, 0, VB_ID_LEN);
  vb_unhex16(snap, id);
}

int vb_snapshot_put(struct vb_repo *r, const struct vb_manifest *m)
{
  unsigned char *raw;
  size_t rawlen;
  const char *why;
  if (vb_manifest_encode(m, r->cfg.chunk_size, &raw, &rawlen, &why) < 0)
    return vm_fail(VM_EXIT_FAIL, "cannot write the manifest of snapshot %s: %s", m->snapshot, why);
  unsigned char id[VB_ID_LEN];
  snap_rec_id(m->snapshot, id);
  size_t bound = vb_seal_bound(rawlen), reclen;
  unsigned char *file = malloc(8 + 4 + bound);
  if (!file) abort();
  memcpy(file, mani_magic, 8);
  int rc = vb_seal(&r->keys, r->cfg.zstd_level, VB_REC_MANIFEST, id, raw, rawlen, file + 12, &reclen);
  free(raw);
  if (rc < 0) {
    free(file);
    return vm_fail(VM_EXIT_FAIL, "cannot seal the manifest of snapshot %s", m->snapshot);
  }
  put32(file + 8, (uint32_t)reclen);
  CLEANUP_FREE char *tmp = rel_of("tmp/%s.%s.snapshot", vb_fs_lock_name(r->fs), m->snapshot);
  CLEANUP_FREE char *dst = rel_of("snapshots/%s", m->snapshot);
  int h = vb_fs_create(r->fs, tmp);
  rc = h < 0 || vb_fs_write(r->fs, h, file, 12 + reclen) < 0 ? -1 : 0;
  int e = errno;
  free(file);
  if (rc < 0) {
    if (h >= 0) vb_fs_abort(r->fs, h);
    return errno = e, vm_fail_errno(VM_EXIT_FAIL, "cannot write '%s/%s'", r->shown, tmp);
  }
  /* A writer whose lock was taken over (it was thought dead) puts nothing in
   * place: a prune may be running. */
  if (*vb_fs_lock_name(r->fs) && !vb_fs_lock_held(r->fs)) {
    vb_fs_abort(r->fs, h);
    return vm_fail(VM_EXIT_STATE, "this run's lock on '%s' was taken over by another run; snapshot %s not "
                                  "written (its chunks are left for 'vmbackup compact')", r->shown, m->snapshot);
  }
  if (vb_fs_commit(r->fs, h, dst, false) < 0)
    return vm_fail_errno(VM_EXIT_FAIL, "cannot put snapshot '%s/%s' in place", r->shown, dst);
  return 0;
}

int vb_snapshot_get(struct vb_repo *r, const char *id, struct vb_manifest *m)
{
  memset(m, 0, sizeof *m);
  CLEANUP_FREE char *rel = rel_of("snapshots/%s", id);
  CLEANUP_FREE char *f = vb_repo_file(r, "snapshots/%s", id);
  size_t len;
  CLEANUP_FREE unsigned char *buf = (unsigned char *)vb_fs_read(r->fs, rel, VB_RAW_MAX + (64u << 20), &len);
  if (!buf) {
    if (errno == ENOENT) return vm_fail(VM_EXIT_NOTFOUND, "no snapshot '%s' in '%s'", id, r->shown);
    return vm_fail_errno(VM_EXIT_FAIL, "cannot read '%s'", f);
  }
  const char *why = "too short";
  if (len < 12 || memcmp(buf, mani_magic, 8) != 0 || get32(buf + 8) != len - 12)
    return vm_fail(VM_EXIT_VERIFY, "snapshot %s is damaged: its file is not a manifest of this version", id);
  /* The raw length is in the record's head: its buffer is sized from it, within the limit. */
  uint32_t rawlen = len >= 12 + VB_REC_HEAD ? get32(buf + 12 + 2 + VB_ID_LEN) : 0;
  if (rawlen == 0 || rawlen > VB_RAW_MAX) return vm_fail(VM_EXIT_VERIFY, "snapshot %s is damaged: bad length", id);
  unsigned char rid[VB_ID_LEN];
  snap_rec_id(id, rid);
  unsigned char *raw = malloc(rawlen);
  if (!raw) abort();
  size_t got;
  int rc = 0;
  if (vb_open(&r->keys, VB_REC_MANIFEST, rid, buf + 12, len - 12, raw, rawlen, &got, &why) < 0 ||
      vb_manifest_parse(raw, got, r->cfg.chunk_size, id, m, &why) < 0)
    rc = vm_fail(VM_EXIT_VERIFY, "snapshot %s is damaged: %s", id, why);
  free(raw);
  return rc;
}

int vb_snapshot_ids(struct vb_repo *r, struct vm_strv *ids)
{
  struct vm_strv all = { 0 };
  if (vb_fs_list(r->fs, "snapshots", &all) < 0) return vm_fail_errno(VM_EXIT_FAIL, "cannot read '%s/snapshots'", r->shown);
  unsigned char tmp[16];
  for (size_t i = 0; i < all.n; i++)
    if (vb_unhex16(all.v[i], tmp) == 0) vm_strv_add(ids, all.v[i]);
  vm_strv_free(&all);
  return 0;
}

int vb_snapshot_resolve(struct vb_repo *r, const char *name, char **id)
{
  size_t l = strlen(name);
  if (l < 6 || l > 32 || strspn(name, "0123456789abcdef") != l)
    return vm_usage_error("'%s' is no snapshot ID (6 to 32 lowercase hex digits, as 'vmbackup list' shows)", name);
  struct vm_strv ids = { 0 };
  int rc = vb_snapshot_ids(r, &ids);
  if (rc) return rc;
  const char *found = NULL;
  size_t n = 0;
  for (size_t i = 0; i < ids.n; i++)
    if (strncmp(ids.v[i], name, l) == 0) found = ids.v[i], n++;
  if (n == 1) *id = vm_strdup(found);
  vm_strv_free(&ids);
  if (n == 0) return vm_fail(VM_EXIT_NOTFOUND, "no snapshot '%s' in '%s'", name, r->shown);
  if (n > 1) return vm_fail(VM_EXIT_USAGE, "snapshot '%s' is ambiguous in '%s': give more digits", name, r->shown);
  return 0;
}

int vb_repo_reindex(struct vb_repo *r, const char *hex) { return reindex_pack(r, hex); }

void vb_repo_foreach_entry(struct vb_repo *r, void (*fn)(const struct vb_ientry *e, void *arg), void *arg)
{
  for (size_t i = 0; r->merged_n && i < r->merged.n; i++) {
    struct vb_ientry e;
    vb_index_entry(&r->merged, i, &e);
    fn(&e, arg);
  }
  for (size_t i = 0; i < r->table->cap; i++) {
    struct tentry *t = &r->table->v[i];
    if (t->used != 1) continue;
    struct vb_ientry e;
    memcpy(e.id, t->id, VB_ID_LEN);
    memcpy(e.pack, t->pack, VB_PACK_ID_LEN);
    e.offset = t->offset;
    e.reclen = t->reclen;
    e.rawlen = t->rawlen;
    fn(&e, arg);
  }
}

int vb_repo_read_record(struct vb_repo *r, const struct vb_ientry *e, unsigned char *buf, const char **why)
{
  if (!entry_sane(r, e)) return *why = "its index entry is out of range", VM_EXIT_VERIFY;
  uint64_t size;
  bool owned;
  int fd = pack_fd(r, e->pack, &size, &owned);
  if (fd == -2) return *why = "its pack is damaged (header)", VM_EXIT_VERIFY;
  if (fd < 0) return *why = strerror(errno), VM_EXIT_FAIL;
  int rc = 0;
  if (e->offset > size || 4 + (uint64_t)e->reclen > size - e->offset) rc = VM_EXIT_VERIFY, *why = "its record runs past its pack's end";
  else if (vb_fs_pread(r->fs, fd, buf, 4 + (size_t)e->reclen, e->offset) < 0) rc = VM_EXIT_FAIL, *why = strerror(errno);
  else if (get32(buf) != e->reclen) rc = VM_EXIT_VERIFY, *why = "its record's length differs from its index entry";
  else if (buf[4] != VB_REC_CHUNK || memcmp(buf + 4 + 2, e->id, VB_ID_LEN) != 0)
    rc = VM_EXIT_VERIFY, *why = "its record is of another chunk";
  if (owned) vb_fs_rclose(r->fs, fd);
  return rc;
}

int vb_repo_append_record(struct vb_repo *r, const struct vb_ientry *e, const unsigned char *rec)
{
  return vb_repo_append(r, e->id, rec + 4, e->reclen, e->rawlen);
}

int vb_repo_write_merged(struct vb_repo *r, struct vb_ientry *e, size_t n, unsigned char (*packs)[VB_PACK_ID_LEN],
                         size_t npacks)
{
  static const unsigned char zero[VB_PACK_ID_LEN];
  unsigned char *ix;
  size_t ixlen;
  const char *why;
  if (vb_index_encode(true, zero, e, n, packs, npacks, &ix, &ixlen, &why) < 0)
    return vm_fail(VM_EXIT_FAIL, "cannot merge the indexes: %s", why);
  unsigned next = r->merged_n + 1;
  CLEANUP_FREE char *tmp = rel_of("tmp/%s.merged%u.index", vb_fs_lock_name(r->fs), next);
  CLEANUP_FREE char *dst = rel_of("index/merged.%u", next);
  int rc = vb_fs_put(r->fs, tmp, dst, ix, ixlen, false);
  free(ix);
  if (rc < 0) return vm_fail_errno(VM_EXIT_FAIL, "cannot write '%s/%s'", r->shown, dst);
  /* From now on lookups use it. */
  return vb_repo_load_index(r, false);
}

int vb_repo_remove_pack(struct vb_repo *r, const unsigned char pack[VB_PACK_ID_LEN])
{
  char hex[33];
  vb_hex16(pack, hex);
  pthread_mutex_lock(&r->fdmu);
  for (size_t i = 0; i < r->nfds; i++)
    if (memcmp(r->fds[i].id, pack, VB_PACK_ID_LEN) == 0) {
      vb_fs_rclose(r->fs, r->fds[i].fd);
      r->fds[i] = r->fds[--r->nfds];
      break;
    }
  pthread_mutex_unlock(&r->fdmu);
  CLEANUP_FREE char *ix = rel_of("index/%s", hex);
  CLEANUP_FREE char *pf = rel_of("packs/%.2s/%s", hex, hex);
  CLEANUP_FREE char *sub = rel_of("packs/%.2s", hex);
  if (vb_fs_unlink(r->fs, ix) < 0 && errno != ENOENT) return vm_fail_errno(VM_EXIT_FAIL, "cannot remove '%s/%s'", r->shown, ix);
  vb_fs_sync_dir(r->fs, "index");
  if (vb_fs_unlink(r->fs, pf) < 0 && errno != ENOENT) return vm_fail_errno(VM_EXIT_FAIL, "cannot remove '%s/%s'", r->shown, pf);
  vb_fs_sync_dir(r->fs, sub);
  /* Its folder too when it is empty now (only compact removes packs, alone). */
  vb_fs_rmdir(r->fs, sub);
  return 0;
}

void vb_repo_drop_covered_indexes(struct vb_repo *r)
{
  if (!r->merged_n) return;
  struct vm_strv names = { 0 };
  vb_fs_list(r->fs, "index", &names);
  for (size_t i = 0; i < names.n; i++) {
    unsigned char pid[VB_PACK_ID_LEN];
    unsigned long n;
    char *end;
    bool drop = false;
    if (vb_unhex16(names.v[i], pid) == 0) drop = vb_index_covers(&r->merged, pid);
    else if (strncmp(names.v[i], "merged.", 7) == 0 && (n = strtoul(names.v[i] + 7, &end, 10)) < r->merged_n && !*end)
      drop = true;
    if (!drop) continue;
    CLEANUP_FREE char *f = rel_of("index/%s", names.v[i]);
    if (vb_fs_unlink(r->fs, f) < 0 && errno != ENOENT) vm_warn("cannot remove '%s/%s': %s", r->shown, f, strerror(errno));
  }
  vm_strv_free(&names);
  vb_fs_sync_dir(r->fs, "index");
}

size_t vb_repo_new_packs(struct vb_repo *r, unsigned char (**packs)[VB_PACK_ID_LEN])
{
  *packs = r->written;
  return r->nwritten;
}

int vb_snapshot_remove(struct vb_repo *r, const char *id)
{
  CLEANUP_FREE char *f = rel_of("snapshots/%s", id);
  if (vb_fs_unlink(r->fs, f) < 0 && errno != ENOENT) {
    if (errno == EPERM && *vb_fs_error(r->fs)) return vm_fail(VM_EXIT_STATE, "%s", vb_fs_error(r->fs));
    return vm_fail_errno(VM_EXIT_FAIL, "cannot remove '%s/%s'", r->shown, f);
  }
  return 0;
}
