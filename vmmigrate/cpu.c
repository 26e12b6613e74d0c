/* CPUs: can the destination run the guest's CPU definition, and the CPU definition
 * every host of the pool can run (what VMware calls EVC).
 * A live destination is asked directly (libvirt's hypervisor CPU comparison, which
 * knows what its KVM or TCG can give). A recorded host CPU definition (--dest-cpu,
 * as `virsh capabilities` prints it) is compared feature by feature: libvirt's
 * baseline API expands the host's model and the guest's model into their full
 * feature lists, and every feature the guest needs must be in the host's. */
#include <string.h>

#include "vmmigrate.h"

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static char *node_xml(xmlNodePtr node)
{
  xmlBufferPtr b = xmlBufferCreate();
  xmlNodeDump(b, node->doc, node, 0, 0);
  char *s = vm_strdup((const char *)xmlBufferContent(b));
  xmlBufferFree(b);
  return s;
}

/* The host CPU of a capabilities document, or a bare <cpu> document. */
static xmlNodePtr host_cpu_node(xmlDocPtr doc)
{
  xmlNodePtr root = xmlDocGetRootElement(doc);
  if (!root) return NULL;
  if (xmlStrcmp(root->name, BAD_CAST "cpu") == 0) return root;
  CLEANUP_XPATHCTX xmlXPathContextPtr x = vm_xpath_ctx(doc);
  CLEANUP_XPATHOBJ xmlXPathObjectPtr o = vm_xpath_nodes(x, "/capabilities/host/cpu");
  return o && o->nodesetval && o->nodesetval->nodeNr ? o->nodesetval->nodeTab[0] : NULL;
}

static char *cpu_field(xmlNodePtr cpu, const char *name)
{
  xmlNodePtr c = vm_xml_find(cpu, name);
  if (!c) return NULL;
  xmlChar *t = xmlNodeGetContent(c);
  char *s = t ? vm_strdup((const char *)t) : NULL;
  xmlFree(t);
  return s;
}

/* The features of a CPU definition, with every feature of its model, through
 * libvirt's baseline of that one CPU. Features the definition disables or forbids
 * are left out. */
static int expand_features(virConnectPtr conn, xmlNodePtr cpu, const char *arch, struct vm_strv *out)
{
  /* Host-style input: <cpu><arch/><model/><vendor/><feature name/>...</cpu>. */
  CLEANUP_XMLDOC xmlDocPtr in = xmlNewDoc(BAD_CAST "1.0");
  xmlNodePtr root = xmlNewNode(NULL, BAD_CAST "cpu");
  xmlDocSetRootElement(in, root);
  CLEANUP_FREE char *model = cpu_field(cpu, "model"), *vendor = cpu_field(cpu, "vendor"), *a = cpu_field(cpu, "arch");
  xmlNewTextChild(root, NULL, BAD_CAST "arch", BAD_CAST(a ? a : arch ? arch : "x86_64"));
  if (model) xmlNewTextChild(root, NULL, BAD_CAST "model", BAD_CAST model);
  if (vendor) xmlNewTextChild(root, NULL, BAD_CAST "vendor", BAD_CAST vendor);
  struct vm_strv off = { 0 };
  for (xmlNodePtr f = cpu->children; f; f = f->next) {
    if (f->type != XML_ELEMENT_NODE || xmlStrcmp(f->name, BAD_CAST "feature") != 0) continue;
    CLEANUP_XMLFREE char *name = vm_xml_prop(f, "name");
    CLEANUP_XMLFREE char *policy = vm_xml_prop(f, "policy");
    if (!name) continue;
    if (policy && (strcmp(policy, "disable") == 0 || strcmp(policy, "forbid") == 0)) {
      vm_strv_add(&off, name);
      continue;
    }
    if (policy && strcmp(policy, "optional") == 0) continue;
    xmlNodePtr nf = xmlNewChild(root, NULL, BAD_CAST "feature", NULL);
    xmlNewProp(nf, BAD_CAST "name", BAD_CAST name);
  }
  CLEANUP_FREE char *inxml = vm_xml_dump(in);
  const char *cpus[] = { inxml };
  CLEANUP_FREE char *res = virConnectBaselineCPU(conn, cpus, 1, VIR_CONNECT_BASELINE_CPU_EXPAND_FEATURES);
  if (!res) {
    vm_strv_free(&off);
    return vm_fail_virt("cannot expand CPU model '%s'", model ? model : "?");
  }
  CLEANUP_XMLDOC xmlDocPtr doc = vm_xml_parse(res);
  CLEANUP_XPATHCTX xmlXPathContextPtr x = doc ? vm_xpath_ctx(doc) : NULL;
  CLEANUP_XPATHOBJ xmlXPathObjectPtr o = x ? vm_xpath_nodes(x, "/cpu/feature[not(@policy) or @policy='require']") : NULL;
  for (int i = 0; o && o->nodesetval && i < o->nodesetval->nodeNr; i++) {
    CLEANUP_XMLFREE char *name = vm_xml_prop(o->nodesetval->nodeTab[i], "name");
    if (name && !vm_strv_contains(off.v, name)) vm_strv_add(out, name);
  }
  vm_strv_free(&off);
  return 0;
}

/* What a guest that sees the host's CPU depends on: its model, vendor and
 * features (not its microcode, counters or topology). */
static char *cpu_identity(xmlNodePtr cpu)
{
  CLEANUP_FREE char *model = cpu_field(cpu, "model"), *vendor = cpu_field(cpu, "vendor");
  struct vm_strv f = { 0 };
  for (xmlNodePtr c = cpu->children; c; c = c->next) {
    if (c->type != XML_ELEMENT_NODE || xmlStrcmp(c->name, BAD_CAST "feature") != 0) continue;
    CLEANUP_XMLFREE char *name = vm_xml_prop(c, "name");
    if (name) vm_strv_add(&f, name);
  }
  if (f.n) qsort(f.v, f.n, sizeof *f.v, cmp_str);
  CLEANUP_FREE char *feats = f.n ? vm_strv_join_quoted(f.v) : vm_strdup("");
  vm_strv_free(&f);
  /* The family, model and stepping, and the physical address bits, are seen too. */
  xmlNodePtr sig = vm_xml_find(cpu, "signature"), phys = vm_xml_find(cpu, "maxphysaddr");
  CLEANUP_XMLFREE char *fam = sig ? vm_xml_prop(sig, "family") : NULL;
  CLEANUP_XMLFREE char *mod = sig ? vm_xml_prop(sig, "model") : NULL;
  CLEANUP_XMLFREE char *step = sig ? vm_xml_prop(sig, "stepping") : NULL;
  CLEANUP_XMLFREE char *bits = phys ? vm_xml_prop(phys, "bits") : NULL;
  return vm_strdup_printf("%s/%s/%s/%s.%s.%s/%s", model ? model : "", vendor ? vendor : "", feats, fam ? fam : "",
                          mod ? mod : "", step ? step : "", bits ? bits : "");
}

/* A guest CPU against a recorded host CPU definition. */
static void check_recorded(struct move *m, xmlNodePtr guest, const char *arch)
{
  CLEANUP_FREE char *text = vm_read_file(mo.dest_cpu_file, 1 << 20, NULL);
  CLEANUP_XMLDOC xmlDocPtr doc = text ? vm_xml_parse(text) : NULL;
  xmlNodePtr host = doc ? host_cpu_node(doc) : NULL;
  if (!host) {
    check_add(m, "cpu", VM_EXIT_USAGE, "'%s' holds no host CPU definition (<cpu> or virsh capabilities)",
              mo.dest_cpu_file);
    return;
  }
  CLEANUP_FREE char *hmodel = cpu_field(host, "model"), *hvendor = cpu_field(host, "vendor");
  if (!guest) {
    check_add(m, "cpu", 0, "the guest uses the hypervisor's default CPU model: not compared with %s (%s)",
              mo.dest_cpu_file, hmodel ? hmodel : "?");
    return;
  }
  struct vm_strv have = { 0 }, need = { 0 }, missing = { 0 };
  CLEANUP_FREE char *gmodel = cpu_field(guest, "model");
  if (expand_features(m->src.conn, host, arch, &have) || expand_features(m->src.conn, guest, arch, &need)) {
    check_add(m, "cpu", VM_EXIT_FAIL, "%s", vm_last_error());
  } else {
    /* What any x86 hypervisor gives its guests whatever the host has: the
     * hypervisor bit, and the local APIC's x2APIC mode, TSC deadline timer and
     * always-running timer, which KVM and TCG emulate. */
    static const char *const emulated[] = { "hypervisor", "x2apic", "tsc-deadline", "arat", NULL };
    for (size_t i = 0; i < need.n; i++)
      if (!vm_strv_contains(have.v, need.v[i]) && !vm_strv_contains((char *const *)emulated, need.v[i]))
        vm_strv_add(&missing, need.v[i]);
    if (missing.n) {
      CLEANUP_FREE char *list = vm_strv_join_quoted(missing.v);
      check_add(m, "cpu", VM_EXIT_STATE, "the CPU of %s (%s %s, recorded in %s) lacks %zu feature(s) that the "
                "guest's CPU (%s) needs: %s", m->dst.label, hvendor ? hvendor : "", hmodel ? hmodel : "?",
                mo.dest_cpu_file, missing.n, gmodel ? gmodel : "?", list);
    } else {
      check_add(m, "cpu", 0, "the CPU of %s (%s, recorded) has every feature of the guest's CPU (%s)", m->dst.label,
                hmodel ? hmodel : "?", gmodel ? gmodel : "?");
    }
  }
  vm_strv_free(&have);
  vm_strv_free(&need);
  vm_strv_free(&missing);
}

int cpu_check(struct move *m, xmlXPathContextPtr dx)
{
  CLEANUP_FREE char *arch = vm_xpath_str(dx, "/domain/os/type/@arch");
  CLEANUP_FREE char *virttype = vm_xpath_str(dx, "/domain/@type");
  CLEANUP_FREE char *mode = vm_xpath_str(dx, "/domain/cpu/@mode");
  CLEANUP_XPATHOBJ xmlXPathObjectPtr co = vm_xpath_nodes(dx, "/domain/cpu[model or @mode='host-passthrough' or @mode='maximum']");
  xmlNodePtr guest = co && co->nodesetval && co->nodesetval->nodeNr ? co->nodesetval->nodeTab[0] : NULL;

  /* The vendors of the two hosts: a running guest has seen its CPU's vendor. */
  CLEANUP_XMLDOC xmlDocPtr scaps = vm_conn_caps(m->src.conn);
  CLEANUP_XMLDOC xmlDocPtr dcaps = mo.dest_cpu_file ? NULL : vm_conn_caps(m->dst.conn);
  CLEANUP_FREE char *text = mo.dest_cpu_file ? vm_read_file(mo.dest_cpu_file, 1 << 20, NULL) : NULL;
  CLEANUP_XMLDOC xmlDocPtr rec = text ? vm_xml_parse(text) : NULL;
  xmlNodePtr scpu = scaps ? host_cpu_node(scaps) : NULL;
  xmlNodePtr dcpu = mo.dest_cpu_file ? (rec ? host_cpu_node(rec) : NULL) : dcaps ? host_cpu_node(dcaps) : NULL;
  if (mo.dest_cpu_file && !dcpu) {
    check_add(m, "cpu", VM_EXIT_USAGE, "cannot read a host CPU definition from '%s'", mo.dest_cpu_file);
    return m->check_rc;
  }
  CLEANUP_FREE char *sv = scpu ? cpu_field(scpu, "vendor") : NULL;
  CLEANUP_FREE char *dv = dcpu ? cpu_field(dcpu, "vendor") : NULL;
  if (m->live && sv && dv && strcmp(sv, dv) != 0)
    check_add(m, "cpu-vendor", VM_EXIT_STATE,
              "%s has an %s CPU and %s an %s one: a running guest cannot move to another CPU vendor (shut it "
              "down and move it with --offline)", m->dst.label, dv, m->src.label, sv);
  else
    check_add(m, "cpu-vendor", 0, "%s: %s, %s: %s%s", m->src.label, sv ? sv : "?", m->dst.label, dv ? dv : "?",
              m->live ? "" : " (an offline move may change vendors)");

  if (mo.dest_cpu_file) {
    check_recorded(m, guest, arch);
    return m->check_rc;
  }
  if (mode && strcmp(mode, "host-passthrough") == 0) {
    /* The guest sees the host's own CPU: only an identical one will do. */
    CLEANUP_FREE char *a = scpu ? cpu_identity(scpu) : NULL, *b = dcpu ? cpu_identity(dcpu) : NULL;
    CLEANUP_FREE char *sm = scpu ? cpu_field(scpu, "model") : NULL, *dm = dcpu ? cpu_field(dcpu, "model") : NULL;
    if (!a || !b) check_add(m, "cpu", VM_EXIT_FAIL, "cannot read the host CPUs");
    else if (m->live && strcmp(a, b) != 0)
      check_add(m, "cpu", VM_EXIT_STATE, "the guest passes the host CPU through, and the CPU of %s (%s) differs from "
                "that of %s (%s)", m->dst.label, dm ? dm : "?", m->src.label, sm ? sm : "?");
    else check_add(m, "cpu", 0, "host-passthrough: the two hosts' CPUs are the same");
    return m->check_rc;
  }
  if (!guest) {
    check_add(m, "cpu", 0, "the guest uses the hypervisor's default CPU model");
    return m->check_rc;
  }
  CLEANUP_FREE char *gxml = node_xml(guest);
  CLEANUP_FREE char *gmodel = cpu_field(guest, "model");
  /* The destination's own emulator and default machine: the source's paths and
   * versions need not exist there. */
  int r = virConnectCompareHypervisorCPU(m->dst.conn, NULL, arch, NULL, virttype, gxml, 0);
  if (r == VIR_CPU_COMPARE_INCOMPATIBLE) {
    /* Again, for libvirt's account of what is missing. */
    virConnectCompareHypervisorCPU(m->dst.conn, NULL, arch, NULL, virttype, gxml,
                                   VIR_CONNECT_COMPARE_CPU_FAIL_INCOMPATIBLE);
    const char *why = vm_virt_message();
    check_add(m, "cpu", VM_EXIT_STATE, "%s cannot run the guest's CPU (%s)%s%s", m->dst.label, gmodel ? gmodel : "?",
              why && *why ? ": " : "", why ? why : "");
  } else if (r < 0) {
    check_add(m, "cpu", VM_EXIT_STATE, "cannot compare the guest's CPU with that of %s: %s", m->dst.label,
              vm_virt_message());
  } else {
    check_add(m, "cpu", 0, "%s can run the guest's CPU (%s)", m->dst.label, gmodel ? gmodel : "?");
  }
  virResetLastError();
  return m->check_rc;
}

/* vmmigrate baseline: the CPU definition every host of the pool (and any recorded
 * host CPU given with --include) can run. */
int cmd_baseline(int argc, char **argv)
{
  const char **includes = NULL;
  int o_xml = 0;
  struct poptOption table[] = {
    { "include", '\0', POPT_ARG_ARGV, &includes, 0,
      "also a host that is not in the pool yet: its recorded CPU definition (virsh capabilities)", "FILE" },
    { "xml", '\0', POPT_ARG_NONE, &o_xml, 0, "print the CPU definition itself, for vmrun create --cpu-model", NULL },
    VM_POPT_COMMON, POPT_TABLEEND
  };
  CLEANUP_POPT poptContext ctx = NULL;
  const char **args;
  int nargs;
  int rc = vm_parse(&ctx, argc, argv, table, "",
                    "Print the CPU definition that every host of the hosts file can run; VMs created with it "
                    "(vmrun create --cpu-model FILE) can move anywhere in the pool.", 0, 0, &args, &nargs);
  if (rc) return rc == VM_DONE ? 0 : rc;
  struct vm_hosts hosts;
  if ((rc = vm_hosts_load(NULL, &hosts))) return rc;
  struct vm_strv cpus = { 0 }, names = { 0 };
  virConnectPtr first = NULL;
  const char *virttype = NULL;
  for (size_t i = 0; i < hosts.n && rc == 0; i++) {
    virConnectPtr c = vm_connect_to(hosts.v[i].uri);
    if (!c) {
      rc = vm_fail(VM_EXIT_FAIL, "host '%s' does not answer: a baseline needs every host", hosts.v[i].name);
      break;
    }
    CLEANUP_XMLDOC xmlDocPtr caps = vm_conn_caps(c);
    xmlNodePtr cpu = caps ? host_cpu_node(caps) : NULL;
    if (!cpu) rc = vm_fail(VM_EXIT_FAIL, "host '%s' reports no CPU", hosts.v[i].name);
    else {
      CLEANUP_FREE char *s = node_xml(cpu);
      vm_strv_add(&cpus, s);
      vm_strv_add(&names, hosts.v[i].name);
    }
    if (!first) {
      first = c;
      virttype = vm_virt_type_of(c);
    } else {
      vm_conn_forget(c);
      virConnectClose(c);
    }
  }
  for (size_t i = 0; rc == 0 && includes && includes[i]; i++) {
    CLEANUP_FREE char *text = vm_read_file(includes[i], 1 << 20, NULL);
    CLEANUP_XMLDOC xmlDocPtr doc = text ? vm_xml_parse(text) : NULL;
    xmlNodePtr cpu = doc ? host_cpu_node(doc) : NULL;
    if (!cpu) rc = vm_fail(VM_EXIT_USAGE, "'%s' holds no host CPU definition", includes[i]);
    else {
      CLEANUP_FREE char *s = node_xml(cpu);
      vm_strv_add(&cpus, s);
      vm_strv_add(&names, includes[i]);
    }
  }
  if (rc == 0 && !first) rc = vm_fail(VM_EXIT_NOTFOUND, "the hosts file %s names no host", vm_hosts_path());
  /* libvirt's baseline refuses CPUs of two vendors. A pool that mixes them can still
   * boot a VM anywhere with a vendor-less baseline; live moves stay within a vendor. */
  struct vm_strv vendors = { 0 };
  bool vendors_mixed = false;
  for (size_t i = 0; rc == 0 && i < cpus.n; i++) {
    CLEANUP_XMLDOC xmlDocPtr d = vm_xml_parse(cpus.v[i]);
    CLEANUP_FREE char *v = d ? cpu_field(xmlDocGetRootElement(d), "vendor") : NULL;
    if (v && !vm_strv_contains(vendors.v, v)) vm_strv_add(&vendors, v);
  }
  if (vendors.n > 1) {
    vendors_mixed = true;
    /* Named in a fixed order, whatever this machine's own vendor. */
    qsort(vendors.v, vendors.n, sizeof *vendors.v, cmp_str);
    CLEANUP_FREE char *list = vm_strv_join_quoted(vendors.v);
    vm_warn("the pool mixes CPU vendors (%s): the baseline names none, so a VM with it starts on every host, "
            "but a running VM still cannot move between vendors", list);
    for (size_t i = 0; i < cpus.n; i++) {
      CLEANUP_XMLDOC xmlDocPtr d = vm_xml_parse(cpus.v[i]);
      xmlNodePtr v = d ? vm_xml_find(xmlDocGetRootElement(d), "vendor") : NULL;
      if (!v) continue;
      xmlUnlinkNode(v);
      xmlFreeNode(v);
      free(cpus.v[i]);
      cpus.v[i] = node_xml(xmlDocGetRootElement(d));
    }
  }
  vm_strv_free(&vendors);
  CLEANUP_FREE char *res = NULL;
  if (rc == 0) {
    /* libvirt 9.0's baseline of vendor-less CPUs depends on which comes first (it
     * takes a vendor from the first model that has one): each one is tried first. */
    for (size_t r = 0; !res && r < (vendors_mixed ? cpus.n : 1); r++) {
      const char **order = calloc(cpus.n + 1, sizeof *order);
      for (size_t i = 0; i < cpus.n; i++) order[i] = cpus.v[(i + r) % cpus.n];
      res = virConnectBaselineHypervisorCPU(first, NULL, NULL, NULL, virttype, order, (unsigned)cpus.n, 0);
      free(order);
    }
    if (!res) rc = vm_fail_virt("no CPU definition fits every host");
  }
  if (rc == 0 && o_xml) {
    fputs(res, stdout);
  } else if (rc == 0) {
    CLEANUP_XMLDOC xmlDocPtr doc = vm_xml_parse(res);
    CLEANUP_XPATHCTX xmlXPathContextPtr x = vm_xpath_ctx(doc);
    CLEANUP_FREE char *model = vm_xpath_str(x, "/cpu/model"), *vendor = vm_xpath_str(x, "/cpu/vendor");
    CLEANUP_XPATHOBJ xmlXPathObjectPtr fs = vm_xpath_nodes(x, "/cpu/feature[@policy='require']");
    json_object *o = json_object_new_object(), *feats = json_object_new_array(), *hs = json_object_new_array();
    for (int i = 0; fs && fs->nodesetval && i < fs->nodesetval->nodeNr; i++) {
      CLEANUP_XMLFREE char *n = vm_xml_prop(fs->nodesetval->nodeTab[i], "name");
      json_object_array_add(feats, json_object_new_string(n ? n : ""));
    }
    for (size_t i = 0; i < names.n; i++) json_object_array_add(hs, json_object_new_string(names.v[i]));
    json_object_object_add(o, "model", json_object_new_string(model ? model : ""));
    json_object_object_add(o, "vendor", vendor ? json_object_new_string(vendor) : NULL);
    json_object_object_add(o, "features", feats);
    json_object_object_add(o, "hosts", hs);
    static const struct vm_column cols[] = { { NULL, NULL, 0 } };
    rc = vm_print_record(o, cols);
    json_object_put(o);
  }
  if (first) {
    vm_conn_forget(first);
    virConnectClose(first);
  }
  vm_strv_free(&cpus);
  vm_strv_free(&names);
  vm_hosts_free(&hosts);
  return rc;
}
