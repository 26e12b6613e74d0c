/* The hosts of a move: what the user typed (a host of the hosts file or a URI), its
 * URI, the tags the hosts file gives it, and a connection. Plans add up memory and
 * pool space per host in a ledger. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vmmigrate.h"

int host_open(struct host *h, const char *name_or_uri, int unreachable_rc)
{
  memset(h, 0, sizeof *h);
  int rc = vm_resolve_uri(name_or_uri, &h->uri);
  if (rc) return rc;
  h->label = vm_strdup(name_or_uri ? name_or_uri : h->uri ? h->uri : "the default host");
  /* Tags: a host named by name, or by a URI that the hosts file holds. */
  struct vm_hosts hosts = { 0 };
  const char *path = vm_hosts_path();
  bool named = (vm_opts.hosts_file && *vm_opts.hosts_file) || (getenv("VMKIT_HOSTS") && *getenv("VMKIT_HOSTS"));
  if (h->uri && (named || access(path, R_OK) == 0)) {
    /* A hosts file that is named, or readable, must be right: its tags decide checks. */
    if ((rc = vm_hosts_load(path, &hosts))) return rc;
    const struct vm_host *e = name_or_uri ? vm_hosts_find(&hosts, name_or_uri) : NULL;
    if (!e) e = vm_hosts_find_uri(&hosts, h->uri);
    if (e) {
      const char *mu = vm_host_tag(e, "migrate-uri"), *mem = vm_host_tag(e, "memory");
      if (mu) h->migrate_uri = vm_strdup(mu);
      if (mem && vm_parse_size(mem, 'M', &h->mem_cap) < 0) {
        rc = vm_fail(VM_EXIT_USAGE, "%s: host '%s': invalid memory= tag '%s'", path, e->name, mem);
        vm_hosts_free(&hosts);
        return rc;
      }
      if (strcmp(h->label, e->uri) == 0) {
        free(h->label);
        h->label = vm_strdup(e->name);
      }
    }
    vm_hosts_free(&hosts);
  }
  vm_virt_init();
  h->conn = virConnectOpen(h->uri);
  if (!h->conn)
    return vm_fail(unreachable_rc, "cannot connect to %s%s%s%s: %s", h->label, h->uri && strcmp(h->uri, h->label) ? " (" : "",
                   h->uri && strcmp(h->uri, h->label) ? h->uri : "", h->uri && strcmp(h->uri, h->label) ? ")" : "",
                   vm_virt_message());
  if (!name_or_uri) {
    free(h->label);
    h->label = vm_strdup(vm_conn_host_name(h->conn));
  }
  return 0;
}

void host_close(struct host *h)
{
  if (h->conn) {
    vm_conn_forget(h->conn);
    virConnectClose(h->conn);
  }
  free(h->label);
  free(h->uri);
  free(h->migrate_uri);
  memset(h, 0, sizeof *h);
}

void ledger_add(struct ledger *l, const char *uri, const char *pool, int64_t bytes)
{
  for (size_t i = 0; i < l->n; i++)
    if (strcmp(l->v[i].uri, uri) == 0 && (pool ? l->v[i].pool && strcmp(l->v[i].pool, pool) == 0 : !l->v[i].pool)) {
      l->v[i].bytes += bytes;
      return;
    }
  struct ledger_entry *v = realloc(l->v, (l->n + 1) * sizeof *v);
  if (!v) abort();
  l->v = v;
  l->v[l->n++] = (struct ledger_entry){ vm_strdup(uri), pool ? vm_strdup(pool) : NULL, bytes };
}

int64_t ledger_get(const struct ledger *l, const char *uri, const char *pool)
{
  for (size_t i = 0; l && i < l->n; i++)
    if (strcmp(l->v[i].uri, uri) == 0 && (pool ? l->v[i].pool && strcmp(l->v[i].pool, pool) == 0 : !l->v[i].pool))
      return l->v[i].bytes;
  return 0;
}

void ledger_free(struct ledger *l)
{
  for (size_t i = 0; i < l->n; i++) {
    free(l->v[i].uri);
    free(l->v[i].pool);
  }
  free(l->v);
  memset(l, 0, sizeof *l);
}
