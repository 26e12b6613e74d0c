/* Reading domain XML with XPath and writing it with libxml2's tree API. */
#include <string.h>

#include <libxml/xpathInternals.h>

#include "vmkit-virt.h"

xmlDocPtr vm_xml_parse(const char *xml)
{
  return xmlReadMemory(xml, (int)strlen(xml), "domain.xml", NULL,
                       XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
}

xmlDocPtr vm_domain_doc(virDomainPtr dom, unsigned int flags)
{
  CLEANUP_FREE char *xml = virDomainGetXMLDesc(dom, flags);
  if (!xml) {
    vm_fail_virt("cannot read the definition of '%s'", virDomainGetName(dom));
    return NULL;
  }
  xmlDocPtr doc = vm_xml_parse(xml);
  if (!doc) vm_fail(VM_EXIT_FAIL, "cannot parse the definition of '%s'", virDomainGetName(dom));
  return doc;
}

xmlXPathContextPtr vm_xpath_ctx(xmlDocPtr doc)
{
  xmlXPathContextPtr ctx = xmlXPathNewContext(doc);
  if (ctx) xmlXPathRegisterNs(ctx, BAD_CAST VM_META_PREFIX, BAD_CAST VM_META_NS);
  return ctx;
}

char *vm_xpath_str(xmlXPathContextPtr ctx, const char *expr)
{
  CLEANUP_FREE char *wrapped = vm_strdup_printf("string(%s)", expr);
  CLEANUP_XPATHOBJ xmlXPathObjectPtr o = xmlXPathEvalExpression(BAD_CAST wrapped, ctx);
  if (!o || o->type != XPATH_STRING || !o->stringval || !*o->stringval) return NULL;
  return strdup((const char *)o->stringval);
}

long long vm_xpath_ll(xmlXPathContextPtr ctx, const char *expr, long long dflt)
{
  CLEANUP_FREE char *s = vm_xpath_str(ctx, expr);
  if (!s) return dflt;
  char *end;
  long long v = strtoll(s, &end, 10);
  return *end ? dflt : v;
}

xmlXPathObjectPtr vm_xpath_nodes(xmlXPathContextPtr ctx, const char *expr)
{
  xmlXPathObjectPtr o = xmlXPathEvalExpression(BAD_CAST expr, ctx);
  if (o && o->type != XPATH_NODESET) {
    xmlXPathFreeObject(o);
    return NULL;
  }
  return o;
}

char *vm_xpath_literal(const char *s)
{
  if (!strchr(s, '\'')) return vm_strdup_printf("'%s'", s);
  if (!strchr(s, '"')) return vm_strdup_printf("\"%s\"", s);
  /* Both quotes: concat('it', "'", 's ...'). */
  char *out = vm_strdup("concat(''");
  for (const char *p = s; *p;) {
    size_t n = strcspn(p, "'");
    char *next = n ? vm_strdup_printf("%s, '%.*s'", out, (int)n, p) : vm_strdup_printf("%s, \"'\"", out);
    free(out);
    out = next;
    p += n ? n : 1;
  }
  char *done = vm_strdup_printf("%s)", out);
  free(out);
  return done;
}

char *vm_xml_prop(xmlNodePtr node, const char *name)
{
  xmlChar *v = xmlGetProp(node, BAD_CAST name);
  if (!v) return NULL;
  char *s = strdup((const char *)v);
  xmlFree(v);
  return s;
}

xmlNodePtr vm_xml_child(xmlNodePtr parent, const char *name, const char *text)
{
  /* xmlNewTextChild escapes the text, so names and paths with any characters
   * come out as well-formed XML. */
  return xmlNewTextChild(parent, NULL, BAD_CAST name, text ? BAD_CAST text : NULL);
}

void vm_xml_set(xmlNodePtr node, const char *attr, const char *value)
{
  xmlSetProp(node, BAD_CAST attr, BAD_CAST value);
}

void vm_xml_setf(xmlNodePtr node, const char *attr, const char *fmt, ...)
{
  char buf[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  xmlSetProp(node, BAD_CAST attr, BAD_CAST buf);
}

char *vm_xml_node_dump(xmlNodePtr node)
{
  xmlBufferPtr b = xmlBufferCreate();
  if (!b) return NULL;
  char *out = xmlNodeDump(b, node->doc, node, 0, 1) >= 0 ? vm_strdup((const char *)xmlBufferContent(b)) : NULL;
  xmlBufferFree(b);
  return out;
}

char *vm_xml_dump(xmlDocPtr doc)
{
  xmlChar *mem = NULL;
  int len = 0;
  xmlDocDumpFormatMemoryEnc(doc, &mem, &len, "UTF-8", 1);
  if (!mem) return NULL;
  /* Skip the <?xml ...?> declaration: libvirt and virsh show definitions without it. */
  const char *start = (const char *)mem;
  if (strncmp(start, "<?xml", 5) == 0) {
    const char *e = strstr(start, "?>");
    if (e) start = e + 2;
    while (*start == '\n') start++;
  }
  char *s = strdup(start);
  xmlFree(mem);
  return s;
}

xmlNodePtr vm_xml_find(xmlNodePtr parent, const char *name)
{
  for (xmlNodePtr c = parent ? parent->children : NULL; c; c = c->next)
    if (c->type == XML_ELEMENT_NODE && xmlStrcmp(c->name, BAD_CAST name) == 0) return c;
  return NULL;
}
