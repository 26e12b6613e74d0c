/* A small fuzzing engine for the targets of t/fuzz/, for machines without
 * libFuzzer: gcc links it with one target (make t/fuzz/fuzz-config, ...).
 *
 *   t/fuzz/fuzz-X FILE|DIR...      run each input once: reproduces a crash
 *   t/fuzz/fuzz-X -runs=N [-seconds=S] [-seed=K] [-max_len=M] [-timeout=S]
 *                 [-artifact_prefix=DIR/] [FILE|DIR...]
 *                                  mutate the target's own seeds (and the inputs
 *                                  named) N runs or S seconds, whichever ends first
 *   t/fuzz/fuzz-X -gen-seeds DIR   write the target's seeds to DIR
 *
 * Before each run the input is written to DIR/fuzz-X.input; when a sanitizer, a
 * broken invariant (abort) or the timeout ends the process, that file is renamed
 * DIR/crash-HASH and its name printed; a process killed outright leaves it as it
 * is. DIR is -artifact_prefix, else $FUZZ_ARTIFACT_DIR/, else the current folder.
 * The same seed makes the same runs. The mutations: bit flips, byte sets,
 * inserts, deletes, copies within the input, splices of two inputs, truncation
 * and growth, interesting integers as 4- and 8-byte little-endian lengths, JSON
 * tokens. The Makefile builds the target with -fsanitize-coverage=trace-pc, and
 * an input that reaches code no input had reached before joins the corpus.
 * -runs, -seed, -max_len, -timeout, -artifact_prefix and -max_total_time (the
 * same as -seconds) are libFuzzer's options too, so t/run runs a target built
 * either way. With libFuzzer: make -B FUZZ_ENGINE=libfuzzer t/fuzz/fuzz-X, and
 * a gcc build's -gen-seeds DIR as its corpus (the Makefile says more). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sanitizer/common_interface_defs.h>

#include "fuzz.h"

struct input {
  unsigned char *p;
  size_t n;
  const char *path; /* the file it came from, or NULL */
};
static struct input *corpus;
static size_t ncorpus, corpus_cap, max_len;
static const char *seed_dir; /* -gen-seeds */

static void die(const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  fputs("fuzz: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  exit(2);
}

static void add(const unsigned char *p, size_t n, const char *path)
{
  if (ncorpus == corpus_cap) {
    corpus_cap = corpus_cap ? 2 * corpus_cap : 64;
    if (!(corpus = realloc(corpus, corpus_cap * sizeof *corpus))) die("out of memory");
  }
  unsigned char *c = malloc(n ? n : 1);
  if (!c) die("out of memory");
  if (n) memcpy(c, p, n);
  corpus[ncorpus++] = (struct input){ c, n, path ? strdup(path) : NULL };
}

/* fuzz_seeds' callback: into the corpus, or with -gen-seeds into a file. */
static void add_seed(const char *name, const void *data, size_t len)
{
  if (!seed_dir) {
    add(data, len, NULL);
    return;
  }
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", seed_dir, name);
  FILE *f = fopen(path, "wb");
  if (!f || fwrite(data, 1, len, f) != len || fclose(f) != 0) die("cannot write '%s': %s", path, strerror(errno));
}

static void add_file(const char *path)
{
  FILE *f = fopen(path, "rb");
  if (!f) die("cannot open '%s': %s", path, strerror(errno));
  unsigned char *p = NULL;
  size_t n = 0, cap = 0, got;
  do {
    if (n == cap && !(p = realloc(p, cap = cap ? 2 * cap : 4096))) die("out of memory");
    got = fread(p + n, 1, cap - n, f);
    n += got;
  } while (got);
  if (ferror(f)) die("cannot read '%s'", path);
  fclose(f);
  add(p, n, path);
  free(p);
}

/* A file, or every file of a folder. */
static void add_path(const char *path)
{
  struct stat st;
  if (stat(path, &st) != 0) die("cannot open '%s': %s", path, strerror(errno));
  if (!S_ISDIR(st.st_mode)) {
    add_file(path);
    return;
  }
  struct dirent **names;
  int n = scandir(path, &names, NULL, alphasort); /* sorted: the same order every time */
  if (n < 0) die("cannot read '%s': %s", path, strerror(errno));
  for (int i = 0; i < n; i++) {
    char sub[4096];
    snprintf(sub, sizeof sub, "%s/%s", path, names[i]->d_name);
    if (names[i]->d_name[0] != '.' && stat(sub, &st) == 0 && S_ISREG(st.st_mode)) add_file(sub);
    free(names[i]);
  }
  free(names);
}

/* The input under test is kept in a file; when the process dies it becomes
 * crash-HASH. Only async-signal-safe calls after a death. */
static char input_path[4096], crash_path[4096 + 32];
static int input_fd = -1;

static void keep_input(void)
{
  if (input_fd < 0 || rename(input_path, crash_path) != 0) return;
  input_fd = -1;
  static const char msg[] = "fuzz: the input is kept in ";
  if (write(2, msg, sizeof msg - 1) < 0 || write(2, crash_path, strlen(crash_path)) < 0 || write(2, "\n", 1) < 0) {
  }
}

static void on_signal(int sig)
{
  if (sig == SIGALRM) {
    static const char msg[] = "fuzz: an input ran longer than -timeout\n";
    if (write(2, msg, sizeof msg - 1) < 0) {
    }
  }
  keep_input();
  signal(SIGABRT, SIG_DFL);
  abort();
}

static uint64_t fnv(const unsigned char *p, size_t n)
{
  uint64_t h = 0xcbf29ce484222325u;
  for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3u;
  return h;
}

static void save_input(const unsigned char *p, size_t n, const char *prefix)
{
  snprintf(crash_path, sizeof crash_path, "%scrash-%016llx", prefix, (unsigned long long)fnv(p, n));
  if (pwrite(input_fd, p, n, 0) != (ssize_t)n || ftruncate(input_fd, (off_t)n) != 0)
    die("cannot write '%s': %s", input_path, strerror(errno));
}

/* Coverage: gcc calls this at every basic block of the code built with
 * -fsanitize-coverage=trace-pc (the target and the parsers, not this file). An
 * edge is the pair of the last two blocks, by their offset from the target's
 * entry point (the same whatever the load address). */
#define MAP_SIZE (1u << 16)
static unsigned char edges[MAP_SIZE], seen[MAP_SIZE];
static uintptr_t prev_block;
void __sanitizer_cov_trace_pc(void);
void __sanitizer_cov_trace_pc(void)
{
  uintptr_t pc = (uintptr_t)__builtin_return_address(0) - (uintptr_t)&LLVMFuzzerTestOneInput;
  uintptr_t cur = (pc * 0x9e3779b97f4a7c15u) >> 48;
  edges[(cur ^ prev_block) & (MAP_SIZE - 1)] = 1;
  prev_block = cur >> 1;
}

/* Whether the last run reached an edge no run had before. */
static bool new_coverage(void)
{
  bool fresh = false;
  for (size_t i = 0; i < MAP_SIZE; i += 8) {
    uint64_t word;
    memcpy(&word, edges + i, 8); /* most are 0: 8 at a time */
    for (size_t j = i; word && j < i + 8; j++)
      if (edges[j] && !seen[j]) seen[j] = 1, fresh = true;
  }
  memset(edges, 0, sizeof edges);
  prev_block = 0;
  return fresh;
}

/* splitmix64: small, and the same sequence for the same -seed. */
static uint64_t rng;
static uint64_t next(void)
{
  uint64_t z = (rng += 0x9e3779b97f4a7c15u);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
  return z ^ (z >> 31);
}
static size_t below(size_t n) { return n ? (size_t)(next() % n) : 0; }

static const uint64_t interesting[] = { 0, 1, 2, 3, 8, 16, 31, 32, 33, 48, 64, 127, 128, 255, 256, 4096, 0x7fff, 0x8000,
                                        0xffff, 0x10000, 0x40000, 0x400000, 0x10000000, 0x7fffffff, 0x80000000,
                                        0xffffffff, 0x100000000, 0x7fffffffffffffff, 0x8000000000000000,
                                        0xffffffffffffffff };
static const char *const tokens[] = { "{", "}", "[", "]", ",", ":", "\"", "\\", "\\u0000", "\\ud800", "\\\"", "null",
                                      "true", "false", "0", "-1", "-0", "0.5", "1e999", "255", "65536",
                                      "4294967296", "9223372036854775807", "9223372036854775808",
                                      "18446744073709551616", "\"\":", "{}", "[]", "\"x\"", " ", "\n", "\xff",
                                      "\xc3\xa9", "\"=\"" };

/* Inserts k bytes at `at` (as many as max_len leaves room for); returns k. */
static size_t make_room(unsigned char *b, size_t *n, size_t at, size_t k)
{
  if (k > max_len - *n) k = max_len - *n;
  memmove(b + at + k, b + at, *n - at);
  *n += k;
  return k;
}

/* One mutation of b (n bytes, room for max_len); returns the new length. */
static size_t mutate(unsigned char *b, size_t n)
{
  size_t at = below(n + 1), k;
  const struct input *o = &corpus[below(ncorpus)];
  switch (below(9)) {
  case 0: /* a bit flipped */
    if (n) b[below(n)] ^= (unsigned char)(1u << below(8));
    break;
  case 1: /* a byte set */
    if (n) b[below(n)] = (unsigned char)next();
    break;
  case 2: { /* bytes inserted: random, or one repeated */
    unsigned char v = (unsigned char)next();
    bool same = next() & 1;
    k = make_room(b, &n, at, 1 + below(next() & 1 ? 4 : 64));
    for (size_t i = 0; i < k; i++) b[at + i] = same ? v : (unsigned char)next();
    break;
  }
  case 3: /* bytes deleted */
    if (at < n) {
      k = 1 + below(next() & 1 && n - at > 4 ? 4 : n - at);
      memmove(b + at, b + at + k, n - at - k);
      n -= k;
    }
    break;
  case 4: /* a piece copied over another place of the same input */
    if (n) {
      size_t from = below(n);
      k = 1 + below(n - from);
      at = below(n - k + 1);
      memmove(b + at, b + from, k);
    }
    break;
  case 5: { /* spliced: a piece of another input inserted, or put in place of the rest */
    size_t from = below(o->n + 1);
    k = below(o->n - from + 1);
    if (next() & 1) {
      n = at;
      if (k > max_len - n) k = max_len - n;
    } else {
      k = make_room(b, &n, at, k);
    }
    memcpy(b + at, o->p + from, k);
    n = at + k > n ? at + k : n;
    break;
  }
  case 6: /* cut short, or grown with zeros */
    if (next() & 1) {
      n = below(n + 1);
    } else {
      k = make_room(b, &n, n, 1 + below(256));
      memset(b + n - k, 0, k);
    }
    break;
  case 7: { /* an interesting integer, or the length of what follows it, little-endian */
    size_t w = next() & 1 ? 4 : 8;
    if (n < w) break;
    at = below(n - w + 1);
    uint64_t v = next() & 1 ? interesting[below(sizeof interesting / sizeof *interesting)] : n - at - w;
    if (next() % 4 == 0) v += below(3) - 1;
    for (size_t i = 0; i < w; i++) b[at + i] = (unsigned char)(v >> (8 * i));
    break;
  }
  default: { /* a JSON token inserted */
    const char *t = tokens[below(sizeof tokens / sizeof *tokens)];
    k = make_room(b, &n, at, strlen(t));
    memcpy(b + at, t, k);
    break;
  }
  }
  return n;
}

/* -name=VALUE: VALUE, or NULL when arg is another option. */
static const char *opt(const char *arg, const char *name)
{
  size_t l = strlen(name);
  return strncmp(arg, name, l) == 0 && arg[l] == '=' ? arg + l + 1 : NULL;
}

static double now(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
  unsigned long long runs = 0, seed = 1;
  double seconds = 0;
  unsigned timeout = 20;
  bool max_len_set = false;
  const char *prefix = NULL, *v;
  char **paths = calloc((size_t)argc, sizeof *paths);
  size_t npaths = 0;
  for (int i = 1; i < argc; i++) {
    if ((v = opt(argv[i], "-runs"))) runs = strtoull(v, NULL, 10);
    else if ((v = opt(argv[i], "-seconds")) || (v = opt(argv[i], "-max_total_time"))) seconds = strtod(v, NULL);
    else if ((v = opt(argv[i], "-seed"))) seed = strtoull(v, NULL, 10);
    else if ((v = opt(argv[i], "-max_len"))) max_len = strtoull(v, NULL, 10), max_len_set = true;
    else if ((v = opt(argv[i], "-timeout"))) timeout = (unsigned)strtoul(v, NULL, 10);
    else if ((v = opt(argv[i], "-artifact_prefix"))) prefix = v;
    else if (strcmp(argv[i], "-gen-seeds") == 0 && i + 1 < argc) seed_dir = argv[++i];
    else if (argv[i][0] == '-') die("unknown option '%s' (see the comment at the top of t/fuzz/driver.c)", argv[i]);
    else paths[npaths++] = argv[i];
  }
  if (seed_dir) {
    if (mkdir(seed_dir, 0777) != 0 && errno != EEXIST) die("cannot make '%s': %s", seed_dir, strerror(errno));
    fuzz_seeds(add_seed);
    free(paths);
    return 0;
  }
  for (size_t i = 0; i < npaths; i++) add_path(paths[i]);
  free(paths);

  /* Reproduction: each input once, as it is. */
  if (!runs && !seconds) {
    for (size_t i = 0; i < ncorpus; i++) {
      fprintf(stderr, "fuzz: running %s\n", corpus[i].path);
      LLVMFuzzerTestOneInput(corpus[i].p, corpus[i].n);
    }
    fprintf(stderr, "fuzz: ran %zu inputs\n", ncorpus);
    return 0;
  }

  fuzz_seeds(add_seed);
  if (!ncorpus) add(NULL, 0, NULL);
  /* By default inputs grow to twice the largest seed. */
  for (size_t i = 0; !max_len_set && i < ncorpus; i++)
    if (2 * corpus[i].n > max_len) max_len = 2 * corpus[i].n;
  if (max_len < 4096 && !max_len_set) max_len = 4096;
  if (!max_len) die("-max_len must be more than 0");
  if (!prefix) {
    const char *d = getenv("FUZZ_ARTIFACT_DIR");
    static char buf[4096];
    snprintf(buf, sizeof buf, "%s%s", d && *d ? d : ".", "/");
    prefix = buf;
  }
  const char *target = strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0];
  if (snprintf(input_path, sizeof input_path, "%s%s.input", prefix, target) >= (int)sizeof input_path)
    die("-artifact_prefix is too long");
  if ((input_fd = open(input_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)) < 0)
    die("cannot make '%s': %s", input_path, strerror(errno));
  __sanitizer_set_death_callback(keep_input);
  signal(SIGABRT, on_signal);
  signal(SIGALRM, on_signal);

  rng = seed;
  size_t nseeds = ncorpus;
  unsigned char *b = malloc(max_len);
  if (!b) die("out of memory");
  double start = now(), end = seconds ? start + seconds : 0;
  unsigned long long done = 0;
  /* Each seed once as it is, then mutants of the corpus. */
  for (; (!runs || done < runs) && (!end || now() < end); done++) {
    size_t n;
    if (done < nseeds) {
      n = corpus[done].n < max_len ? corpus[done].n : max_len;
      memcpy(b, corpus[done].p, n);
    } else {
      const struct input *in = &corpus[below(ncorpus)];
      n = in->n < max_len ? in->n : max_len;
      memcpy(b, in->p, n);
      for (size_t m = 1u << below(4); m; m--) n = mutate(b, n);
    }
    save_input(b, n, prefix);
    alarm(timeout);
    LLVMFuzzerTestOneInput(b, n);
    alarm(0);
    if (new_coverage() && done >= nseeds) add(b, n, NULL);
  }
  double took = now() - start;
  size_t nedges = 0;
  for (size_t i = 0; i < MAP_SIZE; i++) nedges += seen[i];
  fprintf(stderr, "fuzz: %s: %llu runs in %.1f s (%.0f/s), seed %llu, corpus %zu (%zu seeds), %zu edges\n", target,
          done, took, took > 0 ? done / took : 0.0, seed, ncorpus, nseeds, nedges);
  close(input_fd);
  input_fd = -1;
  unlink(input_path);
  free(b);
  return 0;
}
