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

/* Pass 1 over every disk, then the trailer, on stdout. */
int pa_send(const struct pa_disk *disks, size_t n, uint32_t bs, int level, int threads);

#endif
