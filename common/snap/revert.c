/* Reverting to a snapshot (vm_snap_revert). Internal ones through libvirt.
 * External ones through libvirt where it can (9.9 and later); before that, here: a fresh overlay
 * on each image the snapshot froze, the domain defined again from the snapshot's
 * copy of it, the memory restored when the snapshot saved it, and the snapshot
 * marked current. The state the VM had before is discarded, as with any revert.
 * The new overlays and the ones to discard are written into the VM's journal
 * first: the definition naming the new ones is the point of no return, and the
 * next vmsnap run rolls a killed revert back before it, or finishes it after. */
#include <string.h>
#include <unistd.h>

#include "snap.h"
#include "chain.h"

/* The snapshot's copy of the domain (persistent one when it kept both), as a
 * document of its own. */
static xmlDocPtr snapshot_domain(const struct snap *s, bool live)
{
  CLEANUP_XMLDOC xmlDocPtr doc = vm_xml_parse(s->xml);
  if (!doc) return NULL;
  CLEANUP_XPATHCTX xmlXPathContextPtr x = vm_xpath_ctx(doc);
  CLEANUP_XPATHOBJ xmlXPathObjectPtr o =
    vm_xpath_nodes(x, live ? "/domainsnapshot/domain" : "/domainsnapshot/inactiveDomain");
  if ((!o || !o->nodesetval || o->nodesetval->nodeNr == 0) && !live) {
    xmlXPathFreeObject(o);
    o = vm_xpath_nodes(x, "/domainsnapshot/domain");
  }
  if (!o || !o->nodesetval || o->nodesetval->nodeNr == 0) return NULL;
  xmlDocPtr out = xmlNewDoc(BAD_CAST "1.0");
  xmlNodePtr root = xmlDocCopyNode(o->nodesetval->nodeTab[0], out, 1);
  xmlNodeSetName(root, BAD_CAST "domain");
  xmlUnsetProp(root, BAD_CAST "id");
  xmlDocSetRootElement(out, root);
  return out;
}

/* Is this file the frozen image of some snapshot? Then a revert must keep it. */
static bool is_snapshot_base(const struct snaps *s, const char *file)
{
  for (size_t i = 0; i < s->n; i++)
    for (size_t j = 0; j < s->v[i].ndisks; j++) {
      const char *b = s->v[i].disks[j].base;
      if (b && strcmp(b, file) == 0) return true;
    }
  return false;
}

/* Removes what a revert discards: each file only when no VM stands on it now. */
void revert_discard(virConnectPtr conn, xmlDocPtr rec)
{
  struct vm_strv old = { 0 };
  vm_journal_volumes(rec, "old", &old);
  for (size_t i = 0; i < old.n; i++) {
    struct vm_strv users = { 0 };
    if (vm_image_users(conn, old.v[i], NULL, &users) == 0 && users.n == 0 && vm_path_delete(conn, old.v[i]) == 0)
      vm_debug("removed the discarded overlay '%s'", old.v[i]);
    vm_strv_free(&users);
  }
  vm_strv_free(&old);
}

/* Like libvirt's own revert: the state the snapshot had, unless told. */
static bool restore_paused(const struct snap *s, const struct vm_snap_revert_opts *o)
{
  return o->paused || (!o->running && strcmp(s->state, "paused") == 0);
}

/* The running definition a memory snapshot is restored with: the snapshot's, on
 * the new overlays, with the records of now (the journal is the persistent
 * definition's). */
static char *restore_xml(xmlDocPtr live, char *const *retarget, xmlDocPtr records)
{
  fix_disks(live, retarget);
  vm_doc_set_meta(live, SNAP_META_NS, SNAP_META_PREFIX, records);
  return vm_xml_dump(live);
}

static int revert_external(virConnectPtr conn, virDomainPtr dom, struct snaps *snaps, struct snap *s,
                           const struct vm_snap_revert_opts *o)
{
  const char *vm = virDomainGetName(dom);
  bool with_memory = strcmp(s->memory, "external") == 0;
  /* Check everything the revert needs before anything is touched. */
  for (size_t i = 0; i < s->ndisks; i++) {
    const struct snap_disk *d = &s->disks[i];
    if (strcmp(d->mode, "internal") == 0)
      return vm_fail(VM_EXIT_STATE, "snapshot '%s' of '%s' mixes internal and external disks", s->name, vm);
    if (strcmp(d->mode, "external") == 0 && (!d->base || !vm_path_exists(conn, d->base)))
      return vm_fail(VM_EXIT_NOTFOUND, "cannot revert '%s' to '%s': its image '%s' of %s is missing (see vmsnap verify)",
                     vm, s->name, d->base ? d->base : "?", d->target);
  }
  if (with_memory && (!s->memfile || !vm_path_exists(conn, s->memfile)))
    return vm_fail(VM_EXIT_NOTFOUND, "cannot revert '%s' to '%s': its memory file '%s' is missing", vm, s->name,
                   s->memfile ? s->memfile : "?");
  CLEANUP_XMLDOC xmlDocPtr persistent = snapshot_domain(s, false);
  CLEANUP_XMLDOC xmlDocPtr live = snapshot_domain(s, true);
  if (!persistent || !live)
    return vm_fail(VM_EXIT_FAIL, "snapshot '%s' of '%s' holds no copy of the domain", s->name, vm);

  /* What the disks stand on now: discarded after the revert, when the VM made it
   * (named for it), no snapshot froze it, and nothing else stands on it then. */
  CLEANUP_XMLDOC xmlDocPtr now = vm_domain_doc(dom, virDomainIsPersistent(dom) == 1 ? VIR_DOMAIN_XML_INACTIVE : 0);
  if (!now) return VM_EXIT_FAIL;
  struct vm_disk *old = NULL;
  size_t nold = 0;
  vm_domain_disks(now, &old, &nold);

  /* The plan: a fresh overlay per disk the snapshot froze, named for the first
   * free label. */
  CLEANUP_XMLDOC xmlDocPtr rec = vm_journal_new("snapshot-revert");
  vm_xml_set(vm_xml_child(xmlDocGetRootElement(rec), "snapshot", NULL), "name", s->name);
  struct vm_strv retarget = { 0 }, fresh = { 0 }, bases = { 0 };
  int rc = 0;
  for (size_t i = 0; i < s->ndisks && rc == 0; i++) {
    const struct snap_disk *d = &s->disks[i];
    if (strcmp(d->mode, "external") != 0) continue;
    char *path = NULL;
    for (int n = 1; n < 1000 && !path && rc == 0; n++) {
      CLEANUP_FREE char *label = vm_strdup_printf("%s-r%d", s->name, n);
      if ((rc = overlay_path(conn, vm, d->target, d->base, label, &path))) break;
      if (vm_path_exists(conn, path) || vm_strv_contains(fresh.v, path)) {
        free(path);
        path = NULL;
      }
    }
    if (rc) break;
    if (!path) {
      rc = vm_fail(VM_EXIT_FAIL, "no free name for a new overlay of %s", d->target);
      break;
    }
    vm_strv_add(&retarget, d->target);
    vm_strv_add(&retarget, path);
    vm_strv_add(&retarget, "qcow2");
    vm_strv_add(&fresh, path);
    vm_strv_add(&bases, d->base);
    vm_strv_add(&bases, d->base_format ? d->base_format : "qcow2");
    vm_journal_add_volume(rec, path, "new");
    free(path);
  }
  for (size_t i = 0; i < nold && rc == 0; i++) {
    if (!old[i].source || !old[i].device || strcmp(old[i].device, "disk") != 0 || !old[i].target) continue;
    /* Only the disks the revert gives new overlays: a disk added after the
     * snapshot is not in its copy of the domain, and its data is not garbage. */
    bool reverted = false;
    for (size_t r = 0; r + 2 < retarget.n; r += 3) reverted |= strcmp(retarget.v[r], old[i].target) == 0;
    if (!reverted || is_snapshot_base(snaps, old[i].source) || !vm_image_named_for(old[i].source, vm) ||
        vm_image_is_template(conn, old[i].source))
      continue;
    vm_journal_add_volume(rec, old[i].source, "old");
  }
  vm_disks_free(old, nold);

  /* A memory snapshot's restore comes after the point of no return: the record says
   * how (the file, the state, the definition), so that the next run can do it if
   * this one is killed before. */
  CLEANUP_XMLDOC xmlDocPtr records = snaps_records_doc(snaps, NULL);
  CLEANUP_FREE char *dxml = with_memory ? restore_xml(live, retarget.v, records) : NULL;
  if (with_memory) {
    xmlNodePtr r = vm_xml_child(xmlDocGetRootElement(rec), "restore", dxml);
    vm_xml_set(r, "file", s->memfile);
    vm_xml_set(r, "paused", restore_paused(s, o) ? "yes" : "no");
  }
  vm_catch_signals();
  struct vm_undo undo = { 0 };
  if (rc == 0) rc = vm_journal_write(dom, rec);
  for (size_t i = 0; i < fresh.n && rc == 0; i++) {
    rc = vm_overlay_create(conn, fresh.v[i], bases.v[2 * i], bases.v[2 * i + 1]);
    if (rc == 0) vm_undo_volume(&undo, conn, fresh.v[i]);
  }
  if (rc == 0 && vm_interrupted()) rc = vm_fail_interrupted();

  /* From here the VM's current state is given up. The definition comes with the
   * journal and vmsnap's records of now, not of the snapshot's time. */
  if (rc == 0 && virDomainIsActive(dom) == 1 && virDomainDestroy(dom) < 0)
    rc = vm_fail_virt("cannot stop '%s' for the revert", vm);
  if (rc == 0) {
    fix_disks(persistent, retarget.v);
    vm_doc_set_meta(persistent, VM_JOURNAL_NS, VM_JOURNAL_PREFIX, rec);
    vm_doc_set_meta(persistent, SNAP_META_NS, SNAP_META_PREFIX, records);
    CLEANUP_FREE char *xml = vm_xml_dump(persistent);
    virDomainPtr d = virDomainDefineXML(conn, xml);
    if (!d) rc = vm_fail_virt("cannot define '%s' from snapshot '%s'", vm, s->name);
    else virDomainFree(d);
  }
  if (rc) {
    vm_undo_run(&undo);
    if (vm_journal_clear(dom) != 0) vm_warn("the journal of '%s' is not cleared", vm);
    goto out;
  }
  vm_undo_forget(&undo);

  /* The snapshot is the current one again. */
  virDomainSnapshotPtr again = virDomainSnapshotCreateXML(
    dom, s->xml, VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE | VIR_DOMAIN_SNAPSHOT_CREATE_CURRENT);
  if (!again) vm_warn("cannot mark '%s' current: %s", s->name, vm_virt_message());
  else virDomainSnapshotFree(again);

  if (with_memory) {
    bool paused = restore_paused(s, o);
    if (virDomainRestoreFlags(conn, s->memfile, dxml, paused ? VIR_DOMAIN_SAVE_PAUSED : VIR_DOMAIN_SAVE_RUNNING) < 0)
      rc = vm_fail_virt("cannot restore the memory of '%s' from '%s'", vm, s->memfile);
  } else if (o->running || o->paused) {
    if (virDomainCreateWithFlags(dom, o->paused ? VIR_DOMAIN_START_PAUSED : 0) < 0)
      rc = vm_fail_virt("cannot start '%s' after the revert", vm);
  }

  /* The overlays the VM ran on before are garbage now. */
  revert_discard(conn, rec);
  vm_storage_changed();
  if (vm_journal_clear(dom) != 0 && rc == 0) rc = VM_EXIT_FAIL;
out:
  vm_strv_free(&retarget);
  vm_strv_free(&fresh);
  vm_strv_free(&bases);
  return rc;
}

int vm_snap_revert(virConnectPtr conn, virDomainPtr *domp, const char *vm, const char *name,
                   const struct vm_snap_revert_opts *o)
{
  virDomainPtr dom = *domp;
  int rc;
  struct snaps snaps;
  if ((rc = snaps_load(dom, &snaps))) return rc;
  struct snap *s;
  if ((rc = snap_lookup(&snaps, vm, name, &s)) || (rc = vm_domain_idle(dom, "revert"))) goto out;

  if (!s->external || libvirt_handles_external(conn)) {
    unsigned flags = (o->running ? VIR_DOMAIN_SNAPSHOT_REVERT_RUNNING : o->paused ? VIR_DOMAIN_SNAPSHOT_REVERT_PAUSED : 0) |
                     (o->force ? VIR_DOMAIN_SNAPSHOT_REVERT_FORCE : 0);
    if (virDomainRevertToSnapshot(s->ptr, flags) < 0) {
      rc = vm_fail_virt("cannot revert '%s' to '%s'", vm, s->name);
      goto out;
    }
    /* The definition came back as the snapshot had it, with whatever record its
     * journal held then (vmsnap create's own, for an external one): stale now. */
    if (vm_journal_clear(dom) != 0) vm_warn("the journal of '%s' may hold a stale record", vm);
  } else if ((rc = revert_external(conn, dom, &snaps, s, o))) {
    goto out;
  }
  /* The definition came back from the snapshot with the records it had then. */
  if (snaps_save_records(dom, &snaps, NULL) != 0) vm_warn("the snapshot records of '%s' may be stale", vm);
  vm_info("reverted '%s' to snapshot '%s' (now %s)", vm, s->name, vm_state_name(vm_domain_state(dom)));
out:
  snaps_free(&snaps);
  return rc;
}
