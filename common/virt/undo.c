/* Undo of half-done work: nothing half-made is left behind (no orphan disk, no
 * half-defined VM). Volumes go through libvirt; local files and folders are a
 * run's own scratch space. Each piece of work has its own list, so that work done
 * side by side (several VMs created at once) undoes only its own. */
#include <dirent.h>
#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vmkit-virt.h"

enum kind { U_VOLUME, U_FILE, U_DIR, U_DOMAIN, U_SECRET };
struct vm_undo_item {
  enum kind kind;
  char *path;
  virDomainPtr dom;
  virConnectPtr conn;
};

static void push(struct vm_undo *u, enum kind k, const char *path, virDomainPtr dom, virConnectPtr conn)
{
  struct vm_undo_item *v = realloc(u->v, (u->n + 1) * sizeof *v);
  if (!v) return;
  u->v = v;
  if (conn) virConnectRef(conn);
  if (dom) virDomainRef(dom);
  u->v[u->n++] = (struct vm_undo_item){ k, path ? vm_strdup(path) : NULL, dom, conn };
}

void vm_undo_volume(struct vm_undo *u, virConnectPtr conn, const char *path) { push(u, U_VOLUME, path, NULL, conn); }
void vm_undo_local_file(struct vm_undo *u, const char *path) { push(u, U_FILE, path, NULL, NULL); }
void vm_undo_local_dir(struct vm_undo *u, const char *path) { push(u, U_DIR, path, NULL, NULL); }
void vm_undo_domain(struct vm_undo *u, virDomainPtr dom) { push(u, U_DOMAIN, NULL, dom, NULL); }
void vm_undo_secret(struct vm_undo *u, virConnectPtr conn, const char *uuid) { push(u, U_SECRET, uuid, NULL, conn); }

static void item_free(struct vm_undo_item *it)
{
  free(it->path);
  if (it->dom) virDomainFree(it->dom);
  if (it->conn) virConnectClose(it->conn);
}

void vm_undo_run(struct vm_undo *u)
{
  while (u->n > 0) {
    struct vm_undo_item *it = &u->v[--u->n];
    switch (it->kind) {
    case U_VOLUME:
      if (vm_path_delete(it->conn, it->path) != 0) vm_warn("cannot remove '%s' while undoing", it->path);
      break;
    case U_FILE:
      if (unlink(it->path) < 0 && errno != ENOENT) vm_warn("cannot remove '%s' while undoing", it->path);
      else vm_debug("removed '%s'", it->path);
      break;
    case U_DIR:
      vm_remove_tree(it->path);
      break;
    case U_SECRET:
      if (vm_secret_remove(it->conn, it->path, true) != 0) vm_warn("cannot remove disk key %s while undoing", it->path);
      break;
    case U_DOMAIN:
      if (virDomainIsActive(it->dom) == 1) virDomainDestroy(it->dom);
      if (virDomainIsPersistent(it->dom) == 1 &&
          virDomainUndefineFlags(it->dom, VIR_DOMAIN_UNDEFINE_MANAGED_SAVE |
                                            VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA |
                                            VIR_DOMAIN_UNDEFINE_NVRAM) < 0) {
        /* Read libvirt's reason before virDomainGetName resets it. */
        CLEANUP_FREE char *why = vm_strdup(vm_virt_message());
        vm_warn("cannot undefine '%s' while undoing: %s", virDomainGetName(it->dom), why);
      }
      break;
    }
    item_free(it);
  }
  free(u->v);
  u->v = NULL;
}

void vm_undo_forget(struct vm_undo *u)
{
  for (size_t i = 0; i < u->n; i++) item_free(&u->v[i]);
  free(u->v);
  u->v = NULL;
  u->n = 0;
}
