/* Per-VM locks and locks on other objects of a host, keyed by the host's UUID so
 * that two hosts' VMs never share a key, on top of the base layer's file locks.
 * They exclude runs made from one machine (the host itself, or one management
 * node); vmkit(7) says what they do not cover. */
#include <string.h>

#include "vmkit-virt.h"

static int take(virConnectPtr conn, const char *kind, const char *id, bool shared, const char *what)
{
  const char *host = vm_conn_host_uuid(conn);
  if (!host) return VM_EXIT_FAIL;
  CLEANUP_FREE char *key = vm_strdup_printf("%s.%s.%s", host, kind, id);
  struct vm_lock *l;
  /* Held until the process ends: every verb that locks works on its VM to the end. */
  return vm_lock_take(key, shared, vm_lock_wait_seconds(), what, &l);
}

int vm_lock_domain_uuid(virConnectPtr conn, const char *uuid, const char *name)
{
  CLEANUP_FREE char *what = vm_strdup_printf("VM '%s'", name);
  return take(conn, "vm", uuid, false, what);
}

pid_t vm_lock_domain_holder(const char *host_uuid, const char *uuid)
{
  CLEANUP_FREE char *key = vm_strdup_printf("%s.vm.%s", host_uuid, uuid);
  return vm_lock_holder(key);
}

int vm_lock_domain(virConnectPtr conn, virDomainPtr dom)
{
  char uuid[VIR_UUID_STRING_BUFLEN];
  if (virDomainGetUUIDString(dom, uuid) < 0) return vm_fail_virt("cannot read the UUID of a VM");
  return vm_lock_domain_uuid(conn, uuid, virDomainGetName(dom));
}

int vm_lock_object(virConnectPtr conn, const char *kind, const char *name, bool shared, const char *what)
{
  return take(conn, kind, name, shared, what);
}

/* What most verbs that change a VM do first: find it, lock it, and finish or roll
 * back what a killed run left on it. */
int vm_lock_and_recover(virConnectPtr conn, virDomainPtr *dom, const char *name, char **other)
{
  if (other) *other = NULL;
  int rc = vm_lock_domain(conn, *dom);
  if (rc) return rc;
  rc = vm_journal_recover(conn, dom, other);
  if (rc == VM_EXIT_NOTFOUND) return vm_fail(VM_EXIT_NOTFOUND, "no such VM '%s'", name);
  return rc;
}

int vm_open_locked(const char *name, virConnectPtr *conn, virDomainPtr *dom, char **other)
{
  int rc = vm_open(name, conn, dom);
  if (rc) return rc;
  return vm_lock_and_recover(*conn, dom, name, other);
}
