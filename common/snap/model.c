/* A VM's snapshots as vmsnap sees them: libvirt's records, read from their XML,
 * with vmsnap's own record of each (kind, pause and freeze times) merged in. */
#include <libgen.h>
#include <string.h>

#include "snap.h"

static void snap_free(struct snap *p)
{
  if (p->ptr) virDomainSnapshotFree(p->ptr);
  free(p->name);
  free(p->parent);
  free(p->description);
  free(p->state);
  free(p->memory);
  free(p->memfile);
  free(p->xml);
  free(p->kind);
  for (size_t i = 0; i < p->ndisks; i++) {
    free(p->disks[i].target);
    free(p->disks[i].mode);
    free(p->disks[i].base);
    free(p->disks[i].base_format);
    free(p->disks[i].overlay);
  }
  free(p->disks);
}

void snaps_free(struct snaps *s)
{
  for (size_t i = 0; i < s->n; i++) snap_free(&s->v[i]);
  free(s->v);
  s->v = NULL;
  s->n = 0;
}

static int parse_snapshot(struct snap *p, const char *vm)
{
  CLEANUP_XMLDOC xmlDocPtr doc = vm_xml_parse(p->xml);
  if (!doc) return vm_fail(VM_EXIT_FAIL, "cannot parse a snapshot record of '%s'", vm);
  CLEANUP_XPATHCTX xmlXPathContextPtr x = vm_xpath_ctx(doc);
  p->name = vm_xpath_str(x, "/domainsnapshot/name");
  p->parent = vm_xpath_str(x, "/domainsnapshot/parent/name");
  p->description = vm_xpath_str(x, "/domainsnapshot/description");
  p->state = vm_xpath_str(x, "/domainsnapshot/state");
  p->created = vm_xpath_ll(x, "/domainsnapshot/creationTime", 0);
  p->memory = vm_xpath_str(x, "/domainsnapshot/memory/@snapshot");
  p->memfile = vm_xpath_str(x, "/domainsnapshot/memory/@file");
  if (!p->memory) p->memory = strdup("no");
  if (!p->name || !p->state) return vm_fail(VM_EXIT_FAIL, "a snapshot record of '%s' has no name or state", vm);
  p->external = strcmp(p->memory, "external") == 0;

  CLEANUP_XPATHOBJ xmlXPathObjectPtr disks = vm_xpath_nodes(x, "/domainsnapshot/disks/disk");
  size_t n = disks && disks->nodesetval ? (size_t)disks->nodesetval->nodeNr : 0;
  p->disks = calloc(n ? n : 1, sizeof *p->disks);
  for (size_t i = 0; i < n; i++) {
    struct snap_disk *d = &p->disks[p->ndisks];
    x->node = disks->nodesetval->nodeTab[i];
    d->target = vm_xml_prop(x->node, "name");
    d->mode = vm_xml_prop(x->node, "snapshot");
    if (!d->target) continue;
    if (!d->mode) d->mode = strdup("no");
    d->overlay = vm_xpath_str(x, "source/@file");
    /* The image the disk stood on at the snapshot: the snapshot's copy of the domain. */
    CLEANUP_FREE char *e1 = vm_strdup_printf("/domainsnapshot/domain/devices/disk[target/@dev='%s']/source/@file", d->target);
    CLEANUP_FREE char *e2 = vm_strdup_printf("/domainsnapshot/domain/devices/disk[target/@dev='%s']/driver/@type", d->target);
    d->base = vm_xpath_str(x, e1);
    d->base_format = vm_xpath_str(x, e2);
    if (strcmp(d->mode, "external") == 0) p->external = true;
    p->ndisks++;
  }
  return 0;
}

/* What a snapshot that vmsnap did not make (or whose record is gone) is. */
static const char *derived_kind(const struct snap *p)
{
  if (strcmp(p->memory, "no") != 0) return "memory";
  if (strcmp(p->state, "shutoff") == 0) return "offline";
  return "crash-consistent";
}

int snaps_load(virDomainPtr dom, struct snaps *s)
{
  memset(s, 0, sizeof *s);
  const char *vm = virDomainGetName(dom);
  virDomainSnapshotPtr *list = NULL;
  int n = virDomainListAllSnapshots(dom, &list, 0);
  if (n < 0) return vm_fail_virt("cannot list the snapshots of '%s'", vm);
  s->v = calloc((size_t)n + 1, sizeof *s->v);
  int rc = 0;
  for (int i = 0; i < n; i++) {
    struct snap *p = &s->v[s->n++];
    p->ptr = list[i];
    p->current = virDomainSnapshotIsCurrent(list[i], 0) == 1;
    p->xml = virDomainSnapshotGetXMLDesc(list[i], VIR_DOMAIN_SNAPSHOT_XML_SECURE);
    if (!p->xml) rc = vm_fail_virt("cannot read a snapshot of '%s'", vm);
    else if (!rc) rc = parse_snapshot(p, vm);
  }
  free(list);
  if (rc) {
    snaps_free(s);
    return rc;
  }

  CLEANUP_XMLDOC xmlDocPtr rec = NULL;
  /* A failure to read the records is a failure: taken for "none", the next save
   * would overwrite them. */
  if ((rc = vm_meta_read(dom, SNAP_META_NS, &rec))) {
    snaps_free(s);
    return rc;
  }
  CLEANUP_XPATHCTX xmlXPathContextPtr x = rec ? vm_xpath_ctx(rec) : NULL;
  for (size_t i = 0; i < s->n; i++) {
    struct snap *p = &s->v[i];
    p->paused_ms = p->frozen_ms = -1;
    if (x) {
      CLEANUP_FREE char *lit = vm_xpath_literal(p->name);
      CLEANUP_FREE char *e = vm_strdup_printf("/snapshots/snapshot[@name=%s]", lit);
      CLEANUP_FREE char *ek = vm_strdup_printf("%s/@kind", e);
      CLEANUP_FREE char *ep = vm_strdup_printf("%s/@paused-ms", e);
      CLEANUP_FREE char *ef = vm_strdup_printf("%s/@frozen-ms", e);
      p->kind = vm_xpath_str(x, ek);
      p->paused_ms = vm_xpath_ll(x, ep, -1);
      p->frozen_ms = vm_xpath_ll(x, ef, -1);
    }
    if (!p->kind) p->kind = strdup(derived_kind(p));
  }
  return 0;
}

struct snap *snaps_find(struct snaps *s, const char *name)
{
  for (size_t i = 0; i < s->n; i++)
    if (strcmp(s->v[i].name, name) == 0) return &s->v[i];
  return NULL;
}

int snap_lookup(struct snaps *s, const char *vm, const char *name, struct snap **out)
{
  *out = snaps_find(s, name);
  if (*out) return 0;
  return vm_fail(VM_EXIT_NOTFOUND, "VM '%s' has no snapshot '%s'", vm, name);
}

xmlDocPtr snaps_records_doc(const struct snaps *s, const struct snap *skip)
{
  xmlDocPtr doc = xmlNewDoc(BAD_CAST "1.0");
  xmlNodePtr root = xmlNewNode(NULL, BAD_CAST "snapshots");
  xmlDocSetRootElement(doc, root);
  for (size_t i = 0; i < s->n; i++) {
    const struct snap *p = &s->v[i];
    if (p == skip) continue;
    xmlNodePtr e = vm_xml_child(root, "snapshot", NULL);
    vm_xml_set(e, "name", p->name);
    vm_xml_set(e, "kind", p->kind);
    if (p->paused_ms >= 0) vm_xml_setf(e, "paused-ms", "%ld", p->paused_ms);
    if (p->frozen_ms >= 0) vm_xml_setf(e, "frozen-ms", "%ld", p->frozen_ms);
  }
  return doc;
}

int snaps_save_records(virDomainPtr dom, const struct snaps *s, const struct snap *skip)
{
  CLEANUP_XMLDOC xmlDocPtr doc = snaps_records_doc(s, skip);
  return vm_meta_write(dom, SNAP_META_NS, SNAP_META_PREFIX, doc);
}

bool libvirt_handles_external(virConnectPtr conn)
{
  unsigned long ver = 0;
  /* libvirt reverts external snapshots from 9.9.0 on. */
  return virConnectGetLibVersion(conn, &ver) == 0 && ver >= 9009000;
}

int overlay_path(virConnectPtr conn, const char *vm, const char *target, const char *current, const char *label,
                 char **out)
{
  *out = NULL;
  CLEANUP_FREE char *dir = NULL;
  /* Nothing of a VM's goes into a template's pool: beside the disk, else into the
   * pool new disks go to. */
  if (vm_image_is_template(conn, current)) {
    CLEANUP_VIRPOOL virStoragePoolPtr pool = NULL;
    int rc = vm_pool_open(conn, vm_default_pool(), &pool);
    if (rc) return rc;
    if (!(dir = vm_pool_target(pool))) return vm_fail_virt("cannot read storage pool '%s'", vm_default_pool());
  } else {
    CLEANUP_FREE char *copy = vm_strdup(current);
    dir = vm_strdup(dirname(copy));
  }
  *out = vm_strdup_printf("%s/%s-%s.%s.qcow2", dir, vm, target, label);
  return 0;
}
