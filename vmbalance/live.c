/* vmbalance plan|run: the pool as it is now (pool.c), the policy and rules of the
 * config file (config.c), the planner (plan.c); vmmigrate carries the moves out. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "pool.h"
#include "vmbalance.h"


static char *o_config, *o_policy;
static int o_level, o_interval = 5, o_timeout = 10, o_parallel = 1;

int bal_load_config(const char *option, const char *policy, int level, struct bal_config *c)
{
  if (option && !*option) return vm_usage_error("-C needs a file name");
  const char *path = option ? option : getenv("VMKIT_BALANCE_CONF");
  bool named = path && *path;
  if (!named) path = BAL_CONF_DEFAULT;
  bal_config_init(c);
  size_t len = 0;
  CLEANUP_FREE char *text = vm_read_file(path, BAL_CONF_MAX + 1, &len);
  if (!text) {
    if (errno == ENOENT && !named) return 0;
    if (errno == EFBIG) return vm_fail(VM_EXIT_USAGE, "%s: larger than %u bytes", path, BAL_CONF_MAX);
    return vm_fail_errno(errno == ENOENT ? VM_EXIT_NOTFOUND : VM_EXIT_FAIL, "cannot read '%s'", path);
  }
  struct bal_error err;
  if (bal_config_parse(text, len, c, &err) < 0) {
    if (err.line) return vm_fail(VM_EXIT_USAGE, "%s: line %d: %s", path, err.line, err.msg);
    return vm_fail(VM_EXIT_USAGE, "%s: %s", path, err.msg);
  }
  if (policy) {
    if (strcmp(policy, "balance") == 0) c->policy = BAL_BALANCE;
    else if (strcmp(policy, "consolidate") == 0) c->policy = BAL_CONSOLIDATE;
    else {
      bal_config_free(c);
      return vm_usage_error("unknown --policy '%s': use balance or consolidate", policy);
    }
  }
  if (level) c->level = level;
  return 0;
}

/* Hosts that did not answer, to power on when the hosts that did are loaded past
 * their headroom after the plan (a host that consolidation powered off does not
 * answer). Capacity of such a host: its tags, else the mean of those that answered. */
static void power_on(const struct bal_config *c, const struct pool *p, const struct bal_pool *bp,
                     const struct bal_plan *plan, json_object *out)
{
  size_t nh = bp->nhosts;
  if (nh == 0 || pool_up(p) == p->n) return;
  int *where = malloc((bp->nvms + 1) * sizeof *where);
  double *load = calloc(nh * BAL_NRES + 1, sizeof *load);
  if (!where || !load) abort();
  for (size_t v = 0; v < bp->nvms; v++) where[v] = bp->vms[v].host;
  for (size_t m = 0; m < plan->n; m++) where[plan->v[m].vm] = plan->v[m].dst;
  for (size_t h = 0; h < nh; h++)
    for (int r = 0; r < BAL_NRES; r++) load[h * BAL_NRES + r] = bp->hosts[h].base[r];
  for (size_t v = 0; v < bp->nvms; v++)
    for (int r = 0; r < BAL_NRES; r++) load[(size_t)where[v] * BAL_NRES + r] += bp->vms[v].demand[r];
  double excess[BAL_NRES] = { 0 }, mean[BAL_NRES] = { 0 };
  for (size_t h = 0; h < nh; h++)
    for (int r = 0; r < BAL_NRES; r++) {
      double cap = bp->hosts[h].cap[r], limit = cap * (100 - c->headroom) / 100.0;
      mean[r] += cap / (double)nh;
      if (cap > 0 && load[h * BAL_NRES + r] > limit) excess[r] += load[h * BAL_NRES + r] - limit;
    }
  for (size_t i = 0; i < p->n; i++) {
    const struct pool_host *ph = &p->v[i];
    bool need = false;
    for (int r = 0; r < BAL_NRES; r++) need |= excess[r] > 1e-9;
    if (!need) break;
    if (!ph->error || !ph->no_answer) continue; /* it answered, if only with an error: it is on */
    double cap[BAL_NRES];
    for (int r = 0; r < BAL_NRES; r++) cap[r] = mean[r];
    if (ph->cpus) cap[BAL_CPU] = ph->cpus * 100.0;
    if (ph->mem_total > 0) cap[BAL_MEM] = ph->mem_total / 1048576.0;
    for (int r = 0; r < BAL_NRES; r++) excess[r] -= cap[r] * (100 - c->headroom) / 100.0;
    json_object_array_add(out, json_object_new_string(ph->h->name));
  }
  free(where);
  free(load);
}

/* The plan as JSON (-o json, and run's report). */
static json_object *plan_json(const struct bal_pool *bp, const struct bal_plan *plan, json_object *on,
                              const struct pool *p)
{
  json_object *o = json_object_new_object(), *moves = json_object_new_array();
  for (size_t i = 0; i < plan->n; i++) {
    const struct bal_move *m = &plan->v[i];
    json_object *mv = json_object_new_object();
    json_object_object_add(mv, "vm", json_object_new_string(bp->vms[m->vm].name));
    json_object_object_add(mv, "source", json_object_new_string(bp->hosts[m->src].name));
    json_object_object_add(mv, "dest", json_object_new_string(bp->hosts[m->dst].name));
    json_object_object_add(mv, "why", json_object_new_string(bal_why_names[m->why]));
    if (m->why == BAL_WHY_BALANCE) {
      json_object_object_add(mv, "benefit", json_object_new_double(m->benefit));
      json_object_object_add(mv, "cost_s", json_object_new_double(m->cost));
    }
    json_object_array_add(moves, mv);
  }
  json_object_object_add(o, "moves", moves);
  json_object_object_add(o, "spread_before", json_object_new_double(plan->spread_before));
  json_object_object_add(o, "spread_after", json_object_new_double(plan->spread_after));
  json_object *off = json_object_new_array(), *stuck = json_object_new_array(), *down = json_object_new_array();
  for (size_t i = 0; i < plan->noff; i++) json_object_array_add(off, json_object_new_string(bp->hosts[plan->off[i]].name));
  for (size_t i = 0; i < plan->nstuck; i++) json_object_array_add(stuck, json_object_new_string(bp->vms[plan->stuck[i]].name));
  for (size_t i = 0; i < p->n; i++)
    if (p->v[i].error) json_object_array_add(down, json_object_new_string(p->v[i].h->name));
  json_object_object_add(o, "power_off", off);
  json_object_object_add(o, "power_on", json_object_get(on));
  json_object_object_add(o, "not_placed", stuck);
  json_object_object_add(o, "unreachable", down);
  return o;
}

/* A plan made of the pool as it is now. */
struct made {
  struct bal_config cfg;
  struct pool pool;
  struct bal_pool bp;
  void *arrays[2];
  struct bal_plan plan;
  json_object *on;
};

static void made_free(struct made *m)
{
  bal_plan_free(&m->plan);
  free(m->arrays[0]);
  free(m->arrays[1]);
  pool_free(&m->pool);
  bal_config_free(&m->cfg);
  json_object_put(m->on);
}

static int make_plan(struct made *m, bool quiet, bool dirty)
{
  memset(m, 0, sizeof *m);
  int rc = bal_load_config(o_config, o_policy, o_level, &m->cfg);
  if (rc) return rc;
  rc = pool_collect(&m->pool, NULL, o_interval * 1000, o_timeout, POOL_LOCKS | (dirty ? POOL_DIRTY : 0));
  if (rc) return rc < 0 ? vm_fail_interrupted() : rc;
  for (size_t i = 0; i < m->pool.n && !quiet; i++)
    if (m->pool.v[i].error)
      vm_warn("host '%s' did not answer (%s): left out of the plan", m->pool.v[i].h->name, m->pool.v[i].error);
  if (pool_up(&m->pool) == 0) return vm_fail(VM_EXIT_FAIL, "no host of %s answered", vm_hosts_path());
  pool_to_bal(&m->pool, &m->bp, m->arrays);
  const char *why = NULL;
  if (bal_plan_make(&m->cfg, &m->bp, &m->plan, &why) < 0) return vm_fail(VM_EXIT_FAIL, "cannot plan: %s", why);
  m->on = json_object_new_array();
  power_on(&m->cfg, &m->pool, &m->bp, &m->plan, m->on);
  if (quiet) return 0;
  for (size_t i = 0; i < m->bp.nvms; i++)
    if (m->bp.vms[i].busy) vm_info("VM '%s' is locked by another run (a move, a snapshot): it stays where it is", m->bp.vms[i].name);
  for (size_t i = 0; i < m->plan.nstuck; i++)
    if (!m->bp.vms[m->plan.stuck[i]].busy)
      vm_warn("VM '%s' breaks a rule and no host can take it: it stays where it is", m->bp.vms[m->plan.stuck[i]].name);
  vm_info("%zu move%s; spread of the hosts' load %.1f -> %.1f points", m->plan.n, m->plan.n == 1 ? "" : "s",
          m->plan.spread_before, m->plan.spread_after);
  return 0;
}

/* Options of both verbs. */
#define PLAN_OPTIONS                                                                                              \
  { "config", 'C', POPT_ARG_STRING, &o_config, 0, "policy and rules (default: " BAL_CONF_DEFAULT ")", "FILE" },      \
    { "policy", '\0', POPT_ARG_STRING, &o_policy, 0, "balance or consolidate, over the file's", "POLICY" },       \
    { "level", '\0', POPT_ARG_INT, &o_level, 0, "1 (mandatory moves only) to 5 (any move that helps), over the file's", "N" }, \
    { "interval", '\0', POPT_ARG_INT, &o_interval, 0, "seconds between the two samples of the load (1 to 3600; default: 5)", "SECONDS" }, \
    { "timeout", '\0', POPT_ARG_INT, &o_timeout, 0, "seconds a host has to answer, beyond the interval (1 to 3600; default: 10)", "SECONDS" }

static int check_options(void)
{
  if (o_level && (o_level < 1 || o_level > 5)) return vm_usage_error("invalid --level %d: expected 1 to 5", o_level);
  if (o_interval < 1 || o_interval > 3600)
    return vm_usage_error("invalid --interval %d: expected 1 to 3600 seconds", o_interval);
  if (o_timeout < 1 || o_timeout > 3600)
    return vm_usage_error("invalid --timeout %d: expected 1 to 3600 seconds", o_timeout);
  if (o_policy && strcmp(o_policy, "balance") != 0 && strcmp(o_policy, "consolidate") != 0)
    return vm_usage_error("unknown --policy '%s': use balance or consolidate", o_policy);
  return 0;
}

int cmd_plan(int argc, char **argv)
{
  struct poptOption table[] = { PLAN_OPTIONS, VM_POPT_COMMON, POPT_TABLEEND };
  CLEANUP_POPT poptContext ctx = NULL;
  const char **args;
  int nargs;
  int rc = vm_parse(&ctx, argc, argv, table, "",
                    "Samples every host of the hosts file and prints the moves that bring the pool\n"
                    "to the policy of the config file, one 'VM SOURCE DEST' a line (vmkit-plan(5)),\n"
                    "for vmmigrate's plan mode. Nothing is moved. -v says why each move is made.",
                    0, 0, &args, &nargs);
  if (rc) return rc == VM_DONE ? 0 : rc;
  if ((rc = check_options())) return rc;
  vm_catch_signals();
  struct made m;
  rc = make_plan(&m, false, true);
  if (rc) {
    made_free(&m);
    return rc;
  }
  if (vm_opts.format == VM_FMT_JSON) {
    CLEANUP_JSON json_object *o = plan_json(&m.bp, &m.plan, m.on, &m.pool);
    puts(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED |
                                             JSON_C_TO_STRING_NOSLASHESCAPE));
  } else {
    bal_plan_write(stdout, &m.bp, &m.plan, vm_opts.verbose > 0);
    for (size_t i = 0; i < m.plan.noff; i++) printf("# power-off %s\n", m.bp.hosts[m.plan.off[i]].name);
    for (size_t i = 0; i < json_object_array_length(m.on); i++)
      printf("# power-on %s\n", json_object_get_string(json_object_array_get_idx(m.on, i)));
  }
  made_free(&m);
  if (fflush(stdout) != 0 || ferror(stdout)) return vm_fail_errno(VM_EXIT_FAIL, "write error on standard output");
  return 0;
}

/* Each host's weighted load, for the report: the planner's spread of a new sample. */
static int spread_now(double *out)
{
  struct made m;
  int rc = make_plan(&m, true, false);
  if (rc == 0) *out = m.plan.spread_before;
  made_free(&m);
  return rc;
}

int cmd_run(int argc, char **argv)
{
  struct poptOption table[] = {
    PLAN_OPTIONS,
    { "parallel", '\0', POPT_ARG_INT, &o_parallel, 0, "moves at once (1 to 16; default: 1)", "N" },
    VM_POPT_COMMON, POPT_TABLEEND
  };
  CLEANUP_POPT poptContext ctx = NULL;
  const char **args;
  int nargs;
  int rc = vm_parse(&ctx, argc, argv, table, "",
                    "Plans as 'vmbalance plan' does, carries the moves out with vmmigrate's plan\n"
                    "mode, then samples the pool again and reports what moved and the spread of\n"
                    "the hosts' load before and after.",
                    0, 0, &args, &nargs);
  if (rc) return rc == VM_DONE ? 0 : rc;
  if ((rc = check_options())) return rc;
  if (o_parallel < 1 || o_parallel > 16) return vm_usage_error("invalid --parallel %d: expected 1 to 16", o_parallel);
  vm_catch_signals();
  /* One run at a time on this machine: two would plan from the same pool. */
  struct vm_lock *lock = NULL;
  if ((rc = vm_lock_take("vmbalance-run", false, vm_lock_wait_seconds(), "the pool", &lock))) return rc;
  struct made m;
  rc = make_plan(&m, false, true);
  if (rc) {
    made_free(&m);
    vm_lock_release(lock);
    return rc;
  }
  CLEANUP_JSON json_object *report = plan_json(&m.bp, &m.plan, m.on, &m.pool);
  double before = m.plan.spread_before, planned = m.plan.spread_after;
  int failed = 0;
  if (m.plan.n) {
    CLEANUP_FREE char *dir = vm_scratch_dir("balance");
    if (!dir) {
      made_free(&m);
      vm_lock_release(lock);
      return VM_EXIT_FAIL;
    }
    CLEANUP_FREE char *file = vm_strdup_printf("%s/plan", dir);
    FILE *f = fopen(file, "w");
    if (!f || bal_plan_write(f, &m.bp, &m.plan, true) < 0 || fclose(f) != 0) {
      rc = vm_fail_errno(VM_EXIT_FAIL, "cannot write the plan to '%s'", file);
      made_free(&m);
      vm_remove_tree(dir);
      vm_lock_release(lock);
      return rc;
    }
    CLEANUP_FREE char *exe = vm_tool_path("vmmigrate");
    CLEANUP_FREE char *par = vm_strdup_printf("%d", o_parallel);
    struct vm_strv av = { 0 };
    vm_strv_add(&av, exe);
    vm_strv_add(&av, "--plan");
    vm_strv_add(&av, file);
    vm_strv_add(&av, "--parallel");
    vm_strv_add(&av, par);
    vm_strv_add(&av, "-o");
    vm_strv_add(&av, "json");
    vm_strv_add(&av, "-H");
    vm_strv_add(&av, vm_hosts_path());
    if (vm_opts.virt_type) {
      vm_strv_add(&av, "--virt-type");
      vm_strv_add(&av, vm_opts.virt_type);
    }
    if (vm_opts.quiet) vm_strv_add(&av, "-q");
    if (vm_opts.verbose) vm_strv_add(&av, "-v");
    if (vm_opts.use_syslog) vm_strv_add(&av, "--syslog");
    vm_info("moving %zu VM%s through vmmigrate (%d at once)", m.plan.n, m.plan.n == 1 ? "" : "s", o_parallel);
    if (vm_opts.verbose) {
      CLEANUP_FREE char *shown = vm_argv_str(av.v);
      vm_debug("running %s", shown);
    }
    char *out = NULL, *err = NULL;
    int st = vm_run(av.v, &out, &err);
    vm_strv_free(&av);
    vm_remove_tree(dir);
    if (err && *err) fputs(err, stderr);
    json_object *res = out ? json_tokener_parse(out) : NULL;
    free(out);
    free(err);
    if (!res || !json_object_is_type(res, json_type_array)) {
      json_object_put(res);
      made_free(&m);
      vm_lock_release(lock);
      if (vm_interrupted()) return vm_fail_interrupted();
      return vm_fail(VM_EXIT_FAIL, "vmmigrate --plan failed (exit %d) and reported no moves", st);
    }
    /* What each move became, into the plan's moves. */
    /* Move i is line i + 2 of the plan (after "#!vmkit-plan 1"). */
    json_object *moves = json_object_object_get(report, "moves");
    for (size_t k = 0; k < json_object_array_length(res); k++) {
      json_object *r = json_object_array_get_idx(res, k);
      int line = json_object_get_int(json_object_object_get(r, "line"));
      if (line < 2 || (size_t)(line - 2) >= json_object_array_length(moves)) continue;
      json_object *mv = json_object_array_get_idx(moves, (size_t)(line - 2));
      static const char *const keep[] = { "result", "exit", "total_ms", "downtime_ms", "error", NULL };
      for (size_t q = 0; keep[q]; q++)
        json_object_object_add(mv, keep[q], json_object_get(json_object_object_get(r, keep[q])));
      if (json_object_get_int(json_object_object_get(r, "exit")) != 0) failed++;
    }
    json_object_put(res);
  }
  size_t nmoves = m.plan.n;
  made_free(&m);
  /* The pool as it is now. */
  double after = before;
  if (nmoves && !vm_interrupted()) {
    if (spread_now(&after) != 0) vm_warn("cannot sample the pool after the moves: its spread is not known");
  }
  vm_lock_release(lock);
  json_object_object_add(report, "spread_planned", json_object_new_double(planned));
  json_object_object_add(report, "spread_after", json_object_new_double(after));
  json_object_object_add(report, "failed", json_object_new_int(failed));
  if (vm_opts.format == VM_FMT_JSON) {
    puts(json_object_to_json_string_ext(report, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED |
                                                  JSON_C_TO_STRING_NOSLASHESCAPE));
  } else {
    static const struct vm_column cols[] = {
      { "vm", "VM", VM_COL_STR },         { "source", "SOURCE", VM_COL_STR }, { "dest", "DEST", VM_COL_STR },
      { "why", "WHY", VM_COL_STR },       { "result", "RESULT", VM_COL_STR }, { "total_ms", "TOTAL-MS", VM_COL_INT },
      { "error", "ERROR", VM_COL_STR },   { NULL, NULL, 0 },
    };
    if ((rc = vm_print_list(json_object_object_get(report, "moves"), cols))) return rc;
    vm_info("spread of the hosts' load: %.1f before, %.1f planned, %.1f after", before, planned, after);
  }
  if (vm_interrupted()) return vm_fail_interrupted();
  size_t n = json_object_array_length(json_object_object_get(report, "moves"));
  if (failed) return vm_fail(VM_EXIT_FAIL, "%d of %zu moves failed", failed, n);
  return 0;
}
