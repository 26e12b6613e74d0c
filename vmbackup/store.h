/* The chunk store of a vmbackup repository (man/vmbackup-repository.5): the
 * repository opened (its config read, its key unwrapped, its lock taken), chunks
 * looked up in the indexes, new ones appended to pack files, chunks and manifests
 * read back and authenticated. Thread-safe where it says so: a backup's workers
 * claim, seal and append chunks from several threads. */
#ifndef VMBACKUP_STORE_H
#define VMBACKUP_STORE_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "crypto.h"
#include "index.h"
#include "manifest.h"
#include "vmkit-base.h"

/* A pack is closed once it holds this much. */
#define VB_PACK_TARGET (64u << 20)

enum vb_lockmode { VB_LOCK_NONE, VB_LOCK_SHARED, VB_LOCK_EXCLUSIVE };

struct vb_table; /* chunk id -> where it is */
struct vb_fs;
struct vb_packfd;

struct vb_repo {
  char *path;             /* the repository as named: a folder, or ssh://... */
  char *shown;            /* as the user named it, for messages */
  struct vb_fs *fs;       /* its files, and its lock (fs.h) */
  struct vb_config cfg;
  struct vb_keys keys;
  struct vb_keyjob *keyjob; /* the key, being derived (vb_repo_open_deferred) */
  int key_rc;
  /* The newest merged index, mapped, and every other pack's index in the table. */
  unsigned char *merged_map; /* mapped (vb_fs_map) */
  size_t merged_len;
  unsigned merged_n; /* its N; 0: none */
  struct vb_index merged;
  struct vb_table *table;
  pthread_mutex_t mu; /* the table, the pack being written, the counters */
  /* The pack this writer appends to (fd -1: none yet). */
  int pack_fd;
  unsigned char pack_id[VB_PACK_ID_LEN];
  char *pack_tmp;
  uint64_t pack_size;
  struct vb_ientry *pack_e;
  size_t pack_n, pack_cap;
  int write_error; /* errno of a failed append: every later one fails too */
  /* Open pack files for reading. */
  struct vb_packfd *fds;
  size_t nfds;
  pthread_mutex_t fdmu;
  /* The packs this run put in place. */
  unsigned char (*written)[VB_PACK_ID_LEN];
  size_t nwritten;
  /* Counters of what this run stored. */
  uint64_t new_chunks, new_raw, new_stored;
};

/* The passphrase: the first line of --passphrase-file, else VMKIT_PASSPHRASE.
 * 0 and *pass (caller frees with vb_passphrase_free), 1 when neither is given
 * (no message), or an exit code after a message. */
int vb_passphrase(const char *file, char **pass, size_t *len);
void vb_passphrase_free(char *pass, size_t len);

/* Makes a new repository at path (a folder that does not exist, or is empty)
 * with cfg (its key wrapped already) and the layout's folders; the config is
 * written last, so a killed init leaves no repository that opens. 0 or an
 * exit code after a message. */
int vb_repo_create(const char *path, const struct vb_config *cfg);

/* Opens the repository at path: its config, the key (with the passphrase of
 * --passphrase-file or VMKIT_PASSPHRASE: a repository that is encrypted needs
 * one, and a client given one refuses a repository without encryption), the
 * lock. 0 or an exit code after a message (3: no repository there; 6: its
 * config is damaged; 1: wrong passphrase). */
int vb_repo_open(const char *path, const char *passfile, enum vb_lockmode lock, int wait_s, struct vb_repo **out);
/* The same, the key derived on a thread of its own (scrypt takes a core for
 * a good part of a second, which backup spends meanwhile on libvirt): nothing
 * may use r->keys before vb_repo_key has returned 0. */
int vb_repo_open_deferred(const char *path, const char *passfile, enum vb_lockmode lock, int wait_s,
                          struct vb_repo **out);
/* Waits for the key of vb_repo_open_deferred: 0, or 1 after a message (a wrong
 * passphrase), the same again at every later call. 0 at once after vb_repo_open. */
int vb_repo_key(struct vb_repo *r);
void vb_repo_close(struct vb_repo *r);

/* Reads the indexes: the newest merged one (mapped), the per-pack ones it does
 * not cover. A writer (repair true) indexes again a pack that has no index, and
 * removes what dead writers left in tmp/. 0 or an exit code after a message. */
int vb_repo_load_index(struct vb_repo *r, bool repair);

/* Where a chunk is: true when the repository (or this run) holds it. */
bool vb_repo_lookup(struct vb_repo *r, const unsigned char id[VB_ID_LEN], struct vb_ientry *e);

/* For a writer (thread-safe): true when the chunk is stored already or another
 * thread of this run is storing it; false when it is not, and the caller now
 * owes vb_repo_append of it. */
bool vb_repo_claim(struct vb_repo *r, const unsigned char id[VB_ID_LEN]);
/* Appends a sealed record (vb_seal's output, reclen bytes) of raw length rawlen
 * to this run's pack (thread-safe); a full pack is closed and a new one begun.
 * 0 or an exit code after a message. */
int vb_repo_append(struct vb_repo *r, const unsigned char id[VB_ID_LEN], const unsigned char *rec, size_t reclen,
                   size_t rawlen);
/* 0 while this run's lock is still its own, else VM_EXIT_STATE after a message
 * (it was taken over as stale: whoever holds it now must not be disturbed). */
int vb_repo_still_locked(struct vb_repo *r);
/* Marks this run's writing failed: every later append and flush fails. */
void vb_repo_fail(struct vb_repo *r);
/* Closes the pack being written: flushed, renamed into packs/, its index
 * written. Every chunk this run appended is then in place. 0 or an exit code. */
int vb_repo_flush(struct vb_repo *r);

/* Reads chunk id, authenticated, into raw (cap bytes, at least the chunk size).
 * Thread-safe. 0, 3 when no index names it, 6 when its record is damaged
 * (with *why), or 1 on an I/O error; no message (the caller says which
 * snapshot and disk). */
int vb_repo_read_chunk(struct vb_repo *r, const unsigned char id[VB_ID_LEN], unsigned char *raw, size_t cap,
                       size_t *rawlen, const char **why);

/* Puts a manifest in place: sealed, written, flushed, renamed into snapshots/
 * (after checking that this run's lock is still its own). 0 or an exit code. */
int vb_snapshot_put(struct vb_repo *r, const struct vb_manifest *m);
/* Reads and checks the manifest of snapshot id (32 hex digits). 0, 3 when there
 * is none, 6 when it is damaged (with a message each). */
int vb_snapshot_get(struct vb_repo *r, const char *id, struct vb_manifest *m);
/* The IDs of every snapshot, sorted. */
int vb_snapshot_ids(struct vb_repo *r, struct vm_strv *ids);
/* A snapshot named by the user: its full ID or a unique prefix of at least 6
 * digits. 0 with *id (caller frees), 3 or 2 after a message. */
int vb_snapshot_resolve(struct vb_repo *r, const char *name, char **id);

/* Reads pack hex (32 digits) whole and lists its records from their heads
 * (structure only, nothing opened): every record, in order. The bytes are
 * handed back in *buf when buf is not NULL (caller frees). 0, VM_EXIT_VERIFY
 * with *why when its header or a record's length is wrong (the records before
 * are listed), VM_EXIT_FAIL when it cannot be read. *e: caller frees. */
int vb_pack_scan(struct vb_repo *r, const char *hex, unsigned char **buf, size_t *len, struct vb_ientry **e,
                 size_t *n, const char **why);
/* Repairs what a killed writer left: indexes the packs that have none. */
int vb_repo_reindex(struct vb_repo *r, const char *hex);

/* Every chunk entry of the indexes loaded (the merged one's, then the others'),
 * one call each; an id in two packs comes twice. */
void vb_repo_foreach_entry(struct vb_repo *r, void (*fn)(const struct vb_ientry *e, void *arg), void *arg);
/* The record of an entry as it lies in its pack (sealed, its 4-byte length
 * first): 4 + e->reclen bytes into buf. 0 or an exit code, no message (*why). */
int vb_repo_read_record(struct vb_repo *r, const struct vb_ientry *e, unsigned char *buf, const char **why);
/* Appends a record copied from another pack as it is (compact). */
int vb_repo_append_record(struct vb_repo *r, const struct vb_ientry *e, const unsigned char *rec);
/* Writes index/merged.N+1 over entries (one per id) of the packs listed, with
 * link(2) so that it never replaces a file. 0 or an exit code after a message. */
int vb_repo_write_merged(struct vb_repo *r, struct vb_ientry *e, size_t n, unsigned char (*packs)[VB_PACK_ID_LEN],
                         size_t npacks);
/* Removes a pack: its index first, then the pack (a pack without an index is
 * indexed again, never an index without its pack). 0 or an exit code. */
int vb_repo_remove_pack(struct vb_repo *r, const unsigned char pack[VB_PACK_ID_LEN]);
/* Removes every index file that the newest merged index makes redundant: the
 * older merged ones and the per-pack ones of packs it lists. */
void vb_repo_drop_covered_indexes(struct vb_repo *r);
/* The packs this run wrote (their IDs), for compact. */
size_t vb_repo_new_packs(struct vb_repo *r, unsigned char (**packs)[VB_PACK_ID_LEN]);
/* Removes a snapshot's manifest (prune). 0 or an exit code after a message. */
int vb_snapshot_remove(struct vb_repo *r, const char *id);

/* A file of the repository as messages name it. */
char *vb_repo_file(const struct vb_repo *r, const char *fmt, ...) VM_PRINTF(2, 3);
/* 32 lowercase hex digits of a 16-byte ID. */
void vb_hex16(const unsigned char id[16], char out[33]);
int vb_unhex16(const char *s, unsigned char id[16]);

#endif
