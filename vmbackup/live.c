/* vmbackup restore --live --as NAME: the new VM starts at once on empty qcow2
 * overlays whose backing files are the snapshot's disks served by nbdkit (the
 * plugin), and libvirt's block pull copies the data into the overlays while it
 * runs; when every pull has ended the overlays stand alone and the exports stop.
 *
 * This process keeps the exports alive: nbdkit runs under its guardian
 * (serve.c) and ends with it, however it ends. The disks are defined with error_policy='stop', so that a VM whose export
 * went away (this process killed) pauses at its next read of data not yet pulled
 * instead of seeing an I/O error; `vmbackup serve` on the same socket brings the
 * export back, and the VM can be resumed. */
#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vmbackup.h"

/* The user QEMU runs as: the host's DAC base label for QEMU (its capabilities),
 * as qemu.conf sets it. -1 when there is none (no DAC driver, a session). */
static int qemu_user(virConnectPtr conn, uid_t *uid, gid_t *gid)
{
  CLEANUP_XMLDOC xmlDocPtr caps = vm_conn_caps(conn);
  CLEANUP_XPATHCTX xmlXPathContextPtr x = caps ? vm_xpath_ctx(caps) : NULL;
  CLEANUP_FREE char *label =
    x ? vm_xpath_str(x, "string(/capabilities/host/secmodel[model='dac']/baselabel[@type='qemu'])") : NULL;
  unsigned u, g;
  if (!label || sscanf(label, "+%u:+%u", &u, &g) != 2) return -1;
  *uid = u;
  *gid = g;
  return 0;
}

/* Each disk on its overlay, backed by its export; a read error pauses the VM. */
static char *live_definition(const struct vb_manifest *m, const char *name, char *const *paths, char *const *socks)
{
  CLEANUP_FREE char *base = vb_new_definition(m, name, paths);
  if (!base) return NULL;
  CLEANUP_XMLDOC xmlDocPtr doc = vm_xml_parse(base);
  if (!doc) return NULL;
  CLEANUP_XPATHCTX xmlXPathContextPtr x = vm_xpath_ctx(doc);
  for (size_t i = 0; i < m->ndisks; i++) {
    CLEANUP_FREE char *lit = vm_xpath_literal(m->disks[i].target);
    CLEANUP_FREE char *expr = vm_strdup_printf("/domain/devices/disk[target/@dev=%s]", lit);
    CLEANUP_XPATHOBJ xmlXPathObjectPtr o = vm_xpath_nodes(x, expr);
    if (!o || !o->nodesetval || o->nodesetval->nodeNr != 1) return NULL;
    xmlNodePtr disk = o->nodesetval->nodeTab[0];
    xmlNodePtr drv = vm_xml_find(disk, "driver");
    vm_xml_set(drv, "error_policy", "stop");
    vm_xml_set(drv, "rerror_policy", "stop");
    xmlNodePtr bs = xmlNewNode(NULL, BAD_CAST "backingStore");
    vm_xml_set(bs, "type", "network");
    vm_xml_set(vm_xml_child(bs, "format", NULL), "type", "raw");
    xmlNodePtr src = vm_xml_child(bs, "source", NULL);
    vm_xml_set(src, "protocol", "nbd");
    xmlNodePtr host = vm_xml_child(src, "host", NULL);
    vm_xml_set(host, "transport", "unix");
    vm_xml_set(host, "socket", socks[i]);
    xmlAddNextSibling(vm_xml_find(disk, "source"), bs);
  }
  return vm_xml_dump(doc);
}

/* After the pulls: the persistent definition without the error policies this
 * restore added (the running VM keeps them until it stops). */
static void drop_policies(virDomainPtr dom, const struct vb_manifest *m)
{
  CLEANUP_XMLDOC xmlDocPtr doc = vm_domain_doc(dom, VIR_DOMAIN_XML_INACTIVE | VIR_DOMAIN_XML_SECURE);
  CLEANUP_XMLDOC xmlDocPtr orig = vm_xml_parse(m->xml);
  if (!doc || !orig) return;
  CLEANUP_XPATHCTX xmlXPathContextPtr x = vm_xpath_ctx(doc);
  CLEANUP_XPATHCTX xmlXPathContextPtr ox = vm_xpath_ctx(orig);
  /* Each disk's policies as the backed-up definition had them. */
  for (size_t i = 0; i < m->ndisks; i++) {
    CLEANUP_FREE char *lit = vm_xpath_literal(m->disks[i].target);
    CLEANUP_FREE char *expr = vm_strdup_printf("/domain/devices/disk[target/@dev=%s]/driver", lit);
    CLEANUP_XPATHOBJ xmlXPathObjectPtr o = vm_xpath_nodes(x, expr);
    if (!o || !o->nodesetval || o->nodesetval->nodeNr != 1) continue;
    xmlNodePtr drv = o->nodesetval->nodeTab[0];
    static const char *const attrs[] = { "error_policy", "rerror_policy", NULL };
    for (size_t a = 0; attrs[a]; a++) {
      CLEANUP_FREE char *oe = vm_strdup_printf("string(%s/@%s)", expr, attrs[a]);
      CLEANUP_FREE char *was = vm_xpath_str(ox, oe);
      if (was) vm_xml_set(drv, attrs[a], was);
      else xmlUnsetProp(drv, BAD_CAST attrs[a]);
    }
  }
  CLEANUP_FREE char *xml = vm_xml_dump(doc);
  virDomainPtr d = virDomainDefineXML(virDomainGetConnect(dom), xml);
  if (d) virDomainFree(d);
  else vm_warn("cannot drop the restore's error policies from the definition: %s", vm_virt_message());
}

int vb_restore_live(const char *repo, const struct vb_manifest *m, const char *name, const char *pool_name,
                    unsigned long bandwidth)
{
  CLEANUP_VIRCONN virConnectPtr conn = NULL;
  CLEANUP_VIRPOOL virStoragePoolPtr pool = NULL;
  int rc = vb_new_vm_place(name, pool_name, &conn, &pool);
  if (rc) return rc;
  if (!vm_conn_is_local(conn))
    return vm_fail(VM_EXIT_USAGE, "--live runs the VM on this host (its disks' exports are local sockets): restore "
                                  "it here, or without --live on %s", vm_conn_host_name(conn));
  if (!vm_pool_is_file_based(pool))
    return vm_fail(VM_EXIT_STATE, "--live needs a pool of files for its qcow2 overlays");
  /* The sockets' folder is QEMU's user's, so that QEMU reaches them and nobody else. */
  CLEANUP_FREE char *sockdir = vm_scratch_dir("live");
  if (!sockdir) return VM_EXIT_FAIL;
  uid_t uid;
  gid_t gid;
  if (geteuid() == 0 && qemu_user(conn, &uid, &gid) == 0 && chown(sockdir, uid, gid) < 0)
    return vm_fail_errno(VM_EXIT_FAIL, "cannot hand '%s' to QEMU's user", sockdir);
  struct vb_server *srv = calloc(m->ndisks + 1, sizeof *srv);
  if (!srv) abort();
  struct vm_undo undo = { 0 };
  struct vm_strv paths = { 0 }, socks = { 0 };
  for (size_t i = 0; i < m->ndisks && !rc; i++) {
    const struct vb_mdisk *d = &m->disks[i];
    CLEANUP_FREE char *volname = vb_volume_name(name, i);
    struct vm_volspec spec = { .name = volname, .format = "qcow2", .capacity = d->size };
    CLEANUP_VIRVOL virStorageVolPtr vol = NULL;
    if ((rc = vm_vol_create(pool, &spec, &vol))) break;
    char *path = virStorageVolGetPath(vol);
    vm_undo_volume(&undo, conn, path);
    vm_strv_add(&paths, path);
    free(path);
    vm_strv_addf(&socks, "%s/%s.sock", sockdir, d->target);
    rc = vb_server_start(repo, m->snapshot, d->target, socks.v[i], NULL, 0, &srv[i]);
    if (!rc && chmod(socks.v[i], 0666) < 0) rc = vm_fail_errno(VM_EXIT_FAIL, "cannot open '%s' to QEMU", socks.v[i]);
  }
  CLEANUP_FREE char *xml = rc ? NULL : live_definition(m, name, paths.v, socks.v);
  if (!rc && !xml) rc = vm_fail(VM_EXIT_VERIFY, "snapshot %.12s: its saved definition does not name its disks", m->snapshot);
  virDomainPtr dom = NULL;
  if (!rc && !(dom = virDomainDefineXML(conn, xml))) rc = vm_fail_virt("cannot define VM '%s'", name);
  if (dom) vm_undo_domain(&undo, dom);
  if (!rc) rc = vm_lock_domain(conn, dom);
  int64_t t0 = vm_now_ms();
  if (!rc && virDomainCreate(dom) < 0) rc = vm_fail_virt("cannot start VM '%s' on the snapshot's exports", name);
  for (size_t i = 0; i < m->ndisks && !rc; i++)
    if (virDomainBlockPull(dom, m->disks[i].target, bandwidth, 0) < 0) {
      rc = vm_fail_virt("cannot pull disk %s of '%s'", m->disks[i].target, name);
      /* Not begun: the VM goes (the pulls started stop, then it is forced off). */
      for (size_t k = 0; k < i; k++) virDomainBlockJobAbort(dom, m->disks[k].target, 0);
    }
  if (rc) {
    vm_undo_run(&undo);
    goto out;
  }
  vm_undo_forget(&undo);
  vm_info("VM '%s' runs on snapshot %.12s of '%s'; its data is pulled in while it runs", name, m->snapshot, m->vm);
  /* Until every pull has ended; the exports stay up meanwhile. */
  while (!rc) {
    unsigned long long cur = 0, end = 0;
    size_t running = 0;
    for (size_t i = 0; i < m->ndisks && !rc; i++) {
      virDomainBlockJobInfo bi;
      int j = virDomainGetBlockJobInfo(dom, m->disks[i].target, &bi, 0);
      if (j < 0) rc = vm_fail_virt("cannot follow the pull of disk %s of '%s'", m->disks[i].target, name);
      else if (j > 0) running++, cur += bi.cur, end += bi.end;
    }
    if (rc || !running) break;
    vm_progress("pulling", cur, end);
    if (vm_interrupted()) {
      rc = vm_fail(VM_EXIT_FAIL, "interrupted: the pull of '%s' stops, and the VM pauses at its next read of data "
                                 "not yet pulled (it needs the backup until its disks are whole)", name);
      for (size_t i = 0; i < m->ndisks; i++) virDomainBlockJobAbort(dom, m->disks[i].target, 0);
      break;
    }
    vm_sleep_ms(200);
  }
  vm_progress_end();
  if (!rc) {
    /* Whole: no disk stands on an export any more. */
    CLEANUP_XMLDOC xmlDocPtr live = vm_domain_doc(dom, 0);
    CLEANUP_XPATHCTX xmlXPathContextPtr x = live ? vm_xpath_ctx(live) : NULL;
    if (!x || vm_xpath_ll(x, "count(/domain/devices/disk/backingStore/source[@protocol='nbd'])", 1) != 0)
      rc = vm_fail(VM_EXIT_FAIL, "the pulls of '%s' ended, but a disk still stands on the backup's export", name);
  }
  if (!rc) {
    drop_policies(dom, m);
    vm_info("VM '%s' no longer needs the backup: its disks were pulled in %.1f s", name,
            (double)(vm_now_ms() - t0) / 1000.0);
  }
out:
  for (size_t i = 0; i < m->ndisks; i++) vb_server_stop(&srv[i]);
  free(srv);
  if (dom) virDomainFree(dom);
  vm_strv_free(&paths);
  vm_strv_free(&socks);
  vm_remove_tree(sockdir);
  return rc;
}
