/* A fake libguestfs for the unit tests of p2v-convert's adaptation (t/unit/convert-*):
 * an in-memory guest of files, directories, disks and partitions (each with a file
 * system type and a UUID), and inspection's answers. t/unit/fake-guestfs.c defines
 * the guestfs_* functions adapt.c calls, and is linked instead of -lguestfs.
 * guestfs_command records each argv; "sh -n PATH" really runs the host's sh -n on
 * the fake file's text, so that what adapt.c writes into a shell file is checked
 * by a shell, as the guest's own sh checks it. */
#ifndef VMKIT_T_FAKE_GUESTFS_H
#define VMKIT_T_FAKE_GUESTFS_H

#include <guestfs.h>

/* The handle the functions below act on (one guest at a time). */
guestfs_h *fg_handle(void);
/* Forgets the guest: no file, disk, file system, root or command. */
void fg_reset(void);

/* A file of the guest with its text (replaced when it is there); its folders exist. */
void fg_file(const char *path, const char *text);
/* An empty folder. */
void fg_dir(const char *path);
/* A file's text, or NULL when the guest has no such file. */
const char *fg_text(const char *path);

/* A disk of the appliance (/dev/sda ...), in the order of the stream. */
void fg_disk(const char *dev);
/* A partition (/dev/sda1) holding a file system of type ("ext4", "swap") and uuid. */
void fg_fs(const char *dev, const char *type, const char *uuid);
/* The root inspection finds, and a mount point of it (mp on dev). */
void fg_root(const char *dev);
void fg_mountpoint(const char *mp, const char *dev);

/* Every command run in the guest, one line each (the argv joined by spaces). */
const char *fg_commands(void);

#endif
