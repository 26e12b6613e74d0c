/* vmsnap create: its options and usage checks; the snapshot itself is
 * libvmkit-snap's (common/snap/create.c). */
#include <string.h>
#include <time.h>

#include "vmsnap.h"

static char *o_description;
static int o_memory, o_disk_only, o_external, o_quiesce_yes, o_quiesce_auto;

static struct poptOption options[] = {
  { "memory", 'm', POPT_ARG_NONE, &o_memory, 0, "save the guest's memory too: internal, or external with --external", NULL },
  { "disk-only", 'd', POPT_ARG_NONE, &o_disk_only, 0, "disks only, in external overlays (the default for a running VM)", NULL },
  { "external", '\0', POPT_ARG_NONE, &o_external, 0, "with --memory: the memory in a file, the disks in overlays", NULL },
  { "quiesce", '\0', POPT_ARG_NONE, &o_quiesce_yes, 0,
    "freeze the guest's filesystems through its agent (fail without one); --quiesce=auto: when an agent answers", NULL },
  { "quiesce-auto", '\0', POPT_ARG_NONE | POPT_ARGFLAG_DOC_HIDDEN, &o_quiesce_auto, 0, NULL, NULL },
  { "description", '\0', POPT_ARG_STRING, &o_description, 0, "a line about the snapshot", "TEXT" },
  VM_POPT_LOCK,
  VM_POPT_COMMON,
  POPT_TABLEEND
};

int cmd_create(int argc, char **argv)
{
  CLEANUP_POPT poptContext ctx = NULL;
  const char **args;
  int nargs;
  /* An optional value would make popt take the next word (the VM) as it:
   * --quiesce=auto is spelled out instead. */
  for (int i = 1; i < argc; i++)
    if (strcmp(argv[i], "--quiesce=auto") == 0) argv[i] = "--quiesce-auto";
  int rc = vm_parse(&ctx, argc, argv, options, "VM [NAME]",
                    "Take a snapshot of a VM: disks only, with memory, or offline when it is shut off.",
                    1, 2, &args, &nargs);
  if (rc) return rc == VM_DONE ? 0 : rc;
  const char *vm = args[0];
  char stamp[32];
  time_t now = time(NULL);
  strftime(stamp, sizeof stamp, "snap-%Y%m%d-%H%M%S", gmtime(&now));
  const char *name = nargs > 1 ? args[1] : stamp;
  if ((rc = vm_check_name("snapshot", name))) return rc;
  if (o_quiesce_yes && o_quiesce_auto) return vm_usage_error("--quiesce and --quiesce=auto exclude each other");
  enum vm_snap_quiesce o_quiesce = o_quiesce_auto ? VM_SNAP_QUIESCE_AUTO : o_quiesce_yes ? VM_SNAP_QUIESCE_YES
                                                                           : VM_SNAP_QUIESCE_NO;
  if (o_memory && o_disk_only) return vm_usage_error("--memory and --disk-only exclude each other");
  if (o_external && !o_memory) return vm_usage_error("--external goes with --memory (disk-only snapshots are external)");
  if (o_memory && o_quiesce != VM_SNAP_QUIESCE_NO)
    return vm_usage_error("--quiesce goes with disk-only snapshots: a memory snapshot already holds a consistent state");

  if ((rc = vm_events_init())) return rc;
  CLEANUP_VIRCONN virConnectPtr conn = NULL;
  CLEANUP_VIRDOMAIN virDomainPtr dom = NULL;
  if ((rc = vm_open(vm, &conn, &dom)) || (rc = vm_snap_lock(conn, &dom, vm))) return rc;
  struct vm_snap_create_opts o = { .description = o_description, .memory = o_memory, .disk_only = o_disk_only,
                                   .external = o_external, .quiesce = o_quiesce };
  struct vm_snap_created c;
  if ((rc = vm_snap_create_result(conn, dom, vm, name, &o, &c))) return rc;
  printf("%s\n", name);
  vm_snap_created_info(vm, name, &c);
  return 0;
}
