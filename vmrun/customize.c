/* First-boot customization of a new VM's disk through libguestfs, one appliance
 * launch; sealing a disk into a template is common/gfs's (vm_gfs_seal_disk). */
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
  int rc = vm_gfs_open_disk(&g, path, format);
  if (rc == 0 && c->hostname) rc = set_hostname(g, c->hostname);
  if (rc == 0 && c->ssh_key_file) rc = add_ssh_key(g, c->ssh_key_file);
  if (rc == 0 && c->root_password_file) rc = set_root_password(g, c->root_password_file);
  if (rc == 0 && (guestfs_umount_all(g) < 0 || guestfs_shutdown(g) < 0))
    rc = vm_fail_gfs(g, "cannot finish writing '%s'", path);
  return rc;
}
