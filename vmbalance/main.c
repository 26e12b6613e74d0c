/* vmbalance: decides where the VMs of a pool go; vmmigrate moves them. */
#include "vmbalance.h"

static const struct vm_verb verbs[] = {
  { "collect", cmd_collect, "CPU, memory, disk and network rates of each host and VM" },
  { "plan", cmd_plan, "the moves that bring the pool to its policy, one 'VM SOURCE DEST' a line" },
  { "run", cmd_run, "plan, then carry the moves out through vmmigrate" },
  { "ha", cmd_ha, "watch the pool; fence a failed host and restart its HA VMs elsewhere" },
  { "simulate", cmd_simulate, "replay a utilisation trace through the planner, against THR-MMT and LR-MMT" },
  { NULL, NULL, NULL },
};

int main(int argc, char **argv)
{
  vm_init("vmbalance");
  return vm_dispatch(argc, argv, verbs,
                     "Balance, consolidate and restart the VMs of a pool of libvirt hosts.");
}
