/* The config file of a vmbackup repository: written whole, parsed as untrusted
 * text (man/vmbackup-repository.5). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>
#include <openssl/evp.h>

#include "config.h"

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
  char id[33];
  for (size_t i = 0; i < sizeof c->id; i++) snprintf(id + 2 * i, 3, "%02x", c->id[i]);
  snprintf(buf, VB_CONFIG_AAD_MAX, "vmbackup key v1 id=%s chunk_size=%u hash=%s cipher=%s scrypt=%d,%d,%d", id,
           c->chunk_size, c->encrypted ? "hmac-sha256" : "sha256", c->encrypted ? "aes-256-gcm" : "none",
           c->kdf.log_n, c->kdf.r, c->kdf.p);
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

/* The member name of o, of type t, or NULL. */
static json_object *member(json_object *o, const char *name, json_type t)
{
  json_object *v;
  if (!json_object_object_get_ex(o, name, &v) || !json_object_is_type(v, t)) return NULL;
  /* A string with a NUL in it ("vmbackup\u0000junk") is not the string it starts with. */
  if (t == json_type_string && (size_t)json_object_get_string_len(v) != strlen(json_object_get_string(v))) return NULL;
  return v;
}

/* Every member of o is one of names (a NULL-terminated list). */
static bool only(json_object *o, const char *const *names)
{
  json_object_object_foreach(o, key, val) {
    (void)val;
    size_t i = 0;
    while (names[i] && strcmp(names[i], key) != 0) i++;
    if (!names[i]) return false;
  }
  return true;
}

static bool int_in(json_object *v, int64_t lo, int64_t hi, int64_t *out)
{
  if (!v) return false;
  *out = json_object_get_int64(v);
  return *out >= lo && *out <= hi;
}

int vb_config_parse(const char *text, size_t len, struct vb_config *c, const char **why)
{
  memset(c, 0, sizeof *c);
  if (len > 65536) return *why = "config too large", -1;
  json_tokener *tok = json_tokener_new();
  if (!tok) return *why = "out of memory", -1;
  json_object *o = json_tokener_parse_ex(tok, text, (int)len);
  enum json_tokener_error err = json_tokener_get_error(tok);
  size_t used = json_tokener_get_parse_end(tok);
  json_tokener_free(tok);
  int rc = -1;
  if (!o || err != json_tokener_success) {
    *why = "config is not JSON";
    goto out;
  }
  for (; used < len; used++)
    if (!strchr(" \t\r\n", text[used])) {
      *why = "config has text after its JSON";
      goto out;
    }
  if (!json_object_is_type(o, json_type_object)) {
    *why = "config is not a JSON object";
    goto out;
  }
  json_object *f = member(o, "format", json_type_string), *ver = member(o, "version", json_type_int);
  if (!f || strcmp(json_object_get_string(f), "vmbackup") != 0) {
    *why = "not a vmbackup repository config";
    goto out;
  }
  int64_t v;
  if (!int_in(ver, VB_FORMAT_VERSION, VB_FORMAT_VERSION, &v)) {
    *why = "repository format version is not 1";
    goto out;
  }
  json_object *id = member(o, "id", json_type_string);
  if (!id || unhex(json_object_get_string(id), c->id, sizeof c->id) < 0) {
    *why = "config: bad id";
    goto out;
  }
  if (!int_in(member(o, "chunk_size", json_type_int), VB_CHUNK_MIN, VB_CHUNK_MAX, &v) || (v & (v - 1)) != 0) {
    *why = "config: chunk_size is not a power of two from 64 KiB to 4 MiB";
    goto out;
  }
  c->chunk_size = (unsigned)v;
  if (!int_in(member(o, "zstd_level", json_type_int), 1, 19, &v)) {
    *why = "config: zstd_level is not from 1 to 19";
    goto out;
  }
  c->zstd_level = (int)v;
  json_object *hash = member(o, "hash", json_type_string), *cipher = member(o, "cipher", json_type_string);
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
  static const char *const top_enc[] = { "format", "version", "id", "chunk_size", "zstd_level", "hash", "cipher",
                                         "kdf", "key", NULL };
  static const char *const top_none[] = { "format", "version", "id", "chunk_size", "zstd_level", "hash", "cipher",
                                          NULL };
  if (!only(o, c->encrypted ? top_enc : top_none)) {
    *why = "config has an unknown member";
    goto out;
  }
  if (c->encrypted) {
    json_object *k = member(o, "kdf", json_type_object), *key = member(o, "key", json_type_string);
    static const char *const kdf_names[] = { "name", "log_n", "r", "p", "salt", NULL };
    json_object *name = k ? member(k, "name", json_type_string) : NULL, *salt = k ? member(k, "salt", json_type_string) : NULL;
    int64_t ln, r, p;
    if (!k || !key || !name || !salt || !only(k, kdf_names) || strcmp(json_object_get_string(name), "scrypt") != 0 ||
        !int_in(member(k, "log_n", json_type_int), 10, 30, &ln) || !int_in(member(k, "r", json_type_int), 1, 64, &r) ||
        !int_in(member(k, "p", json_type_int), 1, 4, &p) ||
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
  rc = 0;
out:
  json_object_put(o);
  return rc;
}
