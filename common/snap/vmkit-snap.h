/* libvmkit-snap: vmsnap's snapshots as a library, for vmsnap's verbs and for the
 * tools that snapshot a VM around their own work (vmpatch: a snapshot before it
 * patches, a revert when the patch breaks the VM), in their own process while they
 * hold the VM's lock. External disk-only, memory (internal or external) and offline
 * snapshots; reverts and deletes that keep the chains whole; each operation written
 * into the VM's journal first, so that the next run finishes or rolls back what a
 * killed one started. It stands on libvmkit-virt. Every function that can fail
 * returns 0 or an exit code (VM_EXIT_*) after one message, like the layers below. */
#ifndef VMKIT_SNAP_H
#define VMKIT_SNAP_H

#include <stdbool.h>

#include "vmkit-virt.h"

/* Takes the VM's lock (vm_lock_and_recover: *dom may be looked up again) and
 * finishes or rolls back what a killed snapshot run left in its journal. Every
 * call below that changes the VM wants the caller to hold the lock this way. */
int vm_snap_lock(virConnectPtr conn, virDomainPtr *dom, const char *vm);

/* Whether the VM has a snapshot of that name (libvirt's record). */
bool vm_snap_exists(virDomainPtr dom, const char *name);

/* ---- Create ---------------------------------------------------------------------- */
enum vm_snap_quiesce {
  VM_SNAP_QUIESCE_NO,   /* crash-consistent */
  VM_SNAP_QUIESCE_YES,  /* through the guest agent, or fail */
  VM_SNAP_QUIESCE_AUTO, /* when the guest agent answers */
};
struct vm_snap_create_opts {
  const char *description; /* NULL: none */
  bool memory;             /* the guest's memory too: internal, or external with external */
  bool disk_only;          /* external overlays (the default for a running VM) */
  bool external;           /* with memory: the memory in a file, the disks in overlays */
  enum vm_snap_quiesce quiesce; /* disk-only snapshots of a running VM only */
};
/* What a snapshot taken was, for the caller to report. */
struct vm_snap_created {
  const char *kind;   /* crash-consistent, quiesced, memory, offline (static) */
  bool live;          /* the VM ran (or was paused) */
  bool internal;      /* libvirt's internal snapshot, not overlays */
  bool frozen;        /* the guest's filesystems were frozen */
  long paused_ms;     /* how long the vCPUs were paused; -1: not measured */
  long frozen_ms;     /* how long the filesystems were frozen; -1: they were not */
  long long wall_ms;  /* the snapshot call, in all */
};
/* Takes snapshot NAME of VM (named vm in messages). The caller holds the lock
 * (vm_snap_lock) and, for a running VM, has called vm_events_init() (the pause is
 * measured from libvirt's events). Option conflicts that are usage errors (memory
 * with disk_only, external without memory, quiesce with memory) are the caller's
 * to refuse; state errors (a snapshot of that name exists, encrypted disks, a
 * memory snapshot or quiesce of a shut-off VM, a mix of internal and external,
 * an overlay's file there already) are here. Says what it took (vm_info:
 * vm_snap_created_info). 0 or an exit code after one message. */
int vm_snap_create(virConnectPtr conn, virDomainPtr dom, const char *vm, const char *name,
                   const struct vm_snap_create_opts *o);
/* vm_snap_create, but silent on success: fills *out (when not NULL) for the
 * caller to report (vmsnap create prints the name on stdout first). */
int vm_snap_create_result(virConnectPtr conn, virDomainPtr dom, const char *vm, const char *name,
                          const struct vm_snap_create_opts *o, struct vm_snap_created *out);
/* The line (vm_info) that says what a snapshot taken was. */
void vm_snap_created_info(const char *vm, const char *name, const struct vm_snap_created *c);

/* ---- Revert ---------------------------------------------------------------------- */
struct vm_snap_revert_opts {
  bool running; /* run the VM after the revert */
  bool paused;  /* leave it paused (not with running); neither: as the snapshot was */
  bool force;   /* where libvirt calls a revert risky */
};
/* Reverts VM (named vm in messages) to snapshot NAME; what it ran since is
 * discarded. The caller holds the lock. An external snapshot that this libvirt
 * cannot revert is reverted here: new overlays, the domain defined again from the
 * snapshot's copy of it (same UUID: *dom stays valid and is left as it is), the
 * memory restored. Says what it did (vm_info). 0 or an exit code after one
 * message (VM_EXIT_NOTFOUND when there is no such snapshot or one of its files is
 * missing). */
int vm_snap_revert(virConnectPtr conn, virDomainPtr *dom, const char *vm, const char *name,
                   const struct vm_snap_revert_opts *o);

/* ---- Delete ---------------------------------------------------------------------- */
struct vm_snap_delete_opts {
  bool metadata_only; /* only libvirt's record; every image left as it is */
};
/* Deletes snapshot NAME of the VM, merging as vmsnap delete does (an external
 * snapshot's overlay merged into the image it froze, in the running VM or in a
 * paused helper domain; refused when that image is a template's or another VM's),
 * and says so (vm_info). The caller holds the lock. Messages name the domain as
 * libvirt does (vm is the caller's name for it). 0 or an exit code after one
 * message. */
int vm_snap_delete(virConnectPtr conn, virDomainPtr dom, const char *vm, const char *name);
/* vm_snap_delete with options (o NULL: the defaults), as vmsnap delete's. */
int vm_snap_delete_with(virConnectPtr conn, virDomainPtr dom, const char *vm, const char *name,
                        const struct vm_snap_delete_opts *o);

#endif
