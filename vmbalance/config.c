/* vmbalance's config file (man/vmbalance.conf.5), parsed as untrusted text: each
 * line checked as it comes, then the rules against each other; every error names
 * its line. */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "strmap.h"

const char *const bal_res_names[BAL_NRES] = { "cpu", "memory", "disk", "network" };

static const char *const kind_names[] = {
  [BAL_AFFINITY] = "affinity", [BAL_ANTI_AFFINITY] = "anti-affinity", [BAL_PIN] = "pin",
  [BAL_EXCLUDE] = "exclude",   [BAL_MAINTENANCE] = "maintenance",     [BAL_PRIORITY] = "priority",
  [BAL_HA] = "ha",             [BAL_FENCE] = "fence",
};

void bal_config_init(struct bal_config *c)
{
  memset(c, 0, sizeof *c);
  c->policy = BAL_BALANCE;
  c->level = 3;
  for (int r = 0; r < BAL_NRES; r++) c->weight_milli[r] = 1000;
  c->headroom = 10;
  c->threshold_milli = 1000;
  c->bandwidth = 1000;
}

void bal_config_free(struct bal_config *c)
{
  for (size_t i = 0; i < c->n; i++) {
    for (size_t k = 0; k < c->v[i].n; k++) free(c->v[i].w[k]);
    free(c->v[i].w);
  }
  free(c->v);
  c->v = NULL;
  c->n = 0;
}

static int fail(struct bal_error *err, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(struct bal_error *err, int line, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  err->line = line;
  vsnprintf(err->msg, sizeof err->msg, fmt, ap);
  va_end(ap);
  return -1;
}

/* A name of a VM or a host: printable, no quotes or backslashes (it goes into
 * plan lines, vmkit-plan(5)), at most BAL_NAME_MAX bytes. */
static bool plain_word(const char *w, size_t max)
{
  size_t n = strlen(w);
  if (n == 0 || n > max) return false;
  for (const unsigned char *p = (const unsigned char *)w; *p; p++)
    if (*p < 0x21 || *p >= 0x7f || *p == '"' || *p == '\'' || *p == '\\') return false;
  return true;
}

/* A decimal number with at most 3 digits after the point, in thousandths, from 0
 * to max_milli. */
static bool parse_milli(const char *s, long max_milli, int *out)
{
  long v = 0;
  int digits = 0, frac = -1;
  for (; *s; s++) {
    if (*s == '.' && frac < 0 && digits > 0) {
      frac = 0;
      continue;
    }
    if (*s < '0' || *s > '9') return false;
    if (frac >= 0 && ++frac > 3) return false;
    if (++digits > 10) return false;
    v = v * 10 + (*s - '0');
  }
  if (digits == 0 || frac == 0) return false;
  for (int k = frac < 0 ? 0 : frac; k < 3; k++) v *= 10;
  if (v > max_milli) return false;
  *out = (int)v;
  return true;
}

static bool parse_int(const char *s, long lo, long hi, int *out)
{
  long v = 0;
  size_t n = strlen(s);
  if (n == 0 || n > 9) return false;
  for (; *s; s++) {
    if (*s < '0' || *s > '9') return false;
    v = v * 10 + (*s - '0');
  }
  if (v < lo || v > hi) return false;
  *out = (int)v;
  return true;
}

/* A fence agent's option: KEY=VALUE, the key in lowercase letters, digits and
 * underscores (fence-agents' long options without their dashes), never the
 * action, which is vmbalance's. */
static const char *fence_option_error(const char *w)
{
  const char *eq = strchr(w, '=');
  if (!eq || eq == w || eq - w > 64) return "is not KEY=VALUE";
  for (const char *p = w; p < eq; p++)
    if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_')) return "has a key other than lowercase letters, digits and underscores";
  if (eq - w == 6 && strncmp(w, "action", 6) == 0)
    return "sets the action, which is vmbalance's";
  if (!plain_word(eq + 1, 1024)) return "has an empty value, or one with a quote, a backslash or a control character";
  return NULL;
}

/* The state of a parse: where each once-only thing was first given. */
struct parse {
  struct bal_config *c;
  struct bal_error *err;
  int set_line[6 + BAL_NRES]; /* policy, level, headroom, threshold, bandwidth, -, weights */
  struct bal_map pinned, prio, ha, fence, maint;
  struct bal_map pin_pairs, excl_pairs; /* "VM\001HOST" */
  char **pairs;                         /* their keys, owned */
  size_t npairs, cappairs;
};

static const char *pair_key(struct parse *p, const char *vm, const char *host)
{
  size_t a = strlen(vm), b = strlen(host);
  char *k = malloc(a + b + 2);
  if (!k) abort();
  memcpy(k, vm, a);
  k[a] = '\001';
  memcpy(k + a + 1, host, b + 1);
  if (p->npairs == p->cappairs) {
    p->cappairs = p->cappairs ? 2 * p->cappairs : 64;
    p->pairs = realloc(p->pairs, p->cappairs * sizeof *p->pairs);
    if (!p->pairs) abort();
  }
  p->pairs[p->npairs++] = k;
  return k;
}

static int once(struct parse *p, int slot, int line, const char *what)
{
  if (p->set_line[slot]) return fail(p->err, line, "%s is set twice (first on line %d)", what, p->set_line[slot]);
  p->set_line[slot] = line;
  return 0;
}

/* Checks and keeps one rule line (w[0] is its keyword). */
static int add_stmt(struct parse *p, enum bal_kind kind, int line, char **w, size_t n)
{
  struct bal_error *err = p->err;
  const char *kw = kind_names[kind];
  size_t min = kind == BAL_AFFINITY || kind == BAL_ANTI_AFFINITY ? 3 : kind == BAL_PRIORITY ? 3 : kind == BAL_FENCE ? 3
               : kind == BAL_PIN || kind == BAL_EXCLUDE ? 3 : 2;
  if (n < min || (kind == BAL_PRIORITY && n != 3))
    return fail(err, line, "'%s' expects %s", kw,
                kind == BAL_AFFINITY || kind == BAL_ANTI_AFFINITY ? "two VMs or more"
                : kind == BAL_PIN || kind == BAL_EXCLUDE ? "a VM and one host or more"
                : kind == BAL_MAINTENANCE ? "one host or more"
                : kind == BAL_PRIORITY ? "a VM and a number"
                : kind == BAL_HA ? "one VM or more" : "a host and a fence agent");
  int value = 0;
  size_t names = kind == BAL_PRIORITY ? 2 : kind == BAL_FENCE ? 2 : n;
  for (size_t k = 1; k < names; k++)
    if (!plain_word(w[k], BAL_NAME_MAX))
      return fail(err, line, "'%.64s' is not a name (printable, no quotes or backslashes, at most 255 bytes)", w[k]);
  if (kind == BAL_PRIORITY && !parse_int(w[2], 0, 100, &value))
    return fail(err, line, "priority '%.64s' is not a number from 0 to 100", w[2]);
  if (kind == BAL_FENCE) {
    const char *a = w[2];
    if (!plain_word(a, 1024) || (a[0] != '/' && strncmp(a, "fence_", 6) != 0) || (a[0] != '/' && strchr(a, '/')))
      return fail(err, line, "fence agent '%.64s' is neither a fence_ name nor an absolute path", a);
    for (size_t k = 3; k < n; k++) {
      const char *why = fence_option_error(w[k]);
      if (why) return fail(err, line, "fence option '%.64s' %s", w[k], why);
    }
  }

  /* Names twice in one rule: a typo, or a rule that means nothing. */
  struct bal_map seen = { 0 };
  size_t from = kind == BAL_PIN || kind == BAL_EXCLUDE ? 2 : 1;
  if (kind != BAL_PRIORITY && kind != BAL_FENCE) {
    for (size_t k = from; k < n; k++)
      if (bal_map_put(&seen, w[k], 1) >= 0) {
        bal_map_free(&seen);
        return fail(err, line, "'%s' is named twice", w[k]);
      }
  }
  bal_map_free(&seen);

  /* Once-only marks, against the whole file so far. */
  struct bal_map *once_map = kind == BAL_PIN ? &p->pinned : kind == BAL_PRIORITY ? &p->prio : kind == BAL_FENCE ? &p->fence
                           : kind == BAL_HA ? &p->ha : kind == BAL_MAINTENANCE ? &p->maint : NULL;
  size_t once_to = kind == BAL_HA || kind == BAL_MAINTENANCE ? n : 2;
  if (once_map)
    for (size_t k = 1; k < once_to; k++) {
      int first = bal_map_get(once_map, w[k]);
      if (first >= 0)
        return fail(err, line, "'%s' %s twice (first on line %d)", w[k],
                    kind == BAL_PIN ? "is pinned" : kind == BAL_PRIORITY ? "has a priority" : kind == BAL_FENCE ? "has a fence agent"
                    : kind == BAL_HA ? "is marked ha" : "is in maintenance", first);
    }
  if (kind == BAL_PIN || kind == BAL_EXCLUDE) {
    struct bal_map *mine = kind == BAL_PIN ? &p->pin_pairs : &p->excl_pairs;
    struct bal_map *other = kind == BAL_PIN ? &p->excl_pairs : &p->pin_pairs;
    for (size_t k = 2; k < n; k++) {
      const char *key = pair_key(p, w[1], w[k]);
      int first = bal_map_get(other, key);
      if (first >= 0)
        return fail(err, line, "'%s' is pinned to '%s' and excluded from it (line %d)", w[1], w[k], first);
      bal_map_put(mine, key, line);
    }
  }

  struct bal_config *c = p->c;
  struct bal_stmt *v = realloc(c->v, (c->n + 1) * sizeof *v);
  if (!v) abort();
  c->v = v;
  struct bal_stmt *s = &c->v[c->n++];
  *s = (struct bal_stmt){ .kind = kind, .line = line, .value = value, .n = kind == BAL_PRIORITY ? 1 : n - 1 };
  s->w = calloc(s->n, sizeof *s->w);
  if (!s->w) abort();
  for (size_t k = 0; k < s->n; k++) {
    s->w[k] = strdup(w[k + 1]);
    if (!s->w[k]) abort();
  }
  if (once_map)
    for (size_t k = 0; k < once_to - 1; k++) bal_map_put(once_map, s->w[k], line);
  return 0;
}

static int setting(struct parse *p, int line, char **w, size_t n)
{
  struct bal_config *c = p->c;
  struct bal_error *err = p->err;
  const char *kw = w[0];
  if (strcmp(kw, "weight") == 0) {
    if (n != 3) return fail(err, line, "'weight' expects a resource and a number");
    int r;
    for (r = 0; r < BAL_NRES && strcmp(w[1], bal_res_names[r]) != 0; r++) {}
    if (r == BAL_NRES) return fail(err, line, "unknown resource '%.64s' (cpu, memory, disk or network)", w[1]);
    char what[32];
    snprintf(what, sizeof what, "weight %s", bal_res_names[r]);
    if (once(p, 6 + r, line, what)) return -1;
    if (!parse_milli(w[2], 100000, &c->weight_milli[r]))
      return fail(err, line, "weight '%.64s' is not a number from 0 to 100", w[2]);
    return 0;
  }
  static const char *const scalars[] = { "policy", "level", "headroom", "threshold", "bandwidth", NULL };
  size_t i;
  for (i = 0; scalars[i] && strcmp(kw, scalars[i]) != 0; i++) {}
  if (!scalars[i]) return 1;
  if (n != 2) return fail(err, line, "'%s' expects one value", kw);
  const char *a = w[1];
  if (strcmp(kw, "policy") == 0) {
    if (once(p, 0, line, "policy")) return -1;
    if (strcmp(a, "balance") == 0) c->policy = BAL_BALANCE;
    else if (strcmp(a, "consolidate") == 0) c->policy = BAL_CONSOLIDATE;
    else return fail(err, line, "unknown policy '%.64s' (balance or consolidate)", a);
  } else if (strcmp(kw, "level") == 0) {
    if (once(p, 1, line, "level")) return -1;
    if (!parse_int(a, 1, 5, &c->level)) return fail(err, line, "level '%.64s' is not from 1 to 5", a);
  } else if (strcmp(kw, "headroom") == 0) {
    if (once(p, 2, line, "headroom")) return -1;
    char buf[16];
    size_t l = strlen(a);
    if (l >= sizeof buf) return fail(err, line, "headroom '%.64s' is not a percentage from 0 to 90", a);
    memcpy(buf, a, l + 1);
    if (l && buf[l - 1] == '%') buf[l - 1] = '\0';
    if (!parse_int(buf, 0, 90, &c->headroom)) return fail(err, line, "headroom '%.64s' is not a percentage from 0 to 90", a);
  } else if (strcmp(kw, "threshold") == 0) {
    if (once(p, 3, line, "threshold")) return -1;
    if (!parse_milli(a, 1000000000L, &c->threshold_milli))
      return fail(err, line, "threshold '%.64s' is not a number from 0 to 1000000", a);
  } else if (strcmp(kw, "bandwidth") == 0) {
    if (once(p, 4, line, "bandwidth")) return -1;
    if (!parse_int(a, 1, 1000000, &c->bandwidth)) return fail(err, line, "bandwidth '%.64s' is not from 1 to 1000000 MiB/s", a);
  } else {
    return 1;
  }
  return 0;
}

/* After the last line: two VMs of one anti-affinity rule that affinity rules bind
 * together (union-find over the VMs of affinity rules). */
static int check_affinity(struct parse *p)
{
  struct bal_config *c = p->c;
  struct bal_map ids = { 0 };
  int nids = 0, *parent = NULL, *stamp = NULL;
  size_t cap = 0;
  int rc = 0;
  for (size_t i = 0; i < c->n; i++) {
    if (c->v[i].kind != BAL_AFFINITY) continue;
    for (size_t k = 0; k < c->v[i].n; k++) {
      if (bal_map_put(&ids, c->v[i].w[k], nids) >= 0) continue;
      if ((size_t)nids == cap) {
        cap = cap ? 2 * cap : 64;
        parent = realloc(parent, cap * sizeof *parent);
        if (!parent) abort();
      }
      parent[nids] = nids;
      nids++;
    }
  }
  for (size_t i = 0; i < c->n; i++) {
    if (c->v[i].kind != BAL_AFFINITY) continue;
    int a = bal_map_get(&ids, c->v[i].w[0]);
    while (parent[a] != a) a = parent[a] = parent[parent[a]];
    for (size_t k = 1; k < c->v[i].n; k++) {
      int b = bal_map_get(&ids, c->v[i].w[k]);
      while (parent[b] != b) b = parent[b] = parent[parent[b]];
      if (a != b) parent[b] = a;
    }
  }
  stamp = calloc(nids ? (size_t)nids * 2 : 1, sizeof *stamp);
  if (!stamp) abort();
  int *who = stamp + nids;
  for (size_t i = 0; i < c->n && rc == 0; i++) {
    if (c->v[i].kind != BAL_ANTI_AFFINITY) continue;
    for (size_t k = 0; k < c->v[i].n; k++) {
      int a = bal_map_get(&ids, c->v[i].w[k]);
      if (a < 0) continue;
      while (parent[a] != a) a = parent[a];
      if (stamp[a] == (int)i + 1) {
        rc = fail(p->err, c->v[i].line, "'%s' and '%s' are kept apart here and together by affinity rules",
                  c->v[i].w[who[a]], c->v[i].w[k]);
        break;
      }
      stamp[a] = (int)i + 1;
      who[a] = (int)k;
    }
  }
  free(stamp);
  free(parent);
  bal_map_free(&ids);
  return rc;
}

int bal_config_parse(const char *text, size_t len, struct bal_config *c, struct bal_error *err)
{
  bal_config_init(c);
  memset(err, 0, sizeof *err);
  if (len > BAL_CONF_MAX) return fail(err, 0, "larger than 1 MiB");
  struct parse p = { .c = c, .err = err };
  char *buf = malloc(BAL_LINE_MAX + 1);
  char **w = malloc((BAL_LINE_MAX / 2 + 2) * sizeof *w);
  if (!buf || !w) abort();
  int rc = 0, line = 0;
  size_t nstmt = 0;
  for (size_t pos = 0; pos < len && rc == 0;) {
    line++;
    const char *nl = memchr(text + pos, '\n', len - pos);
    size_t l = (nl ? (size_t)(nl - text) : len) - pos;
    if (memchr(text + pos, '\0', l)) {
      rc = fail(err, line, "a NUL byte");
      break;
    }
    if (l > BAL_LINE_MAX) {
      rc = fail(err, line, "longer than %d bytes", BAL_LINE_MAX);
      break;
    }
    memcpy(buf, text + pos, l);
    buf[l] = '\0';
    pos += l + 1;
    if (l && buf[l - 1] == '\r') buf[--l] = '\0';
    char *hash = strchr(buf, '#');
    if (hash) *hash = '\0';
    size_t n = 0;
    char *save = NULL;
    for (char *t = strtok_r(buf, " \t", &save); t; t = strtok_r(NULL, " \t", &save)) w[n++] = t;
    if (n == 0) continue;
    if (++nstmt > BAL_STMT_MAX) {
      rc = fail(err, line, "more than %d statements", BAL_STMT_MAX);
      break;
    }
    int s = setting(&p, line, w, n);
    if (s <= 0) {
      rc = s;
      continue;
    }
    int kind;
    for (kind = 0; kind <= BAL_FENCE && strcmp(w[0], kind_names[kind]) != 0; kind++) {}
    if (kind > BAL_FENCE) {
      for (char *q = w[0]; *q; q++)
        if ((unsigned char)*q < 0x20 || (unsigned char)*q >= 0x7f) *q = '?';
      rc = fail(err, line, "unknown keyword '%.64s'", w[0]);
    } else {
      rc = add_stmt(&p, (enum bal_kind)kind, line, w, n);
    }
  }
  if (rc == 0) {
    long sum = 0;
    int last = 0;
    for (int r = 0; r < BAL_NRES; r++) {
      sum += c->weight_milli[r];
      if (p.set_line[6 + r] > last) last = p.set_line[6 + r];
    }
    if (sum == 0) rc = fail(err, last, "every weight is 0");
  }
  if (rc == 0) rc = check_affinity(&p);
  free(buf);
  free(w);
  bal_map_free(&p.pinned);
  bal_map_free(&p.prio);
  bal_map_free(&p.ha);
  bal_map_free(&p.fence);
  bal_map_free(&p.maint);
  bal_map_free(&p.pin_pairs);
  bal_map_free(&p.excl_pairs);
  for (size_t i = 0; i < p.npairs; i++) free(p.pairs[i]);
  free(p.pairs);
  if (rc) {
    bal_config_free(c);
    bal_config_init(c);
  }
  return rc;
}

/* Appends to a growing string. */
struct sbuf {
  char *s;
  size_t n, cap;
};
static void sb_add(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_add(struct sbuf *b, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  int need = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (need < 0) abort();
  if (b->n + (size_t)need + 1 > b->cap) {
    b->cap = (b->n + (size_t)need + 1) * 2;
    b->s = realloc(b->s, b->cap);
    if (!b->s) abort();
  }
  va_start(ap, fmt);
  vsnprintf(b->s + b->n, b->cap - b->n, fmt, ap);
  va_end(ap);
  b->n += (size_t)need;
}

char *bal_config_encode(const struct bal_config *c)
{
  struct sbuf b = { 0 };
  sb_add(&b, "policy %s\nlevel %d\n", c->policy == BAL_BALANCE ? "balance" : "consolidate", c->level);
  for (int r = 0; r < BAL_NRES; r++)
    sb_add(&b, "weight %s %d.%03d\n", bal_res_names[r], c->weight_milli[r] / 1000, c->weight_milli[r] % 1000);
  sb_add(&b, "headroom %d%%\nthreshold %d.%03d\nbandwidth %d\n", c->headroom, c->threshold_milli / 1000,
         c->threshold_milli % 1000, c->bandwidth);
  for (size_t i = 0; i < c->n; i++) {
    const struct bal_stmt *s = &c->v[i];
    sb_add(&b, "%s", kind_names[s->kind]);
    for (size_t k = 0; k < s->n; k++) sb_add(&b, " %s", s->w[k]);
    if (s->kind == BAL_PRIORITY) sb_add(&b, " %d", s->value);
    sb_add(&b, "\n");
  }
  return b.s;
}
