/* Fuzz target: vb_open, the framing of a sealed record (untrusted bytes from a
 * pack or a manifest file, man/vmbackup-repository.5).
 *
 * The input's first byte says how to read the rest, the record:
 *   bit 0  under a fixed key (AES-256-GCM, HMAC ids), else unencrypted (SHA-256)
 *   bit 1  asked for as a manifest, else as a chunk
 *   bit 2  its tag made right first: the checksum, or under the key the body
 *          sealed in place as if it were the plaintext; mutations then reach
 *          the lengths and zstd behind the tag, as a key holder's could
 *   bit 3  with bit 2, a chunk's id made its content's first
 *   bit 4-5  room for the content: 256 KiB, its length, one byte less, 64 bytes
 * It is asked for under its own id. A record that opens is what it claims (type,
 * id, length; a chunk's content has its id) and seals again to a record that
 * opens to the same; one that does not leaves nothing in the buffer but zeros
 * and the bytes that were there before. */
#include <stdbool.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/sha.h>
#include <zstd.h>

#include "../../vmbackup/crypto.h"
#include "fuzz.h"

#define ROOM (256u << 10)
#define BEFORE 0xa5

static void fixed_keys(struct vb_keys *k, bool encrypted)
{
  FUZZ_CHECK(vb_keys_new(k, false) == 0);
  if (!encrypted) return;
  k->encrypted = true;
  for (int i = 0; i < 32; i++) k->data[i] = (unsigned char)i, k->id[i] = (unsigned char)(0x80 + i);
}

static uint32_t get32(const unsigned char *p)
{
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void fix_up(const struct vb_keys *k, unsigned char *rec, size_t len, bool fix_id)
{
  if (len < VB_REC_HEAD + VB_TAG_LEN) return;
  size_t clen = len - VB_REC_HEAD - VB_TAG_LEN;
  unsigned char *body = rec + VB_REC_HEAD, *tag = body + clen, *nonce = rec + 2 + VB_ID_LEN + 4;
  uint32_t n = get32(rec + 2 + VB_ID_LEN);
  if (fix_id && !(rec[1] & VB_FLAG_ZSTD) && clen == n) {
    vb_chunk_id(k, body, n, rec + 2);
  } else if (fix_id && n <= ROOM) {
    unsigned char *raw = malloc(n ? n : 1);
    size_t got = ZSTD_decompress(raw, n, body, clen);
    if (!ZSTD_isError(got) && got == n) vb_chunk_id(k, raw, n, rec + 2);
    free(raw);
  }
  if (!k->encrypted) {
    unsigned char sum[SHA256_DIGEST_LENGTH];
    SHA256(rec, VB_REC_HEAD + clen, sum);
    memcpy(tag, sum, VB_TAG_LEN);
    return;
  }
  EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
  int l;
  FUZZ_CHECK(c && EVP_EncryptInit_ex(c, EVP_aes_256_gcm(), NULL, NULL, NULL) == 1 &&
             EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_IVLEN, VB_NONCE_LEN, NULL) == 1 &&
             EVP_EncryptInit_ex(c, NULL, NULL, k->data, nonce) == 1 &&
             EVP_EncryptUpdate(c, NULL, &l, rec, VB_REC_HEAD) == 1 &&
             (clen == 0 || EVP_EncryptUpdate(c, body, &l, body, (int)clen) == 1) &&
             EVP_EncryptFinal_ex(c, body + clen, &l) == 1 &&
             EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, VB_TAG_LEN, tag) == 1);
  EVP_CIPHER_CTX_free(c);
}

/* The first byte of raw that is neither as it was nor wiped, or cap; a page at a
 * time where it can (a byte at a time is slow under coverage). */
static size_t left_written(const unsigned char *raw, size_t cap)
{
  static unsigned char before[4096], zero[4096];
  memset(before, BEFORE, sizeof before);
  for (size_t i = 0; i < cap; i += sizeof zero) {
    size_t k = cap - i < sizeof zero ? cap - i : sizeof zero;
    if (memcmp(raw + i, before, k) == 0 || memcmp(raw + i, zero, k) == 0) continue;
    for (size_t j = i; j < i + k; j++)
      if (raw[j] != BEFORE && raw[j] != 0) return j;
  }
  return cap;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  if (size < 1) return 0;
  unsigned mode = data[0];
  struct vb_keys k;
  fixed_keys(&k, mode & 1);
  enum vb_rec_type want = mode & 2 ? VB_REC_MANIFEST : VB_REC_CHUNK;
  size_t len = size - 1;
  unsigned char *rec = malloc(len ? len : 1), want_id[VB_ID_LEN] = { 0 };
  FUZZ_CHECK(rec != NULL);
  memcpy(rec, data + 1, len);
  if (mode & 4) fix_up(&k, rec, len, want == VB_REC_CHUNK && (mode & 8));
  if (len >= 2 + VB_ID_LEN) memcpy(want_id, rec + 2, VB_ID_LEN);
  size_t n = len >= VB_REC_HEAD ? get32(rec + 2 + VB_ID_LEN) : 0;
  size_t rooms[] = { ROOM, n < ROOM ? n : ROOM, n && n <= ROOM ? n - 1 : 0, 64 }, cap = rooms[(mode >> 4) & 3];
  /* The last cap bytes of a static buffer, so that ASan sees a write past them
   * (and the pages stay mapped from one run to the next). */
  static unsigned char room[ROOM];
  unsigned char *raw = room + ROOM - cap;
  memset(raw, BEFORE, cap);
  size_t rawlen = 0;
  const char *why = NULL;
  int rc = vb_open(&k, want, want_id, rec, len, raw, cap, &rawlen, &why);
  if (rc != 0) {
    FUZZ_CHECK(rc == -1 && why != NULL);
    size_t i = left_written(raw, cap);
    if (i < cap) fprintf(stderr, "vb_open failed (%s) and left byte %zu of %zu written\n", why, i, cap);
    FUZZ_CHECK(i == cap); /* nothing unauthenticated is left in the buffer */
  } else {
    FUZZ_CHECK(len >= VB_REC_HEAD + VB_TAG_LEN && rec[0] == want && (rec[1] & ~VB_FLAG_ZSTD) == 0);
    FUZZ_CHECK(rawlen == n && n <= cap);
    FUZZ_CHECK((rec[1] & VB_FLAG_ZSTD) || len == VB_REC_HEAD + n + VB_TAG_LEN);
    if (want == VB_REC_CHUNK) {
      unsigned char id[VB_ID_LEN];
      vb_chunk_id(&k, raw, n, id);
      FUZZ_CHECK(memcmp(id, want_id, VB_ID_LEN) == 0);
    }
    /* Sealed again, it opens to the same content. */
    unsigned char *again = malloc(vb_seal_bound(n)), *back = malloc(n ? n : 1);
    size_t alen, blen = 0;
    FUZZ_CHECK(again && back && vb_seal(&k, 1, want, want_id, raw, n, again, &alen) == 0);
    FUZZ_CHECK(vb_open(&k, want, want_id, again, alen, back, n, &blen, &why) == 0);
    FUZZ_CHECK(blen == n && memcmp(back, raw, n) == 0);
    free(again);
    free(back);
  }
  free(rec);
  return 0;
}

#ifdef FUZZ_DRIVER
/* Records made by vb_seal without a key (so the same every time: no nonce), of
 * text that compresses, bytes that do not, nothing, a manifest's text; each as
 * it is, and for a key: sealed under it here (the nonce zeros), and plain for
 * bit 2 to seal. */
void fuzz_seeds(fuzz_add_fn *add)
{
  struct vb_keys none, key;
  fixed_keys(&none, false);
  fixed_keys(&key, true);
  static unsigned char text[3000], noise[300];
  for (size_t i = 0; i < sizeof text; i++) text[i] = (unsigned char)"vmkit backs up "[i % 15];
  uint32_t x = 1;
  for (size_t i = 0; i < sizeof noise; i++) noise[i] = (unsigned char)((x = x * 1103515245u + 12345u) >> 24);
  static const char manifest[] = "VMKSNAP1{\"snapshot\": \"0123456789abcdef0123456789abcdef\"}";
  const struct {
    const char *name;
    const void *raw;
    size_t n;
    enum vb_rec_type type;
  } s[] = { { "text", text, sizeof text, VB_REC_CHUNK },
            { "noise", noise, sizeof noise, VB_REC_CHUNK },
            { "empty", "", 0, VB_REC_CHUNK },
            { "manifest", manifest, sizeof manifest - 1, VB_REC_MANIFEST } };
  for (size_t i = 0; i < sizeof s / sizeof *s; i++) {
    for (int enc = 0; enc < 2; enc++) {
      const struct vb_keys *k = enc ? &key : &none;
      unsigned char id[VB_ID_LEN], *rec = malloc(1 + vb_seal_bound(s[i].n));
      size_t len;
      memset(id, 0x3c, sizeof id);
      if (s[i].type == VB_REC_CHUNK) vb_chunk_id(k, s[i].raw, s[i].n, id);
      FUZZ_CHECK(vb_seal(&none, 3, s[i].type, id, s[i].raw, s[i].n, rec + 1, &len) == 0);
      unsigned mode = (unsigned)enc | (s[i].type == VB_REC_MANIFEST ? 2 : 0);
      char name[64];
      /* Plain, for bit 2 to seal (or checksum). */
      rec[0] = (unsigned char)(mode | 4);
      snprintf(name, sizeof name, "%s-%s-fix", s[i].name, enc ? "key" : "none");
      add(name, rec, len + 1);
      /* Sealed, as it would be in a pack. */
      fix_up(k, rec + 1, len, false);
      rec[0] = (unsigned char)mode;
      snprintf(name, sizeof name, "%s-%s", s[i].name, enc ? "key" : "none");
      add(name, rec, len + 1);
      free(rec);
    }
  }
}
#endif
