/* Fuzz target: vb_index_check, vb_index_entry, vb_index_find and
 * vb_index_covers, a repository's index files (untrusted bytes,
 * man/vmbackup-repository.5). Each input is checked twice: as it is, and with
 * its SHA-256 made right, so that mutations reach past the checksum. An index
 * that passes lies within its bytes, every entry in order is found by its id and
 * its pack covered, an id it lacks is not found, and vb_index_encode of what it
 * holds gives back the very same bytes. */
#include <stdbool.h>
#include <string.h>

#include <openssl/sha.h>

#include "../../vmbackup/index.h"
#include "fuzz.h"

static bool same_entry(const struct vb_ientry *a, const struct vb_ientry *b)
{
  return memcmp(a->id, b->id, 32) == 0 && memcmp(a->pack, b->pack, VB_PACK_ID_LEN) == 0 && a->offset == b->offset &&
         a->reclen == b->reclen && a->rawlen == b->rawlen;
}

/* An id, as vb_index_find must answer for it: by a look at every entry. */
static void probe(const struct vb_index *ix, const struct vb_ientry *e, const unsigned char id[32])
{
  struct vb_ientry got;
  size_t i = 0;
  while (i < ix->n && memcmp(e[i].id, id, 32) != 0) i++;
  bool found = vb_index_find(ix, id, &got);
  FUZZ_CHECK(found == (i < ix->n));
  FUZZ_CHECK(!found || same_entry(&got, &e[i]));
}

static void check(const unsigned char *buf, size_t len)
{
  struct vb_index ix;
  const char *why = NULL;
  if (vb_index_check(buf, len, &ix, &why) != 0) {
    FUZZ_CHECK(why != NULL);
    return;
  }
  /* Within its bytes: the head, the entries, a merged index's packs, the sum. */
  FUZZ_CHECK(ix.size == (ix.merged ? VB_IENTRY_MERGED : VB_IENTRY_PACK));
  FUZZ_CHECK(ix.entries == buf + VB_INDEX_HEAD);
  FUZZ_CHECK(ix.n <= (len - VB_INDEX_HEAD - VB_INDEX_SUM) / ix.size);
  size_t tail = ix.merged ? 8 + ix.npacks * VB_PACK_ID_LEN : 0;
  FUZZ_CHECK(VB_INDEX_HEAD + ix.n * ix.size + tail + VB_INDEX_SUM == len);
  FUZZ_CHECK(ix.merged ? ix.packs == ix.entries + ix.n * ix.size + 8 : ix.packs == NULL && ix.npacks == 0);

  struct vb_ientry *e = calloc(ix.n + 1, sizeof *e);
  unsigned char(*packs)[VB_PACK_ID_LEN] = calloc(ix.npacks + 1, VB_PACK_ID_LEN);
  FUZZ_CHECK(e && packs);
  for (size_t i = 0; i < ix.npacks; i++) {
    memcpy(packs[i], ix.packs + i * VB_PACK_ID_LEN, VB_PACK_ID_LEN);
    FUZZ_CHECK(i == 0 || memcmp(packs[i - 1], packs[i], VB_PACK_ID_LEN) < 0);
    FUZZ_CHECK(vb_index_covers(&ix, packs[i]));
  }
  for (size_t i = 0; i < ix.n; i++) {
    vb_index_entry(&ix, i, &e[i]);
    FUZZ_CHECK(i == 0 || memcmp(e[i - 1].id, e[i].id, 32) < 0);
    FUZZ_CHECK(vb_index_covers(&ix, e[i].pack));
    probe(&ix, e, e[i].id);
  }
  if (!ix.merged) FUZZ_CHECK(vb_index_covers(&ix, ix.pack));
  /* Ids it may lack: the least, the greatest, one beside each end, its own head. */
  unsigned char id[32];
  memset(id, 0, sizeof id);
  probe(&ix, e, id);
  memset(id, 0xff, sizeof id);
  probe(&ix, e, id);
  for (size_t i = 0; i < ix.n; i += ix.n - 1 ? ix.n - 1 : 1) {
    memcpy(id, e[i].id, 32);
    id[31] ^= 1;
    probe(&ix, e, id);
  }
  probe(&ix, e, buf);

  /* The encoding is canonical: the same entries give the same bytes. */
  unsigned char *out;
  size_t outlen;
  FUZZ_CHECK(vb_index_encode(ix.merged, ix.pack, e, ix.n, packs, ix.npacks, &out, &outlen, &why) == 0);
  FUZZ_CHECK(outlen == len && memcmp(out, buf, len) == 0);
  free(out);
  free(e);
  free(packs);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  check(data, size);
  if (size < VB_INDEX_HEAD + VB_INDEX_SUM) return 0;
  unsigned char *copy = malloc(size);
  FUZZ_CHECK(copy != NULL);
  memcpy(copy, data, size);
  SHA256(copy, size - VB_INDEX_SUM, copy + size - VB_INDEX_SUM);
  check(copy, size);
  free(copy);
  return 0;
}

#ifdef FUZZ_DRIVER
void fuzz_seeds(fuzz_add_fn *add)
{
  unsigned char packs[3][VB_PACK_ID_LEN], pack[VB_PACK_ID_LEN];
  for (int k = 0; k < 3; k++)
    for (int j = 0; j < VB_PACK_ID_LEN; j++) packs[k][j] = (unsigned char)(k * 40 + j);
  memset(pack, 0x5a, sizeof pack);
  struct vb_ientry e[7];
  uint32_t x = 7;
  for (size_t i = 0; i < 7; i++) {
    for (int j = 0; j < 32; j++) e[i].id[j] = (unsigned char)((x = x * 1103515245u + 12345u) >> 24);
    memcpy(e[i].pack, packs[i % 3], VB_PACK_ID_LEN);
    e[i].offset = (uint64_t)i * 300000 + 24;
    e[i].reclen = (uint32_t)(1000 + i);
    e[i].rawlen = 262144;
  }
  /* A pack's index of 0, 1 and 7 entries; a merged one of none, of no entries
   * but 3 packs, of 7 entries in 3 packs. */
  static const struct {
    const char *name;
    bool merged;
    size_t n, npacks;
  } s[] = { { "pack-0", false, 0, 0 },   { "pack-1", false, 1, 0 },   { "pack-7", false, 7, 0 },
            { "merged-0", true, 0, 0 }, { "merged-0-3", true, 0, 3 }, { "merged-7", true, 7, 3 } };
  for (size_t k = 0; k < sizeof s / sizeof *s; k++) {
    unsigned char *buf;
    size_t len;
    const char *why;
    FUZZ_CHECK(vb_index_encode(s[k].merged, pack, e, s[k].n, packs, s[k].npacks, &buf, &len, &why) == 0);
    add(s[k].name, buf, len);
    free(buf);
  }
}
#endif
