/* vmbackup restore --in-place: a shut-off VM's disks replaced by a snapshot's.
 * Nothing of the VM is overwritten: each disk is built into a new volume beside
 * the old one (VM-TARGET.restored-SNAPSHOT-RANDOM.qcow2, uploaded through a sparse
 * libvirt stream, so the VM may be on another host), then the definition is
 * switched to the new volumes in one define, then the old volumes go (the VM's
 * own only: never a template or an image another VM stands on). The journal in
 * the VM's definition records the new and the old volumes first: the next
 * vmbackup run on the VM removes the new ones of a killed restore that had not
 * switched, or the old ones of one that had. */
#include <string.h>

#include <openssl/rand.h>

#include "vmbackup.h"

/* Removes a replaced volume when it is the VM's own file and nothing else uses it. */
static void remove_old(virConnectPtr conn, const char *path, const char *vm)
{
  struct vm_strv users = { 0 };
  if (!vm_image_named_for(path, vm) || vm_image_is_template(conn, path) ||
      vm_image_users(conn, path, vm, &users) != 0 || users.n) {
    vm_info("kept '%s' (not the VM's own file, or in use): remove it by hand when it is not needed", path);
  } else if (vm_path_delete(conn, path)) {
    vm_warn("cannot remove the replaced disk '%s'", path);
  }
  vm_strv_free(&users);
}

/* Whether the VM's definition uses path now: never removed, whatever a record says. */
static bool in_use(virDomainPtr dom, const char *path)
{
  CLEANUP_XMLDOC xmlDocPtr doc = vm_domain_doc(dom, VIR_DOMAIN_XML_INACTIVE);
  struct vm_disk *disks;
  size_t n;
  if (!doc || vm_domain_disks(doc, &disks, &n)) return true;
  bool used = false;
  for (size_t i = 0; i < n; i++) used |= disks[i].source && !strcmp(disks[i].source, path);
  vm_disks_free(disks, n);
  return used;
}

int vb_inplace_recover(virConnectPtr conn, virDomainPtr dom, const char *vm)
{
  xmlDocPtr rec;
  int rc = vm_journal_read(dom, &rec);
  if (rc || !rec) return rc;
  CLEANUP_FREE char *phase = vm_journal_attr(rec, "phase");
  bool switched = phase && !strcmp(phase, "switched");
  vm_info("VM '%s': %s what a killed in-place restore left", vm, switched ? "finishing" : "rolling back");
  struct vm_strv paths = { 0 };
  vm_journal_volumes(rec, switched ? "old" : "new", &paths);
  for (size_t i = 0; i < paths.n; i++) {
    if (in_use(dom, paths.v[i])) continue;
    if (switched) remove_old(conn, paths.v[i], vm);
    else if (vm_path_delete(conn, paths.v[i])) vm_warn("cannot remove '%s'", paths.v[i]);
  }
  vm_strv_free(&paths);
  xmlFreeDoc(rec);
  return vm_journal_clear(dom);
}

/* The VM's checkpoints go with the images that held their bitmaps: the next
 * backup is full (deduplicated), and says so. */
static void drop_checkpoints(virDomainPtr dom)
{
  virDomainCheckpointPtr *cps = NULL;
  int n = virDomainListAllCheckpoints(dom, &cps, 0);
  for (int i = 0; i < n; i++) {
    virDomainCheckpointDelete(cps[i], VIR_DOMAIN_CHECKPOINT_DELETE_METADATA_ONLY);
    virDomainCheckpointFree(cps[i]);
  }
  free(cps);
  virResetLastError();
}

int vb_restore_in_place(struct vb_repo *r, const struct vb_manifest *m)
{
  CLEANUP_VIRCONN virConnectPtr conn = vm_connect();
  if (!conn) return VM_EXIT_FAIL;
  CLEANUP_VIRDOMAIN virDomainPtr dom = virDomainLookupByUUIDString(conn, m->uuid);
  virResetLastError();
  if (!dom)
    return vm_fail(VM_EXIT_NOTFOUND, "VM '%s' (UUID %s) of snapshot %.12s is not on %s: restore it with --as", m->vm,
                   m->uuid, m->snapshot, vm_conn_host_name(conn));
  CLEANUP_FREE char *other = NULL;
  int rc = vm_lock_and_recover(conn, &dom, m->vm, &other);
  if (rc) return rc;
  if (other && !strcmp(other, "restore")) rc = vb_inplace_recover(conn, dom, m->vm);
  else if (other && !strcmp(other, "backup")) rc = vb_backup_recover(conn, dom, m->vm);
  else if (other) rc = vm_fail(VM_EXIT_STATE, "VM '%s' has an unfinished '%s': run %s first", m->vm, other,
                               vm_journal_op_tool(other));
  if (rc) return rc;
  int state = vm_domain_state(dom);
  if (state != VIR_DOMAIN_SHUTOFF)
    return vm_fail(VM_EXIT_STATE, "VM '%s' is %s: an in-place restore needs it shut off", m->vm, vm_state_name(state));
  if (virDomainHasManagedSaveImage(dom, 0) == 1)
    return vm_fail(VM_EXIT_STATE, "VM '%s' has a saved memory state that would not match its restored disks: remove "
                                  "it first", m->vm);
  CLEANUP_XMLDOC xmlDocPtr doc = vm_domain_doc(dom, VIR_DOMAIN_XML_INACTIVE | VIR_DOMAIN_XML_SECURE);
  if (!doc) return VM_EXIT_FAIL;
  struct vm_disk *disks;
  size_t nd;
  if ((rc = vm_domain_disks(doc, &disks, &nd))) return rc;
  /* Every disk of the snapshot must be a file disk of the VM now. */
  struct vm_strv olds = { 0 }, news = { 0 };
  for (size_t i = 0; i < m->ndisks && !rc; i++) {
    const struct vm_disk *cur = NULL;
    for (size_t k = 0; k < nd; k++)
      if (disks[k].target && !strcmp(disks[k].target, m->disks[i].target)) cur = &disks[k];
    if (!cur || !cur->source || (cur->type && strcmp(cur->type, "file")))
      rc = vm_fail(VM_EXIT_STATE, "VM '%s' has no file disk %s as its snapshot has: restore it with --as", m->vm,
                   m->disks[i].target);
    else {
      vm_strv_add(&olds, cur->source);
      CLEANUP_FREE char *dir = vm_strdup(cur->source);
      *strrchr(dir, '/') = 0;
      /* A name of its own (a VM restored twice from one snapshot has that name already). */
      unsigned char rnd[3];
      RAND_bytes(rnd, sizeof rnd);
      vm_strv_addf(&news, "%s/%s-%s.restored-%.12s-%02x%02x%02x.qcow2", dir, m->vm, m->disks[i].target, m->snapshot,
                   rnd[0], rnd[1], rnd[2]);
    }
  }
  vm_disks_free(disks, nd);
  /* The journal first: a kill from here on is rolled back or finished. */
  xmlDocPtr rec = rc ? NULL : vm_journal_new("restore");
  for (size_t i = 0; rec && i < olds.n; i++) {
    vm_journal_add_volume(rec, news.v[i], "new");
    vm_journal_add_volume(rec, olds.v[i], "old");
  }
  if (rec) vm_xml_set(xmlDocGetRootElement(rec), "snapshot", m->snapshot);
  if (rec && vm_journal_write(dom, rec)) rc = VM_EXIT_FAIL;
  bool *made = calloc(m->ndisks + 1, sizeof *made);
  if (!made) abort();
  CLEANUP_FREE char *scratch = rc ? NULL : vm_scratch_dir("inplace");
  if (!rc && !scratch) rc = VM_EXIT_FAIL;
  for (size_t i = 0; i < m->ndisks && !rc; i++) {
    const struct vb_mdisk *d = &m->disks[i];
    CLEANUP_VIRPOOL virStoragePoolPtr pool = NULL;
    if (vm_pool_of_path(conn, olds.v[i], &pool)) {
      rc = vm_fail(VM_EXIT_STATE, "disk %s of '%s' ('%s') is in no storage pool of %s", d->target, m->vm, olds.v[i],
                   vm_conn_host_name(conn));
      break;
    }
    CLEANUP_FREE char *label = vm_strdup_printf("%s %s", m->vm, d->target);
    CLEANUP_FREE char *copy = vm_strdup(news.v[i]);
    CLEANUP_FREE char *path = NULL;
    rc = vb_disk_to_volume(r, m, d, scratch, pool, strrchr(copy, '/') + 1, label, &path);
    made[i] = path != NULL;
  }
  if (scratch) vm_remove_tree(scratch);
  if (!rc && vm_interrupted()) rc = vm_fail_interrupted();
  if (rc) {
    /* Not switched: the volumes this run made go, the VM is as it was. */
    for (size_t i = 0; i < news.n; i++)
      if (made[i]) vm_path_delete(conn, news.v[i]);
    if (rec) vm_journal_clear(dom);
  } else {
    /* The switch: one define names the new volumes and records it. */
    CLEANUP_XMLDOC xmlDocPtr nd2 = vm_domain_doc(dom, VIR_DOMAIN_XML_INACTIVE | VIR_DOMAIN_XML_SECURE);
    CLEANUP_XPATHCTX xmlXPathContextPtr x = nd2 ? vm_xpath_ctx(nd2) : NULL;
    for (size_t i = 0; x && i < m->ndisks; i++) {
      CLEANUP_FREE char *lit = vm_xpath_literal(m->disks[i].target);
      CLEANUP_FREE char *expr = vm_strdup_printf("/domain/devices/disk[target/@dev=%s]", lit);
      CLEANUP_XPATHOBJ xmlXPathObjectPtr o = vm_xpath_nodes(x, expr);
      if (!o || !o->nodesetval || o->nodesetval->nodeNr != 1) continue;
      xmlNodePtr disk = o->nodesetval->nodeTab[0];
      vm_xml_set(vm_xml_find(disk, "source"), "file", news.v[i]);
      xmlNodePtr drv = vm_xml_find(disk, "driver");
      if (drv) vm_xml_set(drv, "type", "qcow2");
      xmlNodePtr bs = vm_xml_find(disk, "backingStore");
      if (bs) {
        xmlUnlinkNode(bs);
        xmlFreeNode(bs);
      }
    }
    vm_xml_set(xmlDocGetRootElement(rec), "phase", "switched");
    if (nd2) vm_doc_set_meta(nd2, VM_JOURNAL_NS, VM_JOURNAL_PREFIX, rec);
    CLEANUP_FREE char *xml = nd2 ? vm_xml_dump(nd2) : NULL;
    virDomainPtr d2 = xml ? virDomainDefineXML(conn, xml) : NULL;
    if (!d2) {
      rc = vm_fail_virt("cannot switch '%s' to its restored disks", m->vm);
      for (size_t i = 0; i < news.n; i++)
        if (made[i]) vm_path_delete(conn, news.v[i]);
      vm_journal_clear(dom);
    } else {
      virDomainFree(d2);
      for (size_t i = 0; i < olds.n; i++) remove_old(conn, olds.v[i], m->vm);
      drop_checkpoints(dom);
      vm_journal_clear(dom);
      vm_storage_changed();
      vm_info("restored snapshot %.12s into VM '%s' in place (its old disks replaced)", m->snapshot, m->vm);
    }
  }
  if (rec) xmlFreeDoc(rec);
  free(made);
  vm_strv_free(&olds);
  vm_strv_free(&news);
  return rc;
}
