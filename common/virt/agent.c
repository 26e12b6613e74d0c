/* Programs run inside a guest through its QEMU guest agent (guest-exec and
 * guest-exec-status, as libvirt passes them): an argv, never a shell string,
 * its exit code and its output, for health checks after a change. */
#include <libvirt/libvirt-qemu.h>
#include <errno.h>
#include <openssl/evp.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

#include "vmkit-virt.h"

/* A reply's "return" member, or NULL (the reply is then freed by the caller). */
static json_object *agent_return(json_object *reply)
{
  json_object *ret;
  return reply && json_object_object_get_ex(reply, "return", &ret) ? ret : NULL;
}

/* base64 as the agent sends out-data, decoded and NUL-terminated; *len its
 * length (a NUL in it ends it for C strings). */
static char *b64_decode(const char *s, size_t *lenp)
{
  size_t n = strlen(s);
  unsigned char *out = malloc(n / 4 * 3 + 4);
  if (!out) abort();
  int len = n ? EVP_DecodeBlock(out, (const unsigned char *)s, (int)n) : 0;
  if (len < 0) len = 0;
  /* EVP_DecodeBlock counts the padding's zero bytes. */
  while (n && s[n - 1] == '=' && len > 0) {
    n--;
    len--;
  }
  out[len] = '\0';
  *lenp = (size_t)len;
  return (char *)out;
}

int vm_agent_exec(virDomainPtr dom, char *const argv[], int timeout_s, int *exit_code, char **out)
{
  *exit_code = -1;
  if (out) *out = NULL;
  json_object *cmd = json_object_new_object(), *args = json_object_new_object(), *av = json_object_new_array();
  for (size_t i = 1; argv[i]; i++) json_object_array_add(av, json_object_new_string(argv[i]));
  json_object_object_add(args, "path", json_object_new_string(argv[0]));
  json_object_object_add(args, "arg", av);
  json_object_object_add(args, "capture-output", json_object_new_boolean(out != NULL));
  json_object_object_add(cmd, "execute", json_object_new_string("guest-exec"));
  json_object_object_add(cmd, "arguments", args);
  char *r = virDomainQemuAgentCommand(dom, json_object_to_json_string(cmd), 10, 0);
  json_object_put(cmd);
  if (!r) return vm_fail_virt("cannot run %s in VM '%s' through its agent", argv[0], virDomainGetName(dom));
  CLEANUP_JSON json_object *reply = json_tokener_parse(r);
  free(r);
  json_object *ret = agent_return(reply), *jpid;
  if (!ret || !json_object_object_get_ex(ret, "pid", &jpid))
    return vm_fail(VM_EXIT_FAIL, "cannot run %s in VM '%s': its agent's reply has no pid", argv[0],
                   virDomainGetName(dom));
  int64_t pid = json_object_get_int64(jpid);
  int64_t deadline = vm_now_ms() + (int64_t)timeout_s * 1000;
  CLEANUP_FREE char *status = vm_strdup_printf(
    "{\"execute\":\"guest-exec-status\",\"arguments\":{\"pid\":%lld}}", (long long)pid);
  for (;;) {
    if (vm_interrupted()) return vm_fail_interrupted();
    r = virDomainQemuAgentCommand(dom, status, 10, 0);
    if (!r) return vm_fail_virt("cannot follow %s in VM '%s'", argv[0], virDomainGetName(dom));
    CLEANUP_JSON json_object *st = json_tokener_parse(r);
    free(r);
    json_object *sr = agent_return(st), *v;
    if (sr && json_object_object_get_ex(sr, "exited", &v) && json_object_get_boolean(v)) {
      if (json_object_object_get_ex(sr, "exitcode", &v)) *exit_code = json_object_get_int(v);
      else if (json_object_object_get_ex(sr, "signal", &v)) *exit_code = 128 + json_object_get_int(v);
      if (out) {
        /* Output cut short by the agent (16 MiB at most), or with a NUL in
         * it, would pass for a whole text. */
        if (json_object_object_get_ex(sr, "out-truncated", &v) && json_object_get_boolean(v))
          return vm_fail(VM_EXIT_FAIL, "the output of %s in VM '%s' is too large (its agent cut it short)", argv[0],
                         virDomainGetName(dom));
        const char *o = json_object_object_get_ex(sr, "out-data", &v) ? json_object_get_string(v) : "";
        size_t len;
        *out = b64_decode(o ? o : "", &len);
        if (strlen(*out) != len) {
          free(*out);
          *out = NULL;
          return vm_fail(VM_EXIT_FAIL, "the output of %s in VM '%s' has a NUL byte", argv[0], virDomainGetName(dom));
        }
      }
      return 0;
    }
    if (vm_now_ms() >= deadline)
      return vm_fail(VM_EXIT_TIMEOUT, "%s in VM '%s' did not end within %d s", argv[0], virDomainGetName(dom),
                     timeout_s);
    vm_sleep_ms(500);
  }
}

/* One agent command built with json-c; its "return" member handed back (the
 * reply in *reply, for the caller to free), or NULL after a message. */
static json_object *agent_call(virDomainPtr dom, json_object *cmd, json_object **reply, const char *what,
                               const char *path)
{
  char *r = virDomainQemuAgentCommand(dom, json_object_to_json_string(cmd), 30, 0);
  json_object_put(cmd);
  *reply = NULL;
  if (!r) {
    vm_fail_virt("cannot %s %s in VM '%s' through its agent", what, path, virDomainGetName(dom));
    return NULL;
  }
  *reply = json_tokener_parse(r);
  free(r);
  json_object *ret = agent_return(*reply);
  if (!ret) vm_fail(VM_EXIT_FAIL, "cannot %s %s in VM '%s': its agent's reply has no result", what, path,
                    virDomainGetName(dom));
  return ret;
}

static json_object *agent_cmd(const char *execute, json_object *args)
{
  json_object *cmd = json_object_new_object();
  json_object_object_add(cmd, "execute", json_object_new_string(execute));
  json_object_object_add(cmd, "arguments", args);
  return cmd;
}

/* What is written: from memory, or from a descriptor. */
struct source {
  const char *data;
  size_t len, off;
  int fd;
};

/* The next piece (at most max bytes) into buf: its length, 0 at the end, -1 on error. */
static ssize_t next_piece(struct source *s, char *buf, size_t max)
{
  if (s->fd < 0) {
    size_t n = s->len - s->off < max ? s->len - s->off : max;
    memcpy(buf, s->data + s->off, n);
    s->off += n;
    return (ssize_t)n;
  }
  size_t got = 0;
  while (got < max) {
    ssize_t r = read(s->fd, buf + got, max - got);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return -1;
    if (r == 0) break;
    got += (size_t)r;
  }
  return (ssize_t)got;
}

static int write_from(virDomainPtr dom, const char *path, struct source *src);

int vm_agent_write_file(virDomainPtr dom, const char *path, const char *data, size_t len)
{
  struct source s = { data, len, 0, -1 };
  return write_from(dom, path, &s);
}

int vm_agent_write_fd(virDomainPtr dom, const char *path, int fd)
{
  struct source s = { NULL, 0, 0, fd };
  return write_from(dom, path, &s);
}

static int write_from(virDomainPtr dom, const char *path, struct source *src)
{
  json_object *args = json_object_new_object(), *reply = NULL;
  json_object_object_add(args, "path", json_object_new_string(path));
  json_object_object_add(args, "mode", json_object_new_string("w"));
  json_object *ret = agent_call(dom, agent_cmd("guest-file-open", args), &reply, "create", path);
  if (!ret) {
    json_object_put(reply);
    return VM_EXIT_FAIL;
  }
  int64_t handle = json_object_get_int64(ret);
  json_object_put(reply);
  int rc = 0;
  enum { PIECE = (1 << 20) / 3 * 3 };
  CLEANUP_FREE char *b64 = malloc(PIECE / 3 * 4 + 8);
  CLEANUP_FREE char *raw = malloc(PIECE);
  if (!b64 || !raw) abort();
  while (rc == 0) {
    if (vm_interrupted()) {
      rc = vm_fail_interrupted();
      break;
    }
    ssize_t got = next_piece(src, raw, PIECE);
    if (got < 0) {
      rc = vm_fail_errno(VM_EXIT_FAIL, "cannot read what goes to %s in VM '%s'", path, virDomainGetName(dom));
      break;
    }
    if (got == 0) break;
    size_t n = (size_t)got;
    EVP_EncodeBlock((unsigned char *)b64, (const unsigned char *)raw, (int)n);
    args = json_object_new_object();
    json_object_object_add(args, "handle", json_object_new_int64(handle));
    json_object_object_add(args, "buf-b64", json_object_new_string(b64));
    ret = agent_call(dom, agent_cmd("guest-file-write", args), &reply, "write", path);
    json_object *v;
    int64_t wrote = ret && json_object_object_get_ex(ret, "count", &v) ? json_object_get_int64(v) : -1;
    json_object_put(reply);
    if (!ret) rc = VM_EXIT_FAIL;
    else if (wrote != (int64_t)n)
      rc = vm_fail(VM_EXIT_FAIL, "cannot write %s in VM '%s': its agent wrote %lld of %zu bytes", path,
                   virDomainGetName(dom), (long long)wrote, n);
  }
  args = json_object_new_object();
  json_object_object_add(args, "handle", json_object_new_int64(handle));
  if (rc) vm_errors_mute(true);
  ret = agent_call(dom, agent_cmd("guest-file-close", args), &reply, "close", path);
  if (rc) vm_errors_mute(false);
  json_object_put(reply);
  if (!ret && rc == 0) rc = VM_EXIT_FAIL;
  return rc;
}
