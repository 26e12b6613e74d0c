/* vmpatch: the security of the pool. `inventory` lists the packages of VMs,
 * templates and the host (collect.c, through libguestfs); `scan` checks an
 * inventory against an offline OSV feed; the verb `apply` is to come. */
#include <string.h>

#include "vmpatch.h"

static const struct vm_column scan_cols[] = {
  { "target", "TARGET", VM_COL_STR },
  { "package", "PACKAGE", VM_COL_STR },
  { "source", "SOURCE", VM_COL_STR },
  { "installed", "INSTALLED", VM_COL_STR },
  { "fixed", "FIXED", VM_COL_STR },
  { "id", "ADVISORY", VM_COL_STR },
  { "aliases", "ALIASES", VM_COL_STR },
  { "severity", "SEVERITY", VM_COL_STR },
  { "reboot", "REBOOT", VM_COL_BOOL },
  { NULL, NULL, 0 },
};

static char *o_feed, *o_inventory, *o_min_severity;
static int o_fixed_only;

/* Tables and TSV show "none" for no fix and the aliases joined by commas; JSON
 * keeps null and the list. */
static void flatten(json_object *rows)
{
  for (size_t i = 0; i < json_object_array_length(rows); i++) {
    json_object *r = json_object_array_get_idx(rows, i), *v;
    if (json_object_object_get_ex(r, "fixed", &v) && !v)
      json_object_object_add(r, "fixed", json_object_new_string("none"));
    if (json_object_object_get_ex(r, "aliases", &v) && json_object_is_type(v, json_type_array)) {
      struct vm_strv s = { 0 };
      for (size_t k = 0; k < json_object_array_length(v); k++)
        vm_strv_add(&s, json_object_get_string(json_object_array_get_idx(v, k)));
      CLEANUP_FREE char *joined = NULL;
      size_t len = 0;
      FILE *m = open_memstream(&joined, &len);
      for (size_t k = 0; k < s.n; k++) fprintf(m, "%s%s", k ? "," : "", s.v[k]);
      fclose(m);
      json_object_object_add(r, "aliases", json_object_new_string(s.n ? joined : "-"));
      vm_strv_free(&s);
    }
  }
}

static int cmd_scan_run(const char **targets, int ntargets)
{
  struct vmp_scan_opts so = { VMP_SEV_UNKNOWN, o_fixed_only != 0 };
  if (o_min_severity) {
    int s = vmp_sev_parse(o_min_severity);
    if (s < 0)
      return vm_usage_error("invalid --min-severity '%s': expected unknown, low, medium, high or critical",
                            o_min_severity);
    so.min_severity = (enum vmp_sev)s;
  }
  if (!o_feed) return vm_usage_error("--feed PATH is required");
  if (!o_inventory) return vm_usage_error("--inventory FILE is required ('-' for stdin)");

  struct vmp_inventory inv;
  int rc = vmp_inventory_load(o_inventory, &inv);
  if (rc) return rc;
  for (int i = 0; i < ntargets && rc == 0; i++) {
    size_t k;
    for (k = 0; k < inv.n && strcmp(inv.targets[k].name, targets[i]) != 0; k++) {}
    if (k == inv.n) rc = vm_fail(VM_EXIT_NOTFOUND, "no target '%s' in inventory %s", targets[i], o_inventory);
  }
  /* A signal while unzip runs: its scratch folder is removed, the run fails. */
  vm_catch_signals();
  struct vmp_feed feed = { 0 };
  if (rc == 0) rc = vmp_feed_load(o_feed, &feed);
  if (rc == 0 && vm_interrupted()) {
    vmp_feed_free(&feed);
    rc = vm_fail_interrupted();
  }
  if (rc) {
    vmp_inventory_free(&inv);
    return rc;
  }
  CLEANUP_JSON json_object *rows = json_object_new_array();
  size_t found = 0, uncovered = 0;
  for (size_t k = 0; k < inv.n; k++) {
    const struct vmp_target *t = &inv.targets[k];
    bool wanted = ntargets == 0, covered;
    for (int i = 0; i < ntargets && !wanted; i++) wanted = strcmp(t->name, targets[i]) == 0;
    if (!wanted) continue;
    found += vmp_scan_target(&feed, t, &so, rows, &covered);
    if (!covered) {
      (void)vm_fail(VM_EXIT_STATE, "%s '%s' (%s%s%s) not scanned: feed %s has no record for its distribution and release", t->kind,
               t->name, t->os_id, t->os_version ? " " : "", t->os_version ? t->os_version : "", o_feed);
      uncovered++;
    }
  }
  vmp_feed_free(&feed);
  vmp_inventory_free(&inv);
  if (vm_opts.format != VM_FMT_JSON) flatten(rows);
  rc = vm_print_list(rows, scan_cols);
  if (rc) return rc;
  vm_info("%zu vulnerabilit%s found", found, found == 1 ? "y" : "ies");
  /* Vulnerable first (what cron and monitoring act on), then "could not say". */
  return found ? VMP_EXIT_VULNERABLE : uncovered ? VM_EXIT_STATE : VM_EXIT_OK;
}

int cmd_scan(int argc, char **argv)
{
  struct poptOption table[] = {
    { "feed", '\0', POPT_ARG_STRING, &o_feed, 0,
      "the OSV feed: a directory of OSV JSON records, a .zip of them, or one FILE.json (required)", "PATH" },
    { "inventory", '\0', POPT_ARG_STRING, &o_inventory, 0,
      "the packages of each target, a vmpatch-inventory JSON file, '-' for stdin (required)", "FILE" },
    { "min-severity", '\0', POPT_ARG_STRING, &o_min_severity, 0,
      "only advisories of this severity or higher: unknown, low, medium, high, critical (default: unknown)",
      "LEVEL" },
    { "fixed-only", '\0', POPT_ARG_NONE, &o_fixed_only, 0, "only the vulnerabilities that have a fix", NULL },
    VM_POPT_LOCAL, POPT_TABLEEND
  };
  CLEANUP_POPT poptContext ctx = NULL;
  const char **args;
  int nargs;
  int rc = vm_parse(&ctx, argc, argv, table, "[TARGET...]",
                    "Lists the known vulnerabilities of the packages installed on each target of an\n"
                    "inventory (all, or the TARGETs named), from an offline OSV feed. Exits 6 when\n"
                    "something vulnerable is found, else 4 when the feed has no record for a target's\n"
                    "distribution and release, else 0.",
                    0, -1, &args, &nargs);
  if (rc) return rc == VM_DONE ? 0 : rc;
  return cmd_scan_run(args, nargs);
}

static const struct vm_verb verbs[] = {
  { "inventory", cmd_inventory, "the OS and installed packages of VMs, templates and the host, read offline" },
  { "scan", cmd_scan, "known vulnerabilities of what is installed, from an offline OSV feed" },
  { "apply", cmd_apply, "update shut-off VMs from an APT repository, each behind a snapshot, checked after" },
  { NULL, NULL, NULL },
};

int main(int argc, char **argv)
{
  vm_init("vmpatch");
  return vm_dispatch_local(argc, argv, verbs,
                           "Security of the pool: lists the packages of VMs, templates and the host, and scans\n"
                           "them for known vulnerabilities (the verb apply is to come).");
}
