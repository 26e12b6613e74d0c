/* vmbalance: dynamic resource scheduling, power-saving consolidation and HA across
 * the pool of hosts of the hosts file (man/vmbalance.1). */
#ifndef VMBALANCE_H
#define VMBALANCE_H

#include "vmkit-base.h"

int cmd_collect(int argc, char **argv);
int cmd_plan(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_ha(int argc, char **argv);
int cmd_simulate(int argc, char **argv);

#endif
