/* Sealing a disk into a template's image: what makes one installed guest into
 * many distinct ones. vmrun seals a VM's disk into a template (vmrun template
 * create); vmpatch seals a template's patched copy again (vmpatch apply
 * --template), since package scripts may have made ssh host keys. */
#include <string.h>

#include "vmkit-gfs.h"

int vm_gfs_open_disk(guestfs_h **gp, const char *path, const char *format)
{
  guestfs_h *g = vm_gfs_open();
  if (!g) return VM_EXIT_FAIL;
  *gp = g;
  if (guestfs_add_drive_opts(g, path, GUESTFS_ADD_DRIVE_OPTS_FORMAT, format, -1) < 0)
    return vm_fail_gfs(g, "cannot open disk '%s'", path);
  vm_progress("starting the libguestfs appliance", 0, 0);
  int rc = guestfs_launch(g);
  vm_progress_end();
  if (rc < 0) return vm_fail_gfs(g, "cannot launch libguestfs for '%s'", path);
  return vm_gfs_mount_guest(g, path);
}

/* A clone must come up with ssh host keys of its own. Debian's ssh.service does not
 * make missing keys (its ExecStartPre, sshd -t, fails without them), so a systemd
 * guest with sshd gets a unit that makes them (ssh-keygen -A) before sshd starts,
 * at every boot where they are missing: the first boot of each clone. */
static const char keygen_unit[] =
  "[Unit]\n"
  "Description=vmkit: make this machine's own ssh host keys\n"
  "Documentation=man:vmrun(1)\n"
  "DefaultDependencies=no\n"
  "After=local-fs.target\n"
  "Before=ssh.service sshd.service\n"
  "ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key\n"
  "\n"
  "[Service]\n"
  "Type=oneshot\n"
  "ExecStart=/usr/bin/ssh-keygen -A\n"
  "RemainAfterExit=yes\n"
  "\n"
  "[Install]\n"
  "WantedBy=multi-user.target\n";

static int install_keygen(guestfs_h *g)
{
  if (guestfs_is_dir(g, "/etc/systemd/system") <= 0 || guestfs_is_file(g, "/usr/bin/ssh-keygen") <= 0 ||
      (guestfs_is_file(g, "/usr/sbin/sshd") <= 0))
    return 0;
  const char *unit = "/etc/systemd/system/vmkit-ssh-keygen.service";
  if (guestfs_write(g, unit, keygen_unit, sizeof keygen_unit - 1) < 0 || guestfs_chmod(g, 0644, unit) < 0)
    return vm_fail_gfs(g, "cannot write %s in the guest", unit);
  /* Enabled the way systemctl enable does it: a link in each wanting target. */
  const char *wants[] = { "/etc/systemd/system/multi-user.target.wants", "/etc/systemd/system/ssh.service.wants" };
  for (size_t i = 0; i < 2; i++) {
    CLEANUP_FREE char *link = vm_strdup_printf("%s/vmkit-ssh-keygen.service", wants[i]);
    if (guestfs_mkdir_p(g, wants[i]) < 0 ||
        (guestfs_is_symlink(g, link) <= 0 && guestfs_ln_s(g, unit, link) < 0))
      return vm_fail_gfs(g, "cannot enable vmkit-ssh-keygen.service in the guest");
  }
  return 0;
}

/* An empty machine-id (systemd makes a new one at first boot), no ssh host keys
 * (made again at each clone's first boot), and no D-Bus machine-id copy. */
int vm_gfs_seal_disk(const char *path)
{
  CLEANUP_GUESTFS guestfs_h *g = NULL;
  int rc = vm_gfs_open_disk(&g, path, "qcow2");
  if (rc) return rc;
  if (guestfs_is_file(g, "/etc/machine-id") > 0 && guestfs_truncate(g, "/etc/machine-id") < 0)
    return vm_fail_gfs(g, "cannot reset /etc/machine-id");
  if (guestfs_is_file(g, "/var/lib/dbus/machine-id") > 0 && guestfs_rm(g, "/var/lib/dbus/machine-id") < 0)
    return vm_fail_gfs(g, "cannot remove /var/lib/dbus/machine-id");
  CLEANUP_STRV char **keys = guestfs_glob_expand(g, "/etc/ssh/ssh_host_*");
  for (size_t i = 0; keys && keys[i]; i++)
    if (guestfs_rm(g, keys[i]) < 0) return vm_fail_gfs(g, "cannot remove %s", keys[i]);
  if ((rc = install_keygen(g))) return rc;
  if (guestfs_umount_all(g) < 0 || guestfs_shutdown(g) < 0)
    return vm_fail_gfs(g, "cannot finish writing '%s'", path);
  return 0;
}
