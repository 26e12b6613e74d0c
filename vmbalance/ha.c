/* vmbalance ha: watches the pool, and when a host stops answering past a grace
 * time, fences it with its fence agent (fence-agents' convention) and, only once
 * the fence says the host is off, restarts its HA VMs on the surviving hosts from
 * the definitions kept while it was alive, by priority, within capacity and rules
 * (the planner's mandatory moves off a host in maintenance).
 *
 * State, under ${VMKIT_STATE_DIR:-/var/lib/vmkit}/ha, so that a watcher that is
 * restarted (or runs --once from cron) goes on where the last one stopped:
 *   defs/HOST/VM.xml   the definition of an HA VM that ran on HOST
 *   defs/HOST/VM.load  its CPU load then (percent of one CPU)
 *   down/HOST          "SINCE LAST-FENCE-ATTEMPT" (epoch seconds): HOST does not answer
 *   fenced/HOST        the VMs restarted elsewhere, a line each: HOST was fenced and
 *                      is not used again until it answers and has been cleared
 *   fences.log         "EPOCH HOST ok|failed EXIT" a fence a line (the cap's window)
 * Every file is written whole (temporary file, fsync, rename). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "pool.h"
#include "strmap.h"
#include "vmbalance.h"
#include "vmkit-virt.h"

static char *o_config;
static int o_interval = 5, o_grace = 30, o_timeout = 10, o_max_fences = 2, o_window = 3600, o_fence_timeout = 120,
           o_once;

static char *state_dir;

/* STATE/kind[/host[/vm.ext]] */
static char *st_path(const char *kind, const char *host, const char *vm, const char *ext)
{
  if (vm) return vm_strdup_printf("%s/%s/%s/%s.%s", state_dir, kind, host, vm, ext);
  if (host) return vm_strdup_printf("%s/%s/%s", state_dir, kind, host);
  return vm_strdup_printf("%s/%s", state_dir, kind);
}

static int mkdirs(const char *path)
{
  CLEANUP_FREE char *p = vm_strdup(path);
  for (char *s = p + 1; *s; s++) {
    if (*s != '/') continue;
    *s = '\0';
    if (mkdir(p, 0700) < 0 && errno != EEXIST) return -1;
    *s = '/';
  }
  return mkdir(p, 0700) < 0 && errno != EEXIST ? -1 : 0;
}

static int write_text(const char *path, const char *text)
{
  CLEANUP_FREE char *dir = vm_strdup(path);
  char *slash = strrchr(dir, '/');
  if (slash) *slash = '\0';
  if (mkdirs(dir) < 0 || vm_write_file_atomic(path, text, strlen(text), 0600) < 0) {
    vm_warn("cannot write '%s': %s", path, strerror(errno));
    return -1;
  }
  return 0;
}

static void remove_file(const char *path)
{
  if (unlink(path) == 0) {
    CLEANUP_FREE char *dir = vm_strdup(path);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = '\0', vm_fsync_dir(dir);
  }
}

/* The names in a folder (files ending in suffix, which is cut off). */
static void list_dir(const char *dir, const char *suffix, struct vm_strv *out)
{
  DIR *d = opendir(dir);
  if (!d) return;
  struct dirent *e;
  size_t sl = strlen(suffix);
  while ((e = readdir(d))) {
    size_t n = strlen(e->d_name);
    if (e->d_name[0] == '.' || n <= sl || strcmp(e->d_name + n - sl, suffix) != 0) continue;
    vm_strv_addf(out, "%.*s", (int)(n - sl), e->d_name);
  }
  closedir(d);
}

/* ---- The config's HA marks and fence agents ------------------------------------------- */
static bool is_ha(const struct bal_config *c, const char *vm)
{
  for (size_t i = 0; i < c->n; i++)
    if (c->v[i].kind == BAL_HA)
      for (size_t k = 0; k < c->v[i].n; k++)
        if (strcmp(c->v[i].w[k], vm) == 0) return true;
  return false;
}

static const struct bal_stmt *fence_of(const struct bal_config *c, const char *host)
{
  for (size_t i = 0; i < c->n; i++)
    if (c->v[i].kind == BAL_FENCE && strcmp(c->v[i].w[0], host) == 0) return &c->v[i];
  return NULL;
}

/* ---- Fencing ------------------------------------------------------------------------------
 * fence-agents' convention: the options as KEY=VALUE lines on the agent's standard
 * input, then action=off; exit 0 means the host is off. */
/* A fence agent's file: an absolute path, or a fence_ name in PATH or in
 * /usr/sbin and /sbin, where Debian's fence-agents puts them (cron's PATH has
 * neither). NULL when there is none. */
static char *agent_path(const char *name)
{
  if (name[0] == '/') return access(name, X_OK) == 0 ? vm_strdup(name) : NULL;
  if (strchr(name, '/')) return NULL; /* a relative path: not an agent's name */
  const char *env = getenv("PATH");
  CLEANUP_FREE char *dirs = vm_strdup_printf("%s:/usr/sbin:/sbin:/usr/local/sbin", env && *env ? env : "/usr/bin:/bin");
  char *save = NULL;
  for (char *d = strtok_r(dirs, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
    if (!*d) continue;
    char *p = vm_strdup_printf("%s/%s", d, name);
    if (access(p, X_OK) == 0) return p;
    free(p);
  }
  return NULL;
}

static int run_fence(const struct bal_stmt *f, char **why)
{
  CLEANUP_FREE char *agent = agent_path(f->w[1]);
  if (!agent) return *why = vm_strdup_printf("fence agent '%s' not found", f->w[1]), -1;
  struct vm_strv in = { 0 };
  for (size_t k = 2; k < f->n; k++) vm_strv_add(&in, f->w[k]);
  vm_strv_add(&in, "action=off");
  CLEANUP_FREE char *text = vm_strv_lines(&in, NULL);
  /* The options hold the agent's password: wiped once used. */
  for (size_t k = 0; k < in.n; k++) explicit_bzero(in.v[k], strlen(in.v[k]));
  vm_strv_free(&in);
  int pin[2], perr[2];
  if (pipe2(pin, O_CLOEXEC) < 0) return *why = vm_strdup_printf("pipe: %s", strerror(errno)), -1;
  if (pipe2(perr, O_CLOEXEC) < 0) {
    close(pin[0]), close(pin[1]);
    return *why = vm_strdup_printf("pipe: %s", strerror(errno)), -1;
  }
  pid_t pid = fork();
  if (pid < 0) {
    close(pin[0]), close(pin[1]), close(perr[0]), close(perr[1]);
    return *why = vm_strdup_printf("fork: %s", strerror(errno)), -1;
  }
  if (pid == 0) {
    int nul = open("/dev/null", O_WRONLY);
    if (dup2(pin[0], 0) < 0 || dup2(perr[1], 2) < 0 || nul < 0 || dup2(nul, 1) < 0) _exit(127);
    setsid();
    for (int s = 1; s < NSIG; s++) signal(s, SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    /* Found by agent_path, as at startup (a fence-agents update may move it). */
    execv(agent, (char *[]){ agent, NULL });
    _exit(127);
  }
  close(pin[0]);
  close(perr[1]);
  /* Its options: small, written whole (an agent that does not read them gets EPIPE). */
  size_t len = strlen(text), off = 0;
  while (off < len) {
    ssize_t w = write(pin[1], text + off, len - off);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) break;
    off += (size_t)w;
  }
  explicit_bzero(text, len);
  close(pin[1]);
  char errbuf[4096];
  size_t elen = 0;
  int64_t end = vm_now_ms() + (int64_t)o_fence_timeout * 1000;
  int st = 0;
  bool done = false, timed_out = false;
  while (!done) {
    pid_t r = waitpid(pid, &st, WNOHANG);
    if (r == pid) break;
    if (vm_now_ms() > end || vm_interrupted()) {
      timed_out = !vm_interrupted();
      kill(-pid, SIGKILL);
      kill(pid, SIGKILL);
      waitpid(pid, &st, 0);
      done = true;
      break;
    }
    struct pollfd pf = { perr[0], POLLIN, 0 };
    if (poll(&pf, 1, 100) > 0) {
      ssize_t n = read(perr[0], errbuf + elen, sizeof errbuf - 1 - elen);
      if (n > 0) elen += (size_t)n;
      if (elen >= sizeof errbuf - 1) elen = 0; /* only the end matters */
    }
  }
  ssize_t n;
  while (elen < sizeof errbuf - 1 && (n = read(perr[0], errbuf + elen, sizeof errbuf - 1 - elen)) > 0) elen += (size_t)n;
  close(perr[0]);
  errbuf[elen] = '\0';
  while (elen && (errbuf[elen - 1] == '\n' || errbuf[elen - 1] == '\r')) errbuf[--elen] = '\0';
  char *last = strrchr(errbuf, '\n');
  last = last ? last + 1 : errbuf;
  if (timed_out) return *why = vm_strdup_printf("no answer within %d s", o_fence_timeout), -1;
  if (vm_interrupted()) return *why = vm_strdup("interrupted"), -1;
  if (WIFEXITED(st) && WEXITSTATUS(st) == 0) return 0;
  if (WIFEXITED(st) && WEXITSTATUS(st) == 127 && !*last) return *why = vm_strdup("cannot run it"), -1;
  *why = WIFEXITED(st) ? vm_strdup_printf("exit %d%s%s", WEXITSTATUS(st), *last ? ": " : "", last)
                       : vm_strdup_printf("killed by signal %d", WTERMSIG(st));
  return -1;
}

/* Fences that succeeded within the window, from fences.log; a log that cannot
 * be read counts as the cap reached (fencing is what must not run away). */
static int fences_in_window(time_t now)
{
  CLEANUP_FREE char *path = st_path("fences.log", NULL, NULL, NULL);
  CLEANUP_FREE char *text = vm_read_file(path, 1 << 20, NULL);
  if (!text && errno != ENOENT) {
    vm_warn("cannot read '%s': %s: counted as --max-fences reached", path, strerror(errno));
    return o_max_fences;
  }
  int n = 0;
  char *save = NULL;
  for (char *l = text ? strtok_r(text, "\n", &save) : NULL; l; l = strtok_r(NULL, "\n", &save)) {
    long long t;
    char host[256], res[16];
    if (sscanf(l, "%lld %255s %15s", &t, host, res) == 3 && strcmp(res, "ok") == 0 && t > (long long)now - o_window) n++;
  }
  return n;
}

/* Appends a fence to the log, keeping only the lines of the window. */
static void log_fence(time_t now, const char *host, bool ok, const char *why)
{
  CLEANUP_FREE char *path = st_path("fences.log", NULL, NULL, NULL);
  CLEANUP_FREE char *old = vm_read_file(path, 1 << 20, NULL);
  struct vm_strv keep = { 0 };
  char *save = NULL;
  for (char *l = old ? strtok_r(old, "\n", &save) : NULL; l; l = strtok_r(NULL, "\n", &save)) {
    long long t;
    if (sscanf(l, "%lld", &t) == 1 && t > (long long)now - o_window) vm_strv_add(&keep, l);
  }
  /* The reason on one line, without the separators of the log. */
  CLEANUP_FREE char *reason = vm_strdup(ok ? "-" : why);
  for (char *q = reason; *q; q++)
    if (*q == '\n' || *q == '\r') *q = ' ';
  vm_strv_addf(&keep, "%lld %s %s %s", (long long)now, host, ok ? "ok" : "failed", reason);
  CLEANUP_FREE char *text = vm_strv_lines(&keep, NULL);
  vm_strv_free(&keep);
  write_text(path, text);
}

/* ---- Keeping the definitions of HA VMs ----------------------------------------------------- */
static void keep_definitions(const struct bal_config *c, const struct pool_host *ph)
{
  CLEANUP_FREE char *dir = st_path("defs", ph->h->name, NULL, NULL);
  struct vm_strv kept = { 0 };
  list_dir(dir, ".xml", &kept);
  bool any = false;
  for (size_t k = 0; k < ph->nvms; k++) any |= is_ha(c, ph->vms[k].name);
  CLEANUP_FREE char *why = NULL;
  virConnectPtr conn = any ? pool_open(ph->h->uri, o_timeout, &why) : NULL;
  /* Said once while it lasts: an HA VM whose definition is not kept cannot be
   * restarted. */
  static struct vm_strv unkept;
  bool said = unkept.v && vm_strv_contains(unkept.v, ph->h->name);
  if (any && !conn && !said) {
    vm_warn("cannot keep the definitions of the HA VMs of '%s' (%s): they cannot be restarted until it can",
            ph->h->name, why);
    vm_strv_add(&unkept, ph->h->name);
  } else if (conn && said) {
    vm_info("the definitions of the HA VMs of '%s' are kept again", ph->h->name);
    vm_strv_remove_one(&unkept, ph->h->name);
  }
  for (size_t k = 0; conn && k < ph->nvms; k++) {
    const struct pool_vm *v = &ph->vms[k];
    if (!is_ha(c, v->name)) continue;
    virDomainPtr dom = virDomainLookupByUUIDString(conn, v->uuid);
    if (!dom) {
      virResetLastError();
      continue;
    }
    /* The persistent definition (what a restart defines), with its secrets' references. */
    unsigned flags = virDomainIsPersistent(dom) == 1 ? VIR_DOMAIN_XML_INACTIVE | VIR_DOMAIN_XML_SECURE : VIR_DOMAIN_XML_SECURE;
    char *xml = virDomainGetXMLDesc(dom, flags);
    virDomainFree(dom);
    if (!xml) {
      vm_warn("cannot read the definition of HA VM '%s' on '%s': %s", v->name, ph->h->name, virGetLastErrorMessage());
      virResetLastError();
      continue;
    }
    CLEANUP_FREE char *path = st_path("defs", ph->h->name, v->name, "xml");
    CLEANUP_FREE char *old = vm_read_file(path, 16 << 20, NULL);
    if (!old || strcmp(old, xml) != 0) {
      if (write_text(path, xml) == 0 && !old) vm_info("keeping the definition of HA VM '%s' of host '%s'", v->name, ph->h->name);
    }
    free(xml);
    /* Its CPU load, for the room it needs: written again when it changed much. */
    CLEANUP_FREE char *lpath = st_path("defs", ph->h->name, v->name, "load");
    CLEANUP_FREE char *lold = vm_read_file(lpath, 64, NULL);
    if (!lold || fabs(strtod(lold, NULL) - v->cpu) > 20) {
      CLEANUP_FREE char *load = vm_strdup_printf("%.1f\n", v->cpu);
      write_text(lpath, load);
    }
  }
  if (conn) virConnectClose(conn);
  /* An HA VM that left the host (moved, stopped) is no longer its to restart. */
  for (size_t i = 0; i < kept.n; i++) {
    bool here = false;
    for (size_t k = 0; k < ph->nvms && !here; k++) here = strcmp(ph->vms[k].name, kept.v[i]) == 0 && is_ha(c, kept.v[i]);
    if (here) continue;
    CLEANUP_FREE char *x = st_path("defs", ph->h->name, kept.v[i], "xml");
    CLEANUP_FREE char *l = st_path("defs", ph->h->name, kept.v[i], "load");
    remove_file(x);
    remove_file(l);
    vm_debug("HA VM '%s' no longer runs on '%s': its definition is no longer kept there", kept.v[i], ph->h->name);
  }
  vm_strv_free(&kept);
}

/* ---- A fenced host that answers again --------------------------------------------------- */
static bool runs_elsewhere(const struct pool *p, const char *host, const char *vm)
{
  for (size_t i = 0; i < p->n; i++) {
    if (p->v[i].error || strcmp(p->v[i].h->name, host) == 0) continue;
    for (size_t k = 0; k < p->v[i].nvms; k++)
      if (strcmp(p->v[i].vms[k].name, vm) == 0) return true;
  }
  return false;
}

/* Its HA VMs, restarted elsewhere, lose their definition and autostart there (and
 * a copy that its autostart started is stopped: it writes the disks the other
 * copy writes). Then it is used again. */
static void clear_returned(const struct pool *p, const struct pool_host *ph)
{
  CLEANUP_FREE char *mark = st_path("fenced", ph->h->name, NULL, NULL);
  CLEANUP_FREE char *list = vm_read_file(mark, 1 << 20, NULL);
  if (!list) return;
  CLEANUP_FREE char *why = NULL;
  virConnectPtr conn = pool_open(ph->h->uri, o_timeout, &why);
  if (!conn) {
    vm_warn("host '%s' answers again but cannot be cleared: %s", ph->h->name, why);
    return;
  }
  int bad = 0, cleared = 0;
  char *save = NULL;
  for (char *vm = strtok_r(list, "\n", &save); vm; vm = strtok_r(NULL, "\n", &save)) {
    virDomainPtr dom = virDomainLookupByName(conn, vm);
    if (!dom) {
      virResetLastError();
      continue;
    }
    /* Only a VM that runs elsewhere loses this host's copy: one that was not
     * restarted (no room, no definition) keeps its only definition, autostart off. */
    bool elsewhere = runs_elsewhere(p, ph->h->name, vm);
    if (virDomainSetAutostart(dom, 0) < 0) virResetLastError();
    if (!elsewhere) {
      vm_warn("HA VM '%s' of returned host '%s' runs on no other host: its definition stays there, autostart off", vm,
              ph->h->name);
      virDomainFree(dom);
      continue;
    }
    if (virDomainIsActive(dom) == 1) {
      vm_warn("HA VM '%s' runs on returned host '%s' and elsewhere: stopping the copy on '%s'", vm, ph->h->name,
              ph->h->name);
      if (virDomainDestroy(dom) < 0) bad++;
    }
    if (!bad && virDomainIsPersistent(dom) == 1 &&
        virDomainUndefineFlags(dom, VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA |
                                        VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA | VIR_DOMAIN_UNDEFINE_KEEP_NVRAM) < 0)
      bad++;
    else if (!bad) cleared++;
    if (bad) {
      vm_warn("cannot clear HA VM '%s' on '%s': %s", vm, ph->h->name, virGetLastErrorMessage());
      virResetLastError();
    }
    virDomainFree(dom);
  }
  virConnectClose(conn);
  if (bad) return; /* tried again at the next probe */
  remove_file(mark);
  CLEANUP_FREE char *defs = st_path("defs", ph->h->name, NULL, NULL);
  vm_remove_tree(defs);
  vm_info("host '%s' answers again: %d definition%s of HA VMs restarted elsewhere cleared; it is used again",
          ph->h->name, cleared, cleared == 1 ? "" : "s");
}

/* ---- Restarting a fenced host's HA VMs ----------------------------------------------------- */
static long long xml_memory_mib(const char *xml)
{
  CLEANUP_XMLDOC xmlDocPtr doc = vm_xml_parse(xml);
  if (!doc) return 0;
  CLEANUP_XPATHCTX xmlXPathContextPtr ctx = vm_xpath_ctx(doc);
  long long kib = vm_xpath_ll(ctx, "string(/domain/currentMemory)", 0);
  if (!kib) kib = vm_xpath_ll(ctx, "string(/domain/memory)", 0);
  return kib / 1024;
}

static bool host_fenced(const char *host)
{
  CLEANUP_FREE char *mark = st_path("fenced", host, NULL, NULL);
  return access(mark, F_OK) == 0;
}

/* Marks a host fenced, with the VMs whose definitions were kept there: written
 * as soon as its fence succeeds, so that a watcher killed after it neither
 * fences it again nor forgets to restart its VMs. */
static void mark_fenced(const char *host)
{
  CLEANUP_FREE char *dir = st_path("defs", host, NULL, NULL);
  struct vm_strv names = { 0 };
  list_dir(dir, ".xml", &names);
  CLEANUP_FREE char *text = vm_strv_lines(&names, NULL);
  vm_strv_free(&names);
  CLEANUP_FREE char *mark = st_path("fenced", host, NULL, NULL);
  write_text(mark, text);
}

/* Starts the HA VMs of a fenced host that run nowhere: after its fence, and again
 * once per grace time while it stays down (a VM that found no room, or a watcher
 * killed midway). retry: say only what is done. */
static void restart_vms(const struct bal_config *c, const struct pool *p, const struct pool_host *dead, bool retry)
{
  /* Only with every other host seen: one that does not answer (and is not fenced)
   * may run a VM of the dead host already (a move just before it died, an earlier
   * restart), and a second copy would write its disks too. */
  for (size_t i = 0; i < p->n; i++) {
    const struct pool_host *o = &p->v[i];
    if (o == dead || !o->error || host_fenced(o->h->name)) continue;
    if (!retry)
      vm_warn("the HA VMs of fenced host '%s' wait: host '%s' does not answer (%s), and may run one of them",
              dead->h->name, o->h->name, o->error);
    return;
  }
  CLEANUP_FREE char *dir = st_path("defs", dead->h->name, NULL, NULL);
  struct vm_strv names = { 0 };
  list_dir(dir, ".xml", &names);
  struct vm_strv to_start = { 0 };
  for (size_t i = 0; i < names.n; i++) {
    if (!is_ha(c, names.v[i])) continue;
    if (runs_elsewhere(p, dead->h->name, names.v[i])) {
      if (!retry) vm_info("HA VM '%s' of '%s' runs on another host already: not restarted", names.v[i], dead->h->name);
      continue;
    }
    vm_strv_add(&to_start, names.v[i]);
  }
  vm_strv_free(&names);
  if (!to_start.n) {
    if (!retry) vm_info("host '%s' had no HA VM to restart", dead->h->name);
    vm_strv_free(&to_start);
    return;
  }
  /* The planner's pool: the hosts that answer and are not fenced, with their VMs,
   * and the dead host, in maintenance, holding only the VMs to restart. */
  struct bal_pool live;
  void *arrays[2];
  pool_to_bal(p, &live, arrays);
  size_t nh = live.nhosts + 1, nv = live.nvms + to_start.n;
  struct bal_host *hosts = calloc(nh, sizeof *hosts);
  struct bal_vm *vms = calloc(nv, sizeof *vms);
  char **xmls = calloc(to_start.n, sizeof *xmls);
  if (!hosts || !vms || !xmls) abort();
  memcpy(hosts, live.hosts, live.nhosts * sizeof *hosts);
  memcpy(vms, live.vms, live.nvms * sizeof *vms);
  for (size_t h = 0; h < live.nhosts; h++)
    if (host_fenced(hosts[h].name)) hosts[h].maintenance = true;
  struct bal_host *dh = &hosts[live.nhosts];
  dh->name = dead->h->name;
  dh->maintenance = true;
  for (int r = 0; r < BAL_NRES; r++) dh->cap[r] = 1e18;
  for (size_t i = 0; i < to_start.n; i++) {
    CLEANUP_FREE char *xp = st_path("defs", dead->h->name, to_start.v[i], "xml");
    CLEANUP_FREE char *lp = st_path("defs", dead->h->name, to_start.v[i], "load");
    xmls[i] = vm_read_file(xp, 16 << 20, NULL);
    CLEANUP_FREE char *load = vm_read_file(lp, 64, NULL);
    struct bal_vm *v = &vms[live.nvms + i];
    v->name = to_start.v[i];
    v->demand[BAL_CPU] = load ? strtod(load, NULL) : 0;
    v->demand[BAL_MEM] = xmls[i] ? (double)xml_memory_mib(xmls[i]) : 0;
    v->mem_mib = v->demand[BAL_MEM];
    v->priority = -1;
    v->host = (int)live.nhosts;
  }
  struct bal_config lc = *c;
  lc.level = 1; /* only what must move: the dead host's VMs (and nothing for balance) */
  lc.policy = BAL_BALANCE;
  struct bal_pool bp = { .hosts = hosts, .nhosts = nh, .vms = vms, .nvms = nv };
  struct bal_plan plan;
  const char *why = NULL;
  if (bal_plan_make(&lc, &bp, &plan, &why) < 0) {
    vm_warn("cannot place the HA VMs of '%s': %s", dead->h->name, why);
  } else {
    for (size_t m = 0; m < plan.n; m++) {
      const struct bal_move *mv = &plan.v[m];
      if (mv->src != (int)live.nhosts) continue; /* another VM's rule: not ha's business */
      size_t i = (size_t)mv->vm - live.nvms;
      const char *dest = hosts[mv->dst].name;
      const struct vm_host *dh2 = vm_hosts_find(&p->hosts, dest);
      if (!xmls[i]) {
        vm_warn("HA VM '%s' of '%s': its kept definition cannot be read: not restarted", to_start.v[i], dead->h->name);
        continue;
      }
      CLEANUP_FREE char *why_open = NULL;
      virConnectPtr conn = pool_open(dh2->uri, o_timeout, &why_open);
      /* Whether the destination had it defined already (then it keeps it). */
      virDomainPtr before = conn ? virDomainLookupByName(conn, to_start.v[i]) : NULL;
      if (!before) virResetLastError();
      bool existed = before != NULL;
      if (before) virDomainFree(before);
      /* An encrypted VM's disk keys go there first, from the keys this machine keeps. */
      struct vm_strv keys_made = { 0 };
      vm_errors_mute(true);
      int krc = conn ? vm_domain_secrets_ensure(conn, to_start.v[i], xmls[i], &keys_made) : 0;
      vm_errors_mute(false);
      CLEANUP_FREE char *why_key = krc ? vm_strdup(vm_last_error()) : NULL;
      virDomainPtr dom = conn && !krc ? virDomainDefineXML(conn, xmls[i]) : NULL;
      if (dom && virDomainCreate(dom) == 0) {
        vm_info("restarted HA VM '%s' of fenced host '%s' on '%s'", to_start.v[i], dead->h->name, dest);
      } else {
        vm_warn("cannot restart HA VM '%s' of '%s' on '%s': %s", to_start.v[i], dead->h->name, dest,
                !conn ? why_open : why_key ? why_key : virGetLastErrorMessage());
        /* Nothing half-made: a definition this run made is removed, and the keys
         * it defined there. */
        if (dom && !existed) virDomainUndefineFlags(dom, VIR_DOMAIN_UNDEFINE_KEEP_NVRAM);
        virResetLastError();
        vm_errors_mute(true);
        for (size_t k = 0; k < keys_made.n; k++) vm_secret_remove(conn, keys_made.v[k], false);
        vm_errors_mute(false);
      }
      vm_strv_free(&keys_made);
      if (dom) virDomainFree(dom);
      if (conn) virConnectClose(conn);
    }
    for (size_t s = 0; s < plan.nstuck && !retry; s++)
      if ((size_t)plan.stuck[s] >= live.nvms)
        vm_warn("HA VM '%s' of '%s': no host can take it (capacity or rules): not restarted",
                vms[plan.stuck[s]].name, dead->h->name);
    bal_plan_free(&plan);
  }
  for (size_t i = 0; i < to_start.n; i++) free(xmls[i]);
  free(xmls);
  free(hosts);
  free(vms);
  free(arrays[0]);
  free(arrays[1]);
  vm_strv_free(&to_start);
}

/* ---- One probe of the pool and what follows from it ---------------------------------------- */
/* An HA VM seen running on one host is no longer another's to restart (it moved
 * there while both lived, or a restart took it there). */
static void drop_stale(const struct pool *p)
{
  for (size_t i = 0; i < p->n; i++) {
    const struct pool_host *ph = &p->v[i];
    if (ph->error) continue;
    for (size_t k = 0; k < ph->nvms; k++)
      for (size_t o = 0; o < p->n; o++) {
        if (o == i) continue;
        CLEANUP_FREE char *x = st_path("defs", p->v[o].h->name, ph->vms[k].name, "xml");
        if (access(x, F_OK) != 0) continue;
        CLEANUP_FREE char *l = st_path("defs", p->v[o].h->name, ph->vms[k].name, "load");
        remove_file(x);
        remove_file(l);
        vm_debug("HA VM '%s' runs on '%s': no longer kept for '%s'", ph->vms[k].name, ph->h->name, p->v[o].h->name);
      }
  }
}

static int probe(const struct bal_config *c)
{
  struct pool p;
  int rc = pool_collect(&p, NULL, 1000, o_timeout, 0);
  if (rc) {
    pool_free(&p);
    return rc < 0 ? 0 : rc; /* interrupted: the loop ends it */
  }
  time_t now = time(NULL);
  /* Reached: answered, if only with an error. Only a host that cannot be reached
   * at all is a candidate for fencing; one whose libvirtd answers is alive. */
  size_t reached = 0;
  for (size_t i = 0; i < p.n; i++) reached += !p.v[i].no_answer;
  bool quorum = reached * 2 >= p.n;
  for (size_t i = 0; i < p.n && !vm_interrupted(); i++) {
    const struct pool_host *ph = &p.v[i];
    CLEANUP_FREE char *down = st_path("down", ph->h->name, NULL, NULL);
    if (ph->no_answer) continue;
    if (access(down, F_OK) == 0) {
      remove_file(down);
      if (!host_fenced(ph->h->name)) vm_info("host '%s' answers again before it was fenced", ph->h->name);
    }
    if (ph->error) {
      vm_warn("host '%s' answers with an error (%s): not a candidate for fencing", ph->h->name, ph->error);
      continue;
    }
    if (host_fenced(ph->h->name)) clear_returned(&p, ph);
    if (!host_fenced(ph->h->name)) keep_definitions(c, ph);
  }
  /* Stopped (SIGTERM): no fence and no restart after the request. */
  if (vm_interrupted()) {
    pool_free(&p);
    return 0;
  }
  drop_stale(&p);
  if (!quorum) {
    vm_warn("this watcher reaches %zu of %zu hosts: it may be the one cut off, and fences nobody", reached, p.n);
  }
  for (size_t i = 0; i < p.n && !vm_interrupted(); i++) {
    const struct pool_host *ph = &p.v[i];
    if (!ph->no_answer) continue;
    CLEANUP_FREE char *down = st_path("down", ph->h->name, NULL, NULL);
    CLEANUP_FREE char *since_s = vm_read_file(down, 256, NULL);
    long long since = 0, last = 0;
    if (!since_s || sscanf(since_s, "%lld %lld", &since, &last) < 1) {
      CLEANUP_FREE char *t = vm_strdup_printf("%lld 0\n", (long long)now);
      write_text(down, t);
      if (!host_fenced(ph->h->name)) vm_warn("host '%s' does not answer (%s)", ph->h->name, ph->error);
      continue;
    }
    /* A fence, a failed one, or the restarts of a fenced host: once per grace time. */
    if (now - since < o_grace || (last && now - last < o_grace)) continue;
    CLEANUP_FREE char *t = vm_strdup_printf("%lld %lld\n", since, (long long)now);
    if (host_fenced(ph->h->name)) {
      write_text(down, t);
      restart_vms(c, &p, ph, true);
      continue;
    }
    if (!quorum) continue;
    const struct bal_stmt *f = fence_of(c, ph->h->name);
    write_text(down, t);
    if (!f) {
      vm_warn("host '%s' has not answered for %lld s and has no fence agent: its HA VMs are not restarted",
              ph->h->name, (long long)(now - since));
      continue;
    }
    if (fences_in_window(now) >= o_max_fences) {
      vm_warn("host '%s' has not answered for %lld s, but %d fences were made in the last %d s (--max-fences): "
              "not fenced",
              ph->h->name, (long long)(now - since), o_max_fences, o_window);
      continue;
    }
    vm_info("host '%s' has not answered for %lld s: fencing it with %s", ph->h->name, (long long)(now - since), f->w[1]);
    char *why = NULL;
    int frc = run_fence(f, &why);
    if (frc == 0) mark_fenced(ph->h->name);
    log_fence(now, ph->h->name, frc == 0, why ? why : "-");
    if (frc != 0) {
      vm_warn("fencing host '%s' failed (%s): its HA VMs are not restarted", ph->h->name, why);
      free(why);
      continue;
    }
    vm_info("host '%s' is fenced", ph->h->name);
    restart_vms(c, &p, ph, false);
  }
  pool_free(&p);
  return 0;
}

int cmd_ha(int argc, char **argv)
{
  struct poptOption table[] = {
    { "config", 'C', POPT_ARG_STRING, &o_config, 0, "HA marks, fence agents and rules (default: /etc/vmkit/vmbalance.conf)", "FILE" },
    { "interval", '\0', POPT_ARG_INT, &o_interval, 0, "seconds between probes of the pool (1 to 3600; default: 5)", "SECONDS" },
    { "timeout", '\0', POPT_ARG_INT, &o_timeout, 0, "seconds a host has to answer a probe (1 to 3600; default: 10)", "SECONDS" },
    { "grace", '\0', POPT_ARG_INT, &o_grace, 0, "seconds a host may not answer before it is fenced (0 to 86400; default: 30)", "SECONDS" },
    { "max-fences", '\0', POPT_ARG_INT, &o_max_fences, 0, "fences at most within --fence-window (0 to 1000; default: 2)", "N" },
    { "fence-window", '\0', POPT_ARG_INT, &o_window, 0, "seconds of the window of --max-fences (1 to 604800; default: 3600)", "SECONDS" },
    { "fence-timeout", '\0', POPT_ARG_INT, &o_fence_timeout, 0, "seconds a fence agent has (1 to 3600; default: 120)", "SECONDS" },
    { "once", '\0', POPT_ARG_NONE, &o_once, 0, "probe once, act, and exit (for cron)", NULL },
    VM_POPT_COMMON, POPT_TABLEEND
  };
  CLEANUP_POPT poptContext ctx = NULL;
  const char **args;
  int nargs;
  int rc = vm_parse(&ctx, argc, argv, table, "",
                    "Watches every host of the hosts file. A host that does not answer for the grace\n"
                    "time is fenced with its fence agent; once the fence succeeds, its HA VMs are\n"
                    "restarted on the other hosts, by priority, within capacity and rules. Runs until\n"
                    "interrupted (a service), or once with --once.",
                    0, 0, &args, &nargs);
  if (rc) return rc == VM_DONE ? 0 : rc;
  if (o_interval < 1 || o_interval > 3600) return vm_usage_error("invalid --interval %d: expected 1 to 3600 seconds", o_interval);
  if (o_timeout < 1 || o_timeout > 3600) return vm_usage_error("invalid --timeout %d: expected 1 to 3600 seconds", o_timeout);
  if (o_grace < 0 || o_grace > 86400) return vm_usage_error("invalid --grace %d: expected 0 to 86400 seconds", o_grace);
  if (o_max_fences < 0 || o_max_fences > 1000) return vm_usage_error("invalid --max-fences %d: expected 0 to 1000", o_max_fences);
  if (o_window < 1 || o_window > 604800) return vm_usage_error("invalid --fence-window %d: expected 1 to 604800 seconds", o_window);
  if (o_fence_timeout < 1 || o_fence_timeout > 3600)
    return vm_usage_error("invalid --fence-timeout %d: expected 1 to 3600 seconds", o_fence_timeout);
  struct bal_config c;
  if ((rc = bal_load_config(o_config, NULL, 0, &c))) return rc;
  /* Each fence agent is found now, not when a host has failed. */
  for (size_t i = 0; i < c.n; i++) {
    if (c.v[i].kind != BAL_FENCE) continue;
    CLEANUP_FREE char *a = agent_path(c.v[i].w[1]);
    if (!a) {
      rc = vm_fail(VM_EXIT_NOTFOUND, "fence agent '%s' of host '%s' not found (PATH, /usr/sbin, /sbin)", c.v[i].w[1],
                   c.v[i].w[0]);
      bal_config_free(&c);
      return rc;
    }
  }
  const char *base = getenv("VMKIT_STATE_DIR");
  state_dir = vm_strdup_printf("%s/ha", base && *base ? base : "/var/lib/vmkit");
  if (mkdirs(state_dir) < 0) {
    bal_config_free(&c);
    return vm_fail_errno(VM_EXIT_FAIL, "cannot make '%s'", state_dir);
  }
  vm_catch_signals();
  /* libvirt's keepalive on every connection (pool_open) needs its event loop. */
  if ((rc = vm_events_init())) {
    bal_config_free(&c);
    return rc;
  }
  /* One watcher per state: two would fence twice. */
  struct vm_lock *lock = NULL;
  CLEANUP_FREE char *key = vm_strdup_printf("vmbalance-ha-%s", state_dir);
  for (char *s = key; *s; s++)
    if (*s == '/') *s = '_';
  if ((rc = vm_lock_take(key, false, 0, "the HA watcher", &lock))) {
    bal_config_free(&c);
    return rc;
  }
  size_t nha = 0;
  for (size_t i = 0; i < c.n; i++) nha += c.v[i].kind == BAL_HA ? c.v[i].n : 0;
  if (!o_once)
    vm_info("watching the hosts of %s every %d s (grace %d s, %zu HA VM%s)", vm_hosts_path(), o_interval, o_grace, nha,
            nha == 1 ? "" : "s");
  for (;;) {
    int64_t t0 = vm_now_ms();
    if ((rc = probe(&c))) break;
    if (o_once || vm_interrupted()) break;
    int64_t left = (int64_t)o_interval * 1000 - (vm_now_ms() - t0);
    if (left > 0) vm_sleep_ms((int)left);
    if (vm_interrupted()) break;
  }
  vm_lock_release(lock);
  bal_config_free(&c);
  free(state_dir);
  /* SIGTERM or SIGINT is how a service is stopped: exit 0, even mid-probe. */
  if (vm_interrupted()) {
    int sig = vm_interrupt_signal();
    return sig == SIGTERM || sig == SIGINT ? 0 : vm_fail_interrupted();
  }
  return rc;
}
