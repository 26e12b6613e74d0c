/* The repository lock of vmbackup (rlock.h, man/vmbackup-repository.5 "Locks").
 *
 * Both kinds create their file first and look for the other kind after: a shared
 * holder writes locks/shared.NAME, then looks for locks/exclusive; an exclusive
 * holder writes locks/exclusive, then waits until no shared.* file is left. Of two
 * takers that race, the later one's look comes after the earlier one's file was
 * complete, so at least one of them sees the other and backs off: they never both
 * hold. (On NFS the look also follows the taker's own change to locks/, which
 * makes the client check its cached view of the folder against the server's.)
 *
 * No fcntl(2) locks, which NFS does not keep reliably; so a holder that dies
 * leaves its file behind, and the next taker has to tell a stale file from a live
 * one: by the holder's process on this machine, by the file's age on the file
 * server's clock for another machine. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "json.h"
#include "rlock.h"
#include "vmkit-base.h"

#define POLL_MS 200
#define FILE_MAX 4096 /* a lock file is a short JSON object: anything longer is not one */
#define HOST_MAX 64   /* of the host name in a lock's name */
#define BUSY (-1)     /* look(): the lock is held by another */

int vb_lock_touch_ms = 30000;

struct vb_lock {
  char *locks; /* DIR/locks */
  char *path;  /* our lock file */
  char *name;  /* vb_lock_name */
  char *text;  /* what we wrote in it */
  bool exclusive;
  bool sync_ready, touching, stop;
  pthread_t thread;
  pthread_mutex_t mu;
  pthread_cond_t cv;
};

/* ---- Who holds a lock ---------------------------------------------------------------- */

/* This process, as its lock file says it. */
struct self {
  char host[256];
  const char *machine;
  char *boot;
  pid_t pid;
  long long start;
};

/* The start time of a process (field 22 of /proc/PID/stat: clock ticks after
 * boot), which tells a process from a later one that got its PID; -1 when it
 * cannot be read. *zombie: it has ended and waits for its parent. */
static long long proc_start(pid_t pid, bool *zombie)
{
  CLEANUP_FREE char *path = vm_strdup_printf("/proc/%d/stat", (int)pid);
  CLEANUP_FREE char *s = vm_read_file(path, 4096, NULL);
  /* The command's name (field 2) may hold spaces and parentheses: fields are
   * counted after its last ')'. */
  char *p = s ? strrchr(s, ')') : NULL;
  if (!p) return -1;
  p++;
  for (int field = 3;; field++) {
    p += strspn(p, " ");
    if (!*p) return -1;
    if (field == 3 && zombie) *zombie = *p == 'Z' || *p == 'X';
    if (field == 22) {
      char *end;
      long long v = strtoll(p, &end, 10);
      return end == p || v < 0 ? -1 : v;
    }
    p += strcspn(p, " ");
  }
}

static void self_init(struct self *me)
{
  if (gethostname(me->host, sizeof me->host - 1) < 0 || !me->host[0]) snprintf(me->host, sizeof me->host, "unknown");
  me->host[sizeof me->host - 1] = '\0';
  /* A lock file with control characters in it is refused as unreadable. */
  for (char *p = me->host; *p; p++)
    if ((unsigned char)*p < 0x20 || *p == 0x7f) *p = '?';
  me->machine = vm_machine_id();
  me->boot = vm_read_first_line("/proc/sys/kernel/random/boot_id");
  if (!me->boot) me->boot = vm_strdup("");
  me->pid = getpid();
  me->start = proc_start(me->pid, NULL);
}

static void self_free(struct self *me)
{
  free(me->boot);
  me->boot = NULL;
}

/* ---- Names ----------------------------------------------------------------------------- */

static bool name_char(char c)
{
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
}

static void random_hex(char out[17])
{
  unsigned char b[8];
  size_t got = 0;
  while (got < sizeof b) {
    ssize_t r = getrandom(b + got, sizeof b - got, 0);
    if (r > 0) got += (size_t)r;
    else if (errno != EINTR) {
      /* Cannot happen on Linux 3.17+; the time still makes the name unlikely to clash. */
      uint64_t t = (uint64_t)vm_now_ms() ^ ((uint64_t)getpid() << 32);
      memcpy(b, &t, sizeof b);
      break;
    }
  }
  for (size_t i = 0; i < sizeof b; i++) snprintf(out + 2 * i, 3, "%02x", b[i]);
}

/* KIND.HOST.PID.RANDOM */
static char *new_name(const char *kind, const struct self *me)
{
  char host[HOST_MAX + 1], rnd[17];
  size_t n = 0;
  for (const char *p = me->host; *p && n < HOST_MAX; p++) host[n++] = name_char(*p) ? *p : '-';
  host[n] = '\0';
  random_hex(rnd);
  return vm_strdup_printf("%s.%s.%d.%s", kind, n ? host : "host", (int)me->pid, rnd);
}

size_t vb_lock_name_span(const char *s)
{
  const char *p = s;
  if (strncmp(p, "shared.", 7) == 0) p += 7;
  else if (strncmp(p, "exclusive.", 10) == 0) p += 10;
  else return 0;
  size_t n = 0;
  while (name_char(p[n])) n++;
  if (n == 0 || n > HOST_MAX || p[n] != '.') return 0;
  p += n + 1;
  n = strspn(p, "0123456789");
  if (n == 0 || n > 10 || p[n] != '.') return 0;
  p += n + 1;
  if (strspn(p, "0123456789abcdef") != 16) return 0;
  p += 16;
  return *p == '\0' || *p == '.' ? (size_t)(p - s) : 0;
}

/* ---- Lock files ------------------------------------------------------------------------ */

static char *encode(const char *kind, const char *name, const struct self *me)
{
  char since[32];
  vm_iso_time(since);
  CLEANUP_JSON json_object *o = json_object_new_object();
  json_object_object_add(o, "kind", json_object_new_string(kind));
  json_object_object_add(o, "name", json_object_new_string(name));
  json_object_object_add(o, "host", json_object_new_string(me->host));
  json_object_object_add(o, "machine", json_object_new_string(me->machine));
  json_object_object_add(o, "boot", json_object_new_string(me->boot));
  json_object_object_add(o, "pid", json_object_new_int(me->pid));
  json_object_object_add(o, "start", json_object_new_int64(me->start));
  json_object_object_add(o, "since", json_object_new_string(since));
  return vm_strdup_printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
}

/* A lock file as it was read. */
struct seen {
  char *text;
  size_t len;
  struct stat st;
  json_object *o; /* NULL: it cannot be read as a lock file */
  const char *kind, *name, *host, *machine, *boot, *since;
  long long pid, start;
};

static void seen_free(struct seen *s)
{
  free(s->text);
  json_object_put(s->o);
  memset(s, 0, sizeof *s);
}

/* Reads the file at path, content and status from one open file: 1, 0 when there
 * is none, -1 with errno. */
static int seen_read(const char *path, struct seen *s)
{
  memset(s, 0, sizeof *s);
  CLEANUP_CLOSE int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
  if (fd < 0) return errno == ENOENT ? 0 : -1;
  if (fstat(fd, &s->st) < 0) return -1;
  s->text = malloc(FILE_MAX + 2);
  if (!s->text) return -1;
  /* One byte more than a lock file may have, to know that it has more. */
  while (S_ISREG(s->st.st_mode) && s->len <= FILE_MAX) {
    ssize_t r = read(fd, s->text + s->len, FILE_MAX + 1 - s->len);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      int e = errno;
      seen_free(s);
      errno = e;
      return -1;
    }
    if (r == 0) break;
    s->len += (size_t)r;
  }
  s->text[s->len] = '\0';
  return 1;
}

/* A string member without control characters (they would go into messages). */
static const char *text_member(json_object *o, const char *key)
{
  json_object *v = vb_json_get(o, key, json_type_string);
  const char *t = v ? json_object_get_string(v) : NULL;
  for (const char *p = t; p && *p; p++)
    if ((unsigned char)*p < 0x20 || *p == 0x7f) return NULL;
  return t;
}

/* Untrusted text: anything but a whole lock object leaves s->o NULL. Members
 * this version does not know are allowed, for a later one's sake. */
static void seen_parse(struct seen *s)
{
  json_object *o;
  if (s->len > FILE_MAX || vb_json_parse(s->text, s->len, true, &o) != 0) return;
  int64_t pid, start;
  s->kind = text_member(o, "kind");
  s->name = text_member(o, "name");
  s->host = text_member(o, "host");
  s->machine = text_member(o, "machine");
  s->boot = text_member(o, "boot");
  s->since = text_member(o, "since");
  if (!s->kind || !s->name || !s->host || !s->machine || !s->boot || !s->since ||
      (strcmp(s->kind, "shared") != 0 && strcmp(s->kind, "exclusive") != 0) ||
      !vb_json_int(o, "pid", 1, INT32_MAX, &pid) || !vb_json_int(o, "start", 0, INT64_MAX, &start)) {
    json_object_put(o);
    s->kind = s->name = s->host = s->machine = s->boot = s->since = NULL;
    return;
  }
  s->o = o;
  s->pid = pid;
  s->start = start;
}

static bool same_file(const struct seen *a, const struct seen *b)
{
  return a->st.st_dev == b->st.st_dev && a->st.st_ino == b->st.st_ino && a->len == b->len &&
         memcmp(a->text, b->text, a->len) == 0;
}

/* ---- Staleness ------------------------------------------------------------------------ */

/* The file server's clock, learned once per look and only when needed: a file
 * touched with no time given gets the server's time (NFS sets it there). */
struct clock {
  const char *locks, *own, *tag; /* own: our lock file, when we have one */
  bool known;
  time_t now;
};

static int probe(struct clock *c, struct stat *st)
{
  CLEANUP_FREE char *path = vm_strdup_printf("%s/probe.%s", c->locks, c->tag);
  int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return -1;
  int rc = fstat(fd, st);
  close(fd);
  unlink(path);
  return rc;
}

static time_t server_now(struct clock *c)
{
  if (c->known) return c->now;
  struct stat st;
  if (c->own && utimensat(AT_FDCWD, c->own, NULL, 0) == 0 && stat(c->own, &st) == 0) c->now = st.st_mtim.tv_sec;
  else if (probe(c, &st) == 0) c->now = st.st_mtim.tv_sec;
  else {
    vm_debug("cannot learn the file server's time in '%s' (%s): using this machine's", c->locks, strerror(errno));
    c->now = time(NULL);
  }
  c->known = true;
  return c->now;
}

enum verdict { HELD, STALE };

/* A holder on this machine: stale when it ran before the last boot or its process
 * is gone (a PID that runs again with another start time is another process). */
static enum verdict judge_local(const struct seen *s, const struct self *me, char *why, size_t n)
{
  pid_t pid = (pid_t)s->pid;
  bool zombie = false;
  long long start = -1;
  if (strcmp(s->boot, me->boot) != 0) snprintf(why, n, "this machine has booted since");
  else if (kill(pid, 0) < 0 && errno == ESRCH) snprintf(why, n, "its process has ended");
  else if ((start = proc_start(pid, &zombie)) >= 0 && zombie) snprintf(why, n, "its process has ended");
  else if (start >= 0 && start != s->start) snprintf(why, n, "its process ID belongs to another process now");
  else return HELD;
  return STALE;
}

/* Whether the lock file s is stale, and why (for the warning). The same machine
 * ID and host name make a holder local: a clone of this machine that kept its
 * machine ID but not its name is still judged by the file's age. */
static enum verdict judge(const struct seen *s, struct clock *c, const struct self *me, char *why, size_t n)
{
  if (s->o && strcmp(s->machine, me->machine) == 0 && strcmp(s->host, me->host) == 0)
    return judge_local(s, me, why, n);
  /* Another machine's, or one not written yet or damaged: its holder touches it
   * every 30 s, and only the server's clock is the same for both of us. */
  long long age = (long long)server_now(c) - (long long)s->st.st_mtim.tv_sec;
  if (age <= VB_LOCK_STALE_S) return HELD;
  if (s->o) snprintf(why, n, "not touched for %lld s by the file server's clock", age);
  else snprintf(why, n, "it cannot be read and is %lld s old", age);
  return STALE;
}

/* ---- Taking a lock --------------------------------------------------------------------- */

struct taker {
  const char *shown; /* the repository, for messages */
  struct self me;
  struct clock clk;
  struct vb_lock *l;
};

static char *busy_text(const struct taker *t, const char *path, const struct seen *s)
{
  if (s->o)
    return vm_strdup_printf("repository %s is busy: %s lock of %s pid %lld since %s", t->shown, s->kind, s->host,
                            s->pid, s->since);
  const char *base = strrchr(path, '/');
  return vm_strdup_printf("repository %s is busy: its lock file locks/%s cannot be read (yet: its holder may be writing it)",
                          t->shown, base ? base + 1 : path);
}

/* Removes the stale lock file at path (s: as it was judged). It is renamed to a
 * name of this taker's own first, and removed only if it is still the very file
 * that was judged (same inode and content): two takers may judge the same stale
 * file, and the second must not remove a fresh lock that replaced it meanwhile;
 * such a file is put back with link(2), which never replaces one. Warns once, by
 * the taker that removed it. 0, or an exit code after a message. */
static int take_over(struct taker *t, const char *path, const struct seen *s, const char *why)
{
  char rnd[17];
  random_hex(rnd);
  CLEANUP_FREE char *aside = vm_strdup_printf("%s/stale.%s", t->clk.locks, rnd);
  if (rename(path, aside) < 0) {
    if (errno == ENOENT) return 0; /* another taker was first */
    return vm_fail_errno(VM_EXIT_FAIL, "cannot remove the stale lock file '%s'", path);
  }
  struct seen now;
  bool same = seen_read(aside, &now) == 1 && same_file(&now, s);
  seen_free(&now);
  if (!same) {
    if (link(aside, path) < 0) vm_debug("cannot put lock file '%s' back: %s", path, strerror(errno));
    unlink(aside);
    return 0;
  }
  if (unlink(aside) < 0 && errno != ENOENT)
    return vm_fail_errno(VM_EXIT_FAIL, "cannot remove the stale lock file '%s'", aside);
  if (s->o)
    vm_warn("repository %s: took over the stale %s lock of %s pid %lld since %s (%s)", t->shown, s->kind, s->host,
            s->pid, s->since, why);
  else
    vm_warn("repository %s: removed the stale lock file locks/%s (%s)", t->shown, strrchr(path, '/') + 1, why);
  return 0;
}

/* One look at a lock file that conflicts with ours: 0 when there is none (a stale
 * one is taken over), BUSY when it is held (*busy says by whom), or an exit code
 * after a message. */
static int look(struct taker *t, const char *path, char **busy)
{
  /* A stale file taken over may have been replaced by a fresh one at once: look
   * again, a few times. */
  for (int round = 0; round < 8; round++) {
    struct seen s;
    int r = seen_read(path, &s);
    if (r == 0) return 0;
    if (r < 0) return vm_fail_errno(VM_EXIT_FAIL, "cannot read lock file '%s'", path);
    seen_parse(&s);
    char why[128];
    if (judge(&s, &t->clk, &t->me, why, sizeof why) == HELD) {
      free(*busy);
      *busy = busy_text(t, path, &s);
      seen_free(&s);
      return BUSY;
    }
    int rc = take_over(t, path, &s, why);
    seen_free(&s);
    if (rc) return rc;
  }
  free(*busy);
  *busy = vm_strdup_printf("repository %s is busy: its lock file '%s' keeps changing", t->shown, path);
  return BUSY;
}

/* After a look that found the lock held: fails when the tool was interrupted or
 * the wait is over, else sleeps until the next look. */
static int pause_or_fail(int64_t deadline, const char *busy)
{
  if (vm_interrupted()) return vm_fail_interrupted();
  int64_t left = deadline - vm_now_ms();
  if (left <= 0) return vm_fail(VM_EXIT_STATE, "%s", busy);
  vm_sleep_ms(left < POLL_MS ? (int)left : POLL_MS);
  return vm_interrupted() ? vm_fail_interrupted() : 0;
}

static int write_all(int fd, const char *p, size_t n)
{
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return -1;
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

/* Creates our lock file, whole and flushed before anyone is looked for. 0, BUSY
 * when the name is taken, or an exit code after a message. */
static int create_own(struct taker *t)
{
  struct vb_lock *l = t->l;
  free(l->text);
  l->text = encode(l->exclusive ? "exclusive" : "shared", l->name, &t->me);
  int fd = open(l->path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return errno == EEXIST ? BUSY : vm_fail_errno(VM_EXIT_FAIL, "cannot create lock file '%s'", l->path);
  int e = write_all(fd, l->text, strlen(l->text)) < 0 || fsync(fd) < 0 ? errno : 0;
  if (close(fd) < 0 && !e) e = errno;
  if (!e) {
    t->clk.own = l->path;
    return 0;
  }
  unlink(l->path);
  errno = e;
  return vm_fail_errno(VM_EXIT_FAIL, "cannot write lock file '%s'", l->path);
}

static void remove_own(struct taker *t)
{
  if (vb_lock_held(t->l)) unlink(t->l->path);
  t->clk.own = NULL;
}

static void new_look(struct taker *t) { t->clk.known = false; }

static int take_shared(struct taker *t, int64_t deadline)
{
  CLEANUP_FREE char *excl = vm_strdup_printf("%s/exclusive", t->clk.locks);
  for (;;) {
    CLEANUP_FREE char *busy = NULL;
    new_look(t);
    /* While an exclusive lock is held, wait without a file of ours: it would only
     * keep the exclusive holder waiting for us. */
    int rc = look(t, excl, &busy);
    if (rc == 0) {
      rc = create_own(t);
      if (rc == BUSY) return vm_fail(VM_EXIT_FAIL, "lock file '%s' exists already", t->l->path);
      if (rc) return rc;
      rc = look(t, excl, &busy);
      if (rc == 0) return 0;
      remove_own(t);
    }
    if (rc == BUSY) rc = pause_or_fail(deadline, busy);
    if (rc) return rc;
  }
}

/* Debris of checkers that were killed (a probe, a stale lock on its way out)
 * is removed when it is old. */
static void remove_debris(struct taker *t, const char *path)
{
  struct stat st;
  if (lstat(path, &st) == 0 && (long long)server_now(&t->clk) - (long long)st.st_mtim.tv_sec > VB_LOCK_STALE_S)
    unlink(path);
}

/* One look at every shared lock: 0 when none is held, BUSY, or an exit code. */
static int look_shared(struct taker *t, char **busy)
{
  DIR *d = opendir(t->clk.locks);
  if (!d) return vm_fail_errno(VM_EXIT_FAIL, "cannot read the folder '%s'", t->clk.locks);
  int rc = 0;
  struct dirent *e;
  while (rc == 0 && (errno = 0, e = readdir(d))) {
    bool shared = strncmp(e->d_name, "shared.", 7) == 0;
    if (!shared && strncmp(e->d_name, "probe.", 6) != 0 && strncmp(e->d_name, "stale.", 6) != 0) continue;
    CLEANUP_FREE char *path = vm_strdup_printf("%s/%s", t->clk.locks, e->d_name);
    if (shared) rc = look(t, path, busy);
    else remove_debris(t, path);
  }
  if (!e && errno) rc = vm_fail_errno(VM_EXIT_FAIL, "cannot read the folder '%s'", t->clk.locks);
  closedir(d);
  return rc;
}

static int take_exclusive(struct taker *t, int64_t deadline)
{
  /* First the file: one holder at a time. */
  for (;;) {
    CLEANUP_FREE char *busy = NULL;
    new_look(t);
    int rc = create_own(t);
    if (rc == 0) break;
    if (rc == BUSY) rc = look(t, t->l->path, &busy);
    if (rc == BUSY) rc = pause_or_fail(deadline, busy);
    else if (rc == 0 && vm_interrupted()) rc = vm_fail_interrupted();
    if (rc) return rc;
  }
  /* Then the shared holders finish; new ones see our file and back off. */
  for (;;) {
    CLEANUP_FREE char *busy = NULL;
    new_look(t);
    int rc = look_shared(t, &busy);
    if (rc == 0) return 0;
    if (rc == BUSY) rc = pause_or_fail(deadline, busy);
    if (rc) {
      remove_own(t);
      return rc;
    }
  }
}

/* ---- The holder ------------------------------------------------------------------------ */

/* Touches the lock file until told to stop: its age tells other machines that
 * the holder lives. */
static void *toucher(void *arg)
{
  struct vb_lock *l = arg;
  pthread_mutex_lock(&l->mu);
  while (!l->stop) {
    struct timespec at;
    clock_gettime(CLOCK_MONOTONIC, &at);
    int ms = vb_lock_touch_ms > 0 ? vb_lock_touch_ms : 30000;
    at.tv_sec += ms / 1000;
    at.tv_nsec += (long)(ms % 1000) * 1000000;
    if (at.tv_nsec >= 1000000000) {
      at.tv_sec++;
      at.tv_nsec -= 1000000000;
    }
    while (!l->stop && pthread_cond_timedwait(&l->cv, &l->mu, &at) != ETIMEDOUT)
      ;
    if (l->stop) break;
    pthread_mutex_unlock(&l->mu);
    /* A file taken over is gone (ENOENT), or another holder's now, which it
     * touches itself: nothing to do about either here; vb_lock_held tells. */
    utimensat(AT_FDCWD, l->path, NULL, 0);
    pthread_mutex_lock(&l->mu);
  }
  pthread_mutex_unlock(&l->mu);
  return NULL;
}

static int start_touching(struct vb_lock *l)
{
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&l->cv, &ca);
  pthread_condattr_destroy(&ca);
  pthread_mutex_init(&l->mu, NULL);
  l->sync_ready = true;
  /* The thread takes no signals, so that they cut short the sleeps of the
   * thread that waits for them (vm_sleep_ms). */
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old);
  int e = pthread_create(&l->thread, NULL, toucher, l);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (e) {
    errno = e;
    return vm_fail_errno(VM_EXIT_FAIL, "cannot start a thread");
  }
  l->touching = true;
  return 0;
}

static void lock_free(struct vb_lock *l)
{
  if (l->sync_ready) {
    pthread_mutex_destroy(&l->mu);
    pthread_cond_destroy(&l->cv);
  }
  free(l->locks);
  free(l->path);
  free(l->name);
  free(l->text);
  free(l);
}

int vb_lock_take_as(const char *dir, const char *shown, bool exclusive, int wait_s, struct vb_lock **out)
{
  *out = NULL;
  struct vb_lock *l = calloc(1, sizeof *l);
  if (!l) return vm_fail(VM_EXIT_FAIL, "out of memory");
  struct taker t = { .shown = shown ? shown : dir, .l = l };
  self_init(&t.me);
  l->exclusive = exclusive;
  l->locks = vm_strdup_printf("%s/locks", dir);
  l->name = new_name(exclusive ? "exclusive" : "shared", &t.me);
  l->path = exclusive ? vm_strdup_printf("%s/exclusive", l->locks) : vm_strdup_printf("%s/%s", l->locks, l->name);
  t.clk = (struct clock){ .locks = l->locks, .tag = l->name };
  int64_t deadline = vm_now_ms() + (int64_t)(wait_s > 0 ? wait_s : 0) * 1000;
  int rc = exclusive ? take_exclusive(&t, deadline) : take_shared(&t, deadline);
  if (rc == 0 && (rc = start_touching(l)) != 0) remove_own(&t);
  self_free(&t.me);
  if (rc) {
    lock_free(l);
    return rc;
  }
  vm_debug("repository %s: took the %s lock %s", t.shown, exclusive ? "exclusive" : "shared", l->name);
  *out = l;
  return 0;
}

int vb_lock_take(const char *dir, bool exclusive, int wait_s, struct vb_lock **out)
{
  return vb_lock_take_as(dir, NULL, exclusive, wait_s, out);
}

const char *vb_lock_name(const struct vb_lock *l) { return l->name; }

bool vb_lock_exclusive(const struct vb_lock *l) { return l->exclusive; }

bool vb_lock_held(struct vb_lock *l)
{
  struct seen s;
  if (!l->text || seen_read(l->path, &s) != 1) return false;
  bool ours = s.len == strlen(l->text) && memcmp(s.text, l->text, s.len) == 0;
  seen_free(&s);
  return ours;
}

void vb_lock_release(struct vb_lock *l)
{
  if (!l) return;
  if (l->touching) {
    pthread_mutex_lock(&l->mu);
    l->stop = true;
    pthread_cond_signal(&l->cv);
    pthread_mutex_unlock(&l->mu);
    pthread_join(l->thread, NULL);
  }
  /* Only our own: an exclusive file taken over may be another holder's now. */
  if (vb_lock_held(l)) unlink(l->path);
  lock_free(l);
}

bool vb_lock_name_alive(const char *dir, const char *name)
{
  size_t n = vb_lock_name_span(name);
  if (n == 0 || name[n]) return false;
  bool excl = strncmp(name, "exclusive.", 10) == 0;
  CLEANUP_FREE char *locks = vm_strdup_printf("%s/locks", dir);
  CLEANUP_FREE char *path = vm_strdup_printf("%s/%s", locks, excl ? "exclusive" : name);
  struct seen s;
  int r = seen_read(path, &s);
  /* A file that cannot be read may be a live holder's: keep its tmp/ files. */
  if (r <= 0) return r < 0;
  seen_parse(&s);
  char rnd[17], why[128];
  random_hex(rnd);
  struct taker t = { .clk = { .locks = locks, .tag = rnd } };
  self_init(&t.me);
  /* The exclusive file may be a later holder's: it must name this one. One not
   * written whole yet might, as far as anyone can tell. */
  bool alive = judge(&s, &t.clk, &t.me, why, sizeof why) == HELD && (!s.o || strcmp(s.name, name) == 0);
  self_free(&t.me);
  seen_free(&s);
  return alive;
}
