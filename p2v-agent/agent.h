/* p2v-agent: runs on a physical server, describes it and streams its disks
 * (p2v-stream(5)) to p2v-convert on a KVM host. It links the base layer and the
 * stream layer of common/ only, statically, so that it runs on old servers. */
#ifndef P2V_AGENT_H
#define P2V_AGENT_H

#include "vmkit-base.h"
#include "vmkit-stream.h"

/* A disk to read: a whole-disk device (/dev/sda) or an image file. */
struct pa_disk {
  char *name; /* sda, or the file's base name */
  char *path;
  uint64_t size;
};

/* The disks named by --disk, or every whole disk of the server (/sys/block without
 * loop, ram, optical, device-mapper and MD devices). 0 or an exit code. */
int pa_find_disks(const char **paths, size_t npaths, struct pa_disk **disks, size_t *n);
void pa_disks_free(struct pa_disk *disks, size_t n);

/* The inventory of p2v-stream(5): this server, and the given disks. */
json_object *pa_inventory(const struct pa_disk *disks, size_t n);

/* A disk's map: the byte ranges that need not be read (free by the file system's
 * own map, or swap), sorted, and the swap areas to recreate. */
struct pa_range {
  uint64_t start, end;
  int reason; /* VM_HOLE_FREE or VM_HOLE_SWAP */
};
struct pa_swap {
  uint64_t offset, length;
  char uuid[37], label[17];
};
struct pa_map {
  struct pa_range *free;
  size_t nfree, capfree;
  struct pa_swap *swaps;
  size_t nswaps;
  /* What the map found, for -v: one line per partition. */
  struct vm_strv notes;
};
/* 0, or an exit code after a message. A partition whose file system cannot be
 * read is read whole (noted), never guessed free. */
int pa_map_disk(const struct pa_disk *d, struct pa_map *m);
void pa_map_free(struct pa_map *m);

/* Partitions as libblkid sees them (shared by the inventory and the map). */
struct pa_part {
  int number;       /* 0: a file system on the whole disk */
  uint64_t start, size;
  char type[40];    /* partition type (hex for dos, a GUID for gpt) */
  char fstype[32], uuid[40], label[64];
  bool container;   /* a dos extended partition */
};
int pa_partitions(const char *path, uint64_t disk_size, struct pa_part **parts, size_t *n, char table[16]);

/* Sorts a map's free ranges and merges those that overlap (a partition table
 * that lies, or ranges added by online mode). */
void pa_map_merge(struct pa_map *m);
void pa_map_add_free(struct pa_map *m, uint64_t start, uint64_t end, int reason);

/* Byte ranges of a disk (online mode's changed sets). */
struct pa_ranges {
  struct pa_range *v;
  size_t n, cap;
};
void pa_ranges_add(struct pa_ranges *r, uint64_t start, uint64_t end);
void pa_ranges_free(struct pa_ranges *r);

/* An inode that an event named since the last checkpoint, and what it is. */
struct pa_ino {
  uint64_t ino;
  bool dir;
};
/* The metadata of a mounted ext2/3/4 file system at byte offset off of the disk
 * that the final pass reads again, found through libext2fs while the file system
 * is frozen (its journal is then checkpointed: what is in place is current): the
 * inode-table bytes of each inode named, every block of the directories named,
 * the extent-tree or indirect blocks and the extended-attribute block of the
 * files named, every block of the reserved inodes but the journal's (quota,
 * orphan file), and the journal's superblock. 0, or -1 after a message. */
int pa_ext_named(const char *path, uint64_t off, const struct pa_ino *inos, size_t n, struct pa_ranges *out);

/* ---- Online mode (online.c) ----------------------------------------------------------
 * The mounted file systems of the disks sent: their changes found with fanotify,
 * FIEMAP and GETFSMAP between passes, their freeze for the final pass. */
struct pa_online;
struct pa_online_opts {
  int64_t max_freeze_ms;
  uint64_t final_delta;   /* freeze once a delta is at most this many bytes */
  unsigned max_passes;    /* the final pass comes at the latest as this one */
};
/* Finds the file systems mounted from the disks, marks them for fanotify and
 * checkpoints their journals (a freeze of a few milliseconds, under the
 * watchdog). *out is NULL when none is mounted. 0 or an exit code. */
int pa_online_open(const struct pa_disk *disks, size_t n, const struct pa_online_opts *o, struct pa_online **out);
void pa_online_close(struct pa_online *on);
/* Reads the events queued so far (non-blocking): called while a pass reads. */
void pa_online_poll(struct pa_online *on);
/* The map of disk i for this pass: the free ranges of its mounted file systems
 * from GETFSMAP replace what libext2fs read from their bitmaps (a mounted ext4
 * always "needs recovery" on disk). */
int pa_online_map(struct pa_online *on, size_t disk, struct pa_map *m);
/* The byte ranges of disk i to send again in this pass, after pa_online_map:
 * the files modified since the last pass (FIEMAP), what was allocated since,
 * all used blocks of a file system whose events were lost; with final (the file
 * systems frozen), also the metadata: GETFSMAP's special owners, pa_ext_named,
 * and all used blocks of file systems that are not tracked. 0 or an exit code. */
int pa_online_changes(struct pa_online *on, size_t disk, bool final, struct pa_ranges *out);
/* True when some file system of disk i is mounted (online passes concern it). */
bool pa_online_has_disk(const struct pa_online *on, size_t disk);
/* Forks the watchdog, then freezes every file system (FIFREEZE). 0 or an exit
 * code, everything thawed. */
int pa_online_freeze(struct pa_online *on);
/* Thaws what is frozen, ends the watchdog; the time frozen in *ms. */
void pa_online_thaw(struct pa_online *on, int64_t *ms);
/* Milliseconds since the freeze began; more than any --max-freeze once the
 * freeze did not hold (the watchdog or another process thawed). */
int64_t pa_online_frozen_ms(struct pa_online *on);

/* The passes over every disk, then the trailer, on stdout. on NULL: one pass. */
int pa_send(const struct pa_disk *disks, size_t n, uint32_t bs, int level, int threads, struct pa_online *on,
            const struct pa_online_opts *oo);

#endif
