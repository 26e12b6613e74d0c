/* p2v-agent send: every disk as p2v-stream(5) records on stdout. Blocks are read
 * in order on this thread, only the ranges the map says are in use (the rest of
 * a block stays zeros); a block with nothing in use, or all zeros once read, is a
 * hole; the others are compressed and hashed on every core and written in order. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/rand.h>
#include <openssl/sha.h>
#include <zstd.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <linux/fs.h>

#include "agent.h"

struct job {
  uint64_t offset;
  uint32_t length;
  int hole;              /* 0: data; else a vm_hole_reason */
  unsigned char *raw, *out;
  size_t outcap, outlen;
  uint32_t codec;
  unsigned char sha[32];
  int level;
  bool done;
  pthread_mutex_t *mu;
  pthread_cond_t *cv;
};

struct sender {
  struct vm_swriter w;
  int out_fd;
  uint32_t bs;
  int level;
  struct vm_workq *q;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  struct job *ring;
  size_t nring;
  /* the hole being gathered, written before the next record */
  struct vm_rec_hole hole;
  bool have_hole;
  unsigned char *refused; /* per disk: see struct rdisk */
  /* counts */
  uint64_t bytes_read, skipped_free, skipped_zero, skipped_swap, blocks_sent, blocks_holes;
};

static __thread ZSTD_CCtx *cctx;

static void compress_job(void *p)
{
  struct job *j = p;
  SHA256(j->raw, j->length, j->sha);
  if (!cctx) {
    cctx = ZSTD_createCCtx();
    if (!cctx) abort();
  }
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, j->level);
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_contentSizeFlag, 1);
  size_t r = ZSTD_compress2(cctx, j->out, j->outcap, j->raw, j->length);
  if (ZSTD_isError(r) || r >= j->length) {
    j->codec = VM_CODEC_STORED;
  } else {
    j->codec = VM_CODEC_ZSTD;
    j->outlen = r;
  }
  pthread_mutex_lock(j->mu);
  j->done = true;
  pthread_cond_broadcast(j->cv);
  pthread_mutex_unlock(j->mu);
}

static int put_hole(struct sender *s)
{
  if (!s->have_hole) return 0;
  unsigned char b[VM_STREAM_HOLE_SIZE];
  vm_rec_hole_encode(b, &s->hole);
  s->have_hole = false;
  return vm_swriter_put(&s->w, VM_REC_HOLE, b, sizeof b, NULL, 0);
}

/* Writes a finished job: a hole joins the one being gathered when it follows it. */
static int put_job(struct sender *s, uint32_t disk, struct job *j, struct vm_digest *dg)
{
  uint64_t block = j->offset / s->bs;
  if (j->hole) {
    vm_digest_zero(dg, block);
    s->blocks_holes++;
    if (s->have_hole && s->hole.reason == (uint32_t)j->hole && s->hole.offset + s->hole.length == j->offset) {
      s->hole.length += j->length;
      return 0;
    }
    if (put_hole(s)) return -1;
    s->hole = (struct vm_rec_hole){ disk, (uint32_t)j->hole, j->offset, j->length };
    s->have_hole = true;
    return 0;
  }
  if (put_hole(s)) return -1;
  vm_digest_set(dg, block, j->sha);
  s->blocks_sent++;
  struct vm_rec_data d = { .disk = disk, .codec = j->codec, .offset = j->offset, .length = j->length };
  memcpy(d.sha, j->sha, 32);
  unsigned char hdr[VM_STREAM_DATA_HEADER];
  vm_rec_data_header(hdr, &d);
  return j->codec == VM_CODEC_ZSTD ? vm_swriter_put(&s->w, VM_REC_DATA, hdr, sizeof hdr, j->out, j->outlen)
                                   : vm_swriter_put(&s->w, VM_REC_DATA, hdr, sizeof hdr, j->raw, j->length);
}

static bool job_done(struct sender *s, struct job *j)
{
  pthread_mutex_lock(&s->mu);
  bool d = j->done;
  pthread_mutex_unlock(&s->mu);
  return d;
}

static void wait_job(struct sender *s, struct job *j)
{
  pthread_mutex_lock(&s->mu);
  while (!j->done) pthread_cond_wait(&s->cv, &s->mu);
  pthread_mutex_unlock(&s->mu);
}

static bool all_zero(const unsigned char *p, size_t n)
{
  const uint64_t *q = (const uint64_t *)p;
  for (size_t i = 0; i < n / 8; i++)
    if (q[i]) return false;
  for (size_t i = n & ~(size_t)7; i < n; i++)
    if (p[i]) return false;
  return true;
}

/* A disk opened for reading. Offline (and online, a disk with no file system
 * mounted), through the page cache, with read-ahead. Online, a disk with one is
 * read with direct I/O where the disk takes it: a mounted file system writes its
 * files' data past the block device's page cache, so a page of it read by an
 * earlier pass can be stale, and POSIX_FADV_DONTNEED does not drop a page the
 * file system still pins (a buffer its journal holds); direct reads see the disk
 * as it is, and leave the server's page cache alone. A disk that refuses direct
 * I/O (a file system without it: tmpfs before Linux 6.6, some FUSE ones) is read
 * through the cache from then on, dropped first. */
struct rdisk {
  int fd;
  bool direct;
  bool frozen;              /* nothing on stderr: said once thawed */
  uint32_t align;           /* of offsets, lengths and buffers for direct reads */
  unsigned char *bounce;    /* for a span that does not fit its block's buffer (the disk's tail) */
  size_t bcap;
  const char *path;
  unsigned char *refused;   /* the disk's, across passes: 1 it refuses direct I/O, 2 and that was said */
};

#define RDISK_INIT { .fd = -1 }

/* Says once per disk that it is read through the cache, unless frozen. */
static void say_refused(unsigned char *refused, const char *path)
{
  if (!refused || *refused != 1) return;
  vm_info("%s: read through the page cache: it refuses direct I/O", path);
  *refused = 2;
}

static void rdisk_buffered(struct rdisk *d)
{
  if (d->direct) {
    int fl = fcntl(d->fd, F_GETFL);
    if (fl >= 0) fcntl(d->fd, F_SETFL, fl & ~O_DIRECT);
    d->direct = false;
  }
  if (d->refused) {
    if (!*d->refused) *d->refused = 1;
    if (!d->frozen) say_refused(d->refused, d->path);
  }
  posix_fadvise(d->fd, 0, 0, POSIX_FADV_DONTNEED);
  posix_fadvise(d->fd, 0, 0, POSIX_FADV_SEQUENTIAL);
}

/* Opens path: direct where refused is given (online) and the disk did not
 * refuse it before. */
static int rdisk_open(struct rdisk *d, const char *path, unsigned char *refused, bool frozen)
{
  *d = (struct rdisk){ .fd = -1, .align = 4096, .path = path, .refused = refused, .frozen = frozen };
  if (refused && !*refused) {
    d->fd = open(path, O_RDONLY | O_CLOEXEC | O_DIRECT);
    d->direct = d->fd >= 0;
    if (d->fd < 0 && errno != EINVAL) return vm_fail_errno(VM_EXIT_FAIL, "cannot open '%s'", path);
  }
  if (d->fd < 0) d->fd = open(path, O_RDONLY | O_CLOEXEC);
  if (d->fd < 0) return vm_fail_errno(VM_EXIT_FAIL, "cannot open '%s'", path);
  int ss = 0;
  struct stat st;
  if (d->direct && fstat(d->fd, &st) == 0 && S_ISBLK(st.st_mode) && ioctl(d->fd, BLKSSZGET, &ss) == 0 &&
      ss > (int)d->align)
    d->align = (uint32_t)ss;
  if (!d->direct) rdisk_buffered(d);
  return 0;
}

static void rdisk_close(struct rdisk *d)
{
  if (d->fd >= 0) close(d->fd);
  free(d->bounce);
  *d = (struct rdisk)RDISK_INIT;
}

/* Reads [off, off+len) into buf; at least need bytes (fewer only at the end of
 * the disk). */
static ssize_t pread_full(int fd, unsigned char *buf, uint64_t off, size_t len, size_t need)
{
  size_t got = 0;
  while (got < len) {
    ssize_t r = pread(fd, buf + got, len - got, (off_t)(off + got));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return -1;
    if (r == 0) break;
    got += (size_t)r;
  }
  if (got < need) {
    errno = EIO;
    return -1;
  }
  return (ssize_t)got;
}

/* The bounce buffer, n bytes at least: grown when needed, ENOMEM when it cannot
 * be (the final pass fills memory on purpose). */
static int rdisk_bounce(struct rdisk *d, size_t n)
{
  if (n <= d->bcap) return 0;
  free(d->bounce);
  d->bounce = NULL;
  d->bcap = 0;
  if (posix_memalign((void **)&d->bounce, d->align, n) != 0) {
    errno = ENOMEM;
    return -1;
  }
  d->bcap = n;
  return 0;
}

/* A direct read of [first, last) of the block at off, len bytes long, into buf
 * (the block's): one read, rounded out to the alignment, straight into buf where
 * the rounded span fits it (block offsets are multiples of the block size, a power
 * of two of 64K or more, and buf is 4096-aligned), else through the bounce buffer
 * (the disk's tail). Bytes around [first, last) may be read too. */
static int read_direct(struct rdisk *d, unsigned char *buf, uint64_t off, size_t len, uint64_t first, uint64_t last)
{
  uint64_t mask = d->align - 1, a = first & ~mask, e = (last + mask) & ~mask;
  size_t n = (size_t)(e - a), need = (size_t)(last - a);
  if (a >= off && e <= off + len && ((uintptr_t)(buf + (a - off)) & mask) == 0)
    return pread_full(d->fd, buf + (a - off), a, n, need) < 0 ? -1 : 0;
  if (rdisk_bounce(d, n) != 0 || pread_full(d->fd, d->bounce, a, n, need) < 0) return -1;
  memcpy(buf + (first - off), d->bounce + (first - a), (size_t)(last - first));
  return 0;
}

/* Reads [first, last) of the block at off, len bytes long, into buf (the
 * block's); direct, bytes around it may be read too. */
static int read_range(struct rdisk *d, unsigned char *buf, uint64_t off, size_t len, uint64_t first, uint64_t last)
{
  if (d->direct) {
    if (read_direct(d, buf, off, len, first, last) == 0) return 0;
    if (errno != EINVAL) return -1;
    /* A file system that takes O_DIRECT at open but not these reads. */
    rdisk_buffered(d);
  }
  return pread_full(d->fd, buf + (first - off), first, (size_t)(last - first), (size_t)(last - first)) < 0 ? -1 : 0;
}

/* Zeros the free ranges of block j, from free range k on. */
static void clear_free(const struct pa_map *m, size_t k, struct job *j)
{
  uint64_t off = j->offset, end = off + j->length;
  for (; k < m->nfree && m->free[k].start < end; k++) {
    uint64_t fs = m->free[k].start > off ? m->free[k].start : off, fe = m->free[k].end < end ? m->free[k].end : end;
    memset(j->raw + (fs - off), 0, (size_t)(fe - fs));
  }
}

/* Fills job j with block [off, off+len): the ranges in use read, the rest zeros.
 * Buffered, each used range is read (read-ahead joins them); direct, one read
 * from the first used byte to the last, the free ranges inside it cleared after,
 * so that fragmented free space costs no more reads. *fi is the first free range
 * that may touch this block or a later one. */
static int fill_block(struct sender *s, struct rdisk *rd, const struct pa_map *m, size_t *fi, struct job *j)
{
  uint64_t off = j->offset, end = off + j->length;
  while (*fi < m->nfree && m->free[*fi].end <= off) (*fi)++;
  /* Walk the block: free ranges inside it are skipped. */
  uint64_t pos = off, used = 0, freed = 0, swapped = 0, first = end, last = off;
  size_t k = *fi;
  while (pos < end) {
    if (k < m->nfree && m->free[k].start <= pos) {
      uint64_t fe = m->free[k].end < end ? m->free[k].end : end;
      if (m->free[k].reason == VM_HOLE_SWAP) swapped += fe - pos;
      else freed += fe - pos;
      pos = fe;
      if (m->free[k].end <= end) k++;
      continue;
    }
    uint64_t ue = k < m->nfree && m->free[k].start < end ? m->free[k].start : end;
    if (!rd->direct && read_range(rd, j->raw, off, j->length, pos, ue) != 0) return -1;
    if (first == end) first = pos;
    last = ue;
    used += ue - pos;
    pos = ue;
  }
  if (used && rd->direct && read_range(rd, j->raw, off, j->length, first, last) != 0) return -1;
  /* Free ranges are zeros: cleared once read, a direct read may have covered them. */
  if (used) clear_free(m, *fi, j);
  s->bytes_read += used;
  if (used == 0) {
    j->hole = swapped && !freed ? VM_HOLE_SWAP : VM_HOLE_FREE;
    s->skipped_free += freed;
    s->skipped_swap += swapped;
  } else if (all_zero(j->raw, j->length)) {
    j->hole = VM_HOLE_ZERO;
    s->skipped_zero += used;
    s->skipped_free += freed;
    s->skipped_swap += swapped;
  } else {
    j->hole = 0;
    s->skipped_free += freed;
    s->skipped_swap += swapped;
  }
  return 0;
}

static int send_swaps(struct sender *s, uint32_t disk, const struct pa_map *m, size_t *si, uint64_t upto)
{
  while (*si < m->nswaps && m->swaps[*si].offset < upto) {
    const struct pa_swap *sw = &m->swaps[(*si)++];
    CLEANUP_JSON json_object *o = json_object_new_object();
    json_object_object_add(o, "disk", json_object_new_int((int)disk));
    json_object_object_add(o, "offset", json_object_new_int64((int64_t)sw->offset));
    json_object_object_add(o, "length", json_object_new_int64((int64_t)sw->length));
    json_object_object_add(o, "uuid", json_object_new_string(sw->uuid));
    json_object_object_add(o, "label", json_object_new_string(sw->label));
    json_object_object_add(o, "pagesize", json_object_new_int((int)sysconf(_SC_PAGESIZE)));
    if (put_hole(s) || vm_swriter_json(&s->w, VM_REC_SWAP, o)) return -1;
  }
  return 0;
}

static bool broken_pipe;

static int fail_write(void)
{
  if (errno == EPIPE) broken_pipe = true;
  if (errno == EPIPE) return vm_fail(VM_EXIT_FAIL, "the reader of the stream went away (broken pipe)");
  return vm_fail_errno(VM_EXIT_FAIL, "cannot write the stream");
}

/* A block read ahead, under the freeze, for the final pass. */
struct pre {
  unsigned char *raw;
  int hole;
};

/* The blocks that the byte ranges touch, sorted, each once. Caller frees. */
static int cmp_u64(const void *a, const void *b)
{
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static uint64_t *blocks_of(const struct pa_ranges *r, uint32_t bs, uint64_t nblocks, size_t *n)
{
  size_t cap = 64, k = 0;
  uint64_t *v = malloc(cap * sizeof *v);
  if (!v) abort();
  for (size_t i = 0; i < r->n; i++) {
    for (uint64_t b = r->v[i].start / bs; b < nblocks && b * bs < r->v[i].end; b++) {
      if (k && v[k - 1] == b) continue;
      if (k == cap) {
        cap *= 2;
        v = realloc(v, cap * sizeof *v);
        if (!v) abort();
      }
      v[k++] = b;
    }
  }
  if (k) qsort(v, k, sizeof *v, cmp_u64);
  size_t u = 0;
  for (size_t i = 0; i < k; i++)
    if (!u || v[i] != v[u - 1]) v[u++] = v[i];
  *n = u;
  return v;
}

static uint32_t block_len(const struct pa_disk *d, uint32_t bs, uint64_t blk)
{
  uint64_t off = blk * bs;
  return (uint32_t)(d->size - off < bs ? d->size - off : bs);
}

/* One pass over one disk: every block (blks NULL), or the blocks listed, read
 * now or taken from pre (read under the freeze). */
static int send_disk(struct sender *s, uint32_t disk, const struct pa_disk *d, unsigned pass, const struct pa_map *m,
                     const uint64_t *blks, size_t nblks, const struct pre *pre, struct vm_digest *dg,
                     struct pa_online *on)
{
  int rc = 0;
  struct rdisk rd = RDISK_INIT;
  /* Direct reads where a file system is mounted (see struct rdisk); a disk with
   * none is read once, as offline. */
  unsigned char *refused = on && pa_online_has_disk(on, disk) ? &s->refused[disk] : NULL;
  if (!pre && rdisk_open(&rd, d->path, refused, false) != 0) return VM_EXIT_FAIL;
  CLEANUP_JSON json_object *b = json_object_new_object();
  json_object_object_add(b, "disk", json_object_new_int((int)disk));
  json_object_object_add(b, "name", json_object_new_string(d->name));
  json_object_object_add(b, "size", json_object_new_int64((int64_t)d->size));
  json_object_object_add(b, "block_size", json_object_new_int64(s->bs));
  json_object_object_add(b, "pass", json_object_new_int((int)pass));
  if (vm_swriter_json(&s->w, VM_REC_DISK_BEGIN, b)) {
    rdisk_close(&rd);
    return fail_write();
  }
  size_t fi = 0, si = 0;
  s->blocks_sent = s->blocks_holes = 0;
  uint64_t count = blks ? nblks : dg->nblocks, head = 0, tail = 0; /* jobs [tail, head) in the ring */
  for (uint64_t i = 0; i < count && !rc; i++) {
    uint64_t blk = blks ? blks[i] : i;
    if (vm_interrupted()) {
      rc = vm_fail_interrupted();
      break;
    }
    if ((i & 63) == 0) {
      if (on && !pre) pa_online_poll(on);
      char what[64];
      snprintf(what, sizeof what, "pass %u: %s", pass, d->name);
      vm_progress(what, i, count);
    }
    struct job *j = &s->ring[head % s->nring];
    if (head - tail == s->nring) {
      /* The ring is full: the oldest job goes out first. */
      wait_job(s, j);
      if (put_job(s, disk, j, dg)) rc = fail_write();
      tail++;
      if (rc) break;
    }
    j->offset = blk * s->bs;
    j->length = block_len(d, s->bs, blk);
    j->done = false;
    j->hole = 0;
    if (pass == 1 && send_swaps(s, disk, m, &si, j->offset + j->length)) {
      /* SWAP records go before any record past their start: flush what is before. */
      rc = fail_write();
      break;
    }
    if (pre) {
      j->hole = pre[i].hole;
      if (!j->hole) memcpy(j->raw, pre[i].raw, j->length);
    } else if (fill_block(s, &rd, m, &fi, j) != 0) {
      rc = vm_fail_errno(VM_EXIT_FAIL, "cannot read '%s' at offset %llu", d->path, (unsigned long long)j->offset);
      break;
    }
    if (j->hole) j->done = true;
    head++;
    if (!j->hole) vm_workq_push(s->q, compress_job, j);
    /* Jobs finished in order go out at once. */
    while (!rc && tail < head && job_done(s, &s->ring[tail % s->nring])) {
      struct job *t = &s->ring[tail % s->nring];
      if (put_job(s, disk, t, dg)) rc = fail_write();
      tail++;
    }
  }
  /* Whatever happened, no worker may still hold a job's buffers. */
  vm_workq_drain(s->q);
  rdisk_close(&rd);
  vm_progress_end();
  while (!rc && tail < head) {
    if (put_job(s, disk, &s->ring[tail % s->nring], dg)) rc = fail_write();
    tail++;
  }
  if (!rc && put_hole(s)) rc = fail_write();
  if (!rc) {
    unsigned char sum[32];
    char hex[65];
    vm_digest_final(dg, sum);
    vm_hex32(sum, hex);
    CLEANUP_JSON json_object *e = json_object_new_object();
    json_object_object_add(e, "disk", json_object_new_int((int)disk));
    json_object_object_add(e, "pass", json_object_new_int((int)pass));
    json_object_object_add(e, "digest", json_object_new_string(hex));
    json_object_object_add(e, "blocks_sent", json_object_new_int64((int64_t)s->blocks_sent));
    json_object_object_add(e, "blocks_holes", json_object_new_int64((int64_t)s->blocks_holes));
    if (vm_swriter_json(&s->w, VM_REC_DISK_END, e)) rc = fail_write();
  }
  return rc;
}

/* After a failure the reader is told why, when the pipe still takes it. */
static void send_abort(struct sender *s)
{
  CLEANUP_JSON json_object *o = json_object_new_object();
  const char *why = vm_last_error();
  json_object_object_add(o, "error", json_object_new_string(why && *why ? why : "p2v-agent failed"));
  vm_swriter_json(&s->w, VM_REC_ABORT, o);
}

/* A copy of a map's free ranges (the swaps stay with the original). */
static void map_copy(struct pa_map *dst, const struct pa_map *src)
{
  memset(dst, 0, sizeof *dst);
  if (!src->nfree) return;
  dst->free = malloc(src->nfree * sizeof *dst->free);
  if (!dst->free) abort();
  memcpy(dst->free, src->free, src->nfree * sizeof *dst->free);
  dst->nfree = dst->capfree = src->nfree;
}

struct counts {
  uint64_t read, free, zero, swap, stream;
  int64_t t;
};

static struct counts counts_now(const struct sender *s)
{
  return (struct counts){ s->bytes_read, s->skipped_free, s->skipped_zero, s->skipped_swap, s->w.bytes, vm_now_ms() };
}

/* What a pass did, on stderr. */
static void say_pass(const struct sender *s, unsigned pass, const struct counts *c0, const char *what)
{
  struct counts c = counts_now(s);
  char r[16], f[16], z[16], w[16], o[16];
  vm_info("pass %u%s: read %s, sent %s, skipped %s free, %s zero, %s swap in %.1f s", pass, what,
          vm_format_size(c.read - c0->read, r), vm_format_size(c.stream - c0->stream, o),
          vm_format_size(c.free - c0->free, f), vm_format_size(c.zero - c0->zero, z),
          vm_format_size(c.swap - c0->swap, w), (double)(c.t - c0->t) / 1000.0);
}

/* The per-disk state of the passes. */
struct dpass {
  struct pa_map base;       /* the map of pass 1 (partitions, swap, unmounted file systems) */
  struct vm_digest dg;
  struct pa_ranges changed; /* the blocks this pass sends again */
  struct pa_map map;        /* this pass's map */
  uint64_t *blks;
  size_t nblks;
  struct pre *pre;
};

static void dpass_clear(struct dpass *p)
{
  pa_map_free(&p->map);
  pa_ranges_free(&p->changed);
  if (p->pre) {
    for (size_t i = 0; i < p->nblks; i++) free(p->pre[i].raw);
    free(p->pre);
    p->pre = NULL;
  }
  free(p->blks);
  p->blks = NULL;
  p->nblks = 0;
}

/* This pass's map of disk i: pass 1's, with the mounted file systems' free space now. */
static int map_now(struct pa_online *on, size_t i, struct dpass *p)
{
  pa_map_free(&p->map);
  map_copy(&p->map, &p->base);
  return pa_online_map(on, i, &p->map);
}

/* Reads the final pass's blocks of every disk into memory, the file systems
 * frozen: nothing is sent while they are, so that a slow link does not make the
 * freeze longer. */
/* MemAvailable of /proc/meminfo in bytes, or 0 when unknown. */
static uint64_t mem_available(void)
{
  CLEANUP_FCLOSE FILE *f = fopen("/proc/meminfo", "re");
  char line[128];
  unsigned long long kb;
  while (f && fgets(line, sizeof line, f))
    if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) return (uint64_t)kb * 1024;
  return 0;
}

static int read_frozen(struct sender *s, const struct pa_disk *disks, size_t n, struct dpass *dp, struct pa_online *on,
                       const struct pa_online_opts *oo)
{
  /* The blocks are held in memory until the thaw: a set that does not fit in
   * half of what is available fails now, not through the OOM killer. */
  uint64_t need = 0, avail = mem_available();
  for (size_t i = 0; i < n; i++) need += (uint64_t)dp[i].nblks * s->bs;
  if (avail && need > avail / 2) {
    char a[16], b[16];
    return vm_fail(VM_EXIT_FAIL, "the final pass would hold %s in memory, %s is available: thawed (give a larger "
                   "--max-passes or a smaller --block-size)", vm_format_size(need, a), vm_format_size(avail, b));
  }
  const char *hook = getenv("VMKIT_TEST_FREEZE_MS"); /* tests: a long freeze on purpose */
  if (hook && *hook) vm_sleep_ms(atoi(hook));
  for (size_t i = 0; i < n; i++) {
    struct dpass *p = &dp[i];
    if (!p->nblks) continue;
    p->pre = calloc(p->nblks, sizeof *p->pre);
    if (!p->pre) return vm_fail(VM_EXIT_FAIL, "no memory for the final pass's %zu blocks", p->nblks);
    struct rdisk rd = RDISK_INIT;
    if (rdisk_open(&rd, disks[i].path, &s->refused[i], true) != 0) return VM_EXIT_FAIL;
    size_t fi = 0;
    int rc = 0;
    for (size_t k = 0; k < p->nblks && !rc; k++) {
      if (vm_interrupted()) {
        rc = vm_fail_interrupted();
        break;
      }
      if (pa_online_frozen_ms(on) > oo->max_freeze_ms) {
        rc = vm_fail(VM_EXIT_TIMEOUT, "the final pass was frozen longer than --max-freeze (%lld ms), or its freeze did not hold: thawed",
                     (long long)oo->max_freeze_ms);
        break;
      }
      struct job j = { .offset = p->blks[k] * s->bs, .length = block_len(&disks[i], s->bs, p->blks[k]) };
      if (posix_memalign((void **)&j.raw, 4096, j.length) != 0) {
        rc = vm_fail(VM_EXIT_FAIL, "no memory for the final pass's %zu blocks", p->nblks);
        break;
      }
      p->pre[k].raw = j.raw;
      if (fill_block(s, &rd, &p->map, &fi, &j) != 0) {
        rc = vm_fail_errno(VM_EXIT_FAIL, "cannot read '%s' at offset %llu", disks[i].path, (unsigned long long)j.offset);
        break;
      }
      p->pre[k].hole = j.hole;
      if (j.hole) {
        free(j.raw);
        p->pre[k].raw = NULL;
      }
    }
    rdisk_close(&rd);
    if (rc) return rc;
  }
  if (pa_online_frozen_ms(on) > oo->max_freeze_ms)
    return vm_fail(VM_EXIT_TIMEOUT, "the final pass was frozen longer than --max-freeze (%lld ms), or its freeze did not hold: thawed",
                   (long long)oo->max_freeze_ms);
  return 0;
}

/* The passes after the first, while some file system is mounted: delta passes
 * until one finds at most --final-delta to send again (or the last pass
 * allowed comes), then the final pass under the freeze. */
static int online_passes(struct sender *s, const struct pa_disk *disks, size_t n, struct dpass *dp,
                         struct pa_online *on, const struct pa_online_opts *oo, unsigned *passes, int64_t *frozen_ms)
{
  int rc = 0;
  unsigned pass = 1;
  while (!rc) {
    pass++;
    bool final = pass >= oo->max_passes;
    uint64_t total = 0;
    struct counts c0 = counts_now(s);
    for (size_t i = 0; i < n && !rc; i++) {
      dpass_clear(&dp[i]);
      if (!pa_online_has_disk(on, i)) continue;
      rc = map_now(on, i, &dp[i]);
      if (!rc && !final) rc = pa_online_changes(on, i, false, &dp[i].changed);
      free(dp[i].blks);
      dp[i].blks = blocks_of(&dp[i].changed, s->bs, dp[i].dg.nblocks, &dp[i].nblks);
      total += (uint64_t)dp[i].nblks * s->bs;
    }
    if (rc) break;
    if (!final && total <= oo->final_delta) final = true;
    if (!final) {
      for (size_t i = 0; i < n && !rc; i++)
        if (pa_online_has_disk(on, i))
          rc = send_disk(s, (uint32_t)i, &disks[i], pass, &dp[i].map, dp[i].blks, dp[i].nblks, NULL, &dp[i].dg, on);
      if (!rc) say_pass(s, pass, &c0, "");
      continue;
    }
    /* The final pass: frozen, what changed since the last pass (and what the
     * delta just found, not sent yet) read into memory; thawed; then sent. */
    char h[16];
    vm_info("pass %u: %s changed: freezing the file systems for the final pass", pass, vm_format_size(total, h));
    if ((rc = pa_online_freeze(on))) break;
    int64_t t_frozen = vm_now_ms();
    /* Nothing on stderr while frozen (it may be a file on a frozen file system):
     * an error is kept and said once thawed. */
    vm_errors_mute(true);
    for (size_t i = 0; i < n && !rc; i++) {
      if (!pa_online_has_disk(on, i)) continue;
      rc = map_now(on, i, &dp[i]);
      if (!rc) rc = pa_online_changes(on, i, true, &dp[i].changed);
      free(dp[i].blks);
      dp[i].blks = blocks_of(&dp[i].changed, s->bs, dp[i].dg.nblocks, &dp[i].nblks);
    }
    struct counts cf = counts_now(s);
    if (!rc) rc = read_frozen(s, disks, n, dp, on, oo);
    pa_online_thaw(on, frozen_ms);
    vm_errors_mute(false);
    for (size_t i = 0; i < n; i++) say_refused(&s->refused[i], disks[i].path);
    if (!*frozen_ms) *frozen_ms = vm_now_ms() - t_frozen;
    if (rc) {
      rc = vm_fail(rc, "%s", vm_last_error());
      break;
    }
    struct counts cr = counts_now(s);
    for (size_t i = 0; i < n && !rc; i++)
      if (pa_online_has_disk(on, i))
        rc = send_disk(s, (uint32_t)i, &disks[i], pass, &dp[i].map, dp[i].blks, dp[i].nblks, dp[i].pre, &dp[i].dg, on);
    if (rc) break;
    char r[16];
    vm_info("pass %u (final): read %s while frozen for %lld ms", pass, vm_format_size(cr.read - cf.read, r),
            (long long)*frozen_ms);
    say_pass(s, pass, &c0, " (final)");
    break;
  }
  *passes = pass;
  return rc;
}

int pa_send(const struct pa_disk *disks, size_t n, uint32_t bs, int level, int threads, struct pa_online *on,
            const struct pa_online_opts *oo)
{
  if (isatty(STDOUT_FILENO))
    return vm_fail(VM_EXIT_USAGE, "the stream is binary: send it to p2v-convert (p2v-agent send | ssh HOST p2v-convert ...)");
  struct sender s = { .out_fd = STDOUT_FILENO, .bs = bs, .level = level };
  unsigned char id[16];
  if (RAND_bytes(id, sizeof id) != 1) return vm_fail(VM_EXIT_FAIL, "cannot make a stream ID: no random bytes");
  int64_t t0 = vm_now_ms();
  CLEANUP_JSON json_object *inv = NULL;
  struct dpass *dp = calloc(n ? n : 1, sizeof *dp);
  s.refused = calloc(n ? n : 1, 1);
  if (!dp || !s.refused) abort();
  int rc = 0;
  for (size_t i = 0; i < n && !rc; i++) {
    if (vm_digest_init(&dp[i].dg, disks[i].size, bs) != 0)
      rc = vm_fail(VM_EXIT_USAGE, "'%s' has more than %u blocks of %u bytes: give a larger --block-size", disks[i].path,
                   VM_STREAM_MAX_BLOCKS, bs);
  }
  if (rc) goto out;
  if (vm_swriter_start(&s.w, vm_stream_fd_write, &s.out_fd, id)) {
    rc = fail_write();
    goto out;
  }
  inv = pa_inventory(disks, n);
  if (vm_swriter_json(&s.w, VM_REC_INVENTORY, inv)) {
    rc = fail_write();
    goto out;
  }
  pthread_mutex_init(&s.mu, NULL);
  pthread_cond_init(&s.cv, NULL);
  s.q = vm_workq_new(threads, 64);
  s.nring = (size_t)vm_workq_threads(s.q) * 4 + 4;
  s.ring = calloc(s.nring, sizeof *s.ring);
  if (!s.ring) abort();
  for (size_t i = 0; i < s.nring; i++) {
    if (posix_memalign((void **)&s.ring[i].raw, 4096, bs) != 0) abort();
    s.ring[i].outcap = ZSTD_compressBound(bs);
    s.ring[i].out = malloc(s.ring[i].outcap);
    if (!s.ring[i].raw || !s.ring[i].out) abort();
    s.ring[i].level = level;
    s.ring[i].mu = &s.mu;
    s.ring[i].cv = &s.cv;
  }
  struct counts c0 = counts_now(&s);
  for (size_t i = 0; i < n && !rc; i++) {
    rc = pa_map_disk(&disks[i], &dp[i].base);
    for (size_t k = 0; !rc && k < dp[i].base.notes.n; k++) vm_debug("%s: %s", disks[i].name, dp[i].base.notes.v[k]);
    if (!rc && on && pa_online_has_disk(on, i)) rc = map_now(on, i, &dp[i]);
    else if (!rc) map_copy(&dp[i].map, &dp[i].base);
    if (!rc) {
      /* The swap areas are the base map's. */
      dp[i].map.swaps = dp[i].base.swaps;
      dp[i].map.nswaps = dp[i].base.nswaps;
      rc = send_disk(&s, (uint32_t)i, &disks[i], 1, &dp[i].map, NULL, 0, NULL, &dp[i].dg, on);
      dp[i].map.swaps = NULL;
      dp[i].map.nswaps = 0;
    }
  }
  unsigned passes = 1;
  int64_t frozen_ms = 0;
  if (!rc && on) {
    say_pass(&s, 1, &c0, "");
    rc = online_passes(&s, disks, n, dp, on, oo, &passes, &frozen_ms);
  }
  if (!rc) {
    CLEANUP_JSON json_object *t = json_object_new_object();
    json_object_object_add(t, "passes", json_object_new_int((int)passes));
    json_object_object_add(t, "frozen_ms", json_object_new_int64(frozen_ms));
    json_object_object_add(t, "bytes_read", json_object_new_int64((int64_t)s.bytes_read));
    if (vm_swriter_json(&s.w, VM_REC_TRAILER, t)) rc = fail_write();
  } else if (!broken_pipe) {
    send_abort(&s);
  }
  vm_workq_free(s.q);
  for (size_t i = 0; i < s.nring; i++) {
    free(s.ring[i].raw);
    free(s.ring[i].out);
  }
  free(s.ring);
  if (!rc) {
    char a[16], b[16], c[16], z[16], w[16];
    vm_info("sent %zu disk%s in %u pass%s in %.1f s: read %s, skipped %s free, %s zero, %s swap; %s in the stream",
            n, n == 1 ? "" : "s", passes, passes == 1 ? "" : "es", (double)(vm_now_ms() - t0) / 1000.0,
            vm_format_size(s.bytes_read, a), vm_format_size(s.skipped_free, b), vm_format_size(s.skipped_zero, z),
            vm_format_size(s.skipped_swap, w), vm_format_size(s.w.bytes, c));
    if (on) vm_info("frozen for %lld ms", (long long)frozen_ms);
  }
out:
  for (size_t i = 0; i < n; i++) {
    dpass_clear(&dp[i]);
    pa_map_free(&dp[i].base);
    vm_digest_free(&dp[i].dg);
  }
  free(dp);
  free(s.refused);
  return rc;
}
