/* vmbalance's planner: moves that bring an in-memory pool to a policy
 * (man/vmbalance.conf.5), never breaking a rule or a host's capacity. Pure logic,
 * libc only: `plan` and `run` feed it from libvirt, `simulate` from a trace. */
#ifndef VMBALANCE_PLAN_H
#define VMBALANCE_PLAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "config.h"

/* Each resource in the caller's unit, the same for a host's capacity and a VM's
 * demand (CPU in percent of one core, memory in MiB, disk and network in bytes/s).
 * A capacity of 0 or less leaves that resource out: not counted, not limited. */
struct bal_host {
  const char *name;
  double cap[BAL_NRES];
  double base[BAL_NRES]; /* load that is not a VM's (the host's own) */
  bool maintenance;      /* in maintenance, besides the config's hosts */
};
struct bal_vm {
  const char *name;
  double demand[BAL_NRES];
  double mem_mib;    /* memory size, for a migration's cost */
  double dirty_mibs; /* memory dirty rate, MiB/s */
  int priority;      /* 0..100; below 0: the config's priority, else 50 */
  int host;          /* index into the pool's hosts */
  bool busy;         /* another run works on it: it stays where it is */
};
struct bal_pool {
  const struct bal_host *hosts;
  size_t nhosts;
  const struct bal_vm *vms;
  size_t nvms;
};

enum bal_why {
  BAL_WHY_MAINTENANCE,   /* its host is in maintenance */
  BAL_WHY_PIN,           /* pinned elsewhere */
  BAL_WHY_EXCLUDE,       /* excluded from its host */
  BAL_WHY_AFFINITY,      /* joins the VMs an affinity rule binds it to */
  BAL_WHY_ANTI_AFFINITY, /* shares a host with a VM it is kept apart from */
  BAL_WHY_BALANCE,       /* lowers the spread */
  BAL_WHY_CONSOLIDATE,   /* empties a host */
  BAL_WHY_OVERLOAD,      /* its host is above the relief level (bal_plan_make_opts) */
};
extern const char *const bal_why_names[];

struct bal_move {
  int vm, src, dst;
  enum bal_why why;
  double benefit, cost; /* balance: the test of man/vmbalance.conf.5 */
};

struct bal_plan {
  struct bal_move *v; /* in the order they are to be made */
  size_t n;
  double spread_before, spread_after; /* standard deviation of the weighted load, points of percent */
  int *off;                           /* consolidate: hosts left empty, to be powered off */
  size_t noff;
  int *stuck; /* VMs that a mandatory move found no host for (they stay) */
  size_t nstuck;
};

/* Plans. 0, or -1 with *why (a static string) for a pool that does not hold
 * together (a VM on no host). The pool is not changed. */
int bal_plan_make(const struct bal_config *c, const struct bal_pool *pool, struct bal_plan *plan, const char **why);
/* What bal_plan_make leaves at its defaults, for a caller that asks for more.
 * relieve: a host whose load of a resource is above this fraction of its capacity
 * (0: never) has units moved off it until it is within its headroom, as few as
 * can do it (a unit that ends the excess alone, the least memory of those, else
 * the largest); each goes to the least loaded host that holds VMs and fits it
 * within the headroom, else to an empty one. This runs after the mandatory moves
 * and before the policy's phase, whose consolidation then leaves the hosts that
 * received alone. bal_plan_make relieves at 1 (hosts above their capacity) under
 * policy consolidate at levels 2 to 5, and never under balance (whose own phase
 * moves load off the most loaded hosts). */
struct bal_plan_opts {
  double relieve;
};
int bal_plan_make_opts(const struct bal_config *c, const struct bal_pool *pool, const struct bal_plan_opts *o,
                       struct bal_plan *plan, const char **why);
void bal_plan_free(struct bal_plan *plan);
/* The plan's lines (vmkit-plan(5)): "#!vmkit-plan 1", then "VM SOURCE DEST" per
 * move; with explain, each line ends with a comment that says why. Returns 0, or
 * -1 on a write error. */
int bal_plan_write(FILE *f, const struct bal_pool *pool, const struct bal_plan *plan, bool explain);
/* The spread of a placement: host[v] for each VM (the pool's own when NULL). */
double bal_spread(const struct bal_config *c, const struct bal_pool *pool, const int *host);

#endif
