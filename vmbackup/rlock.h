/* The lock of a vmbackup repository (man/vmbackup-repository.5, "Locks"): files
 * in the repository's locks/ folder made with O_EXCL, which is atomic on NFS
 * version 3 and later, where fcntl(2) locks are not to be trusted. A backup holds
 * a shared lock (many at once); prune, compact and a repair an exclusive one.
 *
 * Files in locks/:
 *   shared.HOST.PID.RANDOM   one per shared holder; its name is its vb_lock_name
 *   exclusive                the exclusive holder's; its content names the holder
 *                            ("name": exclusive.HOST.PID.RANDOM, its vb_lock_name)
 *   probe.*, stale.*         a checker's own short-lived files (the file server's
 *                            clock; a stale lock on its way out)
 * HOST is the host name with anything but letters, digits, '_' and '-' made '-'
 * (at most 64 characters), PID the holder's process ID and RANDOM 16 lowercase
 * hex digits: a lock name is four fields split by dots, so that a tmp/ file named
 * LOCKNAME.ANYTHING maps back to its writer's lock (vb_lock_name_span).
 *
 * A lock file holds one JSON object: kind ("shared" or "exclusive"), name, host
 * (gethostname), machine (vm_machine_id), boot (the kernel's boot ID), pid, start
 * (the process's start time, field 22 of /proc/PID/stat) and since (UTC, ISO
 * 8601). It is stale when its holder is on this machine (the same machine ID and
 * host name) and ran before the last boot, no longer runs, or its PID now belongs
 * to another process; when it is of another machine and has not been touched for
 * 5 minutes by the file server's clock; or when it cannot be read and is that
 * old. A live holder touches its file every 30 s. */
#ifndef VMBACKUP_RLOCK_H
#define VMBACKUP_RLOCK_H

#include <stdbool.h>
#include <stddef.h>

/* A lock file not touched for this long is stale (another machine's, or one that
 * cannot be read). */
#define VB_LOCK_STALE_S 300

struct vb_lock;

/* Takes the repository's lock in DIR/locks/ (DIR: the repository folder; locks/
 * exists). exclusive=false: a shared lock (backups; many at once); true:
 * exclusive (prune, compact, repair). Waits up to wait_s seconds (0: one try) for
 * a conflicting holder, looking every 200 ms and stopping early when
 * vm_interrupted() (then vm_fail_interrupted()). On conflict after the wait:
 * VM_EXIT_STATE after "repository DIR is busy: KIND lock of HOST pid N since
 * TIME". A stale conflicting lock is taken over (its file removed) with a warning
 * that says whose it was. Returns 0 and *out, or an exit code after a message.
 * Starts a thread that touches the lock file every 30 s. */
int vb_lock_take(const char *dir, bool exclusive, int wait_s, struct vb_lock **out);
/* The same, with the repository named in messages as shown (as the user typed it). */
int vb_lock_take_as(const char *dir, const char *shown, bool exclusive, int wait_s, struct vb_lock **out);
/* The lock's name (no folder), unique to this holder: writers name their tmp/
 * files after it ("NAME.WHAT"). */
const char *vb_lock_name(const struct vb_lock *l);
bool vb_lock_exclusive(const struct vb_lock *l);
/* true while the lock file is still this holder's own (it exists and holds what
 * this holder wrote); false when it was taken over: a writer then stops before it
 * puts a manifest in place. */
bool vb_lock_held(struct vb_lock *l);
/* Stops the touch thread, removes the lock file (when it is still ours), frees.
 * NULL is fine. */
void vb_lock_release(struct vb_lock *l);

/* For cleaning tmp/: whether the holder that NAME (a name vb_lock_name gave)
 * belongs to is alive: its lock file exists in DIR/locks and is not stale. false
 * for anything that is not a lock name. */
bool vb_lock_name_alive(const char *dir, const char *name);
/* The length of the lock name that s starts with (followed by the end of s or a
 * '.'), 0 when it starts with none: "shared.h.1.0123456789abcdef.pack" gives 27. */
size_t vb_lock_name_span(const char *s);

/* How often the holder touches its file, in milliseconds (30000; tests shorten it). */
extern int vb_lock_touch_ms;

#endif
