/* Programs run inside a guest through its QEMU guest agent (guest-exec and
 * guest-exec-status, as libvirt passes them): an argv, never a shell string,
 * its exit code and its output, for health checks after a change. */
#include <libvirt/libvirt-qemu.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#include "vmkit-virt.h"

/* A reply's "return" member, or NULL (the reply is then freed by the caller). */
static json_object *agent_return(json_object *reply)
{
  json_object *ret;
  return reply && json_object_object_get_ex(reply, "return", &ret) ? ret : NULL;
}

/* base64 as the agent sends out-data, decoded and NUL-terminated. */
static char *b64_decode(const char *s)
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
        const char *o = json_object_object_get_ex(sr, "out-data", &v) ? json_object_get_string(v) : "";
        *out = b64_decode(o ? o : "");
      }
      return 0;
    }
    if (vm_now_ms() >= deadline)
      return vm_fail(VM_EXIT_TIMEOUT, "%s in VM '%s' did not end within %d s", argv[0], virDomainGetName(dom),
                     timeout_s);
    vm_sleep_ms(500);
  }
}
