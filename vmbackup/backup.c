/* vmbackup backup: every disk of a VM, read from a point-in-time view that
 * libvirt's backup API exports over NBD (pull mode) while the guest runs, cut
 * into chunks at fixed offsets; only the chunks the last checkpoint's dirty
 * bitmap marks are read in an incremental backup, and unallocated or zero
 * ranges never. A shut-off VM is started paused for the backup, so that one
 * path (and its checkpoints) serves both. */
#include <errno.h>
#include <libnbd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libxml/uri.h>
#include <openssl/rand.h>

#include "vmbackup.h"
#include "fs.h"

#define WINDOW (64u << 20) /* block status asked for this much at a time */

struct bdisk {
  char *target, *format, *source;
  uint64_t size;
  bool incremental; /* read only what the bitmap marks */
  char *why;        /* why this disk is read whole */
  char *scratch;    /* the backup job's scratch file on the VM's host */
  const struct vb_mdisk *prev;
};

struct run {
  struct vb_repo *repo;
  virConnectPtr conn;
  virDomainPtr dom;
  const char *vm;
  char uuid[VIR_UUID_STRING_BUFLEN];
  char snap[33], cpname[80];
  char *xml;
  struct bdisk *disks;
  size_t ndisks;
  char *base_cp;             /* the checkpoint an incremental reads from (find_checkpoint) */
  struct vm_strv base_disks; /* the disks it holds a bitmap of */
  struct vb_manifest prevm;  /* its snapshot, when the repository has it (find_base) */
  bool have_prev, quiesce, full, started_paused, job, frozen;
  const char *kind_why;
  char *sockdir, *sock;
  /* A VM of another host: its export is read over TCP (TLS with tls). */
  char *tcp_host;
  int tcp_port;
  bool tls;
  struct vm_strv scratch_made;
  xmlDocPtr journal;
  /* Counters (the workers add to them). */
  atomic_uint_least64_t bytes_read, holes;
  atomic_int error;
  const char *error_why;
};

/* ---- Chunks: hashed, deduplicated, sealed and stored on the workers --------------------- */

struct chunk {
  struct run *run;
  unsigned char *buf;
  size_t len;
  unsigned char *slot;
};

static bool all_zero(const unsigned char *p, size_t n)
{
  static const unsigned char z[4096];
  for (size_t off = 0; off < n; off += sizeof z) {
    size_t k = n - off < sizeof z ? n - off : sizeof z;
    if (memcmp(p + off, z, k)) return false;
  }
  return true;
}

static void chunk_work(void *arg)
{
  struct chunk *c = arg;
  struct run *r = c->run;
  if (atomic_load(&r->error)) goto out;
  if (all_zero(c->buf, c->len)) {
    memset(c->slot, 0, VB_ID_LEN);
    atomic_fetch_add(&r->holes, 1);
    goto out;
  }
  unsigned char id[VB_ID_LEN];
  vb_chunk_id(&r->repo->keys, c->buf, c->len, id);
  if (!vb_repo_claim(r->repo, id)) {
    size_t bound = vb_seal_bound(c->len), reclen;
    unsigned char *rec = malloc(bound);
    if (!rec) abort();
    if (vb_seal(&r->repo->keys, r->repo->cfg.zstd_level, VB_REC_CHUNK, id, c->buf, c->len, rec, &reclen) < 0) {
      atomic_store(&r->error, VM_EXIT_FAIL);
      r->error_why = "cannot compress and seal a chunk";
      /* Its claim stays: no later snapshot of this run may name it. */
      vb_repo_fail(r->repo);
    } else if (vb_repo_append(r->repo, id, rec, reclen, c->len) != 0) {
      atomic_store(&r->error, VM_EXIT_FAIL);
    }
    free(rec);
  }
  memcpy(c->slot, id, VB_ID_LEN);
out:
  free(c->buf);
  free(c);
}

/* ---- Reading a disk over NBD ---------------------------------------------------------------- */

struct extents {
  uint64_t off;     /* where the answer starts */
  uint32_t *alloc;  /* base:allocation: length, flags pairs */
  size_t nalloc;
  uint32_t *dirty;  /* the bitmap's */
  size_t ndirty;
  const char *bitmap_ctx;
};

static int extent_cb(void *user, const char *metacontext, uint64_t offset, uint32_t *entries, size_t n, int *error)
{
  struct extents *x = user;
  uint32_t **dst;
  size_t *dn;
  if (strcmp(metacontext, LIBNBD_CONTEXT_BASE_ALLOCATION) == 0) dst = &x->alloc, dn = &x->nalloc;
  else if (x->bitmap_ctx && strcmp(metacontext, x->bitmap_ctx) == 0) dst = &x->dirty, dn = &x->ndirty;
  else return 0;
  free(*dst);
  *dst = malloc(n * sizeof **dst);
  if (!*dst) abort();
  memcpy(*dst, entries, n * sizeof **dst);
  *dn = n;
  x->off = offset;
  return 0;
}

/* Whether [a, b) meets an extent of pairs whose flags say: has_flag true: any
 * extent with (flags & mask) != 0; false: any with (flags & mask) == 0. The
 * extents begin at base; end: where they stop. */
static bool meets(const uint32_t *e, size_t n, uint64_t base, uint64_t a, uint64_t b, uint32_t mask, bool has_flag,
                  uint64_t *end)
{
  uint64_t pos = base;
  bool hit = false;
  for (size_t i = 0; i + 1 < n; i += 2) {
    uint64_t next = pos + e[i];
    if (next > a && pos < b && (((e[i + 1] & mask) != 0) == has_flag)) hit = true;
    pos = next;
  }
  *end = pos;
  return hit;
}

/* TLS for a TCP export (--tls): the certificates of VMKIT_NBD_TLS_DIR, else
 * /etc/pki/qemu (ca-cert.pem, client-cert.pem, client-key.pem), as QEMU's own
 * NBD client uses them. An empty VMKIT_NBD_TLS_DIR counts as unset. */
static const char *tls_dir(void)
{
  const char *dir = getenv("VMKIT_NBD_TLS_DIR");
  return dir && *dir ? dir : "/etc/pki/qemu";
}

static const char *const tls_files[] = { "ca-cert.pem", "client-cert.pem", "client-key.pem" };

/* Before anything is done to a VM: the three files can be read. libnbd reads
 * them only when it connects, after the backup job has begun; in a folder that
 * is not there it finds nothing and falls back to the system's trusted CAs,
 * without a client certificate, and the server (which checks clients'
 * certificates by default) ends the handshake with a bare "The TLS connection
 * was non-properly terminated". */
static int tls_check_files(void)
{
  const char *dir = tls_dir();
  const char *env = getenv("VMKIT_NBD_TLS_DIR");
  bool named = env && *env;
  for (size_t i = 0; i < sizeof tls_files / sizeof *tls_files; i++) {
    CLEANUP_FREE char *p = vm_strdup_printf("%s/%s", dir, tls_files[i]);
    if (access(p, R_OK) < 0)
      return vm_fail_errno(errno == ENOENT || errno == ENOTDIR ? VM_EXIT_NOTFOUND : VM_EXIT_FAIL,
                           "--tls: cannot read the client's TLS file '%s' (%s)", p,
                           named ? "the folder VMKIT_NBD_TLS_DIR names" : "VMKIT_NBD_TLS_DIR is not set");
  }
  return 0;
}

static int nbd_tls(struct run *r, struct nbd_handle *h)
{
  if (!r->tls) return 0;
  if (nbd_set_tls(h, LIBNBD_TLS_REQUIRE) == -1) return -1;
  return nbd_set_tls_certificates(h, tls_dir());
}

static int nbd_connect_to(struct run *r, struct nbd_handle *h)
{
  if (!r->tcp_host) return nbd_connect_unix(h, r->sock);
  char port[16];
  snprintf(port, sizeof port, "%d", r->tcp_port);
  return nbd_connect_tcp(h, r->tcp_host, port);
}

static struct nbd_handle *nbd_open(struct run *r, struct bdisk *d, const char *bitmap_ctx)
{
  struct nbd_handle *h = nbd_create();
  if (!h) {
    vm_fail(VM_EXIT_FAIL, "libnbd: %s", nbd_get_error());
    return NULL;
  }
  if (nbd_set_export_name(h, d->target) == -1 || nbd_add_meta_context(h, LIBNBD_CONTEXT_BASE_ALLOCATION) == -1 ||
      (bitmap_ctx && nbd_add_meta_context(h, bitmap_ctx) == -1) || nbd_tls(r, h) == -1 || nbd_connect_to(r, h) == -1) {
    if (r->tls)
      vm_fail(VM_EXIT_FAIL, "cannot read disk %s of VM '%s' from its backup export with TLS (our certificates: %s): %s",
              d->target, r->vm, tls_dir(), nbd_get_error());
    else
      vm_fail(VM_EXIT_FAIL, "cannot read disk %s of VM '%s' from its backup export: %s", d->target, r->vm,
              nbd_get_error());
    nbd_close(h);
    return NULL;
  }
  return h;
}

#define INFLIGHT 8
struct pending {
  int64_t cookie;
  struct chunk *c;
  uint64_t off;
};
struct inflight {
  struct pending v[INFLIGHT];
  size_t head, n;
};

/* Waits for the oldest read in flight, hands its chunk to the workers. */
static int retire(struct run *r, struct bdisk *d, struct nbd_handle *h, struct inflight *fl, struct vm_workq *q)
{
  struct pending *p = &fl->v[fl->head];
  int done;
  while ((done = nbd_aio_command_completed(h, p->cookie)) == 0)
    if (nbd_poll(h, -1) == -1) break;
  if (done != 1)
    return vm_fail(VM_EXIT_FAIL, "disk %s of VM '%s': read at %llu: %s", d->target, r->vm, (unsigned long long)p->off,
                   nbd_get_error());
  atomic_fetch_add(&r->bytes_read, p->c->len);
  vm_workq_push(q, chunk_work, p->c);
  fl->head = (fl->head + 1) % INFLIGHT;
  fl->n--;
  return 0;
}

static int read_disk(struct run *r, struct bdisk *d, struct vb_mdisk *md, struct vm_workq *q)
{
  struct inflight fl = { 0 };
  unsigned cs = r->repo->cfg.chunk_size;
  CLEANUP_FREE char *bitmap = vm_strdup_printf("vmbackup-%s", d->target);
  CLEANUP_FREE char *ctx = vm_strdup_printf("qemu:dirty-bitmap:%s", bitmap);
  struct nbd_handle *h = nbd_open(r, d, d->incremental ? ctx : NULL);
  if (!h) return VM_EXIT_FAIL;
  int rc = 0;
  int64_t size = nbd_get_size(h);
  if (size < 0 || (uint64_t)size != d->size) {
    rc = vm_fail(VM_EXIT_FAIL, "disk %s of VM '%s': the export is %lld bytes, the disk %llu", d->target, r->vm,
                 (long long)size, (unsigned long long)d->size);
    goto out;
  }
  if (d->incremental && nbd_can_meta_context(h, ctx) != 1) {
    /* The export has no bitmap: read it all (said so). */
    d->incremental = false;
    d->why = vm_strdup("the backup export offered no dirty bitmap");
  }
  struct extents x = { .bitmap_ctx = d->incremental ? ctx : NULL };
  char label[96];
  snprintf(label, sizeof label, "%s %s", r->vm, d->target);
  for (uint64_t woff = 0; woff < d->size && !rc;) {
    uint64_t want = d->size - woff < WINDOW ? d->size - woff : WINDOW;
    free(x.alloc);
    free(x.dirty);
    x.alloc = x.dirty = NULL;
    x.nalloc = x.ndirty = 0;
    if (nbd_block_status(h, want, woff, (nbd_extent_callback){ .callback = extent_cb, .user_data = &x }, 0) == -1) {
      rc = vm_fail(VM_EXIT_FAIL, "disk %s of VM '%s': block status: %s", d->target, r->vm, nbd_get_error());
      break;
    }
    uint64_t aend = woff, dend = woff;
    meets(x.alloc, x.nalloc, woff, 0, 0, 0, false, &aend);
    if (d->incremental) meets(x.dirty, x.ndirty, woff, 0, 0, 0, false, &dend);
    uint64_t wend = aend;
    if (d->incremental && dend < wend) wend = dend;
    if (wend > woff + want) wend = woff + want;
    /* Whole chunks only (the last one of the disk may be short): a chunk that the
     * answer covers in part waits for the next round. */
    uint64_t first = woff / cs, last = wend >= d->size ? (d->size + cs - 1) / cs : wend / cs;
    if (last <= first) {
      /* The server answered less than a chunk: ask again from the chunk's start. */
      last = first + 1;
    }
    for (uint64_t ci = first; ci < last && !rc; ci++) {
      uint64_t a = ci * cs, b = a + cs > d->size ? d->size : a + cs, end;
      unsigned char *slot = md->ids[ci];
      bool dirty = true;
      if (d->incremental && a >= woff && b <= dend) dirty = meets(x.dirty, x.ndirty, woff, a, b, 1, true, &end);
      if (!dirty) {
        memcpy(slot, d->prev->ids[ci], VB_ID_LEN);
        continue;
      }
      /* Data is what base:allocation does not call zero (holes read as zero). */
      bool data = !(a >= woff && b <= aend) || meets(x.alloc, x.nalloc, woff, a, b, LIBNBD_STATE_ZERO, false, &end);
      if (!data) {
        memset(slot, 0, VB_ID_LEN);
        atomic_fetch_add(&r->holes, 1);
        continue;
      }
      struct chunk *c = malloc(sizeof *c);
      if (!c) abort();
      *c = (struct chunk){ r, malloc(b - a), b - a, slot };
      if (!c->buf) abort();
      /* Several reads in flight: QEMU serves the next while this one crosses. */
      if (fl.n == INFLIGHT && (rc = retire(r, d, h, &fl, q))) {
        free(c->buf);
        free(c);
        break;
      }
      int64_t cookie = nbd_aio_pread(h, c->buf, b - a, a, NBD_NULL_COMPLETION, 0);
      if (cookie == -1) {
        rc = vm_fail(VM_EXIT_FAIL, "disk %s of VM '%s': read at %llu: %s", d->target, r->vm, (unsigned long long)a,
                     nbd_get_error());
        free(c->buf);
        free(c);
        break;
      }
      fl.v[(fl.head + fl.n) % INFLIGHT] = (struct pending){ cookie, c, a };
      fl.n++;
      if (vm_interrupted()) rc = vm_fail_interrupted();
      else if (atomic_load(&r->error)) rc = atomic_load(&r->error);
    }
    vm_progress(label, last * cs > d->size ? d->size : last * cs, d->size);
    woff = last * cs;
  }
  while (!rc && fl.n) rc = retire(r, d, h, &fl, q);
  vm_progress_end();
  free(x.alloc);
  free(x.dirty);
out:
  nbd_shutdown(h, 0);
  nbd_close(h);
  /* Reads still in flight after a failure: their buffers outlive the handle. */
  for (; fl.n; fl.n--, fl.head = (fl.head + 1) % INFLIGHT) {
    free(fl.v[fl.head].c->buf);
    free(fl.v[fl.head].c);
  }
  return rc;
}

/* ---- The libvirt side: disks, checkpoints, the backup job ---------------------------------- */

/* The checkpoints this repository's backups make on a VM: "vmbackup-REPO8-SNAPSHOT". */
static char *cp_prefix(struct vb_repo *repo)
{
  char hex[33];
  vb_hex16(repo->cfg.id, hex);
  return vm_strdup_printf("vmbackup-%.8s-", hex);
}

static int load_disks(struct run *r)
{
  CLEANUP_XMLDOC xmlDocPtr doc = vm_domain_doc(r->dom, VIR_DOMAIN_XML_INACTIVE | VIR_DOMAIN_XML_SECURE);
  if (!doc) return VM_EXIT_FAIL;
  /* Encrypted disks: the backup job's scratch images would hold the guest's old
   * data in clear while it runs, and a restore would make its disks unencrypted. */
  if (vm_domain_encrypted(doc)) return vm_fail(VM_EXIT_STATE, "VM '%s' has encrypted disks, which vmbackup does not back up yet", r->vm);
  struct vm_disk *disks;
  size_t n;
  int rc = vm_domain_disks(doc, &disks, &n);
  if (rc) return rc;
  r->disks = calloc(n + 1, sizeof *r->disks);
  if (!r->disks) abort();
  for (size_t i = 0; i < n; i++) {
    if (!disks[i].device || strcmp(disks[i].device, "disk") != 0) continue;
    if (!disks[i].source || !disks[i].target) {
      vm_disks_free(disks, n);
      return vm_fail(VM_EXIT_STATE, "VM '%s': disk %s has no source to back up", r->vm,
                     disks[i].target ? disks[i].target : "?");
    }
    if (disks[i].type && strcmp(disks[i].type, "file") != 0) {
      int code = vm_fail(VM_EXIT_STATE, "VM '%s': disk %s is a %s disk: only file disks are backed up so far", r->vm,
                         disks[i].target, disks[i].type);
      vm_disks_free(disks, n);
      return code;
    }
    struct bdisk *d = &r->disks[r->ndisks++];
    d->target = vm_strdup(disks[i].target);
    d->format = vm_strdup(disks[i].format ? disks[i].format : "raw");
    d->source = vm_strdup(disks[i].source);
  }
  vm_disks_free(disks, n);
  if (!r->ndisks) return vm_fail(VM_EXIT_STATE, "VM '%s' has no disk to back up", r->vm);
  if (r->ndisks > VB_MANIFEST_MAX_DISKS) return vm_fail(VM_EXIT_STATE, "VM '%s' has more than 64 disks", r->vm);
  char *x = virDomainGetXMLDesc(r->dom, VIR_DOMAIN_XML_INACTIVE | VIR_DOMAIN_XML_SECURE);
  if (!x) return vm_fail_virt("cannot read the definition of '%s'", r->vm);
  r->xml = x;
  return 0;
}

/* The checkpoint the last backup into this repository left on the VM: the
 * newest of the repository's whose snapshot is in the repository (a backup that
 * succeeded deletes the older ones; a killed one leaves its own, which names no
 * snapshot), and the disks it holds a bitmap of, each with the image it had
 * then. From libvirt and the repository's file names alone, before the key is
 * there: it says which disks the backup job may read incrementally; find_base
 * then checks that against the snapshot. */
static int find_checkpoint(struct run *r)
{
  const char *why = NULL;
  if (r->full) {
    why = "a full backup was asked for (--full)";
  } else {
    virDomainCheckpointPtr *cps = NULL;
    int n = virDomainListAllCheckpoints(r->dom, &cps, 0);
    if (n < 0) return vm_fail_virt("cannot list the checkpoints of '%s'", r->vm);
    CLEANUP_FREE char *prefix = cp_prefix(r->repo);
    size_t plen = strlen(prefix);
    long long best = -1;
    for (int i = 0; i < n; i++) {
      const char *name = virDomainCheckpointGetName(cps[i]);
      CLEANUP_FREE char *snap = NULL;
      if (name && strncmp(name, prefix, plen) == 0 && strlen(name) == plen + 32 &&
          strspn(name + plen, "0123456789abcdef") == 32)
        snap = vm_strdup_printf("snapshots/%s", name + plen);
      if (snap && vb_fs_exists(r->repo->fs, snap) == 1) {
        CLEANUP_FREE char *x = virDomainCheckpointGetXMLDesc(cps[i], 0);
        CLEANUP_XMLDOC xmlDocPtr doc = x ? vm_xml_parse(x) : NULL;
        CLEANUP_XPATHCTX xmlXPathContextPtr ctx = doc ? vm_xpath_ctx(doc) : NULL;
        long long t = ctx ? vm_xpath_ll(ctx, "/domaincheckpoint/creationTime", -1) : -1;
        CLEANUP_XPATHOBJ xmlXPathObjectPtr o =
          ctx ? vm_xpath_nodes(ctx, "/domaincheckpoint/disks/disk[@checkpoint='bitmap']/@name") : NULL;
        if (t > best && o) {
          best = t;
          free(r->base_cp);
          r->base_cp = vm_strdup(name);
          vm_strv_free(&r->base_disks);
          /* Each disk as "TARGET SOURCE": an image swapped for another since
           * (the same size, a bitmap of the same name) is not the one whose
           * chunks the snapshot holds. */
          for (int k = 0; o->nodesetval && k < o->nodesetval->nodeNr; k++) {
            xmlChar *v = xmlNodeGetContent(o->nodesetval->nodeTab[k]);
            if (v) {
              CLEANUP_FREE char *lit = vm_xpath_literal((const char *)v);
              CLEANUP_FREE char *q = vm_strdup_printf("/domaincheckpoint/domain/devices/disk[target/@dev=%s]/source/@file", lit);
              CLEANUP_FREE char *src = vm_xpath_str(ctx, q);
              vm_strv_addf(&r->base_disks, "%s %s", (const char *)v, src ? src : "");
            }
            xmlFree(v);
          }
        }
      }
      virDomainCheckpointFree(cps[i]);
    }
    free(cps);
    virResetLastError();
  }
  for (size_t i = 0; i < r->ndisks; i++) {
    struct bdisk *d = &r->disks[i];
    if (why) d->why = vm_strdup(why);
    else if (!r->base_cp) continue; /* the first backup, or the checkpoint gone: find_base says which */
    else if (strcmp(d->format, "qcow2") != 0) d->why = vm_strdup("only qcow2 disks keep dirty bitmaps");
    else {
      size_t tl = strlen(d->target);
      const char *was = NULL;
      for (size_t k = 0; k < r->base_disks.n && !was; k++)
        if (!strncmp(r->base_disks.v[k], d->target, tl) && r->base_disks.v[k][tl] == ' ') was = r->base_disks.v[k] + tl + 1;
      if (!was) d->why = vm_strdup("the disk is new since the last backup");
      else if (strcmp(was, d->source)) d->why = vm_strdup("the disk's image is another since the last backup");
      else d->incremental = true;
    }
  }
  return 0;
}

/* With the key: the snapshot of the base checkpoint, whose chunk ids the
 * disks' clean chunks keep. A disk the job reads incrementally that the
 * snapshot does not hold at this size is read whole after all (the export
 * serves all of it; only its bitmap goes unused). */
static int find_base(struct run *r)
{
  const char *why = NULL;
  if (r->full) return 0;
  if (r->base_cp) {
    CLEANUP_FREE char *prefix = cp_prefix(r->repo);
    struct vb_manifest m;
    vm_errors_mute(true);
    int g = vb_snapshot_get(r->repo, r->base_cp + strlen(prefix), &m);
    vm_errors_mute(false);
    if (g) {
      vm_debug("snapshot of checkpoint %s: %s", r->base_cp, vm_last_error());
      why = "the last backup's snapshot is not in the repository any more (pruned, or unreadable)";
    } else if (strcmp(m.uuid, r->uuid) != 0 || strcmp(m.checkpoint, r->base_cp) != 0) {
      vb_manifest_free(&m);
      why = "the last backup's checkpoint does not match its snapshot";
    } else {
      r->prevm = m;
      r->have_prev = true;
    }
  } else {
    /* No checkpoint of this repository on the VM: say whether the repository
     * has backed it up before (every snapshot read: a full backup follows). */
    struct vm_strv ids = { 0 };
    int rc = vb_snapshot_ids(r->repo, &ids);
    if (rc) return rc;
    bool seen = false;
    for (size_t i = 0; i < ids.n && !seen; i++) {
      struct vb_manifest m;
      vm_errors_mute(true);
      int g = vb_snapshot_get(r->repo, ids.v[i], &m);
      vm_errors_mute(false);
      if (g) {
        vm_warn("snapshot %s is unreadable (%s); run 'vmbackup check'", ids.v[i], vm_last_error());
        continue;
      }
      seen = strcmp(m.uuid, r->uuid) == 0;
      vb_manifest_free(&m);
    }
    vm_strv_free(&ids);
    why = seen ? "the checkpoint of the last backup is gone (the VM redefined, or its checkpoints deleted)"
               : "the first backup of this VM in this repository";
  }
  for (size_t i = 0; i < r->ndisks; i++) {
    struct bdisk *d = &r->disks[i];
    if (why) {
      d->incremental = false;
      if (!d->why) d->why = vm_strdup(why);
      continue;
    }
    if (!d->incremental) continue;
    for (size_t k = 0; k < r->prevm.ndisks; k++)
      if (strcmp(r->prevm.disks[k].target, d->target) == 0) d->prev = &r->prevm.disks[k];
    if (!d->prev || d->prev->size != d->size) {
      d->incremental = false;
      d->why = vm_strdup(d->prev ? "the disk was resized since the last backup" : "the disk is new since the last backup");
    }
  }
  return 0;
}

static int disk_sizes(struct run *r)
{
  for (size_t i = 0; i < r->ndisks; i++) {
    virDomainBlockInfo bi;
    if (virDomainGetBlockInfo(r->dom, r->disks[i].target, &bi, 0) < 0)
      return vm_fail_virt("cannot read the size of disk %s of '%s'", r->disks[i].target, r->vm);
    r->disks[i].size = bi.capacity;
  }
  return 0;
}

/* Where a disk's scratch file goes: beside the disk on the VM's host. */
static char *scratch_path(struct run *r, struct bdisk *d)
{
  CLEANUP_FREE char *copy = vm_strdup(d->source);
  char *slash = strrchr(copy, '/');
  if (!slash) return NULL;
  *slash = 0;
  return vm_strdup_printf("%s/%s.%s.backup-%.12s.scratch", copy, r->vm, d->target, r->snap);
}

static char *backup_xml(struct run *r)
{
  CLEANUP_XMLDOC xmlDocPtr doc = xmlNewDoc(BAD_CAST "1.0");
  xmlNodePtr root = xmlNewNode(NULL, BAD_CAST "domainbackup");
  xmlDocSetRootElement(doc, root);
  vm_xml_set(root, "mode", "pull");
  xmlNodePtr srv = vm_xml_child(root, "server", NULL);
  if (r->tcp_host) {
    vm_xml_set(srv, "transport", "tcp");
    vm_xml_set(srv, "name", r->tcp_host);
    vm_xml_setf(srv, "port", "%d", r->tcp_port);
    if (r->tls) vm_xml_set(srv, "tls", "yes");
  } else {
    vm_xml_set(srv, "transport", "unix");
    vm_xml_set(srv, "socket", r->sock);
  }
  xmlNodePtr disks = vm_xml_child(root, "disks", NULL);
  for (size_t i = 0; i < r->ndisks; i++) {
    struct bdisk *d = &r->disks[i];
    xmlNodePtr x = vm_xml_child(disks, "disk", NULL);
    vm_xml_set(x, "name", d->target);
    vm_xml_set(x, "backup", "yes");
    vm_xml_set(x, "type", "file");
    vm_xml_set(x, "exportname", d->target);
    if (d->incremental) {
      vm_xml_set(x, "backupmode", "incremental");
      vm_xml_set(x, "incremental", r->base_cp);
      vm_xml_setf(x, "exportbitmap", "vmbackup-%s", d->target);
    } else {
      vm_xml_set(x, "backupmode", "full");
    }
    vm_xml_set(vm_xml_child(x, "scratch", NULL), "file", d->scratch);
  }
  return vm_xml_dump(doc);
}

static char *checkpoint_xml(struct run *r)
{
  CLEANUP_XMLDOC xmlDocPtr doc = xmlNewDoc(BAD_CAST "1.0");
  xmlNodePtr root = xmlNewNode(NULL, BAD_CAST "domaincheckpoint");
  xmlDocSetRootElement(doc, root);
  vm_xml_child(root, "name", r->cpname);
  vm_xml_child(root, "description", "made by vmbackup: the next backup reads only what changed since");
  xmlNodePtr disks = vm_xml_child(root, "disks", NULL);
  for (size_t i = 0; i < r->ndisks; i++) {
    xmlNodePtr x = vm_xml_child(disks, "disk", NULL);
    vm_xml_set(x, "name", r->disks[i].target);
    vm_xml_set(x, "checkpoint", strcmp(r->disks[i].format, "qcow2") == 0 ? "bitmap" : "no");
  }
  return vm_xml_dump(doc);
}

/* The socket's folder belongs to the user QEMU runs as (the domain's DAC label),
 * so that QEMU can make the socket there and nobody else can reach it. */
static int make_sockdir(struct run *r)
{
  if (r->tcp_host) return 0;
  r->sockdir = vm_scratch_dir("backup");
  if (!r->sockdir) return VM_EXIT_FAIL;
  r->sock = vm_strdup_printf("%s/nbd.sock", r->sockdir);
  CLEANUP_XMLDOC xmlDocPtr doc = vm_domain_doc(r->dom, 0);
  CLEANUP_XPATHCTX xmlXPathContextPtr x = doc ? vm_xpath_ctx(doc) : NULL;
  CLEANUP_FREE char *label = x ? vm_xpath_str(x, "string(/domain/seclabel[@model='dac']/label)") : NULL;
  unsigned uid, gid;
  if (label && sscanf(label, "+%u:+%u", &uid, &gid) == 2 && chown(r->sockdir, uid, gid) < 0)
    return vm_fail_errno(VM_EXIT_FAIL, "cannot hand '%s' to QEMU's user", r->sockdir);
  return 0;
}

static void journal_update(struct run *r, const char *attr, const char *value)
{
  vm_xml_set(xmlDocGetRootElement(r->journal), attr, value);
  if (vm_journal_write(r->dom, r->journal)) vm_warn("cannot update the journal of '%s'", r->vm);
}

/* Ends the backup job and removes its scratch files (libvirt 9.0 leaves them). */
static void end_job(struct run *r)
{
  if (r->job) {
    if (virDomainAbortJob(r->dom) < 0) vm_debug("ending the backup job: %s", vm_virt_message());
    virResetLastError();
    for (int i = 0; i < 300; i++) {
      virDomainJobInfo ji;
      if (virDomainGetJobInfo(r->dom, &ji) < 0 || ji.type == VIR_DOMAIN_JOB_NONE) break;
      vm_sleep_ms(100);
    }
    r->job = false;
  }
  for (size_t i = 0; i < r->scratch_made.n; i++)
    if (vm_path_delete(r->conn, r->scratch_made.v[i])) vm_warn("scratch file '%s' stays", r->scratch_made.v[i]);
  vm_strv_free(&r->scratch_made);
}

static void thaw(struct run *r)
{
  if (!r->frozen) return;
  if (virDomainFSThaw(r->dom, NULL, 0, 0) < 0)
    vm_warn("cannot thaw the file systems of '%s': %s (the next vmbackup run tries again)", r->vm, vm_virt_message());
  else r->frozen = false;
  journal_update(r, "frozen", r->frozen ? "yes" : "no");
}

/* Removes this repository's older checkpoints from the VM: the newest is the
 * next backup's base; the older ones only cost the guest's writes. */
static void drop_old_checkpoints(struct run *r, const char *keep)
{
  virDomainCheckpointPtr *cps = NULL;
  int n = virDomainListAllCheckpoints(r->dom, &cps, 0);
  if (n < 0) return;
  CLEANUP_FREE char *prefix = cp_prefix(r->repo);
  for (int i = 0; i < n; i++) {
    const char *name = virDomainCheckpointGetName(cps[i]);
    if (name && strncmp(name, prefix, strlen(prefix)) == 0 && (!keep || strcmp(name, keep) != 0) &&
        virDomainCheckpointDelete(cps[i], 0) < 0)
      vm_debug("cannot delete checkpoint %s: %s", name, vm_virt_message());
    virDomainCheckpointFree(cps[i]);
  }
  free(cps);
  virResetLastError();
}

/* What a killed backup left on the VM: a frozen guest, a backup job, its
 * scratch files, a VM started paused for it, a checkpoint without a snapshot. */
int vb_backup_recover(virConnectPtr conn, virDomainPtr dom, const char *vm)
{
  xmlDocPtr rec;
  int rc = vm_journal_read(dom, &rec);
  if (rc || !rec) return rc;
  CLEANUP_FREE char *pid = vm_journal_attr(rec, "pid");
  vm_info("VM '%s': finishing what a killed vmbackup run (pid %s) left", vm, pid ? pid : "?");
  CLEANUP_FREE char *frozen = vm_journal_attr(rec, "frozen");
  CLEANUP_FREE char *paused = vm_journal_attr(rec, "started-paused");
  CLEANUP_FREE char *cp = vm_journal_attr(rec, "checkpoint");
  CLEANUP_FREE char *phase = vm_journal_attr(rec, "phase");
  /* A guest that was shut off or restarted since is not frozen any more. */
  CLEANUP_FREE char *domid = vm_journal_attr(rec, "domain-id");
  /* The domain the killed run worked on: the same ID (a run killed in the
   * instant between starting it paused and recording its ID: still paused). */
  int st0, why0;
  bool active = virDomainIsActive(dom) == 1;
  bool same_run = active && (domid ? (unsigned)atoi(domid) == virDomainGetID(dom)
                                   : virDomainGetState(dom, &st0, &why0, 0) == 0 && st0 == VIR_DOMAIN_PAUSED);
  if (frozen && strcmp(frozen, "yes") == 0 && same_run && virDomainFSThaw(dom, NULL, 0, 0) < 0) {
    int code = vm_fail_virt("cannot thaw the file systems of '%s', frozen by a killed backup", vm);
    xmlFreeDoc(rec);
    return code;
  }
  /* Only a backup job: another (a migration started since) is not ours. */
  struct vm_jobstats js;
  if (same_run && vm_job_stats(dom, false, &js) == 0 && js.type != VIR_DOMAIN_JOB_NONE &&
      js.operation == VIR_DOMAIN_JOB_OPERATION_BACKUP) {
    virDomainAbortJob(dom);
    virDomainJobInfo ji;
    for (int i = 0; i < 300 && virDomainGetJobInfo(dom, &ji) == 0 && ji.type != VIR_DOMAIN_JOB_NONE; i++)
      vm_sleep_ms(100);
  }
  virResetLastError();
  struct vm_strv scratch = { 0 };
  vm_journal_volumes(rec, "scratch", &scratch);
  for (size_t i = 0; i < scratch.n; i++) vm_path_delete(conn, scratch.v[i]);
  vm_strv_free(&scratch);
  /* The checkpoint stays: its snapshot may have been written just before the
   * kill. The next successful backup into that repository drops it with the
   * older ones. */
  (void)cp;
  (void)phase;
  /* Stopped only when it is still the paused start of the killed run (not one
   * a user started, or resumed and paused, since). */
  if (paused && strcmp(paused, "yes") == 0 && same_run) {
    int state, reason;
    if (virDomainGetState(dom, &state, &reason, 0) == 0 && state == VIR_DOMAIN_PAUSED)
      virDomainDestroy(dom);
    virResetLastError();
  }
  xmlFreeDoc(rec);
  return vm_journal_clear(dom);
}

/* The address at which this machine reaches the connection's host. */
static int vb_host_address(virConnectPtr conn, char **out)
{
  *out = NULL;
  char *uri = virConnectGetURI(conn);
  if (!uri) return vm_fail_virt("cannot read the connection's URI");
  struct vm_hosts hosts = { 0 };
  const struct vm_host *h = NULL;
  vm_errors_mute(true); /* no hosts file: the URI alone */
  if (vm_hosts_load(NULL, &hosts) == 0) h = vm_hosts_find_uri(&hosts, uri);
  vm_errors_mute(false);
  const char *tag = h ? vm_host_tag(h, "nbd-address") : NULL;
  const char *mig = h ? vm_host_tag(h, "migrate-uri") : NULL;
  xmlURIPtr u = NULL;
  if (tag) *out = vm_strdup(tag);
  else if (mig && (u = xmlParseURI(mig)) && u->server && *u->server) *out = vm_strdup(u->server);
  if (u) xmlFreeURI(u);
  u = NULL;
  if (!*out && (u = xmlParseURI(uri)) && u->server && *u->server) *out = vm_strdup(u->server);
  if (u) xmlFreeURI(u);
  vm_hosts_free(&hosts);
  int rc = *out ? 0
                : vm_fail(VM_EXIT_USAGE, "cannot tell at which address to read the backup export of %s ('%s'): give "
                                         "it as nbd-address=ADDR in the hosts file", vm_conn_host_name(conn), uri);
  free(uri);
  return rc;
}

/* ---- One VM -------------------------------------------------------------------------------------- */

static void run_free(struct run *r)
{
  for (size_t i = 0; i < r->ndisks; i++) {
    free(r->disks[i].target);
    free(r->disks[i].format);
    free(r->disks[i].source);
    free(r->disks[i].why);
    free(r->disks[i].scratch);
  }
  free(r->disks);
  if (r->have_prev) vb_manifest_free(&r->prevm);
  free(r->base_cp);
  vm_strv_free(&r->base_disks);
  free(r->xml);
  if (r->sockdir) vm_remove_tree(r->sockdir);
  free(r->sockdir);
  free(r->sock);
  free(r->tcp_host);
  vm_strv_free(&r->scratch_made);
  if (r->journal) xmlFreeDoc(r->journal);
}

/* The export's TCP ports on another host: NBD's own port and the 63 after it. */
#define PORT_MIN 10809
#define PORT_SPAN 64

/* virDomainBackupBegin; over TCP, on the next port of the range when QEMU
 * finds one in use (another backup on that host). */
static int begin_call(struct run *r, const char *cx)
{
  int first = (int)(vm_now_ms() % PORT_SPAN);
  for (int attempt = 0;; attempt++) {
    if (r->tcp_host) r->tcp_port = PORT_MIN + (first + attempt) % PORT_SPAN;
    CLEANUP_FREE char *bx = backup_xml(r);
    vm_debug("backup XML: %s", bx);
    int rc = virDomainBackupBegin(r->dom, bx, cx, 0);
    if (rc == 0 || !r->tcp_host || attempt == 20) return rc;
    const char *m = vm_virt_message();
    if (!strstr(m, "in use")) return rc; /* only a port another holds: the next */
    vm_debug("port %d is taken on %s: the next", r->tcp_port, r->tcp_host);
    for (size_t i = 0; i < r->ndisks; i++) vm_path_delete(r->conn, r->disks[i].scratch);
  }
}

static int begin_job(struct run *r)
{
  for (size_t i = 0; i < r->ndisks; i++) {
    r->disks[i].scratch = scratch_path(r, &r->disks[i]);
    if (!r->disks[i].scratch) return vm_fail(VM_EXIT_STATE, "VM '%s': disk %s is no file", r->vm, r->disks[i].target);
    vm_journal_add_volume(r->journal, r->disks[i].scratch, "scratch");
  }
  if (vm_journal_write(r->dom, r->journal)) return VM_EXIT_FAIL;
  if (r->quiesce) {
    r->frozen = true;
    journal_update(r, "frozen", "yes");
    if (virDomainFSFreeze(r->dom, NULL, 0, 0) < 0) {
      int code = vm_fail_virt("cannot freeze the file systems of '%s' (--quiesce needs the guest agent)", r->vm);
      r->frozen = false;
      journal_update(r, "frozen", "no");
      return code == VM_EXIT_FAIL ? VM_EXIT_STATE : code;
    }
  }
  CLEANUP_FREE char *cx = checkpoint_xml(r);
  int rc = begin_call(r, cx);
  bool incr = false;
  for (size_t i = 0; i < r->ndisks; i++) incr |= r->disks[i].incremental;
  /* Only a bitmap libvirt or QEMU will not use is a reason for a full read. */
  const char *why0 = rc < 0 ? vm_virt_message() : "";
  if (rc < 0 && incr && (strcasestr(why0, "bitmap") || strcasestr(why0, "checkpoint"))) {
    /* The bitmap cannot be trusted (lost, inconsistent after a crash, the disk
     * replaced): the whole disks, deduplicated. */
    CLEANUP_FREE char *msg = vm_strdup(vm_virt_message());
    for (size_t i = 0; i < r->ndisks; i++) {
      if (!r->disks[i].incremental) continue;
      r->disks[i].incremental = false;
      r->disks[i].why = vm_strdup_printf("libvirt refused the incremental backup: %s", msg);
    }
    for (size_t i = 0; i < r->ndisks; i++) vm_path_delete(r->conn, r->disks[i].scratch);
    rc = begin_call(r, cx);
  }
  int code = 0;
  if (rc < 0 && r->tls)
    /* Its QEMU's certificates are the host's, not ours: say where they come from. */
    code = vm_fail_virt("cannot begin the backup of '%s' with TLS on %s (its QEMU serves it with the certificates of "
                        "backup_tls_x509_cert_dir in that host's qemu.conf)",
                        r->vm, vm_conn_host_name(r->conn));
  else if (rc < 0)
    code = vm_fail_virt("cannot begin the backup of '%s'", r->vm);

  if (rc == 0) {
    r->job = true;
    for (size_t i = 0; i < r->ndisks; i++) vm_strv_add(&r->scratch_made, r->disks[i].scratch);
  } else {
    for (size_t i = 0; i < r->ndisks; i++) vm_path_delete(r->conn, r->disks[i].scratch);
  }
  thaw(r);
  return code;
}

static json_object *report(struct run *r, int64_t t0)
{
  json_object *o = json_object_new_object();
  json_object_object_add(o, "vm", json_object_new_string(r->vm));
  json_object_object_add(o, "snapshot", json_object_new_string(r->snap));
  bool incr = false;
  for (size_t i = 0; i < r->ndisks; i++) incr |= r->disks[i].incremental;
  json_object_object_add(o, "kind", json_object_new_string(incr ? "incremental" : "full"));
  json_object_object_add(o, "why", json_object_new_string(r->kind_why));
  json_object_object_add(o, "bytes_read", json_object_new_int64((int64_t)atomic_load(&r->bytes_read)));
  json_object_object_add(o, "bytes_new", json_object_new_int64((int64_t)r->repo->new_raw));
  json_object_object_add(o, "bytes_stored", json_object_new_int64((int64_t)r->repo->new_stored));
  json_object_object_add(o, "chunks_new", json_object_new_int64((int64_t)r->repo->new_chunks));
  uint64_t total = 0;
  for (size_t i = 0; i < r->ndisks; i++) total += r->disks[i].size;
  json_object_object_add(o, "disk_bytes", json_object_new_int64((int64_t)total));
  char secs[32];
  double sec = (double)(vm_now_ms() - t0) / 1000.0;
  snprintf(secs, sizeof secs, "%.2f", sec);
  json_object_object_add(o, "seconds", json_object_new_double_s(sec, secs));
  json_object_object_add(o, "quiesced", json_object_new_boolean(r->quiesce));
  json_object_object_add(o, "started_paused", json_object_new_boolean(r->started_paused));
  json_object *jd = json_object_new_array();
  for (size_t i = 0; i < r->ndisks; i++) {
    json_object *d = json_object_new_object();
    json_object_object_add(d, "target", json_object_new_string(r->disks[i].target));
    json_object_object_add(d, "size", json_object_new_int64((int64_t)r->disks[i].size));
    json_object_object_add(d, "kind", json_object_new_string(r->disks[i].incremental ? "incremental" : "full"));
    json_object_object_add(d, "why", json_object_new_string(r->disks[i].incremental
                                                                 ? "the dirty bitmap of the last backup's checkpoint"
                                                                 : r->disks[i].why));
    json_object_array_add(jd, d);
  }
  json_object_object_add(o, "disks", jd);
  return o;
}

static int backup_vm(struct vb_repo *repo, virConnectPtr conn, const char *name, bool full, bool quiesce,
                     const char *tcp_host, bool tls, json_object *rows)
{
  int64_t t0 = vm_now_ms();
  struct run r = { .repo = repo, .conn = conn, .vm = name, .full = full, .quiesce = quiesce,
                   .tcp_host = tcp_host ? vm_strdup(tcp_host) : NULL, .tls = tls };
  CLEANUP_VIRDOMAIN virDomainPtr dom = NULL;
  int rc = vm_lookup(conn, name, &dom);
  if (rc) return rc;
  CLEANUP_FREE char *other = NULL;
  if ((rc = vm_lock_and_recover(conn, &dom, name, &other))) return rc;
  r.dom = dom;
  if (other && strcmp(other, "backup") == 0) rc = vb_backup_recover(conn, dom, name);
  else if (other && strcmp(other, "restore") == 0) rc = vb_inplace_recover(conn, dom, name);
  else if (other) rc = vm_fail(VM_EXIT_STATE, "VM '%s' has an unfinished '%s' operation: run its tool first", name, other);
  if (rc) return rc;
  if ((rc = vm_domain_idle(dom, "back up"))) return rc;
  virDomainGetUUIDString(dom, r.uuid);
  unsigned char sid[16];
  if (RAND_bytes(sid, sizeof sid) != 1) return vm_fail(VM_EXIT_FAIL, "no randomness for a snapshot ID");
  vb_hex16(sid, r.snap);
  CLEANUP_FREE char *prefix = cp_prefix(repo);
  snprintf(r.cpname, sizeof r.cpname, "%s%s", prefix, r.snap);
  char started[32], ended[32];
  vm_iso_time(started);
  repo->new_chunks = repo->new_raw = repo->new_stored = 0;
  if ((rc = load_disks(&r)) || (rc = find_checkpoint(&r))) goto out;
  int state = vm_domain_state(dom);
  if (state == VIR_DOMAIN_SHUTOFF || state == VIR_DOMAIN_CRASHED) {
    if (quiesce) vm_info("VM '%s' is shut off: its file systems are at rest, --quiesce is not needed", name);
    r.quiesce = false;
  }
  if ((state == VIR_DOMAIN_SHUTOFF || state == VIR_DOMAIN_CRASHED) && virDomainHasManagedSaveImage(dom, 0) == 1) {
    /* Starting it would resume it from its saved memory, and stopping it after
     * would lose that memory. */
    rc = vm_fail(VM_EXIT_STATE, "VM '%s' has a saved memory state (managed save): start it first, or remove the "
                                "state, to back it up", name);
    goto out;
  }
  r.journal = vm_journal_new("backup");
  vm_xml_set(xmlDocGetRootElement(r.journal), "checkpoint", r.cpname);
  if (state == VIR_DOMAIN_SHUTOFF || state == VIR_DOMAIN_CRASHED) {
    /* libvirt makes checkpoints of running VMs only: started paused, its vCPUs never run. */
    vm_xml_set(xmlDocGetRootElement(r.journal), "started-paused", "yes");
    if (vm_journal_write(dom, r.journal)) {
      rc = VM_EXIT_FAIL;
      goto out;
    }
    if (virDomainCreateWithFlags(dom, VIR_DOMAIN_START_PAUSED) < 0) {
      rc = vm_fail_virt("cannot start '%s' paused for its backup", name);
      goto out;
    }
    r.started_paused = true;
  }
  char idbuf[16];
  snprintf(idbuf, sizeof idbuf, "%u", virDomainGetID(dom));
  vm_xml_set(xmlDocGetRootElement(r.journal), "domain-id", idbuf);
  if (r.started_paused && vm_journal_write(dom, r.journal)) {
    rc = VM_EXIT_FAIL;
    goto out;
  }
  if ((rc = disk_sizes(&r)) || (rc = make_sockdir(&r)) || (rc = begin_job(&r))) goto out;
  /* The key, derived meanwhile (vb_repo_open_deferred), for the base snapshot. */
  if ((rc = vb_repo_key(repo)) || (rc = find_base(&r))) goto out;
  bool incr = false;
  for (size_t i = 0; i < r.ndisks; i++) incr |= r.disks[i].incremental;
  r.kind_why = incr ? "the dirty bitmaps of the last backup's checkpoint" : r.disks[0].why;
  for (size_t i = 0; i < r.ndisks; i++)
    if (!r.disks[i].incremental && r.disks[i].why) vm_debug("disk %s read whole: %s", r.disks[i].target, r.disks[i].why);
  /* The manifest's tables, filled by the readers and the workers. */
  struct vb_manifest m = { .snapshot = r.snap, .vm = (char *)name, .uuid = r.uuid,
                           .host = (char *)vm_conn_host_name(conn), .started = started, .ended = ended,
                           .kind = incr ? "incremental" : "full", .checkpoint = r.cpname, .xml = r.xml };
  m.why = (char *)r.kind_why;
  m.ndisks = r.ndisks;
  m.disks = calloc(r.ndisks, sizeof *m.disks);
  if (!m.disks) abort();
  unsigned cs = repo->cfg.chunk_size;
  uint64_t table = 0;
  for (size_t i = 0; i < r.ndisks; i++) {
    m.disks[i].target = r.disks[i].target;
    m.disks[i].format = r.disks[i].format;
    m.disks[i].size = r.disks[i].size;
    m.disks[i].nchunks = (size_t)((r.disks[i].size + cs - 1) / cs);
    table += (uint64_t)m.disks[i].nchunks * 32;
  }
  if (table > VB_MANIFEST_TABLE_MAX) {
    rc = vm_fail(VM_EXIT_STATE, "VM '%s': its disks are too large for one snapshot at this chunk size", name);
  }
  for (size_t i = 0; i < r.ndisks && !rc; i++) {
    m.disks[i].ids = calloc(m.disks[i].nchunks ? m.disks[i].nchunks : 1, VB_ID_LEN);
    if (!m.disks[i].ids) abort();
  }
  struct vm_workq *q = rc ? NULL : vm_workq_new(0, 16);
  for (size_t i = 0; i < r.ndisks && !rc; i++) {
    rc = read_disk(&r, &r.disks[i], &m.disks[i], q);
    if (!rc) vm_workq_drain(q);
  }
  vm_workq_free(q);
  if (!rc && atomic_load(&r.error))
    rc = r.error_why ? vm_fail(VM_EXIT_FAIL, "VM '%s': %s", name, r.error_why) : atomic_load(&r.error);
  if (!rc) rc = vb_repo_flush(repo);
  /* A disk may have been read whole after all (no bitmap on the export). */
  incr = false;
  for (size_t i = 0; i < r.ndisks; i++) incr |= r.disks[i].incremental;
  m.kind = incr ? "incremental" : "full";
  if (!incr) {
    r.kind_why = r.disks[0].why;
    m.why = (char *)r.kind_why;
  }
  vm_iso_time(ended);
  m.bytes_read = atomic_load(&r.bytes_read);
  m.bytes_new = repo->new_raw;
  m.bytes_stored = repo->new_stored;
  if (!rc) rc = vb_snapshot_put(repo, &m);
  for (size_t i = 0; i < r.ndisks; i++) free(m.disks[i].ids);
  free(m.disks);
  if (!rc) {
    journal_update(&r, "phase", "done");
    if (rows) json_object_array_add(rows, report(&r, t0));
  }
out:
  thaw(&r);
  end_job(&r);
  if (r.journal) {
    if (rc == 0) {
      drop_old_checkpoints(&r, r.cpname);
    } else {
      virDomainCheckpointPtr c = virDomainCheckpointLookupByName(dom, r.cpname, 0);
      if (c) {
        virDomainCheckpointDelete(c, 0);
        virDomainCheckpointFree(c);
      }
      virResetLastError();
    }
    int st2 = vm_domain_state(dom);
    if (r.started_paused && st2 == VIR_DOMAIN_PAUSED && virDomainDestroy(dom) < 0)
      vm_warn("cannot stop '%s', started paused for its backup: %s", name, vm_virt_message());
    else if (r.started_paused && st2 != VIR_DOMAIN_PAUSED && st2 != VIR_DOMAIN_SHUTOFF)
      vm_warn("VM '%s', started paused for its backup, was resumed meanwhile: left running", name);
    if (vm_journal_clear(dom)) vm_warn("cannot clear the journal of '%s'", name);
  }
  run_free(&r);
  return rc;
}

static const struct vm_column cols[] = {
  { "vm", "VM", VM_COL_STR },
  { "snapshot", "SNAPSHOT", VM_COL_STR },
  { "kind", "KIND", VM_COL_STR },
  { "bytes_read", "READ", VM_COL_BYTES },
  { "bytes_new", "NEW", VM_COL_BYTES },
  { "bytes_stored", "STORED", VM_COL_BYTES },
  { "seconds", "SECONDS", VM_COL_STR },
  { "why", "WHY", VM_COL_STR },
  { NULL, NULL, 0 },
};

int cmd_backup(int argc, char **argv)
{
  int full = 0, quiesce = 0, tls = 0;
  struct poptOption table[] = {
    { "tls", '\0', POPT_ARG_NONE, &tls, 0,
      "read the export over TCP with TLS (the host's backup TLS certificates; ours in VMKIT_NBD_TLS_DIR, else "
      "/etc/pki/qemu)", NULL },
    { "full", '\0', POPT_ARG_NONE, &full, 0, "read every allocated block, not only what changed since the last backup",
      NULL },
    { "quiesce", '\0', POPT_ARG_NONE, &quiesce, 0,
      "freeze the guest's file systems through its agent while the point in time is taken", NULL },
    VB_POPT_REPO, VM_POPT_LOCK, VM_POPT_COMMON, POPT_TABLEEND
  };
  CLEANUP_POPT poptContext ctx = NULL;
  const char **args;
  int nargs;
  int rc = vm_parse(&ctx, argc, argv, table, "REPO VM...",
                    "Back up every disk of each VM (running, paused or shut off) and its definition into REPO: "
                    "incremental through the dirty bitmap of the last backup's checkpoint when there is one, else "
                    "full; deduplicated, compressed and encrypted either way. Quiet unless -v or -o is given.",
                    2, -1, &args, &nargs);
  if (rc) return rc == VM_DONE ? 0 : rc;
  vm_catch_signals();
  struct vb_repo *repo;
  if ((rc = vb_repo_open_deferred(args[0], vb_passfile, VB_LOCK_SHARED, vm_lock_wait_seconds(), &repo))) return rc;
  if ((rc = vb_repo_load_index(repo, true))) {
    vb_repo_close(repo);
    return rc;
  }
  CLEANUP_VIRCONN virConnectPtr conn = vm_connect();
  if (!conn) {
    vb_repo_close(repo);
    return VM_EXIT_FAIL;
  }
  /* A VM of another host: its exports are read over TCP at the address the
   * hosts file gives that host (nbd-address=, else the host of migrate-uri=),
   * else the host its URI names. */
  CLEANUP_FREE char *tcp_host = NULL;
  bool local = vm_conn_is_local(conn);
  if (local && tls) {
    vb_repo_close(repo);
    return vm_usage_error("--tls is for a VM of another host (this one's export is a Unix socket)");
  }
  if (!local) {
    rc = vb_host_address(conn, &tcp_host);
    if (!rc && tls) rc = tls_check_files();
    if (rc) {
      vb_repo_close(repo);
      return rc;
    }
  }
  CLEANUP_JSON json_object *rows = json_object_new_array();
  int worst = 0;
  for (int i = 1; i < nargs && !vm_interrupted(); i++) {
    int one = backup_vm(repo, conn, args[i], full, quiesce, tcp_host, tls, rows);
    if (one && !worst) worst = one;
    if (repo->key_rc) break; /* a wrong passphrase: the other VMs would fail alike */
  }
  if (vm_interrupted() && !worst) worst = vm_fail_interrupted();
  vb_repo_close(repo);
  if (vm_opts.output || vm_opts.verbose) {
    int prc = vm_print_list(rows, cols);
    if (!worst) worst = prc;
  }
  return worst;
}
