/* libvmkit-snap's own model of a VM's snapshots and the helpers its modules share
 * (model.c, chain.c, recover.c, create.c, revert.c, delete.c); vmsnap's verbs that
 * read the model (list, prune, verify) include it too. Callers of the library's
 * operations include vmkit-snap.h alone. */
#ifndef VMKIT_SNAP_INTERNAL_H
#define VMKIT_SNAP_INTERNAL_H

#include "vmkit.h"
#include "vmkit-snap.h"

/* vmsnap's records (kind, pause and freeze times) live in the domain's metadata in
 * their own namespace, so they travel with the domain and work over remote URIs. */
#define SNAP_META_NS "https://vmkit.dev/xmlns/snapshots/1"
#define SNAP_META_PREFIX "vmsnap"

/* A disk as a snapshot sees it: the image frozen at the snapshot (base, from the
 * snapshot's copy of the domain) and, for external ones, the overlay libvirt made
 * then (overlay). */
struct snap_disk {
  char *target, *mode; /* mode: internal, external, no */
  char *base, *base_format, *overlay;
};

struct snap {
  virDomainSnapshotPtr ptr;
  char *name, *parent, *description, *state;
  long long created;
  char *memory;   /* no, internal, external */
  char *memfile;
  struct snap_disk *disks;
  size_t ndisks;
  bool current, external;
  char *xml;
  bool dirty; /* xml changed here, to be redefined in libvirt */
  /* From vmsnap's record; derived from libvirt's when there is none. */
  char *kind;     /* crash-consistent, quiesced, memory, offline */
  long paused_ms, frozen_ms;
};

struct snaps {
  struct snap *v;
  size_t n;
};

int snaps_load(virDomainPtr dom, struct snaps *s);
struct snap *snaps_find(struct snaps *s, const char *name);
void snaps_free(struct snaps *s);
/* Writes the records of every snapshot in s but skip (stale ones drop out). */
int snaps_save_records(virDomainPtr dom, const struct snaps *s, const struct snap *skip);
/* The records as the metadata element they are kept in. */
xmlDocPtr snaps_records_doc(const struct snaps *s, const struct snap *skip);
/* Finds a snapshot by name; VM_EXIT_NOTFOUND with a message when there is none. */
int snap_lookup(struct snaps *s, const char *vm, const char *name, struct snap **out);

/* True when libvirt on this host reverts and deletes external snapshots itself. */
bool libvirt_handles_external(virConnectPtr conn);

/* Deleting one snapshot, shared by delete and prune (delete.c). */
int snap_delete(virConnectPtr conn, virDomainPtr dom, struct snaps *s, const char *name, bool metadata_only);
/* Finishes a delete from its journal record (delete.c): the merges not yet done,
 * then the records and files. */
int delete_execute(virConnectPtr conn, virDomainPtr dom, xmlDocPtr rec);

/* The path of a new overlay for disk TARGET of VM: beside CURRENT (the image the
 * disk stands on now; in the default pool when that is a template's), named
 * VM-TARGET.LABEL.qcow2, so that vmrun undefine --remove-storage knows it is the
 * VM's. 0 or an exit code. */
int overlay_path(virConnectPtr conn, const char *vm, const char *target, const char *current, const char *label,
                 char **out);

/* Journal records of vmsnap's own (recover.c): what create, revert and delete are
 * about to do, so that the next vmsnap run on the VM finishes or rolls back what a
 * killed run started. vm_snap_lock() takes the VM's lock and does that first. */
/* Removes the overlays a revert's record names as discarded, those nothing stands
 * on (revert.c). */
void revert_discard(virConnectPtr conn, xmlDocPtr rec);
/* Removes the files a snapshot-create record names that nothing uses, and the
 * record (recover.c). */
void snapshot_create_rollback(virConnectPtr conn, virDomainPtr dom, xmlDocPtr rec);
/* The snapshot a vmsnap journal record is about (caller frees), NULL if none. */
char *journal_snapshot(xmlDocPtr rec);
/* Waits until no job of libvirt's runs on the VM (a killed run's snapshot may
 * still be finishing in the daemon). */
int wait_domain_jobs(virDomainPtr dom, int seconds);

#endif
