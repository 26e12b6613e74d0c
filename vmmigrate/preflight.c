/* Pre-flight: everything that must hold before anything moves, each check recorded
 * with its result, so that --check can print them all and a move stops at the
 * first failure with one line and exit 4. Storage checks also decide how each disk
 * moves: shared (the destination sees the same volume), or copied (top image or
 * whole chain). */
#include <errno.h>
#include <libgen.h>
#include <signal.h>
#include <stdarg.h>
#include <string.h>
#include <unistd.h>

#include "vmmigrate.h"

void check_add(struct move *m, const char *check, int rc, const char *fmt, ...)
{
  char detail[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(detail, sizeof detail, fmt, ap);
  va_end(ap);
  json_object *o = json_object_new_object();
  json_object_object_add(o, "check", json_object_new_string(check));
  json_object_object_add(o, "result", json_object_new_string(rc == 0 ? "ok" : rc < 0 ? "warning" : "failed"));
  json_object_object_add(o, "detail", json_object_new_string(detail));
  json_object_array_add(m->checks, o);
  /* A failed check is a conflict (exit 4), whatever failed inside it; a bad
   * argument (a --dest-cpu file) stays a usage error. */
  if (rc > 0 && rc != VM_EXIT_USAGE) rc = VM_EXIT_STATE;
  if (rc > 0 && !m->check_rc) m->check_rc = rc;
  if (rc < 0) vm_warn("%s", detail);
}

static const char *key_uri(struct host *h)
{
  return h->uri ? h->uri : "default";
}

/* ---- Shared storage ----------------------------------------------------------------
 * Two hosts share a pool when a volume made in the source's pool appears, with the
 * same content, in the destination's pool of that name after a refresh: a probe
 * through libvirt's storage API, so that it holds for NFS, a cluster filesystem or
 * two daemons that see one folder, and never mistakes two local folders of one
 * name for one. */
struct probe_result {
  char *src, *dst, *pool; /* the hosts' URIs: connections come and go in a plan */
  bool shared;
};
static struct probe_result probes[32];
static size_t nprobes;

/* The probes of this machine's runs: "vmkit-probe-MACHINE-PID-RANDOM". */
static char *probe_prefix(void)
{
  return vm_strdup_printf("vmkit-probe-%.8s-", vm_machine_id());
}

/* Probe volumes a killed run of this machine left (its PID gone): removed before
 * probing. Another machine's probes are that machine's to remove. */
static void remove_stale_probes(virStoragePoolPtr pool)
{
  CLEANUP_FREE char *prefix = probe_prefix();
  size_t plen = strlen(prefix);
  virStorageVolPtr *vols = NULL;
  int n = virStoragePoolListAllVolumes(pool, &vols, 0);
  for (int i = 0; i < n; i++) {
    const char *name = virStorageVolGetName(vols[i]);
    int pid = 0;
    if (name && strncmp(name, prefix, plen) == 0 && sscanf(name + plen, "%d-", &pid) == 1 && pid > 0 &&
        kill(pid, 0) < 0 && errno == ESRCH)
      virStorageVolDelete(vols[i], 0);
    virStorageVolFree(vols[i]);
  }
  free(vols);
  virResetLastError();
}

static int pool_shared(struct move *m, const char *pool_name, bool *shared)
{
  const char *su = m->src.uri ? m->src.uri : "", *du = m->dst.uri ? m->dst.uri : "";
  for (size_t i = 0; i < nprobes; i++)
    if (strcmp(probes[i].src, su) == 0 && strcmp(probes[i].dst, du) == 0 && strcmp(probes[i].pool, pool_name) == 0) {
      *shared = probes[i].shared;
      return 0;
    }
  *shared = false;
  CLEANUP_VIRPOOL virStoragePoolPtr dp = virStoragePoolLookupByName(m->dst.conn, pool_name);
  virResetLastError();
  if (dp && virStoragePoolIsActive(dp) == 1) {
    CLEANUP_VIRPOOL virStoragePoolPtr sp = NULL;
    int rc = vm_pool_open(m->src.conn, pool_name, &sp);
    if (rc) return rc;
    remove_stale_probes(sp);
    char token[37], name[128];
    vm_uuid_random(token);
    CLEANUP_FREE char *prefix = probe_prefix();
    snprintf(name, sizeof name, "%s%d-%.8s", prefix, (int)getpid(), token);
    struct vm_volspec spec = { .name = name, .format = "raw", .capacity = 65536 };
    CLEANUP_VIRVOL virStorageVolPtr sv = NULL;
    if ((rc = vm_vol_create(sp, &spec, &sv))) return rc;
    rc = vm_vol_write_text(sv, token);
    if (rc == 0 && virStoragePoolRefresh(dp, 0) == 0) {
      CLEANUP_VIRVOL virStorageVolPtr dv = virStorageVolLookupByName(dp, name);
      CLEANUP_FREE char *seen = dv ? vm_vol_read_text(dv, 1 << 17) : NULL;
      *shared = seen && strcmp(seen, token) == 0;
    }
    virResetLastError();
    virStorageVolDelete(sv, 0);
    virStoragePoolRefresh(dp, 0);
    virResetLastError();
    if (rc) return rc;
  }
  if (nprobes < sizeof probes / sizeof *probes)
    probes[nprobes++] = (struct probe_result){ vm_strdup(su), vm_strdup(du), vm_strdup(pool_name), *shared };
  return 0;
}

/* The path of the destination's volume NAME in POOL (its pool refreshed), or NULL. */
static char *dest_vol_path(struct move *m, const char *pool_name, const char *vol)
{
  CLEANUP_VIRPOOL virStoragePoolPtr dp = virStoragePoolLookupByName(m->dst.conn, pool_name);
  if (!dp) { virResetLastError(); return NULL; }
  CLEANUP_VIRVOL virStorageVolPtr dv = virStorageVolLookupByName(dp, vol);
  char *p = dv ? virStorageVolGetPath(dv) : NULL;
  virResetLastError();
  return p;
}

/* Where a copied disk goes: the same-named pool there (a default pool is defined
 * when missing, as on any host vmkit uses), the same volume name. */
static char *dest_copy_path(struct move *m, const char *pool_name, const char *vol, int *rc)
{
  CLEANUP_VIRPOOL virStoragePoolPtr dp = NULL;
  *rc = vm_pool_open(m->dst.conn, pool_name, &dp);
  if (*rc) return NULL;
  CLEANUP_FREE char *target = vm_pool_target(dp);
  if (!target) { *rc = VM_EXIT_FAIL; return NULL; }
  return vm_strdup_printf("%s/%s", target, vol);
}

struct space_need {
  char *pool;
  uint64_t bytes;
};

static void need_space(struct space_need *v, size_t *n, const char *pool, uint64_t bytes)
{
  for (size_t i = 0; i < *n; i++)
    if (strcmp(v[i].pool, pool) == 0) { v[i].bytes += bytes; return; }
  v[(*n)++] = (struct space_need){ vm_strdup(pool), bytes };
}

static void check_disks(struct move *m)
{
  struct space_need need[VM_MAX_DEVS * 4];
  size_t nneed = 0;
  for (size_t i = 0; i < m->ndisks; i++) {
    struct mdisk *d = &m->disks[i];
    CLEANUP_FREE char *what = vm_strdup_printf("storage %s", d->target);
    struct vm_imginfo info;
    int rc = vm_image_info(m->src.conn, d->src_path, &info);
    if (rc) {
      check_add(m, what, VM_EXIT_STATE, "disk %s (%s): %s", d->target, d->src_path, vm_last_error());
      continue;
    }
    d->capacity = info.capacity;
    d->allocation = info.allocation;
    bool in_pool = info.in_pool;
    if (info.pool) d->pool = vm_strdup(info.pool);
    vm_imginfo_free(&info);
    if (!in_pool) {
      check_add(m, what, VM_EXIT_STATE,
                "disk %s (%s) is in no storage pool: vmmigrate cannot tell whether %s sees it", d->target,
                d->src_path, m->dst.label);
      continue;
    }
    CLEANUP_FREE char *path_copy = vm_strdup(d->src_path);
    d->vol = vm_strdup(basename(path_copy));
    struct vm_strv chain = { 0 };
    if ((rc = vm_image_chain(m->src.conn, d->src_path, &chain))) {
      check_add(m, what, VM_EXIT_STATE, "disk %s: %s", d->target, vm_last_error());
      vm_strv_free(&chain);
      continue;
    }
    for (size_t k = 1; k < chain.n; k++) vm_strv_add(&d->chain, chain.v[k]);
    vm_strv_free(&chain);

    bool shared = false;
    if ((rc = pool_shared(m, d->pool, &shared))) {
      check_add(m, what, VM_EXIT_STATE, "disk %s: cannot probe pool '%s': %s", d->target, d->pool, vm_last_error());
      continue;
    }
    if (shared) {
      d->how = D_SHARED;
      d->dst_path = dest_vol_path(m, d->pool, d->vol);
      if (!d->dst_path) {
        check_add(m, what, VM_EXIT_STATE, "disk %s: pool '%s' is shared with %s, but %s does not see volume '%s'",
                  d->target, d->pool, m->dst.label, m->dst.label, d->vol);
        continue;
      }
      check_add(m, what, 0, "disk %s: pool '%s' is shared with %s", d->target, d->pool, m->dst.label);
      continue;
    }
    if (m->live && mo.copy == COPY_NONE) {
      check_add(m, what, VM_EXIT_STATE,
                "disk %s (%s) is not on storage that %s shares: use --copy-storage", d->target, d->src_path,
                m->dst.label);
      continue;
    }
    if (d->readonly || (d->device && strcmp(d->device, "cdrom") == 0)) {
      if (m->live) {
        check_add(m, what, VM_EXIT_STATE,
                  "%s %s (%s) is read-only and not on shared storage: a live move copies only writable disks; "
                  "eject it or put it on shared storage", d->device ? d->device : "disk", d->target, d->src_path);
        continue;
      }
    }
    /* Copied: top only when the destination holds every backing file at its path.
     * A file at the same path there is the same image only when its format and
     * size match and, unless the two hosts share its pool (then it is one file),
     * its content: a template re-made on one host keeps its path and size, and a
     * copy being written by another move has them too. The digests read both
     * whole, once per move; a whole-chain copy (--copy-storage-all, live) needs
     * none of it. */
    /* A plan's first pass (m->ledger) leaves the digests to each move. */
    bool need_same = (!m->live || mo.copy != COPY_ALL) && !m->ledger;
    bool backing_there = true;
    const char *differs = NULL, *missing = NULL, *why = "its format or size differ";
    char why_buf[512];
    for (size_t k = 0; k < d->chain.n; k++) {
      struct vm_imginfo a, b;
      int ra = vm_image_info_quiet(m->src.conn, d->chain.v[k], &a), rb = vm_image_info_quiet(m->dst.conn, d->chain.v[k], &b);
      if (rb != 0) {
        backing_there = false;
        if (!missing) missing = d->chain.v[k];
      } else if (ra == 0 && (a.capacity != b.capacity || !a.format || !b.format || strcmp(a.format, b.format) != 0)) {
        backing_there = false;
        if (!differs) differs = d->chain.v[k];
      } else if (ra == 0 && need_same && !differs) {
        bool bshared = false;
        char da[65], db[65];
        if (!a.pool || pool_shared(m, a.pool, &bshared) != 0 || !bshared) {
          if (vol_digest(m->src.conn, d->chain.v[k], da) != 0 || vol_digest(m->dst.conn, d->chain.v[k], db) != 0) {
            backing_there = false;
            differs = d->chain.v[k];
            snprintf(why_buf, sizeof why_buf, "its content cannot be compared: %s", vm_last_error());
            why = why_buf;
          } else if (strcmp(da, db) != 0) {
            backing_there = false;
            differs = d->chain.v[k];
            why = "its content differs (SHA-256)";
          }
        }
      }
      if (ra == 0) vm_imginfo_free(&a);
      if (rb == 0) vm_imginfo_free(&b);
    }
    if (vm_interrupted()) return;
    /* An offline copy keeps the chain, and a top-only copy stands on it: neither
     * can stand on another image. A live copy flattens the chain instead. */
    if (differs && (mo.copy == COPY_TOP || !m->live)) {
      check_add(m, what, VM_EXIT_STATE, "disk %s: %s has another image at %s (%s): "
                "refusing to stand the copy on it", d->target, m->dst.label, differs, why);
      continue;
    }
    if (mo.copy == COPY_TOP && !backing_there) {
      check_add(m, what, VM_EXIT_STATE, "disk %s: %s lacks its backing file %s (push the template, or use "
                "--copy-storage-all)", d->target, m->dst.label, missing ? missing : "?");
      continue;
    }
    d->how = d->chain.n == 0 || (backing_there && mo.copy != COPY_ALL) ? D_COPY_TOP : D_COPY_ALL;
    d->dst_path = dest_copy_path(m, d->pool, d->vol, &rc);
    if (!d->dst_path) {
      check_add(m, what, rc == VM_EXIT_NOTFOUND ? VM_EXIT_STATE : rc, "disk %s: %s", d->target, vm_last_error());
      continue;
    }
    if (vm_path_exists(m->dst.conn, d->dst_path)) {
      check_add(m, what, VM_EXIT_STATE, "disk %s: %s has a volume at %s already", d->target, m->dst.label,
                d->dst_path);
      continue;
    }
    uint64_t bytes = d->allocation;
    if (d->how == D_COPY_ALL) {
      /* Live: QEMU's mirror writes the flattened image (at most the disk's size).
       * Offline: the chain's files that the destination lacks are copied as they are,
       * at their own paths, which the destination's pools must hold. */
      for (size_t k = 0; k < d->chain.n; k++) {
        struct vm_imginfo bi;
        if (vm_image_info_quiet(m->src.conn, d->chain.v[k], &bi) == 0) {
          bool absent = !vm_path_exists(m->dst.conn, d->chain.v[k]);
          if (m->live || absent) bytes += bi.allocation;
          if (!m->live && absent) {
            CLEANUP_FREE char *bp = bi.pool ? dest_copy_path(m, bi.pool, strrchr(bi.path, '/') + 1, &rc) : NULL;
            if (!bp || strcmp(bp, bi.path) != 0) {
              check_add(m, what, VM_EXIT_STATE,
                        "disk %s: its backing file %s cannot go to the same path on %s (no pool '%s' there at that "
                        "folder)", d->target, bi.path, m->dst.label, bi.pool ? bi.pool : "?");
              vm_imginfo_free(&bi);
              goto next;
            }
            vm_strv_add(&d->copy_chain, bi.path);
          }
          vm_imginfo_free(&bi);
        }
      }
      if (m->live && bytes > d->capacity) bytes = d->capacity;
    }
    need_space(need, &nneed, d->pool, bytes);
    check_add(m, what, 0, "disk %s: copied to %s (%s)", d->target, d->dst_path,
              d->how == D_COPY_TOP ? "top image only: the backing files are there"
                                   : d->chain.n ? (m->live ? "whole chain, flattened" : "whole chain")
                                                : "a single image");
  next:;
  }
  /* Space in each destination pool, after what earlier moves of a plan take. */
  for (size_t i = 0; i < nneed; i++) {
    CLEANUP_FREE char *what = vm_strdup_printf("space %s", need[i].pool);
    CLEANUP_VIRPOOL virStoragePoolPtr dp = virStoragePoolLookupByName(m->dst.conn, need[i].pool);
    virStoragePoolInfo pi;
    if (!dp || virStoragePoolRefresh(dp, 0) < 0 || virStoragePoolGetInfo(dp, &pi) < 0) {
      check_add(m, what, VM_EXIT_STATE, "cannot read the free space of pool '%s' on %s: %s", need[i].pool,
                m->dst.label, vm_virt_message());
    } else {
      int64_t avail = (int64_t)pi.available - ledger_get(m->ledger, key_uri(&m->dst), need[i].pool);
      char a[16], b[16];
      if (avail < (int64_t)need[i].bytes)
        check_add(m, what, VM_EXIT_STATE, "not enough space in pool '%s' on %s: %s needed, %s free", need[i].pool,
                  m->dst.label, vm_format_size(need[i].bytes, a), vm_format_size(avail > 0 ? (uint64_t)avail : 0, b));
      else
        check_add(m, what, 0, "pool '%s' on %s: %s needed, %s free", need[i].pool, m->dst.label,
                  vm_format_size(need[i].bytes, a), vm_format_size((uint64_t)avail, b));
      ledger_add(&m->pending, key_uri(&m->dst), need[i].pool, (int64_t)need[i].bytes);
    }
    virResetLastError();
    free(need[i].pool);
  }
}

/* Memory: what the destination has available (free, buffers and page cache), and
 * what the hosts file lets VMs commit there (memory=), after earlier moves of a plan. */
static void check_memory(struct move *m)
{
  char a[16], b[16], c[16];
  int nparams = 0;
  virNodeMemoryStatsPtr st = NULL;
  uint64_t avail = 0;
  if (virNodeGetMemoryStats(m->dst.conn, VIR_NODE_MEMORY_STATS_ALL_CELLS, NULL, &nparams, 0) == 0 && nparams > 0) {
    st = calloc((size_t)nparams, sizeof *st);
    if (virNodeGetMemoryStats(m->dst.conn, VIR_NODE_MEMORY_STATS_ALL_CELLS, st, &nparams, 0) == 0)
      for (int i = 0; i < nparams; i++)
        if (strcmp(st[i].field, VIR_NODE_MEMORY_STATS_FREE) == 0 || strcmp(st[i].field, VIR_NODE_MEMORY_STATS_BUFFERS) == 0 ||
            strcmp(st[i].field, VIR_NODE_MEMORY_STATS_CACHED) == 0)
          avail += st[i].value * 1024;
    free(st);
  }
  if (!avail) {
    check_add(m, "memory", VM_EXIT_STATE, "cannot read the free memory of %s: %s", m->dst.label, vm_virt_message());
    virResetLastError();
    return;
  }
  int64_t taken = ledger_get(m->ledger, key_uri(&m->dst), NULL);
  int64_t left = (int64_t)avail - taken;
  if (left < (int64_t)m->memory) {
    check_add(m, "memory", VM_EXIT_STATE, "not enough memory on %s: the VM needs %s, %s is available", m->dst.label,
              vm_format_size(m->memory, a), vm_format_size(left > 0 ? (uint64_t)left : 0, b));
    return;
  }
  if (m->dst.mem_cap) {
    /* Committed: the memory of the VMs that run there, plus earlier moves'. */
    uint64_t committed = 0;
    virDomainPtr *doms = NULL;
    int n = virConnectListAllDomains(m->dst.conn, &doms, VIR_CONNECT_LIST_DOMAINS_ACTIVE);
    for (int i = 0; i < n; i++) {
      committed += (uint64_t)virDomainGetMaxMemory(doms[i]) * 1024;
      virDomainFree(doms[i]);
    }
    free(doms);
    virResetLastError();
    int64_t after = (int64_t)committed + taken + (int64_t)m->memory;
    if (after > (int64_t)m->dst.mem_cap) {
      check_add(m, "memory", VM_EXIT_STATE,
                "not enough memory on %s: the VM needs %s, and VMs there would have %s of the %s its memory= "
                "tag allows", m->dst.label, vm_format_size(m->memory, a), vm_format_size((uint64_t)after, b),
                vm_format_size(m->dst.mem_cap, c));
      return;
    }
  }
  check_add(m, "memory", 0, "the VM needs %s, %s has %s available", vm_format_size(m->memory, a), m->dst.label,
            vm_format_size((uint64_t)left, b));
  ledger_add(&m->pending, key_uri(&m->dst), NULL, (int64_t)m->memory);
  ledger_add(&m->pending, key_uri(&m->src), NULL, -(int64_t)m->memory);
}

/* Every libvirt network and bridge the guest's NICs use, present there: a live
 * move keeps the guest on its layer-2 network. */
static void check_networks(struct move *m, xmlXPathContextPtr x)
{
  CLEANUP_XPATHOBJ xmlXPathObjectPtr nics = vm_xpath_nodes(x, "/domain/devices/interface");
  int n = nics && nics->nodesetval ? nics->nodesetval->nodeNr : 0;
  for (int i = 0; i < n; i++) {
    xmlNodePtr nic = nics->nodesetval->nodeTab[i];
    CLEANUP_XMLFREE char *type = vm_xml_prop(nic, "type");
    xmlNodePtr src = vm_xml_find(nic, "source");
    if (!type || !src) continue;
    CLEANUP_XMLFREE char *net = vm_xml_prop(src, "network");
    CLEANUP_XMLFREE char *bridge = vm_xml_prop(src, "bridge");
    CLEANUP_XMLFREE char *dev = vm_xml_prop(src, "dev");
    if (strcmp(type, "network") == 0 && net) {
      CLEANUP_FREE char *what = vm_strdup_printf("network %s", net);
      virNetworkPtr nw = virNetworkLookupByName(m->dst.conn, net);
      if (!nw) check_add(m, what, VM_EXIT_STATE, "%s has no libvirt network '%s'", m->dst.label, net);
      else if (virNetworkIsActive(nw) != 1) check_add(m, what, VM_EXIT_STATE, "libvirt network '%s' is not active on %s", net, m->dst.label);
      else check_add(m, what, 0, "%s has network '%s'", m->dst.label, net);
      if (nw) virNetworkFree(nw);
      virResetLastError();
    } else if ((strcmp(type, "bridge") == 0 && bridge) || (strcmp(type, "direct") == 0 && dev)) {
      const char *ifname = bridge ? bridge : dev;
      CLEANUP_FREE char *what = vm_strdup_printf("%s %s", bridge ? "bridge" : "interface", ifname);
      virInterfacePtr ifc = virInterfaceLookupByName(m->dst.conn, ifname);
      if (ifc) {
        check_add(m, what, 0, "%s has %s '%s'", m->dst.label, bridge ? "bridge" : "interface", ifname);
        virInterfaceFree(ifc);
      } else if (vm_virt_error_code() == VIR_ERR_NO_INTERFACE) {
        check_add(m, what, VM_EXIT_STATE, "%s has no %s '%s'", m->dst.label, bridge ? "bridge" : "interface", ifname);
      } else {
        check_add(m, what, -1, "cannot check %s '%s' on %s: %s", bridge ? "bridge" : "interface", ifname,
                  m->dst.label, vm_virt_message());
      }
      virResetLastError();
    }
    /* Its traffic filter: QEMU does not start there without it. */
    xmlNodePtr fref = vm_xml_find(nic, "filterref");
    CLEANUP_XMLFREE char *filter = fref ? vm_xml_prop(fref, "filter") : NULL;
    if (filter) {
      CLEANUP_FREE char *what = vm_strdup_printf("traffic filter %s", filter);
      /* vmkit's own inbound firewall is the same on every host: what must be there
       * is its base filter, and the move (not a check) makes the firewall there. */
      size_t pl = strlen(VM_INBOUND_FILTER_PREFIX);
      bool ours = strncmp(filter, VM_INBOUND_FILTER_PREFIX, pl) == 0 && filter[pl];
      const char *need = ours ? filter + pl : filter;
      virNWFilterPtr f = virNWFilterLookupByName(m->dst.conn, need);
      bool missing = !f && vm_virt_error_code() == VIR_ERR_NO_NWFILTER;
      CLEANUP_FREE char *err = f || missing ? NULL : vm_strdup(vm_virt_message());
      virResetLastError();
      CLEANUP_FREE char *made = NULL;
      if (f && ours && !mo.check_only && vm_nwfilter_inbound(m->dst.conn, need, &made) != 0) {
        virNWFilterFree(f);
        f = NULL;
        err = vm_strdup("cannot define it there");
      }
      if (f && ours)
        check_add(m, what, 0, "%s has traffic filter '%s'%s", m->dst.label, need,
                  mo.check_only ? ", which the move's firewall stands on" : ", and the firewall on it");
      else if (f) check_add(m, what, 0, "%s has traffic filter '%s'", m->dst.label, filter);
      else if (missing) check_add(m, what, VM_EXIT_STATE, "%s has no traffic filter '%s'", m->dst.label, need);
      else check_add(m, what, -1, "cannot check traffic filter '%s' on %s: %s", need, m->dst.label, err);
      if (f) virNWFilterFree(f);
      virResetLastError();
    }
  }
}

/* Encrypted disks: their keys must reach the destination before the VM runs
 * there, from the keys this machine keeps (libvirt does not hand a private secret
 * back). The check looks; the move (dest_volumes_create) defines them. */
static void check_keys(struct move *m)
{
  vm_strv_free(&m->keys_missing);
  for (size_t i = 0; i < m->keys.n; i++) {
    const char *u = m->keys.v[i];
    CLEANUP_FREE char *what = vm_strdup_printf("disk key %s", u);
    virSecretPtr s = virSecretLookupByUUIDString(m->dst.conn, u);
    if (s) {
      virSecretFree(s);
      check_add(m, what, 0, "%s has the disk key", m->dst.label);
      continue;
    }
    bool missing = vm_virt_error_code() == VIR_ERR_NO_SECRET;
    CLEANUP_FREE char *err = missing ? NULL : vm_strdup(vm_virt_message());
    virResetLastError();
    CLEANUP_FREE char *kp = vm_key_path(u);
    if (!missing) {
      check_add(m, what, -1, "cannot look up the disk key on %s: %s", m->dst.label, err);
    } else if (access(kp, R_OK) != 0) {
      check_add(m, what, VM_EXIT_STATE, "%s lacks the disk key and this machine does not keep it (%s)", m->dst.label,
                kp);
    } else {
      vm_strv_add(&m->keys_missing, u);
      check_add(m, what, 0, "%s lacks the disk key: the move defines it there from %s", m->dst.label, kp);
    }
  }
}

static int preflight_checks(struct move *m);

/* The checks gather their failures and report them as one list: the errors the
 * code under them prints are muted meanwhile. What the move would take is added to
 * a plan's ledger only when every check passed. */
int preflight(struct move *m)
{
  m->checks = json_object_new_array();
  dest_reset();
  vm_errors_mute(true);
  preflight_checks(m);
  vm_errors_mute(false);
  if (m->check_rc == 0 && m->ledger)
    for (size_t i = 0; i < m->pending.n; i++)
      ledger_add(m->ledger, m->pending.v[i].uri, m->pending.v[i].pool, m->pending.v[i].bytes);
  ledger_free(&m->pending);
  return m->check_rc;
}

static int preflight_checks(struct move *m)
{
  /* Not the same host: two daemons of one machine are two hosts, told by UUID. */
  const char *su = vm_conn_host_uuid(m->src.conn), *du = vm_conn_host_uuid(m->dst.conn);
  if (!su || !du) {
    check_add(m, "destination", VM_EXIT_STATE, "%s", vm_last_error());
    return m->check_rc;
  }
  if (strcmp(su, du) == 0) {
    check_add(m, "destination", VM_EXIT_STATE, "'%s' is on %s already", m->name, m->dst.label);
    return m->check_rc;
  }
  check_add(m, "destination", 0, "%s answers (libvirt %s)", m->dst.label, vm_conn_host_name(m->dst.conn));

  /* No VM of that name or UUID there. */
  virDomainPtr other = virDomainLookupByName(m->dst.conn, m->name);
  if (!other) other = virDomainLookupByUUIDString(m->dst.conn, m->uuid);
  virResetLastError();
  if (other) {
    if (strcmp(virDomainGetName(other), m->name) == 0)
      check_add(m, "name", VM_EXIT_STATE, "%s has a VM named '%s' already", m->dst.label, m->name);
    else
      check_add(m, "name", VM_EXIT_STATE, "%s has a VM with the UUID of '%s' already ('%s')", m->dst.label, m->name,
                virDomainGetName(other));
    virDomainFree(other);
  } else {
    check_add(m, "name", 0, "%s has no VM named '%s' and none with its UUID", m->dst.label, m->name);
  }

  /* Snapshots and checkpoints: libvirt moves neither's metadata. */
  int ns = virDomainSnapshotNum(m->dom, 0), nc = virDomainListAllCheckpoints(m->dom, NULL, 0);
  if (ns < 0 || nc < 0)
    check_add(m, "snapshots", VM_EXIT_STATE, "cannot list the snapshots of '%s': %s", m->name, vm_virt_message());
  else if (ns > 0 || nc > 0)
    check_add(m, "snapshots", VM_EXIT_STATE, "'%s' has %d snapshot(s) and %d checkpoint(s): libvirt does not move "
              "their metadata; delete them first (vmsnap delete)", m->name, ns > 0 ? ns : 0, nc > 0 ? nc : 0);
  else
    check_add(m, "snapshots", 0, "no snapshots or checkpoints");
  virResetLastError();

  /* A saved state (virsh managedsave, libvirt-guests at a host's shutdown): a shut
   * -off VM that would resume from it here would boot cold there, its disks taken
   * from a suspended guest. */
  if (!m->live) {
    int saved = virDomainHasManagedSaveImage(m->dom, 0);
    if (saved == 1)
      check_add(m, "saved-state", VM_EXIT_STATE, "'%s' has a saved state (managed save) on %s: libvirt does not move "
                "it; start the VM to resume it, or remove it (virsh managedsave-remove), first", m->name,
                m->src.label);
    else if (saved < 0)
      check_add(m, "saved-state", -1, "cannot tell whether '%s' has a saved state: %s", m->name, vm_virt_message());
    else
      check_add(m, "saved-state", 0, "no saved state");
    virResetLastError();
  }

  if (vm_domain_idle(m->dom, "move") != 0) check_add(m, "jobs", VM_EXIT_STATE, "%s", vm_last_error());
  else check_add(m, "jobs", 0, "no job runs on the VM");

  CLEANUP_XMLDOC xmlDocPtr doc = vm_domain_doc(m->dom, m->live ? 0 : VIR_DOMAIN_XML_INACTIVE);
  if (!doc) {
    check_add(m, "definition", VM_EXIT_FAIL, "%s", vm_last_error());
    return m->check_rc;
  }
  CLEANUP_XPATHCTX xmlXPathContextPtr x = vm_xpath_ctx(doc);

  cpu_check(m, x);
  if (m->live) check_memory(m);
  check_disks(m);
  /* A kernel booted directly must be there at its path (vmrun template push). */
  const char *files[] = { m->kernel, m->initrd };
  for (size_t i = 0; i < 2; i++) {
    if (!files[i]) continue;
    const char *what = i == 0 ? "kernel" : "initrd";
    if (vm_path_exists(m->dst.conn, files[i])) check_add(m, what, 0, "%s has %s", m->dst.label, files[i]);
    else
      check_add(m, what, VM_EXIT_STATE, "%s has no %s %s (push the VM's template there: vmrun template push)",
                m->dst.label, what, files[i]);
  }
  check_networks(m, x);
  check_keys(m);
  return m->check_rc;
}
