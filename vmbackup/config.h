/* The config file of a vmbackup repository (man/vmbackup-repository.5): what the
 * repository is, and its key wrapped under the passphrase. JSON, read as
 * untrusted text. */
#ifndef VMBACKUP_CONFIG_H
#define VMBACKUP_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include "crypto.h"

#define VB_FORMAT_VERSION 1
#define VB_CHUNK_MIN (64u << 10)
#define VB_CHUNK_MAX (4u << 20)
#define VB_CHUNK_DEFAULT (256u << 10)

struct vb_config {
  unsigned char id[16];     /* the repository's ID */
  unsigned chunk_size;      /* a power of two, VB_CHUNK_MIN..VB_CHUNK_MAX */
  int zstd_level;           /* 1..19 */
  bool encrypted;           /* AES-256-GCM and HMAC-SHA-256 ids; else none, SHA-256 ids */
  struct vb_kdf kdf;        /* encrypted only */
  unsigned char wrapped[VB_WRAPPED_LEN];
};

/* The parameters bound to the wrapped key (vb_key_wrap's associated data), in
 * canonical form: the repository ID, chunk size, hash, cipher and scrypt's
 * parameters. buf needs 160 bytes. */
#define VB_CONFIG_AAD_MAX 160
void vb_config_aad(const struct vb_config *c, char buf[VB_CONFIG_AAD_MAX]);
/* The file's text (a malloc'd string), or NULL. */
char *vb_config_encode(const struct vb_config *c);
/* Parses text (len bytes): every field present, of its type and in its range,
 * nothing unknown. 0, or -1 with *why (a static string). */
int vb_config_parse(const char *text, size_t len, struct vb_config *c, const char **why);

#endif
