/* What a fuzz target of t/fuzz/ and its engine share: libFuzzer's entry point,
 * the seeds a target makes with the repository's own encoders (built only with
 * t/fuzz/driver.c, FUZZ_DRIVER defined), and the check that turns a broken
 * invariant into a crash. */
#ifndef VMKIT_FUZZ_H
#define VMKIT_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#ifdef FUZZ_DRIVER
/* Hands the driver each seed input of the target, under a short name. */
typedef void fuzz_add_fn(const char *name, const void *data, size_t len);
void fuzz_seeds(fuzz_add_fn *add);
#endif

/* An invariant of a parser that does not hold: as bad as a crash, and kept as
 * one (abort() ends the run; the engine keeps the input). */
#define FUZZ_CHECK(cond)                                                                       \
  do {                                                                                         \
    if (!(cond)) {                                                                             \
      fprintf(stderr, "%s:%d: invariant does not hold: %s\n", __FILE__, __LINE__, #cond);     \
      abort();                                                                                 \
    }                                                                                          \
  } while (0)

#endif
