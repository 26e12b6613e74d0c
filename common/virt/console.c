/* A VM's serial console, read for a line of text: from the log file virtlogd
 * writes (a local host), or from libvirt's console stream (any host); and the
 * guest agent's ping. Shared by vmrun wait and p2v-convert --boot-test. */
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libvirt/libvirt-qemu.h>

#include "vmkit-virt.h"

char *vm_console_log_path(xmlDocPtr doc)
{
  CLEANUP_XPATHCTX xmlXPathContextPtr ctx = vm_xpath_ctx(doc);
  char *p = vm_xpath_str(ctx, "/domain/devices/serial[1]/log/@file");
  if (!p) p = vm_xpath_str(ctx, "/domain/devices/serial[@type='file'][1]/source/@path");
  return p;
}

bool vm_follow_scan(struct vm_follower *f, const char *buf, size_t n, const char *text)
{
  for (size_t i = 0; i < n; i++) {
    if (buf[i] == '\n' || f->plen == sizeof f->partial - 1) {
      f->partial[f->plen] = '\0';
      f->plen = 0;
      if (strstr(f->partial, text)) return true;
    }
    if (buf[i] != '\n' && buf[i] != '\0') f->partial[f->plen++] = buf[i];
  }
  f->partial[f->plen] = '\0';
  /* A last line without its newline yet (a prompt) counts too. */
  return f->plen && strstr(f->partial, text);
}

bool vm_follow_stream(virStreamPtr st, struct vm_follower *f, const char *text, bool *gone)
{
  char buf[4096];
  for (;;) {
    int r = virStreamRecv(st, buf, sizeof buf);
    if (r == -2) return false; /* nothing now */
    if (r <= 0) {
      *gone = true; /* the guest went away, or the console was taken */
      virResetLastError();
      return false;
    }
    if (f->sink) f->sink(f->sink_arg, buf, (size_t)r);
    if (vm_follow_scan(f, buf, (size_t)r, text)) return true;
  }
}

bool vm_follow_log(struct vm_follower *f, const char *text)
{
  CLEANUP_CLOSE int fd = open(f->path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  struct stat st;
  if (fstat(fd, &st) < 0) return false;
  /* The log is truncated when QEMU starts again: then it is read from its start. */
  if (st.st_size < f->offset) f->offset = 0, f->plen = 0;
  if (lseek(fd, f->offset, SEEK_SET) < 0) return false;
  char buf[8192];
  ssize_t r;
  while ((r = read(fd, buf, sizeof buf)) > 0) {
    f->offset += r;
    if (f->sink) f->sink(f->sink_arg, buf, (size_t)r);
    if (vm_follow_scan(f, buf, (size_t)r, text)) return true;
  }
  return f->plen && strstr(f->partial, text);
}

bool vm_agent_answers(virDomainPtr dom)
{
  char *r = virDomainQemuAgentCommand(dom, "{\"execute\":\"guest-ping\"}", 2, 0);
  free(r);
  return r != NULL;
}
