/* vmpatch: the security of the pool (man/vmpatch.1): the inventory of what is
 * installed on VMs, templates and the host, and its offline scan against an OSV
 * feed. */
#ifndef VMPATCH_H
#define VMPATCH_H

#include "vercmp.h"
#include "vmkit-base.h"

/* vmkit(7)'s exit codes, as vmpatch uses them. A scan that finds a vulnerable
 * package exits 6, the shared code of "a check found something" (VM_EXIT_VERIFY,
 * whose list in DESIGN.md names "a vulnerable package"); a feed or inventory that
 * is missing exits 3 (VM_EXIT_NOTFOUND), as does an unknown TARGET; one that
 * cannot be read as its format says fails the run (VM_EXIT_FAIL), as a bad
 * config or trace does in vmbalance. */
#define VMP_EXIT_VULNERABLE VM_EXIT_VERIFY
#define VMP_EXIT_BADINPUT VM_EXIT_FAIL

int cmd_scan(int argc, char **argv);
/* The inventory verb (collect.c: libguestfs, libvirt, the host's package database). */
int cmd_inventory(int argc, char **argv);
/* The apply verb (apply.c: libguestfs, vmsnap's library, the guest agent). */
int cmd_apply(int argc, char **argv);

/* ---- Severities, lowest first -------------------------------------------------------- */
enum vmp_sev { VMP_SEV_UNKNOWN, VMP_SEV_LOW, VMP_SEV_MEDIUM, VMP_SEV_HIGH, VMP_SEV_CRITICAL };
extern const char *const vmp_sev_names[]; /* "unknown", "low" ... "critical" */
/* "low".."critical" or "unknown"; -1 for another word. */
int vmp_sev_parse(const char *s);
/* A severity as the feeds write it: a word (Debian's urgency "low", "medium",
 * "high", "unimportant"; Red Hat's "Moderate", "Important"; "CRITICAL"), or a
 * CVSS base score ("7.5"); VMP_SEV_UNKNOWN for anything else (a CVSS vector,
 * "not yet assigned"). */
enum vmp_sev vmp_sev_from_text(const char *s);

/* ---- The inventory (inventory.c): format "vmpatch-inventory", version 1 ----------- */
struct vmp_package {
  char *name, *version, *arch;
  char *source, *source_version; /* the name and version when the inventory has none */
};
struct vmp_target {
  char *name, *kind; /* kind: vm, template or host */
  char *os_id, *os_version;
  enum vmp_pkgfmt format;
  struct vmp_package *pkgs;
  size_t npkgs;
};
struct vmp_inventory {
  struct vmp_target *targets;
  size_t n;
};
#define VMP_INVENTORY_FORMAT "vmpatch-inventory"
#define VMP_INVENTORY_VERSION 1
/* Parses an inventory; every field is checked (types, names, versions valid for
 * the target's package format, no target twice). On error returns -1 with a
 * message in why (without the file's name). */
int vmp_inventory_parse(const char *text, size_t len, struct vmp_inventory *inv, char *why, size_t whylen);
/* The inventory as JSON text (the format parse reads). Caller frees. */
char *vmp_inventory_write(const struct vmp_inventory *inv);
void vmp_inventory_free(struct vmp_inventory *inv);
/* Reads FILE ("-": stdin): an exit code, the error said. */
int vmp_inventory_load(const char *path, struct vmp_inventory *inv);

/* ---- Package databases as text (pkgdb.c) ------------------------------------------------
 * Each appends the installed packages it reads to t->pkgs; on error returns -1
 * with why saying where (a line number) and what, the packages read so far kept
 * for vmp_inventory_free. */
/* dpkg's status file: the paragraphs whose Status is "install ok installed" or
 * "hold ok installed"; Package, Version, Architecture, and Source ("NAME" or
 * "NAME (VERSION)": the source's version, else the package's). Read exactly: a
 * line that is neither a field nor a continuation, a field twice, a Status that
 * is not three words, or an installed package without a valid name or version
 * refuses the file. */
int vmp_dpkg_status_parse(const char *text, size_t len, struct vmp_target *t, char *why, size_t whylen);
/* dpkg-query -W -f '${Package}\t${Version}\t${Architecture}\t${source:Package}\t${source:Version}\t${db:Status-Abbrev}\n':
 * the lines of status ii and hi. */
#define VMP_DPKG_QUERY_FORMAT \
  "${Package}\t${Version}\t${Architecture}\t${source:Package}\t${source:Version}\t${db:Status-Abbrev}\n"
int vmp_dpkg_query_parse(const char *text, size_t len, struct vmp_target *t, char *why, size_t whylen);
/* rpm -qa --qf with VMP_RPM_QUERY_FORMAT: versions [EPOCH:]VERSION-RELEASE, the
 * source package's name from SOURCERPM; gpg-pubkey left out. */
#define VMP_RPM_QUERY_FORMAT "%{NAME}\t%{EPOCH}\t%{VERSION}\t%{RELEASE}\t%{ARCH}\t%{SOURCERPM}\n"
int vmp_rpm_qa_parse(const char *text, size_t len, struct vmp_target *t, char *why, size_t whylen);
/* An APT repository's Packages index, read exactly as a status file is: each
 * paragraph needs a Package, a valid Version and a Filename inside the
 * repository (relative, no ".."), which is added to files. -1 with why (a line
 * number and what) otherwise, or when it lists no package. */
int vmp_deb_packages_parse(const char *text, size_t len, struct vm_strv *files, char *why, size_t whylen);
/* ID and VERSION_ID of os-release(5) text (*version_id NULL when absent). 0, or -1
 * when there is no ID. Caller frees both. */
int vmp_os_release_parse(const char *text, size_t len, char **id, char **version_id);

/* ---- The OSV feed (feed.c) --------------------------------------------------------------- */
enum vmp_event_kind { VMP_EV_INTRODUCED, VMP_EV_FIXED, VMP_EV_LAST_AFFECTED };
struct vmp_event {
  enum vmp_event_kind kind;
  char *version; /* "0" for introduced: from the first version */
};
struct vmp_range {
  struct vmp_event *ev;
  size_t n;
};
struct vmp_affected {
  char *ecosystem; /* as written: "Debian:12", "AlmaLinux:9" */
  char *package;
  struct vmp_range *ranges; /* of type ECOSYSTEM only */
  size_t nranges;
  struct vm_strv versions;
  enum vmp_sev severity; /* its own (ecosystem_specific.urgency ...), else the record's */
};
struct vmp_advisory {
  char *id, *file;
  struct vm_strv aliases;
  struct vmp_affected *aff;
  size_t naff;
};
struct vmp_feed {
  struct vmp_advisory *v;
  size_t n, cap;
};
/* Parses one OSV record. Only the affected entries of the ecosystems vmpatch reads
 * are kept (vmp_ecosystem_format). A record without an id, an affected entry
 * without a package, a version that is not one of its ecosystem, or JSON that
 * does not parse is refused: -1, why says what. */
int vmp_osv_parse(const char *text, size_t len, struct vmp_advisory *adv, char *why, size_t whylen);
void vmp_advisory_free(struct vmp_advisory *adv);
/* The package format of an ecosystem vmpatch reads ("Debian:12" -> deb), -1 else. */
int vmp_ecosystem_format(const char *ecosystem);
/* Loads a feed: a directory of OSV JSON files, or a .zip of them. One record that
 * is refused refuses the feed, with one line naming its file. An exit code. */
int vmp_feed_load(const char *path, struct vmp_feed *feed);
void vmp_feed_free(struct vmp_feed *feed);

/* ---- The scan (scan.c) ------------------------------------------------------------------- */
/* Whether the affected entry applies to a target of that OS ("Debian:12" to
 * debian 12, "AlmaLinux:9" to almalinux 9.3 ...). */
bool vmp_ecosystem_applies(const char *ecosystem, const struct vmp_target *t);
/* Whether version v is affected by the entry (its ranges or its versions list);
 * *fixed is then the version that fixes it (NULL: none), owned by the entry. */
bool vmp_affected_match(const struct vmp_affected *a, enum vmp_pkgfmt f, const char *v, const char **fixed);
/* Whether updating the source package needs a reboot to take effect (kernels, the
 * C library, systemd, D-Bus, CPU microcode). */
bool vmp_needs_reboot(const char *source);
struct vmp_scan_opts {
  enum vmp_sev min_severity;
  bool fixed_only;
};
/* One row per (target, binary package, advisory) found, in the order of the
 * inventory: target, package, source (as the record names it: Debian's signed
 * kernels are linux's), installed, source_version (the version compared),
 * fixed (NULL when there is no fix), id, aliases, severity, reboot. Appends to
 * rows; returns how many. *covered (when not NULL): whether the feed has any
 * record for the target's distribution and release (without one, no finding
 * does not mean clean). */
size_t vmp_scan_target(const struct vmp_feed *feed, const struct vmp_target *t,
                       const struct vmp_scan_opts *o, json_object *rows, bool *covered);

#endif
