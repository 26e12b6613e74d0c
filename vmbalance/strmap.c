/* A map from strings to ints: FNV-1a and linear probing, grown at half full. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "strmap.h"

static uint64_t hash(const char *s)
{
  uint64_t h = 14695981039346656037ull;
  for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
  return h;
}

int bal_map_get(const struct bal_map *m, const char *key)
{
  if (!m->cap) return -1;
  for (size_t i = hash(key) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
    if (!m->keys[i]) return -1;
    if (strcmp(m->keys[i], key) == 0) return m->vals[i];
  }
}

static void grow(struct bal_map *m)
{
  size_t cap = m->cap ? m->cap * 2 : 64;
  const char **keys = calloc(cap, sizeof *keys);
  int *vals = calloc(cap, sizeof *vals);
  if (!keys || !vals) abort();
  for (size_t k = 0; k < m->cap; k++) {
    if (!m->keys[k]) continue;
    size_t i = hash(m->keys[k]) & (cap - 1);
    while (keys[i]) i = (i + 1) & (cap - 1);
    keys[i] = m->keys[k];
    vals[i] = m->vals[k];
  }
  free(m->keys);
  free(m->vals);
  m->keys = keys;
  m->vals = vals;
  m->cap = cap;
}

int bal_map_put(struct bal_map *m, const char *key, int val)
{
  if (2 * (m->n + 1) > m->cap) grow(m);
  size_t i = hash(key) & (m->cap - 1);
  for (; m->keys[i]; i = (i + 1) & (m->cap - 1))
    if (strcmp(m->keys[i], key) == 0) return m->vals[i];
  m->keys[i] = key;
  m->vals[i] = val;
  m->n++;
  return -1;
}

void bal_map_free(struct bal_map *m)
{
  free(m->keys);
  free(m->vals);
  memset(m, 0, sizeof *m);
}
