/* The chunk index of a vmbackup repository (man/vmbackup-repository.5): the index
 * of one pack (index/ID) and the merged index of many (index/merged.N), sorted
 * arrays of fixed-size entries that a lookup searches where they lie (a file
 * mapped into memory), checked whole before use. */
#ifndef VMBACKUP_INDEX_H
#define VMBACKUP_INDEX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VB_PACK_ID_LEN 16
/* Entry sizes: a pack's index (id, offset, record length, raw length) and the
 * merged one (the pack ID added after the id). */
#define VB_IENTRY_PACK 48
#define VB_IENTRY_MERGED 64
/* Magic (8), the pack ID (16; zeros in a merged index), the entry count (8). */
#define VB_INDEX_HEAD 32
#define VB_INDEX_SUM 32

struct vb_ientry {
  unsigned char id[32];
  unsigned char pack[VB_PACK_ID_LEN];
  uint64_t offset;
  uint32_t reclen, rawlen;
};

/* An index file's bytes for n entries (sorted here by id; a repeated id is
 * refused): the index of the pack named by pack, or a merged index of the
 * npacks packs in packs (sorted here; every entry's pack among them). A malloc'd
 * buffer in *out. 0, or -1 with *why. */
int vb_index_encode(bool merged, const unsigned char pack[VB_PACK_ID_LEN], struct vb_ientry *e, size_t n,
                    unsigned char (*packs)[VB_PACK_ID_LEN], size_t npacks, unsigned char **out, size_t *outlen,
                    const char **why);

/* A checked view of an index file's bytes: its kind from the magic, the header,
 * the length against the count, ids in strictly increasing order, the SHA-256.
 * The view points into buf, which must outlive it. */
struct vb_index {
  bool merged;
  unsigned char pack[VB_PACK_ID_LEN];
  const unsigned char *entries, *packs; /* packs: a merged index's, sorted */
  size_t n, size, npacks;
};
int vb_index_check(const unsigned char *buf, size_t len, struct vb_index *ix, const char **why);

/* The entry of id, by binary search: true when found (*out filled; a pack's own
 * index gives its pack ID). */
bool vb_index_find(const struct vb_index *ix, const unsigned char id[32], struct vb_ientry *out);
/* Whether a checked index covers the pack: its own, or one a merged index lists. */
bool vb_index_covers(const struct vb_index *ix, const unsigned char pack[VB_PACK_ID_LEN]);
/* Entry i of a checked index. */
void vb_index_entry(const struct vb_index *ix, size_t i, struct vb_ientry *out);

#endif
