/* vmsnap's verbs; the snapshots themselves are libvmkit-snap's (common/snap/). */
#ifndef VMSNAP_H
#define VMSNAP_H

#include "snap.h"

int cmd_create(int argc, char **argv);
int cmd_list(int argc, char **argv);
int cmd_revert(int argc, char **argv);
int cmd_delete(int argc, char **argv);
int cmd_prune(int argc, char **argv);
int cmd_verify(int argc, char **argv);

#endif
