/* The P2V stream's records (p2v-stream(5)): DATA and HOLE payloads, the disk
 * digest, and the checker that holds a stream to the format's order before the
 * reader acts on any record. Every payload is untrusted input: lengths are
 * checked before they are used, JSON members are typed, numbers bounded. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <zstd.h>

#include "le.h"
#include "vmkit-stream.h"

static int efail(char *err, size_t errlen, const char *fmt, ...) VM_PRINTF(3, 4);
static int efail(char *err, size_t errlen, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
  return -1;
}

void vm_hex32(const unsigned char in[32], char out[65])
{
  static const char hx[] = "0123456789abcdef";
  for (int i = 0; i < 32; i++) {
    out[2 * i] = hx[in[i] >> 4];
    out[2 * i + 1] = hx[in[i] & 15];
  }
  out[64] = 0;
}

/* ---- DATA and HOLE ------------------------------------------------------------------ */
void vm_rec_data_header(unsigned char out[VM_STREAM_DATA_HEADER], const struct vm_rec_data *d)
{
  put32(out, d->disk);
  put32(out + 4, d->codec);
  put64(out + 8, d->offset);
  put32(out + 16, d->length);
  put32(out + 20, 0);
  memcpy(out + 24, d->sha, 32);
}

int vm_rec_data_parse(const unsigned char *p, size_t n, struct vm_rec_data *d, char *err, size_t errlen)
{
  if (n < VM_STREAM_DATA_HEADER) return efail(err, errlen, "a DATA record of %zu bytes is too short", n);
  d->disk = get32(p);
  d->codec = get32(p + 4);
  d->offset = get64(p + 8);
  d->length = get32(p + 16);
  if (get32(p + 20) != 0) return efail(err, errlen, "a DATA record has a reserved field set");
  memcpy(d->sha, p + 24, 32);
  d->body = p + VM_STREAM_DATA_HEADER;
  d->body_len = n - VM_STREAM_DATA_HEADER;
  if (d->codec != VM_CODEC_STORED && d->codec != VM_CODEC_ZSTD)
    return efail(err, errlen, "a DATA record has unknown codec %u", d->codec);
  if (d->length == 0 || d->length > VM_STREAM_MAX_BLOCK)
    return efail(err, errlen, "a DATA record has a length of %u bytes", d->length);
  if (d->codec == VM_CODEC_STORED && d->body_len != d->length)
    return efail(err, errlen, "a stored DATA record holds %zu bytes for a block of %u", d->body_len, d->length);
  return 0;
}

int vm_rec_data_open(const struct vm_rec_data *d, void *dctx, unsigned char *out, char *err, size_t errlen)
{
  if (d->codec == VM_CODEC_STORED) {
    memcpy(out, d->body, d->length);
  } else {
    unsigned long long claimed = ZSTD_getFrameContentSize(d->body, d->body_len);
    if (claimed != d->length)
      return efail(err, errlen, "the block at offset %llu does not decompress to its length",
                   (unsigned long long)d->offset);
    ZSTD_DCtx *own = dctx ? NULL : ZSTD_createDCtx();
    size_t r = ZSTD_decompressDCtx(dctx ? dctx : own, out, d->length, d->body, d->body_len);
    ZSTD_freeDCtx(own);
    if (ZSTD_isError(r) || r != d->length)
      return efail(err, errlen, "the block at offset %llu cannot be decompressed: %s", (unsigned long long)d->offset,
                   ZSTD_isError(r) ? ZSTD_getErrorName(r) : "short");
  }
  unsigned char sha[32];
  SHA256(out, d->length, sha);
  if (CRYPTO_memcmp(sha, d->sha, 32) != 0)
    return efail(err, errlen, "the block at offset %llu does not match its checksum", (unsigned long long)d->offset);
  return 0;
}

void vm_rec_hole_encode(unsigned char out[VM_STREAM_HOLE_SIZE], const struct vm_rec_hole *h)
{
  put32(out, h->disk);
  put32(out + 4, h->reason);
  put64(out + 8, h->offset);
  put64(out + 16, h->length);
}

int vm_rec_hole_parse(const unsigned char *p, size_t n, struct vm_rec_hole *h, char *err, size_t errlen)
{
  if (n != VM_STREAM_HOLE_SIZE) return efail(err, errlen, "a HOLE record of %zu bytes (not %d)", n, VM_STREAM_HOLE_SIZE);
  h->disk = get32(p);
  h->reason = get32(p + 4);
  h->offset = get64(p + 8);
  h->length = get64(p + 16);
  if (h->reason < VM_HOLE_FREE || h->reason > VM_HOLE_SWAP)
    return efail(err, errlen, "a HOLE record has unknown reason %u", h->reason);
  if (h->length == 0) return efail(err, errlen, "a HOLE record of no length");
  return 0;
}

/* ---- The digest ---------------------------------------------------------------------- */
static void zero_sha(size_t len, unsigned char out[32])
{
  static const unsigned char z[65536];
  EVP_MD_CTX *c = EVP_MD_CTX_new();
  if (!c || EVP_DigestInit_ex(c, EVP_sha256(), NULL) != 1) abort();
  while (len) {
    size_t k = len < sizeof z ? len : sizeof z;
    EVP_DigestUpdate(c, z, k);
    len -= k;
  }
  unsigned int n = 0;
  EVP_DigestFinal_ex(c, out, &n);
  EVP_MD_CTX_free(c);
}

int vm_digest_init(struct vm_digest *d, uint64_t size, uint32_t block_size)
{
  memset(d, 0, sizeof *d);
  if (block_size < VM_STREAM_MIN_BLOCK || block_size > VM_STREAM_MAX_BLOCK || (block_size & (block_size - 1)) ||
      size == 0 || size > (UINT64_C(1) << 50) || (size + block_size - 1) / block_size > VM_STREAM_MAX_BLOCKS) {
    errno = EINVAL;
    return -1;
  }
  d->size = size;
  d->block_size = block_size;
  d->nblocks = (size + block_size - 1) / block_size;
  d->h = malloc(d->nblocks * 32);
  if (!d->h) return -1;
  zero_sha(block_size, d->zero);
  uint64_t last = size - (d->nblocks - 1) * block_size;
  zero_sha(last, d->zero_last);
  for (uint64_t i = 0; i < d->nblocks; i++) vm_digest_zero(d, i);
  return 0;
}

void vm_digest_set(struct vm_digest *d, uint64_t block, const unsigned char sha[32])
{
  if (block < d->nblocks) memcpy(d->h + block * 32, sha, 32);
}

void vm_digest_zero(struct vm_digest *d, uint64_t block)
{
  if (block < d->nblocks) memcpy(d->h + block * 32, block == d->nblocks - 1 ? d->zero_last : d->zero, 32);
}

void vm_digest_final(const struct vm_digest *d, unsigned char out[32])
{
  SHA256(d->h, d->nblocks * 32, out);
}

void vm_digest_free(struct vm_digest *d)
{
  free(d->h);
  d->h = NULL;
}

/* ---- The checker ------------------------------------------------------------------------ */
enum { ST_INVENTORY, ST_BETWEEN, ST_IN_DISK, ST_DONE, ST_FAILED };

void vm_p2v_check_init(struct vm_p2v_check *c)
{
  memset(c, 0, sizeof *c);
  c->disk = -1;
  c->last_disk = -1;
}

void vm_p2v_check_free(struct vm_p2v_check *c)
{
  for (size_t i = 0; i < c->ndisks; i++) {
    free(c->disks[i].name);
    vm_digest_free(&c->disks[i].digest);
    for (size_t j = 0; j < c->disks[i].nswaps; j++) {
      free(c->disks[i].swaps[j].uuid);
      free(c->disks[i].swaps[j].label);
    }
    free(c->disks[i].swaps);
  }
  if (c->inventory) json_object_put(c->inventory);
  if (c->trailer) json_object_put(c->trailer);
  free(c->abort_error);
  vm_p2v_check_init(c);
}

bool vm_p2v_check_done(const struct vm_p2v_check *c) { return c->state == ST_DONE; }

/* A JSON object from a payload: plain text (no NUL), at most VM_STREAM_MAX_JSON. */
static json_object *parse_json(const unsigned char *p, size_t n, const char *what, char *err, size_t errlen)
{
  if (n > VM_STREAM_MAX_JSON) {
    efail(err, errlen, "the %s record is too large (%zu bytes)", what, n);
    return NULL;
  }
  if (memchr(p, 0, n)) {
    efail(err, errlen, "the %s record holds a NUL byte", what);
    return NULL;
  }
  json_tokener *tok = json_tokener_new();
  json_object *o = tok ? json_tokener_parse_ex(tok, (const char *)p, (int)n) : NULL;
  bool whole = tok && json_tokener_get_error(tok) == json_tokener_success && tok->char_offset == (int)n;
  if (tok) json_tokener_free(tok);
  if (!o || !whole || !json_object_is_type(o, json_type_object)) {
    if (o) json_object_put(o);
    efail(err, errlen, "the %s record is not a JSON object", what);
    return NULL;
  }
  return o;
}

/* An integer member in [lo, hi]. */
static int get_u64(json_object *o, const char *key, uint64_t lo, uint64_t hi, uint64_t *out, const char *what,
                   char *err, size_t errlen)
{
  json_object *v;
  if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_int))
    return efail(err, errlen, "the %s record has no integer '%s'", what, key);
  errno = 0;
  int64_t x = json_object_get_int64(v);
  if (errno || x < 0 || (uint64_t)x < lo || (uint64_t)x > hi)
    return efail(err, errlen, "the %s record's '%s' is out of range", what, key);
  *out = (uint64_t)x;
  return 0;
}

static const char *get_str(json_object *o, const char *key)
{
  json_object *v;
  if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string)) return NULL;
  return json_object_get_string(v);
}

/* Text from the stream goes into one-line messages: printable ASCII only. */
static char *clean_text(const char *s, size_t max)
{
  size_t n = strnlen(s, max);
  char *o = malloc(n + 1);
  if (!o) abort();
  for (size_t i = 0; i < n; i++) o[i] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
  o[n] = 0;
  return o;
}

static int take_inventory(struct vm_p2v_check *c, const unsigned char *p, size_t n, char *err, size_t errlen)
{
  json_object *o = parse_json(p, n, "INVENTORY", err, errlen);
  if (!o) return -1;
  c->inventory = o;
  json_object *disks;
  if (!json_object_object_get_ex(o, "disks", &disks) || !json_object_is_type(disks, json_type_array))
    return efail(err, errlen, "the INVENTORY record lists no disks");
  size_t nd = json_object_array_length(disks);
  if (nd == 0) return efail(err, errlen, "the INVENTORY record lists no disks");
  if (nd > VM_STREAM_MAX_DISKS) return efail(err, errlen, "the INVENTORY record lists %zu disks (at most %d)", nd, VM_STREAM_MAX_DISKS);
  for (size_t i = 0; i < nd; i++) {
    json_object *d = json_object_array_get_idx(disks, i);
    if (!d || !json_object_is_type(d, json_type_object)) return efail(err, errlen, "disk %zu of the INVENTORY is not an object", i);
    uint64_t size;
    if (get_u64(d, "size", 1, UINT64_C(1) << 50, &size, "INVENTORY disk", err, errlen)) return -1;
    const char *name = get_str(d, "name");
    if (!name || !*name) return efail(err, errlen, "disk %zu of the INVENTORY has no name", i);
    c->disks[i].name = clean_text(name, 64);
    c->disks[i].size = size;
    c->ndisks = i + 1;
  }
  return 0;
}

static int disk_begin(struct vm_p2v_check *c, const unsigned char *p, size_t n, struct vm_p2v_event *ev, char *err,
                      size_t errlen)
{
  CLEANUP_JSON json_object *o = parse_json(p, n, "DISK_BEGIN", err, errlen);
  if (!o) return -1;
  uint64_t disk, size, bs, pass;
  if (get_u64(o, "disk", 0, c->ndisks ? c->ndisks - 1 : 0, &disk, "DISK_BEGIN", err, errlen) ||
      get_u64(o, "size", 1, UINT64_C(1) << 50, &size, "DISK_BEGIN", err, errlen) ||
      get_u64(o, "block_size", VM_STREAM_MIN_BLOCK, VM_STREAM_MAX_BLOCK, &bs, "DISK_BEGIN", err, errlen) ||
      get_u64(o, "pass", 1, 1000000, &pass, "DISK_BEGIN", err, errlen))
    return -1;
  if (bs & (bs - 1)) return efail(err, errlen, "the DISK_BEGIN record's block size %llu is not a power of two", (unsigned long long)bs);
  struct vm_p2v_disk *d = &c->disks[disk];
  if (size != d->size)
    return efail(err, errlen, "disk %llu is %llu bytes in DISK_BEGIN but %llu in the inventory", (unsigned long long)disk,
                 (unsigned long long)size, (unsigned long long)d->size);
  if (c->pass == 0) {
    if (pass != 1) return efail(err, errlen, "the first pass is numbered %llu", (unsigned long long)pass);
    c->pass = 1;
  }
  if (pass == c->pass + 1) {
    /* A new pass starts only once pass 1 covered every disk. */
    for (size_t i = 0; i < c->ndisks; i++)
      if (!c->disks[i].done1) return efail(err, errlen, "pass %llu begins before pass 1 sent disk %zu", (unsigned long long)pass, i);
    c->pass = (unsigned)pass;
    c->last_disk = -1;
  } else if (pass != c->pass) {
    return efail(err, errlen, "pass %llu comes during pass %u", (unsigned long long)pass, c->pass);
  }
  if ((int)disk <= c->last_disk)
    return efail(err, errlen, "disk %llu comes again or out of order in pass %u", (unsigned long long)disk, c->pass);
  if (c->pass == 1 && (int)disk != c->last_disk + 1)
    return efail(err, errlen, "pass 1 skips from disk %d to disk %llu", c->last_disk, (unsigned long long)disk);
  if (d->pass == 0) {
    if (vm_digest_init(&d->digest, size, (uint32_t)bs) != 0)
      return efail(err, errlen, "disk %llu has more than %u blocks of %llu bytes (or no memory for its map)",
                   (unsigned long long)disk, VM_STREAM_MAX_BLOCKS, (unsigned long long)bs);
    d->block_size = (uint32_t)bs;
  } else if (bs != d->block_size) {
    return efail(err, errlen, "disk %llu changes its block size in pass %llu", (unsigned long long)disk, (unsigned long long)pass);
  }
  d->pass = (unsigned)pass;
  c->disk = (int)disk;
  c->last_disk = (int)disk;
  c->next = 0;
  c->state = ST_IN_DISK;
  ev->disk = (int)disk;
  ev->pass = (unsigned)pass;
  return 0;
}

/* A range [off, off+len) of the current disk: block-aligned, inside the disk, at or
 * after the next allowed offset (exactly there in pass 1). */
static int take_range(struct vm_p2v_check *c, uint32_t disk, uint64_t off, uint64_t len, const char *what, char *err,
                      size_t errlen)
{
  struct vm_p2v_disk *d = &c->disks[c->disk];
  if ((int)disk != c->disk) return efail(err, errlen, "a %s record of disk %u inside disk %d", what, disk, c->disk);
  if (off % d->block_size) return efail(err, errlen, "a %s record at offset %llu, not on a block", what, (unsigned long long)off);
  if (off >= d->size || len > d->size - off)
    return efail(err, errlen, "a %s record at offset %llu runs past the disk's end", what, (unsigned long long)off);
  if (len % d->block_size && off + len != d->size)
    return efail(err, errlen, "a %s record at offset %llu ends inside a block", what, (unsigned long long)off);
  if (c->pass == 1 ? off != c->next : off < c->next)
    return efail(err, errlen, "a %s record at offset %llu where %llu comes next (blocks lost, repeated or reordered)", what,
                 (unsigned long long)off, (unsigned long long)c->next);
  c->next = off + len;
  return 0;
}

static int disk_end(struct vm_p2v_check *c, const unsigned char *p, size_t n, struct vm_p2v_event *ev, char *err,
                    size_t errlen)
{
  CLEANUP_JSON json_object *o = parse_json(p, n, "DISK_END", err, errlen);
  if (!o) return -1;
  uint64_t disk, pass;
  if (get_u64(o, "disk", 0, VM_STREAM_MAX_DISKS, &disk, "DISK_END", err, errlen) ||
      get_u64(o, "pass", 1, 1000000, &pass, "DISK_END", err, errlen))
    return -1;
  if ((int)disk != c->disk || pass != c->pass)
    return efail(err, errlen, "DISK_END of disk %llu pass %llu inside disk %d pass %u", (unsigned long long)disk,
                 (unsigned long long)pass, c->disk, c->pass);
  struct vm_p2v_disk *d = &c->disks[disk];
  if (c->pass == 1 && c->next != d->size)
    return efail(err, errlen, "pass 1 of disk %llu ends at offset %llu of %llu (blocks lost)", (unsigned long long)disk,
                 (unsigned long long)c->next, (unsigned long long)d->size);
  const char *hex = get_str(o, "digest");
  unsigned char sum[32];
  char mine[65];
  vm_digest_final(&d->digest, sum);
  vm_hex32(sum, mine);
  if (!hex || strlen(hex) != 64) return efail(err, errlen, "DISK_END of disk %llu has no digest", (unsigned long long)disk);
  if (strcmp(hex, mine) != 0)
    return efail(err, errlen, "disk %llu (%s) does not match its digest after pass %u", (unsigned long long)disk, d->name,
                 c->pass);
  if (c->pass == 1) d->done1 = true;
  c->disk = -1;
  c->state = ST_BETWEEN;
  ev->disk = (int)disk;
  ev->pass = c->pass;
  return 0;
}

static int take_swap(struct vm_p2v_check *c, const unsigned char *p, size_t n, struct vm_p2v_event *ev, char *err,
                     size_t errlen)
{
  CLEANUP_JSON json_object *o = parse_json(p, n, "SWAP", err, errlen);
  if (!o) return -1;
  uint64_t disk, off, len, pagesize;
  if (get_u64(o, "disk", 0, VM_STREAM_MAX_DISKS, &disk, "SWAP", err, errlen) ||
      get_u64(o, "offset", 0, UINT64_C(1) << 50, &off, "SWAP", err, errlen) ||
      get_u64(o, "length", 40960, UINT64_C(1) << 50, &len, "SWAP", err, errlen) ||
      get_u64(o, "pagesize", 4096, 65536, &pagesize, "SWAP", err, errlen))
    return -1;
  if (c->pass != 1 || (int)disk != c->disk) return efail(err, errlen, "a SWAP record outside pass 1 of its disk");
  struct vm_p2v_disk *d = &c->disks[disk];
  if (off < c->next || off >= d->size || len > d->size - off)
    return efail(err, errlen, "a SWAP area at offset %llu outside the rest of disk %llu", (unsigned long long)off,
                 (unsigned long long)disk);
  const char *uuid = get_str(o, "uuid"), *label = get_str(o, "label");
  if (!uuid || strlen(uuid) != 36 || strspn(uuid, "0123456789abcdefABCDEF-") != 36)
    return efail(err, errlen, "a SWAP record without a UUID");
  if (d->nswaps >= 16) return efail(err, errlen, "more than 16 swap areas on disk %llu", (unsigned long long)disk);
  struct vm_swap_area *s = realloc(d->swaps, (d->nswaps + 1) * sizeof *s);
  if (!s) abort();
  d->swaps = s;
  s[d->nswaps++] = (struct vm_swap_area){ off, len, clean_text(uuid, 36), clean_text(label ? label : "", 16) };
  ev->disk = (int)disk;
  return 0;
}

int vm_p2v_check(struct vm_p2v_check *c, uint32_t type, const unsigned char *p, size_t n, struct vm_p2v_event *ev,
                 char *err, size_t errlen)
{
  memset(ev, 0, sizeof *ev);
  ev->type = type;
  ev->disk = -1;
  if (c->state == ST_FAILED) return efail(err, errlen, "the stream was refused already");
  if (c->state == ST_DONE) return efail(err, errlen, "a %s record after the trailer", vm_rec_name(type));
  int rc = 0;
  if (type == VM_REC_ABORT) {
    CLEANUP_JSON json_object *o = parse_json(p, n, "ABORT", err, errlen);
    const char *e = o ? get_str(o, "error") : NULL;
    free(c->abort_error);
    c->abort_error = clean_text(e ? e : "no reason given", 400);
    efail(err, errlen, "p2v-agent failed: %s", c->abort_error);
    c->state = ST_FAILED;
    return -1;
  }
  switch (c->state) {
  case ST_INVENTORY:
    if (type != VM_REC_INVENTORY) rc = efail(err, errlen, "the stream starts with %s, not INVENTORY", vm_rec_name(type));
    else rc = take_inventory(c, p, n, err, errlen);
    if (!rc) c->state = ST_BETWEEN;
    break;
  case ST_BETWEEN:
    if (type == VM_REC_DISK_BEGIN) {
      rc = disk_begin(c, p, n, ev, err, errlen);
    } else if (type == VM_REC_TRAILER) {
      for (size_t i = 0; i < c->ndisks && !rc; i++)
        if (!c->disks[i].done1) rc = efail(err, errlen, "the trailer comes before disk %zu was sent", i);
      if (!rc && !(c->trailer = parse_json(p, n, "TRAILER", err, errlen))) rc = -1;
      if (!rc) c->state = ST_DONE;
    } else {
      rc = efail(err, errlen, "a %s record outside any disk", vm_rec_name(type));
    }
    break;
  case ST_IN_DISK:
    if (type == VM_REC_DATA) {
      rc = vm_rec_data_parse(p, n, &ev->data, err, errlen);
      struct vm_p2v_disk *d = &c->disks[c->disk];
      if (!rc && ev->data.offset < d->size && ev->data.length != (d->size - ev->data.offset < d->block_size
                                                                     ? d->size - ev->data.offset
                                                                     : d->block_size))
        rc = efail(err, errlen, "a DATA record at offset %llu is not one whole block", (unsigned long long)ev->data.offset);
      if (!rc) rc = take_range(c, ev->data.disk, ev->data.offset, ev->data.length, "DATA", err, errlen);
      if (!rc) vm_digest_set(&d->digest, ev->data.offset / d->block_size, ev->data.sha);
      ev->disk = c->disk;
    } else if (type == VM_REC_HOLE) {
      rc = vm_rec_hole_parse(p, n, &ev->hole, err, errlen);
      if (!rc) rc = take_range(c, ev->hole.disk, ev->hole.offset, ev->hole.length, "HOLE", err, errlen);
      struct vm_p2v_disk *d = &c->disks[c->disk];
      if (!rc)
        for (uint64_t b = ev->hole.offset / d->block_size; b * d->block_size < ev->hole.offset + ev->hole.length; b++)
          vm_digest_zero(&d->digest, b);
      ev->disk = c->disk;
    } else if (type == VM_REC_SWAP) {
      rc = take_swap(c, p, n, ev, err, errlen);
    } else if (type == VM_REC_DISK_END) {
      rc = disk_end(c, p, n, ev, err, errlen);
    } else {
      rc = efail(err, errlen, "a %s record inside disk %d", vm_rec_name(type), c->disk);
    }
    break;
  }
  if (rc) c->state = ST_FAILED;
  return rc;
}
