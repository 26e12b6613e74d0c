/* A domain job's statistics (a migration, a backup), read from libvirt's typed
 * parameters into a plain struct, for tools that watch a job and show its progress. */
#include <string.h>

#include "vmkit-virt.h"

static uint64_t ull(virTypedParameterPtr p, int n, const char *name)
{
  unsigned long long v = 0;
  return virTypedParamsGetULLong(p, n, name, &v) == 1 ? v : 0;
}

void vm_job_stats_parse(int type, virTypedParameterPtr p, int n, struct vm_jobstats *s)
{
  memset(s, 0, sizeof *s);
  s->type = type;
  virTypedParamsGetInt(p, n, VIR_DOMAIN_JOB_OPERATION, &s->operation);
  s->elapsed_ms = ull(p, n, VIR_DOMAIN_JOB_TIME_ELAPSED);
  s->data_total = ull(p, n, VIR_DOMAIN_JOB_DATA_TOTAL);
  s->data_processed = ull(p, n, VIR_DOMAIN_JOB_DATA_PROCESSED);
  s->data_remaining = ull(p, n, VIR_DOMAIN_JOB_DATA_REMAINING);
  s->mem_total = ull(p, n, VIR_DOMAIN_JOB_MEMORY_TOTAL);
  s->mem_processed = ull(p, n, VIR_DOMAIN_JOB_MEMORY_PROCESSED);
  s->mem_remaining = ull(p, n, VIR_DOMAIN_JOB_MEMORY_REMAINING);
  s->mem_bps = ull(p, n, VIR_DOMAIN_JOB_MEMORY_BPS);
  s->dirty_rate = ull(p, n, VIR_DOMAIN_JOB_MEMORY_DIRTY_RATE);
  s->page_size = ull(p, n, VIR_DOMAIN_JOB_MEMORY_PAGE_SIZE);
  s->iteration = ull(p, n, VIR_DOMAIN_JOB_MEMORY_ITERATION);
  s->postcopy_requests = ull(p, n, VIR_DOMAIN_JOB_MEMORY_POSTCOPY_REQS);
  s->disk_total = ull(p, n, VIR_DOMAIN_JOB_DISK_TOTAL);
  s->disk_processed = ull(p, n, VIR_DOMAIN_JOB_DISK_PROCESSED);
  s->disk_remaining = ull(p, n, VIR_DOMAIN_JOB_DISK_REMAINING);
  s->disk_bps = ull(p, n, VIR_DOMAIN_JOB_DISK_BPS);
  s->downtime_ms = ull(p, n, VIR_DOMAIN_JOB_DOWNTIME);
  s->has_downtime = virTypedParamsGet(p, n, VIR_DOMAIN_JOB_DOWNTIME) != NULL;
  s->setup_ms = ull(p, n, VIR_DOMAIN_JOB_SETUP_TIME);
  int throttle = 0;
  virTypedParamsGetInt(p, n, VIR_DOMAIN_JOB_AUTO_CONVERGE_THROTTLE, &throttle);
  s->throttle_pct = throttle;
  if (s->page_size == 0) s->page_size = 4096;
}

int vm_job_stats(virDomainPtr dom, bool completed, struct vm_jobstats *s)
{
  memset(s, 0, sizeof *s);
  int type = 0, n = 0;
  virTypedParameterPtr p = NULL;
  /* Completed statistics are kept for others to read too (libvirt drops them on
   * the first read otherwise). */
  if (virDomainGetJobStats(dom, &type, &p, &n,
                           completed ? VIR_DOMAIN_JOB_STATS_COMPLETED | VIR_DOMAIN_JOB_STATS_KEEP_COMPLETED : 0) < 0)
    return -1;
  vm_job_stats_parse(type, p, n, s);
  virTypedParamsFree(p, n);
  return 0;
}
