/* vmsnap delete and prune: their options and what prune picks; each delete is
 * vm_snap_delete's (common/snap/delete.c). */
#include <string.h>
#include <time.h>

#include "vmsnap.h"

static int o_metadata;

int cmd_delete(int argc, char **argv)
{
  struct poptOption table[] = {
    { "metadata", '\0', POPT_ARG_NONE, &o_metadata, 0, "remove only libvirt's record; leave every image as it is", NULL },
    VM_POPT_LOCK, VM_POPT_COMMON, POPT_TABLEEND
  };
  CLEANUP_POPT poptContext ctx = NULL;
  const char **args;
  int nargs;
  int rc = vm_parse(&ctx, argc, argv, table, "VM SNAPSHOT...",
                    "Delete snapshots, merging external overlays so the chains stay whole.", 2, -1, &args, &nargs);
  if (rc) return rc == VM_DONE ? 0 : rc;
  CLEANUP_VIRCONN virConnectPtr conn = NULL;
  CLEANUP_VIRDOMAIN virDomainPtr dom = NULL;
  if ((rc = vm_open(args[0], &conn, &dom)) || (rc = vm_snap_lock(conn, &dom, args[0]))) return rc;
  struct vm_snap_delete_opts o = { .metadata_only = o_metadata };
  for (int i = 1; i < nargs && rc == 0; i++) rc = vm_snap_delete_with(conn, dom, args[0], args[i], &o);
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
    VM_POPT_LOCK, VM_POPT_COMMON, POPT_TABLEEND
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
  if (!dry_run && (rc = vm_snap_lock(conn, &dom, args[0]))) return rc;
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
    else rc = vm_snap_delete(conn, dom, args[0], doomed.v[i]);
  }
  vm_strv_free(&doomed);
  return rc;
}
