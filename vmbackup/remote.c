/* The connection to an ssh:// repository (remote.h). ssh ignores SIGINT and
 * SIGQUIT (OpenSSH keeps an ignored signal ignored), so that a Ctrl-C at the
 * terminal reaches vmbackup alone, which stops at a safe point and ends the
 * connection itself; ssh stays in the terminal's foreground, where it may ask
 * for a host key's confirmation or a passphrase. Whatever ends vmbackup (kill -9
 * too) closes the pipes: the server reads the end of its input and drops what
 * was not committed. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "remote.h"
#include "vmkit-base.h"

struct vb_remote {
  pid_t pid;
  int to, from; /* ssh's stdin, stdout */
  char *host;
  bool broken;
  char err[512];
};

/* ssh://[USER@]HOST[:PORT]/PATH into its parts (caller frees). */
static int parse_url(const char *url, char **userhost, char **port, char **path)
{
  const char *s = url + 6, *slash = strchr(s, '/');
  if (!slash || slash == s || !slash[1])
    return vm_fail(VM_EXIT_USAGE, "'%s' is no ssh repository: give ssh://[USER@]HOST[:PORT]/PATH", url);
  CLEANUP_FREE char *auth = strndup(s, (size_t)(slash - s));
  if (!auth) abort();
  char *at = strrchr(auth, '@');
  char *hp = at ? at + 1 : auth;
  char *colon = NULL;
  if (*hp == '[') {
    char *close_b = strchr(hp, ']');
    if (!close_b) return vm_fail(VM_EXIT_USAGE, "'%s': an unclosed [ in the host", url);
    if (close_b[1] == ':') colon = close_b + 1;
    else if (close_b[1]) return vm_fail(VM_EXIT_USAGE, "'%s': text after the host's ]", url);
  } else {
    colon = strrchr(hp, ':');
  }
  *port = NULL;
  if (colon) {
    *colon = 0;
    const char *p = colon + 1;
    if (!*p || strspn(p, "0123456789") != strlen(p) || atoi(p) < 1 || atoi(p) > 65535)
      return vm_fail(VM_EXIT_USAGE, "'%s': the port is not a number from 1 to 65535", url);
    *port = vm_strdup(p);
  }
  if (*hp == '[') {
    memmove(hp, hp + 1, strlen(hp));
    hp[strlen(hp) - 1] = 0;
  }
  if (!*hp || *hp == '-' || (at && (at == auth || auth[0] == '-'))) {
    free(*port);
    return vm_fail(VM_EXIT_USAGE, "'%s': no host, or a host or user that starts with '-'", url);
  }
  *userhost = vm_strdup(auth);
  /* /~/x is x under the far side's home. */
  *path = vm_strdup(strncmp(slash, "/~/", 3) == 0 ? slash + 3 : slash);
  if (!**path || !strcmp(*path, "/")) {
    free(*path);
    free(*port);
    free(*userhost);
    *path = *port = *userhost = NULL;
    return vm_fail(VM_EXIT_USAGE, "'%s' names no folder: give ssh://[USER@]HOST[:PORT]/PATH", url);
  }
  return 0;
}

static void fail_conn(struct vb_remote *rm, const char *what)
{
  if (!rm->broken)
    snprintf(rm->err, sizeof rm->err, "the connection to %s %s", rm->host, what);
  rm->broken = true;
}

int vb_remote_send(struct vb_remote *rm, struct vb_buf *b)
{
  if (rm->broken) return errno = EPIPE, -1;
  if (vb_msg_send(rm->to, b) < 0) {
    int e = errno;
    fail_conn(rm, e == EPIPE ? "ended (its server stopped)" : "failed");
    return errno = e, -1;
  }
  return 0;
}

int vb_remote_call(struct vb_remote *rm, struct vb_buf *b, unsigned char **body, size_t *len)
{
  *body = NULL;
  if (vb_remote_send(rm, b) < 0) return -1;
  int rc = vb_msg_recv(rm->from, VB_MSG_MAX, body, len);
  if (rc == 0) return 0;
  int e = rc > 0 ? EPIPE : errno;
  fail_conn(rm, rc > 0 ? "ended (its server stopped)" : e == EPROTO ? "sent a message too long" : "failed");
  return errno = e, -1;
}

const char *vb_remote_error(const struct vb_remote *rm) { return rm->err; }

/* The words of VMKIT_RSH (default "ssh"), split at spaces. */
static void rsh_words(struct vm_strv *argv)
{
  const char *rsh = getenv("VMKIT_RSH");
  if (!rsh || !*rsh) rsh = "ssh";
  CLEANUP_FREE char *copy = vm_strdup(rsh);
  char *save = NULL;
  for (char *w = strtok_r(copy, " \t", &save); w; w = strtok_r(NULL, " \t", &save)) vm_strv_add(argv, w);
}

int vb_remote_open(const char *url, struct vb_remote **out, uint32_t *flags)
{
  *out = NULL;
  char *userhost = NULL, *port = NULL, *path = NULL;
  int rc = parse_url(url, &userhost, &port, &path);
  if (rc) return rc;
  struct vm_strv argv = { 0 };
  rsh_words(&argv);
  if (port) {
    vm_strv_add(&argv, "-p");
    vm_strv_add(&argv, port);
  }
  vm_strv_add(&argv, "--");
  vm_strv_add(&argv, userhost);
  const char *rpath = getenv("VMKIT_REMOTE_PATH");
  vm_strv_add(&argv, rpath && *rpath ? rpath : "vmbackup");
  vm_strv_add(&argv, "serve");
  vm_strv_add(&argv, "--stdio");
  free(port);
  /* A server that is gone is an error of a call, not a signal that kills us. */
  signal(SIGPIPE, SIG_IGN);
  int in[2], outp[2];
  if (pipe2(in, O_CLOEXEC) < 0) {
    rc = vm_fail_errno(VM_EXIT_FAIL, "cannot start ssh");
    goto out;
  }
  if (pipe2(outp, O_CLOEXEC) < 0) {
    rc = vm_fail_errno(VM_EXIT_FAIL, "cannot start ssh");
    close(in[0]), close(in[1]);
    goto out;
  }
  pid_t pid = fork();
  if (pid < 0) {
    rc = vm_fail_errno(VM_EXIT_FAIL, "cannot start ssh");
    close(in[0]), close(in[1]), close(outp[0]), close(outp[1]);
    goto out;
  }
  if (pid == 0) {
    signal(SIGINT, SIG_IGN);
    signal(SIGQUIT, SIG_IGN);
    signal(SIGPIPE, SIG_DFL);
    dup2(in[0], 0);
    dup2(outp[1], 1);
    execvp(argv.v[0], argv.v);
    /* After fork in a process that may have threads (the nbdkit plugin):
     * no stdio nor strerror, whose locks another thread may have held. */
    dprintf(2, "vmbackup: cannot run '%s' (errno %d)\n", argv.v[0], errno);
    _exit(127);
  }
  close(in[0]);
  close(outp[1]);
  struct vb_remote *rm = calloc(1, sizeof *rm);
  if (!rm) abort();
  rm->pid = pid;
  rm->to = in[1];
  rm->from = outp[0];
  rm->host = userhost;
  userhost = NULL;
  struct vb_buf b;
  vb_buf_init(&b);
  vb_buf_u8(&b, VB_OP_HELLO);
  vb_buf_u32(&b, VB_PROTO_VERSION);
  vb_buf_str(&b, path);
  unsigned char *body = NULL;
  size_t len = 0;
  int crc = vb_remote_call(rm, &b, &body, &len);
  vb_buf_free(&b);
  struct vb_rd rd;
  vb_rd_init(&rd, body, len);
  int32_t status = crc ? 0 : (int32_t)vb_rd_u32(&rd);
  if (crc) {
    rc = vm_fail(VM_EXIT_FAIL, "repository '%s': no vmbackup server answered through ssh (is vmbackup installed "
                               "there, or VMKIT_REMOTE_PATH set, and does ssh log in without asking?)", url);
  } else if (status < 0) {
    size_t n = rd.len - rd.off;
    char msg[901];
    if (n > 900) n = 900;
    for (size_t i = 0; i < n; i++) msg[i] = rd.p[rd.off + i] < ' ' || rd.p[rd.off + i] == 127 ? ' ' : (char)rd.p[rd.off + i];
    msg[n] = 0;
    rc = vm_fail(status < -63 ? VM_EXIT_FAIL : -status, "%s", msg);
  } else if (status > 0) {
    errno = status;
    rc = vm_fail_errno(VM_EXIT_FAIL, "repository '%s'", url);
  } else {
    uint32_t version = vb_rd_u32(&rd);
    *flags = vb_rd_u32(&rd);
    if (!vb_rd_done(&rd) || version != VB_PROTO_VERSION)
      rc = vm_fail(VM_EXIT_FAIL, "repository '%s': its server speaks another version of vmbackup's protocol (%u; "
                                 "this vmbackup speaks %u)", url, version, VB_PROTO_VERSION);
  }
  free(body);
  if (rc) vb_remote_close(rm);
  else *out = rm;
out:
  free(userhost);
  free(path);
  vm_strv_free(&argv);
  return rc;
}

void vb_remote_close(struct vb_remote *rm)
{
  if (!rm) return;
  close(rm->to);
  close(rm->from);
  /* The server ends at the end of its input, and ssh with it. */
  struct timespec start;
  clock_gettime(CLOCK_MONOTONIC, &start);
  for (;;) {
    int st;
    pid_t w = waitpid(rm->pid, &st, WNOHANG);
    if (w == rm->pid || (w < 0 && errno != EINTR)) break;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (now.tv_sec - start.tv_sec >= 10) {
      kill(rm->pid, SIGKILL);
      waitpid(rm->pid, &st, 0);
      break;
    }
    struct timespec t = { 0, 20 * 1000 * 1000 };
    nanosleep(&t, NULL);
  }
  free(rm->host);
  free(rm);
}
