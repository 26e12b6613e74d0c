/* The pool's hosts file: one host a line, "NAME URI [TAG...]", '#' comments. */
#include <ctype.h>
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "vmkit-base.h"

static char *next_word(char **p)
{
  while (**p && isspace((unsigned char)**p)) (*p)++;
  if (!**p || **p == '#') return NULL;
  char *w = *p;
  while (**p && !isspace((unsigned char)**p)) (*p)++;
  if (**p) *(*p)++ = '\0';
  return w;
}

int vm_hosts_parse(const char *text, struct vm_hosts *hosts, int *line)
{
  memset(hosts, 0, sizeof *hosts);
  CLEANUP_FREE char *copy = strdup(text);
  char *save = NULL;
  int lineno = 0;
  for (char *l = copy; l; l = save) {
    save = strchr(l, '\n');
    if (save) *save++ = '\0';
    lineno++;
    char *p = l, *name = next_word(&p);
    if (!name) continue;
    char *uri = next_word(&p);
    /* A host needs a URI that names a scheme, and a name that is unique. */
    if (!uri || !strstr(uri, ":/") || vm_hosts_find(hosts, name)) {
      *line = lineno;
      vm_hosts_free(hosts);
      return -1;
    }
    struct vm_host *v = realloc(hosts->v, (hosts->n + 1) * sizeof *v);
    if (!v) { vm_hosts_free(hosts); *line = lineno; return -1; }
    hosts->v = v;
    struct vm_host *h = &hosts->v[hosts->n++];
    memset(h, 0, sizeof *h);
    h->name = strdup(name);
    h->uri = strdup(uri);
    for (char *t; (t = next_word(&p));) vm_strv_add(&h->tags, t);
  }
  return 0;
}

const char *vm_hosts_path(void)
{
  if (vm_opts.hosts_file && *vm_opts.hosts_file) return vm_opts.hosts_file;
  const char *p = getenv("VMKIT_HOSTS");
  return p && *p ? p : "/etc/vmkit/hosts";
}

int vm_hosts_load(const char *path, struct vm_hosts *hosts)
{
  memset(hosts, 0, sizeof *hosts);
  if (!path) path = vm_hosts_path();
  CLEANUP_FREE char *text = vm_read_file(path, 1 << 20, NULL);
  if (!text)
    return vm_fail_errno(errno == ENOENT ? VM_EXIT_NOTFOUND : VM_EXIT_FAIL,
                         "cannot read hosts file '%s'", path);
  int line;
  if (vm_hosts_parse(text, hosts, &line) < 0)
    return vm_fail(VM_EXIT_USAGE, "%s:%d: expected 'NAME URI [TAG...]' with a unique NAME",
                   path, line);
  return 0;
}

const struct vm_host *vm_hosts_find(const struct vm_hosts *hosts, const char *name)
{
  for (size_t i = 0; i < hosts->n; i++)
    if (strcmp(hosts->v[i].name, name) == 0) return &hosts->v[i];
  return NULL;
}

void vm_hosts_free(struct vm_hosts *hosts)
{
  for (size_t i = 0; i < hosts->n; i++) {
    free(hosts->v[i].name);
    free(hosts->v[i].uri);
    vm_strv_free(&hosts->v[i].tags);
  }
  free(hosts->v);
  hosts->v = NULL;
  hosts->n = 0;
}

/* A bare word names a host of the hosts file. One that the file does not hold (or
 * with no file at all) goes to libvirt as it is, which knows its own aliases
 * (uri_aliases in libvirt.conf); a hosts file that cannot be read is an error only
 * when the user named one. */
int vm_resolve_uri(const char *name_or_uri, char **uri)
{
  *uri = NULL;
  if (!name_or_uri) return 0;
  if (strstr(name_or_uri, ":/") || !*name_or_uri) {
    *uri = vm_strdup(name_or_uri);
    return 0;
  }
  const char *path = vm_hosts_path();
  bool named = (vm_opts.hosts_file && *vm_opts.hosts_file) || (getenv("VMKIT_HOSTS") && *getenv("VMKIT_HOSTS"));
  if (!named && access(path, F_OK) < 0) {
    *uri = vm_strdup(name_or_uri);
    return 0;
  }
  struct vm_hosts hosts;
  int rc = vm_hosts_load(path, &hosts);
  if (rc) return rc;
  const struct vm_host *h = vm_hosts_find(&hosts, name_or_uri);
  *uri = vm_strdup(h ? h->uri : name_or_uri);
  vm_hosts_free(&hosts);
  return 0;
}

const struct vm_host *vm_hosts_find_uri(const struct vm_hosts *hosts, const char *uri)
{
  for (size_t i = 0; uri && i < hosts->n; i++)
    if (strcmp(hosts->v[i].uri, uri) == 0) return &hosts->v[i];
  return NULL;
}

const char *vm_host_tag(const struct vm_host *h, const char *key)
{
  size_t k = strlen(key);
  for (size_t i = 0; h && i < h->tags.n; i++)
    if (strncmp(h->tags.v[i], key, k) == 0 && h->tags.v[i][k] == '=') return h->tags.v[i] + k + 1;
  return NULL;
}
