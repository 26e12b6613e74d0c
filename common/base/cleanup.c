/* The base layer's cleanup functions: memory, files, json-c objects, popt. */
#include <unistd.h>
#include <json-c/json.h>
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

void vm_cleanup_json(void *ptr)
{
  json_object *j = *(json_object **)ptr;
  if (j) json_object_put(j);
}

void vm_cleanup_popt(void *ptr)
{
  poptContext c = *(poptContext *)ptr;
  if (c) poptFreeContext(c);
}
