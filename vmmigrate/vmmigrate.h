/* vmmigrate's own modules; shared code lives in common/. */
#ifndef VMMIGRATE_H
#define VMMIGRATE_H

#include "vmkit.h"

enum strategy { ST_AUTO, ST_PRECOPY, ST_STOPCOPY, ST_AUTOCONVERGE, ST_POSTCOPY };
enum copy_mode { COPY_NONE, COPY_AUTO, COPY_TOP, COPY_ALL };
const char *strategy_name(enum strategy s);

/* What the user asked for (main.c). */
struct mopts {
  enum strategy strategy;
  uint64_t bandwidth_mib;  /* MiB/s; 0: unlimited */
  int max_downtime_ms;     /* the longest pause the user allows */
  int precopy_budget_s;    /* how long auto lets pre-copy try before post-copy */
  int timeout_s;           /* 0: none */
  enum copy_mode copy;
  bool offline, keep_source, tls, check_only, unsafe;
  const char *dest_cpu_file; /* a recorded host CPU definition for the CPU check */
  const char *migrate_uri;
};
extern struct mopts mo;

/* A host of the move: what the user typed, its URI, its hosts-file tags. */
struct host {
  char *label, *uri;
  char *migrate_uri; /* tag migrate-uri=, or NULL */
  uint64_t mem_cap;  /* tag memory=: what VMs may be given there; 0: no cap */
  virConnectPtr conn;
};
/* Resolves what the user typed (a host of the hosts file, or a URI; NULL: the
 * default connection) and connects. 0, or an exit code after a message; with
 * unreachable_rc the code for a host that does not answer. */
int host_open(struct host *h, const char *name_or_uri, int unreachable_rc);
void host_close(struct host *h);

/* What the move does with one disk. */
enum disk_how { D_SHARED, D_COPY_TOP, D_COPY_ALL };
struct mdisk {
  char *target, *device, *type, *src_path, *format, *pool, *vol;
  char *dst_path;          /* where it is (or will be) on the destination */
  uint64_t capacity, allocation;
  enum disk_how how;
  struct vm_strv chain;    /* backing files below the top, top-down */
  struct vm_strv copy_chain; /* offline, whole chain: backing files to copy too */
  bool readonly;
  char *secret;            /* an encrypted disk (LUKS): its key's secret UUID */
};

/* What plans add up: memory and pool space given by earlier moves. */
struct ledger_entry {
  char *uri, *pool; /* pool NULL: memory */
  int64_t bytes;
};
struct ledger {
  struct ledger_entry *v;
  size_t n;
};
void ledger_add(struct ledger *l, const char *uri, const char *pool, int64_t bytes);
int64_t ledger_get(const struct ledger *l, const char *uri, const char *pool);
void ledger_free(struct ledger *l);

/* One move. */
struct move {
  struct host src, dst;
  const char *vm_arg;
  char *name;
  char uuid[VIR_UUID_STRING_BUFLEN];
  virDomainPtr dom;
  bool live;          /* running or paused: a live move */
  uint64_t memory;    /* bytes */
  struct mdisk disks[VM_MAX_DEVS];
  size_t ndisks;
  char *kernel, *initrd;
  json_object *checks; /* [{check, result, detail}] */
  int check_rc;        /* the first failed check's exit code, 0 when all passed */
  struct ledger *ledger; /* plans only */
  struct ledger pending;  /* what this move adds to it, once every check passed */
  bool postcopy_ok;    /* the destination can take post-copy (as far as known) */
  struct vm_strv keys;         /* the disk keys (secret UUIDs) of its encrypted disks */
  struct vm_strv keys_missing; /* those the destination lacked at the pre-flight: the move defines them */
};
void move_free(struct move *m);

/* Pre-flight (preflight.c): every check, each recorded in m->checks; returns
 * m->check_rc. */
int preflight(struct move *m);
void check_add(struct move *m, const char *check, int rc, const char *fmt, ...) VM_PRINTF(4, 5);

/* CPU (cpu.c). */
int cpu_check(struct move *m, xmlXPathContextPtr dx);
int cmd_baseline(int argc, char **argv);

/* The moves (live.c, offline.c): 0 or an exit code; *report gets what happened. */
int move_live(struct move *m, json_object *report);
int move_offline(struct move *m, json_object *report);
/* Storage on the destination (storage.c): volumes for copied disks, made before
 * the move and removed when it fails. */
int dest_volumes_create(struct move *m, bool copy_data);
/* Removes them; returns how many could not be removed (the record then stays, for
 * the next run). */
int dest_volumes_remove(struct move *m);
/* Forgets what earlier moves of this run made (each move starts with none). */
void dest_reset(void);
/* After a move: the VM's disk keys off the source, unless a VM there still names
 * them (a kept source). */
void source_keys_remove(struct move *m);
int source_volumes_remove(struct move *m);
/* The destination's definition: the source's, with each disk at its
 * destination path. Caller frees. */
char *dest_xml(struct move *m, unsigned flags);
char *const *dest_volumes_created(void);
/* SHA-256 of a volume's content read through libvirt (holes as zeros), in hex. */
int vol_digest(virConnectPtr conn, const char *path, char out[65]);

/* Records that let the next run finish or roll back a killed one (record.c). */
int record_write(struct move *m, const char *phase);
void record_remove(struct move *m);
/* Finishes or rolls back what a killed run left on the VM with this UUID: 0 when
 * there is nothing left to do, 1 when a record stays (after a warning saying why). */
int record_recover(const char *uuid);
/* The same for a VM known only by name (one that is no longer on its source). */
void record_recover_name(const char *name);

/* Runs one move from start to end (move.c): open, lock, pre-flight, move, report. */
int run_move(const char *vm, const char *src, const char *dst, struct ledger *ledger,
             json_object **report);
/* Plans (plan.c). */
int run_plan(const char *file, int parallel, char **pass_argv);

#endif
