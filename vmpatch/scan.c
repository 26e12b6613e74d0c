/* The scan: each package of a target against the feed's advisories for the
 * target's distribution and release, versions compared by its own rules. */
#include <stdlib.h>
#include <string.h>

#include "vmpatch.h"

/* The OS ids (os-release ID) whose packages each ecosystem describes. */
static const struct {
  const char *ecosystem, *os_ids[4];
} eco_os[] = {
  { "Debian", { "debian" } },
  { "Red Hat", { "rhel" } },
  { "AlmaLinux", { "almalinux" } },
  { "Rocky Linux", { "rocky" } },
  { "openSUSE", { "opensuse-leap", "opensuse-tumbleweed", "opensuse" } },
  { "SUSE", { "sles", "sles_sap", "sled" } },
};

/* "12.4" -> "12": the release that OSV's ecosystems name. */
static size_t major_len(const char *v)
{
  return strcspn(v, ".");
}

static bool ends_with(const char *s, const char *tail)
{
  size_t n = strlen(s), m = strlen(tail);
  return n >= m && strcmp(s + n - m, tail) == 0 && (n == m || s[n - m - 1] == ' ');
}

bool vmp_ecosystem_applies(const char *eco, const struct vmp_target *t)
{
  int f = vmp_ecosystem_format(eco);
  if (f < 0 || (enum vmp_pkgfmt)f != t->format) return false;
  size_t base = strcspn(eco, ":");
  size_t i;
  for (i = 0; i < sizeof eco_os / sizeof eco_os[0]; i++)
    if (strlen(eco_os[i].ecosystem) == base && strncmp(eco, eco_os[i].ecosystem, base) == 0) break;
  if (i == sizeof eco_os / sizeof eco_os[0]) return false;
  bool os = false;
  for (size_t k = 0; k < 4 && eco_os[i].os_ids[k]; k++) os = os || strcmp(t->os_id, eco_os[i].os_ids[k]) == 0;
  if (!os) return false;
  if (eco[base] == '\0') return true; /* no release: every release */
  const char *rel = eco + base + 1, *v = t->os_version;
  if (!v) return false;
  size_t mj = major_len(v);
  switch (i) {
  case 0: /* Debian:12 */
  case 2: /* AlmaLinux:9 */
  case 3: /* Rocky Linux:9 */
    return strcmp(rel, v) == 0 || (strlen(rel) == mj && strncmp(rel, v, mj) == 0);
  case 1: /* Red Hat:enterprise_linux:9::appstream */
    if (strncmp(rel, "enterprise_linux:", 17) != 0) return false;
    rel += 17;
    return strncmp(rel, v, mj) == 0 && (rel[mj] == ':' || rel[mj] == '\0');
  default: { /* openSUSE:Leap 15.5, openSUSE:Tumbleweed, SUSE:Linux Enterprise Server 15 SP5 */
    if (strcmp(t->os_id, "opensuse-tumbleweed") == 0) return strcmp(rel, "Tumbleweed") == 0;
    CLEANUP_FREE char *sp = NULL;
    /* SLES's os-release says "15.5" for what SUSE's ecosystems call "15 SP5"
     * (and "15" for 15 GA); Leap's says "15.5", as its ecosystem does. */
    if (strncmp(t->os_id, "sle", 3) == 0 && v[mj] == '.' && v[mj + 1] && strcmp(v + mj + 1, "0") != 0)
      sp = vm_strdup_printf("%.*s SP%s", (int)mj, v, v + mj + 1);
    else if (strncmp(t->os_id, "sle", 3) == 0)
      sp = vm_strdup_printf("%.*s", (int)mj, v);
    else
      sp = vm_strdup(v);
    for (char *p = sp; *p; p++)
      if (*p == '-') *p = ' ';
    return ends_with(rel, sp);
  }
  }
}

struct ev_sort {
  enum vmp_pkgfmt f;
};

/* "0" (introduced: from the start) sorts before every version. */
static int ev_cmp(const void *a, const void *b, void *arg)
{
  const struct vmp_event *x = *(const struct vmp_event *const *)a, *y = *(const struct vmp_event *const *)b;
  const struct ev_sort *s = arg;
  bool x0 = x->kind == VMP_EV_INTRODUCED && strcmp(x->version, "0") == 0;
  bool y0 = y->kind == VMP_EV_INTRODUCED && strcmp(y->version, "0") == 0;
  if (x0 || y0) return (int)y0 - (int)x0;
  return vmp_vercmp(s->f, x->version, y->version);
}

/* One ECOSYSTEM range as OSV evaluates it: its events in version order, v is
 * affected from an "introduced" at or below it until a "fixed" at or below it
 * or a "last_affected" below it. *fixed: the lowest "fixed" above v. */
static bool range_match(const struct vmp_range *r, enum vmp_pkgfmt f, const char *v, const char **fixed)
{
  *fixed = NULL;
  if (r->n == 0) return false;
  const struct vmp_event **ev = malloc(r->n * sizeof *ev);
  if (!ev) abort();
  for (size_t i = 0; i < r->n; i++) ev[i] = &r->ev[i];
  struct ev_sort s = { f };
  qsort_r(ev, r->n, sizeof *ev, ev_cmp, &s);
  bool affected = false;
  for (size_t i = 0; i < r->n; i++) {
    const struct vmp_event *e = ev[i];
    if (e->kind == VMP_EV_INTRODUCED) {
      if (strcmp(e->version, "0") == 0 || vmp_vercmp(f, v, e->version) >= 0) affected = true;
    } else if (e->kind == VMP_EV_FIXED) {
      if (vmp_vercmp(f, v, e->version) >= 0) affected = false;
      else if (affected && !*fixed) *fixed = e->version;
    } else if (e->kind == VMP_EV_LAST_AFFECTED) {
      if (vmp_vercmp(f, v, e->version) > 0) affected = false;
    }
  }
  free(ev);
  if (!affected) *fixed = NULL;
  return affected;
}

bool vmp_affected_match(const struct vmp_affected *a, enum vmp_pkgfmt f, const char *v, const char **fixed)
{
  bool hit = false;
  const char *best = NULL;
  for (size_t i = 0; i < a->nranges; i++) {
    const char *fx;
    if (!range_match(&a->ranges[i], f, v, &fx)) continue;
    hit = true;
    if (fx && (!best || vmp_vercmp(f, fx, best) < 0)) best = fx;
  }
  for (size_t i = 0; !hit && i < a->versions.n; i++) hit = vmp_vercmp(f, v, a->versions.v[i]) == 0;
  if (hit && !best) {
    /* Listed by version only: the fix is the lowest "fixed" of its ranges above v. */
    for (size_t i = 0; i < a->nranges; i++)
      for (size_t k = 0; k < a->ranges[i].n; k++) {
        const struct vmp_event *e = &a->ranges[i].ev[k];
        if (e->kind == VMP_EV_FIXED && vmp_vercmp(f, e->version, v) > 0 &&
            (!best || vmp_vercmp(f, e->version, best) < 0))
          best = e->version;
      }
  }
  *fixed = hit ? best : NULL;
  return hit;
}

/* What an update of these source packages changes only at the next boot: the
 * kernel (Debian's linux and its signed builds, RPM's kernel), the C library and
 * systemd (every running process keeps the old one mapped; PID 1 and logind
 * cannot be restarted safely), D-Bus (its restart breaks the sessions that hold
 * it) and CPU microcode (loaded early at boot). */
bool vmp_needs_reboot(const char *src)
{
  static const char *const exact[] = {
    "linux", "kernel", "kernel-rt", "kernel-default", "glibc", "systemd", "dbus", "dbus-broker",
    "intel-microcode", "amd64-microcode", "microcode_ctl", "ucode-intel", "ucode-amd",
  };
  for (size_t i = 0; i < sizeof exact / sizeof exact[0]; i++)
    if (strcmp(src, exact[i]) == 0) return true;
  return strncmp(src, "linux-signed-", 13) == 0;
}

/* The names a package is looked up by, and the version each is compared at. */
struct lookup {
  const char *name, *version;
};

/* The feed's affected entries that apply to the target, sorted by package name. */
struct hit {
  const char *name;
  const struct vmp_advisory *adv;
  const struct vmp_affected *aff;
  size_t order;
};

static int hit_cmp(const void *a, const void *b)
{
  const struct hit *x = a, *y = b;
  int c = strcmp(x->name, y->name);
  return c ? c : (x->order > y->order) - (x->order < y->order);
}

/* A row: the source as the record names it (the package's own source when the
 * record names the binary) and the version compared. */
static void add_row(json_object *rows, const struct vmp_target *t, const struct vmp_package *p,
                    const struct lookup *by, const struct vmp_advisory *adv, const struct vmp_affected *aff,
                    const char *fixed)
{
  json_object *o = json_object_new_object(), *al = json_object_new_array();
  bool binary = by->name == p->name;
  json_object_object_add(o, "target", json_object_new_string(t->name));
  json_object_object_add(o, "package", json_object_new_string(p->name));
  json_object_object_add(o, "source", json_object_new_string(binary ? p->source : by->name));
  json_object_object_add(o, "installed", json_object_new_string(p->version));
  json_object_object_add(o, "source_version", json_object_new_string(by->version));
  json_object_object_add(o, "fixed", fixed ? json_object_new_string(fixed) : NULL);
  json_object_object_add(o, "id", json_object_new_string(adv->id));
  for (size_t i = 0; i < adv->aliases.n; i++) json_object_array_add(al, json_object_new_string(adv->aliases.v[i]));
  json_object_object_add(o, "aliases", al);
  json_object_object_add(o, "severity", json_object_new_string(vmp_sev_names[aff->severity]));
  json_object_object_add(o, "reboot", json_object_new_boolean(vmp_needs_reboot(binary ? p->source : by->name)));
  json_object_object_add(o, "ecosystem", json_object_new_string(aff->ecosystem));
  json_object_array_add(rows, o);
}

/* The name and version a Debian package's source is known by in Debian's records.
 * The kernel's binaries come from linux-signed-ARCH (or linux-signed-VER-ARCH,
 * for linux-VER), a source that only signs linux's builds: its version is
 * linux's with the revision after '+' instead of '-' (6.1.76+1 for linux
 * 6.1.76-1), and Debian's records name linux only (Vuls maps it the same way).
 * Returns false for any other source. Caller frees both. */
static bool deb_signed_kernel(const char *src, const char *ver, char **name, char **version)
{
  if (strncmp(src, "linux-signed-", 13) != 0) return false;
  const char *rest = src + 13, *arch = strrchr(rest, '-');
  *name = arch ? vm_strdup_printf("linux-%.*s", (int)(arch - rest), rest) : vm_strdup("linux");
  *version = vm_strdup(ver);
  char *plus = strchr(*version, '+');
  if (plus) *plus = '-';
  return true;
}

size_t vmp_scan_target(const struct vmp_feed *feed, const struct vmp_target *t, const struct vmp_scan_opts *o,
                       json_object *rows, bool *covered)
{
  size_t nh = 0, cap = 0, found = 0;
  struct hit *h = NULL;
  for (size_t i = 0; i < feed->n; i++)
    for (size_t k = 0; k < feed->v[i].naff; k++) {
      const struct vmp_affected *a = &feed->v[i].aff[k];
      if (!vmp_ecosystem_applies(a->ecosystem, t)) continue;
      if (nh == cap) {
        cap = cap ? 2 * cap : 256;
        h = realloc(h, cap * sizeof *h);
        if (!h) abort();
      }
      h[nh] = (struct hit){ a->package, &feed->v[i], a, nh };
      nh++;
    }
  /* A feed with no record for the target's distribution and release cannot say
   * it is clean. */
  if (covered) *covered = nh > 0;
  if (nh) qsort(h, nh, sizeof *h, hit_cmp);
  const struct vmp_advisory **seen = NULL;
  size_t nseen = 0, seencap = 0;
  for (size_t p = 0; p < t->npkgs; p++) {
    const struct vmp_package *pk = &t->pkgs[p];
    CLEANUP_FREE char *kname = NULL, *kver = NULL;
    struct lookup names[2] = { { pk->source, pk->source_version }, { NULL, NULL } };
    /* Debian's signing layout only (Ubuntu's linux-signed-* name other sources). */
    if (t->format == VMP_DEB && strcmp(t->os_id, "debian") == 0 && deb_signed_kernel(pk->source, pk->source_version, &kname, &kver))
      names[0] = (struct lookup){ kname, kver };
    /* RPM distributions' records name the source package or the binary. */
    if (t->format == VMP_RPM && strcmp(pk->name, pk->source) != 0) names[1] = (struct lookup){ pk->name, pk->version };
    nseen = 0; /* one row per advisory and package, whichever of its names and entries match */
    for (int n = 0; n < 2 && names[n].name; n++) {
      size_t lo = 0, hi = nh;
      while (lo < hi) { /* the first entry of that name */
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(h[mid].name, names[n].name) < 0) lo = mid + 1;
        else hi = mid;
      }
      for (size_t i = lo; i < nh && strcmp(h[i].name, names[n].name) == 0; i++) {
        const char *fixed;
        bool dup = false;
        for (size_t s = 0; s < nseen && !dup; s++) dup = seen[s] == h[i].adv;
        if (dup || !vmp_affected_match(h[i].aff, t->format, names[n].version, &fixed)) continue;
        if (nseen == seencap) {
          seencap = seencap ? 2 * seencap : 16;
          seen = realloc(seen, seencap * sizeof *seen);
          if (!seen) abort();
        }
        seen[nseen++] = h[i].adv;
        if (h[i].aff->severity < o->min_severity || (o->fixed_only && !fixed)) continue;
        add_row(rows, t, pk, &names[n == 0 ? 0 : 1], h[i].adv, h[i].aff, fixed);
        found++;
      }
    }
  }
  free(seen);
  free(h);
  return found;
}
