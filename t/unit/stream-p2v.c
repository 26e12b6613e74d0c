/* Unit tests of the P2V stream (common/stream/, p2v-stream(5)): a stream written
 * with the writer reads back record by record; a flipped byte, a truncation, a
 * lost, repeated or swapped record, a stream spliced from another, a newer
 * format and bytes after the trailer are each refused at the right place; the
 * checker's rules (coverage of pass 1, order, digests) hold; the digest of a
 * later pass changes only with the blocks it sends. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/sha.h>
#include <zstd.h>

#include "vmkit-stream.h"
#include "memstream.h"

#define BS 65536u
#define DISK_SIZE (3 * BS + 1000) /* the last block is short */

static void put_json(struct vm_swriter *w, uint32_t type, const char *text)
{
  json_object *o = json_tokener_parse(text);
  assert_non_null(o);
  assert_int_equal(vm_swriter_json(w, type, o), 0);
  json_object_put(o);
}

static void put_data(struct vm_swriter *w, uint32_t disk, uint64_t off, uint32_t len, unsigned char fill, bool zstd,
                     unsigned char sha_out[32])
{
  unsigned char *raw = malloc(len);
  memset(raw, fill, len);
  for (uint32_t i = 0; i < len; i += 97) raw[i] = (unsigned char)(i * 7);
  struct vm_rec_data d = { .disk = disk, .codec = zstd ? VM_CODEC_ZSTD : VM_CODEC_STORED, .offset = off, .length = len };
  SHA256(raw, len, d.sha);
  if (sha_out) memcpy(sha_out, d.sha, 32);
  unsigned char hdr[VM_STREAM_DATA_HEADER];
  vm_rec_data_header(hdr, &d);
  if (zstd) {
    size_t cap = ZSTD_compressBound(len);
    unsigned char *out = malloc(cap);
    size_t n = ZSTD_compress(out, cap, raw, len, 1);
    assert_false(ZSTD_isError(n));
    assert_int_equal(vm_swriter_put(w, VM_REC_DATA, hdr, sizeof hdr, out, n), 0);
    free(out);
  } else {
    assert_int_equal(vm_swriter_put(w, VM_REC_DATA, hdr, sizeof hdr, raw, len), 0);
  }
  free(raw);
}

static void put_hole(struct vm_swriter *w, uint32_t disk, uint64_t off, uint64_t len, uint32_t reason)
{
  struct vm_rec_hole h = { disk, reason, off, len };
  unsigned char b[VM_STREAM_HOLE_SIZE];
  vm_rec_hole_encode(b, &h);
  assert_int_equal(vm_swriter_put(w, VM_REC_HOLE, b, sizeof b, NULL, 0), 0);
}

/* The digest the agent would send: blocks 0 and 2 data, 1 and 3 holes. */
static void digest_of(const unsigned char s0[32], const unsigned char s2[32], char hex[65])
{
  struct vm_digest d;
  assert_int_equal(vm_digest_init(&d, DISK_SIZE, BS), 0);
  vm_digest_set(&d, 0, s0);
  vm_digest_set(&d, 2, s2);
  unsigned char sum[32];
  vm_digest_final(&d, sum);
  vm_hex32(sum, hex);
  vm_digest_free(&d);
}

/* A good stream of one disk: a pass 1 and a delta pass 2. */
static void good_stream(struct mem *m, unsigned char id0)
{
  memset(m, 0, sizeof *m);
  struct vm_swriter w;
  unsigned char id[16] = { id0 };
  assert_int_equal(vm_swriter_start(&w, mem_write, m, id), 0);
  put_json(&w, VM_REC_INVENTORY, "{\"format\":1,\"hostname\":\"db1\",\"disks\":[{\"name\":\"sda\",\"size\":197608}]}");
  put_json(&w, VM_REC_DISK_BEGIN, "{\"disk\":0,\"name\":\"sda\",\"size\":197608,\"block_size\":65536,\"pass\":1}");
  unsigned char s0[32], s2[32];
  put_data(&w, 0, 0, BS, 1, true, s0);
  put_json(&w, VM_REC_SWAP,
           "{\"disk\":0,\"offset\":65536,\"length\":65536,\"uuid\":\"5c0f0a1e-0000-4000-8000-000000000001\","
           "\"label\":\"sw\",\"pagesize\":4096}");
  put_hole(&w, 0, BS, BS, VM_HOLE_SWAP);
  put_data(&w, 0, 2 * BS, BS, 2, false, s2);
  put_hole(&w, 0, 3 * BS, 1000, VM_HOLE_ZERO);
  char hex[65], js[256];
  digest_of(s0, s2, hex);
  snprintf(js, sizeof js, "{\"disk\":0,\"pass\":1,\"digest\":\"%s\"}", hex);
  put_json(&w, VM_REC_DISK_END, js);
  /* Pass 2: block 2 changes. */
  put_json(&w, VM_REC_DISK_BEGIN, "{\"disk\":0,\"name\":\"sda\",\"size\":197608,\"block_size\":65536,\"pass\":2}");
  put_data(&w, 0, 2 * BS, BS, 3, true, s2);
  digest_of(s0, s2, hex);
  snprintf(js, sizeof js, "{\"disk\":0,\"pass\":2,\"digest\":\"%s\"}", hex);
  put_json(&w, VM_REC_DISK_END, js);
  put_json(&w, VM_REC_TRAILER, "{\"passes\":2,\"frozen_ms\":0}");
}

/* Reads a stream through the framing and the checker, opening every block; 0
 * when it is taken whole, else -1 with the reason in err. */
static int consume(struct mem *m, char *err, size_t errlen, uint64_t *records)
{
  m->off = 0;
  struct vm_sreader r;
  struct vm_p2v_check c;
  vm_p2v_check_init(&c);
  unsigned char *buf = malloc(VM_STREAM_MAX_BLOCK);
  m->short_reads = true;
  int rc = vm_sreader_start(&r, mem_read, m);
  if (rc) snprintf(err, errlen, "%s", r.err);
  uint64_t n = 0;
  while (!rc) {
    uint32_t type;
    const unsigned char *p;
    size_t len;
    int k = vm_sreader_next(&r, &type, &p, &len);
    if (k < 0) {
      snprintf(err, errlen, "%s", r.err);
      rc = -1;
      break;
    }
    if (k == 0) {
      if (!vm_p2v_check_done(&c)) {
        snprintf(err, errlen, "truncated");
        rc = -1;
      }
      break;
    }
    n++;
    struct vm_p2v_event ev;
    if (vm_p2v_check(&c, type, p, len, &ev, err, errlen)) {
      rc = -1;
      break;
    }
    if (type == VM_REC_DATA && vm_rec_data_open(&ev.data, NULL, buf, err, errlen)) {
      rc = -1;
      break;
    }
  }
  if (records) *records = n;
  free(buf);
  vm_sreader_free(&r);
  vm_p2v_check_free(&c);
  return rc;
}

static void test_roundtrip(void **state)
{
  (void)state;
  struct mem m;
  good_stream(&m, 1);
  char err[512] = "";
  uint64_t n;
  assert_int_equal(consume(&m, err, sizeof err, &n), 0);
  assert_int_equal(n, 12);
  free(m.p);
}

/* Offsets of each record in a stream. */
static size_t record_offsets(const struct mem *m, size_t *offs, size_t max)
{
  size_t off = VM_STREAM_PREAMBLE, k = 0;
  while (off < m->n && k < max) {
    offs[k++] = off;
    uint32_t len = (uint32_t)m->p[off + 4] | (uint32_t)m->p[off + 5] << 8 | (uint32_t)m->p[off + 6] << 16 |
                   (uint32_t)m->p[off + 7] << 24;
    off += VM_STREAM_HEADER + len + VM_STREAM_TAG;
  }
  return k;
}

static void expect_refused(struct mem *m, const char *needle)
{
  char err[512] = "";
  assert_int_equal(consume(m, err, sizeof err, NULL), -1);
  if (!strstr(err, needle)) fail_msg("expected '%s' in: %s", needle, err);
}

static void test_every_flipped_byte_is_found(void **state)
{
  (void)state;
  struct mem m;
  good_stream(&m, 1);
  /* A byte in every part: preamble's ID, headers, payloads, tags. */
  for (size_t i = 16; i < m.n; i += 37) {
    m.p[i] ^= 0x40;
    char err[512] = "";
    if (consume(&m, err, sizeof err, NULL) == 0) fail_msg("a flipped byte at %zu went through", i);
    m.p[i] ^= 0x40;
  }
  free(m.p);
}

static void test_truncation(void **state)
{
  (void)state;
  struct mem m;
  good_stream(&m, 1);
  size_t full = m.n;
  for (size_t cut = 1; cut < full; cut += 53) {
    m.n = cut;
    char err[512] = "";
    if (consume(&m, err, sizeof err, NULL) == 0) fail_msg("a stream cut at %zu of %zu went through", cut, full);
  }
  m.n = 0;
  expect_refused(&m, "empty");
  free(m.p);
}

static void test_lost_repeated_swapped_spliced(void **state)
{
  (void)state;
  struct mem m, other;
  good_stream(&m, 1);
  good_stream(&other, 2);
  size_t offs[32];
  size_t n = record_offsets(&m, offs, 32);
  assert_int_equal(n, 12);
  unsigned char *orig = malloc(m.n);
  memcpy(orig, m.p, m.n);
  size_t len = m.n;

  /* Record 3 lost. */
  memmove(m.p + offs[3], orig + offs[4], len - offs[4]);
  m.n = len - (offs[4] - offs[3]);
  expect_refused(&m, "where record 3 belongs");

  /* Record 2 repeated. */
  m.p = realloc(m.p, len * 2);
  memcpy(m.p, orig, offs[3]);
  memcpy(m.p + offs[3], orig + offs[2], offs[3] - offs[2]);
  memcpy(m.p + offs[3] + (offs[3] - offs[2]), orig + offs[3], len - offs[3]);
  m.n = len + (offs[3] - offs[2]);
  expect_refused(&m, "where record 3 belongs");

  /* Records 2 and 3 swapped. */
  memcpy(m.p, orig, offs[2]);
  memcpy(m.p + offs[2], orig + offs[3], offs[4] - offs[3]);
  memcpy(m.p + offs[2] + (offs[4] - offs[3]), orig + offs[2], offs[3] - offs[2]);
  memcpy(m.p + offs[4], orig + offs[4], len - offs[4]);
  m.n = len;
  expect_refused(&m, "where record 2 belongs");

  /* Record 5 taken from another stream with the same content but another ID:
   * its sequence number fits, its chain does not. */
  memcpy(m.p, orig, len);
  size_t o2[32];
  record_offsets(&other, o2, 32);
  assert_int_equal(o2[6] - o2[5], offs[6] - offs[5]);
  memcpy(m.p + offs[5], other.p + o2[5], offs[6] - offs[5]);
  expect_refused(&m, "checksum does not match");

  /* The whole stream twice: bytes after the trailer. */
  memcpy(m.p, orig, len);
  memcpy(m.p + len, orig, len);
  m.n = 2 * len;
  char err[512] = "";
  assert_int_equal(consume(&m, err, sizeof err, NULL), -1);
  free(orig);
  free(m.p);
  free(other.p);
}

static void test_preamble(void **state)
{
  (void)state;
  struct mem m;
  good_stream(&m, 1);
  m.p[0] = 'X';
  expect_refused(&m, "not a p2v stream");
  m.p[0] = 'V';
  m.p[8] = 2;
  expect_refused(&m, "newer");
  m.p[8] = 1;
  m.p[12] = 1;
  expect_refused(&m, "flags");
  free(m.p);
}

/* A stream whose records are framed right but break the checker's rules. */
static void rules_case(const char *needle, void (*body)(struct vm_swriter *w))
{
  struct mem m = { 0 };
  struct vm_swriter w;
  unsigned char id[16] = { 9 };
  assert_int_equal(vm_swriter_start(&w, mem_write, &m, id), 0);
  body(&w);
  expect_refused(&m, needle);
  free(m.p);
}

static void inv(struct vm_swriter *w)
{
  put_json(w, VM_REC_INVENTORY, "{\"disks\":[{\"name\":\"sda\",\"size\":197608}]}");
}
static void begin1(struct vm_swriter *w)
{
  put_json(w, VM_REC_DISK_BEGIN, "{\"disk\":0,\"name\":\"sda\",\"size\":197608,\"block_size\":65536,\"pass\":1}");
}
static void no_inventory(struct vm_swriter *w) { begin1(w); }
static void gap(struct vm_swriter *w)
{
  inv(w);
  begin1(w);
  put_data(w, 0, 0, BS, 1, true, NULL);
  put_data(w, 0, 2 * BS, BS, 1, true, NULL);
}
static void short_pass(struct vm_swriter *w)
{
  inv(w);
  begin1(w);
  put_data(w, 0, 0, BS, 1, true, NULL);
  put_json(w, VM_REC_DISK_END, "{\"disk\":0,\"pass\":1,\"digest\":\"00\"}");
}
static void bad_digest(struct vm_swriter *w)
{
  inv(w);
  begin1(w);
  put_hole(w, 0, 0, DISK_SIZE, VM_HOLE_FREE);
  put_json(w, VM_REC_DISK_END,
           "{\"disk\":0,\"pass\":1,\"digest\":\"0000000000000000000000000000000000000000000000000000000000000000\"}");
}
static void past_end(struct vm_swriter *w)
{
  inv(w);
  begin1(w);
  put_hole(w, 0, 0, DISK_SIZE + BS, VM_HOLE_FREE);
}
static void wrong_size(struct vm_swriter *w)
{
  inv(w);
  put_json(w, VM_REC_DISK_BEGIN, "{\"disk\":0,\"name\":\"sda\",\"size\":4096,\"block_size\":65536,\"pass\":1}");
}
static void early_trailer(struct vm_swriter *w)
{
  inv(w);
  put_json(w, VM_REC_TRAILER, "{}");
}
static void agent_abort(struct vm_swriter *w)
{
  inv(w);
  put_json(w, VM_REC_ABORT, "{\"error\":\"cannot read /dev/sda\\u0007\"}");
}
static void unknown_type(struct vm_swriter *w)
{
  inv(w);
  assert_int_equal(vm_swriter_put(w, 99, "x", 1, NULL, 0), 0);
}
static void bad_block(struct vm_swriter *w)
{
  inv(w);
  begin1(w);
  /* A stored block whose SHA-256 is of other bytes. */
  struct vm_rec_data d = { .disk = 0, .codec = VM_CODEC_STORED, .offset = 0, .length = BS };
  unsigned char hdr[VM_STREAM_DATA_HEADER], *raw = calloc(1, BS);
  vm_rec_data_header(hdr, &d);
  assert_int_equal(vm_swriter_put(w, VM_REC_DATA, hdr, sizeof hdr, raw, BS), 0);
  free(raw);
}
static void not_json(struct vm_swriter *w)
{
  assert_int_equal(vm_swriter_put(w, VM_REC_INVENTORY, "{\"disks\":[", 10, NULL, 0), 0);
}

static void test_rules(void **state)
{
  (void)state;
  rules_case("not INVENTORY", no_inventory);
  rules_case("where 65536 comes next", gap);
  rules_case("blocks lost", short_pass);
  rules_case("does not match its digest", bad_digest);
  rules_case("past the disk's end", past_end);
  rules_case("in the inventory", wrong_size);
  rules_case("before disk 0 was sent", early_trailer);
  rules_case("p2v-agent failed: cannot read /dev/sda?", agent_abort);
  rules_case("unknown type", unknown_type);
  rules_case("does not match its checksum", bad_block);
  rules_case("not a JSON object", not_json);
}

static void test_digest(void **state)
{
  (void)state;
  struct vm_digest d;
  assert_int_equal(vm_digest_init(&d, DISK_SIZE, 1000), -1); /* not a power of two */
  assert_int_equal(vm_digest_init(&d, DISK_SIZE, BS), 0);
  assert_int_equal(d.nblocks, 4);
  unsigned char a[32], b[32], z[32];
  vm_digest_final(&d, a);
  /* All holes: the digest of the block hashes of zeros. */
  unsigned char *zeros = calloc(1, DISK_SIZE), cat[4 * 32];
  for (int i = 0; i < 4; i++) SHA256(zeros, i == 3 ? 1000 : BS, cat + 32 * i);
  SHA256(cat, sizeof cat, z);
  assert_memory_equal(a, z, 32);
  unsigned char s[32] = { 1 };
  vm_digest_set(&d, 1, s);
  vm_digest_final(&d, b);
  assert_memory_not_equal(a, b, 32);
  vm_digest_zero(&d, 1);
  vm_digest_final(&d, b);
  assert_memory_equal(a, b, 32);
  free(zeros);
  vm_digest_free(&d);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_roundtrip),
    cmocka_unit_test(test_every_flipped_byte_is_found),
    cmocka_unit_test(test_truncation),
    cmocka_unit_test(test_lost_repeated_swapped_spliced),
    cmocka_unit_test(test_preamble),
    cmocka_unit_test(test_rules),
    cmocka_unit_test(test_digest),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
