/* p2v-convert: what its parts share. main.c reads the stream and writes the disks;
 * adapt.c looks inside them (which disk holds the OS) and adapts the guest to the
 * VM's hardware; boot.c proves the VM boots. */
#ifndef P2V_CONVERT_H
#define P2V_CONVERT_H

#include <guestfs.h>

#include "vmkit-gfs.h"
#include "vmkit-stream.h"

/* One disk as written here: the server's name for it (from the stream), the qcow2
 * file libguestfs opens, and the volume on the VM's host. */
struct pc_disk {
  const char *server_name; /* sda, or the image file's name */
  const char *local;
  const char *path;
};

/* Inspects the guest on the disks attached to g (launched, in stream order) and
 * adapts it to virtio, a serial console and the server's NIC names (see
 * p2v-convert(1)). Adds to report: "os" (the product, or null), "roles" (one per
 * disk: "os" or "data", with the mount points it holds), "changes" (one line per
 * change). The inventory gives the NICs' names and MACs. 0, or an exit code after
 * a message (a guest that cannot be adapted is a warning, not an error). */
int pc_inspect_adapt(guestfs_h *g, const struct pc_disk *disks, size_t n, json_object *inventory,
                     json_object *report);

/* Boots the VM on throwaway overlays of its disks with its NICs unplugged, until
 * its serial console shows a login prompt or its guest agent answers, for at most
 * timeout_s seconds. The VM is still defined with its "create" journal record
 * (rec), and the overlays join it first: a run killed during the test is rolled
 * back whole by the next; the transient domain dies with the connection. 0 when it
 * booted; VM_EXIT_VERIFY when it did not (the console's last lines said);
 * another exit code after a message. The overlays and the transient domain are
 * gone when it returns. Adds "boot_test" to report. */
struct pc_boot {
  virConnectPtr conn;
  virStoragePoolPtr pool;
  virDomainPtr dom;
  xmlDocPtr rec;
  const char *name;
  int timeout_s;
};
int pc_boot_test(const struct pc_boot *b, json_object *report);

#endif
