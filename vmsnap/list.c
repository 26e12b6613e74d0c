/* vmsnap list: a VM's snapshots as a tree (parents before their children, oldest
 * first), the current one marked. */
#include <string.h>
#include <time.h>

#include "vmsnap.h"

static const struct vm_column table_cols[] = {
  { "tree", "NAME", VM_COL_STR },
  { "kind", "KIND", VM_COL_STR },
  { "location", "LOCATION", VM_COL_STR },
  { "created", "CREATED", VM_COL_STR },
  { "paused_ms", "PAUSED-MS", VM_COL_INT },
  { "description", "DESCRIPTION", VM_COL_STR },
  { NULL, NULL, 0 },
};

static const struct vm_column tsv_cols[] = {
  { "name", "", VM_COL_STR },
  { "parent", "", VM_COL_STR },
  { "kind", "", VM_COL_STR },
  { "location", "", VM_COL_STR },
  { "created", "", VM_COL_STR },
  { "paused_ms", "", VM_COL_INT },
  { "frozen_ms", "", VM_COL_INT },
  { "current", "", VM_COL_BOOL },
  { "description", "", VM_COL_STR },
  { NULL, NULL, 0 },
};

static int by_created(const void *a, const void *b)
{
  const struct snap *x = *(struct snap *const *)a, *y = *(struct snap *const *)b;
  return x->created < y->created ? -1 : x->created > y->created ? 1 : strcmp(x->name, y->name);
}

static json_object *row(const struct snap *p, struct snaps *all, int depth, bool last)
{
  json_object *o = json_object_new_object();
  char iso[32];
  time_t t = (time_t)p->created;
  strftime(iso, sizeof iso, "%Y-%m-%dT%H:%M:%SZ", gmtime(&t));
  json_object_object_add(o, "name", json_object_new_string(p->name));
  json_object_object_add(o, "parent", p->parent ? json_object_new_string(p->parent) : NULL);
  json_object *kids = json_object_new_array();
  for (size_t i = 0; i < all->n; i++)
    if (all->v[i].parent && strcmp(all->v[i].parent, p->name) == 0)
      json_object_array_add(kids, json_object_new_string(all->v[i].name));
  json_object_object_add(o, "children", kids);
  json_object_object_add(o, "kind", json_object_new_string(p->kind));
  json_object_object_add(o, "location", json_object_new_string(p->external ? "external" : "internal"));
  json_object_object_add(o, "state", json_object_new_string(p->state));
  json_object_object_add(o, "memory", json_object_new_string(p->memory));
  json_object_object_add(o, "created", json_object_new_string(iso));
  json_object_object_add(o, "paused_ms", p->paused_ms >= 0 ? json_object_new_int64(p->paused_ms) : NULL);
  json_object_object_add(o, "frozen_ms", p->frozen_ms >= 0 ? json_object_new_int64(p->frozen_ms) : NULL);
  json_object_object_add(o, "current", json_object_new_boolean(p->current));
  json_object_object_add(o, "description", p->description ? json_object_new_string(p->description) : NULL);
  if (vm_opts.format == VM_FMT_JSON) {
    json_object *jd = json_object_new_array();
    for (size_t i = 0; i < p->ndisks; i++) {
      json_object *d = json_object_new_object();
      json_object_object_add(d, "target", json_object_new_string(p->disks[i].target));
      json_object_object_add(d, "snapshot", json_object_new_string(p->disks[i].mode));
      if (p->disks[i].base) json_object_object_add(d, "base", json_object_new_string(p->disks[i].base));
      if (p->disks[i].overlay) json_object_object_add(d, "overlay", json_object_new_string(p->disks[i].overlay));
      json_object_array_add(jd, d);
    }
    json_object_object_add(o, "disks", jd);
    if (p->memfile) json_object_object_add(o, "memory_file", json_object_new_string(p->memfile));
  } else {
    /* The tree drawn in the name column, for people, however deep. */
    size_t indent = depth > 0 ? (size_t)depth * 3 : 0;
    CLEANUP_FREE char *tree = calloc(indent + 1, 1);
    for (int i = 1; i < depth; i++) memcpy(tree + (size_t)(i - 1) * 3, "   ", 3);
    if (depth > 0) memcpy(tree + indent - 3, last ? "`- " : "|- ", 3);
    CLEANUP_FREE char *label = vm_strdup_printf("%s%s%s", tree, p->name, p->current ? " *" : "");
    json_object_object_add(o, "tree", json_object_new_string(label));
  }
  return o;
}

/* Parents before their children, to any depth; each snapshot once (done), so that
 * records whose parents loop cannot make the walk loop. */
static void walk(struct snaps *all, struct snap **sorted, bool *done, size_t n, const char *parent, int depth,
                 json_object *rows)
{
  size_t count = 0, seen = 0;
  for (size_t i = 0; i < n; i++)
    if (!done[i] && (parent ? sorted[i]->parent && strcmp(sorted[i]->parent, parent) == 0
                            : !sorted[i]->parent || !snaps_find(all, sorted[i]->parent)))
      count++;
  for (size_t i = 0; i < n; i++) {
    struct snap *p = sorted[i];
    bool mine = parent ? p->parent && strcmp(p->parent, parent) == 0 : !p->parent || !snaps_find(all, p->parent);
    if (!mine || done[i]) continue;
    done[i] = true;
    json_object_array_add(rows, row(p, all, depth, ++seen == count));
    walk(all, sorted, done, n, p->name, depth + 1, rows);
  }
}

int cmd_list(int argc, char **argv)
{
  struct poptOption table[] = { VM_POPT_COMMON, POPT_TABLEEND };
  CLEANUP_POPT poptContext ctx = NULL;
  const char **args;
  int nargs;
  int rc = vm_parse(&ctx, argc, argv, table, "VM",
                    "List a VM's snapshots as a tree, the current one marked with '*'.", 1, 1, &args, &nargs);
  if (rc) return rc == VM_DONE ? 0 : rc;
  CLEANUP_VIRCONN virConnectPtr conn = NULL;
  CLEANUP_VIRDOMAIN virDomainPtr dom = NULL;
  if ((rc = vm_open(args[0], &conn, &dom))) return rc;
  struct snaps snaps;
  if ((rc = snaps_load(dom, &snaps))) return rc;
  struct snap **sorted = calloc(snaps.n + 1, sizeof *sorted);
  for (size_t i = 0; i < snaps.n; i++) sorted[i] = &snaps.v[i];
  qsort(sorted, snaps.n, sizeof *sorted, by_created);
  CLEANUP_JSON json_object *rows = json_object_new_array();
  bool *done = calloc(snaps.n + 1, sizeof *done);
  walk(&snaps, sorted, done, snaps.n, NULL, 0, rows);
  /* Snapshots in a loop of parents have no root: listed last, flat. */
  for (size_t i = 0; i < snaps.n; i++)
    if (!done[i]) json_object_array_add(rows, row(sorted[i], &snaps, 0, true));
  free(done);
  rc = vm_print_list(rows, vm_opts.format == VM_FMT_TABLE ? table_cols : tsv_cols);
  free(sorted);
  snaps_free(&snaps);
  return rc;
}
