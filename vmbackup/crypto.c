/* Chunk ids, sealed records and the wrapped key of a vmbackup repository: the
 * formats of man/vmbackup-repository.5, with OpenSSL and zstd. */
#include <limits.h>
#include <malloc.h>
#include <stdint.h>
#include <stdlib.h>
#include <pthread.h>
#include <string.h>
#include <sys/mman.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <zstd.h>

#include "crypto.h"

static void put32(unsigned char *p, uint32_t v)
{
  for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get32(const unsigned char *p)
{
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

int vb_keys_new(struct vb_keys *k, bool encrypted)
{
  k->encrypted = encrypted;
  memset(k->data, 0, sizeof k->data);
  memset(k->id, 0, sizeof k->id);
  if (!encrypted) return 0;
  return RAND_bytes(k->data, sizeof k->data) == 1 && RAND_bytes(k->id, sizeof k->id) == 1 ? 0 : -1;
}

/* scrypt's memory (128 MiB at the default cost), read in random order, costs
 * half the time in huge pages (TLB misses, page faults). OpenSSL takes it from
 * malloc, and glibc gives a block that big an mmap of its own, which nobody can
 * advise; and OpenSSL's allocator cannot be replaced (a library's constructor
 * has used it before main). So, in vmbackup's own process, the block comes from
 * the heap (no mmap for the call): a region of it advised for huge pages just
 * before, then given back when the key is unwrapped. */
static bool kdf_thp;

void vb_crypto_init(void)
{
  /* A backup's chunk buffers (256 KiB by default, thousands of them) from the
   * heap and back to it, not an mmap and a munmap each. */
  mallopt(M_MMAP_THRESHOLD, 8 << 20);
  mallopt(M_TRIM_THRESHOLD, 128 << 20);
  /* One heap for every thread (set before the first thread): the key is
   * derived on a thread of its own (vb_repo_open_deferred), and a thread's
   * own arena cannot hold scrypt's block, which would then be an mmap of its
   * own again. A backup's threads allocate a few times per chunk only. */
  mallopt(M_ARENA_MAX, 1);
  kdf_thp = true;
}

static void kdf_mem_begin(size_t need)
{
  if (!kdf_thp) return;
  const size_t huge = 2u << 20;
  mallopt(M_TRIM_THRESHOLD, INT_MAX);
  mallopt(M_MMAP_MAX, 0);
  void *p = malloc(need + 2 * huge);
  if (!p) return;
  uintptr_t a = ((uintptr_t)p + huge - 1) & ~(uintptr_t)(huge - 1);
  (void)madvise((void *)a, (need + huge) & ~(huge - 1), MADV_HUGEPAGE);
  free(p);
}

static void kdf_mem_end(void)
{
  if (!kdf_thp) return;
  mallopt(M_MMAP_MAX, 65536);
  mallopt(M_TRIM_THRESHOLD, 128 << 20);
  malloc_trim(0);
}

void vb_keys_wipe(struct vb_keys *k) { OPENSSL_cleanse(k, sizeof *k); }

void vb_chunk_id(const struct vb_keys *k, const void *data, size_t n, unsigned char id[VB_ID_LEN])
{
  unsigned int len = VB_ID_LEN;
  if (k->encrypted) HMAC(EVP_sha256(), k->id, sizeof k->id, data, n, id, &len);
  else SHA256(data, n, id);
}

/* One compression context per thread, made once (a backup's workers seal
 * thousands of chunks each), freed when the thread ends. */
static pthread_key_t cctx_key;
static pthread_once_t cctx_once = PTHREAD_ONCE_INIT;
static void cctx_free(void *p) { ZSTD_freeCCtx(p); }
static void cctx_init(void) { pthread_key_create(&cctx_key, cctx_free); }

static ZSTD_CCtx *thread_cctx(void)
{
  pthread_once(&cctx_once, cctx_init);
  ZSTD_CCtx *c = pthread_getspecific(cctx_key);
  if (!c && (c = ZSTD_createCCtx())) pthread_setspecific(cctx_key, c);
  return c;
}

size_t vb_seal_bound(size_t n) { return VB_REC_HEAD + (n > 0 ? ZSTD_compressBound(n) : 1) + VB_TAG_LEN; }

/* AES-256-GCM over in (n bytes) into out, with associated data. enc: seal (tag
 * written). Else open: 1 when the tag does not match. 0, or -1 on a library
 * failure. */
static int gcm(bool enc, const unsigned char key[32], const unsigned char *nonce, const unsigned char *aad,
               size_t aadlen, const unsigned char *in, size_t n, unsigned char *out, unsigned char *tag)
{
  EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
  int ok = c != NULL, len = 0;
  ok = ok && EVP_CipherInit_ex(c, EVP_aes_256_gcm(), NULL, NULL, NULL, enc) == 1;
  ok = ok && EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_IVLEN, VB_NONCE_LEN, NULL) == 1;
  ok = ok && EVP_CipherInit_ex(c, NULL, NULL, key, nonce, enc) == 1;
  ok = ok && EVP_CipherUpdate(c, NULL, &len, aad, (int)aadlen) == 1;
  ok = ok && (n == 0 || EVP_CipherUpdate(c, out, &len, in, (int)n) == 1);
  if (ok && !enc) ok = EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, VB_TAG_LEN, tag) == 1;
  int rc = ok ? 0 : -1;
  /* Decrypting, only the tag's check fails here. */
  if (ok && EVP_CipherFinal_ex(c, out + (n ? (size_t)len : 0), &len) != 1) rc = enc ? -1 : 1;
  if (rc == 0 && enc && EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, VB_TAG_LEN, tag) != 1) rc = -1;
  EVP_CIPHER_CTX_free(c);
  return rc;
}

int vb_seal(const struct vb_keys *k, int level, enum vb_rec_type type, const unsigned char id[VB_ID_LEN],
            const void *raw, size_t n, unsigned char *out, size_t *outlen)
{
  if (n > VB_RAW_MAX) return -1;
  unsigned char *head = out, *body = out + VB_REC_HEAD;
  /* Compressed in place of the body, kept only when smaller. */
  ZSTD_CCtx *cctx = n ? thread_cctx() : NULL;
  size_t clen = !n ? 0 : cctx ? ZSTD_compressCCtx(cctx, body, ZSTD_compressBound(n), raw, n, level)
                              : ZSTD_compress(body, ZSTD_compressBound(n), raw, n, level);
  bool zst = n && !ZSTD_isError(clen) && clen < n;
  if (!zst) {
    if (n) memcpy(body, raw, n);
    clen = n;
  }
  head[0] = (unsigned char)type;
  head[1] = zst ? VB_FLAG_ZSTD : 0;
  memcpy(head + 2, id, VB_ID_LEN);
  put32(head + 2 + VB_ID_LEN, (uint32_t)n);
  unsigned char *nonce = head + 2 + VB_ID_LEN + 4, *tag = body + clen;
  if (k->encrypted) {
    if (RAND_bytes(nonce, VB_NONCE_LEN) != 1) return -1;
    /* The head (type, flags, id, raw length, nonce) is authenticated. */
    if (gcm(true, k->data, nonce, head, VB_REC_HEAD, body, clen, body, tag) != 0) return -1;
  } else {
    /* No key: a checksum of the head and the content finds damage. */
    unsigned char sum[SHA256_DIGEST_LENGTH];
    memset(nonce, 0, VB_NONCE_LEN);
    SHA256(head, VB_REC_HEAD + clen, sum);
    memcpy(tag, sum, VB_TAG_LEN);
  }
  *outlen = VB_REC_HEAD + clen + VB_TAG_LEN;
  return 0;
}

int vb_open(const struct vb_keys *k, enum vb_rec_type want, const unsigned char want_id[VB_ID_LEN],
            const unsigned char *rec, size_t len, void *raw, size_t cap, size_t *rawlen, const char **why)
{
  if (len < VB_REC_HEAD + VB_TAG_LEN) return *why = "record too short", -1;
  uint8_t t = rec[0], flags = rec[1];
  if (t != VB_REC_CHUNK && t != VB_REC_MANIFEST) return *why = "unknown record type", -1;
  if (t != want) return *why = "record of another type", -1;
  if (memcmp(rec + 2, want_id, VB_ID_LEN) != 0) return *why = "record of another id", -1;
  if (flags & ~VB_FLAG_ZSTD) return *why = "unknown record flags", -1;
  uint32_t n = get32(rec + 2 + VB_ID_LEN);
  if (n > VB_RAW_MAX || n > cap) return *why = "record larger than allowed", -1;
  size_t clen = len - VB_REC_HEAD - VB_TAG_LEN;
  if (clen > ZSTD_compressBound(VB_RAW_MAX)) return *why = "record larger than allowed", -1;
  if (!(flags & VB_FLAG_ZSTD) && clen != n) return *why = "record length does not match its content", -1;
  const unsigned char *nonce = rec + 2 + VB_ID_LEN + 4, *body = rec + VB_REC_HEAD;
  unsigned char tag[VB_TAG_LEN];
  memcpy(tag, body + clen, VB_TAG_LEN);
  /* A compressed content is opened into a buffer of its own, then decompressed
   * into raw. */
  unsigned char *plain = (flags & VB_FLAG_ZSTD) ? OPENSSL_malloc(clen ? clen : 1) : raw;
  if (!plain) return *why = "out of memory", -1;
  int rc = 0;
  if (k->encrypted) {
    int g = gcm(false, k->data, nonce, rec, VB_REC_HEAD, body, clen, plain, tag);
    if (g != 0) rc = -1, *why = g > 0 ? "record fails authentication (altered, or another key)" : "cipher failure";
  } else {
    unsigned char sum[SHA256_DIGEST_LENGTH];
    SHA256(rec, VB_REC_HEAD + clen, sum);
    if (CRYPTO_memcmp(sum, tag, VB_TAG_LEN) != 0) rc = -1, *why = "record checksum does not match";
    else if (clen) memcpy(plain, body, clen);
  }
  if (rc == 0 && (flags & VB_FLAG_ZSTD)) {
    /* Room for n bytes only: content longer than it says fails before it is
     * written past them (where nothing would wipe it). */
    size_t got = ZSTD_decompress(raw, n, plain, clen);
    if (ZSTD_isError(got) || got != n) rc = -1, *why = "record does not decompress to its length";
  }
  if (plain != raw) OPENSSL_clear_free(plain, clen ? clen : 1);
  if (rc == 0 && t == VB_REC_CHUNK) {
    unsigned char have[VB_ID_LEN];
    vb_chunk_id(k, raw, n, have);
    if (memcmp(have, want_id, VB_ID_LEN) != 0) rc = -1, *why = "chunk content does not match its id";
  }
  if (rc) {
    /* Nothing unauthenticated stays behind. */
    OPENSSL_cleanse(raw, cap < (size_t)n ? cap : (size_t)n);
    return rc;
  }
  *rawlen = n;
  return 0;
}

int vb_kdf_new(struct vb_kdf *kdf, int log_n)
{
  kdf->log_n = log_n;
  kdf->r = 8;
  kdf->p = 1;
  return RAND_bytes(kdf->salt, sizeof kdf->salt) == 1 ? 0 : -1;
}

bool vb_kdf_ok(const struct vb_kdf *kdf)
{
  if (kdf->log_n < 10 || kdf->log_n > 30 || kdf->r < 1 || kdf->r > 64 || kdf->p < 1 || kdf->p > 4) return false;
  uint64_t n = 1ull << kdf->log_n;
  /* OpenSSL's rule (N < 2^(16 r)), and at most 1 GiB of memory. */
  if (kdf->r < 4 && kdf->log_n >= 16 * kdf->r) return false;
  return 128ull * (uint64_t)kdf->r * n <= (1ull << 30);
}

/* The key-encrypting key. scrypt needs 128 * r * (N + p + 2) bytes. */
static int derive(const char *pass, size_t passlen, const struct vb_kdf *kdf, unsigned char kek[32])
{
  if (!vb_kdf_ok(kdf)) return -1;
  uint64_t n = 1ull << kdf->log_n, mem = 128ull * (uint64_t)kdf->r * (n + (uint64_t)kdf->p + 2) + (1u << 20);
  kdf_mem_begin((size_t)mem);
  int ok = EVP_PBE_scrypt(pass, passlen, kdf->salt, sizeof kdf->salt, n, (uint64_t)kdf->r, (uint64_t)kdf->p, mem, kek,
                          32);
  kdf_mem_end();
  return ok == 1 ? 0 : -1;
}

int vb_key_wrap(const struct vb_keys *k, const char *pass, size_t passlen, const struct vb_kdf *kdf,
                const char *aad, unsigned char out[VB_WRAPPED_LEN])
{
  unsigned char kek[32], plain[64];
  if (derive(pass, passlen, kdf, kek) < 0) return -1;
  int rc = RAND_bytes(out, VB_NONCE_LEN) == 1 ? 0 : -1;
  memcpy(plain, k->data, 32);
  memcpy(plain + 32, k->id, 32);
  if (rc == 0)
    rc = gcm(true, kek, out, (const unsigned char *)aad, strlen(aad), plain, 64, out + VB_NONCE_LEN,
             out + VB_NONCE_LEN + 64) == 0 ? 0 : -1;
  OPENSSL_cleanse(kek, sizeof kek);
  OPENSSL_cleanse(plain, sizeof plain);
  return rc;
}

int vb_key_unwrap(const unsigned char in[VB_WRAPPED_LEN], const char *pass, size_t passlen,
                  const struct vb_kdf *kdf, const char *aad, struct vb_keys *k)
{
  unsigned char kek[32], plain[64], tag[VB_TAG_LEN];
  if (derive(pass, passlen, kdf, kek) < 0) return -1;
  memcpy(tag, in + VB_NONCE_LEN + 64, VB_TAG_LEN);
  int rc = gcm(false, kek, in, (const unsigned char *)aad, strlen(aad), in + VB_NONCE_LEN, 64, plain, tag);
  OPENSSL_cleanse(kek, sizeof kek);
  if (rc == 0) {
    k->encrypted = true;
    memcpy(k->data, plain, 32);
    memcpy(k->id, plain + 32, 32);
  }
  OPENSSL_cleanse(plain, sizeof plain);
  return rc;
}
