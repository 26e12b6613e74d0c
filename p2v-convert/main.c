/* p2v-convert: reads the stream of p2v-agent (p2v-stream(5)) on stdin and makes
 * a VM of it: each disk a qcow2 volume of a libvirt pool (written through
 * qemu-nbd and libnbd; for another host, built here and uploaded through a
 * sparse libvirt stream), then the VM defined from the server's inventory.
 * Nothing is left of a stream that is refused: no volume, no VM. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <libnbd.h>
#include <zstd.h>

#include "convert.h"

struct cdisk {
  char *volname, *path;     /* the volume, on the VM's host */
  char *local;              /* the qcow2 written here (the volume itself on a local file pool) */
  virStorageVolPtr vol;
  struct nbd_handle *nbd;
  uint64_t size, written, zeroed;
};

struct conv {
  char *name;
  char uuid[37];
  unsigned vcpus;           /* --vcpus, 0: the server's */
  uint64_t memory;          /* --memory, 0: the server's */
  const char **networks;    /* --network MAC=NET */
  bool adapt;               /* not --no-adapt */
  virDomainPtr dom;         /* defined first, with the journal record */
  xmlDocPtr rec;
  virConnectPtr conn;
  virStoragePoolPtr pool;
  bool direct;              /* the volumes are written in place */
  char *scratch;
  struct cdisk disks[VM_STREAM_MAX_DISKS];
  size_t ndisks;
  struct vm_undo undo;
  unsigned char *buf;
  ZSTD_DCtx *dctx;
  uint64_t data_records, hole_records;
};

static int begin_vm(struct conv *c, struct vm_p2v_check *chk);
static int check_networks(const struct conv *c, json_object *inv);

static int fail_nbd(const char *what, const char *path)
{
  return vm_fail(VM_EXIT_FAIL, "cannot %s '%s': libnbd: %s", what, path, nbd_get_error());
}

/* qemu-nbd on a qcow2, started by libnbd through socket activation: it is
 * libnbd's child, and it ends when the handle is closed or this process dies
 * (its only client is gone). */
static int open_nbd(struct cdisk *d)
{
  d->nbd = nbd_create();
  if (!d->nbd) return fail_nbd("open", d->local);
  char *argv[] = { "qemu-nbd", "-f", "qcow2", "--discard=unmap", "--cache=none", "--aio=native", d->local, NULL };
  if (nbd_connect_systemd_socket_activation(d->nbd, argv) == -1) return fail_nbd("serve", d->local);
  if (nbd_is_read_only(d->nbd) == 1) return vm_fail(VM_EXIT_FAIL, "qemu-nbd serves '%s' read-only", d->local);
  return 0;
}

static int make_disks(struct conv *c, struct vm_p2v_check *chk)
{
  c->direct = vm_conn_is_local(c->conn) && vm_pool_is_file_based(c->pool);
  if (!c->direct && !(c->scratch = vm_scratch_dir("p2v"))) return VM_EXIT_FAIL;
  if (c->scratch) vm_undo_local_dir(&c->undo, c->scratch);
  for (size_t i = 0; i < chk->ndisks; i++) {
    struct cdisk *d = &c->disks[i];
    struct vm_volspec spec = { .name = d->volname, .format = "qcow2", .capacity = d->size };
    int rc = vm_vol_create(c->pool, &spec, &d->vol);
    if (rc) return rc;
    char *path = virStorageVolGetPath(d->vol);
    if (!path) {
      rc = vm_fail_virt("cannot read the path of volume '%s'", d->volname);
      virStorageVolDelete(d->vol, 0);
      return rc;
    }
    vm_undo_volume(&c->undo, c->conn, path);
    if (strcmp(path, d->path) != 0) {
      /* A pool whose volumes are not files of its folder: the record learns the path. */
      vm_journal_add_volume(c->rec, path, "new");
      if ((rc = vm_journal_write(c->dom, c->rec))) {
        free(path);
        return rc;
      }
    }
    free(d->path);
    d->path = path;
    if (c->direct) {
      d->local = vm_strdup(d->path);
    } else {
      d->local = vm_strdup_printf("%s/%s", c->scratch, d->volname);
      CLEANUP_FREE char *sz = vm_strdup_printf("%llu", (unsigned long long)d->size);
      char *argv[] = { "qemu-img", "create", "-q", "-f", "qcow2", "-o", "compat=1.1", d->local, sz, NULL };
      if ((rc = vm_run_checked(argv, NULL))) return rc;
    }
    if ((rc = open_nbd(d))) return rc;
  }
  return 0;
}

/* Writes a verified block: ranges of 64 KiB that are all zeros are not written
 * in pass 1 (a new image reads as zeros), and written as zeros (unallocated)
 * in a later pass. */
static bool range_zero(const unsigned char *p, size_t n)
{
  static const unsigned char zeros[65536];
  return memcmp(p, zeros, n) == 0;
}

/* Zeros over [off, off+len) in requests of at most 1 GiB (not every NBD server
 * takes 4 GiB in one). */
static int zero_range(struct cdisk *d, uint64_t off, uint64_t len)
{
  while (len) {
    uint64_t k = len < (UINT64_C(1) << 30) ? len : UINT64_C(1) << 30;
    if (nbd_zero(d->nbd, k, off, 0) == -1) return fail_nbd("write", d->local);
    d->zeroed += k;
    off += k;
    len -= k;
  }
  return 0;
}

/* Writes a verified block: ranges of 64 KiB that are all zeros are not written
 * in pass 1 (a new image reads as zeros), and written as zeros (unallocated)
 * in a later pass. */
static int write_block(struct conv *c, struct cdisk *d, const struct vm_rec_data *r, unsigned pass)
{
  const size_t step = 65536;
  size_t pos = 0, ncookies = 0;
  int64_t cookies[VM_STREAM_MAX_BLOCK / 65536];
  while (pos < r->length) {
    size_t n = r->length - pos < step ? r->length - pos : step;
    bool zero = range_zero(c->buf + pos, n);
    /* Consecutive ranges of one kind go as one request. */
    size_t end = pos + n;
    while (end < r->length) {
      size_t m = r->length - end < step ? r->length - end : step;
      if (range_zero(c->buf + end, m) != zero) break;
      end += m;
    }
    if (!zero) {
      /* In requests of at most 64 KiB: qemu-nbd takes each into a buffer of its
       * own, and larger ones are fresh mappings whose page faults cost more than
       * the requests (measured: two thirds of a conversion's CPU). */
      for (size_t w = pos; w < end; w += step) {
        size_t k = end - w < step ? end - w : step;
        int64_t ck = nbd_aio_pwrite(d->nbd, c->buf + w, k, r->offset + w, NBD_NULL_COMPLETION, 0);
        if (ck == -1) return fail_nbd("write", d->local);
        cookies[ncookies++] = ck;
      }
      d->written += end - pos;
    } else if (pass > 1) {
      int rc = zero_range(d, r->offset + pos, end - pos);
      if (rc) return rc;
    }
    pos = end;
  }
  /* The block's buffer is the next block's: every write of it done first. */
  while (nbd_aio_in_flight(d->nbd) > 0)
    if (nbd_poll(d->nbd, -1) == -1) return fail_nbd("write", d->local);
  /* Each write retired, its own result checked. */
  int rc = 0;
  for (size_t i = 0; i < ncookies; i++)
    if (nbd_aio_command_completed(d->nbd, cookies[i]) != 1 && !rc) rc = fail_nbd("write", d->local);
  return rc;
}

static int read_stream(struct conv *c, struct vm_sreader *rd, struct vm_p2v_check *chk)
{
  char err[512];
  for (;;) {
    if (vm_interrupted()) return vm_fail_interrupted();
    uint32_t type;
    const unsigned char *p;
    size_t n;
    int k = vm_sreader_next(rd, &type, &p, &n);
    if (k != 0 && vm_p2v_check_done(chk)) return vm_fail(VM_EXIT_VERIFY, "the stream goes on after its trailer");
    if (k < 0) return vm_fail(VM_EXIT_VERIFY, "%s", rd->err);
    if (k == 0) {
      if (vm_p2v_check_done(chk)) return 0;
      return vm_fail(VM_EXIT_VERIFY, "the stream is truncated: it ends after record %llu, before its trailer",
                     (unsigned long long)rd->seq);
    }
    struct vm_p2v_event ev;
    if (vm_p2v_check(chk, type, p, n, &ev, err, sizeof err) != 0)
      return vm_fail(type == VM_REC_ABORT ? VM_EXIT_FAIL : VM_EXIT_VERIFY, "%s", err);
    int rc = 0;
    switch (type) {
    case VM_REC_INVENTORY: {
      json_object *h;
      const char *host = json_object_object_get_ex(chk->inventory, "hostname", &h) &&
                             json_object_is_type(h, json_type_string)
                           ? json_object_get_string(h)
                           : "";
      /* The server's name goes into messages only as printable ASCII. */
      CLEANUP_FREE char *shown = vm_strdup_printf("%.64s", host);
      for (char *q = shown; *q; q++)
        if ((unsigned char)*q < 0x20 || (unsigned char)*q >= 0x7f) *q = '?';
      if (!c->name) {
        if (!*host || strcmp(shown, host) != 0 || !vm_name_ok(host))
          return vm_fail(VM_EXIT_USAGE, "the server's host name '%s' cannot name a VM: give the VM's name with --name",
                         shown);
        c->name = vm_strdup(host);
      }
      if (chk->ndisks > VM_MAX_DEVS - 1)
        return vm_fail(VM_EXIT_FAIL, "the server has %zu disks: a VM of vmkit has at most %d", chk->ndisks,
                       VM_MAX_DEVS - 1);
      if ((rc = check_networks(c, chk->inventory))) return rc;
      if ((rc = begin_vm(c, chk))) return rc;
      vm_info("converting server '%s' into VM '%s': %zu disk%s", shown, c->name, chk->ndisks,
              chk->ndisks == 1 ? "" : "s");
      rc = make_disks(c, chk);
      break;
    }
    case VM_REC_DATA: {
      struct cdisk *d = &c->disks[ev.disk];
      if (vm_rec_data_open(&ev.data, c->dctx, c->buf, err, sizeof err) != 0)
        return vm_fail(VM_EXIT_VERIFY, "disk %d: %s", ev.disk, err);
      rc = write_block(c, d, &ev.data, chk->pass);
      c->data_records++;
      vm_progress("receiving", rd->bytes, 0);
      break;
    }
    case VM_REC_HOLE:
      c->hole_records++;
      if (chk->pass > 1) rc = zero_range(&c->disks[ev.disk], ev.hole.offset, ev.hole.length);
      break;
    case VM_REC_DISK_END:
      vm_debug("disk %d (%s): pass %u received, its digest matches", ev.disk, chk->disks[ev.disk].name, ev.pass);
      break;
    default:
      break;
    }
    if (rc) return rc;
  }
}

/* The swap areas the agent did not send, made again with their UUIDs and labels
 * (the guest's fstab and initramfs name them so), through libguestfs on the disks
 * as they are written here, before any upload. */
static int make_swaps(guestfs_h *g, struct conv *c, const struct vm_p2v_check *chk)
{
  CLEANUP_STRV char **devs = guestfs_list_devices(g);
  if (!devs) return vm_fail_gfs(g, "cannot list the disks");
  for (size_t i = 0; i < c->ndisks && devs[i]; i++) {
    for (size_t k = 0; k < chk->disks[i].nswaps; k++) {
      const struct vm_swap_area *sw = &chk->disks[i].swaps[k];
      /* The partition that starts where the swap area does, else the whole disk. */
      CLEANUP_FREE char *dev = NULL;
      struct guestfs_partition_list *pl = guestfs_part_list(g, devs[i]);
      for (size_t p = 0; pl && p < pl->len; p++)
        if ((uint64_t)pl->val[p].part_start == sw->offset && (uint64_t)pl->val[p].part_size == sw->length)
          dev = vm_strdup_printf("%s%d", devs[i], pl->val[p].part_num);
      if (pl) guestfs_free_partition_list(pl);
      if (!dev && sw->offset == 0 && sw->length == c->disks[i].size) dev = vm_strdup(devs[i]);
      if (!dev) {
        vm_warn("disk %zu: no partition holds the swap area at offset %llu: not made again", i,
                (unsigned long long)sw->offset);
        continue;
      }
      if (guestfs_mkswap_opts(g, dev, GUESTFS_MKSWAP_OPTS_UUID, sw->uuid, GUESTFS_MKSWAP_OPTS_LABEL, sw->label, -1) == -1)
        return vm_fail_gfs(g, "cannot make the swap area on %s", dev);
      vm_debug("disk %zu: swap area at offset %llu made again (UUID %s)", i, (unsigned long long)sw->offset, sw->uuid);
    }
  }
  return 0;
}

/* One libguestfs appliance on the disks as written here, before any upload: the
 * swap areas made again, then the guest inspected and adapted (adapt.c). 0,
 * VM_EXIT_VERIFY when a step of the adaptation failed (said), or an exit code. */
static int guest_work(struct conv *c, const struct vm_p2v_check *chk, json_object *report)
{
  size_t nswaps = 0;
  for (size_t i = 0; i < c->ndisks; i++) nswaps += chk->disks[i].nswaps;
  if (!nswaps && !c->adapt) return 0;
  CLEANUP_GUESTFS guestfs_h *g = vm_gfs_open();
  if (!g) return VM_EXIT_FAIL;
  for (size_t i = 0; i < c->ndisks; i++)
    if (guestfs_add_drive_opts(g, c->disks[i].local, GUESTFS_ADD_DRIVE_OPTS_FORMAT, "qcow2", -1) == -1)
      return vm_fail_gfs(g, "cannot open '%s'", c->disks[i].local);
  /* The guest's own tools rebuild its initramfs in the appliance: on every core
   * (up to 4), which TCG runs as threads of its own. */
  long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
  if (ncpu > 1) guestfs_set_smp(g, ncpu > 4 ? 4 : (int)ncpu);
  vm_info("looking inside the disks (libguestfs)");
  if (guestfs_launch(g) == -1) return vm_fail_gfs(g, "cannot start libguestfs");
  int rc = make_swaps(g, c, chk);
  if (!rc && c->adapt) {
    struct pc_disk pd[VM_STREAM_MAX_DISKS];
    for (size_t i = 0; i < c->ndisks; i++)
      pd[i] = (struct pc_disk){ .server_name = chk->disks[i].name, .local = c->disks[i].local, .path = c->disks[i].path };
    rc = pc_inspect_adapt(g, pd, c->ndisks, chk->inventory, report);
  }
  if (rc && rc != VM_EXIT_VERIFY) return rc;
  if (guestfs_shutdown(g) == -1) return vm_fail_gfs(g, "cannot close the disks");
  return rc;
}

/* Every write on its disk, then qemu-nbd gone. */
static int close_disks(struct conv *c)
{
  for (size_t i = 0; i < c->ndisks; i++) {
    struct cdisk *d = &c->disks[i];
    if (nbd_flush(d->nbd, 0) == -1) return fail_nbd("flush", d->local);
    if (nbd_shutdown(d->nbd, 0) == -1) return fail_nbd("close", d->local);
    nbd_close(d->nbd);
    d->nbd = NULL;
  }
  return 0;
}

/* A volume built here is uploaded. */
static int finish_disks(struct conv *c)
{
  for (size_t i = 0; i < c->ndisks; i++) {
    struct cdisk *d = &c->disks[i];
    if (!c->direct) {
      int rc = vm_vol_upload_file(d->vol, d->local);
      if (rc) return rc;
      unlink(d->local);
    }
  }
  vm_storage_changed();
  return 0;
}

static uint64_t inv_u64(json_object *o, const char *a, const char *b)
{
  json_object *v = o;
  if (!json_object_object_get_ex(v, a, &v)) return 0;
  if (b && !json_object_object_get_ex(v, b, &v)) return 0;
  if (!json_object_is_type(v, json_type_int)) return 0;
  int64_t x = json_object_get_int64(v);
  return x > 0 ? (uint64_t)x : 0;
}

/* What --network says of the NIC with this MAC: user, network=NAME, bridge=BR,
 * NAME (a libvirt network) or none; NULL when it says nothing. */
static const char *nic_network(const struct conv *c, const char *mac)
{
  for (size_t i = 0; c->networks && c->networks[i]; i++)
    if (strncasecmp(c->networks[i], mac, 17) == 0 && c->networks[i][17] == '=') return c->networks[i] + 18;
  return NULL;
}

/* Each --network names a NIC of the inventory. */
static int check_networks(const struct conv *c, json_object *inv)
{
  json_object *nics = NULL;
  json_object_object_get_ex(inv, "nics", &nics);
  for (size_t i = 0; c->networks && c->networks[i]; i++) {
    bool found = false;
    for (size_t k = 0; nics && json_object_is_type(nics, json_type_array) && k < json_object_array_length(nics); k++) {
      json_object *m;
      if (json_object_object_get_ex(json_object_array_get_idx(nics, k), "mac", &m) &&
          json_object_is_type(m, json_type_string) && !strncasecmp(json_object_get_string(m), c->networks[i], 17))
        found = true;
    }
    if (!found)
      return vm_fail(VM_EXIT_USAGE, "--network %s: the server has no NIC with MAC %.17s", c->networks[i],
                     c->networks[i]);
  }
  return 0;
}

/* The VM's definition from the inventory, with the journal record rec (or none):
 * defined first with the record, then again without it once the disks are whole. */
static int define_vm(struct conv *c, json_object *inv, xmlDocPtr rec)
{
  unsigned vcpus = c->vcpus;
  uint64_t memory = c->memory;
  struct vm_spec spec = { .name = c->name, .uuid = c->uuid, .virt_type = vm_virt_type_of(c->conn), .journal = rec };
  uint64_t threads = inv_u64(inv, "cpu", "threads");
  spec.vcpus = vcpus ? vcpus : threads ? (unsigned)(threads > 64 ? 64 : threads) : 1;
  uint64_t mem = memory ? memory : inv_u64(inv, "memory", NULL);
  spec.memory = mem ? mem : UINT64_C(1) << 30;
  for (size_t i = 0; i < c->ndisks && spec.ndisks < VM_MAX_DEVS - 1; i++)
    spec.disks[spec.ndisks++] = (struct vm_spec_disk){ .path = c->disks[i].path, .format = "qcow2" };
  spec.disks[spec.ndisks++] = (struct vm_spec_disk){ .device = "cdrom" };
  json_object *nics;
  if (json_object_object_get_ex(inv, "nics", &nics) && json_object_is_type(nics, json_type_array)) {
    size_t nn = json_object_array_length(nics);
    if (nn > VM_MAX_DEVS) vm_warn("the server has %zu NICs: the VM gets the first %d", nn, VM_MAX_DEVS);
    for (size_t i = 0; i < nn && spec.nnics < VM_MAX_DEVS; i++) {
      json_object *m, *n = json_object_array_get_idx(nics, i);
      const char *mac = n && json_object_object_get_ex(n, "mac", &m) && json_object_is_type(m, json_type_string)
                          ? json_object_get_string(m)
                          : NULL;
      unsigned x[6];
      char tail;
      if (!mac || strlen(mac) != 17 || strspn(mac, "0123456789abcdefABCDEF:") != 17 ||
          sscanf(mac, "%2x:%2x:%2x:%2x:%2x:%2x%c", &x[0], &x[1], &x[2], &x[3], &x[4], &x[5], &tail) != 6) {
        vm_warn("NIC %zu of the server has no usable MAC address: not made", i);
        continue;
      }
      struct vm_spec_nic nic = { .type = "user" };
      const char *net = nic_network(c, mac);
      if (net && !strcmp(net, "none")) {
        vm_info("NIC %s of the server: not made (--network %s=none)", mac, mac);
        continue;
      }
      if (net && vm_nic_parse(net, &nic) != 0) nic = (struct vm_spec_nic){ .type = "network", .source = net };
      nic.mac = mac;
      spec.nics[spec.nnics++] = nic;
    }
  }
  json_object *boot;
  if (json_object_object_get_ex(inv, "boot", &boot) && json_object_is_type(boot, json_type_string) &&
      !strcmp(json_object_get_string(boot), "uefi"))
    spec.firmware = "efi";
  CLEANUP_FREE char *xml = vm_spec_xml(&spec);
  virDomainPtr dom = virDomainDefineXML(c->conn, xml);
  if (!dom) return vm_fail_virt("cannot define VM '%s'", c->name);
  if (!c->dom) {
    c->dom = dom;
    vm_undo_domain(&c->undo, dom);
  } else {
    virDomainFree(dom);
  }
  return 0;
}

/* The VM is defined before any volume is made, with a journal record naming the
 * volumes this run is about to make (vm_journal_recover's "create"): a run killed
 * at any instant leaves a VM that the next run holding its lock (this tool with
 * the same name, or vmrun undefine) rolls back, volumes and all. A VM of that
 * name that a killed run left is rolled back first; any other is a conflict. */
static int begin_vm(struct conv *c, struct vm_p2v_check *chk)
{
  virDomainPtr old = virDomainLookupByName(c->conn, c->name);
  int rc = 0;
  if (old) {
    CLEANUP_FREE char *other = NULL;
    rc = vm_lock_domain(c->conn, old);
    if (rc == 0) rc = vm_journal_recover(c->conn, &old, &other);
    if (old) virDomainFree(old);
    if (rc == 0) return vm_fail(VM_EXIT_STATE, "a VM named '%s' exists on %s", c->name, vm_conn_host_name(c->conn));
    if (rc != VM_EXIT_NOTFOUND) return rc;
    vm_info("rolled back what a killed run left of VM '%s'", c->name);
  } else {
    virResetLastError();
  }
  vm_uuid_random(c->uuid);
  if ((rc = vm_lock_domain_uuid(c->conn, c->uuid, c->name))) return rc;
  CLEANUP_FREE char *target = vm_pool_target(c->pool);
  if (!target) return VM_EXIT_FAIL;
  c->rec = vm_journal_new("create");
  for (size_t i = 0; i < chk->ndisks; i++) {
    struct cdisk *d = &c->disks[i];
    d->size = chk->disks[i].size;
    d->volname = i == 0 ? vm_strdup_printf("%s.qcow2", c->name) : vm_strdup_printf("%s-disk%zu.qcow2", c->name, i);
    d->path = vm_strdup_printf("%s/%s", target, d->volname);
    /* Each must be free now, so that a roll-back never removes what another made. */
    if (vm_path_exists(c->conn, d->path))
      return vm_fail(VM_EXIT_STATE, "cannot make disk '%s': it already exists", d->path);
    vm_journal_add_volume(c->rec, d->path, "new");
  }
  c->ndisks = chk->ndisks;
  return define_vm(c, chk->inventory, c->rec);
}

int main(int argc, char **argv)
{
  vm_init("p2v-convert");
  argv[0] = (char *)vm_progname; /* usage errors point at "p2v-convert --help" */
  char *name = NULL, *pool = NULL, *vcpus = NULL, *memory = NULL, *input = NULL;
  const char **networks = NULL;
  int boot_test = 0, no_adapt = 0, boot_timeout = 600;
  struct poptOption table[] = {
    { "name", '\0', POPT_ARG_STRING, &name, 0, "the VM's name (default: the server's host name)", "NAME" },
    { "pool", '\0', POPT_ARG_STRING, &pool, 0, "the storage pool of its disks (default: $VMKIT_POOL, else default)", "POOL" },
    { "vcpus", '\0', POPT_ARG_STRING, &vcpus, 0, "vCPUs (default: the server's hardware threads)", "N" },
    { "memory", '\0', POPT_ARG_STRING, &memory, 0, "memory (default: the server's)", "SIZE" },
    { "input", 'i', POPT_ARG_STRING, &input, 0, "read the stream from FILE (default: stdin)", "FILE" },
    { "network", '\0', POPT_ARG_ARGV, &networks, 0,
      "the server's NIC with that MAC joins NET: a libvirt network's name, network=NAME, bridge=BR, user or none "
      "(default: user); repeatable", "MAC=NET" },
    { "no-adapt", '\0', POPT_ARG_NONE, &no_adapt, 0, "define the VM from the disks as they are: no change inside the guest", NULL },
    { "boot-test", '\0', POPT_ARG_NONE, &boot_test, 0,
      "boot the VM once on throwaway overlays, NICs unplugged, until its login prompt or guest agent (exit 6 when it does not boot)",
      NULL },
    { "boot-timeout", '\0', POPT_ARG_INT, &boot_timeout, 0, "how long --boot-test waits (default: 600)", "SECONDS" },
    VM_POPT_COMMON,
    POPT_TABLEEND,
  };
  CLEANUP_POPT poptContext ctx = NULL;
  const char **args;
  int nargs;
  int rc = vm_parse(&ctx, argc, argv, table, "",
                    "Make a VM of a physical server from the stream of p2v-agent on stdin: its disks as qcow2 "
                    "volumes, the VM defined with the server's vCPUs, memory, disks and NICs (same MACs).",
                    0, 0, &args, &nargs);
  if (rc) return rc == VM_DONE ? 0 : rc;
  uint64_t nv = 0, mem = 0;
  if (vcpus && vm_parse_uint(vcpus, 1, 512, &nv)) return vm_usage_error("invalid --vcpus '%s': 1 to 512", vcpus);
  if (memory && (vm_parse_size(memory, 'M', &mem) || mem < (UINT64_C(64) << 20)))
    return vm_usage_error("invalid --memory '%s': a size of at least 64M", memory);
  if (name && (rc = vm_check_name("VM", name))) return rc;
  if (boot_timeout < 1) return vm_usage_error("invalid --boot-timeout %d: at least 1 second", boot_timeout);
  for (size_t i = 0; networks && networks[i]; i++) {
    const char *m = networks[i];
    unsigned x[6];
    char tail;
    if (strlen(m) < 19 || m[17] != '=' || strspn(m, "0123456789abcdefABCDEF:") != 17 ||
        sscanf(m, "%2x:%2x:%2x:%2x:%2x:%2x%c", &x[0], &x[1], &x[2], &x[3], &x[4], &x[5], &tail) != 7 || tail != '=')
      return vm_usage_error("invalid --network '%s': MAC=NET, e.g. 52:54:00:12:34:56=default", m);
    struct vm_spec_nic nic;
    const char *net = m + 18;
    if (strchr(net, '=') && vm_nic_parse(net, &nic) != 0)
      return vm_usage_error("invalid --network '%s': NET is a network's name, network=NAME, bridge=BR, user or none", m);
  }
  int fd = STDIN_FILENO;
  if (input && (fd = open(input, O_RDONLY | O_CLOEXEC)) < 0)
    return vm_fail_errno(errno == ENOENT ? VM_EXIT_NOTFOUND : VM_EXIT_FAIL, "cannot open '%s'", input);
  if (!input && isatty(fd)) return vm_usage_error("the stream comes on stdin: p2v-agent send | p2v-convert");
  vm_catch_signals();
  struct conv c = { .name = name ? vm_strdup(name) : NULL, .vcpus = (unsigned)nv, .memory = mem,
                    .networks = networks, .adapt = !no_adapt };
  /* The boot test reads the console as libvirt's event loop receives it. */
  if (boot_test && (rc = vm_events_init())) return rc;
  CLEANUP_VIRCONN virConnectPtr conn = vm_connect();
  if (!conn) return VM_EXIT_FAIL;
  c.conn = conn;
  if ((rc = vm_pool_open(conn, pool ? pool : vm_default_pool(), &c.pool))) return rc;
  /* The boot test's throwaway overlays are qcow2 files beside the volumes. */
  if (boot_test && !vm_pool_is_file_based(c.pool))
    return vm_usage_error("--boot-test needs a pool of files (dir, fs, netfs): pool '%s' is not one",
                          pool ? pool : vm_default_pool());
  c.buf = malloc(VM_STREAM_MAX_BLOCK);
  c.dctx = ZSTD_createDCtx();
  if (!c.buf || !c.dctx) abort();
  struct vm_sreader rd;
  struct vm_p2v_check chk;
  vm_p2v_check_init(&chk);
  if (vm_sreader_start(&rd, vm_stream_fd_read, &fd) != 0) rc = vm_fail(VM_EXIT_VERIFY, "%s", rd.err);
  if (!rc) rc = read_stream(&c, &rd, &chk);
  vm_progress_end();
  if (!rc) rc = close_disks(&c);
  /* A guest that could not be adapted, or a VM that did not boot, is kept (the
   * stream cannot be sent again) and said by exit 6. */
  int verdict = 0;
  const char *why = NULL;
  json_object *rep = json_object_new_object();
  /* Once the stream is read, a step that fails keeps what it has: the disks as
   * received, the VM not (wholly) adapted, or not proven to boot. Ctrl-C before
   * the VM is whole rolls it back; during the boot test it keeps it. */
  if (!rc && (rc = guest_work(&c, &chk, rep))) {
    if (!vm_interrupted()) {
      verdict = VM_EXIT_VERIFY, rc = 0;
      why = c.adapt ? "its adaptation is not whole" : "its swap areas could not be made again";
    }
    else if (rc == VM_EXIT_VERIFY) rc = vm_fail_interrupted(); /* a step failed, then Ctrl-C */
    if (!json_object_object_get_ex(rep, "adapted", NULL))
      json_object_object_add(rep, "adapted", json_object_new_boolean(false));
  }
  if (!rc && vm_interrupted()) rc = vm_fail_interrupted();
  if (!rc) rc = finish_disks(&c);
  if (!rc && vm_interrupted()) rc = vm_fail_interrupted();
  if (!rc && boot_test) {
    struct pc_boot b = { .conn = conn, .pool = c.pool, .dom = c.dom, .rec = c.rec, .name = c.name,
                         .timeout_s = boot_timeout };
    if (pc_boot_test(&b, rep) != 0) {
      bool intr = vm_interrupted();
      verdict = intr ? VM_EXIT_FAIL : VM_EXIT_VERIFY;
      why = intr ? "its boot test was interrupted" : "it did not pass its boot test";
    }
  }
  /* The VM is whole: defined again, without the record. */
  if (!rc) rc = define_vm(&c, chk.inventory, NULL);
  for (size_t i = 0; i < c.ndisks; i++)
    if (c.disks[i].nbd) nbd_close(c.disks[i].nbd); /* stops its qemu-nbd */
  if (rc) vm_undo_run(&c.undo);
  else vm_undo_forget(&c.undo);
  if (!rc) {
    json_object_object_add(rep, "vm", json_object_new_string(c.name));
    json_object_object_add(rep, "host", json_object_new_string(vm_conn_host_name(conn)));
    json_object *dl = json_object_new_array();
    uint64_t written = 0;
    for (size_t i = 0; i < c.ndisks; i++) {
      json_object *d = json_object_new_object();
      json_object_object_add(d, "disk", json_object_new_string(chk.disks[i].name));
      json_object_object_add(d, "volume", json_object_new_string(c.disks[i].path));
      json_object_object_add(d, "size", json_object_new_int64((int64_t)c.disks[i].size));
      json_object_object_add(d, "written", json_object_new_int64((int64_t)c.disks[i].written));
      json_object_object_add(d, "swap_areas", json_object_new_int((int)chk.disks[i].nswaps));
      /* What inspection found on it (adapt.c). */
      json_object *roles, *r, *v;
      if (json_object_object_get_ex(rep, "roles", &roles) && (r = json_object_array_get_idx(roles, i))) {
        if (json_object_object_get_ex(r, "role", &v)) json_object_object_add(d, "role", json_object_get(v));
        if (json_object_object_get_ex(r, "mounts", &v)) json_object_object_add(d, "mounts", json_object_get(v));
      }
      json_object_array_add(dl, d);
      written += c.disks[i].written;
    }
    json_object_object_del(rep, "roles");
    json_object_object_add(rep, "disks", dl);
    json_object_object_add(rep, "stream_bytes", json_object_new_int64((int64_t)rd.bytes));
    json_object_object_add(rep, "written", json_object_new_int64((int64_t)written));
    json_object *passes;
    if (chk.trailer && json_object_object_get_ex(chk.trailer, "passes", &passes))
      json_object_object_add(rep, "passes", json_object_get(passes));
    if (vm_opts.format == VM_FMT_JSON || vm_opts.verbose) {
      static const struct vm_column cols[] = { { "stream_bytes", "stream", VM_COL_BYTES },
                                               { "written", "written", VM_COL_BYTES },
                                               { "size", "size", VM_COL_BYTES },
                                               { NULL, NULL, 0 } };
      rc = vm_print_record(rep, cols);
    } else {
      char a[16], b[16];
      vm_info("VM '%s' defined on %s: %zu disk%s, %s written from %s of stream", c.name, vm_conn_host_name(conn),
              c.ndisks, c.ndisks == 1 ? "" : "s", vm_format_size(written, a), vm_format_size(rd.bytes, b));
    }
    if (why) vm_warn("VM '%s' is kept as converted, but %s", c.name, why);
  }
  json_object_put(rep);
  if (c.dom) virDomainFree(c.dom);
  if (c.rec) xmlFreeDoc(c.rec);
  for (size_t i = 0; i < c.ndisks; i++) {
    if (c.disks[i].vol) virStorageVolFree(c.disks[i].vol);
    free(c.disks[i].volname);
    free(c.disks[i].path);
    free(c.disks[i].local);
  }
  if (c.scratch) vm_remove_tree(c.scratch);
  free(c.name);
  free(c.scratch);
  if (c.pool) virStoragePoolFree(c.pool);
  vm_sreader_free(&rd);
  vm_p2v_check_free(&chk);
  free(c.buf);
  ZSTD_freeDCtx(c.dctx);
  if (fd != STDIN_FILENO) close(fd);
  return rc ? rc : verdict;
}
