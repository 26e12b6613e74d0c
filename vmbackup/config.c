/* The config file of a vmbackup repository: written whole, parsed as untrusted
 * text (man/vmbackup-repository.5). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>
#include <openssl/evp.h>

#include "config.h"
#include "json.h"

static char *hex(const unsigned char *p, size_t n)
{
  char *s = malloc(2 * n + 1);
  if (!s) return NULL;
  for (size_t i = 0; i < n; i++) snprintf(s + 2 * i, 3, "%02x", p[i]);
  return s;
}

static int unhex(const char *s, unsigned char *out, size_t n)
{
  if (strlen(s) != 2 * n) return -1;
  for (size_t i = 0; i < 2 * n; i++) {
    char c = s[i];
    int v = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    if (v < 0) return -1;
    if (i % 2 == 0) out[i / 2] = (unsigned char)(v << 4);
    else out[i / 2] |= (unsigned char)v;
  }
  return 0;
}

static char *b64(const unsigned char *p, size_t n)
{
  char *s = malloc(4 * ((n + 2) / 3) + 1);
  if (s) EVP_EncodeBlock((unsigned char *)s, p, (int)n);
  return s;
}

/* Exactly n bytes from base64 text s (padding as EVP_EncodeBlock writes it). */
static int unb64(const char *s, unsigned char *out, size_t n)
{
  size_t len = strlen(s);
  if (len != 4 * ((n + 2) / 3)) return -1;
  unsigned char *buf = malloc(len / 4 * 3 + 1);
  if (!buf) return -1;
  int got = EVP_DecodeBlock(buf, (const unsigned char *)s, (int)len);
  /* EVP_DecodeBlock counts the padding's bytes too. */
  size_t pad = (len && s[len - 1] == '=') + (len > 1 && s[len - 2] == '=');
  int rc = got < 0 || (size_t)got - pad != n ? -1 : 0;
  if (rc == 0) memcpy(out, buf, n);
  free(buf);
  return rc;
}

void vb_config_aad(const struct vb_config *c, char buf[VB_CONFIG_AAD_MAX])
{
  char *id = hex(c->id, sizeof c->id);
  snprintf(buf, VB_CONFIG_AAD_MAX, "vmbackup key v1 id=%s chunk_size=%u hash=%s cipher=%s scrypt=%d,%d,%d", id ? id : "",
           c->chunk_size, c->encrypted ? "hmac-sha256" : "sha256", c->encrypted ? "aes-256-gcm" : "none",
           c->kdf.log_n, c->kdf.r, c->kdf.p);
  free(id);
}

char *vb_config_encode(const struct vb_config *c)
{
  json_object *o = json_object_new_object();
  char *id = hex(c->id, sizeof c->id);
  json_object_object_add(o, "format", json_object_new_string("vmbackup"));
  json_object_object_add(o, "version", json_object_new_int(VB_FORMAT_VERSION));
  json_object_object_add(o, "id", json_object_new_string(id ? id : ""));
  json_object_object_add(o, "chunk_size", json_object_new_int64(c->chunk_size));
  json_object_object_add(o, "zstd_level", json_object_new_int(c->zstd_level));
  json_object_object_add(o, "hash", json_object_new_string(c->encrypted ? "hmac-sha256" : "sha256"));
  json_object_object_add(o, "cipher", json_object_new_string(c->encrypted ? "aes-256-gcm" : "none"));
  if (c->encrypted) {
    json_object *k = json_object_new_object();
    char *salt = b64(c->kdf.salt, sizeof c->kdf.salt), *w = b64(c->wrapped, sizeof c->wrapped);
    json_object_object_add(k, "name", json_object_new_string("scrypt"));
    json_object_object_add(k, "log_n", json_object_new_int(c->kdf.log_n));
    json_object_object_add(k, "r", json_object_new_int(c->kdf.r));
    json_object_object_add(k, "p", json_object_new_int(c->kdf.p));
    json_object_object_add(k, "salt", json_object_new_string(salt ? salt : ""));
    json_object_object_add(o, "kdf", k);
    json_object_object_add(o, "key", json_object_new_string(w ? w : ""));
    free(salt);
    free(w);
  }
  const char *t = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED | JSON_C_TO_STRING_NOSLASHESCAPE);
  char *text = t && id ? malloc(strlen(t) + 2) : NULL;
  if (text) sprintf(text, "%s\n", t);
  free(id);
  json_object_put(o);
  return text;
}

int vb_config_parse(const char *text, size_t len, struct vb_config *c, const char **why)
{
  memset(c, 0, sizeof *c);
  if (len > 65536) return *why = "config too large", -1;
  json_object *o;
  int rc = -1, jr = vb_json_parse(text, len, true, &o);
  if (jr) {
    *why = jr == VB_JSON_AFTER ? "config has text after its JSON"
         : jr == VB_JSON_NOT_OBJECT ? "config is not a JSON object" : "config is not JSON";
    goto out;
  }
  json_object *f = vb_json_get(o, "format", json_type_string);
  if (!f || strcmp(json_object_get_string(f), "vmbackup") != 0) {
    *why = "not a vmbackup repository config";
    goto out;
  }
  int64_t v;
  if (!vb_json_int(o, "version", VB_FORMAT_VERSION, VB_FORMAT_VERSION, &v)) {
    *why = "repository format version is not 1";
    goto out;
  }
  json_object *id = vb_json_get(o, "id", json_type_string);
  if (!id || unhex(json_object_get_string(id), c->id, sizeof c->id) < 0) {
    *why = "config: bad id";
    goto out;
  }
  if (!vb_json_int(o, "chunk_size", VB_CHUNK_MIN, VB_CHUNK_MAX, &v) || (v & (v - 1)) != 0) {
    *why = "config: chunk_size is not a power of two from 64 KiB to 4 MiB";
    goto out;
  }
  c->chunk_size = (unsigned)v;
  if (!vb_json_int(o, "zstd_level", 1, 19, &v)) {
    *why = "config: zstd_level is not from 1 to 19";
    goto out;
  }
  c->zstd_level = (int)v;
  json_object *hash = vb_json_get(o, "hash", json_type_string), *cipher = vb_json_get(o, "cipher", json_type_string);
  if (!hash || !cipher) {
    *why = "config: hash or cipher missing";
    goto out;
  }
  if (strcmp(json_object_get_string(cipher), "aes-256-gcm") == 0 &&
      strcmp(json_object_get_string(hash), "hmac-sha256") == 0) {
    c->encrypted = true;
  } else if (strcmp(json_object_get_string(cipher), "none") == 0 &&
             strcmp(json_object_get_string(hash), "sha256") == 0) {
    c->encrypted = false;
  } else {
    *why = "config: unknown hash or cipher";
    goto out;
  }
  if (c->encrypted) {
    json_object *k = vb_json_get(o, "kdf", json_type_object), *key = vb_json_get(o, "key", json_type_string);
    static const char *const kdf_names[] = { "name", "log_n", "r", "p", "salt", NULL };
    json_object *name = vb_json_get(k, "name", json_type_string), *salt = vb_json_get(k, "salt", json_type_string);
    int64_t ln, r, p;
    if (!k || !key || !name || !salt || !vb_json_exactly(k, kdf_names) ||
        strcmp(json_object_get_string(name), "scrypt") != 0 || !vb_json_int(k, "log_n", 10, 30, &ln) ||
        !vb_json_int(k, "r", 1, 64, &r) || !vb_json_int(k, "p", 1, 4, &p) ||
        unb64(json_object_get_string(salt), c->kdf.salt, sizeof c->kdf.salt) < 0) {
      *why = "config: bad kdf";
      goto out;
    }
    c->kdf.log_n = (int)ln;
    c->kdf.r = (int)r;
    c->kdf.p = (int)p;
    if (!vb_kdf_ok(&c->kdf)) {
      *why = "config: scrypt's parameters are out of range (at most 1 GiB of memory)";
      goto out;
    }
    if (unb64(json_object_get_string(key), c->wrapped, sizeof c->wrapped) < 0) {
      *why = "config: bad key";
      goto out;
    }
  }
  /* Every member was asked for above: what is left over is unknown. */
  static const char *const top_enc[] = { "format", "version", "id", "chunk_size", "zstd_level", "hash", "cipher",
                                         "kdf", "key", NULL };
  static const char *const top_none[] = { "format", "version", "id", "chunk_size", "zstd_level", "hash", "cipher",
                                          NULL };
  if (!vb_json_exactly(o, c->encrypted ? top_enc : top_none)) {
    *why = "config has an unknown member";
    goto out;
  }
  rc = 0;
out:
  json_object_put(o);
  return rc;
}
