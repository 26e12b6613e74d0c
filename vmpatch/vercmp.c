/* Versions compared through the distributions' libraries (vercmp.h). */
#define LIBDPKG_VOLATILE_API 1
#include <dpkg/dpkg.h>
#include <dpkg/dpkg-db.h>
#include <dpkg/error.h>
#include <dpkg/version.h>
#include <rpm/rpmver.h>
#include <string.h>

#include "vercmp.h"

int vmp_pkgfmt_parse(const char *s)
{
  if (strcmp(s, "deb") == 0) return VMP_DEB;
  if (strcmp(s, "rpm") == 0) return VMP_RPM;
  return -1;
}

const char *vmp_pkgfmt_name(enum vmp_pkgfmt f)
{
  return f == VMP_DEB ? "deb" : "rpm";
}

/* libdpkg's parseversion keeps the parts of a version in its own memory pool
 * (nfmalloc), which only nffreeall() empties; vmpatch uses no other part of
 * libdpkg that keeps anything there, so each call empties it afterwards, and a
 * scan of a large feed does not grow. A warning (a version that does not start
 * with a digit, say) still yields a version, as for dpkg itself; an error does
 * not. */
static int deb_parse(struct dpkg_version *v, const char *s, const char **why)
{
  struct dpkg_error err = DPKG_ERROR_INIT;
  int rc = parseversion(v, s, &err);
  if (rc < 0 && err.type == DPKG_MSG_WARN) rc = 0;
  if (rc < 0 && why) *why = "not a Debian version (deb-version(7))";
  dpkg_error_destroy(&err);
  return rc;
}

bool vmp_version_valid(enum vmp_pkgfmt f, const char *s, const char **why)
{
  if (!s || !*s) {
    if (why) *why = "empty version";
    return false;
  }
  if (f == VMP_DEB) {
    struct dpkg_version v;
    int rc = deb_parse(&v, s, why);
    nffreeall();
    return rc == 0;
  }
  rpmver v = rpmverParse(s);
  if (!v) {
    if (why) *why = "not an RPM version ([EPOCH:]VERSION[-RELEASE])";
    return false;
  }
  rpmverFree(v);
  return true;
}

int vmp_vercmp(enum vmp_pkgfmt f, const char *a, const char *b)
{
  if (f == VMP_DEB) {
    struct dpkg_version va, vb;
    int ra = deb_parse(&va, a, NULL), rb = deb_parse(&vb, b, NULL);
    int c = ra < 0 || rb < 0 ? (rb < 0) - (ra < 0) : dpkg_version_compare(&va, &vb);
    nffreeall();
    return c;
  }
  rpmver va = rpmverParse(a), vb = rpmverParse(b);
  int c;
  if (!va || !vb) c = (vb == NULL) - (va == NULL);
  else c = rpmverCmp(va, vb);
  if (va) rpmverFree(va);
  if (vb) rpmverFree(vb);
  return c;
}
