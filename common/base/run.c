/* Running programs (qemu-img, qemu-nbd ...) with an argv, never a shell string,
 * capturing what they print. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "vmkit-base.h"

struct buf {
  char *p;
  size_t n;
};

static void buf_append(struct buf *b, const char *d, size_t n)
{
  char *q = realloc(b->p, b->n + n + 1);
  if (!q) return;
  b->p = q;
  memcpy(b->p + b->n, d, n);
  b->n += n;
  b->p[b->n] = '\0';
}

/* error.c forwards the signal that interrupts the tool to these children. */
extern volatile pid_t vm_running_children[VM_CHILD_SLOTS];

/* A slot for pid (none when all are taken: the child is then not told). */
static volatile pid_t *child_slot(pid_t pid)
{
  for (size_t i = 0; i < VM_CHILD_SLOTS; i++) {
    pid_t zero = 0;
    if (__atomic_compare_exchange_n(&vm_running_children[i], &zero, pid, false, __ATOMIC_SEQ_CST,
                                    __ATOMIC_SEQ_CST))
      return &vm_running_children[i];
  }
  return NULL;
}

static void close_pair(int p[2])
{
  if (p[0] >= 0) close(p[0]);
  if (p[1] >= 0) close(p[1]);
}

int vm_run(char *const argv[], char **out, char **err)
{
  int po[2] = { -1, -1 }, pe[2] = { -1, -1 };
  if (out && pipe2(po, O_CLOEXEC) < 0) return -1;
  if (pipe2(pe, O_CLOEXEC) < 0) {
    close_pair(po);
    return -1;
  }
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) {
    close_pair(po);
    close_pair(pe);
    return -1;
  }
  if (pid == 0) {
    /* The child must die on Ctrl-C even though the parent catches it, and with
     * its parent, however the parent dies (kill -9 leaves no qemu-img behind). */
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGHUP, SIG_DFL);
    signal(SIGPIPE, SIG_DFL);
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) _exit(127); /* the parent died before the line above */
    int devnull = open("/dev/null", O_RDWR);
    dup2(devnull, STDIN_FILENO);
    dup2(out ? po[1] : devnull, STDOUT_FILENO);
    dup2(pe[1], STDERR_FILENO);
    execvp(argv[0], argv);
    /* write(2) only: the parent may have threads, whose stdio locks a fork copies. */
    const char *why = strerror(errno);
    struct iovec iov[] = { { (void *)"cannot run ", 11 }, { argv[0], strlen(argv[0]) }, { (void *)": ", 2 },
                           { (void *)why, strlen(why) }, { (void *)"\n", 1 } };
    ssize_t ignored = writev(STDERR_FILENO, iov, 5);
    (void)ignored;
    _exit(127);
  }
  volatile pid_t *slot = child_slot(pid);
  /* A signal that came just before the child existed is passed on now. */
  if (vm_interrupted()) kill(pid, vm_interrupt_signal());
  if (out) close(po[1]);
  close(pe[1]);

  struct buf bo = { 0 }, be = { 0 };
  struct pollfd fds[2] = { { out ? po[0] : -1, POLLIN, 0 }, { pe[0], POLLIN, 0 } };
  int open_fds = out ? 2 : 1;
  char chunk[65536];
  while (open_fds > 0) {
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    for (int i = 0; i < 2; i++) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      ssize_t r = read(fds[i].fd, chunk, sizeof chunk);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) {
        close(fds[i].fd);
        fds[i].fd = -1;
        open_fds--;
      } else {
        buf_append(i == 0 ? &bo : &be, chunk, (size_t)r);
      }
    }
  }
  int status = 0;
  /* The slot is freed while the child is a zombie, before its pid can be
   * reused: a late signal then reaches no other process. */
  siginfo_t si;
  while (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOWAIT) < 0 && errno == EINTR)
    ;
  if (slot) __atomic_store_n(slot, 0, __ATOMIC_SEQ_CST);
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
    ;
  if (out) *out = bo.p ? bo.p : strdup("");
  if (err) *err = be.p ? be.p : strdup("");
  else free(be.p);
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return -1;
}

const char *vm_last_line(char *s)
{
  size_t n = strlen(s);
  while (n && (s[n - 1] == '\n' || s[n - 1] == '\r')) s[--n] = '\0';
  char *nl = strrchr(s, '\n');
  return nl ? nl + 1 : s;
}

int vm_run_checked(char *const argv[], char **out)
{
  if (vm_opts.verbose) {
    CLEANUP_FREE char *cmd = vm_argv_str(argv);
    vm_debug("running: %s", cmd);
  }
  CLEANUP_FREE char *err = NULL;
  int rc = vm_run(argv, out, &err);
  if (rc == 0) return 0;
  if (out) {
    free(*out);
    *out = NULL;
  }
  const char *why = err && *err ? vm_last_line(err) : (rc < 0 ? "killed by a signal" : "failed");
  return vm_fail(VM_EXIT_FAIL, "%s failed: %s", argv[0], why);
}

char *vm_tool_path(const char *tool)
{
  char exe[4096];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n > 0) {
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (slash) {
      *slash = '\0';
      /* Installed: side by side. Built: each tool in its folder of the tree. */
      char *p = vm_strdup_printf("%s/%s", exe, tool);
      if (access(p, X_OK) == 0) return p;
      free(p);
      p = vm_strdup_printf("%s/../%s/%s", exe, tool, tool);
      if (access(p, X_OK) == 0) return p;
      free(p);
    }
  }
  return vm_strdup(tool);
}
