/* Images through qemu-img: their info, their backing chains, and which domains
 * depend on them (so that nothing removes or writes into a shared base). */
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <string.h>
#include <unistd.h>

#include "vmkit.h"

/* qemu-img info; errors are printed only when report is set (a scan over other
 * domains' disks must not fill stderr with their problems). */
static json_object *image_info(const char *path, bool chain, bool report)
{
  /* -U: the image may be open by a running guest; a read-only look is safe. */
  char *argv[] = { "qemu-img", "info", "-U", "--output=json",
                   chain ? "--backing-chain" : NULL, NULL, NULL };
  argv[chain ? 5 : 4] = (char *)path;
  CLEANUP_FREE char *out = NULL;
  if (report ? vm_run_checked(argv, &out) != 0 : vm_run(argv, &out, NULL) != 0) return NULL;
  json_object *j = json_tokener_parse(out);
  if (!j && report) vm_fail(VM_EXIT_FAIL, "cannot parse qemu-img info output for '%s'", path);
  return j;
}

json_object *vm_image_info(const char *path, bool chain) { return image_info(path, chain, true); }

static int chain_files(const char *path, struct vm_strv *files, bool report)
{
  CLEANUP_JSON json_object *info = image_info(path, true, report);
  if (!info) return VM_EXIT_FAIL;
  /* qemu-img prints one object for a single image and an array for a chain. */
  size_t n = json_object_is_type(info, json_type_array) ? json_object_array_length(info) : 1;
  for (size_t i = 0; i < n; i++) {
    json_object *img = json_object_is_type(info, json_type_array)
                         ? json_object_array_get_idx(info, i) : info, *fn;
    if (!json_object_object_get_ex(img, "filename", &fn)) continue;
    char real[PATH_MAX];
    const char *f = json_object_get_string(fn);
    vm_strv_add(files, realpath(f, real) ? real : f);
  }
  return 0;
}

int vm_image_chain(const char *path, struct vm_strv *files) { return chain_files(path, files, true); }

int vm_image_users(virConnectPtr conn, const char *path, const char *except,
                   struct vm_strv *users)
{
  char want[PATH_MAX];
  if (!realpath(path, want)) return 0; /* a missing file has no users */
  CLEANUP_VIRDOMAINS virDomainPtr *doms = NULL;
  int n = virConnectListAllDomains(conn, &doms, 0);
  if (n < 0) return vm_fail_virt("cannot list VMs");
  for (int i = 0; i < n; i++) {
    const char *name = virDomainGetName(doms[i]);
    if (except && strcmp(name, except) == 0) continue;
    /* A domain that went away since the list was taken has no disks to count. */
    CLEANUP_FREE char *xml = virDomainGetXMLDesc(doms[i], virDomainIsPersistent(doms[i]) == 1
                                                           ? VIR_DOMAIN_XML_INACTIVE : 0);
    CLEANUP_XMLDOC xmlDocPtr doc = xml ? vm_xml_parse(xml) : NULL;
    if (!doc) {
      virResetLastError();
      continue;
    }
    struct vm_disk *disks;
    size_t nd;
    vm_domain_disks(doc, &disks, &nd);
    bool uses = false;
    for (size_t d = 0; d < nd && !uses; d++) {
      if (!disks[d].source || (disks[d].type && strcmp(disks[d].type, "file") != 0)) continue;
      char real[PATH_MAX];
      if (realpath(disks[d].source, real) && strcmp(real, want) == 0) {
        uses = true;
        break;
      }
      if (disks[d].device && strcmp(disks[d].device, "cdrom") == 0) continue;
      struct vm_strv chain = { 0 };
      if (chain_files(disks[d].source, &chain, false) == 0)
        uses = vm_strv_contains(chain.v, want);
      vm_strv_free(&chain);
    }
    vm_disks_free(disks, nd);
    if (uses) vm_strv_add(users, name);
  }
  return 0;
}

bool vm_image_is_template(const char *path)
{
  char real[PATH_MAX], tdir[PATH_MAX];
  if (!realpath(path, real) || !realpath(vm_template_dir(), tdir)) return false;
  size_t n = strlen(tdir);
  return strncmp(real, tdir, n) == 0 && real[n] == '/';
}

bool vm_image_named_for(const char *path, const char *vm)
{
  CLEANUP_FREE char *copy = strdup(path);
  const char *base = basename(copy);
  size_t n = strlen(vm);
  return strncmp(base, vm, n) == 0 && (base[n] == '.' || base[n] == '-');
}
