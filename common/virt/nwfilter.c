/* Traffic filters on a VM's NICs: libvirt's nwfilter (clean-traffic and the other
 * filters a host defines), checked on the host before a VM names one. */
#include <arpa/inet.h>

#include "vmkit-virt.h"

int vm_nwfilter_check(virConnectPtr conn, const char *name)
{
  virNWFilterPtr f = virNWFilterLookupByName(conn, name);
  if (f) {
    virNWFilterFree(f);
    return 0;
  }
  if (vm_virt_error_code() == VIR_ERR_NO_NWFILTER) {
    virResetLastError();
    return vm_fail(VM_EXIT_NOTFOUND, "no traffic filter '%s' on %s (its filters: virsh nwfilter-list)", name,
                   vm_conn_host_name(conn));
  }
  return vm_fail_virt("cannot look up traffic filter '%s' on %s", name, vm_conn_host_name(conn));
}

bool vm_valid_ipv4(const char *s)
{
  struct in_addr a;
  return inet_pton(AF_INET, s, &a) == 1;
}
