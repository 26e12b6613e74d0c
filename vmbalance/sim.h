/* vmbalance simulate's engine: a CPU utilisation trace replayed on a modelled
 * pool, under vmbalance's planner (plan.c, as used live) or one of the baselines
 * of Beloglazov and Buyya (CCPE 24(13), 2012) as CloudSim's power package
 * implements them: THR-MMT and LR-MMT. Pure logic, libc and libm only.
 *
 * The models, after CloudSim's PlanetLab setup:
 *  - hosts alternate HP ProLiant ML110 G4 (2 x 1860 MIPS) and G5 (2 x 2660 MIPS),
 *    4096 MiB each; power from their SPECpower tables, linear between 10 % steps
 *    (piecewise linear), 0 W when a host holds no VM (switched off);
 *  - VM i of n has type i / ceil(n / 4) (CloudSim's Helper.createVmList): 2500,
 *    2000, 1000, 500 MIPS of one core, 870, 1740, 1740, 613 MiB; its CPU demand
 *    is the trace's percent of its MIPS, its memory constant, disk and network
 *    not modelled; as in CloudSim (whose PlanetLab cloudlets ask for no RAM), the
 *    memory limits only the start placement, unless sim_setup.memory;
 *  - a migration takes RAM / 62.5 MiB/s (half of 1 Gbit/s, as CloudSim), during
 *    which the VM loses 10 % of its CPU (PDM) and still loads its source host;
 *  - time advances in ticks of the trace (300 s); a host's load is constant
 *    within a tick, before and after the tick's migrations. */
#ifndef VMBALANCE_SIM_H
#define VMBALANCE_SIM_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"

#define SIM_VM_TYPES 4
#define SIM_HOST_TYPES 2
#define SIM_HIST 10 /* LR's window, in ticks */

struct sim_trace {
  size_t nvms, nticks;
  char **names;
  float *util; /* nvms x nticks, percent of the VM's CPU */
};

struct sim_error {
  int line; /* 0: not about one line */
  char msg[200];
};

/* Parses `VM-ID<TAB>v1 v2 ... vN` lines (N the same on every line, each value a
 * number from 0 to 100). 0, or -1 with *err filled and t empty. */
int sim_trace_parse(const char *text, size_t len, struct sim_trace *t, struct sim_error *err);
void sim_trace_free(struct sim_trace *t);

enum sim_policy { SIM_VMBALANCE, SIM_THR_MMT, SIM_LR_MMT, SIM_NPOLICIES };
extern const char *const sim_policy_names[SIM_NPOLICIES];

struct sim_setup {
  size_t nhosts;
  double interval_s;  /* seconds a tick lasts (300) */
  double thr;         /* THR's static threshold (0.8) */
  double lr_safety;   /* LR's safety parameter (1.2) */
  double lr_fallback; /* LR's threshold while there is not enough history (0.7) */
  const struct bal_config *conf; /* vmbalance's policy */
  const int *placement;          /* a start placement (host of each VM), or NULL: PABFD at full size */
  bool memory; /* a host's RAM limits placement after the start (CloudSim: no, its VMs then ask for none) */
  /* CloudSim's own behaviour, to check the baselines against its runs: the first
   * decision at the second tick (300 s), and a VM whose demand is 0 at a tick and
   * the next (CloudSim's "completed" VM, HostDynamicWorkload.getCompletedVms)
   * removed from the pool for the rest of the trace. */
  bool cloudsim;
};
/* CloudSim's values; conf NULL. */
void sim_setup_init(struct sim_setup *s);

struct sim_result {
  double energy_kwh;
  double slatah; /* time active hosts were at 100 % CPU over the time they were active */
  double pdm;    /* CPU lost to migrations over the CPU asked for */
  double slav;   /* slatah x pdm */
  long migrations;
  double hosts_off_mean; /* hosts with no VM, mean over the ticks */
  int hosts_off_end;
  double active_mean;
  double vms_end; /* VMs left at the end (fewer than the trace's with cloudsim) */
  double decision_ms_mean, decision_ms_max; /* the policy's decision, wall time per tick */
};

/* Replays t under policy p. 0, or -1 with *why (a static string). */
int sim_run(const struct sim_trace *t, enum sim_policy p, const struct sim_setup *s, struct sim_result *r,
            const char **why);

/* The models, for the tests and the docs. */
double sim_power(int host_type, double utilisation); /* W; utilisation 0..1 */
int sim_host_type(size_t h);
double sim_host_mips(size_t h);
int sim_vm_type(size_t v, size_t nvms);
extern const double sim_vm_mips[SIM_VM_TYPES], sim_vm_ram[SIM_VM_TYPES];
extern const char *const sim_host_model[SIM_HOST_TYPES];
double sim_migration_s(double ram_mib);

#endif
