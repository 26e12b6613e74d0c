/* vmrun wait: until a VM reaches a state, prints a line on its serial console, or
 * answers through its guest agent; exit 5 when the timeout runs out first. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libvirt/libvirt-qemu.h>

#include "vmrun.h"

static char *o_state, *o_line;
static int o_agent, o_new, o_timeout = 300;

static struct poptOption options[] = {
  { "state", '\0', POPT_ARG_STRING, &o_state, 0, "wait until the VM is in STATE (running, paused, shutoff ...)", "STATE" },
  { "console-line", '\0', POPT_ARG_STRING, &o_line, 0, "wait until a serial console line contains TEXT", "TEXT" },
  { "new", '\0', POPT_ARG_NONE, &o_new, 0, "with --console-line: only lines written after the wait began", NULL },
  { "agent", '\0', POPT_ARG_NONE, &o_agent, 0, "wait until the guest agent answers a ping", NULL },
  { "timeout", 't', POPT_ARG_INT, &o_timeout, 0, "give up after SECONDS (default: 300; exit 5)", "SECONDS" },
  VM_POPT_COMMON,
  POPT_TABLEEND
};

char *console_log_path(xmlDocPtr doc)
{
  CLEANUP_XPATHCTX xmlXPathContextPtr ctx = vm_xpath_ctx(doc);
  char *p = vm_xpath_str(ctx, "/domain/devices/serial[1]/log/@file");
  if (!p) p = vm_xpath_str(ctx, "/domain/devices/serial[@type='file'][1]/source/@path");
  return p;
}

/* Follows a console log as it grows, finding lines that contain the text. The log
 * is truncated when QEMU starts again: then it is read from its start. */
struct follower {
  const char *path;
  off_t offset;
  char partial[4096];
  size_t plen;
};

static bool follow(struct follower *f, const char *text)
{
  CLEANUP_CLOSE int fd = open(f->path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  struct stat st;
  if (fstat(fd, &st) < 0) return false;
  if (st.st_size < f->offset) f->offset = 0, f->plen = 0;
  if (lseek(fd, f->offset, SEEK_SET) < 0) return false;
  char buf[8192];
  ssize_t r;
  while ((r = read(fd, buf, sizeof buf)) > 0) {
    f->offset += r;
    for (ssize_t i = 0; i < r; i++) {
      if (buf[i] == '\n' || f->plen == sizeof f->partial - 1) {
        f->partial[f->plen] = '\0';
        f->plen = 0;
        if (strstr(f->partial, text)) return true;
      }
      if (buf[i] != '\n') f->partial[f->plen++] = buf[i];
    }
  }
  /* A last line without its newline yet counts too. */
  f->partial[f->plen] = '\0';
  return f->plen && strstr(f->partial, text);
}

static bool agent_answers(virDomainPtr dom)
{
  char *r = virDomainQemuAgentCommand(dom, "{\"execute\":\"guest-ping\"}", 2, 0);
  free(r);
  return r != NULL;
}

int cmd_wait(int argc, char **argv)
{
  CLEANUP_POPT poptContext ctx = NULL;
  const char **args;
  int nargs;
  int rc = vm_parse(&ctx, argc, argv, options, "VM",
                    "Wait for a VM's state, a line on its serial console, or its guest agent.",
                    1, 1, &args, &nargs);
  if (rc) return rc == VM_DONE ? 0 : rc;
  const char *name = args[0];
  int want_state = -1;
  if (o_state && (want_state = vm_state_parse(o_state)) < 0)
    return vm_usage_error("unknown state '%s'", o_state);
  if (!o_state && !o_line && !o_agent)
    return vm_usage_error("say what to wait for: --state, --console-line or --agent");
  if (o_new && !o_line) return vm_usage_error("--new needs --console-line");
  if (o_timeout < 0) return vm_usage_error("invalid --timeout %d", o_timeout);

  CLEANUP_VIRCONN virConnectPtr conn = NULL;
  CLEANUP_VIRDOMAIN virDomainPtr dom = NULL;
  if ((rc = vm_open(name, &conn, &dom))) return rc;

  struct follower f = { 0 };
  CLEANUP_FREE char *log = NULL;
  if (o_line) {
    CLEANUP_XMLDOC xmlDocPtr doc = vm_domain_doc(dom, 0);
    if (!doc) return VM_EXIT_FAIL;
    if (!(log = console_log_path(doc)))
      return vm_fail(VM_EXIT_STATE, "VM '%s' has no serial console log to watch", name);
    f.path = log;
    struct stat st;
    if (o_new && stat(log, &st) == 0) f.offset = st.st_size;
  }

  vm_catch_signals();
  int64_t deadline = vm_now_ms() + (int64_t)o_timeout * 1000;
  bool line_seen = false;
  for (;;) {
    int st = vm_domain_state(dom);
    if (st < 0) return vm_fail_virt("cannot read the state of VM '%s'", name);
    bool state_ok = want_state < 0 || st == want_state;
    /* Nothing will be printed or answered by a VM that is not running. */
    if (want_state < 0 && (st == VIR_DOMAIN_SHUTOFF || st == VIR_DOMAIN_CRASHED))
      return vm_fail(VM_EXIT_STATE, "VM '%s' is %s", name, vm_state_name(st));
    if (o_line && !line_seen) line_seen = follow(&f, o_line);
    bool line_ok = !o_line || line_seen;
    bool agent_ok = !o_agent || (state_ok && line_ok && agent_answers(dom));
    if (state_ok && line_ok && agent_ok) return 0;
    if (vm_now_ms() >= deadline || vm_interrupted()) {
      const char *what = !state_ok ? "its state" : !line_ok ? "the console line" : "the guest agent";
      return vm_fail(VM_EXIT_TIMEOUT, "timed out after %d s waiting for %s of VM '%s'", o_timeout, what, name);
    }
    vm_sleep_ms(o_agent && !agent_ok ? 500 : 100);
  }
}
