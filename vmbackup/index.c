/* Index files of a vmbackup repository: encoded sorted, checked whole, searched
 * in place (man/vmbackup-repository.5). */
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include "index.h"

static const char magic_pack[8] = { 'V', 'M', 'K', 'I', 'D', 'X', '0', '1' };
static const char magic_merged[8] = { 'V', 'M', 'K', 'M', 'R', 'G', '0', '1' };

static void put_le(unsigned char *p, uint64_t v, int bytes)
{
  for (int i = 0; i < bytes; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get_le(const unsigned char *p, int bytes)
{
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; i--) v = v << 8 | p[i];
  return v;
}

static int by_id(const void *a, const void *b)
{
  return memcmp(((const struct vb_ientry *)a)->id, ((const struct vb_ientry *)b)->id, 32);
}

static int by_pack(const void *a, const void *b) { return memcmp(a, b, VB_PACK_ID_LEN); }

static bool in_packs(const unsigned char *packs, size_t npacks, const unsigned char *pack)
{
  return npacks && bsearch(pack, packs, npacks, VB_PACK_ID_LEN, by_pack) != NULL;
}

int vb_index_encode(bool merged, const unsigned char pack[VB_PACK_ID_LEN], struct vb_ientry *e, size_t n,
                    unsigned char (*packs)[VB_PACK_ID_LEN], size_t npacks, unsigned char **out, size_t *outlen,
                    const char **why)
{
  size_t es = merged ? VB_IENTRY_MERGED : VB_IENTRY_PACK;
  if (!merged) npacks = 0;
  if (n > (SIZE_MAX / 2) / es || npacks > (SIZE_MAX / 2) / VB_PACK_ID_LEN) return *why = "too many entries", -1;
  if (n) qsort(e, n, sizeof *e, by_id);
  for (size_t i = 1; i < n; i++)
    if (memcmp(e[i - 1].id, e[i].id, 32) == 0) return *why = "a chunk id is there twice", -1;
  if (npacks) qsort(packs, npacks, VB_PACK_ID_LEN, by_pack);
  for (size_t i = 1; i < npacks; i++)
    if (memcmp(packs[i - 1], packs[i], VB_PACK_ID_LEN) == 0) return *why = "a pack is listed twice", -1;
  for (size_t i = 0; merged && i < n; i++)
    if (!in_packs(packs[0], npacks, e[i].pack)) return *why = "an entry's pack is not listed", -1;
  size_t len = VB_INDEX_HEAD + n * es + (merged ? 8 + npacks * VB_PACK_ID_LEN : 0) + VB_INDEX_SUM;
  unsigned char *b = calloc(1, len);
  if (!b) return *why = "out of memory", -1;
  memcpy(b, merged ? magic_merged : magic_pack, 8);
  if (!merged) memcpy(b + 8, pack, VB_PACK_ID_LEN);
  put_le(b + 24, n, 8);
  unsigned char *p = b + VB_INDEX_HEAD;
  for (size_t i = 0; i < n; i++) {
    memcpy(p, e[i].id, 32);
    p += 32;
    if (merged) {
      memcpy(p, e[i].pack, VB_PACK_ID_LEN);
      p += VB_PACK_ID_LEN;
    }
    put_le(p, e[i].offset, 8);
    put_le(p + 8, e[i].reclen, 4);
    put_le(p + 12, e[i].rawlen, 4);
    p += 16;
  }
  if (merged) {
    put_le(p, npacks, 8);
    if (npacks) memcpy(p + 8, packs, npacks * VB_PACK_ID_LEN);
  }
  SHA256(b, len - VB_INDEX_SUM, b + len - VB_INDEX_SUM);
  *out = b;
  *outlen = len;
  return 0;
}

int vb_index_check(const unsigned char *buf, size_t len, struct vb_index *ix, const char **why)
{
  if (len < VB_INDEX_HEAD + VB_INDEX_SUM) return *why = "index too short", -1;
  bool merged;
  if (memcmp(buf, magic_pack, 8) == 0) merged = false;
  else if (memcmp(buf, magic_merged, 8) == 0) merged = true;
  else return *why = "not an index of this version", -1;
  size_t es = merged ? VB_IENTRY_MERGED : VB_IENTRY_PACK;
  uint64_t n = get_le(buf + 24, 8), np = 0;
  size_t body = len - VB_INDEX_HEAD - VB_INDEX_SUM;
  if (n > body / es) return *why = "index length does not match its entry count", -1;
  size_t rest = body - (size_t)n * es;
  if (merged) {
    /* The list of packs it covers follows the entries. */
    if (rest < 8) return *why = "index length does not match its entry count", -1;
    np = get_le(buf + VB_INDEX_HEAD + n * es, 8);
    if (np > (rest - 8) / VB_PACK_ID_LEN || 8 + np * VB_PACK_ID_LEN != rest)
      return *why = "index length does not match its pack count", -1;
  } else if (rest != 0) {
    return *why = "index length does not match its entry count", -1;
  }
  unsigned char sum[SHA256_DIGEST_LENGTH];
  SHA256(buf, len - VB_INDEX_SUM, sum);
  if (CRYPTO_memcmp(sum, buf + len - VB_INDEX_SUM, VB_INDEX_SUM) != 0) return *why = "index checksum does not match", -1;
  static const unsigned char zero[VB_PACK_ID_LEN];
  if (merged && memcmp(buf + 8, zero, VB_PACK_ID_LEN) != 0) return *why = "merged index names a pack", -1;
  const unsigned char *e = buf + VB_INDEX_HEAD;
  for (uint64_t i = 1; i < n; i++)
    if (memcmp(e + (i - 1) * es, e + i * es, 32) >= 0) return *why = "index entries out of order", -1;
  const unsigned char *packs = buf + VB_INDEX_HEAD + n * es + 8;
  for (uint64_t i = 1; i < np; i++)
    if (memcmp(packs + (i - 1) * VB_PACK_ID_LEN, packs + i * VB_PACK_ID_LEN, VB_PACK_ID_LEN) >= 0)
      return *why = "index packs out of order", -1;
  for (uint64_t i = 0; merged && i < n; i++)
    if (!in_packs(packs, (size_t)np, e + i * es + 32)) return *why = "index entry of a pack it does not list", -1;
  ix->merged = merged;
  memcpy(ix->pack, buf + 8, VB_PACK_ID_LEN);
  ix->entries = e;
  ix->n = (size_t)n;
  ix->size = es;
  ix->packs = merged ? packs : NULL;
  ix->npacks = (size_t)np;
  return 0;
}

void vb_index_entry(const struct vb_index *ix, size_t i, struct vb_ientry *out)
{
  const unsigned char *p = ix->entries + i * ix->size;
  memcpy(out->id, p, 32);
  p += 32;
  if (ix->merged) {
    memcpy(out->pack, p, VB_PACK_ID_LEN);
    p += VB_PACK_ID_LEN;
  } else {
    memcpy(out->pack, ix->pack, VB_PACK_ID_LEN);
  }
  out->offset = get_le(p, 8);
  out->reclen = (uint32_t)get_le(p + 8, 4);
  out->rawlen = (uint32_t)get_le(p + 12, 4);
}

bool vb_index_covers(const struct vb_index *ix, const unsigned char pack[VB_PACK_ID_LEN])
{
  return ix->merged ? in_packs(ix->packs, ix->npacks, pack) : memcmp(ix->pack, pack, VB_PACK_ID_LEN) == 0;
}

bool vb_index_find(const struct vb_index *ix, const unsigned char id[32], struct vb_ientry *out)
{
  size_t lo = 0, hi = ix->n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    int c = memcmp(ix->entries + mid * ix->size, id, 32);
    if (c == 0) {
      vb_index_entry(ix, mid, out);
      return true;
    }
    if (c < 0) lo = mid + 1;
    else hi = mid;
  }
  return false;
}
