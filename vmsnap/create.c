/* vmsnap create: an external disk-only snapshot of a running VM (crash-consistent,
 * or quiesced through the guest agent), a snapshot with memory (internal, or
 * external with a memory file), or an offline snapshot of a shut-off VM. All disks
 * at once (libvirt's atomic flag). The kind, how long the guest's vCPUs were
 * paused and how long its filesystems were frozen are recorded with the snapshot.
 *
 * libvirt freezes and thaws the guest's filesystems itself, inside the snapshot
 * call (its quiesce flag), so that no way of killing vmsnap can leave a guest
 * frozen. The files an external snapshot is about to make are written into the
 * VM's journal first, so that the next vmsnap run removes them if a killed run
 * left them without a snapshot. */
#include <libvirt/libvirt-qemu.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "vmsnap.h"

enum quiesce { Q_NO, Q_YES, Q_AUTO };
static char *o_description;
static int o_memory, o_disk_only, o_external, o_quiesce_yes, o_quiesce_auto;

static struct poptOption options[] = {
  { "memory", 'm', POPT_ARG_NONE, &o_memory, 0, "save the guest's memory too: internal, or external with --external", NULL },
  { "disk-only", 'd', POPT_ARG_NONE, &o_disk_only, 0, "disks only, in external overlays (the default for a running VM)", NULL },
  { "external", '\0', POPT_ARG_NONE, &o_external, 0, "with --memory: the memory in a file, the disks in overlays", NULL },
  { "quiesce", '\0', POPT_ARG_NONE, &o_quiesce_yes, 0,
    "freeze the guest's filesystems through its agent (fail without one); --quiesce=auto: when an agent answers", NULL },
  { "quiesce-auto", '\0', POPT_ARG_NONE | POPT_ARGFLAG_DOC_HIDDEN, &o_quiesce_auto, 0, NULL, NULL },
  { "description", '\0', POPT_ARG_STRING, &o_description, 0, "a line about the snapshot", "TEXT" },
  VM_POPT_LOCK,
  VM_POPT_COMMON,
  POPT_TABLEEND
};

static bool snapshot_disk(const struct vm_disk *d)
{
  return d->device && strcmp(d->device, "disk") == 0 && !d->readonly && d->source && d->type &&
         strcmp(d->type, "file") == 0;
}

int cmd_create(int argc, char **argv)
{
  CLEANUP_POPT poptContext ctx = NULL;
  const char **args;
  int nargs;
  /* An optional value would make popt take the next word (the VM) as it:
   * --quiesce=auto is spelled out instead. */
  for (int i = 1; i < argc; i++)
    if (strcmp(argv[i], "--quiesce=auto") == 0) argv[i] = "--quiesce-auto";
  int rc = vm_parse(&ctx, argc, argv, options, "VM [NAME]",
                    "Take a snapshot of a VM: disks only, with memory, or offline when it is shut off.",
                    1, 2, &args, &nargs);
  if (rc) return rc == VM_DONE ? 0 : rc;
  const char *vm = args[0];
  char stamp[32];
  time_t now = time(NULL);
  strftime(stamp, sizeof stamp, "snap-%Y%m%d-%H%M%S", gmtime(&now));
  const char *name = nargs > 1 ? args[1] : stamp;
  if ((rc = vm_check_name("snapshot", name))) return rc;
  if (o_quiesce_yes && o_quiesce_auto) return vm_usage_error("--quiesce and --quiesce=auto exclude each other");
  enum quiesce o_quiesce = o_quiesce_auto ? Q_AUTO : o_quiesce_yes ? Q_YES : Q_NO;
  if (o_memory && o_disk_only) return vm_usage_error("--memory and --disk-only exclude each other");
  if (o_external && !o_memory) return vm_usage_error("--external goes with --memory (disk-only snapshots are external)");
  if (o_memory && o_quiesce != Q_NO)
    return vm_usage_error("--quiesce goes with disk-only snapshots: a memory snapshot already holds a consistent state");

  if ((rc = vm_events_init())) return rc;
  CLEANUP_VIRCONN virConnectPtr conn = NULL;
  CLEANUP_VIRDOMAIN virDomainPtr dom = NULL;
  if ((rc = vm_open(vm, &conn, &dom)) || (rc = vmsnap_lock(conn, &dom, vm))) return rc;
  struct snaps snaps;
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
  if (!live && (o_memory || o_quiesce == Q_YES)) {
    rc = vm_fail(VM_EXIT_STATE, "VM '%s' is shut off: %s needs a running VM", vm,
                 o_memory ? "a memory snapshot" : "--quiesce");
    goto out;
  }

  /* One family per VM: libvirt 9.0 cannot mix internal and external snapshots
   * in one chain and still revert or delete both. */
  bool has_internal = false, has_external = false;
  for (size_t i = 0; i < snaps.n; i++) {
    if (snaps.v[i].external) has_external = true;
    else has_internal = true;
  }
  bool internal = live ? (o_memory && !o_external && !has_external) : (has_internal && !o_disk_only);
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
  if (o_description) vm_xml_child(root, "description", o_description);
  unsigned flags = VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC;
  if (!internal) {
    /* An external memory snapshot is written while the guest runs (as a live
     * migration to a file) and the guest pauses only for the last part. */
    flags |= o_memory ? VIR_DOMAIN_SNAPSHOT_CREATE_LIVE : VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY;
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
    if (o_memory) {
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
  if (live && !o_memory && o_quiesce != Q_NO) {
    if (state == VIR_DOMAIN_PAUSED) {
      if (o_quiesce == Q_YES) {
        rc = vm_fail(VM_EXIT_STATE, "cannot quiesce '%s': it is paused, so its agent cannot answer", vm);
        goto out;
      }
    } else {
      char *pong = virDomainQemuAgentCommand(dom, "{\"execute\":\"guest-ping\"}", 5, 0);
      if (pong) quiesce = true;
      else if (o_quiesce == Q_YES) {
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

  const char *kind = !live ? "offline" : o_memory ? "memory" : frozen ? "quiesced" : "crash-consistent";
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
  printf("%s\n", name);
  char freeze[48] = "", pause[48] = "pause not measured";
  if (frozen) snprintf(freeze, sizeof freeze, ", frozen %ld ms", frozen_ms);
  if (paused_ms >= 0) snprintf(pause, sizeof pause, "paused %ld ms", paused_ms);
  if (live)
    vm_info("created %s snapshot '%s' of '%s' (%s; %s%s, %lld ms in all)", kind, name, vm,
            internal ? "internal" : "external", pause, freeze, (long long)wall);
  else
    vm_info("created offline snapshot '%s' of '%s' (%s)", name, vm, internal ? "internal" : "external");
out:
  if (created) virDomainSnapshotFree(created);
  vm_strv_free(&made);
  vm_disks_free(disks, nd);
  snaps_free(&snaps);
  return rc;
}
