/* vmrun wait: until a VM reaches a state, prints a line on its serial console, or
 * answers through its guest agent; exit 5 when the timeout runs out first, exit 1
 * when interrupted. The console is read from its log file when the host's files
 * are this machine's; otherwise (a remote host), or with --resume, from libvirt's
 * console stream, which shows what the guest prints after it attaches: start the
 * VM paused, and let wait --resume it once attached. */
#include <string.h>
#include <sys/stat.h>

#include "vmrun.h"

static char *o_state, *o_line;
static int o_agent, o_new, o_resume, o_timeout = 300;

static struct poptOption options[] = {
  { "state", '\0', POPT_ARG_STRING, &o_state, 0, "wait until the VM is in STATE (running, paused, shutoff ...)", "STATE" },
  { "console-line", '\0', POPT_ARG_STRING, &o_line, 0, "wait until a serial console line contains TEXT", "TEXT" },
  { "new", '\0', POPT_ARG_NONE, &o_new, 0, "with --console-line: only lines written after the wait began", NULL },
  { "resume", '\0', POPT_ARG_NONE, &o_resume, 0, "with --console-line: attach to the console, then resume the paused VM", NULL },
  { "agent", '\0', POPT_ARG_NONE, &o_agent, 0, "wait until the guest agent answers a ping", NULL },
  { "timeout", 't', POPT_ARG_INT, &o_timeout, 0, "give up after SECONDS (default: 300; exit 5)", "SECONDS" },
  VM_POPT_LOCK,
  VM_POPT_COMMON,
  POPT_TABLEEND
};

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

  if (o_resume && !o_line) return vm_usage_error("--resume needs --console-line");
  if (o_new && o_resume) return vm_usage_error("--new and --resume exclude each other (a console stream sees only new lines)");

  /* The console stream is read as libvirt's event loop receives it. */
  if (o_line && (rc = vm_events_init())) return rc;
  CLEANUP_VIRCONN virConnectPtr conn = NULL;
  CLEANUP_VIRDOMAIN virDomainPtr dom = NULL;
  if ((rc = vm_open(name, &conn, &dom))) return rc;
  /* --resume changes the VM: it holds the VM's lock like any verb that does. */
  if (o_resume) {
    CLEANUP_FREE char *other = NULL;
    if ((rc = vm_lock_and_recover(conn, &dom, name, &other))) return rc;
  }

  struct vm_follower f = { 0 };
  CLEANUP_FREE char *log = NULL;
  CLEANUP_VIRSTREAM virStreamPtr st = NULL;
  if (o_line) {
    CLEANUP_XMLDOC xmlDocPtr doc = vm_domain_doc(dom, 0);
    if (!doc) return VM_EXIT_FAIL;
    log = o_resume || !vm_conn_is_local(conn) ? NULL : vm_console_log_path(doc);
    if (log) {
      f.path = log;
      struct stat sb;
      if (o_new && stat(log, &sb) == 0) f.offset = sb.st_size;
    } else {
      int state = vm_domain_state(dom);
      if (state != VIR_DOMAIN_RUNNING && state != VIR_DOMAIN_PAUSED)
        return vm_fail(VM_EXIT_STATE, "VM '%s' is %s", name, vm_state_name(state));
      st = virStreamNew(conn, VIR_STREAM_NONBLOCK);
      if (!st || virDomainOpenConsole(dom, NULL, st, VIR_DOMAIN_CONSOLE_SAFE) < 0) {
        if (vm_virt_error_code() == VIR_ERR_OPERATION_FAILED)
          return vm_fail(VM_EXIT_STATE, "cannot attach to the console of '%s': %s (another session holds it?)",
                         name, vm_virt_message());
        return vm_fail_virt("cannot attach to the console of '%s'", name);
      }
      if (o_resume && state == VIR_DOMAIN_PAUSED && virDomainResume(dom) < 0)
        return vm_fail_virt("cannot resume '%s'", name);
    }
  }

  vm_catch_signals();
  int64_t deadline = vm_now_ms() + (int64_t)o_timeout * 1000;
  bool line_seen = false, gone = false;
  for (;;) {
    int state = vm_domain_state(dom);
    if (state < 0) return vm_fail_virt("cannot read the state of VM '%s'", name);
    bool state_ok = want_state < 0 || state == want_state;
    if (o_line && !line_seen) line_seen = st ? vm_follow_stream(st, &f, o_line, &gone) : vm_follow_log(&f, o_line);
    /* Nothing will be printed or answered by a VM that is not running. */
    if (want_state < 0 && (state == VIR_DOMAIN_SHUTOFF || state == VIR_DOMAIN_CRASHED))
      return vm_fail(VM_EXIT_STATE, "VM '%s' is %s", name, vm_state_name(state));
    if (gone && !line_seen)
      return vm_fail(VM_EXIT_STATE, "the console of VM '%s' closed before the line came", name);
    bool line_ok = !o_line || line_seen;
    bool agent_ok = !o_agent || (state_ok && line_ok && vm_agent_answers(dom));
    if (state_ok && line_ok && agent_ok) {
      if (st) {
        virStreamAbort(st);
        virStreamFree(st);
        st = NULL;
      }
      return 0;
    }
    if (vm_interrupted()) return vm_fail_interrupted();
    if (vm_now_ms() >= deadline) {
      const char *what = !state_ok ? "its state" : !line_ok ? "the console line" : "the guest agent";
      return vm_fail(VM_EXIT_TIMEOUT, "timed out after %d s waiting for %s of VM '%s'", o_timeout, what, name);
    }
    vm_sleep_ms(o_agent && !agent_ok ? 500 : 100);
  }
}
