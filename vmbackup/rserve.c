/* `vmbackup serve --stdio`: the far side of an ssh:// repository. It reads
 * requests (proto.h) on standard input and answers on standard output, doing
 * each one on the local folder the client named (fs.h's local calls), within
 * the rules it was started with:
 *   --restrict-to-path PATH  the repository must be PATH or under it (repeatable);
 *   --append-only            nothing is removed or replaced but tmp/ files of
 *                            dead writers: no prune, no compact, no new key.
 * The rules are the server's, so that they hold whoever the client is: put the
 * command in the ssh key's authorized_keys line (command="..."), as with borg.
 * The client never sends its key: what crosses is sealed already.
 *
 * At the end of its input (the client ended, was killed, or ssh dropped) the
 * server removes the files being written that were not committed, releases the
 * lock it holds for the client, and ends. */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fs.h"
#include "proto.h"
#include "rlock.h"
#include "vmbackup.h"

struct handle {
  uint32_t id; /* the client's name for it: never reused */
  int h;       /* the local one (a descriptor) */
  bool writer;
  int err; /* a writer's first failed write */
  char *tmp;
};

struct server {
  struct vb_fs *fs;
  char *root;
  bool append_only;
  struct handle *hs;
  size_t nh;
  uint32_t next_id;
};

/* At most this many files open for one client. */
#define HANDLES_MAX 1024


/* Replies: status 0 with the fields of b (built after the status). */
static int reply(struct vb_buf *b) { return vb_msg_send(1, b); }

static int reply_status(int32_t status)
{
  struct vb_buf b;
  vb_buf_init(&b);
  vb_buf_u32(&b, (uint32_t)status);
  int rc = reply(&b);
  vb_buf_free(&b);
  return rc;
}

static int reply_errno(int e) { return reply_status(e > 0 ? e : EIO); }

/* A refusal or a failure in words: minus the exit code, then the message. */
static int reply_msg(int code, const char *msg)
{
  struct vb_buf b;
  vb_buf_init(&b);
  vb_buf_u32(&b, (uint32_t)-code);
  size_t n = strlen(msg);
  memcpy(vb_buf_space(&b, n), msg, n);
  int rc = reply(&b);
  vb_buf_free(&b);
  return rc;
}

static int refuse(struct server *s, const char *what, const char *rel)
{
  CLEANUP_FREE char *m = vm_strdup_printf("repository '%s' is served append-only: %s '%s' refused (run it on the "
                                          "machine that holds the repository)", s->root, what, rel);
  return reply_msg(VM_EXIT_STATE, m);
}

static struct handle *find(struct server *s, uint32_t id, bool writer)
{
  for (size_t i = 0; i < s->nh; i++)
    if (s->hs[i].id == id && s->hs[i].writer == writer) return &s->hs[i];
  return NULL;
}

static void drop(struct server *s, struct handle *x)
{
  free(x->tmp);
  *x = s->hs[--s->nh];
}

static uint32_t add(struct server *s, int h, bool writer, const char *tmp)
{
  s->hs = realloc(s->hs, (s->nh + 1) * sizeof *s->hs);
  if (!s->hs) abort();
  uint32_t id = ++s->next_id;
  s->hs[s->nh++] = (struct handle){ .id = id, .h = h, .writer = writer, .tmp = tmp ? vm_strdup(tmp) : NULL };
  return id;
}

/* A tmp/ file this client may remove: its own writer's (named after its lock),
 * or one whose writer is gone; never a live writer's, nor one that names no
 * writer. */
static bool tmp_removable(struct server *s, const char *rel)
{
  size_t span = vb_lock_name_span(rel + 4);
  if (!span) return false;
  CLEANUP_FREE char *owner = strndup(rel + 4, span);
  if (!owner) abort();
  return !strcmp(owner, vb_fs_lock_name(s->fs)) || !vb_fs_name_alive(s->fs, owner);
}

/* The repository the client named, within --restrict-to-path: 0 with *root, or
 * an exit code with *msg. */
static int resolve_root(const char *path, char **restrict_to, size_t nr, char **root, char **msg)
{
  CLEANUP_FREE char *abs = NULL;
  if (path[0] == '/') {
    abs = vm_strdup(path);
  } else {
    const char *home = getenv("HOME");
    abs = vm_strdup_printf("%s/%s", home && *home ? home : "/", path);
  }
  for (size_t l = strlen(abs); l > 1 && abs[l - 1] == '/'; l--) abs[l - 1] = 0;
  /* Not in a hidden folder (~/.ssh, ~/.config): its "config" would be theirs. */
  if (strstr(abs, "/.")) {
    *msg = vm_strdup_printf("repository '%s': a path with a name that starts with '.' is refused", path);
    return VM_EXIT_USAGE;
  }
  /* The folder's real place; one that does not exist yet (init) by its parent's. */
  char real[PATH_MAX];
  if (!realpath(abs, real)) {
    CLEANUP_FREE char *parent = vm_strdup(abs);
    char *slash = strrchr(parent, '/');
    const char *base = slash ? slash + 1 : parent;
    if (slash == parent) parent[1] = 0;
    else if (slash) *slash = 0;
    char preal[PATH_MAX];
    if (errno != ENOENT || !*base || !strcmp(base, ".") || !strcmp(base, "..") || !realpath(parent, preal)) {
      *msg = vm_strdup_printf("no folder '%s' on the server for a repository", path);
      return VM_EXIT_NOTFOUND;
    }
    if ((size_t)snprintf(real, sizeof real, "%s/%s", strcmp(preal, "/") ? preal : "", base) >= sizeof real) {
      *msg = vm_strdup_printf("repository path '%s' is too long", path);
      return VM_EXIT_USAGE;
    }
  }
  /* The same for where it really is (a link may lead into one). */
  if (strstr(real, "/.")) {
    *msg = vm_strdup_printf("repository '%s': its real path '%s' has a name that starts with '.': refused", path, real);
    return VM_EXIT_USAGE;
  }
  bool ok = nr == 0;
  for (size_t i = 0; i < nr && !ok; i++) {
    char allowed[PATH_MAX];
    if (!realpath(restrict_to[i], allowed)) continue;
    size_t l = strlen(allowed);
    ok = !strcmp(allowed, "/") || (!strncmp(real, allowed, l) && (real[l] == 0 || real[l] == '/'));
  }
  if (!ok) {
    *msg = vm_strdup_printf("repository '%s' is outside the paths this server is restricted to", path);
    return VM_EXIT_STATE;
  }
  *root = vm_strdup(real);
  return 0;
}

/* One request. -1 when the reply cannot be sent (the client is gone). */
static int handle(struct server *s, const unsigned char *msg, size_t len)
{
  struct vb_rd rd;
  vb_rd_init(&rd, msg, len);
  uint8_t op = vb_rd_u8(&rd);
  struct vb_buf b;
  switch (op) {
  case VB_OP_READ: {
    CLEANUP_FREE char *rel = vb_rd_str(&rd, 1024);
    uint64_t max = vb_rd_u64(&rd);
    if (!vb_rd_done(&rd) || !vb_proto_rel_ok(rel, false)) return reply_errno(EINVAL);
    size_t n;
    CLEANUP_FREE char *data = vb_fs_read(s->fs, rel, max < VB_IO_MAX ? (size_t)max : VB_IO_MAX, &n);
    if (!data) return reply_errno(errno);
    vb_buf_init(&b);
    vb_buf_u32(&b, 0);
    vb_buf_bytes(&b, data, n);
    break;
  }
  case VB_OP_LIST: {
    CLEANUP_FREE char *rel = vb_rd_str(&rd, 1024);
    if (!vb_rd_done(&rd) || !(vb_proto_rel_ok(rel, true) || !strcmp(rel, "locks"))) return reply_errno(EINVAL);
    struct vm_strv names = { 0 };
    if (vb_fs_list(s->fs, rel, &names) < 0) return reply_errno(errno);
    /* tmp/ shows a client its own files and those of dead writers (what it
     * may remove), never a live writer's: their names are the packs and
     * snapshots about to be committed, which another client could take first. */
    bool tmp = !strcmp(rel, "tmp");
    for (size_t i = 0; i < names.n; i++) {
      CLEANUP_FREE char *t = tmp ? vm_strdup_printf("tmp/%s", names.v[i]) : NULL;
      if (strlen(names.v[i]) > 255 || (tmp && !tmp_removable(s, t))) names.v[i][0] = 0;
    }
    vb_buf_init(&b);
    vb_buf_u32(&b, 0);
    size_t n = 0;
    for (size_t i = 0; i < names.n; i++) n += names.v[i][0] != 0;
    vb_buf_u32(&b, (uint32_t)n);
    for (size_t i = 0; i < names.n; i++)
      if (names.v[i][0]) vb_buf_str(&b, names.v[i]);
    vm_strv_free(&names);
    if (b.len > VB_MSG_MAX) {
      vb_buf_free(&b);
      return reply_errno(E2BIG);
    }
    break;
  }
  case VB_OP_SIZE: {
    CLEANUP_FREE char *rel = vb_rd_str(&rd, 1024);
    uint64_t size;
    if (!vb_rd_done(&rd) || !vb_proto_rel_ok(rel, true)) return reply_errno(EINVAL);
    if (vb_fs_size(s->fs, rel, &size) < 0) return reply_errno(errno);
    vb_buf_init(&b);
    vb_buf_u32(&b, 0);
    vb_buf_u64(&b, size);
    break;
  }
  case VB_OP_UNLINK: case VB_OP_RMDIR: case VB_OP_MKDIR: case VB_OP_SYNCDIR: {
    CLEANUP_FREE char *rel = vb_rd_str(&rd, 1024);
    if (!vb_rd_done(&rd) || !rel) return reply_errno(EINVAL);
    bool ok = op == VB_OP_UNLINK ? vb_proto_rel_ok(rel, false) : vb_proto_dir_ok(rel);
    if (!ok) return reply_errno(EINVAL);
    if (op == VB_OP_UNLINK && vb_proto_in_tmp(rel)) {
      if (!tmp_removable(s, rel)) return s->append_only ? refuse(s, "removing", rel) : reply_errno(EBUSY);
    } else if (s->append_only && (op == VB_OP_UNLINK || op == VB_OP_RMDIR)) {
      return refuse(s, "removing", rel);
    }
    int rc = op == VB_OP_UNLINK ? vb_fs_unlink(s->fs, rel)
             : op == VB_OP_RMDIR ? vb_fs_rmdir(s->fs, rel)
             : op == VB_OP_MKDIR ? vb_fs_mkdir(s->fs, rel)
                                 : vb_fs_sync_dir(s->fs, rel);
    return reply_status(rc < 0 ? (errno ? errno : EIO) : 0);
  }
  case VB_OP_CREATE: {
    CLEANUP_FREE char *rel = vb_rd_str(&rd, 1024);
    if (!vb_rd_done(&rd) || !vb_proto_rel_ok(rel, false) || !vb_proto_in_tmp(rel)) return reply_errno(EINVAL);
    /* Named after this client's lock: a writer holds one, and its files are its own. */
    const char *mine = vb_fs_lock_name(s->fs);
    size_t ml = strlen(mine);
    if (!ml || strncmp(rel + 4, mine, ml) || rel[4 + ml] != '.') return reply_errno(EACCES);
    if (s->nh >= HANDLES_MAX) return reply_errno(EMFILE);
    int h = vb_fs_create(s->fs, rel);
    if (h < 0) return reply_errno(errno);
    uint32_t id = add(s, h, true, rel);
    vb_buf_init(&b);
    vb_buf_u32(&b, 0);
    vb_buf_u32(&b, id);
    break;
  }
  case VB_OP_WRITE: {
    uint32_t h = vb_rd_u32(&rd);
    size_t n;
    const unsigned char *p = vb_rd_bytes(&rd, &n);
    struct handle *x = find(s, h, true);
    if (!x || !p || !vb_rd_done(&rd)) {
      if (x && !x->err) x->err = EPROTO;
      return 0; /* no reply: the commit says it */
    }
    if (!x->err && vb_fs_write(s->fs, x->h, p, n) < 0) x->err = errno ? errno : EIO;
    return 0;
  }
  case VB_OP_COMMIT: {
    uint32_t h = vb_rd_u32(&rd);
    CLEANUP_FREE char *dst = vb_rd_str(&rd, 1024);
    uint32_t replace = vb_rd_u32(&rd);
    struct handle *x = find(s, h, true);
    if (!x) return reply_errno(EBADF);
    if (!vb_rd_done(&rd) || !vb_proto_rel_ok(dst, false) || !vb_proto_dest_ok(dst, s->append_only) || replace > 1 ||
        (replace && strcmp(dst, "config"))) {
      vb_fs_abort(s->fs, x->h);
      drop(s, x);
      return reply_errno(EINVAL);
    }
    if (x->err || (replace && s->append_only)) {
      int e = x->err;
      vb_fs_abort(s->fs, x->h);
      drop(s, x);
      return e ? reply_errno(e) : refuse(s, "replacing", dst);
    }
    /* A pack's index only once the pack is in place: a client cannot name
     * a pack another is still writing. */
    if (!strncmp(dst, "index/", 6) && strncmp(dst + 6, "merged.", 7)) {
      CLEANUP_FREE char *pack = vm_strdup_printf("packs/%.2s/%s", dst + 6, dst + 6);
      if (vb_fs_exists(s->fs, pack) != 1) {
        vb_fs_abort(s->fs, x->h);
        drop(s, x);
        return reply_errno(ENOENT);
      }
    }
    int rc = vb_fs_commit(s->fs, x->h, dst, replace);
    int e = errno;
    drop(s, x);
    return reply_status(rc < 0 ? (e ? e : EIO) : 0);
  }
  case VB_OP_ABORT: {
    struct handle *x = find(s, vb_rd_u32(&rd), true);
    if (x && vb_rd_done(&rd)) {
      vb_fs_abort(s->fs, x->h);
      drop(s, x);
    }
    return 0;
  }
  case VB_OP_ROPEN: {
    CLEANUP_FREE char *rel = vb_rd_str(&rd, 1024);
    if (!vb_rd_done(&rd) || !vb_proto_rel_ok(rel, false)) return reply_errno(EINVAL);
    if (s->nh >= HANDLES_MAX) return reply_errno(EMFILE);
    uint64_t size;
    int h = vb_fs_ropen(s->fs, rel, &size);
    if (h < 0) return reply_errno(errno);
    uint32_t id = add(s, h, false, NULL);
    vb_buf_init(&b);
    vb_buf_u32(&b, 0);
    vb_buf_u32(&b, id);
    vb_buf_u64(&b, size);
    break;
  }
  case VB_OP_PREAD: {
    uint32_t h = vb_rd_u32(&rd);
    uint64_t off = vb_rd_u64(&rd);
    uint32_t n = vb_rd_u32(&rd);
    struct handle *x = find(s, h, false);
    if (!vb_rd_done(&rd) || n > VB_IO_MAX) return reply_errno(EINVAL);
    if (!x) return reply_errno(EBADF);
    vb_buf_init(&b);
    vb_buf_u32(&b, 0);
    vb_buf_u32(&b, n);
    if (vb_fs_pread(s->fs, x->h, vb_buf_space(&b, n), n, off) < 0) {
      int e = errno;
      vb_buf_free(&b);
      return reply_errno(e);
    }
    break;
  }
  case VB_OP_RCLOSE: {
    struct handle *x = find(s, vb_rd_u32(&rd), false);
    if (x && vb_rd_done(&rd)) {
      vb_fs_rclose(s->fs, x->h);
      drop(s, x);
    }
    return 0;
  }
  case VB_OP_LOCK: {
    uint32_t excl = vb_rd_u32(&rd), wait_s = vb_rd_u32(&rd);
    if (!vb_rd_done(&rd) || excl > 1 || wait_s > 86400) return reply_errno(EINVAL);
    if (*vb_fs_lock_name(s->fs)) return reply_errno(EALREADY);
    /* Nothing an append-only client may do needs it, and held it would stop
     * every other writer. */
    if (excl && s->append_only)
      return refuse(s, "the exclusive lock (prune, compact, a new key, check --repair) of", s->root);
    vm_errors_mute(true);
    int rc = vb_fs_lock(s->fs, excl, (int)wait_s);
    vm_errors_mute(false);
    if (rc) return reply_msg(rc, vm_last_error());
    vb_buf_init(&b);
    vb_buf_u32(&b, 0);
    vb_buf_str(&b, vb_fs_lock_name(s->fs));
    break;
  }
  case VB_OP_LOCKHELD:
    if (!vb_rd_done(&rd)) return reply_errno(EINVAL);
    vb_buf_init(&b);
    vb_buf_u32(&b, 0);
    vb_buf_u32(&b, vb_fs_lock_held(s->fs));
    break;
  case VB_OP_ALIVE: {
    CLEANUP_FREE char *owner = vb_rd_str(&rd, 255);
    if (!vb_rd_done(&rd)) return reply_errno(EINVAL);
    vb_buf_init(&b);
    vb_buf_u32(&b, 0);
    vb_buf_u32(&b, vb_fs_name_alive(s->fs, owner));
    break;
  }
  case VB_OP_UNLOCK:
    if (!vb_rd_done(&rd)) return reply_errno(EINVAL);
    vb_fs_unlock(s->fs);
    return reply_status(0);
  default:
    return reply_errno(ENOSYS);
  }
  int rc = reply(&b);
  vb_buf_free(&b);
  return rc;
}

int vb_serve_stdio(char **restrict_to, size_t nr, bool append_only)
{
  struct server s = { .append_only = append_only };
  /* A client that is gone is the end of the input, not a signal that kills
   * this process before it cleans up. */
  signal(SIGPIPE, SIG_IGN);
  /* Nothing but replies on standard output. */
  fflush(stdout);
  int rc = 0;
  for (;;) {
    unsigned char *msg;
    size_t len;
    int r = vb_msg_recv(0, VB_MSG_MAX, &msg, &len);
    if (r == 1) break; /* the client ended */
    if (r < 0) {
      rc = vm_fail_errno(VM_EXIT_FAIL, "serve --stdio: the client's message could not be read");
      break;
    }
    if (!s.fs) {
      /* The first message greets: the protocol's version and the repository. */
      struct vb_rd rd;
      vb_rd_init(&rd, msg, len);
      uint8_t op = vb_rd_u8(&rd);
      uint32_t version = vb_rd_u32(&rd);
      CLEANUP_FREE char *path = vb_rd_str(&rd, PATH_MAX);
      free(msg);
      if (op != VB_OP_HELLO || !vb_rd_done(&rd) || !path || !*path) {
        reply_errno(EPROTO);
        rc = vm_fail(VM_EXIT_FAIL, "serve --stdio: the client did not greet as vmbackup does");
        break;
      }
      CLEANUP_FREE char *why = NULL;
      int code = resolve_root(path, restrict_to, nr, &s.root, &why);
      if (code) {
        reply_msg(code, why);
        rc = code;
        break;
      }
      s.fs = vb_fs_local(s.root);
      struct vb_buf b;
      vb_buf_init(&b);
      vb_buf_u32(&b, 0);
      vb_buf_u32(&b, VB_PROTO_VERSION);
      vb_buf_u32(&b, append_only ? VB_HELLO_APPEND_ONLY : 0);
      (void)version; /* a client of another version reads ours and says so */
      int sr = reply(&b);
      vb_buf_free(&b);
      if (sr < 0) break;
      continue;
    }
    int hr = handle(&s, msg, len);
    free(msg);
    if (hr < 0) break;
  }
  /* What the client did not commit goes; its lock is released. */
  for (size_t i = 0; i < s.nh; i++) {
    if (s.hs[i].writer) vb_fs_abort(s.fs, s.hs[i].h);
    else vb_fs_rclose(s.fs, s.hs[i].h);
    free(s.hs[i].tmp);
  }
  free(s.hs);
  vb_fs_close(s.fs);
  free(s.root);
  return rc;
}
