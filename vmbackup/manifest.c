/* Snapshot manifests of a vmbackup repository: a magic, JSON metadata, then one
 * chunk table per disk (man/vmbackup-repository.5). */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "json.h"
#include "manifest.h"
#include "vmkit-base.h"

static const char magic[8] = { 'V', 'M', 'K', 'S', 'N', 'A', 'P', '1' };
/* The metadata of a manifest is text of at most this size (the VM's XML in it). */
#define META_MAX (4u << 20)

static size_t chunks_for(uint64_t size, unsigned cs) { return (size_t)(size / cs + (size % cs != 0)); }

int vb_manifest_hole(const struct vb_mdisk *d, size_t i)
{
  static const unsigned char zero[32];
  return memcmp(d->ids[i], zero, 32) == 0;
}

static const char *const fields[] = { "snapshot", "vm", "uuid", "host", "started", "ended", "kind", "why",
                                      "checkpoint", "xml", NULL };

static char **field(struct vb_manifest *m, size_t i)
{
  char **f[] = { &m->snapshot, &m->vm, &m->uuid, &m->host, &m->started, &m->ended, &m->kind, &m->why,
                 &m->checkpoint, &m->xml };
  return f[i];
}

int vb_manifest_encode(const struct vb_manifest *m, unsigned chunk_size, unsigned char **out, size_t *outlen,
                       const char **why)
{
  if (m->ndisks > VB_MANIFEST_MAX_DISKS) return *why = "too many disks", -1;
  json_object *o = json_object_new_object(), *disks = json_object_new_array();
  for (size_t i = 0; fields[i]; i++) {
    const char *v = *field((struct vb_manifest *)m, i);
    json_object_object_add(o, fields[i], json_object_new_string(v ? v : ""));
  }
  size_t table = 0;
  for (size_t i = 0; i < m->ndisks; i++) {
    const struct vb_mdisk *d = &m->disks[i];
    if (d->nchunks != chunks_for(d->size, chunk_size)) {
      json_object_put(o);
      json_object_put(disks);
      return *why = "a disk's table does not match its size", -1;
    }
    json_object *jd = json_object_new_object();
    json_object_object_add(jd, "target", json_object_new_string(d->target ? d->target : ""));
    json_object_object_add(jd, "format", json_object_new_string(d->format ? d->format : ""));
    json_object_object_add(jd, "size", json_object_new_int64((int64_t)d->size));
    json_object_object_add(jd, "chunks", json_object_new_int64((int64_t)d->nchunks));
    json_object_array_add(disks, jd);
    table += d->nchunks * 32;
  }
  if (table > VB_MANIFEST_TABLE_MAX) {
    json_object_put(o);
    return *why = "the disks are too large for one manifest", -1;
  }
  json_object_object_add(o, "disks", disks);
  json_object_object_add(o, "bytes_read", json_object_new_int64((int64_t)m->bytes_read));
  json_object_object_add(o, "bytes_new", json_object_new_int64((int64_t)m->bytes_new));
  json_object_object_add(o, "bytes_stored", json_object_new_int64((int64_t)m->bytes_stored));
  const char *meta = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
  size_t ml = strlen(meta);
  if (ml > META_MAX) {
    json_object_put(o);
    return *why = "metadata too large", -1;
  }
  size_t len = 8 + 4 + ml + table;
  unsigned char *b = malloc(len), *p = b;
  if (!b) {
    json_object_put(o);
    return *why = "out of memory", -1;
  }
  memcpy(p, magic, 8);
  for (int i = 0; i < 4; i++) p[8 + i] = (unsigned char)(ml >> (8 * i));
  memcpy(p + 12, meta, ml);
  p += 12 + ml;
  for (size_t i = 0; i < m->ndisks; i++) {
    memcpy(p, m->disks[i].ids, m->disks[i].nchunks * 32);
    p += m->disks[i].nchunks * 32;
  }
  json_object_put(o);
  *out = b;
  *outlen = len;
  return 0;
}

void vb_manifest_free(struct vb_manifest *m)
{
  for (size_t i = 0; fields[i]; i++) free(*field(m, i));
  for (size_t i = 0; i < m->ndisks; i++) {
    free(m->disks[i].target);
    free(m->disks[i].format);
    free(m->disks[i].ids);
  }
  free(m->disks);
  memset(m, 0, sizeof *m);
}

static char *str_member(json_object *o, const char *name)
{
  json_object *v = vb_json_get(o, name, json_type_string);
  return v ? strdup(json_object_get_string(v)) : NULL;
}

/* "2026-12-01T03:00:00Z" */
static bool utc_time(const char *s)
{
  static const char form[] = "dddd-dd-ddTdd:dd:ddZ";
  if (strlen(s) != sizeof form - 1) return false;
  for (size_t i = 0; form[i]; i++)
    if (form[i] == 'd' ? s[i] < '0' || s[i] > '9' : s[i] != form[i]) return false;
  return true;
}

/* A name that becomes part of a file name on restore (the VM's, a disk's
 * target): not empty, no '/', not starting with '.', no control character. */
static bool plain_name(const char *s)
{
  if (!*s || *s == '.' || strlen(s) > 255) return false;
  for (const unsigned char *p = (const unsigned char *)s; *p; p++)
    if (*p == '/' || *p < 0x20 || *p == 0x7f) return false;
  return true;
}

static bool hex32(const char *s)
{
  if (strlen(s) != 32) return false;
  for (size_t i = 0; i < 32; i++)
    if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return false;
  return true;
}

int vb_manifest_parse(const unsigned char *buf, size_t len, unsigned chunk_size, const char *snapshot,
                      struct vb_manifest *m, const char **why)
{
  memset(m, 0, sizeof *m);
  if (chunk_size == 0) return *why = "no chunk size", -1;
  if (len < 12 || memcmp(buf, magic, 8) != 0) return *why = "not a manifest of this version", -1;
  size_t ml = (size_t)buf[8] | (size_t)buf[9] << 8 | (size_t)buf[10] << 16 | (size_t)buf[11] << 24;
  if (ml > META_MAX || ml > len - 12) return *why = "manifest metadata longer than the manifest", -1;
  json_object *o;
  int rc = -1;
  bool whole = vb_json_parse((const char *)buf + 12, ml, false, &o) == 0;
  static const char *const top[] = { "snapshot", "vm", "uuid", "host", "started", "ended", "kind", "why",
                                     "checkpoint", "xml", "disks", "bytes_read",
                                     "bytes_new", "bytes_stored", NULL };
  if (!whole || !vb_json_exactly(o, top)) {
    *why = "manifest metadata is not what version 1 holds";
    goto out;
  }
  for (size_t i = 0; fields[i]; i++)
    if (!(*field(m, i) = str_member(o, fields[i]))) {
      *why = "manifest metadata is not what version 1 holds";
      goto out;
    }
  char canon[37];
  if (!hex32(m->snapshot) || strcmp(m->snapshot, snapshot) != 0) {
    *why = "manifest of another snapshot";
    goto out;
  }
  if (!plain_name(m->vm)) {
    *why = "manifest VM name is not a plain name";
    goto out;
  }
  if (strcmp(m->kind, "full") != 0 && strcmp(m->kind, "incremental") != 0) {
    *why = "manifest kind is neither full nor incremental";
    goto out;
  }
  if (vm_uuid_canonical(m->uuid, canon) != 0 || strcmp(canon, m->uuid) != 0 || !utc_time(m->started) ||
      !utc_time(m->ended)) {
    *why = "manifest UUID or times are not in their form";
    goto out;
  }
  int64_t br, bn, bs;
  if (!vb_json_int(o, "bytes_read", 0, INT64_MAX, &br) || !vb_json_int(o, "bytes_new", 0, INT64_MAX, &bn) ||
      !vb_json_int(o, "bytes_stored", 0, INT64_MAX, &bs)) {
    *why = "manifest metadata is not what version 1 holds";
    goto out;
  }
  m->bytes_read = (uint64_t)br;
  m->bytes_new = (uint64_t)bn;
  m->bytes_stored = (uint64_t)bs;
  json_object *disks = vb_json_get(o, "disks", json_type_array);
  if (!disks || json_object_array_length(disks) > VB_MANIFEST_MAX_DISKS) {
    *why = "manifest has no list of disks, or too many";
    goto out;
  }
  size_t nd = json_object_array_length(disks);
  m->disks = calloc(nd ? nd : 1, sizeof *m->disks);
  if (!m->disks) {
    *why = "out of memory";
    goto out;
  }
  const unsigned char *p = buf + 12 + ml, *end = buf + len;
  static const char *const dnames[] = { "target", "format", "size", "chunks", NULL };
  for (size_t i = 0; i < nd; i++) {
    json_object *jd = json_object_array_get_idx(disks, i);
    struct vb_mdisk *d = &m->disks[i];
    m->ndisks = i + 1;
    int64_t size, n;
    if (!json_object_is_type(jd, json_type_object) || !vb_json_exactly(jd, dnames) ||
        !(d->target = str_member(jd, "target")) || !(d->format = str_member(jd, "format")) ||
        !vb_json_int(jd, "size", 0, INT64_MAX, &size) || !vb_json_int(jd, "chunks", 0, INT64_MAX, &n)) {
      *why = "a disk of the manifest is not what version 1 holds";
      goto out;
    }
    if (!plain_name(d->target)) {
      *why = "a disk target of the manifest is not a plain name";
      goto out;
    }
    for (size_t k = 0; k < i; k++)
      if (strcmp(m->disks[k].target, d->target) == 0) {
        *why = "a disk is in the manifest twice";
        goto out;
      }
    d->size = (uint64_t)size;
    if ((uint64_t)n != chunks_for(d->size, chunk_size) || (size_t)(end - p) / 32 < (uint64_t)n) {
      *why = "a disk's chunk table does not match its size";
      goto out;
    }
    d->nchunks = (size_t)n;
    d->ids = malloc(d->nchunks ? d->nchunks * 32 : 1);
    if (!d->ids) {
      *why = "out of memory";
      goto out;
    }
    memcpy(d->ids, p, d->nchunks * 32);
    p += d->nchunks * 32;
  }
  if (p != end) {
    *why = "manifest has bytes after its last table";
    goto out;
  }
  rc = 0;
out:
  json_object_put(o);
  if (rc) vb_manifest_free(m);
  return rc;
}
