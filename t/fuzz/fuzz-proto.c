/* Fuzz target: what the far side of an ssh:// repository reads from a client it
 * must not trust (vmbackup/proto.c): a request's fields (vb_rd_*) and the paths
 * it names (vb_proto_rel_ok, vb_proto_in_tmp). The input is read as a request
 * the way rserve.c reads one, an operation then strings and integers; every
 * field read stays inside the message, a string has no NUL, and a path the rules
 * take never climbs out of the repository: no empty, "." or ".." component, no
 * leading '/', no dot file, under one of the layout's folders. A message built
 * with vb_buf_* from the fields read reads back the same. */
#include <stdbool.h>
#include <string.h>

#include "../../vmbackup/proto.h"
#include "fuzz.h"

static void path_rules(const char *rel)
{
  bool root = vb_proto_rel_ok(rel, true), plain = vb_proto_rel_ok(rel, false);
  FUZZ_CHECK(plain ? root : true);
  FUZZ_CHECK(root == plain || !*rel);
  if (!plain) return;
  FUZZ_CHECK(rel[0] != '/' && rel[strlen(rel) - 1] != '/' && !strstr(rel, "//"));
  static const char *const tops[] = { "config", "packs", "index", "snapshots", "tmp" };
  bool top = false;
  for (size_t i = 0; i < 5; i++) {
    size_t l = strlen(tops[i]);
    top |= !strncmp(rel, tops[i], l) && (rel[l] == 0 || rel[l] == '/');
  }
  FUZZ_CHECK(top);
  for (const char *p = rel; *p;) {
    size_t n = strcspn(p, "/");
    FUZZ_CHECK(n > 0 && p[0] != '.');
    for (size_t i = 0; i < n; i++) FUZZ_CHECK(p[i] > ' ' && p[i] < 127 && p[i] != '\\');
    p += n + (p[n] == '/');
  }
  if (vb_proto_in_tmp(rel)) FUZZ_CHECK(!strncmp(rel, "tmp/", 4) && !strchr(rel + 4, '/'));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  struct vb_rd rd;
  vb_rd_init(&rd, data, size);
  uint8_t op = vb_rd_u8(&rd);
  struct vb_buf b;
  vb_buf_init(&b);
  vb_buf_u8(&b, op);
  /* A request's shape, as rserve.c reads them: strings and integers. */
  for (int field = 0; field < 6 && !rd.bad; field++) {
    size_t before = rd.off;
    switch ((op + field) % 4) {
    case 0: {
      char *s = vb_rd_str(&rd, 1024);
      if (!s) break;
      FUZZ_CHECK(strlen(s) <= 1024 && rd.off == before + 4 + strlen(s));
      path_rules(s);
      vb_buf_str(&b, s);
      free(s);
      break;
    }
    case 1: {
      uint32_t v = vb_rd_u32(&rd);
      if (!rd.bad) vb_buf_u32(&b, v);
      break;
    }
    case 2: {
      uint64_t v = vb_rd_u64(&rd);
      if (!rd.bad) vb_buf_u64(&b, v);
      break;
    }
    default: {
      size_t n;
      const unsigned char *p = vb_rd_bytes(&rd, &n);
      if (!p) break;
      FUZZ_CHECK(p >= data + 4 && p + n <= data + size && p == data + before + 4);
      vb_buf_bytes(&b, p, n);
    }
    }
    FUZZ_CHECK(rd.off <= rd.len);
    if (rd.bad) FUZZ_CHECK(vb_rd_u32(&rd) == 0 && !vb_rd_done(&rd));
  }
  /* What was read, written again, is the input's prefix that was read. */
  if (!rd.bad) {
    FUZZ_CHECK(b.len - 4 == rd.off);
    FUZZ_CHECK(memcmp(b.p + 4, data, rd.off) == 0);
  }
  vb_buf_free(&b);
  return 0;
}

#ifdef FUZZ_DRIVER
void fuzz_seeds(fuzz_add_fn *add)
{
  static const char *const paths[] = { "config", "packs/ab/abcdef", "tmp/shared.h.1.0123456789abcdef.pack",
                                       "snapshots/00112233445566778899aabbccddeeff", "../x", "tmp/../config", "" };
  for (size_t i = 0; i < sizeof paths / sizeof *paths; i++) {
    struct vb_buf b;
    vb_buf_init(&b);
    vb_buf_u8(&b, 4); /* so that the first field is a string */
    vb_buf_str(&b, paths[i]);
    vb_buf_u32(&b, 7);
    vb_buf_u64(&b, 1ull << 40);
    vb_buf_bytes(&b, "data", 4);
    vb_buf_str(&b, paths[(i + 1) % 7]);
    add(paths[i][0] ? "request" : "empty", b.p + 4, b.len - 4);
    vb_buf_free(&b);
  }
}
#endif
