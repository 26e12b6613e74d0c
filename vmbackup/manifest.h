/* The manifest of one snapshot in a vmbackup repository (man/vmbackup-repository.5):
 * what was backed up, and per disk the id of each chunk or a hole. The content of
 * a manifest record once opened; parsed as untrusted bytes. */
#ifndef VMBACKUP_MANIFEST_H
#define VMBACKUP_MANIFEST_H

#include <stddef.h>
#include <stdint.h>

#define VB_MANIFEST_MAX_DISKS 64
/* The chunk tables of one manifest, in bytes: it is one record (VB_RAW_MAX with
 * its metadata): 2 TiB of disks at 256 KiB chunks. */
#define VB_MANIFEST_TABLE_MAX (248u << 20)

struct vb_mdisk {
  char *target, *format;
  uint64_t size;          /* guest-visible bytes */
  size_t nchunks;         /* the size in chunks, rounded up */
  unsigned char (*ids)[32]; /* per chunk: its id, or 32 zero bytes for a hole */
};

struct vb_manifest {
  char *snapshot, *vm, *uuid, *host, *started, *ended, *kind, *why, *checkpoint, *xml;
  /* What the backup read from the disks, stored as new chunks (raw), and those
   * chunks took once compressed and sealed. */
  uint64_t bytes_read, bytes_new, bytes_stored;
  size_t ndisks;
  struct vb_mdisk *disks;
};

/* The manifest's bytes (a malloc'd buffer), for chunks of chunk_size. 0, or -1
 * with *why. */
int vb_manifest_encode(const struct vb_manifest *m, unsigned chunk_size, unsigned char **out, size_t *outlen,
                       const char **why);
/* Parses len bytes of the manifest of snapshot (its ID, 32 hex digits): the
 * magic, the metadata's length and JSON (every member of its type and form,
 * nothing unknown, the snapshot ID the one asked for), per disk a table of
 * exactly the entries its size needs at chunk_size, and nothing after the last.
 * 0, or -1 with *why; *m is then empty. */
int vb_manifest_parse(const unsigned char *buf, size_t len, unsigned chunk_size, const char *snapshot,
                      struct vb_manifest *m, const char **why);
void vb_manifest_free(struct vb_manifest *m);
/* True when entry i of disk d is a hole. */
int vb_manifest_hole(const struct vb_mdisk *d, size_t i);

#endif
