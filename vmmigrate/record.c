/* Records of moves under way, so that the next vmmigrate run finishes or rolls
 * back what a killed one left: one JSON file per VM on the machine that runs
 * vmmigrate (${VMKIT_STATE_DIR:-/var/lib/vmkit}/migrations/UUID.json), written
 * before anything is made on the destination and removed when the move ends.
 * The next move of the same VM (it holds the VM's lock) reads it first.
 * A live move's data path is libvirt's, which goes on (or fails) without us; the
 * record says which destination volumes the run planned to make and which source
 * volumes a finished move leaves, and the next run looks where the VM is now:
 *  - on the destination (and gone from the source, or kept with --keep-source, or
 *    an offline copy whose digests matched): finish: remove the source's copied
 *    images and definition as the move would have;
 *  - still on the source: roll back: remove the destination's half-made
 *    definition and the volumes the record lists (never one a VM there uses). */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vmmigrate.h"

static char *records_dir(void)
{
  const char *base = getenv("VMKIT_STATE_DIR");
  return vm_strdup_printf("%s/migrations", base && *base ? base : "/var/lib/vmkit");
}

static char *record_path(const char *uuid)
{
  CLEANUP_FREE char *dir = records_dir();
  return vm_strdup_printf("%s/%s.json", dir, uuid);
}

int record_write(struct move *m, const char *phase)
{
  CLEANUP_FREE char *dir = records_dir();
  CLEANUP_FREE char *parent = vm_strdup(dir);
  *strrchr(parent, '/') = '\0';
  mkdir(parent, 0755);
  if (mkdir(dir, 0700) < 0 && errno != EEXIST) return vm_fail_errno(VM_EXIT_FAIL, "cannot make %s", dir);
  json_object *o = json_object_new_object();
  json_object_object_add(o, "vm", json_object_new_string(m->name));
  json_object_object_add(o, "uuid", json_object_new_string(m->uuid));
  json_object_object_add(o, "pid", json_object_new_int((int)getpid()));
  json_object_object_add(o, "machine", json_object_new_string(vm_machine_id()));
  json_object_object_add(o, "source", json_object_new_string(m->src.uri ? m->src.uri : ""));
  json_object_object_add(o, "dest", json_object_new_string(m->dst.uri));
  json_object_object_add(o, "phase", json_object_new_string(phase));
  json_object_object_add(o, "keep_source", json_object_new_boolean(mo.keep_source));
  json_object *dp = json_object_new_array(), *sp = json_object_new_array();
  for (size_t i = 0; i < m->ndisks; i++) {
    struct mdisk *d = &m->disks[i];
    if (d->how == D_SHARED) continue;
    for (size_t k = 0; k < d->copy_chain.n; k++) json_object_array_add(dp, json_object_new_string(d->copy_chain.v[k]));
    json_object_array_add(dp, json_object_new_string(d->dst_path));
    json_object_array_add(sp, json_object_new_string(d->src_path));
  }
  json_object_object_add(o, "dest_volumes", dp);
  json_object_object_add(o, "source_volumes", sp);
  const char *text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY);
  CLEANUP_FREE char *path = record_path(m->uuid);
  int rc = vm_write_file_atomic(path, text, strlen(text), 0600) < 0
             ? vm_fail_errno(VM_EXIT_FAIL, "cannot write %s", path) : 0;
  json_object_put(o);
  return rc;
}

void record_remove(struct move *m)
{
  CLEANUP_FREE char *path = record_path(m->uuid);
  unlink(path);
}

static const char *jstr(json_object *o, const char *k)
{
  json_object *v = json_object_object_get(o, k);
  return v ? json_object_get_string(v) : NULL;
}

/* Removes the volumes of a list on a host, unless a VM there uses one. */
static void remove_unused(virConnectPtr conn, json_object *list, const char *except)
{
  for (size_t i = json_object_array_length(list); i-- > 0;) {
    const char *p = json_object_get_string(json_object_array_get_idx(list, i));
    struct vm_strv users = { 0 };
    if (!vm_path_exists(conn, p)) continue;
    if (vm_image_users(conn, p, except, &users) == 0 && users.n == 0) {
      if (vm_path_delete(conn, p) == 0) vm_info("removed %s, left by a killed move, from %s", p, vm_conn_host_name(conn));
    }
    vm_strv_free(&users);
  }
}

static void recover_one(const char *path, json_object *o)
{
  const char *name = jstr(o, "vm"), *uuid = jstr(o, "uuid"), *src = jstr(o, "source"), *dst = jstr(o, "dest");
  const char *phase = jstr(o, "phase"), *machine = jstr(o, "machine");
  json_object *pidv = json_object_object_get(o, "pid");
  int pid = pidv ? json_object_get_int(pidv) : 0;
  if (!name || !uuid || !dst || !phase) {
    vm_warn("ignoring %s: not a move record", path);
    return;
  }
  /* A run of this machine that still lives is still moving it. */
  if (machine && strcmp(machine, vm_machine_id()) == 0 && pid > 0 && (kill(pid, 0) == 0 || errno != ESRCH)) return;
  CLEANUP_VIRCONN virConnectPtr sc = vm_connect_to(src && *src ? src : NULL);
  CLEANUP_VIRCONN virConnectPtr dc = sc ? vm_connect_to(dst) : NULL;
  if (!sc || !dc) {
    vm_warn("a killed move of '%s' left work on the way; a later run finishes it when both hosts answer", name);
    return;
  }
  if (vm_lock_domain_uuid(sc, uuid, name) != 0) return;
  CLEANUP_VIRDOMAIN virDomainPtr sd = virDomainLookupByUUIDString(sc, uuid);
  CLEANUP_VIRDOMAIN virDomainPtr dd = virDomainLookupByUUIDString(dc, uuid);
  virResetLastError();
  /* libvirt may still be carrying out a live move a killed run started. */
  if (sd && vm_domain_idle(sd, "recover") != 0) {
    vm_warn("a move of '%s' started by a killed run is still running; a later run finishes it", name);
    return;
  }
  virResetLastError();
  bool keep = json_object_get_boolean(json_object_object_get(o, "keep_source"));
  bool moved;
  if (strcmp(phase, "live") == 0)
    moved = dd && virDomainIsPersistent(dd) == 1 && (!sd || virDomainIsActive(sd) != 1);
  else
    moved = dd && strcmp(phase, "offline-verified") == 0;
  if (moved) {
    if (sd && !keep && virDomainIsActive(sd) != 1) {
      virDomainUndefineFlags(sd, VIR_DOMAIN_UNDEFINE_NVRAM);
      virResetLastError();
    }
    if (!keep) remove_unused(sc, json_object_object_get(o, "source_volumes"), NULL);
    vm_info("finished the move of '%s' to %s that a killed run left", name, vm_conn_host_name(dc));
  } else {
    if (dd && virDomainIsActive(dd) != 1 && strncmp(phase, "offline", 7) == 0 && sd) {
      virDomainUndefineFlags(dd, VIR_DOMAIN_UNDEFINE_NVRAM);
      virResetLastError();
    }
    remove_unused(dc, json_object_object_get(o, "dest_volumes"), NULL);
    vm_info("rolled back the move of '%s' to %s that a killed run left", name, vm_conn_host_name(dc));
  }
  unlink(path);
}

void record_recover(const char *uuid)
{
  CLEANUP_FREE char *path = record_path(uuid);
  CLEANUP_FREE char *text = vm_read_file(path, 1 << 20, NULL);
  if (!text) return;
  json_object *o = json_tokener_parse(text);
  if (o && json_object_is_type(o, json_type_object)) recover_one(path, o);
  else vm_warn("ignoring %s: not a move record", path);
  json_object_put(o);
}

void record_recover_name(const char *name)
{
  CLEANUP_FREE char *dir = records_dir();
  DIR *d = opendir(dir);
  if (!d) return;
  struct dirent *e;
  while ((e = readdir(d))) {
    size_t n = strlen(e->d_name);
    if (n != 41 || strcmp(e->d_name + 36, ".json") != 0) continue;
    CLEANUP_FREE char *path = vm_strdup_printf("%s/%s", dir, e->d_name);
    CLEANUP_FREE char *text = vm_read_file(path, 1 << 20, NULL);
    json_object *o = text ? json_tokener_parse(text) : NULL;
    const char *vm = o ? jstr(o, "vm") : NULL;
    if (vm && strcmp(vm, name) == 0) recover_one(path, o);
    json_object_put(o);
  }
  closedir(d);
}
