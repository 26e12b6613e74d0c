/* vmrun: VM lifecycle, templates, resource isolation and stats. */
#include "vmrun.h"

static const struct vm_verb verbs[] = {
  { "create", cmd_create, "define a VM from an image or a template (a linked clone)" },
  { "start", cmd_start, "start VMs" },
  { "stop", cmd_stop, "shut VMs down gracefully, forcing them off after a timeout" },
  { "reboot", cmd_reboot, "reboot running VMs" },
  { "pause", cmd_pause, "pause VMs (their vCPUs stop; memory stays)" },
  { "resume", cmd_resume, "resume paused VMs" },
  { "destroy", cmd_destroy, "force VMs off at once" },
  { "undefine", cmd_undefine, "remove a VM's definition, and with --remove-storage its disks" },
  { "list", cmd_list, "list VMs" },
  { "info", cmd_info, "show a VM's definition and state" },
  { "stats", cmd_stats, "CPU, memory, disk and network rates from two samples" },
  { "tune", cmd_tune, "show or set CPU, memory, disk I/O and network limits" },
  { "wait", cmd_wait, "wait for a state, a console line or the guest agent" },
  { "template", cmd_template, "create, list and delete templates" },
  { NULL, NULL, NULL },
};

int main(int argc, char **argv)
{
  vm_init("vmrun");
  return vm_dispatch(argc, argv, verbs,
                     "Create, run, stop and remove VMs on a libvirt host.");
}
