/* vmsnap delete and prune. An internal snapshot is libvirt's to delete. An
 * external one froze an image B for each disk; deleting it lets B change again:
 * the one image standing on B (its child C) is merged into B (block commit while
 * the VM runs, qemu-img commit when it is shut off), C goes, and whatever stood on
 * C, the running disk or a later snapshot's frozen image, stands on B instead.
 * B is never written when it is a template or when other VMs, or other branches
 * of this VM's tree, stand on it: then only the record goes, or the delete is
 * refused with the reason. */
#include <limits.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "vmsnap.h"
#include "chain.h"

/* One disk's merge, planned before any disk is touched. */
struct merge {
  const char *target;
  char base[PATH_MAX], child[PATH_MAX];
  const char *base_format;
  char *grandchild;  /* what stood on child, NULL when child is the running disk */
  bool child_active; /* the child is the disk's current top */
  bool skip;         /* nothing to merge (or kept on purpose) */
  bool orphan;       /* nothing stands on base any more: it goes with the snapshot */
};

/* Is file the frozen image of a snapshot other than s? */
static bool base_of_other(const struct snaps *all, const struct snap *s, const char *file)
{
  for (size_t i = 0; i < all->n; i++) {
    if (&all->v[i] == s) continue;
    for (size_t j = 0; j < all->v[i].ndisks; j++) {
      char real[PATH_MAX];
      const char *b = all->v[i].disks[j].base;
      if (b && realpath(b, real) && strcmp(real, file) == 0) return true;
    }
  }
  return false;
}

static int plan_merge(virConnectPtr conn, virDomainPtr dom, const struct graph *g, const struct snaps *all,
                      const struct snap *s, const struct snap_disk *d, const char *active, struct merge *m)
{
  const char *vm = virDomainGetName(dom);
  memset(m, 0, sizeof *m);
  m->target = d->target;
  if (!d->base || !realpath(d->base, m->base)) {
    m->skip = true; /* the frozen image is gone already: only the record is left */
    return 0;
  }
  struct vm_strv kids = { 0 };
  graph_children(g, m->base, &kids);
  if (kids.n != 1) {
    if (kids.n > 1) vm_info("keeping '%s': %zu images stand on it", m->base, kids.n);
    /* A frozen image left alone by a revert: garbage once its snapshot goes, if it
     * is this VM's own and nothing else needs it. */
    struct vm_strv users = { 0 };
    if (kids.n == 0 && !(active && strcmp(active, m->base) == 0) && !base_of_other(all, s, m->base) &&
        vm_image_named_for(m->base, vm) && !vm_image_is_template(m->base) &&
        vm_image_users(conn, m->base, vm, &users) == 0 && users.n == 0)
      m->orphan = true;
    vm_strv_free(&users);
    vm_strv_free(&kids);
    m->skip = true;
    return 0;
  }
  snprintf(m->child, sizeof m->child, "%s", kids.v[0]);
  vm_strv_free(&kids);
  if (vm_image_is_template(m->base))
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
  const struct edge *be = graph_find(g, m->base);
  m->base_format = be ? be->format : "qcow2";
  m->child_active = active && strcmp(active, m->child) == 0;
  if (!m->child_active) {
    struct vm_strv gk = { 0 };
    graph_children(g, m->child, &gk);
    if (gk.n > 1) {
      vm_strv_free(&gk);
      return vm_fail(VM_EXIT_STATE, "cannot delete snapshot '%s' of '%s': %zu images stand on '%s'", s->name, vm,
                     gk.n, m->child);
    }
    m->grandchild = gk.n ? strdup(gk.v[0]) : NULL;
    vm_strv_free(&gk);
  }
  return 0;
}

static int run_merge(virConnectPtr conn, virDomainPtr dom, const struct merge *m, struct vm_strv *retarget)
{
  const char *vm = virDomainGetName(dom);
  if (virDomainIsActive(dom) == 1) {
    unsigned flags = m->child_active ? VIR_DOMAIN_BLOCK_COMMIT_ACTIVE : 0;
    if (virDomainBlockCommit(dom, m->target, m->base, m->child, 0, flags) < 0)
      return vm_fail_virt("cannot merge '%s' into '%s' on %s of '%s'", m->child, m->base, m->target, vm);
    int rc = wait_block_job(dom, m->target, m->child_active);
    vm_progress_end();
    return rc;
  }
  char *commit[] = { "qemu-img", "commit", "-q", "-f", "qcow2", (char *)m->child, NULL };
  int rc = vm_run_checked(commit, NULL);
  if (rc) return rc;
  if (m->child_active) {
    vm_strv_add(retarget, m->target);
    vm_strv_add(retarget, m->base);
    vm_strv_add(retarget, m->base_format);
  } else if (m->grandchild) {
    char *rebase[] = { "qemu-img", "rebase", "-q", "-u", "-F", (char *)m->base_format, "-b", (char *)m->base,
                       m->grandchild, NULL };
    rc = vm_run_checked(rebase, NULL);
  }
  return rc;
}

/* Later snapshots that froze the merged-away child froze the base now (in their
 * XML here; written to libvirt by redefine_records). */
static void repoint_snapshots(struct snaps *s, const struct merge *m)
{
  for (size_t i = 0; i < s->n; i++) {
    struct snap *p = &s->v[i];
    bool changed = false;
    CLEANUP_XMLDOC xmlDocPtr doc = vm_xml_parse(p->xml);
    if (!doc) continue;
    CLEANUP_XPATHCTX xmlXPathContextPtr x = vm_xpath_ctx(doc);
    CLEANUP_FREE char *e = vm_strdup_printf(
      "/domainsnapshot/domain/devices/disk[target/@dev='%s']/source | "
      "/domainsnapshot/inactiveDomain/devices/disk[target/@dev='%s']/source", m->target, m->target);
    CLEANUP_XPATHOBJ xmlXPathObjectPtr o = vm_xpath_nodes(x, e);
    for (int j = 0; o && o->nodesetval && j < o->nodesetval->nodeNr; j++) {
      CLEANUP_FREE char *f = vm_xml_prop(o->nodesetval->nodeTab[j], "file");
      char real[PATH_MAX];
      if (!f || !realpath(f, real) || strcmp(real, m->child) != 0) continue;
      vm_xml_set(o->nodesetval->nodeTab[j], "file", m->base);
      changed = true;
    }
    if (!changed) continue;
    /* The copies of the domain lose their stale chains too. */
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

/* After the record of `gone` is deleted, its children hang from its parent. And
 * libvirt 9.0, deleting an external snapshot's record, rewrites its children's
 * copies of the domain with its own: every record this delete means to keep is
 * written back as vmsnap has it. */
static int redefine_records(virDomainPtr dom, struct snaps *s, const struct snap *gone)
{
  int rc = 0;
  for (size_t i = 0; i < s->n; i++) {
    struct snap *p = &s->v[i];
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
    unsigned flags = VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE | (p->current ? VIR_DOMAIN_SNAPSHOT_CREATE_CURRENT : 0);
    virDomainSnapshotPtr r = virDomainSnapshotCreateXML(dom, xml, flags);
    if (!r) rc = vm_fail_virt("cannot write back the record of snapshot '%s'", p->name);
    else virDomainSnapshotFree(r);
  }
  return rc;
}

static int delete_one(virConnectPtr conn, virDomainPtr dom, struct snaps *s, struct snap *p, bool metadata_only);

/* Deletes a snapshot and drops vmsnap's record of it with libvirt's. */
int snap_delete(virConnectPtr conn, virDomainPtr dom, struct snaps *s, const char *name, bool metadata_only)
{
  struct snap *p;
  int rc = snap_lookup(s, virDomainGetName(dom), name, &p);
  if (rc || (rc = vm_domain_idle(dom, "delete a snapshot of"))) return rc;
  rc = delete_one(conn, dom, s, p, metadata_only);
  if (rc == 0 && snaps_save_records(dom, s, p) != 0)
    vm_warn("the snapshot records of '%s' may be stale", virDomainGetName(dom));
  return rc;
}

static int delete_one(virConnectPtr conn, virDomainPtr dom, struct snaps *s, struct snap *p, bool metadata_only)
{
  const char *vm = virDomainGetName(dom), *name = p->name;
  int rc = 0;

  if (metadata_only || !p->external) {
    unsigned flags = metadata_only ? VIR_DOMAIN_SNAPSHOT_DELETE_METADATA_ONLY : 0;
    if (virDomainSnapshotDelete(p->ptr, flags) < 0)
      return vm_fail_virt("cannot delete snapshot '%s' of '%s'", name, vm);
    return p->external ? redefine_records(dom, s, p) : 0;
  }

  /* Plan every disk first: a refusal must leave everything as it was. */
  struct graph g;
  if ((rc = graph_of_vm(dom, s, &g))) return rc;
  CLEANUP_XMLDOC xmlDocPtr now = vm_domain_doc(dom, virDomainIsActive(dom) == 1 ? 0 : VIR_DOMAIN_XML_INACTIVE);
  struct vm_disk *cur = NULL;
  size_t ncur = 0;
  if (now) vm_domain_disks(now, &cur, &ncur);
  struct merge *m = calloc(p->ndisks + 1, sizeof *m);
  size_t nm = 0;
  for (size_t i = 0; i < p->ndisks && rc == 0; i++) {
    if (strcmp(p->disks[i].mode, "external") != 0) continue;
    char active[PATH_MAX] = "";
    for (size_t j = 0; j < ncur; j++)
      if (cur[j].target && cur[j].source && strcmp(cur[j].target, p->disks[i].target) == 0)
        if (!realpath(cur[j].source, active)) active[0] = '\0';
    rc = plan_merge(conn, dom, &g, s, p, &p->disks[i], active[0] ? active : NULL, &m[nm++]);
  }
  vm_disks_free(cur, ncur);

  struct vm_strv retarget = { 0 }, merged = { 0 }, orphans = { 0 };
  vm_catch_signals();
  for (size_t i = 0; i < nm && rc == 0; i++) {
    if (m[i].orphan) vm_strv_add(&orphans, m[i].base);
    if (m[i].skip) continue;
    if (vm_interrupted()) rc = vm_fail(VM_EXIT_FAIL, "interrupted before merging %s of '%s'", m[i].target, vm);
    else if ((rc = run_merge(conn, dom, &m[i], &retarget)) == 0) {
      vm_strv_add(&merged, m[i].child);
      repoint_snapshots(s, &m[i]);
    }
  }
  /* Once one disk is merged the snapshot's state is gone: its record goes even
   * when a later disk failed, so that it never promises what it lost. The
   * persistent definition gets new sources where a shut-off disk was merged down,
   * and no stale chains anywhere. */
  if (rc == 0 || merged.n) {
    int r = redefine_without_backing(conn, dom, retarget.v);
    if (r == 0 && virDomainSnapshotDelete(p->ptr, VIR_DOMAIN_SNAPSHOT_DELETE_METADATA_ONLY) < 0)
      r = vm_fail_virt("cannot delete the record of snapshot '%s' of '%s'", name, vm);
    if (r == 0) r = redefine_records(dom, s, p);
    if (rc && r == 0)
      vm_warn("snapshot '%s' of '%s' was merged on %zu disk%s before the failure: its record is removed", name, vm,
              merged.n, merged.n == 1 ? "" : "s");
    if (r == 0) {
      for (size_t i = 0; i < orphans.n; i++)
        if (unlink(orphans.v[i]) < 0) vm_warn("cannot remove '%s'", orphans.v[i]);
      if (p->memfile && strcmp(p->memory, "external") == 0 && unlink(p->memfile) < 0)
        vm_warn("cannot remove memory file '%s'", p->memfile);
    }
    if (rc == 0) rc = r;
  }
  /* A merged-away image is in no chain any more, whatever happened after. */
  for (size_t i = 0; i < merged.n; i++)
    if (unlink(merged.v[i]) < 0) vm_warn("cannot remove merged image '%s'", merged.v[i]);
  for (size_t i = 0; i < nm; i++) free(m[i].grandchild);
  free(m);
  vm_strv_free(&retarget);
  vm_strv_free(&merged);
  vm_strv_free(&orphans);
  graph_free(&g);
  return rc;
}

/* Each delete sees the chain and records the one before it left. */
static int delete_named(virConnectPtr conn, virDomainPtr dom, const char *name, bool metadata_only)
{
  struct snaps s;
  int rc = snaps_load(dom, &s);
  if (rc == 0) rc = snap_delete(conn, dom, &s, name, metadata_only);
  snaps_free(&s);
  if (rc == 0) vm_info("deleted snapshot '%s' of '%s'", name, virDomainGetName(dom));
  return rc;
}

static int o_metadata;

int cmd_delete(int argc, char **argv)
{
  struct poptOption table[] = {
    { "metadata", '\0', POPT_ARG_NONE, &o_metadata, 0, "remove only libvirt's record; leave every image as it is", NULL },
    VM_POPT_COMMON, POPT_TABLEEND
  };
  CLEANUP_POPT poptContext ctx = NULL;
  const char **args;
  int nargs;
  int rc = vm_parse(&ctx, argc, argv, table, "VM SNAPSHOT...",
                    "Delete snapshots, merging external overlays so the chains stay whole.", 2, -1, &args, &nargs);
  if (rc) return rc == VM_DONE ? 0 : rc;
  CLEANUP_VIRCONN virConnectPtr conn = NULL;
  CLEANUP_VIRDOMAIN virDomainPtr dom = NULL;
  if ((rc = vm_open(args[0], &conn, &dom))) return rc;
  for (int i = 1; i < nargs && rc == 0; i++) rc = delete_named(conn, dom, args[i], o_metadata);
  return rc;
}

static int by_age(const void *a, const void *b)
{
  const struct snap *x = *(struct snap *const *)a, *y = *(struct snap *const *)b;
  return x->created < y->created ? -1 : x->created > y->created ? 1 : strcmp(x->name, y->name);
}

int cmd_prune(int argc, char **argv)
{
  char *keep_s = NULL, *keep_within = NULL;
  int dry_run = 0;
  struct poptOption table[] = {
    { "keep", 'k', POPT_ARG_STRING, &keep_s, 0, "keep the N newest snapshots", "N" },
    { "keep-within", '\0', POPT_ARG_STRING, &keep_within, 0, "keep snapshots younger than DURATION (30m, 12h, 7d, 2w)", "DURATION" },
    { "dry-run", 'n', POPT_ARG_NONE, &dry_run, 0, "print what would be deleted; delete nothing", NULL },
    VM_POPT_COMMON, POPT_TABLEEND
  };
  CLEANUP_POPT poptContext ctx = NULL;
  const char **args;
  int nargs;
  int rc = vm_parse(&ctx, argc, argv, table, "VM",
                    "Delete a VM's oldest snapshots, keeping the newest N and those within DURATION;\n"
                    "the current snapshot is always kept.", 1, 1, &args, &nargs);
  if (rc) return rc == VM_DONE ? 0 : rc;
  int64_t within = -1, keep = -1;
  uint64_t k;
  if (keep_s) {
    if (vm_parse_uint(keep_s, 0, 100000, &k) < 0) return vm_usage_error("invalid --keep '%s'", keep_s);
    keep = (int64_t)k;
  }
  if (keep_within && vm_parse_duration(keep_within, &within) < 0)
    return vm_usage_error("invalid --keep-within '%s': expected a number with s, m, h, d or w", keep_within);
  if (keep < 0 && within < 0) return vm_usage_error("say what to keep: --keep N and/or --keep-within DURATION");

  CLEANUP_VIRCONN virConnectPtr conn = NULL;
  CLEANUP_VIRDOMAIN virDomainPtr dom = NULL;
  if ((rc = vm_open(args[0], &conn, &dom))) return rc;
  struct snaps s;
  if ((rc = snaps_load(dom, &s))) return rc;
  struct snap **byage = calloc(s.n + 1, sizeof *byage);
  for (size_t i = 0; i < s.n; i++) byage[i] = &s.v[i];
  qsort(byage, s.n, sizeof *byage, by_age);
  struct vm_strv doomed = { 0 };
  time_t now = time(NULL);
  for (size_t i = 0; i < s.n; i++) {
    const struct snap *p = byage[i];
    bool kept = p->current || (keep >= 0 && (int64_t)(s.n - i) <= keep) ||
                (within >= 0 && (int64_t)(now - p->created) < within);
    if (!kept) vm_strv_add(&doomed, p->name);
  }
  free(byage);
  snaps_free(&s);

  /* Oldest first. */
  for (size_t i = 0; i < doomed.n && rc == 0; i++) {
    if (dry_run) printf("%s\n", doomed.v[i]);
    else rc = delete_named(conn, dom, doomed.v[i], false);
  }
  vm_strv_free(&doomed);
  return rc;
}
