/* Small helpers: time, string vectors, quoting, whole-file reads. */
#include <ctype.h>
#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <libgen.h>
#include <sys/random.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "vmkit-base.h"

int64_t vm_now_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void vm_sleep_ms(int ms)
{
  struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };
  while (nanosleep(&ts, &ts) == -1 && errno == EINTR && !vm_interrupted())
    ;
}

static _Noreturn void oom(void)
{
  fprintf(stderr, "%s: out of memory\n", vm_progname);
  exit(VM_EXIT_FAIL);
}

static void *xrealloc(void *p, size_t n)
{
  void *q = realloc(p, n);
  if (!q) oom();
  return q;
}

static char *xstrdup(const char *s)
{
  char *d = strdup(s);
  if (!d) oom();
  return d;
}

char *vm_strdup(const char *s) { return s ? xstrdup(s) : NULL; }

void vm_strv_add(struct vm_strv *a, const char *s)
{
  if (a->n + 2 > a->cap) {
    a->cap = a->cap ? a->cap * 2 : 8;
    a->v = xrealloc(a->v, a->cap * sizeof *a->v);
  }
  a->v[a->n++] = xstrdup(s);
  a->v[a->n] = NULL;
}

void vm_strv_addf(struct vm_strv *a, const char *fmt, ...)
{
  va_list ap;
  char *s;
  va_start(ap, fmt);
  if (vasprintf(&s, fmt, ap) < 0) s = NULL;
  va_end(ap);
  if (!s) oom();
  vm_strv_add(a, s);
  free(s);
}

void vm_strv_free(struct vm_strv *a)
{
  for (size_t i = 0; i < a->n; i++) free(a->v[i]);
  free(a->v);
  a->v = NULL;
  a->n = a->cap = 0;
}

bool vm_strv_contains(char *const *v, const char *s)
{
  for (size_t i = 0; v && v[i]; i++)
    if (strcmp(v[i], s) == 0) return true;
  return false;
}

char *vm_strdup_printf(const char *fmt, ...)
{
  va_list ap;
  char *s;
  va_start(ap, fmt);
  if (vasprintf(&s, fmt, ap) < 0) s = NULL;
  va_end(ap);
  if (!s) oom();
  return s;
}

char *vm_shell_quote(const char *s)
{
  if (*s && strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                      "0123456789_-+=.,/:@%") == strlen(s))
    return xstrdup(s);
  size_t n = 2;
  for (const char *p = s; *p; p++) n += *p == '\'' ? 4 : 1;
  char *q = xrealloc(NULL, n + 1), *o = q;
  *o++ = '\'';
  for (const char *p = s; *p; p++) {
    if (*p == '\'') { memcpy(o, "'\\''", 4); o += 4; }
    else *o++ = *p;
  }
  *o++ = '\'';
  *o = '\0';
  return q;
}

char *vm_argv_str(char *const argv[])
{
  size_t len = 1;
  char *out = xstrdup("");
  for (size_t i = 0; argv[i]; i++) {
    CLEANUP_FREE char *q = vm_shell_quote(argv[i]);
    len += strlen(q) + 1;
    out = xrealloc(out, len);
    if (i) strcat(out, " ");
    strcat(out, q);
  }
  return out;
}

char *vm_read_fd(int fd, size_t max, size_t *len)
{
  /* Read to the end, not to the size: files of /proc say they are empty, and a
   * pipe has none. A regular file's size is only the room to start with. */
  struct stat st;
  size_t cap = 4096, got = 0;
  if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0)
    cap = (size_t)st.st_size <= max ? (size_t)st.st_size + 1 : max + 1;
  char *buf = xrealloc(NULL, cap + 1);
  for (;;) {
    if (got == cap) {
      if (cap > max) {
        free(buf);
        errno = EFBIG;
        return NULL;
      }
      cap *= 2;
      buf = xrealloc(buf, cap + 1);
    }
    ssize_t r = read(fd, buf + got, cap - got);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      int e = errno;
      free(buf);
      errno = e;
      return NULL;
    }
    if (r == 0) break;
    got += (size_t)r;
  }
  if (got > max) {
    free(buf);
    errno = EFBIG;
    return NULL;
  }
  buf[got] = '\0';
  if (len) *len = got;
  return buf;
}

char *vm_read_file(const char *path, size_t max, size_t *len)
{
  CLEANUP_CLOSE int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return NULL;
  struct stat st;
  if (fstat(fd, &st) < 0) return NULL;
  if (!S_ISREG(st.st_mode) || (size_t)st.st_size > max) {
    errno = S_ISREG(st.st_mode) ? EFBIG : EINVAL;
    return NULL;
  }
  return vm_read_fd(fd, max, len);
}

char *vm_read_first_line(const char *path)
{
  char *s = vm_read_file(path, 65536, NULL);
  if (s) s[strcspn(s, "\r\n")] = '\0';
  return s;
}

int vm_write_file_atomic(const char *path, const char *data, size_t len, unsigned mode)
{
  /* A temporary name of this write's own (mkstemp: O_EXCL, random), so that two
   * writers never truncate or rename each other's half-written file. */
  CLEANUP_FREE char *tmp = vm_strdup_printf("%s.XXXXXX", path);
  int fd = mkostemp(tmp, O_CLOEXEC);
  if (fd < 0) return -1;
  int e = 0;
  if (fchmod(fd, mode) < 0) e = errno;
  size_t off = 0;
  while (!e && off < len) {
    ssize_t w = write(fd, data + off, len - off);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) e = errno;
    else off += (size_t)w;
  }
  if (!e && fsync(fd) < 0) e = errno;
  if (close(fd) < 0 && !e) e = errno;
  if (!e && rename(tmp, path) < 0) e = errno;
  if (e) {
    unlink(tmp);
    errno = e;
    return -1;
  }
  /* The rename is durable only once the directory is on disk too. */
  CLEANUP_FREE char *copy = vm_strdup(path);
  return vm_fsync_dir(dirname(copy));
}

int vm_fsync_dir(const char *dir)
{
  int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return -1;
  int e = fsync(dfd) < 0 ? errno : 0;
  close(dfd);
  errno = e;
  return e ? -1 : 0;
}

void vm_iso_time(char buf[static 32])
{
  time_t t = time(NULL);
  struct tm tm;
  gmtime_r(&t, &tm);
  strftime(buf, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

void vm_uuid_random(char buf[static 37])
{
  unsigned char b[16];
  size_t got = 0;
  while (got < sizeof b) {
    ssize_t r = getrandom(b + got, sizeof b - got, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) oom(); /* cannot happen on Linux 3.17+ without GRND_NONBLOCK */
    got += (size_t)r;
  }
  b[6] = (unsigned char)((b[6] & 0x0f) | 0x40); /* version 4 */
  b[8] = (unsigned char)((b[8] & 0x3f) | 0x80); /* RFC 4122 variant */
  snprintf(buf, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
           b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
           b[14], b[15]);
}

bool vm_strv_remove_one(struct vm_strv *a, const char *s)
{
  for (size_t i = 0; i < a->n; i++) {
    if (strcmp(a->v[i], s) != 0) continue;
    free(a->v[i]);
    a->v[i] = a->v[--a->n];
    a->v[a->n] = NULL;
    return true;
  }
  return false;
}

char *vm_strv_lines(const struct vm_strv *a, size_t *len)
{
  size_t n = 0;
  for (size_t i = 0; i < a->n; i++) n += strlen(a->v[i]) + 1;
  char *text = malloc(n + 1), *p = text;
  if (!text) abort();
  *p = '\0';
  for (size_t i = 0; i < a->n; i++) p = stpcpy(stpcpy(p, a->v[i]), "\n");
  if (len) *len = n;
  return text;
}

char *vm_strv_join_quoted(char *const *v)
{
  size_t n = 0;
  while (v && v[n]) n++;
  char *out = xstrdup("");
  for (size_t i = 0; i < n; i++) {
    char *next = vm_strdup_printf("%s%s'%s'", out, i == 0 ? "" : i + 1 == n ? " and " : ", ", v[i]);
    free(out);
    out = next;
  }
  return out;
}

const char *vm_machine_id(void)
{
  static char id[256];
  if (id[0]) return id;
  CLEANUP_FREE char *m = vm_read_first_line("/etc/machine-id");
  if (m && *m) snprintf(id, sizeof id, "%s", m);
  else if (gethostname(id, sizeof id - 1) < 0 || !id[0]) snprintf(id, sizeof id, "unknown");
  return id;
}

int vm_remove_tree(const char *path)
{
  struct stat st;
  if (lstat(path, &st) < 0) return 0;
  if (S_ISDIR(st.st_mode)) {
    DIR *d = opendir(path);
    if (d) {
      struct dirent *e;
      while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        CLEANUP_FREE char *sub = vm_strdup_printf("%s/%s", path, e->d_name);
        vm_remove_tree(sub);
      }
      closedir(d);
    }
    return rmdir(path);
  }
  return unlink(path);
}

/* A run's private scratch folder, ${TMPDIR:-/var/tmp}/vmkit-WHAT.PID.XXXXXX, mode
 * 0700 (a customized overlay holds a password hash). A run killed outright cannot
 * remove its own: folders of runs whose process is gone are removed first. */
char *vm_scratch_dir(const char *what)
{
  const char *tmp = getenv("TMPDIR");
  if (!tmp || !*tmp) tmp = "/var/tmp";
  CLEANUP_FREE char *prefix = vm_strdup_printf("vmkit-%s.", what);
  DIR *d = opendir(tmp);
  for (struct dirent *e; d && (e = readdir(d));) {
    if (strncmp(e->d_name, prefix, strlen(prefix)) != 0) continue;
    char *end;
    long pid = strtol(e->d_name + strlen(prefix), &end, 10);
    if (pid <= 0 || *end != '.' || (kill((pid_t)pid, 0) < 0 && errno != ESRCH) || kill((pid_t)pid, 0) == 0) continue;
    CLEANUP_FREE char *old = vm_strdup_printf("%s/%s", tmp, e->d_name);
    vm_remove_tree(old);
  }
  if (d) closedir(d);
  char *dir = vm_strdup_printf("%s/%s%d.XXXXXX", tmp, prefix, (int)getpid());
  if (!mkdtemp(dir)) {
    vm_fail_errno(VM_EXIT_FAIL, "cannot make a scratch folder in '%s'", tmp);
    free(dir);
    return NULL;
  }
  return dir;
}

int vm_uuid_canonical(const char *s, char out[37])
{
  if (!s || strlen(s) != 36) return -1;
  for (int i = 0; i < 36; i++) {
    bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash ? s[i] != '-' : !isxdigit((unsigned char)s[i])) return -1;
    out[i] = (char)tolower((unsigned char)s[i]);
  }
  out[36] = '\0';
  return 0;
}

void vm_sanitize(char *s)
{
  for (unsigned char *p = (unsigned char *)s; p && *p; p++) {
    if (*p < 0x20 || *p == 0x7f) *p = ' ';
    else if (p[0] == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f) p[0] = p[1] = ' ';
  }
}

void vm_cut_utf8(char *s, size_t max)
{
  size_t n = strlen(s);
  if (n <= max) return;
  /* Back to the start of the character that would be cut. */
  while (max > 0 && ((unsigned char)s[max] & 0xc0) == 0x80) max--;
  s[max] = '\0';
}
