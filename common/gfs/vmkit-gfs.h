/* libvmkit-gfs: libguestfs handles that work where KVM does not, with errors in
 * vmkit's one-line form. It stands on libvmkit-virt (the virt type). */
#ifndef VMKIT_GFS_H
#define VMKIT_GFS_H

#include <guestfs.h>

#include "vmkit-virt.h"

void vm_cleanup_guestfs(void *ptr);
#define CLEANUP_GUESTFS __attribute__((cleanup(vm_cleanup_guestfs)))

/* A handle whose errors are reported through vm_fail_gfs, using the direct backend
 * with TCG when the virt type is qemu (otherwise a launch hangs where KVM does). */
guestfs_h *vm_gfs_open(void);
int vm_fail_gfs(guestfs_h *g, const char *fmt, ...) VM_PRINTF(2, 3);
/* Mounts the guest's filesystems: by inspection when an OS is found, else the one
 * filesystem that holds /etc. Returns 0 or an exit code after printing. */
int vm_gfs_mount_guest(guestfs_h *g, const char *disk_desc);
/* A handle (*gp, the caller closes it) with the one disk path (format given),
 * launched, its guest mounted (vm_gfs_mount_guest). 0 or an exit code after a
 * message. (seal.c) */
int vm_gfs_open_disk(guestfs_h **gp, const char *path, const char *format);
/* Seals the qcow2 image at path into a template's: /etc/machine-id emptied, the
 * D-Bus machine-id and the ssh host keys removed, and (a systemd guest with sshd)
 * a unit that makes new host keys at the first boot of each clone. 0 or an exit
 * code after a message. (seal.c) */
int vm_gfs_seal_disk(const char *path);

#endif
