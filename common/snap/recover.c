/* Finishing or rolling back what a killed vmsnap run started, from the record it
 * wrote into the VM's journal before it acted. Every vmsnap verb that changes a VM
 * does this first, holding the VM's lock (so the run that wrote the record, if it
 * ran from this machine, is gone):
 *  - snapshot-create: if libvirt has the snapshot (the daemon finishes a call whose
 *    client died), it stays; else the files the record names, when nothing uses
 *    them, go.
 *  - snapshot-revert: if the definition stands on the new overlays, the revert is
 *    finished (the old overlays go, the snapshot is current); else it is rolled
 *    back (the new overlays go).
 *  - snapshot-delete: finished (delete_execute): a merge that began cannot be undone.
 * The records vmkit's shared code knows (create, undefine) are dealt with by it. */
#include <string.h>

#include "snap.h"

int wait_domain_jobs(virDomainPtr dom, int seconds)
{
  int64_t until = vm_now_ms() + (int64_t)seconds * 1000;
  for (;;) {
    virDomainJobInfo info;
    if (virDomainGetJobInfo(dom, &info) < 0 || info.type == VIR_DOMAIN_JOB_NONE) {
      virResetLastError();
      return 0;
    }
    if (vm_now_ms() > until)
      return vm_fail(VM_EXIT_STATE, "VM '%s' is busy: a job of libvirt's still runs on it", virDomainGetName(dom));
    if (vm_interrupted()) return vm_fail_interrupted();
    vm_sleep_ms(100);
  }
}

char *journal_snapshot(xmlDocPtr rec)
{
  for (xmlNodePtr c = xmlDocGetRootElement(rec)->children; c; c = c->next)
    if (c->type == XML_ELEMENT_NODE && xmlStrcmp(c->name, BAD_CAST "snapshot") == 0) return vm_xml_prop(c, "name");
  return NULL;
}

/* Is path a disk (or in a disk's chain) of any domain, this one included? */
static bool in_use(virConnectPtr conn, const char *path)
{
  struct vm_strv users = { 0 };
  bool used = vm_image_users(conn, path, NULL, &users) != 0 || users.n > 0;
  vm_strv_free(&users);
  return used;
}

void snapshot_create_rollback(virConnectPtr conn, virDomainPtr dom, xmlDocPtr rec)
{
  struct vm_strv files = { 0 };
  vm_journal_volumes(rec, "new", &files);
  vm_storage_changed();
  for (size_t i = 0; i < files.n; i++) {
    if (!vm_path_exists(conn, files.v[i]) || in_use(conn, files.v[i])) continue;
    if (vm_path_delete(conn, files.v[i]) != 0) vm_warn("cannot remove '%s'", files.v[i]);
  }
  vm_strv_free(&files);
  if (vm_journal_clear(dom) != 0) vm_warn("the journal of '%s' is not cleared", virDomainGetName(dom));
}

static int recover_create(virConnectPtr conn, virDomainPtr dom, xmlDocPtr rec, const char *who)
{
  const char *vm = virDomainGetName(dom);
  int rc = wait_domain_jobs(dom, 300);
  if (rc) return rc;
  CLEANUP_FREE char *name = journal_snapshot(rec);
  virDomainSnapshotPtr snap = name ? virDomainSnapshotLookupByName(dom, name, 0) : NULL;
  if (snap) {
    virDomainSnapshotFree(snap);
    vm_info("snapshot '%s' of '%s', taken by %s, was completed by libvirt", name, vm, who);
    return vm_journal_clear(dom);
  }
  virResetLastError();
  snapshot_create_rollback(conn, dom, rec);
  vm_info("rolled back the snapshot '%s' of '%s' that %s did not finish", name ? name : "?", vm, who);
  return 0;
}

static int recover_revert(virConnectPtr conn, virDomainPtr dom, xmlDocPtr rec, const char *who)
{
  const char *vm = virDomainGetName(dom);
  CLEANUP_FREE char *name = journal_snapshot(rec);
  struct vm_strv fresh = { 0 };
  vm_journal_volumes(rec, "new", &fresh);
  /* The definition standing on a new overlay is the point of no return. */
  bool done = false;
  CLEANUP_XMLDOC xmlDocPtr def = vm_domain_doc(dom, virDomainIsPersistent(dom) == 1 ? VIR_DOMAIN_XML_INACTIVE : 0);
  if (!def) {
    vm_strv_free(&fresh);
    return VM_EXIT_FAIL;
  }
  struct vm_disk *d;
  size_t nd;
  vm_domain_disks(def, &d, &nd);
  for (size_t i = 0; i < nd; i++) done |= d[i].source && vm_strv_contains(fresh.v, d[i].source);
  vm_disks_free(d, nd);
  if (done) {
    virDomainSnapshotPtr snap = name ? virDomainSnapshotLookupByName(dom, name, 0) : NULL;
    CLEANUP_FREE char *xml = snap ? virDomainSnapshotGetXMLDesc(snap, VIR_DOMAIN_SNAPSHOT_XML_SECURE) : NULL;
    virDomainSnapshotPtr again = xml ? virDomainSnapshotCreateXML(dom, xml, VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE |
                                                                           VIR_DOMAIN_SNAPSHOT_CREATE_CURRENT) : NULL;
    if (again) virDomainSnapshotFree(again);
    if (snap) virDomainSnapshotFree(snap);
    virResetLastError();
    /* A memory snapshot's restore that the killed run did not get to: done now
     * (after any restore still running in the daemon). */
    CLEANUP_FREE char *memfile = NULL, *paused = NULL;
    CLEANUP_XMLFREE xmlChar *dxml = NULL;
    for (xmlNodePtr c = xmlDocGetRootElement(rec)->children; c; c = c->next)
      if (c->type == XML_ELEMENT_NODE && xmlStrcmp(c->name, BAD_CAST "restore") == 0) {
        memfile = vm_xml_prop(c, "file");
        paused = vm_xml_prop(c, "paused");
        dxml = xmlNodeGetContent(c);
      }
    int rc = 0;
    if (memfile && (rc = wait_domain_jobs(dom, 300)) == 0 && virDomainIsActive(dom) != 1) {
      unsigned flags = paused && strcmp(paused, "yes") == 0 ? VIR_DOMAIN_SAVE_PAUSED : VIR_DOMAIN_SAVE_RUNNING;
      if (!dxml || virDomainRestoreFlags(virDomainGetConnect(dom), memfile, (const char *)dxml, flags) < 0)
        rc = vm_fail_virt("cannot restore the memory of '%s' from '%s'", vm, memfile);
    }
    if (rc) {
      vm_strv_free(&fresh);
      return rc;
    }
    revert_discard(conn, rec);
    vm_info("finished the revert of '%s' to '%s' that %s did not finish (it is %s)", vm, name ? name : "?", who,
            vm_state_name(vm_domain_state(dom)));
  } else {
    for (size_t i = 0; i < fresh.n; i++)
      if (vm_path_exists(conn, fresh.v[i]) && !in_use(conn, fresh.v[i]) && vm_path_delete(conn, fresh.v[i]) != 0)
        vm_warn("cannot remove '%s'", fresh.v[i]);
    vm_info("rolled back the revert of '%s' to '%s' that %s did not finish", vm, name ? name : "?", who);
  }
  vm_strv_free(&fresh);
  vm_storage_changed();
  return vm_journal_clear(dom);
}

int vm_snap_lock(virConnectPtr conn, virDomainPtr *dom, const char *vm)
{
  CLEANUP_FREE char *other = NULL;
  int rc = vm_lock_and_recover(conn, dom, vm, &other);
  if (rc || !other) return rc;
  CLEANUP_XMLDOC xmlDocPtr rec = NULL;
  if ((rc = vm_journal_read(*dom, &rec)) || !rec) return rc;
  CLEANUP_FREE char *tool = vm_journal_attr(rec, "tool"), *pid = vm_journal_attr(rec, "pid");
  CLEANUP_FREE char *who = vm_strdup_printf("%s (pid %s)", tool ? tool : "?", pid ? pid : "?");
  vm_catch_signals();
  if (strcmp(other, "snapshot-create") == 0) return recover_create(conn, *dom, rec, who);
  if (strcmp(other, "snapshot-revert") == 0) return recover_revert(conn, *dom, rec, who);
  if (strcmp(other, "snapshot-delete") == 0) {
    CLEANUP_FREE char *name = journal_snapshot(rec);
    vm_info("finishing the delete of snapshot '%s' of '%s' that %s did not finish", name ? name : "?", vm, who);
    if ((rc = wait_domain_jobs(*dom, 300))) return rc;
    return delete_execute(conn, *dom, rec);
  }
  return vm_fail(VM_EXIT_STATE, "VM '%s' has an unfinished %s by %s that vmsnap does not know", vm, other, who);
}
