/* The offline OSV feed (https://ossf.github.io/osv-schema/): a directory of OSV
 * records, one JSON file each, or a .zip of them as the OSV project publishes one
 * per ecosystem (Debian/all.zip). Read as untrusted input: one record that does
 * not parse, or lacks what a scan needs, refuses the whole feed, since a scan
 * that skips it would call a vulnerable machine clean. */
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "vmpatch.h"

/* Larger than any OSV record seen (a kernel CVE with its many versions is a few
 * hundred KiB). */
#define OSV_RECORD_MAX ((size_t)64 << 20)

const char *const vmp_sev_names[] = { "unknown", "low", "medium", "high", "critical" };

int vmp_sev_parse(const char *s)
{
  for (int i = 0; i <= VMP_SEV_CRITICAL; i++)
    if (strcmp(s, vmp_sev_names[i]) == 0) return i;
  return -1;
}

enum vmp_sev vmp_sev_from_text(const char *s)
{
  static const struct {
    const char *word;
    enum vmp_sev sev;
  } words[] = {
    { "unimportant", VMP_SEV_LOW }, { "negligible", VMP_SEV_LOW }, { "low", VMP_SEV_LOW },
    { "moderate", VMP_SEV_MEDIUM }, { "medium", VMP_SEV_MEDIUM }, { "important", VMP_SEV_HIGH },
    { "high", VMP_SEV_HIGH },       { "critical", VMP_SEV_CRITICAL },
  };
  if (!s) return VMP_SEV_UNKNOWN;
  for (size_t i = 0; i < sizeof words / sizeof words[0]; i++)
    if (strcasecmp(s, words[i].word) == 0) return words[i].sev;
  /* A bare CVSS base score, rated as CVSS v3 does. */
  char *end;
  errno = 0;
  double score = strtod(s, &end);
  if (end != s && *end == '\0' && errno == 0 && score >= 0.0 && score <= 10.0) {
    if (score >= 9.0) return VMP_SEV_CRITICAL;
    if (score >= 7.0) return VMP_SEV_HIGH;
    if (score >= 4.0) return VMP_SEV_MEDIUM;
    if (score > 0.0) return VMP_SEV_LOW;
  }
  return VMP_SEV_UNKNOWN;
}

int vmp_ecosystem_format(const char *eco)
{
  static const struct {
    const char *name;
    enum vmp_pkgfmt f;
  } ecos[] = {
    { "Debian", VMP_DEB },      { "Red Hat", VMP_RPM }, { "AlmaLinux", VMP_RPM },
    { "Rocky Linux", VMP_RPM }, { "openSUSE", VMP_RPM }, { "SUSE", VMP_RPM },
  };
  size_t base = strcspn(eco, ":");
  for (size_t i = 0; i < sizeof ecos / sizeof ecos[0]; i++)
    if (strlen(ecos[i].name) == base && strncmp(eco, ecos[i].name, base) == 0) return (int)ecos[i].f;
  return -1;
}

static void affected_free(struct vmp_affected *a)
{
  free(a->ecosystem);
  free(a->package);
  for (size_t i = 0; i < a->nranges; i++) {
    for (size_t k = 0; k < a->ranges[i].n; k++) free(a->ranges[i].ev[k].version);
    free(a->ranges[i].ev);
  }
  free(a->ranges);
  vm_strv_free(&a->versions);
}

void vmp_advisory_free(struct vmp_advisory *adv)
{
  free(adv->id);
  free(adv->file);
  vm_strv_free(&adv->aliases);
  for (size_t i = 0; i < adv->naff; i++) affected_free(&adv->aff[i]);
  free(adv->aff);
  memset(adv, 0, sizeof *adv);
}

/* A string without control characters: a NUL inside would cut it short of what
 * the record says, and a newline or escape would forge lines of the report. */
static bool clean_string(json_object *v)
{
  const char *s = json_object_get_string(v);
  size_t n = (size_t)json_object_get_string_len(v);
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) return false;
  return true;
}

/* A member that must be a non-empty string when present; NULL when absent. */
static int get_string(json_object *o, const char *key, bool required, const char **out, const char *where,
                      char *why, size_t whylen)
{
  json_object *v;
  *out = NULL;
  if (!json_object_object_get_ex(o, key, &v) || json_object_is_type(v, json_type_null)) {
    if (!required) return 0;
    snprintf(why, whylen, "%s has no '%s'", where, key);
    return -1;
  }
  if (!json_object_is_type(v, json_type_string) || json_object_get_string_len(v) == 0) {
    snprintf(why, whylen, "%s: '%s' is not a non-empty string", where, key);
    return -1;
  }
  if (!clean_string(v)) {
    snprintf(why, whylen, "%s: '%s' holds a control character", where, key);
    return -1;
  }
  *out = json_object_get_string(v);
  return 0;
}

/* A member that must be an array (or an object) when present. */
static json_object *get_typed(json_object *o, const char *key, json_type type, bool *bad)
{
  json_object *v;
  *bad = false;
  if (!json_object_object_get_ex(o, key, &v) || json_object_is_type(v, json_type_null)) return NULL;
  if (!json_object_is_type(v, type)) *bad = true;
  return *bad ? NULL : v;
}

/* The highest severity a record or entry states: "severity" [{type, score}],
 * database_specific.severity, ecosystem_specific.urgency (Debian) or .severity. */
static enum vmp_sev severity_of(json_object *o)
{
  enum vmp_sev s = VMP_SEV_UNKNOWN;
  json_object *arr, *v, *sub;
  if (json_object_object_get_ex(o, "severity", &arr) && json_object_is_type(arr, json_type_array)) {
    for (size_t i = 0; i < json_object_array_length(arr); i++) {
      json_object *e = json_object_array_get_idx(arr, i);
      if (json_object_is_type(e, json_type_object) && json_object_object_get_ex(e, "score", &v) &&
          json_object_is_type(v, json_type_string)) {
        enum vmp_sev t = vmp_sev_from_text(json_object_get_string(v));
        if (t > s) s = t;
      }
    }
  }
  static const char *const where[][2] = {
    { "database_specific", "severity" },
    { "ecosystem_specific", "urgency" },
    { "ecosystem_specific", "severity" },
  };
  for (size_t i = 0; i < sizeof where / sizeof where[0]; i++) {
    if (json_object_object_get_ex(o, where[i][0], &sub) && json_object_is_type(sub, json_type_object) &&
        json_object_object_get_ex(sub, where[i][1], &v) && json_object_is_type(v, json_type_string)) {
      enum vmp_sev t = vmp_sev_from_text(json_object_get_string(v));
      if (t > s) s = t;
    }
  }
  return s;
}

static bool version_ok(int fmt, const char *v, const char *where, char *why, size_t whylen)
{
  const char *r = NULL;
  if (fmt < 0 || vmp_version_valid((enum vmp_pkgfmt)fmt, v, &r)) return true;
  snprintf(why, whylen, "%s: version '%.64s': %s", where, v, r);
  return false;
}

/* One range: its events, checked; kept only when it is of type ECOSYSTEM and the
 * ecosystem is one vmpatch reads (fmt >= 0). */
static int parse_range(json_object *r, int fmt, struct vmp_affected *a, const char *where, char *why, size_t whylen)
{
  if (!json_object_is_type(r, json_type_object)) {
    snprintf(why, whylen, "%s is not an object", where);
    return -1;
  }
  const char *type;
  if (get_string(r, "type", true, &type, where, why, whylen) < 0) return -1;
  bool bad;
  json_object *events = get_typed(r, "events", json_type_array, &bad);
  if (!events) {
    snprintf(why, whylen, "%s: %s 'events'", where, bad ? "not an array:" : "no");
    return -1;
  }
  bool keep = fmt >= 0 && strcmp(type, "ECOSYSTEM") == 0;
  struct vmp_range range = { 0 };
  size_t n = json_object_array_length(events);
  if (keep && n) range.ev = calloc(n, sizeof *range.ev);
  for (size_t i = 0; i < n; i++) {
    json_object *e = json_object_array_get_idx(events, i);
    char w[160];
    snprintf(w, sizeof w, "%s.events[%zu]", where, i);
    if (!json_object_is_type(e, json_type_object) || json_object_object_length(e) != 1) {
      snprintf(why, whylen, "%s is not an object of one event", w);
      goto fail;
    }
    static const char *const kinds[] = { "introduced", "fixed", "last_affected", "limit" };
    const char *v = NULL;
    int k;
    for (k = 0; k < 4; k++) {
      if (get_string(e, kinds[k], false, &v, w, why, whylen) < 0) goto fail;
      if (v) break;
    }
    if (!v) {
      snprintf(why, whylen, "%s: not introduced, fixed, last_affected or limit", w);
      goto fail;
    }
    if (!keep || k == 3) continue; /* limit: for git ranges only */
    if (!(k == 0 && strcmp(v, "0") == 0) && !version_ok(fmt, v, w, why, whylen)) goto fail;
    range.ev[range.n].kind = (enum vmp_event_kind)k;
    range.ev[range.n++].version = vm_strdup(v);
  }
  if (keep) {
    a->ranges = realloc(a->ranges, (a->nranges + 1) * sizeof *a->ranges);
    if (!a->ranges) abort();
    a->ranges[a->nranges++] = range;
  }
  return 0;
fail:
  for (size_t k = 0; k < range.n; k++) free(range.ev[k].version);
  free(range.ev);
  return -1;
}

static int parse_affected(json_object *e, size_t idx, enum vmp_sev record_sev, struct vmp_advisory *adv, char *why,
                          size_t whylen)
{
  char where[48];
  snprintf(where, sizeof where, "affected[%zu]", idx);
  if (!json_object_is_type(e, json_type_object)) {
    snprintf(why, whylen, "%s is not an object", where);
    return -1;
  }
  bool bad;
  json_object *pkg = get_typed(e, "package", json_type_object, &bad);
  if (!pkg) {
    snprintf(why, whylen, "%s has %s", where, bad ? "a package that is not an object" : "no package");
    return -1;
  }
  const char *eco, *name;
  char pwhere[64];
  snprintf(pwhere, sizeof pwhere, "%s.package", where);
  if (get_string(pkg, "ecosystem", true, &eco, pwhere, why, whylen) < 0 ||
      get_string(pkg, "name", true, &name, pwhere, why, whylen) < 0)
    return -1;
  int fmt = vmp_ecosystem_format(eco);
  struct vmp_affected a = { 0 };
  json_object *ranges = get_typed(e, "ranges", json_type_array, &bad);
  if (bad) {
    snprintf(why, whylen, "%s: 'ranges' is not an array", where);
    return -1;
  }
  for (size_t i = 0; ranges && i < json_object_array_length(ranges); i++) {
    char w[128];
    snprintf(w, sizeof w, "%s.ranges[%zu]", where, i);
    if (parse_range(json_object_array_get_idx(ranges, i), fmt, &a, w, why, whylen) < 0) goto fail;
  }
  json_object *versions = get_typed(e, "versions", json_type_array, &bad);
  if (bad) {
    snprintf(why, whylen, "%s: 'versions' is not an array", where);
    goto fail;
  }
  for (size_t i = 0; versions && i < json_object_array_length(versions); i++) {
    json_object *v = json_object_array_get_idx(versions, i);
    char w[128];
    snprintf(w, sizeof w, "%s.versions[%zu]", where, i);
    if (!json_object_is_type(v, json_type_string) || !clean_string(v)) {
      snprintf(why, whylen, "%s is not a string without control characters", w);
      goto fail;
    }
    if (!version_ok(fmt, json_object_get_string(v), w, why, whylen)) goto fail;
    if (fmt >= 0) vm_strv_add(&a.versions, json_object_get_string(v));
  }
  if (fmt < 0) return 0;
  a.ecosystem = vm_strdup(eco);
  a.package = vm_strdup(name);
  a.severity = severity_of(e);
  if (a.severity == VMP_SEV_UNKNOWN) a.severity = record_sev;
  adv->aff = realloc(adv->aff, (adv->naff + 1) * sizeof *adv->aff);
  if (!adv->aff) abort();
  adv->aff[adv->naff++] = a;
  return 0;
fail:
  affected_free(&a);
  return -1;
}

int vmp_osv_parse(const char *text, size_t len, struct vmp_advisory *adv, char *why, size_t whylen)
{
  memset(adv, 0, sizeof *adv);
  if (memchr(text, '\0', len)) {
    snprintf(why, whylen, "not JSON: a NUL byte");
    return -1;
  }
  json_tokener *tok = json_tokener_new();
  if (!tok) abort();
  json_object *root = len <= INT32_MAX ? json_tokener_parse_ex(tok, text, (int)len) : NULL;
  enum json_tokener_error jerr = json_tokener_get_error(tok);
  size_t end = json_tokener_get_parse_end(tok);
  json_tokener_free(tok);
  CLEANUP_JSON json_object *owned = root;
  if (!root || jerr != json_tokener_success) {
    snprintf(why, whylen, "not JSON: %s",
             jerr == json_tokener_continue ? "it ends early" : json_tokener_error_desc(jerr));
    return -1;
  }
  for (; end < len; end++)
    if (!strchr(" \t\r\n", text[end])) {
      snprintf(why, whylen, "not JSON: text after the record");
      return -1;
    }
  if (!json_object_is_type(root, json_type_object)) {
    snprintf(why, whylen, "not an OSV record: not a JSON object");
    return -1;
  }
  const char *id, *withdrawn;
  if (get_string(root, "id", true, &id, "the record", why, whylen) < 0) return -1;
  if (get_string(root, "withdrawn", false, &withdrawn, "the record", why, whylen) < 0) return -1;
  adv->id = vm_strdup(id);
  bool bad;
  json_object *aliases = get_typed(root, "aliases", json_type_array, &bad);
  if (bad) {
    snprintf(why, whylen, "'aliases' is not an array");
    goto fail;
  }
  for (size_t i = 0; aliases && i < json_object_array_length(aliases); i++) {
    json_object *v = json_object_array_get_idx(aliases, i);
    if (!json_object_is_type(v, json_type_string) || json_object_get_string_len(v) == 0 || !clean_string(v)) {
      snprintf(why, whylen, "aliases[%zu] is not a non-empty string without control characters", i);
      goto fail;
    }
    vm_strv_add(&adv->aliases, json_object_get_string(v));
  }
  json_object *affected = get_typed(root, "affected", json_type_array, &bad);
  if (bad) {
    snprintf(why, whylen, "'affected' is not an array");
    goto fail;
  }
  enum vmp_sev sev = severity_of(root);
  for (size_t i = 0; affected && i < json_object_array_length(affected); i++)
    if (parse_affected(json_object_array_get_idx(affected, i), i, sev, adv, why, whylen) < 0) goto fail;
  /* A withdrawn advisory was checked like the others, but affects nothing. */
  if (withdrawn) {
    for (size_t i = 0; i < adv->naff; i++) affected_free(&adv->aff[i]);
    adv->naff = 0;
  }
  return 0;
fail:
  vmp_advisory_free(adv);
  return -1;
}

static void feed_add(struct vmp_feed *f, struct vmp_advisory *a)
{
  if (f->n == f->cap) {
    f->cap = f->cap ? 2 * f->cap : 256;
    f->v = realloc(f->v, f->cap * sizeof *f->v);
    if (!f->v) abort();
  }
  f->v[f->n++] = *a;
}

void vmp_feed_free(struct vmp_feed *f)
{
  for (size_t i = 0; i < f->n; i++) vmp_advisory_free(&f->v[i]);
  free(f->v);
  memset(f, 0, sizeof *f);
}

static int json_file(const struct dirent *e)
{
  size_t n = strlen(e->d_name);
  return e->d_name[0] != '.' && n > 5 && strcmp(e->d_name + n - 5, ".json") == 0;
}

static int load_one(const char *path, const char *shown, struct vmp_feed *f, size_t *seen)
{
  size_t len;
  CLEANUP_FREE char *text = vm_read_file(path, OSV_RECORD_MAX, &len);
  if (!text) return vm_fail_errno(VMP_EXIT_BADINPUT, "feed %s", shown);
  struct vmp_advisory a;
  char why[256];
  if (vmp_osv_parse(text, len, &a, why, sizeof why) < 0)
    return vm_fail(VMP_EXIT_BADINPUT, "feed %s: %s", shown, why);
  (*seen)++;
  if (a.naff == 0) {
    vmp_advisory_free(&a);
    return 0;
  }
  a.file = vm_strdup(shown);
  feed_add(f, &a);
  return 0;
}

/* Folders nested deeper than this in a feed refuse it (OSV's zips are flat). */
#define FEED_DEPTH_MAX 8

/* The *.json files of a directory and of its subdirectories, in name order (a
 * scan's rows come out the same each time). A link, or a folder deeper than
 * FEED_DEPTH_MAX, refuses the feed rather than being passed over: a record
 * skipped would call a vulnerable machine clean. shown: the name messages give
 * the directory. */
static int load_dir(const char *dir, const char *shown, struct vmp_feed *f, size_t *seen, int depth)
{
  struct dirent **names;
  int n = scandir(dir, &names, NULL, alphasort);
  if (n < 0) return vm_fail_errno(errno == ENOENT ? VM_EXIT_NOTFOUND : VMP_EXIT_BADINPUT, "feed %s", shown);
  int rc = 0;
  for (int i = 0; i < n; i++) {
    const struct dirent *e = names[i];
    if (rc == 0 && e->d_name[0] != '.') {
      CLEANUP_FREE char *path = vm_strdup_printf("%s/%s", dir, e->d_name);
      CLEANUP_FREE char *sub = vm_strdup_printf("%s/%s", shown, e->d_name);
      struct stat st;
      if (lstat(path, &st) < 0) rc = vm_fail_errno(VMP_EXIT_BADINPUT, "feed %s", sub);
      else if (S_ISLNK(st.st_mode))
        rc = vm_fail(VMP_EXIT_BADINPUT, "feed %s: a symbolic link (a feed holds its records itself)", sub);
      else if (S_ISDIR(st.st_mode) && depth >= FEED_DEPTH_MAX)
        rc = vm_fail(VMP_EXIT_BADINPUT, "feed %s: folders nested deeper than %d", sub, FEED_DEPTH_MAX);
      else if (S_ISDIR(st.st_mode)) rc = load_dir(path, sub, f, seen, depth + 1);
      else if (S_ISREG(st.st_mode) && json_file(e)) rc = load_one(path, sub, f, seen);
    }
    free(names[i]);
  }
  free(names);
  return rc;
}

/* What a zip may unpack to: OSV's largest, all.zip of every ecosystem, is a few
 * GiB; its Debian one about 1 GiB. */
#define ZIP_TOTAL_MAX ((uint64_t)16 << 30)

/* The size its members say they unpack to, from unzip -Zt's summary ("N files,
 * M bytes uncompressed, ..."). 0, or an exit code after a message. */
static int zip_total(const char *zip, const char *shown, uint64_t *total)
{
  char *argv[] = { "unzip", "-Zt", (char *)zip, NULL };
  CLEANUP_FREE char *out = NULL, *err = NULL;
  int st = vm_run(argv, &out, &err);
  unsigned long long bytes;
  const char *comma = out ? strchr(out, ',') : NULL; /* "1 file, ..." or "2 files, ..." */
  if (st == 0 && comma && sscanf(comma + 1, " %llu bytes uncompressed", &bytes) == 1) {
    *total = bytes;
    return 0;
  }
  if (vm_interrupted()) return vm_fail_interrupted();
  if (st < 0 && !out) return vm_fail_errno(VM_EXIT_FAIL, "cannot run unzip (Debian package unzip)");
  return vm_fail(VMP_EXIT_BADINPUT, "feed %s: not a zip file (neither a folder nor a .json file)", shown);
}

/* A zip is unpacked by unzip(1), run with an argv, into a scratch folder of this
 * run that is removed afterwards; unzip keeps every member inside it (it drops
 * "../" and leading "/"). unzip reads its archive's name as a wildcard and an
 * option when it starts with '-': it is given a link of a fixed name to it.
 * Against a zip bomb, the total its members declare is checked first (against
 * ZIP_TOTAL_MAX and the scratch folder's free space), and prlimit(1) caps
 * each file unzip writes at OSV_RECORD_MAX, which holds a member that lies. */
static int load_zip(const char *zip, struct vmp_feed *f, size_t *seen)
{
  CLEANUP_FREE char *dir = vm_scratch_dir("patch");
  if (!dir) return VM_EXIT_FAIL;
  CLEANUP_FREE char *abs = realpath(zip, NULL);
  CLEANUP_FREE char *link = vm_strdup_printf("%s/feed.zip", dir);
  CLEANUP_FREE char *out = vm_strdup_printf("%s/records", dir);
  int rc = 0;
  uint64_t total = 0;
  struct statvfs fs;
  if (!abs || symlink(abs, link) < 0 || mkdir(out, 0700) < 0)
    rc = vm_fail_errno(VM_EXIT_FAIL, "feed %s: cannot prepare its scratch folder", zip);
  if (rc == 0) rc = zip_total(link, zip, &total);
  if (rc == 0 && total > ZIP_TOTAL_MAX)
    rc = vm_fail(VMP_EXIT_BADINPUT, "feed %s: its members unpack to %llu bytes, more than an OSV feed (%llu)", zip,
                 (unsigned long long)total, (unsigned long long)ZIP_TOTAL_MAX);
  if (rc == 0 && statvfs(dir, &fs) == 0 && total > (uint64_t)fs.f_bavail * fs.f_frsize)
    rc = vm_fail(VM_EXIT_FAIL, "feed %s: its members unpack to %llu bytes, more than the free space of %s (TMPDIR)",
                 zip, (unsigned long long)total, dir);
  if (rc == 0) {
    CLEANUP_FREE char *fsize = vm_strdup_printf("--fsize=%zu", OSV_RECORD_MAX);
    char *argv[] = { "prlimit", fsize, "unzip", "-qq", "-o", link, "*.json", "-d", out, NULL };
    CLEANUP_FREE char *err = NULL;
    int st = vm_run(argv, NULL, &err);
    /* unzip's 11: no member matched "*.json" (an empty feed, said below). */
    if (vm_interrupted()) rc = vm_fail_interrupted();
    else if (st < 0 && (!err || !*err))
      rc = vm_fail(VMP_EXIT_BADINPUT, "feed %s: unzip stopped: a member unpacks past %zu MiB, more than any OSV record",
                   zip, OSV_RECORD_MAX >> 20);
    else if (st != 0 && st != 11) {
      const char *why = vm_last_line(err);
      rc = vm_fail(VMP_EXIT_BADINPUT, "feed %s: unzip failed%s%s", zip, *why ? ": " : "",
                   *why ? why : "");
    }
  }
  if (rc == 0) rc = load_dir(out, zip, f, seen, 0);
  vm_remove_tree(dir);
  return rc;
}

int vmp_feed_load(const char *path, struct vmp_feed *f)
{
  memset(f, 0, sizeof *f);
  struct stat st;
  if (stat(path, &st) < 0)
    return vm_fail_errno(errno == ENOENT ? VM_EXIT_NOTFOUND : VMP_EXIT_BADINPUT, "feed %s", path);
  size_t seen = 0, n = strlen(path);
  int rc;
  if (S_ISDIR(st.st_mode)) rc = load_dir(path, path, f, &seen, 0);
  else if (n > 5 && strcmp(path + n - 5, ".json") == 0) rc = load_one(path, path, f, &seen);
  else rc = load_zip(path, f, &seen);
  if (rc == 0 && seen == 0) rc = vm_fail(VMP_EXIT_BADINPUT, "feed %s: no OSV records (*.json) in it", path);
  if (rc) vmp_feed_free(f);
  else vm_debug("feed %s: %zu records, %zu for the ecosystems read", path, seen, f->n);
  return rc;
}
