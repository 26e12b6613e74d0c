/* vmbalance simulate's engine (sim.h).
 *
 * Each tick: the VMs' demands are read from the trace, the policy decides
 * (timed), its moves are made, then the tick's energy and SLA time are counted
 * host by host in two phases: while its longest migration in or out runs, the
 * host carries its load from before the moves; after that, its load from after.
 *
 * The baselines follow CloudSim's PowerVmAllocationPolicyMigrationAbstract
 * (optimizeAllocation): the overloaded hosts, in host order, shed VMs chosen by
 * minimum migration time (the least RAM) until no longer overloaded; those VMs,
 * the largest CPU demand first, go by power-aware best fit decreasing (PABFD) to
 * the host whose power rises least, not an overloaded one; then the least
 * utilised hosts, one after the other, are emptied onto others by PABFD (all of a
 * host's VMs or none). CloudSim 3.0's choices are kept where they change
 * decisions (see pabfd() for the power): "utilisation" in the choice of a host to
 * empty and in "switched off" is the one measured before the tick's moves; the
 * hosts that received VMs from overloaded ones may still be emptied; LR's "loess"
 * fit is an ordinary least squares fit (its weights are never applied,
 * MathUtil.createWeigthedLinearRegression). With sim_setup.cloudsim, CloudSim's
 * other behaviours too (sim.h), so that its own runs can be matched. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "plan.h"
#include "sim.h"
#include "strmap.h"

const char *const sim_policy_names[SIM_NPOLICIES] = { "vmbalance", "thr-mmt", "lr-mmt" };
const double sim_vm_mips[SIM_VM_TYPES] = { 2500, 2000, 1000, 500 };
const double sim_vm_ram[SIM_VM_TYPES] = { 870, 1740, 1740, 613 };
const char *const sim_host_model[SIM_HOST_TYPES] = { "HP ProLiant ML110 G4 (2 x 1860 MIPS, 4 GiB)",
                                                      "HP ProLiant ML110 G5 (2 x 2660 MIPS, 4 GiB)" };
static const double host_pe_mips[SIM_HOST_TYPES] = { 1860, 2660 };
#define HOST_PES 2
#define HOST_RAM 4096.0
/* SPECpower_ssj2008 results, W at 0 %, 10 %, ..., 100 % load (CloudSim's
 * PowerModelSpecPowerHpProLiantMl110G4Xeon3040 and G5Xeon3075). */
static const double power_table[SIM_HOST_TYPES][11] = {
  { 86, 89.4, 92.6, 96, 99.5, 102, 106, 108, 112, 114, 117 },
  { 93.7, 97, 101, 105, 110, 116, 121, 125, 129, 133, 135 },
};
/* Half of 1 Gbit/s in MiB/s, as CloudSim takes it: RAM / (bw / (2 * 8000)). */
#define MIGRATION_MIBS 62.5

/* ---- Models ---- */

double sim_power(int type, double u)
{
  if (u <= 0) return power_table[type][0];
  if (u >= 1) return power_table[type][10];
  int i = (int)(u * 10);
  double f = u * 10 - i;
  return power_table[type][i] + f * (power_table[type][i + 1] - power_table[type][i]);
}

int sim_host_type(size_t h) { return (int)(h % SIM_HOST_TYPES); }
double sim_host_mips(size_t h) { return HOST_PES * host_pe_mips[sim_host_type(h)]; }
int sim_vm_type(size_t v, size_t nvms)
{
  size_t block = (nvms + SIM_VM_TYPES - 1) / SIM_VM_TYPES;
  return block ? (int)(v / block) : 0;
}
double sim_migration_s(double ram_mib) { return ram_mib / MIGRATION_MIBS; }

void sim_setup_init(struct sim_setup *s)
{
  memset(s, 0, sizeof *s);
  s->nhosts = 800;
  s->interval_s = 300;
  s->thr = 0.8;
  s->lr_safety = 1.2;
  s->lr_fallback = 0.7;
}

/* ---- Trace ---- */

void sim_trace_free(struct sim_trace *t)
{
  for (size_t i = 0; i < t->nvms; i++) free(t->names[i]);
  free(t->names);
  free(t->util);
  memset(t, 0, sizeof *t);
}

static int trace_fail(struct sim_trace *t, struct sim_error *err, int line, const char *msg)
{
  sim_trace_free(t);
  err->line = line;
  snprintf(err->msg, sizeof err->msg, "%s", msg);
  return -1;
}

/* One line's values into row (n of them at most); their count, or -1 with *bad
 * at the first word that is not a number from 0 to 100. */
static long parse_values(const char *p, const char *end, float *row, size_t n, const char **bad)
{
  long got = 0;
  char word[64];
  while (p < end) {
    while (p < end && (*p == ' ' || *p == '\t')) p++;
    if (p == end) break;
    const char *w = p;
    while (p < end && *p != ' ' && *p != '\t') p++;
    size_t wl = (size_t)(p - w);
    /* A plain decimal number, whole: not cut short, no hex, no exponent games. */
    bool plain = wl < sizeof word;
    for (size_t k = 0; plain && k < wl; k++) plain = (w[k] >= '0' && w[k] <= '9') || w[k] == '.';
    if (!plain) {
      *bad = w;
      return -1;
    }
    memcpy(word, w, wl);
    word[wl] = 0;
    char *e;
    double x = strtod(word, &e);
    if (e == word || *e || !(x >= 0 && x <= 100)) {
      *bad = w;
      return -1;
    }
    if (row && (size_t)got < n) row[got] = (float)x;
    got++;
  }
  return got;
}

static int trace_lines(const char *text, size_t len, struct sim_trace *t, struct sim_error *err, struct bal_map *seen)
{
  size_t cap = 0, ucap = 0;
  int line = 0;
  for (const char *p = text, *end = text + len; p < end;) {
    const char *nl = memchr(p, '\n', (size_t)(end - p)), *le = nl ? nl : end;
    line++;
    const char *next = nl ? nl + 1 : end, *stop = le;
    if (stop > p && stop[-1] == '\r') stop--;
    if (stop == p) { /* a blank line: ignored */
      p = next;
      continue;
    }
    const char *tab = memchr(p, '\t', (size_t)(stop - p));
    if (!tab || tab == p) return trace_fail(t, err, line, "expected VM-ID<TAB>values");
    if (memchr(p, 0, (size_t)(stop - p))) return trace_fail(t, err, line, "a NUL byte");
    const char *bad = NULL;
    long n = parse_values(tab + 1, stop, NULL, 0, &bad);
    if (n < 0) {
      char w[96];
      size_t wl = strcspn(bad, " \t\r\n");
      snprintf(w, sizeof w, "'%.*s' is not a percentage (0 to 100)", (int)(wl < 24 ? wl : 24), bad);
      return trace_fail(t, err, line, w);
    }
    if (n == 0) return trace_fail(t, err, line, "no values");
    if (t->nvms == 0) t->nticks = (size_t)n;
    else if ((size_t)n != t->nticks) {
      char w[64];
      snprintf(w, sizeof w, "%ld values, the first line has %zu", n, t->nticks);
      return trace_fail(t, err, line, w);
    }
    if (t->nvms == cap) {
      cap = cap ? 2 * cap : 64;
      char **nn = realloc(t->names, cap * sizeof *nn);
      if (!nn) return trace_fail(t, err, 0, "out of memory");
      t->names = nn;
    }
    if ((t->nvms + 1) * t->nticks > ucap) {
      ucap = ucap ? 2 * ucap : 64 * t->nticks;
      float *nu = realloc(t->util, ucap * sizeof *nu);
      if (!nu) return trace_fail(t, err, 0, "out of memory");
      t->util = nu;
    }
    parse_values(tab + 1, stop, t->util + t->nvms * t->nticks, t->nticks, &bad);
    t->names[t->nvms] = strndup(p, (size_t)(tab - p));
    if (!t->names[t->nvms]) return trace_fail(t, err, 0, "out of memory");
    /* One VM, one line: a second would be simulated as two VMs. */
    int first = bal_map_put(seen, t->names[t->nvms], line);
    if (first >= 0) {
      char w[160];
      snprintf(w, sizeof w, "VM '%.64s' again (first on line %d)", t->names[t->nvms], first);
      t->nvms++;
      return trace_fail(t, err, line, w);
    }
    t->nvms++;
    p = next;
  }
  if (t->nvms == 0) return trace_fail(t, err, 0, "no VM in the trace");
  return 0;
}

int sim_trace_parse(const char *text, size_t len, struct sim_trace *t, struct sim_error *err)
{
  memset(t, 0, sizeof *t);
  struct bal_map seen = { 0 };
  int rc = trace_lines(text, len, t, err, &seen);
  bal_map_free(&seen);
  return rc;
}

/* ---- Engine ---- */

struct list {
  int *v;
  int n, cap;
};

struct eng {
  const struct sim_trace *t;
  const struct sim_setup *s;
  enum sim_policy p;
  int nh, nv, k; /* k < 0: the start placement, at full size */
  double *cap, *vmips, *vram, *demand;
  double *load, *ram, *stale, *hist; /* hist: nh x SIM_HIST, MIPS i ticks ago */
  int *where;
  bool *gone; /* taken off its host while the policy decides */
  bool *dead; /* left the pool (sim_setup.cloudsim) */
  int *alive; /* vmbalance's pool: the VMs not dead; alive[i] is a VM */
  struct list *on;
  /* This tick's moves. */
  int *mv, *msrc, *mdst;
  int nmoves, capmoves;
};

static void list_add(struct list *l, int x)
{
  if (l->n == l->cap) {
    l->cap = l->cap ? 2 * l->cap : 4;
    l->v = realloc(l->v, (size_t)l->cap * sizeof *l->v);
    if (!l->v) abort();
  }
  l->v[l->n++] = x;
}

static void list_del(struct list *l, int x)
{
  for (int i = 0; i < l->n; i++)
    if (l->v[i] == x) {
      memmove(l->v + i, l->v + i + 1, (size_t)(l->n - i - 1) * sizeof *l->v);
      l->n--;
      return;
    }
}

/* VM v's CPU in MIPS i ticks ago (its full size at the start). */
static double vm_mips_at(const struct eng *e, int v, int i)
{
  if (e->k < 0) return e->vmips[v];
  int k = e->k - i < 0 ? 0 : e->k - i;
  return e->t->util[(size_t)v * e->t->nticks + (size_t)k] / 100.0 * e->vmips[v];
}

/* Adds (sign 1) or takes (-1) v's load to or from host h. */
static void charge(struct eng *e, int v, int h, int sign)
{
  e->load[h] += sign * e->demand[v];
  e->ram[h] += sign * e->vram[v];
  if (e->p == SIM_LR_MMT)
    for (int i = 0; i < SIM_HIST; i++) e->hist[(size_t)h * SIM_HIST + i] += sign * vm_mips_at(e, v, i);
}

static void record(struct eng *e, int v, int src, int dst)
{
  if (e->nmoves == e->capmoves) {
    e->capmoves = e->capmoves ? 2 * e->capmoves : 256;
    e->mv = realloc(e->mv, (size_t)e->capmoves * sizeof *e->mv);
    e->msrc = realloc(e->msrc, (size_t)e->capmoves * sizeof *e->msrc);
    e->mdst = realloc(e->mdst, (size_t)e->capmoves * sizeof *e->mdst);
    if (!e->mv || !e->msrc || !e->mdst) abort();
  }
  e->mv[e->nmoves] = v;
  e->msrc[e->nmoves] = src;
  e->mdst[e->nmoves++] = dst;
}

/* Moves v for good: off its host's list, onto the end of dst's. */
static void move_vm(struct eng *e, int v, int dst)
{
  int src = e->where[v];
  if (!e->gone[v]) charge(e, v, src, -1);
  e->gone[v] = false;
  list_del(&e->on[src], v);
  list_add(&e->on[dst], v);
  charge(e, v, dst, 1);
  e->where[v] = dst;
  record(e, v, src, dst);
}

/* ---- Overload detection: THR and LR ---- */

/* Whether host h is overloaded, with VM x on it as well when x >= 0. */
static bool overloaded(const struct eng *e, int h, int x)
{
  double cap = e->cap[h], load = e->load[h] + (x >= 0 ? e->demand[x] : 0);
  /* At the start, CloudSim's VMs already placed ask for no CPU yet (they run
   * nothing): the one being placed is weighed alone. */
  if (e->k < 0) load = x >= 0 ? e->demand[x] : 0;
  if (e->p == SIM_THR_MMT) return load / cap > e->s->thr;
  if (e->k + 1 < SIM_HIST) return load / cap > e->s->lr_fallback;
  /* Least squares over the last SIM_HIST ticks, oldest at x = 1, the newest at
   * x = SIM_HIST; predicted SIM_HIST + ceil(longest migration / tick) ahead. */
  double y[SIM_HIST], mean = 0, sxy = 0, sxx = 0, maxram = x >= 0 ? e->vram[x] : 0;
  for (int i = 0; i < SIM_HIST; i++) {
    double mips = e->hist[(size_t)h * SIM_HIST + i] + (x >= 0 ? vm_mips_at(e, x, i) : 0);
    y[SIM_HIST - 1 - i] = mips / cap;
    mean += y[SIM_HIST - 1 - i] / SIM_HIST;
  }
  const struct list *l = &e->on[h];
  for (int i = 0; i < l->n; i++)
    if (!e->gone[l->v[i]] && e->vram[l->v[i]] > maxram) maxram = e->vram[l->v[i]];
  double xm = (SIM_HIST + 1) / 2.0;
  for (int j = 0; j < SIM_HIST; j++) {
    sxy += (j + 1 - xm) * (y[j] - mean);
    sxx += (j + 1 - xm) * (j + 1 - xm);
  }
  double ahead = SIM_HIST + ceil(sim_migration_s(maxram) / e->s->interval_s);
  double predicted = mean + sxy / sxx * (ahead - xm);
  return predicted * e->s->lr_safety >= 1;
}

/* ---- PABFD ---- */

/* The host whose power rises least with v on it, among those not excluded that
 * can hold it (a core's MIPS, free MIPS, and at the start or with
 * sim_setup.memory free RAM) and that it does not make overloaded; -1 if none.
 * As CloudSim 3.0 (PowerVmAllocationPolicyMigrationAbstract.findHostForVm): the
 * power after is reckoned from the MIPS now reserved on the host (this tick's
 * moves included), the power before from its utilisation measured before the
 * moves, and a host with nothing reserved is not tested for overload. */
static int pabfd(const struct eng *e, int v, const bool *excluded)
{
  int best = -1;
  double best_diff = INFINITY, d = e->demand[v];
  for (int h = 0; h < e->nh; h++) {
    if (excluded && excluded[h]) continue;
    double cap = e->cap[h];
    if (cap / HOST_PES < d || cap - e->load[h] < d) continue;
    if ((e->k < 0 || e->s->memory) && HOST_RAM - e->ram[h] < e->vram[v]) continue;
    if (e->load[h] != 0 && overloaded(e, h, v)) continue;
    int type = sim_host_type((size_t)h);
    double diff = sim_power(type, (e->load[h] + d) / cap) - sim_power(type, e->stale[h] / cap);
    if (diff < best_diff) {
      best_diff = diff;
      best = h;
    }
  }
  return best;
}

static const struct eng *sort_eng;
static int by_demand_desc(const void *a, const void *b)
{
  /* The largest CPU demand first; equal ones in the order they came (stable). */
  const int *x = a, *y = b;
  double dx = sort_eng->demand[x[0]], dy = sort_eng->demand[y[0]];
  if (dx != dy) return dx > dy ? -1 : 1;
  return x[1] - y[1];
}

/* Sorts vms[0..n) by demand, stably (pairs of VM and position in tmp). */
static void sort_by_demand(const struct eng *e, int *vms, int n, int *tmp)
{
  for (int i = 0; i < n; i++) tmp[2 * i] = vms[i], tmp[2 * i + 1] = i;
  sort_eng = e;
  qsort(tmp, (size_t)n, 2 * sizeof *tmp, by_demand_desc);
  for (int i = 0; i < n; i++) vms[i] = tmp[2 * i];
}

/* ---- THR-MMT and LR-MMT ---- */

static void baseline_decide(struct eng *e, int *vms, int *tmp, int *keep, bool *over, bool *ex_under, bool *ex_place)
{
  int nh = e->nh, n = 0;
  /* Overloaded hosts shed their least-RAM VMs until they are not. */
  for (int h = 0; h < nh; h++) over[h] = e->on[h].n > 0 && overloaded(e, h, -1);
  for (int h = 0; h < nh; h++) {
    if (!over[h]) continue;
    for (;;) {
      int pick = -1;
      const struct list *l = &e->on[h];
      for (int i = 0; i < l->n; i++)
        if (!e->gone[l->v[i]] && (pick < 0 || e->vram[l->v[i]] < e->vram[pick])) pick = l->v[i];
      if (pick < 0) break;
      charge(e, pick, h, -1);
      e->gone[pick] = true;
      vms[n++] = pick;
      if (!overloaded(e, h, -1)) break;
    }
  }
  sort_by_demand(e, vms, n, tmp);
  for (int i = 0; i < n; i++) {
    int v = vms[i], dst = pabfd(e, v, over);
    if (dst >= 0) move_vm(e, v, dst);
    else {
      e->gone[v] = false; /* stays */
      charge(e, v, e->where[v], 1);
    }
  }
  /* Underloaded hosts, the least utilised first, emptied whole or not at all. */
  int nex = 0;
  for (int h = 0; h < nh; h++) {
    ex_under[h] = ex_place[h] = over[h] || e->stale[h] == 0;
    nex += ex_under[h];
  }
  while (nex < nh) {
    int u = -1;
    for (int h = 0; h < nh; h++)
      if (!ex_under[h] && e->stale[h] > 0 && (u < 0 || e->stale[h] / e->cap[h] < e->stale[u] / e->cap[u])) u = h;
    if (u < 0) break;
    ex_under[u] = ex_place[u] = true;
    nex++;
    n = 0;
    for (int i = 0; i < e->on[u].n; i++) vms[n++] = keep[i] = e->on[u].v[i];
    if (!n) continue;
    sort_by_demand(e, vms, n, tmp);
    int mark = e->nmoves, i;
    for (i = 0; i < n; i++) {
      int dst = pabfd(e, vms[i], ex_place);
      if (dst < 0) break;
      move_vm(e, vms[i], dst);
    }
    if (i < n) { /* undone, the last first, each back to its place on u */
      while (e->nmoves > mark) {
        e->nmoves--;
        int v = e->mv[e->nmoves], dst = e->mdst[e->nmoves];
        charge(e, v, dst, -1);
        list_del(&e->on[dst], v);
        charge(e, v, u, 1);
        e->where[v] = u;
      }
      /* And the host's own order of its VMs, as before. */
      memcpy(e->on[u].v, keep, (size_t)n * sizeof *keep);
      e->on[u].n = n;
      continue;
    }
    for (int j = mark; j < e->nmoves; j++)
      if (!ex_under[e->mdst[j]]) {
        ex_under[e->mdst[j]] = true;
        nex++;
      }
  }
}

/* ---- vmbalance ---- */

struct vmb {
  struct bal_host *hosts;
  struct bal_vm *all, *vms; /* every VM; those in this tick's pool */
  char (*hname)[32];
};

static int vmbalance_decide(struct eng *e, struct vmb *b, const char **why)
{
  /* The pool holds the VMs still in it, b->vms[i] being VM e->alive[i]. */
  int n = 0;
  for (int v = 0; v < e->nv; v++) {
    if (e->dead[v]) continue;
    b->vms[n] = b->all[v];
    b->vms[n].demand[BAL_CPU] = e->demand[v];
    b->vms[n].host = e->where[v];
    e->alive[n++] = v;
  }
  struct bal_pool pool = { b->hosts, (size_t)e->nh, b->vms, (size_t)n };
  struct bal_plan plan;
  /* The live planner as `plan` and `run` call it: nothing set for the simulation. */
  if (bal_plan_make(e->s->conf, &pool, &plan, why) < 0) return -1;
  for (size_t i = 0; i < plan.n; i++) move_vm(e, e->alive[plan.v[i].vm], plan.v[i].dst);
  bal_plan_free(&plan);
  return 0;
}

/* ---- The run ---- */

static double now_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void eng_free(struct eng *e)
{
  for (int h = 0; h < e->nh && e->on; h++) free(e->on[h].v);
  free(e->on);
  free(e->cap);
  free(e->vmips);
  free(e->vram);
  free(e->demand);
  free(e->load);
  free(e->ram);
  free(e->stale);
  free(e->hist);
  free(e->where);
  free(e->gone);
  free(e->dead);
  free(e->alive);
  free(e->mv);
  free(e->msrc);
  free(e->mdst);
}

static void *zalloc(size_t n, size_t size)
{
  void *p = calloc(n ? n : 1, size);
  if (!p) abort();
  return p;
}

/* Where the VMs start: the given placement, or PABFD in VM order at full size
 * with no host's utilisation measured yet (CloudSim's allocateHostForVm): each
 * VM's full MIPS is reserved on its host, the power before is the idle power,
 * and the overload test sees the new VM alone. */
static int start(struct eng *e, const char **why)
{
  e->k = -1;
  for (int v = 0; v < e->nv; v++) e->demand[v] = e->vmips[v];
  for (int v = 0; v < e->nv; v++) {
    int h = e->s->placement ? e->s->placement[v] : pabfd(e, v, NULL);
    if (h < 0 || h >= e->nh) return *why = "a VM fits on no host at its full size: too few hosts", -1;
    e->where[v] = h;
    list_add(&e->on[h], v);
    charge(e, v, h, 1);
  }
  return 0;
}

/* This tick's demands, loads and histories, before the policy decides. */
static void observe(struct eng *e, int k)
{
  e->k = k;
  memset(e->load, 0, (size_t)e->nh * sizeof *e->load);
  memset(e->ram, 0, (size_t)e->nh * sizeof *e->ram);
  memset(e->hist, 0, (size_t)e->nh * SIM_HIST * sizeof *e->hist);
  const float *u = e->t->util;
  size_t n = e->t->nticks;
  for (int v = 0; v < e->nv; v++) {
    if (e->dead[v]) continue;
    /* CloudSim asks at 300 k + 0.1 s, between this sample and the next: 0 only if
     * both are; the VM is then "completed" and leaves its host. */
    if (e->s->cloudsim && k > 0 && u[(size_t)v * n + (size_t)k] == 0 &&
        ((size_t)k + 1 == n || u[(size_t)v * n + (size_t)k + 1] == 0)) {
      e->dead[v] = true;
      e->demand[v] = 0;
      list_del(&e->on[e->where[v]], v);
      continue;
    }
    e->demand[v] = vm_mips_at(e, v, 0);
    charge(e, v, e->where[v], 1);
  }
  /* What CloudSim measures: the MIPS allocated, at most the capacity. */
  for (int h = 0; h < e->nh; h++) e->stale[h] = e->load[h] < e->cap[h] ? e->load[h] : e->cap[h];
}

int sim_run(const struct sim_trace *t, enum sim_policy p, const struct sim_setup *s, struct sim_result *r,
            const char **why)
{
  memset(r, 0, sizeof *r);
  if (s->nhosts < 1 || s->nhosts > 1000000 || t->nvms > 10000000 || !t->nticks) return *why = "no hosts or no ticks", -1;
  if (p == SIM_VMBALANCE && !s->conf) return *why = "vmbalance needs a config", -1;
  struct eng e = { .t = t, .s = s, .p = p, .nh = (int)s->nhosts, .nv = (int)t->nvms };
  size_t nh = s->nhosts, nv = t->nvms;
  e.cap = zalloc(nh, sizeof *e.cap);
  e.vmips = zalloc(nv, sizeof *e.vmips);
  e.vram = zalloc(nv, sizeof *e.vram);
  e.demand = zalloc(nv, sizeof *e.demand);
  e.load = zalloc(nh, sizeof *e.load);
  e.ram = zalloc(nh, sizeof *e.ram);
  e.stale = zalloc(nh, sizeof *e.stale);
  e.hist = zalloc(nh * SIM_HIST, sizeof *e.hist);
  e.where = zalloc(nv, sizeof *e.where);
  e.gone = zalloc(nv, sizeof *e.gone);
  e.dead = zalloc(nv, sizeof *e.dead);
  e.alive = zalloc(nv, sizeof *e.alive);
  e.on = zalloc(nh, sizeof *e.on);
  for (size_t h = 0; h < nh; h++) e.cap[h] = sim_host_mips(h);
  for (size_t v = 0; v < nv; v++) {
    int type = sim_vm_type(v, nv);
    e.vmips[v] = sim_vm_mips[type];
    e.vram[v] = sim_vm_ram[type];
  }
  /* Scratch for the policies. */
  int *vms = zalloc(nv, sizeof *vms), *tmp = zalloc(2 * nv, sizeof *tmp), *keep = zalloc(nv, sizeof *keep);
  bool *b1 = zalloc(nh, 1), *b2 = zalloc(nh, 1), *b3 = zalloc(nh, 1);
  double *pre = zalloc(nh, sizeof *pre), *tmig = zalloc(nh, sizeof *tmig), *tin = zalloc(nh, sizeof *tin);
  bool *pre_on = zalloc(nh, 1);
  struct vmb b = { zalloc(nh, sizeof *b.hosts), zalloc(nv, sizeof *b.all), zalloc(nv, sizeof *b.vms),
                   zalloc(nh, sizeof *b.hname) };
  for (size_t h = 0; h < nh; h++) {
    snprintf(b.hname[h], sizeof b.hname[h], "host%zu", h);
    b.hosts[h] = (struct bal_host){ .name = b.hname[h], .cap = { e.cap[h], s->memory ? HOST_RAM : 0, 0, 0 } };
  }
  for (size_t v = 0; v < nv; v++)
    b.all[v] = (struct bal_vm){ .name = t->names[v], .demand = { 0, e.vram[v], 0, 0 }, .mem_mib = e.vram[v],
                                .priority = -1 };

  /* vmbalance starts where THR-MMT does. */
  struct sim_setup s0 = *s;
  e.s = &s0;
  if (p == SIM_VMBALANCE) e.p = SIM_THR_MMT;
  int rc = start(&e, why);
  e.p = p;
  double I = s->interval_s, energy = 0, active = 0, viol = 0, asked = 0, lost = 0, dsum = 0;
  for (size_t k = 0; rc == 0 && k < t->nticks; k++) {
    observe(&e, (int)k);
    for (int h = 0; h < e.nh; h++) {
      pre[h] = e.load[h];
      pre_on[h] = e.on[h].n > 0;
      tmig[h] = tin[h] = 0;
    }
    e.nmoves = 0;
    double t0 = now_ms();
    if (s->cloudsim && k == 0) {} /* CloudSim decides first at 300 s */
    else if (p == SIM_VMBALANCE) rc = vmbalance_decide(&e, &b, why);
    else baseline_decide(&e, vms, tmp, keep, b1, b2, b3);
    double dt = now_ms() - t0;
    dsum += dt;
    if (dt > r->decision_ms_max) r->decision_ms_max = dt;
    for (int i = 0; i < e.nmoves; i++) {
      int v = e.mv[i];
      double tm = sim_migration_s(e.vram[v]);
      lost += 0.1 * e.demand[v] * (tm < I ? tm : I);
      if (tm > tmig[e.msrc[i]]) tmig[e.msrc[i]] = tm;
      if (tm > tmig[e.mdst[i]]) tmig[e.mdst[i]] = tm;
      if (tm > tin[e.mdst[i]]) tin[e.mdst[i]] = tm;
    }
    r->migrations += e.nmoves;
    int off = 0;
    for (int h = 0; h < e.nh; h++) {
      double t1 = tmig[h] < I ? tmig[h] : I, t2 = I - t1, cap = e.cap[h];
      int type = sim_host_type((size_t)h);
      bool on = e.on[h].n > 0;
      off += !on;
      if (pre_on[h]) {
        energy += sim_power(type, pre[h] / cap) * t1;
        active += t1;
        viol += pre[h] > cap + 1e-9 ? t1 : 0;
      }
      if (s->cloudsim && tin[h] > 0) {
        /* CloudSim counts a VM migrating in as asking its whole MIPS of the
         * destination, which gives it 10 %: the host "violates" until it ends. */
        double ti = tin[h] < I ? tin[h] : I, before = pre[h] > cap + 1e-9 ? (ti < t1 ? ti : t1) : 0;
        if (!pre_on[h]) active += ti;
        viol += ti - (pre_on[h] ? before : 0);
      }
      if (on) {
        energy += sim_power(type, e.load[h] / cap) * t2;
        active += t2;
        viol += e.load[h] > cap + 1e-9 ? t2 : 0;
      }
    }
    for (int v = 0; v < e.nv; v++) asked += e.demand[v] * I;
    r->hosts_off_mean += off;
    r->active_mean += e.nh - off;
    r->hosts_off_end = off;
  }
  for (int v = 0; v < e.nv; v++) r->vms_end += !e.dead[v];
  if (rc == 0) {
    double nt = (double)t->nticks;
    r->energy_kwh = energy / 3.6e6;
    r->slatah = active > 0 ? viol / active : 0;
    r->pdm = asked > 0 ? lost / asked : 0;
    r->slav = r->slatah * r->pdm;
    r->hosts_off_mean /= nt;
    r->active_mean /= nt;
    r->decision_ms_mean = dsum / nt;
  }
  free(vms);
  free(tmp);
  free(keep);
  free(b1);
  free(b2);
  free(b3);
  free(pre);
  free(tmig);
  free(tin);
  free(pre_on);
  free(b.hosts);
  free(b.all);
  free(b.vms);
  free(b.hname);
  eng_free(&e);
  return rc;
}
