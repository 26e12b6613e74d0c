/* vmrun list|info|stats: what is there, how it is defined, and how busy it is. */
#include <string.h>

#include "vmrun.h"

static char *o_state;
static int o_interval = 1, o_count = 1;

static int by_name(const void *a, const void *b)
{
  return strcmp(virDomainGetName(*(virDomainPtr const *)a), virDomainGetName(*(virDomainPtr const *)b));
}

static const struct vm_column list_cols[] = {
  { "name", "NAME", VM_COL_STR },
  { "state", "STATE", VM_COL_STR },
  { "vcpus", "VCPUS", VM_COL_INT },
  { "memory", "MEMORY", VM_COL_BYTES },
  { "autostart", "AUTOSTART", VM_COL_BOOL },
  { "template", "TEMPLATE", VM_COL_STR },
  { NULL, NULL, 0 },
};

int cmd_list(int argc, char **argv)
{
  struct poptOption table[] = {
    { "state", '\0', POPT_ARG_STRING, &o_state, 0, "only VMs in STATE (running, paused, shutoff ...)", "STATE" },
    VM_POPT_COMMON, POPT_TABLEEND
  };
  CLEANUP_POPT poptContext ctx = NULL;
  const char **args;
  int nargs;
  int rc = vm_parse(&ctx, argc, argv, table, "", "List the VMs of a host, running or not.", 0, 0, &args, &nargs);
  if (rc) return rc == VM_DONE ? 0 : rc;
  int want = -1;
  if (o_state && (want = vm_state_parse(o_state)) < 0) return vm_usage_error("unknown state '%s'", o_state);
  CLEANUP_VIRCONN virConnectPtr conn = vm_connect();
  if (!conn) return VM_EXIT_FAIL;
  CLEANUP_VIRDOMAINS virDomainPtr *doms = NULL;
  int n = virConnectListAllDomains(conn, &doms, 0);
  if (n < 0) return vm_fail_virt("cannot list VMs");
  qsort(doms, (size_t)n, sizeof *doms, by_name);
  CLEANUP_JSON json_object *rows = json_object_new_array();
  for (int i = 0; i < n; i++) {
    virDomainInfo info;
    int autostart = 0;
    if (virDomainGetInfo(doms[i], &info) < 0) continue; /* gone meanwhile */
    if (want >= 0 && info.state != want) continue;
    virDomainGetAutostart(doms[i], &autostart);
    json_object *row = json_object_new_object();
    json_object_object_add(row, "name", json_object_new_string(virDomainGetName(doms[i])));
    json_object_object_add(row, "state", json_object_new_string(vm_state_name(info.state)));
    json_object_object_add(row, "vcpus", json_object_new_int(info.nrVirtCpu));
    json_object_object_add(row, "memory", json_object_new_int64((int64_t)info.maxMem * 1024));
    json_object_object_add(row, "autostart", json_object_new_boolean(autostart));
    json_object_object_add(row, "persistent", json_object_new_boolean(virDomainIsPersistent(doms[i]) == 1));
    /* The template a VM was cloned from, kept in vmkit's metadata. */
    char *md = virDomainGetMetadata(doms[i], VIR_DOMAIN_METADATA_ELEMENT, VM_META_NS, 0);
    if (md) {
      CLEANUP_XMLDOC xmlDocPtr mdoc = vm_xml_parse(md);
      free(md);
      CLEANUP_XPATHCTX xmlXPathContextPtr x = mdoc ? vm_xpath_ctx(mdoc) : NULL;
      CLEANUP_FREE char *t = x ? vm_xpath_str(x, "/vm/template") /* libvirt returns it without its namespace */ : NULL;
      if (t) json_object_object_add(row, "template", json_object_new_string(t));
    } else {
      virResetLastError();
    }
    json_object_array_add(rows, row);
  }
  return vm_print_list(rows, list_cols);
}

static const struct vm_column info_cols[] = {
  { "memory", "", VM_COL_BYTES },
  { "max_memory", "", VM_COL_BYTES },
  { NULL, NULL, 0 },
};

static void add_str(json_object *o, const char *k, const char *v)
{
  if (v) json_object_object_add(o, k, json_object_new_string(v));
}

/* An object of an XML node: each key the XPath's string beside it, relative to
 * the node (absent when empty). */
static json_object *node_fields(xmlXPathContextPtr x, xmlNodePtr node, const char *const f[][2], size_t n)
{
  xmlNodePtr keep = x->node;
  x->node = node;
  json_object *o = json_object_new_object();
  for (size_t i = 0; i < n; i++) {
    CLEANUP_FREE char *v = vm_xpath_str(x, f[i][1]);
    add_str(o, f[i][0], v);
  }
  x->node = keep;
  return o;
}

/* The isolation libvirt gives the VM: each security driver (DAC, AppArmor,
 * SELinux) with its label. A running VM's come from its live definition; a
 * shut-off VM's from its definition where it names them, else from the host's
 * drivers (a dynamic label is chosen at start: DAC's is the host's base label). */
static json_object *security_labels(virConnectPtr conn, xmlXPathContextPtr x, const char *virt_type)
{
  json_object *a = json_object_new_array();
  static const char *const fields[][2] = {
    { "model", "@model" }, { "type", "@type" }, { "label", "label" }, { "imagelabel", "imagelabel" }
  };
  CLEANUP_XPATHOBJ xmlXPathObjectPtr sl = vm_xpath_nodes(x, "/domain/seclabel");
  for (int i = 0; sl && sl->nodesetval && i < sl->nodesetval->nodeNr; i++)
    json_object_array_add(a, node_fields(x, sl->nodesetval->nodeTab[i], fields, 4));
  if (json_object_array_length(a)) return a;
  CLEANUP_XMLDOC xmlDocPtr caps = vm_conn_caps(conn);
  if (!caps) return a;
  CLEANUP_XPATHCTX xmlXPathContextPtr c = vm_xpath_ctx(caps);
  CLEANUP_XPATHOBJ xmlXPathObjectPtr ms = vm_xpath_nodes(c, "/capabilities/host/secmodel");
  for (int i = 0; ms && ms->nodesetval && i < ms->nodesetval->nodeNr; i++) {
    c->node = ms->nodesetval->nodeTab[i];
    CLEANUP_FREE char *model = vm_xpath_str(c, "model");
    if (!model || strcmp(model, "none") == 0) continue;
    CLEANUP_FREE char *lit = vm_xpath_literal(virt_type ? virt_type : "kvm");
    CLEANUP_FREE char *q = vm_strdup_printf("baselabel[@type=%s]", lit);
    CLEANUP_FREE char *base = vm_xpath_str(c, q);
    json_object *l = json_object_new_object();
    add_str(l, "model", model);
    add_str(l, "type", "dynamic");
    if (strcmp(model, "dac") == 0) {
      add_str(l, "label", base);
      add_str(l, "imagelabel", base);
    }
    json_object_array_add(a, l);
  }
  return a;
}

int cmd_info(int argc, char **argv)
{
  struct poptOption table[] = { VM_POPT_COMMON, POPT_TABLEEND };
  CLEANUP_POPT poptContext ctx = NULL;
  const char **args;
  int nargs;
  int rc = vm_parse(&ctx, argc, argv, table, "VM", "Show a VM's definition and state.", 1, 1, &args, &nargs);
  if (rc) return rc == VM_DONE ? 0 : rc;
  CLEANUP_VIRCONN virConnectPtr conn = NULL;
  CLEANUP_VIRDOMAIN virDomainPtr dom = NULL;
  if ((rc = vm_open(args[0], &conn, &dom))) return rc;
  virDomainInfo info;
  if (virDomainGetInfo(dom, &info) < 0) return vm_fail_virt("cannot read VM '%s'", args[0]);
  CLEANUP_XMLDOC xmlDocPtr doc = vm_domain_doc(dom, 0);
  if (!doc) return VM_EXIT_FAIL;
  CLEANUP_XPATHCTX xmlXPathContextPtr x = vm_xpath_ctx(doc);
  char uuid[VIR_UUID_STRING_BUFLEN] = "";
  virDomainGetUUIDString(dom, uuid);
  int autostart = 0;
  virDomainGetAutostart(dom, &autostart);

  CLEANUP_JSON json_object *o = json_object_new_object();
  add_str(o, "name", virDomainGetName(dom));
  add_str(o, "uuid", uuid);
  add_str(o, "state", vm_state_name(info.state));
  int id = (int)virDomainGetID(dom);
  json_object_object_add(o, "id", id >= 0 && info.state != VIR_DOMAIN_SHUTOFF ? json_object_new_int(id) : NULL);
  json_object_object_add(o, "persistent", json_object_new_boolean(virDomainIsPersistent(dom) == 1));
  json_object_object_add(o, "autostart", json_object_new_boolean(autostart));
  CLEANUP_FREE char *vt = vm_xpath_str(x, "/domain/@type");
  add_str(o, "virt_type", vt);
  json_object_object_add(o, "vcpus", json_object_new_int(info.nrVirtCpu));
  json_object_object_add(o, "memory", json_object_new_int64((int64_t)info.memory * 1024));
  json_object_object_add(o, "max_memory", json_object_new_int64((int64_t)info.maxMem * 1024));
  char secs[32];
  snprintf(secs, sizeof secs, "%.2f", (double)info.cpuTime / 1e9);
  json_object_object_add(o, "cpu_time", json_object_new_double_s((double)info.cpuTime / 1e9, secs));
  CLEANUP_FREE char *tpl = vm_domain_meta(doc, "template");
  add_str(o, "template", tpl);
  CLEANUP_FREE char *log = vm_console_log_path(doc);
  add_str(o, "console_log", log);
  CLEANUP_FREE char *kernel = vm_xpath_str(x, "/domain/os/kernel");
  CLEANUP_FREE char *cmdline = vm_xpath_str(x, "/domain/os/cmdline");
  add_str(o, "kernel", kernel);
  add_str(o, "cmdline", cmdline);

  struct vm_disk *disks;
  size_t nd;
  vm_domain_disks(doc, &disks, &nd);
  json_object *jd = json_object_new_array();
  for (size_t i = 0; i < nd; i++) {
    json_object *d = json_object_new_object();
    add_str(d, "target", disks[i].target);
    add_str(d, "device", disks[i].device);
    add_str(d, "source", disks[i].source);
    add_str(d, "format", disks[i].format);
    if (disks[i].target) {
      CLEANUP_FREE char *lit = vm_xpath_literal(disks[i].target);
      CLEANUP_FREE char *q = vm_strdup_printf("/domain/devices/disk[target/@dev=%s]//encryption/@format", lit);
      CLEANUP_FREE char *enc = vm_xpath_str(x, q);
      json_object_object_add(d, "encrypted", json_object_new_boolean(enc != NULL));
      add_str(d, "encryption", enc);
    }
    virDomainBlockInfo bi;
    if (disks[i].source && virDomainGetBlockInfo(dom, disks[i].target, &bi, 0) == 0) {
      json_object_object_add(d, "capacity", json_object_new_int64((int64_t)bi.capacity));
      json_object_object_add(d, "allocation", json_object_new_int64((int64_t)bi.allocation));
    }
    json_object_array_add(jd, d);
  }
  vm_disks_free(disks, nd);
  json_object_object_add(o, "disks", jd);

  CLEANUP_XPATHOBJ xmlXPathObjectPtr nics = vm_xpath_nodes(x, "/domain/devices/interface");
  json_object *jn = json_object_new_array();
  static const char *const nic_fields[][2] = {
    { "type", "@type" }, { "source", "source/@network | source/@bridge" }, { "mac", "mac/@address" },
    { "model", "model/@type" }, { "device", "target/@dev" }, { "filter", "filterref/@filter" },
    { "filter_ip", "filterref/parameter[@name='IP']/@value" }
  };
  for (int i = 0; nics && nics->nodesetval && i < nics->nodesetval->nodeNr; i++)
    json_object_array_add(jn, node_fields(x, nics->nodesetval->nodeTab[i], nic_fields, 7));
  json_object_object_add(o, "nics", jn);
  json_object_object_add(o, "security", security_labels(conn, x, vt));
  return vm_print_record(o, info_cols);
}

static int take_sample(virConnectPtr conn, virDomainPtr *only, struct vm_dom_sample **out, size_t *nout)
{
  CLEANUP_FREE char *why = NULL;
  int rc = vm_dom_samples(conn, only, 0, out, nout, &why);
  return rc ? vm_fail(rc, "%s", why) : 0;
}

/* -o prom labels each sample by the host too, as vmbalance collect does. */
static const struct vm_column stats_cols[] = {
  { "host", NULL, VM_COL_STR, "host" },
  { "name", "NAME", VM_COL_STR, "vm" },
  { "state", "STATE", VM_COL_STR, NULL },
  { "cpu_percent", "CPU%", VM_COL_PCT, "vmkit_vm_cpu_percent" },
  { "memory", "MEMORY", VM_COL_BYTES, "vmkit_vm_memory_bytes" },
  { "rss", "RSS", VM_COL_BYTES, "vmkit_vm_rss_bytes" },
  { "disk_read", "DISK-RD", VM_COL_RATE, "vmkit_vm_disk_read_bytes_per_second" },
  { "disk_write", "DISK-WR", VM_COL_RATE, "vmkit_vm_disk_write_bytes_per_second" },
  { "net_rx", "NET-RX", VM_COL_RATE, "vmkit_vm_net_rx_bytes_per_second" },
  { "net_tx", "NET-TX", VM_COL_RATE, "vmkit_vm_net_tx_bytes_per_second" },
  { NULL, NULL, 0, NULL },
};
int cmd_stats(int argc, char **argv)
{
  struct poptOption table[] = {
    { "interval", '\0', POPT_ARG_INT, &o_interval, 0, "seconds between the two samples (1 to 86400; default: 1)", "SECONDS" },
    { "count", 'n', POPT_ARG_INT, &o_count, 0, "print N reports, one per interval (0: until interrupted; default: 1)", "N" },
    VM_POPT_COMMON, POPT_TABLEEND
  };
  CLEANUP_POPT poptContext ctx = NULL;
  const char **args;
  int nargs;
  vm_output_prom_ok = true;
  int rc = vm_parse(&ctx, argc, argv, table, "[VM...]",
                    "CPU % of one host CPU, memory, disk and network bytes/s from two samples\n"
                    "an interval apart; all running VMs when none is named. -o prom prints\n"
                    "them in the Prometheus text format (node_exporter's textfile collector).",
                    0, -1, &args, &nargs);
  if (rc) return rc == VM_DONE ? 0 : rc;
  if (o_interval < 1 || o_interval > 86400)
    return vm_usage_error("invalid --interval %d: expected 1 to 86400 seconds", o_interval);
  if (o_count < 0) return vm_usage_error("invalid --count %d", o_count);
  /* A scrape is one set of series: a second report would repeat them. */
  if (vm_opts.format == VM_FMT_PROM && o_count != 1)
    return vm_usage_error("-o prom prints one report: --count must be 1");
  CLEANUP_VIRCONN virConnectPtr conn = vm_connect();
  if (!conn) return VM_EXIT_FAIL;
  virDomainPtr *only = NULL;
  if (nargs) {
    only = calloc((size_t)nargs + 1, sizeof *only);
    for (int i = 0; i < nargs; i++) {
      if ((rc = vm_lookup(conn, args[i], &only[i]))) {
        for (int j = 0; j < i; j++) virDomainFree(only[j]);
        free(only);
        return rc;
      }
    }
  }
  vm_catch_signals();
  struct vm_dom_sample *prev = NULL, *cur = NULL;
  size_t nprev = 0, ncur = 0;
  int64_t tprev = vm_now_ms();
  rc = take_sample(conn, only, &prev, &nprev);
  /* Until the count, Ctrl-C, or the reader closing the pipe (stats -n 0 | head). */
  for (int report = 0; rc == 0 && (o_count == 0 || report < o_count) && !vm_interrupted() && !vm_output_closed();
       report++) {
    vm_sleep_ms(o_interval * 1000);
    if (vm_interrupted()) break;
    int64_t tcur = vm_now_ms();
    if ((rc = take_sample(conn, only, &cur, &ncur))) break;
    double secs = (double)(tcur - tprev) / 1000.0;
    CLEANUP_JSON json_object *rows = json_object_new_array();
    for (size_t i = 0; i < ncur; i++) {
      const struct vm_dom_sample *b = &cur[i], *a = vm_dom_sample_find(prev, nprev, b->name);
      if (a && (a->id != b->id || strcmp(a->uuid, b->uuid) != 0)) a = NULL; /* restarted: no rates yet */
      if (!only && b->state != VIR_DOMAIN_RUNNING && b->state != VIR_DOMAIN_PAUSED) continue;
      json_object *row = json_object_new_object();
      json_object_object_add(row, "name", json_object_new_string(b->name));
      json_object_object_add(row, "state", json_object_new_string(vm_state_name(b->state)));
      double cpu = a && b->cpu_ns > a->cpu_ns ? (double)(b->cpu_ns - a->cpu_ns) / (secs * 1e7) : 0.0;
      json_object_object_add(row, "cpu_percent", json_object_new_double(cpu));
      json_object_object_add(row, "vcpus", json_object_new_int((int)b->vcpus));
      json_object_object_add(row, "memory", json_object_new_int64((int64_t)b->mem_kib * 1024));
      json_object_object_add(row, "rss", json_object_new_int64((int64_t)b->rss_kib * 1024));
      json_object_object_add(row, "disk_read", json_object_new_int64((int64_t)(a ? vm_rate(a->rd, b->rd, secs) : 0)));
      json_object_object_add(row, "disk_write", json_object_new_int64((int64_t)(a ? vm_rate(a->wr, b->wr, secs) : 0)));
      json_object_object_add(row, "net_rx", json_object_new_int64((int64_t)(a ? vm_rate(a->rx, b->rx, secs) : 0)));
      json_object_object_add(row, "net_tx", json_object_new_int64((int64_t)(a ? vm_rate(a->tx, b->tx, secs) : 0)));
      json_object_array_add(rows, row);
    }
    if (vm_opts.format == VM_FMT_PROM) {
      for (size_t i = 0; i < json_object_array_length(rows); i++)
        json_object_object_add(json_object_array_get_idx(rows, i), "host",
                               json_object_new_string(vm_conn_host_name(conn)));
    }
    rc = vm_print_list(rows, stats_cols);
    vm_dom_samples_free(prev, nprev);
    prev = cur, nprev = ncur, tprev = tcur;
    cur = NULL;
  }
  vm_dom_samples_free(prev, nprev);
  for (int i = 0; only && i < nargs; i++) virDomainFree(only[i]);
  free(only);
  return rc;
}
