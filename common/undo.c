/* Undo of half-done work: nothing half-made is left behind (no orphan disk, no
 * half-defined VM). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vmkit.h"

enum kind { U_FILE, U_DIR, U_DOMAIN };
struct undo {
  enum kind kind;
  char *path;
  virDomainPtr dom;
};
static struct undo *undos;
static size_t nundo;

static void push(enum kind k, const char *path, virDomainPtr dom)
{
  struct undo *u = realloc(undos, (nundo + 1) * sizeof *undos);
  if (!u) return;
  undos = u;
  undos[nundo++] = (struct undo){ k, path ? strdup(path) : NULL, dom };
}

void vm_undo_file(const char *path) { push(U_FILE, path, NULL); }
void vm_undo_dir(const char *path) { push(U_DIR, path, NULL); }

int vm_undo_new_file(const char *path)
{
  int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0)
    return vm_fail_errno(errno == EEXIST ? VM_EXIT_STATE : VM_EXIT_FAIL, "cannot create '%s'", path);
  close(fd);
  vm_undo_file(path);
  return 0;
}

void vm_undo_domain(virDomainPtr dom)
{
  virDomainRef(dom);
  push(U_DOMAIN, NULL, dom);
}

int vm_remove_tree(const char *path)
{
  struct stat st;
  if (lstat(path, &st) < 0) return 0;
  if (S_ISDIR(st.st_mode)) {
    DIR *d = opendir(path);
    if (d) {
      struct dirent *e;
      while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        CLEANUP_FREE char *sub = vm_strdup_printf("%s/%s", path, e->d_name);
        vm_remove_tree(sub);
      }
      closedir(d);
    }
    return rmdir(path);
  }
  return unlink(path);
}

void vm_undo_run(void)
{
  while (nundo > 0) {
    struct undo *u = &undos[--nundo];
    switch (u->kind) {
    case U_FILE:
      if (unlink(u->path) < 0) vm_warn("cannot remove '%s' while undoing", u->path);
      else vm_debug("removed '%s'", u->path);
      break;
    case U_DIR:
      vm_remove_tree(u->path);
      break;
    case U_DOMAIN:
      if (virDomainIsActive(u->dom) == 1) virDomainDestroy(u->dom);
      if (virDomainIsPersistent(u->dom) == 1 &&
          virDomainUndefineFlags(u->dom, VIR_DOMAIN_UNDEFINE_MANAGED_SAVE |
                                           VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA |
                                           VIR_DOMAIN_UNDEFINE_NVRAM) < 0) {
        /* Read libvirt's reason before virDomainGetName resets it. */
        CLEANUP_FREE char *why = strdup(vm_virt_message());
        vm_warn("cannot undefine '%s' while undoing: %s", virDomainGetName(u->dom), why);
      }
      virDomainFree(u->dom);
      break;
    }
    free(u->path);
  }
}

void vm_undo_forget(void)
{
  for (size_t i = 0; i < nundo; i++) {
    free(undos[i].path);
    if (undos[i].dom) virDomainFree(undos[i].dom);
  }
  nundo = 0;
}
