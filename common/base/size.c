/* Sizes as people type them (4G, 512M, 1.5T) and as tables show them. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <strings.h>
#include <string.h>

#include "vmkit-base.h"

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

/* Computed in integers, never through a double: 9007199254740993 stays itself, and
 * a fraction is taken only when it makes a whole number of bytes (1.5G yes,
 * 1.00000000000000000001G no). */
int vm_parse_size(const char *s, char default_unit, uint64_t *bytes)
{
  if (!s || !*s || !isdigit((unsigned char)*s)) return -1;
  size_t ilen = strspn(s, "0123456789");
  const char *frac = NULL;
  size_t flen = 0;
  const char *end = s + ilen;
  if (*end == '.') {
    frac = end + 1;
    flen = strspn(frac, "0123456789");
    if (flen == 0) return -1;
    end = frac + flen;
  }
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

  /* The whole part, with overflow checks. */
  uint64_t whole = 0;
  for (size_t i = 0; i < ilen; i++) {
    unsigned d = (unsigned)(s[i] - '0');
    if (whole > (UINT64_MAX - d) / 10) return -1;
    whole = whole * 10 + d;
  }
  if (shift && whole > (UINT64_MAX >> shift)) return -1;
  uint64_t total = whole << shift;

  /* The fraction: digits/10^k of the unit must be a whole number of bytes. Trailing
   * zeros say nothing; more than 20 significant digits cannot make a whole number of
   * bytes with units up to P (and would not fit the arithmetic below). */
  while (flen > 0 && frac[flen - 1] == '0') flen--;
  if (flen > 0) {
    if (flen > 20) return -1;
    unsigned __int128 num = 0, den = 1;
    for (size_t i = 0; i < flen; i++) {
      num = num * 10 + (unsigned)(frac[i] - '0');
      den *= 10;
    }
    num <<= shift; /* < 10^20 * 2^50, well inside 128 bits */
    if (num % den != 0) return -1;
    unsigned __int128 part = num / den;
    if (part > UINT64_MAX - total) return -1;
    total += (uint64_t)part;
  }
  *bytes = total;
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
