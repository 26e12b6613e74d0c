/* Migration plans (vmkit-plan(5)): lines "VM SOURCE DEST", written by vmbalance or
 * a person, read by vmmigrate. Parsed as untrusted text: every line checked, its
 * number named in the error. */
#include <string.h>

#include "vmkit-base.h"

/* A word of a plan: printable, no quotes or backslashes (it becomes a VM name, a
 * host name or a URI), at most 1024 bytes. */
static bool plain_word(const char *w)
{
  size_t n = strlen(w);
  if (n == 0 || n > 1024) return false;
  for (const unsigned char *p = (const unsigned char *)w; *p; p++)
    if (*p < 0x21 || *p == 0x7f || *p == '"' || *p == '\'' || *p == '\\') return false;
  return true;
}

int vm_plan_parse(const char *text, size_t len, struct vm_plan *plan, int *line, const char **why)
{
  memset(plan, 0, sizeof *plan);
  *line = 0;
  *why = NULL;
  if (memchr(text, '\0', len)) {
    *why = "a NUL byte in the text";
    *line = 1;
    for (size_t i = 0; i < len && text[i]; i++)
      if (text[i] == '\n') (*line)++;
    return -1;
  }
  char *copy = malloc(len + 1);
  if (!copy) abort();
  memcpy(copy, text, len);
  copy[len] = '\0';
  int lineno = 0;
  char *save = NULL;
  for (char *l = copy; l; l = save) {
    save = strchr(l, '\n');
    if (save) *save++ = '\0';
    lineno++;
    size_t ll = strlen(l);
    if (ll && l[ll - 1] == '\r') l[--ll] = '\0';
    if (lineno == 1 && strncmp(l, "#!vmkit-plan ", 13) == 0 && strcmp(l + 13, "1") != 0) {
      *why = "a plan of an unknown version (this reader knows '#!vmkit-plan 1')";
      goto bad;
    }
    char *hash = strchr(l, '#');
    if (hash) *hash = '\0';
    char *w[4] = { 0 };
    int k = 0;
    char *tsave = NULL;
    for (char *tok = strtok_r(l, " \t", &tsave); tok; tok = strtok_r(NULL, " \t", &tsave)) {
      if (k == 4) break;
      w[k++] = tok;
    }
    if (k == 0) continue;
    if (k != 3) {
      *why = "expected 'VM SOURCE DEST'";
      goto bad;
    }
    if (!plain_word(w[0]) || !plain_word(w[1]) || !plain_word(w[2])) {
      *why = "a word with a control character, a quote or a backslash, or longer than 1024 bytes";
      goto bad;
    }
    if (strcmp(w[1], w[2]) == 0) {
      *why = "the source and the destination are the same";
      goto bad;
    }
    if (plan->n >= VM_PLAN_MAX) {
      *why = "more moves than a plan may hold";
      goto bad;
    }
    struct vm_plan_move *v = realloc(plan->v, (plan->n + 1) * sizeof *v);
    if (!v) abort();
    plan->v = v;
    plan->v[plan->n++] = (struct vm_plan_move){ vm_strdup(w[0]), vm_strdup(w[1]), vm_strdup(w[2]), lineno };
  }
  free(copy);
  return 0;
bad:
  *line = lineno;
  free(copy);
  vm_plan_free(plan);
  return -1;
}

void vm_plan_free(struct vm_plan *plan)
{
  for (size_t i = 0; i < plan->n; i++) {
    free(plan->v[i].vm);
    free(plan->v[i].src);
    free(plan->v[i].dst);
  }
  free(plan->v);
  memset(plan, 0, sizeof *plan);
}
