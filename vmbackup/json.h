/* Strict reading of the JSON in a vmbackup repository (the config, a manifest's
 * metadata): untrusted text, so every member is asked for with its type, and an
 * object's members must be exactly those of the format. */
#ifndef VMBACKUP_JSON_H
#define VMBACKUP_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <json-c/json.h>

/* len bytes of text as one JSON object and nothing after it (but whitespace,
 * when space_after), into *out: 0, or VB_JSON_BAD (not JSON), VB_JSON_AFTER (text
 * after it), VB_JSON_NOT_OBJECT. */
enum { VB_JSON_BAD = 1, VB_JSON_AFTER, VB_JSON_NOT_OBJECT };
int vb_json_parse(const char *text, size_t len, bool space_after, json_object **out);
/* Member name of o, of type t, or NULL; a string holding a NUL is no string. */
json_object *vb_json_get(json_object *o, const char *name, json_type t);
/* Integer member name of o, from lo to hi, into *out. */
bool vb_json_int(json_object *o, const char *name, int64_t lo, int64_t hi, int64_t *out);
/* o's members are exactly names (a NULL-terminated list). */
bool vb_json_exactly(json_object *o, const char *const *names);

#endif
