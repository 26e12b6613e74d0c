/* Plans: lines "VM SOURCE DEST" (DESIGN.md; vmbalance writes them). Every move is
 * checked first against the pool as it will be after the moves before it (memory
 * and pool space add up in a ledger), then carried out by a vmmigrate of its own,
 * up to --parallel at once; moves of one VM run in order. A failed move does not
 * stop the others; the exit status says whether all succeeded. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "vmmigrate.h"

/* A plan is text a person or vmbalance writes: a few thousand moves at most. */
#define PLAN_MAX (1 << 20)

struct pmove {
  char *vm, *src, *dst;
  int line;
  enum { P_WAITING, P_RUNNING, P_DONE } state;
  pid_t pid;
  char *out_path, *err_path;
  int rc;
  char *result, *error;
  json_object *report;
};

/* A failed move's reason: its first error line (not a warning). */
static char *error_line(const char *path)
{
  CLEANUP_FREE char *text = vm_read_file(path, 1 << 20, NULL);
  if (!text) return NULL;
  char *save = NULL;
  for (char *l = strtok_r(text, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
    const char *p = strncmp(l, "vmmigrate: ", 11) == 0 ? l + 11 : l;
    if (*p && strncmp(p, "warning: ", 9) != 0) return vm_strdup(p);
  }
  return NULL;
}

static pid_t spawn(struct pmove *p, char **pass, const char *dir, size_t idx)
{
  p->out_path = vm_strdup_printf("%s/%zu.out", dir, idx);
  p->err_path = vm_strdup_printf("%s/%zu.err", dir, idx);
  struct vm_strv argv = { 0 };
  vm_strv_add(&argv, "vmmigrate");
  vm_strv_add(&argv, "-c");
  vm_strv_add(&argv, p->src);
  vm_strv_add(&argv, "-o");
  vm_strv_add(&argv, "json");
  vm_strv_add(&argv, "-q");
  for (size_t i = 0; pass[i]; i++) vm_strv_add(&argv, pass[i]);
  vm_strv_add(&argv, "--");
  vm_strv_add(&argv, p->vm);
  vm_strv_add(&argv, p->dst);
  vm_debug("move %s: %s", p->vm, vm_argv_str(argv.v));
  /* Signals wait until the child has its own handlers (the defaults, for exec):
   * one that came in between would set only this process's flag in the child. */
  sigset_t all, old;
  sigfillset(&all);
  sigprocmask(SIG_BLOCK, &all, &old);
  pid_t pid = fork();
  if (pid == 0) {
    int o = open(p->out_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    int e = open(p->err_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (o < 0 || e < 0 || dup2(o, 1) < 0 || dup2(e, 2) < 0) _exit(127);
    /* Not the terminal's Ctrl-C directly: the parent passes signals on, so that it
     * can report each move. A session of its own, without the terminal: a prompt
     * (ssh's password or host key, for a qemu+ssh host) fails at once instead of
     * stopping the move in the background for good. */
    setsid();
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGPIPE, SIG_DFL);
    signal(SIGHUP, SIG_DFL);
    signal(SIGALRM, SIG_DFL);
    sigprocmask(SIG_SETMASK, &old, NULL);
    execv("/proc/self/exe", argv.v);
    _exit(127);
  }
  sigprocmask(SIG_SETMASK, &old, NULL);
  vm_strv_free(&argv);
  return pid;
}

int run_plan(const char *file, int parallel, char **pass)
{
  /* Read whole, from stdin, a file or a FIFO (--plan <(vmbalance plan)). */
  bool std_in = strcmp(file, "-") == 0;
  int fd = std_in ? STDIN_FILENO : open(file, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return vm_fail_errno(errno == ENOENT ? VM_EXIT_NOTFOUND : VM_EXIT_FAIL, "cannot read plan '%s'", file);
  size_t len;
  CLEANUP_FREE char *text = vm_read_fd(fd, PLAN_MAX, &len);
  bool too_big = !text && errno == EFBIG;
  if (!std_in) close(fd);
  if (too_big) return vm_fail(VM_EXIT_USAGE, "plan '%s' is larger than %d MiB", file, PLAN_MAX >> 20);
  if (!text) return vm_fail(VM_EXIT_FAIL, "cannot read plan '%s'", file);
  const char *shown = std_in ? "stdin" : file;
  struct vm_plan plan;
  int line;
  const char *why;
  if (vm_plan_parse(text, len, &plan, &line, &why) < 0)
    return vm_fail(VM_EXIT_USAGE, "%s:%d: %s", shown, line, why);
  size_t n = plan.n;
  if (n == 0) {
    vm_info("the plan holds no moves");
    return 0;
  }
  struct pmove *mv = calloc(n, sizeof *mv);
  if (!mv) abort();
  for (size_t i = 0; i < n; i++)
    mv[i] = (struct pmove){ .vm = vm_strdup(plan.v[i].vm), .src = vm_strdup(plan.v[i].src),
                            .dst = vm_strdup(plan.v[i].dst), .line = plan.v[i].line };
  vm_plan_free(&plan);

  /* Every move checked against the pool as the moves before it leave it. */
  struct ledger ledger = { 0 };
  bool saved_check = mo.check_only;
  mo.check_only = true;
  for (size_t i = 0; i < n; i++) {
    bool later = false;
    for (size_t j = 0; j < i; j++)
      if (strcmp(mv[j].vm, mv[i].vm) == 0) later = true;
    if (later) continue; /* it is not on its source yet: checked when it runs */
    json_object *rep = NULL;
    int crc = run_move(mv[i].vm, mv[i].src, mv[i].dst, &ledger, &rep);
    if (crc) {
      mv[i].state = P_DONE;
      mv[i].rc = crc;
      mv[i].result = vm_strdup("refused");
      mv[i].error = vm_strdup(vm_last_error());
    }
    json_object_put(rep);
  }
  mo.check_only = saved_check;
  ledger_free(&ledger);

  CLEANUP_FREE char *dir = vm_scratch_dir("plan");
  if (!dir) return VM_EXIT_FAIL;
  size_t running = 0;
  bool forwarded = false;
  for (;;) {
    /* Start what may start: not interrupted, below the limit, its VM not moving. */
    for (size_t i = 0; i < n && running < (size_t)parallel && !vm_interrupted(); i++) {
      if (mv[i].state != P_WAITING) continue;
      bool busy = false;
      for (size_t j = 0; j < i; j++)
        if (strcmp(mv[j].vm, mv[i].vm) == 0 && mv[j].state != P_DONE) busy = true;
      if (busy) continue;
      mv[i].pid = spawn(&mv[i], pass, dir, i);
      if (mv[i].pid < 0) {
        mv[i].state = P_DONE;
        mv[i].rc = VM_EXIT_FAIL;
        mv[i].result = vm_strdup("failed");
        mv[i].error = vm_strdup("cannot start a process");
        continue;
      }
      mv[i].state = P_RUNNING;
      running++;
    }
    if (running == 0) break;
    /* Each move runs in its own session (a terminal's Ctrl-C is not theirs). Only
     * the move itself is signalled, not its group: libvirt's ssh helpers for a
     * qemu+ssh host are in it, and the move needs their connections to abort.
     * a signal to this process is passed on to every running move, once. */
    if (vm_interrupted() && !forwarded) {
      for (size_t i = 0; i < n; i++)
        if (mv[i].state == P_RUNNING) kill(mv[i].pid, vm_interrupt_signal());
      forwarded = true;
    }
    int st;
    pid_t pid = waitpid(-1, &st, WNOHANG);
    if (pid == 0 || (pid < 0 && errno == EINTR)) {
      vm_sleep_ms(100);
      continue;
    }
    if (pid < 0) break;
    for (size_t i = 0; i < n; i++) {
      if (mv[i].state != P_RUNNING || mv[i].pid != pid) continue;
      mv[i].state = P_DONE;
      running--;
      mv[i].rc = WIFEXITED(st) ? WEXITSTATUS(st) : VM_EXIT_FAIL;
      CLEANUP_FREE char *out = vm_read_file(mv[i].out_path, 1 << 20, NULL);
      mv[i].report = out ? json_tokener_parse(out) : NULL;
      mv[i].result = vm_strdup(mv[i].rc == 0 ? "moved" : "failed");
      if (mv[i].rc) mv[i].error = error_line(mv[i].err_path);
      /* Its messages, as it wrote them. */
      CLEANUP_FREE char *err = vm_read_file(mv[i].err_path, 1 << 20, NULL);
      if (err && *err && (mv[i].rc || !vm_opts.quiet)) fputs(err, stderr);
    }
  }
  /* Moves never started (interrupted). */
  for (size_t i = 0; i < n; i++)
    if (mv[i].state == P_WAITING) {
      mv[i].result = vm_strdup("not run");
      mv[i].rc = VM_EXIT_FAIL;
      mv[i].error = vm_strdup("interrupted before it started");
    }
  vm_remove_tree(dir);

  json_object *rows = json_object_new_array();
  int failed = 0;
  for (size_t i = 0; i < n; i++) {
    json_object *o = json_object_new_object();
    json_object_object_add(o, "line", json_object_new_int(mv[i].line));
    json_object_object_add(o, "vm", json_object_new_string(mv[i].vm));
    json_object_object_add(o, "source", json_object_new_string(mv[i].src));
    json_object_object_add(o, "dest", json_object_new_string(mv[i].dst));
    json_object_object_add(o, "result", json_object_new_string(mv[i].result));
    json_object_object_add(o, "exit", json_object_new_int(mv[i].rc));
    static const char *const keep[] = { "mode", "finished_by", "total_ms", "downtime_ms", "postcopy", "storage", NULL };
    for (size_t k = 0; keep[k]; k++) {
      json_object *v = mv[i].report ? json_object_object_get(mv[i].report, keep[k]) : NULL;
      json_object_object_add(o, keep[k], v ? json_object_get(v) : NULL);
    }
    json_object_object_add(o, "error", mv[i].error ? json_object_new_string(mv[i].error) : NULL);
    json_object_array_add(rows, o);
    if (mv[i].rc) failed++;
    free(mv[i].vm); free(mv[i].src); free(mv[i].dst); free(mv[i].out_path); free(mv[i].err_path);
    free(mv[i].result); free(mv[i].error);
    json_object_put(mv[i].report);
  }
  free(mv);
  static const struct vm_column cols[] = {
    { "vm", "VM", VM_COL_STR }, { "source", "SOURCE", VM_COL_STR }, { "dest", "DEST", VM_COL_STR },
    { "result", "RESULT", VM_COL_STR }, { "exit", "EXIT", VM_COL_INT }, { "finished_by", "FINISHED-BY", VM_COL_STR },
    { "total_ms", "TOTAL-MS", VM_COL_INT }, { "downtime_ms", "DOWNTIME-MS", VM_COL_INT },
    { "error", "ERROR", VM_COL_STR }, { NULL, NULL, 0 },
  };
  int prc = vm_print_list(rows, cols);
  json_object_put(rows);
  if (vm_interrupted()) return vm_fail_interrupted();
  if (failed) return vm_fail(VM_EXIT_FAIL, "%d of %zu moves failed", failed, n);
  return prc;
}
