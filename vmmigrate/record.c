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
  /* The URIs as libvirt resolved them: a later run may have another default. */
  CLEANUP_FREE char *su = virConnectGetURI(m->src.conn);
  CLEANUP_FREE char *du = virConnectGetURI(m->dst.conn);
  virResetLastError();
  json_object_object_add(o, "source", json_object_new_string(su ? su : m->src.uri ? m->src.uri : ""));
  json_object_object_add(o, "dest", json_object_new_string(du ? du : m->dst.uri ? m->dst.uri : ""));
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

/* Removes the volumes of a list on a host, unless a VM there uses one; returns how
 * many could not be removed. */
static int remove_unused(virConnectPtr conn, json_object *list)
{
  int left = 0;
  for (size_t i = json_object_array_length(list); i-- > 0;) {
    const char *p = json_object_get_string(json_object_array_get_idx(list, i));
    if (!p || !vm_path_exists(conn, p)) continue;
    struct vm_strv users = { 0 };
    if (vm_image_users(conn, p, NULL, &users) == 0 && users.n == 0) {
      if (vm_path_delete(conn, p) == 0) vm_info("removed %s, left by an earlier move, from %s", p, vm_conn_host_name(conn));
      else left++;
    }
    vm_strv_free(&users);
  }
  return left;
}

static json_object *jarray(json_object *o, const char *k)
{
  json_object *v = json_object_object_get(o, k);
  return v && json_object_is_type(v, json_type_array) ? v : NULL;
}

static void recover_one(const char *path, json_object *o)
{
  const char *name = jstr(o, "vm"), *uuid = jstr(o, "uuid"), *src = jstr(o, "source"), *dst = jstr(o, "dest");
  const char *phase = jstr(o, "phase"), *machine = jstr(o, "machine");
  json_object *dvols = jarray(o, "dest_volumes"), *svols = jarray(o, "source_volumes");
  if (!name || !uuid || !src || !*src || !dst || !*dst || !phase || !dvols || !svols) {
    vm_warn("ignoring %s: not a move record", path);
    return;
  }
  /* Another machine's run keeps its own records; this one's, the VM's lock says
   * whether its writer still lives (a run that holds the lock is moving it). */
  if (machine && strcmp(machine, vm_machine_id()) != 0) {
    vm_warn("%s is a record of another machine's move of '%s': left alone", path, name);
    return;
  }
  if (strcmp(phase, "postcopy-failed") == 0) {
    vm_warn("a post-copy move of '%s' failed earlier and may have lost it: check %s and %s, then remove %s", name, src,
            dst, path);
    return;
  }
  CLEANUP_VIRCONN virConnectPtr sc = virConnectOpen(src);
  CLEANUP_VIRCONN virConnectPtr dc = sc ? virConnectOpen(dst) : NULL;
  virResetLastError();
  if (!sc || !dc) {
    vm_warn("an earlier move of '%s' left work on the way; a later run finishes it when both hosts answer", name);
    return;
  }
  if (vm_lock_domain_uuid(sc, uuid, name) != 0 || vm_lock_domain_uuid(dc, uuid, name) != 0) return;
  CLEANUP_VIRDOMAIN virDomainPtr sd = virDomainLookupByUUIDString(sc, uuid);
  CLEANUP_VIRDOMAIN virDomainPtr dd = virDomainLookupByUUIDString(dc, uuid);
  virResetLastError();
  /* libvirt may still be carrying out a live move an earlier run started. */
  vm_errors_mute(true);
  bool busy = sd && vm_domain_idle(sd, "recover") != 0;
  vm_errors_mute(false);
  virResetLastError();
  if (busy) {
    vm_warn("a move of '%s' that an earlier run started still runs in libvirt on %s; wait for it, or abort it "
            "(virsh domjobabort), then run vmmigrate again", name, vm_conn_host_name(sc));
    return;
  }
  bool keep = json_object_get_boolean(json_object_object_get(o, "keep_source"));
  bool src_runs = sd && virDomainIsActive(sd) == 1;
  bool moved;
  if (strcmp(phase, "live") == 0)
    moved = dd && virDomainIsPersistent(dd) == 1 && !src_runs;
  else
    moved = dd && strcmp(phase, "offline-verified") == 0 && !src_runs;
  int left = 0;
  if (moved) {
    if (sd && !keep && !src_runs) {
      virDomainUndefine(sd);
      virResetLastError();
    }
    if (!keep) left = remove_unused(sc, svols);
    vm_info("finished the move of '%s' to %s that an earlier run left", name, vm_conn_host_name(dc));
  } else if (sd) {
    if (dd && virDomainIsActive(dd) != 1 && strncmp(phase, "offline", 7) == 0) {
      virDomainUndefine(dd);
      virResetLastError();
    }
    left = remove_unused(dc, dvols);
    vm_info("rolled back the move of '%s' to %s that an earlier run left", name, vm_conn_host_name(dc));
  } else {
    /* On neither host (moved on since?): nothing is removed on a guess. */
    vm_warn("an earlier move of '%s' left %s, but the VM is on neither %s nor %s: left alone", name, path,
            vm_conn_host_name(sc), vm_conn_host_name(dc));
    return;
  }
  if (left == 0) unlink(path);
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
