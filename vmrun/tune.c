/* vmrun tune: resource isolation. CPU shares and quota (cgroups through libvirt's
 * scheduler parameters), memory hard and soft limits, per-disk byte and IOPS
 * throttling (QEMU's block throttling), NIC bandwidth (tc on the tap device).
 * With no limit given it shows the current ones. */
#include <string.h>

#include "vmrun.h"

static char *o_shares, *o_quota, *o_period, *o_mem_hard, *o_mem_soft;
static char *o_disk, *o_rbps, *o_wbps, *o_tbps, *o_riops, *o_wiops, *o_tiops;
static char *o_nic, *o_inbound, *o_outbound;
static int o_live, o_config;

static struct poptOption options[] = {
  { "cpu-shares", '\0', POPT_ARG_STRING, &o_shares, 0, "relative CPU weight against other VMs (cgroup v1: 2 to 262144, default 1024)", "N" },
  { "cpu-quota", '\0', POPT_ARG_STRING, &o_quota, 0, "microseconds of CPU each vCPU may use per period (-1: no limit)", "US" },
  { "cpu-period", '\0', POPT_ARG_STRING, &o_period, 0, "the quota's period in microseconds (default 100000)", "US" },
  { "mem-hard", '\0', POPT_ARG_STRING, &o_mem_hard, 0, "memory hard limit (bare number: MiB; 0: none)", "SIZE" },
  { "mem-soft", '\0', POPT_ARG_STRING, &o_mem_soft, 0, "memory soft limit, enforced under host memory pressure (bare number: MiB; 0: none)", "SIZE" },
  { "disk", '\0', POPT_ARG_STRING, &o_disk, 0, "the disk (vda, ...) the I/O limits apply to", "DEV" },
  { "read-bytes-sec", '\0', POPT_ARG_STRING, &o_rbps, 0, "disk read limit in bytes per second (0: none)", "SIZE" },
  { "write-bytes-sec", '\0', POPT_ARG_STRING, &o_wbps, 0, "disk write limit in bytes per second", "SIZE" },
  { "total-bytes-sec", '\0', POPT_ARG_STRING, &o_tbps, 0, "disk read+write limit in bytes per second", "SIZE" },
  { "read-iops-sec", '\0', POPT_ARG_STRING, &o_riops, 0, "disk read operations per second", "N" },
  { "write-iops-sec", '\0', POPT_ARG_STRING, &o_wiops, 0, "disk write operations per second", "N" },
  { "total-iops-sec", '\0', POPT_ARG_STRING, &o_tiops, 0, "disk read+write operations per second", "N" },
  { "nic", '\0', POPT_ARG_STRING, &o_nic, 0, "the NIC (MAC or host device) the bandwidth limits apply to", "NIC" },
  { "inbound", '\0', POPT_ARG_STRING, &o_inbound, 0, "NIC bandwidth into the guest, bytes per second (0: none)", "SIZE" },
  { "outbound", '\0', POPT_ARG_STRING, &o_outbound, 0, "NIC bandwidth out of the guest, bytes per second", "SIZE" },
  { "live", '\0', POPT_ARG_NONE, &o_live, 0, "change the running VM", NULL },
  { "config", '\0', POPT_ARG_NONE, &o_config, 0, "change the persistent definition (next boot)", NULL },
  VM_POPT_FILTER,
  VM_POPT_LOCK,
  VM_POPT_COMMON,
  POPT_TABLEEND
};

/* Typed parameters, freed on every path. */
struct params {
  virTypedParameterPtr p;
  int n, max;
};

static void params_free(struct params *t) { virTypedParamsFree(t->p, t->n); }

static int add_size(struct params *t, const char *field, const char *opt, const char *val)
{
  uint64_t v;
  if (!val) return 0;
  if (vm_parse_size(val, 'B', &v) < 0) return vm_usage_error("invalid %s '%s'", opt, val);
  virTypedParamsAddULLong(&t->p, &t->n, &t->max, field, v);
  return 0;
}

/* NIC bandwidth: libvirt takes KiB/s as an unsigned int. */
static int add_kib_rate(struct params *t, const char *field, const char *opt, const char *val)
{
  uint64_t v;
  if (!val) return 0;
  if (vm_parse_size(val, 'B', &v) < 0 || (v >> 10) > UINT32_MAX || (v && v < 1024))
    return vm_usage_error("invalid %s '%s': expected 0 or 1K to 4T per second", opt, val);
  virTypedParamsAddUInt(&t->p, &t->n, &t->max, field, (unsigned)(v >> 10));
  return 0;
}

static int add_count(struct params *t, const char *field, const char *opt, const char *val)
{
  uint64_t v;
  if (!val) return 0;
  if (vm_parse_uint(val, 0, UINT64_MAX / 2, &v) < 0) return vm_usage_error("invalid %s '%s'", opt, val);
  virTypedParamsAddULLong(&t->p, &t->n, &t->max, field, v);
  return 0;
}

/* Shows every limit in force as one record. */
static int show(virDomainPtr dom, unsigned flags)
{
  CLEANUP_JSON json_object *o = json_object_new_object();
  virTypedParameterPtr p = NULL;
  int n = 0;
  char *type = virDomainGetSchedulerType(dom, &n);
  free(type);
  if (n > 0) {
    p = calloc((size_t)n, sizeof *p);
    if (virDomainGetSchedulerParametersFlags(dom, p, &n, flags) == 0) {
      unsigned long long u;
      long long l;
      if (virTypedParamsGetULLong(p, n, VIR_DOMAIN_SCHEDULER_CPU_SHARES, &u) == 1)
        json_object_object_add(o, "cpu_shares", json_object_new_int64((int64_t)u));
      if (virTypedParamsGetLLong(p, n, VIR_DOMAIN_SCHEDULER_VCPU_QUOTA, &l) == 1)
        json_object_object_add(o, "cpu_quota", json_object_new_int64(l));
      if (virTypedParamsGetULLong(p, n, VIR_DOMAIN_SCHEDULER_VCPU_PERIOD, &u) == 1)
        json_object_object_add(o, "cpu_period", json_object_new_int64((int64_t)u));
    }
    virTypedParamsFree(p, n);
  } else {
    virResetLastError();
  }
  n = 0;
  if (virDomainGetMemoryParameters(dom, NULL, &n, flags) == 0 && n > 0) {
    p = calloc((size_t)n, sizeof *p);
    if (virDomainGetMemoryParameters(dom, p, &n, flags) == 0) {
      unsigned long long u;
      if (virTypedParamsGetULLong(p, n, VIR_DOMAIN_MEMORY_HARD_LIMIT, &u) == 1)
        json_object_object_add(o, "mem_hard", u == VIR_DOMAIN_MEMORY_PARAM_UNLIMITED ? NULL : json_object_new_int64((int64_t)u * 1024));
      if (virTypedParamsGetULLong(p, n, VIR_DOMAIN_MEMORY_SOFT_LIMIT, &u) == 1)
        json_object_object_add(o, "mem_soft", u == VIR_DOMAIN_MEMORY_PARAM_UNLIMITED ? NULL : json_object_new_int64((int64_t)u * 1024));
    }
    virTypedParamsFree(p, n);
  } else {
    virResetLastError();
  }

  CLEANUP_XMLDOC xmlDocPtr doc = vm_domain_doc(dom, flags & VIR_DOMAIN_AFFECT_CONFIG ? VIR_DOMAIN_XML_INACTIVE : 0);
  if (!doc) return VM_EXIT_FAIL;
  struct vm_disk *disks;
  size_t nd;
  vm_domain_disks(doc, &disks, &nd);
  json_object *jd = json_object_new_array();
  static const char *const io_keys[] = { "read_bytes_sec", "write_bytes_sec", "total_bytes_sec",
                                         "read_iops_sec", "write_iops_sec", "total_iops_sec" };
  for (size_t i = 0; i < nd; i++) {
    if (!disks[i].target || (disks[i].device && strcmp(disks[i].device, "disk") != 0)) continue;
    n = 0;
    if (virDomainGetBlockIoTune(dom, disks[i].target, NULL, &n, flags) < 0 || n <= 0) {
      virResetLastError();
      continue;
    }
    p = calloc((size_t)n, sizeof *p);
    if (virDomainGetBlockIoTune(dom, disks[i].target, p, &n, flags) == 0) {
      json_object *d = json_object_new_object();
      json_object_object_add(d, "disk", json_object_new_string(disks[i].target));
      for (size_t k = 0; k < sizeof io_keys / sizeof *io_keys; k++) {
        unsigned long long u = 0;
        virTypedParamsGetULLong(p, n, io_keys[k], &u);
        json_object_object_add(d, io_keys[k], json_object_new_int64((int64_t)u));
      }
      json_object_array_add(jd, d);
    }
    virTypedParamsFree(p, n);
  }
  vm_disks_free(disks, nd);
  json_object_object_add(o, "disks", jd);

  CLEANUP_XPATHCTX xmlXPathContextPtr x = vm_xpath_ctx(doc);
  CLEANUP_XPATHOBJ xmlXPathObjectPtr nics = vm_xpath_nodes(x, "/domain/devices/interface");
  json_object *jn = json_object_new_array();
  for (int i = 0; nics && nics->nodesetval && i < nics->nodesetval->nodeNr; i++) {
    x->node = nics->nodesetval->nodeTab[i];
    CLEANUP_FREE char *mac = vm_xpath_str(x, "mac/@address");
    json_object *nj = json_object_new_object();
    json_object_object_add(nj, "nic", json_object_new_string(mac ? mac : "?"));
    /* libvirt keeps bandwidth in KiB/s; vmkit shows bytes/s like everywhere else. */
    long long in = vm_xpath_ll(x, "bandwidth/inbound/@average", 0);
    long long out = vm_xpath_ll(x, "bandwidth/outbound/@average", 0);
    json_object_object_add(nj, "inbound", json_object_new_int64(in * 1024));
    json_object_object_add(nj, "outbound", json_object_new_int64(out * 1024));
    json_object_array_add(jn, nj);
  }
  json_object_object_add(o, "nics", jn);
  static const struct vm_column cols[] = {
    { "mem_hard", "", VM_COL_BYTES }, { "mem_soft", "", VM_COL_BYTES }, { NULL, NULL, 0 }
  };
  return vm_print_record(o, cols);
}

/* The type of the NIC named by MAC or host device, for a clear refusal where the
 * host cannot shape it: user-mode NICs have no tap device for tc. */
static char *nic_type(virDomainPtr dom, const char *nic, unsigned flags)
{
  CLEANUP_XMLDOC xmlDocPtr doc = vm_domain_doc(dom, flags & VIR_DOMAIN_AFFECT_CONFIG ? VIR_DOMAIN_XML_INACTIVE : 0);
  if (!doc) return NULL;
  CLEANUP_XPATHCTX xmlXPathContextPtr x = vm_xpath_ctx(doc);
  CLEANUP_FREE char *lower = strdup(nic);
  for (char *c = lower; *c; c++) *c = (char)(*c >= 'A' && *c <= 'F' ? *c + 32 : *c);
  if (strchr(nic, '\'')) return NULL; /* cannot be quoted in XPath 1.0; no NIC has it */
  CLEANUP_FREE char *expr = vm_strdup_printf(
    "/domain/devices/interface[mac/@address='%s' or target/@dev='%s']/@type", lower, nic);
  return vm_xpath_str(x, expr);
}

/* ---- all or none ------------------------------------------------------------------ */

enum group { G_CPU, G_MEM, G_IO, G_BW };
static const char *const group_names[] = { "CPU limits", "memory limits", "disk I/O limits", "NIC bandwidth" };

static int get_group(virDomainPtr dom, enum group g, unsigned flags, struct params *out)
{
  int n = 0;
  virTypedParameterPtr p = NULL;
  int rc = -1;
  switch (g) {
  case G_CPU: {
    char *type = virDomainGetSchedulerType(dom, &n);
    free(type);
    if (n <= 0) break;
    p = calloc((size_t)n, sizeof *p);
    rc = virDomainGetSchedulerParametersFlags(dom, p, &n, flags);
    break;
  }
  case G_MEM:
    if (virDomainGetMemoryParameters(dom, NULL, &n, flags) < 0 || n <= 0) break;
    p = calloc((size_t)n, sizeof *p);
    rc = virDomainGetMemoryParameters(dom, p, &n, flags);
    break;
  case G_IO:
    if (virDomainGetBlockIoTune(dom, o_disk, NULL, &n, flags) < 0 || n <= 0) break;
    p = calloc((size_t)n, sizeof *p);
    rc = virDomainGetBlockIoTune(dom, o_disk, p, &n, flags);
    break;
  case G_BW:
    if (virDomainGetInterfaceParameters(dom, o_nic, NULL, &n, flags) < 0 || n <= 0) break;
    p = calloc((size_t)n, sizeof *p);
    rc = virDomainGetInterfaceParameters(dom, o_nic, p, &n, flags);
    break;
  }
  if (rc < 0) {
    free(p);
    return -1;
  }
  *out = (struct params){ p, n, n };
  return 0;
}

static int set_group(virDomainPtr dom, enum group g, unsigned flags, const struct params *t)
{
  switch (g) {
  case G_CPU: return virDomainSetSchedulerParametersFlags(dom, t->p, t->n, flags);
  case G_MEM: return virDomainSetMemoryParameters(dom, t->p, t->n, flags);
  case G_IO: return virDomainSetBlockIoTune(dom, o_disk, t->p, t->n, flags);
  case G_BW: return virDomainSetInterfaceParameters(dom, o_nic, t->p, t->n, flags);
  }
  return -1;
}

/* The old values of exactly the fields a change sets. */
static void old_values(const struct params *old, const struct params *change, struct params *out)
{
  memset(out, 0, sizeof *out);
  for (int i = 0; i < change->n; i++) {
    virTypedParameterPtr o = virTypedParamsGet(old->p, old->n, change->p[i].field);
    if (!o) continue;
    virTypedParameterPtr np = realloc(out->p, (size_t)(out->n + 1) * sizeof *np);
    if (!np) continue;
    out->p = np;
    out->p[out->n++] = *o; /* numbers only: nothing to copy deeply */
  }
  out->max = out->n;
}

struct applied {
  enum group g;
  unsigned flags;
  struct params undo;
};

/* The settings go in several calls (one per kind, per definition): when one fails,
 * those applied before it are set back, so that the VM keeps all or none; what
 * cannot be set back is named. */
static int apply_all(virDomainPtr dom, const char *name, unsigned flags, struct params *cpu, struct params *mem,
                     struct params *io, struct params *bw)
{
  struct params *changes[] = { cpu, mem, io, bw };
  unsigned targets[2];
  size_t nt = 0;
  if (flags & VIR_DOMAIN_AFFECT_LIVE) targets[nt++] = VIR_DOMAIN_AFFECT_LIVE;
  if (flags & VIR_DOMAIN_AFFECT_CONFIG) targets[nt++] = VIR_DOMAIN_AFFECT_CONFIG;
  if (!nt) targets[nt++] = VIR_DOMAIN_AFFECT_CURRENT;
  struct applied done[8];
  size_t nd = 0;
  int rc = 0;
  for (size_t t = 0; t < nt && rc == 0; t++) {
    for (int g = G_CPU; g <= G_BW && rc == 0; g++) {
      if (!changes[g]->n) continue;
      struct params old = { 0 };
      bool have_old = get_group(dom, (enum group)g, targets[t], &old) == 0;
      virResetLastError();
      if (set_group(dom, (enum group)g, targets[t], changes[g]) < 0) {
        if (g == G_IO) rc = vm_fail_virt("cannot set I/O limits of disk '%s' of '%s'", o_disk, name);
        else if (g == G_BW) rc = vm_fail_virt("cannot limit bandwidth of NIC '%s' of '%s'", o_nic, name);
        else rc = vm_fail_virt("cannot set %s of '%s'", group_names[g], name);
        params_free(&old);
        break;
      }
      done[nd].g = (enum group)g;
      done[nd].flags = targets[t];
      if (have_old) old_values(&old, changes[g], &done[nd].undo);
      else done[nd].undo = (struct params){ 0 };
      nd++;
      params_free(&old);
    }
  }
  if (rc) {
    /* Back in reverse order. */
    for (size_t i = nd; i-- > 0;) {
      bool back = done[i].undo.n == 0 ? false : set_group(dom, done[i].g, done[i].flags, &done[i].undo) == 0;
      if (!back)
        vm_warn("%s of '%s' stay applied (%s): they could not be set back%s%s", group_names[done[i].g], name,
                done[i].flags == VIR_DOMAIN_AFFECT_CONFIG ? "the next boot's" : "the running VM's",
                done[i].undo.n ? ": " : "", done[i].undo.n ? vm_virt_message() : "");
      else
        vm_debug("set %s of '%s' back", group_names[done[i].g], name);
    }
  }
  for (size_t i = 0; i < nd; i++) free(done[i].undo.p);
  return rc;
}

/* The filter of every network= and bridge= NIC, on the running VM and on its
 * definition (or only the one --live or --config names). */
static int set_filter(virDomainPtr dom, const char *name, const char *filter, const char *ip, const struct vm_strv *tcp,
                      const struct vm_strv *udp, unsigned flags)
{
  int active = virDomainIsActive(dom), persistent = virDomainIsPersistent(dom);
  virResetLastError();
  bool live = (flags & VIR_DOMAIN_AFFECT_LIVE) || (!flags && active == 1);
  bool conf = (flags & VIR_DOMAIN_AFFECT_CONFIG) || (!flags && persistent == 1);
  if (live && active != 1) return vm_fail(VM_EXIT_STATE, "VM '%s' is not running: --live has nothing to change", name);
  size_t changed = 0;
  for (int pass = 0; pass < 2; pass++) {
    if (!(pass ? conf : live)) continue;
    CLEANUP_XMLDOC xmlDocPtr doc = vm_domain_doc(dom, pass ? VIR_DOMAIN_XML_INACTIVE : 0);
    if (!doc) return VM_EXIT_FAIL;
    CLEANUP_XPATHCTX xmlXPathContextPtr x = vm_xpath_ctx(doc);
    CLEANUP_XPATHOBJ xmlXPathObjectPtr nics =
      vm_xpath_nodes(x, "/domain/devices/interface[@type = 'network' or @type = 'bridge']");
    int n = nics && nics->nodesetval ? nics->nodesetval->nodeNr : 0;
    if (!n) return vm_fail(VM_EXIT_STATE, "VM '%s' has no network= or bridge= NIC to filter (a user-mode NIC has no "
                           "tap device)", name);
    for (int i = 0; i < n; i++) {
      xmlNodePtr nic = nics->nodesetval->nodeTab[i];
      /* An IP given before stays, unless another is given. */
      x->node = nic;
      CLEANUP_FREE char *old_ip = ip ? NULL : vm_xpath_str(x, "filterref/parameter[@name='IP']/@value");
      vm_nic_set_filter(nic, filter, ip ? ip : old_ip, tcp->v, udp->v);
      CLEANUP_FREE char *xml = vm_xml_node_dump(nic);
      if (!xml || virDomainUpdateDeviceFlags(dom, xml, pass ? VIR_DOMAIN_AFFECT_CONFIG : VIR_DOMAIN_AFFECT_LIVE) < 0)
        return vm_fail_virt("cannot %s the traffic filter of NIC %d of '%s'%s", filter ? "set" : "remove", i + 1, name,
                            changed ? " (the NICs before it were changed)" : "");
      changed++;
    }
  }
  if (filter) vm_info("traffic filter '%s' on the NICs of '%s'%s%s", filter, name, ip ? ", IP " : "", ip ? ip : "");
  else vm_info("no traffic filter on the NICs of '%s'", name);
  return 0;
}

/* The base filter on the VM's NICs now (the first one's, under vmkit's inbound
 * firewall if there is one), or NULL. Caller frees. */
static char *current_base(virDomainPtr dom, unsigned flags)
{
  CLEANUP_XMLDOC xmlDocPtr doc = vm_domain_doc(dom, flags & VIR_DOMAIN_AFFECT_CONFIG ? VIR_DOMAIN_XML_INACTIVE : 0);
  CLEANUP_XPATHCTX xmlXPathContextPtr x = doc ? vm_xpath_ctx(doc) : NULL;
  char *f = x ? vm_xpath_str(x, "/domain/devices/interface/filterref/@filter") : NULL;
  virResetLastError();
  size_t pl = strlen(VM_INBOUND_FILTER_PREFIX);
  if (f && strncmp(f, VM_INBOUND_FILTER_PREFIX, pl) == 0 && f[pl]) memmove(f, f + pl, strlen(f + pl) + 1);
  return f;
}

int cmd_tune(int argc, char **argv)
{
  CLEANUP_POPT poptContext ctx = NULL;
  const char **args;
  int nargs;
  int rc = vm_parse(&ctx, argc, argv, options, "VM",
                    "Show or set a VM's CPU, memory, disk I/O and network limits.", 1, 1, &args, &nargs);
  if (rc) return rc == VM_DONE ? 0 : rc;
  const char *name = args[0];
  unsigned flags = (o_live ? VIR_DOMAIN_AFFECT_LIVE : 0) | (o_config ? VIR_DOMAIN_AFFECT_CONFIG : 0);

  struct params cpu = { 0 }, mem = { 0 }, io = { 0 }, bw = { 0 };
  /* Declared before the first goto: the exit path frees them. */
  struct vm_filter_opts fo = { 0 };
  CLEANUP_FREE char *inbound = NULL, *base = NULL;
  const char *filter = NULL;
  CLEANUP_VIRCONN virConnectPtr conn = NULL;
  CLEANUP_VIRDOMAIN virDomainPtr dom = NULL;
  uint64_t v;
  if (o_shares) {
    if (vm_parse_uint(o_shares, 2, 262144, &v) < 0)
      return vm_usage_error("invalid --cpu-shares '%s': expected 2 to 262144", o_shares);
    virTypedParamsAddULLong(&cpu.p, &cpu.n, &cpu.max, VIR_DOMAIN_SCHEDULER_CPU_SHARES, v);
  }
  if (o_quota) {
    char *end;
    long long q = strtoll(o_quota, &end, 10);
    if (*end || !*o_quota || (q < 1000 && q != -1) || q > 17592186044415LL)
      return vm_usage_error("invalid --cpu-quota '%s': expected -1 or 1000 to 17592186044415", o_quota);
    virTypedParamsAddLLong(&cpu.p, &cpu.n, &cpu.max, VIR_DOMAIN_SCHEDULER_VCPU_QUOTA, q);
  }
  if (o_period) {
    if (vm_parse_uint(o_period, 1000, 1000000, &v) < 0)
      return vm_usage_error("invalid --cpu-period '%s': expected 1000 to 1000000", o_period);
    virTypedParamsAddULLong(&cpu.p, &cpu.n, &cpu.max, VIR_DOMAIN_SCHEDULER_VCPU_PERIOD, v);
  }
  /* Memory limits go to libvirt in KiB; 0 means no limit. */
  const char *mopts[2] = { o_mem_hard, o_mem_soft };
  const char *mkeys[2] = { VIR_DOMAIN_MEMORY_HARD_LIMIT, VIR_DOMAIN_MEMORY_SOFT_LIMIT };
  for (int i = 0; i < 2; i++) {
    if (!mopts[i]) continue;
    if (vm_parse_size(mopts[i], 'M', &v) < 0)
      return vm_usage_error("invalid --mem-%s '%s'", i ? "soft" : "hard", mopts[i]);
    virTypedParamsAddULLong(&mem.p, &mem.n, &mem.max, mkeys[i], v ? v >> 10 : VIR_DOMAIN_MEMORY_PARAM_UNLIMITED);
  }
  if ((rc = add_size(&io, VIR_DOMAIN_BLOCK_IOTUNE_READ_BYTES_SEC, "--read-bytes-sec", o_rbps)) ||
      (rc = add_size(&io, VIR_DOMAIN_BLOCK_IOTUNE_WRITE_BYTES_SEC, "--write-bytes-sec", o_wbps)) ||
      (rc = add_size(&io, VIR_DOMAIN_BLOCK_IOTUNE_TOTAL_BYTES_SEC, "--total-bytes-sec", o_tbps)) ||
      (rc = add_count(&io, VIR_DOMAIN_BLOCK_IOTUNE_READ_IOPS_SEC, "--read-iops-sec", o_riops)) ||
      (rc = add_count(&io, VIR_DOMAIN_BLOCK_IOTUNE_WRITE_IOPS_SEC, "--write-iops-sec", o_wiops)) ||
      (rc = add_count(&io, VIR_DOMAIN_BLOCK_IOTUNE_TOTAL_IOPS_SEC, "--total-iops-sec", o_tiops)) ||
      (rc = add_kib_rate(&bw, VIR_DOMAIN_BANDWIDTH_IN_AVERAGE, "--inbound", o_inbound)) ||
      (rc = add_kib_rate(&bw, VIR_DOMAIN_BANDWIDTH_OUT_AVERAGE, "--outbound", o_outbound)))
    goto out;
  if (io.n && !o_disk) { rc = vm_usage_error("disk I/O limits need --disk DEV"); goto out; }
  if (o_disk && !io.n) { rc = vm_usage_error("--disk needs a limit such as --total-bytes-sec"); goto out; }
  if (bw.n && !o_nic) { rc = vm_usage_error("bandwidth limits need --nic MAC"); goto out; }
  if (o_nic && !bw.n) { rc = vm_usage_error("--nic needs --inbound or --outbound"); goto out; }
  if ((rc = vm_filter_opts_get(&fo))) goto out;
  filter = fo.filter;

  if (!(conn = vm_connect())) { rc = VM_EXIT_FAIL; goto out; }
  if ((rc = vm_lookup(conn, name, &dom))) goto out;

  if (!cpu.n && !mem.n && !io.n && !bw.n && !filter) {
    rc = show(dom, flags);
    goto out;
  }
  /* A change: the VM is locked for it. */
  {
    CLEANUP_FREE char *other = NULL;
    if ((rc = vm_lock_and_recover(conn, &dom, name, &other))) goto out;
    if (other) vm_warn("VM '%s' has an unfinished %s: the next %s run on it finishes it", name, other,
              vm_journal_op_tool(other));
  }
  /* Checked before anything is applied: the disk and the NIC exist, and the NIC
   * can be shaped. */
  if (io.n) {
    CLEANUP_XMLDOC xmlDocPtr doc = vm_domain_doc(dom, flags & VIR_DOMAIN_AFFECT_CONFIG ? VIR_DOMAIN_XML_INACTIVE : 0);
    struct vm_disk *disks = NULL;
    size_t nd = 0;
    bool found = false;
    if (doc) vm_domain_disks(doc, &disks, &nd);
    for (size_t i = 0; i < nd; i++)
      found |= disks[i].target && strcmp(disks[i].target, o_disk) == 0;
    vm_disks_free(disks, nd);
    if (!doc) { rc = VM_EXIT_FAIL; goto out; }
    if (!found) {
      rc = vm_fail(VM_EXIT_NOTFOUND, "VM '%s' has no disk '%s'", name, o_disk);
      goto out;
    }
  }
  if (bw.n) {
    CLEANUP_FREE char *type = nic_type(dom, o_nic, flags);
    if (!type) {
      rc = vm_fail(VM_EXIT_NOTFOUND, "VM '%s' has no NIC '%s'", name, o_nic);
      goto out;
    }
    if (strcmp(type, "user") == 0) {
      rc = vm_fail(VM_EXIT_FAIL, "cannot limit bandwidth of NIC '%s' of '%s': a user-mode NIC has no "
                   "tap device to shape; use a network= or bridge= NIC", o_nic, name);
      goto out;
    }
  }
  if (filter && strcmp(filter, "none") != 0 && !fo.ports && (rc = vm_nwfilter_check(conn, filter))) goto out;
  if (fo.ports) {
    /* Without --filter, the firewall goes on the filter the NICs have. */
    if (!fo.named && (base = current_base(dom, flags))) filter = base;
    if ((rc = vm_nwfilter_inbound(conn, filter, &inbound))) goto out;
    filter = inbound;
  }
  if (cpu.n || mem.n || io.n || bw.n) {
    rc = apply_all(dom, name, flags, &cpu, &mem, &io, &bw);
    if (rc) goto out;
    vm_info("tuned VM '%s'", name);
  }
  if (filter) rc = set_filter(dom, name, strcmp(filter, "none") == 0 ? NULL : filter, fo.ip, &fo.tcp, &fo.udp, flags);
out:
  vm_filter_opts_free(&fo);
  params_free(&cpu);
  params_free(&mem);
  params_free(&io);
  params_free(&bw);
  return rc;
}
