/* Domain definitions: written from a vm_spec with libxml2, read back with XPath. */
#include <string.h>

#include "vmkit-virt.h"

static xmlNodePtr add_disk(xmlNodePtr devs, const struct vm_spec_disk *d, int *nvirtio, int *nsata)
{
  bool cdrom = d->device && strcmp(d->device, "cdrom") == 0;
  bool block = d->type && strcmp(d->type, "block") == 0;
  xmlNodePtr disk = vm_xml_child(devs, "disk", NULL);
  vm_xml_set(disk, "type", block ? "block" : "file");
  vm_xml_set(disk, "device", cdrom ? "cdrom" : "disk");
  xmlNodePtr drv = vm_xml_child(disk, "driver", NULL);
  vm_xml_set(drv, "name", "qemu");
  vm_xml_set(drv, "type", d->format ? d->format : "raw");
  /* Past the host's page cache (O_DIRECT), as Proxmox and OpenStack do: no
   * second copy of the guest's data in the host's memory, no copy through it
   * for every read (a backup's export serves a disk at a third of the CPU),
   * and what the guest flushed is on the disk. */
  if (!cdrom) vm_xml_set(drv, "cache", "none");
  if (!cdrom) vm_xml_set(drv, "discard", "unmap");
  /* A CD-ROM drive may be empty (no medium), as a physical server's. */
  if (d->path) {
    xmlNodePtr src = vm_xml_child(disk, "source", NULL);
    vm_xml_set(src, block ? "dev" : "file", d->path);
    if (d->secret) vm_xml_add_luks(src, d->secret);
  }
  xmlNodePtr tgt = vm_xml_child(disk, "target", NULL);
  if (cdrom) {
    vm_xml_setf(tgt, "dev", "sd%c", 'a' + (*nsata)++);
    vm_xml_set(tgt, "bus", "sata");
  } else {
    vm_xml_setf(tgt, "dev", "vd%c", 'a' + (*nvirtio)++);
    vm_xml_set(tgt, "bus", "virtio");
  }
  if (cdrom || d->readonly) vm_xml_child(disk, "readonly", NULL);
  return disk;
}

char *vm_spec_xml(const struct vm_spec *s)
{
  CLEANUP_XMLDOC xmlDocPtr doc = xmlNewDoc(BAD_CAST "1.0");
  xmlNodePtr dom = xmlNewNode(NULL, BAD_CAST "domain");
  xmlDocSetRootElement(doc, dom);
  vm_xml_set(dom, "type", s->virt_type);
  vm_xml_child(dom, "name", s->name);
  if (s->uuid) vm_xml_child(dom, "uuid", s->uuid);

  if (s->meta_template) {
    xmlNodePtr md = vm_xml_child(dom, "metadata", NULL);
    xmlNodePtr vm = xmlNewChild(md, NULL, BAD_CAST "vm", NULL);
    xmlNsPtr ns = xmlNewNs(vm, BAD_CAST VM_META_NS, BAD_CAST VM_META_PREFIX);
    xmlSetNs(vm, ns);
    xmlNewTextChild(vm, ns, BAD_CAST "template", BAD_CAST s->meta_template);
  }
  if (s->journal) vm_doc_set_meta(doc, VM_JOURNAL_NS, VM_JOURNAL_PREFIX, s->journal);

  char num[32];
  snprintf(num, sizeof num, "%llu", (unsigned long long)(s->memory / 1024));
  vm_xml_set(vm_xml_child(dom, "memory", num), "unit", "KiB");
  snprintf(num, sizeof num, "%u", s->vcpus);
  vm_xml_child(dom, "vcpu", num);

  xmlNodePtr os = vm_xml_child(dom, "os", NULL);
  if (s->firmware) vm_xml_set(os, "firmware", s->firmware);
  vm_xml_child(os, "type", "hvm");
  if (s->kernel) {
    vm_xml_child(os, "kernel", s->kernel);
    if (s->initrd) vm_xml_child(os, "initrd", s->initrd);
    if (s->cmdline) vm_xml_child(os, "cmdline", s->cmdline);
  } else {
    vm_xml_set(vm_xml_child(os, "boot", NULL), "dev", "hd");
    vm_xml_set(vm_xml_child(os, "boot", NULL), "dev", "cdrom");
  }
  xmlNodePtr feat = vm_xml_child(dom, "features", NULL);
  vm_xml_child(feat, "acpi", NULL);
  vm_xml_child(feat, "apic", NULL);
  /* host-model keeps a KVM guest migratable between similar hosts; TCG emulates
   * its default model. */
  if (s->cpu_xml) {
    CLEANUP_XMLDOC xmlDocPtr cd = vm_xml_parse(s->cpu_xml);
    xmlNodePtr root = cd ? xmlDocGetRootElement(cd) : NULL;
    if (root) xmlAddChild(dom, xmlDocCopyNode(root, doc, 1));
  } else if (s->cpu_model) {
    xmlNodePtr cpu = vm_xml_child(dom, "cpu", NULL);
    vm_xml_set(cpu, "mode", "custom");
    vm_xml_set(cpu, "match", "exact");
    vm_xml_set(vm_xml_child(cpu, "model", s->cpu_model), "fallback", "forbid");
  } else if (strcmp(s->virt_type, "kvm") == 0) {
    vm_xml_set(vm_xml_child(dom, "cpu", NULL), "mode", "host-model");
  }
  vm_xml_set(vm_xml_child(dom, "clock", NULL), "offset", "utc");
  vm_xml_child(dom, "on_poweroff", "destroy");
  vm_xml_child(dom, "on_reboot", "restart");
  vm_xml_child(dom, "on_crash", "destroy");

  xmlNodePtr devs = vm_xml_child(dom, "devices", NULL);
  int nvirtio = 0, nsata = 0;
  for (size_t i = 0; i < s->ndisks; i++) add_disk(devs, &s->disks[i], &nvirtio, &nsata);
  for (size_t i = 0; i < s->nnics; i++) {
    const struct vm_spec_nic *n = &s->nics[i];
    xmlNodePtr nic = vm_xml_child(devs, "interface", NULL);
    vm_xml_set(nic, "type", n->type);
    if (n->source) vm_xml_set(vm_xml_child(nic, "source", NULL),
                              strcmp(n->type, "bridge") == 0 ? "bridge" : "network", n->source);
    if (n->mac) vm_xml_set(vm_xml_child(nic, "mac", NULL), "address", n->mac);
    vm_xml_set(vm_xml_child(nic, "model", NULL), "type", "virtio");
    if (n->unplugged) vm_xml_set(vm_xml_child(nic, "link", NULL), "state", "down");
    if (n->filter) vm_nic_set_filter(nic, n->filter, n->ip, n->tcp_ports, n->udp_ports);
  }
  /* A pty console for people, logged to a file by virtlogd for scripts. */
  xmlNodePtr serial = vm_xml_child(devs, "serial", NULL);
  vm_xml_set(serial, "type", "pty");
  if (s->console_log) {
    xmlNodePtr log = vm_xml_child(serial, "log", NULL);
    vm_xml_set(log, "file", s->console_log);
    vm_xml_set(log, "append", "off");
  }
  vm_xml_set(vm_xml_child(devs, "console", NULL), "type", "pty");
  xmlNodePtr ch = vm_xml_child(devs, "channel", NULL);
  vm_xml_set(ch, "type", "unix");
  xmlNodePtr ct = vm_xml_child(ch, "target", NULL);
  vm_xml_set(ct, "type", "virtio");
  vm_xml_set(ct, "name", "org.qemu.guest_agent.0");
  xmlNodePtr bal = vm_xml_child(devs, "memballoon", NULL);
  vm_xml_set(bal, "model", "virtio");
  vm_xml_set(vm_xml_child(bal, "stats", NULL), "period", "5");
  return vm_xml_dump(doc);
}

int vm_domain_disks(xmlDocPtr doc, struct vm_disk **disks, size_t *n)
{
  CLEANUP_XPATHCTX xmlXPathContextPtr ctx = vm_xpath_ctx(doc);
  CLEANUP_XPATHOBJ xmlXPathObjectPtr o = vm_xpath_nodes(ctx, "/domain/devices/disk");
  size_t cnt = o && o->nodesetval ? (size_t)o->nodesetval->nodeNr : 0;
  *disks = calloc(cnt ? cnt : 1, sizeof **disks);
  *n = cnt;
  for (size_t i = 0; i < cnt; i++) {
    xmlNodePtr node = o->nodesetval->nodeTab[i];
    struct vm_disk *d = &(*disks)[i];
    ctx->node = node;
    d->device = vm_xml_prop(node, "device");
    d->type = vm_xml_prop(node, "type");
    d->target = vm_xpath_str(ctx, "target/@dev");
    d->bus = vm_xpath_str(ctx, "target/@bus");
    d->format = vm_xpath_str(ctx, "driver/@type");
    d->source = vm_xpath_str(ctx, "source/@file");
    if (!d->source) d->source = vm_xpath_str(ctx, "source/@dev");
    CLEANUP_XPATHOBJ xmlXPathObjectPtr ro = vm_xpath_nodes(ctx, "readonly");
    d->readonly = ro && ro->nodesetval && ro->nodesetval->nodeNr > 0;
  }
  return 0;
}

void vm_disks_free(struct vm_disk *disks, size_t n)
{
  for (size_t i = 0; disks && i < n; i++) {
    free(disks[i].target);
    free(disks[i].device);
    free(disks[i].type);
    free(disks[i].source);
    free(disks[i].format);
    free(disks[i].bus);
  }
  free(disks);
}

char *vm_domain_meta(xmlDocPtr doc, const char *key)
{
  CLEANUP_XPATHCTX xmlXPathContextPtr ctx = vm_xpath_ctx(doc);
  CLEANUP_FREE char *expr = vm_strdup_printf("/domain/metadata/vmkit:vm/vmkit:%s", key);
  return vm_xpath_str(ctx, expr);
}

int vm_meta_read(virDomainPtr dom, const char *ns, xmlDocPtr *out)
{
  *out = NULL;
  char *xml = virDomainGetMetadata(dom, VIR_DOMAIN_METADATA_ELEMENT, ns, 0);
  if (!xml) {
    /* "No metadata" is the only error that means none; any other is a failure,
     * and a caller that took it for none would overwrite what is there. */
    if (vm_virt_error_code() == VIR_ERR_NO_DOMAIN_METADATA) {
      virResetLastError();
      return 0;
    }
    return vm_fail_virt("cannot read vmkit metadata of '%s'", virDomainGetName(dom));
  }
  *out = vm_xml_parse(xml);
  free(xml);
  if (!*out) return vm_fail(VM_EXIT_FAIL, "cannot parse vmkit metadata of '%s'", virDomainGetName(dom));
  return 0;
}

int vm_meta_write(virDomainPtr dom, const char *ns, const char *prefix, xmlDocPtr doc)
{
  CLEANUP_FREE char *xml = doc ? vm_xml_dump(doc) : NULL;
  unsigned flags = (virDomainIsActive(dom) == 1 ? VIR_DOMAIN_AFFECT_LIVE : 0) |
                   (virDomainIsPersistent(dom) == 1 ? VIR_DOMAIN_AFFECT_CONFIG : 0);
  if (virDomainSetMetadata(dom, VIR_DOMAIN_METADATA_ELEMENT, xml, doc ? prefix : NULL, ns, flags) < 0)
    return vm_fail_virt("cannot record vmkit metadata of '%s'", virDomainGetName(dom));
  return 0;
}

void vm_doc_set_meta(xmlDocPtr domain, const char *ns, const char *prefix, xmlDocPtr element)
{
  xmlNodePtr root = xmlDocGetRootElement(domain);
  if (!root) return;
  xmlNodePtr md = NULL;
  for (xmlNodePtr c = root->children; c && !md; c = c->next)
    if (c->type == XML_ELEMENT_NODE && xmlStrcmp(c->name, BAD_CAST "metadata") == 0) md = c;
  if (!md) md = vm_xml_child(root, "metadata", NULL);
  /* Out with the element of that namespace, if any. */
  for (xmlNodePtr c = md->children, next; c; c = next) {
    next = c->next;
    if (c->type == XML_ELEMENT_NODE && c->ns && xmlStrcmp(c->ns->href, BAD_CAST ns) == 0) {
      xmlUnlinkNode(c);
      xmlFreeNode(c);
    }
  }
  if (!element || !xmlDocGetRootElement(element)) return;
  xmlNodePtr copy = xmlDocCopyNode(xmlDocGetRootElement(element), domain, 1);
  if (!copy) return;
  xmlNsPtr nsp = xmlNewNs(copy, BAD_CAST ns, BAD_CAST prefix);
  /* The element and its descendants without a namespace of their own take ns. */
  for (xmlNodePtr n = copy; n; ) {
    if (n->type == XML_ELEMENT_NODE && !n->ns) xmlSetNs(n, nsp);
    if (n->children) n = n->children;
    else {
      while (n && n != copy && !n->next) n = n->parent;
      if (!n || n == copy) break;
      n = n->next;
    }
  }
  xmlAddChild(md, copy);
}

static void add_param(xmlNodePtr f, const char *name, const char *value)
{
  xmlNodePtr p = vm_xml_child(f, "parameter", NULL);
  vm_xml_set(p, "name", name);
  vm_xml_set(p, "value", value);
}

void vm_nic_set_filter(xmlNodePtr nic, const char *filter, const char *ip, char *const *tcp_ports,
                       char *const *udp_ports)
{
  for (xmlNodePtr c = nic->children, next; c; c = next) {
    next = c->next;
    if (c->type == XML_ELEMENT_NODE && xmlStrcmp(c->name, BAD_CAST "filterref") == 0) {
      xmlUnlinkNode(c);
      xmlFreeNode(c);
    }
  }
  if (!filter) return;
  xmlNodePtr f = vm_xml_child(nic, "filterref", NULL);
  vm_xml_set(f, "filter", filter);
  if (ip) add_param(f, "IP", ip);
  if (strncmp(filter, VM_INBOUND_FILTER_PREFIX, strlen(VM_INBOUND_FILTER_PREFIX)) != 0) return;
  /* Lists: one rule each. Port 0 stands for none (a variable must have a value). */
  for (size_t i = 0; tcp_ports && tcp_ports[i]; i++) add_param(f, "TCP_PORTS", tcp_ports[i]);
  if (!tcp_ports || !tcp_ports[0]) add_param(f, "TCP_PORTS", "0");
  for (size_t i = 0; udp_ports && udp_ports[i]; i++) add_param(f, "UDP_PORTS", udp_ports[i]);
  if (!udp_ports || !udp_ports[0]) add_param(f, "UDP_PORTS", "0");
}

int vm_nic_parse(const char *spec, struct vm_spec_nic *nic)
{
  memset(nic, 0, sizeof *nic);
  if (strcmp(spec, "user") == 0) nic->type = "user";
  else if (strncmp(spec, "network=", 8) == 0 && spec[8]) nic->type = "network", nic->source = spec + 8;
  else if (strncmp(spec, "bridge=", 7) == 0 && spec[7]) nic->type = "bridge", nic->source = spec + 7;
  else return -1;
  return 0;
}
