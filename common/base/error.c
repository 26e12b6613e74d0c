/* One-line errors, chatter, syslog, signals, and the safety net on stdout. */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include "vmkit-base.h"

const char *vm_progname = "vmkit";
static volatile sig_atomic_t interrupted;

/* Output that could not be written (a full disk) must turn into a failing exit, or
 * a script would take a truncated result for a whole one. A reader that closed the
 * pipe early is not an error: it had what it wanted. */
static void close_stdout(void)
{
  if (fflush(stdout) != 0 || ferror(stdout) || fclose(stdout) != 0) {
    if (errno == EPIPE || vm_output_closed()) return;
    fprintf(stderr, "%s: write error on standard output: %s\n", vm_progname, strerror(errno));
    _exit(VM_EXIT_FAIL);
  }
}

void vm_init(const char *progname)
{
  const char *slash = strrchr(progname, '/');
  vm_progname = slash ? slash + 1 : progname;
  atexit(close_stdout);
  /* Under cron (no terminal), VMKIT_SYSLOG=1 sends messages to syslog. */
  const char *s = getenv("VMKIT_SYSLOG");
  if (s && strcmp(s, "1") == 0 && !isatty(STDERR_FILENO))
    vm_opts.use_syslog = 1;
}

/* The last error line of this thread, for reports that list each item's
 * failure (items may be worked on by threads side by side). */
static __thread char last_error[8192 + 4];

const char *vm_last_error(void) { return last_error; }

/* While muted, errors are only kept (vm_last_error), not printed. A depth: mutes
 * nest (a muted pre-flight check calls a helper that mutes its own probe). */
static __thread int muted;

void vm_errors_mute(bool on)
{
  if (on) muted++;
  else if (muted > 0) muted--;
}

static void emit(int prio, const char *prefix, const char *fmt, va_list ap, const char *tail)
{
  char msg[4096];
  vsnprintf(msg, sizeof msg, fmt, ap);
  if (prio == LOG_ERR) snprintf(last_error, sizeof last_error, "%s%s%s", msg, tail ? ": " : "", tail ? tail : "");
  if (muted > 0 && prio == LOG_ERR) return;
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

int vm_fail_why(int code, const char *why, const char *fmt, va_list ap)
{
  emit(LOG_ERR, "", fmt, ap, why);
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

/* Set by run.c while child programs run (one slot each: the threads of a run,
 * such as vmpatch apply's, each run their own), so that the signal reaches them
 * too. */
volatile pid_t vm_running_children[VM_CHILD_SLOTS];

static void on_signal(int sig)
{
  if (!interrupted) interrupted = sig;
  for (size_t i = 0; i < VM_CHILD_SLOTS; i++) {
    pid_t child = vm_running_children[i];
    if (child > 0) kill(child, sig);
  }
}

void vm_catch_signals(void)
{
  struct sigaction sa = { .sa_handler = on_signal };
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGHUP, &sa, NULL);
  /* A tool's own deadline (alarm(2)) interrupts it the same way. */
  sigaction(SIGALRM, &sa, NULL);
  /* A closed stdout or stderr (a reader gone from a pipe) must not kill the tool
   * between making a disk and undoing it: writes fail with EPIPE instead. */
  signal(SIGPIPE, SIG_IGN);
}

bool vm_interrupted(void) { return interrupted != 0; }
int vm_interrupt_signal(void) { return interrupted; }

int vm_fail_interrupted(void)
{
  int sig = interrupted;
  const char *name = sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : sig == SIGHUP ? "SIGHUP" : sig == SIGALRM ? "its time limit (SIGALRM)" : "a signal";
  return vm_fail(VM_EXIT_FAIL, "interrupted by %s", name);
}
