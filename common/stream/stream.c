/* The framing of the P2V stream (p2v-stream(5)): a 32-byte preamble, then records
 * of a 16-byte header, a payload and a tag that chains each record to the one
 * before it, so that a reader finds any change, loss, repetition or reordering at
 * the record where it happens, before it uses that record. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/sha.h>

#include "le.h"
#include "vmkit-stream.h"

ssize_t vm_stream_fd_read(void *ctx, void *buf, size_t n)
{
  ssize_t r;
  /* A signal that interrupts the tool ends a blocked read (a stalled link). */
  do r = read(*(int *)ctx, buf, n);
  while (r < 0 && errno == EINTR && !vm_interrupted());
  return r;
}

ssize_t vm_stream_fd_write(void *ctx, void *buf, size_t n)
{
  ssize_t r;
  do r = write(*(int *)ctx, buf, n);
  while (r < 0 && errno == EINTR && !vm_interrupted());
  return r;
}

static int write_all(struct vm_swriter *w, const void *buf, size_t n)
{
  const unsigned char *p = buf;
  while (n) {
    ssize_t r = w->write(w->ctx, (void *)p, n);
    if (r < 0) return -1;
    if (r == 0) {
      errno = EPIPE;
      return -1;
    }
    p += r;
    n -= (size_t)r;
    w->bytes += (uint64_t)r;
  }
  return 0;
}

int vm_swriter_start(struct vm_swriter *w, vm_stream_io wr, void *ctx, const unsigned char id[16])
{
  memset(w, 0, sizeof *w);
  w->write = wr;
  w->ctx = ctx;
  unsigned char pre[VM_STREAM_PREAMBLE] = { 0 };
  memcpy(pre, VM_STREAM_MAGIC, 8);
  pre[8] = VM_STREAM_MAJOR;
  pre[10] = VM_STREAM_MINOR;
  memcpy(pre + 16, id, 16);
  SHA256(pre, sizeof pre, w->tag);
  return write_all(w, pre, sizeof pre);
}

/* tag = SHA-256(previous tag || header || payload) */
static void chain(unsigned char tag[VM_STREAM_TAG], const unsigned char *hdr, const void *a, size_t na, const void *b,
                  size_t nb)
{
  EVP_MD_CTX *md = EVP_MD_CTX_new();
  if (!md || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) abort();
  EVP_DigestUpdate(md, tag, VM_STREAM_TAG);
  EVP_DigestUpdate(md, hdr, VM_STREAM_HEADER);
  if (na) EVP_DigestUpdate(md, a, na);
  if (nb) EVP_DigestUpdate(md, b, nb);
  unsigned int len = 0;
  EVP_DigestFinal_ex(md, tag, &len);
  EVP_MD_CTX_free(md);
}

int vm_swriter_put(struct vm_swriter *w, uint32_t type, const void *a, size_t na, const void *b, size_t nb)
{
  if (na + nb > VM_STREAM_MAX_PAYLOAD) {
    errno = EMSGSIZE;
    return -1;
  }
  unsigned char hdr[VM_STREAM_HEADER];
  put32(hdr, type);
  put32(hdr + 4, (uint32_t)(na + nb));
  put64(hdr + 8, w->seq);
  chain(w->tag, hdr, a, na, b, nb);
  if (write_all(w, hdr, sizeof hdr) || (na && write_all(w, a, na)) || (nb && write_all(w, b, nb)) ||
      write_all(w, w->tag, VM_STREAM_TAG))
    return -1;
  w->seq++;
  return 0;
}

int vm_swriter_json(struct vm_swriter *w, uint32_t type, json_object *o)
{
  size_t len = 0;
  const char *s = json_object_to_json_string_length(o, JSON_C_TO_STRING_PLAIN, &len);
  if (len > VM_STREAM_MAX_JSON) {
    errno = EMSGSIZE;
    return -1;
  }
  return vm_swriter_put(w, type, s, len, NULL, 0);
}

static int rfail(struct vm_sreader *r, const char *fmt, ...) VM_PRINTF(2, 3);
static int rfail(struct vm_sreader *r, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(r->err, sizeof r->err, fmt, ap);
  va_end(ap);
  return -1;
}

/* Reads exactly n bytes: n, or fewer at the end of the input, or -1. */
static ssize_t read_full(struct vm_sreader *r, void *buf, size_t n)
{
  unsigned char *p = buf;
  size_t got = 0;
  while (got < n) {
    ssize_t k = r->read(r->ctx, p + got, n - got);
    if (k < 0) return rfail(r, "cannot read the stream: %s", strerror(errno));
    if (k == 0) break;
    got += (size_t)k;
  }
  r->bytes += got;
  return (ssize_t)got;
}

int vm_sreader_start(struct vm_sreader *r, vm_stream_io rd, void *ctx)
{
  memset(r, 0, sizeof *r);
  r->read = rd;
  r->ctx = ctx;
  unsigned char pre[VM_STREAM_PREAMBLE];
  ssize_t got = read_full(r, pre, sizeof pre);
  if (got < 0) return -1;
  if (got == 0) return rfail(r, "the stream is empty");
  if ((size_t)got < 8 || memcmp(pre, VM_STREAM_MAGIC, 8) != 0) return rfail(r, "not a p2v stream (no VMKITP2V magic)");
  if ((size_t)got < sizeof pre) return rfail(r, "the stream is truncated in its preamble");
  unsigned major = pre[8] | (unsigned)pre[9] << 8;
  if (major != VM_STREAM_MAJOR)
    return rfail(r, "the stream is format version %u, made by a %s p2v-agent; this p2v-convert reads version %u", major,
                 major > VM_STREAM_MAJOR ? "newer" : "different", VM_STREAM_MAJOR);
  r->minor = pre[10] | (unsigned)pre[11] << 8;
  if (get32(pre + 12) != 0) return rfail(r, "the stream has flags this p2v-convert does not know (0x%x)", get32(pre + 12));
  memcpy(r->id, pre + 16, 16);
  SHA256(pre, sizeof pre, r->tag);
  return 0;
}

int vm_sreader_next(struct vm_sreader *r, uint32_t *type, const unsigned char **payload, size_t *len)
{
  unsigned char hdr[VM_STREAM_HEADER];
  ssize_t got = read_full(r, hdr, sizeof hdr);
  if (got < 0) return -1;
  if (got == 0) return 0;
  if ((size_t)got < sizeof hdr) return rfail(r, "the stream is truncated in record %llu", (unsigned long long)r->seq);
  uint32_t t = get32(hdr), n = get32(hdr + 4);
  uint64_t seq = get64(hdr + 8);
  if (seq != r->seq)
    return rfail(r, "record %llu comes where record %llu belongs (records lost, repeated or reordered)",
                 (unsigned long long)seq, (unsigned long long)r->seq);
  if (n > VM_STREAM_MAX_PAYLOAD)
    return rfail(r, "record %llu claims a payload of %u bytes (at most %u)", (unsigned long long)seq, n,
                 VM_STREAM_MAX_PAYLOAD);
  if (r->cap < (size_t)n + VM_STREAM_TAG) {
    size_t cap = (size_t)n + VM_STREAM_TAG;
    unsigned char *b = realloc(r->buf, cap);
    if (!b) return rfail(r, "out of memory");
    r->buf = b;
    r->cap = cap;
  }
  got = read_full(r, r->buf, (size_t)n + VM_STREAM_TAG);
  if (got < 0) return -1;
  if ((size_t)got < (size_t)n + VM_STREAM_TAG)
    return rfail(r, "the stream is truncated in record %llu (%s)", (unsigned long long)seq, vm_rec_name(t));
  unsigned char tag[VM_STREAM_TAG];
  memcpy(tag, r->tag, sizeof tag);
  chain(tag, hdr, r->buf, n, NULL, 0);
  if (CRYPTO_memcmp(tag, r->buf + n, VM_STREAM_TAG) != 0)
    return rfail(r, "record %llu (%s) is corrupt: its checksum does not match", (unsigned long long)seq, vm_rec_name(t));
  memcpy(r->tag, tag, sizeof tag);
  r->seq++;
  *type = t;
  *payload = r->buf;
  *len = n;
  return 1;
}

void vm_sreader_free(struct vm_sreader *r)
{
  free(r->buf);
  r->buf = NULL;
  r->cap = 0;
}

const char *vm_rec_name(uint32_t type)
{
  static const char *names[] = { "?",    "INVENTORY", "DISK_BEGIN", "DATA",
                                 "HOLE", "DISK_END",  "SWAP",       "TRAILER", "ABORT" };
  return type < sizeof names / sizeof *names ? names[type] : "unknown type";
}
