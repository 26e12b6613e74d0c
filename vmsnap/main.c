/* vmsnap: snapshots that ops staff can trust, revert and clean up. */
#include "vmsnap.h"

static const struct vm_verb verbs[] = {
  { "create", cmd_create, "take a snapshot: disk-only, with memory, or offline" },
  { "list", cmd_list, "list a VM's snapshots as a tree" },
  { "revert", cmd_revert, "go back to a snapshot (internal or external)" },
  { "delete", cmd_delete, "delete a snapshot, merging its overlay into its base" },
  { "prune", cmd_prune, "delete the oldest snapshots, keeping the newest (for cron)" },
  { "verify", cmd_verify, "check every image of a VM's chains against the records" },
  { NULL, NULL, NULL },
};

int main(int argc, char **argv)
{
  vm_init("vmsnap");
  return vm_dispatch(argc, argv, verbs, "Create, list, revert, delete, prune and verify VM snapshots.");
}
