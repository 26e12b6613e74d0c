/* Fuzz target: the P2V stream as p2v-convert reads it (common/stream/). The chain
 * of tags would stop a mutated stream at its first changed byte, so the input is
 * read as a list of records (a type byte, a 16-bit length, the payload) that the
 * real writer frames and chains; the real reader and the checker then take them
 * as p2v-convert does, opening every DATA block. The reader must give back
 * exactly the records written; the checker must never take a block outside its
 * disk, nor a trailer before every disk's pass 1. The input is also given to the
 * reader raw, for the preamble and the headers. */
#include <string.h>

#include "vmkit-stream.h"
#include "../unit/memstream.h"
#include "fuzz.h"

static unsigned char block[VM_STREAM_MAX_BLOCK];

static void consume(struct mem *m, const uint32_t *types, const size_t *lens, size_t nrec)
{
  struct vm_sreader r;
  struct vm_p2v_check c;
  vm_p2v_check_init(&c);
  if (vm_sreader_start(&r, mem_read, m) == 0) {
    for (size_t i = 0;; i++) {
      uint32_t type;
      const unsigned char *p;
      size_t len;
      int k = vm_sreader_next(&r, &type, &p, &len);
      if (k <= 0) {
        FUZZ_CHECK(!types || k == 0);
        FUZZ_CHECK(!types || i == nrec);
        break;
      }
      if (types) FUZZ_CHECK(i < nrec && type == types[i] && len == lens[i]);
      char err[512];
      struct vm_p2v_event ev;
      if (vm_p2v_check(&c, type, p, len, &ev, err, sizeof err) != 0) {
        FUZZ_CHECK(strlen(err) > 0);
        continue; /* the checker refuses everything after its first refusal */
      }
      if (type == VM_REC_DATA) {
        const struct vm_p2v_disk *d = &c.disks[ev.disk];
        FUZZ_CHECK(ev.disk >= 0 && (size_t)ev.disk < c.ndisks);
        FUZZ_CHECK(ev.data.offset < d->size && ev.data.length <= d->size - ev.data.offset);
        FUZZ_CHECK(ev.data.offset % d->block_size == 0 && ev.data.length <= d->block_size);
        vm_rec_data_open(&ev.data, NULL, block, err, sizeof err);
      } else if (type == VM_REC_HOLE) {
        const struct vm_p2v_disk *d = &c.disks[ev.disk];
        FUZZ_CHECK(ev.hole.offset < d->size && ev.hole.length <= d->size - ev.hole.offset);
      } else if (type == VM_REC_TRAILER) {
        for (size_t j = 0; j < c.ndisks; j++) FUZZ_CHECK(c.disks[j].done1);
      }
    }
  }
  vm_sreader_free(&r);
  vm_p2v_check_free(&c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  /* Raw, as bytes from the pipe. */
  struct mem raw = { .p = (unsigned char *)data, .n = size, .cap = size };
  consume(&raw, NULL, NULL, 0);

  /* As records, framed and chained by the writer. */
  struct mem m = { 0 };
  struct vm_swriter w;
  unsigned char id[16] = { 7 };
  vm_swriter_start(&w, mem_write, &m, id);
  uint32_t types[256];
  size_t lens[256], n = 0, off = 0;
  while (off + 3 <= size && n < 256) {
    uint32_t type = data[off] % 10;
    size_t len = (size_t)data[off + 1] | (size_t)data[off + 2] << 8;
    off += 3;
    if (len > size - off) len = size - off;
    FUZZ_CHECK(vm_swriter_put(&w, type, data + off, len, NULL, 0) == 0);
    types[n] = type;
    lens[n++] = len;
    off += len;
  }
  consume(&m, types, lens, n);
  free(m.p);
  return 0;
}

#ifdef FUZZ_DRIVER
/* Seeds: a stream of one small disk as records, the way the agent sends it. */
static void rec(unsigned char *buf, size_t *n, uint32_t type, const void *p, size_t len)
{
  buf[(*n)++] = (unsigned char)type;
  buf[(*n)++] = (unsigned char)len;
  buf[(*n)++] = (unsigned char)(len >> 8);
  memcpy(buf + *n, p, len);
  *n += len;
}

void fuzz_seeds(fuzz_add_fn *add)
{
  static unsigned char buf[8192];
  size_t n = 0;
  static const char inv[] = "{\"disks\":[{\"name\":\"sda\",\"size\":131072}]}";
  static const char beg[] = "{\"disk\":0,\"name\":\"sda\",\"size\":131072,\"block_size\":65536,\"pass\":1}";
  rec(buf, &n, VM_REC_INVENTORY, inv, sizeof inv - 1);
  rec(buf, &n, VM_REC_DISK_BEGIN, beg, sizeof beg - 1);
  struct vm_rec_hole h = { 0, VM_HOLE_FREE, 0, 131072 };
  unsigned char hb[VM_STREAM_HOLE_SIZE];
  vm_rec_hole_encode(hb, &h);
  rec(buf, &n, VM_REC_HOLE, hb, sizeof hb);
  struct vm_digest d;
  vm_digest_init(&d, 131072, 65536);
  unsigned char sum[32];
  char hex[65], end[160];
  vm_digest_final(&d, sum);
  vm_hex32(sum, hex);
  vm_digest_free(&d);
  int k = snprintf(end, sizeof end, "{\"disk\":0,\"pass\":1,\"digest\":\"%s\"}", hex);
  rec(buf, &n, VM_REC_DISK_END, end, (size_t)k);
  rec(buf, &n, VM_REC_TRAILER, "{}", 2);
  add("holes", buf, n);
  /* A DATA record of a stored 64 KiB block is too long for a seed: a short one. */
  size_t n2 = 0;
  static unsigned char b2[512];
  rec(b2, &n2, VM_REC_INVENTORY, inv, sizeof inv - 1);
  rec(b2, &n2, VM_REC_DISK_BEGIN, beg, sizeof beg - 1);
  struct vm_rec_data dd = { .disk = 0, .codec = VM_CODEC_ZSTD, .offset = 0, .length = 65536 };
  unsigned char dh[VM_STREAM_DATA_HEADER];
  vm_rec_data_header(dh, &dd);
  rec(b2, &n2, VM_REC_DATA, dh, sizeof dh);
  add("data", b2, n2);
}
#endif
