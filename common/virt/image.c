/* Image chains and the domains that depend on them (so that nothing removes or
 * writes into a shared base), read through libvirt's storage API. */
#include <ctype.h>
#include <libgen.h>
#include <limits.h>
#include <string.h>
#include <unistd.h>

#include "vmkit-virt.h"

int vm_image_chain(virConnectPtr conn, const char *path, struct vm_strv *files)
{
  CLEANUP_FREE char *cur = vm_strdup(path);
  for (int depth = 0; cur && depth < 1024; depth++) {
    struct vm_imginfo info;
    int rc = vm_image_info(conn, cur, &info);
    if (rc == VM_EXIT_NOTFOUND) {
      /* The top missing is an empty chain; a missing link is an error. */
      if (depth == 0) return 0;
      return vm_fail(VM_EXIT_NOTFOUND, "backing file '%s' of '%s' is missing", cur, files->v[files->n - 1]);
    }
    if (rc) return rc;
    if (vm_strv_contains(files->v, info.path)) {
      vm_imginfo_free(&info);
      return vm_fail(VM_EXIT_FAIL, "the backing chain of '%s' loops at '%s'", path, cur);
    }
    vm_strv_add(files, info.path);
    free(cur);
    cur = info.backing ? vm_strdup(info.backing) : NULL;
    vm_imginfo_free(&info);
  }
  return 0;
}

/* Paths as a host names them; on a local connection symlinks are resolved too. */
static char *canonical(virConnectPtr conn, const char *path)
{
  char real[PATH_MAX];
  if (vm_conn_is_local(conn) && realpath(path, real)) return vm_strdup(real);
  return vm_strdup(path);
}

/* The chain under a disk of a running domain is in its live XML; under others it
 * is read from the volumes. 1 when want is in it, 0 when not, -1 when it cannot be
 * read (which must never pass for "not a user"). A file of another host in no
 * pool cannot be read at all: its chain is taken to end there. */
static int chain_holds(virConnectPtr conn, xmlXPathContextPtr x, xmlNodePtr disk, const char *src, const char *want)
{
  x->node = disk;
  CLEANUP_XPATHOBJ xmlXPathObjectPtr bs = vm_xpath_nodes(x, ".//backingStore/source/@file");
  bool live_chain = bs && bs->nodesetval && bs->nodesetval->nodeNr > 0;
  for (int i = 0; live_chain && i < bs->nodesetval->nodeNr; i++) {
    CLEANUP_XMLFREE xmlChar *f = xmlNodeGetContent(bs->nodesetval->nodeTab[i]);
    CLEANUP_FREE char *c = f ? canonical(conn, (const char *)f) : NULL;
    if (c && strcmp(c, want) == 0) return 1;
  }
  if (live_chain) return 0;
  CLEANUP_FREE char *cur = vm_strdup(src);
  for (int depth = 0; cur && depth < 1024; depth++) {
    if (!vm_conn_is_local(conn)) {
      CLEANUP_VIRVOL virStorageVolPtr vol = NULL;
      int found = vm_vol_find(conn, cur, &vol);
      if (found == VM_EXIT_NOTFOUND) return 0;
      if (found) return -1;
    }
    struct vm_imginfo info;
    int rc = vm_image_info_quiet(conn, cur, &info);
    if (rc == VM_EXIT_NOTFOUND) return 0; /* a missing link: the chain ends */
    if (rc) return -1;
    free(cur);
    cur = info.backing ? canonical(conn, info.backing) : NULL;
    vm_imginfo_free(&info);
    if (cur && strcmp(cur, want) == 0) return 1;
  }
  return 0;
}

int vm_image_users(virConnectPtr conn, const char *path, const char *except, struct vm_strv *users)
{
  CLEANUP_FREE char *want = canonical(conn, path);
  CLEANUP_VIRDOMAINS virDomainPtr *doms = NULL;
  int n = virConnectListAllDomains(conn, &doms, 0);
  if (n < 0) return vm_fail_virt("cannot list VMs");
  for (int i = 0; i < n; i++) {
    const char *name = virDomainGetName(doms[i]);
    if (except && strcmp(name, except) == 0) continue;
    /* Both definitions of a running persistent domain: the next boot's disks count too. */
    bool uses = false;
    for (int pass = 0; pass < 2 && !uses; pass++) {
      unsigned flags = pass == 0 ? 0 : VIR_DOMAIN_XML_INACTIVE;
      if (pass == 1 && virDomainIsPersistent(doms[i]) != 1) continue;
      if (pass == 0 && virDomainIsActive(doms[i]) != 1) continue;
      /* A domain that went away since the list was taken has no disks to count. */
      CLEANUP_FREE char *xml = virDomainGetXMLDesc(doms[i], flags);
      CLEANUP_XMLDOC xmlDocPtr doc = xml ? vm_xml_parse(xml) : NULL;
      if (!doc) {
        virResetLastError();
        continue;
      }
      CLEANUP_XPATHCTX xmlXPathContextPtr x = vm_xpath_ctx(doc);
      CLEANUP_XPATHOBJ xmlXPathObjectPtr o = vm_xpath_nodes(x, "/domain/devices/disk");
      for (int d = 0; o && o->nodesetval && d < o->nodesetval->nodeNr && !uses; d++) {
        xmlNodePtr disk = o->nodesetval->nodeTab[d];
        x->node = disk;
        CLEANUP_FREE char *src = vm_xpath_str(x, "source/@file");
        if (!src) src = vm_xpath_str(x, "source/@dev");
        if (!src) continue;
        CLEANUP_FREE char *c = canonical(conn, src);
        CLEANUP_FREE char *dev = vm_xml_prop(disk, "device");
        if (strcmp(c, want) == 0) uses = true;
        else if (!dev || strcmp(dev, "cdrom") != 0) {
          int held = chain_holds(conn, x, disk, c, want);
          if (held < 0)
            return vm_fail(VM_EXIT_FAIL, "cannot tell whether VM '%s' stands on '%s': its disk '%s' cannot be read",
                           name, path, c);
          uses = held == 1;
        }
      }
    }
    if (uses && !vm_strv_contains(users->v, name)) vm_strv_add(users, name);
  }
  return 0;
}

/* The names vmkit gives a VM's files, exactly: VM.qcow2, VM-disk<N>.qcow2,
 * VM-<target>.<label>.qcow2 (a snapshot's or a revert's overlay; targets are disk
 * names: vda, sdb, hdc, xvda), VM.<label>.mem (a memory snapshot). "web" does not
 * claim "web-1.qcow2" or "web-eu.example.com.qcow2". Names alone cannot tell VM
 * "web"'s data disk web-disk1.qcow2 from the boot disk of a VM named "web-disk1":
 * callers also ask who uses a file (vm_image_users). */
bool vm_image_named_for(const char *path, const char *vm)
{
  CLEANUP_FREE char *copy = vm_strdup(path);
  const char *base = basename(copy);
  size_t n = strlen(vm), bl = strlen(base);
  if (strncmp(base, vm, n) != 0) return false;
  const char *rest = base + n;
  size_t rl = bl - n;
  if (strcmp(rest, ".qcow2") == 0) return true;
  if (rl > 6 && strcmp(rest + rl - 6, ".qcow2") == 0 && rest[0] == '-') {
    const char *p = rest + 1;
    size_t body = rl - 7; /* between '-' and ".qcow2" */
    if (body > 4 && strncmp(p, "disk", 4) == 0) {
      size_t d = 4;
      while (d < body && isdigit((unsigned char)p[d])) d++;
      if (d == body) return true;
    }
    size_t pre = strncmp(p, "xvd", 3) == 0 ? 3 : (strncmp(p, "vd", 2) == 0 || strncmp(p, "sd", 2) == 0 ||
                                                  strncmp(p, "hd", 2) == 0) ? 2 : 0;
    if (!pre) return false;
    size_t t = pre;
    while (t < body && islower((unsigned char)p[t])) t++;
    return t > pre && t + 1 < body && p[t] == '.';
  }
  if (rl > 5 && strcmp(rest + rl - 4, ".mem") == 0 && rest[0] == '.') return true;
  return false;
}
