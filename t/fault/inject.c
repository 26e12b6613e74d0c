/* A fault injector for tests, preloaded into a tool (LD_PRELOAD): it makes chosen
 * libvirt calls fail or wait, so that a test can reach a failure or an instant the
 * real components give only rarely. It only adds to tests that run the real
 * libvirtd and guests; it replaces nothing.
 *
 * VMKIT_INJECT holds rules separated by ';':
 *   virDomainGetMetadata:fail:NAMESPACE-URI   fail reads of that namespace
 *   virDomainSnapshotCreateXML:delay:MS       wait before the real call
 *   virDomainSetBlockIoTune:fail              fail every call
 *   virDomainBlockJobAbort:delay:MS           wait before a pivot or cancel
 *   virDomainMigrateToURI3:delay:MS           wait before a move starts (its record
 *                                             and destination volumes are made)
 *   virDomainDefineXMLFlags:delay:MS          wait before an offline move defines
 *                                             the copy (its disks are copied)
 *   virDomainUndefine:delay:MS                wait before an offline move lets go
 *                                             of the source (the copy is verified)
 *   virStorageVolDownload:delay:MS@N          wait before the Nth read of a volume;
 *                                             of the volume VMKIT_INJECT_VOL names
 *                                             only, when set (an offline move of
 *                                             one disk: 1 the copy, 2 and 3 the
 *                                             digests)
 * When a delay starts and VMKIT_INJECT_MARK names a file, the file is created: the
 * test knows the tool is held there (and what came before is done).
 * A failing call fails the way libvirt does, with libvirt's own error set: the real
 * function is called with an argument libvirt refuses. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libvirt/libvirt.h>

/* The argument of the rule for fn and action, "" when it has none, NULL if none. */
static const char *rule(const char *fn, const char *action)
{
  static char arg[1024];
  const char *spec = getenv("VMKIT_INJECT");
  if (!spec) return NULL;
  size_t fl = strlen(fn), al = strlen(action);
  for (const char *p = spec; *p;) {
    const char *end = strchr(p, ';');
    size_t len = end ? (size_t)(end - p) : strlen(p);
    if (len > fl + al + 1 && strncmp(p, fn, fl) == 0 && p[fl] == ':' && strncmp(p + fl + 1, action, al) == 0 &&
        (len == fl + 1 + al || p[fl + 1 + al] == ':')) {
      size_t rest = len > fl + 2 + al ? len - (fl + 2 + al) : 0;
      if (rest >= sizeof arg) rest = sizeof arg - 1;
      memcpy(arg, p + fl + 2 + al, rest);
      arg[rest] = '\0';
      return arg;
    }
    if (len == fl + al + 1 && strncmp(p, fn, fl) == 0 && strncmp(p + fl + 1, action, al) == 0) return "";
    p += len + (end ? 1 : 0);
  }
  return NULL;
}

/* Waits as long as a "FN:delay:MS" rule says, if there is one; "FN:delay:MS@N"
 * waits at the Nth call only (calls counts this process's calls of FN). */
static void delay_call(const char *fn, int *calls)
{
  const char *arg = rule(fn, "delay");
  int n = ++*calls;
  long ms = arg && *arg ? atol(arg) : 0;
  const char *at = arg ? strchr(arg, '@') : NULL;
  if (at && atoi(at + 1) != n) ms = 0;
  const char *mark = getenv("VMKIT_INJECT_MARK");
  if (ms > 0 && mark && *mark) {
    int fd = open(mark, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd >= 0) close(fd);
  }
  struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
  while (ms > 0 && nanosleep(&ts, &ts) != 0)
    ;
}
#define delay(fn)                                                                                                      \
  do {                                                                                                                 \
    static int calls_;                                                                                                 \
    delay_call(fn, &calls_);                                                                                           \
  } while (0)

char *virDomainGetMetadata(virDomainPtr dom, int type, const char *uri, unsigned int flags)
{
  char *(*real)(virDomainPtr, int, const char *, unsigned int) = dlsym(RTLD_NEXT, "virDomainGetMetadata");
  const char *ns = rule("virDomainGetMetadata", "fail");
  if (ns && (!*ns || (uri && strcmp(ns, uri) == 0))) return real(NULL, type, uri, flags); /* an invalid domain */
  return real(dom, type, uri, flags);
}

virDomainSnapshotPtr virDomainSnapshotCreateXML(virDomainPtr dom, const char *xml, unsigned int flags)
{
  virDomainSnapshotPtr (*real)(virDomainPtr, const char *, unsigned int) =
    dlsym(RTLD_NEXT, "virDomainSnapshotCreateXML");
  delay(__func__);
  return real(dom, xml, flags);
}

int virDomainSetBlockIoTune(virDomainPtr dom, const char *disk, virTypedParameterPtr params, int nparams,
                            unsigned int flags)
{
  int (*real)(virDomainPtr, const char *, virTypedParameterPtr, int, unsigned int) =
    dlsym(RTLD_NEXT, "virDomainSetBlockIoTune");
  if (rule("virDomainSetBlockIoTune", "fail")) return real(NULL, disk, params, nparams, flags);
  return real(dom, disk, params, nparams, flags);
}

int virDomainBlockJobAbort(virDomainPtr dom, const char *disk, unsigned int flags)
{
  int (*real)(virDomainPtr, const char *, unsigned int) = dlsym(RTLD_NEXT, "virDomainBlockJobAbort");
  delay(__func__);
  return real(dom, disk, flags);
}

int virDomainMigrateToURI3(virDomainPtr dom, const char *dconnuri, virTypedParameterPtr params,
                           unsigned int nparams, unsigned int flags)
{
  int (*real)(virDomainPtr, const char *, virTypedParameterPtr, unsigned int, unsigned int) =
    dlsym(RTLD_NEXT, "virDomainMigrateToURI3");
  delay(__func__);
  return real(dom, dconnuri, params, nparams, flags);
}

virDomainPtr virDomainDefineXMLFlags(virConnectPtr conn, const char *xml, unsigned int flags)
{
  virDomainPtr (*real)(virConnectPtr, const char *, unsigned int) = dlsym(RTLD_NEXT, "virDomainDefineXMLFlags");
  delay(__func__);
  return real(conn, xml, flags);
}

int virDomainUndefine(virDomainPtr dom)
{
  int (*real)(virDomainPtr) = dlsym(RTLD_NEXT, "virDomainUndefine");
  delay(__func__);
  return real(dom);
}

int virStorageVolDownload(virStorageVolPtr vol, virStreamPtr stream, unsigned long long offset,
                          unsigned long long length, unsigned int flags)
{
  int (*real)(virStorageVolPtr, virStreamPtr, unsigned long long, unsigned long long, unsigned int) =
    dlsym(RTLD_NEXT, "virStorageVolDownload");
  /* Only the reads of one volume count, when VMKIT_INJECT_VOL names it. */
  const char *only = getenv("VMKIT_INJECT_VOL");
  const char *name = only && *only ? virStorageVolGetName(vol) : NULL;
  if (!name || strcmp(name, only) == 0) delay(__func__);
  return real(vol, stream, offset, length, flags);
}
