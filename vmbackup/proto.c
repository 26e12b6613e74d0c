/* The framing and fields of vmbackup's remote messages (proto.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "proto.h"

/* A path inside the repository: "" (the folder itself, where allowed), or
 * names of letters, digits, '.', '_' and '-' (none starting with '.') split by
 * '/', the first one a part of the layout. */
bool vb_proto_rel_ok(const char *rel, bool root_ok)
{
  if (!*rel) return root_ok;
  static const char *const tops[] = { "config", "packs", "index", "snapshots", "tmp", NULL };
  size_t first = strcspn(rel, "/");
  bool top = false;
  for (size_t i = 0; tops[i]; i++) top |= strlen(tops[i]) == first && !strncmp(rel, tops[i], first);
  if (!top) return false;
  int depth = 0;
  for (const char *p = rel; *p;) {
    size_t n = strcspn(p, "/");
    if (n == 0 || n > 200 || p[0] == '.' || strspn(p, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") < n)
      return false;
    if (++depth > 3) return false;
    p += n;
    if (*p == '/') {
      p++;
      if (!*p) return false;
    }
  }
  return true;
}

static bool hex_name(const char *s, size_t n)
{
  return strlen(s) == n && strspn(s, "0123456789abcdef") == n;
}

bool vb_proto_dest_ok(const char *rel, bool append_only)
{
  if (!strcmp(rel, "config")) return true;
  if (!strncmp(rel, "snapshots/", 10)) return hex_name(rel + 10, 32);
  if (!strncmp(rel, "index/", 6))
    return hex_name(rel + 6, 32) ||
           (!append_only && !strncmp(rel + 6, "merged.", 7) && rel[13] && strlen(rel + 13) <= 9 &&
            strspn(rel + 13, "0123456789") == strlen(rel + 13) && rel[13] != '0');
  if (!strncmp(rel, "packs/", 6))
    return strlen(rel) == 6 + 3 + 32 && rel[8] == '/' && hex_name(rel + 9, 32) && !strncmp(rel + 6, rel + 9, 2);
  return false;
}

bool vb_proto_dir_ok(const char *rel)
{
  static const char *const dirs[] = { "", "packs", "index", "snapshots", "locks", "tmp", NULL };
  for (size_t i = 0; dirs[i]; i++)
    if (!strcmp(rel, dirs[i])) return true;
  return !strncmp(rel, "packs/", 6) && hex_name(rel + 6, 2);
}

bool vb_proto_in_tmp(const char *rel) { return strncmp(rel, "tmp/", 4) == 0 && rel[4] && !strchr(rel + 4, '/'); }

void vb_buf_init(struct vb_buf *b)
{
  b->cap = 256;
  b->p = malloc(b->cap);
  if (!b->p) abort();
  b->len = 4; /* the length, put in by vb_msg_send */
}

void vb_buf_free(struct vb_buf *b)
{
  free(b->p);
  b->p = NULL;
  b->len = b->cap = 0;
}

unsigned char *vb_buf_space(struct vb_buf *b, size_t n)
{
  if (b->len + n > b->cap) {
    while (b->len + n > b->cap) b->cap *= 2;
    b->p = realloc(b->p, b->cap);
    if (!b->p) abort();
  }
  unsigned char *at = b->p + b->len;
  b->len += n;
  return at;
}

static void put_le(unsigned char *p, uint64_t v, int n)
{
  for (int i = 0; i < n; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get_le(const unsigned char *p, int n)
{
  uint64_t v = 0;
  for (int i = 0; i < n; i++) v |= (uint64_t)p[i] << (8 * i);
  return v;
}

void vb_buf_u8(struct vb_buf *b, uint8_t v) { *vb_buf_space(b, 1) = v; }
void vb_buf_u32(struct vb_buf *b, uint32_t v) { put_le(vb_buf_space(b, 4), v, 4); }
void vb_buf_u64(struct vb_buf *b, uint64_t v) { put_le(vb_buf_space(b, 8), v, 8); }

void vb_buf_bytes(struct vb_buf *b, const void *p, size_t n)
{
  vb_buf_u32(b, (uint32_t)n);
  if (n) memcpy(vb_buf_space(b, n), p, n);
}

void vb_buf_str(struct vb_buf *b, const char *s) { vb_buf_bytes(b, s, strlen(s)); }

void vb_rd_init(struct vb_rd *r, const void *p, size_t len)
{
  r->p = p;
  r->len = len;
  r->off = 0;
  r->bad = false;
}

static const unsigned char *take(struct vb_rd *r, size_t n)
{
  if (r->bad || n > r->len - r->off) {
    r->bad = true;
    return NULL;
  }
  const unsigned char *at = r->p + r->off;
  r->off += n;
  return at;
}

uint8_t vb_rd_u8(struct vb_rd *r)
{
  const unsigned char *p = take(r, 1);
  return p ? *p : 0;
}

uint32_t vb_rd_u32(struct vb_rd *r)
{
  const unsigned char *p = take(r, 4);
  return p ? (uint32_t)get_le(p, 4) : 0;
}

uint64_t vb_rd_u64(struct vb_rd *r)
{
  const unsigned char *p = take(r, 8);
  return p ? get_le(p, 8) : 0;
}

const unsigned char *vb_rd_bytes(struct vb_rd *r, size_t *n)
{
  uint32_t l = vb_rd_u32(r);
  const unsigned char *p = take(r, l);
  *n = p ? l : 0;
  return p;
}

char *vb_rd_str(struct vb_rd *r, size_t max)
{
  size_t n;
  const unsigned char *p = vb_rd_bytes(r, &n);
  if (!p || n > max || memchr(p, 0, n)) {
    r->bad = true;
    return NULL;
  }
  char *s = malloc(n + 1);
  if (!s) abort();
  memcpy(s, p, n);
  s[n] = 0;
  return s;
}

bool vb_rd_done(const struct vb_rd *r) { return !r->bad && r->off == r->len; }

static int write_all(int fd, const unsigned char *p, size_t n)
{
  while (n) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return -1;
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

/* 0, 1 at the end of the stream before the first byte, -1 (EIO after some). */
static int read_all(int fd, unsigned char *p, size_t n)
{
  size_t got = 0;
  while (got < n) {
    ssize_t r = read(fd, p + got, n - got);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return -1;
    if (r == 0) return got ? (errno = EIO, -1) : 1;
    got += (size_t)r;
  }
  return 0;
}

int vb_msg_send(int fd, struct vb_buf *b)
{
  put_le(b->p, b->len - 4, 4);
  return write_all(fd, b->p, b->len);
}

int vb_msg_recv(int fd, size_t max, unsigned char **body, size_t *len)
{
  *body = NULL;
  *len = 0;
  unsigned char head[4];
  int rc = read_all(fd, head, 4);
  if (rc) return rc;
  uint32_t n = (uint32_t)get_le(head, 4);
  if (n > max) return errno = EPROTO, -1;
  unsigned char *p = malloc(n ? n : 1);
  if (!p) abort();
  if (n && (rc = read_all(fd, p, n)) != 0) {
    free(p);
    return errno = EIO, -1;
  }
  *body = p;
  *len = n;
  return 0;
}
