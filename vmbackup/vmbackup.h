/* vmbackup's verbs; the repository format lives in config, crypto, index,
 * manifest and store; shared code in common/. */
#ifndef VMBACKUP_H
#define VMBACKUP_H

#include "vmkit.h"
#include "store.h"

/* --passphrase-file, in every verb that opens a repository. */
extern char *vb_passfile;
extern struct poptOption vb_repo_table[];
#define VB_POPT_REPO { NULL, '\0', POPT_ARG_INCLUDE_TABLE, vb_repo_table, 0, "Repository options:", NULL }

/* Opens the repository the user named (a path; ssh:// is refused here until it
 * is served), with the lock and --lock-wait. */
int vb_open_repo(const char *name, enum vb_lockmode lock, struct vb_repo **r);

/* "2026-12-01T03:00:00Z" to seconds since the epoch; -1 when not that form. */
long long vb_parse_utc(const char *s);

/* A snapshot as list shows it (a json object). */
json_object *vb_snapshot_row(const struct vb_manifest *m);
/* The rows of every snapshot (of vm only, a name or UUID, when not NULL), oldest
 * first; *damaged set when a manifest could not be read (said so). */
int vb_load_snapshots(struct vb_repo *r, const char *vm, json_object *rows, bool *damaged);
/* Writes disk d of snapshot m into fd (sparse: holes are not written), chunks
 * authenticated on the workers; then flushes fd. 0 or an exit code after a
 * message naming the snapshot and disk. */
int vb_restore_disk(struct vb_repo *r, const struct vb_manifest *m, const struct vb_mdisk *d, int fd,
                    const char *label);

/* nbdkit serving a disk of a snapshot with vmbackup's plugin, as a child that
 * ends with this process. */
struct vb_server {
  pid_t pid; /* the guardian that runs nbdkit */
  int wfd;   /* the guardian's pipe: closed, it stops nbdkit */
  char *dir, *sock, *stats;
  /* After stop: what the plugin read. */
  uint64_t chunks_read, chunks, chunk_size, disk_size;
};
/* Starts it on sock (NULL: a socket in a private folder) or on TCP port at
 * listen, and waits until it serves. 0 or an exit code after a message (call
 * vb_server_stop either way). */
int vb_server_start(const char *repo, const char *snap, const char *disk, const char *sock, const char *listen,
                    int port, struct vb_server *s);
void vb_server_stop(struct vb_server *s);

/* The saved definition of snapshot m for a new VM name whose disks are at paths
 * (one per disk of m): no UUID, MACs, metadata or backing chains. Caller frees;
 * NULL when the definition does not name the snapshot's disks. */
char *vb_new_definition(const struct vb_manifest *m, const char *name, char *const *paths);
/* Checks that a new VM name is free on the connection (-c, --on) and opens the
 * pool for its disks. 0, or an exit code after a message (*conn and *pool, when
 * set, are the caller's to free either way). */
int vb_new_vm_place(const char *name, const char *pool_name, virConnectPtr *conn, virStoragePoolPtr *pool);
/* A new VM's volume names: NAME.qcow2, then NAME-diskN.qcow2. Caller frees. */
char *vb_volume_name(const char *vm, size_t i);
/* Disk d of snapshot m into a new qcow2 volume volname of pool: restored in
 * scratch, converted, uploaded through a sparse stream. *path is set once the
 * volume exists (even when the upload then fails: the caller undoes it). 0 or
 * an exit code after a message. */
int vb_disk_to_volume(struct vb_repo *r, const struct vb_manifest *m, const struct vb_mdisk *d, const char *scratch,
                      virStoragePoolPtr pool, const char *volname, const char *label, char **path);
/* restore --live --as name (live.c): bandwidth in MiB/s, 0 for no limit. */
int vb_restore_live(const char *repo, const struct vb_manifest *m, const char *name, const char *pool,
                    unsigned long bandwidth);

/* Finishes or rolls back what a killed backup (backup.c) or in-place restore
 * (inplace.c) left on a VM whose lock this run holds; clears the journal. */
int vb_backup_recover(virConnectPtr conn, virDomainPtr dom, const char *vm);
int vb_inplace_recover(virConnectPtr conn, virDomainPtr dom, const char *vm);
/* restore --in-place: the snapshot's VM (by UUID), shut off, gets its disks. */
int vb_restore_in_place(struct vb_repo *r, const struct vb_manifest *m);

/* serve --stdio (rserve.c): the far side of an ssh:// repository, until the
 * end of its input. restrict_to: nr folders the repository must be in (none:
 * anywhere). 0 or an exit code. */
int vb_serve_stdio(char **restrict_to, size_t nr, bool append_only);

int cmd_init(int argc, char **argv);
int cmd_key(int argc, char **argv);
int cmd_backup(int argc, char **argv);
int cmd_list(int argc, char **argv);
int cmd_restore(int argc, char **argv);
int cmd_check(int argc, char **argv);
int cmd_prune(int argc, char **argv);
int cmd_compact(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_ls(int argc, char **argv);
int cmd_restore_file(int argc, char **argv);

#endif
