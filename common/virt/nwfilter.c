/* Traffic filters on a VM's NICs: libvirt's nwfilter (clean-traffic and the other
 * filters a host defines), checked on the host before a VM names one. */
#include <arpa/inet.h>
#include <string.h>

#include "vmkit-virt.h"

int vm_nwfilter_check(virConnectPtr conn, const char *name)
{
  virNWFilterPtr f = virNWFilterLookupByName(conn, name);
  if (f) {
    virNWFilterFree(f);
    return 0;
  }
  if (vm_virt_error_code() == VIR_ERR_NO_NWFILTER) {
    virResetLastError();
    return vm_fail(VM_EXIT_NOTFOUND, "no traffic filter '%s' on %s (its filters: virsh nwfilter-list)", name,
                   vm_conn_host_name(conn));
  }
  return vm_fail_virt("cannot look up traffic filter '%s' on %s", name, vm_conn_host_name(conn));
}

static bool valid_ipv4(const char *s)
{
  struct in_addr a;
  return inet_pton(AF_INET, s, &a) == 1;
}

/* The inbound firewall over a base filter, vmkit-inbound-BASE: the base filter's
 * rules, then everything out (and its replies in, by connection tracking), in
 * only to the TCP_PORTS and UDP_PORTS the NIC's parameters list, ICMP, and DHCP
 * replies; the rest in is dropped; IPv4 and IPv6 alike. One per base filter and host, the same
 * everywhere. */
static char *inbound_xml(const char *name, const char *base, const char *uuid)
{
  CLEANUP_XMLDOC xmlDocPtr doc = xmlNewDoc(BAD_CAST "1.0");
  xmlNodePtr f = xmlNewNode(NULL, BAD_CAST "filter");
  xmlDocSetRootElement(doc, f);
  vm_xml_set(f, "name", name);
  vm_xml_set(f, "chain", "root");
  if (uuid) vm_xml_child(f, "uuid", uuid); /* libvirt redefines a filter by its UUID */
  vm_xml_set(vm_xml_child(f, "filterref", NULL), "filter", base);
  /* IPv4, then the same for IPv6 (for a base filter that lets IPv6 through). */
  struct {
    const char *action, *dir, *prio, *proto, *dport, *sport;
  } rules[] = {
    { "accept", "out", "500", "all", NULL, NULL },
    { "accept", "in", "500", "tcp", "$TCP_PORTS", NULL },
    { "accept", "in", "500", "udp", "$UDP_PORTS", NULL },
    { "accept", "in", "500", "udp", "68", "67" },
    { "accept", "in", "500", "icmp", NULL, NULL },
    { "drop", "in", "1000", "all", NULL, NULL },
    { "accept", "out", "500", "all-ipv6", NULL, NULL },
    { "accept", "in", "500", "tcp-ipv6", "$TCP_PORTS", NULL },
    { "accept", "in", "500", "udp-ipv6", "$UDP_PORTS", NULL },
    { "accept", "in", "500", "udp-ipv6", "546", "547" },
    { "accept", "in", "500", "icmpv6", NULL, NULL },
    { "drop", "in", "1000", "all-ipv6", NULL, NULL },
  };
  for (size_t i = 0; i < sizeof rules / sizeof *rules; i++) {
    xmlNodePtr r = vm_xml_child(f, "rule", NULL);
    vm_xml_set(r, "action", rules[i].action);
    vm_xml_set(r, "direction", rules[i].dir);
    vm_xml_set(r, "priority", rules[i].prio);
    xmlNodePtr p = vm_xml_child(r, rules[i].proto, NULL);
    if (rules[i].dport) vm_xml_set(p, "dstportstart", rules[i].dport);
    if (rules[i].sport) vm_xml_set(p, "srcportstart", rules[i].sport);
  }
  return vm_xml_dump(doc);
}

int vm_nwfilter_inbound(virConnectPtr conn, const char *base, char **name)
{
  *name = NULL;
  if (strncmp(base, VM_INBOUND_FILTER_PREFIX, strlen(VM_INBOUND_FILTER_PREFIX)) == 0)
    return vm_usage_error("--allow-port goes on a base filter, not on '%s'", base);
  /* The base first: without it the firewall that names it cannot start a VM. */
  int rc = vm_nwfilter_check(conn, base);
  if (rc) return rc;
  *name = vm_strdup_printf("%s%s", VM_INBOUND_FILTER_PREFIX, base);
  /* Defined each time: the same XML changes nothing, and a host that has an older
   * vmkit's gets this one (libvirt applies it to the VMs that use it). */
  char uuid[VIR_UUID_STRING_BUFLEN];
  virNWFilterPtr f = virNWFilterLookupByName(conn, *name);
  bool had = f && virNWFilterGetUUIDString(f, uuid) == 0;
  if (f) virNWFilterFree(f);
  virResetLastError();
  CLEANUP_FREE char *xml = inbound_xml(*name, base, had ? uuid : NULL);
  f = xml ? virNWFilterDefineXML(conn, xml) : NULL;
  if (!f) return vm_fail_virt("cannot define traffic filter '%s' on %s", *name, vm_conn_host_name(conn));
  virNWFilterFree(f);
  vm_debug("defined traffic filter '%s' on %s", *name, vm_conn_host_name(conn));
  return 0;
}

static int parse_ports(char **specs, struct vm_strv *tcp, struct vm_strv *udp)
{
  for (size_t i = 0; specs && specs[i]; i++) {
    const char *s = specs[i], *slash = strchr(s, '/');
    size_t n = slash ? (size_t)(slash - s) : strlen(s);
    char num[8];
    uint64_t port;
    if (n == 0 || n >= sizeof num) return -1;
    memcpy(num, s, n);
    num[n] = '\0';
    if (vm_parse_uint(num, 1, 65535, &port) < 0) return -1;
    struct vm_strv *to = !slash || strcmp(slash, "/tcp") == 0 ? tcp : strcmp(slash, "/udp") == 0 ? udp : NULL;
    if (!to) return -1;
    vm_strv_addf(to, "%u", (unsigned)port);
  }
  return 0;
}

/* ---- --filter, --ip and --allow-port (vmrun create and tune) ---- */
/* --filter without a value sets it to NULL: this marks "not given". */
static char filter_unset[] = "";
static char *o_filter = filter_unset, *o_ip;
static char **o_ports;

struct poptOption vm_filter_table[] = {
  { "filter", '\0', POPT_ARG_STRING | POPT_ARGFLAG_OPTIONAL, &o_filter, 0,
    "a libvirt traffic filter on each network= and bridge= NIC (no value: clean-traffic, which drops frames "
    "with a forged MAC or IP, and ARP spoofing; tune: none takes the filter off)", "NAME" },
  { "ip", '\0', POPT_ARG_STRING, &o_ip, 0, "with --filter: the guest's IPv4 address, the only one it may send from "
    "(default: the first it uses)", "ADDR" },
  { "allow-port", '\0', POPT_ARG_ARGV, &o_ports, 0, "with --filter (implied): let in only connections to this port "
    "(tcp unless /udp), ICMP and the replies to the guest's own; repeatable", "PORT[/udp]" },
  POPT_TABLEEND
};

int vm_filter_opts_get(struct vm_filter_opts *o)
{
  memset(o, 0, sizeof *o);
  o->named = o_filter != filter_unset;
  o->filter = o->named ? (o_filter ? o_filter : "clean-traffic") : o_ports ? "clean-traffic" : NULL;
  o->ip = o_ip;
  o->ports = o_ports != NULL;
  bool none = o->filter && strcmp(o->filter, "none") == 0;
  if (o_ip && !o->filter) return vm_usage_error("--ip needs --filter");
  if (o->filter && !*o->filter) return vm_usage_error("--filter needs a name (or no value: clean-traffic)");
  if (none && o_ip) return vm_usage_error("--filter none takes no --ip");
  if (none && o_ports) return vm_usage_error("--filter none takes no --allow-port");
  if (o_ip && !valid_ipv4(o_ip)) return vm_usage_error("invalid --ip '%s': expected an IPv4 address", o_ip);
  if (o_ports && strncmp(o->filter, VM_INBOUND_FILTER_PREFIX, strlen(VM_INBOUND_FILTER_PREFIX)) == 0)
    return vm_usage_error("--allow-port goes on a base filter, not on '%s'", o->filter);
  if (parse_ports(o_ports, &o->tcp, &o->udp) < 0) {
    vm_filter_opts_free(o);
    return vm_usage_error("invalid --allow-port: expected PORT, PORT/tcp or PORT/udp, PORT from 1 to 65535");
  }
  return 0;
}

void vm_filter_opts_free(struct vm_filter_opts *o)
{
  vm_strv_free(&o->tcp);
  vm_strv_free(&o->udp);
}
