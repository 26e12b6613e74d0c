/* Locks between runs on one machine: a file per key in the lock directory, locked
 * with fcntl(2). The kernel releases the lock when its process dies, however it
 * dies, so a lock never outlives its holder and no stale lock needs breaking.
 * (POSIX locks belong to the process and go with the first close of any descriptor
 * of the file: this module opens each lock file once and keeps it open.) */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vmkit-base.h"

struct vm_lock {
  char *key;
  int fd;
  bool shared;
  int refs;
  struct vm_lock *next;
};
static struct vm_lock *held;
/* The list is shared by the threads of a tool that works on items side by side
 * (vmpatch apply --parallel); the file locks themselves belong to the process. */
static pthread_mutex_t held_mutex = PTHREAD_MUTEX_INITIALIZER;

static const char *lock_dir(void)
{
  const char *d = getenv("VMKIT_LOCK_DIR");
  return d && *d ? d : "/run/vmkit/locks";
}

/* Keys become file names: anything but letters, digits, '.', '_' and '-' is '_'. */
static char *lock_path(const char *key)
{
  CLEANUP_FREE char *safe = vm_strdup(key);
  for (char *p = safe; *p; p++)
    if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || strchr("._-", *p)))
      *p = '_';
  if (safe[0] == '.') safe[0] = '_';
  return vm_strdup_printf("%s/%s.lock", lock_dir(), safe);
}

static int make_dir(const char *dir)
{
  if (mkdir(dir, 0755) == 0 || errno == EEXIST) return 0;
  if (errno != ENOENT) return -1;
  CLEANUP_FREE char *parent = vm_strdup(dir);
  char *slash = strrchr(parent, '/');
  if (!slash || slash == parent) return -1;
  *slash = '\0';
  if (make_dir(parent) < 0) return -1;
  return mkdir(dir, 0755) == 0 || errno == EEXIST ? 0 : -1;
}

/* "vmsnap create web1 s1" from /proc/PID/cmdline, for messages. */
static char *describe(pid_t pid)
{
  CLEANUP_FREE char *path = vm_strdup_printf("/proc/%d/cmdline", (int)pid);
  size_t len = 0;
  CLEANUP_FREE char *cmd = vm_read_file(path, 1 << 16, &len);
  if (!cmd || !len) return vm_strdup_printf("pid %d", (int)pid);
  struct vm_strv words = { 0 };
  for (size_t off = 0; off < len && words.n < 8; off += strlen(cmd + off) + 1) {
    const char *w = cmd + off;
    if (words.n == 0 && strrchr(w, '/')) w = strrchr(w, '/') + 1;
    if (*w) vm_strv_add(&words, w);
  }
  char *joined = vm_argv_str(words.v);
  vm_strv_free(&words);
  char *out = vm_strdup_printf("%s (pid %d)", joined, (int)pid);
  free(joined);
  return out;
}

static pid_t holder_of(int fd, bool shared)
{
  struct flock fl = { .l_type = shared ? F_RDLCK : F_WRLCK, .l_whence = SEEK_SET };
  if (fcntl(fd, F_GETLK, &fl) < 0) return -1;
  return fl.l_type == F_UNLCK ? 0 : fl.l_pid;
}

pid_t vm_lock_holder(const char *key)
{
  /* Checked first: opening and closing a second descriptor of a file this process
   * holds a lock on would release that lock. */
  for (struct vm_lock *l = held; l; l = l->next)
    if (strcmp(l->key, key) == 0) return getpid();
  CLEANUP_FREE char *path = lock_path(key);
  CLEANUP_CLOSE int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno == ENOENT ? 0 : -1;
  return holder_of(fd, false);
}

int vm_lock_take(const char *key, bool shared, int wait_s, const char *what, struct vm_lock **out)
{
  *out = NULL;
  pthread_mutex_lock(&held_mutex);
  for (struct vm_lock *l = held; l; l = l->next) {
    if (strcmp(l->key, key) != 0) continue;
    /* Already ours. A shared lock does not become exclusive here: a second
     * descriptor of the file would release the first lock when closed. */
    bool bad = l->shared && !shared;
    if (!bad) l->refs++;
    pthread_mutex_unlock(&held_mutex);
    if (bad) return vm_fail(VM_EXIT_FAIL, "internal error: %s is locked shared already", what);
    *out = l;
    return 0;
  }
  pthread_mutex_unlock(&held_mutex);
  if (make_dir(lock_dir()) < 0)
    return vm_fail_errno(VM_EXIT_FAIL, "cannot create the lock directory '%s'", lock_dir());
  CLEANUP_FREE char *path = lock_path(key);
  int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return vm_fail_errno(VM_EXIT_FAIL, "cannot open lock file '%s'", path);
  int64_t deadline = vm_now_ms() + (int64_t)wait_s * 1000;
  for (;;) {
    struct flock fl = { .l_type = shared ? F_RDLCK : F_WRLCK, .l_whence = SEEK_SET };
    if (fcntl(fd, F_SETLK, &fl) == 0) break;
    if (errno != EAGAIN && errno != EACCES && errno != EINTR) {
      int rc = vm_fail_errno(VM_EXIT_FAIL, "cannot lock '%s'", path);
      close(fd);
      return rc;
    }
    if (vm_interrupted()) {
      close(fd);
      return vm_fail_interrupted();
    }
    if (vm_now_ms() >= deadline) {
      pid_t pid = holder_of(fd, shared);
      close(fd);
      CLEANUP_FREE char *who = pid > 0 ? describe(pid) : vm_strdup("another run");
      return vm_fail(VM_EXIT_STATE, "%s is busy: %s holds its lock%s", what, who,
                     wait_s ? "" : " (wait for it with --lock-wait SECONDS)");
    }
    vm_sleep_ms(100);
  }
  struct vm_lock *l = calloc(1, sizeof *l);
  if (!l) {
    close(fd);
    return vm_fail(VM_EXIT_FAIL, "out of memory");
  }
  l->key = vm_strdup(key);
  l->fd = fd;
  l->shared = shared;
  l->refs = 1;
  pthread_mutex_lock(&held_mutex);
  l->next = held;
  held = l;
  pthread_mutex_unlock(&held_mutex);
  *out = l;
  return 0;
}

void vm_lock_release(struct vm_lock *l)
{
  if (!l) return;
  pthread_mutex_lock(&held_mutex);
  bool last = --l->refs == 0;
  for (struct vm_lock **p = &held; last && *p; p = &(*p)->next) {
    if (*p != l) continue;
    *p = l->next;
    break;
  }
  pthread_mutex_unlock(&held_mutex);
  if (!last) return;
  close(l->fd); /* releases the fcntl lock */
  free(l->key);
  free(l);
}
