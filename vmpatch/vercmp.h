/* Package versions compared by each distribution's own rules, through its own
 * library: libdpkg for Debian (deb-version(7)), librpm for RPM (rpmvercmp). Never
 * by string order: "1.0~rc1" < "1.0" and "2:1" > "1:9". */
#ifndef VMPATCH_VERCMP_H
#define VMPATCH_VERCMP_H

#include <stdbool.h>
#include <stddef.h>

enum vmp_pkgfmt { VMP_DEB, VMP_RPM };

/* "deb" or "rpm" to the format; -1 for another name. */
int vmp_pkgfmt_parse(const char *s);
const char *vmp_pkgfmt_name(enum vmp_pkgfmt f);

/* Whether s is a version of that format; when not, why (a static string) says
 * why, when why is not NULL. */
bool vmp_version_valid(enum vmp_pkgfmt f, const char *s, const char **why);

/* <0, 0 or >0 as a is older than, the same as or newer than b. Both must be
 * valid (vmp_version_valid); an invalid one sorts first. */
int vmp_vercmp(enum vmp_pkgfmt f, const char *a, const char *b);

#endif
