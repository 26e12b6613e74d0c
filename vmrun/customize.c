/* First-boot customization of a new VM's disk, and sealing a disk into a template:
 * both look inside the guest through libguestfs, one appliance launch each. */
#include <crypt.h>
#include <errno.h>
#include <string.h>

#include "vmrun.h"

bool customization_wanted(const struct customization *c)
{
  return c->hostname || c->ssh_key_file || c->root_password_file;
}

/* Checks the inputs before any disk is made or appliance launched. */
int customization_check(const struct customization *c)
{
  if (c->ssh_key_file) {
    CLEANUP_FREE char *key = vm_read_file(c->ssh_key_file, 65536, NULL);
    if (!key) return vm_fail_errno(errno == ENOENT ? VM_EXIT_NOTFOUND : VM_EXIT_FAIL, "cannot read ssh key '%s'",
                                   c->ssh_key_file);
    if (strncmp(key, "ssh-", 4) != 0 && strncmp(key, "ecdsa-", 6) != 0 && strncmp(key, "sk-", 3) != 0)
      return vm_fail(VM_EXIT_USAGE, "'%s' does not look like an ssh public key", c->ssh_key_file);
  }
  if (c->root_password_file) {
    char *pw = vm_read_first_line(c->root_password_file);
    if (!pw) return vm_fail_errno(errno == ENOENT ? VM_EXIT_NOTFOUND : VM_EXIT_FAIL, "cannot read password file '%s'",
                                  c->root_password_file);
    bool empty = !*pw;
    explicit_bzero(pw, strlen(pw));
    free(pw);
    if (empty) return vm_fail(VM_EXIT_USAGE, "password file '%s' has an empty first line", c->root_password_file);
  }
  return 0;
}

static int open_disk(guestfs_h **gp, const char *path, const char *format)
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

/* Writes lines, each ending in a newline, as the whole of a guest file. */
static int write_lines(guestfs_h *g, const char *path, struct vm_strv *lines)
{
  size_t len = 0;
  CLEANUP_FREE char *text = vm_strv_lines(lines, &len);
  int r = guestfs_write(g, path, text, len);
  explicit_bzero(text, len);
  vm_strv_free(lines);
  if (r < 0) return vm_fail_gfs(g, "cannot write the guest's %s", path);
  return 0;
}

/* Replaces root's password hash in /etc/shadow with a SHA-512 crypt of the first
 * line of the password file; the cleartext never reaches argv or the guest. */
static int set_root_password(guestfs_h *g, const char *pwfile)
{
  char *pw = vm_read_first_line(pwfile);
  if (!pw) return vm_fail_errno(VM_EXIT_FAIL, "cannot read password file '%s'", pwfile);
  char salt[CRYPT_GENSALT_OUTPUT_SIZE];
  struct crypt_data cd;
  memset(&cd, 0, sizeof cd);
  const char *hash = NULL;
  if (crypt_gensalt_rn("$6$", 0, NULL, 0, salt, sizeof salt))
    hash = crypt_r(pw, salt, &cd);
  explicit_bzero(pw, strlen(pw));
  free(pw);
  if (!hash || hash[0] == '*') return vm_fail(VM_EXIT_FAIL, "cannot hash the root password");

  if (guestfs_is_file(g, "/etc/shadow") <= 0)
    return vm_fail(VM_EXIT_FAIL, "the guest has no /etc/shadow");
  CLEANUP_STRV char **lines = guestfs_read_lines(g, "/etc/shadow");
  if (!lines) return vm_fail_gfs(g, "cannot read the guest's /etc/shadow");
  struct vm_strv out = { 0 };
  bool found = false;
  for (size_t i = 0; lines[i]; i++) {
    if (strncmp(lines[i], "root:", 5) == 0) {
      const char *rest = strchr(lines[i] + 5, ':');
      vm_strv_addf(&out, "root:%s%s", hash, rest ? rest : ":::::::");
      found = true;
    } else {
      vm_strv_add(&out, lines[i]);
    }
  }
  explicit_bzero(&cd, sizeof cd);
  if (!found) {
    vm_strv_free(&out);
    return vm_fail(VM_EXIT_FAIL, "the guest's /etc/shadow has no root entry");
  }
  return write_lines(g, "/etc/shadow", &out);
}

static int add_ssh_key(guestfs_h *g, const char *keyfile)
{
  size_t len;
  CLEANUP_FREE char *key = vm_read_file(keyfile, 65536, &len);
  if (!key) return vm_fail_errno(VM_EXIT_FAIL, "cannot read ssh key '%s'", keyfile);
  if (len && key[len - 1] != '\n') {
    char *k2 = vm_strdup_printf("%s\n", key);
    free(key);
    key = k2;
    len++;
  }
  if (guestfs_mkdir_p(g, "/root/.ssh") < 0 || guestfs_chmod(g, 0700, "/root/.ssh") < 0 ||
      guestfs_chown(g, 0, 0, "/root/.ssh") < 0)
    return vm_fail_gfs(g, "cannot make /root/.ssh in the guest");
  const char *ak = "/root/.ssh/authorized_keys";
  int r = guestfs_is_file(g, ak) > 0 ? guestfs_write_append(g, ak, key, len)
                                       : guestfs_write(g, ak, key, len);
  if (r < 0 || guestfs_chmod(g, 0600, ak) < 0 || guestfs_chown(g, 0, 0, ak) < 0)
    return vm_fail_gfs(g, "cannot write %s in the guest", ak);
  return 0;
}

static int set_hostname(guestfs_h *g, const char *name)
{
  CLEANUP_FREE char *line = vm_strdup_printf("%s\n", name);
  if (guestfs_write(g, "/etc/hostname", line, strlen(line)) < 0)
    return vm_fail_gfs(g, "cannot write the guest's /etc/hostname");
  /* Debian names the host on 127.0.1.1 in /etc/hosts; keep that line in step. */
  if (guestfs_is_file(g, "/etc/hosts") > 0) {
    CLEANUP_STRV char **lines = guestfs_read_lines(g, "/etc/hosts");
    if (!lines) return vm_fail_gfs(g, "cannot read the guest's /etc/hosts");
    struct vm_strv out = { 0 };
    for (size_t i = 0; lines[i]; i++)
      if (strncmp(lines[i], "127.0.1.1", 9) != 0) vm_strv_add(&out, lines[i]);
    vm_strv_addf(&out, "127.0.1.1\t%s", name);
    return write_lines(g, "/etc/hosts", &out);
  }
  return 0;
}

int customize_disk(const char *path, const char *format, const struct customization *c)
{
  CLEANUP_GUESTFS guestfs_h *g = NULL;
  int rc = open_disk(&g, path, format);
  if (rc == 0 && c->hostname) rc = set_hostname(g, c->hostname);
  if (rc == 0 && c->ssh_key_file) rc = add_ssh_key(g, c->ssh_key_file);
  if (rc == 0 && c->root_password_file) rc = set_root_password(g, c->root_password_file);
  if (rc == 0 && (guestfs_umount_all(g) < 0 || guestfs_shutdown(g) < 0))
    rc = vm_fail_gfs(g, "cannot finish writing '%s'", path);
  return rc;
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

/* What makes one installed guest into many distinct ones: an empty machine-id
 * (systemd makes a new one at first boot), no ssh host keys (made again at each
 * clone's first boot), and no D-Bus machine-id copy. */
int seal_disk(const char *path)
{
  CLEANUP_GUESTFS guestfs_h *g = NULL;
  int rc = open_disk(&g, path, "qcow2");
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
