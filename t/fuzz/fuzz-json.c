/* Fuzz target: vb_json_parse and vb_json_get (vmbackup/json.c), the strict
 * reading under the config, the manifests and the lock files. What parses is
 * one object (in json-c's grammar, which allows comments, trailing commas and
 * more), with nothing after it but, when allowed, whitespace (a NUL is none);
 * each member is found by its name and type only (never a string holding a
 * NUL); vb_json_int and vb_json_exactly agree with the members; the object
 * written out parses again to the same members. */
#include <stdbool.h>
#include <string.h>

#include "../../vmbackup/json.h"
#include "fuzz.h"

static const json_type types[] = { json_type_boolean, json_type_double, json_type_int,
                                   json_type_object,  json_type_array,  json_type_string };

static void members(json_object *o)
{
  const char *names[66];
  size_t n = 0;
  json_object_object_foreach(o, key, val) {
    for (size_t t = 0; t < sizeof types / sizeof *types; t++) {
      json_object *g = vb_json_get(o, key, types[t]);
      if (json_object_is_type(val, types[t])) {
        /* Refused only as a string with a NUL in it. */
        bool nul = types[t] == json_type_string &&
                   strlen(json_object_get_string(val)) != (size_t)json_object_get_string_len(val);
        FUZZ_CHECK(g == (nul ? NULL : val));
      } else {
        FUZZ_CHECK(g == NULL);
      }
    }
    int64_t v = 0;
    bool is_int = json_object_is_type(val, json_type_int);
    FUZZ_CHECK(vb_json_int(o, key, INT64_MIN, INT64_MAX, &v) == is_int);
    if (is_int) {
      FUZZ_CHECK(v == json_object_get_int64(val));
      /* In range [lo, hi] exactly when lo <= v <= hi. */
      int64_t w;
      FUZZ_CHECK(vb_json_int(o, key, v, v, &w) && w == v);
      FUZZ_CHECK(v == INT64_MAX || !vb_json_int(o, key, v + 1, INT64_MAX, &w));
      FUZZ_CHECK(v == INT64_MIN || !vb_json_int(o, key, INT64_MIN, v - 1, &w));
    }
    if (n < 64) names[n] = key;
    n++;
  }
  if (n > 64) return;
  /* Exactly its members: not one fewer, not one more. */
  names[n] = NULL;
  FUZZ_CHECK(vb_json_exactly(o, names));
  if (n) {
    const char *last = names[n - 1];
    names[n - 1] = NULL;
    FUZZ_CHECK(!vb_json_exactly(o, names));
    names[n - 1] = last;
  }
  names[n] = "\x01 not a member";
  names[n + 1] = NULL;
  FUZZ_CHECK(!vb_json_exactly(o, names));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  json_object *o, *strict;
  int rc = vb_json_parse((const char *)data, size, false, &strict);
  int loose = vb_json_parse((const char *)data, size, true, &o);
  FUZZ_CHECK(rc >= 0 && rc <= VB_JSON_NOT_OBJECT && loose >= 0 && loose <= VB_JSON_NOT_OBJECT);
  FUZZ_CHECK(rc ? strict == NULL : strict != NULL);
  /* Whitespace after the object is the only difference space_after makes. */
  FUZZ_CHECK(rc == 0 ? loose == 0 : loose == rc || (loose == 0 && rc == VB_JSON_AFTER) ||
                                        (loose == VB_JSON_NOT_OBJECT && rc == VB_JSON_AFTER));
  json_object_put(strict);
  if (loose) {
    FUZZ_CHECK(o == NULL);
    return 0;
  }
  FUZZ_CHECK(json_object_is_type(o, json_type_object));
  members(o);
  /* A NUL after it is text after it, not whitespace. */
  char *nul = malloc(size + 1);
  json_object *after;
  FUZZ_CHECK(nul != NULL);
  memcpy(nul, data, size);
  nul[size] = 0;
  FUZZ_CHECK(vb_json_parse(nul, size + 1, true, &after) == VB_JSON_AFTER);
  free(nul);

  /* Written out and parsed again: the strings, integers, booleans and nulls
   * vmbackup reads are the same. Numbers json-c takes in forms beyond JSON's
   * ("03", "1E+") come out in its own: written once more, the text is the same. */
  char *text = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
  json_object *back, *again;
  FUZZ_CHECK(vb_json_parse(text, strlen(text), false, &back) == 0);
  json_object_object_foreach(o, key, val) {
    json_object *b;
    json_type t = json_object_get_type(val);
    if (t == json_type_string || t == json_type_int || t == json_type_boolean || t == json_type_null)
      FUZZ_CHECK(json_object_object_get_ex(back, key, &b) && json_object_equal(val, b));
  }
  char *text2 = strdup(json_object_to_json_string_ext(back, JSON_C_TO_STRING_PLAIN));
  FUZZ_CHECK(vb_json_parse(text2, strlen(text2), false, &again) == 0);
  FUZZ_CHECK(strcmp(text2, json_object_to_json_string_ext(again, JSON_C_TO_STRING_PLAIN)) == 0);
  json_object_put(again);
  json_object_put(back);
  json_object_put(o);
  free(text);
  free(text2);
  return 0;
}

#ifdef FUZZ_DRIVER
void fuzz_seeds(fuzz_add_fn *add)
{
  static const char *const seeds[] = {
    "{}",
    "{ \"format\": \"vmbackup\", \"version\": 1, \"chunk_size\": 262144, \"kdf\": { \"name\": \"scrypt\", \"r\": 8 } }\n",
    "{\"snapshot\":\"0123456789abcdef0123456789abcdef\",\"disks\":[{\"target\":\"vda\",\"size\":4096,\"chunks\":1}],"
    "\"bytes_read\":9223372036854775807}",
    "{\"a\": [1, -2, 2.5, -3e2, true, false, null, \"\\u00e9\\ud83d\\ude00\\n\", {\"b\": {\"c\": []}}]} \t\r\n",
    "{\"nul\": \"vmbackup\\u0000junk\", \"big\": 18446744073709551615, \"neg\": -9223372036854775808}",
    "{\"x\": 1} {\"y\": 2}",
    "[1, 2, 3]",
  };
  for (size_t i = 0; i < sizeof seeds / sizeof *seeds; i++) {
    char name[16];
    snprintf(name, sizeof name, "seed-%zu.json", i);
    add(name, seeds[i], strlen(seeds[i]));
  }
}
#endif
