/* Fuzz target: vb_manifest_parse, a snapshot's manifest (the untrusted content
 * of a manifest record, man/vmbackup-repository.5), at 64 KiB chunks, for the
 * snapshot SNAP. A manifest that parses has the form the parser promises, its
 * tables fill the bytes exactly, and it encodes with vb_manifest_encode to bytes
 * that parse to the same manifest and encode again to the same bytes. */
#include <stdbool.h>
#include <string.h>

#include "../../vmbackup/manifest.h"
#include "fuzz.h"

#define CS (64u << 10)
#define SNAP "0123456789abcdef0123456789abcdef"

static bool same_str(const char *a, const char *b) { return a && b && strcmp(a, b) == 0; }

static bool same(const struct vb_manifest *a, const struct vb_manifest *b)
{
  if (!same_str(a->snapshot, b->snapshot) || !same_str(a->vm, b->vm) || !same_str(a->uuid, b->uuid) ||
      !same_str(a->host, b->host) || !same_str(a->started, b->started) || !same_str(a->ended, b->ended) ||
      !same_str(a->kind, b->kind) || !same_str(a->why, b->why) || !same_str(a->checkpoint, b->checkpoint) ||
      !same_str(a->xml, b->xml) || a->bytes_read != b->bytes_read || a->bytes_new != b->bytes_new ||
      a->bytes_stored != b->bytes_stored || a->ndisks != b->ndisks)
    return false;
  for (size_t i = 0; i < a->ndisks; i++) {
    const struct vb_mdisk *x = &a->disks[i], *y = &b->disks[i];
    if (!same_str(x->target, y->target) || !same_str(x->format, y->format) || x->size != y->size ||
        x->nchunks != y->nchunks || memcmp(x->ids, y->ids, x->nchunks * 32) != 0)
      return false;
  }
  return true;
}

/* What the parser promises of a manifest it accepts. */
static void check_form(const struct vb_manifest *m, size_t len, size_t meta)
{
  FUZZ_CHECK(same_str(m->snapshot, SNAP));
  FUZZ_CHECK(same_str(m->kind, "full") || same_str(m->kind, "incremental"));
  FUZZ_CHECK(m->vm && *m->vm && *m->vm != '.' && !strchr(m->vm, '/'));
  FUZZ_CHECK(m->uuid && strlen(m->uuid) == 36 && m->started && strlen(m->started) == 20 && m->ended &&
             strlen(m->ended) == 20);
  FUZZ_CHECK(m->host && m->why && m->checkpoint && m->xml);
  FUZZ_CHECK(m->bytes_read <= INT64_MAX && m->bytes_new <= INT64_MAX && m->bytes_stored <= INT64_MAX);
  FUZZ_CHECK(m->ndisks <= VB_MANIFEST_MAX_DISKS);
  size_t table = 0;
  for (size_t i = 0; i < m->ndisks; i++) {
    const struct vb_mdisk *d = &m->disks[i];
    FUZZ_CHECK(d->target && *d->target && *d->target != '.' && !strchr(d->target, '/') && d->format);
    for (size_t k = 0; k < i; k++) FUZZ_CHECK(strcmp(m->disks[k].target, d->target) != 0);
    FUZZ_CHECK(d->nchunks == d->size / CS + (d->size % CS != 0));
    for (size_t c = 0; c < d->nchunks; c++) {
      static const unsigned char zero[32];
      FUZZ_CHECK(vb_manifest_hole(d, c) == (memcmp(d->ids[c], zero, 32) == 0));
    }
    table += d->nchunks * 32;
  }
  FUZZ_CHECK(12 + meta + table == len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  struct vb_manifest m, back;
  const char *why = NULL;
  if (vb_manifest_parse(data, size, CS, SNAP, &m, &why) != 0) {
    FUZZ_CHECK(why != NULL);
    FUZZ_CHECK(m.ndisks == 0 && m.disks == NULL && m.snapshot == NULL && m.xml == NULL);
    return 0;
  }
  check_form(&m, size, (size_t)data[8] | (size_t)data[9] << 8 | (size_t)data[10] << 16 | (size_t)data[11] << 24);

  unsigned char *out, *again;
  size_t outlen, againlen;
  FUZZ_CHECK(vb_manifest_encode(&m, CS, &out, &outlen, &why) == 0);
  FUZZ_CHECK(vb_manifest_parse(out, outlen, CS, SNAP, &back, &why) == 0);
  FUZZ_CHECK(same(&m, &back));
  FUZZ_CHECK(vb_manifest_encode(&back, CS, &again, &againlen, &why) == 0);
  FUZZ_CHECK(againlen == outlen && memcmp(again, out, outlen) == 0);
  free(out);
  free(again);
  vb_manifest_free(&back);
  vb_manifest_free(&m);
  return 0;
}

#ifdef FUZZ_DRIVER
void fuzz_seeds(fuzz_add_fn *add)
{
  /* Two disks (holes among the chunks, a last chunk cut short), one empty disk,
   * no disk at all. */
  static unsigned char ids0[9][32], ids1[1][32], ids2[1][32];
  for (int i = 0; i < 9; i++)
    for (int j = 0; j < 32; j++) ids0[i][j] = i % 3 == 0 ? 0 : (unsigned char)(i * 32 + j);
  memset(ids1, 7, sizeof ids1);
  struct vb_mdisk d[3] = { { "vda", "qcow2", 8 * CS + 512, 9, ids0 }, { "vdb", "raw", 4096, 1, ids1 },
                           { "sda", "raw", 0, 0, ids2 } };
  struct vb_manifest m = {
    .snapshot = SNAP,
    .vm = "web1",
    .uuid = "8c1c7a3e-1b7e-4a53-9a8e-2f1d5d9b0e11",
    .host = "kvm1",
    .started = "2026-12-01T03:00:00Z",
    .ended = "2026-12-01T03:01:10Z",
    .kind = "incremental",
    .why = "checkpoint vmbackup-1 of the last backup",
    .checkpoint = "vmbackup-2",
    .xml = "<domain type='kvm'><name>web1</name>\n</domain>",
    .bytes_read = 5 * CS,
    .bytes_new = 3 * CS,
    .bytes_stored = CS + 17,
    .ndisks = 2,
    .disks = d,
  };
  static const char *const names[] = { "two-disks", "empty-disk", "no-disk" };
  for (int k = 0; k < 3; k++) {
    if (k == 1) {
      m.disks = d + 2;
      m.ndisks = 1;
      m.kind = "full";
      m.checkpoint = "";
    } else if (k == 2) {
      m.ndisks = 0;
    }
    unsigned char *buf;
    size_t len;
    const char *why;
    FUZZ_CHECK(vb_manifest_encode(&m, CS, &buf, &len, &why) == 0);
    add(names[k], buf, len);
    free(buf);
  }
}
#endif
