/* The virt layer's cleanup functions: libvirt objects and libxml2 documents. */
#include <libxml/xpath.h>

#include "vmkit-virt.h"

void vm_cleanup_virconn(void *ptr)
{
  virConnectPtr c = *(virConnectPtr *)ptr;
  if (!c) return;
  vm_conn_forget(c);
  virConnectClose(c);
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

void vm_cleanup_virpool(void *ptr)
{
  virStoragePoolPtr p = *(virStoragePoolPtr *)ptr;
  if (p) virStoragePoolFree(p);
}

void vm_cleanup_virvol(void *ptr)
{
  virStorageVolPtr v = *(virStorageVolPtr *)ptr;
  if (v) virStorageVolFree(v);
}

void vm_cleanup_virstream(void *ptr)
{
  virStreamPtr s = *(virStreamPtr *)ptr;
  if (!s) return;
  /* A stream still open here did not finish: abort it, so that the other end
   * learns it. The caller has reported its error by now. */
  virStreamAbort(s);
  virStreamFree(s);
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
