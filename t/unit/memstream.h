/* A p2v stream in memory, for the stream's unit tests and its fuzz target: the
 * write and read functions of vm_swriter_start and vm_sreader_start. */
#ifndef VMKIT_T_MEMSTREAM_H
#define VMKIT_T_MEMSTREAM_H

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

struct mem {
  unsigned char *p;
  size_t n, cap, off;
  bool short_reads; /* reads of about half what is asked, as a pipe gives them */
};

static inline ssize_t mem_write(void *ctx, void *buf, size_t n)
{
  struct mem *m = ctx;
  if (m->n + n > m->cap) {
    m->cap = (m->n + n) * 2 + 64;
    m->p = realloc(m->p, m->cap);
    if (!m->p) abort();
  }
  memcpy(m->p + m->n, buf, n);
  m->n += n;
  return (ssize_t)n;
}

static inline ssize_t mem_read(void *ctx, void *buf, size_t n)
{
  struct mem *m = ctx;
  size_t k = m->n - m->off < n ? m->n - m->off : n;
  if (m->short_reads && k > 7) k = k / 2 + 1;
  memcpy(buf, m->p + m->off, k);
  m->off += k;
  return (ssize_t)k;
}

#endif
