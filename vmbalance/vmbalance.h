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

struct bal_config;
#define BAL_CONF_DEFAULT "/etc/vmkit/vmbalance.conf"
/* The config file: OPTION (-C), else VMKIT_BALANCE_CONF, else BAL_CONF_DEFAULT,
 * which may be missing (the defaults hold; a named file may not), then --policy
 * and --level over it (NULL and 0: as the file says). An exit code (vmkit(7)),
 * the error said. */
int bal_load_config(const char *option, const char *policy, int level, struct bal_config *c);

#endif
