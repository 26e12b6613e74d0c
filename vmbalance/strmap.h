/* A small open-addressing map from strings to ints, for the names of a pool
 * (hosts, VMs) and of a config file. Keys are borrowed: they must outlive the map. */
#ifndef VMBALANCE_STRMAP_H
#define VMBALANCE_STRMAP_H

#include <stddef.h>

struct bal_map {
  const char **keys;
  int *vals;
  size_t cap, n;
};

/* The value of key, or -1. */
int bal_map_get(const struct bal_map *m, const char *key);
/* Sets key to val when key is absent and returns -1; else leaves it and returns
 * its value. */
int bal_map_put(struct bal_map *m, const char *key, int val);
void bal_map_free(struct bal_map *m);

#endif
