/* vmbalance's config file (man/vmbalance.conf.5): the policy, the rules a plan
 * must never break, priorities, HA marks and fence agents. Line-based text, read
 * as untrusted input: every error names its line. Needs libc only. */
#ifndef VMBALANCE_CONFIG_H
#define VMBALANCE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

enum bal_res { BAL_CPU, BAL_MEM, BAL_DISK, BAL_NET, BAL_NRES };
enum bal_policy { BAL_BALANCE, BAL_CONSOLIDATE };

#define BAL_CONF_MAX (1u << 20)
#define BAL_LINE_MAX 4096
#define BAL_STMT_MAX 100000
#define BAL_NAME_MAX 255
#define BAL_PRIO_DEFAULT 50

/* One rule or mark of the file, in the file's order. */
enum bal_kind {
  BAL_AFFINITY,      /* w: VMs */
  BAL_ANTI_AFFINITY, /* w: VMs */
  BAL_PIN,           /* w[0]: the VM, then hosts */
  BAL_EXCLUDE,       /* w[0]: the VM, then hosts */
  BAL_MAINTENANCE,   /* w: hosts */
  BAL_PRIORITY,      /* w[0]: the VM; value */
  BAL_HA,            /* w: VMs */
  BAL_FENCE,         /* w[0]: the host, w[1]: the agent, then KEY=VALUE options */
};
struct bal_stmt {
  enum bal_kind kind;
  int line;
  int value;
  char **w;
  size_t n;
};

struct bal_config {
  enum bal_policy policy;
  int level;                 /* 1..5 */
  int weight_milli[BAL_NRES]; /* 0..100000, thousandths */
  int headroom;              /* percent, 0..90 */
  int threshold_milli;       /* thousandths */
  int bandwidth;             /* MiB/s */
  struct bal_stmt *v;
  size_t n;
};

struct bal_error {
  int line;      /* 0: not about one line */
  char msg[256];
};

extern const char *const bal_res_names[BAL_NRES];

/* The defaults of man/vmbalance.conf.5, no rules. */
void bal_config_init(struct bal_config *c);
/* Parses text (len bytes). 0, or -1 with *err filled (c is then empty). */
int bal_config_parse(const char *text, size_t len, struct bal_config *c, struct bal_error *err);
/* The canonical text of c: every setting, then every statement (a malloc'd
 * string). It parses back to the same config. */
char *bal_config_encode(const struct bal_config *c);
void bal_config_free(struct bal_config *c);

#endif
