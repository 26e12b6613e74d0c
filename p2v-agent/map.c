/* What of a disk must be read: partitions and their file systems found with
 * libblkid (each partition probed at its offset in the whole disk, so no partition
 * device node is needed), the free blocks of ext2/3/4 from their block bitmaps
 * through libext2fs (opened at the partition's offset), swap areas. Everything
 * else is read; ranges that turn out all zeros become holes when they are read. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <blkid/blkid.h>
#include <ext2fs/ext2fs.h>

#include "agent.h"

static void copy_value(blkid_probe pr, const char *name, char *out, size_t len)
{
  const char *v = NULL;
  size_t vl = 0;
  out[0] = 0;
  if (blkid_probe_lookup_value(pr, name, &v, &vl) == 0 && v) {
    size_t k = strnlen(v, vl);
    if (k >= len) k = len - 1;
    memcpy(out, v, k);
    out[k] = 0;
  }
}

/* Probes [off, off+size) of the open disk for a file system or swap. */
static void probe_fs(int fd, uint64_t off, uint64_t size, struct pa_part *p)
{
  blkid_probe pr = blkid_new_probe();
  if (!pr) return;
  if (blkid_probe_set_device(pr, fd, (blkid_loff_t)off, (blkid_loff_t)size) == 0) {
    blkid_probe_enable_superblocks(pr, 1);
    blkid_probe_set_superblocks_flags(pr, BLKID_SUBLKS_TYPE | BLKID_SUBLKS_UUID | BLKID_SUBLKS_LABEL);
    blkid_probe_enable_partitions(pr, 0);
    if (blkid_do_safeprobe(pr) == 0) {
      copy_value(pr, "TYPE", p->fstype, sizeof p->fstype);
      copy_value(pr, "UUID", p->uuid, sizeof p->uuid);
      copy_value(pr, "LABEL", p->label, sizeof p->label);
    }
  }
  blkid_free_probe(pr);
}

int pa_partitions(const char *path, uint64_t disk_size, struct pa_part **parts, size_t *n, char table[16])
{
  *parts = NULL;
  *n = 0;
  table[0] = 0;
  CLEANUP_CLOSE int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return vm_fail_errno(errno == ENOENT ? VM_EXIT_NOTFOUND : VM_EXIT_FAIL, "cannot open '%s'", path);
  blkid_probe pr = blkid_new_probe();
  if (!pr || blkid_probe_set_device(pr, fd, 0, (blkid_loff_t)disk_size) != 0) {
    if (pr) blkid_free_probe(pr);
    return vm_fail(VM_EXIT_FAIL, "cannot probe '%s' with libblkid", path);
  }
  blkid_probe_enable_partitions(pr, 1);
  blkid_probe_set_partitions_flags(pr, BLKID_PARTS_ENTRY_DETAILS);
  blkid_probe_enable_superblocks(pr, 0);
  blkid_partlist pl = blkid_probe_get_partitions(pr);
  int np = pl ? blkid_partlist_numof_partitions(pl) : 0;
  struct pa_part *v = calloc(np > 0 ? (size_t)np : 1, sizeof *v);
  if (!v) abort();
  if (pl && np > 0) {
    blkid_parttable tab = blkid_partlist_get_table(pl);
    const char *t = tab ? blkid_parttable_get_type(tab) : NULL;
    snprintf(table, 16, "%s", t ? t : "");
    for (int i = 0; i < np; i++) {
      blkid_partition par = blkid_partlist_get_partition(pl, i);
      struct pa_part *p = &v[*n];
      p->number = blkid_partition_get_partno(par);
      p->start = (uint64_t)blkid_partition_get_start(par) * 512;
      p->size = (uint64_t)blkid_partition_get_size(par) * 512;
      const char *ts = blkid_partition_get_type_string(par);
      if (ts) snprintf(p->type, sizeof p->type, "%s", ts);
      else snprintf(p->type, sizeof p->type, "0x%x", blkid_partition_get_type(par));
      p->container = blkid_partition_is_extended(par);
      if (p->start >= disk_size || p->size > disk_size - p->start) continue; /* a table that lies */
      if (!p->container) probe_fs(fd, p->start, p->size, p);
      (*n)++;
    }
  }
  blkid_free_probe(pr);
  if (*n == 0) {
    /* No partition table: perhaps a file system on the whole disk. */
    struct pa_part p = { .number = 0, .start = 0, .size = disk_size };
    probe_fs(fd, 0, disk_size, &p);
    if (p.fstype[0]) v[(*n)++] = p;
  }
  *parts = v;
  return 0;
}

void pa_map_add_free(struct pa_map *m, uint64_t start, uint64_t end, int reason)
{
  if (end <= start) return;
  if (m->nfree && m->free[m->nfree - 1].end == start && m->free[m->nfree - 1].reason == reason) {
    m->free[m->nfree - 1].end = end;
    return;
  }
  if (m->nfree == m->capfree) {
    m->capfree = m->capfree ? m->capfree * 2 : 256;
    m->free = realloc(m->free, m->capfree * sizeof *m->free);
    if (!m->free) abort();
  }
  m->free[m->nfree++] = (struct pa_range){ start, end, reason };
}

/* The free blocks of an ext2/3/4 file system at byte offset off of the disk, from
 * its block bitmaps (libext2fs reads them whether it is mounted or not; a mounted
 * file system's bitmaps on disk may lag its memory: online mode sends what
 * changed in delta passes). Blocks past the partition's end are never marked. */
static int ext_free(const char *path, const struct pa_part *p, struct pa_map *m)
{
  CLEANUP_FREE char *opts = vm_strdup_printf("offset=%llu", (unsigned long long)p->start);
  ext2_filsys fs = NULL;
  errcode_t e = ext2fs_open2(path, opts, EXT2_FLAG_64BITS, 0, 0, unix_io_manager, &fs);
  if (e) {
    vm_strv_addf(&m->notes, "partition %d (%s): cannot open with libext2fs (%s): read whole", p->number, p->fstype,
                 error_message(e));
    return 0;
  }
  /* Bitmaps on disk that may not tell the truth: a journal not yet replayed
   * (blocks of committed transactions still marked free), a file system marked
   * with errors. Such a file system is read whole. */
  if (ext2fs_has_feature_journal_needs_recovery(fs->super) || (fs->super->s_state & EXT2_ERROR_FS)) {
    vm_strv_addf(&m->notes, "partition %d (%s): its journal needs recovery or it has errors: read whole", p->number,
                 p->fstype);
    ext2fs_close_free(&fs);
    return 0;
  }
  e = ext2fs_read_block_bitmap(fs);
  if (e) {
    vm_strv_addf(&m->notes, "partition %d (%s): cannot read its block bitmaps (%s): read whole", p->number, p->fstype,
                 error_message(e));
    ext2fs_close_free(&fs);
    return 0;
  }
  uint64_t bs = EXT2_BLOCK_SIZE(fs->super);
  blk64_t first = fs->super->s_first_data_block, count = ext2fs_blocks_count(fs->super);
  uint64_t limit = p->start + p->size, nfree = 0;
  blk64_t b = first;
  while (b < count) {
    blk64_t z, s;
    if (ext2fs_find_first_zero_block_bitmap2(fs->block_map, b, count - 1, &z) != 0) break;
    if (ext2fs_find_first_set_block_bitmap2(fs->block_map, z, count - 1, &s) != 0) s = count;
    uint64_t a = p->start + z * bs, e2 = p->start + s * bs;
    if (e2 > limit) e2 = limit;
    if (a < e2) {
      pa_map_add_free(m, a, e2, VM_HOLE_FREE);
      nfree += e2 - a;
    }
    b = s;
  }
  char h1[16], h2[16];
  vm_strv_addf(&m->notes, "partition %d (%s): %s of %s free by its block bitmaps", p->number, p->fstype,
               vm_format_size(nfree, h1), vm_format_size(p->size, h2));
  ext2fs_close_free(&fs);
  return 0;
}

static int cmp_swap(const void *a, const void *b)
{
  const struct pa_swap *x = a, *y = b;
  return x->offset < y->offset ? -1 : x->offset > y->offset;
}

static int cmp_range(const void *a, const void *b)
{
  const struct pa_range *x = a, *y = b;
  return x->start < y->start ? -1 : x->start > y->start;
}

/* Sorted, and overlaps merged: the reader walks them forwards only. */
void pa_map_merge(struct pa_map *m)
{
  if (m->nfree) qsort(m->free, m->nfree, sizeof *m->free, cmp_range);
  size_t k = 0;
  for (size_t i = 1; i < m->nfree; i++) {
    if (m->free[i].start <= m->free[k].end && m->free[i].reason == m->free[k].reason) {
      if (m->free[i].end > m->free[k].end) m->free[k].end = m->free[i].end;
    } else if (m->free[i].start < m->free[k].end) {
      /* Overlapping ranges of two kinds: the later starts where the earlier ends. */
      if (m->free[i].end > m->free[k].end) {
        m->free[++k] = m->free[i];
        m->free[k].start = m->free[k - 1].end;
      }
    } else {
      m->free[++k] = m->free[i];
    }
  }
  if (m->nfree) m->nfree = k + 1;
}

int pa_map_disk(const struct pa_disk *d, struct pa_map *m)
{
  memset(m, 0, sizeof *m);
  struct pa_part *parts = NULL;
  size_t n = 0;
  char table[16];
  int rc = pa_partitions(d->path, d->size, &parts, &n, table);
  if (rc) return rc;
  for (size_t i = 0; i < n && !rc; i++) {
    struct pa_part *p = &parts[i];
    if (p->container) continue;
    if (!strcmp(p->fstype, "ext2") || !strcmp(p->fstype, "ext3") || !strcmp(p->fstype, "ext4")) {
      rc = ext_free(d->path, p, m);
    } else if (!strcmp(p->fstype, "swap") && strlen(p->uuid) == 36 && m->nswaps < 16) {
      pa_map_add_free(m, p->start, p->start + p->size, VM_HOLE_SWAP);
      m->swaps = realloc(m->swaps, (m->nswaps + 1) * sizeof *m->swaps);
      if (!m->swaps) abort();
      struct pa_swap *s = &m->swaps[m->nswaps++];
      memset(s, 0, sizeof *s);
      s->offset = p->start;
      s->length = p->size;
      snprintf(s->uuid, sizeof s->uuid, "%s", p->uuid);
      snprintf(s->label, sizeof s->label, "%s", p->label);
      vm_strv_addf(&m->notes, "partition %d (swap): not read, made again on the VM", p->number);
    } else {
      vm_strv_addf(&m->notes, "partition %d (%s): read whole", p->number, p->fstype[0] ? p->fstype : "no file system");
    }
  }
  free(parts);
  pa_map_merge(m);
  if (m->nswaps) qsort(m->swaps, m->nswaps, sizeof *m->swaps, cmp_swap);
  return rc;
}

void pa_map_free(struct pa_map *m)
{
  free(m->free);
  free(m->swaps);
  vm_strv_free(&m->notes);
  memset(m, 0, sizeof *m);
}

void pa_ranges_add(struct pa_ranges *r, uint64_t start, uint64_t end)
{
  if (end <= start) return;
  if (r->n && r->v[r->n - 1].end == start) {
    r->v[r->n - 1].end = end;
    return;
  }
  if (r->n == r->cap) {
    r->cap = r->cap ? r->cap * 2 : 64;
    r->v = realloc(r->v, r->cap * sizeof *r->v);
    if (!r->v) abort();
  }
  r->v[r->n++] = (struct pa_range){ start, end, 0 };
}

void pa_ranges_free(struct pa_ranges *r)
{
  free(r->v);
  memset(r, 0, sizeof *r);
}

struct named_ctx {
  struct pa_ranges *out;
  uint64_t off, bs;
  bool all;
};

/* Each block of an inode's map; blockcnt < 0 for the blocks of the map itself
 * (extent-tree nodes, indirect blocks). */
static int named_block(ext2_filsys fs, blk64_t *blocknr, e2_blkcnt_t blockcnt, blk64_t ref_blk, int ref_offset,
                       void *priv)
{
  struct named_ctx *c = priv;
  if (c->all || blockcnt < 0) pa_ranges_add(c->out, c->off + *blocknr * c->bs, c->off + (*blocknr + 1) * c->bs);
  return 0;
}

static void named_inode(ext2_filsys fs, uint64_t off, ext2_ino_t ino, bool all, struct pa_ranges *out)
{
  uint64_t bs = EXT2_BLOCK_SIZE(fs->super), isz = EXT2_INODE_SIZE(fs->super);
  uint32_t ipg = fs->super->s_inodes_per_group;
  if (ino < 1 || ino > fs->super->s_inodes_count || ipg == 0) return;
  dgrp_t g = (dgrp_t)((ino - 1) / ipg);
  blk64_t it = ext2fs_inode_table_loc(fs, g);
  if (!it) return;
  uint64_t a = off + it * bs + (uint64_t)((ino - 1) % ipg) * isz;
  pa_ranges_add(out, a, a + isz);
  /* A free inode's map is stale: its blocks are free (the bitmaps go again). */
  if (fs->inode_map && !ext2fs_test_inode_bitmap2(fs->inode_map, ino) && ino >= EXT2_FIRST_INO(fs->super)) return;
  struct ext2_inode inode;
  if (ext2fs_read_inode(fs, ino, &inode)) return;
  blk64_t acl = ext2fs_file_acl_block(fs, &inode);
  if (acl) pa_ranges_add(out, off + acl * bs, off + (acl + 1) * bs);
  if (!ext2fs_inode_has_valid_blocks2(fs, &inode)) return;
  struct named_ctx c = { out, off, bs, all };
  ext2fs_block_iterate3(fs, ino, BLOCK_FLAG_READ_ONLY, NULL, named_block, &c);
}

int pa_ext_named(const char *path, uint64_t off, const struct pa_ino *inos, size_t n, struct pa_ranges *out)
{
  CLEANUP_FREE char *opts = vm_strdup_printf("offset=%llu", (unsigned long long)off);
  ext2_filsys fs = NULL;
  errcode_t e = ext2fs_open2(path, opts, EXT2_FLAG_64BITS | EXT2_FLAG_IGNORE_CSUM_ERRORS, 0, 0, unix_io_manager, &fs);
  if (e) return vm_fail(VM_EXIT_FAIL, "cannot open the file system at offset %llu of '%s' with libext2fs: %s",
                        (unsigned long long)off, path, error_message(e));
  if (ext2fs_read_inode_bitmap(fs)) fs->inode_map = NULL;
  for (size_t i = 0; i < n; i++) named_inode(fs, off, (ext2_ino_t)inos[i].ino, inos[i].dir, out);
  /* The reserved inodes (root folder, quota, bad blocks ...) whole, but the
   * journal (only its superblock matters once checkpointed: it says the log is
   * empty) and the resize inode (its blocks are the reserved GDT blocks, which
   * GETFSMAP names). */
  for (ext2_ino_t ino = 1; ino < EXT2_FIRST_INO(fs->super); ino++)
    if (ino != EXT2_JOURNAL_INO && ino != EXT2_RESIZE_INO) named_inode(fs, off, ino, true, out);
  uint32_t extra[] = { fs->super->s_usr_quota_inum, fs->super->s_grp_quota_inum, fs->super->s_prj_quota_inum,
                       fs->super->s_orphan_file_inum };
  for (size_t i = 0; i < sizeof extra / sizeof extra[0]; i++)
    if (extra[i] >= EXT2_FIRST_INO(fs->super)) named_inode(fs, off, extra[i], true, out);
  if (ext2fs_has_feature_journal(fs->super) && fs->super->s_journal_inum) {
    ext2_ino_t j = fs->super->s_journal_inum;
    named_inode(fs, off, j, false, out);
    blk64_t pb = 0;
    if (ext2fs_bmap2(fs, j, NULL, NULL, 0, 0, NULL, &pb) == 0 && pb) {
      uint64_t bs = EXT2_BLOCK_SIZE(fs->super);
      pa_ranges_add(out, off + pb * bs, off + (pb + 1) * bs);
    }
  }
  ext2fs_close_free(&fs);
  return 0;
}
