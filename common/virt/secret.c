/* Disk keys: the passphrase of each encrypted VM's disks (qcow2 with LUKS), kept
 * root-only on the machine that runs vmkit (vm_key_dir, one file per VM key, named
 * by its libvirt secret's UUID), and handed to a host as a private libvirt secret
 * of that UUID. libvirt never gives a private secret's value back: the key file
 * is what lets a VM's key follow it to another host (vmmigrate, an HA restart, a
 * restore), where vm_secret_ensure defines it before the VM runs or its disk is
 * opened. A key never goes on an argv: qemu-img and qemu-nbd read it from its
 * file through a secret object. */
#include <errno.h>
#include <glob.h>
#include <sys/prctl.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vmkit-virt.h"

const char *vm_key_dir(void)
{
  const char *d = getenv("VMKIT_KEY_DIR");
  return d && *d ? d : "/var/lib/vmkit/keys";
}

char *vm_key_path(const char *uuid) { return vm_strdup_printf("%s/%s.key", vm_key_dir(), uuid); }

/* The key folder and its parents, root-only. */
static int key_dir_make(void)
{
  CLEANUP_FREE char *d = vm_strdup(vm_key_dir());
  for (char *p = d + 1; *p; p++) {
    if (*p != '/') continue;
    *p = '\0';
    if (mkdir(d, 0755) < 0 && errno != EEXIST) return vm_fail_errno(VM_EXIT_FAIL, "cannot make '%s'", d);
    *p = '/';
  }
  if (mkdir(d, 0700) < 0 && errno != EEXIST) return vm_fail_errno(VM_EXIT_FAIL, "cannot make '%s'", d);
  struct stat st;
  if (stat(d, &st) < 0 || !S_ISDIR(st.st_mode)) return vm_fail(VM_EXIT_FAIL, "key folder '%s' is not a folder", d);
  if ((st.st_mode & 077) && chmod(d, 0700) < 0)
    return vm_fail_errno(VM_EXIT_FAIL, "cannot make key folder '%s' root-only", d);
  return 0;
}

/* A process that holds a key leaves no core dump (nor a /proc/PID/mem others of
 * its user could read). */
void vm_key_protect(void) { prctl(PR_SET_DUMPABLE, 0, 0, 0, 0); }

/* One try in twenty fails so on a loaded host. */
bool vm_luks_timing_failed(const char *why) { return why && strstr(why, "accurate CPU usage"); }

char *vm_key_new(void)
{
  vm_key_protect();
  unsigned char b[32];
  size_t got = 0;
  while (got < sizeof b) {
    ssize_t n = getrandom(b + got, sizeof b - got, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      vm_fail_errno(VM_EXIT_FAIL, "cannot draw a random key");
      return NULL;
    }
    got += (size_t)n;
  }
  char *hex = malloc(2 * sizeof b + 1);
  if (!hex) abort();
  for (size_t i = 0; i < sizeof b; i++) snprintf(hex + 2 * i, 3, "%02x", b[i]);
  explicit_bzero(b, sizeof b);
  return hex;
}

int vm_key_save(const char *uuid, const char *key)
{
  int rc = key_dir_make();
  if (rc) return rc;
  CLEANUP_FREE char *path = vm_key_path(uuid);
  if (vm_write_file_atomic(path, key, strlen(key), 0600) < 0)
    return vm_fail_errno(VM_EXIT_FAIL, "cannot keep the disk key in '%s'", path);
  return 0;
}

int vm_key_load(const char *uuid, char **key)
{
  vm_key_protect();
  CLEANUP_FREE char *path = vm_key_path(uuid);
  size_t len = 0;
  *key = vm_read_file(path, 4096, &len);
  if (!*key)
    return vm_fail_errno(errno == ENOENT ? VM_EXIT_NOTFOUND : VM_EXIT_FAIL, "cannot read the disk key '%s'", path);
  if (len == 0 || strlen(*key) != len) {
    explicit_bzero(*key, len);
    free(*key);
    *key = NULL;
    return vm_fail(VM_EXIT_FAIL, "the disk key '%s' is empty or not text", path);
  }
  return 0;
}

void vm_key_free(char *key)
{
  if (!key) return;
  explicit_bzero(key, strlen(key));
  free(key);
}

int vm_key_remove(const char *uuid)
{
  CLEANUP_FREE char *path = vm_key_path(uuid);
  if (unlink(path) < 0 && errno != ENOENT) return vm_fail_errno(VM_EXIT_FAIL, "cannot remove the disk key '%s'", path);
  /* And the temporary file of a save that a kill interrupted (UUID.key.XXXXXX). */
  CLEANUP_FREE char *pattern = vm_strdup_printf("%s.??????", path);
  glob_t g;
  if (glob(pattern, GLOB_NOSORT, NULL, &g) == 0) {
    for (size_t i = 0; i < g.gl_pathc; i++) unlink(g.gl_pathv[i]);
    globfree(&g);
  }
  CLEANUP_FREE char *dir = vm_strdup(vm_key_dir());
  vm_fsync_dir(dir);
  return 0;
}

char *vm_secret_description(const char *vm) { return vm_strdup_printf("%s%s", VM_SECRET_DESC_PREFIX, vm); }

/* A secret is defined first with this mark in its description, which goes once its
 * value is set: a define that a kill interrupted is known by it, and finished. */
#define UNFINISHED " (its value being set)"

static virSecretPtr define(virConnectPtr conn, const char *uuid, const char *vm, bool unfinished)
{
  CLEANUP_XMLDOC xmlDocPtr doc = xmlNewDoc(BAD_CAST "1.0");
  xmlNodePtr root = xmlNewNode(NULL, BAD_CAST "secret");
  xmlDocSetRootElement(doc, root);
  vm_xml_set(root, "ephemeral", "no");
  vm_xml_set(root, "private", "yes");
  vm_xml_child(root, "uuid", uuid);
  CLEANUP_FREE char *desc = vm_strdup_printf("%s%s%s", VM_SECRET_DESC_PREFIX, vm, unfinished ? UNFINISHED : "");
  vm_xml_child(root, "description", desc);
  CLEANUP_FREE char *xml = vm_xml_dump(doc);
  return virSecretDefineXML(conn, xml, 0);
}

/* Sets the value of s from key, then defines it again without the mark (libvirt
 * keeps a secret's value across a new definition). */
static int finish(virConnectPtr conn, virSecretPtr s, const char *uuid, const char *vm, const char *key)
{
  if (virSecretSetValue(s, (const unsigned char *)key, strlen(key), 0) < 0)
    return vm_fail_virt("cannot set the disk key of VM '%s' on %s", vm, vm_conn_host_name(conn));
  virSecretPtr again = define(conn, uuid, vm, false);
  if (!again) return vm_fail_virt("cannot define the disk key of VM '%s' on %s", vm, vm_conn_host_name(conn));
  virSecretFree(again);
  return 0;
}

int vm_secret_put(virConnectPtr conn, const char *uuid, const char *vm, const char *key)
{
  virSecretPtr s = define(conn, uuid, vm, true);
  if (!s) return vm_fail_virt("cannot define the disk key of VM '%s' on %s", vm, vm_conn_host_name(conn));
  int rc = finish(conn, s, uuid, vm, key);
  virSecretFree(s);
  return rc;
}

/* The description of a secret; NULL when it cannot be read. */
static char *description(virSecretPtr s)
{
  CLEANUP_FREE char *xml = virSecretGetXMLDesc(s, 0);
  CLEANUP_XMLDOC xmlDocPtr doc = xml ? vm_xml_parse(xml) : NULL;
  xmlXPathContextPtr ctx = doc ? vm_xpath_ctx(doc) : NULL;
  char *desc = ctx ? vm_xpath_str(ctx, "/secret/description") : NULL;
  if (ctx) xmlXPathFreeContext(ctx);
  virResetLastError();
  return desc;
}

/* A host's secret is taken as it is, never overwritten from the key file (which a
 * person may have copied wrong): only one that vmkit began to define and did not
 * finish gets its value, from the key kept here. A missing one is defined. */
int vm_secret_ensure_made(virConnectPtr conn, const char *uuid, const char *vm, bool *made)
{
  if (made) *made = false;
  virSecretPtr s = virSecretLookupByUUIDString(conn, uuid);
  if (!s) {
    if (vm_virt_error_code() != VIR_ERR_NO_SECRET)
      return vm_fail_virt("cannot look up the disk key of VM '%s' on %s", vm, vm_conn_host_name(conn));
    virResetLastError();
  }
  CLEANUP_FREE char *desc = s ? description(s) : NULL;
  size_t dl = desc ? strlen(desc) : 0, ul = strlen(UNFINISHED);
  bool unfinished = dl > ul && strcmp(desc + dl - ul, UNFINISHED) == 0;
  if (s && !unfinished) {
    virSecretFree(s);
    return 0;
  }
  CLEANUP_FREE char *path = vm_key_path(uuid);
  if (access(path, F_OK) != 0 && errno == ENOENT) {
    if (s) virSecretFree(s);
    return vm_fail(VM_EXIT_NOTFOUND, "VM '%s' needs the disk key %s, which %s %s and this machine does not keep "
                   "(%s): copy the key file there, from the machine that created the VM", vm, uuid,
                   vm_conn_host_name(conn), s ? "has without its value" : "lacks", path);
  }
  char *key = NULL;
  int rc = vm_key_load(uuid, &key);
  if (rc == 0 && s) rc = finish(conn, s, uuid, vm, key);
  if (rc == 0 && !s && (rc = vm_secret_put(conn, uuid, vm, key)) == 0) {
    if (made) *made = true;
    vm_debug("defined the disk key %s of VM '%s' on %s", uuid, vm, vm_conn_host_name(conn));
  }
  vm_key_free(key);
  if (s) virSecretFree(s);
  return rc;
}

int vm_secret_ensure(virConnectPtr conn, const char *uuid, const char *vm)
{
  return vm_secret_ensure_made(conn, uuid, vm, NULL);
}

bool vm_secret_in_use(virConnectPtr conn, const char *uuid, const char *except)
{
  virDomainPtr *doms = NULL;
  int n = virConnectListAllDomains(conn, &doms, 0);
  if (n < 0) {
    virResetLastError();
    return true; /* cannot tell: keep it */
  }
  bool used = false;
  for (int i = 0; i < n; i++) {
    if (!used && (!except || strcmp(virDomainGetName(doms[i]), except) != 0)) {
      CLEANUP_FREE char *xml = virDomainGetXMLDesc(doms[i], VIR_DOMAIN_XML_INACTIVE);
      CLEANUP_XMLDOC xmlDocPtr doc = xml ? vm_xml_parse(xml) : NULL;
      struct vm_strv u = { 0 };
      if (doc) vm_domain_secrets(doc, &u);
      used = vm_strv_contains(u.v, uuid);
      vm_strv_free(&u);
    }
    virDomainFree(doms[i]);
  }
  free(doms);
  virResetLastError();
  return used;
}

int vm_secret_remove(virConnectPtr conn, const char *uuid, bool key_too)
{
  virSecretPtr s = virSecretLookupByUUIDString(conn, uuid);
  if (s) {
    int r = virSecretUndefine(s);
    virSecretFree(s);
    if (r < 0) return vm_fail_virt("cannot remove the disk key %s from %s", uuid, vm_conn_host_name(conn));
  } else if (vm_virt_error_code() != VIR_ERR_NO_SECRET) {
    return vm_fail_virt("cannot look up the disk key %s on %s", uuid, vm_conn_host_name(conn));
  }
  virResetLastError();
  return key_too ? vm_key_remove(uuid) : 0;
}

bool vm_secret_is_ours(virConnectPtr conn, const char *uuid)
{
  virSecretPtr s = virSecretLookupByUUIDString(conn, uuid);
  if (!s) {
    virResetLastError();
    /* Not on this host (a VM that moved here): its key file says it is vmkit's. */
    CLEANUP_FREE char *path = vm_key_path(uuid);
    return access(path, F_OK) == 0;
  }
  CLEANUP_FREE char *desc = description(s);
  virSecretFree(s);
  return desc && strncmp(desc, VM_SECRET_DESC_PREFIX, strlen(VM_SECRET_DESC_PREFIX)) == 0;
}

void vm_domain_secrets(xmlDocPtr doc, struct vm_strv *out)
{
  xmlXPathContextPtr ctx = vm_xpath_ctx(doc);
  if (!ctx) return;
  xmlXPathObjectPtr r = vm_xpath_nodes(ctx, "/domain/devices/disk/source/encryption/secret/@uuid");
  if (r && r->nodesetval) {
    for (int i = 0; i < r->nodesetval->nodeNr; i++) {
      xmlChar *u = xmlNodeGetContent(r->nodesetval->nodeTab[i]);
      if (u && !vm_strv_contains(out->v, (const char *)u)) vm_strv_add(out, (const char *)u);
      xmlFree(u);
    }
  }
  xmlXPathFreeObject(r);
  xmlXPathFreeContext(ctx);
}

void vm_domain_disk_secrets(xmlDocPtr doc, struct vm_strv *paths, struct vm_strv *uuids)
{
  xmlXPathContextPtr ctx = vm_xpath_ctx(doc);
  if (!ctx) return;
  xmlXPathObjectPtr r = vm_xpath_nodes(ctx, "/domain/devices/disk/source[encryption/secret/@uuid]");
  for (int i = 0; r && r->nodesetval && i < r->nodesetval->nodeNr; i++) {
    ctx->node = r->nodesetval->nodeTab[i];
    CLEANUP_FREE char *path = vm_xpath_str(ctx, "@file|@dev");
    CLEANUP_FREE char *uuid = vm_xpath_str(ctx, "encryption/secret/@uuid");
    if (!uuid) continue;
    vm_strv_add(paths, path ? path : "");
    vm_strv_add(uuids, uuid);
  }
  xmlXPathFreeObject(r);
  xmlXPathFreeContext(ctx);
}

bool vm_domain_encrypted(xmlDocPtr doc)
{
  struct vm_strv keys = { 0 };
  vm_domain_secrets(doc, &keys);
  bool any = keys.n > 0;
  vm_strv_free(&keys);
  return any;
}

int vm_domain_secrets_ensure(virConnectPtr conn, const char *vm, const char *xml, struct vm_strv *made)
{
  CLEANUP_XMLDOC xmlDocPtr doc = vm_xml_parse(xml);
  if (!doc) return vm_fail(VM_EXIT_FAIL, "cannot parse the definition of VM '%s'", vm);
  struct vm_strv uuids = { 0 };
  vm_domain_secrets(doc, &uuids);
  int rc = 0;
  for (size_t i = 0; i < uuids.n && rc == 0; i++) {
    bool m = false;
    rc = vm_secret_ensure_made(conn, uuids.v[i], vm, &m);
    if (m && made) vm_strv_add(made, uuids.v[i]);
  }
  vm_strv_free(&uuids);
  return rc;
}

int vm_dom_secrets_ensure(virConnectPtr conn, virDomainPtr dom)
{
  CLEANUP_FREE char *xml = virDomainGetXMLDesc(dom, VIR_DOMAIN_XML_INACTIVE);
  if (!xml) return vm_fail_virt("cannot read the definition of VM '%s'", virDomainGetName(dom));
  return vm_domain_secrets_ensure(conn, virDomainGetName(dom), xml, NULL);
}

void vm_xml_add_luks(xmlNodePtr parent, const char *uuid)
{
  xmlNodePtr enc = vm_xml_child(parent, "encryption", NULL);
  vm_xml_set(enc, "format", "luks");
  xmlNodePtr sec = vm_xml_child(enc, "secret", NULL);
  vm_xml_set(sec, "type", "passphrase");
  vm_xml_set(sec, "uuid", uuid);
}
