/* Fuzz target: vmp_osv_parse, one record of vmpatch's OSV feed (untrusted JSON,
 * man/vmpatch.1), and vmp_inventory_parse on the same bytes. A record that
 * parses has an id, and each entry it keeps an ecosystem vmpatch reads, a
 * package, events with versions its ecosystem accepts, and a severity in range;
 * its ranges are evaluated against a few versions without harm. A refusal says
 * why and leaves nothing. An inventory that parses writes out to text that
 * parses back to the same text. */
#include <string.h>

#include "fuzz.h"
#include "vmpatch.h"

static void check_record(const uint8_t *data, size_t size)
{
  struct vmp_advisory a;
  char why[256] = "";
  if (vmp_osv_parse((const char *)data, size, &a, why, sizeof why) != 0) {
    FUZZ_CHECK(why[0] != '\0');
    FUZZ_CHECK(a.id == NULL && a.naff == 0);
    return;
  }
  FUZZ_CHECK(a.id && a.id[0]);
  for (size_t i = 0; i < a.naff; i++) {
    const struct vmp_affected *e = &a.aff[i];
    int f = vmp_ecosystem_format(e->ecosystem);
    FUZZ_CHECK(f >= 0);
    FUZZ_CHECK(e->package && e->package[0]);
    FUZZ_CHECK(e->severity >= VMP_SEV_UNKNOWN && e->severity <= VMP_SEV_CRITICAL);
    for (size_t r = 0; r < e->nranges; r++)
      for (size_t k = 0; k < e->ranges[r].n; k++) {
        const struct vmp_event *ev = &e->ranges[r].ev[k];
        FUZZ_CHECK(ev->kind == VMP_EV_INTRODUCED || ev->kind == VMP_EV_FIXED || ev->kind == VMP_EV_LAST_AFFECTED);
        FUZZ_CHECK(strcmp(ev->version, "0") == 0 || vmp_version_valid((enum vmp_pkgfmt)f, ev->version, NULL));
      }
    static const char *const probes[] = { "0", "1.0", "1:2.0-1", "3.0.11-1~deb12u2" };
    for (size_t p = 0; p < sizeof probes / sizeof probes[0]; p++) {
      const char *fixed;
      if (vmp_affected_match(e, (enum vmp_pkgfmt)f, probes[p], &fixed) && fixed)
        FUZZ_CHECK(vmp_vercmp((enum vmp_pkgfmt)f, fixed, probes[p]) > 0);
    }
  }
  vmp_advisory_free(&a);
}

static void check_inventory(const uint8_t *data, size_t size)
{
  struct vmp_inventory inv, back;
  char why[256] = "";
  if (vmp_inventory_parse((const char *)data, size, &inv, why, sizeof why) != 0) {
    FUZZ_CHECK(why[0] != '\0');
    FUZZ_CHECK(inv.n == 0);
    return;
  }
  char *text = vmp_inventory_write(&inv);
  FUZZ_CHECK(vmp_inventory_parse(text, strlen(text), &back, why, sizeof why) == 0);
  char *again = vmp_inventory_write(&back);
  FUZZ_CHECK(strcmp(text, again) == 0);
  free(text);
  free(again);
  vmp_inventory_free(&back);
  vmp_inventory_free(&inv);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  check_record(data, size);
  check_inventory(data, size);
  return 0;
}

#ifdef FUZZ_DRIVER
void fuzz_seeds(fuzz_add_fn *add)
{
  static const char *const seeds[][2] = {
    { "dsa.json",
      "{\"id\":\"DSA-5532-1\",\"aliases\":[\"CVE-2023-5678\"],\"affected\":[{\"package\":{\"ecosystem\":\"Debian:12\","
      "\"name\":\"openssl\"},\"ranges\":[{\"type\":\"ECOSYSTEM\",\"events\":[{\"introduced\":\"0\"},{\"fixed\":"
      "\"3.0.11-1~deb12u3\"}]}],\"ecosystem_specific\":{\"urgency\":\"high\"}}]}" },
    { "alsa.json",
      "{\"id\":\"ALSA-2024:1\",\"database_specific\":{\"severity\":\"Moderate\"},\"severity\":[{\"type\":\"CVSS_V3\","
      "\"score\":\"7.5\"}],\"affected\":[{\"package\":{\"ecosystem\":\"AlmaLinux:9\",\"name\":\"glibc\"},\"versions\":"
      "[\"2.34-83.el9_3.7\"],\"ranges\":[{\"type\":\"ECOSYSTEM\",\"events\":[{\"introduced\":\"1:2.0\"},"
      "{\"last_affected\":\"2.34-83.el9_3.7\"}]},{\"type\":\"GIT\",\"events\":[{\"introduced\":\"a\"},{\"limit\":\"b\"}]}]}]}" },
    { "withdrawn.json", "{\"id\":\"W\",\"withdrawn\":\"2024-01-01T00:00:00Z\",\"affected\":[]}" },
    { "inventory.json",
      "{\"format\":\"vmpatch-inventory\",\"version\":1,\"targets\":[{\"name\":\"vm1\",\"kind\":\"vm\",\"os\":{\"id\":"
      "\"debian\",\"version_id\":\"12\",\"package_format\":\"deb\"},\"packages\":[{\"name\":\"libssl3\",\"version\":"
      "\"3.0.11-1~deb12u2\",\"arch\":\"amd64\",\"source\":\"openssl\",\"source_version\":\"3.0.11-1~deb12u2\"}]},"
      "{\"name\":\"h\",\"kind\":\"host\",\"os\":{\"id\":\"rocky\",\"package_format\":\"rpm\"},\"packages\":[]}]}" },
  };
  for (size_t i = 0; i < sizeof seeds / sizeof seeds[0]; i++) add(seeds[i][0], seeds[i][1], strlen(seeds[i][1]));
}
#endif
