/* vmbackup's crypto framing (man/vmbackup-repository.5): chunk ids, records
 * compressed with zstd and sealed with AES-256-GCM, and the repository key
 * wrapped under a passphrase by scrypt. Pure functions over memory: the pack,
 * index and manifest code hand them bytes. */
#ifndef VMBACKUP_CRYPTO_H
#define VMBACKUP_CRYPTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VB_ID_LEN 32
#define VB_NONCE_LEN 12
#define VB_TAG_LEN 16
/* type, flags, id, raw length, nonce */
#define VB_REC_HEAD (1 + 1 + VB_ID_LEN + 4 + VB_NONCE_LEN)
/* The largest raw content of a record: a manifest's (its chunk tables, 32 bytes
 * per chunk: 2 TiB of disks at 256 KiB chunks). */
#define VB_RAW_MAX (256u << 20)

enum vb_rec_type { VB_REC_CHUNK = 1, VB_REC_MANIFEST = 2 };
#define VB_FLAG_ZSTD 0x01

/* The repository's key: the data key seals records, the id key names chunks.
 * encrypted false: a repository made with --encryption none (ids are plain
 * SHA-256, records are not sealed, only checksummed). */
struct vb_keys {
  bool encrypted;
  unsigned char data[32], id[32];
};

/* scrypt's parameters (N = 2^log_n), and the salt. */
struct vb_kdf {
  int log_n, r, p;
  unsigned char salt[16];
};

/* A new random key. 0, or -1 when the system has no randomness to give. */
int vb_keys_new(struct vb_keys *k, bool encrypted);
/* vmbackup's process only (not the nbdkit plugin): chunk buffers from the
 * heap, kept (not an mmap and munmap each: page faults cost more than the
 * copy), and scrypt's memory in huge pages. */
void vb_crypto_init(void);
void vb_keys_wipe(struct vb_keys *k);

/* The id of a chunk: HMAC-SHA-256 under the id key, or SHA-256 when the
 * repository is not encrypted. */
void vb_chunk_id(const struct vb_keys *k, const void *data, size_t n, unsigned char id[VB_ID_LEN]);

/* The most bytes vb_seal writes for raw content of n bytes. */
size_t vb_seal_bound(size_t n);
/* One record without its 4-byte length: type, flags, id, raw length, nonce, the
 * content (zstd at level, when that makes it smaller), the tag. Writes *outlen
 * bytes to out (vb_seal_bound(n) of room). 0, or -1 (n too large, a library
 * failure). */
int vb_seal(const struct vb_keys *k, int level, enum vb_rec_type type, const unsigned char id[VB_ID_LEN],
            const void *raw, size_t n, unsigned char *out, size_t *outlen);
/* Opens a record of len bytes that must be of type want with id want_id (the
 * caller's: the chunk it looked up, the snapshot it reads): checks every length
 * against len, the type and id, the tag (a record altered, swapped for another,
 * or sealed under another key fails), the raw length, and for a chunk that its
 * content has its id. Writes the raw content (at most cap bytes) to raw; on a
 * failure raw holds zeros, never unauthenticated bytes. 0, or -1 with *why set
 * to a static reason. */
int vb_open(const struct vb_keys *k, enum vb_rec_type want, const unsigned char want_id[VB_ID_LEN],
            const unsigned char *rec, size_t len, void *raw, size_t cap, size_t *rawlen, const char **why);

/* The key sealed under a key scrypt derives from the passphrase: nonce, the 64
 * key bytes encrypted, tag. */
#define VB_WRAPPED_LEN (VB_NONCE_LEN + 64 + VB_TAG_LEN)
/* New parameters for wrapping: log_n (17: 128 MiB, about a second here), r 8,
 * p 1, a random salt. */
int vb_kdf_new(struct vb_kdf *kdf, int log_n);
/* Whether scrypt's parameters are within what vmbackup accepts: at most 1 GiB of
 * memory (128 * r * N), N below 2^(16 r), p from 1 to 4. */
bool vb_kdf_ok(const struct vb_kdf *kdf);
/* aad: the repository's parameters in canonical form (vb_config_aad), bound to
 * the wrapped key, so that a config edited to weaken them no longer opens it. */
int vb_key_wrap(const struct vb_keys *k, const char *pass, size_t passlen, const struct vb_kdf *kdf,
                const char *aad, unsigned char out[VB_WRAPPED_LEN]);
/* 0; 1 when the passphrase is wrong, or the key or the parameters bound to it
 * were altered; -1 on a library failure or parameters out of range. */
int vb_key_unwrap(const unsigned char in[VB_WRAPPED_LEN], const char *pass, size_t passlen,
                  const struct vb_kdf *kdf, const char *aad, struct vb_keys *k);

#endif
