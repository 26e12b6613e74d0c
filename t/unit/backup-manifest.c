/* vmbackup's snapshot manifests (man/vmbackup-repository.5): written and read
 * back, holes kept, every inconsistent manifest refused. Under AddressSanitizer
 * and UBSan: vb_manifest_parse reads untrusted bytes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "../../vmbackup/manifest.h"

#define CS (256u << 10)
#define SNAP "0123456789abcdef0123456789abcdef"

static void sample(struct vb_manifest *m)
{
  memset(m, 0, sizeof *m);
  m->snapshot = "0123456789abcdef0123456789abcdef";
  m->vm = "web1";
  m->uuid = "8c1c7a3e-1b7e-4a53-9a8e-2f1d5d9b0e11";
  m->host = "kvm1";
  m->started = "2026-12-01T03:00:00Z";
  m->ended = "2026-12-01T03:01:10Z";
  m->kind = "incremental";
  m->why = "checkpoint vmbackup-1 of the last backup";
  m->checkpoint = "vmbackup-2";
  m->xml = "<domain type='kvm'><name>web1</name>\n</domain>";
  static struct vb_mdisk d[2];
  static unsigned char ids0[9][32], ids1[1][32];
  for (int i = 0; i < 9; i++)
    for (int j = 0; j < 32; j++) ids0[i][j] = i % 3 == 0 ? 0 : (unsigned char)(i * 32 + j);
  memset(ids1, 7, sizeof ids1);
  d[0] = (struct vb_mdisk){ "vda", "qcow2", 8 * CS + 512, 9, ids0 };
  d[1] = (struct vb_mdisk){ "vdb", "raw", 4096, 1, ids1 };
  m->disks = d;
  m->ndisks = 2;
  m->bytes_read = 5 * CS;
  m->bytes_new = 3 * CS;
  m->bytes_stored = CS + 17;
}

static void writes_and_reads_back(void **state)
{
  struct vb_manifest m, back;
  sample(&m);
  unsigned char *buf;
  size_t len;
  const char *why = NULL;
  assert_int_equal(vb_manifest_encode(&m, CS, &buf, &len, &why), 0);
  assert_int_equal(vb_manifest_parse(buf, len, CS, SNAP, &back, &why), 0);
  assert_string_equal(back.vm, "web1");
  assert_string_equal(back.xml, m.xml);
  assert_int_equal(back.bytes_read, 5 * CS);
  assert_int_equal(back.bytes_new, 3 * CS);
  assert_int_equal(back.bytes_stored, CS + 17);
  assert_string_equal(back.kind, "incremental");
  assert_int_equal(back.ndisks, 2);
  assert_string_equal(back.disks[0].target, "vda");
  assert_int_equal(back.disks[0].size, 8 * CS + 512);
  assert_int_equal(back.disks[0].nchunks, 9);
  assert_memory_equal(back.disks[0].ids, m.disks[0].ids, 9 * 32);
  assert_true(vb_manifest_hole(&back.disks[0], 0));
  assert_false(vb_manifest_hole(&back.disks[0], 1));
  assert_string_equal(back.disks[1].format, "raw");
  vb_manifest_free(&back);
  /* Another chunk size reads the same tables as the wrong length. */
  assert_int_equal(vb_manifest_parse(buf, len, CS * 2, SNAP, &back, &why), -1);
  assert_string_equal(why, "a disk's chunk table does not match its size");
  /* Cut anywhere, or with bytes added: refused. */
  for (size_t cut = 0; cut < len; cut++) assert_int_equal(vb_manifest_parse(buf, cut, CS, SNAP, &back, &why), -1);
  unsigned char *more = malloc(len + 32);
  memcpy(more, buf, len);
  memset(more + len, 1, 32);
  assert_int_equal(vb_manifest_parse(more, len + 32, CS, SNAP, &back, &why), -1);
  free(more);
  free(buf);
}

static void refuses_inconsistent_ones(void **state)
{
  struct vb_manifest m;
  sample(&m);
  unsigned char *buf;
  size_t len;
  const char *why = NULL;
  m.disks[0].nchunks = 8;
  assert_int_equal(vb_manifest_encode(&m, CS, &buf, &len, &why), -1);
  sample(&m);
  m.disks[1].target = "vda";
  assert_int_equal(vb_manifest_encode(&m, CS, &buf, &len, &why), 0);
  struct vb_manifest back;
  assert_int_equal(vb_manifest_parse(buf, len, CS, SNAP, &back, &why), -1);
  assert_string_equal(why, "a disk is in the manifest twice");
  free(buf);
  /* Another snapshot's manifest; a kind, UUID or time not in its form. */
  sample(&m);
  assert_int_equal(vb_manifest_encode(&m, CS, &buf, &len, &why), 0);
  assert_int_equal(vb_manifest_parse(buf, len, CS, "ffffffffffffffffffffffffffffffff", &back, &why), -1);
  assert_string_equal(why, "manifest of another snapshot");
  free(buf);
  static const struct { size_t off; const char *v, *why; } bad[] = {
    { offsetof(struct vb_manifest, kind), "partial", "manifest kind is neither full nor incremental" },
    { offsetof(struct vb_manifest, uuid), "8C1C7A3E-1B7E-4A53-9A8E-2F1D5D9B0E11", "manifest UUID or times are not in their form" },
    { offsetof(struct vb_manifest, started), "2026-12-01 03:00:00", "manifest UUID or times are not in their form" },
    /* Names that restore turns into file names: no way out of the folder. */
    { offsetof(struct vb_manifest, vm), "../../../etc/x", "manifest VM name is not a plain name" },
    { offsetof(struct vb_manifest, vm), ".hidden", "manifest VM name is not a plain name" },
    { offsetof(struct vb_manifest, vm), "web\n1", "manifest VM name is not a plain name" },
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    sample(&m);
    *(const char **)((char *)&m + bad[i].off) = bad[i].v;
    assert_int_equal(vb_manifest_encode(&m, CS, &buf, &len, &why), 0);
    assert_int_equal(vb_manifest_parse(buf, len, CS, SNAP, &back, &why), -1);
    assert_string_equal(why, bad[i].why);
    free(buf);
  }
  sample(&m);
  m.disks[1].target = "../vdb";
  assert_int_equal(vb_manifest_encode(&m, CS, &buf, &len, &why), 0);
  assert_int_equal(vb_manifest_parse(buf, len, CS, SNAP, &back, &why), -1);
  assert_string_equal(why, "a disk target of the manifest is not a plain name");
  free(buf);
}

/* Random changes to a valid manifest: refused, or read with tables that match
 * their sizes; never a crash (ASan watches). */
static void damaged_bytes(void **state)
{
  struct vb_manifest m, back;
  sample(&m);
  unsigned char *buf, *t;
  size_t len;
  const char *why;
  assert_int_equal(vb_manifest_encode(&m, CS, &buf, &len, &why), 0);
  t = malloc(len);
  for (int i = 0; i < 20000; i++) {
    memcpy(t, buf, len);
    for (int k = 0; k < 1 + rand() % 3; k++) t[(size_t)rand() % len] = (unsigned char)rand();
    if (vb_manifest_parse(t, len, CS, SNAP, &back, &why) == 0) {
      for (size_t d = 0; d < back.ndisks; d++)
        assert_int_equal(back.disks[d].nchunks, back.disks[d].size / CS + (back.disks[d].size % CS != 0));
      vb_manifest_free(&back);
    }
  }
  free(t);
  free(buf);
}

int main(void)
{
  srand(3);
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(writes_and_reads_back),
    cmocka_unit_test(refuses_inconsistent_ones),
    cmocka_unit_test(damaged_bytes),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
