#include <unistd.h>
#include <libvirt/libvirt.h>
#include <libxml/tree.h>
#include <libxml/xpath.h>
#include <json-c/json.h>
#include <guestfs.h>
#include <popt.h>

#include "cleanup.h"

void vm_cleanup_free(void *ptr) { free(*(void **)ptr); }

void vm_cleanup_fclose(void *ptr)
{
  FILE *f = *(FILE **)ptr;
  if (f) fclose(f);
}

void vm_cleanup_close(void *ptr)
{
  int fd = *(int *)ptr;
  if (fd >= 0) close(fd);
}

void vm_cleanup_strv(void *ptr)
{
  char **v = *(char ***)ptr;
  if (!v) return;
  for (size_t i = 0; v[i]; i++) free(v[i]);
  free(v);
}

void vm_cleanup_virconn(void *ptr)
{
  virConnectPtr c = *(virConnectPtr *)ptr;
  if (c) virConnectClose(c);
}

void vm_cleanup_virdomain(void *ptr)
{
  virDomainPtr d = *(virDomainPtr *)ptr;
  if (d) virDomainFree(d);
}

void vm_cleanup_virdomain_array(void *ptr)
{
  virDomainPtr *v = *(virDomainPtr **)ptr;
  if (!v) return;
  for (size_t i = 0; v[i]; i++) virDomainFree(v[i]);
  free(v);
}

void vm_cleanup_xmldoc(void *ptr)
{
  xmlDocPtr d = *(xmlDocPtr *)ptr;
  if (d) xmlFreeDoc(d);
}

void vm_cleanup_xpathctx(void *ptr)
{
  xmlXPathContextPtr c = *(xmlXPathContextPtr *)ptr;
  if (c) xmlXPathFreeContext(c);
}

void vm_cleanup_xpathobj(void *ptr)
{
  xmlXPathObjectPtr o = *(xmlXPathObjectPtr *)ptr;
  if (o) xmlXPathFreeObject(o);
}

void vm_cleanup_xmlfree(void *ptr)
{
  void *p = *(void **)ptr;
  if (p) xmlFree(p);
}

void vm_cleanup_json(void *ptr)
{
  json_object *j = *(json_object **)ptr;
  if (j) json_object_put(j);
}

void vm_cleanup_guestfs(void *ptr)
{
  guestfs_h *g = *(guestfs_h **)ptr;
  if (g) guestfs_close(g);
}

void vm_cleanup_popt(void *ptr)
{
  poptContext c = *(poptContext *)ptr;
  if (c) poptFreeContext(c);
}
