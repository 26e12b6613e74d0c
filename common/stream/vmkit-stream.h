/* libvmkit-stream: the P2V stream of p2v-stream(5), written by p2v-agent and read
 * by p2v-convert: the framing (a preamble, then records chained by SHA-256), the
 * records' payloads, the order a reader enforces, and the disk digest both sides
 * compute. It stands on libvmkit-base, OpenSSL's libcrypto and zstd, all of which
 * p2v-agent links statically. Everything it exports starts with vm_ or VM_. */
#ifndef VMKIT_STREAM_H
#define VMKIT_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "vmkit-base.h"

#define VM_STREAM_MAGIC "VMKITP2V"
#define VM_STREAM_MAJOR 1
#define VM_STREAM_MINOR 0
#define VM_STREAM_PREAMBLE 32
#define VM_STREAM_HEADER 16
#define VM_STREAM_TAG 32
#define VM_STREAM_MAX_BLOCK (16u << 20)
#define VM_STREAM_MIN_BLOCK (64u << 10)
#define VM_STREAM_MAX_PAYLOAD (VM_STREAM_MAX_BLOCK + 64u)
#define VM_STREAM_MAX_JSON (1u << 20)
#define VM_STREAM_MAX_DISKS 64
/* Blocks of one disk: a map of 32 bytes each, on both sides (512 MiB). */
#define VM_STREAM_MAX_BLOCKS (1u << 24)
#define VM_STREAM_DATA_HEADER 56
#define VM_STREAM_HOLE_SIZE 24

enum vm_rec_type {
  VM_REC_INVENTORY = 1,
  VM_REC_DISK_BEGIN = 2,
  VM_REC_DATA = 3,
  VM_REC_HOLE = 4,
  VM_REC_DISK_END = 5,
  VM_REC_SWAP = 6,
  VM_REC_TRAILER = 7,
  VM_REC_ABORT = 8,
};
enum vm_hole_reason { VM_HOLE_FREE = 1, VM_HOLE_ZERO = 2, VM_HOLE_SWAP = 3 };
enum vm_codec { VM_CODEC_STORED = 0, VM_CODEC_ZSTD = 1 };
const char *vm_rec_name(uint32_t type);

/* Reads or writes up to n bytes, as read(2) and write(2) do (a short count is
 * fine; -1 with errno on error; 0 from a reader at the end of input). */
typedef ssize_t (*vm_stream_io)(void *ctx, void *buf, size_t n);
/* The io for a file descriptor (ctx points to the int). */
ssize_t vm_stream_fd_read(void *ctx, void *buf, size_t n);
ssize_t vm_stream_fd_write(void *ctx, void *buf, size_t n);

/* ---- Framing (stream.c) --------------------------------------------------------------- */
struct vm_swriter {
  vm_stream_io write;
  void *ctx;
  uint64_t seq;
  unsigned char tag[VM_STREAM_TAG];
  uint64_t bytes; /* written so far */
};
/* Writes the preamble with stream ID id. 0, or -1 with errno. */
int vm_swriter_start(struct vm_swriter *w, vm_stream_io wr, void *ctx, const unsigned char id[16]);
/* Writes one record whose payload is a (na bytes) then b (nb bytes). 0, or -1
 * with errno (EPIPE when the reader went away, EMSGSIZE when too large). */
int vm_swriter_put(struct vm_swriter *w, uint32_t type, const void *a, size_t na, const void *b, size_t nb);
/* A record of JSON text. */
int vm_swriter_json(struct vm_swriter *w, uint32_t type, json_object *o);

struct vm_sreader {
  vm_stream_io read;
  void *ctx;
  uint64_t seq;
  unsigned char tag[VM_STREAM_TAG];
  unsigned char id[16];
  unsigned minor;
  unsigned char *buf;
  size_t cap;
  uint64_t bytes; /* read so far */
  char err[256];
};
/* Reads and checks the preamble. 0, or -1 with the reason in r->err. */
int vm_sreader_start(struct vm_sreader *r, vm_stream_io rd, void *ctx);
/* The next record, its sequence number and tag checked: 1 with its type and its
 * payload (valid until the next call), 0 at the end of the input exactly between
 * two records, -1 with the reason in r->err. */
int vm_sreader_next(struct vm_sreader *r, uint32_t *type, const unsigned char **payload, size_t *len);
void vm_sreader_free(struct vm_sreader *r);

/* ---- Records (p2v.c) ------------------------------------------------------------------ */
struct vm_rec_data {
  uint32_t disk, codec;
  uint64_t offset;
  uint32_t length;
  unsigned char sha[32];
  const unsigned char *body;
  size_t body_len;
};
/* The 56-byte header of a DATA payload; the body follows it. */
void vm_rec_data_header(unsigned char out[VM_STREAM_DATA_HEADER], const struct vm_rec_data *d);
int vm_rec_data_parse(const unsigned char *p, size_t n, struct vm_rec_data *d, char *err, size_t errlen);
/* The block's content into out (d->length bytes): decompressed (dctx may be
 * NULL: one is made for the call) and checked against its SHA-256. 0, or -1 with
 * the reason in err. */
int vm_rec_data_open(const struct vm_rec_data *d, void *dctx, unsigned char *out, char *err, size_t errlen);

struct vm_rec_hole {
  uint32_t disk, reason;
  uint64_t offset, length;
};
void vm_rec_hole_encode(unsigned char out[VM_STREAM_HOLE_SIZE], const struct vm_rec_hole *h);
int vm_rec_hole_parse(const unsigned char *p, size_t n, struct vm_rec_hole *h, char *err, size_t errlen);

/* ---- The disk digest (p2v.c) ------------------------------------------------------------
 * SHA-256 of the SHA-256s of a disk's blocks in order, a hole's block counting as
 * zeros: a later pass changes only the blocks it sends. */
struct vm_digest {
  uint64_t size;
  uint32_t block_size;
  uint64_t nblocks;
  unsigned char *h; /* nblocks x 32 */
  unsigned char zero[32], zero_last[32];
};
/* Every block a hole at first. 0, or -1 (ENOMEM, EINVAL for a bad block size). */
int vm_digest_init(struct vm_digest *d, uint64_t size, uint32_t block_size);
void vm_digest_set(struct vm_digest *d, uint64_t block, const unsigned char sha[32]);
void vm_digest_zero(struct vm_digest *d, uint64_t block);
void vm_digest_final(const struct vm_digest *d, unsigned char out[32]);
void vm_digest_free(struct vm_digest *d);
/* Hex of 32 bytes into out (65 bytes). */
void vm_hex32(const unsigned char in[32], char out[65]);

/* ---- The reader's rules (p2v.c) ---------------------------------------------------------
 * A checker follows a stream record by record and refuses what p2v-stream(5)
 * does not allow: records out of order, a disk's blocks not covered exactly once
 * in pass 1, blocks out of order, a digest that differs from the one it computes
 * from the records' SHA-256s (the caller checks each block's content against its
 * SHA-256, vm_rec_data_open, before it relies on a DISK_END). */
struct vm_p2v_disk {
  char *name;
  uint64_t size;
  uint32_t block_size;
  unsigned pass;      /* the last pass begun (0: none) */
  bool done1;         /* pass 1 ended */
  struct vm_digest digest;
  struct vm_swap_area {
    uint64_t offset, length;
    char *uuid, *label;
  } *swaps;
  size_t nswaps;
};
struct vm_p2v_check {
  int state;
  json_object *inventory;
  struct vm_p2v_disk disks[VM_STREAM_MAX_DISKS];
  size_t ndisks;
  unsigned pass;      /* the current pass */
  int disk;           /* the disk inside DISK_BEGIN .. DISK_END, else -1 */
  int last_disk;      /* the last disk begun in this pass */
  uint64_t next;      /* the next offset allowed in the current disk */
  json_object *trailer;
  char *abort_error;
};
/* What a record asks the caller to do, once the checker took it. */
struct vm_p2v_event {
  uint32_t type;
  struct vm_rec_data data;  /* VM_REC_DATA */
  struct vm_rec_hole hole;  /* VM_REC_HOLE */
  int disk;                 /* DISK_BEGIN, DISK_END, SWAP, DATA, HOLE */
  unsigned pass;            /* DISK_BEGIN, DISK_END */
};
void vm_p2v_check_init(struct vm_p2v_check *c);
/* 0 when the record is allowed (ev says what it asks), -1 with the reason in err.
 * An ABORT record is -1 too, its error in err and in c->abort_error. */
int vm_p2v_check(struct vm_p2v_check *c, uint32_t type, const unsigned char *p, size_t n, struct vm_p2v_event *ev,
                 char *err, size_t errlen);
/* True once the trailer was taken. */
bool vm_p2v_check_done(const struct vm_p2v_check *c);
void vm_p2v_check_free(struct vm_p2v_check *c);

#endif
