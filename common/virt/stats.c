/* Counters of a host and its VMs, sampled twice and turned into rates: vmrun
 * stats and vmbalance collect read them the same way. Thread-safe: nothing here
 * prints or keeps state, so that vmbalance can sample every host of a pool at
 * once; a failure returns an exit code and libvirt's message, on one line, for
 * the caller to report. */
#include <stdlib.h>
#include <string.h>

#include "vmkit-virt.h"

static unsigned long long param_ull(virTypedParameterPtr p, int n, const char *key)
{
  unsigned long long v = 0;
  virTypedParamsGetULLong(p, n, key, &v);
  return v;
}

/* Sums a per-device counter (block.0.rd.bytes, block.1.rd.bytes ...). */
static unsigned long long sum_param(virTypedParameterPtr p, int n, const char *prefix, const char *suffix)
{
  unsigned long long total = 0;
  unsigned count = 0;
  char key[64];
  snprintf(key, sizeof key, "%s.count", prefix);
  virTypedParamsGetUInt(p, n, key, &count);
  for (unsigned i = 0; i < count; i++) {
    snprintf(key, sizeof key, "%s.%u.%s", prefix, i, suffix);
    total += param_ull(p, n, key);
  }
  return total;
}

static int by_name(const void *a, const void *b)
{
  return strcmp(((const struct vm_dom_sample *)a)->name, ((const struct vm_dom_sample *)b)->name);
}

/* libvirt's error of this thread, on one line, after what failed; its exit code. */
static int last_error(const char *what, char **why)
{
  *why = vm_strdup_printf("%s: %s", what, vm_virt_message());
  int code = vm_virt_exit_code();
  virResetLastError();
  return code ? code : VM_EXIT_FAIL;
}

int vm_dom_samples(virConnectPtr conn, virDomainPtr *only, unsigned how, struct vm_dom_sample **out, size_t *nout,
                   char **why)
{
  unsigned stats = VIR_DOMAIN_STATS_STATE | VIR_DOMAIN_STATS_CPU_TOTAL | VIR_DOMAIN_STATS_BALLOON |
                   VIR_DOMAIN_STATS_VCPU | VIR_DOMAIN_STATS_INTERFACE | VIR_DOMAIN_STATS_BLOCK;
  unsigned flags = 0;
  if (how & VM_SAMPLE_DIRTY) stats |= VIR_DOMAIN_STATS_DIRTYRATE;
  /* A VM whose QEMU does not answer (a stuck monitor) must not hold up the rest. */
  if (how & VM_SAMPLE_NOWAIT) flags |= VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT;
  virDomainStatsRecordPtr *recs = NULL;
  int n = only ? virDomainListGetStats(only, stats, &recs, flags) : virConnectGetAllDomainStats(conn, stats, &recs, flags);
  if (n < 0) return last_error("cannot read VM statistics", why);
  struct vm_dom_sample *s = calloc((size_t)n + 1, sizeof *s);
  if (!s) abort();
  for (int i = 0; i < n; i++) {
    virDomainStatsRecordPtr r = recs[i];
    virTypedParameterPtr p = r->params;
    int np = r->nparams, st = 0, calc = 0;
    unsigned cur = 0;
    char uuid[VIR_UUID_STRING_BUFLEN] = "";
    long long dirty = -1;
    s[i].name = vm_strdup(virDomainGetName(r->dom));
    s[i].id = (int)virDomainGetID(r->dom);
    virDomainGetUUIDString(r->dom, uuid);
    memcpy(s[i].uuid, uuid, sizeof s[i].uuid);
    s[i].persistent = virDomainIsPersistent(r->dom) == 1;
    virTypedParamsGetInt(p, np, "state.state", &st);
    s[i].state = st;
    virTypedParamsGetUInt(p, np, "vcpu.current", &cur);
    s[i].vcpus = cur;
    s[i].cpu_ns = param_ull(p, np, "cpu.time");
    s[i].mem_kib = param_ull(p, np, "balloon.current");
    s[i].max_kib = param_ull(p, np, "balloon.maximum");
    s[i].rss_kib = param_ull(p, np, "balloon.rss");
    s[i].rd = sum_param(p, np, "block", "rd.bytes");
    s[i].wr = sum_param(p, np, "block", "wr.bytes");
    s[i].rx = sum_param(p, np, "net", "rx.bytes");
    s[i].tx = sum_param(p, np, "net", "tx.bytes");
    /* A dirty rate is known only once a calculation finished (status 2). */
    if (virTypedParamsGetInt(p, np, "dirtyrate.calc_status", &calc) == 1 && calc == 2)
      virTypedParamsGetLLong(p, np, "dirtyrate.megabytes_per_second", &dirty);
    s[i].dirty_mibs = dirty;
  }
  virDomainStatsRecordListFree(recs);
  qsort(s, (size_t)n, sizeof *s, by_name);
  *out = s;
  *nout = (size_t)n;
  return 0;
}

void vm_dom_samples_free(struct vm_dom_sample *s, size_t n)
{
  for (size_t i = 0; s && i < n; i++) free(s[i].name);
  free(s);
}

const struct vm_dom_sample *vm_dom_sample_find(const struct vm_dom_sample *s, size_t n, const char *name)
{
  struct vm_dom_sample key = { .name = (char *)name };
  return s ? bsearch(&key, s, n, sizeof *s, by_name) : NULL;
}

int vm_node_sample(virConnectPtr conn, struct vm_node_sample *s, char **why)
{
  virNodeInfo info;
  memset(s, 0, sizeof *s);
  if (virNodeGetInfo(conn, &info) < 0) return last_error("cannot read the host's CPUs and memory", why);
  s->cpus = info.cpus;
  s->mem_total_kib = info.memory;
  int n = 0;
  if (virNodeGetCPUStats(conn, VIR_NODE_CPU_STATS_ALL_CPUS, NULL, &n, 0) < 0 || n <= 0)
    return last_error("cannot read the host's CPU counters", why);
  virNodeCPUStatsPtr cs = calloc((size_t)n, sizeof *cs);
  if (!cs) abort();
  if (virNodeGetCPUStats(conn, VIR_NODE_CPU_STATS_ALL_CPUS, cs, &n, 0) < 0) {
    free(cs);
    return last_error("cannot read the host's CPU counters", why);
  }
  for (int i = 0; i < n; i++) {
    if (strcmp(cs[i].field, VIR_NODE_CPU_STATS_IDLE) == 0) s->cpu_idle_ns += cs[i].value;
    else if (strcmp(cs[i].field, VIR_NODE_CPU_STATS_IOWAIT) == 0) s->cpu_idle_ns += cs[i].value;
    else if (strcmp(cs[i].field, VIR_NODE_CPU_STATS_KERNEL) == 0 || strcmp(cs[i].field, VIR_NODE_CPU_STATS_USER) == 0)
      s->cpu_busy_ns += cs[i].value;
  }
  free(cs);
  n = 0;
  if (virNodeGetMemoryStats(conn, VIR_NODE_MEMORY_STATS_ALL_CELLS, NULL, &n, 0) < 0 || n <= 0)
    return last_error("cannot read the host's memory counters", why);
  virNodeMemoryStatsPtr ms = calloc((size_t)n, sizeof *ms);
  if (!ms) abort();
  if (virNodeGetMemoryStats(conn, VIR_NODE_MEMORY_STATS_ALL_CELLS, ms, &n, 0) < 0) {
    free(ms);
    return last_error("cannot read the host's memory counters", why);
  }
  unsigned long long total = 0, avail = 0;
  for (int i = 0; i < n; i++) {
    if (strcmp(ms[i].field, VIR_NODE_MEMORY_STATS_TOTAL) == 0) total = ms[i].value;
    else if (strcmp(ms[i].field, VIR_NODE_MEMORY_STATS_FREE) == 0 ||
             strcmp(ms[i].field, VIR_NODE_MEMORY_STATS_BUFFERS) == 0 ||
             strcmp(ms[i].field, VIR_NODE_MEMORY_STATS_CACHED) == 0)
      avail += ms[i].value;
  }
  free(ms);
  if (total) s->mem_total_kib = total;
  s->mem_used_kib = s->mem_total_kib > avail ? s->mem_total_kib - avail : 0;
  return 0;
}

double vm_rate(unsigned long long a, unsigned long long b, double secs)
{
  return b > a && secs > 0 ? (double)(b - a) / secs : 0.0;
}
