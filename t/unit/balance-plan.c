/* vmbalance's planner on synthetic pools: each plan is carried out here move by
 * move, with every host's capacity checked after each, and the rules checked at
 * the end. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../vmbalance/plan.h"

#define MAXH 16
#define MAXV 64

struct pool {
  struct bal_host h[MAXH];
  struct bal_vm v[MAXV];
  char names[MAXH + MAXV][16];
  size_t nh, nv;
  struct bal_pool p;
};

/* Hosts of capacity 100 CPU, 1000 memory, 100 disk, 100 network. */
static void hosts(struct pool *P, size_t n)
{
  memset(P, 0, sizeof *P);
  P->nh = n;
  for (size_t i = 0; i < n; i++) {
    snprintf(P->names[i], sizeof P->names[i], "h%zu", i);
    P->h[i].name = P->names[i];
    P->h[i].cap[BAL_CPU] = 100;
    P->h[i].cap[BAL_MEM] = 1000;
    P->h[i].cap[BAL_DISK] = 100;
    P->h[i].cap[BAL_NET] = 100;
  }
}

static int vm(struct pool *P, int host, double cpu, double mem)
{
  size_t i = P->nv++;
  snprintf(P->names[MAXH + i], sizeof P->names[0], "vm%zu", i);
  P->v[i] = (struct bal_vm){ .name = P->names[MAXH + i], .demand = { cpu, mem, cpu / 10, cpu / 10 },
                             .mem_mib = mem, .dirty_mibs = 0, .priority = -1, .host = host };
  return (int)i;
}

static struct bal_pool *pool_of(struct pool *P)
{
  P->p = (struct bal_pool){ P->h, P->nh, P->v, P->nv };
  return &P->p;
}

static void config(const char *text, struct bal_config *c)
{
  struct bal_error e;
  if (bal_config_parse(text, strlen(text), c, &e) != 0) fail_msg("config line %d: %s", e.line, e.msg);
}

/* Carries the plan out on a copy of the placement: every move from where the VM
 * is, to another host, and every host within its capacity after it. */
static void carry_out(const struct pool *P, const struct bal_plan *plan, int *where)
{
  for (size_t v = 0; v < P->nv; v++) where[v] = P->v[v].host;
  for (size_t i = 0; i < plan->n; i++) {
    const struct bal_move *m = &plan->v[i];
    assert_int_equal(where[m->vm], m->src);
    assert_int_not_equal(m->src, m->dst);
    where[m->vm] = m->dst;
    double load[MAXH][BAL_NRES] = { { 0 } };
    for (size_t v = 0; v < P->nv; v++)
      for (int r = 0; r < BAL_NRES; r++) load[where[v]][r] += P->v[v].demand[r];
    for (size_t h = 0; h < P->nh; h++)
      for (int r = 0; r < BAL_NRES; r++)
        if (load[h][r] > P->h[h].cap[r] + 1e-9) fail_msg("move %zu: host h%zu over capacity of resource %d", i, h, r);
  }
}

static size_t moves_of(const struct bal_plan *plan, int vm)
{
  size_t n = 0;
  for (size_t i = 0; i < plan->n; i++) n += plan->v[i].vm == vm;
  return n;
}

static void imbalanced_pool_spread_drops(void **state)
{
  struct pool P;
  struct bal_config c;
  struct bal_plan plan;
  const char *why;
  hosts(&P, 4);
  for (int i = 0; i < 8; i++) vm(&P, 0, 10, 100);
  vm(&P, 1, 10, 100);
  vm(&P, 2, 5, 50);
  config("level 3\nthreshold 0\n", &c);
  assert_int_equal(bal_plan_make(&c, pool_of(&P), &plan, &why), 0);
  assert_true(plan.n > 0);
  assert_true(plan.spread_after < plan.spread_before / 2);
  int where[MAXV];
  carry_out(&P, &plan, where);
  /* The plan's own figure is the placement's. */
  double after = bal_spread(&c, pool_of(&P), where);
  assert_true(after > plan.spread_after - 1e-6 && after < plan.spread_after + 1e-6);
  for (size_t i = 0; i < plan.n; i++) assert_int_equal(plan.v[i].why, BAL_WHY_BALANCE);
  bal_plan_free(&plan);

  /* Level 5 goes at least as far as level 3. */
  double l3 = after;
  bal_config_free(&c);
  config("level 5\nthreshold 0\n", &c);
  assert_int_equal(bal_plan_make(&c, pool_of(&P), &plan, &why), 0);
  assert_true(plan.spread_after <= l3 + 1e-9);
  carry_out(&P, &plan, where);
  bal_plan_free(&plan);
  bal_config_free(&c);
}

static void balanced_pool_stays(void **state)
{
  struct pool P;
  struct bal_config c;
  struct bal_plan plan;
  const char *why;
  hosts(&P, 3);
  for (int h = 0; h < 3; h++) vm(&P, h, 20, 200);
  config("level 5\nthreshold 0\n", &c);
  assert_int_equal(bal_plan_make(&c, pool_of(&P), &plan, &why), 0);
  assert_int_equal(plan.n, 0);
  bal_plan_free(&plan);
  bal_config_free(&c);
}

static void anti_affinity_kept(void **state)
{
  struct pool P;
  struct bal_config c;
  struct bal_plan plan;
  const char *why;
  int where[MAXV];
  /* h0 busy with a and four others; h1 holds b and is the least loaded: a may
   * not go there, the others may. */
  hosts(&P, 3);
  int a = vm(&P, 0, 30, 300);
  for (int i = 0; i < 4; i++) vm(&P, 0, 10, 100);
  int b = vm(&P, 1, 1, 10);
  vm(&P, 2, 20, 200);
  config("level 5\nthreshold 0\nanti-affinity vm0 vm5\n", &c);
  assert_int_equal(bal_plan_make(&c, pool_of(&P), &plan, &why), 0);
  carry_out(&P, &plan, where);
  assert_int_not_equal(where[a], where[b]);
  assert_true(plan.spread_after < plan.spread_before);
  bal_plan_free(&plan);
  bal_config_free(&c);

  /* Broken on arrival: the VM of the lower priority moves, even at level 1. */
  hosts(&P, 3);
  a = vm(&P, 0, 10, 100);
  b = vm(&P, 0, 10, 100);
  config("level 1\nanti-affinity vm0 vm1\npriority vm0 20\npriority vm1 80\n", &c);
  assert_int_equal(bal_plan_make(&c, pool_of(&P), &plan, &why), 0);
  assert_int_equal(plan.n, 1);
  assert_int_equal(plan.v[0].vm, a);
  assert_int_equal(plan.v[0].why, BAL_WHY_ANTI_AFFINITY);
  carry_out(&P, &plan, where);
  assert_int_not_equal(where[a], where[b]);
  bal_plan_free(&plan);
  bal_config_free(&c);
}

static void maintenance_host_evacuated(void **state)
{
  struct pool P;
  struct bal_config c;
  struct bal_plan plan;
  const char *why;
  int where[MAXV];
  hosts(&P, 4);
  for (int i = 0; i < 6; i++) vm(&P, 1, 10, 100);
  vm(&P, 2, 10, 100);
  vm(&P, 3, 10, 100);
  P.h[3].maintenance = true; /* from the pool, and h1 from the config */
  config("level 3\nmaintenance h1\n", &c);
  assert_int_equal(bal_plan_make(&c, pool_of(&P), &plan, &why), 0);
  carry_out(&P, &plan, where);
  for (size_t v = 0; v < P.nv; v++) {
    assert_int_not_equal(where[v], 1);
    assert_int_not_equal(where[v], 3);
  }
  assert_int_equal(plan.nstuck, 0);
  for (size_t i = 0; i < plan.n; i++) assert_int_equal(plan.v[i].why, BAL_WHY_MAINTENANCE);
  bal_plan_free(&plan);
  bal_config_free(&c);
}

static void pinning_respected(void **state)
{
  struct pool P;
  struct bal_config c;
  struct bal_plan plan;
  const char *why;
  int where[MAXV];
  hosts(&P, 3);
  int stay = vm(&P, 0, 30, 300);          /* pinned where it is, on the busiest host */
  int go = vm(&P, 0, 10, 100);            /* pinned to h2 */
  int notthere = vm(&P, 1, 5, 50);        /* excluded from h1, where it is */
  for (int i = 0; i < 4; i++) vm(&P, 0, 10, 100);
  config("level 5\nthreshold 0\npin vm0 h0\npin vm1 h2 h9\nexclude vm2 h1 h2\n", &c);
  assert_int_equal(bal_plan_make(&c, pool_of(&P), &plan, &why), 0);
  carry_out(&P, &plan, where);
  assert_int_equal(where[stay], 0);
  assert_int_equal(moves_of(&plan, stay), 0);
  assert_int_equal(where[go], 2);
  assert_int_equal(where[notthere], 0);
  assert_int_equal(plan.v[0].why, BAL_WHY_PIN); /* the mandatory moves first */
  bal_plan_free(&plan);
  bal_config_free(&c);
}

/* A VM another run works on (its lock held: a move rolling back) stays, even on a
 * host in maintenance and against its pin; the others move as before. */
static void busy_vms_stay(void **state)
{
  struct pool P;
  struct bal_config c;
  struct bal_plan plan;
  const char *why;
  int where[MAXV];
  hosts(&P, 3);
  int busy = vm(&P, 0, 30, 300);
  int pinned = vm(&P, 0, 10, 100);
  for (int i = 0; i < 4; i++) vm(&P, 0, 10, 100);
  P.v[busy].busy = P.v[pinned].busy = true;
  config("level 5\nthreshold 0\nmaintenance h0\npin vm1 h2\n", &c);
  assert_int_equal(bal_plan_make(&c, pool_of(&P), &plan, &why), 0);
  carry_out(&P, &plan, where);
  assert_int_equal(moves_of(&plan, busy), 0);
  assert_int_equal(moves_of(&plan, pinned), 0);
  for (size_t v = 2; v < P.nv; v++) assert_int_not_equal(where[v], 0);
  assert_int_equal(plan.nstuck, 2); /* the busy ones, left where they are */
  bal_plan_free(&plan);
  bal_config_free(&c);
}

static void capacity_never_exceeded(void **state)
{
  struct pool P;
  struct bal_config c;
  struct bal_plan plan;
  const char *why;
  int where[MAXV];
  /* h0 in maintenance with more than the others can take: what fits moves, the
   * rest is reported, none over capacity (headroom may be used). */
  hosts(&P, 3);
  for (int i = 0; i < 5; i++) vm(&P, 0, 20, 100);
  vm(&P, 1, 50, 100);
  vm(&P, 2, 50, 100);
  config("level 5\nthreshold 0\nheadroom 20\nmaintenance h0\n", &c);
  assert_int_equal(bal_plan_make(&c, pool_of(&P), &plan, &why), 0);
  carry_out(&P, &plan, where);
  assert_int_equal(plan.n, 4);
  assert_int_equal(plan.nstuck, 1);
  for (size_t i = 0; i < plan.nstuck; i++) assert_int_equal(where[plan.stuck[i]], 0);
  bal_plan_free(&plan);
  bal_config_free(&c);

  /* Memory full on the idle host: balance does not move there. */
  hosts(&P, 2);
  for (int i = 0; i < 4; i++) vm(&P, 0, 20, 100);
  vm(&P, 1, 1, 950);
  config("level 5\nthreshold 0\nheadroom 0\n", &c);
  assert_int_equal(bal_plan_make(&c, pool_of(&P), &plan, &why), 0);
  assert_int_equal(plan.n, 0);
  bal_plan_free(&plan);
  bal_config_free(&c);
}

static void level1_only_mandatory(void **state)
{
  struct pool P;
  struct bal_config c;
  struct bal_plan plan;
  const char *why;
  int where[MAXV];
  hosts(&P, 4);
  for (int i = 0; i < 8; i++) vm(&P, 0, 10, 100); /* imbalanced */
  vm(&P, 3, 10, 100);                              /* on a host in maintenance */
  config("level 1\nthreshold 0\nmaintenance h3\n", &c);
  assert_int_equal(bal_plan_make(&c, pool_of(&P), &plan, &why), 0);
  assert_int_equal(plan.n, 1);
  assert_int_equal(plan.v[0].vm, 8);
  assert_int_equal(plan.v[0].why, BAL_WHY_MAINTENANCE);
  carry_out(&P, &plan, where);
  /* Placed where it lowers the spread: not on the busy host. */
  assert_int_not_equal(where[8], 0);
  bal_plan_free(&plan);
  bal_config_free(&c);
}

static void priorities_move_last(void **state)
{
  struct pool P;
  struct bal_config c;
  struct bal_plan plan;
  const char *why;
  /* Two like VMs on a busy host; one move is enough: the low priority one. */
  hosts(&P, 2);
  vm(&P, 0, 30, 300);
  vm(&P, 0, 30, 300);
  config("level 4\nthreshold 0\npriority vm0 90\npriority vm1 10\n", &c);
  assert_int_equal(bal_plan_make(&c, pool_of(&P), &plan, &why), 0);
  assert_int_equal(plan.n, 1);
  assert_int_equal(plan.v[0].vm, 1);
  bal_plan_free(&plan);
  bal_config_free(&c);
  /* The other way round, the other VM. */
  config("level 4\nthreshold 0\npriority vm0 10\npriority vm1 90\n", &c);
  assert_int_equal(bal_plan_make(&c, pool_of(&P), &plan, &why), 0);
  assert_int_equal(plan.n, 1);
  assert_int_equal(plan.v[0].vm, 0);
  bal_plan_free(&plan);
  bal_config_free(&c);
}

static void cost_holds_back_busy_memory(void **state)
{
  struct pool P;
  struct bal_config c;
  struct bal_plan plan;
  const char *why;
  hosts(&P, 2);
  vm(&P, 0, 30, 400);
  vm(&P, 0, 30, 400);
  P.v[0].mem_mib = P.v[1].mem_mib = 131072;
  P.v[0].dirty_mibs = P.v[1].dirty_mibs = 2000; /* faster than the bandwidth */
  config("level 5\nthreshold 1\n", &c);
  assert_int_equal(bal_plan_make(&c, pool_of(&P), &plan, &why), 0);
  assert_int_equal(plan.n, 0);
  bal_plan_free(&plan);
  /* A small quiet VM of the same load is worth it. */
  P.v[1].mem_mib = 1024;
  P.v[1].dirty_mibs = 10;
  assert_int_equal(bal_plan_make(&c, pool_of(&P), &plan, &why), 0);
  assert_int_equal(plan.n, 1);
  assert_int_equal(plan.v[0].vm, 1);
  assert_true(plan.v[0].benefit >= plan.v[0].cost);
  bal_plan_free(&plan);
  bal_config_free(&c);
}

static void affinity_moves_together(void **state)
{
  struct pool P;
  struct bal_config c;
  struct bal_plan plan;
  const char *why;
  int where[MAXV];
  /* Split on arrival: joined. */
  hosts(&P, 3);
  int a = vm(&P, 0, 10, 100), b = vm(&P, 1, 10, 100), d = vm(&P, 2, 10, 100);
  config("level 1\naffinity vm0 vm1 vm2\n", &c);
  assert_int_equal(bal_plan_make(&c, pool_of(&P), &plan, &why), 0);
  assert_int_equal(plan.n, 2);
  carry_out(&P, &plan, where);
  assert_int_equal(where[a], where[b]);
  assert_int_equal(where[b], where[d]);
  bal_plan_free(&plan);
  bal_config_free(&c);
  /* Moved for balance: both, or neither. */
  hosts(&P, 2);
  a = vm(&P, 0, 15, 150);
  b = vm(&P, 0, 15, 150);
  for (int i = 0; i < 4; i++) vm(&P, 0, 10, 100);
  config("level 5\nthreshold 0\naffinity vm0 vm1\n", &c);
  assert_int_equal(bal_plan_make(&c, pool_of(&P), &plan, &why), 0);
  carry_out(&P, &plan, where);
  assert_int_equal(where[a], where[b]);
  assert_true(plan.spread_after < plan.spread_before);
  bal_plan_free(&plan);
  bal_config_free(&c);
}

static void consolidate_empties_a_host(void **state)
{
  struct pool P;
  struct bal_config c;
  struct bal_plan plan;
  const char *why;
  int where[MAXV];
  hosts(&P, 4);
  for (int h = 0; h < 3; h++) {
    vm(&P, h, 20, 200);
    vm(&P, h, 10, 100);
  }
  /* h3 has no VM: off from the start. */
  config("policy consolidate\nlevel 3\nheadroom 10\n", &c);
  assert_int_equal(bal_plan_make(&c, pool_of(&P), &plan, &why), 0);
  carry_out(&P, &plan, where);
  assert_true(plan.noff >= 2);
  for (size_t i = 0; i < plan.noff; i++)
    for (size_t v = 0; v < P.nv; v++) assert_int_not_equal(where[v], plan.off[i]);
  /* Within the headroom: 90 of each 100. */
  double cpu[MAXH] = { 0 };
  for (size_t v = 0; v < P.nv; v++) cpu[where[v]] += P.v[v].demand[BAL_CPU];
  for (size_t h = 0; h < P.nh; h++) assert_true(cpu[h] <= 90);
  for (size_t i = 0; i < plan.n; i++) assert_int_equal(plan.v[i].why, BAL_WHY_CONSOLIDATE);
  bal_plan_free(&plan);
  bal_config_free(&c);

  /* Level 1: nothing but the mandatory moves. */
  config("policy consolidate\nlevel 1\n", &c);
  assert_int_equal(bal_plan_make(&c, pool_of(&P), &plan, &why), 0);
  assert_int_equal(plan.n, 0);
  assert_int_equal(plan.noff, 1);
  assert_int_equal(plan.off[0], 3);
  bal_plan_free(&plan);
  bal_config_free(&c);

  /* A host whose VMs fit nowhere else stays on, untouched. */
  hosts(&P, 2);
  vm(&P, 0, 60, 100);
  vm(&P, 1, 60, 100);
  config("policy consolidate\nlevel 5\nanti-affinity vm0 vm1\n", &c);
  assert_int_equal(bal_plan_make(&c, pool_of(&P), &plan, &why), 0);
  assert_int_equal(plan.n, 0);
  assert_int_equal(plan.noff, 0);
  bal_plan_free(&plan);
  bal_config_free(&c);
}

static void writes_plan_lines(void **state)
{
  struct pool P;
  struct bal_config c;
  struct bal_plan plan;
  const char *why;
  hosts(&P, 2);
  vm(&P, 0, 10, 100);
  config("maintenance h0\n", &c);
  assert_int_equal(bal_plan_make(&c, pool_of(&P), &plan, &why), 0);
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  assert_int_equal(bal_plan_write(f, pool_of(&P), &plan, false), 0);
  assert_int_equal(bal_plan_write(f, pool_of(&P), &plan, true), 0);
  fclose(f);
  assert_string_equal(buf, "#!vmkit-plan 1\nvm0 h0 h1\n#!vmkit-plan 1\nvm0 h0 h1  # host in maintenance\n");
  free(buf);
  bal_plan_free(&plan);
  bal_config_free(&c);

  /* A VM on no host is refused. */
  P.v[0].host = 7;
  assert_int_equal(bal_plan_make(&c, pool_of(&P), &plan, &why), -1);
  assert_string_equal(why, "a VM on no host of the pool");
}


/* Random small pools and rules, from a fixed seed: whatever the plan, every host
 * stays within its capacity after each move, every unit moves at most once, and
 * any rule broken at the end was broken at the start by VMs the plan says it
 * could not place (plan.stuck). */
static unsigned long long seed = 0x9e3779b97f4a7c15ull;
static unsigned rnd(unsigned n)
{
  seed ^= seed << 13;
  seed ^= seed >> 7;
  seed ^= seed << 17;
  return (unsigned)(seed % n);
}

static void random_pools_keep_invariants(void **state)
{
  for (int round = 0; round < 300; round++) {
    struct pool P;
    size_t nh = 2 + rnd(7);
    hosts(&P, nh);
    double cpu[MAXH] = { 0 }, mem[MAXH] = { 0 };
    size_t nv = 1 + rnd(30);
    for (size_t i = 0; i < nv; i++) {
      double c = 1 + rnd(30), m = 10 + rnd(300);
      int h = (int)rnd(rnd(2) ? (unsigned)nh : 2);
      if (cpu[h] + c > 100 || mem[h] + m > 1000) continue;
      cpu[h] += c;
      mem[h] += m;
      int v = vm(&P, h, c, m);
      P.v[v].dirty_mibs = rnd(1500);
      P.v[v].mem_mib = 100 + rnd(20000);
      if (rnd(4) == 0) P.v[v].priority = (int)rnd(101);
    }
    if (P.nv < 2) continue;
    char text[2048];
    int len = snprintf(text, sizeof text, "policy %s\nlevel %u\nheadroom %u\nthreshold %u\n",
                       rnd(3) ? "balance" : "consolidate", 1 + rnd(5), rnd(40), rnd(3));
    int nr = (int)rnd(6);
    for (int r = 0; r < nr; r++) {
      unsigned a = rnd((unsigned)P.nv), b = rnd((unsigned)P.nv), c = rnd((unsigned)P.nv), h = rnd((unsigned)nh);
      switch (rnd(6)) {
      case 0: if (a != b && b != c && a != c) len += snprintf(text + len, sizeof text - (size_t)len, "anti-affinity vm%u vm%u vm%u\n", a, b, c); break;
      case 1: if (a != b) len += snprintf(text + len, sizeof text - (size_t)len, "affinity vm%u vm%u\n", a, b); break;
      case 2: len += snprintf(text + len, sizeof text - (size_t)len, "pin vm%u h%u\n", a, h); break;
      case 3: len += snprintf(text + len, sizeof text - (size_t)len, "exclude vm%u h%u\n", a, h); break;
      case 4: len += snprintf(text + len, sizeof text - (size_t)len, "maintenance h%u\n", h); break;
      default: len += snprintf(text + len, sizeof text - (size_t)len, "priority vm%u %u\n", a, rnd(101)); break;
      }
    }
    struct bal_config c;
    struct bal_error e;
    if (bal_config_parse(text, (size_t)len, &c, &e) != 0) continue; /* a random contradiction */
    struct bal_plan plan;
    const char *why;
    assert_int_equal(bal_plan_make(&c, pool_of(&P), &plan, &why), 0);
    int where[MAXV];
    carry_out(&P, &plan, where);
    bool stuck[MAXV] = { false }, moved[MAXV] = { false }, maint[MAXH] = { false };
    for (size_t i = 0; i < plan.nstuck; i++) stuck[plan.stuck[i]] = true;
    for (size_t i = 0; i < plan.n; i++) {
      if (moved[plan.v[i].vm]) fail_msg("round %d: vm%d moves twice", round, plan.v[i].vm);
      moved[plan.v[i].vm] = true;
      assert_false(stuck[plan.v[i].vm]);
    }
    for (size_t i = 0; i < c.n; i++) {
      const struct bal_stmt *st = &c.v[i];
      if (st->kind == BAL_MAINTENANCE) maint[atoi(st->w[0] + 1)] = true;
    }
    for (size_t i = 0; i < c.n; i++) {
      const struct bal_stmt *st = &c.v[i];
      int a = atoi(st->w[0] + 2);
      switch (st->kind) {
      case BAL_ANTI_AFFINITY:
        for (size_t x = 0; x < st->n; x++)
          for (size_t y = x + 1; y < st->n; y++) {
            int vx = atoi(st->w[x] + 2), vy = atoi(st->w[y] + 2);
            if (where[vx] == where[vy] && !((stuck[vx] || stuck[vy]) && !moved[vx] && !moved[vy]))
              fail_msg("round %d: anti-affinity of vm%d and vm%d broken on h%d\n%s", round, vx, vy, where[vx], text);
          }
        break;
      case BAL_AFFINITY: {
        int b = atoi(st->w[1] + 2);
        if (where[a] != where[b] && !stuck[a] && !stuck[b])
          fail_msg("round %d: affinity of vm%d and vm%d broken\n%s", round, a, b, text);
        break;
      }
      case BAL_PIN:
        if (where[a] != atoi(st->w[1] + 1) && !stuck[a]) fail_msg("round %d: pin of vm%d broken\n%s", round, a, text);
        break;
      case BAL_EXCLUDE:
        if (where[a] == atoi(st->w[1] + 1) && !stuck[a]) fail_msg("round %d: exclusion of vm%d broken\n%s", round, a, text);
        break;
      default:
        break;
      }
    }
    for (size_t v = 0; v < P.nv; v++)
      if (maint[where[v]] && !stuck[v]) fail_msg("round %d: vm%zu left on h%d in maintenance\n%s", round, v, where[v], text);
    bal_plan_free(&plan);
    bal_config_free(&c);
  }
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(imbalanced_pool_spread_drops),
    cmocka_unit_test(balanced_pool_stays),
    cmocka_unit_test(anti_affinity_kept),
    cmocka_unit_test(maintenance_host_evacuated),
    cmocka_unit_test(pinning_respected),
    cmocka_unit_test(busy_vms_stay),
    cmocka_unit_test(capacity_never_exceeded),
    cmocka_unit_test(level1_only_mandatory),
    cmocka_unit_test(priorities_move_last),
    cmocka_unit_test(cost_holds_back_busy_memory),
    cmocka_unit_test(affinity_moves_together),
    cmocka_unit_test(consolidate_empties_a_host),
    cmocka_unit_test(writes_plan_lines),
    cmocka_unit_test(random_pools_keep_invariants),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
