/* Durable files, running programs and the tsv form: the base layer's I/O. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "vmkit-base.h"

/* fork() as vm_run sees it: this test can make it fail, as it does when a machine
 * runs out of processes. */
static bool fork_fails;
pid_t fork(void)
{
  if (fork_fails) {
    errno = EAGAIN;
    return -1;
  }
  return (pid_t)syscall(SYS_fork);
}

static char dir[] = "/tmp/vmkit-unit-XXXXXX";

static int setup(void **state) { return mkdtemp(dir) ? 0 : -1; }

static int teardown(void **state)
{
  char *argv[] = { "rm", "-rf", dir, NULL };
  return vm_run(argv, NULL, NULL);
}

static char *slurp(const char *path)
{
  return vm_read_file(path, 1 << 20, NULL);
}

/* A writer's temporary file is its own: another writer's PATH.tmp is never
 * truncated or renamed over PATH (review of issue 6). */
static void atomic_write_keeps_others_temp(void **state)
{
  CLEANUP_FREE char *path = vm_strdup_printf("%s/record", dir);
  CLEANUP_FREE char *tmp = vm_strdup_printf("%s/record.tmp", dir);
  FILE *f = fopen(tmp, "w");
  assert_non_null(f);
  fputs("another writer's half", f);
  fclose(f);
  assert_int_equal(vm_write_file_atomic(path, "mine\n", 5, 0640), 0);
  CLEANUP_FREE char *got = slurp(path);
  assert_string_equal(got, "mine\n");
  CLEANUP_FREE char *other = slurp(tmp);
  assert_string_equal(other, "another writer's half");
  struct stat st;
  assert_int_equal(stat(path, &st), 0);
  assert_int_equal(st.st_mode & 0777, 0640);
  /* Nothing else is left in the folder. */
  int n = 0;
  DIR *d = opendir(dir);
  for (struct dirent *e; (e = readdir(d));) n += e->d_name[0] != '.';
  closedir(d);
  assert_int_equal(n, 2);
  unlink(tmp);
}

static void atomic_write_replaces(void **state)
{
  CLEANUP_FREE char *path = vm_strdup_printf("%s/again", dir);
  assert_int_equal(vm_write_file_atomic(path, "one", 3, 0600), 0);
  assert_int_equal(vm_write_file_atomic(path, "two!", 4, 0600), 0);
  CLEANUP_FREE char *got = slurp(path);
  assert_string_equal(got, "two!");
  /* A folder that does not exist fails, with errno. */
  CLEANUP_FREE char *bad = vm_strdup_printf("%s/no/such", dir);
  assert_int_equal(vm_write_file_atomic(bad, "x", 1, 0600), -1);
  assert_int_equal(errno, ENOENT);
}

static int count_fds(void)
{
  int n = 0;
  DIR *d = opendir("/proc/self/fd");
  for (struct dirent *e; (e = readdir(d));) n += e->d_name[0] != '.';
  closedir(d);
  return n;
}

/* A fork that fails leaves no pipe open (review of issue 6). */
static void run_fork_failure_leaks_nothing(void **state)
{
  char *argv[] = { "true", NULL };
  int before = count_fds();
  fork_fails = true;
  CLEANUP_FREE char *out = NULL;
  assert_int_equal(vm_run(argv, &out, NULL), -1);
  assert_int_equal(vm_run(argv, NULL, NULL), -1);
  fork_fails = false;
  assert_int_equal(count_fds(), before);
  assert_int_equal(vm_run(argv, NULL, NULL), 0);
}

/* A /proc file (its size says 0: read until the end). */
static char *proc_read(const char *path)
{
  static char buf[4096];
  int fd = open(path, O_RDONLY);
  if (fd < 0) return NULL;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n < 0) return NULL;
  buf[n] = '\0';
  return buf;
}

/* The pid of the sleep that process pid runs, from /proc. */
static pid_t child_of(pid_t pid)
{
  for (int tries = 0; tries < 200; tries++) {
    CLEANUP_FREE char *path = vm_strdup_printf("/proc/%d/task/%d/children", (int)pid, (int)pid);
    const char *kids = proc_read(path);
    if (kids && atoi(kids) > 0) return atoi(kids);
    usleep(10000);
  }
  return -1;
}

static bool gone(pid_t pid)
{
  for (int tries = 0; tries < 300; tries++) {
    if (kill(pid, 0) < 0 && errno == ESRCH) return true;
    /* A zombie of a dead parent is reaped by init: look at its state. */
    CLEANUP_FREE char *path = vm_strdup_printf("/proc/%d/stat", (int)pid);
    const char *st = proc_read(path);
    if (!st) return true;
    const char *p = strrchr(st, ')');
    if (p && p[2] == 'Z') return true;
    usleep(10000);
  }
  return false;
}

/* A tool that runs a program: SIGTERM to the tool reaches the program, and kill -9
 * of the tool takes the program with it (review of issue 6: "a killed vmrun leaves
 * qemu-img running"). */
static void run_child_dies_with_the_tool(void **state)
{
  for (int sig = 0; sig < 2; sig++) {
    pid_t tool = (pid_t)syscall(SYS_fork);
    assert_true(tool >= 0);
    if (tool == 0) {
      vm_catch_signals();
      char *argv[] = { "sleep", "60", NULL };
      int rc = vm_run(argv, NULL, NULL);
      _exit(vm_interrupted() && rc != 0 ? 42 : 1);
    }
    pid_t prog = child_of(tool);
    assert_true(prog > 0);
    kill(tool, sig == 0 ? SIGTERM : SIGKILL);
    int status;
    assert_int_equal(waitpid(tool, &status, 0), tool);
    if (sig == 0) {
      assert_true(WIFEXITED(status));
      assert_int_equal(WEXITSTATUS(status), 42);
    }
    assert_true(gone(prog));
  }
}

static void tsv_escapes(void **state)
{
  CLEANUP_FREE char *a = vm_tsv_escape("a\tb\nc\\d\re/f");
  assert_string_equal(a, "a\\tb\\nc\\\\d\\re/f");
  CLEANUP_FREE char *b = vm_tsv_escape("");
  assert_string_equal(b, "");
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(atomic_write_keeps_others_temp),
    cmocka_unit_test(atomic_write_replaces),
    cmocka_unit_test(run_fork_failure_leaks_nothing),
    cmocka_unit_test(run_child_dies_with_the_tool),
    cmocka_unit_test(tsv_escapes),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
