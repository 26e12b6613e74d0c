/* vmpatch apply's parts, for its files (apply.c: VMs; template.c: templates). */
#ifndef VMPATCH_APPLY_H
#define VMPATCH_APPLY_H

#include "vmpatch.h"

/* Where the repository and apt's state of a run live inside the guest. */
#define GUEST_DIR "/var/lib/vmpatch-apply"

/* What the run patches with: a directory holding a flat APT repository (its
 * Packages index, checked here before any VM is touched), and the packages
 * named or found vulnerable. */
struct patch_src {
  char *dir;  /* absolute */
  char *base; /* its last component: the folder inside GUEST_DIR */
  struct vm_strv packages;
  struct vm_strv files; /* the index files and the .debs, relative to dir */
  size_t bytes;         /* their sizes, summed */
  struct vmp_feed feed; /* --security-only */
};

struct vmp_patch_job {
  const char *vm;
  virConnectPtr conn; /* the run's one connection: libvirt serves its threads */
  const struct patch_src *src;
  int rc;
  const char *result; /* patched, up-to-date, reverted, failed, not-started */
  char *error;
  struct vm_strv updated; /* "name old -> new" */
  bool reboot;   /* a package updated needs a reboot (kernel, libc, systemd) */
  bool rebooted; /* the VM booted after the patch */
  const char *template_from; /* a template job: the template patched as vm (the new one) */
};

/* Patches a guest offline through libguestfs: its disks (each device "disk"
 * that is not read-only is opened read-write; disks[i].format when set), the
 * guest's own apt-get run on them from j->src; j->updated, j->reboot and
 * j->result ("patched" or "up-to-date") filled in. j->vm names the guest in
 * messages. 0 or an exit code after one message; the disks are then half
 * patched and the caller reverts them. */
int vmp_patch_disks(const struct vm_disk *disks, size_t nd, struct vmp_patch_job *j);

#endif
