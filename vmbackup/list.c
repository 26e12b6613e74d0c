/* vmbackup list: the snapshots of a repository, oldest first. */
#include <string.h>

#include "vmbackup.h"

static const struct vm_column table_cols[] = {
  { "short", "SNAPSHOT", VM_COL_STR },
  { "started", "STARTED", VM_COL_STR },
  { "vm", "VM", VM_COL_STR },
  { "kind", "KIND", VM_COL_STR },
  { "size", "SIZE", VM_COL_BYTES },
  { "bytes_new", "NEW", VM_COL_BYTES },
  { "bytes_stored", "STORED", VM_COL_BYTES },
  { NULL, NULL, 0 },
};

static const struct vm_column tsv_cols[] = {
  { "snapshot", "", VM_COL_STR },
  { "started", "", VM_COL_STR },
  { "ended", "", VM_COL_STR },
  { "vm", "", VM_COL_STR },
  { "uuid", "", VM_COL_STR },
  { "host", "", VM_COL_STR },
  { "kind", "", VM_COL_STR },
  { "size", "", VM_COL_INT },
  { "bytes_read", "", VM_COL_INT },
  { "bytes_new", "", VM_COL_INT },
  { "bytes_stored", "", VM_COL_INT },
  { "why", "", VM_COL_STR },
  { NULL, NULL, 0 },
};

static int by_started(const void *a, const void *b)
{
  json_object *x = *(json_object *const *)a, *y = *(json_object *const *)b;
  int c = strcmp(json_object_get_string(json_object_object_get(x, "started")),
                 json_object_get_string(json_object_object_get(y, "started")));
  return c ? c
           : strcmp(json_object_get_string(json_object_object_get(x, "snapshot")),
                    json_object_get_string(json_object_object_get(y, "snapshot")));
}

json_object *vb_snapshot_row(const struct vb_manifest *m)
{
  json_object *o = json_object_new_object();
  char shortid[13];
  snprintf(shortid, sizeof shortid, "%.12s", m->snapshot);
  uint64_t size = 0;
  for (size_t i = 0; i < m->ndisks; i++) size += m->disks[i].size;
  json_object_object_add(o, "snapshot", json_object_new_string(m->snapshot));
  json_object_object_add(o, "short", json_object_new_string(shortid));
  json_object_object_add(o, "started", json_object_new_string(m->started));
  json_object_object_add(o, "ended", json_object_new_string(m->ended));
  json_object_object_add(o, "vm", json_object_new_string(m->vm));
  json_object_object_add(o, "uuid", json_object_new_string(m->uuid));
  json_object_object_add(o, "host", json_object_new_string(m->host));
  json_object_object_add(o, "kind", json_object_new_string(m->kind));
  json_object_object_add(o, "why", json_object_new_string(m->why));
  json_object_object_add(o, "checkpoint", json_object_new_string(m->checkpoint));
  json_object_object_add(o, "size", json_object_new_int64((int64_t)size));
  json_object_object_add(o, "bytes_read", json_object_new_int64((int64_t)m->bytes_read));
  json_object_object_add(o, "bytes_new", json_object_new_int64((int64_t)m->bytes_new));
  json_object_object_add(o, "bytes_stored", json_object_new_int64((int64_t)m->bytes_stored));
  json_object *jd = json_object_new_array();
  for (size_t i = 0; i < m->ndisks; i++) {
    json_object *d = json_object_new_object();
    json_object_object_add(d, "target", json_object_new_string(m->disks[i].target));
    json_object_object_add(d, "format", json_object_new_string(m->disks[i].format));
    json_object_object_add(d, "size", json_object_new_int64((int64_t)m->disks[i].size));
    json_object_array_add(jd, d);
  }
  json_object_object_add(o, "disks", jd);
  return o;
}

int vb_load_snapshots(struct vb_repo *r, const char *vm, json_object *rows, bool *damaged)
{
  struct vm_strv ids = { 0 };
  int rc = vb_snapshot_ids(r, &ids);
  if (rc) return rc;
  for (size_t i = 0; i < ids.n; i++) {
    struct vb_manifest m;
    if (vb_snapshot_get(r, ids.v[i], &m)) {
      *damaged = true;
      continue;
    }
    if (!vm || strcmp(m.vm, vm) == 0 || strcmp(m.uuid, vm) == 0) json_object_array_add(rows, vb_snapshot_row(&m));
    vb_manifest_free(&m);
  }
  vm_strv_free(&ids);
  json_object_array_sort(rows, by_started);
  return 0;
}

int cmd_list(int argc, char **argv)
{
  struct poptOption table[] = { VB_POPT_REPO, VM_POPT_COMMON, POPT_TABLEEND };
  CLEANUP_POPT poptContext ctx = NULL;
  const char **args;
  int nargs;
  int rc = vm_parse(&ctx, argc, argv, table, "REPO [VM]",
                    "List the snapshots in REPO (of VM only, by name or UUID), oldest first: when, which VM, full or "
                    "incremental, the disks' size, and the data that was new (raw, then stored: compressed and "
                    "sealed).",
                    1, 2, &args, &nargs);
  if (rc) return rc == VM_DONE ? 0 : rc;
  struct vb_repo *r;
  if ((rc = vb_open_repo(args[0], VB_LOCK_NONE, &r))) return rc;
  CLEANUP_JSON json_object *rows = json_object_new_array();
  bool damaged = false;
  rc = vb_load_snapshots(r, nargs > 1 ? args[1] : NULL, rows, &damaged);
  vb_repo_close(r);
  if (rc) return rc;
  rc = vm_print_list(rows, vm_opts.format == VM_FMT_TABLE ? table_cols : tsv_cols);
  if (!rc && damaged) rc = VM_EXIT_VERIFY;
  return rc;
}
