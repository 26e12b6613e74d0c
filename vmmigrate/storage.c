/* The volumes a move makes on the destination (so that a failed move removes
 * exactly those), the source volumes a finished move leaves behind, the
 * destination's definition, and digests of volumes read through libvirt. */
#include <string.h>

#include <openssl/evp.h>

#include "vmmigrate.h"

/* The volumes this run made on the destination, in order. */
static struct vm_strv created;

static int create_one(struct move *m, const char *pool_name, const char *path, const char *format,
                      uint64_t capacity, const char *backing, const char *backing_format, unsigned mode,
                      const char *secret, virStorageVolPtr *out)
{
  CLEANUP_VIRPOOL virStoragePoolPtr dp = NULL;
  int rc = vm_pool_open(m->dst.conn, pool_name, &dp);
  if (rc) return rc;
  const char *name = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
  struct vm_volspec spec = { .name = name, .format = format ? format : "raw", .capacity = capacity,
                             .backing = backing, .backing_format = backing_format, .mode = mode,
                             .secret = secret };
  if ((rc = vm_vol_create(dp, &spec, out))) return rc;
  vm_strv_add(&created, path);
  return 0;
}

static struct vm_strv keys_made;

/* The VM's disk keys on the destination, under the move's record (which names
 * those the destination lacked): defined from the keys kept here, or finished
 * where an interrupted define left one without its value. */
static int dest_keys_define(struct move *m)
{
  for (size_t i = 0; i < m->keys.n; i++) {
    bool made = false;
    int rc = vm_secret_ensure_made(m->dst.conn, m->keys.v[i], m->name, &made);
    if (made) vm_strv_add(&keys_made, m->keys.v[i]);
    if (rc) return rc;
  }
  return 0;
}

/* On failure the caller removes what was made (dest_volumes_remove).
 * Live: empty volumes that QEMU's mirror fills (top only: standing on the same
 * backing files, which the destination holds). Offline: the copies themselves,
 * the chain's missing files first. */
int dest_volumes_create(struct move *m, bool copy_data)
{
  int rc = dest_keys_define(m);
  for (size_t i = 0; i < m->ndisks && rc == 0; i++) {
    struct mdisk *d = &m->disks[i];
    if (d->how == D_SHARED) continue;
    if (copy_data) {
      /* Bottom up, so that each file's backing is there before it. */
      for (size_t k = d->copy_chain.n; k-- > 0 && rc == 0;) {
        struct vm_imginfo bi;
        if ((rc = vm_image_info(m->src.conn, d->copy_chain.v[k], &bi))) break;
        CLEANUP_VIRVOL virStorageVolPtr sv = NULL, dv = NULL;
        rc = create_one(m, bi.pool, bi.path, bi.format, bi.capacity, bi.backing, bi.backing_format, 0444, NULL, &dv);
        if (rc == 0 && (rc = vm_vol_find(m->src.conn, bi.path, &sv)) == 0) rc = vm_vol_copy(sv, dv, bi.path);
        vm_imginfo_free(&bi);
      }
      if (rc) break;
      struct vm_imginfo ti;
      if ((rc = vm_image_info(m->src.conn, d->src_path, &ti))) break;
      CLEANUP_VIRVOL virStorageVolPtr sv = NULL, dv = NULL;
      /* The copy is the encrypted image byte for byte: made plain, then written whole. */
      rc = create_one(m, d->pool, d->dst_path, ti.format, ti.capacity, ti.backing, ti.backing_format, 0, NULL, &dv);
      vm_imginfo_free(&ti);
      if (rc == 0 && (rc = vm_vol_find(m->src.conn, d->src_path, &sv)) == 0) rc = vm_vol_copy(sv, dv, d->src_path);
    } else {
      const char *backing = d->how == D_COPY_TOP && d->chain.n ? d->chain.v[0] : NULL;
      CLEANUP_FREE char *bfmt = NULL;
      if (backing) {
        struct vm_imginfo bi;
        if (vm_image_info_quiet(m->src.conn, backing, &bi) == 0) {
          bfmt = bi.format ? vm_strdup(bi.format) : NULL;
          vm_imginfo_free(&bi);
        }
      }
      const char *fmt = d->format ? d->format : "qcow2";
      if (d->how == D_COPY_ALL && strcmp(fmt, "raw") != 0) fmt = "qcow2";
      /* QEMU's mirror fills it through the destination's QEMU, which opens it with
       * the VM's key: encrypted alike (a new LUKS header, the same passphrase). */
      rc = create_one(m, d->pool, d->dst_path, fmt, d->capacity, backing, bfmt, 0, d->secret, NULL);
    }
  }
  return rc;
}

void source_keys_remove(struct move *m)
{
  for (size_t i = 0; i < m->keys.n; i++)
    if (!vm_secret_in_use(m->src.conn, m->keys.v[i], NULL) && vm_secret_remove(m->src.conn, m->keys.v[i], false) != 0)
      vm_warn("cannot remove disk key %s from %s: remove it by hand (virsh secret-undefine)", m->keys.v[i], m->src.label);
}

/* A move starts with nothing made: what an earlier move of the same run (a plan)
 * made belongs to that move's VM, which a later failure must not take. */
void dest_reset(void)
{
  vm_strv_free(&created);
  vm_strv_free(&keys_made);
}

int dest_volumes_remove(struct move *m)
{
  int left = 0;
  for (size_t i = 0; i < keys_made.n; i++)
    if (!vm_secret_in_use(m->dst.conn, keys_made.v[i], NULL) && vm_secret_remove(m->dst.conn, keys_made.v[i], false) != 0)
      vm_warn("kept disk key %s on %s", keys_made.v[i], m->dst.label);
  vm_strv_free(&keys_made);
  for (size_t i = created.n; i-- > 0;) {
    /* Never one that a VM there uses (a move that went on without us). */
    struct vm_strv users = { 0 };
    if (vm_image_users(m->dst.conn, created.v[i], NULL, &users) != 0 || users.n) {
      vm_warn("kept %s on %s: %s", created.v[i], m->dst.label, users.n ? "a VM there uses it" : vm_last_error());
      vm_strv_free(&users);
      left++;
      continue;
    }
    vm_strv_free(&users);
    if (vm_path_delete(m->dst.conn, created.v[i]) != 0) {
      vm_warn("cannot remove %s from %s yet: the next move of '%s' does", created.v[i], m->dst.label, m->name);
      left++;
    }
  }
  vm_strv_free(&created);
  return left;
}

/* The paths of what this run made on the destination (for its record). */
char *const *dest_volumes_created(void)
{
  static char *none[] = { NULL };
  return created.v ? created.v : none;
}

/* After a move that copied them: the VM's own top images on the source (never a
 * backing file, never an image another VM there uses). */
int source_volumes_remove(struct move *m)
{
  for (size_t i = 0; i < m->ndisks; i++) {
    struct mdisk *d = &m->disks[i];
    /* A CD-ROM's image or a read-only disk belongs to a library, not to the VM. */
    if (d->how == D_SHARED || d->readonly) continue;
    struct vm_strv users = { 0 };
    if (vm_image_users(m->src.conn, d->src_path, m->name, &users) != 0 || users.n) {
      vm_warn("kept %s on %s: %s", d->src_path, m->src.label, users.n ? "another VM uses it" : vm_last_error());
      vm_strv_free(&users);
      continue;
    }
    vm_strv_free(&users);
    if (vm_path_delete(m->src.conn, d->src_path) != 0)
      vm_warn("cannot remove %s from %s: remove it by hand", d->src_path, m->src.label);
  }
  vm_storage_changed();
  return 0;
}

char *dest_xml(struct move *m, unsigned flags)
{
  CLEANUP_XMLDOC xmlDocPtr doc = vm_domain_doc(m->dom, flags);
  if (!doc) return NULL;
  CLEANUP_XPATHCTX xmlXPathContextPtr x = vm_xpath_ctx(doc);
  for (size_t i = 0; i < m->ndisks; i++) {
    CLEANUP_FREE char *lit = vm_xpath_literal(m->disks[i].target);
    CLEANUP_FREE char *expr = vm_strdup_printf("/domain/devices/disk[target/@dev=%s]/source", lit);
    CLEANUP_XPATHOBJ xmlXPathObjectPtr o = vm_xpath_nodes(x, expr);
    if (!o || !o->nodesetval || !o->nodesetval->nodeNr) continue;
    xmlNodePtr src = o->nodesetval->nodeTab[0];
    vm_xml_set(src, strcmp(m->disks[i].type, "block") == 0 ? "dev" : "file", m->disks[i].dst_path);
    /* The chain below is the destination's to read from its image. */
    xmlNodePtr disk = src->parent;
    xmlNodePtr bs = vm_xml_find(disk, "backingStore");
    if (bs) {
      xmlUnlinkNode(bs);
      xmlFreeNode(bs);
    }
  }
  return vm_xml_dump(doc);
}

/* A digest of a volume's content as libvirt streams it (holes read as zeros), so
 * that a copy can be compared with its source on another host. */
struct hashing {
  EVP_MD_CTX *md;
};

static int hash_data(virStreamPtr st, const char *buf, size_t len, void *opaque)
{
  struct hashing *h = opaque;
  EVP_DigestUpdate(h->md, buf, len);
  return vm_interrupted() ? -1 : (int)len;
}

static int hash_hole(virStreamPtr st, long long len, void *opaque)
{
  static const char zeros[65536];
  struct hashing *h = opaque;
  while (len > 0) {
    size_t n = len > (long long)sizeof zeros ? sizeof zeros : (size_t)len;
    EVP_DigestUpdate(h->md, zeros, n);
    len -= (long long)n;
  }
  return vm_interrupted() ? -1 : 0;
}

int vol_digest(virConnectPtr conn, const char *path, char out[65])
{
  CLEANUP_VIRVOL virStorageVolPtr vol = NULL;
  int rc = vm_vol_find(conn, path, &vol);
  if (rc) return rc == VM_EXIT_NOTFOUND ? vm_fail(rc, "no volume %s on %s", path, vm_conn_host_name(conn)) : rc;
  struct hashing h = { EVP_MD_CTX_new() };
  EVP_DigestInit_ex(h.md, EVP_sha256(), NULL);
  virStreamPtr st = virStreamNew(conn, 0);
  if (!st || virStorageVolDownload(vol, st, 0, 0, VIR_STORAGE_VOL_DOWNLOAD_SPARSE_STREAM) < 0 ||
      virStreamSparseRecvAll(st, hash_data, hash_hole, &h) < 0 || virStreamFinish(st) < 0) {
    rc = vm_interrupted() ? vm_fail_interrupted() : vm_fail_virt("cannot read %s on %s", path, vm_conn_host_name(conn));
    if (st) virStreamAbort(st);
  }
  if (st) virStreamFree(st);
  unsigned char md[32];
  unsigned n = 0;
  EVP_DigestFinal_ex(h.md, md, &n);
  EVP_MD_CTX_free(h.md);
  for (unsigned i = 0; i < 32; i++) sprintf(out + 2 * i, "%02x", md[i]);
  return rc;
}
