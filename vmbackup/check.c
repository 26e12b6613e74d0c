/* vmbackup check: a repository's structure (config, every pack's records
 * against its index, every index, every manifest and the chunks it names), and
 * with --read-data every chunk opened and authenticated. What is wrong is
 * listed with the snapshots it hits; exit 6. */
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <string.h>
#include <unistd.h>

#include "fs.h"
#include "vmbackup.h"

struct ids {
  unsigned char (*v)[VB_ID_LEN];
  size_t n, cap;
};

static void ids_add(struct ids *s, const unsigned char *id)
{
  if (s->n == s->cap) {
    s->cap = s->cap ? s->cap * 2 : 1024;
    s->v = realloc(s->v, s->cap * VB_ID_LEN);
    if (!s->v) abort();
  }
  memcpy(s->v[s->n++], id, VB_ID_LEN);
}

static int cmp_id(const void *a, const void *b) { return memcmp(a, b, VB_ID_LEN); }
static void ids_sort(struct ids *s)
{
  if (s->n) qsort(s->v, s->n, VB_ID_LEN, cmp_id);
}
static bool ids_has(const struct ids *s, const unsigned char *id)
{
  return s->n && bsearch(id, s->v, s->n, VB_ID_LEN, cmp_id) != NULL;
}

struct check {
  struct vb_repo *r;
  json_object *problems;
  struct ids bad; /* chunks damaged or missing: the snapshots naming them are hit */
  size_t packs, chunks, snapshots, notes;
};

static void problem(struct check *c, const char *object, const char *fmt, ...) VM_PRINTF(3, 4);
static void problem(struct check *c, const char *object, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  char *what = NULL;
  if (vasprintf(&what, fmt, ap) < 0) abort();
  va_end(ap);
  json_object *o = json_object_new_object();
  json_object_object_add(o, "object", json_object_new_string(object));
  json_object_object_add(o, "problem", json_object_new_string(what));
  json_object_object_add(o, "snapshots", json_object_new_string(""));
  json_object_array_add(c->problems, o);
  free(what);
}

static void list_names(struct vb_repo *r, const char *rel, struct vm_strv *out) { vb_fs_list(r->fs, rel, out); }

static bool same_entry(const struct vb_ientry *a, const struct vb_ientry *b)
{
  return a->offset == b->offset && a->reclen == b->reclen && a->rawlen == b->rawlen;
}

static int by_id_pack(const void *a, const void *b)
{
  const struct vb_ientry *x = a, *y = b;
  int c = memcmp(x->id, y->id, VB_ID_LEN);
  return c ? c : memcmp(x->pack, y->pack, VB_PACK_ID_LEN);
}

/* Every record of every pack, from the packs themselves (sorted by id and pack). */
struct recs {
  struct vb_ientry *v;
  size_t n, cap;
};

/* One pack: its records listed; with --read-data each one opened. */
static void check_pack(struct check *c, const char *hex, bool read_data, struct recs *all)
{
  c->packs++;
  unsigned char *buf = NULL;
  size_t len = 0, n;
  struct vb_ientry *e;
  const char *why;
  CLEANUP_FREE char *obj = vm_strdup_printf("pack %s", hex);
  int rc = vb_pack_scan(c->r, hex, read_data ? &buf : NULL, &len, &e, &n, &why);
  if (rc) problem(c, obj, "%s", why);
  CLEANUP_FREE char *ixf = vm_strdup_printf("index/%s", hex);
  unsigned char pid[VB_PACK_ID_LEN];
  vb_unhex16(hex, pid);
  if (vb_fs_exists(c->r->fs, ixf) == 0 && !(c->r->merged_n && vb_index_covers(&c->r->merged, pid))) {
    c->notes++;
    vm_info("pack %s has no index yet (a killed writer's; the next backup, or check --repair, indexes it)", hex);
  }
  for (size_t k = 0; k < n; k++) {
    if (all->n == all->cap) {
      all->cap = all->cap ? all->cap * 2 : 4096;
      all->v = realloc(all->v, all->cap * sizeof *all->v);
      if (!all->v) abort();
    }
    all->v[all->n++] = e[k];
  }
  c->chunks += n;
  if (read_data && buf) {
    unsigned cs = c->r->cfg.chunk_size;
    unsigned char *raw = malloc(cs);
    if (!raw) abort();
    for (size_t k = 0; k < n; k++) {
      size_t got;
      if (e[k].rawlen < 1 || e[k].rawlen > cs ||
          vb_open(&c->r->keys, VB_REC_CHUNK, e[k].id, buf + e[k].offset + 4, e[k].reclen, raw, cs, &got, &why) < 0) {
        char hid[17];
        for (int b = 0; b < 8; b++) snprintf(hid + 2 * b, 3, "%02x", e[k].id[b]);
        problem(c, obj, "chunk %s at offset %llu: %s", hid, (unsigned long long)e[k].offset,
                e[k].rawlen < 1 || e[k].rawlen > cs ? "raw length out of range" : why);
        ids_add(&c->bad, e[k].id);
      }
    }
    free(raw);
  }
  free(buf);
  free(e);
}

/* An index entry must name a record of its pack exactly; then its chunk is indexed. */
static void check_entry(struct check *c, const struct recs *all, const struct vb_ientry *ie, const char *obj,
                        size_t i, struct ids *indexed)
{
  struct vb_ientry *rec = bsearch(ie, all->v, all->n, sizeof *all->v, by_id_pack);
  if (!rec || !same_entry(rec, ie)) {
    problem(c, obj, "entry %zu names no record of its pack", i);
    ids_add(&c->bad, ie->id);
  } else {
    ids_add(indexed, ie->id);
  }
}

int cmd_check(int argc, char **argv)
{
  int read_data = 0, repair = 0;
  struct poptOption table[] = {
    { "read-data", '\0', POPT_ARG_NONE, &read_data, 0,
      "also open every chunk: decrypt, authenticate and decompress it (reads the whole repository)", NULL },
    { "repair", '\0', POPT_ARG_NONE, &repair, 0,
      "index the packs a killed writer left without an index, and clear tmp/ (under the exclusive lock)", NULL },
    VB_POPT_REPO, VM_POPT_LOCK, VM_POPT_COMMON, POPT_TABLEEND
  };
  CLEANUP_POPT poptContext ctx = NULL;
  const char **args;
  int nargs;
  int rc = vm_parse(&ctx, argc, argv, table, "REPO",
                    "Check a repository: every pack's records against its index, every index, every snapshot's "
                    "manifest and that each chunk it names is indexed; with --read-data every chunk authenticated. "
                    "Problems are listed with the snapshots they hit, and the exit status is 6.",
                    1, 1, &args, &nargs);
  if (rc) return rc == VM_DONE ? 0 : rc;
  vm_catch_signals();
  struct vb_repo *r;
  if ((rc = vb_open_repo(args[0], repair ? VB_LOCK_EXCLUSIVE : VB_LOCK_SHARED, &r))) return rc;
  if (repair) {
    /* A pack's damaged index is made again from the pack (the pack is the truth). */
    struct vm_strv names = { 0 };
    list_names(r, "index", &names);
    for (size_t i = 0; i < names.n; i++) {
      unsigned char pid[16];
      if (vb_unhex16(names.v[i], pid) < 0) continue;
      CLEANUP_FREE char *f = vm_strdup_printf("index/%s", names.v[i]);
      size_t len;
      CLEANUP_FREE unsigned char *b = (unsigned char *)vb_fs_read(r->fs, f, 1u << 30, &len);
      struct vb_index ix;
      const char *why;
      if (b && vb_index_check(b, len, &ix, &why) == 0 && !ix.merged && memcmp(ix.pack, pid, 16) == 0) continue;
      if (b && vb_fs_unlink(r->fs, f) == 0) vm_warn("removed the damaged index of pack %s; it is made again from the pack", names.v[i]);
    }
    vm_strv_free(&names);
  }
  if (repair && (rc = vb_repo_load_index(r, true))) {
    vb_repo_close(r);
    return rc;
  }
  struct check c = { .r = r, .problems = json_object_new_array() };
  /* The newest merged index, when there is one, is checked whole by loading it. */
  vm_errors_mute(true);
  int lrc = vb_repo_load_index(r, false);
  vm_errors_mute(false);
  if (lrc) problem(&c, "index", "%s", vm_last_error());
  struct ids indexed = { 0 };
  struct recs all = { 0 };
  /* The snapshots first: one that a backup puts in place later names only
   * chunks of packs that were in place before it, so none looks missing. */
  struct vm_strv snaps = { 0 };
  vb_snapshot_ids(r, &snaps);
  struct vm_strv sub = { 0 };
  list_names(r, "packs", &sub);
  for (size_t i = 0; i < sub.n && !vm_interrupted(); i++) {
    CLEANUP_FREE char *sd = vm_strdup_printf("packs/%s", sub.v[i]);
    struct vm_strv packs = { 0 };
    list_names(r, sd, &packs);
    for (size_t j = 0; j < packs.n && !vm_interrupted(); j++) {
      unsigned char pid[16];
      if (vb_unhex16(packs.v[j], pid) < 0 || strncmp(packs.v[j], sub.v[i], 2) != 0) {
        problem(&c, packs.v[j], "a file in packs/%s that is no pack", sub.v[i]);
        continue;
      }
      check_pack(&c, packs.v[j], read_data, &all);
      vm_progress("check", i, sub.n);
    }
    vm_strv_free(&packs);
  }
  vm_progress_end();
  vm_strv_free(&sub);
  if (all.n) qsort(all.v, all.n, sizeof *all.v, by_id_pack);
  /* Every index: checked whole, each entry a record of its pack. */
  struct vm_strv ixs = { 0 };
  list_names(r, "index", &ixs);
  for (size_t i = 0; i < ixs.n; i++) {
    unsigned char pid[16];
    if (vb_unhex16(ixs.v[i], pid) != 0) continue;
    CLEANUP_FREE char *obj = vm_strdup_printf("index %s", ixs.v[i]);
    CLEANUP_FREE char *pf = vm_strdup_printf("packs/%.2s/%s", ixs.v[i], ixs.v[i]);
    if (vb_fs_exists(r->fs, pf) == 0) {
      problem(&c, obj, "an index of a pack that is missing");
      continue;
    }
    if (r->merged_n && vb_index_covers(&r->merged, pid)) continue; /* left by a killed compact: the merged one serves */
    CLEANUP_FREE char *f = vm_strdup_printf("index/%s", ixs.v[i]);
    size_t ilen;
    CLEANUP_FREE unsigned char *ib = (unsigned char *)vb_fs_read(r->fs, f, 1u << 30, &ilen);
    struct vb_index ix;
    const char *why = "cannot be read";
    if (!ib || vb_index_check(ib, ilen, &ix, &why) < 0 || ix.merged || memcmp(ix.pack, pid, 16)) {
      problem(&c, obj, "damaged: %s", ib && ix.merged ? "a merged index in a pack's place" : why);
      continue;
    }
    for (size_t k = 0; k < ix.n; k++) {
      struct vb_ientry ie;
      vb_index_entry(&ix, k, &ie);
      check_entry(&c, &all, &ie, obj, k, &indexed);
    }
  }
  vm_strv_free(&ixs);
  if (r->merged_n) {
    CLEANUP_FREE char *obj = vm_strdup_printf("index merged.%u", r->merged_n);
    for (size_t k = 0; k < r->merged.n; k++) {
      struct vb_ientry ie;
      vb_index_entry(&r->merged, k, &ie);
      check_entry(&c, &all, &ie, obj, k, &indexed);
    }
  }
  free(all.v);
  ids_sort(&indexed);
  ids_sort(&c.bad);
  /* Every snapshot: its manifest, and each chunk it names. */
  for (size_t i = 0; i < snaps.n && !vm_interrupted(); i++) {
    struct vb_manifest m;
    c.snapshots++;
    vm_errors_mute(true);
    int g = vb_snapshot_get(r, snaps.v[i], &m);
    vm_errors_mute(false);
    CLEANUP_FREE char *obj = vm_strdup_printf("snapshot %s", snaps.v[i]);
    if (g) {
      problem(&c, obj, "%s", vm_last_error());
      continue;
    }
    size_t missing = 0, damaged = 0;
    for (size_t d = 0; d < m.ndisks; d++)
      for (size_t k = 0; k < m.disks[d].nchunks; k++) {
        if (vb_manifest_hole(&m.disks[d], k)) continue;
        if (ids_has(&c.bad, m.disks[d].ids[k])) damaged++;
        else if (!ids_has(&indexed, m.disks[d].ids[k])) missing++;
      }
    if (missing || damaged) {
      problem(&c, obj, "%zu of its chunks are damaged and %zu are in no index: it cannot be restored whole", damaged,
              missing);
      json_object *last = json_object_array_get_idx(c.problems, json_object_array_length(c.problems) - 1);
      json_object_object_add(last, "snapshots", json_object_new_string(snaps.v[i]));
    }
    vb_manifest_free(&m);
  }
  vm_strv_free(&snaps);
  free(indexed.v);
  free(c.bad.v);
  static const struct vm_column cols[] = {
    { "object", "OBJECT", VM_COL_STR },
    { "problem", "PROBLEM", VM_COL_STR },
    { "snapshots", "SNAPSHOTS", VM_COL_STR },
    { NULL, NULL, 0 },
  };
  size_t np = json_object_array_length(c.problems);
  if (np) rc = vm_print_list(c.problems, cols);
  json_object_put(c.problems);
  vb_repo_close(r);
  if (vm_interrupted()) return vm_fail_interrupted();
  if (np) return rc ? rc : vm_fail(VM_EXIT_VERIFY, "repository '%s': %zu problems found", args[0], np);
  vm_info("repository '%s' is sound: %zu snapshots, %zu packs, %zu chunks%s", args[0], c.snapshots, c.packs, c.chunks,
          read_data ? ", every chunk authenticated" : "");
  return 0;
}
