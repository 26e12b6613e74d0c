/* The inventory: what is installed on each target (a VM, a template, the host),
 * as JSON of format "vmpatch-inventory", version 1 (man/vmpatch.1):
 *   {"format":"vmpatch-inventory","version":1,"targets":[{"name":"vm1",
 *    "kind":"vm","os":{"id":"debian","version_id":"12","package_format":"deb"},
 *    "packages":[{"name":"libssl3","version":"3.0.11-1~deb12u2","arch":"amd64",
 *                 "source":"openssl","source_version":"3.0.11-1~deb12u2"}]}]}
 * Today a file written by hand or by another tool; the `inventory` verb to come
 * writes it with vmp_inventory_write. Parsed strictly: an unknown member, a wrong
 * type or a version that its package format refuses is an error, since a scan of
 * half an inventory would call a machine clean. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vmpatch.h"

/* Far above the packages of any real system (a desktop has a few thousand). */
#define INVENTORY_MAX ((size_t)256 << 20)

void vmp_inventory_free(struct vmp_inventory *inv)
{
  for (size_t i = 0; i < inv->n; i++) {
    struct vmp_target *t = &inv->targets[i];
    free(t->name);
    free(t->kind);
    free(t->os_id);
    free(t->os_version);
    for (size_t k = 0; k < t->npkgs; k++) {
      free(t->pkgs[k].name);
      free(t->pkgs[k].version);
      free(t->pkgs[k].arch);
      free(t->pkgs[k].source);
      free(t->pkgs[k].source_version);
    }
    free(t->pkgs);
  }
  free(inv->targets);
  memset(inv, 0, sizeof *inv);
}

struct ctx {
  char *why;
  size_t whylen;
};

static int err(struct ctx *c, const char *fmt, ...) VM_PRINTF(2, 3);
static int err(struct ctx *c, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(c->why, c->whylen, fmt, ap);
  va_end(ap);
  return -1;
}

/* Every member of o must be one of the NULL-terminated keys. */
static int only_keys(struct ctx *c, json_object *o, const char *where, const char *const *keys)
{
  json_object_object_foreach(o, k, v)
  {
    (void)v;
    bool known = false;
    for (size_t i = 0; keys[i]; i++) known = known || strcmp(k, keys[i]) == 0;
    if (!known) return err(c, "%s: unknown member '%.64s'", where, k);
  }
  return 0;
}

/* A string member: required or optional (then *out stays NULL when absent); no
 * NUL, no control characters, at most 4096 bytes. */
static int str(struct ctx *c, json_object *o, const char *key, bool required, const char *where, char **out)
{
  json_object *v;
  *out = NULL;
  if (!json_object_object_get_ex(o, key, &v)) return required ? err(c, "%s has no '%s'", where, key) : 0;
  if (!json_object_is_type(v, json_type_string)) return err(c, "%s: '%s' is not a string", where, key);
  const char *s = json_object_get_string(v);
  size_t n = (size_t)json_object_get_string_len(v);
  if (n == 0 || n > 4096 || strlen(s) != n) return err(c, "%s: '%s' is empty, too long or holds a NUL", where, key);
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) return err(c, "%s: '%s' holds a control character", where, key);
  *out = vm_strdup(s);
  return 0;
}

static int version(struct ctx *c, enum vmp_pkgfmt f, const char *v, const char *where, const char *key)
{
  const char *why = NULL;
  if (!vmp_version_valid(f, v, &why)) return err(c, "%s: %s '%.64s': %s", where, key, v, why);
  return 0;
}

static int parse_package(struct ctx *c, json_object *o, enum vmp_pkgfmt f, const char *where, struct vmp_package *p)
{
  static const char *const keys[] = { "name", "version", "arch", "source", "source_version", NULL };
  if (!json_object_is_type(o, json_type_object)) return err(c, "%s is not an object", where);
  if (only_keys(c, o, where, keys) < 0 || str(c, o, "name", true, where, &p->name) < 0 ||
      str(c, o, "version", true, where, &p->version) < 0 || str(c, o, "arch", false, where, &p->arch) < 0 ||
      str(c, o, "source", false, where, &p->source) < 0 ||
      str(c, o, "source_version", false, where, &p->source_version) < 0)
    return -1;
  if (!p->source) p->source = vm_strdup(p->name);
  if (!p->source_version) p->source_version = vm_strdup(p->version);
  if (version(c, f, p->version, where, "version") < 0 ||
      version(c, f, p->source_version, where, "source_version") < 0)
    return -1;
  return 0;
}

static int parse_target(struct ctx *c, json_object *o, const char *where, struct vmp_target *t)
{
  static const char *const keys[] = { "name", "kind", "os", "packages", NULL };
  static const char *const os_keys[] = { "id", "version_id", "package_format", NULL };
  if (!json_object_is_type(o, json_type_object)) return err(c, "%s is not an object", where);
  if (only_keys(c, o, where, keys) < 0 || str(c, o, "name", true, where, &t->name) < 0 ||
      str(c, o, "kind", true, where, &t->kind) < 0)
    return -1;
  char w[96];
  snprintf(w, sizeof w, "target '%.48s'", t->name);
  if (strcmp(t->kind, "vm") != 0 && strcmp(t->kind, "template") != 0 && strcmp(t->kind, "host") != 0)
    return err(c, "%s: kind '%.32s' is not vm, template or host", w, t->kind);
  json_object *os, *pkgs;
  if (!json_object_object_get_ex(o, "os", &os) || !json_object_is_type(os, json_type_object))
    return err(c, "%s: 'os' is missing or not an object", w);
  char ow[112], *fmt = NULL;
  snprintf(ow, sizeof ow, "%s: os", w);
  if (only_keys(c, os, ow, os_keys) < 0 || str(c, os, "id", true, ow, &t->os_id) < 0 ||
      str(c, os, "version_id", false, ow, &t->os_version) < 0 || str(c, os, "package_format", true, ow, &fmt) < 0)
    return -1;
  int f = vmp_pkgfmt_parse(fmt);
  free(fmt);
  if (f < 0) return err(c, "%s: package_format is not deb or rpm", ow);
  t->format = (enum vmp_pkgfmt)f;
  if (!json_object_object_get_ex(o, "packages", &pkgs) || !json_object_is_type(pkgs, json_type_array))
    return err(c, "%s: 'packages' is missing or not an array", w);
  size_t n = json_object_array_length(pkgs);
  t->pkgs = n ? calloc(n, sizeof *t->pkgs) : NULL;
  if (n && !t->pkgs) abort();
  for (size_t i = 0; i < n; i++) {
    char pw[128];
    snprintf(pw, sizeof pw, "%s: packages[%zu]", w, i);
    t->npkgs++;
    if (parse_package(c, json_object_array_get_idx(pkgs, i), t->format, pw, &t->pkgs[i]) < 0) return -1;
  }
  return 0;
}

int vmp_inventory_parse(const char *text, size_t len, struct vmp_inventory *inv, char *why, size_t whylen)
{
  struct ctx c = { why, whylen };
  memset(inv, 0, sizeof *inv);
  if (memchr(text, '\0', len) || len > INT32_MAX) return err(&c, "not JSON: a NUL byte");
  json_tokener *tok = json_tokener_new();
  if (!tok) abort();
  CLEANUP_JSON json_object *root = json_tokener_parse_ex(tok, text, (int)len);
  enum json_tokener_error jerr = json_tokener_get_error(tok);
  size_t end = json_tokener_get_parse_end(tok);
  json_tokener_free(tok);
  if (!root || jerr != json_tokener_success)
    return err(&c, "not JSON: %s", jerr == json_tokener_continue ? "it ends early" : json_tokener_error_desc(jerr));
  for (; end < len; end++)
    if (!strchr(" \t\r\n", text[end])) return err(&c, "not JSON: text after the inventory");
  static const char *const keys[] = { "format", "version", "targets", NULL };
  json_object *v, *targets;
  if (!json_object_is_type(root, json_type_object)) return err(&c, "not an inventory: not a JSON object");
  if (!json_object_object_get_ex(root, "format", &v) || !json_object_is_type(v, json_type_string) ||
      strcmp(json_object_get_string(v), VMP_INVENTORY_FORMAT) != 0)
    return err(&c, "not an inventory: format is not '%s'", VMP_INVENTORY_FORMAT);
  if (!json_object_object_get_ex(root, "version", &v) || !json_object_is_type(v, json_type_int))
    return err(&c, "inventory has no integer version");
  if (json_object_get_int64(v) != VMP_INVENTORY_VERSION)
    return err(&c, "inventory version %lld is not supported (this vmpatch reads version %d)",
               (long long)json_object_get_int64(v), VMP_INVENTORY_VERSION);
  if (only_keys(&c, root, "inventory", keys) < 0) return -1;
  if (!json_object_object_get_ex(root, "targets", &targets) || !json_object_is_type(targets, json_type_array))
    return err(&c, "inventory: 'targets' is missing or not an array");
  size_t n = json_object_array_length(targets);
  inv->targets = n ? calloc(n, sizeof *inv->targets) : NULL;
  if (n && !inv->targets) abort();
  for (size_t i = 0; i < n; i++) {
    char w[48];
    snprintf(w, sizeof w, "targets[%zu]", i);
    inv->n++;
    if (parse_target(&c, json_object_array_get_idx(targets, i), w, &inv->targets[i]) < 0) goto fail;
    for (size_t k = 0; k < i; k++)
      if (strcmp(inv->targets[k].name, inv->targets[i].name) == 0) {
        err(&c, "target '%.48s' is listed twice", inv->targets[i].name);
        goto fail;
      }
  }
  return 0;
fail:
  vmp_inventory_free(inv);
  return -1;
}

static json_object *jstr(const char *s)
{
  return json_object_new_string(s);
}

char *vmp_inventory_write(const struct vmp_inventory *inv)
{
  CLEANUP_JSON json_object *root = json_object_new_object();
  json_object *targets = json_object_new_array();
  json_object_object_add(root, "format", jstr(VMP_INVENTORY_FORMAT));
  json_object_object_add(root, "version", json_object_new_int(VMP_INVENTORY_VERSION));
  json_object_object_add(root, "targets", targets);
  for (size_t i = 0; i < inv->n; i++) {
    const struct vmp_target *t = &inv->targets[i];
    json_object *to = json_object_new_object(), *os = json_object_new_object(), *pkgs = json_object_new_array();
    json_object_object_add(to, "name", jstr(t->name));
    json_object_object_add(to, "kind", jstr(t->kind));
    json_object_object_add(os, "id", jstr(t->os_id));
    if (t->os_version) json_object_object_add(os, "version_id", jstr(t->os_version));
    json_object_object_add(os, "package_format", jstr(vmp_pkgfmt_name(t->format)));
    json_object_object_add(to, "os", os);
    for (size_t k = 0; k < t->npkgs; k++) {
      const struct vmp_package *p = &t->pkgs[k];
      json_object *po = json_object_new_object();
      json_object_object_add(po, "name", jstr(p->name));
      json_object_object_add(po, "version", jstr(p->version));
      if (p->arch) json_object_object_add(po, "arch", jstr(p->arch));
      json_object_object_add(po, "source", jstr(p->source ? p->source : p->name));
      json_object_object_add(po, "source_version", jstr(p->source_version ? p->source_version : p->version));
      json_object_array_add(pkgs, po);
    }
    json_object_object_add(to, "packages", pkgs);
    json_object_array_add(targets, to);
  }
  const char *s = json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
  return vm_strdup_printf("%s\n", s);
}

int vmp_inventory_load(const char *path, struct vmp_inventory *inv)
{
  size_t len;
  bool std_in = strcmp(path, "-") == 0;
  const char *shown = std_in ? "stdin" : path;
  /* Standard input may be a pipe, which vm_read_file refuses (regular files only). */
  CLEANUP_FREE char *text = std_in ? vm_read_fd(STDIN_FILENO, INVENTORY_MAX, &len)
                                   : vm_read_file(path, INVENTORY_MAX, &len);
  if (!text)
    return vm_fail_errno(errno == ENOENT ? VM_EXIT_NOTFOUND : VMP_EXIT_BADINPUT, "inventory %s", shown);
  char why[256];
  if (vmp_inventory_parse(text, len, inv, why, sizeof why) < 0)
    return vm_fail(VMP_EXIT_BADINPUT, "inventory %s: %s", shown, why);
  return 0;
}
