/* Fuzz target: vb_config_parse, a repository's config file (untrusted text,
 * man/vmbackup-repository.5). A config that parses is within its ranges, its
 * wrapped key's parameters fit their canonical form, and it encodes with
 * vb_config_encode to a text that parses back to the same config. */
#include <stdbool.h>
#include <string.h>

#include "../../vmbackup/config.h"
#include "fuzz.h"

static bool same(const struct vb_config *a, const struct vb_config *b)
{
  return memcmp(a->id, b->id, sizeof a->id) == 0 && a->chunk_size == b->chunk_size &&
         a->zstd_level == b->zstd_level && a->encrypted == b->encrypted && a->kdf.log_n == b->kdf.log_n &&
         a->kdf.r == b->kdf.r && a->kdf.p == b->kdf.p && memcmp(a->kdf.salt, b->kdf.salt, sizeof a->kdf.salt) == 0 &&
         memcmp(a->wrapped, b->wrapped, sizeof a->wrapped) == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  struct vb_config c, back;
  const char *why = NULL;
  if (vb_config_parse((const char *)data, size, &c, &why) != 0) {
    FUZZ_CHECK(why != NULL);
    return 0;
  }
  FUZZ_CHECK(c.chunk_size >= VB_CHUNK_MIN && c.chunk_size <= VB_CHUNK_MAX && (c.chunk_size & (c.chunk_size - 1)) == 0);
  FUZZ_CHECK(c.zstd_level >= 1 && c.zstd_level <= 19);
  static const struct vb_kdf none;
  FUZZ_CHECK(c.encrypted ? vb_kdf_ok(&c.kdf) : memcmp(&c.kdf, &none, sizeof none) == 0);
  /* The parameters bound to the key are never cut short. */
  char aad[VB_CONFIG_AAD_MAX];
  vb_config_aad(&c, aad);
  FUZZ_CHECK(strlen(aad) < sizeof aad - 1);

  char *text = vb_config_encode(&c);
  FUZZ_CHECK(text != NULL);
  FUZZ_CHECK(vb_config_parse(text, strlen(text), &back, &why) == 0);
  FUZZ_CHECK(same(&c, &back));
  char *again = vb_config_encode(&back);
  FUZZ_CHECK(again != NULL && strcmp(text, again) == 0);
  free(text);
  free(again);
  return 0;
}

#ifdef FUZZ_DRIVER
void fuzz_seeds(fuzz_add_fn *add)
{
  /* Unencrypted; encrypted with the usual parameters; every parameter at an end
   * of its range. */
  struct vb_config c[3];
  memset(c, 0, sizeof c);
  for (int k = 0; k < 3; k++) {
    for (int i = 0; i < 16; i++) c[k].id[i] = (unsigned char)(0xa0 + i * (k + 1));
    c[k].chunk_size = VB_CHUNK_DEFAULT;
    c[k].zstd_level = 3;
  }
  c[1].encrypted = c[2].encrypted = true;
  c[1].kdf = (struct vb_kdf){ .log_n = 17, .r = 8, .p = 1 };
  c[2].kdf = (struct vb_kdf){ .log_n = 10, .r = 1, .p = 4 };
  c[2].chunk_size = VB_CHUNK_MAX;
  c[2].zstd_level = 19;
  for (int k = 1; k < 3; k++) {
    for (int i = 0; i < 16; i++) c[k].kdf.salt[i] = (unsigned char)(i * 7 + k);
    for (size_t i = 0; i < VB_WRAPPED_LEN; i++) c[k].wrapped[i] = (unsigned char)(i * 13 + k);
  }
  static const char *const names[] = { "none.json", "scrypt.json", "ends.json" };
  for (int k = 0; k < 3; k++) {
    char *text = vb_config_encode(&c[k]);
    FUZZ_CHECK(text != NULL);
    add(names[k], text, strlen(text));
    free(text);
  }
}
#endif
