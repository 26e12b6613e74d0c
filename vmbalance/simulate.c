/* vmbalance simulate: a utilisation trace replayed through the planner and the
 * baselines THR-MMT and LR-MMT (sim.h), one row of figures per policy. Local
 * only: it never talks to libvirt. */
#include <errno.h>
#include <string.h>

#include "sim.h"
#include "vmbalance.h"

/* The vmbalance policy when no --config is given: pack onto as few hosts as a
 * headroom allows. Half of each host is left free because PlanetLab's CPU comes
 * in bursts: on 20110303 it is the smallest headroom (in steps of 5 %) whose SLAV
 * is at most half THR-MMT's, with and without --cloudsim; 20110306, not used to
 * choose it, agrees (bench/RESULTS.md). */
static const char default_conf[] = "policy consolidate\n"
                                   "level 5\n"
                                   "headroom 50%\n";

static const struct vm_column sim_cols[] = {
  { "policy", "POLICY", VM_COL_STR },
  { "energy_kwh", "ENERGY-KWH", VM_COL_PCT },
  { "slatah", "SLATAH", VM_COL_STR },
  { "pdm", "PDM", VM_COL_STR },
  { "slav", "SLAV", VM_COL_STR },
  { "migrations", "MIGRATIONS", VM_COL_INT },
  { "hosts_off_mean", "OFF-MEAN", VM_COL_PCT },
  { "hosts_off_end", "OFF-END", VM_COL_INT },
  { "decision_ms_mean", "DECIDE-MS", VM_COL_STR },
  { "decision_ms_max", "DECIDE-MAX", VM_COL_STR },
  { NULL, NULL, 0 },
};

/* A number whose JSON and table text has the given digits after the point (e:
 * in exponent form, for the small SLAV). */
static json_object *num(double x, int digits, bool e)
{
  char b[64];
  if (e) snprintf(b, sizeof b, "%.*e", digits, x);
  else snprintf(b, sizeof b, "%.*f", digits, x);
  return json_object_new_double_s(x, b);
}

static json_object *row_of(enum sim_policy p, const struct sim_result *r)
{
  json_object *o = json_object_new_object();
  json_object_object_add(o, "policy", json_object_new_string(sim_policy_names[p]));
  json_object_object_add(o, "energy_kwh", num(r->energy_kwh, 2, false));
  json_object_object_add(o, "slatah", num(r->slatah, 6, false));
  json_object_object_add(o, "pdm", num(r->pdm, 6, false));
  json_object_object_add(o, "slav", num(r->slav, 3, true));
  json_object_object_add(o, "migrations", json_object_new_int64(r->migrations));
  json_object_object_add(o, "hosts_off_mean", num(r->hosts_off_mean, 1, false));
  json_object_object_add(o, "hosts_off_end", json_object_new_int(r->hosts_off_end));
  json_object_object_add(o, "active_hosts_mean", num(r->active_mean, 1, false));
  json_object_object_add(o, "vms_end", json_object_new_int((int)r->vms_end));
  json_object_object_add(o, "decision_ms_mean", num(r->decision_ms_mean, 3, false));
  json_object_object_add(o, "decision_ms_max", num(r->decision_ms_max, 3, false));
  return o;
}

/* --policy: a comma-separated list of names. */
static int parse_policies(const char *arg, bool *want)
{
  char *copy = vm_strdup(arg), *save = NULL;
  int n = 0;
  for (char *w = strtok_r(copy, ",", &save); w; w = strtok_r(NULL, ",", &save)) {
    int p;
    for (p = 0; p < SIM_NPOLICIES && strcmp(w, sim_policy_names[p]) != 0; p++) {}
    if (p == SIM_NPOLICIES) {
      int rc = vm_usage_error("invalid --policy '%s': expected vmbalance, thr-mmt or lr-mmt", w);
      free(copy);
      return rc;
    }
    want[p] = true;
    n++;
  }
  free(copy);
  return n ? 0 : vm_usage_error("invalid --policy '%s': expected vmbalance, thr-mmt or lr-mmt", arg);
}

static int read_config(const char *path, struct bal_config *c)
{
  if (!path) {
    struct bal_error err;
    if (bal_config_parse(default_conf, strlen(default_conf), c, &err) < 0)
      return vm_fail(VM_EXIT_FAIL, "built-in config: line %d: %s", err.line, err.msg);
    return 0;
  }
  size_t len;
  char *text = vm_read_file(path, BAL_CONF_MAX, &len);
  if (!text) return vm_fail_errno(errno == ENOENT ? VM_EXIT_NOTFOUND : VM_EXIT_FAIL, "%s", path);
  struct bal_error err;
  int rc = bal_config_parse(text, len, c, &err);
  free(text);
  if (rc < 0) return err.line ? vm_fail(VM_EXIT_FAIL, "%s: line %d: %s", path, err.line, err.msg)
                              : vm_fail(VM_EXIT_FAIL, "%s: %s", path, err.msg);
  return 0;
}

static int read_trace(const char *path, struct sim_trace *t)
{
  size_t len;
  /* 1 GiB: far above a day of 10,000 VMs. */
  char *text = vm_read_file(path, (size_t)1 << 30, &len);
  if (!text) return vm_fail_errno(errno == ENOENT ? VM_EXIT_NOTFOUND : VM_EXIT_FAIL, "%s", path);
  struct sim_error err;
  int rc = sim_trace_parse(text, len, t, &err);
  free(text);
  if (rc < 0) return err.line ? vm_fail(VM_EXIT_FAIL, "%s: line %d: %s", path, err.line, err.msg)
                              : vm_fail(VM_EXIT_FAIL, "%s: %s", path, err.msg);
  return 0;
}

static char *o_trace, *o_policy, *o_config;
static int o_hosts = 800, o_memory, o_cloudsim;

int cmd_simulate(int argc, char **argv)
{
  struct poptOption table[] = {
    { "trace", '\0', POPT_ARG_STRING, &o_trace, 0, "the trace: VM-ID<TAB>CPU% CPU% ... a line (required)", "FILE" },
    { "hosts", '\0', POPT_ARG_INT, &o_hosts, 0, "hosts in the pool, half G4 and half G5 (default: 800)", "N" },
    { "policy", '\0', POPT_ARG_STRING, &o_policy, 0,
      "policies to replay, comma-separated (default: vmbalance,thr-mmt,lr-mmt)", "LIST" },
    { "config", '\0', POPT_ARG_STRING, &o_config, 0, "a vmbalance.conf for the vmbalance policy", "FILE" },
    { "memory", '\0', POPT_ARG_NONE, &o_memory, 0,
      "a host's 4 GiB of RAM limits every placement, not only the start (as CloudSim: off)", NULL },
    { "cloudsim", '\0', POPT_ARG_NONE, &o_cloudsim, 0,
      "as CloudSim: first decision at 300 s, a VM at 0 % for two samples leaves the pool", NULL },
    VM_POPT_LOCAL, POPT_TABLEEND
  };
  CLEANUP_POPT poptContext ctx = NULL;
  const char **args;
  int nargs;
  int rc = vm_parse(&ctx, argc, argv, table, "",
                    "Replays a CPU utilisation trace (5-minute samples) on a modelled pool under\n"
                    "vmbalance's planner and the baselines THR-MMT and LR-MMT; one row per policy:\n"
                    "energy, SLA violation (SLATAH, PDM, SLAV), migrations, hosts off, decision time.",
                    0, 0, &args, &nargs);
  if (rc) return rc == VM_DONE ? 0 : rc;
  if (!o_trace) return vm_usage_error("--trace FILE is required");
  if (o_hosts < 1 || o_hosts > 100000) return vm_usage_error("invalid --hosts %d: expected 1 to 100000", o_hosts);
  bool want[SIM_NPOLICIES] = { false };
  if (o_policy && (rc = parse_policies(o_policy, want))) return rc;
  if (!o_policy)
    for (int p = 0; p < SIM_NPOLICIES; p++) want[p] = true;

  struct bal_config conf;
  bal_config_init(&conf);
  if (want[SIM_VMBALANCE] && (rc = read_config(o_config, &conf))) return rc;
  struct sim_trace t;
  if ((rc = read_trace(o_trace, &t))) {
    bal_config_free(&conf);
    return rc;
  }
  struct sim_setup s;
  sim_setup_init(&s);
  s.nhosts = (size_t)o_hosts;
  s.conf = &conf;
  s.memory = o_memory != 0;
  s.cloudsim = o_cloudsim != 0;
  CLEANUP_JSON json_object *rows = json_object_new_array();
  for (int p = 0; p < SIM_NPOLICIES && rc == 0; p++) {
    if (!want[p]) continue;
    struct sim_result r;
    const char *why;
    if (sim_run(&t, (enum sim_policy)p, &s, &r, &why) < 0) {
      rc = vm_fail(VM_EXIT_FAIL, "policy %s: %s", sim_policy_names[p], why);
      break;
    }
    json_object_array_add(rows, row_of((enum sim_policy)p, &r));
  }
  sim_trace_free(&t);
  bal_config_free(&conf);
  return rc ? rc : vm_print_list(rows, sim_cols);
}
