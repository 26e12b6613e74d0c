/* A repository's files, here or through ssh (fs.h): each call does its work on
 * the local folder, or sends its request (proto.h) and reads the reply. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fs.h"
#include "proto.h"
#include "remote.h"
#include "rlock.h"

/* A file being written locally: its descriptor and where it is. */
struct writer {
  int fd;
  char *tmp;
  struct writer *next;
};

struct vb_fs {
  char *shown;
  char *path;            /* local: the folder */
  struct vb_remote *rem; /* remote: the connection */
  bool append_only;
  pthread_mutex_t mu; /* the connection (remote), the writers (local) */
  struct writer *writers;
  struct vb_lock *lock;  /* local */
  char *lock_name;       /* remote: the server's lock's name */
  /* Remote writes gathered into one message (for handle wh). */
  struct vb_buf wbuf;
  int wh;
  char err[1024];
  int err_code; /* the exit code the server gave with err */
};

static struct vb_fs *fs_new(const char *shown)
{
  struct vb_fs *fs = calloc(1, sizeof *fs);
  if (!fs) abort();
  fs->shown = vm_strdup(shown);
  fs->wh = -1;
  pthread_mutex_init(&fs->mu, NULL);
  return fs;
}

struct vb_fs *vb_fs_local(const char *path)
{
  struct vb_fs *fs = fs_new(path);
  fs->path = vm_strdup(path);
  return fs;
}

int vb_fs_open(const char *repo, struct vb_fs **out)
{
  *out = NULL;
  if (strncmp(repo, "ssh://", 6) != 0) {
    if (!*repo) return vm_usage_error("the repository's name is empty");
    *out = vb_fs_local(repo);
    return 0;
  }
  struct vb_remote *rem;
  uint32_t flags;
  int rc = vb_remote_open(repo, &rem, &flags);
  if (rc) return rc;
  struct vb_fs *fs = fs_new(repo);
  fs->rem = rem;
  fs->append_only = flags & VB_HELLO_APPEND_ONLY;
  *out = fs;
  return 0;
}

void vb_fs_close(struct vb_fs *fs)
{
  if (!fs) return;
  while (fs->writers) {
    struct writer *w = fs->writers;
    fs->writers = w->next;
    close(w->fd);
    if (fs->path) {
      CLEANUP_FREE char *p = vm_strdup_printf("%s/%s", fs->path, w->tmp);
      unlink(p);
    }
    free(w->tmp);
    free(w);
  }
  vb_lock_release(fs->lock);
  vb_remote_close(fs->rem); /* the server drops what was not committed, and its lock */
  if (fs->wbuf.p) vb_buf_free(&fs->wbuf);
  pthread_mutex_destroy(&fs->mu);
  free(fs->lock_name);
  free(fs->shown);
  free(fs->path);
  free(fs);
}

const char *vb_fs_shown(const struct vb_fs *fs) { return fs->shown; }
const char *vb_fs_local_path(const struct vb_fs *fs) { return fs->path; }
bool vb_fs_remote(const struct vb_fs *fs) { return fs->rem != NULL; }
bool vb_fs_append_only(const struct vb_fs *fs) { return fs->append_only; }
const char *vb_fs_error(const struct vb_fs *fs) { return fs->err; }

static char *local(const struct vb_fs *fs, const char *rel)
{
  return *rel ? vm_strdup_printf("%s/%s", fs->path, rel) : vm_strdup(fs->path);
}

/* ---- Remote calls --------------------------------------------------------------------- */

static void req(struct vb_buf *b, enum vb_op op)
{
  vb_buf_init(b);
  vb_buf_u8(b, (uint8_t)op);
}

/* Sends the gathered writes. With fs->mu held. */
static int wflush(struct vb_fs *fs)
{
  if (fs->wh < 0 || !fs->wbuf.p) return 0;
  int rc = vb_remote_send(fs->rem, &fs->wbuf);
  vb_buf_free(&fs->wbuf);
  fs->wh = -1;
  return rc;
}

/* Sends b (freed) and takes its reply: 0 with *body (caller frees) and rd on
 * the reply's fields; -1 with errno (a status above 0, or EPERM with fs->err
 * after a refusal, or the connection's own error). With fs->mu held. */
static int call(struct vb_fs *fs, struct vb_buf *b, unsigned char **body, struct vb_rd *rd)
{
  *body = NULL;
  fs->err[0] = 0;
  fs->err_code = 0;
  int rc = wflush(fs);
  size_t len = 0;
  if (rc == 0) rc = vb_remote_call(fs->rem, b, body, &len);
  vb_buf_free(b);
  if (rc < 0) {
    snprintf(fs->err, sizeof fs->err, "%s", vb_remote_error(fs->rem));
    return -1;
  }
  vb_rd_init(rd, *body, len);
  int32_t status = (int32_t)vb_rd_u32(rd);
  if (rd->bad) {
    free(*body);
    *body = NULL;
    snprintf(fs->err, sizeof fs->err, "a malformed reply from '%s'", fs->shown);
    return errno = EPROTO, -1;
  }
  if (status > 0) {
    free(*body);
    *body = NULL;
    return errno = status, -1;
  }
  if (status < 0) {
    fs->err_code = status < -63 ? VM_EXIT_FAIL : -status;
    size_t n = rd->len - rd->off;
    if (n >= sizeof fs->err) n = sizeof fs->err - 1;
    memcpy(fs->err, rd->p + rd->off, n);
    fs->err[n] = 0;
    for (size_t i = 0; i < n; i++)
      if ((unsigned char)fs->err[i] < ' ') fs->err[i] = ' ';
    free(*body);
    *body = NULL;
    return errno = EPERM, -1;
  }
  return 0;
}

/* A request of op with one string, whose reply has no fields. */
static int call_path(struct vb_fs *fs, enum vb_op op, const char *rel)
{
  struct vb_buf b;
  struct vb_rd rd;
  unsigned char *body;
  req(&b, op);
  vb_buf_str(&b, rel);
  pthread_mutex_lock(&fs->mu);
  int rc = call(fs, &b, &body, &rd);
  pthread_mutex_unlock(&fs->mu);
  free(body);
  return rc;
}

/* ---- Files ------------------------------------------------------------------------------ */

char *vb_fs_read(struct vb_fs *fs, const char *rel, size_t max, size_t *len)
{
  if (!fs->rem) {
    CLEANUP_FREE char *p = local(fs, rel);
    return vm_read_file(p, max, len);
  }
  if (max > VB_IO_MAX) {
    /* Larger than one message: read in parts. */
    uint64_t size;
    int h = vb_fs_ropen(fs, rel, &size);
    if (h < 0) return NULL;
    if (size > max) {
      vb_fs_rclose(fs, h);
      return errno = EFBIG, NULL;
    }
    char *buf = malloc((size_t)size + 1);
    if (!buf) abort();
    int rc = 0;
    for (uint64_t off = 0; off < size && rc == 0; off += VB_IO_MAX) {
      size_t n = size - off < VB_IO_MAX ? (size_t)(size - off) : VB_IO_MAX;
      rc = vb_fs_pread(fs, h, buf + off, n, off);
    }
    int e = errno;
    vb_fs_rclose(fs, h);
    if (rc) {
      free(buf);
      return errno = e, NULL;
    }
    buf[size] = 0;
    *len = (size_t)size;
    return buf;
  }
  struct vb_buf b;
  struct vb_rd rd;
  unsigned char *body;
  req(&b, VB_OP_READ);
  vb_buf_str(&b, rel);
  vb_buf_u64(&b, max);
  pthread_mutex_lock(&fs->mu);
  int rc = call(fs, &b, &body, &rd);
  pthread_mutex_unlock(&fs->mu);
  if (rc) return NULL;
  size_t n;
  const unsigned char *p = vb_rd_bytes(&rd, &n);
  char *out = NULL;
  if (p && vb_rd_done(&rd) && n <= max) {
    out = malloc(n + 1);
    if (!out) abort();
    memcpy(out, p, n);
    out[n] = 0;
    *len = n;
  } else {
    errno = EPROTO;
  }
  free(body);
  return out;
}

int vb_fs_size(struct vb_fs *fs, const char *rel, uint64_t *size)
{
  if (!fs->rem) {
    CLEANUP_FREE char *p = local(fs, rel);
    struct stat st;
    if (stat(p, &st) < 0) return -1;
    *size = (uint64_t)st.st_size;
    return 0;
  }
  struct vb_buf b;
  struct vb_rd rd;
  unsigned char *body;
  req(&b, VB_OP_SIZE);
  vb_buf_str(&b, rel);
  pthread_mutex_lock(&fs->mu);
  int rc = call(fs, &b, &body, &rd);
  pthread_mutex_unlock(&fs->mu);
  if (rc == 0) {
    *size = vb_rd_u64(&rd);
    if (!vb_rd_done(&rd)) rc = -1, errno = EPROTO;
  }
  free(body);
  return rc;
}

int vb_fs_exists(struct vb_fs *fs, const char *rel)
{
  uint64_t size;
  if (vb_fs_size(fs, rel, &size) == 0) return 1;
  return errno == ENOENT ? 0 : -1;
}

static int by_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int vb_fs_list(struct vb_fs *fs, const char *rel, struct vm_strv *out)
{
  if (!fs->rem) {
    CLEANUP_FREE char *p = local(fs, rel);
    DIR *d = opendir(p);
    if (!d) return errno == ENOENT ? 0 : -1;
    struct dirent *e;
    while ((e = readdir(d)))
      if (e->d_name[0] != '.') vm_strv_add(out, e->d_name);
    closedir(d);
    if (out->n) qsort(out->v, out->n, sizeof *out->v, by_str);
    return 0;
  }
  struct vb_buf b;
  struct vb_rd rd;
  unsigned char *body;
  req(&b, VB_OP_LIST);
  vb_buf_str(&b, rel);
  pthread_mutex_lock(&fs->mu);
  int rc = call(fs, &b, &body, &rd);
  pthread_mutex_unlock(&fs->mu);
  if (rc) return rc;
  uint32_t n = vb_rd_u32(&rd);
  struct vm_strv got = { 0 };
  for (uint32_t i = 0; i < n && !rd.bad; i++) {
    char *s = vb_rd_str(&rd, 255);
    if (s && *s && *s != '.' && !strchr(s, '/')) vm_strv_add(&got, s);
    else rd.bad = true;
    free(s);
  }
  free(body);
  if (!vb_rd_done(&rd)) {
    vm_strv_free(&got);
    return errno = EPROTO, -1;
  }
  for (size_t i = 0; i < got.n; i++) vm_strv_add(out, got.v[i]);
  vm_strv_free(&got);
  if (out->n) qsort(out->v, out->n, sizeof *out->v, by_str);
  return 0;
}

int vb_fs_mkdir(struct vb_fs *fs, const char *rel)
{
  if (fs->rem) return call_path(fs, VB_OP_MKDIR, rel);
  CLEANUP_FREE char *p = local(fs, rel);
  return mkdir(p, 0700);
}

int vb_fs_rmdir(struct vb_fs *fs, const char *rel)
{
  if (fs->rem) return call_path(fs, VB_OP_RMDIR, rel);
  CLEANUP_FREE char *p = local(fs, rel);
  return rmdir(p);
}

int vb_fs_unlink(struct vb_fs *fs, const char *rel)
{
  if (fs->rem) return call_path(fs, VB_OP_UNLINK, rel);
  CLEANUP_FREE char *p = local(fs, rel);
  return unlink(p);
}

int vb_fs_sync_dir(struct vb_fs *fs, const char *rel)
{
  if (fs->rem) return call_path(fs, VB_OP_SYNCDIR, rel);
  CLEANUP_FREE char *p = local(fs, rel);
  return vm_fsync_dir(p);
}

/* ---- Writing -------------------------------------------------------------------------- */

static int write_all(int fd, const void *buf, size_t n)
{
  const unsigned char *p = buf;
  while (n) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return -1;
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

int vb_fs_create(struct vb_fs *fs, const char *tmprel)
{
  if (fs->rem) {
    struct vb_buf b;
    struct vb_rd rd;
    unsigned char *body;
    req(&b, VB_OP_CREATE);
    vb_buf_str(&b, tmprel);
    pthread_mutex_lock(&fs->mu);
    int rc = call(fs, &b, &body, &rd);
    pthread_mutex_unlock(&fs->mu);
    int h = -1;
    if (rc == 0) {
      uint32_t v = vb_rd_u32(&rd);
      if (vb_rd_done(&rd) && v < 1u << 30) h = (int)v;
      else errno = EPROTO;
    }
    free(body);
    return h;
  }
  CLEANUP_FREE char *p = local(fs, tmprel);
  int fd = open(p, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return -1;
  struct writer *w = calloc(1, sizeof *w);
  if (!w) abort();
  w->fd = fd;
  w->tmp = vm_strdup(tmprel);
  pthread_mutex_lock(&fs->mu);
  w->next = fs->writers;
  fs->writers = w;
  pthread_mutex_unlock(&fs->mu);
  return fd;
}

int vb_fs_write(struct vb_fs *fs, int h, const void *buf, size_t n)
{
  if (!fs->rem) return write_all(h, buf, n);
  pthread_mutex_lock(&fs->mu);
  int rc = 0;
  const unsigned char *p = buf;
  while (n && rc == 0) {
    if (fs->wh != h || fs->wbuf.len >= (4u << 20)) rc = wflush(fs);
    if (rc) break;
    if (fs->wh < 0) {
      req(&fs->wbuf, VB_OP_WRITE);
      vb_buf_u32(&fs->wbuf, (uint32_t)h);
      vb_buf_u32(&fs->wbuf, 0); /* the run's length, set below */
      fs->wh = h;
    }
    size_t room = (4u << 20) + 64 - fs->wbuf.len, k = n < room ? n : room;
    memcpy(vb_buf_space(&fs->wbuf, k), p, k);
    /* The run's length sits after op (1), handle (4), behind the message's 4. */
    size_t run = fs->wbuf.len - (4 + 1 + 4 + 4);
    for (int i = 0; i < 4; i++) fs->wbuf.p[4 + 1 + 4 + i] = (unsigned char)(run >> (8 * i));
    p += k;
    n -= k;
  }
  pthread_mutex_unlock(&fs->mu);
  return rc;
}

static struct writer *take_writer(struct vb_fs *fs, int h)
{
  pthread_mutex_lock(&fs->mu);
  struct writer **pw = &fs->writers, *w = NULL;
  for (; *pw; pw = &(*pw)->next)
    if ((*pw)->fd == h) {
      w = *pw;
      *pw = w->next;
      break;
    }
  pthread_mutex_unlock(&fs->mu);
  return w;
}

/* Makes the folder of path when it is missing (its own folder flushed). */
static int make_parent(const char *path)
{
  CLEANUP_FREE char *dir = vm_strdup(path);
  char *slash = strrchr(dir, '/');
  if (!slash) return 0;
  *slash = 0;
  if (mkdir(dir, 0700) == 0) {
    CLEANUP_FREE char *up = vm_strdup(dir);
    char *s2 = strrchr(up, '/');
    if (s2) *s2 = 0;
    vm_fsync_dir(s2 ? up : ".");
    return 0;
  }
  return errno == EEXIST ? 0 : -1;
}

static int dir_sync_of(const char *path)
{
  CLEANUP_FREE char *dir = vm_strdup(path);
  char *slash = strrchr(dir, '/');
  if (slash) *slash = 0;
  return vm_fsync_dir(slash ? dir : ".");
}

int vb_fs_commit(struct vb_fs *fs, int h, const char *dstrel, bool replace)
{
  if (fs->rem) {
    struct vb_buf b;
    struct vb_rd rd;
    unsigned char *body;
    req(&b, VB_OP_COMMIT);
    vb_buf_u32(&b, (uint32_t)h);
    vb_buf_str(&b, dstrel);
    vb_buf_u32(&b, replace);
    pthread_mutex_lock(&fs->mu);
    int rc = call(fs, &b, &body, &rd);
    pthread_mutex_unlock(&fs->mu);
    free(body);
    return rc;
  }
  struct writer *w = take_writer(fs, h);
  if (!w) return errno = EBADF, -1;
  CLEANUP_FREE char *tmp = local(fs, w->tmp);
  CLEANUP_FREE char *dst = local(fs, dstrel);
  int rc = fsync(w->fd);
  int e = errno;
  close(w->fd);
  free(w->tmp);
  free(w);
  if (rc == 0) {
    if (replace) {
      rc = rename(tmp, dst);
    } else {
      rc = link(tmp, dst);
      if (rc < 0 && errno == ENOENT && make_parent(dst) == 0) rc = link(tmp, dst);
    }
    e = errno;
  }
  if (rc < 0 || !replace) unlink(tmp);
  if (rc == 0 && dir_sync_of(dst) < 0) rc = -1, e = errno;
  errno = e;
  return rc;
}

void vb_fs_abort(struct vb_fs *fs, int h)
{
  if (fs->rem) {
    struct vb_buf b;
    req(&b, VB_OP_ABORT);
    vb_buf_u32(&b, (uint32_t)h);
    pthread_mutex_lock(&fs->mu);
    if (fs->wh == h) {
      vb_buf_free(&fs->wbuf);
      fs->wh = -1;
    }
    if (wflush(fs) == 0) vb_remote_send(fs->rem, &b);
    pthread_mutex_unlock(&fs->mu);
    vb_buf_free(&b);
    return;
  }
  struct writer *w = take_writer(fs, h);
  if (!w) return;
  close(w->fd);
  CLEANUP_FREE char *tmp = local(fs, w->tmp);
  unlink(tmp);
  free(w->tmp);
  free(w);
}

int vb_fs_put(struct vb_fs *fs, const char *tmprel, const char *dstrel, const void *data, size_t len, bool replace)
{
  int h = vb_fs_create(fs, tmprel);
  if (h < 0) return -1;
  if (vb_fs_write(fs, h, data, len) < 0) {
    int e = errno;
    vb_fs_abort(fs, h);
    return errno = e, -1;
  }
  return vb_fs_commit(fs, h, dstrel, replace);
}

/* ---- Reading -------------------------------------------------------------------------- */

int vb_fs_ropen(struct vb_fs *fs, const char *rel, uint64_t *size)
{
  if (!fs->rem) {
    CLEANUP_FREE char *p = local(fs, rel);
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0) return -1;
    if (fstat(fd, &st) < 0) {
      int e = errno;
      close(fd);
      return errno = e, -1;
    }
    *size = (uint64_t)st.st_size;
    return fd;
  }
  struct vb_buf b;
  struct vb_rd rd;
  unsigned char *body;
  req(&b, VB_OP_ROPEN);
  vb_buf_str(&b, rel);
  pthread_mutex_lock(&fs->mu);
  int rc = call(fs, &b, &body, &rd);
  pthread_mutex_unlock(&fs->mu);
  int h = -1;
  if (rc == 0) {
    uint32_t v = vb_rd_u32(&rd);
    *size = vb_rd_u64(&rd);
    if (vb_rd_done(&rd) && v < 1u << 30) h = (int)v;
    else errno = EPROTO;
  }
  free(body);
  return h;
}

int vb_fs_pread(struct vb_fs *fs, int h, void *buf, size_t n, uint64_t off)
{
  unsigned char *p = buf;
  if (!fs->rem) {
    while (n) {
      ssize_t got = pread(h, p, n, (off_t)off);
      if (got < 0 && errno == EINTR) continue;
      if (got < 0) return -1;
      if (got == 0) return errno = EIO, -1; /* shorter than its index says */
      p += got;
      n -= (size_t)got;
      off += (uint64_t)got;
    }
    return 0;
  }
  while (n) {
    size_t k = n < VB_IO_MAX ? n : VB_IO_MAX;
    struct vb_buf b;
    struct vb_rd rd;
    unsigned char *body;
    req(&b, VB_OP_PREAD);
    vb_buf_u32(&b, (uint32_t)h);
    vb_buf_u64(&b, off);
    vb_buf_u32(&b, (uint32_t)k);
    pthread_mutex_lock(&fs->mu);
    int rc = call(fs, &b, &body, &rd);
    pthread_mutex_unlock(&fs->mu);
    if (rc) return rc;
    size_t got;
    const unsigned char *d = vb_rd_bytes(&rd, &got);
    if (!d || !vb_rd_done(&rd) || got != k) {
      free(body);
      return errno = d && got < k ? EIO : EPROTO, -1;
    }
    memcpy(p, d, k);
    free(body);
    p += k;
    n -= k;
    off += k;
  }
  return 0;
}

void vb_fs_rclose(struct vb_fs *fs, int h)
{
  if (!fs->rem) {
    close(h);
    return;
  }
  struct vb_buf b;
  req(&b, VB_OP_RCLOSE);
  vb_buf_u32(&b, (uint32_t)h);
  pthread_mutex_lock(&fs->mu);
  if (wflush(fs) == 0) vb_remote_send(fs->rem, &b);
  pthread_mutex_unlock(&fs->mu);
  vb_buf_free(&b);
}

void *vb_fs_map(struct vb_fs *fs, const char *rel, size_t max, size_t *len)
{
  /* Remotely read whole: at most 1 GiB (an index of about 4 TiB of chunks). */
  if (fs->rem) return vb_fs_read(fs, rel, max < (1u << 30) ? max : (1u << 30), len);
  uint64_t size;
  int fd = vb_fs_ropen(fs, rel, &size);
  if (fd < 0) return NULL;
  if (size == 0 || size > max) {
    close(fd);
    return errno = size ? EFBIG : EINVAL, NULL;
  }
  void *m = mmap(NULL, (size_t)size, PROT_READ, MAP_PRIVATE, fd, 0);
  int e = errno;
  close(fd);
  if (m == MAP_FAILED) return errno = e, NULL;
  *len = (size_t)size;
  return m;
}

void vb_fs_unmap(struct vb_fs *fs, void *p, size_t len)
{
  if (!p) return;
  if (fs->rem) free(p);
  else munmap(p, len);
}

/* ---- The lock ------------------------------------------------------------------------- */

/* One LOCK request that waits at most wait_s (0 or 1) on the server. 0, -1
 * when the server says the repository is busy (exit 4), else an exit code
 * after a message. */
static int lock_once(struct vb_fs *fs, bool exclusive, uint32_t wait_s, bool last)
{
  struct vb_buf b;
  struct vb_rd rd;
  unsigned char *body;
  req(&b, VB_OP_LOCK);
  vb_buf_u32(&b, exclusive);
  vb_buf_u32(&b, wait_s);
  pthread_mutex_lock(&fs->mu);
  int rc = call(fs, &b, &body, &rd);
  pthread_mutex_unlock(&fs->mu);
  if (rc) {
    if (errno == EPERM && fs->err_code == VM_EXIT_STATE && !last && strstr(fs->err, " is busy")) return -1;
    if (errno == EPERM) return vm_fail(fs->err_code, "%s", fs->err); /* the server's words */
    return vm_fail_errno(VM_EXIT_FAIL, "cannot lock '%s'%s%s", fs->shown, *fs->err ? ": " : "", fs->err);
  }
  char *name = vb_rd_str(&rd, 255);
  free(body);
  if (!name || !vb_lock_name_span(name) || vb_lock_name_span(name) != strlen(name)) {
    free(name);
    return vm_fail(VM_EXIT_FAIL, "'%s' answered the lock with no lock name", fs->shown);
  }
  free(fs->lock_name);
  fs->lock_name = name;
  return 0;
}

int vb_fs_lock(struct vb_fs *fs, bool exclusive, int wait_s)
{
  if (!fs->rem) return vb_lock_take_as(fs->path, fs->shown, exclusive, wait_s, &fs->lock);
  /* A second at a time, so that an interrupt here is seen at once, and a server
   * whose client is gone stops waiting soon. */
  struct timespec t0, now;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (;;) {
    clock_gettime(CLOCK_MONOTONIC, &now);
    long left = wait_s > 0 ? wait_s - (long)(now.tv_sec - t0.tv_sec) : 0;
    int rc = lock_once(fs, exclusive, left > 0 ? 1 : 0, left <= 0);
    if (rc >= 0) return rc;
    if (vm_interrupted()) return vm_fail_interrupted();
  }
}

bool vb_fs_lock_held(struct vb_fs *fs)
{
  if (!fs->rem) return fs->lock && vb_lock_held(fs->lock);
  if (!fs->lock_name) return false;
  struct vb_buf b;
  struct vb_rd rd;
  unsigned char *body;
  req(&b, VB_OP_LOCKHELD);
  pthread_mutex_lock(&fs->mu);
  int rc = call(fs, &b, &body, &rd);
  pthread_mutex_unlock(&fs->mu);
  /* A connection that broke is no lock taken over: the next call says what broke. */
  bool held = rc == 0 ? vb_rd_u32(&rd) == 1 && vb_rd_done(&rd) : errno != EPERM && !fs->err_code && *fs->err;
  free(body);
  return held;
}

const char *vb_fs_lock_name(const struct vb_fs *fs)
{
  if (!fs->rem) return fs->lock ? vb_lock_name(fs->lock) : "";
  return fs->lock_name ? fs->lock_name : "";
}

bool vb_fs_name_alive(struct vb_fs *fs, const char *owner)
{
  if (!fs->rem) return vb_lock_name_alive(fs->path, owner);
  struct vb_buf b;
  struct vb_rd rd;
  unsigned char *body;
  req(&b, VB_OP_ALIVE);
  vb_buf_str(&b, owner);
  pthread_mutex_lock(&fs->mu);
  int rc = call(fs, &b, &body, &rd);
  pthread_mutex_unlock(&fs->mu);
  /* Unknown is alive: nothing of a live writer is removed. */
  bool alive = rc != 0 || vb_rd_u32(&rd) != 0 || !vb_rd_done(&rd);
  free(body);
  return alive;
}

void vb_fs_unlock(struct vb_fs *fs)
{
  if (!fs->rem) {
    vb_lock_release(fs->lock);
    fs->lock = NULL;
    return;
  }
  if (!fs->lock_name) return;
  struct vb_buf b;
  struct vb_rd rd;
  unsigned char *body;
  req(&b, VB_OP_UNLOCK);
  pthread_mutex_lock(&fs->mu);
  call(fs, &b, &body, &rd);
  pthread_mutex_unlock(&fs->mu);
  free(body);
  free(fs->lock_name);
  fs->lock_name = NULL;
}
