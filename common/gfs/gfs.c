/* libguestfs handles that work where KVM does not, with errors in vmkit's form. */
#include <string.h>

#include "vmkit-gfs.h"

void vm_cleanup_guestfs(void *ptr)
{
  guestfs_h *g = *(guestfs_h **)ptr;
  if (g) guestfs_close(g);
}

guestfs_h *vm_gfs_open(void)
{
  guestfs_h *g = guestfs_create_flags(GUESTFS_CREATE_NO_ENVIRONMENT);
  if (!g) {
    vm_fail(VM_EXIT_FAIL, "cannot create a libguestfs handle");
    return NULL;
  }
  /* The environment still chooses where it can (LIBGUESTFS_DEBUG, _TRACE, _PATH...),
   * but vmkit owns the backend: with --virt-type qemu every appliance runs under
   * TCG, because a KVM appliance hangs on hosts where KVM guests do. */
  guestfs_parse_environment(g);
  guestfs_set_error_handler(g, NULL, NULL);
  if (strcmp(vm_virt_type(), "qemu") == 0) {
    guestfs_set_backend(g, "direct");
    char *settings[] = { "force_tcg", NULL };
    guestfs_set_backend_settings(g, settings);
  }
  if (vm_opts.verbose) guestfs_set_verbose(g, getenv("LIBGUESTFS_DEBUG") != NULL);
  return g;
}

int vm_fail_gfs(guestfs_h *g, const char *fmt, ...)
{
  char msg[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  const char *why = guestfs_last_error(g);
  /* One line: libguestfs's first (its hints follow on others). */
  int n = why ? (int)strcspn(why, "\n") : 0;
  return vm_fail(VM_EXIT_FAIL, "%s: %.*s", msg, why ? n : 16, why ? why : "libguestfs error");
}

/* Mounts by inspection (roots and their mountpoints, shortest first) when an OS is
 * found; otherwise the one filesystem that holds /etc, which is what a plain disk
 * with a root filesystem and no OS release files looks like. */
int vm_gfs_mount_guest(guestfs_h *g, const char *disk_desc)
{
  CLEANUP_STRV char **roots = guestfs_inspect_os(g);
  if (roots && roots[0]) {
    CLEANUP_STRV char **mps = guestfs_inspect_get_mountpoints(g, roots[0]);
    size_t n = 0;
    while (mps && mps[n]) n += 2;
    /* Mount "/" before "/boot" before "/boot/efi": sort pairs by path length. */
    for (size_t len = 1; len < 4096; len++) {
      bool any = false;
      for (size_t i = 0; i < n; i += 2) {
        size_t l = strlen(mps[i]);
        if (l > len) any = true;
        if (l == len && guestfs_mount(g, mps[i + 1], mps[i]) < 0)
          return vm_fail_gfs(g, "cannot mount %s of %s", mps[i], disk_desc);
      }
      if (!any) break;
    }
    return 0;
  }
  CLEANUP_STRV char **fss = guestfs_list_filesystems(g);
  for (size_t i = 0; fss && fss[i]; i += 2) {
    if (strcmp(fss[i + 1], "swap") == 0 || strcmp(fss[i + 1], "unknown") == 0) continue;
    if (guestfs_mount(g, fss[i], "/") < 0) continue;
    if (guestfs_is_dir(g, "/etc") > 0) return 0;
    guestfs_umount(g, "/");
  }
  return vm_fail(VM_EXIT_FAIL, "no guest root filesystem (with /etc) found on %s", disk_desc);
}
