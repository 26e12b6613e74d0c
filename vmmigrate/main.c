/* vmmigrate: move a VM to another host, live (pre-copy, stop-and-copy, post-copy)
 * or offline, with or without shared storage; pre-flight checks; plans of moves. */
#include <string.h>
#include <unistd.h>

#include "vmmigrate.h"

struct mopts mo;

const char *strategy_name(enum strategy s)
{
  static const char *const names[] = {
    [ST_AUTO] = "auto", [ST_PRECOPY] = "precopy", [ST_STOPCOPY] = "stop-copy",
    [ST_AUTOCONVERGE] = "auto-converge", [ST_POSTCOPY] = "postcopy",
  };
  return names[s];
}

static char *o_strategy, *o_bandwidth, *o_downtime, *o_budget, *o_timeout, *o_plan, *o_parallel;
static int o_offline, o_keep, o_tls, o_check, o_copy_auto, o_copy_all, o_copy_top, o_unsafe;

static struct poptOption table[] = {
  { "strategy", '\0', POPT_ARG_STRING, &o_strategy, 0,
    "auto (default: pre-copy, then a longer pause, auto-converge, post-copy), precopy, stop-copy, "
    "auto-converge or postcopy", "STRATEGY" },
  { "max-downtime", '\0', POPT_ARG_STRING, &o_downtime, 0,
    "the longest pause of the guest allowed at the switch-over (default: 500)", "MS" },
  { "bandwidth", '\0', POPT_ARG_STRING, &o_bandwidth, 0,
    "cap the migration stream at MIB MiB/s (default: no cap)", "MIB" },
  { "precopy-budget", '\0', POPT_ARG_STRING, &o_budget, 0,
    "how long auto lets pre-copy try before post-copy (default: 60)", "SECONDS" },
  { "timeout", '\0', POPT_ARG_STRING, &o_timeout, 0,
    "abort the move after SECONDS and leave the VM where it was (exit 5); once post-copy has "
    "started, the move is let finish", "SECONDS" },
  { "copy-storage", '\0', POPT_ARG_NONE, &o_copy_auto, 0,
    "copy the disks that are not on shared storage: the top image only when the destination "
    "holds its backing files, else the whole chain", NULL },
  { "copy-storage-all", '\0', POPT_ARG_NONE, &o_copy_all, 0,
    "copy them whole: the chain flattened into one image", NULL },
  { "copy-storage-top", '\0', POPT_ARG_NONE, &o_copy_top, 0,
    "copy the top image only: the destination must hold the backing files", NULL },
  { "offline", '\0', POPT_ARG_NONE, &o_offline, 0,
    "move a shut-off VM: its disks (copied unless shared) and definition, verified", NULL },
  { "keep-source", '\0', POPT_ARG_NONE, &o_keep, 0,
    "keep the VM's definition (and copied disks) on the source", NULL },
  { "unsafe", '\0', POPT_ARG_NONE, &o_unsafe, 0,
    "move a live VM even when libvirt calls it unsafe (with a QEMU older than 4.0: a disk on a "
    "network filesystem whose cache is neither none nor directsync)", NULL },
  { "tls", '\0', POPT_ARG_NONE, &o_tls, 0, "encrypt the migration stream (libvirt's TLS migration)", NULL },
  { "check", '\0', POPT_ARG_NONE, &o_check, 0, "run the pre-flight checks only and print each result", NULL },
  { "dest-cpu", '\0', POPT_ARG_STRING, &mo.dest_cpu_file, 0,
    "check the guest's CPU against this recorded host CPU definition (virsh capabilities) "
    "instead of the destination's", "FILE" },
  { "migrate-uri", '\0', POPT_ARG_STRING, &mo.migrate_uri, 0,
    "where the migration stream goes, e.g. tcp://10.0.0.2 (default: the destination's "
    "migrate-uri= tag in the hosts file, else libvirt's choice)", "URI" },
  { "plan", '\0', POPT_ARG_STRING, &o_plan, 0,
    "carry out the moves of a plan, lines 'VM SOURCE DEST' (- for stdin)", "FILE" },
  { "parallel", '\0', POPT_ARG_STRING, &o_parallel, 0, "moves of a plan at once (default: 1)", "N" },
  VM_POPT_LOCK,
  VM_POPT_COMMON,
  POPT_TABLEEND
};

static const char about[] =
  "Move a VM to another host (a host of the hosts file, or a libvirt URI): live by default,\n"
  "peer to peer; the VM is defined on the destination and undefined on the source.\n"
  "\n"
  "Commands:\n"
  "  baseline   the CPU definition every host of the pool can run";

/* Options whose value is the next word, so that the verb can be found after them. */
static bool takes_value(const char *a)
{
  static const char *const with[] = { "-c", "-H", "-o", "--connect", "--hosts", "--output", "--virt-type",
                                      "--strategy", "--max-downtime", "--bandwidth", "--precopy-budget",
                                      "--timeout", "--dest-cpu", "--migrate-uri", "--plan", "--parallel",
                                      "--lock-wait", "--include", NULL };
  return vm_strv_contains((char *const *)with, a);
}

static int parse_ms_or_s(const char *what, const char *s, uint64_t lo, uint64_t hi, int *out)
{
  uint64_t v;
  if (vm_parse_uint(s, lo, hi, &v) < 0)
    return vm_usage_error("invalid %s '%s': expected a number from %llu to %llu", what, s,
                          (unsigned long long)lo, (unsigned long long)hi);
  *out = (int)v;
  return 0;
}

int main(int argc, char **argv)
{
  vm_init("vmmigrate");
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--") == 0) break;
    if (argv[i][0] == '-') {
      if (takes_value(argv[i])) i++;
      continue;
    }
    if (strcmp(argv[i], "baseline") == 0) {
      /* "vmmigrate [OPTIONS] baseline ARGS": the common options go with the verb. */
      char **v = calloc((size_t)argc + 1, sizeof *v);
      v[0] = "vmmigrate baseline";
      int n = 1;
      for (int j = 1; j < argc; j++)
        if (j != i) v[n++] = argv[j];
      int rc = cmd_baseline(n, v);
      free(v);
      return rc;
    }
    break;
  }

  CLEANUP_POPT poptContext ctx = NULL;
  const char **args;
  int nargs;
  mo.copy = COPY_NONE;
  argv[0] = "vmmigrate";
  int rc = vm_parse(&ctx, argc, argv, table, "VM DEST | --plan FILE", about, 0, 2, &args, &nargs);
  if (rc) return rc == VM_DONE ? 0 : rc;
  if (o_copy_auto + o_copy_all + o_copy_top > 1)
    return vm_usage_error("--copy-storage, --copy-storage-all and --copy-storage-top exclude each other");
  mo.copy = o_copy_all ? COPY_ALL : o_copy_top ? COPY_TOP : o_copy_auto ? COPY_AUTO : COPY_NONE;
  mo.strategy = ST_AUTO;
  if (o_strategy) {
    static const enum strategy all[] = { ST_AUTO, ST_PRECOPY, ST_STOPCOPY, ST_AUTOCONVERGE, ST_POSTCOPY };
    size_t k = 0;
    while (k < 5 && strcmp(strategy_name(all[k]), o_strategy) != 0) k++;
    if (k == 5)
      return vm_usage_error("unknown strategy '%s': use auto, precopy, stop-copy, auto-converge or postcopy",
                            o_strategy);
    mo.strategy = all[k];
  }
  mo.max_downtime_ms = 500;
  mo.precopy_budget_s = 60;
  int bw = 0, par = 1;
  if (o_downtime && (rc = parse_ms_or_s("--max-downtime", o_downtime, 1, 600000, &mo.max_downtime_ms))) return rc;
  if (o_budget && (rc = parse_ms_or_s("--precopy-budget", o_budget, 1, 86400, &mo.precopy_budget_s))) return rc;
  if (o_timeout && (rc = parse_ms_or_s("--timeout", o_timeout, 1, 7 * 86400, &mo.timeout_s))) return rc;
  if (o_bandwidth && (rc = parse_ms_or_s("--bandwidth", o_bandwidth, 1, 1 << 20, &bw))) return rc;
  if (o_parallel && (rc = parse_ms_or_s("--parallel", o_parallel, 1, 64, &par))) return rc;
  mo.bandwidth_mib = (uint64_t)bw;
  mo.offline = o_offline;
  mo.keep_source = o_keep;
  mo.unsafe = o_unsafe;
  mo.tls = o_tls;
  mo.check_only = o_check;
  if (mo.offline && (o_strategy || o_bandwidth || mo.tls || o_downtime || o_budget))
    return vm_usage_error("--offline copies a shut-off VM through libvirt's own connections: it takes no "
                          "--strategy, --bandwidth, --max-downtime, --precopy-budget or --tls");

  if (o_plan) {
    if (nargs) return vm_usage_error("--plan takes no VM or DEST: unexpected argument '%s'", args[0]);
    if (mo.check_only) return vm_usage_error("--check takes one VM and DEST, not a plan");
    /* Each move runs as its own vmmigrate, with the same move options. */
    struct vm_strv pass = { 0 };
    for (int i = 1; i < argc; i++) {
      if (strcmp(argv[i], "--plan") == 0 || strcmp(argv[i], "--parallel") == 0) { i++; continue; }
      if (strncmp(argv[i], "--plan=", 7) == 0 || strncmp(argv[i], "--parallel=", 11) == 0) continue;
      if (strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--connect") == 0 ||
          strcmp(argv[i], "-o") == 0 || strcmp(argv[i], "--output") == 0) { i++; continue; }
      if (strncmp(argv[i], "--connect=", 10) == 0 || strncmp(argv[i], "--output=", 9) == 0) continue;
      /* Short options, alone or glued (-cURI, -ojson, -qc URI, -qH/etc/hosts), read
       * letter by letter as popt does: a letter that takes a value takes the rest
       * of the word, or the next word. -c and -o are the plan's own; each move is
       * quiet and plain (-q, no -v): its report is read, its error line shown. */
      if (argv[i][0] == '-' && argv[i][1] && argv[i][1] != '-') {
        for (const char *p = argv[i] + 1; *p; p++) {
          if (*p == 'q' || *p == 'v') continue;
          if (*p == 'c' || *p == 'o' || *p == 'H') {
            const char *val = p[1] ? p + 1 : i + 1 < argc ? argv[++i] : NULL;
            if (*p == 'H' && val) {
              vm_strv_add(&pass, "-H");
              vm_strv_add(&pass, val);
            }
            break;
          }
          vm_strv_addf(&pass, "-%c", *p);
        }
        continue;
      }
      if (strcmp(argv[i], "--verbose") == 0 || strcmp(argv[i], "--quiet") == 0) continue;
      vm_strv_add(&pass, argv[i]);
    }
    rc = run_plan(o_plan, par, pass.v ? pass.v : (char *[]){ NULL });
    vm_strv_free(&pass);
    return rc;
  }
  if (o_parallel) return vm_usage_error("--parallel goes with --plan");
  if (nargs == 0) return vm_usage_error("missing argument: VM DEST (or --plan FILE)");
  if (nargs == 1) return vm_usage_error("missing destination host for '%s'", args[0]);

  json_object *report = NULL;
  rc = run_move(args[0], vm_opts.uri, args[1], NULL, &report);
  if (report) {
    int prc = 0;
    if (mo.check_only) {
      static const struct vm_column cols[] = {
        { "check", "CHECK", VM_COL_STR }, { "result", "RESULT", VM_COL_STR }, { "detail", "DETAIL", VM_COL_STR },
        { NULL, NULL, 0 },
      };
      prc = vm_print_list(json_object_object_get(report, "checks"), cols);
    } else if (rc == 0) {
      static const struct vm_column cols[] = {
        { "vm", "VM", VM_COL_STR }, { "source", "SOURCE", VM_COL_STR }, { "dest", "DEST", VM_COL_STR },
        { "mode", "MODE", VM_COL_STR }, { "strategy", "STRATEGY", VM_COL_STR },
        { "finished_by", "FINISHED-BY", VM_COL_STR }, { "total_ms", "TOTAL-MS", VM_COL_INT },
        { "transfer_ms", "TRANSFER-MS", VM_COL_INT }, { "downtime_ms", "DOWNTIME-MS", VM_COL_INT }, { "memory_bytes", "MEMORY", VM_COL_BYTES },
        { "disk_bytes", "DISK", VM_COL_BYTES }, { "iterations", "ITERATIONS", VM_COL_INT },
        { "postcopy", "POSTCOPY", VM_COL_BOOL }, { "max_downtime_ms", "MAX-DOWNTIME-MS", VM_COL_INT },
        { "throttle_pct", "THROTTLE-PCT", VM_COL_INT }, { "storage", "STORAGE", VM_COL_STR },
        { NULL, NULL, 0 },
      };
      json_object_object_del(report, "checks");
      prc = vm_print_record(report, cols);
    }
    json_object_put(report);
    if (prc && !rc) rc = prc;
  }
  return rc;
}
