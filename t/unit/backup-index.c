/* vmbackup's index files (man/vmbackup-repository.5): encoded sorted, found by
 * binary search, every damaged file refused. Under AddressSanitizer and UBSan:
 * vb_index_check reads untrusted bytes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "../../vmbackup/index.h"

/* Entries of 3 packs: pack k has bytes k, k+1, ... */
static unsigned char packs3[3][VB_PACK_ID_LEN];

static void fill(struct vb_ientry *e, size_t n)
{
  for (int k = 0; k < 3; k++)
    for (int j = 0; j < VB_PACK_ID_LEN; j++) packs3[k][j] = (unsigned char)(k + j);
  for (size_t i = 0; i < n; i++) {
    for (int j = 0; j < 32; j++) e[i].id[j] = (unsigned char)rand();
    memcpy(e[i].pack, packs3[i % 3], VB_PACK_ID_LEN);
    e[i].offset = (uint64_t)i * 300000 + 24;
    e[i].reclen = (uint32_t)(1000 + i);
    e[i].rawlen = 262144;
  }
}

static void encodes_checks_and_finds(void **state)
{
  unsigned char pack[VB_PACK_ID_LEN] = { 1, 2, 3 };
  for (int merged = 0; merged < 2; merged++) {
    for (size_t n = 0; n < 300; n += 37) {
      struct vb_ientry *e = calloc(n + 1, sizeof *e), *copy = calloc(n + 1, sizeof *e);
      fill(e, n);
      memcpy(copy, e, n * sizeof *e);
      unsigned char *buf;
      size_t len;
      const char *why = NULL;
      assert_int_equal(vb_index_encode(merged, pack, e, n, packs3, 3, &buf, &len, &why), 0);
      assert_int_equal(len, VB_INDEX_HEAD + n * (merged ? VB_IENTRY_MERGED : VB_IENTRY_PACK) +
                                (merged ? 8 + 3 * VB_PACK_ID_LEN : 0) + VB_INDEX_SUM);
      struct vb_index ix;
      assert_int_equal(vb_index_check(buf, len, &ix, &why), 0);
      assert_int_equal(ix.n, n);
      assert_int_equal(ix.merged, merged);
      assert_true(vb_index_covers(&ix, merged ? packs3[2] : pack));
      unsigned char stranger[VB_PACK_ID_LEN] = { 0xee };
      assert_false(vb_index_covers(&ix, stranger));
      /* Every entry is found, with what it was given. */
      for (size_t i = 0; i < n; i++) {
        struct vb_ientry got;
        assert_true(vb_index_find(&ix, copy[i].id, &got));
        assert_int_equal(got.offset, copy[i].offset);
        assert_int_equal(got.reclen, copy[i].reclen);
        assert_int_equal(got.rawlen, copy[i].rawlen);
        assert_memory_equal(got.pack, merged ? copy[i].pack : pack, VB_PACK_ID_LEN);
      }
      /* An id that is not there is not found. */
      unsigned char other[32];
      memset(other, 0xff, 32);
      struct vb_ientry got;
      assert_false(vb_index_find(&ix, other, &got));
      memset(other, 0, 32);
      assert_false(vb_index_find(&ix, other, &got));
      free(buf);
      free(e);
      free(copy);
    }
  }
}

static void refuses_repeated_ids(void **state)
{
  struct vb_ientry e[3];
  fill(e, 3);
  memcpy(e[2].id, e[0].id, 32);
  unsigned char *buf;
  size_t len;
  const char *why = NULL;
  unsigned char pack[VB_PACK_ID_LEN] = { 0 };
  assert_int_equal(vb_index_encode(false, pack, e, 3, NULL, 0, &buf, &len, &why), -1);
  assert_string_equal(why, "a chunk id is there twice");
}

static void refuses_merged_entries_of_unlisted_packs(void **state)
{
  struct vb_ientry e[6];
  fill(e, 6);
  unsigned char *buf, pack[VB_PACK_ID_LEN] = { 0 };
  size_t len;
  const char *why = NULL;
  assert_int_equal(vb_index_encode(true, pack, e, 6, packs3, 2, &buf, &len, &why), -1);
  assert_string_equal(why, "an entry's pack is not listed");
}

/* Every byte changed, a length cut or grown: refused, in both kinds. */
static void refuses_every_damage(void **state)
{
  for (int merged = 0; merged < 2; merged++) {
    struct vb_ientry e[20];
    fill(e, 20);
    unsigned char *buf, pack[VB_PACK_ID_LEN] = { 9 };
    size_t len;
    const char *why = NULL;
    assert_int_equal(vb_index_encode(merged, pack, e, 20, packs3, 3, &buf, &len, &why), 0);
    struct vb_index ix;
    for (size_t i = 0; i < len; i++) {
      buf[i] ^= 0x01;
      assert_int_equal(vb_index_check(buf, len, &ix, &why), -1);
      buf[i] ^= 0x01;
    }
    for (size_t cut = 0; cut < len; cut++) assert_int_equal(vb_index_check(buf, cut, &ix, &why), -1);
    unsigned char *more = calloc(1, len + 48);
    memcpy(more, buf, len);
    assert_int_equal(vb_index_check(more, len + 48, &ix, &why), -1);
    free(more);
    free(buf);
  }
}

/* Random bytes, with a valid magic, count and checksum sometimes: refused or
 * consistent, never a crash (ASan watches). */
static void random_files(void **state)
{
  unsigned char buf[2048];
  for (int i = 0; i < 20000; i++) {
    size_t len = (size_t)rand() % sizeof buf;
    for (size_t j = 0; j < len; j++) buf[j] = (unsigned char)rand();
    if (len >= 8 && rand() % 2) memcpy(buf, rand() % 2 ? "VMKIDX01" : "VMKMRG01", 8);
    struct vb_index ix;
    const char *why;
    if (vb_index_check(buf, len, &ix, &why) == 0) {
      struct vb_ientry got;
      unsigned char id[32] = { 0 };
      vb_index_find(&ix, id, &got);
    }
  }
}

int main(void)
{
  srand(11);
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(encodes_checks_and_finds),
    cmocka_unit_test(refuses_repeated_ids),
    cmocka_unit_test(refuses_merged_entries_of_unlisted_packs),
    cmocka_unit_test(refuses_every_damage),
    cmocka_unit_test(random_files),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
