/* vmbackup's repository lock (vmbackup/rlock.h): real files in a scratch folder,
 * other holders in forked children; stale locks of dead processes, of other
 * machines and half-written ones; a race of many children that must never hold
 * shared and exclusive at once. Under AddressSanitizer and UBSan. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "vmkit-base.h"
#include "../../vmbackup/rlock.h"

#define FAR_EXCL "exclusive.far.77.0123456789abcdef"
#define FAR_SHARED "shared.far.78.0123456789abcdef"

static int setup(void **state)
{
  const char *tmp = getenv("TMPDIR");
  char *dir = vm_strdup_printf("%s/vb-rlock.XXXXXX", tmp && *tmp ? tmp : "/tmp");
  CLEANUP_FREE char *locks = NULL;
  if (!mkdtemp(dir)) goto fail;
  locks = vm_strdup_printf("%s/locks", dir);
  if (mkdir(locks, 0755) < 0) goto fail;
  *state = dir;
  return 0;
fail:
  free(dir);
  return -1;
}

static int teardown(void **state)
{
  vm_remove_tree(*state);
  free(*state);
  return 0;
}

static char *lock_path(const char *dir, const char *name)
{
  return vm_strdup_printf("%s/locks/%s", dir, name);
}

/* Files in locks/ whose names start with prefix. */
static int count(const char *dir, const char *prefix)
{
  CLEANUP_FREE char *locks = vm_strdup_printf("%s/locks", dir);
  DIR *d = opendir(locks);
  assert_non_null(d);
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)))
    if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0 && strncmp(e->d_name, prefix, strlen(prefix)) == 0) n++;
  closedir(d);
  return n;
}

/* The name of the one file in locks/ that starts with prefix. */
static char *only_file(const char *dir, const char *prefix)
{
  CLEANUP_FREE char *locks = vm_strdup_printf("%s/locks", dir);
  DIR *d = opendir(locks);
  assert_non_null(d);
  char *name = NULL;
  struct dirent *e;
  while ((e = readdir(d)))
    if (strncmp(e->d_name, prefix, strlen(prefix)) == 0) {
      assert_null(name);
      name = vm_strdup(e->d_name);
    }
  closedir(d);
  assert_non_null(name);
  return name;
}

static void set_age(const char *dir, const char *name, int age_s)
{
  CLEANUP_FREE char *path = lock_path(dir, name);
  struct timespec ts[2] = { { time(NULL) - age_s, 0 }, { time(NULL) - age_s, 0 } };
  assert_int_equal(utimensat(AT_FDCWD, path, ts, 0), 0);
}

/* Puts a lock file in place whole (written aside, renamed), age_s old. */
static void put_file(const char *dir, const char *name, const char *text, int age_s)
{
  CLEANUP_FREE char *tmp = lock_path(dir, "put.tmp");
  CLEANUP_FREE char *path = lock_path(dir, name);
  FILE *f = fopen(tmp, "w");
  assert_non_null(f);
  fputs(text, f);
  assert_int_equal(fclose(f), 0);
  assert_int_equal(rename(tmp, path), 0);
  set_age(dir, name, age_s);
}

static char *far_lock(const char *kind, const char *name, int pid)
{
  return vm_strdup_printf("{\"kind\":\"%s\",\"name\":\"%s\",\"host\":\"far\",\"machine\":\"0123456789abcdef0123456789abcdef\","
                          "\"boot\":\"b\",\"pid\":%d,\"start\":5,\"since\":\"2026-01-01T00:00:00Z\"}\n",
                          kind, name, pid);
}

/* ---- Other holders: forked children ---------------------------------------------------- */

struct holder {
  pid_t pid;
  int go; /* closed: the child releases its lock */
};

/* Forks a child that takes a lock, then holds it until finish() (hold_ms < 0) or
 * for hold_ms, or dies at once without releasing it (die). Returns what the
 * child's vb_lock_take returned. Tests fork only while they hold no lock
 * themselves: AddressSanitizer's allocator has no fork handlers, and a child
 * forked while a touch thread of the parent starts may inherit its allocator
 * locked (the child then hangs in its first malloc). */
static int spawn(const char *dir, bool excl, int wait_s, int hold_ms, bool die, struct holder *h)
{
  int ready[2], go[2];
  assert_int_equal(pipe(ready), 0);
  assert_int_equal(pipe(go), 0);
  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    close(ready[0]);
    close(go[1]);
    struct vb_lock *l;
    int rc = vb_lock_take(dir, excl, wait_s, &l);
    unsigned char b = (unsigned char)rc;
    if (write(ready[1], &b, 1) != 1 || rc || die) _exit(rc);
    char c;
    if (hold_ms >= 0) vm_sleep_ms(hold_ms);
    else
      while (read(go[0], &c, 1) > 0)
        ;
    vb_lock_release(l);
    _exit(0);
  }
  close(ready[1]);
  close(go[0]);
  h->pid = pid;
  h->go = go[1];
  unsigned char b = 0xff;
  assert_int_equal(read(ready[0], &b, 1), 1);
  close(ready[0]);
  return b;
}

/* Tells the child to release its lock and waits for it: its exit status. */
static int finish(struct holder *h)
{
  close(h->go);
  int st;
  assert_int_equal(waitpid(h->pid, &st, 0), h->pid);
  assert_true(WIFEXITED(st));
  return WEXITSTATUS(st);
}

static void busy_says(const char *what)
{
  if (!strstr(vm_last_error(), what)) fail_msg("'%s' does not say '%s'", vm_last_error(), what);
}

/* ---- Tests ------------------------------------------------------------------------------ */

static void shared_locks_coexist(void **state)
{
  const char *dir = *state;
  struct vb_lock *a, *b;
  struct holder h;
  assert_int_equal(spawn(dir, false, 0, -1, false, &h), 0);
  assert_int_equal(vb_lock_take(dir, false, 0, &a), 0);
  assert_int_equal(vb_lock_take(dir, false, 0, &b), 0);
  assert_int_equal(count(dir, "shared."), 3);
  assert_string_not_equal(vb_lock_name(a), vb_lock_name(b));
  assert_true(vb_lock_held(a));
  assert_false(vb_lock_exclusive(a));
  assert_int_equal(finish(&h), 0);
  assert_int_equal(count(dir, "shared."), 2);
  vb_lock_release(b);
  vb_lock_release(a);
  vb_lock_release(NULL);
  assert_int_equal(count(dir, ""), 0);
}

static void conflicts_are_refused(void **state)
{
  const char *dir = *state;
  struct vb_lock *l = NULL;
  struct holder h;
  char pid[32];

  assert_int_equal(spawn(dir, false, 0, -1, false, &h), 0);
  snprintf(pid, sizeof pid, "pid %d since ", (int)h.pid);
  assert_int_equal(vb_lock_take(dir, true, 0, &l), VM_EXIT_STATE);
  assert_null(l);
  busy_says("is busy: shared lock of ");
  busy_says(pid);
  assert_int_equal(count(dir, "exclusive"), 0);
  /* A wait that runs out takes as long as it says. */
  int64_t t0 = vm_now_ms();
  assert_int_equal(vb_lock_take_as(dir, "backup-repo", true, 1, &l), VM_EXIT_STATE);
  int64_t took = vm_now_ms() - t0;
  assert_true(took >= 900 && took < 2500);
  busy_says("repository backup-repo is busy: shared lock of ");
  assert_int_equal(count(dir, "exclusive"), 0);
  assert_int_equal(finish(&h), 0);

  assert_int_equal(spawn(dir, true, 0, -1, false, &h), 0);
  snprintf(pid, sizeof pid, "pid %d since ", (int)h.pid);
  assert_int_equal(vb_lock_take(dir, false, 0, &l), VM_EXIT_STATE);
  busy_says("is busy: exclusive lock of ");
  busy_says(pid);
  assert_int_equal(count(dir, "shared."), 0);
  assert_int_equal(vb_lock_take(dir, true, 0, &l), VM_EXIT_STATE);
  busy_says("is busy: exclusive lock of ");
  assert_int_equal(count(dir, ""), 1);
  assert_int_equal(finish(&h), 0);
  assert_int_equal(count(dir, ""), 0);
}

static void taken_when_the_holder_leaves(void **state)
{
  const char *dir = *state;
  struct vb_lock *l;
  struct holder h;
  assert_int_equal(spawn(dir, false, 0, 500, false, &h), 0);
  int64_t t0 = vm_now_ms();
  assert_int_equal(vb_lock_take(dir, true, 5, &l), 0);
  int64_t took = vm_now_ms() - t0;
  assert_true(took >= 300 && took < 3000);
  assert_true(vb_lock_exclusive(l));
  assert_int_equal(count(dir, "shared."), 0);
  assert_int_equal(finish(&h), 0);
  vb_lock_release(l);

  assert_int_equal(spawn(dir, true, 0, 500, false, &h), 0);
  t0 = vm_now_ms();
  assert_int_equal(vb_lock_take(dir, false, 5, &l), 0);
  took = vm_now_ms() - t0;
  assert_true(took >= 300 && took < 3000);
  assert_int_equal(count(dir, "exclusive"), 0);
  assert_int_equal(finish(&h), 0);
  vb_lock_release(l);
  assert_int_equal(count(dir, ""), 0);
}

static void dead_holders_are_taken_over(void **state)
{
  const char *dir = *state;
  struct vb_lock *l;
  struct holder h;
  assert_int_equal(spawn(dir, true, 0, 0, true, &h), 0);
  assert_int_equal(finish(&h), 0);
  assert_int_equal(count(dir, "exclusive"), 1);
  assert_int_equal(vb_lock_take(dir, false, 0, &l), 0);
  assert_int_equal(count(dir, "exclusive"), 0);
  vb_lock_release(l);

  assert_int_equal(spawn(dir, false, 0, 0, true, &h), 0);
  assert_int_equal(finish(&h), 0);
  CLEANUP_FREE char *name = only_file(dir, "shared.");
  assert_false(vb_lock_name_alive(dir, name));
  assert_int_equal(vb_lock_take(dir, true, 0, &l), 0);
  assert_int_equal(count(dir, "shared."), 0);
  vb_lock_release(l);
  assert_int_equal(count(dir, ""), 0);
}

/* A lock of another machine is judged by its age on the file server's clock. */
static void other_machines_by_age(void **state)
{
  const char *dir = *state;
  struct vb_lock *l = NULL;
  CLEANUP_FREE char *excl = far_lock("exclusive", FAR_EXCL, 77);
  put_file(dir, "exclusive", excl, 0);
  assert_int_equal(vb_lock_take(dir, false, 0, &l), VM_EXIT_STATE);
  busy_says("is busy: exclusive lock of far pid 77 since 2026-01-01T00:00:00Z");
  assert_true(vb_lock_name_alive(dir, FAR_EXCL));
  assert_false(vb_lock_name_alive(dir, "exclusive.far.77.0123456789abcdee"));
  set_age(dir, "exclusive", 200);
  assert_int_equal(vb_lock_take(dir, true, 0, &l), VM_EXIT_STATE);
  set_age(dir, "exclusive", 600);
  assert_false(vb_lock_name_alive(dir, FAR_EXCL));
  assert_int_equal(vb_lock_take(dir, false, 0, &l), 0);
  assert_int_equal(count(dir, "exclusive"), 0);
  vb_lock_release(l);

  CLEANUP_FREE char *shared = far_lock("shared", FAR_SHARED, 78);
  put_file(dir, FAR_SHARED, shared, 10);
  assert_int_equal(vb_lock_take(dir, true, 0, &l), VM_EXIT_STATE);
  busy_says("is busy: shared lock of far pid 78 since ");
  assert_true(vb_lock_name_alive(dir, FAR_SHARED));
  set_age(dir, FAR_SHARED, 600);
  assert_int_equal(vb_lock_take(dir, true, 0, &l), 0);
  assert_int_equal(count(dir, "shared."), 0);
  vb_lock_release(l);
  /* No probe or renamed file is left behind. */
  assert_int_equal(count(dir, ""), 0);
}

/* A lock file being written (or damaged) counts as held while it is young. */
static void unreadable_files_by_age(void **state)
{
  const char *dir = *state;
  struct vb_lock *l = NULL;
  put_file(dir, "exclusive", "{\"kind\":\"excl", 0);
  assert_int_equal(vb_lock_take(dir, false, 0, &l), VM_EXIT_STATE);
  busy_says("locks/exclusive cannot be read");
  set_age(dir, "exclusive", 400);
  assert_int_equal(vb_lock_take(dir, false, 0, &l), 0);
  assert_int_equal(count(dir, "exclusive"), 0);
  vb_lock_release(l);

  put_file(dir, "shared.x", "", 0);
  assert_int_equal(vb_lock_take(dir, true, 0, &l), VM_EXIT_STATE);
  busy_says("locks/shared.x cannot be read");
  set_age(dir, "shared.x", 400);
  assert_int_equal(vb_lock_take(dir, true, 0, &l), 0);
  vb_lock_release(l);

  /* JSON, but not a lock: a member missing, or of the wrong kind, or a control
   * character in a string. */
  const char *bad[] = {
    "{\"kind\":\"exclusive\"}",
    "{\"kind\":\"other\",\"name\":\"n\",\"host\":\"far\",\"machine\":\"m\",\"boot\":\"b\",\"pid\":1,\"start\":1,\"since\":\"s\"}",
    "{\"kind\":\"exclusive\",\"name\":\"n\",\"host\":\"f\\u001bar\",\"machine\":\"m\",\"boot\":\"b\",\"pid\":1,\"start\":1,\"since\":\"s\"}",
    "{\"kind\":\"exclusive\",\"name\":\"n\",\"host\":\"far\",\"machine\":\"m\",\"boot\":\"b\",\"pid\":0,\"start\":1,\"since\":\"s\"}",
    "[1,2]",
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    put_file(dir, "exclusive", bad[i], 0);
    assert_int_equal(vb_lock_take(dir, false, 0, &l), VM_EXIT_STATE);
    busy_says("cannot be read");
  }
  set_age(dir, "exclusive", 400);
  assert_int_equal(vb_lock_take(dir, false, 0, &l), 0);
  vb_lock_release(l);
  assert_int_equal(count(dir, ""), 0);
}

/* This machine's locks: by boot, process and its start time. */
static void local_holders_by_process(void **state)
{
  const char *dir = *state;
  struct vb_lock *l;
  assert_int_equal(vb_lock_take(dir, true, 0, &l), 0);
  CLEANUP_FREE char *path = lock_path(dir, "exclusive");
  CLEANUP_FREE char *text = vm_read_file(path, 4096, NULL);
  assert_non_null(text);
  vb_lock_release(l);
  json_object *o = json_tokener_parse(text);
  assert_non_null(o);
  int64_t start = json_object_get_int64(json_object_object_get(o, "start"));

  /* Ours, as this process wrote it: this process runs, so it is held, though old. */
  put_file(dir, "exclusive", text, 3600);
  assert_int_equal(vb_lock_take(dir, false, 0, &l), VM_EXIT_STATE);
  /* The same PID with another start time: another process has the PID now. */
  json_object_object_add(o, "start", json_object_new_int64(start + 1));
  put_file(dir, "exclusive", json_object_to_json_string(o), 0);
  assert_int_equal(vb_lock_take(dir, false, 0, &l), 0);
  vb_lock_release(l);
  /* Written before the last boot. */
  json_object_object_add(o, "start", json_object_new_int64(start));
  json_object_object_add(o, "boot", json_object_new_string("00000000-0000-0000-0000-000000000000"));
  put_file(dir, "exclusive", json_object_to_json_string(o), 0);
  assert_int_equal(vb_lock_take(dir, false, 0, &l), 0);
  vb_lock_release(l);
  /* Another host name with this machine ID (a clone): judged by age, held. */
  json_object_object_add(o, "host", json_object_new_string("a-clone"));
  put_file(dir, "exclusive", json_object_to_json_string(o), 0);
  assert_int_equal(vb_lock_take(dir, false, 0, &l), VM_EXIT_STATE);
  busy_says("exclusive lock of a-clone pid ");
  json_object_put(o);
  unlink(path);
  assert_int_equal(count(dir, ""), 0);
}

static void held_until_replaced(void **state)
{
  const char *dir = *state;
  struct vb_lock *l;
  assert_int_equal(vb_lock_take(dir, true, 0, &l), 0);
  assert_true(vb_lock_held(l));
  assert_int_equal(vb_lock_name_span(vb_lock_name(l)), strlen(vb_lock_name(l)));
  assert_memory_equal(vb_lock_name(l), "exclusive.", 10);
  CLEANUP_FREE char *other = far_lock("exclusive", FAR_EXCL, 77);
  put_file(dir, "exclusive", other, 0);
  assert_false(vb_lock_held(l));
  /* Release leaves another holder's file alone. */
  vb_lock_release(l);
  CLEANUP_FREE char *path = lock_path(dir, "exclusive");
  CLEANUP_FREE char *text = vm_read_file(path, 4096, NULL);
  assert_non_null(text);
  assert_string_equal(text, other);
  unlink(path);

  assert_int_equal(vb_lock_take(dir, false, 0, &l), 0);
  assert_true(vb_lock_held(l));
  CLEANUP_FREE char *mine = lock_path(dir, vb_lock_name(l));
  assert_int_equal(unlink(mine), 0);
  assert_false(vb_lock_held(l));
  vb_lock_release(l);
  assert_int_equal(count(dir, ""), 0);
}

static void names_map_to_holders(void **state)
{
  const char *dir = *state;
  struct vb_lock *s, *e;
  assert_int_equal(vb_lock_take(dir, false, 0, &s), 0);
  CLEANUP_FREE char *sname = vm_strdup(vb_lock_name(s));
  assert_true(vb_lock_name_alive(dir, sname));
  vb_lock_release(s);
  assert_false(vb_lock_name_alive(dir, sname));

  assert_int_equal(vb_lock_take(dir, true, 0, &e), 0);
  CLEANUP_FREE char *ename = vm_strdup(vb_lock_name(e));
  assert_true(vb_lock_name_alive(dir, ename));
  /* The exclusive file is one name for every holder: its content tells whose. */
  assert_false(vb_lock_name_alive(dir, "exclusive.h.1.0123456789abcdef"));
  vb_lock_release(e);
  assert_false(vb_lock_name_alive(dir, ename));

  const char *bad[] = { "", "exclusive", "shared", "../x", "shared.h.1.0123", "shared.h.1.0123456789ABCDEF",
                        "shared.h.1.0123456789abcdef/..", "shared.h.1.0123456789abcdef.pack", "shared..1.0123456789abcdef",
                        "lock.h.1.0123456789abcdef" };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) assert_false(vb_lock_name_alive(dir, bad[i]));
  assert_int_equal(vb_lock_name_span("shared.h.1.0123456789abcdef.pack-1"), 27);
  assert_int_equal(vb_lock_name_span("shared.h.1.0123456789abcdef"), 27);
  assert_int_equal(vb_lock_name_span("shared.h.1.0123456789abcdefa"), 0);
  assert_int_equal(vb_lock_name_span("shared.h.x.0123456789abcdef"), 0);
  assert_int_equal(vb_lock_name_span("exclusive.host-a_b.12345.0123456789abcdef.x"), 41);
  assert_int_equal(vb_lock_name_span("shared.h.1.0123456789abcdef/x"), 0);
  assert_int_equal(count(dir, ""), 0);
}

/* A signal ends a wait at once; what the waiter made is gone. */
static void waits_end_on_signals(void **state)
{
  const char *dir = *state;
  for (int excl = 0; excl < 2; excl++) {
    struct vb_lock *l;
    int go[2];
    assert_int_equal(pipe(go), 0);
    fflush(stderr);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
      vm_catch_signals();
      close(go[1]);
      char c;
      if (read(go[0], &c, 1) != 1) _exit(99);
      struct vb_lock *w;
      _exit(vb_lock_take(dir, excl, 30, &w));
    }
    close(go[0]);
    /* The holder of the other kind, taken after the fork: see spawn(). */
    assert_int_equal(vb_lock_take(dir, !excl, 0, &l), 0);
    assert_int_equal(write(go[1], "x", 1), 1);
    close(go[1]);
    vm_sleep_ms(400);
    assert_int_equal(kill(pid, SIGTERM), 0);
    int64_t t0 = vm_now_ms();
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(vm_now_ms() - t0 < 1000);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), VM_EXIT_FAIL);
    assert_int_equal(count(dir, ""), 1);
    vb_lock_release(l);
  }
  assert_int_equal(count(dir, ""), 0);
}

static void the_holder_touches_its_file(void **state)
{
  const char *dir = *state;
  struct vb_lock *l;
  vb_lock_touch_ms = 50;
  assert_int_equal(vb_lock_take(dir, false, 0, &l), 0);
  set_age(dir, vb_lock_name(l), 600);
  vm_sleep_ms(300);
  CLEANUP_FREE char *path = lock_path(dir, vb_lock_name(l));
  struct stat st;
  assert_int_equal(stat(path, &st), 0);
  assert_true(st.st_mtime >= time(NULL) - 5);
  vb_lock_release(l);
  vb_lock_touch_ms = 30000;
}

/* Many children take shared and exclusive locks at random, and some die holding
 * one: an exclusive holder never overlaps with any other holder. */
struct tally {
  int shared, excl, overlap, got_shared, got_excl, failed;
};

static void hold_and_check(struct tally *c, bool excl)
{
  int *mine = excl ? &c->excl : &c->shared;
  int mine_now = __atomic_add_fetch(mine, 1, __ATOMIC_SEQ_CST);
  for (int i = 0; i < 3; i++) {
    if (excl && (mine_now != 1 || __atomic_load_n(&c->shared, __ATOMIC_SEQ_CST) != 0))
      __atomic_add_fetch(&c->overlap, 1, __ATOMIC_SEQ_CST);
    if (!excl && __atomic_load_n(&c->excl, __ATOMIC_SEQ_CST) != 0) __atomic_add_fetch(&c->overlap, 1, __ATOMIC_SEQ_CST);
    vm_sleep_ms(1 + rand() % 3);
    mine_now = __atomic_load_n(mine, __ATOMIC_SEQ_CST);
  }
  __atomic_sub_fetch(mine, 1, __ATOMIC_SEQ_CST);
  __atomic_add_fetch(excl ? &c->got_excl : &c->got_shared, 1, __ATOMIC_SEQ_CST);
}

static void racers_never_overlap(void **state)
{
  const char *dir = *state;
  enum { CHILDREN = 6, ROUNDS = 8 };
  struct tally *c = mmap(NULL, sizeof *c, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  assert_true(c != MAP_FAILED);
  memset(c, 0, sizeof *c);
  pid_t pids[CHILDREN];
  fflush(stderr);
  for (int i = 0; i < CHILDREN; i++) {
    pids[i] = fork();
    assert_true(pids[i] >= 0);
    if (pids[i] > 0) continue;
    srand((unsigned)getpid());
    for (int r = 0; r < ROUNDS; r++) {
      bool excl = rand() % 3 == 0;
      struct vb_lock *l;
      if (vb_lock_take(dir, excl, 8, &l) != 0) {
        __atomic_add_fetch(&c->failed, 1, __ATOMIC_SEQ_CST);
        continue;
      }
      hold_and_check(c, excl);
      /* Now and then a holder dies without releasing: the others take its
       * lock over, several at once maybe. */
      if (rand() % 12 == 0) _exit(0);
      vb_lock_release(l);
    }
    _exit(0);
  }
  for (int i = 0; i < CHILDREN; i++) {
    int st;
    assert_int_equal(waitpid(pids[i], &st, 0), pids[i]);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  }
  print_message("# racers: %d shared, %d exclusive, %d failed, %d overlaps\n", c->got_shared, c->got_excl, c->failed,
                c->overlap);
  assert_int_equal(c->overlap, 0);
  assert_int_equal(c->failed, 0);
  assert_true(c->got_shared > 0 && c->got_excl > 0);
  munmap(c, sizeof *c);
  /* What the dead left is stale: an exclusive lock clears it. */
  struct vb_lock *l;
  assert_int_equal(vb_lock_take(dir, true, 0, &l), 0);
  vb_lock_release(l);
  assert_int_equal(count(dir, ""), 0);
}

int main(void)
{
  vm_init("vmbackup");
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown(shared_locks_coexist, setup, teardown),
    cmocka_unit_test_setup_teardown(conflicts_are_refused, setup, teardown),
    cmocka_unit_test_setup_teardown(taken_when_the_holder_leaves, setup, teardown),
    cmocka_unit_test_setup_teardown(dead_holders_are_taken_over, setup, teardown),
    cmocka_unit_test_setup_teardown(other_machines_by_age, setup, teardown),
    cmocka_unit_test_setup_teardown(unreadable_files_by_age, setup, teardown),
    cmocka_unit_test_setup_teardown(local_holders_by_process, setup, teardown),
    cmocka_unit_test_setup_teardown(held_until_replaced, setup, teardown),
    cmocka_unit_test_setup_teardown(names_map_to_holders, setup, teardown),
    cmocka_unit_test_setup_teardown(waits_end_on_signals, setup, teardown),
    cmocka_unit_test_setup_teardown(the_holder_touches_its_file, setup, teardown),
    cmocka_unit_test_setup_teardown(racers_never_overlap, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
