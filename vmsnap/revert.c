/* vmsnap revert: its options and usage checks; the revert itself is
 * vm_snap_revert's (common/snap/revert.c). */
#include "vmsnap.h"

static int o_running, o_paused, o_force;

static struct poptOption options[] = {
  { "running", '\0', POPT_ARG_NONE, &o_running, 0, "run the VM after the revert", NULL },
  { "paused", '\0', POPT_ARG_NONE, &o_paused, 0, "leave the VM paused after the revert", NULL },
  { "force", '\0', POPT_ARG_NONE, &o_force, 0, "revert where libvirt calls it risky (a new QEMU process, a changed definition)", NULL },
  VM_POPT_LOCK,
  VM_POPT_COMMON,
  POPT_TABLEEND
};

int cmd_revert(int argc, char **argv)
{
  CLEANUP_POPT poptContext ctx = NULL;
  const char **args;
  int nargs;
  int rc = vm_parse(&ctx, argc, argv, options, "VM SNAPSHOT",
                    "Revert a VM to a snapshot; what it ran since is discarded.", 2, 2, &args, &nargs);
  if (rc) return rc == VM_DONE ? 0 : rc;
  if (o_running && o_paused) return vm_usage_error("--running and --paused exclude each other");
  const char *vm = args[0];
  CLEANUP_VIRCONN virConnectPtr conn = NULL;
  CLEANUP_VIRDOMAIN virDomainPtr dom = NULL;
  if ((rc = vm_open(vm, &conn, &dom)) || (rc = vm_snap_lock(conn, &dom, vm))) return rc;
  struct vm_snap_revert_opts o = { .running = o_running, .paused = o_paused, .force = o_force };
  return vm_snap_revert(conn, &dom, vm, args[1], &o);
}
