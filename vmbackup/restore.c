/* vmbackup restore: a snapshot's disks written back as sparse images, each
 * chunk authenticated before a byte of it is written. */
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vmbackup.h"
#include "workq.h"

struct rjob {
  struct vb_repo *repo;
  int fd;
  uint64_t off;
  size_t len;
  const unsigned char *id;
  atomic_int *error;
  char **why; /* the first failure's text */
  pthread_mutex_t *mu;
};

static void restore_chunk(void *arg)
{
  struct rjob *j = arg;
  if (atomic_load(j->error)) goto out;
  unsigned cs = j->repo->cfg.chunk_size;
  unsigned char *buf = malloc(cs);
  if (!buf) abort();
  size_t got;
  const char *why = NULL;
  int rc = vb_repo_read_chunk(j->repo, j->id, buf, cs, &got, &why);
  if (rc == 0 && got != j->len) rc = VM_EXIT_VERIFY, why = "a chunk's length differs from the disk's";
  if (rc == 0) {
    size_t done = 0;
    while (done < got) {
      ssize_t w = pwrite(j->fd, buf + done, got - done, (off_t)(j->off + done));
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) {
        rc = VM_EXIT_FAIL, why = strerror(errno);
        break;
      }
      done += (size_t)w;
    }
  }
  free(buf);
  if (rc) {
    pthread_mutex_lock(j->mu);
    if (!atomic_load(j->error)) {
      atomic_store(j->error, rc);
      *j->why = vm_strdup_printf("chunk at offset %llu: %s", (unsigned long long)j->off, why);
    }
    pthread_mutex_unlock(j->mu);
  }
out:
  free(j);
}

int vb_restore_disk(struct vb_repo *r, const struct vb_manifest *m, const struct vb_mdisk *d, int fd,
                    const char *label)
{
  if (ftruncate(fd, (off_t)d->size) < 0) return vm_fail_errno(VM_EXIT_FAIL, "cannot size the image of %s", label);
  unsigned cs = r->cfg.chunk_size;
  atomic_int error = 0;
  char *why = NULL;
  pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
  struct vb_workq *q = vb_workq_new(0, 16);
  for (size_t i = 0; i < d->nchunks && !atomic_load(&error); i++) {
    if (vb_manifest_hole(d, i)) continue; /* a hole stays a hole */
    struct rjob *j = malloc(sizeof *j);
    if (!j) abort();
    uint64_t off = (uint64_t)i * cs;
    *j = (struct rjob){ r, fd, off, (size_t)(d->size - off < cs ? d->size - off : cs), d->ids[i], &error, &why, &mu };
    vb_workq_push(q, restore_chunk, j);
    if (i % 64 == 0) vm_progress(label, off, d->size);
    if (vm_interrupted()) break;
  }
  vb_workq_free(q);
  vm_progress_end();
  int rc = atomic_load(&error);
  if (rc) {
    rc = vm_fail(rc, "snapshot %.12s, disk %s: %s", m->snapshot, d->target, why);
    free(why);
    return rc;
  }
  if (vm_interrupted()) return vm_fail_interrupted();
  if (fsync(fd) < 0) return vm_fail_errno(VM_EXIT_FAIL, "cannot flush the image of %s", label);
  return 0;
}

static int restore_to(struct vb_repo *r, const struct vb_manifest *m, const char *dir, const char *only)
{
  struct stat st;
  if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode)) return vm_fail(VM_EXIT_NOTFOUND, "no folder '%s'", dir);
  struct vm_undo undo = { 0 };
  int rc = 0;
  size_t done = 0;
  for (size_t i = 0; i < m->ndisks && !rc; i++) {
    const struct vb_mdisk *d = &m->disks[i];
    if (only && strcmp(only, d->target) != 0) continue;
    CLEANUP_FREE char *path = vm_strdup_printf("%s/%s.%s.raw", dir, m->vm, d->target);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
      rc = errno == EEXIST ? vm_fail(VM_EXIT_STATE, "'%s' exists: restore into another folder, or remove it", path)
                           : vm_fail_errno(VM_EXIT_FAIL, "cannot make '%s'", path);
      break;
    }
    vm_undo_local_file(&undo, path);
    CLEANUP_FREE char *label = vm_strdup_printf("%s %s", m->vm, d->target);
    rc = vb_restore_disk(r, m, d, fd, label);
    if (close(fd) < 0 && !rc) rc = vm_fail_errno(VM_EXIT_FAIL, "cannot write '%s'", path);
    if (!rc) {
      printf("%s\n", path);
      done++;
    }
  }
  if (!rc && only && !done) rc = vm_fail(VM_EXIT_NOTFOUND, "snapshot %.12s has no disk '%s'", m->snapshot, only);
  if (!rc) {
    CLEANUP_FREE char *xml = vm_strdup_printf("%s/%s.xml", dir, m->vm);
    int fd = open(xml, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) rc = errno == EEXIST ? vm_fail(VM_EXIT_STATE, "'%s' exists", xml) : vm_fail_errno(VM_EXIT_FAIL, "cannot make '%s'", xml);
    else {
      vm_undo_local_file(&undo, xml);
      size_t n = strlen(m->xml);
      if (write(fd, m->xml, n) != (ssize_t)n || fsync(fd) < 0) rc = vm_fail_errno(VM_EXIT_FAIL, "cannot write '%s'", xml);
      close(fd);
    }
  }
  if (rc) vm_undo_run(&undo);
  else vm_undo_forget(&undo);
  if (!rc && vb_fsync_dir_of(dir) < 0) vm_debug("cannot flush folder '%s'", dir);
  return rc;
}

int cmd_restore(int argc, char **argv)
{
  char *to = NULL, *disk = NULL;
  struct poptOption table[] = {
    { "to", '\0', POPT_ARG_STRING, &to, 0,
      "write each disk as a sparse raw image DIR/VM.TARGET.raw, and the definition as DIR/VM.xml", "DIR" },
    { "disk", '\0', POPT_ARG_STRING, &disk, 0, "only this disk (its target, e.g. vda)", "TARGET" },
    VB_POPT_REPO, VM_POPT_LOCK, VM_POPT_COMMON, POPT_TABLEEND
  };
  CLEANUP_POPT poptContext ctx = NULL;
  const char **args;
  int nargs;
  int rc = vm_parse(&ctx, argc, argv, table, "REPO SNAPSHOT --to DIR",
                    "Restore a snapshot (its ID or a unique prefix of 6 digits or more, as 'vmbackup list' shows): "
                    "every chunk is authenticated before it is written, holes stay holes, and a failed restore "
                    "leaves no file behind.",
                    2, 2, &args, &nargs);
  if (rc) return rc == VM_DONE ? 0 : rc;
  vm_catch_signals();
  if (!to) return vm_usage_error("say where to restore: --to DIR");
  struct vb_repo *r;
  /* A shared lock: no prune or compact removes a pack while it is read. */
  if ((rc = vb_open_repo(args[0], VB_LOCK_SHARED, &r))) return rc;
  CLEANUP_FREE char *id = NULL;
  struct vb_manifest m;
  if (!(rc = vb_snapshot_resolve(r, args[1], &id)) && !(rc = vb_snapshot_get(r, id, &m))) {
    rc = vb_repo_load_index(r, false);
    if (!rc) rc = restore_to(r, &m, to, disk);
    vb_manifest_free(&m);
  }
  vb_repo_close(r);
  return rc;
}
