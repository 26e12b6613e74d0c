/* chunkstat: what fixed, offset-aligned chunking of a raw disk image gives at
 * several chunk sizes: the chunks that hold data (all-zero chunks are holes), the
 * unique ones and their size after zstd, chunk by chunk; and for a second image
 * (the same disk later) the chunks that are new, and theirs. It measures the
 * choice of chunk size in man/vmbackup-repository.5 (bench/chunksize.sh runs it);
 * it is not part of a tool. usage: chunkstat LEVEL IMAGE [LATER-IMAGE]
 * One line per size and image: KIB full|later DATA-CHUNKS UNIQUE|NEW RAW-BYTES
 * ZSTD-BYTES. */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <openssl/sha.h>
#include <zstd.h>

struct set { unsigned char (*k)[32]; size_t cap, n; };
static int set_add(struct set *s, const unsigned char *h)
{
  if (s->n * 2 >= s->cap) {
    struct set t = { calloc(s->cap ? s->cap * 2 : 1 << 16, 32), s->cap ? s->cap * 2 : 1 << 16, 0 };
    for (size_t i = 0; i < s->cap; i++) {
      static const unsigned char z[32];
      if (memcmp(s->k[i], z, 32)) set_add(&t, s->k[i]);
    }
    free(s->k);
    *s = t;
  }
  size_t i;
  memcpy(&i, h, sizeof i);
  for (i %= s->cap;; i = (i + 1) % s->cap) {
    static const unsigned char z[32];
    if (!memcmp(s->k[i], h, 32)) return 0;
    if (!memcmp(s->k[i], z, 32)) { memcpy(s->k[i], h, 32); s->n++; return 1; }
  }
}

static void scan(const char *path, size_t cs, int level, struct set *seen, int later)
{
  int fd = open(path, O_RDONLY);
  if (fd < 0) { perror(path); exit(1); }
  unsigned char *buf = malloc(cs), *zb = malloc(ZSTD_compressBound(cs)), h[32];
  size_t data = 0, uniq = 0; uint64_t zsize = 0, raw = 0;
  ZSTD_CCtx *cc = ZSTD_createCCtx();
  for (;;) {
    ssize_t n = pread(fd, buf, cs, (off_t)raw);
    if (n <= 0) break;
    raw += (uint64_t)n;
    size_t k = 0;
    while (k < (size_t)n && !buf[k]) k++;
    if (k == (size_t)n) continue;
    data++;
    SHA256(buf, (size_t)n, h);
    h[31] |= 1; /* never the all-zero key, which marks a free slot */
    if (!set_add(seen, h)) continue;
    uniq++;
    zsize += ZSTD_compressCCtx(cc, zb, ZSTD_compressBound(cs), buf, (size_t)n, level);
  }
  printf("%zu %s %zu %zu %llu %llu\n", cs / 1024, later ? "later" : "full", data, uniq,
         (unsigned long long)uniq * cs, (unsigned long long)zsize);
  ZSTD_freeCCtx(cc);
  free(buf); free(zb); close(fd);
}

int main(int argc, char **argv)
{
  if (argc < 3) { fprintf(stderr, "usage: chunkstat LEVEL IMAGE [LATER]\n"); return 2; }
  size_t sizes[] = { 64 << 10, 128 << 10, 256 << 10, 512 << 10, 1 << 20, 4 << 20 };
  for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
    struct set s = { 0 };
    scan(argv[2], sizes[i], atoi(argv[1]), &s, 0);
    if (argc > 3) scan(argv[3], sizes[i], atoi(argv[1]), &s, 1);
    free(s.k);
  }
  return 0;
}
