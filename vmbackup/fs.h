/* A repository's files, wherever the repository is: a folder of this machine,
 * or a folder of another one reached through ssh ("ssh://[USER@]HOST[:PORT]/PATH"),
 * where `vmbackup serve --stdio` does each operation (remote.c is the client,
 * rserve.c the server, proto.h the messages between them). The chunk store
 * (store.c) and the verbs reach the repository only through these calls, so
 * that every verb works on both, and a server run with --append-only refuses
 * whatever would remove or replace history whoever asks.
 *
 * Paths are relative to the repository's folder ("" is the folder itself).
 * Calls return -1 with errno set unless they say otherwise; the ones that can be
 * refused by the server's rules (append-only, a path outside its --restrict-to-path)
 * fail with EPERM, and vb_fs_error() then holds the server's words. Thread-safe:
 * a remote repository's calls take turns on its one connection. */
#ifndef VMBACKUP_FS_H
#define VMBACKUP_FS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vmkit-base.h"

struct vb_fs;

/* Opens the repository named repo: "ssh://..." starts ssh and the server
 * (VMKIT_RSH: the ssh command, "ssh" by default, split at spaces;
 * VMKIT_REMOTE_PATH: the far side's vmbackup, "vmbackup" by default); anything
 * else is a local folder. The folder need not exist (init makes it). 0 and
 * *out, or an exit code after a message. */
int vb_fs_open(const char *repo, struct vb_fs **out);
/* Ends the connection (the server then drops what was not committed and
 * releases the lock) or, locally, closes what is open. NULL is fine. */
void vb_fs_close(struct vb_fs *fs);
/* The repository as the user named it, for messages. */
const char *vb_fs_shown(const struct vb_fs *fs);
/* The local folder (NULL for a remote repository). */
const char *vb_fs_local_path(const struct vb_fs *fs);
bool vb_fs_remote(const struct vb_fs *fs);
/* A remote repository served --append-only: nothing is removed or replaced. */
bool vb_fs_append_only(const struct vb_fs *fs);
/* The server's message for the last refused call ("" when none). */
const char *vb_fs_error(const struct vb_fs *fs);

/* A whole file of at most max bytes (NUL-terminated; caller frees); NULL with
 * errno (ENOENT, EFBIG when larger). */
char *vb_fs_read(struct vb_fs *fs, const char *rel, size_t max, size_t *len);
/* A file's size; -1 with errno (ENOENT) when there is none. */
int vb_fs_size(struct vb_fs *fs, const char *rel, uint64_t *size);
/* 1 when rel exists, 0 when not, -1 on an error. */
int vb_fs_exists(struct vb_fs *fs, const char *rel);
/* The names in folder rel (no dot files), sorted; a folder that does not exist
 * is empty. */
int vb_fs_list(struct vb_fs *fs, const char *rel, struct vm_strv *out);
int vb_fs_mkdir(struct vb_fs *fs, const char *rel);
int vb_fs_rmdir(struct vb_fs *fs, const char *rel);
int vb_fs_unlink(struct vb_fs *fs, const char *rel);
/* Flushes folder rel (after a name in it was removed). */
int vb_fs_sync_dir(struct vb_fs *fs, const char *rel);

/* Writing a new file: made at tmprel (under tmp/, or beside dst for the config),
 * written, then vb_fs_commit flushes it and puts it at dstrel, never replacing
 * a file there (EEXIST) unless replace (the config only), making dstrel's
 * folder when it is missing and flushing the folders. A handle, or -1. */
int vb_fs_create(struct vb_fs *fs, const char *tmprel);
/* Writes are buffered and, remotely, not answered: an error shows at commit. */
int vb_fs_write(struct vb_fs *fs, int h, const void *buf, size_t n);
int vb_fs_commit(struct vb_fs *fs, int h, const char *dstrel, bool replace);
/* Drops a file being written (its tmp file removed). */
void vb_fs_abort(struct vb_fs *fs, int h);
/* create, write, commit in one. */
int vb_fs_put(struct vb_fs *fs, const char *tmprel, const char *dstrel, const void *data, size_t len, bool replace);

/* Reading part of a file: a handle and its size, or -1. */
int vb_fs_ropen(struct vb_fs *fs, const char *rel, uint64_t *size);
/* Exactly n bytes at off (EIO when the file is shorter). */
int vb_fs_pread(struct vb_fs *fs, int h, void *buf, size_t n, uint64_t off);
void vb_fs_rclose(struct vb_fs *fs, int h);
/* A whole file for reading in place: mapped locally, read remotely. Caller
 * releases it with vb_fs_unmap. NULL with errno. */
void *vb_fs_map(struct vb_fs *fs, const char *rel, size_t max, size_t *len);
void vb_fs_unmap(struct vb_fs *fs, void *p, size_t len);

/* The repository's lock (rlock.h), taken here or, remotely, by the server for
 * this connection. 0, or an exit code after a message. */
int vb_fs_lock(struct vb_fs *fs, bool exclusive, int wait_s);
/* true while the lock taken is still this holder's (rlock.h: vb_lock_held). */
bool vb_fs_lock_held(struct vb_fs *fs);
/* The lock's name ("" when none is held): tmp/ files are named after it. */
const char *vb_fs_lock_name(const struct vb_fs *fs);
/* Whether the writer that a tmp/ name's lock name belongs to is alive. */
bool vb_fs_name_alive(struct vb_fs *fs, const char *owner);
void vb_fs_unlock(struct vb_fs *fs);

/* ---- For the server (rserve.c): the local calls behind the remote ones ---- */
/* Opens the local folder path as a repository (nothing checked). */
struct vb_fs *vb_fs_local(const char *path);

#endif
