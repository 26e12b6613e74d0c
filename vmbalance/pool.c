/* Samples every host of the pool at once: a thread and a connection per host, so
 * that a host that hangs costs its own timeout, not the others'. The threads
 * print nothing (libvirt's errors are per thread and kept with the host); a
 * thread that is still waiting at the deadline is left behind, detached, and
 * its host is reported as not answering. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "pool.h"
#include "strmap.h"
#include "vmkit-virt.h"

/* The lock, the condition and the count of the threads of one collection. */
struct shared {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int left;
};

/* What a thread shares with the caller; freed by whichever lets go last. */
struct job {
  struct shared *sh;
  int refs; /* 2: the thread and the caller */
  char *uri;
  int interval_ms;
  bool dirty, locks;
  int keepalive_s;
  bool done;
  /* results */
  char *error;
  bool no_answer; /* could not connect (an error of a host that answered is not that) */
  char *host_uuid; /* the host's, for the keys of its VMs' locks */
  struct vm_node_sample n0, n1;
  struct vm_dom_sample *d0, *d1;
  size_t nd0, nd1;
  double secs;
};

static void job_free(struct job *j)
{
  free(j->uri);
  free(j->host_uuid);
  free(j->error);
  vm_dom_samples_free(j->d0, j->nd0);
  vm_dom_samples_free(j->d1, j->nd1);
  free(j);
}

/* The URIs whose threads still wait (a host that hangs): a later collection in
 * this process starts at most INFLIGHT_MAX threads on one host, so that a watcher
 * probing every few seconds neither piles threads up on a hung host nor gives up
 * on it for good when one connection stays stuck (a host powered off mid-call). */
#define INFLIGHT_MAX 3
static pthread_mutex_t inflight_mu = PTHREAD_MUTEX_INITIALIZER;
static struct vm_strv inflight; /* one entry per waiting thread */

static bool inflight_add(const char *uri)
{
  pthread_mutex_lock(&inflight_mu);
  int n = 0;
  for (size_t i = 0; i < inflight.n; i++) n += strcmp(inflight.v[i], uri) == 0;
  bool busy = n >= INFLIGHT_MAX;
  if (!busy) vm_strv_add(&inflight, uri);
  pthread_mutex_unlock(&inflight_mu);
  return !busy;
}

static void inflight_remove(const char *uri)
{
  pthread_mutex_lock(&inflight_mu);
  vm_strv_remove_one(&inflight, uri);
  pthread_mutex_unlock(&inflight_mu);
}

/* The caller lets go of a job (the lock held). */
/* A mutex and a condition timed on the monotonic clock, for waits with a deadline. */
static void sync_init(pthread_mutex_t *mu, pthread_cond_t *cv)
{
  pthread_mutex_init(mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(cv, &ca);
  pthread_condattr_destroy(&ca);
}

/* The deadline ms from now. */
static struct timespec deadline_in(int64_t ms)
{
  struct timespec end;
  clock_gettime(CLOCK_MONOTONIC, &end);
  end.tv_sec += (time_t)(ms / 1000);
  end.tv_nsec += (long)(ms % 1000) * 1000000L;
  if (end.tv_nsec >= 1000000000L) end.tv_sec++, end.tv_nsec -= 1000000000L;
  return end;
}

/* One wait on cv (mu held) of at most a second, so that Ctrl-C and SIGTERM are
 * seen within one; false once the deadline has passed. */
static bool wait_slice(pthread_cond_t *cv, pthread_mutex_t *mu, const struct timespec *end)
{
  struct timespec now, until;
  clock_gettime(CLOCK_MONOTONIC, &now);
  if (now.tv_sec > end->tv_sec || (now.tv_sec == end->tv_sec && now.tv_nsec >= end->tv_nsec)) return false;
  until = now;
  until.tv_sec++;
  if (until.tv_sec > end->tv_sec || (until.tv_sec == end->tv_sec && until.tv_nsec > end->tv_nsec)) until = *end;
  pthread_cond_timedwait(cv, mu, &until);
  return true;
}

/* ---- One connection with a deadline --------------------------------------------------- */
struct opener {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  char *uri, *error;
  virConnectPtr conn;
  bool done;
  int refs; /* the thread's and the caller's: the last one frees */
};

static void opener_drop(struct opener *o)
{
  pthread_mutex_lock(&o->mu);
  bool last = --o->refs == 0;
  pthread_mutex_unlock(&o->mu);
  if (!last) return;
  if (o->conn) virConnectClose(o->conn);
  free(o->uri);
  free(o->error);
  pthread_mutex_destroy(&o->mu);
  pthread_cond_destroy(&o->cv);
  free(o);
}

static void *open_thread(void *arg)
{
  struct opener *o = arg;
  virConnectPtr conn = virConnectOpen(o->uri);
  char *err = conn ? NULL : vm_strdup_printf("cannot connect: %s", vm_virt_message());
  virResetLastError();
  inflight_remove(o->uri);
  pthread_mutex_lock(&o->mu);
  o->conn = conn;
  o->error = err;
  o->done = true;
  pthread_cond_broadcast(&o->cv);
  pthread_mutex_unlock(&o->mu);
  opener_drop(o);
  return NULL;
}

/* Seconds between keepalive probes: libvirt closes a connection after four
 * unanswered (the first, and three more), so about the timeout, at least 4 s. */
static int keepalive_every(int timeout_s) { return timeout_s / 4 > 0 ? timeout_s / 4 : 1; }

virConnectPtr pool_open(const char *uri, int timeout_s, char **why)
{
  *why = NULL;
  if (!inflight_add(uri)) return *why = vm_strdup("no answer (an earlier call still waits)"), NULL;
  struct opener *o = calloc(1, sizeof *o);
  if (!o) abort();
  sync_init(&o->mu, &o->cv);
  o->uri = vm_strdup(uri);
  o->refs = 2;
  pthread_t t;
  pthread_attr_t at;
  pthread_attr_init(&at);
  pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
  int err = pthread_create(&t, &at, open_thread, o);
  pthread_attr_destroy(&at);
  if (err != 0) {
    inflight_remove(uri);
    o->refs = 1;
    opener_drop(o);
    return *why = vm_strdup("cannot start a thread"), NULL;
  }
  struct timespec end = deadline_in((int64_t)timeout_s * 1000);
  pthread_mutex_lock(&o->mu);
  while (!o->done && !vm_interrupted() && wait_slice(&o->cv, &o->mu, &end)) {
  }
  virConnectPtr conn = NULL;
  if (o->done) {
    conn = o->conn, o->conn = NULL;
    if (!conn) *why = o->error, o->error = NULL;
  } else {
    *why = vm_interrupted() ? vm_strdup("interrupted") : vm_strdup_printf("no answer within %d s", timeout_s);
  }
  pthread_mutex_unlock(&o->mu);
  opener_drop(o);
  /* What follows on it fails, rather than waits, once the host stops answering:
   * libvirt's keepalive closes the connection after about timeout_s. */
  if (conn && virConnectSetKeepAlive(conn, keepalive_every(timeout_s), 3) != 0) {
    vm_debug("no keepalive on the connection to %s: %s", uri, virGetLastErrorMessage());
    virResetLastError();
  }
  return conn;
}

static bool job_drop(struct job *j) { return --j->refs == 0; }

/* The running VMs of conn, for the dirty-rate calculations. */
static void start_dirty_rates(virConnectPtr conn, int secs)
{
  virDomainPtr *doms = NULL;
  int n = virConnectListAllDomains(conn, &doms, VIR_CONNECT_LIST_DOMAINS_RUNNING);
  if (n < 0) {
    virResetLastError();
    return;
  }
  for (int i = 0; i < n; i++) {
    if (virDomainStartDirtyRateCalc(doms[i], secs, 0) < 0) virResetLastError(); /* unknown: counted 0 */
    virDomainFree(doms[i]);
  }
  free(doms);
}

static void *sample_host(void *arg)
{
  struct job *j = arg;
  virConnectPtr conn = virConnectOpen(j->uri);
  unsigned how = VM_SAMPLE_NOWAIT | (j->dirty ? VM_SAMPLE_DIRTY : 0);
  if (!conn) {
    j->error = vm_strdup_printf("cannot connect: %s", vm_virt_message());
    j->no_answer = true;
    virResetLastError();
  } else {
    /* With libvirt's event loop running (ha), a host that stops answering midway
     * closes the connection instead of holding this thread for good. */
    if (virConnectSetKeepAlive(conn, j->keepalive_s, 3) < 0) virResetLastError();
    /* QEMU measures a dirty rate over at most 60 s; started first, the
     * calculations end with the interval, before the second sample. */
    int secs = j->interval_ms / 1000 > 60 ? 60 : j->interval_ms / 1000;
    if (j->dirty && secs >= 1) start_dirty_rates(conn, secs);
    int64_t t0 = vm_now_ms();
    if (vm_node_sample(conn, &j->n0, &j->error) == 0 && vm_dom_samples(conn, NULL, how, &j->d0, &j->nd0, &j->error) == 0) {
      struct timespec ts = { j->interval_ms / 1000, (long)(j->interval_ms % 1000) * 1000000L };
      while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
      }
      /* A dirty-rate calculation ends a little after its time. */
      if (j->dirty && secs >= 1) {
        struct timespec w = { 0, 300000000L };
        nanosleep(&w, NULL);
      }
      int64_t t1 = vm_now_ms();
      if (vm_node_sample(conn, &j->n1, &j->error) == 0) vm_dom_samples(conn, NULL, how, &j->d1, &j->nd1, &j->error);
      j->secs = (double)(t1 - t0) / 1000.0;
      char *caps = j->error || !j->locks ? NULL : virConnectGetCapabilities(conn);
      CLEANUP_XMLDOC xmlDocPtr doc = caps ? vm_xml_parse(caps) : NULL;
      CLEANUP_XPATHCTX xmlXPathContextPtr x = doc ? vm_xpath_ctx(doc) : NULL;
      if (x) j->host_uuid = vm_xpath_str(x, "/capabilities/host/uuid");
      free(caps);
      virResetLastError();
    }
    virConnectClose(conn);
  }
  inflight_remove(j->uri);
  /* The last touch of the shared state: the caller frees it once no thread is
   * left, and leaks it when one is still hung. */
  struct shared *sh = j->sh;
  pthread_mutex_lock(&sh->mu);
  j->done = true;
  sh->left--;
  bool last = job_drop(j);
  pthread_cond_broadcast(&sh->cv);
  pthread_mutex_unlock(&sh->mu);
  if (last) job_free(j);
  return NULL;
}

static int vm_by_name(const void *a, const void *b)
{
  return strcmp(((const struct pool_vm *)a)->name, ((const struct pool_vm *)b)->name);
}

/* The rates of one host from its two samples. */
static void fill_host(struct pool_host *ph, const struct job *j)
{
  double secs = j->secs > 0 ? j->secs : 1;
  unsigned long long busy = j->n1.cpu_busy_ns - j->n0.cpu_busy_ns, idle = j->n1.cpu_idle_ns - j->n0.cpu_idle_ns;
  if (j->n1.cpu_busy_ns < j->n0.cpu_busy_ns || j->n1.cpu_idle_ns < j->n0.cpu_idle_ns) busy = idle = 0;
  ph->cpu = busy + idle ? 100.0 * (double)busy / (double)(busy + idle) : 0;
  ph->real_cpus = j->n1.cpus;
  if (!ph->cpus) ph->cpus = j->n1.cpus;
  if (ph->mem_total <= 0) ph->mem_total = (double)j->n1.mem_total_kib * 1024;
  ph->mem_used = (double)j->n1.mem_used_kib * 1024;
  ph->vms = calloc(j->nd1 + 1, sizeof *ph->vms);
  if (!ph->vms) abort();
  for (size_t i = 0; i < j->nd1; i++) {
    const struct vm_dom_sample *b = &j->d1[i], *a = vm_dom_sample_find(j->d0, j->nd0, b->name);
    if (b->state != VIR_DOMAIN_RUNNING && b->state != VIR_DOMAIN_PAUSED) continue;
    struct pool_vm *v = &ph->vms[ph->nvms++];
    v->name = vm_strdup(b->name);
    memcpy(v->uuid, b->uuid, sizeof v->uuid);
    v->state = b->state;
    v->vcpus = b->vcpus;
    v->mem = (double)b->mem_kib * 1024;
    v->rss = (double)b->rss_kib * 1024;
    v->dirty_mibs = (double)b->dirty_mibs;
    /* Another run of this machine works on it (a move that rolls back after its
     * vmbalance run was killed, a snapshot): it stays where it is. */
    v->busy = j->host_uuid && vm_lock_domain_holder(j->host_uuid, v->uuid) > 0;
    /* A VM that started between the samples (or restarted: its counters went
     * back) has no rates yet. */
    if (a && a->id == b->id && strcmp(a->uuid, b->uuid) == 0) {
      v->cpu = b->cpu_ns > a->cpu_ns ? (double)(b->cpu_ns - a->cpu_ns) / (secs * 1e7) : 0;
      v->rd = vm_rate(a->rd, b->rd, secs);
      v->wr = vm_rate(a->wr, b->wr, secs);
      v->rx = vm_rate(a->rx, b->rx, secs);
      v->tx = vm_rate(a->tx, b->tx, secs);
    }
    ph->rd += v->rd, ph->wr += v->wr, ph->rx += v->rx, ph->tx += v->tx;
  }
  qsort(ph->vms, ph->nvms, sizeof *ph->vms, vm_by_name);
}

/* The capacity tags of a host (man/vmbalance.1). */
static int read_tags(const char *path, struct pool_host *ph)
{
  const struct vm_host *h = ph->h;
  const char *t;
  uint64_t v;
  if ((t = vm_host_tag(h, "cpus"))) {
    if (vm_parse_uint(t, 1, 65536, &v) < 0)
      return vm_fail(VM_EXIT_USAGE, "%s: host '%s': invalid cpus= tag '%s': expected 1 to 65536", path, h->name, t);
    ph->cpus = (unsigned)v;
  }
  if ((t = vm_host_tag(h, "memory"))) {
    if (vm_parse_size(t, 'M', &v) < 0 || v == 0)
      return vm_fail(VM_EXIT_USAGE, "%s: host '%s': invalid memory= tag '%s'", path, h->name, t);
    ph->mem_total = (double)v;
  }
  static const char *const rates[] = { "disk-io", "net-io" };
  for (int k = 0; k < 2; k++) {
    if (!(t = vm_host_tag(h, rates[k]))) continue;
    if (vm_parse_size(t, 'M', &v) < 0 || v == 0)
      return vm_fail(VM_EXIT_USAGE, "%s: host '%s': invalid %s= tag '%s': expected bytes per second, such as 200M",
                     path, h->name, rates[k], t);
    *(k ? &ph->net_cap : &ph->disk_cap) = (double)v;
  }
  ph->own_load = true;
  if ((t = vm_host_tag(h, "own-load"))) {
    if (strcmp(t, "none") == 0) ph->own_load = false;
    else if (strcmp(t, "counted") != 0)
      return vm_fail(VM_EXIT_USAGE, "%s: host '%s': invalid own-load= tag '%s': use counted or none", path, h->name, t);
  }
  return 0;
}

int pool_collect(struct pool *p, const char *const *names, int interval_ms, int timeout_s, unsigned flags)
{
  memset(p, 0, sizeof *p);
  int rc = vm_hosts_load(NULL, &p->hosts);
  if (rc) return rc;
  if (p->hosts.n == 0) return vm_fail(VM_EXIT_USAGE, "%s: the hosts file names no host", vm_hosts_path());
  for (size_t i = 0; names && names[i]; i++)
    if (!vm_hosts_find(&p->hosts, names[i]))
      return vm_fail(VM_EXIT_NOTFOUND, "no host '%s' in %s", names[i], vm_hosts_path());
  p->v = calloc(p->hosts.n, sizeof *p->v);
  if (!p->v) abort();
  for (size_t i = 0; i < p->hosts.n; i++) {
    const struct vm_host *h = &p->hosts.v[i];
    bool wanted = !names;
    for (size_t k = 0; names && names[k]; k++) wanted |= strcmp(names[k], h->name) == 0;
    if (!wanted) continue;
    p->v[p->n].h = h;
    if ((rc = read_tags(vm_hosts_path(), &p->v[p->n]))) return rc;
    p->n++;
  }
  vm_virt_init();
  struct shared *sh = calloc(1, sizeof *sh);
  if (!sh) abort();
  sync_init(&sh->mu, &sh->cv);
  struct job **jobs = calloc(p->n, sizeof *jobs);
  if (!jobs) abort();
  for (size_t i = 0; i < p->n; i++) {
    struct job *j = calloc(1, sizeof *j);
    if (!j) abort();
    *j = (struct job){ .sh = sh, .refs = 2, .uri = vm_strdup(p->v[i].h->uri), .interval_ms = interval_ms,
                       .dirty = flags & POOL_DIRTY, .locks = flags & POOL_LOCKS,
                       .keepalive_s = keepalive_every(timeout_s) };
    jobs[i] = j;
    pthread_t t;
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    if (!inflight_add(j->uri)) {
      /* Its probe of an earlier collection still waits. */
      j->error = vm_strdup("no answer (an earlier probe still waits)");
      j->no_answer = true;
      j->done = true;
      j->refs = 1;
      pthread_attr_destroy(&at);
      continue;
    }
    pthread_mutex_lock(&sh->mu);
    sh->left++;
    pthread_mutex_unlock(&sh->mu);
    if (pthread_create(&t, &at, sample_host, j) != 0) {
      inflight_remove(j->uri);
      j->error = vm_strdup("cannot start a thread");
      j->done = true;
      j->refs = 1;
      pthread_mutex_lock(&sh->mu);
      sh->left--;
      pthread_mutex_unlock(&sh->mu);
    }
    pthread_attr_destroy(&at);
  }
  struct timespec end = deadline_in(interval_ms + (int64_t)timeout_s * 1000);
  pthread_mutex_lock(&sh->mu);
  while (sh->left > 0 && !vm_interrupted() && wait_slice(&sh->cv, &sh->mu, &end)) {
  }
  bool hung = sh->left > 0;
  for (size_t i = 0; i < p->n; i++) {
    struct job *j = jobs[i];
    struct pool_host *ph = &p->v[i];
    if (!j->done) ph->error = vm_strdup_printf("no answer within %d s", timeout_s), ph->no_answer = true;
    else if (j->error) ph->error = vm_strdup(j->error), ph->no_answer = j->no_answer;
    else fill_host(ph, j);
    /* A thread still running keeps its job and frees it when it ends. */
    job_drop(j);
    if (!j->done) jobs[i] = NULL;
  }
  pthread_mutex_unlock(&sh->mu);
  for (size_t i = 0; i < p->n; i++)
    if (jobs[i]) job_free(jobs[i]);
  free(jobs);
  /* A hung thread will still take the lock when it ends: the shared state stays. */
  if (!hung) {
    pthread_mutex_destroy(&sh->mu);
    pthread_cond_destroy(&sh->cv);
    free(sh);
  }
  return vm_interrupted() ? -1 : 0;
}

void pool_free(struct pool *p)
{
  for (size_t i = 0; p->v && i < p->n; i++) {
    free(p->v[i].error);
    for (size_t k = 0; k < p->v[i].nvms; k++) free(p->v[i].vms[k].name);
    free(p->v[i].vms);
  }
  free(p->v);
  vm_hosts_free(&p->hosts);
  memset(p, 0, sizeof *p);
}

size_t pool_up(const struct pool *p)
{
  size_t n = 0;
  for (size_t i = 0; i < p->n; i++) n += !p->v[i].error;
  return n;
}

bool pool_fenced(const char *host)
{
  const char *base = getenv("VMKIT_STATE_DIR");
  CLEANUP_FREE char *mark = vm_strdup_printf("%s/ha/fenced/%s", base && *base ? base : "/var/lib/vmkit", host);
  return access(mark, F_OK) == 0;
}

int pool_to_bal(const struct pool *p, struct bal_pool *bp, void *arrays[2])
{
  size_t nh = 0, nv = 0;
  for (size_t i = 0; i < p->n; i++)
    if (!p->v[i].error) nh++, nv += p->v[i].nvms;
  /* One allocation: hosts, then VMs. */
  struct bal_host *hosts = calloc(nh + 1, sizeof *hosts);
  struct bal_vm *vms = calloc(nv + 1, sizeof *vms);
  if (!hosts || !vms) abort();
  struct bal_map seen = { 0 }, twice = { 0 };
  for (size_t i = 0; i < p->n; i++)
    for (size_t k = 0; !p->v[i].error && k < p->v[i].nvms; k++)
      if (bal_map_put(&seen, p->v[i].vms[k].name, (int)i) >= 0) bal_map_put(&twice, p->v[i].vms[k].name, 1);
  size_t h = 0, v = 0;
  for (size_t i = 0; i < p->n; i++) {
    const struct pool_host *ph = &p->v[i];
    if (ph->error) continue;
    struct bal_host *bh = &hosts[h];
    bh->name = ph->h->name;
    bh->maintenance = pool_fenced(ph->h->name);
    bh->cap[BAL_CPU] = ph->cpus * 100.0;
    bh->cap[BAL_MEM] = ph->mem_total / 1048576.0;
    bh->cap[BAL_DISK] = ph->disk_cap;
    bh->cap[BAL_NET] = ph->net_cap;
    double cpu = 0, rss = 0;
    for (size_t k = 0; k < ph->nvms; k++) {
      const struct pool_vm *pv = &ph->vms[k];
      cpu += pv->cpu, rss += pv->rss;
      if (bal_map_get(&twice, pv->name) >= 0) {
        if (bal_map_get(&seen, pv->name) == (int)i)
          vm_warn("VM '%s' runs on more than one host ('%s' and others): left out of the plan", pv->name, ph->h->name);
        continue;
      }
      /* A plan's words (vmkit-plan(5)) hold no space, quote, backslash or '#'. */
      if (strpbrk(pv->name, " \t#'\"\\") || strlen(pv->name) > 1024) {
        vm_warn("VM '%s' on '%s': its name cannot be written in a plan: left out of it", pv->name, ph->h->name);
        continue;
      }
      struct bal_vm *bv = &vms[v++];
      bv->name = pv->name;
      bv->demand[BAL_CPU] = pv->cpu;
      bv->demand[BAL_MEM] = pv->mem / 1048576.0;
      bv->demand[BAL_DISK] = pv->rd + pv->wr;
      bv->demand[BAL_NET] = pv->rx + pv->tx;
      bv->mem_mib = pv->mem / 1048576.0;
      bv->dirty_mibs = pv->dirty_mibs > 0 ? pv->dirty_mibs : 0;
      bv->priority = -1;
      bv->host = (int)h;
      bv->busy = pv->busy;
    }
    /* The host's own load: what it uses beyond its VMs (never below 0). */
    if (ph->own_load) {
      double busy = ph->cpu * ph->real_cpus; /* percent of one core: of the CPUs measured */
      bh->base[BAL_CPU] = busy > cpu ? busy - cpu : 0;
      bh->base[BAL_MEM] = ph->mem_used > rss ? (ph->mem_used - rss) / 1048576.0 : 0;
    }
    h++;
  }
  bal_map_free(&seen);
  bal_map_free(&twice);
  *bp = (struct bal_pool){ .hosts = hosts, .nhosts = nh, .vms = vms, .nvms = v };
  arrays[0] = hosts;
  arrays[1] = vms;
  return 0;
}
