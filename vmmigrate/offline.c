/* An offline move of a shut-off VM: its disks copied through libvirt's streams
 * (only allocated data crosses; shared ones stay where they are), every copy
 * verified by a digest read through libvirt on both sides, then its definition
 * defined there, and only then the source's definition and copies removed. Until
 * the digests match, the source is the VM, and the destination has no definition
 * that anyone could start. */
#include <string.h>

#include "vmmigrate.h"

int move_offline(struct move *m, json_object *report)
{
  int64_t t0 = vm_now_ms();
  int rc = record_write(m, "offline-copy");
  if (rc) return rc;
  if ((rc = dest_volumes_create(m, true))) {
    if (dest_volumes_remove(m) == 0) record_remove(m);
    return rc;
  }
  uint64_t bytes = 0;
  bool copied = false;
  for (size_t i = 0; i < m->ndisks; i++)
    if (m->disks[i].how != D_SHARED) {
      bytes += m->disks[i].allocation;
      copied = true;
    }

  /* Verify before the copy is defined there: until then nobody on the
   * destination can start it. Each copied disk's digest on both hosts: the top
   * image, and the backing files copied with it. */
  for (size_t i = 0; i < m->ndisks && rc == 0; i++) {
    struct mdisk *d = &m->disks[i];
    if (d->how == D_SHARED) continue;
    for (size_t k = 0; k <= d->copy_chain.n && rc == 0; k++) {
      const char *sp = k == 0 ? d->src_path : d->copy_chain.v[k - 1];
      const char *dp = k == 0 ? d->dst_path : d->copy_chain.v[k - 1];
      char a[65], b[65];
      if ((rc = vol_digest(m->src.conn, sp, a)) || (rc = vol_digest(m->dst.conn, dp, b))) break;
      if (strcmp(a, b) != 0) {
        rc = vm_fail(VM_EXIT_VERIFY, "the copy of %s (disk %s) on %s differs from the source (sha256 %.16s..., "
                     "%.16s...)", sp, d->target, m->dst.label, a, b);
        break;
      }
      vm_debug("disk %s: %s: sha256 %s on both hosts", d->target, sp, a);
    }
  }
  if (rc == 0 && vm_interrupted()) rc = vm_fail_interrupted();
  if (rc) {
    if (dest_volumes_remove(m) == 0) record_remove(m);
    return rc;
  }

  CLEANUP_FREE char *xml = dest_xml(m, VIR_DOMAIN_XML_INACTIVE | VIR_DOMAIN_XML_SECURE | VIR_DOMAIN_XML_MIGRATABLE);
  virDomainPtr ddom = xml ? virDomainDefineXMLFlags(m->dst.conn, xml, VIR_DOMAIN_DEFINE_VALIDATE) : NULL;
  if (!ddom) {
    rc = xml ? vm_fail_virt("cannot define '%s' on %s", m->name, m->dst.label) : VM_EXIT_FAIL;
    if (dest_volumes_remove(m) == 0) record_remove(m);
    return rc;
  }
  if ((rc = record_write(m, "offline-verified"))) goto undo;
  if (vm_interrupted()) {
    rc = vm_fail_interrupted();
    goto undo;
  }

  /* The destination holds the VM now; the source lets go, if it is still shut
   * off (someone may have started it meanwhile: then the source stays the VM). */
  if (vm_domain_state(m->dom) != VIR_DOMAIN_SHUTOFF) {
    rc = vm_fail(VM_EXIT_STATE, "'%s' was started on %s during the move: it stays there, and the move to %s is undone",
                 m->name, m->src.label, m->dst.label);
    goto undo;
  }
  int autostart = 0;
  virDomainGetAutostart(m->dom, &autostart);
  if (autostart) virDomainSetAutostart(ddom, 1);
  virResetLastError();
  if (!mo.keep_source) {
    CLEANUP_FREE char *sxml = virDomainGetXMLDesc(m->dom, VIR_DOMAIN_XML_INACTIVE | VIR_DOMAIN_XML_SECURE);
    if (virDomainUndefine(m->dom) < 0) {
      rc = vm_fail_virt("cannot remove the definition of '%s' from %s", m->name, m->src.label);
      goto undo;
    }
    /* Started between the check and the undefine, it would now run transient there. */
    CLEANUP_VIRDOMAIN virDomainPtr still = virDomainLookupByUUIDString(m->src.conn, m->uuid);
    bool gone = !still && vm_virt_error_code() == VIR_ERR_NO_DOMAIN;
    virResetLastError();
    if (!gone) {
      virDomainPtr back = sxml ? virDomainDefineXML(m->src.conn, sxml) : NULL;
      if (!back)
        vm_warn("cannot define '%s' on %s again: %s", m->name, m->src.label, sxml ? vm_virt_message() : "no definition");
      else if (autostart)
        virDomainSetAutostart(back, 1);
      if (back) virDomainFree(back);
      virResetLastError();
      rc = vm_fail(VM_EXIT_STATE, "'%s' was started on %s during the move: it stays there, and the move to %s is undone",
                   m->name, m->src.label, m->dst.label);
      goto undo;
    }
    if (copied) source_volumes_remove(m);
  } else if (autostart) {
    virDomainSetAutostart(m->dom, 0);
    virResetLastError();
  }
  source_keys_remove(m);
  record_remove(m);
  virDomainFree(ddom);
  json_object_object_add(report, "mode", json_object_new_string("offline"));
  json_object_object_add(report, "strategy", json_object_new_string("offline"));
  json_object_object_add(report, "finished_by", json_object_new_string("offline"));
  json_object_object_add(report, "total_ms", json_object_new_int64(vm_now_ms() - t0));
  json_object_object_add(report, "downtime_ms", NULL);
  json_object_object_add(report, "memory_bytes", json_object_new_int64(0));
  json_object_object_add(report, "disk_bytes", json_object_new_int64((int64_t)bytes));
  json_object_object_add(report, "iterations", json_object_new_int64(0));
  json_object_object_add(report, "postcopy", json_object_new_boolean(false));
  json_object_object_add(report, "storage", json_object_new_string(copied ? "copied and verified (sha256)" : "shared"));
  vm_info("moved '%s' (shut off) to %s", m->name, m->dst.label);
  return 0;

undo:
  /* Someone may have started the copy there meanwhile: then it stays, as it is,
   * and so does the record, for a person and the next run to settle. */
  if (virDomainIsActive(ddom) == 1) {
    /* Nothing of it is removed, now or by a later run: it may hold new data. */
    record_write(m, "started-there");
    vm_warn("the copy of '%s' was started on %s meanwhile: it stays there with its disks, and both hosts have the "
            "VM; no later run acts on it (see the record in %s)", m->name, m->dst.label, "$VMKIT_STATE_DIR/migrations");
    virDomainFree(ddom);
    return rc;
  }
  virDomainUndefine(ddom);
  virResetLastError();
  virDomainFree(ddom);
  if (dest_volumes_remove(m) == 0) record_remove(m);
  return rc;
}
