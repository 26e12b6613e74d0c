/* One move from start to end: open both hosts, find and lock the VM, finish what a
 * killed run left, pre-flight, then the live or offline move and its report. */
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "vmmigrate.h"

void move_free(struct move *m)
{
  for (size_t i = 0; i < m->ndisks; i++) {
    struct mdisk *d = &m->disks[i];
    free(d->target); free(d->device); free(d->type); free(d->src_path); free(d->secret); free(d->format); free(d->pool); free(d->vol);
    free(d->dst_path);
    vm_strv_free(&d->chain);
    vm_strv_free(&d->copy_chain);
  }
  vm_strv_free(&m->keys);
  vm_strv_free(&m->keys_missing);
  free(m->name);
  free(m->kernel);
  free(m->initrd);
  if (m->dom) virDomainFree(m->dom);
  if (m->checks) json_object_put(m->checks);
  host_close(&m->dst);
  host_close(&m->src);
}

/* The first failed check's line. */
static int first_failure(struct move *m)
{
  size_t n = json_object_array_length(m->checks);
  for (size_t i = 0; i < n; i++) {
    json_object *c = json_object_array_get_idx(m->checks, i);
    if (strcmp(json_object_get_string(json_object_object_get(c, "result")), "failed") == 0)
      return vm_fail(m->check_rc, "cannot move '%s' to %s: %s", m->name, m->dst.label,
                     json_object_get_string(json_object_object_get(c, "detail")));
  }
  return m->check_rc;
}

/* The VM's disks, and what the move cannot carry: disks that are not files or
 * block devices (network, pool volumes by name, NVMe), UEFI variables and TPM
 * state (files of their own that libvirt does not move). */
static int load(struct move *m)
{
  CLEANUP_XMLDOC xmlDocPtr doc = vm_domain_doc(m->dom, m->live ? 0 : VIR_DOMAIN_XML_INACTIVE);
  if (!doc) return VM_EXIT_FAIL;
  CLEANUP_XPATHCTX xmlXPathContextPtr x = vm_xpath_ctx(doc);
  /* UEFI: an nvram file, or firmware libvirt picks (its nvram path appears only
   * once it starts). */
  CLEANUP_FREE char *nvram = vm_xpath_str(x, "/domain/os/nvram");
  CLEANUP_FREE char *efi = vm_xpath_str(x, "/domain/os[@firmware='efi' or loader/@type='pflash']/type");
  if (nvram || efi || vm_xpath_ll(x, "count(/domain/devices/tpm)", 0) > 0)
    return vm_fail(VM_EXIT_STATE, "cannot move '%s': it has %s, which vmmigrate does not move", m->name,
                   nvram || efi ? "UEFI firmware and its variables (an nvram file)" : "a TPM and its state");
  CLEANUP_XPATHOBJ xmlXPathObjectPtr o = vm_xpath_nodes(x, "/domain/devices/disk");
  int n = o && o->nodesetval ? o->nodesetval->nodeNr : 0;
  for (int i = 0; i < n; i++) {
    xmlNodePtr disk = o->nodesetval->nodeTab[i];
    CLEANUP_XMLFREE char *type = vm_xml_prop(disk, "type");
    CLEANUP_XMLFREE char *device = vm_xml_prop(disk, "device");
    xmlNodePtr src = vm_xml_find(disk, "source"), tgt = vm_xml_find(disk, "target"), drv = vm_xml_find(disk, "driver");
    CLEANUP_XMLFREE char *target = tgt ? vm_xml_prop(tgt, "dev") : NULL;
    if (!src) continue; /* an empty CD-ROM drive */
    const char *t = type ? type : "file";
    if (strcmp(t, "file") != 0 && strcmp(t, "block") != 0)
      return vm_fail(VM_EXIT_STATE, "cannot move '%s': disk %s is of type '%s' (vmmigrate moves file and block "
                     "disks)", m->name, target ? target : "?", t);
    CLEANUP_XMLFREE char *path = vm_xml_prop(src, strcmp(t, "block") == 0 ? "dev" : "file");
    if (!path) continue; /* a drive with no medium */
    if (!target) return vm_fail(VM_EXIT_STATE, "cannot move '%s': a disk has no target", m->name);
    if (m->ndisks >= VM_MAX_DEVS)
      return vm_fail(VM_EXIT_STATE, "cannot move '%s': it has more than %d disks", m->name, VM_MAX_DEVS);
    struct mdisk *d = &m->disks[m->ndisks++];
    d->target = vm_strdup(target);
    d->device = vm_strdup(device ? device : "disk");
    d->type = vm_strdup(t);
    d->src_path = vm_strdup(path);
    CLEANUP_XMLFREE char *fmt = drv ? vm_xml_prop(drv, "type") : NULL;
    d->format = fmt ? vm_strdup(fmt) : NULL;
    d->readonly = vm_xml_find(disk, "readonly") != NULL || strcmp(d->device, "cdrom") == 0;
    xmlNodePtr enc = vm_xml_find(src, "encryption"), sec = enc ? vm_xml_find(enc, "secret") : NULL;
    CLEANUP_XMLFREE char *suuid = sec ? vm_xml_prop(sec, "uuid") : NULL;
    d->secret = suuid ? vm_strdup(suuid) : NULL;
    if (suuid && !vm_strv_contains(m->keys.v, suuid)) vm_strv_add(&m->keys, suuid);
  }
  m->kernel = vm_xpath_str(x, "/domain/os/kernel");
  m->initrd = vm_xpath_str(x, "/domain/os/initrd");
  return 0;
}

int run_move(const char *vm, const char *src, const char *dst, struct ledger *ledger, json_object **report)
{
  *report = NULL;
  vm_catch_signals();
  /* The event loop lets libvirt's keepalive notice a host that stops answering. */
  vm_events_init();
  struct move m = { .ledger = ledger, .vm_arg = vm, .postcopy_ok = true };
  int rc = host_open(&m.src, src, VM_EXIT_FAIL);
  if (rc) goto out;
  m.dom = virDomainLookupByName(m.src.conn, vm);
  if (!m.dom && strlen(vm) == 36) m.dom = virDomainLookupByUUIDString(m.src.conn, vm);
  if (!m.dom) {
    /* Gone from here: a killed run's move may have finished; its record says. */
    if (vm_virt_exit_code() != VM_EXIT_NOTFOUND) {
      rc = vm_fail_virt("cannot look up VM '%s'", vm);
      goto out;
    }
    if (!mo.check_only) {
      /* By name; and, when it reads as a UUID, by that (the records' names are
       * lowercase UUIDs). */
      char uuid[37];
      if (vm_uuid_canonical(vm, uuid) == 0) record_recover(uuid);
      record_recover_name(vm);
    }
    rc = vm_fail(VM_EXIT_NOTFOUND, "no such VM '%s' on %s", vm, m.src.label);
    goto out;
  }
  m.name = vm_strdup(virDomainGetName(m.dom));
  virDomainGetUUIDString(m.dom, m.uuid);
  if (!mo.check_only) {
    CLEANUP_FREE char *other = NULL;
    if ((rc = vm_lock_and_recover(m.src.conn, &m.dom, m.name, &other))) goto out;
    if (other) {
      rc = vm_fail(VM_EXIT_STATE, "cannot move '%s': it has an unfinished %s; run the tool that started it first",
                   m.name, other);
      goto out;
    }
    if (record_recover(m.uuid) != 0) {
      rc = vm_fail(VM_EXIT_STATE, "cannot move '%s': an earlier move of it is unfinished (see the warning above)",
                   m.name);
      goto out;
    }
    /* A killed run's move that had gone far enough is finished now: the VM has gone. */
    virDomainPtr again = virDomainLookupByUUIDString(m.src.conn, m.uuid);
    if (!again) {
      rc = vm_fail(VM_EXIT_NOTFOUND, "no such VM '%s' on %s any more: a killed run had moved it", m.name, m.src.label);
      goto out;
    }
    virDomainFree(again);
  }
  /* The destination: one that does not answer is a failed pre-flight (exit 4). */
  if ((rc = host_open(&m.dst, dst, VM_EXIT_STATE))) goto out;
  if (!mo.check_only && (rc = vm_lock_domain_uuid(m.dst.conn, m.uuid, m.name))) goto out;

  int state = vm_domain_state(m.dom);
  m.live = state == VIR_DOMAIN_RUNNING || state == VIR_DOMAIN_PAUSED;
  if (mo.offline && m.live) {
    rc = vm_fail(VM_EXIT_STATE, "cannot move '%s' offline: it is %s (stop it first, or move it live)", m.name,
                 vm_state_name(state));
    goto out;
  }
  if (!m.live && state != VIR_DOMAIN_SHUTOFF) {
    rc = vm_fail(VM_EXIT_STATE, "cannot move '%s': it is %s", m.name, vm_state_name(state));
    goto out;
  }
  if (virDomainIsPersistent(m.dom) != 1 && !m.live) {
    rc = vm_fail(VM_EXIT_STATE, "cannot move '%s': it is not defined", m.name);
    goto out;
  }
  unsigned long maxmem = virDomainGetMaxMemory(m.dom);
  m.memory = (uint64_t)maxmem * 1024;
  if ((rc = load(&m))) goto out;

  int64_t tp = vm_now_ms();
  preflight(&m);
  vm_debug("pre-flight: %lld ms", (long long)(vm_now_ms() - tp));
  *report = json_object_new_object();
  json_object_object_add(*report, "vm", json_object_new_string(m.name));
  json_object_object_add(*report, "source", json_object_new_string(m.src.label));
  json_object_object_add(*report, "dest", json_object_new_string(m.dst.label));
  json_object_object_add(*report, "checks", json_object_get(m.checks));
  if (mo.check_only) {
    rc = m.check_rc;
    if (rc) first_failure(&m);
    goto out;
  }
  if (m.check_rc) {
    rc = first_failure(&m);
    goto out;
  }
  if (!m.live && !mo.offline) {
    vm_info("'%s' is shut off: moving it offline", m.name);
    if (mo.tls || mo.bandwidth_mib || mo.strategy != ST_AUTO)
      vm_warn("an offline move copies through libvirt's connections: --strategy, --bandwidth and --tls do not apply");
  }
  if (m.live) {
    rc = move_live(&m, *report);
  } else {
    /* --timeout: the copy stops at the deadline as at Ctrl-C, and is undone. */
    if (mo.timeout_s) alarm((unsigned)mo.timeout_s);
    rc = move_offline(&m, *report);
    alarm(0);
    /* The deadline's own failure (not a verify or state failure meanwhile). */
    if (rc == VM_EXIT_FAIL && vm_interrupt_signal() == SIGALRM) rc = VM_EXIT_TIMEOUT;
  }
  json_object_object_add(*report, "result", json_object_new_string(rc == 0 ? "moved" : "failed"));
out:
  move_free(&m);
  return rc;
}
