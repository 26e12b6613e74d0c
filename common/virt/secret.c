/* Disk keys: the passphrase of each encrypted VM's disks (qcow2 with LUKS), kept
 * root-only on the machine that runs vmkit (vm_key_dir, one file per VM key, named
 * by its libvirt secret's UUID), and handed to a host as a private libvirt secret
 * of that UUID. libvirt never gives a private secret's value back: the key file
 * is what lets a VM's key follow it to another host (vmmigrate, an HA restart, a
 * restore), where vm_secret_ensure defines it before the VM runs or its disk is
 * opened. A key never goes on an argv: qemu-img and qemu-nbd read it from its
 * file through a secret object. */
#include <errno.h>
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

char *vm_key_new(void)
{
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
  CLEANUP_FREE char *path = vm_key_path(uuid);
  size_t len = 0;
  *key = vm_read_file(path, 4096, &len);
  if (!*key)
    return vm_fail_errno(errno == ENOENT ? VM_EXIT_NOTFOUND : VM_EXIT_FAIL, "cannot read the disk key '%s'", path);
  if (len == 0 || strlen(*key) != len) {
    vm_key_free(*key);
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
  CLEANUP_FREE char *dir = vm_strdup(vm_key_dir());
  vm_fsync_dir(dir);
  return 0;
}

char *vm_secret_description(const char *vm) { return vm_strdup_printf("%s%s", VM_SECRET_DESC_PREFIX, vm); }

int vm_secret_put(virConnectPtr conn, const char *uuid, const char *vm, const char *key)
{
  CLEANUP_XMLDOC xmlDocPtr doc = xmlNewDoc(BAD_CAST "1.0");
  xmlNodePtr root = xmlNewNode(NULL, BAD_CAST "secret");
  xmlDocSetRootElement(doc, root);
  vm_xml_set(root, "ephemeral", "no");
  vm_xml_set(root, "private", "yes");
  vm_xml_child(root, "uuid", uuid);
  CLEANUP_FREE char *desc = vm_secret_description(vm);
  vm_xml_child(root, "description", desc);
  CLEANUP_FREE char *xml = vm_xml_dump(doc);
  virSecretPtr s = virSecretDefineXML(conn, xml, 0);
  if (!s) return vm_fail_virt("cannot define the disk key of VM '%s' on %s", vm, vm_conn_host_name(conn));
  int r = virSecretSetValue(s, (const unsigned char *)key, strlen(key), 0);
  if (r < 0) {
    int rc = vm_fail_virt("cannot set the disk key of VM '%s' on %s", vm, vm_conn_host_name(conn));
    virSecretUndefine(s);
    virSecretFree(s);
    return rc;
  }
  virSecretFree(s);
  return 0;
}

/* The key kept here is the truth: a secret that is on the host gets its value
 * set again from it (a private secret's value cannot be read back to compare, and
 * a define interrupted before its value was set leaves a secret without one). A
 * host's secret whose key this machine does not keep is taken as it is. */
int vm_secret_ensure(virConnectPtr conn, const char *uuid, const char *vm)
{
  virSecretPtr s = virSecretLookupByUUIDString(conn, uuid);
  if (!s) {
    if (vm_virt_error_code() != VIR_ERR_NO_SECRET)
      return vm_fail_virt("cannot look up the disk key of VM '%s' on %s", vm, vm_conn_host_name(conn));
    virResetLastError();
  }
  CLEANUP_FREE char *path = vm_key_path(uuid);
  if (access(path, F_OK) != 0 && errno == ENOENT) {
    if (s) {
      virSecretFree(s);
      return 0;
    }
    return vm_fail(VM_EXIT_NOTFOUND, "VM '%s' needs the disk key %s, which %s lacks and this machine does not keep "
                   "(%s): copy the key file there, from the machine that created the VM", vm, uuid,
                   vm_conn_host_name(conn), path);
  }
  char *key = NULL;
  int rc = vm_key_load(uuid, &key);
  if (rc == 0 && s && virSecretSetValue(s, (const unsigned char *)key, strlen(key), 0) < 0)
    rc = vm_fail_virt("cannot set the disk key of VM '%s' on %s", vm, vm_conn_host_name(conn));
  if (rc == 0 && !s && (rc = vm_secret_put(conn, uuid, vm, key)) == 0)
    vm_debug("defined the disk key %s of VM '%s' on %s", uuid, vm, vm_conn_host_name(conn));
  vm_key_free(key);
  if (s) virSecretFree(s);
  return rc;
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
  CLEANUP_FREE char *xml = virSecretGetXMLDesc(s, 0);
  virSecretFree(s);
  CLEANUP_XMLDOC xmlDocPtr doc = xml ? vm_xml_parse(xml) : NULL;
  xmlXPathContextPtr ctx = doc ? vm_xpath_ctx(doc) : NULL;
  CLEANUP_FREE char *desc = ctx ? vm_xpath_str(ctx, "/secret/description") : NULL;
  if (ctx) xmlXPathFreeContext(ctx);
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

int vm_domain_secrets_ensure(virConnectPtr conn, const char *vm, const char *xml)
{
  CLEANUP_XMLDOC xmlDocPtr doc = vm_xml_parse(xml);
  if (!doc) return vm_fail(VM_EXIT_FAIL, "cannot parse the definition of VM '%s'", vm);
  struct vm_strv uuids = { 0 };
  vm_domain_secrets(doc, &uuids);
  int rc = 0;
  for (size_t i = 0; i < uuids.n && rc == 0; i++) rc = vm_secret_ensure(conn, uuids.v[i], vm);
  vm_strv_free(&uuids);
  return rc;
}

int vm_dom_secrets_ensure(virConnectPtr conn, virDomainPtr dom)
{
  CLEANUP_FREE char *xml = virDomainGetXMLDesc(dom, VIR_DOMAIN_XML_INACTIVE);
  if (!xml) return vm_fail_virt("cannot read the definition of VM '%s'", virDomainGetName(dom));
  return vm_domain_secrets_ensure(conn, virDomainGetName(dom), xml);
}

void vm_xml_add_luks(xmlNodePtr parent, const char *uuid)
{
  xmlNodePtr enc = vm_xml_child(parent, "encryption", NULL);
  vm_xml_set(enc, "format", "luks");
  xmlNodePtr sec = vm_xml_child(enc, "secret", NULL);
  vm_xml_set(sec, "type", "passphrase");
  vm_xml_set(sec, "uuid", uuid);
}
