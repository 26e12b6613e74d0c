/* One-line errors, chatter, syslog, and the safety net on stdout. */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include "vmkit.h"

const char *vm_progname = "vmkit";
static volatile sig_atomic_t interrupted;

/* libvirt prints every error to stderr by default; vmkit folds its message into
 * its own one line instead, so the default printer is silenced. */
static void silent_virt_error(void *opaque, virErrorPtr err) {}

/* Output that could not be written (a full disk, a closed pipe) must turn into a
 * failing exit, or a script would take a truncated result for a whole one. */
static void close_stdout(void)
{
  if (fflush(stdout) != 0 || ferror(stdout) || fclose(stdout) != 0) {
    if (errno != EPIPE)
      fprintf(stderr, "%s: write error on standard output: %s\n", vm_progname,
              strerror(errno));
    _exit(VM_EXIT_FAIL);
  }
}

void vm_init(const char *progname)
{
  const char *slash = strrchr(progname, '/');
  vm_progname = slash ? slash + 1 : progname;
  virSetErrorFunc(NULL, silent_virt_error);
  atexit(close_stdout);
  /* Under cron (no terminal), VMKIT_SYSLOG=1 sends messages to syslog. */
  const char *s = getenv("VMKIT_SYSLOG");
  if (s && strcmp(s, "1") == 0 && !isatty(STDERR_FILENO))
    vm_opts.use_syslog = 1;
}

static void emit(int prio, const char *prefix, const char *fmt, va_list ap, const char *tail)
{
  char msg[4096];
  vsnprintf(msg, sizeof msg, fmt, ap);
  fprintf(stderr, "%s: %s%s%s%s\n", vm_progname, prefix, msg, tail ? ": " : "",
          tail ? tail : "");
  if (vm_opts.use_syslog) {
    openlog(vm_progname, LOG_PID, LOG_USER);
    syslog(prio, "%s%s%s%s", prefix, msg, tail ? ": " : "", tail ? tail : "");
  }
}

int vm_fail(int code, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  emit(LOG_ERR, "", fmt, ap, NULL);
  va_end(ap);
  return code;
}

int vm_fail_errno(int code, const char *fmt, ...)
{
  int e = errno;
  va_list ap;
  va_start(ap, fmt);
  emit(LOG_ERR, "", fmt, ap, strerror(e));
  va_end(ap);
  return code;
}

/* libvirt's message as one line: some carry a child's stderr with newlines. */
static const char *one_line(virErrorPtr e)
{
  static char line[2048];
  if (!e || !e->message) return "unknown libvirt error";
  size_t o = 0;
  for (const char *p = e->message; *p && o + 1 < sizeof line; p++) {
    char c = *p == '\n' || *p == '\r' || *p == '\t' ? ' ' : *p;
    if (c == ' ' && (o == 0 || line[o - 1] == ' ')) continue;
    line[o++] = c;
  }
  while (o && line[o - 1] == ' ') o--;
  line[o] = '\0';
  return line;
}

const char *vm_virt_message(void) { return one_line(virGetLastError()); }

/* libvirt's error codes mapped onto vmkit's exit codes. */
static int exit_code_of(virErrorPtr e)
{
  if (!e) return VM_EXIT_FAIL;
  switch (e->code) {
  case VIR_ERR_NO_DOMAIN:
  case VIR_ERR_NO_DOMAIN_SNAPSHOT:
  case VIR_ERR_NO_DOMAIN_CHECKPOINT:
  case VIR_ERR_NO_STORAGE_VOL:
  case VIR_ERR_NO_STORAGE_POOL:
  case VIR_ERR_NO_NETWORK:
    return VM_EXIT_NOTFOUND;
  case VIR_ERR_OPERATION_INVALID:
  case VIR_ERR_DOM_EXIST:
  case VIR_ERR_OPERATION_ABORTED:
  case VIR_ERR_BLOCK_COPY_ACTIVE:
    return VM_EXIT_STATE;
  case VIR_ERR_OPERATION_TIMEOUT:
  case VIR_ERR_AGENT_UNRESPONSIVE:
    return VM_EXIT_TIMEOUT;
  case VIR_ERR_INVALID_ARG:
    return VM_EXIT_USAGE;
  default:
    return VM_EXIT_FAIL;
  }
}

int vm_virt_exit_code(void) { return exit_code_of(virGetLastError()); }

int vm_fail_virt_saved(virErrorPtr saved, const char *fmt, ...)
{
  int code = exit_code_of(saved);
  va_list ap;
  va_start(ap, fmt);
  emit(LOG_ERR, "", fmt, ap, one_line(saved));
  va_end(ap);
  if (saved) virFreeError(saved);
  return code;
}

void vm_warn(const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  emit(LOG_WARNING, "warning: ", fmt, ap, NULL);
  va_end(ap);
}

void vm_info(const char *fmt, ...)
{
  if (vm_opts.quiet) return;
  va_list ap;
  va_start(ap, fmt);
  emit(LOG_INFO, "", fmt, ap, NULL);
  va_end(ap);
}

void vm_debug(const char *fmt, ...)
{
  if (!vm_opts.verbose) return;
  va_list ap;
  va_start(ap, fmt);
  emit(LOG_DEBUG, "", fmt, ap, NULL);
  va_end(ap);
}

static void on_signal(int sig) { interrupted = 1; }

void vm_catch_signals(void)
{
  struct sigaction sa = { .sa_handler = on_signal };
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGHUP, &sa, NULL);
  /* A closed stdout or stderr (a reader gone from a pipe) must not kill the tool
   * between making a disk and undoing it: writes fail with EPIPE instead. */
  signal(SIGPIPE, SIG_IGN);
}

bool vm_interrupted(void) { return interrupted != 0; }
