/* Deleting a snapshot (vm_snap_delete), for vmsnap delete and prune. An internal snapshot is libvirt's to delete. An
 * external one froze an image B for each disk; deleting it lets B change again:
 * the one image standing on B (its child C) is merged into B by QEMU (a block
 * commit in the running VM, or in a paused helper domain when the VM is shut off),
 * C goes, and whatever stood on C, the running disk or a later snapshot's frozen
 * image, stands on B instead. B is never written when it is a template or when
 * other VMs, or other branches of this VM's tree, stand on it: then only the
 * record goes, or the delete is refused with the reason.
 *
 * Once a merge has begun, B no longer holds the snapshot's state: a delete can only
 * go forward. So the whole delete is planned first and written into the VM's
 * journal (the merges, the snapshot records to write back, the files to remove),
 * then carried out step by step, each step checking what is done already:
 * delete_execute() is also how the next vmsnap run finishes a killed delete. */
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "snap.h"
#include "chain.h"

/* One disk's merge, planned before any disk is touched. */
struct merge {
  const char *target;
  char *base, *child, *top;  /* top: the leaf of the chain the child is in */
  char *base_format, *top_format;
  bool skip;   /* nothing to merge (or kept on purpose) */
  bool orphan; /* nothing stands on base any more: it goes with the snapshot */
};

static void merge_free(struct merge *m)
{
  free(m->base);
  free(m->child);
  free(m->top);
  free(m->base_format);
  free(m->top_format);
}

/* Is file the frozen image of a snapshot other than s? */
static bool base_of_other(const struct snaps *all, const struct snap *s, const char *file)
{
  for (size_t i = 0; i < all->n; i++) {
    if (&all->v[i] == s) continue;
    for (size_t j = 0; j < all->v[i].ndisks; j++) {
      const char *b = all->v[i].disks[j].base;
      if (b && strcmp(b, file) == 0) return true;
    }
  }
  return false;
}

/* The leaf above file, following the one image standing on each: NULL (after a
 * message) where several do. */
static char *leaf_above(const struct graph *g, const char *file, const char *snap, const char *vm)
{
  char *cur = vm_strdup(file);
  for (int depth = 0; depth < 1024; depth++) {
    struct vm_strv kids = { 0 };
    graph_children(g, cur, &kids);
    if (kids.n == 0) {
      vm_strv_free(&kids);
      return cur;
    }
    if (kids.n > 1) {
      vm_fail(VM_EXIT_STATE, "cannot delete snapshot '%s' of '%s': %zu images stand on '%s'", snap, vm, kids.n, cur);
      vm_strv_free(&kids);
      free(cur);
      return NULL;
    }
    free(cur);
    cur = vm_strdup(kids.v[0]);
    vm_strv_free(&kids);
  }
  return cur;
}

static int plan_merge(virConnectPtr conn, virDomainPtr dom, const struct graph *g, const struct snaps *all,
                      const struct snap *s, const struct snap_disk *d, const char *active, struct merge *m)
{
  const char *vm = virDomainGetName(dom);
  memset(m, 0, sizeof *m);
  m->target = d->target;
  if (!d->base || !graph_find(g, d->base)) {
    m->skip = true; /* the frozen image is gone already: only the record is left */
    return 0;
  }
  m->base = vm_strdup(d->base);
  struct vm_strv kids = { 0 };
  graph_children(g, m->base, &kids);
  if (kids.n != 1) {
    if (kids.n > 1) vm_info("keeping '%s': %zu images stand on it", m->base, kids.n);
    /* A frozen image left alone by a revert: garbage once its snapshot goes, if it
     * is this VM's own and nothing else needs it. */
    struct vm_strv users = { 0 };
    if (kids.n == 0 && !(active && strcmp(active, m->base) == 0) && !base_of_other(all, s, m->base) &&
        vm_image_named_for(m->base, vm) && !vm_image_is_template(conn, m->base) &&
        vm_image_users(conn, m->base, vm, &users) == 0 && users.n == 0)
      m->orphan = true;
    vm_strv_free(&users);
    vm_strv_free(&kids);
    m->skip = true;
    return 0;
  }
  m->child = vm_strdup(kids.v[0]);
  vm_strv_free(&kids);
  if (vm_image_is_template(conn, m->base))
    return vm_fail(VM_EXIT_STATE, "cannot delete snapshot '%s' of '%s': merging %s would write into template image '%s' "
                   "(use --metadata to drop only the record)", s->name, vm, d->target, m->base);
  struct vm_strv users = { 0 };
  int rc = vm_image_users(conn, m->base, vm, &users);
  if (rc == 0 && users.n)
    rc = vm_fail(VM_EXIT_STATE, "cannot delete snapshot '%s' of '%s': merging %s would write into '%s', which VM '%s' "
                 "stands on (use --metadata to drop only the record)", s->name, vm, d->target, m->base, users.v[0]);
  vm_strv_free(&users);
  if (rc) return rc;
  users = (struct vm_strv){ 0 };
  if ((rc = vm_image_users(conn, m->child, vm, &users)) == 0 && users.n)
    rc = vm_fail(VM_EXIT_STATE, "cannot delete snapshot '%s' of '%s': VM '%s' stands on '%s'", s->name, vm,
                 users.v[0], m->child);
  vm_strv_free(&users);
  if (rc) return rc;
  if (!(m->top = leaf_above(g, m->child, s->name, vm))) return VM_EXIT_STATE;
  const struct edge *be = graph_find(g, m->base), *te = graph_find(g, m->top);
  m->base_format = vm_strdup(be ? be->format : "qcow2");
  m->top_format = vm_strdup(te ? te->format : "qcow2");
  return 0;
}

/* Later snapshots that froze the merged-away child froze the base now; the copies
 * of the domain lose their stale chains too. Changes the XML in s. */
static void repoint_snapshots(struct snaps *s, const struct merge *m)
{
  for (size_t i = 0; i < s->n; i++) {
    struct snap *p = &s->v[i];
    bool changed = false;
    CLEANUP_XMLDOC xmlDocPtr doc = vm_xml_parse(p->xml);
    if (!doc) continue;
    CLEANUP_XPATHCTX xmlXPathContextPtr x = vm_xpath_ctx(doc);
    CLEANUP_FREE char *lit = vm_xpath_literal(m->target);
    CLEANUP_FREE char *e = vm_strdup_printf(
      "/domainsnapshot/domain/devices/disk[target/@dev=%s]/source | "
      "/domainsnapshot/inactiveDomain/devices/disk[target/@dev=%s]/source", lit, lit);
    CLEANUP_XPATHOBJ xmlXPathObjectPtr o = vm_xpath_nodes(x, e);
    for (int j = 0; o && o->nodesetval && j < o->nodesetval->nodeNr; j++) {
      CLEANUP_FREE char *f = vm_xml_prop(o->nodesetval->nodeTab[j], "file");
      if (!f || strcmp(f, m->child) != 0) continue;
      vm_xml_set(o->nodesetval->nodeTab[j], "file", m->base);
      changed = true;
    }
    if (!changed) continue;
    CLEANUP_XPATHOBJ xmlXPathObjectPtr bs = vm_xpath_nodes(x, "//devices/disk/backingStore");
    for (int j = 0; bs && bs->nodesetval && j < bs->nodesetval->nodeNr; j++) {
      xmlUnlinkNode(bs->nodesetval->nodeTab[j]);
      xmlFreeNode(bs->nodesetval->nodeTab[j]);
      bs->nodesetval->nodeTab[j] = NULL;
    }
    free(p->xml);
    p->xml = vm_xml_dump(doc);
    p->dirty = true;
  }
}

/* The records this delete writes back once the snapshot's own is gone: its children
 * hang from its parent, and (libvirt 9.0 rewrites the children's copies of the
 * domain with the deleted snapshot's) every record this delete means to keep is
 * written back as vmsnap has it. */
static void add_rewrites(xmlNodePtr root, const struct snaps *s, const struct snap *gone)
{
  for (size_t i = 0; i < s->n; i++) {
    const struct snap *p = &s->v[i];
    if (p == gone) continue;
    bool child = p->parent && strcmp(p->parent, gone->name) == 0;
    if (!child && !p->dirty) continue;
    CLEANUP_XMLDOC xmlDocPtr doc = vm_xml_parse(p->xml);
    if (!doc) continue;
    if (child) {
      CLEANUP_XPATHCTX xmlXPathContextPtr x = vm_xpath_ctx(doc);
      CLEANUP_XPATHOBJ xmlXPathObjectPtr o = vm_xpath_nodes(x, "/domainsnapshot/parent");
      for (int j = 0; o && o->nodesetval && j < o->nodesetval->nodeNr; j++) {
        xmlNodePtr parent = o->nodesetval->nodeTab[j];
        if (gone->parent) {
          xmlNodePtr name = xmlFirstElementChild(parent);
          if (name) xmlNodeSetContent(name, BAD_CAST gone->parent);
        } else {
          xmlUnlinkNode(parent);
          xmlFreeNode(parent);
          o->nodesetval->nodeTab[j] = NULL;
        }
      }
    }
    CLEANUP_FREE char *xml = vm_xml_dump(doc);
    xmlNodePtr r = vm_xml_child(root, "rewrite", xml);
    vm_xml_set(r, "name", p->name);
    if (p->current) vm_xml_set(r, "current", "yes");
  }
}

/* ---- carrying out a delete from its record --------------------------------------------- */

/* The image chain of a disk as the definition names it: the live one's from its
 * XML, the persistent one's from the images. */
static void disk_chain(virConnectPtr conn, virDomainPtr dom, const char *target, bool live, struct vm_strv *chain)
{
  CLEANUP_XMLDOC xmlDocPtr doc = vm_domain_doc(dom, live ? 0 : VIR_DOMAIN_XML_INACTIVE);
  if (!doc) return;
  CLEANUP_XPATHCTX xmlXPathContextPtr x = vm_xpath_ctx(doc);
  CLEANUP_FREE char *lit = vm_xpath_literal(target);
  CLEANUP_FREE char *e = vm_strdup_printf("/domain/devices/disk[target/@dev=%s]/source/@file", lit);
  CLEANUP_FREE char *src = vm_xpath_str(x, e);
  if (!src) return;
  if (live) {
    vm_strv_add(chain, src);
    CLEANUP_FREE char *eb = vm_strdup_printf("/domain/devices/disk[target/@dev=%s]//backingStore/source/@file", lit);
    CLEANUP_XPATHOBJ xmlXPathObjectPtr o = vm_xpath_nodes(x, eb);
    for (int i = 0; o && o->nodesetval && i < o->nodesetval->nodeNr; i++) {
      CLEANUP_XMLFREE xmlChar *f = xmlNodeGetContent(o->nodesetval->nodeTab[i]);
      if (f) vm_strv_add(chain, (const char *)f);
    }
    return;
  }
  if (vm_image_chain(conn, src, chain) != 0) virResetLastError();
}

/* Does anything stand on the merge's child still (a disk, or another image)? */
static bool merge_pending(virConnectPtr conn, virDomainPtr dom, const char *target, const char *child)
{
  for (int live = 1; live >= 0; live--) {
    if (live && virDomainIsActive(dom) != 1) continue;
    if (!live && virDomainIsPersistent(dom) != 1) continue;
    struct vm_strv chain = { 0 };
    disk_chain(conn, dom, target, live, &chain);
    bool in = vm_strv_contains(chain.v, child);
    vm_strv_free(&chain);
    if (in) return true;
  }
  /* Another branch: a snapshot's frozen image standing on the child. */
  struct snaps s;
  if (snaps_load(dom, &s) != 0) return true;
  struct graph g;
  bool pending = true;
  if (graph_of_vm(conn, dom, &s, &g) == 0) {
    struct vm_strv kids = { 0 };
    graph_children(&g, child, &kids);
    pending = kids.n > 0;
    vm_strv_free(&kids);
    graph_free(&g);
  }
  snaps_free(&s);
  return pending;
}

static int run_merge(virConnectPtr conn, virDomainPtr dom, xmlNodePtr m)
{
  const char *vm = virDomainGetName(dom);
  CLEANUP_FREE char *target = vm_xml_prop(m, "target"), *base = vm_xml_prop(m, "base"), *child = vm_xml_prop(m, "child");
  CLEANUP_FREE char *top = vm_xml_prop(m, "top"), *top_format = vm_xml_prop(m, "top-format");
  CLEANUP_FREE char *base_format = vm_xml_prop(m, "base-format");
  if (!target || !base || !child || !top) return vm_fail(VM_EXIT_FAIL, "a merge record of '%s' is incomplete", vm);
  if (!merge_pending(conn, dom, target, child)) return 0;

  if (virDomainIsActive(dom) == 1) {
    struct vm_strv chain = { 0 };
    disk_chain(conn, dom, target, true, &chain);
    bool in_live = vm_strv_contains(chain.v, child);
    bool active = chain.n && strcmp(chain.v[0], child) == 0;
    vm_strv_free(&chain);
    if (in_live) {
      /* A merge that a killed run started may still be running, or wait at 100 %
       * for its pivot: it is carried on, not started again. */
      virDomainBlockJobInfo info;
      int r = virDomainGetBlockJobInfo(dom, target, &info, 0);
      if (r < 0) return vm_fail_virt("cannot read the block jobs of %s of '%s'", target, vm);
      if (r == 1 && info.type != VIR_DOMAIN_BLOCK_JOB_TYPE_COMMIT && info.type != VIR_DOMAIN_BLOCK_JOB_TYPE_ACTIVE_COMMIT)
        return vm_fail(VM_EXIT_STATE, "cannot merge %s of '%s': another block job runs on it", target, vm);
      if (r == 0 &&
          virDomainBlockCommit(dom, target, base, child, 0, active ? VIR_DOMAIN_BLOCK_COMMIT_ACTIVE : 0) < 0)
        return vm_fail_virt("cannot merge '%s' into '%s' on %s of '%s'", child, base, target, vm);
      int rc = wait_block_job(dom, target, active);
      vm_progress_end();
      vm_storage_changed();
      if (rc) return rc;
      /* The next boot stands on the base too. */
      if (active && virDomainIsPersistent(dom) == 1) {
        struct vm_strv pchain = { 0 };
        disk_chain(conn, dom, target, false, &pchain);
        bool stale = pchain.n && strcmp(pchain.v[0], child) == 0;
        vm_strv_free(&pchain);
        char *retarget[] = { target, base, base_format, NULL };
        if (stale) return redefine_without_backing(conn, dom, retarget);
      }
      return 0;
    }
  }
  /* The VM is shut off (or the child is in a branch the running VM does not use). */
  struct vm_strv chain = { 0 };
  if (virDomainIsPersistent(dom) == 1) disk_chain(conn, dom, target, false, &chain);
  bool in_def = vm_strv_contains(chain.v, child);
  bool active = in_def && strcmp(chain.v[0], child) == 0;
  if (in_def && virDomainIsActive(dom) == 1) {
    /* Running on the base already (a pivot whose run was killed before it wrote
     * the next boot's definition): only the definition is behind. A merge here
     * would write an old child over what the VM wrote since. */
    vm_strv_free(&chain);
    if (!active)
      return vm_fail(VM_EXIT_STATE, "the running VM '%s' and its definition disagree about %s: stop it, then run "
                     "vmsnap again", vm, target);
    char *retarget[] = { target, base, base_format, NULL };
    return redefine_without_backing(conn, dom, retarget);
  }
  CLEANUP_FREE char *htop = vm_strdup(in_def ? chain.v[0] : top);
  vm_strv_free(&chain);
  struct vm_imginfo ti;
  const char *hfmt = top_format;
  CLEANUP_FREE char *fmt = NULL;
  if (vm_image_info(conn, htop, &ti) == 0) {
    fmt = vm_strdup(ti.format);
    hfmt = fmt;
    vm_imginfo_free(&ti);
  }
  int rc = offline_commit(conn, dom, htop, hfmt, base, child);
  if (rc) return rc;
  if (active) {
    char *retarget[] = { target, base, base_format, NULL };
    return redefine_without_backing(conn, dom, retarget);
  }
  return 0;
}

int delete_execute(virConnectPtr conn, virDomainPtr dom, xmlDocPtr rec)
{
  const char *vm = virDomainGetName(dom);
  CLEANUP_FREE char *name = journal_snapshot(rec);
  if (!name) return vm_fail(VM_EXIT_FAIL, "a delete record of '%s' names no snapshot", vm);
  xmlNodePtr root = xmlDocGetRootElement(rec);
  int rc = 0;
  size_t merged = 0;
  /* The merges, in order; each one checks whether it is done already. */
  for (xmlNodePtr c = root->children; c && rc == 0; c = c->next) {
    if (c->type != XML_ELEMENT_NODE || xmlStrcmp(c->name, BAD_CAST "merge") != 0) continue;
    if (vm_interrupted()) rc = vm_fail_interrupted();
    else rc = run_merge(conn, dom, c);
    if (rc == 0) merged++;
  }
  if (rc) {
    vm_warn("the delete of snapshot '%s' of '%s' stopped after %zu merge%s: the next vmsnap run on '%s' finishes it",
            name, vm, merged, merged == 1 ? "" : "s", vm);
    return rc;
  }
  /* libvirt keeps <backingStore> in a persistent definition and trusts it. */
  if ((rc = redefine_without_backing(conn, dom, NULL))) return rc;
  virDomainSnapshotPtr snap = virDomainSnapshotLookupByName(dom, name, 0);
  if (snap) {
    if (virDomainSnapshotDelete(snap, VIR_DOMAIN_SNAPSHOT_DELETE_METADATA_ONLY) < 0)
      rc = vm_fail_virt("cannot delete the record of snapshot '%s' of '%s'", name, vm);
    virDomainSnapshotFree(snap);
    if (rc) return rc;
  } else {
    virResetLastError();
  }
  for (xmlNodePtr c = root->children; c && rc == 0; c = c->next) {
    if (c->type != XML_ELEMENT_NODE || xmlStrcmp(c->name, BAD_CAST "rewrite") != 0) continue;
    CLEANUP_XMLFREE xmlChar *xml = xmlNodeGetContent(c);
    CLEANUP_FREE char *cur = vm_xml_prop(c, "current"), *rname = vm_xml_prop(c, "name");
    unsigned flags = VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE | (cur ? VIR_DOMAIN_SNAPSHOT_CREATE_CURRENT : 0);
    virDomainSnapshotPtr r = xml ? virDomainSnapshotCreateXML(dom, (const char *)xml, flags) : NULL;
    if (!r) rc = vm_fail_virt("cannot write back the record of snapshot '%s'", rname ? rname : "?");
    else virDomainSnapshotFree(r);
  }
  if (rc) return rc;
  /* Files the snapshot made or froze that nothing stands on now. */
  static const char *const roles[] = { "merged", "orphan", "memory" };
  for (size_t r = 0; r < 3; r++) {
    struct vm_strv files = { 0 };
    vm_journal_volumes(rec, roles[r], &files);
    for (size_t i = 0; i < files.n; i++)
      if (vm_path_delete(conn, files.v[i]) != 0) vm_warn("cannot remove '%s'", files.v[i]);
    vm_strv_free(&files);
  }
  /* vmsnap's own record of it goes too. */
  struct snaps s;
  if (snaps_load(dom, &s) == 0) {
    if (snaps_save_records(dom, &s, NULL) != 0) vm_warn("the snapshot records of '%s' may be stale", vm);
    snaps_free(&s);
  }
  return vm_journal_clear(dom);
}

/* Plans the delete of p and writes it into the journal, then carries it out. */
static int delete_one(virConnectPtr conn, virDomainPtr dom, struct snaps *s, struct snap *p, bool metadata_only)
{
  const char *vm = virDomainGetName(dom);
  int rc = 0;
  if (!metadata_only && !p->external) {
    /* libvirt deletes an internal snapshot whole, in the daemon. */
    if (virDomainSnapshotDelete(p->ptr, 0) < 0) return vm_fail_virt("cannot delete snapshot '%s' of '%s'", p->name, vm);
    return 0;
  }
  CLEANUP_XMLDOC xmlDocPtr rec = vm_journal_new("snapshot-delete");
  xmlNodePtr root = xmlDocGetRootElement(rec);
  vm_xml_set(vm_xml_child(root, "snapshot", NULL), "name", p->name);

  struct graph g = { 0 };
  struct merge *m = calloc(p->ndisks + 1, sizeof *m);
  size_t nm = 0;
  if (!metadata_only) {
    /* Plan every disk first: a refusal must leave everything as it was. */
    if ((rc = graph_of_vm(conn, dom, s, &g))) goto out;
    CLEANUP_XMLDOC xmlDocPtr now = vm_domain_doc(dom, virDomainIsActive(dom) == 1 ? 0 : VIR_DOMAIN_XML_INACTIVE);
    struct vm_disk *cur = NULL;
    size_t ncur = 0;
    if (now) vm_domain_disks(now, &cur, &ncur);
    for (size_t i = 0; i < p->ndisks && rc == 0; i++) {
      if (strcmp(p->disks[i].mode, "external") != 0) continue;
      const char *active = NULL;
      for (size_t j = 0; j < ncur; j++)
        if (cur[j].target && cur[j].source && strcmp(cur[j].target, p->disks[i].target) == 0) active = cur[j].source;
      rc = plan_merge(conn, dom, &g, s, p, &p->disks[i], active, &m[nm++]);
    }
    vm_disks_free(cur, ncur);
    if (rc) goto out;
    for (size_t i = 0; i < nm; i++) {
      if (m[i].orphan) vm_journal_add_volume(rec, m[i].base, "orphan");
      if (m[i].skip) continue;
      xmlNodePtr e = vm_xml_child(root, "merge", NULL);
      vm_xml_set(e, "target", m[i].target);
      vm_xml_set(e, "base", m[i].base);
      vm_xml_set(e, "base-format", m[i].base_format);
      vm_xml_set(e, "child", m[i].child);
      vm_xml_set(e, "top", m[i].top);
      vm_xml_set(e, "top-format", m[i].top_format);
      vm_journal_add_volume(rec, m[i].child, "merged");
      repoint_snapshots(s, &m[i]);
    }
    if (p->memfile && strcmp(p->memory, "external") == 0) vm_journal_add_volume(rec, p->memfile, "memory");
  }
  add_rewrites(root, s, p);

  vm_catch_signals();
  if ((rc = vm_journal_write(dom, rec))) goto out;
  rc = delete_execute(conn, dom, rec);
out:
  for (size_t i = 0; i < nm; i++) merge_free(&m[i]);
  free(m);
  graph_free(&g);
  return rc;
}

int snap_delete(virConnectPtr conn, virDomainPtr dom, struct snaps *s, const char *name, bool metadata_only)
{
  struct snap *p;
  int rc = snap_lookup(s, virDomainGetName(dom), name, &p);
  if (rc || (rc = vm_domain_idle(dom, "delete a snapshot of"))) return rc;
  rc = delete_one(conn, dom, s, p, metadata_only);
  /* An internal one: vmsnap's record of it goes here. */
  if (rc == 0 && !p->external && !metadata_only && snaps_save_records(dom, s, p) != 0)
    vm_warn("the snapshot records of '%s' may be stale", virDomainGetName(dom));
  return rc;
}

/* Each delete sees the chain and records the one before it left. */
int vm_snap_delete_with(virConnectPtr conn, virDomainPtr dom, const char *vm, const char *name,
                        const struct vm_snap_delete_opts *o)
{
  bool metadata_only = o && o->metadata_only;
  struct snaps s;
  int rc = snaps_load(dom, &s);
  if (rc == 0) rc = snap_delete(conn, dom, &s, name, metadata_only);
  snaps_free(&s);
  if (rc == 0) vm_info("deleted snapshot '%s' of '%s'", name, virDomainGetName(dom));
  return rc;
}

int vm_snap_delete(virConnectPtr conn, virDomainPtr dom, const char *vm, const char *name)
{
  return vm_snap_delete_with(conn, dom, vm, name, NULL);
}
