/* Connecting to libvirt, finding domains, and the choices every tool shares. */
#include <ctype.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "vmkit.h"

virConnectPtr vm_connect(void)
{
  virConnectPtr c = virConnectOpen(vm_opts.uri);
  if (!c) {
    const char *uri = vm_opts.uri ? vm_opts.uri : getenv("LIBVIRT_DEFAULT_URI");
    vm_fail_virt("cannot connect to '%s'", uri ? uri : "the default hypervisor");
  }
  return c;
}

int vm_lookup(virConnectPtr conn, const char *name, virDomainPtr *dom)
{
  *dom = virDomainLookupByName(conn, name);
  if (!*dom && strlen(name) == 36) *dom = virDomainLookupByUUIDString(conn, name);
  if (*dom) return 0;
  if (vm_virt_exit_code() == VM_EXIT_NOTFOUND)
    return vm_fail(VM_EXIT_NOTFOUND, "no such VM '%s'", name);
  return vm_fail_virt("cannot look up VM '%s'", name);
}

int vm_domain_state(virDomainPtr dom)
{
  int state, reason;
  if (virDomainGetState(dom, &state, &reason, 0) < 0) return -1;
  return state;
}

static const char *const state_names[] = {
  [VIR_DOMAIN_NOSTATE] = "nostate",   [VIR_DOMAIN_RUNNING] = "running",
  [VIR_DOMAIN_BLOCKED] = "blocked",   [VIR_DOMAIN_PAUSED] = "paused",
  [VIR_DOMAIN_SHUTDOWN] = "shutdown", [VIR_DOMAIN_SHUTOFF] = "shutoff",
  [VIR_DOMAIN_CRASHED] = "crashed",   [VIR_DOMAIN_PMSUSPENDED] = "pmsuspended",
};

const char *vm_state_name(int state)
{
  if (state < 0 || (size_t)state >= sizeof state_names / sizeof *state_names) return "unknown";
  return state_names[state];
}

int vm_state_parse(const char *name)
{
  for (size_t i = 0; i < sizeof state_names / sizeof *state_names; i++)
    if (strcmp(state_names[i], name) == 0) return (int)i;
  return -1;
}

const char *vm_virt_type(void)
{
  const char *vt = vm_opts.virt_type ? vm_opts.virt_type : getenv("VMKIT_VIRT_TYPE");
  if (vt && *vt) return vt;
  static const char *probed;
  if (!probed) {
    int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    probed = fd >= 0 ? "kvm" : "qemu";
    if (fd >= 0) close(fd);
  }
  return probed;
}

int vm_check_name(const char *what, const char *name)
{
  size_t n = strlen(name);
  bool ok = n > 0 && n <= 64 && name[0] != '.' && name[0] != '-';
  for (size_t i = 0; ok && i < n; i++)
    ok = isalnum((unsigned char)name[i]) || strchr("._-", name[i]);
  if (ok) return 0;
  CLEANUP_FREE char *q = vm_shell_quote(name);
  return vm_usage_error("invalid %s name %s: use up to 64 letters, digits, '.', '_' and '-', "
                        "not starting with '.' or '-'", what, q);
}

const char *vm_storage_dir(void)
{
  const char *d = getenv("VMKIT_STORAGE_DIR");
  return d && *d ? d : "/var/lib/libvirt/images";
}

const char *vm_template_dir(void)
{
  const char *d = getenv("VMKIT_TEMPLATE_DIR");
  return d && *d ? d : "/var/lib/vmkit/templates";
}
