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
  /* dest_volumes: what this run makes there; source_volumes: what a finished move
   * removes here (never a read-only disk or a CD-ROM's image: a library's);
   * copies: each copied file and its copy, to be compared again before a killed
   * offline move is finished. */
  json_object *dp = json_object_new_array(), *sp = json_object_new_array(), *cp = json_object_new_array();
  for (size_t i = 0; i < m->ndisks; i++) {
    struct mdisk *d = &m->disks[i];
    if (d->how == D_SHARED) continue;
    for (size_t k = 0; k < d->copy_chain.n; k++) json_object_array_add(dp, json_object_new_string(d->copy_chain.v[k]));
    json_object_array_add(dp, json_object_new_string(d->dst_path));
    if (!d->readonly) json_object_array_add(sp, json_object_new_string(d->src_path));
    for (size_t k = 0; k <= d->copy_chain.n; k++) {
      json_object *pair = json_object_new_array();
      json_object_array_add(pair, json_object_new_string(k ? d->copy_chain.v[k - 1] : d->src_path));
      json_object_array_add(pair, json_object_new_string(k ? d->copy_chain.v[k - 1] : d->dst_path));
      json_object_array_add(cp, pair);
    }
  }
  json_object_object_add(o, "dest_volumes", dp);
  json_object_object_add(o, "source_volumes", sp);
  json_object_object_add(o, "copies", cp);
  /* keys: the VM's disk keys, which a finished move removes here; dest_keys: those
   * the destination lacked, which this run defines there and a roll-back removes. */
  json_object *ks = json_object_new_array(), *dk = json_object_new_array();
  for (size_t i = 0; i < m->keys.n; i++) json_object_array_add(ks, json_object_new_string(m->keys.v[i]));
  for (size_t i = 0; i < m->keys_missing.n; i++) json_object_array_add(dk, json_object_new_string(m->keys_missing.v[i]));
  json_object_object_add(o, "keys", ks);
  json_object_object_add(o, "dest_keys", dk);
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
    } else {
      left++;
    }
    vm_strv_free(&users);
  }
  return left;
}

/* Removes the disk keys of a list from a host, unless a VM there names one. */
static void remove_unused_keys(virConnectPtr conn, json_object *list)
{
  for (size_t i = 0; list && i < json_object_array_length(list); i++) {
    const char *u = json_object_get_string(json_object_array_get_idx(list, i));
    if (u && !vm_secret_in_use(conn, u, NULL) && vm_secret_remove(conn, u, false) == 0)
      vm_debug("removed disk key %s, left by an earlier move, from %s", u, vm_conn_host_name(conn));
  }
}

static json_object *jarray(json_object *o, const char *k)
{
  json_object *v = json_object_object_get(o, k);
  return v && json_object_is_type(v, json_type_array) ? v : NULL;
}

/* Looks a VM up by UUID: 1 found, 0 surely not there, -1 unknown (an error that
 * is not "no such domain", read right after the call). */
static int lookup(virConnectPtr c, const char *uuid, virDomainPtr *d)
{
  *d = virDomainLookupByUUIDString(c, uuid);
  int rc = *d ? 1 : vm_virt_error_code() == VIR_ERR_NO_DOMAIN ? 0 : -1;
  virResetLastError();
  return rc;
}

/* Paused in the middle of a move (post-copy, or libvirt's own migration pause). */
static bool mid_move(virDomainPtr d)
{
  int st = 0, reason = 0;
  if (!d || virDomainGetState(d, &st, &reason, 0) < 0) return false;
  return st == VIR_DOMAIN_PAUSED && (reason == VIR_DOMAIN_PAUSED_POSTCOPY ||
                                     reason == VIR_DOMAIN_PAUSED_POSTCOPY_FAILED ||
                                     reason == VIR_DOMAIN_PAUSED_MIGRATION);
}

/* The copies of a killed offline move, compared again: the source may have run
 * and changed since the digests matched. */
static bool copies_match(virConnectPtr sc, virConnectPtr dc, json_object *copies)
{
  for (size_t i = 0; copies && i < json_object_array_length(copies); i++) {
    json_object *pair = json_object_array_get_idx(copies, i);
    if (!json_object_is_type(pair, json_type_array) || json_object_array_length(pair) != 2) return false;
    const char *a = json_object_get_string(json_object_array_get_idx(pair, 0));
    const char *b = json_object_get_string(json_object_array_get_idx(pair, 1));
    char da[65], db[65];
    if (!a || !b || vol_digest(sc, a, da) != 0 || vol_digest(dc, b, db) != 0 || strcmp(da, db) != 0) return false;
  }
  return true;
}

/* 0: the record is dealt with (removed); 1: it stays, and the move must wait. */
static int recover_one(const char *path, json_object *o, const char *text)
{
  const char *name = jstr(o, "vm"), *uuid = jstr(o, "uuid"), *src = jstr(o, "source"), *dst = jstr(o, "dest");
  const char *phase = jstr(o, "phase"), *machine = jstr(o, "machine");
  json_object *dvols = jarray(o, "dest_volumes"), *svols = jarray(o, "source_volumes"), *copies = jarray(o, "copies");
  if (!name || !uuid || !src || !*src || !dst || !*dst || !phase || !dvols || !svols) {
    vm_warn("%s is not a move record: left alone", path);
    return 1;
  }
  /* Another machine's run keeps its own records; this one's, the VM's lock says
   * whether its writer still lives (a run that holds the lock is moving it). */
  if (machine && strcmp(machine, vm_machine_id()) != 0) {
    vm_warn("%s is a record of another machine's move of '%s': left alone", path, name);
    return 1;
  }
  if (strcmp(phase, "started-there") == 0) {
    vm_warn("the copy of '%s' on %s was started during an offline move that then failed: both hosts have it; a "
            "person must look, then remove %s", name, dst, path);
    return 1;
  }
  if (strcmp(phase, "postcopy-failed") == 0) {
    vm_warn("a post-copy move of '%s' failed earlier and may have lost it: check %s and %s, then remove %s", name, src,
            dst, path);
    return 1;
  }
  CLEANUP_VIRCONN virConnectPtr sc = virConnectOpen(src);
  CLEANUP_VIRCONN virConnectPtr dc = sc ? virConnectOpen(dst) : NULL;
  virResetLastError();
  if (!sc || !dc) {
    vm_warn("an earlier move of '%s' left work on the way (%s); it is finished when both hosts answer (if %s is "
            "gone for good and the VM does not run there, remove that file)", name, path, sc ? dst : src);
    return 1;
  }
  if (vm_lock_domain_uuid(sc, uuid, name) != 0 || vm_lock_domain_uuid(dc, uuid, name) != 0) return 1;
  /* Read again under the locks: a run that held them meanwhile may have settled
   * the record, or written a newer move's. */
  CLEANUP_FREE char *now = vm_read_file(path, 1 << 20, NULL);
  if (!now && access(path, F_OK) != 0 && errno == ENOENT) return 0;
  if (!now) {
    vm_warn("cannot read %s again: %s", path, vm_last_error());
    return 1;
  }
  if (strcmp(now, text) != 0) {
    vm_warn("the record of an earlier move of '%s' changed while this run waited for its lock (%s): run again", name,
            path);
    return 1;
  }
  CLEANUP_VIRDOMAIN virDomainPtr sd = NULL;
  CLEANUP_VIRDOMAIN virDomainPtr dd = NULL;
  int sk = lookup(sc, uuid, &sd), dk = lookup(dc, uuid, &dd);
  if (sk < 0 || dk < 0) {
    vm_warn("cannot tell where '%s' is (%s): its earlier move stays unfinished", name, path);
    return 1;
  }
  /* libvirt may still be carrying out a live move an earlier run started. */
  vm_errors_mute(true);
  bool busy = sd && vm_domain_idle(sd, "recover") != 0;
  vm_errors_mute(false);
  virResetLastError();
  if (busy) {
    vm_warn("a move of '%s' that an earlier run started still runs in libvirt on %s; wait for it, or abort it "
            "(virsh domjobabort), then run vmmigrate again", name, vm_conn_host_name(sc));
    return 1;
  }
  /* A source that libvirt left paused for a failed move, which the destination
   * does not have: the move did not happen, and the guest is resumed. */
  int sst = 0, sreason = 0;
  if (sd && !dd && virDomainGetState(sd, &sst, &sreason, 0) == 0 && sst == VIR_DOMAIN_PAUSED &&
      sreason == VIR_DOMAIN_PAUSED_MIGRATION) {
    if (virDomainResume(sd) == 0) vm_info("resumed '%s' on %s, left paused by an earlier move", name, vm_conn_host_name(sc));
    virResetLastError();
  }
  if (mid_move(sd) || mid_move(dd)) {
    vm_warn("'%s' is paused in the middle of a move (post-copy?) between %s and %s: a person must look (%s)", name,
            vm_conn_host_name(sc), vm_conn_host_name(dc), path);
    return 1;
  }
  bool keep = json_object_get_boolean(json_object_object_get(o, "keep_source"));
  bool src_runs = sd && virDomainIsActive(sd) == 1, dst_runs = dd && virDomainIsActive(dd) == 1;
  if (src_runs && dst_runs) {
    vm_warn("'%s' runs on both %s and %s: a person must look (%s)", name, vm_conn_host_name(sc),
            vm_conn_host_name(dc), path);
    return 1;
  }
  bool moved;
  if (strcmp(phase, "live") == 0)
    moved = dd && virDomainIsPersistent(dd) == 1 && !src_runs;
  else
    moved = dd && strcmp(phase, "offline-verified") == 0 && !src_runs && (!sd || copies_match(sc, dc, copies));
  int left = 0;
  if (moved) {
    if (sd && !keep && virDomainUndefine(sd) < 0) {
      vm_warn("cannot remove the definition of '%s' from %s: its earlier move stays unfinished: %s", name,
              vm_conn_host_name(sc), vm_virt_message());
      virResetLastError();
      return 1;
    }
    if (!keep) left = remove_unused(sc, svols);
    if (!keep) remove_unused_keys(sc, jarray(o, "keys"));
    vm_info("finished the move of '%s' to %s that an earlier run left", name, vm_conn_host_name(dc));
  } else if (sd) {
    if (dd && !dst_runs && strncmp(phase, "offline", 7) == 0 && virDomainUndefine(dd) < 0) {
      vm_warn("cannot remove the copy's definition of '%s' from %s: its earlier move stays unfinished: %s", name,
              vm_conn_host_name(dc), vm_virt_message());
      virResetLastError();
      return 1;
    }
    left = remove_unused(dc, dvols);
    remove_unused_keys(dc, jarray(o, "dest_keys"));
    vm_info("rolled back the move of '%s' to %s that an earlier run left", name, vm_conn_host_name(dc));
  } else {
    /* On neither host (moved on since?): nothing is removed on a guess. */
    vm_warn("an earlier move of '%s' left %s, but the VM is on neither %s nor %s: left alone", name, path,
            vm_conn_host_name(sc), vm_conn_host_name(dc));
    return 1;
  }
  if (left) {
    vm_warn("%d volume(s) of the earlier move of '%s' are still there (%s)", left, name, path);
    return 1;
  }
  unlink(path);
  return 0;
}

int record_recover(const char *uuid)
{
  CLEANUP_FREE char *path = record_path(uuid);
  CLEANUP_FREE char *text = vm_read_file(path, 1 << 20, NULL);
  if (!text) return 0;
  json_object *o = json_tokener_parse(text);
  int rc = 1;
  if (o && json_object_is_type(o, json_type_object)) rc = recover_one(path, o, text);
  else vm_warn("%s is not a move record: left alone", path);
  json_object_put(o);
  return rc;
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
    if (vm && strcmp(vm, name) == 0) recover_one(path, o, text);
    json_object_put(o);
  }
  closedir(d);
}
