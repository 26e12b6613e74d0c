/* Fuzz target: bal_config_parse, vmbalance's config file (untrusted text,
 * man/vmbalance.conf.5). A config that parses is within its ranges, its rules
 * hold only names that can go into a plan line, and it encodes with
 * bal_config_encode to a text that parses back to the same text; an error names
 * a line of the input. */
#include <string.h>

#include "../../vmbalance/config.h"
#include "fuzz.h"

static int lines_of(const uint8_t *data, size_t size)
{
  int n = 1;
  for (size_t i = 0; i < size; i++)
    if (data[i] == '\n') n++;
  return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  struct bal_config c, back;
  struct bal_error e;
  if (bal_config_parse((const char *)data, size, &c, &e) != 0) {
    FUZZ_CHECK(e.msg[0] != '\0');
    FUZZ_CHECK(e.line >= 0 && e.line <= lines_of(data, size));
    FUZZ_CHECK(c.n == 0);
    return 0;
  }
  FUZZ_CHECK(c.level >= 1 && c.level <= 5);
  FUZZ_CHECK(c.headroom >= 0 && c.headroom <= 90);
  FUZZ_CHECK(c.bandwidth >= 1 && c.bandwidth <= 1000000);
  int sum = 0;
  for (int r = 0; r < BAL_NRES; r++) {
    FUZZ_CHECK(c.weight_milli[r] >= 0 && c.weight_milli[r] <= 100000);
    sum += c.weight_milli[r];
  }
  FUZZ_CHECK(sum > 0);
  for (size_t i = 0; i < c.n; i++) {
    FUZZ_CHECK(c.v[i].n >= 1 && c.v[i].line >= 1);
    for (size_t k = 0; k < c.v[i].n; k++) {
      const char *w = c.v[i].w[k];
      FUZZ_CHECK(w[0] != '\0' && !strpbrk(w, " \t\r\n#\"'\\"));
    }
  }
  char *text = bal_config_encode(&c);
  FUZZ_CHECK(text != NULL);
  FUZZ_CHECK(bal_config_parse(text, strlen(text), &back, &e) == 0);
  FUZZ_CHECK(back.n == c.n);
  char *again = bal_config_encode(&back);
  FUZZ_CHECK(strcmp(text, again) == 0);
  free(text);
  free(again);
  bal_config_free(&back);
  bal_config_free(&c);
  return 0;
}

#ifdef FUZZ_DRIVER
void fuzz_seeds(fuzz_add_fn *add)
{
  static const char *const seeds[][2] = {
    { "example.conf",
      "policy balance\nlevel 3\nweight disk 0.5\nweight network 0.5\nheadroom 15%\n"
      "affinity app1 cache1\nanti-affinity db1 db2 db3\npin licensed1 kvm1 kvm2\nexclude build1 kvm3\n"
      "maintenance kvm4\npriority db1 90\nha db1 db2 db3 app1\n"
      "fence kvm1 fence_ipmilan ip=10.0.9.1 username=admin password_script=/etc/vmkit/p lanplus=1\n" },
    { "consolidate.conf", "# power\r\npolicy consolidate\r\nlevel 5\r\nthreshold 0.125\r\nbandwidth 250\r\n" },
    { "contradiction.conf", "affinity a b\naffinity b c\nanti-affinity c a\n" },
    { "pinned.conf", "pin v h1 h2\nexclude v h3\nexclude w h1\n" },
  };
  for (size_t i = 0; i < sizeof seeds / sizeof seeds[0]; i++) add(seeds[i][0], seeds[i][1], strlen(seeds[i][1]));
}
#endif
