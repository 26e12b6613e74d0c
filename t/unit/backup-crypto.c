/* vmbackup's crypto framing (man/vmbackup-repository.5): records sealed and
 * opened, every altered byte refused, the key wrapped under a passphrase. Runs
 * under AddressSanitizer and UBSan: vb_open reads untrusted bytes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/sha.h>
#include <zstd.h>

#include "../../vmbackup/crypto.h"

static unsigned char *sample(size_t n, bool random_bytes)
{
  unsigned char *p = malloc(n ? n : 1);
  for (size_t i = 0; i < n; i++) p[i] = random_bytes ? (unsigned char)rand() : (unsigned char)("vmkit "[i % 6]);
  return p;
}

/* Seals raw, opens it again, returns the record (and its length). */
static unsigned char *round_trip(const struct vb_keys *k, const unsigned char *raw, size_t n, size_t *len, bool *zst)
{
  unsigned char id[VB_ID_LEN], back_id[VB_ID_LEN];
  vb_chunk_id(k, raw, n, id);
  unsigned char *rec = malloc(vb_seal_bound(n));
  assert_int_equal(vb_seal(k, 3, VB_REC_CHUNK, id, raw, n, rec, len), 0);
  assert_true(*len <= vb_seal_bound(n));
  *zst = rec[1] & VB_FLAG_ZSTD;
  unsigned char *back = malloc(n ? n : 1);
  size_t got = 99;
  const char *why = NULL;
  assert_int_equal(vb_open(k, VB_REC_CHUNK, id, rec, *len, back, n, &got, &why), 0);
  assert_int_equal(got, n);
  (void)back_id;
  if (n) assert_memory_equal(back, raw, n);
  free(back);
  return rec;
}

static void seals_and_opens(void **state)
{
  for (int enc = 0; enc < 2; enc++) {
    struct vb_keys k;
    assert_int_equal(vb_keys_new(&k, enc), 0);
    size_t sizes[] = { 0, 1, 4096, 262144 };
    for (size_t i = 0; i < 4; i++) {
      for (int rnd = 0; rnd < 2; rnd++) {
        unsigned char *raw = sample(sizes[i], rnd);
        size_t len;
        bool zst;
        free(round_trip(&k, raw, sizes[i], &len, &zst));
        /* Text compresses; random bytes are kept as they are. */
        if (sizes[i] >= 4096) assert_int_equal(zst, !rnd);
        free(raw);
      }
    }
  }
}

/* Every single altered byte of a record is refused, encrypted or not. */
static void refuses_every_altered_byte(void **state)
{
  for (int enc = 0; enc < 2; enc++) {
    struct vb_keys k;
    assert_int_equal(vb_keys_new(&k, enc), 0);
    for (int rnd = 0; rnd < 2; rnd++) {
      unsigned char *raw = sample(3000, rnd), back[3000], id[VB_ID_LEN];
      size_t len, got;
      bool zst;
      unsigned char *rec = round_trip(&k, raw, 3000, &len, &zst);
      vb_chunk_id(&k, raw, 3000, id);
      for (size_t i = 0; i < len; i++) {
        const char *why = NULL;
        rec[i] ^= 0x20;
        memset(back, 0x55, sizeof back);
        assert_int_equal(vb_open(&k, VB_REC_CHUNK, id, rec, len, back, sizeof back, &got, &why), -1);
        assert_non_null(why);
        /* Nothing unauthenticated is left in the buffer. */
        for (size_t j = 0; j < sizeof back; j++) assert_true(back[j] == 0 || back[j] == 0x55);
        rec[i] ^= 0x20;
      }
      /* Cut short, or with bytes added. */
      for (size_t cut = 0; cut < len; cut += 97) {
        const char *why = NULL;
        assert_int_equal(vb_open(&k, VB_REC_CHUNK, id, rec, cut, back, sizeof back, &got, &why), -1);
      }
      free(rec);
      free(raw);
    }
  }
}

static void another_key_fails(void **state)
{
  struct vb_keys a, b;
  assert_int_equal(vb_keys_new(&a, true), 0);
  assert_int_equal(vb_keys_new(&b, true), 0);
  unsigned char *raw = sample(5000, false), back[5000], id[VB_ID_LEN];
  size_t len, got;
  bool zst;
  unsigned char *rec = round_trip(&a, raw, 5000, &len, &zst);
  const char *why = NULL;
  vb_chunk_id(&a, raw, 5000, id);
  assert_int_equal(vb_open(&b, VB_REC_CHUNK, id, rec, len, back, sizeof back, &got, &why), -1);
  /* A buffer too small for the content is refused before anything is written. */
  memset(back, 0x55, sizeof back);
  assert_int_equal(vb_open(&a, VB_REC_CHUNK, id, rec, len, back, 4999, &got, &why), -1);
  for (size_t j = 0; j < sizeof back; j++) assert_int_equal(back[j], 0x55);
  /* Asked as another type or id: refused (a chunk is not a manifest). */
  assert_int_equal(vb_open(&a, VB_REC_MANIFEST, id, rec, len, back, sizeof back, &got, &why), -1);
  assert_string_equal(why, "record of another type");
  unsigned char other[VB_ID_LEN];
  memcpy(other, id, VB_ID_LEN);
  other[5] ^= 1;
  assert_int_equal(vb_open(&a, VB_REC_CHUNK, other, rec, len, back, sizeof back, &got, &why), -1);
  assert_string_equal(why, "record of another id");
  /* Ids are keyed: the same data has another id under another key, and the
   * plain SHA-256 without encryption. */
  unsigned char ia[VB_ID_LEN], ib[VB_ID_LEN], ic[VB_ID_LEN];
  struct vb_keys none;
  vb_keys_new(&none, false);
  vb_chunk_id(&a, raw, 5000, ia);
  vb_chunk_id(&b, raw, 5000, ib);
  vb_chunk_id(&none, raw, 5000, ic);
  assert_memory_not_equal(ia, ib, VB_ID_LEN);
  assert_memory_not_equal(ia, ic, VB_ID_LEN);
  free(rec);
  free(raw);
}

/* A manifest record names its snapshot in the id field: no content check. */
static void manifests_keep_their_id(void **state)
{
  struct vb_keys k;
  assert_int_equal(vb_keys_new(&k, true), 0);
  unsigned char id[VB_ID_LEN] = { 0xab, 0xcd }, back_id[VB_ID_LEN], back[64];
  const char text[] = "{\"snapshot\": \"x\"}";
  unsigned char rec[256];
  size_t len, got;
  assert_int_equal(vb_seal(&k, 3, VB_REC_MANIFEST, id, text, sizeof text, rec, &len), 0);
  const char *why;
  assert_int_equal(vb_open(&k, VB_REC_MANIFEST, id, rec, len, back, sizeof back, &got, &why), 0);
  assert_string_equal((char *)back, text);
  /* Another snapshot's manifest, or read as a chunk: refused. */
  memcpy(back_id, id, VB_ID_LEN);
  back_id[0] ^= 1;
  assert_int_equal(vb_open(&k, VB_REC_MANIFEST, back_id, rec, len, back, sizeof back, &got, &why), -1);
  assert_int_equal(vb_open(&k, VB_REC_CHUNK, id, rec, len, back, sizeof back, &got, &why), -1);
}

/* Random bytes as records, with a valid checksum (anyone can make one without a
 * key) and sometimes a zstd flag: refused or opened whole, never a crash (ASan
 * watches); the id check stops content that is not the chunk asked for. */
static void random_records_are_refused(void **state)
{
  struct vb_keys k;
  assert_int_equal(vb_keys_new(&k, false), 0);
  unsigned char rec[512], id[VB_ID_LEN], back[1024];
  for (int i = 0; i < 20000; i++) {
    size_t len = VB_REC_HEAD + VB_TAG_LEN + (size_t)rand() % (sizeof rec - VB_REC_HEAD - VB_TAG_LEN);
    for (size_t j = 0; j < len; j++) rec[j] = (unsigned char)rand();
    size_t clen = len - VB_REC_HEAD - VB_TAG_LEN;
    rec[0] = VB_REC_CHUNK;
    rec[1] = (unsigned char)(rand() % 2);
    uint32_t n = rec[1] ? (uint32_t)(rand() % 1024) : (uint32_t)clen;
    for (int b = 0; b < 4; b++) rec[2 + VB_ID_LEN + b] = (unsigned char)(n >> (8 * b));
    if (rec[1] && rand() % 2) {
      /* A real zstd frame of random length. */
      unsigned char plain[300];
      for (size_t j = 0; j < sizeof plain; j++) plain[j] = (unsigned char)(rand() % 4);
      size_t z = ZSTD_compress(rec + VB_REC_HEAD, sizeof rec - VB_REC_HEAD - VB_TAG_LEN, plain, sizeof plain, 1);
      assert_false(ZSTD_isError(z));
      len = VB_REC_HEAD + z + VB_TAG_LEN;
      clen = z;
    }
    memcpy(id, rec + 2, VB_ID_LEN);
    unsigned char sum[32];
    SHA256(rec, VB_REC_HEAD + clen, sum);
    memcpy(rec + VB_REC_HEAD + clen, sum, VB_TAG_LEN);
    size_t got;
    const char *why;
    /* The checksum holds; the content is not the chunk of that id. */
    assert_int_equal(vb_open(&k, VB_REC_CHUNK, id, rec, len, back, sizeof back, &got, &why), -1);
  }
}

/* A record whose zstd content is longer than its raw length says (the checksum
 * right: anyone can make one without a key): refused, and nothing of that content
 * is left in the buffer, past that length either. */
static void refused_content_is_wiped(void **state)
{
  struct vb_keys k;
  assert_int_equal(vb_keys_new(&k, false), 0);
  unsigned char *raw = sample(3000, false), *rec = malloc(vb_seal_bound(3000)), id[VB_ID_LEN], back[4096], sum[32];
  size_t len, got;
  vb_chunk_id(&k, raw, 3000, id);
  assert_int_equal(vb_seal(&k, 3, VB_REC_CHUNK, id, raw, 3000, rec, &len), 0);
  assert_true(rec[1] & VB_FLAG_ZSTD);
  /* The raw length made 11, the checksum made right again. */
  memcpy(rec + 2 + VB_ID_LEN, "\x0b\0\0\0", 4);
  SHA256(rec, len - VB_TAG_LEN, sum);
  memcpy(rec + len - VB_TAG_LEN, sum, VB_TAG_LEN);
  memset(back, 0x55, sizeof back);
  const char *why = NULL;
  assert_int_equal(vb_open(&k, VB_REC_CHUNK, id, rec, len, back, sizeof back, &got, &why), -1);
  assert_string_equal(why, "record does not decompress to its length");
  for (size_t j = 0; j < sizeof back; j++) assert_true(back[j] == 0 || back[j] == 0x55);
  free(rec);
  free(raw);
}

static void wraps_the_key_under_a_passphrase(void **state)
{
  struct vb_keys k, back;
  struct vb_kdf kdf;
  unsigned char w[VB_WRAPPED_LEN];
  assert_int_equal(vb_keys_new(&k, true), 0);
  /* Small parameters: the test is about the framing, not the cost. */
  assert_int_equal(vb_kdf_new(&kdf, 12), 0);
  const char *aad = "vmbackup key v1 id=00 chunk_size=262144";
  assert_int_equal(vb_key_wrap(&k, "correct horse", 13, &kdf, aad, w), 0);
  assert_int_equal(vb_key_unwrap(w, "correct horse", 13, &kdf, aad, &back), 0);
  assert_memory_equal(back.data, k.data, 32);
  assert_memory_equal(back.id, k.id, 32);
  assert_true(back.encrypted);
  assert_int_equal(vb_key_unwrap(w, "correct horsE", 13, &kdf, aad, &back), 1);
  /* The parameters bound to the key: a config edited to weaken them fails. */
  assert_int_equal(vb_key_unwrap(w, "correct horse", 13, &kdf, "vmbackup key v1 id=00 chunk_size=65536", &back), 1);
  struct vb_kdf other = kdf;
  other.salt[0] ^= 1;
  assert_int_equal(vb_key_unwrap(w, "correct horse", 13, &other, aad, &back), 1);
  w[VB_NONCE_LEN + 3] ^= 1;
  assert_int_equal(vb_key_unwrap(w, "correct horse", 13, &kdf, aad, &back), 1);
  /* Parameters out of range are refused, not tried: OpenSSL's N < 2^(16 r), and
   * at most 1 GiB of memory. */
  other = kdf;
  other.log_n = 40;
  assert_int_equal(vb_key_unwrap(w, "correct horse", 13, &other, aad, &back), -1);
  other = kdf;
  other.r = 1;
  other.log_n = 16;
  assert_false(vb_kdf_ok(&other));
  other.log_n = 15;
  assert_true(vb_kdf_ok(&other));
  other.r = 8;
  other.log_n = 20;
  assert_true(vb_kdf_ok(&other));
  other.log_n = 21;
  assert_false(vb_kdf_ok(&other));
  vb_keys_wipe(&k);
}

int main(void)
{
  srand(7);
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(seals_and_opens),
    cmocka_unit_test(refuses_every_altered_byte),
    cmocka_unit_test(another_key_fails),
    cmocka_unit_test(manifests_keep_their_id),
    cmocka_unit_test(random_records_are_refused),
    cmocka_unit_test(refused_content_is_wiped),
    cmocka_unit_test(wraps_the_key_under_a_passphrase),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
