/* Sizes as people type them (4G, 512M, 1.5T) and as tables show them. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <string.h>

#include "vmkit.h"

static int unit_shift(char u)
{
  switch (toupper((unsigned char)u)) {
  case 'B': return 0;
  case 'K': return 10;
  case 'M': return 20;
  case 'G': return 30;
  case 'T': return 40;
  case 'P': return 50;
  default: return -1;
  }
}

int vm_parse_size(const char *s, char default_unit, uint64_t *bytes)
{
  if (!s || !*s || !isdigit((unsigned char)*s)) return -1;
  /* Digits with an optional fraction: strtod alone would take 1e3 and 0x10. */
  size_t len = strspn(s, "0123456789");
  if (s[len] == '.') len += 1 + strspn(s + len + 1, "0123456789");
  if (len > 32 || s[len - 1] == '.') return -1;
  char num[33];
  memcpy(num, s, len);
  num[len] = '\0';
  errno = 0;
  double v = strtod(num, NULL);
  char *end = (char *)s + len;
  if (errno) return -1;
  int shift;
  if (*end == '\0') {
    shift = unit_shift(default_unit);
  } else {
    shift = unit_shift(*end);
    end++;
    /* Accept 4G, 4GB, 4GiB (all binary), and 4096B. */
    if (shift > 0 && (strcasecmp(end, "iB") == 0 || strcasecmp(end, "B") == 0)) end += strlen(end);
    if (*end) return -1;
  }
  if (shift < 0) return -1;
  double b = v * (double)(1ULL << shift);
  if (b >= 18446744073709551616.0 || b != floor(b)) return -1;
  *bytes = (uint64_t)b;
  return 0;
}

const char *vm_format_size(uint64_t bytes, char buf[static 16])
{
  static const char units[] = "BKMGTP";
  int u = 0;
  double v = (double)bytes;
  while (v >= 1024 && u < 5) { v /= 1024; u++; }
  if (u == 0) snprintf(buf, 16, "%llu", (unsigned long long)bytes);
  else if (v < 10 && v != floor(v)) snprintf(buf, 16, "%.1f%c", v, units[u]);
  else snprintf(buf, 16, "%.0f%c", v, units[u]);
  return buf;
}

int vm_parse_uint(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
  if (!s || !isdigit((unsigned char)*s)) return -1;
  errno = 0;
  char *end;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || *end || v < min || v > max) return -1;
  *out = v;
  return 0;
}

int vm_parse_duration(const char *s, int64_t *seconds)
{
  uint64_t n;
  if (!s || !isdigit((unsigned char)*s)) return -1;
  size_t len = strspn(s, "0123456789");
  if (len > 12) return -1;
  char num[16];
  memcpy(num, s, len);
  num[len] = '\0';
  if (vm_parse_uint(num, 0, 999999999999ULL, &n) < 0) return -1;
  const char *u = s + len;
  int64_t mult;
  if (!*u || strcmp(u, "s") == 0) mult = 1;
  else if (strcmp(u, "m") == 0 || strcmp(u, "min") == 0) mult = 60;
  else if (strcmp(u, "h") == 0) mult = 3600;
  else if (strcmp(u, "d") == 0) mult = 86400;
  else if (strcmp(u, "w") == 0) mult = 7 * 86400;
  else return -1;
  *seconds = (int64_t)n * mult;
  return 0;
}
