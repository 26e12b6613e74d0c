/* Planner speed, one core (issue 10): a synthetic pool of HOSTS hosts and VMS VMs,
 * imbalanced, with RULES rules, planned at a level; prints the CPU time of the
 * config's parse and of the plan, the moves and the spread before and after.
 *   bench/balance-plan [HOSTS [VMS [RULES [LEVEL [POLICY]]]]]
 * defaults 5000 50000 100 3 balance; the target is under 1 s. The pool is
 * the same every run (a fixed seed). To see how it grows:
 *   for v in 1000 10000 50000; do bench/balance-plan 5000 $v; done */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../vmbalance/plan.h"

static unsigned long long rng = 88172645463325252ull;
static double uniform(void)
{
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return (double)(rng >> 11) / 9007199254740992.0;
}

static double cpu_seconds(void)
{
  struct timespec t;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
  int nh = argc > 1 ? atoi(argv[1]) : 5000, nv = argc > 2 ? atoi(argv[2]) : 50000;
  int nr = argc > 3 ? atoi(argv[3]) : 100, level = argc > 4 ? atoi(argv[4]) : 3;
  const char *policy = argc > 5 ? argv[5] : "balance";
  if (nh < 2 || nv < 1 || nr < 0 || level < 1 || level > 5) {
    fprintf(stderr, "usage: balance-plan [HOSTS [VMS [RULES [LEVEL [POLICY]]]]]\n");
    return 2;
  }
  struct bal_host *hosts = calloc((size_t)nh, sizeof *hosts);
  struct bal_vm *vms = calloc((size_t)nv, sizeof *vms);
  char *names = calloc((size_t)(nh + nv), 16);
  double *cpu = calloc((size_t)nh, sizeof *cpu), *mem = calloc((size_t)nh, sizeof *mem);
  if (!hosts || !vms || !names || !cpu || !mem) return 1;
  /* Hosts of 64 cores and 512 GiB, 10 Gbit/s, 2 GB/s of disk. */
  for (int h = 0; h < nh; h++) {
    char *n = names + (size_t)h * 16;
    snprintf(n, 16, "kvm%d", h);
    hosts[h] = (struct bal_host){ .name = n, .cap = { 6400, 524288, 2000, 1250 }, .base = { 100, 8192, 0, 0 } };
  }
  /* VMs of 1-8 vCPUs and 2-32 GiB; a third of the hosts get twice their share. */
  for (int v = 0; v < nv; v++) {
    char *n = names + (size_t)(nh + v) * 16;
    snprintf(n, 16, "vm%d", v);
    double c = 20 + uniform() * 400, m = 2048 + uniform() * 30720;
    int h;
    for (int tries = 0;; tries++) {
      h = uniform() < 0.5 ? (int)(uniform() * nh / 3) : (int)(uniform() * nh);
      if (cpu[h] + c < 6000 && mem[h] + m < 500000) break;
      if (tries > 100) return fprintf(stderr, "balance-plan: the VMs do not fit the hosts\n"), 1;
    }
    cpu[h] += c;
    mem[h] += m;
    vms[v] = (struct bal_vm){ .name = n, .demand = { c, m, uniform() * 40, uniform() * 25 }, .mem_mib = m,
                              .dirty_mibs = uniform() * 200, .priority = (int)(uniform() * 101), .host = h };
  }
  /* The rules: anti-affinity triples, affinity pairs, pins, exclusions, and one
   * host in maintenance in every ten rules. */
  size_t cap = 64 + (size_t)nr * 64, len = 0;
  char *conf = malloc(cap);
  len += (size_t)snprintf(conf, cap, "policy %s\nlevel %d\n", policy, level);
  for (int r = 0; r < nr; r++) {
    int a = (int)(uniform() * nv), b = (int)(uniform() * nv), c = (int)(uniform() * nv), h = (int)(uniform() * nh);
    if (a == b || b == c || a == c) continue;
    switch (r % 10) {
    case 0: case 1: case 2: case 3:
      len += (size_t)snprintf(conf + len, cap - len, "anti-affinity vm%d vm%d vm%d\n", a, b, c);
      break;
    case 4: case 5:
      len += (size_t)snprintf(conf + len, cap - len, "affinity vm%d vm%d\n", a, b);
      break;
    case 6: case 7:
      len += (size_t)snprintf(conf + len, cap - len, "pin vm%d kvm%d kvm%d\n", a, h, (h + 1) % nh);
      break;
    case 8:
      len += (size_t)snprintf(conf + len, cap - len, "exclude vm%d kvm%d\n", a, h);
      break;
    default:
      len += (size_t)snprintf(conf + len, cap - len, "maintenance kvm%d\n", h);
      break;
    }
  }
  struct bal_config c;
  struct bal_error e;
  double t0 = cpu_seconds();
  if (bal_config_parse(conf, len, &c, &e) != 0) {
    /* A random rule may contradict another: say so, it is the generator's. */
    fprintf(stderr, "balance-plan: generated config, line %d: %s\n", e.line, e.msg);
    return 1;
  }
  double t1 = cpu_seconds();
  struct bal_pool pool = { hosts, (size_t)nh, vms, (size_t)nv };
  struct bal_plan plan;
  const char *why;
  if (bal_plan_make(&c, &pool, &plan, &why) != 0) return fprintf(stderr, "balance-plan: %s\n", why), 1;
  double t2 = cpu_seconds();
  size_t mandatory = 0;
  for (size_t i = 0; i < plan.n; i++) mandatory += plan.v[i].why != BAL_WHY_BALANCE && plan.v[i].why != BAL_WHY_CONSOLIDATE;
  printf("hosts %d vms %d rules %d level %d %s: parse %.3f s, plan %.3f s, moves %zu (mandatory %zu), "
         "stuck %zu, off %zu, spread %.2f -> %.2f\n",
         nh, nv, nr, level, policy, t1 - t0, t2 - t1, plan.n, mandatory, plan.nstuck, plan.noff, plan.spread_before,
         plan.spread_after);
  bal_plan_free(&plan);
  bal_config_free(&c);
  free(conf);
  free(hosts);
  free(vms);
  free(names);
  free(cpu);
  free(mem);
  return 0;
}
