/* The images behind a VM's disks and snapshots as a graph of backing links, read
 * from the images themselves (through libvirt's storage pools), not from libvirt's
 * snapshot records: deleting and reverting external snapshots is decided on what
 * the files say. */
#include <string.h>
#include <unistd.h>

#include "snap.h"
#include "chain.h"

static void add_edge(struct graph *g, const char *file, const char *backing, const char *format)
{
  for (size_t i = 0; i < g->n; i++)
    if (strcmp(g->v[i].file, file) == 0) return;
  struct edge *v = realloc(g->v, (g->n + 1) * sizeof *v);
  if (!v) return;
  g->v = v;
  g->v[g->n++] = (struct edge){ strdup(file), backing ? strdup(backing) : NULL, strdup(format ? format : "raw") };
}

int graph_add(virConnectPtr conn, struct graph *g, const char *top)
{
  CLEANUP_FREE char *cur = vm_strdup(top);
  for (int depth = 0; cur && depth < 1024; depth++) {
    if (graph_find(g, cur)) return 0;
    struct vm_imginfo info;
    int rc = vm_image_info(conn, cur, &info);
    if (rc == VM_EXIT_NOTFOUND) return 0; /* a missing link: verify's to report */
    if (rc) return rc;
    add_edge(g, info.path, info.backing, info.format);
    free(cur);
    cur = info.backing ? vm_strdup(info.backing) : NULL;
    vm_imginfo_free(&info);
  }
  return 0;
}

const struct edge *graph_find(const struct graph *g, const char *file)
{
  for (size_t i = 0; i < g->n; i++)
    if (strcmp(g->v[i].file, file) == 0) return &g->v[i];
  return NULL;
}

void graph_children(const struct graph *g, const char *file, struct vm_strv *out)
{
  for (size_t i = 0; i < g->n; i++)
    if (g->v[i].backing && strcmp(g->v[i].backing, file) == 0) vm_strv_add(out, g->v[i].file);
}

void graph_free(struct graph *g)
{
  for (size_t i = 0; i < g->n; i++) {
    free(g->v[i].file);
    free(g->v[i].backing);
    free(g->v[i].format);
  }
  free(g->v);
  g->v = NULL;
  g->n = 0;
}

/* Every image a VM's disks and snapshots can reach: the chains of its current
 * disks (live and persistent) and of every snapshot's base and overlay. */
int graph_of_vm(virConnectPtr conn, virDomainPtr dom, const struct snaps *s, struct graph *g)
{
  memset(g, 0, sizeof *g);
  int rc = 0;
  for (int pass = 0; pass < 2 && rc == 0; pass++) {
    if (pass == 0 && virDomainIsActive(dom) != 1) continue;
    if (pass == 1 && virDomainIsPersistent(dom) != 1) continue;
    CLEANUP_XMLDOC xmlDocPtr doc = vm_domain_doc(dom, pass ? VIR_DOMAIN_XML_INACTIVE : 0);
    if (!doc) return VM_EXIT_FAIL;
    struct vm_disk *d;
    size_t nd;
    vm_domain_disks(doc, &d, &nd);
    for (size_t i = 0; i < nd && rc == 0; i++)
      if (d[i].source && d[i].device && strcmp(d[i].device, "disk") == 0) rc = graph_add(conn, g, d[i].source);
    vm_disks_free(d, nd);
  }
  for (size_t i = 0; i < s->n && rc == 0; i++)
    for (size_t j = 0; j < s->v[i].ndisks && rc == 0; j++) {
      const struct snap_disk *sd = &s->v[i].disks[j];
      if (sd->overlay) rc = graph_add(conn, g, sd->overlay);
      if (rc == 0 && sd->base) rc = graph_add(conn, g, sd->base);
    }
  return rc;
}

int wait_block_job(virDomainPtr dom, const char *target, bool pivot)
{
  for (;;) {
    virDomainBlockJobInfo info;
    int r = virDomainGetBlockJobInfo(dom, target, &info, 0);
    if (r < 0) return vm_fail_virt("cannot follow the block job on %s of '%s'", target, virDomainGetName(dom));
    if (r == 0) return 0; /* finished and gone */
    if (vm_interrupted()) {
      /* Cancelling a commit leaves the chain whole: the top still holds its data. */
      virDomainBlockJobAbort(dom, target, 0);
      while (virDomainGetBlockJobInfo(dom, target, &info, 0) == 1) vm_sleep_ms(50);
      vm_progress_end();
      return vm_fail(VM_EXIT_FAIL, "interrupted: the merge on %s of '%s' was cancelled", target,
                     virDomainGetName(dom));
    }
    vm_progress("merging", info.cur, info.end);
    if (pivot && info.end > 0 && info.cur == info.end) {
      /* libvirt accepts the pivot only once it has handled QEMU's "ready" event,
       * which can come a little after cur reaches end: until then it says the
       * job is still active. */
      int64_t until = vm_now_ms() + 60000;
      while (virDomainBlockJobAbort(dom, target, VIR_DOMAIN_BLOCK_JOB_ABORT_PIVOT) < 0) {
        virErrorPtr e = virGetLastError();
        if (!e || e->code != VIR_ERR_BLOCK_COPY_ACTIVE || vm_now_ms() > until || vm_interrupted()) {
          int rc = vm_fail_virt("cannot pivot %s of '%s'", target, virDomainGetName(dom));
          virDomainBlockJobAbort(dom, target, 0); /* cancelled, the chain stays whole */
          while (virDomainGetBlockJobInfo(dom, target, &info, 0) == 1) vm_sleep_ms(20);
          vm_progress_end();
          return rc;
        }
        vm_sleep_ms(20);
      }
      pivot = false;
      continue;
    }
    vm_sleep_ms(50);
  }
}

/* libvirt keeps <backingStore> in a persistent definition and trusts it at the next
 * start; after the chain changed under it, the definition is written again
 * without it, so that the chain is read from the images. Disk sources named in
 * retarget (target, new source pairs) are changed on the way. */
int redefine_without_backing(virConnectPtr conn, virDomainPtr dom, char *const *retarget)
{
  if (virDomainIsPersistent(dom) != 1) return 0;
  CLEANUP_XMLDOC xmlDocPtr doc = vm_domain_doc(dom, VIR_DOMAIN_XML_INACTIVE | VIR_DOMAIN_XML_SECURE);
  if (!doc) return VM_EXIT_FAIL;
  fix_disks(doc, retarget);
  CLEANUP_FREE char *xml = vm_xml_dump(doc);
  virDomainPtr d = virDomainDefineXML(conn, xml);
  if (!d) return vm_fail_virt("cannot update the definition of '%s'", virDomainGetName(dom));
  virDomainFree(d);
  return 0;
}

void fix_disks(xmlDocPtr doc, char *const *retarget)
{
  CLEANUP_XPATHCTX xmlXPathContextPtr x = vm_xpath_ctx(doc);
  CLEANUP_XPATHOBJ xmlXPathObjectPtr bs = vm_xpath_nodes(x, "//devices/disk/backingStore");
  for (int i = 0; bs && bs->nodesetval && i < bs->nodesetval->nodeNr; i++) {
    xmlUnlinkNode(bs->nodesetval->nodeTab[i]);
    xmlFreeNode(bs->nodesetval->nodeTab[i]);
    bs->nodesetval->nodeTab[i] = NULL;
  }
  for (size_t i = 0; retarget && retarget[i] && retarget[i + 1]; i += 3) {
    CLEANUP_FREE char *e = vm_strdup_printf("//devices/disk[target/@dev='%s']", retarget[i]);
    CLEANUP_XPATHOBJ xmlXPathObjectPtr o = vm_xpath_nodes(x, e);
    for (int j = 0; o && o->nodesetval && j < o->nodesetval->nodeNr; j++) {
      xmlNodePtr disk = o->nodesetval->nodeTab[j];
      for (xmlNodePtr c = disk->children; c; c = c->next) {
        if (c->type != XML_ELEMENT_NODE) continue;
        if (xmlStrcmp(c->name, BAD_CAST "source") == 0) {
          xmlUnsetProp(c, BAD_CAST "index");
          vm_xml_set(c, "file", retarget[i + 1]);
        }
        if (xmlStrcmp(c->name, BAD_CAST "driver") == 0 && retarget[i + 2]) vm_xml_set(c, "type", retarget[i + 2]);
      }
    }
  }
}

/* A shut-off VM's images are merged by QEMU too, in a helper: a transient domain
 * holding only the chain, started paused (no guest ever runs in it) and destroyed
 * by libvirt itself when this run's connection closes, however the run ends. */
int offline_commit(virConnectPtr conn, virDomainPtr dom, const char *top, const char *top_format, const char *base,
                   const char *child)
{
  char uuid[VIR_UUID_STRING_BUFLEN] = "";
  virDomainGetUUIDString(dom, uuid);
  CLEANUP_FREE char *name = vm_strdup_printf("vmsnap-merge-%.8s-%d", uuid, (int)getpid());
  struct vm_spec spec = { .name = name, .virt_type = vm_virt_type_of(conn), .vcpus = 1, .memory = 64ULL << 20 };
  spec.disks[spec.ndisks++] = (struct vm_spec_disk){ top, top_format ? top_format : "qcow2", "disk", "file", false };
  CLEANUP_FREE char *xml = vm_spec_xml(&spec);
  /* Only what the merge needs: no NIC, console, agent or balloon. */
  CLEANUP_XMLDOC xmlDocPtr doc = xml ? vm_xml_parse(xml) : NULL;
  if (!doc) return vm_fail(VM_EXIT_FAIL, "cannot write the merge helper's definition");
  CLEANUP_XPATHCTX xmlXPathContextPtr x = vm_xpath_ctx(doc);
  CLEANUP_XPATHOBJ xmlXPathObjectPtr o = vm_xpath_nodes(x,
    "/domain/devices/interface | /domain/devices/serial | /domain/devices/console | /domain/devices/channel | "
    "/domain/devices/memballoon");
  for (int i = 0; o && o->nodesetval && i < o->nodesetval->nodeNr; i++) {
    xmlUnlinkNode(o->nodesetval->nodeTab[i]);
    xmlFreeNode(o->nodesetval->nodeTab[i]);
    o->nodesetval->nodeTab[i] = NULL;
  }
  xmlNodePtr devs = NULL;
  CLEANUP_XPATHOBJ xmlXPathObjectPtr d = vm_xpath_nodes(x, "/domain/devices");
  if (d && d->nodesetval && d->nodesetval->nodeNr) devs = d->nodesetval->nodeTab[0];
  if (devs) vm_xml_set(vm_xml_child(devs, "memballoon", NULL), "model", "none");
  CLEANUP_FREE char *hxml = vm_xml_dump(doc);
  virDomainPtr helper = virDomainCreateXML(conn, hxml, VIR_DOMAIN_START_PAUSED | VIR_DOMAIN_START_AUTODESTROY);
  if (!helper) return vm_fail_virt("cannot start the helper that merges '%s' into '%s'", child, base);
  bool active = strcmp(top, child) == 0;
  int rc = 0;
  if (virDomainBlockCommit(helper, "vda", base, child, 0, active ? VIR_DOMAIN_BLOCK_COMMIT_ACTIVE : 0) < 0)
    rc = vm_fail_virt("cannot merge '%s' into '%s'", child, base);
  if (rc == 0) rc = wait_block_job(helper, "vda", active);
  vm_progress_end();
  virDomainDestroy(helper);
  virDomainFree(helper);
  vm_storage_changed();
  return rc;
}
