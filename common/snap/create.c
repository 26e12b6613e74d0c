/* Taking a snapshot (vm_snap_create): an external disk-only snapshot of a running
 * VM (crash-consistent, or quiesced through the guest agent), a snapshot with
 * memory (internal, or external with a memory file), or an offline snapshot of a
 * shut-off VM. All disks at once (libvirt's atomic flag). The kind, how long the
 * guest's vCPUs were paused and how long its filesystems were frozen are recorded
 * with the snapshot.
 *
 * libvirt freezes and thaws the guest's filesystems itself, inside the snapshot
 * call (its quiesce flag), so that no way of killing the caller can leave a guest
 * frozen. The files an external snapshot is about to make are written into the
 * VM's journal first, so that the next vmsnap run removes them if a killed run
 * left them without a snapshot. */
#include <libvirt/libvirt-qemu.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "snap.h"

static bool snapshot_disk(const struct vm_disk *d)
{
  return d->device && strcmp(d->device, "disk") == 0 && !d->readonly && d->source && d->type &&
         strcmp(d->type, "file") == 0;
}

bool vm_snap_exists(virDomainPtr dom, const char *name)
{
  virDomainSnapshotPtr p = virDomainSnapshotLookupByName(dom, name, 0);
  if (!p) {
    virResetLastError();
    return false;
  }
  virDomainSnapshotFree(p);
  return true;
}

void vm_snap_created_info(const char *vm, const char *name, const struct vm_snap_created *c)
{
  char freeze[48] = "", pause[48] = "pause not measured";
  if (c->frozen) snprintf(freeze, sizeof freeze, ", frozen %ld ms", c->frozen_ms);
  if (c->paused_ms >= 0) snprintf(pause, sizeof pause, "paused %ld ms", c->paused_ms);
  if (c->live)
    vm_info("created %s snapshot '%s' of '%s' (%s; %s%s, %lld ms in all)", c->kind, name, vm,
            c->internal ? "internal" : "external", pause, freeze, c->wall_ms);
  else
    vm_info("created offline snapshot '%s' of '%s' (%s)", name, vm, c->internal ? "internal" : "external");
}

int vm_snap_create_result(virConnectPtr conn, virDomainPtr dom, const char *vm, const char *name,
                          const struct vm_snap_create_opts *o, struct vm_snap_created *out)
{
  struct snaps snaps;
  int rc;
  if ((rc = snaps_load(dom, &snaps))) return rc;
  struct vm_disk *disks = NULL;
  size_t nd = 0;
  struct vm_strv made = { 0 };
  CLEANUP_XMLDOC xmlDocPtr snapdoc = NULL, domdoc = NULL, rec = NULL;
  CLEANUP_FREE char *snapxml = NULL;
  virDomainSnapshotPtr created = NULL;

  if (snaps_find(&snaps, name)) {
    rc = vm_fail(VM_EXIT_STATE, "VM '%s' already has a snapshot '%s'", vm, name);
    goto out;
  }
  if ((rc = vm_domain_idle(dom, "snapshot"))) goto out;
  int state = vm_domain_state(dom);
  bool live = state == VIR_DOMAIN_RUNNING || state == VIR_DOMAIN_PAUSED;
  if (!live && state != VIR_DOMAIN_SHUTOFF) {
    rc = vm_fail(VM_EXIT_STATE, "VM '%s' is %s", vm, vm_state_name(state));
    goto out;
  }
  if (!live && (o->memory || o->quiesce == VM_SNAP_QUIESCE_YES)) {
    rc = vm_fail(VM_EXIT_STATE, "VM '%s' is shut off: %s needs a running VM", vm,
                 o->memory ? "a memory snapshot" : "--quiesce");
    goto out;
  }

  /* One family per VM: libvirt 9.0 cannot mix internal and external snapshots
   * in one chain and still revert or delete both. */
  bool has_internal = false, has_external = false;
  for (size_t i = 0; i < snaps.n; i++) {
    if (snaps.v[i].external) has_external = true;
    else has_internal = true;
  }
  bool internal = live ? (o->memory && !o->external && !has_external) : (has_internal && !o->disk_only);
  if (!internal && has_internal) {
    rc = vm_fail(VM_EXIT_STATE, "VM '%s' has internal snapshots: take another with --memory%s, or delete them first",
                 vm, live ? "" : " while it runs");
    goto out;
  }

  domdoc = vm_domain_doc(dom, live ? 0 : VIR_DOMAIN_XML_INACTIVE);
  if (!domdoc) { rc = VM_EXIT_FAIL; goto out; }
  vm_domain_disks(domdoc, &disks, &nd);
  /* Encrypted disks: an external snapshot's overlays, made by libvirt, would take
   * the guest's new writes in clear; and QEMU 7.2 aborts on an internal snapshot
   * of an encrypted qcow2 (an assertion in qcow2_co_encdec, seen here). */
  if (vm_domain_encrypted(domdoc)) {
    rc = vm_fail(VM_EXIT_STATE, "VM '%s' has encrypted disks, which vmsnap does not snapshot yet", vm);
    goto out;
  }

  snapdoc = xmlNewDoc(BAD_CAST "1.0");
  xmlNodePtr root = xmlNewNode(NULL, BAD_CAST "domainsnapshot");
  xmlDocSetRootElement(snapdoc, root);
  vm_xml_child(root, "name", name);
  if (o->description) vm_xml_child(root, "description", o->description);
  unsigned flags = VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC;
  if (!internal) {
    /* An external memory snapshot is written while the guest runs (as a live
     * migration to a file) and the guest pauses only for the last part. */
    flags |= o->memory ? VIR_DOMAIN_SNAPSHOT_CREATE_LIVE : VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY;
    xmlNodePtr xd = vm_xml_child(root, "disks", NULL);
    for (size_t i = 0; i < nd; i++) {
      if (!disks[i].target) continue;
      xmlNodePtr e = vm_xml_child(xd, "disk", NULL);
      vm_xml_set(e, "name", disks[i].target);
      if (!snapshot_disk(&disks[i])) {
        vm_xml_set(e, "snapshot", "no");
        continue;
      }
      vm_xml_set(e, "snapshot", "external");
      CLEANUP_FREE char *ov = NULL;
      if ((rc = overlay_path(conn, vm, disks[i].target, disks[i].source, name, &ov))) goto out;
      if (vm_path_exists(conn, ov)) {
        rc = vm_fail(VM_EXIT_STATE, "cannot snapshot '%s': '%s' already exists", vm, ov);
        goto out;
      }
      vm_xml_set(vm_xml_child(e, "source", NULL), "file", ov);
      vm_xml_set(vm_xml_child(e, "driver", NULL), "type", "qcow2");
      vm_strv_add(&made, ov);
    }
    if (!made.n) {
      rc = vm_fail(VM_EXIT_STATE, "VM '%s' has no file-backed disk to snapshot: an external snapshot needs qcow2 "
                   "overlays, which block devices (LVM, iSCSI) cannot hold", vm);
      goto out;
    }
    if (o->memory) {
      CLEANUP_FREE char *dir = strdup(made.v[0]); /* beside the first overlay */
      *strrchr(dir, '/') = '\0';
      CLEANUP_FREE char *mem = vm_strdup_printf("%s/%s.%s.mem", dir, vm, name);
      if (vm_path_exists(conn, mem)) {
        rc = vm_fail(VM_EXIT_STATE, "cannot snapshot '%s': '%s' already exists", vm, mem);
        goto out;
      }
      xmlNodePtr m = vm_xml_child(root, "memory", NULL);
      vm_xml_set(m, "snapshot", "external");
      vm_xml_set(m, "file", mem);
      vm_strv_add(&made, mem);
    }
  }
  snapxml = vm_xml_dump(snapdoc);

  /* Quiesce: libvirt freezes, snapshots and thaws in one call. With =auto, only
   * when the agent answers. */
  vm_catch_signals();
  bool quiesce = false;
  if (live && !o->memory && o->quiesce != VM_SNAP_QUIESCE_NO) {
    if (state == VIR_DOMAIN_PAUSED) {
      if (o->quiesce == VM_SNAP_QUIESCE_YES) {
        rc = vm_fail(VM_EXIT_STATE, "cannot quiesce '%s': it is paused, so its agent cannot answer", vm);
        goto out;
      }
    } else {
      char *pong = virDomainQemuAgentCommand(dom, "{\"execute\":\"guest-ping\"}", 5, 0);
      if (pong) quiesce = true;
      else if (o->quiesce == VM_SNAP_QUIESCE_YES) {
        rc = vm_fail(VM_EXIT_STATE, "cannot quiesce '%s': %s", vm, vm_virt_message());
        goto out;
      } else {
        vm_debug("no guest agent answered: the snapshot is crash-consistent");
      }
      free(pong);
      virResetLastError();
    }
  }
  if (quiesce) flags |= VIR_DOMAIN_SNAPSHOT_CREATE_QUIESCE;
  if (made.n) {
    rec = vm_journal_new("snapshot-create");
    vm_xml_set(vm_xml_child(xmlDocGetRootElement(rec), "snapshot", NULL), "name", name);
    for (size_t i = 0; i < made.n; i++) vm_journal_add_volume(rec, made.v[i], "new");
    if ((rc = vm_journal_write(dom, rec))) goto out;
  }
  int64_t t0 = vm_now_ms();
  struct vm_pause_watch *watch = live ? vm_pause_watch_start(conn, dom) : NULL;
  created = virDomainSnapshotCreateXML(dom, snapxml, flags);
  int64_t wall = vm_now_ms() - t0;
  if (!created) rc = vm_fail_virt("cannot snapshot '%s'", vm);
  /* The freeze happened inside the call: its wall time bounds it. */
  long frozen_ms = quiesce && created ? (long)wall : -1;
  bool frozen = quiesce && created;
  long paused_ms = live ? vm_pause_watch_stop(watch, 1000) : -1;
  vm_storage_changed();
  if (rc) {
    /* libvirt's atomic flag undoes the snapshot and removes the files it made; what
     * is left of the files planned here (claimed under the VM's lock, so this
     * run's) goes too. */
    if (rec) snapshot_create_rollback(conn, dom, rec);
    goto out;
  }
  if (rec && vm_journal_clear(dom) != 0) vm_warn("the journal of '%s' is not cleared", vm);

  const char *kind = !live ? "offline" : o->memory ? "memory" : frozen ? "quiesced" : "crash-consistent";
  snaps_free(&snaps);
  if (snaps_load(dom, &snaps) == 0) {
    struct snap *p = snaps_find(&snaps, name);
    if (p) {
      free(p->kind);
      p->kind = strdup(kind);
      p->paused_ms = paused_ms;
      p->frozen_ms = frozen_ms;
    }
    if (snaps_save_records(dom, &snaps, NULL) != 0)
      vm_warn("snapshot '%s' was taken, but its kind is not recorded", name);
  }
  if (out)
    *out = (struct vm_snap_created){ .kind = kind, .live = live, .internal = internal, .frozen = frozen,
                                     .paused_ms = paused_ms, .frozen_ms = frozen_ms, .wall_ms = (long long)wall };
out:
  if (created) virDomainSnapshotFree(created);
  vm_strv_free(&made);
  vm_disks_free(disks, nd);
  snaps_free(&snaps);
  return rc;
}

int vm_snap_create(virConnectPtr conn, virDomainPtr dom, const char *vm, const char *name,
                   const struct vm_snap_create_opts *o)
{
  struct vm_snap_created c;
  int rc = vm_snap_create_result(conn, dom, vm, name, o, &c);
  if (rc == 0) vm_snap_created_info(vm, name, &c);
  return rc;
}
