/* vmbackup prune and compact: retention per VM (the rules of borg prune: the
 * last N, then the newest snapshot of each of the last N hours, days, ISO weeks
 * and months, in UTC), then the chunks no snapshot names reclaimed: packs that
 * hold only dead chunks removed, packs that are mostly dead (or small) copied
 * into new ones, and one merged index written over what stays. */
#include <dirent.h>
#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "fs.h"
#include "vmbackup.h"

/* ---- Retention ----------------------------------------------------------------------------- */

struct snapinfo {
  char *id, *vm, *uuid, *started;
  long long t;
  const char *keep; /* why it stays, NULL: pruned */
  char keepbuf[48];
};

/* Each VM's snapshots together, newest first. */
static int by_vm_newest(const void *a, const void *b)
{
  const struct snapinfo *x = a, *y = b;
  int c = strcmp(x->uuid, y->uuid);
  if (c) return c;
  if (x->t != y->t) return x->t > y->t ? -1 : 1;
  return strcmp(y->id, x->id);
}

static int by_started(const void *a, const void *b)
{
  const struct snapinfo *x = a, *y = b;
  if (x->t != y->t) return x->t < y->t ? -1 : 1;
  return strcmp(x->id, y->id);
}

enum { R_HOURLY, R_DAILY, R_WEEKLY, R_MONTHLY, R_N };
static const char *const rule_names[R_N] = { "hourly", "daily", "weekly", "monthly" };

static void period_of(int rule, const struct tm *tm, char out[32])
{
  switch (rule) {
  case R_HOURLY: strftime(out, 32, "%Y-%m-%dT%H", tm); break;
  case R_DAILY: strftime(out, 32, "%Y-%m-%d", tm); break;
  case R_WEEKLY: strftime(out, 32, "%G-W%V", tm); break;
  default: strftime(out, 32, "%Y-%m", tm); break;
  }
}

/* Marks what one VM's snapshots (v, n, newest first) keep, as borg prune does:
 * the last N, then each rule in turn walks them newest first and keeps the
 * newest of each period that no earlier rule kept, counting only those it
 * keeps. Then the newest is kept whatever the rules say (the next incremental
 * backup's base). */
static void retain(struct snapinfo *v, size_t n, int last, const int rules[R_N])
{
  for (size_t i = 0; i < n && (int)i < last; i++) {
    snprintf(v[i].keepbuf, sizeof v[i].keepbuf, "last %zu", i + 1);
    v[i].keep = v[i].keepbuf;
  }
  for (int r = 0; r < R_N; r++) {
    int kept = 0;
    char prev[32] = "";
    for (size_t i = 0; i < n && kept < rules[r]; i++) {
      time_t t = (time_t)v[i].t;
      struct tm tm;
      char period[32];
      gmtime_r(&t, &tm);
      period_of(r, &tm, period);
      if (strcmp(period, prev) == 0) continue;
      strcpy(prev, period);
      if (v[i].keep) continue;
      kept++;
      snprintf(v[i].keepbuf, sizeof v[i].keepbuf, "%s %s", rule_names[r], period);
      v[i].keep = v[i].keepbuf;
    }
  }
  if (n && !v[0].keep) v[0].keep = "newest";
}

/* ---- Compact --------------------------------------------------------------------------------- */

struct ents {
  struct vb_ientry *v;
  size_t n, cap;
};

static void ent_add(const struct vb_ientry *e, void *arg)
{
  struct ents *s = arg;
  if (s->n == s->cap) {
    s->cap = s->cap ? s->cap * 2 : 4096;
    s->v = realloc(s->v, s->cap * sizeof *s->v);
    if (!s->v) abort();
  }
  s->v[s->n++] = *e;
}

static int by_id_pack(const void *a, const void *b)
{
  const struct vb_ientry *x = a, *y = b;
  int c = memcmp(x->id, y->id, VB_ID_LEN);
  return c ? c : memcmp(x->pack, y->pack, VB_PACK_ID_LEN);
}

static int cmp_id(const void *a, const void *b) { return memcmp(a, b, VB_ID_LEN); }
static int cmp_pack(const void *a, const void *b) { return memcmp(a, b, VB_PACK_ID_LEN); }

struct packstat {
  unsigned char id[VB_PACK_ID_LEN];
  uint64_t size, live;
  int fate; /* 0 keep, 1 repack, 2 drop */
};

static struct packstat *find_pack(struct packstat *p, size_t n, const unsigned char *id)
{
  return bsearch(id, p, n, sizeof *p, cmp_pack);
}

/* Every chunk id the snapshots name, sorted. 0 or an exit code (a manifest that
 * cannot be read stops the compact: its chunks would be taken for dead). */
static int referenced(struct vb_repo *r, char *const *skip, unsigned char (**out)[VB_ID_LEN], size_t *nout)
{
  struct vm_strv ids = { 0 };
  int rc = vb_snapshot_ids(r, &ids);
  unsigned char (*v)[VB_ID_LEN] = NULL;
  size_t n = 0, cap = 0;
  for (size_t i = 0; i < ids.n && !rc; i++) {
    struct vb_manifest m;
    if (skip && vm_strv_contains(skip, ids.v[i])) continue;
    if ((rc = vb_snapshot_get(r, ids.v[i], &m))) {
      rc = vm_fail(VM_EXIT_VERIFY, "compact stopped: snapshot %s cannot be read, and the chunks it names would be "
                                   "taken for dead; run 'vmbackup check'", ids.v[i]);
      break;
    }
    for (size_t d = 0; d < m.ndisks; d++)
      for (size_t k = 0; k < m.disks[d].nchunks; k++) {
        if (vb_manifest_hole(&m.disks[d], k)) continue;
        if (n == cap) {
          cap = cap ? cap * 2 : 4096;
          v = realloc(v, cap * VB_ID_LEN);
          if (!v) abort();
        }
        memcpy(v[n++], m.disks[d].ids[k], VB_ID_LEN);
      }
    vb_manifest_free(&m);
  }
  vm_strv_free(&ids);
  if (n) qsort(v, n, VB_ID_LEN, cmp_id);
  size_t k = 0;
  for (size_t i = 0; i < n; i++)
    if (!k || memcmp(v[k - 1], v[i], VB_ID_LEN)) memcpy(v[k++], v[i], VB_ID_LEN);
  *out = v;
  *nout = k;
  return rc;
}

/* A repository served append-only (an ssh:// one whose server was started
 * with --append-only) removes nothing: said before anything is done. Closes r
 * when it refuses. */
static int refuse_append_only(struct vb_repo *r, const char *verb)
{
  if (!vb_fs_append_only(r->fs)) return 0;
  int rc = vm_fail(VM_EXIT_STATE, "repository '%s' is served append-only: %s would remove history; run it where the "
                                  "repository is, or through a key whose server is not --append-only", r->shown, verb);
  vb_repo_close(r);
  return rc;
}

/* The packs in packs/, with their sizes, sorted by ID. */
static struct packstat *list_packs(struct vb_repo *r, size_t *n)
{
  struct packstat *p = NULL;
  size_t cap = 0;
  *n = 0;
  struct vm_strv subs = { 0 };
  vb_fs_list(r->fs, "packs", &subs);
  for (size_t i = 0; i < subs.n; i++) {
    CLEANUP_FREE char *sd = vm_strdup_printf("packs/%s", subs.v[i]);
    struct vm_strv names = { 0 };
    vb_fs_list(r->fs, sd, &names);
    for (size_t j = 0; j < names.n; j++) {
      unsigned char id[VB_PACK_ID_LEN];
      if (vb_unhex16(names.v[j], id) < 0) continue;
      CLEANUP_FREE char *pf = vm_strdup_printf("%s/%s", sd, names.v[j]);
      uint64_t size;
      if (vb_fs_size(r->fs, pf, &size) < 0) continue;
      if (*n == cap) {
        cap = cap ? cap * 2 : 64;
        p = realloc(p, cap * sizeof *p);
        if (!p) abort();
      }
      memset(&p[*n], 0, sizeof *p);
      memcpy(p[*n].id, id, VB_PACK_ID_LEN);
      p[*n].size = size;
      (*n)++;
    }
    vm_strv_free(&names);
  }
  vm_strv_free(&subs);
  if (*n) qsort(p, *n, sizeof *p, cmp_pack);
  return p;
}

#define SMALL_PACK (4u << 20)

struct compact_stats {
  size_t dropped, repacked, kept, copied;
  uint64_t freed;
};

/* With the exclusive lock and the index loaded (repaired). */
/* skip: snapshots to count as gone (a dry run's prune). */
static int compact(struct vb_repo *r, bool dry_run, char *const *skip, struct compact_stats *st)
{
  memset(st, 0, sizeof *st);
  unsigned char (*refs)[VB_ID_LEN];
  size_t nrefs;
  int rc = referenced(r, skip, &refs, &nrefs);
  if (rc) {
    free(refs);
    return rc;
  }
  struct ents all = { 0 };
  vb_repo_foreach_entry(r, ent_add, &all);
  if (all.n) qsort(all.v, all.n, sizeof *all.v, by_id_pack);
  size_t np;
  struct packstat *packs = list_packs(r, &np);
  /* The copy of each live chunk that serves: the first (smallest pack ID) whose
   * pack is there and, when there are several copies, that opens (whoever could
   * add a pack, an append-only client, could add a false copy of a chunk under
   * its id: it must never be the one kept). */
  struct ents live = { 0 };
  unsigned char *rec0 = malloc(4 + vb_seal_bound(r->cfg.chunk_size)), *raw0 = malloc(r->cfg.chunk_size);
  if (!rec0 || !raw0) abort();
  for (size_t i = 0; i < all.n; i++) {
    if (i && !memcmp(all.v[i].id, all.v[i - 1].id, VB_ID_LEN) && live.n &&
        !memcmp(live.v[live.n - 1].id, all.v[i].id, VB_ID_LEN))
      continue;
    if (!bsearch(all.v[i].id, refs, nrefs, VB_ID_LEN, cmp_id)) continue;
    struct packstat *p = find_pack(packs, np, all.v[i].pack);
    if (!p) continue;
    bool dup = (i + 1 < all.n && !memcmp(all.v[i + 1].id, all.v[i].id, VB_ID_LEN)) ||
               (i && !memcmp(all.v[i - 1].id, all.v[i].id, VB_ID_LEN));
    if (dup) {
      const char *why;
      size_t got;
      if (vb_repo_read_record(r, &all.v[i], rec0, &why) ||
          vb_open(&r->keys, VB_REC_CHUNK, all.v[i].id, rec0 + 4, all.v[i].reclen, raw0, r->cfg.chunk_size, &got, &why))
        continue; /* the next copy, if one opens */
    }
    p->live += 4 + (uint64_t)all.v[i].reclen;
    ent_add(&all.v[i], &live);
  }
  free(rec0);
  free(raw0);
  /* A chunk that snapshots name and no index holds: something is wrong (a
   * damaged or planted index); nothing is removed before 'check' says what. */
  size_t missing = 0;
  for (size_t i = 0; i < nrefs; i++)
    if (!bsearch(refs[i], live.v, live.n, sizeof *live.v, cmp_id)) missing++;
  if (missing) {
    rc = vm_fail(VM_EXIT_VERIFY, "compact stopped before removing anything: %zu chunks that snapshots name are in "
                                 "no index, or in no copy that opens; run 'vmbackup check --read-data'", missing);
    goto out;
  }
  size_t small = 0;
  for (size_t i = 0; i < np; i++)
    if (packs[i].live && packs[i].size < SMALL_PACK) small++;
  for (size_t i = 0; i < np; i++) {
    struct packstat *p = &packs[i];
    if (!p->live) p->fate = 2;
    else if (p->live * 5 < p->size * 4 || (p->size < SMALL_PACK && small >= 2)) p->fate = 1;
    if (p->fate == 2) st->dropped++, st->freed += p->size;
    else if (p->fate == 1) st->repacked++, st->freed += p->size - p->live;
    else st->kept++;
  }
  if (dry_run) goto out;
  /* 1. The live chunks of the packs that go, copied as they are into new packs. */
  unsigned char *rec = malloc(4 + vb_seal_bound(r->cfg.chunk_size));
  if (!rec) abort();
  for (size_t i = 0; i < live.n && !rc; i++) {
    struct packstat *p = find_pack(packs, np, live.v[i].pack);
    if (p->fate != 1) continue;
    const char *why;
    int g = vb_repo_read_record(r, &live.v[i], rec, &why);
    if (g) rc = vm_fail(g, "compact stopped: a live chunk of pack %02x%02x... cannot be read: %s", p->id[0], p->id[1], why);
    else rc = vb_repo_append_record(r, &live.v[i], rec);
    st->copied++;
    if (vm_interrupted()) rc = vm_fail_interrupted();
  }
  free(rec);
  if (!rc) rc = vb_repo_flush(r);
  if (rc) goto out;
  /* 2. One merged index of what stays: the kept packs' live chunks and the new packs'. */
  struct ents merged = { 0 };
  for (size_t i = 0; i < live.n; i++) {
    struct packstat *p = find_pack(packs, np, live.v[i].pack);
    if (p->fate == 0) ent_add(&live.v[i], &merged);
  }
  unsigned char (*newp)[VB_PACK_ID_LEN];
  size_t nnew = vb_repo_new_packs(r, &newp);
  for (size_t i = 0; i < live.n; i++) {
    struct packstat *p = find_pack(packs, np, live.v[i].pack);
    if (p->fate != 1) continue;
    struct vb_ientry e;
    /* Its new copy (the lookup prefers this run's packs: they are in the table). */
    if (vb_repo_lookup(r, live.v[i].id, &e)) ent_add(&e, &merged);
  }
  /* An id once only (the first copy by pack ID). */
  if (merged.n) qsort(merged.v, merged.n, sizeof *merged.v, by_id_pack);
  size_t k = 0;
  for (size_t i = 0; i < merged.n; i++)
    if (!k || memcmp(merged.v[k - 1].id, merged.v[i].id, VB_ID_LEN)) merged.v[k++] = merged.v[i];
  merged.n = k;
  unsigned char (*plist)[VB_PACK_ID_LEN] = calloc(np + nnew + 1, VB_PACK_ID_LEN);
  size_t npl = 0;
  for (size_t i = 0; i < np; i++)
    if (packs[i].fate == 0) memcpy(plist[npl++], packs[i].id, VB_PACK_ID_LEN);
  for (size_t i = 0; i < nnew; i++) memcpy(plist[npl++], newp[i], VB_PACK_ID_LEN);
  rc = vb_repo_still_locked(r);
  if (!rc) rc = vb_repo_write_merged(r, merged.v, merged.n, plist, npl);
  free(plist);
  free(merged.v);
  if (rc) goto out;
  /* 3. What the merged index makes redundant, then the packs that went. */
  if ((rc = vb_repo_still_locked(r))) goto out;
  vb_repo_drop_covered_indexes(r);
  for (size_t i = 0; i < np && !rc; i++)
    if (packs[i].fate) rc = vb_repo_remove_pack(r, packs[i].id);
out:
  free(refs);
  free(all.v);
  free(live.v);
  free(packs);
  return rc;
}

static const struct vm_column cols[] = {
  { "short", "SNAPSHOT", VM_COL_STR },
  { "started", "STARTED", VM_COL_STR },
  { "vm", "VM", VM_COL_STR },
  { "action", "ACTION", VM_COL_STR },
  { "why", "WHY", VM_COL_STR },
  { NULL, NULL, 0 },
};
static const struct vm_column tsv_cols[] = {
  { "snapshot", "", VM_COL_STR },
  { "started", "", VM_COL_STR },
  { "vm", "", VM_COL_STR },
  { "action", "", VM_COL_STR },
  { "why", "", VM_COL_STR },
  { NULL, NULL, 0 },
};

static void report_compact(const char *repo, const struct compact_stats *c, bool dry)
{
  char freed[16];
  vm_info("%s%s: %zu packs removed, %zu copied into new ones (%zu chunks), %zu kept; %s freed", dry ? "would compact " : "compacted ",
          repo, c->dropped, c->repacked, c->copied, c->kept, vm_format_size(c->freed, freed));
}

int cmd_prune(int argc, char **argv)
{
  int last = 0, rules[R_N] = { 0 }, dry = 0;
  struct poptOption table[] = {
    { "keep-last", '\0', POPT_ARG_INT, &last, 0, "keep the newest N snapshots of each VM", "N" },
    { "keep-hourly", '\0', POPT_ARG_INT, &rules[R_HOURLY], 0, "keep the newest snapshot of each of the last N hours", "N" },
    { "keep-daily", '\0', POPT_ARG_INT, &rules[R_DAILY], 0, "keep the newest snapshot of each of the last N days", "N" },
    { "keep-weekly", '\0', POPT_ARG_INT, &rules[R_WEEKLY], 0, "keep the newest snapshot of each of the last N ISO weeks", "N" },
    { "keep-monthly", '\0', POPT_ARG_INT, &rules[R_MONTHLY], 0, "keep the newest snapshot of each of the last N months", "N" },
    { "dry-run", 'n', POPT_ARG_NONE, &dry, 0, "say what would be pruned and reclaimed; change nothing", NULL },
    VB_POPT_REPO, VM_POPT_LOCK, VM_POPT_COMMON, POPT_TABLEEND
  };
  CLEANUP_POPT poptContext ctx = NULL;
  const char **args;
  int nargs;
  int rc = vm_parse(&ctx, argc, argv, table, "REPO [VM...]",
                    "Remove the snapshots that no --keep rule keeps, per VM (all VMs, or those named), then reclaim the "
                    "chunks no snapshot names (compact). Periods are in UTC; each VM's newest snapshot is always kept. "
                    "Prints each snapshot with what it keeps it, or 'prune'.",
                    1, -1, &args, &nargs);
  if (rc) return rc == VM_DONE ? 0 : rc;
  if (last < 0 || rules[0] < 0 || rules[1] < 0 || rules[2] < 0 || rules[3] < 0)
    return vm_usage_error("a --keep count is 0 or more");
  if (!last && !rules[0] && !rules[1] && !rules[2] && !rules[3])
    return vm_usage_error("say what to keep: --keep-last, --keep-hourly, --keep-daily, --keep-weekly or --keep-monthly");
  vm_catch_signals();
  struct vb_repo *r;
  if ((rc = vb_open_repo(args[0], dry ? VB_LOCK_SHARED : VB_LOCK_EXCLUSIVE, &r))) return rc;
  if (!dry && (rc = refuse_append_only(r, "prune"))) return rc;
  if ((rc = vb_repo_load_index(r, !dry))) {
    vb_repo_close(r);
    return rc;
  }
  struct vm_strv ids = { 0 };
  if ((rc = vb_snapshot_ids(r, &ids))) {
    vb_repo_close(r);
    return rc;
  }
  struct snapinfo *v = calloc(ids.n + 1, sizeof *v);
  size_t n = 0;
  for (size_t i = 0; i < ids.n && !rc; i++) {
    struct vb_manifest m;
    if (vb_snapshot_get(r, ids.v[i], &m)) {
      rc = vm_fail(VM_EXIT_VERIFY, "prune stopped: snapshot %s cannot be read; run 'vmbackup check'", ids.v[i]);
      break;
    }
    bool named = nargs == 1;
    for (int a = 1; a < nargs; a++) named |= !strcmp(args[a], m.vm) || !strcmp(args[a], m.uuid);
    if (named) {
      v[n] = (struct snapinfo){ .id = vm_strdup(m.snapshot), .vm = vm_strdup(m.vm), .uuid = vm_strdup(m.uuid),
                                .started = vm_strdup(m.started), .t = vb_parse_utc(m.started) };
      n++;
    }
    vb_manifest_free(&m);
  }
  vm_strv_free(&ids);
  CLEANUP_JSON json_object *rows = json_object_new_array();
  if (!rc) {
    qsort(v, n, sizeof *v, by_vm_newest);
    for (size_t i = 0, j; i < n; i = j) {
      for (j = i; j < n && !strcmp(v[j].uuid, v[i].uuid); j++)
        ;
      retain(v + i, j - i, last, rules);
    }
    /* Shown oldest first; the keep reasons point into each element, which moves with it. */
    for (size_t i = 0; i < n; i++)
      if (v[i].keep == v[i].keepbuf) v[i].keep = NULL, v[i].keepbuf[sizeof v[i].keepbuf - 1] = 1;
    qsort(v, n, sizeof *v, by_started);
    for (size_t i = 0; i < n; i++)
      if (v[i].keepbuf[sizeof v[i].keepbuf - 1] == 1) v[i].keepbuf[sizeof v[i].keepbuf - 1] = 0, v[i].keep = v[i].keepbuf;
    for (size_t i = 0; i < n; i++) {
      json_object *o = json_object_new_object();
      char shortid[13];
      snprintf(shortid, sizeof shortid, "%.12s", v[i].id);
      json_object_object_add(o, "snapshot", json_object_new_string(v[i].id));
      json_object_object_add(o, "short", json_object_new_string(shortid));
      json_object_object_add(o, "started", json_object_new_string(v[i].started));
      json_object_object_add(o, "vm", json_object_new_string(v[i].vm));
      json_object_object_add(o, "action", json_object_new_string(v[i].keep ? "keep" : dry ? "would prune" : "prune"));
      json_object_object_add(o, "why", json_object_new_string(v[i].keep ? v[i].keep : ""));
      json_object_array_add(rows, o);
    }
  }
  size_t pruned = 0;
  if (!rc && !dry) rc = vb_repo_still_locked(r);
  for (size_t i = 0; i < n && !rc && !dry; i++) {
    if (v[i].keep) continue;
    if (vm_interrupted()) rc = vm_fail_interrupted();
    else rc = vb_snapshot_remove(r, v[i].id);
    if (!rc) pruned++;
  }
  if (!rc && !dry && pruned) vb_fs_sync_dir(r->fs, "snapshots");
  struct compact_stats cs;
  struct vm_strv gone = { 0 };
  for (size_t i = 0; i < n; i++)
    if (!v[i].keep) vm_strv_add(&gone, v[i].id);
  if (!rc) rc = compact(r, dry, dry ? gone.v : NULL, &cs);
  vm_strv_free(&gone);
  if (!rc) report_compact(args[0], &cs, dry);
  for (size_t i = 0; i < n; i++) {
    free(v[i].id);
    free(v[i].vm);
    free(v[i].uuid);
    free(v[i].started);
  }
  free(v);
  vb_repo_close(r);
  int prc = vm_print_list(rows, vm_opts.format == VM_FMT_TABLE ? cols : tsv_cols);
  return rc ? rc : prc;
}

int cmd_compact(int argc, char **argv)
{
  int dry = 0;
  struct poptOption table[] = {
    { "dry-run", 'n', POPT_ARG_NONE, &dry, 0, "say what would be reclaimed; change nothing", NULL },
    VB_POPT_REPO, VM_POPT_LOCK, VM_POPT_COMMON, POPT_TABLEEND
  };
  CLEANUP_POPT poptContext ctx = NULL;
  const char **args;
  int nargs;
  int rc = vm_parse(&ctx, argc, argv, table, "REPO",
                    "Reclaim the chunks no snapshot names: packs holding only such chunks are removed, packs mostly "
                    "dead or small are copied into new ones, and one merged index is written over what stays. Under "
                    "the repository's exclusive lock.",
                    1, 1, &args, &nargs);
  if (rc) return rc == VM_DONE ? 0 : rc;
  vm_catch_signals();
  struct vb_repo *r;
  if ((rc = vb_open_repo(args[0], dry ? VB_LOCK_SHARED : VB_LOCK_EXCLUSIVE, &r))) return rc;
  if (!dry && (rc = refuse_append_only(r, "compact"))) return rc;
  struct compact_stats cs;
  if (!(rc = vb_repo_load_index(r, !dry)) && !(rc = compact(r, dry, NULL, &cs))) report_compact(args[0], &cs, dry);
  vb_repo_close(r);
  return rc;
}
