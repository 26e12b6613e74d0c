/* Connecting to libvirt, finding domains, and the choices every tool shares. */
#include <ctype.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "vmkit-virt.h"

virConnectPtr vm_connect_to(const char *uri_or_host)
{
  vm_virt_init();
  CLEANUP_FREE char *uri = NULL;
  if (vm_resolve_uri(uri_or_host, &uri) != 0) return NULL;
  virConnectPtr c = virConnectOpen(uri);
  if (!c) {
    const char *shown = uri ? uri : getenv("LIBVIRT_DEFAULT_URI");
    vm_fail_virt("cannot connect to '%s'", shown ? shown : "the default hypervisor");
  }
  return c;
}

virConnectPtr vm_connect(void) { return vm_connect_to(vm_opts.uri); }

/* What vmkit learned about a connection's host, asked once per run. */
struct host_facts {
  virConnectPtr conn;
  int local; /* -1 unknown */
  char *uuid, *name;
};
static struct host_facts facts[8];

static struct host_facts *facts_of(virConnectPtr conn)
{
  for (size_t i = 0; i < sizeof facts / sizeof *facts; i++)
    if (facts[i].conn == conn) return &facts[i];
  for (size_t i = 0; i < sizeof facts / sizeof *facts; i++)
    if (!facts[i].conn) {
      facts[i] = (struct host_facts){ .conn = conn, .local = -1 };
      return &facts[i];
    }
  /* More connections than slots: forget the oldest. */
  free(facts[0].uuid);
  free(facts[0].name);
  memmove(facts, facts + 1, sizeof facts - sizeof *facts);
  struct host_facts *f = &facts[sizeof facts / sizeof *facts - 1];
  *f = (struct host_facts){ .conn = conn, .local = -1 };
  return f;
}

/* A URI's host part: "qemu+ssh://root@kvm2:22/system" -> "root@kvm2:22"; "" when
 * there is none ("qemu:///system", "qemu+unix:///system?socket=..."). */
static char *uri_host(const char *uri)
{
  const char *p = strstr(uri, "://");
  if (!p) return vm_strdup("");
  p += 3;
  size_t n = strcspn(p, "/?");
  return vm_strdup_printf("%.*s", (int)n, p);
}

/* Called when a connection closes: a new one may get the same address. */
void vm_conn_forget(virConnectPtr conn)
{
  for (size_t i = 0; i < sizeof facts / sizeof *facts; i++) {
    if (facts[i].conn != conn) continue;
    free(facts[i].uuid);
    free(facts[i].name);
    facts[i] = (struct host_facts){ 0 };
  }
}

bool vm_conn_is_local(virConnectPtr conn)
{
  struct host_facts *f = facts_of(conn);
  if (f->local >= 0) return f->local;
  f->local = 0;
  CLEANUP_FREE char *uri = virConnectGetURI(conn);
  CLEANUP_FREE char *host = uri ? uri_host(uri) : NULL;
  if (!host || (*host && strcmp(host, "localhost") != 0)) return false;
  /* A daemon reached through a local socket may still live in another mount and
   * UTS namespace, with files of its own: its host name tells. */
  char mine[256] = "";
  gethostname(mine, sizeof mine - 1);
  CLEANUP_FREE char *theirs = virConnectGetHostname(conn);
  if (!theirs) {
    virResetLastError();
    return false;
  }
  f->local = strcmp(mine, theirs) == 0;
  return f->local;
}

const char *vm_conn_host_uuid(virConnectPtr conn)
{
  struct host_facts *f = facts_of(conn);
  if (f->uuid) return f->uuid;
  CLEANUP_XMLDOC xmlDocPtr doc = vm_conn_caps(conn);
  CLEANUP_XPATHCTX xmlXPathContextPtr x = doc ? vm_xpath_ctx(doc) : NULL;
  f->uuid = x ? vm_xpath_str(x, "/capabilities/host/uuid") : NULL;
  if (!f->uuid) vm_fail(VM_EXIT_FAIL, "the host's capabilities name no host UUID");
  return f->uuid;
}

xmlDocPtr vm_conn_caps(virConnectPtr conn)
{
  CLEANUP_FREE char *caps = virConnectGetCapabilities(conn);
  if (!caps) {
    vm_fail_virt("cannot read the capabilities of %s", vm_conn_host_name(conn));
    return NULL;
  }
  return vm_xml_parse(caps);
}

const char *vm_conn_host_name(virConnectPtr conn)
{
  struct host_facts *f = facts_of(conn);
  if (!f->name) {
    f->name = virConnectGetHostname(conn);
    if (!f->name) {
      virResetLastError();
      f->name = vm_strdup("the host");
    }
  }
  return f->name;
}

int vm_lookup(virConnectPtr conn, const char *name, virDomainPtr *dom)
{
  *dom = virDomainLookupByName(conn, name);
  if (!*dom && strlen(name) == 36) *dom = virDomainLookupByUUIDString(conn, name);
  if (*dom) return 0;
  if (vm_virt_exit_code() == VM_EXIT_NOTFOUND)
    return vm_fail(VM_EXIT_NOTFOUND, "no such VM '%s'", name);
  return vm_fail_virt("cannot look up VM '%s'", name);
}

int vm_open(const char *name, virConnectPtr *conn, virDomainPtr *dom)
{
  *dom = NULL;
  if (!(*conn = vm_connect())) return VM_EXIT_FAIL;
  return vm_lookup(*conn, name, dom);
}

int vm_domain_state(virDomainPtr dom)
{
  int state, reason;
  if (virDomainGetState(dom, &state, &reason, 0) < 0) return -1;
  return state;
}

static const char *const state_names[] = {
  [VIR_DOMAIN_NOSTATE] = "nostate",   [VIR_DOMAIN_RUNNING] = "running",
  [VIR_DOMAIN_BLOCKED] = "blocked",   [VIR_DOMAIN_PAUSED] = "paused",
  [VIR_DOMAIN_SHUTDOWN] = "shutdown", [VIR_DOMAIN_SHUTOFF] = "shutoff",
  [VIR_DOMAIN_CRASHED] = "crashed",   [VIR_DOMAIN_PMSUSPENDED] = "pmsuspended",
};

const char *vm_state_name(int state)
{
  if (state < 0 || (size_t)state >= sizeof state_names / sizeof *state_names) return "unknown";
  return state_names[state];
}

int vm_state_parse(const char *name)
{
  for (size_t i = 0; i < sizeof state_names / sizeof *state_names; i++)
    if (strcmp(state_names[i], name) == 0) return (int)i;
  return -1;
}

const char *vm_virt_type(void)
{
  const char *vt = vm_opts.virt_type ? vm_opts.virt_type : getenv("VMKIT_VIRT_TYPE");
  if (vt && *vt) return vt;
  static const char *probed;
  if (!probed) {
    int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    probed = fd >= 0 ? "kvm" : "qemu";
    if (fd >= 0) close(fd);
  }
  return probed;
}

const char *vm_virt_type_of(virConnectPtr conn)
{
  const char *vt = vm_opts.virt_type ? vm_opts.virt_type : getenv("VMKIT_VIRT_TYPE");
  if (vt && *vt) return vt;
  if (vm_conn_is_local(conn)) return vm_virt_type();
  /* Another host: whether KVM works there is its own to say. */
  vm_errors_mute(true);
  CLEANUP_XMLDOC xmlDocPtr doc = vm_conn_caps(conn);
  vm_errors_mute(false);
  CLEANUP_XPATHCTX xmlXPathContextPtr x = doc ? vm_xpath_ctx(doc) : NULL;
  CLEANUP_FREE char *kvm = x ? vm_xpath_str(x, "/capabilities/guest/arch/domain[@type='kvm']/@type") : NULL;
  virResetLastError();
  return kvm ? "kvm" : "qemu";
}

bool vm_name_ok(const char *name)
{
  size_t n = strlen(name);
  bool ok = n > 0 && n <= 64 && name[0] != '.' && name[0] != '-';
  for (size_t i = 0; ok && i < n; i++)
    ok = isalnum((unsigned char)name[i]) || strchr("._-", name[i]);
  return ok;
}

int vm_check_name(const char *what, const char *name)
{
  if (vm_name_ok(name)) return 0;
  CLEANUP_FREE char *q = vm_shell_quote(name);
  return vm_usage_error("invalid %s name %s: use up to 64 letters, digits, '.', '_' and '-', "
                        "not starting with '.' or '-'", what, q);
}

int vm_domain_idle(virDomainPtr dom, const char *what)
{
  int type = 0, n = 0, op = 0;
  virTypedParameterPtr params = NULL;
  if (virDomainGetJobStats(dom, &type, &params, &n, 0) == 0) {
    virTypedParamsGetInt(params, n, VIR_DOMAIN_JOB_OPERATION, &op);
    virTypedParamsFree(params, n);
  } else {
    virResetLastError();
  }
  if (type != VIR_DOMAIN_JOB_NONE) {
    static const char *const ops[] = {
      [VIR_DOMAIN_JOB_OPERATION_START] = "start", [VIR_DOMAIN_JOB_OPERATION_SAVE] = "save",
      [VIR_DOMAIN_JOB_OPERATION_RESTORE] = "restore",
      [VIR_DOMAIN_JOB_OPERATION_MIGRATION_IN] = "incoming migration",
      [VIR_DOMAIN_JOB_OPERATION_MIGRATION_OUT] = "migration",
      [VIR_DOMAIN_JOB_OPERATION_SNAPSHOT] = "snapshot",
      [VIR_DOMAIN_JOB_OPERATION_SNAPSHOT_REVERT] = "snapshot revert",
      [VIR_DOMAIN_JOB_OPERATION_DUMP] = "dump", [VIR_DOMAIN_JOB_OPERATION_BACKUP] = "backup",
    };
    const char *name = op > 0 && (size_t)op < sizeof ops / sizeof *ops && ops[op] ? ops[op] : "another";
    return vm_fail(VM_EXIT_STATE, "cannot %s '%s': a %s job is running", what, virDomainGetName(dom), name);
  }
  /* Block jobs (a commit, a copy, a pull) hold a disk too. */
  CLEANUP_XMLDOC xmlDocPtr doc = virDomainIsActive(dom) == 1 ? vm_domain_doc(dom, 0) : NULL;
  struct vm_disk *disks = NULL;
  size_t nd = 0;
  if (doc) vm_domain_disks(doc, &disks, &nd);
  int rc = 0;
  for (size_t i = 0; i < nd && rc == 0; i++) {
    virDomainBlockJobInfo info;
    if (disks[i].target && virDomainGetBlockJobInfo(dom, disks[i].target, &info, 0) == 1)
      rc = vm_fail(VM_EXIT_STATE, "cannot %s '%s': a block job runs on disk %s", what,
                   virDomainGetName(dom), disks[i].target);
  }
  virResetLastError();
  vm_disks_free(disks, nd);
  return rc;
}

int vm_force_off(virDomainPtr dom, const char *why)
{
  if (virDomainIsActive(dom) != 1) return 0;
  if (virDomainDestroy(dom) == 0) return 0;
  /* Saved first: the state check below resets libvirt's error. */
  virErrorPtr saved = virSaveLastError();
  if (virDomainIsActive(dom) != 1) { /* it went off by itself meanwhile */
    virFreeError(saved);
    return 0;
  }
  return vm_fail_virt_saved(saved, "cannot force VM '%s' off%s%s", virDomainGetName(dom), why ? " " : "", why ? why : "");
}
