/* libvirt's errors in vmkit's one-line form, and the exit codes they map to. */
#include <string.h>

#include "vmkit-virt.h"

/* libvirt prints every error to stderr by default; vmkit folds its message into
 * its own one line instead, so the default printer is silenced. */
static void silent_virt_error(void *opaque, virErrorPtr err) {}

void vm_virt_init(void)
{
  static bool done;
  if (done) return;
  done = true;
  virSetErrorFunc(NULL, silent_virt_error);
  /* libxml2 set up once, before threads parse (vmbalance's probes, vmrun create). */
  xmlInitParser();
}

/* libvirt's message as one line: some carry a child's stderr with newlines. */
static const char *one_line(virErrorPtr e)
{
  static __thread char line[2048]; /* per thread: vmrun create starts VMs from several */
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

int vm_virt_error_code(void)
{
  virErrorPtr e = virGetLastError();
  return e ? e->code : VIR_ERR_OK;
}

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
  vm_fail_why(code, one_line(saved), fmt, ap);
  va_end(ap);
  if (saved) virFreeError(saved);
  return code;
}
