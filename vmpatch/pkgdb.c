/* What a package database says is installed, read as text: dpkg's status file
 * (a guest's /var/lib/dpkg/status, read through libguestfs), the output of
 * dpkg-query and rpm -qa (the host's), and os-release(5). Pure parsers: the text
 * comes from a guest disk, which is untrusted input, and is read exactly (a line
 * that is neither a field nor a continuation refuses the file), since an
 * inventory that silently lost packages would call a machine clean. */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "vmpatch.h"

/* The longest Package, Version, Architecture, Source or Status read: other
 * fields (Depends, Description) are not read and may be of any length. */
#define FIELD_MAX 4096

static int err(char *why, size_t whylen, const char *fmt, ...) VM_PRINTF(3, 4);
static int err(char *why, size_t whylen, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(why, whylen, fmt, ap);
  va_end(ap);
  return -1;
}

static void pkg_add(struct vmp_target *t, size_t *cap, const char *name, const char *version, const char *arch,
                    const char *source, const char *source_version)
{
  if (t->npkgs == *cap) {
    *cap = *cap ? 2 * *cap : 256;
    t->pkgs = realloc(t->pkgs, *cap * sizeof *t->pkgs);
    if (!t->pkgs) abort();
  }
  struct vmp_package *p = &t->pkgs[t->npkgs++];
  p->name = vm_strdup(name);
  p->version = vm_strdup(version);
  p->arch = arch && *arch ? vm_strdup(arch) : NULL;
  p->source = vm_strdup(source && *source ? source : name);
  p->source_version = vm_strdup(source_version && *source_version ? source_version : version);
}

/* The characters a field value may hold: no control characters but tab. */
static bool clean_text(const char *s, size_t n)
{
  for (size_t i = 0; i < n; i++)
    if (((unsigned char)s[i] < 0x20 && s[i] != '\t') || s[i] == 0x7f) return false;
  return true;
}

/* A Debian package name (deb-control(5)): lower case letters, digits, + - . and
 * at least two characters, starting with a letter or digit. */
static bool deb_name_ok(const char *s)
{
  size_t n = strlen(s);
  if (n < 2 || n > 255) return false;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || (i > 0 && (c == '+' || c == '-' || c == '.'));
    if (!ok) return false;
  }
  return true;
}

/* One paragraph's fields that matter, as pointers into a copy of its lines. */
struct para {
  char *package, *version, *arch, *source, *status, *filename;
  int line; /* of its first field */
};

/* A field a reader keeps (the others are skipped): its name (any case), its
 * slot in struct para, and whether it may be empty. */
struct field {
  const char *name;
  size_t slot;
  bool may_be_empty;
};

/* Reads a deb822 control file (dpkg's status file, a Packages index) with
 * dpkg's rules: "Field: value" lines, continuation lines (skipped: no field kept
 * here has several lines), paragraphs ended by a blank line; no comments, NUL
 * or control characters. At the end of each paragraph, done() gets its kept
 * fields. kind names the file in the error about a comment. */
static int deb822_read(const char *text, size_t len, const char *kind, const struct field *fields,
                       int (*done)(struct para *p, void *ctx, char *why, size_t whylen), void *ctx, char *why,
                       size_t whylen)
{
  if (memchr(text, '\0', len)) return err(why, whylen, "a NUL byte");
  CLEANUP_FREE char *copy = malloc(len + 1);
  if (!copy) abort();
  memcpy(copy, text, len);
  copy[len] = '\0';
  struct para p = { 0 };
  bool in_field = false; /* a continuation line may follow */
  int lineno = 0;
  for (char *s = copy, *nl; s && *s; s = nl ? nl + 1 : NULL) {
    nl = strchr(s, '\n');
    if (nl) *nl = '\0';
    char *line = s;
    lineno++;
    size_t n = strlen(line);
    if (n && line[n - 1] == '\r') line[--n] = '\0';
    if (!clean_text(line, n)) return err(why, whylen, "line %d: a control character", lineno);
    if (strspn(line, " \t") == n) { /* a blank line ends a paragraph */
      if (p.line && done(&p, ctx, why, whylen) < 0) return -1;
      memset(&p, 0, sizeof p);
      in_field = false;
      continue;
    }
    if (line[0] == ' ' || line[0] == '\t') {
      if (!in_field) return err(why, whylen, "line %d: a continuation line that follows no field", lineno);
      continue;
    }
    if (line[0] == '#') return err(why, whylen, "line %d: a comment, which %s does not have", lineno, kind);
    char *colon = strchr(line, ':');
    if (!colon || colon == line)
      return err(why, whylen, "line %d: neither 'Field: value' nor a continuation line", lineno);
    *colon = '\0';
    if (strpbrk(line, " \t")) return err(why, whylen, "line %d: a field name with a space", lineno);
    char *v = colon + 1;
    while (*v == ' ' || *v == '\t') v++;
    size_t vn = strlen(v);
    while (vn && (v[vn - 1] == ' ' || v[vn - 1] == '\t')) v[--vn] = '\0';
    if (!p.line) p.line = lineno;
    in_field = true;
    const struct field *f = fields;
    while (f->name && strcasecmp(line, f->name) != 0) f++;
    if (!f->name) continue; /* a long Depends or Description is no concern here */
    char **slot = (char **)((char *)&p + f->slot);
    if (vn > FIELD_MAX) return err(why, whylen, "line %d: field %.32s is too long", lineno, line);
    if (*slot) return err(why, whylen, "line %d: field %s twice in one paragraph", lineno, line);
    if (!*v && !f->may_be_empty) return err(why, whylen, "line %d: field %s is empty", lineno, line);
    *slot = v;
  }
  return p.line ? done(&p, ctx, why, whylen) : 0;
}

/* "Source: name" or "Source: name (version)". */
static int split_source(char *src, char **name, char **ver)
{
  *ver = NULL;
  char *sp = strchr(src, ' ');
  if (!sp) {
    *name = src;
    return 0;
  }
  *sp = '\0';
  *name = src;
  char *v = sp + 1;
  while (*v == ' ') v++;
  size_t n = strlen(v);
  while (n && (v[n - 1] == ' ' || v[n - 1] == '\t')) v[--n] = '\0';
  if (n < 3 || v[0] != '(' || v[n - 1] != ')') return -1;
  v[n - 1] = '\0';
  v++;
  while (*v == ' ') v++;
  n = strlen(v);
  while (n && v[n - 1] == ' ') v[--n] = '\0';
  if (!*v || strchr(v, ' ') || strchr(v, '(') || strchr(v, ')')) return -1;
  *ver = v;
  return 0;
}

/* The status words (dpkg(1)'s "want flag status") whose package has files of its
 * Version on disk: installed, and the states a package is in while dpkg or a
 * trigger is not done with it (unpacked, half-configured, triggers-awaiting,
 * triggers-pending, half-installed). What the admin wants of it ("deinstall",
 * "purge", "hold") and an error flag ("reinstreq") do not change what is on
 * disk; "not-installed" and "config-files" leave no program behind. */
static const char *const present_states[] = {
  "installed", "unpacked", "half-configured", "triggers-awaiting", "triggers-pending", "half-installed",
};

static bool installed(const char *status, bool *ok)
{
  char want[32], flag[32], st[32], extra;
  *ok = sscanf(status, "%31s %31s %31s %c", want, flag, st, &extra) == 3;
  if (!*ok) return false;
  for (size_t i = 0; i < sizeof present_states / sizeof present_states[0]; i++)
    if (strcmp(st, present_states[i]) == 0) return true;
  return false;
}

struct status_ctx {
  struct vmp_target *t;
  size_t cap;
};

/* One paragraph of dpkg's status file: an installed package is added. */
static int status_para(struct para *p, void *ctx, char *why, size_t whylen)
{
  struct status_ctx *c = ctx;
  int line = p->line;
  if (!p->status) {
    if (!p->package) return err(why, whylen, "line %d: a paragraph with neither Package nor Status", line);
    return err(why, whylen, "line %d: package '%.64s' has no Status", line, p->package);
  }
  bool ok;
  bool inst = installed(p->status, &ok);
  if (!ok) return err(why, whylen, "line %d: Status '%.64s' is not 'WANT FLAG STATUS'", line, p->status);
  if (!inst) return 0;
  if (!p->package) return err(why, whylen, "line %d: an installed paragraph has no Package", line);
  if (!deb_name_ok(p->package)) return err(why, whylen, "line %d: '%.64s' is not a package name", line, p->package);
  if (!p->version) return err(why, whylen, "line %d: installed package '%s' has no Version", line, p->package);
  const char *vwhy = NULL;
  if (!vmp_version_valid(VMP_DEB, p->version, &vwhy))
    return err(why, whylen, "line %d: package '%s': version '%.64s': %s", line, p->package, p->version, vwhy);
  char *sname = NULL, *sver = NULL;
  if (p->source) {
    if (split_source(p->source, &sname, &sver) < 0 || !deb_name_ok(sname))
      return err(why, whylen, "line %d: package '%s': Source is not 'NAME' or 'NAME (VERSION)'", line, p->package);
    if (sver && !vmp_version_valid(VMP_DEB, sver, &vwhy))
      return err(why, whylen, "line %d: package '%s': source version '%.64s': %s", line, p->package, sver, vwhy);
  }
  pkg_add(c->t, &c->cap, p->package, p->version, p->arch, sname, sver);
  return 0;
}

int vmp_dpkg_status_parse(const char *text, size_t len, struct vmp_target *t, char *why, size_t whylen)
{
  static const struct field fields[] = {
    { "Package", offsetof(struct para, package), false },
    { "Version", offsetof(struct para, version), false },
    { "Architecture", offsetof(struct para, arch), true },
    { "Source", offsetof(struct para, source), false },
    { "Status", offsetof(struct para, status), false },
    { NULL, 0, false },
  };
  struct status_ctx c = { t, t->npkgs };
  return deb822_read(text, len, "a status file", fields, status_para, &c, why, whylen);
}

/* One line a field: splits at tabs into exactly n fields. */
static int split_tabs(char *line, char **f, int n)
{
  for (int i = 0; i < n; i++) {
    f[i] = line;
    char *tab = strchr(line, '\t');
    if (i == n - 1) return tab ? -1 : 0;
    if (!tab) return -1;
    *tab = '\0';
    line = tab + 1;
  }
  return 0;
}

/* Each line of text, without its newline, to fn; stops at fn's first error. */
static int each_line(const char *text, size_t len, int (*fn)(char *line, int lineno, void *arg), void *arg,
                     char *why, size_t whylen)
{
  if (memchr(text, '\0', len)) return err(why, whylen, "a NUL byte");
  char *copy = malloc(len + 1);
  if (!copy) abort();
  memcpy(copy, text, len);
  copy[len] = '\0';
  int rc = 0, lineno = 0;
  for (char *s = copy, *nl; rc == 0 && s && *s; s = nl ? nl + 1 : NULL) {
    nl = strchr(s, '\n');
    if (nl) *nl = '\0';
    lineno++;
    rc = fn(s, lineno, arg);
  }
  free(copy);
  return rc;
}

struct query_ctx {
  struct vmp_target *t;
  size_t cap;
  char *why;
  size_t whylen;
};

/* PACKAGE VERSION ARCH SOURCE SOURCE-VERSION STATUS-ABBREV, tab-separated. */
static int dpkg_query_line(char *line, int lineno, void *arg)
{
  struct query_ctx *c = arg;
  char *f[6];
  if (!*line) return 0;
  if (!clean_text(line, strlen(line)) || split_tabs(line, f, 6) < 0)
    return err(c->why, c->whylen, "line %d: not the six fields asked for", lineno);
  /* db:Status-Abbrev: want, status, error flag ("ii ", "hi ", "rc ", "iU "): the
   * status letters of present_states (i, U, F, W, t, H). */
  const char *st = f[5];
  if (strlen(st) < 2 || !strchr("iUFWtH", st[1])) return 0;
  const char *vwhy = NULL;
  if (!deb_name_ok(f[0])) return err(c->why, c->whylen, "line %d: '%.64s' is not a package name", lineno, f[0]);
  if (!vmp_version_valid(VMP_DEB, f[1], &vwhy))
    return err(c->why, c->whylen, "line %d: package '%s': version '%.64s': %s", lineno, f[0], f[1], vwhy);
  if (*f[4] && !vmp_version_valid(VMP_DEB, f[4], &vwhy))
    return err(c->why, c->whylen, "line %d: package '%s': source version '%.64s': %s", lineno, f[0], f[4], vwhy);
  pkg_add(c->t, &c->cap, f[0], f[1], f[2], f[3], f[4]);
  return 0;
}

int vmp_dpkg_query_parse(const char *text, size_t len, struct vmp_target *t, char *why, size_t whylen)
{
  struct query_ctx c = { t, t->npkgs, why, whylen };
  return each_line(text, len, dpkg_query_line, &c, why, whylen);
}

/* NAME EPOCH VERSION RELEASE ARCH SOURCERPM, tab-separated; EPOCH "(none)" or a
 * number, SOURCERPM "(none)" or NAME-VERSION-RELEASE.src.rpm. */
static int rpm_line(char *line, int lineno, void *arg)
{
  struct query_ctx *c = arg;
  char *f[6];
  if (!*line) return 0;
  if (!clean_text(line, strlen(line)) || split_tabs(line, f, 6) < 0)
    return err(c->why, c->whylen, "line %d: not the six fields asked for", lineno);
  /* gpg-pubkey "packages" are keys, not software. */
  if (strcmp(f[0], "gpg-pubkey") == 0) return 0;
  bool epoch = strcmp(f[1], "(none)") != 0 && strcmp(f[1], "0") != 0 && *f[1];
  CLEANUP_FREE char *ver = vm_strdup_printf("%s%s%s-%s", epoch ? f[1] : "", epoch ? ":" : "", f[2], f[3]);
  const char *vwhy = NULL;
  if (!*f[0] || !vmp_version_valid(VMP_RPM, ver, &vwhy))
    return err(c->why, c->whylen, "line %d: package '%.64s': version '%.64s' is not an RPM version", lineno, f[0], ver);
  CLEANUP_FREE char *src = NULL, *srcver = NULL;
  size_t sn = strlen(f[5]);
  if (sn > 8 && strcmp(f[5] + sn - 8, ".src.rpm") == 0) {
    src = strndup(f[5], sn - 8);
    if (!src) abort();
    /* NAME-VERSION-RELEASE: the name is what comes before the last two dashes,
     * the source's version what comes after (a subpackage may have its own
     * version); the epoch is not in the file name: the binary's. */
    char *rd = strrchr(src, '-');
    char *vd = rd ? memrchr(src, '-', (size_t)(rd - src)) : NULL;
    if (vd && vd > src && rd[1] && vd + 1 < rd) {
      *vd = '\0';
      srcver = vm_strdup_printf("%s%s%s", epoch ? f[1] : "", epoch ? ":" : "", vd + 1);
      if (!vmp_version_valid(VMP_RPM, srcver, &vwhy))
        return err(c->why, c->whylen, "line %d: package '%.64s': source '%.64s' is not NAME-VERSION-RELEASE.src.rpm",
                   lineno, f[0], f[5]);
    } else {
      return err(c->why, c->whylen, "line %d: package '%.64s': source '%.64s' is not NAME-VERSION-RELEASE.src.rpm",
                 lineno, f[0], f[5]);
    }
  }
  pkg_add(c->t, &c->cap, f[0], ver, strcmp(f[4], "(none)") ? f[4] : NULL, src, srcver);
  return 0;
}

int vmp_rpm_qa_parse(const char *text, size_t len, struct vmp_target *t, char *why, size_t whylen)
{
  struct query_ctx c = { t, t->npkgs, why, whylen };
  return each_line(text, len, rpm_line, &c, why, whylen);
}

/* A value of os-release(5): unquoted, or in single or double quotes with
 * backslash escapes. NULL when it is neither. */
static char *os_value(const char *v)
{
  size_t n = strlen(v);
  if (n == 0) return vm_strdup("");
  if (v[0] != '"' && v[0] != '\'') return strpbrk(v, " \t\"'\\`$") ? NULL : vm_strdup(v);
  char q = v[0];
  if (n < 2 || v[n - 1] != q) return NULL;
  char *out = malloc(n);
  if (!out) abort();
  size_t o = 0;
  for (size_t i = 1; i < n - 1; i++) {
    if (v[i] == '\\' && q == '"' && i + 1 < n - 1) i++;
    else if (v[i] == q) {
      free(out);
      return NULL;
    }
    out[o++] = v[i];
  }
  out[o] = '\0';
  return out;
}

int vmp_os_release_parse(const char *text, size_t len, char **id, char **version_id)
{
  *id = *version_id = NULL;
  if (memchr(text, '\0', len)) return -1;
  CLEANUP_FREE char *copy = malloc(len + 1);
  if (!copy) abort();
  memcpy(copy, text, len);
  copy[len] = '\0';
  for (char *s = copy, *nl; s && *s; s = nl ? nl + 1 : NULL) {
    nl = strchr(s, '\n');
    if (nl) *nl = '\0';
    char **slot = strncmp(s, "ID=", 3) == 0           ? id
                  : strncmp(s, "VERSION_ID=", 11) == 0 ? version_id
                                                       : NULL;
    if (!slot) continue;
    char *v = os_value(strchr(s, '=') + 1);
    if (!v || !*v || !clean_text(v, strlen(v)) || strlen(v) > 64) {
      free(v);
      continue;
    }
    free(*slot);
    *slot = v;
  }
  if (!*id) {
    free(*version_id);
    *version_id = NULL;
    return -1;
  }
  return 0;
}

/* ---- An APT repository's index ------------------------------------------------------- */

/* One paragraph of a Packages index, checked; its Filename added to files. */
static int packages_para(struct para *p, void *ctx, char *why, size_t whylen)
{
  struct vm_strv *files = ctx;
  if (!p->package) return err(why, whylen, "line %d: a paragraph without Package", p->line);
  if (!deb_name_ok(p->package)) return err(why, whylen, "line %d: '%.64s' is not a package name", p->line, p->package);
  const char *vwhy = NULL;
  if (!p->version) return err(why, whylen, "line %d: package '%s' has no Version", p->line, p->package);
  if (!vmp_version_valid(VMP_DEB, p->version, &vwhy))
    return err(why, whylen, "line %d: package '%s': version '%.64s': %s", p->line, p->package, p->version, vwhy);
  const char *filename = p->filename;
  if (!filename) return err(why, whylen, "line %d: package '%s' has no Filename", p->line, p->package);
  if (filename[0] == '/' || strstr(filename, "..") || strpbrk(filename, " \t"))
    return err(why, whylen, "line %d: package '%s': Filename '%.64s' is not a path inside the repository", p->line,
               p->package, filename);
  vm_strv_add(files, filename);
  return 0;
}

int vmp_deb_packages_parse(const char *text, size_t len, struct vm_strv *files, char *why, size_t whylen)
{
  static const struct field fields[] = {
    { "Package", offsetof(struct para, package), false },
    { "Version", offsetof(struct para, version), false },
    { "Filename", offsetof(struct para, filename), false },
    { NULL, 0, false },
  };
  size_t before = files->n;
  if (deb822_read(text, len, "a Packages index", fields, packages_para, files, why, whylen) < 0) return -1;
  if (files->n == before) return err(why, whylen, "no package in it");
  return 0;
}
