/* Strict reading of a vmbackup repository's JSON. */
#include <string.h>

#include "json.h"

int vb_json_parse(const char *text, size_t len, bool space_after, json_object **out)
{
  *out = NULL;
  json_tokener *tok = len <= INT32_MAX ? json_tokener_new() : NULL;
  if (!tok) return VB_JSON_BAD;
  json_object *o = json_tokener_parse_ex(tok, text, (int)len);
  int rc = o && json_tokener_get_error(tok) == json_tokener_success ? 0 : VB_JSON_BAD;
  size_t used = rc ? len : json_tokener_get_parse_end(tok);
  json_tokener_free(tok);
  /* memchr, not strchr: a NUL is no whitespace. */
  for (; used < len; used++)
    if (!space_after || !memchr(" \t\r\n", text[used], 4)) rc = VB_JSON_AFTER;
  if (rc == 0 && !json_object_is_type(o, json_type_object)) rc = VB_JSON_NOT_OBJECT;
  if (rc) json_object_put(o);
  else *out = o;
  return rc;
}

json_object *vb_json_get(json_object *o, const char *name, json_type t)
{
  json_object *v;
  if (!o || !json_object_object_get_ex(o, name, &v) || !json_object_is_type(v, t)) return NULL;
  /* "vmbackup\u0000junk" is not the string it starts with. */
  if (t == json_type_string && (size_t)json_object_get_string_len(v) != strlen(json_object_get_string(v))) return NULL;
  return v;
}

bool vb_json_int(json_object *o, const char *name, int64_t lo, int64_t hi, int64_t *out)
{
  json_object *v = vb_json_get(o, name, json_type_int);
  if (!v) return false;
  *out = json_object_get_int64(v);
  return *out >= lo && *out <= hi;
}

bool vb_json_exactly(json_object *o, const char *const *names)
{
  size_t n = 0, want = 0;
  json_object_object_foreach(o, key, val) {
    (void)val;
    size_t i = 0;
    while (names[i] && strcmp(names[i], key) != 0) i++;
    if (!names[i]) return false;
    n++;
  }
  while (names[want]) want++;
  return n == want;
}
