/* vmbackup's chunk store (vmbackup/store.h) on real files, in a local folder and
 * through the remote protocol: the same calls on an ssh:// repository whose
 * "ssh" is t/unit/fake-rsh, which runs the real `vmbackup serve --stdio` here
 * (the bats suite runs it through a real sshd). Chunks appended from several
 * threads, packs flushed and indexed, read back authenticated, a manifest put
 * and got, an append-only server refusing removal and replacement, a path
 * outside the server's restriction refused, and a server that drops what a
 * client did not commit. Under AddressSanitizer and UBSan. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "vmkit-base.h"
#include "../../vmbackup/fs.h"
#include "../../vmbackup/store.h"

#define CHUNK (64u << 10)
#define NCHUNKS 96
#define NTHREADS 4

static char *scratch;

static int setup(void **state)
{
  const char *tmp = getenv("TMPDIR");
  scratch = vm_strdup_printf("%s/vb-store.XXXXXX", tmp && *tmp ? tmp : "/tmp");
  if (!mkdtemp(scratch)) return -1;
  /* The fake ssh and the real server beside this test. */
  char self[4096];
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  if (n < 0) return -1;
  self[n] = 0;
  char *slash = strrchr(self, '/');
  *slash = 0;
  setenv("VMKIT_RSH", vm_strdup_printf("%s/fake-rsh", self), 1);
  setenv("VMKIT_REMOTE_PATH", vm_strdup_printf("%s/../../vmbackup/vmbackup", self), 1);
  unsetenv("VMKIT_PASSPHRASE");
  unsetenv("FAKE_RSH_FORCE");
  *state = scratch;
  return 0;
}

static int teardown(void **state)
{
  vm_remove_tree(scratch);
  free(scratch);
  return 0;
}

static char *repo_name(bool remote, const char *name)
{
  return remote ? vm_strdup_printf("ssh://fakehost%s/%s", scratch, name) : vm_strdup_printf("%s/%s", scratch, name);
}

static void make_repo(const char *repo)
{
  struct vb_config cfg = { .chunk_size = CHUNK, .zstd_level = 1, .encrypted = false };
  assert_int_equal(RAND_bytes(cfg.id, sizeof cfg.id), 1);
  assert_int_equal(vb_repo_create(repo, &cfg), 0);
}

/* Chunk i's bytes: compressible, distinct. */
static void chunk_bytes(unsigned i, unsigned char *buf)
{
  for (unsigned k = 0; k < CHUNK; k++) buf[k] = (unsigned char)((k / 512) * 7 + i * 13 + (k % 3 == 0 ? i : 0));
}

struct writer_arg {
  struct vb_repo *r;
  unsigned first;
};

static void *writer(void *p)
{
  struct writer_arg *a = p;
  unsigned char *raw = malloc(CHUNK), *rec = malloc(vb_seal_bound(CHUNK));
  for (unsigned i = a->first; i < NCHUNKS; i += NTHREADS) {
    unsigned char id[VB_ID_LEN];
    size_t reclen;
    /* Every chunk twice (dedup: the second is claimed already). */
    for (int twice = 0; twice < 2; twice++) {
      chunk_bytes(i, raw);
      vb_chunk_id(&a->r->keys, raw, CHUNK, id);
      if (vb_repo_claim(a->r, id)) continue;
      if (vb_seal(&a->r->keys, 1, VB_REC_CHUNK, id, raw, CHUNK, rec, &reclen) < 0) abort();
      if (vb_repo_append(a->r, id, rec, reclen, CHUNK)) abort();
    }
  }
  free(raw);
  free(rec);
  return NULL;
}

static void write_and_read(bool remote)
{
  CLEANUP_FREE char *repo = repo_name(remote, remote ? "remote" : "local");
  make_repo(repo);
  struct vb_repo *r;
  assert_int_equal(vb_repo_open(repo, NULL, VB_LOCK_SHARED, 0, &r), 0);
  assert_int_equal(vb_fs_remote(r->fs), remote);
  assert_int_equal(vb_repo_load_index(r, true), 0);
  pthread_t t[NTHREADS];
  struct writer_arg a[NTHREADS];
  for (unsigned i = 0; i < NTHREADS; i++) {
    a[i] = (struct writer_arg){ r, i };
    pthread_create(&t[i], NULL, writer, &a[i]);
  }
  for (unsigned i = 0; i < NTHREADS; i++) pthread_join(t[i], NULL);
  assert_int_equal(vb_repo_flush(r), 0);
  assert_int_equal((int)r->new_chunks, NCHUNKS);
  /* A manifest naming them. */
  struct vb_manifest m = { 0 };
  struct vb_mdisk d = { .target = "vda", .format = "qcow2", .size = (uint64_t)NCHUNKS * CHUNK, .nchunks = NCHUNKS };
  d.ids = calloc(NCHUNKS, 32);
  unsigned char *raw = malloc(CHUNK), *back = malloc(CHUNK);
  for (unsigned i = 0; i < NCHUNKS; i++) {
    chunk_bytes(i, raw);
    vb_chunk_id(&r->keys, raw, CHUNK, d.ids[i]);
  }
  m.snapshot = "00112233445566778899aabbccddeeff";
  m.vm = "vm";
  m.uuid = "6f2b7a43-7b0c-4d4c-9b6e-2a7f5f0f4e11";
  m.host = "h";
  m.started = m.ended = "2026-12-01T00:00:00Z";
  m.kind = "full";
  m.why = "a test";
  m.checkpoint = "";
  m.xml = "<domain/>";
  m.ndisks = 1;
  m.disks = &d;
  assert_int_equal(vb_snapshot_put(r, &m), 0);
  vb_repo_close(r);
  /* Opened again: everything there, read back whole and authenticated. */
  assert_int_equal(vb_repo_open(repo, NULL, VB_LOCK_NONE, 0, &r), 0);
  assert_int_equal(vb_repo_load_index(r, false), 0);
  struct vm_strv ids = { 0 };
  assert_int_equal(vb_snapshot_ids(r, &ids), 0);
  assert_int_equal((int)ids.n, 1);
  struct vb_manifest got;
  assert_int_equal(vb_snapshot_get(r, ids.v[0], &got), 0);
  assert_int_equal((int)got.disks[0].nchunks, NCHUNKS);
  for (unsigned i = 0; i < NCHUNKS; i++) {
    size_t n;
    const char *why;
    assert_int_equal(vb_repo_read_chunk(r, got.disks[0].ids[i], back, CHUNK, &n, &why), 0);
    chunk_bytes(i, raw);
    assert_int_equal((int)n, CHUNK);
    assert_memory_equal(raw, back, CHUNK);
  }
  vb_manifest_free(&got);
  vm_strv_free(&ids);
  vb_repo_close(r);
  free(raw);
  free(back);
  free(d.ids);
  /* Nothing left in tmp/ by writers that finished. */
  CLEANUP_FREE char *tmp = vm_strdup_printf("%s/%s/tmp", scratch, remote ? "remote" : "local");
  struct vm_strv left = { 0 };
  struct vb_fs *lfs = vb_fs_local(tmp);
  assert_int_equal(vb_fs_list(lfs, "", &left), 0);
  assert_int_equal((int)left.n, 0);
  vb_fs_close(lfs);
}

static void local_store(void **state) { write_and_read(false); }
static void remote_store(void **state) { write_and_read(true); }

/* The server's rules: append-only refuses removal and replacement, whatever the
 * client asks; a client's uncommitted file goes when it ends. */
static void append_only_server(void **state)
{
  CLEANUP_FREE char *repo = repo_name(true, "ao");
  make_repo(repo);
  CLEANUP_FREE char *force = vm_strdup_printf("%s serve --stdio --append-only --restrict-to-path %s",
                                              getenv("VMKIT_REMOTE_PATH"), scratch);
  setenv("FAKE_RSH_FORCE", force, 1);
  struct vb_fs *fs;
  assert_int_equal(vb_fs_open(repo, &fs), 0);
  assert_true(vb_fs_append_only(fs));
  /* No exclusive lock (it would stop every other writer), no file before a lock. */
  vm_errors_mute(true);
  assert_int_equal(vb_fs_lock(fs, true, 0), VM_EXIT_STATE);
  vm_errors_mute(false);
  assert_non_null(strstr(vm_last_error(), "append-only"));
  assert_int_equal(vb_fs_create(fs, "tmp/x.pack"), -1);
  assert_int_equal(vb_fs_lock(fs, false, 0), 0);
  assert_true(vb_fs_lock_held(fs));
  CLEANUP_FREE char *tmp = vm_strdup_printf("tmp/%s.x.snapshot", vb_fs_lock_name(fs));
  assert_int_equal(vb_fs_put(fs, tmp, "snapshots/00112233445566778899aabbccddeeff", "abc", 3, false), 0);
  /* Never removed, never replaced, not even by a new file of the same name. */
  assert_int_equal(vb_fs_unlink(fs, "snapshots/00112233445566778899aabbccddeeff"), -1);
  assert_int_equal(errno, EPERM);
  assert_non_null(strstr(vb_fs_error(fs), "append-only"));
  assert_int_equal(vb_fs_put(fs, tmp, "snapshots/00112233445566778899aabbccddeeff", "xyz", 3, false), -1);
  assert_int_equal(errno, EEXIST);
  assert_int_equal(vb_fs_put(fs, tmp, "config", "{}", 2, true), -1);
  assert_int_equal(errno, EPERM);
  assert_int_equal(vb_fs_rmdir(fs, "packs"), -1);
  /* Only the layout's shapes: no merged index (compact trusts it), no folder
   * where a snapshot goes, no file in tmp/ but under this client's lock name. */
  CLEANUP_FREE char *tmp3 = vm_strdup_printf("tmp/%s.m.index", vb_fs_lock_name(fs));
  assert_int_equal(vb_fs_put(fs, tmp3, "index/merged.9", "x", 1, false), -1);
  assert_int_equal(errno, EINVAL);
  assert_int_equal(vb_fs_put(fs, tmp3, "packs/ab/cd00112233445566778899aabbccddee", "x", 1, false), -1);
  assert_int_equal(vb_fs_mkdir(fs, "snapshots/00112233445566778899aabbccddeeff"), -1);
  assert_int_equal(vb_fs_create(fs, "tmp/shared.other.1.0123456789abcdef.pack"), -1);
  assert_int_equal(errno, EACCES);
  assert_int_equal(vb_fs_unlink(fs, "tmp/junk"), -1);
  /* A pack's index only once the pack is in place. */
  CLEANUP_FREE char *tmp4 = vm_strdup_printf("tmp/%s.i.index", vb_fs_lock_name(fs));
  assert_int_equal(vb_fs_put(fs, tmp4, "index/0123456789abcdef0123456789abcdef", "x", 1, false), -1);
  assert_int_equal(errno, ENOENT);
  /* Paths outside the layout, or climbing out of it, are no paths. */
  assert_int_equal(vb_fs_unlink(fs, "tmp/../config"), -1);
  assert_int_equal(errno, EINVAL);
  size_t n;
  assert_null(vb_fs_read(fs, "../ao/config", 100, &n));
  assert_int_equal(errno, EINVAL);
  assert_null(vb_fs_read(fs, "locks/x", 100, &n));
  /* A file being written when the client ends is dropped by the server. */
  CLEANUP_FREE char *tmp2 = vm_strdup_printf("tmp/%s.y.pack", vb_fs_lock_name(fs));
  int h = vb_fs_create(fs, tmp2);
  assert_true(h >= 0);
  assert_int_equal(vb_fs_write(fs, h, "data", 4), 0);
  /* tmp/ shows this client its own files, not one that names no writer (nor a
   * live writer's: the names of what it is about to commit). */
  CLEANUP_FREE char *junk = vm_strdup_printf("%s/ao/tmp/junk", scratch);
  FILE *jf = fopen(junk, "w");
  assert_non_null(jf);
  fclose(jf);
  /* Another live writer (a second lock on the repository, taken here) and a
   * dead one (a lock name without its lock file). */
  CLEANUP_FREE char *aodir = vm_strdup_printf("%s/ao", scratch);
  struct vb_fs *other = vb_fs_local(aodir);
  assert_int_equal(vb_fs_lock(other, false, 0), 0);
  CLEANUP_FREE char *live = vm_strdup_printf("%s/ao/tmp/%s.z.pack", scratch, vb_fs_lock_name(other));
  CLEANUP_FREE char *dead = vm_strdup_printf("%s/ao/tmp/shared.gone.1.0123456789abcdef.z.pack", scratch);
  jf = fopen(live, "w");
  assert_non_null(jf);
  fclose(jf);
  jf = fopen(dead, "w");
  assert_non_null(jf);
  fclose(jf);
  struct vm_strv seen = { 0 };
  assert_int_equal(vb_fs_list(fs, "tmp", &seen), 0);
  assert_true(vm_strv_contains(seen.v, tmp2 + 4));
  assert_true(vm_strv_contains(seen.v, "shared.gone.1.0123456789abcdef.z.pack"));
  assert_false(vm_strv_contains(seen.v, "junk"));
  assert_false(vm_strv_contains(seen.v, strrchr(live, '/') + 1));
  vm_strv_free(&seen);
  unlink(junk);
  unlink(live);
  unlink(dead);
  vb_fs_unlock(other);
  vb_fs_close(other);
  CLEANUP_FREE char *local_tmp = vm_strdup_printf("%s/ao/%s", scratch, tmp2);
  uint64_t size;
  assert_int_equal(vb_fs_size(fs, tmp2, &size), 0);
  vb_fs_close(fs);
  assert_int_equal(access(local_tmp, F_OK), -1);
  CLEANUP_FREE char *locks = vm_strdup_printf("%s/ao/locks", scratch);
  struct vm_strv left = { 0 };
  struct vb_fs *lfs = vb_fs_local(locks);
  assert_int_equal(vb_fs_list(lfs, "", &left), 0);
  assert_int_equal((int)left.n, 0);
  vb_fs_close(lfs);
  CLEANUP_FREE char *snap = vm_strdup_printf("%s/ao/snapshots/00112233445566778899aabbccddeeff", scratch);
  assert_int_equal(access(snap, F_OK), 0);
  /* Outside --restrict-to-path: refused at the greeting. */
  CLEANUP_FREE char *out = vm_strdup_printf("ssh://fakehost/tmp/elsewhere.%d", (int)getpid());
  vm_errors_mute(true);
  assert_int_equal(vb_fs_open(out, &fs), VM_EXIT_STATE);
  vm_errors_mute(false);
  assert_non_null(strstr(vm_last_error(), "outside the paths"));
  unsetenv("FAKE_RSH_FORCE");
}

static void bad_urls(void **state)
{
  struct vb_fs *fs;
  static const char *const bad[] = { "ssh://", "ssh://host", "ssh://host/", "ssh:///path", "ssh://-oProxy=x/p",
                                     "ssh://h:0/p", "ssh://h:99999/p", "ssh://h:x/p", "ssh://[::1/p", NULL };
  vm_errors_mute(true);
  for (size_t i = 0; bad[i]; i++) assert_int_equal(vb_fs_open(bad[i], &fs), VM_EXIT_USAGE);
  vm_errors_mute(false);
}

int main(void)
{
  vm_init("backup-store");
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(local_store),
    cmocka_unit_test(remote_store),
    cmocka_unit_test(append_only_server),
    cmocka_unit_test(bad_urls),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
