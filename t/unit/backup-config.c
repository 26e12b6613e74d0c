/* vmbackup's repository config (man/vmbackup-repository.5): written and read
 * back, every field checked, damaged text refused. Under AddressSanitizer and
 * UBSan: vb_config_parse reads untrusted text. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../vmbackup/config.h"

static void sample(struct vb_config *c, bool encrypted)
{
  memset(c, 0, sizeof *c);
  for (int i = 0; i < 16; i++) c->id[i] = (unsigned char)(0xa0 + i);
  c->chunk_size = VB_CHUNK_DEFAULT;
  c->zstd_level = 3;
  c->encrypted = encrypted;
  if (encrypted) {
    c->kdf.log_n = 17;
    c->kdf.r = 8;
    c->kdf.p = 1;
    for (int i = 0; i < 16; i++) c->kdf.salt[i] = (unsigned char)(i * 7);
    for (size_t i = 0; i < VB_WRAPPED_LEN; i++) c->wrapped[i] = (unsigned char)(i * 13 + 1);
  }
}

static int parse(const char *text, struct vb_config *c, const char **why)
{
  return vb_config_parse(text, strlen(text), c, why);
}

static void writes_and_reads_back(void **state)
{
  for (int enc = 0; enc < 2; enc++) {
    struct vb_config c, back;
    sample(&c, enc);
    char *text = vb_config_encode(&c);
    assert_non_null(text);
    const char *why = NULL;
    assert_int_equal(parse(text, &back, &why), 0);
    assert_memory_equal(back.id, c.id, 16);
    assert_int_equal(back.chunk_size, c.chunk_size);
    assert_int_equal(back.zstd_level, 3);
    assert_int_equal(back.encrypted, enc);
    if (enc) {
      assert_int_equal(back.kdf.log_n, 17);
      assert_memory_equal(back.kdf.salt, c.kdf.salt, 16);
      assert_memory_equal(back.wrapped, c.wrapped, VB_WRAPPED_LEN);
    } else {
      assert_null(strstr(text, "\"key\""));
    }
    free(text);
  }
}

/* One field changed at a time: each bad value is refused, with its reason. */
static void refuses_bad_fields(void **state)
{
  struct vb_config c;
  sample(&c, true);
  char *good = vb_config_encode(&c);
  static const struct { const char *from, *to, *why; } cases[] = {
    { "\"version\": 1", "\"version\": 2", "repository format version is not 1" },
    { "\"version\": 1", "\"version\": \"1\"", "repository format version is not 1" },
    { "\"chunk_size\": 262144", "\"chunk_size\": 262145", "config: chunk_size is not a power of two from 64 KiB to 4 MiB" },
    { "\"chunk_size\": 262144", "\"chunk_size\": 32768", "config: chunk_size is not a power of two from 64 KiB to 4 MiB" },
    { "\"chunk_size\": 262144", "\"chunk_size\": 8388608", "config: chunk_size is not a power of two from 64 KiB to 4 MiB" },
    { "\"chunk_size\": 262144", "\"chunk_size\": 262144.0", "config: chunk_size is not a power of two from 64 KiB to 4 MiB" },
    { "\"zstd_level\": 3", "\"zstd_level\": 0", "config: zstd_level is not from 1 to 19" },
    { "\"format\": \"vmbackup\"", "\"format\": \"borg\"", "not a vmbackup repository config" },
    { "\"cipher\": \"aes-256-gcm\"", "\"cipher\": \"des\"", "config: unknown hash or cipher" },
    { "\"hash\": \"hmac-sha256\"", "\"hash\": \"sha256\"", "config: unknown hash or cipher" },
    { "\"log_n\": 17", "\"log_n\": 40", "config: bad kdf" },
    { "\"log_n\": 17", "\"log_n\": 21", "config: scrypt's parameters are out of range (at most 1 GiB of memory)" },
    { "\"format\": \"vmbackup\"", "\"format\": \"vmbackup\\u0000junk\"", "not a vmbackup repository config" },
    { "\"name\": \"scrypt\"", "\"name\": \"argon2\"", "config: bad kdf" },
    { "\"id\": \"a0", "\"id\": \"A0", "config: bad id" },
    { "\"zstd_level\": 3", "\"zstd_level\": 3, \"extra\": 1", "config has an unknown member" },
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    const char *at = strstr(good, cases[i].from);
    assert_non_null(at);
    char text[4096];
    snprintf(text, sizeof text, "%.*s%s%s", (int)(at - good), good, cases[i].to, at + strlen(cases[i].from));
    struct vb_config back;
    const char *why = NULL;
    assert_int_equal(parse(text, &back, &why), -1);
    assert_string_equal(why, cases[i].why);
  }
  /* The key cut short, text after the object, not an object. */
  char text[4096];
  const char *key = strstr(good, "\"key\": \"") + 8;
  snprintf(text, sizeof text, "%.*s%s", (int)(key - good + 10), good, "\"\n}\n");
  struct vb_config back;
  const char *why = NULL;
  assert_int_equal(parse(text, &back, &why), -1);
  snprintf(text, sizeof text, "%s{}", good);
  assert_int_equal(parse(text, &back, &why), -1);
  assert_string_equal(why, "config has text after its JSON");
  /* Whitespace may follow, but a NUL is none: zeros after the text (a file that
   * a crash left longer than what was written) are refused. */
  size_t len = strlen(good);
  memcpy(text, good, len);
  memset(text + len, 0, 4);
  assert_int_equal(vb_config_parse(text, len + 4, &back, &why), -1);
  assert_string_equal(why, "config has text after its JSON");
  snprintf(text, sizeof text, "%s \t\r\n", good);
  assert_int_equal(parse(text, &back, &why), 0);
  assert_int_equal(parse("[1]", &back, &why), -1);
  assert_int_equal(parse("", &back, &why), -1);
  free(good);
}

/* Every prefix, and random bytes changed: refused or read within range; never a
 * crash (ASan watches). */
static void damaged_text(void **state)
{
  struct vb_config c, back;
  sample(&c, true);
  char *good = vb_config_encode(&c);
  size_t len = strlen(good);
  const char *why;
  for (size_t cut = 0; cut + 2 < len; cut++) assert_int_equal(vb_config_parse(good, cut, &back, &why), -1);
  char *t = malloc(len);
  for (int i = 0; i < 20000; i++) {
    memcpy(t, good, len);
    for (int k = 0; k < 1 + rand() % 3; k++) t[(size_t)rand() % len] = (char)(rand() % 256);
    if (vb_config_parse(t, len, &back, &why) == 0) {
      assert_true(back.chunk_size >= VB_CHUNK_MIN && back.chunk_size <= VB_CHUNK_MAX);
      assert_true(back.zstd_level >= 1 && back.zstd_level <= 19);
    }
  }
  free(t);
  free(good);
}

/* The canonical parameters bound to the key change with each of them. */
static void binds_the_parameters(void **state)
{
  struct vb_config a, b;
  char x[VB_CONFIG_AAD_MAX], y[VB_CONFIG_AAD_MAX];
  sample(&a, true);
  vb_config_aad(&a, x);
  assert_non_null(strstr(x, "cipher=aes-256-gcm"));
  b = a;
  b.chunk_size = 65536;
  vb_config_aad(&b, y);
  assert_string_not_equal(x, y);
  b = a;
  b.id[0] ^= 1;
  vb_config_aad(&b, y);
  assert_string_not_equal(x, y);
  b = a;
  b.kdf.log_n = 12;
  vb_config_aad(&b, y);
  assert_string_not_equal(x, y);
  /* The zstd level is a knob, not a promise: changing it keeps the key. */
  b = a;
  b.zstd_level = 9;
  vb_config_aad(&b, y);
  assert_string_equal(x, y);
}

int main(void)
{
  srand(5);
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(writes_and_reads_back),
    cmocka_unit_test(refuses_bad_fields),
    cmocka_unit_test(damaged_text),
    cmocka_unit_test(binds_the_parameters),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
