/* vmbalance's planner (man/vmbalance.conf.5).
 *
 * The pool is copied into a working state: the load of each host, where each VM
 * is, and the config's rules resolved to indexes (pins and exclusions per VM,
 * anti-affinity groups per VM, affinity rules as units that move together).
 * Three phases:
 *  1. mandatory moves, the units of the highest priority first: off hosts in
 *     maintenance, back to where pins allow, off excluded hosts, split affinity
 *     units joined, and anti-affinity kept (the lower priority VM moves);
 *  2. balance (levels 2-5): while the most loaded host is above the mean by more
 *     than the level's tolerance, the best move off it to one of the least loaded
 *     hosts (two indexed heaps of hosts by weighted load), lower priorities
 *     first, each move through the cost/benefit test; or
 *  2'. consolidate (levels 2-5): the least loaded hosts emptied one by one onto the
 *     most loaded that still fit (best fit), or left as they were.
 * Between 1 and 2, only when the caller asks (bal_plan_make_opts, as `simulate`
 * does): the relief of hosts above a fraction of their capacity, as few units off
 * each as bring it within its headroom, to the least loaded running hosts.
 * Every destination is checked against the rules and capacity as the moves
 * before it leave the pool, so that the plan holds when carried out in order.
 * Each unit moves at most once in a plan. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "plan.h"
#include "strmap.h"

const char *const bal_why_names[] = {
  [BAL_WHY_MAINTENANCE] = "host in maintenance", [BAL_WHY_PIN] = "pinned elsewhere",
  [BAL_WHY_EXCLUDE] = "excluded from its host",  [BAL_WHY_AFFINITY] = "affinity",
  [BAL_WHY_ANTI_AFFINITY] = "anti-affinity",     [BAL_WHY_BALANCE] = "balance",
  [BAL_WHY_CONSOLIDATE] = "consolidate",        [BAL_WHY_OVERLOAD] = "overloaded host",
};

/* An indexed binary heap of hosts by weighted load: the least (sign 1) or the
 * most (sign -1) loaded on top; a host's place is known, so that its key can
 * change. */
struct heap {
  int *a, *pos; /* pos[h] = -1: not in the heap */
  int n;
  double sign;
  const double *key;
};

struct ilist {
  int *v;
  int n, cap;
};

struct state {
  const struct bal_config *c;
  const struct bal_pool *p;
  int nh, nv;
  double wnorm[BAL_NRES]; /* weights over their sum */
  double *load;           /* nh x BAL_NRES */
  double *w;              /* weighted load, percent */
  bool *maint;
  int *host, *prio;
  int *next, *prev, *head; /* VMs of each host, a doubly linked list */
  int *unit, *unext;       /* a VM's unit (its root), members linked from the root */
  bool *moved, *stuck;     /* per unit root; per VM */
  bool *pinned;
  struct ilist *pins, *excl, *groups; /* per VM: hosts; hosts; anti-affinity groups */
  struct ilist *members;              /* per anti-affinity group */
  int ngroups;
  double wsum;
  int nactive;
  struct heap hmin, hmax;
  struct bal_plan *plan;
  size_t capmoves;
};

static void *xcalloc(size_t n, size_t size)
{
  void *p = calloc(n ? n : 1, size);
  if (!p) abort();
  return p;
}

static void ilist_add(struct ilist *l, int x)
{
  if (l->n == l->cap) {
    l->cap = l->cap ? 2 * l->cap : 4;
    l->v = realloc(l->v, (size_t)l->cap * sizeof *l->v);
    if (!l->v) abort();
  }
  l->v[l->n++] = x;
}

static bool ilist_has(const struct ilist *l, int x)
{
  for (int i = 0; i < l->n; i++)
    if (l->v[i] == x) return true;
  return false;
}

/* ---- Heaps ---- */

static bool above(const struct heap *hp, int i, int j)
{
  double a = hp->sign * hp->key[hp->a[i]], b = hp->sign * hp->key[hp->a[j]];
  return a < b || (a == b && hp->a[i] < hp->a[j]);
}

static void swap(struct heap *hp, int i, int j)
{
  int t = hp->a[i];
  hp->a[i] = hp->a[j];
  hp->a[j] = t;
  hp->pos[hp->a[i]] = i;
  hp->pos[hp->a[j]] = j;
}

static void sift(struct heap *hp, int i)
{
  while (i > 0 && above(hp, i, (i - 1) / 2)) {
    swap(hp, i, (i - 1) / 2);
    i = (i - 1) / 2;
  }
  for (;;) {
    int l = 2 * i + 1, r = l + 1, m = i;
    if (l < hp->n && above(hp, l, m)) m = l;
    if (r < hp->n && above(hp, r, m)) m = r;
    if (m == i) return;
    swap(hp, i, m);
    i = m;
  }
}

static void heap_init(struct heap *hp, int nh, double sign, const double *key)
{
  hp->a = xcalloc((size_t)nh, sizeof *hp->a);
  hp->pos = xcalloc((size_t)nh, sizeof *hp->pos);
  for (int h = 0; h < nh; h++) hp->pos[h] = -1;
  hp->n = 0;
  hp->sign = sign;
  hp->key = key;
}

static void heap_push(struct heap *hp, int h)
{
  hp->a[hp->n] = h;
  hp->pos[h] = hp->n++;
  sift(hp, hp->n - 1);
}

static void heap_remove(struct heap *hp, int h)
{
  int i = hp->pos[h];
  if (i < 0) return;
  swap(hp, i, --hp->n);
  hp->pos[h] = -1;
  if (i < hp->n) sift(hp, i);
}

static void heap_update(struct heap *hp, int h)
{
  if (hp->pos[h] >= 0) sift(hp, hp->pos[h]);
}

/* Up to k hosts from the top of the heap, in its order, without changing it: a
 * walk down the tree with a small sorted frontier. */
static int heap_best(const struct heap *hp, int k, int *out)
{
  int front[2 * 64 + 2], nf = 0, got = 0;
  if (k > 64) k = 64;
  if (hp->n) front[nf++] = 0;
  while (nf && got < k) {
    int i = front[--nf]; /* the frontier is kept sorted, best last */
    out[got++] = hp->a[i];
    for (int c = 2 * i + 1; c <= 2 * i + 2 && c < hp->n; c++) {
      int j = nf++;
      while (j > 0 && above(hp, front[j - 1], c)) {
        front[j] = front[j - 1];
        j--;
      }
      front[j] = c;
    }
  }
  return got;
}

/* ---- Load ---- */

static double weighted(const struct state *s, int h)
{
  const struct bal_host *H = &s->p->hosts[h];
  double w = 0;
  for (int r = 0; r < BAL_NRES; r++)
    if (H->cap[r] > 0) w += s->wnorm[r] * s->load[(size_t)h * BAL_NRES + r] / H->cap[r];
  return 100 * w;
}

/* The weighted load that demand d adds to host h, in points. */
static double share(const struct state *s, int h, const double *d)
{
  const struct bal_host *H = &s->p->hosts[h];
  double w = 0;
  for (int r = 0; r < BAL_NRES; r++)
    if (H->cap[r] > 0) w += s->wnorm[r] * d[r] / H->cap[r];
  return 100 * w;
}

static int find(int *parent, int v)
{
  while (parent[v] != v) v = parent[v] = parent[parent[v]];
  return v;
}

static void unit_demand(const struct state *s, int u, int except_host, double *d)
{
  memset(d, 0, BAL_NRES * sizeof *d);
  for (int v = u; v >= 0; v = s->unext[v])
    if (s->host[v] != except_host)
      for (int r = 0; r < BAL_NRES; r++) d[r] += s->p->vms[v].demand[r];
}

static bool allowed(const struct state *s, int v, int h)
{
  if (s->maint[h]) return false;
  if (s->pinned[v] && !ilist_has(&s->pins[v], h)) return false;
  return !ilist_has(&s->excl[v], h);
}

/* Whether unit u may go to host h: every member allowed there, no member with a
 * VM it is kept apart from there, and its members that are not there yet within
 * the limit (capacity less headroom, or the capacity itself). */
static bool fits(const struct state *s, int u, int h, bool headroom)
{
  double d[BAL_NRES];
  unit_demand(s, u, h, d);
  const struct bal_host *H = &s->p->hosts[h];
  double keep = headroom ? 1 - s->c->headroom / 100.0 : 1;
  for (int r = 0; r < BAL_NRES; r++)
    if (H->cap[r] > 0 && d[r] > 0 && s->load[(size_t)h * BAL_NRES + r] + d[r] > H->cap[r] * keep + 1e-9) return false;
  for (int v = u; v >= 0; v = s->unext[v]) {
    if (!allowed(s, v, h)) return false;
    for (int g = 0; g < s->groups[v].n; g++) {
      const struct ilist *m = &s->members[s->groups[v].v[g]];
      for (int k = 0; k < m->n; k++)
        if (m->v[k] != v && s->host[m->v[k]] == h && s->unit[m->v[k]] != u) return false;
    }
  }
  return true;
}

static void set_host(struct state *s, int v, int h)
{
  int old = s->host[v];
  /* Out of the old host's list, into the new one's. */
  if (s->prev[v] >= 0) s->next[s->prev[v]] = s->next[v];
  else s->head[old] = s->next[v];
  if (s->next[v] >= 0) s->prev[s->next[v]] = s->prev[v];
  s->prev[v] = -1;
  s->next[v] = s->head[h];
  if (s->head[h] >= 0) s->prev[s->head[h]] = v;
  s->head[h] = v;
  for (int r = 0; r < BAL_NRES; r++) {
    s->load[(size_t)old * BAL_NRES + r] -= s->p->vms[v].demand[r];
    s->load[(size_t)h * BAL_NRES + r] += s->p->vms[v].demand[r];
  }
  s->host[v] = h;
  for (int x = 0; x < 2; x++) {
    int k = x ? h : old;
    double nw = weighted(s, k);
    if (!s->maint[k]) s->wsum += nw - s->w[k];
    s->w[k] = nw;
    heap_update(&s->hmin, k);
    heap_update(&s->hmax, k);
  }
}

/* Moves every member of unit u that is not on h there, one plan line each. */
static void move_unit(struct state *s, int u, int h, enum bal_why why, double benefit, double cost)
{
  for (int v = u; v >= 0; v = s->unext[v]) {
    if (s->host[v] == h) continue;
    if (s->plan->n == s->capmoves) {
      s->capmoves = s->capmoves ? 2 * s->capmoves : 64;
      s->plan->v = realloc(s->plan->v, s->capmoves * sizeof *s->plan->v);
      if (!s->plan->v) abort();
    }
    s->plan->v[s->plan->n++] = (struct bal_move){ v, s->host[v], h, why, benefit, cost };
    set_host(s, v, h);
  }
  s->moved[u] = true;
}

static int unit_prio(const struct state *s, int u)
{
  int p = 0;
  for (int v = u; v >= 0; v = s->unext[v])
    if (s->prio[v] > p) p = s->prio[v];
  return p;
}

static bool unit_split(const struct state *s, int u)
{
  for (int v = s->unext[u]; v >= 0; v = s->unext[v])
    if (s->host[v] != s->host[u]) return true;
  return false;
}

/* ---- Setup ---- */

static void state_free(struct state *s)
{
  for (int v = 0; v < s->nv; v++) {
    free(s->pins[v].v);
    free(s->excl[v].v);
    free(s->groups[v].v);
  }
  for (int g = 0; g < s->ngroups; g++) free(s->members[g].v);
  free(s->members);
  free(s->pins);
  free(s->excl);
  free(s->groups);
  free(s->load);
  free(s->w);
  free(s->maint);
  free(s->host);
  free(s->prio);
  free(s->next);
  free(s->prev);
  free(s->head);
  free(s->unit);
  free(s->unext);
  free(s->moved);
  free(s->stuck);
  free(s->pinned);
  free(s->hmin.a);
  free(s->hmin.pos);
  free(s->hmax.a);
  free(s->hmax.pos);
}

static int state_init(struct state *s, const struct bal_config *c, const struct bal_pool *p, const int *where,
                      const char **why)
{
  memset(s, 0, sizeof *s);
  s->c = c;
  s->p = p;
  if (p->nhosts > INT32_MAX / 2 || p->nvms > INT32_MAX / 2) return *why = "pool too large", -1;
  int nh = s->nh = (int)p->nhosts, nv = s->nv = (int)p->nvms;
  /* The weights of the resources the pool measures: a resource no host has a
   * capacity for (disk I/O without disk-io= tags) does not dilute the others. */
  double wsum = 0;
  bool has[BAL_NRES] = { false };
  for (size_t h = 0; h < p->nhosts; h++)
    for (int r = 0; r < BAL_NRES; r++) has[r] |= p->hosts[h].cap[r] > 0;
  for (int r = 0; r < BAL_NRES; r++) wsum += has[r] ? c->weight_milli[r] : 0;
  for (int r = 0; r < BAL_NRES; r++) s->wnorm[r] = wsum > 0 ? (has[r] ? c->weight_milli[r] / wsum : 0) : 0.25;
  s->load = xcalloc((size_t)nh * BAL_NRES, sizeof *s->load);
  s->w = xcalloc((size_t)nh, sizeof *s->w);
  s->maint = xcalloc((size_t)nh, sizeof *s->maint);
  s->head = xcalloc((size_t)nh, sizeof *s->head);
  s->host = xcalloc((size_t)nv, sizeof *s->host);
  s->prio = xcalloc((size_t)nv, sizeof *s->prio);
  s->next = xcalloc((size_t)nv, sizeof *s->next);
  s->prev = xcalloc((size_t)nv, sizeof *s->prev);
  s->unit = xcalloc((size_t)nv, sizeof *s->unit);
  s->unext = xcalloc((size_t)nv, sizeof *s->unext);
  s->moved = xcalloc((size_t)nv, sizeof *s->moved);
  s->stuck = xcalloc((size_t)nv, sizeof *s->stuck);
  s->pinned = xcalloc((size_t)nv, sizeof *s->pinned);
  s->pins = xcalloc((size_t)nv, sizeof *s->pins);
  s->excl = xcalloc((size_t)nv, sizeof *s->excl);
  s->groups = xcalloc((size_t)nv, sizeof *s->groups);
  heap_init(&s->hmin, nh, 1, s->w);
  heap_init(&s->hmax, nh, -1, s->w);
  for (int h = 0; h < nh; h++) {
    for (int r = 0; r < BAL_NRES; r++)
      if (!(p->hosts[h].cap[r] < 1e300 && p->hosts[h].base[r] >= 0 && p->hosts[h].base[r] < 1e300))
        return *why = "a host's capacity or load is not a number", -1;
    s->head[h] = -1;
    s->maint[h] = p->hosts[h].maintenance;
    for (int r = 0; r < BAL_NRES; r++) s->load[(size_t)h * BAL_NRES + r] = p->hosts[h].base[r];
  }
  for (int v = nv - 1; v >= 0; v--) {
    int h = where ? where[v] : p->vms[v].host;
    if (h < 0 || h >= nh) return *why = "a VM on no host of the pool", -1;
    for (int r = 0; r < BAL_NRES; r++)
      if (!(p->vms[v].demand[r] >= 0 && p->vms[v].demand[r] < 1e300)) return *why = "a VM's demand is negative or not a number", -1;
    if (!(p->vms[v].mem_mib >= 0 && p->vms[v].mem_mib < 1e300 && p->vms[v].dirty_mibs >= 0 && p->vms[v].dirty_mibs < 1e300))
      return *why = "a VM's memory size or dirty rate is negative or not a number", -1;
    s->host[v] = h;
    s->prev[v] = -1;
    s->next[v] = s->head[h];
    if (s->head[h] >= 0) s->prev[s->head[h]] = v;
    s->head[h] = v;
    for (int r = 0; r < BAL_NRES; r++) s->load[(size_t)h * BAL_NRES + r] += p->vms[v].demand[r];
    s->prio[v] = p->vms[v].priority;
  }

  /* The config's names, resolved; names not in the pool are no concern of it. */
  struct bal_map hosts = { 0 }, vms = { 0 };
  for (int h = 0; h < nh; h++) bal_map_put(&hosts, p->hosts[h].name, h);
  for (int v = 0; v < nv; v++) bal_map_put(&vms, p->vms[v].name, v);
  int *parent = xcalloc((size_t)nv, sizeof *parent);
  for (int v = 0; v < nv; v++) parent[v] = v;
  for (size_t i = 0; i < c->n; i++) {
    const struct bal_stmt *st = &c->v[i];
    int v = st->kind == BAL_MAINTENANCE || st->kind == BAL_HA || st->kind == BAL_FENCE ? -1 : bal_map_get(&vms, st->w[0]);
    switch (st->kind) {
    case BAL_MAINTENANCE:
      for (size_t k = 0; k < st->n; k++) {
        int h = bal_map_get(&hosts, st->w[k]);
        if (h >= 0) s->maint[h] = true;
      }
      break;
    case BAL_PIN:
    case BAL_EXCLUDE:
      if (v < 0) break;
      if (st->kind == BAL_PIN) s->pinned[v] = true;
      for (size_t k = 1; k < st->n; k++) {
        int h = bal_map_get(&hosts, st->w[k]);
        if (h >= 0) ilist_add(st->kind == BAL_PIN ? &s->pins[v] : &s->excl[v], h);
      }
      break;
    case BAL_PRIORITY:
      if (v >= 0 && s->prio[v] < 0) s->prio[v] = st->value;
      break;
    case BAL_AFFINITY:
      for (size_t k = 1; k < st->n; k++) {
        int a = bal_map_get(&vms, st->w[k - 1]), b = bal_map_get(&vms, st->w[k]);
        /* A VM not in the pool does not break the chain of the others. */
        for (size_t j = k - 1; a < 0 && j > 0; j--) a = bal_map_get(&vms, st->w[j - 1]);
        if (a >= 0 && b >= 0) parent[find(parent, b)] = find(parent, a);
      }
      break;
    case BAL_ANTI_AFFINITY: {
      struct ilist m = { 0 };
      for (size_t k = 0; k < st->n; k++) {
        int x = bal_map_get(&vms, st->w[k]);
        if (x >= 0) ilist_add(&m, x);
      }
      if (m.n < 2) {
        free(m.v);
        break;
      }
      s->members = realloc(s->members, (size_t)(s->ngroups + 1) * sizeof *s->members);
      if (!s->members) abort();
      s->members[s->ngroups] = m;
      for (int k = 0; k < m.n; k++) ilist_add(&s->groups[m.v[k]], s->ngroups);
      s->ngroups++;
      break;
    }
    default:
      break;
    }
  }
  for (int v = 0; v < nv; v++)
    if (s->prio[v] < 0) s->prio[v] = BAL_PRIO_DEFAULT;
  /* A VM another run works on stays where it is, as if pinned there (its unit
   * with it); in maintenance, it is left where it is, not placed. */
  for (int v = 0; v < nv; v++) {
    if (!p->vms[v].busy) continue;
    s->pinned[v] = true;
    s->pins[v].n = 0;
    ilist_add(&s->pins[v], s->host[v]);
  }
  /* Units: each VM points to its root; the root heads a list of the members. */
  for (int v = 0; v < nv; v++) s->unext[v] = -1;
  for (int v = nv - 1; v >= 0; v--) {
    int r = find(parent, v);
    s->unit[v] = r;
    if (r != v) {
      s->unext[v] = s->unext[r];
      s->unext[r] = v;
    }
  }
  free(parent);
  bal_map_free(&hosts);
  bal_map_free(&vms);

  for (int h = 0; h < nh; h++) {
    s->w[h] = weighted(s, h);
    if (s->maint[h]) continue;
    s->wsum += s->w[h];
    s->nactive++;
    heap_push(&s->hmin, h);
    heap_push(&s->hmax, h);
  }
  return 0;
}

static double spread_of(const struct state *s)
{
  if (!s->nactive) return 0;
  double mean = s->wsum / s->nactive, sum = 0;
  for (int h = 0; h < s->nh; h++)
    if (!s->maint[h]) sum += (s->w[h] - mean) * (s->w[h] - mean);
  return sqrt(sum / s->nactive);
}

double bal_spread(const struct bal_config *c, const struct bal_pool *pool, const int *host)
{
  struct state s;
  const char *why;
  double r = state_init(&s, c, pool, host, &why) == 0 ? spread_of(&s) : NAN;
  state_free(&s);
  return r;
}

/* ---- Phase 1: mandatory moves ---- */

/* Why unit u must move, or -1. */
static int violation(const struct state *s, int u)
{
  for (int v = u; v >= 0; v = s->unext[v]) {
    int h = s->host[v];
    if (s->maint[h]) return BAL_WHY_MAINTENANCE;
    if (s->pinned[v] && !ilist_has(&s->pins[v], h)) return BAL_WHY_PIN;
    if (ilist_has(&s->excl[v], h)) return BAL_WHY_EXCLUDE;
  }
  if (unit_split(s, u)) return BAL_WHY_AFFINITY;
  /* Anti-affinity: the unit yields to a VM of a higher priority on its host (or
   * of the same priority and a lower index, so that one of two stays). */
  int pu = unit_prio(s, u);
  for (int v = u; v >= 0; v = s->unext[v])
    for (int g = 0; g < s->groups[v].n; g++) {
      const struct ilist *m = &s->members[s->groups[v].v[g]];
      for (int k = 0; k < m->n; k++) {
        int x = m->v[k];
        if (x == v || s->host[x] != s->host[v] || s->unit[x] == u) continue;
        int px = unit_prio(s, s->unit[x]);
        if (px > pu || (px == pu && s->unit[x] < u)) return BAL_WHY_ANTI_AFFINITY;
      }
    }
  return -1;
}

struct cand {
  int u, prio;
  double size;
};

static int by_prio_size(const void *a, const void *b)
{
  const struct cand *x = a, *y = b;
  if (x->prio != y->prio) return x->prio > y->prio ? -1 : 1;
  if (x->size != y->size) return x->size > y->size ? -1 : 1;
  return x->u < y->u ? -1 : x->u > y->u;
}

/* The best host for unit u among cand (all hosts when cand is NULL): for
 * balance the least loaded after the move, for consolidation the most (best
 * fit); within the headroom if any fits, else within capacity. Fewer members to
 * move wins over load: they are moves saved (a split unit joins where most of
 * it is). */
static int best_of(const struct state *s, int u, bool pack, const int *cand, int nc)
{
  double d[BAL_NRES];
  int n = cand ? nc : s->nh;
  for (int pass = 0; pass < 2; pass++) {
    int best = -1;
    double bw = 0;
    for (int i = 0; i < n; i++) {
      int h = cand ? cand[i] : i;
      if (s->maint[h] || !fits(s, u, h, pass == 0)) continue;
      unit_demand(s, u, h, d);
      double w = s->w[h] + share(s, h, d);
      int away = 0;
      for (int v = u; v >= 0; v = s->unext[v]) away += s->host[v] != h;
      double score = (pack ? -w : w) + 1000.0 * away;
      if (best < 0 || score < bw || (score == bw && h < best)) {
        best = h;
        bw = score;
      }
    }
    if (best >= 0) return best;
  }
  return -1;
}

/* A host for a mandatory move of unit u: among the 64 hosts at the top of the
 * heap that fits the policy and the hosts of u's members, else among all. */
static int place(const struct state *s, int u, bool pack)
{
  int cand[64 + 64];
  int nc = heap_best(pack ? &s->hmax : &s->hmin, 64, cand);
  for (int v = u; v >= 0 && nc < 128; v = s->unext[v]) cand[nc++] = s->host[v];
  int h = best_of(s, u, pack, cand, nc);
  return h >= 0 ? h : best_of(s, u, pack, NULL, 0);
}

static void mandatory(struct state *s)
{
  struct cand *cand = NULL;
  int n = 0;
  cand = xcalloc((size_t)s->nv, sizeof *cand);
  for (int v = 0; v < s->nv; v++) {
    if (s->unit[v] != v || violation(s, v) < 0) continue;
    double d[BAL_NRES], size = 0;
    unit_demand(s, v, -1, d);
    for (int r = 0; r < BAL_NRES; r++) size += s->wnorm[r] * d[r];
    cand[n++] = (struct cand){ v, unit_prio(s, v), size };
  }
  qsort(cand, (size_t)n, sizeof *cand, by_prio_size);
  for (int i = 0; i < n; i++) {
    int u = cand[i].u, why = violation(s, u);
    if (why < 0) continue; /* ended by an earlier move */
    int h = place(s, u, s->c->policy == BAL_CONSOLIDATE);
    if (h >= 0) {
      move_unit(s, u, h, (enum bal_why)why, 0, 0);
      continue;
    }
    for (int v = u; v >= 0; v = s->unext[v]) s->stuck[v] = true;
    s->moved[u] = true; /* and no other move for it either */
  }
  free(cand);
}

/* ---- Phase 2: balance ---- */

/* Seconds a pre-copy migration of unit u is expected to take. */
static double move_cost(const struct state *s, int u, int except_host)
{
  double bw = s->c->bandwidth, t = 0;
  for (int v = u; v >= 0; v = s->unext[v]) {
    if (s->host[v] == except_host) continue;
    double rate = bw - s->p->vms[v].dirty_mibs;
    if (rate < bw / 10) rate = bw / 10;
    t += s->p->vms[v].mem_mib / rate;
  }
  return t;
}

static void balance(struct state *s)
{
  static const double tolerance[] = { 0, 0, 20, 10, 5, 0 };
  double tol = tolerance[s->c->level], thr = s->c->threshold_milli / 1000.0;
  int dest[16];
  while (s->hmax.n > 1) {
    int a = s->hmax.a[0];
    double mean = s->wsum / s->nactive, da = s->w[a] - mean;
    if (da <= tol + 1e-9) break;
    int nd = heap_best(&s->hmin, 16, dest);
    int best_u = -1, best_h = -1, best_p = 0;
    double best_b = 0, best_c = 0;
    for (int v = s->head[a]; v >= 0; v = s->next[v]) {
      int u = s->unit[v];
      /* A unit is weighed once, from its root; a split one is phase 1's. */
      if (u != v || s->moved[u] || s->stuck[v] || unit_split(s, u)) continue;
      int pu = unit_prio(s, u);
      if (best_u >= 0 && pu > best_p) continue;
      double d[BAL_NRES];
      unit_demand(s, u, -1, d);
      double sa = share(s, a, d), cost = move_cost(s, u, -1);
      for (int i = 0; i < nd; i++) {
        int b = dest[i];
        if (b == a) continue;
        double db = s->w[b] - mean, sb = share(s, b, d);
        double gain = da * da + db * db - (da - sa) * (da - sa) - (db + sb) * (db + sb);
        if (gain <= 1e-9 || gain < thr * cost) continue;
        if (best_u >= 0 && pu == best_p && gain <= best_b) continue;
        if (!fits(s, u, b, true)) continue;
        best_u = u;
        best_h = b;
        best_p = pu;
        best_b = gain;
        best_c = cost;
      }
    }
    if (best_u < 0) {
      heap_remove(&s->hmax, a); /* nothing can leave it: the next one */
      continue;
    }
    move_unit(s, best_u, best_h, BAL_WHY_BALANCE, best_b, best_c);
  }
}

/* ---- Phase 2': consolidate ---- */

static int by_load(const void *a, const void *b, void *arg)
{
  const double *w = arg;
  int x = *(const int *)a, y = *(const int *)b;
  return w[x] < w[y] ? -1 : w[x] > w[y] ? 1 : x - y;
}

static void consolidate(struct state *s)
{
  /* Hosts without a VM are off already: never a target. */
  for (int h = 0; h < s->nh; h++)
    if (s->head[h] < 0) heap_remove(&s->hmax, h);
  int *order = xcalloc((size_t)s->nh, sizeof *order), no = 0;
  bool *received = xcalloc((size_t)s->nh, sizeof *received);
  for (int h = 0; h < s->nh; h++)
    if (!s->maint[h] && s->head[h] >= 0) order[no++] = h;
  qsort_r(order, (size_t)no, sizeof *order, by_load, s->w);
  struct cand *units = xcalloc((size_t)s->nv, sizeof *units);
  int target[64];
  for (int i = 0; i < no; i++) {
    int h = order[i], n = 0;
    if (received[h]) continue;
    bool can = true;
    for (int v = s->head[h]; v >= 0 && can; v = s->next[v]) {
      int u = s->unit[v];
      if (s->moved[u] || s->stuck[v] || (s->pinned[v] && s->pins[v].n == 1 && s->pins[v].v[0] == h)) can = false;
      if (u != v) continue;
      double d[BAL_NRES], size = 0;
      unit_demand(s, u, -1, d);
      for (int r = 0; r < BAL_NRES; r++) size += s->wnorm[r] * d[r];
      units[n++] = (struct cand){ u, unit_prio(s, u), size };
    }
    /* A member whose root is on another host: a split unit, not emptied. */
    for (int v = s->head[h]; v >= 0 && can; v = s->next[v])
      if (s->host[s->unit[v]] != h) can = false;
    if (!can) continue;
    heap_remove(&s->hmax, h);
    size_t mark = s->plan->n;
    qsort(units, (size_t)n, sizeof *units, by_prio_size);
    bool ok = true;
    for (int k = 0; k < n && ok; k++) {
      int nt = heap_best(&s->hmax, 64, target), t;
      for (t = 0; t < nt && !fits(s, units[k].u, target[t], true); t++) {}
      if (t == nt) ok = false;
      else move_unit(s, units[k].u, target[t], BAL_WHY_CONSOLIDATE, 0, 0);
    }
    if (!ok) {
      /* Undone, in reverse, and the host stays on. */
      while (s->plan->n > mark) {
        struct bal_move *m = &s->plan->v[--s->plan->n];
        set_host(s, m->vm, m->src);
        s->moved[s->unit[m->vm]] = false;
      }
      heap_push(&s->hmax, h);
      continue;
    }
    for (size_t k = mark; k < s->plan->n; k++) received[s->plan->v[k].dst] = true;
  }
  free(units);
  free(order);
  free(received);
}

/* ---- Relief of overloaded hosts (bal_plan_make_opts) ---- */

static bool over(const struct state *s, int h, double frac)
{
  const struct bal_host *H = &s->p->hosts[h];
  for (int r = 0; r < BAL_NRES; r++)
    if (H->cap[r] > 0 && s->load[(size_t)h * BAL_NRES + r] > H->cap[r] * frac + 1e-9) return true;
  return false;
}


/* A host for unit u off an overloaded host: the least loaded that fits within
 * the headroom, so that no move makes another host overloaded and the load
 * that just grew lands where there is most room left (packed hosts it would
 * push over again at the next rise; consolidation packs what stays low); a host
 * that holds VMs before an empty one, which would have to be powered on. The
 * source is marked in maintenance by the caller, so that it is never chosen. */
static int relief_dest(const struct state *s, int u)
{
  int cand[64];
  int nc = heap_best(&s->hmin, 64, cand);
  for (int pass = 0; pass < 3; pass++) {
    bool all = pass > 0, empty_too = pass == 2;
    int n = all ? s->nh : nc, best = -1;
    double bw = 0, d[BAL_NRES];
    for (int i = 0; i < n; i++) {
      int h = all ? i : cand[i];
      if (s->maint[h] || (!empty_too && s->head[h] < 0) || !fits(s, u, h, true)) continue;
      unit_demand(s, u, h, d);
      double w = s->w[h] + share(s, h, d);
      if (best < 0 || w < bw || (w == bw && h < best)) {
        best = h;
        bw = w;
      }
    }
    if (best >= 0) return best;
  }
  return -1;
}

/* How far host h is above the fraction keep of its capacity: the largest excess
 * over the resources, and which resource it is in (-1: none above). */
static double excess(const struct state *s, int h, double keep, int *res)
{
  const struct bal_host *H = &s->p->hosts[h];
  double worst = 0;
  *res = -1;
  for (int r = 0; r < BAL_NRES; r++) {
    double x = H->cap[r] > 0 ? s->load[(size_t)h * BAL_NRES + r] - H->cap[r] * keep : 0;
    if (x > 1e-9 && x / H->cap[r] > worst) {
      worst = x / H->cap[r];
      *res = r;
    }
  }
  return *res < 0 ? 0 : s->load[(size_t)h * BAL_NRES + *res] - H->cap[*res] * keep;
}

/* The unit to move next off host h, whose excess is x in resource r: the fewest
 * moves first (among the lowest priority, a unit that ends the excess alone, the
 * least memory of those, as its migration is the quickest); else the unit with
 * the most of r, which ends most of it. */
static int shed_pick(const struct state *s, const struct cand *units, int n, const bool *done, int r, double x)
{
  int best = -1, big = -1, prio = -1;
  double best_mem = 0, big_d = 0;
  for (int k = 0; k < n; k++)
    if (!done[k] && (prio < 0 || units[k].prio < prio)) prio = units[k].prio;
  for (int k = 0; k < n; k++) {
    if (done[k] || units[k].prio != prio) continue;
    double d[BAL_NRES];
    unit_demand(s, units[k].u, -1, d);
    if (d[r] + 1e-9 >= x && (best < 0 || units[k].size < best_mem)) {
      best = k;
      best_mem = units[k].size;
    }
    if (big < 0 || d[r] > big_d) {
      big = k;
      big_d = d[r];
    }
  }
  return best >= 0 ? best : big;
}

/* Each host above the relief level, in index order, sheds units until it is
 * back within its headroom, or nothing more can go. */
static void relieve(struct state *s, double frac)
{
  double keep = 1 - s->c->headroom / 100.0;
  struct cand *units = xcalloc((size_t)s->nv, sizeof *units);
  bool *done = xcalloc((size_t)s->nv, sizeof *done);
  for (int h = 0; h < s->nh; h++) {
    if (s->maint[h] || !over(s, h, frac)) continue;
    int n = 0;
    for (int v = s->head[h]; v >= 0; v = s->next[v]) {
      int u = s->unit[v];
      if (u != v || s->moved[u] || s->stuck[v] || unit_split(s, u)) continue;
      double mem = 0;
      for (int x = u; x >= 0; x = s->unext[x]) mem += s->p->vms[x].mem_mib;
      done[n] = false;
      units[n++] = (struct cand){ u, unit_prio(s, u), mem };
    }
    /* In maintenance while it sheds, so that it is no destination; its share of
     * the weighted sum, which set_host then leaves alone, is put right after. */
    double w0 = s->w[h];
    s->maint[h] = true;
    heap_remove(&s->hmin, h);
    heap_remove(&s->hmax, h);
    for (;;) {
      int r;
      double x = excess(s, h, keep, &r);
      if (r < 0) break;
      int k = shed_pick(s, units, n, done, r, x);
      if (k < 0) break;
      done[k] = true;
      int t = relief_dest(s, units[k].u);
      if (t >= 0) move_unit(s, units[k].u, t, BAL_WHY_OVERLOAD, 0, 0);
    }
    s->maint[h] = false;
    s->wsum += s->w[h] - w0;
    heap_push(&s->hmin, h);
    heap_push(&s->hmax, h);
  }
  free(units);
  free(done);
}

int bal_plan_make(const struct bal_config *c, const struct bal_pool *pool, struct bal_plan *plan, const char **why)
{
  /* Consolidation packs hosts: a host its VMs have grown past its capacity is
   * relieved first (the policy's counterpart of powering hosts on). */
  struct bal_plan_opts o = { .relieve = c->policy == BAL_CONSOLIDATE && c->level >= 2 ? 1 : 0 };
  return bal_plan_make_opts(c, pool, &o, plan, why);
}

int bal_plan_make_opts(const struct bal_config *c, const struct bal_pool *pool, const struct bal_plan_opts *o,
                       struct bal_plan *plan, const char **why)
{
  memset(plan, 0, sizeof *plan);
  struct state s;
  if (state_init(&s, c, pool, NULL, why) < 0) {
    state_free(&s);
    return -1;
  }
  s.plan = plan;
  plan->spread_before = spread_of(&s);
  mandatory(&s);
  if (o && o->relieve > 0) relieve(&s, o->relieve);
  if (c->level >= 2 && c->policy == BAL_BALANCE) balance(&s);
  if (c->level >= 2 && c->policy == BAL_CONSOLIDATE) consolidate(&s);
  if (c->policy == BAL_CONSOLIDATE) {
    /* Every host left without a VM, the emptied and the empty ones. */
    plan->off = xcalloc((size_t)s.nh, sizeof *plan->off);
    for (int h = 0; h < s.nh; h++)
      if (s.head[h] < 0 && !s.maint[h]) plan->off[plan->noff++] = h;
  }
  plan->stuck = xcalloc((size_t)s.nv, sizeof *plan->stuck);
  for (int v = 0; v < s.nv; v++)
    if (s.stuck[v]) plan->stuck[plan->nstuck++] = v;
  plan->spread_after = spread_of(&s);
  state_free(&s);
  return 0;
}

void bal_plan_free(struct bal_plan *plan)
{
  free(plan->v);
  free(plan->off);
  free(plan->stuck);
  memset(plan, 0, sizeof *plan);
}

int bal_plan_write(FILE *f, const struct bal_pool *pool, const struct bal_plan *plan, bool explain)
{
  fprintf(f, "#!vmkit-plan 1\n");
  for (size_t i = 0; i < plan->n; i++) {
    const struct bal_move *m = &plan->v[i];
    fprintf(f, "%s %s %s", pool->vms[m->vm].name, pool->hosts[m->src].name, pool->hosts[m->dst].name);
    if (explain && m->why == BAL_WHY_BALANCE)
      fprintf(f, "  # balance: gain %.1f, cost %.1f s", m->benefit, m->cost);
    else if (explain)
      fprintf(f, "  # %s", bal_why_names[m->why]);
    fputc('\n', f);
  }
  return fflush(f) == 0 && !ferror(f) ? 0 : -1;
}
