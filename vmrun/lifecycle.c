/* vmrun start|stop|reboot|pause|resume|destroy|undefine. Verbs that take several
 * VMs act on each and exit with the first failure's code. Asking for the state a
 * VM is already in succeeds (--strict makes it exit 4), as a script would want.
 * Each holds the lock of the VM it changes, and finishes or rolls back first what
 * a killed run left on it. */
#include <string.h>
#include <unistd.h>

#include "vmrun.h"

static int o_strict, o_paused, o_no_force, o_timeout = 120, o_remove_storage, o_force;

static struct poptOption strict_option[] = {
  { "strict", '\0', POPT_ARG_NONE, &o_strict, 0, "fail (exit 4) when a VM is already in that state", NULL },
  POPT_TABLEEND
};
#define STRICT_OPTION { NULL, '\0', POPT_ARG_INCLUDE_TABLE, strict_option, 0, NULL, NULL }

/* Locks the VM and deals with what a killed run left: records the shared code
 * knows are finished or rolled back; another tool's unfinished work (a vmsnap
 * merge) is that tool's to finish, and does not stop a start or a stop. */
static int lock_vm(virConnectPtr conn, virDomainPtr *dom, const char *name)
{
  CLEANUP_FREE char *other = NULL;
  int rc = vm_lock_and_recover(conn, dom, name, &other);
  if (rc == 0 && other)
    vm_warn("VM '%s' has an unfinished %s: the next %s run on it finishes it", name, other,
              vm_journal_op_tool(other));
  return rc;
}

/* Parse, connect and look up each VM in turn; act() does the verb's work. */
static int for_each_vm(int argc, char **argv, const struct poptOption *table, const char *about,
                       int (*act)(virDomainPtr dom, const char *name))
{
  CLEANUP_POPT poptContext ctx = NULL;
  const char **args;
  int nargs;
  int rc = vm_parse(&ctx, argc, argv, table, "VM...", about, 1, -1, &args, &nargs);
  if (rc) return rc == VM_DONE ? 0 : rc;
  CLEANUP_VIRCONN virConnectPtr conn = vm_connect();
  if (!conn) return VM_EXIT_FAIL;
  int first = 0;
  for (int i = 0; i < nargs; i++) {
    CLEANUP_VIRDOMAIN virDomainPtr dom = NULL;
    rc = vm_lookup(conn, args[i], &dom);
    if (rc == 0) rc = lock_vm(conn, &dom, args[i]);
    if (rc == 0) rc = act(dom, args[i]);
    if (rc && !first) first = rc;
  }
  return first;
}

/* The same state again: fine, unless --strict. */
static int already(const char *name, const char *state)
{
  if (o_strict) return vm_fail(VM_EXIT_STATE, "VM '%s' is already %s", name, state);
  vm_info("VM '%s' is already %s", name, state);
  return 0;
}

static int start_one(virDomainPtr dom, const char *name)
{
  if (virDomainIsActive(dom) == 1) return already(name, "running");
  int rc = vm_dom_secrets_ensure(virDomainGetConnect(dom), dom);
  if (rc) return rc;
  if (virDomainCreateWithFlags(dom, o_paused ? VIR_DOMAIN_START_PAUSED : 0) < 0) {
    /* A memory hard limit is accepted by `tune` but can make QEMU fail to start
     * on hosts that cannot lock that much memory: say what to undo. */
    if (strstr(vm_virt_message(), "locked memory"))
      return vm_fail(VM_EXIT_FAIL, "cannot start VM '%s': this host refuses its memory hard limit "
                     "(%s); remove it with 'vmrun tune %s --mem-hard 0 --config'",
                     name, vm_virt_message(), name);
    return vm_fail_virt("cannot start VM '%s'", name);
  }
  vm_info("started VM '%s'%s", name, o_paused ? " (paused)" : "");
  return 0;
}

int cmd_start(int argc, char **argv)
{
  struct poptOption table[] = {
    { "paused", '\0', POPT_ARG_NONE, &o_paused, 0, "start with the vCPUs paused", NULL },
    STRICT_OPTION, VM_POPT_LOCK, VM_POPT_COMMON, POPT_TABLEEND
  };
  return for_each_vm(argc, argv, table, "Start VMs.", start_one);
}

/* stop: every VM is asked at once, then all are waited for against one deadline,
 * so stopping ten VMs takes as long as the slowest, not the sum. Ctrl-C ends the
 * wait and leaves the VMs shutting down: only the timeout forces them off. */
int cmd_stop(int argc, char **argv)
{
  struct poptOption table[] = {
    { "timeout", 't', POPT_ARG_INT, &o_timeout, 0, "seconds to wait for a graceful shutdown (default: 120)", "SECONDS" },
    { "no-force", '\0', POPT_ARG_NONE, &o_no_force, 0, "after the timeout, fail (exit 5) instead of forcing the VM off", NULL },
    STRICT_OPTION, VM_POPT_LOCK, VM_POPT_COMMON, POPT_TABLEEND
  };
  CLEANUP_POPT poptContext ctx = NULL;
  const char **args;
  int nargs;
  int rc = vm_parse(&ctx, argc, argv, table, "VM...",
                    "Shut VMs down through ACPI or the guest agent; force them off after --timeout.",
                    1, -1, &args, &nargs);
  if (rc) return rc == VM_DONE ? 0 : rc;
  if (o_timeout < 0) return vm_usage_error("invalid --timeout %d", o_timeout);
  CLEANUP_VIRCONN virConnectPtr conn = vm_connect();
  if (!conn) return VM_EXIT_FAIL;

  int first = 0;
  virDomainPtr *pending = calloc((size_t)nargs, sizeof *pending);
  for (int i = 0; i < nargs; i++) {
    virDomainPtr dom = NULL;
    if ((rc = vm_lookup(conn, args[i], &dom)) == 0 && (rc = lock_vm(conn, &dom, args[i])) == 0) {
      if (virDomainIsActive(dom) != 1) {
        rc = already(args[i], "stopped");
      } else {
        /* A paused guest cannot act on the power button: let it run to do so. */
        if (vm_domain_state(dom) == VIR_DOMAIN_PAUSED) virDomainResume(dom);
        if (virDomainShutdown(dom) < 0) {
          /* libvirt's reason, read before the state check resets it. */
          CLEANUP_FREE char *why = vm_strdup(vm_virt_message());
          if (virDomainIsActive(dom) == 1) vm_warn("graceful shutdown of '%s' refused: %s", args[i], why);
        }
        pending[i] = dom;
        dom = NULL;
      }
    }
    if (dom) virDomainFree(dom);
    if (rc && !first) first = rc;
  }
  int64_t start = vm_now_ms(), deadline = start + (int64_t)o_timeout * 1000;
  for (;;) {
    int left = 0;
    for (int i = 0; i < nargs; i++) {
      if (!pending[i]) continue;
      /* A transient VM is gone once it stops. */
      if (virDomainIsActive(pending[i]) != 1) {
        vm_info("stopped VM '%s'", args[i]);
      } else if (vm_now_ms() >= deadline) {
        if (o_no_force) {
          rc = vm_fail(VM_EXIT_TIMEOUT, "VM '%s' did not shut down within %d s", args[i], o_timeout);
        } else if ((rc = vm_force_off(pending[i], NULL)) != 0) {
          /* the message is out */
        } else {
          rc = 0;
          vm_info("forced VM '%s' off after %d s", args[i], o_timeout);
        }
        if (rc && !first) first = rc;
      } else {
        left++;
        continue;
      }
      virDomainFree(pending[i]);
      pending[i] = NULL;
    }
    if (!left) break;
    vm_sleep_ms(100);
  }
  free(pending);
  return first;
}

static int reboot_one(virDomainPtr dom, const char *name)
{
  if (virDomainIsActive(dom) != 1) return vm_fail(VM_EXIT_STATE, "VM '%s' is not running", name);
  if (virDomainReboot(dom, 0) < 0) return vm_fail_virt("cannot reboot VM '%s'", name);
  vm_info("rebooting VM '%s'", name);
  return 0;
}

int cmd_reboot(int argc, char **argv)
{
  struct poptOption table[] = { VM_POPT_LOCK, VM_POPT_COMMON, POPT_TABLEEND };
  return for_each_vm(argc, argv, table, "Reboot running VMs through ACPI or the guest agent.", reboot_one);
}

static int pause_one(virDomainPtr dom, const char *name)
{
  int st = vm_domain_state(dom);
  if (st == VIR_DOMAIN_PAUSED) return already(name, "paused");
  if (st != VIR_DOMAIN_RUNNING) return vm_fail(VM_EXIT_STATE, "VM '%s' is %s, not running", name, vm_state_name(st));
  if (virDomainSuspend(dom) < 0) return vm_fail_virt("cannot pause VM '%s'", name);
  vm_info("paused VM '%s'", name);
  return 0;
}

int cmd_pause(int argc, char **argv)
{
  struct poptOption table[] = { STRICT_OPTION, VM_POPT_LOCK, VM_POPT_COMMON, POPT_TABLEEND };
  return for_each_vm(argc, argv, table, "Pause running VMs.", pause_one);
}

static int resume_one(virDomainPtr dom, const char *name)
{
  int st = vm_domain_state(dom);
  if (st == VIR_DOMAIN_RUNNING) return already(name, "running");
  if (st != VIR_DOMAIN_PAUSED) return vm_fail(VM_EXIT_STATE, "VM '%s' is %s, not paused", name, vm_state_name(st));
  if (virDomainResume(dom) < 0) return vm_fail_virt("cannot resume VM '%s'", name);
  vm_info("resumed VM '%s'", name);
  return 0;
}

int cmd_resume(int argc, char **argv)
{
  struct poptOption table[] = { STRICT_OPTION, VM_POPT_LOCK, VM_POPT_COMMON, POPT_TABLEEND };
  return for_each_vm(argc, argv, table, "Resume paused VMs.", resume_one);
}

static int destroy_one(virDomainPtr dom, const char *name)
{
  if (virDomainIsActive(dom) != 1) return already(name, "stopped");
  if (virDomainDestroy(dom) < 0) return vm_fail_virt("cannot destroy VM '%s'", name);
  vm_info("forced VM '%s' off", name);
  return 0;
}

int cmd_destroy(int argc, char **argv)
{
  struct poptOption table[] = { STRICT_OPTION, VM_POPT_LOCK, VM_POPT_COMMON, POPT_TABLEEND };
  return for_each_vm(argc, argv, table, "Force VMs off at once, like pulling the plug.", destroy_one);
}

/* The files the VM's snapshots made or froze outside its current chains (other
 * branches, memory files): the VM's own when named after it and nothing else
 * uses them. */
static int snapshot_files(virConnectPtr conn, virDomainPtr dom, const char *name, struct vm_strv *files)
{
  virDomainSnapshotPtr *snaps = NULL;
  int n = virDomainListAllSnapshots(dom, &snaps, 0);
  if (n < 0) return vm_fail_virt("cannot list the snapshots of '%s'", name);
  int rc = 0;
  for (int i = 0; i < n; i++) {
    CLEANUP_FREE char *xml = virDomainSnapshotGetXMLDesc(snaps[i], 0);
    CLEANUP_XMLDOC xmlDocPtr doc = xml ? vm_xml_parse(xml) : NULL;
    CLEANUP_XPATHCTX xmlXPathContextPtr x = doc ? vm_xpath_ctx(doc) : NULL;
    CLEANUP_XPATHOBJ xmlXPathObjectPtr o = x ? vm_xpath_nodes(x,
      "/domainsnapshot/memory/@file | /domainsnapshot/disks/disk/source/@file | "
      "/domainsnapshot/domain/devices/disk[@device='disk']/source/@file") : NULL;
    for (int j = 0; o && o->nodesetval && j < o->nodesetval->nodeNr && rc == 0; j++) {
      CLEANUP_XMLFREE xmlChar *f = xmlNodeGetContent(o->nodesetval->nodeTab[j]);
      const char *file = (const char *)f;
      if (!file || vm_strv_contains(files->v, file) || !vm_path_exists(conn, file)) continue;
      if (!vm_image_named_for(file, name) || vm_image_is_template(conn, file)) continue;
      struct vm_strv users = { 0 };
      rc = vm_image_users(conn, file, name, &users);
      if (rc == 0 && users.n == 0) vm_strv_add(files, file);
      vm_strv_free(&users);
    }
    virDomainSnapshotFree(snaps[i]);
  }
  free(snaps);
  return rc;
}

/* Which files --remove-storage may remove: each disk's own file and the files of
 * its backing chain that were made for this VM, but never a template, never a
 * CD-ROM or read-only disk, and never an image another VM's disks use or stand on. */
static int removable_files(virConnectPtr conn, virDomainPtr dom, const char *name, struct vm_strv *files)
{
  CLEANUP_XMLDOC xmlDocPtr doc = vm_domain_doc(dom, VIR_DOMAIN_XML_INACTIVE);
  if (!doc) return VM_EXIT_FAIL;
  struct vm_disk *disks;
  size_t nd;
  vm_domain_disks(doc, &disks, &nd);
  int rc = 0;
  for (size_t i = 0; i < nd && rc == 0; i++) {
    const struct vm_disk *d = &disks[i];
    if (!d->source || !d->type || (strcmp(d->type, "file") != 0 && strcmp(d->type, "block") != 0)) continue;
    if (d->readonly || (d->device && strcmp(d->device, "disk") != 0)) {
      vm_info("keeping '%s' (%s)", d->source, d->readonly ? "read-only" : d->device);
      continue;
    }
    /* A block device goes only as a volume of a pool (an LVM volume vmkit made). */
    if (strcmp(d->type, "block") == 0) {
      CLEANUP_VIRVOL virStorageVolPtr vol = NULL;
      int found = vm_vol_find(conn, d->source, &vol);
      if (found != 0) {
        if (found != VM_EXIT_NOTFOUND) { rc = found; break; }
        vm_info("keeping '%s' (a device in no storage pool)", d->source);
        continue;
      }
    }
    struct vm_strv chain = { 0 };
    if ((rc = vm_image_chain(conn, d->source, &chain))) break;
    for (size_t c = 0; c < chain.n; c++) {
      const char *f = chain.v[c];
      if (vm_image_is_template(conn, f)) {
        vm_info("keeping template image '%s'", f);
        break;
      }
      if (c > 0 && !vm_image_named_for(f, name)) break;
      struct vm_strv users = { 0 };
      if ((rc = vm_image_users(conn, f, name, &users))) break;
      if (users.n) {
        vm_info("keeping '%s': VM '%s' uses it", f, users.v[0]);
        vm_strv_free(&users);
        break;
      }
      if (!vm_strv_contains(files->v, f)) vm_strv_add(files, f);
    }
    vm_strv_free(&chain);
  }
  vm_disks_free(disks, nd);
  if (rc == 0) rc = snapshot_files(conn, dom, name, files);
  return rc;
}

/* The disk keys that go with the files: vmkit's own, every disk they encrypt
 * among the files removed (a key whose disk stays, stays). */
static void removable_keys(virConnectPtr conn, virDomainPtr dom, const struct vm_strv *files, struct vm_strv *keys)
{
  CLEANUP_XMLDOC xmlDocPtr doc = vm_domain_doc(dom, VIR_DOMAIN_XML_INACTIVE);
  if (!doc) return;
  struct vm_strv paths = { 0 }, uuids = { 0 };
  vm_domain_disk_secrets(doc, &paths, &uuids);
  for (size_t i = 0; i < uuids.n; i++) {
    bool all = true;
    for (size_t k = 0; k < uuids.n; k++)
      if (strcmp(uuids.v[k], uuids.v[i]) == 0 && !vm_strv_contains(files->v, paths.v[k])) all = false;
    /* Nor a key that another VM of the host names (a copy of this one). */
    if (all && !vm_strv_contains(keys->v, uuids.v[i]) && vm_secret_is_ours(conn, uuids.v[i]) &&
        !vm_secret_in_use(conn, uuids.v[i], virDomainGetName(dom)))
      vm_strv_add(keys, uuids.v[i]);
  }
  vm_strv_free(&paths);
  vm_strv_free(&uuids);
}

int cmd_undefine(int argc, char **argv)
{
  struct poptOption table[] = {
    { "remove-storage", '\0', POPT_ARG_NONE, &o_remove_storage, 0,
      "also remove the VM's disk files (never templates or images other VMs use)", NULL },
    { "force", 'f', POPT_ARG_NONE, &o_force, 0, "force a running VM off first", NULL },
    VM_POPT_LOCK, VM_POPT_COMMON, POPT_TABLEEND
  };
  CLEANUP_POPT poptContext ctx = NULL;
  const char **args;
  int nargs;
  int rc = vm_parse(&ctx, argc, argv, table, "VM", "Remove a VM's definition (and its snapshots' records).",
                    1, 1, &args, &nargs);
  if (rc) return rc == VM_DONE ? 0 : rc;
  const char *name = args[0];
  CLEANUP_VIRCONN virConnectPtr conn = NULL;
  CLEANUP_VIRDOMAIN virDomainPtr dom = NULL;
  CLEANUP_FREE char *other = NULL;
  if ((rc = vm_open_locked(name, &conn, &dom, &other))) return rc;
  if (other)
    return vm_fail(VM_EXIT_STATE, "VM '%s' has an unfinished %s: run vmsnap on it first (vmsnap verify "
                   "shows it)", name, other);
  if (virDomainIsPersistent(dom) != 1)
    return vm_fail(VM_EXIT_STATE, "VM '%s' is transient: destroy it instead", name);
  if (virDomainIsActive(dom) == 1 && !o_force)
    return vm_fail(VM_EXIT_STATE, "VM '%s' is running: stop it first, or use --force", name);
  struct vm_strv files = { 0 };
  if (o_remove_storage && (rc = removable_files(conn, dom, name, &files))) {
    vm_strv_free(&files);
    return rc;
  }
  vm_catch_signals();
  if ((rc = vm_force_off(dom, NULL))) {
    vm_strv_free(&files);
    return rc;
  }
  /* The files go first, under a journal record naming them: a run killed halfway
   * leaves a VM whose next run (any verb) finishes the undefine. */
  struct vm_strv keys = { 0 };
  if (files.n) removable_keys(conn, dom, &files, &keys);
  if (files.n) {
    CLEANUP_XMLDOC xmlDocPtr rec = vm_journal_new("undefine");
    for (size_t i = 0; i < files.n; i++) vm_journal_add_volume(rec, files.v[i], "remove");
    for (size_t i = 0; i < keys.n; i++) vm_journal_add_secret(rec, keys.v[i], "remove");
    rc = vm_journal_write(dom, rec);
    for (size_t i = 0; i < files.n && rc == 0; i++) rc = vm_path_delete(conn, files.v[i]);
    for (size_t i = 0; i < keys.n && rc == 0; i++) rc = vm_secret_remove(conn, keys.v[i], true);
    if (rc) {
      vm_strv_free(&files);
      vm_strv_free(&keys);
      return rc;
    }
  }
  vm_strv_free(&keys);
  unsigned flags = VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA |
                   VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA | VIR_DOMAIN_UNDEFINE_NVRAM;
  if (virDomainUndefineFlags(dom, flags) < 0) {
    vm_strv_free(&files);
    return vm_fail_virt("cannot undefine VM '%s'", name);
  }
  vm_info("undefined VM '%s'%s", name, files.n ? " and removed its storage" : "");
  vm_strv_free(&files);
  return 0;
}
