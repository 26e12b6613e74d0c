/* The messages between vmbackup and `vmbackup serve --stdio` on the far side of
 * ssh (an ssh:// repository; man/vmbackup-repository.5, "Remote repositories").
 * Each message is a 4-byte little-endian length, then that many bytes. A request
 * is an operation (1 byte) and its fields; a reply is a status (4 bytes, signed:
 * 0 done, above 0 an errno, below 0 minus an exit code of vmkit(7) with the
 * server's one-line message as the rest) and the fields of the reply. Integers
 * are little-endian; a string or a byte run is its 4-byte length, then its
 * bytes. Requests are answered in order, one reply each, except WRITE, ABORT and
 * RCLOSE, which have none (so that a pack streams without waiting for the far
 * side: a failed write shows at COMMIT). Both ends read the other's bytes as
 * untrusted: every length is bounded, every read checked. */
#ifndef VMBACKUP_PROTO_H
#define VMBACKUP_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VB_PROTO_VERSION 1
/* The largest message either side sends or takes. */
#define VB_MSG_MAX ((16u << 20) + 4096)
/* The largest read or write in one message. */
#define VB_IO_MAX (16u << 20)

enum vb_op {
  VB_OP_HELLO = 1, /* u32 version, str path -> u32 version, u32 flags (VB_HELLO_*) */
  VB_OP_READ,      /* str rel, u64 max -> bytes (whole file; EFBIG above max or VB_IO_MAX) */
  VB_OP_LIST,      /* str rel -> u32 n, n x str */
  VB_OP_SIZE,      /* str rel -> u64 size */
  VB_OP_UNLINK,    /* str rel */
  VB_OP_RMDIR,     /* str rel */
  VB_OP_MKDIR,     /* str rel */
  VB_OP_SYNCDIR,   /* str rel */
  VB_OP_CREATE,    /* str tmprel -> u32 handle */
  VB_OP_WRITE,     /* u32 handle, bytes (no reply) */
  VB_OP_COMMIT,    /* u32 handle, str dstrel, u32 replace */
  VB_OP_ABORT,     /* u32 handle (no reply) */
  VB_OP_ROPEN,     /* str rel -> u32 handle, u64 size */
  VB_OP_PREAD,     /* u32 handle, u64 offset, u32 n -> bytes */
  VB_OP_RCLOSE,    /* u32 handle (no reply) */
  VB_OP_LOCK,      /* u32 exclusive, u32 wait_s -> str name */
  VB_OP_LOCKHELD,  /* -> u32 held */
  VB_OP_ALIVE,     /* str owner -> u32 alive */
  VB_OP_UNLOCK,    /* -> nothing */
  VB_OP_LAST = VB_OP_UNLOCK
};
#define VB_HELLO_APPEND_ONLY 1u

/* A path the server takes (relative to the repository): "" (the folder itself)
 * only where root_ok; else names of letters, digits, '.', '_' and '-' (none
 * starting with '.', none longer than 200) split by single '/', at most 3 deep,
 * the first one config, packs, index, snapshots or tmp. */
bool vb_proto_rel_ok(const char *rel, bool root_ok);
/* Where a new file may be put: config, snapshots/ID, index/PACK, packs/XX/PACK
 * (XX its first two digits; IDs of 32 lowercase hex digits), and, unless
 * append_only, index/merged.N. */
bool vb_proto_dest_ok(const char *rel, bool append_only);
/* A folder of the layout: the repository's own, its top folders, packs/XX. */
bool vb_proto_dir_ok(const char *rel);
/* A file directly in tmp/ (a writer's). */
bool vb_proto_in_tmp(const char *rel);

/* A message being built: its first 4 bytes hold its length once sent. */
struct vb_buf {
  unsigned char *p;
  size_t len, cap;
};
void vb_buf_init(struct vb_buf *b);
void vb_buf_free(struct vb_buf *b);
void vb_buf_u8(struct vb_buf *b, uint8_t v);
void vb_buf_u32(struct vb_buf *b, uint32_t v);
void vb_buf_u64(struct vb_buf *b, uint64_t v);
void vb_buf_bytes(struct vb_buf *b, const void *p, size_t n);
void vb_buf_str(struct vb_buf *b, const char *s);
/* n more bytes at the end, for the caller to fill. */
unsigned char *vb_buf_space(struct vb_buf *b, size_t n);

/* Reading a message: each call takes the next field; a short or malformed
 * message sets bad, and every later call then gives 0, NULL or an empty run. */
struct vb_rd {
  const unsigned char *p;
  size_t len, off;
  bool bad;
};
void vb_rd_init(struct vb_rd *r, const void *p, size_t len);
uint8_t vb_rd_u8(struct vb_rd *r);
uint32_t vb_rd_u32(struct vb_rd *r);
uint64_t vb_rd_u64(struct vb_rd *r);
/* A byte run: a pointer into the message (n bytes), NULL when bad. */
const unsigned char *vb_rd_bytes(struct vb_rd *r, size_t *n);
/* A string of at most max bytes with no NUL in it: a copy (caller frees), NULL
 * when bad. */
char *vb_rd_str(struct vb_rd *r, size_t max);
/* true when the whole message was read and nothing was bad. */
bool vb_rd_done(const struct vb_rd *r);

/* Sends b (its length put in front). 0, or -1 with errno. */
int vb_msg_send(int fd, struct vb_buf *b);
/* Takes one message of at most max bytes into *body (caller frees). 0; 1 at a
 * clean end of the stream (no byte of a next message); -1 with errno (EPROTO: a
 * length above max; EIO: the stream ended inside a message). */
int vb_msg_recv(int fd, size_t max, unsigned char **body, size_t *len);

#endif
