/* A live move: libvirt's peer-to-peer migration, driven from a worker thread while
 * this one watches the job (progress, convergence, escalation, abort).
 *
 * QEMU fixes a migration's capabilities when it starts, so auto-converge and
 * post-copy are enabled up front (libvirt's flags) and the escalation uses what
 * works mid-flight: a longer allowed downtime (virDomainMigrateSetMaxDowntime),
 * the auto-converge throttle (QEMU raises it by itself while the guest dirties
 * memory faster than it is sent), then the switch to post-copy
 * (virDomainMigrateStartPostCopy). */
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "vmmigrate.h"

struct worker {
  virDomainPtr dom;
  const char *dconnuri;
  virTypedParameterPtr params;
  int nparams;
  unsigned flags;
  int rc;
  virErrorPtr err;
  volatile bool done;
};

static void *migrate_thread(void *arg)
{
  struct worker *w = arg;
  w->rc = virDomainMigrateToURI3(w->dom, w->dconnuri, w->params, (unsigned)w->nparams, w->flags);
  if (w->rc < 0) w->err = virSaveLastError();
  __atomic_store_n(&w->done, true, __ATOMIC_SEQ_CST);
  return NULL;
}

/* The progress line, on a terminal only. */
static void progress(const char *phase, const struct vm_jobstats *s, int64_t elapsed_ms)
{
  if (vm_opts.quiet || !isatty(2)) return;
  char rem[16], rate[16], dirty[16], eta[32] = "";
  uint64_t remaining = s->data_remaining ? s->data_remaining : s->mem_remaining;
  uint64_t bps = s->mem_bps + s->disk_bps;
  if (bps) snprintf(eta, sizeof eta, ", ETA %llus", (unsigned long long)(remaining / bps));
  fprintf(stderr, "\r\033[K%s: iteration %llu, %s left, dirty %s/s, %s/s%s, %llds", phase,
          (unsigned long long)s->iteration, vm_format_size(remaining, rem),
          vm_format_size(s->dirty_rate * s->page_size, dirty), vm_format_size(bps, rate), eta,
          (long long)(elapsed_ms / 1000));
}

static void progress_end(void)
{
  if (!vm_opts.quiet && isatty(2)) fprintf(stderr, "\r\033[K");
}

/* "Postcopy is not supported": the destination kernel lets QEMU there have no
 * userfaultfd (HOST.md: vm.unprivileged_userfaultfd). */
static bool postcopy_unsupported(virErrorPtr e)
{
  return e && e->message && (strstr(e->message, "ostcopy is not supported") || strstr(e->message, "postcopy-ram"));
}

/* --strategy postcopy switches when the first pass is done, as libvirt reports it
 * (the iteration event, as virsh's --postcopy-after-precopy does): polling could
 * miss the moment. */
static volatile bool switched;
/* Set once the move is to be aborted (Ctrl-C, --timeout): no switch after that. */
static volatile bool aborting;

static void on_iteration(virConnectPtr conn, virDomainPtr dom, int iteration, void *opaque)
{
  /* Never after Ctrl-C or the deadline: an aborted move must stay abortable. */
  if (vm_interrupted() || __atomic_load_n(&aborting, __ATOMIC_SEQ_CST)) return;
  if (iteration >= 2 && !__atomic_load_n(&switched, __ATOMIC_SEQ_CST) && virDomainMigrateStartPostCopy(dom, 0) == 0)
    __atomic_store_n(&switched, true, __ATOMIC_SEQ_CST);
  virResetLastError();
}

/* The source's own statistics of the finished job, as its job-completed event
 * gives them: only the source counts what a disk mirror (--copy-storage) sent, and
 * the destination's completed statistics and the last poll may both miss it (a
 * small disk copied before the first poll). One move per process (plan mode forks
 * a child per move), so one slot; it lives as long as the process, so a callback
 * that runs late writes nothing freed. */
static pthread_mutex_t src_done_lock = PTHREAD_MUTEX_INITIALIZER;
static struct vm_jobstats src_done;
static bool src_done_set;

static void on_job_completed(virConnectPtr conn, virDomainPtr dom, virTypedParameterPtr params, int nparams,
                             void *opaque)
{
  pthread_mutex_lock(&src_done_lock);
  vm_job_stats_parse(VIR_DOMAIN_JOB_COMPLETED, params, nparams, &src_done);
  src_done_set = true;
  pthread_mutex_unlock(&src_done_lock);
}

/* The source's completed statistics, waiting up to WAIT_MS for the event (it may
 * be dispatched just after the migration call returns). */
static bool source_completed(struct vm_jobstats *out, int wait_ms)
{
  for (int waited = 0;; waited += 50) {
    pthread_mutex_lock(&src_done_lock);
    bool got = src_done_set;
    if (got) *out = src_done;
    pthread_mutex_unlock(&src_done_lock);
    if (got || waited >= wait_ms) return got;
    vm_sleep_ms(50);
  }
}

static const char *stage_names[] = { "pre-copy", "pre-copy, longer downtime", "auto-converge", "post-copy" };

/* After libvirt's migration call failed: where is the VM now? The client's view
 * is not enough (a dropped connection to the source daemon fails the call while
 * the peer-to-peer job goes on there), so both hosts are asked before anything is
 * resumed or removed. */
static int live_failed(struct move *m, struct worker *w, bool postcopy_started, bool aborted, int abort_rc,
                       bool was_running)
{
  const char *why = w->err && w->err->message ? w->err->message : "unknown error";
  int st = -1, reason = 0;
  bool src_known = virConnectIsAlive(m->src.conn) == 1 && virDomainGetState(m->dom, &st, &reason, 0) == 0;
  virResetLastError();
  bool dst_alive = virConnectIsAlive(m->dst.conn) == 1;
  CLEANUP_VIRDOMAIN virDomainPtr dd = dst_alive ? virDomainLookupByUUIDString(m->dst.conn, m->uuid) : NULL;
  /* Read before any other call resets it. */
  bool dst_known = dst_alive && (dd || vm_virt_error_code() == VIR_ERR_NO_DOMAIN);
  virResetLastError();
  bool dst_runs = dd && virDomainIsActive(dd) == 1;
  bool postcopy_failed = st == VIR_DOMAIN_PAUSED &&
                         (reason == VIR_DOMAIN_PAUSED_POSTCOPY || reason == VIR_DOMAIN_PAUSED_POSTCOPY_FAILED);
  if (postcopy_started || postcopy_failed) {
    /* The one case where the VM can be lost: its memory is split between the hosts.
     * Nothing is resumed or removed, and the record says so to the next run. */
    record_write(m, "postcopy-failed");
    return vm_fail(VM_EXIT_FAIL, "post-copy of '%s' to %s failed: the VM is stopped, its memory split between %s "
                   "and %s, and may be lost; nothing was removed: %s", m->name, m->dst.label, m->src.label,
                   m->dst.label, why);
  }
  if (!src_known || dd) {
    /* The move may have gone on, or finished, without us, or left a definition
     * there: leave everything to the next run, which looks again. */
    return vm_fail(VM_EXIT_FAIL, "cannot tell where '%s' is after the move failed (%s): %s; nothing was removed, "
                   "and the next vmmigrate run of it finishes or rolls back the move", m->name,
                   !src_known ? "the source does not answer"
                              : dst_runs ? (st == VIR_DOMAIN_RUNNING ? "it runs on both hosts" : "it runs on the destination")
                                         : "the destination has a definition of it", why);
  }
  /* libvirt resumes the guest on the source after a failed pre-copy; a guest it
   * left paused for the migration is resumed here, but only when the destination
   * says it has no such VM: one that does not answer may be running it. */
  if (was_running && st == VIR_DOMAIN_PAUSED && reason == VIR_DOMAIN_PAUSED_MIGRATION && !dst_known)
    return vm_fail(VM_EXIT_FAIL, "cannot move '%s' to %s: %s; the VM is paused on %s, and %s does not answer, so it "
                   "may run there: nothing was resumed or removed; once %s answers, the next vmmigrate run of it "
                   "resumes it there if %s has no such VM, and finishes or rolls back the move", m->name,
                   m->dst.label, why, m->src.label, m->dst.label, m->dst.label, m->dst.label);
  if (was_running && st == VIR_DOMAIN_PAUSED && reason == VIR_DOMAIN_PAUSED_MIGRATION) {
    virDomainResume(m->dom);
    virResetLastError();
    virDomainGetState(m->dom, &st, &reason, 0);
    virResetLastError();
  }
  CLEANUP_FREE char *now = st == VIR_DOMAIN_RUNNING ? vm_strdup("runs") : vm_strdup_printf("is %s", vm_state_name(st));
  int rc;
  if (aborted && abort_rc == VM_EXIT_TIMEOUT)
    rc = vm_fail(VM_EXIT_TIMEOUT, "moving '%s' to %s timed out after %d s: aborted; the VM %s on %s", m->name,
                 m->dst.label, mo.timeout_s, now, m->src.label);
  else if (aborted)
    rc = vm_fail(VM_EXIT_FAIL, "interrupted by %s: the move of '%s' was aborted; the VM %s on %s",
                 vm_interrupt_signal() == SIGINT ? "SIGINT" : vm_interrupt_signal() == SIGTERM ? "SIGTERM"
                 : vm_interrupt_signal() == SIGHUP ? "SIGHUP" : "a signal",
                 m->name, now, m->src.label);
  else
    rc = vm_fail(VM_EXIT_FAIL, "cannot move '%s' to %s: %s; the VM %s on %s", m->name, m->dst.label, why, now,
                 m->src.label);
  /* What this run made there goes (unless a VM there uses it); what cannot go yet,
   * the next move removes. */
  if (dst_known && !dd) {
    if (dest_volumes_remove(m) == 0) record_remove(m);
  } else if (dest_volumes_created()[0]) {
    vm_warn("the volumes this run made on %s stay until the next move of '%s' (%s)", m->dst.label, m->name,
            dst_known ? "a VM of that UUID is there" : "it does not answer");
  } else {
    record_remove(m);
  }
  return rc;
}

int move_live(struct move *m, json_object *report)
{
  /* The record first: it names the volumes this run is about to make there. */
  int rc;
  if ((rc = record_write(m, "live"))) return rc;
  if ((rc = dest_volumes_create(m, false))) {
    if (dest_volumes_remove(m) == 0) record_remove(m);
    return rc;
  }

  /* Flags and parameters. */
  bool copy_all = false, copy_top = false, shared = false;
  virTypedParameterPtr params = NULL;
  int nparams = 0, maxparams = 0;
  for (size_t i = 0; i < m->ndisks; i++) {
    if (m->disks[i].how == D_SHARED) { shared = true; continue; }
    if (m->disks[i].how == D_COPY_ALL) copy_all = true;
    else copy_top = true;
    virTypedParamsAddString(&params, &nparams, &maxparams, VIR_MIGRATE_PARAM_MIGRATE_DISKS, m->disks[i].target);
  }
  unsigned flags = VIR_MIGRATE_PEER2PEER | VIR_MIGRATE_PERSIST_DEST;
  if (!mo.keep_source) flags |= VIR_MIGRATE_UNDEFINE_SOURCE;
  if (mo.strategy != ST_STOPCOPY) flags |= VIR_MIGRATE_LIVE;
  if (mo.strategy == ST_AUTO || mo.strategy == ST_AUTOCONVERGE) flags |= VIR_MIGRATE_AUTO_CONVERGE;
  bool want_postcopy = mo.strategy == ST_AUTO || mo.strategy == ST_POSTCOPY;
  if (want_postcopy) flags |= VIR_MIGRATE_POSTCOPY;
  if (mo.tls) flags |= VIR_MIGRATE_TLS;
  /* Mixed disks: one flag covers all; flattening the ones that could go top-only
   * is correct, the reverse is not. */
  if (copy_all) flags |= VIR_MIGRATE_NON_SHARED_DISK;
  else if (copy_top) flags |= VIR_MIGRATE_NON_SHARED_INC;
  /* libvirt's own safety check runs first: disks on a network filesystem must
   * not use the host's page cache (the destination could read stale pages). Only
   * --unsafe overrides it; its other verdict, that a disk is on a local
   * filesystem, the pre-flight probe has disproved (below). */
  if (shared && mo.unsafe) flags |= VIR_MIGRATE_UNSAFE;
  const char *muri = mo.migrate_uri ? mo.migrate_uri : m->dst.migrate_uri;
  if (muri) virTypedParamsAddString(&params, &nparams, &maxparams, VIR_MIGRATE_PARAM_URI, muri);
  /* The cap is pre-copy's (and the disk mirror's). After a switch to post-copy
   * every page the guest touches waits on the link, so QEMU's post-copy limit
   * stays its default, none: capped, the switch-over alone took over a second
   * here at 8 MiB/s. */
  if (mo.bandwidth_mib)
    virTypedParamsAddULLong(&params, &nparams, &maxparams, VIR_MIGRATE_PARAM_BANDWIDTH, mo.bandwidth_mib);
  bool moved_paths = false;
  for (size_t i = 0; i < m->ndisks; i++)
    if (strcmp(m->disks[i].dst_path, m->disks[i].src_path) != 0) moved_paths = true;
  CLEANUP_FREE char *dxml = NULL, *pxml = NULL;
  if (moved_paths) {
    dxml = dest_xml(m, VIR_DOMAIN_XML_SECURE | VIR_DOMAIN_XML_MIGRATABLE);
    pxml = dest_xml(m, VIR_DOMAIN_XML_SECURE | VIR_DOMAIN_XML_MIGRATABLE | VIR_DOMAIN_XML_INACTIVE);
    if (!dxml || !pxml) {
      virTypedParamsFree(params, nparams);
      if (dest_volumes_remove(m) == 0) record_remove(m);
      return VM_EXIT_FAIL;
    }
    virTypedParamsAddString(&params, &nparams, &maxparams, VIR_MIGRATE_PARAM_DEST_XML, dxml);
    virTypedParamsAddString(&params, &nparams, &maxparams, VIR_MIGRATE_PARAM_PERSIST_XML, pxml);
  }

  bool was_running = vm_domain_state(m->dom) == VIR_DOMAIN_RUNNING;
  int autostart = 0;
  virDomainGetAutostart(m->dom, &autostart);
  virResetLastError();
  int64_t t_start = vm_now_ms(), t0 = t_start, t_mem = 0;
  struct worker w = { 0 };
  bool postcopy_started = false, abort_wanted = false, aborted = false;
  int abort_rc = 0;
  int stage = 0;
  /* auto starts at QEMU's default 300 ms (or less, if that is all the user allows)
   * and raises it when pre-copy does not converge; the other strategies use what
   * the user allows from the start. */
  int downtime = mo.strategy != ST_AUTO ? mo.max_downtime_ms : mo.max_downtime_ms < 300 ? mo.max_downtime_ms : 300;
  const int first_downtime = downtime;
  bool downtime_set = false;
  uint64_t last_iter = 0, rem_prev = 0, rem_iter = 0;
  int stalls = 0;
  struct vm_jobstats last = { 0 };
  int max_throttle = 0;
  CLEANUP_FREE char *finished_by = NULL;
  bool said_postcopy = false;

  int iter_cb = -1;
  if (mo.strategy == ST_POSTCOPY)
    iter_cb = virConnectDomainEventRegisterAny(m->src.conn, m->dom, VIR_DOMAIN_EVENT_ID_MIGRATION_ITERATION,
                                               VIR_DOMAIN_EVENT_CALLBACK(on_iteration), NULL, NULL);
  pthread_mutex_lock(&src_done_lock);
  src_done_set = false;
  pthread_mutex_unlock(&src_done_lock);
  int done_cb = virConnectDomainEventRegisterAny(m->src.conn, m->dom, VIR_DOMAIN_EVENT_ID_JOB_COMPLETED,
                                                VIR_DOMAIN_EVENT_CALLBACK(on_job_completed), NULL, NULL);
  virResetLastError();
  bool retried_unsafe = false, retried_postcopy = false;
  for (int attempt = 0; attempt < 3; attempt++) {
    if (vm_interrupted()) {
      /* Nothing has moved yet. */
      w.rc = -1;
      abort_wanted = aborted = true;
      abort_rc = vm_interrupt_signal() == SIGALRM ? VM_EXIT_TIMEOUT : VM_EXIT_FAIL;
      break;
    }
    /* Each attempt starts afresh: a failed job leaves QEMU's parameters as libvirt
     * restores them, and its iterations say nothing of the next. */
    t0 = vm_now_ms();
    t_mem = 0;
    downtime = first_downtime;
    downtime_set = false;
    stage = 0;
    stalls = 0;
    last_iter = rem_prev = rem_iter = 0;
    last = (struct vm_jobstats){ 0 };
    max_throttle = 0;
    w = (struct worker){ .dom = m->dom, .dconnuri = m->dst.uri, .params = params, .nparams = nparams, .flags = flags };
    pthread_t th;
    if (pthread_create(&th, NULL, migrate_thread, &w) != 0) {
      w.rc = -1;
      w.err = NULL;
      vm_warn("cannot start a thread");
      break;
    }
    while (!__atomic_load_n(&w.done, __ATOMIC_SEQ_CST)) {
      vm_sleep_ms(200);
      int64_t now = vm_now_ms(), elapsed = now - t0;
      bool timed_out = mo.timeout_s && now - t_start >= (int64_t)mo.timeout_s * 1000;
      if (__atomic_load_n(&switched, __ATOMIC_SEQ_CST)) postcopy_started = true;
      if ((vm_interrupted() || timed_out) && !abort_wanted) {
        if (postcopy_started) {
          if (!said_postcopy) {
            progress_end();
            vm_warn("post-copy has started: the move cannot be undone; letting it finish");
            said_postcopy = true;
          }
        } else {
          abort_wanted = true;
          __atomic_store_n(&aborting, true, __ATOMIC_SEQ_CST);
          abort_rc = vm_interrupted() && vm_interrupt_signal() != SIGALRM ? VM_EXIT_FAIL : VM_EXIT_TIMEOUT;
        }
      }
      /* Until libvirt takes the abort (the job may not be there yet). */
      if (abort_wanted && !aborted && !postcopy_started) {
        if (virDomainAbortJob(m->dom) == 0) aborted = true;
        virResetLastError();
      }
      struct vm_jobstats s;
      if (vm_job_stats(m->dom, false, &s) < 0 || s.type == VIR_DOMAIN_JOB_NONE) {
        virResetLastError();
        continue;
      }
      last = s;
      if (s.throttle_pct > max_throttle) max_throttle = s.throttle_pct;
      if (!downtime_set && mo.strategy != ST_STOPCOPY) {
        if (virDomainMigrateSetMaxDowntime(m->dom, (unsigned long long)downtime, 0) == 0) downtime_set = true;
        virResetLastError();
      }
      progress(postcopy_started ? "post-copy" : stage_names[stage], &s, elapsed);
      if (abort_wanted || postcopy_started) continue;
      /* The pre-copy budget counts from when memory starts to move (a disk
       * mirror, --copy-storage, comes first). */
      if (!t_mem && s.mem_processed > 0) t_mem = now;
      if (!t_mem) continue;

      /* Convergence: the data left at the start of each iteration must shrink. */
      if (s.iteration > last_iter) {
        rem_prev = rem_iter;
        rem_iter = s.mem_remaining;
        if (last_iter >= 2 && rem_prev && rem_iter * 10 > rem_prev * 9) stalls++;
        else if (last_iter >= 2) stalls = 0;
        last_iter = s.iteration;
      }
      bool budget_gone = now - t_mem >= (int64_t)mo.precopy_budget_s * 1000;
      if (mo.strategy == ST_POSTCOPY) {
        /* The event callback switches; a missed event is caught here. */
        if (!__atomic_load_n(&switched, __ATOMIC_SEQ_CST) && s.iteration >= 2 && m->postcopy_ok &&
            virDomainMigrateStartPostCopy(m->dom, 0) == 0)
          __atomic_store_n(&switched, true, __ATOMIC_SEQ_CST);
        virResetLastError();
      } else if (mo.strategy == ST_AUTO && (stalls > 0 || budget_gone)) {
        if (stage == 0) {
          /* A longer pause, as far as the user allows, when it would be enough. */
          uint64_t bps = s.mem_bps ? s.mem_bps : 1;
          uint64_t need_ms = s.mem_remaining * 1000 / bps;
          if (downtime < mo.max_downtime_ms && (need_ms <= (uint64_t)mo.max_downtime_ms || !budget_gone)) {
            downtime = need_ms * 5 / 4 < (uint64_t)mo.max_downtime_ms ? (int)(need_ms * 5 / 4) : mo.max_downtime_ms;
            if (downtime < first_downtime) downtime = first_downtime;
            virDomainMigrateSetMaxDowntime(m->dom, (unsigned long long)downtime, 0);
            virResetLastError();
            vm_debug("pre-copy does not converge: downtime limit raised to %d ms", downtime);
          } else {
            vm_debug("pre-copy does not converge, and %llu ms of downtime would be needed", (unsigned long long)need_ms);
          }
          stage = 1;
          stalls = 0;
        } else if (stage == 1) {
          vm_debug("pre-copy still does not converge: letting auto-converge throttle the guest");
          stage = 2;
          stalls = 0;
        } else if (stage == 2 && (stalls >= 2 || budget_gone) && m->postcopy_ok) {
          if (virDomainMigrateStartPostCopy(m->dom, 0) == 0) {
            postcopy_started = true;
            vm_debug("switched to post-copy after %lld ms", (long long)elapsed);
          }
          virResetLastError();
        }
      }
    }
    pthread_join(th, NULL);
    vm_debug("libvirt's migration call returned after %lld ms", (long long)(vm_now_ms() - t0));
    if (__atomic_load_n(&switched, __ATOMIC_SEQ_CST)) postcopy_started = true;
    progress_end();
    /* libvirt refuses a disk it takes for local (its filesystem is not one libvirt
     * knows as shared): the pre-flight probe saw the disks from both hosts, so
     * they are shared storage that libvirt does not recognise, such as one
     * filesystem that two daemons of one machine see. Any other unsafe verdict
     * (the cache mode on a network filesystem) stands. */
    if (w.rc < 0 && !abort_wanted && w.err && w.err->code == VIR_ERR_MIGRATE_UNSAFE) {
      bool local_guess = w.err->message && strstr(w.err->message, "without shared storage");
      if (shared && local_guess && !retried_unsafe) {
        vm_debug("libvirt takes the shared disks for local ones; the probe saw them on both hosts: moving with "
                 "VIR_MIGRATE_UNSAFE");
        flags |= VIR_MIGRATE_UNSAFE;
        retried_unsafe = true;
        virFreeError(w.err);
        w.err = NULL;
        continue;
      }
      virTypedParamsFree(params, nparams);
      if (iter_cb >= 0) virConnectDomainEventDeregisterAny(m->src.conn, iter_cb);
      if (done_cb >= 0) virConnectDomainEventDeregisterAny(m->src.conn, done_cb);
      CLEANUP_FREE char *why = vm_strdup(w.err->message ? w.err->message : "unsafe");
      virFreeError(w.err);
      if (dest_volumes_remove(m) == 0) record_remove(m);
      return vm_fail(VM_EXIT_STATE, "cannot move '%s' live: libvirt says: %s (give its disks on shared storage "
                     "cache='none', or move it with --unsafe); the VM runs on %s", m->name, why, m->src.label);
    }
    /* The destination cannot take post-copy: say so once, and go on without it. */
    if (w.rc < 0 && !abort_wanted && !postcopy_started && (flags & VIR_MIGRATE_POSTCOPY) &&
        postcopy_unsupported(w.err) && !retried_postcopy) {
      if (mo.strategy == ST_POSTCOPY) {
        virTypedParamsFree(params, nparams);
        if (iter_cb >= 0) virConnectDomainEventDeregisterAny(m->src.conn, iter_cb);
        if (done_cb >= 0) virConnectDomainEventDeregisterAny(m->src.conn, done_cb);
        virFreeError(w.err);
        if (dest_volumes_remove(m) == 0) record_remove(m);
        return vm_fail(VM_EXIT_STATE, "cannot move '%s' to %s with post-copy: it is not available there (its "
                       "kernel must allow QEMU userfaultfd: sysctl vm.unprivileged_userfaultfd=1); the VM runs on %s",
                       m->name, m->dst.label, m->src.label);
      }
      vm_warn("post-copy is not available on %s (its kernel must allow QEMU userfaultfd: "
              "sysctl vm.unprivileged_userfaultfd=1): moving without it", m->dst.label);
      flags &= ~(unsigned)VIR_MIGRATE_POSTCOPY;
      retried_postcopy = true;
      m->postcopy_ok = false;
      virFreeError(w.err);
      w.err = NULL;
      continue;
    }
    break;
  }
  if (iter_cb >= 0) virConnectDomainEventDeregisterAny(m->src.conn, iter_cb);
  virTypedParamsFree(params, nparams);
  int64_t total_ms = vm_now_ms() - t_start;

  if (w.rc < 0) {
    if (done_cb >= 0) virConnectDomainEventDeregisterAny(m->src.conn, done_cb);
    rc = live_failed(m, &w, postcopy_started, aborted || abort_wanted, abort_rc, was_running);
    if (w.err) virFreeError(w.err);
    return rc;
  }

  /* Done, as libvirt says; the destination must hold it running and defined, and
   * the source no longer (or, with --keep-source, shut off) before anything of the
   * source is removed. */
  struct vm_jobstats done = { 0 };
  CLEANUP_VIRDOMAIN virDomainPtr ddom = virDomainLookupByUUIDString(m->dst.conn, m->uuid);
  if (!ddom || vm_job_stats(ddom, true, &done) < 0 || !done.has_downtime) {
    virResetLastError();
    if (vm_job_stats(m->dom, true, &done) < 0) done = last;
  }
  virResetLastError();
  bool there = ddom && virDomainIsActive(ddom) == 1 && virDomainIsPersistent(ddom) == 1;
  CLEANUP_VIRDOMAIN virDomainPtr sdom = virDomainLookupByUUIDString(m->src.conn, m->uuid);
  /* Let go: gone from the source (read right after the lookup), or with
   * --keep-source defined there and shut off. */
  bool let_go = sdom ? mo.keep_source && virDomainIsActive(sdom) == 0 : vm_virt_error_code() == VIR_ERR_NO_DOMAIN;
  virResetLastError();
  struct vm_jobstats sdone;
  if (done_cb >= 0 && source_completed(&sdone, copy_all || copy_top ? 2000 : 0)) {
    vm_debug("the source's completed job: %llu bytes of memory, %llu of disk; the destination's: %llu, %llu; the "
             "last poll's: %llu, %llu", (unsigned long long)sdone.mem_processed,
             (unsigned long long)sdone.disk_processed, (unsigned long long)done.mem_processed,
             (unsigned long long)done.disk_processed, (unsigned long long)last.mem_processed,
             (unsigned long long)last.disk_processed);
    if (done.disk_processed < sdone.disk_processed) done.disk_processed = sdone.disk_processed;
    if (done.mem_processed < sdone.mem_processed) done.mem_processed = sdone.mem_processed;
  }
  if (done_cb >= 0) virConnectDomainEventDeregisterAny(m->src.conn, done_cb);
  virResetLastError();
  if (done.mem_processed < last.mem_processed) done.mem_processed = last.mem_processed;
  if (done.disk_processed < last.disk_processed) done.disk_processed = last.disk_processed;
  if (done.iteration == 0) done.iteration = last.iteration;
  if (done.throttle_pct > max_throttle) max_throttle = done.throttle_pct;

  if (mo.strategy == ST_STOPCOPY) finished_by = vm_strdup("stop-copy");
  else if (postcopy_started) finished_by = vm_strdup("postcopy");
  else if (max_throttle > 0) finished_by = vm_strdup("auto-converge");
  else if (downtime > first_downtime) finished_by = vm_strdup("precopy (longer downtime)");
  else finished_by = vm_strdup("precopy");

  if (!there || !let_go) {
    /* libvirt said done, but the hosts do not agree: touch nothing, keep the record. */
    return vm_fail(VM_EXIT_FAIL, "libvirt reports '%s' moved to %s, but it %s there and %s on %s: nothing was "
                   "removed; check both hosts", m->name, m->dst.label, there ? "runs" : "does not run",
                   let_go ? "is let go" : "still runs", m->src.label);
  }
  /* Autostart goes with the VM; a kept source must not boot it again. */
  if (autostart) virDomainSetAutostart(ddom, 1);
  if (sdom && autostart) virDomainSetAutostart(sdom, 0);
  virResetLastError();
  if (!mo.keep_source && (copy_all || copy_top)) source_volumes_remove(m);
  source_keys_remove(m);
  record_remove(m);

  const char *storage = copy_all ? "copied (whole chain, flattened)" : copy_top ? "copied (top image)" : "shared";
  json_object_object_add(report, "mode", json_object_new_string("live"));
  json_object_object_add(report, "strategy", json_object_new_string(strategy_name(mo.strategy)));
  json_object_object_add(report, "finished_by", json_object_new_string(finished_by));
  /* The whole move as the user waits for it (libvirt starts QEMU there, copies,
   * switches, cleans up), and the part QEMU measured as its migration. */
  json_object_object_add(report, "total_ms", json_object_new_int64(total_ms));
  json_object_object_add(report, "transfer_ms", done.elapsed_ms ? json_object_new_int64((int64_t)done.elapsed_ms) : NULL);
  json_object_object_add(report, "downtime_ms", done.has_downtime ? json_object_new_int64((int64_t)done.downtime_ms) : NULL);
  json_object_object_add(report, "memory_bytes", json_object_new_int64((int64_t)done.mem_processed));
  json_object_object_add(report, "disk_bytes", json_object_new_int64((int64_t)done.disk_processed));
  json_object_object_add(report, "iterations", json_object_new_int64((int64_t)done.iteration));
  json_object_object_add(report, "postcopy", json_object_new_boolean(postcopy_started));
  json_object_object_add(report, "max_downtime_ms", json_object_new_int(downtime));
  json_object_object_add(report, "throttle_pct", json_object_new_int(max_throttle));
  json_object_object_add(report, "storage", json_object_new_string(storage));
  vm_info("moved '%s' to %s in %.1f s (%s; downtime %s ms)", m->name, m->dst.label, (double)total_ms / 1000,
          finished_by,
          done.has_downtime ? json_object_get_string(json_object_object_get(report, "downtime_ms")) : "?");
  return 0;
}
