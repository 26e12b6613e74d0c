/* vmsnap verify: every image of every disk's chain is there, links to the next,
 * and passes `qemu-img check`; every snapshot's frozen images, internal snapshots
 * and memory files are where libvirt's records say. The problems found are the
 * result (stdout, one a row); exit 6 when there is any. */
#include <limits.h>
#include <string.h>
#include <unistd.h>

#include "vmsnap.h"

static const struct vm_column cols[] = {
  { "object", "OBJECT", VM_COL_STR },
  { "problem", "PROBLEM", VM_COL_STR },
  { NULL, NULL, 0 },
};

static void problem(json_object *rows, const char *object, const char *fmt, ...) VM_PRINTF(3, 4);
static void problem(json_object *rows, const char *object, const char *fmt, ...)
{
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  json_object *r = json_object_new_object();
  json_object_object_add(r, "object", json_object_new_string(object));
  json_object_object_add(r, "problem", json_object_new_string(msg));
  json_object_array_add(rows, r);
}

static const char *member(json_object *o, const char *k)
{
  json_object *v;
  return json_object_object_get_ex(o, k, &v) && v ? json_object_get_string(v) : NULL;
}

/* qemu-img check: 0 clean, 1 not checked, 2 corrupt, 3 leaked clusters only. */
static void check_image(json_object *rows, const char *object, const char *file, const char *format)
{
  if (!format || strcmp(format, "qcow2") != 0) return; /* raw has nothing to check */
  char *argv[] = { "qemu-img", "check", "-U", "-q", "-f", "qcow2", (char *)file, NULL };
  CLEANUP_FREE char *err = NULL;
  int rc = vm_run(argv, NULL, &err);
  if (rc == 3) vm_warn("%s: '%s' has leaked clusters (harmless; qemu-img check -r leaks repairs them)", object, file);
  else if (rc == 2) problem(rows, object, "'%s' is corrupt (qemu-img check)", file);
  else if (rc != 0) problem(rows, object, "'%s' cannot be checked: %s", file, err && *err ? strtok(err, "\n") : "qemu-img check failed");
}

/* Walks one chain image by image, so that a broken link is named; then checks
 * each image, but only when the chain under it opens (qemu-img check opens the
 * backing files too) and never the top of a running disk (in_use), which QEMU is
 * writing and which can look inconsistent from outside. */
static size_t walk_chain(json_object *rows, const char *object, const char *top, bool in_use, struct vm_strv *seen)
{
  struct vm_strv files = { 0 }, formats = { 0 };
  CLEANUP_FREE char *cur = strdup(top);
  CLEANUP_FREE char *child = NULL;
  bool broken = false;
  for (int depth = 0; cur && depth < 256; depth++) {
    char real[PATH_MAX];
    if (!realpath(cur, real) || access(real, R_OK) < 0) {
      if (child) problem(rows, object, "backing file '%s' of '%s' is missing", cur, child);
      else problem(rows, object, "image '%s' is missing", cur);
      broken = true;
      break;
    }
    if (vm_strv_contains(seen->v, real)) break; /* the rest was walked through another disk or snapshot */
    vm_strv_add(seen, real);
    char *argv[] = { "qemu-img", "info", "-U", "--output=json", real, NULL };
    CLEANUP_FREE char *out = NULL, *err = NULL;
    if (vm_run(argv, &out, &err) != 0) {
      problem(rows, object, "'%s' cannot be opened: %s", real, err && *err ? strtok(err, "\n") : "qemu-img info failed");
      broken = true;
      break;
    }
    CLEANUP_JSON json_object *info = json_tokener_parse(out);
    const char *fmt = info ? member(info, "format") : NULL;
    vm_strv_add(&files, real);
    vm_strv_add(&formats, fmt ? fmt : "raw");
    const char *b = info ? member(info, "full-backing-filename") : NULL;
    if (!b && info) b = member(info, "backing-filename");
    free(child);
    child = strdup(real);
    free(cur);
    cur = b ? strdup(b) : NULL;
  }
  for (size_t i = 0; !broken && i < files.n; i++) {
    if (i == 0 && in_use) {
      vm_debug("%s: not checking '%s': the running VM writes it", object, files.v[i]);
      continue;
    }
    check_image(rows, object, files.v[i], formats.v[i]);
  }
  size_t n = files.n;
  vm_strv_free(&files);
  vm_strv_free(&formats);
  return n;
}

static bool has_internal_snapshot(const char *image, const char *name)
{
  CLEANUP_JSON json_object *info = vm_image_info(image, false);
  json_object *list;
  if (!info || !json_object_object_get_ex(info, "snapshots", &list)) return false;
  for (size_t i = 0; i < json_object_array_length(list); i++) {
    const char *n = member(json_object_array_get_idx(list, i), "name");
    if (n && strcmp(n, name) == 0) return true;
  }
  return false;
}

int cmd_verify(int argc, char **argv)
{
  struct poptOption table[] = { VM_POPT_COMMON, POPT_TABLEEND };
  CLEANUP_POPT poptContext ctx = NULL;
  const char **args;
  int nargs;
  int rc = vm_parse(&ctx, argc, argv, table, "VM",
                    "Check every image of a VM's disks and snapshots; exit 6 when something is wrong.",
                    1, 1, &args, &nargs);
  if (rc) return rc == VM_DONE ? 0 : rc;
  const char *vm = args[0];
  CLEANUP_VIRCONN virConnectPtr conn = NULL;
  CLEANUP_VIRDOMAIN virDomainPtr dom = NULL;
  if ((rc = vm_open(vm, &conn, &dom))) return rc;
  struct snaps s;
  if ((rc = snaps_load(dom, &s))) return rc;
  CLEANUP_JSON json_object *rows = json_object_new_array();
  struct vm_strv seen = { 0 };
  size_t images = 0;

  CLEANUP_XMLDOC xmlDocPtr doc = vm_domain_doc(dom, 0);
  if (!doc) {
    snaps_free(&s);
    return VM_EXIT_FAIL;
  }
  struct vm_disk *d;
  size_t nd;
  vm_domain_disks(doc, &d, &nd);
  for (size_t i = 0; i < nd; i++) {
    if (!d[i].source || !d[i].type || strcmp(d[i].type, "file") != 0) continue;
    if (d[i].device && strcmp(d[i].device, "cdrom") == 0) {
      if (access(d[i].source, R_OK) < 0) problem(rows, d[i].target, "CD-ROM image '%s' is missing", d[i].source);
      continue;
    }
    images += walk_chain(rows, d[i].target, d[i].source, virDomainIsActive(dom) == 1, &seen);
  }
  vm_disks_free(d, nd);

  for (size_t i = 0; i < s.n; i++) {
    const struct snap *p = &s.v[i];
    CLEANUP_FREE char *object = vm_strdup_printf("snapshot %s", p->name);
    for (size_t j = 0; j < p->ndisks; j++) {
      const struct snap_disk *sd = &p->disks[j];
      if (strcmp(sd->mode, "external") == 0) {
        if (!sd->base) problem(rows, object, "no frozen image recorded for %s", sd->target);
        else images += walk_chain(rows, object, sd->base, false, &seen);
        /* The overlay the snapshot made, while it exists, stands on what it froze:
         * a record that says otherwise no longer describes the files. */
        char rb[PATH_MAX], ro[PATH_MAX];
        if (sd->base && sd->overlay && realpath(sd->overlay, ro) && realpath(sd->base, rb)) {
          CLEANUP_JSON json_object *oi = vm_image_info(ro, false);
          const char *ob = oi ? member(oi, "full-backing-filename") : NULL;
          char rob[PATH_MAX];
          if (ob && (!realpath(ob, rob) || strcmp(rob, rb) != 0))
            problem(rows, object, "overlay '%s' of %s stands on '%s', not on the image the snapshot froze ('%s')",
                    ro, sd->target, ob, rb);
        }
      } else if (strcmp(sd->mode, "internal") == 0) {
        if (!sd->base || access(sd->base, R_OK) < 0)
          problem(rows, object, "image '%s' of %s is missing", sd->base ? sd->base : "?", sd->target);
        else if (!has_internal_snapshot(sd->base, p->name))
          problem(rows, object, "'%s' holds no internal snapshot '%s'", sd->base, p->name);
      }
    }
    if (strcmp(p->memory, "external") == 0 && (!p->memfile || access(p->memfile, R_OK) < 0))
      problem(rows, object, "memory file '%s' is missing", p->memfile ? p->memfile : "?");
  }
  vm_strv_free(&seen);

  size_t nproblems = json_object_array_length(rows);
  if (nproblems || vm_opts.format == VM_FMT_JSON) rc = vm_print_list(rows, cols);
  if (nproblems) {
    if (rc == 0) rc = vm_fail(VM_EXIT_VERIFY, "VM '%s' failed verification: %zu problem%s", vm, nproblems,
                              nproblems == 1 ? "" : "s");
  } else {
    vm_info("VM '%s': %zu images and %zu snapshots verified", vm, images, s.n);
  }
  snaps_free(&s);
  return rc;
}
