/* p2v-convert: reads the stream of p2v-agent (p2v-stream(5)) on stdin and makes
 * a VM of it: each disk a qcow2 volume of a libvirt pool (written through
 * qemu-nbd and libnbd; for another host, built here and uploaded through a
 * sparse libvirt stream), then the VM defined from the server's inventory.
 * Nothing is left of a stream that is refused: no volume, no VM. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libnbd.h>
#include <zstd.h>

#include "vmkit-gfs.h"
#include "vmkit-stream.h"

struct cdisk {
  char *volname, *path;     /* the volume, on the VM's host */
  char *local;              /* the qcow2 written here (the volume itself on a local file pool) */
  virStorageVolPtr vol;
  struct nbd_handle *nbd;
  uint64_t size, written, zeroed;
};

struct conv {
  char *name;
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
  char *argv[] = { "qemu-nbd", "-f", "qcow2", "--discard=unmap", "--cache=writeback", d->local, NULL };
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
    d->size = chk->disks[i].size;
    d->volname = i == 0 ? vm_strdup_printf("%s.qcow2", c->name) : vm_strdup_printf("%s-disk%zu.qcow2", c->name, i);
    struct vm_volspec spec = { .name = d->volname, .format = "qcow2", .capacity = d->size };
    int rc = vm_vol_create(c->pool, &spec, &d->vol);
    if (rc) return rc;
    d->path = virStorageVolGetPath(d->vol);
    if (!d->path) return vm_fail_virt("cannot read the path of volume '%s'", d->volname);
    vm_undo_volume(&c->undo, c->conn, d->path);
    c->ndisks = i + 1;
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
static int write_block(struct conv *c, struct cdisk *d, const struct vm_rec_data *r, unsigned pass)
{
  const size_t step = 65536;
  size_t pos = 0;
  while (pos < r->length) {
    size_t n = r->length - pos < step ? r->length - pos : step;
    bool zero = true;
    for (size_t k = 0; k < n && zero; k += 8)
      zero = n - k >= 8 ? *(const uint64_t *)(c->buf + pos + k) == 0 : c->buf[pos + k] == 0;
    /* Consecutive ranges of one kind go as one request. */
    size_t end = pos + n;
    while (end < r->length) {
      size_t m = r->length - end < step ? r->length - end : step;
      bool z2 = true;
      for (size_t k = 0; k < m && z2; k += 8)
        z2 = m - k >= 8 ? *(const uint64_t *)(c->buf + end + k) == 0 : c->buf[end + k] == 0;
      if (z2 != zero) break;
      end += m;
    }
    int e = 0;
    if (!zero) {
      e = nbd_pwrite(d->nbd, c->buf + pos, end - pos, r->offset + pos, 0);
      d->written += end - pos;
    } else if (pass > 1) {
      e = nbd_zero(d->nbd, end - pos, r->offset + pos, 0);
      d->zeroed += end - pos;
    }
    if (e == -1) return fail_nbd("write", d->local);
    pos = end;
  }
  return 0;
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
    case VM_REC_INVENTORY:
      if (!c->name) {
        json_object *h;
        c->name = json_object_object_get_ex(chk->inventory, "hostname", &h) && json_object_is_type(h, json_type_string)
                    ? vm_strdup(json_object_get_string(h))
                    : NULL;
        if (!c->name) return vm_fail(VM_EXIT_USAGE, "the server sent no host name: give the VM's name with --name");
      }
      if ((rc = vm_check_name("VM", c->name))) return rc;
      {
        virDomainPtr other = virDomainLookupByName(c->conn, c->name);
        if (other) {
          virDomainFree(other);
          return vm_fail(VM_EXIT_STATE, "a VM named '%s' exists on %s", c->name, vm_conn_host_name(c->conn));
        }
        virResetLastError();
      }
      vm_info("converting server '%s' into VM '%s': %zu disk%s", c->name, c->name, chk->ndisks, chk->ndisks == 1 ? "" : "s");
      rc = make_disks(c, chk);
      break;
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
      if (chk->pass > 1 && nbd_zero(c->disks[ev.disk].nbd, ev.hole.length, ev.hole.offset, 0) == -1)
        rc = fail_nbd("write", c->disks[ev.disk].local);
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
static int make_swaps(struct conv *c, const struct vm_p2v_check *chk)
{
  size_t nswaps = 0;
  for (size_t i = 0; i < c->ndisks; i++) nswaps += chk->disks[i].nswaps;
  if (!nswaps) return 0;
  CLEANUP_GUESTFS guestfs_h *g = vm_gfs_open();
  if (!g) return VM_EXIT_FAIL;
  for (size_t i = 0; i < c->ndisks; i++)
    if (guestfs_add_drive_opts(g, c->disks[i].local, GUESTFS_ADD_DRIVE_OPTS_FORMAT, "qcow2", -1) == -1)
      return vm_fail_gfs(g, "cannot open '%s'", c->disks[i].local);
  if (guestfs_launch(g) == -1) return vm_fail_gfs(g, "cannot start libguestfs");
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
      if (!dev && sw->offset == 0) dev = vm_strdup(devs[i]);
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
  if (guestfs_shutdown(g) == -1) return vm_fail_gfs(g, "cannot close the disks");
  return 0;
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

static int define_vm(struct conv *c, json_object *inv, unsigned vcpus, uint64_t memory, virDomainPtr *dom)
{
  struct vm_spec spec = { .name = c->name, .virt_type = vm_virt_type_of(c->conn) };
  uint64_t threads = inv_u64(inv, "cpu", "threads");
  spec.vcpus = vcpus ? vcpus : threads ? (unsigned)(threads > 64 ? 64 : threads) : 1;
  uint64_t mem = memory ? memory : inv_u64(inv, "memory", NULL);
  spec.memory = mem ? mem : UINT64_C(1) << 30;
  for (size_t i = 0; i < c->ndisks && spec.ndisks < VM_MAX_DEVS - 1; i++)
    spec.disks[spec.ndisks++] = (struct vm_spec_disk){ .path = c->disks[i].path, .format = "qcow2" };
  spec.disks[spec.ndisks++] = (struct vm_spec_disk){ .device = "cdrom" };
  json_object *nics;
  if (json_object_object_get_ex(inv, "nics", &nics) && json_object_is_type(nics, json_type_array)) {
    for (size_t i = 0; i < json_object_array_length(nics) && spec.nnics < VM_MAX_DEVS; i++) {
      json_object *m, *n = json_object_array_get_idx(nics, i);
      const char *mac = n && json_object_object_get_ex(n, "mac", &m) && json_object_is_type(m, json_type_string)
                          ? json_object_get_string(m)
                          : NULL;
      unsigned x[6];
      char tail;
      if (!mac || sscanf(mac, "%2x:%2x:%2x:%2x:%2x:%2x%c", &x[0], &x[1], &x[2], &x[3], &x[4], &x[5], &tail) != 6) continue;
      spec.nics[spec.nnics++] = (struct vm_spec_nic){ .type = "user", .mac = mac };
    }
  }
  json_object *boot;
  if (json_object_object_get_ex(inv, "boot", &boot) && json_object_is_type(boot, json_type_string) &&
      !strcmp(json_object_get_string(boot), "uefi"))
    spec.firmware = "efi";
  CLEANUP_FREE char *xml = vm_spec_xml(&spec);
  if (!(*dom = virDomainDefineXML(c->conn, xml))) return vm_fail_virt("cannot define VM '%s'", c->name);
  vm_undo_domain(&c->undo, *dom);
  return 0;
}

int main(int argc, char **argv)
{
  vm_init("p2v-convert");
  argv[0] = (char *)vm_progname; /* usage errors point at "p2v-convert --help" */
  char *name = NULL, *pool = NULL, *vcpus = NULL, *memory = NULL, *input = NULL;
  struct poptOption table[] = {
    { "name", '\0', POPT_ARG_STRING, &name, 0, "the VM's name (default: the server's host name)", "NAME" },
    { "pool", '\0', POPT_ARG_STRING, &pool, 0, "the storage pool of its disks (default: $VMKIT_POOL, else default)", "POOL" },
    { "vcpus", '\0', POPT_ARG_STRING, &vcpus, 0, "vCPUs (default: the server's hardware threads)", "N" },
    { "memory", '\0', POPT_ARG_STRING, &memory, 0, "memory (default: the server's)", "SIZE" },
    { "input", 'i', POPT_ARG_STRING, &input, 0, "read the stream from FILE (default: stdin)", "FILE" },
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
  int fd = STDIN_FILENO;
  if (input && (fd = open(input, O_RDONLY | O_CLOEXEC)) < 0)
    return vm_fail_errno(errno == ENOENT ? VM_EXIT_NOTFOUND : VM_EXIT_FAIL, "cannot open '%s'", input);
  if (!input && isatty(fd)) return vm_usage_error("the stream comes on stdin: p2v-agent send | p2v-convert");
  vm_catch_signals();
  struct conv c = { .name = name ? vm_strdup(name) : NULL };
  CLEANUP_VIRCONN virConnectPtr conn = vm_connect();
  if (!conn) return VM_EXIT_FAIL;
  c.conn = conn;
  if ((rc = vm_pool_open(conn, pool ? pool : vm_default_pool(), &c.pool))) return rc;
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
  if (!rc) rc = make_swaps(&c, &chk);
  if (!rc) rc = finish_disks(&c);
  virDomainPtr dom = NULL;
  if (!rc && vm_interrupted()) rc = vm_fail_interrupted();
  if (!rc) rc = define_vm(&c, chk.inventory, (unsigned)nv, mem, &dom);
  for (size_t i = 0; i < c.ndisks; i++)
    if (c.disks[i].nbd) nbd_close(c.disks[i].nbd); /* stops its qemu-nbd */
  if (rc) vm_undo_run(&c.undo);
  else vm_undo_forget(&c.undo);
  if (!rc) {
    json_object *rep = json_object_new_object();
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
      json_object_array_add(dl, d);
      written += c.disks[i].written;
    }
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
    json_object_put(rep);
  }
  if (dom) virDomainFree(dom);
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
  return rc;
}
