/* table, tsv and json views of results built as json-c objects. */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "vmkit-base.h"

static bool output_closed;
bool vm_output_prom_ok;

bool vm_output_closed(void) { return output_closed; }

char *vm_tsv_escape(const char *s)
{
  size_t n = 1;
  for (const char *p = s; *p; p++) n += strchr("\t\n\r\\", *p) ? 2 : 1;
  char *out = malloc(n), *o = out;
  if (!out) return NULL;
  for (const char *p = s; *p; p++) {
    switch (*p) {
    case '\t': *o++ = '\\'; *o++ = 't'; break;
    case '\n': *o++ = '\\'; *o++ = 'n'; break;
    case '\r': *o++ = '\\'; *o++ = 'r'; break;
    case '\\': *o++ = '\\'; *o++ = '\\'; break;
    default: *o++ = *p;
    }
  }
  *o = '\0';
  return out;
}

#define JSON_FLAT (JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)

/* One cell as text: tables get human units, tsv gets raw values. */
static char *cell(json_object *row, const struct vm_column *c, bool human)
{
  json_object *v;
  if (!json_object_object_get_ex(row, c->key, &v) || !v) return strdup(human ? "-" : "");
  char b[16];
  switch (c->kind) {
  case VM_COL_BYTES:
  case VM_COL_RATE:
    if (human) {
      vm_format_size((uint64_t)json_object_get_int64(v), b);
      return vm_strdup_printf("%s%s", b, c->kind == VM_COL_RATE ? "/s" : "");
    }
    return vm_strdup_printf("%lld", (long long)json_object_get_int64(v));
  case VM_COL_PCT:
    return vm_strdup_printf("%.1f", json_object_get_double(v));
  case VM_COL_BOOL:
    return strdup(json_object_get_boolean(v) ? "yes" : "no");
  case VM_COL_INT:
    return vm_strdup_printf("%lld", (long long)json_object_get_int64(v));
  case VM_COL_STR:
  default:
    if (json_object_is_type(v, json_type_array) || json_object_is_type(v, json_type_object))
      return strdup(json_object_to_json_string_ext(v, JSON_FLAT));
    return human ? strdup(json_object_get_string(v)) : vm_tsv_escape(json_object_get_string(v));
  }
}

static bool numeric(enum vm_col_kind k) { return k != VM_COL_STR && k != VM_COL_BOOL; }

static int finish(void)
{
  if (fflush(stdout) != 0 || ferror(stdout)) {
    /* The reader went away (head, a closed pager): it had what it wanted. */
    if (errno == EPIPE) {
      output_closed = true;
      clearerr(stdout);
      return 0;
    }
    return vm_fail_errno(VM_EXIT_FAIL, "write error on standard output");
  }
  return 0;
}

static void print_json(json_object *o)
{
  puts(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED |
                                           JSON_C_TO_STRING_NOSLASHESCAPE));
}

/* A label value: backslash, double quote and newline escaped. */
static void prom_label(const char *s)
{
  for (; *s; s++) {
    if (*s == '\\' || *s == '"') printf("\\%c", *s);
    else if (*s == '\n') fputs("\\n", stdout);
    else putchar(*s);
  }
}

int vm_print_prom(json_object *rows, const struct vm_column *cols)
{
  size_t nrow = json_object_array_length(rows);
  for (const struct vm_column *m = cols; m->key; m++) {
    if (!m->prom || m->kind == VM_COL_STR) continue;
    bool typed = false;
    for (size_t r = 0; r < nrow; r++) {
      json_object *row = json_object_array_get_idx(rows, r), *v;
      if (!json_object_object_get_ex(row, m->key, &v) || !v) continue;
      if (!typed) printf("# TYPE %s gauge\n", m->prom), typed = true;
      fputs(m->prom, stdout);
      const char *sep = "{";
      for (const struct vm_column *l = cols; l->key; l++) {
        json_object *lv;
        if (!l->prom || l->kind != VM_COL_STR || !json_object_object_get_ex(row, l->key, &lv) || !lv) continue;
        printf("%s%s=\"", sep, l->prom);
        prom_label(json_object_get_string(lv));
        putchar('"');
        sep = ",";
      }
      if (*sep == ',') putchar('}');
      if (m->kind == VM_COL_BOOL) printf(" %d\n", json_object_get_boolean(v) ? 1 : 0);
      else if (json_object_is_type(v, json_type_double)) printf(" %.6g\n", json_object_get_double(v));
      else printf(" %lld\n", (long long)json_object_get_int64(v));
    }
  }
  return finish();
}

int vm_print_list(json_object *rows, const struct vm_column *cols)
{
  if (vm_opts.format == VM_FMT_PROM) return vm_print_prom(rows, cols);
  if (vm_opts.format == VM_FMT_JSON) {
    print_json(rows);
    return finish();
  }
  /* A column without a header is -o prom's only (a label, say). */
  size_t ncol = 0, nrow = json_object_array_length(rows), nall = 0;
  while (cols[nall].key) nall++;
  CLEANUP_FREE struct vm_column *shown = calloc(nall + 1, sizeof *shown);
  if (!shown) abort();
  for (size_t c = 0; c < nall; c++)
    if (cols[c].header) shown[ncol++] = cols[c];
  cols = shown;
  char ***cells = calloc(nrow ? nrow : 1, sizeof *cells);
  size_t *width = calloc(ncol, sizeof *width);
  bool human = vm_opts.format == VM_FMT_TABLE;
  for (size_t c = 0; c < ncol; c++) width[c] = strlen(cols[c].header);
  for (size_t r = 0; r < nrow; r++) {
    cells[r] = calloc(ncol, sizeof **cells);
    for (size_t c = 0; c < ncol; c++) {
      cells[r][c] = cell(json_object_array_get_idx(rows, r), &cols[c], human);
      if (strlen(cells[r][c]) > width[c]) width[c] = strlen(cells[r][c]);
    }
  }
  if (human) {
    for (size_t c = 0; c < ncol; c++)
      printf(numeric(cols[c].kind) ? "%*s%s" : "%-*s%s", c + 1 < ncol || numeric(cols[c].kind) ? (int)width[c] : 0,
             cols[c].header, c + 1 < ncol ? "  " : "\n");
  }
  for (size_t r = 0; r < nrow; r++) {
    for (size_t c = 0; c < ncol; c++) {
      if (human)
        printf(numeric(cols[c].kind) ? "%*s%s" : "%-*s%s",
               c + 1 < ncol || numeric(cols[c].kind) ? (int)width[c] : 0, cells[r][c],
               c + 1 < ncol ? "  " : "\n");
      else
        printf("%s%s", cells[r][c], c + 1 < ncol ? "\t" : "\n");
      free(cells[r][c]);
    }
    free(cells[r]);
  }
  free(cells);
  free(width);
  return finish();
}

static const struct vm_column *find_col(const struct vm_column *cols, const char *key)
{
  for (; cols && cols->key; cols++)
    if (strcmp(cols->key, key) == 0) return cols;
  return NULL;
}

/* Nested lists of objects (a VM's disks, its NICs) print one item a line under
 * their key in tables: "  vda  /var/lib/.../web1.qcow2  qcow2". */
static void print_nested(json_object *arr)
{
  size_t n = json_object_array_length(arr);
  for (size_t i = 0; i < n; i++) {
    json_object *it = json_object_array_get_idx(arr, i);
    printf("  -");
    if (json_object_is_type(it, json_type_object)) {
      json_object_object_foreach(it, k, v) {
        if (!v) continue;
        printf(" %s=%s", k, json_object_get_string(v));
      }
    } else {
      printf(" %s", json_object_get_string(it));
    }
    putchar('\n');
  }
}

int vm_print_record(json_object *obj, const struct vm_column *cols)
{
  if (vm_opts.format == VM_FMT_JSON) {
    print_json(obj);
    return finish();
  }
  bool human = vm_opts.format == VM_FMT_TABLE;
  size_t w = 0;
  json_object_object_foreach(obj, k0, v0) {
    (void)v0;
    if (strlen(k0) > w) w = strlen(k0);
  }
  json_object_object_foreach(obj, key, val) {
    if (val && json_object_is_type(val, json_type_array)) {
      if (human) {
        printf("%s:\n", key);
        print_nested(val);
      } else {
        size_t n = json_object_array_length(val);
        for (size_t i = 0; i < n; i++)
          printf("%s\t%s\n", key,
                 json_object_to_json_string_ext(json_object_array_get_idx(val, i), JSON_FLAT));
      }
      continue;
    }
    const struct vm_column *c = find_col(cols, key);
    struct vm_column dflt = { key, key, VM_COL_STR };
    if (!c) {
      dflt.kind = val && json_object_is_type(val, json_type_boolean) ? VM_COL_BOOL
                  : val && json_object_is_type(val, json_type_int)   ? VM_COL_INT
                                                                     : VM_COL_STR;
      c = &dflt;
    }
    CLEANUP_FREE char *s = cell(obj, c, human);
    if (human) printf("%s:%*s %s\n", key, (int)(w - strlen(key)), "", s);
    else printf("%s\t%s\n", key, s);
  }
  return finish();
}

static bool progress_shown;

void vm_progress(const char *what, uint64_t done, uint64_t total)
{
  if (vm_opts.quiet || !isatty(STDERR_FILENO)) return;
  if (total) fprintf(stderr, "\r%s: %3d%%", what, (int)(done * 100 / total));
  else fprintf(stderr, "\r%s ...", what);
  progress_shown = true;
}

void vm_progress_end(void)
{
  if (progress_shown) fputs("\r\033[K", stderr);
  progress_shown = false;
}
