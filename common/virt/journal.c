/* The journal: what a run is about to do to a VM, written into the VM's definition
 * before it acts, so that the next run holding the VM's lock can finish or roll
 * back what a killed run started. It lives in libvirt's metadata (namespace
 * VM_JOURNAL_NS), so it is on the VM's host and works through any URI. One record
 * at a time: a run finishes or rolls back an earlier record before it writes its own. */
#include <string.h>
#include <unistd.h>

#include "vmkit-virt.h"

xmlDocPtr vm_journal_new(const char *op)
{
  xmlDocPtr doc = xmlNewDoc(BAD_CAST "1.0");
  xmlNodePtr root = xmlNewNode(NULL, BAD_CAST "journal");
  xmlDocSetRootElement(doc, root);
  char host[256] = "", now[32];
  gethostname(host, sizeof host - 1);
  vm_iso_time(now);
  vm_xml_set(root, "op", op);
  vm_xml_set(root, "tool", vm_progname);
  vm_xml_setf(root, "pid", "%d", (int)getpid());
  vm_xml_set(root, "host", host);
  vm_xml_set(root, "machine", vm_machine_id());
  vm_xml_set(root, "started", now);
  return doc;
}

void vm_journal_add_volume(xmlDocPtr rec, const char *path, const char *role)
{
  xmlNodePtr v = vm_xml_child(xmlDocGetRootElement(rec), "volume", NULL);
  vm_xml_set(v, "path", path);
  vm_xml_set(v, "role", role);
}

void vm_journal_add_secret(xmlDocPtr rec, const char *uuid, const char *role)
{
  xmlNodePtr v = vm_xml_child(xmlDocGetRootElement(rec), "secret", NULL);
  vm_xml_set(v, "uuid", uuid);
  vm_xml_set(v, "role", role);
}

int vm_journal_write(virDomainPtr dom, xmlDocPtr rec)
{
  return vm_meta_write(dom, VM_JOURNAL_NS, VM_JOURNAL_PREFIX, rec);
}

/* The persistent definition's copy first: a definition written whole (a revert that
 * restores memory) may start a live one without it. */
int vm_journal_read(virDomainPtr dom, xmlDocPtr *rec)
{
  *rec = NULL;
  if (virDomainIsPersistent(dom) == 1) {
    char *xml = virDomainGetMetadata(dom, VIR_DOMAIN_METADATA_ELEMENT, VM_JOURNAL_NS, VIR_DOMAIN_AFFECT_CONFIG);
    if (xml) {
      *rec = vm_xml_parse(xml);
      free(xml);
      if (!*rec) return vm_fail(VM_EXIT_FAIL, "cannot parse the journal of '%s'", virDomainGetName(dom));
      return 0;
    }
    if (vm_virt_error_code() != VIR_ERR_NO_DOMAIN_METADATA)
      return vm_fail_virt("cannot read the journal of '%s'", virDomainGetName(dom));
    virResetLastError();
  }
  return vm_meta_read(dom, VM_JOURNAL_NS, rec);
}

int vm_journal_clear(virDomainPtr dom)
{
  return vm_meta_write(dom, VM_JOURNAL_NS, VM_JOURNAL_PREFIX, NULL);
}

char *vm_journal_attr(xmlDocPtr rec, const char *name)
{
  return vm_xml_prop(xmlDocGetRootElement(rec), name);
}

static void entries(xmlDocPtr rec, const char *elem, const char *attr, const char *role, struct vm_strv *out)
{
  for (xmlNodePtr c = xmlDocGetRootElement(rec)->children; c; c = c->next) {
    if (c->type != XML_ELEMENT_NODE || xmlStrcmp(c->name, BAD_CAST elem) != 0) continue;
    CLEANUP_FREE char *r = vm_xml_prop(c, "role");
    CLEANUP_FREE char *p = vm_xml_prop(c, attr);
    if (p && r && strcmp(r, role) == 0) vm_strv_add(out, p);
  }
}

void vm_journal_volumes(xmlDocPtr rec, const char *role, struct vm_strv *out)
{
  entries(rec, "volume", "path", role, out);
}

/* A record written from another machine: this machine's lock does not prove its
 * writer is gone. */
static int check_writer(xmlDocPtr rec, const char *vm)
{
  CLEANUP_FREE char *h = vm_journal_attr(rec, "host");
  CLEANUP_FREE char *machine = vm_journal_attr(rec, "machine");
  CLEANUP_FREE char *op = vm_journal_attr(rec, "op");
  CLEANUP_FREE char *tool = vm_journal_attr(rec, "tool");
  CLEANUP_FREE char *pid = vm_journal_attr(rec, "pid");
  if (machine && strcmp(machine, vm_machine_id()) != 0)
    return vm_fail(VM_EXIT_STATE, "VM '%s' has an unfinished %s by %s (pid %s) run from %s: finish it from there "
                   "(vmkit's locks cover the runs of one machine)", vm, op ? op : "?", tool ? tool : "?",
                   pid ? pid : "?", h);
  return 0;
}

static int remove_volumes(virConnectPtr conn, xmlDocPtr rec, const char *role)
{
  struct vm_strv vols = { 0 };
  vm_journal_volumes(rec, role, &vols);
  int rc = 0;
  for (size_t i = vols.n; i-- > 0;) {
    int r = vm_path_delete(conn, vols.v[i]);
    if (r && !rc) rc = r;
  }
  vm_strv_free(&vols);
  return rc;
}

/* The disk keys the record names with role: off the host, and their key files
 * gone (made by the run, or meant to go with the VM). */
static int remove_secrets(virConnectPtr conn, xmlDocPtr rec, const char *role)
{
  struct vm_strv uuids = { 0 };
  entries(rec, "secret", "uuid", role, &uuids);
  int rc = 0;
  for (size_t i = 0; i < uuids.n; i++) {
    int r = vm_secret_remove(conn, uuids.v[i], true);
    if (r && !rc) rc = r;
  }
  vm_strv_free(&uuids);
  return rc;
}

int vm_journal_recover(virConnectPtr conn, virDomainPtr *dom, char **other)
{
  if (other) *other = NULL;
  const char *vm = virDomainGetName(*dom);
  CLEANUP_XMLDOC xmlDocPtr rec = NULL;
  int rc = vm_journal_read(*dom, &rec);
  if (rc || !rec) return rc;
  if ((rc = check_writer(rec, vm))) return rc;
  CLEANUP_FREE char *op = vm_journal_attr(rec, "op");
  CLEANUP_FREE char *tool = vm_journal_attr(rec, "tool");
  CLEANUP_FREE char *pid = vm_journal_attr(rec, "pid");
  if (!op) return vm_fail(VM_EXIT_FAIL, "VM '%s' has a journal record without an operation", vm);

  bool create = strcmp(op, "create") == 0, undefine = strcmp(op, "undefine") == 0;
  if (!create && !undefine) {
    if (other) *other = vm_strdup(op);
    return 0;
  }
  /* A create is rolled back: its volumes, then the domain it defined. An undefine
   * is finished: the volumes it meant to remove, then the domain. */
  CLEANUP_FREE char *why = vm_strdup_printf("to finish its interrupted %s", op);
  if ((rc = vm_force_off(*dom, why))) return rc;
  if ((rc = remove_volumes(conn, rec, create ? "new" : "remove"))) return rc;
  if ((rc = remove_secrets(conn, rec, create ? "new" : "remove"))) return rc;
  unsigned flags = VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA |
                   VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA | VIR_DOMAIN_UNDEFINE_NVRAM;
  if (virDomainIsPersistent(*dom) == 1 && virDomainUndefineFlags(*dom, flags) < 0)
    return vm_fail_virt("cannot undefine '%s' to finish its interrupted %s", vm, op);
  vm_info("%s the %s of VM '%s' that %s (pid %s) did not finish", create ? "rolled back" : "finished", op, vm,
          tool ? tool : "?", pid ? pid : "?");
  virDomainFree(*dom);
  *dom = NULL;
  return VM_EXIT_NOTFOUND;
}

const char *vm_journal_op_tool(const char *op) { return op && strcmp(op, "backup") == 0 ? "vmbackup" : "vmsnap"; }
